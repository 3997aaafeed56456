"""Signed checkpoints of the audit chain (app/audit/checkpoint.py) against the real
OpenBao: a host that holds the HMAC key can append events that link, but not a
checkpoint that verifies, and ``verify`` says how many events the last one leaves
unanchored."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Iterator
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from app.audit import checkpoint
from app.audit.chain import CHECKPOINT, Actor, Verdict, checkpoint_message, record, verify
from app.crypto import KeysUnavailable
from app.settings import Settings
from tests.app.data.kbdb import isolated_settings
from tests.app.test_admin import TRIGGER, query
from tests.services.postgres import PrivatePostgres


@pytest.fixture(scope="module")
def own_settings(base_settings: Settings, postgres: PrivatePostgres) -> Settings:
    """A database of this module's own: the forgeries below never reach another test."""
    return isolated_settings(base_settings, postgres)


def run(coro: Any) -> Any:
    return asyncio.run(coro)


async def _events(settings: Settings, count: int) -> None:
    from app.db import dispose_all, sessionmaker

    async with sessionmaker(settings)() as session, session.begin():
        for n in range(count):
            await record(session, settings, "test.event", Actor("tester"), detail={"n": n})
    await dispose_all()


async def _verify(settings: Settings) -> Verdict:
    from app.db import dispose_all, sessionmaker

    async with sessionmaker(settings)() as session:
        verdict = await verify(session, settings)
    await dispose_all()
    return verdict


async def _checkpoint(settings: Settings) -> Any:
    from app.db import dispose_all

    try:
        return await checkpoint.write_checkpoint(settings)
    finally:
        await dispose_all()


async def _append_checkpoint(settings: Settings, detail: dict[str, Any]) -> int:
    """What a host holding the HMAC key can do: append a checkpoint row that links."""
    from app.db import dispose_all, sessionmaker

    async with sessionmaker(settings)() as session, session.begin():
        event = await record(session, settings, CHECKPOINT, checkpoint.SYSTEM, detail=detail)
    await dispose_all()
    return event.id


@pytest.fixture
def cleanup(own_settings: Settings, postgres: PrivatePostgres) -> Iterator[None]:
    """Remove the rows a test forged (only a superuser can: the table is append-only)."""
    [(last,)] = query(own_settings, "SELECT coalesce(max(id), 0) FROM audit_events")
    yield
    postgres.psql(
        f"ALTER TABLE audit_events DISABLE TRIGGER {TRIGGER}; "
        f"DELETE FROM audit_events WHERE id > {last}; "
        f"ALTER TABLE audit_events ENABLE TRIGGER {TRIGGER}",
        database=own_settings.db_name,
    )


def test_a_checkpoint_is_signed_by_vault_and_verifies(own_settings: Settings) -> None:
    run(_events(own_settings, 3))
    event = run(_checkpoint(own_settings))
    assert event is not None and event.action == CHECKPOINT
    detail = event.detail
    assert detail["signature"].startswith("vault:v1:") and detail["key"] == "clinchat-audit"
    [(before_id, before_hash)] = query(
        own_settings, "SELECT id, hash FROM audit_events WHERE id < %s ORDER BY id DESC LIMIT 1",
        event.id,
    )  # fmt: skip
    assert (detail["covers_id"], detail["covers_hash"]) == (before_id, before_hash)
    verdict = run(_verify(own_settings))
    assert verdict.ok and verdict.signatures_checked, verdict
    assert verdict.last_checkpoint_id == event.id and verdict.after_checkpoint == 0
    # another host's worker a moment later: one checkpoint per half interval is enough
    assert run(_checkpoint(own_settings)) is None


def test_events_after_the_last_checkpoint_are_counted(own_settings: Settings) -> None:
    first = run(_verify(own_settings))
    run(_events(own_settings, 2))
    verdict = run(_verify(own_settings))
    assert verdict.ok and verdict.checked == first.checked + 2
    assert verdict.last_checkpoint_id == first.last_checkpoint_id
    assert verdict.after_checkpoint == first.after_checkpoint + 2


def test_a_checkpoint_the_host_signed_itself_is_refused(
    own_settings: Settings, cleanup: None
) -> None:
    """What the HMAC chain alone cannot catch: the host's key links any row it writes."""
    own_key = Ed25519PrivateKey.generate()
    [(last_id, last_hash)] = query(
        own_settings, "SELECT id, hash FROM audit_events ORDER BY id DESC LIMIT 1"
    )
    ts = "2026-12-07T06:00:00+00:00"
    signature = own_key.sign(checkpoint_message(last_id, last_hash, ts))
    detail = {"covers_id": last_id, "covers_hash": last_hash, "ts": ts, "key": "clinchat-audit",
              "signature": "vault:v1:" + base64.b64encode(signature).decode()}  # fmt: skip
    forged = run(_append_checkpoint(own_settings, detail))
    verdict = run(_verify(own_settings))
    assert not verdict.ok and verdict.first_broken_id == forged
    assert verdict.reason == "checkpoint signature is not the audit key's"


def test_a_real_checkpoint_copied_to_the_end_is_refused(
    own_settings: Settings, cleanup: None
) -> None:
    """A genuine signature replayed after other rows names the wrong row."""
    real = run(_checkpoint(own_settings))
    [(detail,)] = query(
        own_settings,
        "SELECT detail FROM audit_events WHERE action = %s ORDER BY id DESC LIMIT 1",
        CHECKPOINT,
    )
    assert real is None or real.detail == detail
    run(_events(own_settings, 1))

    replayed = run(_append_checkpoint(own_settings, detail))
    verdict = run(_verify(own_settings))
    assert not verdict.ok and verdict.first_broken_id == replayed
    assert verdict.reason == "checkpoint does not name the row before it"


def test_vault_refusing_to_sign_writes_nothing(own_settings: Settings) -> None:
    [(count,)] = query(own_settings, "SELECT count(*) FROM audit_events")
    # a key the app's policy does not cover: OpenBao answers 403
    other = own_settings.model_copy(update={"vault_audit_key": "not-the-audit-key",
                                            "audit_checkpoint_interval_s": 1})  # fmt: skip
    run(_events(own_settings, 1))
    with pytest.raises(KeysUnavailable):
        run(_checkpoint(other))
    assert query(own_settings, "SELECT count(*) FROM audit_events") == [(count + 1,)]
