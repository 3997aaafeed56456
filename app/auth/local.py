"""Local accounts: the break-glass administrator(s) who can sign in when LDAP cannot.

Passwords are hashed with argon2id (RFC 9106's low-memory profile: 64 MiB, 3 passes,
4 lanes). A hash made with older parameters is replaced at the next sign-in.
Hashing costs tens of milliseconds of CPU, so it runs in a worker thread.
"""

from collections.abc import Iterable
from functools import cache

import anyio.to_thread
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.audit import record
from app.audit.chain import Actor
from app.models import Role, User
from app.settings import Settings, get_settings

MIN_PASSWORD_LENGTH = 12
MAX_PASSWORD_LENGTH = 1024  # argon2 takes any length; this only bounds the work

HASHER = PasswordHasher(time_cost=3, memory_cost=64 * 1024, parallelism=4)


class PasswordPolicyError(ValueError):
    """The password or account does not meet the policy (the message says why)."""


def check_policy(username: str, password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise PasswordPolicyError(f"the password needs at least {MIN_PASSWORD_LENGTH} characters")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise PasswordPolicyError(f"the password may have at most {MAX_PASSWORD_LENGTH} characters")
    name = username.strip().lower()
    if len(name) >= 3 and name in password.lower():
        raise PasswordPolicyError("the password must not contain the username")


@cache
def _dummy_hash() -> str:
    return HASHER.hash("clinchat-dummy-password-for-timing")


async def hash_password(password: str) -> str:
    return await anyio.to_thread.run_sync(HASHER.hash, password)


def _verify(hashed: str, password: str) -> bool:
    try:
        return HASHER.verify(hashed, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


async def verify_password(user: User | None, password: str) -> bool:
    """True if ``password`` is the local user's; with no user, spend the same time and fail.

    Replaces the stored hash (the caller commits) when its parameters are outdated.
    """
    if user is None or not user.password_hash:
        await anyio.to_thread.run_sync(_verify, _dummy_hash(), password)
        return False
    if not await anyio.to_thread.run_sync(_verify, user.password_hash, password):
        return False
    if HASHER.check_needs_rehash(user.password_hash):
        user.password_hash = await hash_password(password)
    return True


async def find_local_user(db: AsyncSession, username: str) -> User | None:
    return await db.scalar(
        select(User).where(
            func.lower(User.username) == username.strip().lower(), User.source == "local"
        )
    )


async def create_local_user(
    session: AsyncSession,
    username: str,
    password: str,
    roles: Iterable[Role | str],
    *,
    settings: Settings | None = None,
) -> User:
    """Create a local (break-glass) account, audit it and commit.

    Raises PasswordPolicyError (a ValueError) for a weak password, an unknown role,
    or a username that is taken.
    """
    username = username.strip()
    if not username or len(username) > 256:
        raise PasswordPolicyError("the username must have 1 to 256 characters")
    check_policy(username, password)
    try:
        role_list = sorted({Role(r) for r in roles})
    except ValueError as exc:
        raise PasswordPolicyError(f"roles must be among {[r.value for r in Role]}") from exc
    if not role_list:
        raise PasswordPolicyError("a local account needs at least one role")
    taken = await session.scalar(
        select(User.id).where(func.lower(User.username) == username.lower())
    )
    if taken is not None:
        raise PasswordPolicyError("that username is taken")
    user = User(
        username=username,
        display_name=username,
        source="local",
        password_hash=await hash_password(password),
        roles=[r.value for r in role_list],
        disabled=False,
    )
    session.add(user)
    await session.flush()
    await record(
        session,
        settings or get_settings(),
        "user.create",
        Actor(username="clinchat-admin"),
        entity_type="user",
        entity_id=user.id,
        detail={"source": "local", "roles": [r.value for r in role_list]},
    )
    await session.commit()
    await session.refresh(user)  # usable after the commit whatever expire_on_commit says
    return user
