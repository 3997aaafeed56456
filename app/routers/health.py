"""Liveness, readiness and version. Public: they reveal no data.

Readiness asks every dependency at once, each with a short timeout: the
database (a query), Redis (PING), Vault (sys/health: initialised and unsealed;
only when data keys come from Vault) and the serving (its model list). One
that is not configured is reported so. In production it makes the app unready
(503 naming it in `not_configured`): a deployment that forgot Redis cannot
sign anyone in, so it is not ready. In development it is only reported.
The directory (LDAP) is not a readiness check: while it is down, local
break-glass accounts still sign in, and sign-in says which one is down.
"""

import asyncio
import logging
import ssl
from collections.abc import Awaitable, Callable
from typing import Annotated

import httpx
from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from app import __version__, db
from app.metrics import DEPENDENCY_FAILURES, exposition
from app.redis_client import redis_for
from app.serving_pool import bearer_headers, serving_urls
from app.settings import EncryptionMode, Environment, Settings, get_settings

router = APIRouter(tags=["health"])
log = logging.getLogger(__name__)


class Liveness(BaseModel):
    status: str = "ok"


# A check's outcome; only DOWN makes the app unready.
UP, DOWN, NOT_CONFIGURED, NOT_USED = "up", "down", "not configured", "not used"
CHECK_TIMEOUT_S = 2.0


class Readiness(BaseModel):
    status: str
    checks: dict[str, str]
    down: list[str]
    # Production only: dependencies the deployment did not configure.
    not_configured: list[str] = []

    model_config = {
        "json_schema_extra": {
            "examples": [
                {
                    "status": "unavailable",
                    "checks": {
                        "database": "up",
                        "redis": "up",
                        "vault": "down",
                        "serving": "not configured",
                    },
                    "down": ["vault"],
                    "not_configured": ["serving"],
                }
            ]
        }
    }


class VersionInfo(BaseModel):
    version: str


@router.get("/health", response_model=Liveness)
async def health() -> Liveness:
    """The process answers. Says nothing about its dependencies."""
    return Liveness()


class NotReady(Exception):
    """A dependency answered, but not as a working one (sealed, an error status)."""


def _verify(ca_cert: str | None) -> ssl.SSLContext | bool:
    return ssl.create_default_context(cafile=ca_cert) if ca_cert else True


async def _database(settings: Settings) -> None:
    await db.ping(settings)


async def _redis(settings: Settings) -> None:
    await redis_for(settings).ping()


async def _vault(settings: Settings) -> None:
    async with httpx.AsyncClient(verify=_verify(settings.vault_ca_cert)) as client:
        # standbyok: a standby node forwards requests, so it counts as up
        response = await client.get(
            f"{settings.vault_addr.rstrip('/')}/v1/sys/health", params={"standbyok": "true"}
        )
    health = response.json()  # sealed or uninitialised still answer JSON (503, 501)
    if not health.get("initialized") or health.get("sealed"):
        raise NotReady("sealed or not initialised")


async def _serving(settings: Settings) -> None:
    """Up when any gpu host's model server lists its models: the app balances over them."""
    headers = await bearer_headers(settings)
    async with httpx.AsyncClient(
        verify=_verify(settings.serving_ca_cert), headers=headers
    ) as client:

        async def status(url: str) -> str:
            try:
                return str((await client.get(f"{url}/models")).status_code)
            except httpx.HTTPError as exc:
                return type(exc).__name__

        statuses = await asyncio.gather(*(status(url) for url in serving_urls(settings)))
    if "200" not in statuses:
        raise NotReady(f"no serving host answers: {', '.join(statuses)}")


Probe = Callable[[Settings], Awaitable[None]]


async def _check(name: str, probe: Probe, settings: Settings) -> str:
    try:
        await asyncio.wait_for(probe(settings), CHECK_TIMEOUT_S)
    except Exception as exc:  # noqa: BLE001 - any failure means "not ready"
        # The exception text can hold a host name or a URL; log its type only.
        log.warning("readiness: %s down (%s)", name, type(exc).__name__)
        DEPENDENCY_FAILURES.labels(name).inc()
        return DOWN
    return UP


def _probes(settings: Settings) -> tuple[dict[str, Probe], dict[str, str]]:
    """The checks to run, and the dependencies not asked with the reason."""
    probes: dict[str, Probe] = {"database": _database}
    skipped: dict[str, str] = {}
    if settings.redis_url:
        probes["redis"] = _redis
    else:
        skipped["redis"] = NOT_CONFIGURED
    if settings.encryption_mode is not EncryptionMode.vault:
        skipped["vault"] = NOT_USED  # development: data keys from a local file
    elif settings.vault_addr:
        probes["vault"] = _vault
    else:
        skipped["vault"] = NOT_CONFIGURED
    if settings.serving_url:
        probes["serving"] = _serving
    else:
        skipped["serving"] = NOT_CONFIGURED
    return probes, skipped


@router.get("/health/ready", response_model=Readiness, responses={503: {"model": Readiness}})
async def ready(settings: Annotated[Settings, Depends(get_settings)]) -> JSONResponse:
    """200 only when a request would succeed; 503 naming every dependency that is down
    (and, in production, every one that is not configured)."""
    probes, skipped = _probes(settings)
    results = await asyncio.gather(*(_check(n, p, settings) for n, p in probes.items()))
    checks = dict(zip(probes, results, strict=True)) | skipped
    down = [name for name, state in checks.items() if state == DOWN]
    missing = (
        [name for name, state in checks.items() if state == NOT_CONFIGURED]
        if settings.environment == Environment.production
        else []
    )
    unready = bool(down or missing)
    body = Readiness(
        status="unavailable" if unready else "ok", checks=checks, down=down, not_configured=missing
    )
    return JSONResponse(body.model_dump(), status_code=503 if unready else 200)


@router.get("/version", response_model=VersionInfo)
async def version() -> VersionInfo:
    return VersionInfo(version=__version__)


@router.get("/metrics", include_in_schema=False)
async def metrics():  # noqa: ANN201 - a plain text exposition
    return exposition()
