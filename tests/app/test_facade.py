"""The OpenAI-compatible facade, driven by the official ``openai`` client over real HTTP.

The app runs in a real uvicorn server on a free loopback port (a thread of this
process); the client authenticates with a personal API token made through the
tokens API. Everything behind it is real: PostgreSQL, Redis, the embeddings and
the serving's tiny random model (gibberish text: the tests check structure).
Also here, because it needs a real connection to drop: a chat client that goes
away mid-answer cancels the upstream generation.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import openai
import pytest
from fastapi.testclient import TestClient

from app.auth.sessions import COOKIE
from app.chat.prompt import NOT_FOUND
from app.models import Role
from app.settings import Settings
from tests.app.data.kbdb import isolated_settings
from tests.app.live import live_app
from tests.app.test_chat import (  # noqa: F401 - corpus is a fixture
    COVERED,
    UNCOVERED,
    corpus,
    serving_counter,
    sql,
    use,
)
from tests.services.postgres import PrivatePostgres, free_port

SECRET = "Zelda Quixotic-Testperson"


@pytest.fixture(scope="module")
def facade_settings(base_settings: Settings, postgres: PrivatePostgres) -> Settings:
    return isolated_settings(base_settings, postgres, max_answer_tokens=24)


@pytest.fixture
def settings(facade_settings: Settings) -> Settings:
    """Overrides conftest's: this module's own database."""
    return facade_settings


@pytest.fixture
def live(settings: Settings, corpus: dict[str, str]) -> Iterator[str]:  # noqa: F811
    """The app in a uvicorn server on a free port; yields its base URL."""
    use(settings)
    with live_app() as url:
        yield url


@pytest.fixture
def clinician(login: Callable[..., TestClient], live: str) -> httpx.Client:
    """A clinician's browser session against the live server (cookie + CSRF header)."""
    signed_in = login(Role.clinician)
    client = httpx.Client(
        base_url=live,
        cookies={COOKIE: signed_in.cookies[COOKIE]},
        headers={"X-CSRF-Token": signed_in.headers["X-CSRF-Token"]},
        timeout=60,
    )
    client.username = signed_in.username  # type: ignore[attr-defined]
    return client


@pytest.fixture
def token(clinician: httpx.Client) -> str:
    response = clinician.post("/api/v1/tokens", json={"name": "facade test", "days": 1})
    assert response.status_code == 201, response.text
    return str(response.json()["token"])


@pytest.fixture
def oai(live: str, token: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{live}/v1", api_key=token, max_retries=0, timeout=60)


def extra(obj: Any) -> dict[str, Any]:
    """Fields beyond OpenAI's schema, as the client keeps them."""
    return dict(obj.model_extra or {})


# -- with the openai client -------------------------------------------------------------------


def test_models_lists_the_assistant(oai: openai.OpenAI) -> None:
    models = oai.models.list()
    assert [m.id for m in models.data] == ["clinchat-rag"]
    assert models.data[0].owned_by == "clinchat"


def test_a_completion_cites_the_document(
    oai: openai.OpenAI,
    settings: Settings,
    corpus: dict[str, str],  # noqa: F811
) -> None:
    response = oai.chat.completions.create(
        model="any-model-name",
        messages=[
            {"role": "system", "content": "ignored: the assistant's own instructions rule"},
            {"role": "user", "content": COVERED},
        ],
    )
    assert response.object == "chat.completion" and response.model == "any-model-name"
    assert response.choices[0].message.role == "assistant"
    assert response.choices[0].finish_reason in ("stop", "length")
    assert response.usage is not None and response.usage.prompt_tokens > 0
    fields = extra(response)
    assert fields["grounded"] is True and fields["disclaimer"] == settings.disclaimer
    first = fields["sources"][0]
    assert first["document_id"] == corpus["zorbexine"] and first["number"] == 1
    assert {"title", "version", "section", "page", "snippet", "score", "chunk_id"} <= set(first)


def test_a_streamed_completion_carries_sources_first(
    oai: openai.OpenAI,
    settings: Settings,
    corpus: dict[str, str],  # noqa: F811
) -> None:
    stream = oai.chat.completions.create(
        model="clinchat-rag",
        messages=[{"role": "user", "content": COVERED}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    first = chunks[0]
    assert first.choices[0].delta.role == "assistant"
    assert extra(first)["sources"][0]["document_id"] == corpus["zorbexine"]
    assert extra(first)["disclaimer"] == settings.disclaimer
    assert all("sources" not in extra(c) for c in chunks[1:])
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] in ("stop", "length") and finishes.count(None) == len(finishes) - 1
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens >= 1
    assert {c.model for c in chunks} == {"clinchat-rag"}


def test_an_uncovered_question_is_not_found(oai: openai.OpenAI, settings: Settings) -> None:
    before = serving_counter(settings, "vllm:prompt_tokens_total")
    response = oai.chat.completions.create(
        model="clinchat-rag", messages=[{"role": "user", "content": UNCOVERED}]
    )
    assert response.choices[0].message.content == NOT_FOUND
    assert extra(response)["sources"] == [] and extra(response)["grounded"] is False
    assert serving_counter(settings, "vllm:prompt_tokens_total") == before  # model not called
    stream = oai.chat.completions.create(
        model="clinchat-rag", messages=[{"role": "user", "content": UNCOVERED}], stream=True
    )
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == NOT_FOUND


def test_facade_chats_are_audited(
    oai: openai.OpenAI, clinician: httpx.Client, settings: Settings
) -> None:
    oai.chat.completions.create(
        model="clinchat-rag",
        messages=[
            {"role": "user", "content": "Earlier question"},
            {"role": "assistant", "content": "Earlier answer"},
            {"role": "user", "content": COVERED},
        ],
    )
    rows = sql(
        settings,
        "SELECT detail FROM audit_events WHERE action = 'facade.chat' AND actor = %s",
        clinician.username,  # type: ignore[attr-defined]
    )
    assert len(rows) == 1
    detail = rows[0][0]
    assert detail["messages"] == 3 and detail["grounded"] is True and detail["sources"] >= 1


# -- errors in OpenAI's shape ------------------------------------------------------------------


def assert_openai_error(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert {"message", "type", "code"} <= set(error)
    assert SECRET not in response.text
    return dict(error)


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"messages": []},
        {"messages": "not a list"},
        {"messages": [{"role": "user"}]},
        {"messages": [{"role": "wizard", "content": SECRET}]},
        {"messages": [{"role": "assistant", "content": SECRET}]},
        {"messages": [{"role": "user", "content": "   "}]},
        {"messages": [{"role": "user", "content": SECRET + "x" * 4000}]},
        {"messages": [{"role": "user", "content": SECRET}], "temperature": 7},
        {"messages": [{"role": "user", "content": SECRET}], "n": 2},
        {"messages": [{"role": "user", "content": SECRET}], "max_tokens": 0},
        {"messages": [{"role": "user", "content": SECRET}], "stream": "often"},
        [SECRET],
    ],
)
def test_malformed_requests_are_400_in_openai_shape(
    live: str, token: str, body: Any, settings: Settings
) -> None:
    response = httpx.post(
        f"{live}/v1/chat/completions",
        json=body,
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )
    error = assert_openai_error(response, 400)
    assert error["type"] == "invalid_request_error"


def test_invalid_json_is_400_in_openai_shape(live: str, token: str) -> None:
    response = httpx.post(
        f"{live}/v1/chat/completions",
        content=f'{{"messages": [{{"role": "user", "content": "{SECRET}',
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    assert assert_openai_error(response, 400)["code"] == "json_invalid"


def test_auth_errors_are_in_openai_shape(
    live: str, clinician: httpx.Client, login: Callable[..., TestClient]
) -> None:
    body = {"messages": [{"role": "user", "content": COVERED}]}
    no_auth = httpx.post(f"{live}/v1/chat/completions", json=body)
    assert assert_openai_error(no_auth, 401)["type"] == "authentication_error"
    wrong = httpx.post(
        f"{live}/v1/chat/completions", json=body, headers={"Authorization": "Bearer cc_wrong"}
    )
    assert_openai_error(wrong, 401)
    assert_openai_error(httpx.get(f"{live}/v1/models"), 401)
    # a browser session needs its CSRF token here too
    without_csrf = clinician.post(
        "/v1/chat/completions", json=body, headers={"X-CSRF-Token": "wrong"}
    )
    assert assert_openai_error(without_csrf, 403)["type"] == "permission_error"
    with_csrf = clinician.post("/v1/chat/completions", json=body)
    assert with_csrf.status_code == 200 and with_csrf.json()["sources"]

    with pytest.raises(openai.AuthenticationError) as caught:
        openai.OpenAI(base_url=f"{live}/v1", api_key="cc_" + "x" * 40, max_retries=0).models.list()
    assert caught.value.status_code == 401


def test_an_admin_token_is_refused(live: str, login: Callable[..., TestClient]) -> None:
    admin = login(Role.admin)
    session = httpx.Client(
        base_url=live,
        cookies={COOKIE: admin.cookies[COOKIE]},
        headers={"X-CSRF-Token": admin.headers["X-CSRF-Token"]},
    )
    secret = session.post("/api/v1/tokens", json={"name": "admin", "days": 1}).json()["token"]
    client = openai.OpenAI(base_url=f"{live}/v1", api_key=secret, max_retries=0)
    with pytest.raises(openai.PermissionDeniedError) as caught:
        client.chat.completions.create(
            model="clinchat-rag", messages=[{"role": "user", "content": COVERED}]
        )
    assert caught.value.status_code == 403


def test_serving_down_is_503_in_openai_shape(
    oai: openai.OpenAI, settings: Settings, live: str, token: str
) -> None:
    use(settings.model_copy(update={"serving_url": f"http://127.0.0.1:{free_port()}/v1"}))
    try:
        response = httpx.post(
            f"{live}/v1/chat/completions",
            json={"messages": [{"role": "user", "content": COVERED}], "stream": True},
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
        )
        error = assert_openai_error(response, 503)
        assert error["down"] == ["serving"] and "serving" in error["message"]
        with pytest.raises(openai.InternalServerError) as caught:
            oai.chat.completions.create(
                model="clinchat-rag", messages=[{"role": "user", "content": COVERED}]
            )
        assert caught.value.status_code == 503
    finally:
        use(settings)


# -- a chat client going away ------------------------------------------------------------------


def test_a_client_going_away_cancels_the_upstream_answer(
    clinician: httpx.Client, settings: Settings
) -> None:
    # long answers, so the generation is still running when the client leaves
    use(settings.model_copy(update={"max_answer_tokens": 1000}))
    try:
        conversation = clinician.post("/api/v1/conversations").json()["id"]
        with clinician.stream(
            "POST", f"/api/v1/conversations/{conversation}/messages", json={"content": COVERED}
        ) as response:
            assert response.status_code == 200
            lines = response.iter_lines()
            assert next(lines) == "event: sources"
            json.loads(next(lines).removeprefix("data: "))
            assert next(lines) == ""
            assert next(lines) == "event: delta"  # the model has started
        # the connection is closed: the app cancels the stream and the serving stops
        deadline = time.monotonic() + 10
        while serving_counter(settings, "vllm:num_requests_running") > 0:
            assert time.monotonic() < deadline, "the serving still generates"
            time.sleep(0.1)
        generated = serving_counter(settings, "vllm:generation_tokens_total")
        print("GENERATED", generated)
        time.sleep(0.5)
        assert serving_counter(settings, "vllm:generation_tokens_total") == generated
    finally:
        use(settings)
    roles = [
        r[0]
        for r in sql(
            settings,
            "SELECT role FROM messages WHERE conversation_id = %s ORDER BY created_at",
            uuid.UUID(conversation),
        )
    ]
    assert roles == ["user"]  # the unfinished answer is not stored
