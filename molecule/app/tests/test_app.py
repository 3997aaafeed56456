"""app: the venv of the version, the sandboxed unit as clinchat-app, the
password only as a systemd credential; /health, and /health/ready that
follows PostgreSQL."""

import json
import re
import time

import pytest
from labtest import http_get, lab_host

BASE = "http://127.0.0.1:8000"


@pytest.fixture(scope="module")
def host():
    return lab_host("mol-app")


def wait_for_ready(host, status, timeout_s=30):
    deadline = time.monotonic() + timeout_s
    response = http_get(host, f"{BASE}/health/ready")
    while response["status"] != status and time.monotonic() < deadline:
        time.sleep(1)
        response = http_get(host, f"{BASE}/health/ready")
    return response


def test_the_version_venv_is_current(host):
    assert host.file("/opt/clinchat/app/current").linked_to == "/opt/clinchat/app/0.1.0"
    assert host.file("/opt/clinchat/app/0.1.0/bin/gunicorn").is_file
    assert host.file("/opt/clinchat/app/0.1.0").user == "root"


def test_the_service_runs_as_clinchat_app(host):
    service = host.service("clinchat-app")
    assert service.is_running and service.is_enabled
    pid = host.check_output("systemctl show -p MainPID --value clinchat-app")
    assert host.check_output(f"ps -o user= -p {pid}") == "clinchat-app"
    user = host.user("clinchat-app")
    assert user.shell == "/usr/sbin/nologin"
    assert not host.file(user.home).exists


def test_health_answers(host):
    response = http_get(host, f"{BASE}/health")
    assert response["status"] == 200
    assert json.loads(response["body"]) == {"status": "ok"}
    assert json.loads(http_get(host, f"{BASE}/version")["body"]) == {"version": "0.1.0"}
    assert http_get(host, f"{BASE}/metrics")["status"] == 200


def test_ready_with_the_database_over_verified_tls(host):
    response = wait_for_ready(host, 200)
    assert response["status"] == 200, response
    # Redis, Vault and the serving are other roles' (not deployed by this scenario)
    assert json.loads(response["body"])["checks"] == {
        "database": "up",
        "redis": "not configured",
        "vault": "not configured",
        "serving": "not configured",
    }
    env = host.file("/etc/clinchat/app.env").content_string
    assert "CLINCHAT_DB_SSLMODE=verify-full" in env


def test_ready_says_503_naming_the_database_when_it_is_down(host):
    host.check_output("systemctl stop postgresql")
    try:
        response = wait_for_ready(host, 503)
        assert response["status"] == 503
        assert json.loads(response["body"])["down"] == ["database"]
    finally:
        host.check_output("systemctl start postgresql")
    assert wait_for_ready(host, 200)["status"] == 200


def test_the_password_is_a_credential_only(host):
    env = host.file("/etc/clinchat/app.env")
    assert (env.user, env.group, env.mode) == ("root", "clinchat-app", 0o640)
    credential = host.file("/etc/clinchat/credentials/clinchat_db_password")
    assert (credential.user, credential.group, credential.mode) == ("root", "root", 0o600)
    password = credential.content_string
    assert password and password not in env.content_string
    unit = host.file("/etc/systemd/system/clinchat-app.service").content_string
    assert (
        "LoadCredential=clinchat_db_password:/etc/clinchat/credentials/clinchat_db_password" in unit
    )
    assert password not in unit
    assert password not in host.check_output("systemctl show clinchat-app -p Environment")


def test_the_sandbox_exposure_is_low(host):
    out = host.check_output("systemd-analyze security --no-pager clinchat-app.service")
    score = float(re.search(r"Overall exposure level for clinchat-app.service: ([0-9.]+)", out)[1])
    print(f"systemd-analyze security exposure: {score}")
    assert score <= 2.0, out
