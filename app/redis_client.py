"""The Redis connection (sessions, sign-in counters, the ingestion queue)."""

import redis.asyncio as aioredis

from app.errors import DependencyUnavailable
from app.settings import Settings

_clients: dict[int, tuple[Settings, aioredis.Redis]] = {}


def redis_for(settings: Settings) -> aioredis.Redis:
    if not settings.redis_url:
        raise DependencyUnavailable("redis", "not configured")
    if id(settings) not in _clients:
        kwargs: dict = {"socket_timeout": 3, "socket_connect_timeout": 3, "decode_responses": True}
        if settings.redis_password.get_secret_value():
            kwargs["password"] = settings.redis_password.get_secret_value()
        if settings.redis_url.startswith("rediss://") and settings.redis_ca_cert:
            kwargs["ssl_ca_certs"] = settings.redis_ca_cert
        _clients[id(settings)] = (settings, aioredis.Redis.from_url(settings.redis_url, **kwargs))
    return _clients[id(settings)][1]


async def close_all() -> None:
    for _, client in list(_clients.values()):
        await client.aclose()
    _clients.clear()
