"""Request and response models of the OpenAI-compatible API (the subset this server runs).

Unknown fields are ignored, as OpenAI clients send fields a server may not know; values out
of range are refused with a 400 in OpenAI's error shape (see api.py).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class _Req(BaseModel):
    model_config = ConfigDict(extra="ignore")


class StreamOptions(_Req):
    include_usage: bool = False


class TextPart(_Req):
    type: Literal["text"]
    text: str


class ChatMessage(_Req):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart] | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(p.text for p in self.content)


class _Sampling(_Req):
    model: str = Field(examples=["llama-3.1-8b-instruct"])
    max_tokens: int | None = Field(default=None, ge=1, examples=[256])
    temperature: float = Field(default=1.0, ge=0.0, le=2.0, examples=[0.2])
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    n: int = Field(default=1, ge=1, le=1, description="Only 1 is supported.")
    stop: str | list[str] | None = Field(default=None, examples=[["\n\n"]])
    seed: int | None = Field(default=None, ge=-(2**63), lt=2**63)
    stream: bool = False
    stream_options: StreamOptions | None = None
    presence_penalty: float = Field(
        default=0.0, ge=0.0, le=0.0, description="Not supported: must be 0."
    )
    frequency_penalty: float = Field(
        default=0.0, ge=0.0, le=0.0, description="Not supported: must be 0."
    )
    user: str | None = None

    @field_validator("stop")
    @classmethod
    def _stops(cls, v: str | list[str] | None) -> str | list[str] | None:
        stops = [v] if isinstance(v, str) else (v or [])
        if len(stops) > 4:
            raise ValueError("at most 4 stop sequences")
        if any(s == "" for s in stops):
            raise ValueError("stop sequences must not be empty")
        return v

    def stop_list(self) -> list[str]:
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


class ChatCompletionRequest(_Sampling):
    model_config = ConfigDict(
        extra="ignore",
        json_schema_extra={
            "examples": [
                {
                    "model": "llama-3.1-8b-instruct",
                    "messages": [
                        {"role": "user", "content": "Summarise the hand hygiene guideline."}
                    ],
                    "max_tokens": 256,
                    "temperature": 0.2,
                    "stream": True,
                    "stream_options": {"include_usage": True},
                }
            ]
        },
    )
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)


class CompletionRequest(_Sampling):
    model_config = ConfigDict(
        extra="ignore",
        json_schema_extra={
            "examples": [
                {
                    "model": "llama-3.1-8b-instruct",
                    "prompt": "The ward opens at",
                    "max_tokens": 16,
                }
            ]
        },
    )
    prompt: str | list[str] | list[int] = Field(examples=["The ward opens at"])
    echo: bool = Field(default=False, description="Not supported: must be false.")

    @field_validator("echo")
    @classmethod
    def _no_echo(cls, v: bool) -> bool:
        if v:
            raise ValueError("echo is not supported")
        return v


class EmbeddingRequest(_Req):
    model_config = ConfigDict(
        extra="ignore",
        json_schema_extra={
            "examples": [
                {
                    "model": "all-MiniLM-L6-v2",
                    "input": ["hand hygiene", "visiting hours"],
                }
            ]
        },
    )
    model: str
    input: str | list[str] = Field(examples=["hand hygiene guideline"])
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(default=None, ge=1)
    user: str | None = None

    @field_validator("input")
    @classmethod
    def _inputs(cls, v: str | list[str]) -> str | list[str]:
        if isinstance(v, list) and not 1 <= len(v) <= 2048:
            raise ValueError("input must hold 1 to 2048 strings")
        return v


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int = 0
    total_tokens: int


class ErrorBody(BaseModel):
    message: str
    type: str
    code: str | None = None
    param: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorBody


class TokenizeRequest(_Req):
    """vLLM's /tokenize contract: the chat messages (as the chat template renders them)."""

    model: str
    messages: list[ChatMessage] = Field(min_length=1)


class TokenizeResponse(BaseModel):
    count: int
    max_model_len: int


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "clinchat"
    max_model_len: int | None = None


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


def chat_response(
    rid: str, created: int, model: str, text: str, finish: str | None, usage: Usage
) -> dict[str, Any]:
    return {
        "id": rid,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "logprobs": None,
                "finish_reason": finish,
            }
        ],
        "usage": usage.model_dump(),
    }


def completion_response(
    rid: str, created: int, model: str, text: str, finish: str | None, usage: Usage
) -> dict[str, Any]:
    return {
        "id": rid,
        "object": "text_completion",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": finish}],
        "usage": usage.model_dump(),
    }
