"""`make dev` starts the app with every real service, and it answers (tests/services/dev.py)."""

import os
import subprocess
import sys
from pathlib import Path

from tests.services.postgres import free_port
from tests.services.stack import REPO


def test_make_dev_starts_a_ready_app_and_cleans_up() -> None:
    before = {p.name for p in Path("/tmp").glob("clinchat-dev-*")}
    result = subprocess.run(  # noqa: S603
        [sys.executable, "-m", "tests.services.dev", "--smoke", "--port", str(free_port())],
        cwd=REPO,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert "dev: ready:" in output
    for dependency in ("database", "redis", "vault", "serving"):
        assert f"'{dependency}': 'up'" in output, output[-4000:]
    assert "signed in as clin1: roles ['clinician']" in output
    after = {p.name for p in Path("/tmp").glob("clinchat-dev-*")}
    assert after <= before, "the dev directory was left behind"
