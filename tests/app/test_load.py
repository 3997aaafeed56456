"""A bounded burst of chat questions against the real services: no 500, nothing lost.

200 questions at once (20 clinicians, 10 each, every clinician's on one
conversation) through a real uvicorn server, the real serving (tiny model),
PostgreSQL, Redis and Vault. A refused question is asked again after its
Retry-After, as a client should, within a bounded window. Every attempt must
end as a streamed answer, a 429 or a 503 with Retry-After (never a 500); every
answered question and every answer must be stored. The latencies are measured,
never asserted: they are written to artifacts/load/chat.json and quoted in
app/BENCHMARKS.md.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import statistics
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from app.auth.sessions import COOKIE
from app.models import Role
from app.settings import Settings
from tests.app.data.kbdb import isolated_settings
from tests.app.live import live_app
from tests.app.test_chat import COVERED, corpus, sql, use  # noqa: F401 - corpus is a fixture
from tests.services.postgres import PrivatePostgres

USERS = 20
QUESTIONS_EACH = 10
REQUEST_TIMEOUT_S = 120  # bounded: a stuck request fails the test instead of hanging it
RETRY_WINDOW_S = 300  # a refused question is asked again after Retry-After, until this
OUT = Path(__file__).resolve().parents[2] / "artifacts" / "load" / "chat.json"


@pytest.fixture(scope="module")
def load_settings(base_settings: Settings, postgres: PrivatePostgres) -> Settings:
    # the rate limit would refuse most of a burst from ten questions a user: off here
    return isolated_settings(
        base_settings, postgres, max_answer_tokens=16, rate_limit_chat_per_minute=0
    )


@pytest.fixture
def settings(load_settings: Settings) -> Settings:
    return load_settings


@pytest.fixture
def live(settings: Settings, corpus: dict[str, str]) -> Iterator[str]:  # noqa: F811
    use(settings)
    with live_app() as url:
        yield url


async def _one(client: httpx.AsyncClient, conversation: str) -> dict[str, Any]:
    """One question, asked again after each 429/503's Retry-After, as a client should."""
    started = time.perf_counter()
    attempts: list[dict[str, Any]] = []
    while True:
        try:
            result = await _attempt(client, conversation)
        except httpx.HTTPError as exc:  # a transport failure: status 0 fails the test
            result = {"status": 0, "retry_after": None, "refused": type(exc).__name__,
                      "last_event": None, "first_byte_s": None, "total_s": 0.0}  # fmt: skip
        attempts.append(result)
        late = time.perf_counter() - started > RETRY_WINDOW_S
        if result["status"] not in (429, 503) or not result["retry_after"] or late:
            break
        await asyncio.sleep(float(result["retry_after"]))
    return attempts[-1] | {
        "attempts": len(attempts),
        "refusals": [a["refused"] for a in attempts if a["refused"]],
        "answered_s": time.perf_counter() - started,
    }


async def _attempt(client: httpx.AsyncClient, conversation: str) -> dict[str, Any]:
    started = time.perf_counter()
    first_byte: float | None = None
    body = b""
    async with client.stream(
        "POST", f"/api/v1/conversations/{conversation}/messages", json={"content": COVERED}
    ) as response:
        async for chunk in response.aiter_bytes():
            if first_byte is None:
                first_byte = time.perf_counter() - started
            body += chunk
        status = response.status_code
        retry_after = response.headers.get("Retry-After")
    refused = json.loads(body).get("detail") if status in (429, 503) else None
    events = [
        line[6:].strip() for line in body.decode(errors="replace").splitlines()
        if line.startswith("event:")
    ]  # fmt: skip
    return {
        "status": status,
        "retry_after": retry_after,
        "last_event": events[-1] if events else None,
        "refused": refused,
        "first_byte_s": first_byte,
        "total_s": time.perf_counter() - started,
    }


async def _burst(live: str, sessions: list[tuple[str, str, str]]) -> list[dict[str, Any]]:
    clients = [
        httpx.AsyncClient(
            base_url=live,
            cookies={COOKIE: cookie},
            headers={"X-CSRF-Token": csrf},
            timeout=REQUEST_TIMEOUT_S,
            # a new connection per request: reusing one the server is closing at that
            # moment (keep-alive's race) is the client's pooling, not the app under test
            limits=httpx.Limits(max_connections=QUESTIONS_EACH, max_keepalive_connections=0),
        )
        for cookie, csrf, _ in sessions
    ]
    try:
        return await asyncio.gather(
            *(
                _one(client, conversation)
                for client, (_, _, conversation) in zip(clients, sessions, strict=True)
                for _ in range(QUESTIONS_EACH)
            )
        )
    finally:
        for client in clients:
            await client.aclose()


def _percentiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    if not ordered:
        return {}
    return {
        "p50": round(statistics.median(ordered), 3),
        "p95": round(ordered[int(0.95 * (len(ordered) - 1))], 3),
        "max": round(ordered[-1], 3),
    }


def test_a_burst_of_200_questions_gives_no_500_and_loses_nothing(
    login: Callable[..., TestClient], settings: Settings, live: str
) -> None:
    sessions = []
    for _ in range(USERS):
        signed_in = login(Role.clinician)
        created = signed_in.post("/api/v1/conversations", json={})
        assert created.status_code == 201
        cookie, csrf = signed_in.cookies[COOKIE], signed_in.headers["X-CSRF-Token"]
        sessions.append((cookie, csrf, str(created.json()["id"])))

    started = time.perf_counter()
    results = asyncio.run(_burst(live, sessions))
    wall = time.perf_counter() - started

    statuses = Counter(r["status"] for r in results)
    endings = Counter(r["last_event"] for r in results if r["status"] == 200)
    refusals = Counter(reason for r in results for reason in r["refusals"])
    assert set(statuses) <= {200, 429, 503}, statuses
    assert all(r["retry_after"] for r in results if r["status"] in (429, 503)), results
    stored = dict(
        sql(
            settings,
            "SELECT m.role, count(*) FROM messages m JOIN conversations c"
            " ON c.id = m.conversation_id WHERE c.id = ANY(%s::uuid[]) GROUP BY m.role",
            [conversation for _, _, conversation in sessions],
        )
    )
    # every question the app accepted is stored, and every answer it finished
    assert stored.get("user", 0) == statuses[200], (stored, statuses)
    assert stored.get("assistant", 0) == endings["done"], (stored, endings)

    answered = [r for r in results if r["status"] == 200 and r["last_event"] == "done"]
    report = {
        "requests": len(results),
        "users": USERS,
        "wall_s": round(wall, 2),
        "final_statuses": {str(k): v for k, v in sorted(statuses.items())},
        "stream_endings": dict(endings),
        "refusals_on_the_way": dict(refusals),
        "attempts": _percentiles([float(r["attempts"]) for r in results]),
        "first_byte_of_the_answer_s": _percentiles([r["first_byte_s"] for r in answered]),
        "answered_after_s": _percentiles([r["answered_s"] for r in answered]),
        "settings": {
            "db_pool_size": settings.db_pool_size,
            "db_pool_max_overflow": settings.db_pool_max_overflow,
            "redis_pool_size": settings.redis_pool_size,
            "max_answer_tokens": settings.max_answer_tokens,
            "chat_max_in_flight": settings.chat_max_in_flight,
        },
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report))
