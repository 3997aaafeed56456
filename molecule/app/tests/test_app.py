"""app: the venv of the version, the sandboxed unit as clinchat-app, the
password only as a systemd credential; /health, and /health/ready that
follows PostgreSQL."""

import json
import os
import re
import shlex
import subprocess
import time
from pathlib import Path

import pytest
from labtest import http_get, lab_host

BASE = "http://127.0.0.1:8000"
BUNDLE = Path(os.environ.get("CLINCHAT_BUNDLE_DIR", "/var/cache/clinchat/bundle"))
# The version the bundle built: the project's plus the build id (0.1.0+b1a2b3c4d5e6).
VERSION = json.loads((BUNDLE / "manifest.json").read_text())["python"]["project_version"]


@pytest.fixture(scope="module")
def host():
    return lab_host("mol-app")


def test_the_version_venv_is_current(host):
    assert re.fullmatch(r"0\.1\.0\+b[0-9a-f]{12}", VERSION), VERSION
    assert host.file("/opt/clinchat/app/current").linked_to == f"/opt/clinchat/app/{VERSION}"
    assert host.file(f"/opt/clinchat/app/{VERSION}/bin/gunicorn").is_file
    assert host.file(f"/opt/clinchat/app/{VERSION}").user == "root"


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
    assert json.loads(http_get(host, f"{BASE}/version")["body"]) == {"version": VERSION}
    assert http_get(host, f"{BASE}/metrics")["status"] == 200


def wait_for_database(host, state, timeout_s=30):
    deadline = time.monotonic() + timeout_s
    body = json.loads(http_get(host, f"{BASE}/health/ready")["body"])
    while body["checks"]["database"] != state and time.monotonic() < deadline:
        time.sleep(1)
        body = json.loads(http_get(host, f"{BASE}/health/ready")["body"])
    return body


def test_ready_with_the_database_over_verified_tls(host):
    body = wait_for_database(host, "up")
    # Redis, Vault and the serving are other roles' (not deployed by this
    # scenario): in production, unready until they are, and named.
    assert body == {
        "status": "unavailable",
        "checks": {
            "database": "up",
            "redis": "not configured",
            "vault": "not configured",
            "serving": "not configured",
        },
        "down": [],
        "not_configured": ["redis", "vault", "serving"],
    }
    env = host.file("/etc/clinchat/app.env").content_string
    assert "CLINCHAT_DB_SSLMODE=verify-full" in env


def test_ready_says_503_naming_the_database_when_it_is_down(host):
    host.check_output("systemctl stop postgresql")
    try:
        assert wait_for_database(host, "down")["down"] == ["database"]
    finally:
        host.check_output("systemctl start postgresql")
    assert wait_for_database(host, "up")["down"] == []


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


def psql(host, user, sql, password_file):
    """psql over verified TLS to the scenario's database, as a login role."""
    return host.run(
        f"PGPASSWORD=$(cat {password_file}) psql 'host=mol-app dbname=clinchat user={user} "
        "sslmode=verify-full sslrootcert=/etc/clinchat/pki/ca.crt' -XAtq -v ON_ERROR_STOP=1 "
        f"-c {shlex.quote(sql)}"
    )


OWNER_PASSWORD = "/etc/clinchat/credentials/clinchat_db_owner_password"
APP_PASSWORD = "/etc/clinchat/credentials/clinchat_db_password"


def test_migrations_ran_as_the_schema_owner(host):
    """The migrations unit (as clinchat_owner) made the schema; the service's role
    owns nothing and cannot change the audit trail."""
    tables = psql(
        host,
        "clinchat_owner",
        "SELECT tableowner FROM pg_tables WHERE tablename = 'audit_events'",
        OWNER_PASSWORD,
    )
    assert tables.rc == 0, tables.stderr
    assert tables.stdout.strip() == "clinchat_owner"
    insert_only = psql(host, "clinchat_app", "DELETE FROM audit_events", APP_PASSWORD)
    assert insert_only.rc != 0
    assert "permission denied" in insert_only.stderr
    assert psql(host, "clinchat_app", "SELECT count(*) FROM audit_events", APP_PASSWORD).rc == 0
    status = host.run("systemctl show clinchat-app-migrate -p Result -p ExecMainStatus --value")
    assert status.stdout.split() == ["success", "0"], status.stdout


def test_the_owner_password_is_the_migrations_unit_only(host):
    service = host.file("/etc/systemd/system/clinchat-app.service").content_string
    migrate = host.file("/etc/systemd/system/clinchat-app-migrate.service").content_string
    assert "clinchat_db_owner_password" in migrate
    assert "clinchat_db_owner_password" not in service
    assert "Requires=clinchat-app-migrate.service" in service


def test_the_worker_waits_for_redis(host):
    """The worker's queue is in Redis, which this scenario does not deploy: the
    unit is installed and stays stopped (the split lab's e2e runs it)."""
    worker = host.service("clinchat-app-worker")
    assert host.file("/etc/systemd/system/clinchat-app-worker.service").is_file
    assert not worker.is_running and not worker.is_enabled


def converge(tmp_path, *args):
    """The scenario's converge playbook (its drift report aside)."""
    env = os.environ | {"CLINCHAT_CHECK_DRIFT_FILE": str(tmp_path / "drift.json")}
    playbook = Path(os.environ["MOLECULE_SCENARIO_DIRECTORY"]) / "converge.yml"
    return subprocess.run(
        ["ansible-playbook", "-i", os.environ["MOLECULE_INVENTORY_FILE"], *args, str(playbook)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )


def test_a_broken_unit_never_replaces_the_live_one(host, tmp_path):
    """The role writes each unit with validate: (systemd-analyze verify): a unit
    whose programs do not exist fails the run, and the live units stay."""
    units = {
        name: host.file(f"/etc/systemd/system/{name}.service").content_string
        for name in ("clinchat-app", "clinchat-app-migrate", "clinchat-app-worker")
    }
    result = converge(
        tmp_path, "--tags", "app_service", "-e", '{"__app_current": "/opt/clinchat/nowhere"}'
    )
    assert result.returncode != 0, result.stdout[-3000:]
    output = result.stdout + result.stderr
    assert "clinchat-admin is not executable" in output, output[-3000:]
    for name, before in units.items():
        assert host.file(f"/etc/systemd/system/{name}.service").content_string == before, name
    assert host.service("clinchat-app").is_running
