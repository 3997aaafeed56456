"""Fixtures for the app: a real PostgreSQL on loopback, the app bound to it."""

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.settings import Settings, get_settings
from tests.services.pki import TestPki, make_pki
from tests.services.postgres import PrivatePostgres


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


@pytest.fixture
def settings(postgres: PrivatePostgres, pki: TestPki) -> Settings:
    return Settings(
        environment="development",
        db_host="127.0.0.1",
        db_port=postgres.port,
        db_name=postgres.database,
        db_user=postgres.user,
        db_password=postgres.password,
        db_sslmode="verify-full",
        db_sslrootcert=str(pki.ca_cert),
    )


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    from app.main import app

    app.dependency_overrides[get_settings] = lambda: settings
    with TestClient(app) as test_client:
        yield test_client
    app.dependency_overrides.clear()
