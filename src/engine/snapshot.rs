//! The snapshot: everything a decision depends on besides the workload and
//! the time (policies, nodes, namespaces, NetworkPolicies, Services,
//! PersistentVolumes, PersistentVolumeClaims, StorageClasses, the
//! jurisdiction catalogue and address data), and the one builder that sorts
//! a cluster's objects into it. The CLI feeds the builder from manifests,
//! `state` from watches.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::networking::v1::NetworkPolicy;

use super::catalogue::Catalogue;
use super::egress::RuleWhereabouts;
use super::network::{AddressSpace, NetworkIndex};
use super::node_inventory::{ClassifiedNode, FixRegions, NodeInventory};
use super::nodes::NodeInfo;
use super::policy::{self, CompiledPolicy, Enforcement, PolicyProblem, RejectedPolicy};
use super::volumes::{ClaimRecord, ClassRecord, StorageIndex, VolumeRecord};
use crate::api::ResidencyPolicy;

/// Everything the decision depends on besides the workload and the time.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// Shared, not copied, when a snapshot is cloned or focused (every
    /// NetworkPolicy review makes two).
    pub catalogue: Arc<Catalogue>,
    /// Shared likewise; a builder appends through `Arc::make_mut`.
    pub policies: Arc<Vec<CompiledPolicy>>,
    /// Policies that do not compile, with their problems and what is
    /// enforced in their place (that version is in `policies`).
    pub rejected: Vec<RejectedPolicy>,
    pub namespaces: BTreeMap<String, BTreeMap<String, String>>,
    pub network: NetworkIndex,
    /// Shared, not copied, when a snapshot is cloned (the webhook clones
    /// one to judge a NetworkPolicy change).
    pub address_space: Arc<AddressSpace>,
    /// The node inventory; `None` when unknown (the CLI given only
    /// manifests), in which case the guarantee alone decides placement.
    inventory: Option<Arc<NodeInventory>>,
    /// PersistentVolumes (located), PersistentVolumeClaims and
    /// StorageClasses (judged); shared when a snapshot is cloned.
    storage: Arc<StorageIndex>,
    /// Where each egress rule's addresses lie, judged against
    /// `address_space` when the snapshot is built (`judge_egress_rules`);
    /// shared when a snapshot is cloned. Never stale, only unused for what
    /// changed since (see `RuleWhereabouts`).
    rule_whereabouts: Arc<RuleWhereabouts>,
}

impl Snapshot {
    pub fn new(catalogue: Catalogue, address_space: impl Into<Arc<AddressSpace>>) -> Self {
        Snapshot {
            catalogue: Arc::new(catalogue),
            address_space: address_space.into(),
            ..Snapshot::default()
        }
    }

    /// Judge where every egress rule's addresses lie against the address
    /// data, once, so that checking a pod only looks the answers up.
    /// `SnapshotBuilder::build` does it; call it again after changing
    /// `network` or `address_space` directly (the answers stay correct
    /// without it, only slower for what changed). Returns how many
    /// address sets were judged.
    pub fn judge_egress_rules(&mut self) -> usize {
        self.rule_whereabouts = Arc::new(RuleWhereabouts::new(&self.network, &self.address_space));
        self.rule_whereabouts.len()
    }

    pub(super) fn rule_whereabouts(&self) -> &RuleWhereabouts {
        &self.rule_whereabouts
    }

    /// Replace the node inventory, classifying and indexing each node once.
    pub fn set_nodes(&mut self, nodes: impl IntoIterator<Item = NodeInfo>) {
        self.inventory = Some(Arc::new(NodeInventory::new(nodes, &self.catalogue)));
    }

    /// The storage objects: PVs located, StorageClasses judged.
    pub fn storage(&self) -> &StorageIndex {
        &self.storage
    }

    /// Replace the storage objects, locating each PV and judging each
    /// StorageClass once (against the catalogue and the node inventory, so
    /// set the nodes first).
    pub fn set_storage(
        &mut self,
        volumes: impl IntoIterator<Item = impl Into<Arc<VolumeRecord>>>,
        claims: impl IntoIterator<Item = impl Into<Arc<ClaimRecord>>>,
        classes: Vec<ClassRecord>,
    ) {
        self.storage = Arc::new(StorageIndex::build(
            volumes.into_iter().map(Into::into).collect(),
            claims.into_iter().map(Into::into).collect(),
            classes,
            &self.catalogue,
            self.inventory.as_deref(),
        ));
    }

    /// The node inventory, when known.
    pub fn inventory(&self) -> Option<&NodeInventory> {
        self.inventory.as_deref()
    }

    /// The nodes, when the inventory is known.
    pub fn nodes(&self) -> Option<&[ClassifiedNode]> {
        self.inventory().map(NodeInventory::nodes)
    }

    /// The node of that name in the inventory.
    pub fn node(&self, name: &str) -> Option<&ClassifiedNode> {
        self.inventory()?.node(name)
    }

    /// The mainland regions in the inventory that placement fixes name,
    /// and those withheld because a node labelled with them is unverified
    /// (`NodeInventory::fix_regions`). Messages change when this does.
    pub fn inventory_mainland_regions(&self) -> &FixRegions {
        static NONE: FixRegions = FixRegions {
            offered: BTreeSet::new(),
            withheld: BTreeMap::new(),
        };
        self.inventory()
            .map_or(&NONE, |inventory| inventory.fix_regions())
    }

    /// Compile and add a policy; returns its warnings, or its errors.
    pub fn add_policy(
        &mut self,
        policy: &ResidencyPolicy,
        now: Timestamp,
    ) -> Result<Vec<PolicyProblem>, Vec<PolicyProblem>> {
        let (compiled, warnings) = policy::compile(policy, &self.catalogue, now)?;
        Arc::make_mut(&mut self.policies).push(compiled);
        Ok(warnings)
    }

    /// The rejected policy of that name, if it is one.
    pub fn rejected(&self, name: &str) -> Option<&RejectedPolicy> {
        self.rejected.iter().find(|r| r.name == name)
    }
}

/// What the API server says about one namespace at the moment of a review,
/// read when the snapshot may not have caught up with writes made
/// milliseconds earlier (a Namespace, or a NetworkPolicy, created in the
/// same `kubectl apply` as the workload).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NamespaceFacts {
    /// The Namespace's labels; `None` when the namespace does not exist.
    pub labels: Option<BTreeMap<String, String>>,
    /// Every NetworkPolicy in it; `None` when they were not read (the
    /// snapshot's are kept).
    pub network_policies: Option<Vec<k8s_openapi::api::networking::v1::NetworkPolicy>>,
    /// Its PersistentVolumeClaims, the PersistentVolumes they name and
    /// every StorageClass; `None` when they were not read (the snapshot's
    /// are kept).
    pub storage: Option<LiveStorage>,
}

/// Storage objects read at the moment of a review (a claim, its PV or a
/// class created in the same `kubectl apply` as the workload).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LiveStorage {
    /// Every claim of the namespace.
    pub claims: Vec<ClaimRecord>,
    /// The PVs those claims name (others are kept from the snapshot).
    pub volumes: Vec<VolumeRecord>,
    /// Every StorageClass.
    pub classes: Vec<ClassRecord>,
}

impl Snapshot {
    /// A snapshot for judging workloads of `namespace` only, with `facts`
    /// in place of what this snapshot knows about it. Policies, nodes and
    /// address data are shared or copied; other namespaces are left out
    /// (judging a workload reads only its own namespace), except the
    /// labels of the namespaces holding Calico NetworkSets, which a rule's
    /// namespaceSelector reads to select their sets.
    pub fn focused_on(&self, namespace: &str, facts: &NamespaceFacts) -> Snapshot {
        let mut namespaces = BTreeMap::new();
        for set in &self.network.layers().network_sets {
            if let Some(ns) = set.namespace.as_deref()
                && let Some(labels) = self.namespaces.get(ns)
            {
                namespaces.insert(ns.to_string(), labels.clone());
            }
        }
        let labels = facts
            .labels
            .as_ref()
            .or_else(|| self.namespaces.get(namespace));
        if let Some(labels) = labels {
            namespaces.insert(namespace.to_string(), labels.clone());
        }
        let mut network = self.network.namespace_only(namespace);
        if let Some(nps) = &facts.network_policies {
            network.replace_network_policies(namespace, nps);
        }
        let storage = match &facts.storage {
            None => Arc::clone(&self.storage),
            Some(live) => {
                // The live PVs replace the snapshot's of the same name.
                let live_names: BTreeSet<&str> =
                    live.volumes.iter().map(|v| v.name.as_str()).collect();
                let volumes = self
                    .storage
                    .volumes()
                    .filter(|v| !live_names.contains(v.record.name.as_str()))
                    .map(|v| Arc::clone(&v.record))
                    .chain(live.volumes.iter().cloned().map(Arc::new))
                    .collect();
                Arc::new(StorageIndex::build(
                    volumes,
                    live.claims.iter().cloned().map(Arc::new).collect(),
                    live.classes.clone(),
                    &self.catalogue,
                    self.inventory.as_deref(),
                ))
            }
        };
        Snapshot {
            catalogue: self.catalogue.clone(),
            policies: self.policies.clone(),
            rejected: self.rejected.clone(),
            namespaces,
            network,
            address_space: Arc::clone(&self.address_space),
            inventory: self.inventory.clone(),
            storage,
            // The rules' sets are shared with this snapshot's: still valid.
            rule_whereabouts: Arc::clone(&self.rule_whereabouts),
        }
    }
}

/// A policy's identity across rebuilds: its name and uid (a policy deleted
/// and created again under the same name is another policy).
type PolicyId = (String, Option<String>);

/// The last version of each policy (by name and uid) that compiled: what
/// stays enforced while a newer version does not. The caller keeps it from
/// one build to the next (`SnapshotBuilder::remembering`).
#[derive(Clone, Debug, Default)]
pub struct LastValid(BTreeMap<PolicyId, CompiledPolicy>);

/// Sorts a cluster's objects into a [`Snapshot`], in any order. The one
/// place that decides what each kind of object contributes: the CLI feeds
/// it the documents of its manifests, `state` the objects its watches
/// deliver.
pub struct SnapshotBuilder<'m> {
    snapshot: Snapshot,
    now: Timestamp,
    nodes: Vec<NodeInfo>,
    nodes_known: bool,
    last_valid: Option<&'m mut LastValid>,
    seen: BTreeSet<PolicyId>,
    storage: StorageParts,
}

/// The storage objects added so far.
#[derive(Default)]
struct StorageParts {
    volumes: Vec<Arc<VolumeRecord>>,
    claims: Vec<Arc<ClaimRecord>>,
    classes: Vec<ClassRecord>,
}

impl SnapshotBuilder<'static> {
    /// Start from `base` (its catalogue and address data; whatever else it
    /// holds is kept), judging policies as of `now`.
    pub fn new(base: Snapshot, now: Timestamp) -> Self {
        SnapshotBuilder {
            snapshot: base,
            now,
            nodes: Vec::new(),
            nodes_known: false,
            last_valid: None,
            seen: BTreeSet::new(),
            storage: StorageParts::default(),
        }
    }
}

impl<'m> SnapshotBuilder<'m> {
    /// Keep invalid policies enforced at their last valid version from
    /// `last_valid`, and record there the versions that compile now.
    pub fn remembering(self, last_valid: &'m mut LastValid) -> SnapshotBuilder<'m> {
        SnapshotBuilder {
            snapshot: self.snapshot,
            now: self.now,
            nodes: self.nodes,
            nodes_known: self.nodes_known,
            last_valid: Some(last_valid),
            seen: self.seen,
            storage: self.storage,
        }
    }

    /// The node inventory is known even if no node is added (a cluster's
    /// watch, not manifests that simply list none).
    pub fn nodes_known(&mut self) {
        self.nodes_known = true;
    }

    /// Add a policy for enforcement whatever its state: compiled when it
    /// compiles (its warnings returned), else its last valid version (same
    /// name and uid, when remembering) or its strictest reading, recorded in
    /// `Snapshot::rejected` with its problems (returned).
    pub fn policy(
        &mut self,
        policy: &ResidencyPolicy,
    ) -> Result<Vec<PolicyProblem>, &[PolicyProblem]> {
        let id: PolicyId = (
            policy.metadata.name.clone().unwrap_or_default(),
            policy.metadata.uid.clone(),
        );
        let snapshot = &mut self.snapshot;
        match policy::compile(policy, &snapshot.catalogue, self.now) {
            Ok((compiled, warnings)) => {
                if let Some(memory) = self.last_valid.as_deref_mut() {
                    memory.0.insert(id.clone(), compiled.clone());
                }
                Arc::make_mut(&mut snapshot.policies).push(compiled);
                self.seen.insert(id);
                Ok(warnings)
            }
            Err(problems) => {
                let last = self.last_valid.as_deref().and_then(|m| m.0.get(&id));
                let (enforced, how) = match last {
                    Some(p) => (
                        p.clone(),
                        Enforcement::LastValid {
                            generation: p.generation,
                        },
                    ),
                    None => (policy::strictest_reading(policy), Enforcement::Strictest),
                };
                Arc::make_mut(&mut snapshot.policies).push(enforced);
                snapshot.rejected.push(RejectedPolicy {
                    name: id.0.clone(),
                    uid: id.1.clone(),
                    generation: policy.metadata.generation,
                    problems,
                    enforced: how,
                });
                self.seen.insert(id);
                Err(snapshot
                    .rejected
                    .last()
                    .map_or(&[][..], |r| r.problems.as_slice()))
            }
        }
    }

    pub fn node(&mut self, node: NodeInfo) {
        self.nodes.push(node);
    }

    pub fn namespace(&mut self, name: impl Into<String>, labels: BTreeMap<String, String>) {
        self.snapshot.namespaces.insert(name.into(), labels);
    }

    pub fn network_policy(&mut self, np: &NetworkPolicy) {
        self.snapshot.network.add_network_policy(np);
    }

    /// A policy of another egress layer (Cilium, Calico, AdminNetworkPolicy)
    /// or a Calico Tier, from its object.
    pub fn layer_object(&mut self, api_version: &str, kind: &str, obj: &serde_json::Value) {
        self.snapshot
            .network
            .add_layer_object(api_version, kind, obj);
    }

    /// Only ExternalName Services matter (see `network::NetworkIndex`).
    pub fn service(&mut self, svc: &Service) {
        self.snapshot.network.add_service(svc);
    }

    /// A PersistentVolume, projected (`VolumeRecord::from_k8s`); a shared
    /// projection is kept as it is, not copied.
    pub fn persistent_volume(&mut self, pv: impl Into<Arc<VolumeRecord>>) {
        self.storage.volumes.push(pv.into());
    }

    /// A PersistentVolumeClaim, projected (`ClaimRecord::from_k8s`); a
    /// shared projection is kept as it is, not copied.
    pub fn persistent_volume_claim(&mut self, claim: impl Into<Arc<ClaimRecord>>) {
        self.storage.claims.push(claim.into());
    }

    /// A StorageClass, projected (`ClassRecord::from_k8s`).
    pub fn storage_class(&mut self, class: ClassRecord) {
        self.storage.classes.push(class);
    }

    /// Namespaces added so far.
    pub fn namespace_count(&self) -> usize {
        self.snapshot.namespaces.len()
    }

    /// The snapshot. The nodes added form its inventory (unknown when none
    /// was added, unless `nodes_known`); when remembering, policies no
    /// longer present take their last valid version with them.
    pub fn build(mut self) -> Snapshot {
        if self.nodes_known || !self.nodes.is_empty() {
            self.snapshot.set_nodes(self.nodes);
        }
        let StorageParts {
            volumes,
            claims,
            classes,
        } = self.storage;
        if !(volumes.is_empty() && claims.is_empty() && classes.is_empty()) {
            self.snapshot.set_storage(volumes, claims, classes);
        }
        if let Some(memory) = self.last_valid {
            memory.0.retain(|id, _| self.seen.contains(id));
        }
        self.snapshot.judge_egress_rules();
        self.snapshot
    }
}
