"""The offline bundle: complete for the roles, signed, and apt trusts nothing else.

Runs playbooks/bundle.yml (a no-op when the cached bundle is current) and checks
what it built. The molecule scenarios and tests/e2e then install from it on
hosts that have no other source.
"""

import glob
import hashlib
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
BUNDLE = Path("/var/cache/clinchat/bundle")
BUILD = Path("/var/cache/clinchat/bundle-build")
RECAP = re.compile(r"localhost\s*:\s*ok=\d+\s+changed=(\d+)\s+unreachable=0\s+failed=0")


def playbook(*extra: str) -> str:
    result = subprocess.run(
        ["ansible-playbook", "playbooks/bundle.yml", "-i", "inventories/lab", *extra],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    return result.stdout


@pytest.fixture(scope="module")
def bundle() -> Path:
    playbook()
    return BUNDLE


def test_second_run_and_check_change_nothing(bundle: Path) -> None:
    assert RECAP.search(playbook())[1] == "0"
    assert RECAP.search(playbook("--check"))[1] == "0"


def test_every_role_package_is_in_the_repository(bundle: Path) -> None:
    wanted: set[str] = set()
    for path in glob.glob(str(REPO / "roles/*/vars/Debian-13.yml")):
        for key, value in (yaml.safe_load(Path(path).read_text()) or {}).items():
            if key.startswith("__") and key.endswith("_packages"):
                wanted.update(value)
    index = (bundle / "apt/Packages").read_text()
    present = set(re.findall(r"^Package: (\S+)$", index, re.M))
    assert wanted and wanted <= present, sorted(wanted - present)


def test_release_is_signed_by_the_bundle_key(bundle: Path, tmp_path: Path) -> None:
    keyring = tmp_path / "bundle.gpg"
    subprocess.run(["gpg", "--dearmor", "-o", str(keyring), str(bundle / "bundle.asc")], check=True)
    subprocess.run(
        ["gpgv", "--keyring", str(keyring), str(bundle / "apt/InRelease")],
        check=True,
        capture_output=True,
    )


def test_checksums_match(bundle: Path) -> None:
    for line in (bundle / "SHA256SUMS").read_text().splitlines():
        digest, name = line.split("  ", 1)
        assert hashlib.sha256((bundle / name).read_bytes()).hexdigest() == digest, name


def test_wheelhouse_has_the_project_for_python_313(bundle: Path) -> None:
    wheels = [p.name for p in (bundle / "wheels").glob("*.whl")]
    assert any(w.startswith("clinchat_appliance-") for w in wheels)
    assert any("cp313" in w for w in wheels if w.startswith("pydantic_core"))


def _apt_root(tmp_path: Path, repo: Path) -> Path:
    """A copy of the clean Debian root whose only source is `repo`."""
    root = next(BUILD.glob("root-trixie-*"))
    copy = tmp_path / "root"
    subprocess.run(["cp", "-a", str(root), str(copy)], check=True)
    (copy / "etc/apt/sources.list").write_text("")
    (copy / "etc/apt/keyrings").mkdir(parents=True, exist_ok=True)
    shutil.copy(BUNDLE / "bundle.asc", copy / "etc/apt/keyrings/clinchat-bundle.asc")
    shutil.copytree(repo, copy / "srv/bundle")
    (copy / "etc/apt/sources.list.d/bundle.sources").write_text(
        "Types: deb\nURIs: file:///srv/bundle/\nSuites: ./\n"
        "Signed-By: /etc/apt/keyrings/clinchat-bundle.asc\n"
    )
    return copy


def test_apt_accepts_the_bundle_and_refuses_it_tampered(bundle: Path, tmp_path: Path) -> None:
    root = _apt_root(tmp_path, bundle / "apt")
    update = ["chroot", str(root), "apt-get", "update", "-o", "Acquire::Languages=none"]
    ok = subprocess.run(update, capture_output=True, text=True, check=False)
    assert ok.returncode == 0 and "W:" not in ok.stdout + ok.stderr, ok.stdout + ok.stderr
    # one byte changed in the signed Release: apt must refuse the whole source
    inrelease = root / "srv/bundle/InRelease"
    inrelease.write_text(
        inrelease.read_text().replace("ClinChat offline bundle", "ClinChat offline bundlX")
    )
    shutil.rmtree(root / "var/lib/apt/lists", ignore_errors=True)
    (root / "var/lib/apt/lists/partial").mkdir(parents=True)
    bad = subprocess.run(update, capture_output=True, text=True, check=False)
    output = bad.stdout + bad.stderr
    assert bad.returncode != 0 or "not signed" in output or "BADSIG" in output, output
    assert "BADSIG" in output or "signature" in output.lower(), output
