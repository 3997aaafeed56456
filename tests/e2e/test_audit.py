"""The auditor's run on the converged split lab (docs/AUDIT.md).

Days after the converge (package lists two days old), playbooks/audit.yml
reports every control of every role that ran on a host, none drifted, its
check-mode recap changes nothing (it is site.yml's stages in --check --diff:
this is the end-to-end tier's check-mode test), and the audit changed nothing
on any host (files, packages, running services compared before and after).
Planted drift and the timing beside site.yml --check: tests/e2e/drift
(`make audit-drift`).
"""

import json
import os
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from tests.audit.controls import missing_from_report, tasks_with_controls
from tests.e2e.conftest import REPO, SPEC
from tests.e2e.lab_client import RECAP, ssh

# The lab's hosts and the roles each runs in site.yml, from its spec's groups.
LAB_HOSTS = yaml.safe_load(SPEC.read_text())["hosts"]
HOSTS = {name: host["address"] for name, host in LAB_HOSTS.items()}
COMMON = {"base", "harden", "firewall", "pki", "monitoring"}  # monitoring: node exporter
ROLES_OF_GROUP = {
    "web": {"nginx"},
    "app": {"app"},
    "db": {"postgresql"},
    "cache": {"redis"},
    "vault": {"openbao"},
    "gpu": {"nvidia", "serving"},
    "directory": {"lab_directory"},
    "monitoring": {"monitoring"},
}
ROLES = {
    name: COMMON.union(*(ROLES_OF_GROUP[group] for group in host["groups"]))
    for name, host in LAB_HOSTS.items()
}
# A tasks file other roles run (include_role tasks_from) reports on their hosts.
INCLUDED_BY = {
    "roles/openbao/tasks/approle_credentials.yml": ("app", "serving", "openbao"),
    # The venvs from the signed bundle: the roles that install Python.
    "roles/base/tasks/bundle_venv.yml": ("app", "serving", "openbao"),
}
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
# What the apt module reads as the package lists' age.
APT_LISTS, APT_STAMP = "/var/lib/apt/lists", "/var/lib/apt/periodic/update-success-stamp"


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
    # An auditor comes days after the converge: package lists two days old are no drift.
    for address in HOSTS.values():
        ssh(address, f"touch -c -d '2 days ago' {APT_LISTS} {APT_STAMP}")
    before = snapshot()
    rc, report, output, seconds = audit(tmp_path_factory.mktemp("audit"))
    after = snapshot()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    # The end of the audit's output: profile_tasks' slowest tasks, for tuning.
    (ARTIFACTS / "audit-output-tail.txt").write_text(output)
    (ARTIFACTS / "e2e-timing.json").write_text(
        json.dumps({"hosts": len(HOSTS), "audit_seconds": round(seconds, 1)}, indent=2)
    )
    for host in HOSTS:
        assert before[host] == after[host], f"the audit changed {host}"
    return rc, report, output


def test_the_audit_of_a_converged_lab_passes_and_changes_nothing(
    clean_audit: tuple[int, dict, str],
) -> None:
    rc, report, output = clean_audit
    assert rc == 0, output
    recap = {m["host"]: int(m["changed"]) for m in RECAP.finditer(output)}
    assert set(HOSTS) <= set(recap), output
    assert {h: recap[h] for h in HOSTS} == dict.fromkeys(HOSTS, 0), output
    assert set(report["hosts"]) == set(HOSTS)
    drifted = {host: not_passing(report, host) for host in HOSTS}
    assert drifted == dict.fromkeys(HOSTS, []), output


def test_every_control_of_every_role_that_ran_is_in_the_report(
    clean_audit: tuple[int, dict, str],
) -> None:
    _, report, _ = clean_audit
    controls: dict[str, set[str]] = {}
    for task in tasks_with_controls(sorted(REPO.glob("roles/*/tasks/*.yml"))):
        for role in INCLUDED_BY.get(task.file, (task.role,)):
            controls.setdefault(role, set()).update(ref.id for ref in task.controls)
    expected = {
        host: set().union(*(controls.get(r, set()) for r in roles)) for host, roles in ROLES.items()
    }
    missing = {host: sorted(missing_from_report(report, host, expected[host])) for host in HOSTS}
    assert missing == dict.fromkeys(HOSTS, [])
