"""Each signed build of the bundle is kept as releases/<date>-<content hash>: the same
content is the same release on any day, a release never changes when the bundle
does, releases/current names the newest, and only --keep prunes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BUILD = REPO / "roles/bundle/files/bundle_build.py"


def release(bundle: Path, date: str, *extra: str) -> dict:
    """`release` of bundle_build.py; extra: --check, or --keep N."""
    check = [e for e in extra if e == "--check"]
    rest = [e for e in extra if e != "--check"]
    argv = [*check, "release", "--bundle-dir", str(bundle), "--date", date, *rest]
    result = subprocess.run(
        [sys.executable, str(BUILD), *argv],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(result.stdout)


def sign(bundle: Path, files: dict[str, str]) -> None:
    """A bundle as the build leaves it: files replaced by renaming, then SHA256SUMS
    (the signature's content does not matter to this step)."""
    for name, text in files.items():
        path = bundle / name
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(text)
        tmp.replace(path)
    subprocess.run(
        [sys.executable, str(BUILD), "sums", "--bundle-dir", str(bundle)],
        capture_output=True,
        check=True,
    )
    (bundle / "SHA256SUMS.gpg").write_text("signature\n")


def test_releases_are_immutable_versioned_and_pruned_only_on_request(tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    sign(bundle, {"wheels/a.whl": "one", "manifest.json": "{}"})
    first = release(bundle, "20261201")
    assert first["changed"] and first["release"].startswith("20261201-")
    store = bundle / "releases"
    assert os.readlink(store / "current") == first["release"]
    # Same content on another day: the same release, nothing changes.
    again = release(bundle, "20261202")
    assert not again["changed"] and again["release"] == first["release"]
    # The check mode of a new build says so and writes nothing.
    sign(bundle, {"wheels/a.whl": "two"})
    assert release(bundle, "20261203", "--check")["changed"]
    assert [p.name for p in store.iterdir() if p.name != "current"] == [first["release"]]
    second = release(bundle, "20261203")
    assert second["changed"] and second["release"] != first["release"]
    assert os.readlink(store / "current") == second["release"]
    # The older release still holds what it was built from, and verifies.
    assert (store / first["release"] / "wheels/a.whl").read_text() == "one"
    for name in (first["release"], second["release"]):
        subprocess.run(["sha256sum", "--quiet", "-c", "SHA256SUMS"], cwd=store / name, check=True)
    # Releases are not part of the bundle's own manifest.
    sign(bundle, {})
    assert "releases/" not in (bundle / "SHA256SUMS").read_text()
    # Only --keep prunes, never the current release.
    sign(bundle, {"wheels/a.whl": "three"})
    third = release(bundle, "20261204", "--keep", "2")
    assert third["pruned"] == [first["release"]]
    assert sorted(third["releases"]) == sorted([second["release"], third["release"]])
    assert not (store / first["release"]).exists()
