#!/usr/bin/env bash
# The main job: a level of the operator at work on the sandbox, shown live.
# Usage: scripts/tour.sh [--level N] [--example FILE | --no-example] [--kubeconfig PATH]
#                        [--runtime auto|postgres|simulated] [--no-operator]
#        scripts/tour.sh --scenario NAME|list [--level N]
# Typed into it: stop, kill, start [N], level N, status, help (docs/lab.md).
set -euo pipefail
cd "$(dirname "$0")/.."
# Real PostgreSQL for the sandbox's pods; without it the tour still runs,
# with simulated pods, and says so.
scripts/install-postgres.sh || echo "PostgreSQL binaries unavailable: the sandbox will simulate its pods"
exec cargo run -q -p tests --bin pgdb-tour -- "$@"
