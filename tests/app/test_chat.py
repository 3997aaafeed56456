"""Chat end to end: conversations, streamed cited answers, encryption, access, pages.

Everything real: PostgreSQL with pgvector (a database of this module's own), Redis,
the all-MiniLM-L6-v2 embeddings and the `serving` with its tiny random model. That
model's words are gibberish, so the tests check structure (events, citations,
storage, audit), never wording. Documents go in through the upload API and the
ingestion worker, on the admin client's event loop.
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from fastapi.testclient import TestClient

from app.chat import llm, prompt, service
from app.chat.prompt import NOT_FOUND, Turn, build_messages
from app.db import conninfo
from app.kb import worker
from app.kb.retrieve import Hit
from app.main import app
from app.models import Role
from app.settings import Settings, get_settings
from tests.app.data.kbdb import isolated_settings
from tests.services.postgres import PrivatePostgres, free_port

API = "/api/v1/conversations"

GUIDELINE = """# Zorbexine infusion guideline

## Dosing

For adults with Quellmann fever, give zorbexine 40 mg intravenously every 6 hours.
Reduce the dose to 20 mg every 6 hours when the creatinine clearance is below 30 mL/min.

## Monitoring

Check the zorbexine trough level before the fourth dose and repeat it twice a week.
Stop the infusion and call the on-call pharmacist if the trough level exceeds 12 mg/L.
"""

VISITING = """# Heronsgate ward visiting

Visiting hours on the Heronsgate ward are 14:00 to 20:00 every day.
Two visitors at a time may sit at each bedside; children visit with an adult.
"""

COVERED = "What dose of zorbexine is given for Quellmann fever?"
UNCOVERED = "How do I book annual leave?"


# -- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def chat_settings(base_settings: Settings, postgres: PrivatePostgres) -> Settings:
    # short answers: the tiny model's text is gibberish anyway, and the CPU is shared
    return isolated_settings(base_settings, postgres, max_answer_tokens=24)


@pytest.fixture
def settings(chat_settings: Settings) -> Settings:
    """Overrides conftest's: this module's clients use the module's own database."""
    return chat_settings


_corpus: dict[str, dict[str, str]] = {}


@pytest.fixture
def corpus(settings: Settings, login: Callable[..., TestClient]) -> dict[str, str]:
    """The synthetic guideline and a distractor, uploaded and ingested once per database."""
    if settings.db_name not in _corpus:
        admin = login(Role.admin)
        ids = {}
        for name, title, text in (
            ("zorbexine.md", "Zorbexine infusion guideline", GUIDELINE),
            ("visiting.md", "Heronsgate ward visiting", VISITING),
        ):
            response = admin.post(
                "/api/v1/documents",
                files={"file": (name, text.encode(), "text/markdown")},
                data={"title": title},
            )
            assert response.status_code == 201, response.text
            document = response.json()
            outcome = admin.portal.call(  # type: ignore[union-attr]
                worker.process_one, settings, document["latest"]["id"]
            )
            assert outcome == "ready"
            ids[name.split(".")[0]] = document["id"]
        done_with(admin)
        _corpus[settings.db_name] = ids
    return _corpus[settings.db_name]


@pytest.fixture
def down(settings: Settings) -> Iterator[Settings]:
    """The module's settings with the serving at a closed port, for the app under test."""
    closed = settings.model_copy(update={"serving_url": f"http://127.0.0.1:{free_port()}/v1"})
    yield closed


def use(settings: Settings) -> None:
    """Point the app's settings dependency at ``settings`` (login resets it afterwards)."""
    app.dependency_overrides[get_settings] = lambda: settings


def done_with(client: TestClient) -> None:
    """Close the app's Redis clients on this client's event loop (see test_documents)."""
    from app.redis_client import close_all

    client.portal.call(close_all)  # type: ignore[union-attr]


# -- helpers ----------------------------------------------------------------------------------


def events(response: httpx.Response) -> list[tuple[str, dict[str, Any]]]:
    """The (event, data) pairs of an SSE body."""
    found = []
    for block in response.text.split("\n\n"):
        name, data = "message", []
        for line in block.splitlines():
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].strip())
        if data:
            found.append((name, json.loads("\n".join(data))))
    return found


def new_conversation(client: TestClient, title: str | None = None) -> str:
    response = client.post(API, json={"title": title} if title else None)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def ask(client: TestClient, conversation_id: str, question: str) -> httpx.Response:
    return client.post(f"{API}/{conversation_id}/messages", json={"content": question})


def sql(settings: Settings, statement: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(conninfo(settings)) as conn:
        return conn.execute(statement, params).fetchall()


def serving_counter(settings: Settings, name: str) -> float:
    """A counter of the serving's /metrics, summed over its labels."""
    base = settings.serving_url.rstrip("/").removesuffix("/v1")
    text = httpx.get(f"{base}/metrics", timeout=5).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if re.match(rf"^{re.escape(name)}(\{{|\s)", line)
    )


# -- answers ----------------------------------------------------------------------------------


def test_an_answer_cites_the_document_holding_the_fact(
    login: Callable[..., TestClient], settings: Settings, corpus: dict[str, str]
) -> None:
    client = login(Role.clinician)
    conversation = new_conversation(client)
    response = ask(client, conversation, COVERED)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/event-stream")
    stream = events(response)
    names = [name for name, _ in stream]
    assert names[0] == "sources" and names[-1] == "done", names
    assert set(names[1:-1]) <= {"delta"}

    sources = stream[0][1]
    assert sources["grounded"] is True
    first = sources["sources"][0]
    assert first["document_id"] == corpus["zorbexine"]
    assert first["title"] == "Zorbexine infusion guideline" and first["version"] == 1
    assert first["number"] == 1 and first["chunk_id"] > 0 and first["score"] > 0
    assert "zorbexine" in first["snippet"].lower() and len(first["snippet"]) <= 300
    assert {"section", "page"} <= set(first)

    done = stream[-1][1]
    assert done["grounded"] is True and done["disclaimer"] == settings.disclaimer
    assert done["usage"]["prompt_tokens"] > 0 and done["usage"]["completion_tokens"] >= 1
    assert done["model"]
    answer = "".join(data["text"] for name, data in stream if name == "delta")

    # read back: both messages, the answer with its citations (snippets) and the disclaimer
    detail = client.get(f"{API}/{conversation}").json()
    assert detail["title"] == COVERED  # the first question names the conversation
    user, assistant = detail["messages"]
    assert user["role"] == "user" and user["content"] == COVERED and user["disclaimer"] is None
    assert assistant["role"] == "assistant" and assistant["content"] == answer
    assert assistant["grounded"] is True and assistant["disclaimer"] == settings.disclaimer
    assert assistant["citations"] == sources["sources"]
    assert str(done["message_id"]) == assistant["id"]

    actions = sql(
        settings,
        "SELECT action, entity_type, detail FROM audit_events WHERE actor = %s ORDER BY id",
        client.username,  # type: ignore[attr-defined]
    )
    assert [a for a, _, _ in actions] == [
        "conversation.create",
        "message.create",
        "message.create",
        "conversation.read",
    ]
    assert actions[1][2]["role"] == "user" and actions[2][2]["role"] == "assistant"
    assert actions[2][2]["citations"] == len(sources["sources"])
    done_with(client)


def test_a_follow_up_sends_the_history(
    login: Callable[..., TestClient], settings: Settings, corpus: dict[str, str]
) -> None:
    client = login(Role.clinician)
    conversation = new_conversation(client, "Zorbexine")
    first = events(ask(client, conversation, COVERED))
    again = events(ask(client, conversation, "And how is the zorbexine trough level monitored?"))
    # the second prompt holds the first exchange: more prompt tokens for a similar question
    assert again[-1][0] == "done" and first[-1][0] == "done"
    detail = client.get(f"{API}/{conversation}").json()
    assert detail["title"] == "Zorbexine"  # a given title is kept
    assert [m["role"] for m in detail["messages"]] == ["user", "assistant"] * 2
    done_with(client)


def test_an_uncovered_question_is_not_found_without_the_model(
    login: Callable[..., TestClient], settings: Settings, corpus: dict[str, str], down: Settings
) -> None:
    client = login(Role.clinician)
    conversation = new_conversation(client)
    prompts_before = serving_counter(settings, "vllm:prompt_tokens_total")
    stream = events(ask(client, conversation, UNCOVERED))
    assert [name for name, _ in stream] == ["sources", "delta", "done"]
    assert stream[0][1] == {"sources": [], "grounded": False}
    assert stream[1][1]["text"] == NOT_FOUND
    assert stream[2][1]["grounded"] is False
    assert stream[2][1]["disclaimer"] == settings.disclaimer
    assert stream[2][1]["usage"]["total_tokens"] == 0
    assert serving_counter(settings, "vllm:prompt_tokens_total") == prompts_before

    # with the serving down, the not-found answer still comes: the model is not needed
    use(down)
    stream = events(ask(client, conversation, UNCOVERED))
    assert stream[1][1]["text"] == NOT_FOUND
    use(settings)
    detail = client.get(f"{API}/{conversation}").json()
    answers = [m for m in detail["messages"] if m["role"] == "assistant"]
    assert len(answers) == 2
    assert all(not m["grounded"] and m["citations"] == [] for m in answers)
    assert all(m["content"] == NOT_FOUND and m["disclaimer"] for m in answers)
    done_with(client)


def test_serving_down_is_503_naming_it_and_stores_nothing(
    login: Callable[..., TestClient], settings: Settings, corpus: dict[str, str], down: Settings
) -> None:
    client = login(Role.clinician)
    conversation = new_conversation(client)
    use(down)
    response = ask(client, conversation, COVERED)
    assert response.status_code == 503
    assert response.json() == {"detail": "serving is unavailable", "down": ["serving"]}
    assert response.headers["content-type"].startswith("application/json")
    use(settings)
    assert client.get(f"{API}/{conversation}").json()["messages"] == []
    done_with(client)


def test_a_serving_dying_midway_gives_an_error_event(
    login: Callable[..., TestClient], settings: Settings, corpus: dict[str, str]
) -> None:
    """A stand-in upstream that starts an answer and breaks the connection."""
    import socket
    import threading

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    models = json.dumps({"data": [{"id": "m", "max_model_len": 4096}]}).encode()
    chunk = {"choices": [{"index": 0, "delta": {"content": "Partial"}, "finish_reason": None}]}

    def serve() -> None:
        for _ in range(3):  # the model list, the prompt's token count, the completion
            conn, _ = listener.accept()
            request = conn.recv(65536)
            if request.startswith((b"GET /v1/models", b"POST /v1/tokenize")):
                answer = models if request.startswith(b"GET") else b'{"count": 100}'
                conn.sendall(
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                    + f"content-length: {len(answer)}\r\n\r\n".encode()
                    + answer
                )
            else:
                body = f"data: {json.dumps(chunk)}\n\n".encode()
                conn.sendall(
                    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                    + b"transfer-encoding: chunked\r\n\r\n"
                    + f"{len(body):x}\r\n".encode()
                    + body
                    + b"\r\n"
                )
            conn.close()  # mid-stream for the completion: no [DONE], no last chunk

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    broken = settings.model_copy(update={"serving_url": f"http://127.0.0.1:{port}/v1"})
    client = login(Role.clinician)
    conversation = new_conversation(client)
    use(broken)
    stream = events(ask(client, conversation, COVERED))
    use(settings)
    thread.join(timeout=10)
    listener.close()
    assert [name for name, _ in stream] == ["sources", "delta", "error"]
    assert stream[1][1] == {"text": "Partial"}
    assert stream[2][1]["code"] == "serving_failed"
    messages = client.get(f"{API}/{conversation}").json()["messages"]
    assert [m["role"] for m in messages] == ["user"]  # the broken answer is not stored
    done_with(client)


# -- storage ----------------------------------------------------------------------------------


def test_messages_and_titles_are_stored_encrypted(
    login: Callable[..., TestClient], settings: Settings, corpus: dict[str, str]
) -> None:
    client = login(Role.clinician)
    title = f"Zorbexine plan {uuid.uuid4().hex[:8]}"
    conversation = new_conversation(client, title)
    question = f"{COVERED} Reference {uuid.uuid4().hex}"
    assert events(ask(client, conversation, question))[-1][0] == "done"
    detail = client.get(f"{API}/{conversation}").json()
    answer = detail["messages"][1]["content"]

    ((title_enc,),) = sql(
        settings, "SELECT title_enc FROM conversations WHERE id = %s", conversation
    )
    rows = sql(
        settings,
        "SELECT role, content_enc, citations FROM messages WHERE conversation_id = %s"
        " ORDER BY created_at",
        conversation,
    )
    assert [r[0] for r in rows] == ["user", "assistant"]
    for blob in [title_enc] + [r[1] for r in rows]:
        raw = bytes(blob)
        assert raw.startswith(b"CE2")
        for plain in (title, question, "zorbexine", answer):
            if plain.strip():
                assert plain.encode() not in raw
    # citations are stored without text: the snippet is read from the chunk
    assert rows[1][2] and all("snippet" not in c for c in rows[1][2])
    assert detail["title"] == title and detail["messages"][0]["content"] == question
    assert detail["messages"][1]["citations"][0]["snippet"]
    done_with(client)


def test_a_value_copied_into_another_row_does_not_decrypt(
    login: Callable[..., TestClient], settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """Whoever can write to the database can copy ciphertext, but not what it says: each
    value is bound to its column, row and owner (app/sealed.py)."""
    alice, bob = login(Role.clinician), login(Role.clinician)
    secret = f"Alice's question {uuid.uuid4().hex}"
    mine, other_of_mine = new_conversation(alice, "Alice's plan"), new_conversation(alice)
    theirs = new_conversation(bob, "Bob's plan")
    for client, conversation in ((alice, mine), (alice, other_of_mine), (bob, theirs)):
        question = secret if conversation == mine else UNCOVERED
        assert events(ask(client, conversation, question))[-1][0] == "done"

    def first_message(conversation: str) -> str:
        return f"(SELECT id FROM messages WHERE conversation_id = '{conversation}'" \
            " AND role = 'user')"  # fmt: skip

    with psycopg.connect(conninfo(settings)) as conn:
        # Alice's question and title copied into Bob's conversation, her question into
        # her own other conversation, and a whole conversation of hers given to Bob
        for target in (theirs, other_of_mine):
            conn.execute(
                f"UPDATE messages SET content_enc = (SELECT content_enc FROM messages"
                f" WHERE id = {first_message(mine)}) WHERE id = {first_message(target)}"
            )
        conn.execute(
            "UPDATE conversations SET title_enc = (SELECT title_enc FROM conversations"
            " WHERE id = %s) WHERE id = %s", (mine, theirs),
        )  # fmt: skip
        moved = new_conversation(alice, "Alice's moved")
        assert events(ask(alice, moved, UNCOVERED))[-1][0] == "done"
        bob_id = conn.execute(
            "SELECT user_id FROM conversations WHERE id = %s", (theirs,)
        ).fetchone()[0]  # type: ignore[index]
        conn.execute("UPDATE conversations SET user_id = %s WHERE id = %s", (bob_id, moved))

    caplog.clear()
    # the app's start replaced the root logger's handlers (app.main.configure_logging)
    logging.getLogger().addHandler(caplog.handler)
    seen = bob.get(f"{API}/{theirs}").json()
    assert seen["title"] == service.UNREADABLE
    assert seen["messages"][0]["content"] == service.UNREADABLE
    assert seen["messages"][1]["content"] != service.UNREADABLE  # Bob's answer is his
    given = bob.get(f"{API}/{moved}").json()
    assert given["title"] == service.UNREADABLE
    assert {m["content"] for m in given["messages"]} == {service.UNREADABLE}
    own = alice.get(f"{API}/{other_of_mine}").json()
    assert own["messages"][0]["content"] == service.UNREADABLE
    assert alice.get(f"{API}/{mine}").json()["messages"][0]["content"] == secret
    logging.getLogger().removeHandler(caplog.handler)
    # the log names the column and the row, never the text
    logged = [r.getMessage() for r in caplog.records if "does not decrypt" in r.getMessage()]
    assert any(f"conversations.title_enc {theirs}" in line for line in logged), logged
    assert any(line.startswith("a stored value does not decrypt: messages.content_enc ")
               for line in logged)  # fmt: skip
    assert not any(secret in line or "Alice's" in line for line in logged)
    done_with(alice)
    done_with(bob)


# -- access -----------------------------------------------------------------------------------


def test_conversations_are_private_to_their_owner(
    login: Callable[..., TestClient], settings: Settings, corpus: dict[str, str]
) -> None:
    owner, other = login(Role.clinician), login(Role.clinician)  # sign in before requests
    conversation = new_conversation(owner, "Owner's")
    assert ask(owner, conversation, UNCOVERED).status_code == 200
    listed = [c["id"] for c in owner.get(API).json()]
    assert conversation in listed
    done_with(owner)

    assert other.get(f"{API}/{conversation}").status_code == 404
    assert ask(other, conversation, COVERED).status_code == 404
    assert other.delete(f"{API}/{conversation}").status_code == 404
    assert other.get(f"/c/{conversation}").status_code == 404
    assert conversation not in [c["id"] for c in other.get(API).json()]
    assert other.get(f"{API}/{uuid.uuid4()}").status_code == 404
    done_with(other)
    stored = sql(settings, "SELECT id FROM messages WHERE conversation_id = %s", conversation)
    assert len(stored) == 2


def test_search_finds_only_one_s_own_conversations_and_never_logs_the_query(
    login: Callable[..., TestClient],
    settings: Settings,
    corpus: dict[str, str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    owner, other = login(Role.clinician), login(Role.clinician)
    word = f"quorvex{uuid.uuid4().hex[:6]}"  # in no one else's text
    mine = new_conversation(owner)
    # past the 80 characters of the title the first question gives the conversation
    question = f"{UNCOVERED} Asking for the ward team before the winter rota closes: {word} leave?"
    assert ask(owner, mine, question).status_code == 200
    titled = new_conversation(owner, f"Handover {word.upper()} notes")
    theirs = new_conversation(other)
    assert ask(other, theirs, f"{word} rota for nights? {UNCOVERED}").status_code == 200

    caplog.set_level(logging.DEBUG)
    response = owner.get(f"{API}/search", params={"q": f"{word} LEAVE"})
    assert response.status_code == 200, response.text
    hits = response.json()
    assert [h["id"] for h in hits] == [mine]  # every word must match; the title lacks "leave"
    assert hits[0]["matched"] == "question" and word in hits[0]["snippet"]
    assert hits[0]["title"].startswith(UNCOVERED) and word not in hits[0]["title"]
    # the newest first, titles too, case-insensitive; the other user's never
    hits = owner.get(f"{API}/search", params={"q": word}).json()
    assert [h["id"] for h in hits] == [titled, mine]
    assert hits[0]["matched"] == "title" and hits[0]["snippet"] == ""
    found = other.get(f"{API}/search", params={"q": word}).json()
    assert [h["id"] for h in found] == [theirs]
    assert owner.get(f"{API}/search", params={"q": "rota nights"}).json() == []
    assert word not in caplog.text and "LEAVE" not in caplog.text

    # empty, blank, too long or control characters: 422, the query not echoed
    for q in ("", "   ", f"{word} " + "x" * 200, f"{word}\x00"):
        response = owner.get(f"{API}/search", params={"q": q})
        assert response.status_code == 422, (q, response.status_code)
        assert word not in response.text
    assert owner.get(f"{API}/search", params={"q": "x" * 200}).status_code == 200
    assert owner.get(f"{API}/search").status_code == 422
    done_with(owner)
    done_with(other)

    audited = sql(
        settings,
        "SELECT detail FROM audit_events WHERE action = 'conversation.read' AND actor = %s"
        " AND detail ? 'searched' ORDER BY id",
        owner.username,  # type: ignore[attr-defined]
    )
    assert audited[0][0] == {"searched": 2, "questions": 1, "found": 1}
    assert all(word not in json.dumps(detail) for (detail,) in audited)


def test_break_glass_reads_any_conversation_and_is_flagged(
    login: Callable[..., TestClient], settings: Settings, corpus: dict[str, str]
) -> None:
    owner, responder = login(Role.clinician), login(Role.clinician)
    conversation = new_conversation(owner, "Night shift")
    assert ask(owner, conversation, UNCOVERED).status_code == 200
    done_with(owner)

    assert responder.get(f"{API}/{conversation}").status_code == 404
    started = responder.post(
        "/api/v1/auth/break-glass",
        json={"reason": "covering the ward overnight, urgent handover", "minutes": 5},
    )
    assert started.status_code == 200, started.text
    response = responder.get(f"{API}/{conversation}")
    assert response.status_code == 200
    assert response.json()["owner_id"] == str(owner.user_id)  # type: ignore[attr-defined]
    assert len(response.json()["messages"]) == 2
    page = responder.get(f"/c/{conversation}")
    assert page.status_code == 200 and "break-glass" in page.text
    assert 'id="ask"' not in page.text  # read-only: no question box
    # break-glass reads; it does not write or delete another's conversation
    assert ask(responder, conversation, UNCOVERED).status_code == 404
    assert responder.delete(f"{API}/{conversation}").status_code == 404
    done_with(responder)

    reads = sql(
        settings,
        "SELECT break_glass, detail FROM audit_events WHERE action = 'conversation.read'"
        " AND entity_id = %s AND actor = %s",
        conversation,
        responder.username,  # type: ignore[attr-defined]
    )
    assert len(reads) == 2 and all(flag for flag, _ in reads)
    assert all(detail["own"] is False for _, detail in reads)


def test_delete_removes_the_conversation_and_its_messages(
    login: Callable[..., TestClient], settings: Settings, corpus: dict[str, str]
) -> None:
    client = login(Role.clinician)
    conversation = new_conversation(client)
    assert ask(client, conversation, UNCOVERED).status_code == 200
    assert client.delete(f"{API}/{conversation}").status_code == 204
    assert client.get(f"{API}/{conversation}").status_code == 404
    assert client.delete(f"{API}/{conversation}").status_code == 404
    assert sql(settings, "SELECT id FROM messages WHERE conversation_id = %s", conversation) == []
    deletes = sql(
        settings,
        "SELECT detail FROM audit_events WHERE action = 'conversation.delete' AND entity_id = %s",
        conversation,
    )
    assert deletes == [({"messages": 2},)]
    done_with(client)


@pytest.mark.parametrize("role", [Role.admin, Role.auditor])
def test_other_roles_have_no_conversations(
    login: Callable[..., TestClient], settings: Settings, role: Role
) -> None:
    client = login(role)
    assert client.get(API).status_code == 403
    assert client.post(API).status_code == 403
    assert client.post("/v1/chat/completions", json={}).status_code == 403
    done_with(client)


# -- bad input --------------------------------------------------------------------------------


def test_bad_input_is_4xx_stores_nothing_and_echoes_nothing(
    login: Callable[..., TestClient], settings: Settings, corpus: dict[str, str]
) -> None:
    client = login(Role.clinician)
    conversation = new_conversation(client)
    secret = "Zelda Quixotic-Testperson"
    for body in (
        {"content": ""},
        {"content": "   \n "},
        {"content": f"{secret} " + "x" * 4000},
        {"content": f"{secret}\x00"},
        {"content": f"{secret}\x1b[31m"},
        {"text": secret},
        {"content": 12},
        [secret],
    ):
        response = client.post(f"{API}/{conversation}/messages", json=body)
        assert response.status_code == 422, (body, response.status_code)
        assert secret not in response.text and "input" not in response.json()["detail"][0]
    response = client.post(
        f"{API}/{conversation}/messages",
        content=f'{{"content": "{secret}',
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 422 and secret not in response.text
    assert client.post(f"{API}/not-a-uuid/messages", json={"content": "x"}).status_code == 422
    assert client.post(API, json={"title": "a\x00b"}).status_code == 422
    assert client.post(API, json={"title": "t" * 201}).status_code == 422
    assert client.get(f"{API}?limit=0").status_code == 422
    # without the CSRF token a cookie session may not post
    token = client.headers.pop("X-CSRF-Token")
    assert ask(client, conversation, COVERED).status_code == 403
    client.headers["X-CSRF-Token"] = token
    assert client.get(f"{API}/{conversation}").json()["messages"] == []
    done_with(client)


# -- PHI policy -------------------------------------------------------------------------------


def test_redact_prompts_sends_the_model_the_redacted_question(
    login: Callable[..., TestClient],
    settings: Settings,
    corpus: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from app.metrics import PHI_DETECTIONS

    sent: list[list[dict[str, str]]] = []
    real_open = llm.open_stream

    async def spy(s: Settings, messages: list[dict[str, str]], *a: Any, **kw: Any) -> llm.Stream:
        sent.append(messages)  # a spy: the real serving still answers
        return await real_open(s, messages, *a, **kw)

    monkeypatch.setattr(llm, "open_stream", spy)
    redacting = settings.model_copy(update={"redact_prompts": True})
    question = f"Patient Zelda Quixotic-Testperson, MRN 99-TEST-4411: {COVERED}"
    before = PHI_DETECTIONS.labels("prompt", "MRN")._value.get()
    client = login(Role.clinician)
    use(redacting)
    conversation = new_conversation(client)
    assert events(ask(client, conversation, question))[-1][0] == "done"
    assert PHI_DETECTIONS.labels("prompt", "MRN")._value.get() == before + 1
    to_model = json.dumps(sent[-1])
    assert "Quixotic" not in to_model and "99-TEST-4411" not in to_model
    assert "[MRN]" in to_model and "zorbexine" in to_model
    # the stored question keeps the original
    assert client.get(f"{API}/{conversation}").json()["messages"][0]["content"] == question

    use(settings)  # the policy off: the model sees the question as asked
    conversation = new_conversation(client)
    assert events(ask(client, conversation, question))[-1][0] == "done"
    assert "99-TEST-4411" in json.dumps(sent[-1])
    done_with(client)


# -- pages ------------------------------------------------------------------------------------


def no_inline_script_or_style(html: str) -> None:
    assert "style=" not in html
    for tag in re.findall(r"<script[^>]*>", html):
        assert "src=" in tag, tag
    assert re.search(r"<script[^>]*>\s*[^<\s]", html) is None  # no script body


def test_home_and_chat_pages(
    login: Callable[..., TestClient], settings: Settings, corpus: dict[str, str]
) -> None:
    client = login(Role.clinician)
    csrf = client.headers.pop("X-CSRF-Token")  # forms carry it as a field
    assert client.post("/conversations/new", follow_redirects=False).status_code == 403
    created = client.post("/conversations/new", data={"csrf_token": csrf}, follow_redirects=False)
    assert created.status_code == 303 and created.headers["location"].startswith("/c/")
    conversation = created.headers["location"].removeprefix("/c/")
    client.headers["X-CSRF-Token"] = csrf
    done = events(ask(client, conversation, COVERED))[-1]
    # the first question named the conversation: the done event says so (for the heading)
    assert done[0] == "done" and done[1]["title"] == COVERED
    assert events(ask(client, conversation, UNCOVERED))[-1][1]["title"] == COVERED
    client.headers.pop("X-CSRF-Token")

    home = client.get("/")
    assert home.status_code == 200
    assert f'href="/c/{conversation}"' in home.text and "New conversation" in home.text
    assert 'action="/conversations/new"' in home.text
    no_inline_script_or_style(home.text)

    page = client.get(f"/c/{conversation}")
    assert page.status_code == 200
    assert COVERED in page.text and settings.disclaimer in page.text
    assert 'class="cite"' in page.text and "Zorbexine infusion guideline" in page.text
    assert f'data-conversation="{conversation}"' in page.text and "/static/chat.js" in page.text
    # answers are shown as markdown by markdown.js from their text (escaped here)
    assert '<div class="message-content markdown">' in page.text
    assert page.text.index("/static/markdown.js") < page.text.index("/static/chat.js")
    assert 'id="passage-panel"' in page.text  # the cited passage's side panel
    # the sidebar: one's own conversations, this one marked, and the search box
    assert f'<a href="/c/{conversation}" aria-current="page">' in page.text
    assert 'id="search-box"' in page.text
    no_inline_script_or_style(page.text)
    assert page.headers["content-security-policy"].startswith("default-src 'none'")
    assert client.get("/static/chat.js").status_code == 200
    assert client.get("/static/chat.css").status_code == 200
    # a guard rail; tests/app/test_ui.py shows model HTML staying text in Chromium
    for script in ("chat.js", "markdown.js"):
        source = client.get(f"/static/{script}").text
        assert not re.search(r"\.(inner|outer)HTML\s*=|insertAdjacentHTML|document\.write", source)

    assert client.get(f"/c/{uuid.uuid4()}").status_code == 404
    deleted = client.post(
        f"/c/{conversation}/delete", data={"csrf_token": csrf}, follow_redirects=False
    )
    assert deleted.status_code == 303 and deleted.headers["location"] == "/"
    assert client.get(f"{API}/{conversation}").status_code == 404
    done_with(client)


@pytest.mark.parametrize(("role", "link"), [(Role.admin, "/documents"), (Role.auditor, "/audit")])
def test_home_sends_other_roles_to_their_area(
    login: Callable[..., TestClient], settings: Settings, role: Role, link: str
) -> None:
    client = login(role)
    home = client.get("/")
    assert home.status_code == 200 and f'href="{link}"' in home.text
    assert "New conversation" not in home.text
    assert client.get(f"/c/{uuid.uuid4()}").status_code == 403
    done_with(client)


def test_home_without_a_session_is_the_sign_in_page(client: TestClient) -> None:
    response = client.get("/", headers={"Accept": "text/html"})
    assert response.status_code == 401 and 'action="/login"' in response.text


def test_the_pages_show_the_hospital_s_name_and_logo(
    client: TestClient, settings: Settings, tmp_path: Path
) -> None:
    page = client.get("/login")
    assert "brand-hospital" not in page.text and "/static/brand-logo" not in page.text
    assert client.get("/static/brand-logo").status_code == 404  # none set

    logo = tmp_path / "logo.svg"
    logo.write_text('<svg xmlns="http://www.w3.org/2000/svg" width="8" height="8"/>')
    use(settings.model_copy(update={"brand_name": "St Synthetic's <b>", "brand_logo_path": logo}))
    page = client.get("/login")  # public, as the logo is
    assert '<span class="brand-hospital">St Synthetic&#39;s &lt;b&gt;</span>' in page.text
    assert '<img class="brand-logo" src="/static/brand-logo" alt="">' in page.text
    served = client.get("/static/brand-logo")
    assert served.status_code == 200 and served.content == logo.read_bytes()
    assert served.headers["content-type"] == "image/svg+xml"
    assert served.headers["x-content-type-options"] == "nosniff"

    # a logo that is missing, of another type or too large is not served, nor shown
    large = tmp_path / "large.png"
    large.write_bytes(b"\x89PNG" + b"\0" * (1024 * 1024))
    script = tmp_path / "logo.html"
    script.write_text("<script>alert(1)</script>")
    for path in (tmp_path / "missing.png", large, script):
        use(settings.model_copy(update={"brand_logo_path": path}))
        assert client.get("/static/brand-logo").status_code == 404, path
        assert "/static/brand-logo" not in client.get("/login").text


# -- prompt (no services) ----------------------------------------------------------------------


def hit(n: int, text: str = "Give zorbexine 40 mg every 6 hours.", **kw: Any) -> Hit:
    values: dict[str, Any] = {
        "chunk_id": n,
        "document_id": uuid.uuid4(),
        "title": f"Guideline {n}",
        "version": 2,
        "section": "Dosing",
        "page": 3,
        "text": text,
        "score": 0.03,
        "similarity": 0.6,
    }
    values.update(kw)
    return Hit(**values)


def test_the_prompt_numbers_the_sources_and_keeps_recent_history() -> None:
    history = [Turn("user", "first question"), Turn("assistant", "first answer [1]")]
    messages, used = build_messages("the question", [hit(1), hit(2, page=None)], history)
    assert used == 2
    system = messages[0]["content"]
    assert messages[0]["role"] == "system" and system.startswith(prompt.SYSTEM_PROMPT)
    assert "[1] Guideline 1 (version 2), section Dosing, page 3\nGive zorbexine" in system
    assert "[2] Guideline 2 (version 2), section Dosing\n" in system
    assert [m["role"] for m in messages[1:]] == ["user", "assistant", "user"]
    assert messages[-1] == {"role": "user", "content": "the question"}


def test_the_prompt_fits_its_budget() -> None:
    hits = [hit(n, "word " * 400) for n in range(1, 7)]
    history = [Turn("user", "q" * 900), Turn("assistant", "a" * 900)] * 5
    messages, used = build_messages("the question", hits, history, max_chars=4000)
    assert sum(len(m["content"]) for m in messages) <= 4000
    assert 1 <= used < 6
    assert messages[-1]["content"] == "the question"
    _, none = build_messages("q", hits, max_chars=300)
    assert none == 0  # not even one source fits: the caller treats it as too small


def test_the_sources_are_cut_to_the_model_s_context_before_it_is_asked(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The draft's tokens are counted by the serving (/tokenize): no prompt overflows."""
    import asyncio

    refused: list[int] = []
    real_open = llm.open_stream

    async def spy(s: Settings, messages: list[dict[str, str]], *a: Any, **kw: Any) -> llm.Stream:
        try:  # a spy: the real serving answers, or refuses the prompt as too long
            return await real_open(s, messages, *a, **kw)
        except llm.ContextTooLong:
            refused.append(sum(len(m["content"]) for m in messages))
            raise

    monkeypatch.setattr(llm, "open_stream", spy)
    # dense text (digits and units): far more tokens per character than English prose
    hits = [hit(n, f"zorbexine {n}.5 mg/kg q{n}h IV; " * 60) for n in range(1, 7)]

    async def go() -> tuple[int, int, int, int]:
        info = await llm.model_info(settings)
        stream, used = await service._open(settings, "the dose?", hits, [], None, 0.0)
        await stream.aclose()
        messages, _ = build_messages("the dose?", hits, [], None)
        return (
            info.max_len or 0,
            used,
            await llm.prompt_tokens(settings, info.id, messages),
            len(hits),
        )

    max_len, used, all_tokens, offered = asyncio.run(go())
    assert all_tokens > max_len  # every source would not fit
    assert 1 <= used < offered and refused == []


def test_citations_are_stored_without_text() -> None:
    citation = service.Citation.of(1, hit(7, "x" * 1000))
    assert len(citation.snippet) == service.SNIPPET_CHARS
    assert "snippet" not in citation.stored()
    back = service.Citation.from_stored(citation.stored(), citation.snippet)
    assert back == citation
    assert service.new_title("  a\n b  ") == "a b"
    assert len(service.new_title("w" * 500)) == service.TITLE_CHARS


def test_model_info_names_serving_when_it_is_down() -> None:
    import asyncio

    from app.errors import DependencyUnavailable

    closed = Settings(
        environment="development", cookie_secure=False,
        serving_url=f"http://127.0.0.1:{free_port()}/v1",
    )  # fmt: skip
    with pytest.raises(DependencyUnavailable) as caught:
        asyncio.run(llm.model_info(closed))
    assert caught.value.name == "serving"
    unset = Settings(environment="development", cookie_secure=False, serving_url="")
    with pytest.raises(DependencyUnavailable, match="serving is not configured"):
        asyncio.run(llm.model_info(unset))
