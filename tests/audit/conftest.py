"""Fixture audits run by real ansible-playbook, connection local, against
temporary directories of this machine: no lab host is needed or touched."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
FIXTURES = Path(__file__).resolve().parent / "fixtures"
# The collection's plain-Python helpers (plugin_utils) import as ansible_collections.clinchat.*.
sys.path.insert(0, str(REPO / "collections"))

BANNER_SCRIPT = "<script>alert('evidence')</script>"
DIFF_SCRIPT = "<script>alert('drift')</script>"
SECRETS = ("s3cret-fixture-value", "old-secret-value")


@dataclass
class Run:
    rc: int
    output: str
    out_dir: Path

    @property
    def json_path(self) -> Path:
        return self.out_dir / "report.json"

    @property
    def report(self) -> dict[str, Any]:
        return json.loads(self.json_path.read_text())

    def control(self, host: str, control_id: str) -> dict[str, Any]:
        for control in self.report["hosts"][host]["controls"]:
            if control["id"] == control_id:
                return control
        raise AssertionError(f"{control_id} not in the report of {host}")


def make_hosts(base: Path) -> None:
    """fixture-a complies with every control, fixture-b has drifted."""
    files = {
        "fixture-a": {
            "sshd.conf": ("PermitRootLogin no\n", 0o600),
            "sudoers": ("Defaults timestamp_timeout=5\n", 0o440),
            "one.rules": ("rule one\n", 0o640),
            "two.rules": ("rule two\n", 0o640),
            "idle_timeout": ("600\n", 0o644),
            "banner": ("Authorized use only: Example Hospital\n", 0o644),
            "secret": (SECRETS[0], 0o600),
        },
        "fixture-b": {
            "sshd.conf": (f"PermitRootLogin yes\n{DIFF_SCRIPT}\n", 0o600),
            "one.rules": ("rule one\n", 0o640),
            "two.rules": ("rule TWO\n", 0o640),
            "idle_timeout": ("3600\n", 0o644),
            "banner": (BANNER_SCRIPT + "\n", 0o644),
            "secret": (SECRETS[1], 0o600),
        },
    }
    for host, contents in files.items():
        (base / host / "data").mkdir(parents=True)
        (base / host / "data").chmod(0o700 if host == "fixture-a" else 0o755)
        for name, (text, mode) in contents.items():
            path = base / host / name
            path.write_text(text)
            path.chmod(mode)
    bundle = base / "bundle"
    bundle.mkdir()
    manifest = {"format": 1, "url": "bundle-url", "python": {"project_version": "0.1.0+bfixture"},
                "debian": {"suite": "trixie", "debs": 3}}  # fmt: skip
    (bundle / "manifest.json").write_text(json.dumps(manifest))


def run_playbook(
    playbook: Path,
    base: Path,
    *args: str,
    inventory: Path = FIXTURES / "inventory.yml",
    env: dict[str, str] | None = None,
) -> Run:
    out_dir = base / "out"
    environ = {
        **os.environ,
        "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
        "ANSIBLE_FORCE_COLOR": "0",
        "CLINCHAT_AUDIT_DIR": str(out_dir),
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        **(env or {}),
    }
    command = ["ansible-playbook", "-i", str(inventory), str(playbook),
               "-e", f"audit_fixture_dir={base}", *args]  # fmt: skip
    done = subprocess.run(
        command, cwd=REPO, env=environ, capture_output=True, text=True, timeout=300, check=False
    )
    return Run(done.returncode, done.stdout + done.stderr, out_dir)


@pytest.fixture(scope="session")
def fixture_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("audit")
    make_hosts(base)
    return base


@pytest.fixture(scope="session")
def audit(fixture_base: Path) -> Run:
    """The fixture audit in check mode with diff, as an auditor runs it."""
    return run_playbook(
        FIXTURES / "controls.yml", fixture_base, "--check", "--diff", env={"CLINCHAT_AUDIT": "1"}
    )
