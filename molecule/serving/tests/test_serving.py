"""serving: from the client host over the lab network, the OpenAI-compatible API
answers over TLS verified with the lab CA, with the bearer token; no token, a
wrong token, plaintext HTTP, another CA and another name are refused; Mozilla
intermediate (sslyze); the service runs as clinchat-serve in its sandbox; the API
key is nowhere but its credential; a tampered model file stops the service and
the role (naming the file), and the role puts the model right again."""

import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from labtest import PKI_DIR, lab_host, secret
from tlscheck import handshake, mozilla_intermediate

GPU = "10.213.0.36"
PORT = 8081
BASE = f"https://{GPU}:{PORT}"
MODEL = "tiny-llama"
MODEL_DIR = f"/srv/clinchat/models/{MODEL}"
CA = "/etc/clinchat/pki/ca.crt"
SERVICE = "clinchat-serve"
BUNDLE = Path(os.environ.get("CLINCHAT_BUNDLE_DIR", "/var/cache/clinchat/bundle"))
VERSION = json.loads((BUNDLE / "manifest.json").read_text())["python"]["project_version"]
SCENARIO_DIR = Path(__file__).resolve().parents[1]
# Measured inside a lab host (README); the role fails above serving_max_exposure too.
EXPOSURE_MAX = 2.0

# A client with nothing but Debian's python3: one request, its outcome as JSON.
# Exceptions are outcomes too (a refused handshake, a closed connection).
_REQUEST = """
import json, ssl, sys, urllib.error, urllib.request
method, url, token, cafile, body = sys.argv[1:6]
context = ssl.create_default_context(cafile=cafile) if cafile else None
request = urllib.request.Request(url, method=method, data=body.encode() or None)
if body:
    request.add_header("Content-Type", "application/json")
if token:
    request.add_header("Authorization", "Bearer " + token)
try:
    r = urllib.request.urlopen(request, context=context, timeout=60)
    out = {"status": r.status, "body": r.read().decode()}
except urllib.error.HTTPError as e:
    out = {"status": e.code, "body": e.read().decode()}
except Exception as e:
    out = {"status": None, "error": type(e).__name__ + ": " + str(e)}
print(json.dumps(out))
"""

# A TLS handshake to the listener, checking the certificate against `cafile`
# for the name `server_name`.
_HANDSHAKE = """
import json, socket, ssl, sys
host, port, cafile, name = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
context = ssl.create_default_context(cafile=cafile)
try:
    with socket.create_connection((host, port), timeout=10) as sock:
        with context.wrap_socket(sock, server_hostname=name) as tls:
            out = {"ok": True, "version": tls.version()}
except Exception as e:
    out = {"ok": False, "error": type(e).__name__ + ": " + str(e)}
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def client():
    return lab_host("mol-serving-client")


@pytest.fixture(scope="module")
def gpu():
    return lab_host("mol-serving-gpu")


@pytest.fixture(scope="module")
def api_key():
    return secret("serving_api_key")


def request(host, method, path, token="", cafile=CA, body=None, base=BASE):
    payload = json.dumps(body) if body is not None else ""
    argv = ["python3", "-c", _REQUEST, method, base + path, token, cafile, payload]
    return json.loads(host.check_output(shlex.join(argv)))


def tls_handshake(host, cafile=CA, name=GPU):
    argv = ["python3", "-c", _HANDSHAKE, GPU, str(PORT), cafile, name]
    return json.loads(host.check_output(shlex.join(argv)))


def other_ca(host):
    """A CA the lab certificate does not chain to (a public root)."""
    return host.check_output("ls /usr/share/ca-certificates/mozilla/*.crt | grep -m1 ISRG_Root_X1")


# -- the API over verified TLS, with the token ----------------------------------------------


def test_models_over_verified_tls_with_the_token(client, api_key):
    response = request(client, "GET", "/v1/models", token=api_key)
    assert response["status"] == 200, response
    assert [m["id"] for m in json.loads(response["body"])["data"]] == [MODEL]


def test_a_short_generation(client, api_key):
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "Which ward is on the third floor?"}],
        "max_tokens": 8,
        "temperature": 0,
    }
    response = request(client, "POST", "/v1/chat/completions", token=api_key, body=body)
    assert response["status"] == 200, response
    answer = json.loads(response["body"])
    assert answer["object"] == "chat.completion"
    assert answer["choices"][0]["message"]["role"] == "assistant"
    assert 1 <= answer["usage"]["completion_tokens"] <= 8, answer
    assert answer["usage"]["prompt_tokens"] > 0


# -- refusals --------------------------------------------------------------------------------


@pytest.mark.parametrize("token", ["", "wrong-" + "x" * 40], ids=["no-token", "wrong-token"])
def test_refused_without_the_right_token(client, token):
    for method, path, body in (
        ("GET", "/v1/models", None),
        ("POST", "/v1/completions", {"model": MODEL, "prompt": "Hello", "max_tokens": 2}),
    ):
        response = request(client, method, path, token=token, body=body)
        assert response["status"] == 401, response
        error = json.loads(response["body"])["error"]
        assert error["code"] == "invalid_api_key", error


def test_plaintext_http_is_refused(client, api_key):
    response = request(
        client, "GET", "/v1/models", token=api_key, cafile="", base=f"http://{GPU}:{PORT}"
    )
    assert response["status"] is None, response


def test_the_client_verifies_the_chain_and_the_name(client):
    assert tls_handshake(client)["ok"]
    refused = tls_handshake(client, cafile=other_ca(client))
    assert not refused["ok"] and "CERTIFICATE_VERIFY_FAILED" in refused["error"], refused
    wrong_name = tls_handshake(client, name="not-the-gpu.invalid")
    assert not wrong_name["ok"], wrong_name
    assert "mismatch" in wrong_name["error"] or "doesn't match" in wrong_name["error"]
    # The same through the API client: another CA, no answer.
    response = request(client, "GET", "/health", cafile=other_ca(client))
    assert response["status"] is None and "CERTIFICATE_VERIFY_FAILED" in response["error"]


def test_health_needs_no_token_and_says_ready(client):
    response = request(client, "GET", "/health")
    assert response["status"] == 200, response


def test_tls_meets_mozilla_intermediate():
    mozilla_intermediate(GPU, PORT, ca_file=str(PKI_DIR / "ca.crt"))


@pytest.mark.parametrize("version", ["TLSv1", "TLSv1.1"])
def test_old_tls_is_refused(version, tmp_path_factory):
    from tlscheck import client_allows_old_tls

    client_allows_old_tls(tmp_path_factory.mktemp("old-tls"))
    result = handshake(GPU, PORT, version)
    assert result.returncode != 0, result.stdout


# -- the host: venv, user, sandbox, credentials ----------------------------------------------


def test_the_version_venv_is_current_with_debian_torch(gpu):
    assert re.fullmatch(r"0\.1\.0\+b[0-9a-f]{12}", VERSION), VERSION
    venv = f"/opt/clinchat/serving/{VERSION}"
    assert gpu.file("/opt/clinchat/serving/current").linked_to == venv
    assert gpu.file(venv).user == "root"
    assert "include-system-site-packages = true" in gpu.file(f"{venv}/pyvenv.cfg").content_string
    where = gpu.check_output(f"{venv}/bin/python -c 'import torch; print(torch.__file__)'")
    assert where.startswith("/usr/lib/python3/dist-packages/torch/"), where
    assert gpu.package("python3-torch").is_installed
    assert not gpu.run(f"{venv}/bin/python -m pip show bitsandbytes").rc == 0


def test_the_service_runs_as_clinchat_serve(gpu):
    service = gpu.service(SERVICE)
    assert service.is_running and service.is_enabled
    pid = gpu.check_output(f"systemctl show -p MainPID --value {SERVICE}")
    assert gpu.check_output(f"ps -o user= -p {pid}") == "clinchat-serve"
    user = gpu.user("clinchat-serve")
    assert user.shell == "/usr/sbin/nologin"
    assert not gpu.file(user.home).exists
    listening = gpu.check_output(f"ss -Htlnp 'sport = :{PORT}'")
    assert f"{GPU}:{PORT}" in listening, listening


def test_the_model_is_read_only_to_the_service(gpu):
    directory = gpu.file(MODEL_DIR)
    assert (directory.user, directory.group, directory.mode) == ("root", "clinchat-serve", 0o750)
    manifest = json.loads(gpu.file(f"{MODEL_DIR}/manifest.json").content_string)
    for name, digest in manifest["files"].items():
        f = gpu.file(f"{MODEL_DIR}/{name}")
        assert (f.user, f.group, f.mode) == ("root", "clinchat-serve", 0o640), name
        assert f.sha256sum == digest, name


def test_the_api_key_is_only_a_credential(gpu, client, api_key):
    credential = gpu.file("/etc/clinchat/credentials/serving_api_key")
    assert (credential.user, credential.group, credential.mode) == ("root", "root", 0o600)
    assert credential.content_string == api_key
    unit = gpu.file("/etc/systemd/system/clinchat-serve.service").content_string
    assert "LoadCredential=api_key:/etc/clinchat/credentials/serving_api_key" in unit
    env = gpu.file("/etc/clinchat/serving.env")
    assert (env.user, env.group, env.mode) == ("root", "clinchat-serve", 0o640)
    pid = gpu.check_output(f"systemctl show -p MainPID --value {SERVICE}")
    # After the requests above (a wrong token among them), nothing has logged it.
    request(client, "GET", "/v1/models", token=api_key)
    places = {
        "unit": unit,
        "env file": env.content_string,
        "systemctl show": gpu.check_output(f"systemctl show {SERVICE}"),
        "command line": gpu.check_output(f"tr '\\0' ' ' < /proc/{pid}/cmdline"),
        "process environment": gpu.check_output(f"tr '\\0' '\\n' < /proc/{pid}/environ"),
        "journal": gpu.check_output(f"journalctl -u {SERVICE} --no-pager -o cat"),
    }
    for where, text in places.items():
        assert api_key not in text, f"the API key is in the {where}"
    assert "CREDENTIALS_DIRECTORY=" in places["process environment"]


def test_the_sandbox_exposure_is_low(gpu):
    out = gpu.check_output(f"systemd-analyze security --no-pager {SERVICE}.service")
    score = float(re.search(rf"Overall exposure level for {SERVICE}.service: ([0-9.]+)", out)[1])
    print(f"systemd-analyze security exposure: {score}")
    assert score <= EXPOSURE_MAX, out
    unit = gpu.file("/etc/systemd/system/clinchat-serve.service").content_string
    for line in ("ProtectSystem=strict", "PrivateDevices=yes", "NoNewPrivileges=yes"):
        assert line in unit


# -- a tampered model ------------------------------------------------------------------------


def playbook(*extra):
    """The scenario's converge, as molecule runs it (its inventory and ansible.cfg)."""
    inventory = os.environ["MOLECULE_INVENTORY_FILE"]
    env = dict(os.environ)
    config = Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"]) / "ansible.cfg"
    if config.is_file():
        env["ANSIBLE_CONFIG"] = str(config)
    argv = ["ansible-playbook", "-i", inventory, str(SCENARIO_DIR / "converge.yml"), *extra]
    return subprocess.run(argv, capture_output=True, text=True, env=env, check=False)


def wait_for_state(host, states, timeout_s=60):
    deadline = time.monotonic() + timeout_s
    state = ""
    while time.monotonic() < deadline:
        state = host.check_output(f"systemctl show -p ActiveState --value {SERVICE}")
        if state in states:
            return state
        time.sleep(1)
    return state


def test_a_tampered_model_stops_the_service_and_the_role_and_the_role_repairs_it(
    gpu, client, api_key, tmp_path
):
    weights = f"{MODEL_DIR}/model.safetensors"
    good = gpu.file(weights).sha256sum
    gpu.check_output(f"printf 'x' >> {weights}")
    gpu.check_output(f"systemctl restart {SERVICE}")
    assert wait_for_state(gpu, {"failed"}) == "failed"
    journal = gpu.check_output(f"journalctl -u {SERVICE} -n 20 --no-pager -o cat")
    assert "manifest check failed, refusing to start: model.safetensors: SHA-256 mismatch" in (
        journal
    ), journal
    assert request(client, "GET", "/v1/models", token=api_key)["status"] is None

    # A tampered source on the controller: the role fails naming the file, before any copy.
    source = BUNDLE / "models" / MODEL
    tampered = tmp_path / MODEL
    shutil.copytree(source, tampered)
    with (tampered / "tokenizer.json").open("a") as f:
        f.write(" ")
    run = playbook("-e", f"serving_model_src={tampered}", "--tags", "serving_model")
    output = run.stdout + run.stderr
    assert run.returncode != 0, output[-3000:]
    assert "tokenizer.json: SHA-256 mismatch" in output, output[-3000:]
    assert "nothing was copied" in output
    assert (
        gpu.file(f"{MODEL_DIR}/tokenizer.json").sha256sum
        == hashlib.sha256((source / "tokenizer.json").read_bytes()).hexdigest()
    )

    # The role's own run puts the model right and brings the service back.
    run = playbook()
    assert run.returncode == 0, (run.stdout + run.stderr)[-3000:]
    assert gpu.file(weights).sha256sum == good
    assert wait_for_state(gpu, {"active"}) == "active"
    response = request(client, "GET", "/v1/models", token=api_key)
    assert response["status"] == 200, response
