"""Schema migrations (Alembic), run as the schema owner: ``clinchat-admin migrate``."""

from pathlib import Path

from alembic import command
from alembic.config import Config

from app.settings import Settings

MIGRATIONS = Path(__file__).parent / "migrations"


def alembic_config(settings: Settings) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["settings"] = settings
    return config


def upgrade(settings: Settings, revision: str = "head") -> None:
    command.upgrade(alembic_config(settings), revision)


def current(settings: Settings) -> str | None:
    import psycopg
    from alembic.runtime.migration import MigrationContext
    from sqlalchemy import create_engine, pool

    from app.db import conninfo

    engine = create_engine(
        "postgresql+psycopg://",
        creator=lambda: psycopg.connect(conninfo(settings)),
        poolclass=pool.NullPool,
    )
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()
