"""Every setting of the app in one place, read from the environment.

Each field is read from the environment variable ``CLINCHAT_<FIELD>`` (upper
case). Secrets are never put in the environment by the deployment: systemd
passes them as credentials (``LoadCredential=``), files in
``$CREDENTIALS_DIRECTORY`` named ``clinchat_<field>``, which pydantic-settings
reads as its ``secrets_dir``.
"""

import os
from enum import StrEnum
from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Environment(StrEnum):
    development = "development"
    production = "production"


def _credentials_dir() -> Path | None:
    directory = os.environ.get("CREDENTIALS_DIRECTORY")
    return Path(directory) if directory and Path(directory).is_dir() else None


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CLINCHAT_", extra="ignore")

    environment: Environment = Field(
        Environment.production, description="production refuses development shortcuts"
    )
    db_host: str = Field("127.0.0.1", description="PostgreSQL host name or address")
    db_port: int = Field(5432, ge=1, le=65535)
    db_name: str = "clinchat"
    db_user: str = "clinchat_app"
    db_password: SecretStr = Field(SecretStr(""), description="secret: systemd credential")
    db_sslmode: str = Field("verify-full", description="libpq sslmode")
    db_sslrootcert: str | None = Field(None, description="CA certificate that signs the db's")
    db_connect_timeout_s: int = Field(3, ge=1, le=60)


@lru_cache
def get_settings() -> Settings:
    return Settings(_secrets_dir=_credentials_dir())  # type: ignore[call-arg]
