"""The ingestion worker: ``python -m app.kb.worker`` (one per deployment).

A reliable queue in Redis: the worker moves a version id from the queue to a
processing list (BLMOVE), works on it, and removes it from that list (LREM) when
done. At start it puts back whatever a previous run left in the processing list,
and it sweeps the database now and then for versions still ``queued`` that no
list holds (an upload whose push to Redis failed).

Processing a version: decrypt, parse, chunk, embed in batches, write the chunks
(not yet searchable) with the progress as it goes, then in one transaction mark
the version ready and make its chunks the searched ones (store.set_searchable).
A failure marks the version failed with a short error that holds no document
text; a dependency that is down (serving, Vault, database) leaves it queued for
another try.

Also here for ``clinchat-admin``: ``reindex`` (re-embed every searchable chunk)
and ``ingest_path`` (ingest every supported file under a folder).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import psycopg
import redis.asyncio as aioredis
import redis.exceptions
from sqlalchemy import delete, insert, select, update
from sqlalchemy.exc import OperationalError

from app.audit import record
from app.audit.chain import Actor
from app.crypto import DecryptionError, KeysUnavailable, cipher_for
from app.db import sessionmaker
from app.errors import DependencyUnavailable
from app.kb import store
from app.kb.chunk import TextChunk, chunk_blocks
from app.kb.embed import embedder_for
from app.kb.ingest import (
    Duplicate,
    check_file,
    default_title,
    store_upload,
)
from app.kb.parse import EXTENSIONS, UploadRefused, parse
from app.models import Chunk, Document, DocumentVersion, User, VersionStatus
from app.redis_client import redis_for
from app.sealed import DOCUMENT_FILE
from app.settings import Settings, get_settings

log = logging.getLogger(__name__)

EMBED_BATCH = 64  # chunks embedded and written per step; the progress moves per step
SWEEP_INTERVAL_S = 60
RETRY_DELAY_S = 5
WORKER = Actor(username="clinchat-worker", roles=("system",))
ADMIN_CLI = Actor(username="clinchat-admin", roles=("admin",))

# Outcomes of process_one
READY, FAILED, RETRY, MISSING = "ready", "failed", "retry", "missing"

_DOWN = (
    DependencyUnavailable,
    KeysUnavailable,
    OperationalError,
    psycopg.OperationalError,
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
)


def processing_list(settings: Settings) -> str:
    return settings.ingest_queue + ":processing"


def _short_error(exc: BaseException) -> str:
    """What the library shows for a failed version: never the document's text."""
    if isinstance(exc, UploadRefused):
        return exc.message
    if isinstance(exc, DecryptionError):
        return "the stored file cannot be decrypted"
    return f"ingestion failed ({type(exc).__name__})"


async def _set_status(
    settings: Settings, version_id: uuid.UUID, status: VersionStatus, error: str | None
) -> None:
    async with sessionmaker(settings)() as session:
        await session.execute(
            update(DocumentVersion)
            .where(DocumentVersion.id == version_id)
            .values(status=status, error=error)
        )
        await session.commit()


async def process_one(settings: Settings, version_id: uuid.UUID | str) -> str:
    """Ingest one version; returns "ready", "failed", "retry" (a dependency is down)
    or "missing" (no such version)."""
    try:
        vid = uuid.UUID(str(version_id))
    except ValueError:
        log.warning("ingest: a queue entry is not a version id")
        return MISSING
    maker = sessionmaker(settings)
    async with maker() as session:
        version = await session.get(DocumentVersion, vid)
        if version is None:
            return MISSING
        if version.status == VersionStatus.ready:
            return READY
        version.status, version.progress, version.error = VersionStatus.processing, 0, None
        blob, filename, media_type = version.content_enc, version.filename, version.media_type
        document_id, number = version.document_id, version.version
        await session.commit()
    started = time.monotonic()
    try:
        chunks = await _chunks(settings, DOCUMENT_FILE.aad(vid, document_id), blob, filename,
                               media_type)  # fmt: skip
        await _write_chunks(settings, vid, document_id, chunks)
        await _publish(settings, vid, document_id, number, len(chunks))
    except _DOWN as exc:
        log.warning("ingest %s: dependency down (%s), will retry", vid, type(exc).__name__)
        await _try_set_status(settings, vid, VersionStatus.queued, "waiting: a service is down")
        return RETRY
    except Exception as exc:  # noqa: BLE001 -- any other error fails this version only
        log.warning("ingest %s failed: %s", vid, type(exc).__name__)
        await _fail(settings, vid, document_id, number, _short_error(exc))
        return FAILED
    log.info("ingest %s ready: %d chunks in %.1f s", vid, len(chunks), time.monotonic() - started)
    return READY


async def _try_set_status(
    settings: Settings, vid: uuid.UUID, status: VersionStatus, error: str
) -> None:
    try:
        await _set_status(settings, vid, status, error)
    except _DOWN as exc:  # the database itself is down: the version stays as it was
        log.warning("ingest %s: status not recorded (%s)", vid, type(exc).__name__)


async def _chunks(
    settings: Settings, aad: bytes, blob: bytes, filename: str, media_type: str
) -> list[TextChunk]:
    data = await asyncio.to_thread(cipher_for(settings).decrypt, blob, aad)
    parsed = await asyncio.to_thread(parse, data, filename, media_type)
    return chunk_blocks(parsed.blocks, settings.chunk_max_chars)


async def _write_chunks(
    settings: Settings, vid: uuid.UUID, document_id: uuid.UUID, chunks: list[TextChunk]
) -> None:
    embedder = embedder_for(settings)
    async with sessionmaker(settings)() as session:
        collection = await session.scalar(
            select(Document.collection).where(Document.id == document_id)
        )
        if collection is None:  # purged meanwhile: this version fails, as it went with it
            raise LookupError("the document is gone")
        # a retry starts clean
        await session.execute(delete(Chunk).where(Chunk.version_id == vid))
        await session.commit()
        for start in range(0, len(chunks), EMBED_BATCH):
            batch = chunks[start : start + EMBED_BATCH]
            vectors = await embedder.embed([c.embedding_input() for c in batch])
            rows = [
                {
                    "version_id": vid,
                    "document_id": document_id,
                    "ordinal": start + i,
                    "section": c.section,
                    "page": c.page,
                    "text": c.text,
                    "embedding": vector,
                    "searchable": False,
                    "collection": collection,
                }
                for i, (c, vector) in enumerate(zip(batch, vectors, strict=True))
            ]
            await session.execute(insert(Chunk), rows)
            done = start + len(batch)
            await session.execute(
                update(DocumentVersion)
                .where(DocumentVersion.id == vid)
                .values(progress=min(99, done * 100 // len(chunks)))
            )
            await session.commit()


async def _publish(
    settings: Settings, vid: uuid.UUID, document_id: uuid.UUID, number: int, count: int
) -> None:
    async with sessionmaker(settings)() as session:
        document = await store.lock_document(session, document_id)
        await session.execute(
            update(DocumentVersion)
            .where(DocumentVersion.id == vid)
            .values(status=VersionStatus.ready, progress=100, chunk_count=count, error=None)
        )
        if document is not None:
            await store.set_searchable(session, document)
        await record(
            session,
            settings,
            "document.ingest",
            WORKER,
            entity_type="document",
            entity_id=document_id,
            detail={"version": number, "version_id": str(vid), "chunks": count},
        )
        await session.commit()


async def _fail(
    settings: Settings, vid: uuid.UUID, document_id: uuid.UUID, number: int, error: str
) -> None:
    try:
        async with sessionmaker(settings)() as session:
            await session.execute(delete(Chunk).where(Chunk.version_id == vid))
            await session.execute(
                update(DocumentVersion)
                .where(DocumentVersion.id == vid)
                .values(status=VersionStatus.failed, error=error)
            )
            await record(
                session,
                settings,
                "document.ingest",
                WORKER,
                outcome="failure",
                entity_type="document",
                entity_id=document_id,
                detail={"version": number, "version_id": str(vid)},
            )
            await session.commit()
    except _DOWN as exc:
        log.warning("ingest %s: failure not recorded (%s)", vid, type(exc).__name__)


# -- the queue ---------------------------------------------------------------------------------


async def _recover(settings: Settings, client: aioredis.Redis) -> int:
    """Put back what a previous run left in the processing list, first in line."""
    moved = 0
    processing = processing_list(settings)
    while await client.lmove(processing, settings.ingest_queue, "RIGHT", "RIGHT") is not None:
        moved += 1
    if moved:
        log.info("ingest: %d unfinished versions put back on the queue", moved)
    return moved


async def sweep(settings: Settings) -> int:
    """Queue versions the database says are waiting but no Redis list holds."""
    client = redis_for(settings)
    async with sessionmaker(settings)() as session:
        waiting = set(
            await session.scalars(
                select(DocumentVersion.id).where(
                    DocumentVersion.status.in_([VersionStatus.queued, VersionStatus.processing])
                )
            )
        )
    if not waiting:
        return 0
    held = set(await client.lrange(settings.ingest_queue, 0, -1))
    held |= set(await client.lrange(processing_list(settings), 0, -1))
    missing = [str(v) for v in waiting if str(v) not in held]
    if missing:
        await client.lpush(settings.ingest_queue, *missing)
        log.info("ingest: %d waiting versions queued by the sweep", len(missing))
    return len(missing)


async def _pause(stop: asyncio.Event, seconds: float) -> None:
    try:
        await asyncio.wait_for(stop.wait(), timeout=seconds)
    except TimeoutError:
        pass


async def run_worker(settings: Settings, stop_event: asyncio.Event) -> None:
    """Take versions off the queue until ``stop_event`` is set."""
    client = redis_for(settings)
    queue, processing = settings.ingest_queue, processing_list(settings)
    recovered, last_sweep = False, 0.0
    log.info("ingest worker started")
    while not stop_event.is_set():
        try:
            if not recovered:
                await _recover(settings, client)
                recovered = True
            if time.monotonic() - last_sweep > SWEEP_INTERVAL_S:
                await sweep(settings)
                last_sweep = time.monotonic()
            item = await client.blmove(queue, processing, 1, "RIGHT", "LEFT")
        except _DOWN as exc:
            log.warning("ingest worker: %s, waiting", type(exc).__name__)
            await _pause(stop_event, RETRY_DELAY_S)
            continue
        if item is None:
            continue
        item = item.decode() if isinstance(item, bytes) else item
        try:
            outcome = await process_one(settings, item)
        except Exception as exc:  # noqa: BLE001 -- never let one version stop the worker
            log.error("ingest %s: unexpected %s", item, type(exc).__name__)
            outcome = FAILED
        try:
            async with client.pipeline(transaction=True) as pipe:
                pipe.lrem(processing, 1, item)
                if outcome == RETRY:
                    pipe.lpush(queue, item)  # the far end: others go first
                await pipe.execute()
        except _DOWN as exc:
            log.warning("ingest worker: %s after processing", type(exc).__name__)
        if outcome == RETRY:
            await _pause(stop_event, RETRY_DELAY_S)
    log.info("ingest worker stopped")


# -- for clinchat-admin --------------------------------------------------------------------------


async def reindex(settings: Settings, batch: int = 256) -> int:
    """Re-embed every searchable chunk (after a model change); returns how many."""
    embedder = embedder_for(settings)
    count, last_id = 0, 0
    async with sessionmaker(settings)() as session:
        while True:
            rows = (
                await session.execute(
                    select(Chunk.id, Chunk.section, Chunk.text)
                    .where(Chunk.searchable, Chunk.id > last_id)
                    .order_by(Chunk.id)
                    .limit(batch)
                )
            ).all()
            if not rows:
                break
            vectors = await embedder.embed(
                [TextChunk(r.text, r.section, None).embedding_input() for r in rows]
            )
            await session.execute(
                update(Chunk),
                [{"id": r.id, "embedding": v} for r, v in zip(rows, vectors, strict=True)],
            )
            await session.commit()
            count, last_id = count + len(rows), rows[-1].id
        await record(session, settings, "kb.reindex", ADMIN_CLI, detail={"chunks": count})
        await session.commit()
    log.info("reindex: %d chunks re-embedded", count)
    return count


@dataclass(frozen=True)
class IngestResult:
    path: str
    outcome: str  # queued | ready | failed | retry | duplicate | refused
    document_id: uuid.UUID | None = None
    version_id: uuid.UUID | None = None
    message: str = ""


async def ingest_path(
    settings: Settings, path: str | Path, actor: Actor | str, *, process: bool = False
) -> list[IngestResult]:
    """Ingest every supported file under ``path`` (or the file itself) as a new document.

    Each file is checked like an upload; refused and duplicate files are reported,
    not fatal. With ``process`` the versions are ingested here and now instead of
    by the worker.
    """
    root = Path(path)
    if root.is_file():
        files = [root]
    elif root.is_dir():
        files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in EXTENSIONS)
    else:
        raise FileNotFoundError(f"{root} is neither a file nor a folder")
    who = actor if isinstance(actor, Actor) else Actor(username=actor, roles=("admin",))
    maker = sessionmaker(settings)
    async with maker() as session:
        user_id = await session.scalar(select(User.id).where(User.username == who.username))
    results = []
    for file in files:
        results.append(await _ingest_file(settings, file, who, user_id, process))
    return results


async def _ingest_file(
    settings: Settings, file: Path, who: Actor, user_id: uuid.UUID | None, process: bool
) -> IngestResult:
    if file.stat().st_size > settings.upload_max_bytes:
        return IngestResult(str(file), "refused", message="larger than the upload limit")
    try:
        checked = await asyncio.to_thread(check_file, file.read_bytes(), file.name, None)
        async with sessionmaker(settings)() as session:
            version = await store_upload(
                session, settings, who, user_id, checked, default_title(file.name)
            )
    except Duplicate as exc:
        return IngestResult(str(file), "duplicate", message=exc.message)
    except UploadRefused as exc:
        return IngestResult(str(file), "refused", message=exc.message)
    outcome = await process_one(settings, version.id) if process else "queued"
    return IngestResult(str(file), outcome, version.document_id, version.id)


def main() -> None:
    from app.main import configure_logging

    configure_logging()
    settings = get_settings()

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        from app.audit.checkpoint import run_checkpoints
        from app.auth.lifecycle import run_directory_sync

        try:
            # Leavers are disabled and the audit chain checkpointed by the worker too: it
            # already runs on every app host.
            await asyncio.gather(
                run_worker(settings, stop),
                run_directory_sync(settings, stop),
                run_checkpoints(settings, stop),
            )
        finally:
            from app import db, redis_client

            await db.dispose_all()
            await redis_client.close_all()

    asyncio.run(run())


if __name__ == "__main__":
    main()
