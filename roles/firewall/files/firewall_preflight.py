"""Preflight of the firewall role, run on the host (python3 is all it has).

argv[1]: JSON {"admin": [...], "sources": [...], "destinations": [...],
"client": "<address Ansible connects from, or empty>"}.

Prints JSON:
- invalid: admin networks and sources that are not an IP address or prefix
  (incoming rules come from the inventory's ansible_host, never from DNS);
- resolved: each destination (an address, a prefix or a name) with its
  addresses; a name is resolved here, now, so the ruleset never needs DNS at boot;
- unresolved: destination names the host cannot resolve;
- client_allowed: whether the client is inside the admin networks."""

import ipaddress
import json
import socket
import sys

given = json.loads(sys.argv[1])


def network(entry):
    try:
        return ipaddress.ip_network(str(entry), strict=False)
    except ValueError:
        return None


invalid = [str(e) for e in given["admin"] + given["sources"] if network(e) is None]
admin = [n for n in map(network, given["admin"]) if n is not None]

resolved, unresolved = {}, []
for entry in given["destinations"]:
    if network(entry) is not None:
        resolved[entry] = [str(entry)]
        continue
    try:
        infos = socket.getaddrinfo(entry, None, proto=socket.IPPROTO_TCP)
    except socket.gaierror:
        unresolved.append(entry)
        continue
    resolved[entry] = sorted({info[4][0] for info in infos})

client = given["client"]
allowed = True
if client:
    address = ipaddress.ip_address(client)
    allowed = any(address.version == n.version and address in n for n in admin)
print(
    json.dumps(
        {
            "invalid": invalid,
            "resolved": resolved,
            "unresolved": unresolved,
            "client_allowed": allowed,
        }
    )
)
