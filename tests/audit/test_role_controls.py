"""The controls the roles carry (from their tags), and the helper that finds
a role's control missing from a report."""

from __future__ import annotations

from .conftest import FIXTURES, Run
from .controls import REPO, missing_from_report, role_controls, tasks_with_controls


def test_every_role_file_parses_and_known_controls_are_found() -> None:
    controls = role_controls()
    assert {"5.1.20", "CLINCHAT-SSH-1", "KRNL-6000", "6.2.1.2", "1.5.1"} <= controls["harden"]
    assert {"2.3.3.1", "2.3.3.3", "1.2.1.2"} <= controls["base"]
    assert {f"CLINCHAT-APP-{n}" for n in (1, 2, 3, 4, 5)} <= controls["app"]
    # A HIPAA-only task is a control of its own, named by its role's prefix and title.
    assert (
        "PostgreSQL: Ensure pg_hba admits only the app hosts, over TLS, with a SCRAM password"
        in controls["postgresql"]
    )
    assert (
        "PKI: Ensure the host's private key exists, readable by <pki_key_group>" in controls["pki"]
    )


def test_every_control_carries_a_hipaa_specification_or_a_cis_id() -> None:
    tasks = tasks_with_controls(sorted(REPO.glob("roles/*/tasks/*.yml")))
    assert len(tasks) > 100
    for task in tasks:
        for ref in task.controls:
            assert ref.hipaa or ref.cis, f"{task.file}: {task.name}"


def test_the_app_controls_are_audit_probes_with_hipaa_specs() -> None:
    tasks = tasks_with_controls([REPO / "roles/app/tasks/controls.yml"])
    specs = {ref.id: set(ref.hipaa) for task in tasks for ref in task.controls}
    assert specs["CLINCHAT-APP-1"] == {"164.312.b", "164.312.c.1"}
    assert "164.312.a.2.iii" in specs["CLINCHAT-APP-2"]
    assert "164.312.a.2.iv" in specs["CLINCHAT-APP-3"]
    assert specs["CLINCHAT-APP-4"] == {"164.312.e.1"}
    assert specs["CLINCHAT-APP-5"] == {"164.312.b", "164.312.c.1"}
    assert all(" | AUDIT | " in task.name for task in tasks)


def test_missing_from_report_names_what_the_fixture_report_lacks(audit: Run) -> None:
    expected = {
        ref.id for task in tasks_with_controls([FIXTURES / "controls.yml"]) for ref in task.controls
    }
    assert len(expected) == 8
    for host in ("fixture-a", "fixture-b"):
        assert missing_from_report(audit.report, host, expected) == set()
    assert missing_from_report(audit.report, "fixture-a", expected | {"9.9.9"}) == {"9.9.9"}
    assert missing_from_report(audit.report, "no-such-host", {"1.1.1"}) == {"1.1.1"}
