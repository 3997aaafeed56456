"""Knowledge bases per department (app/kb/collections.py), end to end.

Three collections: hospital-wide (everyone), the ICU and the pharmacy (each read by
its staff group, managed by its librarians' group). Everything real: PostgreSQL with
pgvector (a database of this module's own), Redis, the embeddings, the serving, and
OpenLDAP for the directory's groups (tests/services/ldap.py: icu1 is ICU staff,
icuadmin1 the ICU's librarian). The pharmacy's groups exist only in the settings:
its people sign in through the conftest's ``login(groups=...)``.

What a department's clinician must never see of another's documents: a search hit,
a citation, a passage through /api/v1/chunks/{id}, a row in the library.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient
from ldap3 import MODIFY_ADD, MODIFY_DELETE
from pydantic import ValidationError

from app.auth.principal import Principal
from app.db import conninfo
from app.kb import worker
from app.kb.collections import Access, access_for
from app.models import Role
from app.settings import CollectionSpec, Settings
from tests.app.data.kbdb import count_rows, isolated_settings
from tests.app.test_auth import sign_in
from tests.app.test_chat import ask, events, new_conversation
from tests.app.test_lifecycle import directory, new_client, users_command  # noqa: F401
from tests.services.postgres import PrivatePostgres

DOCUMENTS = "/api/v1/documents"
PHARMACY_STAFF = "cn=pharmacy-staff,ou=groups,dc=hospital,dc=test"
PHARMACY_LIBRARIANS = "CN=Pharmacy-Librarians, OU=Groups, DC=hospital, DC=test"  # any case

# Synthetic policies with invented drug and device names, so a hit can only come
# from the document that holds them.
ICU = """# Velmarine arterial line care

## Flushing
Flush every Velmarine arterial line with the heparinised saline bag at 3 ml an hour,
and change the transducer set every 96 hours on the intensive care unit.
"""
PHARMACY = """# Quorridine compounding

## Preparation
Quorridine oral suspension is compounded in the pharmacy aseptic suite only, from
the 250 mg capsules, and labelled with a seven-day expiry.
"""
HOSPITAL = """# Brightwell hand rub

## Hand hygiene
Use Brightwell alcohol hand rub before and after every patient contact, on every
ward of the hospital, for at least twenty seconds.
"""


@pytest.fixture(scope="module")
def departments(base_settings: Settings, postgres: PrivatePostgres, ldap_server: Any) -> Settings:
    collections = {
        "hospital-wide": CollectionSpec(name="Hospital-wide", readers=["*"]),
        "icu": CollectionSpec(
            name="Intensive care",
            readers=[ldap_server.group_dn("icu-staff")],
            managers=[ldap_server.group_dn("icu-librarians")],
        ),
        "pharmacy": CollectionSpec(
            name="Pharmacy", readers=[PHARMACY_STAFF], managers=[PHARMACY_LIBRARIANS]
        ),
    }
    return isolated_settings(base_settings, postgres, max_answer_tokens=16, collections=collections)


@pytest.fixture
def settings(departments: Settings) -> Settings:
    """Overrides conftest's: this module's clients use the module's own database."""
    return departments


def principal(*roles: Role, groups: tuple[str, ...] = (), break_glass: bool = False) -> Principal:
    return Principal(
        user_id=uuid.uuid4(), username="p", display_name="p", roles=frozenset(roles),
        session_id="s", csrf_token="c", groups=frozenset(groups),
        break_glass_until=9e18 if break_glass else 0.0,
    )  # fmt: skip


def upload(client: TestClient, name: str, text: str, collection: str | None = None) -> Any:
    data = {"collection": collection} if collection else {}
    files = {"file": (name, f"{text}\nRef {uuid.uuid4().hex}\n".encode(), "text/markdown")}
    return client.post(DOCUMENTS, files=files, data=data)


def ingest(client: TestClient, settings: Settings, name: str, text: str, **kw: Any) -> dict:
    response = upload(client, name, text, **kw)
    assert response.status_code == 201, response.text
    document = response.json()
    outcome = client.portal.call(  # type: ignore[union-attr]
        worker.process_one, settings, document["latest"]["id"]
    )
    assert outcome == "ready"
    return dict(document)


def chunk_of(settings: Settings, document_id: str) -> int:
    with psycopg.connect(conninfo(settings)) as conn:
        row = conn.execute(
            "SELECT id FROM chunks WHERE document_id = %s AND searchable ORDER BY id LIMIT 1",
            (document_id,),
        ).fetchone()
    assert row is not None
    return int(row[0])


def refusals(settings: Settings, username: str) -> list[dict]:
    with psycopg.connect(conninfo(settings)) as conn:
        rows = conn.execute(
            "SELECT detail FROM audit_events WHERE actor = %s AND action = 'document.read'"
            " AND outcome = 'failure' ORDER BY id",
            (username,),
        ).fetchall()
    return [row[0] for row in rows]


# -- the settings and who reads what ------------------------------------------------------------


@pytest.mark.parametrize(
    ("update", "message"),
    [
        ({"collections": {"ICU ward": CollectionSpec(name="x")}}, "not a collection id"),
        ({"default_collection": "nowhere"}, "is not in CLINCHAT_COLLECTIONS"),
        (
            {"collections": {"hospital-wide": CollectionSpec(name="x", managers=["*"])}},
            "among its managers",
        ),
    ],
)
def test_collection_settings_are_checked_at_start(
    base_settings: Settings, update: dict, message: str
) -> None:
    values = base_settings.model_dump() | update
    with pytest.raises(ValidationError, match=message):
        Settings(**values)


def test_who_reads_and_manages_which_collection(departments: Settings, ldap_server: Any) -> None:
    icu_staff, icu_librarians = (ldap_server.group_dn(g) for g in ("icu-staff", "icu-librarians"))
    cases = {
        "admin": (principal(Role.admin), Access(None, None)),
        "auditor": (principal(Role.auditor), Access(None, frozenset())),
        "break-glass": (principal(Role.clinician, break_glass=True), Access(None, frozenset())),
        "no department": (
            principal(Role.clinician),
            Access(frozenset({"hospital-wide"}), frozenset()),
        ),
        "ICU staff (DN in another case)": (
            principal(Role.clinician, groups=(icu_staff.upper(),)),
            Access(frozenset({"hospital-wide", "icu"}), frozenset()),
        ),
        "pharmacy librarian": (
            principal(Role.clinician, groups=(PHARMACY_LIBRARIANS.lower().replace(", ", ","),)),
            Access(frozenset({"hospital-wide", "pharmacy"}), frozenset({"pharmacy"})),
        ),
        "ICU librarian and pharmacy staff": (
            principal(Role.clinician, groups=(icu_librarians, PHARMACY_STAFF)),
            Access(frozenset({"hospital-wide", "icu", "pharmacy"}), frozenset({"icu"})),
        ),
    }
    for name, (who, expected) in cases.items():
        assert access_for(departments, who) == expected, name


# -- the library: each collection's managers manage only it ------------------------------------


@pytest.fixture(scope="module")
def library(departments: Settings) -> dict[str, str]:
    """Filled in by the first test below: document ids by collection."""
    return {}


@pytest.fixture
def people(
    login: Callable[..., TestClient], ldap_server: Any, settings: Settings
) -> dict[str, TestClient]:
    """Everyone signed in before the first request (see tests/app/test_documents.done_with)."""
    return {
        "admin": login(Role.admin),
        "auditor": login(Role.auditor),
        "icu librarian": login(Role.clinician, groups=[ldap_server.group_dn("icu-librarians")]),
        "pharmacy librarian": login(Role.clinician, groups=[PHARMACY_LIBRARIANS]),
        "icu clinician": login(Role.clinician, groups=[ldap_server.group_dn("icu-staff")]),
        "pharmacy clinician": login(Role.clinician, groups=[PHARMACY_STAFF]),
        "clinician": login(Role.clinician),
    }


def test_managers_upload_into_and_list_only_their_collections(
    people: dict[str, TestClient], settings: Settings, library: dict[str, str]
) -> None:
    icu_librarian, admin = people["icu librarian"], people["admin"]
    before = count_rows(settings)
    refused = upload(icu_librarian, "quorridine.md", PHARMACY, collection="pharmacy")
    assert refused.status_code == 422, refused.text
    assert refused.json() == {
        "detail": "you do not manage the collection 'pharmacy'", "code": "collection"
    }  # fmt: skip
    assert upload(admin, "x.md", HOSPITAL, collection="maternity").json()["code"] == "collection"
    assert count_rows(settings) == before  # nothing half-stored

    # a manager's only collection is the default; an admin's is the default collection
    library["icu"] = ingest(icu_librarian, settings, "velmarine.md", ICU)["id"]
    library["pharmacy"] = ingest(people["pharmacy librarian"], settings, "q.md", PHARMACY)["id"]
    library["hospital-wide"] = ingest(admin, settings, "brightwell.md", HOSPITAL)["id"]

    def listed(who: str) -> dict[str, str]:
        response = people[who].get(DOCUMENTS)
        assert response.status_code == 200, response.text
        return {d["collection"]: d["id"] for d in response.json()}

    assert listed("icu librarian") == {"icu": library["icu"]}
    assert listed("pharmacy librarian") == {"pharmacy": library["pharmacy"]}
    assert listed("admin") == listed("auditor") == library
    assert people["clinician"].get(DOCUMENTS).status_code == 403

    # another collection's document is "no such document" to every act of a manager
    other = library["pharmacy"]
    files = {"file": ("q2.md", PHARMACY.encode() + b"v2", "text/markdown")}
    for method, path, kwargs in (
        ("GET", f"{DOCUMENTS}/{other}", {}),
        ("POST", f"{DOCUMENTS}/{other}/versions", {"files": files}),
        ("POST", f"{DOCUMENTS}/{other}/retire", {}),
        ("POST", f"{DOCUMENTS}/{other}/purge", {"json": {"reason": "duplicate"}}),
    ):
        response = icu_librarian.request(method, path, **kwargs)
        assert response.status_code == 404, (method, path, response.text)
    assert listed("admin") == library  # still there, still active
    assert {d["status"] for d in admin.get(DOCUMENTS).json()} == {"active"}

    # the library page: the manager's rows and collections only; the nav shows it
    page = icu_librarian.get("/documents")
    assert page.status_code == 200
    assert f'data-document-id="{library["icu"]}"' in page.text
    assert library["pharmacy"] not in page.text and library["hospital-wide"] not in page.text
    assert '<option value="icu">Intensive care</option>' in page.text
    assert 'value="pharmacy"' not in page.text
    assert 'href="/documents"' in icu_librarian.get("/").text
    assert people["clinician"].get("/documents").status_code == 403


def test_search_citations_and_passages_keep_to_the_readable_collections(
    people: dict[str, TestClient], settings: Settings, library: dict[str, str]
) -> None:
    assert set(library) == {"icu", "pharmacy", "hospital-wide"}, "runs after the test above"
    icu, pharmacy = people["icu clinician"], people["pharmacy clinician"]
    question = "How is Quorridine oral suspension compounded in the pharmacy?"

    def cited(client: TestClient, text: str) -> set[str]:
        response = ask(client, new_conversation(client), text)
        assert response.status_code == 200, response.text
        sources = events(response)[0][1]["sources"]
        return {source["document_id"] for source in sources}

    assert library["pharmacy"] in cited(pharmacy, question)
    assert library["pharmacy"] not in cited(icu, question)
    assert library["icu"] in cited(icu, "How often is a Velmarine arterial line flushed?")
    # hospital-wide is everyone's
    assert library["hospital-wide"] in cited(pharmacy, "Brightwell hand rub for how long?")

    # a passage of another department's document: 404 (ids are sequential), audited
    chunk = chunk_of(settings, library["pharmacy"])
    assert pharmacy.get(f"/api/v1/chunks/{chunk}").status_code == 200
    assert icu.get(f"/api/v1/chunks/{chunk}").status_code == 404
    assert refusals(settings, icu.username) == [  # type: ignore[attr-defined]
        {"chunk_id": chunk, "reason": "collection"}
    ]
    assert people["auditor"].get(f"/api/v1/chunks/{chunk}").status_code == 200


def test_moving_a_document_changes_who_reads_it_at_once(
    people: dict[str, TestClient], settings: Settings, library: dict[str, str]
) -> None:
    assert set(library) == {"icu", "pharmacy", "hospital-wide"}, "runs after the tests above"
    document, chunk = library["icu"], chunk_of(settings, library["icu"])
    path = f"{DOCUMENTS}/{document}/collection"
    icu_librarian, admin = people["icu librarian"], people["admin"]
    # a manager moves only between collections they manage
    refused = icu_librarian.post(path, json={"collection": "pharmacy"})
    assert refused.status_code == 422 and refused.json()["code"] == "collection", refused.text
    other = f"{DOCUMENTS}/{library['pharmacy']}/collection"
    assert icu_librarian.post(other, json={"collection": "icu"}).status_code == 404
    assert people["icu clinician"].get(f"/api/v1/chunks/{chunk}").status_code == 200

    # the admin's library offers the move; the admin moves it to the pharmacy
    assert f'action="/documents/{document}/collection"' in admin.get("/documents").text
    moved = admin.post(path, json={"collection": "pharmacy"})
    assert moved.status_code == 200 and moved.json()["collection"] == "pharmacy", moved.text
    with psycopg.connect(conninfo(settings)) as conn:
        left = conn.execute(
            "SELECT count(*) FROM chunks WHERE document_id = %s AND collection <> 'pharmacy'",
            (document,),
        ).fetchone()
        event = conn.execute(
            "SELECT detail FROM audit_events WHERE action = 'document.move' AND entity_id = %s",
            (document,),
        ).fetchone()
    assert left == (0,) and event == ({"from": "icu", "to": "pharmacy"},)
    assert people["icu clinician"].get(f"/api/v1/chunks/{chunk}").status_code == 404
    assert people["pharmacy clinician"].get(f"/api/v1/chunks/{chunk}").status_code == 200
    assert admin.post(path, json={"collection": "pharmacy"}).status_code == 200  # no change
    assert admin.post(path, json={"collection": "nowhere"}).status_code == 422


# -- the directory's groups decide, at sign-in and at every sync --------------------------------


def test_directory_groups_decide_at_sign_in_and_at_every_sync(
    new_client: Callable[[], TestClient],  # noqa: F811 (test_lifecycle's fixture)
    settings: Settings,
    ldap_server: Any,
) -> None:
    icu_staff = ldap_server.group_dn("icu-staff")
    client = new_client()
    sign_in(client, "icu1", ldap_server.users["icu1"])
    with psycopg.connect(conninfo(settings)) as conn:
        stored = conn.execute(
            "SELECT directory_groups FROM users WHERE username = 'icu1'"
        ).fetchone()
    assert stored is not None and icu_staff in stored[0]
    # the ICU librarian, signed in through the directory, reaches the library
    librarian = new_client()
    sign_in(librarian, "icuadmin1", ldap_server.users["icuadmin1"])
    assert librarian.get(DOCUMENTS).status_code == 200
    assert client.get(DOCUMENTS).status_code == 403

    dn, librarians = ldap_server.user_dn("icu1"), ldap_server.group_dn("icu-librarians")
    with directory(ldap_server) as conn:  # becomes one of the ICU's librarians
        assert conn.modify(librarians, {"member": [(MODIFY_ADD, [dn])]}), conn.result
    try:
        users_command(settings, "sync", "icu1")
        assert client.get("/api/v1/auth/me").status_code == 401  # signed out
        with psycopg.connect(conninfo(settings)) as conn:
            row = conn.execute(
                "SELECT e.detail FROM audit_events e JOIN users u ON e.entity_id = u.id::text"
                " WHERE u.username = 'icu1' AND e.action = 'user.groups_changed'"
            ).fetchone()
        assert row is not None
        assert row[0] == {"from": [icu_staff], "to": sorted([icu_staff, librarians])}
        again = new_client()
        sign_in(again, "icu1", ldap_server.users["icu1"])
        assert again.get(DOCUMENTS).status_code == 200  # the next session has the new grant
    finally:
        with directory(ldap_server) as conn:
            conn.modify(librarians, {"member": [(MODIFY_DELETE, [dn])]})
