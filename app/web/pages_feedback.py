"""The admins' feedback queue: GET /admin/feedback, POST /admin/feedback/{id}/review.

Each item shows the rating, category and comment, and what was rated: the question,
the answer and the policy versions it cited (from the snapshot kept with the feedback,
so it outlives the conversation). Reading the page is audited like the API's queue
(``feedback.read``). "Mark reviewed" is a plain form posting the session's
``csrf_token`` and an optional note; no script is needed.
"""

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Form, Request, status
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from app.auth.deps import Admin
from app.auth.principal import Principal
from app.chat import feedback as service
from app.db import DbSession
from app.models import FeedbackStatus
from app.settings import Settings, get_settings
from app.web import render

router = APIRouter(include_in_schema=False)
SettingsDep = Annotated[Settings, Depends(get_settings)]

PAGE_SIZE = 50
STATUSES = ("open", "reviewed", "all")
_MAX_OFFSET = 1_000_000


def _status(request: Request) -> str:
    value = request.query_params.get("status", "open")
    return value if value in STATUSES else "open"


def _offset(request: Request) -> int:
    raw = request.query_params.get("offset", "")
    return int(raw) if raw.isdigit() and int(raw) <= _MAX_OFFSET else 0


async def _page(
    request: Request,
    db: DbSession,
    settings: Settings,
    principal: Principal,
    error: str = "",
    status_code: int = 200,
) -> HTMLResponse:
    shown, offset = _status(request), _offset(request)
    wanted = None if shown == "all" else FeedbackStatus(shown)
    items = await service.queue(db, settings, principal, wanted, PAGE_SIZE, offset)
    return render(
        request,
        "feedback.html",
        status_code=status_code,
        items=items,
        shown=shown,
        statuses=STATUSES,
        labels={str(k): v for k, v in service.CATEGORY_LABELS.items()},
        next_offset=offset + PAGE_SIZE if len(items) == PAGE_SIZE else None,
        error=error,
        note_max=service.NOTE_MAX_CHARS,
    )


@router.get("/admin/feedback", response_class=HTMLResponse)
async def feedback_page(
    principal: Admin, request: Request, db: DbSession, settings: SettingsDep
) -> Response:
    return await _page(request, db, settings, principal)


@router.post("/admin/feedback/{feedback_id}/review", response_class=HTMLResponse)
async def review_page(
    feedback_id: uuid.UUID,
    principal: Admin,
    request: Request,
    db: DbSession,
    settings: SettingsDep,
    note: Annotated[str, Form(max_length=service.NOTE_MAX_CHARS)] = "",
) -> Response:
    try:
        await service.review(db, settings, principal, feedback_id, service.clean_text(note))
    except service.FeedbackNotFound:
        return await _page(request, db, settings, principal, "No such feedback.", 404)
    except ValueError:
        return await _page(
            request, db, settings, principal, "Not reviewed: the note holds control characters.",
            status.HTTP_422_UNPROCESSABLE_CONTENT,
        )  # fmt: skip
    return RedirectResponse("/admin/feedback", status.HTTP_303_SEE_OTHER)
