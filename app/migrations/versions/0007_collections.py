"""Knowledge bases per department (app/kb/collections.py): every document belongs to a
collection, its chunks carry the same one (so retrieval filters without a join), and a
user's directory groups are kept with the user (they decide which collections the user
reads and manages; refreshed at each sign-in and by the directory sync).

The documents already stored go to the default collection (``default_collection``,
"hospital-wide" unless the site says otherwise), which everyone reads by default: no one
loses or gains access through the upgrade.

Backward compatible for a rollback: the columns have server defaults (the default
collection; no groups), so the previous release, which knows nothing of them, still
uploads (into the default collection) and signs in. ``downgrade`` drops them, and with
them the documents' placement in collections.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07
"""

from collections.abc import Sequence

from alembic import context, op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade(app_role: str) -> None:
    default = context.config.attributes["settings"].default_collection
    literal = "'" + default.replace("'", "''") + "'"  # a slug: [a-z0-9-] (app/settings.py)
    op.execute("ALTER TABLE users ADD COLUMN directory_groups TEXT[] DEFAULT '{}' NOT NULL")
    for table in ("documents", "chunks"):
        op.execute(
            f"ALTER TABLE {table} ADD COLUMN collection VARCHAR(64) DEFAULT {literal} NOT NULL"
        )
    op.execute("CREATE INDEX ix_documents_collection ON documents (collection)")


def downgrade(app_role: str) -> None:
    op.execute("ALTER TABLE chunks DROP COLUMN collection")
    op.execute("ALTER TABLE documents DROP COLUMN collection")
    op.execute("ALTER TABLE users DROP COLUMN directory_groups")
