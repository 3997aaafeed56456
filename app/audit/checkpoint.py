"""Checkpoints of the audit chain, signed by a key the app host cannot read.

Every ``audit_checkpoint_interval_s`` the worker appends an ``audit.checkpoint`` event
holding the id and hash of the chain's newest row, the time, and Vault transit's
Ed25519 signature of the three (key ``vault_audit_key``). The app's Vault policy may
ask for a signature and read the public key; the private key cannot be exported.
Like every event, a checkpoint also goes to syslog, off the host.

What this adds to the HMAC chain: whoever holds the app host holds the HMAC key and
could write a whole new chain that verifies; they cannot make Vault sign its
checkpoints. ``audit verify`` checks each checkpoint's signature and that it names
the row just before it, and reports the last checkpoint's time and how many events
follow it. Removing the newest rows removes the newest checkpoints with them: a last
checkpoint much older than the interval means rows were removed or the worker has
stopped, and syslog's copies of the checkpoints say which.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta

from sqlalchemy import select, text

from app.audit.chain import CHAIN_LOCK_ID, CHECKPOINT, GENESIS, Actor, checkpoint_message, record
from app.models import AuditEvent
from app.settings import Settings

log = logging.getLogger(__name__)

SYSTEM = Actor(username="clinchat-system")


async def write_checkpoint(settings: Settings) -> AuditEvent | None:
    """Append one signed checkpoint, unless another host wrote one in the last half
    interval (every app host runs a worker). Raises KeysUnavailable when Vault cannot sign.
    """
    from app.db import sessionmaker
    from app.vault_keys import VaultKeys

    signer = VaultKeys(settings)  # one AppRole sign-in per checkpoint, every few minutes
    async with sessionmaker(settings)() as session, session.begin():
        # The chain's lock (record takes it too): no event lands between the row we
        # sign and the checkpoint that follows it.
        await session.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": CHAIN_LOCK_ID})
        newest = (
            await session.execute(
                select(AuditEvent.id, AuditEvent.hash, AuditEvent.action, AuditEvent.ts)
                .order_by(AuditEvent.id.desc())
                .limit(1)
            )
        ).first()
        recent = datetime.now(UTC) - timedelta(seconds=settings.audit_checkpoint_interval_s / 2)
        if newest is not None and newest.action == CHECKPOINT and newest.ts > recent:
            return None
        covers_id = newest.id if newest is not None else None
        covers_hash = newest.hash if newest is not None else GENESIS
        ts = datetime.now(UTC).isoformat(timespec="seconds")
        # Vault answers in milliseconds; the lock is held that long, every few minutes.
        data = checkpoint_message(covers_id, covers_hash, ts)
        signature = await asyncio.to_thread(signer.sign, data)
        detail = {"covers_id": covers_id, "covers_hash": covers_hash, "ts": ts,
                  "key": settings.vault_audit_key, "signature": signature}  # fmt: skip
        return await record(session, settings, CHECKPOINT, SYSTEM, detail=detail)


async def run_checkpoints(settings: Settings, stop: asyncio.Event) -> None:
    """The worker's periodic checkpoint, until ``stop`` is set. Off without Vault
    (development); a failure is logged and retried at the next interval."""
    if not settings.vault_addr or settings.audit_checkpoint_interval_s <= 0:
        return
    while True:
        try:
            await write_checkpoint(settings)
        except Exception as exc:  # noqa: BLE001 -- Vault or the database down: next interval
            log.warning("audit checkpoint: %s, next try in %d s", type(exc).__name__,
                        settings.audit_checkpoint_interval_s)  # fmt: skip
        try:
            await asyncio.wait_for(stop.wait(), timeout=settings.audit_checkpoint_interval_s)
            return
        except TimeoutError:
            pass
