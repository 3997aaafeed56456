#!/usr/bin/env bash
# Debian packages the controller (this machine, or CI's) needs, on a fresh
# Debian 12 or 13 machine as root. Idempotent: apt installs only what is missing.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"

packages=(
  # the Python environment (.venv)
  python3-venv python3-dev build-essential
  # the bundle build: debootstrap a clean Debian 13 root, index and sign an apt repository
  debootstrap gnupg apt-utils dpkg-dev
  # real services the test fixtures start privately on loopback (tests/services/)
  postgresql redis-server slapd ldap-utils
  # pgvector is built from Debian 13's source package (tests/services/build-pgvector.sh);
  # the keyring verifies trixie's signed Release
  postgresql-server-dev-all debian-archive-keyring
  # the UI tests drive a headless Chromium
  chromium chromium-driver
  # the end-to-end browser trusts the lab CA through an NSS database of its own
  libnss3-tools
  # talking to lab hosts
  openssh-client curl rsync
  # the lab's age identity for OpenBao's encrypted snapshots (lookup age_recipient)
  age
  # promtool (check and unit-test the alert rules: tests/monitoring); the package's
  # own Prometheus server is stopped below
  prometheus
)

missing=()
for package in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" \
    || missing+=("$package")
done
if ((${#missing[@]})); then
  # slapd: no system directory (no suffix, no admin password to ask for); the
  # tests generate their own configuration in a temporary directory.
  echo "slapd slapd/no_configuration boolean true" | debconf-set-selections
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# The packages start system-wide servers where an init system runs (systemd on
# a normal host; none in a container). The tests start their own private
# servers on loopback and need none of these: stop them and keep them off.
for service in postgresql redis-server slapd prometheus; do
  if [[ -d /run/systemd/system ]]; then
    if systemctl list-unit-files "$service.service" >/dev/null 2>&1; then
      systemctl disable --now --quiet "$service.service" || true
      # slapd without a configuration fails its first start: no failed unit left behind
      systemctl reset-failed "$service.service" 2>/dev/null || true
    fi
  elif [[ -x /etc/init.d/$service ]]; then
    service "$service" stop >/dev/null 2>&1 || true
    update-rc.d "$service" disable >/dev/null 2>&1 || true
  fi
done

# pgvector for the fixtures' PostgreSQL (Debian 12 does not package it);
# cached under $CLINCHAT_CACHE, a no-op once built.
bash "$here/services/build-pgvector.sh"

# axe-core for the UI tests' accessibility checks (tests/app/test_ui.py injects
# axe.min.js into each page): one pinned release from npm, its tarball checked against
# the SHA-256 below, unpacked under $CLINCHAT_CACHE/axe-core/<version>; a no-op once there.
axe_version=4.10.3
axe_sha256=0f2b4d7dcdf7d1219df8d1959ad68e565f51d14c3f0d88bb71cd59abeb956292
axe_dir="${CLINCHAT_CACHE:-/var/cache/clinchat}/axe-core/$axe_version"
if [[ ! -s $axe_dir/axe.min.js ]]; then
  command -v npm >/dev/null || {
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends npm
  }
  axe_tmp="$(mktemp -d)"
  trap 'rm -rf "$axe_tmp"' EXIT
  npm pack --silent --pack-destination "$axe_tmp" "axe-core@$axe_version" >/dev/null
  echo "$axe_sha256  $axe_tmp/axe-core-$axe_version.tgz" | sha256sum --check --quiet
  tar -xzf "$axe_tmp/axe-core-$axe_version.tgz" -C "$axe_tmp" package/axe.min.js package/LICENSE
  mkdir -p "$axe_dir"
  install -m 0644 "$axe_tmp/package/axe.min.js" "$axe_tmp/package/LICENSE" "$axe_dir/"
  rm -rf "$axe_tmp"
  trap - EXIT
fi

bash "$here/lab/setup.sh"
