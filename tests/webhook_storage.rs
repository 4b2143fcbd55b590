//! The webhook judges a workload's volumes at admission with what the
//! snapshot knows of claims, PVs and StorageClasses; a denial on storage
//! is confirmed against the API server's storage objects (a claim created
//! in the same `kubectl apply`); storage objects themselves are not
//! reviewed (see also tests/chart.rs `storage_objects_are_watched_not_reviewed`).

use std::collections::BTreeMap;
use std::path::PathBuf;

use jiff::Timestamp;
use residency_guard::cli::load_inputs;
use residency_guard::engine::Lang;
use residency_guard::engine::{
    AddressSpace, Catalogue, ClaimRecord, LiveStorage, NamespaceFacts, Snapshot, VolumeRecord,
    Workload,
};
use residency_guard::webhook::admission::{Endpoint, Handled, handle};
use serde_json::{Value, json};

const NOW: &str = "2026-11-23T00:00:00Z";

fn now() -> Timestamp {
    NOW.parse().unwrap()
}

type Loaded = (Snapshot, BTreeMap<String, Vec<Workload>>);

/// `examples/cluster` plus `extra` manifests, loaded as `check` loads them.
fn load(extra: &str) -> Loaded {
    let dir = tempfile::tempdir().unwrap();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/cluster");
    let mut files = vec![root];
    if !extra.is_empty() {
        let f = dir.path().join("extra.yaml");
        std::fs::write(&f, extra).unwrap();
        files.push(f);
    }
    let base = Snapshot::new(Catalogue::builtin().clone(), AddressSpace::builtin());
    let loaded = load_inputs(&files, base, "default", now()).unwrap();
    let mut workloads: BTreeMap<String, Vec<Workload>> = BTreeMap::new();
    for (_, w) in loaded.workloads {
        workloads.entry(w.namespace.clone()).or_default().push(w);
    }
    (loaded.snapshot, workloads)
}

fn review(object: &Value) -> Vec<u8> {
    let api_version = object["apiVersion"].as_str().unwrap();
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": "u-1",
            "kind": {"group": group, "version": version, "kind": object["kind"]},
            "name": object["metadata"]["name"], "namespace": object["metadata"]["namespace"],
            "operation": "CREATE", "userInfo": {"username": "alice"},
            "object": object,
        }
    }))
    .unwrap()
}

fn judge(loaded: &Loaded, object: &Value) -> Handled {
    handle(
        &review(object),
        Endpoint::Workloads,
        &loaded.0,
        &loaded.1,
        Lang::En,
        now(),
    )
    .unwrap()
}

/// A StatefulSet `vault` in clinic, pinned to Beijing, egress in-cluster,
/// its claim template `data` on the WaitForFirstConsumer default class.
fn vault() -> Value {
    json!({"apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": "vault", "namespace": "clinic"},
        "spec": {"serviceName": "vault", "selector": {"matchLabels": {"app": "archive"}},
            "volumeClaimTemplates": [{"metadata": {"name": "data"},
                "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}],
            "template": {"metadata": {"labels": {"app": "archive", "residencyguard.io/data-class": "health"}},
                "spec": {"nodeSelector": {"topology.kubernetes.io/region": "cn-north-1"},
                    "containers": [{"name": "c", "image": "x"}]}}}})
}

/// Its first claim, bound to `pv` in `zone`.
fn bound_claim(zone: &str) -> String {
    format!(
        "apiVersion: v1\nkind: PersistentVolume\nmetadata: {{name: pv-vault-0}}\nspec:\n  capacity: {{storage: 1Gi}}\n  accessModes: [ReadWriteOnce]\n  csi: {{driver: ebs.csi.aws.com, volumeHandle: v}}\n  nodeAffinity:\n    required:\n      nodeSelectorTerms:\n      - matchExpressions:\n        - {{key: topology.ebs.csi.aws.com/zone, operator: In, values: [{zone}]}}\n---\napiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {{name: data-vault-0, namespace: clinic}}\nspec:\n  accessModes: [ReadWriteOnce]\n  volumeName: pv-vault-0\n  resources: {{requests: {{storage: 1Gi}}}}\n"
    )
}

#[test]
fn a_statefulset_whose_claim_is_bound_in_hong_kong_is_denied_with_the_message() {
    let loaded = load(&bound_claim("ap-east-1a"));
    let h = judge(&loaded, &vault());
    let r = &h.review.response;
    assert!(!r.allowed);
    let status = r.status.as_ref().unwrap();
    assert_eq!(status.code, 403);
    for part in [
        "StatefulSet clinic/vault",
        "claim clinic/data-vault-0",
        "PersistentVolume pv-vault-0",
        "Hong Kong",
        "ap-east-1a",
        "Fix:",
    ] {
        assert!(
            status.message.contains(part),
            "{part:?}: {}",
            status.message
        );
    }
    // The denial rests on storage: the claim and its PV are read live
    // before it stands.
    let confirm = h.decision.confirm.as_ref().unwrap();
    assert!(confirm.storage && !confirm.network_policies);
}

#[test]
fn the_same_statefulset_bound_in_beijing_is_admitted() {
    let loaded = load(&bound_claim("cn-north-1a"));
    let h = judge(&loaded, &vault());
    assert!(h.review.response.allowed, "{:?}", h.review.response.status);
    assert_eq!(h.decision.result, "judged");
}

#[test]
fn a_claim_created_in_the_same_apply_is_read_live_and_the_denial_overturned() {
    // The snapshot has not seen the claim yet.
    let loaded = load("");
    let mut w = vault();
    w["spec"]["template"]["spec"]["volumes"] =
        json!([{"name": "scratch", "persistentVolumeClaim": {"claimName": "fresh"}}]);
    let h = judge(&loaded, &w);
    assert!(!h.review.response.allowed);
    let message = &h.review.response.status.as_ref().unwrap().message;
    assert!(message.contains("PersistentVolumeClaim clinic/fresh, which is not known"));
    assert!(h.decision.confirm.as_ref().unwrap().storage);

    // What the API server says now: the claim exists, bound in Beijing.
    let pv: k8s_openapi::api::core::v1::PersistentVolume = serde_json::from_value(json!({
        "metadata": {"name": "pv-fresh", "labels": {"topology.kubernetes.io/zone": "cn-north-1b"}},
        "spec": {"csi": {"driver": "ebs.csi.aws.com", "volumeHandle": "v"}}}))
    .unwrap();
    let claim = ClaimRecord {
        namespace: "clinic".into(),
        name: "fresh".into(),
        storage_class: Some("cn-gp3".into()),
        volume_name: Some("pv-fresh".into()),
        class_label: None,
    };
    let snapshot = &loaded.0;
    let facts = NamespaceFacts {
        labels: snapshot.namespaces.get("clinic").cloned(),
        network_policies: None,
        storage: Some(LiveStorage {
            claims: vec![claim],
            volumes: vec![VolumeRecord::from_k8s(&pv)],
            classes: snapshot
                .storage()
                .classes()
                .map(|c| c.record.clone())
                .collect(),
        }),
    };
    let focused = snapshot.focused_on("clinic", &facts);
    let again = handle(
        &review(&w),
        Endpoint::Workloads,
        &focused,
        &loaded.1,
        Lang::En,
        now(),
    )
    .unwrap();
    assert!(
        again.review.response.allowed,
        "{:?}",
        again.review.response.status
    );
}

#[test]
fn an_immediate_class_without_topology_is_caught_at_admission() {
    // `fast` (Immediate, no allowedTopologies) from the example.
    let loaded = load("");
    let mut w = vault();
    w["spec"]["volumeClaimTemplates"][0]["spec"]["storageClassName"] = json!("fast");
    let h = judge(&loaded, &w);
    assert!(!h.review.response.allowed);
    let message = &h.review.response.status.as_ref().unwrap().message;
    assert!(
        message.contains("StorageClass fast, which binds Immediately and has no allowedTopologies"),
        "{message}"
    );
    assert!(message.contains("WaitForFirstConsumer"), "{message}");
}

#[test]
fn storage_objects_sent_to_the_webhook_are_not_judged() {
    let loaded = load("");
    for object in [
        json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": "c", "namespace": "clinic",
                "labels": {"residencyguard.io/data-class": "health"}},
            "spec": {"storageClassName": "fast"}}),
        json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
            "metadata": {"name": "anywhere"}, "provisioner": "x", "volumeBindingMode": "Immediate"}),
    ] {
        let h = judge(&loaded, &object);
        assert!(h.review.response.allowed, "{object}");
        assert_eq!(h.decision.result, "skipped", "{object}");
    }
}

#[test]
fn an_admitted_statefulset_whose_claims_are_unseen_is_confirmed_live() {
    // No claim data-vault-N in the snapshot: it may have been applied with
    // the StatefulSet, bound abroad. The answer stands only after the
    // namespace's claims are read.
    let loaded = load("");
    let h = judge(&loaded, &vault());
    assert!(h.review.response.allowed);
    let confirm = h.decision.confirm.as_ref().unwrap();
    assert!(confirm.storage);
    assert_eq!(confirm.why.as_str(), "storage_unseen");
    // Once its claim is known, nothing more is read.
    let loaded = load(&bound_claim("cn-north-1a"));
    let h = judge(&loaded, &vault());
    assert!(h.review.response.allowed);
    assert!(h.decision.confirm.is_none(), "{:?}", h.decision.confirm);
}
