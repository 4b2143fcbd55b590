//! The report as data: what `report` writes as JSON (schema
//! `docs/report.schema.json`), and from which the HTML and CSV are
//! rendered. Built from a snapshot, the workloads and pods in it, what the
//! audit wrote (Events, PolicyReports, policy status) and the time.
//!
//! Deterministic: every list is sorted, and the only timestamp that is not
//! a fact read from the cluster is `generatedAt`.

use std::collections::{BTreeMap, BTreeSet};

use jiff::Timestamp;
use jiff::civil::Date;
use jiff::tz::{Offset, TimeZone};
use serde::Serialize;

use crate::api::{Action, DataClass, StorageMode};
use crate::engine::{
    self, BindingMode, ClassGuarantee, Code, EffectiveEgress, EndpointEvidence, Evidence, Lang,
    NodeStanding, REGION_LABEL, Snapshot, StoragePosture, Text, UnknownLocation, Verdict,
    VolumeEvidence, VolumeFinding, VolumeLocation, Workload, WorkloadKind, describe_untrusted,
    parse_provider_id,
};

pub const SCHEMA_VERSION: &str = "residencyguard.io/residency-report/v1alpha1";

/// Namespaces of the control plane: never counted as governed for coverage
/// (the webhook never intercepts them either).
pub const SYSTEM_NAMESPACES: [&str; 3] = ["kube-system", "kube-public", "kube-node-lease"];

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub schema_version: &'static str,
    /// When the report was taken (RFC 3339, UTC, seconds): the only
    /// timestamp not read from the cluster.
    pub generated_at: String,
    pub scope: Scope,
    pub summary: Summary,
    /// Every governed workload: classified, and governed by a policy.
    pub workloads: Vec<WorkloadEntry>,
    pub coverage: Coverage,
    /// Every exemption of every policy.
    pub exemptions: Vec<ExemptionEntry>,
    /// What changed since an earlier report (`--compare`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub changes: Option<super::compare::Changes>,
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Scope {
    /// `cluster` or `manifests`.
    pub source: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterIdentity>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub manifests: Option<ManifestScope>,
    pub tool: Tool,
    pub policies: Vec<PolicyEntry>,
    pub data: Vec<DataSource>,
    pub inventory: InventoryCounts,
    /// Where violations' first-seen times come from, and whether they
    /// could be read.
    pub audit_sources: AuditSources,
    /// Objects skipped, policy warnings, sources that could not be read.
    pub warnings: Vec<String>,
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterIdentity {
    /// The API server URL from the kubeconfig.
    pub server: String,
    /// The uid of the `kube-system` namespace: stable for the life of a
    /// cluster, so two reports can be tied to the same cluster.
    pub kube_system_uid: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub context: Option<String>,
    /// One LIST per kind: its resourceVersion and how many objects it gave.
    pub lists: Vec<ListEntry>,
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ListEntry {
    pub resource: String,
    pub resource_version: Option<String>,
    pub items: usize,
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ManifestScope {
    pub files: Vec<String>,
    pub documents: usize,
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Tool {
    pub name: &'static str,
    pub version: &'static str,
}

impl Default for Tool {
    fn default() -> Self {
        Tool {
            name: env!("CARGO_PKG_NAME"),
            version: env!("CARGO_PKG_VERSION"),
        }
    }
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyEntry {
    pub name: String,
    pub resource_version: Option<String>,
    pub uid: Option<String>,
    pub generation: Option<i64>,
    pub action: Action,
    pub data_classes: Vec<DataClass>,
    /// `Unrestricted`, `MainlandOnly` or `ClusterOnly`.
    pub egress_mode: String,
    pub namespace_selector: bool,
    pub exemptions: usize,
    /// `valid`, or `strictest` when the policy does not compile and its
    /// strictest reading is what the report judged with.
    pub state: &'static str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
    /// What the audit last wrote in the policy's status, when it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<PolicyStatusEntry>,
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyStatusEntry {
    pub violations: Option<i64>,
    pub last_evaluated: Option<String>,
    pub ready: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DataSource {
    /// `jurisdictionCatalogue`, `mainlandCidrs`, `countryHints`,
    /// `extraMainlandCidrs`, `clusterCidrs`.
    pub name: &'static str,
    /// `bundled` or the path of the user's file.
    pub origin: String,
    pub sha256: Option<String>,
    pub entries: usize,
    pub version: Option<String>,
    pub date: Option<String>,
    pub licence: Option<String>,
    pub source: Option<String>,
}

#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InventoryCounts {
    /// Nodes known (null: none given, placement judged by the guarantee alone).
    pub nodes: Option<usize>,
    pub namespaces: usize,
    /// Top-level workloads judged (controller-owned objects are judged
    /// through their owner).
    pub workloads: usize,
    /// Pods seen (bound to a node or pending).
    pub pods: usize,
}

#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditSources {
    pub events: Availability,
    pub policy_reports: Availability,
    pub policy_status: Availability,
}

/// Whether an evidence source was read.
#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Availability {
    pub read: bool,
    /// How many objects of it were read.
    pub objects: usize,
    /// Why it was not read (manifests carry none; the API is not installed;
    /// access denied).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<Text>,
}

impl Availability {
    pub fn read(objects: usize) -> Self {
        Availability {
            read: true,
            objects,
            reason: None,
        }
    }

    pub fn unavailable(en: impl Into<String>, zh: impl Into<String>) -> Self {
        Availability {
            read: false,
            objects: 0,
            reason: Some(Text {
                en: en.into(),
                zh: zh.into(),
            }),
        }
    }
}

#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    /// Governed workloads.
    pub workloads: usize,
    /// Their pods.
    pub pods: usize,
    pub violating: usize,
    /// Compliant only because an active exemption covers every violation.
    pub exempted: usize,
    pub compliant: usize,
    /// Counting violations (exempted ones excluded).
    pub violations: usize,
    pub unclassified_in_governed_namespaces: usize,
    pub classified_ungoverned: usize,
    pub pods_by_jurisdiction: Vec<Count>,
    pub classes: Vec<ClassSummary>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Count {
    pub key: String,
    pub count: usize,
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClassSummary {
    pub class: DataClass,
    pub workloads: usize,
    pub pods: usize,
    pub violating: usize,
    pub exempted: usize,
    pub pods_by_jurisdiction: Vec<Count>,
    pub pods_by_provider: Vec<Count>,
    pub pods_by_region: Vec<Count>,
    /// Workloads by egress posture.
    pub egress: Vec<Count>,
    /// Where the class's data at rest is: the most serious posture of its
    /// workloads' volumes (`outside` > `unknown` > `notGuaranteed` >
    /// `mainland` > `none`).
    pub storage: StoragePosture,
    /// Workloads by storage posture.
    pub storage_workloads: Vec<Count>,
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadEntry {
    pub kind: WorkloadKind,
    pub namespace: String,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    pub classes: Vec<DataClass>,
    pub class_sources: Vec<ClassSourceEntry>,
    /// `violating`, `exempted` or `compliant`.
    pub status: &'static str,
    /// The strictest action among violated policies.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action: Option<Action>,
    pub policies: Vec<GoverningPolicy>,
    pub placement: Placement,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub egress: Option<EgressEntry>,
    /// Its volumes that keep data off the node, and where.
    pub storage: StorageEntry,
    pub violations: Vec<ViolationEntry>,
}

impl WorkloadEntry {
    pub fn reference(&self) -> String {
        format!("{} {}/{}", self.kind, self.namespace, self.name)
    }
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClassSourceEntry {
    pub location: String,
    pub value: String,
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GoverningPolicy {
    pub policy: String,
    pub action: Action,
    pub classes: Vec<DataClass>,
    pub violated: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exemption: Option<ExemptionInForce>,
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ExemptionInForce {
    pub index: usize,
    pub basis: String,
    pub reference: String,
    pub approved_by: String,
    pub expires: String,
    pub active: bool,
    pub days_left: Option<i64>,
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Placement {
    /// The pods' own constraints keep them on mainland-China nodes (or
    /// on nodes a governing policy's allowedNodes vouches for).
    pub guaranteed: bool,
    /// The constraints, as written: nodeName, nodeSelector, required node
    /// affinity terms.
    pub constraints: Vec<String>,
    /// Nodes known today that the constraints match (null: not reported,
    /// or no inventory).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub matching_nodes: Option<usize>,
    /// Of those, the nodes outside mainland China or unverified.
    pub outside_nodes: Vec<NodeEntry>,
    /// Where the workload's pods run now.
    pub pods: Vec<PodEntry>,
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeEntry {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// `mainland-china`, `hong-kong`, `macau`, `taiwan`, `foreign` or
    /// `unverified`.
    pub jurisdiction: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub country: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider_id: Option<String>,
    /// The cloud the providerID names.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// The region the providerID names, where its format carries one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider_region: Option<String>,
    /// Why the node is not trusted to be in mainland China, when it is not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unverified_because: Option<Text>,
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PodEntry {
    pub name: String,
    /// The node it is bound to; null while pending.
    pub node: Option<NodeEntry>,
}

impl PodEntry {
    /// Bound to a node outside mainland China (or unverified).
    pub fn outside_mainland(&self) -> bool {
        self.node
            .as_ref()
            .is_some_and(|n| n.jurisdiction != "mainland-china")
    }
}

impl Placement {
    /// Pods bound to nodes outside mainland China (or unverified).
    pub fn pods_outside_mainland(&self) -> usize {
        self.pods.iter().filter(|p| p.outside_mainland()).count()
    }
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EgressEntry {
    /// `hostNetwork`, `unrestricted`, `allowsAll`, `outsideMainland`,
    /// `outsideAllowed`, `mainland` or `clusterOnly`.
    pub posture: &'static str,
    pub host_network: bool,
    pub isolated: bool,
    pub selecting_policies: Vec<String>,
    pub allow_all_rules: Vec<AllowAllRule>,
    pub in_cluster_peers: usize,
    pub external_blocks: Vec<ExternalBlockEntry>,
    /// The CNI semantics, when layers besides NetworkPolicy were read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cni: Option<String>,
    /// Which layer allowed and which closed what, in evaluation order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub layers: Vec<engine::LayerDecision>,
    /// Domain names egress rules allow.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub domains: Vec<engine::DomainGrant>,
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AllowAllRule {
    pub network_policy: String,
    pub rule: usize,
    pub reason: String,
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ExternalBlockEntry {
    pub network_policy: String,
    pub rule: usize,
    pub peer: usize,
    pub cidr: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub except: Vec<String>,
    pub mainland: bool,
    pub in_cluster: bool,
    /// `CN` for a block inside mainland China; for one outside, the country
    /// of an address it reaches there (null when the data has none).
    pub country: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub example_outside: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub allowed_by: Vec<String>,
}

/// A workload's storage evidence: the engine's storage judgement of each
/// volume that keeps data off the node.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StorageEntry {
    /// A governing policy checks storage (`spec.storage.mode:
    /// MainlandOnly`). When none does, the volumes are still described
    /// and judged, but raise no violation.
    pub checked: bool,
    /// The most serious posture of its volumes; `none` without any.
    pub posture: StoragePosture,
    pub volumes: Vec<VolumeEntry>,
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VolumeEntry {
    /// The pod volume, or the StatefulSet's claim template.
    pub volume: String,
    pub field: String,
    /// `claim`, `claimTemplate` or `inline`.
    pub source: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub claim: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub persistent_volume: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub storage_class: Option<String>,
    pub default_class: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub binding_mode: Option<BindingMode>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provisioner: Option<String>,
    /// `followsPod`, `mainland`, `anywhere` or `topology`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub class_guarantee: Option<&'static str>,
    /// The location keys, as written.
    pub topology: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub location: Option<LocationEntry>,
    pub endpoints: Vec<EndpointEvidence>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub driver: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub store: Option<String>,
    pub posture: StoragePosture,
    pub findings: Vec<VolumeFinding>,
}

/// Where a PersistentVolume is (or what a class allows), and on what
/// evidence.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LocationEntry {
    /// `mainland`, `outside` or `unknown`.
    pub standing: &'static str,
    /// Mainland: the regions its topology allows.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub regions: Vec<String>,
    /// Outside: the key and value that place it, and the region,
    /// jurisdiction and country they mean. Unknown because of a value:
    /// that key and value.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jurisdiction: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub country: Option<String>,
    /// Unknown: `noTopology`, `unknownValue`, `node` (a local volume on a
    /// node unknown or not trusted) or `matchesNothing`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unknown_because: Option<&'static str>,
    /// The same in words, both languages.
    pub description: Text,
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ViolationEntry {
    pub policy: String,
    pub code: Code,
    pub field: String,
    pub exempted: bool,
    /// For a pod bound to a node outside mainland China: the pod and node.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    pub message: Text,
    /// The earliest time the audit is known to have reported it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_seen: Option<String>,
    /// Which audit outputs list it: `event`, `policyReport`, `policyStatus`.
    pub seen_by: Vec<&'static str>,
}

#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Coverage {
    /// Namespaces at least one policy selects (control-plane namespaces
    /// excepted).
    pub governed_namespaces: Vec<String>,
    /// Workloads there that carry no data class.
    pub unclassified: Vec<WorkloadRef>,
    /// Classified workloads no policy governs.
    pub classified_ungoverned: Vec<WorkloadRef>,
    /// Workloads whose data-class label cannot be read.
    pub unclassifiable: Vec<Unclassifiable>,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadRef {
    pub namespace: String,
    pub kind: WorkloadKind,
    pub name: String,
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Unclassifiable {
    pub namespace: String,
    pub kind: WorkloadKind,
    pub name: String,
    pub error: Text,
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ExemptionEntry {
    pub policy: String,
    pub index: usize,
    pub namespaces: Vec<String>,
    pub basis: String,
    pub reference: String,
    pub approved_by: String,
    pub expires: String,
    /// Days from the report's date (China Standard Time) to the last day
    /// the exemption applies: 0 on that day, negative once lapsed.
    pub days_left: i64,
    /// `active` or `lapsed`.
    pub state: &'static str,
    /// 30 or 90 when it lapses within that many days; null otherwise.
    pub expires_within: Option<u32>,
    /// Governed workloads it matches now.
    pub covers: Vec<WorkloadRef>,
}

/// What the audit wrote, indexed for looking up when a finding was first
/// reported.
#[derive(Clone, Debug, Default)]
pub struct AuditEvidence {
    /// Event name → earliest time.
    pub events_by_name: BTreeMap<String, Timestamp>,
    /// (regarding kind, namespace, name, reason) → earliest time.
    pub events_by_object: BTreeMap<(String, String, String, String), Timestamp>,
    /// (kind, namespace, name, policy, rule) → the result's own time, if any.
    pub report_results: BTreeMap<(String, String, String, String, String), Option<Timestamp>>,
    /// (kind, namespace, name) → codes, per policy: the policies' topOffenders.
    pub offenders: BTreeMap<(String, String, String, String), BTreeSet<String>>,
}

/// The metadata of a policy that the compiled policy does not keep.
#[derive(Clone, Debug, Default)]
pub struct PolicyMeta {
    pub resource_version: Option<String>,
    pub uid: Option<String>,
    pub status: Option<PolicyStatusEntry>,
}

/// Everything a report is built from.
pub struct Inputs {
    pub snapshot: Snapshot,
    /// Every object judged: top-level workloads, controller-owned
    /// objects (ReplicaSets of Deployments, Jobs of CronJobs) and pods.
    pub workloads: Vec<Workload>,
    /// Where each workload was read (manifests: `file (document n)`).
    pub origins: BTreeMap<(WorkloadKind, String, String), String>,
    pub policy_meta: BTreeMap<String, PolicyMeta>,
    pub evidence: AuditEvidence,
    pub audit_sources: AuditSources,
    pub source: Source,
    pub data: Vec<DataSource>,
    pub warnings: Vec<String>,
    /// A workload whose label cannot be read is bad input (manifests) or
    /// is listed under coverage (a cluster).
    pub unclassifiable_is_error: bool,
}

pub enum Source {
    Cluster(ClusterIdentity),
    Manifests(ManifestScope),
}

/// Exemption expiry dates are days in China Standard Time.
fn cst_today(now: Timestamp) -> Date {
    let cst = TimeZone::fixed(Offset::constant(8));
    now.to_zoned(cst).date()
}

/// Days from `today` to `expires` (YYYY-MM-DD); None when it is not a date.
pub fn days_left(expires: &str, today: Date) -> Option<i64> {
    let date: Date = expires.parse().ok()?;
    let span = today.until((jiff::Unit::Day, date)).ok()?;
    Some(i64::from(span.get_days()))
}

/// `2026-01-02T03:04:05Z`: seconds, UTC.
pub fn rfc3339(t: Timestamp) -> String {
    Timestamp::from_second(t.as_second())
        .unwrap_or(t)
        .to_string()
}

/// The jurisdiction key of a node standing, for charts and JSON.
fn jurisdiction_key(standing: &NodeStanding) -> (String, Option<String>) {
    match standing {
        NodeStanding::Mainland { .. } => ("mainland-china".into(), Some("CN".into())),
        NodeStanding::Outside {
            jurisdiction,
            country,
            ..
        } => {
            let key = serde_json::to_value(jurisdiction)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_else(|| "foreign".into());
            (key, Some(country.clone()))
        }
        NodeStanding::Untrusted(_) => ("unverified".into(), None),
    }
}

fn node_entry(snapshot: &Snapshot, name: &str) -> NodeEntry {
    let Some(node) = snapshot.node(name) else {
        return NodeEntry {
            name: name.to_string(),
            region: None,
            jurisdiction: "unverified".into(),
            country: None,
            provider_id: None,
            provider: None,
            provider_region: None,
            unverified_because: Some(Text {
                en: "the node is not in the inventory".into(),
                zh: "节点不在节点清单中".into(),
            }),
        };
    };
    let (jurisdiction, country) = jurisdiction_key(&node.standing);
    let location = node
        .info
        .provider_id
        .as_deref()
        .and_then(|id| parse_provider_id(id, &snapshot.catalogue));
    NodeEntry {
        name: name.to_string(),
        region: node
            .info
            .labels
            .get(REGION_LABEL)
            .cloned()
            .or_else(|| node.info.region_label().map(str::to_string)),
        jurisdiction,
        country,
        provider_id: node.info.provider_id.clone(),
        provider: location.as_ref().map(|l| l.provider.to_string()),
        provider_region: location.and_then(|l| l.region().map(str::to_string)),
        unverified_because: match &node.standing {
            NodeStanding::Untrusted(why) => Some(Text {
                en: describe_untrusted(why, Lang::En),
                zh: describe_untrusted(why, Lang::ZhCn),
            }),
            _ => None,
        },
    }
}

/// The constraints a pod spec places on nodes, as written.
fn constraints(w: &Workload) -> Vec<String> {
    let mut out = Vec::new();
    let path = w.pod_spec_path();
    if let Some(node) = &w.pod.node_name {
        out.push(format!("{path}.nodeName: {node}"));
    }
    if let Some(sel) = w.pod.node_selector.as_ref().filter(|s| !s.is_empty()) {
        let pairs: Vec<String> = sel.iter().map(|(k, v)| format!("{k}={v}")).collect();
        out.push(format!("{path}.nodeSelector: {}", pairs.join(", ")));
    }
    let terms = w
        .pod
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|n| {
            n.required_during_scheduling_ignored_during_execution
                .as_ref()
        })
        .map(|r| r.node_selector_terms.as_slice())
        .unwrap_or_default();
    for (i, term) in terms.iter().enumerate() {
        let mut parts = Vec::new();
        for e in term.match_expressions.iter().flatten() {
            parts.push(requirement_text(&e.key, &e.operator, e.values.as_deref()));
        }
        for e in term.match_fields.iter().flatten() {
            parts.push(format!(
                "field {}",
                requirement_text(&e.key, &e.operator, e.values.as_deref())
            ));
        }
        out.push(format!(
            "{path}.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[{i}]: {}",
            parts.join(" AND ")
        ));
    }
    out
}

fn requirement_text(key: &str, op: &str, values: Option<&[String]>) -> String {
    match values {
        Some(v) if !v.is_empty() => format!("{key} {op} [{}]", v.join(", ")),
        _ => format!("{key} {op}"),
    }
}

fn egress_entry(e: &EffectiveEgress) -> EgressEntry {
    let blocks: Vec<ExternalBlockEntry> = e
        .external_blocks
        .iter()
        .map(|b| ExternalBlockEntry {
            network_policy: b.network_policy.to_string(),
            rule: b.rule,
            peer: b.peer,
            cidr: b.cidr.to_string(),
            except: b.except.to_vec(),
            mainland: b.mainland,
            in_cluster: b.in_cluster,
            country: if b.in_cluster {
                None
            } else if b.mainland {
                Some("CN".into())
            } else {
                b.country.clone()
            },
            example_outside: b.example_outside.clone(),
            allowed_by: b.allowed_by.iter().map(|p| p.to_string()).collect(),
        })
        .collect();
    let outside = blocks.iter().filter(|b| !b.mainland);
    let posture = if e.host_network {
        "hostNetwork"
    } else if !e.isolated {
        "unrestricted"
    } else if !e.allow_all_rules.is_empty() {
        "allowsAll"
    } else if outside.clone().any(|b| b.allowed_by.is_empty()) {
        "outsideMainland"
    } else if outside.clone().next().is_some() {
        "outsideAllowed"
    } else if blocks.iter().any(|b| !b.in_cluster) {
        "mainland"
    } else {
        "clusterOnly"
    };
    EgressEntry {
        posture,
        host_network: e.host_network,
        isolated: e.isolated,
        selecting_policies: e.selecting_policies.iter().map(|p| p.to_string()).collect(),
        allow_all_rules: e
            .allow_all_rules
            .iter()
            .map(|r| AllowAllRule {
                network_policy: r.network_policy.to_string(),
                rule: r.rule,
                reason: r.reason.to_string(),
            })
            .collect(),
        in_cluster_peers: e.in_cluster_peers.len(),
        external_blocks: blocks,
        cni: e.cni.map(|c| c.as_str().to_string()),
        layers: e.layers.clone(),
        domains: e.domains.clone(),
    }
}

fn location_entry(l: &VolumeLocation) -> LocationEntry {
    let mut e = LocationEntry {
        standing: "unknown",
        regions: Vec::new(),
        key: None,
        value: None,
        region: None,
        jurisdiction: None,
        country: None,
        unknown_because: None,
        description: Text {
            en: l.describe_en(),
            zh: l.describe_zh(),
        },
    };
    match l {
        VolumeLocation::Mainland { regions } => {
            e.standing = "mainland";
            e.regions = regions.clone();
            e.country = Some("CN".into());
        }
        VolumeLocation::Outside {
            key,
            value,
            region,
            jurisdiction,
            country,
        } => {
            e.standing = "outside";
            e.key = Some(key.clone());
            e.value = Some(value.clone());
            e.region = Some(region.clone());
            e.jurisdiction = serde_json::to_value(jurisdiction)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string));
            e.country = Some(country.clone());
        }
        VolumeLocation::Unknown { reason } => {
            e.unknown_because = Some(match reason {
                UnknownLocation::NoTopology => "noTopology",
                UnknownLocation::UnknownValue { key, value } => {
                    e.key = Some(key.clone());
                    e.value = Some(value.clone());
                    "unknownValue"
                }
                UnknownLocation::Node { .. } => "node",
                UnknownLocation::MatchesNothing => "matchesNothing",
            });
        }
    }
    e
}

fn volume_entry(v: VolumeEvidence) -> VolumeEntry {
    VolumeEntry {
        volume: v.volume,
        field: v.field,
        source: v.source,
        claim: v.claim,
        persistent_volume: v.persistent_volume,
        storage_class: v.storage_class,
        default_class: v.default_class,
        binding_mode: v.binding_mode,
        provisioner: v.provisioner,
        class_guarantee: v.class_guarantee.as_ref().map(|g| match g {
            ClassGuarantee::FollowsPod => "followsPod",
            ClassGuarantee::Mainland => "mainland",
            ClassGuarantee::Anywhere => "anywhere",
            ClassGuarantee::Topology { .. } => "topology",
        }),
        topology: v.topology,
        location: v.location.as_ref().map(location_entry),
        endpoints: v.endpoints,
        driver: v.driver,
        store: v.store,
        posture: v.posture,
        findings: v.findings,
    }
}

/// The engine's storage judgement of a workload's volumes; `checked` when
/// a governing policy enforces it.
fn storage_entry(
    snapshot: &Snapshot,
    volumes: Vec<VolumeEvidence>,
    verdict: &Verdict,
) -> StorageEntry {
    let checked = verdict.policies.iter().any(|p| {
        snapshot
            .policies
            .iter()
            .any(|c| c.name == p.policy && c.storage_mode != StorageMode::Unchecked)
    });
    let volumes: Vec<VolumeEntry> = volumes.into_iter().map(volume_entry).collect();
    StorageEntry {
        checked,
        posture: volumes
            .iter()
            .map(|v| v.posture)
            .max()
            .unwrap_or(StoragePosture::None),
        volumes,
    }
}

type Key = (WorkloadKind, String, String);

fn key_of(w: &Workload) -> Key {
    (w.kind, w.namespace.clone(), w.name.clone())
}

/// The top-level workload a controller-owned object belongs to: follow
/// controller ownerReferences through the objects known, else the naming
/// conventions of the built-in controllers (ReplicaSet
/// `<deployment>-<pod-template-hash>`, Job `<cronjob>-<n>`).
fn resolve_top(
    w: &Workload,
    tops: &BTreeSet<Key>,
    owned: &BTreeMap<Key, &Workload>,
) -> Option<Key> {
    let mut current = w;
    for _ in 0..8 {
        let c = current.controller.as_ref()?;
        let kind = WorkloadKind::ALL
            .into_iter()
            .find(|k| k.as_str() == c.kind)?;
        let key = (kind, current.namespace.clone(), c.name.clone());
        if tops.contains(&key) {
            return Some(key);
        }
        if let Some(next) = owned.get(&key) {
            current = next;
            continue;
        }
        let guess = match kind {
            WorkloadKind::ReplicaSet => current
                .labels
                .get("pod-template-hash")
                .and_then(|h| c.name.strip_suffix(&format!("-{h}")))
                .map(|d| (WorkloadKind::Deployment, d)),
            WorkloadKind::Job => c
                .name
                .rsplit_once('-')
                .filter(|(_, n)| !n.is_empty() && n.chars().all(|ch| ch.is_ascii_digit()))
                .map(|(cron, _)| (WorkloadKind::CronJob, cron)),
            _ => None,
        };
        let guess = guess.map(|(k, n)| (k, current.namespace.clone(), n.to_string()));
        return guess.filter(|g| tops.contains(g));
    }
    None
}

/// Bad input found while building (manifests only): a workload whose
/// data-class label cannot be read.
#[derive(Debug)]
pub struct BuildErrors(pub Vec<Text>);

/// Build the report. `now` is the report's time (exemption expiry, days left).
pub fn build(inputs: &Inputs, now: Timestamp) -> Result<Report, BuildErrors> {
    let snapshot = &inputs.snapshot;
    let today = cst_today(now);

    // Which objects are top-level (judged), which are links in an owner
    // chain, and which are pods of something.
    let mut owned: BTreeMap<Key, &Workload> = BTreeMap::new();
    let mut tops: BTreeSet<Key> = BTreeSet::new();
    for w in &inputs.workloads {
        if w.controller.is_some() {
            owned.insert(key_of(w), w);
        } else {
            tops.insert(key_of(w));
        }
    }
    let mut pods_of: BTreeMap<Key, Vec<&Workload>> = BTreeMap::new();
    let mut judged: Vec<&Workload> = Vec::new();
    let mut pod_count = 0usize;
    for w in &inputs.workloads {
        if w.controller.is_none() {
            judged.push(w);
            if w.kind == WorkloadKind::Pod {
                pod_count += 1;
                pods_of.entry(key_of(w)).or_default().push(w);
            }
            continue;
        }
        let top = resolve_top(w, &tops, &owned);
        match (w.kind, top) {
            (WorkloadKind::Pod, Some(top)) => {
                pod_count += 1;
                pods_of.entry(top).or_default().push(w);
            }
            // A pod of a controller this project does not know: judged on
            // its own, as the webhook judges it.
            (WorkloadKind::Pod, None) => {
                pod_count += 1;
                judged.push(w);
                pods_of.entry(key_of(w)).or_default().push(w);
            }
            // A ReplicaSet or Job judged through its owner.
            (_, Some(_)) => {}
            (_, None) => judged.push(w),
        }
    }

    let mut errors = Vec::new();
    let mut workloads = Vec::new();
    let mut coverage = Coverage::default();
    let governed_ns = governed_namespaces(snapshot, &inputs.workloads);
    let mut exemption_covers: BTreeMap<(String, usize), Vec<WorkloadRef>> = BTreeMap::new();
    for w in judged {
        let (verdict, volumes) = match engine::evaluate_keeping_storage_evidence(snapshot, w, now) {
            Ok(judged) => judged,
            Err(e) => {
                let text = e.text();
                if inputs.unclassifiable_is_error {
                    errors.push(match inputs.origins.get(&key_of(w)) {
                        Some(origin) => Text {
                            en: format!("{origin}: {}", text.en),
                            zh: format!("{origin}: {}", text.zh),
                        },
                        None => text,
                    });
                } else {
                    coverage.unclassifiable.push(Unclassifiable {
                        namespace: w.namespace.clone(),
                        kind: w.kind,
                        name: w.name.clone(),
                        error: text,
                    });
                }
                continue;
            }
        };
        let reference = WorkloadRef {
            namespace: w.namespace.clone(),
            kind: w.kind,
            name: w.name.clone(),
        };
        if verdict.classes.is_empty() {
            if governed_ns.contains(&w.namespace) {
                coverage.unclassified.push(reference);
            }
            continue;
        }
        if verdict.policies.is_empty() {
            coverage.classified_ungoverned.push(reference);
            continue;
        }
        for p in &verdict.policies {
            if let Some(e) = p.exemption.as_ref().filter(|e| e.active) {
                exemption_covers
                    .entry((p.policy.to_string(), e.index))
                    .or_default()
                    .push(reference.clone());
            }
        }
        let pods = pods_of
            .get(&key_of(w))
            .map(Vec::as_slice)
            .unwrap_or_default();
        let volumes = volumes.unwrap_or_else(|| engine::storage_evidence(w, snapshot));
        workloads.push(entry(inputs, w, verdict, volumes, pods, now, today));
    }
    if !errors.is_empty() {
        return Err(BuildErrors(errors));
    }
    workloads.sort_by(|a, b| (&a.namespace, a.kind, &a.name).cmp(&(&b.namespace, b.kind, &b.name)));
    coverage.governed_namespaces = governed_ns.into_iter().collect();
    coverage.unclassified.sort();
    coverage.classified_ungoverned.sort();
    coverage
        .unclassifiable
        .sort_by(|a, b| (&a.namespace, a.kind, &a.name).cmp(&(&b.namespace, b.kind, &b.name)));

    let exemptions = exemptions(snapshot, today, now, &mut exemption_covers);
    let summary = summarise(&workloads, &coverage);
    let mut policies: Vec<PolicyEntry> = snapshot
        .policies
        .iter()
        .map(|p| {
            let meta = inputs
                .policy_meta
                .get(&*p.name)
                .cloned()
                .unwrap_or_default();
            let rejected = snapshot.rejected(&p.name);
            PolicyEntry {
                name: p.name.to_string(),
                resource_version: meta.resource_version,
                uid: meta.uid,
                generation: p.generation,
                action: p.action,
                data_classes: p.classes.iter().copied().collect(),
                egress_mode: format!("{:?}", p.egress_mode),
                namespace_selector: p.namespace_selector.is_some(),
                exemptions: p.exemptions.len(),
                state: if rejected.is_some() {
                    "strictest"
                } else {
                    "valid"
                },
                problems: rejected
                    .map(|r| {
                        r.problems
                            .iter()
                            .map(|x| format!("{}: {}", x.field, x.message.en))
                            .collect()
                    })
                    .unwrap_or_default(),
                status: meta.status,
            }
        })
        .collect();
    policies.sort_by(|a, b| a.name.cmp(&b.name));
    let mut warnings = inputs.warnings.clone();
    warnings.sort();
    warnings.dedup();
    let inventory = InventoryCounts {
        nodes: snapshot.nodes().map(<[_]>::len),
        namespaces: snapshot.namespaces.len(),
        workloads: summary_judged(&workloads, &coverage),
        pods: pod_count,
    };
    let (source, cluster, manifests) = match &inputs.source {
        Source::Cluster(c) => ("cluster", Some(c.clone()), None),
        Source::Manifests(m) => ("manifests", None, Some(m.clone())),
    };
    Ok(Report {
        schema_version: SCHEMA_VERSION,
        generated_at: rfc3339(now),
        scope: Scope {
            source,
            cluster,
            manifests,
            tool: Tool::default(),
            policies,
            data: inputs.data.clone(),
            inventory,
            audit_sources: inputs.audit_sources.clone(),
            warnings,
        },
        summary,
        workloads,
        coverage,
        exemptions,
        changes: None,
    })
}

fn summary_judged(workloads: &[WorkloadEntry], coverage: &Coverage) -> usize {
    workloads.len()
        + coverage.classified_ungoverned.len()
        + coverage.unclassifiable.len()
        + coverage.unclassified.len()
}

/// Namespaces some policy selects, among those known or holding workloads.
/// A namespace whose labels are unknown counts as governed (fail closed,
/// as the engine applies policies there).
fn governed_namespaces(snapshot: &Snapshot, workloads: &[Workload]) -> BTreeSet<String> {
    let mut names: BTreeSet<&str> = snapshot.namespaces.keys().map(String::as_str).collect();
    names.extend(workloads.iter().map(|w| w.namespace.as_str()));
    names
        .into_iter()
        .filter(|ns| !SYSTEM_NAMESPACES.contains(ns))
        .filter(|ns| {
            snapshot.policies.iter().any(|p| {
                match (&p.namespace_selector, snapshot.namespaces.get(*ns)) {
                    (None, _) | (Some(_), None) => true,
                    (Some(sel), Some(labels)) => sel.matches(labels),
                }
            })
        })
        .map(str::to_string)
        .collect()
}

fn entry(
    inputs: &Inputs,
    w: &Workload,
    verdict: Verdict,
    volumes: Vec<VolumeEvidence>,
    pods: &[&Workload],
    now: Timestamp,
    today: Date,
) -> WorkloadEntry {
    let snapshot = &inputs.snapshot;
    let mut violations = Vec::new();
    let mut guaranteed = true;
    let mut matching_nodes = None;
    let mut outside: BTreeMap<String, NodeEntry> = BTreeMap::new();
    let mut policies = Vec::new();
    for p in &verdict.policies {
        for v in &p.violations {
            match &v.evidence {
                Evidence::Placement {
                    matching_nodes: m,
                    outside_nodes,
                    ..
                } => {
                    if v.code == Code::PlacementNotGuaranteed {
                        guaranteed = false;
                    }
                    if m.is_some() {
                        matching_nodes = matching_nodes.max(*m);
                    }
                    for n in outside_nodes {
                        outside
                            .entry(n.name.clone())
                            .or_insert_with(|| node_entry(snapshot, &n.name));
                    }
                }
                Evidence::BoundNode { node } => {
                    guaranteed = false;
                    outside
                        .entry(node.name.clone())
                        .or_insert_with(|| node_entry(snapshot, &node.name));
                }
                Evidence::Egress(_) | Evidence::Storage(_) | Evidence::Classification { .. } => {}
            }
            let (pod, node) = match (&v.evidence, w.kind) {
                (Evidence::BoundNode { node }, WorkloadKind::Pod) => {
                    (Some(w.name.clone()), Some(node.name.clone()))
                }
                _ => (None, None),
            };
            violations.push(violation(inputs, w, &p.policy, v, pod, node));
        }
        policies.push(GoverningPolicy {
            policy: p.policy.to_string(),
            action: p.action,
            classes: p.classes.clone(),
            violated: p.violated(),
            exemption: p.exemption.as_ref().map(|e| ExemptionInForce {
                index: e.index,
                basis: e.basis.as_str().to_string(),
                reference: e.reference.clone(),
                approved_by: e.approved_by.clone(),
                expires: e.expires.clone(),
                active: e.active,
                days_left: days_left(&e.expires, today),
            }),
        });
    }

    // Where the pods run now; a pod on a node outside is judged on its own
    // (BoundToNodeOutside), as the audit judges it. A bare Pod's own
    // verdict already says so.
    let mut pod_entries = Vec::new();
    for pod in pods {
        let node = pod
            .pod
            .node_name
            .as_deref()
            .map(|n| node_entry(snapshot, n));
        let entry = PodEntry {
            name: pod.name.clone(),
            node,
        };
        let outside_node = entry.outside_mainland();
        pod_entries.push(entry);
        if !outside_node || pod.controller.is_none() {
            continue;
        }
        let Ok(pv) = engine::evaluate(snapshot, pod, now) else {
            continue;
        };
        for p in &pv.policies {
            for v in p
                .violations
                .iter()
                .filter(|v| v.code == Code::BoundToNodeOutside)
            {
                let node = match &v.evidence {
                    Evidence::BoundNode { node } => Some(node.name.clone()),
                    _ => None,
                };
                violations.push(violation(
                    inputs,
                    pod,
                    &p.policy,
                    v,
                    Some(pod.name.clone()),
                    node,
                ));
            }
        }
    }
    pod_entries.sort_by(|a, b| a.name.cmp(&b.name));
    policies.sort_by(|a, b| a.policy.cmp(&b.policy));
    violations.sort_by(|a, b| {
        (&a.policy, a.code, &a.field, &a.pod).cmp(&(&b.policy, b.code, &b.field, &b.pod))
    });
    let counting = violations.iter().any(|v| !v.exempted);
    let action = violations
        .iter()
        .filter(|v| !v.exempted)
        .filter_map(|v| {
            policies
                .iter()
                .find(|p| p.policy == v.policy)
                .map(|p| p.action)
        })
        .min_by_key(|a| match a {
            Action::Deny => 0,
            Action::Warn => 1,
            Action::Audit => 2,
        });
    let status = if counting {
        "violating"
    } else if violations.iter().any(|v| v.exempted) {
        "exempted"
    } else {
        "compliant"
    };
    WorkloadEntry {
        kind: w.kind,
        namespace: w.namespace.clone(),
        name: w.name.clone(),
        uid: w.uid.clone(),
        classes: verdict.classes.clone(),
        class_sources: verdict
            .class_sources
            .iter()
            .map(|s| ClassSourceEntry {
                location: s.location.clone(),
                value: s.value.clone(),
            })
            .collect(),
        status,
        action,
        policies,
        placement: Placement {
            guaranteed,
            constraints: constraints(w),
            matching_nodes,
            outside_nodes: outside.into_values().collect(),
            pods: pod_entries,
        },
        egress: verdict.egress.as_ref().map(egress_entry),
        storage: storage_entry(snapshot, volumes, &verdict),
        violations,
    }
}

fn violation(
    inputs: &Inputs,
    object: &Workload,
    policy: &str,
    v: &engine::Violation,
    pod: Option<String>,
    node: Option<String>,
) -> ViolationEntry {
    let ev = &inputs.evidence;
    let kind = object.kind.as_str().to_string();
    let mut seen_by = Vec::new();
    let mut first: Option<(Timestamp, &'static str)> = None;
    let mut consider = |t: Option<Timestamp>, source: &'static str| {
        if let Some(t) = t
            && first.is_none_or(|(f, _)| t < f)
        {
            first = Some((t, source));
        }
    };
    let event_key = crate::audit::plan::EventKey {
        object: crate::state::WorkloadKey::of(object),
        policy: policy.to_string(),
        code: v.code,
    };
    let by_name = ev
        .events_by_name
        .get(&crate::audit::writer::event_name(&event_key))
        .copied();
    let by_object = ev
        .events_by_object
        .get(&(
            kind.clone(),
            object.namespace.clone(),
            object.name.clone(),
            v.code.as_str().to_string(),
        ))
        .copied();
    if by_name.is_some() || by_object.is_some() {
        seen_by.push("event");
        consider(by_name.or(by_object), "event");
    }
    if let Some(t) = ev.report_results.get(&(
        kind.clone(),
        object.namespace.clone(),
        object.name.clone(),
        policy.to_string(),
        v.code.as_str().to_string(),
    )) {
        seen_by.push("policyReport");
        consider(*t, "policyReport");
    }
    if ev
        .offenders
        .get(&(
            policy.to_string(),
            kind,
            object.namespace.clone(),
            object.name.clone(),
        ))
        .is_some_and(|codes| codes.contains(v.code.as_str()))
    {
        seen_by.push("policyStatus");
    }
    ViolationEntry {
        policy: policy.to_string(),
        code: v.code,
        field: v.field.clone(),
        exempted: v.exempted,
        pod,
        node,
        message: v.message.text(),
        first_seen: first.map(|(t, _)| rfc3339(t)),
        seen_by,
    }
}

fn exemptions(
    snapshot: &Snapshot,
    today: Date,
    now: Timestamp,
    covers: &mut BTreeMap<(String, usize), Vec<WorkloadRef>>,
) -> Vec<ExemptionEntry> {
    let mut out = Vec::new();
    for p in snapshot.policies.iter() {
        for e in &p.exemptions {
            let expires = e.expires.to_string();
            let days = days_left(&expires, today).unwrap_or(i64::MIN);
            let active = e.active_at(now);
            let mut covered = covers
                .remove(&(p.name.to_string(), e.index))
                .unwrap_or_default();
            covered.sort();
            out.push(ExemptionEntry {
                policy: p.name.to_string(),
                index: e.index,
                namespaces: e.namespaces.clone(),
                basis: e.basis.as_str().to_string(),
                reference: e.reference.clone(),
                approved_by: e.approved_by.clone(),
                expires,
                days_left: days,
                state: if active { "active" } else { "lapsed" },
                expires_within: match days {
                    _ if !active => None,
                    0..=30 => Some(30),
                    31..=90 => Some(90),
                    _ => None,
                },
                covers: covered,
            });
        }
    }
    out.sort_by(|a, b| (&a.policy, a.index).cmp(&(&b.policy, b.index)));
    out
}

fn counts(map: BTreeMap<String, usize>) -> Vec<Count> {
    map.into_iter()
        .map(|(key, count)| Count { key, count })
        .collect()
}

fn summarise(workloads: &[WorkloadEntry], coverage: &Coverage) -> Summary {
    let mut s = Summary {
        workloads: workloads.len(),
        unclassified_in_governed_namespaces: coverage.unclassified.len(),
        classified_ungoverned: coverage.classified_ungoverned.len(),
        ..Summary::default()
    };
    #[derive(Default)]
    struct Acc {
        workloads: usize,
        pods: usize,
        violating: usize,
        exempted: usize,
        jurisdiction: BTreeMap<String, usize>,
        provider: BTreeMap<String, usize>,
        region: BTreeMap<String, usize>,
        egress: BTreeMap<String, usize>,
        storage: StoragePosture,
        storage_workloads: BTreeMap<String, usize>,
    }
    let mut by_class: BTreeMap<DataClass, Acc> = BTreeMap::new();
    let mut all_jurisdictions: BTreeMap<String, usize> = BTreeMap::new();
    for w in workloads {
        s.pods += w.placement.pods.len();
        s.violations += w.violations.iter().filter(|v| !v.exempted).count();
        match w.status {
            "violating" => s.violating += 1,
            "exempted" => s.exempted += 1,
            _ => s.compliant += 1,
        }
        for pod in &w.placement.pods {
            let key = pod
                .node
                .as_ref()
                .map_or_else(|| "pending".to_string(), |n| n.jurisdiction.clone());
            *all_jurisdictions.entry(key).or_default() += 1;
        }
        for class in &w.classes {
            let acc = by_class.entry(*class).or_default();
            acc.workloads += 1;
            acc.pods += w.placement.pods.len();
            match w.status {
                "violating" => acc.violating += 1,
                "exempted" => acc.exempted += 1,
                _ => {}
            }
            let posture = w.egress.as_ref().map_or("notChecked", |e| e.posture);
            *acc.egress.entry(posture.to_string()).or_default() += 1;
            acc.storage = acc.storage.max(w.storage.posture);
            *acc.storage_workloads
                .entry(w.storage.posture.as_str().to_string())
                .or_default() += 1;
            for pod in &w.placement.pods {
                let (j, provider, region) = match &pod.node {
                    None => (
                        "pending".to_string(),
                        "pending".to_string(),
                        "pending".to_string(),
                    ),
                    Some(n) => (
                        n.jurisdiction.clone(),
                        n.provider.clone().unwrap_or_else(|| "unknown".into()),
                        n.region.clone().unwrap_or_else(|| "unknown".into()),
                    ),
                };
                *acc.jurisdiction.entry(j).or_default() += 1;
                *acc.provider.entry(provider).or_default() += 1;
                *acc.region.entry(region).or_default() += 1;
            }
        }
    }
    s.pods_by_jurisdiction = counts(all_jurisdictions);
    s.classes = by_class
        .into_iter()
        .map(|(class, a)| ClassSummary {
            class,
            workloads: a.workloads,
            pods: a.pods,
            violating: a.violating,
            exempted: a.exempted,
            pods_by_jurisdiction: counts(a.jurisdiction),
            pods_by_provider: counts(a.provider),
            pods_by_region: counts(a.region),
            egress: counts(a.egress),
            storage: a.storage,
            storage_workloads: counts(a.storage_workloads),
        })
        .collect();
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_left_counts_in_china_standard_time() {
        // 2027-06-29T16:00Z is already 2027-06-30 in Beijing: the last day.
        let now: Timestamp = "2027-06-29T16:00:00Z".parse().unwrap();
        assert_eq!(days_left("2027-06-30", cst_today(now)), Some(0));
        let now: Timestamp = "2027-06-29T15:59:59Z".parse().unwrap();
        assert_eq!(days_left("2027-06-30", cst_today(now)), Some(1));
        assert_eq!(days_left("2027-07-01", cst_today(now)), Some(2));
        assert_eq!(days_left("not a date", cst_today(now)), None);
    }

    #[test]
    fn timestamps_have_seconds_only() {
        let t: Timestamp = "2026-01-02T03:04:05.678Z".parse().unwrap();
        assert_eq!(rfc3339(t), "2026-01-02T03:04:05Z");
    }
}
