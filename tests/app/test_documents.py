"""The knowledge base end to end: upload, refusals, worker, versions, retire, citations, pages.

Everything real: PostgreSQL with pgvector (a database of this module's own), Redis,
the all-MiniLM-L6-v2 embeddings, the serving. Async steps (the worker) run on the
test client's own event loop (``client.portal``), where the app's pools live.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import psycopg
import pytest
from fastapi.testclient import TestClient

from app.db import conninfo, sessionmaker
from app.errors import DependencyUnavailable
from app.kb import worker
from app.kb.embed import LocalEmbedder, ServingEmbedder
from app.kb.retrieve import Hit, retrieve
from app.models import Role
from app.settings import EmbeddingBackend, Settings
from tests.app.data import kbdocs
from tests.app.data.kbdb import count_rows, isolated_settings, queued
from tests.services.postgres import PrivatePostgres, free_port

API = "/api/v1/documents"
DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"


@pytest.fixture(scope="module")
def kb_settings(base_settings: Settings, postgres: PrivatePostgres) -> Settings:
    return isolated_settings(base_settings, postgres)


@pytest.fixture
def settings(kb_settings: Settings) -> Settings:
    """Overrides conftest's: this module's clients use the module's own database."""
    return kb_settings


@pytest.fixture
def admin(login: Callable[..., TestClient]) -> TestClient:
    return login(Role.admin)


def upload(
    client: TestClient,
    name: str,
    data: bytes,
    content_type: str = "application/octet-stream",
    title: str | None = None,
    path: str = API,
) -> httpx.Response:
    return client.post(
        path, files={"file": (name, data, content_type)}, data={"title": title} if title else {}
    )


def done_with(client: TestClient) -> None:
    """Close the app's Redis clients on this client's event loop.

    Every TestClient runs the app on an event loop of its own, while the app caches
    one Redis client per settings; a client cached on one loop fails on another. A
    test using two signed-in clients hands over with this (and signs them all in
    before the first request: conftest's ``login`` uses the same cache).
    """
    from app.redis_client import close_all

    client.portal.call(close_all)  # type: ignore[union-attr]


def unique(text: str) -> bytes:
    """A distinct file each time (the same bytes twice is a duplicate)."""
    return f"{text}\n\nReference {uuid.uuid4().hex}.\n".encode()


def process(client: TestClient, settings: Settings, version_id: str) -> str:
    return client.portal.call(worker.process_one, settings, version_id)  # type: ignore[union-attr]


def search(client: TestClient, settings: Settings, query: str, k: int = 6) -> list[Hit]:
    async def go() -> list[Hit]:
        async with sessionmaker(settings)() as session:
            return await retrieve(session, settings, query, k)

    return client.portal.call(go)  # type: ignore[union-attr]


def ingest(client: TestClient, settings: Settings, name: str, data: bytes, **kw: Any) -> dict:
    response = upload(client, name, data, **kw)
    assert response.status_code == 201, response.text
    document = response.json()
    assert process(client, settings, document["latest"]["id"]) == "ready"
    return client.get(f"{API}/{document['id']}").json()


# -- uploads --------------------------------------------------------------------------------------


def test_upload_queues_then_the_worker_makes_it_searchable(
    admin: TestClient, settings: Settings
) -> None:
    response = upload(admin, "sepsis.md", unique(kbdocs.SEPSIS_MD), "text/markdown", "Sepsis")
    assert response.status_code == 201, response.text
    body = response.json()
    latest = body["latest"]
    assert (body["title"], body["status"], body["live_version"]) == ("Sepsis", "active", None)
    assert (latest["version"], latest["status"], latest["progress"]) == (1, "queued", 0)
    assert latest["media_type"] == "text/markdown" and latest["phi"] is False
    assert latest["id"] in queued(settings)

    # stored encrypted: the plaintext is nowhere in the row
    with psycopg.connect(conninfo(settings)) as conn:
        blob = conn.execute(
            "SELECT content_enc FROM document_versions WHERE id = %s", (latest["id"],)
        ).fetchone()[0]  # type: ignore[index]
    assert b"piperacillin" not in bytes(blob)

    assert process(admin, settings, latest["id"]) == "ready"
    detail = admin.get(f"{API}/{body['id']}").json()
    assert detail["latest"]["status"] == "ready" and detail["latest"]["progress"] == 100
    assert detail["latest"]["chunk_count"] >= 3 and detail["live_version"] == 1

    hits = search(admin, settings, "first-line empirical antibiotic regimen for septic shock")
    assert hits and hits[0].document_id == uuid.UUID(body["id"])
    assert hits[0].section == "Sepsis bundle > Antibiotics"
    assert "piperacillin" in hits[0].text


def test_every_type_uploads_and_is_chunked_with_its_structure(
    admin: TestClient, settings: Settings
) -> None:
    pdf = kbdocs.pdf(
        [*kbdocs.FALLS_PDF_PAGES[:1], [*kbdocs.FALLS_PDF_PAGES[1], uuid.uuid4().hex]],
        kbdocs.FALLS_OUTLINE,
    )
    insulin = [*kbdocs.INSULIN_DOCX, ("Normal", uuid.uuid4().hex)]
    cases = [
        ("falls.pdf", pdf, "application/pdf", ("Falls prevention > Bed rails", 2)),
        (
            "insulin.docx",
            kbdocs.docx(insulin),
            DOCX,
            ("Insulin infusion protocol > Potassium", None),
        ),
        (
            "hygiene.html",
            unique(kbdocs.HAND_HYGIENE_HTML),
            "text/html",
            ("Hand hygiene policy", None),
        ),
        ("visiting.txt", unique(kbdocs.VISITING_TXT), "text/plain", ("", None)),
    ]
    for name, data, content_type, (section, page) in cases:
        document = ingest(admin, settings, name, data, content_type=content_type)
        with psycopg.connect(conninfo(settings)) as conn:
            rows = conn.execute(
                "SELECT section, page, searchable FROM chunks WHERE document_id = %s",
                (document["id"],),
            ).fetchall()
        assert (section, page, True) in rows, (name, rows)


def _refusal_cases() -> list[tuple[str, bytes, str, int, str]]:
    return [
        ("broken.pdf", b"%PDF-1.7\n1 0 obj << garbage", "application/pdf", 422, "corrupt"),
        ("empty.txt", b"", "text/plain", 400, "empty"),
        ("scan.pdf", kbdocs.PNG, "application/pdf", 415, "unsupported_type"),
        ("setup.exe", kbdocs.EXE, "application/x-msdownload", 415, "unsupported_type"),
        ("notes.pdf", b"plain words only", "application/pdf", 415, "type_mismatch"),
        ("notes.txt", b"plain words only", "image/png", 415, "type_mismatch"),
        ("scanned.pdf", kbdocs.scanned_pdf(), "application/pdf", 422, "no_text"),
    ]


@pytest.mark.parametrize(
    ("name", "data", "content_type", "status", "code"),
    _refusal_cases(),
    ids=[case[4] + ":" + case[0] for case in _refusal_cases()],
)
def test_bad_files_are_refused_and_nothing_is_stored(
    admin: TestClient,
    settings: Settings,
    name: str,
    data: bytes,
    content_type: str,
    status: int,
    code: str,
) -> None:
    before, waiting = count_rows(settings), queued(settings)
    response = upload(admin, name, data, content_type)
    assert response.status_code == status, response.text
    assert response.json()["code"] == code and response.json()["detail"]
    assert count_rows(settings) == before
    assert queued(settings) == waiting


def test_oversized_upload_is_refused_while_reading(
    login: Callable[..., TestClient], settings: Settings
) -> None:
    from app.main import app
    from app.settings import get_settings

    small = settings.model_copy(update={"upload_max_bytes": 1024})
    client = login(Role.admin)
    app.dependency_overrides[get_settings] = lambda: small
    before, waiting = count_rows(settings), queued(settings)
    # just over the file limit: passes the length check, refused while reading
    response = upload(client, "big.txt", b"word " * 300, "text/plain")
    assert response.status_code == 413 and response.json()["code"] == "too_large"
    # far over: refused on the declared length before the body is read
    response = upload(client, "huge.txt", b"word " * 20000, "text/plain")
    assert response.status_code == 413 and response.json()["code"] == "too_large"
    assert count_rows(settings) == before and queued(settings) == waiting


def test_a_multipart_upload_without_length_is_refused(admin: TestClient) -> None:
    def body() -> Iterator[bytes]:  # a generator: httpx sends it chunked, with no length
        yield b"--b\r\nContent-Disposition: form-data; name=file; filename=a.txt\r\n\r\n"
        yield b"text\r\n--b--\r\n"

    response = admin.post(
        API, content=body(), headers={"content-type": "multipart/form-data; boundary=b"}
    )
    assert response.status_code == 411 and response.json()["code"] == "length_required"


def test_odd_filenames_are_stored_cleanly(admin: TestClient, settings: Settings) -> None:
    # raw multipart: httpx would percent-encode the control characters itself
    body = (
        b'--b\r\nContent-Disposition: form-data; name="file"; filename="C:\\x\\b\x00a\x07d.txt"\r\n'
        b"Content-Type: text/plain\r\n\r\n" + unique("Odd name.") + b"\r\n--b--\r\n"
    )
    response = admin.post(
        API, content=body, headers={"content-type": "multipart/form-data; boundary=b"}
    )
    assert response.status_code == 201, response.text
    assert response.json()["latest"]["filename"] == "b a d.txt"


def test_redis_down_stores_nothing(admin: TestClient, settings: Settings) -> None:
    import redis.exceptions

    from app.kb.ingest import check_file, store_upload

    down = settings.model_copy(update={"redis_url": f"rediss://127.0.0.1:{free_port()}/0"})
    checked = check_file(unique("Queue down."), "q.txt", "text/plain")
    before = count_rows(settings)

    async def go() -> None:
        async with sessionmaker(down)() as session:
            await store_upload(session, down, worker.ADMIN_CLI, None, checked)

    with pytest.raises(redis.exceptions.ConnectionError):
        admin.portal.call(go)  # type: ignore[union-attr]
    assert count_rows(settings) == before


def test_duplicate_upload_is_a_conflict(admin: TestClient, settings: Settings) -> None:
    data = unique(kbdocs.VISITING_TXT)
    first = upload(admin, "visiting.txt", data, "text/plain")
    assert first.status_code == 201
    before = count_rows(settings)
    again = upload(admin, "copy.txt", data, "text/plain")
    assert again.status_code == 409 and again.json()["code"] == "duplicate"
    as_version = upload(
        admin, "v.txt", data, "text/plain", path=f"{API}/{first.json()['id']}/versions"
    )
    assert as_version.status_code == 409
    assert count_rows(settings) == before


def test_bad_titles_and_ids_are_4xx(admin: TestClient) -> None:
    data = unique("Some policy text.")
    assert upload(admin, "a.txt", data, "text/plain", title="bad\x01title").status_code == 422
    assert upload(admin, "a.txt", data, "text/plain", title="x" * 600).status_code == 422
    missing = f"{API}/{uuid.uuid4()}/versions"
    response = upload(admin, "a.txt", data, "text/plain", path=missing)
    assert response.status_code == 404
    assert admin.get(f"{API}/not-a-uuid").status_code == 422
    assert admin.get(f"{API}/{uuid.uuid4()}").status_code == 404
    assert admin.post(f"{API}/{uuid.uuid4()}/retire").status_code == 404
    assert admin.get("/api/v1/chunks/0").status_code == 422
    assert admin.get(f"/api/v1/chunks/{2**63}").status_code == 422
    assert admin.get(f"/api/v1/chunks/{2**62}").status_code == 404


def test_phi_is_flagged_and_counted(admin: TestClient, settings: Settings) -> None:
    from prometheus_client import REGISTRY

    def mrn_count() -> float:
        value = REGISTRY.get_sample_value(
            "clinchat_phi_detections_total", {"source": "document", "type": "MRN"}
        )
        return value or 0.0

    before = mrn_count()
    response = upload(admin, "summary.txt", unique(kbdocs.PHI_TXT), "text/plain", "Summary")
    assert response.status_code == 201
    latest = response.json()["latest"]
    assert latest["phi"] is True and latest["phi_types"]["NAME"] >= 1
    assert latest["phi_types"]["MRN"] >= 1
    assert mrn_count() >= before + 1
    page = admin.get("/documents")
    # the badge names the types it found, with their counts in its tooltip and to a
    # screen reader (visually hidden text)
    row = page.text.split(f'data-document-id="{response.json()["id"]}"')[1].split("</tr>")[0]
    badge = re.search(r'class="badge danger phi-badge" title="([^"]*)">(.*?)</span>\s*</td>', row)
    assert badge, page.text
    assert "MRN: 1" in badge[1] and "NAME: 1" in badge[1]
    shown = re.sub(r"<[^>]+>", "", badge[2])
    assert shown.startswith("PHI: ") and "MRN (1)" in shown and "NAME (1)" in shown
    # the audit event holds counts, never the text
    with psycopg.connect(conninfo(settings)) as conn:
        detail = conn.execute(
            "SELECT detail::text FROM audit_events WHERE action = 'document.create'"
            " AND entity_id = %s",
            (response.json()["id"],),
        ).fetchone()[0]  # type: ignore[index]
    assert "Testpatient" not in detail and '"MRN": 1' in detail


# -- versions and retirement ----------------------------------------------------------------------


def test_a_new_version_replaces_the_old_in_retrieval(admin: TestClient, settings: Settings) -> None:
    old = "# Anticoagulation\n\nThe warfarin loading dose is 10 mg on day one for adults.\n"
    new = "# Anticoagulation\n\nThe warfarin loading dose is 5 mg on day one for adults.\n"
    document = ingest(admin, settings, "warfarin.md", unique(old), content_type="text/markdown")
    hits = search(admin, settings, "warfarin loading dose")
    assert hits[0].document_id == uuid.UUID(document["id"]) and "10 mg" in hits[0].text

    response = upload(admin, "warfarin.md", unique(new), path=f"{API}/{document['id']}/versions")
    assert response.status_code == 201, response.text
    assert response.json()["latest"]["version"] == 2
    # until version 2 is ready, version 1 is still the one searched
    assert "10 mg" in search(admin, settings, "warfarin loading dose")[0].text
    assert process(admin, settings, response.json()["latest"]["id"]) == "ready"
    detail = admin.get(f"{API}/{document['id']}").json()
    assert detail["live_version"] == 2 and [v["version"] for v in detail["versions"]] == [1, 2]
    hits = [h for h in search(admin, settings, "warfarin loading dose") if "warfarin" in h.text]
    assert hits and all("5 mg" in h.text and h.version == 2 for h in hits)


def test_retire_removes_it_from_retrieval(admin: TestClient, settings: Settings) -> None:
    text = "# Lithium\n\nCheck the serum lithium level twelve hours after the last dose.\n"
    document = ingest(admin, settings, "lithium.md", unique(text))
    assert search(admin, settings, "when to check serum lithium level")[0].document_id == uuid.UUID(
        document["id"]
    )
    response = admin.post(f"{API}/{document['id']}/retire")
    assert response.status_code == 200
    assert response.json()["status"] == "retired" and response.json()["live_version"] is None
    hits = search(admin, settings, "when to check serum lithium level")
    assert all(h.document_id != uuid.UUID(document["id"]) for h in hits)
    listed = {d["id"]: d["status"] for d in admin.get(API).json()}
    assert listed[document["id"]] == "retired"
    assert admin.post(f"{API}/{document['id']}/retire").status_code == 200  # idempotent
    again = upload(admin, "l.md", unique(text), path=f"{API}/{document['id']}/versions")
    assert again.status_code == 409 and again.json()["code"] == "retired"


def test_failed_ingestion_records_a_short_error(admin: TestClient, settings: Settings) -> None:
    response = upload(admin, "short.txt", unique("A short note."), "text/plain")
    version_id = response.json()["latest"]["id"]
    with psycopg.connect(conninfo(settings)) as conn:  # the stored file is damaged
        conn.execute(
            "UPDATE document_versions SET content_enc = %s WHERE id = %s", (b"CE2xx", version_id)
        )
    assert process(admin, settings, version_id) == "failed"
    latest = admin.get(f"{API}/{response.json()['id']}").json()["latest"]
    assert latest["status"] == "failed" and latest["error"] == "the stored file cannot be decrypted"
    assert process(admin, settings, str(uuid.uuid4())) == "missing"
    assert process(admin, settings, "not-an-id") == "missing"


# -- roles ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("role", [Role.clinician, Role.auditor])
def test_only_admins_upload_or_retire(
    login: Callable[..., TestClient], settings: Settings, role: Role
) -> None:
    client = login(role)
    before = count_rows(settings)
    response = upload(client, "x.txt", unique("Policy."), "text/plain")
    assert response.status_code == 403
    assert client.post(f"{API}/{uuid.uuid4()}/retire").status_code == 403
    assert client.post("/documents/upload", files={"file": ("x.txt", b"x")}).status_code == 403
    assert count_rows(settings) == before


def test_auditors_list_clinicians_do_not(login: Callable[..., TestClient]) -> None:
    auditor, clinician = login(Role.auditor), login(Role.clinician)  # sign in before requests
    assert auditor.get(API).status_code == 200
    done_with(auditor)
    assert clinician.get(API).status_code == 403
    done_with(clinician)


# -- citations ------------------------------------------------------------------------------------


def test_a_cited_chunk_opens_for_every_role_and_is_audited(
    admin: TestClient, login: Callable[..., TestClient], settings: Settings
) -> None:
    # every client signs in before any request, and hands the pools over (see done_with)
    readers = [login(role) for role in (Role.clinician, Role.auditor, Role.admin)]
    nobody = login()
    text = "# Paracetamol\n\nThe maximum paracetamol dose is 4 g in 24 hours for adults.\n"
    document = ingest(admin, settings, "paracetamol.md", unique(text), title="Paracetamol")
    hit = search(admin, settings, "maximum daily paracetamol dose")[0]
    done_with(admin)
    for reader in readers:
        response = reader.get(f"/api/v1/chunks/{hit.chunk_id}")
        done_with(reader)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["title"] == "Paracetamol" and body["section"] == "Paracetamol"
        assert body["version"] == 1 and "4 g in 24 hours" in body["text"]
        assert body["searchable"] is True and body["document_id"] == document["id"]
    with psycopg.connect(conninfo(settings)) as conn:
        reads = conn.execute(
            "SELECT count(*) FROM audit_events WHERE action = 'document.read' AND entity_id = %s"
            " AND detail->>'chunk_id' = %s",
            (document["id"], str(hit.chunk_id)),
        ).fetchone()[0]  # type: ignore[index]
    assert reads == 3
    assert nobody.get(f"/api/v1/chunks/{hit.chunk_id}").status_code == 403  # no role
    done_with(nobody)


def test_superseded_and_retired_passages_only_for_whom_they_were_cited(
    admin: TestClient, login: Callable[..., TestClient], settings: Settings
) -> None:
    """Ids are sequential: a clinician reads the live passages and those an answer of
    theirs cited, not every superseded or retired one; admins and auditors read all."""
    cited_to, other, auditor = (login(r) for r in (Role.clinician, Role.clinician, Role.auditor))
    old = "# Heparin\n\nThe heparin bolus is 80 units per kg before the infusion.\n"
    document = ingest(admin, settings, "heparin.md", unique(old), content_type="text/markdown")
    old_chunk = search(admin, settings, "heparin bolus units per kg")[0].chunk_id
    new = upload(
        admin,
        "heparin.md",
        unique(old.replace("80", "60")),
        path=f"{API}/{document['id']}/versions",
    )
    assert process(admin, settings, new.json()["latest"]["id"]) == "ready"
    new_chunk = search(admin, settings, "heparin bolus units per kg")[0].chunk_id
    assert new_chunk != old_chunk
    # an answer in cited_to's conversation cited the old passage
    with psycopg.connect(conninfo(settings)) as conn:
        conversation = conn.execute(
            "INSERT INTO conversations (id, user_id, title_enc) VALUES (gen_random_uuid(), %s,"
            " 'x'::bytea) RETURNING id",
            (cited_to.user_id,),  # type: ignore[attr-defined]
        ).fetchone()[0]  # type: ignore[index]
        conn.execute(
            "INSERT INTO messages (id, conversation_id, role, content_enc, citations, grounded,"
            " model) VALUES (gen_random_uuid(), %s, 'assistant', 'x'::bytea, %s, true, 'm')",
            (conversation, json.dumps([{"chunk_id": old_chunk, "document_id": document["id"]}])),
        )
    done_with(admin)

    def status(client: TestClient, chunk_id: int) -> int:
        code = client.get(f"/api/v1/chunks/{chunk_id}").status_code
        done_with(client)
        return code

    assert status(other, new_chunk) == 200  # live: every role
    assert status(other, old_chunk) == 404  # superseded and never cited to them
    assert status(cited_to, old_chunk) == 200  # their answer cited it
    assert status(auditor, old_chunk) == 200
    assert admin.post(f"{API}/{document['id']}/retire").status_code == 200
    done_with(admin)
    assert status(other, new_chunk) == 404  # retired
    assert status(auditor, new_chunk) == 200
    with psycopg.connect(conninfo(settings)) as conn:
        refused = conn.execute(
            "SELECT count(*) FROM audit_events WHERE action = 'document.read'"
            " AND outcome = 'failure' AND entity_id = %s",
            (document["id"],),
        ).fetchone()[0]  # type: ignore[index]
    assert refused == 2


def test_a_mistaken_upload_is_purged_with_a_tombstone(
    admin: TestClient, login: Callable[..., TestClient], settings: Settings
) -> None:
    text = "# Ward 9 handover\n\nThe night team checks the syringe drivers at midnight.\n"
    document = ingest(admin, settings, "handover.md", unique(text), content_type="text/markdown")
    second = upload(admin, "handover.md", unique(text), path=f"{API}/{document['id']}/versions")
    assert process(admin, settings, second.json()["latest"]["id"]) == "ready"
    chunk = search(admin, settings, "when are syringe drivers checked")[0]
    assert chunk.document_id == uuid.UUID(document["id"])
    with psycopg.connect(conninfo(settings)) as conn:  # an answer that cited it
        conversation = conn.execute(
            "INSERT INTO conversations (id, user_id, title_enc) VALUES (gen_random_uuid(), %s,"
            " 'x'::bytea) RETURNING id",
            (admin.user_id,),  # type: ignore[attr-defined]
        ).fetchone()[0]  # type: ignore[index]
        citation = {"chunk_id": chunk.chunk_id, "document_id": document["id"],
                    "title": document["title"], "section": "Ward 9 handover"}  # fmt: skip
        conn.execute(
            "INSERT INTO messages (id, conversation_id, role, content_enc, citations, grounded,"
            " model) VALUES (gen_random_uuid(), %s, 'assistant', 'x'::bytea, %s, true, 'm')",
            (conversation, json.dumps([citation])),
        )
    done_with(admin)
    clinician = login(Role.clinician)
    refused = clinician.post(f"{API}/{document['id']}/purge", json={"reason": "contains_phi"})
    assert refused.status_code == 403
    done_with(clinician)
    assert admin.post(f"{API}/{document['id']}/purge", json={"reason": "??"}).status_code == 422
    assert admin.post(f"{API}/{document['id']}/purge", json={}).status_code == 422

    purged = admin.post(f"{API}/{document['id']}/purge", json={"reason": "contains_phi"})
    assert purged.status_code == 200, purged.text
    assert purged.json() == {"id": document["id"], "versions": 2, "chunks": 2}
    # Nothing of it remains: not the files, the text, the embeddings, the title.
    with psycopg.connect(conninfo(settings)) as conn:
        left = [
            conn.execute(query, (document["id"],)).fetchone()[0]  # type: ignore[index]
            for query in (
                "SELECT count(*) FROM documents WHERE id = %s",
                "SELECT count(*) FROM document_versions WHERE document_id = %s",
                "SELECT count(*) FROM chunks WHERE document_id = %s",
            )
        ]
        citations = conn.execute(
            "SELECT citations FROM messages WHERE conversation_id = %s", (conversation,)
        ).fetchone()[0]  # type: ignore[index]
        tombstone = conn.execute(
            "SELECT actor, detail FROM audit_events WHERE action = 'document.purge'"
            " AND entity_id = %s",
            (document["id"],),
        ).fetchall()
    assert left == [0, 0, 0]
    assert citations == [citation | {"title": "(a purged document)", "section": ""}]
    assert "syringe" not in json.dumps(citations)
    assert len(tombstone) == 1
    assert tombstone[0][1]["reason"] == "contains_phi" and tombstone[0][1]["chunks"] == 2
    assert len(tombstone[0][1]["sha256"]) == 2
    hits = search(admin, settings, "when are syringe drivers checked")
    assert all(h.document_id != uuid.UUID(document["id"]) for h in hits)
    assert admin.get(f"/api/v1/chunks/{chunk.chunk_id}").status_code == 404
    assert admin.post(f"{API}/{document['id']}/purge", json={"reason": "other"}).status_code == 404


# -- pages ----------------------------------------------------------------------------------------


def test_library_page_upload_with_form_csrf(admin: TestClient, settings: Settings) -> None:
    page = admin.get("/documents")
    assert page.status_code == 200 and "Knowledge base" in page.text
    assert "<script>" not in page.text and "style=" not in page.text
    assert "/static/documents.js" in page.text
    token = admin.headers.pop("X-CSRF-Token")
    try:
        files = {"file": ("page.txt", unique("Uploaded from the page."), "text/plain")}
        no_token = admin.post("/documents/upload", files=files, data={"title": "From page"})
        assert no_token.status_code == 403
        response = admin.post(
            "/documents/upload",
            files=files,
            data={"title": "From page", "csrf_token": token},
            follow_redirects=False,
        )
        assert response.status_code == 303 and response.headers["location"].startswith("/documents")
        refused = admin.post(
            "/documents/upload",
            files={"file": ("bad.pdf", kbdocs.PNG, "application/pdf")},
            data={"csrf_token": token},
        )
        assert refused.status_code == 415 and "Not uploaded" in refused.text
    finally:
        admin.headers["X-CSRF-Token"] = token
    page = admin.get("/documents")
    assert "From page" in page.text and 'data-poll="yes"' in page.text
    # every file input is labelled: the upload form's by its label, each new version's
    # by a label naming its document
    inputs = re.findall(r"<input[^>]*type=\"file\"[^>]*>", page.text)
    labelled = set(
        re.findall(r'<label class="visually-hidden" for="([^"]+)">New version of ', page.text)
    )
    ids = [m[1] for i in inputs if (m := re.search(r'id="([^"]+)"', i))]
    assert len(ids) == len(inputs) - 1 and set(ids) == labelled  # the upload form: <label>File
    assert 'class="danger">Retire<' in page.text  # destructive: styled apart from upload


def test_library_page_retire_form(admin: TestClient, settings: Settings) -> None:
    response = upload(admin, "r.txt", unique("Retire me."), "text/plain", "Retire me")
    document_id = response.json()["id"]
    response = admin.post(f"/documents/{document_id}/retire", follow_redirects=False)
    assert response.status_code == 303
    assert admin.get(f"{API}/{document_id}").json()["status"] == "retired"


# -- the worker and the embedders -----------------------------------------------------------------


def test_run_worker_takes_versions_off_the_queue(admin: TestClient, settings: Settings) -> None:
    # something a previous run left half-done is put back and finished
    response = upload(admin, "w.txt", unique("Worker test: oxygen target 94 to 98 percent."))
    version_id = response.json()["latest"]["id"]
    from tests.app.data.kbdb import sync_redis

    redis_client = sync_redis(settings)
    redis_client.lrem(settings.ingest_queue, 0, version_id)
    redis_client.lpush(worker.processing_list(settings), version_id)
    second = upload(admin, "w2.txt", unique("Worker test two: nil by mouth from midnight."))

    stop = asyncio.Event()
    done = threading.Event()

    async def run() -> None:
        try:
            await worker.run_worker(settings, stop)
        finally:
            done.set()

    admin.portal.start_task_soon(run)  # type: ignore[union-attr]
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            statuses = {
                admin.get(f"{API}/{r.json()['id']}").json()["latest"]["status"]
                for r in (response, second)
            }
            if statuses == {"ready"}:
                break
            time.sleep(0.3)
        assert statuses == {"ready"}
    finally:
        admin.portal.call(stop.set)  # type: ignore[union-attr]
        assert done.wait(10)
    assert redis_client.llen(worker.processing_list(settings)) == 0
    redis_client.close()


def test_sweep_queues_versions_redis_lost(admin: TestClient, settings: Settings) -> None:
    response = upload(admin, "lost.txt", unique("Lost in the queue."), "text/plain")
    version_id = response.json()["latest"]["id"]
    from tests.app.data.kbdb import sync_redis

    redis_client = sync_redis(settings)
    redis_client.delete(settings.ingest_queue)
    assert admin.portal.call(worker.sweep, settings) >= 1  # type: ignore[union-attr]
    assert version_id in queued(settings)
    redis_client.close()


def test_serving_and_local_embeddings_agree(admin: TestClient, settings: Settings) -> None:
    texts = ["Give oxygen to keep saturation between 94 and 98 percent.", "Visiting hours."]
    served = settings.model_copy(update={"embedding_backend": EmbeddingBackend.serving})
    remote = admin.portal.call(ServingEmbedder(served).embed, texts)  # type: ignore[union-attr]
    local = admin.portal.call(LocalEmbedder().embed, texts)  # type: ignore[union-attr]
    for a, b in zip(remote, local, strict=True):
        assert len(a) == 384 and abs(sum(x * x for x in a) - 1) < 1e-4
        assert sum(x * y for x, y in zip(a, b, strict=True)) > 0.999


def test_serving_down_is_a_dependency_error(admin: TestClient, settings: Settings) -> None:
    down = settings.model_copy(update={"serving_url": f"http://127.0.0.1:{free_port()}/v1"})
    with pytest.raises(DependencyUnavailable) as caught:
        admin.portal.call(ServingEmbedder(down).embed, ["x"])  # type: ignore[union-attr]
    assert caught.value.name == "serving"


def test_serving_down_leaves_the_version_queued(admin: TestClient, settings: Settings) -> None:
    response = upload(admin, "s.txt", unique("Serving down test."), "text/plain")
    version_id = response.json()["latest"]["id"]
    down = settings.model_copy(
        update={
            "embedding_backend": EmbeddingBackend.serving,
            "serving_url": f"http://127.0.0.1:{free_port()}/v1",
        }
    )
    assert admin.portal.call(worker.process_one, down, version_id) == "retry"  # type: ignore[union-attr]
    latest = admin.get(f"{API}/{response.json()['id']}").json()["latest"]
    assert latest["status"] == "queued" and "down" in latest["error"]
    assert process(admin, settings, version_id) == "ready"


def test_ingest_path_and_reindex(admin: TestClient, settings: Settings, tmp_path: Any) -> None:
    (tmp_path / "a.md").write_bytes(unique("# Folder\n\nIngested from a folder: ward A."))
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.txt").write_bytes(unique("Ingested from a sub-folder: ward B."))
    (tmp_path / "c.pdf").write_bytes(b"not a pdf")
    (tmp_path / "ignored.png").write_bytes(kbdocs.PNG)
    results = admin.portal.call(  # type: ignore[union-attr]
        lambda: worker.ingest_path(settings, tmp_path, admin.username, process=True)  # type: ignore[attr-defined]
    )
    outcomes = {r.path.rsplit("/", 1)[-1]: r.outcome for r in results}
    assert outcomes == {"a.md": "ready", "b.txt": "ready", "c.pdf": "refused"}
    again = admin.portal.call(  # type: ignore[union-attr]
        lambda: worker.ingest_path(settings, tmp_path / "a.md", "clinchat-admin")
    )
    assert [r.outcome for r in again] == ["duplicate"]
    with psycopg.connect(conninfo(settings)) as conn:
        searchable = conn.execute("SELECT count(*) FROM chunks WHERE searchable").fetchone()[0]  # type: ignore[index]
    assert admin.portal.call(worker.reindex, settings) == searchable  # type: ignore[union-attr]


@pytest.fixture(autouse=True)
def _no_leftover_overrides() -> Iterator[None]:
    yield
    from app.main import app

    app.dependency_overrides.clear()


def test_the_worker_process_stops_on_sigterm(admin: TestClient, settings: Settings) -> None:
    """``python -m app.kb.worker`` reads its settings from the environment and exits cleanly."""
    import os
    import signal
    import subprocess
    import sys

    from tests.services.stack import settings_env

    response = upload(admin, "proc.txt", unique("Processed by the worker process."), "text/plain")
    env = {**os.environ, "OMP_NUM_THREADS": "1", **settings_env(settings)}
    process = subprocess.Popen(  # noqa: S603
        [sys.executable, "-m", "app.kb.worker"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        status = ""
        while time.monotonic() < deadline and status != "ready":
            status = admin.get(f"{API}/{response.json()['id']}").json()["latest"]["status"]
            time.sleep(0.3)
        assert status == "ready"
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
    assert process.returncode == 0, output
    assert "ingest worker stopped" in output
    assert "Processed by the worker" not in output  # logs carry ids and counts only
