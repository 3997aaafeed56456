"""Liveness, readiness and version. Public: they reveal no data."""

import logging
from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from app import __version__, db
from app.metrics import DEPENDENCY_FAILURES, exposition
from app.settings import Settings, get_settings

router = APIRouter(tags=["health"])
log = logging.getLogger(__name__)


class Liveness(BaseModel):
    status: str = "ok"


class Readiness(BaseModel):
    status: str
    checks: dict[str, str]
    down: list[str]

    model_config = {
        "json_schema_extra": {
            "examples": [
                {"status": "unavailable", "checks": {"database": "down"}, "down": ["database"]}
            ]
        }
    }


class VersionInfo(BaseModel):
    version: str


@router.get("/health", response_model=Liveness)
async def health() -> Liveness:
    """The process answers. Says nothing about its dependencies."""
    return Liveness()


@router.get("/health/ready", response_model=Readiness, responses={503: {"model": Readiness}})
async def ready(settings: Annotated[Settings, Depends(get_settings)]) -> JSONResponse:
    """200 only when a request would succeed; 503 naming every dependency that is down."""
    checks: dict[str, str] = {}
    try:
        await db.ping(settings)
        checks["database"] = "up"
    except Exception as exc:  # noqa: BLE001 - any failure means "not ready"
        # The exception text can hold the host name but never user data; log its type only.
        log.warning("readiness: database down (%s)", type(exc).__name__)
        DEPENDENCY_FAILURES.labels("database").inc()
        checks["database"] = "down"
    down = [name for name, state in checks.items() if state != "up"]
    body = Readiness(status="unavailable" if down else "ok", checks=checks, down=down)
    return JSONResponse(body.model_dump(), status_code=503 if down else 200)


@router.get("/version", response_model=VersionInfo)
async def version() -> VersionInfo:
    return VersionInfo(version=__version__)


@router.get("/metrics", include_in_schema=False)
async def metrics():  # noqa: ANN201 - a plain text exposition
    return exposition()
