"""The TLS listener: real handshakes against uvicorn configured by `serving.cli.server_config`.

Each refusal has a control: the same client against a permissive TLS server on this machine
succeeds, so the refusal comes from our server, not from the client's own library.
"""

from __future__ import annotations

import datetime
import ipaddress
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pydantic import ValidationError

from serving import cli
from serving.settings import Settings

from .conftest import free_port

PERMISSIVE = "DEFAULT@SECLEVEL=0"


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed ECDSA certificate for 127.0.0.1."""
    d = tmp_path_factory.mktemp("tls")
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = d / "host.crt", d / "host.key"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


async def hello(
    scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]
) -> None:
    if scope["type"] != "http":
        return
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"5")]}
    )
    await send({"type": "http.response.body", "body": b"hello"})


@pytest.fixture(scope="module")
def server(cert: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """uvicorn with the serving's TLS settings, in a thread; yields its port."""
    settings = Settings(
        model_dir=tmp_path_factory.mktemp("unused"),
        port=free_port(),
        tls_cert_file=cert[0],
        tls_key_file=cert[1],
        log_level="error",
    )
    srv = uvicorn.Server(cli.server_config(settings, hello))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not srv.started:
        assert thread.is_alive() and time.monotonic() < deadline, "server did not start"
        time.sleep(0.02)
    yield settings.port
    srv.should_exit = True
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def permissive_server(cert: tuple[Path, Path]) -> Iterator[int]:
    """A TLS server that accepts TLS 1.0 and every cipher: the control."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(*cert)
    ctx.set_ciphers(PERMISSIVE)
    ctx.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    stop = threading.Event()

    def serve() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            try:
                with ctx.wrap_socket(conn, server_side=True) as tls:
                    tls.recv(1024)
                    tls.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")
            except (OSError, ssl.SSLError):
                conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield port
    stop.set()
    thread.join(timeout=5)
    listener.close()


def client_context(
    cert: Path,
    version: ssl.TLSVersion,
    ciphers: str | None = None,
) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(cert)
    ctx.minimum_version = ctx.maximum_version = version
    if ciphers:
        ctx.set_ciphers(ciphers)
    return ctx


def get(port: int, ctx: ssl.SSLContext) -> tuple[str, str, bytes]:
    """GET / over TLS: (protocol, cipher, response); raises ssl.SSLError if refused."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        with ctx.wrap_socket(sock, server_hostname="127.0.0.1") as tls:
            tls.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            body = b""
            while chunk := tls.recv(4096):
                body += chunk
            cipher = tls.cipher()
            return str(tls.version()), cipher[0] if cipher else "", body


def control(port: int, ctx: ssl.SSLContext, what: str) -> None:
    """Skip when this machine's OpenSSL cannot do what the refusal test needs at all."""
    try:
        get(port, ctx)
    except ssl.SSLError as exc:
        pytest.skip(f"this OpenSSL cannot speak {what} even to a permissive server: {exc}")


def test_tls_1_2_works_with_a_forward_secret_aead_cipher(server: int, cert: tuple[Path, Path]):
    version, cipher, body = get(server, client_context(cert[0], ssl.TLSVersion.TLSv1_2))
    assert version == "TLSv1.2"
    assert cipher in cli.TLS_CIPHERS.split(":")
    assert body.startswith(b"HTTP/1.1 200") and body.endswith(b"hello")


def test_tls_1_3_works(server: int, cert: tuple[Path, Path]):
    version, _, body = get(server, client_context(cert[0], ssl.TLSVersion.TLSv1_3))
    assert version == "TLSv1.3" and body.endswith(b"hello")


def test_tls_1_1_is_refused_by_the_server(
    server: int, permissive_server: int, cert: tuple[Path, Path]
):
    tls11 = client_context(cert[0], ssl.TLSVersion.TLSv1_1, PERMISSIVE)
    control(permissive_server, tls11, "TLS 1.1")
    with pytest.raises(ssl.SSLError):
        get(server, tls11)


def test_a_cbc_cipher_is_refused_by_the_server(
    server: int, permissive_server: int, cert: tuple[Path, Path]
):
    cbc = client_context(cert[0], ssl.TLSVersion.TLSv1_2, "ECDHE-ECDSA-AES128-SHA@SECLEVEL=0")
    control(permissive_server, cbc, "ECDHE-ECDSA-AES128-SHA")
    with pytest.raises(ssl.SSLError):
        get(server, cbc)


def test_plain_http_gets_no_answer(server: int):
    with socket.create_connection(("127.0.0.1", server), timeout=10) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        try:
            answer = sock.recv(4096)
        except ConnectionResetError:
            answer = b""
    assert not answer.startswith(b"HTTP/"), answer


def test_cert_and_key_go_together(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    with pytest.raises(ValidationError, match="set both or neither"):
        Settings(model_dir=tmp_path, tls_cert_file=tmp_path / "c")
    monkeypatch.setenv("CLINCHAT_SERVE_TLS_CERT_FILE", str(tmp_path / "c"))
    monkeypatch.setenv("CLINCHAT_SERVE_TLS_KEY_FILE", str(tmp_path / "k"))
    s = cli.settings_from_args(cli.serve_parser().parse_args(["--model-dir", str(tmp_path)]))
    assert (s.tls_cert_file, s.tls_key_file) == (tmp_path / "c", tmp_path / "k")


def test_without_a_certificate_the_listener_is_plain(tmp_path: Path):
    config = cli.server_config(Settings(model_dir=tmp_path), hello)
    assert not config.is_ssl
