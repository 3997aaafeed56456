"""site.yml on the multi-host lab: converge, idempotence, check, then the
appliance answers through nginx, and readiness follows the database."""

import re
import ssl
import subprocess
import time
from pathlib import Path

import httpx
import pytest
import yaml

from tests.e2e.conftest import REPO, run

WEB = "https://10.213.0.11"
DB_HOST = "10.213.0.12"
LAB_CA = Path("/var/lib/clinchat/pki/lab/ca.crt")
SSH_KEY = Path("/var/lib/clinchat-lab/ssh/id_ed25519")
RECAP = re.compile(
    r"^(?P<host>\S+)\s*:\s*ok=\d+\s+changed=(?P<changed>\d+)\s+unreachable=(?P<unreachable>\d+)\s+failed=(?P<failed>\d+)",
    re.M,
)


def playbook(*args: str) -> tuple[dict[str, dict[str, int]], str]:
    result = run("ansible-playbook", *args, check=False)
    output = result.stdout + result.stderr
    recap = {
        m["host"]: {k: int(m[k]) for k in ("changed", "unreachable", "failed")}
        for m in RECAP.finditer(output)
    }
    return recap, output if result.returncode == 0 else f"rc={result.returncode}\n{output[-6000:]}"


def ssh(host: str, command: str) -> None:
    subprocess.run(  # noqa: S603
        [
            "ssh",
            "-i",
            str(SSH_KEY),
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "LogLevel=ERROR",
            f"root@{host}",
            command,
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    )


def ready() -> httpx.Response:
    return httpx.get(
        f"{WEB}/health/ready", verify=ssl.create_default_context(cafile=LAB_CA), timeout=10
    )


def wait_for(status: int, timeout_s: float = 30) -> httpx.Response:
    deadline = time.monotonic() + timeout_s
    response = ready()
    while response.status_code != status and time.monotonic() < deadline:
        time.sleep(1)
        response = ready()
    return response


@pytest.fixture(scope="module")
def converged(lab: Path) -> Path:
    recap, output = playbook("site.yml", "-i", str(lab))
    assert recap and all(r["failed"] == 0 and r["unreachable"] == 0 for r in recap.values()), output
    return lab


def test_second_run_changes_nothing(converged: Path) -> None:
    recap, output = playbook("site.yml", "-i", str(converged))
    assert recap, output
    assert {h: r["changed"] for h, r in recap.items()} == dict.fromkeys(recap, 0), output


def test_check_mode_after_converge_reports_no_drift(converged: Path) -> None:
    recap, output = playbook("site.yml", "-i", str(converged), "--check")
    assert recap, output
    assert {h: r["changed"] for h, r in recap.items()} == dict.fromkeys(recap, 0), output


def test_ready_over_verified_tls(converged: Path) -> None:
    response = ready()
    assert response.status_code == 200, response.text
    # the stages that deploy Redis, Vault and the serving have not landed yet
    assert response.json()["checks"] == {
        "database": "up",
        "redis": "not configured",
        "vault": "not configured",
        "serving": "not configured",
    }


def test_http_redirects_to_https(converged: Path) -> None:
    response = httpx.get("http://10.213.0.11/health", timeout=10)
    assert response.status_code == 301
    assert response.headers["location"].startswith("https://")


def test_readiness_follows_the_database(converged: Path) -> None:
    ssh(DB_HOST, "systemctl stop postgresql")
    try:
        response = wait_for(503)
        assert response.status_code == 503
        assert response.json()["down"] == ["database"]
    finally:
        ssh(DB_HOST, "systemctl start postgresql")
    assert wait_for(200).status_code == 200


def test_unreachable_host_fails_alone(converged: Path, tmp_path: Path) -> None:
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(
        (converged / "hosts.yml").read_text() + "\n# a host that does not answer\n"
    )
    extra = tmp_path / "extra.yml"
    extra.write_text(
        "all:\n  hosts:\n    lab-gone:\n      ansible_host: 10.213.0.19\n"
        f"      ansible_user: root\n      ansible_ssh_private_key_file: {SSH_KEY}\n"
    )
    recap, output = playbook(
        str(REPO / "playbooks" / "preflight.yml"), "-i", str(inventory), "-i", str(extra)
    )
    assert recap["lab-gone"]["unreachable"] == 1, output
    assert "lab-gone" in output and "UNREACHABLE" in output
    assert all(
        r["unreachable"] == 0 and r["failed"] == 0 for h, r in recap.items() if h != "lab-gone"
    ), output


def test_missing_required_variable_fails_at_play_start_naming_it(
    converged: Path, tmp_path: Path
) -> None:
    """The lab inventory without the database password: the play stops before any change."""
    (tmp_path / "group_vars").mkdir()
    (tmp_path / "hosts.yml").write_text((converged / "hosts.yml").read_text())
    group_vars = yaml.safe_load((converged / "group_vars" / "all.yml").read_text())
    del group_vars["postgresql_app_password"]
    (tmp_path / "group_vars" / "all.yml").write_text(yaml.safe_dump(group_vars))
    recap, output = playbook(str(REPO / "playbooks" / "data.yml"), "-i", str(tmp_path))
    assert "postgresql_app_password" in output, output
    assert recap["lab-db1"]["failed"] == 1 and recap["lab-db1"]["changed"] == 0, output
