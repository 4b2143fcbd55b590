//! The findings index: each judged object's latest findings, replaced one
//! object at a time, and `affected_by`, which says which objects a change in
//! the cluster can affect. Pure and synchronous: no I/O, no clock.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use jiff::Timestamp;
use k8s_openapi::api::networking::v1::NetworkPolicy;

use crate::api::{Action, DataClass};
use crate::engine::egress::CompiledNetworkPolicy;
use crate::engine::selector::{NodeLabels, Term};
use crate::engine::verdict::{Evidence, ExemptionUse, NodeEvidence};
use crate::engine::{Code, NodeInfo, Text, Workload, WorkloadKind, evaluate};
use crate::state::{Inventory, WorkloadKey};

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
        old: Option<Box<NetworkPolicy>>,
        new: Option<Box<NetworkPolicy>>,
    },
    /// A ResidencyPolicy's spec changed (or it appeared or disappeared).
    Policy { name: String },
    /// A workload or pod appeared, changed or disappeared.
    Workload(WorkloadKey),
    /// An exemption of this policy lapsed.
    ExemptionLapsed { policy: String },
}

/// One counting or exempted violation, reduced to what reports need.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FindingViolation {
    pub code: Code,
    pub field: String,
    pub message: Text,
    pub exempted: bool,
    /// The node a pod is bound to (BoundToNodeOutside).
    pub node: Option<NodeEvidence>,
}

/// How an object fares under one governing policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyFinding {
    pub policy: String,
    pub action: Action,
    pub exemption: Option<ExemptionUse>,
    pub violations: Vec<FindingViolation>,
}

impl PolicyFinding {
    pub fn violated(&self) -> bool {
        self.violations.iter().any(|v| !v.exempted)
    }
}

/// The workload that owns a pod, as far as the inventory tells.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OwnerLink {
    /// The pod's controller ownerReference (kind, name), e.g. ReplicaSet api-7d9f.
    pub kind: String,
    pub name: String,
    /// The top-level workload, when it is known (e.g. Deployment api).
    pub top: Option<WorkloadKey>,
}

/// What the audit knows about one object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    pub classes: Vec<DataClass>,
    /// One per governing policy (for controller-owned pods: only those with
    /// a BoundToNodeOutside violation; the rest is reported on the owner).
    pub policies: Vec<PolicyFinding>,
    /// Set for controller-owned pods.
    pub owner: Option<OwnerLink>,
    /// The classification label cannot be understood.
    pub error: Option<String>,
}

impl Finding {
    pub fn is_owned_pod(&self) -> bool {
        self.owner.is_some()
    }
}

/// Object → findings. Only objects that carry a data class (or a broken
/// classification label) have an entry.
#[derive(Clone, Debug, Default)]
pub struct FindingsIndex {
    entries: BTreeMap<WorkloadKey, Finding>,
}

impl FindingsIndex {
    pub fn new() -> Self {
        FindingsIndex::default()
    }

    pub fn get(&self, key: &WorkloadKey) -> Option<&Finding> {
        self.entries.get(key)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&WorkloadKey, &Finding)> {
        self.entries.iter()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Judge every object in the inventory afresh.
    pub fn rebuild(&mut self, inv: &Inventory, now: Timestamp) {
        self.entries = inv
            .workloads
            .iter()
            .filter_map(|(k, w)| judge(w, inv, now).map(|f| (k.clone(), f)))
            .collect();
    }

    /// Re-judge `keys` only (objects gone from the inventory are dropped).
    /// Returns the keys whose findings changed.
    pub fn rejudge(
        &mut self,
        keys: &BTreeSet<WorkloadKey>,
        inv: &Inventory,
        now: Timestamp,
    ) -> BTreeSet<WorkloadKey> {
        let mut changed = BTreeSet::new();
        for key in keys {
            let fresh = inv.workloads.get(key).and_then(|w| judge(w, inv, now));
            let same = match fresh {
                Some(f) => {
                    let old = self.entries.insert(key.clone(), f);
                    old.as_ref() == self.entries.get(key)
                }
                None => self.entries.remove(key).is_none(),
            };
            if !same {
                changed.insert(key.clone());
            }
        }
        changed
    }
}

/// Judge one object. None when it carries no data class at all (nothing
/// can govern it) — the index keeps no entry for it.
pub fn judge(w: &Workload, inv: &Inventory, now: Timestamp) -> Option<Finding> {
    let owner = owner_of(w, inv);
    match evaluate(&inv.snapshot, w, now) {
        Err(e) => Some(Finding {
            classes: Vec::new(),
            policies: Vec::new(),
            owner,
            error: Some(e.to_string()),
        }),
        Ok(verdict) if verdict.classes.is_empty() => None,
        Ok(verdict) => {
            let owned = owner.is_some();
            let policies = verdict
                .policies
                .into_iter()
                .filter_map(|p| {
                    let violations: Vec<FindingViolation> = p
                        .violations
                        .into_iter()
                        // A controller-owned pod's template findings are
                        // reported on its owner; only where it runs is its own.
                        .filter(|v| !owned || v.code == Code::BoundToNodeOutside)
                        .map(|v| FindingViolation {
                            node: match v.evidence {
                                Evidence::BoundNode { node } => Some(node),
                                _ => None,
                            },
                            code: v.code,
                            field: v.field,
                            message: v.message,
                            exempted: v.exempted,
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
            Some(Finding {
                classes: verdict.classes,
                policies,
                owner,
                error: None,
            })
        }
    }
}

/// Resolve a controller-owned pod's owner, and through the naming
/// conventions of the built-in controllers its top-level workload
/// (ReplicaSet `<deployment>-<pod-template-hash>`, Job `<cronjob>-<n>`).
fn owner_of(w: &Workload, inv: &Inventory) -> Option<OwnerLink> {
    let c = w.controller.as_ref()?;
    let key = |kind: WorkloadKind, name: &str| WorkloadKey {
        kind,
        namespace: w.namespace.clone(),
        name: name.to_string(),
    };
    let known = |k: &WorkloadKey| inv.workloads.contains_key(k);
    let direct = WorkloadKind::ALL
        .into_iter()
        .find(|k| k.as_str() == c.kind)
        .map(|k| key(k, &c.name));
    let top = match (c.kind.as_str(), &direct) {
        ("ReplicaSet", _) => w
            .labels
            .get("pod-template-hash")
            .and_then(|h| c.name.strip_suffix(&format!("-{h}")))
            .map(|d| key(WorkloadKind::Deployment, d))
            .filter(known)
            .or(direct.clone().filter(known)),
        ("Job", _) => c
            .name
            .rsplit_once('-')
            .filter(|(_, n)| !n.is_empty() && n.chars().all(|ch| ch.is_ascii_digit()))
            .map(|(cron, _)| key(WorkloadKind::CronJob, cron))
            .filter(known)
            .or(direct.clone().filter(known)),
        (_, Some(d)) => Some(d.clone()).filter(known),
        _ => None,
    };
    Some(OwnerLink {
        kind: c.kind.clone(),
        name: c.name.clone(),
        top,
    })
}

/// Could this workload's pods run on `node`, by its own constraints
/// (nodeName, nodeSelector, required node affinity)?
pub fn could_run_on(w: &Workload, node: &NodeInfo) -> bool {
    let view = NodeLabels {
        name: &node.name,
        labels: &node.labels,
    };
    let pod = &w.pod;
    if pod.node_name.as_ref().is_some_and(|n| n != &node.name) {
        return false;
    }
    // nodeSelector is label equality (as `Requirement::label_eq`), checked
    // without building requirements: this runs for every workload per node
    // change.
    let selector_ok = pod
        .node_selector
        .iter()
        .flatten()
        .all(|(k, v)| node.labels.get(k) == Some(v));
    if !selector_ok {
        return false;
    }
    let required = pod
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|na| {
            na.required_during_scheduling_ignored_during_execution
                .as_ref()
        });
    match required {
        None => true,
        Some(sel) => sel
            .node_selector_terms
            .iter()
            .map(Term::from_k8s)
            .any(|t| t.matches(&view)),
    }
}

/// The index's entries with their workloads in `inv`, by walking both
/// sorted maps side by side (a lookup per entry costs more at 10,000s).
fn judged_workloads<'a>(
    index: &'a FindingsIndex,
    inv: &'a Inventory,
) -> impl Iterator<Item = (&'a WorkloadKey, &'a Workload)> {
    let mut workloads = inv.workloads.iter().peekable();
    index.iter().filter_map(move |(key, _)| {
        // Skip workloads the index has no entry for (unclassified).
        while workloads.next_if(|(k, _)| *k < key).is_some() {}
        workloads
            .next_if(|(k, _)| *k == key)
            .map(|(k, w)| (k, w.as_ref()))
    })
}

/// What changed from `prev` to `next`. Policy status changes (our own
/// writes) are not changes: only spec and generation count.
pub fn diff(prev: &Inventory, next: &Inventory) -> Vec<Change> {
    let mut changes = Vec::new();

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
    merge_by(
        &prev.network_policies,
        &next.network_policies,
        |a, b| a.spec == b.spec,
        |key, old, new| {
            let (namespace, name) = key.split_once('/').unwrap_or(("", key));
            changes.push(Change::NetworkPolicy {
                namespace: namespace.to_string(),
                name: name.to_string(),
                old: old.map(|o| Box::new(o.clone())),
                new: new.map(|n| Box::new(n.clone())),
            })
        },
    );
    merge_by(
        &prev.policies,
        &next.policies,
        |a, b| a.spec == b.spec && a.metadata.generation == b.metadata.generation,
        |name, _, _| changes.push(Change::Policy { name: name.clone() }),
    );
    merge_by(
        &prev.workloads,
        &next.workloads,
        |a, b| Arc::ptr_eq(a, b) || a == b,
        |key, _, _| changes.push(Change::Workload(key.clone())),
    );
    changes
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
            judged_workloads(index, inv)
                .filter(|(_, w)| match &w.pod.node_name {
                    Some(bound) => bound == name,
                    None => [old, new].into_iter().flatten().any(|n| could_run_on(w, n)),
                })
                .map(|(k, _)| k.clone())
                .collect()
        }
        Change::Namespace { name } => inv
            .workloads
            .keys()
            .filter(|k| &k.namespace == name)
            .cloned()
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
                .filter(|(_, w)| compiled.iter().any(|c| c.selects(&w.template_labels)))
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

/// The next instant an exemption lapses after `now`, and the policies whose
/// exemptions lapse then.
pub fn next_lapse(inv: &Inventory, now: Timestamp) -> Option<(Timestamp, Vec<String>)> {
    let mut next: Option<(Timestamp, Vec<String>)> = None;
    for p in &inv.snapshot.policies {
        for e in &p.exemptions {
            if e.lapses_at <= now {
                continue;
            }
            match &mut next {
                Some((t, names)) if e.lapses_at == *t => {
                    if !names.contains(&p.name) {
                        names.push(p.name.clone());
                    }
                }
                Some((t, _)) if e.lapses_at > *t => {}
                _ => next = Some((e.lapses_at, vec![p.name.clone()])),
            }
        }
    }
    next
}
