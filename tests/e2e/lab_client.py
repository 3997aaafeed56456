"""What the end-to-end tests use to reach the split lab (inventories/lab/lab.yml):
its addresses, ansible-playbook with its recap, SSH with the lab's host keys,
a browser-like HTTPS client through nginx, and the directory's passwords."""

import json
import re
import shlex
import ssl
import subprocess
import time
from pathlib import Path

import httpx

from tests.e2e.conftest import run

WEB = "https://10.213.0.11"
WEB_HOST = "10.213.0.11"
APP_HOST = "10.213.0.12"
DIR_HOST = "10.213.0.15"
DATA_HOST = "10.213.0.13"
GPU_HOST = "10.213.0.14"
LAB_CA = Path("/var/lib/clinchat/pki/lab/ca.crt")
SSH_KEY = Path("/var/lib/clinchat-lab/ssh/id_ed25519")
KNOWN_HOSTS = Path("/var/lib/clinchat-lab/known_hosts")
SECRETS = Path("/var/lib/clinchat/secrets/lab")
RECAP = re.compile(
    r"^(?P<host>\S+)\s*:\s*ok=\d+\s+changed=(?P<changed>\d+)\s+unreachable=(?P<unreachable>\d+)\s+failed=(?P<failed>\d+)",
    re.M,
)


def playbook(*args: str) -> tuple[dict[str, dict[str, int]], str]:
    result = run("ansible-playbook", *args, check=False)
    output = result.stdout + result.stderr
    recap = {
        m["host"]: {k: int(m[k]) for k in ("changed", "unreachable", "failed")}
        for m in RECAP.finditer(output)
    }
    return recap, output if result.returncode == 0 else f"rc={result.returncode}\n{output[-6000:]}"


def ssh(host: str, command: str, stdin: str = "") -> str:
    """Run a command on a lab host as root, its host key checked."""
    return subprocess.run(  # noqa: S603
        [
            "ssh",
            "-i",
            str(SSH_KEY),
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            f"UserKnownHostsFile={KNOWN_HOSTS}",
            "-o",
            "LogLevel=ERROR",
            f"root@{host}",
            command,
        ],
        check=True,
        capture_output=True,
        text=True,
        input=stdin,
        timeout=120,
    ).stdout


def ready() -> httpx.Response:
    return httpx.get(
        f"{WEB}/health/ready", verify=ssl.create_default_context(cafile=LAB_CA), timeout=10
    )


def wait_for_database(state: str, timeout_s: float = 30) -> dict:
    deadline = time.monotonic() + timeout_s
    body = ready().json()
    while body["checks"]["database"] != state and time.monotonic() < deadline:
        time.sleep(1)
        body = ready().json()
    return body


def browser() -> httpx.Client:
    """A client like a clinician's browser: HTTPS through nginx, the lab CA, cookies."""
    return httpx.Client(base_url=WEB, verify=ssl.create_default_context(cafile=LAB_CA), timeout=30)


def directory_password(uid: str) -> str:
    """The synthetic person's password, made by roles/lab_directory on the controller."""
    return (SECRETS / f"ldap_user_{uid}").read_text().split()[0]


def sign_in(client: httpx.Client, uid: str) -> dict:
    response = client.post(
        "/api/v1/auth/login", json={"username": uid, "password": directory_password(uid)}
    )
    assert response.status_code == 200, response.text
    return response.json()


# Python on a lab host (every host has python3): an HTTPS request, the lab CA trusted.
_FROM_HOST = """
import json, ssl, sys, urllib.error, urllib.request
context = ssl.create_default_context(cafile="/etc/clinchat/pki/ca.crt")
statuses = []
for _ in range(int(sys.argv[3])):
    request = urllib.request.Request(sys.argv[1], data=sys.argv[2].encode() or None,
                                     headers={"Content-Type": "application/json"})
    try:
        statuses.append(urllib.request.urlopen(request, context=context, timeout=10).status)
    except urllib.error.HTTPError as error:
        # nginx's own refusals are HTML; the app answers JSON
        html = error.headers.get("Content-Type", "").startswith("text/html")
        statuses.append(f"{error.code} nginx" if html else error.code)
print(json.dumps(statuses))
"""


def statuses_from(host: str, url: str, body: str = "", times: int = 1) -> list[int | str]:
    """What a client on another lab host gets (not the controller)."""
    command = f"python3 -c {shlex.quote(_FROM_HOST)} {shlex.quote(url)} {shlex.quote(body)} {times}"
    return json.loads(ssh(host, command))


# The lab's policy document and a question it answers (synthetic text).
POLICY_TEXT = (
    "Synthetic hand hygiene policy for the lab. Clean hands before and after every "
    "patient contact. Rub alcohol hand rub over all surfaces of the hands for at "
    "least twenty seconds, until dry.\n"
)
POLICY_QUESTION = "How long should alcohol hand rub be rubbed over the hands?"


def upload_policy(
    client: httpx.Client,
    csrf_token: str,
    text: str = POLICY_TEXT,
    name: str = "hand-hygiene.md",
    collection: str | None = None,
) -> dict:
    """The admin's upload (unique bytes: the same file twice is refused as a
    duplicate), then wait until the worker made it the live version."""
    data = f"{text}\nReference {time.time_ns()}.\n".encode()
    response = client.post(
        "/api/v1/documents",
        files={"file": (name, data, "text/markdown")},
        data={"collection": collection} if collection else {},
        headers={"X-CSRF-Token": csrf_token},
    )
    assert response.status_code == 201, response.text
    document = response.json()
    deadline = time.monotonic() + 180
    while document["live_version"] is None and time.monotonic() < deadline:
        time.sleep(2)
        document = client.get(f"/api/v1/documents/{document['id']}").json()
    return document


def ask(
    client: httpx.Client, conversation_id: str, question: str, headers: dict[str, str]
) -> list[tuple[str, dict]]:
    """A question, and the answer's server-sent events as they stream: (event, data)."""
    events: list[tuple[str, dict]] = []
    with client.stream(
        "POST",
        f"/api/v1/conversations/{conversation_id}/messages",
        json={"content": question},
        headers=headers,
        timeout=180,
    ) as response:
        assert response.status_code == 200, response.read().decode()
        name = ""
        for line in response.iter_lines():
            if line.startswith("event: "):
                name = line.removeprefix("event: ")
            elif line.startswith("data: "):
                events.append((name, json.loads(line.removeprefix("data: "))))
    return events
