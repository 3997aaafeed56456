"""Records the tasks that a ``--check`` run reports as changed.

Molecule's ``check`` step runs the converge playbook with ``--check`` but does
not fail on drift. This callback writes what would change to
``$MOLECULE_EPHEMERAL_DIRECTORY/check-drift.json`` (or
``$CLINCHAT_CHECK_DRIFT_FILE``); the shared verify test
``molecule/shared/tests/test_check_drift.py`` fails when it is not empty, and
when it is missing (no check step ran). A real (non-check) run of a converge
playbook removes the report first: it describes a state that no longer is,
so a stale report can never stand in for a check step that did not run.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ansible import context
from ansible.plugins.callback import CallbackBase

DOCUMENTATION = """
name: clinchat_check_drift
type: aggregate
short_description: write the tasks a check run reports as changed to a JSON file
description:
  - In check mode only, records every task result with changed=true and writes
    them as a JSON list at the end of the run.
  - A run of a playbook named converge.yml without check mode removes the report.
requirements:
  - enable in callbacks_enabled
"""


def _report_path() -> Path | None:
    target = os.environ.get("CLINCHAT_CHECK_DRIFT_FILE")
    if target:
        return Path(target)
    ephemeral = os.environ.get("MOLECULE_EPHEMERAL_DIRECTORY")
    return Path(ephemeral) / "check-drift.json" if ephemeral else None


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "clinchat_check_drift"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self) -> None:
        super().__init__()
        self._changed: list[dict[str, str]] = []

    def v2_playbook_on_start(self, playbook) -> None:  # noqa: ANN001 - Ansible's Playbook
        if context.CLIARGS.get("check"):
            return
        if Path(playbook._file_name).name != "converge.yml":
            return
        target = _report_path()
        if target:
            target.unlink(missing_ok=True)

    def v2_runner_on_ok(self, result) -> None:  # noqa: ANN001 - Ansible's TaskResult
        if result._result.get("changed", False):
            self._changed.append({"host": result._host.get_name(), "task": result._task.get_name()})

    def v2_playbook_on_stats(self, stats) -> None:  # noqa: ANN001, ARG002
        if not context.CLIARGS.get("check"):
            return
        target = _report_path()
        if not target:
            return
        target.write_text(json.dumps(self._changed, indent=2) + "\n")
        if self._changed:
            self._display.warning(
                "check mode reports drift: "
                + "; ".join(f"{c['host']}: {c['task']}" for c in self._changed)
            )
