"""pki: a lab CA on the controller (0700, key 0600), a certificate per host
signed by it with the host's names, keys made on the hosts and kept there."""

import stat
import subprocess

import pytest
from labtest import PKI_DIR, lab_host

HOSTS = {"mol-pki-1": "10.213.0.27", "mol-pki-2": "10.213.0.28"}


def test_the_ca_stays_on_the_controller_and_is_closed():
    assert stat.S_IMODE(PKI_DIR.stat().st_mode) == 0o700
    assert stat.S_IMODE((PKI_DIR / "ca.key").stat().st_mode) == 0o600
    # Host keys are made on the hosts: only the CA's key is here.
    assert sorted(p.name for p in PKI_DIR.glob("*.key")) == ["ca.key"]


@pytest.mark.parametrize("name", sorted(HOSTS))
def test_host_certificate_verifies_and_names_the_host(name):
    host = lab_host(name)
    assert (
        host.run("openssl verify -CAfile /etc/clinchat/pki/ca.crt /etc/clinchat/pki/host.crt").rc
        == 0
    )
    text = host.check_output("openssl x509 -in /etc/clinchat/pki/host.crt -noout -text")
    for san in (f"DNS:{name}", f"IP Address:{HOSTS[name]}", "DNS:clinchat.lab.test"):
        assert san in text
    assert "TLS Web Server Authentication" in text
    # The host's certificate is signed by the controller's CA.
    ca = (PKI_DIR / "ca.crt").read_text()
    assert host.file("/etc/clinchat/pki/ca.crt").content_string == ca


@pytest.mark.parametrize("name", sorted(HOSTS))
def test_private_key_is_readable_only_by_root_and_ssl_cert(name):
    host = lab_host(name)
    key = host.file("/etc/clinchat/pki/private/host.key")
    assert (key.user, key.group, key.mode) == ("root", "ssl-cert", 0o640)
    private = host.file("/etc/clinchat/pki/private")
    assert (private.user, private.group, private.mode) == ("root", "ssl-cert", 0o750)
    # The key matches the certificate.
    pub_key = host.check_output("openssl pkey -in /etc/clinchat/pki/private/host.key -pubout")
    pub_cert = host.check_output("openssl x509 -in /etc/clinchat/pki/host.crt -noout -pubkey")
    assert pub_key == pub_cert


@pytest.mark.parametrize("name", sorted(HOSTS))
def test_the_ca_is_in_the_trust_store(name):
    host = lab_host(name)
    assert host.file("/usr/local/share/ca-certificates/clinchat-ca.crt").exists
    assert host.file("/etc/ssl/certs/clinchat-ca.pem").exists


def test_each_host_has_its_own_key():
    keys = {
        name: lab_host(name).check_output(
            "openssl pkey -in /etc/clinchat/pki/private/host.key -pubout"
        )
        for name in HOSTS
    }
    assert len(set(keys.values())) == len(HOSTS)


def test_a_certificate_not_from_the_ca_does_not_verify(tmp_path):
    """The negative control: a self-signed certificate fails against the CA."""
    key, cert = tmp_path / "k.pem", tmp_path / "c.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            key,
            "-out",
            cert,
            "-subj",
            "/CN=rogue",
            "-days",
            "1",
        ],
        check=True,
        capture_output=True,
    )
    result = subprocess.run(
        ["openssl", "verify", "-CAfile", PKI_DIR / "ca.crt", cert], capture_output=True, check=False
    )
    assert result.returncode != 0
