//! The audit's decision as data: from the findings index and the inventory,
//! the policy statuses, Events and PolicyReports that should exist. Pure: no
//! I/O, no clock (time only appears in what the writer adds).

use std::collections::BTreeMap;

use jiff::Timestamp;
use serde_json::{Value, json};

use super::index::{Finding, FindingsIndex};
use crate::api::{Action, Offender};
use crate::engine::{Code, Lang, WorkloadKind, policy};
use crate::state::{Inventory, WorkloadKey};

/// `app.kubernetes.io/managed-by` on everything the audit creates.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY: &str = "residency-guard";
/// PolicyReport `source`.
pub const SOURCE: &str = "residency-guard";
/// Name of the PolicyReport in each namespace, and of the ClusterPolicyReport.
pub const REPORT_NAME: &str = "residency-guard";
pub const REPORT_GROUP: &str = "wgpolicyk8s.io";
pub const REPORT_VERSION: &str = "v1alpha2";
/// Events carry at most this much of the engine's message.
pub const NOTE_MAX_BYTES: usize = 1024;

#[derive(Clone, Debug)]
pub struct PlanConfig {
    pub lang: Lang,
    /// Offenders listed in a policy's status.
    pub max_offenders: usize,
    /// Results per report (an object must stay well below etcd's 1.5 MiB).
    pub max_results_per_report: usize,
}

impl Default for PlanConfig {
    fn default() -> Self {
        PlanConfig {
            lang: Lang::En,
            max_offenders: 10,
            max_results_per_report: 1000,
        }
    }
}

/// A policy's status without its timestamps (the writer adds them).
#[derive(Clone, Debug, PartialEq)]
pub struct PlannedStatus {
    pub observed_generation: Option<i64>,
    pub ready: bool,
    pub reason: String,
    pub message: String,
    pub violations: i64,
    pub top_offenders: Vec<Offender>,
}

/// An Event's identity: one per object, policy and code.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EventKey {
    pub object: WorkloadKey,
    pub policy: String,
    pub code: Code,
}

/// A reference to a Kubernetes object (Events, report resources).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ObjectRef {
    pub api_version: String,
    pub kind: String,
    pub namespace: Option<String>,
    pub name: String,
    /// Known for objects in the cluster. `kubectl describe` lists an
    /// object's Events by uid, so an Event without one is not shown there.
    pub uid: Option<String>,
}

impl ObjectRef {
    pub fn workload(key: &WorkloadKey) -> ObjectRef {
        ObjectRef {
            api_version: api_version_of(key.kind).to_string(),
            kind: key.kind.as_str().to_string(),
            namespace: Some(key.namespace.clone()),
            name: key.name.clone(),
            uid: None,
        }
    }

    /// The workload `key` in `inv`, with its uid.
    pub fn in_inventory(key: &WorkloadKey, inv: &Inventory) -> ObjectRef {
        ObjectRef {
            uid: inv.workloads.get(key).and_then(|w| w.uid.clone()),
            ..ObjectRef::workload(key)
        }
    }

    pub fn to_json(&self) -> Value {
        let mut v = json!({"apiVersion": self.api_version, "kind": self.kind, "name": self.name});
        if let Some(uid) = &self.uid {
            v["uid"] = json!(uid);
        }
        if let Some(ns) = &self.namespace {
            v["namespace"] = json!(ns);
        }
        v
    }
}

pub fn api_version_of(kind: WorkloadKind) -> &'static str {
    match kind.group() {
        "" => "v1",
        "apps" => "apps/v1",
        _ => "batch/v1",
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlannedEvent {
    pub regarding: ObjectRef,
    /// The owning workload of a pod.
    pub related: Option<ObjectRef>,
    /// The violation code.
    pub reason: String,
    /// The engine's message, in the configured language, at most 1 KiB.
    pub note: String,
    pub policy: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum ResultKind {
    Pass,
    Fail,
    Warn,
    Error,
    Skip,
}

impl ResultKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ResultKind::Pass => "pass",
            ResultKind::Fail => "fail",
            ResultKind::Warn => "warn",
            ResultKind::Error => "error",
            ResultKind::Skip => "skip",
        }
    }
}

/// One PolicyReport result (wgpolicyk8s.io/v1alpha2).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ReportResult {
    pub policy: String,
    pub rule: String,
    pub result: ResultKind,
    pub severity: &'static str,
    pub message: String,
    pub resources: Vec<ObjectRef>,
    pub properties: BTreeMap<String, String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PlannedReport {
    pub results: Vec<ReportResult>,
    /// Results left out to keep the object small.
    pub truncated: usize,
}

impl PlannedReport {
    /// The PolicyReport (namespace Some) or ClusterPolicyReport (None).
    pub fn to_object(&self, namespace: Option<&str>) -> Value {
        let mut summary = BTreeMap::from([
            ("pass", 0u64),
            ("fail", 0),
            ("warn", 0),
            ("error", 0),
            ("skip", 0),
        ]);
        for r in &self.results {
            if let Some(n) = summary.get_mut(r.result.as_str()) {
                *n += 1;
            }
        }
        let results: Vec<Value> = self
            .results
            .iter()
            .map(|r| {
                json!({
                    "policy": r.policy,
                    "rule": r.rule,
                    "result": r.result.as_str(),
                    "severity": r.severity,
                    "category": "Data residency",
                    "source": SOURCE,
                    "scored": true,
                    "message": r.message,
                    "resources": r.resources.iter().map(ObjectRef::to_json).collect::<Vec<_>>(),
                    "properties": r.properties,
                })
            })
            .collect();
        let mut metadata = json!({
            "name": REPORT_NAME,
            "labels": {MANAGED_BY_LABEL: MANAGED_BY},
        });
        if self.truncated > 0 {
            metadata["annotations"] = json!({
                "residencyguard.io/results-truncated": self.truncated.to_string()
            });
        }
        let kind = match namespace {
            Some(ns) => {
                metadata["namespace"] = json!(ns);
                "PolicyReport"
            }
            None => "ClusterPolicyReport",
        };
        json!({
            "apiVersion": format!("{REPORT_GROUP}/{REPORT_VERSION}"),
            "kind": kind,
            "metadata": metadata,
            "summary": summary,
            "results": results,
        })
    }
}

/// Everything the audit wants to exist. What is not here and was written
/// before (a report, a status of a deleted policy) is cleaned up by the writer.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AuditPlan {
    /// Policy name → status.
    pub statuses: BTreeMap<String, PlannedStatus>,
    pub events: BTreeMap<EventKey, PlannedEvent>,
    /// Namespace → its PolicyReport; namespaces without results are absent.
    pub reports: BTreeMap<String, PlannedReport>,
    /// Cluster-scoped findings; empty means no ClusterPolicyReport.
    pub cluster_report: PlannedReport,
}

/// Severity by what the finding proves.
pub fn severity(code: Code) -> &'static str {
    match code {
        Code::BoundToNodeOutside => "critical",
        Code::NodeOutsideMainland
        | Code::EgressOutsideMainland
        | Code::EgressExternalForbidden
        | Code::HostNetwork => "high",
        Code::PlacementNotGuaranteed | Code::EgressUnrestricted | Code::EgressAllowsAll => "medium",
    }
}

/// Cut `s` to at most `max` bytes on a character boundary, marking the cut.
pub fn truncate_note(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    const ELLIPSIS: &str = "…";
    let mut end = max.saturating_sub(ELLIPSIS.len());
    while end > 0 && !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{ELLIPSIS}", &s[..end])
}

#[derive(Default)]
struct PolicyTally {
    governed: i64,
    violated: i64,
    offenders: Vec<(bool, WorkloadKey, Vec<String>)>,
}

/// Compute the plan. `now` only decides which policies compile (exemption
/// dates); nothing time-dependent ends up in the plan.
pub fn plan(index: &FindingsIndex, inv: &Inventory, cfg: &PlanConfig, now: Timestamp) -> AuditPlan {
    let mut tallies: BTreeMap<&str, PolicyTally> = BTreeMap::new();
    let mut out = AuditPlan::default();
    let mut ns_results: BTreeMap<&str, Vec<ReportResult>> = BTreeMap::new();
    // Node name → (policy, pods bound there, region) for the cluster report.
    let mut nodes: BTreeMap<(String, String), (usize, Option<String>)> = BTreeMap::new();

    for (key, finding) in index.iter() {
        let results = ns_results.entry(key.namespace.as_str()).or_default();
        // How reports and Events name the object (with its uid).
        let object = ObjectRef::in_inventory(key, inv);
        if let Some(error) = &finding.error {
            results.push(ReportResult {
                policy: "data-class-label".into(),
                rule: "Unclassifiable".into(),
                result: ResultKind::Error,
                severity: "medium",
                message: error.clone(),
                resources: vec![object.clone()],
                properties: BTreeMap::new(),
            });
            continue;
        }
        // One message per violation, in order (see `FindingsIndex::messages`).
        let mut messages = index.messages(key).unwrap_or_default().iter();
        for pf in &finding.policies {
            let tally = tallies.entry(&*pf.policy).or_default();
            tally.governed += 1;
            if pf.violated() {
                tally.violated += 1;
                let mut codes: Vec<String> = pf
                    .violations
                    .iter()
                    .filter(|v| !v.exempted)
                    .map(|v| v.code.as_str().to_string())
                    .collect();
                codes.dedup();
                let bound = pf
                    .violations
                    .iter()
                    .any(|v| !v.exempted && v.code == Code::BoundToNodeOutside);
                tally.offenders.push((bound, key.clone(), codes));
            }
            if pf.violations.is_empty() && !finding.is_owned_pod() {
                results.push(pass_result(key, &object, finding, pf, cfg));
            }
            for v in &pf.violations {
                let mut properties = BTreeMap::from([
                    ("field".to_string(), v.field.clone()),
                    ("action".to_string(), pf.action.as_str().to_string()),
                    ("classes".to_string(), classes_text(finding)),
                ]);
                if let Some(node) = &v.node {
                    properties.insert("node".into(), node.name.clone());
                    properties.insert(
                        "region".into(),
                        node.region.clone().unwrap_or_else(|| "unknown".into()),
                    );
                    let n = nodes
                        .entry((node.name.clone(), pf.policy.to_string()))
                        .or_insert((0, node.region.clone()));
                    if !v.exempted {
                        n.0 += 1;
                    }
                }
                if let Some(owner) = &finding.owner {
                    properties.insert("owner".into(), format!("{} {}", owner.kind, owner.name));
                    if let Some(top) = &owner.top {
                        properties.insert("workload".into(), format!("{} {}", top.kind, top.name));
                    }
                }
                if let Some(e) = pf.exemption.as_ref().filter(|_| v.exempted) {
                    properties.insert(
                        "exemption".into(),
                        format!("{} {}", e.basis.as_str(), e.reference),
                    );
                    properties.insert("exemptionExpires".into(), e.expires.clone());
                }
                let message = match messages.next() {
                    Some(text) => text.to_string(),
                    // Not written yet (`Auditor::plan` writes them first):
                    // still say what and where rather than nothing.
                    None => format!("{} at {} (policy {})", v.code.as_str(), v.field, pf.policy),
                };
                results.push(ReportResult {
                    policy: pf.policy.to_string(),
                    rule: v.code.as_str().to_string(),
                    result: if v.exempted {
                        ResultKind::Skip
                    } else {
                        ResultKind::Fail
                    },
                    severity: severity(v.code),
                    message: message.clone(),
                    resources: vec![object.clone()],
                    properties,
                });
                if !v.exempted {
                    let event_key = EventKey {
                        object: key.clone(),
                        policy: pf.policy.to_string(),
                        code: v.code,
                    };
                    out.events.entry(event_key).or_insert_with(|| PlannedEvent {
                        regarding: object.clone(),
                        related: finding
                            .owner
                            .as_ref()
                            .and_then(|o| o.top.as_ref())
                            .map(|top| ObjectRef::in_inventory(top, inv)),
                        reason: v.code.as_str().to_string(),
                        note: truncate_note(&message, NOTE_MAX_BYTES),
                        policy: pf.policy.to_string(),
                    });
                }
            }
        }
    }

    for (ns, mut results) in ns_results {
        if results.is_empty() {
            continue;
        }
        results.sort();
        let truncated = results.len().saturating_sub(cfg.max_results_per_report);
        results.truncate(cfg.max_results_per_report);
        out.reports
            .insert(ns.to_string(), PlannedReport { results, truncated });
    }

    // Statuses, and cluster-scoped findings about the policies themselves.
    let mut cluster = Vec::new();
    for (name, policy) in &inv.policies {
        let generation = policy.metadata.generation;
        let valid = inv.snapshot.policies.iter().any(|p| &p.name == name);
        let errors = if valid {
            Vec::new()
        } else {
            match policy::compile(policy, &inv.snapshot.catalogue, now) {
                Ok(_) => vec!["the policy is not loaded yet".to_string()],
                Err(problems) => problems
                    .iter()
                    .map(|p| format!("{}: {}", p.field, p.message))
                    .collect(),
            }
        };
        let status = if !errors.is_empty() {
            let message = errors.join("; ");
            cluster.push(ReportResult {
                policy: name.clone(),
                rule: "InvalidPolicy".into(),
                result: ResultKind::Error,
                severity: "high",
                message: message.clone(),
                resources: vec![ObjectRef {
                    api_version: format!("{}/v1alpha1", crate::api::GROUP),
                    kind: "ResidencyPolicy".into(),
                    namespace: None,
                    name: name.clone(),
                    uid: policy.metadata.uid.clone(),
                }],
                properties: BTreeMap::new(),
            });
            PlannedStatus {
                observed_generation: generation,
                ready: false,
                reason: "InvalidPolicy".into(),
                message: truncate_note(&message, 4096),
                violations: 0,
                top_offenders: Vec::new(),
            }
        } else {
            let tally = tallies.remove(name.as_str()).unwrap_or_default();
            let mut offenders = tally.offenders;
            // Actual placement abroad first, then by kind, namespace, name.
            offenders.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
            let top_offenders = offenders
                .into_iter()
                .take(cfg.max_offenders)
                .map(|(_, k, codes)| Offender {
                    kind: k.kind.as_str().to_string(),
                    namespace: Some(k.namespace),
                    name: k.name,
                    codes,
                })
                .collect();
            PlannedStatus {
                observed_generation: generation,
                ready: true,
                reason: "Evaluated".into(),
                message: format!(
                    "{} governed workloads and pods, {} out of policy (action {})",
                    tally.governed,
                    tally.violated,
                    policy.spec.action.as_str()
                ),
                violations: tally.violated,
                top_offenders,
            }
        };
        out.statuses.insert(name.clone(), status);
    }

    // Nodes abroad that governed pods actually run on.
    for ((node, policy), (pods, region)) in nodes {
        if pods == 0 {
            continue;
        }
        let region = region.unwrap_or_else(|| "unknown".into());
        let message = match cfg.lang {
            Lang::En => format!(
                "node {node} (region {region}) is not in mainland China, yet {pods} pod(s) governed by policy {policy} run on it"
            ),
            Lang::ZhCn => format!(
                "节点 {node}（地域 {region}）不在中国大陆，但有 {pods} 个受策略 {policy} 管辖的 Pod 正在其上运行"
            ),
        };
        cluster.push(ReportResult {
            policy,
            rule: Code::BoundToNodeOutside.as_str().into(),
            result: ResultKind::Fail,
            severity: severity(Code::BoundToNodeOutside),
            message,
            resources: vec![ObjectRef {
                api_version: "v1".into(),
                kind: "Node".into(),
                namespace: None,
                name: node,
                uid: None,
            }],
            properties: BTreeMap::from([
                ("region".to_string(), region),
                ("pods".to_string(), pods.to_string()),
            ]),
        });
    }
    cluster.sort();
    let truncated = cluster.len().saturating_sub(cfg.max_results_per_report);
    cluster.truncate(cfg.max_results_per_report);
    out.cluster_report = PlannedReport {
        results: cluster,
        truncated,
    };
    out
}

fn classes_text(f: &Finding) -> String {
    f.classes
        .iter()
        .map(|c| c.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

fn pass_result(
    key: &WorkloadKey,
    object: &ObjectRef,
    finding: &Finding,
    pf: &super::index::PolicyFinding,
    cfg: &PlanConfig,
) -> ReportResult {
    let message = match cfg.lang {
        Lang::En => format!(
            "{} {}/{} complies with policy {}",
            key.kind, key.namespace, key.name, pf.policy
        ),
        Lang::ZhCn => format!(
            "{} {}/{} 符合策略 {}",
            key.kind, key.namespace, key.name, pf.policy
        ),
    };
    ReportResult {
        policy: pf.policy.to_string(),
        rule: "Compliant".into(),
        result: ResultKind::Pass,
        severity: "info",
        message,
        resources: vec![object.clone()],
        properties: BTreeMap::from([
            ("action".to_string(), pf.action.as_str().to_string()),
            ("classes".to_string(), classes_text(finding)),
        ]),
    }
}

/// The strictest action of the violated policies (for logs).
pub fn strictest(f: &Finding) -> Option<Action> {
    f.policies
        .iter()
        .filter(|p| p.violated())
        .map(|p| p.action)
        .max()
}
