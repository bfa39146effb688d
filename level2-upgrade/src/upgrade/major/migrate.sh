set -eu
umask 077
STEP="starting"
log() { printf '%s %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
finish() {
  code=$?
  trap - EXIT
  if [ -e "$WORK_DIR/server-started" ]; then
    pg_ctl --pgdata="$PGDATA" --mode=fast --wait stop >/dev/null 2>&1 || true
  fi
  if [ "$code" -ne 0 ]; then
    [ -s "$WORK_DIR/message" ] || printf '%s failed (exit %s); see the log of this Job' "$STEP" "$code" > "$WORK_DIR/message"
    if [ -s "$WORK_DIR/server.log" ]; then log "server log:"; tail -n 20 "$WORK_DIR/server.log" >&2; fi
  fi
  if [ -s "$WORK_DIR/message" ]; then cat "$WORK_DIR/message" > /dev/termination-log 2>/dev/null || true; fi
  exit "$code"
}
trap finish EXIT
# Stopped (a deadline, a cancelled upgrade): end at the current command
# rather than run on through the grace period; the EXIT trap cleans up.
trap 'exit 143' TERM INT
fail() { printf '%s' "$*" > "$WORK_DIR/message"; log "FAILED: $*"; exit 1; }
# run CMD...: runs CMD; when it fails, the step fails with its last error lines.
run() {
  if "$@" 2> "$WORK_DIR/stderr"; then
    cat "$WORK_DIR/stderr" >&2
  else
    cat "$WORK_DIR/stderr" >&2
    fail "$STEP failed: $(grep -v '^[[:space:]]*$' "$WORK_DIR/stderr" | tail -n 3 | tr '\n' ' ')"
  fi
}

STEP="checking the new data volume"
log "$STEP"
case "$PGDATA" in "$DATA_MOUNT"/?*) ;; *) fail "PGDATA $PGDATA is not inside $DATA_MOUNT" ;; esac
if [ -e "$PGDATA" ] && [ ! -e "$DATA_MOUNT/.pgdb-migration-incomplete" ] && [ -n "$(ls -A "$PGDATA")" ]; then
  fail "PVC $DATA_CLAIM already holds a data directory from an earlier migration that completed and may have served clients; it is not overwritten. Delete that PVC to retry the upgrade"
fi
: > "$DATA_MOUNT/.pgdb-migration-incomplete"
rm -rf "$PGDATA"

# The fenced Service stops only the clients that use it: the old server
# itself refuses writes from here on, so none it acknowledges can miss the dump.
STEP="fencing writes to $FROM_VERSION (default_transaction_read_only)"
log "$STEP"
run psql -X -q -At -v ON_ERROR_STOP=1 -c "ALTER SYSTEM SET default_transaction_read_only = on" -c "SELECT pg_reload_conf()"
# A reload reaches the server's processes a moment later: wait until a new session is read-only.
tries=0
until [ "$(psql -X -At -c 'SHOW default_transaction_read_only' 2>/dev/null)" = "on" ]; do
  tries=$((tries + 1))
  [ "$tries" -lt 50 ] || fail "$STEP failed: new sessions are still read-write after 10s"
  sleep 0.2
done

STEP="stopping client connections to $FROM_VERSION"
log "$STEP"
run psql -X -q -At -v ON_ERROR_STOP=1 -c "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()"

STEP="dumping every database of $FROM_VERSION with pg_dumpall"
log "$STEP to $DUMP_FILE"
run pg_dumpall --quote-all-identifiers --file="$DUMP_FILE.partial"
mv "$DUMP_FILE.partial" "$DUMP_FILE"
log "the dump has $(wc -c < "$DUMP_FILE") bytes"

STEP="initialising the $TO_VERSION data directory"
log "$STEP"
printf '%s\n' "$PGPASSWORD" > "$WORK_DIR/pwfile"
run initdb --pgdata="$PGDATA" --username=postgres --pwfile="$WORK_DIR/pwfile" --auth-local=trust --auth-host=scram-sha-256 $POSTGRES_INITDB_ARGS
rm -f "$WORK_DIR/pwfile"
printf 'host all all all scram-sha-256\n' >> "$PGDATA/pg_hba.conf"

STEP="starting $TO_VERSION on the new volume"
log "$STEP (unix socket only)"
run pg_ctl --pgdata="$PGDATA" --wait --timeout=600 --log="$WORK_DIR/server.log" --options="-c listen_addresses='' -c unix_socket_directories='$WORK_DIR'" start
: > "$WORK_DIR/server-started"

STEP="restoring the dump into $TO_VERSION"
log "$STEP"
# The superuser exists in a new cluster: its CREATE ROLE is the one
# statement of the dump that must not run (its ALTER ROLE still does).
restore() {
  sed -e '/^CREATE ROLE postgres;$/d' -e '/^CREATE ROLE "postgres";$/d' "$DUMP_FILE" |
    psql -X -q -v ON_ERROR_STOP=1 --host="$WORK_DIR" --dbname=postgres --file=- > /dev/null
}
run restore

STEP="analysing the restored databases"
log "$STEP"
run vacuumdb --all --analyze-only --quiet --host="$WORK_DIR"

STEP="verifying every user table, sequence, materialized view and large object"
log "$STEP"
# Tables: row count and checksum. Sequences: position. Materialized views:
# that they exist (a restore refreshes them, so a stale one's rows differ by
# design, and may leave one unpopulated that depends on an unpopulated one).
# Large objects: count and checksum.
cat > "$WORK_DIR/checksums.sql" <<'SQL'
SELECT statement FROM (
  SELECT 1 AS part, n.nspname AS schema, c.relname AS name,
         CASE c.relkind
           WHEN 'r' THEN format('SELECT %L, %L, count(*), coalesce(sum((''x'' || left(md5(t::text), 16))::bit(64)::bigint::numeric), 0) FROM ONLY %I.%I AS t',
                                current_database(), n.nspname || '.' || c.relname, n.nspname, c.relname)
           WHEN 'S' THEN format('SELECT %L, %L, last_value, is_called FROM %I.%I',
                                current_database(), 'sequence ' || n.nspname || '.' || c.relname, n.nspname, c.relname)
           ELSE format('SELECT %L, %L',
                       current_database(), 'materialized view ' || n.nspname || '.' || c.relname)
         END AS statement
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
  WHERE c.relkind IN ('r', 'S', 'm')
    AND n.nspname <> 'information_schema' AND n.nspname NOT LIKE 'pg\_%'
    AND NOT EXISTS (SELECT 1 FROM pg_depend d
                    WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')
  UNION ALL
  SELECT 2, '', '', format('SELECT %L, %L, count(*), coalesce(sum((''x'' || left(md5(lo_get(oid)), 16))::bit(64)::bigint::numeric), 0) FROM pg_largeobject_metadata',
                           current_database(), 'large objects')
) AS checks
ORDER BY part, schema, name
\gexec
SQL
# checksums [--host=...]: "database|name" per database, then per database
# "database|schema.table|rows|checksum" per user table,
# "database|sequence schema.name|last_value|is_called" per sequence,
# "database|materialized view schema.name" per materialized view,
# and "database|large objects|count|checksum".
checksums() {
  psql -X -At -v ON_ERROR_STOP=1 "$@" --dbname=postgres -c "SELECT datname FROM pg_database WHERE datallowconn ORDER BY 1" > "$WORK_DIR/databases" || return 1
  while IFS= read -r db; do
    printf 'database|%s\n' "$db"
    psql -X -At -v ON_ERROR_STOP=1 "$@" --dbname="$db" --file="$WORK_DIR/checksums.sql" || return 1
  done < "$WORK_DIR/databases"
}
run checksums > "$WORK_DIR/old.txt"
run checksums --host="$WORK_DIR" > "$WORK_DIR/new.txt"
if ! cmp -s "$WORK_DIR/old.txt" "$WORK_DIR/new.txt"; then
  diff "$WORK_DIR/old.txt" "$WORK_DIR/new.txt" >&2 || true
  fail "verification failed: the restored $TO_VERSION differs from $FROM_VERSION (database|object|values, < $FROM_VERSION, > $TO_VERSION): $(diff "$WORK_DIR/old.txt" "$WORK_DIR/new.txt" | grep '^[<>]' | head -n 4 | tr '\n' ' ')"
fi
summary=$(awk -F'|' '
  $2 ~ /^materialized view / { m++; next }
  NF == 2 { d++; next }
  $2 ~ /^sequence / { s++; next }
  $2 == "large objects" { l += $3; next }
  { t++; r += $(NF - 1) }
  END { printf "%d databases, %d tables, %d rows, %d sequences, %d materialized views, %d large objects", d, t, r, s, m, l }' "$WORK_DIR/new.txt")

STEP="stopping $TO_VERSION"
log "$STEP"
run pg_ctl --pgdata="$PGDATA" --mode=fast --wait stop
rm -f "$WORK_DIR/server-started" "$DATA_MOUNT/.pgdb-migration-incomplete"
sync
printf 'verified %s: rows and checksums of every user table and large object, sequence positions and the materialized views match between %s and %s' "$summary" "$FROM_VERSION" "$TO_VERSION" > "$WORK_DIR/message"
log "$(cat "$WORK_DIR/message")"
