"""The clinician's pages: home (conversation list) and the chat page.

``GET /`` is every signed-in user's landing page: clinicians see their
conversations, other roles a link to their own area. The chat page renders the
stored messages as escaped text; static/markdown.js shows an answer's markdown (as
elements and text nodes, never HTML from the model) and static/chat.js posts
questions to the API and shows the streamed answer, its citations (opened from GET
/api/v1/chunks/{id}), the disclaimer and a "Copy answer" button, keeps the answer's
end in view above the question box and takes the conversation's new title from the
stream's ``done`` event. Beside it: the reader's own conversations, newest first, with a
search over their titles and questions (GET /api/v1/conversations/search), and the cited
passage in a side panel; "Regenerate" under the last answer asks its question again.
Under each answer of one's own conversation: thumbs up and down
(app/chat/feedback.py), sent by static/chat.js. Forms post with the session's
``csrf_token`` field.
"""

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Request, status
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from app.auth.deps import Clinician, CurrentPrincipal
from app.chat import feedback, service
from app.db import DbSession
from app.models import Role
from app.routers.chat import SEARCH_MAX_CHARS
from app.settings import Settings, get_settings
from app.web import render

router = APIRouter(include_in_schema=False)
SettingsDep = Annotated[Settings, Depends(get_settings)]
SIDEBAR_LIMIT = 50  # the chat page's sidebar: the newest conversations; search finds more


@router.get("/", response_class=HTMLResponse)
async def home(
    principal: CurrentPrincipal, request: Request, db: DbSession, settings: SettingsDep
) -> Response:
    if not principal.has(Role.clinician):
        return render(request, "index.html", clinician=False)
    conversations = await service.list_conversations(db, settings, principal, limit=200)
    return render(request, "index.html", clinician=True, conversations=conversations)


@router.post("/conversations/new")
async def new_conversation(principal: Clinician, db: DbSession, settings: SettingsDep) -> Response:
    conversation = await service.create_conversation(db, settings, principal, None)
    return RedirectResponse(f"/c/{conversation.id}", status.HTTP_303_SEE_OTHER)


@router.get("/c/{conversation_id}", response_class=HTMLResponse)
async def chat_page(
    conversation_id: uuid.UUID,
    principal: Clinician,
    request: Request,
    db: DbSession,
    settings: SettingsDep,
) -> Response:
    try:
        found = await service.read_conversation(db, settings, principal, conversation_id)
    except service.ConversationNotFound:
        return render(request, "chat_missing.html", status_code=status.HTTP_404_NOT_FOUND)
    own = found.owner_id == principal.user_id
    answers = [m.id for m in found.messages if m.role == "assistant"]
    return render(
        request,
        "chat.html",
        conversation=found,
        own=own,
        # the sidebar: the reader's own conversations (also under break-glass)
        recent=await service.list_conversations(db, settings, principal, limit=SIDEBAR_LIMIT),
        search_max=SEARCH_MAX_CHARS,
        search_scope=service.SEARCH_CONVERSATIONS,
        disclaimer=settings.disclaimer,
        # the reader's own ratings: only the owner rates (break-glass reads)
        ratings=await feedback.ratings(db, principal, answers) if own else {},
        feedback_categories=[(str(k), v) for k, v in feedback.CATEGORY_LABELS.items()],
        comment_max=feedback.COMMENT_MAX_CHARS,
    )


@router.post("/c/{conversation_id}/delete")
async def delete_page(
    conversation_id: uuid.UUID,
    principal: Clinician,
    request: Request,
    db: DbSession,
    settings: SettingsDep,
) -> Response:
    try:
        await service.delete_conversation(db, settings, principal, conversation_id)
    except service.ConversationNotFound:
        return render(request, "chat_missing.html", status_code=status.HTTP_404_NOT_FOUND)
    return RedirectResponse("/", status.HTTP_303_SEE_OTHER)
