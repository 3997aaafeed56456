"""Rate limits per user and per API token (app/auth/ratelimit.py), in the real Redis."""

from __future__ import annotations

from collections.abc import Callable

from fastapi.testclient import TestClient

from app.models import Role
from app.settings import Settings
from tests.app.test_chat import API, ask, done_with, new_conversation, use

OFF_TOPIC = "How do I book annual leave?"  # answered "not found" without the model


def test_chat_over_the_budget_is_429_with_retry_after_per_user(
    login: Callable[..., TestClient], settings: Settings
) -> None:
    from app.metrics import RATE_LIMITED

    use(settings.model_copy(update={"rate_limit_chat_per_minute": 2}))
    before = RATE_LIMITED.labels("chat")._value.get()
    alice = login(Role.clinician)
    conversation = new_conversation(alice)
    assert [ask(alice, conversation, OFF_TOPIC).status_code for _ in range(2)] == [200, 200]
    refused = ask(alice, conversation, OFF_TOPIC)
    assert refused.status_code == 429
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    assert "too many chat requests" in refused.json()["detail"]
    assert RATE_LIMITED.labels("chat")._value.get() == before + 1
    # the refused question was not stored: two exchanges only
    assert len(alice.get(f"{API}/{conversation}").json()["messages"]) == 4
    # a second session of the same user shares the budget; another user has their own
    bob = login(Role.clinician)
    assert ask(bob, new_conversation(bob), OFF_TOPIC).status_code == 200
    # listing and reading are not limited
    assert alice.get(API).status_code == 200
    done_with(alice)


def test_an_api_token_has_its_own_budget_and_the_facade_answers_in_openai_shape(
    login: Callable[..., TestClient], settings: Settings
) -> None:
    use(settings.model_copy(update={"rate_limit_facade_per_minute": 1}))
    clinician = login(Role.clinician)
    secret = clinician.post("/api/v1/tokens", json={"name": "limits", "days": 1}).json()["token"]
    other = clinician.post("/api/v1/tokens", json={"name": "other", "days": 1}).json()["token"]
    body = {"model": "clinchat", "messages": [{"role": "user", "content": OFF_TOPIC}]}

    def complete(token: str) -> tuple[int, dict, dict]:
        response = clinician.post(
            "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {token}"}
        )
        return response.status_code, dict(response.headers), response.json()

    assert complete(secret)[0] == 200
    status, headers, refused = complete(secret)
    assert status == 429 and int(headers["retry-after"]) >= 1
    assert refused["error"]["code"] == "rate_limit_exceeded"
    assert refused["error"]["type"] == "rate_limit_exceeded"
    assert secret not in str(refused) and complete(other)[0] == 200
    done_with(clinician)


def test_detect_is_limited_and_zero_turns_a_limit_off(
    login: Callable[..., TestClient], settings: Settings
) -> None:
    auditor = login(Role.auditor)
    use(settings.model_copy(update={"rate_limit_detect_per_minute": 1}))
    text = {"text": "Seen on ward 4 today."}
    assert auditor.post("/api/v1/phi/detect", json=text).status_code == 200
    assert auditor.post("/api/v1/phi/detect", json=text).status_code == 429
    use(settings.model_copy(update={"rate_limit_detect_per_minute": 0}))
    assert all(auditor.post("/api/v1/phi/detect", json=text).status_code == 200 for _ in range(3))
    done_with(auditor)
