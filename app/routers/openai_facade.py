"""The OpenAI-compatible facade (``/v1``): the assistant for tools that speak OpenAI's API.

``POST /v1/chat/completions`` answers the last user message from the knowledge
base exactly as the chat does (same retrieval, prompt, PHI policy, not-found
answer), in OpenAI's response shape plus top-level ``sources`` (the citations),
``grounded`` and ``disclaimer``; streamed, the first chunk carries them. The
``model`` field is accepted and echoed; client ``system`` messages are ignored
(the assistant's own instructions rule). Nothing is stored but the audit row
``facade.chat``.

Auth as everywhere (a session with CSRF, or ``Authorization: Bearer`` with a
personal API token); the clinician role. Every error, including 401/403 and
validation, is shaped ``{"error": {"message", "type", "code", "param"}}`` and
never echoes what was sent.
"""

import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Annotated, Any, Literal

import psycopg
import redis.exceptions
from fastapi import APIRouter, Depends, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.audit import AuditUnavailable, record
from app.auth.deps import Clinician, require_scope
from app.auth.ratelimit import FacadeLimit
from app.auth.tokens import Scope
from app.chat import llm, service
from app.chat.prompt import Turn
from app.crypto import KeysUnavailable
from app.db import DbSession
from app.errors import AT_CAPACITY, DependencyUnavailable, redis_reason
from app.kb.collections import access_for
from app.settings import Settings, get_settings

log = logging.getLogger(__name__)

SettingsDep = Annotated[Settings, Depends(get_settings)]

MODEL_ID = "clinchat-rag"
CREATED = int(time.time())
QUESTION_MAX_CHARS = 4000
MESSAGE_MAX_CHARS = 32000
MAX_MESSAGES = 100

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_exceeded",
}


def openai_error(
    status_code: int,
    message: str,
    code: str,
    param: str | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    kind = _ERROR_TYPES.get(
        status_code, "server_error" if status_code < 503 else "service_unavailable"
    )
    body = {"error": {"message": message, "type": kind, "code": code, "param": param, **extra}}
    return JSONResponse(body, status_code=status_code, headers=headers)


def _unavailable(name: str, reason: str = "unavailable") -> JSONResponse:
    return openai_error(
        503, f"{name} is {reason}", "dependency_unavailable", headers={"Retry-After": "5"},
        down=[name],
    )  # fmt: skip


def _invalid(exc: RequestValidationError) -> JSONResponse:
    first = exc.errors()[0] if exc.errors() else {}
    loc = [str(part) for part in first.get("loc", ()) if part != "body"]
    param = ".".join(loc) or None
    kind = str(first.get("type", "invalid_value"))
    if kind == "json_invalid":
        return openai_error(400, "the request body is not valid JSON", "json_invalid")
    # where and what, never the value: it may hold PHI
    message = f"{param}: {first.get('msg', 'invalid')}" if param else str(first.get("msg"))
    return openai_error(400, message, "invalid_value", param)


class OpenAIRoute(APIRoute):
    """Every error of the facade in OpenAI's shape, whatever raised it."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                return await handler(request)
            except RequestValidationError as exc:
                return _invalid(exc)
            except StarletteHTTPException as exc:
                code = {
                    401: "invalid_api_key", 403: "forbidden", 404: "not_found",
                    429: "rate_limit_exceeded",
                }  # fmt: skip
                return openai_error(
                    exc.status_code,
                    str(exc.detail),
                    code.get(exc.status_code, "error"),
                    headers=dict(exc.headers or {}),
                )
            except DependencyUnavailable as exc:
                log.warning("facade: dependency %s: %s", exc.name, exc.reason)
                return _unavailable(exc.name, exc.reason)
            except KeysUnavailable:
                return _unavailable("vault")
            except AuditUnavailable:
                return _unavailable("audit")
            except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
                return _unavailable("redis", redis_reason(exc))
            except PoolTimeout:
                return _unavailable("database", AT_CAPACITY)
            except redis.exceptions.NoPermissionError:
                return _unavailable("redis", "refusing this app's user (ACL)")
            except (OperationalError, psycopg.OperationalError):
                return _unavailable("database")

        return route


router = APIRouter(
    prefix="/v1",
    tags=["openai"],
    route_class=OpenAIRoute,
    dependencies=[Depends(require_scope(Scope.facade))],
)


class TextPart(BaseModel):
    type: Literal["text"] = "text"
    text: str = Field(max_length=MESSAGE_MAX_CHARS)


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: Annotated[str, Field(max_length=MESSAGE_MAX_CHARS)] | list[TextPart] | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")

    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    model_config = ConfigDict(
        extra="ignore",
        json_schema_extra={
            "examples": [
                {
                    "model": MODEL_ID,
                    "messages": [
                        {"role": "user", "content": "How soon are antibiotics given in sepsis?"}
                    ],
                    "stream": False,
                }
            ]
        },
    )

    model: str = Field(MODEL_ID, max_length=256, description="accepted and echoed")
    messages: list[ChatMessage] = Field(min_length=1, max_length=MAX_MESSAGES)
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(None, ge=1, description="capped at CLINCHAT_MAX_ANSWER_TOKENS")
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    n: int = Field(1, ge=1, le=1, description="only 1")


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "clinchat"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]

    model_config = {
        "json_schema_extra": {
            "examples": [
                {
                    "object": "list",
                    "data": [
                        {"id": MODEL_ID, "object": "model", "created": 0, "owned_by": "clinchat"}
                    ],
                }
            ]
        }
    }


class ErrorBody(BaseModel):
    message: str
    type: str
    code: str
    param: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorBody


ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in (400, 401, 403, 503)
}


@router.get("/models", response_model=ModelList, responses=ERRORS)
async def list_models(principal: Clinician) -> ModelList:
    return ModelList(data=[ModelCard(id=MODEL_ID, created=CREATED)])


def _question_and_history(body: ChatCompletionRequest) -> tuple[str, list[Turn]] | JSONResponse:
    last = body.messages[-1]
    question = last.text()
    if last.role != "user" or not question.strip():
        return openai_error(
            400, "the last message must be a non-empty user message", "invalid_value", "messages"
        )
    if len(question) > QUESTION_MAX_CHARS:
        return openai_error(
            400,
            f"the question is longer than {QUESTION_MAX_CHARS} characters",
            "invalid_value",
            "messages",
        )
    history = [
        Turn("user" if m.role == "user" else "assistant", m.text())
        for m in body.messages[:-1]
        if m.role in ("user", "assistant") and m.text().strip()
    ]
    return question, history


@router.post("/chat/completions", responses=ERRORS, dependencies=[FacadeLimit])
async def chat_completions(
    body: ChatCompletionRequest, principal: Clinician, db: DbSession, settings: SettingsDep
) -> Response:
    """An answer from the hospital's documents, in OpenAI's shape, with its sources."""
    parsed = _question_and_history(body)
    if isinstance(parsed, JSONResponse):
        return parsed
    question, history = parsed
    answer = await service.prepare(
        db,
        settings,
        question,
        history,
        collections=access_for(settings, principal).read,
        max_tokens=body.max_completion_tokens or body.max_tokens,
        temperature=body.temperature,
    )
    try:
        await record(
            db,
            settings,
            "facade.chat",
            principal.actor,
            entity_type="facade",
            detail={
                "messages": len(body.messages),
                "sources": len(answer.citations),
                "grounded": answer.grounded,
                "stream": body.stream,
                "phi_spans": sum(answer.phi_types.values()),
            },
        )
        await db.commit()
    except BaseException:
        await answer.aclose()
        raise
    completion_id = f"chatcmpl-{uuid.uuid4().hex}"
    extra = {
        "sources": [c.public() for c in answer.citations],
        "grounded": answer.grounded,
        "disclaimer": settings.disclaimer,
    }
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        chunks = _chunks(answer, completion_id, body.model, extra, include_usage)
        return StreamingResponse(
            chunks,
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )
    try:
        text = "".join([piece async for piece in answer.texts()])
    except llm.StreamBroken:
        return openai_error(502, "serving failed while answering", "serving_failed")
    return JSONResponse(
        {
            "id": completion_id,
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "logprobs": None,
                    "finish_reason": answer.finish_reason,
                }
            ],
            "usage": answer.usage.as_dict(),
            **extra,
        }
    )


def _data(payload: dict[str, Any] | str) -> str:
    return f"data: {payload if isinstance(payload, str) else json.dumps(payload)}\n\n"


async def _chunks(
    answer: service.Answer,
    completion_id: str,
    model: str,
    extra: dict[str, Any],
    include_usage: bool,
) -> AsyncIterator[str]:
    """OpenAI's chunk stream; the first chunk carries the sources; ends with [DONE]."""
    created = int(time.time())

    def chunk(delta: dict[str, str], finish: str | None = None, **more: Any) -> dict[str, Any]:
        return {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
            **more,
        }

    try:
        yield _data(chunk({"role": "assistant", "content": ""}, **extra))
        async for piece in answer.texts():
            yield _data(chunk({"content": piece}))
        yield _data(chunk({}, answer.finish_reason))
        if include_usage:
            yield _data({**chunk({}), "choices": [], "usage": answer.usage.as_dict()})
    except llm.StreamBroken:
        log.warning("facade: the answer broke off")
        error = {"message": "serving failed while answering", "type": "server_error",
                 "code": "serving_failed", "param": None}  # fmt: skip
        yield _data({"error": error})
    finally:
        await answer.aclose()
    yield _data("[DONE]")
