"""site.yml on the split lab (web, app, data, directory; inventories/lab/lab.yml):
converge and idempotence (check mode after the converge: test_audit.py, the
auditor's run of the same stages); then the appliance answers through nginx over
verified TLS, people sign in with the directory's passwords, an uploaded
document is ingested by the worker, and readiness follows the database."""

import json
import re
import subprocess
from pathlib import Path

import httpx
import pytest
import yaml

from tests.e2e.conftest import REPO
from tests.e2e.lab_client import (
    APP_HOST,
    DATA_HOST,
    DIR_HOST,
    GPU_HOST,
    LAB_CA,
    POLICY_QUESTION,
    SECRETS,
    SSH_KEY,
    WEB,
    WEB_HOST,
    ask,
    browser,
    playbook,
    ready,
    sign_in,
    ssh,
    statuses_from,
    upload_policy,
    wait_for_database,
)


def test_second_run_changes_nothing(converged: Path) -> None:
    recap, output = playbook("site.yml", "-i", str(converged))
    assert recap, output
    assert {h: r["changed"] for h, r in recap.items()} == dict.fromkeys(recap, 0), output


def test_ready_over_verified_tls(converged: Path) -> None:
    response = ready()
    assert response.status_code == 200, response.text
    assert response.json() == {
        "status": "ok",
        "checks": {"database": "up", "redis": "up", "vault": "up", "serving": "up"},
        "down": [],
        "not_configured": [],
    }


@pytest.mark.parametrize(
    ("uid", "roles"), [("clin1", ["clinician"]), ("admin1", ["admin"]), ("audit1", ["auditor"])]
)
def test_people_sign_in_with_the_directory_password(
    converged: Path, uid: str, roles: list[str]
) -> None:
    with browser() as client:
        me = sign_in(client, uid)
        assert me["username"] == uid and me["roles"] == roles
        assert client.get("/api/v1/auth/me").json()["username"] == uid


def test_a_wrong_directory_password_is_refused(converged: Path) -> None:
    with browser() as client:
        response = client.post(
            "/api/v1/auth/login", json={"username": "clin1", "password": "not-the-password"}
        )
    assert response.status_code == 401, response.text


def test_an_uploaded_document_is_ingested_by_the_worker(policy_document: dict) -> None:
    """The admin's upload went through nginx and Vault (its data key); the worker
    unit on the app host (Redis queue) made it the live, searchable version."""
    assert policy_document["live_version"] == 1, policy_document
    assert policy_document["latest"]["status"] == "ready", policy_document


def test_a_clinician_gets_a_streamed_answer_citing_the_document(policy_document: dict) -> None:
    """Through nginx, over verified TLS: sources first, then the model's tokens
    as they come (the lab's tiny random model: its words are noise, the
    citation is retrieval's), then done."""
    with browser() as client:
        me = sign_in(client, "clin1")
        headers = {"X-CSRF-Token": me["csrf_token"]}
        conversation = client.post("/api/v1/conversations", json={}, headers=headers)
        assert conversation.status_code == 201, conversation.text
        events = ask(client, conversation.json()["id"], POLICY_QUESTION, headers)
    names = [name for name, _ in events]
    assert names[0] == "sources" and names[-1] == "done", names
    assert "delta" in names, names
    sources = events[0][1]["sources"]
    assert events[0][1]["grounded"] is True
    assert policy_document["id"] in [source["document_id"] for source in sources], sources


ICU_TEXT = (
    "Synthetic intensive care policy for the lab. Flush every arterial line with "
    "heparinised saline at three millilitres an hour, and change the transducer set "
    "every ninety-six hours.\n"
)
ICU_QUESTION = "How often is the arterial line transducer set changed?"


def test_a_department_s_document_reaches_only_its_clinicians(converged: Path) -> None:
    """The lab's app_collections: the ICU's collection is read by the directory's
    icu-staff group only. icu1 (in it) gets the ICU policy cited; clin1 (not in it)
    never sees it, neither as a citation nor as a passage by its id."""
    with browser() as admin:
        me = sign_in(admin, "admin1")
        document = upload_policy(admin, me["csrf_token"], ICU_TEXT, "arterial.md", "icu")
    assert document["collection"] == "icu" and document["live_version"] == 1, document

    def sources(uid: str) -> tuple[httpx.Client, list[dict]]:
        client = browser()
        me = sign_in(client, uid)
        headers = {"X-CSRF-Token": me["csrf_token"]}
        conversation = client.post("/api/v1/conversations", json={}, headers=headers)
        assert conversation.status_code == 201, conversation.text
        events = ask(client, conversation.json()["id"], ICU_QUESTION, headers)
        return client, events[0][1]["sources"]

    icu, icu_sources = sources("icu1")
    clin, clin_sources = sources("clin1")
    try:
        cited = [s for s in icu_sources if s["document_id"] == document["id"]]
        assert cited, icu_sources
        assert document["id"] not in [s["document_id"] for s in clin_sources], clin_sources
        passage = f"/api/v1/chunks/{cited[0]['chunk_id']}"
        assert icu.get(passage).status_code == 200
        assert clin.get(passage).status_code == 404
    finally:
        icu.close()
        clin.close()


def test_the_audit_chain_verifies_on_the_app_host(converged: Path) -> None:
    """The operator's clinchat-admin (roles/app) runs as the app does: the sign-ins
    and the upload above are in the chain, and it is intact."""
    out = ssh(APP_HOST, "clinchat-admin audit verify")
    match = re.match(r"ok: (\d+) events, last id (\d+) hash [0-9a-f]{64}\n", out)
    assert match, out
    assert int(match[1]) >= 4, out  # three sign-ins and an upload at least
    # the worker checkpoints the chain with OpenBao's key from its start
    assert re.search(r"^checkpoints: [1-9]\d* \(signatures checked\)", out, re.M), out
    assert "warning:" not in out, out


def test_http_redirects_to_https(converged: Path) -> None:
    response = httpx.get("http://10.213.0.11/health", timeout=10)
    assert response.status_code == 301
    assert response.headers["location"].startswith("https://")


def test_readiness_follows_the_database(converged: Path) -> None:
    ssh(DATA_HOST, "systemctl stop postgresql")
    try:
        assert wait_for_database("down")["down"] == ["database"]
    finally:
        ssh(DATA_HOST, "systemctl start postgresql")
    assert wait_for_database("up")["down"] == []


def test_unreachable_host_fails_alone(converged: Path, tmp_path: Path) -> None:
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(
        (converged / "hosts.yml").read_text() + "\n# a host that does not answer\n"
    )
    extra = tmp_path / "extra.yml"
    extra.write_text(
        "all:\n  hosts:\n    lab-gone:\n      ansible_host: 10.213.0.19\n"
        f"      ansible_user: root\n      ansible_ssh_private_key_file: {SSH_KEY}\n"
    )
    recap, output = playbook(
        str(REPO / "playbooks" / "preflight.yml"), "-i", str(inventory), "-i", str(extra)
    )
    assert recap["lab-gone"]["unreachable"] == 1, output
    assert "lab-gone" in output and "UNREACHABLE" in output
    assert all(
        r["unreachable"] == 0 and r["failed"] == 0 for h, r in recap.items() if h != "lab-gone"
    ), output


def test_missing_required_variable_fails_at_play_start_naming_it(
    converged: Path, tmp_path: Path
) -> None:
    """The lab inventory without the database password: the play stops before any change."""
    (tmp_path / "group_vars").mkdir()
    (tmp_path / "hosts.yml").write_text((converged / "hosts.yml").read_text())
    group_vars = yaml.safe_load((converged / "group_vars" / "all.yml").read_text())
    del group_vars["postgresql_app_password"]
    (tmp_path / "group_vars" / "all.yml").write_text(yaml.safe_dump(group_vars))
    recap, output = playbook(str(REPO / "playbooks" / "data.yml"), "-i", str(tmp_path))
    assert "postgresql_app_password" in output, output
    assert recap["lab-data1"]["failed"] == 1 and recap["lab-data1"]["changed"] == 0, output


def test_operator_endpoints_answer_only_the_monitoring_network(converged: Path) -> None:
    """The controller stands for the monitoring network (nginx_monitoring_networks)."""
    with browser() as client:
        assert client.get("/metrics").status_code == 200
        assert client.get("/openapi.json").status_code == 200
    for path in ("/metrics", "/openapi.json", "/docs"):
        assert statuses_from(DIR_HOST, f"{WEB}{path}") == ["403 nginx"], path
    assert statuses_from(DIR_HOST, f"{WEB}/health") == [200]


def test_sign_in_attempts_are_rate_limited_per_client(converged: Path) -> None:
    body = json.dumps({"username": "nobody-here", "password": "wrong"})
    statuses = statuses_from(DIR_HOST, f"{WEB}/api/v1/auth/login", body, times=120)
    assert statuses[0] == 401, statuses
    assert "429 nginx" in statuses, statuses
    # Another client (the controller) is not limited by it.
    with browser() as client:
        other = {"username": "nobody-else", "password": "wrong"}
        assert client.post("/api/v1/auth/login", json=other).status_code == 401


def test_the_hop_to_the_app_is_tls_verified_by_name(converged: Path) -> None:
    """nginx on lab-web1 reaches lab-app1 over TLS; the app refuses plaintext."""
    ok = ssh(
        WEB_HOST,
        'python3 -c "import ssl, urllib.request; c = ssl.create_default_context('
        "cafile='/etc/clinchat/pki/ca.crt'); print(urllib.request.urlopen("
        "'https://10.213.0.12:8000/health', context=c, timeout=10).status)\"",
    )
    assert ok.strip() == "200"
    plain = subprocess.run(  # noqa: S603
        ["curl", "-sS", "--max-time", "10", "http://10.213.0.12:8000/health"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert plain.returncode != 0 or "200" not in plain.stdout, plain
    # The certificate carries the name nginx verifies (nginx_app_tls_name).
    names = subprocess.run(  # noqa: S603
        ["openssl", "s_client", "-connect", "10.213.0.12:8000", "-verify_hostname",
         "clinchat-app", "-CAfile", str(LAB_CA), "-verify_return_error"],
        input="", capture_output=True, text=True, check=False, timeout=30,
    )  # fmt: skip
    assert "Verify return code: 0 (ok)" in names.stdout, names.stdout[-2000:]


def test_the_model_server_takes_its_token_from_vault_and_enforces_it(converged: Path) -> None:
    """The gpu host keeps no copy of the token: clinchat-serve signs in with its
    AppRole at start and reads it from OpenBao's KV store (clinchat/serving).
    The streamed-answer test shows the app's copy (clinchat/app) is the same."""
    credentials = ssh(GPU_HOST, "ls /etc/clinchat/credentials").split()
    assert "serving_api_key" not in credentials, credentials
    assert {"serving_vault_role_id", "serving_vault_wrapped_secret_id"} <= set(credentials)
    token = (SECRETS / "serving_api_key").read_text().strip()
    found = ssh(GPU_HOST, f"grep -rlF -- {token} /etc /var/lib /root /tmp || true")
    assert found.strip() == "", found  # in the server's memory only
    # The unwrapped secret id, kept for restarts, is the service's alone.
    kept = ssh(GPU_HOST, "stat -c '%a %U' /var/lib/clinchat-serve/vault_secret_id")
    assert kept.split() == ["600", "clinchat-serve"], kept
    # The token was read, not left empty: the API refuses a client without it.
    assert statuses_from(APP_HOST, f"https://{GPU_HOST}:8081/v1/models") == [401]
    assert statuses_from(APP_HOST, f"https://{GPU_HOST}:8081/health") == [200]
