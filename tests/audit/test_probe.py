"""clinchat.appliance.probe: its comparisons, and the action in a real check-mode run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from ansible_collections.clinchat.appliance.plugins.plugin_utils.comparisons import (
    ComparisonError,
    compare,
)

from .conftest import run_playbook


@pytest.mark.parametrize(
    ("observed", "expected", "comparison", "compliant"),
    [
        ("900", 900, "eq", True),
        (900, "900", "eq", True),
        ("yes", "no", "eq", False),
        ({"a": 1}, {"a": 1}, "eq", True),
        ([], [], "eq", True),
        (["10.0.0.1:8000"], [], "eq", False),
        ("prohibit-password", "yes", "ne", True),
        ("600", 900, "le", True),
        ("900", 900, "le", True),
        ("901", 900, "le", False),
        (899, 900, "lt", True),
        (3, 1, "ge", True),
        (0, 1, "gt", False),
        ("TLSv1.3", ["TLSv1.2", "TLSv1.3"], "in", True),
        ("TLSv1", ["TLSv1.2", "TLSv1.3"], "in", False),
        ("TLSv1", ["TLSv1", "TLSv1.1"], "not_in", False),
        (["a", "b"], "b", "contains", True),
        ("AllowGroups admins", "admins", "contains", True),
        ({"mode": "0600"}, "mode", "contains", True),
        (["a"], "b", "not_contains", True),
        ("ok: 12 events, last id 12", "^ok: ", "regex", True),
        ("clinchat-admin: broken: event 3", "^ok: ", "regex", False),
        ("PasswordAuthentication yes", r"PasswordAuthentication\s+yes", "not_regex", False),
        (["aes256-gcm", "chacha20"], ["aes256-gcm", "chacha20", "aes128-ctr"], "subset", True),
        (["aes256-gcm", "3des-cbc"], ["aes256-gcm"], "subset", False),
        (["x", "y", "z"], ["x", "z"], "superset", True),
    ],
)
def test_comparisons(observed: object, expected: object, comparison: str, compliant: bool) -> None:
    assert compare(observed, expected, comparison) is compliant


@pytest.mark.parametrize(
    ("observed", "expected", "comparison"),
    [
        ("off", 900, "le"),
        (True, 1, "ge"),
        (5, 5, "contains"),
        ("x", "(", "regex"),
        (1, 1, "between"),
    ],
)
def test_values_that_cannot_be_compared_so_are_an_error(
    observed: object, expected: object, comparison: str
) -> None:
    with pytest.raises(ComparisonError):
        compare(observed, expected, comparison)


PLAYBOOK = """
- name: Probe
  hosts: localhost
  gather_facts: false
  tasks:
    - name: compliant
      clinchat.appliance.probe: {observed: "600", expected: 900, comparison: le}
      register: compliant
    - name: drift
      clinchat.appliance.probe: {observed: [10.0.0.1:8000], expected: []}
      register: drift
    - name: cannot compare
      clinchat.appliance.probe:
        observed: the service is not running
        expected: 900
        comparison: le
      register: error
      ignore_errors: true
    - name: Write what the probes returned
      ansible.builtin.copy:
        content: "{{ {'compliant': compliant, 'drift': drift, 'error': error} | to_json }}"
        dest: "{{ audit_fixture_dir }}/probes.json"
        mode: "0644"
      check_mode: false
"""


def test_probe_in_check_mode_changed_means_drift(tmp_path: Path) -> None:
    playbook = tmp_path / "probe.yml"
    playbook.write_text(PLAYBOOK)
    inventory = tmp_path / "inventory.yml"
    inventory.write_text("all:\n  hosts: {}\n")
    run = run_playbook(playbook, tmp_path, "--check", inventory=inventory)
    assert run.rc == 0, run.output
    probes = json.loads((tmp_path / "probes.json").read_text())
    assert probes["compliant"]["changed"] is False and probes["compliant"]["compliant"] is True
    assert probes["compliant"]["evidence"] == {
        "observed": "600",
        "expected": 900,
        "comparison": "le",
    }
    assert probes["drift"]["changed"] is True and probes["drift"]["compliant"] is False
    assert probes["drift"]["evidence"]["comparison"] == "eq"
    assert probes["error"]["failed"] is True and "is not a number" in probes["error"]["msg"]


def test_probe_refuses_an_unknown_comparison(tmp_path: Path) -> None:
    playbook = tmp_path / "bad.yml"
    playbook.write_text(
        PLAYBOOK.replace(
            "comparison: le}\n      register: compliant",
            "comparison: about}\n      register: compliant",
        )
    )
    inventory = tmp_path / "inventory.yml"
    inventory.write_text("all:\n  hosts: {}\n")
    run = run_playbook(playbook, tmp_path, "--check", inventory=inventory)
    assert run.rc == 2 and "value of comparison must be one of" in run.output
