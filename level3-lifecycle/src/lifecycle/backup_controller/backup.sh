set -eu
umask 077
# A write to a snapshot session that ended fails (and the step with it)
# instead of killing the shell before it can report.
trap '' PIPE
STEP="starting"
W="$WORK_DIR"
SESSION_PID=""
log() { printf '%s %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
finish() {
  code=$?
  trap - EXIT
  if [ -n "$SESSION_PID" ]; then kill "$SESSION_PID" 2>/dev/null || true; fi
  if [ "$code" -ne 0 ]; then
    [ -s "$W/message" ] || printf '%s failed (exit %s); see the log of this Job' "$STEP" "$code" > "$W/message"
    # A failed backup leaves no half-written folder behind on the volume.
    if [ "$DESTINATION" = volume ] && [ -n "${OUT_DIR:-}" ]; then rm -rf "$OUT_DIR"; fi
    cat "$W/message" > /dev/termination-log 2>/dev/null || true
  elif [ -s "$W/summary" ]; then
    cat "$W/summary" > /dev/termination-log 2>/dev/null || true
  fi
  exit "$code"
}
trap finish EXIT
# Stopped (its deadline, the backup deleted): end at the current command.
trap 'exit 143' TERM INT
fail() { printf '%s' "$*" > "$W/message"; log "FAILED: $*"; exit 1; }
# last_lines FILE: its last non-empty lines, on one line.
last_lines() { grep -v '^[[:space:]]*$' "$1" | tail -n 3 | tr '\n' ' ' | sed 's/ *$//'; }
# run CMD...: runs CMD; when it fails, the step fails with CMD's own last error lines.
run() {
  if "$@" 2> "$W/stderr"; then
    cat "$W/stderr" >&2
  else
    cat "$W/stderr" >&2
    fail "$STEP failed: $(last_lines "$W/stderr")"
  fi
}
# s3 ARGS...: runs rclone; when it fails, the step fails with the first
# error rclone reported (the bucket's own words), else its last lines.
s3() {
  if "$RCLONE" "$@" 2> "$W/stderr"; then
    cat "$W/stderr" >&2
  else
    cat "$W/stderr" >&2
    said=$(grep -m 1 ' ERROR : ' "$W/stderr" | sed 's/^.* ERROR : *:* *//')
    [ -n "$said" ] || said=$(last_lines "$W/stderr")
    fail "$STEP failed: $said"
  fi
}
TAB=$(printf '\t')
RCLONE=rclone
if [ -x "$TOOLS_DIR/rclone" ]; then RCLONE="$TOOLS_DIR/rclone"; fi

printf '%s\n' "$TABLE_FACTS_SQL" > "$W/table_facts.sql"
printf '%s\n' "$MANIFEST_AWK" > "$W/manifest.awk"

if [ "$DESTINATION" = s3 ]; then
  STEP="checking the bucket $S3_BUCKET"
  log "$STEP"
  s3 lsf --max-depth 1 "dest:$S3_BUCKET/$S3_PATH"
fi

# The backup role's password may be moments older than the role itself.
STEP="logging in to $PGHOST as $PGUSER"
log "$STEP"
tries=0
until psql -X -q -At -c 'SELECT 1' > /dev/null 2> "$W/stderr"; do
  tries=$((tries + 1))
  [ "$tries" -lt 20 ] || fail "$STEP failed: $(last_lines "$W/stderr")"
  sleep 3
done
SERVER_VERSION=$(psql -X -At -c 'SHOW server_version')

STEP="creating the folder $OUT_DIR"
run rm -rf "$OUT_DIR"
run mkdir -p "$OUT_DIR"
: > "$W/records.tsv"

STEP="dumping roles and settings with pg_dumpall --globals-only"
log "$STEP"
run pg_dumpall --globals-only --no-role-passwords --quote-all-identifiers --file="$OUT_DIR/$GLOBALS_FILE"

STEP="listing the databases"
run psql -X -q -At -c "SELECT datname FROM pg_catalog.pg_database WHERE datallowconn AND NOT datistemplate ORDER BY datname" -o "$W/databases"

SNAPSHOT_AT=""
i=0
while IFS= read -r db; do
  i=$((i + 1))
  case "$db" in
    */* | .* | *"$TAB"*) fail "database \"$db\" has a name that cannot be a file name; it is not backed up" ;;
  esac
  file="$db.dump"
  # One session per database holds the snapshot that pg_dump dumps and
  # the table facts are counted in, so the manifest describes the dump.
  STEP="opening a snapshot of database $db"
  log "$STEP"
  rm -f "$W/session.in" "$W/snapshot"
  mkfifo "$W/session.in"
  PGDATABASE="$db" psql -X -q -At -F "$TAB" -v ON_ERROR_STOP=1 < "$W/session.in" > "$W/session.out" 2> "$W/session.err" &
  SESSION_PID=$!
  exec 3> "$W/session.in"
  printf '%s\n' \
    "SET lock_timeout = '$LOCK_WAIT_TIMEOUT';" \
    "SET statement_timeout = 0;" \
    "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY;" \
    "SELECT pg_catalog.pg_export_snapshot(), to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') \\g $W/snapshot" >&3
  until [ -s "$W/snapshot" ] && [ "$(wc -l < "$W/snapshot")" -ge 1 ]; do
    kill -0 "$SESSION_PID" 2>/dev/null || fail "$STEP failed: $(last_lines "$W/session.err")"
    sleep 0.1
  done
  IFS="$TAB" read -r snapshot taken < "$W/snapshot"
  [ -n "$SNAPSHOT_AT" ] || SNAPSHOT_AT="$taken"

  STEP="dumping database $db with pg_dump"
  log "$STEP (snapshot $snapshot)"
  run env PGDATABASE="$db" pg_dump --format=custom --snapshot="$snapshot" --lock-wait-timeout="$LOCK_WAIT_TIMEOUT" --file="$OUT_DIR/$file"

  STEP="counting the rows of database $db in the dump's snapshot"
  log "$STEP"
  printf '%s\n' "\\o $W/facts.tsv" "\\set digest_bytes $DIGEST_BYTES" "\\i $W/table_facts.sql" "\\o" "COMMIT;" "\\q" >&3 ||
    fail "$STEP failed: $(last_lines "$W/session.err")"
  exec 3>&-
  wait "$SESSION_PID" || { SESSION_PID=""; fail "$STEP failed: $(last_lines "$W/session.err")"; }
  SESSION_PID=""
  printf 'D\t%s\t%s\n' "$db" "$file" >> "$W/records.tsv"
  DB="$db" awk '{ print "T\t" ENVIRON["DB"] "\t" $0 }' "$W/facts.tsv" >> "$W/records.tsv"
done < "$W/databases"

STEP="writing the manifest"
log "$STEP"
for f in "$OUT_DIR/$GLOBALS_FILE" "$OUT_DIR"/*.dump; do
  [ -e "$f" ] || continue
  printf 'F\t%s\t%s\t%s\n' "$(basename "$f")" "$(wc -c < "$f" | tr -d ' ')" "$(sha256sum "$f" | cut -d ' ' -f 1)" >> "$W/records.tsv"
done
export SERVER_VERSION SNAPSHOT_AT
run awk -F "$TAB" -f "$W/manifest.awk" "$W/records.tsv" > "$OUT_DIR/$MANIFEST_FILE.partial"
mv "$OUT_DIR/$MANIFEST_FILE.partial" "$OUT_DIR/$MANIFEST_FILE"

databases=$(grep -c '^D' "$W/records.tsv" || true)
tables=$(grep -c '^T' "$W/records.tsv" || true)
rows=$(awk -F "$TAB" '$1 == "T" { n += $5 } END { printf "%d", n }' "$W/records.tsv")
bytes=$(awk -F "$TAB" '$1 == "F" { n += $3 } END { printf "%d", n }' "$W/records.tsv")
bytes=$((bytes + $(wc -c < "$OUT_DIR/$MANIFEST_FILE")))

if [ "$DESTINATION" = s3 ]; then
  STEP="uploading to s3://$S3_BUCKET/$S3_PATH"
  log "$STEP"
  # The manifest goes last: a folder with a manifest holds a whole backup.
  s3 copy --s3-no-check-bucket --exclude "$MANIFEST_FILE" "$OUT_DIR" "dest:$S3_BUCKET/$S3_PATH"
  s3 copy --s3-no-check-bucket --include "$MANIFEST_FILE" "$OUT_DIR" "dest:$S3_BUCKET/$S3_PATH"
fi

version=$(printf '%s' "$SERVER_VERSION" | sed 's/[\\"]//g')
printf '{"serverVersion":"%s","snapshotAt":"%s","databases":%s,"tables":%s,"rows":%s,"bytes":%s}' \
  "$version" "$SNAPSHOT_AT" "$databases" "$tables" "$rows" "$bytes" > "$W/summary"
log "backed up $databases databases, $tables tables, $rows rows, $bytes bytes"
