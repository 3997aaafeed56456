"""Every control the roles carry, read from their tasks files, and what a report lacks.

The lab's audit test (tests/e2e/test_audit.py) checks that every control of
every role that ran on a host is in that host's report; the fixture test here
checks the helper.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
# The collection's plain-Python helpers, also from tests/e2e (no tests/audit conftest).
sys.path.insert(0, str(REPO / "collections"))

from ansible_collections.clinchat.appliance.plugins.plugin_utils import controls as ctl  # noqa: E402


def is_include(task: dict[str, Any]) -> bool:
    """An include or import: its tasks report for themselves, it is no control."""
    return any(key.rpartition(".")[2].startswith(("include_", "import_")) for key in task)


def tasks_with_controls(files: list[Path]) -> list[ctl.RoleTask]:
    found = []
    for path in files:
        role = path.parent.parent.name if path.parent.name == "tasks" else ""
        document = yaml.safe_load(path.read_text()) or []
        if any(isinstance(item, dict) and "hosts" in item for item in document):  # a playbook
            document = [task for play in document for task in play.get("tasks", [])]
        for task, tags in ctl.walk_tasks(document):
            refs = ctl.controls_of(list(tags), str(task.get("name", "")))
            if refs and not is_include(task):
                found.append(ctl.RoleTask(role, str(path.relative_to(REPO)), task["name"], refs))
    return found


def role_controls(repo: Path = REPO) -> dict[str, set[str]]:
    """{role: the ids of every control its tasks carry}."""
    controls: dict[str, set[str]] = {}
    for task in tasks_with_controls(sorted(repo.glob("roles/*/tasks/*.yml"))):
        controls.setdefault(task.role, set()).update(ref.id for ref in task.controls)
    return controls


def missing_from_report(report: dict[str, Any], host: str, expected: set[str]) -> set[str]:
    """The expected control ids that the report has no entry for on this host."""
    present = {c["id"] for c in report["hosts"].get(host, {}).get("controls", [])}
    return expected - present
