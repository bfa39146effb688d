#!/usr/bin/env bash
# The main job: a level of the operator at work on the sandbox, shown live.
# Usage: scripts/tour.sh [--level N] [--example FILE | --no-example] [--kubeconfig PATH]
#                        [--runtime auto|postgres|simulated] [--no-operator | --in-cluster]
#        scripts/tour.sh --scenario NAME|list [--level N]
# Typed into it: stop, kill, start [N], level N, status, help (docs/lab.md).
set -euo pipefail
cd "$(dirname "$0")/.."
# Real PostgreSQL for the sandbox's pods; without it the tour still runs,
# with simulated pods, and says so.
scripts/install-postgres.sh || echo "PostgreSQL binaries unavailable: the sandbox will simulate its pods"
# --in-cluster deploys the operator with `kubectl apply -k deploy/overlays/<level>`:
# the sandbox runs its image, pgdb-operator:<level crate>, as the level's binary.
for arg in "$@"; do
    if [[ "$arg" == "--in-cluster" ]]; then
        cargo build -q --workspace --bins
    fi
done
exec cargo run -q -p tests --bin pgdb-tour -- "$@"
