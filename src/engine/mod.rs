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

use std::collections::BTreeMap;

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
        let classified = nodes
            .into_iter()
            .map(|info| ClassifiedNode {
                standing: nodes::classify(&info, &self.catalogue),
                info,
            })
            .collect();
        self.nodes = Some(classified);
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
