"""Wait until the model server's /health answers 200 over verified TLS.

Usage: wait-health.py UNIT URL CA_FILE TIMEOUT_S

Exits 0 once /health says 200 (the model is loaded). Exits 1 at once when the
unit has stopped (failed, or inactive), printing its last journal lines (the
server's own reason, e.g. a manifest mismatch naming the file), or after
TIMEOUT_S seconds.
"""

import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request


def unit_state(unit: str) -> str:
    result = subprocess.run(  # noqa: S603 - fixed argv
        ["systemctl", "show", "-p", "ActiveState", "--value", unit],  # noqa: S607
        capture_output=True,
        text=True,
        check=False,
    )
    return result.stdout.strip()


def journal(unit: str) -> str:
    result = subprocess.run(  # noqa: S603 - fixed argv
        ["journalctl", "-u", unit, "-n", "15", "--no-pager", "-o", "cat"],  # noqa: S607
        capture_output=True,
        text=True,
        check=False,
    )
    return result.stdout


def main() -> int:
    unit, url, ca_file, timeout = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
    context = ssl.create_default_context(cafile=ca_file)
    deadline = time.monotonic() + timeout
    last = "no answer yet"
    # Give systemd a moment to run the process before "inactive" means "stopped".
    time.sleep(1)
    while time.monotonic() < deadline:
        state = unit_state(unit)
        if state in ("failed", "inactive"):
            print(f"{unit} is {state}; its last words:\n{journal(unit)}", file=sys.stderr)
            return 1
        try:
            with urllib.request.urlopen(url, context=context, timeout=5) as response:  # noqa: S310
                if response.status == 200:
                    print(f"{url}: 200")
                    return 0
        except urllib.error.HTTPError as exc:
            last = f"HTTP {exc.code}"
        except (OSError, ssl.SSLError) as exc:
            last = str(exc)
        time.sleep(1)
    print(f"{url} did not answer 200 within {timeout:.0f}s ({last})", file=sys.stderr)
    print(journal(unit), file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
