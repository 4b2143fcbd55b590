//! The one pure decision: `evaluate(&Snapshot, &Workload, now) -> Verdict`.
//!
//! No I/O, no clock (time is an argument), no kube client, no tokio: CI
//! greps this directory to keep it that way. The webhook, the audit
//! controller and the CLI only translate to and from these types.

pub mod catalogue;
mod classify;
pub mod declassify;
pub mod egress;
pub mod inventory;
pub mod ipset;
pub mod network_change;
pub mod nodes;
pub mod placement;
pub mod policy;
pub mod selector;
pub mod shared;
pub mod verdict;
pub mod workload;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use jiff::Timestamp;

pub use catalogue::Catalogue;
pub use classify::ClassificationError;
pub use egress::AddressSpace;
pub use network_change::{NetworkPolicyChange, ViolationKey, judge_network_policy_change};
pub use nodes::{NodeInfo, NodeStanding};
pub use policy::{CompiledPolicy, Enforcement, PolicyProblem, RejectedPolicy};
pub use verdict::{Code, Lang, Text, Verdict};
pub use workload::{Workload, WorkloadError, WorkloadKind, WorkloadObject};

use crate::api::ResidencyPolicy;

pub use inventory::{ClassifiedNode, FixRegions, Inventory};

/// Everything the decision depends on besides the workload and the time.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub catalogue: Catalogue,
    pub policies: Vec<CompiledPolicy>,
    /// Policies that do not compile, with their problems and what is
    /// enforced in their place (that version is in `policies`).
    pub rejected: Vec<RejectedPolicy>,
    pub namespaces: BTreeMap<String, BTreeMap<String, String>>,
    pub network: egress::NetworkIndex,
    /// Shared, not copied, when a snapshot is cloned (the webhook clones
    /// one to judge a NetworkPolicy change).
    pub address_space: Arc<AddressSpace>,
    /// The node inventory; `None` when unknown (the CLI given only
    /// manifests), in which case the guarantee alone decides placement.
    inventory: Option<Arc<Inventory>>,
}

impl Snapshot {
    pub fn new(catalogue: Catalogue, address_space: impl Into<Arc<AddressSpace>>) -> Self {
        Snapshot {
            catalogue,
            address_space: address_space.into(),
            ..Snapshot::default()
        }
    }

    /// Replace the node inventory, classifying and indexing each node once.
    pub fn set_nodes(&mut self, nodes: impl IntoIterator<Item = NodeInfo>) {
        self.inventory = Some(Arc::new(Inventory::new(nodes, &self.catalogue)));
    }

    /// The node inventory, when known.
    pub fn inventory(&self) -> Option<&Inventory> {
        self.inventory.as_deref()
    }

    /// The nodes, when the inventory is known.
    pub fn nodes(&self) -> Option<&[ClassifiedNode]> {
        self.inventory().map(Inventory::nodes)
    }

    /// The node of that name in the inventory.
    pub fn node(&self, name: &str) -> Option<&ClassifiedNode> {
        self.inventory()?.node(name)
    }

    /// The mainland regions in the inventory that placement fixes name,
    /// and those withheld because a node labelled with them is unverified
    /// (`Inventory::fix_regions`). Messages change when this does.
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
        self.policies.push(compiled);
        Ok(warnings)
    }

    /// Add a policy for enforcement whatever its state: compiled when it
    /// compiles (returned, so the caller can keep it as the last valid
    /// version), else `last_valid` (same name and uid) or its strictest
    /// reading, recorded in `rejected`.
    pub fn enforce_policy(
        &mut self,
        policy: &ResidencyPolicy,
        now: Timestamp,
        last_valid: Option<&CompiledPolicy>,
    ) -> Option<CompiledPolicy> {
        match policy::compile(policy, &self.catalogue, now) {
            Ok((compiled, _)) => {
                self.policies.push(compiled.clone());
                Some(compiled)
            }
            Err(problems) => {
                let (enforced, how) = match last_valid {
                    Some(p) => (
                        p.clone(),
                        Enforcement::LastValid {
                            generation: p.generation,
                        },
                    ),
                    None => (policy::strictest_reading(policy), Enforcement::Strictest),
                };
                self.policies.push(enforced);
                self.rejected.push(RejectedPolicy {
                    name: policy.metadata.name.clone().unwrap_or_default(),
                    uid: policy.metadata.uid.clone(),
                    generation: policy.metadata.generation,
                    problems,
                    enforced: how,
                });
                None
            }
        }
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
}

impl Snapshot {
    /// A snapshot for judging workloads of `namespace` only, with `facts`
    /// in place of what this snapshot knows about it. Policies, nodes and
    /// address data are shared or copied; other namespaces are left out
    /// (judging a workload reads only its own namespace).
    pub fn focused_on(&self, namespace: &str, facts: &NamespaceFacts) -> Snapshot {
        let mut namespaces = BTreeMap::new();
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
        Snapshot {
            catalogue: self.catalogue.clone(),
            policies: self.policies.clone(),
            rejected: self.rejected.clone(),
            namespaces,
            network,
            address_space: Arc::clone(&self.address_space),
            inventory: self.inventory.clone(),
        }
    }
}

/// Judge one workload. Errors only when the workload's classification label
/// cannot be understood (the user must fix it before it can be judged).
pub fn evaluate(
    snapshot: &Snapshot,
    workload: &Workload,
    now: Timestamp,
) -> Result<Verdict, ClassificationError> {
    classify::evaluate(snapshot, workload, now, Detail::Full)
}

/// How much of a verdict to write out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Detail {
    /// Everything, violation messages included.
    Full,
    /// The decision only: every violation's code, field, evidence and
    /// exemption as with `Full`, but its `message` left empty. Writing the
    /// messages is most of the cost of a verdict with violations; the audit
    /// controller re-judges with this and writes messages only for the
    /// findings it reports (which `Full` then gives exactly).
    Decision,
}

/// `evaluate`, with the detail chosen by the caller.
pub fn evaluate_with(
    snapshot: &Snapshot,
    workload: &Workload,
    now: Timestamp,
    detail: Detail,
) -> Result<Verdict, ClassificationError> {
    classify::evaluate(snapshot, workload, now, detail)
}
