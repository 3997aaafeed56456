"""clinchat.appliance.tls_listeners' parts: reading ss, and a real TLS handshake
against a TLS listener and a plain one on loopback."""

from __future__ import annotations

import datetime
import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from ansible_collections.clinchat.appliance.plugins.modules import tls_listeners
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

SS = (
    'LISTEN 0 2048 10.213.0.12:8000 0.0.0.0:* users:(("gunicorn",pid=812,fd=5),'
    '("gunicorn",pid=790,fd=5))\n'
    'LISTEN 0 4096 127.0.0.53%lo:53 0.0.0.0:* users:(("systemd-resolve",pid=301,fd=14))\n'
    'LISTEN 0 128 [::]:22 [::]:* users:(("sshd",pid=455,fd=4))\n'
)


def test_parse_ss() -> None:
    assert tls_listeners.parse_ss(SS) == [
        ("10.213.0.12", 8000, {812, 790}),
        ("127.0.0.53", 53, {301}),
        ("::", 22, {455}),
    ]


def test_loopback() -> None:
    assert tls_listeners.is_loopback("127.0.0.1") and tls_listeners.is_loopback("::1")
    assert not tls_listeners.is_loopback("10.213.0.12") and not tls_listeners.is_loopback("0.0.0.0")


def _serve(listener: socket.socket, context: ssl.SSLContext | None) -> None:
    while True:
        try:
            conn, _ = listener.accept()
        except OSError:
            return
        try:
            if context is not None:
                conn = context.wrap_socket(conn, server_side=True)
            conn.recv(1)
        except (OSError, ssl.SSLError):
            pass
        finally:
            conn.close()


def _listener(context: ssl.SSLContext | None) -> Iterator[int]:
    listener = socket.create_server(("127.0.0.1", 0))
    threading.Thread(target=_serve, args=(listener, context), daemon=True).start()
    yield listener.getsockname()[1]
    listener.close()


@pytest.fixture
def tls_port(tmp_path: Path) -> Iterator[int]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fixture")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    (tmp_path / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    yield from _listener(context)


@pytest.fixture
def plain_port() -> Iterator[int]:
    yield from _listener(None)


def test_handshake_with_a_tls_listener(tls_port: int) -> None:
    tls, protocol = tls_listeners.handshake("127.0.0.1", tls_port, 3)
    assert tls and protocol in ("TLSv1.2", "TLSv1.3")


def test_handshake_with_a_plain_listener(plain_port: int) -> None:
    tls, why = tls_listeners.handshake("0.0.0.0", plain_port, 3)
    assert not tls and why
