"""firewall: each tier's port is reached from the tier that uses it and from
nowhere else; every other port is dropped. Proven by real clients on the
other lab hosts (and the controller), each against a listener that answers."""

import json
import os
import re
import shlex
import socket
import subprocess
import time
from pathlib import Path

import pytest
from labtest import lab_host

DB, APP, WEB = "10.213.0.53", "10.213.0.54", "10.213.0.55"
NAMES = {DB: "mol-fw-db", APP: "mol-fw-app", WEB: "mol-fw-web"}

_CONNECT = """
import socket, sys
s = socket.socket()
s.settimeout(3)
try:
    s.connect((sys.argv[1], int(sys.argv[2])))
    print("open")
except ConnectionRefusedError:
    print("refused")
except OSError:
    print("dropped")
"""


def connect(client: str, address: str, port: int) -> str:
    """open, refused (a reset: nothing listens) or dropped (no answer), as
    seen by a client on the lab host `client`."""
    host = lab_host(NAMES[client])
    return host.check_output(f"python3 -c {shlex.quote(_CONNECT)} {address} {port}").strip()


def connect_from_controller(address: str, port: int) -> str:
    try:
        socket.create_connection((address, port), timeout=3).close()
        return "open"
    except ConnectionRefusedError:
        return "refused"
    except OSError:
        return "dropped"


@pytest.fixture(scope="module", autouse=True)
def listeners():
    """A TCP listener on each port under test, so that only the firewall can
    stop a client: 5432 and 9999 on db, 8000 on app, 443 on web."""
    ports = {DB: [5432, 9999], APP: [8000], WEB: [443]}
    units = []
    for address, numbers in ports.items():
        host = lab_host(NAMES[address])
        for port in numbers:
            unit = f"fw-test-listen-{port}"
            host.run(f"systemctl stop {unit}")
            host.check_output(
                f"systemd-run --unit={unit} python3 -m http.server --bind 0.0.0.0 {port}"
            )
            units.append((host, unit))
    for address, numbers in ports.items():  # up before any test
        for port in numbers:
            lab_host(NAMES[address]).check_output(
                f"timeout 10 sh -c 'until ss -ltn | grep -q :{port}; do sleep 0.2; done'"
            )
    yield
    for host, unit in units:
        host.run(f"systemctl stop {unit}")


def test_each_listener_answers_on_its_own_host():
    for address, port in [(DB, 5432), (DB, 9999), (APP, 8000), (WEB, 443)]:
        assert connect(address, "127.0.0.1", port) == "open"


def test_the_app_tier_reaches_the_database_and_nobody_else_does():
    assert connect(APP, DB, 5432) == "open"
    assert connect(WEB, DB, 5432) == "dropped"
    assert connect_from_controller(DB, 5432) == "dropped"


def test_the_web_tier_reaches_the_app_and_the_database_does_not():
    assert connect(WEB, APP, 8000) == "open"
    assert connect(DB, APP, 8000) == "dropped"


def test_https_is_open_to_the_clients():
    """The clinicians' workstations stand outside the lab's tiers: the
    controller. (The db host's own output chain would stop it: it does not
    use the web tier.)"""
    assert connect_from_controller(WEB, 443) == "open"
    assert connect(DB, WEB, 443) == "dropped"


def test_a_port_opened_by_hand_is_dropped():
    """A service someone starts on a port the ruleset does not name."""
    assert connect(APP, DB, 9999) == "dropped"


def test_ssh_only_from_the_admin_network():
    assert connect_from_controller(DB, 22) == "open"
    assert connect(WEB, DB, 22) == "dropped"
    assert connect(APP, WEB, 22) == "dropped"


def test_the_ruleset_is_default_deny_and_loaded_at_boot():
    host = lab_host(NAMES[DB])
    ruleset = json.loads(host.check_output("nft --json list chain inet clinchat input"))
    chain = next(item["chain"] for item in ruleset["nftables"] if "chain" in item)
    assert chain["policy"] == "drop"
    service = host.service("nftables")
    assert service.is_enabled and service.is_running
    # Flushed by hand, the service's restart (as at boot) loads it again.
    host.check_output("nft flush ruleset")
    assert connect_from_controller(DB, 5432) == "open"
    host.check_output("systemctl restart nftables")
    assert connect_from_controller(DB, 5432) == "dropped"


@pytest.fixture
def controller_listener():
    """A listener on the controller's lab address: a destination no host's
    ruleset names."""
    server = socket.create_server(("10.213.0.1", 0))
    yield server.getsockname()[1]
    server.close()


def test_outgoing_traffic_is_default_deny(controller_listener):
    # The bundle mirror is named by bundle_url: reachable.
    assert connect(DB, "10.213.0.1", 8088) == "open"
    # Anything else on the controller: dropped on the way out.
    assert connect(DB, "10.213.0.1", controller_listener) == "dropped"
    # The app host reaches the database (the tier it uses); the database
    # host does not reach the app host's port even though app accepts
    # nobody but web there: its own output chain stops it first.
    host = lab_host(NAMES[DB])
    counters = json.loads(host.check_output("nft --json list counter inet clinchat dropped_out"))
    before = next(i["counter"]["packets"] for i in counters["nftables"] if "counter" in i)
    assert connect(DB, APP, 8000) == "dropped"
    counters = json.loads(host.check_output("nft --json list counter inet clinchat dropped_out"))
    after = next(i["counter"]["packets"] for i in counters["nftables"] if "counter" in i)
    assert after > before  # counted


_LOCKOUT = """#!/usr/sbin/nft -f
flush ruleset
table inet clinchat {
	chain input {
		type filter hook input priority filter; policy drop;
		iif "lo" accept
	}
}
"""


def test_a_ruleset_that_shuts_ansible_out_is_rolled_back():
    """The role's way of loading a ruleset (clinchat-fw-apply, as its handler
    does) with a ruleset that drops SSH: nobody confirms, and the timer puts
    the previous ruleset and file back."""
    host = lab_host(NAMES[WEB])
    host.check_output(f"printf %s {shlex.quote(_LOCKOUT)} > /etc/nftables.conf")
    # Started as its own unit: the SSH session it runs in is cut by the new rules.
    host.check_output("systemd-run --unit=fw-test-apply /usr/local/sbin/clinchat-fw-apply 8")
    time.sleep(2)
    assert connect_from_controller(WEB, 22) == "dropped"
    deadline = time.monotonic() + 30
    while connect_from_controller(WEB, 22) != "open" and time.monotonic() < deadline:
        time.sleep(1)
    assert connect_from_controller(WEB, 22) == "open"
    assert host.file("/etc/nftables.conf").content_string.strip() != _LOCKOUT.strip()
    assert connect_from_controller(WEB, 443) == "open"  # the appliance's rules are back
    # The restored file is the live ruleset as it was before (the role's rules).
    assert "ssh from the admin networks" in host.file("/etc/nftables.conf").content_string


def test_a_rule_added_by_hand_is_drift_and_the_next_run_removes_it():
    """`nft add rule` changes no file: the role's 4.3.10 probe compares the
    live ruleset with the file's, so --check reports it and a run undoes it."""
    host = lab_host(NAMES[DB])
    host.check_output("nft add rule inet clinchat input tcp dport 9999 accept comment by-hand")
    assert connect_from_controller(DB, 9999) == "open"
    inventory = os.environ["MOLECULE_INVENTORY_FILE"]
    playbook = Path(os.environ["MOLECULE_SCENARIO_DIRECTORY"]) / "converge.yml"
    argv = ["ansible-playbook", "-i", inventory, "--limit", NAMES[DB], str(playbook)]
    check = subprocess.run([*argv, "--check", "-v"], capture_output=True, text=True, check=False)
    assert re.search(rf"{NAMES[DB]}\s*:\s*ok=\d+\s+changed=[1-9]", check.stdout), check.stdout[
        -3000:
    ]
    assert "by-hand" in check.stdout  # the probe's evidence names the rule
    assert connect_from_controller(DB, 9999) == "open"  # check mode changed nothing
    converge = subprocess.run(argv, capture_output=True, text=True, check=False)
    assert converge.returncode == 0, converge.stdout[-3000:]
    assert connect_from_controller(DB, 9999) == "dropped"
