"""Shared by every scenario: molecule's `check` step (the converge playbook
with --check, right after converge and idempotence) reported no change."""

import json
import os
from pathlib import Path

import pytest


def test_check_mode_reports_no_drift() -> None:
    report = Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"]) / "check-drift.json"
    if not report.exists():
        pytest.skip("no check step ran before verify")
    assert json.loads(report.read_text()) == []
