"""clinchat-lab: real Debian 13 hosts on this machine for the roles and the tests.

Two kinds of host share one bridge (`clinchat0`, 10.213.0.1/24, no route out):

- nspawn: a copy of a cached debootstrap root file system booted with
  `systemd-nspawn --boot`. Boots in seconds; shares the controller's kernel.
- qemu: the same root file system plus Debian's cloud kernel, booted with
  `qemu-system-x86_64 -accel tcg`. Slow, but a real kernel (LUKS, sysctls, auditd).

Every subcommand is idempotent. Machines are stopped only by the pid this tool
recorded when it started them. See docs/lab.md.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import ipaddress
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

# -- settings ----------------------------------------------------------------

CACHE = Path(os.environ.get("CLINCHAT_CACHE", "/var/cache/clinchat"))
STATE = Path(os.environ.get("CLINCHAT_LAB_STATE", "/var/lib/clinchat-lab"))
LAB_CACHE = CACHE / "lab"
MACHINES = STATE / "machines"
SSH_KEY = STATE / "ssh" / "id_ed25519"
BUNDLE_STATE = STATE / "bundle-server.json"
BUNDLE_MARKER = "http.server --bind 10.213.0.1"

BRIDGE = "clinchat0"
NETWORK = ipaddress.ip_network("10.213.0.0/24")
CONTROLLER = ipaddress.ip_address("10.213.0.1")
FIRST_HOST = 11  # .2-.10 stay free for the controller side (docs/DECISIONS.md)
BUNDLE_PORT = 8088

SUITE = "trixie"
MIRROR = "http://deb.debian.org/debian"
# What a host needs to boot and be managed by Ansible over SSH; the roles install
# everything else from the offline bundle. python3-apt: Ansible's apt module
# cannot run without it, and it would otherwise try to fetch it on its own.
BASE_PACKAGES = (
    "systemd",
    "systemd-sysv",
    "dbus",
    "openssh-server",
    "python3",
    "python3-apt",
    "iproute2",
    "ca-certificates",
)
# Added for qemu VMs only: a kernel with an initramfs, udev (networkd waits for
# it under a real kernel) and fsck for the root file system.
QEMU_PACKAGES = ("linux-image-cloud-amd64", "initramfs-tools", "udev", "e2fsprogs")
# Bump when the image preparation below changes, to rebuild the caches.
IMAGE_VERSION = 1

QEMU_ROOT_DISK = "8G"  # sparse: costs only what is written
NSPAWN_BOOT_TIMEOUT = 120
QEMU_BOOT_TIMEOUT = 600
STOP_TIMEOUT = 60
# Host keys are made fresh on every create, by this tool, so it knows them
# before the host boots: KNOWN_HOSTS lists every lab host's keys and SSH (the
# tool's own, and Ansible's through the inventory) checks them strictly.
KNOWN_HOSTS = STATE / "known_hosts"
SSH_OPTIONS = (
    "-o BatchMode=yes -o IdentitiesOnly=yes -o StrictHostKeyChecking=yes "
    f"-o UserKnownHostsFile={KNOWN_HOSTS} -o LogLevel=ERROR -o ConnectTimeout=5"
).split()
NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,40}$")
SIZE_RE = re.compile(r"^[1-9][0-9]*[KMGT]?$")


class LabError(Exception):
    """A failure the user can act on; printed without a traceback."""


def log(message: str) -> None:
    print(f"clinchat-lab: {message}", file=sys.stderr, flush=True)


def run(argv: Sequence[str | os.PathLike[str]], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """Runs a command; a failure raises LabError with the command's own message."""
    args = [str(a) for a in argv]
    result = subprocess.run(args, capture_output=True, text=True, check=False, **kwargs)  # noqa: S603
    if result.returncode != 0:
        output = (result.stderr or result.stdout).strip()[-3000:]
        raise LabError(f"{' '.join(args[:4])} ... failed (rc={result.returncode}):\n{output}")
    return result


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """An exclusive lock, so concurrent runs (tests, molecule, make lab) do not race."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# -- processes ---------------------------------------------------------------


def process_alive(pid: int | None, marker: str) -> bool:
    """True if pid runs and its command line holds marker: a recycled pid is not ours."""
    if not pid:
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state != "Z" and marker in cmdline


def start_detached(
    argv: Sequence[str | os.PathLike[str]], logfile: Path, env: dict[str, str] | None = None
) -> int:
    """Starts a daemon in its own session (setsid), output to logfile; returns its pid."""
    with logfile.open("ab") as out:
        process = subprocess.Popen(  # noqa: S603
            [str(a) for a in argv],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=os.environ | (env or {}),
        )
    return process.pid


def stop_process(pid: int | None, marker: str, timeout: float = STOP_TIMEOUT) -> None:
    """SIGTERM (nspawn turns it into a clean shutdown), then SIGKILL to its process group."""
    if not process_alive(pid, marker):
        return
    assert pid is not None
    os.kill(pid, signal.SIGTERM)
    if wait_until(lambda: not process_alive(pid, marker), timeout):
        return
    log(f"pid {pid} ignored SIGTERM for {timeout:.0f}s, killing its process group")
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
    if not wait_until(lambda: not process_alive(pid, marker), 10):
        raise LabError(f"pid {pid} does not exit even after SIGKILL")


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.5) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())


# -- root file systems (the cache) -------------------------------------------


def cache_key(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:12]


def base_key() -> str:
    return cache_key(SUITE, MIRROR, sorted(BASE_PACKAGES), IMAGE_VERSION)


def qemu_key() -> str:
    return cache_key(base_key(), sorted(QEMU_PACKAGES))


def cached(kind: str, key: str) -> Path:
    return LAB_CACHE / f"{kind}-{SUITE}-{key}"


def build_cached(kind: str, key: str, build: Callable[[Path], None]) -> Path:
    """Builds into a temporary directory and renames it into place, so an
    interrupted build never leaves a half cache. The stamp (the key, in the
    directory name and stamp.json) changes with the suite or the package list."""
    target = cached(kind, key)
    with locked(LAB_CACHE / f".{kind}.lock"):
        if (target / "stamp.json").is_file():
            return target
        for stale in LAB_CACHE.glob(f".tmp-{kind}-*"):
            log(f"removing an interrupted build: {stale}")
            remove_tree(stale)
        tmp = LAB_CACHE / f".tmp-{kind}-{key}-{os.getpid()}"
        tmp.mkdir(parents=True)
        started = time.monotonic()
        try:
            build(tmp)
        except BaseException:
            remove_tree(tmp)
            raise
        stamp = {"suite": SUITE, "mirror": MIRROR, "key": key, "built": time.time()}
        (tmp / "stamp.json").write_text(json.dumps(stamp, indent=2) + "\n")
        tmp.rename(target)
        for old in LAB_CACHE.glob(f"{kind}-*"):
            if old != target:
                shutil.rmtree(old, ignore_errors=True)
        log(f"built {target} in {time.monotonic() - started:.0f}s")
    return target


def remove_tree(path: Path) -> None:
    """A killed debootstrap can leave /proc and /sys mounted in its target:
    unmount them first, so rmtree never walks into a live file system."""
    prefix = f"{path.resolve()}/"
    mountinfo = Path("/proc/self/mountinfo").read_text().splitlines()
    mounts = [line.split()[4] for line in mountinfo]
    for mount in sorted((m for m in mounts if m.startswith(prefix)), reverse=True):
        run(["umount", "--lazy", mount])
    shutil.rmtree(path, ignore_errors=True)


def build_base(tmp: Path) -> None:
    rootfs = tmp / "rootfs"
    log(f"debootstrap {SUITE} into {rootfs} (about a minute)")
    include = f"--include={','.join(BASE_PACKAGES)}"
    run(["debootstrap", "--variant=minbase", include, SUITE, rootfs, MIRROR])
    run(["chroot", rootfs, "systemctl", "enable", "systemd-networkd"])
    seal_image(rootfs)


def seal_image(rootfs: Path) -> None:
    """What every copy must not share or inherit: apt sources (lab hosts never
    reach Debian; the base role points apt at the bundle), SSH host keys and
    the machine id (made per host), the build machine's resolver."""
    (rootfs / "etc/apt/sources.list").write_text("")
    for entry in (rootfs / "etc/apt/sources.list.d").iterdir():
        entry.unlink()
    for lists in (rootfs / "var/lib/apt/lists").glob("*"):
        if lists.is_file():
            lists.unlink()
    for archive in (rootfs / "var/cache/apt/archives").glob("*.deb"):
        archive.unlink()
    for key in (rootfs / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    (rootfs / "etc/machine-id").write_text("")
    (rootfs / "etc/resolv.conf").unlink(missing_ok=True)
    (rootfs / "etc/resolv.conf").write_text("")


def ensure_base() -> Path:
    return build_cached("rootfs", base_key(), build_base) / "rootfs"


def build_qemu(tmp: Path) -> None:
    rootfs = tmp / "rootfs"
    log("copying the base root file system for the qemu image")
    run(["cp", "-a", ensure_base(), rootfs])
    # Only while building the cache: a temporary source for the kernel.
    (rootfs / "etc/apt/sources.list").write_text(f"deb {MIRROR} {SUITE} main\n")
    log(f"installing {', '.join(QEMU_PACKAGES)} (about a minute)")
    # nspawn rather than chroot + bind mounts: it mounts /proc, /sys and /dev in
    # its own namespace, so an interrupted build leaves no mount behind.
    script = (
        "set -e; apt-get update -qq; "
        "apt-get install -y -qq --no-install-recommends " + " ".join(QEMU_PACKAGES) + "; "
        "apt-get clean"
    )
    nspawn = "systemd-nspawn --quiet --register=no --keep-unit --as-pid2 --resolv-conf=copy-host"
    env = "--setenv=DEBIAN_FRONTEND=noninteractive"
    run([*nspawn.split(), env, f"--directory={rootfs}", "sh", "-c", script])
    (rootfs / "etc/fstab").write_text("/dev/vda / ext4 errors=remount-ro 0 1\n")
    for pattern, name in (("vmlinuz-*", "vmlinuz"), ("initrd.img-*", "initrd.img")):
        found = sorted((rootfs / "boot").glob(pattern))
        if not found:
            raise LabError(f"the kernel package left no /boot/{pattern}")
        shutil.copyfile(found[-1], tmp / name)
    seal_image(rootfs)


def ensure_qemu() -> Path:
    return build_cached("qemu", qemu_key(), build_qemu)


# -- network -----------------------------------------------------------------


def link_exists(name: str) -> bool:
    return Path(f"/sys/class/net/{name}").exists()


def ensure_bridge() -> None:
    """The lab bridge: the controller's address only, no NAT and no forwarding,
    and lab hosts get no gateway, so nothing leaves 10.213.0.0/24."""
    if not link_exists(BRIDGE):
        log(f"creating bridge {BRIDGE} {CONTROLLER}/{NETWORK.prefixlen}")
        run(["ip", "link", "add", "name", BRIDGE, "type", "bridge"])
        # No IPv6 either: no router solicitations or link-local chatter from the controller.
        Path(f"/proc/sys/net/ipv6/conf/{BRIDGE}/disable_ipv6").write_text("1\n")
    run(["ip", "address", "replace", f"{CONTROLLER}/{NETWORK.prefixlen}", "dev", BRIDGE])
    run(["ip", "link", "set", BRIDGE, "up"])


def remove_bridge_if_unused() -> None:
    if any(MACHINES.glob("*/machine.json")) if MACHINES.exists() else False:
        log(f"keeping {BRIDGE}: other machines still use it")
        return
    if bundle_server_running():
        log(f"keeping {BRIDGE}: the bundle server listens on it")
        return
    if link_exists(BRIDGE):
        run(["ip", "link", "delete", BRIDGE])
        log(f"removed bridge {BRIDGE}")


def check_address(text: str) -> ipaddress.IPv4Address:
    """Only 10.213.0.11-254: the lab never sends traffic to any other address."""
    try:
        address = ipaddress.IPv4Address(text)
    except ipaddress.AddressValueError as error:
        raise LabError(f"--ip {text!r} is not an IPv4 address") from error
    last = int(address) - int(NETWORK.network_address)
    if address not in NETWORK or not FIRST_HOST <= last <= 254:
        raise LabError(
            f"--ip {address} is outside the lab range 10.213.0.{FIRST_HOST}-254 "
            "(plan: 11-19 make lab/e2e, 20-59 molecule, 60-69 qemu; docs/DECISIONS.md)"
        )
    return address


# -- machines ----------------------------------------------------------------


@dataclass
class Machine:
    name: str
    address: str
    type: str  # nspawn | qemu
    memory: int | None = None
    disk2: str | None = None
    pid: int | None = None
    host_interface: str | None = None  # veth (nspawn) or tap (qemu) on the bridge

    @property
    def dir(self) -> Path:
        return MACHINES / self.name

    @property
    def console_log(self) -> Path:
        return self.dir / "console.log"

    @property
    def marker(self) -> str:
        """A string only this machine's process has in its command line (the
        trailing slash: lab-t5 must not match lab-t50's process)."""
        return f"{self.dir}/"

    def running(self) -> bool:
        return process_alive(self.pid, self.marker)

    def save(self) -> None:
        data = json.dumps(asdict(self), indent=2) + "\n"
        tmp = self.dir / "machine.json.tmp"
        tmp.write_text(data)
        tmp.rename(self.dir / "machine.json")

    @property
    def host_keys(self) -> Path:
        """The host's public keys as known_hosts lines (name and address)."""
        return self.dir / "known_hosts"

    def connection(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "address": self.address,
            "user": "root",
            "port": 22,
            "identity_file": str(SSH_KEY),
            "known_hosts": str(KNOWN_HOSTS),
            "type": self.type,
        }


def write_known_hosts() -> None:
    """KNOWN_HOSTS: the keys of every lab host that exists, nothing else (a
    destroyed host's address may come back with other keys). Call it locked."""
    lines = [
        machine.host_keys.read_text() for machine in all_machines() if machine.host_keys.is_file()
    ]
    KNOWN_HOSTS.parent.mkdir(parents=True, exist_ok=True)
    tmp = KNOWN_HOSTS.with_suffix(".tmp")
    tmp.write_text("".join(lines))
    tmp.chmod(0o644)
    tmp.replace(KNOWN_HOSTS)


def load_machine(name: str) -> Machine | None:
    path = MACHINES / name / "machine.json"
    if not path.is_file():
        return None
    return Machine(**json.loads(path.read_text()))


def all_machines() -> list[Machine]:
    if not MACHINES.is_dir():
        return []
    found = (load_machine(entry.name) for entry in sorted(MACHINES.iterdir()))
    return [machine for machine in found if machine is not None]


def address_answers(address: ipaddress.IPv4Address) -> bool:
    """Someone holds the address if port 22 accepts or actively refuses."""
    if not link_exists(BRIDGE):
        return False
    try:
        with socket.create_connection((str(address), 22), timeout=1):
            return True
    except ConnectionRefusedError:
        return True
    except OSError:
        return False


def ensure_ssh_key() -> None:
    with locked(STATE / ".ssh.lock"):
        if SSH_KEY.is_file():
            return
        SSH_KEY.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "clinchat-lab", "-f", SSH_KEY])


def tap_name(address: ipaddress.IPv4Address) -> str:
    return f"clinchat-t{str(address).rsplit('.', 1)[1]}"  # unique per address, <= 15 chars


def mac_address(address: ipaddress.IPv4Address) -> str:
    return f"52:54:00:0d:d5:{int(str(address).rsplit('.', 1)[1]):02x}"


def ssh_command(address: str, *command: str) -> list[str]:
    return ["ssh", "-i", str(SSH_KEY), *SSH_OPTIONS, f"root@{address}", *command]


def ssh_answers(address: str) -> bool:
    """A real login, not an open port: sshd may accept before keys and PAM work."""
    try:
        result = subprocess.run(  # noqa: S603
            ssh_command(address, "true"), capture_output=True, timeout=20, check=False
        )
    except subprocess.TimeoutExpired:
        return False
    return result.returncode == 0


def wait_for_ssh(machine: Machine, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not ssh_answers(machine.address):
        if not machine.running() or kernel_panicked(machine):
            raise LabError(
                f"{machine.name} stopped while booting; see {machine.console_log}:\n"
                + tail(machine.console_log, 40)
            )
        if time.monotonic() > deadline:
            raise LabError(
                f"{machine.name} ({machine.address}) does not answer SSH after {timeout:.0f}s; "
                f"it is still running: look at {machine.console_log}, then "
                f"`clinchat-lab destroy {machine.name}`.\n" + tail(machine.console_log)
            )
        time.sleep(1)


def kernel_panicked(machine: Machine) -> bool:
    """A panicked VM keeps running: read its console rather than wait for the timeout."""
    if machine.type != "qemu" or not machine.console_log.is_file():
        return False
    return "Kernel panic - not syncing" in machine.console_log.read_text(errors="replace")


def tail(path: Path, lines: int = 15) -> str:
    if not path.is_file():
        return "(no console log)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def reserve(
    name: str, address: ipaddress.IPv4Address, kind: str, args: argparse.Namespace
) -> Machine | None:
    """Under the lab lock: returns the running machine if it already exists as
    asked (nothing to do), else records a new one so no one else takes its address."""
    with locked(STATE / ".lab.lock"):
        existing = load_machine(name)
        if existing and existing.running():
            if existing.address != str(address) or existing.type != kind:
                raise LabError(
                    f"{name} already runs as {existing.type} {existing.address}; "
                    f"destroy it first to change it"
                )
            return existing
        for other in all_machines():
            if other.name != name and other.address == str(address):
                raise LabError(f"{address} is already taken by {other.name}")
        if address_answers(address):
            raise LabError(
                f"{address} already answers on {BRIDGE} but is none of the hosts in {MACHINES} "
                "(another CLINCHAT_LAB_STATE?); pick another address"
            )
        if existing or (MACHINES / name).exists():
            log(f"{name} exists but does not run: recreating it")
            remove_machine_files(existing or Machine(name, str(address), kind))
        machine = Machine(name, str(address), kind, args.memory, args.disk2)
        machine.dir.mkdir(parents=True)
        machine.save()
        ensure_bridge()
    return None


def create(args: argparse.Namespace) -> dict[str, Any]:
    if not NAME_RE.match(args.name):
        raise LabError(f"name {args.name!r}: use lower-case letters, digits and '-' (max 41)")
    address = check_address(args.ip)
    if args.disk2 and (args.type != "qemu" or not SIZE_RE.match(args.disk2)):
        raise LabError("--disk2 SIZE (e.g. 1G) needs --type qemu")
    if args.memory and args.type == "nspawn":
        log("--memory applies to qemu only: nspawn hosts share the controller's memory")
    ensure_ssh_key()
    image = ensure_qemu() if args.type == "qemu" else ensure_base().parent
    existing = reserve(args.name, address, args.type, args)
    if existing:
        wait_for_ssh(existing, args.timeout or 60)
        log(f"{existing.name} already runs (pid {existing.pid})")
        return existing.connection()
    machine = load_machine(args.name)
    assert machine is not None
    started = time.monotonic()
    try:
        prepare_rootfs(machine, image / "rootfs")
        if machine.type == "nspawn":
            boot_nspawn(machine)
        else:
            boot_qemu(machine, image)
        log(f"{machine.name}: booting (pid {machine.pid}), console: {machine.console_log}")
        timeout = args.timeout or (
            NSPAWN_BOOT_TIMEOUT if machine.type == "nspawn" else QEMU_BOOT_TIMEOUT
        )
        wait_for_ssh(machine, timeout)
    except LabError:
        raise  # e.g. no SSH in time: the host stays, with its console log, to look at
    except BaseException:
        # Interrupted (Ctrl-C, SIGTERM) or a bug: leave nothing half made behind.
        stop_process(machine.pid, machine.marker)
        remove_machine_files(machine)
        raise
    if machine.type == "nspawn":
        machine.host_interface = veth_of(machine)
        machine.save()
    log(f"{machine.name} answers SSH at {machine.address} after {time.monotonic() - started:.1f}s")
    return machine.connection()


def prepare_rootfs(machine: Machine, image: Path) -> None:
    """A private copy of the cached root, made into this host."""
    rootfs = machine.dir / "rootfs"
    run(["cp", "-a", "--reflink=auto", image, rootfs])
    etc = rootfs / "etc"
    (etc / "hostname").write_text(f"{machine.name}\n")
    (etc / "hosts").write_text(
        f"127.0.0.1\tlocalhost\n{machine.address}\t{machine.name}\n"
        "::1\tlocalhost ip6-localhost ip6-loopback\n"
    )
    (etc / "machine-id").write_text(uuid.uuid4().hex + "\n")
    match = (
        "Name=host0"
        if machine.type == "nspawn"
        else f"MACAddress={mac_address(ipaddress.IPv4Address(machine.address))}"
    )
    # 10- sorts before nspawn's 80-container-host0.network (DHCP); no Gateway=
    # and no DNS=: the host reaches the bridge and nothing beyond it.
    (etc / "systemd/network/10-lab.network").write_text(
        f"[Match]\n{match}\n\n[Network]\nAddress={machine.address}/{NETWORK.prefixlen}\n"
        "LinkLocalAddressing=no\nIPv6AcceptRA=no\n"
    )
    run(["ssh-keygen", "-A", "-f", rootfs])  # fresh host keys under rootfs/etc/ssh
    machine.host_keys.write_text(
        "".join(
            f"{machine.name},{machine.address} {' '.join(pub.read_text().split()[:2])}\n"
            for pub in sorted((etc / "ssh").glob("ssh_host_*_key.pub"))
        )
    )
    with locked(STATE / ".lab.lock"):
        write_known_hosts()
    ssh_dir = rootfs / "root/.ssh"
    ssh_dir.mkdir(mode=0o700, exist_ok=True)
    keys = ssh_dir / "authorized_keys"
    keys.write_text(SSH_KEY.with_suffix(".pub").read_text())
    keys.chmod(0o600)


def boot_nspawn(machine: Machine) -> None:
    """systemd as PID 1 in the container, its console to the log file.
    Private network (a veth on the bridge) also gives it CAP_NET_ADMIN, which
    nftables needs. Not given: CAP_SYS_MODULE, kernel.* sysctls, device access
    (LUKS), audit: those tests run on qemu."""
    options = "--boot --register=no --keep-unit --resolv-conf=off --timezone=off --link-journal=no"
    argv = [
        "systemd-nspawn",
        *options.split(),
        "--console=read-only",  # the console goes to the log file
        f"--directory={machine.dir / 'rootfs'}",
        f"--machine={machine.name}",  # also names the veth: vb-<name>
        f"--network-bridge={BRIDGE}",
    ]
    # This controller mounts cgroups "hybrid"; systemd 257 in the container
    # wants the unified hierarchy (v1 is deprecated there, gone in 258).
    unified = {"SYSTEMD_NSPAWN_UNIFIED_HIERARCHY": "1"}
    machine.pid = start_detached(argv, machine.console_log, unified)
    machine.save()


def boot_qemu(machine: Machine, image: Path) -> None:
    address = ipaddress.IPv4Address(machine.address)
    rootfs = machine.dir / "rootfs"
    disk = machine.dir / "root.img"
    run(["truncate", "-s", QEMU_ROOT_DISK, disk])
    # mke2fs -d fills the file system from a directory: no loop mount needed.
    run(["mkfs.ext4", "-q", "-F", "-L", "clinchat-root", "-d", rootfs, disk])
    shutil.rmtree(rootfs)
    drives = ["-drive", f"file={disk},format=raw,if=virtio,cache=unsafe,discard=unmap"]
    if machine.disk2:
        disk2 = machine.dir / "disk2.qcow2"
        run(["qemu-img", "create", "-q", "-f", "qcow2", disk2, machine.disk2])
        drives += ["-drive", f"file={disk2},format=qcow2,if=virtio"]
    tap = tap_name(address)
    if link_exists(tap):
        run(["ip", "link", "delete", tap])  # left over by a crashed VM at this address
    run(["ip", "tuntap", "add", "dev", tap, "mode", "tap"])
    run(["ip", "link", "set", tap, "master", BRIDGE, "up"])
    machine.host_interface = tap
    # TCG: KVM cannot boot a guest on these machines. -cx16: Debian 12's qemu
    # 7.2 corrupts EFLAGS on the kernel's cmpxchg16b (SLUB) now and then; the
    # guest double-faults in early boot (1 boot in 3-6 with -cpu max, 0 in 20
    # without). No display; the serial console goes to the log file.
    # virtio-rng: sshd must not wait for entropy.
    accel = "-accel tcg -cpu max,-cx16 -smp 2"
    machine_options = f"{accel} -m {machine.memory or 1024}"
    argv: list[str | Path] = [
        *f"qemu-system-x86_64 -name {machine.name} {machine_options}".split(),
        *"-nodefaults -no-user-config -display none -device virtio-rng-pci".split(),
        *["-serial", f"file:{machine.console_log}"],
        *["-kernel", str(image / "vmlinuz"), "-initrd", str(image / "initrd.img")],
        *["-append", "root=/dev/vda rw console=ttyS0"],
        *drives,
        *["-netdev", f"tap,id=lab0,ifname={tap},script=no,downscript=no"],
        *["-device", f"virtio-net-pci,netdev=lab0,mac={mac_address(address)}"],
    ]
    machine.pid = start_detached(argv, machine.dir / "qemu.log")
    machine.save()
    time.sleep(1)
    if not machine.running():
        raise LabError(f"qemu exited at once:\n{tail(machine.dir / 'qemu.log')}")


def veth_of(machine: Machine) -> str | None:
    """The host side of the container's veth: host0's peer ifindex, read inside."""
    result = subprocess.run(  # noqa: S603
        ssh_command(machine.address, "cat /sys/class/net/host0/iflink"),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    index = result.stdout.strip()
    for link in Path("/sys/class/net").iterdir():
        with contextlib.suppress(OSError):
            if (link / "ifindex").read_text().strip() == index:
                return link.name
    return None


def remove_machine_files(machine: Machine) -> None:
    if machine.type == "qemu":
        tap = tap_name(ipaddress.IPv4Address(machine.address))
        if link_exists(tap):
            run(["ip", "link", "delete", tap])
    shutil.rmtree(machine.dir, ignore_errors=True)


def destroy(name: str) -> None:
    machine = load_machine(name)
    if machine is None:
        if (MACHINES / name).exists():
            shutil.rmtree(MACHINES / name)
        log(f"{name}: nothing to destroy")
        return
    stop_process(machine.pid, machine.marker)
    # nspawn removes its veth when it exits; wait for that, so none is left behind.
    if machine.host_interface and machine.type == "nspawn":
        wait_until(lambda: not link_exists(machine.host_interface or ""), 10)
    with locked(STATE / ".lab.lock"):
        remove_machine_files(machine)
        write_known_hosts()
        remove_bridge_if_unused()
    log(f"{name}: destroyed")


def destroy_all() -> None:
    for machine in all_machines():
        destroy(machine.name)
    if MACHINES.is_dir():
        for leftover in MACHINES.iterdir():  # interrupted creates without machine.json
            shutil.rmtree(leftover, ignore_errors=True)
    stop_bundle()
    with locked(STATE / ".lab.lock"):
        remove_bridge_if_unused()


# -- the bundle server -------------------------------------------------------


def bundle_server() -> dict[str, Any] | None:
    if not BUNDLE_STATE.is_file():
        return None
    data: dict[str, Any] = json.loads(BUNDLE_STATE.read_text())
    return data


def bundle_server_running() -> bool:
    server = bundle_server()
    return bool(server and process_alive(server["pid"], BUNDLE_MARKER))


def port_open(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((str(CONTROLLER), port), 1):
        return True
    return False


def serve_bundle(directory: Path, port: int) -> dict[str, Any]:
    """python -m http.server on the bridge address only, never 0.0.0.0."""
    directory = directory.resolve()
    if not directory.is_dir():
        raise LabError(f"no bundle at {directory}: build it with `make bundle`")
    server = bundle_server()
    if server and bundle_server_running():
        if server["dir"] == str(directory) and server["port"] == port:
            return server
        stop_bundle()
    logfile = STATE / "bundle-server.log"
    argv = [sys.executable, "-m", "http.server", "--bind", str(CONTROLLER)]
    # Under the lab lock: a concurrent destroy must not remove the bridge
    # before the server is recorded as using it.
    with locked(STATE / ".lab.lock"):
        ensure_bridge()
        pid = start_detached([*argv, "--directory", directory, str(port)], logfile)
        url = f"http://{CONTROLLER}:{port}/"
        server = {"pid": pid, "dir": str(directory), "port": port, "url": url}
        BUNDLE_STATE.write_text(json.dumps(server, indent=2) + "\n")
    if not wait_until(
        lambda: port_open(port) or not process_alive(pid, BUNDLE_MARKER), 10
    ) or not port_open(port):
        BUNDLE_STATE.unlink(missing_ok=True)
        raise LabError(f"the bundle server did not start; see {logfile}:\n{tail(logfile)}")
    log(f"serving {directory} at {server['url']} (pid {pid})")
    return server


def stop_bundle() -> None:
    server = bundle_server()
    if server:
        stop_process(server["pid"], BUNDLE_MARKER, timeout=10)
        BUNDLE_STATE.unlink(missing_ok=True)
        log("stopped the bundle server")


# -- spec and inventory ------------------------------------------------------

GROUPS = ("web", "app", "gpu", "db", "cache", "vault", "monitoring", "directory")


def load_spec(path: Path) -> dict[str, Any]:
    try:
        spec: dict[str, Any] = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as error:
        raise LabError(f"cannot read the spec {path}: {error}") from error
    hosts = spec.get("hosts") or {}
    if not isinstance(hosts, dict) or not hosts:
        raise LabError(f"{path}: `hosts` must map host names to their settings")
    for name, host in hosts.items():
        unknown = set(host.get("groups", [])) - set(GROUPS)
        if unknown:
            raise LabError(f"{path}: {name}: unknown groups {sorted(unknown)} (known: {GROUPS})")
        if "address" not in host:
            raise LabError(f"{path}: {name}: `address` is required")
    return spec


def inventory_path(spec_path: Path, spec: dict[str, Any]) -> Path:
    return spec_path.resolve().parent / spec.get("inventory", "hosts.yml")


def write_inventory(path: Path, spec: dict[str, Any]) -> None:
    hosts = {
        name: {
            "ansible_host": str(host["address"]),
            "ansible_user": "root",
            "ansible_ssh_private_key_file": str(SSH_KEY),
            # ansible.cfg checks host keys; these are the lab's (written by `create`).
            "ansible_ssh_extra_args": f"-o UserKnownHostsFile={KNOWN_HOSTS}",
            "ansible_python_interpreter": "/usr/bin/python3",
        }
        for name, host in spec["hosts"].items()
    }
    children = {
        group: {
            "hosts": {n: None for n, h in spec["hosts"].items() if group in h.get("groups", [])}
        }
        for group in GROUPS
    }
    inventory = {"all": {"hosts": hosts, "children": children}}
    header = "# Written by tests/lab/clinchat-lab up (from lab.yml); do not edit.\n"
    path.write_text(header + yaml.safe_dump(inventory, sort_keys=False))


def spec_args(name: str, host: dict[str, Any], timeout: float | None) -> argparse.Namespace:
    return argparse.Namespace(
        name=name,
        ip=str(host["address"]),
        type=host.get("type", "nspawn"),
        memory=host.get("memory"),
        disk2=host.get("disk2"),
        timeout=timeout,
    )


def up(spec_path: Path, timeout: float | None) -> dict[str, Any]:
    spec = load_spec(spec_path)
    made = [create(spec_args(n, h, timeout)) for n, h in spec["hosts"].items()]
    inventory = inventory_path(spec_path, spec)
    write_inventory(inventory, spec)
    bundle_dir = Path(spec.get("bundle_dir", CACHE / "bundle"))
    bundle: dict[str, Any] | None = None
    try:
        bundle = serve_bundle(bundle_dir, int(spec.get("bundle_port", BUNDLE_PORT)))
    except LabError as error:
        log(f"warning: hosts are up but the bundle is not served: {error}")
    return {"inventory": str(inventory), "hosts": made, "bundle": bundle}


def down(spec_path: Path) -> None:
    spec = load_spec(spec_path)
    for name in spec["hosts"]:
        destroy(name)
    inventory_path(spec_path, spec).unlink(missing_ok=True)
    stop_bundle()
    with locked(STATE / ".lab.lock"):
        remove_bridge_if_unused()


# -- command line ------------------------------------------------------------


def parser() -> argparse.ArgumentParser:
    cli = argparse.ArgumentParser(prog="clinchat-lab", description=__doc__.split("\n")[0])
    sub = cli.add_subparsers(dest="command", required=True)
    rootfs_cli = sub.add_parser("rootfs", help="build (or reuse) the cached root file system")
    rootfs_cli.add_argument("--qemu", action="store_true", help="also the qemu VM image")
    create_cli = sub.add_parser("create", help="create and boot a host, print its JSON")
    create_cli.add_argument("name")
    create_cli.add_argument("--ip", required=True, help="10.213.0.11-254")
    create_cli.add_argument("--type", choices=("nspawn", "qemu"), default="nspawn")
    create_cli.add_argument("--memory", type=int, help="MB, qemu only (default 1024)")
    create_cli.add_argument("--disk2", help="size of a second blank virtio disk, qemu only")
    create_cli.add_argument("--timeout", type=float, help="seconds to wait for SSH")
    destroy_cli = sub.add_parser("destroy", help="stop hosts and remove them")
    destroy_cli.add_argument("names", nargs="*")
    destroy_cli.add_argument("--all", action="store_true", help="also the bundle server and bridge")
    sub.add_parser("list", help="JSON list of running hosts")
    for command in ("up", "down"):
        spec_cli = sub.add_parser(command, help=f"{command} every host of a spec")
        spec_cli.add_argument("--spec", type=Path, required=True)
        if command == "up":
            spec_cli.add_argument("--timeout", type=float, help="seconds to wait for SSH")
    serve = sub.add_parser("serve-bundle", help=f"serve the bundle on {CONTROLLER}")
    serve.add_argument("--dir", type=Path, default=CACHE / "bundle")
    serve.add_argument("--port", type=int, default=BUNDLE_PORT)
    sub.add_parser("stop-bundle", help="stop the bundle server")
    return cli


def dispatch(args: argparse.Namespace) -> Any:
    if args.command == "rootfs":
        built = {"nspawn": str(ensure_base())}
        return built | ({"qemu": str(ensure_qemu())} if args.qemu else {})
    if args.command == "create":
        return create(args)
    if args.command == "destroy":
        if args.all == bool(args.names):
            raise LabError("destroy: give host names or --all, not both")
        if args.all:
            destroy_all()
        for name in args.names:
            destroy(name)
        return None
    if args.command == "list":
        return [m.connection() | {"pid": m.pid} for m in all_machines() if m.running()]
    if args.command == "up":
        return up(args.spec, args.timeout)
    if args.command == "down":
        return down(args.spec)
    if args.command == "serve-bundle":
        if not 1024 <= args.port <= 65535:
            raise LabError("--port must be 1024-65535")
        return serve_bundle(args.dir, args.port)
    if args.command == "stop-bundle":
        return stop_bundle()
    raise AssertionError(args.command)


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    # SIGTERM unwinds like Ctrl-C: builds and creates clean up after themselves.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if os.geteuid() != 0:
        log("error: must run as root (bridges, nspawn, tap devices)")
        return 2
    try:
        result = dispatch(args)
    except LabError as error:
        log(f"error: {error}")
        return 1
    if result is not None:
        print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
