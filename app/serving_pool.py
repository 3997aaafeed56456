"""The model servers of every ``gpu`` host as one pool.

``settings.serving_url`` holds one OpenAI base URL per gpu host, separated by
commas (``https://gpu1:8081/v1,https://gpu2:8081/v1``). Each request goes to the
host with the fewest requests outstanding from this process (ties rotate, so
sequential requests spread). A host that fails (no connection, a timeout, a 5xx)
is paused, and the request is tried on the next host; a host answering 429 is
at capacity and is passed over without a pause. A paused host gets its
``/health`` asked once its pause ends, before any request goes to it again: it
rejoins when healthy, or its pause doubles (up to ``MAX_PAUSE_S``).

Counts are per process (each gunicorn worker balances its own requests), which
is what least-outstanding needs: a worker knows its own streams. Host names
appear in logs and metrics (they are not PHI); request content never does.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import anyio.to_thread
import httpx

from app.crypto import KeysUnavailable
from app.errors import DependencyUnavailable
from app.metrics import SERVING_UPSTREAM_FAILURES
from app.settings import Settings

log = logging.getLogger(__name__)

FIRST_PAUSE_S = 2.0  # a host's first failure pauses it this long; each further one doubles it
MAX_PAUSE_S = 30.0
PROBE_TIMEOUT_S = 2.0
CONNECT_TIMEOUT_S = 5.0


def serving_urls(settings: Settings) -> tuple[str, ...]:
    """The base URLs of ``settings.serving_url``, without trailing slashes."""
    return tuple(u.strip().rstrip("/") for u in settings.serving_url.split(",") if u.strip())


def retryable(status: int) -> bool:
    """A status that says "this host, not this request": another host may answer."""
    return status == 429 or status >= 500


@dataclass
class Upstream:
    """One gpu host's model server, as this process sees it."""

    url: str  # the OpenAI base URL, .../v1
    outstanding: int = 0
    failures: int = 0  # failures in a row
    paused_until: float = 0.0

    @property
    def name(self) -> str:
        """host:port, for logs and metric labels."""
        return urlsplit(self.url).netloc

    @property
    def health_url(self) -> str:
        return self.url.removesuffix("/v1") + "/health"

    def paused(self, now: float) -> bool:
        return self.failures > 0 and now < self.paused_until


@dataclass
class ServingPool:
    upstreams: list[Upstream]
    _turn: int = field(default=0, repr=False)  # rotates the tie-break

    async def candidates(self, settings: Settings) -> list[Upstream]:
        """The hosts to try for one request, best first; none paused.

        A host whose pause has ended is probed first and left out if still unhealthy.
        Raises DependencyUnavailable("serving") when no host is left to try.
        """
        if not self.upstreams:
            raise DependencyUnavailable("serving", "not configured")
        now = time.monotonic()
        due = [u for u in self.upstreams if u.failures and not u.paused(now)]
        for upstream in due:  # one probe per host: other requests skip it meanwhile
            upstream.paused_until = now + PROBE_TIMEOUT_S
        await asyncio.gather(*(self._probe(u, settings) for u in due))
        now = time.monotonic()
        usable = [u for u in self.upstreams if not u.paused(now)]
        if not usable:
            raise DependencyUnavailable("serving")
        self._turn += 1
        n = len(self.upstreams)
        position = {id(u): i for i, u in enumerate(self.upstreams)}
        return sorted(usable, key=lambda u: (u.outstanding, (position[id(u)] - self._turn) % n))

    def failed(self, upstream: Upstream, why: str) -> None:
        """Pause ``upstream``: FIRST_PAUSE_S, doubling with each failure in a row."""
        upstream.failures += 1
        pause = min(FIRST_PAUSE_S * 2 ** (upstream.failures - 1), MAX_PAUSE_S)
        upstream.paused_until = time.monotonic() + pause
        SERVING_UPSTREAM_FAILURES.labels(upstream.name).inc()
        log.warning("serving host %s failed (%s): paused %.0f s", upstream.name, why, pause)

    def lease(self, upstream: Upstream) -> Lease:
        """Count a request as outstanding on ``upstream`` until the lease is released."""
        upstream.outstanding += 1
        return Lease(self, upstream)

    def succeeded(self, upstream: Upstream) -> None:
        if upstream.failures:
            log.info("serving host %s is back", upstream.name)
        upstream.failures = 0
        upstream.paused_until = 0.0

    async def _probe(self, upstream: Upstream, settings: Settings) -> None:
        try:
            async with httpx.AsyncClient(
                verify=tls_verify(settings), timeout=PROBE_TIMEOUT_S
            ) as client:
                status = (await client.get(upstream.health_url)).status_code
        except httpx.HTTPError as exc:
            self.failed(upstream, f"health check: {type(exc).__name__}")
            return
        if status == 200:
            self.succeeded(upstream)
        else:
            self.failed(upstream, f"health check answered {status}")


_pools: dict[tuple[str, ...], ServingPool] = {}


def pool_for(settings: Settings) -> ServingPool:
    """The process's pool for these URLs (shared by every request, so the counts add up)."""
    urls = serving_urls(settings)
    if urls not in _pools:
        _pools[urls] = ServingPool([Upstream(url) for url in urls])
    return _pools[urls]


def tls_verify(settings: Settings) -> ssl.SSLContext | bool:
    if settings.serving_ca_cert:
        return ssl.create_default_context(cafile=settings.serving_ca_cert)
    return True


async def bearer_headers(settings: Settings) -> dict[str, str]:
    """The serving's bearer token: the app's secret ``serving_token`` in Vault's KV
    store with ``secrets_in_vault`` (how the deployment keeps it), else the setting."""
    token = settings.serving_token.get_secret_value()
    if settings.secrets_in_vault:
        from app.vault_keys import app_secret

        try:
            token = await anyio.to_thread.run_sync(app_secret, settings, "serving_token")
        except KeysUnavailable as exc:
            log.warning("serving: no token from vault (%s)", exc)
            raise DependencyUnavailable("vault") from exc
    return {"Authorization": f"Bearer {token}"} if token else {}


def client_for(
    upstream: Upstream, settings: Settings, headers: dict[str, str]
) -> httpx.AsyncClient:
    """An HTTP client for one host: its base URL, the bearer token, the CA to verify it."""
    return httpx.AsyncClient(
        base_url=upstream.url,
        headers=headers,
        verify=tls_verify(settings),
        timeout=httpx.Timeout(settings.serving_timeout_s, connect=CONNECT_TIMEOUT_S),
    )


@dataclass
class Lease:
    """One request's claim on a host: counted as outstanding until released."""

    pool: ServingPool
    upstream: Upstream
    released: bool = False

    def release(self) -> None:
        if not self.released:
            self.released = True
            self.upstream.outstanding -= 1


async def request(settings: Settings, method: str, path: str, json: Any = None) -> httpx.Response:
    """One whole (not streamed) request, answered 200 by the first host that can.

    A host that fails is paused and the next one tried, so the request must be safe
    to repeat. A 4xx other than 429 is misconfiguration, the same on every host: 503.
    """
    pool = pool_for(settings)
    headers = await bearer_headers(settings)
    for upstream in await pool.candidates(settings):
        held = pool.lease(upstream)
        try:
            async with client_for(upstream, settings, headers) as client:
                response = await client.request(method, path, json=json)
        except httpx.HTTPError as exc:
            pool.failed(upstream, f"{path}: {type(exc).__name__}")
            continue
        finally:
            held.release()
        if retryable(response.status_code):
            if response.status_code != 429:
                pool.failed(upstream, f"{path} answered {response.status_code}")
            continue
        if response.status_code != 200:
            log.warning("serving %s %s answered %d", upstream.name, path, response.status_code)
            raise DependencyUnavailable("serving")
        pool.succeeded(upstream)
        return response
    raise DependencyUnavailable("serving")
