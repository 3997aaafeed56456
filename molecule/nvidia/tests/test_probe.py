"""The role's device and Secure Boot probe (roles/nvidia/files/nvidia-probe.py)
on sysfs trees made here: an H200 (3D controller), an H100 and a VGA GPU are
found; the same cards' audio functions, an NVSwitch bridge and another vendor's
GPU are not; the SecureBoot EFI variable's value byte decides on/off."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

PROBE = Path(__file__).resolve().parents[3] / "roles/nvidia/files/nvidia-probe.py"
EFI_GLOBAL = "8be4df61-93ca-11d2-aa0d-e398b5d77f42"


def pci(sysfs: Path, slot: str, vendor: str, device: str, pci_class: str) -> None:
    dev = sysfs / "bus/pci/devices" / slot
    dev.mkdir(parents=True)
    (dev / "vendor").write_text(vendor + "\n")
    (dev / "device").write_text(device + "\n")
    (dev / "class").write_text(pci_class + "\n")


def probe(sysfs: Path) -> dict:
    out = subprocess.run(
        [sys.executable, PROBE, sysfs], capture_output=True, text=True, check=True
    ).stdout
    return json.loads(out)


def test_gpus_found_and_other_functions_not(tmp_path: Path) -> None:
    pci(tmp_path, "0000:17:00.0", "0x10de", "0x2335", "0x030200")  # H200 SXM: 3D controller
    pci(tmp_path, "0000:3a:00.0", "0x10de", "0x2330", "0x030200")  # H100 SXM
    pci(tmp_path, "0000:65:00.0", "0x10DE", "0x1e30", "0x030000")  # Quadro: VGA, upper-case hex
    pci(tmp_path, "0000:65:00.1", "0x10de", "0x10f7", "0x040300")  # its HDMI audio
    pci(tmp_path, "0000:05:00.0", "0x10de", "0x22a3", "0x068000")  # NVSwitch: a bridge
    pci(tmp_path, "0000:00:02.0", "0x8086", "0x4680", "0x030000")  # Intel VGA
    found = probe(tmp_path)["devices"]
    assert [(d["slot"], d["device"]) for d in found] == [
        ("0000:17:00.0", "0x2335"),
        ("0000:3a:00.0", "0x2330"),
        ("0000:65:00.0", "0x1e30"),
    ]


def test_no_device_and_no_efi(tmp_path: Path) -> None:
    (tmp_path / "bus/pci/devices").mkdir(parents=True)
    assert probe(tmp_path) == {"devices": [], "secure_boot": "unknown", "setup_mode": "unknown"}


def test_secure_boot_read_from_the_efi_variable(tmp_path: Path) -> None:
    efivars = tmp_path / "firmware/efi/efivars"
    efivars.mkdir(parents=True)
    attributes = b"\x06\x00\x00\x00"
    (efivars / f"SecureBoot-{EFI_GLOBAL}").write_bytes(attributes + b"\x01")
    (efivars / f"SetupMode-{EFI_GLOBAL}").write_bytes(attributes + b"\x00")
    assert probe(tmp_path)["secure_boot"] == "on"
    assert probe(tmp_path)["setup_mode"] == "off"
    (efivars / f"SecureBoot-{EFI_GLOBAL}").write_bytes(attributes + b"\x00")
    assert probe(tmp_path)["secure_boot"] == "off"
