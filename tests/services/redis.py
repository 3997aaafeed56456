"""A private Redis server on loopback: TLS only, one ACL user, no persistence.

Debian's ``redis-server`` listens on 127.0.0.1 with its plaintext port off
(``port 0``) and TLS on a free port with the test PKI's certificate (clients
verify the server; no client certificates). The ``default`` user is off; the
only user is ``clinchat`` with a random password. Nothing is saved to disk.

As root (CI) the server runs as the ``redis`` system user the package creates.
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from tests.services.pki import TestPki
from tests.services.postgres import free_port
from tests.services.process import ServerProcess

REDIS_SERVER = "/usr/bin/redis-server"


def _server_user() -> str | None:
    """The user the server runs as when the tests run as root; None: the current one."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam("redis")
    except KeyError:
        return None  # root is allowed; the package's user is preferred
    return "redis"


ROLE_DEFAULTS = Path(__file__).resolve().parents[2] / "roles" / "redis" / "defaults" / "main.yml"


def role_acl_line(name: str, password: str) -> str:
    """The app's ACL user as roles/redis writes it: its key patterns and commands only."""
    defaults = yaml.safe_load(ROLE_DEFAULTS.read_text())
    keys = " ".join(f"~{pattern}" for pattern in defaults["redis_app_keys"])
    # CLIENT SETINFO is Redis 7.2's; this controller's Redis 7.0 does not know it
    # (redis-py ignores its refusal anyway).
    known = [c for c in defaults["redis_app_commands"] if c != "client|setinfo"]
    commands = " ".join(f"+{command}" for command in known)
    return f"user {name} on >{password} resetkeys {keys} resetchannels -@all {commands}"


@dataclass
class PrivateRedis(ServerProcess):
    root: Path
    pki: TestPki
    username: str = "clinchat"
    # The user with the production ACL (same password).
    role_user: str = "clinchat-app"
    password: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"rediss://{self.username}:{self.password}@127.0.0.1:{self.port}/0"

    @property
    def ca_cert(self) -> Path:
        return self.pki.ca_cert

    @property
    def log_file(self) -> Path:
        return self.root / "redis.log"

    def _write_config(self) -> Path:
        self.root.mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o700)
        for source, name in (
            (self.pki.server_cert, "server.crt"),
            (self.pki.server_key, "server.key"),
            (self.pki.ca_cert, "ca.crt"),
        ):
            shutil.copy(source, self.root / name)
        (self.root / "server.key").chmod(0o600)
        config = self.root / "redis.conf"
        config.write_text(
            "bind 127.0.0.1\n"
            "protected-mode yes\n"
            "port 0\n"
            f"tls-port {self.port}\n"
            f"tls-cert-file {self.root / 'server.crt'}\n"
            f"tls-key-file {self.root / 'server.key'}\n"
            # Redis wants a CA even when it asks clients for no certificate.
            f"tls-ca-cert-file {self.root / 'ca.crt'}\n"
            "tls-auth-clients no\n"
            'tls-protocols "TLSv1.2 TLSv1.3"\n'
            "daemonize no\n"
            "supervised no\n"
            f"dir {self.root}\n"
            f"logfile {self.log_file}\n"
            'save ""\n'
            "appendonly no\n"
            "databases 4\n"
            "user default off nopass resetchannels -@all\n"
            f"user {self.username} on >{self.password} ~* &* +@all\n"
            # The production ACL of the app's user (roles/redis), for the tests
            # that prove it admits everything the app does (tests/app/test_redis_acl.py).
            f"{role_acl_line(self.role_user, self.password)}\n"
        )
        config.chmod(0o600)
        user = _server_user()
        if user:
            for path in (self.root, *self.root.iterdir()):
                shutil.chown(path, user, user)
        return config

    def start(self, timeout_s: float = 15) -> None:
        if not Path(REDIS_SERVER).exists():
            raise RuntimeError("redis-server not installed: run `make setup` (apt: redis-server)")
        config = self._write_config()
        user = _server_user()
        # Popen drops to the user itself: the child is redis-server, no wrapper to outlive.
        self.process = subprocess.Popen(  # noqa: S603
            [REDIS_SERVER, str(config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            user=user,
            group=user,
            extra_groups=[] if user else None,
        )
        deadline = time.monotonic() + timeout_s
        while not self.is_running():
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited: {self._log_tail()}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"redis-server did not listen in {timeout_s} s")
            time.sleep(0.05)
