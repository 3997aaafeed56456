#!/usr/bin/env python3
"""Builds the parts of the offline bundle; run by roles/bundle.

Each subcommand compares a stamp of its inputs with the one stored beside its
output and rebuilds only when they differ, so a second run changes nothing.
With --check it only reports whether it would change. It prints one JSON
object: {"changed": bool, "msg": str}.
"""

import argparse
import glob
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

import yaml

STAMP = ".inputs"


class BuildError(Exception):
    pass


def sha256(*parts: str) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode())
        digest.update(b"\0")
    return digest.hexdigest()


def run(*args: str, **kwargs) -> str:
    result = subprocess.run(list(args), capture_output=True, text=True, **kwargs)  # noqa: S603
    if result.returncode != 0:
        raise BuildError(f"{' '.join(args[:4])} ... failed:\n{result.stderr.strip()[-3000:]}")
    return result.stdout


def stamp_of(directory: Path) -> str | None:
    stamp = directory / STAMP
    return stamp.read_text().strip() if stamp.is_file() else None


def swap_in(new: Path, final: Path, stamp: str) -> None:
    """Replace `final` by `new` in two renames: readers never see half a directory."""
    (new / STAMP).write_text(stamp + "\n")
    old = final.with_name(final.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        final.rename(old)
    new.rename(final)
    shutil.rmtree(old, ignore_errors=True)


def role_packages(pattern: str) -> list[str]:
    """Every `__<role>_packages` list of the roles' per-distribution vars files."""
    packages: set[str] = set()
    for path in sorted(glob.glob(pattern)):
        data = yaml.safe_load(Path(path).read_text()) or {}
        for key, value in data.items():
            if key.startswith("__") and key.endswith("_packages"):
                packages.update(value)
    return sorted(packages)


# --- the clean Debian root that dependencies are resolved against --------------------


def clean_root(args: argparse.Namespace) -> tuple[Path, bool]:
    key = sha256(args.suite, args.mirror, ",".join(sorted(args.base_include)))[:12]
    root = Path(args.build_dir) / f"root-{args.suite}-{key}"
    if root.is_dir():
        return root, False
    if args.check:
        return root, True
    tmp = root.with_name(root.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    run(
        "debootstrap",
        "--variant=minbase",
        f"--include={','.join(args.base_include)}",
        args.suite,
        str(tmp),
        args.mirror,
    )
    tmp.rename(root)
    return root, True


# --- apt ------------------------------------------------------------------------------


def gpg(home: Path, *args: str) -> str:
    return run("gpg", "--homedir", str(home), "--batch", "--yes", *args)


def signing_key(home: Path) -> None:
    if home.is_dir() and gpg(home, "--list-secret-keys", "--with-colons").strip():
        return
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    gpg(
        home,
        "--passphrase",
        "",
        "--quick-gen-key",
        "ClinChat offline bundle <bundle@clinchat.invalid>",
        "ed25519",
        "sign",
        "never",
    )


def build_apt(args: argparse.Namespace) -> dict[str, object]:
    packages = sorted(set(role_packages(args.packages_from)) | set(args.extra))
    root, root_changed = clean_root(args)
    stamp = sha256(root.name, " ".join(packages), " ".join(args.components))
    apt_dir = Path(args.bundle_dir) / "apt"
    if not root_changed and stamp_of(apt_dir) == stamp and (apt_dir / "InRelease").is_file():
        return {"changed": False, "msg": f"apt repository up to date ({len(packages)} packages)"}
    if args.check:
        return {"changed": True, "msg": "apt repository would be rebuilt"}

    work = Path(args.build_dir) / "resolve"
    shutil.rmtree(work, ignore_errors=True)
    # a throwaway copy: the clean root itself must stay clean for the next build
    run("cp", "-a", str(root), str(work))
    (work / "etc/apt/sources.list").write_text(
        f"deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] {args.mirror} "
        f"{args.suite} {' '.join(args.components)}\n"
    )
    shutil.copy("/etc/resolv.conf", work / "etc/resolv.conf")
    run("chroot", str(work), "apt-get", "-q", "update")
    missing = [
        p
        for p in packages
        if not run("chroot", str(work), "apt-cache", "policy", p).strip()
        or "Candidate: (none)" in run("chroot", str(work), "apt-cache", "policy", p)
    ]
    if missing:
        raise BuildError(
            f"not in Debian {args.suite} ({' '.join(args.components)}): {', '.join(missing)}"
        )
    run(
        "chroot",
        str(work),
        "env",
        "DEBIAN_FRONTEND=noninteractive",
        "apt-get",
        "-q",
        "-y",
        "--download-only",
        "--no-install-recommends",
        "install",
        *packages,
    )

    new = apt_dir.with_name("apt.new")
    shutil.rmtree(new, ignore_errors=True)
    new.mkdir(parents=True)
    debs = sorted((work / "var/cache/apt/archives").glob("*.deb"))
    for deb in debs:
        shutil.copy(deb, new / deb.name)
    (new / "Packages").write_text(
        run("dpkg-scanpackages", "--multiversion", ".", "/dev/null", cwd=new)
    )
    run("gzip", "-k", "-9", "-n", "Packages", cwd=new)
    release = run(
        "apt-ftparchive",
        "-o",
        "APT::FTPArchive::Release::Origin=ClinChat",
        "-o",
        "APT::FTPArchive::Release::Label=ClinChat offline bundle",
        "-o",
        f"APT::FTPArchive::Release::Suite={args.suite}",
        "release",
        ".",
        cwd=new,
    )
    (new / "Release").write_text(release)
    home = Path(args.gnupg_home)
    signing_key(home)
    gpg(home, "--armor", "--detach-sign", "-o", str(new / "Release.gpg"), str(new / "Release"))
    gpg(home, "--clearsign", "-o", str(new / "InRelease"), str(new / "Release"))
    (Path(args.bundle_dir) / "bundle.asc").write_text(gpg(home, "--armor", "--export"))
    swap_in(new, apt_dir, stamp)
    shutil.rmtree(work, ignore_errors=True)
    return {
        "changed": True,
        "msg": f"apt repository built: {len(debs)} .debs for {len(packages)} packages",
    }


# --- wheels ---------------------------------------------------------------------------


def project_digest(project: Path) -> str:
    files = [project / "pyproject.toml"]
    for package in ("app", "serving"):
        files += sorted(
            p
            for p in (project / package).rglob("*")
            if p.is_file() and "__pycache__" not in p.parts
        )
    digest = hashlib.sha256()
    for path in files:
        digest.update(str(path.relative_to(project)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def build_wheels(args: argparse.Namespace) -> dict[str, object]:
    project = Path(args.project_dir).resolve()
    meta = tomllib.loads((project / "pyproject.toml").read_text())["project"]
    requirements = list(meta["dependencies"])
    for extra in args.extras:
        requirements += meta["optional-dependencies"][extra]
    stamp = sha256(
        project_digest(project),
        " ".join(requirements),
        args.python_version,
        " ".join(args.platforms),
    )
    wheel_dir = Path(args.bundle_dir) / "wheels"
    if stamp_of(wheel_dir) == stamp:
        return {
            "changed": False,
            "msg": f"wheelhouse up to date ({meta['name']} {meta['version']})",
        }
    if args.check:
        return {"changed": True, "msg": "wheelhouse would be rebuilt"}
    new = wheel_dir.with_name("wheels.new")
    shutil.rmtree(new, ignore_errors=True)
    new.mkdir(parents=True)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    with tempfile.TemporaryDirectory() as build:
        # build outside the source tree: setuptools leaves build/ and *.egg-info behind
        source = Path(build) / "src"
        shutil.copytree(
            project,
            source,
            ignore=shutil.ignore_patterns(
                ".venv", ".git", "__pycache__", "*.egg-info", "build", "molecule", "roles", "tests"
            ),
        )
        run(*pip, "wheel", "--quiet", "--no-deps", "-w", str(new), str(source))
    platform_args = [arg for tag in args.platforms for arg in ("--platform", tag)]
    abi = "cp" + args.python_version.replace(".", "")
    run(
        *pip,
        "download",
        "--quiet",
        "--only-binary=:all:",
        "-d",
        str(new),
        "--python-version",
        args.python_version,
        "--implementation",
        "cp",
        "--abi",
        abi,
        *platform_args,
        *requirements,
    )
    swap_in(new, wheel_dir, stamp)
    count = len(list(wheel_dir.glob("*.whl")))
    return {
        "changed": True,
        "msg": f"wheelhouse built: {count} wheels for Python {args.python_version}",
    }


# --- checksums ------------------------------------------------------------------------


def build_sums(args: argparse.Namespace) -> dict[str, object]:
    bundle = Path(args.bundle_dir)
    lines = []
    for path in sorted(p for p in bundle.rglob("*") if p.is_file()):
        relative = path.relative_to(bundle)
        if relative.name in ("SHA256SUMS", STAMP):
            continue
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        lines.append(f"{digest}  {relative}\n")
    text = "".join(lines)
    sums = bundle / "SHA256SUMS"
    if sums.is_file() and sums.read_text() == text:
        return {"changed": False, "msg": f"SHA256SUMS up to date ({len(lines)} files)"}
    if not args.check:
        sums.write_text(text)
    return {"changed": True, "msg": f"SHA256SUMS written ({len(lines)} files)"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bundle-dir", required=True)
    parser.add_argument("--check", action="store_true", help="report only, change nothing")
    sub = parser.add_subparsers(dest="command", required=True)
    apt = sub.add_parser("apt")
    apt.add_argument("--build-dir", required=True)
    apt.add_argument("--gnupg-home", required=True)
    apt.add_argument("--suite", required=True)
    apt.add_argument("--mirror", required=True)
    apt.add_argument("--components", nargs="+", required=True)
    apt.add_argument("--base-include", nargs="+", required=True)
    apt.add_argument("--packages-from", required=True, help="glob of roles' vars files")
    apt.add_argument("--extra", nargs="*", default=[])
    wheels = sub.add_parser("wheels")
    wheels.add_argument("--project-dir", required=True)
    wheels.add_argument("--python-version", required=True)
    wheels.add_argument("--platforms", nargs="+", required=True)
    wheels.add_argument("--extras", nargs="*", default=[])
    sub.add_parser("sums")
    args = parser.parse_args()
    os.umask(0o022)
    Path(args.bundle_dir).mkdir(parents=True, exist_ok=True)
    builders = {"apt": build_apt, "wheels": build_wheels, "sums": build_sums}
    try:
        result = builders[args.command](args)
    except BuildError as error:
        print(json.dumps({"changed": False, "failed": True, "msg": str(error)}))
        return 1
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
