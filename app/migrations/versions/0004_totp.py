"""The second factor of local accounts (app/auth/totp.py): the TOTP secret, stored
envelope-encrypted, and the last time step a code was accepted for (replay).

Backward compatible for a rollback: the previous release's code neither reads nor
writes the columns (its local accounts sign in with the password alone).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-14
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade(app_role: str) -> None:
    op.execute("ALTER TABLE users ADD COLUMN totp_secret_enc BYTEA")
    op.execute("ALTER TABLE users ADD COLUMN totp_last_step BIGINT")


def downgrade(app_role: str) -> None:
    op.execute("ALTER TABLE users DROP COLUMN totp_last_step")
    op.execute("ALTER TABLE users DROP COLUMN totp_secret_enc")
