"""Encrypted values bound to their rows (app/sealed.py): migration 0005 binds the values
written before it, ``clinchat-admin rewrap`` re-encrypts everything after a key rotation
(the columns added since, feedback's of 0006, included).

Real PostgreSQL (a database per test, migrated to the revision each needs) and the real
OpenBao transit key; the admin command runs as a subprocess, as operators run it.
"""

from __future__ import annotations

import uuid

import psycopg
import pytest

from app import migrate
from app.crypto import LEGACY_MAGIC, MAGIC, DecryptionError, cipher_for
from app.db import conninfo
from app.sealed import (
    BEFORE_ROW_BINDING,
    COLUMNS,
    CONVERSATION_TITLE,
    DOCUMENT_FILE,
    FEEDBACK_COMMENT,
    FEEDBACK_REVIEW_NOTE,
    FEEDBACK_SNAPSHOT,
    MESSAGE_CONTENT,
    TOTP_SECRET,
    SealedColumn,
    key_version,
)
from app.settings import Settings
from tests.app.data.kbdb import isolated_settings
from tests.app.test_admin import admin, query
from tests.services.openbao import TRANSIT_KEY, PrivateOpenBao
from tests.services.postgres import PrivatePostgres

# what each (synthetic) row holds, by column
PLAIN = {
    TOTP_SECRET.name: b"\x01" * 20,
    CONVERSATION_TITLE.name: b"Synthetic title 7f3a",
    MESSAGE_CONTENT.name: b"Synthetic question about zorbexine 7f3a",
    DOCUMENT_FILE.name: b"# Synthetic policy 7f3a\n\nZorbexine 40 mg.\n",
    FEEDBACK_COMMENT.name: b"Synthetic comment 7f3a",
    FEEDBACK_SNAPSHOT.name: b'{"question": "Synthetic question 7f3a", "answer": "Synthetic"}',
    FEEDBACK_REVIEW_NOTE.name: b"Synthetic review note 7f3a",
}
FEEDBACK_COLUMNS = (FEEDBACK_COMMENT, FEEDBACK_SNAPSHOT, FEEDBACK_REVIEW_NOTE)


def legacy_blob(settings: Settings, column: SealedColumn, row_id: uuid.UUID, plain: bytes) -> bytes:
    """What 0004's code wrote: bound to the purpose only, magic CE1 (the magic is not
    authenticated, so this is byte for byte an old blob)."""
    blob = cipher_for(settings).encrypt(plain, column.legacy_aad(row_id))
    return LEGACY_MAGIC + blob[len(MAGIC) :]


def present(ids: dict[str, uuid.UUID]) -> tuple[SealedColumn, ...]:
    """The columns ``fill`` wrote a value of: feedback's only with a feedback row."""
    return COLUMNS if "feedback" in ids else BEFORE_ROW_BINDING


def fill(settings: Settings, legacy: bool = False) -> dict[str, uuid.UUID]:
    """One user (with a TOTP secret), conversation, message, document and version, and
    (unless ``legacy``) a feedback on the message with a comment and a review note, their
    values encrypted as the code of today writes them, or as 0004's did (``legacy``: no
    feedback table yet)."""
    names = ["user", "conversation", "message", "document", "version"]
    ids = {name: uuid.uuid4() for name in names + ([] if legacy else ["feedback"])}
    rows = bound(ids)
    sealed = {
        column.name: legacy_blob(settings, column, rows[column.name][0], PLAIN[column.name])
        if legacy
        else cipher_for(settings).encrypt(PLAIN[column.name], rows[column.name][1])
        for column in present(ids)
    }
    with psycopg.connect(conninfo(settings)) as conn:
        conn.execute(
            "INSERT INTO users (id, username, display_name, source, roles, disabled,"
            " totp_secret_enc) VALUES (%s, %s, '', 'local', '{admin}', false, %s)",
            (ids["user"], f"sealed-{ids['user'].hex[:8]}", sealed[TOTP_SECRET.name]),
        )
        conn.execute(
            "INSERT INTO conversations (id, user_id, title_enc) VALUES (%s, %s, %s)",
            (ids["conversation"], ids["user"], sealed[CONVERSATION_TITLE.name]),
        )
        conn.execute(
            "INSERT INTO messages (id, conversation_id, role, content_enc, citations, grounded,"
            " model) VALUES (%s, %s, 'user', %s, '[]', true, '')",
            (ids["message"], ids["conversation"], sealed[MESSAGE_CONTENT.name]),
        )
        conn.execute(
            "INSERT INTO documents (id, title, status) VALUES (%s, 'Synthetic policy', 'active')",
            (ids["document"],),
        )
        conn.execute(
            "INSERT INTO document_versions (id, document_id, version, filename, media_type,"
            " size_bytes, sha256, content_enc, status, progress, phi_types, chunk_count)"
            " VALUES (%s, %s, 1, 'p.md', 'text/markdown', 1, %s, %s, 'ready', 100, '{}', 0)",
            (ids["version"], ids["document"], uuid.uuid4().hex * 2, sealed[DOCUMENT_FILE.name]),
        )
        if "feedback" in ids:
            conn.execute(
                "INSERT INTO feedback (id, message_id, user_id, rating, category, comment_enc,"
                " snapshot_enc, status, reviewed_by, reviewed_at, review_note_enc)"
                " VALUES (%s, %s, %s, 'down', 'unsafe', %s, %s, 'reviewed', %s, now(), %s)",
                (ids["feedback"], ids["message"], ids["user"], sealed[FEEDBACK_COMMENT.name],
                 sealed[FEEDBACK_SNAPSHOT.name], ids["user"], sealed[FEEDBACK_REVIEW_NOTE.name]),
            )  # fmt: skip
    return ids


def stored(settings: Settings, ids: dict[str, uuid.UUID]) -> dict[str, bytes]:
    """Each value of ``fill``'s rows as it is in the database now, by column."""
    rows = bound(ids)
    with psycopg.connect(conninfo(settings)) as conn:
        return {
            column.name: conn.execute(
                f"SELECT {column.column} FROM {column.table} WHERE id = %s",
                (rows[column.name][0],),
            ).fetchone()[0]  # type: ignore[index]
            for column in present(ids)
        }


def bound(ids: dict[str, uuid.UUID]) -> dict[str, tuple[uuid.UUID, bytes]]:
    """The row id and the associated data each value of ``fill``'s rows is bound to."""
    owners = {
        TOTP_SECRET.name: (ids["user"], ids["user"]),
        CONVERSATION_TITLE.name: (ids["conversation"], ids["user"]),
        MESSAGE_CONTENT.name: (ids["message"], ids["conversation"], ids["user"]),
        DOCUMENT_FILE.name: (ids["version"], ids["document"]),
    }
    if "feedback" in ids:  # bound to the feedback row and the clinician who gave it
        owners |= {column.name: (ids["feedback"], ids["user"]) for column in FEEDBACK_COLUMNS}
    by_name = {column.name: column for column in COLUMNS}
    return {name: (row[0], by_name[name].aad(*row)) for name, row in owners.items()}


# -- the binding ---------------------------------------------------------------------------------


def test_the_associated_data_names_column_row_and_every_owner() -> None:
    row, user, conversation = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    aad = MESSAGE_CONTENT.aad(row, conversation, user)
    assert aad.split(b"\x00") == [
        b"clinchat-row-v1", b"messages.content_enc", str(row).encode(),
        str(conversation).encode(), str(user).encode(),
    ]  # fmt: skip
    assert aad != MESSAGE_CONTENT.aad(row, user, conversation)
    assert CONVERSATION_TITLE.aad(row, user) != TOTP_SECRET.aad(row, user)
    with pytest.raises(ValueError, match="bound to conversation, user"):
        MESSAGE_CONTENT.aad(row, conversation)


def test_a_legacy_blob_is_refused_outside_the_migration(settings: Settings) -> None:
    row = uuid.uuid4()
    old = legacy_blob(settings, CONVERSATION_TITLE, row, b"title")
    with pytest.raises(DecryptionError, match="run clinchat-admin migrate"):
        cipher_for(settings).decrypt(old, CONVERSATION_TITLE.legacy_aad(row))
    assert cipher_for(settings).decrypt_legacy(old, b"conversation-title") == b"title"


# -- migration 0005 ------------------------------------------------------------------------------


def head(settings: Settings) -> str:
    from alembic.script import ScriptDirectory

    return str(ScriptDirectory.from_config(migrate.alembic_config(settings)).get_current_head())


@pytest.fixture
def at_0004(base_settings: Settings, postgres: PrivatePostgres) -> Settings:
    return isolated_settings(base_settings, postgres, revision="0004")


def test_the_migration_binds_every_older_value_to_its_row(at_0004: Settings) -> None:
    settings = at_0004
    # two sets of rows as 0004 wrote them, one with a message that no longer decrypts
    ids, broken = fill(settings, legacy=True), fill(settings, legacy=True)
    damaged = legacy_blob(settings, MESSAGE_CONTENT, broken["message"], b"x")[:-1] + b"\x00"
    with psycopg.connect(conninfo(settings)) as conn:
        conn.execute(
            "UPDATE messages SET content_enc = %s WHERE id = %s", (damaged, broken["message"])
        )

    result = admin(settings, "migrate")
    assert result.returncode == 0, result.stderr
    assert "row binding: messages.content_enc: 1 re-encrypted, 1 unreadable" in result.stdout
    assert "row binding: conversations.title_enc: 2 re-encrypted, 0 unreadable" in result.stdout
    assert f"ok: database at revision {head(settings)}" in result.stdout
    after = stored(settings, ids)
    for column in BEFORE_ROW_BINDING:
        blob = after[column.name]
        assert blob.startswith(MAGIC), column.name
        assert cipher_for(settings).decrypt(blob, bound(ids)[column.name][1]) == PLAIN[column.name]
    # the damaged one is left as it was (it was unreadable already)
    assert stored(settings, broken)[MESSAGE_CONTENT.name] == damaged
    # a second run has nothing to do
    again = admin(settings, "migrate")
    assert again.returncode == 0 and "row binding" not in again.stdout


def test_a_new_database_needs_no_keys_to_migrate(
    base_settings: Settings, postgres: PrivatePostgres
) -> None:
    # Vault at a closed port: the migration must not ask it for anything
    settings = isolated_settings(base_settings, postgres, revision="0004")
    closed = settings.model_copy(update={"vault_addr": "https://127.0.0.1:9"})
    migrate.upgrade(closed)
    assert query(closed, "SELECT count(*) FROM users") == [(0,)]


# -- rewrap after a key rotation -----------------------------------------------------------------


def newest_version(openbao: PrivateOpenBao) -> int:
    with openbao.client(openbao.root_token) as api:
        return int(api.get(f"/transit/keys/{TRANSIT_KEY}").json()["data"]["latest_version"])


def test_rewrap_moves_every_value_to_the_newest_key_version(
    base_settings: Settings, postgres: PrivatePostgres, openbao: PrivateOpenBao
) -> None:
    settings = isolated_settings(base_settings, postgres)
    ids = fill(settings)
    before = stored(settings, ids)
    old = {key_version(blob) for blob in before.values()}
    with openbao.client(openbao.root_token) as api:
        api.post(f"/transit/keys/{TRANSIT_KEY}/rotate").raise_for_status()
    try:
        newest = newest_version(openbao)
        assert old == {f"v{newest - 1}"}

        result = admin(settings, "rewrap")
        assert result.returncode == 0, result.stderr
        for column in COLUMNS:
            assert (
                f"ok: {column.name}: 1 re-encrypted, 0 unreadable, 0 changed meanwhile;"
                f" key versions before {{v{newest - 1}: 1}}, after {{v{newest}: 1}}"
            ) in result.stdout
        after = stored(settings, ids)
        # only the newest key version is needed now: retire the older ones
        with openbao.client(openbao.root_token) as api:
            api.post(
                f"/transit/keys/{TRANSIT_KEY}/config", json={"min_decryption_version": newest}
            ).raise_for_status()
        fresh = settings.model_copy()  # a new process's cipher: nothing cached
        for column in COLUMNS:
            assert key_version(after[column.name]) == f"v{newest}"
            assert (
                cipher_for(fresh).decrypt(after[column.name], bound(ids)[column.name][1])
                == (PLAIN[column.name])
            )
        with pytest.raises(DecryptionError):  # what the rewrap replaced is unreadable now
            cipher_for(fresh).decrypt(before[TOTP_SECRET.name], bound(ids)[TOTP_SECRET.name][1])
        # audited, with counts only
        ((detail,),) = query(
            settings, "SELECT detail FROM audit_events WHERE action = 'keys.rewrap'"
        )
        assert detail[MESSAGE_CONTENT.name] == {
            "rewrapped": 1, "unreadable": 0, "after": {f"v{newest}": 1}
        }  # fmt: skip
    finally:
        with openbao.client(openbao.root_token) as api:
            api.post(
                f"/transit/keys/{TRANSIT_KEY}/config", json={"min_decryption_version": 1}
            ).raise_for_status()


def test_rewrap_reports_a_value_that_does_not_decrypt_and_keeps_it(
    base_settings: Settings, postgres: PrivatePostgres
) -> None:
    settings = isolated_settings(base_settings, postgres)
    mine, theirs = fill(settings), fill(settings)
    # a title copied from another user's conversation
    with psycopg.connect(conninfo(settings)) as conn:
        conn.execute(
            "UPDATE conversations SET title_enc = (SELECT title_enc FROM conversations"
            " WHERE id = %s) WHERE id = %s", (theirs["conversation"], mine["conversation"]),
        )  # fmt: skip
    moved = stored(settings, mine)[CONVERSATION_TITLE.name]
    result = admin(settings, "rewrap")
    assert result.returncode == 1
    assert "ok: conversations.title_enc: 1 re-encrypted, 1 unreadable" in result.stdout
    assert "ok: messages.content_enc: 2 re-encrypted, 0 unreadable" in result.stdout
    assert "1 values do not decrypt" in result.stderr
    assert f"conversations.title_enc of row {mine['conversation']}" in result.stderr
    assert stored(settings, mine)[CONVERSATION_TITLE.name] == moved
    assert "Synthetic" not in result.stdout + result.stderr
