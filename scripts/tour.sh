#!/usr/bin/env bash
# The main job: a level of the operator at work on the sandbox, shown live.
# Usage: scripts/tour.sh [--level N] [--example FILE] [--kubeconfig PATH] [--runtime auto|postgres|simulated]
set -euo pipefail
cd "$(dirname "$0")/.."
# Real PostgreSQL for the sandbox's pods; without it the tour still runs,
# with simulated pods, and says so.
scripts/install-postgres.sh || echo "PostgreSQL binaries unavailable: the sandbox will simulate its pods"
exec cargo run -q -p tests --bin pgdb-tour -- "$@"
