"""PostgreSQL access. The skeleton only needs a readiness probe."""

import psycopg
from psycopg.conninfo import make_conninfo

from app.settings import Settings


def conninfo(settings: Settings) -> str:
    params: dict[str, str | int] = {
        "host": settings.db_host,
        "port": settings.db_port,
        "dbname": settings.db_name,
        "user": settings.db_user,
        "password": settings.db_password.get_secret_value(),
        "sslmode": settings.db_sslmode,
        "connect_timeout": settings.db_connect_timeout_s,
        "application_name": "clinchat-app",
    }
    if settings.db_sslrootcert:
        params["sslrootcert"] = settings.db_sslrootcert
    return make_conninfo("", **params)


async def ping(settings: Settings) -> None:
    """Raise if the database does not answer a query."""
    async with await psycopg.AsyncConnection.connect(conninfo(settings)) as conn:
        await conn.execute("SELECT 1")
