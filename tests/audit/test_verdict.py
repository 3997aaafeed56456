"""Exit status: audit.yml refuses a run without --check; with
audit_fail_on_drift the verdict play fails on drift; without the callback
there is no report and the verdict says so."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from .conftest import FIXTURES, REPO, make_hosts, run_playbook

AUDIT = REPO / "playbooks/audit.yml"


@pytest.fixture
def base(tmp_path: Path) -> Path:
    make_hosts(tmp_path)
    return tmp_path


@pytest.fixture
def empty_inventory(tmp_path: Path) -> Path:
    path = tmp_path / "empty.yml"
    path.write_text("all:\n  hosts: {}\n")
    return path


def test_fail_on_drift_exits_non_zero(base: Path) -> None:
    run = run_playbook(
        FIXTURES / "controls.yml", base, "--check", "--diff", "-e", "audit_fail_on_drift=true",
        env={"CLINCHAT_AUDIT": "1"},
    )  # fmt: skip
    assert run.rc == 2, run.output
    assert (
        "6 controls drifted and 1 are in error (of 16); 0 tasks outside any control failed"
        in run.output
    )
    assert run.json_path.is_file()


def test_fail_on_drift_passes_a_compliant_host(base: Path) -> None:
    run = run_playbook(
        FIXTURES / "controls.yml", base, "--check", "--diff", "--limit", "fixture-a",
        "-e", "audit_fail_on_drift=true", env={"CLINCHAT_AUDIT": "1"},
    )  # fmt: skip
    assert run.rc == 0, run.output
    assert "No drift: 8 pass, 0 not applicable" in run.output


def test_without_the_callback_the_verdict_says_there_is_no_report(base: Path) -> None:
    run = run_playbook(
        FIXTURES / "controls.yml", base, "--check", "--diff",
        env={"CLINCHAT_AUDIT": "1", "ANSIBLE_CALLBACKS_ENABLED": "ansible.posix.profile_tasks"},
    )  # fmt: skip
    assert run.rc == 2
    assert "No report from this run: enable the callback" in run.output
    assert not run.json_path.exists()


def test_the_callback_is_inert_outside_an_audit(base: Path) -> None:
    run = run_playbook(FIXTURES / "controls.yml", base, "--check", "--diff")
    assert "CLINCHAT AUDIT" not in run.output
    assert not run.json_path.exists()


def test_audit_refuses_to_run_without_check_mode(base: Path) -> None:
    run = run_playbook(AUDIT, base)
    assert run.rc == 2
    assert "playbooks/audit.yml runs only in check mode with diff" in run.output
    # The refusal ends the run: no stage starts.
    assert "PLAY [Preflight" not in run.output and "PLAY [Audit | Verdict" not in run.output
    assert not run.json_path.exists()


def test_audit_refuses_check_mode_without_diff(base: Path) -> None:
    run = run_playbook(AUDIT, base, "--check")
    assert run.rc == 2 and "runs only in check mode with diff" in run.output


def test_audit_of_an_empty_inventory_writes_an_empty_report(
    base: Path, empty_inventory: Path
) -> None:
    run = run_playbook(
        AUDIT,
        base,
        "--check",
        "--diff",
        "-e",
        "audit_fail_on_drift=true",
        inventory=empty_inventory,
    )
    assert run.rc == 0, run.output
    report = json.loads(run.json_path.read_text())
    assert report["hosts"] == {} and report["summary"]["total"]["total"] == 0
    assert report["run"]["playbook"].endswith("playbooks/audit.yml")
    assert report["bundle"] is None
