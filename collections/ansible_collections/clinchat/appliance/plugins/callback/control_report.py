"""The auditor's report: every task result that serves a control, per host and per control."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ansible import context
from ansible.plugins.callback import CallbackBase
from ansible_collections.clinchat.appliance.plugins.plugin_utils import controls as ctl
from ansible_collections.clinchat.appliance.plugins.plugin_utils import report as rep

DOCUMENTATION = """
name: control_report
type: aggregate
short_description: the compliance report of an audit run (JSON, HTML, console summary)
description:
  - Inert unless the run is an audit, i.e. the playbook is C(audit.yml) run with
    C(--check), or the environment sets C(CLINCHAT_AUDIT=1).
  - Collects every task result whose tags name a control (C(cis_*), C(lynis_*),
    C(clinchat_*), C(hipaa_164.312.*)) and merges them per host and control
    (error > drift > pass > not applicable), with the evidence (diff, the probe's
    observed and expected values, the message).
  - Writes C(report.json) and C(report.html) to C(CLINCHAT_AUDIT_DIR)
    (default C(artifacts/audit) of the project) when a play whose vars set
    C(clinchat_audit_report) starts, else at the end of the run, prints a summary,
    and sets C(CLINCHAT_AUDIT_REPORT) in the environment to the JSON's path, so
    that play's tasks can read this run's report (audit.yml's verdict play).
  - The schema is documented in the collection's README.
requirements:
  - enable in callbacks_enabled (ansible.cfg)
"""

REPORT_ENV = "CLINCHAT_AUDIT_REPORT"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "clinchat.appliance.control_report"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self) -> None:
        super().__init__()
        self._active = False
        self._written = False
        self._playbook = ""
        self._started = ""
        self._results: list[dict[str, Any]] = []
        self._failures: list[dict[str, Any]] = []
        self._play: Any = None

    # -- when it acts --------------------------------------------------------------------

    def v2_playbook_on_start(self, playbook: Any) -> None:
        self._playbook = str(playbook._file_name)
        # audit.yml refuses to run without --check; a refused run leaves no report.
        audit_playbook = Path(self._playbook).name == "audit.yml" and context.CLIARGS.get("check")
        self._active = bool(audit_playbook) or os.environ.get("CLINCHAT_AUDIT") == "1"
        self._started = _now()
        os.environ.pop(REPORT_ENV, None)

    def v2_playbook_on_play_start(self, play: Any) -> None:
        if not self._active:
            return
        self._play = play
        if not self._written and (play.get_vars() or {}).get("clinchat_audit_report"):
            self._write()

    def v2_playbook_on_stats(self, stats: Any) -> None:  # noqa: ARG002 - Ansible's signature
        if self._active and not self._written:
            self._write()

    # -- results -----------------------------------------------------------------------------

    def v2_runner_on_ok(self, result: Any) -> None:
        changed = bool(result.result.get("changed"))
        self._record(result, "drift" if changed else "pass")

    def v2_runner_on_skipped(self, result: Any) -> None:
        self._record(result, "not applicable")

    def v2_runner_on_failed(self, result: Any, ignore_errors: bool = False) -> None:
        self._record(result, "error", ignored=ignore_errors)

    def v2_runner_on_unreachable(self, result: Any) -> None:
        self._record(result, "error")

    def _record(self, result: Any, status: str, ignored: bool = False) -> None:
        if not self._active or self._written:
            return
        task = result.task
        # An include or import is not a control: its tasks report for themselves.
        if task.action.rpartition(".")[2].startswith(("include_", "import_")):
            return
        raw = task.get_ds()
        raw_name = str(raw.get("name") or "") if isinstance(raw, dict) else ""
        name = result.task_name or task.get_name()
        tags = [str(t) for t in (task.tags or [])]
        refs = ctl.controls_of(tags, raw_name or name)
        data = result.result
        message = rep.message_of(data, failed=status == "error")
        note = status == "pass" and message.startswith("SKIPPED")
        if not refs and not note:
            # A failure outside any control still leaves the host unaudited past it.
            if status == "error" and not ignored:
                self._failures.append(
                    {"host": result.host.get_name(), "task": name, "msg": message}
                )
            return
        reason = None
        if status == "not applicable":
            condition = data.get("false_condition")
            reason = message or (f"skipped: {condition}" if condition else None)
            reason = reason or str(data.get("skip_reason") or "skipped")
        self._results.append(
            {
                "host": result.host.get_name(),
                "role": task._role.get_name() if task._role else None,
                "name": name,
                "id_field": ctl.id_field(raw_name or name),
                "controls": refs,
                "status": "not applicable" if note else status,
                "note": note,
                "reason": message if note else reason,
                "msg": message,
                "diff": rep.diff_text(data) if status == "drift" else "",
                "evidence": data.get("evidence")
                if isinstance(data.get("evidence"), dict)
                else None,
            }
        )

    # -- the report -------------------------------------------------------------------------

    def _write(self) -> None:
        self._written = True
        run = {
            "playbook": self._playbook,
            "inventory": [str(i) for i in (context.CLIARGS.get("inventory") or [])],
            "check_mode": bool(context.CLIARGS.get("check")),
            "diff_mode": bool(context.CLIARGS.get("diff")),
            "started": self._started,
            "finished": _now(),
        }
        document = rep.build(
            self._results, self._failures, run, rep.project_version(), self._bundle()
        )
        out_dir = rep.output_dir(self._playbook)
        try:
            paths = rep.write(document, out_dir)
        except OSError as exc:
            self._display.error(
                f"control_report: cannot write the audit report to {out_dir}: {exc}"
            )
            return
        os.environ[REPORT_ENV] = str(paths["json"])
        for line in rep.console_summary(document, paths):
            self._display.display(line)

    def _bundle(self) -> dict[str, Any] | None:
        """The bundle the inventory names (bundle_dir), identified by its manifest."""
        bundle_dir = os.environ.get("CLINCHAT_BUNDLE_DIR") or self._inventory_var("bundle_dir")
        return (
            rep.bundle_info(bundle_dir, self._inventory_var("bundle_url")) if bundle_dir else None
        )

    def _inventory_var(self, name: str) -> str | None:
        play = self._play
        if play is None:
            return None
        try:
            from ansible.template import Templar

            manager = play.get_variable_manager()
            hosts = manager._inventory.get_hosts()
            variables = manager.get_vars(play=play, host=hosts[0] if hosts else None)
            if name not in variables:
                return None
            value = Templar(loader=play._loader, variables=variables).template(variables[name])
            return str(value) if value else None
        except Exception as exc:  # noqa: BLE001 - the report names what it could not read
            self._display.warning(
                f"control_report: could not read {name} from the inventory: {exc}"
            )
            return None
