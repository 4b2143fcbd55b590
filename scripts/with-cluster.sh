#!/usr/bin/env bash
# Run a command with a real Kubernetes control plane for the end-to-end
# tests: start the control-plane kit (kube-apiserver, controller-manager,
# scheduler and etcd on 127.0.0.1, five fake Ready nodes), export
# RESIDENCY_GUARD_E2E_KUBECONFIG, run the command, stop the kit (also when
# the command fails or is interrupted).
#
#   scripts/with-cluster.sh scripts/test.sh
#
# The kit is the first of $RESIDENCY_GUARD_CLUSTER_KIT, ../shared/cluster
# next to the repository and /work/shared/cluster (where the project's
# machines keep it) that has an executable `up`. Without a kit, under
# CI=true this fails at once (CI must test against a real API server);
# elsewhere the command runs without a cluster and the end-to-end tests
# print that they are skipped.
# With RESIDENCY_GUARD_E2E_KUBECONFIG already set, that cluster is used and
# no kit is started.
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -gt 0 ] || { echo "usage: $0 COMMAND [ARGS...]" >&2; exit 2; }

if [ -n "${RESIDENCY_GUARD_E2E_KUBECONFIG:-}" ]; then
  echo "with-cluster: using RESIDENCY_GUARD_E2E_KUBECONFIG=$RESIDENCY_GUARD_E2E_KUBECONFIG"
  exec "$@"
fi

kit=""
for candidate in "${RESIDENCY_GUARD_CLUSTER_KIT:-}" "$PWD/../shared/cluster" /work/shared/cluster; do
  if [ -n "$candidate" ] && [ -x "$candidate/up" ]; then kit="$candidate"; break; fi
done
if [ -z "$kit" ]; then
  if [ "${CI:-}" = true ]; then
    echo "with-cluster: CI=true and no control-plane kit found (looked in \$RESIDENCY_GUARD_CLUSTER_KIT, ../shared/cluster, /work/shared/cluster)" >&2
    exit 1
  fi
  echo "with-cluster: no control-plane kit found (set RESIDENCY_GUARD_CLUSTER_KIT); running without a cluster" >&2
  exec "$@"
fi
kit="$(cd "$kit" && pwd)"
state="$PWD/target/kube"
mkdir -p "$state"
started=$(date +%s)
"$kit/up" "$state"
trap '"$kit/down" "$state" >/dev/null 2>&1 || true' EXIT INT TERM
"$kit/nodes" "$state"
echo "with-cluster: control plane ready in $(( $(date +%s) - started )) s"
export RESIDENCY_GUARD_E2E_KUBECONFIG="$state/admin.kubeconfig"
"$@"
