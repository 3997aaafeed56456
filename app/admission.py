"""Admission control: a bound on the questions one worker process answers at once.

A question holds database and Redis connections, a thread for its embedding and
a slot at the serving while its answer streams. Past ``chat_max_in_flight`` a new
question is refused at the door, before it takes any of those, with 503 "at
capacity" and ``Retry-After``: the admitted ones then finish at their normal
speed, where without the bound every question of a burst queued on the pools and
most timed out there (tests/app/test_load.py, app/BENCHMARKS.md).
"""

from __future__ import annotations

import re
from typing import Any

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from app.metrics import ADMISSION_REFUSED
from app.settings import Settings, get_settings

QUESTIONS = re.compile(r"^/api/v1/conversations/[^/]+/messages$|^/v1/chat/completions$")
RETRY_AFTER_S = 2
MESSAGE = "the app is answering as many questions as it can: retry shortly"


def _settings(scope: Scope) -> Settings:
    # the app's settings dependency, as the routes see it (tests override it)
    overrides: dict[Any, Any] = getattr(scope.get("app"), "dependency_overrides", {})
    return overrides.get(get_settings, get_settings)()  # type: ignore[no-any-return]


def _refusal(path: str) -> JSONResponse:
    # The request body is left unread: the connection must not be reused after this.
    headers = {"Retry-After": str(RETRY_AFTER_S), "Connection": "close"}
    if path.startswith("/v1/"):  # the facade answers in OpenAI's shape
        body: dict[str, Any] = {
            "error": {"message": MESSAGE, "type": "service_unavailable",
                      "code": "at_capacity", "param": None, "down": ["app"]}
        }  # fmt: skip
    else:
        body = {"detail": f"app is at capacity: {MESSAGE}", "down": ["app"]}
    return JSONResponse(body, status_code=503, headers=headers)


class Admission:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.in_flight = 0  # one event loop per worker process: no lock needed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] != "POST"
            or not QUESTIONS.match(scope["path"])
        ):
            await self.app(scope, receive, send)
            return
        limit = _settings(scope).chat_max_in_flight
        if limit and self.in_flight >= limit:
            ADMISSION_REFUSED.inc()
            await _refusal(scope["path"])(scope, receive, send)
            return
        self.in_flight += 1
        try:  # returns once the whole (streamed) answer is sent
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1
