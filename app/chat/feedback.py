"""Feedback on answers, a clinical-safety signal: the clinician's rating, the admins' queue.

A clinician rates an answer in a conversation of their own: thumbs up or down, a
thumbs down optionally naming what is wrong (``FeedbackCategory``), either with an
optional comment. What was rated is kept with it as a snapshot: the question, the
answer's text and its citations (document id, version, title, section, page, chunk
id), so the feedback still says what it was about after the conversation is deleted
or the policy gets a new version. The comment, the snapshot and an admin's review note
are stored only encrypted, each bound to the feedback row and the clinician who gave
it (app/sealed.py). One feedback per user and answer: a second one replaces the first
(``feedback.update``) and puts it back in the queue as open.

Admins read the queue, newest first, and mark items reviewed. Reading it is audited
(``feedback.read``, counts only): admins see other clinicians' questions and answers
there. Audit details and ``clinchat_feedback_total`` carry ids, ratings and categories,
never text.
"""

from __future__ import annotations

import json
import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from app.audit import record
from app.auth.principal import Principal
from app.chat.service import (
    UNREADABLE,
    ConversationNotFound,
    decrypt_all,
    encrypt,
    get_conversation,
)
from app.metrics import FEEDBACK
from app.models import Feedback, FeedbackCategory, FeedbackStatus, Message, Rating, User
from app.sealed import (
    FEEDBACK_COMMENT,
    FEEDBACK_REVIEW_NOTE,
    FEEDBACK_SNAPSHOT,
    MESSAGE_CONTENT,
)
from app.settings import Settings

log = logging.getLogger(__name__)

COMMENT_MAX_CHARS = 2000
NOTE_MAX_CHARS = 2000
CATEGORY_LABELS = {
    FeedbackCategory.wrong: "Wrong",
    FeedbackCategory.outdated_policy: "Outdated policy",
    FeedbackCategory.unsafe: "Unsafe",
    FeedbackCategory.missing_source: "Missing source",
}
# What the snapshot keeps of each citation: where the answer's facts came from, no text
CITED = ("number", "document_id", "version", "title", "section", "page", "chunk_id")
# Tab, newline and carriage return are text; other control characters are not.
_CONTROL = {chr(c) for c in range(32) if chr(c) not in "\t\n\r"} | {"\x7f"}


class AnswerNotFound(Exception):
    """No such answer in a conversation of the principal's own (the same 404 either way)."""


class FeedbackNotFound(Exception):
    """No feedback with that id."""


def clean_text(value: str | None) -> str | None:
    """A comment or note as stored: stripped, None when empty; control characters refused."""
    if value is None:
        return None
    if any(ch in _CONTROL for ch in value):
        raise ValueError("control characters are not allowed")
    return value.strip() or None


# -- giving feedback -------------------------------------------------------------------


@dataclass(frozen=True)
class Given:
    feedback: Feedback
    replaced: bool  # the user's earlier feedback on this answer was replaced


async def _question_before(db: AsyncSession, answer: Message) -> Message | None:
    """The question an answer answers: the conversation's last user message before it."""
    return await db.scalar(
        select(Message)
        .where(
            Message.conversation_id == answer.conversation_id,
            Message.role == "user",
            Message.created_at <= answer.created_at,
        )
        .order_by(Message.created_at.desc(), Message.id.desc())
        .limit(1)
    )


async def give(
    db: AsyncSession,
    settings: Settings,
    principal: Principal,
    conversation_id: uuid.UUID,
    message_id: uuid.UUID,
    rating: Rating,
    category: FeedbackCategory | None,
    comment: str | None,
) -> Given:
    """Store (or replace) the principal's feedback on an answer of their own; audited."""
    if category is not None and rating is not Rating.down:
        raise ValueError("a category goes with a thumbs down only")
    try:
        # the owner's only: break-glass reads conversations, it does not rate them
        conversation = await get_conversation(db, principal, conversation_id)
    except ConversationNotFound:
        raise AnswerNotFound() from None
    # The answer's row lock: two feedbacks of one user on one answer (a double click)
    # are one after the other, the second a replacement, never a duplicate-key error.
    answer = await db.scalar(
        select(Message)
        .where(
            Message.id == message_id,
            Message.conversation_id == conversation.id,
            Message.role == "assistant",
        )
        .with_for_update()
    )
    if answer is None:
        raise AnswerNotFound()
    question = await _question_before(db, answer)
    owner = conversation.user_id
    sealed = [(m.content_enc, MESSAGE_CONTENT.aad(m.id, m.conversation_id, owner))
              for m in (answer, question) if m is not None]  # fmt: skip
    texts = await decrypt_all(settings, sealed)
    cited = [{key: c.get(key) for key in CITED} for c in answer.citations or []]
    snapshot = {
        "question": texts[1] if question is not None else "",
        "answer": texts[0],
        "grounded": answer.grounded,
        "model": answer.model,
        "answered_at": answer.created_at.isoformat(),
        "citations": cited,
    }
    existing = await db.scalar(
        select(Feedback).where(
            Feedback.user_id == principal.user_id, Feedback.message_id == answer.id
        )
    )
    feedback_id = existing.id if existing is not None else uuid.uuid4()
    snapshot_enc = await encrypt(
        settings, json.dumps(snapshot), FEEDBACK_SNAPSHOT.aad(feedback_id, principal.user_id)
    )
    comment_enc = (
        await encrypt(settings, comment, FEEDBACK_COMMENT.aad(feedback_id, principal.user_id))
        if comment
        else None
    )
    feedback = existing or Feedback(id=feedback_id, message_id=answer.id, user_id=principal.user_id)
    feedback.rating = rating.value
    feedback.category = category.value if category else None
    feedback.comment_enc = comment_enc
    feedback.snapshot_enc = snapshot_enc
    # a replacement is new information: its time, and open again for review
    feedback.created_at = datetime.now(UTC)
    feedback.status = FeedbackStatus.open.value
    feedback.reviewed_by = None
    feedback.reviewed_at = None
    feedback.review_note_enc = None
    if existing is None:
        db.add(feedback)
    await db.flush()
    await record(
        db,
        settings,
        "feedback.update" if existing else "feedback.create",
        principal.actor,
        entity_type="feedback",
        entity_id=feedback.id,
        detail={
            "message_id": str(answer.id),
            "conversation_id": str(conversation.id),
            "rating": feedback.rating,
            "category": feedback.category,
            "comment": comment is not None,  # whether there is one, never what it says
            "citations": len(cited),
        },
    )
    await db.commit()
    FEEDBACK.labels(feedback.rating, feedback.category or "none").inc()
    log.info("feedback %s on message %s: %s", feedback.id, answer.id, feedback.rating)
    return Given(feedback, existing is not None)


async def ratings(
    db: AsyncSession, principal: Principal, message_ids: list[uuid.UUID]
) -> dict[uuid.UUID, str]:
    """The principal's rating of each of these answers that has one (the chat page)."""
    if not message_ids:
        return {}
    rows = await db.execute(
        select(Feedback.message_id, Feedback.rating).where(
            Feedback.user_id == principal.user_id, Feedback.message_id.in_(message_ids)
        )
    )
    return {message_id: rating for message_id, rating in rows if message_id is not None}


# -- the admins' queue -----------------------------------------------------------------


@dataclass(frozen=True)
class QueueItem:
    """One feedback as an admin reviews it, decrypted (UNREADABLE where a value is not)."""

    id: uuid.UUID
    rating: str
    category: str | None
    status: str
    created_at: datetime
    given_by: str
    message_id: uuid.UUID | None  # None: the conversation has been deleted since
    comment: str | None
    question: str
    answer: str
    grounded: bool | None
    citations: list[dict[str, Any]]
    reviewed_by: str | None
    reviewed_at: datetime | None
    review_note: str | None
    readable: bool  # False: a value does not decrypt (moved from another row, or damaged)


def _item(
    feedback: Feedback,
    given_by: str,
    reviewed_by: str | None,
    snapshot_text: str,
    comment: str | None,
    note: str | None,
) -> QueueItem:
    snapshot: dict[str, Any] = {}
    readable = UNREADABLE not in (snapshot_text, comment, note)
    if snapshot_text != UNREADABLE:
        try:
            snapshot = json.loads(snapshot_text)
        except ValueError:
            log.error("feedback %s: the snapshot is not JSON", feedback.id)
            readable = False
    return QueueItem(
        id=feedback.id,
        rating=feedback.rating,
        category=feedback.category,
        status=feedback.status,
        created_at=feedback.created_at,
        given_by=given_by,
        message_id=feedback.message_id,
        comment=comment,
        question=str(snapshot.get("question", UNREADABLE)),
        answer=str(snapshot.get("answer", UNREADABLE)),
        grounded=snapshot.get("grounded"),
        citations=list(snapshot.get("citations", [])),
        reviewed_by=reviewed_by,
        reviewed_at=feedback.reviewed_at,
        review_note=note,
        readable=readable,
    )


async def queue(
    db: AsyncSession,
    settings: Settings,
    principal: Principal,
    status: FeedbackStatus | None,
    limit: int = 50,
    offset: int = 0,
) -> list[QueueItem]:
    """Feedback with ``status`` (None: all), newest first, decrypted; audited (counts only)."""
    giver, reviewer = aliased(User), aliased(User)
    query = (
        select(Feedback, giver.username, reviewer.username)
        .join(giver, giver.id == Feedback.user_id)
        .outerjoin(reviewer, reviewer.id == Feedback.reviewed_by)
        .order_by(Feedback.created_at.desc(), Feedback.id.desc())
        .limit(limit)
        .offset(offset)
    )
    if status is not None:
        query = query.where(Feedback.status == status.value)
    rows = (await db.execute(query)).all()
    sealed: list[tuple[bytes, bytes]] = []
    for feedback, _, _ in rows:
        sealed.append((feedback.snapshot_enc, FEEDBACK_SNAPSHOT.aad(feedback.id, feedback.user_id)))
        for blob, column in (
            (feedback.comment_enc, FEEDBACK_COMMENT),
            (feedback.review_note_enc, FEEDBACK_REVIEW_NOTE),
        ):
            if blob is not None:
                sealed.append((blob, column.aad(feedback.id, feedback.user_id)))
    texts = iter(await decrypt_all(settings, sealed))
    items = []
    for feedback, given_by, reviewed_by in rows:
        snapshot = next(texts)
        comment = next(texts) if feedback.comment_enc is not None else None
        note = next(texts) if feedback.review_note_enc is not None else None
        items.append(_item(feedback, given_by, reviewed_by, snapshot, comment, note))
    await record(
        db,
        settings,
        "feedback.read",
        principal.actor,
        entity_type="feedback",
        detail={
            "listed": len(items),
            "unreadable": sum(not item.readable for item in items),
            "status": status.value if status else "all",
        },
    )
    await db.commit()
    return items


async def review(
    db: AsyncSession,
    settings: Settings,
    principal: Principal,
    feedback_id: uuid.UUID,
    note: str | None,
) -> Feedback:
    """Mark a feedback reviewed, with an optional note (encrypted); audited.

    Reviewing it again replaces the reviewer, time and note."""
    feedback = await db.scalar(select(Feedback).where(Feedback.id == feedback_id).with_for_update())
    if feedback is None:
        raise FeedbackNotFound()
    again = feedback.status == FeedbackStatus.reviewed
    feedback.review_note_enc = (
        await encrypt(settings, note, FEEDBACK_REVIEW_NOTE.aad(feedback.id, feedback.user_id))
        if note
        else None
    )
    feedback.status = FeedbackStatus.reviewed.value
    feedback.reviewed_by = principal.user_id
    feedback.reviewed_at = datetime.now(UTC)
    await record(
        db,
        settings,
        "feedback.review",
        principal.actor,
        entity_type="feedback",
        entity_id=feedback.id,
        detail={
            "rating": feedback.rating,
            "category": feedback.category,
            "note": note is not None,
            "again": again,
        },
    )
    await db.commit()
    return feedback
