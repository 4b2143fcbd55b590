//! Structured evidence, for reports and JSON output: the nodes and
//! NetworkPolicy rules a violation rests on, and a pod's effective egress.

use std::sync::Arc;

use ipnet::IpNet;
use serde::Serialize;

use super::ipset::IpSet;
use super::layers::{Cni, DomainGrant, LayerDecision};
use super::nodes::{NodeStanding, describe_node};
use super::shared::Shared;
use super::text::Lang;
use super::verdict::Code;
use super::volumes::{BindingMode, ClassGuarantee, VolumeLocation};
use crate::api::DataClass;

/// A node named as evidence.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeEvidence {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    pub standing: NodeStanding,
}

impl NodeEvidence {
    pub fn describe(&self, lang: Lang) -> String {
        describe_node(&self.name, self.region.as_deref(), &self.standing, lang)
    }
}

/// A node a pod is pinned to by name, as evidence: the DaemonSet
/// controller pins each of its pods this way.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PinnedNode {
    pub name: String,
    /// The node and its standing; `None` when the node inventory does not
    /// have it (or there is no inventory).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<Shared<NodeEvidence>>,
}

/// Structured evidence, for reports and JSON output.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum Evidence {
    #[serde(rename_all = "camelCase")]
    Placement {
        /// Index of the failing nodeSelectorTerm (None: nodeSelector only).
        #[serde(skip_serializing_if = "Option::is_none")]
        term: Option<usize>,
        /// Region values the constraint allows that are not mainland.
        #[serde(skip_serializing_if = "Vec::is_empty")]
        non_mainland_regions: Vec<String>,
        /// Matching nodes known today (None: no inventory).
        #[serde(skip_serializing_if = "Option::is_none")]
        matching_nodes: Option<usize>,
        outside_nodes: Vec<Shared<NodeEvidence>>,
        /// Outside nodes beyond those listed.
        #[serde(skip_serializing_if = "is_zero")]
        more_outside: usize,
        /// The node the failing term pins by name (`matchFields`
        /// `metadata.name In`, or `spec.nodeName`) that is no guarantee:
        /// unknown, or not acceptable to the policy.
        #[serde(skip_serializing_if = "Option::is_none")]
        pinned_node: Option<PinnedNode>,
    },
    #[serde(rename_all = "camelCase")]
    BoundNode { node: Shared<NodeEvidence> },
    #[serde(rename_all = "camelCase")]
    Egress(EgressEvidence),
    #[serde(rename_all = "camelCase")]
    Storage(StorageEvidence),
    /// Classes declared on a controller's metadata but not on its pod
    /// template (nor its Namespace).
    #[serde(rename_all = "camelCase")]
    Classification { not_on_pod_template: Vec<DataClass> },
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// The pod's effective egress, as evidence for auditors.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EffectiveEgress {
    pub host_network: bool,
    /// Some NetworkPolicy with Egress in its policyTypes selects the pod.
    pub isolated: bool,
    pub selecting_policies: Vec<Shared<str>>,
    /// Rules that reach every destination.
    pub allow_all_rules: Vec<RuleRef>,
    pub in_cluster_peers: Vec<PeerRef>,
    pub external_blocks: Vec<ExternalBlock>,
    /// The enforcement semantics, when layers besides NetworkPolicy were
    /// read (absent: NetworkPolicy alone).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cni: Option<Cni>,
    /// Domain names a rule allows: where they resolve is not known.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub domains: Vec<DomainGrant>,
    /// Which layer allowed and which closed what, in evaluation order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub layers: Vec<LayerDecision>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RuleRef {
    pub network_policy: Shared<str>,
    /// Index into `spec.egress` (messages count rules from 1).
    pub rule: usize,
    /// Why it reaches everything (English; messages carry both languages).
    pub reason: Shared<str>,
    #[serde(skip)]
    pub(super) reason_zh: Shared<str>,
    /// A peer the API server would refuse, rather than a missing `to`.
    #[serde(skip)]
    pub(super) malformed: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PeerRef {
    pub network_policy: Shared<str>,
    pub rule: usize,
    pub peer: usize,
    pub selector: Shared<str>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ExternalBlock {
    pub network_policy: Shared<str>,
    /// Index into `spec.egress` (messages count rules from 1).
    pub rule: usize,
    pub peer: usize,
    pub cidr: Shared<str>,
    #[serde(skip_serializing_if = "no_excepts")]
    pub except: Shared<[String]>,
    /// Entirely inside mainland-China space or the cluster's own networks.
    pub mainland: bool,
    /// Entirely inside the cluster's own networks.
    pub in_cluster: bool,
    /// Governing MainlandOnly policies whose `spec.egress.allowedCIDRs`
    /// cover the part of the block outside mainland China: allowed by
    /// them although `mainland` is false.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub allowed_by: Vec<Shared<str>>,
    /// An address it reaches outside mainland China, and its country.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub example_outside: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub country: Option<String>,
    #[serde(skip)]
    pub(super) net: Option<(IpNet, Arc<[IpNet]>)>,
    /// The addresses, when the block comes from the layer model (`net` is
    /// then None).
    #[serde(skip)]
    pub(super) reach: Option<Arc<IpSet>>,
    /// Where the rule is ("spec.egress[0].toCIDRSet"), in the layer model.
    #[serde(skip)]
    pub(super) field: Option<Shared<str>>,
    /// Addresses no policy decided, which the CNI's default allows.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub default_allow: bool,
}

fn no_excepts(except: &Shared<[String]>) -> bool {
    except.is_empty()
}

/// Structured evidence of one egress violation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EgressEvidence {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network_policy: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cidr: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub example_outside: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub country: Option<String>,
}

/// Structured evidence of one storage violation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StorageEvidence {
    /// The pod volume or claim template at fault.
    pub volume: String,
    /// Why, in one word: `boundOutside`, `volumeUnknown`, `claimNotFound`,
    /// `noDefaultClass`, `preProvisioned`, `classUnknown`,
    /// `provisionedAnywhere`, `topologyOutside`, `endpointOutside`,
    /// `objectStore`, `csiNoServer`, `csiDriverUnknown`.
    pub reason: &'static str,
    /// `namespace/name` of the claim.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub claim: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub persistent_volume: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub storage_class: Option<String>,
    /// Where the PV (or what the class's allowedTopologies allow) is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub location: Option<VolumeLocation>,
    /// The remote server, as written, and its field.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// The CSI driver (or `azureFile`) of a store that cannot be located.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub driver: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub country: Option<String>,
    /// Further claims of the same template with the same fault.
    #[serde(skip_serializing_if = "is_zero")]
    pub more_claims: usize,
}

/// Every `StorageEvidence::reason` the storage check gives, for tables
/// that must cover them all (the report's posture, its tests).
pub const STORAGE_REASONS: [&str; 12] = [
    "boundOutside",
    "volumeUnknown",
    "claimNotFound",
    "noDefaultClass",
    "preProvisioned",
    "classUnknown",
    "provisionedAnywhere",
    "topologyOutside",
    "endpointOutside",
    "objectStore",
    "csiNoServer",
    "csiDriverUnknown",
];

/// Where a workload's data at rest is, as far as its volumes tell, from
/// least to most serious (`Ord` follows): a workload's (and a data
/// class's) posture is the most serious of its volumes'.
///
/// - `outside`: data is stored outside mainland China now (a bound
///   PersistentVolume whose topology is abroad, a server at an address
///   abroad);
/// - `unknown`: data is (or may already be) stored somewhere that cannot
///   be established (a PersistentVolume of unknown topology or not known,
///   a claim not known, an object store, a CSI driver not known, a server
///   named by host name) — it may be abroad already, so it ranks above
///   `notGuaranteed`;
/// - `notGuaranteed`: nothing is stored yet, but the claim will be
///   provisioned by a StorageClass (or a default, or a pre-provisioned
///   volume) that does not keep it in mainland China;
/// - `mainland`: every volume is established in mainland China, or
///   follows the pod's placement (WaitForFirstConsumer);
/// - `none`: no volume stores data off the node.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum StoragePosture {
    #[default]
    None,
    Mainland,
    NotGuaranteed,
    Unknown,
    Outside,
}

impl StoragePosture {
    pub const ALL: [StoragePosture; 5] = [
        StoragePosture::Outside,
        StoragePosture::Unknown,
        StoragePosture::NotGuaranteed,
        StoragePosture::Mainland,
        StoragePosture::None,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            StoragePosture::None => "none",
            StoragePosture::Mainland => "mainland",
            StoragePosture::NotGuaranteed => "notGuaranteed",
            StoragePosture::Unknown => "unknown",
            StoragePosture::Outside => "outside",
        }
    }

    /// The posture a storage finding's reason establishes (see
    /// `STORAGE_REASONS`); an unknown reason counts as `unknown`.
    pub fn of_reason(reason: &str) -> StoragePosture {
        match reason {
            "boundOutside" | "endpointOutside" => StoragePosture::Outside,
            "noDefaultClass"
            | "preProvisioned"
            | "classUnknown"
            | "provisionedAnywhere"
            | "topologyOutside" => StoragePosture::NotGuaranteed,
            _ => StoragePosture::Unknown,
        }
    }
}

/// One volume of a workload that keeps data off its node, as the storage
/// check resolved and judged it: for reports. A StatefulSet's claim
/// template gives one per claim it has made and one for the claims it
/// will make.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VolumeEvidence {
    /// The pod volume, or the StatefulSet's claim template.
    pub volume: String,
    /// The field it is judged from.
    pub field: String,
    /// `claim` (a PersistentVolumeClaim: named by the pod, or made by a
    /// StatefulSet's template), `claimTemplate` (the claims a StatefulSet
    /// or an ephemeral volume will make) or `inline` (a server or store
    /// named in the pod spec).
    pub source: &'static str,
    /// `namespace/name` of the claim.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub claim: Option<String>,
    /// The PersistentVolume the claim is bound (or pre-bound) to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub persistent_volume: Option<String>,
    /// The StorageClass that provisions (or provisioned) it; `""` asks for
    /// a pre-provisioned volume without a class.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub storage_class: Option<String>,
    /// The class is the cluster's default: the claim names none.
    pub default_class: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub binding_mode: Option<BindingMode>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provisioner: Option<String>,
    /// What the StorageClass guarantees about where it provisions.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub class_guarantee: Option<ClassGuarantee>,
    /// The location keys it is placed by, as written: the PV's region and
    /// zone labels and node-affinity terms, or the class's
    /// allowedTopologies (`topology.kubernetes.io/zone In [cn-north-1a]`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub topology: Vec<String>,
    /// Where the PersistentVolume is (or what the class's
    /// allowedTopologies allow), reasoned from `topology`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub location: Option<VolumeLocation>,
    /// Remote servers holding its data.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub endpoints: Vec<EndpointEvidence>,
    /// The CSI driver (or `azureFile`) of an inline volume or a PV.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub driver: Option<String>,
    /// What a store that cannot be located is (`Amazon S3 (Mountpoint)`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub store: Option<String>,
    pub posture: StoragePosture,
    /// The storage findings on it, whichever policy objects.
    pub findings: Vec<VolumeFinding>,
}

/// A remote server a volume's data is on, and where its address is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EndpointEvidence {
    /// The field naming it: `nfs.server`, `csi.volumeAttributes.server`.
    pub field: String,
    /// As written.
    pub server: String,
    /// `mainland` (mainland-China address space), `cluster` (the
    /// cluster's own networks), `outside`, or `hostName` (cannot be
    /// resolved offline).
    pub standing: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// `CN` for a mainland address; for one outside, its country where
    /// the data has it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub country: Option<String>,
}

/// One storage finding on a volume.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VolumeFinding {
    pub code: Code,
    /// The finding's `StorageEvidence::reason`.
    pub reason: &'static str,
    pub field: String,
}
