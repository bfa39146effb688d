#!/usr/bin/env bash
# psql into a PostgresDB on the sandbox: as its owner, to its database (or,
# with --superuser, as postgres to the database postgres), at its Service's
# address, with the password read from the Secret the operator generated.
# On the sandbox a Service's address is a loopback address of this machine;
# on a real cluster use `kubectl port-forward svc/NAME 5432` and psql to
# 127.0.0.1 instead.
#
# Usage: scripts/psql.sh [--superuser] NAME [psql arguments]
#   scripts/psql.sh orders
#   scripts/psql.sh --superuser orders -tAc 'SELECT pg_postmaster_start_time()'
set -euo pipefail
secret=credentials
database=
if [ "${1:-}" = --superuser ]; then
  secret=superuser
  database=postgres
  shift
fi
name=${1:?usage: scripts/psql.sh [--superuser] NAME [psql arguments]}
shift
field() {
  kubectl get secret "$name-$secret" -o jsonpath="{.data.$1}" | base64 -d
}
host=$(kubectl get service "$name" -o jsonpath='{.spec.clusterIP}')
user=$(field username)
database=${database:-$(field dbname)}
PGPASSWORD=$(field password) exec psql -h "$host" -U "$user" -d "$database" "$@"
