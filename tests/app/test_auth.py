"""Sign-in, sessions, lockout, idle logoff, break-glass and API tokens, against the real
OpenLDAP, Redis and PostgreSQL of tests/app/conftest.py. Every person is synthetic.

Each test signs in through the API on one TestClient (one event loop), from an
address of its own (X-Real-IP), so lockout counters of one test never touch another.
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import pytest
import redis
from argon2 import PasswordHasher
from fastapi import Request
from fastapi.testclient import TestClient

from app.auth.deps import client_ip
from app.auth.sessions import COOKIE, SECURE_COOKIE, _key
from app.db import conninfo
from app.settings import Settings, get_settings
from app.web.pages_auth import LOGIN_COOKIE
from tests.app.conftest import _ENROLLED, enrol_totp, totp_code

PASSWORD = "synthetic-Passw0rd-for-tests"


# -- helpers ----------------------------------------------------------------------------------


def new_ip() -> str:
    return f"10.{secrets.randbelow(250)}.{secrets.randbelow(250)}.{secrets.randbelow(250) + 1}"


@contextmanager
def app_client(settings: Settings) -> Iterator[TestClient]:
    """An anonymous client of the app bound to ``settings``, from an address of its own."""
    from app.main import app

    app.dependency_overrides[get_settings] = lambda: settings
    try:
        with TestClient(app) as test_client:
            test_client.headers["X-Real-IP"] = new_ip()
            yield test_client
    finally:
        app.dependency_overrides.clear()


@pytest.fixture
def anon(settings: Settings) -> Iterator[TestClient]:
    with app_client(settings) as test_client:
        yield test_client


def credentials(username: str, password: str = PASSWORD) -> dict[str, str]:
    """The login body; with a code of the second factor when the test enrolled one."""
    body = {"username": username, "password": password}
    if username in _ENROLLED:
        body["totp"] = totp_code(username)
    return body


def sign_in(client: TestClient, username: str, password: str) -> dict[str, Any]:
    """Sign in through the API; the client then sends the session's CSRF token."""
    response = client.post("/api/v1/auth/login", json=credentials(username, password))
    assert response.status_code == 200, response.text
    body = response.json()
    client.headers["X-CSRF-Token"] = body["csrf_token"]
    return body


def local_user(users: Callable[..., uuid.UUID], *roles: str) -> str:
    name = f"local-{uuid.uuid4().hex[:8]}"
    users(name, list(roles), password=PASSWORD)
    return name


def sync_redis(settings: Settings) -> redis.Redis:
    return redis.Redis.from_url(
        settings.redis_url, ssl_ca_certs=settings.redis_ca_cert, decode_responses=True
    )


def session_key(client: TestClient) -> str:
    return _key(client.cookies[COOKIE])


def audit_rows(settings: Settings, action: str, since: int = 0) -> list[dict[str, Any]]:
    with psycopg.connect(conninfo(settings)) as conn:
        cursor = conn.execute(
            "SELECT id, outcome, actor, actor_roles, break_glass, source_ip, detail, entity_id"
            " FROM audit_events WHERE action = %s AND id > %s ORDER BY id",
            (action, since),
        )
        names = [column.name for column in cursor.description or []]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def last_audit_id(settings: Settings) -> int:
    with psycopg.connect(conninfo(settings)) as conn:
        row = conn.execute("SELECT coalesce(max(id), 0) FROM audit_events").fetchone()
        assert row is not None
        return int(row[0])


def set_cookie_header(response: Any) -> str:
    headers = [v for k, v in response.headers.multi_items() if k.lower() == "set-cookie"]
    matching = [h for h in headers if h.startswith((f"{COOKIE}=", f"{SECURE_COOKIE}="))]
    assert len(matching) == 1, headers
    return matching[0]


# -- LDAP -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("uid", "role", "display_name"),
    [
        ("clin1", "clinician", "Dr Test Clinician"),
        ("admin1", "admin", "Test Knowledge-Base Admin"),
        ("audit1", "auditor", "Test Auditor"),
    ],
)
def test_ldap_sign_in_maps_groups_to_roles(
    anon: TestClient, settings: Settings, ldap_server: Any, uid: str, role: str, display_name: str
) -> None:
    since = last_audit_id(settings)
    body = sign_in(anon, uid, ldap_server.users[uid])
    assert body["username"] == uid
    assert body["roles"] == [role]
    assert body["display_name"] == display_name
    assert body["break_glass"] is False
    me = anon.get("/api/v1/auth/me").json()
    assert me["roles"] == [role] and me["via_token"] is False

    with psycopg.connect(conninfo(settings)) as conn:
        row = conn.execute(
            "SELECT source, roles, last_login_at FROM users WHERE username = %s", (uid,)
        ).fetchone()
    assert row is not None and row[0] == "ldap" and row[1] == [role] and row[2] is not None
    [event] = audit_rows(settings, "auth.login", since)
    assert event["outcome"] == "success" and event["actor"] == uid
    assert event["actor_roles"] == [role] and event["detail"] == {"source": "ldap"}


def test_ldap_username_is_escaped_and_case_insensitive(anon: TestClient, ldap_server: Any) -> None:
    assert sign_in(anon, "CLIN1", ldap_server.users["clin1"])["username"] == "clin1"
    # A filter injection matches nobody (and must not match clin1).
    response = anon.post(
        "/api/v1/auth/login", json={"username": "clin*", "password": ldap_server.users["clin1"]}
    )
    assert response.status_code == 401


def test_ldap_user_without_a_mapped_group_is_refused(
    anon: TestClient, settings: Settings, ldap_server: Any
) -> None:
    since = last_audit_id(settings)
    response = anon.post(
        "/api/v1/auth/login",
        json={"username": "nogroup1", "password": ldap_server.users["nogroup1"]},
    )
    assert response.status_code == 403
    assert response.json()["detail"] == "no ClinChat role"
    assert COOKIE not in response.cookies
    [event] = audit_rows(settings, "auth.login", since)
    assert event["outcome"] == "failure" and event["detail"] == {"reason": "no_role"}


def test_wrong_password_and_unknown_user_are_refused_alike(
    anon: TestClient, settings: Settings
) -> None:
    since = last_audit_id(settings)
    wrong = anon.post("/api/v1/auth/login", json={"username": "clin1", "password": "not-it-123"})
    # A name nobody has may be anything typed into the field (here a password typed
    # one field too early): stored as a keyed hash, the same for the same text.
    typed = "Synthetic-Passw0rd-typed-early"
    unknown = anon.post("/api/v1/auth/login", json={"username": typed, "password": "whatever-1"})
    again = anon.post("/api/v1/auth/login", json={"username": typed, "password": "whatever-2"})
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json() == unknown.json() == {"detail": "wrong username or password"}
    events = audit_rows(settings, "auth.login", since)
    assert again.status_code == 401
    assert [e["outcome"] for e in events] == ["failure", "failure", "failure"]
    assert events[0]["actor"] == "clin1"
    assert re.fullmatch(r"unknown:[0-9a-f]{16}", events[1]["actor"])
    assert events[2]["actor"] == events[1]["actor"]
    assert "Passw0rd" not in json.dumps(events)
    assert all(e["detail"] == {"reason": "bad_credentials"} for e in events)
    assert not [e for e in events if not e["source_ip"].startswith("10.")]


@pytest.mark.parametrize("odd", ["\t", "\x01", "\ue000", "\u200e"])
def test_a_password_saslprep_refuses_is_a_wrong_password(
    anon: TestClient, settings: Settings, ldap_server: Any, odd: str
) -> None:
    """Not a 503 "ldap is unavailable" that anyone could cause, and it counts."""
    since = last_audit_id(settings)
    response = anon.post(
        "/api/v1/auth/login",
        json={"username": "clin1", "password": ldap_server.users["clin1"] + odd},
    )
    assert response.status_code == 401
    assert response.json() == {"detail": "wrong username or password"}
    [event] = audit_rows(settings, "auth.login", since)
    assert event["outcome"] == "failure" and event["detail"]["reason"] == "bad_credentials"
    # counted: the right password then resets the count (other tests sign in as clin1)
    assert sign_in(anon, "clin1", ldap_server.users["clin1"])["username"] == "clin1"


def test_ldap_down_gives_503_naming_it(settings: Settings) -> None:
    down = settings.model_copy(update={"ldap_url": "ldap://127.0.0.1:9"})
    with app_client(down) as client:
        response = client.post(
            "/api/v1/auth/login", json={"username": "clin1", "password": "whatever-1"}
        )
    assert response.status_code == 503
    assert response.json()["down"] == ["ldap"]


def test_the_bind_password_comes_from_vault(
    settings: Settings, ldap_server: Any, openbao: Any
) -> None:
    """Deployed, the app holds no bind password: it reads it from Vault's KV store."""
    from pydantic import SecretStr

    from app import vault_keys

    from_vault = settings.model_copy(
        update={"ldap_bind_password": SecretStr(""), "secrets_in_vault": True}
    )
    attempt = {"username": "clin1", "password": ldap_server.users["clin1"]}
    try:
        openbao.put_app_secrets({"ldap_bind_password": ldap_server.bind_password})
        vault_keys._secret_readers.clear()
        with app_client(from_vault) as client:
            assert client.post("/api/v1/auth/login", json=attempt).status_code == 200

        # a wrong one there: the directory refuses the service account
        openbao.put_app_secrets({"ldap_bind_password": "not-the-bind-password"})
        vault_keys._secret_readers.clear()
        with app_client(from_vault) as client:
            refused = client.post("/api/v1/auth/login", json=attempt)
        assert refused.status_code == 503 and refused.json()["down"] == ["ldap"]

        # none there: 503 naming Vault, where the password should be
        openbao.put_app_secrets({"other": "value"})
        vault_keys._secret_readers.clear()
        with app_client(from_vault) as client:
            missing = client.post("/api/v1/auth/login", json=attempt)
        assert missing.status_code == 503 and missing.json()["down"] == ["vault"]
        assert ldap_server.bind_password not in missing.text
    finally:
        openbao.put_app_secrets({})
        vault_keys._secret_readers.clear()


def test_ldap_certificate_is_verified(settings: Settings, ldap_server: Any, tmp_path: Any) -> None:
    from tests.services.pki import make_pki

    other_ca = make_pki(tmp_path).ca_cert
    untrusted = settings.model_copy(update={"ldap_ca_cert": str(other_ca)})
    with app_client(untrusted) as client:
        response = client.post(
            "/api/v1/auth/login", json={"username": "clin1", "password": ldap_server.users["clin1"]}
        )
    assert response.status_code == 503 and response.json()["down"] == ["ldap"]


# -- local accounts ----------------------------------------------------------------------------


def test_local_break_glass_admin_with_argon2(anon: TestClient, settings: Settings) -> None:
    from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

    from app.auth.local import PasswordPolicyError, create_local_user

    name = f"breakglass-{uuid.uuid4().hex[:6]}"
    created: list[uuid.UUID] = []

    async def create() -> None:
        engine = create_async_engine(
            "postgresql+psycopg://",
            async_creator=lambda: psycopg.AsyncConnection.connect(conninfo(settings)),
        )
        try:
            async with async_sessionmaker(engine)() as session:
                with pytest.raises(PasswordPolicyError, match="12 characters"):
                    await create_local_user(session, name, "short-pw", ["admin"], settings=settings)
                with pytest.raises(PasswordPolicyError, match="roles"):
                    await create_local_user(session, name, PASSWORD, ["root"], settings=settings)
                user = await create_local_user(
                    session, name, PASSWORD, ["admin"], settings=settings
                )
                created.append(user.id)
                assert user.source == "local" and user.roles == ["admin"]
                assert user.password_hash and user.password_hash.startswith("$argon2id$")
                with pytest.raises(PasswordPolicyError, match="taken"):
                    await create_local_user(session, name, PASSWORD, ["admin"], settings=settings)
        finally:
            await engine.dispose()

    since = last_audit_id(settings)
    asyncio.run(create())
    [created_event] = audit_rows(settings, "user.create", since)
    assert created_event["detail"] == {"source": "local", "roles": ["admin"]}
    enrol_totp(settings, created[0], name)

    bad = anon.post("/api/v1/auth/login", json={"username": name, "password": PASSWORD + "x"})
    assert bad.status_code == 401
    body = sign_in(anon, name, PASSWORD)
    assert body["roles"] == ["admin"]
    events = audit_rows(settings, "auth.login", since)
    assert events[-1]["outcome"] == "success" and events[-1]["detail"] == {"source": "local"}


def test_outdated_hash_is_replaced_at_sign_in(
    anon: TestClient, settings: Settings, users: Callable[..., uuid.UUID]
) -> None:
    name = local_user(users, "admin")
    weak = PasswordHasher(time_cost=1, memory_cost=8 * 1024, parallelism=1).hash(PASSWORD)
    with psycopg.connect(conninfo(settings)) as conn:
        conn.execute("UPDATE users SET password_hash = %s WHERE username = %s", (weak, name))
    sign_in(anon, name, PASSWORD)
    with psycopg.connect(conninfo(settings)) as conn:
        row = conn.execute(
            "SELECT password_hash FROM users WHERE username = %s", (name,)
        ).fetchone()
    assert row is not None and "m=65536,t=3,p=4" in row[0]


def test_disabled_account_is_refused(
    anon: TestClient, settings: Settings, users: Callable[..., uuid.UUID]
) -> None:
    name = local_user(users, "admin")
    with psycopg.connect(conninfo(settings)) as conn:
        conn.execute("UPDATE users SET disabled = true WHERE username = %s", (name,))
    response = anon.post("/api/v1/auth/login", json={"username": name, "password": PASSWORD})
    assert response.status_code == 403 and response.json()["detail"] == "this account is disabled"


# -- sessions ---------------------------------------------------------------------------------


def test_cookie_flags(settings: Settings, users: Callable[..., uuid.UUID]) -> None:
    name = local_user(users, "clinician")
    for secure in (False, True):
        with app_client(settings.model_copy(update={"cookie_secure": secure})) as client:
            response = client.post("/api/v1/auth/login", json=credentials(name))
        assert response.status_code == 200
        cookie = set_cookie_header(response).lower()
        attributes = {part.strip().split("=")[0] for part in cookie.split(";")[1:]}
        assert "httponly" in attributes
        assert "samesite=strict" in cookie and "path=/" in cookie
        assert "max-age" not in attributes and "expires" not in attributes  # a session cookie
        assert ("secure" in attributes) is secure
        assert cookie.startswith(f"{SECURE_COOKIE if secure else COOKIE}=".lower())


def test_sign_in_rotates_the_session(
    anon: TestClient, settings: Settings, users: Callable[..., uuid.UUID]
) -> None:
    name = local_user(users, "clinician")
    sign_in(anon, name, PASSWORD)
    first = anon.cookies[COOKIE]
    sign_in(anon, name, PASSWORD)
    assert anon.cookies[COOKIE] != first
    assert sync_redis(settings).exists(_key(first)) == 0


def test_json_login_refuses_a_form_post(anon: TestClient) -> None:
    """Login CSRF on the API: a cross-site form cannot send JSON."""
    response = anon.post("/api/v1/auth/login", data={"username": "clin1", "password": "x"})
    assert response.status_code == 422


def test_csrf_token_is_required_on_state_changing_routes(
    anon: TestClient, users: Callable[..., uuid.UUID]
) -> None:
    sign_in(anon, local_user(users, "clinician"), PASSWORD)
    csrf = anon.headers.pop("X-CSRF-Token")
    assert anon.post("/api/v1/tokens", json={"name": "t"}).status_code == 403
    assert anon.post("/logout", data={}).status_code == 403
    wrong = anon.post("/api/v1/tokens", json={"name": "t"}, headers={"X-CSRF-Token": "nope"})
    assert wrong.status_code == 403
    assert anon.get("/api/v1/auth/me").status_code == 200  # reads need none
    ok = anon.post("/logout", data={"csrf_token": csrf}, follow_redirects=False)
    assert ok.status_code == 303 and ok.headers["location"] == "/login"
    assert anon.get("/api/v1/auth/me").status_code == 401


def test_idle_logoff_and_renewal_on_activity(
    anon: TestClient, settings: Settings, users: Callable[..., uuid.UUID]
) -> None:
    sign_in(anon, local_user(users, "clinician"), PASSWORD)
    store = sync_redis(settings)
    key = session_key(anon)
    assert 0 < store.ttl(key) <= settings.session_idle_timeout_s

    store.expire(key, 30)  # activity renews the idle timer to the full timeout
    assert anon.get("/api/v1/auth/me").status_code == 200
    assert store.ttl(key) > 30

    store.pexpire(key, 300)  # idle: the key expires, the next request is signed out
    time.sleep(0.6)
    response = anon.get("/api/v1/auth/me")
    assert response.status_code == 401 and response.json() == {"detail": "sign-in required"}


def test_session_max_age(
    anon: TestClient, settings: Settings, users: Callable[..., uuid.UUID]
) -> None:
    sign_in(anon, local_user(users, "clinician"), PASSWORD)
    store = sync_redis(settings)
    key = session_key(anon)
    data = json.loads(store.get(key) or "{}")
    data["created"] = time.time() - settings.session_max_age_s - 1
    store.set(key, json.dumps(data), keepttl=True)
    assert anon.get("/api/v1/auth/me").status_code == 401


def test_logout_destroys_the_session(
    anon: TestClient, settings: Settings, users: Callable[..., uuid.UUID]
) -> None:
    name = local_user(users, "clinician")
    sign_in(anon, name, PASSWORD)
    token = anon.cookies[COOKIE]
    since = last_audit_id(settings)
    response = anon.post("/api/v1/auth/logout")
    assert response.status_code == 204
    assert sync_redis(settings).exists(_key(token)) == 0
    anon.cookies.set(COOKIE, token)  # replaying the old cookie gets nowhere
    assert anon.get("/api/v1/auth/me").status_code == 401
    [event] = audit_rows(settings, "auth.logout", since)
    assert event["actor"] == name


# -- lockout ------------------------------------------------------------------------------------


def test_lockout_after_five_failures_even_with_the_right_password(
    settings: Settings, users: Callable[..., uuid.UUID]
) -> None:
    short = settings.model_copy(update={"lockout_duration_s": 2})
    name = local_user(users, "clinician")
    since = last_audit_id(settings)
    with app_client(short) as client:

        def attempt(password: str) -> int:
            response = client.post("/api/v1/auth/login", json=credentials(name, password))
            return response.status_code

        # A success resets the count: 4 failures, success, 4 failures is no lockout.
        assert [attempt("wrong-password-1") for _ in range(4)] == [401] * 4
        assert attempt(PASSWORD) == 200
        assert [attempt("wrong-password-1") for _ in range(4)] == [401] * 4
        assert attempt("wrong-password-1") == 401  # the fifth: locks
        locked = client.post("/api/v1/auth/login", json={"username": name, "password": PASSWORD})
        assert locked.status_code == 429
        assert "locked" in locked.json()["detail"] and name not in locked.json()["detail"]
        assert int(locked.headers["Retry-After"]) >= 1
        # the lock is per username: the same address may still sign in as someone else
        other = local_user(users, "clinician")
        assert client.post("/api/v1/auth/login", json=credentials(other)).status_code == 200
        time.sleep(2.2)
        assert attempt(PASSWORD) == 200
    [lock_event] = audit_rows(settings, "auth.lockout", since)
    assert lock_event["actor"] == name and lock_event["detail"] == {"scope": "user"}
    reasons = [e["detail"].get("reason") for e in audit_rows(settings, "auth.login", since)]
    assert "locked_user" in reasons


def sign_ins_at_once(settings: Settings, bodies: list[dict[str, str]], source_ip: str) -> list[int]:
    """POST every body to the sign-in at the same time (one event loop, the app in
    process); their status codes, sorted."""
    import httpx

    from app.db import dispose_all
    from app.main import app
    from app.redis_client import close_all

    app.dependency_overrides[get_settings] = lambda: settings

    async def burst() -> list[int]:
        transport = httpx.ASGITransport(app=app)
        try:
            async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
                responses = await asyncio.gather(
                    *(
                        client.post(
                            "/api/v1/auth/login", json=body, headers={"X-Real-IP": source_ip}
                        )
                        for body in bodies
                    )
                )
            return sorted(r.status_code for r in responses)
        finally:
            await dispose_all()
            await close_all()

    try:
        return asyncio.run(burst())
    finally:
        app.dependency_overrides.clear()


def test_parallel_guesses_cannot_outrun_the_lockout(
    settings: Settings, users: Callable[..., uuid.UUID]
) -> None:
    """Twelve wrong passwords sent at once: only the threshold's five are checked, the
    rest are refused as locked (each attempt is counted before its password is)."""
    name = local_user(users, "clinician")
    bodies = [{"username": name, "password": f"wrong-{i}-password"} for i in range(12)]
    statuses = sign_ins_at_once(settings, bodies, "10.250.1.1")
    assert statuses == [401] * 5 + [429] * 7


def test_a_name_written_otherwise_counts_toward_the_same_lock(
    settings: Settings, users: Callable[..., uuid.UUID]
) -> None:
    """Full-width or upper-case letters (which a directory matches as the same name)
    do not give an attacker five more guesses."""
    name = local_user(users, "clinician")
    variants = [
        name.upper(),
        "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in name),  # full width
    ]
    with app_client(settings) as client:
        for i in range(5):
            response = client.post(
                "/api/v1/auth/login",
                json={"username": variants[i % 2], "password": "wrong-password-1"},
            )
            assert response.status_code == 401
        locked = client.post("/api/v1/auth/login", json={"username": name, "password": PASSWORD})
    assert locked.status_code == 429


def test_failures_from_one_address_are_throttled(
    settings: Settings, users: Callable[..., uuid.UUID]
) -> None:
    """Spraying: many usernames, one address. The threshold is 10x the username's."""
    strict = settings.model_copy(update={"lockout_threshold": 1, "lockout_duration_s": 60})
    with app_client(strict) as client:
        codes = [
            client.post(
                "/api/v1/auth/login",
                json={"username": f"nobody-{i}-{uuid.uuid4().hex[:6]}", "password": "guess-1234"},
            ).status_code
            for i in range(10)
        ]
        assert codes == [401] * 10
        name = local_user(users, "clinician")
        blocked = client.post("/api/v1/auth/login", json={"username": name, "password": PASSWORD})
        assert blocked.status_code == 429 and "address" in blocked.json()["detail"]
        client.headers["X-Real-IP"] = new_ip()
        ok = client.post("/api/v1/auth/login", json=credentials(name))
        assert ok.status_code == 200


# -- break-glass --------------------------------------------------------------------------------


def test_break_glass_needs_a_reason_and_a_clinician(
    anon: TestClient, settings: Settings, users: Callable[..., uuid.UUID]
) -> None:
    sign_in(anon, local_user(users, "admin"), PASSWORD)
    body = {"reason": "covering the ward overnight", "minutes": 10}
    assert anon.post("/api/v1/auth/break-glass", json=body).status_code == 403

    anon.cookies.clear()
    sign_in(anon, local_user(users, "clinician"), PASSWORD)
    assert anon.post("/api/v1/auth/break-glass", json={"minutes": 10}).status_code == 422
    short = anon.post("/api/v1/auth/break-glass", json={"reason": "urgent", "minutes": 10})
    assert short.status_code == 422
    too_long = {
        "reason": "covering the ward overnight",
        "minutes": settings.break_glass_max_minutes + 1,
    }
    response = anon.post("/api/v1/auth/break-glass", json=too_long)
    assert response.status_code == 422 and "minutes must be" in response.json()["detail"]
    assert anon.get("/api/v1/auth/me").json()["break_glass"] is False


def test_break_glass_flags_the_audit_trail_and_expires(
    anon: TestClient, settings: Settings, users: Callable[..., uuid.UUID]
) -> None:
    name = local_user(users, "clinician")
    sign_in(anon, name, PASSWORD)
    since = last_audit_id(settings)
    reason = "urgent handover for MRN 12345678 on the test ward"
    response = anon.post("/api/v1/auth/break-glass", json={"reason": reason, "minutes": 5})
    assert response.status_code == 200, response.text
    assert response.json()["break_glass"] is True
    me = anon.get("/api/v1/auth/me").json()
    assert me["break_glass"] is True and me["break_glass_until"]

    [start] = audit_rows(settings, "break_glass.start", since)
    assert start["break_glass"] is True and start["actor"] == name
    assert start["detail"]["reason_length"] == len(reason) and start["detail"]["minutes"] == 5
    assert "12345678" not in json.dumps(start["detail"])

    # every audit row written meanwhile is flagged
    assert anon.post("/api/v1/tokens", json={"name": "during"}).status_code == 201
    [during] = audit_rows(settings, "token.create", since)
    assert during["break_glass"] is True

    # it expires on its own
    store = sync_redis(settings)
    key = session_key(anon)
    data = json.loads(store.get(key) or "{}")
    data["break_glass_until"] = time.time() - 1
    store.set(key, json.dumps(data), keepttl=True)
    assert anon.get("/api/v1/auth/me").json()["break_glass"] is False
    assert anon.post("/api/v1/tokens", json={"name": "after"}).status_code == 201
    after = audit_rows(settings, "token.create", since)[-1]
    assert after["break_glass"] is False

    # and can be ended early
    anon.post("/api/v1/auth/break-glass", json={"reason": reason, "minutes": 5})
    ended = anon.post("/api/v1/auth/break-glass/end")
    assert ended.status_code == 200 and ended.json()["break_glass"] is False
    assert anon.get("/api/v1/auth/me").json()["break_glass"] is False
    [end] = audit_rows(settings, "break_glass.end", since)
    assert end["break_glass"] is True and end["detail"] == {"was_active": True}


# -- API tokens ---------------------------------------------------------------------------------


def test_api_token_works_as_bearer_and_is_revoked(
    anon: TestClient, settings: Settings, users: Callable[..., uuid.UUID]
) -> None:
    name = local_user(users, "clinician")
    sign_in(anon, name, PASSWORD)
    since = last_audit_id(settings)
    assert anon.post("/api/v1/tokens", json={"name": "x", "days": 91}).status_code == 422
    assert anon.post("/api/v1/tokens", json={"name": "<script>"}).status_code == 422
    created = anon.post("/api/v1/tokens", json={"name": "ward script", "days": 7})
    assert created.status_code == 201, created.text
    token = created.json()
    assert token["token"].startswith("cc_") and token["roles"] == ["clinician"]
    listed = anon.get("/api/v1/tokens").json()
    assert [t["id"] for t in listed] == [token["id"]] and "token" not in listed[0]
    with psycopg.connect(conninfo(settings)) as conn:
        stored = conn.execute("SELECT token_hash FROM api_tokens WHERE id = %s", (token["id"],))
        row = stored.fetchone()
    assert row is not None and token["token"] not in row[0] and len(row[0]) == 64

    session_cookie = anon.cookies[COOKIE]
    anon.cookies.clear()
    bearer = {"Authorization": f"Bearer {token['token']}"}
    me = anon.get("/api/v1/auth/me", headers=bearer)
    assert me.status_code == 200 and me.json()["username"] == name and me.json()["via_token"]
    # an API token cannot mint another, nor open break-glass
    assert anon.post("/api/v1/tokens", json={"name": "y"}, headers=bearer).status_code == 403
    bg = {"reason": "covering the ward overnight", "minutes": 5}
    assert anon.post("/api/v1/auth/break-glass", json=bg, headers=bearer).status_code == 403
    assert (
        anon.get("/api/v1/auth/me", headers={"Authorization": "Bearer cc_nope"}).status_code == 401
    )

    # a cookie session of another user beside the token is refused; the same user's is fine
    anon.cookies.set(COOKIE, session_cookie)
    assert anon.get("/api/v1/auth/me", headers=bearer).status_code == 200
    sign_in(anon, local_user(users, "admin"), PASSWORD)
    assert anon.get("/api/v1/auth/me").json()["roles"] == ["admin"]
    mismatch = anon.get("/api/v1/auth/me", headers=bearer)
    assert mismatch.status_code == 401
    anon.cookies.clear()

    # state-changing bearer requests need no CSRF token: revoke the token with itself
    revoked = anon.delete(f"/api/v1/tokens/{token['id']}", headers=bearer)
    assert revoked.status_code == 204
    assert anon.get("/api/v1/auth/me", headers=bearer).status_code == 401
    assert anon.delete(f"/api/v1/tokens/{uuid.uuid4()}", headers=bearer).status_code == 401

    actions = [(e["outcome"], e["entity_id"]) for e in audit_rows(settings, "token.create", since)]
    assert actions == [("success", token["id"])]
    assert [e["entity_id"] for e in audit_rows(settings, "token.revoke", since)] == [token["id"]]


def test_a_token_calls_only_what_its_scopes_name(
    anon: TestClient, settings: Settings, users: Callable[..., uuid.UUID]
) -> None:
    sign_in(anon, local_user(users, "clinician", "auditor"), PASSWORD)
    since = last_audit_id(settings)
    assert anon.post("/api/v1/tokens", json={"name": "s", "scopes": []}).status_code == 422
    assert anon.post("/api/v1/tokens", json={"name": "s", "scopes": ["root"]}).status_code == 422
    default = anon.post("/api/v1/tokens", json={"name": "chat script"}).json()
    assert default["scopes"] == ["chat", "facade"]
    detect = anon.post("/api/v1/tokens", json={"name": "phi", "scopes": ["detect"]}).json()
    assert detect["scopes"] == ["detect"]
    [created, _] = audit_rows(settings, "token.create", since)
    assert created["detail"]["scopes"] == ["chat", "facade"]
    anon.cookies.clear()

    def status(token: dict, method: str, path: str, **kw: Any) -> int:
        headers = {"Authorization": f"Bearer {token['token']}"}
        return anon.request(method, path, headers=headers, **kw).status_code

    text = {"text": "Seen on ward 4."}
    # the roles allow all of these; the scopes decide
    assert status(default, "GET", "/api/v1/conversations") == 200
    assert status(default, "POST", "/api/v1/phi/detect", json=text) == 403
    assert status(default, "GET", "/api/v1/audit") == 403
    assert status(detect, "POST", "/api/v1/phi/detect", json=text) == 200
    assert status(detect, "GET", "/api/v1/conversations") == 403
    assert status(detect, "GET", "/v1/models") == 403
    refused = anon.get("/api/v1/audit", headers={"Authorization": f"Bearer {detect['token']}"})
    assert refused.json()["detail"] == "this API token does not have the audit scope"
    # what any token may do: see who it is, and revoke itself
    assert status(detect, "GET", "/api/v1/auth/me") == 200
    assert status(detect, "DELETE", f"/api/v1/tokens/{detect['id']}") == 204


def test_expired_token_and_disabled_owner_are_refused(
    anon: TestClient, settings: Settings, users: Callable[..., uuid.UUID]
) -> None:
    name = local_user(users, "clinician")
    sign_in(anon, name, PASSWORD)
    first = anon.post("/api/v1/tokens", json={"name": "one"}).json()
    second = anon.post("/api/v1/tokens", json={"name": "two"}).json()
    assert anon.delete(f"/api/v1/tokens/{uuid.uuid4()}").status_code == 404
    anon.cookies.clear()
    with psycopg.connect(conninfo(settings)) as conn:
        conn.execute(
            "UPDATE api_tokens SET expires_at = now() - interval '1 second' WHERE id = %s",
            (first["id"],),
        )
    assert (
        anon.get(
            "/api/v1/auth/me", headers={"Authorization": f"Bearer {first['token']}"}
        ).status_code
        == 401
    )
    assert (
        anon.get(
            "/api/v1/auth/me", headers={"Authorization": f"Bearer {second['token']}"}
        ).status_code
        == 200
    )
    with psycopg.connect(conninfo(settings)) as conn:
        conn.execute("UPDATE users SET disabled = true WHERE username = %s", (name,))
    assert (
        anon.get(
            "/api/v1/auth/me", headers={"Authorization": f"Bearer {second['token']}"}
        ).status_code
        == 401
    )


# -- pages --------------------------------------------------------------------------------------


def test_login_page_signs_in_and_redirects_back(
    anon: TestClient, users: Callable[..., uuid.UUID]
) -> None:
    name = local_user(users, "clinician")
    page = anon.get("/login?next=/break-glass")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "<script>" not in page.text and " style=" not in page.text
    login_csrf = anon.cookies[LOGIN_COOKIE]
    assert f'value="{login_csrf}"' in page.text and 'value="/break-glass"' in page.text
    # the second factor's field, optional (directory users leave it empty)
    assert 'name="totp"' in page.text and 'autocomplete="one-time-code"' in page.text
    assert 'inputmode="numeric"' in page.text

    form = {"username": name, "password": PASSWORD, "next": "/break-glass", "totp": ""}
    refused = anon.post("/login", data=form, follow_redirects=False)  # no login token
    assert refused.status_code == 403
    bad = anon.post(
        "/login", data={**form, "password": "wrong-pass-1", "login_csrf": login_csrf},
        follow_redirects=False,
    )  # fmt: skip
    assert bad.status_code == 401 and "wrong username or password" in bad.text
    response = anon.post(
        "/login", data={**form, "login_csrf": login_csrf, "totp": totp_code(name)},
        follow_redirects=False,
    )  # fmt: skip
    assert response.status_code == 303 and response.headers["location"] == "/break-glass"
    assert COOKIE in anon.cookies
    page = anon.get("/break-glass")
    assert page.status_code == 200 and "Break-glass access" in page.text


def test_login_form_refuses_an_open_redirect(
    anon: TestClient, users: Callable[..., uuid.UUID]
) -> None:
    name = local_user(users, "clinician")
    anon.get("/login")
    form = {
        "username": name,
        "password": PASSWORD,
        "totp": totp_code(name),
        "next": "//evil.example/",
        "login_csrf": anon.cookies[LOGIN_COOKIE],
    }
    response = anon.post("/login", data=form, follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == "/"


def test_browsers_get_the_login_page_with_401_and_json_clients_json(anon: TestClient) -> None:
    html = anon.get("/break-glass", headers={"Accept": "text/html,application/xhtml+xml"})
    assert html.status_code == 401 and "text/html" in html.headers["content-type"]
    assert 'action="/login"' in html.text and 'value="/break-glass"' in html.text
    api = anon.get("/api/v1/auth/me", headers={"Accept": "text/html"})
    assert api.status_code == 401 and api.json() == {"detail": "sign-in required"}
    plain = anon.get("/break-glass")
    assert plain.status_code == 401 and plain.json() == {"detail": "sign-in required"}


def test_break_glass_page_form(
    anon: TestClient, settings: Settings, users: Callable[..., uuid.UUID]
) -> None:
    sign_in(anon, local_user(users, "clinician"), PASSWORD)
    csrf = anon.headers.pop("X-CSRF-Token")
    short = anon.post("/break-glass", data={"csrf_token": csrf, "reason": "x", "minutes": "5"})
    assert short.status_code == 400 and "at least 10" in short.text
    started = anon.post(
        "/break-glass",
        data={"csrf_token": csrf, "reason": "covering the ward overnight", "minutes": "5"},
        follow_redirects=False,
    )
    assert started.status_code == 303
    anon.headers["X-CSRF-Token"] = csrf
    assert anon.get("/api/v1/auth/me").json()["break_glass"] is True
    ended = anon.post("/break-glass/end", data={"csrf_token": csrf}, follow_redirects=False)
    assert ended.status_code == 303
    assert anon.get("/api/v1/auth/me").json()["break_glass"] is False


# -- bad input and dependencies down -----------------------------------------------------------


def test_control_characters_in_a_username_give_4xx(anon: TestClient) -> None:
    api = anon.post("/api/v1/auth/login", json={"username": "clin\u00001", "password": "x-123"})
    assert api.status_code == 422
    anon.get("/login")
    form = {
        "username": "clin\u00001",
        "password": "x-123",
        "login_csrf": anon.cookies[LOGIN_COOKIE],
    }
    page = anon.post("/login", data=form)
    assert page.status_code == 401 and "wrong username or password" in page.text


def test_redis_down_gives_503_naming_it(settings: Settings, redis_server: Any) -> None:
    url = settings.redis_url.replace(f":{redis_server.port}/", ":9/")
    with app_client(settings.model_copy(update={"redis_url": url})) as client:
        api = client.post("/api/v1/auth/login", json={"username": "clin1", "password": "x-1234"})
        assert api.status_code == 503 and api.json()["down"] == ["redis"]
        client.get("/login")
        form = {
            "username": "clin1",
            "password": "x-1234",
            "login_csrf": client.cookies[LOGIN_COOKIE],
        }
        page = client.post("/login", data=form)
        assert page.status_code == 503 and "redis cannot be reached" in page.text


def _request_from(peer: str, real_ip: str) -> Request:
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/api/v1/auth/login",
        "headers": [(b"x-real-ip", real_ip.encode())],
        "client": (peer, 40000),
    }
    return Request(scope)


def test_x_real_ip_is_believed_only_from_the_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """A client that reaches the app directly cannot pick the address its failed
    sign-ins are counted against; nginx (FORWARDED_ALLOW_IPS) can."""
    monkeypatch.setenv("FORWARDED_ALLOW_IPS", "10.213.0.11,127.0.0.1")
    assert client_ip(_request_from("10.213.0.11", "192.0.2.7")) == "192.0.2.7"
    assert client_ip(_request_from("10.213.0.99", "192.0.2.7")) == "10.213.0.99"
    monkeypatch.delenv("FORWARDED_ALLOW_IPS")
    assert client_ip(_request_from("127.0.0.1", "192.0.2.7")) == "192.0.2.7"
    assert client_ip(_request_from("10.213.0.11", "192.0.2.7")) == "10.213.0.11"


def test_over_https_the_session_cookie_is_host_prefixed_and_the_plain_name_ignored(
    settings: Settings, users: Callable[..., uuid.UUID], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(settings, "cookie_secure", True)
    name = local_user(users, "clinician")
    with app_client(settings) as client:
        response = client.post("/api/v1/auth/login", json=credentials(name))
        assert response.status_code == 200, response.text
        headers = [v for k, v in response.headers.multi_items() if k.lower() == "set-cookie"]
        session = [h for h in headers if h.startswith(f"{SECURE_COOKIE}=")]
        assert len(session) == 1, headers
        # What a browser demands of the prefix: Secure, Path=/, no Domain.
        attributes = {a.strip().split("=")[0].lower() for a in session[0].split(";")[1:]}
        assert {"secure", "httponly", "path"} <= attributes and "domain" not in attributes
        assert "path=/;" in session[0].lower().replace(" ", "") + ";"
        token = session[0].split(";")[0].split("=", 1)[1]
        client.cookies.clear()
        with_prefix = client.get("/api/v1/auth/me", headers={"Cookie": f"{SECURE_COOKIE}={token}"})
        assert with_prefix.status_code == 200
        # The same value under the plain name (planted over http or by a sibling host): no.
        plain = client.get("/api/v1/auth/me", headers={"Cookie": f"{COOKIE}={token}"})
        assert plain.status_code == 401
