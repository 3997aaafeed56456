#!/usr/bin/env bash
# Debian packages the controller (this machine, or CI's) needs, on a fresh
# Debian 12 or 13 machine as root. Idempotent: apt installs only what is missing.
set -euo pipefail

packages=(
  # the Python environment (.venv)
  python3-venv python3-dev build-essential
  # the bundle build: debootstrap a clean Debian 13 root, index and sign an apt repository
  debootstrap gnupg apt-utils dpkg-dev
  # real services the test fixtures start privately on loopback
  postgresql
  # talking to lab hosts
  openssh-client curl rsync
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

# Debian's postgresql package starts a cluster where systemd runs; the tests
# start their own private servers and need none.
bash "$(dirname "$0")/lab/setup.sh"
