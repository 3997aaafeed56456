"""Alembic environment: migrations run as the schema owner (``db_owner_user``).

Run them with ``clinchat-admin migrate`` (app/migrate.py), which passes the
settings in ``config.attributes``; this file is not meant for the alembic CLI.
"""

import psycopg
from alembic import context
from sqlalchemy import create_engine, pool

from app.db import conninfo
from app.models import Base

config = context.config
settings = config.attributes["settings"]

engine = create_engine(
    "postgresql+psycopg://",
    creator=lambda: psycopg.connect(conninfo(settings, owner=True)),
    poolclass=pool.NullPool,
)
with engine.connect() as connection:
    context.configure(connection=connection, target_metadata=Base.metadata)
    with context.begin_transaction():
        context.run_migrations(app_role=settings.db_user)
