"""The app under the production Redis ACL (roles/redis: the app's user gets only
its key patterns and commands): sign-in failures and lockout, sign-in, the
session on every request, sign-out, an upload queued and the worker taking it.
A command the app sends that the ACL does not allow fails here (NOPERM), not
first on a hospital's host."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Callable

from fastapi.testclient import TestClient

from app.kb import worker
from app.models import Role
from app.settings import Settings
from tests.app.conftest import totp_code
from tests.app.test_documents import API, unique, upload
from tests.services.redis import PrivateRedis


def role_acl_settings(settings: Settings, redis_server: PrivateRedis) -> Settings:
    url = (
        f"rediss://{redis_server.role_user}:{redis_server.password}@127.0.0.1:{redis_server.port}/0"
    )
    return settings.model_copy(update={"redis_url": url})


def test_sign_in_lockout_session_and_sign_out_under_the_role_acl(
    settings: Settings,
    redis_server: PrivateRedis,
    users: Callable[..., uuid.UUID],
) -> None:
    from app.main import app
    from app.settings import get_settings

    acl = role_acl_settings(settings, redis_server)
    app.dependency_overrides[get_settings] = lambda: acl
    name = f"acl-{uuid.uuid4().hex[:8]}"
    password = f"Synthetic-{uuid.uuid4().hex}"
    users(name, [str(Role.clinician)], password)
    try:
        with TestClient(app) as client:
            client.headers["X-Real-IP"] = f"198.51.100.{uuid.uuid4().int % 250 + 1}"
            for _ in range(2):  # failures: the lockout counters (SET NX EX, INCRBY)
                wrong = client.post(
                    "/api/v1/auth/login", json={"username": name, "password": "wrong-password"}
                )
                assert wrong.status_code == 401, wrong.text
            # a local account: a wrong code counts like a wrong password, then the right one
            bad_code = client.post(
                "/api/v1/auth/login",
                json={"username": name, "password": password, "totp": "000000"},
            )
            assert bad_code.status_code == 401, bad_code.text
            signed = client.post(
                "/api/v1/auth/login",
                json={"username": name, "password": password, "totp": totp_code(name)},
            )
            assert signed.status_code == 200, signed.text
            assert client.get("/api/v1/auth/me").json()["username"] == name
            out = client.post(
                "/api/v1/auth/logout", headers={"X-CSRF-Token": signed.json()["csrf_token"]}
            )
            assert out.status_code == 204, out.text
            assert client.get("/api/v1/auth/me").status_code == 401
    finally:
        app.dependency_overrides.clear()


def test_an_upload_is_queued_and_the_worker_takes_it_under_the_role_acl(
    settings: Settings,
    redis_server: PrivateRedis,
    login: Callable[..., TestClient],
) -> None:
    acl = role_acl_settings(settings, redis_server)
    admin = login(Role.admin)
    from app.main import app
    from app.settings import get_settings

    app.dependency_overrides[get_settings] = lambda: acl
    response = upload(admin, "acl.txt", unique("ACL test: the queue under the role's ACL."))
    assert response.status_code == 201, response.text
    document_id = response.json()["id"]
    stop = asyncio.Event()
    done = threading.Event()

    async def run() -> None:
        try:
            await worker.run_worker(acl, stop)
        finally:
            done.set()

    admin.portal.start_task_soon(run)  # type: ignore[union-attr]
    deadline = time.monotonic() + 120
    status = ""
    try:
        while time.monotonic() < deadline:
            status = admin.get(f"{API}/{document_id}").json()["latest"]["status"]
            if status == "ready":
                break
            time.sleep(0.3)
    finally:
        admin.portal.call(stop.set)  # type: ignore[union-attr]
        assert done.wait(10)
    assert status == "ready"


def test_rate_limits_under_the_role_acl(
    settings: Settings, redis_server: PrivateRedis, users: Callable[..., uuid.UUID]
) -> None:
    """The rate limiter's INCR, EXPIRE NX and TTL in MULTI on clinchat:rate:*."""
    from app.main import app
    from app.settings import get_settings

    acl = role_acl_settings(settings, redis_server).model_copy(
        update={"rate_limit_detect_per_minute": 1}
    )
    app.dependency_overrides[get_settings] = lambda: acl
    name = f"acl-{uuid.uuid4().hex[:8]}"
    password = f"Synthetic-{uuid.uuid4().hex}"
    users(name, [str(Role.clinician), str(Role.auditor)], password)
    try:
        with TestClient(app) as client:
            signed = client.post(
                "/api/v1/auth/login",
                json={"username": name, "password": password, "totp": totp_code(name)},
            )
            assert signed.status_code == 200, signed.text
            client.headers["X-CSRF-Token"] = signed.json()["csrf_token"]
            conversation = client.post("/api/v1/conversations", json={}).json()["id"]
            asked = client.post(
                f"/api/v1/conversations/{conversation}/messages",
                json={"content": "How do I book annual leave?"},
            )
            assert asked.status_code == 200, asked.text
            text = {"text": "Seen on ward 4."}
            assert client.post("/api/v1/phi/detect", json=text).status_code == 200
            assert client.post("/api/v1/phi/detect", json=text).status_code == 429
    finally:
        app.dependency_overrides.pop(get_settings, None)
