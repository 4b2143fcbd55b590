//! Plan-level tests of the audit controller: given an inventory and a
//! change, exactly which objects are re-judged, and exactly which statuses,
//! Events and reports are planned. Plain data, no API server.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use jiff::Timestamp;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use residency_guard::api::{Offender, ResidencyPolicy};
use residency_guard::audit::Auditor;
use residency_guard::audit::index::{Change, affected_by, diff};
use residency_guard::audit::plan::{
    AuditPlan, EventKey, PlanConfig, PlannedStatus, ReportFormat, ResultKind, truncate_note,
};
use residency_guard::engine::{
    AddressSpace, Catalogue, ClaimRecord, ClassRecord, Code, Lang, NodeInfo, Snapshot,
    SnapshotBuilder, VolumeRecord, Workload, WorkloadKind,
};
use residency_guard::state::{Inventory, WorkloadKey};
use serde_json::{Value, json};

const REGION: &str = "topology.kubernetes.io/region";

fn now() -> Timestamp {
    "2026-06-01T00:00:00Z".parse().unwrap()
}

#[derive(Clone, Default)]
struct World {
    policies: Vec<Value>,
    nodes: Vec<(String, BTreeMap<String, String>)>,
    namespaces: BTreeMap<String, BTreeMap<String, String>>,
    network_policies: Vec<Value>,
    workloads: Vec<Value>,
    /// PersistentVolumes, PersistentVolumeClaims, StorageClasses.
    storage: Vec<Value>,
}

impl World {
    fn inventory(&self) -> Arc<Inventory> {
        let base = Snapshot::new(Catalogue::builtin().clone(), AddressSpace::builtin());
        // As the operator's state builds it: an invalid policy stays enforced.
        let mut builder = SnapshotBuilder::new(base, now());
        builder.nodes_known();
        let mut policies = BTreeMap::new();
        for p in &self.policies {
            let p: ResidencyPolicy = serde_json::from_value(p.clone()).unwrap();
            let _ = builder.policy(&p);
            policies.insert(p.metadata.name.clone().unwrap(), p);
        }
        for (name, labels) in &self.nodes {
            builder.node(NodeInfo {
                name: name.clone(),
                labels: labels.clone(),
                provider_id: None,
            });
        }
        for (name, labels) in &self.namespaces {
            builder.namespace(name.clone(), labels.clone());
        }
        let mut nps = BTreeMap::new();
        for np in &self.network_policies {
            let np: NetworkPolicy = serde_json::from_value(np.clone()).unwrap();
            builder.network_policy(&np);
            let key = format!(
                "{}/{}",
                np.metadata.namespace.clone().unwrap(),
                np.metadata.name.clone().unwrap()
            );
            nps.insert(key, np);
        }
        for o in &self.storage {
            match o["kind"].as_str().unwrap() {
                "PersistentVolume" => builder.persistent_volume(VolumeRecord::from_k8s(
                    &serde_json::from_value(o.clone()).unwrap(),
                )),
                "PersistentVolumeClaim" => builder.persistent_volume_claim(ClaimRecord::from_k8s(
                    &serde_json::from_value(o.clone()).unwrap(),
                )),
                _ => builder.storage_class(ClassRecord::from_k8s(
                    &serde_json::from_value(o.clone()).unwrap(),
                )),
            }
        }
        let workloads = self
            .workloads
            .iter()
            .map(|v| {
                let w = Workload::from_value(v, "default").unwrap();
                (WorkloadKey::of(&w), Arc::new(w))
            })
            .collect();
        Arc::new(Inventory {
            snapshot: Arc::new(builder.build()),
            policies: Arc::new(
                policies
                    .into_iter()
                    .map(|(k, p)| (k, Arc::new(p)))
                    .collect(),
            ),
            egress_layers: Default::default(),
            network_policies: Arc::new(nps.into_iter().map(|(k, n)| (k, Arc::new(n))).collect()),
            workloads,
            synced: true,
        })
    }

    fn node(&mut self, name: &str, region: Option<&str>) -> &mut Self {
        self.nodes.retain(|(n, _)| n != name);
        let labels = region
            .map(|r| BTreeMap::from([(REGION.to_string(), r.to_string())]))
            .unwrap_or_default();
        self.nodes.push((name.to_string(), labels));
        self
    }
}

fn policy(name: &str, action: &str, egress: &str) -> Value {
    json!({
        "apiVersion": "residencyguard.io/v1alpha1", "kind": "ResidencyPolicy",
        "metadata": {"name": name, "generation": 3},
        "spec": {"dataClasses": ["personal"], "action": action, "egress": {"mode": egress}}
    })
}

fn deployment(ns: &str, name: &str, labels: Value, node_selector: Option<&str>) -> Value {
    let mut spec = json!({});
    if let Some(r) = node_selector {
        spec["nodeSelector"] = json!({REGION: r});
    }
    let mut tl = labels;
    tl["residencyguard.io/data-class"] = json!("personal");
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"template": {"metadata": {"labels": tl}, "spec": spec}}
    })
}

/// The ReplicaSet the Deployment controller makes of `deployment`: its
/// template with `pod-template-hash`, owned by it.
fn replica_set(deployment: &Value, hash: &str) -> Value {
    let mut template = deployment["spec"]["template"].clone();
    template["metadata"]["labels"]["pod-template-hash"] = json!(hash);
    let name = deployment["metadata"]["name"].as_str().unwrap();
    json!({
        "apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": {
            "name": format!("{name}-{hash}"), "namespace": deployment["metadata"]["namespace"],
            "labels": template["metadata"]["labels"],
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": name, "controller": true}]
        },
        "spec": {"replicas": 1, "template": template}
    })
}

/// A pod of `deploy`'s ReplicaSet `<deploy>-<hash>` (labels as the
/// fixtures' Deployments have them).
fn owned_pod(ns: &str, deploy: &str, hash: &str, suffix: &str, node: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "name": format!("{deploy}-{hash}-{suffix}"), "namespace": ns,
            "labels": {"app": deploy, "residencyguard.io/data-class": "personal", "pod-template-hash": hash},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": format!("{deploy}-{hash}"), "uid": "u", "controller": true}]
        },
        "spec": {"nodeName": node, "nodeSelector": {REGION: "cn-north-1"}}
    })
}

fn key(kind: WorkloadKind, ns: &str, name: &str) -> WorkloadKey {
    WorkloadKey {
        kind,
        namespace: ns.into(),
        name: name.into(),
    }
}

/// Namespace `app`: api (pinned to cn-north-1, compliant), bad (no
/// constraints), other (pinned to cn-northwest-1), and a pod of api on bj-1.
fn base() -> World {
    let mut w = World::default();
    w.policies
        .push(policy("personal-mainland", "Audit", "Unrestricted"));
    w.node("bj-1", Some("cn-north-1"))
        .node("nx-1", Some("cn-northwest-1"));
    w.namespaces.insert("app".into(), BTreeMap::new());
    let api = deployment("app", "api", json!({"app": "api"}), Some("cn-north-1"));
    let other = deployment(
        "app",
        "other",
        json!({"app": "other"}),
        Some("cn-northwest-1"),
    );
    w.workloads = vec![
        replica_set(&api, "7d9f"),
        replica_set(&other, "55aa"),
        api,
        deployment("app", "bad", json!({"app": "bad"}), None),
        other,
        owned_pod("app", "api", "7d9f", "x1", "bj-1"),
        owned_pod("app", "other", "55aa", "y1", "nx-1"),
        // Not classified: never indexed.
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "plain", "namespace": "app"},
               "spec": {"template": {"spec": {}}}}),
    ];
    w
}

fn auditor(w: &World) -> Auditor {
    let mut a = Auditor::new(PlanConfig::default());
    a.full_pass(w.inventory(), now());
    a
}

fn rules(plan: &AuditPlan, ns: &str) -> Vec<(String, String, ResultKind)> {
    plan.reports[ns]
        .results
        .iter()
        .map(|r| (r.rule.clone(), r.resources[0].name.clone(), r.result))
        .collect()
}

#[test]
fn full_pass_plans_exact_status_events_and_report() {
    let mut a = auditor(&base());
    // Classified objects only; owned pods too (they may be bound abroad).
    let indexed: Vec<String> = a.index.iter().map(|(k, _)| k.name.clone()).collect();
    assert_eq!(
        indexed,
        ["api-7d9f-x1", "other-55aa-y1", "api", "bad", "other"]
    );

    let plan = a.plan(now());
    assert_eq!(
        plan.statuses,
        BTreeMap::from([(
            "personal-mainland".to_string(),
            PlannedStatus {
                observed_generation: Some(3),
                ready: true,
                reason: "Evaluated".into(),
                message: "3 governed workloads and pods, 1 out of policy (action Audit)".into(),
                violations: 1,
                top_offenders: vec![Offender {
                    kind: "Deployment".into(),
                    namespace: Some("app".into()),
                    name: "bad".into(),
                    codes: vec!["PlacementNotGuaranteed".into()],
                }],
            }
        )])
    );
    let keys: Vec<&EventKey> = plan.events.keys().collect();
    assert_eq!(
        keys,
        [&EventKey {
            object: key(WorkloadKind::Deployment, "app", "bad"),
            policy: "personal-mainland".into(),
            code: Code::PlacementNotGuaranteed,
        }]
    );
    let ev = plan.events.values().next().unwrap();
    assert_eq!(ev.reason, "PlacementNotGuaranteed");
    assert_eq!(ev.regarding.kind, "Deployment");
    assert_eq!(ev.regarding.api_version, "apps/v1");
    assert!(ev.note.contains("Deployment app/bad"), "{}", ev.note);
    assert!(ev.related.is_none());

    assert_eq!(
        rules(&plan, "app"),
        [
            ("Compliant".to_string(), "api".to_string(), ResultKind::Pass),
            ("Compliant".into(), "other".into(), ResultKind::Pass),
            (
                "PlacementNotGuaranteed".into(),
                "bad".into(),
                ResultKind::Fail
            ),
        ]
    );
    assert!(plan.cluster_report.results.is_empty());

    // The PolicyReport object in the format Policy Reporter reads.
    let obj = plan.reports["app"].to_object(ReportFormat::PolicyReport, Some("app"));
    assert_eq!(obj["apiVersion"], "wgpolicyk8s.io/v1alpha2");
    assert_eq!(obj["kind"], "PolicyReport");
    assert_eq!(obj["metadata"]["namespace"], "app");
    assert_eq!(
        obj["metadata"]["labels"]["app.kubernetes.io/managed-by"],
        "residency-guard"
    );
    assert_eq!(
        obj["summary"],
        json!({"pass": 2, "fail": 1, "warn": 0, "error": 0, "skip": 0})
    );
    let fail = &obj["results"][2];
    assert_eq!(fail["policy"], "personal-mainland");
    assert_eq!(fail["rule"], "PlacementNotGuaranteed");
    assert_eq!(fail["result"], "fail");
    // Not guaranteed weighs `medium`; under an Audit policy two steps less,
    // floored at `low`.
    assert_eq!(fail["severity"], "low");
    assert_eq!(fail["source"], "residency-guard");
    assert_eq!(
        fail["resources"],
        json!([{"apiVersion": "apps/v1", "kind": "Deployment", "namespace": "app", "name": "bad"}])
    );
    assert_eq!(fail["properties"]["action"], "Audit");
    assert_eq!(
        fail["properties"]["field"],
        "spec.template.spec.nodeSelector"
    );
}

#[test]
fn nothing_changed_nothing_rejudged() {
    let w = base();
    let mut a = auditor(&w);
    let before = a.plan(now());
    let (changes, keys) = a.update(w.inventory(), now());
    assert!(changes.is_empty());
    assert!(keys.is_empty());
    assert_eq!(a.plan(now()), before);
}

/// The leader plans only when something a plan reads moved: a new
/// classified pod does, an unclassified one (most of a big cluster's
/// churn) does not.
#[test]
fn only_changes_to_findings_or_the_cluster_ask_for_a_plan() {
    let w = base();
    let mut a = auditor(&w);
    assert!(a.needs_plan(), "a full pass is planned");
    a.plan(now());
    assert!(!a.needs_plan());

    let mut unclassified = w.clone();
    unclassified
        .workloads
        .push(json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "plain-1", "namespace": "app"},
        "spec": {"nodeName": "bj-1", "containers": [{"name": "c"}]}}));
    let (changes, _) = a.update(unclassified.inventory(), now());
    assert_eq!(changes.len(), 1);
    assert!(!a.needs_plan(), "an unclassified pod moves no finding");

    let mut classified = unclassified.clone();
    classified
        .workloads
        .push(owned_pod("app", "api", "7d9f", "x2", "nx-1"));
    a.update(classified.inventory(), now());
    assert!(a.needs_plan(), "a classified pod is a new finding");
    a.plan(now());

    let mut relabelled = classified.clone();
    relabelled.node("nx-1", Some("ap-east-1"));
    a.update(relabelled.inventory(), now());
    assert!(a.needs_plan(), "a node change is planned");
}

#[test]
fn our_own_status_writes_are_not_changes() {
    let w = base();
    let a = auditor(&w);
    let mut next = (*w.inventory()).clone();
    let mut policies = (*next.policies).clone();
    let p = Arc::make_mut(policies.get_mut("personal-mainland").unwrap());
    p.status = Some(residency_guard::api::ResidencyPolicyStatus {
        violations: Some(1),
        ..Default::default()
    });
    next.policies = Arc::new(policies);
    assert!(diff(a.inventory(), &next).is_empty());
}

#[test]
fn node_relabel_abroad_rejudges_bound_pods_and_matching_workloads() {
    let w = base();
    let mut a = auditor(&w);
    let mut w2 = w.clone();
    w2.node("bj-1", Some("ap-east-1"));
    let inv2 = w2.inventory();
    let changes = diff(a.inventory(), &inv2);
    assert_eq!(changes.len(), 1);
    assert!(matches!(&changes[0], Change::Node { name, .. } if name == "bj-1"));
    let affected = affected_by(&changes[0], &inv2, &a.index);
    assert_eq!(
        affected,
        BTreeSet::from([
            key(WorkloadKind::Pod, "app", "api-7d9f-x1"), // bound to bj-1
            key(WorkloadKind::Deployment, "app", "api"),  // nodeSelector matched bj-1
            key(WorkloadKind::Deployment, "app", "bad"),  // matches every node
        ])
    );

    let (_, rejudged) = a.update(inv2, now());
    assert_eq!(rejudged, affected);
    let pod = a
        .index
        .get(&key(WorkloadKind::Pod, "app", "api-7d9f-x1"))
        .unwrap();
    let owner = pod.owner.as_ref().unwrap();
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str()),
        ("ReplicaSet", "api-7d9f")
    );
    assert_eq!(owner.top, Some(key(WorkloadKind::Deployment, "app", "api")));
    let v = &pod.policies[0].violations[0];
    assert_eq!(v.code, Code::BoundToNodeOutside);
    let node = v.node.as_ref().unwrap();
    assert_eq!(
        (node.name.as_str(), node.region.as_deref()),
        ("bj-1", Some("ap-east-1"))
    );

    let plan = a.plan(now());
    let status = &plan.statuses["personal-mainland"];
    // The pod actually running abroad is listed first.
    assert_eq!(status.violations, 2);
    assert_eq!(status.top_offenders[0].name, "api-7d9f-x1");
    assert_eq!(status.top_offenders[0].codes, ["BoundToNodeOutside"]);
    let ev = &plan.events[&EventKey {
        object: key(WorkloadKind::Pod, "app", "api-7d9f-x1"),
        policy: "personal-mainland".into(),
        code: Code::BoundToNodeOutside,
    }];
    assert_eq!(ev.related.as_ref().unwrap().name, "api");
    assert_eq!(ev.related.as_ref().unwrap().kind, "Deployment");
    assert!(ev.note.contains("bj-1"), "{}", ev.note);
    let r = plan.reports["app"]
        .results
        .iter()
        .find(|r| r.rule == "BoundToNodeOutside")
        .unwrap();
    // A pod running abroad weighs `critical`; the policy is Audit: two steps less.
    assert_eq!(r.severity, "medium");
    assert_eq!(r.properties["node"], "bj-1");
    assert_eq!(r.properties["region"], "ap-east-1");
    assert_eq!(r.properties["owner"], "ReplicaSet api-7d9f");
    assert_eq!(r.properties["workload"], "Deployment api");
    // Cluster-scoped: the node abroad that governed pods run on.
    let c = &plan.cluster_report.results;
    assert_eq!(c.len(), 1);
    assert_eq!(c[0].resources[0].kind, "Node");
    assert_eq!(c[0].resources[0].name, "bj-1");
    assert_eq!(c[0].properties["pods"], "1");
}

#[test]
fn node_losing_its_region_label_is_a_finding() {
    let w = base();
    let mut a = auditor(&w);
    let mut w2 = w.clone();
    w2.node("bj-1", None);
    let (_, rejudged) = a.update(w2.inventory(), now());
    assert!(rejudged.contains(&key(WorkloadKind::Pod, "app", "api-7d9f-x1")));
    let pod = a
        .index
        .get(&key(WorkloadKind::Pod, "app", "api-7d9f-x1"))
        .unwrap();
    let v = &pod.policies[0].violations[0];
    assert_eq!(v.code, Code::BoundToNodeOutside);
    // Re-judging decides; the message is written when the leader plans.
    let pod_key = key(WorkloadKind::Pod, "app", "api-7d9f-x1");
    assert!(a.index.messages(&pod_key).is_none());
    a.plan(now());
    let message = &a.index.messages(&pod_key).unwrap()[0];
    assert!(message.contains("no region label"), "{message}");
    // The Deployment's guarantee still holds (it pins cn-north-1).
    let api = a
        .index
        .get(&key(WorkloadKind::Deployment, "app", "api"))
        .unwrap();
    assert!(!api.policies[0].violated());
}

#[test]
fn node_change_elsewhere_leaves_pinned_workloads_alone() {
    let w = base();
    let mut a = auditor(&w);
    let mut w2 = w.clone();
    w2.node("sh-1", Some("cn-east-2"));
    let (changes, rejudged) = a.update(w2.inventory(), now());
    assert_eq!(changes.len(), 1);
    // Only `bad` (no constraints) can run on a new node in another region.
    assert_eq!(
        rejudged,
        BTreeSet::from([key(WorkloadKind::Deployment, "app", "bad")])
    );
}

fn egress_world() -> World {
    let mut w = World::default();
    w.policies
        .push(policy("personal-cluster-only", "Deny", "ClusterOnly"));
    w.node("bj-1", Some("cn-north-1"));
    w.namespaces.insert("net".into(), BTreeMap::new());
    w.network_policies.push(json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": "web-no-egress", "namespace": "net"},
        "spec": {"podSelector": {"matchLabels": {"app": "web"}}, "policyTypes": ["Egress"]}
    }));
    w.network_policies.push(json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": "db-no-egress", "namespace": "net"},
        "spec": {"podSelector": {"matchLabels": {"app": "db"}}, "policyTypes": ["Egress"]}
    }));
    w.workloads = vec![
        deployment("net", "web", json!({"app": "web"}), Some("cn-north-1")),
        deployment("net", "db", json!({"app": "db"}), Some("cn-north-1")),
    ];
    w
}

#[test]
fn deleting_a_network_policy_rejudges_exactly_the_pods_it_selected() {
    let w = egress_world();
    let mut a = auditor(&w);
    assert!(a.plan(now()).events.is_empty());
    let mut w2 = w.clone();
    w2.network_policies.remove(0);
    let inv2 = w2.inventory();
    let changes = diff(a.inventory(), &inv2);
    assert!(
        matches!(&changes[..], [Change::NetworkPolicy { name, new: None, .. }] if name == "web-no-egress")
    );
    let (_, rejudged) = a.update(inv2, now());
    assert_eq!(
        rejudged,
        BTreeSet::from([key(WorkloadKind::Deployment, "net", "web")])
    );
    let plan = a.plan(now());
    let codes: Vec<Code> = plan.events.keys().map(|k| k.code).collect();
    assert_eq!(codes, [Code::EgressUnrestricted]);
    assert_eq!(plan.statuses["personal-cluster-only"].violations, 1);
}

#[test]
fn exemption_expiry_fires_at_the_lapse_time() {
    let mut w = base();
    w.policies[0]["spec"]["exemptions"] = json!([{
        "selector": {"matchLabels": {"app": "bad"}}, "namespaces": ["app"],
        "basis": "StandardContract", "reference": "CAC filing 2026-0042",
        "approvedBy": "dpo@example.com", "expires": "2026-06-30"
    }]);
    let mut a = auditor(&w);
    let plan = a.plan(now());
    assert_eq!(plan.statuses["personal-mainland"].violations, 0);
    assert!(plan.events.is_empty());
    let skip = &plan.reports["app"].results[2];
    assert_eq!(
        (skip.rule.as_str(), skip.result),
        ("PlacementNotGuaranteed", ResultKind::Skip)
    );
    assert_eq!(
        skip.properties["exemption"],
        "StandardContract CAC filing 2026-0042"
    );

    // The end of 2026-06-30 in China Standard Time.
    let (at, policies) = a.next_lapse(now()).unwrap();
    assert_eq!(at, "2026-06-30T16:00:00Z".parse::<Timestamp>().unwrap());
    assert_eq!(policies, ["personal-mainland"]);
    let rejudged = a.lapse(&policies, at);
    assert_eq!(
        rejudged,
        BTreeSet::from([key(WorkloadKind::Deployment, "app", "bad")])
    );
    let plan = a.plan(at);
    assert_eq!(plan.statuses["personal-mainland"].violations, 1);
    assert_eq!(plan.events.len(), 1);
    assert_eq!(plan.reports["app"].results[2].result, ResultKind::Fail);
    assert!(a.next_lapse(at).is_none());
}

#[test]
fn deleted_policy_takes_its_findings_with_it() {
    let w = base();
    let mut a = auditor(&w);
    let mut w2 = w.clone();
    w2.policies.clear();
    let inv2 = w2.inventory();
    let changes = diff(a.inventory(), &inv2);
    assert_eq!(
        changes,
        [Change::Policy {
            name: "personal-mainland".into()
        }]
    );
    let (_, rejudged) = a.update(inv2, now());
    // Everything it governed; owned pods had no finding of their own under
    // it (they run on mainland nodes), so they cannot change.
    assert_eq!(
        rejudged,
        BTreeSet::from([
            key(WorkloadKind::Deployment, "app", "api"),
            key(WorkloadKind::Deployment, "app", "bad"),
            key(WorkloadKind::Deployment, "app", "other"),
        ])
    );
    let plan = a.plan(now());
    assert!(plan.statuses.is_empty());
    assert!(plan.events.is_empty());
    assert!(plan.reports.is_empty(), "the namespace report must go");
    assert!(plan.cluster_report.results.is_empty());
}

#[test]
fn namespace_relabel_rejudges_its_workloads() {
    let mut w = base();
    w.namespaces.insert("other".into(), BTreeMap::new());
    w.workloads.push(json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "unlabelled", "namespace": "other"}, "spec": {"template": {"spec": {}}}}));
    let mut a = auditor(&w);
    assert!(
        a.index
            .get(&key(WorkloadKind::Deployment, "other", "unlabelled"))
            .is_none()
    );
    let mut w2 = w.clone();
    w2.namespaces.insert(
        "other".into(),
        BTreeMap::from([(
            "residencyguard.io/data-class".to_string(),
            "personal".to_string(),
        )]),
    );
    let (_, rejudged) = a.update(w2.inventory(), now());
    assert_eq!(
        rejudged,
        BTreeSet::from([key(WorkloadKind::Deployment, "other", "unlabelled")])
    );
    let f = a
        .index
        .get(&key(WorkloadKind::Deployment, "other", "unlabelled"))
        .unwrap();
    assert!(f.policies[0].violated());
}

#[test]
fn invalid_policy_is_not_ready_and_reported_cluster_wide() {
    let mut w = base();
    w.policies.push(json!({
        "apiVersion": "residencyguard.io/v1alpha1", "kind": "ResidencyPolicy",
        "metadata": {"name": "broken", "generation": 1},
        "spec": {"dataClasses": ["personal"], "egress": {"mode": "MainlandOnly", "allowedCIDRs": ["not-a-cidr"]}}
    }));
    let mut a = auditor(&w);
    let plan = a.plan(now());
    let s = &plan.statuses["broken"];
    assert!(!s.ready);
    assert_eq!(s.reason, "InvalidPolicy");
    assert!(
        s.message.contains("spec.egress.allowedCIDRs[0]"),
        "{}",
        s.message
    );
    let c = &plan.cluster_report.results[0];
    assert_eq!(
        (c.rule.as_str(), c.result),
        ("InvalidPolicy", ResultKind::Error)
    );
    assert_eq!(c.resources[0].kind, "ResidencyPolicy");
    // Not dropped: enforced by its strictest reading, and its violations
    // count; an Event on the policy says so.
    assert!(s.message.contains("strictest reading"), "{}", s.message);
    assert!(
        s.violations > 0,
        "the invalid policy stopped being enforced"
    );
    let e = &plan.policy_events[&("broken".to_string(), Some(1))];
    assert_eq!(e.reason, "InvalidPolicy");
    assert_eq!(e.regarding.kind, "ResidencyPolicy");
    assert!(e.note.contains("spec.egress.allowedCIDRs[0]"), "{}", e.note);
}

#[test]
fn events_are_in_the_configured_language_and_at_most_1_kib() {
    let mut a = Auditor::new(PlanConfig {
        lang: Lang::ZhCn,
        ..PlanConfig::default()
    });
    a.full_pass(base().inventory(), now());
    let plan = a.plan(now());
    let note = &plan.events.values().next().unwrap().note;
    assert!(note.contains("策略"), "{note}");
    assert!(note.len() <= 1024);

    let long = "数据".repeat(400); // 2400 bytes
    let cut = truncate_note(&long, 1024);
    assert!(cut.len() <= 1024);
    assert!(cut.ends_with('…'));
    assert_eq!(truncate_note("short", 1024), "short");
}

/// The PlacementNotGuaranteed message reported for Deployment app/`name`.
fn placement_message(plan: &AuditPlan, name: &str) -> String {
    plan.reports["app"]
        .results
        .iter()
        .find(|r| r.resources[0].name == name && r.rule == "PlacementNotGuaranteed")
        .map(|r| r.message.clone())
        .unwrap()
}

#[test]
fn messages_follow_the_evidence_when_the_decision_stays_the_same() {
    // `bad` has no constraints: PlacementNotGuaranteed before and after a
    // node abroad joins. The decision is the same; the message must not be.
    let w = base();
    let mut a = auditor(&w);
    let bad = key(WorkloadKind::Deployment, "app", "bad");
    let message_of = |plan: &AuditPlan| placement_message(plan, "bad");
    let before = message_of(&a.plan(now()));
    assert!(before.contains("today all 2 matching nodes"), "{before}");
    let decided = a.index.get(&bad).cloned();

    let mut w2 = w.clone();
    w2.node("hk-1", Some("ap-east-1"));
    let (_, rejudged) = a.update(w2.inventory(), now());
    assert!(rejudged.contains(&bad));
    assert_eq!(a.index.get(&bad).cloned(), decided, "same decision");
    // Re-judging wrote no message: that waits for the leader's plan.
    assert!(a.index.messages(&bad).is_none());
    assert!(a.index.unrendered() > 0);

    let after = message_of(&a.plan(now()));
    assert!(
        after.contains("1 of 3 matching nodes are outside mainland China")
            && after.contains("hk-1"),
        "{after}"
    );
    assert_eq!(a.index.unrendered(), 0);
}

#[test]
fn events_and_reports_carry_the_workload_uid() {
    // `kubectl describe` lists an object's Events by uid: an Event whose
    // regarding has no uid would not be shown there.
    let mut w = base();
    for o in &mut w.workloads {
        if o["metadata"]["name"] == "bad" {
            o["metadata"]["uid"] = json!("0b5e-bad-uid");
        }
    }
    let mut a = auditor(&w);
    let plan = a.plan(now());
    let (_, event) = plan
        .events
        .iter()
        .find(|(k, _)| k.object.name == "bad")
        .unwrap();
    assert_eq!(event.regarding.uid.as_deref(), Some("0b5e-bad-uid"));
    let result = plan.reports["app"]
        .results
        .iter()
        .find(|r| r.resources[0].name == "bad")
        .unwrap();
    assert_eq!(result.resources[0].uid.as_deref(), Some("0b5e-bad-uid"));
    // Manifests without one (api) are named without a uid.
    let api = plan.reports["app"]
        .results
        .iter()
        .find(|r| r.resources[0].name == "api")
        .unwrap();
    assert_eq!(api.resources[0].uid, None);
}

#[test]
fn a_new_mainland_region_rewrites_the_fix_of_workloads_it_does_not_affect() {
    // `pooled` selects pool=a only: its fix suggests the cluster's mainland
    // regions. A node in a new mainland region (not in pool a) changes no
    // decision of it, but its fix must name the new region.
    let mut w = base();
    let mut pooled = deployment("app", "pooled", json!({"app": "pooled"}), None);
    pooled["spec"]["template"]["spec"]["nodeSelector"] = json!({"pool": "a"});
    w.workloads.push(pooled);
    let mut a = auditor(&w);
    let fix_of = |plan: &AuditPlan| placement_message(plan, "pooled");
    let before = fix_of(&a.plan(now()));
    assert!(
        before.contains("In [cn-north-1, cn-northwest-1]"),
        "{before}"
    );

    let mut w2 = w.clone();
    w2.node("sh-1", Some("cn-shanghai"));
    let (_, rejudged) = a.update(w2.inventory(), now());
    let pooled_key = key(WorkloadKind::Deployment, "app", "pooled");
    assert!(!rejudged.contains(&pooled_key), "sh-1 is not in pool a");
    let after = fix_of(&a.plan(now()));
    assert!(
        after.contains("In [cn-north-1, cn-northwest-1, cn-shanghai]"),
        "{after}"
    );
}

/// Issue 17: an EgressUnrestricted message names a NetworkPolicy that
/// selects a label only the Deployment (not its pods) carries, so such a
/// policy appearing re-judges the Deployment and its message says so.
#[test]
fn a_near_miss_network_policy_rejudges_the_workload_it_nearly_selects() {
    let mut w = World::default();
    w.policies
        .push(policy("personal-mainland", "Deny", "MainlandOnly"));
    w.node("bj-1", Some("cn-north-1"));
    w.namespaces.insert("pay".into(), BTreeMap::new());
    let mut ledger = deployment(
        "pay",
        "ledger",
        json!({"app": "ledger"}),
        Some("cn-north-1"),
    );
    ledger["metadata"]["labels"] = json!({"team": "payments"});
    w.workloads = vec![ledger];
    let mut a = auditor(&w);
    let message = |plan: &AuditPlan| {
        plan.reports["pay"]
            .results
            .iter()
            .find(|r| r.rule == "EgressUnrestricted")
            .map(|r| r.message.clone())
            .unwrap_or_default()
    };
    let before = message(&a.plan(now()));
    assert!(!before.contains("nearly"), "{before}");

    let mut w2 = w.clone();
    w2.network_policies.push(json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": "team-egress", "namespace": "pay"},
        "spec": {"podSelector": {"matchLabels": {"team": "payments"}}, "policyTypes": ["Egress"],
                 "egress": [{"to": [{"namespaceSelector": {}}]}]}
    }));
    let (_, rejudged) = a.update(w2.inventory(), now());
    assert_eq!(
        rejudged,
        BTreeSet::from([key(WorkloadKind::Deployment, "pay", "ledger")])
    );
    let after = message(&a.plan(now()));
    assert!(
        after.contains("nearly: NetworkPolicy pay/team-egress"),
        "{after}"
    );
}

/// A namespace with 300 compliant and 300 unconstrained Deployments, a
/// report budget that fits only part of it: every failure is kept, passes
/// make room, the summary counts everything, and the report says what it
/// left out.
#[test]
fn a_report_over_its_byte_budget_keeps_failures_first_and_says_so() {
    let mut w = base();
    w.workloads.clear();
    for i in 0..300 {
        // Named so that, in report order, the passes come first.
        w.workloads.push(deployment(
            "app",
            &format!("a-{i:03}"),
            json!({"app": "a"}),
            Some("cn-north-1"),
        ));
        w.workloads.push(deployment(
            "app",
            &format!("z-{i:03}"),
            json!({"app": "z"}),
            None,
        ));
    }
    // Room for every failure and a few passes.
    let mut whole = auditor(&w);
    let all = whole.plan(now()).reports["app"].results.clone();
    assert_eq!(all.len(), 600);
    let fail_bytes: usize = all
        .iter()
        .filter(|r| r.result == ResultKind::Fail)
        .map(|r| r.serialized_len())
        .sum();
    let budget = fail_bytes + 10 * 1024;
    let mut a = Auditor::new(PlanConfig {
        max_report_bytes: budget,
        ..PlanConfig::default()
    });
    a.full_pass(w.inventory(), now());
    let plan = a.plan(now());
    let report = &plan.reports["app"];
    let fails = report
        .results
        .iter()
        .filter(|r| r.result == ResultKind::Fail)
        .count();
    assert_eq!(fails, 300, "every failure is kept");
    assert!(report.truncated > 0, "the budget forces truncation");
    assert_eq!(report.truncated as u64, report.omitted.pass);
    assert_eq!(report.omitted.fail, 0);
    assert_eq!(report.results.len() + report.truncated, 600);

    let obj = report.to_object(ReportFormat::PolicyReport, Some("app"));
    // The summary counts every result, not only those shown.
    assert_eq!(
        obj["summary"],
        json!({"pass": 300, "fail": 300, "warn": 0, "error": 0, "skip": 0})
    );
    assert_eq!(
        obj["metadata"]["annotations"]["residencyguard.io/results-truncated"],
        report.truncated.to_string()
    );
    let results = obj["results"].as_array().unwrap();
    let notice = results.last().unwrap();
    assert_eq!(notice["rule"], "ReportTruncated");
    assert_eq!(notice["result"], "warn");
    assert_eq!(
        notice["properties"]["resultsLeftOut"],
        report.truncated.to_string()
    );
    assert_eq!(notice["properties"]["resultsTotal"], "600");
    let msg = notice["message"].as_str().unwrap();
    assert!(
        msg.contains(&format!("shows {} of 600 results", report.results.len())),
        "{msg}"
    );
    // Report order is kept for what is shown (passes, then failures).
    assert_eq!(results[0]["rule"], "Compliant");
    // Under the budget, envelope included with room to spare.
    let bytes = serde_json::to_vec(&obj).unwrap().len();
    assert!(bytes <= budget + 4096, "{bytes} bytes");
}

/// At the scale of the issue: 1,000 failures with ~1.5 KB messages made a
/// ~1.6 MB report under the old 1,000-result cap, over etcd's ~1.5 MiB. By
/// bytes the report stays under 1 MiB plus its envelope, failures kept.
#[test]
fn a_report_of_a_thousand_long_failures_stays_under_a_mebibyte() {
    use residency_guard::audit::plan::{ObjectRef, ReportResult, fit_report};
    let results: Vec<ReportResult> = (0..1000)
        .map(|i| ReportResult {
            policy: "mainland-personal-data".into(),
            rule: "NodeOutsideMainland".into(),
            result: ResultKind::Fail,
            severity: "high",
            message: format!("Deployment payments/api-{i:04} {}", "x".repeat(1400)),
            resources: vec![ObjectRef {
                uid: Some(format!("00000000-0000-4000-8000-{i:012}")),
                ..ObjectRef::workload(&key(
                    WorkloadKind::Deployment,
                    "payments",
                    &format!("api-{i:04}"),
                ))
            }],
            properties: BTreeMap::from([
                (
                    "field".to_string(),
                    "spec.template.spec.nodeSelector".to_string(),
                ),
                ("action".to_string(), "Deny".to_string()),
                ("classes".to_string(), "personal".to_string()),
            ]),
        })
        .collect();
    let all = serde_json::to_vec(
        &results
            .iter()
            .map(ReportResult::to_json)
            .collect::<Vec<_>>(),
    )
    .unwrap()
    .len();
    assert!(all > 3 * 1024 * 1024 / 2, "the old cap kept {all} bytes");
    let report = fit_report(results, PlanConfig::default().max_report_bytes, Lang::En);
    assert!(report.truncated > 0);
    assert_eq!(report.summary.fail, 1000);
    let bytes = serde_json::to_vec(&report.to_object(ReportFormat::PolicyReport, Some("payments")))
        .unwrap()
        .len();
    assert!(bytes <= 1024 * 1024 + 4096, "{bytes} bytes");
    // The first results in report order are the ones kept.
    assert_eq!(report.results[0].resources[0].name, "api-0000");
}

// --- storage -----------------------------------------------------------------

fn pv(name: &str, zone: &str, claim: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "PersistentVolume",
        "metadata": {"name": name, "labels": {"topology.kubernetes.io/zone": zone}},
        "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
            "claimRef": {"namespace": "app", "name": claim},
            "csi": {"driver": "ebs.csi.aws.com", "volumeHandle": name}}})
}

fn pvc(name: &str, class: &str, volume: Option<&str>) -> Value {
    let mut spec = json!({"accessModes": ["ReadWriteOnce"], "storageClassName": class,
        "resources": {"requests": {"storage": "1Gi"}}});
    if let Some(v) = volume {
        spec["volumeName"] = json!(v);
    }
    json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": name, "namespace": "app"}, "spec": spec})
}

fn storage_class(name: &str, mode: &str) -> Value {
    json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
        "metadata": {"name": name}, "provisioner": "ebs.csi.aws.com", "volumeBindingMode": mode})
}

/// `base()` plus a StatefulSet `db` pinned to cn-north-1 whose claim
/// data-db-0 is bound to PV pv-0 in cn-north-1a, and a Deployment `cache`
/// whose claim `cache` is not bound yet (class `wffc`).
fn storage_world() -> World {
    let mut w = base();
    let mut db = json!({"apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": "db", "namespace": "app"},
        "spec": {"serviceName": "db",
            "volumeClaimTemplates": [{"metadata": {"name": "data"},
                "spec": {"storageClassName": "wffc", "accessModes": ["ReadWriteOnce"],
                    "resources": {"requests": {"storage": "1Gi"}}}}],
            "template": {"metadata": {"labels": {"app": "db"}},
                "spec": {"nodeSelector": {REGION: "cn-north-1"}}}}});
    db["spec"]["template"]["metadata"]["labels"]["residencyguard.io/data-class"] =
        json!("personal");
    let mut cache = deployment("app", "cache", json!({"app": "cache"}), Some("cn-north-1"));
    cache["spec"]["template"]["spec"]["volumes"] =
        json!([{"name": "c", "persistentVolumeClaim": {"claimName": "cache"}}]);
    w.workloads.push(db);
    w.workloads.push(cache);
    w.storage = vec![
        storage_class("wffc", "WaitForFirstConsumer"),
        storage_class("now", "Immediate"),
        pv("pv-0", "cn-north-1a", "data-db-0"),
        pvc("data-db-0", "wffc", Some("pv-0")),
        pvc("cache", "wffc", None),
    ];
    w
}

fn storage_codes(a: &Auditor, k: &WorkloadKey) -> Vec<Code> {
    a.index
        .get(k)
        .unwrap()
        .policies
        .iter()
        .flat_map(|p| p.violations.iter().map(|v| v.code))
        .filter(|c| c.is_storage())
        .collect()
}

#[test]
fn a_pv_relabelled_abroad_rejudges_the_statefulset_bound_to_it() {
    let w = storage_world();
    let mut a = auditor(&w);
    let db = key(WorkloadKind::StatefulSet, "app", "db");
    assert!(storage_codes(&a, &db).is_empty());

    let mut w2 = w.clone();
    w2.storage[2] = pv("pv-0", "ap-east-1a", "data-db-0");
    let inv2 = w2.inventory();
    let changes = diff(a.inventory(), &inv2);
    assert_eq!(changes.len(), 1, "{changes:?}");
    assert!(matches!(&changes[0], Change::PersistentVolume { name, .. } if name == "pv-0"));
    let affected = affected_by(&changes[0], &inv2, &a.index);
    assert_eq!(affected, BTreeSet::from([db.clone()]));

    let (_, rejudged) = a.update(inv2, now());
    assert_eq!(rejudged, affected);
    assert_eq!(storage_codes(&a, &db), [Code::VolumeOutsideMainland]);
    let plan = a.plan(now());
    assert_eq!(
        plan.statuses["personal-mainland"]
            .top_offenders
            .iter()
            .find(|o| o.name == "db")
            .unwrap()
            .codes,
        ["VolumeOutsideMainland"]
    );
    let ev = &plan.events[&EventKey {
        object: db.clone(),
        policy: "personal-mainland".into(),
        code: Code::VolumeOutsideMainland,
    }];
    assert!(
        ev.note.contains("pv-0") && ev.note.contains("ap-east-1a"),
        "{}",
        ev.note
    );
    let r = plan.reports["app"]
        .results
        .iter()
        .find(|r| r.rule == "VolumeOutsideMainland")
        .unwrap();
    // Data proven abroad weighs `critical`; the policy is Audit: two steps less.
    assert_eq!(r.severity, "medium");
    assert_eq!(r.resources[0].name, "db");
    assert_eq!(r.properties["persistentVolume"], "pv-0");
    assert_eq!(r.properties["claim"], "app/data-db-0");
    assert_eq!(r.properties["volume"], "data");
    assert_eq!(r.properties["region"], "ap-east-1");
    assert_eq!(r.properties["reason"], "boundOutside");
}

#[test]
fn a_claim_binding_rejudges_the_workloads_that_use_it() {
    let w = storage_world();
    let mut a = auditor(&w);
    let mut w2 = w.clone();
    w2.storage.push(pv("pv-hk", "ap-east-1a", "cache"));
    w2.storage[4] = pvc("cache", "wffc", Some("pv-hk"));
    let inv2 = w2.inventory();
    let changes = diff(a.inventory(), &inv2);
    assert_eq!(changes.len(), 2, "{changes:?}");
    let affected: BTreeSet<WorkloadKey> = changes
        .iter()
        .flat_map(|c| affected_by(c, &inv2, &a.index))
        .collect();
    let cache = key(WorkloadKind::Deployment, "app", "cache");
    assert_eq!(affected, BTreeSet::from([cache.clone()]));
    a.update(inv2, now());
    assert_eq!(storage_codes(&a, &cache), [Code::VolumeOutsideMainland]);
}

#[test]
fn a_storage_class_change_rejudges_only_workloads_with_claims() {
    let w = storage_world();
    let mut a = auditor(&w);
    let mut w2 = w.clone();
    // The class is recreated Immediate (binding mode is immutable: delete
    // and create).
    w2.storage[0] = storage_class("wffc", "Immediate");
    let inv2 = w2.inventory();
    let changes = diff(a.inventory(), &inv2);
    assert!(
        matches!(changes.as_slice(), [Change::StorageClass { name }] if name == "wffc"),
        "{changes:?}"
    );
    let affected = affected_by(&changes[0], &inv2, &a.index);
    let cache = key(WorkloadKind::Deployment, "app", "cache");
    let db = key(WorkloadKind::StatefulSet, "app", "db");
    assert_eq!(affected, BTreeSet::from([cache.clone(), db.clone()]));
    a.update(inv2, now());
    assert_eq!(storage_codes(&a, &cache), [Code::VolumeNotGuaranteed]);
    // db's claim is bound in cn-north-1a; its template would now provision
    // anywhere.
    assert_eq!(storage_codes(&a, &db), [Code::VolumeNotGuaranteed]);
}

// --- report formats and severity (issue 26) ----------------------------------

/// A rendered report without the fields that name its API.
fn content(obj: &Value) -> Value {
    let mut v = obj.clone();
    let m = v.as_object_mut().unwrap();
    m.remove("apiVersion");
    m.remove("kind");
    m.remove("source");
    v
}

/// One plan, two renderings: a PolicyReport and an OpenReports Report (and
/// their cluster-scoped kinds) carry the same results, summary and
/// metadata; only the API, the kind and the Report's `source` differ.
#[test]
fn both_report_formats_carry_the_same_content() {
    let w = base();
    let mut a = auditor(&w);
    // bj-1 abroad: failing and passing results, and a cluster report.
    let mut w2 = w.clone();
    w2.node("bj-1", Some("ap-east-1"));
    a.update(w2.inventory(), now());
    let plan = a.plan(now());
    assert!(!plan.cluster_report.results.is_empty());
    let reports = plan
        .reports
        .iter()
        .map(|(ns, r)| (Some(ns.as_str()), r))
        .chain([(None, &plan.cluster_report)]);
    for (ns, report) in reports {
        let wg = report.to_object(ReportFormat::PolicyReport, ns);
        let or = report.to_object(ReportFormat::OpenReports, ns);
        assert_eq!(content(&wg), content(&or), "{ns:?}");
        assert_eq!(wg["apiVersion"], "wgpolicyk8s.io/v1alpha2");
        assert_eq!(or["apiVersion"], "openreports.io/v1alpha1");
        let kinds = match ns {
            Some(_) => ("PolicyReport", "Report"),
            None => ("ClusterPolicyReport", "ClusterReport"),
        };
        assert_eq!(
            (wg["kind"].as_str(), or["kind"].as_str()),
            (Some(kinds.0), Some(kinds.1))
        );
        assert_eq!(or["source"], "residency-guard");
        assert!(
            wg.get("source").is_none(),
            "v1alpha2 has no report-level source"
        );
        // A report covers a namespace; each result names its resource.
        assert!(wg.get("scope").is_none() && or.get("scope").is_none());
        let results = or["results"].as_array().unwrap();
        assert!(!results.is_empty());
        for r in results {
            assert_eq!(r["source"], "residency-guard");
            assert!(!r["resources"].as_array().unwrap().is_empty(), "{r}");
        }
        assert_eq!(or["metadata"]["name"], "residency-guard");
        assert_eq!(or["metadata"]["namespace"].as_str(), ns);
    }
    // The finding itself, in both: the pod bound abroad.
    let or = plan.reports["app"].to_object(ReportFormat::OpenReports, Some("app"));
    let bound = or["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["rule"] == "BoundToNodeOutside")
        .unwrap();
    assert_eq!(bound["result"], "fail");
    assert_eq!(bound["properties"]["node"], "bj-1");
    assert_eq!(bound["properties"]["region"], "ap-east-1");
    assert_eq!(bound["properties"]["classes"], "personal");
}

/// A truncated report is truncated the same way in both formats: the same
/// results kept in the same order, the same annotation, summary and notice.
#[test]
fn both_report_formats_truncate_alike() {
    use residency_guard::audit::plan::{ObjectRef, ReportResult, fit_report};
    let results: Vec<ReportResult> = (0..400)
        .map(|i| ReportResult {
            policy: "mainland-personal-data".into(),
            rule: if i % 2 == 0 {
                "NodeOutsideMainland".into()
            } else {
                "Compliant".into()
            },
            result: if i % 2 == 0 {
                ResultKind::Fail
            } else {
                ResultKind::Pass
            },
            severity: if i % 2 == 0 { "high" } else { "info" },
            message: format!("Deployment payments/api-{i:04} {}", "x".repeat(900)),
            resources: vec![ObjectRef::workload(&key(
                WorkloadKind::Deployment,
                "payments",
                &format!("api-{i:04}"),
            ))],
            properties: BTreeMap::from([("action".to_string(), "Deny".to_string())]),
        })
        .collect();
    let report = fit_report(results, 128 * 1024, Lang::En);
    assert!(report.truncated > 0);
    let wg = report.to_object(ReportFormat::PolicyReport, Some("payments"));
    let or = report.to_object(ReportFormat::OpenReports, Some("payments"));
    assert_eq!(content(&wg), content(&or));
    assert_eq!(
        or["metadata"]["annotations"]["residencyguard.io/results-truncated"],
        report.truncated.to_string()
    );
    let shown = or["results"].as_array().unwrap();
    assert_eq!(shown.last().unwrap()["rule"], "ReportTruncated");
    assert_eq!(shown.len(), report.results.len() + 1);
    assert!(
        shown[..shown.len() - 1]
            .iter()
            .all(|r| r["result"] == "fail")
    );
    assert_eq!(or["summary"]["fail"], 200);
    assert_eq!(or["summary"]["pass"], 200);
    // The same byte cap: the two objects differ only by their API's names.
    let (a, b) = (
        serde_json::to_vec(&wg).unwrap().len(),
        serde_json::to_vec(&or).unwrap().len(),
    );
    assert!(a.abs_diff(b) < 64, "{a} vs {b} bytes");
    assert!(b <= 128 * 1024 + 4096, "{b} bytes");
}

/// Severity: what the finding proves, lowered one step under a Warn policy
/// and two under an Audit policy, never below `low` (docs/policy-reports.md).
#[test]
fn severity_is_the_findings_weight_lowered_by_the_policy_action() {
    use residency_guard::api::Action;
    use residency_guard::audit::plan::severity;
    let abroad = ["critical", "high", "medium"];
    let can_go_abroad = ["high", "medium", "low"];
    let not_guaranteed = ["medium", "low", "low"];
    let table = [
        (Code::BoundToNodeOutside, abroad),
        (Code::VolumeOutsideMainland, abroad),
        (Code::StorageEndpointOutside, abroad),
        (Code::NodeOutsideMainland, can_go_abroad),
        (Code::EgressOutsideMainland, can_go_abroad),
        (Code::EgressExternalForbidden, can_go_abroad),
        (Code::HostNetwork, can_go_abroad),
        (Code::VolumeNotGuaranteed, can_go_abroad),
        (Code::ClassNotOnPodTemplate, can_go_abroad),
        (Code::PlacementNotGuaranteed, not_guaranteed),
        (Code::EgressUnrestricted, not_guaranteed),
        (Code::EgressAllowsAll, not_guaranteed),
    ];
    for (code, [deny, warn, audit]) in table {
        assert_eq!(severity(code, Action::Deny), deny, "{code:?} Deny");
        assert_eq!(severity(code, Action::Warn), warn, "{code:?} Warn");
        assert_eq!(severity(code, Action::Audit), audit, "{code:?} Audit");
    }
    // The same policy under Deny: the pod bound abroad is `critical`.
    let mut w = base();
    w.policies = vec![policy("personal-mainland", "Deny", "Unrestricted")];
    let mut a = auditor(&w);
    w.node("bj-1", Some("ap-east-1"));
    a.update(w.inventory(), now());
    let plan = a.plan(now());
    let bound = plan.reports["app"]
        .results
        .iter()
        .find(|r| r.rule == "BoundToNodeOutside")
        .unwrap();
    assert_eq!(bound.severity, "critical");
    assert_eq!(plan.cluster_report.results[0].severity, "critical");
    let unpinned = plan.reports["app"]
        .results
        .iter()
        .find(|r| r.rule == "PlacementNotGuaranteed")
        .unwrap();
    assert_eq!(unpinned.severity, "medium");
}

/// Layer CRDs installed after start change the egress semantics (`auto`:
/// Cilium's make it `cilium`): every classified object is judged again,
/// though no object changed.
#[test]
fn an_egress_semantics_change_rejudges_everything() {
    let w = base();
    let a = auditor(&w);
    let before = w.inventory();
    let mut snapshot = (*before.snapshot).clone();
    snapshot
        .network
        .set_semantics(residency_guard::engine::EgressSemantics {
            cni: residency_guard::engine::Cni::Cilium,
            cilium_enforcement: Default::default(),
        });
    let after = Inventory {
        snapshot: Arc::new(snapshot),
        ..(*before).clone()
    };
    let changes = diff(a.inventory(), &after);
    assert_eq!(changes.len(), 1, "{changes:?}");
    assert!(
        matches!(&changes[0], Change::EgressLayer { key, namespace: None } if key == "egress semantics kubernetes -> cilium"),
        "{changes:?}"
    );
    let affected = affected_by(&changes[0], &after, &a.index);
    let indexed: BTreeSet<WorkloadKey> = a.index.iter().map(|(k, _)| k.clone()).collect();
    assert!(!indexed.is_empty());
    assert_eq!(affected, indexed);
}

/// A Calico NetworkSet is namespaced, but a rule of any namespace may
/// select it: its change re-judges every classified object, not only
/// those of its namespace.
#[test]
fn a_network_set_change_rejudges_every_namespace() {
    let w = base();
    let a = auditor(&w);
    let before = w.inventory();
    let set = serde_json::json!({
        "apiVersion": "crd.projectcalico.org/v1", "kind": "NetworkSet",
        "metadata": {"name": "out", "namespace": "elsewhere", "labels": {"role": "egress"}},
        "spec": {"nets": ["8.8.8.0/24"]}
    });
    let after = Inventory {
        egress_layers: Arc::new([("NetworkSet elsewhere/out".to_string(), Arc::new(set))].into()),
        ..(*before).clone()
    };
    let changes = diff(a.inventory(), &after);
    assert_eq!(changes.len(), 1, "{changes:?}");
    assert!(
        matches!(&changes[0], Change::EgressLayer { key, namespace: None } if key == "NetworkSet elsewhere/out"),
        "{changes:?}"
    );
    let affected = affected_by(&changes[0], &after, &a.index);
    let indexed: BTreeSet<WorkloadKey> = a.index.iter().map(|(k, _)| k.clone()).collect();
    assert!(!indexed.is_empty());
    assert_eq!(affected, indexed);
}
