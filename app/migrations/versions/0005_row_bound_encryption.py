"""Bind every encrypted value to its row: re-encrypt the values written before (app/sealed.py).

Values written by 0004's code (blob ``CE1``) were bound only to their purpose
(b"message", b"document", ...): a ciphertext copied into another user's row
decrypted there. This migration re-encrypts each one with associated data naming
its column, row and owners (blob ``CE2``), in the migration's transaction. It asks
the key keeper (Vault) for keys only when there is such a value, so a new
database needs no Vault here. Values that do not decrypt are left as they were
(they were unreadable already) and counted.

Not backward compatible: 0004's code cannot read ``CE2`` values. A rollback past
this revision restores the database backup taken before the upgrade; ``downgrade``
refuses and says so.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07
"""

from collections.abc import Sequence

from alembic import context, op

from app.crypto import cipher_for
from app.sealed import BEFORE_ROW_BINDING, legacy_count, rewrap

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade(app_role: str) -> None:
    conn = op.get_bind()
    legacy = [column for column in BEFORE_ROW_BINDING if legacy_count(conn, column)]
    if not legacy:
        return
    cipher = cipher_for(context.config.attributes["settings"])
    for column in legacy:
        # shown by clinchat-admin migrate and in the migrations unit's journal
        print(f"row binding: {rewrap(conn, cipher, column, legacy_only=True).line()}")


def downgrade(app_role: str) -> None:
    raise NotImplementedError(
        "0005 re-encrypted every value bound to its row, which 0004's code cannot read: "
        "restore the backup taken before the upgrade instead"
    )
