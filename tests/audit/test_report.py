"""The control_report callback's JSON and HTML, from a real check-mode run of
tests/audit/fixtures/controls.yml (fixture-a complies, fixture-b has drifted)."""

from __future__ import annotations

import hashlib
import re

from .conftest import BANNER_SCRIPT, DIFF_SCRIPT, SECRETS, Run


def test_the_run_succeeds_and_prints_the_summary(audit: Run) -> None:
    assert audit.rc == 0, audit.output
    assert "CLINCHAT AUDIT: 2 hosts, 16 controls" in audit.output
    assert "fixture-b" in audit.output and "5.2.5 (error)" in audit.output
    # The console output of the default callback is intact.
    assert "TASK [1.1.1 | PATCH | Ensure the configuration file denies root logins]" in audit.output


def test_the_report_names_the_run_the_project_and_the_bundle(audit: Run) -> None:
    report = audit.report
    assert report["schema"] == "clinchat-audit-report" and report["schema_version"] == 1
    assert report["project"] == {"name": "clinchat-appliance", "version": "0.1.0"}
    assert report["run"]["check_mode"] is True and report["run"]["diff_mode"] is True
    assert report["run"]["inventory"][0].endswith("tests/audit/fixtures/inventory.yml")
    assert report["run"]["started"] <= report["run"]["finished"]
    bundle = report["bundle"]
    assert bundle["project_version"] == "0.1.0+bfixture" and bundle["debian_suite"] == "trixie"
    assert len(bundle["manifest_sha256"]) == 64


def test_a_compliant_host_passes_every_control(audit: Run) -> None:
    summary = audit.report["hosts"]["fixture-a"]["summary"]
    assert summary == {
        "error": 0,
        "drift": 0,
        "pass": 8,
        "not applicable": 0,
        "total": 8,
        "failures": 0,
    }


def test_statuses_of_the_drifted_host(audit: Run) -> None:
    statuses = {c["id"]: c["status"] for c in audit.report["hosts"]["fixture-b"]["controls"]}
    assert statuses == {
        "1.1.1": "drift",
        "1.5.1": "not applicable",
        "5.2.5": "error",
        "6.1": "drift",
        "CLINCHAT-FIX-1": "drift",
        "CLINCHAT-FIX-2": "drift",
        "CLINCHAT-FIX-3": "drift",
        "Fixture: Ensure the data directory is private: <__dir>": "drift",
    }


def test_tasks_of_one_control_merge_and_the_worst_wins(audit: Run) -> None:
    drifted = audit.control("fixture-b", "1.1.1")
    assert [t["status"] for t in drifted["tasks"]] == ["drift", "pass"]
    failed = audit.control("fixture-b", "5.2.5")
    assert [t["status"] for t in failed["tasks"]] == ["drift", "error"]
    assert "No such file" in failed["tasks"][1]["msg"]
    assert drifted["cis"] == "1.1.1" and drifted["level"] == "level1-server"
    assert drifted["hipaa"] == ["164.312.a.1", "164.312.d"]
    assert drifted["title"] == "Ensure the configuration file denies root logins"


def test_not_applicable_carries_the_roles_reason(audit: Run) -> None:
    control = audit.control("fixture-b", "1.5.1")
    assert control["reason"].startswith(
        "SKIPPED setting kernel.randomize_va_space (1.5.1): systemd-nspawn"
    )
    skipped = control["tasks"][0]
    assert skipped["status"] == "not applicable" and "fixture_container" in skipped["reason"]


def test_evidence_diff_and_probe(audit: Run) -> None:
    diff = audit.control("fixture-b", "1.1.1")["tasks"][0]["diff"]
    assert "-PermitRootLogin yes" in diff and "+PermitRootLogin no" in diff
    assert "+rule two" in audit.control("fixture-b", "6.1")["tasks"][0]["diff"]
    assert (
        "mode"
        in audit.control("fixture-b", "Fixture: Ensure the data directory is private: <__dir>")[
            "tasks"
        ][0]["diff"]
    )
    probe = audit.control("fixture-b", "CLINCHAT-FIX-1")["tasks"][1]
    assert probe["evidence"] == {"observed": "3600", "expected": 900, "comparison": "le"}
    assert probe["msg"].startswith("DRIFT")
    passed = audit.control("fixture-a", "CLINCHAT-FIX-1")["tasks"][1]
    assert passed["status"] == "pass" and passed["evidence"]["observed"] == "600"
    # Compliant tasks carry no diff.
    assert audit.control("fixture-a", "1.1.1")["tasks"][0]["diff"] == ""


def test_no_log_secrets_stay_out_of_the_report(audit: Run) -> None:
    assert audit.control("fixture-b", "CLINCHAT-FIX-3")["tasks"][0]["diff"] == ""
    for text in (audit.json_path.read_text(), (audit.out_dir / "report.html").read_text()):
        assert not any(secret in text for secret in SECRETS)


def test_tasks_without_control_tags_are_left_out(audit: Run) -> None:
    assert "not in the report" not in audit.json_path.read_text()


def test_summary_per_hipaa_spec(audit: Run) -> None:
    hipaa = audit.report["summary"]["hipaa"]
    assert hipaa["164.312.a.2.iii"]["citation"] == "164.312(a)(2)(iii)"
    assert {k: hipaa["164.312.a.2.iii"][k] for k in ("pass", "drift", "total")} == {
        "pass": 1, "drift": 1, "total": 2,
    }  # fmt: skip
    # 1.1.1, CLINCHAT-FIX-2 and the data directory on both hosts.
    assert hipaa["164.312.a.1"]["total"] == 6 and hipaa["164.312.a.1"]["drift"] == 3
    assert hipaa["164.312.d"]["error"] == 1
    total = audit.report["summary"]["total"]
    assert (total["pass"], total["drift"], total["not applicable"], total["error"]) == (8, 6, 1, 1)


def test_html_carries_the_sha256_of_the_json_bytes(audit: Run) -> None:
    page = (audit.out_dir / "report.html").read_text()
    digest = hashlib.sha256(audit.json_path.read_bytes()).hexdigest()
    assert digest in page and digest in audit.output


def test_html_escapes_what_hosts_report(audit: Run) -> None:
    page = (audit.out_dir / "report.html").read_text()
    assert BANNER_SCRIPT not in page and DIFF_SCRIPT not in page
    assert "&lt;script&gt;alert(&#x27;evidence&#x27;)&lt;/script&gt;" in page
    assert "&lt;script&gt;alert(&#x27;drift&#x27;)&lt;/script&gt;" in page
    assert page.count("<script>") == 1  # the page's own sorting and filtering


def test_html_is_self_contained(audit: Run) -> None:
    page = (audit.out_dir / "report.html").read_text()
    assert not re.search(r"\b(src|href)\s*=", page)
    assert "http://" not in page and "https://" not in page and "url(" not in page
    for part in ("fixture-b", "CLINCHAT-FIX-1", "164.312(a)(2)(iii) Automatic logoff", "<details>"):
        assert part in page
