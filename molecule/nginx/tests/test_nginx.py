"""nginx: HTTPS verified with the lab CA in front of the app, HTTP redirects,
security headers, TLS 1.2+ only, a configuration that nginx -t accepts."""

import ssl

import httpx
import pytest
from labtest import PKI_DIR, lab_host

WEB = "10.213.0.26"


@pytest.fixture(scope="module")
def host():
    return lab_host("mol-nginx")


def test_https_verifies_with_the_lab_ca_and_proxies_to_the_app():
    response = httpx.get(f"https://{WEB}/health", verify=str(PKI_DIR / "ca.crt"), timeout=10)
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert response.headers["server"] == "nginx"


def test_an_unknown_ca_is_not_trusted():
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"https://{WEB}/health", timeout=10)


def test_http_redirects_to_https():
    response = httpx.get(f"http://{WEB}/health?x=1", timeout=10)
    assert response.status_code == 301
    assert response.headers["location"] == f"https://{WEB}/health?x=1"


def test_security_headers():
    headers = httpx.get(f"https://{WEB}/nope", verify=str(PKI_DIR / "ca.crt"), timeout=10).headers
    assert headers["strict-transport-security"].startswith("max-age=")
    csp = headers["content-security-policy"]
    assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp
    # once each, although the app behind sets some of them too
    assert headers.get_list("x-content-type-options") == ["nosniff"]
    assert headers.get_list("x-frame-options") == ["DENY"]
    assert headers.get_list("referrer-policy") == ["no-referrer"]


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_tls_1_2_and_1_3_are_served(version):
    context = ssl.create_default_context(cafile=str(PKI_DIR / "ca.crt"))
    context.minimum_version = context.maximum_version = version
    response = httpx.get(f"https://{WEB}/health", verify=context, timeout=10)
    assert response.status_code == 200


def test_tls_below_1_2_is_not_configured(host):
    config = host.check_output("nginx -T 2>/dev/null")
    protocols = {
        line.strip() for line in config.splitlines() if line.strip().startswith("ssl_protocols")
    }
    assert protocols == {"ssl_protocols TLSv1.2 TLSv1.3;"}
    assert "server_tokens off;" in config


def test_streaming_paths_are_not_buffered(host):
    config = host.check_output("nginx -T 2>/dev/null")
    block = config.split("location ^~ /v1/chat/completions {", 1)[1].split("}", 1)[0]
    assert "proxy_buffering off;" in block


def test_nginx_accepts_its_configuration(host):
    result = host.run("nginx -t")
    assert result.rc == 0, result.stderr
    assert host.service("nginx").is_running and host.service("nginx").is_enabled
