"""The lab tool on real hosts: create, reach over SSH, create again (nothing
changes), destroy (nothing left behind). Addresses 10.213.0.50-59 and .69
only: other engineers' hosts (.11-.49) may share the bridge meanwhile, so
these tests never run `destroy --all` and never remove a bridge in use."""

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
LAB = REPO / "tests" / "lab" / "clinchat-lab"
STATE = Path(os.environ.get("CLINCHAT_LAB_STATE", "/var/lib/clinchat-lab"))
KEY = STATE / "ssh" / "id_ed25519"
KNOWN_HOSTS = STATE / "known_hosts"
BRIDGE = "clinchat0"

pytestmark = [
    pytest.mark.lab,
    pytest.mark.skipif(os.geteuid() != 0, reason="the lab needs root"),
    pytest.mark.skipif(not shutil.which("systemd-nspawn"), reason="run tests/lab/setup.sh"),
]


def lab(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([str(LAB), *args], capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        pytest.fail(f"clinchat-lab {' '.join(args)}: rc={result.returncode}\n{result.stderr}")
    return result


def ssh(address: str, command: str, known_hosts: Path = KNOWN_HOSTS) -> str:
    """Run a command over SSH, checking the host key against the lab's known_hosts."""
    options = f"-o StrictHostKeyChecking=yes -o UserKnownHostsFile={known_hosts} -o LogLevel=ERROR"
    result = subprocess.run(
        ["ssh", "-i", str(KEY), "-o", "BatchMode=yes", *options.split(), f"root@{address}"]
        + [command],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return result.stdout


def running() -> dict[str, dict[str, object]]:
    return {host["name"]: host for host in json.loads(lab("list").stdout)}


def machine_state(name: str) -> dict[str, Any]:
    return json.loads((STATE / "machines" / name / "machine.json").read_text())


def alive(pid: int) -> bool:
    """Running and not a zombie waiting for PID 1 to reap it."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def link_exists(name: str) -> bool:
    return Path(f"/sys/class/net/{name}").exists()


def assert_nothing_left(name: str, pid: int, interface: str) -> None:
    assert not alive(pid), f"{name}: pid {pid} still runs"
    assert not link_exists(interface), f"{name}: {interface} left on the host"
    assert not (STATE / "machines" / name).exists(), f"{name}: directory left"
    assert name not in running()
    machines = STATE / "machines"
    others = machines.is_dir() and any(machines.glob("*/machine.json"))
    if not others and not (STATE / "bundle-server.json").exists():
        assert not link_exists(BRIDGE), "no machine left, yet the bridge remains"


@pytest.fixture
def host_name(request: pytest.FixtureRequest) -> Iterator[str]:
    """A test host's name; destroyed afterwards whatever happens."""
    name = f"labtest-{request.node.name.removeprefix('test_').replace('_', '-')}"[:40]
    yield name
    lab("destroy", name, check=False)


def test_refuses_addresses_outside_the_lab() -> None:
    for address in ("10.213.1.50", "192.168.0.50", "10.213.0.5", "8.8.8.8", "not-an-ip"):
        result = lab("create", "labtest-outside", "--ip", address, check=False)
        assert result.returncode != 0
        assert "--ip" in result.stderr
    assert not (STATE / "machines" / "labtest-outside").exists()


def test_nspawn_host_lifecycle(host_name: str) -> None:
    address = "10.213.0.50"
    made = json.loads(lab("create", host_name, "--ip", address).stdout)
    assert made == {
        "name": host_name,
        "address": address,
        "user": "root",
        "port": 22,
        "identity_file": str(KEY),
        "known_hosts": str(KNOWN_HOSTS),
        "type": "nspawn",
    }
    assert ssh(address, "hostname").strip() == host_name
    # systemd runs services: what PostgreSQL and nginx need.
    assert ssh(address, "systemctl is-system-running --wait").strip() == "running"
    assert ssh(address, "systemd-detect-virt").strip() == "systemd-nspawn"
    assert ssh(address, "cat /etc/apt/sources.list; ls /etc/apt/sources.list.d") == ""
    state = machine_state(host_name)
    pid, veth = int(state["pid"]), str(state["host_interface"])
    assert running()[host_name]["pid"] == pid
    assert link_exists(veth)

    again = json.loads(lab("create", host_name, "--ip", address).stdout)
    assert again == made
    assert machine_state(host_name)["pid"] == pid, "create again must not reboot the host"
    taken = lab("create", host_name, "--ip", "10.213.0.51", check=False)
    assert taken.returncode != 0 and "destroy it first" in taken.stderr

    lab("destroy", host_name)
    assert_nothing_left(host_name, pid, veth)
    assert address not in KNOWN_HOSTS.read_text(), "a destroyed host's keys stay trusted"
    lab("destroy", host_name)  # nothing to do, still fine


def ansible_ping(inventory: Path) -> subprocess.CompletedProcess[str]:
    """An ad-hoc ping with the project's ansible.cfg (host keys checked), on a
    connection of its own: a master connection an earlier run left open
    (ControlPersist) would be reused without checking the key again."""
    env = os.environ | {
        "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
        "ANSIBLE_SSH_CONTROL_PATH_DIR": tempfile.mkdtemp(prefix="cp-", dir="/tmp"),
    }
    return subprocess.run(
        ["ansible", "all", "-i", str(inventory), "-m", "ansible.builtin.ping"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=env,
    )


def test_host_keys_are_checked(host_name: str, tmp_path: Path) -> None:
    """The tool writes the keys it made into known_hosts; Ansible (ansible.cfg)
    connects with them, and refuses a host whose key is not the one recorded."""
    address = "10.213.0.52"
    lab("create", host_name, "--ip", address)
    recorded = [line for line in KNOWN_HOSTS.read_text().splitlines() if address in line]
    assert recorded, "no known_hosts entry for the new host"
    served = ssh(address, "cat /etc/ssh/ssh_host_ed25519_key.pub").split()[:2]
    assert f"{host_name},{address} {' '.join(served)}" in recorded

    def inventory(known_hosts: Path) -> Path:
        path = tmp_path / f"inventory-{known_hosts.name}.yml"
        path.write_text(
            f"all:\n  hosts:\n    {host_name}:\n      ansible_host: {address}\n"
            f"      ansible_user: root\n      ansible_ssh_private_key_file: {KEY}\n"
            f"      ansible_ssh_extra_args: -o UserKnownHostsFile={known_hosts}\n"
            "      ansible_python_interpreter: /usr/bin/python3\n"
        )
        return path

    good = ansible_ping(inventory(KNOWN_HOSTS))
    assert good.returncode == 0, good.stdout + good.stderr

    # The same name and address with another machine's key: an impostor.
    impostor = tmp_path / "impostor"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", impostor], check=True)
    forged = tmp_path / "known_hosts_forged"
    forged.write_text(
        f"{host_name},{address} {' '.join(impostor.with_suffix('.pub').read_text().split()[:2])}\n"
    )
    refused = ansible_ping(inventory(forged))
    assert refused.returncode != 0
    assert "Host key verification failed" in refused.stdout + refused.stderr

    # No entry at all: refused too, never a prompt or trust on first use.
    empty = tmp_path / "known_hosts_empty"
    empty.write_text("")
    unknown = ansible_ping(inventory(empty))
    assert unknown.returncode != 0
    assert "Host key verification failed" in unknown.stdout + unknown.stderr


@pytest.mark.qemu
def test_qemu_host_with_a_second_disk(host_name: str) -> None:
    address = "10.213.0.69"
    made = json.loads(
        lab("create", host_name, "--ip", address, "--type", "qemu", "--disk2", "1G").stdout
    )
    assert made["type"] == "qemu"
    assert ssh(address, "systemd-detect-virt").strip() == "qemu"
    disks = ssh(address, "lsblk --nodeps --noheadings --output NAME,SIZE").split("\n")
    assert ["vdb", "1G"] in [line.split() for line in disks]
    state = machine_state(host_name)
    pid, tap = int(state["pid"]), str(state["host_interface"])
    assert link_exists(tap)

    lab("destroy", host_name)
    assert_nothing_left(host_name, pid, tap)
