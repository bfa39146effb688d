#!/usr/bin/env bash
# The project's test command (README), also what CI runs through .ci/run.
# Needs only a Rust toolchain; installs nothing else yet.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/check-lockfile.sh
cargo fmt --all --check
cargo clippy --workspace --all-targets -- -D warnings
cargo test --workspace
