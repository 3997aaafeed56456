"""`make dev`: the app on loopback with every real service, private and throwaway.

PostgreSQL with pgvector, Redis, OpenBao, OpenLDAP and the serving's tiny random
model start as in the tests (tests/services/), the schema is migrated, and the app
(uvicorn, reloading on code changes) and its ingestion worker run as child
processes with ``CLINCHAT_*`` settings in their environment. The directory's
people sign in with the passwords printed at the start. Ctrl-C stops everything
and removes every directory it made.

``--smoke`` starts it all, checks readiness and one sign-in, and stops (a test runs it).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from app import migrate
from tests.services.ldap import PEOPLE, PrivateLdap
from tests.services.openbao import PrivateOpenBao
from tests.services.pki import make_pki
from tests.services.postgres import PrivatePostgres
from tests.services.redis import PrivateRedis
from tests.services.stack import (
    REPO,
    PrivateServing,
    app_settings,
    create_owner,
    settings_env,
)


def wait_ready(url: str, timeout_s: float) -> dict:
    """The app's /health/ready body once it answers 200."""
    deadline = time.monotonic() + timeout_s
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            response = httpx.get(f"{url}/health/ready", timeout=5)
            if response.status_code == 200:
                return dict(response.json())
            last = response.text
        except httpx.HTTPError as exc:
            last = type(exc).__name__
        time.sleep(0.5)
    raise RuntimeError(f"the app is not ready after {timeout_s:.0f} s: {last}")


def smoke(url: str, username: str, password: str) -> None:
    with httpx.Client(base_url=url, timeout=30) as client:
        response = client.post(
            "/api/v1/auth/login", json={"username": username, "password": password}
        )
        if response.status_code != 200:
            raise RuntimeError(f"sign-in as {username}: {response.status_code} {response.text}")
        print(f"dev: signed in as {username}: roles {response.json().get('roles')}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=8000, help="the app's port on 127.0.0.1")
    parser.add_argument("--smoke", action="store_true", help="start, check, stop")
    args = parser.parse_args(argv)

    root = Path(tempfile.mkdtemp(prefix="clinchat-dev-"))
    os.chmod(root, 0o755)  # the services run as their own users when we are root
    stops: list[Callable[[], object]] = []
    children: list[subprocess.Popen[bytes]] = []
    try:
        print(f"dev: services under {root}")
        for name in ("pki", "pg", "redis", "openbao", "ldap", "models", "keys"):
            (root / name).mkdir()
        pki = make_pki(root / "pki")
        postgres = PrivatePostgres(root=root / "pg", pki=pki)
        postgres.init()
        stops.append(postgres.stop)
        owner_password = create_owner(postgres)
        redis = PrivateRedis(root=root / "redis", pki=pki)
        openbao = PrivateOpenBao(root=root / "openbao", pki=pki)
        ldap = PrivateLdap(root=root / "ldap", pki=pki)
        serving = PrivateServing(root=root / "models")
        for service in (redis, openbao, ldap, serving):
            started = time.monotonic()
            service.start()
            stops.append(service.stop)
            print(f"dev: {type(service).__name__} up in {time.monotonic() - started:.1f} s")
        settings = app_settings(
            postgres=postgres,
            owner_password=owner_password,
            pki=pki,
            redis=redis,
            openbao=openbao,
            ldap=ldap,
            serving_url=serving.url,
            key_dir=root / "keys",
        )
        migrate.upgrade(settings)
        env = {**os.environ, **settings_env(settings)}
        uvicorn = [sys.executable, "-m", "uvicorn", "app.main:app", "--host", "127.0.0.1",
                   "--port", str(args.port)]  # fmt: skip
        if not args.smoke:
            uvicorn += ["--reload", "--reload-dir", str(REPO / "app")]
        children.append(subprocess.Popen(uvicorn, cwd=REPO, env=env))  # noqa: S603
        children.append(
            subprocess.Popen([sys.executable, "-m", "app.kb.worker"], cwd=REPO, env=env)  # noqa: S603
        )
        url = f"http://127.0.0.1:{args.port}"
        ready = wait_ready(url, timeout_s=60)
        print(f"dev: ready: {ready['checks']}")
        if args.smoke:
            smoke(url, "clin1", ldap.users["clin1"])
            return 0
        print(f"\nClinChat (development) is up: {url}/")
        print("Sign in with the test directory's people (throwaway passwords):")
        for uid, (name, _, groups) in PEOPLE.items():
            print(f"  {uid:<9} {ldap.users[uid]:<24} {name} ({', '.join(groups) or 'no group'})")
        print("Ctrl-C stops everything.")
        while all(child.poll() is None for child in children):
            time.sleep(1)
        print("dev: a child process exited; stopping", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        for child in children:
            child.terminate()
        for child in children:
            try:
                child.wait(timeout=15)
            except subprocess.TimeoutExpired:
                child.kill()
        for stop in reversed(stops):
            try:
                stop()
            except Exception as exc:  # noqa: BLE001 - stop the others anyway
                print(f"dev: stopping: {type(exc).__name__}: {exc}", file=sys.stderr)
        shutil.rmtree(root, ignore_errors=True)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _interrupt)  # stop like Ctrl-C: clean up everything
    sys.exit(main())
