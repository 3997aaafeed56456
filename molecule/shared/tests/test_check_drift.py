"""Shared by every scenario: molecule's `check` step (the converge playbook
with --check, right after converge and idempotence) reported no change.

The report is written by callback_plugins/clinchat_check_drift.py at the end
of a check run and removed by every real run of converge.yml, so a missing
report means the check step did not run after the last converge: a failure,
not a pass.
"""

import json
import os
from pathlib import Path


def test_check_mode_reports_no_drift() -> None:
    report = Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"]) / "check-drift.json"
    assert report.exists(), f"{report} is missing: no check step ran after the last converge"
    assert json.loads(report.read_text()) == []
