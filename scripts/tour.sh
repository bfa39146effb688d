#!/usr/bin/env bash
# The main job: a level of the operator at work on the sandbox, shown live.
# Usage: scripts/tour.sh [--level N] [--example FILE] [--kubeconfig PATH]
set -euo pipefail
cd "$(dirname "$0")/.."
exec cargo run -q -p tests --bin pgdb-tour -- "$@"
