//! Every object is seen (issue 22, finding 1): owned objects are kept,
//! classes follow controller ownerReferences within the namespace, a
//! NetworkPolicy change is judged for every pod and workload it selects,
//! owned or not, and the audit reports an owned object through its owner
//! only when that owner is in the inventory and answers for it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use jiff::Timestamp;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use residency_guard::api::ResidencyPolicy;
use residency_guard::audit::Auditor;
use residency_guard::audit::plan::{AuditPlan, PlanConfig, ResultKind};
use residency_guard::engine::{
    AddressSpace, Catalogue, Code, Lang, NodeInfo, Snapshot, SnapshotBuilder, Workload,
    WorkloadKind,
};
use residency_guard::state::{Inventory, State, WorkloadKey};
use residency_guard::webhook::admission::{Endpoint, handle};
use serde_json::{Value, json};

const REGION: &str = "topology.kubernetes.io/region";
const NS: &str = "app";

fn now() -> Timestamp {
    "2026-06-01T00:00:00Z".parse().unwrap()
}

/// Personal data: Deny, egress and storage in mainland China.
fn policy() -> Value {
    json!({
        "apiVersion": "residencyguard.io/v1alpha1", "kind": "ResidencyPolicy",
        "metadata": {"name": "personal", "generation": 1},
        "spec": {"dataClasses": ["personal"], "action": "Deny", "egress": {"mode": "MainlandOnly"}}
    })
}

/// Egress of the pods labelled `key=value` to in-cluster pods only.
fn isolating(name: &str, key: &str, value: &str, extra_cidrs: &[&str]) -> Value {
    let mut to = vec![json!({"podSelector": {}})];
    to.extend(extra_cidrs.iter().map(|c| json!({"ipBlock": {"cidr": c}})));
    json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"podSelector": {"matchLabels": {key: value}}, "policyTypes": ["Egress"],
                 "egress": [{"to": to}]}
    })
}

fn controller(api_version: &str, kind: &str, name: &str, uid: &str) -> Value {
    json!([{"apiVersion": api_version, "kind": kind, "name": name, "uid": uid,
            "controller": true, "blockOwnerDeletion": true}])
}

/// A Deployment pinned to `region` (None: unpinned); `class_on` is where
/// its data-class label is: "template", "metadata" or "".
fn deployment(name: &str, region: Option<&str>, class_on: &str, owner: Option<Value>) -> Value {
    let mut meta = json!({"name": name, "namespace": NS, "uid": format!("uid-{name}")});
    let mut labels = json!({"app": name});
    match class_on {
        "template" => labels["residencyguard.io/data-class"] = json!("personal"),
        "metadata" => meta["labels"] = json!({"residencyguard.io/data-class": "personal"}),
        _ => {}
    }
    if let Some(owner) = owner {
        meta["ownerReferences"] = owner;
    }
    let mut spec = json!({"containers": [{"name": "c", "image": "i"}]});
    if let Some(r) = region {
        spec["nodeSelector"] = json!({REGION: r});
    }
    json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta,
           "spec": {"replicas": 2, "selector": {"matchLabels": {"app": name}},
                    "template": {"metadata": {"labels": labels}, "spec": spec}}})
}

/// The Deployment controller's ReplicaSet of `d`: its template plus
/// `pod-template-hash`, owned by it; `region` replaces the template's pin.
fn replica_set(d: &Value, hash: &str, replicas: i32, region: Option<&str>) -> Value {
    let name = d["metadata"]["name"].as_str().unwrap();
    let mut template = d["spec"]["template"].clone();
    template["metadata"]["labels"]["pod-template-hash"] = json!(hash);
    if let Some(r) = region {
        template["spec"]["nodeSelector"] = json!({REGION: r});
    }
    json!({"apiVersion": "apps/v1", "kind": "ReplicaSet",
           "metadata": {"name": format!("{name}-{hash}"), "namespace": NS,
                        "uid": format!("uid-{name}-{hash}"),
                        "labels": template["metadata"]["labels"],
                        "ownerReferences": controller("apps/v1", "Deployment", name, &format!("uid-{name}"))},
           "spec": {"replicas": replicas, "template": template}})
}

/// A pod of `rs`, bound to `node`.
fn pod_of(rs: &Value, suffix: &str, node: &str) -> Value {
    let rs_name = rs["metadata"]["name"].as_str().unwrap();
    let mut spec = rs["spec"]["template"]["spec"].clone();
    spec["nodeName"] = json!(node);
    json!({"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": format!("{rs_name}-{suffix}"), "namespace": NS,
                        "labels": rs["spec"]["template"]["metadata"]["labels"],
                        "ownerReferences": controller("apps/v1", "ReplicaSet", rs_name, &format!("uid-{rs_name}"))},
           "spec": spec})
}

#[derive(Clone)]
struct World {
    network_policies: Vec<Value>,
    workloads: Vec<Value>,
}

impl World {
    fn new(workloads: Vec<Value>, network_policies: Vec<Value>) -> World {
        World {
            network_policies,
            workloads,
        }
    }

    fn snapshot(&self) -> (Snapshot, BTreeMap<String, Arc<NetworkPolicy>>) {
        let base = Snapshot::new(Catalogue::builtin().clone(), AddressSpace::builtin());
        let mut b = SnapshotBuilder::new(base, now());
        b.nodes_known();
        let p: ResidencyPolicy = serde_json::from_value(policy()).unwrap();
        b.policy(&p).unwrap();
        for (name, region) in [("cn-node-1", "cn-north-1"), ("hk-node-1", "ap-east-1")] {
            b.node(NodeInfo {
                name: name.into(),
                labels: BTreeMap::from([(REGION.to_string(), region.to_string())]),
                provider_id: None,
            });
        }
        b.namespace(NS, BTreeMap::new());
        let mut nps = BTreeMap::new();
        for np in &self.network_policies {
            let np: NetworkPolicy = serde_json::from_value(np.clone()).unwrap();
            b.network_policy(&np);
            let name = np.metadata.name.clone().unwrap();
            nps.insert(format!("{NS}/{name}"), Arc::new(np));
        }
        (b.build(), nps)
    }

    fn workloads(&self) -> Vec<Workload> {
        self.workloads
            .iter()
            .map(|v| Workload::from_value(v, NS).unwrap())
            .collect()
    }

    fn inventory(&self) -> Arc<Inventory> {
        let (snapshot, network_policies) = self.snapshot();
        let p: ResidencyPolicy = serde_json::from_value(policy()).unwrap();
        Arc::new(Inventory {
            snapshot: Arc::new(snapshot),
            policies: Arc::new(BTreeMap::from([("personal".to_string(), Arc::new(p))])),
            egress_layers: Default::default(),
            network_policies: Arc::new(network_policies),
            workloads: self
                .workloads()
                .into_iter()
                .map(|w| (WorkloadKey::of(&w), Arc::new(w)))
                .collect(),
            synced: true,
        })
    }

    /// The webhook's view: the snapshot and the state's inventory.
    fn state(&self) -> (Snapshot, State) {
        let (snapshot, _) = self.snapshot();
        let state = State::fixed(
            snapshot.clone(),
            BTreeMap::from([(NS.to_string(), self.workloads())]),
        );
        (snapshot, state)
    }

    /// Review a NetworkPolicy `operation` (`object` None: DELETE of `name`).
    fn review_network_policy(&self, name: &str, object: Option<&Value>) -> (bool, String) {
        let (snapshot, state) = self.state();
        let old = self
            .network_policies
            .iter()
            .find(|n| n["metadata"]["name"] == name)
            .cloned();
        let mut request = json!({
            "uid": "u-1",
            "kind": {"group": "networking.k8s.io", "version": "v1", "kind": "NetworkPolicy"},
            "resource": {"group": "networking.k8s.io", "version": "v1", "resource": "networkpolicies"},
            "name": name, "namespace": NS,
            "operation": if object.is_some() { "UPDATE" } else { "DELETE" },
            "userInfo": {"username": "bob"},
            "oldObject": old,
        });
        if let Some(o) = object {
            request["object"] = o.clone();
        }
        let body = serde_json::to_vec(&json!({
            "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request
        }))
        .unwrap();
        let handled = handle(
            &body,
            Endpoint::NetworkPolicies,
            &snapshot,
            &state,
            Lang::En,
            now(),
        )
        .unwrap();
        let r = handled.review.response;
        (r.allowed, r.status.map(|s| s.message).unwrap_or_default())
    }

    fn without_network_policies(&self) -> World {
        World {
            network_policies: Vec::new(),
            ..self.clone()
        }
    }
}

fn key(kind: WorkloadKind, name: &str) -> WorkloadKey {
    WorkloadKey {
        kind,
        namespace: NS.into(),
        name: name.into(),
    }
}

fn auditor(w: &World) -> Auditor {
    let mut a = Auditor::new(PlanConfig::default());
    a.full_pass(w.inventory(), now());
    a
}

/// (rule, object) of every `fail` result in the namespace report.
fn failures(plan: &AuditPlan) -> BTreeSet<(String, String)> {
    plan.reports
        .get(NS)
        .map(|r| {
            r.results
                .iter()
                .filter(|r| r.result == ResultKind::Fail)
                .map(|r| {
                    (
                        r.rule.clone(),
                        format!("{} {}", r.resources[0].kind, r.resources[0].name),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The trap: a user with `edit` adds a controller ownerReference
/// (to a ConfigMap they made) on a pinned, classified Deployment.
fn config_map_owned() -> World {
    let owner = controller("v1", "ConfigMap", "decoy", "uid-decoy");
    let d = deployment("records", Some("cn-north-1"), "template", Some(owner));
    let rs = replica_set(&d, "5c8d", 2, None);
    let pods = vec![pod_of(&rs, "a", "cn-node-1"), pod_of(&rs, "b", "cn-node-1")];
    let mut workloads = vec![d, rs];
    workloads.extend(pods);
    World::new(
        workloads,
        vec![isolating("records-egress", "app", "records", &[])],
    )
}

#[test]
fn deleting_or_weakening_the_network_policy_of_a_config_map_owned_deployment_is_denied() {
    let w = config_map_owned();
    let (allowed, message) = w.review_network_policy("records-egress", None);
    assert!(
        !allowed,
        "deleting the NetworkPolicy of an owned classified Deployment was admitted"
    );
    assert!(message.contains("Deployment app/records"), "{message}");
    assert!(
        message.contains("DELETE NetworkPolicy app/records-egress"),
        "{message}"
    );
    // Its two pods are alike: judged once, named once.
    assert!(
        message.contains("and for 1 more objects with the same labels"),
        "{message}"
    );

    let weakened = isolating("records-egress", "app", "records", &["8.8.8.0/24"]);
    let (allowed, message) = w.review_network_policy("records-egress", Some(&weakened));
    assert!(!allowed, "opening egress to 8.8.8.0/24 was admitted");
    assert!(message.contains("8.8.8.0"), "{message}");

    // An unrelated change is still admitted.
    let same = isolating("records-egress", "app", "records", &[]);
    let (allowed, message) = w.review_network_policy("records-egress", Some(&same));
    assert!(allowed, "{message}");
}

#[test]
fn a_pod_classified_only_through_its_deployment_is_protected() {
    // The class is on the Deployment's own metadata; its ReplicaSet and
    // pods carry none, and the NetworkPolicy selects only them.
    let d = deployment("ledger", Some("cn-north-1"), "metadata", None);
    let rs = replica_set(&d, "77aa", 2, None);
    let pods = vec![pod_of(&rs, "a", "cn-node-1"), pod_of(&rs, "b", "cn-node-1")];
    let mut workloads = vec![d, rs];
    workloads.extend(pods);
    let w = World::new(
        workloads,
        vec![isolating("hash-egress", "pod-template-hash", "77aa", &[])],
    );
    let (allowed, message) = w.review_network_policy("hash-egress", None);
    assert!(!allowed, "egress opened for pods classified by their owner");
    assert!(message.contains("ReplicaSet app/ledger-77aa"), "{message}");
    assert!(message.contains("Pod app/ledger-77aa-"), "{message}");
    assert!(
        message.contains("inherited through its controller ownerReferences"),
        "{message}"
    );
}

#[test]
fn a_pod_of_a_custom_resource_is_judged_and_reported_in_full() {
    // A CloudNativePG instance: its owner is a kind the state does not
    // watch. Running in Hong Kong, its data on an NFS server abroad.
    let pod = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "db-1", "namespace": NS,
                     "labels": {"app": "db", "residencyguard.io/data-class": "personal"},
                     "ownerReferences": controller("postgresql.cnpg.io/v1", "Cluster", "db", "uid-db")},
        "spec": {"nodeName": "hk-node-1", "containers": [{"name": "pg", "image": "i"}],
                 "volumes": [{"name": "data", "nfs": {"server": "8.8.8.8", "path": "/pg"}}]}});
    let w = World::new(vec![pod], vec![isolating("db-egress", "app", "db", &[])]);

    let (allowed, message) = w.review_network_policy("db-egress", None);
    assert!(!allowed, "egress opened for a CRD-owned classified pod");
    assert!(message.contains("Pod app/db-1"), "{message}");

    let mut a = auditor(&w.without_network_policies());
    let plan = a.plan(now());
    let fails = failures(&plan);
    for code in [
        Code::BoundToNodeOutside,
        Code::EgressUnrestricted,
        Code::StorageEndpointOutside,
    ] {
        assert!(
            fails.contains(&(code.as_str().to_string(), "Pod db-1".to_string())),
            "{code:?} missing: {fails:?}"
        );
    }
    let result = &plan.reports[NS].results[0];
    assert_eq!(result.properties["owner"], "Cluster db");
    assert_eq!(plan.statuses["personal"].violations, 1);
}

#[test]
fn a_config_map_owned_deployment_stays_in_the_audit() {
    let w = config_map_owned();
    let mut a = auditor(&w);
    let plan = a.plan(now());
    assert_eq!(plan.statuses["personal"].violations, 0);
    let passes: Vec<&str> = plan.reports[NS]
        .results
        .iter()
        .filter(|r| r.result == ResultKind::Pass)
        .map(|r| r.resources[0].name.as_str())
        .collect();
    assert_eq!(passes, ["records"], "the Deployment is audited, alone");

    // The NetworkPolicy goes (say, by a cluster admin): the violation is
    // the Deployment's, reported once.
    let (_, rejudged) = a.update(w.without_network_policies().inventory(), now());
    assert!(rejudged.contains(&key(WorkloadKind::Deployment, "records")));
    let plan = a.plan(now());
    assert_eq!(plan.statuses["personal"].violations, 1);
    assert_eq!(
        failures(&plan),
        BTreeSet::from([(
            "EgressUnrestricted".to_string(),
            "Deployment records".to_string()
        )])
    );
    assert_eq!(plan.statuses["personal"].top_offenders[0].name, "records");
}

#[test]
fn a_replica_set_is_reported_only_where_it_differs_from_its_deployment() {
    // Unpinned: the Deployment violates; its current ReplicaSet is the
    // same template and is not reported a second time, nor is an old
    // revision at zero replicas.
    let d = deployment("api", None, "template", None);
    let current = replica_set(&d, "1111", 2, None);
    let old = replica_set(&d, "0000", 0, Some("ap-east-1"));
    let w = World::new(
        vec![d.clone(), current.clone(), old],
        vec![isolating("api-egress", "app", "api", &[])],
    );
    let mut a = auditor(&w);
    assert!(
        a.index
            .get(&key(WorkloadKind::ReplicaSet, "api-1111"))
            .is_none()
    );
    assert!(
        a.index
            .get(&key(WorkloadKind::ReplicaSet, "api-0000"))
            .is_none()
    );
    let plan = a.plan(now());
    assert_eq!(
        failures(&plan),
        BTreeSet::from([(
            "PlacementNotGuaranteed".to_string(),
            "Deployment api".to_string()
        )])
    );

    // Pinned, with a ReplicaSet edited to run in Hong Kong (with pods to
    // make): that one is reported on its own.
    let d = deployment("api", Some("cn-north-1"), "template", None);
    let edited = replica_set(&d, "2222", 1, Some("ap-east-1"));
    let w2 = World::new(
        vec![d.clone(), replica_set(&d, "1111", 2, None), edited],
        vec![isolating("api-egress", "app", "api", &[])],
    );
    a.update(w2.inventory(), now());
    let plan = a.plan(now());
    assert_eq!(
        failures(&plan),
        BTreeSet::from([(
            "PlacementNotGuaranteed".to_string(),
            "ReplicaSet api-2222".to_string()
        )])
    );
    // The incremental audit agrees with a full pass.
    assert_eq!(plan, auditor(&w2).plan(now()));
}

#[test]
fn an_owner_change_rejudges_what_depends_on_it() {
    // The class is on the Deployment's metadata only; its ReplicaSet was
    // edited to run in Hong Kong and its pod runs there.
    let d = deployment("ledger", Some("cn-north-1"), "metadata", None);
    let rs = replica_set(&d, "77aa", 1, Some("ap-east-1"));
    let pod = pod_of(&rs, "a", "hk-node-1");
    let w = World::new(
        vec![d.clone(), rs.clone(), pod],
        vec![isolating("ledger-egress", "app", "ledger", &[])],
    );
    let mut a = auditor(&w);
    let plan = a.plan(now());
    let fails = failures(&plan);
    assert!(
        fails.contains(&(
            "PlacementNotGuaranteed".to_string(),
            "ReplicaSet ledger-77aa".to_string()
        )),
        "{fails:?}"
    );
    assert!(
        fails.contains(&(
            "BoundToNodeOutside".to_string(),
            "Pod ledger-77aa-a".to_string()
        )),
        "{fails:?}"
    );
    let rs_result = plan.reports[NS]
        .results
        .iter()
        .find(|r| r.resources[0].name == "ledger-77aa")
        .unwrap();
    assert!(
        rs_result
            .message
            .contains("on metadata.labels of Deployment app/ledger, inherited"),
        "{}",
        rs_result.message
    );
    let pod_result = plan.reports[NS]
        .results
        .iter()
        .find(|r| r.resources[0].name == "ledger-77aa-a")
        .unwrap();
    assert_eq!(pod_result.properties["workload"], "Deployment ledger");

    // The Deployment loses its class (with the verb): what inherited it is
    // re-judged, and unclassified now.
    let mut w2 = w.clone();
    w2.workloads[0] = deployment("ledger", Some("cn-north-1"), "", None);
    let (_, rejudged) = a.update(w2.inventory(), now());
    for k in [
        key(WorkloadKind::Deployment, "ledger"),
        key(WorkloadKind::ReplicaSet, "ledger-77aa"),
        key(WorkloadKind::Pod, "ledger-77aa-a"),
    ] {
        assert!(rejudged.contains(&k), "{k:?} not re-judged: {rejudged:?}");
    }
    assert!(a.index.is_empty(), "nothing is classified any more");

    // And back: a replicas-only change of the owner re-judges nobody else.
    a.update(w.inventory(), now());
    assert_eq!(a.index.len(), 3);
    let mut scaled = w.clone();
    scaled.workloads[0]["spec"]["replicas"] = json!(5);
    let (_, rejudged) = a.update(scaled.inventory(), now());
    assert_eq!(
        rejudged,
        BTreeSet::from([key(WorkloadKind::Deployment, "ledger")])
    );
    assert_eq!(a.plan(now()), auditor(&scaled).plan(now()));
}

#[test]
fn the_audit_follows_owners_that_arrive_after_their_children() {
    // The watches list kinds independently: a pod may be seen before its
    // ReplicaSet, and that before its Deployment.
    let d = deployment("api", Some("cn-north-1"), "metadata", None);
    let rs = replica_set(&d, "9f9f", 1, Some("ap-east-1"));
    let pod = pod_of(&rs, "a", "cn-node-1");
    let full = World::new(vec![d, rs, pod], Vec::new());
    let mut a = auditor(&World::new(vec![full.workloads[2].clone()], Vec::new()));
    // Alone, the unlabelled pod carries no class.
    assert!(a.index.is_empty());
    a.update(
        World::new(full.workloads[1..].to_vec(), Vec::new()).inventory(),
        now(),
    );
    a.update(full.inventory(), now());
    assert_eq!(a.plan(now()), auditor(&full).plan(now()));
    assert!(
        a.index
            .get(&key(WorkloadKind::ReplicaSet, "api-9f9f"))
            .is_some()
    );
}
