#!/usr/bin/env bash
# Debian packages the lab tool (tests/lab/clinchat-lab) needs on the controller,
# a fresh Debian 12 or 13 machine, as root. Idempotent: installs only what is
# missing. Called by tests/setup-controller.sh (make setup).
set -euo pipefail

packages=(
  # nspawn hosts: systemd-nspawn, and debootstrap for the cached Debian 13 root
  # (the keyring holds trixie's archive keys)
  systemd-container debootstrap debian-archive-keyring
  # qemu hosts under TCG; its hard dependencies bring seabios and ipxe-qemu
  # (the virtio NIC's option ROM); qemu-img for the second disk
  qemu-system-x86 qemu-utils
  # mkfs.ext4 -d builds a VM disk from a directory without a loop mount
  e2fsprogs
  # the bridge, tap devices; SSH to the hosts and their keys
  iproute2 openssh-client
)

missing=()
for package in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" \
    || missing+=("$package")
done
if ((${#missing[@]})); then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# qemu's tap devices need the tun driver.
if [[ ! -c /dev/net/tun ]]; then
  modprobe tun || echo "setup.sh: warning: no /dev/net/tun: qemu lab hosts will not start" >&2
fi
