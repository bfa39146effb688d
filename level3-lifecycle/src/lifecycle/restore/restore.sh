# Restores a backup folder into a new data directory and verifies it
# against the backup's manifest. Run by the restore init container of a
# PostgresDB with spec.restore and by the scratch Job of spec.backup.verify,
# in the postgres image of the target major.
#
# Environment:
#   BACKUP_DIR         the backup's folder: manifest.json, globals.sql and
#                      <database>.dump per database (absolute path)
#   BACKUP_NAME        the PostgresDBBackup's name, for messages
#   PGDATA             the data directory to create (must not exist, or be empty)
#   WORK_DIR           a private scratch directory (socket, logs, lists)
#   POSTGRES_PASSWORD  the new superuser's (postgres) password
#   POSTGRES_INITDB_ARGS, POSTGRES_HOST_AUTH_METHOD  as the image's entrypoint
#   APP_OWNER, APP_PASSWORD, APP_DATABASE  optional: the owner role gets this
#                      password (created when the backup has no such role),
#                      and the database is created when the backup has none
#   MARKER_DIR         optional: where the markers live (the data volume's
#                      root): a restore that completed is not run again, a
#                      failed one is reported again, an interrupted one is
#                      started over, and a data directory no restore made is
#                      never touched
#   TERMINATION_LOG    where the result goes (default /dev/termination-log)
#   BACKUP_S3_URL, S3_BUCKET, S3_PATH, RCLONE_CONFIG_DEST_*  optional: fetch
#                      the folder from S3 first (see fetch_from_s3)
#
# Result: one line of JSON, to TERMINATION_LOG and stdout:
#   {"passed":true,"backup":"...","databases":2,"tables":5,"rows":42,"message":"..."}
#   {"passed":false,"backup":"...","tables":5,"message":"...","mismatch":{"database":"app","schema":"public","table":"t"}}
# The exit code is 0 exactly when passed is true.
set -eu
umask 077
: "${TERMINATION_LOG:=/dev/termination-log}"
: "${BACKUP_NAME:=backup}"
: "${MARKER_DIR:=}"
: "${POSTGRES_INITDB_ARGS:=}"
: "${APP_OWNER:=}"
: "${APP_DATABASE:=}"
DONE_MARKER="$MARKER_DIR/.pgdb-restored"
FAILED_MARKER="$MARKER_DIR/.pgdb-restore-failed"
INCOMPLETE_MARKER="$MARKER_DIR/.pgdb-restore-incomplete"
STEP="starting"
DATABASES=0
TABLES=0
ROWS=0
MISMATCH=""

log() { printf '%s %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
# json TEXT: TEXT as a JSON string (newlines and tabs become spaces).
json() { printf '"%s"' "$(printf '%s' "$1" | tr '\n\t\r' '   ' | sed -e 's/\\/\\\\/g' -e 's/"/\\"/g')"; }
# result PASSED MESSAGE: the result line.
result() {
  printf '{"passed":%s,"backup":%s,"databases":%s,"tables":%s,"rows":%s,"message":%s%s}\n' \
    "$1" "$(json "$BACKUP_NAME")" "$DATABASES" "$TABLES" "$ROWS" "$(json "$2")" "$MISMATCH"
}
report() { cat "$1" > "$TERMINATION_LOG" 2>/dev/null || true; cat "$1"; }
finish() {
  code=$?
  trap - EXIT
  if [ -e "$WORK_DIR/server-started" ]; then
    pg_ctl --pgdata="$PGDATA" --mode=fast --wait stop >/dev/null 2>&1 || true
    rm -f "$WORK_DIR/server-started"
  fi
  if [ "$code" -ne 0 ]; then
    [ -s "$WORK_DIR/result" ] || result false "$STEP failed (exit $code); see the log of this container" > "$WORK_DIR/result"
    if [ -s "$WORK_DIR/server.log" ]; then log "server log:"; tail -n 20 "$WORK_DIR/server.log" >&2; fi
    if [ -n "$MARKER_DIR" ] && [ -e "$INCOMPLETE_MARKER" ] && [ ! -e "$WORK_DIR/refused" ]; then
      cp "$WORK_DIR/result" "$FAILED_MARKER" 2>/dev/null || true
    fi
  fi
  if [ -s "$WORK_DIR/result" ]; then report "$WORK_DIR/result"; fi
  exit "$code"
}
mkdir -p "$WORK_DIR"
rm -f "$WORK_DIR/result" "$WORK_DIR/refused"
trap finish EXIT
trap 'exit 143' TERM INT
fail() { result false "$*" > "$WORK_DIR/result"; log "FAILED: $*"; exit 1; }
# run CMD...: runs CMD; when it fails, the step fails with its last error lines.
run() {
  if "$@" 2> "$WORK_DIR/stderr"; then
    cat "$WORK_DIR/stderr" >&2
  else
    cat "$WORK_DIR/stderr" >&2
    fail "$STEP failed: $(grep -v '^[[:space:]]*$' "$WORK_DIR/stderr" | tail -n 3 | tr '\n' ' ')"
  fi
}

STEP="checking the data directory"
if [ -n "$MARKER_DIR" ]; then
  if [ -s "$DONE_MARKER" ]; then
    log "the restore of this data directory completed earlier: $(cat "$DONE_MARKER")"
    report "$DONE_MARKER"
    trap - EXIT
    exit 0
  fi
  if [ -s "$FAILED_MARKER" ]; then
    cp "$FAILED_MARKER" "$WORK_DIR/result"
    log "the restore of this data directory failed earlier; it is not retried: $(cat "$FAILED_MARKER")"
    exit 1
  fi
  if [ -e "$PGDATA" ] && [ -n "$(ls -A "$PGDATA")" ] && [ ! -e "$INCOMPLETE_MARKER" ]; then
    : > "$WORK_DIR/refused"
    fail "the data directory $PGDATA already holds data that no restore wrote; a restore never overwrites it"
  fi
  : > "$INCOMPLETE_MARKER"
fi
if [ -e "$PGDATA" ] && [ -n "$(ls -A "$PGDATA")" ]; then
  log "removing an interrupted restore's data directory"
  rm -rf "$PGDATA"
fi

# The seam for backups in S3: the folder is downloaded into the work
# directory first with rclone (the backup Job's client, configured the same
# way: the remote "dest" from RCLONE_CONFIG_DEST_* variables), then restored
# like one on a volume.
fetch_from_s3() {
  STEP="downloading $BACKUP_S3_URL"
  log "$STEP"
  RCLONE=rclone
  if [ -n "${TOOLS_DIR:-}" ] && [ -x "$TOOLS_DIR/rclone" ]; then RCLONE="$TOOLS_DIR/rclone"; fi
  command -v "$RCLONE" >/dev/null 2>&1 || fail "$STEP failed: no S3 client (rclone) in this image"
  run "$RCLONE" copy "dest:$S3_BUCKET/$S3_PATH" "$WORK_DIR/backup"
  BACKUP_DIR="$WORK_DIR/backup"
}
if [ -n "${BACKUP_S3_URL:-}" ]; then fetch_from_s3; fi

STEP="reading the backup"
log "$STEP in $BACKUP_DIR"
case "$BACKUP_DIR" in /*) ;; *) fail "BACKUP_DIR $BACKUP_DIR is not an absolute path" ;; esac
for file in manifest.json globals.sql; do
  [ -s "$BACKUP_DIR/$file" ] || fail "backup $BACKUP_NAME has no $file in its folder; it is incomplete or was deleted"
done

# As the image's entrypoint initialises a new data directory, so the server
# container later finds a directory like its own.
STEP="initialising the data directory"
log "$STEP"
[ -n "${POSTGRES_PASSWORD:-}" ] || fail "$STEP failed: POSTGRES_PASSWORD is not set"
printf '%s\n' "$POSTGRES_PASSWORD" > "$WORK_DIR/pwfile"
# shellcheck disable=SC2086 # the image splits POSTGRES_INITDB_ARGS too
run initdb --pgdata="$PGDATA" --username=postgres --pwfile="$WORK_DIR/pwfile" $POSTGRES_INITDB_ARGS
rm -f "$WORK_DIR/pwfile"
printf '\nhost all all all %s\n' "${POSTGRES_HOST_AUTH_METHOD:-scram-sha-256}" >> "$PGDATA/pg_hba.conf"

export PGPORT=5432
STEP="starting a temporary server"
log "$STEP (unix socket only)"
run pg_ctl --pgdata="$PGDATA" --wait --timeout=600 --log="$WORK_DIR/server.log" --options="-c listen_addresses='' -c unix_socket_directories='$WORK_DIR'" start
: > "$WORK_DIR/server-started"
export PGHOST="$WORK_DIR" PGUSER=postgres PGPORT=5432
unset PGPASSWORD PGDATABASE PGSERVICE 2>/dev/null || true
PSQL="psql -X -q -At -v ON_ERROR_STOP=1"
TAB=$(printf '\t')

STEP="reading the manifest"
log "$STEP"
# The server parses the manifest (the image has no JSON tool).
$PSQL -d postgres -v manifest="$BACKUP_DIR/manifest.json" -F "$TAB" > "$WORK_DIR/files" 2> "$WORK_DIR/stderr" <<'SQL' || fail "$STEP failed: $(tail -n 2 "$WORK_DIR/stderr" | tr '\n' ' ')"
SELECT f->>'name', f->>'sha256' FROM jsonb_array_elements(pg_read_file(:'manifest')::jsonb -> 'files') AS f
SQL
$PSQL -d postgres -v manifest="$BACKUP_DIR/manifest.json" -F "$TAB" > "$WORK_DIR/databases" 2> "$WORK_DIR/stderr" <<'SQL' || fail "$STEP failed: $(tail -n 2 "$WORK_DIR/stderr" | tr '\n' ' ')"
SELECT d->>'name', d->>'file' FROM jsonb_array_elements(pg_read_file(:'manifest')::jsonb -> 'databases') WITH ORDINALITY AS x(d, i) ORDER BY i
SQL
$PSQL -d postgres -v manifest="$BACKUP_DIR/manifest.json" -F "$TAB" > "$WORK_DIR/expected" 2> "$WORK_DIR/stderr" <<'SQL' || fail "$STEP failed: $(tail -n 2 "$WORK_DIR/stderr" | tr '\n' ' ')"
SELECT d->>'name', t->>'schema', t->>'name', t->>'rows', coalesce(t->>'digest', '')
FROM jsonb_array_elements(pg_read_file(:'manifest')::jsonb -> 'databases') WITH ORDINALITY AS x(d, i),
     jsonb_array_elements(d -> 'tables') WITH ORDINALITY AS y(t, j)
ORDER BY i, j
SQL
DATABASES=$(wc -l < "$WORK_DIR/databases" | tr -d ' ')

STEP="checking the backup's files against their SHA-256"
log "$STEP"
while IFS="$TAB" read -r name sum; do
  [ -f "$BACKUP_DIR/$name" ] || fail "backup $BACKUP_NAME is missing its file $name"
  actual=$(sha256sum "$BACKUP_DIR/$name" | cut -d ' ' -f 1)
  [ "$actual" = "$sum" ] || fail "backup $BACKUP_NAME is damaged: the SHA-256 of $name is $actual, the manifest recorded $sum"
done < "$WORK_DIR/files"

STEP="restoring roles and settings (globals.sql)"
log "$STEP"
# Roles the new server has already (its superuser) are not created again;
# their ALTER ROLE still runs, and the credentials are reset below. Plain
# SQL, as the dump may restrict psql's backslash commands (\restrict).
awk '
  /^CREATE ROLE .*;$/ && index($0, "$pgdb_role$") == 0 {
    print "DO $pgdb_role$ BEGIN " $0 " EXCEPTION WHEN duplicate_object THEN NULL; END $pgdb_role$;"
    next
  }
  { print }' "$BACKUP_DIR/globals.sql" > "$WORK_DIR/globals.sql"
run $PSQL -d postgres -f "$WORK_DIR/globals.sql"

STEP="keeping this database's own credentials"
log "$STEP"
run $PSQL -d postgres -v pw="$POSTGRES_PASSWORD" <<'SQL'
ALTER ROLE postgres PASSWORD :'pw';
SQL
if [ -n "$APP_OWNER" ]; then
  run $PSQL -d postgres -v owner="$APP_OWNER" -v pw="${APP_PASSWORD:-}" <<'SQL'
SELECT EXISTS (SELECT FROM pg_roles WHERE rolname = :'owner') AS owner_exists \gset
\if :owner_exists
ALTER ROLE :"owner" LOGIN PASSWORD :'pw';
\else
CREATE ROLE :"owner" LOGIN PASSWORD :'pw';
\endif
SQL
fi

while IFS="$TAB" read -r db file; do
  STEP="restoring database $db"
  log "$STEP from $file"
  [ -s "$BACKUP_DIR/$file" ] || fail "backup $BACKUP_NAME is missing $file, the dump of database $db"
  exists=$($PSQL -d postgres -v db="$db" 2>&1 <<'SQL'
SELECT count(*) FROM pg_database WHERE datname = :'db'
SQL
  ) || fail "$STEP failed: $exists"
  if [ "$exists" = "1" ]; then
    run pg_restore --exit-on-error --dbname="$db" "$BACKUP_DIR/$file"
  else
    run pg_restore --exit-on-error --create --dbname=postgres "$BACKUP_DIR/$file"
  fi
done < "$WORK_DIR/databases"

if [ -n "$APP_DATABASE" ]; then
  STEP="creating database $APP_DATABASE"
  run $PSQL -d postgres -v db="$APP_DATABASE" -v owner="${APP_OWNER:-postgres}" <<'SQL'
SELECT NOT EXISTS (SELECT FROM pg_database WHERE datname = :'db') AS create_db \gset
\if :create_db
CREATE DATABASE :"db" OWNER :"owner";
\endif
SQL
fi

STEP="analysing the restored databases"
log "$STEP"
run vacuumdb --all --analyze-only --quiet

STEP="verifying every table against the manifest"
log "$STEP"
# The same expressions as table_facts.sql, for the tables the manifest
# lists: the row count always, the digest where the manifest has one.
: > "$WORK_DIR/found"
while IFS="$TAB" read -r db file; do
  $PSQL -d "$db" -v manifest="$BACKUP_DIR/manifest.json" -F "$TAB" > "$WORK_DIR/facts" 2> "$WORK_DIR/stderr" <<'SQL' || fail "verifying database $db failed: $(grep -v '^[[:space:]]*$' "$WORK_DIR/stderr" | tail -n 3 | tr '\n' ' ')"
SELECT CASE WHEN to_regclass(format('%I.%I', t->>'schema', t->>'name')) IS NULL THEN
         format('SELECT %L, %L, -1, %L', t->>'schema', t->>'name', 'missing')
       WHEN coalesce(t->>'digest', '') <> '' THEN
         format('SELECT %L, %L, count(*), md5(coalesce(string_agg(md5(t::text), '''' ORDER BY md5(t::text)), '''')) FROM %I.%I AS t',
                t->>'schema', t->>'name', t->>'schema', t->>'name')
       ELSE
         format('SELECT %L, %L, count(*), '''' FROM %I.%I',
                t->>'schema', t->>'name', t->>'schema', t->>'name')
       END
FROM jsonb_array_elements(pg_read_file(:'manifest')::jsonb -> 'databases') AS d,
     jsonb_array_elements(d -> 'tables') AS t
WHERE d->>'name' = current_database()
\gexec
SQL
  sed "s/^/$(printf '%s' "$db" | sed 's/[\/&]/\\&/g')$TAB/" "$WORK_DIR/facts" >> "$WORK_DIR/found"
done < "$WORK_DIR/databases"

# compare: the first table of the manifest (in its order) whose restored
# facts differ, as "database<TAB>schema<TAB>table<TAB>sentence"; and the
# tables and rows compared.
awk -F '\t' '
  FNR == NR { found[$1 FS $2 FS $3] = $4 FS $5; next }
  {
    tables++; rows += $4
    if (bad != "") next
    key = $1 FS $2 FS $3
    where = "table " $2 "." $3 " of database " $1
    if (!(key in found)) { bad = $1 FS $2 FS $3 FS where " was not verified"; next }
    split(found[key], got, FS)
    if (got[2] == "missing") bad = $1 FS $2 FS $3 FS where " is missing from the restore"
    else if (got[1] != $4) bad = $1 FS $2 FS $3 FS where " has " got[1] " rows restored, the backup recorded " $4
    else if ($5 != "" && got[2] != $5) bad = $1 FS $2 FS $3 FS where " has " got[1] " rows as recorded but different contents (digest " got[2] ", the backup recorded " $5 ")"
  }
  END { printf "%d\t%d\n", tables, rows; if (bad != "") print bad }
' "$WORK_DIR/found" "$WORK_DIR/expected" > "$WORK_DIR/comparison"
TABLES=$(head -n 1 "$WORK_DIR/comparison" | cut -f 1)
ROWS=$(head -n 1 "$WORK_DIR/comparison" | cut -f 2)
bad=$(sed -n 2p "$WORK_DIR/comparison")
if [ -n "$bad" ]; then
  MISMATCH=$(printf '%s\n' "$bad" | {
    IFS="$TAB" read -r mdb mschema mtable _
    printf ',"mismatch":{"database":%s,"schema":%s,"table":%s}' "$(json "$mdb")" "$(json "$mschema")" "$(json "$mtable")"
  })
  fail "verification failed: $(printf '%s\n' "$bad" | cut -f 4-)"
fi

STEP="stopping the temporary server"
log "$STEP"
run pg_ctl --pgdata="$PGDATA" --mode=fast --wait stop
rm -f "$WORK_DIR/server-started"
result true "restored and verified backup $BACKUP_NAME: $DATABASES databases, $TABLES tables, $ROWS rows; every row count and digest matches the manifest" > "$WORK_DIR/result"
if [ -n "$MARKER_DIR" ]; then
  cp "$WORK_DIR/result" "$DONE_MARKER"
  rm -f "$INCOMPLETE_MARKER"
fi
sync
log "$(cat "$WORK_DIR/result")"
