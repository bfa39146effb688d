#!/bin/sh
# The instance script: run by every pod of a database in instance mode, at
# each container start, instead of the image's entrypoint. It decides from
# the roles the operator recorded (the roles ConfigMap, through the
# environment, read at this start) whether this instance starts as the
# primary or as a streaming replica, prepares the data directory for that,
# then hands over to the image's entrypoint with the container's arguments.
#
# Environment (from the pod template):
#   POD_NAME            this pod's name, <database>-<ordinal>
#   PGDB_PRIMARY        the pod that is to be the primary
#   PGDB_BOOTSTRAPPED   "true" once the database was initialised
#   PGDB_REBUILD        pods whose data must be cloned anew (comma-separated)
#   PRIMARY_HOST        the read-write Service: the primary, when it serves
#   REPLICATION_PASSWORD, POSTGRES_PASSWORD, PGDATA
set -eu

log() { echo "instance.sh: $*" >&2; }

: "${PGDATA:?PGDATA is not set}"
: "${POD_NAME:?POD_NAME is not set}"
primary="${PGDB_PRIMARY:-}"
bootstrapped="${PGDB_BOOTSTRAPPED:-false}"
rebuild_list="${PGDB_REBUILD:-}"

volume=$(dirname "$PGDATA")
diverged="$volume/pgdata.diverged"
clone="$volume/pgdata.clone"
passfile="$volume/replication.pgpass"
ordinal="${POD_NAME##*-}"
slot="instance_${ordinal}"

has_data() { [ -s "$PGDATA/PG_VERSION" ]; }

if [ "$primary" = "$POD_NAME" ]; then
	if ! has_data && [ "$bootstrapped" = "true" ]; then
		log "refusing to start as the primary: the data directory $PGDATA is empty, but this database was initialised before."
		log "The primary's volume was lost; a replica must take over (an empty primary would be a new, empty database)."
		exit 1
	fi
	# A former replica promoted while it was down starts as the primary.
	rm -f "$PGDATA/standby.signal"
	log "starting as the primary"
	exec docker-entrypoint.sh "$@"
fi

log "starting as a replica of $primary"
# The replication password, for pg_basebackup and the WAL receiver: a
# passfile on the data volume, outside the data directory, readable by the
# server's user only (a ':' or '\' in it is escaped as .pgpass requires).
umask 077
escaped=$(printf '%s' "${REPLICATION_PASSWORD:-}" | sed -e 's/\\/\\\\/g' -e 's/:/\\:/g')
printf '*:*:*:streaming_replica:%s\n' "$escaped" > "$passfile"
chmod 0600 "$passfile"

rebuild=false
case ",$rebuild_list," in
*",$POD_NAME,"*) rebuild=true ;;
esac

if ! pg_isready -q -h "$PRIMARY_HOST" -p 5432; then
	log "the primary ($PRIMARY_HOST) does not answer yet; exiting so the kubelet retries"
	exit 1
fi

set_aside() {
	# One copy of diverged data is kept on the volume until this instance
	# streams again.
	rm -rf "$diverged"
	mv "$PGDATA" "$diverged"
	log "set the data directory aside as $diverged"
}

clone_primary() {
	rm -rf "$clone"
	log "cloning the primary into $PGDATA"
	PGPASSFILE="$passfile" pg_basebackup -h "$PRIMARY_HOST" -p 5432 -U streaming_replica \
		-D "$clone" -X stream -S "$slot" --checkpoint=fast -w
	if [ -d "$PGDATA" ]; then
		rm -rf "$PGDATA"
	fi
	mv "$clone" "$PGDATA"
	chmod 0700 "$PGDATA"
}

if [ "$rebuild" = "true" ] && has_data; then
	log "asked to rebuild this instance"
	set_aside
fi
if ! has_data; then
	clone_primary
elif [ ! -f "$PGDATA/standby.signal" ]; then
	# A former primary: rewind it onto the new primary's timeline, or clone
	# when that is impossible.
	log "this data was a primary's: rewinding it onto the primary's timeline"
	# pg_rewind reads the primary's timeline from its control file, which
	# a just-promoted primary updates only when its first checkpoint ends
	# (spread, about 0.1 s per dirty buffer). Before that it would report
	# "no rewind required" and leave this instance unable to follow the
	# new timeline, so the primary checkpoints first.
	if ! PGPASSWORD="${POSTGRES_PASSWORD:-}" psql -X -q -h "$PRIMARY_HOST" -p 5432 \
		-U postgres -d postgres -c CHECKPOINT; then
		log "the primary did not checkpoint; rewinding anyway"
	fi
	if PGPASSWORD="${POSTGRES_PASSWORD:-}" pg_rewind --target-pgdata="$PGDATA" \
		--source-server="host=$PRIMARY_HOST port=5432 user=postgres dbname=postgres" --progress; then
		log "rewound"
	else
		log "rewind failed: cloning instead"
		set_aside
		clone_primary
	fi
fi
touch "$PGDATA/standby.signal"

if [ -d "$diverged" ]; then
	# Removes the set-aside copy once the WAL receiver streams. A child of
	# the server after the exec below, it always exits 0 (the server
	# ignores a child that exits cleanly).
	(
		set +e
		i=0
		while [ "$i" -lt 3600 ]; do
			sleep 5
			i=$((i + 5))
			status=$(PGPASSWORD="${POSTGRES_PASSWORD:-}" psql -X -A -t -h "${LOCAL_HOST:-localhost}" -p 5432 \
				-U postgres -d postgres -c "SELECT status FROM pg_stat_wal_receiver" 2>/dev/null)
			if [ "$status" = "streaming" ]; then
				rm -rf "$diverged"
				break
			fi
		done
		exit 0
	) </dev/null >/dev/null 2>&1 &
fi

exec docker-entrypoint.sh "$@" \
	-c "primary_conninfo=host=$PRIMARY_HOST port=5432 user=streaming_replica passfile=$passfile application_name=$POD_NAME" \
	-c "primary_slot_name=$slot"
