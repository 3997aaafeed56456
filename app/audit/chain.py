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
last id and hash with the ones syslog received (app/README.md, "Audit trail").
"""

import hashlib
import hmac
import json
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession

from app.audit import syslog
from app.metrics import AUDIT_WRITE_FAILURES
from app.models import AuditEvent
from app.settings import Environment, Settings

GENESIS = "0" * 64
_LOCK_ID = 0x636C696E636861  # "clincha": the advisory lock of the chain
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
        await session.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": _LOCK_ID})
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


@dataclass(frozen=True)
class Verdict:
    ok: bool
    checked: int
    first_broken_id: int | None = None
    reason: str = ""
    # the last row whose link holds: the whole chain's end when ``ok``
    last_id: int | None = None
    last_hash: str = GENESIS


class _Walk:
    """Checks rows one at a time, so a long chain is never held in memory at once."""

    def __init__(self, key: bytes) -> None:
        self.key, self.prev, self.count = key, GENESIS, 0
        self.last_id: int | None = None
        self.broken: Verdict | None = None

    def feed(self, row: AuditEvent) -> bool:
        """Check the next row; False once a link is broken (``broken`` says where)."""
        self.count += 1
        reason = ""
        if row.prev_hash != self.prev:
            reason = "prev_hash does not match the previous row"
        elif not hmac.compare_digest(row.hash, link(self.key, self.prev, row)):
            reason = "hash does not match the row's content"
        if reason:
            self.broken = Verdict(False, self.count, row.id, reason, self.last_id, self.prev)
            return False
        self.prev, self.last_id = row.hash, row.id
        return True

    def verdict(self) -> Verdict:
        return self.broken or Verdict(True, self.count, last_id=self.last_id, last_hash=self.prev)


def verify_rows(key: bytes, rows: Iterable[AuditEvent]) -> Verdict:
    walk = _Walk(key)
    for row in rows:
        if not walk.feed(row):
            break
    return walk.verdict()


async def verify(session: AsyncSession, settings: Settings) -> Verdict:
    """Walk the whole chain; name the first row whose link is broken."""
    walk = _Walk(hmac_key(settings))
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
