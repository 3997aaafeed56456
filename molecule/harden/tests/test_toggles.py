"""harden: each control's switch skips exactly its own task, and the role refuses
a configuration that would lock Ansible out. Real `--check` runs of the converge
playbook against the hardened host (ansible-playbook, JSON callback)."""

import json
import os
import subprocess
from pathlib import Path

import pytest

SCENARIO_DIR = Path(__file__).resolve().parents[1]
HOST = "mol-harden"
# One control from three topics: sshd, auditd rules, network sysctls.
TOGGLES_OFF = {
    "harden_rule_5_1_20": "5.1.20 | PATCH | Ensure sshd PermitRootLogin is disabled",
    "harden_rule_6_2_3_8": (
        "6.2.3.8 | PATCH | Ensure events that modify user and group information are collected"
    ),
    "harden_rule_3_3_10": "3.3.10 | PATCH | Ensure TCP SYN cookies are enabled",
}


def check_run(extra_vars=None, tags=None):
    env = dict(os.environ)
    env["ANSIBLE_CONFIG"] = str(Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"]) / "ansible.cfg")
    env["ANSIBLE_STDOUT_CALLBACK"] = "ansible.posix.json"
    # Not the drift callback: these runs must not replace the check step's report.
    env["ANSIBLE_CALLBACKS_ENABLED"] = "ansible.posix.timer"
    argv = [
        "ansible-playbook",
        "-i",
        os.environ["MOLECULE_INVENTORY_FILE"],
        "--check",
        "--limit",
        HOST,
    ]
    if extra_vars:
        argv += ["--extra-vars", json.dumps(extra_vars)]
    if tags:
        argv += ["--tags", tags]
    argv.append(str(SCENARIO_DIR / "converge.yml"))
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=900, check=False)
    # The JSON report, then whatever other callbacks print.
    report, _ = json.JSONDecoder().raw_decode(proc.stdout[proc.stdout.find("{") :])
    return proc.returncode, report, proc.stderr


def host_results(report):
    for play in report["plays"]:
        for task in play["tasks"]:
            result = task["hosts"].get(HOST)
            if result is not None:
                # The callback names a role's task "<role> : <name>".
                yield task["task"]["name"].removeprefix("harden : "), result


def ran(report):
    return {name for name, result in host_results(report) if not result.get("skipped")}


@pytest.fixture(scope="module")
def default_run():
    rc, report, err = check_run()
    assert rc == 0, err
    return report


def test_each_switch_skips_exactly_its_task(default_run):
    rc, report, err = check_run({name: False for name in TOGGLES_OFF})
    assert rc == 0, err
    before, after = ran(default_run), ran(report)
    assert set(TOGGLES_OFF.values()) <= before, set(TOGGLES_OFF.values()) - before
    assert before - after == set(TOGGLES_OFF.values())
    assert after - before == set()


def test_the_check_run_changes_nothing(default_run):
    changed = [name for name, result in host_results(default_run) if result.get("changed")]
    assert changed == []


def test_controls_nspawn_cannot_apply_say_so(default_run):
    messages = {
        name: str(result.get("msg", ""))
        for name, result in host_results(default_run)
        if "AUDIT | Say" in name and not result.get("skipped")
    }
    said = " ".join(messages.values())
    for control in (
        "1.5.1",
        "KRNL-6000",
        "6.2.1.2",
        "ACCT-9622",
        "unloading the disabled kernel modules",
    ):
        assert control in said, (control, messages)
    for message in messages.values():
        if message.startswith("SKIPPED"):
            assert "systemd-nspawn" in message, message


@pytest.mark.parametrize(
    ("extra_vars", "words"),
    [
        ({"harden_ssh_permit_root_login": "no"}, "must not be 'no' while Ansible connects as root"),
        ({"harden_ssh_allow_groups": ["clinchat-admin"]}, "must include one of those"),
    ],
)
def test_a_configuration_that_locks_ansible_out_is_refused(extra_vars, words):
    rc, report, _ = check_run(extra_vars, tags="always")
    assert rc != 0
    failures = [r.get("msg", "") for _, r in host_results(report) if r.get("failed")]
    assert any(words in " ".join(str(m).split()) for m in failures), failures
