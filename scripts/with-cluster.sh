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
# no kit is started. As root with a kit that has `worker`, a real node runs
# the operator image too (RESIDENCY_GUARD_E2E_IMAGE; see below).
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

# Pods mode (issue 24): when the kit can run a real node (`worker`, needs
# root) and RESIDENCY_GUARD_E2E_IMAGE is unset, start it, build the
# operator image from the debug binary the tests build anyway
# (`cargo test --no-run` is the build nextest then reuses; the release
# build costs minutes) and import it: the e2e tests then install the chart
# and run the operator as it ships (tests/e2e/harness.rs, Mode::Pods).
# RESIDENCY_GUARD_E2E_IMAGE= (empty) keeps every test in Local mode.
if [ -z "${RESIDENCY_GUARD_E2E_IMAGE+set}" ] && [ -x "$kit/worker" ] && [ "$(id -u)" -eq 0 ]; then
  phase() { echo "with-cluster: $1 in $(( $(date +%s) - $2 )) s"; }
  t=$(date +%s); "$kit/worker" "$state"; phase "worker node started" "$t"
  # The tests' own workloads stay among the five fake nodes; the operator
  # runs on a mainland node (tests/e2e/harness.rs: WORKER_TAINT, WORKER_REGION).
  KUBECONFIG="$RESIDENCY_GUARD_E2E_KUBECONFIG" "${KUBECTL:-kubectl}" taint node kit-worker \
    residencyguard.io/e2e-operator=true:NoSchedule --overwrite
  KUBECONFIG="$RESIDENCY_GUARD_E2E_KUBECONFIG" "${KUBECTL:-kubectl}" label node kit-worker \
    topology.kubernetes.io/region=cn-north-1 topology.kubernetes.io/zone=cn-north-1a --overwrite
  t=$(date +%s); cargo test --locked --no-run; phase "test build (reused by the tests)" "$t"
  t=$(date +%s)
  scripts/build-image.sh --binary target/debug/residency-guard --ref localhost/residency-guard:e2e \
    --out target/image/residency-guard-e2e.tar --import "$state"
  phase "image built and imported" "$t"
  export RESIDENCY_GUARD_E2E_IMAGE=localhost/residency-guard:e2e
  # For the whole-cluster restart test (tests/e2e/availability.rs): the kit
  # to restart the worker with, and the image to import into the new node.
  export RESIDENCY_GUARD_E2E_KIT="$kit"
  export RESIDENCY_GUARD_E2E_IMAGE_TAR="$PWD/target/image/residency-guard-e2e.tar"
elif [ -z "${RESIDENCY_GUARD_E2E_IMAGE+set}" ]; then
  echo "with-cluster: no worker node (the kit has no 'worker', or not root): the operator runs as a local process; tests/e2e/availability.rs is skipped" >&2
  export RESIDENCY_GUARD_E2E_IMAGE=
fi
"$@"
