"""Streaming answers from the serving's OpenAI-compatible ``/chat/completions``.

``open_stream`` sends the request and waits for the serving's status line, so a
serving that is down, refusing or overloaded raises ``DependencyUnavailable
("serving")`` before the caller has started its own response (a clean 503).
After that, ``Stream.deltas()`` yields text pieces; a serving that dies
mid-answer raises ``StreamBroken``. Closing the stream (``aclose``, also when
the caller is cancelled because its client went away) closes the upstream
connection, and the serving stops generating.

Nothing here logs message content: status codes and exception types only.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx

from app.errors import DependencyUnavailable
from app.serving_pool import Lease, bearer_headers, client_for, pool_for, request, retryable
from app.settings import Settings

log = logging.getLogger(__name__)

MODEL_INFO_TTL_S = 60.0  # /models is asked at most once a minute per settings


class ContextTooLong(Exception):
    """The serving refused the prompt as longer than the model's context."""


class StreamBroken(Exception):
    """The serving stopped or failed in the middle of an answer."""


@dataclass(frozen=True)
class ModelInfo:
    id: str
    max_len: int | None  # the model's context in tokens, when the serving says


@dataclass
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def as_dict(self) -> dict[str, int]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
        }


_model_info: dict[int, tuple[Settings, ModelInfo, float]] = {}


async def model_info(settings: Settings) -> ModelInfo:
    """The model to ask (settings.serving_model, else the first /models lists) and its context.

    Every gpu host serves the same model, so the first host that answers decides.
    """
    cached = _model_info.get(id(settings))
    if cached and time.monotonic() - cached[2] < MODEL_INFO_TTL_S:
        return cached[1]
    response = await request(settings, "GET", "/models")
    try:
        cards = response.json()["data"]
        wanted = settings.serving_model or cards[0]["id"]
        card: dict[str, Any] = next((c for c in cards if c.get("id") == wanted), {})
        info = ModelInfo(str(wanted), card.get("max_model_len"))
    except (ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
        raise DependencyUnavailable("serving", "answering a malformed model list") from exc
    _model_info[id(settings)] = (settings, info, time.monotonic())
    return info


async def prompt_tokens(settings: Settings, model: str, messages: list[dict[str, str]]) -> int:
    """The messages' length in the model's tokens, chat template included (POST /tokenize)."""
    response = await request(
        settings, "POST", "/tokenize", json={"model": model, "messages": messages}
    )
    try:
        return int(response.json()["count"])
    except (ValueError, KeyError, TypeError) as exc:
        raise DependencyUnavailable("serving", "answering a malformed token count") from exc


def _error_code(body: bytes) -> str:
    try:
        return str(json.loads(body)["error"]["code"])
    except (ValueError, KeyError, TypeError):
        return ""


@dataclass
class Stream:
    """One answer being generated upstream."""

    client: httpx.AsyncClient
    response: httpx.Response
    model: str
    held: Lease  # the gpu host answering, counted as busy until aclose
    usage: Usage = field(default_factory=Usage)
    finish_reason: str | None = None

    async def deltas(self) -> AsyncIterator[str]:
        """Text pieces as the serving sends them; StreamBroken if it fails midway."""
        try:
            async for line in self.response.aiter_lines():
                if not line.startswith("data:"):
                    continue  # SSE comments (pings), event names, blank separators
                data = line[5:].strip()
                if data == "[DONE]":
                    return
                chunk = json.loads(data)
                if "error" in chunk:
                    log.warning("serving failed mid-answer: %s", _error_code(data.encode()))
                    raise StreamBroken("the serving failed while answering")
                if chunk.get("usage"):
                    usage = chunk["usage"]
                    self.usage = Usage(
                        int(usage.get("prompt_tokens", 0)), int(usage.get("completion_tokens", 0))
                    )
                for choice in chunk.get("choices") or []:
                    self.finish_reason = choice.get("finish_reason") or self.finish_reason
                    text = (choice.get("delta") or {}).get("content")
                    if text:
                        yield text
        except httpx.HTTPError as exc:
            self.held.pool.failed(self.held.upstream, f"stream: {type(exc).__name__}")
            raise StreamBroken("the serving stopped while answering") from exc
        except (ValueError, TypeError, AttributeError) as exc:
            raise StreamBroken("the serving sent a malformed chunk") from exc
        # a stream that ends without [DONE] was cut off
        raise StreamBroken("the serving's answer ended early")

    async def aclose(self) -> None:
        # Shielded: this also runs while the caller is being cancelled (client gone),
        # and the upstream connection must still be closed so the serving stops.
        with anyio.CancelScope(shield=True):
            try:
                await self.response.aclose()
                await self.client.aclose()
            finally:
                self.held.release()


async def open_stream(
    settings: Settings,
    messages: list[dict[str, str]],
    max_tokens: int | None = None,
    temperature: float | None = None,
) -> Stream:
    """Start a streamed completion; raises before anything is generated if it cannot."""
    info = await model_info(settings)
    body: dict[str, Any] = {
        "model": info.id,
        "messages": messages,
        "stream": True,
        "stream_options": {"include_usage": True},
        "max_tokens": max_tokens or settings.max_answer_tokens,
        "temperature": settings.temperature if temperature is None else temperature,
    }
    pool = pool_for(settings)
    headers = await bearer_headers(settings)
    at_capacity = False
    for upstream in await pool.candidates(settings):
        held = pool.lease(upstream)
        client = client_for(upstream, settings, headers)
        try:
            response = await client.send(
                client.build_request("POST", "/chat/completions", json=body), stream=True
            )
        except httpx.HTTPError as exc:
            held.release()
            await client.aclose()
            pool.failed(upstream, f"/chat/completions: {type(exc).__name__}")
            continue  # nothing was generated: the next host may answer
        except BaseException:
            held.release()
            await client.aclose()
            raise
        if response.status_code == 200:
            pool.succeeded(upstream)
            return Stream(client, response, info.id, held)
        try:
            code = _error_code(await response.aread())
        except httpx.HTTPError:
            code = ""
        finally:
            held.release()
            await response.aclose()
            await client.aclose()
        log.warning(
            "serving %s /chat/completions answered %d %s", upstream.name, response.status_code, code
        )
        if response.status_code == 429:
            at_capacity = True
        elif retryable(response.status_code):
            pool.failed(upstream, f"/chat/completions answered {response.status_code}")
        elif response.status_code == 400 and code == "context_length_exceeded":
            raise ContextTooLong()
        else:
            raise DependencyUnavailable("serving")  # 401, 404: misconfigured, on every host alike
    raise DependencyUnavailable("serving", "at capacity" if at_capacity else "unavailable")
