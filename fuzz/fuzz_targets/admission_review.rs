//! Any bytes as an AdmissionReview on every endpoint: the handler must answer
//! or refuse, never panic. Seeded with real reviews from fuzz/seeds/.
#![no_main]

use std::collections::BTreeMap;
use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use residency_guard::engine::{AddressSpace, Catalogue, Lang, Snapshot, Workload};
use residency_guard::webhook::admission::{self, Endpoint};

static SNAPSHOT: LazyLock<(Snapshot, BTreeMap<String, Vec<Workload>>)> = LazyLock::new(|| {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/cluster");
    let base = Snapshot::new(Catalogue::builtin().clone(), AddressSpace::builtin());
    let now = "2026-11-23T00:00:00Z".parse().unwrap_or_default();
    match residency_guard::cli::load_inputs(&[root], base.clone(), "default", now) {
        Ok(loaded) => {
            let mut by_ns: BTreeMap<String, Vec<Workload>> = BTreeMap::new();
            for (_, w) in loaded.workloads {
                by_ns.entry(w.namespace.clone()).or_default().push(w);
            }
            (loaded.snapshot, by_ns)
        }
        Err(_) => (base, BTreeMap::new()),
    }
});

fuzz_target!(|data: &[u8]| {
    let (snapshot, workloads) = &*SNAPSHOT;
    let now = jiff::Timestamp::UNIX_EPOCH;
    for endpoint in [
        Endpoint::Workloads,
        Endpoint::NetworkPolicies,
        Endpoint::Policies,
        Endpoint::Namespaces,
    ] {
        let _ = admission::handle(data, endpoint, snapshot, workloads, Lang::En, now);
    }
    // The paths that read a review outside the handler: the user of a
    // declassification, and a refusal while the snapshot is not ready.
    let _ = residency_guard::webhook::declassify::UserInfo::of_review(data);
    let _ = admission::refuse_unjudged(data, "not ready", Lang::ZhCn);
});
