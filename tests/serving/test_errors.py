"""Bad requests get a 4xx in OpenAI's error shape, never a 500."""

from __future__ import annotations

from typing import Any

import httpx
import openai
import pytest

from tests.serving.conftest import MODEL, RunningServer

CHAT = "/v1/chat/completions"
MSGS = [{"role": "user", "content": "Hi"}]


def assert_openai_error(r: httpx.Response, status: int, code: str | None = None) -> None:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) >= {"message", "type", "code"}
    assert isinstance(err["message"], str) and err["message"]
    if code is not None:
        assert err["code"] == code


def test_malformed_json(server: RunningServer) -> None:
    r = httpx.post(
        server.url + CHAT,
        content=b'{"model": "x", "messages": [',
        headers={"content-type": "application/json"},
    )
    assert_openai_error(r, 400)


def test_unknown_model(server: RunningServer, client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as err:
        client.chat.completions.create(model="gpt-17", messages=MSGS)  # type: ignore[arg-type]
    assert err.value.body["code"] == "model_not_found"  # type: ignore[index]
    r = httpx.post(server.url + "/v1/completions", json={"model": "nope", "prompt": "x"})
    assert_openai_error(r, 404, "model_not_found")


def test_prompt_longer_than_context(server: RunningServer, client: openai.OpenAI) -> None:
    long = "seven " * 400  # > 256 tokens
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": long}])
    assert err.value.body["code"] == "context_length_exceeded"  # type: ignore[index]
    r = httpx.post(
        server.url + "/v1/completions", json={"model": MODEL, "prompt": "Hi", "max_tokens": 10_000}
    )
    assert_openai_error(r, 400, "context_length_exceeded")


@pytest.mark.parametrize(
    "extra",
    [
        {"temperature": 2.5},
        {"temperature": -1},
        {"top_p": 0},
        {"top_p": 1.5},
        {"max_tokens": 0},
        {"max_tokens": -3},
        {"n": 2},
        {"stop": ["a", "b", "c", "d", "e"]},
        {"seed": "abc"},
        {"presence_penalty": 1.0},
        {"messages": []},
        {"messages": [{"role": "wizard", "content": "x"}]},
        {"stream": "maybe"},
    ],
)
def test_out_of_range_parameters(server: RunningServer, extra: dict[str, Any]) -> None:
    body = {"model": MODEL, "messages": MSGS, **extra}
    assert_openai_error(httpx.post(server.url + CHAT, json=body), 400)


@pytest.mark.parametrize(
    "body",
    [
        {"model": MODEL},
        {"model": MODEL, "prompt": []},
        {"model": MODEL, "prompt": [10**9]},
        {"model": MODEL, "prompt": ["a", "b"]},
        {"model": MODEL, "prompt": "x", "echo": True},
        [1, 2, 3],
    ],
)
def test_bad_completion_bodies(server: RunningServer, body: Any) -> None:
    assert_openai_error(httpx.post(server.url + "/v1/completions", json=body), 400)


def test_unknown_route_and_method(server: RunningServer) -> None:
    assert_openai_error(httpx.get(server.url + "/v1/nothing"), 404)
    assert_openai_error(httpx.get(server.url + CHAT), 405)
