//! The findings index: each judged object's latest findings, replaced one
//! object at a time, and `affected_by`, which says which objects a change in
//! the cluster can affect. Pure and synchronous: no I/O, no clock.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use jiff::Timestamp;
use k8s_openapi::api::networking::v1::NetworkPolicy;

use crate::api::{Action, DataClass};
use crate::engine::{
    ClaimRecord, ClassRecord, Code, CompiledNetworkPolicy, Detail, Evidence, ExemptionUse, Lang,
    Message, NodeConstraints, NodeEvidence, NodeInfo, Shared, StorageEvidence, StorageIndex,
    VolumeLocation, VolumeRecord, Workload, WorkloadKind, evaluate_with,
};
use crate::state::{Inventory, WorkloadKey, Workloads, graph};

/// Something that changed between two inventories (or in time).
#[derive(Clone, Debug, PartialEq)]
pub enum Change {
    /// A node appeared (`old` None), changed, or disappeared (`new` None).
    Node {
        name: String,
        old: Option<NodeInfo>,
        new: Option<NodeInfo>,
    },
    /// A namespace's labels changed (or it appeared or disappeared).
    Namespace { name: String },
    /// A NetworkPolicy appeared, changed or disappeared.
    NetworkPolicy {
        namespace: String,
        name: String,
        old: Option<Arc<NetworkPolicy>>,
        new: Option<Arc<NetworkPolicy>>,
    },
    /// A policy of another egress layer (Cilium, Calico,
    /// AdminNetworkPolicy) or a Calico Tier appeared, changed or
    /// disappeared: `kind namespace/name`, and the namespace when the kind
    /// is namespaced (else it may touch every namespace). Also the egress
    /// semantics changing (`egress semantics kubernetes -> cilium`, no
    /// namespace).
    EgressLayer {
        key: String,
        namespace: Option<String>,
    },
    /// A ResidencyPolicy's spec changed (or it appeared or disappeared).
    Policy { name: String },
    /// A workload or pod appeared, changed or disappeared.
    Workload(WorkloadKey),
    /// An exemption of this policy lapsed.
    ExemptionLapsed { policy: String },
    /// A PersistentVolumeClaim appeared, changed (bound, say) or
    /// disappeared.
    Claim { namespace: String, name: String },
    /// A PersistentVolume appeared, changed (relabelled, say) or
    /// disappeared: what it affects goes through the claims it is or was
    /// bound to (namespace, name).
    PersistentVolume {
        name: String,
        claims: BTreeSet<(String, String)>,
    },
    /// A StorageClass appeared, changed or disappeared (the default may
    /// have moved): any claim not bound yet may be judged differently.
    StorageClass { name: String },
}

/// One counting or exempted violation, reduced to what reports need. Its
/// message is kept apart (`FindingsIndex::messages`): re-judging compares
/// and stores decisions, and messages are written only for what is reported.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FindingViolation {
    pub code: Code,
    pub field: String,
    pub exempted: bool,
    /// The node a pod is bound to (BoundToNodeOutside).
    pub node: Option<Shared<NodeEvidence>>,
    /// The volume, claim, PV or class at fault (storage codes).
    pub storage: Option<Arc<StorageEvidence>>,
}

/// How an object fares under one governing policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyFinding {
    pub policy: Shared<str>,
    pub action: Action,
    pub exemption: Option<ExemptionUse>,
    pub violations: Vec<FindingViolation>,
}

impl PolicyFinding {
    pub fn violated(&self) -> bool {
        self.violations.iter().any(|v| !v.exempted)
    }
}

/// The controller of an owned object, as far as the inventory tells
/// (`state::graph`: real ownerReferences, never naming conventions).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OwnerLink {
    /// The controller ownerReference (kind, name), e.g. ReplicaSet api-7d9f,
    /// or a kind the state does not watch (a custom resource).
    pub kind: String,
    pub name: String,
    /// The farthest owner found in the inventory (e.g. Deployment api).
    pub top: Option<WorkloadKey>,
    /// Reported through its owner: only where a represented pod runs
    /// (`BoundToNodeOutside`) is its own finding.
    pub represented: bool,
}

/// What the audit knows about one object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    pub classes: Vec<DataClass>,
    /// One per governing policy (for a pod represented by its owner: only
    /// those with a BoundToNodeOutside violation; the rest is reported on
    /// the owner).
    pub policies: Vec<PolicyFinding>,
    /// Set for objects with a controller ownerReference.
    pub owner: Option<OwnerLink>,
    /// The classification label cannot be understood.
    pub error: Option<String>,
}

impl Finding {
    /// A pod reported through its owner (its template findings are the
    /// owner's): it gets no `Compliant` result of its own.
    pub fn is_represented(&self) -> bool {
        self.owner.as_ref().is_some_and(|o| o.represented)
    }
}

/// Object → findings. Only objects that carry a data class (or a broken
/// classification label) have an entry. Entries are also indexed by where
/// their pods go, so a node change finds what it affects without a scan.
///
/// Re-judging stores decisions only. Violation messages are written by
/// `render_messages`, which the leader calls before it plans, and only for
/// the findings re-judged since their messages were last written: followers
/// never write a message, and a node relabel that re-judges 1,000 findings
/// updates the decisions (and metrics) without waiting for their texts.
#[derive(Clone, Debug, Default)]
pub struct FindingsIndex {
    entries: BTreeMap<WorkloadKey, Entry>,
    /// Objects bound to a node (`spec.nodeName`), by node name.
    bound: HashMap<String, BTreeSet<WorkloadKey>>,
    /// Objects the scheduler places: whether a node change affects them
    /// depends on their constraints.
    scheduled: BTreeSet<WorkloadKey>,
    /// Owner → the objects of the inventory (judged or not) whose
    /// controller ownerReference names it, by kind and name (same
    /// namespace): what a change of the owner can re-classify or stop
    /// representing, found without a scan (`dependents_affected`).
    dependents: HashMap<WorkloadKey, BTreeSet<(WorkloadKind, String)>>,
}

#[derive(Clone, Debug)]
struct Entry {
    finding: Finding,
    /// `spec.nodeName` when it was judged (where `bound` files it).
    bound_to: Option<String>,
    /// One per violation of the finding, in order, in the language the
    /// index writes (reports and Events use one); None until written.
    messages: Option<Vec<Box<str>>>,
}

impl FindingsIndex {
    pub fn new() -> Self {
        FindingsIndex::default()
    }

    pub fn get(&self, key: &WorkloadKey) -> Option<&Finding> {
        self.entries.get(key).map(|e| &e.finding)
    }

    /// The messages of `key`'s violations, one per violation in order
    /// (policy by policy), once `render_messages` has written them.
    pub fn messages(&self, key: &WorkloadKey) -> Option<&[Box<str>]> {
        self.entries.get(key)?.messages.as_deref()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&WorkloadKey, &Finding)> {
        self.entries.iter().map(|(k, e)| (k, &e.finding))
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Entries whose messages are still to be written.
    pub fn unrendered(&self) -> usize {
        self.entries
            .values()
            .filter(|e| e.messages.is_none())
            .count()
    }

    /// Judged objects bound to `node`.
    fn bound_to(&self, node: &str) -> impl Iterator<Item = &WorkloadKey> {
        self.bound.get(node).into_iter().flatten()
    }

    /// Judge every object in the inventory afresh.
    pub fn rebuild(&mut self, inv: &Inventory, now: Timestamp) {
        *self = FindingsIndex::default();
        for (key, w) in &inv.workloads {
            self.refile_owner(key, None, Some(w));
            if let Some(finding) = judge(w, inv, now) {
                self.insert(key.clone(), finding, w.pod.node_name.clone());
            }
        }
    }

    /// Re-judge `keys` only (objects gone from the inventory are dropped).
    /// The messages of every re-judged finding are to be written again,
    /// changed or not: what a message says (the nodes it counts, where the
    /// class label is, the fix) can change while the decision stays the same.
    ///
    /// Returns how many of `keys` had or now have a finding: zero when the
    /// change touched only unclassified objects, so nothing reported moved.
    pub fn rejudge(
        &mut self,
        keys: &BTreeSet<WorkloadKey>,
        inv: &Inventory,
        now: Timestamp,
    ) -> usize {
        let mut touched = 0;
        for key in keys {
            let judged = inv
                .workloads
                .get(key)
                .and_then(|w| Some((w, judge(w, inv, now)?)));
            let Some((w, finding)) = judged else {
                touched += usize::from(self.remove(key).is_some());
                continue;
            };
            touched += 1;
            match self.entries.get_mut(key) {
                // Filed in the same place: replace it there.
                Some(e) if e.bound_to == w.pod.node_name => {
                    e.messages = messages_to_write(&finding);
                    e.finding = finding;
                }
                _ => {
                    self.remove(key);
                    self.insert(key.clone(), finding, w.pod.node_name.clone());
                }
            }
        }
        touched
    }

    /// `key` changed from `old` to `new` in the inventory: file it under
    /// the owner its controller ownerReference now names.
    pub fn refile_owner(
        &mut self,
        key: &WorkloadKey,
        old: Option<&Workload>,
        new: Option<&Workload>,
    ) {
        let before = old.and_then(graph::controller_key);
        let after = new.and_then(graph::controller_key);
        if before == after {
            return;
        }
        let me = (key.kind, key.name.clone());
        if let Some(owner) = before
            && let Some(set) = self.dependents.get_mut(&owner)
        {
            set.remove(&me);
            if set.is_empty() {
                self.dependents.remove(&owner);
            }
        }
        if let Some(owner) = after {
            self.dependents.entry(owner).or_default().insert(me);
        }
    }

    /// The objects whose controller ownerReference names `owner`.
    pub fn dependents_of<'a>(
        &'a self,
        owner: &'a WorkloadKey,
    ) -> impl Iterator<Item = WorkloadKey> + 'a {
        self.dependents
            .get(owner)
            .into_iter()
            .flatten()
            .map(move |(kind, name)| WorkloadKey {
                kind: *kind,
                namespace: owner.namespace.clone(),
                name: name.clone(),
            })
    }

    /// Have every message written again (without re-judging): for changes
    /// that alter what messages say but no decision.
    pub fn invalidate_messages(&mut self) {
        for e in self.entries.values_mut() {
            e.messages = messages_to_write(&e.finding);
        }
    }

    /// Write the messages of every finding that has none yet, in `lang`.
    /// Returns how many findings got messages.
    pub fn render_messages(&mut self, inv: &Inventory, now: Timestamp, lang: Lang) -> usize {
        // Objects that changed since they were judged (only when `inv` is
        // not the inventory they were judged on) are re-judged first, so
        // they are filed where they now belong, or dropped.
        let moved: BTreeSet<WorkloadKey> = self
            .entries
            .iter()
            .filter(|(key, e)| {
                e.messages.is_none()
                    && inv
                        .workloads
                        .get(*key)
                        .is_none_or(|w| w.pod.node_name != e.bound_to)
            })
            .map(|(key, _)| key.clone())
            .collect();
        self.rejudge(&moved, inv, now);

        let mut written = 0;
        let mut unclassified = Vec::new();
        for (key, e) in self
            .entries
            .iter_mut()
            .filter(|(_, e)| e.messages.is_none())
        {
            let judged = inv
                .workloads
                .get(key)
                .and_then(|w| judge_with_messages(w, inv, now));
            match judged {
                Some((finding, texts)) => {
                    // Normally the decision stored; should time have moved
                    // it on (an exemption lapsed), the newer one wins. Only
                    // the language reports are written in is kept.
                    e.finding = finding;
                    e.messages = Some(
                        texts
                            .into_iter()
                            .map(|m| m.get(lang).into_boxed_str())
                            .collect(),
                    );
                    written += 1;
                }
                None => unclassified.push(key.clone()),
            }
        }
        for key in unclassified {
            self.remove(&key);
        }
        written
    }

    /// File a finding.
    fn insert(&mut self, key: WorkloadKey, finding: Finding, bound_to: Option<String>) {
        match &bound_to {
            Some(node) => {
                self.bound
                    .entry(node.clone())
                    .or_default()
                    .insert(key.clone());
            }
            None => {
                self.scheduled.insert(key.clone());
            }
        }
        let messages = messages_to_write(&finding);
        self.entries.insert(
            key,
            Entry {
                finding,
                bound_to,
                messages,
            },
        );
    }

    fn remove(&mut self, key: &WorkloadKey) -> Option<Finding> {
        let entry = self.entries.remove(key)?;
        match &entry.bound_to {
            Some(node) => {
                if let Some(keys) = self.bound.get_mut(node) {
                    keys.remove(key);
                    if keys.is_empty() {
                        self.bound.remove(node);
                    }
                }
            }
            None => {
                self.scheduled.remove(key);
            }
        }
        Some(entry.finding)
    }
}

/// A finding's messages before they are written: None (to be written)
/// when it has a violation to write one for, else none at all.
fn messages_to_write(finding: &Finding) -> Option<Vec<Box<str>>> {
    let has_violations = finding.policies.iter().any(|p| !p.violations.is_empty());
    (!has_violations).then(Vec::new)
}

/// Judge one object: the decision only, without messages. None when it
/// carries no data class at all (nothing can govern it) — the index keeps
/// no entry for it.
pub fn judge(w: &Workload, inv: &Inventory, now: Timestamp) -> Option<Finding> {
    judge_in(w, inv, now, Detail::Decision).map(|(f, _)| f)
}

/// Judge one object with its violation messages, one per violation of the
/// finding, in order (policy by policy).
pub fn judge_with_messages(
    w: &Workload,
    inv: &Inventory,
    now: Timestamp,
) -> Option<(Finding, Vec<Message>)> {
    judge_in(w, inv, now, Detail::Full)
}

fn judge_in(
    w: &Workload,
    inv: &Inventory,
    now: Timestamp,
    detail: Detail,
) -> Option<(Finding, Vec<Message>)> {
    let chain = graph::chain(w, &inv.workloads);
    let mut inherited = graph::inherited_classes(w, &chain);
    // Data follows the volume: an unlabelled pod reading a classified
    // workload's claim is judged with that workload's classes.
    let through_claims = graph::claim_classes(w, &inv.workloads, &inherited);
    inherited.extend(through_claims);
    // Most objects carry no class anywhere: nothing can govern them.
    let labelled = |l: Option<&BTreeMap<String, String>>| {
        l.is_some_and(|l| l.contains_key(crate::api::DATA_CLASS_LABEL))
    };
    if inherited.is_empty()
        && !labelled(Some(&w.labels))
        && !labelled(Some(&w.template_labels))
        && !labelled(inv.snapshot.namespaces.get(&w.namespace))
        && !mounts_labelled_claim(w, &inv.snapshot)
    {
        return None;
    }
    let represented = graph::represented(w, &chain);
    // A represented controller (a Deployment's current ReplicaSet, an old
    // one at zero) has nothing of its own: its owner's finding says it all.
    if represented && w.kind != WorkloadKind::Pod {
        return None;
    }
    let owner = w.controller.as_ref().map(|c| OwnerLink {
        kind: c.kind.clone(),
        name: c.name.clone(),
        top: chain.top().cloned(),
        represented,
    });
    let with_classes;
    let judged = if inherited.is_empty() {
        w
    } else {
        with_classes = Workload {
            inherited_classes: inherited,
            ..w.clone()
        };
        &with_classes
    };
    let mut messages = Vec::new();
    match evaluate_with(&inv.snapshot, judged, now, detail) {
        // A label its owner carries and nobody can read: the owner's finding.
        Err(e) if represented && !own_location(w, &e.location) => None,
        Err(e) => Some((
            Finding {
                classes: Vec::new(),
                policies: Vec::new(),
                owner,
                error: Some(e.to_string()),
            },
            messages,
        )),
        Ok(verdict) if verdict.classes.is_empty() => None,
        Ok(verdict) => {
            let owned = represented;
            let policies = verdict
                .policies
                .into_iter()
                .filter_map(|p| {
                    let violations: Vec<FindingViolation> = p
                        .violations
                        .into_iter()
                        // A represented pod's template findings are
                        // reported on its owner; only where it runs is its own.
                        .filter(|v| !owned || v.code == Code::BoundToNodeOutside)
                        .map(|v| {
                            if detail == Detail::Full {
                                messages.push(v.message);
                            }
                            let (node, storage) = match v.evidence {
                                Evidence::BoundNode { node } => (Some(node), None),
                                Evidence::Storage(e) => (None, Some(Arc::new(e))),
                                _ => (None, None),
                            };
                            FindingViolation {
                                node,
                                storage,
                                code: v.code,
                                field: v.field,
                                exempted: v.exempted,
                            }
                        })
                        .collect();
                    (!owned || !violations.is_empty()).then_some(PolicyFinding {
                        policy: p.policy,
                        action: p.action,
                        exemption: p.exemption,
                        violations,
                    })
                })
                .collect();
            Some((
                Finding {
                    classes: verdict.classes,
                    policies,
                    owner,
                    error: None,
                },
                messages,
            ))
        }
    }
}

/// Is `location` (of a classification error) one of `w`'s own labels or
/// its Namespace's, rather than an owner's?
/// Does `w` mount a claim that carries a data-class label (which classifies
/// every pod that mounts it, `engine::evaluate`)?
fn mounts_labelled_claim(w: &Workload, snapshot: &crate::engine::Snapshot) -> bool {
    crate::engine::claims_mounted(w).any(|claim| {
        snapshot
            .storage()
            .claim(&w.namespace, claim)
            .is_some_and(|r| r.class_label.is_some())
    })
}

fn own_location(w: &Workload, location: &str) -> bool {
    location == "metadata.labels"
        || location == w.kind.template_labels_path()
        || location.strip_prefix("Namespace ") == Some(w.namespace.as_str())
}

/// What changed from `prev` to `next`. Policy status changes (our own
/// writes) are not changes: only spec and generation count.
pub fn diff(prev: &Inventory, next: &Inventory) -> Vec<Change> {
    let mut changes = Vec::new();
    // What the state did not rebuild is the same `Arc`: nothing to compare.
    if !Arc::ptr_eq(&prev.snapshot, &next.snapshot) {
        snapshot_changes(prev, next, &mut changes);
    }
    if !Arc::ptr_eq(&prev.network_policies, &next.network_policies) {
        merge_by(
            &prev.network_policies,
            &next.network_policies,
            |a, b| a.spec == b.spec,
            |key, old, new| {
                let (namespace, name) = key.split_once('/').unwrap_or(("", key));
                changes.push(Change::NetworkPolicy {
                    namespace: namespace.to_string(),
                    name: name.to_string(),
                    old: old.cloned(),
                    new: new.cloned(),
                })
            },
        );
    }
    if !Arc::ptr_eq(&prev.egress_layers, &next.egress_layers) {
        merge_by(
            &prev.egress_layers,
            &next.egress_layers,
            |a, b| a == b,
            |key, _, _| {
                // "CiliumNetworkPolicy ns/name" or "GlobalNetworkPolicy name".
                // A NetworkSet is namespaced, but rules of any namespace may
                // select it: every namespace is judged again.
                let namespaced = ["CiliumNetworkPolicy ", "NetworkPolicy "]
                    .iter()
                    .any(|k| key.starts_with(k));
                let namespace = key
                    .split_once(' ')
                    .and_then(|(_, rest)| rest.split_once('/'))
                    .filter(|_| namespaced)
                    .map(|(ns, _)| ns.to_string());
                changes.push(Change::EgressLayer {
                    key: key.clone(),
                    namespace,
                })
            },
        );
    }
    if !Arc::ptr_eq(&prev.policies, &next.policies) {
        merge_by(
            &prev.policies,
            &next.policies,
            |a, b| a.spec == b.spec && a.metadata.generation == b.metadata.generation,
            |name, _, _| changes.push(Change::Policy { name: name.clone() }),
        );
    }
    changes.extend(workload_changes(&prev.workloads, &next.workloads).map(Change::Workload));
    changes
}

/// Nodes, namespaces and storage that differ between two snapshots.
fn snapshot_changes(prev: &Inventory, next: &Inventory, changes: &mut Vec<Change>) {
    // Layer CRDs installed after start changed the CNI semantics (`auto`):
    // every layer is read otherwise, in every namespace.
    let (was, is) = (
        prev.snapshot.network.semantics(),
        next.snapshot.network.semantics(),
    );
    if was != is {
        changes.push(Change::EgressLayer {
            key: format!(
                "egress semantics {} -> {}",
                was.cni.as_str(),
                is.cni.as_str()
            ),
            namespace: None,
        });
    }
    fn nodes(inv: &Inventory) -> BTreeMap<&str, &NodeInfo> {
        inv.snapshot
            .nodes()
            .into_iter()
            .flatten()
            .map(|n| (n.info.name.as_str(), &n.info))
            .collect()
    }
    merge(&nodes(prev), &nodes(next), |name, old, new| {
        changes.push(Change::Node {
            name: name.to_string(),
            old: old.map(|n| (*n).clone()),
            new: new.map(|n| (*n).clone()),
        })
    });
    merge(
        &prev.snapshot.namespaces,
        &next.snapshot.namespaces,
        |name, _, _| changes.push(Change::Namespace { name: name.clone() }),
    );
    storage_changes(prev, next, changes);
}

/// Keys whose workload differs between two maps. The maps are persistent:
/// two inventories from the state share every node neither changed, and
/// `diff` skips shared nodes, so this costs O(changes · log n).
pub fn workload_changes<'a>(
    prev: &'a Workloads,
    next: &'a Workloads,
) -> impl Iterator<Item = WorkloadKey> + 'a {
    use imbl::ordmap::DiffItem;
    // `diff` reports an update only for values that differ.
    prev.diff(next).map(|d| match d {
        DiffItem::Add(k, _) | DiffItem::Remove(k, _) | DiffItem::Update { old: (k, _), .. } => {
            k.clone()
        }
    })
}

/// PV, PVC and StorageClass changes between two inventories.
fn storage_changes(prev: &Inventory, next: &Inventory, changes: &mut Vec<Change>) {
    let (a, b) = (prev.snapshot.storage(), next.snapshot.storage());
    let claims = |s: &'_ StorageIndex| -> BTreeMap<(String, String), ClaimRecord> {
        s.claims()
            .map(|c| ((c.namespace.clone(), c.name.clone()), c.clone()))
            .collect()
    };
    let (claims_a, claims_b) = (claims(a), claims(b));
    merge(&claims_a, &claims_b, |(namespace, name), _, _| {
        changes.push(Change::Claim {
            namespace: namespace.clone(),
            name: name.clone(),
        })
    });
    // Records shared with the snapshot (Arc): compared by value.
    let volumes = |s: &'_ StorageIndex| -> BTreeMap<String, (Arc<VolumeRecord>, VolumeLocation)> {
        s.volumes()
            .map(|v| {
                (
                    v.record.name.clone(),
                    (v.record.clone(), v.location.clone()),
                )
            })
            .collect()
    };
    merge(&volumes(a), &volumes(b), |name, old, new| {
        // The claims bound to it before or after, by the claims' own
        // volumeName or by its claimRef.
        let mut bound: BTreeSet<(String, String)> = [&claims_a, &claims_b]
            .into_iter()
            .flat_map(|m| m.iter())
            .filter(|(_, c)| c.volume_name.as_deref() == Some(name.as_str()))
            .map(|(k, _)| k.clone())
            .collect();
        bound.extend(
            [old, new]
                .into_iter()
                .flatten()
                .filter_map(|(r, _)| r.claim.clone()),
        );
        changes.push(Change::PersistentVolume {
            name: name.clone(),
            claims: bound,
        })
    });
    let classes = |s: &'_ StorageIndex| -> BTreeMap<String, (ClassRecord, bool)> {
        s.classes()
            .map(|c| {
                let default = s.default_class() == Some(c.record.name.as_str());
                (c.record.name.clone(), (c.record.clone(), default))
            })
            .collect()
    };
    merge(&classes(a), &classes(b), |name, _, _| {
        changes.push(Change::StorageClass { name: name.clone() })
    });
}

/// Does `w` use the claim `name` (in its namespace)? Its PVC volumes by
/// name, a StatefulSet's claims (`<template>-<statefulset>-<ordinal>`), an
/// ephemeral volume's claims (`<pod>-<volume>`).
fn uses_claim(w: &Workload, name: &str) -> bool {
    let volumes = w.pod.volumes.as_deref().unwrap_or_default();
    volumes.iter().any(|v| {
        v.persistent_volume_claim
            .as_ref()
            .is_some_and(|c| c.claim_name == name)
            || (v.ephemeral.is_some() && name.ends_with(&format!("-{}", v.name)))
    }) || w.claim_templates.iter().any(|t| {
        name.strip_prefix(&format!("{}-{}-", t.name(), w.name))
            .is_some_and(|ordinal| {
                !ordinal.is_empty() && ordinal.bytes().all(|b| b.is_ascii_digit())
            })
    })
}

/// Does `w` have a volume whose storage a StorageClass can decide?
fn uses_claims(w: &Workload) -> bool {
    !w.claim_templates.is_empty()
        || w.pod
            .volumes
            .iter()
            .flatten()
            .any(|v| v.persistent_volume_claim.is_some() || v.ephemeral.is_some())
}

fn merge<K: Ord, V: PartialEq>(
    a: &BTreeMap<K, V>,
    b: &BTreeMap<K, V>,
    f: impl FnMut(&K, Option<&V>, Option<&V>),
) {
    merge_by(a, b, |x, y| x == y, f)
}

/// Call `f` for every key whose value differs between `a` and `b`.
fn merge_by<K: Ord, V>(
    a: &BTreeMap<K, V>,
    b: &BTreeMap<K, V>,
    same: impl Fn(&V, &V) -> bool,
    mut f: impl FnMut(&K, Option<&V>, Option<&V>),
) {
    let mut ia = a.iter().peekable();
    let mut ib = b.iter().peekable();
    loop {
        match (ia.peek(), ib.peek()) {
            (None, None) => break,
            (Some((ka, va)), None) => {
                f(ka, Some(va), None);
                ia.next();
            }
            (None, Some((kb, vb))) => {
                f(kb, None, Some(vb));
                ib.next();
            }
            (Some((ka, va)), Some((kb, vb))) => match ka.cmp(kb) {
                std::cmp::Ordering::Less => {
                    f(ka, Some(va), None);
                    ia.next();
                }
                std::cmp::Ordering::Greater => {
                    f(kb, None, Some(vb));
                    ib.next();
                }
                std::cmp::Ordering::Equal => {
                    if !same(va, vb) {
                        f(ka, Some(va), Some(vb));
                    }
                    ia.next();
                    ib.next();
                }
            },
        }
    }
}

/// The objects that depend on `key` through controller ownerReferences
/// and are to be re-judged because it changed from `old` to `new`: its
/// direct dependents when anything they are compared with or inherit moved
/// (its presence, uid, labels, pod template, controller; not `replicas`),
/// and their dependents in turn, at most `graph::MAX_CHAIN` levels down,
/// when what they inherit moved (its class labels, controller, presence,
/// uid). O(dependents), found through the index.
pub fn dependents_affected(
    key: &WorkloadKey,
    old: Option<&Workload>,
    new: Option<&Workload>,
    index: &FindingsIndex,
) -> BTreeSet<WorkloadKey> {
    use crate::api::DATA_CLASS_LABEL;
    let (template_moved, classes_moved) = match (old, new) {
        (Some(a), Some(b)) => {
            let class = |w: &Workload| {
                (
                    w.labels.get(DATA_CLASS_LABEL).cloned(),
                    w.template_labels.get(DATA_CLASS_LABEL).cloned(),
                )
            };
            let classes = class(a) != class(b) || a.controller != b.controller || a.uid != b.uid;
            let template = classes
                || a.labels != b.labels
                || a.template_labels != b.template_labels
                || a.pod != b.pod
                || a.claim_templates != b.claim_templates;
            (template, classes)
        }
        (None, None) => (false, false),
        _ => (true, true),
    };
    let mut out = BTreeSet::new();
    if !template_moved {
        return out;
    }
    let mut frontier: Vec<WorkloadKey> = index.dependents_of(key).collect();
    out.extend(frontier.iter().cloned());
    if !classes_moved {
        return out;
    }
    for _ in 1..graph::MAX_CHAIN {
        let mut next = Vec::new();
        for k in &frontier {
            for d in index.dependents_of(k) {
                if &d != key && out.insert(d.clone()) {
                    next.push(d);
                }
            }
        }
        if next.is_empty() {
            break;
        }
        frontier = next;
    }
    out
}

/// The objects a change can affect: exactly those to re-judge.
pub fn affected_by(
    change: &Change,
    inv: &Inventory,
    index: &FindingsIndex,
) -> BTreeSet<WorkloadKey> {
    match change {
        Change::Workload(key) => BTreeSet::from([key.clone()]),
        Change::Node { name, old, new } => {
            // Pods bound to it, and classified workloads whose constraints
            // match it before or after (its standing changes their verdict).
            let mut keys: BTreeSet<WorkloadKey> = index.bound_to(name).cloned().collect();
            keys.extend(
                index
                    .scheduled
                    .iter()
                    .filter(|k| {
                        inv.workloads.get(*k).is_some_and(|w| {
                            let constraints = NodeConstraints::of(&w.pod);
                            [old, new]
                                .into_iter()
                                .flatten()
                                .any(|n| constraints.admits(&n.selector_view()))
                        })
                    })
                    .cloned(),
            );
            keys
        }
        Change::Namespace { name } => crate::state::index::in_namespace(&inv.workloads, name)
            .map(|(k, _)| k.clone())
            .collect(),
        Change::NetworkPolicy {
            namespace,
            old,
            new,
            ..
        } => {
            let compiled: Vec<CompiledNetworkPolicy> = [old, new]
                .into_iter()
                .flatten()
                .map(|np| CompiledNetworkPolicy::from_k8s(np))
                .collect();
            index
                .iter()
                .filter(|(k, _)| &k.namespace == namespace)
                .filter_map(|(k, _)| inv.workloads.get(k).map(|w| (k, w)))
                // The workload's own labels too: an EgressUnrestricted
                // message names a policy selecting only those (a near miss).
                .filter(|(_, w)| {
                    compiled
                        .iter()
                        .any(|c| c.selects(&w.template_labels) || c.selects(&w.labels))
                })
                .map(|(k, _)| k.clone())
                .collect()
        }
        Change::Policy { name } => {
            // Whatever it governed, and whatever carries a class it governs now.
            let classes: BTreeSet<DataClass> = inv
                .policies
                .get(name)
                .map(|p| p.spec.data_classes.iter().copied().collect())
                .unwrap_or_default();
            index
                .iter()
                .filter(|(_, f)| {
                    f.policies.iter().any(|p| &p.policy == name)
                        || f.classes.iter().any(|c| classes.contains(c))
                })
                .map(|(k, _)| k.clone())
                .collect()
        }
        Change::Claim { namespace, name } => claim_users(inv, index, namespace, name),
        Change::PersistentVolume { claims, .. } => claims
            .iter()
            .flat_map(|(namespace, name)| claim_users(inv, index, namespace, name))
            .collect(),
        Change::EgressLayer { namespace, .. } => index
            .iter()
            .filter(|(k, _)| namespace.as_ref().is_none_or(|ns| &k.namespace == ns))
            .map(|(k, _)| k.clone())
            .collect(),
        Change::StorageClass { .. } => index
            .iter()
            .filter(|(k, _)| inv.workloads.get(*k).is_some_and(|w| uses_claims(w)))
            .map(|(k, _)| k.clone())
            .collect(),
        Change::ExemptionLapsed { policy } => index
            .iter()
            .filter(|(_, f)| {
                f.policies
                    .iter()
                    .any(|p| &p.policy == policy && p.exemption.as_ref().is_some_and(|e| e.active))
            })
            .map(|(k, _)| k.clone())
            .collect(),
    }
}

/// The judged objects of `namespace` that use the claim `name`.
fn claim_users(
    inv: &Inventory,
    index: &FindingsIndex,
    namespace: &str,
    name: &str,
) -> BTreeSet<WorkloadKey> {
    index
        .iter()
        .filter(|(k, _)| k.namespace == namespace)
        .filter(|(k, _)| inv.workloads.get(*k).is_some_and(|w| uses_claim(w, name)))
        .map(|(k, _)| k.clone())
        .collect()
}

/// The next instant an exemption lapses after `now`, and the policies whose
/// exemptions lapse then.
pub fn next_lapse(inv: &Inventory, now: Timestamp) -> Option<(Timestamp, Vec<String>)> {
    let mut next: Option<(Timestamp, Vec<String>)> = None;
    for p in inv.snapshot.policies.iter() {
        for e in &p.exemptions {
            if e.lapses_at <= now {
                continue;
            }
            match &mut next {
                Some((t, names)) if e.lapses_at == *t => {
                    if !names.iter().any(|n| p.name == *n) {
                        names.push(p.name.to_string());
                    }
                }
                Some((t, _)) if e.lapses_at > *t => {}
                _ => next = Some((e.lapses_at, vec![p.name.to_string()])),
            }
        }
    }
    next
}
