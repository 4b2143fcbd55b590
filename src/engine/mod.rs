//! The one pure decision: `evaluate(&Snapshot, &Workload, now) -> Verdict`.
//!
//! No I/O, no clock (time is an argument), no kube client, no tokio: CI
//! greps this directory to keep it that way. The webhook, the audit
//! controller and the CLI only translate to and from these types.

pub mod catalogue;
mod classify;
pub mod egress;
pub mod ipset;
pub mod nodes;
pub mod placement;
pub mod policy;
pub mod selector;
pub mod verdict;
pub mod workload;

use std::collections::{BTreeMap, BTreeSet, HashMap};

use jiff::Timestamp;

pub use catalogue::Catalogue;
pub use classify::ClassificationError;
pub use egress::AddressSpace;
pub use nodes::{NodeInfo, NodeStanding};
pub use policy::{CompiledPolicy, PolicyProblem};
pub use verdict::{Code, Lang, Text, Verdict};
pub use workload::{Workload, WorkloadError, WorkloadKind};

use crate::api::ResidencyPolicy;

/// A node with its policy-independent standing, computed once per snapshot.
#[derive(Clone, Debug)]
pub struct ClassifiedNode {
    pub info: NodeInfo,
    pub standing: NodeStanding,
}

/// Everything the decision depends on besides the workload and the time.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub catalogue: Catalogue,
    pub policies: Vec<CompiledPolicy>,
    /// The node inventory; `None` when unknown (the CLI given only
    /// manifests), in which case the guarantee alone decides placement.
    pub nodes: Option<Vec<ClassifiedNode>>,
    /// Namespace name → labels. A namespace missing here is unknown.
    pub namespaces: BTreeMap<String, BTreeMap<String, String>>,
    pub network: egress::NetworkIndex,
    pub address_space: AddressSpace,
    /// Derived from `nodes` by `set_nodes`, so each evaluation does not
    /// rebuild them.
    node_index: NodeIndex,
}

/// Lookups over the inventory that every evaluation needs.
#[derive(Clone, Debug, Default)]
struct NodeIndex {
    by_name: HashMap<String, usize>,
    /// Mainland regions present in the inventory (for fix messages).
    mainland_regions: BTreeSet<String>,
}

impl Snapshot {
    pub fn new(catalogue: Catalogue, address_space: AddressSpace) -> Self {
        Snapshot {
            catalogue,
            address_space,
            ..Snapshot::default()
        }
    }

    /// Replace the node inventory, classifying each node once.
    pub fn set_nodes(&mut self, nodes: impl IntoIterator<Item = NodeInfo>) {
        let classified: Vec<ClassifiedNode> = nodes
            .into_iter()
            .map(|info| ClassifiedNode {
                standing: nodes::classify(&info, &self.catalogue),
                info,
            })
            .collect();
        self.node_index = NodeIndex {
            by_name: classified
                .iter()
                .enumerate()
                .map(|(i, n)| (n.info.name.clone(), i))
                .collect(),
            mainland_regions: classified
                .iter()
                .filter_map(|n| match &n.standing {
                    NodeStanding::Mainland { region } => Some(region.clone()),
                    _ => None,
                })
                .collect(),
        };
        self.nodes = Some(classified);
    }

    /// The node of that name in the inventory.
    pub fn node(&self, name: &str) -> Option<&ClassifiedNode> {
        let nodes = self.nodes.as_ref()?;
        match self.node_index.by_name.get(name) {
            Some(&i) => nodes.get(i).filter(|n| n.info.name == name),
            // `nodes` was assigned directly rather than through set_nodes.
            None if self.node_index.by_name.is_empty() => {
                nodes.iter().find(|n| n.info.name == name)
            }
            None => None,
        }
    }

    /// Mainland regions present in the inventory.
    pub fn inventory_mainland_regions(&self) -> &BTreeSet<String> {
        &self.node_index.mainland_regions
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
}

/// Judge one workload. Errors only when the workload's classification label
/// cannot be understood (the user must fix it before it can be judged).
pub fn evaluate(
    snapshot: &Snapshot,
    workload: &Workload,
    now: Timestamp,
) -> Result<Verdict, ClassificationError> {
    classify::evaluate(snapshot, workload, now)
}
