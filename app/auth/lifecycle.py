"""Leavers lose access: disabling a user, and the directory sync that does it by itself.

- ``disable`` sets ``users.disabled``, revokes every API token of the user and ends
  every session, audited (``user.disabled`` with a fixed reason code). The flag is
  committed first: if Redis is down when the sessions are ended, the per-request
  check below still refuses them.
- ``user_active`` is that check: every session request asks it, and it reads the
  database at most once per ``user_recheck_s`` per user and process. API tokens read
  the user's row on every request already (app/auth/tokens.py).
- ``sync_directory`` looks up every enabled directory user with the service
  account (app/auth/ldap.py ``lookup_many``): one the directory no longer has, or
  who lost every ClinChat group, is disabled; one whose roles changed gets the new
  roles and a fresh sign-in (sessions ended). The user's groups are refreshed too;
  when the groups that grant a collection (app/kb/collections.py) changed, that is
  audited (``user.groups_changed``) and the sessions end as well. The ingestion worker runs it every
  ``directory_sync_interval_s`` (one host at a time: a PostgreSQL advisory lock);
  ``clinchat-admin users sync`` runs it at once. A directory that does not answer
  changes nothing, and a run that would disable more than ``MAX_LEAVERS_SHARE``
  of the directory users at once stops instead (a wrong base DN reads as "everyone
  left"): an operator then runs it with ``--force``.

Enabling again is an admin's decision (``clinchat-admin users enable``), never the
sync's: a person back in the directory was disabled for a reason someone should see.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime

import anyio.to_thread
from sqlalchemy import func, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.audit import record
from app.audit.chain import Actor
from app.auth.ldap import AMBIGUOUS, DirectoryUser, lookup_many, normalise_dn, roles_for
from app.auth.sessions import SessionStore
from app.auth.tokens import ApiToken
from app.db import sessionmaker
from app.kb.collections import collection_groups
from app.models import User
from app.redis_client import redis_for
from app.settings import Settings

log = logging.getLogger(__name__)

DIRECTORY_SYNC = Actor(username="directory-sync", roles=("system",))
# Reason codes: the audit trail holds identifiers, never text someone typed.
REASONS = ("left_directory", "no_role_group", "left", "suspended", "compromised")
# More than this share of the directory users gone in one run: stop, something is wrong.
MAX_LEAVERS_SHARE = 0.25
MIN_USERS_FOR_SHARE = 8
# Not the audit chain's lock id (app/audit/chain.py): one sync at a time per site.
_SYNC_LOCK_ID = 0x636C_7379_6E63  # "clsync"

_ACTIVE: dict[uuid.UUID, tuple[bool, float]] = {}


class SyncRefused(Exception):
    """The sync would disable too many users at once; nothing was changed."""


@dataclass
class SyncReport:
    checked: int = 0
    disabled: list[str] = field(default_factory=list)
    roles_changed: list[str] = field(default_factory=list)
    groups_changed: list[str] = field(default_factory=list)  # collection groups only
    ambiguous: list[str] = field(default_factory=list)
    skipped: bool = False  # another host holds the sync lock


async def user_active(settings: Settings, user_id: uuid.UUID) -> bool:
    """Whether the user exists and is not disabled (cached ``user_recheck_s`` seconds)."""
    now = time.monotonic()
    hit = _ACTIVE.get(user_id)
    if hit is not None and now - hit[1] < settings.user_recheck_s:
        return hit[0]
    async with sessionmaker(settings)() as db:
        disabled = await db.scalar(select(User.disabled).where(User.id == user_id))
    active = disabled is False
    _ACTIVE[user_id] = (active, now)
    return active


async def _revoke_tokens(db: AsyncSession, user_id: uuid.UUID) -> int:
    result = await db.execute(
        update(ApiToken)
        .where(ApiToken.user_id == user_id, ApiToken.revoked_at.is_(None))
        .values(revoked_at=datetime.now(UTC))
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


async def disable(
    db: AsyncSession, settings: Settings, user: User, actor: Actor, reason: str
) -> None:
    """Disable ``user`` in ``db``'s transaction (the caller commits, then ends sessions)."""
    if reason not in REASONS:
        raise ValueError(f"unknown reason {reason!r}")
    user.disabled = True
    tokens = await _revoke_tokens(db, user.id)
    await record(
        db, settings, "user.disabled", actor, entity_type="user", entity_id=user.id,
        detail={"reason": reason, "tokens_revoked": tokens},
    )  # fmt: skip
    _ACTIVE.pop(user.id, None)


async def enable(db: AsyncSession, settings: Settings, user: User, actor: Actor) -> None:
    user.disabled = False
    await record(db, settings, "user.enabled", actor, entity_type="user", entity_id=user.id)
    _ACTIVE.pop(user.id, None)


async def revoke_tokens(db: AsyncSession, settings: Settings, user: User, actor: Actor) -> int:
    count = await _revoke_tokens(db, user.id)
    await record(
        db, settings, "user.tokens_revoked", actor, entity_type="user", entity_id=user.id,
        detail={"tokens_revoked": count},
    )  # fmt: skip
    return count


async def end_sessions(settings: Settings, user_ids: list[uuid.UUID]) -> None:
    """End every session of these users (after the change that calls for it committed)."""
    store = SessionStore(redis_for(settings), settings)
    for user_id in user_ids:
        await store.destroy_all(user_id)


@dataclass
class _Decision:
    leavers: list[tuple[User, str]] = field(default_factory=list)
    roles: list[tuple[User, list[str]]] = field(default_factory=list)
    groups: list[tuple[User, list[str]]] = field(default_factory=list)  # any group changed
    ambiguous: list[str] = field(default_factory=list)


def _decide(
    settings: Settings, users: list[User], found: dict[str, DirectoryUser | str | None]
) -> _Decision:
    decision = _Decision()
    for user in users:
        entry = found.get(user.username)
        if entry == AMBIGUOUS:
            decision.ambiguous.append(user.username)
        elif entry is None:
            decision.leavers.append((user, "left_directory"))
        elif isinstance(entry, DirectoryUser):
            roles = sorted(role.value for role in roles_for(settings, entry.groups))
            groups = sorted({normalise_dn(group) for group in entry.groups})
            if not roles:
                decision.leavers.append((user, "no_role_group"))
                continue
            if roles != sorted(user.roles):
                decision.roles.append((user, roles))
            if groups != sorted(user.directory_groups or ()):
                decision.groups.append((user, groups))
    return decision


async def sync_directory(
    settings: Settings, usernames: list[str] | None = None, force: bool = False
) -> SyncReport:
    """Disable leavers and refresh roles from the directory; see the module docstring.

    ``usernames`` limits the run to those directory users (the others are not looked up).
    Raises DependencyUnavailable("ldap") when the directory does not answer, SyncRefused.
    """
    report = SyncReport()
    async with sessionmaker(settings)() as db:
        locked = await db.scalar(
            text("SELECT pg_try_advisory_xact_lock(:id)"), {"id": _SYNC_LOCK_ID}
        )
        if not locked:
            report.skipped = True
            return report
        query = select(User).where(User.source == "ldap", User.disabled.is_(False))
        if usernames is not None:
            query = query.where(User.username.in_(usernames))
        users = list(await db.scalars(query.order_by(User.username)))
        report.checked = len(users)
        if not users:
            return report
        found = await anyio.to_thread.run_sync(
            lookup_many, settings, [user.username for user in users]
        )
        decision = _decide(settings, users, found)
        leavers, report.ambiguous = decision.leavers, decision.ambiguous
        total = await db.scalar(
            select(func.count()).select_from(User).where(User.source == "ldap", ~User.disabled)
        )
        if (
            not force
            and (total or 0) >= MIN_USERS_FOR_SHARE
            and len(leavers) > MAX_LEAVERS_SHARE * (total or 0)
        ):
            raise SyncRefused(
                f"the directory sync would disable {len(leavers)} of {total} directory users "
                "at once: check ldap_user_base and ldap_user_filter, then run "
                "`clinchat-admin users sync --force` if they really left"
            )
        for user, reason in leavers:
            await disable(db, settings, user, DIRECTORY_SYNC, reason)
            report.disabled.append(user.username)
        ended = [user.id for user, _ in leavers]
        for user, roles in decision.roles:
            await record(
                db, settings, "user.roles_changed", DIRECTORY_SYNC, entity_type="user",
                entity_id=user.id, detail={"from": sorted(user.roles), "to": roles},
            )  # fmt: skip
            user.roles = roles
            report.roles_changed.append(user.username)
            ended.append(user.id)
        granting = collection_groups(settings)
        for user, groups in decision.groups:
            before = sorted(granting.intersection(user.directory_groups or ()))
            after = sorted(granting.intersection(groups))
            user.directory_groups = groups
            if before != after:
                await record(
                    db, settings, "user.groups_changed", DIRECTORY_SYNC, entity_type="user",
                    entity_id=user.id, detail={"from": before, "to": after},
                )  # fmt: skip
                report.groups_changed.append(user.username)
                ended.append(user.id)
        await db.commit()
    # Sessions carry the roles and groups they were opened with: end them, the next
    # sign-in has the new.
    await end_sessions(settings, list(dict.fromkeys(ended)))
    if report.disabled or report.roles_changed or report.groups_changed:
        log.info(
            "directory sync: %d checked, %d disabled, %d with new roles, %d with new groups",
            report.checked, len(report.disabled), len(report.roles_changed),
            len(report.groups_changed),
        )  # fmt: skip
    return report


async def run_directory_sync(settings: Settings, stop: asyncio.Event) -> None:
    """The worker's periodic sync, until ``stop`` is set; failures are logged and retried."""
    if not settings.ldap_url or settings.directory_sync_interval_s <= 0:
        return
    while True:
        try:
            await asyncio.wait_for(stop.wait(), timeout=settings.directory_sync_interval_s)
            return
        except TimeoutError:
            pass
        try:
            await sync_directory(settings)
        except SyncRefused as exc:
            log.error("directory sync: %s", exc)
        except Exception as exc:  # noqa: BLE001 -- a dependency down: the next run tries again
            log.warning("directory sync: %s, next run in %d s", type(exc).__name__,
                        settings.directory_sync_interval_s)  # fmt: skip
