"""The HTTP app: OpenAI-compatible routes, /health, /metrics, errors in OpenAI's shape.

The model loads in a background thread after the server starts, so /health can say 503
while it loads; /v1 routes answer 503 until then. Request bodies are never logged.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import json
import logging
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
import torch
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sse_starlette import EventSourceResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from serving import __version__
from serving.embeddings import BertEmbedder
from serving.engine import EngineDead, LoadedModel, QueueFull, load_model
from serving.generation import Generation, GenerationError
from serving.metrics import ServerMetrics
from serving.sampling import SamplingParams
from serving.schemas import (
    ChatCompletionRequest,
    ChatMessage,
    CompletionRequest,
    EmbeddingRequest,
    ErrorResponse,
    ModelCard,
    ModelList,
    TokenizeRequest,
    TokenizeResponse,
    Usage,
    chat_response,
    completion_response,
)
from serving.settings import Settings

log = logging.getLogger(__name__)


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        type_: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.code, self.param = (
            status,
            message,
            type_,
            code,
            param,
        )


def error_json(
    status: int,
    message: str,
    type_: str,
    code: str | None = None,
    param: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body = {"error": {"message": message, "type": type_, "code": code, "param": param}}
    return JSONResponse(body, status_code=status, headers=headers)


Loader = Callable[[Settings, ServerMetrics], LoadedModel]


def default_loader(settings: Settings, metrics: ServerMetrics, verify: bool = True) -> LoadedModel:
    return load_model(
        settings.model_dir,
        quantization=settings.quantization,
        device=settings.device,
        dtype=settings.dtype,
        max_model_len=settings.max_model_len,
        max_num_seqs=settings.max_num_seqs,
        max_queue=settings.max_queue,
        prefill_chunk=settings.prefill_chunk,
        cuda_graphs=settings.cuda_graphs,
        require_manifest=settings.require_manifest,
        verify=verify,
        observer=metrics,
    )


@dataclass
class ServerState:
    settings: Settings
    metrics: ServerMetrics
    loaded: LoadedModel | None = None
    embedder: BertEmbedder | None = None
    load_error: str | None = None
    created: int = field(default_factory=lambda: int(time.time()))

    @property
    def ready(self) -> bool:
        if self.loaded is None or not self.loaded.engine.alive:
            return False
        return self.settings.embedding_model_dir is None or self.embedder is not None

    def status(self) -> str:
        if self.load_error:
            return "failed"
        if self.loaded is None:
            return "loading"
        if not self.loaded.engine.alive:
            return "engine dead"
        return "ok" if self.ready else "loading"


def _state(request: Request) -> ServerState:
    return request.app.state.server


def require_auth(request: Request) -> None:
    key = _state(request).settings.api_key
    if key is None:
        return
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        token.strip().encode(), key.get_secret_value().encode()
    ):
        raise ApiError(401, "invalid or missing API key", "authentication_error", "invalid_api_key")


def ready_model(request: Request) -> LoadedModel:
    state = _state(request)
    if not state.ready or state.loaded is None:
        raise ApiError(
            503, f"model not ready ({state.status()})", "service_unavailable", "model_not_ready"
        )
    return state.loaded


def _check_model(state: ServerState, name: str) -> None:
    if name != state.settings.served_model_name:
        raise ApiError(
            404,
            f"The model '{name}' does not exist",
            "invalid_request_error",
            "model_not_found",
            "model",
        )


def _params(
    body: ChatCompletionRequest | CompletionRequest,
    prompt_len: int,
    max_len: int,
    max_tokens: int | None,
) -> SamplingParams:
    if prompt_len >= max_len:
        raise ApiError(
            400,
            f"This model's maximum context length is {max_len} tokens; the "
            f"prompt has {prompt_len} tokens.",
            code="context_length_exceeded",
            param="messages",
        )
    if max_tokens is not None and prompt_len + max_tokens > max_len:
        raise ApiError(
            400,
            f"This model's maximum context length is {max_len} tokens; "
            f"{prompt_len} prompt tokens plus max_tokens {max_tokens} exceed it.",
            code="context_length_exceeded",
            param="max_tokens",
        )
    return SamplingParams(
        max_tokens=max_tokens or max_len - prompt_len,
        temperature=body.temperature,
        top_p=body.top_p,
        seed=body.seed,
    )


def _start(gen: Generation) -> None:
    try:
        gen.start()
    except QueueFull:
        raise ApiError(
            429, "the server is at capacity, retry later", "rate_limit_exceeded", "queue_full"
        ) from None
    except EngineDead:
        raise ApiError(503, "engine is not running", "service_unavailable", "engine_dead") from None


async def _collect(gen: Generation, request: Request) -> str:
    """Run a non-streaming generation; abort it if the client disconnects meanwhile."""

    async def watch() -> None:
        while not await request.is_disconnected():
            await asyncio.sleep(0.25)
        gen.abort()

    watcher = asyncio.create_task(watch())
    try:
        return "".join([d async for d in gen.deltas()])
    except GenerationError:
        raise ApiError(500, "generation failed", "server_error", "engine_error") from None
    finally:
        watcher.cancel()


def _usage(gen: Generation) -> Usage:
    return Usage(
        prompt_tokens=gen.prompt_tokens,
        completion_tokens=gen.completion_tokens,
        total_tokens=gen.prompt_tokens + gen.completion_tokens,
    )


async def _sse(
    gen: Generation,
    chunk: Callable[[str | None, str | None, bool], dict[str, Any]],
    include_usage: bool,
    usage_chunk: Callable[[], dict[str, Any]],
    first: dict[str, Any] | None,
) -> AsyncIterator[dict[str, str]]:
    try:
        if first is not None:
            yield {"data": json.dumps(first)}
        async for delta in gen.deltas():
            yield {"data": json.dumps(chunk(delta, None, False))}
        yield {"data": json.dumps(chunk(None, gen.finish_reason, True))}
        if include_usage:
            yield {"data": json.dumps(usage_chunk())}
    except GenerationError:
        err = {
            "error": {
                "message": "generation failed",
                "type": "server_error",
                "code": "engine_error",
                "param": None,
            }
        }
        yield {"data": json.dumps(err)}
    yield {"data": "[DONE]"}


v1 = APIRouter(prefix="/v1", dependencies=[Depends(require_auth)])


def _chat_prompt(model: LoadedModel, messages: list[ChatMessage]) -> list[int]:
    """The messages through the model's chat template, as token ids."""
    try:
        return model.tokenizer.apply_chat_template(
            [{"role": m.role, "content": m.text()} for m in messages]
        )
    except Exception:  # noqa: BLE001 - the template's own error may quote the messages
        raise ApiError(
            400, "the messages do not fit the model's chat template", param="messages"
        ) from None


@v1.get("/models", response_model=ModelList)
async def list_models(request: Request) -> ModelList:
    state = _state(request)
    cards = [
        ModelCard(
            id=state.settings.served_model_name,
            created=state.created,
            max_model_len=state.loaded.engine.max_len if state.loaded else None,
        )
    ]
    if state.settings.served_embedding_name:
        cards.append(ModelCard(id=state.settings.served_embedding_name, created=state.created))
    return ModelList(data=cards)


@v1.post(
    "/chat/completions", responses={400: {"model": ErrorResponse}, 429: {"model": ErrorResponse}}
)
async def chat_completions(
    body: ChatCompletionRequest,
    request: Request,
    model: LoadedModel = Depends(ready_model),  # noqa: B008 - FastAPI's dependency idiom
) -> Any:
    state = _state(request)
    _check_model(state, body.model)
    prompt = _chat_prompt(model, body.messages)
    max_tokens = body.max_completion_tokens or body.max_tokens
    gen = Generation(
        model.engine,
        model.tokenizer,
        prompt,
        _params(body, len(prompt), model.engine.max_len, max_tokens),
        body.stop_list(),
    )
    _start(gen)
    rid, created, name = f"chatcmpl-{uuid.uuid4().hex}", int(time.time()), body.model
    usage_field = {"usage": None} if body.include_usage else {}

    def chunk(delta: str | None, finish: str | None, last: bool) -> dict[str, Any]:
        return {
            "id": rid,
            "object": "chat.completion.chunk",
            "created": created,
            "model": name,
            "choices": [
                {
                    "index": 0,
                    "delta": {} if last else {"content": delta},
                    "logprobs": None,
                    "finish_reason": finish,
                }
            ],
            **usage_field,
        }

    if body.stream:
        first = {
            "id": rid,
            "object": "chat.completion.chunk",
            "created": created,
            "model": name,
            "choices": [
                {
                    "index": 0,
                    "delta": {"role": "assistant", "content": ""},
                    "logprobs": None,
                    "finish_reason": None,
                }
            ],
            **usage_field,
        }

        def usage_chunk() -> dict[str, Any]:
            return {
                "id": rid,
                "object": "chat.completion.chunk",
                "created": created,
                "model": name,
                "choices": [],
                "usage": _usage(gen).model_dump(),
            }

        return EventSourceResponse(
            _sse(gen, chunk, body.include_usage, usage_chunk, first), ping=15
        )
    text = await _collect(gen, request)
    return chat_response(rid, created, name, text, gen.finish_reason, _usage(gen))


@v1.post("/tokenize", response_model=TokenizeResponse, responses={400: {"model": ErrorResponse}})
async def tokenize(
    body: TokenizeRequest,
    request: Request,
    model: LoadedModel = Depends(ready_model),  # noqa: B008 - FastAPI's dependency idiom
) -> TokenizeResponse:
    """The prompt's length in tokens: a client fits its prompt to the context exactly."""
    _check_model(_state(request), body.model)
    prompt = _chat_prompt(model, body.messages)
    return TokenizeResponse(count=len(prompt), max_model_len=model.engine.max_len)


@v1.post("/completions", responses={400: {"model": ErrorResponse}, 429: {"model": ErrorResponse}})
async def completions(
    body: CompletionRequest,
    request: Request,
    model: LoadedModel = Depends(ready_model),  # noqa: B008 - FastAPI's dependency idiom
) -> Any:
    state = _state(request)
    _check_model(state, body.model)
    prompt_in = body.prompt
    if isinstance(prompt_in, list) and prompt_in and isinstance(prompt_in[0], str):
        if len(prompt_in) != 1:
            raise ApiError(400, "only one prompt per request is supported", param="prompt")
        prompt_in = prompt_in[0]
    if isinstance(prompt_in, str):
        prompt = model.tokenizer.encode(prompt_in)
    else:
        prompt = [int(t) for t in prompt_in]
        vocab = model.config.vocab_size
        if not prompt or any(not 0 <= t < vocab for t in prompt):
            raise ApiError(
                400, "prompt token ids must be non-empty and within the vocabulary", param="prompt"
            )
    if not prompt:
        raise ApiError(400, "the prompt is empty", param="prompt")
    gen = Generation(
        model.engine,
        model.tokenizer,
        prompt,
        _params(body, len(prompt), model.engine.max_len, body.max_tokens),
        body.stop_list(),
    )
    _start(gen)
    rid, created, name = f"cmpl-{uuid.uuid4().hex}", int(time.time()), body.model
    usage_field = {"usage": None} if body.include_usage else {}

    def chunk(delta: str | None, finish: str | None, last: bool) -> dict[str, Any]:
        return {
            "id": rid,
            "object": "text_completion",
            "created": created,
            "model": name,
            "choices": [
                {"index": 0, "text": delta or "", "logprobs": None, "finish_reason": finish}
            ],
            **usage_field,
        }

    if body.stream:

        def usage_chunk() -> dict[str, Any]:
            return {
                "id": rid,
                "object": "text_completion",
                "created": created,
                "model": name,
                "choices": [],
                "usage": _usage(gen).model_dump(),
            }

        return EventSourceResponse(_sse(gen, chunk, body.include_usage, usage_chunk, None), ping=15)
    text = await _collect(gen, request)
    return completion_response(rid, created, name, text, gen.finish_reason, _usage(gen))


@v1.post("/embeddings", responses={400: {"model": ErrorResponse}})
async def embeddings(body: EmbeddingRequest, request: Request) -> Any:
    state = _state(request)
    if body.model != state.settings.served_embedding_name:
        raise ApiError(
            404,
            f"The model '{body.model}' does not exist (or is not an embedding model)",
            code="model_not_found",
            param="model",
        )
    embedder = state.embedder
    if embedder is None:
        raise ApiError(503, "embedding model not ready", "service_unavailable", "model_not_ready")
    texts = [body.input] if isinstance(body.input, str) else body.input
    if body.dimensions is not None and body.dimensions != embedder.dim:
        raise ApiError(400, f"dimensions must be {embedder.dim} for this model", param="dimensions")
    vectors, tokens = await anyio.to_thread.run_sync(embedder.embed, texts)
    data = []
    for i, vec in enumerate(vectors):
        value: Any = (
            base64.b64encode(vec.numpy().astype("<f4").tobytes()).decode()
            if body.encoding_format == "base64"
            else vec.tolist()
        )
        data.append({"object": "embedding", "index": i, "embedding": value})
    return {
        "object": "list",
        "data": data,
        "model": body.model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


ops = APIRouter()


@ops.get("/health")
async def health(request: Request) -> JSONResponse:
    state = _state(request)
    return JSONResponse({"status": state.status()}, status_code=200 if state.ready else 503)


@ops.get("/metrics")
async def metrics(request: Request) -> PlainTextResponse:
    state = _state(request)
    state.metrics.refresh(state.loaded.engine if state.loaded else None)
    return PlainTextResponse(
        generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST
    )


@ops.get("/version")
async def version() -> dict[str, str]:
    return {"version": __version__}


def _validation_message(exc: RequestValidationError) -> tuple[str, str | None]:
    # Only locations and messages: the offending input may be patient text.
    parts, param = [], None
    for err in exc.errors():
        loc = [str(x) for x in err.get("loc", ()) if x != "body"]
        if err.get("type") == "json_invalid":
            return "the request body is not valid JSON", None
        param = param or (loc[0] if loc else None)
        parts.append(f"{'.'.join(loc) or 'body'}: {err.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request", param


def create_app(
    settings: Settings,
    loader: Loader = default_loader,
    on_load_error: Callable[[str], None] | None = None,
) -> FastAPI:
    metrics_obj = ServerMetrics(settings.served_model_name)
    state = ServerState(settings, metrics_obj)

    def load() -> None:
        try:
            if settings.embedding_model_dir is not None:
                state.embedder = BertEmbedder(settings.embedding_model_dir, torch.device("cpu"))
            state.loaded = loader(settings, metrics_obj)
            log.info("ready: serving %s", settings.served_model_name)
        except Exception as exc:  # noqa: BLE001 - reported on /health and to the CLI
            state.load_error = str(exc)
            log.error("loading failed: %s", exc)
            if on_load_error is not None:
                on_load_error(str(exc))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        thread = threading.Thread(target=load, name="model-loader", daemon=True)
        thread.start()
        yield
        if state.loaded is not None:
            state.loaded.engine.stop()

    app = FastAPI(title="ClinChat model server", version=__version__, lifespan=lifespan)
    app.state.server = state
    app.include_router(v1)
    app.include_router(ops)

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return error_json(exc.status, exc.message, exc.type, exc.code, exc.param)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        message, param = _validation_message(exc)
        return error_json(400, message, "invalid_request_error", "invalid_request", param)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error_json(
            exc.status_code,
            str(exc.detail),
            "invalid_request_error",
            "not_found" if exc.status_code == 404 else None,
        )

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception) -> JSONResponse:
        log.error("internal error: %s", type(exc).__name__)
        return error_json(500, "internal server error", "server_error", "internal_error")

    return app
