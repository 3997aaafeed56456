"""The bundle the role built from nothing is whole and signed: what the hosts'
apt and pip will be given. tests/bundle goes further (offline installs, refusals).

The verify step runs on the controller, where the bundle is: plain subprocesses.
"""

import subprocess
from pathlib import Path

BUNDLE = Path("/var/cache/clinchat/molecule-bundle")  # molecule.yml: molecule_bundle_dir


def test_every_file_matches_sha256sums() -> None:
    sums = (BUNDLE / "SHA256SUMS").read_text().splitlines()
    assert len(sums) > 100
    subprocess.run(["sha256sum", "--quiet", "--check", "SHA256SUMS"], cwd=BUNDLE, check=True)


def test_release_verifies_with_the_published_key(tmp_path: Path) -> None:
    keyring = tmp_path / "bundle.gpg"
    subprocess.run(
        ["gpg", "--batch", "--dearmor", "-o", keyring, BUNDLE / "bundle.asc"], check=True
    )
    subprocess.run(["gpgv", "--keyring", keyring, "InRelease"], cwd=BUNDLE / "apt", check=True)
    # The manifest hosts check before they install a venv (roles/base: bundle_venv).
    subprocess.run(
        ["gpgv", "--keyring", keyring, "SHA256SUMS.gpg", "SHA256SUMS"], cwd=BUNDLE, check=True
    )


def test_the_build_is_kept_as_the_current_release() -> None:
    current = BUNDLE / "releases/current"
    assert (current / "SHA256SUMS").read_bytes() == (BUNDLE / "SHA256SUMS").read_bytes()
    subprocess.run(["sha256sum", "--quiet", "--check", "SHA256SUMS"], cwd=current, check=True)


def test_the_wheelhouse_holds_the_app_and_its_hash_locked_requirements() -> None:
    assert list((BUNDLE / "wheels").glob("clinchat_appliance-*.whl"))
    assert "--hash=sha256:" in (BUNDLE / "requirements/app.txt").read_text()
