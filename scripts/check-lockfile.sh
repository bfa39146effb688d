#!/usr/bin/env bash
# Fails when Cargo.lock holds more than one k8s-openapi. kube-leader-election's
# loose requirement can pull a second one in; two copies mean two incompatible
# sets of Kubernetes types. Fix with:
#   cargo update -p k8s-openapi@<newer> --precise <the workspace's version>
set -euo pipefail
cd "$(dirname "$0")/.."
versions=$(awk '/^name = "k8s-openapi"$/ { getline; print $3 }' Cargo.lock | tr -d '"')
count=$(printf '%s\n' "$versions" | grep -c . || true)
if [ "$count" -ne 1 ]; then
  echo "error: Cargo.lock must hold exactly one k8s-openapi; it holds: $(echo $versions)" >&2
  exit 1
fi
echo "Cargo.lock: one k8s-openapi ($versions)"
