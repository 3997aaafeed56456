"""Leavers lose access (app/auth/lifecycle.py), against the real slapd, PostgreSQL and Redis.

Each test adds its own person to the directory (the shared people stay as they are),
signs them in through the API with their directory password, gives them an API token,
then changes the directory and runs the sync as the worker and ``clinchat-admin`` do.
"""

from __future__ import annotations

import secrets
import ssl
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient
from ldap3 import MODIFY_ADD, MODIFY_DELETE, Connection, Server, Tls

from app import admin
from app.auth import lifecycle
from app.db import conninfo
from app.errors import DependencyUnavailable
from app.settings import Settings, get_settings
from tests.app.test_auth import new_ip, sign_in
from tests.services.ldap import ssha


def directory(ldap_server: Any) -> Connection:
    """The directory's administrator over StartTLS: adds, moves and removes people."""
    tls = Tls(validate=ssl.CERT_REQUIRED, ca_certs_file=str(ldap_server.ca_cert))
    conn = Connection(
        Server(ldap_server.url, tls=tls),
        user=ldap_server.bind_dn,
        password=ldap_server.bind_password,
    )
    conn.open()
    assert conn.start_tls() and conn.bind(), conn.result
    return conn


@pytest.fixture
def person(ldap_server: Any) -> Iterator[tuple[str, str]]:
    """A new clinician in slapd: (uid, password); removed again after the test."""
    uid, password = f"leaver{uuid.uuid4().hex[:8]}", secrets.token_urlsafe(16)
    dn = ldap_server.user_dn(uid)
    with directory(ldap_server) as conn:
        attributes = {
            "uid": uid, "cn": "Test Leaver", "sn": "Leaver", "userPassword": ssha(password),
        }  # fmt: skip
        assert conn.add(dn, ["inetOrgPerson"], attributes), conn.result
        group = ldap_server.group_dn("clinicians")
        assert conn.modify(group, {"member": [(MODIFY_ADD, [dn])]}), conn.result
    yield uid, password
    with directory(ldap_server) as conn:
        conn.modify(ldap_server.group_dn("clinicians"), {"member": [(MODIFY_DELETE, [dn])]})
        conn.modify(ldap_server.group_dn("auditors"), {"member": [(MODIFY_DELETE, [dn])]})
        conn.delete(dn)


def users_command(settings: Settings, *argv: str) -> None:
    args = admin.parser().parse_args(["users", *argv])
    assert admin.users(settings, args) == admin.OK


NewClient = Callable[[], TestClient]


@pytest.fixture
def new_client(settings: Settings) -> Iterator[Callable[[], TestClient]]:
    """Clients of the app, each from an address of its own, open until the test ends
    (tests/app/test_auth.py's app_client clears the settings override on exit)."""
    from app.main import app

    app.dependency_overrides[get_settings] = lambda: settings
    with ExitStack() as stack:

        def make() -> TestClient:
            client = stack.enter_context(TestClient(app))
            client.headers["X-Real-IP"] = new_ip()
            return client

        try:
            yield make
        finally:
            app.dependency_overrides.clear()


def signed_in_with_token(
    new_client: Callable[[], TestClient], uid: str, password: str
) -> tuple[TestClient, str]:
    client = new_client()
    sign_in(client, uid, password)
    created = client.post("/api/v1/tokens", json={"name": "ward script", "days": 7})
    assert created.status_code == 201, created.text
    return client, created.json()["token"]


def audit_actions(settings: Settings, uid: str) -> list[tuple[str, str, dict]]:
    with psycopg.connect(conninfo(settings)) as conn:
        rows = conn.execute(
            "SELECT e.action, e.actor, e.detail FROM audit_events e JOIN users u"
            " ON e.entity_id = u.id::text WHERE u.username = %s AND e.action LIKE 'user.%%'"
            " ORDER BY e.id",
            (uid,),
        ).fetchall()
    return [(a, actor, d) for a, actor, d in rows]


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def me(client: TestClient, token: str | None = None) -> int:
    """/me with the client's session, or with the token (a client without a session)."""
    return client.get("/api/v1/auth/me", headers=auth(token) if token else {}).status_code


def test_a_person_removed_from_the_directory_loses_session_and_token(
    settings: Settings, ldap_server: Any, person: tuple[str, str], new_client: NewClient
) -> None:
    uid, password = person
    client, token = signed_in_with_token(new_client, uid, password)
    assert me(client) == 200
    users_command(settings, "sync", uid)  # still in the directory: nothing changes
    assert me(client) == 200
    assert audit_actions(settings, uid) == []

    with directory(ldap_server) as conn:
        assert conn.delete(ldap_server.user_dn(uid)), conn.result
    users_command(settings, "sync", uid)

    assert me(client) == 401  # the session is gone
    assert me(new_client(), token) == 401  # and the token revoked
    assert audit_actions(settings, uid) == [
        ("user.disabled", "directory-sync", {"reason": "left_directory", "tokens_revoked": 1})
    ]
    # No new sign-in either: the directory has no such person.
    login = {"username": uid, "password": password}
    assert new_client().post("/api/v1/auth/login", json=login).status_code == 401


def test_losing_the_last_role_group_disables_and_a_new_group_changes_roles(
    settings: Settings, ldap_server: Any, person: tuple[str, str], new_client: NewClient
) -> None:
    uid, password = person
    dn = ldap_server.user_dn(uid)
    client, token = signed_in_with_token(new_client, uid, password)
    with directory(ldap_server) as conn:  # moved from clinicians to auditors
        conn.modify(ldap_server.group_dn("auditors"), {"member": [(MODIFY_ADD, [dn])]})
        conn.modify(ldap_server.group_dn("clinicians"), {"member": [(MODIFY_DELETE, [dn])]})
    users_command(settings, "sync", uid)
    assert me(client) == 401  # signed out: the session held the old roles
    bearer = new_client()
    assert me(bearer, token) == 200  # the token keeps only roles the user still has
    assert bearer.get("/api/v1/conversations", headers=auth(token)).status_code == 403
    assert sign_in(new_client(), uid, password)["roles"] == ["auditor"]

    with directory(ldap_server) as conn:  # then out of every ClinChat group
        conn.modify(ldap_server.group_dn("auditors"), {"member": [(MODIFY_DELETE, [dn])]})
    users_command(settings, "sync", uid)
    assert me(bearer, token) == 401
    assert [(a, d) for a, _, d in audit_actions(settings, uid)] == [
        ("user.roles_changed", {"from": ["clinician"], "to": ["auditor"]}),
        ("user.disabled", {"reason": "no_role_group", "tokens_revoked": 1}),
    ]


def test_a_directory_that_does_not_answer_disables_nobody(
    settings: Settings, person: tuple[str, str], new_client: NewClient
) -> None:
    uid, password = person
    client, token = signed_in_with_token(new_client, uid, password)
    # A wrong base DN: slapd answers noSuchObject, which must not read as "gone".
    wrong = settings.model_copy(update={"ldap_user_base": "ou=nowhere,dc=hospital,dc=test"})
    with pytest.raises(DependencyUnavailable, match="ldap is refusing a search"):
        users_command(wrong, "sync", uid)
    down = settings.model_copy(update={"ldap_url": "ldap://127.0.0.1:1"})
    with pytest.raises(DependencyUnavailable, match="ldap"):
        users_command(down, "sync", uid)
    assert me(client) == 200 and me(new_client(), token) == 200
    assert audit_actions(settings, uid) == []


def test_a_sync_that_would_disable_many_at_once_stops(settings: Settings, users: Any) -> None:
    names = [f"gone{uuid.uuid4().hex[:8]}" for _ in range(lifecycle.MIN_USERS_FOR_SHARE)]
    for name in names:
        users(name, ["clinician"])  # directory users slapd has never had

    def disabled() -> int:
        with psycopg.connect(conninfo(settings)) as conn:
            row = conn.execute(
                "SELECT count(*) FROM users WHERE username = ANY(%s) AND disabled", (names,)
            ).fetchone()
        assert row is not None
        return int(row[0])

    with pytest.raises(admin.Failed, match="would disable") as caught:
        users_command(settings, "sync", *names)
    assert caught.value.code == admin.CHECK_FAILED
    assert disabled() == 0
    users_command(settings, "sync", "--force", *names)  # an operator who checked
    assert disabled() == len(names)


def test_admin_disable_enable_and_the_per_request_check(
    settings: Settings,
    person: tuple[str, str],
    new_client: NewClient,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    uid, password = person
    client, _ = signed_in_with_token(new_client, uid, password)
    # Disabled behind the app's back (no session ended): the next request re-reads it.
    monkeypatch.setattr(settings, "user_recheck_s", 0)
    with psycopg.connect(conninfo(settings)) as conn:
        conn.execute("UPDATE users SET disabled = true WHERE username = %s", (uid,))
    assert me(client) == 401
    with psycopg.connect(conninfo(settings)) as conn:
        conn.execute("UPDATE users SET disabled = false WHERE username = %s", (uid,))

    again, token = signed_in_with_token(new_client, uid, password)
    users_command(settings, "disable", uid, "--reason", "compromised")
    assert me(again) == 401 and me(new_client(), token) == 401
    users_command(settings, "enable", uid)
    assert me(new_client(), token) == 401  # revoked tokens stay revoked
    assert sign_in(new_client(), uid, password)["username"] == uid
    assert [(a, actor) for a, actor, _ in audit_actions(settings, uid)] == [
        ("user.disabled", "clinchat-admin"),
        ("user.enabled", "clinchat-admin"),
    ]
