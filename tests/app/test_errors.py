"""Error shapes that hold app-wide: no echo of the input in a 422, HTML errors for browsers."""

from collections.abc import Callable
from typing import Any

from fastapi.testclient import TestClient

from app.models import Role
from app.settings import Settings

SECRET = "Zelda Quixotic-Testperson"  # obviously synthetic PHI


def test_a_422_names_the_field_and_never_echoes_the_input(client: TestClient) -> None:
    response = client.post("/api/v1/auth/login", json={"username": [SECRET], "password": 7})
    assert response.status_code == 422
    assert SECRET not in response.text
    errors = response.json()["detail"]
    assert {tuple(e["loc"]) for e in errors} == {("body", "username"), ("body", "password")}
    assert all(set(e) == {"loc", "msg", "type"} for e in errors)


def test_a_browser_without_the_role_gets_a_page_that_says_so(
    login: Callable[..., TestClient],
) -> None:
    clinician = login(Role.clinician)
    page = clinician.get("/documents", headers={"Accept": "text/html"})
    assert page.status_code == 403
    assert page.headers["content-type"].startswith("text/html")
    assert "does not have the role" in page.text
    api = clinician.get("/api/v1/documents", headers={"Accept": "text/html"})
    assert api.status_code == 403 and api.json() == {"detail": "your role does not allow this"}


def test_a_form_without_its_csrf_token_is_refused_with_a_page(
    login: Callable[..., TestClient],
) -> None:
    admin = login(Role.admin)
    del admin.headers["X-CSRF-Token"]
    page = admin.post(
        "/documents/upload",
        headers={"Accept": "text/html"},
        files={"file": ("a.md", b"# x", "text/markdown")},
    )
    assert page.status_code == 403
    assert "CSRF" in page.text and "Reload the page" in page.text


def test_full_pools_are_503_at_capacity_with_retry_after(
    login: Callable[..., TestClient], settings: Settings
) -> None:
    """Backpressure: past its pool a request waits briefly, then 503 naming the cause."""
    from app import db, redis_client
    from tests.app.test_chat import done_with, use

    tight = settings.model_copy(
        update={
            "db_pool_size": 1, "db_pool_max_overflow": 0, "db_pool_timeout_s": 0.3,
            "redis_pool_size": 1, "redis_pool_timeout_s": 0.3,
        }
    )  # fmt: skip
    clinician = login(Role.clinician)
    use(tight)
    assert clinician.get("/api/v1/conversations").status_code == 200
    portal = clinician.portal
    assert portal is not None

    async def hold_database() -> Any:
        return await db.engine(tight).connect()

    held = portal.call(hold_database)
    full = clinician.get("/api/v1/conversations")
    portal.call(held.close)
    assert full.status_code == 503 and full.headers["Retry-After"]
    assert full.json()["down"] == ["database"] and "at capacity" in full.json()["detail"]
    assert clinician.get("/api/v1/conversations").status_code == 200

    async def hold_redis() -> Any:
        return await redis_client.redis_for(tight).connection_pool.get_connection()

    connection = portal.call(hold_redis)
    full = clinician.get("/api/v1/conversations")

    async def release() -> None:
        await redis_client.redis_for(tight).connection_pool.release(connection)

    portal.call(release)
    assert full.status_code == 503
    assert full.json()["down"] == ["redis"] and "at capacity" in full.json()["detail"]
    assert clinician.get("/api/v1/conversations").status_code == 200
    portal.call(db.dispose_all)
    done_with(clinician)


def test_connections_redis_dropped_are_reopened_not_a_503(
    login: Callable[..., TestClient], settings: Settings, redis_server: Any
) -> None:
    """Redis restarted (an upgrade, a failover): every pooled connection is dead. The
    next requests reconnect; none is a 503 "redis is unavailable" for a Redis that is up."""
    import redis as sync_redis

    from app import redis_client
    from tests.app.test_chat import done_with, use

    small = settings.model_copy(update={"redis_pool_size": 4})
    clinician = login(Role.clinician)
    use(small)
    portal = clinician.portal
    assert portal is not None

    async def open_every_connection() -> None:
        pool = redis_client.redis_for(small).connection_pool
        held = [await pool.get_connection() for _ in range(4)]
        for connection in held:
            await pool.release(connection)

    portal.call(open_every_connection)
    admin = sync_redis.Redis.from_url(redis_server.url, ssl_ca_certs=str(redis_server.ca_cert))
    killed = admin.client_kill_filter(_type="normal", skipme=True)
    admin.close()
    assert killed >= 4
    for _ in range(6):  # more requests than dead connections
        response = clinician.get("/api/v1/conversations")
        assert response.status_code == 200, response.text
    done_with(clinician)
