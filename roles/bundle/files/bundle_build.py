#!/usr/bin/env python3
"""The slow steps of the offline bundle, run on the controller by roles/bundle.

Every subcommand is idempotent: it keeps a small JSON state of its inputs in
the build directory and does nothing (no network) when the inputs and its
outputs are unchanged. With --check it only says whether it would change.
It prints one JSON object, {"changed": bool, "msg": str, ...}, and exits 1
with {"failed": true, "msg": ...} on an error the operator can act on.

  root      debootstrap the clean Debian root that dependencies are resolved against
  debs      resolve a package set in a throwaway copy of that root, collect every .deb
  index     Packages, Packages.gz and Release of the flat repository
  sign      InRelease and Release.gpg with the bundle's key
  project   the project's own wheel, rebuilt when its source changes
  wheels    the wheelhouse: the project wheel and every dependency for the hosts' Python
  sums      SHA256SUMS over the whole bundle
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# Bump when the way the root is built changes, to rebuild cached roots.
ROOT_FORMAT = 1
STATE_SUFFIX = ".state.json"
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"


class BuildError(Exception):
    """A failure with a message the operator can act on."""


# -- small helpers -----------------------------------------------------------------------


def digest(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def file_sha256(path: Path) -> str:
    sha = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            sha.update(block)
    return sha.hexdigest()


def run(
    argv: Sequence[str | os.PathLike[str]], what: str, **kwargs: Any
) -> subprocess.CompletedProcess[str]:
    args = [str(arg) for arg in argv]
    result = subprocess.run(args, capture_output=True, text=True, check=False, **kwargs)  # noqa: S603
    if result.returncode != 0:
        output = (result.stdout + result.stderr).strip().splitlines()
        raise BuildError(
            f"{what} failed ({args[0]} exit {result.returncode}):\n" + "\n".join(output[-25:])
        )
    return result


def load_state(path: Path) -> dict[str, Any]:
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data


def save_state(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)


def remove_tree(path: Path) -> None:
    """Unmount anything a killed chroot or debootstrap left below `path`, then remove it."""
    prefix = f"{path.resolve()}/"
    mounts = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]
    for mount in sorted((m for m in mounts if m.startswith(prefix)), reverse=True):
        subprocess.run(["umount", "--lazy", mount], check=False)  # noqa: S603, S607
    shutil.rmtree(path, ignore_errors=True)


def listing(directory: Path, pattern: str) -> dict[str, int]:
    """name -> size of the files matching `pattern`: cheap enough to run every time."""
    if not directory.is_dir():
        return {}
    return {p.name: p.stat().st_size for p in directory.glob(pattern) if p.is_file()}


def sync(source: dict[str, Path], dest: Path, pattern: str) -> tuple[list[str], list[str]]:
    """Make the files of `dest` matching `pattern` exactly `source` (name -> path).
    New files go in before stale ones go, so a reader never misses a file it needs."""
    dest.mkdir(parents=True, exist_ok=True)
    present = listing(dest, pattern)
    added = []
    for name, path in sorted(source.items()):
        if present.get(name) == path.stat().st_size and name in present:
            continue
        tmp = dest / f".{name}.tmp"
        shutil.copyfile(path, tmp)
        tmp.chmod(0o644)
        tmp.replace(dest / name)
        added.append(name)
    removed = sorted(set(present) - set(source))
    for name in removed:
        (dest / name).unlink()
    return added, removed


# -- root: the clean Debian root ---------------------------------------------------------


def cmd_root(args: argparse.Namespace) -> dict[str, Any]:
    """A minbase debootstrap with exactly what a bare host has. The mirror is not part
    of the key: any mirror of the same suite gives the same root."""
    include = sorted(set(args.include))
    key = digest(ROOT_FORMAT, args.suite, args.variant, args.arch, include)[:12]
    build = Path(args.build_dir)
    root = build / f"root-{args.suite}-{key}"
    stale = [p for p in build.glob("root-*") if p.is_dir() and p != root]
    result = {"root": str(root), "key": key}
    if (root / ".complete").is_file():
        if stale and not args.check:
            for path in stale:
                remove_tree(path)
        return {**result, "changed": bool(stale), "msg": f"clean root {root.name} is cached"}
    if args.check:
        return {**result, "changed": True, "msg": f"would debootstrap {args.suite} into {root}"}
    build.mkdir(parents=True, exist_ok=True)
    tmp = build / f".tmp-{root.name}-{os.getpid()}"
    for leftover in build.glob(f".tmp-{root.name}-*"):
        remove_tree(leftover)
    try:
        run(
            [
                "debootstrap",
                f"--variant={args.variant}",
                f"--arch={args.arch}",
                f"--include={','.join(include)}",
                args.suite,
                tmp,
                args.mirror,
            ],
            f"debootstrap of Debian {args.suite} from {args.mirror}",
        )
        (tmp / ".complete").write_text(json.dumps({"suite": args.suite, "include": include}) + "\n")
        tmp.rename(root)
    except BaseException:
        remove_tree(tmp)
        raise
    for path in stale:
        remove_tree(path)
    return {**result, "changed": True, "msg": f"built the clean root {root.name}"}


# -- debs: resolve and collect -----------------------------------------------------------

APT_ERRORS = (
    re.compile(r"Unable to locate package (\S+)"),
    re.compile(r"Package '?([^' ]+)'? has no installation candidate"),
    re.compile(r"Couldn't find any package by (?:glob|regex) '([^']+)'"),
    re.compile(r"Version '[^']+' for '([^']+)' was not found"),
    re.compile(r"^\s*(\S+) : Depends:", re.MULTILINE),
)


def pool_name(deb: Path) -> str:
    """apt's archive name is name_version_arch.deb with an epoch written `1%3a`; the
    pool's has no epoch. `%` in a URL is decoded by web servers, so use the pool's."""
    name, version, arch = deb.name.split("_", 2)
    return f"{name}_{re.sub(r'^[0-9]+%3a', '', version)}_{arch}"


def chroot_apt(root: Path, *argv: str) -> list[str]:
    return [
        "chroot",
        str(root),
        "env",
        "DEBIAN_FRONTEND=noninteractive",
        "LC_ALL=C.UTF-8",
        "apt-get",
        "-q",
        "-y",
        "-o",
        "APT::Sandbox::User=root",
        *argv,
    ]


def cmd_debs(args: argparse.Namespace) -> dict[str, Any]:
    root = Path(args.root)
    dest = Path(args.dest)
    state_path = Path(args.build_dir) / f"debs{STATE_SUFFIX}"
    sources = args.sources
    packages = sorted(set(args.packages))
    key = digest(root.name, sources, packages, args.recommends, args.upgrade)
    state = load_state(state_path)
    current = listing(dest, "*.deb")
    if state.get("key") == key and state.get("debs") == current and not args.refresh:
        return {
            "changed": False,
            "count": len(current),
            "msg": f"apt: {len(current)} .debs for {len(packages)} packages are up to date",
        }
    if args.check:
        return {
            "changed": True,
            "count": len(current),
            "msg": "apt: would resolve and download the package set",
        }
    if not (root / ".complete").is_file():
        raise BuildError(f"the clean root {root} is missing: run the whole role")

    Path(args.build_dir).mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="resolve-", dir=args.build_dir))
    try:
        # A throwaway copy: the cached root stays what a bare host has.
        copy = work / "root"
        run(["cp", "-a", "--reflink=auto", root, copy], "copying the clean root")
        (copy / "etc/apt/sources.list").write_text("")
        for entry in (copy / "etc/apt/sources.list.d").glob("*"):
            entry.unlink()
        (copy / "etc/apt/sources.list.d/debian.sources").write_text(sources)
        (copy / "etc/resolv.conf").unlink(missing_ok=True)
        shutil.copyfile("/etc/resolv.conf", copy / "etc/resolv.conf")
        uris = " ".join(sorted(set(re.findall(r"^URIs:\s*(.+)$", sources, re.MULTILINE))))
        run(chroot_apt(copy, "--error-on=any", "update"), f"fetching the package lists from {uris}")
        steps = []
        if args.upgrade:
            steps.append(["--download-only", "dist-upgrade"])
        recommends = [] if args.recommends else ["--no-install-recommends"]
        steps.append(["--download-only", *recommends, "install", *packages])
        for step in steps:
            result = subprocess.run(  # noqa: S603
                chroot_apt(copy, *step), capture_output=True, text=True, check=False
            )
            if result.returncode != 0:
                output = result.stdout + result.stderr
                named = sorted({m for rx in APT_ERRORS for m in rx.findall(output)})
                lines = [line for line in output.splitlines() if line.startswith(("E:", " "))]
                hint = f"package(s) {', '.join(named)}: " if named else ""
                raise BuildError(
                    f"apt cannot resolve the bundle's package set against Debian ({uris}): {hint}"
                    + "\n".join(lines[-25:])
                )
        archives = copy / "var/cache/apt/archives"
        debs = {pool_name(deb): deb for deb in archives.glob("*.deb")}
        added, removed = sync(debs, dest, "*.deb")
    finally:
        remove_tree(work)
    current = listing(dest, "*.deb")
    save_state(state_path, {"key": key, "debs": current, "packages": packages})
    changed = bool(added or removed)
    return {
        "changed": changed,
        "count": len(current),
        "added": added,
        "removed": removed,
        "msg": f"apt: {len(current)} .debs for {len(packages)} packages"
        + (
            f" ({len(added)} new, {len(removed)} removed)"
            if changed
            else ", unchanged after refresh"
        ),
    }


# -- index: Packages and Release ---------------------------------------------------------


def release_hashes(release: Path) -> dict[str, str]:
    """The SHA256 section of a Release file: name -> hash."""
    hashes: dict[str, str] = {}
    section = None
    for line in release.read_text().splitlines():
        if not line.startswith(" "):
            section = line.rstrip(":")
            continue
        if section == "SHA256":
            sha, _size, name = line.split()
            hashes[name] = sha
    return hashes


def cmd_index(args: argparse.Namespace) -> dict[str, Any]:
    repo = Path(args.repo)
    if not any(repo.glob("*.deb")):
        if args.check:
            return {"changed": True, "msg": "index: would index the repository"}
        raise BuildError(f"no .deb in {repo}: nothing to index")
    packages = run(["apt-ftparchive", "packages", "."], "apt-ftparchive packages", cwd=repo).stdout
    # One stanza per .deb, sorted: the same debs always give the same index.
    stanzas = sorted(s.strip() + "\n" for s in packages.split("\n\n") if s.strip())
    text = "\n".join(stanzas)
    compressed = gzip.compress(text.encode(), compresslevel=9, mtime=0)
    release = repo / "Release"
    if (
        (repo / "Packages").is_file()
        and (repo / "Packages").read_text() == text
        and release.is_file()
        and release_hashes(release).get("Packages") == hashlib.sha256(text.encode()).hexdigest()
        and release_hashes(release).get("Packages.gz") == hashlib.sha256(compressed).hexdigest()
    ):
        return {
            "changed": False,
            "msg": f"index: Packages and Release are up to date ({len(stanzas)} .debs)",
        }
    if args.check:
        return {"changed": True, "msg": "index: would rewrite Packages and Release"}
    with tempfile.TemporaryDirectory(dir=repo.parent) as tmp:
        staging = Path(tmp)
        (staging / "Packages").write_text(text)
        (staging / "Packages.gz").write_bytes(compressed)
        conf = {
            "Origin": args.origin,
            "Label": args.label,
            "Architectures": " ".join(args.architectures),
            "Description": args.description,
        }
        options = [
            arg
            for field, value in conf.items()
            for arg in ("-o", f"APT::FTPArchive::Release::{field}={value}")
        ]
        out = run(
            ["apt-ftparchive", *options, "release", "."], "apt-ftparchive release", cwd=staging
        ).stdout
        (staging / "Release").write_text(out)
        for name in ("Packages", "Packages.gz", "Release"):
            (staging / name).chmod(0o644)
            (staging / name).replace(repo / name)
    return {"changed": True, "msg": f"index: wrote Packages and Release ({len(stanzas)} .debs)"}


# -- sign: InRelease and Release.gpg -----------------------------------------------------


def gpg(home: str, *argv: str, what: str) -> subprocess.CompletedProcess[str]:
    return run(["gpg", "--homedir", home, "--batch", "--yes", "--no-tty", *argv], what)


def valid_signature(home: str, key: str, *argv: str) -> bool:
    result = subprocess.run(  # noqa: S603
        ["gpg", "--homedir", home, "--batch", "--no-tty", "--status-fd", "1", *argv],  # noqa: S607
        capture_output=True,
        text=True,
        check=False,
    )
    return result.returncode == 0 and any(
        line.startswith("[GNUPG:] VALIDSIG ") and key.upper() in line.split()
        for line in result.stdout.splitlines()
    )


def cmd_sign(args: argparse.Namespace) -> dict[str, Any]:
    repo = Path(args.repo)
    release, inrelease, detached = repo / "Release", repo / "InRelease", repo / "Release.gpg"
    if not release.is_file():
        if args.check:
            return {"changed": True, "msg": "sign: would sign the Release file"}
        raise BuildError(f"{release} is missing: nothing to sign")
    signed = False
    if inrelease.is_file() and detached.is_file():
        with tempfile.TemporaryDirectory() as tmp:
            payload = Path(tmp) / "payload"
            signed = (
                valid_signature(
                    args.gnupg_home, args.key, "--output", str(payload), "--decrypt", str(inrelease)
                )
                and payload.read_bytes() == release.read_bytes()
                and valid_signature(
                    args.gnupg_home, args.key, "--verify", str(detached), str(release)
                )
            )
    if signed:
        return {
            "changed": False,
            "msg": f"sign: InRelease and Release.gpg are valid signatures by {args.key}",
        }
    if args.check:
        return {"changed": True, "msg": f"sign: would sign Release with {args.key}"}
    common = ["--local-user", args.key, "--digest-algo", "SHA512"]
    for out, mode in ((inrelease, "--clearsign"), (detached, "--detach-sign")):
        tmp = out.with_name(f".{out.name}.tmp")
        gpg(
            args.gnupg_home,
            *common,
            "--armor",
            mode,
            "--output",
            str(tmp),
            str(release),
            what=f"signing {out.name}",
        )
        tmp.chmod(0o644)
        tmp.replace(out)
    return {"changed": True, "msg": f"sign: signed Release with {args.key}"}


# -- project: the project's own wheel ----------------------------------------------------


def source_files(project: Path, paths: Sequence[str]) -> list[Path]:
    files = []
    for name in paths:
        path = project / name
        if path.is_file():
            files.append(path)
        elif path.is_dir():
            files += [
                p
                for p in path.rglob("*")
                if p.is_file() and "__pycache__" not in p.parts and p.suffix not in (".pyc", ".pyo")
            ]
    return sorted(files)


BUILD_ID_LENGTH = 12
PROJECT_VERSION = re.compile(r'^(version\s*=\s*")([^"+]+)(")', re.MULTILINE)


def stamp_build_id(pyproject: Path, key: str) -> None:
    """Give the wheel the project's version plus a build id from its sources
    (PEP 440 local version, 0.1.0+b1a2b3c4d5e6): a rebuilt wheel is a new version,
    so hosts install it and restart, and the same sources always give the same id."""
    text = pyproject.read_text()
    stamped, count = PROJECT_VERSION.subn(rf"\g<1>\g<2>+b{key[:BUILD_ID_LENGTH]}\g<3>", text)
    if count != 1:
        raise BuildError(f'{pyproject}: no single `version = "..."` line to add the build id to')
    pyproject.write_text(stamped)


def cmd_project(args: argparse.Namespace) -> dict[str, Any]:
    project = Path(args.project).resolve()
    out = Path(args.out)
    files = source_files(project, args.paths)
    sha = hashlib.sha256()
    for path in files:
        sha.update(str(path.relative_to(project)).encode() + b"\0" + path.read_bytes() + b"\0")
    key = sha.hexdigest()
    state_path = out / f"project{STATE_SUFFIX}"
    state = load_state(state_path)
    wheel = out / state.get("wheel", "-")
    if state.get("key") == key and wheel.is_file():
        return {
            "changed": False,
            "wheel": str(wheel),
            "msg": f"project: {wheel.name} is up to date",
        }
    if args.check:
        return {
            "changed": True,
            "wheel": str(wheel),
            "msg": "project: would build the project's wheel",
        }
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        # Build from a copy: setuptools leaves build/ and *.egg-info in the tree it builds.
        source = Path(tmp) / "src"
        for path in files:
            target = source / path.relative_to(project)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)
        stamp_build_id(source / "pyproject.toml", key)
        built = Path(tmp) / "dist"
        run(
            [
                sys.executable,
                "-m",
                "pip",
                "wheel",
                "--quiet",
                "--no-deps",
                "--wheel-dir",
                built,
                source,
            ],
            f"building the wheel of {project}",
        )
        wheels = list(built.glob("*.whl"))
        if len(wheels) != 1:
            raise BuildError(f"pip wheel of {project} made {len(wheels)} wheels, expected one")
        for old in out.glob("*.whl"):
            old.unlink()
        shutil.copyfile(wheels[0], out / wheels[0].name)
    save_state(state_path, {"key": key, "wheel": wheels[0].name})
    return {
        "changed": True,
        "wheel": str(out / wheels[0].name),
        "msg": f"project: built {wheels[0].name}",
    }


# -- wheels: the wheelhouse --------------------------------------------------------------

NO_MATCH = re.compile(r"No matching distribution found for (\S+)")


def pip_config() -> str:
    """pip's own configuration (indexes, constraints) is an input of the resolution."""
    result = subprocess.run(  # noqa: S603
        [sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True, check=False
    )
    constraint = re.findall(r"constraint='([^']+)'", result.stdout)
    texts = [Path(c).read_text() for c in constraint if Path(c).is_file()]
    return result.stdout + "".join(texts)


def wheel_requirements(wheel: Path) -> list[str]:
    """What pip resolves from the project's wheel: its name, version and dependencies.
    A change of code alone does not change these, and needs no new download."""
    with zipfile.ZipFile(wheel) as archive:
        name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        metadata = archive.read(name).decode()
    # Not the version: it carries the build id, which changes with every code change.
    fields = ("Name:", "Requires-Python:", "Requires-Dist:", "Provides-Extra:")
    return [line for line in metadata.splitlines() if line.startswith(fields)]


def project_prefix(wheel: Path) -> str:
    """The file name prefix of every build of the project's wheel (`clinchat_appliance-`)."""
    return wheel.name.split("-", 1)[0] + "-"


def place_project_wheel(wheel: Path, dest: Path, check: bool) -> bool:
    """Put the project's wheel (its code changes often) into the wheelhouse by content,
    and remove its earlier builds: the wheelhouse holds one build of the project."""
    target = dest / wheel.name
    stale = [p for p in dest.glob(project_prefix(wheel) + "*.whl") if p.name != wheel.name]
    if target.is_file() and file_sha256(target) == file_sha256(wheel) and not stale:
        return False
    if not check:
        dest.mkdir(parents=True, exist_ok=True)
        tmp = dest / f".{wheel.name}.tmp"
        shutil.copyfile(wheel, tmp)
        tmp.chmod(0o644)
        tmp.replace(target)
        for path in stale:
            path.unlink()
    return True


def cmd_wheels(args: argparse.Namespace) -> dict[str, Any]:
    wheel = Path(args.wheel)
    dest = Path(args.dest)
    state_path = Path(args.build_dir) / f"wheels{STATE_SUFFIX}"
    extras = sorted(set(args.extras))
    key = digest(
        wheel_requirements(wheel) if wheel.is_file() else None,
        extras,
        args.python_version,
        args.abi,
        args.platforms,
        args.sdist,
        pip_config(),
    )
    state = load_state(state_path)
    current = listing(dest, "*.whl")
    prefix = project_prefix(wheel)
    if state.get("key") == key and state.get("wheels") == {
        k: v for k, v in current.items() if not k.startswith(prefix)
    }:
        placed = place_project_wheel(wheel, dest, args.check)
        return {
            "changed": placed,
            "count": len(current) + (wheel.name not in current),
            "msg": "wheels: dependencies up to date"
            + (f", {wheel.name} {'would be ' if args.check else ''}replaced" if placed else ""),
        }
    if args.check:
        return {
            "changed": True,
            "count": len(current),
            "msg": "wheels: would resolve and download the wheelhouse",
        }
    if not wheel.is_file():
        raise BuildError(f"the project's wheel {wheel} is missing")

    requirement = f"{wheel}[{','.join(extras)}]" if extras else str(wheel)
    target = ["--python-version", args.python_version, "--implementation", "cp", "--abi", args.abi]
    target += [arg for tag in args.platforms for arg in ("--platform", tag)]
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    Path(args.build_dir).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="wheels-", dir=args.build_dir) as tmp:
        staging, built = Path(tmp) / "wheels", Path(tmp) / "built"
        built.mkdir()
        tried: set[str] = set()
        while True:
            argv = [*pip, "download", "--only-binary=:all:", *target, "--dest", staging]
            argv += ["--find-links", built, requirement]
            result = subprocess.run(argv, capture_output=True, text=True, check=False)  # noqa: S603
            if result.returncode == 0:
                break
            output = result.stdout + result.stderr
            missing = NO_MATCH.findall(output)
            tail = "\n".join(output.strip().splitlines()[-15:])
            if not missing:
                raise BuildError(f"pip cannot download the wheelhouse for {requirement}:\n{tail}")
            name = missing[0]
            if name in tried or not args.sdist:
                raise BuildError(
                    f"wheels: no wheel of {name} for CPython {args.python_version} on "
                    f"{', '.join(args.platforms)}"
                    + (
                        " even after building its sdist (set bundle_wheels_build_python to a "
                        f"Python {args.python_version} for a C extension)"
                        if name in tried
                        else " (bundle_wheels_build_sdists builds one from its sdist)"
                    )
                    + f":\n{tail}"
                )
            tried.add(name)
            # No wheel for the hosts: fetch the sdist and build one (pure Python builds
            # a py3-none-any wheel; a C extension needs a build Python of the hosts' version).
            sdists = Path(tmp) / "sdists"
            run(
                [*pip, "download", "--no-deps", "--no-binary=:all:", "--dest", sdists, name],
                f"downloading the sdist of {name}",
            )
            for sdist in sdists.iterdir():
                run(
                    [
                        args.build_python,
                        "-m",
                        "pip",
                        "wheel",
                        "--quiet",
                        "--no-deps",
                        "--wheel-dir",
                        built,
                        sdist,
                    ],
                    f"building a wheel of {name} from {sdist.name}",
                )
                sdist.unlink()
        wheels = {p.name: p for p in staging.glob("*.whl") if p.name != wheel.name}
        others = sorted(p.name for p in staging.iterdir() if p.suffix != ".whl")
        if others:
            raise BuildError(
                f"wheels: pip downloaded files that are not wheels: {', '.join(others)}"
            )
        placed = place_project_wheel(wheel, dest, check=False)
        added, removed = sync({**wheels, wheel.name: wheel}, dest, "*.whl")
    current = listing(dest, "*.whl")
    save_state(
        state_path,
        {"key": key, "wheels": {k: v for k, v in current.items() if not k.startswith(prefix)}},
    )
    added = sorted(set(added) | ({wheel.name} if placed else set()))
    changed = bool(added or removed)
    return {
        "changed": changed,
        "count": len(current),
        "added": added,
        "removed": removed,
        "msg": f"wheels: {len(current)} wheels for CPython {args.python_version}"
        + (f" ({len(added)} new, {len(removed)} removed)" if changed else ", unchanged"),
    }


# -- sums: SHA256SUMS --------------------------------------------------------------------


def cmd_sums(args: argparse.Namespace) -> dict[str, Any]:
    bundle = Path(args.bundle_dir)
    files = sorted(
        p
        for p in bundle.rglob("*")
        if p.is_file() and p.name != "SHA256SUMS" and not p.name.startswith(".")
    )
    text = "".join(f"{file_sha256(p)}  {p.relative_to(bundle)}\n" for p in files)
    sums = bundle / "SHA256SUMS"
    if sums.is_file() and sums.read_text() == text:
        return {
            "changed": False,
            "count": len(files),
            "msg": f"SHA256SUMS is up to date ({len(files)} files)",
        }
    if not args.check:
        tmp = bundle / ".SHA256SUMS.tmp"
        tmp.write_text(text)
        tmp.chmod(0o644)
        tmp.replace(sums)
    return {"changed": True, "count": len(files), "msg": f"SHA256SUMS over {len(files)} files"}


def parser() -> argparse.ArgumentParser:
    main = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    main.add_argument("--check", action="store_true", help="report only, change nothing")
    sub = main.add_subparsers(dest="command", required=True)

    root = sub.add_parser("root")
    root.add_argument("--build-dir", required=True)
    root.add_argument("--suite", required=True)
    root.add_argument("--mirror", required=True)
    root.add_argument("--variant", default="minbase")
    root.add_argument("--arch", default="amd64")
    root.add_argument("--include", nargs="+", required=True)

    debs = sub.add_parser("debs")
    debs.add_argument("--root", required=True)
    debs.add_argument("--build-dir", required=True)
    debs.add_argument("--dest", required=True)
    debs.add_argument("--sources", required=True, help="deb822 sources to resolve from")
    debs.add_argument("--packages", nargs="+", required=True)
    debs.add_argument("--recommends", action="store_true")
    debs.add_argument(
        "--upgrade", action="store_true", help="also the updates of the root's packages"
    )
    debs.add_argument(
        "--refresh", action="store_true", help="resolve again even if nothing changed"
    )

    index = sub.add_parser("index")
    index.add_argument("--repo", required=True)
    index.add_argument("--origin", required=True)
    index.add_argument("--label", required=True)
    index.add_argument("--description", required=True)
    index.add_argument("--architectures", nargs="+", required=True)

    sign = sub.add_parser("sign")
    sign.add_argument("--repo", required=True)
    sign.add_argument("--gnupg-home", required=True)
    sign.add_argument("--key", required=True, help="fingerprint")

    project = sub.add_parser("project")
    project.add_argument("--project", required=True)
    project.add_argument("--out", required=True)
    project.add_argument("--paths", nargs="+", required=True, help="what the wheel is built from")

    wheels = sub.add_parser("wheels")
    wheels.add_argument("--wheel", required=True)
    wheels.add_argument("--build-dir", required=True)
    wheels.add_argument("--dest", required=True)
    wheels.add_argument("--extras", nargs="*", default=[])
    wheels.add_argument("--python-version", required=True)
    wheels.add_argument("--abi", required=True)
    wheels.add_argument("--platforms", nargs="+", required=True)
    wheels.add_argument(
        "--sdist", action="store_true", help="build wheels from sdists where none exist"
    )
    wheels.add_argument("--build-python", default=sys.executable)

    sums = sub.add_parser("sums")
    sums.add_argument("--bundle-dir", required=True)
    return main


def main() -> int:
    args = parser().parse_args()
    os.umask(0o022)
    commands = {
        "root": cmd_root,
        "debs": cmd_debs,
        "index": cmd_index,
        "sign": cmd_sign,
        "project": cmd_project,
        "wheels": cmd_wheels,
        "sums": cmd_sums,
    }
    try:
        result = commands[args.command](args)
    except BuildError as error:
        print(json.dumps({"changed": False, "failed": True, "msg": str(error)}))
        return 1
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
