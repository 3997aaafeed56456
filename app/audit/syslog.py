"""Audit events to a syslog collector: RFC 5424 over TLS (RFC 5425, the deployment's
way: the collector's certificate checked against ``syslog_ca_cert`` and its name) or
plain UDP (RFC 5426, loopback and tests), sent after they are committed.

``record`` (app/audit/chain.py) calls ``schedule``, which formats the event and keeps
the line on the database session. An SQLAlchemy listener hands the session's lines
to a sender thread when its transaction commits and drops them when it rolls back
(or ends without a commit), so the collector only ever sees committed events. The
request never waits for the network: the thread resolves the address and sends, and
a collector that cannot be reached costs one log line with the exception's type.

A line carries ids, the action, the outcome and the chain's hashes: never detail, a
reason or anything a user typed. A checkpoint's line also carries what it signs and
Vault's signature (``covers_id``, ``checkpoint_ts``, ``signature``), so the collector's
copy can be checked against the audit key's public key without the database. The
actor is the trail's: a staff username, or the keyed hash of a failed sign-in's
unknown name (app/auth/service.py).

    <110>1 2026-11-22T10:00:00.123456Z host clinchat 4242 conversation.read
    [clinchat@32473 id="17" hash="..." prev_hash="..." actor="clin1" outcome="success"
    break_glass="false" entity_type="conversation" entity_id="..."] conversation.read success
"""

from __future__ import annotations

import atexit
import logging
import os
import queue
import socket
import ssl
import threading
from collections.abc import Sequence
from datetime import UTC

from sqlalchemy import event as sa_event
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session, SessionTransaction

from app.models import AuditEvent
from app.settings import Settings

CHECKPOINT = "audit.checkpoint"  # app/audit/chain.py's (which imports this module)

log = logging.getLogger(__name__)

APP_NAME = "clinchat"
# 32473 is the private enterprise number reserved for documentation (RFC 5612).
SD_ID = "clinchat@32473"
FACILITY = 13  # "log audit" (RFC 5424, table 1)
SEVERITY_WARNING, SEVERITY_NOTICE, SEVERITY_INFO = 4, 5, 6
_PENDING = "clinchat_audit_syslog"  # key in Session.info
_FLUSH_AT_EXIT_S = 2.0
TIMEOUT_S = 5.0  # connecting and sending to a TLS collector
# where lines go: (host:port, "udp" or "tls", the CA file that signs the collector's cert)
Target = tuple[str, str, str | None]


def escape_param(value: str) -> str:
    """An SD-PARAM value: '"', '\\' and ']' escaped with a backslash (RFC 5424 6.3.3).

    Control characters are replaced too, so a line stays one line in a file.
    """
    cleaned = "".join(ch if ch.isprintable() else "?" for ch in value)
    return cleaned.replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")


def _header(value: str, max_length: int) -> str:
    """A header field: printable US-ASCII without spaces, or the NILVALUE "-"."""
    value = value[:max_length]
    return value if value and all(33 <= ord(ch) <= 126 for ch in value) else "-"


def severity(event: AuditEvent) -> int:
    if event.outcome != "success":
        return SEVERITY_WARNING
    return SEVERITY_NOTICE if event.break_glass else SEVERITY_INFO


def format_event(
    event: AuditEvent, hostname: str | None = None, procid: int | None = None
) -> bytes:
    """One RFC 5424 message for a flushed audit row (its id and hash are set)."""
    timestamp = event.ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    params = {
        "id": str(event.id),
        "hash": event.hash,
        "prev_hash": event.prev_hash,
        "actor": event.actor,
        "outcome": event.outcome,
        "break_glass": "true" if event.break_glass else "false",
        "entity_type": event.entity_type or "",
        "entity_id": event.entity_id or "",
    }
    if event.action == CHECKPOINT:
        detail = event.detail or {}
        params["covers_id"] = str(detail.get("covers_id") or 0)
        params["checkpoint_ts"] = str(detail.get("ts", ""))
        params["signature"] = str(detail.get("signature", ""))
    data = "".join(f' {name}="{escape_param(value)}"' for name, value in params.items())
    message = f"{event.action} {event.outcome}"
    header = " ".join(
        [
            f"<{FACILITY * 8 + severity(event)}>1",
            timestamp,
            _header(hostname or socket.gethostname(), 255),
            APP_NAME,
            _header(str(procid or os.getpid()), 128),
            _header(event.action, 32),
        ]
    )
    return f"{header} [{SD_ID}{data}] {escape_param(message)}".encode()


def parse_address(address: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port``; ValueError if it is neither."""
    host, sep, port = address.strip().rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError("CLINCHAT_SYSLOG_ADDRESS is not host:port")
    return host, int(port)


# -- after the commit ------------------------------------------------------------------------


class _Sender:
    """A daemon thread that sends batches of lines; started per process, on first use."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[tuple[Target, list[bytes]] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._pid = 0
        self._lock = threading.Lock()

    def submit(self, target: Target, lines: list[bytes]) -> None:
        with self._lock:
            # a forked worker inherits the object but not the thread
            if self._thread is None or self._pid != os.getpid() or not self._thread.is_alive():
                self._queue = queue.SimpleQueue()
                self._thread = threading.Thread(target=self._run, name="audit-syslog", daemon=True)
                self._pid = os.getpid()
                self._thread.start()
            self._queue.put((target, lines))

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            send(*item)

    def flush(self, timeout_s: float = _FLUSH_AT_EXIT_S) -> None:
        """Send what is queued, waiting at most ``timeout_s`` (at exit: the CLI's events)."""
        with self._lock:
            thread = self._thread
            if thread is None or self._pid != os.getpid() or not thread.is_alive():
                return
            self._queue.put(None)
            self._thread = None
        thread.join(timeout_s)


def send(target: Target, lines: Sequence[bytes]) -> bool:
    """Send ``lines`` to the collector; False (logged, no content) if it failed."""
    address, transport, ca_cert = target
    try:
        host, port = parse_address(address)
        if transport == "tls":
            _send_tls(host, port, ca_cert, lines)
        else:
            family, kind, proto, _, sockaddr = socket.getaddrinfo(
                host, port, type=socket.SOCK_DGRAM
            )[0]
            with socket.socket(family, kind, proto) as sock:
                for line in lines:
                    sock.sendto(line, sockaddr)
        return True
    except (OSError, ValueError) as exc:
        log.warning("syslog: %d audit events not sent (%s)", len(lines), type(exc).__name__)
        return False


def _send_tls(host: str, port: int, ca_cert: str | None, lines: Sequence[bytes]) -> None:
    """RFC 5425: TLS over TCP, each message framed by its length ("octet counting").
    The collector must show a certificate from ``ca_cert`` for ``host`` (ssl.SSLError,
    an OSError, otherwise)."""
    context = ssl.create_default_context(cafile=ca_cert or None)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    with (
        socket.create_connection((host, port), timeout=TIMEOUT_S) as raw,
        context.wrap_socket(raw, server_hostname=host) as sock,
    ):
        sock.sendall(b"".join(b"%d %s" % (len(line), line) for line in lines))


_SENDER = _Sender()
atexit.register(_SENDER.flush)


def flush(timeout_s: float = _FLUSH_AT_EXIT_S) -> None:
    _SENDER.flush(timeout_s)


def schedule(session: AsyncSession | Session, settings: Settings, event: AuditEvent) -> None:
    """Keep ``event``'s line on ``session``: sent if its transaction commits."""
    if not settings.syslog_address:
        return
    sync = session.sync_session if isinstance(session, AsyncSession) else session
    # the innermost transaction: a savepoint rolled back drops its events only
    transaction = sync.get_nested_transaction() or sync.get_transaction()
    pending = sync.info.setdefault(_PENDING, [])
    target = (settings.syslog_address, settings.syslog_transport, settings.syslog_ca_cert)
    pending.append((transaction, target, format_event(event)))


def _within(transaction: SessionTransaction | None, ended: SessionTransaction) -> bool:
    while transaction is not None:
        if transaction is ended:
            return True
        transaction = transaction.parent
    return False


@sa_event.listens_for(Session, "after_commit")
def _send_committed(session: Session) -> None:
    if session.get_nested_transaction() is not None:
        return  # a savepoint released: its events wait for the outermost commit
    pending = session.info.pop(_PENDING, None)
    if not pending:
        return
    batches: dict[Target, list[bytes]] = {}
    for _, target, line in pending:
        batches.setdefault(target, []).append(line)
    for target, lines in batches.items():
        _SENDER.submit(target, lines)


@sa_event.listens_for(Session, "after_soft_rollback")
def _drop_rolled_back(session: Session, previous_transaction: SessionTransaction) -> None:
    pending = session.info.get(_PENDING)
    if pending:
        kept = [p for p in pending if not _within(p[0], previous_transaction)]
        session.info[_PENDING] = kept


@sa_event.listens_for(Session, "after_transaction_end")
def _drop_uncommitted(session: Session, transaction: SessionTransaction) -> None:
    # The outermost transaction ended without after_commit (a rollback, or a close
    # without a commit): its events were never written.
    if transaction.parent is None:
        session.info.pop(_PENDING, None)
