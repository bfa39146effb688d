#!/usr/bin/env bash
# The official postgres image's docker-entrypoint.sh, as the sandbox runs it
# on the host: same variables, same first-start steps, same order. The
# differences: it runs as the postgres user already (no gosu), the temporary
# server listens on a private socket directory only, and the final server
# listens on the pod's IP and that socket directory (SANDBOX_* variables,
# set by the runtime).
set -Eeo pipefail

file_env() {
	local var="$1" fileVar="${1}_FILE" def="${2:-}"
	if [ "${!var:-}" ] && [ "${!fileVar:-}" ]; then
		echo >&2 "error: both $var and $fileVar are set (but are exclusive)"
		exit 1
	fi
	local val="$def"
	if [ "${!var:-}" ]; then
		val="${!var}"
	elif [ "${!fileVar:-}" ]; then
		val="$(< "${!fileVar}")"
	fi
	export "$var"="$val"
	unset "$fileVar"
}

if [ "${1:0:1}" = '-' ]; then
	set -- postgres "$@"
fi
if [ "$1" != 'postgres' ]; then
	exec "$@"
fi
shift

file_env 'POSTGRES_PASSWORD'
file_env 'POSTGRES_USER' 'postgres'
file_env 'POSTGRES_DB' "$POSTGRES_USER"
file_env 'POSTGRES_INITDB_ARGS'
: "${POSTGRES_HOST_AUTH_METHOD:=}"
: "${PGDATA:?PGDATA is not set}"
port="${PGPORT:-5432}"

mkdir -p "$PGDATA"
chmod 00700 "$PGDATA" || :

if [ ! -s "$PGDATA/PG_VERSION" ]; then
	if [ -z "$POSTGRES_PASSWORD" ] && [ 'trust' != "$POSTGRES_HOST_AUTH_METHOD" ]; then
		cat >&2 <<-'EOE'
			Error: Database is uninitialized and superuser password is not specified.
			       You must specify POSTGRES_PASSWORD to a non-empty value for the
			       superuser. For example, "-e POSTGRES_PASSWORD=password" on "docker run".
		EOE
		exit 1
	fi
	if [ -n "${POSTGRES_INITDB_WALDIR:-}" ]; then
		set -- --waldir "$POSTGRES_INITDB_WALDIR" "$@"
	fi
	eval 'initdb --username="$POSTGRES_USER" --pwfile=<(printf "%s\n" "$POSTGRES_PASSWORD") '"$POSTGRES_INITDB_ARGS"
	auth="${POSTGRES_HOST_AUTH_METHOD:-scram-sha-256}"
	printf '\n%s\n' "host all all all $auth" >> "$PGDATA/pg_hba.conf"

	# The temporary server: no TCP, a private socket directory.
	postgres "$@" -c listen_addresses='' -c unix_socket_directories="$SANDBOX_SOCKET_DIR" -p "$port" &
	temp_pid=$!
	for _ in $(seq 1 600); do
		pg_isready -q -h "$SANDBOX_SOCKET_DIR" -p "$port" && break
		kill -0 "$temp_pid" 2>/dev/null || { wait "$temp_pid"; exit 1; }
		sleep 0.1
	done
	export PGHOST="$SANDBOX_SOCKET_DIR" PGPORT="$port"
	export PGPASSWORD="${PGPASSWORD:-$POSTGRES_PASSWORD}"
	psql=( psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --no-password --no-psqlrc )
	if [ "$POSTGRES_DB" != 'postgres' ]; then
		"${psql[@]}" --dbname postgres --set db="$POSTGRES_DB" <<-'EOSQL'
			CREATE DATABASE :"db" ;
		EOSQL
	fi
	echo
	for f in "$SANDBOX_INITDB_DIR"/*; do
		[ -e "$f" ] || continue
		case "$f" in
			*.sh)
				if [ -x "$f" ]; then
					echo "$0: running $f"
					"$f"
				else
					echo "$0: sourcing $f"
					. "$f"
				fi
				;;
			*.sql)    echo "$0: running $f"; "${psql[@]}" --dbname "$POSTGRES_DB" -f "$f"; echo ;;
			*.sql.gz) echo "$0: running $f"; gunzip -c "$f" | "${psql[@]}" --dbname "$POSTGRES_DB"; echo ;;
			*)        echo "$0: ignoring $f" ;;
		esac
		echo
	done
	unset PGPASSWORD PGHOST PGPORT
	kill -INT "$temp_pid"
	wait "$temp_pid" || :
	echo
	echo 'PostgreSQL init process complete; ready for start up.'
	echo
else
	echo
	echo 'PostgreSQL Database directory appears to contain a database; Skipping initialization'
	echo
fi

exec postgres "$@" -c listen_addresses="$SANDBOX_POD_IP" -c unix_socket_directories="$SANDBOX_SOCKET_DIR"
