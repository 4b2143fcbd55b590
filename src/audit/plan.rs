//! The audit's decision as data: from the findings index and the inventory,
//! the policy statuses, Events and reports that should exist. Pure: no
//! I/O, no clock (time only appears in what the writer adds). A planned
//! report is one set of results rendered in either report format
//! ([`ReportFormat`]): `wgpolicyk8s.io` PolicyReports or `openreports.io`
//! Reports, with the same content.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::index::{Finding, FindingsIndex};
use crate::api::{Action, Offender};
use crate::engine::{Code, Lang, VolumeLocation};
use crate::state::{Inventory, WorkloadKey};

/// `app.kubernetes.io/managed-by` on everything the audit creates.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY: &str = "residency-guard";
/// The reports' `source` (of every result, and of an OpenReports report).
pub const SOURCE: &str = "residency-guard";
/// Name of the report in each namespace, and of the cluster report.
pub const REPORT_NAME: &str = "residency-guard";
/// The PolicyReport API (Kubernetes Policy WG).
pub const REPORT_GROUP: &str = "wgpolicyk8s.io";
pub const REPORT_VERSION: &str = "v1alpha2";
/// The OpenReports API, its successor (Kyverno, Kubewarden, Policy Reporter 3.2+).
pub const OPEN_REPORTS_GROUP: &str = "openreports.io";
pub const OPEN_REPORTS_VERSION: &str = "v1alpha1";

/// The two report APIs a planned report is rendered for. Their results,
/// summary and metadata have the same fields; an OpenReports report also
/// names its `source` at the top.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ReportFormat {
    /// `wgpolicyk8s.io/v1alpha2` PolicyReport and ClusterPolicyReport.
    PolicyReport,
    /// `openreports.io/v1alpha1` Report and ClusterReport.
    OpenReports,
}

impl ReportFormat {
    pub const ALL: [ReportFormat; 2] = [ReportFormat::PolicyReport, ReportFormat::OpenReports];

    pub fn group(self) -> &'static str {
        match self {
            ReportFormat::PolicyReport => REPORT_GROUP,
            ReportFormat::OpenReports => OPEN_REPORTS_GROUP,
        }
    }

    pub fn version(self) -> &'static str {
        match self {
            ReportFormat::PolicyReport => REPORT_VERSION,
            ReportFormat::OpenReports => OPEN_REPORTS_VERSION,
        }
    }

    pub fn api_version(self) -> String {
        format!("{}/{}", self.group(), self.version())
    }

    /// The kind of the namespaced report.
    pub fn kind(self) -> &'static str {
        match self {
            ReportFormat::PolicyReport => "PolicyReport",
            ReportFormat::OpenReports => "Report",
        }
    }

    /// The kind of the cluster-scoped report.
    pub fn cluster_kind(self) -> &'static str {
        match self {
            ReportFormat::PolicyReport => "ClusterPolicyReport",
            ReportFormat::OpenReports => "ClusterReport",
        }
    }

    pub fn plural(self) -> &'static str {
        match self {
            ReportFormat::PolicyReport => "policyreports",
            ReportFormat::OpenReports => "reports",
        }
    }

    pub fn cluster_plural(self) -> &'static str {
        match self {
            ReportFormat::PolicyReport => "clusterpolicyreports",
            ReportFormat::OpenReports => "clusterreports",
        }
    }

    /// `plural.group` of the namespaced report (as RBAC and kubectl name it).
    pub fn resource(self) -> String {
        format!("{}.{}", self.plural(), self.group())
    }
}
/// Events carry at most this much of the engine's message.
pub const NOTE_MAX_BYTES: usize = 1024;

#[derive(Clone, Debug)]
pub struct PlanConfig {
    pub lang: Lang,
    /// Offenders listed in a policy's status.
    pub max_offenders: usize,
    /// Serialised bytes of the results of one report. etcd refuses objects
    /// over ~1.5 MiB (its default request limit), and the apply of a report
    /// that large would fail on every pass; results past this budget are
    /// left out, failures last (see [`fit_report`]).
    pub max_report_bytes: usize,
    /// Label the claims classified objects mount with their classes
    /// (`super::claims`).
    pub label_claims: bool,
}

impl Default for PlanConfig {
    fn default() -> Self {
        PlanConfig {
            lang: Lang::En,
            max_offenders: 10,
            max_report_bytes: 1024 * 1024,
            label_claims: true,
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
            api_version: key.kind.api_version().to_string(),
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

/// One report result: the same fields in both report APIs.
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

impl ReportResult {
    /// The result as it appears in the report object.
    pub fn to_json(&self) -> Value {
        json!({
            "policy": self.policy,
            "rule": self.rule,
            "result": self.result.as_str(),
            "severity": self.severity,
            "category": "Data residency",
            "source": SOURCE,
            "scored": true,
            "message": self.message,
            "resources": self.resources.iter().map(ObjectRef::to_json).collect::<Vec<_>>(),
            "properties": self.properties,
        })
    }

    /// Bytes of [`ReportResult::to_json`] serialised, plus its comma.
    pub fn serialized_len(&self) -> usize {
        let mut counter = ByteCounter(0);
        // Writing to a counter cannot fail; a failure would only undercount.
        let _ = serde_json::to_writer(&mut counter, &self.to_json());
        counter.0 + 1
    }

    /// A cheap bound that is never below [`ReportResult::serialized_len`]:
    /// every string byte escapes to at most 6 bytes (`\u00XX`), and the
    /// keys, fixed values and punctuation take well under 512 bytes.
    fn serialized_len_bound(&self) -> usize {
        let strings = self.policy.len()
            + self.rule.len()
            + self.message.len()
            + self
                .resources
                .iter()
                .map(|r| {
                    r.api_version.len()
                        + r.kind.len()
                        + r.name.len()
                        + r.namespace.as_ref().map_or(0, String::len)
                        + r.uid.as_ref().map_or(0, String::len)
                        + 64
                })
                .sum::<usize>()
            + self
                .properties
                .iter()
                .map(|(k, v)| k.len() + v.len() + 6)
                .sum::<usize>();
        strings.saturating_mul(6).saturating_add(512)
    }

    /// Which results a report keeps when it must leave some out: failures
    /// and errors first, then warnings, exempted violations, and passes;
    /// within each, the most severe first.
    fn keep_rank(&self) -> (u8, u8) {
        let kind = match self.result {
            ResultKind::Fail | ResultKind::Error => 0,
            ResultKind::Warn => 1,
            ResultKind::Skip => 2,
            ResultKind::Pass => 3,
        };
        let severity = match self.severity {
            "critical" => 0,
            "high" => 1,
            "medium" => 2,
            "low" => 3,
            _ => 4,
        };
        (kind, severity)
    }
}

/// An io::Write that only counts.
struct ByteCounter(usize);

impl std::io::Write for ByteCounter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Counts of results by kind (a report's `summary`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    pub pass: u64,
    pub fail: u64,
    pub warn: u64,
    pub error: u64,
    pub skip: u64,
}

impl Summary {
    pub fn of(results: &[ReportResult]) -> Summary {
        let mut s = Summary::default();
        for r in results {
            *match r.result {
                ResultKind::Pass => &mut s.pass,
                ResultKind::Fail => &mut s.fail,
                ResultKind::Warn => &mut s.warn,
                ResultKind::Error => &mut s.error,
                ResultKind::Skip => &mut s.skip,
            } += 1;
        }
        s
    }

    fn to_json(self) -> Value {
        json!({"pass": self.pass, "fail": self.fail, "warn": self.warn, "error": self.error, "skip": self.skip})
    }
}

/// Annotation on a report that had to leave results out: how many.
pub const TRUNCATED_ANNOTATION: &str = "residencyguard.io/results-truncated";
/// The rule of the result that says a report was truncated.
pub const TRUNCATED_RULE: &str = "ReportTruncated";

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PlannedReport {
    /// The results the report shows, in report order.
    pub results: Vec<ReportResult>,
    /// Results left out to keep the object under the byte budget.
    pub truncated: usize,
    /// Counts of every result, those left out included.
    pub summary: Summary,
    /// What was left out, by kind (zero when nothing was).
    pub omitted: Summary,
    /// When results were left out: the `warn` result that says so, shown
    /// last in the report.
    pub notice: Option<ReportResult>,
}

/// Build a report from all its results, in report order: if their
/// serialised size exceeds `max_bytes`, keep the most important ones
/// (failures and errors first, then warnings, exempted violations, passes;
/// most severe first) up to the budget and say how many were left out. The
/// summary counts every result.
pub fn fit_report(results: Vec<ReportResult>, max_bytes: usize, lang: Lang) -> PlannedReport {
    let summary = Summary::of(&results);
    let bound: usize = results
        .iter()
        .map(ReportResult::serialized_len_bound)
        .fold(0, usize::saturating_add);
    if bound <= max_bytes {
        return PlannedReport {
            results,
            truncated: 0,
            summary,
            omitted: Summary::default(),
            notice: None,
        };
    }
    let mut order: Vec<usize> = (0..results.len()).collect();
    // Stable: equal ranks keep report order.
    order.sort_by_key(|&i| results[i].keep_rank());
    let mut keep = vec![false; results.len()];
    let mut used = 0usize;
    for &i in &order {
        let len = results[i].serialized_len();
        // A strict prefix of the ranking: nothing less important is kept
        // in place of something that did not fit.
        if used.saturating_add(len) > max_bytes {
            break;
        }
        used += len;
        keep[i] = true;
    }
    let mut kept = Vec::new();
    let mut dropped = Vec::new();
    for (r, k) in results.into_iter().zip(keep) {
        if k { kept.push(r) } else { dropped.push(r) }
    }
    let mut report = PlannedReport {
        results: kept,
        truncated: dropped.len(),
        summary,
        omitted: Summary::of(&dropped),
        notice: None,
    };
    if report.truncated > 0 {
        report.notice = Some(report.truncation_notice(lang));
    }
    report
}

impl PlannedReport {
    /// The result that says what a truncated report left out.
    fn truncation_notice(&self, lang: Lang) -> ReportResult {
        let o = &self.omitted;
        let (shown, left_out) = (self.results.len(), self.truncated);
        let total = shown + left_out;
        let (fail, error, warn, skip, pass) = (o.fail, o.error, o.warn, o.skip, o.pass);
        let message = match lang {
            Lang::En => format!(
                "this report shows {shown} of {total} results: {left_out} were left out to keep the object under the size etcd accepts ({fail} fail, {error} error, {warn} warn, {skip} skip, {pass} pass left out; failures are kept first). The summary counts all {total}. The policies' status and `residency-guard check` list every finding."
            ),
            Lang::ZhCn => format!(
                "本报告显示 {total} 条结果中的 {shown} 条：为使对象不超过 etcd 可接受的大小，省略了 {left_out} 条（fail {fail}、error {error}、warn {warn}、skip {skip}、pass {pass}；优先保留失败项）。summary 统计全部 {total} 条。策略的 status 和 `residency-guard check` 列出全部发现。"
            ),
        };
        ReportResult {
            policy: SOURCE.into(),
            rule: TRUNCATED_RULE.into(),
            result: ResultKind::Warn,
            severity: "low",
            message,
            resources: Vec::new(),
            properties: BTreeMap::from([
                ("resultsShown".to_string(), self.results.len().to_string()),
                ("resultsTotal".to_string(), total.to_string()),
                ("resultsLeftOut".to_string(), self.truncated.to_string()),
            ]),
        }
    }

    /// The report in `format`: namespaced (namespace Some: a PolicyReport
    /// or Report) or cluster-scoped (None: a ClusterPolicyReport or
    /// ClusterReport). Both formats carry the same results, summary, name,
    /// labels and annotations; neither sets `scope` (a report covers a
    /// whole namespace, and each result names its resource); an OpenReports
    /// report also names its `source`, a field PolicyReports do not have.
    /// A truncated report carries the annotation [`TRUNCATED_ANNOTATION`]
    /// and, last, a `warn` result ([`TRUNCATED_RULE`]) saying what was left
    /// out; the summary counts the real results only, all of them.
    pub fn to_object(&self, format: ReportFormat, namespace: Option<&str>) -> Value {
        let mut results: Vec<Value> = self.results.iter().map(ReportResult::to_json).collect();
        let mut metadata = json!({
            "name": REPORT_NAME,
            "labels": {MANAGED_BY_LABEL: MANAGED_BY},
        });
        if self.truncated > 0 {
            metadata["annotations"] = json!({
                TRUNCATED_ANNOTATION: self.truncated.to_string()
            });
        }
        if let Some(notice) = &self.notice {
            results.push(notice.to_json());
        }
        let summary = self.summary.to_json();
        let kind = match namespace {
            Some(ns) => {
                metadata["namespace"] = json!(ns);
                format.kind()
            }
            None => format.cluster_kind(),
        };
        let mut object = json!({
            "apiVersion": format.api_version(),
            "kind": kind,
            "metadata": metadata,
            "summary": summary,
            "results": results,
        });
        if format == ReportFormat::OpenReports {
            object["source"] = json!(SOURCE);
        }
        object
    }
}

/// Everything the audit wants to exist. What is not here and was written
/// before (a report, a status of a deleted policy) is cleaned up by the writer.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AuditPlan {
    /// Policy name → status.
    pub statuses: BTreeMap<String, PlannedStatus>,
    pub events: BTreeMap<EventKey, PlannedEvent>,
    /// Namespace → its report; namespaces without results are absent.
    pub reports: BTreeMap<String, PlannedReport>,
    /// Cluster-scoped findings; empty means no cluster report.
    pub cluster_report: PlannedReport,
    /// Events about policies themselves (an invalid one), by policy name
    /// and generation: one per version.
    pub policy_events: BTreeMap<(String, Option<i64>), PlannedEvent>,
    /// Claims mounted by classified objects whose label lacks a class
    /// (`super::claims`); empty when `PlanConfig::label_claims` is off.
    pub claim_labels: Vec<super::claims::ClaimLabel>,
}

/// A result's severity, from the policy's action and what the finding
/// proves. The action is the policy author's word on how much a violation
/// matters (Kyverno and Kubewarden likewise take a result's severity from
/// the policy), so Policy Reporter's severity filters and alerts follow it:
/// under `Deny` a finding has its own weight ([`finding_weight`]: data
/// proven abroad `critical`, abroad or unguarded `high`, not guaranteed
/// `medium`), under `Warn` one step less, under `Audit` two steps less,
/// never below `low`. docs/policy-reports.md has the table.
pub fn severity(code: Code, action: Action) -> &'static str {
    const LEVELS: [&str; 4] = ["critical", "high", "medium", "low"];
    let lowered = match action {
        Action::Deny => 0,
        Action::Warn => 1,
        Action::Audit => 2,
    };
    let level = (finding_weight(code) + lowered).min(LEVELS.len() - 1);
    LEVELS[level]
}

/// What a finding proves, as a severity step (0 `critical`, 1 `high`,
/// 2 `medium`): the data is abroad, it can go abroad, or nothing
/// guarantees it stays.
pub fn finding_weight(code: Code) -> usize {
    match code {
        Code::BoundToNodeOutside | Code::VolumeOutsideMainland | Code::StorageEndpointOutside => 0,
        Code::VolumeNotGuaranteed
        | Code::NodeOutsideMainland
        | Code::EgressOutsideMainland
        | Code::EgressExternalForbidden
        | Code::HostNetwork
        // Its pods escape every check: as serious as data that can go abroad.
        | Code::ClassNotOnPodTemplate => 1,
        Code::PlacementNotGuaranteed
        | Code::EgressUnrestricted
        | Code::EgressAllowsAll
        | Code::EgressNotGuaranteed => 2,
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

/// The worst offenders of a policy, for its status: actual placement abroad
/// first, then by kind, namespace, name.
fn top_offenders(tally: PolicyTally, max: usize) -> Vec<Offender> {
    let mut offenders = tally.offenders;
    offenders.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    offenders
        .into_iter()
        .take(max)
        .map(|(_, k, codes)| Offender {
            kind: k.kind.as_str().to_string(),
            namespace: Some(k.namespace),
            name: k.name,
            codes,
        })
        .collect()
}

/// Compute the plan from the findings and the inventory they were judged
/// on (invalid policies come with their problems in the snapshot: nothing
/// is compiled again here). Nothing time-dependent ends up in the plan.
pub fn plan(index: &FindingsIndex, inv: &Inventory, cfg: &PlanConfig) -> AuditPlan {
    let mut tallies: BTreeMap<&str, PolicyTally> = BTreeMap::new();
    let mut out = AuditPlan::default();
    let mut ns_results: BTreeMap<&str, Vec<ReportResult>> = BTreeMap::new();
    // (node, policy) → (pods bound there, region, the policy's action) for
    // the cluster report.
    let mut nodes: BTreeMap<(String, String), (usize, Option<String>, Action)> = BTreeMap::new();

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
            if pf.violations.is_empty() && !finding.is_represented() {
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
                        .or_insert((0, node.region.clone(), pf.action));
                    if !v.exempted {
                        n.0 += 1;
                    }
                }
                if let Some(st) = &v.storage {
                    properties.insert("volume".into(), st.volume.clone());
                    properties.insert("reason".into(), st.reason.to_string());
                    let named = [
                        ("claim", &st.claim),
                        ("persistentVolume", &st.persistent_volume),
                        ("storageClass", &st.storage_class),
                        ("endpoint", &st.endpoint),
                        ("country", &st.country),
                    ];
                    for (k, value) in named {
                        if let Some(value) = value {
                            properties.insert(k.into(), value.clone());
                        }
                    }
                    if let Some(VolumeLocation::Outside { region, .. }) = &st.location {
                        properties.insert("region".into(), region.clone());
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
                    severity: severity(v.code, pf.action),
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
        out.reports.insert(
            ns.to_string(),
            fit_report(results, cfg.max_report_bytes, cfg.lang),
        );
    }

    // Statuses, and cluster-scoped findings about the policies themselves.
    let mut cluster = Vec::new();
    for (name, policy) in inv.policies.iter() {
        let generation = policy.metadata.generation;
        let rejected = inv.snapshot.rejected(name);
        let enforced = inv.snapshot.policies.iter().any(|p| &p.name == name);
        let errors: Vec<String> = match rejected {
            Some(r) => vec![r.summary().get(cfg.lang).to_string()],
            None if !enforced => vec!["the policy is not loaded yet".to_string()],
            None => Vec::new(),
        };
        let status = if !errors.is_empty() {
            let message = errors.join("; ");
            let policy_ref = ObjectRef {
                api_version: format!("{}/v1alpha1", crate::api::GROUP),
                kind: "ResidencyPolicy".into(),
                namespace: None,
                name: name.clone(),
                uid: policy.metadata.uid.clone(),
            };
            if rejected.is_some() {
                out.policy_events.insert(
                    (name.clone(), generation),
                    PlannedEvent {
                        regarding: policy_ref.clone(),
                        related: None,
                        reason: "InvalidPolicy".into(),
                        note: truncate_note(&message, NOTE_MAX_BYTES),
                        policy: name.clone(),
                    },
                );
            }
            // Still enforced (its last valid version or strictest
            // reading): its violations count.
            let tally = tallies.remove(name.as_str()).unwrap_or_default();
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
                violations: tally.violated,
                top_offenders: top_offenders(tally, cfg.max_offenders),
            }
        } else {
            let tally = tallies.remove(name.as_str()).unwrap_or_default();
            let (governed, violated) = (tally.governed, tally.violated);
            let top_offenders = top_offenders(tally, cfg.max_offenders);
            PlannedStatus {
                observed_generation: generation,
                ready: true,
                reason: "Evaluated".into(),
                message: format!(
                    "{governed} governed workloads and pods, {violated} out of policy (action {})",
                    policy.spec.action.as_str()
                ),
                violations: violated,
                top_offenders,
            }
        };
        out.statuses.insert(name.clone(), status);
    }

    // Nodes abroad that governed pods actually run on.
    for ((node, policy), (pods, region, action)) in nodes {
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
            severity: severity(Code::BoundToNodeOutside, action),
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
    out.cluster_report = fit_report(cluster, cfg.max_report_bytes, cfg.lang);
    if cfg.label_claims {
        out.claim_labels = super::claims::claims_to_label(index, inv);
    }
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
