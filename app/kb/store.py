"""Documents, versions and chunks in PostgreSQL.

Only the newest *ready* version of an *active* document is searched: its chunks
carry ``searchable = true``, every other chunk ``false``. ``publish`` and
``retire`` flip that flag while holding the document's row lock, so two versions
finishing at once cannot both end up searchable.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import and_, delete, exists, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased, defer, selectinload

from app.models import (
    Chunk,
    Conversation,
    Document,
    DocumentStatus,
    DocumentVersion,
    Message,
    VersionStatus,
)


async def lock_document(session: AsyncSession, document_id: uuid.UUID) -> Document | None:
    """The document row, locked until the transaction ends."""
    return await session.scalar(
        select(Document).where(Document.id == document_id).with_for_update()
    )


# Listing versions never needs the stored files (up to upload_max_bytes each).
_NO_FILE = defer(DocumentVersion.content_enc, raiseload=True)


async def versions_of(session: AsyncSession, document_id: uuid.UUID) -> list[DocumentVersion]:
    result = await session.scalars(
        select(DocumentVersion)
        .options(_NO_FILE)
        .where(DocumentVersion.document_id == document_id)
        .order_by(DocumentVersion.version)
    )
    return list(result)


def current(versions: Sequence[DocumentVersion]) -> DocumentVersion | None:
    """The newest version that did not fail: what a new upload is compared with."""
    alive = [v for v in versions if v.status != VersionStatus.failed]
    return alive[-1] if alive else None


async def duplicate_document(
    session: AsyncSession, sha256: str, collection: str
) -> uuid.UUID | None:
    """An active document of ``collection`` whose current version is this very file.

    Per collection: two departments may each keep the same hospital-wide file, and an
    upload never learns of a document in a collection its uploader does not manage."""
    newer = aliased(DocumentVersion)
    return await session.scalar(
        select(DocumentVersion.document_id)
        .join(Document, Document.id == DocumentVersion.document_id)
        .where(
            DocumentVersion.sha256 == sha256,
            DocumentVersion.status != VersionStatus.failed,
            Document.status == DocumentStatus.active,
            Document.collection == collection,
            ~exists().where(
                newer.document_id == DocumentVersion.document_id,
                newer.version > DocumentVersion.version,
                newer.status != VersionStatus.failed,
            ),
        )
        .limit(1)
    )


async def live_versions(session: AsyncSession) -> dict[uuid.UUID, int]:
    """document id -> the version number whose chunks are searched now."""
    rows = await session.execute(
        select(DocumentVersion.document_id, DocumentVersion.version).where(
            exists().where(and_(Chunk.version_id == DocumentVersion.id, Chunk.searchable))
        )
    )
    return {doc: version for doc, version in rows}


async def list_documents(
    session: AsyncSession, collections: frozenset[str] | None = None
) -> list[Document]:
    """Every document (of ``collections``; None: all) with its versions, newest first."""
    query = select(Document).options(selectinload(Document.versions).options(_NO_FILE))
    if collections is not None:
        query = query.where(Document.collection.in_(sorted(collections)))
    result = await session.scalars(query.order_by(Document.created_at.desc()))
    return list(result)


async def get_document(session: AsyncSession, document_id: uuid.UUID) -> Document | None:
    return await session.scalar(
        select(Document)
        .options(selectinload(Document.versions).options(_NO_FILE))
        .where(Document.id == document_id)
        .execution_options(populate_existing=True)
    )


async def next_version_number(session: AsyncSession, document_id: uuid.UUID) -> int:
    highest = await session.scalar(
        select(func.max(DocumentVersion.version)).where(DocumentVersion.document_id == document_id)
    )
    return (highest or 0) + 1


async def set_searchable(session: AsyncSession, document: Document) -> uuid.UUID | None:
    """Make the newest ready version's chunks searchable and every other chunk not.

    The caller holds the document's lock (``lock_document``). Returns the searched
    version's id, or None (a retired document, or none ready yet).
    """
    live: uuid.UUID | None = None
    if document.status == DocumentStatus.active:
        live = await session.scalar(
            select(DocumentVersion.id)
            .where(
                DocumentVersion.document_id == document.id,
                DocumentVersion.status == VersionStatus.ready,
            )
            .order_by(DocumentVersion.version.desc())
            .limit(1)
        )
    wanted = Chunk.version_id == live if live is not None else False
    await session.execute(
        update(Chunk)
        .where(Chunk.document_id == document.id, Chunk.searchable.is_distinct_from(wanted))
        .values(searchable=wanted)
        .execution_options(synchronize_session=False)
    )
    return live


async def retire(session: AsyncSession, document: Document) -> None:
    """Retire a locked document: it stays listed, its chunks stop being searched."""
    document.status = DocumentStatus.retired
    document.retired_at = datetime.now(UTC)
    await session.flush()
    await set_searchable(session, document)


async def move(session: AsyncSession, document: Document, collection: str) -> None:
    """Put a locked document, and every chunk of it, into ``collection``."""
    document.collection = collection
    await session.execute(
        update(Chunk).where(Chunk.document_id == document.id).values(collection=collection)
    )
    await session.flush()


@dataclass(frozen=True)
class CitedChunk:
    chunk: Chunk
    document: Document
    version: DocumentVersion


async def cited_chunk(session: AsyncSession, chunk_id: int) -> CitedChunk | None:
    row = (
        await session.execute(
            select(Chunk, Document, DocumentVersion)
            .join(Document, Document.id == Chunk.document_id)
            .join(DocumentVersion, DocumentVersion.id == Chunk.version_id)
            .where(Chunk.id == chunk_id)
        )
    ).first()
    return CitedChunk(*row) if row else None


async def cited_to(session: AsyncSession, user_id: uuid.UUID, chunk_id: int) -> bool:
    """Whether an answer in one of ``user_id``'s conversations cited this chunk."""
    cited = (
        select(Message.id)
        .join(Conversation, Conversation.id == Message.conversation_id)
        .where(
            Conversation.user_id == user_id,
            Message.citations.contains([{"chunk_id": chunk_id}]),
        )
    )
    return bool(await session.scalar(select(exists(cited))))


PURGED_TITLE = "(a purged document)"


@dataclass(frozen=True)
class Purged:
    versions: int
    chunks: int
    sha256: list[str]  # of each version's file: a re-upload of it can be recognised


async def purge(session: AsyncSession, document: Document) -> Purged:
    """Delete a locked document: its versions (the encrypted files), chunks (text and
    embeddings) go with it (ON DELETE CASCADE). Answers that cited it keep the citation's
    place and ids, not its title or section, which came from the document."""
    versions = await versions_of(session, document.id)
    chunks = await session.scalar(
        select(func.count()).select_from(Chunk).where(Chunk.document_id == document.id)
    )
    key = str(document.id)
    citing = await session.scalars(
        select(Message).where(Message.citations.contains([{"document_id": key}]))
    )
    for message in citing:
        message.citations = [
            (c | {"title": PURGED_TITLE, "section": ""}) if c.get("document_id") == key else c
            for c in message.citations
        ]
    await session.flush()
    await session.execute(delete(Document).where(Document.id == document.id))
    return Purged(len(versions), int(chunks or 0), [v.sha256 for v in versions])
