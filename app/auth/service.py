"""Sign-in, sign-out and break-glass: the steps the JSON API and the login page share.

Sign-in order: lockout check, which counts the attempt (Redis) -> a local account
of that name (argon2id) -> else the directory (LDAP) -> roles -> the ``users`` row ->
disabled? -> a local account's second factor (TOTP, app/auth/totp.py) -> a new
session. Every attempt is audited in the same transaction as the user row it
touches; failures are committed before the error is raised, so a refused attempt is
never lost.

The second factor: a wrong or replayed code counts toward the lockout exactly as a
wrong password does (the attempt was counted before either was checked); a missing
code, or an account with no factor enrolled, takes the attempt off the count (the
password was right, nothing was guessed) without resetting it, so leaving the code
out cannot be used to clear the failures of guessed codes.
"""

import dataclasses
import hmac
import logging
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from prometheus_client import Counter
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from app.audit import record
from app.audit.chain import Actor, hmac_key
from app.auth import totp
from app.auth.ldap import DirectoryUser, authenticate_async, normalise_dn, roles_for
from app.auth.local import find_local_user, verify_password
from app.auth.lockout import Locked, Lockout
from app.auth.principal import Principal
from app.auth.sessions import SessionStore
from app.errors import DependencyUnavailable
from app.models import Role, User
from app.phi import redact
from app.redis_client import redis_for
from app.settings import Settings

log = logging.getLogger(__name__)

SIGN_INS = Counter("clinchat_sign_ins_total", "Sign-in attempts by outcome", ["outcome"])

WRONG_CREDENTIALS = "wrong username or password"
SECOND_FACTOR_REQUIRED = "second factor required: enter the authentication code"
WRONG_CODE = "wrong or already used authentication code"
NOT_ENROLLED = (
    "second factor not enrolled: an administrator enrols it with "
    "'clinchat-admin totp enrol USERNAME'"
)
UNREADABLE_FACTOR = (
    "the second factor cannot be read: an administrator enrols it again with "
    "'clinchat-admin totp reset USERNAME' then 'clinchat-admin totp enrol USERNAME'"
)


class SignInError(Exception):
    """A refused sign-in; ``message`` is safe to show (it never echoes the username)."""

    def __init__(self, status_code: int, message: str, retry_after_s: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.message = message
        self.retry_after_s = retry_after_s

    @property
    def headers(self) -> dict[str, str] | None:
        return {"Retry-After": str(self.retry_after_s)} if self.retry_after_s else None


@dataclass(frozen=True)
class SignedIn:
    token: str  # the cookie value: never logged, never stored
    principal: Principal


def audit_name(settings: Settings, username: str, known: bool) -> str:
    """What the audit trail (and so syslog) records as the actor of an attempt.

    A known account's name is a staff identifier. A name nobody has may be anything
    typed into the field: a password typed one field too early, a patient's name. It
    is recorded as ``unknown:<keyed hash>``: the same text gives the same hash, so a
    run of guesses still shows, and without the audit key the hash cannot be tested
    against a list of passwords.
    """
    cleaned = "".join(ch for ch in username if ch.isprintable())[:256]
    if known:
        return cleaned
    digest = hmac.new(hmac_key(settings), b"unknown-name:" + cleaned.encode(), "sha256")
    return f"unknown:{digest.hexdigest()[:16]}"


def _locked_message(locked: Locked) -> str:
    minutes = max(1, round(locked.retry_after_s / 60))
    who = "this account" if locked.scope == "user" else "this address"
    return f"too many failed sign-ins: {who} is locked, try again in {minutes} min"


async def _audit_refusal(
    db: AsyncSession, settings: Settings, actor: Actor, reason: str, lock: Locked | None = None
) -> None:
    """Audit and commit a refused attempt (committed before the error is raised)."""
    await record(db, settings, "auth.login", actor, outcome="failure", detail={"reason": reason})
    if lock is not None:
        await record(db, settings, "auth.lockout", actor, detail={"scope": lock.scope})
    await db.commit()
    SIGN_INS.labels(reason).inc()


async def _upsert_directory_user(
    db: AsyncSession, directory: DirectoryUser, roles: set[Role]
) -> User:
    """The user's row, created at the first sign-in, roles refreshed at each one."""
    values = {
        "display_name": directory.display_name,
        "roles": sorted(r.value for r in roles),
        "directory_groups": sorted({normalise_dn(group) for group in directory.groups}),
        "last_login_at": datetime.now(UTC),
    }
    statement = (
        insert(User)
        .values(
            id=uuid.uuid4(), username=directory.username, source="ldap", disabled=False, **values
        )
        .on_conflict_do_update(index_elements=[User.username], set_=values)
        .returning(User)
        .execution_options(populate_existing=True)
    )
    user = await db.scalar(statement)
    assert user is not None  # RETURNING always yields the row
    return user


async def _second_factor(
    db: AsyncSession,
    settings: Settings,
    lockout: Lockout,
    user: User,
    actor: Actor,
    attempt: tuple[str, str],
    code: str | None,
) -> None:
    """A local account's TOTP code (the password was right); raises SignInError if refused.

    ``attempt`` is the (username, address) the lockout counted. The code is never logged.
    """
    if not settings.totp_required and user.totp_secret_enc is None:
        return  # an enrolled factor is checked whatever the setting says
    refusal: tuple[str, str] | None = None
    if user.totp_secret_enc is None:
        refusal = ("totp_not_enrolled", NOT_ENROLLED)
    elif not code:
        refusal = ("totp_required", SECOND_FACTOR_REQUIRED)
    else:
        try:
            outcome = await totp.check(db, settings, user, code)
        except totp.Unreadable:
            refusal = ("totp_unreadable", UNREADABLE_FACTOR)
        except DependencyUnavailable:
            await lockout.abandoned(*attempt)  # the code could not be checked
            await _audit_refusal(db, settings, actor, "vault_unavailable")
            raise
        else:
            if outcome == "ok":
                return
            lock = await lockout.failed(*attempt)  # counted by begin(), like a password
            reason = "totp_replayed" if outcome == "replayed" else "bad_totp"
            await _audit_refusal(db, settings, actor, reason, lock)
            raise SignInError(401, WRONG_CODE)
    # nothing was guessed: the attempt leaves the count (which is not reset)
    assert refusal is not None
    await lockout.abandoned(*attempt)
    await _audit_refusal(db, settings, actor, refusal[0])
    raise SignInError(401, refusal[1])


async def sign_in(
    db: AsyncSession,
    settings: Settings,
    username: str,
    password: str,
    source_ip: str = "",
    previous_token: str | None = None,
    totp_code: str | None = None,
) -> SignedIn:
    """Check the credentials (and a local account's TOTP code) and open a session;
    raises SignInError or DependencyUnavailable."""
    username = username.strip()
    redis = redis_for(settings)
    lockout = Lockout(redis, settings)
    anonymous = Actor(username=audit_name(settings, username, known=False), source_ip=source_ip)

    if not username.isprintable():  # a NUL would fail the query: such a name is nobody's
        await _audit_refusal(db, settings, anonymous, "bad_username")
        raise SignInError(401, WRONG_CREDENTIALS)

    locked = await lockout.begin(username, source_ip)
    if locked is not None:
        await _audit_refusal(db, settings, anonymous, f"locked_{locked.scope}")
        raise SignInError(429, _locked_message(locked), locked.retry_after_s)

    user: User | None = None
    local = await find_local_user(db, username)
    if local is not None:
        known = True
        if await verify_password(local, password):
            user = local
    else:
        # Every attempt spends one argon2 verification, local account or not, so the
        # response time does not tell whether a local account of that name exists.
        await verify_password(None, password)
        try:
            directory = await authenticate_async(settings, username, password)
        except DependencyUnavailable:
            # Audited like any refusal, then the 503 naming "ldap" goes through.
            await lockout.abandoned(username, source_ip)
            await _audit_refusal(db, settings, anonymous, "ldap_unavailable")
            raise
        known = directory is not None
        if directory is not None and directory.authenticated:
            roles = roles_for(settings, directory.groups)
            if not roles:
                actor = Actor(username=directory.username, source_ip=source_ip)
                await _audit_refusal(db, settings, actor, "no_role")
                raise SignInError(403, "no ClinChat role")
            user = await _upsert_directory_user(db, directory, roles)

    if user is None:
        actor = Actor(username=audit_name(settings, username, known), source_ip=source_ip)
        lock = await lockout.failed(username, source_ip)
        await _audit_refusal(db, settings, actor, "bad_credentials", lock)
        raise SignInError(401, WRONG_CREDENTIALS)

    actor = Actor(username=user.username, roles=tuple(sorted(user.roles)), source_ip=source_ip)
    if user.disabled:
        await _audit_refusal(db, settings, actor, "disabled")
        raise SignInError(403, "this account is disabled")
    if user.source == "local":
        attempt = (username, source_ip)
        await _second_factor(db, settings, lockout, user, actor, attempt, totp_code)
        user.last_login_at = datetime.now(UTC)
    await lockout.succeeded(username, source_ip)
    await record(
        db,
        settings,
        "auth.login",
        actor,
        entity_type="user",
        entity_id=user.id,
        detail={"source": user.source},
    )
    await db.commit()
    SIGN_INS.labels("success").inc()

    store = SessionStore(redis, settings)
    if previous_token:  # rotate: a cookie planted before sign-in is worth nothing after
        await store.destroy(previous_token)
    roles = {Role(r) for r in user.roles}
    token = await store.create(
        user.id, user.username, user.display_name, roles, user.directory_groups or ()
    )
    principal = await store.load(token, source_ip)
    assert principal is not None  # just created
    log.info("sign-in user_id=%s source=%s", user.id, user.source)
    return SignedIn(token, principal)


async def sign_out(
    db: AsyncSession, settings: Settings, principal: Principal, token: str | None
) -> None:
    if token:
        await SessionStore(redis_for(settings), settings).destroy(token)
    await record(db, settings, "auth.logout", principal.actor, entity_type="user",
                 entity_id=principal.user_id)  # fmt: skip
    await db.commit()


BREAK_GLASS_REASON_MAX = 500


async def start_break_glass(
    db: AsyncSession,
    settings: Settings,
    principal: Principal,
    token: str,
    reason: str,
    minutes: int,
) -> float:
    """Open break-glass on the session until now + ``minutes``; returns the end (epoch s).

    The reason may name a patient: the trail keeps its length and a PHI-redacted copy.
    """
    until = time.time() + minutes * 60
    await SessionStore(redis_for(settings), settings).update(token, break_glass_until=until)
    actor = dataclasses.replace(principal.actor, break_glass=True)
    await record(
        db,
        settings,
        "break_glass.start",
        actor,
        entity_type="user",
        entity_id=principal.user_id,
        detail={
            "minutes": minutes,
            "reason_length": len(reason),
            "reason": redact(reason)[:BREAK_GLASS_REASON_MAX],
        },
    )
    await db.commit()
    return until


async def end_break_glass(
    db: AsyncSession, settings: Settings, principal: Principal, token: str
) -> None:
    await SessionStore(redis_for(settings), settings).update(token, break_glass_until=0.0)
    await record(
        db,
        settings,
        "break_glass.end",
        principal.actor,  # flagged when it was still active
        entity_type="user",
        entity_id=principal.user_id,
        detail={"was_active": principal.break_glass},
    )
    await db.commit()
