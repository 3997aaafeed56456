"""The knowledge base API: documents and their versions (admins, and collection
managers for their collections' documents), cited chunks (every role, as far as the
collections they read: app/kb/collections.py).

Uploads are multipart (``file`` and an optional ``title``). A file is checked and
parsed before anything is stored (app/kb/ingest.py); a refusal answers 4xx with
``{"detail": message, "code": code}``. Document metadata reads (the library and
the progress it polls) are not audited: they hold no document content. Reading a
chunk's text is, as ``document.read``.
"""

import logging
import uuid
from collections.abc import Callable, Coroutine
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, File, Form, HTTPException, Path, Request, UploadFile
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from pydantic import BaseModel, Field
from sqlalchemy import select

from app.audit import record
from app.auth.deps import Librarian, LibrarianOrAuditor, require_roles, require_scope
from app.auth.principal import Principal
from app.auth.tokens import Scope
from app.db import DbSession
from app.kb import store
from app.kb.collections import access_for, upload_collection
from app.kb.ingest import TITLE_MAX, DocumentNotFound, read_and_check, store_upload
from app.kb.parse import UploadRefused
from app.models import Document, DocumentStatus, DocumentVersion, Role
from app.settings import Settings, get_settings

log = logging.getLogger(__name__)

SettingsDep = Annotated[Settings, Depends(get_settings)]
AnyRole = Annotated[Principal, Depends(require_roles(Role.clinician, Role.admin, Role.auditor))]

# Multipart framing and the other fields, on top of the file itself.
FORM_OVERHEAD = 16 * 1024
TITLE_PATTERN = r"^[^\x00-\x1f\x7f]*$"


class UploadLimitRoute(APIRoute):
    """Refuses a multipart body over the upload limit before reading it.

    FastAPI reads a form before any dependency runs, so the limit (a runtime
    setting) is checked here, on the declared length; the server reads no more than
    that. A multipart request without a length is refused (411).
    """

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def limited(request: Request) -> Response:
            if request.headers.get("content-type", "").lower().startswith("multipart/"):
                settings = request.app.dependency_overrides.get(get_settings, get_settings)()
                length = request.headers.get("content-length", "")
                if not length.isdigit():
                    return JSONResponse(
                        {"detail": "an upload needs a Content-Length", "code": "length_required"},
                        status_code=411,
                    )
                if int(length) > settings.upload_max_bytes + FORM_OVERHEAD:
                    return refusal(
                        413,
                        "too_large",
                        f"the file is larger than the limit of {settings.upload_max_bytes} bytes",
                    )
            return await handler(request)

        return limited


router = APIRouter(
    prefix="/api/v1/documents",
    tags=["documents"],
    route_class=UploadLimitRoute,
    dependencies=[Depends(require_scope(Scope.documents))],
)
# the passages an answer cites: part of chatting
chunks_router = APIRouter(
    prefix="/api/v1/chunks", tags=["documents"], dependencies=[Depends(require_scope(Scope.chat))]
)


class VersionOut(BaseModel):
    id: uuid.UUID
    version: int
    filename: str
    media_type: str
    size_bytes: int
    sha256: str
    status: str = Field(description="queued, processing, ready or failed")
    progress: int = Field(description="percent")
    error: str | None = Field(description="why it failed; never document text")
    phi: bool = Field(description="the detector found PHI in the file")
    phi_types: dict[str, int] = Field(description="PHI type -> count")
    chunk_count: int
    created_at: datetime

    @classmethod
    def of(cls, version: DocumentVersion) -> "VersionOut":
        return cls(
            id=version.id,
            version=version.version,
            filename=version.filename,
            media_type=version.media_type,
            size_bytes=version.size_bytes,
            sha256=version.sha256,
            status=version.status,
            progress=version.progress,
            error=version.error,
            phi=bool(version.phi_types),
            phi_types=version.phi_types or {},
            chunk_count=version.chunk_count,
            created_at=version.created_at,
        )


class DocumentOut(BaseModel):
    id: uuid.UUID
    title: str
    collection: str = Field(description="the knowledge base it belongs to")
    status: str = Field(description="active or retired")
    created_at: datetime
    retired_at: datetime | None
    live_version: int | None = Field(description="the version searched now, if any")
    latest: VersionOut | None = Field(description="the newest upload, whatever its status")
    versions: list[VersionOut] | None = Field(None, description="every version (detail only)")

    model_config = {
        "json_schema_extra": {
            "examples": [
                {
                    "id": "0b7c1f9e-3c1a-4c53-9a53-6f1f0b1f6f10",
                    "title": "Sepsis guideline",
                    "collection": "icu",
                    "status": "active",
                    "created_at": "2026-11-22T10:00:00Z",
                    "retired_at": None,
                    "live_version": 1,
                    "latest": {
                        "id": "5a0f3e58-1d8f-4a41-8a5f-2d2b1c0e9a77",
                        "version": 2,
                        "filename": "sepsis.pdf",
                        "media_type": "application/pdf",
                        "size_bytes": 48213,
                        "sha256": "9f2c...",
                        "status": "processing",
                        "progress": 40,
                        "error": None,
                        "phi": False,
                        "phi_types": {},
                        "chunk_count": 0,
                        "created_at": "2026-11-23T09:00:00Z",
                    },
                    "versions": None,
                }
            ]
        }
    }

    @classmethod
    def of(
        cls, document: Document, live: dict[uuid.UUID, int], with_versions: bool = False
    ) -> "DocumentOut":
        versions = sorted(document.versions, key=lambda v: v.version)
        return cls(
            id=document.id,
            title=document.title,
            collection=document.collection,
            status=document.status,
            created_at=document.created_at,
            retired_at=document.retired_at,
            live_version=live.get(document.id),
            latest=VersionOut.of(versions[-1]) if versions else None,
            versions=[VersionOut.of(v) for v in versions] if with_versions else None,
        )


class Refusal(BaseModel):
    detail: str
    code: str = Field(
        description="empty, too_large, unsupported_type, type_mismatch, corrupt, no_text, "
        "duplicate, retired, not_found, length_required, collection"
    )

    model_config = {
        "json_schema_extra": {
            "examples": [
                {"detail": "the name says .pdf but the content is TEXT", "code": "type_mismatch"}
            ]
        }
    }


REFUSALS: dict[int | str, dict[str, Any]] = {
    code: {"model": Refusal} for code in (400, 404, 409, 411, 413, 415, 422)
}


class ChunkOut(BaseModel):
    id: int
    document_id: uuid.UUID
    title: str
    version: int
    section: str = Field(description="heading path, 'Sepsis > Antibiotics'")
    page: int | None
    text: str
    searchable: bool = Field(description="false once a newer version or retirement replaced it")
    document_status: str

    model_config = {
        "json_schema_extra": {
            "examples": [
                {
                    "id": 1234,
                    "document_id": "0b7c1f9e-3c1a-4c53-9a53-6f1f0b1f6f10",
                    "title": "Sepsis guideline",
                    "version": 1,
                    "section": "Sepsis > Antibiotics",
                    "page": 3,
                    "text": "Give broad-spectrum antibiotics within one hour.",
                    "searchable": True,
                    "document_status": "active",
                }
            ]
        }
    }


def refusal(status_code: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"detail": message, "code": code}, status_code=status_code)


def refused(exc: UploadRefused) -> JSONResponse:
    log.info("upload refused: %s", exc.code)
    return refusal(exc.status_code, exc.code, exc.message)


async def managed(
    db: DbSession, settings: Settings, principal: Principal, document_id: uuid.UUID
) -> None:
    """Raise DocumentNotFound unless ``principal`` manages the document's collection (a
    document in another collection is "no such document", as in the library)."""
    collection = await db.scalar(select(Document.collection).where(Document.id == document_id))
    if collection is None or not access_for(settings, principal).manages(collection):
        raise DocumentNotFound("no such document")


async def accept(
    db: DbSession,
    settings: Settings,
    principal: Principal,
    file: UploadFile,
    title: str | None,
    document_id: uuid.UUID | None = None,
    collection: str | None = None,
) -> DocumentVersion:
    """Read, check and store one upload (shared with the pages): a new document of
    ``collection``, or a new version of ``document_id``. Raises UploadRefused."""
    if document_id is None:
        collection = upload_collection(settings, access_for(settings, principal), collection)
    else:
        await managed(db, settings, principal, document_id)
    checked = await read_and_check(
        file.read, file.filename or "", file.content_type, settings.upload_max_bytes
    )
    return await store_upload(
        db, settings, principal.actor, principal.user_id, checked, title, document_id, collection
    )


def _may_see(settings: Settings, principal: Principal, document: Document) -> bool:
    """A document's metadata: its collection's managers, admins and auditors."""
    return principal.has(Role.auditor) or access_for(settings, principal).manages(
        document.collection
    )


async def _document_out(
    db: DbSession, settings: Settings, principal: Principal, document_id: uuid.UUID
) -> DocumentOut:
    document = await store.get_document(db, document_id)
    if document is None or not _may_see(settings, principal, document):
        raise HTTPException(404, "no such document")
    return DocumentOut.of(document, await store.live_versions(db), with_versions=True)


Title = Annotated[
    str | None,
    Form(max_length=TITLE_MAX, pattern=TITLE_PATTERN, description="default: from the filename"),
]
Upload = Annotated[UploadFile, File(description="PDF, DOCX, HTML, Markdown or text")]
CollectionField = Annotated[
    str | None,
    Form(
        max_length=64,
        description="the collection's id; default: the default collection for an admin, "
        "the only collection a collection manager manages",
    ),
]


@router.post("", status_code=201, response_model=DocumentOut, responses=REFUSALS)
async def create_document(
    principal: Librarian,
    db: DbSession,
    settings: SettingsDep,
    file: Upload,
    title: Title = None,
    collection: CollectionField = None,
) -> Response | DocumentOut:
    try:
        version = await accept(db, settings, principal, file, title, collection=collection)
    except UploadRefused as exc:
        return refused(exc)
    return await _document_out(db, settings, principal, version.document_id)


@router.post(
    "/{document_id}/versions", status_code=201, response_model=DocumentOut, responses=REFUSALS
)
async def upload_version(
    document_id: uuid.UUID,
    principal: Librarian,
    db: DbSession,
    settings: SettingsDep,
    file: Upload,
) -> Response | DocumentOut:
    try:
        await accept(db, settings, principal, file, None, document_id)
    except UploadRefused as exc:
        return refused(exc)
    return await _document_out(db, settings, principal, document_id)


async def retire_document(
    db: DbSession, settings: Settings, principal: Principal, document_id: uuid.UUID
) -> None:
    """Retire (shared with the pages); retiring a retired document changes nothing."""
    document = await store.lock_document(db, document_id)
    if document is None or not access_for(settings, principal).manages(document.collection):
        await db.rollback()
        raise DocumentNotFound("no such document")
    if document.status == DocumentStatus.retired:
        await db.rollback()
        return
    await store.retire(db, document)
    await record(
        db, settings, "document.retire", principal.actor, entity_type="document",
        entity_id=document.id,
    )  # fmt: skip
    await db.commit()


@router.post("/{document_id}/retire", response_model=DocumentOut, responses={404: {}})
async def retire(
    document_id: uuid.UUID, principal: Librarian, db: DbSession, settings: SettingsDep
) -> Response | DocumentOut:
    try:
        await retire_document(db, settings, principal, document_id)
    except UploadRefused as exc:
        return refused(exc)
    return await _document_out(db, settings, principal, document_id)


async def move_document(
    db: DbSession,
    settings: Settings,
    principal: Principal,
    document_id: uuid.UUID,
    collection: str,
) -> None:
    """Move a document (and its chunks) to another collection (shared with the pages).

    The mover manages both collections; search reads the new one at once (one
    transaction, the document locked). Raises DocumentNotFound, CollectionRefused."""
    document = await store.lock_document(db, document_id)
    access = access_for(settings, principal)
    if document is None or not access.manages(document.collection):
        await db.rollback()
        raise DocumentNotFound("no such document")
    try:
        target = upload_collection(settings, access, collection)
    except UploadRefused:
        await db.rollback()
        raise
    if target == document.collection:
        await db.rollback()
        return
    origin = document.collection
    await store.move(db, document, target)
    await record(
        db, settings, "document.move", principal.actor, entity_type="document",
        entity_id=document.id, detail={"from": origin, "to": target},
    )  # fmt: skip
    await db.commit()


class MoveIn(BaseModel):
    collection: str = Field(min_length=1, max_length=64, description="the collection's id")


@router.post("/{document_id}/collection", response_model=DocumentOut, responses={404: {}, 422: {}})
async def move(
    document_id: uuid.UUID,
    body: MoveIn,
    principal: Librarian,
    db: DbSession,
    settings: SettingsDep,
) -> Response | DocumentOut:
    """Move a document to another collection; you must manage both. Its readers change at
    once (search and passages), answers that cited it keep their citations."""
    try:
        await move_document(db, settings, principal, document_id, body.collection)
    except UploadRefused as exc:
        return refused(exc)
    return await _document_out(db, settings, principal, document_id)


class PurgeIn(BaseModel):
    reason: Literal["wrong_document", "contains_phi", "duplicate", "other"] = Field(
        description="recorded in the audit trail (a code: the trail holds no free text)"
    )


class PurgeOut(BaseModel):
    id: uuid.UUID
    versions: int
    chunks: int


@router.post("/{document_id}/purge", response_model=PurgeOut, responses={404: {}})
async def purge(
    document_id: uuid.UUID,
    body: PurgeIn,
    principal: Librarian,
    db: DbSession,
    settings: SettingsDep,
) -> PurgeOut:
    """Remove a document uploaded by mistake: every version's file, text and embeddings.

    Unlike retiring, nothing of it stays readable, not even to auditors. The audit
    trail keeps a tombstone: who purged it, why (a code), how many versions and
    chunks, and each file's SHA-256.
    """
    document = await store.lock_document(db, document_id)
    if document is None or not access_for(settings, principal).manages(document.collection):
        await db.rollback()
        raise HTTPException(404, "no such document")
    purged = await store.purge(db, document)
    await record(
        db, settings, "document.purge", principal.actor, entity_type="document",
        entity_id=document_id,
        detail={"reason": body.reason, "versions": purged.versions, "chunks": purged.chunks,
                "sha256": purged.sha256},
    )  # fmt: skip
    await db.commit()
    return PurgeOut(id=document_id, versions=purged.versions, chunks=purged.chunks)


def listed(settings: Settings, principal: Principal) -> frozenset[str] | None:
    """The collections whose documents the library lists to ``principal``; None: all."""
    return None if principal.has(Role.auditor) else access_for(settings, principal).manage


@router.get("", response_model=list[DocumentOut])
async def list_documents(
    principal: LibrarianOrAuditor, db: DbSession, settings: SettingsDep
) -> list[DocumentOut]:
    """The documents of the collections you manage (every one: admins and auditors)."""
    live = await store.live_versions(db)
    documents = await store.list_documents(db, listed(settings, principal))
    return [DocumentOut.of(d, live) for d in documents]


@router.get("/{document_id}", response_model=DocumentOut, responses={404: {}})
async def get_document(
    document_id: uuid.UUID, principal: LibrarianOrAuditor, db: DbSession, settings: SettingsDep
) -> DocumentOut:
    return await _document_out(db, settings, principal, document_id)


async def _refusal(
    db: DbSession, settings: Settings, principal: Principal, cited: store.CitedChunk
) -> str | None:
    """Why ``principal`` may not read the chunk (an audit reason code); None: they may."""
    if not access_for(settings, principal).reads(cited.document.collection):
        return "collection"
    if principal.has(Role.admin, Role.auditor) or principal.break_glass:
        return None
    if cited.chunk.searchable and cited.document.status == DocumentStatus.active:
        return None
    if await store.cited_to(db, principal.user_id, cited.chunk.id):
        return None
    return "not_live_nor_cited"


@chunks_router.get("/{chunk_id}", response_model=ChunkOut, responses={404: {}})
async def get_chunk(
    chunk_id: Annotated[int, Path(ge=1, le=2**63 - 1)],
    principal: AnyRole,
    db: DbSession,
    settings: SettingsDep,
) -> ChunkOut:
    """A cited passage, as the UI shows it when a citation is clicked.

    Admins, auditors and break-glass read any passage. A clinician reads, in the
    collections they may read, what search can return (the live version of an active
    document) and what an answer of theirs cited, so an old answer's sources stay
    checkable after a new version or a retirement; anything else is "no such chunk",
    as ids are sequential. A clinician who left a department's groups no longer reads
    its passages, even those an old answer cited.
    """
    cited = await store.cited_chunk(db, chunk_id)
    reason = cited and await _refusal(db, settings, principal, cited)
    if cited is not None and reason is not None:
        await record(
            db,
            settings,
            "document.read",
            principal.actor,
            outcome="failure",
            entity_type="document",
            entity_id=cited.document.id,
            detail={"chunk_id": chunk_id, "reason": reason},
        )
        await db.commit()
        cited = None
    if cited is None:
        raise HTTPException(404, "no such chunk")
    await record(
        db,
        settings,
        "document.read",
        principal.actor,
        entity_type="document",
        entity_id=cited.document.id,
        detail={"chunk_id": chunk_id, "version": cited.version.version},
    )
    await db.commit()
    return ChunkOut(
        id=cited.chunk.id,
        document_id=cited.document.id,
        title=cited.document.title,
        version=cited.version.version,
        section=cited.chunk.section,
        page=cited.chunk.page,
        text=cited.chunk.text,
        searchable=cited.chunk.searchable,
        document_status=cited.document.status,
    )
