"""A private PostgreSQL server on loopback: TLS on, scram-sha-256 only.

PostgreSQL refuses to run as root, so when the tests run as root (CI) the
server runs as the `postgres` system user that Debian's package creates.
"""

import glob
import os
import secrets
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.services.pki import TestPki


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _bindir() -> Path:
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"), reverse=True)
    if not candidates:
        raise RuntimeError("PostgreSQL server not installed: run `make setup` (apt: postgresql)")
    return Path(candidates[0]).parent


@dataclass
class PrivatePostgres:
    root: Path
    pki: TestPki
    database: str = "clinchat"
    user: str = "clinchat_app"
    password: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    port: int = field(default_factory=free_port)
    # created by init() in `database` (as the superuser: pgvector is untrusted)
    extensions: tuple[str, ...] = ()

    @property
    def datadir(self) -> Path:
        return self.root / "data"

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        command = list(args)
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        return subprocess.run(command, check=check, capture_output=True, text=True)  # noqa: S603

    def _give_to_server_user(self, path: Path) -> None:
        if os.geteuid() == 0:
            shutil.chown(path, "postgres", "postgres")

    def init(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self._give_to_server_user(self.root)
        for source, name in (
            (self.pki.server_cert, "server.crt"),
            (self.pki.server_key, "server.key"),
        ):
            shutil.copy(source, self.root / name)
            self._give_to_server_user(self.root / name)
        (self.root / "server.key").chmod(0o600)
        pwfile = self.root / "superuser.pw"
        pwfile.write_text(self.password)
        self._give_to_server_user(pwfile)
        self._run(
            str(_bindir() / "initdb"),
            "-D",
            str(self.datadir),
            "-U",
            "postgres",
            "--auth=scram-sha-256",
            f"--pwfile={pwfile}",
            "--encoding=UTF8",
            "--no-instructions",
        )
        pwfile.unlink()
        conf = self.datadir / "postgresql.conf"
        with conf.open("a") as handle:
            handle.write(
                f"listen_addresses = '127.0.0.1'\nport = {self.port}\n"
                f"unix_socket_directories = '{self.root}'\n"
                "ssl = on\n"
                f"ssl_cert_file = '{self.root / 'server.crt'}'\n"
                f"ssl_key_file = '{self.root / 'server.key'}'\n"
                "password_encryption = 'scram-sha-256'\n"
                "fsync = off\n"
            )
        (self.datadir / "pg_hba.conf").write_text(
            "local all postgres scram-sha-256\n"
            "hostssl all all 127.0.0.1/32 scram-sha-256\n"
            "host all all 0.0.0.0/0 reject\n"
        )
        self.start()
        self.psql(f"CREATE ROLE {self.user} LOGIN PASSWORD '{self.password}'")
        self.psql(f"CREATE DATABASE {self.database} OWNER {self.user}")
        for name in self.extensions:
            self.create_extension(name)

    def create_extension(self, name: str, database: str | None = None) -> None:
        """CREATE EXTENSION IF NOT EXISTS as the superuser, in `database` (default: the app's).

        ``vector`` needs pgvector installed: tests/services/build-pgvector.sh (make setup).
        """
        self.psql(f'CREATE EXTENSION IF NOT EXISTS "{name}"', database=database or self.database)

    def psql(self, sql: str, database: str = "postgres") -> str:
        result = self._run(
            "env",
            f"PGPASSWORD={self.password}",
            "psql",
            "-h",
            str(self.root),
            "-p",
            str(self.port),
            "-U",
            "postgres",
            "-d",
            database,
            "-v",
            "ON_ERROR_STOP=1",
            "-tAc",
            sql,
        )
        return result.stdout.strip()

    def start(self) -> None:
        self._run(
            str(_bindir() / "pg_ctl"),
            "-D",
            str(self.datadir),
            "-l",
            str(self.root / "server.log"),
            "-w",
            "-t",
            "30",
            "start",
        )

    def stop(self) -> None:
        self._run(str(_bindir() / "pg_ctl"), "-D", str(self.datadir), "-m", "fast", "-w", "stop")

    def is_running(self) -> bool:
        with socket.socket() as sock:
            return sock.connect_ex(("127.0.0.1", self.port)) == 0

    def wait_stopped(self, timeout_s: float = 10) -> None:
        deadline = time.monotonic() + timeout_s
        while self.is_running() and time.monotonic() < deadline:
            time.sleep(0.1)
