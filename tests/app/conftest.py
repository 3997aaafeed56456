"""Fixtures for the app: every dependency real and private on loopback.

PostgreSQL with pgvector (TLS, scram; the schema owned by one role and used by
another, as on the hosts), Redis (TLS, ACL user), OpenBao (transit, AppRole),
OpenLDAP (StartTLS) and the real `serving` with its tiny random model. Each is
started once per session by tests/services/; the app is the ASGI app in-process.

Tests get:
- ``settings``: a Settings bound to all of them (development mode, http cookies);
- ``client``: an anonymous TestClient;
- ``login(*roles, groups=[...])``: a TestClient signed in as a new user holding
  ``roles`` and member of the directory ``groups`` (DNs; they decide the collections
  read and managed); its CSRF token is sent on every request as X-CSRF-Token;
- ``users``: creates users directly in the database; a local one (with a password)
  has its second factor enrolled, and ``totp_code(username)`` gives a code it may
  sign in with now.
"""

from __future__ import annotations

import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.models import Role
from app.settings import Settings, get_settings
from tests.services.fixtures import ldap_server, openbao, redis_server  # noqa: F401
from tests.services.pki import TestPki, make_pki
from tests.services.postgres import PrivatePostgres
from tests.services.stack import PrivateServing, app_settings, create_owner


@pytest.fixture(autouse=True)
def testclient_is_the_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """TestClient stands in for nginx: its X-Real-IP (each test's own address,
    so lockout counters never meet) is believed, like nginx's in production."""
    monkeypatch.setenv("FORWARDED_ALLOW_IPS", "testclient,127.0.0.1,::1")


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TestPki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="session")
def postgres(pki: TestPki) -> Iterator[PrivatePostgres]:
    # Not under pytest's tmp dir: that one is private to root, and the server runs as postgres.
    root = Path(tempfile.mkdtemp(prefix="clinchat-pg-"))
    server = PrivatePostgres(root=root, pki=pki)
    server.init()
    yield server
    if server.is_running():
        server.stop()
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def owner_password(postgres: PrivatePostgres) -> str:
    return create_owner(postgres)


@pytest.fixture(scope="session")
def serving(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The real model server (tiny random Llama + all-MiniLM-L6-v2) in a subprocess."""
    server = PrivateServing(root=tmp_path_factory.mktemp("models"))
    server.start()
    yield server.url
    server.stop()


@pytest.fixture(scope="session")
def base_settings(
    postgres: PrivatePostgres,
    owner_password: str,
    pki: TestPki,
    redis_server,  # noqa: ANN001, F811
    openbao,  # noqa: ANN001, F811
    ldap_server,  # noqa: ANN001, F811
    serving: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Settings:
    from app import migrate

    settings = app_settings(
        postgres=postgres,
        owner_password=owner_password,
        pki=pki,
        redis=redis_server,
        openbao=openbao,
        ldap=ldap_server,
        serving_url=serving,
        key_dir=tmp_path_factory.mktemp("keys"),
    )
    migrate.upgrade(settings)
    return settings


@pytest.fixture
def settings(base_settings: Settings) -> Settings:
    return base_settings


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    from app.main import app

    app.dependency_overrides[get_settings] = lambda: settings
    with TestClient(app) as test_client:
        yield test_client
    app.dependency_overrides.clear()


# username -> (conninfo, TOTP secret) of the local users ``users`` enrolled
_ENROLLED: dict[str, tuple[str, bytes]] = {}


def enrol_totp(settings: Settings, user_id: uuid.UUID, username: str) -> bytes:
    """Enrol a local user's second factor as the app does (the secret envelope-encrypted,
    bound to the user id); returns the secret."""
    import secrets

    import psycopg

    from app.auth import totp
    from app.crypto import cipher_for
    from app.db import conninfo

    secret = secrets.token_bytes(totp.SECRET_BYTES)
    blob = cipher_for(settings).encrypt(secret, totp.aad(user_id))
    with psycopg.connect(conninfo(settings)) as conn:
        conn.execute(
            "UPDATE users SET totp_secret_enc = %s, totp_last_step = NULL WHERE id = %s",
            (blob, user_id),
        )
    _ENROLLED[username] = (conninfo(settings), secret)
    return secret


def totp_code(username: str) -> str:
    """A code the app accepts now for a local user ``users`` enrolled.

    For tests about something else that sign the same account in several times within
    one 30 s step: the replay marker is cleared first (test_totp.py tests replay).
    """
    import psycopg

    from app.auth import totp

    info, secret = _ENROLLED[username]
    with psycopg.connect(info) as conn:
        conn.execute("UPDATE users SET totp_last_step = NULL WHERE username = %s", (username,))
    return totp.totp(secret, time.time())


def run(coro):  # noqa: ANN001, ANN201
    """Run a coroutine from a sync test (outside the app's event loop)."""
    import asyncio

    return asyncio.run(coro)


@pytest.fixture
def users(settings: Settings) -> Callable[..., uuid.UUID]:
    """``users(username, roles, password=None, totp=True)`` creates a user row and returns
    its id. With a password it is a local account, its second factor enrolled unless
    ``totp`` is False (``totp_code(username)``: a code for it)."""

    def create(
        username: str,
        roles: list[str],
        password: str | None = None,
        totp: bool = True,
        groups: list[str] | tuple[str, ...] = (),
    ) -> uuid.UUID:
        import psycopg
        from argon2 import PasswordHasher

        from app.db import conninfo

        user_id = uuid.uuid4()
        hashed = PasswordHasher().hash(password) if password else None
        with psycopg.connect(conninfo(settings)) as conn:
            conn.execute(
                "INSERT INTO users (id, username, display_name, source, password_hash, roles,"
                " directory_groups, disabled) VALUES (%s, %s, %s, %s, %s, %s, %s, false)",
                (user_id, username, f"Test {username}", "local" if password else "ldap",
                 hashed, roles, list(groups)),
            )  # fmt: skip
        if password and totp:
            enrol_totp(settings, user_id, username)
        return user_id

    return create


@pytest.fixture
def login(
    settings: Settings, users: Callable[..., uuid.UUID]
) -> Iterator[Callable[..., TestClient]]:
    """``login(*roles)``: a TestClient with a fresh session of a new user holding ``roles``."""
    from app.auth.sessions import COOKIE, SessionStore
    from app.main import app
    from app.redis_client import close_all, redis_for

    clients: list[TestClient] = []
    app.dependency_overrides[get_settings] = lambda: settings

    def make(
        *roles: Role, username: str | None = None, groups: list[str] | tuple[str, ...] = ()
    ) -> TestClient:
        name = username or f"user-{uuid.uuid4().hex[:8]}"
        user_id = users(name, [str(r) for r in roles], groups=groups)

        async def session() -> tuple[str, str]:
            store = SessionStore(redis_for(settings), settings)
            token = await store.create(user_id, name, f"Test {name}", set(roles), groups)
            principal = await store.load(token)
            await close_all()
            assert principal is not None
            return token, principal.csrf_token

        token, csrf = run(session())
        test_client = TestClient(app)
        test_client.__enter__()
        test_client.cookies.set(COOKIE, token)
        test_client.headers["X-CSRF-Token"] = csrf
        test_client.username = name  # type: ignore[attr-defined]
        test_client.user_id = user_id  # type: ignore[attr-defined]
        clients.append(test_client)
        return test_client

    yield make
    for test_client in clients:
        test_client.__exit__(None, None, None)
    app.dependency_overrides.clear()
