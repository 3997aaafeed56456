"""Health, readiness, metrics and version against a real PostgreSQL."""

from fastapi.testclient import TestClient

from app import __version__
from app.settings import Settings
from tests.services.postgres import PrivatePostgres


def test_liveness(client: TestClient) -> None:
    response = client.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_ready_when_database_answers_over_tls(client: TestClient) -> None:
    response = client.get("/health/ready")
    assert response.status_code == 200, response.text
    assert response.json() == {"status": "ok", "checks": {"database": "up"}, "down": []}


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


def test_metrics_count_requests_by_route_template(client: TestClient) -> None:
    client.get("/health")
    client.get("/no/such/page/with-a-name-in-it")
    body = client.get("/metrics").text
    assert 'clinchat_http_requests_total{method="GET",route="/health",status="200"}' in body
    assert "with-a-name-in-it" not in body
    assert 'route="<unmatched>"' in body


def test_version(client: TestClient) -> None:
    assert client.get("/version").json() == {"version": __version__}
