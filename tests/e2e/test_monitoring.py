"""Monitoring as site.yml deploys it (playbooks/monitoring.yml): Prometheus on the
lab's monitoring host scrapes every tier over TLS with the appliance's alert rules
loaded, a metric written on the data host reaches it, and node exporter answers the
monitoring hosts and management networks only, refusing another client."""

import os
import re
import shlex
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import yaml

from tests.e2e.conftest import REPO
from tests.e2e.lab_client import APP_HOST, DATA_HOST, DIR_HOST, GPU_HOST, LAB_CA, WEB_HOST, ssh

MON_HOST = DIR_HOST  # inventories/lab/lab.yml: lab-dir1 is also the monitoring host
PROMETHEUS = f"https://{MON_HOST}:9090"
RULES = Path(__file__).resolve().parents[2] / "roles/monitoring/files/clinchat-alerts.rules.yml"
LAB_HOSTS = (WEB_HOST, APP_HOST, DATA_HOST, GPU_HOST, MON_HOST)
# Every scrape the lab's inventory gives Prometheus: (job, instance).
TARGETS = {
    ("prometheus", f"{MON_HOST}:9090"),
    ("alertmanager", "127.0.0.1:9093"),
    *{("node", f"{host}:9100") for host in LAB_HOSTS},
    ("app", f"{APP_HOST}:8000"),
    ("serving", f"{GPU_HOST}:8081"),
    ("openbao", f"{DATA_HOST}:8200"),
    ("nginx", f"{WEB_HOST}:9113"),
    ("postgres", f"{DATA_HOST}:9187"),
    ("openbao_health", f"https://{DATA_HOST}:8200/v1/sys/health"),
    *{
        ("blackbox_tls", endpoint)
        for endpoint in (
            f"{WEB_HOST}:443",
            f"{APP_HOST}:8000",
            f"{GPU_HOST}:8081",
            f"{DATA_HOST}:6379",
            f"{DATA_HOST}:8200",
            f"{MON_HOST}:9090",
        )
    },
}
# Scrapes run every 30 s; a service restarted by the converge needs a round or two.
SCRAPE_WAIT = 150
BRIDGE = "clinchat0"
# A second address of the controller on the bridge (docs/DECISIONS.md): a client
# in no management network and no monitoring group.
OUTSIDER = "10.213.0.19"
ARTIFACTS = Path(os.environ.get("CLINCHAT_ARTIFACTS_DIR", REPO / "artifacts" / "e2e"))
# Console sections every tier of the converged lab fills (others may be empty or
# NaN in a quiet lab: no retrieval in the last five minutes, say).
FILLED = (
    "Scrape targets up (1) or down (0)",
    "Requests per second",
    "Requests waiting",
    "Time since the last database backup",
    "OpenBao unsealed (1) or sealed (0)",
    "Time to certificate expiry",
    "Free space on the fullest disk",
    "Database connections in use",
    "nginx: open connections",
    "GPU memory held by the model server (torch)",
)


def api(path: str, **params: str) -> dict | list:
    response = httpx.get(f"{PROMETHEUS}{path}", params=params, verify=str(LAB_CA), timeout=15)
    response.raise_for_status()
    body = response.json()
    assert body["status"] == "success", body
    return body["data"]


def active_targets() -> dict[tuple[str, str], dict]:
    data = api("/api/v1/targets", state="active")
    assert isinstance(data, dict)
    return {(t["labels"]["job"], t["labels"]["instance"]): t for t in data["activeTargets"]}


def test_prometheus_scrapes_every_tier_over_tls(converged: Path) -> None:
    deadline = time.monotonic() + SCRAPE_WAIT
    targets = active_targets()
    while time.monotonic() < deadline and any(t["health"] != "up" for t in targets.values()):
        time.sleep(5)
        targets = active_targets()
    assert set(targets) == TARGETS
    down = {key: (t["health"], t["lastError"]) for key, t in targets.items() if t["health"] != "up"}
    assert not down
    # Over TLS, but for the monitoring host's own loopback: Alertmanager, and the
    # blackbox exporter, whose probes (TLS handshakes, OpenBao's health) cross the network.
    loopback_jobs = {"alertmanager", "openbao_health", "blackbox_tls"}
    for (job, instance), target in targets.items():
        scheme = "http://127.0.0.1:" if job in loopback_jobs else "https://"
        assert target["scrapeUrl"].startswith(scheme), (job, instance, target["scrapeUrl"])


def test_openbao_reports_itself_unsealed(converged: Path) -> None:
    """The name alert ClinChatOpenBaoSealed reads is the one OpenBao's telemetry
    (roles/openbao) exports, and the lab's node is unsealed."""
    deadline = time.monotonic() + SCRAPE_WAIT
    result: list[dict] = []
    while time.monotonic() < deadline and not result:
        data = api("/api/v1/query", query=f'vault_core_unsealed{{instance="{DATA_HOST}:8200"}}')
        assert isinstance(data, dict)
        result = data["result"]
        if not result:
            time.sleep(5)
    assert [float(r["value"][1]) for r in result] == [1.0], result


def test_every_alert_rule_is_loaded(converged: Path) -> None:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    wanted = {rule["alert"] for group in groups for rule in group["rules"]}
    data = api("/api/v1/rules", type="alert")
    assert isinstance(data, dict)
    loaded = {rule["name"] for group in data["groups"] for rule in group["rules"]}
    assert loaded == wanted
    assert all(rule["health"] == "ok" for group in data["groups"] for rule in group["rules"])


def test_the_openbao_snapshot_metric_reaches_prometheus(converged: Path) -> None:
    """An hourly snapshot run now on the data host: its metric goes through node
    exporter's textfile collector (TLS) to Prometheus, which alert
    ClinChatOpenBaoSnapshotLate reads."""
    before = time.time()
    ssh(DATA_HOST, "systemctl start clinchat-openbao-snapshot.service")
    metric = "clinchat_openbao_snapshot_last_success_timestamp_seconds"
    query = f'{metric}{{instance="{DATA_HOST}:9100"}}'
    deadline = time.monotonic() + SCRAPE_WAIT
    values: list[float] = []
    while time.monotonic() < deadline and not [v for v in values if v >= int(before)]:
        time.sleep(5)
        result = api("/api/v1/query", query=query)
        assert isinstance(result, dict)
        values = [float(r["value"][1]) for r in result["result"]]
    assert [v for v in values if v >= int(before)], values


def test_the_console_shows_every_tier(converged: Path) -> None:
    """The dashboard of a site without Grafana, on the lab's Prometheus; its screenshot
    (artifacts/e2e/monitoring-console.png) is the README's."""
    response = httpx.get(f"{PROMETHEUS}/consoles/clinchat.html", verify=str(LAB_CA), timeout=30)
    assert response.status_code == 200, response.text[-2000:]
    page = response.text
    assert "error" not in page.lower(), page[-3000:]
    sections = {
        m.group(1): m.group(2) for m in re.finditer(r"<h3>([^<]+)</h3>(.*?)</section>", page, re.S)
    }
    for title in FILLED:
        assert 'class="none"' not in sections[title], (title, sections[title])
    assert f"<td>node {DATA_HOST}:9100</td>" in sections["Scrape targets up (1) or down (0)"]
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    html = ARTIFACTS / "monitoring-console.html"
    html.write_text(page)
    # The page is self-contained (no script, no link): Chromium renders the saved copy.
    subprocess.run(  # noqa: S603
        [
            "/usr/bin/chromium",
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--window-size=1280,1700",
            f"--screenshot={ARTIFACTS / 'monitoring-console.png'}",
            html.as_uri(),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    assert (ARTIFACTS / "monitoring-console.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@contextmanager
def outsider_address() -> Iterator[str]:
    subprocess.run(["ip", "address", "add", f"{OUTSIDER}/32", "dev", BRIDGE], check=True)  # noqa: S607
    try:
        yield OUTSIDER
    finally:
        subprocess.run(["ip", "address", "del", f"{OUTSIDER}/32", "dev", BRIDGE], check=False)  # noqa: S607


def connects(source: str, host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=5, source_address=(source, 0)):
            return True
    except OSError:
        return False


@pytest.mark.parametrize("host", [WEB_HOST, DATA_HOST])
def test_node_exporter_answers_only_monitoring_and_management(converged: Path, host: str) -> None:
    """The same client, from the controller's management address and from another
    address of it: node exporter takes the first and drops the second, while nginx's
    HTTPS (open to the clinicians' networks) takes both, so the refusal is the
    firewall's node-exporter rule, not a broken route."""
    assert connects("10.213.0.1", host, 9100)
    with outsider_address() as outsider:
        assert connects(outsider, WEB_HOST, 443)
        assert not connects(outsider, host, 9100)
    # The monitoring host itself scrapes it: the TLS handshake from there succeeds.
    handshake = (
        "import socket, ssl, sys; host = sys.argv[1];"
        " context = ssl.create_default_context(cafile='/etc/clinchat/pki/ca.crt');"
        " raw = socket.create_connection((host, 9100), 5);"
        " tls = context.wrap_socket(raw, server_hostname=host);"
        " print(tls.version())"
    )
    out = ssh(MON_HOST, f"python3 -c {shlex.quote(handshake)} {host}")
    assert out.strip().startswith("TLSv1.")
