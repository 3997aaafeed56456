"""Nothing a user can send gives a 500: every route, hostile input, all three roles.

The routes come from the app (tests/app/test_routes_protected.py walks them). Each
gets, from a user holding every role (so no 401/403 hides the handler): path
parameters that are not ids, ids that do not exist, broken and wrongly typed JSON,
huge and control-character strings, a lone surrogate, an empty multipart form and
odd query strings. Every answer must be below 500, and an API error must not echo
the input.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator

import httpx
import pytest
from fastapi.testclient import TestClient

from app.models import Role
from app.settings import Settings
from tests.app.data.kbdb import isolated_settings
from tests.app.test_routes_protected import ALL, Endpoint
from tests.services.postgres import PrivatePostgres

MARK = "Zelda-Quixotic-Testperson"  # obviously synthetic; must never come back
# (path parameter value, what it tests)
PATH_VALUES = ["not-an-id", "0", "-1", "99999999999999999999999", "%00", MARK, "é" * 300]
BODIES: list[tuple[str, dict[str, object]]] = [
    ("broken json", {"content": b'{"a": ', "headers": {"Content-Type": "application/json"}}),
    ("json list", {"json": [MARK]}),
    (
        "json wrong types",
        {
            "json": {
                k: [MARK]
                for k in (
                    "content",
                    "title",
                    "text",
                    "username",
                    "password",
                    "name",
                    "days",
                    "messages",
                    "reason",
                    "minutes",
                    "model",
                    "stream",
                    "max_tokens",
                )
            }
        },
    ),  # fmt: skip
    ("json huge string", {"json": {"content": MARK * 5_000, "text": MARK * 5_000}}),
    ("json control characters", {"json": {"content": f"\x00{MARK}\x1b", "title": "\x00"}}),
    (
        "lone surrogate",
        {
            "content": b'{"content": "\\ud800", "text": "\\udfff"}',
            "headers": {"Content-Type": "application/json"},
        },
    ),  # fmt: skip
    ("empty multipart", {"files": {"nothing": ("", b"")}}),
    ("form where json is due", {"data": {"content": MARK}}),
]
QUERIES = [
    {"limit": "-5", "after": MARK, "since": "yesterday", "until": "\x00"},
    {"limit": "99999999999999999999", "break_glass": "maybe", "actor": MARK * 100},
]


@pytest.fixture(scope="module")
def hostile_settings(base_settings: Settings, postgres: PrivatePostgres) -> Settings:
    return isolated_settings(base_settings, postgres)


@pytest.fixture
def settings(hostile_settings: Settings) -> Settings:
    return hostile_settings


@pytest.fixture
def everyone(login: Callable[..., TestClient]) -> Iterator[TestClient]:
    client = login(Role.clinician, Role.admin, Role.auditor)
    client.follow_redirects = False
    yield client


def fill(path: str, value: str) -> str:
    return "/".join(value if p.startswith("{") and p.endswith("}") else p for p in path.split("/"))


def check(response: httpx.Response, what: str) -> None:
    assert response.status_code < 500, f"{what}: {response.status_code} {response.text[:300]}"
    # An API error names the problem, never the input. (A page may show a form again
    # with what its user typed, so they can correct it.)
    if response.status_code >= 400 and "json" in response.headers.get("content-type", ""):
        assert MARK not in response.text, f"{what}: the input came back: {response.text[:300]}"


ROUTES = [e for e in ALL if not e.path.startswith("/static") and e.path != "/metrics"]


@pytest.mark.parametrize("endpoint", ROUTES, ids=lambda e: e.id)
def test_hostile_input_never_gives_a_500(everyone: TestClient, endpoint: Endpoint) -> None:
    has_params = "{" in endpoint.path
    paths = [fill(endpoint.path, v) for v in PATH_VALUES] if has_params else [endpoint.path]
    for path in paths:
        if endpoint.method in ("GET", "DELETE"):
            for query in QUERIES:
                response = everyone.request(endpoint.method, path, params=query)
                check(response, f"{endpoint.method} {path} {query}")
            continue
        for name, body in BODIES:
            response = everyone.request(endpoint.method, path, **body)  # type: ignore[arg-type]
            check(response, f"{endpoint.method} {path} {name}")


def test_the_hostile_bodies_are_what_they_say() -> None:
    """The payloads really are malformed (a typo here would weaken every test above)."""
    broken = BODIES[0][1]["content"]
    with pytest.raises(json.JSONDecodeError):
        json.loads(broken)  # type: ignore[arg-type]
    assert len(ROUTES) > 20
