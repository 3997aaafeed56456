"""Personal API tokens (``Authorization: Bearer cc_...``) for scripts and OpenAI clients.

A token is 256 random bits shown once at creation; the database keeps only its
SHA-256, so a dump of the table signs nobody in. A token carries a snapshot of
its owner's roles at creation, narrowed at each use to the roles the owner still
holds (LDAP roles are refreshed at every sign-in), and expires after at most
``MAX_DAYS``. A disabled owner's tokens stop working at once.

A token also carries scopes: the parts of the API it may call at all, whatever
its roles allow (a chat script's token cannot read the audit trail even if its
owner is an auditor). Tokens made before scopes existed got every scope
(migration 0003), which is what they could do.
"""

import enum
import hashlib
import secrets
import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import DateTime, ForeignKey, String, func, select
from sqlalchemy.dialects.postgresql import ARRAY, UUID
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from app.auth.principal import Principal
from app.models import Base, Role, User

PREFIX = "cc_"
MAX_DAYS = 90
# Writing last_used_at on every request would turn reads into writes; once a while will do.
_TOUCH_EVERY = timedelta(minutes=5)


class Scope(enum.StrEnum):
    chat = "chat"  # conversations and the passages they cite (/api/v1/conversations, /chunks)
    facade = "facade"  # the OpenAI-compatible facade (/v1)
    detect = "detect"  # the PHI detector (/api/v1/phi)
    documents = "documents"  # the knowledge base (/api/v1/documents)
    audit = "audit"  # reading and exporting the audit trail (/api/v1/audit)
    feedback = "feedback"  # the answer-feedback queue, others' answers in it (/api/v1/feedback)


DEFAULT_SCOPES = (Scope.chat, Scope.facade)


class ApiToken(Base):
    """Migration 0002."""

    __tablename__ = "api_tokens"
    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=uuid.uuid4)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(64))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    roles: Mapped[list[str]] = mapped_column(ARRAY(String(32)))
    scopes: Mapped[list[str]] = mapped_column(ARRAY(String(32)))  # migration 0003
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def looks_like_token(value: str) -> bool:
    return value.startswith(PREFIX) and 16 < len(value) < 128


async def issue(
    db: AsyncSession,
    user_id: uuid.UUID,
    roles: frozenset[Role],
    name: str,
    days: int,
    scopes: tuple[Scope, ...] = DEFAULT_SCOPES,
) -> tuple[str, ApiToken]:
    """A new token for ``user_id`` (the caller commits); returns (secret, row)."""
    if not 1 <= days <= MAX_DAYS:
        raise ValueError(f"days must be 1..{MAX_DAYS}")
    secret = PREFIX + secrets.token_urlsafe(32)
    now = datetime.now(UTC)
    row = ApiToken(
        id=uuid.uuid4(),
        user_id=user_id,
        name=name,
        token_hash=hash_token(secret),
        roles=sorted(roles),
        scopes=sorted({Scope(scope).value for scope in scopes}),
        created_at=now,  # set here, not by the server: read back without a query
        expires_at=now + timedelta(days=days),
    )
    db.add(row)
    await db.flush()
    return secret, row


async def list_for(db: AsyncSession, user_id: uuid.UUID) -> list[ApiToken]:
    """The user's tokens that can still be used, newest first."""
    result = await db.scalars(
        select(ApiToken)
        .where(
            ApiToken.user_id == user_id,
            ApiToken.revoked_at.is_(None),
            ApiToken.expires_at > func.now(),
        )
        .order_by(ApiToken.created_at.desc())
    )
    return list(result)


async def revoke(db: AsyncSession, user_id: uuid.UUID, token_id: uuid.UUID) -> ApiToken | None:
    """Revoke one of the user's own tokens (the caller commits); None if not theirs."""
    row = await db.get(ApiToken, token_id)
    if row is None or row.user_id != user_id:
        return None
    if row.revoked_at is None:
        row.revoked_at = datetime.now(UTC)
        await db.flush()
    return row


async def principal_for(db: AsyncSession, secret: str, source_ip: str = "") -> Principal | None:
    """The principal a bearer token stands for; None if unknown, revoked or expired."""
    if not looks_like_token(secret):
        return None
    found = (
        await db.execute(
            select(ApiToken, User)
            .join(User, User.id == ApiToken.user_id)
            .where(ApiToken.token_hash == hash_token(secret))
        )
    ).first()
    if found is None:
        return None
    token, user = found
    now = datetime.now(UTC)
    if token.revoked_at is not None or token.expires_at <= now or user.disabled:
        return None
    known = {role.value for role in Role}
    roles = frozenset(Role(r) for r in token.roles if r in set(user.roles) and r in known)
    if token.last_used_at is None or now - token.last_used_at > _TOUCH_EVERY:
        token.last_used_at = now
        await db.commit()
    return Principal(
        user_id=user.id,
        username=user.username,
        display_name=user.display_name,
        roles=roles,
        session_id=f"token:{token.id}",
        csrf_token="",  # bearer requests carry no cookie, so CSRF does not apply
        source_ip=source_ip,
        scopes=frozenset(token.scopes),
        groups=frozenset(user.directory_groups or ()),
    )
