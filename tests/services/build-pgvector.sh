#!/usr/bin/env bash
# pgvector for the test fixtures' PostgreSQL (tests/services/postgres.py).
#
# Debian 12 does not package pgvector, so this builds Debian 13's (trixie)
# source package against the installed server headers and installs it. The
# source is fetched with apt from deb.debian.org: apt checks trixie's InRelease
# signature against debian-archive-keyring, the Sources index's hash of the
# .dsc, and the .dsc's hashes of the tarballs (dpkg-source checks them again).
#
# The built files are cached under ${CLINCHAT_CACHE:-/var/cache/clinchat}/pgvector;
# once built, a run only checks (and if needed restores) the installed files
# and needs no network. Idempotent; run as root.
#
#   PG_CONFIG=/usr/bin/pg_config   which PostgreSQL to build for
#   PGVECTOR_VERSION=0.8.0-1       pin a Debian version (default: trixie's current one)
set -euo pipefail

pg_config="${PG_CONFIG:-/usr/bin/pg_config}"
cache="${CLINCHAT_CACHE:-/var/cache/clinchat}/pgvector"
keyring=/usr/share/keyrings/debian-archive-keyring.gpg
mirror=http://deb.debian.org/debian

log() { echo "build-pgvector: $*" >&2; }

if [[ ! -x $pg_config ]]; then
  log "$pg_config missing: install postgresql-server-dev-15 (tests/setup-controller.sh)"
  exit 1
fi
pg_major="$("$pg_config" --version | sed -E 's/^PostgreSQL ([0-9]+).*/\1/')"
pkglibdir="$("$pg_config" --pkglibdir)"
sharedir="$("$pg_config" --sharedir)"
built="$cache/pg$pg_major"      # stage/ (a DESTDIR tree) and version
stage="$built/stage"

# Fast path: built before; restore whatever is missing or different, touch nothing else.
installed() {
  local file changed=0
  while IFS= read -r -d '' file; do
    local target="/${file#"$stage"/}"
    if ! cmp -s "$file" "$target"; then
      install -D -m "$(stat -c %a "$file")" "$file" "$target"
      changed=1
    fi
  done < <(find "$stage" -type f -print0)
  ((changed)) && log "installed pgvector $(cat "$built/version") for PostgreSQL $pg_major" \
    || log "pgvector $(cat "$built/version") for PostgreSQL $pg_major is up to date"
}
if [[ -f $built/version && -f $stage$pkglibdir/vector.so && -f $stage$sharedir/extension/vector.control ]]; then
  installed
  exit 0
fi

work="$(mktemp -d /tmp/build-pgvector.XXXXXX)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/etc/sources.list.d" "$work/etc/preferences.d" "$work/lists/partial" \
  "$work/cache/archives/partial" "$work/src"

# A private apt: only trixie's signed source index, nothing of the host's apt state touched.
cat >"$work/etc/sources.list" <<SOURCES
deb-src [signed-by=$keyring] $mirror trixie main
SOURCES
apt_opts=(
  -o "Dir::Etc::SourceList=$work/etc/sources.list"
  -o "Dir::Etc::SourceParts=$work/etc/sources.list.d"
  -o "Dir::Etc::PreferencesParts=$work/etc/preferences.d"
  -o "Dir::State::Lists=$work/lists"
  -o "Dir::Cache=$work/cache"
  -o "Acquire::Languages=none"
  -o "APT::Sandbox::User=root"
  -o "Acquire::AllowInsecureRepositories=false"
  -o "APT::Get::AllowUnauthenticated=false"
)
log "fetching trixie's signed source index from $mirror"
apt-get "${apt_opts[@]}" -qq update
spec=pgvector
[[ -n ${PGVECTOR_VERSION:-} ]] && spec="pgvector=$PGVECTOR_VERSION"
(cd "$work/src" && apt-get "${apt_opts[@]}" -qq source "$spec") >/dev/null
srcdir="$(find "$work/src" -mindepth 1 -maxdepth 1 -type d -name 'pgvector-*' | head -n1)"
version="$(dpkg-parsechangelog -l "$srcdir/debian/changelog" -S Version)"
log "building pgvector $version for PostgreSQL $pg_major"

# OPTFLAGS= : no -march=native, as Debian builds it, so the cached build runs on any x86-64.
make -C "$srcdir" -s -j"$(nproc)" PG_CONFIG="$pg_config" OPTFLAGS= >"$work/build.log" 2>&1 \
  || { tail -n 40 "$work/build.log" >&2; exit 1; }
rm -rf "$built.new"
mkdir -p "$built.new"
make -C "$srcdir" -s PG_CONFIG="$pg_config" OPTFLAGS= DESTDIR="$built.new/stage" install \
  >>"$work/build.log" 2>&1 || { tail -n 40 "$work/build.log" >&2; exit 1; }
echo "$version" >"$built.new/version"
rm -rf "$built"
mv "$built.new" "$built"
installed
