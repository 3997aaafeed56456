"""Helpers of the molecule scenarios' testinfra tests (imported by each
scenario's tests/conftest.py)."""

from __future__ import annotations

import json
import os
import shlex
from functools import cache
from pathlib import Path
from typing import Any

import testinfra

SCENARIO = os.environ.get("MOLECULE_SCENARIO_NAME", "default")
PKI_DIR = Path(f"/var/lib/clinchat/pki/molecule-{SCENARIO}")
SECRETS_DIR = Path(f"/var/lib/clinchat/secrets/molecule-{SCENARIO}")


@cache
def lab_host(name: str) -> Any:
    """A testinfra host of the scenario's inventory, by inventory name."""
    inventory = os.environ["MOLECULE_INVENTORY_FILE"]
    return testinfra.get_host(f"ansible://{name}", ansible_inventory=inventory)


def secret(name: str) -> str:
    """A lab secret made by the password lookup (the file holds the value)."""
    return (SECRETS_DIR / name).read_text().split()[0]


_HTTP_GET = """
import json, sys, urllib.error, urllib.request
try:
    r = urllib.request.urlopen(sys.argv[1], timeout=10)
    status, body, headers = r.status, r.read().decode(), dict(r.headers)
except urllib.error.HTTPError as e:
    status, body, headers = e.code, e.read().decode(), dict(e.headers)
print(json.dumps({"status": status, "body": body, "headers": headers}))
"""


def http_get(host: Any, url: str) -> dict[str, Any]:
    """GET url from the host itself (python3 is all a minimal host has)."""
    out = host.check_output(f"python3 -c {shlex.quote(_HTTP_GET)} {shlex.quote(url)}")
    return json.loads(out)
