"""What every private server of tests/services/ does alike: is it up, its log, stopping it."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path


class ServerProcess:
    """A mixin for a dataclass with ``process``, ``port`` and ``log_file``."""

    process: subprocess.Popen[bytes] | None
    port: int
    stop_timeout_s: float = 10

    @property
    def log_file(self) -> Path:
        raise NotImplementedError

    def _log_tail(self) -> str:
        try:
            return self.log_file.read_text()[-2000:]
        except OSError:
            return "(no log)"

    def is_running(self) -> bool:
        if self.process is None or self.process.poll() is not None:
            return False
        with socket.socket() as sock:
            return sock.connect_ex(("127.0.0.1", self.port)) == 0

    def stop(self, timeout_s: float | None = None) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=timeout_s or self.stop_timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
