"""The second factor of local accounts: TOTP (RFC 6238; HMAC-SHA1, 30 s, 6 digits).

Every local account (``users.source == "local"``: the admin and break-glass accounts
that sign in when the directory cannot) presents a code from an authenticator app
once ``totp_required`` is on; directory users keep the directory's own policy.

- The secret (20 random bytes) is stored only encrypted (app/crypto.py), bound to
  the user's row (app/sealed.py), so a blob moved to another user does not decrypt.
- A code is accepted for the current step and one step either side (clock skew).
- A code is accepted once: ``users.totp_last_step`` remembers the step last
  accepted, and a code of that step or an earlier one is refused (replay). The
  update is conditional, so two requests with one code cannot both pass.
- The secret and the codes are never logged, audited or shown after enrolment.
"""

import base64
import hashlib
import hmac
import logging
import secrets
import struct
import time
import uuid
from urllib.parse import quote

import anyio.to_thread
from sqlalchemy import or_, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.attributes import set_committed_value

from app.audit import record
from app.audit.chain import Actor
from app.crypto import DecryptionError, KeysUnavailable, cipher_for
from app.errors import DependencyUnavailable
from app.models import User
from app.sealed import TOTP_SECRET
from app.settings import Settings

log = logging.getLogger(__name__)

ISSUER = "ClinChat"
STEP_S = 30
DIGITS = 6
SKEW_STEPS = 1
SECRET_BYTES = 20


# -- RFC 4226 / RFC 6238 --------------------------------------------------------------------------


def hotp(key: bytes, counter: int, digits: int = DIGITS) -> str:
    """RFC 4226: HMAC-SHA1 of the 8-byte counter, dynamically truncated."""
    mac = hmac.new(key, struct.pack(">Q", counter), hashlib.sha1).digest()
    offset = mac[-1] & 0x0F
    (value,) = struct.unpack(">I", mac[offset : offset + 4])
    return str((value & 0x7FFFFFFF) % 10**digits).zfill(digits)


def step_at(unix_time: float) -> int:
    return int(unix_time) // STEP_S


def totp(key: bytes, unix_time: float, digits: int = DIGITS) -> str:
    """RFC 6238 with T0 = 0 and a 30 s step."""
    return hotp(key, step_at(unix_time), digits)


def matching_step(key: bytes, code: str, unix_time: float) -> int | None:
    """The step (now, or one either side) whose code is ``code``; None if none is."""
    if len(code) != DIGITS or not code.isascii() or not code.isdigit():
        return None
    now = step_at(unix_time)
    found = None
    for step in range(max(0, now - SKEW_STEPS), now + SKEW_STEPS + 1):  # no early exit
        if hmac.compare_digest(hotp(key, step), code):
            found = step
    return found


# -- enrolment ------------------------------------------------------------------------------------


def aad(user_id: uuid.UUID) -> bytes:
    return TOTP_SECRET.aad(user_id, user_id)


def base32(secret: bytes) -> str:
    return base64.b32encode(secret).decode().rstrip("=")


def otpauth_uri(username: str, secret: bytes) -> str:
    """What an authenticator app scans (the Key Uri Format of Google Authenticator)."""
    label = quote(f"{ISSUER}:{username}", safe=":@")
    return (
        f"otpauth://totp/{label}?secret={base32(secret)}&issuer={ISSUER}"
        f"&algorithm=SHA1&digits={DIGITS}&period={STEP_S}"
    )


class NotLocal(ValueError):
    """The account is a directory account: its second factor is the directory's business."""


async def enrol(db: AsyncSession, settings: Settings, user: User, actor: Actor) -> bytes:
    """Give ``user`` a new secret, audit it and commit; returns the secret (shown once)."""
    if user.source != "local":
        raise NotLocal(f"{user.username} is a directory account, not a local one")
    secret = secrets.token_bytes(SECRET_BYTES)
    cipher = cipher_for(settings)
    # Vault may be asked for a data key: keep the event loop free meanwhile.
    user.totp_secret_enc = await anyio.to_thread.run_sync(cipher.encrypt, secret, aad(user.id))
    user.totp_last_step = None
    await record(
        db, settings, "user.totp_enrol", actor, entity_type="user", entity_id=user.id,
        detail={"factor": "totp"},
    )  # fmt: skip
    await db.commit()
    return secret


async def reset(db: AsyncSession, settings: Settings, user: User, actor: Actor) -> bool:
    """Remove the user's secret (audited, committed); False if there was none."""
    had = user.totp_secret_enc is not None
    user.totp_secret_enc = None
    user.totp_last_step = None
    await record(
        db, settings, "user.totp_reset", actor, entity_type="user", entity_id=user.id,
        detail={"factor": "totp", "was_enrolled": had},
    )  # fmt: skip
    await db.commit()
    return had


# -- sign-in --------------------------------------------------------------------------------------


class Unreadable(Exception):
    """The stored secret does not decrypt (corrupt, or moved from another user)."""


async def _secret(settings: Settings, user: User) -> bytes:
    assert user.totp_secret_enc is not None
    cipher = cipher_for(settings)
    try:
        return await anyio.to_thread.run_sync(cipher.decrypt, user.totp_secret_enc, aad(user.id))
    except KeysUnavailable as exc:
        raise DependencyUnavailable("vault") from exc
    except DecryptionError as exc:
        log.error("totp: the stored secret of user_id=%s does not decrypt", user.id)
        raise Unreadable from exc


async def check(db: AsyncSession, settings: Settings, user: User, code: str) -> str:
    """``"ok"`` (and the step is spent), ``"wrong"`` or ``"replayed"``.

    Raises Unreadable, or DependencyUnavailable("vault") when the key keeper is down.
    """
    key = await _secret(settings, user)
    step = matching_step(key, code, time.time())
    if step is None:
        return "wrong"
    spent = await db.execute(
        update(User)
        .where(
            User.id == user.id,
            or_(User.totp_last_step.is_(None), User.totp_last_step < step),
        )
        .values(totp_last_step=step)
        .execution_options(synchronize_session=False)
    )
    if spent.rowcount != 1:  # type: ignore[attr-defined]
        return "replayed"
    set_committed_value(user, "totp_last_step", step)  # already written above
    return "ok"
