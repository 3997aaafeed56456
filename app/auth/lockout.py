"""Sign-in lockout: failed attempts counted in Redis, per username and per source address.

After ``lockout_threshold`` failures for one username within ``lockout_window_s``,
that username is refused for ``lockout_duration_s``, even with the right password
(the attacker must not learn when a guess was right). Password spraying tries few
passwords on many usernames, so failures are also counted per source address; an
address is refused after ``IP_FACTOR`` times the threshold. The factor is generous
because a ward's terminal server puts many people behind one address.

Keys hold SHA-256 digests, never a username or address in clear.
"""

import hashlib
from dataclasses import dataclass

import redis.asyncio as aioredis

from app.settings import Settings

IP_FACTOR = 10
_PREFIX = "clinchat:signin:"


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


@dataclass(frozen=True)
class Locked:
    """A refusal: whose lock it is and how many seconds are left."""

    scope: str  # "user" or "address"
    retry_after_s: int


@dataclass
class Lockout:
    redis: aioredis.Redis
    settings: Settings

    def _keys(self, scope: str, value: str) -> tuple[str, str]:
        digest = _digest(value.strip().lower() if scope == "user" else value)
        return f"{_PREFIX}fail:{scope}:{digest}", f"{_PREFIX}lock:{scope}:{digest}"

    async def check(self, username: str, source_ip: str) -> Locked | None:
        """The lock that refuses this attempt, if any."""
        for scope, value in (("user", username), ("address", source_ip)):
            if scope == "address" and not value:
                continue
            ttl = await self.redis.ttl(self._keys(scope, value)[1])
            if ttl and ttl > 0:
                return Locked(scope, ttl)
        return None

    async def _count(self, scope: str, value: str, threshold: int) -> bool:
        fail_key, lock_key = self._keys(scope, value)
        async with self.redis.pipeline(transaction=True) as pipe:
            # SET NX starts the window at the first failure; INCR keeps the TTL.
            pipe.set(fail_key, 0, ex=self.settings.lockout_window_s, nx=True)
            pipe.incr(fail_key)
            _, count = await pipe.execute()
        if int(count) < threshold:
            return False
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(lock_key, 1, ex=self.settings.lockout_duration_s)
            pipe.delete(fail_key)
            await pipe.execute()
        return True

    async def failed(self, username: str, source_ip: str) -> Locked | None:
        """Count a failure; returns the lock it caused, if it caused one."""
        threshold = self.settings.lockout_threshold
        user_locked = await self._count("user", username, threshold)
        address_locked = bool(source_ip) and await self._count(
            "address", source_ip, threshold * IP_FACTOR
        )
        if user_locked:
            return Locked("user", self.settings.lockout_duration_s)
        if address_locked:
            return Locked("address", self.settings.lockout_duration_s)
        return None

    async def succeeded(self, username: str) -> None:
        """A right password resets the username's count (not the address's)."""
        await self.redis.delete(self._keys("user", username)[0])
