"""The lab of `make lab`, brought up once for the end-to-end tests."""

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LAB = REPO / "tests" / "lab" / "clinchat-lab"
SPEC = REPO / "inventories" / "lab" / "lab.yml"


def run(*args: str | os.PathLike[str], check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603
        [str(a) for a in args], cwd=REPO, check=check, capture_output=True, text=True
    )


@pytest.fixture(scope="session")
def lab() -> Iterator[Path]:
    """Creates the lab hosts and serves the bundle; destroys them afterwards
    unless CLINCHAT_KEEP_LAB=1 (to look around after a failure)."""
    run(LAB, "up", "--spec", SPEC)
    yield REPO / "inventories" / "lab"
    if os.environ.get("CLINCHAT_KEEP_LAB") != "1":
        run(LAB, "down", "--spec", SPEC, check=False)
