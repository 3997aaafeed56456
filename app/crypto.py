"""Envelope encryption of sensitive columns and files (AES-256-GCM).

Each value is encrypted with a 256-bit data key; the data key is stored beside
the ciphertext, wrapped by a key-encryption key that never leaves its keeper:
Vault/OpenBao's transit engine in production (``VaultKeys`` in
app/vault_keys.py), or a key file in development (``LocalKeys``, refused when
the settings say production). A data key is reused for a bounded time and
number of values, and unwrapped keys are cached for that time, so Vault is
asked once per data key, not once per value.

Blob layout (all lengths big-endian)::

    b"CE2" | u16 len(wrapped) | wrapped | 12-byte nonce | ciphertext+tag

``aad`` binds a blob to the column and row it belongs to (app/sealed.py): a blob
moved into another column, row or user's conversation fails to decrypt. Blobs
``CE1`` were bound only to their purpose (e.g. b"message"); migration 0005 binds
them to their rows, and only that path (``decrypt_legacy``) still reads them.
"""

from __future__ import annotations

import os
import secrets
import struct
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from app.settings import EncryptionMode, Environment, Settings

MAGIC = b"CE2"
LEGACY_MAGIC = b"CE1"  # before row binding: read only to re-encrypt (app/sealed.py)


class DecryptionError(Exception):
    """A blob is corrupt, was moved, or its data key cannot be unwrapped."""


class KeysUnavailable(RuntimeError):
    """The key keeper (Vault) cannot be reached: answer 503 naming it."""


class KeyKeeper(Protocol):
    def new_data_key(self) -> tuple[bytes, bytes]:
        """A fresh (plaintext key, wrapped key)."""

    def unwrap(self, wrapped: bytes) -> bytes: ...


class LocalKeys:
    """Development: the key-encryption key is a 32-byte file (created if missing)."""

    def __init__(self, path: Path) -> None:
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as handle:
                handle.write(secrets.token_bytes(32))
        kek = path.read_bytes()
        if len(kek) != 32:
            raise ValueError(f"{path}: a local key file holds exactly 32 bytes")
        self._kek = AESGCM(kek)

    def new_data_key(self) -> tuple[bytes, bytes]:
        key = AESGCM.generate_key(bit_length=256)
        nonce = secrets.token_bytes(12)
        return key, b"local:" + nonce + self._kek.encrypt(nonce, key, b"data-key")

    def unwrap(self, wrapped: bytes) -> bytes:
        if not wrapped.startswith(b"local:"):
            raise DecryptionError("data key was not wrapped by the local key")
        body = wrapped[len(b"local:") :]
        try:
            return self._kek.decrypt(body[:12], body[12:], b"data-key")
        except InvalidTag as exc:
            raise DecryptionError("data key does not unwrap with this local key") from exc


@dataclass
class _CurrentKey:
    key: bytes
    wrapped: bytes
    born: float
    uses: int = 0


class Cipher:
    """Encrypts and decrypts blobs with data keys from ``keeper``; thread-safe."""

    def __init__(self, keeper: KeyKeeper, ttl_s: float = 300, max_uses: int = 10000) -> None:
        self.keeper = keeper
        self.ttl_s = ttl_s
        self.max_uses = max_uses
        self._lock = threading.Lock()
        self._current: _CurrentKey | None = None
        self._unwrapped: dict[bytes, tuple[bytes, float]] = {}

    def _data_key(self) -> _CurrentKey:
        with self._lock:
            now = time.monotonic()
            current = self._current
            if current is None or now - current.born > self.ttl_s or current.uses >= self.max_uses:
                key, wrapped = self.keeper.new_data_key()
                current = self._current = _CurrentKey(key, wrapped, now)
            current.uses += 1
            return current

    def _unwrap(self, wrapped: bytes) -> bytes:
        now = time.monotonic()
        with self._lock:
            # forget what has outlived its time, so the cache stays bounded
            for old in [w for w, (_, t) in self._unwrapped.items() if now - t > self.ttl_s]:
                del self._unwrapped[old]
            hit = self._unwrapped.get(wrapped)
        if hit:
            return hit[0]
        key = self.keeper.unwrap(wrapped)
        with self._lock:
            self._unwrapped[wrapped] = (key, now)
        return key

    def encrypt(self, plaintext: bytes, aad: bytes) -> bytes:
        current = self._data_key()
        nonce = secrets.token_bytes(12)
        body = AESGCM(current.key).encrypt(nonce, plaintext, aad)
        return MAGIC + struct.pack(">H", len(current.wrapped)) + current.wrapped + nonce + body

    def decrypt(self, blob: bytes, aad: bytes) -> bytes:
        if blob.startswith(LEGACY_MAGIC):
            raise DecryptionError("written before row binding: run clinchat-admin migrate")
        return self._decrypt(blob, aad, MAGIC)

    def decrypt_legacy(self, blob: bytes, aad: bytes) -> bytes:
        """A blob written before row binding (``CE1``), to re-encrypt it."""
        return self._decrypt(blob, aad, LEGACY_MAGIC)

    def _decrypt(self, blob: bytes, aad: bytes, magic: bytes) -> bytes:
        if not blob.startswith(magic):
            raise DecryptionError("not an encrypted blob")
        wrapped, rest = _split(blob)
        try:
            return AESGCM(self._unwrap(wrapped)).decrypt(rest[:12], rest[12:], aad)
        except InvalidTag as exc:
            raise DecryptionError("blob fails authentication (corrupt or moved)") from exc

    def encrypt_text(self, text: str, aad: bytes) -> bytes:
        return self.encrypt(text.encode(), aad)

    def decrypt_text(self, blob: bytes, aad: bytes) -> str:
        return self.decrypt(blob, aad).decode()


def _split(blob: bytes) -> tuple[bytes, bytes]:
    """(wrapped data key, nonce + ciphertext) of a blob of either version."""
    if len(blob) < 5 or blob[:3] not in (MAGIC, LEGACY_MAGIC):
        raise DecryptionError("not an encrypted blob")
    (length,) = struct.unpack(">H", blob[3:5])
    wrapped, rest = blob[5 : 5 + length], blob[5 + length :]
    if len(wrapped) != length or len(rest) < 12 + 16:
        raise DecryptionError("truncated blob")
    return wrapped, rest


def wrapped_key(blob: bytes) -> bytes:
    """The blob's wrapped data key (says which key version wrapped it)."""
    return _split(blob)[0]


_ciphers: dict[int, tuple[Settings, Cipher]] = {}
_ciphers_lock = threading.Lock()


def cipher_for(settings: Settings) -> Cipher:
    """The process's cipher for these settings (one data-key cache per process)."""
    with _ciphers_lock:
        if id(settings) not in _ciphers:
            _ciphers[id(settings)] = (settings, new_cipher(settings))
        return _ciphers[id(settings)][1]


def new_cipher(settings: Settings) -> Cipher:
    """A cipher of its own: its first data key is new, wrapped by the newest key version
    (what re-encrypting after a key rotation needs: app/sealed.py)."""
    keeper: KeyKeeper
    if settings.encryption_mode is EncryptionMode.local:
        if settings.environment is Environment.production:
            raise RuntimeError("local encryption keys are refused in production")
        if not settings.local_key_file:
            raise RuntimeError("CLINCHAT_LOCAL_KEY_FILE is required with encryption_mode=local")
        keeper = LocalKeys(Path(settings.local_key_file))
    else:
        from app.vault_keys import VaultKeys

        keeper = VaultKeys(settings)
    return Cipher(keeper, settings.data_key_ttl_s, settings.data_key_max_uses)
