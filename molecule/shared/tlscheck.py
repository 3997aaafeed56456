"""TLS checks of the molecule scenarios: Mozilla's "intermediate" profile with sslyze.

sslyze pins its own cryptography and nassl (a private OpenSSL build able to
offer TLS 1.0/1.1 and every old cipher), which must not mix with the
project's .venv. It lives in its own venv outside the repository, made on
first use:

    /var/cache/clinchat/sslyze-venv   (CLINCHAT_SSLYZE_VENV overrides it)

Use from a verify test (the scenario's tests/conftest.py puts molecule/shared
on sys.path)::

    from tlscheck import mozilla_intermediate

    def test_tls_meets_mozilla_intermediate():
        mozilla_intermediate("10.213.0.26", 443, ca_file=str(PKI_DIR / "ca.crt"))

    def test_postgresql_tls_meets_mozilla_intermediate():
        mozilla_intermediate("10.213.0.22", 5432, starttls="postgres", ca_file=...)

``mozilla_intermediate`` scans from the controller (the test process) to the
lab host and raises AssertionError listing every way the server misses the
profile (protocols, cipher suites, curves, certificate lifetime, path
validation, ...), as sslyze reports them; a server it cannot reach fails too.
``starttls``: a value of sslyze's ``--starttls`` (``postgres``, ``ldap``,
``smtp``...), for a service that upgrades a plain connection; None for a
service that speaks TLS at once (HTTPS, Redis, OpenBao, LDAPS).
``ca_file``: the CA (PEM) the certificate chain must verify against (the lab
CA: labtest.PKI_DIR / "ca.crt"); without it sslyze uses the public trust
stores, where a lab certificate fails path validation.

``handshake(host, port, version, starttls=None)`` offers exactly one TLS
version with a permissive openssl client (to prove a refusal: rc != 0), and
``client_allows_old_tls(tmp_dir)`` proves that client can do TLS 1.0/1.1.

Run this file to make the venv ahead of time: ``python3 molecule/shared/tlscheck.py``.
Note: sslyze's ``--json_out=-`` skips the compliance check (exit 0 always), so
the JSON goes to a temporary file and the verdict is read from the text.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SSLYZE_VERSION = "6.3.1"
VENV = Path(os.environ.get("CLINCHAT_SSLYZE_VENV", "/var/cache/clinchat/sslyze-venv"))
SSLYZE = VENV / "bin" / "sslyze"


def ensure_sslyze() -> Path:
    """The sslyze executable; makes the venv with the pinned sslyze if it is absent."""
    if SSLYZE.exists():
        return SSLYZE
    # A half-made venv (an interrupted install) is made again from nothing.
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(VENV)], check=True)  # noqa: S603
    subprocess.run(  # noqa: S603 - fixed argv
        [str(VENV / "bin" / "pip"), "install", "--quiet", f"sslyze=={SSLYZE_VERSION}"],
        check=True,
        # The machine's pip constraints are for the project's venv, not this one.
        env=os.environ | {"PIP_CONSTRAINT": ""},
    )
    return SSLYZE


def scan(
    host: str, port: int, starttls: str | None = None, ca_file: str | None = None
) -> tuple[dict, int, str]:
    """sslyze's Mozilla intermediate check of host:port: (JSON result, exit status, text).

    The JSON goes to a file, not to stdout: with ``--json_out=-`` sslyze skips
    the compliance check and always exits 0.
    """
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "sslyze.json"
        argv = [str(ensure_sslyze()), "--mozilla_config=intermediate", f"--json_out={out}"]
        if starttls:
            argv.append(f"--starttls={starttls}")
        if ca_file:
            argv.append(f"--certinfo_ca_file={ca_file}")
        argv.append(f"{host}:{port}")
        # Exit status 1: not compliant (the text names each failed criterion).
        result = subprocess.run(  # noqa: S603 - argv of sslyze, from the caller
            argv, capture_output=True, text=True, timeout=300, check=False
        )
        if not out.exists():
            raise AssertionError(
                f"sslyze failed (rc {result.returncode}):\n{result.stdout}{result.stderr}"
            )
        return json.loads(out.read_text()), result.returncode, result.stdout


def mozilla_intermediate(
    host: str, port: int, starttls: str | None = None, ca_file: str | None = None
) -> None:
    """Assert that host:port meets Mozilla's intermediate configuration (sslyze)."""
    report, returncode, text = scan(host, port, starttls, ca_file)
    (server,) = report["server_scan_results"]
    # A server sslyze cannot reach is never "compliant" (sslyze itself exits 0 then).
    if server["connectivity_status"] != "COMPLETED" or server["scan_status"] != "COMPLETED":
        raise AssertionError(
            f"sslyze could not scan {host}:{port}: {server.get('connectivity_error_trace')}"
        )
    _, _, verdict = text.partition("COMPLIANCE AGAINST TLS CONFIGURATION")
    if returncode != 0 or "OK - Compliant." not in verdict:
        raise AssertionError(
            f"{host}:{port} is not Mozilla intermediate compliant (rc {returncode}):{verdict}"
        )


# openssl's options that offer exactly one protocol version.
PROTOCOL_FLAGS = {
    "TLSv1": "-tls1",
    "TLSv1.1": "-tls1_1",
    "TLSv1.2": "-tls1_2",
    "TLSv1.3": "-tls1_3",
}


def handshake(
    host: str, port: int, version: str, starttls: str | None = None
) -> subprocess.CompletedProcess:
    """A TLS handshake from the controller offering only `version` (TLSv1 ... TLSv1.3).

    The client allows every old protocol and cipher (``@SECLEVEL=0``), so a
    failure is the server's refusal; ``client_allows_old_tls`` proves it. The
    result's returncode is 0 when the handshake succeeded.
    """
    argv = ["openssl", "s_client", "-connect", f"{host}:{port}", PROTOCOL_FLAGS[version]]
    argv += ["-cipher", "DEFAULT@SECLEVEL=0"]
    if starttls:
        argv += ["-starttls", starttls]
    return subprocess.run(  # noqa: S603 - openssl, fixed options
        argv, input="", capture_output=True, text=True, timeout=30, check=False
    )


def client_allows_old_tls(tmp_dir: Path) -> None:
    """Assert that ``handshake`` can do TLS 1.0 and 1.1: against a local openssl
    s_server on loopback that allows them, it succeeds (the positive control)."""
    key, cert = tmp_dir / "key.pem", tmp_dir / "cert.pem"
    subprocess.run(  # noqa: S603
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key)]
        + ["-out", str(cert), "-subj", "/CN=localhost", "-days", "1"],
        check=True,
        capture_output=True,
    )
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(  # noqa: S603
        ["openssl", "s_server", "-accept", f"127.0.0.1:{port}", "-cert", str(cert)]
        + ["-key", str(key), "-cipher", "DEFAULT@SECLEVEL=0", "-quiet"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(50):
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.1)
        for version in ("TLSv1", "TLSv1.1"):
            result = handshake("127.0.0.1", port, version)
            assert result.returncode == 0, result.stdout + result.stderr
            assert f"Protocol  : {version}\n" in result.stdout, result.stdout
    finally:
        server.kill()
        server.wait()


if __name__ == "__main__":
    print(ensure_sslyze())
