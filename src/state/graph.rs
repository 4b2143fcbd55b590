//! The workload graph: controller `ownerReferences` followed through the
//! inventory, by kind and name within the namespace (and uid when both
//! sides have one), never guessed from naming conventions.
//!
//! - `chain`: an object's controller owners, nearest first (Pod →
//!   ReplicaSet → Deployment; Pod → Job → CronJob). The chain ends at an
//!   object that has no controller, whose controller is of a kind the state
//!   does not watch (a ConfigMap, a custom resource), or is not in the
//!   inventory. ownerReferences are written by users too, so a cycle or a
//!   chain longer than `MAX_CHAIN` is marked `broken`.
//! - `inherited_classes`: the data classes of the chain that the object
//!   does not carry itself, for `engine::evaluate` to union into its own
//!   (`Workload::inherited_classes`).
//! - `represented`: whether the audit reports the object through its
//!   owner (docs/semantics.md, "The workload graph").
//!
//! Pure functions over the inventory's persistent map: the webhook and the
//! audit call them on the inventory they read.

use std::collections::BTreeSet;
use std::sync::Arc;

use super::{WorkloadKey, Workloads};
use crate::api::{DATA_CLASS_LABEL, DataClass, parse_class_list};
use crate::engine::{InheritedClass, Workload, WorkloadKind};

/// Owners followed at most: the built-in controllers nest two deep
/// (Deployment → ReplicaSet → Pod, CronJob → Job → Pod).
pub const MAX_CHAIN: usize = 8;

/// The inventory key `w`'s controller ownerReference names, when it names a
/// workload kind the state watches (its apiVersion, when given, must be
/// that kind's: an `argoproj.io` ReplicaSet is not one).
pub fn controller_key(w: &Workload) -> Option<WorkloadKey> {
    let c = w.controller.as_ref()?;
    let kind = WorkloadKind::named(&c.kind)?;
    if c.api_version
        .as_deref()
        .is_some_and(|v| v != kind.api_version())
    {
        return None;
    }
    if c.name.is_empty() {
        return None;
    }
    Some(WorkloadKey {
        kind,
        namespace: w.namespace.clone(),
        name: c.name.clone(),
    })
}

/// An object's controller owners found in the inventory.
#[derive(Debug, Default)]
pub struct Chain<'a> {
    /// Nearest first: the controller, its controller, ...
    pub owners: Vec<(WorkloadKey, &'a Arc<Workload>)>,
    /// The walk stopped at a cycle or after `MAX_CHAIN` owners: the chain
    /// reaches no object that stands on its own.
    pub broken: bool,
}

impl<'a> Chain<'a> {
    /// The controller, when it is in the inventory.
    pub fn direct(&self) -> Option<&'a Arc<Workload>> {
        self.owners.first().map(|(_, w)| *w)
    }

    /// The farthest owner found (the Deployment of a Pod's ReplicaSet).
    pub fn top(&self) -> Option<&WorkloadKey> {
        self.owners.last().map(|(k, _)| k)
    }
}

/// Follow `w`'s controller ownerReferences through `workloads`.
pub fn chain<'a>(w: &Workload, workloads: &'a Workloads) -> Chain<'a> {
    let mut out = Chain::default();
    let mut current = w;
    while let Some(key) = controller_key(current) {
        let Some(owner) = workloads.get(&key) else {
            break;
        };
        // An owner recreated under the same name is another object.
        let named_uid = current
            .controller
            .as_ref()
            .and_then(|c| c.uid.as_deref())
            .filter(|u| !u.is_empty());
        if let (Some(named), Some(actual)) = (named_uid, owner.uid.as_deref())
            && named != actual
        {
            break;
        }
        let is_self = key.kind == w.kind && key.name == w.name;
        if is_self || out.owners.iter().any(|(k, _)| *k == key) || out.owners.len() >= MAX_CHAIN {
            out.broken = true;
            break;
        }
        out.owners.push((key, owner));
        current = owner;
    }
    out
}

/// The classes `w`'s labels declare, or None when one cannot be read (the
/// engine then reports it; every inherited value is passed on).
fn own_classes(w: &Workload) -> Option<BTreeSet<DataClass>> {
    let mut classes = BTreeSet::new();
    for labels in [&w.labels, &w.template_labels] {
        if let Some(value) = labels.get(DATA_CLASS_LABEL) {
            classes.extend(parse_class_list(value).ok()?);
        }
    }
    Some(classes)
}

/// Whether the classes `value` declares add any to `have`, which takes
/// them in. A value that cannot be read, or an unknown `have`, always
/// counts (fail closed).
fn adds_classes(value: &str, have: &mut Option<BTreeSet<DataClass>>) -> bool {
    match (parse_class_list(value), have.as_mut()) {
        (Ok(classes), Some(have)) => {
            let new = classes.iter().any(|c| !have.contains(c));
            have.extend(classes);
            new
        }
        _ => true,
    }
}

/// The classes of `chain`'s owners that `w` does not declare itself, with
/// where each is declared. A value that cannot be read is passed on as it
/// is: the engine refuses to judge what it cannot classify (fail closed).
pub fn inherited_classes(w: &Workload, chain: &Chain<'_>) -> Vec<InheritedClass> {
    let mut out = Vec::new();
    if chain.owners.is_empty() {
        return out;
    }
    let mut have = own_classes(w);
    for (_, owner) in &chain.owners {
        let template_path = owner.kind.template_labels_path();
        let places = [
            (&owner.labels, "metadata.labels"),
            (&owner.template_labels, template_path),
        ];
        for (i, (labels, location)) in places.into_iter().enumerate() {
            // A Pod's labels are its template's.
            if i == 1
                && (Arc::ptr_eq(&owner.labels, &owner.template_labels)
                    || location == "metadata.labels")
            {
                continue;
            }
            let Some(value) = labels.get(DATA_CLASS_LABEL) else {
                continue;
            };
            if adds_classes(value, &mut have) {
                out.push(InheritedClass {
                    owner: format!("{} {}/{}", owner.kind, owner.namespace, owner.name),
                    location: location.to_string(),
                    value: value.clone(),
                });
            }
        }
    }
    out
}

/// The classes `w` carries through the claims it mounts (data follows the
/// volume: `engine::classes_through_claims`), from the classified
/// workloads of its namespace in `workloads`, that neither `w` declares nor
/// `inherited` (its owner chain's) already gives it. A value that cannot be
/// read is passed on (fail closed). Costs one pass over `w`'s volumes when
/// it mounts no claim.
pub fn claim_classes(
    w: &Workload,
    workloads: &Workloads,
    inherited: &[InheritedClass],
) -> Vec<InheritedClass> {
    if crate::engine::claims_mounted(w).next().is_none() {
        return Vec::new();
    }
    let others: Vec<Arc<Workload>> = super::index::in_namespace(workloads, &w.namespace)
        .map(|(_, o)| Arc::clone(o))
        .collect();
    let mut have = own_classes(w);
    for i in inherited {
        match (parse_class_list(&i.value), have.as_mut()) {
            (Ok(classes), Some(have)) => have.extend(classes),
            _ => have = None,
        }
    }
    let mut out = Vec::new();
    for shared in crate::engine::classes_through_claims(w, &others) {
        if adds_classes(&shared.value, &mut have) {
            out.push(InheritedClass {
                owner: shared.owner,
                location: format!("the claim {} it shares", shared.claim),
                value: shared.value,
            });
        }
    }
    out
}

/// `w` with the classes its controller owner chain in `workloads` adds;
/// the same `Arc` (no copy) when it adds none.
pub fn with_inherited(w: &Arc<Workload>, workloads: &Workloads) -> Arc<Workload> {
    if w.controller.is_none() {
        return Arc::clone(w);
    }
    let inherited = inherited_classes(w, &chain(w, workloads));
    if inherited.is_empty() {
        return Arc::clone(w);
    }
    let mut owned = (**w).clone();
    owned.inherited_classes = inherited;
    Arc::new(owned)
}

/// Labels the built-in controllers add to the pod templates and pods they
/// create, and those the API server copies from the node onto a pod it
/// binds (PodTopologyLabels admission, Kubernetes 1.33+): a difference in
/// these alone does not make a child differ from its owner.
pub fn controller_added(key: &str) -> bool {
    matches!(
        key,
        "pod-template-hash"
            | "topology.kubernetes.io/region"
            | "topology.kubernetes.io/zone"
            | "controller-revision-hash"
            | "pod-template-generation"
            | "controller-uid"
            | "job-name"
            | "apps.kubernetes.io/pod-index"
    ) || key.starts_with("batch.kubernetes.io/")
        || key.starts_with("statefulset.kubernetes.io/")
}

/// A label map without the labels the controllers add, in key order.
fn kept(
    labels: &std::collections::BTreeMap<String, String>,
) -> impl Iterator<Item = (&String, &String)> + '_ {
    labels.iter().filter(|(k, _)| !controller_added(k))
}

/// The same labels, those the controllers add aside.
fn same_labels(a: &Workload, a_labels: bool, b: &Workload) -> bool {
    let mine = if a_labels {
        &a.labels
    } else {
        &a.template_labels
    };
    let theirs = &b.template_labels;
    if Arc::ptr_eq(mine, theirs) {
        return true;
    }
    // Both maps iterate in key order: compare what is left, no copies.
    kept(mine).eq(kept(theirs))
}

/// Does the audit report `w` through its owner (docs/semantics.md, "The
/// workload graph")? Only when its controller is in the inventory, the
/// chain above it stands (no cycle, not too long), and:
/// - a Pod: its labels are its controller's pod template labels (those the
///   controllers add aside); what it runs is its owner's to answer for,
///   where it runs (`BoundToNodeOutside`) its own;
/// - a controller (a ReplicaSet, a Job): its pod template is its owner's
///   (labels, those the controllers add aside, and the pod spec), or it
///   has no pods to make (`replicas: 0`).
pub fn represented(w: &Workload, chain: &Chain<'_>) -> bool {
    let Some(owner) = chain.direct() else {
        return false;
    };
    if chain.broken {
        return false;
    }
    if w.kind == WorkloadKind::Pod {
        return same_labels(w, true, owner);
    }
    let same_template = same_labels(w, false, owner)
        && w.pod == owner.pod
        && w.claim_templates == owner.claim_templates;
    same_template || w.replicas == Some(0)
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    fn w(v: Value) -> Arc<Workload> {
        Arc::new(Workload::from_value(&v, "ns").expect("workload"))
    }

    fn map(ws: &[Arc<Workload>]) -> Workloads {
        ws.iter()
            .map(|w| (WorkloadKey::of(w), Arc::clone(w)))
            .collect()
    }

    fn owner_ref(api: &str, kind: &str, name: &str, uid: &str) -> Value {
        json!([{"apiVersion": api, "kind": kind, "name": name, "uid": uid, "controller": true}])
    }

    fn deployment(class_on_meta: bool) -> Arc<Workload> {
        let mut meta = json!({"name": "api", "namespace": "ns", "uid": "d-1"});
        if class_on_meta {
            meta["labels"] = json!({"residencyguard.io/data-class": "personal"});
        }
        w(
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta,
                  "spec": {"replicas": 2, "template": {"metadata": {"labels": {"app": "api"}},
                           "spec": {"nodeSelector": {"topology.kubernetes.io/region": "cn-north-1"}}}}}),
        )
    }

    fn replica_set(owner_uid: &str, replicas: i32, region: &str) -> Arc<Workload> {
        w(json!({"apiVersion": "apps/v1", "kind": "ReplicaSet",
                  "metadata": {"name": "api-7d9f", "namespace": "ns", "uid": "rs-1",
                               "ownerReferences": owner_ref("apps/v1", "Deployment", "api", owner_uid)},
                  "spec": {"replicas": replicas, "template": {"metadata": {"labels": {"app": "api", "pod-template-hash": "7d9f"}},
                           "spec": {"nodeSelector": {"topology.kubernetes.io/region": region}}}}}))
    }

    fn pod(labels: Value) -> Arc<Workload> {
        w(json!({"apiVersion": "v1", "kind": "Pod",
                  "metadata": {"name": "api-7d9f-x", "namespace": "ns", "labels": labels,
                               "ownerReferences": owner_ref("apps/v1", "ReplicaSet", "api-7d9f", "rs-1")},
                  "spec": {"nodeName": "n1"}}))
    }

    #[test]
    fn a_pod_inherits_its_deployments_class_through_its_replica_set() {
        let (d, rs) = (deployment(true), replica_set("d-1", 2, "cn-north-1"));
        let p = pod(json!({"app": "api", "pod-template-hash": "7d9f"}));
        let inv = map(&[d, rs, p.clone()]);
        let chain = chain(&p, &inv);
        assert_eq!(chain.owners.len(), 2);
        assert_eq!(chain.top().map(|k| k.kind), Some(WorkloadKind::Deployment));
        assert!(!chain.broken);
        let inherited = inherited_classes(&p, &chain);
        assert_eq!(
            inherited,
            vec![InheritedClass {
                owner: "Deployment ns/api".into(),
                location: "metadata.labels".into(),
                value: "personal".into(),
            }]
        );
        assert!(represented(&p, &chain));
        let judged = with_inherited(&p, &inv);
        assert_eq!(judged.inherited_classes, inherited);
    }

    #[test]
    fn a_class_the_child_carries_is_not_inherited_again() {
        let d = deployment(true);
        let p = pod(json!({"app": "api", "residencyguard.io/data-class": "personal"}));
        let rs = replica_set("d-1", 2, "cn-north-1");
        let inv = map(&[d, rs, p.clone()]);
        let judged = with_inherited(&p, &inv);
        assert!(Arc::ptr_eq(&judged, &p), "nothing to add: no copy");
    }

    #[test]
    fn an_owner_of_another_uid_group_or_kind_is_not_followed() {
        let d = deployment(true);
        // The Deployment was recreated: the ReplicaSet names the old uid.
        let rs = replica_set("d-0", 2, "cn-north-1");
        let inv = map(&[d.clone(), rs.clone()]);
        assert!(chain(&rs, &inv).owners.is_empty());
        assert!(!represented(&rs, &chain(&rs, &inv)));
        // Argo Rollouts' ReplicaSet owner is a Rollout (a custom resource).
        let argo = w(json!({"apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": {"name": "r", "namespace": "ns",
                         "ownerReferences": owner_ref("argoproj.io/v1alpha1", "Rollout", "api", "x")},
            "spec": {"template": {}}}));
        assert_eq!(controller_key(&argo), None);
        // A custom resource named like a built-in kind.
        let fake = w(json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "namespace": "ns",
                         "ownerReferences": owner_ref("example.com/v1", "Deployment", "api", "d-1")}}));
        assert_eq!(controller_key(&fake), None);
        // A ConfigMap owner (what a user can write on their own Deployment).
        let cm = w(json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "x", "namespace": "ns",
                         "ownerReferences": owner_ref("v1", "ConfigMap", "cm", "c")},
            "spec": {"template": {}}}));
        let inv = map(std::slice::from_ref(&cm));
        assert!(!represented(&cm, &chain(&cm, &inv)));
    }

    #[test]
    fn cycles_and_long_chains_end_broken() {
        let a = w(json!({"apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": {"name": "a", "namespace": "ns", "ownerReferences": owner_ref("apps/v1", "ReplicaSet", "b", "")},
            "spec": {"template": {}}}));
        let b = w(json!({"apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": {"name": "b", "namespace": "ns", "ownerReferences": owner_ref("apps/v1", "ReplicaSet", "a", "")},
            "spec": {"template": {}}}));
        let inv = map(&[a.clone(), b.clone()]);
        let c = chain(&a, &inv);
        assert!(c.broken);
        assert!(!represented(&a, &c), "a cycle represents nobody");
        assert!(!represented(&b, &chain(&b, &inv)));
        // Itself as its own controller.
        let selfish = w(json!({"apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": {"name": "s", "namespace": "ns", "ownerReferences": owner_ref("apps/v1", "ReplicaSet", "s", "")},
            "spec": {"template": {}}}));
        let inv = map(std::slice::from_ref(&selfish));
        assert!(chain(&selfish, &inv).broken);
        // A chain of 20 Deployments, each the controller of the next.
        let mut all = Vec::new();
        for i in 0..20 {
            let mut meta = json!({"name": format!("d{i}"), "namespace": "ns"});
            if i > 0 {
                meta["ownerReferences"] =
                    owner_ref("apps/v1", "Deployment", &format!("d{}", i - 1), "");
            }
            all.push(w(json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta, "spec": {"template": {}}})));
        }
        let inv = map(&all);
        let c = chain(&all[19], &inv);
        assert!(c.broken);
        assert_eq!(c.owners.len(), MAX_CHAIN);
    }

    #[test]
    fn a_replica_set_is_represented_unless_its_template_differs_and_it_has_pods() {
        let d = deployment(false);
        let current = replica_set("d-1", 2, "cn-north-1");
        let inv = map(&[d.clone(), current.clone()]);
        assert!(represented(&current, &chain(&current, &inv)));
        // Edited to run abroad: its own findings.
        let edited = replica_set("d-1", 2, "ap-east-1");
        let inv = map(&[d.clone(), edited.clone()]);
        assert!(!represented(&edited, &chain(&edited, &inv)));
        // An old revision at zero: no pods, nothing of its own.
        let old = replica_set("d-1", 0, "ap-east-1");
        let inv = map(&[d.clone(), old.clone()]);
        assert!(represented(&old, &chain(&old, &inv)));
        // Owner gone: reported in full, whatever its replicas.
        let inv = map(std::slice::from_ref(&old));
        assert!(!represented(&old, &chain(&old, &inv)));
    }

    #[test]
    fn a_pod_whose_labels_were_changed_is_its_own() {
        let rs = replica_set("d-1", 2, "cn-north-1");
        let same = pod(json!({"app": "api", "pod-template-hash": "7d9f"}));
        let inv = map(&[rs.clone(), same.clone()]);
        assert!(represented(&same, &chain(&same, &inv)));
        let relabelled = pod(json!({"app": "api", "pod-template-hash": "7d9f", "role": "x"}));
        let inv = map(&[rs, relabelled.clone()]);
        assert!(!represented(&relabelled, &chain(&relabelled, &inv)));
    }
}
