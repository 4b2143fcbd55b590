//! End-to-end tests against a real Kubernetes API server.
//!
//! They run when RESIDENCY_GUARD_E2E_KUBECONFIG names a kubeconfig (cluster
//! admin: the tests install the chart, CRDs and webhooks, label nodes and
//! create namespaces, and remove all of it again, also when they fail).
//! Without one they print that they are skipped; under `CI=true` that is a
//! failure. `.ci/run` starts a local control plane (../shared/cluster) and
//! runs them; `scripts/e2e.sh` does the same on a developer's machine, and
//! against any other cluster with RESIDENCY_GUARD_E2E_KUBECONFIG set.
//!
//! With RESIDENCY_GUARD_E2E_IMAGE (an operator image already imported into
//! the kit's worker node; scripts/with-cluster.sh does it as root) they
//! install the chart with that image and run the operator as it ships, in
//! Pods (harness::Mode::Pods); `availability` runs only then.
//!
//! The tests share one cluster and run one at a time (.config/nextest.toml).

mod audit;
mod availability;
mod client_auth;
mod clouds;
mod crd;
mod daemonset;
mod egress_layers;
mod graph;
mod harness;
mod journey;
mod namespace_check;
mod open_reports;
mod ownership;
mod pod_features;
mod report;
mod storage;
mod transcripts;
