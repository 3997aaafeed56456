#!/usr/bin/python
"""clinchat.appliance.tls_listeners: the TCP listeners of systemd units; does each speak TLS?"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
import ssl

from ansible.module_utils.basic import AnsibleModule

DOCUMENTATION = r"""
module: tls_listeners
short_description: list the TCP listeners of systemd units and try a TLS handshake on each
description:
  - Finds every listening TCP socket of the processes in the units' control groups
    (C(ss -ltnp)) and offers each a TLS handshake, as a client would, without
    checking the certificate (the question is whether the listener speaks TLS).
  - Read-only; supports check mode (it runs there too).
version_added: "0.1.0"
options:
  units:
    description: systemd units, e.g. C(clinchat-app.service).
    type: list
    elements: str
    required: true
  timeout:
    description: Seconds to wait for each connection and handshake.
    type: float
    default: 3
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
author: ClinChat Appliance
"""

EXAMPLES = r"""
- name: "CLINCHAT-APP-4 | AUDIT | Read the app's listeners"
  clinchat.appliance.tls_listeners:
    units: [clinchat-app.service]
  register: __app_listeners
"""

RETURN = r"""
listeners:
  description: One entry per listening address and port.
  type: list
  elements: dict
  returned: always
  sample:
    - {name: "10.213.0.12:8000", address: 10.213.0.12, port: 8000, tls: true,
       protocol: TLSv1.3, loopback: false, unit: clinchat-app.service}
plain:
  description: C(address:port) of each listener that did not complete a TLS handshake.
  type: list
  elements: str
  returned: always
plain_beyond_loopback:
  description: Those of O(plain) that listen on more than a loopback address.
  type: list
  elements: str
  returned: always
running:
  description: The units that have processes.
  type: list
  elements: str
  returned: always
"""

_PID = re.compile(r"pid=(\d+)")


def unit_pids(module, unit):
    """The pids in the unit's control group (and its sub-groups); empty when it is not running."""
    rc, out, _ = module.run_command(
        ["systemctl", "show", "--property=ControlGroup", "--value", unit]
    )
    group = out.strip()
    if rc != 0 or not group:
        return set()
    pids = set()
    for root, _, files in os.walk("/sys/fs/cgroup" + group):
        if "cgroup.procs" in files:
            with open(os.path.join(root, "cgroup.procs")) as procs:
                pids.update(int(line) for line in procs if line.strip())
    return pids


def parse_ss(text):
    """``ss -Hltnp`` lines as (address, port, pids)."""
    found = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 4:
            continue
        local = fields[3]
        address, _, port = local.rpartition(":")
        address = address.strip("[]").split("%")[0]
        if not port.isdigit():
            continue
        found.append((address, int(port), {int(p) for p in _PID.findall(line)}))
    return found


def handshake(address, port, timeout):
    """(True, protocol) when the listener completes a TLS handshake, else (False, why)."""
    # A wildcard listener is reached on loopback.
    wildcard = {"0.0.0.0": "127.0.0.1", "*": "127.0.0.1", "::": "::1"}  # noqa: S104
    host = wildcard.get(address, address)
    context = ssl.create_default_context()
    # Whether it speaks TLS at all: trust is the client's business (and tested elsewhere).
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with socket.create_connection((host, port), timeout=timeout) as raw:
            with context.wrap_socket(raw, server_hostname=None) as tls:
                return True, tls.version()
    except (OSError, ssl.SSLError) as exc:
        return False, f"{type(exc).__name__}: {exc}"


def is_loopback(address):
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return address == "localhost"


def main():
    module = AnsibleModule(
        argument_spec={
            "units": {"type": "list", "elements": "str", "required": True},
            "timeout": {"type": "float", "default": 3},
        },
        supports_check_mode=True,
    )
    rc, out, err = module.run_command(["ss", "-Hltnp"])
    if rc != 0:
        module.fail_json(msg=f"ss -Hltnp failed: {err.strip()}")
    sockets = parse_ss(out)
    listeners, running = [], []
    for unit in module.params["units"]:
        pids = unit_pids(module, unit)
        if pids:
            running.append(unit)
        for address, port, owners in sockets:
            if owners & pids and not any(
                entry["address"] == address and entry["port"] == port for entry in listeners
            ):
                tls, detail = handshake(address, port, module.params["timeout"])
                listeners.append(
                    {"unit": unit, "name": f"{address}:{port}", "address": address,
                     "port": port, "tls": tls, "protocol": detail if tls else None,
                     "error": None if tls else detail, "loopback": is_loopback(address)}
                )  # fmt: skip
    plain = [entry["name"] for entry in listeners if not entry["tls"]]
    module.exit_json(
        changed=False,
        listeners=listeners,
        plain=plain,
        plain_beyond_loopback=[e["name"] for e in listeners if not e["tls"] and not e["loopback"]],
        running=running,
        msg="; ".join(
            f"{e['name']} {e['protocol'] if e['tls'] else 'plain (' + e['error'] + ')'}"
            for e in listeners
        )
        or "no listeners",
    )


if __name__ == "__main__":
    main()
