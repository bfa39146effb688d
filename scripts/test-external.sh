#!/usr/bin/env bash
# The behaviour suite against a cluster it does not embed, as against kind:
# a `pgdb-sandbox` process stands in for the cluster, reached only through
# its kubeconfig, so the tests and the operators use the paths a real
# cluster needs (port-forwards to reach the databases, no request counters).
# With PGDB_TEST_KUBECONFIG already set, that cluster is used instead.
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ -z "${PGDB_TEST_KUBECONFIG:-}" ]]; then
    cargo build -q -p sandbox --bin pgdb-sandbox
    work="$(mktemp -d)"
    sandbox=""
    # SIGTERM lets the sandbox stop its PostgreSQL processes; a sandbox that
    # does not exit within 30 s is killed.
    stop_sandbox() {
        if [[ -n "$sandbox" ]] && kill -TERM "$sandbox" 2>/dev/null; then
            for _ in $(seq 300); do
                kill -0 "$sandbox" 2>/dev/null || break
                sleep 0.1
            done
            kill -KILL "$sandbox" 2>/dev/null || true
        fi
        rm -rf "$work"
    }
    trap stop_sandbox EXIT
    "${CARGO_TARGET_DIR:-target}/debug/pgdb-sandbox" --runtime postgres \
        --kubeconfig "$work/kubeconfig" > "$work/sandbox.log" 2>&1 &
    sandbox=$!
    for _ in $(seq 100); do
        [[ -s "$work/kubeconfig" ]] && break
        kill -0 "$sandbox" 2>/dev/null || { cat "$work/sandbox.log"; exit 1; }
        sleep 0.1
    done
    [[ -s "$work/kubeconfig" ]] || { echo "pgdb-sandbox wrote no kubeconfig"; cat "$work/sandbox.log"; exit 1; }
    export PGDB_TEST_KUBECONFIG="$work/kubeconfig"
fi
echo "behaviour suite against the cluster of $PGDB_TEST_KUBECONFIG"
cargo test -p tests --test suite behaviour -- --nocapture 2> >(grep -v ' INFO \| DEBUG ' >&2)
