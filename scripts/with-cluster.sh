#!/usr/bin/env bash
# Run a command with a real Kubernetes control plane for the end-to-end
# tests: start the control-plane kit (kube-apiserver, controller-manager,
# scheduler and etcd on 127.0.0.1, five fake Ready nodes), export
# RESIDENCY_GUARD_E2E_KUBECONFIG, run the command, stop the kit (also when
# the command fails or is interrupted).
#
#   scripts/with-cluster.sh scripts/test.sh
#
# The kit is $RESIDENCY_GUARD_CLUSTER_KIT, else ../shared/cluster next to
# the repository, else /work/shared/cluster (where the project's machines
# keep it). Without a kit the command runs without a cluster: the
# end-to-end tests then print that they are skipped, or fail under CI=true.
# With RESIDENCY_GUARD_E2E_KUBECONFIG already set, that cluster is used and
# no kit is started.
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -gt 0 ] || { echo "usage: $0 COMMAND [ARGS...]" >&2; exit 2; }

if [ -n "${RESIDENCY_GUARD_E2E_KUBECONFIG:-}" ]; then
  echo "with-cluster: using RESIDENCY_GUARD_E2E_KUBECONFIG=$RESIDENCY_GUARD_E2E_KUBECONFIG"
  exec "$@"
fi

kit="${RESIDENCY_GUARD_CLUSTER_KIT:-}"
if [ -z "$kit" ]; then
  for candidate in "$PWD/../shared/cluster" /work/shared/cluster; do
    if [ -x "$candidate/up" ]; then kit="$candidate"; break; fi
  done
fi
if [ -z "$kit" ] || [ ! -x "$kit/up" ]; then
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
