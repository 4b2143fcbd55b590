//! The live index the watches write into, one event at a time, and what a
//! publish takes from it.
//!
//! Two kinds of data, kept apart because they change at different rates:
//! - the cluster's shape (policies, nodes, namespaces, NetworkPolicies,
//!   ExternalName Services, storage): a few thousand objects that change
//!   rarely; any real change to them rebuilds the `Snapshot` once per
//!   publish;
//! - workloads and pods, owned or not: up to Kubernetes' 150,000 pods,
//!   with a steady churn. They live in one persistent ordered map
//!   (`imbl::OrdMap`): an event updates one entry, and a publish clones the
//!   map in O(1), sharing every unchanged node with the previous inventory.
//!   Comparing two such maps (`OrdMap::diff`) skips the shared nodes, so the
//!   audit finds the keys a publish changed in O(changes · log n), not by
//!   walking 150,000 entries.
//!
//! An event whose projection equals what is stored (a status heartbeat, a
//! resync) changes nothing and wakes nobody.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::networking::v1::NetworkPolicy;

use super::WorkloadKey;
use crate::api::ResidencyPolicy;
use crate::engine::{
    ClaimRecord, ClassRecord, EgressSemantics, Labels, NodeInfo, VolumeRecord, Workload,
    WorkloadKind,
};

/// Every workload object and Pod, owned or not, by key: a persistent map, so an inventory's copy costs O(1) and shares
/// all it did not change.
pub type Workloads = imbl::OrdMap<WorkloadKey, Arc<Workload>>;

/// One projected cluster object. Projections are shared (`Arc`), so copying
/// the parts for a rebuild copies no object.
#[derive(Clone, Debug, PartialEq)]
pub enum Item {
    Policy(Arc<ResidencyPolicy>),
    Node(Arc<NodeInfo>),
    Namespace(Arc<BTreeMap<String, String>>),
    NetworkPolicy(Arc<NetworkPolicy>),
    Service(Arc<Service>),
    /// Storage objects, projected to the fields a storage verdict reads.
    Volume(Arc<VolumeRecord>),
    Claim(Arc<ClaimRecord>),
    Class(Arc<ClassRecord>),
    /// A policy of another egress layer (Cilium, Calico, AdminNetworkPolicy)
    /// or a Calico Tier: apiVersion, kind, metadata name and namespace, and
    /// spec (or specs) only.
    Layer(Arc<serde_json::Value>),
}

impl Item {
    /// Would replacing `self` by `new` change the Snapshot? A policy whose
    /// status alone changed (the audit writes it) does not.
    fn shapes_snapshot_differently(&self, new: &Item) -> bool {
        match (self, new) {
            (Item::Policy(a), Item::Policy(b)) => {
                a.spec != b.spec
                    || a.metadata.generation != b.metadata.generation
                    || a.metadata.name != b.metadata.name
            }
            (a, b) => a != b,
        }
    }
}

/// What one cluster watch keeps: object key (`namespace/name`) → projection.
pub type Part = BTreeMap<String, Item>;

/// What the watches have told so far.
#[derive(Debug, Default)]
pub struct Index {
    /// One part per watch (a workload watch's stays empty: its objects are
    /// in `workloads`).
    cluster: Vec<Part>,
    /// A cluster object changed in a way the Snapshot sees.
    snapshot_stale: bool,
    /// A ResidencyPolicy changed at all (its status, say): the inventory's
    /// copy of the policies is to be refreshed.
    policies_stale: bool,
    workloads: Workloads,
    /// A workload changed since the last `take`.
    workloads_changed: bool,
    /// The egress semantics changed (layer CRDs installed after start):
    /// the Snapshot is to be rebuilt under these.
    semantics: Option<EgressSemantics>,
}

/// What a publish takes from the index.
pub struct Taken {
    /// The cluster parts, when the Snapshot is to be rebuilt.
    pub rebuild: Option<Vec<Part>>,
    /// The ResidencyPolicies by name, when their copy is to be refreshed
    /// (always with `rebuild`).
    pub policies: Option<BTreeMap<String, Arc<ResidencyPolicy>>>,
    /// The NetworkPolicies by `namespace/name`, with `rebuild`.
    pub network_policies: Option<BTreeMap<String, Arc<NetworkPolicy>>>,
    /// The other egress layers' objects by `kind namespace/name`, with
    /// `rebuild`.
    pub egress_layers: Option<BTreeMap<String, Arc<serde_json::Value>>>,
    pub workloads: Workloads,
    /// New egress semantics, with `rebuild`.
    pub semantics: Option<EgressSemantics>,
}

impl Index {
    pub fn new(watches: usize) -> Index {
        Index {
            cluster: vec![Part::new(); watches],
            ..Index::default()
        }
    }

    /// One more cluster watch, started after the others: its place.
    pub fn add_watch(&mut self) -> usize {
        self.cluster.push(Part::new());
        self.cluster.len() - 1
    }

    /// The egress semantics changed: rebuild the Snapshot under them.
    pub fn set_semantics(&mut self, semantics: EgressSemantics) {
        self.semantics = Some(semantics);
        self.snapshot_stale = true;
    }

    /// A cluster object of watch `watch` appeared or changed (`Some`), or
    /// went away or is not kept (`None`).
    pub fn cluster_object(&mut self, watch: usize, key: String, item: Option<Item>) {
        let Some(part) = self.cluster.get_mut(watch) else {
            return;
        };
        match item {
            Some(new) => {
                if part.get(&key) == Some(&new) {
                    return;
                }
                let old = part.insert(key, new.clone());
                self.mark_cluster(old.as_ref(), Some(&new));
            }
            None => {
                if let Some(old) = part.remove(&key) {
                    self.mark_cluster(Some(&old), None);
                }
            }
        }
    }

    /// Watch `watch` relisted: `fresh` replaces its part.
    pub fn cluster_relisted(&mut self, watch: usize, fresh: Part) {
        let Some(part) = self.cluster.get_mut(watch) else {
            return;
        };
        if *part != fresh {
            let policies = part
                .values()
                .chain(fresh.values())
                .any(|i| matches!(i, Item::Policy(_)));
            *part = fresh;
            self.snapshot_stale = true;
            self.policies_stale |= policies;
        }
    }

    fn mark_cluster(&mut self, old: Option<&Item>, new: Option<&Item>) {
        let policy = [old, new]
            .into_iter()
            .flatten()
            .any(|i| matches!(i, Item::Policy(_)));
        self.policies_stale |= policy;
        self.snapshot_stale |= match (old, new) {
            (Some(a), Some(b)) => a.shapes_snapshot_differently(b),
            _ => true,
        };
    }

    /// A workload appeared or changed (`Some`), or went away or could not
    /// be read (`None`).
    pub fn workload(&mut self, key: WorkloadKey, workload: Option<Arc<Workload>>) {
        match workload {
            Some(new) => {
                if self.workloads.get(&key).is_some_and(|old| **old == *new) {
                    return;
                }
                self.workloads.insert(key.clone(), new);
            }
            None => {
                if self.workloads.remove(&key).is_none() {
                    return;
                }
            }
        }
        self.workloads_changed = true;
    }

    /// The watch of `kind` relisted: `fresh` replaces every `kind` entry.
    /// Entries whose projection is the same keep their shared copy.
    pub fn workloads_relisted(
        &mut self,
        kind: WorkloadKind,
        fresh: BTreeMap<WorkloadKey, Arc<Workload>>,
    ) {
        let gone: Vec<WorkloadKey> = self
            .workloads
            .range((Bound::Included(kind_start(kind)), Bound::Unbounded))
            .map(|(k, _)| k)
            .take_while(|k| k.kind == kind)
            .filter(|k| !fresh.contains_key(*k))
            .cloned()
            .collect();
        for key in gone {
            self.workload(key, None);
        }
        for (key, w) in fresh {
            self.workload(key, Some(w));
        }
    }

    /// Is there anything for a publish to do?
    pub fn changed(&self) -> bool {
        self.snapshot_stale || self.policies_stale || self.workloads_changed
    }

    /// Take what a publish needs, and start recording afresh.
    pub fn take(&mut self) -> Taken {
        let rebuild = std::mem::take(&mut self.snapshot_stale).then(|| self.cluster.clone());
        let policies = std::mem::take(&mut self.policies_stale) || rebuild.is_some();
        Taken {
            policies: policies.then(|| {
                of_kind(&self.cluster, |item| match item {
                    Item::Policy(p) => Some(p),
                    _ => None,
                })
            }),
            network_policies: rebuild.as_ref().map(|parts| {
                of_kind(parts, |item| match item {
                    Item::NetworkPolicy(np) => Some(np),
                    _ => None,
                })
            }),
            egress_layers: rebuild.as_ref().map(|parts| {
                parts
                    .iter()
                    .flatten()
                    .filter_map(|(key, item)| match item {
                        Item::Layer(v) => {
                            let kind = v.get("kind").and_then(|k| k.as_str()).unwrap_or_default();
                            Some((
                                format!("{kind} {}", key.trim_start_matches('/')),
                                Arc::clone(v),
                            ))
                        }
                        _ => None,
                    })
                    .collect()
            }),
            rebuild,
            semantics: self.semantics.take(),
            workloads: {
                self.workloads_changed = false;
                self.workloads.clone()
            },
        }
    }
}

/// The projections `pick` takes from the parts, by key: `namespace/name`,
/// or the name alone for cluster-scoped objects (keyed `/name`).
fn of_kind<T>(parts: &[Part], pick: impl Fn(&Item) -> Option<&Arc<T>>) -> BTreeMap<String, Arc<T>> {
    parts
        .iter()
        .flatten()
        .filter_map(|(key, item)| {
            let found = pick(item)?;
            Some((key.trim_start_matches('/').to_string(), Arc::clone(found)))
        })
        .collect()
}

/// The first key of `kind` (keys order by kind first).
fn kind_start(kind: WorkloadKind) -> WorkloadKey {
    WorkloadKey {
        kind,
        namespace: String::new(),
        name: String::new(),
    }
}

/// Label maps shared by the workloads that carry the same labels: the
/// replicas of one ReplicaSet have identical ones, so 150,000 pods carry a
/// few thousand distinct maps, each kept once instead of once per pod.
#[derive(Debug, Default)]
pub struct LabelPool {
    maps: std::collections::HashSet<Labels>,
    /// Drop the maps nobody else holds when the pool reaches this size.
    prune_at: usize,
}

impl LabelPool {
    /// The pooled copy of `labels` (the given one becomes the pooled one).
    pub fn intern(&mut self, labels: Labels) -> Labels {
        if let Some(shared) = self.maps.get(&labels) {
            return Arc::clone(shared);
        }
        self.maps.insert(Arc::clone(&labels));
        if self.maps.len() >= self.prune_at {
            // Amortised O(1): the pool at most doubles between prunes.
            self.maps.retain(|m| Arc::strong_count(m) > 1);
            self.prune_at = (self.maps.len() * 2).max(1024);
        }
        labels
    }

    /// Share `w`'s label maps with the workloads that have the same ones.
    pub fn share(&mut self, w: &mut Workload) {
        let same = Arc::ptr_eq(&w.labels, &w.template_labels);
        w.labels = self.intern(Arc::clone(&w.labels));
        w.template_labels = if same {
            Arc::clone(&w.labels)
        } else {
            self.intern(Arc::clone(&w.template_labels))
        };
    }

    pub fn len(&self) -> usize {
        self.maps.len()
    }

    pub fn is_empty(&self) -> bool {
        self.maps.is_empty()
    }
}

/// Every entry of `namespace` (workloads and bound pods), kind by kind in
/// key order: a range per kind of the ordered map, no scan.
pub fn in_namespace<'a>(
    workloads: &'a Workloads,
    namespace: &'a str,
) -> impl Iterator<Item = (&'a WorkloadKey, &'a Arc<Workload>)> + 'a {
    WorkloadKind::ALL.into_iter().flat_map(move |kind| {
        let start = WorkloadKey {
            kind,
            namespace: namespace.to_string(),
            name: String::new(),
        };
        workloads
            .range((Bound::Included(start), Bound::Unbounded))
            .take_while(move |(k, _)| k.kind == kind && k.namespace == namespace)
    })
}

#[cfg(test)]
mod tests {
    //! The index against a brute-force model: after any sequence of watch
    //! events and publishes, the published map holds exactly the model's
    //! workloads, and the structural diff between two publishes names
    //! exactly the keys whose workload differs.

    use std::collections::BTreeSet;

    use proptest::prelude::*;
    use serde_json::json;

    use super::*;
    use crate::audit::index::workload_changes;

    const KINDS: [WorkloadKind; 3] = [
        WorkloadKind::Pod,
        WorkloadKind::Deployment,
        WorkloadKind::StatefulSet,
    ];

    fn workload(kind: WorkloadKind, ns: u8, name: u8, variant: u8) -> Workload {
        let mut obj = json!({
            "apiVersion": kind.api_version(), "kind": kind.as_str(),
            "metadata": {"name": format!("w{name}"), "namespace": format!("ns{ns}"),
                         "labels": {"v": format!("{variant}")}},
        });
        let pod = json!({"containers": [{"name": "c"}], "nodeName": format!("node-{variant}")});
        if kind == WorkloadKind::Pod {
            obj["spec"] = pod;
            if variant % 2 == 1 {
                obj["metadata"]["ownerReferences"] = json!([{"apiVersion": "apps/v1",
                    "kind": "ReplicaSet", "name": "rs", "uid": "u", "controller": true}]);
            }
        } else {
            obj["spec"] = json!({"template": {"metadata": {"labels": {"v": format!("{variant}")}}, "spec": pod}});
        }
        Workload::from_value(&obj, "default").expect("test workload")
    }

    fn key(kind: WorkloadKind, ns: u8, name: u8) -> WorkloadKey {
        WorkloadKey {
            kind,
            namespace: format!("ns{ns}"),
            name: format!("w{name}"),
        }
    }

    #[derive(Clone, Debug)]
    enum Op {
        Upsert(usize, u8, u8, u8),
        Delete(usize, u8, u8),
        /// A relist of a kind: (ns, name, variant) of what the list holds.
        Relist(usize, Vec<(u8, u8, u8)>),
        Publish,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => (0..3usize, 0..3u8, 0..6u8, 0..3u8).prop_map(|(k, n, m, v)| Op::Upsert(k, n, m, v)),
            3 => (0..3usize, 0..3u8, 0..6u8).prop_map(|(k, n, m)| Op::Delete(k, n, m)),
            1 => (0..3usize, proptest::collection::vec((0..3u8, 0..6u8, 0..3u8), 0..8))
                .prop_map(|(k, l)| Op::Relist(k, l)),
            3 => Just(Op::Publish),
        ]
    }

    proptest! {
        #[test]
        fn published_maps_and_their_diffs_match_the_model(ops in proptest::collection::vec(op(), 1..60)) {
            let mut index = Index::new(0);
            let mut model: BTreeMap<WorkloadKey, Workload> = BTreeMap::new();
            let mut published_model = model.clone();
            let mut published = Workloads::new();
            for op in ops.into_iter().chain([Op::Publish]) {
                match op {
                    Op::Upsert(k, ns, name, v) => {
                        let w = workload(KINDS[k], ns, name, v);
                        model.insert(key(KINDS[k], ns, name), w.clone());
                        index.workload(key(KINDS[k], ns, name), Some(Arc::new(w)));
                    }
                    Op::Delete(k, ns, name) => {
                        model.remove(&key(KINDS[k], ns, name));
                        index.workload(key(KINDS[k], ns, name), None);
                    }
                    Op::Relist(k, listed) => {
                        let kind = KINDS[k];
                        model.retain(|key, _| key.kind != kind);
                        let mut fresh = BTreeMap::new();
                        for (ns, name, v) in listed {
                            let w = workload(kind, ns, name, v);
                            model.insert(key(kind, ns, name), w.clone());
                            fresh.insert(key(kind, ns, name), Arc::new(w));
                        }
                        index.workloads_relisted(kind, fresh);
                    }
                    Op::Publish => {
                        // No change goes unannounced (an undone one may be).
                        if model != published_model {
                            prop_assert!(index.changed());
                        }
                        let next = index.take().workloads;
                        let got: BTreeMap<WorkloadKey, Workload> =
                            next.iter().map(|(k, w)| (k.clone(), (**w).clone())).collect();
                        prop_assert_eq!(&got, &model);
                        // The structural diff names exactly what differs.
                        let diffed: BTreeSet<WorkloadKey> =
                            workload_changes(&published, &next).collect();
                        let brute: BTreeSet<WorkloadKey> = published_model
                            .keys()
                            .chain(model.keys())
                            .filter(|k| published_model.get(*k) != model.get(*k))
                            .cloned()
                            .collect();
                        prop_assert_eq!(diffed, brute);
                        for ns in 0..3u8 {
                            let ns = format!("ns{ns}");
                            let judged: Vec<WorkloadKey> = in_namespace(&next, &ns)
                                .filter(|(_, w)| w.controller.is_none())
                                .map(|(k, _)| k.clone())
                                .collect();
                            let want: Vec<WorkloadKey> = model
                                .iter()
                                .filter(|(k, w)| k.namespace == ns && w.controller.is_none())
                                .map(|(k, _)| k.clone())
                                .collect();
                            prop_assert_eq!(judged, want);
                        }
                        published = next;
                        published_model = model.clone();
                    }
                }
            }
        }
    }

    fn node(name: &str, region: &str) -> Item {
        Item::Node(Arc::new(NodeInfo {
            name: name.into(),
            labels: BTreeMap::from([("topology.kubernetes.io/region".into(), region.into())]),
            provider_id: None,
        }))
    }

    #[test]
    fn replicas_share_one_label_map_and_unused_maps_are_pruned() {
        let mut pool = LabelPool::default();
        let mut a = workload(WorkloadKind::Pod, 0, 0, 1);
        let mut b = workload(WorkloadKind::Pod, 0, 1, 1);
        pool.share(&mut a);
        pool.share(&mut b);
        assert!(Arc::ptr_eq(&a.labels, &b.labels));
        assert!(
            Arc::ptr_eq(&b.labels, &b.template_labels),
            "a Pod is its own template"
        );
        assert_eq!(pool.len(), 1);
        drop((a, b));
        // Past the prune size, maps nobody holds any more are dropped.
        let mut kept = Vec::new();
        for i in 0..2_000u32 {
            let mut w = workload(WorkloadKind::Deployment, 0, 0, 0);
            w.labels = Arc::new(BTreeMap::from([("i".to_string(), i.to_string())]));
            pool.share(&mut w);
            if i % 2 == 0 {
                kept.push(w);
            }
        }
        assert!(pool.len() < 1_500, "{} maps pooled", pool.len());
        // What is held is still shared, not duplicated.
        let mut again = kept[0].clone();
        again.labels = Arc::new((*kept[0].labels).clone());
        pool.share(&mut again);
        assert!(Arc::ptr_eq(&again.labels, &kept[0].labels));
    }

    #[test]
    fn an_unchanged_projection_wakes_nobody_and_rebuilds_nothing() {
        let mut index = Index::new(1);
        index.cluster_object(0, "/n1".into(), Some(node("n1", "cn-north-1")));
        assert!(index.take().rebuild.is_some());
        // A status heartbeat: the projection is the same.
        index.cluster_object(0, "/n1".into(), Some(node("n1", "cn-north-1")));
        assert!(!index.changed());
        index.cluster_object(0, "/n1".into(), Some(node("n1", "us-east-1")));
        assert!(index.changed());
        let taken = index.take();
        assert!(taken.rebuild.is_some());
        assert!(
            taken.policies.is_some(),
            "policies are refreshed with every rebuild"
        );
        // Deleting what is not there is no change.
        index.cluster_object(0, "/gone".into(), None);
        assert!(!index.changed());
        // A workload event does not rebuild the snapshot.
        index.workload(
            key(WorkloadKind::Pod, 0, 0),
            Some(Arc::new(workload(WorkloadKind::Pod, 0, 0, 0))),
        );
        let taken = index.take();
        assert!(taken.rebuild.is_none() && taken.policies.is_none());
        assert_eq!(taken.workloads.len(), 1);
    }

    #[test]
    fn a_policy_status_write_refreshes_policies_without_a_rebuild() {
        let policy = |violations: Option<i64>| {
            let mut p: ResidencyPolicy = serde_json::from_value(json!({
                "apiVersion": "residencyguard.io/v1alpha1", "kind": "ResidencyPolicy",
                "metadata": {"name": "p", "generation": 1},
                "spec": {"dataClasses": ["personal"], "action": "Deny"}
            }))
            .expect("policy");
            p.status = violations.map(|v| crate::api::ResidencyPolicyStatus {
                violations: Some(v),
                ..Default::default()
            });
            Item::Policy(Arc::new(p))
        };
        let mut index = Index::new(1);
        index.cluster_object(0, "/p".into(), Some(policy(None)));
        index.take();
        index.cluster_object(0, "/p".into(), Some(policy(Some(3))));
        let taken = index.take();
        assert!(
            taken.rebuild.is_none(),
            "a status write does not rebuild the snapshot"
        );
        let policies = taken.policies.expect("policies refreshed");
        assert_eq!(
            policies["p"].status.as_ref().and_then(|s| s.violations),
            Some(3)
        );
    }
}

#[cfg(test)]
mod late_watch_tests {
    //! A layer kind installed after start: its watch gets a part of its
    //! own, and new egress semantics rebuild the Snapshot under them.

    use serde_json::json;

    use super::*;
    use crate::engine::Cni;

    #[test]
    fn a_watch_added_later_keeps_its_objects_and_semantics_rebuild() {
        let mut ix = Index::new(2);
        let _ = ix.take();
        let late = ix.add_watch();
        assert_eq!(late, 2);
        let ccnp = Arc::new(json!({
            "apiVersion": "cilium.io/v2", "kind": "CiliumClusterwideNetworkPolicy",
            "metadata": {"name": "open"}, "spec": {"endpointSelector": {}}
        }));
        ix.cluster_object(late, "/open".into(), Some(Item::Layer(ccnp)));
        let taken = ix.take();
        let layers = taken.egress_layers.expect("rebuilt with the new kind");
        assert!(
            layers.contains_key("CiliumClusterwideNetworkPolicy open"),
            "{layers:?}"
        );
        assert!(taken.semantics.is_none());

        let cilium = EgressSemantics {
            cni: Cni::Cilium,
            ..EgressSemantics::default()
        };
        ix.set_semantics(cilium);
        assert!(ix.changed());
        let taken = ix.take();
        assert!(
            taken.rebuild.is_some(),
            "new semantics rebuild the Snapshot"
        );
        assert_eq!(taken.semantics, Some(cilium));
        assert!(ix.take().semantics.is_none(), "taken once");
    }
}
