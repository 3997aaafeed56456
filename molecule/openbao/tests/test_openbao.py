"""openbao: the app host reaches OpenBao over verified TLS, unwraps its
secret id, signs in with AppRole and gets only what its policy allows; plain
HTTP, TLS 1.1, weak suites, another policy's paths and another address are
refused; no key or root token on the host's disk or journal; the audit log
records the app; a sealed node stops the play, naming it, and is unsealed again.
sslyze finds the API listener (8200) Mozilla intermediate compliant; the raft
cluster port (8201) refuses a TLS client without the cluster's own
certificate, so sslyze cannot scan it (see the test).

Admin calls (root token) go from the controller to the node's address, so the
root token never appears in a command line on a lab host (Ansible logs module
arguments to the host's journal)."""

import json
import os
import re
import socket
import ssl
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from labtest import PKI_DIR, SECRETS_DIR, lab_host
from tlscheck import handshake, mozilla_intermediate

BAO = "mol-bao"
BAO_ADDR = "10.213.0.33"
CA = "/etc/clinchat/pki/ca.crt"
CREDENTIALS = "/etc/clinchat/credentials"
SCENARIO_DIR = Path(__file__).resolve().parents[1]
LAB_STATE = Path(os.environ.get("CLINCHAT_LAB_STATE", "/var/lib/clinchat-lab"))


def init_output() -> dict:
    return json.loads((SECRETS_DIR / "openbao-init.json").read_text())


def admin(
    method: str, path: str, body: dict | None = None, token: str | None = None
) -> tuple[int, dict]:
    """An API call from the controller, verified with the scenario's lab CA (the IP is a SAN)."""
    context = ssl.create_default_context(cafile=str(PKI_DIR / "ca.crt"))
    request = urllib.request.Request(
        f"https://{BAO_ADDR}:8200/v1/{path}",
        method=method,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"X-Vault-Token": token} if token else {},
    )
    try:
        with urllib.request.urlopen(request, context=context, timeout=10) as answer:  # noqa: S310
            raw = answer.read()
            return answer.status, json.loads(raw) if raw else {}
    except urllib.error.HTTPError as error:
        raw = error.read()
        return error.code, json.loads(raw) if raw else {}


# Run on the app host: reads its credential files itself (no secret on a
# command line), unwraps, signs in, then tries allowed and refused paths.
_APP_FLOW = r"""
import json, ssl, sys, urllib.error, urllib.request
ctx = ssl.create_default_context(cafile="/etc/clinchat/pki/ca.crt")
base = "https://mol-bao:8200/v1/"
def call(method, path, token=None, body=None):
    req = urllib.request.Request(base + path, method=method,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"X-Vault-Token": token} if token else {})
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=10) as r:
            raw = r.read(); return r.status, json.loads(raw) if raw else {}
    except urllib.error.HTTPError as e:
        raw = e.read(); return e.code, json.loads(raw) if raw else {}
role_id = open(sys.argv[1]).read().strip()
wrapping = open(sys.argv[2]).read().strip()
out = {}
out["unwrap"], answer = call("POST", "sys/wrapping/unwrap", wrapping)
secret_id = answer.get("data", {}).get("secret_id", "")
login = {"role_id": role_id, "secret_id": secret_id}
out["login"], answer = call("POST", "auth/approle/login", body=login)
token = answer.get("auth", {}).get("client_token", "")
out["policies"] = answer.get("auth", {}).get("token_policies")
out["ttl"] = answer.get("auth", {}).get("lease_duration")
out["datakey"], answer = call("POST", "transit/datakey/plaintext/clinchat", token, {"bits": 256})
out["datakey_has_plaintext"] = bool(answer.get("data", {}).get("plaintext"))
ciphertext = answer.get("data", {}).get("ciphertext", "")
out["decrypt"], answer = call("POST", "transit/decrypt/clinchat", token, {"ciphertext": ciphertext})
out["sign"], answer = call("POST", "transit/sign/clinchat-audit", token, {"input": "aGk="})
out["signature"] = answer.get("data", {}).get("signature", "")
out["audit_key"], answer = call("GET", "transit/keys/clinchat-audit", token)
out["audit_key_type"] = answer.get("data", {}).get("type")
out["audit_key_exportable"] = answer.get("data", {}).get("exportable")
out["export"], _ = call("GET", "transit/export/signing-key/clinchat-audit", token)
out["audit_key_config"], _ = call("POST", "transit/keys/clinchat-audit/config", token,
                                  {"exportable": True})
out["kv_app"], answer = call("GET", "clinchat/data/app", token)
out["kv_app_keys"] = sorted(answer.get("data", {}).get("data", {}))
out["kv_serving"], _ = call("GET", "clinchat/data/serving", token)
out["sys_mounts"], _ = call("GET", "sys/mounts", token)
out["sys_policy"], _ = call("GET", "sys/policies/acl/root", token)
out["other_key"], _ = call("GET", "transit/keys/other-key", token)
out["other_datakey"], _ = call("POST", "transit/datakey/plaintext/other-key", token, {})
out["encrypt"], _ = call("POST", "transit/encrypt/clinchat", token, {"plaintext": "aGk="})
out["unwrap_again"], _ = call("POST", "sys/wrapping/unwrap", wrapping)
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def bao():
    return lab_host(BAO)


@pytest.fixture(scope="module")
def app_host():
    return lab_host("mol-bao-app")


@pytest.fixture(scope="module")
def app_flow(app_host):
    """The app's whole sign-in, once (unwrapping spends the wrapping token)."""
    out = app_host.check_output(
        "python3 -c %s %s %s",
        _APP_FLOW,
        f"{CREDENTIALS}/clinchat_vault_role_id",
        f"{CREDENTIALS}/clinchat_vault_wrapped_secret_id",
    )
    return json.loads(out)


def health_from(host) -> tuple[int, dict]:
    script = (
        "import json, ssl, urllib.request, urllib.error\n"
        f"ctx = ssl.create_default_context(cafile={CA!r})\n"
        "try:\n"
        "    url = 'https://mol-bao:8200/v1/sys/health'\n"
        "    r = urllib.request.urlopen(url, context=ctx, timeout=10)\n"
        "    print(json.dumps([r.status, json.loads(r.read())]))\n"
        "except urllib.error.HTTPError as e:\n"
        "    print(json.dumps([e.code, json.loads(e.read() or b'{}')]))\n"
    )
    status, body = json.loads(host.check_output("python3 -c %s", script))
    return status, body


def test_health_over_verified_tls_from_the_app_host(app_host):
    status, body = health_from(app_host)
    assert status == 200, body
    assert body["initialized"] is True
    assert body["sealed"] is False
    assert body["version"] == "2.7.2"


def test_plain_http_is_refused(app_host):
    script = (
        "import urllib.request, urllib.error\n"
        "try:\n"
        "    r = urllib.request.urlopen('http://mol-bao:8200/v1/sys/health', timeout=10)\n"
        "    print(r.status, r.read()[:200])\n"
        "except urllib.error.HTTPError as e:\n"
        "    print(e.code, e.read()[:200])\n"
    )
    out = app_host.check_output("python3 -c %s", script)
    # Go's TLS server answers a plain request with 400 and nothing of the API.
    assert out.startswith("400"), out
    assert "initialized" not in out


def s_client(host, *options):
    cmd = (
        "openssl s_client -connect mol-bao:8200 -servername mol-bao "
        f"-CAfile {CA} -verify_return_error {' '.join(options)} </dev/null"
    )
    return host.run(f"timeout 15 {cmd}")


def test_tls_1_2_with_an_intermediate_suite_succeeds(app_host):
    result = s_client(app_host, "-tls1_2")
    assert result.rc == 0, result.stderr
    assert "Verify return code: 0 (ok)" in result.stdout
    assert re.search(r"Cipher is ECDHE-(ECDSA|RSA)-", result.stdout), result.stdout


def test_tls_1_1_is_refused_by_the_server(app_host):
    # The client allows TLS 1.1 and every cipher: only the server can refuse.
    result = s_client(app_host, "-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0")
    assert result.rc != 0
    said = result.stdout + result.stderr
    assert "Cipher is (NONE)" in said or "alert" in said, said


def test_a_tls_1_2_suite_without_forward_secrecy_is_refused(app_host):
    result = s_client(app_host, "-tls1_2", "-cipher", "AES128-GCM-SHA256:AES128-SHA@SECLEVEL=0")
    assert result.rc != 0


def test_the_api_meets_mozilla_intermediate():
    """sslyze from the controller: protocols, suites, key exchange groups
    (tls_key_exchange_preferences: Go's own list adds P-521), certificate lifetime."""
    mozilla_intermediate(BAO_ADDR, 8200, ca_file=str(PKI_DIR / "ca.crt"))


@pytest.mark.parametrize("version", ["TLSv1.2", "TLSv1.3"])
def test_the_cluster_port_refuses_a_client_without_the_clusters_certificate(version):
    """Port 8201 speaks only to raft peers: mutual TLS with certificates that
    the cluster makes for itself, chosen by ALPN. A TLS client without them (as
    sslyze is) gets no session, whatever it offers: sslyze cannot scan the port.
    The port is open, so the refusal is the server's TLS, not a closed port."""
    with socket.create_connection((BAO_ADDR, 8201), timeout=10):
        pass
    result = handshake(BAO_ADDR, 8201, version)
    assert result.returncode != 0, result.stdout
    assert "Cipher is (NONE)" in result.stdout or "alert" in result.stderr, result.stdout


def test_the_app_unwraps_signs_in_and_gets_what_its_policy_allows(app_flow):
    assert app_flow["unwrap"] == 200
    assert app_flow["login"] == 200
    assert app_flow["policies"] == ["clinchat-app", "default"]
    assert 0 < app_flow["ttl"] <= 900
    assert app_flow["datakey"] == 200 and app_flow["datakey_has_plaintext"]
    assert app_flow["decrypt"] == 200
    assert app_flow["kv_app"] == 200
    assert app_flow["kv_app_keys"] == ["audit_hmac_key", "ldap_bind_password", "serving_token"]
    # the audit chain's checkpoints: sign, read the public key
    assert app_flow["sign"] == 200 and app_flow["signature"].startswith("vault:v1:")
    assert app_flow["audit_key"] == 200 and app_flow["audit_key_type"] == "ed25519"
    assert app_flow["audit_key_exportable"] is False


def test_the_app_token_is_refused_elsewhere(app_flow):
    assert app_flow["kv_serving"] == 403
    assert app_flow["sys_mounts"] == 403
    assert app_flow["sys_policy"] == 403
    assert app_flow["other_key"] == 403
    assert app_flow["other_datakey"] == 403
    assert app_flow["encrypt"] == 403
    # the checkpoint key's private half never leaves OpenBao
    assert app_flow["export"] == 403
    assert app_flow["audit_key_config"] == 403


def test_the_wrapping_token_works_once(app_flow):
    assert app_flow["unwrap"] == 200
    assert app_flow["unwrap_again"] == 400


def test_the_app_credentials_sign_in_only_from_app_hosts(app_flow):
    # A fresh secret id of the same role, used from the controller (10.213.0.1):
    # the role binds secret ids and tokens to the app hosts' addresses.
    root = init_output()["root_token"]
    status, answer = admin("GET", "auth/approle/role/clinchat-app/role-id", token=root)
    role_id = answer["data"]["role_id"]
    status, answer = admin("POST", "auth/approle/role/clinchat-app/secret-id", {}, token=root)
    assert status == 200
    secret_id, accessor = answer["data"]["secret_id"], answer["data"]["secret_id_accessor"]
    try:
        login = {"role_id": role_id, "secret_id": secret_id}
        status, answer = admin("POST", "auth/approle/login", login)
        assert status in (400, 403), answer
        assert "auth" not in answer or not answer["auth"]
    finally:
        admin(
            "POST",
            "auth/approle/role/clinchat-app/secret-id-accessor/destroy",
            {"secret_id_accessor": accessor},
            token=root,
        )


def test_credential_files_are_root_only(app_host):
    for name in ("clinchat_vault_role_id", "clinchat_vault_wrapped_secret_id"):
        f = app_host.file(f"{CREDENTIALS}/{name}")
        assert f.user == "root" and f.group == "root" and f.mode == 0o600
    assert app_host.file(CREDENTIALS).mode == 0o700


def test_no_unseal_key_or_root_token_on_the_host_disk_nor_journal(bao, app_flow):  # noqa: ARG001
    init = init_output()
    secrets = [init["root_token"], *init["keys"], *init["keys_base64"]]
    rootfs = LAB_STATE / "machines" / BAO / "rootfs"
    assert (rootfs / "etc/openbao/openbao.hcl").exists()
    # The host's root file system, read from the controller (no secret on the host's command line).
    for secret in secrets:
        found = subprocess.run(
            ["grep", "-rlaF", "--exclude-dir=proc", "--exclude-dir=sys", "-e", secret, str(rootfs)],
            capture_output=True,
            text=True,
            check=False,
        )
        assert found.returncode == 1, f"a key or the root token is in {found.stdout.split()}"
    # Bytes: the export format carries binary fields (a message that is not
    # UTF-8) as they are, so it is searched undecoded.
    exported = bao.run("journalctl --no-pager -o export")
    assert exported.rc == 0, exported.stderr
    journal = exported.stdout_bytes
    assert len(journal) > 1000
    for secret in secrets:
        assert secret.encode() not in journal


def test_the_audit_log_records_the_app_request(bao, app_flow):  # noqa: ARG001
    log = bao.file("/var/log/openbao/audit.log")
    assert log.user == "openbao" and log.mode == 0o600
    lines = bao.check_output("cat /var/log/openbao/audit.log").splitlines()
    entries = [json.loads(line) for line in lines]
    datakeys = [
        e
        for e in entries
        if e["type"] == "response"
        and e["request"]["path"] == "transit/datakey/plaintext/clinchat"
        and e["request"].get("remote_address") == "10.213.0.34"
    ]
    assert datakeys, "no audit entry for the app's data key"
    # Secrets in the audit log are HMACed, never in clear text.
    assert datakeys[-1]["response"]["data"]["plaintext"].startswith("hmac-sha256:")


def test_the_service_is_sandboxed_and_unprivileged(bao):
    service = bao.service("openbao")
    assert service.is_running and service.is_enabled
    pid = bao.check_output("systemctl show --property MainPID --value openbao")
    assert bao.check_output(f"stat -c %U /proc/{pid}") == "openbao"
    out = bao.check_output("systemd-analyze security --no-pager openbao.service")
    score = float(re.search(r"Overall exposure level for openbao.service: ([0-9.]+)", out)[1])
    print(f"systemd-analyze security exposure: {score}")
    assert score <= 2.0
    assert bao.socket("tcp://10.213.0.33:8200").is_listening
    assert not bao.socket("tcp://0.0.0.0:8200").is_listening


def test_the_binary_is_the_pinned_one(bao):
    out = bao.check_output("sha256sum /usr/local/bin/bao")
    assert out.split()[0] == "9c5f36287c673f386e1533e9c044169a248e4ee50dd54810fa766e95bd41b788"


def test_the_config_test_refuses_a_broken_configuration(bao):
    good = bao.run("openbao-config-test /etc/openbao/openbao.hcl")
    assert good.rc == 0, good.stderr
    bad = bao.run(
        "sed 's/tls12/tls99/' /etc/openbao/openbao.hcl > /root/bad.hcl && "
        "openbao-config-test /root/bad.hcl; rc=$?; rm -f /root/bad.hcl; exit $rc"
    )
    assert bad.rc != 0
    assert "tls_min_version" in bad.stderr


def playbook(path: Path, *extra: str) -> subprocess.CompletedProcess:
    """A playbook on the scenario's inventory, with molecule's Ansible configuration."""
    env = dict(os.environ)
    config = Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"]) / "ansible.cfg"
    if config.exists():
        env["ANSIBLE_CONFIG"] = str(config)
    return subprocess.run(
        ["ansible-playbook", *("-i", os.environ["MOLECULE_INVENTORY_FILE"]), str(path), *extra],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=900,
    )


def converge(*extra: str) -> subprocess.CompletedProcess:
    return playbook(SCENARIO_DIR / "converge.yml", *extra)


def test_a_sealed_node_stops_the_play_then_is_unsealed(app_flow):  # noqa: ARG001 - after the app's checks
    root = init_output()["root_token"]
    status, _ = admin("PUT", "sys/seal", token=root)
    assert status == 204
    assert admin("GET", "sys/seal-status")[1]["sealed"] is True

    failed = converge("-e", "openbao_init_file=/nonexistent/openbao-init.json")
    assert failed.returncode != 0
    message = f"OpenBao on {BAO} is sealed: give openbao_unseal_keys"
    said = " ".join((failed.stdout + failed.stderr).split())
    assert message in said, said[-3000:]
    assert admin("GET", "sys/seal-status")[1]["sealed"] is True

    again = converge()
    assert again.returncode == 0, again.stdout[-3000:]
    assert admin("GET", "sys/seal-status")[1]["sealed"] is False
    assert admin("GET", "sys/health")[0] == 200
