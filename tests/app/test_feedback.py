"""Feedback on answers (app/chat/feedback.py): rating, the admins' queue, storage, access.

Everything real, as in test_chat.py (a database of this module's own): answers come
from the chat API, most of them the fixed not-found answer to a question the corpus
does not cover (no model call); one from the synthetic guideline, for its citations.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app import migrate
from app.chat.prompt import NOT_FOUND
from app.chat.service import UNREADABLE
from app.metrics import FEEDBACK
from app.models import Role
from app.settings import Settings
from tests.app.data.kbdb import isolated_settings
from tests.app.test_chat import (
    API,
    COVERED,
    UNCOVERED,
    ask,
    corpus,  # noqa: F401 - the fixture
    done_with,
    events,
    new_conversation,
    no_inline_script_or_style,
    sql,
    use,
)
from tests.services.postgres import PrivatePostgres, free_port

QUEUE = "/api/v1/feedback"
MARK = "Zelda-Quixotic-Testperson"  # obviously synthetic; must never come back


@pytest.fixture(scope="module")
def feedback_settings(base_settings: Settings, postgres: PrivatePostgres) -> Settings:
    return isolated_settings(base_settings, postgres, max_answer_tokens=24)


@pytest.fixture
def settings(feedback_settings: Settings) -> Settings:
    """Overrides conftest's: this module's clients use the module's own database."""
    return feedback_settings


# -- helpers ----------------------------------------------------------------------------------


def answered(client: TestClient, question: str = UNCOVERED) -> tuple[str, str, str]:
    """A new conversation with one answer: (conversation id, answer's message id, its text)."""
    conversation = new_conversation(client)
    stream = events(ask(client, conversation, question))
    assert stream[-1][0] == "done", stream
    text = "".join(data["text"] for name, data in stream if name == "delta")
    return conversation, stream[-1][1]["message_id"], text


def rate(client: TestClient, conversation: str, message: str, body: Any) -> Any:
    return client.post(f"{API}/{conversation}/messages/{message}/feedback", json=body)


def counted(rating: str, category: str) -> float:
    return FEEDBACK.labels(rating, category)._value.get()


def queued(admin: TestClient, feedback_id: str, status: str = "all") -> dict[str, Any] | None:
    response = admin.get(QUEUE, params={"status": status, "limit": 200})
    assert response.status_code == 200, response.text
    return next((item for item in response.json() if item["id"] == feedback_id), None)


def audit(settings: Settings, action: str, entity_id: str) -> list[dict[str, Any]]:
    rows = sql(
        settings,
        "SELECT detail FROM audit_events WHERE action = %s AND entity_id = %s ORDER BY id",
        action,
        entity_id,
    )
    return [detail for (detail,) in rows]


# -- giving feedback --------------------------------------------------------------------------


def test_feedback_is_stored_encrypted_with_what_was_rated(
    login: Callable[..., TestClient],
    settings: Settings,
    corpus: dict[str, str],  # noqa: F811
) -> None:
    clinician, admin = login(Role.clinician), login(Role.admin)
    conversation, message, answer = answered(clinician, COVERED)
    comment = f"Synthetic comment: the dose table looks out of date {uuid.uuid4().hex[:8]}"
    before = counted("down", "outdated_policy")
    response = rate(
        clinician, conversation, message,
        {"rating": "down", "category": "outdated_policy", "comment": comment},
    )  # fmt: skip
    assert response.status_code == 201, response.text
    given = response.json()
    assert given["message_id"] == message and given["replaced"] is False
    assert (given["rating"], given["category"], given["status"]) == ("down", "outdated_policy",
                                                                     "open")  # fmt: skip
    assert counted("down", "outdated_policy") == before + 1

    ((rating, category, status, snapshot_enc, comment_enc, user_id),) = sql(
        settings,
        "SELECT rating, category, status, snapshot_enc, comment_enc, user_id FROM feedback"
        " WHERE id = %s",
        given["id"],
    )
    assert (rating, category, status) == ("down", "outdated_policy", "open")
    assert user_id == clinician.user_id  # type: ignore[attr-defined]
    for blob in (bytes(snapshot_enc), bytes(comment_enc)):
        assert blob.startswith(b"CE2")
        for plain in (answer, COVERED, comment, "zorbexine", "Zorbexine infusion guideline"):
            assert plain.encode() not in blob
    (detail,) = audit(settings, "feedback.create", given["id"])
    assert detail == {
        "message_id": message, "conversation_id": conversation, "rating": "down",
        "category": "outdated_policy", "comment": True, "citations": detail["citations"],
    }  # fmt: skip
    assert detail["citations"] >= 1 and comment not in json.dumps(detail)

    # the admin sees what was rated: question, answer, the cited policy versions
    item = queued(admin, given["id"], "open")
    assert item is not None and item["readable"] is True
    assert item["question"] == COVERED and item["answer"] == answer and item["grounded"] is True
    assert item["comment"] == comment
    assert item["given_by"] == clinician.username  # type: ignore[attr-defined]
    cited = item["citations"][0]
    assert cited["document_id"] == corpus["zorbexine"] and cited["version"] == 1
    assert cited["title"] == "Zorbexine infusion guideline" and cited["chunk_id"] > 0
    assert set(cited) == {"number", "document_id", "version", "title", "section", "page",
                          "chunk_id"}  # fmt: skip
    reads = sql(
        settings,
        "SELECT detail FROM audit_events WHERE action = 'feedback.read' AND actor = %s",
        admin.username,  # type: ignore[attr-defined]
    )
    assert reads and all(set(d) == {"listed", "unreadable", "status"} for (d,) in reads)
    done_with(clinician)
    done_with(admin)


def test_a_second_feedback_replaces_the_first_and_reopens_it(
    login: Callable[..., TestClient], settings: Settings
) -> None:
    clinician, admin = login(Role.clinician), login(Role.admin)
    conversation, message, _ = answered(clinician)
    up, wrong = counted("up", "none"), counted("down", "wrong")
    first = rate(clinician, conversation, message, {"rating": "up"})
    assert first.status_code == 201 and first.json()["category"] is None
    feedback_id = first.json()["id"]
    reviewed = admin.post(f"{QUEUE}/{feedback_id}/review", json={})
    assert reviewed.status_code == 200 and reviewed.json()["status"] == "reviewed"

    second = rate(clinician, conversation, message, {"rating": "down", "category": "wrong"})
    assert second.status_code == 200, second.text
    assert second.json()["id"] == feedback_id and second.json()["replaced"] is True
    assert second.json()["status"] == "open"  # new information: back in the queue
    assert counted("up", "none") == up + 1 and counted("down", "wrong") == wrong + 1
    rows = sql(
        settings,
        "SELECT rating, category, comment_enc, reviewed_by FROM feedback WHERE message_id = %s",
        message,
    )
    assert rows == [("down", "wrong", None, None)]
    assert [d["rating"] for d in audit(settings, "feedback.create", feedback_id)] == ["up"]
    (update,) = audit(settings, "feedback.update", feedback_id)
    assert (update["rating"], update["category"], update["comment"]) == ("down", "wrong", False)
    item = queued(admin, feedback_id, "open")
    assert item is not None and item["answer"] == NOT_FOUND and item["grounded"] is False
    assert item["citations"] == [] and item["question"] == UNCOVERED
    done_with(clinician)
    done_with(admin)


def test_only_the_owner_rates_an_answer_of_their_conversation(
    login: Callable[..., TestClient], settings: Settings
) -> None:
    owner, other, admin = login(Role.clinician), login(Role.clinician), login(Role.admin)
    conversation, message, _ = answered(owner)
    other_conversation, _, _ = answered(owner)
    (question,) = sql(
        settings,
        "SELECT id FROM messages WHERE conversation_id = %s AND role = 'user'",
        conversation,
    )
    down = {"rating": "down", "category": "unsafe"}
    refused = [
        rate(other, conversation, message, down),  # another clinician's answer
        rate(owner, conversation, str(question[0]), down),  # a question, not an answer
        rate(owner, other_conversation, message, down),  # an answer of another conversation
        rate(owner, conversation, str(uuid.uuid4()), down),
        rate(owner, str(uuid.uuid4()), message, down),
    ]
    assert [r.status_code for r in refused] == [404] * 5
    assert {r.json()["detail"] for r in refused} == {"no such answer"}  # the same for all
    # break-glass reads another's conversation; it does not rate its answers
    started = other.post(
        "/api/v1/auth/break-glass",
        json={"reason": "covering the ward overnight, urgent handover", "minutes": 5},
    )
    assert started.status_code == 200, started.text
    assert rate(other, conversation, message, down).status_code == 404
    assert rate(admin, conversation, message, down).status_code == 403  # not a clinician
    assert sql(settings, "SELECT id FROM feedback WHERE message_id = %s", message) == []
    for client in (owner, other, admin):
        done_with(client)


def test_bad_feedback_is_4xx_stores_nothing_and_echoes_nothing(
    login: Callable[..., TestClient], settings: Settings
) -> None:
    client = login(Role.clinician)
    conversation, message, _ = answered(client)
    for body in (
        {"rating": MARK},
        {"rating": "up", "category": "unsafe"},  # a category goes with a thumbs down only
        {"rating": "down", "category": MARK},
        {"rating": "down", "comment": MARK + "x" * 2000},
        {"rating": "down", "comment": f"{MARK}\x00"},
        {"rating": ["down"], "comment": [MARK]},
        {"comment": MARK},
        [MARK],
    ):
        response = rate(client, conversation, message, body)
        assert response.status_code == 422, (body, response.status_code)
        assert MARK not in response.text
    broken = client.post(
        f"{API}/{conversation}/messages/{message}/feedback",
        content=f'{{"rating": "down", "comment": "{MARK}',
        headers={"content-type": "application/json"},
    )
    assert broken.status_code == 422 and MARK not in broken.text
    assert rate(client, conversation, "not-an-id", {"rating": "up"}).status_code == 422
    token = client.headers.pop("X-CSRF-Token")  # a cookie session needs its CSRF token
    assert rate(client, conversation, message, {"rating": "up"}).status_code == 403
    client.headers["X-CSRF-Token"] = token
    assert sql(settings, "SELECT id FROM feedback WHERE message_id = %s", message) == []
    # the longest comment, with newlines, is taken
    longest = "Synthetic line\n" + "y" * 1985
    assert (
        rate(client, conversation, message, {"rating": "down", "comment": longest}).status_code
        == 201
    )
    done_with(client)


# -- the queue --------------------------------------------------------------------------------


def test_the_queue_is_for_admins_and_review_is_audited(
    login: Callable[..., TestClient], settings: Settings, client: TestClient
) -> None:
    clinician, auditor, admin = login(Role.clinician), login(Role.auditor), login(Role.admin)
    conversation, message, _ = answered(clinician)
    feedback_id = rate(clinician, conversation, message, {"rating": "down"}).json()["id"]
    for other in (clinician, auditor):
        assert other.get(QUEUE).status_code == 403
        assert other.post(f"{QUEUE}/{feedback_id}/review", json={}).status_code == 403
        assert other.get("/admin/feedback").status_code == 403
    assert admin.get(QUEUE, params={"status": "pending"}).status_code == 422
    assert admin.post(f"{QUEUE}/{uuid.uuid4()}/review", json={}).status_code == 404

    note = f"Synthetic note: policy v3 uploaded {uuid.uuid4().hex[:8]}"
    reviewed = admin.post(f"{QUEUE}/{feedback_id}/review", json={"note": note})
    assert reviewed.status_code == 200 and reviewed.json()["status"] == "reviewed"
    assert queued(admin, feedback_id, "open") is None
    item = queued(admin, feedback_id, "reviewed")
    assert item is not None and item["review_note"] == note and item["category"] is None
    assert item["reviewed_by"] == admin.username  # type: ignore[attr-defined]
    ((note_enc,),) = sql(
        settings, "SELECT review_note_enc FROM feedback WHERE id = %s", feedback_id
    )
    assert bytes(note_enc).startswith(b"CE2") and note.encode() not in bytes(note_enc)
    (detail,) = audit(settings, "feedback.review", feedback_id)
    assert detail == {"rating": "down", "category": None, "note": True, "again": False}

    # an admin's API token reads the queue only with the feedback scope
    for scopes, expected in ((["documents"], 403), (["feedback"], 200)):
        made = admin.post("/api/v1/tokens", json={"name": "kb script", "scopes": scopes})
        assert made.status_code == 201, made.text
        bearer = {"Authorization": f"Bearer {made.json()['token']}"}
        assert client.get(QUEUE, headers=bearer).status_code == expected, scopes
    for signed_in in (clinician, auditor, admin):
        done_with(signed_in)


def test_a_value_copied_into_another_feedback_reads_as_unreadable_not_a_500(
    login: Callable[..., TestClient], settings: Settings
) -> None:
    alice, bob, admin = login(Role.clinician), login(Role.clinician), login(Role.admin)
    secret = f"Synthetic comment of Alice {uuid.uuid4().hex}"
    theirs = [answered(client) for client in (alice, bob)]
    ids = [
        rate(client, c, m, {"rating": "down", "comment": secret if client is alice else "Bob's"})
        .json()["id"]
        for client, (c, m, _) in zip((alice, bob), theirs, strict=True)
    ]  # fmt: skip
    sql(
        settings,
        "UPDATE feedback SET snapshot_enc = (SELECT snapshot_enc FROM feedback WHERE id = %s),"
        " comment_enc = (SELECT comment_enc FROM feedback WHERE id = %s) WHERE id = %s"
        " RETURNING id",
        ids[0], ids[0], ids[1],
    )  # fmt: skip
    response = admin.get(QUEUE, params={"status": "all", "limit": 200})
    assert response.status_code == 200
    items = {item["id"]: item for item in response.json()}
    moved = items[ids[1]]
    assert moved["readable"] is False and moved["comment"] == UNREADABLE
    assert moved["question"] == UNREADABLE and moved["answer"] == UNREADABLE
    assert items[ids[0]]["readable"] is True and items[ids[0]]["comment"] == secret
    page = admin.get("/admin/feedback", params={"status": "all"})
    assert page.status_code == 200 and "cannot be decrypted" in page.text
    assert secret in page.text and page.text.count(secret) == 1  # Alice's row only
    for client in (alice, bob, admin):
        done_with(client)


def test_feedback_survives_deleting_the_conversation(
    login: Callable[..., TestClient], settings: Settings
) -> None:
    clinician, admin = login(Role.clinician), login(Role.admin)
    conversation, message, _ = answered(clinician)
    feedback_id = rate(clinician, conversation, message, {"rating": "down", "category": "unsafe"})\
        .json()["id"]  # fmt: skip
    assert clinician.delete(f"{API}/{conversation}").status_code == 204
    assert sql(settings, "SELECT message_id FROM feedback WHERE id = %s", feedback_id) == [(None,)]
    item = queued(admin, feedback_id, "open")
    assert item is not None and item["message_id"] is None and item["readable"] is True
    assert item["question"] == UNCOVERED and item["answer"] == NOT_FOUND
    done_with(clinician)
    done_with(admin)


# -- dependencies down ------------------------------------------------------------------------


def test_vault_or_database_down_is_503_naming_it(
    login: Callable[..., TestClient], settings: Settings
) -> None:
    clinician = login(Role.clinician)
    conversation, message, _ = answered(clinician)
    vault_down = settings.model_copy(update={"vault_addr": f"https://127.0.0.1:{free_port()}"})
    db_down = settings.model_copy(update={"db_port": free_port()})
    try:
        for down, name in ((vault_down, "vault"), (db_down, "database")):
            use(down)
            response = rate(clinician, conversation, message, {"rating": "up"})
            assert response.status_code == 503, (name, response.text)
            assert response.json() == {"detail": f"{name} is unavailable", "down": [name]}
    finally:
        use(settings)
    assert sql(settings, "SELECT id FROM feedback WHERE message_id = %s", message) == []
    done_with(clinician)


# -- pages ------------------------------------------------------------------------------------


def test_the_chat_page_has_thumbs_and_the_admin_page_the_queue(
    login: Callable[..., TestClient], settings: Settings
) -> None:
    clinician, admin = login(Role.clinician), login(Role.admin)
    conversation, message, _ = answered(clinician)
    assert events(ask(clinician, conversation, UNCOVERED))[-1][0] == "done"
    assert rate(clinician, conversation, message, {"rating": "up"}).status_code == 201
    page = clinician.get(f"/c/{conversation}")
    assert page.status_code == 200
    # under each of the two answers, and a template for the next one
    assert page.text.count('class="feedback"') == 3 and 'id="feedback-template"' in page.text
    assert f'data-message="{message}"' in page.text
    assert page.text.count('aria-pressed="true"') == 1  # the rating given, shown
    assert "Report a problem" in page.text and 'name="category"' in page.text
    assert 'value="outdated_policy"' in page.text and "<label>Comment" in page.text
    no_inline_script_or_style(page.text)

    feedback_id = rate(clinician, conversation, message, {"rating": "down",
                                                          "category": "missing_source"})\
        .json()["id"]  # fmt: skip
    csrf = admin.headers.pop("X-CSRF-Token")  # forms carry it as a field
    queue = admin.get("/admin/feedback")
    assert queue.status_code == 200 and 'href="/admin/feedback"' in queue.text  # the nav
    assert f'data-feedback-id="{feedback_id}"' in queue.text and "Missing source" in queue.text
    assert NOT_FOUND.replace("'", "&#39;") in queue.text and "Mark reviewed" in queue.text
    no_inline_script_or_style(queue.text)
    action = f"/admin/feedback/{feedback_id}/review"
    assert admin.post(action, data={"note": "x"}, follow_redirects=False).status_code == 403
    done = admin.post(action, data={"csrf_token": csrf, "note": "Synthetic note"},
                      follow_redirects=False)  # fmt: skip
    assert done.status_code == 303 and done.headers["location"] == "/admin/feedback"
    reviewed = admin.get("/admin/feedback", params={"status": "reviewed"})
    assert "Reviewed by" in reviewed.text and "Synthetic note" in reviewed.text
    admin.headers["X-CSRF-Token"] = csrf
    done_with(clinician)
    done_with(admin)


# -- the migration ----------------------------------------------------------------------------


def test_the_migration_rolls_back_and_forward(
    base_settings: Settings, postgres: PrivatePostgres
) -> None:
    from alembic import command

    settings = isolated_settings(base_settings, postgres)
    table = "SELECT to_regclass('public.feedback') IS NOT NULL"
    assert sql(settings, table) == [(True,)]
    command.downgrade(migrate.alembic_config(settings), "0005")
    assert sql(settings, table) == [(False,)]
    migrate.upgrade(settings)
    assert sql(settings, table) == [(True,)]
    # the app's role may read, add and update feedback, never delete it
    assert sql(settings, "SELECT has_table_privilege('feedback', 'DELETE')") == [(False,)]
    assert sql(settings, "SELECT has_table_privilege('feedback', 'UPDATE')") == [(True,)]
