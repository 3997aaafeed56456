"""Conversations, messages and cited answers: what the chat API, its pages and the facade share.

An answer: count the PHI in the question (``clinchat_phi_detections_total``),
redact it first when the policy says so (the stored message keeps the original,
encrypted), retrieve chunks, and either answer with the fixed not-found message
without calling the model, or open a stream from the serving with a prompt of
the numbered sources. ``prepare`` opens that stream before the caller answers
anything, so a serving that is down is a 503, not a broken stream.

Message text and conversation titles are stored only encrypted, each bound to its
row and owner (app/sealed.py). Log lines carry ids and counts.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import anyio.to_thread
from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.audit import AuditUnavailable, record
from app.auth.principal import Principal
from app.chat import llm
from app.chat.prompt import HISTORY_TURNS, NOT_FOUND, Turn, build_messages
from app.crypto import DecryptionError, KeysUnavailable, cipher_for
from app.db import sessionmaker
from app.errors import DependencyUnavailable
from app.kb.retrieve import Collections, Hit, retrieve
from app.metrics import PHI_DETECTIONS
from app.models import Chunk, Conversation, Message
from app.phi import detect, redact
from app.sealed import CONVERSATION_TITLE, MESSAGE_CONTENT
from app.settings import Settings

log = logging.getLogger(__name__)

DEFAULT_TITLE = "New conversation"
TITLE_CHARS = 80  # a conversation's automatic title: the start of its first question
SNIPPET_CHARS = 300
# Prompt budget: the first draft assumes this many characters per token (English
# averages about 4); the serving then counts the draft's real tokens (/tokenize) and
# the sources are cut to fit before anything is asked.
CHARS_PER_TOKEN = 3
PROMPT_ATTEMPTS = 4  # drafts counted, or refused as too long, before giving up
FIT_MARGIN = 0.97  # a cut by characters is not exact in tokens: aim a little under
UNREADABLE = "[this message cannot be decrypted]"


class ConversationNotFound(Exception):
    """No such conversation, or not one this principal may see (the same 404 either way)."""


# -- citations ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Citation:
    """One numbered source of an answer: [number] in the answer's text."""

    number: int
    chunk_id: int
    document_id: uuid.UUID
    title: str
    version: int
    section: str
    page: int | None
    score: float
    snippet: str = ""

    @classmethod
    def of(cls, number: int, hit: Hit) -> Citation:
        return cls(
            number=number,
            chunk_id=hit.chunk_id,
            document_id=hit.document_id,
            title=hit.title,
            version=hit.version,
            section=hit.section,
            page=hit.page,
            score=round(hit.score, 6),
            snippet=hit.text[:SNIPPET_CHARS],
        )

    def stored(self) -> dict[str, Any]:
        """As kept in messages.citations: no text, the snippet is read from the chunk."""
        data = self.public()
        del data["snippet"]
        return data

    def public(self) -> dict[str, Any]:
        return {
            "number": self.number,
            "chunk_id": self.chunk_id,
            "document_id": str(self.document_id),
            "title": self.title,
            "version": self.version,
            "section": self.section,
            "page": self.page,
            "score": self.score,
            "snippet": self.snippet,
        }

    @classmethod
    def from_stored(cls, data: dict[str, Any], snippet: str) -> Citation:
        return cls(
            number=int(data.get("number", 0)),
            chunk_id=int(data["chunk_id"]),
            document_id=uuid.UUID(str(data["document_id"])),
            title=str(data.get("title", "")),
            version=int(data.get("version", 0)),
            section=str(data.get("section", "")),
            page=data.get("page"),
            score=float(data.get("score", 0.0)),
            snippet=snippet,
        )


# -- answers -----------------------------------------------------------------------------


def count_phi(text: str, source: str) -> dict[str, int]:
    """PHI spans in ``text`` by type, counted in the metrics (type labels only)."""
    counts = Counter(str(span.type) for span in detect(text))
    for kind, n in counts.items():
        PHI_DETECTIONS.labels(source, kind).inc(n)
    return dict(counts)


def for_model(settings: Settings, text: str) -> str:
    """What the model (and retrieval) may see of user text under the PHI policy."""
    return redact(text) if settings.redact_prompts else text


def _screen(
    settings: Settings, question: str, history: Sequence[Turn]
) -> tuple[dict[str, int], str, list[Turn]]:
    """The question's PHI counts, and the question and history as the model may see them."""
    phi = count_phi(question, "prompt")
    turns = [Turn(t.role, for_model(settings, t.content)) for t in history]
    return phi, for_model(settings, question), turns


@dataclass
class Answer:
    """An answer about to be streamed: its citations and, when grounded, the upstream stream."""

    citations: list[Citation]
    stream: llm.Stream | None
    phi_types: dict[str, int] = field(default_factory=dict)

    @property
    def grounded(self) -> bool:
        return self.stream is not None

    @property
    def model(self) -> str:
        return self.stream.model if self.stream else ""

    @property
    def usage(self) -> llm.Usage:
        return self.stream.usage if self.stream else llm.Usage()

    @property
    def finish_reason(self) -> str:
        return (self.stream.finish_reason if self.stream else None) or "stop"

    async def texts(self) -> AsyncIterator[str]:
        """The answer's text pieces; the upstream stream is closed however this ends."""
        if self.stream is None:
            yield NOT_FOUND
            return
        try:
            async for piece in self.stream.deltas():
                yield piece
        finally:
            await self.stream.aclose()

    async def aclose(self) -> None:
        if self.stream is not None:
            await self.stream.aclose()


async def prepare(
    db: AsyncSession,
    settings: Settings,
    question: str,
    history: Sequence[Turn] = (),
    *,
    collections: Collections,
    max_tokens: int | None = None,
    temperature: float | None = None,
) -> Answer:
    """Retrieve from ``collections`` (the asker's readable ones, app/kb/collections.py)
    and, if anything is relevant, open the model's stream (raises 503s)."""
    # PHI detection is CPU work proportional to the text (up to ~100 turns of 32,000
    # characters through the facade): in a worker thread, so the event loop keeps
    # serving every other request meanwhile.
    phi, asked, turns = await anyio.to_thread.run_sync(_screen, settings, question, history)
    hits = await retrieve(db, settings, asked, collections=collections)
    # End the read transaction: its connection must not wait on the model (a burst of
    # questions would hold the whole pool while the serving queues them).
    await db.commit()
    if not hits:
        log.info("answer: nothing relevant retrieved; not-found answer")
        return Answer([], None, phi)
    stream, used = await _open(settings, asked, hits, turns, max_tokens, temperature)
    log.info("answer: %d chunks retrieved, %d in the prompt", len(hits), used)
    return Answer([Citation.of(n, hit) for n, hit in enumerate(hits[:used], 1)], stream, phi)


async def _open(
    settings: Settings,
    question: str,
    hits: list[Hit],
    history: list[Turn],
    max_tokens: int | None,
    temperature: float | None,
) -> tuple[llm.Stream, int]:
    info = await llm.model_info(settings)
    answer_tokens = min(max_tokens or settings.max_answer_tokens, settings.max_answer_tokens)
    max_chars: int | None = None
    room: int | None = None
    counting = True
    if info.max_len:
        answer_tokens = min(answer_tokens, info.max_len // 2)  # leave the sources room
        room = info.max_len - answer_tokens
        max_chars = room * CHARS_PER_TOKEN
    for _ in range(PROMPT_ATTEMPTS):
        messages, used = build_messages(question, hits, history, max_chars)
        if used == 0:
            break
        chars = sum(len(m["content"]) for m in messages)
        if room is not None and counting:
            try:
                tokens = await llm.prompt_tokens(settings, info.id, messages)
            except DependencyUnavailable:  # a serving without /tokenize: its refusal tells
                counting = False
            else:
                if tokens > room:
                    max_chars = int(chars * room / tokens * FIT_MARGIN)
                    continue
        try:
            return await llm.open_stream(settings, messages, answer_tokens, temperature), used
        except llm.ContextTooLong:  # another serving's template or a changed model
            max_chars = chars // 2
    raise DependencyUnavailable("serving", "unable to fit the sources in its context")


# -- storage -----------------------------------------------------------------------------


async def encrypt(settings: Settings, text: str, aad: bytes) -> bytes:
    """``text`` encrypted, bound by ``aad`` (app/sealed.py); Vault may be asked for a
    data key, so off the event loop."""
    return await anyio.to_thread.run_sync(cipher_for(settings).encrypt_text, text, aad)


def _decrypt_all(settings: Settings, sealed: list[tuple[bytes, bytes]]) -> list[str]:
    cipher = cipher_for(settings)
    texts = []
    for blob, aad in sealed:
        try:
            texts.append(cipher.decrypt_text(blob, aad))
        except DecryptionError as exc:
            # the column and ids are in the associated data; never the text
            log.error("a stored value does not decrypt: %s (%s)", _where(aad), exc)
            texts.append(UNREADABLE)
    return texts


def _where(aad: bytes) -> str:
    return " ".join(part.decode() for part in aad.split(b"\x00")[1:])


async def decrypt_all(settings: Settings, sealed: list[tuple[bytes, bytes]]) -> list[str]:
    """Each (blob, associated data) decrypted; UNREADABLE for one that does not."""
    return await anyio.to_thread.run_sync(_decrypt_all, settings, sealed)


def _title(conversation: Conversation) -> tuple[bytes, bytes]:
    return conversation.title_enc, CONVERSATION_TITLE.aad(conversation.id, conversation.user_id)


def _content(message: Message, owner_id: uuid.UUID) -> tuple[bytes, bytes]:
    aad = MESSAGE_CONTENT.aad(message.id, message.conversation_id, owner_id)
    return message.content_enc, aad


def new_title(question: str) -> str:
    first_line = " ".join(question.split())
    return (
        first_line
        if len(first_line) <= TITLE_CHARS
        else first_line[: TITLE_CHARS - 1].rstrip() + "…"
    )


async def create_conversation(
    db: AsyncSession, settings: Settings, principal: Principal, title: str | None
) -> Conversation:
    conversation_id = uuid.uuid4()
    conversation = Conversation(
        id=conversation_id,
        user_id=principal.user_id,
        title_enc=await encrypt(
            settings,
            title or DEFAULT_TITLE,
            CONVERSATION_TITLE.aad(conversation_id, principal.user_id),
        ),
    )
    db.add(conversation)
    await db.flush()
    await record(
        db,
        settings,
        "conversation.create",
        principal.actor,
        entity_type="conversation",
        entity_id=conversation.id,
    )
    await db.commit()
    await db.refresh(conversation)
    return conversation


async def get_conversation(
    db: AsyncSession,
    principal: Principal,
    conversation_id: uuid.UUID,
    break_glass_read: bool = False,
    lock: bool = False,
) -> Conversation:
    """The principal's own conversation; any one under break-glass when ``break_glass_read``."""
    query = select(Conversation).where(Conversation.id == conversation_id)
    if lock:
        query = query.with_for_update()
    conversation = await db.scalar(query)
    if conversation is None:
        raise ConversationNotFound()
    if conversation.user_id != principal.user_id and not (
        break_glass_read and principal.break_glass
    ):
        raise ConversationNotFound()
    return conversation


@dataclass(frozen=True)
class ConversationSummary:
    id: uuid.UUID
    title: str
    created_at: datetime
    updated_at: datetime
    message_count: int


async def list_conversations(
    db: AsyncSession, settings: Settings, principal: Principal, limit: int = 50, offset: int = 0
) -> list[ConversationSummary]:
    """The principal's own conversations, the most recently used first (audited)."""
    counts = (
        select(Message.conversation_id, func.count().label("n"))
        .group_by(Message.conversation_id)
        .subquery()
    )
    rows = (
        await db.execute(
            select(Conversation, func.coalesce(counts.c.n, 0))
            .outerjoin(counts, counts.c.conversation_id == Conversation.id)
            .where(Conversation.user_id == principal.user_id)
            .order_by(Conversation.updated_at.desc(), Conversation.id)
            .limit(limit)
            .offset(offset)
        )
    ).all()
    titles = await decrypt_all(settings, [_title(c) for c, _ in rows])
    await record(
        db,
        settings,
        "conversation.read",
        principal.actor,
        entity_type="conversation",
        detail={"listed": len(rows)},
    )
    await db.commit()
    return [
        ConversationSummary(c.id, title, c.created_at, c.updated_at, int(n))
        for (c, n), title in zip(rows, titles, strict=True)
    ]


# Search decrypts at request time, never from an index: the user's newest conversations
# and their newest questions, at most these many.
SEARCH_CONVERSATIONS = 200
SEARCH_QUESTIONS = 2000
SEARCH_SNIPPET_CHARS = 120


@dataclass(frozen=True)
class SearchHit:
    id: uuid.UUID
    title: str
    updated_at: datetime
    matched: str  # "title" or "question"
    snippet: str  # the matching question's text around the match ("" for a title)


def _words(text: str) -> list[str]:
    return text.casefold().split()


def _snippet(text: str, word: str) -> str:
    """``text`` around the first ``word`` in it, on one line, at most SEARCH_SNIPPET_CHARS."""
    flat = " ".join(text.split())
    if len(flat) <= SEARCH_SNIPPET_CHARS:
        return flat
    at = max(flat.casefold().find(word) - SEARCH_SNIPPET_CHARS // 3, 0)
    cut = flat[at : at + SEARCH_SNIPPET_CHARS - 2]
    return ("…" if at else "") + cut + "…"


async def search_conversations(
    db: AsyncSession, settings: Settings, principal: Principal, query: str, limit: int = 20
) -> list[SearchHit]:
    """The principal's own conversations whose title or one of whose questions holds every
    word of ``query`` (case-insensitive), the most recently used first; audited.

    Titles and messages are stored only encrypted, so this decrypts, at request time,
    the titles of the principal's newest SEARCH_CONVERSATIONS conversations and their
    newest SEARCH_QUESTIONS questions (answers are not searched); older ones are not
    found. Nothing is indexed or kept, and the query is never logged or audited.
    """
    words = _words(query)
    conversations = list(
        await db.scalars(
            select(Conversation)
            .where(Conversation.user_id == principal.user_id)
            .order_by(Conversation.updated_at.desc(), Conversation.id)
            .limit(SEARCH_CONVERSATIONS)
        )
    )
    by_id = {c.id: c for c in conversations}
    questions = list(
        await db.scalars(
            select(Message)
            .where(Message.conversation_id.in_(list(by_id)), Message.role == "user")
            .order_by(Message.created_at.desc(), Message.id)
            .limit(SEARCH_QUESTIONS)
        )
    ) if by_id else []  # fmt: skip
    titles = await decrypt_all(settings, [_title(c) for c in conversations])
    texts = await decrypt_all(settings, [_content(m, principal.user_id) for m in questions])
    asked: dict[uuid.UUID, list[str]] = {}
    for message, text in zip(questions, texts, strict=True):
        if text != UNREADABLE:
            asked.setdefault(message.conversation_id, []).append(text)
    hits: list[SearchHit] = []
    for conversation, title in zip(conversations, titles, strict=True):
        if len(hits) >= limit:
            break
        if title != UNREADABLE and all(w in title.casefold() for w in words):
            hits.append(SearchHit(conversation.id, title, conversation.updated_at, "title", ""))
            continue
        for text in asked.get(conversation.id, []):  # newest first
            if all(w in text.casefold() for w in words):
                snippet = _snippet(text, words[0])
                hits.append(
                    SearchHit(conversation.id, title, conversation.updated_at, "question", snippet)
                )
                break
    await record(
        db,
        settings,
        "conversation.read",
        principal.actor,
        entity_type="conversation",
        detail={"searched": len(conversations), "questions": len(questions), "found": len(hits)},
    )
    await db.commit()
    return hits


@dataclass(frozen=True)
class StoredMessage:
    id: uuid.UUID
    role: str
    content: str
    citations: list[Citation]
    grounded: bool
    model: str
    created_at: datetime


@dataclass(frozen=True)
class ConversationDetail:
    id: uuid.UUID
    title: str
    owner_id: uuid.UUID
    created_at: datetime
    updated_at: datetime
    messages: list[StoredMessage]


async def read_conversation(
    db: AsyncSession, settings: Settings, principal: Principal, conversation_id: uuid.UUID
) -> ConversationDetail:
    """A conversation with its messages and citations (snippets from the chunks); audited.

    Under break-glass another user's conversation is readable too; the audit row of
    that read carries the break-glass flag (the principal's actor does).
    """
    conversation = await get_conversation(db, principal, conversation_id, break_glass_read=True)
    messages = list(
        await db.scalars(
            select(Message)
            .where(Message.conversation_id == conversation.id)
            .order_by(Message.created_at, Message.id)
        )
    )
    chunk_ids = {int(c["chunk_id"]) for m in messages for c in m.citations or []}
    snippets: dict[int, str] = {}
    if chunk_ids:
        rows = await db.execute(
            select(Chunk.id, func.left(Chunk.text, SNIPPET_CHARS)).where(Chunk.id.in_(chunk_ids))
        )
        snippets = {row[0]: row[1] for row in rows}
    (title,) = await decrypt_all(settings, [_title(conversation)])
    contents = await decrypt_all(settings, [_content(m, conversation.user_id) for m in messages])
    await record(
        db,
        settings,
        "conversation.read",
        principal.actor,
        entity_type="conversation",
        entity_id=conversation.id,
        detail={
            "messages": len(messages),
            "own": conversation.user_id == principal.user_id,
        },
    )
    await db.commit()
    return ConversationDetail(
        id=conversation.id,
        title=title,
        owner_id=conversation.user_id,
        created_at=conversation.created_at,
        updated_at=conversation.updated_at,
        messages=[
            StoredMessage(
                id=m.id,
                role=m.role,
                content=content,
                citations=[
                    Citation.from_stored(c, snippets.get(int(c["chunk_id"]), ""))
                    for c in m.citations or []
                ],
                grounded=m.grounded,
                model=m.model,
                created_at=m.created_at,
            )
            for m, content in zip(messages, contents, strict=True)
        ],
    )


async def delete_conversation(
    db: AsyncSession, settings: Settings, principal: Principal, conversation_id: uuid.UUID
) -> None:
    """Delete one's own conversation and its messages (break-glass reads, never deletes)."""
    conversation = await get_conversation(db, principal, conversation_id, lock=True)
    count = await db.scalar(
        select(func.count()).select_from(Message).where(Message.conversation_id == conversation.id)
    )
    await db.execute(delete(Conversation).where(Conversation.id == conversation.id))
    await record(
        db,
        settings,
        "conversation.delete",
        principal.actor,
        entity_type="conversation",
        entity_id=conversation.id,
        detail={"messages": int(count or 0)},
    )
    await db.commit()


async def history(db: AsyncSession, settings: Settings, conversation: Conversation) -> list[Turn]:
    """The conversation's last turns, oldest first, as the prompt takes them."""
    recent = list(
        await db.scalars(
            select(Message)
            .where(Message.conversation_id == conversation.id)
            .order_by(Message.created_at.desc(), Message.id)
            .limit(HISTORY_TURNS)
        )
    )[::-1]
    texts = await decrypt_all(settings, [_content(m, conversation.user_id) for m in recent])
    return [
        Turn("assistant" if m.role == "assistant" else "user", text)
        for m, text in zip(recent, texts, strict=True)
        if text != UNREADABLE
    ]


async def add_message(
    db: AsyncSession,
    settings: Settings,
    principal: Principal,
    conversation_id: uuid.UUID,
    owner_id: uuid.UUID,
    role: str,
    content: str,
    citations: Sequence[Citation] = (),
    grounded: bool = True,
    model: str = "",
    detail: dict[str, Any] | None = None,
) -> Message:
    """Store one message (encrypted, bound to the conversation and its owner ``owner_id``)
    and its audit row in ``db``'s transaction."""
    message_id = uuid.uuid4()
    message = Message(
        id=message_id,
        conversation_id=conversation_id,
        role=role,
        content_enc=await encrypt(
            settings, content, MESSAGE_CONTENT.aad(message_id, conversation_id, owner_id)
        ),
        citations=[c.stored() for c in citations],
        grounded=grounded,
        model=model,
        # set here, not by the database: now() is the transaction's start, and the
        # messages' order is their creation order
        created_at=datetime.now(UTC),
    )
    db.add(message)
    await db.execute(
        update(Conversation).where(Conversation.id == conversation_id).values(updated_at=func.now())
    )
    await db.flush()
    await record(
        db,
        settings,
        "message.create",
        principal.actor,
        entity_type="message",
        entity_id=message.id,
        detail={"conversation_id": str(conversation_id), "role": role, **(detail or {})},
    )
    return message


async def add_question(
    db: AsyncSession,
    settings: Settings,
    principal: Principal,
    conversation: Conversation,
    question: str,
    answer: Answer,
) -> Message:
    """Store the user's question (the original text) and name the conversation after it."""
    (title,) = await decrypt_all(settings, [_title(conversation)])
    if title == DEFAULT_TITLE:
        aad = CONVERSATION_TITLE.aad(conversation.id, conversation.user_id)
        conversation.title_enc = await encrypt(settings, new_title(question), aad)
    message = await add_message(
        db,
        settings,
        principal,
        conversation.id,
        conversation.user_id,
        "user",
        question,
        detail={"phi_spans": sum(answer.phi_types.values()), "redacted": settings.redact_prompts},
    )
    await db.commit()
    return message


# -- the chat's event stream -------------------------------------------------------------


def sse(event: str, data: dict[str, Any]) -> str:
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"


async def reply_events(
    settings: Settings,
    principal: Principal,
    conversation_id: uuid.UUID,
    owner_id: uuid.UUID,
    answer: Answer,
) -> AsyncIterator[str]:
    """SSE events of one answer: sources, deltas, then done (or error); stores the answer.

    Runs after the route has returned, so it uses a database session of its own.
    If the client goes away, the cancellation closes the upstream stream (Answer.texts)
    and nothing more is stored.
    """
    pieces: list[str] = []
    try:
        yield sse(
            "sources",
            {"sources": [c.public() for c in answer.citations], "grounded": answer.grounded},
        )
        async for piece in answer.texts():
            pieces.append(piece)
            yield sse("delta", {"text": piece})
    except llm.StreamBroken:
        log.warning("conversation %s: the answer broke off after %d pieces", conversation_id,
                    len(pieces))  # fmt: skip
        yield sse(
            "error",
            {"message": "serving failed while answering; ask again", "code": "serving_failed"},
        )
        return
    finally:
        await answer.aclose()  # also when the client went away before the first piece
    try:
        async with sessionmaker(settings)() as db:
            message = await add_message(
                db,
                settings,
                principal,
                conversation_id,
                owner_id,
                "assistant",
                "".join(pieces),
                answer.citations,
                answer.grounded,
                answer.model,
                detail={
                    "citations": len(answer.citations),
                    "grounded": answer.grounded,
                    "completion_tokens": answer.usage.completion_tokens,
                },
            )
            await db.commit()
            title = await _title_now(db, settings, conversation_id, owner_id)
    except Exception as exc:  # noqa: BLE001 - the stream has begun: report, do not raise
        down = _down_name(exc)
        log.error("conversation %s: answer not stored (%s)", conversation_id, type(exc).__name__)
        yield sse(
            "error",
            {
                "message": f"{down} is unavailable: the answer was not saved",
                "code": "not_stored",
                "down": [down],
            },
        )
        return
    yield sse(
        "done",
        {
            "message_id": str(message.id),
            "grounded": answer.grounded,
            "model": answer.model,
            "finish_reason": answer.finish_reason,
            "usage": answer.usage.as_dict(),
            "disclaimer": settings.disclaimer,
            "title": title,
        },
    )


async def _title_now(
    db: AsyncSession, settings: Settings, conversation_id: uuid.UUID, owner_id: uuid.UUID
) -> str | None:
    """The conversation's title as stored now, for the asker's page (the first question
    names the conversation: ``add_question``); None if it cannot be read just now, which
    the stored answer does not depend on."""
    try:
        blob = await db.scalar(
            select(Conversation.title_enc).where(Conversation.id == conversation_id)
        )
        if blob is None:
            return None
        (title,) = await decrypt_all(
            settings, [(blob, CONVERSATION_TITLE.aad(conversation_id, owner_id))]
        )
    except Exception as exc:  # noqa: BLE001 - the answer is stored: done without a title
        log.warning("conversation %s: title not read (%s)", conversation_id, type(exc).__name__)
        return None
    return title


def _down_name(exc: Exception) -> str:
    """The dependency a failed store names (as app/errors.py would)."""
    if isinstance(exc, KeysUnavailable):
        return "vault"
    if isinstance(exc, AuditUnavailable):
        return "audit"
    return "database"
