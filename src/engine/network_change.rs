//! "Does this NetworkPolicy change open cross-border egress for a governed
//! workload?" A NetworkPolicy carries no data-class label, so a change to
//! one is judged by what it does to the classified workloads of its
//! namespace: each is judged before and after, and an egress violation that
//! only the new set of NetworkPolicies has is what the change opens.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use jiff::Timestamp;
use k8s_openapi::api::networking::v1::NetworkPolicy;

use super::layers::{LayerKind, LayerPolicy, PodView};
use super::network::{CompiledNetworkPolicy, layer_kind};
use super::verdict::{Code, Violation};
use super::{ClassificationError, NamespaceFacts, Snapshot, Workload, evaluate};
use crate::api::Action;

/// What identifies a violation across two verdicts of one workload: the
/// same policy finding the same problem at the same field.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ViolationKey {
    pub policy: String,
    pub code: Code,
    pub field: String,
}

impl ViolationKey {
    pub fn new(policy: &str, v: &Violation) -> ViolationKey {
        ViolationKey {
            policy: policy.to_string(),
            code: v.code,
            field: v.field.clone(),
        }
    }
}

/// One egress violation the change would open.
#[derive(Clone, Debug, PartialEq)]
pub struct OpenedEgress {
    /// "Deployment ns/name".
    pub workload: String,
    /// Other objects the change opens the same for: same kind, labels,
    /// template labels, classes and host network (the replicas of one
    /// ReplicaSet), judged once through `workload`.
    pub alike: usize,
    pub policy: String,
    pub action: Action,
    pub violation: Violation,
}

/// The judgement of one NetworkPolicy change.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NetworkPolicyChange {
    pub opened: Vec<OpenedEgress>,
    /// Workloads whose label cannot be read, so what the change does to
    /// them is unknown: the change is refused until they are fixed (failing
    /// open here would let egress open unseen).
    pub unjudgeable: Vec<ClassificationError>,
}

impl NetworkPolicyChange {
    /// Add what `other` found that this one has not (two judgements of
    /// one change, each workload reported once).
    pub fn absorb(&mut self, other: NetworkPolicyChange) {
        for o in other.opened {
            if !self.opened.contains(&o) {
                self.opened.push(o);
            }
        }
        for e in other.unjudgeable {
            if !self.unjudgeable.contains(&e) {
                self.unjudgeable.push(e);
            }
        }
    }

    /// The strictest action among the opened violations.
    pub fn action(&self) -> Option<Action> {
        self.opened.iter().map(|o| o.action).max()
    }
}

/// Judge replacing NetworkPolicy `namespace/name` with `replacement`
/// (`None`: deleting it) for `workloads` (the namespace's workloads).
///
/// Only workloads whose pods the old or the new NetworkPolicy selects can
/// be affected; the others are not judged at all.
pub fn judge_network_policy_change(
    snapshot: &Snapshot,
    workloads: &[Arc<Workload>],
    namespace: &str,
    name: &str,
    replacement: Option<&NetworkPolicy>,
    now: Timestamp,
) -> NetworkPolicyChange {
    // Both sides read only this namespace: no copy of the whole snapshot.
    let before = snapshot.focused_on(namespace, &NamespaceFacts::default());
    let mut after = before.clone();
    after.network.remove_network_policy(namespace, name);
    let new = replacement.map(|np| {
        let mut np = np.clone();
        np.metadata.namespace = Some(namespace.to_string());
        if np.metadata.name.is_none() {
            np.metadata.name = Some(name.to_string());
        }
        np
    });
    if let Some(np) = &new {
        after.network.add_network_policy(np);
    }
    let old_compiled = before
        .network
        .policies_in(namespace)
        .iter()
        .find(|p| p.name == name);
    let new_compiled = new.as_ref().map(CompiledNetworkPolicy::from_k8s);
    let may_affect = |w: &Workload| {
        old_compiled.is_some_and(|p| p.selects(&w.template_labels))
            || new_compiled
                .as_ref()
                .is_some_and(|p| p.selects(&w.template_labels))
    };

    let mut out = NetworkPolicyChange::default();
    judge_affected(&before, &after, workloads, &may_affect, now, &mut out);
    out
}

/// Judge each workload `may_affect` accepts before and after, once per
/// group of objects alike in what egress reads, and record what opens.
fn judge_affected(
    before: &Snapshot,
    after: &Snapshot,
    workloads: &[Arc<Workload>],
    may_affect: &dyn Fn(&Workload) -> bool,
    now: Timestamp,
    out: &mut NetworkPolicyChange,
) {
    // Objects alike in everything egress reads are judged once: a
    // NetworkPolicy selecting a Deployment selects its ReplicaSets and
    // every one of their pods, which differ in name only.
    type EgressFacts<'a> = (
        super::WorkloadKind,
        &'a BTreeMap<String, String>,
        &'a BTreeMap<String, String>,
        Option<bool>,
        &'a [super::InheritedClass],
    );
    let mut groups: HashMap<EgressFacts<'_>, (&Workload, usize)> = HashMap::new();
    let mut order: Vec<EgressFacts<'_>> = Vec::new();
    for w in workloads.iter().filter(|w| may_affect(w)) {
        let facts: EgressFacts<'_> = (
            w.kind,
            &w.labels,
            &w.template_labels,
            w.pod.host_network,
            &w.inherited_classes,
        );
        match groups.get_mut(&facts) {
            Some((_, alike)) => *alike += 1,
            None => {
                groups.insert(facts, (w, 0));
                order.push(facts);
            }
        }
    }

    for (w, alike) in order.iter().filter_map(|f| groups.get(f)).copied() {
        let (was, will) = match (evaluate(before, w, now), evaluate(after, w, now)) {
            (Ok(was), Ok(will)) => (was, will),
            (Err(e), _) | (_, Err(e)) => {
                out.unjudgeable.push(e);
                continue;
            }
        };
        let had: Vec<ViolationKey> = was
            .violations()
            .map(|(p, v)| ViolationKey::new(&p.policy, v))
            .collect();
        for (p, v) in will.violations() {
            // A policy that did not govern the workload before is not a
            // change of its egress but of its classes or scope (a
            // Namespace relabelled into a policy): governance added, never
            // blamed on the change. Policy changes keep the governing set.
            let governed_before = was.policies.iter().any(|q| q.policy == p.policy);
            if !v.code.is_egress()
                || !governed_before
                || had.contains(&ViolationKey::new(&p.policy, v))
            {
                continue;
            }
            out.opened.push(OpenedEgress {
                workload: w.reference(),
                alike,
                policy: p.policy.to_string(),
                action: p.action,
                violation: v.clone(),
            });
        }
    }
}

/// Judge relabelling Namespace `namespace` to `new_labels`, for its
/// `workloads`. A Namespace's labels decide which policies of the other
/// egress layers select its pods (an AdminNetworkPolicy's
/// `subject.namespaces`, a Cilium policy's namespace labels, a Calico
/// `namespaceSelector`), so a relabel can open egress as a policy change
/// can: into an AdminNetworkPolicy that allows an address abroad, or out of
/// one that denied it. Classes and scope the relabel adds are governance
/// added, not counted (see `judge_affected`). Only workloads that a policy
/// of another layer selects differently before and after are judged.
pub fn judge_namespace_relabel(
    snapshot: &Snapshot,
    workloads: &[Arc<Workload>],
    namespace: &str,
    new_labels: &BTreeMap<String, String>,
    now: Timestamp,
) -> NetworkPolicyChange {
    let before = snapshot.focused_on(namespace, &NamespaceFacts::default());
    let after = before.focused_on(
        namespace,
        &NamespaceFacts {
            labels: Some(new_labels.clone()),
            ..NamespaceFacts::default()
        },
    );
    // Only a pod that some other-layer policy selects differently under
    // the new labels can gain or lose egress (a NetworkPolicy selects by
    // pod labels alone); the others are not judged, so a workload that
    // cannot be judged blocks only a relabel that may affect it.
    static NO_LABELS: BTreeMap<String, String> = BTreeMap::new();
    let old_labels = before.namespaces.get(namespace).unwrap_or(&NO_LABELS);
    let policies = &before.network.layers().policies;
    let may_affect = |w: &Workload| {
        let was = PodView::new(&w.namespace, old_labels, &w.template_labels);
        let will = PodView::new(&w.namespace, new_labels, &w.template_labels);
        policies
            .iter()
            .any(|p| p.subject.selects(&was) != p.subject.selects(&will))
    };
    let mut out = NetworkPolicyChange::default();
    judge_affected(&before, &after, workloads, &may_affect, now, &mut out);
    out
}

/// Judge relabelling Namespace `namespace` to `new_labels` for the
/// classified workloads of every namespace (`workloads_in` gives them),
/// through the Calico NetworkSets it holds: a rule's namespaceSelector
/// selects a set by its namespace's labels, so a relabel can bring a set
/// holding an address abroad under an Allow (or out of a Deny) of a policy
/// in any namespace. Empty when the namespace holds no set or no Calico
/// rule selects sets; else every workload a policy with a set-selecting
/// rule selects is judged before and after.
pub fn judge_namespace_relabel_through_sets(
    snapshot: &Snapshot,
    workloads_in: &dyn Fn(&str) -> Vec<Arc<Workload>>,
    namespace: &str,
    new_labels: &BTreeMap<String, String>,
    now: Timestamp,
) -> NetworkPolicyChange {
    let layers = snapshot.network.layers();
    let mut out = NetworkPolicyChange::default();
    if !layers
        .network_sets
        .iter()
        .any(|s| s.namespace.as_deref() == Some(namespace))
    {
        return out;
    }
    let selecting: Vec<&LayerPolicy> = layers.selecting_network_sets().collect();
    if selecting.is_empty() {
        return out;
    }
    for ns in snapshot.namespaces.keys() {
        let workloads = workloads_in(ns);
        if workloads.is_empty() {
            continue;
        }
        let before = snapshot.focused_on(ns, &NamespaceFacts::default());
        let mut after = before.clone();
        after
            .namespaces
            .insert(namespace.to_string(), new_labels.clone());
        // The relabelled namespace's own pods are judged with the new
        // labels by `judge_namespace_relabel`; here only the sets move.
        static NO_LABELS: BTreeMap<String, String> = BTreeMap::new();
        let ns_labels = before.namespaces.get(ns).unwrap_or(&NO_LABELS);
        let may_affect = |w: &Workload| {
            let pod = PodView::new(&w.namespace, ns_labels, &w.template_labels);
            selecting
                .iter()
                .any(|p| p.subject.selects(&pod) != Some(false))
        };
        judge_affected(&before, &after, &workloads, &may_affect, now, &mut out);
    }
    out
}

/// Judge replacing a policy of another egress layer (or a Calico Tier,
/// NetworkSet or GlobalNetworkSet) with `replacement` (`None`: deleting
/// it), for the classified workloads of every namespace it may touch
/// (`workloads_in` gives them): its own for a namespaced policy kind, every
/// namespace for a cluster-wide one or a network set (rules of any
/// namespace may select a set; deleting one a Deny selects opens egress).
#[allow(clippy::too_many_arguments)]
pub fn judge_layer_change(
    snapshot: &Snapshot,
    workloads_in: &dyn Fn(&str) -> Vec<Arc<Workload>>,
    api_version: &str,
    kind: &str,
    namespace: Option<&str>,
    name: &str,
    replacement: Option<&serde_json::Value>,
    now: Timestamp,
) -> NetworkPolicyChange {
    let layer = layer_kind(api_version, kind);
    let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
    // A Calico NetworkSet or GlobalNetworkSet: no policy, but the rules
    // whose destination selects it reach (or close) its addresses.
    let network_set =
        group == "crd.projectcalico.org" && matches!(kind, "NetworkSet" | "GlobalNetworkSet");
    let namespaced =
        layer.is_some_and(LayerKind::namespaced_layer) || kind == "NetworkSet" && network_set;
    let namespace = namespace.filter(|_| namespaced);
    let new = replacement.map(|v| {
        let mut v = v.clone();
        if let Some(meta) = v.get_mut("metadata").and_then(|m| m.as_object_mut()) {
            meta.entry("name").or_insert_with(|| name.into());
            if let Some(ns) = namespace {
                meta.insert("namespace".into(), ns.into());
            }
        }
        v
    });
    // The old and new projections, to find the pods they may select.
    let old: Vec<LayerPolicy> = match layer {
        Some(k) => snapshot
            .network
            .layers()
            .policies
            .iter()
            .filter(|p| {
                p.kind == k
                    && p.namespace.as_deref()
                        == namespace.or(if namespaced { Some("default") } else { None })
                    && p.name == name
            })
            .cloned()
            .collect(),
        None => Vec::new(),
    };
    let mut scratch = super::NetworkIndex::default();
    if let Some(v) = &new {
        scratch.add_layer_object(api_version, kind, v);
    }
    let mut candidates: Vec<&LayerPolicy> =
        old.iter().chain(scratch.layers().policies.iter()).collect();
    if network_set {
        // Rules of any namespace may select a set (namespaceSelector, a
        // GlobalNetworkPolicy): the pods of the policies with such rules.
        candidates = snapshot.network.layers().selecting_network_sets().collect();
        if candidates.is_empty() {
            return NetworkPolicyChange::default();
        }
    }
    let namespaces: Vec<String> = match namespace {
        Some(ns) if !network_set => vec![ns.to_string()],
        _ => snapshot.namespaces.keys().cloned().collect(),
    };
    let mut out = NetworkPolicyChange::default();
    for ns in namespaces {
        let workloads = workloads_in(&ns);
        if workloads.is_empty() {
            continue;
        }
        let before = snapshot.focused_on(&ns, &NamespaceFacts::default());
        let mut after = before.clone();
        after
            .network
            .remove_layer_object(api_version, kind, namespace, name);
        if let Some(v) = &new {
            after.network.add_layer_object(api_version, kind, v);
        }
        static NO_LABELS: BTreeMap<String, String> = BTreeMap::new();
        let ns_labels = before.namespaces.get(&ns).unwrap_or(&NO_LABELS);
        let may_affect = |w: &Workload| {
            // A Tier moves every policy in it: any pod may be affected.
            (layer.is_none() && !network_set)
                || candidates.iter().any(|p| {
                    let pod = PodView::new(&w.namespace, ns_labels, &w.template_labels);
                    p.subject.selects(&pod) != Some(false)
                })
        };
        judge_affected(&before, &after, &workloads, &may_affect, now, &mut out);
    }
    out
}
