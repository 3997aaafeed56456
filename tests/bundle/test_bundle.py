"""The offline bundle: what it holds, that it is signed, that a clean Debian 13
root installs the whole package set and the app's wheel from it with no
network at all, that a tampered or unsigned repository is refused, and that a
second run changes and downloads nothing."""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from .conftest import (
    BUNDLE,
    GNUPG,
    KEYRING,
    REPO,
    URL,
    Run,
    cache_vars,
    chroot,
    copy_root,
    offline,
    playbook,
)

pytestmark = pytest.mark.bundle


def role_packages(gpu: bool, nvidia: bool = False) -> set[str]:
    """Every __<role>_packages list; the __<role>_gpu_packages lists only with gpu
    hosts, the nvidia role's only with the driver (bundle_include_nvidia)."""
    packages: set[str] = set()
    for path in REPO.glob("roles/*/vars/Debian-13.yml"):
        data = yaml.safe_load(path.read_text()) or {}
        for key, value in data.items():
            if key == "__nvidia_gpu_packages" and not (gpu and nvidia):
                continue
            if re.fullmatch(r"__\w+_packages", key) and (
                gpu or not re.fullmatch(r"__\w+_gpu_packages", key)
            ):
                packages.update(value)
    return packages


def has_nvidia_driver(manifest: dict) -> bool:
    """The bundle carries the NVIDIA driver (bundle_include_nvidia)."""
    return "nvidia" in manifest["debian"]["packages_by_role"] and bool(
        manifest["debian"]["packages_by_role"]["nvidia"]
    )


def has_gpu_hosts(manifest: dict) -> bool:
    """The bundle was built for an inventory with gpu hosts (bundle_include_serving)."""
    return bool({"serving", "serving-runtime"} & set(manifest["python"]["extras"]))


def index_packages() -> dict[str, list[str]]:
    """Package -> versions in the bundle's Packages index."""
    found: dict[str, list[str]] = {}
    for stanza in (BUNDLE / "apt/Packages").read_text().split("\n\n"):
        fields = dict(re.findall(r"^([\w-]+): (.*)$", stanza, re.MULTILINE))
        if "Package" in fields:
            found.setdefault(fields["Package"], []).append(fields["Version"])
    return found


# -- what the bundle holds ---------------------------------------------------------------


def test_layout(built: Run, manifest: dict) -> None:
    for name in ("Packages", "Packages.gz", "Release", "InRelease", "Release.gpg"):
        assert (BUNDLE / "apt" / name).is_file(), name
    for name in ("bundle.asc", "manifest.json", "SHA256SUMS"):
        assert (BUNDLE / name).is_file(), name
    debs = list((BUNDLE / "apt").glob("*.deb"))
    assert len(debs) == manifest["debian"]["debs"] > 100
    # Pool names: an epoch's ':' (apt writes %3a) would be decoded by a web server.
    assert not [d.name for d in debs if "%" in d.name or ":" in d.name]
    wheels = list((BUNDLE / "wheels").glob("*.whl"))
    assert len(wheels) == manifest["python"]["wheels"] > 5
    size = sum(p.stat().st_size for p in BUNDLE.rglob("*") if p.is_file())
    print(f"\nbundle: {len(debs)} debs, {len(wheels)} wheels, {size / 2**20:.0f} MiB")


def test_signing_key_is_private_and_outside_the_repository(built: Run) -> None:
    assert GNUPG.stat().st_mode & 0o777 == 0o700
    assert not GNUPG.resolve().is_relative_to(REPO)
    assert "PRIVATE KEY" not in (BUNDLE / "bundle.asc").read_text()
    assert not list(BUNDLE.rglob("private-keys-v1.d"))


def test_sha256sums_cover_the_whole_bundle(built: Run) -> None:
    lines = (BUNDLE / "SHA256SUMS").read_text().splitlines()
    listed = {line.split("  ", 1)[1]: line.split("  ", 1)[0] for line in lines}
    files = {
        str(p.relative_to(BUNDLE))
        for p in BUNDLE.rglob("*")
        if p.is_file() and p.name != "SHA256SUMS" and not p.name.startswith(".")
    }
    assert set(listed) == files
    for name in ("apt/InRelease", "bundle.asc", "manifest.json"):
        assert listed[name] == hashlib.sha256((BUNDLE / name).read_bytes()).hexdigest()
    subprocess.run(["sha256sum", "--quiet", "-c", "SHA256SUMS"], cwd=BUNDLE, check=True)


def test_every_package_a_role_installs_is_in_the_bundle(manifest: dict) -> None:
    wanted = role_packages(gpu=has_gpu_hosts(manifest), nvidia=has_nvidia_driver(manifest))
    assert wanted, "no roles/*/vars/Debian-13.yml lists __<role>_packages"
    assert wanted <= set(manifest["debian"]["packages"])
    gpu_only = role_packages(gpu=True) - role_packages(gpu=False)
    if not has_gpu_hosts(manifest):
        assert not gpu_only & set(index_packages()), "gpu packages in a bundle without gpu hosts"
    missing = wanted - set(index_packages())
    assert not missing, f"in the roles' vars but not in the repository: {sorted(missing)}"


def test_every_package_of_the_clean_root_is_in_the_bundle(clean_root: Path) -> None:
    """A host installed from an older point release can upgrade what it has."""
    status = (clean_root / "var/lib/dpkg/status").read_text()
    installed = set(re.findall(r"^Package: (\S+)$", status, re.MULTILINE))
    assert not installed - set(index_packages())


def test_release_is_signed_by_the_bundle_key(built: Run, tmp_path: Path) -> None:
    keyring = tmp_path / "bundle.gpg"
    subprocess.run(
        ["gpg", "--batch", "--yes", "--dearmor", "-o", keyring, BUNDLE / "bundle.asc"], check=True
    )
    apt = BUNDLE / "apt"
    for argv in (["InRelease"], ["Release.gpg", "Release"]):
        subprocess.run(["gpgv", "--keyring", keyring, *argv], cwd=apt, check=True)
    release = (apt / "Release").read_text()
    for name in ("Packages", "Packages.gz"):
        digest = hashlib.sha256((apt / name).read_bytes()).hexdigest()
        assert re.search(rf"^ {digest}\s+\d+ {name}$", release, re.MULTILINE), name


def test_wheelhouse_is_for_the_hosts_python(manifest: dict) -> None:
    names = [p.name for p in (BUNDLE / "wheels").glob("*.whl")]
    version = re.search(r'^version = "([^"]+)"', (REPO / "pyproject.toml").read_text(), re.M)
    assert version
    # The project's version plus the build id from its sources (test_build_id.py).
    built = manifest["python"]["project_version"]
    assert re.fullmatch(rf"{re.escape(version.group(1))}\+b[0-9a-f]{{12}}", built), built
    assert [n for n in names if n.startswith("clinchat_appliance-")] == [
        f"clinchat_appliance-{built}-py3-none-any.whl"
    ]
    for name in names:
        _dist, *_build, python, abi, platform = name[:-4].split("-")
        assert python in ("py3", "py2.py3", "cp313") or python.startswith("cp3"), name
        assert abi in ("none", "abi3", "cp313"), name
        assert platform == "any" or all(
            re.fullmatch(r"manylinux\w*_x86_64", tag) for tag in platform.split(".")
        ), name
    if "serving" not in manifest["python"]["extras"]:
        assert not [n for n in names if n.startswith("torch-")], "torch without the serving extra"
    if "serving-runtime" in manifest["python"]["extras"]:
        # torch comes from Debian (python3-torch); the engine's other pins from here.
        assert [n for n in names if n.startswith("tokenizers-")], names


# -- a bare host installs from the bundle, offline ---------------------------------------


@pytest.fixture(scope="module")
def installed(manifest: dict, clean_root: Path, scratch: Path) -> tuple[Path, str]:
    """A fresh copy of the clean root whose only apt source is the bundle over HTTP,
    trusting only the bundle's key; the full package set installed with no network."""
    root = copy_root(clean_root, scratch / "root")
    (root / "etc/apt/keyrings").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(BUNDLE / "bundle.asc", root / KEYRING.lstrip("/"))
    (root / "etc/apt/sources.list.d/clinchat-bundle.sources").write_text(
        f"Types: deb\nURIs: {URL}/apt/\nSuites: ./\nSigned-By: {KEYRING}\n"
    )
    packages = " ".join(manifest["debian"]["packages"])
    script = (
        chroot(root, "apt-get -q --error-on=any update")
        + " && "
        + chroot(root, f"apt-get -q -y --no-install-recommends install {packages}")
    )
    result = offline(script, root, serve=BUNDLE)
    return root, result.stdout + result.stderr if result.returncode else ""


def test_clean_root_installs_the_full_package_set_offline(
    installed: tuple[Path, str], manifest: dict
) -> None:
    root, failure = installed
    assert not failure, failure[-6000:]
    query = subprocess.run(
        ["chroot", root, "dpkg-query", "-W", "-f", "${Package} ${Status}\n"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    ok = {line.split()[0] for line in query.splitlines() if line.endswith("install ok installed")}
    wanted = {p.split("=")[0].split(":")[0] for p in manifest["debian"]["packages"]}
    assert wanted <= ok, sorted(wanted - ok)


def test_app_wheel_installs_offline_with_the_hosts_pip_conf(
    installed: tuple[Path, str], manifest: dict
) -> None:
    """The hosts' /etc/pip.conf (roles/base) and Debian 13's own Python 3.13."""
    root, failure = installed
    assert not failure, "the apt install failed"
    (root / "etc/pip.conf").write_text(
        "[global]\nno-index = true\n"
        f"find-links = {URL}/wheels/\ntrusted-host = 127.0.0.1\n"
        "disable-pip-version-check = true\n"
    )
    extras = ",".join(manifest["python"]["extras"])
    target = f"clinchat-appliance[{extras}]" if extras else "clinchat-appliance"
    script = " && ".join(
        [
            chroot(root, "python3 -m venv /opt/clinchat-test"),
            chroot(root, f"/opt/clinchat-test/bin/pip install -q '{target}'"),
            chroot(
                root,
                "/opt/clinchat-test/bin/python -c "
                "'import sys, app, fastapi, psycopg, uvicorn, gunicorn; print(sys.version)'",
            ),
        ]
    )
    result = offline(script, root, serve=BUNDLE)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    assert result.stdout.strip().splitlines()[-1].startswith(manifest["python"]["version"])


# -- apt refuses what the bundle key did not sign ----------------------------------------


def tampered_copies(target: Path, tmp: Path) -> dict[str, Path]:
    """Index-only copies of the repository (apt-get update needs no .deb)."""
    apt = BUNDLE / "apt"
    names = ("Packages", "Packages.gz", "Release", "InRelease", "Release.gpg")
    cases = {}
    for case in ("good", "unsigned", "tampered-release", "tampered-packages", "other-key"):
        repo = target / "srv" / case
        repo.mkdir(parents=True)
        for name in names:
            shutil.copyfile(apt / name, repo / name)
        cases[case] = repo
    for name in ("InRelease", "Release.gpg"):
        (cases["unsigned"] / name).unlink()
    inrelease = cases["tampered-release"] / "InRelease"
    inrelease.write_text(inrelease.read_text().replace("Origin: ClinChat", "Origin: Mallory"))
    release = cases["tampered-release"] / "Release"
    release.write_text(release.read_text().replace("Origin: ClinChat", "Origin: Mallory"))
    packages = cases["tampered-packages"] / "Packages"
    text = packages.read_text()
    packages.write_text(re.sub(r"^SHA256: \w+", "SHA256: " + "0" * 64, text, count=1, flags=re.M))
    (cases["tampered-packages"] / "Packages.gz").unlink()
    # Signed, but by a key the host does not trust.
    home = tmp / "gnupg"
    home.mkdir(mode=0o700)
    gpg = ["gpg", "--homedir", home, "--batch", "--yes", "--pinentry-mode", "loopback"]
    subprocess.run(
        [*gpg, "--passphrase", "", "--quick-gen-key", "Mallory", "ed25519", "sign"], check=True
    )
    other = cases["other-key"]
    for out, mode in (("InRelease", "--clearsign"), ("Release.gpg", "--detach-sign")):
        subprocess.run([*gpg, "--armor", mode, "-o", other / out, other / "Release"], check=True)
    subprocess.run(["gpgconf", "--homedir", home, "--kill", "gpg-agent"], check=False)
    return cases


def test_apt_refuses_unsigned_and_tampered_repositories(
    clean_root: Path, scratch: Path, tmp_path: Path
) -> None:
    root = copy_root(clean_root, scratch / "root-tamper")
    (root / "etc/apt/keyrings").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(BUNDLE / "bundle.asc", root / KEYRING.lstrip("/"))
    sources = root / "etc/apt/sources.list.d/clinchat-bundle.sources"
    outcome = {}
    for case in tampered_copies(root, tmp_path):
        sources.write_text(
            f"Types: deb\nURIs: file:///srv/{case}/\nSuites: ./\nSigned-By: {KEYRING}\n"
        )
        script = f"rm -rf {root}/var/lib/apt/lists/*; " + chroot(
            root, "apt-get -q --error-on=any update"
        )
        result = offline(script + " && " + chroot(root, "apt-cache policy nginx"), root)
        outcome[case] = (result.returncode, result.stdout + result.stderr)
    rc, output = outcome["good"]
    assert rc == 0 and "Candidate: (none)" not in output, output[-3000:]
    for case in ("unsigned", "tampered-release", "tampered-packages", "other-key"):
        rc, output = outcome[case]
        assert rc != 0, f"apt accepted the {case} repository:\n{output[-3000:]}"
        assert re.search(
            r"not signed|NO_PUBKEY|BADSIG|invalid|Hash Sum mismatch|unexpected size|"
            r"doesn't have a Release|is not signed|Splitting up",
            output,
        ), f"{case}: {output[-3000:]}"


# -- idempotence, check mode, failures ---------------------------------------------------


def test_second_run_changes_nothing_and_needs_no_network(built: Run) -> None:
    mtimes = {p.name: p.stat().st_mtime_ns for p in (BUNDLE / "apt").iterdir()}
    # No network namespace but loopback: a run that tried to download would fail.
    run = playbook(*cache_vars(), wrap=["unshare", "--net"])
    assert run.rc == 0, run.output[-6000:]
    assert run.recap()["changed"] == 0, run.output[-6000:]
    assert mtimes == {p.name: p.stat().st_mtime_ns for p in (BUNDLE / "apt").iterdir()}
    print(f"\nwarm bundle run: {run.seconds:.0f}s")


def test_check_mode_reports_no_change(built: Run) -> None:
    run = playbook(*cache_vars(), "--check", wrap=["unshare", "--net"])
    assert run.rc == 0, run.output[-6000:]
    assert run.recap()["changed"] == 0, run.output[-6000:]


def test_unknown_package_fails_naming_it(built: Run, tmp_path: Path) -> None:
    run = playbook(
        *cache_vars(),
        "-e",
        f"bundle_dir={tmp_path / 'bundle'}",
        "-e",
        '{"bundle_extra_packages": ["clinchat-no-such-package"]}',
    )
    assert run.rc != 0
    assert "package(s) clinchat-no-such-package: E: Unable to locate package" in run.output
    assert not list((tmp_path / "bundle" / "apt").glob("*.deb"))


def test_unreachable_mirror_fails_naming_it(built: Run, tmp_path: Path) -> None:
    mirror = "http://127.0.0.1:9/debian"
    run = playbook(
        *cache_vars(),
        "-e",
        f"bundle_dir={tmp_path / 'bundle'}",
        "-e",
        f"bundle_debian_mirror={mirror}",
        "-e",
        "bundle_debian_updates=false",
    )
    assert run.rc != 0
    assert f"fetching the package lists from {mirror}" in run.output
