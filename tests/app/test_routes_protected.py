"""Every route but the documented public ones needs a principal, and role routes a role.

The routes come from the app itself, not a hand list: the OpenAPI schema for the
API, and a walk of the routing table for the pages left out of the schema. A new
router is covered the day it is included in app/main.py.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from app.auth.deps import Admin, AdminOrAuditor, Auditor, Clinician, CurrentPrincipal
from app.main import app
from app.models import Role

# The documented public routes (app/README.md), and the sign-in call itself.
PUBLIC_PATHS = {"/health", "/health/ready", "/version", "/metrics", "/login", "/api/v1/auth/login"}
PUBLIC_PREFIXES = ("/static",)
ANY_METHOD = {"GET", "POST", "PUT", "PATCH", "DELETE"}


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str
    in_schema: bool
    dependant: Dependant | None

    @property
    def id(self) -> str:
        return f"{self.method} {self.path}"


def _route_entries(application: FastAPI) -> Iterator[Any]:
    """Routes with their full paths (FastAPI >= 0.16x keeps included routers unflattened)."""
    try:
        from fastapi.routing import iter_route_contexts
    except ImportError:  # older FastAPI: include_router copies routes into app.routes
        yield from application.routes
        return
    yield from iter_route_contexts(application.routes)


def endpoints(application: FastAPI) -> list[Endpoint]:
    found: dict[tuple[str, str], Endpoint] = {}
    for entry in _route_entries(application):
        original = getattr(entry, "original_route", entry)
        if not isinstance(original, APIRoute):
            continue
        for method in sorted((entry.methods or set()) & ANY_METHOD):
            endpoint = Endpoint(
                method, entry.path, bool(entry.include_in_schema), getattr(entry, "dependant", None)
            )
            found[(method, entry.path)] = endpoint
    # The schema is the contract: every operation in it must have been found by the walk.
    for path, operations in application.openapi()["paths"].items():
        for method in operations:
            assert (method.upper(), path) in found, f"{method.upper()} {path} not found in routes"
    return sorted(found.values(), key=lambda e: (e.path, e.method))


def is_public(path: str) -> bool:
    return path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES)


def required_roles(dependant: Dependant | None) -> set[frozenset[Role]]:
    """The ``roles`` of every require_roles check in the dependency tree."""
    if dependant is None:
        return set()
    found: set[frozenset[Role]] = set()
    roles = getattr(dependant.call, "roles", None)
    if roles is not None:
        found.add(frozenset(roles))
    for sub in dependant.dependencies:
        found |= required_roles(sub)
    return found


def required_scopes(dependant: Dependant | None) -> set[str]:
    """The ``scope`` of every require_scope check in the dependency tree."""
    if dependant is None:
        return set()
    found = {dependant.call.scope} if hasattr(dependant.call, "scope") else set()
    for sub in dependant.dependencies:
        found |= required_scopes(sub)
    return found


# What an API token may call without a scope: who it is, its own tokens, sign-out.
UNSCOPED_PREFIXES = ("/api/v1/auth/", "/api/v1/tokens")


def concrete(path: str) -> str:
    """The path with every parameter filled with a random UUID."""
    parts = []
    for part in path.split("/"):
        if part.startswith("{") and part.endswith("}"):
            part = str(uuid.uuid4())
        parts.append(part)
    return "/".join(parts)


ALL = endpoints(app)
PROTECTED = [e for e in ALL if not is_public(e.path)]
# Routes a clinician may not use: every role check on them leaves clinicians out.
NOT_FOR_CLINICIANS = [
    e
    for e in PROTECTED
    if (checks := required_roles(e.dependant)) and all(Role.clinician not in c for c in checks)
]


@pytest.mark.parametrize(
    "endpoint",
    [e for e in PROTECTED if e.in_schema and not e.path.startswith(UNSCOPED_PREFIXES)],
    ids=lambda e: e.id,
)
def test_every_api_route_names_the_token_scope_it_needs(endpoint: Endpoint) -> None:
    assert len(required_scopes(endpoint.dependant)) == 1, endpoint.id


def test_the_walk_finds_api_and_page_routes() -> None:
    ids = {e.id for e in ALL}
    assert {"POST /api/v1/auth/login", "GET /api/v1/auth/me", "GET /login", "POST /logout"} <= ids
    assert any(not e.in_schema for e in PROTECTED), "pages (include_in_schema=False) are walked"
    assert "POST /api/v1/auth/break-glass" not in {e.id for e in NOT_FOR_CLINICIANS}


@pytest.mark.parametrize("endpoint", PROTECTED, ids=[e.id for e in PROTECTED])
def test_needs_a_principal(client: TestClient, endpoint: Endpoint) -> None:
    response = client.request(endpoint.method, concrete(endpoint.path))
    assert response.status_code == 401, f"{endpoint.id}: {response.status_code}"


@pytest.mark.parametrize("endpoint", NOT_FOR_CLINICIANS, ids=[e.id for e in NOT_FOR_CLINICIANS])
def test_clinicians_are_refused_admin_and_auditor_routes(
    login: Callable[..., TestClient], endpoint: Endpoint
) -> None:
    client = login(Role.clinician)
    response = client.request(endpoint.method, concrete(endpoint.path))
    assert response.status_code == 403, f"{endpoint.id}: {response.status_code}"
    assert response.json()["detail"] == "your role does not allow this"


def test_role_checks_are_found_in_the_dependency_tree() -> None:
    """The walk above on a small app whose routes use every role dependency."""
    mini = FastAPI()

    @mini.get("/a")
    async def a(_: Admin) -> None: ...

    @mini.get("/b")
    async def b(_: AdminOrAuditor) -> None: ...

    @mini.get("/c")
    async def c(_: Auditor) -> None: ...

    @mini.get("/d")
    async def d(_: Clinician) -> None: ...

    @mini.get("/e")
    async def e(_: CurrentPrincipal) -> None: ...

    roles = {e.path: required_roles(e.dependant) for e in endpoints(mini)}
    assert roles == {
        "/a": {frozenset({Role.admin})},
        "/b": {frozenset({Role.admin, Role.auditor})},
        "/c": {frozenset({Role.auditor})},
        "/d": {frozenset({Role.clinician})},
        "/e": set(),
    }
