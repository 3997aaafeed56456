"""The serving's bearer token from a real OpenBao (tests/services/openbao.py): its own
AppRole, a response-wrapped secret id used once, the KV path its policy allows and no other."""

from __future__ import annotations

import hashlib
import stat
from pathlib import Path

import pytest

from serving.cli import serve
from serving.vault import VaultRefused, VaultSource, VaultUnavailable
from tests.services.fixtures import openbao, pki  # noqa: F401
from tests.services.openbao import KV_MOUNT, PrivateOpenBao, _ok

ROLE = "clinchat-serving"
# As roles/openbao's default for this role: read its own KV path, nothing else.
POLICY = f'path "{KV_MOUNT}/data/serving" {{ capabilities = ["read"] }}'
TOKEN = "serving-token-for-tests"  # noqa: S105 (a test value, not a secret)


@pytest.fixture(scope="module")
def serving_role(openbao: PrivateOpenBao) -> str:  # noqa: F811
    """The serving's AppRole and its secret in KV; returns the role id."""
    with openbao.client(openbao.root_token) as api:
        _ok(api.post(f"/sys/policies/acl/{ROLE}", json={"policy": POLICY}))
        _ok(api.post(f"/auth/approle/role/{ROLE}", json={"token_policies": [ROLE]}))
        _ok(api.post(f"/{KV_MOUNT}/data/serving", json={"data": {"api_key": TOKEN}}))
        _ok(api.post(f"/{KV_MOUNT}/data/app", json={"data": {"serving_token": "app-side"}}))
        return str(_ok(api.get(f"/auth/approle/role/{ROLE}/role-id")).json()["data"]["role_id"])


def wrapped_secret_id(openbao: PrivateOpenBao) -> str:  # noqa: F811
    """A new response-wrapped secret id, as roles/openbao's approle_credentials mints it."""
    with openbao.client(openbao.root_token) as api:
        answer = api.post(
            f"/auth/approle/role/{ROLE}/secret-id", headers={"X-Vault-Wrap-TTL": "300s"}
        )
        return str(_ok(answer).json()["wrap_info"]["token"])


def source(openbao: PrivateOpenBao, role_id: str, tmp: Path, **kw: object) -> VaultSource:  # noqa: F811
    (tmp / "role_id").write_text(role_id + "\n")
    wrapped = tmp / "wrapped"
    if not wrapped.exists():
        wrapped.write_text(wrapped_secret_id(openbao))
    args = {
        "addr": openbao.addr,
        "ca_cert": openbao.ca_cert,
        "role_id_file": tmp / "role_id",
        "wrapped_secret_id_file": wrapped,
        "secret_id_file": tmp / "secret_id",
    } | kw
    return VaultSource(**args)  # type: ignore[arg-type]


def test_token_from_kv_and_secret_id_kept(
    openbao: PrivateOpenBao,  # noqa: F811
    serving_role: str,
    tmp_path: Path,
) -> None:
    vault = source(openbao, serving_role, tmp_path)
    assert vault.api_key() == TOKEN
    kept = tmp_path / "secret_id"
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600
    wrapped = (tmp_path / "wrapped").read_text().strip()
    assert (tmp_path / "secret_id.from").read_text().strip() == hashlib.sha256(
        wrapped.encode()
    ).hexdigest()
    # A restart: the wrapping token is spent, the kept secret id signs in.
    assert vault.api_key() == TOKEN
    # A new wrapping token from the deployment replaces the kept secret id.
    (tmp_path / "wrapped").write_text(wrapped_secret_id(openbao))
    before = kept.read_text()
    assert vault.api_key() == TOKEN
    assert kept.read_text() != before


def test_used_wrapping_token_is_an_alarm(
    openbao: PrivateOpenBao,  # noqa: F811
    serving_role: str,
    tmp_path: Path,
) -> None:
    vault = source(openbao, serving_role, tmp_path)
    # Someone else unwrapped it first.
    with openbao.client((tmp_path / "wrapped").read_text().strip()) as api:
        _ok(api.post("/sys/wrapping/unwrap", json={}))
    with pytest.raises(VaultRefused, match="used or has expired.*investigate"):
        vault.api_key()
    assert not (tmp_path / "secret_id").exists()


def test_policy_allows_only_its_own_path(
    openbao: PrivateOpenBao,  # noqa: F811
    serving_role: str,
    tmp_path: Path,
) -> None:
    vault = source(openbao, serving_role, tmp_path, kv_path="app")
    with pytest.raises(VaultRefused, match=r"the KV secret refused \(403\)") as caught:
        vault.api_key()
    assert "app-side" not in str(caught.value)


def test_wrong_role_id_refused(
    openbao: PrivateOpenBao,  # noqa: F811
    serving_role: str,
    tmp_path: Path,
) -> None:
    vault = source(openbao, "not-" + serving_role, tmp_path)
    with pytest.raises(VaultRefused, match="AppRole sign-in refused"):
        vault.api_key()


def test_untrusted_certificate_is_unavailable_not_trusted(
    openbao: PrivateOpenBao,  # noqa: F811
    serving_role: str,
    tmp_path: Path,
) -> None:
    # The system's trust store does not hold the test CA: the handshake fails.
    vault = source(openbao, serving_role, tmp_path, ca_cert=None)
    with pytest.raises(VaultUnavailable, match="vault unreachable"):
        vault.api_key()
    assert not (tmp_path / "secret_id").exists()


def test_cli_exit_status_names_vault(
    openbao: PrivateOpenBao,  # noqa: F811
    serving_role: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    (tmp_path / "role_id").write_text("not-a-role\n")
    common = [
        "--model-dir",
        str(tmp_path / "no-model"),
        "--host",
        "127.0.0.1",
        "--port",
        "0",
    ]
    env = {
        "CLINCHAT_SERVE_VAULT_ROLE_ID_FILE": str(tmp_path / "role_id"),
        "CLINCHAT_SERVE_VAULT_SECRET_ID_FILE": str(tmp_path / "secret_id"),
        "CLINCHAT_SERVE_VAULT_CA_CERT": str(openbao.ca_cert),
    }
    with pytest.MonkeyPatch.context() as mp:
        for name, value in env.items():
            mp.setenv(name, value)
        mp.setenv("CLINCHAT_SERVE_VAULT_ADDR", openbao.addr)
        assert serve(common) == 2  # no secret id at all: the deployment must fix it
        assert "no secret id" in capsys.readouterr().err
        (tmp_path / "wrapped").write_text(wrapped_secret_id(openbao))
        mp.setenv("CLINCHAT_SERVE_VAULT_WRAPPED_SECRET_ID_FILE", str(tmp_path / "wrapped"))
        assert serve(common) == 2  # unwrapped, then the sign-in is refused
        assert "AppRole sign-in refused (400)" in capsys.readouterr().err
        mp.setenv("CLINCHAT_SERVE_VAULT_ADDR", "https://127.0.0.1:1")
        (tmp_path / "wrapped").write_text(wrapped_secret_id(openbao))
        assert serve(common) == 3  # nothing listens: systemd tries again
        assert "vault unreachable at https://127.0.0.1:1" in capsys.readouterr().err
