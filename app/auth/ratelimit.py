"""Rate limits per user and per API token, kept in Redis.

Each kind of costly request (a chat question, a facade completion, a PHI detect)
has a budget per minute. Browser sessions count toward their user, so opening
more tabs or signing in twice buys nothing; each API token has a budget of its
own, so an integration that loops cannot starve its owner's own chat. Over the
budget: 429 with ``Retry-After`` (the seconds left in the window), counted in
``clinchat_rate_limited_total`` by kind. Fixed one-minute windows (INCR and
EXPIRE in one transaction): every app host shares them through Redis.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, HTTPException, status

from app.auth.deps import CurrentPrincipal, is_bearer
from app.metrics import RATE_LIMITED
from app.redis_client import redis_for
from app.settings import Settings, get_settings

WINDOW_S = 60


class Kind(enum.StrEnum):
    chat = "chat"
    facade = "facade"
    detect = "detect"


def budget(settings: Settings, kind: Kind) -> int:
    """Requests per minute; 0 turns the limit off."""
    return {
        Kind.chat: settings.rate_limit_chat_per_minute,
        Kind.facade: settings.rate_limit_facade_per_minute,
        Kind.detect: settings.rate_limit_detect_per_minute,
    }[kind]


class RateLimited(HTTPException):
    def __init__(self, kind: Kind, retry_after_s: int) -> None:
        super().__init__(
            status.HTTP_429_TOO_MANY_REQUESTS,
            f"too many {kind.value} requests: try again in {retry_after_s} s",
            headers={"Retry-After": str(retry_after_s)},
        )


def rate_limit(kind: Kind) -> Callable[..., Awaitable[None]]:
    """A dependency counting one request of ``kind`` for the principal's budget."""

    async def check(
        principal: CurrentPrincipal, settings: Annotated[Settings, Depends(get_settings)]
    ) -> None:
        limit = budget(settings, kind)
        if limit <= 0:
            return
        # a bearer principal's session id is "token:" and its hash, never the secret
        who = principal.session_id if is_bearer(principal) else f"user:{principal.user_id}"
        key = f"clinchat:rate:{kind.value}:{who}"
        async with redis_for(settings).pipeline(transaction=True) as pipe:
            pipe.incr(key)
            pipe.expire(key, WINDOW_S, nx=True)
            pipe.ttl(key)
            count, _, ttl = await pipe.execute()
        if int(count) > limit:
            RATE_LIMITED.labels(kind.value).inc()
            raise RateLimited(kind, max(1, int(ttl)))

    return check


ChatLimit = Depends(rate_limit(Kind.chat))
FacadeLimit = Depends(rate_limit(Kind.facade))
DetectLimit = Depends(rate_limit(Kind.detect))
