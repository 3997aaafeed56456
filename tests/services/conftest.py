"""The services' own tests: the shared fixtures, and a PostgreSQL for pgvector."""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.services.fixtures import *  # noqa: F403
from tests.services.fixtures import report_startup
from tests.services.pki import TestPki
from tests.services.postgres import PrivatePostgres


@pytest.fixture(scope="session")
def postgres(pki: TestPki, pytestconfig: pytest.Config) -> Iterator[PrivatePostgres]:
    root = Path(tempfile.mkdtemp(prefix="clinchat-pg-"))
    server = PrivatePostgres(root=root, pki=pki)
    try:
        started = time.monotonic()
        server.init()
        report_startup(pytestconfig, "postgres", started)
        yield server
    finally:
        if server.is_running():
            server.stop()
        shutil.rmtree(root, ignore_errors=True)
