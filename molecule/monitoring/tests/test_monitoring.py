"""monitoring: Prometheus answers over HTTPS verified with the lab CA (plain HTTP and
another CA refused), has the appliance's alert rules loaded and its own, Alertmanager's
and both node exporters' scrapes up; Alertmanager and the blackbox exporter answer on
the monitoring host's loopback only; node exporter speaks TLS only, its textfile
collector reaches Prometheus's scrape, and its address list (IPAddressAllow) is set,
enforced only outside systemd-nspawn."""

import shlex
import socket
import ssl
import subprocess
import time
from pathlib import Path

import httpx
import pytest
import yaml
from labtest import PKI_DIR, http_get, lab_host
from tlscheck import client_allows_old_tls, handshake, mozilla_intermediate

MON, MON_NAME = "10.213.0.29", "mol-mon"
NODE, NODE_NAME = "10.213.0.38", "mol-mon-node"
PROMETHEUS = f"https://{MON}:9090"
CA = PKI_DIR / "ca.crt"
RULES = Path(__file__).resolve().parents[3] / "roles/monitoring/files/clinchat-alerts.rules.yml"
# Every scrape this scenario's inventory gives Prometheus: (job, instance).
TARGETS = {
    ("prometheus", f"{MON}:9090"),
    ("alertmanager", "127.0.0.1:9093"),
    ("node", f"{MON}:9100"),
    ("node", f"{NODE}:9100"),
    # The certificate-expiry probe of the monitoring group's Prometheus, through the blackbox.
    ("blackbox_tls", f"{MON}:9090"),
}
# Scrapes run every 30 s: the first round after a (re)start can take that long.
SCRAPE_WAIT = 120


@pytest.fixture(scope="module")
def mon():
    return lab_host(MON_NAME)


@pytest.fixture(scope="module")
def node():
    return lab_host(NODE_NAME)


def api(path, **params):
    response = httpx.get(f"{PROMETHEUS}{path}", params=params, verify=str(CA), timeout=15)
    response.raise_for_status()
    body = response.json()
    assert body["status"] == "success", body
    return body["data"]


def another_ca(tmp_path):
    """A CA made just now, which signed nothing in the lab."""
    key, cert = tmp_path / "other-ca.key", tmp_path / "other-ca.crt"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"]
        + ["-nodes", "-keyout", key, "-out", cert, "-subj", "/CN=another CA", "-days", "1"],
        check=True,
        capture_output=True,
    )
    return cert


def tls_connect(address, port, cafile, server_hostname):
    context = ssl.create_default_context(cafile=str(cafile))
    with socket.create_connection((address, port), timeout=10) as sock:
        with context.wrap_socket(sock, server_hostname=server_hostname) as tls:
            return tls.version()


def connect_from(host, address, port):
    """rc of a TCP connection from a lab host (bash's /dev/tcp; 0: it connected)."""
    script = f"exec 3<>/dev/tcp/{address}/{port}"
    return host.run(f"timeout 5 bash -c {shlex.quote(script)}").rc


def connect_from_controller(address, port):
    """None when a TCP connection from the controller (10.213.0.1) succeeds, else the error."""
    try:
        with socket.create_connection((address, port), timeout=5):
            return None
    except OSError as error:
        return error


# -- Prometheus over HTTPS ------------------------------------------------------------------------


def test_prometheus_answers_over_https_verified_with_the_lab_ca():
    response = httpx.get(f"{PROMETHEUS}/-/ready", verify=str(CA), timeout=15)
    assert response.status_code == 200, response.text
    assert api("/api/v1/status/buildinfo")["version"].startswith(("2.", "3."))


def test_prometheus_certificate_is_the_lab_cas_for_its_own_address_only(tmp_path):
    assert tls_connect(MON, 9090, CA, MON) in ("TLSv1.2", "TLSv1.3")
    with pytest.raises(ssl.SSLCertVerificationError, match="unable to get local issuer"):
        tls_connect(MON, 9090, another_ca(tmp_path), MON)
    with pytest.raises(ssl.SSLCertVerificationError, match="mismatch"):
        tls_connect(MON, 9090, CA, "not-this-host.lab.test")


@pytest.mark.parametrize("version", ["TLSv1", "TLSv1.1"])
def test_prometheus_refuses_tls_below_1_2(version, tmp_path):
    client_allows_old_tls(tmp_path)  # the same client gets through where it is allowed
    assert handshake(MON, 9090, version).returncode != 0
    assert handshake(MON, 9090, "TLSv1.2").returncode == 0


@pytest.mark.parametrize(("address", "port"), [(MON, 9090), (NODE, 9100)])
def test_tls_meets_mozilla_intermediate(address, port):
    """Prometheus and node exporter (the role's web.yml): no CBC suite, no P-521."""
    mozilla_intermediate(address, port, ca_file=str(CA))


def test_plain_http_to_prometheus_is_refused():
    """Go's TLS server answers a plain request with 400 and nothing of the API."""
    response = httpx.get(f"http://{MON}:9090/api/v1/query", params={"query": "up"}, timeout=15)
    assert response.status_code == 400
    assert "HTTP request to an HTTPS server" in response.text
    assert '"status"' not in response.text


def test_the_appliance_alert_rules_are_loaded():
    expected = {
        rule["alert"]
        for group in yaml.safe_load(RULES.read_text())["groups"]
        for rule in group["rules"]
        if "alert" in rule
    }
    assert len(expected) >= 20
    groups = api("/api/v1/rules", type="alert")["groups"]
    loaded = {rule["name"]: rule for group in groups for rule in group["rules"]}
    assert expected <= set(loaded), sorted(expected - set(loaded))
    assert all(loaded[name]["health"] == "ok" for name in expected), {
        name: loaded[name].get("lastError") for name in expected if loaded[name]["health"] != "ok"
    }
    assert all(group["file"].endswith("clinchat-alerts.rules.yml") for group in groups)


def wait_for_up():
    """{(job, instance): value of up} once every expected target has a value of 1."""
    deadline = time.monotonic() + SCRAPE_WAIT
    while True:
        results = api("/api/v1/query", query="up")["result"]
        up = {(r["metric"]["job"], r["metric"]["instance"]): r["value"][1] for r in results}
        if all(up.get(target) == "1" for target in TARGETS) or time.monotonic() > deadline:
            return up
        time.sleep(5)


def test_every_scrape_is_up():
    up = wait_for_up()
    assert {target: up.get(target) for target in TARGETS} == dict.fromkeys(TARGETS, "1"), up
    # Nothing else is scraped: no job of a group this inventory does not have. (The
    # `up` query may still show, for its 5-minute lookback, the localhost targets of
    # Debian's default configuration, which ran between the installation and the
    # role's configuration; the active targets are the configuration's.)
    targets = api("/api/v1/targets", state="active")["activeTargets"]
    active = {(t["labels"]["job"], t["labels"]["instance"]) for t in targets}
    assert active == TARGETS, active
    assert [t["lastError"] for t in targets if t["lastError"]] == []
    node_targets = [t for t in targets if t["labels"]["job"] == "node"]
    assert {t["scrapeUrl"].split("://")[0] for t in node_targets} == {"https"}


def test_the_tls_probe_reads_the_certificate_expiry():
    wait_for_up()
    expiry = 'probe_ssl_earliest_cert_expiry{job="blackbox_tls"} - time()'
    result = api("/api/v1/query", query=expiry)["result"]
    assert len(result) == 1, result
    days = float(result[0]["value"][1]) / 86400
    assert 30 < days <= 91, days  # the pki role's 90-day host certificate
    success = api("/api/v1/query", query='probe_success{job="blackbox_tls"}')["result"]
    assert [r["value"][1] for r in success] == ["1"]


def test_no_alert_fires_but_the_missing_backup_metric_in_time():
    """A clean converge raises nothing: ClinChatBackupMetricMissing waits an hour (for: 1h)
    before it fires, so at most it is pending here."""
    alerts = api("/api/v1/alerts")["alerts"]
    firing = [a["labels"]["alertname"] for a in alerts if a["state"] == "firing"]
    assert firing == [], alerts


def test_prometheus_sends_to_the_loopback_alertmanager():
    data = api("/api/v1/alertmanagers")
    assert [a["url"] for a in data["activeAlertmanagers"]] == [
        "http://127.0.0.1:9093/api/v2/alerts"
    ]


# -- Alertmanager and the blackbox exporter: loopback only ----------------------------------------


@pytest.mark.parametrize(("port", "path"), [(9093, "/-/healthy"), (9115, "/-/healthy")])
def test_loopback_services_answer_on_the_monitoring_host(mon, port, path):
    assert http_get(mon, f"http://127.0.0.1:{port}{path}")["status"] == 200


@pytest.mark.parametrize("port", [9093, 9115])
def test_loopback_services_refuse_the_lab_network(mon, node, port):
    listening = mon.check_output(f"ss -Htln 'sport = :{port}'")
    assert "127.0.0.1:" in listening and MON not in listening and "*:" not in listening, listening
    assert connect_from(node, MON, port) != 0
    assert connect_from(mon, MON, port) != 0
    assert isinstance(connect_from_controller(MON, port), ConnectionRefusedError)


def test_alertmanager_has_no_cluster_gossip_port(mon):
    assert mon.run("ss -Hln 'sport = :9094'").stdout.strip() == ""


# -- node exporter over TLS on every host ---------------------------------------------------------


@pytest.mark.parametrize("address", [MON, NODE])
def test_node_exporter_speaks_tls_only(mon, address):
    """Over TLS verified with the lab CA (from the monitoring host, which may connect);
    plain HTTP gets Go's 400."""
    response = http_get(mon, f"https://{address}:9100/metrics")
    assert response["status"] == 200
    assert "node_filesystem_avail_bytes" in response["body"]
    plain = http_get(mon, f"http://{address}:9100/metrics")
    assert plain["status"] == 400
    assert "node_" not in plain["body"]


@pytest.mark.parametrize("name", [MON_NAME, NODE_NAME])
def test_node_exporter_admits_only_loopback_and_the_monitoring_host(name):
    host = lab_host(name)
    properties = "-p IPAddressDeny -p IPAddressAllow -p SupplementaryGroups"
    show = host.check_output(f"systemctl show {properties} prometheus-node-exporter")
    values = dict(line.split("=", 1) for line in show.splitlines())
    assert set(values["IPAddressDeny"].split()) == {"0.0.0.0/0", "::/0"}, show
    assert set(values["IPAddressAllow"].split()) == {"127.0.0.0/8", "::1/128", f"{MON}/32"}, show
    assert values["SupplementaryGroups"] == "ssl-cert", show


def test_node_exporter_refuses_a_host_outside_the_monitoring_group(node):
    virt = node.run("systemd-detect-virt").stdout.strip()
    if virt == "systemd-nspawn":
        pytest.skip(
            "systemd-nspawn: systemd cannot load IPAddressDeny's BPF programs in the "
            "container, so the address list is not enforced here (the role says so; the "
            "firewall role's node-exporter rule is the other layer)"
        )
    assert connect_from_controller(NODE, 9100) is not None


def test_the_textfile_collector_reaches_prometheus(node):
    """What the backup job will do (README, "Backup metric"): an atomic .prom file in the
    textfile directory, scraped by Prometheus over TLS from the other host."""
    directory = "/var/lib/prometheus/node-exporter"
    stamp = int(time.time())
    content = (
        "# TYPE clinchat_backup_last_success_timestamp_seconds gauge\n"
        f'clinchat_backup_last_success_timestamp_seconds{{type="molecule"}} {stamp}\n'
    )
    tmp, final = f"{directory}/.molecule.tmp", f"{directory}/clinchat_molecule.prom"
    node.check_output(
        f"printf %s {shlex.quote(content)} > {tmp} && chmod 0644 {tmp} && mv {tmp} {final}"
    )
    try:
        labels = f'type="molecule",instance="{NODE}:9100"'
        query = f"clinchat_backup_last_success_timestamp_seconds{{{labels}}}"
        deadline = time.monotonic() + SCRAPE_WAIT
        result = []
        while not result and time.monotonic() < deadline:
            result = api("/api/v1/query", query=query)["result"]
            if not result:
                time.sleep(5)
        assert [float(r["value"][1]) for r in result] == [stamp], result
    finally:
        node.run(f"rm -f {final}")


# -- the services -------------------------------------------------------------------------------


def test_services_run_as_prometheus_and_enabled(mon, node):
    for host, services in (
        (mon, ["prometheus", "prometheus-alertmanager", "prometheus-blackbox-exporter"]),
        (mon, ["prometheus-node-exporter"]),
        (node, ["prometheus-node-exporter"]),
    ):
        for name in services:
            service = host.service(name)
            assert service.is_running and service.is_enabled, name
            user = host.check_output(f"systemctl show -p User --value {name}")
            assert user == "prometheus", (name, user)
    assert not node.package("prometheus").is_installed


def test_configuration_files_are_not_world_readable(mon):
    names = ("prometheus.yml", "web.yml", "alertmanager.yml", "blackbox.yml", "exporter-web.yml")
    for path in names:
        f = mon.file(f"/etc/prometheus/{path}")
        assert f.exists and f.user == "root" and f.group == "prometheus" and f.mode == 0o640, path
