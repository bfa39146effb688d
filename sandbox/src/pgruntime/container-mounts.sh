# Gives a container's process its mounts at their literal paths, in a mount
# namespace of its own (this script is started by `unshare --mount
# --propagation private`, so nothing here is seen outside), then becomes the
# container's program.
#
# Arguments:
#   <uid or -> <gid or -> <no-new-privs: yes|no> <keep dir>
#   <n roots> <root>...            directories replaced by a tmpfs of the
#                                  namespace (/run) that still shows the
#                                  host's entries, as links
#   <n mounts> (<host dir> <container path> <ro|rw>)...
#   -- <program> <arguments>...
# The script runs with a fixed environment (PATH=/usr/sbin:/usr/bin:/sbin:/bin
# and nothing else); <program> is `/usr/bin/env -i -- NAME=VALUE... <binary>`,
# which sets the container's environment only once the privileges are gone.
# With a uid, the program runs as that user (setpriv); without one the
# namespace is a user namespace already, where the script is root with every
# capability: the program runs as that uid 0 with every capability set
# (bounding, inheritable, ambient) cleared, so it keeps none.
set -eu
PATH=/usr/sbin:/usr/bin:/sbin:/bin
export PATH
fail() {
    echo "pgdb-sandbox: cannot prepare the container's mounts: $*" >&2
    exit 128
}
uid=$1 gid=$2 no_new_privs=$3 keep=$4
shift 4
n=$1
shift
while [ "$n" -gt 0 ]; do
    root=$1
    shift
    n=$((n - 1))
    # The host's entries stay reachable through a private bind of the root.
    host="$keep/$(echo "$root" | tr / _)"
    mkdir -p "$host" || fail "cannot create $host"
    mount --rbind "$root" "$host" || fail "cannot bind $root"
    mount -t tmpfs -o mode=0755,nosuid,nodev pgdb-container "$root" || fail "cannot mount a tmpfs on $root"
    for entry in "$host"/* "$host"/.[!.]*; do
        if [ -e "$entry" ] || [ -L "$entry" ]; then
            ln -s "$entry" "$root/${entry##*/}"
        fi
    done
done
n=$1
shift
while [ "$n" -gt 0 ]; do
    from=$1 to=$2 mode=$3
    shift 3
    n=$((n - 1))
    # A link to the host's entry on the way is replaced by a directory of
    # the namespace's own: nothing is created in the host's tree.
    for root in /run /var/run; do
        case "$to" in "$root"/*)
            rest=${to#"$root"/}
            first="$root/${rest%%/*}"
            if [ -L "$first" ]; then
                rm "$first" && mkdir "$first" || fail "cannot prepare $first"
            fi
            ;;
        esac
    done
    if [ -d "$from" ]; then
        mkdir -p "$to" || fail "cannot create $to"
    elif [ ! -e "$to" ]; then
        mkdir -p "${to%/*}" && : >"$to" || fail "cannot create $to"
    fi
    mount --bind "$from" "$to" || fail "cannot mount $from at $to"
    if [ "$mode" = ro ]; then
        mount -o remount,bind,ro "$to" || fail "cannot make $to read-only"
    fi
done
[ "$1" = -- ] || fail "malformed arguments"
shift
if [ "$uid" != - ]; then
    if [ "$no_new_privs" = yes ]; then
        exec setpriv --reuid="$uid" --regid="$gid" --init-groups --no-new-privs -- "$@"
    fi
    exec setpriv --reuid="$uid" --regid="$gid" --init-groups -- "$@"
fi
drop="--bounding-set=-all --inh-caps=-all --ambient-caps=-all"
if [ "$no_new_privs" = yes ]; then
    exec setpriv $drop --no-new-privs -- "$@"
fi
exec setpriv $drop -- "$@"
