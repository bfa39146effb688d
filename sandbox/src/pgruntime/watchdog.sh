# The sandbox's watchdog, run with `sh -c` by `spawn_watchdog` (process.rs):
# $1 is the sandbox's pid, $2 its work directory. POSIX sh only.
owner="$1"; work="$2"
while [ -d "/proc/$owner" ]; do sleep 1; done
for f in "$work"/pgids/*; do
  [ -f "$f" ] && kill -s KILL -- "-$(cat "$f")" 2>/dev/null
done
for v in "$work"/volumes/*; do
  [ -d "$v" ] && umount -l "$v" 2>/dev/null
done
chmod -R u+w "$work" 2>/dev/null
rm -rf "$work"
