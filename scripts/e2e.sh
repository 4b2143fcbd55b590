#!/usr/bin/env bash
# The end-to-end tests alone (tests/e2e/): against the cluster named by
# RESIDENCY_GUARD_E2E_KUBECONFIG (cluster-admin; the tests install the chart
# and clean up after themselves), or, when it is not set, against a local
# control plane started for the run (scripts/with-cluster.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-tools.sh >/dev/null
export PATH="$PWD/.tools/bin:$PATH"
exec scripts/with-cluster.sh cargo nextest run --locked --no-fail-fast -E 'binary(e2e)' "$@"
