//! The one pure decision: `evaluate(&Snapshot, &Workload, now) -> Verdict`.
//!
//! No I/O, no clock (time is an argument), no kube client, no tokio: CI
//! greps this directory to keep it that way. The webhook, the audit
//! controller and the CLI only translate to and from these types. Its
//! interface is what this module re-exports (and `declassify`); the
//! submodules are private.
//!
//! The rooms, from the bottom up:
//!
//! - `text`: languages, bilingual texts, a violation's message.
//! - `catalogue`, `nodes`: jurisdictions, and where a node is.
//! - `selector`: node and label selectors with Kubernetes semantics.
//! - `ipset`, `network`: address sets; NetworkPolicies compiled, indexed.
//! - `calico_selector`, `layers`, `projection`: the other egress policy
//!   layers (Cilium, Calico, AdminNetworkPolicy) projected into one model
//!   and combined in each CNI's order.
//! - `policy`: ResidencyPolicies compiled (and what is wrong with them).
//! - `node_inventory`: the nodes classified once and indexed.
//! - `volumes`: PVs, PVCs and StorageClasses projected; where a volume is.
//! - `snapshot`: everything a decision reads, and its one builder.
//! - `workload`: every pod-creating kind reduced to what is judged.
//! - `evidence`, `verdict`: what a decision returns.
//! - `messages`: what violation messages are written from.
//! - `placement`, `egress`, `storage`: the three checks.
//! - `evaluate`: governing policies, exemptions, the verdict.
//! - `network_change`, `declassify`, `workload_change`: the decisions
//!   about changes (what a NetworkPolicy change opens, what takes classes
//!   away, what a workload UPDATE can do).

mod calico_selector;
mod catalogue;
pub mod declassify;
mod egress;
mod evaluate;
mod evidence;
mod ipset;
mod layers;
mod lineage;
mod messages;
mod network;
mod network_change;
mod node_inventory;
mod nodes;
mod placement;
mod policy;
mod projection;
mod selector;
mod shared;
mod snapshot;
mod storage;
mod text;
mod verdict;
mod volumes;
mod workload;
mod workload_change;

pub use calico_selector::CalicoSelector;
pub use catalogue::{
    Catalogue, CatalogueError, Jurisdiction, ProviderEntry, RegionEnding, RegionEntry,
    RegionLookup, ZoneEntry, ZoneForm, ZoneRule,
};
pub use evaluate::{
    ClassificationError, Detail, evaluate, evaluate_keeping_storage_evidence, evaluate_with,
};
pub use evidence::{
    EffectiveEgress, EgressEvidence, EndpointEvidence, Evidence, ExternalBlock, NodeEvidence,
    PeerRef, PinnedNode, RuleRef, STORAGE_REASONS, StorageEvidence, StoragePosture, VolumeEvidence,
    VolumeFinding,
};
pub use ipset::{CountryTable, IpSet, ListParseError, net_minus_excepts_subset};
pub use layers::{
    CalicoTier, CiliumEnforcement, Cni, DomainGrant, EgressSemantics, LayerDecision, LayerKind,
    LayerPolicy, LayerRule, Layers, NetworkSet, PodView, RangesOrUnknown, Reach, RuleAction,
    SetDestination, Subject, Unknown, calico_reach, cilium_reach, kubernetes_reach,
};
pub use lineage::{ClaimClass, claims_mounted, classes_of_claim, classes_through_claims};
pub use network::{
    AddressSpace, BUNDLED_MAINLAND_CIDRS, CidrError, CompiledNetworkPolicy, NetworkIndex,
    layer_kind, parse_cidr_args, validate_network_policy,
};
pub use network_change::{
    NetworkPolicyChange, OpenedEgress, ViolationKey, judge_layer_change, judge_namespace_relabel,
    judge_namespace_relabel_through_sets, judge_network_policy_change,
};
pub use node_inventory::{ClassifiedNode, FixRegions, NodeInventory};
pub use nodes::{LEGACY_REGION_LABEL, NodeInfo, NodeStanding, REGION_LABEL, Untrusted};
pub(crate) use nodes::{describe_untrusted, parse_provider_id};
pub use placement::NodeConstraints;
pub use policy::{
    CompiledExemption, CompiledPolicy, Enforcement, PolicyProblem, RejectedPolicy,
    compile as compile_policy,
};
pub use projection::{
    admin_policy, calico_network_set, calico_policy, calico_tier, cilium_policies,
};
pub use selector::NodeLabels;
pub use shared::Shared;
pub use snapshot::{LastValid, LiveStorage, NamespaceFacts, Snapshot, SnapshotBuilder};
pub use storage::storage_evidence;
pub(crate) use text::join_en;
pub use text::{Lang, Langs, Message, Text, UnknownLang};
pub use verdict::{
    ClassSource, Code, ExemptionUse, Notice, PolicyOutcome, Verdict, Violation, WorkloadRef,
};
pub use volumes::{
    BindingMode, ClaimRecord, ClassGuarantee, ClassRecord, DEFAULT_CLASS_ANNOTATION,
    EndpointStanding, HOSTNAME_KEY, JudgedClass, LocatedVolume, REGION_KEYS, StorageIndex,
    TopologyOp, TopologyRequirement, UnknownLocation, VolumeLocation, VolumeRecord, ZONE_KEYS,
    endpoint_host, locate as locate_volume,
};
pub use workload::{
    AffinityView, AzureFileView, ClaimSourceView, ClaimSpecView, ClaimTemplateMeta,
    ClaimTemplateView, CsiView, EphemeralView, FirstPrivileged, InheritedClass, IscsiView, Labels,
    MonitorsView, NfsView, OwnerRef, PodSpecView, PrivilegedContainer, VolumeView, Workload,
    WorkloadError, WorkloadKind, WorkloadObject,
};
pub use workload_change::only_removes_or_narrows;
