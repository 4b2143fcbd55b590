//! `ResidencyPolicy` (residencyguard.io/v1alpha1), cluster-scoped.
//!
//! Everything the API server can enforce is in the schema (enums, required
//! fields, formats, CEL rules); what it cannot (e.g. "this region is unknown")
//! is checked by `engine::policy::compile` and reported by the webhook.

use k8s_openapi::api::core::v1::NodeSelector;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::DataClass;

/// Which data classes must stay where, what egress is allowed, and what to do
/// about a workload that breaks the rules.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "residencyguard.io",
    version = "v1alpha1",
    kind = "ResidencyPolicy",
    plural = "residencypolicies",
    shortname = "rp",
    status = "ResidencyPolicyStatus",
    derive = "PartialEq",
    category = "residencyguard",
    // JSON form: clippy's duplicated_attributes lint misfires on the
    // structured form when several columns share a `type_`.
    printcolumn = r#"{"name":"Action", "type":"string", "jsonPath":".spec.action"}"#,
    printcolumn = r#"{"name":"Classes", "type":"string", "jsonPath":".spec.dataClasses"}"#,
    printcolumn = r#"{"name":"Violations", "type":"integer", "jsonPath":".status.violations"}"#,
    printcolumn = r#"{"name":"Age", "type":"date", "jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ResidencyPolicySpec {
    /// The data classes this policy governs. A workload is governed when it
    /// carries at least one of them (label `residencyguard.io/data-class`).
    #[schemars(length(min = 1, max = 9), extend("x-kubernetes-list-type" = "set"))]
    pub data_classes: Vec<DataClass>,

    /// Limit the policy to namespaces whose labels match. Omitted: all namespaces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<LabelSelector>,

    /// Where the pods of governed workloads may run. Omitted: mainland China.
    #[serde(default)]
    pub placement: Placement,

    /// What governed pods may reach over the network. Omitted: not checked.
    #[serde(default)]
    pub egress: Egress,

    /// Where governed workloads' data at rest may be stored. Omitted:
    /// checked (MainlandOnly), since residency law is first about storage.
    #[serde(default)]
    pub storage: Storage,

    /// What to do about a violation: Deny (reject at admission), Warn (admit
    /// with a warning) or Audit (admit silently; reported by the audit).
    #[serde(default)]
    pub action: Action,

    /// Approved cross-border transfers: workloads that may break this policy
    /// until the exemption expires.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 128))]
    pub exemptions: Vec<Exemption>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Placement {
    /// The jurisdiction every node a governed pod can run on must be in.
    #[serde(default)]
    pub jurisdiction: Jurisdiction,

    /// Extra node terms that count as inside the jurisdiction (for private
    /// data centres or pools without cloud region labels). A node matching
    /// them still fails if its region label or providerID says it is abroad.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_nodes: Option<NodeSelector>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum Jurisdiction {
    /// Mainland China: excludes Hong Kong, Macau and Taiwan.
    #[default]
    #[serde(rename = "mainland-china")]
    MainlandChina,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Egress {
    /// Unrestricted (not checked), MainlandOnly (every external destination
    /// inside mainland-China address space) or ClusterOnly (no external
    /// destination at all).
    #[serde(default)]
    pub mode: EgressMode,

    /// Extra destinations that count as allowed, e.g. a partner inside China
    /// that geolocation data misplaces. CIDRs or single addresses.
    #[serde(
        default,
        rename = "allowedCIDRs",
        skip_serializing_if = "Vec::is_empty"
    )]
    // Bounded so the API server can estimate the CEL rule's cost: without
    // maxItems and maxLength the estimate assumes a 3 MiB list and the CRD is
    // rejected ("estimated rule cost exceeds budget"). The longest IPv6
    // CIDR in text form is 49 characters.
    #[schemars(length(max = 256), inner(length(max = 64)))]
    #[x_kube(validation = Rule::new("self.all(c, isCIDR(c) || isIP(c))").message("every entry of allowedCIDRs must be a CIDR such as 203.0.113.0/24 or an IP address"))]
    pub allowed_cidrs: Vec<String>,

    /// Domain names egress rules may allow (Cilium `toFQDNs`, Calico
    /// `domains`, AdminNetworkPolicy `domainNames`) that are known to be
    /// served from mainland China. Names are not addresses: where a name
    /// resolves cannot be checked, so under MainlandOnly a rule allowing a
    /// name not listed here is `EgressNotGuaranteed`. Suffix match:
    /// `example.cn` covers `example.cn`, `api.example.cn` and
    /// `*.example.cn`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256))]
    pub allowed_domains: Vec<AllowedDomain>,
}

/// A domain approved as served from mainland China, and on what basis.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct AllowedDomain {
    /// The domain (suffix match), e.g. `example.cn`.
    #[schemars(length(min = 1, max = 253))]
    pub domain: String,
    /// Where the approval comes from: an ICP filing, a contract, a ticket.
    #[schemars(length(min = 1, max = 512))]
    pub source: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Storage {
    /// MainlandOnly (every volume that stores data off the node, bound or
    /// yet to be provisioned, is in mainland China) or Unchecked.
    #[serde(default)]
    pub mode: StorageMode,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum StorageMode {
    /// The default: a policy that keeps pods in mainland China keeps their
    /// volumes there too.
    #[default]
    MainlandOnly,
    /// Volumes are not judged (for example while storage objects are being
    /// labelled with their topology).
    Unchecked,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum EgressMode {
    #[default]
    Unrestricted,
    MainlandOnly,
    ClusterOnly,
}

/// Deny > Warn > Audit: when several violated policies govern one workload,
/// the strictest action wins. The derived order is that strictness.
#[derive(
    Serialize,
    Deserialize,
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    JsonSchema,
)]
pub enum Action {
    Audit,
    Warn,
    #[default]
    Deny,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Audit => "Audit",
            Action::Warn => "Warn",
            Action::Deny => "Deny",
        }
    }
}

/// An approved cross-border transfer. Not a blanket skip: it must select
/// specific workloads, name its legal basis, a reference and an approver, and
/// it lapses after `expires`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.namespaces) && size(self.namespaces) > 0").message("an exemption must name the namespaces it covers (spec.exemptions[].namespaces): its selector's labels can be copied by any workload, so the namespaces are what bind it"))]
#[x_kube(validation = Rule::new("(has(self.selector.matchLabels) && size(self.selector.matchLabels) > 0) || (has(self.selector.matchExpressions) && size(self.selector.matchExpressions) > 0)").message("an exemption must select specific workloads: an empty selector would exempt everything"))]
pub struct Exemption {
    /// Workloads covered: matched against the workload's labels and its pod
    /// template's labels (either may match).
    pub selector: LabelSelector,

    /// The namespaces the exemption covers (required). Within them, a
    /// workload matching `selector` is exempted. The selector's labels are
    /// set by the workloads' authors, so the namespaces are what binds an
    /// exemption to the teams it was approved for: whoever may create
    /// workloads there can match it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    // Required by a CEL rule on the exemption (above), not by the schema's
    // `required`: a policy stored before the rule must still be readable
    // (its unbound exemption then applies nowhere; engine::policy says so).
    #[schemars(length(max = 256), inner(length(min = 1, max = 63)))]
    pub namespaces: Vec<String>,

    /// The legal basis of the transfer under PIPL art. 38.
    pub basis: LegalBasis,

    /// The filing or approval reference, e.g. "CAC filing 2026-0042".
    #[schemars(length(min = 1, max = 256))]
    pub reference: String,

    /// Who approved it (the DPO or an accountable person).
    #[schemars(length(min = 1, max = 256))]
    pub approved_by: String,

    /// Last day the exemption applies (YYYY-MM-DD). It lapses at the end of
    /// that day in China Standard Time (UTC+08:00).
    // The API server checks the format itself (`format: date` rejects
    // "2026-02-30" as well as "30/06/2027"). No CEL rule: CEL sees a
    // `format: date` string as a timestamp, so `matches` does not compile.
    #[schemars(extend("format" = "date"), length(max = 10))]
    pub expires: String,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum LegalBasis {
    /// CAC security assessment (数据出境安全评估).
    SecurityAssessment,
    /// Standard contract for outbound transfer of personal information (个人信息出境标准合同).
    StandardContract,
    /// Personal information protection certification (个人信息保护认证).
    Certification,
}

impl LegalBasis {
    pub fn as_str(self) -> &'static str {
        match self {
            LegalBasis::SecurityAssessment => "SecurityAssessment",
            LegalBasis::StandardContract => "StandardContract",
            LegalBasis::Certification => "Certification",
        }
    }
}

/// Written by the audit controller.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResidencyPolicyStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Workloads and pods currently out of policy (exempted ones excluded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub violations: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_evaluated: Option<Time>,
    /// A bounded list of the worst offenders, for `kubectl describe`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub top_offenders: Vec<Offender>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Offender {
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub name: String,
    /// Violation codes, e.g. NodeOutsideMainland.
    pub codes: Vec<String>,
}
