"""The dashboards of roles/monitoring: the Grafana JSON (for a hospital's Grafana) and
the Prometheus console (for a site without one) show the same queries, every query
is valid PromQL built only from real metric names, and the console renders in a
real Prometheus without a template error.

Quick tier: the controller's Prometheus from Debian's package (tests/setup-controller.sh),
started on loopback for a few seconds, scraping only itself. tests/e2e/test_monitoring.py
renders the console on the lab's Prometheus with every tier's data.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from tests.monitoring.test_rules import (
    EXPORTER_METRICS,
    TEXTFILE_METRICS,
    _code_metrics,
    _promtool,
    metric_names,
)

ROOT = Path(__file__).resolve().parents[2]
GRAFANA = ROOT / "roles/monitoring/files/dashboards/clinchat-overview.json"
CONSOLES = ROOT / "roles/monitoring/files/consoles"
CONSOLE = CONSOLES / "clinchat.html"
# Prometheus's own series, which only the dashboards read.
PROMETHEUS_SERIES = {"ALERTS"}


def grafana_queries() -> list[str]:
    panels = json.loads(GRAFANA.read_text())["panels"]
    return [t["expr"] for p in panels for t in p.get("targets", [])]


def console_queries() -> list[str]:
    return re.findall(r"query `([^`]+)`", CONSOLE.read_text())


def test_grafana_and_console_show_the_same_queries() -> None:
    assert grafana_queries(), "no query in the Grafana dashboard"
    assert sorted(grafana_queries()) == sorted(console_queries())
    assert len(set(grafana_queries())) == len(grafana_queries()), "a query is shown twice"


def test_every_grafana_panel_reads_the_datasource_variable() -> None:
    """No datasource uid of one Grafana: the hospital picks its Prometheus on import."""
    dashboard = json.loads(GRAFANA.read_text())
    assert [v["name"] for v in dashboard["templating"]["list"]] == ["datasource"]
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]


def test_every_query_is_valid_promql(tmp_path: Path) -> None:
    """promtool parses each query as a recording rule's expression."""
    rules = {
        "groups": [
            {
                "name": "dashboards",
                "rules": [
                    {"record": f"clinchat_dashboard_query_{i}", "expr": expr}
                    for i, expr in enumerate(grafana_queries())
                ],
            }
        ]
    }
    path = tmp_path / "dashboards.rules.yml"
    path.write_text(yaml.safe_dump(rules))
    result = subprocess.run(
        [_promtool(), "check", "rules", str(path)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_metric_is_real() -> None:
    known = _code_metrics() | set(EXPORTER_METRICS) | TEXTFILE_METRICS | PROMETHEUS_SERIES
    used = {name for expr in grafana_queries() for name in metric_names(expr)}
    assert not used - known, f"the dashboards read metrics nothing exposes: {used - known}"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail("prometheus is not installed: run tests/setup-controller.sh")
    work = tmp_path_factory.mktemp("prometheus")
    port = _free_port()
    config = work / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s}\n"
        "scrape_configs:\n"
        f"  - {{job_name: prometheus, static_configs: [{{targets: ['127.0.0.1:{port}']}}]}}\n"
    )
    log = (work / "prometheus.log").open("w")
    process = subprocess.Popen(  # noqa: S603
        [
            binary,
            f"--config.file={config}",
            f"--web.listen-address=127.0.0.1:{port}",
            f"--storage.tsdb.path={work / 'data'}",
            f"--web.console.templates={CONSOLES}",
            f"--web.console.libraries={work}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                answer = httpx.get(f"{url}/api/v1/query", params={"query": "up"}).json()
                if answer["data"]["result"]:
                    break
            except (httpx.HTTPError, ValueError, KeyError):
                pass  # not listening yet, or "Service Unavailable" while the TSDB opens
            assert process.poll() is None, (work / "prometheus.log").read_text()[-2000:]
            assert time.monotonic() < deadline, "Prometheus did not scrape itself in 30 s"
            time.sleep(0.5)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


def test_the_console_renders(prometheus: str) -> None:
    response = httpx.get(f"{prometheus}/consoles/clinchat.html", timeout=30)
    assert response.status_code == 200, response.text[-2000:]
    page = response.text
    assert "error" not in page.lower(), page[-2000:]
    titles = re.findall(r"<h3>([^<]+)</h3>", CONSOLE.read_text())
    assert titles and all(f"<h3>{title}</h3>" in page for title in titles)
    # Prometheus's own target is up: a table row, not "no data".
    assert re.search(r"<td>prometheus 127\.0\.0\.1:\d+</td><td class=\"value\">1</td>", page)
