"""Conversations API (clinicians): list, create, read, delete, and ask with a streamed answer.

``POST /api/v1/conversations/{id}/messages`` answers ``text/event-stream``:

- ``sources``: ``{"sources": [citation, ...], "grounded": bool}``, always first;
- ``delta``: ``{"text": "..."}``, pieces of the answer as they are generated;
- ``done``: ``{"message_id", "grounded", "model", "finish_reason", "usage", "disclaimer",
  "title"}`` (the conversation's title now: the first question names it; null if unread);
- ``error``: ``{"message", "code"}`` if the serving fails midway (nothing is stored then).

The serving is asked before the stream starts: when it is down the answer is a
503 naming it and nothing is stored. A user sees only their own conversations
(404 otherwise); under break-glass any conversation can be read, and that read is
audited with the break-glass flag. Validation errors never echo what was sent.
"""

import uuid
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Response, status
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field, field_validator

from app.auth.deps import Clinician, require_scope
from app.auth.ratelimit import ChatLimit
from app.auth.tokens import Scope
from app.chat import service
from app.db import DbSession
from app.kb.collections import access_for
from app.settings import Settings, get_settings

SettingsDep = Annotated[Settings, Depends(get_settings)]

QUESTION_MAX_CHARS = 4000
TITLE_MAX_CHARS = 200
SEARCH_MAX_CHARS = 200
# Tab, newline and carriage return are text; other control characters are not.
_CONTROL = {chr(c) for c in range(32) if chr(c) not in "\t\n\r"} | {"\x7f"}


router = APIRouter(
    prefix="/api/v1/conversations",
    tags=["conversations"],
    dependencies=[Depends(require_scope(Scope.chat))],
)


def _no_control_characters(value: str) -> str:
    if any(ch in _CONTROL for ch in value):
        raise ValueError("control characters are not allowed")
    return value


class ConversationCreate(BaseModel):
    title: str | None = Field(
        None,
        max_length=TITLE_MAX_CHARS,
        description="default: 'New conversation', then the start of the first question",
    )

    @field_validator("title")
    @classmethod
    def _text(cls, value: str | None) -> str | None:
        return None if value is None else _no_control_characters(value)

    model_config = {"json_schema_extra": {"examples": [{"title": "Sepsis antibiotics"}]}}


class ConversationOut(BaseModel):
    id: uuid.UUID
    title: str
    created_at: datetime
    updated_at: datetime
    message_count: int

    model_config = {
        "json_schema_extra": {
            "examples": [
                {
                    "id": "3f6c2a7e-8b1d-4d6e-9a51-0f2b7c9d1e44",
                    "title": "Sepsis antibiotics",
                    "created_at": "2026-11-23T09:00:00Z",
                    "updated_at": "2026-11-23T09:05:00Z",
                    "message_count": 2,
                }
            ]
        }
    }


class CitationOut(BaseModel):
    number: int = Field(description="the [n] the answer cites it by")
    chunk_id: int = Field(description="GET /api/v1/chunks/{chunk_id} shows the passage")
    document_id: uuid.UUID
    title: str
    version: int
    section: str
    page: int | None
    score: float = Field(description="retrieval score (reciprocal-rank fusion)")
    snippet: str = Field(description="the first ~300 characters of the cited passage")

    model_config = {
        "json_schema_extra": {
            "examples": [
                {
                    "number": 1,
                    "chunk_id": 1234,
                    "document_id": "0b7c1f9e-3c1a-4c53-9a53-6f1f0b1f6f10",
                    "title": "Sepsis guideline",
                    "version": 2,
                    "section": "Sepsis > Antibiotics",
                    "page": 3,
                    "score": 0.0328,
                    "snippet": "Give broad-spectrum antibiotics within one hour of recognition.",
                }
            ]
        }
    }


class MessageOut(BaseModel):
    id: uuid.UUID
    role: str = Field(description="user or assistant")
    content: str
    citations: list[CitationOut]
    grounded: bool = Field(description="false: the documents did not cover the question")
    model: str
    created_at: datetime
    disclaimer: str | None = Field(description="under every answer; null on questions")


class ConversationDetailOut(ConversationOut):
    owner_id: uuid.UUID
    messages: list[MessageOut]


class MessageIn(BaseModel):
    content: str = Field(min_length=1, max_length=QUESTION_MAX_CHARS, description="the question")

    @field_validator("content")
    @classmethod
    def _text(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("the question is empty")
        return _no_control_characters(value)

    model_config = {
        "json_schema_extra": {
            "examples": [{"content": "How soon should antibiotics be given in suspected sepsis?"}]
        }
    }


def message_out(message: service.StoredMessage, settings: Settings) -> MessageOut:
    return MessageOut(
        id=message.id,
        role=message.role,
        content=message.content,
        citations=[CitationOut(**c.public()) for c in message.citations],
        grounded=message.grounded,
        model=message.model,
        created_at=message.created_at,
        disclaimer=settings.disclaimer if message.role == "assistant" else None,
    )


def not_found() -> HTTPException:
    return HTTPException(status.HTTP_404_NOT_FOUND, "no such conversation")


@router.get("", response_model=list[ConversationOut])
async def list_conversations(
    principal: Clinician,
    db: DbSession,
    settings: SettingsDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> list[ConversationOut]:
    """Your conversations, the most recently used first."""
    found = await service.list_conversations(db, settings, principal, limit, offset)
    return [ConversationOut(**vars(c)) for c in found]


class SearchHitOut(BaseModel):
    id: uuid.UUID
    title: str
    updated_at: datetime
    matched: str = Field(description="title or question: where every word was found")
    snippet: str = Field(description="the matching question around the match; '' for a title")

    model_config = {
        "json_schema_extra": {
            "examples": [
                {
                    "id": "3f6c2a7e-8b1d-4d6e-9a51-0f2b7c9d1e44",
                    "title": "Sepsis antibiotics",
                    "updated_at": "2026-11-23T09:05:00Z",
                    "matched": "question",
                    "snippet": "How soon should antibiotics be given in suspected sepsis?",
                }
            ]
        }
    }


@router.get("/search", response_model=list[SearchHitOut])
async def search_conversations(
    principal: Clinician,
    db: DbSession,
    settings: SettingsDep,
    q: Annotated[str, Query(min_length=1, max_length=SEARCH_MAX_CHARS)],
    limit: Annotated[int, Query(ge=1, le=50)] = 20,
) -> list[SearchHitOut]:
    """Your conversations whose title or one of whose questions holds every word of ``q``
    (case-insensitive), the most recently used first.

    Decrypted per request: the titles of your newest 200 conversations and their newest
    2,000 questions are searched (answers are not), older ones are not found. An empty
    or blank ``q`` is 422 (``GET /conversations`` lists the recent ones). The query is
    never logged or audited; the audit row (``conversation.read``) counts what was
    searched and found.
    """
    if not q.strip() or any(ch in _CONTROL for ch in q):
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "q: words to search for")
    found = await service.search_conversations(db, settings, principal, q, limit)
    return [SearchHitOut(**vars(hit)) for hit in found]


@router.post("", status_code=status.HTTP_201_CREATED, response_model=ConversationOut)
async def create_conversation(
    principal: Clinician,
    db: DbSession,
    settings: SettingsDep,
    body: ConversationCreate | None = None,
) -> ConversationOut:
    conversation = await service.create_conversation(
        db, settings, principal, body.title if body else None
    )
    return ConversationOut(
        id=conversation.id,
        title=(body.title if body and body.title else service.DEFAULT_TITLE),
        created_at=conversation.created_at,
        updated_at=conversation.updated_at,
        message_count=0,
    )


@router.get("/{conversation_id}", response_model=ConversationDetailOut, responses={404: {}})
async def read_conversation(
    conversation_id: uuid.UUID, principal: Clinician, db: DbSession, settings: SettingsDep
) -> ConversationDetailOut:
    """A conversation with its messages and their citations (break-glass: anyone's)."""
    try:
        found = await service.read_conversation(db, settings, principal, conversation_id)
    except service.ConversationNotFound:
        raise not_found() from None
    return ConversationDetailOut(
        id=found.id,
        title=found.title,
        owner_id=found.owner_id,
        created_at=found.created_at,
        updated_at=found.updated_at,
        message_count=len(found.messages),
        messages=[message_out(m, settings) for m in found.messages],
    )


@router.delete("/{conversation_id}", status_code=status.HTTP_204_NO_CONTENT, responses={404: {}})
async def delete_conversation(
    conversation_id: uuid.UUID, principal: Clinician, db: DbSession, settings: SettingsDep
) -> Response:
    try:
        await service.delete_conversation(db, settings, principal, conversation_id)
    except service.ConversationNotFound:
        raise not_found() from None
    return Response(status_code=status.HTTP_204_NO_CONTENT)


SSE_DOC: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "Server-sent events: sources, delta..., then done or error",
        "content": {
            "text/event-stream": {
                "example": 'event: sources\ndata: {"sources": [...], "grounded": true}\n\n'
                'event: delta\ndata: {"text": "Give antibiotics within one hour [1]."}\n\n'
                'event: done\ndata: {"message_id": "...", "usage": {...}, "disclaimer": "...",'
                ' "title": "..."}'
            }
        },
    },
    404: {"description": "no such conversation"},
    503: {"description": "a dependency (serving, database, vault, ...) is down, named"},
}


@router.post(
    "/{conversation_id}/messages",
    response_class=StreamingResponse,
    responses={**SSE_DOC, 429: {"description": "over the chat rate limit (Retry-After)"}},
    dependencies=[ChatLimit],
)
async def post_message(
    conversation_id: uuid.UUID,
    body: MessageIn,
    principal: Clinician,
    db: DbSession,
    settings: SettingsDep,
) -> StreamingResponse:
    """Ask a question in your conversation; the cited answer streams back as SSE."""
    try:
        conversation = await service.get_conversation(db, principal, conversation_id)
    except service.ConversationNotFound:
        raise not_found() from None
    turns = await service.history(db, settings, conversation)
    await db.commit()  # reads done: the connection goes back to the pool for the slow part
    readable = access_for(settings, principal).read
    answer = await service.prepare(db, settings, body.content, turns, collections=readable)
    try:
        await service.add_question(db, settings, principal, conversation, body.content, answer)
    except BaseException:
        await answer.aclose()
        raise
    return StreamingResponse(
        service.reply_events(settings, principal, conversation.id, conversation.user_id, answer),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )
