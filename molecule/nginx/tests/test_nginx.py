"""nginx: HTTPS verified with the lab CA in front of the app, HTTP redirects,
security headers (each once), TLS 1.2+ only by handshakes, Mozilla's
intermediate profile (sslyze), a bad configuration refused before it lands."""

import json
import os
import re
import socket
import ssl
import subprocess
from pathlib import Path

import httpx
import pytest
from labtest import PKI_DIR, lab_host
from tlscheck import client_allows_old_tls, handshake, mozilla_intermediate

WEB = "10.213.0.26"
APP_CSP = "default-src 'none'; script-src 'self'"  # the start of app/web's policy


@pytest.fixture(scope="module")
def host():
    return lab_host("mol-nginx")


def test_https_verifies_with_the_lab_ca_and_proxies_to_the_app():
    response = httpx.get(f"https://{WEB}/health", verify=str(PKI_DIR / "ca.crt"), timeout=10)
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert response.headers["server"] == "nginx"


def another_ca(tmp_path):
    """A CA made just now, which signed nothing nginx has."""
    key, cert = tmp_path / "other-ca.key", tmp_path / "other-ca.crt"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"]
        + ["-nodes", "-keyout", key, "-out", cert, "-subj", "/CN=another CA", "-days", "1"],
        check=True,
        capture_output=True,
    )
    return cert


def tls_connect(cafile, server_hostname=WEB):
    """A verified TLS handshake with nginx: the peer chain must lead to cafile and
    name server_hostname."""
    context = ssl.create_default_context(cafile=str(cafile))
    with socket.create_connection((WEB, 443), timeout=10) as sock:
        with context.wrap_socket(sock, server_hostname=server_hostname) as tls:
            return tls.version()


def test_nginx_presents_a_chain_of_the_lab_ca_only_for_its_own_name(tmp_path):
    """The server's certificate verifies against the lab CA, with its address
    checked; against another CA, or for another name, the handshake fails."""
    assert tls_connect(PKI_DIR / "ca.crt") in ("TLSv1.2", "TLSv1.3")
    with pytest.raises(ssl.SSLCertVerificationError, match="unable to get local issuer"):
        tls_connect(another_ca(tmp_path))
    with pytest.raises(ssl.SSLCertVerificationError, match="mismatch"):
        tls_connect(PKI_DIR / "ca.crt", server_hostname="not-this-host.lab.test")


def test_http_redirects_to_https():
    response = httpx.get(f"http://{WEB}/health?x=1", timeout=10)
    assert response.status_code == 301
    assert response.headers["location"] == f"https://{WEB}/health?x=1"


def test_security_headers():
    headers = httpx.get(f"https://{WEB}/nope", verify=str(PKI_DIR / "ca.crt"), timeout=10).headers
    assert headers["strict-transport-security"].startswith("max-age=")
    # once each, although the app behind sets some of them too; the app's own
    # (stricter) Content-Security-Policy is the one
    csp = headers.get_list("content-security-policy")
    assert len(csp) == 1 and csp[0].startswith(APP_CSP), csp
    assert headers.get_list("x-content-type-options") == ["nosniff"]
    assert headers.get_list("x-frame-options") == ["DENY"]
    assert headers.get_list("referrer-policy") == ["no-referrer"]


def test_nginx_own_responses_carry_its_csp():
    """A response nginx makes itself (413 for a body over client_max_body_size)
    has nginx's Content-Security-Policy, once."""
    context = ssl.create_default_context(cafile=str(PKI_DIR / "ca.crt"))
    request = (
        f"POST /api/v1/documents HTTP/1.1\r\nHost: {WEB}\r\n"
        "Content-Length: 999999999\r\nConnection: close\r\n\r\n"
    )
    with socket.create_connection((WEB, 443), timeout=10) as sock:
        with context.wrap_socket(sock, server_hostname=WEB) as tls:
            tls.sendall(request.encode())
            head = tls.recv(65536).decode(errors="replace").split("\r\n\r\n")[0]
    lines = head.split("\r\n")
    assert lines[0].split()[1] == "413", lines[0]
    csp = [
        v.strip()
        for k, _, v in (x.partition(":") for x in lines[1:])
        if k.lower() == "content-security-policy"
    ]
    assert len(csp) == 1 and "frame-ancestors 'none'" in csp[0] and "object-src 'none'" in csp[0], (
        csp
    )


@pytest.mark.parametrize("version", ["TLSv1.2", "TLSv1.3"])
def test_tls_1_2_and_1_3_are_served(version):
    result = handshake(WEB, 443, version)
    assert result.returncode == 0, result.stdout + result.stderr
    # s_client names the protocol as "New, TLSv1.3, Cipher is ..." and, when it
    # prints the session block, "Protocol  : TLSv1.3" (not for TLS 1.3 without a
    # session ticket, which nginx does not send here).
    pattern = rf"(New, |Protocol\s*:\s*){re.escape(version)}\b"
    assert re.search(pattern, result.stdout), result.stdout[-2000:]


@pytest.mark.parametrize("version", ["TLSv1", "TLSv1.1"])
def test_tls_below_1_2_is_refused_by_a_client_that_offers_it(version, tmp_path):
    client_allows_old_tls(tmp_path)  # the same client gets through where it is allowed
    result = handshake(WEB, 443, version)
    assert result.returncode != 0, result.stdout


def test_tls_meets_mozilla_intermediate():
    """sslyze from the controller: protocols, suites, curves, certificate lifetime."""
    mozilla_intermediate(WEB, 443, ca_file=str(PKI_DIR / "ca.crt"))


def test_server_tokens_off(host):
    assert "server_tokens off;" in host.check_output("nginx -T 2>/dev/null")


def test_streaming_paths_are_not_buffered(host):
    config = host.check_output("nginx -T 2>/dev/null")
    block = config.split("location ^~ /v1/chat/completions {", 1)[1].split("}", 1)[0]
    assert "proxy_buffering off;" in block


def test_nginx_accepts_its_configuration(host):
    result = host.run("nginx -t")
    assert result.rc == 0, result.stderr
    assert host.service("nginx").is_running and host.service("nginx").is_enabled


def test_a_bad_directive_never_replaces_the_good_site(host, tmp_path):
    """The role run with a directive nginx rejects fails on that file; the live
    file stays as it was, nginx -t passes and nginx still answers."""
    site = "/etc/nginx/conf.d/clinchat.conf"
    before = host.file(site).sha256sum
    env = os.environ | {"CLINCHAT_CHECK_DRIFT_FILE": str(tmp_path / "drift.json")}
    result = subprocess.run(
        ["ansible-playbook", "-i", os.environ["MOLECULE_INVENTORY_FILE"]]
        + ["-e", json.dumps({"nginx_server_extra": ["no_such_directive on;"]})]
        + [str(Path(os.environ["MOLECULE_SCENARIO_DIRECTORY"]) / "converge.yml")],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode != 0
    # ansible-core prints a task's failure on stderr, as JSON (quotes escaped)
    output = (result.stdout + result.stderr).replace('\\"', '"')
    assert "Ensure the ClinChat site" in output
    assert 'unknown directive "no_such_directive"' in output
    assert host.file(site).sha256sum == before
    assert "no_such_directive" not in host.file(site).content_string
    assert host.run("nginx -t").rc == 0
    host.run("systemctl restart nginx")
    response = httpx.get(f"https://{WEB}/health", verify=str(PKI_DIR / "ca.crt"), timeout=10)
    assert response.status_code == 200
