"""Personal API tokens: only each token's SHA-256 is stored (app/auth/tokens.py).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

STATEMENTS = [
    """
    CREATE TABLE api_tokens (
        id UUID NOT NULL,
        user_id UUID NOT NULL,
        name VARCHAR(64) NOT NULL,
        token_hash VARCHAR(64) NOT NULL,
        roles VARCHAR(32)[] NOT NULL,
        created_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL,
        expires_at TIMESTAMP WITH TIME ZONE NOT NULL,
        last_used_at TIMESTAMP WITH TIME ZONE,
        revoked_at TIMESTAMP WITH TIME ZONE,
        PRIMARY KEY (id),
        UNIQUE (token_hash),
        FOREIGN KEY(user_id) REFERENCES users (id) ON DELETE CASCADE
    )
    """,
    """
    CREATE INDEX ix_api_tokens_user_id ON api_tokens (user_id)
    """,
]


def upgrade(app_role: str) -> None:
    for statement in STATEMENTS:
        op.execute(statement)
    role = op.get_bind().dialect.identifier_preparer.quote(app_role)
    op.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON api_tokens TO {role}")


def downgrade(app_role: str) -> None:
    op.execute("DROP TABLE api_tokens")
