"""The offline bundle: what it holds, that it is signed (apt's Release and the
SHA256SUMS manifest, by an ed25519 key with an expiry and a passphrase), that a
clean Debian 13 root installs the whole package set and the app's locked wheels
from it with no network at all, that a tampered or unsigned repository, a
tampered wheel and a tampered manifest are refused, and that a second run
changes and downloads nothing."""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from .conftest import (
    BUNDLE,
    CACHE,
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
    assert not GNUPG.resolve().is_relative_to(CACHE)
    assert "PRIVATE KEY" not in (BUNDLE / "bundle.asc").read_text()
    assert not list(BUNDLE.rglob("private-keys-v1.d"))


def test_signing_key_is_ed25519_expires_and_needs_its_passphrase(
    built: Run, tmp_path: Path
) -> None:
    listing = subprocess.run(
        ["gpg", "--homedir", GNUPG, "--batch", "--with-colons", "--list-secret-keys"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    sec = next(line.split(":") for line in listing.splitlines() if line.startswith("sec:"))
    assert sec[3] == "22", f"algorithm {sec[3]} is not EdDSA (22)"  # ed25519
    assert sec[6], "the signing key has no expiry"
    assert int(sec[6]) > time.time()
    # Signing without the passphrase fails (the agent is stopped after each build).
    subprocess.run(["gpgconf", "--homedir", GNUPG, "--kill", "gpg-agent"], check=False)
    data = tmp_path / "data"
    data.write_text("x")
    attempt = subprocess.run(
        [
            "gpg",
            "--homedir",
            GNUPG,
            "--batch",
            "--pinentry-mode",
            "loopback",
            "--passphrase",
            "",
            "--detach-sign",
            "-o",
            tmp_path / "sig",
            data,
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    subprocess.run(["gpgconf", "--homedir", GNUPG, "--kill", "gpg-agent"], check=False)
    assert attempt.returncode != 0, "the signing key signs without its passphrase"


def test_sha256sums_is_signed_by_the_bundle_key(built: Run, clean_root: Path) -> None:
    """Checked as a host checks it: Debian 13's sqv (apt's verifier) and the public key."""
    work = clean_root / "tmp/sums-check"
    work.mkdir(exist_ok=True)
    try:
        for name in ("SHA256SUMS", "SHA256SUMS.gpg", "bundle.asc"):
            shutil.copyfile(BUNDLE / name, work / name)
        verify = [
            "chroot",
            clean_root,
            "sqv",
            "--keyring",
            "/tmp/sums-check/bundle.asc",
            "/tmp/sums-check/SHA256SUMS.gpg",
            "/tmp/sums-check/SHA256SUMS",
        ]
        assert subprocess.run(verify, capture_output=True, check=False).returncode == 0
        (work / "SHA256SUMS").write_text((BUNDLE / "SHA256SUMS").read_text() + "\n")
        assert subprocess.run(verify, capture_output=True, check=False).returncode != 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


def test_the_signed_bundle_is_kept_as_its_current_release(built: Run) -> None:
    current = BUNDLE / "releases/current"
    content = hashlib.sha256((BUNDLE / "SHA256SUMS").read_bytes()).hexdigest()[:12]
    assert re.fullmatch(rf"\d{{8}}-{content}", current.readlink().name), current.readlink()
    for name in ("SHA256SUMS", "SHA256SUMS.gpg"):
        assert (current / name).read_bytes() == (BUNDLE / name).read_bytes()
    subprocess.run(["sha256sum", "--quiet", "-c", "SHA256SUMS"], cwd=current, check=True)


def test_locks_pin_every_wheel_of_the_wheelhouse(built: Run, manifest: dict) -> None:
    """The wheelhouse is exactly the committed locks' wheels plus the project's; each
    requirements/<file>.txt pins the project's wheel of this build by its hash."""
    pinned = {}
    for lock in (REPO / "requirements").glob("*.lock"):
        for name, version in re.findall(r"^([a-z0-9-]+)==(\S+) \\$", lock.read_text(), re.M):
            pinned[name] = version
    wheels = {
        re.sub(r"[-_.]+", "-", p.name.split("-")[0]).lower(): p.name.split("-")[1]
        for p in (BUNDLE / "wheels").glob("*.whl")
    }
    project = wheels.pop("clinchat-appliance")
    assert wheels.items() <= pinned.items(), sorted(wheels.items() - pinned.items())
    wheel = next((BUNDLE / "wheels").glob("clinchat_appliance-*.whl"))
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    for name in ("app.txt", "serving.txt"):
        text = (BUNDLE / "requirements" / name).read_text()
        assert f"clinchat-appliance=={project} \\\n    --hash=sha256:{digest}" in text, name


def test_sha256sums_cover_the_whole_bundle(built: Run) -> None:
    lines = (BUNDLE / "SHA256SUMS").read_text().splitlines()
    listed = {line.split("  ", 1)[1]: line.split("  ", 1)[0] for line in lines}
    files = {
        str(p.relative_to(BUNDLE))
        for p in BUNDLE.rglob("*")
        if p.is_file()
        and p.name not in ("SHA256SUMS", "SHA256SUMS.gpg")
        and not p.name.startswith(".")
        and p.relative_to(BUNDLE).parts[0] != "releases"
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


def host_playbook(root: Path, serve: Path, expect: str, *extra: str) -> tuple[int, str]:
    """tests/bundle/playbooks/bundle_venv.yml (roles/base's bundle_venv, what the app,
    serving and openbao roles run) in the chroot `root`, offline, the bundle `serve`
    on 127.0.0.1."""
    argv = [
        str(REPO / ".venv/bin/ansible-playbook"),
        str(REPO / "tests/bundle/playbooks/bundle_venv.yml"),
        "-i",
        f"{root},",
        "-c",
        "community.general.chroot",
        "-e",
        "ansible_python_interpreter=/usr/bin/python3",
        "-e",
        f"test_bundle_url={URL}",
        "-e",
        f"test_expect={expect}",
        *extra,
    ]
    env = (
        f"ANSIBLE_CONFIG={REPO / 'ansible.cfg'} ANSIBLE_NOCOLOR=1 "
        f"ANSIBLE_ROLES_PATH={REPO / 'roles'} ANSIBLE_COLLECTIONS_PATH={REPO / 'collections'}"
    )
    script = f"cd {REPO} && env {env} " + " ".join(f"'{a}'" for a in argv)
    result = offline(script, root, serve=serve)
    return result.returncode, result.stdout + result.stderr


def recap_changed(output: str) -> int:
    match = re.search(r"changed=(\d+)", output.split("PLAY RECAP")[-1])
    assert match, output[-3000:]
    return int(match.group(1))


def venv_imports(root: Path) -> bool:
    probe = chroot(root, "/opt/clinchat-test/venv/bin/python -c 'import app, fastapi, psycopg'")
    return subprocess.run(["bash", "-c", probe], capture_output=True, check=False).returncode == 0


def tampered_bundle(tmp: Path, case: str) -> Path:
    """A view of the bundle (symbolic links) with one thing changed."""
    view = tmp / f"bundle-{case}"
    view.mkdir()
    for entry in BUNDLE.iterdir():
        if entry.name not in ("wheels", "requirements", "SHA256SUMS"):
            (view / entry.name).symlink_to(entry)
    for sub in ("wheels", "requirements"):
        (view / sub).mkdir()
        for entry in (BUNDLE / sub).iterdir():
            (view / sub / entry.name).symlink_to(entry)
    shutil.copyfile(BUNDLE / "SHA256SUMS", view / "SHA256SUMS")
    if case == "wheel":
        # One dependency's wheel with a byte appended: its hash is no longer the lock's.
        wheel = next((BUNDLE / "wheels").glob("idna-*.whl"))
        (view / "wheels" / wheel.name).unlink()
        (view / "wheels" / wheel.name).write_bytes(wheel.read_bytes() + b"\0")
    elif case == "manifest":
        # SHA256SUMS rewritten to match a changed requirements file: the signature breaks.
        text = (BUNDLE / "requirements/app.txt").read_text() + "# changed\n"
        (view / "requirements/app.txt").unlink()
        (view / "requirements/app.txt").write_text(text)
        digest = hashlib.sha256(text.encode()).hexdigest()
        sums = re.sub(
            r"^\w{64}(  requirements/app\.txt)$",
            rf"{digest}\1",
            (BUNDLE / "SHA256SUMS").read_text(),
            flags=re.M,
        )
        (view / "SHA256SUMS").write_text(sums)
    elif case == "requirements":
        # A changed requirements file under the genuine, signed SHA256SUMS.
        (view / "requirements/app.txt").unlink()
        (view / "requirements/app.txt").write_text(
            (BUNDLE / "requirements/app.txt").read_text() + "# changed\n"
        )
    return view


@pytest.fixture(scope="module")
def venv_root(installed: tuple[Path, str]) -> Path:
    root, failure = installed
    assert not failure, "the apt install failed"
    return root


@pytest.mark.parametrize("case", ["wheel", "manifest", "requirements"])
def test_a_host_refuses_a_tampered_bundle_and_installs_nothing(
    venv_root: Path, manifest: dict, tmp_path: Path, case: str
) -> None:
    expect = f"clinchat-appliance=={manifest['python']['project_version']}"
    shutil.rmtree(venv_root / "opt/clinchat-test", ignore_errors=True)  # a host's first install
    rc, output = host_playbook(venv_root, tampered_bundle(tmp_path, case), expect)
    assert rc != 0, f"the host accepted a tampered {case}:\n{output[-4000:]}"
    reason = {
        "wheel": r"THESE PACKAGES DO NOT MATCH THE HASHES",
        "manifest": r"SHA256SUMS is not signed by the key",
        "requirements": r"requirements/app\.txt from .* has SHA-256 \w+, the signed SHA256SUMS",
    }[case]
    assert re.search(reason, output), output[-4000:]
    assert not venv_imports(venv_root), f"a tampered {case} left an installed venv"


def test_a_host_installs_the_app_s_locked_wheels_with_hashes_checked(
    venv_root: Path, manifest: dict
) -> None:
    """Debian 13's own Python 3.13; then a second run and check mode change nothing;
    a version the bundle does not hold fails naming it."""
    expect = f"clinchat-appliance=={manifest['python']['project_version']}"
    rc, output = host_playbook(venv_root, BUNDLE, expect)
    assert rc == 0, output[-6000:]
    assert venv_imports(venv_root)
    pins = (venv_root / "opt/clinchat-test/venv.requirements.txt").read_text()
    assert pins == (BUNDLE / "requirements/app.txt").read_text()
    assert expect in pins and "--hash=sha256:" in pins
    for extra in ([], ["--check"]):
        rc, output = host_playbook(venv_root, BUNDLE, expect, *extra)
        assert rc == 0 and recap_changed(output) == 0, output[-6000:]
    rc, output = host_playbook(venv_root, BUNDLE, "clinchat-appliance==0.0.1")
    assert rc != 0 and "does not pin clinchat-appliance==0.0.1" in output, output[-4000:]


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
