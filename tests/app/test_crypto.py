"""Envelope encryption with data keys from the real OpenBao (transit, AppRole).

Vault's own file audit device counts what the app asked it, so "once per data
key" is checked at Vault, not at a wrapper. The tests that take Vault away seal
it (unsealed again with the fixture's key) or stop and restart the same server,
so the session's OpenBao is whole again for the tests after them.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from app.crypto import Cipher, DecryptionError, KeysUnavailable, LocalKeys, cipher_for
from app.models import Role
from app.settings import EncryptionMode, Environment, Settings, get_settings
from app.vault_keys import UnwrapError, VaultKeys, unwrap_secret_id
from tests.services.openbao import APP_POLICY, ROLE, PrivateOpenBao, bao_binary
from tests.services.postgres import free_port

AAD = b"message"
SYNTHETIC = "Synthetic note for tests: no real patient."


def vault_settings(openbao: PrivateOpenBao, **update: object) -> Settings:
    """Development settings with nothing but the fixture's OpenBao."""
    fields: dict[str, object] = {
        "environment": "development",
        "encryption_mode": "vault",
        "vault_addr": openbao.addr,
        "vault_ca_cert": str(openbao.ca_cert),
        "vault_role_id": openbao.role_id,
        "vault_secret_id": openbao.secret_id,
    }
    return Settings.model_validate(fields | update)


def vault_requests(openbao: PrivateOpenBao, path: str) -> int:
    """How many requests for ``path`` OpenBao has answered (its audit log)."""
    count = 0
    for line in openbao.audit_log.read_text().splitlines():
        entry = json.loads(line)
        if entry.get("type") == "response" and entry.get("request", {}).get("path") == path:
            count += 1
    return count


DATAKEY = "transit/datakey/plaintext/clinchat"
DECRYPT = "transit/decrypt/clinchat"
LOGIN = "auth/approle/login"


def wait_active(openbao: PrivateOpenBao, timeout_s: float = 30) -> None:
    """Until OpenBao answers sys/health 200 (initialised, unsealed, active)."""
    deadline = time.monotonic() + timeout_s
    with openbao.client() as api:
        while time.monotonic() < deadline:
            try:
                status = api.get("/sys/health").status_code
                if status == 200:
                    return
                if status == 503:  # sealed (a restarted server): unseal it
                    api.put("/sys/unseal", json={"key": openbao.unseal_key})
            except httpx.TransportError:
                pass
            time.sleep(0.1)
    raise RuntimeError("OpenBao did not become active again")


def restart(openbao: PrivateOpenBao) -> None:
    """Start the stopped server again on its own storage, then unseal it (no new init)."""
    with openbao.log_file.open("ab") as log:
        openbao.process = subprocess.Popen(  # noqa: S603
            [str(bao_binary()), "server", f"-config={openbao.root / 'bao.hcl'}"],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(openbao.root)},
            cwd=openbao.root,
        )
    wait_active(openbao)


# -- the round trip --------------------------------------------------------------------


def test_round_trip_through_vault(openbao: PrivateOpenBao) -> None:
    settings = vault_settings(openbao)
    cipher = cipher_for(settings)
    assert isinstance(cipher.keeper, VaultKeys)
    blob = cipher.encrypt_text(SYNTHETIC, AAD)
    assert b"vault:v1:" in blob, "the wrapped data key is transit's ciphertext"
    assert SYNTHETIC.encode() not in blob
    # another process (no cache) unwraps the data key through Vault
    assert Cipher(VaultKeys(settings)).decrypt_text(blob, AAD) == SYNTHETIC
    assert cipher.decrypt_text(blob, AAD) == SYNTHETIC


def test_vault_is_asked_once_per_data_key_not_per_value(openbao: PrivateOpenBao) -> None:
    settings = vault_settings(openbao)
    datakeys, decrypts = vault_requests(openbao, DATAKEY), vault_requests(openbao, DECRYPT)
    writer = Cipher(VaultKeys(settings), ttl_s=300)
    blobs = [writer.encrypt_text(f"value {n}", AAD) for n in range(25)]
    assert vault_requests(openbao, DATAKEY) == datakeys + 1

    reader = Cipher(VaultKeys(settings), ttl_s=300)
    assert [reader.decrypt_text(b, AAD) for b in blobs] == [f"value {n}" for n in range(25)]
    assert vault_requests(openbao, DECRYPT) == decrypts + 1


def test_a_data_key_is_used_a_bounded_number_of_times(openbao: PrivateOpenBao) -> None:
    datakeys = vault_requests(openbao, DATAKEY)
    cipher = Cipher(VaultKeys(vault_settings(openbao)), max_uses=3)
    for n in range(7):
        cipher.encrypt_text(f"value {n}", AAD)
    assert vault_requests(openbao, DATAKEY) == datakeys + 3  # 3 + 3 + 1


def test_cached_keys_expire_after_the_ttl(openbao: PrivateOpenBao) -> None:
    settings = vault_settings(openbao, data_key_ttl_s=1)
    cipher = cipher_for(settings)
    datakeys, decrypts = vault_requests(openbao, DATAKEY), vault_requests(openbao, DECRYPT)
    first = cipher.encrypt_text("one", AAD)
    assert cipher.decrypt_text(first, AAD) == "one"
    # the unwrapped cache is filled by decrypting; the encrypting side does not seed it
    assert vault_requests(openbao, DECRYPT) == decrypts + 1
    time.sleep(1.2)
    second = cipher.encrypt_text("two", AAD)
    assert vault_requests(openbao, DATAKEY) == datakeys + 2, "a new data key after the TTL"
    assert first[:60] != second[:60]
    assert cipher.decrypt_text(first, AAD) == "one"
    assert vault_requests(openbao, DECRYPT) == decrypts + 2, "the unwrapped key was forgotten"


# -- tokens ----------------------------------------------------------------------------


def test_a_revoked_token_signs_in_again(openbao: PrivateOpenBao) -> None:
    keys = VaultKeys(vault_settings(openbao))
    keys.new_data_key()
    logins = vault_requests(openbao, LOGIN)
    with openbao.client(openbao.root_token) as api:
        # every token AppRole has handed out, the keeper's among them
        api.put("/sys/leases/revoke-prefix/auth/approle/login").raise_for_status()
    key, wrapped = keys.new_data_key()
    assert keys.unwrap(wrapped) == key
    assert vault_requests(openbao, LOGIN) == logins + 1


@pytest.fixture
def short_lived_role(openbao: PrivateOpenBao) -> tuple[str, str]:
    """An AppRole like the app's whose tokens live 3 seconds: (role id, secret id)."""
    role = "clinchat-short"
    with openbao.client(openbao.root_token) as api:
        api.post(f"/sys/policies/acl/{role}", json={"policy": APP_POLICY}).raise_for_status()
        api.post(
            f"/auth/approle/role/{role}", json={"token_policies": [role], "token_ttl": "3s"}
        ).raise_for_status()
        role_id = api.get(f"/auth/approle/role/{role}/role-id").json()["data"]["role_id"]
        secret_id = api.post(f"/auth/approle/role/{role}/secret-id").json()["data"]["secret_id"]
    return role_id, secret_id


def test_an_expiring_token_is_renewed_by_signing_in(
    openbao: PrivateOpenBao, short_lived_role: tuple[str, str]
) -> None:
    role_id, secret_id = short_lived_role
    keys = VaultKeys(vault_settings(openbao, vault_role_id=role_id, vault_secret_id=secret_id))
    keys.new_data_key()
    logins = vault_requests(openbao, LOGIN)
    time.sleep(3.2)  # past the token's lease: Vault would answer 403 to it
    key, wrapped = keys.new_data_key()
    assert keys.unwrap(wrapped) == key
    assert vault_requests(openbao, LOGIN) == logins + 1


def test_a_wrong_secret_id_is_keys_unavailable(openbao: PrivateOpenBao) -> None:
    keys = VaultKeys(vault_settings(openbao, vault_secret_id=str(uuid.uuid4())))
    with pytest.raises(KeysUnavailable) as caught:
        keys.new_data_key()
    assert "AppRole" in str(caught.value)


def test_threads_share_one_keeper(openbao: PrivateOpenBao) -> None:
    from concurrent.futures import ThreadPoolExecutor

    keys = VaultKeys(vault_settings(openbao))
    with ThreadPoolExecutor(8) as pool:
        pairs = list(pool.map(lambda _: keys.new_data_key(), range(16)))
        unwrapped = list(pool.map(lambda pair: keys.unwrap(pair[1]), pairs))
    assert unwrapped == [key for key, _ in pairs]


# -- what does not decrypt -------------------------------------------------------------


def test_a_blob_moved_to_another_purpose_fails(openbao: PrivateOpenBao) -> None:
    cipher = cipher_for(vault_settings(openbao))
    blob = cipher.encrypt_text(SYNTHETIC, b"message")
    with pytest.raises(DecryptionError):
        cipher.decrypt(blob, b"conversation-title")


def test_tampered_blobs_fail(openbao: PrivateOpenBao) -> None:
    settings = vault_settings(openbao)
    blob = cipher_for(settings).encrypt_text(SYNTHETIC, AAD)
    body = bytearray(blob)
    body[-1] ^= 0x01
    with pytest.raises(DecryptionError):
        cipher_for(settings).decrypt(bytes(body), AAD)
    # a changed wrapped key: Vault itself refuses it (a fresh cipher has nothing cached)
    wrapped_at = blob.index(b"vault:v1:") + len(b"vault:v1:") + 4
    changed = bytearray(blob)
    changed[wrapped_at] = ord("A") if changed[wrapped_at] != ord("A") else ord("B")
    with pytest.raises(DecryptionError):
        Cipher(VaultKeys(settings)).decrypt(bytes(changed), AAD)
    for broken in (b"", b"CE1", blob[:20], b"not a blob at all"):
        with pytest.raises(DecryptionError):
            cipher_for(settings).decrypt(broken, AAD)


def test_a_locally_wrapped_key_is_not_sent_to_vault(
    openbao: PrivateOpenBao, tmp_path: Path
) -> None:
    local_blob = Cipher(LocalKeys(tmp_path / "local.key")).encrypt(b"x", AAD)
    decrypts = vault_requests(openbao, DECRYPT)
    with pytest.raises(DecryptionError):
        cipher_for(vault_settings(openbao)).decrypt(local_blob, AAD)
    assert vault_requests(openbao, DECRYPT) == decrypts


# -- local keys and production ---------------------------------------------------------


def test_local_keys_are_refused_in_production(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key_file = str(tmp_path / "local.key")
    # as the hosts set it: production is the default, local keys asked for in the environment
    monkeypatch.setenv("CLINCHAT_ENCRYPTION_MODE", "local")
    monkeypatch.setenv("CLINCHAT_LOCAL_KEY_FILE", key_file)
    with pytest.raises(ValidationError, match="production needs vault"):
        Settings()  # type: ignore[call-arg]
    monkeypatch.setenv("CLINCHAT_ENVIRONMENT", "development")
    development = Settings()  # type: ignore[call-arg]
    cipher = cipher_for(development)
    assert cipher.decrypt_text(cipher.encrypt_text("local", AAD), AAD) == "local"
    # settings that skipped validation are still refused where keys are made
    smuggled = development.model_copy(update={"environment": Environment.production})
    assert smuggled.encryption_mode is EncryptionMode.local
    with pytest.raises(RuntimeError, match="refused in production"):
        cipher_for(smuggled)


# -- Vault away ------------------------------------------------------------------------


def closed_port_settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"vault_addr": f"https://127.0.0.1:{free_port()}"})


def test_nothing_listening_is_keys_unavailable(openbao: PrivateOpenBao) -> None:
    cipher = cipher_for(closed_port_settings(vault_settings(openbao)))
    with pytest.raises(KeysUnavailable) as caught:
        cipher.encrypt_text(SYNTHETIC, AAD)
    assert "ConnectionError" in str(caught.value)


def test_not_configured_is_keys_unavailable() -> None:
    keys = VaultKeys(Settings.model_validate({"environment": "development", "vault_addr": ""}))
    with pytest.raises(KeysUnavailable, match="not configured"):
        keys.new_data_key()


def test_an_untrusted_certificate_is_keys_unavailable(
    openbao: PrivateOpenBao, tmp_path: Path
) -> None:
    from tests.services.pki import make_pki

    other_ca = str(make_pki(tmp_path).ca_cert)
    keys = VaultKeys(vault_settings(openbao, vault_ca_cert=other_ca))
    with pytest.raises(KeysUnavailable, match="SSLError"):
        keys.new_data_key()


def test_a_sealed_vault_is_keys_unavailable_until_unsealed(openbao: PrivateOpenBao) -> None:
    keys = VaultKeys(vault_settings(openbao))
    _, wrapped = keys.new_data_key()
    with openbao.client(openbao.root_token) as api:
        api.put("/sys/seal").raise_for_status()
    try:
        with pytest.raises(KeysUnavailable, match="VaultDown"):
            keys.unwrap(wrapped)
        with pytest.raises(KeysUnavailable):
            keys.new_data_key()
    finally:
        with openbao.client() as api:
            api.put("/sys/unseal", json={"key": openbao.unseal_key}).raise_for_status()
        wait_active(openbao)
    keys.unwrap(wrapped)  # the same keeper works again


def test_a_stopped_vault_is_keys_unavailable_until_restarted(openbao: PrivateOpenBao) -> None:
    keys = VaultKeys(vault_settings(openbao))
    key, wrapped = keys.new_data_key()  # a pooled connection to the server that goes away
    openbao.stop()
    try:
        with pytest.raises(KeysUnavailable):
            keys.unwrap(wrapped)
        with pytest.raises(KeysUnavailable):
            keys.new_data_key()
    finally:
        restart(openbao)
    assert keys.unwrap(wrapped) == key


def test_a_route_that_encrypts_answers_503_naming_vault(
    login: Callable[..., TestClient], settings: Settings
) -> None:
    from app.main import app

    clinician = login(Role.clinician)
    down = closed_port_settings(settings)
    app.dependency_overrides[get_settings] = lambda: down
    response = clinician.post("/api/v1/conversations", json={"title": "Synthetic title"})
    assert response.status_code == 503, response.text
    assert response.json() == {"detail": "vault is unavailable", "down": ["vault"]}
    assert "Synthetic" not in response.text
    # nothing was stored: the conversation went with the failed transaction
    app.dependency_overrides[get_settings] = lambda: settings
    assert clinician.get("/api/v1/conversations").json() == []
    created = clinician.post("/api/v1/conversations", json={"title": "Synthetic title"})
    assert created.status_code == 201, created.text


def test_no_secret_reaches_an_error(openbao: PrivateOpenBao) -> None:
    settings = closed_port_settings(vault_settings(openbao))
    with pytest.raises(KeysUnavailable) as caught:
        VaultKeys(settings).new_data_key()
    text = f"{caught.value} {caught.value.__cause__!r}"
    assert openbao.secret_id not in text


# -- the deployment's response-wrapped secret id (clinchat-admin vault-unwrap) -----------


def wrapped_secret_id(openbao: PrivateOpenBao) -> str:
    """What roles/openbao gives a host: a secret id wrapped in a single-use token."""
    with openbao.client(openbao.root_token) as api:
        response = api.post(
            f"/auth/approle/role/{ROLE}/secret-id", headers={"X-Vault-Wrap-TTL": "300s"}
        )
    response.raise_for_status()
    return str(response.json()["wrap_info"]["token"])


def test_a_wrapped_secret_id_is_unwrapped_once_and_signs_in(
    openbao: PrivateOpenBao, tmp_path: Path
) -> None:
    target = tmp_path / "state" / "vault_secret_id"
    target.parent.mkdir()
    wrapped = wrapped_secret_id(openbao)
    settings = vault_settings(
        openbao,
        vault_secret_id="",
        vault_wrapped_secret_id=wrapped,
        vault_secret_id_file=str(target),
    )
    assert unwrap_secret_id(settings) == "unwrapped the secret id"
    assert target.stat().st_mode & 0o777 == 0o600
    assert wrapped not in target.read_text()
    # A restart: the same token is not traded again (it would be refused).
    assert unwrap_secret_id(settings) == "the secret id of this wrapping token is already unwrapped"
    keys = VaultKeys(settings)
    key, blob = keys.new_data_key()
    assert keys.unwrap(blob) == key


def test_a_used_wrapping_token_is_refused_and_named(
    openbao: PrivateOpenBao, tmp_path: Path
) -> None:
    wrapped = wrapped_secret_id(openbao)
    with openbao.client(wrapped) as api:  # someone else trades it first
        api.post("/sys/wrapping/unwrap").raise_for_status()
    target = tmp_path / "vault_secret_id"
    settings = vault_settings(
        openbao,
        vault_secret_id="",
        vault_wrapped_secret_id=wrapped,
        vault_secret_id_file=str(target),
    )
    with pytest.raises(UnwrapError) as caught:
        unwrap_secret_id(settings)
    assert "used or has expired" in str(caught.value)
    assert wrapped not in str(caught.value)
    assert not target.exists()


def test_without_an_unwrapped_secret_id_keys_are_unavailable(
    openbao: PrivateOpenBao, tmp_path: Path
) -> None:
    settings = vault_settings(
        openbao, vault_secret_id="", vault_secret_id_file=str(tmp_path / "missing")
    )
    with pytest.raises(KeysUnavailable) as caught:
        VaultKeys(settings).new_data_key()
    assert "vault-unwrap" in str(caught.value)
