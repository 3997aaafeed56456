"""The encrypted columns, each value bound to its row, and re-encrypting them all.

Every ``*_enc`` column is envelope-encrypted (app/crypto.py) with associated data
that names the column, the row's id and the row's owners (``SealedColumn.aad``).
Whoever can write to the database can still copy a ciphertext, but a value copied
into another row, another column or another user's conversation no longer decrypts:
it reads as unreadable and the log says which column.

``rewrap`` decrypts and re-encrypts every value of a column with a fresh data key:
- ``clinchat-admin rewrap`` after the transit key is rotated, so that every value's
  data key is wrapped by the newest key version (then older versions can be retired:
  app/README.md, "Rotating the encryption key");
- migration 0005, which binds the values written before row binding (blob ``CE1``,
  associated data only the purpose) to their rows.

A row changed while it is re-encrypted (a conversation renamed) keeps the newer
value: the update is a compare-and-swap on the old ciphertext.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy import Connection, text

from app.crypto import LEGACY_MAGIC, Cipher, DecryptionError, wrapped_key

log = logging.getLogger(__name__)

AAD_VERSION = b"clinchat-row-v1"
BATCH = 200


@dataclass(frozen=True)
class SealedColumn:
    """One encrypted column: ``rows`` selects (id, owners..., blob), ordered by id."""

    table: str
    column: str
    owners: tuple[str, ...]  # what each owner is, for the docs and the log
    rows: str  # SQL with :after (the last id seen) and :limit
    legacy_aad: Callable[[uuid.UUID], bytes]  # what values before 0005 were bound to

    @property
    def name(self) -> str:
        return f"{self.table}.{self.column}"

    def aad(self, row_id: uuid.UUID, *owners: uuid.UUID) -> bytes:
        if len(owners) != len(self.owners):
            raise ValueError(f"{self.name} is bound to {', '.join(self.owners)}")
        parts = [AAD_VERSION, self.name.encode(), str(row_id).encode()]
        parts += [str(owner).encode() for owner in owners]
        return b"\x00".join(parts)


def _rows(select: str) -> str:
    return f"{select} AND t.id > :after ORDER BY t.id LIMIT :limit"


TOTP_SECRET = SealedColumn(
    "users", "totp_secret_enc", ("user",),
    _rows("SELECT t.id, t.id, t.totp_secret_enc FROM users t WHERE t.totp_secret_enc IS NOT NULL"),
    lambda row_id: b"totp:" + str(row_id).encode(),
)  # fmt: skip
CONVERSATION_TITLE = SealedColumn(
    "conversations", "title_enc", ("user",),
    _rows("SELECT t.id, t.user_id, t.title_enc FROM conversations t WHERE true"),
    lambda _: b"conversation-title",
)  # fmt: skip
# A message is bound to its conversation and to the conversation's owner: moving a
# conversation to another user breaks its title and every message in it.
MESSAGE_CONTENT = SealedColumn(
    "messages", "content_enc", ("conversation", "user"),
    _rows(
        "SELECT t.id, t.conversation_id, c.user_id, t.content_enc FROM messages t"
        " JOIN conversations c ON c.id = t.conversation_id WHERE true"
    ),
    lambda _: b"message",
)  # fmt: skip
DOCUMENT_FILE = SealedColumn(
    "document_versions", "content_enc", ("document",),
    _rows("SELECT t.id, t.document_id, t.content_enc FROM document_versions t WHERE true"),
    lambda _: b"document",
)  # fmt: skip

# Feedback on an answer (migration 0006) is bound to the clinician who gave it, not to
# the message: the message goes when its conversation is deleted, the feedback stays.
# Written only with row binding, so there are no older values: ``legacy_aad`` is never
# asked and binds to nothing.
FEEDBACK_COMMENT = SealedColumn(
    "feedback", "comment_enc", ("user",),
    _rows("SELECT t.id, t.user_id, t.comment_enc FROM feedback t WHERE t.comment_enc IS NOT NULL"),
    lambda _: b"",
)  # fmt: skip
FEEDBACK_SNAPSHOT = SealedColumn(
    "feedback", "snapshot_enc", ("user",),
    _rows("SELECT t.id, t.user_id, t.snapshot_enc FROM feedback t WHERE true"),
    lambda _: b"",
)  # fmt: skip
FEEDBACK_REVIEW_NOTE = SealedColumn(
    "feedback", "review_note_enc", ("user",),
    _rows(
        "SELECT t.id, t.user_id, t.review_note_enc FROM feedback t"
        " WHERE t.review_note_enc IS NOT NULL"
    ),
    lambda _: b"",
)  # fmt: skip

# The columns written before row binding: what migration 0005 re-encrypts. A fixed
# list, so that 0005 never looks for a table a later migration creates.
BEFORE_ROW_BINDING = (TOTP_SECRET, CONVERSATION_TITLE, MESSAGE_CONTENT, DOCUMENT_FILE)
# Every encrypted column: what ``clinchat-admin rewrap`` re-encrypts.
COLUMNS = (*BEFORE_ROW_BINDING, FEEDBACK_COMMENT, FEEDBACK_SNAPSHOT, FEEDBACK_REVIEW_NOTE)


# -- re-encrypting ---------------------------------------------------------------------


@dataclass
class Rewrapped:
    """What ``rewrap`` did to one column."""

    column: str
    rewrapped: int = 0
    changed_meanwhile: int = 0  # written by the app during the run: the newer value stays
    unreadable: int = 0  # does not decrypt: left as it is (the log names the row)
    key_versions_before: Counter[str] = field(default_factory=Counter)
    key_versions_after: Counter[str] = field(default_factory=Counter)  # of those re-encrypted

    def line(self) -> str:
        return (
            f"{self.column}: {self.rewrapped} re-encrypted, {self.unreadable} unreadable,"
            f" {self.changed_meanwhile} changed meanwhile; key versions before"
            f" {_versions(self.key_versions_before)}, after {_versions(self.key_versions_after)}"
        )


def _versions(counts: Counter[str]) -> str:
    return "{" + ", ".join(f"{v}: {n}" for v, n in sorted(counts.items())) + "}"


_VERSION = re.compile(rb"^vault:(v\d+):")


def key_version(blob: bytes) -> str:
    """Which key wrapped the blob's data key: ``v<n>`` of the transit key, ``local`` or ``?``."""
    try:
        wrapped = wrapped_key(blob)
    except DecryptionError:
        return "?"
    match = _VERSION.match(wrapped)
    return match.group(1).decode() if match else wrapped.split(b":", 1)[0].decode(errors="replace")


def rewrap(
    conn: Connection,
    cipher: Cipher,
    column: SealedColumn,
    legacy_only: bool = False,
    commit: Callable[[], None] | None = None,
) -> Rewrapped:
    """Re-encrypt every value of ``column`` (only those written before row binding with
    ``legacy_only``) with the cipher's current data key, bound to its row.

    ``commit`` is called after each batch (the admin command), or never (a migration,
    which is one transaction)."""
    done = Rewrapped(column.name)
    after = uuid.UUID(int=0)
    while True:
        batch = conn.execute(text(column.rows), {"after": after, "limit": BATCH}).all()
        if not batch:
            return done
        for row_id, *owners, blob in batch:
            blob = bytes(blob)
            if legacy_only and not blob.startswith(LEGACY_MAGIC):
                continue
            done.key_versions_before[key_version(blob)] += 1
            try:
                if blob.startswith(LEGACY_MAGIC):
                    plain = cipher.decrypt_legacy(blob, column.legacy_aad(row_id))
                else:
                    plain = cipher.decrypt(blob, column.aad(row_id, *owners))
            except DecryptionError as exc:
                log.error("rewrap: %s of row %s does not decrypt (%s)", column.name, row_id, exc)
                done.unreadable += 1
                continue
            new = cipher.encrypt(plain, column.aad(row_id, *owners))
            swapped = conn.execute(
                text(
                    f"UPDATE {column.table} SET {column.column} = :new"  # noqa: S608 - names are ours
                    f" WHERE id = :id AND {column.column} = :old"
                ),
                {"new": new, "id": row_id, "old": blob},
            )
            if swapped.rowcount:
                done.rewrapped += 1
                done.key_versions_after[key_version(new)] += 1
            else:
                done.changed_meanwhile += 1
        if commit is not None:
            commit()
        after = batch[-1][0]


def legacy_count(conn: Connection, column: SealedColumn) -> int:
    """How many values of ``column`` are still bound only to their purpose."""
    return int(
        conn.execute(
            text(
                f"SELECT count(*) FROM {column.table}"  # noqa: S608 - names are ours
                f" WHERE substring({column.column} from 1 for 3) = :magic"
            ),
            {"magic": LEGACY_MAGIC},
        ).scalar_one()
    )
