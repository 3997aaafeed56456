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
