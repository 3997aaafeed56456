"""The document library (admins; a collection manager sees and manages only the
documents of the collections they manage): list, upload, new version, move to
another collection (one who manages two or more), retire.

Forms post multipart with the session's ``csrf_token`` field; a refused upload
re-renders the library with the reason and the refusal's 4xx status. Progress of
queued versions is polled by static/documents.js from GET /api/v1/documents/{id}.
Each row's file input and buttons name its document (to a screen reader too), and
its PHI badge the types the detector found (their counts in the tooltip and in
visually hidden text).
"""

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, Request, UploadFile, status
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from app.auth.deps import Librarian
from app.auth.principal import Principal
from app.db import DbSession
from app.kb import store
from app.kb.collections import access_for, name_of
from app.kb.ingest import TITLE_MAX
from app.kb.parse import ACCEPTED, EXTENSIONS, UploadRefused
from app.routers.documents import (
    TITLE_PATTERN,
    UploadLimitRoute,
    accept,
    listed,
    move_document,
    retire_document,
)
from app.settings import Settings, get_settings
from app.web import render

router = APIRouter(include_in_schema=False, route_class=UploadLimitRoute)
SettingsDep = Annotated[Settings, Depends(get_settings)]


async def library(
    request: Request,
    db: DbSession,
    settings: Settings,
    principal: Principal,
    status_code: int = 200,
    error: str = "",
    notice: str = "",
) -> HTMLResponse:
    documents = await store.list_documents(db, listed(settings, principal))
    access = access_for(settings, principal)
    # the collections an upload may go to, the default first for a hospital-wide admin
    targets = sorted(
        (slug for slug in settings.collections if access.manages(slug)),
        key=lambda slug: (slug != settings.default_collection, name_of(settings, slug)),
    )
    live = await store.live_versions(db)
    rows = []
    for document in documents:
        latest = max(document.versions, key=lambda v: v.version, default=None)
        rows.append(
            {
                "document": document,
                "latest": latest,
                "live": live.get(document.id),
                "collection": name_of(settings, document.collection),
                "collection_id": document.collection,
                # the PHI types the latest version holds, by name, with their counts
                "phi": sorted((latest.phi_types or {}).items()) if latest else [],
            }
        )
    return render(
        request,
        "documents.html",
        status_code=status_code,
        rows=rows,
        error=error,
        notice=notice,
        accept=",".join(sorted(EXTENSIONS)),
        accepted=ACCEPTED,
        max_mb=round(settings.upload_max_bytes / 2**20, 1),
        collections=[(slug, name_of(settings, slug)) for slug in targets],
    )


@router.get("/documents", response_class=HTMLResponse)
async def documents_page(
    principal: Librarian, request: Request, db: DbSession, settings: SettingsDep
) -> Response:
    notice = "Uploaded: it is being processed." if request.query_params.get("uploaded") else ""
    return await library(request, db, settings, principal, notice=notice)


@router.post("/documents/upload", response_class=HTMLResponse)
async def upload_page(
    principal: Librarian,
    request: Request,
    db: DbSession,
    settings: SettingsDep,
    file: Annotated[UploadFile, File()],
    title: Annotated[str, Form(max_length=TITLE_MAX, pattern=TITLE_PATTERN)] = "",
    collection: Annotated[str, Form(max_length=64)] = "",
) -> Response:
    try:
        await accept(db, settings, principal, file, title or None, collection=collection or None)
    except UploadRefused as exc:
        return await library(
            request, db, settings, principal, exc.status_code, f"Not uploaded: {exc.message}."
        )
    return RedirectResponse("/documents?uploaded=1", status.HTTP_303_SEE_OTHER)


@router.post("/documents/{document_id}/versions", response_class=HTMLResponse)
async def version_page(
    document_id: uuid.UUID,
    principal: Librarian,
    request: Request,
    db: DbSession,
    settings: SettingsDep,
    file: Annotated[UploadFile, File()],
) -> Response:
    try:
        await accept(db, settings, principal, file, None, document_id)
    except UploadRefused as exc:
        return await library(
            request, db, settings, principal, exc.status_code, f"Not uploaded: {exc.message}."
        )
    return RedirectResponse("/documents?uploaded=1", status.HTTP_303_SEE_OTHER)


@router.post("/documents/{document_id}/retire", response_class=HTMLResponse)
async def retire_page(
    document_id: uuid.UUID,
    principal: Librarian,
    request: Request,
    db: DbSession,
    settings: SettingsDep,
) -> Response:
    try:
        await retire_document(db, settings, principal, document_id)
    except UploadRefused as exc:
        return await library(
            request, db, settings, principal, exc.status_code, f"Not retired: {exc.message}."
        )
    return RedirectResponse("/documents", status.HTTP_303_SEE_OTHER)


@router.post("/documents/{document_id}/collection", response_class=HTMLResponse)
async def move_page(
    document_id: uuid.UUID,
    principal: Librarian,
    request: Request,
    db: DbSession,
    settings: SettingsDep,
    collection: Annotated[str, Form(max_length=64)],
) -> Response:
    try:
        await move_document(db, settings, principal, document_id, collection)
    except UploadRefused as exc:
        return await library(
            request, db, settings, principal, exc.status_code, f"Not moved: {exc.message}."
        )
    return RedirectResponse("/documents", status.HTTP_303_SEE_OTHER)
