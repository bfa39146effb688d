#!/usr/bin/env bash
# Generates shared/src/parameters/pg<MAJOR>.tsv, the table of PostgreSQL's
# settings the operator checks spec.parameters against, from the real server
# binaries of each supported major (installed by scripts/install-postgres.sh).
#
# Sources, both PostgreSQL's own:
#   - `postgres --describe-config`: every setting a configuration file may
#     hold, with its context, type, minimum and maximum;
#   - pg_settings of a throwaway server of the same binaries: the unit and
#     the enum values (which --describe-config does not print), and the
#     developer settings --describe-config leaves out (GUC_NOT_IN_SAMPLE,
#     e.g. zero_damaged_pages) that a file may still set.
# The generator fails when the two disagree on a setting's type or bounds.
#
# Columns (tab-separated, one setting a line, sorted by name):
#   name  context  type  min  max  unit  enumvals(comma-separated)
# Internal settings (context "internal": server_version, block_size, ...)
# cannot be set and are left out.
#
# Usage: scripts/generate-parameter-tables.sh [--check] [MAJOR ...]  (default 14..18)
#   --check  writes nothing; exits 1 if a committed table differs from the
#            binaries' (a stale table), naming it. Majors without installed
#            binaries are reported and skipped.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
out_dir="$root/shared/src/parameters"
cache="${PGDB_POSTGRES_CACHE:-$HOME/.cache/pgdb-operator/postgres}"
check=0
if [ "${1:-}" = "--check" ]; then check=1; shift; fi
majors=("$@")
[ ${#majors[@]} -gt 0 ] || majors=(14 15 16 17 18)

work=$(mktemp -d /tmp/pgdb-params.XXXXXX)
trap 'rm -rf "$work"' EXIT
chmod 755 "$work"
# initdb and postgres refuse to run as root: run them as postgres then.
as_pg() {
  if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

stale=0
for major in "${majors[@]}"; do
  bin=""
  for dir in "/usr/lib/postgresql/$major/bin" "$cache/$major/bin"; do
    [ -x "$dir/postgres" ] && { bin="$dir"; break; }
  done
  if [ -z "$bin" ]; then
    echo "PostgreSQL $major: no binaries installed (scripts/install-postgres.sh $major); skipped" >&2
    continue
  fi
  # A tree under a private home is copied where the postgres user can run it.
  tree="$(dirname "$bin")"
  if ! as_pg test -x "$bin/postgres"; then
    cp -a "$tree" "$work/tree-$major"
    chmod -R a+rX "$work/tree-$major"
    tree="$work/tree-$major"; bin="$tree/bin"
  fi
  as_pg "$bin/postgres" --describe-config > "$work/describe-$major"
  data="$work/data-$major"; sock="$work/sock-$major"
  mkdir -p "$sock"; chmod 777 "$sock"; [ "$(id -u)" -ne 0 ] || chown postgres "$work"
  as_pg "$bin/initdb" -D "$data" -A trust -U postgres >/dev/null
  as_pg "$bin/pg_ctl" -D "$data" -w -l "$work/log-$major" \
    -o "-c listen_addresses='' -k $sock" start >/dev/null
  psql_bin="$bin/psql"; [ -x "$psql_bin" ] || psql_bin=psql
  as_pg "$psql_bin" -h "$sock" -U postgres -d postgres -XAtq -F $'\t' -c \
    "SELECT name, context, CASE vartype WHEN 'bool' THEN 'BOOLEAN' ELSE upper(vartype) END, coalesce(min_val, ''), coalesce(max_val, ''),
            coalesce(unit, ''), coalesce(array_to_string(enumvals, ','), '')
       FROM pg_settings WHERE context <> 'internal' ORDER BY name" > "$work/settings-$major"
  as_pg "$bin/pg_ctl" -D "$data" -w stop -m fast >/dev/null
  python3 - "$work/describe-$major" "$work/settings-$major" "$work/pg$major.tsv" "$major" <<'PY'
import sys
describe, settings, out, major = sys.argv[1:]
rows = {}
for line in open(settings):
    f = line.rstrip("\n").split("\t")
    rows[f[0]] = f
for line in open(describe):
    f = line.rstrip("\n").split("\t")
    name, context, _group, vartype, _reset, lo, hi = f[:7]
    if context == "internal":
        continue
    row = rows.get(name)
    if row is None:
        sys.exit(f"PostgreSQL {major}: {name} is in --describe-config but not in pg_settings")
    if row[2] != vartype:
        sys.exit(f"PostgreSQL {major}: {name}: --describe-config says {vartype}, pg_settings {row[2]}")
    if vartype in ("INTEGER", "REAL") and (float(lo), float(hi)) != (float(row[3]), float(row[4])):
        sys.exit(f"PostgreSQL {major}: {name}: bounds {lo}..{hi} against {row[3]}..{row[4]}")
with open(out, "w") as o:
    o.write(f"# PostgreSQL {major} settings: scripts/generate-parameter-tables.sh (do not edit)\n")
    o.write("# name\tcontext\ttype\tmin\tmax\tunit\tenumvals\n")
    for name in sorted(rows):
        o.write("\t".join(rows[name]) + "\n")
PY
  version=$(as_pg "$bin/postgres" --version)
  if [ $check -eq 1 ]; then
    if ! diff -q "$out_dir/pg$major.tsv" "$work/pg$major.tsv" >/dev/null 2>&1; then
      echo "stale: shared/src/parameters/pg$major.tsv differs from $version; run scripts/generate-parameter-tables.sh $major" >&2
      diff "$out_dir/pg$major.tsv" "$work/pg$major.tsv" | head -20 >&2 || true
      stale=1
    else
      echo "up to date: pg$major.tsv ($version)"
    fi
  else
    cp "$work/pg$major.tsv" "$out_dir/pg$major.tsv"
    echo "wrote shared/src/parameters/pg$major.tsv ($version, $(grep -vc '^#' "$out_dir/pg$major.tsv") settings)"
  fi
done
exit $stale
