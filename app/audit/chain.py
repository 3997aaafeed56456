"""Append-only audit events chained by HMAC.

Each row's ``hash`` is HMAC-SHA256(key, prev_hash || canonical JSON of the row), so
changing, removing or reordering a row breaks every later link, and nobody without
the key can re-forge the chain. Appends are serialised by a transaction-scoped
advisory lock: the chain is one line even with many workers. The app's database
role may INSERT and SELECT here, never UPDATE or DELETE (migration 0001's grants).

``record`` writes in the caller's transaction: the event commits with the change it
describes, or neither does. A failure to write is counted and raised (fail closed).
Once the transaction commits, the event also goes to syslog when one is configured
(app/audit/syslog.py); a rolled-back event never does.

``verify`` walks the chain and reports the last event's id and hash: removing the
newest rows leaves a shorter chain that still verifies, so an auditor compares that
last id and hash with the ones syslog received (app/README.md, "Audit trail"). It also
checks the signed checkpoints among the rows (app/audit/checkpoint.py) and says how
old the last one is and how many events follow it.
"""

import asyncio
import base64
import binascii
import hashlib
import hmac
import json
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession

from app.audit import syslog
from app.metrics import AUDIT_WRITE_FAILURES
from app.models import AuditEvent
from app.settings import Environment, Settings

GENESIS = "0" * 64
CHAIN_LOCK_ID = 0x636C696E636861  # "clincha": the advisory lock of the chain
# Development without a configured key gets a fixed, public one: the chain still
# detects edits, but anyone could re-forge it. Production refuses to run without a key.
_DEVELOPMENT_KEY = b"clinchat-development-audit-key"


class AuditUnavailable(RuntimeError):
    """The audit trail cannot be written: the request must not go ahead."""


def hmac_key(settings: Settings) -> bytes:
    """The audit HMAC key (a fixed development key outside production)."""
    key = settings.audit_hmac_key.get_secret_value().encode()
    if key:
        return key
    if settings.environment is Environment.production:
        raise AuditUnavailable(
            "CLINCHAT_AUDIT_HMAC_KEY is not set (credential clinchat_audit_hmac_key)"
        )
    return _DEVELOPMENT_KEY


def canonical(event: AuditEvent) -> bytes:
    fields = {
        "ts": event.ts.astimezone(UTC).isoformat(timespec="microseconds"),
        "action": event.action,
        "outcome": event.outcome,
        "actor": event.actor,
        "actor_roles": sorted(event.actor_roles or []),
        "entity_type": event.entity_type or "",
        "entity_id": event.entity_id or "",
        "break_glass": bool(event.break_glass),
        "source_ip": event.source_ip or "",
        "detail": event.detail or {},
    }
    return json.dumps(fields, sort_keys=True, separators=(",", ":"), default=str).encode()


def link(key: bytes, prev_hash: str, event: AuditEvent) -> str:
    return hmac.new(key, prev_hash.encode() + b"|" + canonical(event), hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class Actor:
    """Who did it, as the audit trail records it."""

    username: str = "anonymous"
    roles: tuple[str, ...] = ()
    break_glass: bool = False
    source_ip: str = ""


async def record(
    session: AsyncSession,
    settings: Settings,
    action: str,
    actor: Actor,
    *,
    outcome: str = "success",
    entity_type: str = "",
    entity_id: str | uuid.UUID = "",
    detail: dict[str, Any] | None = None,
) -> AuditEvent:
    """Append one event in ``session``'s transaction (the caller commits).

    ``detail`` holds identifiers and counts only, never text a user typed.
    """
    try:
        key = hmac_key(settings)
        await session.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": CHAIN_LOCK_ID})
        prev = await session.scalar(select(AuditEvent.hash).order_by(AuditEvent.id.desc()).limit(1))
        event = AuditEvent(
            ts=datetime.now(UTC),
            action=action,
            outcome=outcome,
            actor=actor.username,
            actor_roles=sorted(actor.roles),
            entity_type=entity_type,
            entity_id=str(entity_id),
            break_glass=actor.break_glass,
            source_ip=actor.source_ip,
            detail=detail or {},
            prev_hash=prev or GENESIS,
        )
        event.hash = link(key, event.prev_hash, event)
        session.add(event)
        await session.flush()
    except Exception as exc:
        AUDIT_WRITE_FAILURES.inc()
        if isinstance(exc, AuditUnavailable):
            raise
        raise AuditUnavailable(f"audit write failed ({type(exc).__name__})") from exc
    # sent only if and when the caller's transaction commits
    syslog.schedule(session, settings, event)
    return event


CHECKPOINT = syslog.CHECKPOINT


def checkpoint_message(covers_id: int | None, covers_hash: str, ts: str) -> bytes:
    """The bytes Vault signs for a checkpoint: what it vouches for, and when."""
    return f"clinchat-audit-checkpoint|{covers_id or 0}|{covers_hash}|{ts}".encode()


def checkpoint_signed(keys: dict[int, bytes], detail: dict[str, Any]) -> bool:
    """Whether a checkpoint's signature (``vault:v<n>:<base64>``) is the audit key's."""
    try:
        _, version, signature = str(detail["signature"]).split(":", 2)
        public = keys[int(version.removeprefix("v"))]
        data = checkpoint_message(detail["covers_id"], str(detail["covers_hash"]), detail["ts"])
        Ed25519PublicKey.from_public_bytes(public).verify(base64.b64decode(signature), data)
    except (KeyError, ValueError, TypeError, binascii.Error, InvalidSignature):
        return False
    return True


@dataclass(frozen=True)
class Verdict:
    ok: bool
    checked: int
    first_broken_id: int | None = None
    reason: str = ""
    # the last row whose link holds: the whole chain's end when ``ok``
    last_id: int | None = None
    last_hash: str = GENESIS
    # signed checkpoints (app/audit/checkpoint.py); signatures unchecked without keys
    checkpoints: int = 0
    last_checkpoint_id: int | None = None
    last_checkpoint_ts: str = ""
    after_checkpoint: int = 0  # events after the last checkpoint (all, if there is none)
    signatures_checked: bool = False


class _Walk:
    """Checks rows one at a time, so a long chain is never held in memory at once.

    ``keys``: the audit key's public keys by version; None leaves checkpoint
    signatures unchecked (no Vault configured), their links are checked all the same.
    """

    def __init__(self, key: bytes, keys: dict[int, bytes] | None = None) -> None:
        self.key, self.keys, self.prev, self.count = key, keys, GENESIS, 0
        self.last_id: int | None = None
        self.broken: Verdict | None = None
        self.checkpoints, self.after = 0, 0
        self.last_checkpoint_id: int | None = None
        self.last_checkpoint_ts = ""

    def feed(self, row: AuditEvent) -> bool:
        """Check the next row; False once a link is broken (``broken`` says where)."""
        self.count += 1
        reason = ""
        if row.prev_hash != self.prev:
            reason = "prev_hash does not match the previous row"
        elif not hmac.compare_digest(row.hash, link(self.key, self.prev, row)):
            reason = "hash does not match the row's content"
        elif row.action == CHECKPOINT:
            reason = self._checkpoint(row)
        if reason:
            self.broken = self._verdict(False, row.id, reason)
            return False
        self.prev, self.last_id = row.hash, row.id
        self.after = 0 if row.action == CHECKPOINT else self.after + 1
        return True

    def _checkpoint(self, row: AuditEvent) -> str:
        detail = row.detail or {}
        if detail.get("covers_id") != self.last_id or detail.get("covers_hash") != self.prev:
            return "checkpoint does not name the row before it"
        if self.keys is not None and not checkpoint_signed(self.keys, detail):
            return "checkpoint signature is not the audit key's"
        self.checkpoints += 1
        self.last_checkpoint_id, self.last_checkpoint_ts = row.id, str(detail.get("ts", ""))
        return ""

    def _verdict(self, ok: bool, broken_id: int | None = None, reason: str = "") -> Verdict:
        return Verdict(
            ok,
            self.count,
            broken_id,
            reason,
            self.last_id,
            self.prev,
            checkpoints=self.checkpoints,
            last_checkpoint_id=self.last_checkpoint_id,
            last_checkpoint_ts=self.last_checkpoint_ts,
            after_checkpoint=self.after,
            signatures_checked=self.keys is not None,
        )

    def verdict(self) -> Verdict:
        return self.broken or self._verdict(True)


def verify_rows(
    key: bytes, rows: Iterable[AuditEvent], keys: dict[int, bytes] | None = None
) -> Verdict:
    walk = _Walk(key, keys)
    for row in rows:
        if not walk.feed(row):
            break
    return walk.verdict()


def audit_public_keys(settings: Settings) -> dict[int, bytes] | None:
    """The checkpoint key's public keys from Vault; None when no Vault is configured.
    Raises KeysUnavailable when Vault is configured but cannot answer."""
    if not settings.vault_addr:
        return None
    from app.vault_keys import VaultKeys

    return VaultKeys(settings).public_keys()


async def verify(session: AsyncSession, settings: Settings) -> Verdict:
    """Walk the whole chain; name the first row whose link or checkpoint is broken."""
    keys = await asyncio.to_thread(audit_public_keys, settings)
    walk = _Walk(hmac_key(settings), keys)
    result = await session.stream_scalars(
        select(AuditEvent).order_by(AuditEvent.id).execution_options(yield_per=1000)
    )
    try:
        async for row in result:
            if not walk.feed(row):
                break
    finally:
        await result.close()
    return walk.verdict()
