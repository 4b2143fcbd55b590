//! What an UPDATE of a workload can do to where its pods run.
//!
//! Controllers keep writing to objects that may violate a policy that
//! arrived after them: the Deployment controller lowers an old
//! ReplicaSet's `spec.replicas` during a rollout or a `kubectl scale`, the
//! garbage collector rewrites `ownerReferences`, an HPA scales down. A
//! write that can only remove pods or narrow where they may run makes
//! nothing worse, and refusing it stalls the very remediation the policy
//! asks for (a Deployment scaled to 0 whose ReplicaSet stays at 2). Such a
//! write is admitted, with the violations as warnings; anything else is
//! judged as a new object.

use k8s_openapi::api::core::v1::{NodeSelector, NodeSelectorTerm};

use super::Workload;
use super::workload::PodSpecView;
use crate::api::DATA_CLASS_LABEL;

/// True when `new` can only run fewer pods than `old`, or the same pods on
/// a subset of the nodes `old` allowed, with the same labels (so the same
/// NetworkPolicies select them), volumes and data classes.
///
/// Narrowing is read syntactically, never against today's nodes (which
/// change): a `nodeSelector` that keeps every old entry and adds some, and
/// required node affinity whose every term contains every requirement of
/// some old term. Preferred affinity never changes where a pod may run.
pub fn only_removes_or_narrows(old: &Workload, new: &Workload) -> bool {
    old.kind == new.kind
        && old.template_labels == new.template_labels
        && old.labels.get(DATA_CLASS_LABEL) == new.labels.get(DATA_CLASS_LABEL)
        && old.claim_templates == new.claim_templates
        && replicas_not_raised(old.replicas, new.replicas)
        && pod_spec_narrower(&old.pod, &new.pod)
}

fn replicas_not_raised(old: Option<i32>, new: Option<i32>) -> bool {
    match (old, new) {
        (_, Some(0)) | (None, None) => true,
        (Some(o), Some(n)) => n <= o,
        // Unset means the API's default (1 for the kinds that have it):
        // compare only what both state.
        _ => false,
    }
}

/// Every field equal, except that `new` may add `nodeSelector` entries and
/// required node affinity requirements, and change preferred affinity.
fn pod_spec_narrower(old: &PodSpecView, new: &PodSpecView) -> bool {
    let old_selector = old.node_selector.clone().unwrap_or_default();
    let new_selector = new.node_selector.clone().unwrap_or_default();
    if !old_selector
        .iter()
        .all(|(k, v)| new_selector.get(k) == Some(v))
    {
        return false;
    }
    if !required_narrower(required_of(old), required_of(new)) {
        return false;
    }
    // With the scheduling constraints set aside, nothing else may differ.
    let mut rest = new.clone();
    rest.node_selector = old.node_selector.clone();
    rest.affinity = old.affinity.clone();
    rest == *old
}

fn required_of(pod: &PodSpecView) -> Option<&NodeSelector> {
    pod.affinity
        .as_ref()?
        .node_affinity
        .as_ref()?
        .required_during_scheduling_ignored_during_execution
        .as_ref()
}

/// Every node the new required affinity admits, the old admitted too: each
/// new term holds every requirement of a non-empty old term (an empty term
/// matches no node, so adding to it widens).
fn required_narrower(old: Option<&NodeSelector>, new: Option<&NodeSelector>) -> bool {
    let Some(old) = old else {
        return true;
    };
    let Some(new) = new else {
        return false;
    };
    new.node_selector_terms.iter().all(|n| {
        old.node_selector_terms
            .iter()
            .any(|o| !is_empty_term(o) && term_contains(n, o))
    })
}

fn is_empty_term(t: &NodeSelectorTerm) -> bool {
    t.match_expressions.as_ref().is_none_or(Vec::is_empty)
        && t.match_fields.as_ref().is_none_or(Vec::is_empty)
}

/// `outer` holds every requirement of `inner`.
fn term_contains(outer: &NodeSelectorTerm, inner: &NodeSelectorTerm) -> bool {
    let all_in = |inner: &Option<Vec<_>>, outer: &Option<Vec<_>>| {
        inner
            .iter()
            .flatten()
            .all(|r| outer.iter().flatten().any(|o| o == r))
    };
    all_in(&inner.match_expressions, &outer.match_expressions)
        && all_in(&inner.match_fields, &outer.match_fields)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deployment(replicas: i32, template_spec: serde_json::Value) -> Workload {
        let doc = json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "api", "labels": {DATA_CLASS_LABEL: "personal"}},
            "spec": {"replicas": replicas, "template": {
                "metadata": {"labels": {"app": "api", DATA_CLASS_LABEL: "personal"}},
                "spec": template_spec}}});
        Workload::from_value(&doc, "payments").unwrap()
    }

    fn required(terms: serde_json::Value) -> serde_json::Value {
        json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": terms}}})
    }

    fn region_in(values: &[&str]) -> serde_json::Value {
        json!({"key": "topology.kubernetes.io/region", "operator": "In", "values": values})
    }

    #[test]
    fn scaling_down_only_removes_pods() {
        let old = deployment(2, json!({}));
        assert!(only_removes_or_narrows(&old, &deployment(0, json!({}))));
        assert!(only_removes_or_narrows(&old, &deployment(1, json!({}))));
        assert!(only_removes_or_narrows(&old, &deployment(2, json!({}))));
        assert!(!only_removes_or_narrows(&old, &deployment(3, json!({}))));
    }

    #[test]
    fn adding_a_constraint_narrows() {
        let old = deployment(2, json!({"nodeSelector": {"disk": "ssd"}}));
        let more = deployment(
            2,
            json!({"nodeSelector": {"disk": "ssd", "topology.kubernetes.io/region": "cn-north-1"}}),
        );
        assert!(only_removes_or_narrows(&old, &more));
        assert!(!only_removes_or_narrows(&more, &old), "removing one widens");
        let pinned = deployment(
            2,
            json!({"nodeSelector": {"disk": "ssd"}, "affinity": required(json!([{"matchExpressions": [region_in(&["cn-north-1"])]}]))}),
        );
        assert!(only_removes_or_narrows(&old, &pinned));
        assert!(!only_removes_or_narrows(&pinned, &old));
    }

    #[test]
    fn affinity_terms_must_each_narrow_an_old_one() {
        let a = json!({"key": "a", "operator": "Exists"});
        let b = json!({"key": "b", "operator": "Exists"});
        let old = deployment(
            1,
            json!({"affinity": required(json!([{"matchExpressions": [a]}]))}),
        );
        let narrower = deployment(
            1,
            json!({"affinity": required(json!([{"matchExpressions": [a, b]}]))}),
        );
        let another_term = deployment(
            1,
            json!({"affinity": required(json!([{"matchExpressions": [a]}, {"matchExpressions": [b]}]))}),
        );
        assert!(only_removes_or_narrows(&old, &narrower));
        assert!(
            !only_removes_or_narrows(&old, &another_term),
            "a new term widens"
        );
        // An empty term matches no node: filling it in widens.
        let empty = deployment(1, json!({"affinity": required(json!([{}]))}));
        assert!(!only_removes_or_narrows(&empty, &narrower));
    }

    #[test]
    fn anything_else_is_judged_as_new() {
        let old = deployment(2, json!({}));
        let host = deployment(2, json!({"hostNetwork": true}));
        assert!(!only_removes_or_narrows(&old, &host));
        let named = deployment(2, json!({"nodeName": "hk-1"}));
        assert!(!only_removes_or_narrows(&old, &named));
        let mut relabelled = deployment(1, json!({}));
        relabelled.template_labels = std::sync::Arc::new(
            [("app".to_string(), "other".to_string())]
                .into_iter()
                .collect(),
        );
        assert!(
            !only_removes_or_narrows(&old, &relabelled),
            "other labels, other NetworkPolicies"
        );
        let volume = deployment(
            1,
            json!({"volumes": [{"name": "d", "nfs": {"server": "203.0.113.1"}}]}),
        );
        assert!(!only_removes_or_narrows(&old, &volume));
    }
}
