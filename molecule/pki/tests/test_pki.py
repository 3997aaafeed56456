"""pki: a lab CA on the controller (0700, key 0600), a certificate per host
signed by it with the host's names, keys made on the hosts and kept there;
host certificates of at most 90 days, renewed when under 30 days remain."""

import json
import os
import stat
import subprocess
from datetime import datetime
from pathlib import Path

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


def validity(host):
    """(not before, not after, serial) of the host's certificate."""
    out = host.check_output("openssl x509 -in /etc/clinchat/pki/host.crt -noout -dates -serial")
    fields = dict(line.split("=", 1) for line in out.splitlines())
    start, end = (
        datetime.strptime(fields[k], "%b %d %H:%M:%S %Y %Z") for k in ("notBefore", "notAfter")
    )
    return start, end, fields["serial"]


@pytest.mark.parametrize("name", sorted(HOSTS))
def test_host_certificates_live_90_days(name):
    """Mozilla's intermediate profile: a server certificate lives at most 366 days."""
    start, end, _ = validity(lab_host(name))
    assert (end - start).days == 90


def converge(tmp_path, *args):
    """The scenario's converge playbook on mol-pki-1; returns what a check run reports."""
    drift = tmp_path / "drift.json"
    # The drift report of this run goes to its own file, not to the scenario's.
    env = os.environ | {"CLINCHAT_CHECK_DRIFT_FILE": str(drift)}
    playbook = Path(os.environ["MOLECULE_SCENARIO_DIRECTORY"]) / "converge.yml"
    result = subprocess.run(
        ["ansible-playbook", "-i", os.environ["MOLECULE_INVENTORY_FILE"], "--limit", "mol-pki-1"]
        + [*args, str(playbook)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return json.loads(drift.read_text()) if drift.exists() else None


def test_a_certificate_near_its_end_is_renewed_and_check_mode_says_so(tmp_path):
    host = lab_host("mol-pki-1")
    _, _, serial = validity(host)
    # A certificate issued for longer than pki_cert_valid_days is re-signed.
    converge(tmp_path, "-e", "pki_cert_valid_days=10")
    start, end, short_serial = validity(host)
    assert short_serial != serial
    assert (end - start).days == 10
    # 10 days left, under pki_cert_renew_days (30): check mode reports the renewal.
    drift = converge(tmp_path, "--check")
    assert [d["task"].removeprefix("pki : ") for d in drift] == [
        "PKI | PATCH | Sign the host's certificate request with the lab CA (on the controller)",
        "PKI | PATCH | Ensure the host's certificate is installed",
    ], drift
    converge(tmp_path)
    start, end, renewed_serial = validity(host)
    assert renewed_serial not in (serial, short_serial)
    assert (end - start).days == 90
    assert (
        host.run("openssl verify -CAfile /etc/clinchat/pki/ca.crt /etc/clinchat/pki/host.crt").rc
        == 0
    )
    # A fresh certificate is not due: check mode reports nothing.
    assert converge(tmp_path, "--check") == []
