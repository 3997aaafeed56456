"""Data keys from Vault/OpenBao transit: the production ``KeyKeeper`` of app/crypto.py.

The app signs in with AppRole (``vault_role_id`` / ``vault_secret_id``), verifies
Vault's certificate against ``vault_ca_cert``, asks
``<mount>/datakey/plaintext/<key>`` for each new data key and
``<mount>/decrypt/<key>`` to unwrap one; the key-encryption key never leaves
Vault. ``Cipher`` caches data keys, so Vault is asked once per data key.

Failures:

- Vault unreachable, sealed, answering 5xx, or refusing the app's role:
  :class:`app.crypto.KeysUnavailable` (the app answers 503 naming "vault");
- a wrapped key Vault will not decrypt (tampered, or not one of this key's):
  :class:`app.crypto.DecryptionError`.

The token is renewed by signing in again: shortly before its lease ends, and once
at once when Vault answers 403 (the token was revoked or expired early).
Exception messages carry exception types only, never Vault's answer text.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hvac
import hvac.exceptions
import requests

from app.crypto import DecryptionError, KeysUnavailable
from app.settings import Settings

log = logging.getLogger(__name__)

TIMEOUT_S = 5
# Sign in again when this share of the token's lease has passed.
TOKEN_RENEW_AT = 0.8
WRAPPED_PREFIX = b"vault:"

# Vault down, sealed, overloaded or misconfigured (no such mount or key): a 503, not a 500.
_UNAVAILABLE = (
    requests.exceptions.RequestException,
    hvac.exceptions.VaultDown,
    hvac.exceptions.VaultNotInitialized,
    hvac.exceptions.InternalServerError,
    hvac.exceptions.BadGateway,
    hvac.exceptions.RateLimitExceeded,
    hvac.exceptions.UnexpectedError,
    hvac.exceptions.InvalidPath,
    hvac.exceptions.Unauthorized,
    hvac.exceptions.PreconditionFailed,
)

Response = dict[str, Any]


def secret_id(settings: Settings) -> str:
    """The AppRole secret id: given as such, or unwrapped into vault_secret_id_file."""
    given = settings.vault_secret_id.get_secret_value()
    if given or not settings.vault_secret_id_file:
        return given
    try:
        return Path(settings.vault_secret_id_file).read_text().strip()
    except OSError as exc:
        raise KeysUnavailable(
            "vault: no AppRole secret id (clinchat-admin vault-unwrap has not run)"
        ) from exc


class UnwrapError(Exception):
    """The wrapped secret id cannot be traded; the message says what to do."""


def unwrap_secret_id(settings: Settings, timeout_s: float = TIMEOUT_S) -> str:
    """Trade the response-wrapped secret id for the secret id, once per wrapping token,
    and keep it in ``vault_secret_id_file`` (0600). Returns what happened.

    A wrapping token works once. The file next to the secret id records which
    token it came from (a SHA-256), so a restart reuses it and a new token from
    the deployment replaces it. An unwrap Vault refuses means the token was used
    or expired: someone else may have unwrapped it, which is the alarm.
    """
    wrapped = settings.vault_wrapped_secret_id.get_secret_value().strip()
    if not wrapped or not settings.vault_secret_id_file:
        raise UnwrapError(
            "nothing to unwrap: CLINCHAT_VAULT_SECRET_ID_FILE and the credential "
            "clinchat_vault_wrapped_secret_id are both needed"
        )
    target = Path(settings.vault_secret_id_file)
    origin = target.with_name(target.name + ".from")
    digest = hashlib.sha256(wrapped.encode()).hexdigest()
    if target.is_file() and origin.is_file() and origin.read_text().strip() == digest:
        return "the secret id of this wrapping token is already unwrapped"
    client = hvac.Client(
        url=settings.vault_addr, verify=settings.vault_ca_cert or True, timeout=timeout_s
    )
    client.token = wrapped
    try:
        answer = client.sys.unwrap()
        value = str(answer["data"]["secret_id"])
    except (hvac.exceptions.InvalidRequest, hvac.exceptions.Forbidden) as exc:
        raise UnwrapError(
            "vault refused to unwrap the secret id: the wrapping token was used or has "
            "expired. If this host did not use it, someone else did: investigate, then "
            "run the app stage again to give the host a new one"
        ) from exc
    except _UNAVAILABLE as exc:
        raise UnwrapError(f"vault unreachable ({type(exc).__name__})") from exc
    except (KeyError, TypeError) as exc:
        raise UnwrapError("vault sent a malformed unwrap answer") from exc
    for path, text in ((target, value), (origin, digest)):
        tmp = path.with_name(path.name + ".tmp")
        tmp.unlink(missing_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as file:
            file.write(text + "\n")
        tmp.replace(path)
    return "unwrapped the secret id"


class VaultKeys:
    """Data keys wrapped by the transit key ``settings.vault_transit_key``; thread-safe."""

    def __init__(self, settings: Settings, timeout_s: float = TIMEOUT_S) -> None:
        self._settings = settings
        self._timeout_s = timeout_s
        self._lock = threading.Lock()  # guards the token and signing in
        self._token = ""
        self._token_renew_at = 0.0
        # One HTTP client per thread: a requests session is not safe to share between them.
        self._local = threading.local()

    # -- KeyKeeper ----------------------------------------------------------------------

    def new_data_key(self) -> tuple[bytes, bytes]:
        """A fresh 256-bit data key and its transit ciphertext (``vault:v<n>:...``)."""
        settings = self._settings
        answer = self._call(
            lambda client: client.secrets.transit.generate_data_key(
                name=settings.vault_transit_key,
                key_type="plaintext",
                bits=256,
                mount_point=settings.vault_transit_mount,
            ),
            "new data key",
            refused=KeysUnavailable,
        )
        try:
            key = base64.b64decode(answer["data"]["plaintext"], validate=True)
            wrapped = str(answer["data"]["ciphertext"]).encode("ascii")
        except (KeyError, TypeError, ValueError, binascii.Error) as exc:
            raise KeysUnavailable("vault sent a malformed data key") from exc
        if len(key) != 32:
            raise KeysUnavailable("vault sent a data key that is not 256 bits")
        return key, wrapped

    def unwrap(self, wrapped: bytes) -> bytes:
        if not wrapped.startswith(WRAPPED_PREFIX):
            raise DecryptionError("data key was not wrapped by vault")
        settings = self._settings
        try:
            ciphertext = wrapped.decode("ascii")
        except UnicodeDecodeError as exc:
            raise DecryptionError("data key is not a vault ciphertext") from exc
        answer = self._call(
            lambda client: client.secrets.transit.decrypt_data(
                name=settings.vault_transit_key,
                ciphertext=ciphertext,
                mount_point=settings.vault_transit_mount,
            ),
            "unwrap",
            refused=DecryptionError,  # tampered, or wrapped by another key
        )
        try:
            return base64.b64decode(answer["data"]["plaintext"], validate=True)
        except (KeyError, TypeError, ValueError, binascii.Error) as exc:
            raise KeysUnavailable("vault sent a malformed key") from exc

    # -- signing the audit chain's checkpoints (app/audit/checkpoint.py) -------------------

    def sign(self, data: bytes) -> str:
        """Vault's signature of ``data`` by ``vault_audit_key`` (``vault:v<n>:...``): the
        private key never leaves Vault, so nobody on the app host can sign."""
        settings = self._settings
        answer = self._call(
            lambda client: client.secrets.transit.sign_data(
                name=settings.vault_audit_key,
                hash_input=base64.b64encode(data).decode(),
                mount_point=settings.vault_transit_mount,
            ),
            "sign",
            refused=KeysUnavailable,
        )
        try:
            return str(answer["data"]["signature"])
        except (KeyError, TypeError) as exc:
            raise KeysUnavailable("vault sent a malformed signature") from exc

    def public_keys(self) -> dict[int, bytes]:
        """Every version of ``vault_audit_key``'s public key (raw Ed25519 bytes)."""
        settings = self._settings
        answer = self._call(
            lambda client: client.secrets.transit.read_key(
                name=settings.vault_audit_key, mount_point=settings.vault_transit_mount
            ),
            "read the audit key",
            refused=KeysUnavailable,
        )
        try:
            return {
                int(version): base64.b64decode(entry["public_key"], validate=True)
                for version, entry in answer["data"]["keys"].items()
            }
        except (KeyError, TypeError, ValueError, AttributeError, binascii.Error) as exc:
            raise KeysUnavailable("vault sent a malformed public key") from exc

    # -- the app's secrets in the KV store -------------------------------------------------

    def read_secrets(self) -> dict[str, str]:
        """The app's secrets: KV v2 ``<vault_kv_mount>/data/<vault_kv_path>``."""
        settings = self._settings
        answer = self._call(
            lambda client: client.secrets.kv.v2.read_secret_version(
                path=settings.vault_kv_path,
                mount_point=settings.vault_kv_mount,
                raise_on_deleted_version=True,
            ),
            "secrets",
            refused=KeysUnavailable,
        )
        try:
            return {str(k): str(v) for k, v in answer["data"]["data"].items()}
        except (KeyError, TypeError, AttributeError) as exc:
            raise KeysUnavailable("vault sent malformed secrets") from exc

    # -- talking to Vault ---------------------------------------------------------------

    def _client(self) -> hvac.Client:
        client: hvac.Client | None = getattr(self._local, "client", None)
        if client is None:
            client = hvac.Client(
                url=self._settings.vault_addr,
                verify=self._settings.vault_ca_cert or True,
                timeout=self._timeout_s,
            )
            self._local.client = client
        return client

    def _login(self) -> None:
        """AppRole sign-in; the caller holds ``self._lock``."""
        settings = self._settings
        try:
            answer = self._client().auth.approle.login(
                role_id=settings.vault_role_id,
                secret_id=secret_id(settings),
                use_token=False,
            )
        except (hvac.exceptions.InvalidRequest, hvac.exceptions.Forbidden) as exc:
            # a wrong or expired secret id: the app cannot get keys until an operator acts
            log.error("vault: AppRole sign-in refused (%s)", type(exc).__name__)
            raise KeysUnavailable("vault refused the AppRole sign-in") from exc
        except _UNAVAILABLE as exc:
            raise KeysUnavailable(f"vault unreachable ({type(exc).__name__})") from exc
        try:
            token = str(answer["auth"]["client_token"])
            lease_s = float(answer["auth"].get("lease_duration") or 0)
        except (KeyError, TypeError, ValueError) as exc:
            raise KeysUnavailable("vault sent a malformed sign-in answer") from exc
        self._token = token
        # lease 0: a token that does not expire
        self._token_renew_at = (
            time.monotonic() + lease_s * TOKEN_RENEW_AT if lease_s > 0 else float("inf")
        )
        log.info("vault: signed in with AppRole")

    def _valid_token(self, refused: str = "") -> str:
        """A token to use: signs in when there is none, it is old, or it is ``refused``."""
        with self._lock:
            stale = time.monotonic() >= self._token_renew_at
            if not self._token or self._token == refused or stale:
                self._login()
            return self._token

    def _call(
        self,
        request: Callable[[hvac.Client], Response],
        what: str,
        refused: type[Exception],
    ) -> Response:
        """``request`` with a valid token; a 403 means the token went bad: sign in, try once more.

        Vault's 400 (it will not do this with this input) raises ``refused``.
        """
        if not self._settings.vault_addr:
            raise KeysUnavailable("vault is not configured")
        token = self._valid_token()
        for attempt in (1, 2):
            client = self._client()
            client.token = token
            try:
                return request(client)
            except hvac.exceptions.Forbidden as exc:
                if attempt == 2:
                    # refused with a fresh token: the role's policy lacks this key
                    log.error("vault: %s refused to a fresh token", what)
                    raise KeysUnavailable("vault refuses the app's role") from exc
                log.info("vault: token refused, signing in again")
                token = self._valid_token(refused=token)
            except hvac.exceptions.InvalidRequest as exc:
                raise refused(f"vault refused the {what} request") from exc
            except _UNAVAILABLE as exc:
                log.warning("vault: %s failed (%s)", what, type(exc).__name__)
                raise KeysUnavailable(f"vault unreachable ({type(exc).__name__})") from exc
        raise AssertionError("unreachable")  # the loop returns or raises


SECRETS_TTL_S = 300.0  # a secret changed in Vault reaches the app within this time
_secret_readers: dict[tuple[str, str, str, str], tuple[VaultKeys, dict[str, str], float]] = {}
_secret_lock = threading.Lock()


def app_secret(settings: Settings, name: str) -> str:
    """One of the app's secrets from Vault's KV store (cached SECRETS_TTL_S).

    Raises KeysUnavailable when Vault is not configured, unreachable, refuses the
    app's role, or does not hold ``name``.
    """
    if not settings.vault_addr:
        raise KeysUnavailable("vault is not configured")
    where = (
        settings.vault_addr,
        settings.vault_role_id,
        settings.vault_kv_mount,
        settings.vault_kv_path,
    )
    with _secret_lock:
        reader, values, read_at = _secret_readers.get(where, (None, {}, 0.0))
        if reader is None or time.monotonic() - read_at >= SECRETS_TTL_S:
            reader = reader or VaultKeys(settings)
            values = reader.read_secrets()
            _secret_readers[where] = (reader, values, time.monotonic())
    if not values.get(name):
        log.error("vault: the app's secrets hold no %s", name)
        raise KeysUnavailable(f"vault holds no {name}")
    return values[name]
