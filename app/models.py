"""The database schema (SQLAlchemy 2 declarative). Migrations: app/migrations/.

Sensitive text (messages, conversation titles, uploaded files, feedback) is stored only
encrypted (``*_enc`` columns, see app/crypto.py), each value bound to its row and
owner (app/sealed.py). Document chunks are stored in
clear because full-text search needs their words; documents that hold PHI are
flagged at upload.
"""

import uuid
from datetime import datetime
from enum import StrEnum

from pgvector.sqlalchemy import Vector
from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Computed,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    func,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, TSVECTOR, UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

EMBEDDING_DIM = 384  # all-MiniLM-L6-v2


class Base(DeclarativeBase):
    pass


def _uuid() -> Mapped[uuid.UUID]:
    return mapped_column(UUID(as_uuid=True), primary_key=True, default=uuid.uuid4)


def _created() -> Mapped[datetime]:
    return mapped_column(DateTime(timezone=True), server_default=func.now(), nullable=False)


class Role(StrEnum):
    clinician = "clinician"
    admin = "admin"
    auditor = "auditor"


class User(Base):
    """Directory users appear at their first sign-in; local users are break-glass admins."""

    __tablename__ = "users"
    id: Mapped[uuid.UUID] = _uuid()
    username: Mapped[str] = mapped_column(String(256), unique=True)
    display_name: Mapped[str] = mapped_column(String(256), default="")
    source: Mapped[str] = mapped_column(String(16))  # "ldap" or "local"
    password_hash: Mapped[str | None] = mapped_column(Text)  # argon2id, local users only
    roles: Mapped[list[str]] = mapped_column(ARRAY(String(32)), default=list)
    # the directory groups (normalised DNs) at the last sign-in or sync: they decide
    # which collections the user reads and manages (app/kb/collections.py)
    directory_groups: Mapped[list[str]] = mapped_column(ARRAY(Text), default=list)
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = _created()
    last_login_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # local users' second factor (app/auth/totp.py): the secret envelope-encrypted
    # (bound to the user: app/sealed.py), and the last time step a code was accepted for (replay)
    totp_secret_enc: Mapped[bytes | None] = mapped_column(LargeBinary)
    totp_last_step: Mapped[int | None] = mapped_column(BigInteger)


class DocumentStatus(StrEnum):
    active = "active"
    retired = "retired"


class VersionStatus(StrEnum):
    queued = "queued"
    processing = "processing"
    ready = "ready"
    failed = "failed"


class Document(Base):
    __tablename__ = "documents"
    id: Mapped[uuid.UUID] = _uuid()
    title: Mapped[str] = mapped_column(String(512))
    # the knowledge base it belongs to (settings.collections, app/kb/collections.py)
    collection: Mapped[str] = mapped_column(String(64), index=True)
    status: Mapped[str] = mapped_column(String(16), default=DocumentStatus.active)
    created_by: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime] = _created()
    retired_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    versions: Mapped[list["DocumentVersion"]] = relationship(
        back_populates="document", order_by="DocumentVersion.version"
    )


class DocumentVersion(Base):
    """One uploaded file. Only the newest ready version of an active document is searched."""

    __tablename__ = "document_versions"
    __table_args__ = (UniqueConstraint("document_id", "version"),)
    id: Mapped[uuid.UUID] = _uuid()
    document_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("documents.id", ondelete="CASCADE"))
    version: Mapped[int] = mapped_column(Integer)
    filename: Mapped[str] = mapped_column(String(512))
    media_type: Mapped[str] = mapped_column(String(128))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    content_enc: Mapped[bytes] = mapped_column(LargeBinary)  # the file, envelope-encrypted
    status: Mapped[str] = mapped_column(String(16), default=VersionStatus.queued)
    progress: Mapped[int] = mapped_column(Integer, default=0)  # percent
    error: Mapped[str | None] = mapped_column(Text)  # never holds document text
    phi_types: Mapped[dict[str, int]] = mapped_column(JSONB, default=dict)  # type -> count
    chunk_count: Mapped[int] = mapped_column(Integer, default=0)
    created_by: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime] = _created()
    document: Mapped[Document] = relationship(back_populates="versions")


class Chunk(Base):
    __tablename__ = "chunks"
    __table_args__ = (
        Index(
            "chunks_embedding_hnsw",
            "embedding",
            postgresql_using="hnsw",
            postgresql_with={"m": 16, "ef_construction": 64},
            postgresql_ops={"embedding": "vector_cosine_ops"},
        ),
        Index("chunks_tsv_gin", "tsv", postgresql_using="gin"),
    )
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    version_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("document_versions.id", ondelete="CASCADE"), index=True
    )
    document_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("documents.id", ondelete="CASCADE"), index=True
    )
    ordinal: Mapped[int] = mapped_column(Integer)
    section: Mapped[str] = mapped_column(Text, default="")  # heading path, "A > B"
    page: Mapped[int | None] = mapped_column(Integer)
    text: Mapped[str] = mapped_column(Text)
    embedding: Mapped[list[float]] = mapped_column(Vector(EMBEDDING_DIM))
    tsv: Mapped[str] = mapped_column(
        TSVECTOR, Computed("to_tsvector('english', section || ' ' || text)", persisted=True)
    )
    # Denormalised so retrieval filters without joins: true only for the searched version.
    searchable: Mapped[bool] = mapped_column(Boolean, default=False, index=True)
    # Denormalised from the document, so retrieval keeps to the readable collections.
    collection: Mapped[str] = mapped_column(String(64))


class Conversation(Base):
    __tablename__ = "conversations"
    id: Mapped[uuid.UUID] = _uuid()
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id"), index=True)
    title_enc: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = _created()
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now()
    )
    messages: Mapped[list["Message"]] = relationship(
        back_populates="conversation", order_by="Message.created_at"
    )


class Message(Base):
    __tablename__ = "messages"
    id: Mapped[uuid.UUID] = _uuid()
    conversation_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("conversations.id", ondelete="CASCADE"), index=True
    )
    role: Mapped[str] = mapped_column(String(16))  # user | assistant
    content_enc: Mapped[bytes] = mapped_column(LargeBinary)
    # [{document_id, version, title, section, page, chunk_id, score}]: no snippet text here,
    # snippets are read from the chunk when shown.
    citations: Mapped[list[dict]] = mapped_column(JSONB, default=list)
    grounded: Mapped[bool] = mapped_column(Boolean, default=True)
    model: Mapped[str] = mapped_column(String(256), default="")
    created_at: Mapped[datetime] = _created()
    conversation: Mapped[Conversation] = relationship(back_populates="messages")


class Rating(StrEnum):
    up = "up"
    down = "down"


class FeedbackCategory(StrEnum):
    """What is wrong with an answer (a thumbs down only)."""

    wrong = "wrong"
    outdated_policy = "outdated_policy"
    unsafe = "unsafe"
    missing_source = "missing_source"


class FeedbackStatus(StrEnum):
    open = "open"
    reviewed = "reviewed"


class Feedback(Base):
    """A clinician's rating of an answer, for the admins' review queue (migration 0006)."""

    __tablename__ = "feedback"
    __table_args__ = (
        UniqueConstraint("user_id", "message_id"),  # a second feedback replaces the first
        CheckConstraint("category IS NULL OR rating = 'down'", name="feedback_category_only_down"),
        Index("ix_feedback_status_created_at", "status", "created_at"),
    )
    id: Mapped[uuid.UUID] = _uuid()
    # NULL once the conversation is deleted: the snapshot keeps what was rated
    message_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("messages.id", ondelete="SET NULL"), index=True
    )
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id"))
    rating: Mapped[str] = mapped_column(String(8))
    category: Mapped[str | None] = mapped_column(String(32))
    # encrypted, bound to the row and user_id (app/sealed.py): the comment, and the
    # question, answer and citations as they were rated (JSON)
    comment_enc: Mapped[bytes | None] = mapped_column(LargeBinary)
    snapshot_enc: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = _created()  # of the latest feedback: a replacement sets it
    status: Mapped[str] = mapped_column(String(16), default=FeedbackStatus.open)
    reviewed_by: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id"))
    reviewed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    review_note_enc: Mapped[bytes | None] = mapped_column(LargeBinary)  # the admin's, encrypted


class AuditEvent(Base):
    """Append-only. Each row's ``hash`` is HMAC(key, prev_hash || canonical row)."""

    __tablename__ = "audit_events"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    ts: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    action: Mapped[str] = mapped_column(String(64), index=True)  # e.g. "conversation.read"
    outcome: Mapped[str] = mapped_column(String(16))  # success | failure
    actor: Mapped[str] = mapped_column(String(256), index=True)  # username or "anonymous"
    actor_roles: Mapped[list[str]] = mapped_column(ARRAY(String(32)), default=list)
    entity_type: Mapped[str] = mapped_column(String(32), default="")
    entity_id: Mapped[str] = mapped_column(String(64), default="")
    break_glass: Mapped[bool] = mapped_column(Boolean, default=False)
    source_ip: Mapped[str] = mapped_column(String(64), default="")
    detail: Mapped[dict] = mapped_column(JSONB, default=dict)  # never free text from users
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64), unique=True)
