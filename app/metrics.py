"""Prometheus metrics. Labels never carry user input (PHI): only route templates."""

import os
import time
from collections.abc import Awaitable, Callable

from fastapi import Request, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client import REGISTRY as DEFAULT_REGISTRY

REQUESTS = Counter(
    "clinchat_http_requests_total", "HTTP requests answered", ["method", "route", "status"]
)
LATENCY = Histogram(
    "clinchat_http_request_duration_seconds", "HTTP request latency", ["method", "route"]
)
DEPENDENCY_FAILURES = Counter(
    "clinchat_dependency_check_failures_total", "Failed readiness checks", ["dependency"]
)
# One label value per gpu host of the inventory (host:port), never request content.
SERVING_UPSTREAM_FAILURES = Counter(
    "clinchat_serving_upstream_failures_total",
    "Requests or health checks a serving host failed (it is then paused)",
    ["upstream"],
)


def _route_template(request: Request) -> str:
    route = request.scope.get("route")
    # Unmatched paths are one label value, so a client cannot grow the label set.
    return getattr(route, "path", "<unmatched>")


async def record(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
    started = time.perf_counter()
    response = await call_next(request)
    route = _route_template(request)
    LATENCY.labels(request.method, route).observe(time.perf_counter() - started)
    REQUESTS.labels(request.method, route, str(response.status_code)).inc()
    return response


def exposition() -> Response:
    # Under gunicorn every worker is a process: aggregate their files.
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    else:
        registry = DEFAULT_REGISTRY
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


AUDIT_WRITE_FAILURES = Counter(
    "clinchat_audit_write_failures_total", "Audit events that could not be written"
)
ADMISSION_REFUSED = Counter(
    "clinchat_admission_refused_total", "Questions refused with 503 at the in-flight bound"
)
RATE_LIMITED = Counter(
    "clinchat_rate_limited_total", "Requests refused with 429 over a rate limit", ["kind"]
)
PHI_DETECTIONS = Counter(
    "clinchat_phi_detections_total", "PHI spans detected, by where and type", ["source", "type"]
)
RETRIEVAL_LATENCY = Histogram(
    "clinchat_retrieval_duration_seconds",
    "Hybrid retrieval latency",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
# Labels from fixed sets only (app/models.py Rating, FeedbackCategory; "none" for a thumbs
# up or a thumbs down without a category): never the comment or any user text.
FEEDBACK = Counter(
    "clinchat_feedback_total",
    "Feedback given on answers (a replacement counts again), by rating and category",
    ["rating", "category"],
)
