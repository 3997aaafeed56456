"""Every TLS listener of the split lab meets Mozilla's "intermediate" profile
(sslyze --mozilla_config=intermediate, from the controller, the chain
verified against the lab CA): nginx, the app (nginx's hop), PostgreSQL,
Redis, OpenBao, the model server, the lab's directory, and monitoring's
Prometheus and node exporter (one host's: every host has the same web.yml)."""

import sys
from pathlib import Path

import pytest

from tests.e2e.conftest import REPO
from tests.e2e.lab_client import LAB_CA

sys.path.insert(0, str(REPO / "molecule" / "shared"))
from tlscheck import mozilla_intermediate  # noqa: E402

LISTENERS = {
    "nginx": ("10.213.0.11", 443, None),
    "app": ("10.213.0.12", 8000, None),
    "postgresql": ("10.213.0.13", 5432, "postgres"),
    "redis": ("10.213.0.13", 6379, None),
    "openbao": ("10.213.0.13", 8200, None),
    "serving": ("10.213.0.14", 8081, None),
    "directory": ("10.213.0.15", 636, None),
    "prometheus": ("10.213.0.15", 9090, None),
    "node-exporter": ("10.213.0.13", 9100, None),
}


@pytest.mark.parametrize("name", sorted(LISTENERS))
def test_listener_meets_mozilla_intermediate(converged: Path, name: str) -> None:
    host, port, starttls = LISTENERS[name]
    mozilla_intermediate(host, port, starttls=starttls, ca_file=str(LAB_CA))
