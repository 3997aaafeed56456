"""The Redis connection (sessions, sign-in counters, the ingestion queue)."""

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

from app.db import loop_id
from app.errors import DependencyUnavailable
from app.settings import Settings

# Keyed by settings and event loop: a connection belongs to the loop that opened it.
# A worker process has one loop; tests run several (one per TestClient).
_clients: dict[tuple[int, int], tuple[Settings, aioredis.Redis]] = {}


def redis_for(settings: Settings) -> aioredis.Redis:
    if not settings.redis_url:
        raise DependencyUnavailable("redis", "not configured")
    key = (id(settings), loop_id())
    if key not in _clients:
        kwargs: dict = {
            "socket_timeout": 3,
            "socket_connect_timeout": 3,
            "decode_responses": True,
            # A pooled connection Redis closed (a restart, a failover) fails its next
            # command: reconnect and send it once more. Without this, every connection
            # in the pool was one 503 "redis is unavailable" after Redis came back.
            # Not on timeouts: a hung Redis must not hold a request twice as long.
            "retry": Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
        }
        if settings.redis_password.get_secret_value():
            kwargs["password"] = settings.redis_password.get_secret_value()
        if settings.redis_url.startswith("rediss://") and settings.redis_ca_cert:
            kwargs["ssl_ca_certs"] = settings.redis_ca_cert
        # Blocking: past the pool's size a request waits for a free connection (up to the
        # timeout, then 503 "at capacity") instead of failing at once as "unavailable".
        pool = aioredis.BlockingConnectionPool.from_url(
            settings.redis_url,
            max_connections=settings.redis_pool_size,
            timeout=settings.redis_pool_timeout_s,
            **kwargs,
        )
        _clients[key] = (settings, aioredis.Redis.from_pool(pool))  # closed with the client
    return _clients[key][1]


async def close_all() -> None:
    """Close this event loop's clients (application shutdown, tests)."""
    current = loop_id()
    for key, (_, client) in list(_clients.items()):
        if key[1] == current:
            await client.aclose()
            del _clients[key]
