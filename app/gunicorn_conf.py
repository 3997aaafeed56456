"""gunicorn hooks: ``gunicorn --config python:app.gunicorn_conf``.

With several workers, prometheus-client keeps one file per process in
PROMETHEUS_MULTIPROC_DIR; stale files from an earlier run would add old counts,
and a dead worker's gauges must be dropped.
"""

import os
import shutil
from pathlib import Path

from prometheus_client import multiprocess


def on_starting(server: object) -> None:
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if directory:
        shutil.rmtree(directory, ignore_errors=True)
        Path(directory).mkdir(parents=True, mode=0o700)


def child_exit(server: object, worker: object) -> None:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.mark_process_dead(worker.pid)  # type: ignore[attr-defined]
