"""Sign-in lockout: failed attempts counted in Redis, per username and per source address.

After ``lockout_threshold`` failures for one username within ``lockout_window_s``,
that username is refused for ``lockout_duration_s``, even with the right password
(the attacker must not learn when a guess was right). Password spraying tries few
passwords on many usernames, so failures are also counted per source address; an
address is refused after ``IP_FACTOR`` times the threshold. The factor is generous
because a ward's terminal server puts many people behind one address.

Every attempt is counted before its password is checked (``begin``), so guesses sent
in parallel cannot all pass a check made before the first of them failed: once
``lockout_threshold`` attempts are under way or failed, the next is refused. A right
password resets the username's count and takes its attempt off the address's.

Usernames are compared as the directory does, case- and width-insensitively (NFKC,
case-folded), so "ＣＬＩＮ1" counts toward "clin1". Keys hold SHA-256 digests, never a
username or address in clear.
"""

import hashlib
import unicodedata
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
        if scope == "user":
            value = unicodedata.normalize("NFKC", value).casefold().strip()
        digest = _digest(value)
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

    def _scopes(self, username: str, source_ip: str) -> list[tuple[str, str, int]]:
        threshold = self.settings.lockout_threshold
        scopes = [("user", username, threshold)]
        if source_ip:
            scopes.append(("address", source_ip, threshold * IP_FACTOR))
        return scopes

    async def begin(self, username: str, source_ip: str) -> Locked | None:
        """Count this attempt before its password is checked; the lock refusing it, if any."""
        locked = await self.check(username, source_ip)
        if locked is not None:
            return locked
        for scope, value, threshold in self._scopes(username, source_ip):
            fail_key = self._keys(scope, value)[0]
            async with self.redis.pipeline(transaction=True) as pipe:
                # SET NX starts the window at the first attempt; INCR keeps the TTL.
                pipe.set(fail_key, 0, ex=self.settings.lockout_window_s, nx=True)
                pipe.incr(fail_key)
                _, count = await pipe.execute()
            if int(count) > threshold:
                # the threshold's attempts are under way or failed: not one more
                return Locked(scope, self.settings.lockout_duration_s)
        return None

    async def failed(self, username: str, source_ip: str) -> Locked | None:
        """This attempt (counted by ``begin``) failed; returns the lock it caused, if any."""
        caused: Locked | None = None
        for scope, value, threshold in self._scopes(username, source_ip):
            fail_key, lock_key = self._keys(scope, value)
            count = await self.redis.get(fail_key)
            if count is None or int(count) < threshold:
                continue
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.set(lock_key, 1, ex=self.settings.lockout_duration_s)
                pipe.delete(fail_key)
                await pipe.execute()
            caused = caused or Locked(scope, self.settings.lockout_duration_s)
        return caused

    async def _uncount(self, scope: str, value: str) -> None:
        fail_key = self._keys(scope, value)[0]
        if int(await self.redis.get(fail_key) or 0) > 0:
            await self.redis.incrby(fail_key, -1)  # the app's ACL allows INCRBY, not DECR

    async def succeeded(self, username: str, source_ip: str) -> None:
        """A right password resets the username's count and un-counts the address's attempt."""
        await self.redis.delete(self._keys("user", username)[0])
        if source_ip:
            await self._uncount("address", source_ip)

    async def abandoned(self, username: str, source_ip: str) -> None:
        """The password could not be checked (the directory is down): the attempt does
        not count, so an outage locks nobody out."""
        for scope, value, _ in self._scopes(username, source_ip):
            await self._uncount(scope, value)
