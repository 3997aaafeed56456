"""Prometheus metrics under vLLM's names, so existing dashboards work unchanged.

Labels carry only the served model name: never prompt text, never a request id.
A registry per app (not the global one) keeps several servers in one process apart.
"""

from __future__ import annotations

import torch
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from serving.engine import Engine, Request

TTFT_BUCKETS = (
    0.001,
    0.005,
    0.01,
    0.02,
    0.04,
    0.06,
    0.08,
    0.1,
    0.25,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    7.5,
    10.0,
    20.0,
    40.0,
    80.0,
)
TPOT_BUCKETS = (
    0.001,
    0.005,
    0.01,
    0.015,
    0.02,
    0.025,
    0.03,
    0.04,
    0.05,
    0.075,
    0.1,
    0.15,
    0.2,
    0.3,
    0.4,
    0.5,
    0.75,
    1.0,
    2.5,
)
E2E_BUCKETS = (
    0.3,
    0.5,
    0.8,
    1.0,
    1.5,
    2.0,
    2.5,
    5.0,
    10.0,
    15.0,
    20.0,
    30.0,
    40.0,
    50.0,
    60.0,
    120.0,
    240.0,
    480.0,
    960.0,
)


class ServerMetrics:
    """Implements engine.Observer; gauges are refreshed when /metrics is scraped."""

    def __init__(self, model_name: str) -> None:
        self.registry = CollectorRegistry()
        labels = ["model_name"]
        r = self.registry
        self._ttft = Histogram(
            "vllm:time_to_first_token_seconds",
            "Time to first token.",
            labels,
            buckets=TTFT_BUCKETS,
            registry=r,
        ).labels(model_name)
        self._tpot = Histogram(
            "vllm:time_per_output_token_seconds",
            "Time between consecutive output tokens.",
            labels,
            buckets=TPOT_BUCKETS,
            registry=r,
        ).labels(model_name)
        self._e2e = Histogram(
            "vllm:e2e_request_latency_seconds",
            "Request latency from arrival to last token.",
            labels,
            buckets=E2E_BUCKETS,
            registry=r,
        ).labels(model_name)
        self._running = Gauge(
            "vllm:num_requests_running", "Requests in the decode batch.", labels, registry=r
        ).labels(model_name)
        self._waiting = Gauge(
            "vllm:num_requests_waiting",
            "Requests waiting for a slot or in prefill.",
            labels,
            registry=r,
        ).labels(model_name)
        self._kv = Gauge(
            "vllm:kv_cache_usage_perc",
            "Fraction of KV-cache slots in use (1 = full).",
            labels,
            registry=r,
        ).labels(model_name)
        self._prompt = Counter(
            "vllm:prompt_tokens", "Prefilled prompt tokens.", labels, registry=r
        ).labels(model_name)
        self._gen = Counter(
            "vllm:generation_tokens", "Generated tokens.", labels, registry=r
        ).labels(model_name)
        self._finished = Counter(
            "vllm:request_success",
            "Finished requests.",
            ["model_name", "finished_reason"],
            registry=r,
        )
        self._gpu_used = Gauge(
            "clinchat:gpu_memory_used_bytes",
            "GPU memory allocated by the server (torch).",
            registry=r,
        )
        self._gpu_reserved = Gauge(
            "clinchat:gpu_memory_reserved_bytes",
            "GPU memory reserved by torch's allocator.",
            registry=r,
        )
        self._model_name = model_name

    # engine.Observer (engine thread)
    def on_prefilled(self, req: Request) -> None:
        self._prompt.inc(len(req.prompt_ids))

    def on_token(self, req: Request, now: float) -> None:
        self._gen.inc()
        if req.last_token_time is None:
            self._ttft.observe(now - req.arrival)
        else:
            self._tpot.observe(now - req.last_token_time)

    def on_finish(self, req: Request, now: float) -> None:
        self._e2e.observe(now - req.arrival)
        self._finished.labels(self._model_name, req.finish_reason or "unknown").inc()

    def refresh(self, engine: Engine | None) -> None:
        if engine is not None:
            self._running.set(engine.num_running)
            self._waiting.set(engine.num_waiting)
            self._kv.set(engine.cache.usage)
        if torch.cuda.is_available():
            self._gpu_used.set(torch.cuda.memory_allocated())
            self._gpu_reserved.set(torch.cuda.memory_reserved())
