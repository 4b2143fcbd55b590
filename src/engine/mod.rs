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
mod snapshot;
pub mod verdict;
pub mod workload;

use jiff::Timestamp;

pub use catalogue::Catalogue;
pub use classify::ClassificationError;
pub(crate) use classify::join_en;
pub use egress::AddressSpace;
pub use network_change::{NetworkPolicyChange, ViolationKey, judge_network_policy_change};
pub use nodes::{NodeInfo, NodeStanding};
pub use policy::{CompiledPolicy, Enforcement, PolicyProblem, RejectedPolicy};
pub use verdict::{Code, Lang, Text, Verdict};
pub use workload::{Workload, WorkloadError, WorkloadKind, WorkloadObject};

pub use inventory::{ClassifiedNode, FixRegions, Inventory};
pub use snapshot::{LastValid, NamespaceFacts, Snapshot, SnapshotBuilder};

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
