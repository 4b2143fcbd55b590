//! What the engine returns: plain data, serialisable, with bilingual messages
//! (`text`) and structured evidence (`evidence`).

use serde::Serialize;

use super::evidence::{EffectiveEgress, Evidence};
use super::shared::Shared;
use super::text::{Message, Text};
use crate::api::{Action, DataClass, LegalBasis};

/// Stable violation codes: part of the contract (JSON output, reports, metrics).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum Code {
    /// The pod's own constraints do not keep it on mainland-China nodes.
    PlacementNotGuaranteed,
    /// The constraints look mainland, but a node they match today is not.
    NodeOutsideMainland,
    /// `spec.nodeName` binds the pod to a node that is not in mainland China.
    BoundToNodeOutside,
    /// No NetworkPolicy restricts the pod's egress.
    EgressUnrestricted,
    /// An egress rule with no `to` (or an empty peer) allows every destination.
    EgressAllowsAll,
    /// An ipBlock reaches addresses outside mainland China.
    EgressOutsideMainland,
    /// ClusterOnly: an ipBlock reaches addresses outside the cluster.
    EgressExternalForbidden,
    /// An egress rule allows a domain name (Cilium `toFQDNs`, Calico
    /// `domains`, AdminNetworkPolicy `domainNames`) that the policy's
    /// `allowedDomains` does not list: where it resolves is not known.
    EgressNotGuaranteed,
    /// hostNetwork pods bypass NetworkPolicy (and so do hostPID pods with a
    /// privileged container, or one adding SYS_ADMIN: they can join the
    /// node's network namespace).
    HostNetwork,
    /// A volume is bound to a PersistentVolume outside mainland China, or
    /// one whose location cannot be established.
    VolumeOutsideMainland,
    /// A claim not bound yet (or a claim template) whose StorageClass does
    /// not guarantee provisioning in mainland China; or a volume whose store
    /// cannot be located from the cluster (an object store, Azure Files, an
    /// inline CSI driver not known).
    VolumeNotGuaranteed,
    /// An NFS, iSCSI or Ceph server outside mainland-China address space.
    StorageEndpointOutside,
    /// A controller declares a class on its own metadata that its pod
    /// template does not carry, so the objects and pods it creates are not
    /// classified (and never reach the webhook).
    ClassNotOnPodTemplate,
}

impl Code {
    pub fn as_str(self) -> &'static str {
        match self {
            Code::PlacementNotGuaranteed => "PlacementNotGuaranteed",
            Code::NodeOutsideMainland => "NodeOutsideMainland",
            Code::BoundToNodeOutside => "BoundToNodeOutside",
            Code::EgressUnrestricted => "EgressUnrestricted",
            Code::EgressAllowsAll => "EgressAllowsAll",
            Code::EgressOutsideMainland => "EgressOutsideMainland",
            Code::EgressExternalForbidden => "EgressExternalForbidden",
            Code::EgressNotGuaranteed => "EgressNotGuaranteed",
            Code::HostNetwork => "HostNetwork",
            Code::VolumeOutsideMainland => "VolumeOutsideMainland",
            Code::VolumeNotGuaranteed => "VolumeNotGuaranteed",
            Code::StorageEndpointOutside => "StorageEndpointOutside",
            Code::ClassNotOnPodTemplate => "ClassNotOnPodTemplate",
        }
    }

    /// The violation rests on the workload's volumes and the storage
    /// objects they resolve to (so a PV, PVC or StorageClass change can
    /// cause or cure it).
    pub fn is_storage(self) -> bool {
        matches!(
            self,
            Code::VolumeOutsideMainland | Code::VolumeNotGuaranteed | Code::StorageEndpointOutside
        )
    }

    /// The violation rests on the NetworkPolicies that select the pods (so
    /// a NetworkPolicy change can cause or cure it).
    pub fn is_egress(self) -> bool {
        matches!(
            self,
            Code::EgressUnrestricted
                | Code::EgressAllowsAll
                | Code::EgressOutsideMainland
                | Code::EgressExternalForbidden
                | Code::EgressNotGuaranteed
        )
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Violation {
    pub code: Code,
    /// The field at fault, as a path in the submitted manifest.
    pub field: String,
    pub evidence: Evidence,
    pub message: Message,
    /// Covered by an active exemption: reported, but does not count.
    pub exempted: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ExemptionUse {
    pub index: usize,
    pub basis: LegalBasis,
    pub reference: String,
    pub approved_by: String,
    pub expires: String,
    pub active: bool,
}

/// One policy that governs the workload, and how the workload fares under it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyOutcome {
    pub policy: Shared<str>,
    pub action: Action,
    /// The workload's classes this policy governs.
    pub classes: Vec<DataClass>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exemption: Option<ExemptionUse>,
    pub violations: Vec<Violation>,
}

impl PolicyOutcome {
    pub fn violated(&self) -> bool {
        self.violations.iter().any(|v| !v.exempted)
    }
}

/// Where a data class was declared.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClassSource {
    /// `metadata.labels`, `spec.template.metadata.labels` or `Namespace <name>`
    /// (for an inherited class: where on `owner`).
    pub location: String,
    pub value: String,
    /// Set when the class is inherited from the controller owner chain:
    /// the owner it is declared on, `Deployment payments/api`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inherited_from: Option<String>,
}

/// Something worth saying that is not a violation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Notice {
    pub code: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    pub message: Text,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadRef {
    pub kind: String,
    pub namespace: String,
    pub name: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Verdict {
    pub workload: WorkloadRef,
    pub classes: Vec<DataClass>,
    pub class_sources: Vec<ClassSource>,
    /// Every governing policy, violated or not.
    pub policies: Vec<PolicyOutcome>,
    /// The strictest action among violated policies; None when compliant.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action: Option<Action>,
    pub notices: Vec<Notice>,
    /// The pod's effective egress, when any governing policy checks egress.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub egress: Option<EffectiveEgress>,
}

impl Verdict {
    pub fn compliant(&self) -> bool {
        self.action.is_none()
    }

    pub fn denied(&self) -> bool {
        self.action == Some(Action::Deny)
    }

    /// Violations that count, with their policy.
    pub fn violations(&self) -> impl Iterator<Item = (&PolicyOutcome, &Violation)> {
        self.policies.iter().flat_map(|p| {
            p.violations
                .iter()
                .filter(|v| !v.exempted)
                .map(move |v| (p, v))
        })
    }

    /// Every counting violation's message for the policies with `action`.
    pub fn messages_for(&self, action: Action) -> impl Iterator<Item = &Message> {
        self.violations()
            .filter(move |(p, _)| p.action == action)
            .map(|(_, v)| &v.message)
    }
}
