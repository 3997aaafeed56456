"""Health, readiness, metrics and version against the real services.

A dependency is taken away by pointing a copy of the settings at a closed
loopback port (or at a listener that never answers), so the shared services
stay up for the other tests; the database is also stopped for real, and Vault
sealed and unsealed again.
"""

import socket
import time
from collections.abc import Callable, Iterator
from urllib.parse import urlsplit

import pytest
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY

from app import __version__
from app.settings import Settings, get_settings
from tests.app.test_crypto import wait_active
from tests.services.openbao import PrivateOpenBao
from tests.services.postgres import PrivatePostgres, free_port

ALL_UP = {"database": "up", "redis": "up", "vault": "up", "serving": "up"}


def closed(name: str, settings: Settings) -> dict[str, object]:
    """Settings changes that point ``name`` at a loopback port where nothing listens."""
    port = free_port()
    redis = urlsplit(settings.redis_url)
    login = redis.netloc.rpartition("@")[0]  # the ACL user and its password
    changes: dict[str, dict[str, object]] = {
        "database": {"db_port": port},
        "redis": {"redis_url": redis._replace(netloc=f"{login}@127.0.0.1:{port}").geturl()},
        "vault": {"vault_addr": f"https://127.0.0.1:{port}"},
        "serving": {"serving_url": f"http://127.0.0.1:{port}/v1"},
    }
    return changes[name]


@pytest.fixture
def use(settings: Settings) -> Callable[..., Settings]:
    """``use(**changes)``: the app answers with a copy of the settings so changed."""
    from app.main import app

    def apply(**changes: object) -> Settings:
        changed = settings.model_copy(update=changes)
        app.dependency_overrides[get_settings] = lambda: changed
        return changed

    return apply


def failures(dependency: str) -> float:
    value = REGISTRY.get_sample_value(
        "clinchat_dependency_check_failures_total", {"dependency": dependency}
    )
    return value or 0.0


def test_liveness(client: TestClient) -> None:
    response = client.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_ready_when_every_dependency_answers(client: TestClient) -> None:
    response = client.get("/health/ready")
    assert response.status_code == 200, response.text
    assert response.json() == {"status": "ok", "checks": ALL_UP, "down": [], "not_configured": []}


@pytest.mark.parametrize("name", ["database", "redis", "vault", "serving"])
def test_one_down_is_named_alone(
    client: TestClient, settings: Settings, use: Callable[..., Settings], name: str
) -> None:
    before = failures(name)
    use(**closed(name, settings))
    response = client.get("/health/ready")
    assert response.status_code == 503
    assert response.json() == {
        "status": "unavailable",
        "checks": ALL_UP | {name: "down"},
        "down": [name],
        "not_configured": [],
    }
    assert failures(name) == before + 1
    assert client.get("/health").status_code == 200, "liveness does not depend on them"


def test_every_one_down_is_named(
    client: TestClient, settings: Settings, use: Callable[..., Settings]
) -> None:
    changes: dict[str, object] = {}
    for name in ("database", "redis", "vault", "serving"):
        changes |= closed(name, settings)
    use(**changes)
    response = client.get("/health/ready")
    assert response.status_code == 503
    assert sorted(response.json()["down"]) == ["database", "redis", "serving", "vault"]
    assert client.get("/health").json() == {"status": "ok"}


def test_not_configured_is_reported_and_not_unready_in_development(
    client: TestClient, use: Callable[..., Settings]
) -> None:
    use(redis_url="", vault_addr="", serving_url="", environment="development")
    response = client.get("/health/ready")
    assert response.status_code == 200, response.text
    assert response.json()["checks"] == {
        "database": "up",
        "redis": "not configured",
        "vault": "not configured",
        "serving": "not configured",
    }
    assert response.json()["not_configured"] == []


@pytest.mark.parametrize("missing", ["redis_url", "vault_addr", "serving_url"])
def test_not_configured_is_unready_in_production(
    client: TestClient, use: Callable[..., Settings], missing: str
) -> None:
    use(environment="production", **{missing: ""})
    response = client.get("/health/ready")
    assert response.status_code == 503, response.text
    name = missing.split("_")[0]
    assert response.json()["not_configured"] == [name]
    assert response.json()["down"] == []
    assert response.json()["checks"][name] == "not configured"


def test_production_with_everything_configured_is_ready(
    client: TestClient, use: Callable[..., Settings]
) -> None:
    use(environment="production")
    response = client.get("/health/ready")
    assert response.status_code == 200, response.text
    assert response.json()["not_configured"] == []


def test_local_keys_need_no_vault(client: TestClient, use: Callable[..., Settings]) -> None:
    use(encryption_mode="local", vault_addr="https://127.0.0.1:1")
    response = client.get("/health/ready")
    assert response.status_code == 200, response.text
    assert response.json()["checks"]["vault"] == "not used"


def test_a_sealed_vault_is_down(client: TestClient, openbao: PrivateOpenBao) -> None:
    with openbao.client(openbao.root_token) as api:
        api.put("/sys/seal").raise_for_status()
    try:
        response = client.get("/health/ready")
        assert response.status_code == 503
        assert response.json()["down"] == ["vault"]
    finally:
        wait_active(openbao)  # unseals it
    assert client.get("/health/ready").status_code == 200


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A loopback port that accepts connections and never answers."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield listener.getsockname()[1]


def test_checks_run_at_once_with_a_short_timeout(
    client: TestClient, use: Callable[..., Settings], silent_port: int
) -> None:
    use(
        vault_addr=f"https://127.0.0.1:{silent_port}",
        serving_url=f"http://127.0.0.1:{silent_port}/v1",
    )
    started = time.monotonic()
    response = client.get("/health/ready")
    elapsed = time.monotonic() - started
    assert response.status_code == 503
    assert sorted(response.json()["down"]) == ["serving", "vault"]
    # two checks of 2 s each, run together: about 2 s, not 4
    assert 1.9 < elapsed < 3.9, elapsed


def test_a_serving_answering_an_error_is_down(
    client: TestClient, settings: Settings, use: Callable[..., Settings]
) -> None:
    """Answering is not enough: the model list must come back (here a 404)."""
    use(serving_url=settings.serving_url.rstrip("/") + "/no-such-prefix")
    response = client.get("/health/ready")
    assert response.json()["down"] == ["serving"]


def test_down_logs_name_the_exception_type_only(
    client: TestClient,
    settings: Settings,
    use: Callable[..., Settings],
    caplog: pytest.LogCaptureFixture,
) -> None:
    changed = use(**closed("vault", settings))
    with caplog.at_level("WARNING", logger="app.routers.health"):
        client.get("/health/ready")
    lines = [r.getMessage() for r in caplog.records if r.name == "app.routers.health"]
    assert lines == ["readiness: vault down (ConnectError)"]
    assert changed.vault_addr not in caplog.text


def test_not_ready_names_the_database_when_it_is_down(
    client: TestClient, postgres: PrivatePostgres
) -> None:
    postgres.stop()
    try:
        response = client.get("/health/ready")
        assert response.status_code == 503
        assert response.json()["down"] == ["database"]
    finally:
        postgres.start()
    assert client.get("/health/ready").status_code == 200


def test_wrong_password_is_not_ready(client: TestClient, settings: Settings) -> None:
    from app.main import app
    from app.settings import get_settings

    app.dependency_overrides[get_settings] = lambda: settings.model_copy(
        update={"db_password": "not-the-password"}
    )
    assert client.get("/health/ready").status_code == 503


def test_tls_is_verified(client: TestClient, settings: Settings, tmp_path) -> None:
    """A server certificate from another CA is refused (verify-full), so not ready."""
    from app.main import app
    from app.settings import get_settings
    from tests.services.pki import make_pki

    other_ca = make_pki(tmp_path).ca_cert
    app.dependency_overrides[get_settings] = lambda: settings.model_copy(
        update={"db_sslrootcert": str(other_ca)}
    )
    assert client.get("/health/ready").status_code == 503


def test_metrics_expose_the_app_metrics(client: TestClient) -> None:
    body = client.get("/metrics").text
    for name in (
        "clinchat_http_requests_total",
        "clinchat_http_request_duration_seconds",
        "clinchat_dependency_check_failures_total",
        "clinchat_audit_write_failures_total",
        "clinchat_phi_detections_total",
        "clinchat_retrieval_duration_seconds",
    ):
        assert f"# TYPE {name}" in body or f"# HELP {name}" in body, name


def test_metrics_count_requests_by_route_template(client: TestClient) -> None:
    client.get("/health")
    client.get("/no/such/page/with-a-name-in-it")
    body = client.get("/metrics").text
    assert 'clinchat_http_requests_total{method="GET",route="/health",status="200"}' in body
    assert "with-a-name-in-it" not in body
    assert 'route="<unmatched>"' in body


def test_version(client: TestClient) -> None:
    assert client.get("/version").json() == {"version": __version__}
