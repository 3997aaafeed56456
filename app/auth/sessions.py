"""Server-side sessions in Redis.

The browser holds only a random 256-bit token (cookie ``__Host-clinchat_session``,
``clinchat_session`` in development over plain HTTP;
HttpOnly, Secure, SameSite=Strict); Redis holds the session under the token's
SHA-256, so a Redis dump reveals no usable cookie. The key's TTL is the idle
timeout and is renewed by every authenticated request: 15 idle minutes (by
default) and the session is gone. ``created`` caps the absolute lifetime.
"""

import hashlib
import json
import secrets
import time
import uuid
from dataclasses import dataclass

import redis.asyncio as aioredis
from starlette.responses import Response

from app.auth.principal import Principal
from app.models import Role
from app.settings import Settings

COOKIE = "clinchat_session"
# Over HTTPS the name carries the __Host- prefix: a browser accepts it only from a
# secure origin, for Path=/ and without Domain, so neither a sibling host of the
# hospital's domain nor a plain-HTTP answer can plant or overwrite it.
SECURE_COOKIE = "__Host-" + COOKIE


def cookie_name(settings: Settings) -> str:
    return SECURE_COOKIE if settings.cookie_secure else COOKIE


_PREFIX = "clinchat:session:"
_USER_PREFIX = "clinchat:user-sessions:"


def _key(token: str) -> str:
    return _PREFIX + hashlib.sha256(token.encode()).hexdigest()


def set_cookie(response: Response, token: str, settings: Settings) -> None:
    """The session cookie: no Max-Age (gone with the browser); Redis enforces the timeouts."""
    response.set_cookie(
        cookie_name(settings),
        token,
        httponly=True,
        secure=settings.cookie_secure,
        samesite="strict",
        path="/",
    )


def clear_cookie(response: Response, settings: Settings) -> None:
    response.delete_cookie(
        cookie_name(settings),
        path="/",
        secure=settings.cookie_secure,
        httponly=True,
        samesite="strict",
    )


@dataclass
class SessionStore:
    redis: aioredis.Redis
    settings: Settings

    async def create(
        self,
        user_id: uuid.UUID,
        username: str,
        display_name: str,
        roles: set[Role],
        groups: list[str] | tuple[str, ...] = (),
    ) -> str:
        """A new session; returns the cookie value."""
        token = secrets.token_urlsafe(32)
        data = {
            "user_id": str(user_id),
            "username": username,
            "display_name": display_name,
            "roles": sorted(roles),
            "groups": sorted(groups),
            "csrf": secrets.token_urlsafe(32),
            "created": time.time(),
            "break_glass_until": 0.0,
        }
        key = _key(token)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(key, json.dumps(data), ex=self.settings.session_idle_timeout_s)
            pipe.sadd(_USER_PREFIX + str(user_id), key)
            pipe.expire(_USER_PREFIX + str(user_id), self.settings.session_max_age_s)
            await pipe.execute()
        return token

    async def load(self, token: str, source_ip: str = "") -> Principal | None:
        """The session's principal, renewing its idle timer; None if gone or too old."""
        key = _key(token)
        raw = await self.redis.get(key)
        if raw is None:
            return None
        data = json.loads(raw)
        if time.time() - data["created"] > self.settings.session_max_age_s:
            await self.redis.delete(key)
            return None
        await self.redis.expire(key, self.settings.session_idle_timeout_s)
        return Principal(
            user_id=uuid.UUID(data["user_id"]),
            username=data["username"],
            display_name=data["display_name"],
            roles=frozenset(Role(r) for r in data["roles"]),
            session_id=key.removeprefix(_PREFIX),
            csrf_token=data["csrf"],
            source_ip=source_ip,
            break_glass_until=float(data.get("break_glass_until", 0.0)),
            groups=frozenset(data.get("groups", ())),
        )

    async def update(self, token: str, **changes: object) -> None:
        key = _key(token)
        raw = await self.redis.get(key)
        if raw is None:
            return
        data = json.loads(raw) | changes
        await self.redis.set(key, json.dumps(data), ex=self.settings.session_idle_timeout_s)

    async def destroy(self, token: str) -> None:
        await self.redis.delete(_key(token))

    async def destroy_all(self, user_id: uuid.UUID) -> None:
        keys = await self.redis.smembers(_USER_PREFIX + str(user_id))
        if keys:
            await self.redis.delete(*keys)
        await self.redis.delete(_USER_PREFIX + str(user_id))
