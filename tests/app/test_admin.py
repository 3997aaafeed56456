"""``clinchat-admin`` as an operator runs it: a subprocess, settings in CLINCHAT_* variables.

Each command runs against the real services (PostgreSQL in a database of this
module's own, Redis, the serving's embeddings). The audit chain of that database is
tampered with as the PostgreSQL superuser (the append-only trigger disabled for the
edit), and each tamper is undone, so the order of the tests does not matter.
"""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from enum import Enum
from pathlib import Path
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from app.db import conninfo
from app.settings import EmbeddingBackend, Settings
from tests.app.data.kbdb import isolated_settings
from tests.services.postgres import PrivatePostgres, free_port

REPO = Path(__file__).resolve().parents[2]
TRIGGER = "audit_events_append_only"
TIMEOUT_S = 120


@pytest.fixture(scope="module")
def admin_settings(base_settings: Settings, postgres: PrivatePostgres) -> Settings:
    # embeddings from the serving: no model loaded in every subprocess
    return isolated_settings(base_settings, postgres, embedding_backend=EmbeddingBackend.serving)


@pytest.fixture
def settings(admin_settings: Settings) -> Settings:
    """Overrides conftest's: the app under test uses the module's own database."""
    return admin_settings


def environment(settings: Settings, **changes: str) -> dict[str, str]:
    """The process environment that gives ``clinchat-admin`` exactly ``settings``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLINCHAT_")}
    env.pop("CREDENTIALS_DIRECTORY", None)
    for name, value in settings.model_dump().items():
        if value is None:
            continue
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        elif isinstance(value, dict | list):
            value = json.dumps(value)
        elif isinstance(value, bool):
            value = "true" if value else "false"
        elif isinstance(value, Enum):
            value = value.value
        env[f"CLINCHAT_{name.upper()}"] = str(value)
    env.update({f"CLINCHAT_{k.upper()}": v for k, v in changes.items()})
    env.update(OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    return env


def admin(
    settings: Settings, *args: str, stdin: str | None = None, **changes: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app.admin", *args],
        cwd=REPO,
        env=environment(settings, **changes),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    """An expected failure: one line on stderr, no traceback."""
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("clinchat-admin: ")
    return lines[0].removeprefix("clinchat-admin: ")


def query(settings: Settings, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(conninfo(settings)) as conn:
        return conn.execute(sql, params).fetchall()


def as_superuser(postgres: PrivatePostgres, settings: Settings, sql: str) -> None:
    """Run ``sql`` with the append-only trigger off, as only a superuser could."""
    postgres.psql(
        f"ALTER TABLE audit_events DISABLE TRIGGER {TRIGGER}; {sql}; "
        f"ALTER TABLE audit_events ENABLE TRIGGER {TRIGGER}",
        database=settings.db_name,
    )


def verified(settings: Settings) -> tuple[int, int, str]:
    """``audit verify`` that passes: (events, last id, last hash)."""
    result = admin(settings, "audit", "verify")
    assert result.returncode == 0, result.stderr
    first = result.stdout.splitlines()[0]
    match = re.fullmatch(r"ok: (\d+) events, last id (\d+) hash ([0-9a-f]{64})", first)
    assert match, result.stdout
    return int(match[1]), int(match[2]), match[3]


@pytest.fixture(scope="module")
def some_events(admin_settings: Settings) -> list[int]:
    """The chain's ids, at least three of them: there is a middle one (user.create events)."""
    settings = admin_settings
    for _ in range(3):
        result = admin(
            settings, "create-user", f"filler-{uuid.uuid4().hex[:8]}", "--role", "auditor",
            "--password-file", "-", stdin="synthetic-filler-pass-phrase\n",
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
    return [row[0] for row in query(settings, "SELECT id FROM audit_events ORDER BY id")]


# -- migrate -------------------------------------------------------------------------------------


def test_migrate_is_idempotent(settings: Settings) -> None:
    for _ in range(2):
        result = admin(settings, "migrate")
        assert result.returncode == 0, result.stderr
        assert re.fullmatch(r"ok: database at revision \w+\n", result.stdout)
    tables = {r[0] for r in query(settings, "SELECT tablename FROM pg_tables")}
    assert {"audit_events", "users", "documents", "chunks"} <= tables


# -- create-user ---------------------------------------------------------------------------------


def test_create_user_then_sign_in(settings: Settings, client: TestClient, tmp_path: Path) -> None:
    username = f"breakglass-{uuid.uuid4().hex[:6]}"
    password_file = tmp_path / "password"
    password_file.write_text("correct horse synthetic staple\n")
    result = admin(
        settings, "create-user", username, "--role", "admin", "--role", "auditor",
        "--password-file", str(password_file), "--totp",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"ok: local user {username} (admin, auditor) ")
    assert "correct horse" not in result.stdout + result.stderr
    # --totp: the second factor enrolled at creation, its secret printed once
    secret = re.search(r"^secret: ([A-Z2-7]{32})$", result.stdout, re.MULTILINE)
    assert secret, result.stdout
    assert f"otpauth://totp/ClinChat:{username}?secret={secret[1]}&issuer=ClinChat" in (
        result.stdout
    )
    from app.auth.totp import totp

    code = totp(base64.b32decode(secret[1]), time.time())

    response = client.post(
        "/api/v1/auth/login",
        json={"username": username, "password": "correct horse synthetic staple", "totp": code},
    )
    assert response.status_code == 200, response.text
    assert response.json()["roles"] == ["admin", "auditor"]
    [(actor, detail)] = query(
        settings,
        "SELECT actor, detail FROM audit_events WHERE action = 'user.create' AND entity_id = %s",
        str(query(settings, "SELECT id FROM users WHERE username = %s", username)[0][0]),
    )
    assert actor == "clinchat-admin" and detail == {
        "source": "local",
        "roles": ["admin", "auditor"],
    }


def test_the_cli_sends_its_events_to_syslog_before_it_exits(settings: Settings) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as collector:
        collector.bind(("127.0.0.1", 0))
        collector.settimeout(10)
        username = f"syslogged-{uuid.uuid4().hex[:6]}"
        result = admin(
            settings, "create-user", username, "--role", "admin", "--password-file", "-",
            stdin="synthetic-long-pass-phrase\n",
            syslog_address=f"127.0.0.1:{collector.getsockname()[1]}",
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        line = collector.recv(65535).decode()
    [(event_id, event_hash)] = query(
        settings, "SELECT id, hash FROM audit_events WHERE action = 'user.create' ORDER BY id DESC"
        " LIMIT 1",
    )  # fmt: skip
    assert re.match(r"<\d+>1 \S+ \S+ clinchat \d+ user\.create \[clinchat@32473 ", line), line
    assert f'id="{event_id}" hash="{event_hash}"' in line
    assert "synthetic-long-pass-phrase" not in line


@pytest.mark.parametrize(
    ("args", "stdin", "message"),
    [
        (["--role", "admin"], "short\n", "the password needs at least 12 characters"),
        (["--role", "admin"], "NAME-is-in-this-password\n", "must not contain the username"),
    ],
    ids=["short", "contains-username"],
)
def test_create_user_policy_errors_exit_2(
    settings: Settings, args: list[str], stdin: str, message: str
) -> None:
    username = f"name-{uuid.uuid4().hex[:6]}"
    stdin = stdin.replace("NAME", username)
    result = admin(settings, "create-user", username, *args, "--password-file", "-", stdin=stdin)
    assert result.returncode == 2
    assert message in one_line_error(result)
    assert query(settings, "SELECT count(*) FROM users WHERE username = %s", username) == [(0,)]


def test_create_user_refuses_a_taken_name_and_an_unknown_role(settings: Settings) -> None:
    username = f"taken-{uuid.uuid4().hex[:6]}"
    password = "synthetic-long-pass-phrase\n"
    base = ["create-user", username, "--password-file", "-"]
    assert admin(settings, *base, "--role", "admin", stdin=password).returncode == 0
    taken = admin(settings, *base, "--role", "admin", stdin=password)
    assert taken.returncode == 2 and one_line_error(taken) == "that username is taken"
    unknown = admin(settings, *base, "--role", "superuser", stdin=password)
    assert unknown.returncode == 2 and "invalid choice: 'superuser'" in unknown.stderr


# -- ingest, worker, reindex ---------------------------------------------------------------------


def guideline(name: str) -> str:
    token = uuid.uuid4().hex[:8]
    return (
        f"# {name} guideline {token}\n\n## Dosing\n\n"
        f"Give synthetic drug {token} at 5 mg per kg every 8 hours. Reduce the dose in renal "
        "impairment and review levels after the third dose.\n\n## Monitoring\n\n"
        "Check the full blood count weekly while on treatment.\n"
    )


def version_states(settings: Settings, document_ids: list[str]) -> list[str]:
    rows = query(
        settings,
        "SELECT status FROM document_versions WHERE document_id = ANY(%s::uuid[])",
        document_ids,
    )
    return sorted(r[0] for r in rows)


def ingested(result: subprocess.CompletedProcess[str]) -> dict[str, tuple[str, str]]:
    """file name -> (outcome, document id) from ``ingest``'s lines."""
    found = {}
    for line in result.stdout.splitlines()[:-1]:  # the last line is the summary
        outcome, path, document, *_ = line.split(" ", 3)
        found[Path(path).name] = (outcome, document)
    return found


def test_ingest_now_then_reindex(settings: Settings, tmp_path: Path) -> None:
    (tmp_path / "a.md").write_text(guideline("Alpha"))
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.md").write_text(guideline("Beta"))
    (tmp_path / "notes.bin").write_bytes(b"\x00\x01 not a supported type")
    result = admin(settings, "ingest", str(tmp_path), "--now")
    assert result.returncode == 0, result.stderr
    files = ingested(result)
    assert set(files) == {"a.md", "b.md"}  # other types are not picked up
    assert {outcome for outcome, _ in files.values()} == {"ready"}
    assert result.stdout.splitlines()[-1] == "ingested 2 of 2 files"
    assert version_states(settings, [doc for _, doc in files.values()]) == ["ready", "ready"]

    again = admin(settings, "ingest", str(tmp_path / "a.md"))
    assert again.returncode == 0
    assert ingested(again)["a.md"][0] == "duplicate"

    searchable = query(settings, "SELECT count(*) FROM chunks WHERE searchable")[0][0]
    reindexed = admin(settings, "reindex")
    assert reindexed.returncode == 0, reindexed.stderr
    assert reindexed.stdout == f"ok: {searchable} chunks re-embedded\n"


def test_ingest_reports_refused_files_and_a_missing_folder(
    settings: Settings, tmp_path: Path
) -> None:
    (tmp_path / "empty.md").write_text("")
    result = admin(settings, "ingest", str(tmp_path))
    assert result.returncode == 1
    assert ingested(result)["empty.md"][0] == "refused"
    assert result.stdout.splitlines()[-1] == "ingested 0 of 1 files"
    missing = admin(settings, "ingest", str(tmp_path / "nowhere"))
    assert missing.returncode == 2
    assert one_line_error(missing).endswith("is neither a file nor a folder")


def test_worker_ingests_the_queue_and_stops_on_sigterm(settings: Settings, tmp_path: Path) -> None:
    texts = {name: guideline(name) for name in ("Gamma", "Delta")}
    for name, text in texts.items():
        (tmp_path / f"{name}.md").write_text(text)
    queued = admin(settings, "ingest", str(tmp_path))
    assert queued.returncode == 0, queued.stderr
    documents = [doc for outcome, doc in ingested(queued).values() if outcome == "queued"]
    assert len(documents) == 2

    worker = subprocess.Popen(  # noqa: S603
        [sys.executable, "-m", "app.admin", "worker"],
        cwd=REPO,
        env=environment(settings),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + TIMEOUT_S
        while version_states(settings, documents) != ["ready", "ready"]:
            assert worker.poll() is None, worker.communicate()
            assert time.monotonic() < deadline, version_states(settings, documents)
            time.sleep(0.5)
        worker.send_signal(signal.SIGTERM)
        out, err = worker.communicate(timeout=30)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    assert worker.returncode == 0, err
    messages = [json.loads(line)["msg"] for line in err.splitlines() if line.startswith("{")]
    assert "ingest worker started" in messages and "ingest worker stopped" in messages
    for text in texts.values():  # no document text in the worker's logs
        assert text.split("\n")[0][2:] not in err + out


# -- audit verify --------------------------------------------------------------------------------


def test_audit_verify_reports_the_end_of_the_chain(
    settings: Settings, some_events: list[int]
) -> None:
    count, last_id, last_hash = verified(settings)
    [(db_count, db_last, db_hash)] = query(
        settings,
        "SELECT count(*), max(id), (SELECT hash FROM audit_events ORDER BY id DESC LIMIT 1)"
        " FROM audit_events",
    )
    assert (count, last_id, last_hash) == (db_count, db_last, db_hash)


def test_audit_checkpoint_then_verify_reports_it_and_its_age(
    settings: Settings, some_events: list[int]
) -> None:
    """The checkpoint's line says what is anchored; --max-checkpoint-age turns a late
    checkpoint (the newest rows removed, or the worker stopped) into a failure."""
    signed = admin(settings, "audit", "checkpoint", AUDIT_CHECKPOINT_INTERVAL_S="2")
    assert signed.returncode == 0, signed.stderr
    assert re.fullmatch(r"ok: checkpoint (\d+) signs event (\d+)\n", signed.stdout)
    result = admin(settings, "audit", "verify", AUDIT_CHECKPOINT_INTERVAL_S="2")
    assert result.returncode == 0, result.stderr
    checkpoints = result.stdout.splitlines()[1]
    assert re.fullmatch(
        r"checkpoints: \d+ \(signatures checked\), last id \d+ at \S+, 0 events after it",
        checkpoints,
    ), result.stdout
    time.sleep(1.5)
    late = admin(settings, "audit", "verify", "--max-checkpoint-age", "1")
    assert late.returncode == 1
    assert "rows may have been removed from the end" in one_line_error(late)


def test_audit_verify_names_a_changed_row(
    settings: Settings, postgres: PrivatePostgres, some_events: list[int]
) -> None:
    target = some_events[len(some_events) // 2]
    [(original,)] = query(settings, "SELECT detail FROM audit_events WHERE id = %s", target)
    as_superuser(
        postgres, settings,
        f"""UPDATE audit_events SET detail = '{{"roles": ["admin"]}}' WHERE id = {target}""",
    )  # fmt: skip
    try:
        result = admin(settings, "audit", "verify")
        assert result.returncode == 1
        error = one_line_error(result)
        assert error.startswith(f"broken: event {target}: hash does not match the row's content")
        assert f"last intact id {some_events[some_events.index(target) - 1]}" in error
    finally:
        as_superuser(
            postgres, settings,
            f"UPDATE audit_events SET detail = '{json.dumps(original)}' WHERE id = {target}",
        )  # fmt: skip
    verified(settings)


def test_audit_verify_detects_a_deleted_middle_row(
    settings: Settings, postgres: PrivatePostgres, some_events: list[int]
) -> None:
    target = some_events[len(some_events) // 2]
    following = some_events[some_events.index(target) + 1]
    saved = f"audit_saved_{uuid.uuid4().hex[:8]}"
    as_superuser(
        postgres, settings,
        f"CREATE TABLE {saved} AS SELECT * FROM audit_events WHERE id = {target}; "
        f"DELETE FROM audit_events WHERE id = {target}",
    )  # fmt: skip
    try:
        result = admin(settings, "audit", "verify")
        assert result.returncode == 1
        error = one_line_error(result)
        assert error.startswith(f"broken: event {following}: prev_hash does not match")
    finally:
        postgres.psql(
            f"INSERT INTO audit_events SELECT * FROM {saved}; DROP TABLE {saved}",
            database=settings.db_name,
        )
    verified(settings)


def test_a_truncated_tail_verifies_but_shows_an_earlier_end(
    settings: Settings, postgres: PrivatePostgres, some_events: list[int]
) -> None:
    """The documented limit: removing the newest rows is seen only by comparing the end."""
    _, last_id, last_hash = verified(settings)
    saved = f"audit_saved_{uuid.uuid4().hex[:8]}"
    as_superuser(
        postgres, settings,
        f"CREATE TABLE {saved} AS SELECT * FROM audit_events WHERE id = {last_id}; "
        f"DELETE FROM audit_events WHERE id = {last_id}",
    )  # fmt: skip
    try:
        _, shorter_id, shorter_hash = verified(settings)
        assert shorter_id < last_id and shorter_hash != last_hash
    finally:
        postgres.psql(
            f"INSERT INTO audit_events SELECT * FROM {saved}; DROP TABLE {saved}",
            database=settings.db_name,
        )
    assert verified(settings)[1:] == (last_id, last_hash)


# -- failures ------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", [["audit", "verify"], ["migrate"], ["reindex"]])
def test_database_down_exits_3_naming_it(settings: Settings, command: list[str]) -> None:
    result = admin(settings, *command, db_port=str(free_port()))
    assert result.returncode == 3
    assert one_line_error(result).startswith("database is unavailable")


def test_redis_down_exits_3_naming_it(settings: Settings, tmp_path: Path) -> None:
    (tmp_path / "a.md").write_text(guideline("Epsilon"))
    result = admin(
        settings, "ingest", str(tmp_path), redis_url=f"rediss://127.0.0.1:{free_port()}/0"
    )
    assert result.returncode == 3
    assert one_line_error(result).startswith("redis is unavailable")


def test_invalid_settings_exit_2_without_their_values(settings: Settings) -> None:
    result = admin(settings, "audit", "verify", db_port="not-a-port-SECRETISH")
    assert result.returncode == 2
    error = one_line_error(result)
    assert error == "invalid settings: db_port" and "SECRETISH" not in result.stderr
    production = admin(settings, "audit", "verify", environment="production")
    assert production.returncode == 2
    assert "production" in one_line_error(production)


@pytest.fixture
def console_script() -> Iterator[Path]:
    script = Path(sys.executable).parent / "clinchat-admin"
    if not script.exists():
        pytest.skip("clinchat-admin is not installed in this environment")
    yield script


def test_the_console_script_runs_the_same_main(settings: Settings, console_script: Path) -> None:
    result = subprocess.run(  # noqa: S603
        [str(console_script), "audit", "verify"],
        env=environment(settings),
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ok: ")
