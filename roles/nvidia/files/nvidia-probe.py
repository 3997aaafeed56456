"""What the nvidia role needs to know about a host, read from sysfs only (no
lspci, no mokutil: neither is on a bare host). Prints one JSON object:

  devices      NVIDIA display or 3D controllers: PCI vendor 0x10de, class 0x03xx
  secure_boot  "on", "off", or "unknown" (no EFI variables: BIOS boot, a container)
  setup_mode   "on" when the firmware is in setup mode (keys not enrolled), else "off"/"unknown"

Runs on the managed host with its own python3 (ansible.builtin.script). Reads
only; changes nothing.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

NVIDIA = "0x10de"
# PCI base class 0x03: display controllers (0x0300 VGA, 0x0302 3D: the
# data-centre GPUs such as H100/H200 are 3D controllers). Audio functions of
# the same card (0x0403) and NVSwitch bridges (0x0680) are not GPUs.
DISPLAY_CLASS = "0x03"
EFI_GLOBAL = "8be4df61-93ca-11d2-aa0d-e398b5d77f42"


def read(path: Path) -> str:
    try:
        return path.read_text().strip().lower()
    except OSError:
        return ""


def devices(root: Path) -> list[dict[str, str]]:
    found = []
    for dev in sorted(root.glob("*")):
        vendor = read(dev / "vendor")
        pci_class = read(dev / "class")
        if vendor == NVIDIA and pci_class.startswith(DISPLAY_CLASS):
            found.append(
                {
                    "slot": dev.name,
                    "vendor": vendor,
                    "device": read(dev / "device"),
                    "class": pci_class,
                }
            )
    return found


def efi_flag(efivars: Path, name: str) -> str:
    """An EFI global boolean variable: 4 bytes of attributes, then the value."""
    try:
        data = (efivars / f"{name}-{EFI_GLOBAL}").read_bytes()
    except OSError:
        return "unknown"
    if len(data) < 5:
        return "unknown"
    return "on" if data[4] == 1 else "off"


def main() -> int:
    sysfs = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("/sys")
    efivars = sysfs / "firmware/efi/efivars"
    print(
        json.dumps(
            {
                "devices": devices(sysfs / "bus/pci/devices"),
                "secure_boot": efi_flag(efivars, "SecureBoot"),
                "setup_mode": efi_flag(efivars, "SetupMode"),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
