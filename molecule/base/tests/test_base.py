"""base: apt and pip only from the bundle (unsigned sources refused), chrony,
persistent journald, locale and timezone, administrators with valid sudo."""

import shlex
import subprocess

import pytest
from labtest import lab_host

HOST = "mol-base"
SSH_KEY = "/var/lib/clinchat-lab/ssh/id_ed25519"


@pytest.fixture(scope="module")
def host():
    return lab_host(HOST)


def test_the_bundle_is_the_only_apt_source(host):
    assert not host.file("/etc/apt/sources.list").exists
    listed = host.check_output("ls /etc/apt/sources.list.d").split()
    assert listed == ["clinchat-bundle.sources"]
    source = host.file("/etc/apt/sources.list.d/clinchat-bundle.sources").content_string
    assert "URIs: http://10.213.0.1:8088/apt/" in source
    assert "Signed-By: /etc/apt/keyrings/clinchat-bundle.asc" in source
    assert host.file("/etc/apt/keyrings/clinchat-bundle.asc").contains("BEGIN PGP PUBLIC KEY")


def test_apt_update_from_the_bundle_succeeds(host):
    result = host.run("apt-get update -o APT::Update::Error-Mode=any")
    assert result.rc == 0, result.stderr
    policy = host.check_output("apt-cache policy")
    assert "10.213.0.1:8088" in policy
    assert "deb.debian.org" not in policy


def test_an_unsigned_repository_is_refused(host):
    """A flat repository without a signature: apt refuses it."""
    script = """
set -e
d=$(mktemp -d)
mkdir -p $d/repo $d/lists/partial
: > $d/repo/Packages
printf 'Origin: rogue\\nLabel: rogue\\nSuite: rogue\\nCodename: rogue\\n' > $d/repo/Release
echo "deb file:$d/repo ./" > $d/rogue.list
apt-get update -o Dir::Etc::SourceList=$d/rogue.list -o Dir::Etc::SourceParts=/nonexistent \
  -o Dir::State::Lists=$d/lists -o APT::Update::Error-Mode=any 2>&1 || echo "rc=$?"
rm -rf $d
"""
    out = host.check_output(f"bash -c {shlex.quote(script)}")
    assert "rc=" in out, out
    assert "is not signed" in out, out


def test_pip_installs_only_from_the_wheelhouse(host):
    conf = host.file("/etc/pip.conf").content_string
    assert "no-index = true" in conf
    assert "find-links = http://10.213.0.1:8088/wheels/" in conf
    assert "trusted-host = 10.213.0.1" in conf


def test_chrony_uses_the_configured_servers(host):
    conf = host.file("/etc/chrony/chrony.conf").content_string
    assert "server 10.213.0.1 iburst" in conf
    assert host.run("chronyd -p -f /etc/chrony/chrony.conf").rc == 0
    assert host.service("chrony").is_enabled


def test_journald_is_persistent_and_capped(host):
    config = host.check_output("systemd-analyze cat-config systemd/journald.conf")
    assert "Storage=persistent" in config
    assert "SystemMaxUse=1G" in config
    machine_id = host.file("/etc/machine-id").content_string.strip()
    assert host.file(f"/var/log/journal/{machine_id}").is_directory
    assert host.service("systemd-journald").is_running


def test_locale_and_timezone(host):
    assert "LANG=en_US.UTF-8" in host.file("/etc/default/locale").content_string
    assert "en_US.utf8" in host.check_output("locale -a")
    assert host.file("/etc/localtime").linked_to == "/usr/share/zoneinfo/Europe/Berlin"


def test_sudoers_are_valid_and_admit_the_admins(host):
    assert host.run("visudo -c").rc == 0
    sudoers = host.file("/etc/sudoers.d/clinchat")
    assert sudoers.mode == 0o440
    assert "Defaults use_pty" in sudoers.content_string
    assert "clinchat-admin" in host.user("labadmin").groups
    assert host.run("id formeradmin").rc != 0


def test_the_admin_logs_in_with_the_key_and_uses_sudo():
    result = subprocess.run(
        [
            "ssh",
            "-i",
            SSH_KEY,
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "LogLevel=ERROR",
            "-o",
            "BatchMode=yes",
            "labadmin@10.213.0.21",
            "sudo -n id -u",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "0"
