"""The auditor's run on the converged split lab (docs/AUDIT.md).

A clean audit: every control of every role that ran on a host is in its report
and none drifted, and the audit changed nothing on any host (files, packages,
running services compared before and after). Then drift planted by hand, the
way it happens on a real host, is reported under its control, the run exits 2
with audit_fail_on_drift, and the next site.yml run puts it right.

Runs before test_site.py (file order): its last test re-converges the lab, and
test_site's second run and check mode then prove nothing of the drift is left.
"""

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from tests.audit.controls import missing_from_report, tasks_with_controls
from tests.e2e.conftest import REPO
from tests.e2e.lab_client import APP_HOST, DATA_HOST, WEB_HOST, playbook, ssh

HOSTS = {
    "lab-web1": "10.213.0.11",
    "lab-app1": "10.213.0.12",
    "lab-data1": "10.213.0.13",
    "lab-gpu1": "10.213.0.14",
    "lab-dir1": "10.213.0.15",
}
# The roles each host runs in site.yml (inventories/lab/lab.yml's groups).
COMMON = {"base", "harden", "firewall"}
ROLES = {
    "lab-web1": COMMON | {"pki", "nginx"},
    "lab-app1": COMMON | {"pki", "app"},
    "lab-data1": COMMON | {"pki", "openbao", "postgresql", "redis"},
    "lab-gpu1": COMMON | {"pki", "nvidia", "serving"},
    "lab-dir1": COMMON | {"pki", "lab_directory"},
}
# A tasks file another role runs (include_role tasks_from) reports on that role's hosts.
INCLUDED_BY = {"roles/openbao/tasks/approle_credentials.yml": "app"}
# What the audit must not change: files of /etc and the local admin tools by
# content, the versioned venvs and models by name, size and mode (hashing torch
# on every run would be slow and says nothing more), the package set, and
# the services running (per-login user managers come and go with SSH).
SNAPSHOT = r"""
find /etc /usr/local -xdev -type f -print0 | sort -z | xargs -0 sha256sum
find /opt/clinchat -xdev -printf '%p %s %m %u %g\n' 2>/dev/null | sort
dpkg-query -W -f '${Package} ${Version} ${db:Status-Abbrev}\n'
systemctl list-units --type=service --state=running --no-legend --plain \
  | awk '{print $1}' | grep -v '^user' | sort
"""
ARTIFACTS = REPO / "artifacts" / "audit"


def audit(report_dir: Path, *extra: str) -> tuple[int, dict, str, float]:
    """playbooks/audit.yml on the lab: (exit status, report.json, output, seconds)."""
    started = time.monotonic()
    result = subprocess.run(  # noqa: S603
        ["ansible-playbook", "playbooks/audit.yml", "-i", "inventories/lab", "--check", "--diff"]  # noqa: S607
        + list(extra),
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, "CLINCHAT_AUDIT_DIR": str(report_dir)},
        check=False,
    )
    seconds = time.monotonic() - started
    report = json.loads((report_dir / "report.json").read_text())
    return result.returncode, report, (result.stdout + result.stderr)[-8000:], seconds


def snapshot() -> dict[str, str]:
    return {name: ssh(address, SNAPSHOT) for name, address in HOSTS.items()}


def not_passing(report: dict, host: str) -> list[str]:
    return [
        f"{c['id']}: {c['status']} ({c.get('reason') or ''})"
        for c in report["hosts"][host]["controls"]
        if c["status"] not in ("pass", "not applicable")
    ]


@pytest.fixture(scope="module")
def clean_audit(converged: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[int, dict, str]:
    before = snapshot()
    rc, report, output, seconds = audit(tmp_path_factory.mktemp("audit"))
    after = snapshot()
    # Side by side with the converge's own check mode, on the same lab and load.
    started = time.monotonic()
    recap, check_output = playbook("site.yml", "-i", str(converged), "--check")
    check_seconds = time.monotonic() - started
    assert recap, check_output
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "timing.json").write_text(
        json.dumps(
            {
                "hosts": len(HOSTS),
                "audit_seconds": round(seconds, 1),
                "site_check_seconds": round(check_seconds, 1),
                "controls": report["summary"]["total"],
            },
            indent=2,
        )
    )
    for host in HOSTS:
        assert before[host] == after[host], f"the audit changed {host}"
    return rc, report, output


def test_the_audit_of_a_converged_lab_passes(clean_audit: tuple[int, dict, str]) -> None:
    rc, report, output = clean_audit
    assert rc == 0, output
    assert set(report["hosts"]) == set(HOSTS)
    drifted = {host: not_passing(report, host) for host in HOSTS}
    assert drifted == dict.fromkeys(HOSTS, []), output


def test_every_control_of_every_role_that_ran_is_in_the_report(
    clean_audit: tuple[int, dict, str],
) -> None:
    _, report, _ = clean_audit
    controls: dict[str, set[str]] = {}
    for task in tasks_with_controls(sorted(REPO.glob("roles/*/tasks/*.yml"))):
        role = INCLUDED_BY.get(task.file, task.role)
        controls.setdefault(role, set()).update(ref.id for ref in task.controls)
    expected = {
        host: set().union(*(controls.get(r, set()) for r in roles)) for host, roles in ROLES.items()
    }
    missing = {host: sorted(missing_from_report(report, host, expected[host])) for host in HOSTS}
    assert missing == dict.fromkeys(HOSTS, [])


def test_planted_drift_is_reported_under_its_control_and_the_next_run_removes_it(
    clean_audit: tuple[int, dict, str], converged: Path, tmp_path: Path
) -> None:
    # What an administrator might do by hand, one per tier.
    ssh(
        WEB_HOST,
        "sed -i 's/^PasswordAuthentication no$/PasswordAuthentication yes/' /etc/ssh/sshd_config",
    )
    ssh(
        DATA_HOST,
        "sed -i \"s/^ssl_min_protocol_version = .*/ssl_min_protocol_version = 'TLSv1'/\" "
        "/etc/postgresql/17/main/conf.d/50-clinchat.conf"
        " && nft add rule inet clinchat input tcp dport 2323 accept comment planted",
    )
    ssh(
        APP_HOST,
        "echo CLINCHAT_SESSION_IDLE_TIMEOUT_S=86400 >> /etc/clinchat/app.env"
        " && systemctl restart clinchat-app",
    )

    rc, report, output, _ = audit(tmp_path, "-e", "audit_fail_on_drift=true")
    assert rc == 2, output

    def drifted(host: str) -> dict[str, list[str]]:
        return {
            c["id"]: [t["name"] for t in c["tasks"]]
            for c in report["hosts"][host]["controls"]
            if c["status"] == "drift"
        }

    web, data, app = drifted("lab-web1"), drifted("lab-data1"), drifted("lab-app1")
    assert "CLINCHAT-SSH-1" in web, web
    assert "4.3.10" in data, data
    assert any("TLS from" in name for names in data.values() for name in names), data
    assert "CLINCHAT-APP-2" in app, app
    assert any("environment file" in name for names in app.values() for name in names), app
    assert not drifted("lab-gpu1") and not drifted("lab-dir1")

    # The next run puts every host back (test_site then proves nothing is left).
    recap, output = playbook("site.yml", "-i", str(converged))
    assert recap and all(r["failed"] == 0 for r in recap.values()), output
    assert ssh(WEB_HOST, "sshd -T").count("\npasswordauthentication no\n") == 1
    assert "planted" not in ssh(DATA_HOST, "nft list ruleset")
    assert "86400" not in ssh(APP_HOST, "cat /etc/clinchat/app.env")
