"""PostgreSQL access: SQLAlchemy 2 (async, psycopg 3) engines and sessions.

One engine per process and settings. The app connects as ``db_user``, which
may not UPDATE or DELETE audit rows; migrations connect as ``db_owner_user``.
"""

import asyncio
from collections.abc import AsyncIterator
from typing import Annotated

import psycopg
from fastapi import Depends
from psycopg.conninfo import make_conninfo
from sqlalchemy import Engine, NullPool, create_engine
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from app.settings import Settings, get_settings


def conninfo(settings: Settings, owner: bool = False) -> str:
    user, password = (
        (settings.db_owner_user, settings.db_owner_password)
        if owner
        else (settings.db_user, settings.db_password)
    )
    params: dict[str, str | int] = {
        "host": settings.db_host,
        "port": settings.db_port,
        "dbname": settings.db_name,
        "user": user,
        "password": password.get_secret_value(),
        "sslmode": settings.db_sslmode,
        "connect_timeout": settings.db_connect_timeout_s,
        "application_name": "clinchat-app",
    }
    if settings.db_sslrootcert:
        params["sslrootcert"] = settings.db_sslrootcert
    return make_conninfo("", **params)


def _engine(settings: Settings, owner: bool) -> AsyncEngine:
    info = conninfo(settings, owner)
    return create_async_engine(
        "postgresql+psycopg://",
        # the whole libpq connection string, so TLS and timeouts apply as written
        async_creator=lambda: psycopg.AsyncConnection.connect(info),
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_pool_max_overflow,
        pool_timeout=settings.db_pool_timeout_s,
        pool_pre_ping=True,
    )


def sync_engine(settings: Settings, owner: bool = False) -> Engine:
    """A synchronous engine without a pool, for one-off work (migrations, rewrap)."""
    info = conninfo(settings, owner)
    return create_engine(
        "postgresql+psycopg://", creator=lambda: psycopg.connect(info), poolclass=NullPool
    )


def loop_id() -> int:
    """The running event loop's identity (0 outside one)."""
    try:
        return id(asyncio.get_running_loop())
    except RuntimeError:
        return 0


# Keyed by the settings object's identity (settings are not hashable) and the event
# loop (a pooled connection belongs to the loop that opened it); a worker process
# has one of each, tests a few. The settings object is kept alive with its engine.
_engines: dict[tuple[int, bool, int], tuple[Settings, AsyncEngine]] = {}


def engine(settings: Settings, owner: bool = False) -> AsyncEngine:
    key = (id(settings), owner, loop_id())
    if key not in _engines:
        _engines[key] = (settings, _engine(settings, owner))
    return _engines[key][1]


def sessionmaker(settings: Settings) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine(settings), expire_on_commit=False)


async def dispose_all() -> None:
    """Close this event loop's pools (application shutdown, tests)."""
    current = loop_id()
    for key, (_, eng) in list(_engines.items()):
        if key[2] == current:
            await eng.dispose()
            del _engines[key]


async def get_session(
    settings: Annotated[Settings, Depends(get_settings)],
) -> AsyncIterator[AsyncSession]:
    async with sessionmaker(settings)() as session:
        yield session


DbSession = Annotated[AsyncSession, Depends(get_session)]


async def ping(settings: Settings) -> None:
    """Raise if the database does not answer a query."""
    async with await psycopg.AsyncConnection.connect(conninfo(settings)) as conn:
        await conn.execute("SELECT 1")
