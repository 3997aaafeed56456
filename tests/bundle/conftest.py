"""Fixtures and marker of the bundle tests: they build the offline bundle with
playbooks/bundle.yml (root; Debian's archive and PyPI reachable) and prove that
a clean Debian 13 root installs everything from it with no network at all."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("CLINCHAT_CACHE", "/var/cache/clinchat"))
BUNDLE = CACHE / "bundle"
BUILD = CACHE / "bundle-build"
# The signing key lives with the user who builds (roles/bundle: bundle_gnupg_home).
GNUPG = Path.home() / ".local/share/clinchat/bundle-gnupg"
# Where the bundle is served inside the tests' private network namespaces.
PORT = 8089
URL = f"http://127.0.0.1:{PORT}"
KEYRING = "/etc/apt/keyrings/clinchat-bundle.asc"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "bundle: builds the offline bundle (root, network to Debian and PyPI; "
        "about 2 minutes cold) and installs from it offline",
    )


@dataclass
class Run:
    argv: list[str]
    rc: int
    output: str
    seconds: float

    def recap(self) -> dict[str, int]:
        match = re.search(r"localhost\s*:\s*(.*)", self.output.split("PLAY RECAP")[-1])
        assert match, self.output[-3000:]
        return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", match.group(1))}


def playbook(*extra: str, wrap: Sequence[str] = ()) -> Run:
    argv = [*wrap, "ansible-playbook", "playbooks/bundle.yml", *extra]
    env = {
        **os.environ,
        "PATH": f"{REPO / '.venv/bin'}:{os.environ['PATH']}",
        "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
        "ANSIBLE_FORCE_COLOR": "0",
        "ANSIBLE_NOCOLOR": "1",
    }
    started = time.monotonic()
    result = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, check=False)
    return Run(argv, result.returncode, result.stdout + result.stderr, time.monotonic() - started)


def cache_vars() -> list[str]:
    return ["-e", f"bundle_cache_dir={CACHE}", "-e", f"bundle_dir={BUNDLE}"]


@pytest.fixture(scope="session")
def built() -> Run:
    """The bundle, built (or found up to date) once per session."""
    if os.geteuid() != 0:
        pytest.skip("the bundle build needs root (debootstrap, chroot)")
    run = playbook(*cache_vars())
    assert run.rc == 0, run.output[-6000:]
    print(f"\nbundle build: {run.seconds:.0f}s, recap {run.recap()}")
    return run


@pytest.fixture(scope="session")
def manifest(built: Run) -> dict:
    return json.loads((BUNDLE / "manifest.json").read_text())


@pytest.fixture(scope="session")
def clean_root(built: Run) -> Path:
    roots = [p.parent for p in BUILD.glob("root-*/.complete")]
    assert len(roots) == 1, f"expected one cached clean root in {BUILD}, found {roots}"
    return roots[0]


def copy_root(clean_root: Path, target: Path) -> Path:
    subprocess.run(["cp", "-a", "--reflink=auto", clean_root, target], check=True)
    # What a bare host has: no apt source, no package lists.
    (target / "etc/apt/sources.list").write_text("")
    for entry in (target / "etc/apt/sources.list.d").glob("*"):
        entry.unlink()
    for lists in (target / "var/lib/apt/lists").glob("*"):
        if lists.is_file():
            lists.unlink()
    for deb in (target / "var/cache/apt/archives").glob("*.deb"):
        deb.unlink()
    (target / "etc/resolv.conf").unlink(missing_ok=True)
    (target / "etc/resolv.conf").write_text("")
    # Services must not start inside a chroot.
    policy = target / "usr/sbin/policy-rc.d"
    policy.write_text("#!/bin/sh\nexit 101\n")
    policy.chmod(0o755)
    return target


def offline(script: str, root: Path, serve: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run `script` (sh) in a new network namespace that has only loopback, a
    private mount namespace with /proc, /dev and /sys in `root`, and the bundle
    directory `serve` on 127.0.0.1:PORT. Nothing outside this machine can be reached."""
    server = (
        f"python3 -m http.server --bind 127.0.0.1 --directory {serve} {PORT} "
        ">/dev/null 2>&1 & "
        f"for i in $(seq 50); do (echo > /dev/tcp/127.0.0.1/{PORT}) 2>/dev/null && break; "
        "sleep 0.1; done; "
        if serve
        else ""
    )
    prelude = (
        "set -e; ip link set lo up; "
        f"mount -t proc proc {root}/proc; mount --rbind /dev {root}/dev; "
        f"mount --rbind /sys {root}/sys; mount -t tmpfs tmpfs {root}/run; "
        f"{server}"
    )
    return subprocess.run(
        ["unshare", "--net", "--mount", "--pid", "--fork", "bash", "-c", prelude + script],
        capture_output=True,
        text=True,
        check=False,
    )


def chroot(root: Path, command: str) -> str:
    """`command` in `root` with a host's clean environment (none of this machine's PIP_*)."""
    return (
        f"chroot {root} env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "
        f"HOME=/root LC_ALL=C.UTF-8 DEBIAN_FRONTEND=noninteractive {command}"
    )


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    path = tmp_path_factory.mktemp("bundle-host")
    yield path
    shutil.rmtree(path, ignore_errors=True)
