"""A database of its own for the knowledge-base tests, on the session's PostgreSQL.

Retrieval tests assert what ranks first and that an uncovered question finds
nothing: documents other test modules upload must not be in their corpus. Each
module gets a fresh database (same server, same roles, migrated) and a Redis
queue name of its own.
"""

from __future__ import annotations

import importlib.util
import uuid

import psycopg
import redis

from app.db import conninfo
from app.settings import EncryptionMode, Settings
from tests.services.postgres import PrivatePostgres


def isolated_settings(
    base: Settings, postgres: PrivatePostgres, revision: str = "head", **update: object
) -> Settings:
    """A database migrated to ``revision`` and a queue of their own; Vault keys once
    app/vault_keys.py exists."""
    from app import migrate

    name = f"kb_{uuid.uuid4().hex[:10]}"
    postgres.psql(f"CREATE DATABASE {name} OWNER {base.db_owner_user}")
    postgres.psql(f"ALTER SCHEMA public OWNER TO {base.db_owner_user}", database=name)
    postgres.psql(f"GRANT USAGE ON SCHEMA public TO {base.db_user}", database=name)
    postgres.psql("CREATE EXTENSION IF NOT EXISTS vector", database=name)
    mode = (
        EncryptionMode.vault
        if importlib.util.find_spec("app.vault_keys") is not None
        else EncryptionMode.local
    )
    settings = base.model_copy(
        update={
            "db_name": name,
            "ingest_queue": f"clinchat:ingest:{name}",
            "encryption_mode": mode,
            **update,
        }
    )
    migrate.upgrade(settings, revision)
    return settings


def count_rows(settings: Settings) -> dict[str, int]:
    with psycopg.connect(conninfo(settings)) as conn:
        return {
            table: conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]  # type: ignore[index]
            for table in ("documents", "document_versions", "chunks")
        }


def sync_redis(settings: Settings) -> redis.Redis:
    return redis.Redis.from_url(
        settings.redis_url,
        password=settings.redis_password.get_secret_value() or None,
        ssl_ca_certs=settings.redis_ca_cert,
        decode_responses=True,
    )


def queued(settings: Settings) -> list[str]:
    client = sync_redis(settings)
    try:
        return list(client.lrange(settings.ingest_queue, 0, -1))
    finally:
        client.close()
