//! The engine's judgement of a NetworkPolicy change (what the webhook's
//! NetworkPolicy endpoint answers with): the egress violations the change
//! opens for governed workloads, and the workloads it cannot judge.

use std::sync::Arc;

use jiff::Timestamp;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use residency_guard::api::{Action, ResidencyPolicy};
use residency_guard::engine::{
    AddressSpace, Catalogue, Code, Snapshot, Workload, judge_network_policy_change,
};
use serde_json::{Value, json};

const NOW: &str = "2026-11-23T00:00:00Z";

fn now() -> Timestamp {
    NOW.parse().unwrap()
}

fn np(name: &str, app: &str, cidrs: &[&str]) -> NetworkPolicy {
    let mut to = vec![json!({"podSelector": {}})];
    to.extend(cidrs.iter().map(|c| json!({"ipBlock": {"cidr": c}})));
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "payments"},
        "spec": {"podSelector": {"matchLabels": {"app": app}}, "policyTypes": ["Egress"],
                 "egress": [{"to": to}]}
    }))
    .unwrap()
}

fn deployment(name: &str, class: &str) -> Arc<Workload> {
    let v: Value = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": "payments"},
        "spec": {"template": {"metadata": {"labels": {"app": name, "residencyguard.io/data-class": class}},
                 "spec": {"nodeSelector": {"topology.kubernetes.io/region": "cn-north-1"},
                          "containers": [{"name": "c", "image": "i"}]}}}
    });
    Arc::new(Workload::from_value(&v, "payments").unwrap())
}

fn snapshot(nps: &[NetworkPolicy]) -> Snapshot {
    let mut s = Snapshot::new(Catalogue::builtin().clone(), AddressSpace::builtin());
    let policy: ResidencyPolicy = serde_json::from_value(json!({
        "apiVersion": "residencyguard.io/v1alpha1", "kind": "ResidencyPolicy",
        "metadata": {"name": "mainland"},
        "spec": {"dataClasses": ["personal"], "egress": {"mode": "MainlandOnly"}, "action": "Deny"}
    }))
    .unwrap();
    s.add_policy(&policy, now()).unwrap();
    s.namespaces.insert("payments".into(), Default::default());
    for n in nps {
        s.network.add_network_policy(n);
    }
    s
}

#[test]
fn an_ip_block_abroad_is_what_the_change_opens() {
    let s = snapshot(&[np("api-egress", "api", &[])]);
    let workloads = [
        deployment("api", "personal"),
        deployment("other", "personal"),
    ];
    let change = judge_network_policy_change(
        &s,
        &workloads,
        "payments",
        "api-egress",
        Some(&np("api-egress", "api", &["8.8.8.0/24"])),
        now(),
    );
    assert_eq!(change.action(), Some(Action::Deny));
    assert_eq!(change.opened.len(), 1, "{change:?}");
    let o = &change.opened[0];
    assert_eq!(o.workload, "Deployment payments/api");
    assert_eq!(o.policy, "mainland");
    assert_eq!(o.violation.code, Code::EgressOutsideMainland);
    assert!(change.unjudgeable.is_empty());
}

#[test]
fn deleting_the_isolating_policy_opens_unrestricted_egress() {
    let s = snapshot(&[np("api-egress", "api", &[])]);
    let workloads = [deployment("api", "personal")];
    let change = judge_network_policy_change(&s, &workloads, "payments", "api-egress", None, now());
    let codes: Vec<Code> = change.opened.iter().map(|o| o.violation.code).collect();
    assert_eq!(codes, [Code::EgressUnrestricted]);
}

#[test]
fn a_change_that_selects_no_governed_pod_opens_nothing() {
    let s = snapshot(&[np("api-egress", "api", &[])]);
    let workloads = [deployment("api", "personal")];
    // A NetworkPolicy for other pods, allowing egress anywhere.
    let change = judge_network_policy_change(
        &s,
        &workloads,
        "payments",
        "web-egress",
        Some(&np("web-egress", "web", &["0.0.0.0/0"])),
        now(),
    );
    assert_eq!(change, Default::default());
}

#[test]
fn a_violation_that_existed_before_is_not_blamed_on_the_change() {
    // Already open to 8.8.8.0/24; the change adds a mainland block only.
    let s = snapshot(&[np("api-egress", "api", &["8.8.8.0/24"])]);
    let workloads = [deployment("api", "personal")];
    let change = judge_network_policy_change(
        &s,
        &workloads,
        "payments",
        "api-egress",
        Some(&np("api-egress", "api", &["8.8.8.0/24", "52.80.0.0/16"])),
        now(),
    );
    assert!(change.opened.is_empty(), "{change:?}");
}

#[test]
fn a_workload_whose_label_cannot_be_read_makes_the_change_unjudgeable() {
    let s = snapshot(&[np("api-egress", "api", &[])]);
    let workloads = [deployment("api", "personal.medical")];
    let change = judge_network_policy_change(&s, &workloads, "payments", "api-egress", None, now());
    assert_eq!(change.unjudgeable.len(), 1);
    assert!(
        change.unjudgeable[0].to_string().contains("medical"),
        "{}",
        change.unjudgeable[0]
    );
}
