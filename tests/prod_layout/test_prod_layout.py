"""The documented production inventory (inventories/prod) converges: its hosts,
groups and group_vars as a hospital copies them, each host a lab machine.

Only what points outside the lab is replaced (-e, highest precedence): the
addresses (ansible_host), how the controller logs in, the bundle's URL, the
time servers, the administrators' keys, the hospital's certificate files
(the lab CA instead), the directory (not in this layout), the model (the
tiny test model), and /etc/hosts
entries for the hospital's DNS. The secrets come as the prod inventory reads
them: environment variables. `make prod-layout` runs it (about 20 minutes on
2 cores: ten hosts); it is not part of `make test`.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.e2e.lab_client import RECAP

REPO = Path(__file__).resolve().parents[2]
LAB = REPO / "tests" / "lab" / "clinchat-lab"
PROD = REPO / "inventories" / "prod"
STATE = Path("/var/lib/clinchat-lab")
# Addresses of this test: 10.213.0.80-89 (docs/DECISIONS.md, the lab's address plan).
FIRST_ADDRESS = 80
SECRETS_DIR = Path("/var/lib/clinchat/secrets/prod-layout")

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="lab hosts need root")


def lab_name(inventory_name: str) -> str:
    """clinchat-web1.example-hospital.internal -> prod-web1 (a machine name)."""
    return "prod-" + inventory_name.split(".")[0].removeprefix("clinchat-")


def prod_hosts() -> dict[str, list[str]]:
    """Every host of the prod inventory and its groups."""
    inventory = yaml.safe_load((PROD / "hosts.yml").read_text())
    hosts: dict[str, list[str]] = {}
    for group, body in inventory["all"]["children"].items():
        for host in (body or {}).get("hosts") or {}:
            hosts.setdefault(host, []).append(group)
    return hosts


def run(*args: str | Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603
        [str(a) for a in args],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
        env=(os.environ | env) if env else None,
    )


@pytest.fixture(scope="module")
def layout(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Lab machines for the prod hosts, and the inventory directory a hospital
    would have, pointed at them."""
    root = tmp_path_factory.mktemp("prod-layout")
    hosts = prod_hosts()
    addresses = {
        name: f"10.213.0.{FIRST_ADDRESS + index}" for index, name in enumerate(sorted(hosts))
    }
    spec = {
        "inventory": "lab-hosts.yml",
        "hosts": {
            lab_name(name): {"address": addresses[name], "type": "nspawn", "groups": groups}
            for name, groups in hosts.items()
        },
    }
    spec_path = root / "lab.yml"
    spec_path.write_text(yaml.safe_dump(spec))
    made = run(LAB, "up", "--spec", spec_path)
    assert made.returncode == 0, made.stderr[-3000:]

    inventory = root / "inventory"
    shutil.copytree(PROD, inventory)
    prod = yaml.safe_load((PROD / "hosts.yml").read_text())
    # Every listing of a host gets its lab address (the prod file gives only ansible_host).
    for body in prod["all"]["children"].values():
        for name in (body or {}).get("hosts") or {}:
            body["hosts"][name] = {"ansible_host": addresses[name]}
    (inventory / "hosts.yml").write_text(yaml.safe_dump(prod, sort_keys=False))
    lab_vars = {
        # The lab logs in as root; the roles' become (to postgres, to root) goes
        # through su, since a bare lab host has no sudo before the base stage.
        "ansible_user": "root",
        "ansible_become_method": "su",
        "ansible_ssh_private_key_file": str(STATE / "ssh" / "id_ed25519"),
        "ansible_ssh_extra_args": f"-o UserKnownHostsFile={STATE / 'known_hosts'}",
        "ansible_python_interpreter": "/usr/bin/python3",
        "bundle_url": "http://10.213.0.1:8088",
        "bundle_dir": "/var/cache/clinchat/bundle",
        "base_ntp_servers": [],
        "base_admin_users": [],
        "base_hosts_entries": [{"name": n, "address": a} for n, a in sorted(addresses.items())],
        "pki_ca_cert_src": "",
        "pki_host_cert_src": "",
        "pki_host_key_src": "",
        "pki_dir": "/var/lib/clinchat/pki/prod-layout",
        "clinchat_secrets_dir": str(SECRETS_DIR),
        "app_ldap_url": "",
        # The lab logs in as root with a key; the controller is the admin network.
        "harden_ssh_allow_groups": ["root", "clinchat-admin"],
        "harden_ssh_permit_root_login": "prohibit-password",
        "firewall_admin_networks": ["10.213.0.1"],
        # The hospital brings its model; the lab makes the tiny test model.
        "serving_model_make_test": True,
        "serving_embedding_model_make_test": True,
        # The prod inventory asks for the key holders' recipients; the lab's own.
        "openbao_snapshot_age_recipients": [
            "{{ lookup('clinchat.appliance.age_recipient',"
            " clinchat_secrets_dir ~ '/openbao-snapshot.agekey') }}"
        ],
    }
    (root / "lab-vars.yml").write_text(yaml.safe_dump(lab_vars))
    yield root
    if os.environ.get("CLINCHAT_KEEP_LAB") != "1":
        run(LAB, "down", "--spec", spec_path)


def site(layout: Path, *extra: str) -> tuple[dict[str, dict[str, int]], str]:
    """site.yml with the prod inventory; its secrets from the environment, as documented."""
    SECRETS_DIR.mkdir(parents=True, exist_ok=True)
    env = {}
    for name in (
        "CLINCHAT_POSTGRESQL_APP_PASSWORD",
        "CLINCHAT_POSTGRESQL_OWNER_PASSWORD",
        "CLINCHAT_REDIS_APP_PASSWORD",
        "CLINCHAT_AUDIT_HMAC_KEY",
        "CLINCHAT_LDAP_BIND_PASSWORD",
        "CLINCHAT_SERVING_API_KEY",
        "CLINCHAT_BACKUP_REPO_CIPHER_PASS",
    ):
        path = SECRETS_DIR / name.lower()
        if not path.exists():
            path.write_text(secrets.token_urlsafe(32))
            path.chmod(0o600)
        env[name] = path.read_text()
    result = run(
        "ansible-playbook",
        "site.yml",
        "-i",
        layout / "inventory",
        "-e",
        f"@{layout / 'lab-vars.yml'}",
        *extra,
        env=env,
    )
    output = result.stdout + result.stderr
    failures = "\n".join(
        line for line in output.splitlines() if "fatal:" in line or "FAILED!" in line
    )
    recap = {
        m["host"]: {k: int(m[k]) for k in ("changed", "unreachable", "failed")}
        for m in RECAP.finditer(output)
    }
    return recap, failures + "\n...\n" + output[-6000:]


def test_the_prod_inventory_converges_then_changes_nothing(layout: Path) -> None:
    recap, output = site(layout)
    assert set(recap) == set(prod_hosts()), output
    assert all(r["failed"] == 0 and r["unreachable"] == 0 for r in recap.values()), output
    again, output = site(layout)
    assert {h: r["changed"] for h, r in again.items()} == dict.fromkeys(again, 0), output
    check, output = site(layout, "--check")
    assert {h: r["changed"] for h, r in check.items()} == dict.fromkeys(check, 0), output
