//! Storage residency (issue #15): one table case per rule of
//! docs/semantics.md "Storage", through the engine's public interface
//! (SnapshotBuilder fed k8s objects, `evaluate`).

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Node, PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::storage::v1::StorageClass;
use residency_guard::api::ResidencyPolicy;
use residency_guard::engine::{
    AddressSpace, Catalogue, ClaimRecord, ClassRecord, Code, Evidence, Lang, NodeInfo, Snapshot,
    SnapshotBuilder, StoragePosture, Verdict, VolumeRecord, Workload, evaluate,
    evaluate_keeping_storage_evidence, storage_evidence,
};
use serde_json::{Value, json};

const NOW: &str = "2026-11-23T00:00:00Z";
const FOREIGN_IP: &str = "8.8.8.8";
const MAINLAND_IP: &str = "114.114.114.114";

fn now() -> Timestamp {
    NOW.parse().unwrap()
}

fn policy(storage_mode: Option<&str>) -> ResidencyPolicy {
    let mut spec = json!({"dataClasses": ["personal"], "action": "Deny"});
    if let Some(mode) = storage_mode {
        spec["storage"] = json!({"mode": mode});
    }
    serde_json::from_value(json!({
        "apiVersion": "residencyguard.io/v1alpha1", "kind": "ResidencyPolicy",
        "metadata": {"name": "pipl"}, "spec": spec,
    }))
    .unwrap()
}

/// A snapshot of `objects` (PVs, PVCs, StorageClasses, Nodes) under one
/// policy that checks storage (`mode`: None = the default).
fn snapshot_with(objects: &[Value], mode: Option<&str>) -> Snapshot {
    let base = Snapshot::new(Catalogue::builtin().clone(), AddressSpace::builtin());
    let mut b = SnapshotBuilder::new(base, now());
    b.policy(&policy(mode)).unwrap();
    for o in objects {
        match o["kind"].as_str().unwrap() {
            "PersistentVolume" => b.persistent_volume(VolumeRecord::from_k8s(
                &serde_json::from_value::<PersistentVolume>(o.clone()).unwrap(),
            )),
            "PersistentVolumeClaim" => b.persistent_volume_claim(ClaimRecord::from_k8s(
                &serde_json::from_value::<PersistentVolumeClaim>(o.clone()).unwrap(),
            )),
            "StorageClass" => b.storage_class(ClassRecord::from_k8s(
                &serde_json::from_value::<StorageClass>(o.clone()).unwrap(),
            )),
            "Node" => b.node(NodeInfo::from_node(
                &serde_json::from_value::<Node>(o.clone()).unwrap(),
            )),
            k => panic!("{k}"),
        }
    }
    b.build()
}

fn snapshot(objects: &[Value]) -> Snapshot {
    snapshot_with(objects, None)
}

fn pv(name: &str, labels: Value, spec: Value) -> Value {
    let mut spec = spec;
    spec["capacity"] = json!({"storage": "1Gi"});
    spec["accessModes"] = json!(["ReadWriteOnce"]);
    json!({"apiVersion": "v1", "kind": "PersistentVolume",
        "metadata": {"name": name, "labels": labels}, "spec": spec})
}

fn zone_affinity(key: &str, zones: &[&str]) -> Value {
    json!({"nodeAffinity": {"required": {"nodeSelectorTerms": [
        {"matchExpressions": [{"key": key, "operator": "In", "values": zones}]}]}},
        "csi": {"driver": "ebs.csi.aws.com", "volumeHandle": "vol-1"}})
}

fn pvc(name: &str, class: Option<&str>, volume: Option<&str>) -> Value {
    let mut spec = json!({"accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": "1Gi"}}});
    if let Some(c) = class {
        spec["storageClassName"] = json!(c);
    }
    if let Some(v) = volume {
        spec["volumeName"] = json!(v);
    }
    json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": name, "namespace": "pay"}, "spec": spec})
}

fn class(name: &str, mode: &str, topologies: Value, default: bool) -> Value {
    let mut sc = json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
        "metadata": {"name": name}, "provisioner": "ebs.csi.aws.com",
        "volumeBindingMode": mode, "allowedTopologies": topologies});
    if default {
        sc["metadata"]["annotations"] =
            json!({"storageclass.kubernetes.io/is-default-class": "true"});
    }
    sc
}

fn deployment(volumes: Value) -> Workload {
    Workload::from_value(
        &json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "api", "namespace": "pay"},
            "spec": {"template": {
                "metadata": {"labels": {"residencyguard.io/data-class": "personal"}},
                "spec": {"nodeSelector": {"topology.kubernetes.io/region": "cn-north-1"},
                    "containers": [{"name": "c", "image": "x"}], "volumes": volumes}}}}),
        "default",
    )
    .unwrap()
}

fn claim_volume(claim: &str) -> Value {
    json!([{"name": "data", "persistentVolumeClaim": {"claimName": claim}}])
}

fn statefulset(class: Option<&str>) -> Workload {
    let mut tpl = json!({"metadata": {"name": "data"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}});
    if let Some(c) = class {
        tpl["spec"]["storageClassName"] = json!(c);
    }
    Workload::from_value(
        &json!({"apiVersion": "apps/v1", "kind": "StatefulSet",
            "metadata": {"name": "db", "namespace": "pay"},
            "spec": {"serviceName": "db", "volumeClaimTemplates": [tpl],
                "template": {
                "metadata": {"labels": {"residencyguard.io/data-class": "personal"}},
                "spec": {"nodeSelector": {"topology.kubernetes.io/region": "cn-north-1"},
                    "containers": [{"name": "c", "image": "x",
                        "volumeMounts": [{"name": "data", "mountPath": "/d"}]}]}}}}),
        "default",
    )
    .unwrap()
}

fn judge(snap: &Snapshot, w: &Workload) -> Verdict {
    evaluate(snap, w, now()).unwrap()
}

/// The storage violations: (code, field, evidence reason).
fn storage(v: &Verdict) -> Vec<(Code, String, &'static str)> {
    v.violations()
        .filter(|(_, v)| v.code.is_storage())
        .map(|(_, v)| {
            let reason = match &v.evidence {
                Evidence::Storage(e) => e.reason,
                other => panic!("{other:?}"),
            };
            (v.code, v.field.clone(), reason)
        })
        .collect()
}

fn only(v: &Verdict) -> (Code, String, &'static str) {
    let s = storage(v);
    assert_eq!(s.len(), 1, "{s:?}");
    s.into_iter().next().unwrap()
}

fn message(v: &Verdict, lang: Lang) -> String {
    v.violations()
        .find(|(_, v)| v.code.is_storage())
        .map(|(_, v)| v.message.get(lang))
        .unwrap()
}

const CLAIM_FIELD: &str = "spec.template.spec.volumes[0].persistentVolumeClaim.claimName";

// --- bound claims ------------------------------------------------------

#[test]
fn claim_bound_to_a_pv_in_a_hong_kong_zone_is_outside_and_says_so() {
    let snap = snapshot(&[
        pv(
            "pv-hk",
            json!({}),
            zone_affinity("topology.ebs.csi.aws.com/zone", &["ap-east-1a"]),
        ),
        pvc("data", Some("gp3"), Some("pv-hk")),
    ]);
    let v = judge(&snap, &deployment(claim_volume("data")));
    assert!(v.denied());
    assert_eq!(
        only(&v),
        (
            Code::VolumeOutsideMainland,
            CLAIM_FIELD.into(),
            "boundOutside"
        )
    );
    let en = message(&v, Lang::En);
    for part in [
        "Deployment pay/api",
        "volume data (claim pay/data)",
        "PersistentVolume pv-hk",
        "Hong Kong",
        "topology.ebs.csi.aws.com/zone=ap-east-1a",
        "region ap-east-1",
        "policy pipl",
        "Fix:",
        "cn-north-1a",
    ] {
        assert!(en.contains(part), "{part:?} not in {en}");
    }
    let zh = message(&v, Lang::ZhCn);
    for part in ["卷 data（声明 pay/data）", "中国香港", "pv-hk", "修复："] {
        assert!(zh.contains(part), "{part:?} not in {zh}");
    }
}

#[test]
fn claim_bound_to_a_mainland_pv_passes_whatever_key_names_the_zone() {
    for (key, zone) in [
        ("topology.kubernetes.io/zone", "cn-north-1a"),
        ("topology.ebs.csi.aws.com/zone", "cn-northwest-1b"),
        (
            "topology.diskplugin.csi.alibabacloud.com/zone",
            "cn-beijing-h",
        ),
        ("topology.disk.csi.azure.com/zone", "chinanorth3-2"),
        ("topology.com.tencent.cloud.csi.cbs/zone", "ap-guangzhou-3"),
        ("topology.kubernetes.io/region", "cn-shanghai"),
    ] {
        let snap = snapshot(&[
            pv("pv-cn", json!({}), zone_affinity(key, &[zone])),
            pvc("data", Some("gp3"), Some("pv-cn")),
        ]);
        let v = judge(&snap, &deployment(claim_volume("data")));
        assert!(storage(&v).is_empty(), "{key}={zone}: {:?}", storage(&v));
    }
}

#[test]
fn pv_labels_place_it_and_a_foreign_label_overrides_mainland_affinity() {
    let labelled = pv(
        "pv",
        json!({"topology.kubernetes.io/region": "cn-north-1", "topology.kubernetes.io/zone": "cn-north-1b"}),
        json!({"hostPath": {"path": "/x"}}),
    );
    let snap = snapshot(&[labelled, pvc("data", Some("gp3"), Some("pv"))]);
    assert!(storage(&judge(&snap, &deployment(claim_volume("data")))).is_empty());

    // Relabelled abroad while its affinity still says mainland: the
    // labels and the affinity both describe the volume; one abroad is
    // enough.
    let relabelled = pv(
        "pv",
        json!({"topology.kubernetes.io/zone": "ap-east-1a"}),
        zone_affinity(
            "topology.kubernetes.io/region",
            &["cn-north-1", "ap-east-1"],
        ),
    );
    let snap = snapshot(&[relabelled, pvc("data", Some("gp3"), Some("pv"))]);
    let v = judge(&snap, &deployment(claim_volume("data")));
    assert_eq!(only(&v).2, "boundOutside");
}

#[test]
fn multi_zone_labels_count_every_zone() {
    let regional = pv(
        "pv",
        json!({"topology.kubernetes.io/zone": "cn-north-1a__ap-east-1a"}),
        json!({"hostPath": {"path": "/x"}}),
    );
    let snap = snapshot(&[regional, pvc("data", Some("gp3"), Some("pv"))]);
    let v = judge(&snap, &deployment(claim_volume("data")));
    assert_eq!(only(&v).2, "boundOutside");
}

#[test]
fn a_pv_whose_location_cannot_be_established_fails_closed_with_the_reason() {
    for (labels, spec, reason) in [
        (
            json!({}),
            json!({"hostPath": {"path": "/x"}}),
            "neither its node affinity nor its labels",
        ),
        (
            json!({}),
            zone_affinity("topology.kubernetes.io/zone", &["cn-north-7a"]),
            "topology.kubernetes.io/zone=cn-north-7a is not in the jurisdiction catalogue",
        ),
        (
            json!({"topology.kubernetes.io/region": "dc-onprem-1"}),
            json!({"hostPath": {"path": "/x"}}),
            "topology.kubernetes.io/region=dc-onprem-1",
        ),
        (
            json!({}),
            // Only a NotIn: every other place is allowed.
            json!({"nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                {"key": "topology.kubernetes.io/region", "operator": "NotIn", "values": ["ap-east-1"]}]}]}},
                "hostPath": {"path": "/x"}}),
            "neither its node affinity nor its labels",
        ),
    ] {
        let snap = snapshot(&[pv("pv", labels, spec), pvc("data", Some("gp3"), Some("pv"))]);
        let v = judge(&snap, &deployment(claim_volume("data")));
        assert_eq!(
            only(&v),
            (
                Code::VolumeOutsideMainland,
                CLAIM_FIELD.into(),
                "volumeUnknown"
            )
        );
        let en = message(&v, Lang::En);
        assert!(en.contains(reason), "{reason:?} not in {en}");
    }
    // Bound to a PV nobody knows of.
    let snap = snapshot(&[pvc("data", Some("gp3"), Some("pv-gone"))]);
    let v = judge(&snap, &deployment(claim_volume("data")));
    assert_eq!(only(&v).2, "volumeUnknown");
    assert!(message(&v, Lang::En).contains("pv-gone, which is not known"));
}

#[test]
fn a_local_pv_is_where_its_node_is() {
    let node = |name: &str, region: &str| {
        json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name,
            "labels": {"topology.kubernetes.io/region": region}}})
    };
    let local = |host: &str| {
        json!({"local": {"path": "/mnt/disk"}, "nodeAffinity": {"required": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In", "values": [host]}]}]}}})
    };
    let objects = |host: &str| {
        vec![
            node("bj-1", "cn-north-1"),
            node("hk-1", "ap-east-1"),
            pv("pv", json!({}), local(host)),
            pvc("data", Some("local"), Some("pv")),
        ]
    };
    let w = deployment(claim_volume("data"));
    assert!(storage(&judge(&snapshot(&objects("bj-1")), &w)).is_empty());
    assert_eq!(
        only(&judge(&snapshot(&objects("hk-1")), &w)).2,
        "boundOutside"
    );
    let v = judge(&snapshot(&objects("gone-1")), &w);
    assert_eq!(only(&v).2, "volumeUnknown");
    assert!(message(&v, Lang::En).contains("node gone-1"));
}

// --- claims not bound yet ----------------------------------------------

#[test]
fn an_unbound_claim_is_judged_by_its_storage_class() {
    let mainland_topology = json!([{"matchLabelExpressions": [
        {"key": "topology.kubernetes.io/zone", "values": ["cn-north-1a", "cn-north-1b"]}]}]);
    let mixed_topology = json!([{"matchLabelExpressions": [
        {"key": "topology.kubernetes.io/region", "values": ["cn-north-1", "ap-east-1"]}]}]);
    let cases = [
        (
            class("sc", "WaitForFirstConsumer", json!(null), false),
            None,
        ),
        (
            class("sc", "Immediate", json!(null), false),
            Some("provisionedAnywhere"),
        ),
        (class("sc", "Immediate", mainland_topology, false), None),
        (
            class("sc", "Immediate", mixed_topology, false),
            Some("topologyOutside"),
        ),
    ];
    let w = deployment(claim_volume("data"));
    for (sc, expected) in cases {
        let snap = snapshot(&[sc.clone(), pvc("data", Some("sc"), None)]);
        let v = judge(&snap, &w);
        match expected {
            None => assert!(storage(&v).is_empty(), "{sc}: {:?}", storage(&v)),
            Some(reason) => {
                assert_eq!(
                    only(&v),
                    (Code::VolumeNotGuaranteed, CLAIM_FIELD.into(), reason),
                    "{sc}"
                );
                let en = message(&v, Lang::En);
                assert!(en.contains("StorageClass sc"), "{en}");
                assert!(en.contains("WaitForFirstConsumer"), "{en}");
                assert!(en.contains("allowedTopologies"), "{en}");
                assert!(!message(&v, Lang::ZhCn).is_empty());
            }
        }
    }
}

#[test]
fn an_omitted_class_is_the_default_and_an_empty_one_a_pre_provisioned_pv() {
    let w = deployment(claim_volume("data"));
    // Omitted, with an Immediate default: named as the default.
    let snap = snapshot(&[
        class("std", "Immediate", json!(null), true),
        class("wffc", "WaitForFirstConsumer", json!(null), false),
        pvc("data", None, None),
    ]);
    let v = judge(&snap, &w);
    assert_eq!(only(&v).2, "provisionedAnywhere");
    assert!(message(&v, Lang::En).contains("StorageClass std (the default)"));
    // Omitted, with a WaitForFirstConsumer default: covered by placement.
    let snap = snapshot(&[
        class("wffc", "WaitForFirstConsumer", json!(null), true),
        pvc("data", None, None),
    ]);
    assert!(storage(&judge(&snap, &w)).is_empty());
    // Omitted, no default class at all.
    let snap = snapshot(&[
        class("wffc", "WaitForFirstConsumer", json!(null), false),
        pvc("data", None, None),
    ]);
    assert_eq!(only(&judge(&snap, &w)).2, "noDefaultClass");
    // "": whichever pre-provisioned PV fits, even with a default class.
    let snap = snapshot(&[
        class("wffc", "WaitForFirstConsumer", json!(null), true),
        pvc("data", Some(""), None),
    ]);
    assert_eq!(only(&judge(&snap, &w)).2, "preProvisioned");
    // A class nobody knows.
    let snap = snapshot(&[pvc("data", Some("fast"), None)]);
    assert_eq!(only(&judge(&snap, &w)).2, "classUnknown");
    // A claim nobody knows.
    let snap = snapshot(&[]);
    let v = judge(&snap, &w);
    assert_eq!(only(&v).2, "claimNotFound");
    assert!(message(&v, Lang::En).contains("PersistentVolumeClaim pay/data"));
}

#[test]
fn statefulset_claims_made_and_to_be_made_are_both_judged() {
    let hk = pv(
        "pv-hk",
        json!({"topology.kubernetes.io/zone": "ap-east-1a"}),
        json!({"hostPath": {"path": "/x"}}),
    );
    let made = |i: usize| pvc(&format!("data-db-{i}"), Some("wffc"), Some("pv-hk"));
    let mut objects = vec![
        hk,
        class("wffc", "WaitForFirstConsumer", json!(null), false),
        class("now", "Immediate", json!(null), false),
        made(0),
        made(1),
        // Not the template's: another StatefulSet, another template.
        pvc("data-dbx-0", Some("wffc"), Some("pv-hk")),
        pvc("logs-db-0", Some("wffc"), Some("pv-hk")),
    ];
    let v = judge(&snapshot(&objects), &statefulset(Some("wffc")));
    assert_eq!(
        only(&v),
        (
            Code::VolumeOutsideMainland,
            "spec.volumeClaimTemplates[0]".into(),
            "boundOutside"
        )
    );
    let more = v
        .violations()
        .find_map(|(_, v)| match &v.evidence {
            Evidence::Storage(e) => Some(e.more_claims),
            _ => None,
        })
        .unwrap();
    assert_eq!(more, 1);
    assert!(message(&v, Lang::En).contains("claim pay/data-db-0"));

    // No claims yet: the template's class decides.
    objects.retain(|o| {
        !o["metadata"]["name"]
            .as_str()
            .unwrap()
            .starts_with("data-db-")
    });
    let snap = snapshot(&objects);
    assert!(storage(&judge(&snap, &statefulset(Some("wffc")))).is_empty());
    assert_eq!(
        only(&judge(&snap, &statefulset(Some("now")))),
        (
            Code::VolumeNotGuaranteed,
            "spec.volumeClaimTemplates[0].spec.storageClassName".into(),
            "provisionedAnywhere"
        )
    );
}

#[test]
fn storage_evidence_records_every_claim_a_statefulset_made_with_its_own_finding() {
    // Two claims in Hong Kong, one in Beijing: the verdict reports the
    // first fault (and counts the other), the evidence every claim.
    let objects = vec![
        pv(
            "pv-hk-0",
            json!({"topology.kubernetes.io/zone": "ap-east-1a"}),
            json!({"hostPath": {"path": "/x"}}),
        ),
        pv(
            "pv-cn-1",
            json!({"topology.kubernetes.io/zone": "cn-north-1a"}),
            json!({"hostPath": {"path": "/x"}}),
        ),
        pv(
            "pv-hk-2",
            json!({"topology.kubernetes.io/zone": "ap-east-1b"}),
            json!({"hostPath": {"path": "/x"}}),
        ),
        class("wffc", "WaitForFirstConsumer", json!(null), false),
        pvc("data-db-0", Some("wffc"), Some("pv-hk-0")),
        pvc("data-db-1", Some("wffc"), Some("pv-cn-1")),
        pvc("data-db-2", Some("wffc"), Some("pv-hk-2")),
    ];
    let snap = snapshot(&objects);
    let w = statefulset(Some("wffc"));
    let v = judge(&snap, &w);
    assert_eq!(storage(&v).len(), 1);
    let evidence = storage_evidence(&w, &snap);
    /// (claim, PersistentVolume, posture, finding reasons)
    type Seen<'a> = (
        Option<&'a str>,
        Option<&'a str>,
        StoragePosture,
        Vec<&'a str>,
    );
    let seen: Vec<Seen> = evidence
        .iter()
        .map(|e| {
            (
                e.claim.as_deref(),
                e.persistent_volume.as_deref(),
                e.posture,
                e.findings.iter().map(|f| f.reason).collect(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            (
                Some("pay/data-db-0"),
                Some("pv-hk-0"),
                StoragePosture::Outside,
                vec!["boundOutside"]
            ),
            (
                Some("pay/data-db-1"),
                Some("pv-cn-1"),
                StoragePosture::Mainland,
                vec![]
            ),
            (
                Some("pay/data-db-2"),
                Some("pv-hk-2"),
                StoragePosture::Outside,
                vec!["boundOutside"]
            ),
            // The claims to come follow the pod (WaitForFirstConsumer).
            (None, None, StoragePosture::Mainland, vec![]),
        ]
    );
    assert_eq!(evidence[3].source, "claimTemplate");
    assert_eq!(evidence[3].storage_class.as_deref(), Some("wffc"));
    // The same judgement: the reported finding is the first claim's.
    let reported = v
        .violations()
        .find_map(|(_, v)| match &v.evidence {
            Evidence::Storage(e) => Some((e.claim.clone(), e.more_claims)),
            _ => None,
        })
        .unwrap();
    assert_eq!(reported, (Some("pay/data-db-0".to_string()), 1));
}

#[test]
fn a_report_keeps_the_storage_evidence_of_the_verdicts_own_judgement() {
    // The report judges each workload's volumes once: the evidence kept
    // from the verdict is what `storage_evidence` gives, the verdict what
    // `evaluate` gives; a policy that does not check storage judges none.
    let objects = vec![
        pv(
            "pv-hk-0",
            json!({"topology.kubernetes.io/zone": "ap-east-1a"}),
            json!({"hostPath": {"path": "/x"}}),
        ),
        pv(
            "pv-cn-1",
            json!({"topology.kubernetes.io/zone": "cn-north-1a"}),
            json!({"hostPath": {"path": "/x"}}),
        ),
        class("wffc", "WaitForFirstConsumer", json!(null), false),
        class("now", "Immediate", json!(null), false),
        pvc("data-db-0", Some("wffc"), Some("pv-hk-0")),
        pvc("data-db-1", Some("wffc"), Some("pv-cn-1")),
        pvc("scratch", Some("now"), None),
    ];
    let workloads = [
        statefulset(Some("wffc")),
        statefulset(Some("now")),
        deployment(json!([
            {"name": "a", "persistentVolumeClaim": {"claimName": "scratch"}},
            {"name": "b", "persistentVolumeClaim": {"claimName": "missing"}},
            {"name": "c", "nfs": {"server": FOREIGN_IP, "path": "/x"}},
            {"name": "d", "nfs": {"server": MAINLAND_IP, "path": "/x"}},
            {"name": "e", "emptyDir": {}},
        ])),
    ];
    for mode in [None, Some("Unchecked")] {
        let snap = snapshot_with(&objects, mode);
        for w in &workloads {
            let (verdict, kept) = evaluate_keeping_storage_evidence(&snap, w, now()).unwrap();
            assert_eq!(verdict, judge(&snap, w), "{} ({mode:?})", w.name);
            match mode {
                None => {
                    let kept = kept.expect("kept when the policy checks storage");
                    assert!(!kept.is_empty(), "{}", w.name);
                    assert_eq!(kept, storage_evidence(w, &snap), "{}", w.name);
                }
                Some(_) => assert_eq!(kept, None, "{}", w.name),
            }
        }
    }
}

#[test]
fn ephemeral_volume_claim_templates_follow_the_same_rules() {
    let eph = |class: &str| {
        json!([{"name": "scratch", "ephemeral": {"volumeClaimTemplate": {"spec": {
            "storageClassName": class, "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": "1Gi"}}}}}}])
    };
    let snap = snapshot(&[
        class("now", "Immediate", json!(null), false),
        class("wffc", "WaitForFirstConsumer", json!(null), false),
    ]);
    assert!(storage(&judge(&snap, &deployment(eph("wffc")))).is_empty());
    assert_eq!(
        only(&judge(&snap, &deployment(eph("now")))),
        (
            Code::VolumeNotGuaranteed,
            "spec.template.spec.volumes[0].ephemeral.volumeClaimTemplate.spec.storageClassName"
                .into(),
            "provisionedAnywhere"
        )
    );
}

#[test]
fn node_local_volumes_need_nothing_new() {
    let v = judge(
        &snapshot(&[]),
        &deployment(json!([
            {"name": "a", "emptyDir": {}},
            {"name": "b", "configMap": {"name": "x"}},
            {"name": "c", "secret": {"secretName": "x"}},
            {"name": "d", "downwardAPI": {"items": []}},
            {"name": "e", "projected": {"sources": []}},
        ])),
    );
    assert!(v.compliant(), "{:?}", storage(&v));
}

// --- remote storage endpoints ---------------------------------------------

#[test]
fn remote_servers_are_judged_by_their_address() {
    let mainland = AddressSpace::builtin_mainland();
    assert!(mainland.contains(MAINLAND_IP.parse().unwrap()));
    assert!(!mainland.contains(FOREIGN_IP.parse().unwrap()));
    let snap = snapshot(&[]);
    let cases = [
        (
            json!({"nfs": {"server": FOREIGN_IP, "path": "/"}}),
            Some("spec.template.spec.volumes[0].nfs.server"),
        ),
        (json!({"nfs": {"server": MAINLAND_IP, "path": "/"}}), None),
        (
            json!({"iscsi": {"targetPortal": format!("{MAINLAND_IP}:3260"), "iqn": "x", "lun": 0,
                "portals": [format!("{FOREIGN_IP}:3260")]}}),
            Some("spec.template.spec.volumes[0].iscsi.portals"),
        ),
        (
            json!({"cephfs": {"monitors": [format!("{MAINLAND_IP}:6789"), format!("[2001:4860:4860::8888]:6789")]}}),
            Some("spec.template.spec.volumes[0].cephfs.monitors"),
        ),
        (
            json!({"rbd": {"monitors": [format!("{FOREIGN_IP}:6789")], "image": "x"}}),
            Some("spec.template.spec.volumes[0].rbd.monitors"),
        ),
    ];
    for (source, expected) in cases {
        let mut vol = source.clone();
        vol["name"] = json!("remote");
        let v = judge(&snap, &deployment(json!([vol])));
        match expected {
            None => assert!(storage(&v).is_empty(), "{source}"),
            Some(field) => {
                assert_eq!(
                    only(&v),
                    (
                        Code::StorageEndpointOutside,
                        field.into(),
                        "endpointOutside"
                    ),
                    "{source}"
                );
                let en = message(&v, Lang::En);
                assert!(en.contains("outside mainland-China address space"), "{en}");
                assert!(en.contains("volume remote"), "{en}");
            }
        }
    }
    // A host name: a notice, as ExternalName Services are.
    let v = judge(
        &snap,
        &deployment(json!([{"name": "remote", "nfs": {"server": "nas.example.com", "path": "/"}}])),
    );
    assert!(v.compliant());
    let notice = v
        .notices
        .iter()
        .find(|n| n.code == "StorageEndpointUnverified")
        .unwrap();
    assert!(notice.message.en.contains("nas.example.com"));
    assert!(notice.message.zh.contains("nas.example.com"));
}

#[test]
fn a_pv_backed_nfs_export_abroad_is_data_stored_abroad() {
    let nfs = pv(
        "pv-nfs",
        json!({}),
        json!({"nfs": {"server": FOREIGN_IP, "path": "/export"}}),
    );
    let snap = snapshot(&[nfs, pvc("data", Some(""), Some("pv-nfs"))]);
    let v = judge(&snap, &deployment(claim_volume("data")));
    assert_eq!(
        only(&v),
        (
            Code::StorageEndpointOutside,
            CLAIM_FIELD.into(),
            "endpointOutside"
        )
    );
    assert!(message(&v, Lang::En).contains("PersistentVolume pv-nfs's nfs.server"));
    // The same export at a mainland address passes (no topology needed).
    let nfs = pv(
        "pv-nfs",
        json!({}),
        json!({"nfs": {"server": MAINLAND_IP, "path": "/export"}}),
    );
    let snap = snapshot(&[nfs, pvc("data", Some(""), Some("pv-nfs"))]);
    assert!(storage(&judge(&snap, &deployment(claim_volume("data")))).is_empty());
}

// --- the policy's switch ------------------------------------------------

#[test]
fn storage_is_checked_by_default_and_unchecked_turns_it_off() {
    let objects = [pvc("data", Some("fast"), None)];
    let w = deployment(claim_volume("data"));
    assert_eq!(storage(&judge(&snapshot(&objects), &w)).len(), 1);
    assert_eq!(
        storage(&judge(&snapshot_with(&objects, Some("MainlandOnly")), &w)).len(),
        1
    );
    let v = judge(&snapshot_with(&objects, Some("Unchecked")), &w);
    assert!(storage(&v).is_empty());
    assert!(v.compliant());
}

#[test]
fn a_host_name_is_noted_once_however_many_volumes_name_it() {
    let v = judge(
        &snapshot(&[]),
        &deployment(json!([
            {"name": "a", "nfs": {"server": "nas.example.com", "path": "/a"}},
            {"name": "b", "nfs": {"server": "nas.example.com", "path": "/b"}},
        ])),
    );
    let notes = v
        .notices
        .iter()
        .filter(|n| n.code == "StorageEndpointUnverified")
        .count();
    // Each volume names its own field, so each is its own note.
    assert_eq!(notes, 2);
    let v = judge(
        &snapshot(&[
            pv(
                "pv-nas",
                json!({}),
                json!({"nfs": {"server": "nas.example.com", "path": "/x"}}),
            ),
            pvc("data", Some(""), Some("pv-nas")),
        ]),
        &deployment(json!([
            {"name": "a", "persistentVolumeClaim": {"claimName": "data"}},
            {"name": "b", "persistentVolumeClaim": {"claimName": "data"}},
        ])),
    );
    let notes = v
        .notices
        .iter()
        .filter(|n| n.code == "StorageEndpointUnverified")
        .count();
    assert_eq!(notes, 1, "{:?}", v.notices);
}

// --- CSI volumes and stores that cannot be located ----------------------

/// NFS and SMB CSI volumes name their server in `volumeAttributes`: judged
/// as `nfs.server`, inline or through a PersistentVolume.
#[test]
fn server_naming_csi_volumes_are_judged_by_their_server() {
    let snap = snapshot(&[]);
    let field = |attr: &str| format!("spec.template.spec.volumes[0].csi.volumeAttributes.{attr}");
    let cases = [
        (
            json!({"driver": "nfs.csi.k8s.io", "volumeAttributes": {"server": FOREIGN_IP, "share": "/"}}),
            Some(field("server")),
        ),
        (
            json!({"driver": "nfs.csi.k8s.io", "volumeAttributes": {"server": MAINLAND_IP, "share": "/"}}),
            None,
        ),
        (
            json!({"driver": "smb.csi.k8s.io", "volumeAttributes": {"source": format!("//{FOREIGN_IP}/share")}}),
            Some(field("source")),
        ),
        (
            json!({"driver": "smb.csi.k8s.io", "volumeAttributes": {"source": format!("\\\\{FOREIGN_IP}\\share")}}),
            Some(field("source")),
        ),
        (
            json!({"driver": "smb.csi.k8s.io", "volumeAttributes": {"source": format!("//{MAINLAND_IP}/share")}}),
            None,
        ),
    ];
    for (csi, expected) in cases {
        let v = judge(&snap, &deployment(json!([{"name": "remote", "csi": csi}])));
        match expected {
            None => assert!(storage(&v).is_empty(), "{csi}: {:?}", storage(&v)),
            Some(field) => {
                assert_eq!(
                    only(&v),
                    (Code::StorageEndpointOutside, field, "endpointOutside"),
                    "{csi}"
                );
                let en = message(&v, Lang::En);
                assert!(
                    en.contains(&format!("is {FOREIGN_IP}: address {FOREIGN_IP}")),
                    "{en}"
                );
            }
        }
    }
    // A host name is a notice, as for nfs.
    let v = judge(
        &snap,
        &deployment(
            json!([{"name": "remote", "csi": {"driver": "smb.csi.k8s.io",
            "volumeAttributes": {"source": "//files.example.com/share"}}}]),
        ),
    );
    assert!(v.compliant(), "{:?}", storage(&v));
    assert!(v.notices.iter().any(
        |n| n.code == "StorageEndpointUnverified" && n.message.en.contains("files.example.com")
    ));
    // No server attribute: the server is not named.
    let v = judge(
        &snap,
        &deployment(
            json!([{"name": "remote", "csi": {"driver": "nfs.csi.k8s.io", "volumeAttributes": {"share": "/"}}}]),
        ),
    );
    assert_eq!(
        only(&v),
        (Code::VolumeNotGuaranteed, field("server"), "csiNoServer")
    );
}

#[test]
fn a_pv_of_the_nfs_or_smb_csi_driver_is_judged_by_its_server() {
    for (driver, attrs, field) in [
        (
            "nfs.csi.k8s.io",
            json!({"server": FOREIGN_IP, "share": "/export"}),
            "csi.volumeAttributes.server",
        ),
        (
            "smb.csi.k8s.io",
            json!({"source": format!("//{FOREIGN_IP}/export")}),
            "csi.volumeAttributes.source",
        ),
    ] {
        let volume = pv(
            "pv-remote",
            json!({}),
            json!({"csi": {"driver": driver, "volumeHandle": "h", "volumeAttributes": attrs}}),
        );
        let snap = snapshot(&[volume, pvc("data", Some(""), Some("pv-remote"))]);
        let v = judge(&snap, &deployment(claim_volume("data")));
        assert_eq!(
            only(&v),
            (
                Code::StorageEndpointOutside,
                CLAIM_FIELD.into(),
                "endpointOutside"
            ),
            "{driver}"
        );
        assert!(
            message(&v, Lang::En).contains(&format!("PersistentVolume pv-remote's {field}")),
            "{}",
            message(&v, Lang::En)
        );
        // At a mainland address, with no topology: the server decides.
        let attrs = match driver {
            "nfs.csi.k8s.io" => json!({"server": MAINLAND_IP, "share": "/export"}),
            _ => json!({"source": format!("//{MAINLAND_IP}/export")}),
        };
        let volume = pv(
            "pv-remote",
            json!({}),
            json!({"csi": {"driver": driver, "volumeHandle": "h", "volumeAttributes": attrs}}),
        );
        let snap = snapshot(&[volume, pvc("data", Some(""), Some("pv-remote"))]);
        assert!(
            storage(&judge(&snap, &deployment(claim_volume("data")))).is_empty(),
            "{driver}"
        );
    }
}

/// Object stores, Azure Files and inline CSI drivers not known cannot be
/// located: VolumeNotGuaranteed with the reason and the driver. Drivers that
/// only put secrets or certificates on the node need nothing.
#[test]
fn stores_that_cannot_be_located_are_not_guaranteed() {
    let snap = snapshot(&[]);
    let csi = |driver: &str| json!({"name": "store", "csi": {"driver": driver, "volumeAttributes": {"bucketName": "b"}}});
    let at = |f: &str| format!("spec.template.spec.volumes[0].{f}");
    let cases = [
        (
            csi("blob.csi.azure.com"),
            at("csi.driver"),
            "objectStore",
            "Azure Blob Storage (driver blob.csi.azure.com)",
        ),
        (
            csi("s3.csi.aws.com"),
            at("csi.driver"),
            "objectStore",
            "Amazon S3",
        ),
        (
            csi("ossplugin.csi.alibabacloud.com"),
            at("csi.driver"),
            "objectStore",
            "Alibaba Cloud OSS",
        ),
        (
            csi("com.tencent.cloud.csi.cosfs"),
            at("csi.driver"),
            "objectStore",
            "Tencent Cloud COS",
        ),
        (
            csi("fuse.csi.fluid.io"),
            at("csi.driver"),
            "objectStore",
            "Fluid dataset",
        ),
        (
            csi("gcsfuse.csi.storage.gke.io"),
            at("csi.driver"),
            "objectStore",
            "Google Cloud Storage",
        ),
        (
            csi("file.csi.azure.com"),
            at("csi.driver"),
            "objectStore",
            "Azure Files",
        ),
        (
            json!({"name": "store", "azureFile": {"secretName": "s", "shareName": "share"}}),
            at("azureFile"),
            "objectStore",
            "Azure Files (driver azureFile)",
        ),
        (
            csi("example.vendor.io"),
            at("csi.driver"),
            "csiDriverUnknown",
            "inline CSI volume of driver example.vendor.io, which this check does not know",
        ),
    ];
    for (volume, field, reason, text) in cases {
        let v = judge(&snap, &deployment(json!([volume])));
        assert_eq!(
            only(&v),
            (Code::VolumeNotGuaranteed, field, reason),
            "{volume}"
        );
        let en = message(&v, Lang::En);
        assert!(en.contains(text), "{en}");
        assert!(en.contains("spec.exemptions"), "{en}");
        let zh = message(&v, Lang::ZhCn);
        assert!(zh.contains("卷 store"), "{zh}");
        let driver = v
            .violations()
            .find_map(|(_, x)| match &x.evidence {
                Evidence::Storage(e) => e.driver.clone(),
                _ => None,
            })
            .unwrap_or_default();
        let written = volume["csi"]["driver"].as_str().unwrap_or("azureFile");
        assert_eq!(driver, written, "{volume}");
    }
    for driver in ["secrets-store.csi.k8s.io", "csi.cert-manager.io"] {
        let v = judge(&snap, &deployment(json!([csi(driver)])));
        assert!(storage(&v).is_empty(), "{driver}: {:?}", storage(&v));
    }
}

/// A PersistentVolume of an object store (or Azure Files) cannot be located
/// whatever its topology says: the topology is where nodes may mount it.
/// A PV of a disk driver not on the list is judged by its topology, as
/// before.
#[test]
fn a_pv_of_an_object_store_cannot_be_located_whatever_its_topology() {
    let blob = pv(
        "pv-blob",
        json!({"topology.kubernetes.io/region": "cn-north-1"}),
        json!({"csi": {"driver": "blob.csi.azure.com", "volumeHandle": "acct#c",
            "volumeAttributes": {"containerName": "c"}}}),
    );
    let share = pv(
        "pv-share",
        json!({}),
        json!({"azureFile": {"secretName": "s", "shareName": "share"}}),
    );
    let disk = pv(
        "pv-disk",
        json!({}),
        zone_affinity("topology.ebs.csi.aws.com/zone", &["cn-north-1a"]),
    );
    let snap = snapshot(&[
        blob,
        share,
        disk,
        pvc("blob", Some(""), Some("pv-blob")),
        pvc("share", Some(""), Some("pv-share")),
        pvc("disk", Some(""), Some("pv-disk")),
    ]);
    for (claim, driver) in [("blob", "blob.csi.azure.com"), ("share", "azureFile")] {
        let v = judge(&snap, &deployment(claim_volume(claim)));
        assert_eq!(
            only(&v),
            (Code::VolumeNotGuaranteed, CLAIM_FIELD.into(), "objectStore"),
            "{claim}"
        );
        let en = message(&v, Lang::En);
        assert!(
            en.contains(&format!(
                "is bound to PersistentVolume pv-{claim}, which uses"
            )) && en.contains(driver),
            "{en}"
        );
    }
    assert!(storage(&judge(&snap, &deployment(claim_volume("disk")))).is_empty());
}
