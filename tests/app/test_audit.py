"""The audit trail: FHIR R4 export, syslog (RFC 5424 over UDP), the auditor's page, and
the database's refusal to let the app edit history.

Everything real: PostgreSQL (a database of this module's own, so the chain here is
this module's), Redis sessions, a UDP socket on loopback as the syslog collector.
Actors are synthetic names made unique per test, so filters isolate each test's events.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import ssl
import threading
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

from app.audit import fhir, syslog
from app.audit.chain import Actor, record
from app.db import conninfo, dispose_all, sessionmaker
from app.models import Role
from app.settings import Settings
from tests.app.data.kbdb import isolated_settings
from tests.services import pki as test_pki
from tests.services.postgres import PrivatePostgres

API = "/api/v1/audit"


@pytest.fixture(scope="module")
def audit_settings(base_settings: Settings, postgres: PrivatePostgres) -> Settings:
    return isolated_settings(base_settings, postgres)


@pytest.fixture
def settings(audit_settings: Settings) -> Settings:
    """Overrides conftest's: this module's clients use the module's own database."""
    return audit_settings


@pytest.fixture
def auditor(login: Callable[..., TestClient]) -> TestClient:
    return login(Role.auditor)


def unique(prefix: str = "aud") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def write(settings: Settings, *events: dict[str, Any], commit: bool = True) -> list[int]:
    """Record ``events`` (keyword arguments of ``record``) in one transaction."""

    async def go() -> list[int]:
        try:
            async with sessionmaker(settings)() as session:
                ids = []
                for spec in events:
                    spec = dict(spec)
                    action, actor = spec.pop("action"), spec.pop("actor")
                    ids.append((await record(session, settings, action, actor, **spec)).id)
                if commit:
                    await session.commit()
                else:
                    await session.rollback()
                return ids
        finally:
            await dispose_all()

    return asyncio.run(go())


def db_rows(settings: Settings, where: str, *params: Any) -> list[dict[str, Any]]:
    with psycopg.connect(conninfo(settings)) as conn:
        cursor = conn.execute(f"SELECT * FROM audit_events WHERE {where} ORDER BY id", params)
        names = [c.name for c in cursor.description or []]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def entries(bundle: dict[str, Any]) -> list[dict[str, Any]]:
    return [entry["resource"] for entry in bundle.get("entry", [])]


def extension(resource: dict[str, Any]) -> dict[str, str]:
    [chain] = [e for e in resource["extension"] if e["url"] == fhir.CHAIN_EXTENSION]
    return {e["url"]: e["valueString"] for e in chain["extension"]}


def codes(concepts: list[dict[str, Any]]) -> set[tuple[str, str]]:
    return {(c["system"], c["code"]) for c in concepts}


# -- FHIR export --------------------------------------------------------------------------------


def test_events_export_as_fhir_audit_events(settings: Settings, auditor: TestClient) -> None:
    who = unique("clin")
    clinician = Actor(who, ("clinician",), source_ip="192.0.2.10")
    conversation = uuid.uuid4()
    write(
        settings,
        {"action": "auth.login", "actor": clinician, "entity_type": "user", "entity_id": "u1"},
        {"action": "conversation.read", "actor": clinician, "entity_type": "conversation",
         "entity_id": conversation, "detail": {"messages": 3, "own": True}},
        {"action": "conversation.read", "actor": clinician, "entity_type": "conversation",
         "detail": {"listed": 2}},
        {"action": "break_glass.start", "actor": Actor(who, ("clinician",), break_glass=True),
         "entity_type": "user", "entity_id": "u1",
         "detail": {"minutes": 30, "reason_length": 30, "reason": "covering ward 7 overnight"}},
        {"action": "conversation.delete", "actor": Actor(who, ("clinician",), break_glass=True),
         "entity_type": "conversation", "entity_id": conversation, "detail": {"messages": 3}},
        {"action": "auth.login", "actor": Actor(who), "outcome": "failure",
         "detail": {"reason": "bad_credentials"}},
    )  # fmt: skip
    response = auditor.get(API, params={"actor": who})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/fhir+json")
    bundle = response.json()
    assert (bundle["resourceType"], bundle["type"], bundle["total"]) == ("Bundle", "searchset", 6)
    assert [link["relation"] for link in bundle["link"]] == ["self"]
    login, read, search, glass, delete, failed = entries(bundle)
    stored = db_rows(settings, "actor = %s", who)
    for resource, row in zip(entries(bundle), stored, strict=True):
        assert resource["resourceType"] == "AuditEvent" and resource["id"] == str(row["id"])
        assert extension(resource) == {"hash": row["hash"], "previousHash": row["prev_hash"]}
        assert resource["recorded"].endswith("Z")
        assert datetime.fromisoformat(resource["recorded"]) == row["ts"]
        assert resource["source"]["observer"] == {"display": "ClinChat"}
        [agent] = resource["agent"]
        assert agent["requestor"] is True
        assert agent["who"]["identifier"]["value"] == who and agent["who"]["display"] == who
    for entry, row in zip(bundle["entry"], stored, strict=True):
        assert entry["fullUrl"].endswith(f"{API}/{row['id']}")

    assert login["type"] == {"system": fhir.DCM, "code": "110114", "display": "User Authentication"}
    assert (fhir.DCM, "110122") in codes(login["subtype"])
    assert (login["action"], login["outcome"]) == ("E", "0")
    assert login["agent"][0]["network"] == {"address": "192.0.2.10", "type": "2"}
    assert login["agent"][0]["role"][0]["coding"][0]["code"] == "clinician"

    assert read["type"]["code"] == "110110" and read["action"] == "R"
    assert codes(read["subtype"]) >= {
        (fhir.RESTFUL, "read"),
        (fhir.ACTION_SYSTEM, "conversation.read"),
    }
    [entity] = read["entity"]
    assert entity["what"]["identifier"]["value"] == str(conversation)
    assert entity["what"]["identifier"]["system"].endswith("/sid/conversation")
    assert {d["type"]: d["valueString"] for d in entity["detail"]} == {
        "messages": "3",
        "own": "true",
    }
    assert "purposeOfEvent" not in read

    assert search["action"] == "E" and (fhir.RESTFUL, "search-type") in codes(search["subtype"])

    assert glass["type"]["code"] == "110113"
    assert (fhir.DCM, "110127") in codes(glass["subtype"])
    [purpose] = glass["purposeOfEvent"]
    assert purpose["coding"] == [fhir.BREAK_THE_GLASS]
    assert purpose["text"] == "covering ward 7 overnight"
    assert "reason" not in {d["type"] for d in glass["entity"][0]["detail"]}

    assert delete["action"] == "D" and (fhir.RESTFUL, "delete") in codes(delete["subtype"])
    assert delete["purposeOfEvent"][0]["coding"][0]["code"] == "BTG"

    assert (failed["outcome"], failed["outcomeDesc"]) == ("4", "bad_credentials")
    assert "entity" in failed and "what" not in failed["entity"][0]


def test_single_event_and_missing_ones(settings: Settings, auditor: TestClient) -> None:
    document = {"entity_type": "document", "entity_id": uuid.uuid4()}
    [event_id] = write(settings, {"action": "document.read", "actor": Actor(unique()), **document})
    response = auditor.get(f"{API}/{event_id}")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/fhir+json")
    resource = response.json()
    assert (resource["resourceType"], resource["id"], resource["action"]) == (
        "AuditEvent", str(event_id), "R"
    )  # fmt: skip
    assert auditor.get(f"{API}/999999999").status_code == 404
    assert auditor.get(f"{API}/not-a-number").status_code == 422
    assert auditor.get(f"{API}/0").status_code == 422


def test_filters_and_keyset_pages(settings: Settings, auditor: TestClient) -> None:
    who = unique()
    doc = str(uuid.uuid4())
    specs = [
        {"action": "conversation.create", "actor": Actor(who), "entity_type": "conversation",
         "entity_id": uuid.uuid4()},
        {"action": "conversation.read", "actor": Actor(who), "entity_type": "conversation",
         "entity_id": uuid.uuid4()},
        {"action": "document.read", "actor": Actor(who), "entity_type": "document",
         "entity_id": doc},
        {"action": "auth.login", "actor": Actor(who, break_glass=True)},
    ] * 2  # fmt: skip
    specs.append({"action": "auth.logout", "actor": Actor(who)})
    ids = write(settings, *specs)

    # pages of 3, oldest first, following `next` until there is none
    seen: list[int] = []
    url: str | None = f"{API}?actor={who}&limit=3"
    while url:
        bundle = auditor.get(url).json()
        assert bundle["total"] == 9
        page = [int(r["id"]) for r in entries(bundle)]
        assert 1 <= len(page) <= 3
        seen += page
        links = {link["relation"]: link["url"] for link in bundle["link"]}
        url = links.get("next")
        if url:
            assert f"actor={who}" in url and "limit=3" in url and f"after={page[-1]}" in url
    assert seen == ids

    def found(**params: Any) -> list[int]:
        response = auditor.get(API, params={"actor": who, **params})
        assert response.status_code == 200, response.text
        return [int(r["id"]) for r in entries(response.json())]

    assert found(action="conversation.read") == [ids[1], ids[5]]
    assert found(action="conversation.*") == [ids[0], ids[1], ids[4], ids[5]]
    assert found(entity_type="document", entity_id=doc) == [ids[2], ids[6]]
    assert found(break_glass="true") == [ids[3], ids[7]]
    assert found(break_glass="false") == [i for n, i in enumerate(ids) if n not in (3, 7)]
    assert found(after=ids[6]) == [ids[7], ids[8]]
    [row] = db_rows(settings, "id = %s", ids[4])
    later = (row["ts"] + timedelta(hours=1)).isoformat()
    assert found(since=row["ts"].isoformat(), until=later) == ids[4:]
    assert found(until=row["ts"].isoformat()) == ids[:4]  # until is exclusive
    assert found(since="2099-01-01T00:00:00") == []


@pytest.mark.parametrize(
    "params",
    [
        {"limit": "0"},
        {"limit": "501"},
        {"limit": "many"},
        {"after": "-1"},
        {"since": "yesterday"},
        {"until": "2026-13-45T00:00:00"},
        {"since": "2026-11-23T00:00:00Z", "until": "2026-11-22T00:00:00Z"},
        {"break_glass": "perhaps"},
        {"action": "DROP TABLE"},
        {"action": "auth.login.more"},
        {"entity_type": "x" * 33},
        {"actor": "a\x00b"},
        {"actor": "x" * 257},
        {"colour": "blue"},
    ],
    ids=lambda p: ",".join(p),
)
def test_bad_filters_give_422(auditor: TestClient, params: dict[str, str]) -> None:
    response = auditor.get(API, params=params)
    assert response.status_code == 422, response.text


def test_reading_the_trail_is_audited_without_filter_values(
    settings: Settings, auditor: TestClient
) -> None:
    who = unique("patient-like")
    auditor.get(API, params={"actor": who, "action": "auth.*", "limit": 5})
    [event] = db_rows(settings, "action = 'audit.read' AND actor = %s", auditor.username)  # type: ignore[attr-defined]
    assert event["actor_roles"] == ["auditor"]
    assert event["detail"] == {"filters": ["action", "actor"], "after": 0, "returned": 0}
    assert who not in json.dumps(event["detail"], default=str)


def test_only_auditors_read_the_trail(login: Callable[..., TestClient], client: TestClient) -> None:
    assert client.get(API).status_code == 401
    for role in (Role.clinician, Role.admin):
        assert login(role).get(API).status_code == 403


def test_actions_without_a_rule_map_by_their_verb() -> None:
    from app.models import AuditEvent

    def mapped(action: str, entity_id: str = "7") -> dict[str, Any]:
        row = AuditEvent(
            id=1, ts=datetime.now(UTC), action=action, outcome="odd", actor="a", actor_roles=[],
            entity_type="widget", entity_id=entity_id, break_glass=False, source_ip="", detail={},
            prev_hash="0", hash="1",
        )  # fmt: skip
        return fhir.audit_event(row)

    for action, letter, interaction in (
        ("widget.delete", "D", "delete"), ("widget.create", "C", "create"),
        ("widget.read", "R", "read"), ("widget.frobnicate", "E", None),
    ):  # fmt: skip
        resource = mapped(action)
        assert resource["type"] == fhir.REST_OPERATION
        assert resource["action"] == letter and resource["outcome"] == "8"
        rest = [c["code"] for c in resource["subtype"] if c["system"] == fhir.RESTFUL]
        assert rest == ([interaction] if interaction else [])
    assert mapped("widget.read", entity_id="")["action"] == "E"  # a read of no one thing


# -- the database refuses to edit history -------------------------------------------------------


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE audit_events SET detail = '{}' WHERE id = (SELECT max(id) FROM audit_events)",
        "DELETE FROM audit_events WHERE id = (SELECT max(id) FROM audit_events)",
        "TRUNCATE audit_events",
    ],
    ids=["update", "delete", "truncate"],
)
def test_the_app_role_cannot_change_audit_rows(settings: Settings, statement: str) -> None:
    write(settings, {"action": "auth.logout", "actor": Actor(unique())})
    with psycopg.connect(conninfo(settings)) as conn:
        assert conn.info.parameter_status("session_authorization") == settings.db_user
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="permission denied"):
            conn.execute(statement)


# -- syslog -------------------------------------------------------------------------------------

LINE = re.compile(
    r"^<(?P<pri>\d{1,3})>1 (?P<ts>\S+) (?P<host>\S+) (?P<app>\S+) (?P<procid>\S+) (?P<msgid>\S+)"
    r" \[(?P<sdid>\S+)(?P<params>(?: [a-z_]+=\"(?:[^\"\\\]]|\\[\"\\\]])*\")*)\] (?P<msg>.*)$"
)
PARAM = re.compile(r' ([a-z_]+)="((?:[^"\\\]]|\\["\\\]])*)"')


@pytest.fixture
def collector() -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(5)
    yield sock
    sock.close()


def received(sock: socket.socket, wait_s: float = 5) -> list[str]:
    """Every datagram until none comes for a moment (the first may take ``wait_s``)."""
    lines = []
    sock.settimeout(wait_s)
    try:
        while True:
            lines.append(sock.recv(65535).decode())
            sock.settimeout(0.5)
    except TimeoutError:
        return lines


def parse(line: str) -> dict[str, Any]:
    match = LINE.match(line)
    assert match, line
    fields: dict[str, Any] = match.groupdict()
    fields["params"] = {k: re.sub(r"\\(.)", r"\1", v) for k, v in PARAM.findall(fields["params"])}
    return fields


def with_syslog(settings: Settings, sock: socket.socket) -> Settings:
    host, port = sock.getsockname()
    return settings.model_copy(update={"syslog_address": f"{host}:{port}"})


def test_committed_events_go_to_syslog_as_rfc5424(
    settings: Settings, collector: socket.socket
) -> None:
    settings = with_syslog(settings, collector)
    who = unique("clin")
    ids = write(
        settings,
        {"action": "conversation.read", "actor": Actor(who, ("clinician",)),
         "entity_type": "conversation", "entity_id": uuid.uuid4(), "detail": {"messages": 2}},
        {"action": "break_glass.start", "actor": Actor(who, ("clinician",), break_glass=True),
         "detail": {"reason": "synthetic reason for the test"}},
        {"action": "auth.login", "actor": Actor(who), "outcome": "failure"},
    )  # fmt: skip
    lines = received(collector)
    assert len(lines) == 3
    rows = db_rows(settings, "actor = %s", who)
    for line, row, pri in zip(lines, rows, (110, 109, 108), strict=True):
        fields = parse(line)
        assert int(fields["pri"]) == pri  # facility 13 (log audit): info, notice, warning
        assert datetime.fromisoformat(fields["ts"]) == row["ts"]
        assert fields["ts"].endswith("Z")
        assert fields["host"] == socket.gethostname()[:255]
        assert fields["app"] == "clinchat" and fields["procid"].isdigit()
        assert fields["msgid"] == row["action"]
        assert fields["sdid"] == "clinchat@32473"
        params = fields["params"]
        assert params["id"] == str(row["id"]) and params["hash"] == row["hash"]
        assert params["prev_hash"] == row["prev_hash"]
        assert (params["actor"], params["outcome"]) == (who, row["outcome"])
        assert params["break_glass"] == ("true" if row["break_glass"] else "false")
        assert fields["msg"] == f"{row['action']} {row['outcome']}"
    assert [int(parse(line)["params"]["id"]) for line in lines] == ids
    # ids, hashes and names only: no detail, no reason
    assert "synthetic reason" not in "".join(lines) and "messages" not in "".join(lines)


def test_rolled_back_events_are_never_sent(settings: Settings, collector: socket.socket) -> None:
    settings = with_syslog(settings, collector)
    who = unique()
    write(settings, {"action": "auth.logout", "actor": Actor(who)}, commit=False)
    assert received(collector, wait_s=1) == []

    async def savepoint_then_close() -> None:
        try:
            async with sessionmaker(settings)() as session:
                savepoint = await session.begin_nested()
                await record(session, settings, "auth.lockout", Actor(who))
                await savepoint.rollback()
                await record(session, settings, "auth.login", Actor(who))
                await session.commit()
                await record(session, settings, "auth.logout", Actor(who))
                # closed without a commit: never written, never sent
        finally:
            await dispose_all()

    asyncio.run(savepoint_then_close())
    [line] = received(collector)
    assert parse(line)["msgid"] == "auth.login"
    assert [r["action"] for r in db_rows(settings, "actor = %s", who)] == ["auth.login"]


class TlsCollector:
    """A syslog collector over TLS (RFC 5425) on loopback: it shows ``pki``'s server
    certificate and splits what it reads by the octet-counting frames."""

    def __init__(self, pki: test_pki.TestPki) -> None:
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.context.load_cert_chain(pki.server_cert, pki.server_key)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.2)
        self.lines: list[str] = []
        self.handshake_failures = 0
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.listener.getsockname()[1]}"

    def _serve(self) -> None:
        while not self.stopped.is_set():
            try:
                raw, _ = self.listener.accept()
            except TimeoutError:
                continue
            try:
                with self.context.wrap_socket(raw, server_side=True) as conn:
                    data = b""
                    while chunk := conn.recv(65536):
                        data += chunk
            except (ssl.SSLError, OSError):
                self.handshake_failures += 1
                continue
            while data:
                length, _, rest = data.partition(b" ")
                self.lines.append(rest[: int(length)].decode())
                data = rest[int(length) :]

    def close(self) -> None:
        self.stopped.set()
        self.thread.join(5)
        self.listener.close()


@pytest.fixture
def tls_collector(pki: test_pki.TestPki) -> Iterator[TlsCollector]:
    collector = TlsCollector(pki)
    yield collector
    collector.close()


def test_events_and_signed_checkpoints_go_to_syslog_over_tls(
    settings: Settings, tls_collector: TlsCollector, pki: test_pki.TestPki
) -> None:
    """RFC 5425 with the collector's certificate checked: what the deployment sends.
    The checkpoint's line alone is enough to check Vault's signature, off the host."""
    from app.audit.chain import audit_public_keys, checkpoint_signed
    from app.audit.checkpoint import write_checkpoint

    settings = settings.model_copy(
        update={
            "syslog_address": tls_collector.address,
            "syslog_transport": "tls",
            "syslog_ca_cert": str(pki.ca_cert),
            "audit_checkpoint_interval_s": 1,
        }
    )
    who = unique()
    ids = write(settings, {"action": "auth.login", "actor": Actor(who)})

    async def checkpoint() -> Any:
        try:
            return await write_checkpoint(settings)
        finally:
            await dispose_all()

    event = asyncio.run(checkpoint())
    syslog.flush()
    for _ in range(50):
        if len(tls_collector.lines) >= 2:
            break
        threading.Event().wait(0.1)
    login, signed = (parse(line) for line in tls_collector.lines)
    assert login["params"]["id"] == str(ids[0]) and login["params"]["actor"] == who
    params = signed["params"]
    assert signed["msgid"] == "audit.checkpoint" and params["id"] == str(event.id)
    detail = {"covers_id": int(params["covers_id"]), "covers_hash": params["prev_hash"],
              "ts": params["checkpoint_ts"], "signature": params["signature"]}  # fmt: skip
    keys = audit_public_keys(settings)
    assert keys and checkpoint_signed(keys, detail)
    assert not checkpoint_signed(keys, {**detail, "covers_id": detail["covers_id"] - 1})


def test_a_collector_with_a_certificate_of_another_ca_gets_nothing(
    settings: Settings,
    pki: test_pki.TestPki,
    tmp_path_factory: pytest.TempPathFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The same collector, with a certificate the configured CA did not sign: the
    handshake fails and not one line is sent (nor is the write refused)."""
    stranger = TlsCollector(test_pki.make_pki(tmp_path_factory.mktemp("other-ca")))
    try:
        settings = settings.model_copy(
            update={"syslog_address": stranger.address, "syslog_transport": "tls",
                    "syslog_ca_cert": str(pki.ca_cert)}
        )  # fmt: skip
        ids = write(settings, {"action": "auth.logout", "actor": Actor(unique())})
        syslog.flush()
        assert db_rows(settings, "id = %s", ids[0])
        for _ in range(50):
            if stranger.handshake_failures:
                break
            threading.Event().wait(0.1)
        assert stranger.handshake_failures == 1 and stranger.lines == []
    finally:
        stranger.close()
    warnings = [r.getMessage() for r in caplog.records if r.name == "app.audit.syslog"]
    assert warnings == ["syslog: 1 audit events not sent (SSLCertVerificationError)"]


def test_an_unreachable_collector_never_fails_the_write(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    who = unique()
    for address in ("127.0.0.1:9", "not-an-address"):
        ids = write(
            settings.model_copy(update={"syslog_address": address}),
            {"action": "auth.logout", "actor": Actor(who)},
        )
        syslog.flush()  # wait for the sender thread
        assert db_rows(settings, "id = %s", ids[0])
    warnings = [r.getMessage() for r in caplog.records if r.name == "app.audit.syslog"]
    assert warnings == ["syslog: 1 audit events not sent (ValueError)"]


def test_structured_data_values_are_escaped() -> None:
    assert syslog.escape_param('a"b\\c]d') == 'a\\"b\\\\c\\]d'
    assert syslog.escape_param("two\nlines") == "two?lines"
    assert syslog.parse_address("[::1]:514") == ("::1", 514)
    for bad in ("host", "host:0", "host:99999", ":514"):
        with pytest.raises(ValueError):
            syslog.parse_address(bad)


# -- the auditor's page -------------------------------------------------------------------------


def no_inline_code(html: str) -> None:
    assert " style=" not in html and "<style" not in html
    assert not re.search(r"<script(?![^>]*\ssrc=)[^>]*>", html), "inline script"


def test_auditor_page_lists_filters_and_pages(settings: Settings, auditor: TestClient) -> None:
    who = unique("clin")
    read = {"action": "conversation.read", "actor": Actor(who, ("clinician",)),
            "entity_type": "conversation", "entity_id": uuid.uuid4()}  # fmt: skip
    glass = {"action": "break_glass.start", "actor": Actor(who, ("clinician",), break_glass=True)}
    write(settings, *[read] * 101, glass)
    page = auditor.get("/audit", params={"actor": who}, headers={"accept": "text/html"})
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    html = page.text
    no_inline_code(html)
    assert html.count("<td>conversation.read</td>") == 99  # newest first: 100 rows a page
    assert '<span class="badge danger">break-glass</span>' in html
    assert 'action="/audit/verify"' in html
    last_hash = db_rows(settings, "actor = %s", who)[-1]["hash"]
    assert last_hash[:12] in html
    [next_url] = re.findall(r'href="(/audit\?[^"]+)" rel="next"', html)
    older = auditor.get(next_url.replace("&amp;", "&")).text
    assert older.count("<td>conversation.read</td>") == 2 and 'rel="next"' not in older

    only = auditor.get("/audit", params={"actor": who, "break_glass": "true"}).text
    assert only.count("<td>break_glass.start</td>") == 1
    assert "<td>conversation.read</td>" not in only
    since = (datetime.now(UTC) + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M")
    assert "No events match." in auditor.get("/audit", params={"since": since}).text


def test_auditor_page_refuses_bad_filters_without_echoing_them(auditor: TestClient) -> None:
    for params in ({"since": "not-a-time-ALPHA"}, {"action": "Bad Action ALPHA"},
                   {"before": "ALPHA"}):  # fmt: skip
        page = auditor.get("/audit", params=params)
        assert page.status_code == 422
        [error] = re.findall(r'<p class="error" role="alert">([^<]+)</p>', page.text)
        assert error and "ALPHA" not in error


def test_verify_button_shows_the_verdict(settings: Settings, auditor: TestClient) -> None:
    csrf = auditor.headers.pop("X-CSRF-Token")
    assert auditor.post("/audit/verify").status_code == 403  # no CSRF token
    page = auditor.post("/audit/verify", data={"csrf_token": csrf})
    assert page.status_code == 200
    no_inline_code(page.text)
    [verdict] = re.findall(r'<p class="verdict[^"]*"[^>]*>([^<]+)</p>', page.text)
    assert verdict.startswith("Chain intact:")
    [event] = db_rows(settings, "action = 'audit.verify' AND actor = %s", auditor.username)  # type: ignore[attr-defined]
    assert event["outcome"] == "success" and event["detail"]["ok"] is True


def test_verify_names_a_changed_row(
    settings: Settings, auditor: TestClient, postgres: PrivatePostgres
) -> None:
    [target, _] = write(settings, {"action": "auth.logout", "actor": Actor(unique())},
                        {"action": "auth.logout", "actor": Actor(unique())})  # fmt: skip
    [original] = db_rows(settings, "id = %s", target)
    trigger = "audit_events_append_only"

    def as_superuser(sql: str) -> None:
        postgres.psql(
            f"ALTER TABLE audit_events DISABLE TRIGGER {trigger}; {sql}; "
            f"ALTER TABLE audit_events ENABLE TRIGGER {trigger}",
            database=settings.db_name,
        )

    as_superuser(f"""UPDATE audit_events SET detail = '{{"edited": 1}}' WHERE id = {target}""")
    try:
        page = auditor.post("/audit/verify").text
        [verdict] = re.findall(r'<p class="verdict error"[^>]*>([^<]+)</p>', page)
        assert verdict.startswith(f"Chain broken at event {target}: hash does not match")
    finally:
        as_superuser(
            f"UPDATE audit_events SET detail = '{json.dumps(original['detail'])}' "
            f"WHERE id = {target}"
        )
    assert "Chain intact" in auditor.post("/audit/verify").text


def test_clinicians_get_403_on_the_page(login: Callable[..., TestClient]) -> None:
    clinician = login(Role.clinician)
    assert clinician.get("/audit", headers={"accept": "text/html"}).status_code == 403
    assert clinician.post("/audit/verify").status_code == 403
