"""The bearer token from Vault/OpenBao, fetched once at start (roles/serving with a vault).

The server signs in with its own AppRole (``clinchat-serving``), whose policy
reads only ``<kv_mount>/data/<kv_path>``, and takes ``api_key`` from there.
The deployment gives the host the role id and a response-wrapped secret id
(roles/openbao ``approle_credentials``) as systemd credentials. A wrapping
token works once: the first start trades it for the secret id and keeps that
in ``secret_id_file`` (0600, the unit's state directory), with the SHA-256 of
the wrapping token next to it, so a restart reuses it and a new wrapping token
from the deployment replaces it. The token itself is only ever in memory.

Only the standard library: the serving's wheel needs no Vault client. Error
messages name what failed and never carry Vault's answer text or a secret.
"""

from __future__ import annotations

import hashlib
import json
import os
import ssl
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TIMEOUT_S = 10


class VaultUnavailable(Exception):
    """Vault cannot be reached, is sealed or answers 5xx: try again later (exit 3)."""


class VaultRefused(Exception):
    """Vault refused the credentials or the path: a deployment problem (exit 2)."""


@dataclass(frozen=True)
class VaultSource:
    addr: str
    ca_cert: Path | None
    role_id_file: Path
    wrapped_secret_id_file: Path | None
    secret_id_file: Path
    kv_mount: str = "clinchat"
    kv_path: str = "serving"
    key: str = "api_key"

    def api_key(self) -> str:
        """Sign in with the AppRole and read the token from the KV store."""
        role_id = _first_line(self.role_id_file, "the AppRole role id")
        token = self._call(
            "POST",
            "auth/approle/login",
            {"role_id": role_id, "secret_id": self.secret_id()},
            what="AppRole sign-in",
        )["auth"]["client_token"]
        data = self._call(
            "GET", f"{self.kv_mount}/data/{self.kv_path}", token=token, what="the KV secret"
        )
        value = (data.get("data") or {}).get("data", {}).get(self.key)
        if not isinstance(value, str) or not value.strip():
            raise VaultRefused(f"vault: {self.kv_mount}/{self.kv_path} has no {self.key!r}")
        return value.strip()

    def secret_id(self) -> str:
        """The secret id: unwrapped from a new wrapping token, else the one kept."""
        wrapped = ""
        if self.wrapped_secret_id_file is not None and self.wrapped_secret_id_file.is_file():
            wrapped = self.wrapped_secret_id_file.read_text(encoding="utf-8").strip()
        origin = self.secret_id_file.with_name(self.secret_id_file.name + ".from")
        digest = hashlib.sha256(wrapped.encode()).hexdigest()
        kept = self.secret_id_file.is_file() and origin.is_file()
        if kept and (not wrapped or origin.read_text(encoding="utf-8").strip() == digest):
            return _first_line(self.secret_id_file, "the kept secret id")
        if not wrapped:
            raise VaultRefused(
                "vault: no secret id: the host has neither a wrapped secret id nor a kept one "
                "(run the serving stage to give it one)"
            )
        try:
            answer = self._call("POST", "sys/wrapping/unwrap", {}, token=wrapped, what="unwrap")
        except VaultRefused as exc:
            raise VaultRefused(
                "vault refused to unwrap the secret id: the wrapping token was used or has "
                "expired. If this host did not use it, someone else did: investigate, then "
                "run the serving stage again to give the host a new one"
            ) from exc
        value = str((answer.get("data") or {}).get("secret_id", ""))
        if not value:
            raise VaultRefused("vault: the unwrap answer holds no secret id")
        for path, text in ((self.secret_id_file, value), (origin, digest)):
            _write_private(path, text)
        return value

    def _call(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        token: str = "",
        what: str = "",
    ) -> dict[str, Any]:
        request = urllib.request.Request(  # noqa: S310 (the address is the deployment's https URL)
            f"{self.addr.rstrip('/')}/v1/{path}",
            method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Content-Type": "application/json"}
            | ({"X-Vault-Token": token} if token else {}),
        )
        context = ssl.create_default_context(
            cafile=str(self.ca_cert) if self.ca_cert is not None else None
        )
        # The vault is on the hospital's network: never through a proxy from the environment.
        opener = urllib.request.build_opener(
            urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=context)
        )
        try:
            with opener.open(request, timeout=TIMEOUT_S) as response:
                answer = json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as exc:
            if exc.code >= 500 or exc.code == 429:
                raise VaultUnavailable(f"vault: {what} answered {exc.code}") from None
            raise VaultRefused(f"vault: {what} refused ({exc.code})") from None
        except (urllib.error.URLError, OSError, TimeoutError) as exc:
            raise VaultUnavailable(
                f"vault unreachable at {self.addr} ({type(exc).__name__})"
            ) from None
        except ValueError:
            raise VaultUnavailable(f"vault: {what} sent a malformed answer") from None
        if not isinstance(answer, dict):
            raise VaultUnavailable(f"vault: {what} sent a malformed answer")
        return answer


def _first_line(path: Path, what: str) -> str:
    try:
        text = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise VaultRefused(f"vault: cannot read {what} ({path}: {exc.strerror})") from None
    if not text:
        raise VaultRefused(f"vault: {what} ({path}) is empty")
    return text.splitlines()[0].strip()


def _write_private(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as file:
        file.write(text + "\n")
    tmp.replace(path)
