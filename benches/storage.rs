//! Storage residency (issue #15): what judging volumes adds to a verdict,
//! and what the storage projection costs in memory.
//!
//! | figure                                   | what                                                         | target  |
//! |------------------------------------------|--------------------------------------------------------------|---------|
//! | `storage/no_volumes`                     | `evaluate`, 100 policies (5 govern), 10,000 PVs and PVCs     | baseline |
//! | `storage/3_volumes_compliant`            | the same workload with 3 volumes that pass                   | ≤ baseline + 5 µs |
//! | `storage/3_volumes_violating`            | 3 volumes that fail (messages written for 5 policies)        | (for information) |
//! | footprint per PV / PVC                   | the watch projection and the snapshot's index, per object    | (reported) |
//!
//! `main` prints the memory figures and the added cost (medians of a timed
//! loop) before criterion runs.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::Criterion;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::storage::v1::StorageClass;
use residency_guard::api::ResidencyPolicy;
use residency_guard::engine::{
    AddressSpace, Catalogue, ClaimRecord, ClassRecord, Snapshot, SnapshotBuilder, VolumeRecord,
    Workload, evaluate,
};
use serde_json::{Value, json};

#[path = "counting_alloc.rs"]
mod counting_alloc;

/// Run `f`; the bytes it allocated that are still allocated afterwards.
fn retained<T>(f: impl FnOnce() -> T) -> (T, isize) {
    let (out, live, _peak) = counting_alloc::heap_of(f);
    (out, live)
}

const OBJECTS: usize = 10_000;
const NS: &str = "payments";
const ZONES: [&str; 6] = [
    "cn-north-1a",
    "cn-north-1b",
    "cn-north-1d",
    "cn-northwest-1a",
    "cn-northwest-1b",
    "cn-northwest-1c",
];

fn now() -> Timestamp {
    "2026-11-01T00:00:00Z".parse().expect("valid timestamp")
}

/// A PV as the AWS EBS CSI driver writes one (topology in node affinity,
/// CSI attributes, a claimRef, the usual metadata).
fn pv_json(i: usize) -> Value {
    json!({
        "apiVersion": "v1", "kind": "PersistentVolume",
        "metadata": {"name": format!("pvc-{i:08}-4f1c-9a2b-1e0d5c7b3a21"),
            "annotations": {"pv.kubernetes.io/provisioned-by": "ebs.csi.aws.com",
                "volume.kubernetes.io/provisioner-deletion-secret-name": ""},
            "finalizers": ["kubernetes.io/pv-protection", "external-attacher/ebs-csi-aws-com"]},
        "spec": {
            "capacity": {"storage": "20Gi"}, "accessModes": ["ReadWriteOnce"],
            "persistentVolumeReclaimPolicy": "Delete", "storageClassName": "gp3",
            "volumeMode": "Filesystem",
            "claimRef": {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                "namespace": NS, "name": format!("data-{i}"), "uid": "6a1b2c3d-0000-4000-8000-000000000000",
                "resourceVersion": "123456"},
            "csi": {"driver": "ebs.csi.aws.com", "fsType": "ext4",
                "volumeHandle": format!("vol-0{i:016x}"),
                "volumeAttributes": {"storage.kubernetes.io/csiProvisionerIdentity": "1700000000000-8081-ebs.csi.aws.com"}},
            "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                {"key": "topology.ebs.csi.aws.com/zone", "operator": "In", "values": [ZONES[i % ZONES.len()]]}]}]}}
        },
        "status": {"phase": "Bound"}
    })
}

fn pvc_json(i: usize, bound: bool) -> Value {
    let mut spec = json!({"accessModes": ["ReadWriteOnce"], "storageClassName": "gp3",
        "volumeMode": "Filesystem", "resources": {"requests": {"storage": "20Gi"}}});
    if bound {
        spec["volumeName"] = json!(format!("pvc-{i:08}-4f1c-9a2b-1e0d5c7b3a21"));
    }
    json!({
        "apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": format!("data-{i}"), "namespace": NS,
            "annotations": {"pv.kubernetes.io/bind-completed": "yes",
                "volume.kubernetes.io/storage-provisioner": "ebs.csi.aws.com"},
            "finalizers": ["kubernetes.io/pvc-protection"]},
        "spec": spec,
        "status": {"phase": if bound { "Bound" } else { "Pending" }, "capacity": {"storage": "20Gi"}}
    })
}

fn class_json(name: &str, mode: &str, topology: Option<Value>, default: bool) -> Value {
    let mut sc = json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
        "metadata": {"name": name}, "provisioner": "ebs.csi.aws.com", "volumeBindingMode": mode});
    if let Some(t) = topology {
        sc["allowedTopologies"] = t;
    }
    if default {
        sc["metadata"]["annotations"] =
            json!({"storageclass.kubernetes.io/is-default-class": "true"});
    }
    sc
}

fn classes() -> Vec<Value> {
    vec![
        class_json("gp3", "WaitForFirstConsumer", None, true),
        class_json(
            "gp3-cn-immediate",
            "Immediate",
            Some(
                json!([{"matchLabelExpressions": [{"key": "topology.kubernetes.io/zone",
                "values": ["cn-north-1a", "cn-north-1b"]}]}]),
            ),
            false,
        ),
        class_json("anywhere", "Immediate", None, false),
        class_json("io2", "WaitForFirstConsumer", None, false),
        class_json("sc1", "WaitForFirstConsumer", None, false),
    ]
}

/// 100 policies, 5 of which govern personal data (all check storage).
fn policies() -> Vec<ResidencyPolicy> {
    (0..100usize)
        .map(|i| {
            let class = if i % 20 == 0 { "personal" } else { "health" };
            let action = ["Deny", "Warn", "Audit"][i % 3];
            serde_json::from_value(json!({
                "apiVersion": "residencyguard.io/v1alpha1", "kind": "ResidencyPolicy",
                "metadata": {"name": format!("policy-{i:03}")},
                "spec": {"dataClasses": [class], "action": action}
            }))
            .expect("valid policy")
        })
        .collect()
}

fn snapshot() -> Snapshot {
    let base = Snapshot::new(Catalogue::builtin().clone(), AddressSpace::builtin());
    let mut b = SnapshotBuilder::new(base, now());
    for p in policies() {
        b.policy(&p).expect("compiles");
    }
    b.namespace(NS, Default::default());
    for i in 0..OBJECTS {
        let pv: PersistentVolume = serde_json::from_value(pv_json(i)).expect("PV");
        b.persistent_volume(VolumeRecord::from_k8s(&pv));
        let pvc: PersistentVolumeClaim =
            serde_json::from_value(pvc_json(i, i % 10 != 9)).expect("PVC");
        b.persistent_volume_claim(ClaimRecord::from_k8s(&pvc));
    }
    for sc in classes() {
        let sc: StorageClass = serde_json::from_value(sc).expect("StorageClass");
        b.storage_class(ClassRecord::from_k8s(&sc));
    }
    b.build()
}

/// The benchmarked Deployment, pinned to Beijing, with `volumes`.
fn workload(volumes: Value) -> Workload {
    let doc = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "api", "namespace": NS},
        "spec": {"template": {
            "metadata": {"labels": {"app": "api", "residencyguard.io/data-class": "personal"}},
            "spec": {"nodeSelector": {"topology.kubernetes.io/region": "cn-north-1"},
                "containers": [{"name": "api", "image": "x"}], "volumes": volumes}}}
    });
    let bytes = serde_json::to_vec(&doc).expect("serialisable");
    Workload::from_json_slice(&bytes, "default").expect("workload")
}

/// A claim bound to a mainland PV, a claim not bound yet (WaitForFirstConsumer
/// default), an ephemeral volume on an Immediate class limited to mainland
/// zones.
fn three_compliant() -> Value {
    json!([
        {"name": "data", "persistentVolumeClaim": {"claimName": "data-1234"}},
        {"name": "journal", "persistentVolumeClaim": {"claimName": "data-19"}},
        {"name": "scratch", "ephemeral": {"volumeClaimTemplate": {"spec": {
            "storageClassName": "gp3-cn-immediate", "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": "1Gi"}}}}}},
        {"name": "config", "configMap": {"name": "api"}}
    ])
}

/// A claim nobody knows, an Immediate class anywhere, an NFS server abroad.
fn three_violating() -> Value {
    json!([
        {"name": "data", "persistentVolumeClaim": {"claimName": "missing"}},
        {"name": "scratch", "ephemeral": {"volumeClaimTemplate": {"spec": {
            "storageClassName": "anywhere", "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": "1Gi"}}}}}},
        {"name": "share", "nfs": {"server": "8.8.8.8", "path": "/export"}}
    ])
}

fn storage_violations(snap: &Snapshot, w: &Workload) -> usize {
    evaluate(snap, w, now())
        .expect("classifiable")
        .violations()
        .filter(|(_, v)| v.code.is_storage())
        .count()
}

/// Median nanoseconds per `evaluate` over `rounds` timed batches.
fn median_ns(snap: &Snapshot, w: &Workload, rounds: usize, batch: u32) -> f64 {
    let t = now();
    let mut samples: Vec<f64> = (0..rounds)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..batch {
                let _ = black_box(evaluate(black_box(snap), black_box(w), t));
            }
            start.elapsed().as_nanos() as f64 / f64::from(batch)
        })
        .collect();
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

fn print_footprints() {
    let pvs: Vec<PersistentVolume> = (0..OBJECTS)
        .map(|i| serde_json::from_value(pv_json(i)).expect("PV"))
        .collect();
    let pvcs: Vec<PersistentVolumeClaim> = (0..OBJECTS)
        .map(|i| serde_json::from_value(pvc_json(i, true)).expect("PVC"))
        .collect();
    // What a watch keeps: one shared projection per object (state::Item).
    let (projected_pvs, pv_bytes) = retained(|| {
        pvs.iter()
            .map(|pv| Arc::new(VolumeRecord::from_k8s(pv)))
            .collect::<Vec<_>>()
    });
    let (projected_pvcs, pvc_bytes) = retained(|| {
        pvcs.iter()
            .map(|c| Arc::new(ClaimRecord::from_k8s(c)))
            .collect::<Vec<_>>()
    });
    let full_pv = serde_json::to_vec(&pv_json(1)).map_or(0, |v| v.len());
    let full_pvc = serde_json::to_vec(&pvc_json(1, true)).map_or(0, |v| v.len());
    println!(
        "footprint/watch projection: {:.0} bytes per PV, {:.0} bytes per PVC ({OBJECTS} each; \
         the objects are {full_pv} and {full_pvc} bytes of JSON)",
        pv_bytes as f64 / OBJECTS as f64,
        pvc_bytes as f64 / OBJECTS as f64,
    );
    // What a snapshot adds: locations and the index; the records are the
    // projection's, shared (as `state` builds it).
    let volumes: Vec<Arc<VolumeRecord>> = projected_pvs.clone();
    let claims: Vec<Arc<ClaimRecord>> = projected_pvcs.clone();
    let mut snap = Snapshot::new(Catalogue::builtin().clone(), AddressSpace::default());
    let ((), volume_index) =
        retained(|| snap.set_storage(volumes, Vec::<Arc<ClaimRecord>>::new(), Vec::new()));
    let mut snap2 = Snapshot::new(Catalogue::builtin().clone(), AddressSpace::default());
    let ((), claim_index) =
        retained(|| snap2.set_storage(Vec::<Arc<VolumeRecord>>::new(), claims, Vec::new()));
    println!(
        "footprint/snapshot storage index: {:.0} bytes per PV (location + index; the record is \
         shared with the projection), {:.0} bytes per PVC (index; record shared)",
        volume_index as f64 / OBJECTS as f64,
        claim_index as f64 / OBJECTS as f64,
    );
}

fn print_added_cost(snap: &Snapshot) {
    let none = workload(json!([{"name": "config", "configMap": {"name": "api"}}]));
    let three = workload(three_compliant());
    let bad = workload(three_violating());
    // Warm up, then interleave so drift hits both alike.
    let _ = median_ns(snap, &none, 5, 2_000);
    let _ = median_ns(snap, &three, 5, 2_000);
    let mut base = Vec::new();
    let mut with = Vec::new();
    for _ in 0..7 {
        base.push(median_ns(snap, &none, 15, 2_000));
        with.push(median_ns(snap, &three, 15, 2_000));
    }
    base.sort_by(f64::total_cmp);
    with.sort_by(f64::total_cmp);
    let (b, w) = (base[base.len() / 2], with[with.len() / 2]);
    let v = median_ns(snap, &bad, 15, 500);
    println!(
        "storage/added cost per verdict, 3 compliant volumes: {:.2} µs ({:.2} µs → {:.2} µs; target ≤ 5 µs); \
         3 violating volumes under 5 policies: {:.2} µs per verdict",
        (w - b) / 1e3,
        b / 1e3,
        w / 1e3,
        v / 1e3
    );
}

fn main() {
    let snap = snapshot();
    let none = workload(json!([{"name": "config", "configMap": {"name": "api"}}]));
    let three = workload(three_compliant());
    let bad = workload(three_violating());
    assert_eq!(storage_violations(&snap, &none), 0);
    assert_eq!(
        storage_violations(&snap, &three),
        0,
        "the compliant volumes"
    );
    // 3 faults under each of the 5 governing policies.
    assert_eq!(storage_violations(&snap, &bad), 15, "the violating volumes");
    print_footprints();
    print_added_cost(&snap);

    let mut c = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    let mut g = c.benchmark_group("storage");
    let t = now();
    for (id, w) in [
        ("no_volumes", &none),
        ("3_volumes_compliant", &three),
        ("3_volumes_violating", &bad),
    ] {
        g.bench_function(id, |b| {
            b.iter(|| evaluate(black_box(&snap), black_box(w), t))
        });
    }
    g.finish();
    c.final_summary();
}
