"""Alembic environment: migrations run as the schema owner (``db_owner_user``).

Run them with ``clinchat-admin migrate`` (app/migrate.py), which passes the
settings in ``config.attributes``; this file is not meant for the alembic CLI.
"""

from alembic import context

from app.db import sync_engine
from app.models import Base

config = context.config
settings = config.attributes["settings"]

with sync_engine(settings, owner=True).connect() as connection:
    context.configure(connection=connection, target_metadata=Base.metadata)
    with context.begin_transaction():
        context.run_migrations(app_role=settings.db_user)
