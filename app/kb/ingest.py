"""Accepting an upload: check and parse it now, store it encrypted, queue it for the worker.

A file is read with a size limit, detected, checked and parsed synchronously, so a
bad file is refused (4xx) before anything is stored. A good one is stored
encrypted, with its sha256 and the PHI types found in it, in one transaction with
its audit event; then its version id goes on the Redis queue. Should that push
fail, the version stays ``queued`` in the database and the worker's sweep finds it.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import redis.exceptions
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.audit import record
from app.audit.chain import Actor
from app.crypto import cipher_for
from app.kb import store
from app.kb.parse import Parsed, UploadRefused, clean, parse, read_limited
from app.metrics import PHI_DETECTIONS
from app.models import Document, DocumentStatus, DocumentVersion, VersionStatus
from app.phi import detect
from app.redis_client import redis_for
from app.sealed import DOCUMENT_FILE
from app.settings import Settings

log = logging.getLogger(__name__)

TITLE_MAX = 512


class Duplicate(UploadRefused):
    status_code = 409
    code = "duplicate"


class Retired(UploadRefused):
    status_code = 409
    code = "retired"


class DocumentNotFound(UploadRefused):
    status_code = 404
    code = "not_found"


@dataclass(frozen=True)
class CheckedFile:
    """A file that passed every check, with what was learnt from it."""

    data: bytes
    filename: str
    parsed: Parsed
    sha256: str
    phi_types: dict[str, int] = field(default_factory=dict)

    @property
    def size(self) -> int:
        return len(self.data)


def check_file(data: bytes, filename: str, content_type: str | None) -> CheckedFile:
    """Parse and scan for PHI (CPU-bound: run it in a thread). Raises UploadRefused."""
    # the base name only, without control characters (PostgreSQL refuses NUL)
    name = clean(filename.replace("\\", "/").rsplit("/", 1)[-1])[:TITLE_MAX]
    name = name.encode("utf-8", "replace").decode("utf-8")  # no lone surrogates either
    parsed = parse(data, name, content_type)
    phi = Counter(span.type.value for span in detect(parsed.text))
    return CheckedFile(data, name, parsed, hashlib.sha256(data).hexdigest(), dict(phi))


async def read_and_check(
    read: Callable[[int], Awaitable[bytes]],
    filename: str,
    content_type: str | None,
    max_bytes: int,
) -> CheckedFile:
    """Read an upload stream (``UploadFile.read``) within the limit, then check it."""
    data = await read_limited(read, max_bytes)
    return await asyncio.to_thread(check_file, data, filename, content_type)


def default_title(filename: str) -> str:
    stem = filename.rsplit(".", 1)[0] if "." in filename else filename
    return " ".join(stem.replace("_", " ").split())[:TITLE_MAX] or "Untitled"


async def store_upload(
    session: AsyncSession,
    settings: Settings,
    actor: Actor,
    user_id: uuid.UUID | None,
    checked: CheckedFile,
    title: str | None = None,
    document_id: uuid.UUID | None = None,
    collection: str | None = None,
) -> DocumentVersion:
    """Store a checked file as a new document of ``collection`` (default:
    ``default_collection``), or as a new version of ``document_id``.

    Raises Duplicate (same file as the current version), Retired, DocumentNotFound;
    Redis, Vault or the database down propagate (503 naming them).
    """
    # Refuse before storing anything if the queue cannot be reached.
    await redis_for(settings).ping()
    # The file is encrypted before the transaction (Vault may be asked for a data key),
    # bound to the version's id and the document's, both chosen here.
    version_id, new_document_id = uuid.uuid4(), uuid.uuid4()
    aad = DOCUMENT_FILE.aad(version_id, document_id or new_document_id)
    blob = await asyncio.to_thread(cipher_for(settings).encrypt, checked.data, aad)
    try:
        version = await _insert(
            session, settings, actor, user_id, checked, title, document_id, blob,
            version_id, new_document_id, collection or settings.default_collection,
        )  # fmt: skip
        await session.commit()
    except IntegrityError as exc:
        await session.rollback()
        # the (document, version) key: another upload to this document won the race
        raise Duplicate("another version of this document was uploaded at the same time") from exc
    except BaseException:
        await session.rollback()
        raise
    for phi_type, count in checked.phi_types.items():
        PHI_DETECTIONS.labels("document", phi_type).inc(count)
    await enqueue(settings, version.id)
    return version


async def _insert(
    session: AsyncSession,
    settings: Settings,
    actor: Actor,
    user_id: uuid.UUID | None,
    checked: CheckedFile,
    title: str | None,
    document_id: uuid.UUID | None,
    blob: bytes,
    version_id: uuid.UUID,
    new_document_id: uuid.UUID,
    collection: str,
) -> DocumentVersion:
    if document_id is None:
        # Two uploads of one file at once: the second waits here, then sees the first.
        await session.execute(
            text("SELECT pg_advisory_xact_lock(:key)"), {"key": int(checked.sha256[:15], 16)}
        )
        existing = await store.duplicate_document(session, checked.sha256, collection)
        if existing is not None:
            raise Duplicate(f"this file is already the current version of document {existing}")
        document = Document(
            id=new_document_id,
            title=(title or "").strip() or default_title(checked.filename),
            collection=collection,
            status=DocumentStatus.active,
            created_by=user_id,
        )
        session.add(document)
        await session.flush()
        number, action = 1, "document.create"
    else:
        locked = await store.lock_document(session, document_id)
        if locked is None:
            raise DocumentNotFound("no such document")
        document = locked
        if document.status == DocumentStatus.retired:
            raise Retired("the document is retired: upload it as a new document")
        versions = await store.versions_of(session, document.id)
        current = store.current(versions)
        if current is not None and current.sha256 == checked.sha256:
            raise Duplicate(f"this file is already version {current.version} of the document")
        number = max((v.version for v in versions), default=0) + 1
        action = "document.version"
    version = DocumentVersion(
        id=version_id,
        document_id=document.id,
        version=number,
        filename=checked.filename,
        media_type=checked.parsed.media_type,
        size_bytes=checked.size,
        sha256=checked.sha256,
        content_enc=blob,
        status=VersionStatus.queued,
        progress=0,
        phi_types=checked.phi_types,
        chunk_count=0,
        created_by=user_id,
    )
    session.add(version)
    await session.flush()
    await record(
        session,
        settings,
        action,
        actor,
        entity_type="document",
        entity_id=document.id,
        detail={
            "version": number,
            "version_id": str(version.id),
            "size_bytes": checked.size,
            "sha256": checked.sha256,
            "media_type": checked.parsed.media_type,
            "phi_types": checked.phi_types,
            "collection": document.collection,
        },
    )
    return version


async def enqueue(settings: Settings, version_id: uuid.UUID) -> bool:
    """Push a version on the ingestion queue; False (logged) when Redis refuses."""
    try:
        await redis_for(settings).lpush(settings.ingest_queue, str(version_id))
        return True
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
        log.warning(
            "version %s stored but not queued (%s): the worker's sweep will queue it",
            version_id,
            type(exc).__name__,
        )
        return False
