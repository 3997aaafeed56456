"""The alert rules of roles/monitoring: valid for Prometheus, each one fired and held
back by promtool's unit tests (rules_test.yml), and built only from metric names that
exist. A metric renamed in app/metrics.py or serving/metrics.py fails
test_every_metric_is_real; an alert without a test fails test_every_alert_is_tested.

Quick tier (seconds): promtool from Debian's `prometheus` package
(tests/setup-controller.sh), no service, no lab host.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "roles/monitoring/files/clinchat-alerts.rules.yml"
UNIT_TESTS = Path(__file__).with_name("rules_test.yml")

# Metrics the rules take from exporters and from Prometheus itself, each with where it
# comes from. These programs are not importable here: the names are checked against
# their documentation and source by hand (roles/monitoring/README.md, "Alerts").
EXPORTER_METRICS = {
    # Prometheus, per scrape target
    "up": "prometheus",
    # prometheus-node-exporter, filesystem collector
    "node_filesystem_avail_bytes": "node_exporter",
    "node_filesystem_size_bytes": "node_exporter",
    "node_filesystem_readonly": "node_exporter",
    # prometheus-postgres-exporter: stat_activity and settings, replication collector
    "pg_stat_activity_count": "postgres_exporter",
    "pg_settings_max_connections": "postgres_exporter",
    # prometheus-nginx-exporter, from nginx's stub_status (the dashboards)
    "nginx_connections_active": "nginx_exporter",
    "pg_replication_lag_seconds": "postgres_exporter",
    "pg_replication_is_replica": "postgres_exporter",
    # prometheus-blackbox-exporter, tls and http probes
    "probe_ssl_earliest_cert_expiry": "blackbox_exporter",
    "probe_success": "blackbox_exporter",
    # OpenBao /v1/sys/metrics?format=prometheus (go-metrics, prefix "vault")
    "vault_core_unsealed": "openbao",
}
# Written into node exporter's textfile collector directory by these scripts of the
# roles (roles/monitoring/README.md, "Backup metric"): a renamed metric fails below.
TEXTFILE_WRITERS = {
    "clinchat_backup_last_success_timestamp_seconds": (
        "roles/postgresql/templates/clinchat-backup-metric.j2"
    ),
    "clinchat_openbao_snapshot_last_success_timestamp_seconds": (
        "roles/openbao/templates/clinchat-openbao-snapshot.sh.j2"
    ),
    "clinchat_gpu_utilization_ratio": "roles/monitoring/files/clinchat-gpu-metrics",
    "clinchat_gpu_memory_used_bytes": "roles/monitoring/files/clinchat-gpu-metrics",
    "clinchat_gpu_memory_total_bytes": "roles/monitoring/files/clinchat-gpu-metrics",
}
TEXTFILE_METRICS = set(TEXTFILE_WRITERS)

PROMQL_WORDS = {
    # aggregations, functions and keywords that may stand without "(" after them
    "by", "without", "on", "ignoring", "group_left", "group_right", "bool",
    "and", "or", "unless", "offset", "inf", "nan",
}  # fmt: skip
# Annotations may name these labels only: none carries request content.
SAFE_LABELS = {"job", "instance", "dependency", "mountpoint"}


def _promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail(
            "promtool is not installed: it comes with Debian's `prometheus` package "
            "(`bash tests/setup-controller.sh`, or `apt-get install --no-install-recommends "
            "prometheus`). The alert rules cannot be checked without it."
        )
    return path


def _rules() -> list[dict[str, Any]]:
    data = yaml.safe_load(RULES.read_text())
    return [rule for group in data["groups"] for rule in group["rules"]]


def _alerts() -> dict[str, dict[str, Any]]:
    return {rule["alert"]: rule for rule in _rules() if "alert" in rule}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (without a parser: strings, label
    matchers, grouping clauses, ranges, functions and numbers are removed first)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    names = set()
    for match in re.finditer(r"[a-zA-Z_:][a-zA-Z0-9_:]*", text):
        name = match.group(0)
        after = text[match.end() :].lstrip()
        if after.startswith("(") or name.lower() in PROMQL_WORDS:
            continue
        if match.start() > 0 and text[match.start() - 1].isdigit():
            continue  # the "e3" of 1e3, the "h" of a duration
        names.add(name)
    return names


def _code_metrics() -> set[str]:
    """Every sample name app/ and serving/ can expose, from their own registries."""
    from prometheus_client import REGISTRY

    import app.metrics  # noqa: F401
    from serving.metrics import ServerMetrics

    suffixes = {
        "counter": ("_total",),
        "histogram": ("_bucket", "_count", "_sum"),
        "gauge": ("",),
        "summary": ("_count", "_sum", ""),
    }
    names = set()
    for registry in (REGISTRY, ServerMetrics("test-model").registry):
        for family in registry.collect():
            names.update(family.name + s for s in suffixes.get(family.type, ("",)))
    return names


def test_promtool_check_rules() -> None:
    result = subprocess.run(
        [_promtool(), "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_unit_tests_pass() -> None:
    # promtool resolves rule_files relative to the test file.
    result = subprocess.run(
        [_promtool(), "test", "rules", UNIT_TESTS.name],
        cwd=UNIT_TESTS.parent,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_is_tested_firing_and_quiet() -> None:
    """Each alert has a case where it fires, and a case where it must not: an empty
    expected list, or series of its metrics from an instance that is not alerted."""
    alerts = _alerts()
    fired: set[str] = set()
    quiet: set[str] = set()
    for group in yaml.safe_load(UNIT_TESTS.read_text())["tests"]:
        series = [s["series"] for s in group.get("input_series", [])]
        for case in group.get("alert_rule_test", []):
            name = case["alertname"]
            assert name in alerts, f"rules_test.yml tests {name}, which is no alert"
            expected = case.get("exp_alerts") or []
            if not expected:
                quiet.add(name)
                continue
            fired.add(name)
            alerted = {e["exp_labels"].get("instance") for e in expected}
            used = metric_names(alerts[name]["expr"])
            others = {
                m.group(1)
                for s in series
                if s.split("{", 1)[0] in used
                for m in [re.search(r'instance="([^"]*)"', s)]
                if m
            } - alerted
            if others:
                quiet.add(name)
    assert not set(alerts) - fired, f"never fired in rules_test.yml: {set(alerts) - fired}"
    assert not set(alerts) - quiet, f"never held back in rules_test.yml: {set(alerts) - quiet}"


@pytest.mark.parametrize("name", sorted(_alerts()))
def test_alert_has_severity_for_and_safe_annotations(name: str) -> None:
    rule = _alerts()[name]
    assert rule.get("labels", {}).get("severity") in {"warning", "critical"}, name
    assert rule.get("for"), f"{name} has no `for:` duration"
    annotations = rule.get("annotations", {})
    assert annotations.get("summary") and annotations.get("description"), name
    for text in annotations.values():
        used = set(re.findall(r"\$labels\.(\w+)", text))
        assert used <= SAFE_LABELS, f"{name} names labels {used - SAFE_LABELS} in an annotation"


def test_metric_name_extraction() -> None:
    expr = (
        'sum by (instance, le) (rate(a_bucket{route!~"/x|y"}[5m])) / on (instance) '
        "max by (instance) (vllm:b) > 26 * 3600 and c == 0 or absent(d)"
    )
    assert metric_names(expr) == {"a_bucket", "vllm:b", "c", "d"}


def test_every_metric_is_real() -> None:
    """Every metric a rule selects is exposed by app/ or serving/ (their registries, so a
    renamed metric fails here), by a listed exporter, or is the documented backup metric."""
    code = _code_metrics()
    used = {name: alert for alert, rule in _alerts().items() for name in metric_names(rule["expr"])}
    unknown = {
        name: alert
        for name, alert in used.items()
        if name not in code and name not in EXPORTER_METRICS and name not in TEXTFILE_METRICS
    }
    assert not unknown, f"metrics no code or exporter exposes: {unknown}"
    # The app's and the serving's own prefixes must come from their code, never the list.
    ours = {n for n in used if n.startswith(("clinchat_", "clinchat:", "vllm:"))} - TEXTFILE_METRICS
    assert ours <= code, f"not in app/metrics.py or serving/metrics.py: {ours - code}"
    assert ours, "the rules use none of the app's or serving's metrics"


def test_the_textfile_metrics_are_written_by_their_scripts() -> None:
    repo = Path(__file__).resolve().parents[2]
    for name, writer in TEXTFILE_WRITERS.items():
        assert name in (repo / writer).read_text(), f"{writer} does not write {name}"
