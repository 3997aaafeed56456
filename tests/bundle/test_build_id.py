"""The project's wheel carries a build id (PEP 440 local version) from its
sources: a rebuilt wheel is a new version, so hosts install it and restart;
the same sources give the same id; the wheelhouse keeps one build only."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BUILD = REPO / "roles/bundle/files/bundle_build.py"


def project(root: Path, body: str) -> Path:
    """A one-module project, as small as a wheel gets."""
    (root / "tiny").mkdir(parents=True, exist_ok=True)
    (root / "tiny/__init__.py").write_text(body)
    (root / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools"]\nbuild-backend = "setuptools.build_meta"\n\n'
        '[project]\nname = "tiny-project"\nversion = "1.2.3"\n'
        'dependencies = ["packaging>=20"]\n'
    )
    return root


def build(args: list[str]) -> dict:
    result = subprocess.run(
        [sys.executable, str(BUILD), *args], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(result.stdout)


def build_project(src: Path, out: Path) -> dict:
    return build(
        ["project", "--project", str(src), "--out", str(out), "--paths", "pyproject.toml", "tiny"]
    )


def wheel_version(wheel: Path) -> str:
    with zipfile.ZipFile(wheel) as archive:
        name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        metadata = archive.read(name).decode()
    match = re.search(r"^Version: (\S+)$", metadata, re.MULTILINE)
    assert match, metadata
    return match.group(1)


def test_a_changed_source_is_a_new_version(tmp_path: Path) -> None:
    src = project(tmp_path / "src", "ANSWER = 1\n")
    out = tmp_path / "out"

    first = build_project(src, out)
    assert first["changed"]
    first_version = wheel_version(Path(first["wheel"]))
    assert re.fullmatch(r"1\.2\.3\+b[0-9a-f]{12}", first_version), first_version
    assert Path(first["wheel"]).name == f"tiny_project-{first_version}-py3-none-any.whl"

    again = build_project(src, out)
    assert not again["changed"] and again["wheel"] == first["wheel"]

    (src / "tiny/__init__.py").write_text("ANSWER = 2\n")
    second = build_project(src, out)
    second_version = wheel_version(Path(second["wheel"]))
    assert second["changed"] and second_version != first_version
    assert second_version.startswith("1.2.3+b")
    assert [p.name for p in out.glob("*.whl")] == [Path(second["wheel"]).name]

    # The same sources again: the same id (nothing but the sources goes into it).
    (src / "tiny/__init__.py").write_text("ANSWER = 1\n")
    assert wheel_version(Path(build_project(src, out)["wheel"])) == first_version


def test_the_wheelhouse_holds_one_build_of_the_project(tmp_path: Path) -> None:
    sys.path.insert(0, str(BUILD.parent))
    try:
        import bundle_build
    finally:
        sys.path.remove(str(BUILD.parent))
    src = project(tmp_path / "src", "ANSWER = 1\n")
    first = Path(build_project(src, tmp_path / "out1")["wheel"])
    (src / "tiny/__init__.py").write_text("ANSWER = 2\n")
    second = Path(build_project(src, tmp_path / "out2")["wheel"])
    house = tmp_path / "wheels"

    assert bundle_build.place_project_wheel(first, house, check=False)
    assert not bundle_build.place_project_wheel(first, house, check=False)
    # Check mode says a newer build would replace it, and touches nothing.
    assert bundle_build.place_project_wheel(second, house, check=True)
    assert [p.name for p in house.glob("*.whl")] == [first.name]
    assert bundle_build.place_project_wheel(second, house, check=False)
    assert [p.name for p in house.glob("*.whl")] == [second.name]
    # Hosts install each build by its own hash; the locked dependencies stay as they are.
    lock = {"packaging": ("26.4", ["0" * 64])}
    one, two = (bundle_build.host_requirements(lock, w, "app") for w in (first, second))
    assert one != two
    for text, wheel in ((one, first), (two, second)):
        version = wheel.name.split("-")[1]
        assert f"tiny-project=={version} \\\n    --hash=sha256:" in text
        assert "packaging==26.4 \\\n    --hash=sha256:" + "0" * 64 in text
