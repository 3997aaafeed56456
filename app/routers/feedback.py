"""Feedback on answers: clinicians rate their answers, admins review the queue.

- ``POST /api/v1/conversations/{id}/messages/{message_id}/feedback`` (clinician, the
  conversation's owner, an assistant message of it; 404 for anything else, the same for
  a conversation that is not theirs): 201 new, 200 when it replaced their earlier one.
- ``GET /api/v1/feedback?status=open|reviewed|all`` (admin): the queue, newest first,
  with what was rated decrypted; audited as ``feedback.read`` (counts only).
- ``POST /api/v1/feedback/{id}/review`` (admin) ``{"note"}``: marks it reviewed; the
  optional note is stored encrypted like the comment.

Creating needs the token scope ``chat``, the queue ``feedback``. Validation errors
never echo what was sent (app/errors.py).
"""

import uuid
from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Response, status
from pydantic import BaseModel, Field, field_validator, model_validator

from app.auth.deps import Admin, Clinician, require_scope
from app.auth.tokens import Scope
from app.chat import feedback as service
from app.db import DbSession
from app.models import FeedbackCategory, FeedbackStatus, Rating
from app.settings import Settings, get_settings

SettingsDep = Annotated[Settings, Depends(get_settings)]

# rating an answer is part of chatting
answers_router = APIRouter(
    prefix="/api/v1/conversations",
    tags=["feedback"],
    dependencies=[Depends(require_scope(Scope.chat))],
)
# the queue shows other clinicians' questions and answers: a scope of its own
router = APIRouter(
    prefix="/api/v1/feedback",
    tags=["feedback"],
    dependencies=[Depends(require_scope(Scope.feedback))],
)


class FeedbackIn(BaseModel):
    rating: Rating
    category: FeedbackCategory | None = Field(None, description="a thumbs down only")
    comment: str | None = Field(None, max_length=service.COMMENT_MAX_CHARS)

    @field_validator("comment")
    @classmethod
    def _text(cls, value: str | None) -> str | None:
        return service.clean_text(value)

    @model_validator(mode="after")
    def _category_only_down(self) -> "FeedbackIn":
        if self.category is not None and self.rating is not Rating.down:
            raise ValueError("a category goes with a thumbs down only")
        return self

    model_config = {
        "json_schema_extra": {
            "examples": [
                {"rating": "down", "category": "outdated_policy", "comment": "Dose changed in v3"},
                {"rating": "up"},
            ]
        }
    }


class FeedbackOut(BaseModel):
    id: uuid.UUID
    message_id: uuid.UUID
    rating: str
    category: str | None
    status: str = Field(description="open (again, after a replacement) or reviewed")
    created_at: datetime
    replaced: bool = Field(description="your earlier feedback on this answer was replaced")


class CitedVersionOut(BaseModel):
    number: int | None
    document_id: uuid.UUID | None
    version: int | None
    title: str | None
    section: str | None
    page: int | None
    chunk_id: int | None


class FeedbackItemOut(BaseModel):
    id: uuid.UUID
    rating: str
    category: str | None
    status: str
    created_at: datetime
    given_by: str = Field(description="the clinician's user name")
    message_id: uuid.UUID | None = Field(description="null: the conversation was deleted")
    comment: str | None
    question: str
    answer: str
    grounded: bool | None = Field(description="false: no document covered the question")
    citations: list[CitedVersionOut] = Field(description="the policy versions the answer cited")
    reviewed_by: str | None
    reviewed_at: datetime | None
    review_note: str | None
    readable: bool = Field(description="false: a stored value does not decrypt")

    model_config = {
        "json_schema_extra": {
            "examples": [
                {
                    "id": "7d7c3b1e-2f0a-4b8e-9c55-1a2b3c4d5e6f",
                    "rating": "down",
                    "category": "outdated_policy",
                    "status": "open",
                    "created_at": "2026-12-16T09:00:00Z",
                    "given_by": "clin1",
                    "message_id": "3f6c2a7e-8b1d-4d6e-9a51-0f2b7c9d1e44",
                    "comment": "The dose changed in version 3",
                    "question": "How soon should antibiotics be given in suspected sepsis?",
                    "answer": "Within one hour of recognition [1].",
                    "grounded": True,
                    "citations": [
                        {
                            "number": 1,
                            "document_id": "0b7c1f9e-3c1a-4c53-9a53-6f1f0b1f6f10",
                            "version": 2,
                            "title": "Sepsis guideline",
                            "section": "Sepsis > Antibiotics",
                            "page": 3,
                            "chunk_id": 1234,
                        }
                    ],
                    "reviewed_by": None,
                    "reviewed_at": None,
                    "review_note": None,
                    "readable": True,
                }
            ]
        }
    }


class ReviewIn(BaseModel):
    note: str | None = Field(
        None, max_length=service.NOTE_MAX_CHARS, description="stored encrypted; optional"
    )

    @field_validator("note")
    @classmethod
    def _text(cls, value: str | None) -> str | None:
        return service.clean_text(value)

    model_config = {"json_schema_extra": {"examples": [{"note": "Policy v3 uploaded"}]}}


class ReviewedOut(BaseModel):
    id: uuid.UUID
    status: str
    reviewed_at: datetime | None


def item_out(item: service.QueueItem) -> FeedbackItemOut:
    return FeedbackItemOut(
        **{k: v for k, v in vars(item).items() if k != "citations"},
        citations=[CitedVersionOut(**{k: c.get(k) for k in service.CITED}) for c in item.citations],
    )


@answers_router.post(
    "/{conversation_id}/messages/{message_id}/feedback",
    response_model=FeedbackOut,
    status_code=status.HTTP_201_CREATED,
    responses={200: {"description": "replaced your earlier feedback"}, 404: {}},
)
async def give_feedback(
    conversation_id: uuid.UUID,
    message_id: uuid.UUID,
    body: FeedbackIn,
    principal: Clinician,
    db: DbSession,
    settings: SettingsDep,
    response: Response,
) -> FeedbackOut:
    """Rate an answer in your conversation; a second rating replaces the first."""
    try:
        given = await service.give(
            db, settings, principal, conversation_id, message_id,
            body.rating, body.category, body.comment,
        )  # fmt: skip
    except service.AnswerNotFound:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no such answer") from None
    if given.replaced:
        response.status_code = status.HTTP_200_OK
    row = given.feedback
    return FeedbackOut(
        id=row.id,
        message_id=message_id,
        rating=row.rating,
        category=row.category,
        status=row.status,
        created_at=row.created_at,
        replaced=given.replaced,
    )


@router.get("", response_model=list[FeedbackItemOut])
async def list_feedback(
    principal: Admin,
    db: DbSession,
    settings: SettingsDep,
    status_: Annotated[Literal["open", "reviewed", "all"], Query(alias="status")] = "open",
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> list[FeedbackItemOut]:
    """The review queue, newest first (reading it is audited)."""
    wanted = None if status_ == "all" else FeedbackStatus(status_)
    items = await service.queue(db, settings, principal, wanted, limit, offset)
    return [item_out(item) for item in items]


@router.post("/{feedback_id}/review", response_model=ReviewedOut, responses={404: {}})
async def review_feedback(
    feedback_id: uuid.UUID,
    principal: Admin,
    db: DbSession,
    settings: SettingsDep,
    body: ReviewIn | None = None,
) -> ReviewedOut:
    """Mark a feedback reviewed, with an optional note."""
    try:
        row = await service.review(
            db, settings, principal, feedback_id, body.note if body else None
        )
    except service.FeedbackNotFound:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no such feedback") from None
    return ReviewedOut(id=row.id, status=row.status, reviewed_at=row.reviewed_at)
