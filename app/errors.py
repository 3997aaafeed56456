"""Errors a client can act on, and the handlers that shape them.

A dependency that is down or not configured gives 503 naming it; nothing a user
sends gives a 500, and no error body or log line carries request content.
"""

import logging
from typing import Any

import psycopg
import redis.exceptions
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from app.audit import AuditUnavailable
from app.crypto import KeysUnavailable

log = logging.getLogger(__name__)


class DependencyUnavailable(Exception):
    def __init__(self, name: str, reason: str = "unavailable") -> None:
        super().__init__(f"{name} is {reason}")
        self.name = name
        self.reason = reason


def unavailable(name: str, reason: str = "unavailable") -> JSONResponse:
    return JSONResponse(
        {"detail": f"{name} is {reason}", "down": [name]},
        status_code=503,
        headers={"Retry-After": "5"},
    )


AT_CAPACITY = "at capacity (no free connection in this app's pool): retry shortly"


def redis_reason(exc: Exception) -> str:
    """Why Redis failed: a full pool is load on this app, not Redis being down."""
    if isinstance(exc, redis.exceptions.MaxConnectionsError) or "No connection available" in str(
        exc
    ):
        return AT_CAPACITY
    return "unavailable"


def validation_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    """Where and what is wrong, without the submitted value (it may hold PHI)."""
    return [
        {"loc": list(error.get("loc", ())), "msg": error.get("msg", ""), "type": error.get("type")}
        for error in exc.errors()
    ]


def install(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        # FastAPI's own 422 echoes the input back; this one names the field only.
        return JSONResponse({"detail": validation_errors(exc)}, status_code=422)

    @app.exception_handler(DependencyUnavailable)
    async def _dependency(_: Request, exc: DependencyUnavailable) -> JSONResponse:
        log.warning("dependency %s: %s", exc.name, exc.reason)
        return unavailable(exc.name, exc.reason)

    @app.exception_handler(AuditUnavailable)
    async def _audit(_: Request, exc: AuditUnavailable) -> JSONResponse:
        log.error("audit trail: %s", exc)
        return unavailable("audit")

    @app.exception_handler(KeysUnavailable)
    async def _keys(_: Request, exc: KeysUnavailable) -> JSONResponse:
        log.warning("vault: %s", exc)
        return unavailable("vault")

    @app.exception_handler(redis.exceptions.ConnectionError)
    @app.exception_handler(redis.exceptions.TimeoutError)
    async def _redis(_: Request, exc: Exception) -> JSONResponse:
        log.warning("redis: %s", type(exc).__name__)
        return unavailable("redis", redis_reason(exc))

    @app.exception_handler(redis.exceptions.NoPermissionError)
    async def _redis_acl(_: Request, exc: Exception) -> JSONResponse:
        # a key or command the deployment's ACL does not grant: misconfiguration
        log.error("redis: the ACL refused a command (NOPERM): roles/redis redis_app_keys")
        return unavailable("redis", "refusing this app's user (ACL)")

    @app.exception_handler(PoolTimeout)
    async def _pool(_: Request, exc: Exception) -> JSONResponse:
        log.warning("database: connection pool exhausted")
        return unavailable("database", AT_CAPACITY)

    @app.exception_handler(OperationalError)
    @app.exception_handler(psycopg.OperationalError)
    async def _database(_: Request, exc: Exception) -> JSONResponse:
        log.warning("database: %s", type(exc).__name__)
        return unavailable("database")

    @app.exception_handler(DBAPIError)
    async def _dbapi(_: Request, exc: DBAPIError) -> JSONResponse:
        if exc.connection_invalidated:
            return unavailable("database")
        # Statement text and parameters may carry user data: log the class only.
        log.error("database error %s", type(exc.orig).__name__)
        return JSONResponse({"detail": "internal error"}, status_code=500)
