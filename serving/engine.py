"""The scheduler and decode loop: continuous batching over a slot-based KV cache.

One background thread owns the model. Each iteration of its loop:

1. drops requests whose client went away (their slots are free for this very iteration),
2. admits waiting requests into free slots,
3. prefills admitted prompts, at most ``prefill_chunk`` tokens per iteration (a long prompt
   takes several iterations, so running requests keep streaming meanwhile),
4. runs one decode step for every request that has its first token: one token each.

A request joins the batch the iteration its prefill ends and leaves it the iteration it
finishes. Results go back through each request's ``emit`` callback, from this thread.
"""

from __future__ import annotations

import collections
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import torch

from serving import loader
from serving.graphs import DecodeRunner
from serving.kv_cache import KVCache
from serving.model import Llama, LlamaConfig, build_llama
from serving.sampling import SamplingParams, make_generator, sample

log = logging.getLogger(__name__)

Emit = Callable[[str, int | str | None], None]
"""emit("token", id) per output token, then emit("finish", reason) or emit("error", text)."""


class QueueFull(RuntimeError):
    pass


class EngineDead(RuntimeError):
    pass


@dataclass(eq=False)
class Request:
    prompt_ids: list[int]
    params: SamplingParams
    emit: Emit
    request_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    arrival: float = field(default_factory=time.monotonic)
    slot: int = -1
    prefilled: int = 0
    output_ids: list[int] = field(default_factory=list)
    generator: torch.Generator | None = None
    first_token_time: float | None = None
    last_token_time: float | None = None
    finish_reason: str | None = None
    cancelled: bool = False


class Observer(Protocol):
    """What the metrics module hears from the engine (called on the engine thread)."""

    def on_prefilled(self, req: Request) -> None: ...
    def on_token(self, req: Request, now: float) -> None: ...
    def on_finish(self, req: Request, now: float) -> None: ...


class Engine:
    def __init__(
        self,
        model: Llama,
        cache: KVCache,
        eos_ids: set[int],
        max_queue: int,
        prefill_chunk: int,
        cuda_graphs: bool = True,
        observer: Observer | None = None,
    ) -> None:
        self.model, self.cache = model, cache
        self.device = cache.k.device
        self.eos_ids = eos_ids
        self.max_queue, self.prefill_chunk = max_queue, prefill_chunk
        self.observer = observer
        self.runner = DecodeRunner(model, cache, cuda_graphs)
        self._rng = torch.Generator(device=self.device)
        self._rng.manual_seed(int.from_bytes(os.urandom(8), "little") & ((1 << 63) - 1))
        self._waiting: collections.deque[Request] = collections.deque()
        self._prefilling: collections.deque[Request] = collections.deque()
        self._running: list[Request] = []
        self._cv = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stop = False
        self._paused = False
        self.dead = False
        self.error: str | None = None

    # ---- control, from any thread -------------------------------------------------------

    @property
    def max_len(self) -> int:
        return self.cache.max_len

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and not self.dead

    @property
    def num_waiting(self) -> int:
        return len(self._waiting) + len(self._prefilling)

    @property
    def num_running(self) -> int:
        return len(self._running)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="engine", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        with self._cv:
            self._stop = True
            self._cv.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def pause(self) -> None:
        """Stop admitting and stepping (requests queue up); for maintenance and tests."""
        with self._cv:
            self._paused = True

    def resume(self) -> None:
        with self._cv:
            self._paused = False
            self._cv.notify_all()

    def submit(self, req: Request) -> None:
        if len(req.prompt_ids) + req.params.max_tokens > self.max_len:
            raise ValueError("prompt plus max_tokens exceeds the context length")
        with self._cv:
            if not self.alive:
                raise EngineDead(self.error or "engine is not running")
            if len(self._waiting) - self.cache.num_free >= self.max_queue:
                raise QueueFull("too many requests waiting")
            req.generator = make_generator(req.params.seed, self.device)
            self._waiting.append(req)
            self._cv.notify_all()

    def abort(self, req: Request) -> None:
        """Cancel a request; its slot is freed at the start of the next iteration."""
        with self._cv:
            req.cancelled = True
            self._cv.notify_all()

    def generate(
        self, prompt_ids: list[int], params: SamplingParams, timeout: float = 600.0
    ) -> tuple[list[int], str]:
        """Blocking helper (tests, bench): output ids and finish reason."""
        done = threading.Event()
        out: list[int] = []
        result: dict[str, str] = {}

        def emit(kind: str, value: int | str | None) -> None:
            if kind == "token":
                assert isinstance(value, int)
                out.append(value)
            else:
                result[kind] = str(value)
                done.set()

        self.submit(Request(list(prompt_ids), params, emit))
        if not done.wait(timeout):
            raise TimeoutError("generation timed out")
        if "error" in result:
            raise EngineDead(result["error"])
        return out, result["finish"]

    # ---- the loop, on the engine thread --------------------------------------------------

    def _loop(self) -> None:
        try:
            with torch.inference_mode():
                while True:
                    with self._cv:
                        while not self._stop and (
                            self._paused or not (self._waiting or self._prefilling or self._running)
                        ):
                            self._cv.wait()
                        if self._stop:
                            return
                        self._admit()
                    self.step()
        except BaseException as exc:  # noqa: BLE001 - any failure kills the engine: say so
            log.exception("engine loop died")
            self.error = f"engine failed: {type(exc).__name__}"
            self.dead = True
            self._fail_all(self.error)

    def _admit(self) -> None:
        """Under the lock: drop cancelled waiters, move waiters into free slots."""
        for req in [r for r in self._waiting if r.cancelled]:
            self._waiting.remove(req)
            self._finish(req, "abort")
        while self._waiting and self.cache.num_free:
            req = self._waiting.popleft()
            slot = self.cache.allocate()
            assert slot is not None
            req.slot = slot
            self._prefilling.append(req)

    def step(self) -> None:
        for req in [r for r in (*self._prefilling, *self._running) if r.cancelled]:
            self._finish(req, "abort")
        self._prefill()
        self._decode()

    def _prefill(self) -> None:
        budget = self.prefill_chunk
        while self._prefilling and budget > 0:
            req = self._prefilling[0]
            start = req.prefilled
            n = min(budget, len(req.prompt_ids) - start)
            tokens = torch.tensor([req.prompt_ids[start : start + n]], device=self.device)
            positions = torch.arange(start, start + n, device=self.device).unsqueeze(0)
            logits = self.model(tokens, positions, self.cache, req.slot, start + n, last_only=True)
            req.prefilled += n
            budget -= n
            if req.prefilled == len(req.prompt_ids):
                self._prefilling.popleft()
                if self.observer:
                    self.observer.on_prefilled(req)
                token = sample(logits[:, -1], [req.params], [req.generator], self._rng)[0]
                self._running.append(req)
                self._accept(req, token)

    def _decode(self) -> None:
        if not self._running:
            return
        rows = self.runner.batch_bucket(max(r.slot for r in self._running) + 1)
        tokens = [0] * rows
        positions = [self.cache.scratch_position] * rows
        for req in self._running:
            tokens[req.slot] = req.output_ids[-1]
            positions[req.slot] = len(req.prompt_ids) + len(req.output_ids) - 1
        kv_need = max(positions[r.slot] for r in self._running) + 1
        logits = self.runner.run(rows, tokens, positions, kv_need)
        running = list(self._running)
        index = torch.tensor([r.slot for r in running], device=self.device)
        new = sample(
            logits.index_select(0, index),
            [r.params for r in running],
            [r.generator for r in running],
            self._rng,
        )
        for req, token in zip(running, new, strict=True):
            self._accept(req, token)

    def _accept(self, req: Request, token: int) -> None:
        now = time.monotonic()
        req.output_ids.append(token)
        if req.first_token_time is None:
            req.first_token_time = now
        if self.observer:
            self.observer.on_token(req, now)
        req.last_token_time = now
        req.emit("token", token)
        if not req.params.ignore_eos and token in self.eos_ids:
            self._finish(req, "stop")
        elif (
            len(req.output_ids) >= req.params.max_tokens
            or len(req.prompt_ids) + len(req.output_ids) >= self.max_len
        ):
            self._finish(req, "length")

    def _finish(self, req: Request, reason: str) -> None:
        if req.finish_reason is not None:
            return
        req.finish_reason = reason
        if req in self._running:
            self._running.remove(req)
        if req in self._prefilling:
            self._prefilling.remove(req)
        if req.slot >= 0:
            self.cache.release(req.slot)
            req.slot = -1
        if self.observer:
            self.observer.on_finish(req, time.monotonic())
        req.emit("finish", reason)

    def _fail_all(self, message: str) -> None:
        with self._cv:
            pending = [*self._waiting, *self._prefilling, *self._running]
            self._waiting.clear()
            self._prefilling.clear()
            self._running.clear()
        for req in pending:
            req.finish_reason = "error"
            req.emit("error", message)


@dataclass
class LoadedModel:
    engine: Engine
    tokenizer: loader.TextTokenizer
    config: LlamaConfig


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device cuda requested but no CUDA device is available")
    return torch.device(device)


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return getattr(torch, dtype)


def load_model(
    model_dir: Path,
    *,
    quantization: str = "none",
    device: str = "auto",
    dtype: str = "auto",
    max_model_len: int | None = None,
    max_num_seqs: int = 8,
    max_queue: int = 256,
    prefill_chunk: int = 512,
    cuda_graphs: bool = True,
    require_manifest: bool = False,
    verify: bool = True,
    observer: Observer | None = None,
) -> LoadedModel:
    """Verify, load and start: the whole path from a directory to a running engine."""
    if verify:
        loader.verify_manifest(model_dir, required=require_manifest)
    hf_cfg = loader.read_json(model_dir / "config.json")
    cfg = LlamaConfig.from_hf(hf_cfg)
    gen_cfg_path = model_dir / "generation_config.json"
    eos = list(cfg.eos_token_ids)
    if gen_cfg_path.is_file():
        gen_eos = loader.read_json(gen_cfg_path).get("eos_token_id")
        eos += [gen_eos] if isinstance(gen_eos, int) else list(gen_eos or [])
    tokenizer = loader.TextTokenizer.from_dir(model_dir, extra_eos_ids=eos)
    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    if quantization != "none" and dt == torch.float32 and dev.type == "cuda":
        raise ValueError("quantized weights on a GPU compute in bfloat16 or float16")
    max_len = max_model_len or min(cfg.max_position_embeddings, 4096)

    from safetensors import safe_open

    handles = [safe_open(str(p), framework="pt") for p in loader.safetensors_files(model_dir)]
    where = {name: h for h in handles for name in h.keys()}  # noqa: SIM118

    def get(name: str) -> torch.Tensor:
        if name not in where:
            raise loader.ModelDirError(f"{model_dir}: weight {name} missing")
        return where[name].get_tensor(name)

    t0 = time.monotonic()
    model = build_llama(cfg, get, quantization, dev, dt, max_positions=max_len + 1)
    where.clear()  # close the shards: the model holds its own copies now
    handles.clear()
    cache = KVCache(cfg.num_layers, max_num_seqs, cfg.num_kv_heads, max_len, cfg.head_dim, dt, dev)
    if quantization == "int8" and cuda_graphs and dev.type == "cuda":
        # LLM.int8() picks outlier columns per input (data-dependent shapes, host syncs):
        # not capturable, so int8 decodes eagerly.
        log.info("int8 weights: CUDA graphs disabled")
        cuda_graphs = False
    engine = Engine(
        model, cache, tokenizer.eos_token_ids, max_queue, prefill_chunk, cuda_graphs, observer
    )
    if dev.type == "cuda":
        with torch.inference_mode():
            engine.runner.capture_all()
    log.info(
        "model loaded on %s (%s, quantization %s) in %.1fs; KV cache %.1f MiB",
        dev,
        str(dt).removeprefix("torch."),
        quantization,
        time.monotonic() - t0,
        cache.nbytes / 2**20,
    )
    engine.start()
    return LoadedModel(engine, tokenizer, cfg)
