"""Preflight of the firewall role, run on the host (python3 is all it has).

argv[1]: JSON {"admin": [...], "sources": [...], "client": "<SSH client address or empty>"}.
Prints JSON: the entries that are not an IP address or prefix, and whether the
client Ansible connects from is inside firewall_admin_networks."""

import ipaddress
import json
import sys

given = json.loads(sys.argv[1])
invalid = []
networks = []
for entry in given["admin"] + given["sources"]:
    try:
        network = ipaddress.ip_network(str(entry), strict=False)
    except ValueError:
        invalid.append(str(entry))
        continue
    if entry in given["admin"]:
        networks.append(network)

client = given["client"]
allowed = True
if client:
    address = ipaddress.ip_address(client)
    allowed = any(address.version == n.version and address in n for n in networks)
print(json.dumps({"invalid": invalid, "client_allowed": allowed}))
