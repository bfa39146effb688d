#!/usr/bin/env bash
# psql into a PostgresDB on the sandbox: as its owner, to its database (or,
# with --superuser, as postgres to the database postgres), at its Service's
# address, with the password read from the Secret the operator generated.
# On the sandbox a Service's address is a loopback address of this machine;
# on a real cluster use `kubectl port-forward svc/NAME 5432` and psql to
# 127.0.0.1 instead.
#
# With --service SERVICE, it connects through that Service instead of the
# database's own (Level 5: `orders-ro`, the replicas; `orders-r`, any
# instance).
#
# Usage: scripts/psql.sh [--superuser] [--service SERVICE] NAME [psql arguments]
#   scripts/psql.sh orders
#   scripts/psql.sh --superuser orders -tAc 'SELECT pg_postmaster_start_time()'
#   scripts/psql.sh --service orders-ro orders -tAc 'SELECT pg_is_in_recovery()'
set -euo pipefail
usage='usage: scripts/psql.sh [--superuser] [--service SERVICE] NAME [psql arguments]'
secret=credentials
database=
service=
while :; do
  case "${1:-}" in
    --superuser) secret=superuser; database=postgres; shift ;;
    --service) service=${2:?$usage}; shift 2 ;;
    *) break ;;
  esac
done
name=${1:?$usage}
shift
field() {
  kubectl get secret "$name-$secret" -o jsonpath="{.data.$1}" | base64 -d
}
host=$(kubectl get service "${service:-$name}" -o jsonpath='{.spec.clusterIP}')
user=$(field username)
database=${database:-$(field dbname)}
PGPASSWORD=$(field password) exec psql -h "$host" -U "$user" -d "$database" "$@"
