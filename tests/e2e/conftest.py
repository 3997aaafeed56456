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


@pytest.fixture(scope="session")
def converged(lab: Path) -> Path:
    """site.yml converged on the lab once for every end-to-end module."""
    from tests.e2e.lab_client import playbook

    recap, output = playbook("site.yml", "-i", str(lab))
    assert recap and all(r["failed"] == 0 and r["unreachable"] == 0 for r in recap.values()), output
    return lab


@pytest.fixture(scope="session")
def policy_document(converged: Path) -> dict:
    """A policy the admin uploaded through nginx, ingested by the worker."""
    from tests.e2e.lab_client import browser, sign_in, upload_policy

    with browser() as client:
        me = sign_in(client, "admin1")
        return upload_policy(client, me["csrf_token"])
