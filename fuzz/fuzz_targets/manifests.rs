//! Any text as a manifest bundle: parse every document, decode workloads,
//! and judge them against the example snapshot; never panic.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use residency_guard::cli::parse_documents;
use residency_guard::engine::{self, AddressSpace, Catalogue, Snapshot, Workload};

static SNAPSHOT: LazyLock<Snapshot> = LazyLock::new(|| {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/cluster");
    let base = Snapshot::new(Catalogue::builtin().clone(), AddressSpace::builtin());
    let now = "2026-11-23T00:00:00Z".parse().unwrap_or_default();
    residency_guard::cli::load_inputs(&[root], base.clone(), "default", now)
        .map(|l| l.snapshot)
        .unwrap_or(base)
});

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(docs) = parse_documents("fuzz", text) else { return };
    for d in docs {
        if let Ok(w) = Workload::from_value(&d.value, "default") {
            let _ = engine::evaluate(&SNAPSHOT, &w, jiff::Timestamp::UNIX_EPOCH);
        }
    }
});
