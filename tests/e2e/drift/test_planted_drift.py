"""Drift planted by hand on the converged split lab, the way it happens on a
real host, one change per tier: the audit reports exactly those controls as
drift, with evidence, exits 2 with audit_fail_on_drift, and the next site.yml
run puts every host back. Also the audit's time beside a plain site.yml
--check on the same lab, in the same run (artifacts/audit/timing.json).

Not in `make e2e` (the audit twice, a check run and a converge: about 20 min
on the 2-core CI machine): `make audit-drift`, run before an audit change lands.
"""

import json
import time
from pathlib import Path

from tests.e2e.lab_client import APP_HOST, DATA_HOST, WEB_HOST, playbook, ssh
from tests.e2e.test_audit import ARTIFACTS, HOSTS, audit, not_passing

# The controls each planted change must drift, and nothing else on any host.
EXPECTED_DRIFT = {
    "lab-web1": {"CLINCHAT-SSH-1"},
    "lab-data1": {
        "4.3.10",
        "PostgreSQL: Ensure TLS, SCRAM passwords and the listen address; "
        "TLS from <postgresql_ssl_min_protocol_version>",
    },
    "lab-app1": {
        "CLINCHAT-APP-2",
        "App: Ensure the service's non-secret settings are in its environment file",
    },
    "lab-gpu1": set(),
    "lab-dir1": set(),
}


def plant() -> None:
    ssh(
        WEB_HOST,
        "sed -i 's/^PasswordAuthentication no$/PasswordAuthentication yes/' /etc/ssh/sshd_config",
    )
    ssh(
        DATA_HOST,
        "sed -i \"s/^ssl_min_protocol_version = .*/ssl_min_protocol_version = 'TLSv1'/\" "
        "/etc/postgresql/17/main/conf.d/50-clinchat.conf"
        " && nft add rule inet clinchat input tcp dport 2323 accept comment planted",
    )
    # Written and restarted: the running service's own settings drift too.
    ssh(
        APP_HOST,
        "echo CLINCHAT_SESSION_IDLE_TIMEOUT_S=86400 >> /etc/clinchat/app.env"
        " && systemctl restart clinchat-app",
    )


def test_planted_drift_is_reported_under_its_control_and_the_next_run_removes_it(
    converged: Path, tmp_path: Path
) -> None:
    clean_rc, clean, clean_output, audit_seconds = audit(tmp_path / "clean")
    assert clean_rc == 0 and all(not not_passing(clean, h) for h in HOSTS), clean_output
    started = time.monotonic()
    recap, output = playbook("site.yml", "-i", str(converged), "--check")
    check_seconds = time.monotonic() - started
    assert recap, output
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "timing.json").write_text(
        json.dumps(
            {
                "hosts": len(HOSTS),
                "audit_seconds": round(audit_seconds, 1),
                "site_check_seconds": round(check_seconds, 1),
                "controls": clean["summary"]["total"],
            },
            indent=2,
        )
    )

    plant()
    rc, report, output, _ = audit(tmp_path / "drift", "-e", "audit_fail_on_drift=true")
    assert rc == 2, output
    drifted = {
        host: {c["id"] for c in report["hosts"][host]["controls"] if c["status"] == "drift"}
        for host in HOSTS
    }
    assert drifted == EXPECTED_DRIFT, output
    # Every drifted control carries its evidence: the diff or the probe's values.
    for host, ids in EXPECTED_DRIFT.items():
        for control in report["hosts"][host]["controls"]:
            if control["id"] in ids:
                evidence = [t.get("diff") or t.get("evidence") for t in control["tasks"]]
                assert any(evidence), control
    assert not any(c["status"] == "error" for h in HOSTS for c in report["hosts"][h]["controls"])

    # The next run puts every host back.
    recap, output = playbook("site.yml", "-i", str(converged))
    assert recap and all(r["failed"] == 0 for r in recap.values()), output
    assert "\npasswordauthentication no\n" in ssh(WEB_HOST, "sshd -T")
    assert "planted" not in ssh(DATA_HOST, "nft list ruleset")
    assert "86400" not in ssh(APP_HOST, "cat /etc/clinchat/app.env")
    rc, report, output, _ = audit(tmp_path / "after", "-e", "audit_fail_on_drift=true")
    assert rc == 0, output
