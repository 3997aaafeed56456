"""API token scopes (app/auth/tokens.py): tokens made before keep every scope.

Backward compatible for a rollback: the previous release's code neither reads
nor writes the column, and its inserts get the default, every scope (what its
tokens could do).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-07
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade(app_role: str) -> None:
    op.execute(
        "ALTER TABLE api_tokens ADD COLUMN scopes VARCHAR(32)[] NOT NULL"
        " DEFAULT '{audit,chat,detect,documents,facade}'"
    )


def downgrade(app_role: str) -> None:
    op.execute("ALTER TABLE api_tokens DROP COLUMN scopes")
