"""Scenario nvidia: the driver's packages come from the bundle on a lab host
that cannot reach anything else, DKMS does not build in a container (it shares
the controller's kernel), the machine owner key is made on the host, and a
host without a GPU gets nothing, with the role saying why."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml
from labtest import lab_host

SCENARIO_DIR = Path(__file__).resolve().parents[1]
ROLE_VARS = SCENARIO_DIR.parents[1] / "roles/nvidia/vars/Debian-13.yml"
BUNDLE_APT = "http://10.213.0.1:8089/apt"  # prepare.yml serves the bundle with the driver there
DKMS_MODULE = "nvidia-current-open"
MOK_KEY = "/var/lib/dkms/mok.key"
MOK_CERT = "/var/lib/dkms/mok.pub"


def driver_packages() -> list[str]:
    """What the role installs in a container: its list less the kernels."""
    listed = yaml.safe_load(ROLE_VARS.read_text())["__nvidia_gpu_packages"]
    return [p for p in listed if not re.match(r"linux-(image|headers)-", p)]


@pytest.fixture(scope="module")
def forced():
    return lab_host("mol-nvidia")


@pytest.fixture(scope="module")
def skipped():
    return lab_host("mol-nvidia-skip")


def play(*extra: str) -> subprocess.CompletedProcess[str]:
    """The scenario's play, with molecule's inventory and ansible.cfg."""
    env = dict(os.environ)
    config = Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"]) / "ansible.cfg"
    if config.is_file():
        env["ANSIBLE_CONFIG"] = str(config)
    argv = [
        "ansible-playbook",
        "-i",
        os.environ["MOLECULE_INVENTORY_FILE"],
        str(SCENARIO_DIR / "play.yml"),
    ]
    return subprocess.run([*argv, *extra], capture_output=True, text=True, env=env, check=False)


@pytest.fixture(scope="module")
def rerun() -> subprocess.CompletedProcess[str]:
    run = play()
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    return run


def recap(run: subprocess.CompletedProcess[str], host: str) -> dict[str, int]:
    line = re.search(rf"^{re.escape(host)}\s+:\s+(.*)$", run.stdout, re.MULTILINE)
    assert line, run.stdout[-3000:]
    return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", line[1])}


# -- the driver from the bundle, and nothing else ---------------------------------------------


def test_the_host_has_no_way_out(forced):
    """No default route (IPv4 or IPv6), no DNS: apt can only have used the bundle.
    `ip route get` asks the routing table; it sends nothing."""
    assert forced.check_output("ip -4 route show default") == ""
    assert forced.check_output("ip -6 route show default") == ""
    out = forced.run("ip route get 192.0.2.1")  # TEST-NET-1: a lookup, nothing is sent
    assert out.rc != 0 and "unreachable" in out.stderr.lower(), out
    assert forced.file("/etc/resolv.conf").content_string.strip() == ""
    sources = forced.check_output("apt-get indextargets --format '$(URI)' | sort -u").splitlines()
    assert sources and all(uri.startswith(BUNDLE_APT) for uri in sources), sources


@pytest.mark.parametrize("package", driver_packages())
def test_driver_package_installed_from_the_bundle(forced, package):
    assert forced.package(package).is_installed, package
    policy = forced.check_output(f"apt-cache policy {package}")
    installed = re.search(r"Installed: (\S+)", policy)[1]
    # The installed version's sources: the bundle, and dpkg's status file only.
    table = policy.split("Version table:")[1]
    block = re.search(rf"\*\*\* {re.escape(installed)} .*?(?=\n     \S|\Z)", table, re.S)[0]
    origins = re.findall(r"^\s+\d+ (\S+)", block, re.MULTILINE)
    assert origins and set(origins) <= {BUNDLE_APT, "/var/lib/dpkg/status"}, policy
    assert BUNDLE_APT in origins, policy
    assert re.search(rf"{re.escape(BUNDLE_APT)} \./ Packages", block), policy


def test_the_open_module_and_its_firmware_are_the_same_driver(forced):
    version = forced.check_output("dpkg-query -W -f '${Version}' nvidia-open-kernel-dkms")
    firmware = forced.check_output("dpkg-query -W -f '${Version}' firmware-nvidia-gsp")
    smi = forced.check_output("dpkg-query -W -f '${Version}' nvidia-smi")
    assert version.split("-")[0] == firmware.split("-")[0] == smi.split("-")[0], (
        version,
        firmware,
        smi,
    )
    assert forced.file(f"/usr/src/{DKMS_MODULE}-{version.split('-')[0]}/dkms.conf").exists


def test_no_xorg_or_desktop_stack(forced):
    """The headless set: no X server, no GL/Vulkan driver, no nvidia-driver metapackage."""
    for package in (
        "nvidia-driver",
        "xserver-xorg-core",
        "xserver-xorg-video-nvidia",
        "libgl1-nvidia-glvnd-glx",
    ):
        assert not forced.package(package).is_installed, package


def test_dkms_added_but_did_not_build_in_the_container(forced):
    """nspawn shares the controller's kernel: no headers for it, no module loading."""
    kernel = forced.check_output("uname -r")
    status = forced.check_output(f"dkms status -m {DKMS_MODULE}")
    assert re.search(rf"^{DKMS_MODULE}/[0-9.]+: added$", status, re.MULTILINE), status
    assert "installed" not in status, status
    assert not forced.file(f"/lib/modules/{kernel}/build").exists
    assert (
        forced.check_output("find / -xdev -name 'nvidia-current-open*.ko*' 2>/dev/null | head -1")
        == ""
    )
    assert not forced.package("linux-image-amd64").is_installed
    assert not forced.package("linux-headers-amd64").is_installed


def test_the_role_says_dkms_had_nothing_to_build_for(rerun):
    assert re.search(
        r"mol-nvidia is a container .*DKMS did not build "
        r"nvidia-current-open",
        rerun.stdout,
    ), rerun.stdout[-3000:]
    assert re.search(r"no NVIDIA GPU on mol-nvidia, installing the driver anyway", rerun.stdout)


# -- the machine owner key ---------------------------------------------------------------------


def test_the_machine_owner_key_is_made_on_the_host_and_private(forced):
    key = forced.file(MOK_KEY)
    assert key.exists and key.user == "root" and key.group == "root" and key.mode == 0o600
    cert = forced.file(MOK_CERT)
    assert cert.exists and cert.mode == 0o644
    subject = forced.check_output(f"openssl x509 -inform DER -in {MOK_CERT} -noout -subject")
    assert "ClinChat DKMS module signing key (mol-nvidia)" in subject
    # The key matches the certificate.
    pub_from_key = forced.check_output(f"openssl pkey -in {MOK_KEY} -pubout")
    pub_from_cert = forced.check_output(f"openssl x509 -inform DER -in {MOK_CERT} -noout -pubkey")
    assert pub_from_key == pub_from_cert


def test_secure_boot_is_reported_unknown_without_efi_variables(rerun):
    assert re.search(
        r"Secure Boot is unknown "
        r"\(no EFI variables\)",
        rerun.stdout,
    ), rerun.stdout[-3000:]


# -- a host without a GPU ----------------------------------------------------------------------


def test_a_host_without_a_gpu_gets_nothing_and_is_told_why(rerun, skipped):
    assert re.search(
        r"nvidia: SKIPPED on mol-nvidia-skip: no NVIDIA GPU found "
        r"\(no PCI device with\s+vendor 0x10de",
        rerun.stdout,
    ), rerun.stdout[-3000:]
    counts = recap(rerun, "mol-nvidia-skip")
    assert counts["changed"] == 0 and counts["failed"] == 0, counts
    # openssl comes with ca-certificates in every bare host; the rest is the driver's.
    for package in set(driver_packages()) - {"openssl"}:
        assert not skipped.package(package).is_installed, package
    assert not skipped.file(MOK_KEY).exists


def test_the_second_run_changes_nothing(rerun):
    assert recap(rerun, "mol-nvidia")["changed"] == 0
