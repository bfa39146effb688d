#!/bin/sh
# A former primary rewound onto a promoted standby's timeline, held where
# a rewound instance is before its WAL receiver starts: in recovery,
# replaying the WAL pg_rewind copied, its last checkpoint still on the old
# timeline. Prints the promoted server's timeline and the rewound server's
# answer to the member probe, then stops both servers.
#
# Usage (as the user that owns PostgreSQL data, never root), the probe's
# SQL on standard input:
#   rewound_standby.sh BINDIR < member.sql
# Output: "PRIMARY_TIMELINE <n>" and "MEMBER <columns separated by |>".
set -eu

bin=$1
member_sql=$(cat)
export PATH="$bin:$PATH"
dir=$(mktemp -d "${TMPDIR:-/tmp}/pgdb-rewound.XXXXXX")
old="$dir/old"
new="$dir/new"

stop() {
	status=$?
	if [ "$status" != 0 ]; then
		for log in "$dir"/*.log; do
			[ -f "$log" ] && { echo "--- $log" >&2; tail -n 20 "$log" >&2; }
		done
	fi
	pg_ctl -D "$old" -m immediate stop >/dev/null 2>&1 || true
	pg_ctl -D "$new" -m immediate stop >/dev/null 2>&1 || true
	rm -rf "$dir"
}
trap stop EXIT

sql() {
	port=$1
	shift
	psql -X -q -A -t -h "$dir" -p "$port" -U postgres -d postgres "$@"
}

initdb -D "$old" -U postgres --auth=trust >/dev/null
cat >>"$old/postgresql.conf" <<EOF
port = 5432
listen_addresses = ''
unix_socket_directories = '$dir'
wal_log_hints = on
wal_keep_size = 256MB
EOF
pg_ctl -D "$old" -l "$dir/old.log" -w start >/dev/null
sql 5432 -c "CREATE TABLE t AS SELECT g FROM generate_series(1, 1000) g"
pg_basebackup -h "$dir" -p 5432 -U postgres -D "$new" -R -X stream
echo "port = 5433" >>"$new/postgresql.conf"
pg_ctl -D "$new" -l "$dir/new.log" -w start >/dev/null

# A checkpoint both servers share, then a promotion: the old primary goes
# on writing on timeline 1 and stops without a shutdown checkpoint, as a
# frozen or killed primary does.
sql 5432 -c "CHECKPOINT"
sql 5432 -c "INSERT INTO t SELECT g FROM generate_series(1, 1000) g"
target=$(sql 5432 -c "SELECT pg_current_wal_lsn()")
until [ "$(sql 5433 -c "SELECT pg_last_wal_replay_lsn() >= '$target'")" = "t" ]; do sleep 0.1; done
pg_ctl -D "$new" -w promote >/dev/null
sql 5433 -c "CHECKPOINT"
sql 5432 -c "INSERT INTO t SELECT g FROM generate_series(1, 100000) g"
pg_ctl -D "$old" -m immediate stop >/dev/null

pg_rewind --target-pgdata="$old" \
	--source-server="host=$dir port=5433 user=postgres dbname=postgres" >"$dir/rewind.log" 2>&1 ||
	{ cat "$dir/rewind.log" >&2; exit 1; }

# pg_rewind copied the configuration of the promoted server (its port,
# and the primary_conninfo pg_basebackup wrote). A standby with none: its
# WAL receiver never starts, so it stays in the moment before streaming
# that the member probe must read.
echo "port = 5432" >>"$old/postgresql.conf"
echo "primary_conninfo = ''" >>"$old/postgresql.auto.conf"
touch "$old/standby.signal"
pg_ctl -D "$old" -l "$dir/old.log" -w start >/dev/null
echo "PRIMARY_TIMELINE $(sql 5433 -c "SELECT timeline_id FROM pg_control_checkpoint()")"
echo "MEMBER $(printf '%s\n' "$member_sql" | sql 5432 -F '|' -f -)"
