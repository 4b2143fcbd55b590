//! Applies an `AuditPlan` through the API: only what differs from what was
//! last written (or, after a restart or a leadership change, from what the
//! API holds), within a per-pass write budget. Called on the leader only;
//! when gated by the leadership channel it also checks before every write.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{ObjectReference, PersistentVolumeClaim};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::Client;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch,
    PatchParams, PostParams,
};
use serde_json::{Value, json};
use std::sync::Arc;
use tokio::sync::watch;

use super::metrics::AuditMetrics;
use super::plan::{
    AuditPlan, EventKey, MANAGED_BY, MANAGED_BY_LABEL, ObjectRef, PlannedEvent, PlannedReport,
    PlannedStatus, REPORT_GROUP, REPORT_NAME, REPORT_VERSION,
};
use crate::api::ResidencyPolicy;

#[derive(Clone, Debug)]
pub struct WriterConfig {
    /// events.k8s.io `reportingController`.
    pub reporting_controller: String,
    /// events.k8s.io `reportingInstance` (the pod name).
    pub reporting_instance: String,
    /// Server-side apply field manager for reports.
    pub field_manager: String,
    /// Refresh `status.lastEvaluated` at most this often when nothing else changed.
    pub last_evaluated_every: Duration,
    /// API writes per pass; the rest wait for the next pass.
    pub max_writes_per_pass: usize,
    /// While the PolicyReport CRDs are not installed, look for them again
    /// this often (they may be installed after the operator started).
    pub reports_probe_every: Duration,
    /// List the reports again this often (one LIST per kind), so a report
    /// deleted while its findings persist is written again: the audit's
    /// full-pass period (`--audit-resync-seconds`). The audit loop also
    /// asks for a re-check at every full pass ([`Writer::recheck_reports`]).
    pub reports_recheck_every: Duration,
    /// While a finding persists its Event is refreshed this often, as
    /// Kubernetes event series are (client-go's recorder: 30 minutes): a
    /// PATCH of `series` (count, lastObservedTime), which also renews the
    /// Event's time to live (the API server's `--event-ttl`, 1 h by
    /// default). An Event that expired or was deleted is created again.
    pub event_refresh_every: Duration,
}

impl Default for WriterConfig {
    fn default() -> Self {
        WriterConfig {
            reporting_controller: "residencyguard.io/audit".into(),
            reporting_instance: "residency-guard".into(),
            field_manager: "residency-guard".into(),
            last_evaluated_every: Duration::from_secs(10 * 60),
            max_writes_per_pass: 200,
            reports_probe_every: Duration::from_secs(15),
            reports_recheck_every: Duration::from_secs(10 * 60),
            event_refresh_every: EVENT_REFRESH_EVERY,
        }
    }
}

pub fn policy_report_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(REPORT_GROUP, REPORT_VERSION, "PolicyReport"),
        "policyreports",
    )
}

pub fn cluster_policy_report_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(REPORT_GROUP, REPORT_VERSION, "ClusterPolicyReport"),
        "clusterpolicyreports",
    )
}

#[derive(Clone, Debug, PartialEq)]
struct WrittenStatus {
    status: PlannedStatus,
    last_evaluated: Option<Timestamp>,
    transition: Timestamp,
}

/// How often a persisting finding's Event is refreshed (client-go's event
/// series refresh period).
pub const EVENT_REFRESH_EVERY: Duration = Duration::from_secs(30 * 60);

/// An Event this leader created or found, as a series.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Emitted {
    /// When it was last created or refreshed.
    at: Timestamp,
    /// Occurrences so far (`series.count` once refreshed; starts at 1).
    count: i32,
}

/// What this leader knows exists. `None` content: exists, content unknown.
#[derive(Debug, Default)]
struct Memory {
    statuses: BTreeMap<String, WrittenStatus>,
    events: BTreeMap<EventKey, Emitted>,
    policy_events: BTreeMap<(String, Option<i64>), Emitted>,
    reports: BTreeMap<String, Option<PlannedReport>>,
    cluster_report: Option<Option<PlannedReport>>,
    reports_api: bool,
    /// When the PolicyReport API was last looked for (while it is missing).
    reports_probed: Option<std::time::Instant>,
    /// When the reports were last listed (None: list them on the next pass).
    reports_checked: Option<Timestamp>,
}

/// What one `apply` did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WriteStats {
    pub writes: usize,
    pub deferred: usize,
    pub errors: usize,
    /// The PolicyReport CRDs are not installed: call `apply` again within
    /// `reports_probe_every` so reports start once they are.
    pub reports_missing: bool,
}

pub struct Writer {
    client: Client,
    cfg: WriterConfig,
    metrics: Arc<AuditMetrics>,
    memory: Option<Memory>,
    leadership: Option<watch::Receiver<bool>>,
}

/// A write budget for one pass.
struct Budget {
    left: usize,
    stats: WriteStats,
    /// Writes only while this says `true` (when set).
    leadership: Option<watch::Receiver<bool>>,
    /// Leadership was lost during the pass: no further write.
    lost: bool,
}

impl Budget {
    fn take(&mut self) -> bool {
        if self.lost || self.leadership.as_ref().is_some_and(|l| !leads(l)) {
            self.lost = true;
            false
        } else if self.left == 0 {
            self.stats.deferred += 1;
            false
        } else {
            self.left -= 1;
            self.stats.writes += 1;
            true
        }
    }
}

/// The channel says this replica leads (closed: the election is gone, so no).
pub fn leads(leadership: &watch::Receiver<bool>) -> bool {
    leadership.has_changed().is_ok() && *leadership.borrow()
}

fn is_status(e: &kube::Error, code: u16) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == code)
}

impl Writer {
    pub fn new(client: Client, cfg: WriterConfig, metrics: Arc<AuditMetrics>) -> Writer {
        Writer {
            client,
            cfg,
            metrics,
            memory: None,
            leadership: None,
        }
    }

    /// Write only while `leadership` says this replica leads, checked before
    /// every write (a pass can outlast the leadership it started with).
    pub fn gated_by(mut self, leadership: watch::Receiver<bool>) -> Writer {
        self.leadership = Some(leadership);
        self
    }

    /// Leadership lost: forget what was written (another replica writes now).
    pub fn step_down(&mut self) {
        self.memory = None;
    }

    /// List the reports again on the next pass (the audit loop calls this
    /// at every full pass): one deleted while its findings persist is
    /// written again.
    pub fn recheck_reports(&mut self) {
        if let Some(m) = &mut self.memory {
            m.reports_checked = None;
        }
    }

    /// Bring the API in line with `plan`. `observed` are the policies as the
    /// watch last saw them (their current status seeds what was written).
    pub async fn apply(
        &mut self,
        plan: &AuditPlan,
        observed: &BTreeMap<String, Arc<ResidencyPolicy>>,
        now: Timestamp,
    ) -> WriteStats {
        let mut memory = match self.memory.take() {
            Some(m) => m,
            None => self.seed(now).await,
        };
        let recheck = jiff::SignedDuration::try_from(self.cfg.reports_recheck_every)
            .unwrap_or(jiff::SignedDuration::from_secs(600));
        if memory.reports_api
            && memory
                .reports_checked
                .is_none_or(|t| now.duration_since(t) >= recheck)
        {
            self.recheck_reports_exist(&mut memory, now).await;
        }
        if !memory.reports_api
            && memory
                .reports_probed
                .is_none_or(|t| t.elapsed() >= self.cfg.reports_probe_every)
        {
            self.seed_reports(&mut memory).await;
            if memory.reports_api {
                tracing::info!(
                    "wgpolicyk8s.io/v1alpha2 PolicyReports are installed now; writing reports"
                );
            }
        }
        let mut budget = Budget {
            left: self.cfg.max_writes_per_pass,
            stats: WriteStats::default(),
            leadership: self.leadership.clone(),
            lost: false,
        };
        self.write_statuses(&mut memory, plan, observed, now, &mut budget)
            .await;
        if memory.reports_api {
            self.write_reports(&mut memory, plan, &mut budget).await;
        }
        budget.stats.reports_missing = !memory.reports_api;
        self.write_events(&mut memory, plan, now, &mut budget).await;
        self.write_policy_events(&mut memory, plan, now, &mut budget)
            .await;
        self.write_claim_labels(plan, &mut budget).await;
        self.memory = Some(memory);
        if budget.lost {
            tracing::info!(
                writes = budget.stats.writes,
                "leadership lost during the pass; the remaining writes are left to the new leader"
            );
        }
        if budget.stats.deferred > 0 {
            self.metrics
                .write_skipped_rate_limited
                .inc_by(budget.stats.deferred as u64);
            tracing::info!(
                deferred = budget.stats.deferred,
                "write budget used up; the rest follows in the next pass"
            );
        }
        budget.stats
    }

    /// Find the reports a previous leader left, so stale ones get cleaned up.
    async fn seed(&self, now: Timestamp) -> Memory {
        let mut memory = Memory::default();
        self.seed_reports(&mut memory).await;
        memory.reports_checked = Some(now);
        memory
    }

    /// Which of the reports this leader wrote still exist? One it remembers
    /// that the API no longer has (a tenant deleted it) is forgotten, so the
    /// next write applies it again; one it does not remember is taken as
    /// existing with unknown content (cleaned up or rewritten).
    async fn recheck_reports_exist(&self, memory: &mut Memory, now: Timestamp) {
        let selector = format!("{MANAGED_BY_LABEL}={MANAGED_BY}");
        let lp = ListParams::default().labels(&selector);
        let api: Api<DynamicObject> = Api::all_with(self.client.clone(), &policy_report_resource());
        let listed = match api.list(&lp).await {
            Ok(list) => list,
            Err(e) => {
                // 404: the CRDs are gone; the write finds out and probes.
                tracing::warn!(error = %e, "cannot list PolicyReports to check they still exist; retrying next pass");
                return;
            }
        };
        let existing: BTreeSet<String> = listed
            .items
            .into_iter()
            .filter(|o| o.metadata.name.as_deref() == Some(REPORT_NAME))
            .filter_map(|o| o.metadata.namespace)
            .collect();
        let gone: Vec<String> = memory
            .reports
            .keys()
            .filter(|ns| !existing.contains(*ns))
            .cloned()
            .collect();
        for ns in &gone {
            memory.reports.remove(ns);
        }
        if !gone.is_empty() {
            self.metrics.record("report", "missing");
            tracing::info!(namespaces = ?gone, "PolicyReports deleted by someone else; writing them again while their findings persist");
        }
        for ns in existing {
            memory.reports.entry(ns).or_insert(None);
        }
        let api: Api<DynamicObject> =
            Api::all_with(self.client.clone(), &cluster_policy_report_resource());
        match api.list(&lp).await {
            Ok(list) => {
                let exists = list
                    .items
                    .iter()
                    .any(|o| o.metadata.name.as_deref() == Some(REPORT_NAME));
                if !exists && memory.cluster_report.is_some() {
                    tracing::info!(
                        "the ClusterPolicyReport was deleted by someone else; writing it again while its findings persist"
                    );
                    memory.cluster_report = None;
                } else if exists && memory.cluster_report.is_none() {
                    memory.cluster_report = Some(None);
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot list ClusterPolicyReports to check it still exists");
                return;
            }
        }
        memory.reports_checked = Some(now);
    }

    /// Is the PolicyReport API installed, and which reports exist already?
    async fn seed_reports(&self, memory: &mut Memory) {
        memory.reports_api = true;
        memory.reports_probed = Some(std::time::Instant::now());
        let selector = format!("{MANAGED_BY_LABEL}={MANAGED_BY}");
        let lp = ListParams::default().labels(&selector);
        let api: Api<DynamicObject> = Api::all_with(self.client.clone(), &policy_report_resource());
        match api.list(&lp).await {
            Ok(list) => {
                for obj in list.items {
                    if obj.metadata.name.as_deref() == Some(REPORT_NAME)
                        && let Some(ns) = obj.metadata.namespace
                    {
                        memory.reports.insert(ns, None);
                    }
                }
            }
            Err(e) if is_status(&e, 404) => {
                if memory.reports.is_empty() {
                    tracing::warn!(
                        probe_every_s = self.cfg.reports_probe_every.as_secs(),
                        "wgpolicyk8s.io/v1alpha2 PolicyReports are not installed; reports are not written until they are (install the Policy Reporter CRDs to get them)"
                    );
                }
                memory.reports_api = false;
                memory.reports.clear();
                memory.cluster_report = None;
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot list existing PolicyReports; stale ones may remain until the next leadership change");
            }
        }
        let api: Api<DynamicObject> =
            Api::all_with(self.client.clone(), &cluster_policy_report_resource());
        match api.list(&lp).await {
            Ok(list) => {
                if list
                    .items
                    .iter()
                    .any(|o| o.metadata.name.as_deref() == Some(REPORT_NAME))
                {
                    memory.cluster_report = Some(None);
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot list existing ClusterPolicyReports");
            }
        }
    }

    async fn write_statuses(
        &self,
        memory: &mut Memory,
        plan: &AuditPlan,
        observed: &BTreeMap<String, Arc<ResidencyPolicy>>,
        now: Timestamp,
        budget: &mut Budget,
    ) {
        // Policies that are gone take their status with them.
        memory
            .statuses
            .retain(|name, _| plan.statuses.contains_key(name));
        let api: Api<ResidencyPolicy> = Api::all(self.client.clone());
        let refresh = jiff::SignedDuration::try_from(self.cfg.last_evaluated_every)
            .unwrap_or(jiff::SignedDuration::from_secs(600));
        for (name, desired) in &plan.statuses {
            let prev = memory
                .statuses
                .get(name)
                .cloned()
                .or_else(|| observed.get(name).and_then(|p| written_status_of(p)));
            let stale = |p: &WrittenStatus| {
                p.last_evaluated
                    .is_none_or(|t| now.duration_since(t) >= refresh)
            };
            if let Some(p) = &prev
                && p.status == *desired
                && !stale(p)
            {
                memory.statuses.insert(name.clone(), p.clone());
                continue;
            }
            if !budget.take() {
                continue;
            }
            let transition = match &prev {
                Some(p) if p.status.ready == desired.ready => p.transition,
                _ => now,
            };
            let body = json!({ "status": status_json(desired, now, transition) });
            match api
                .patch_status(name, &PatchParams::default(), &Patch::Merge(&body))
                .await
            {
                Ok(_) => {
                    self.metrics.record("status", "updated");
                    tracing::info!(policy = %name, violations = desired.violations, ready = desired.ready, "policy status written");
                    memory.statuses.insert(
                        name.clone(),
                        WrittenStatus {
                            status: desired.clone(),
                            last_evaluated: Some(now),
                            transition,
                        },
                    );
                }
                Err(e) if is_status(&e, 404) => {
                    self.metrics.record("status", "gone");
                    tracing::debug!(policy = %name, "policy deleted before its status was written");
                }
                Err(e) => {
                    budget.stats.errors += 1;
                    self.metrics.record("status", "error");
                    tracing::warn!(policy = %name, error = %e, "cannot write policy status; retrying next pass");
                }
            }
        }
    }

    async fn write_reports(&self, memory: &mut Memory, plan: &AuditPlan, budget: &mut Budget) {
        let pr = policy_report_resource();
        let pp = PatchParams::apply(&self.cfg.field_manager).force();
        // Cleanup first: namespaces without findings lose their report.
        let stale: Vec<String> = memory
            .reports
            .keys()
            .filter(|ns| !plan.reports.contains_key(*ns))
            .cloned()
            .collect();
        for ns in stale {
            if !budget.take() {
                continue;
            }
            let api: Api<DynamicObject> = Api::namespaced_with(self.client.clone(), &ns, &pr);
            match api.delete(REPORT_NAME, &DeleteParams::default()).await {
                Ok(_) => {
                    self.metrics.record("report", "deleted");
                    tracing::info!(namespace = %ns, "PolicyReport deleted: no findings left");
                    memory.reports.remove(&ns);
                }
                Err(e) if is_status(&e, 404) => {
                    memory.reports.remove(&ns);
                }
                Err(e) => {
                    budget.stats.errors += 1;
                    self.metrics.record("report", "error");
                    tracing::warn!(namespace = %ns, error = %e, "cannot delete PolicyReport");
                }
            }
        }
        for (ns, desired) in &plan.reports {
            if memory.reports.get(ns) == Some(&Some(desired.clone())) {
                continue;
            }
            if !budget.take() {
                continue;
            }
            let api: Api<DynamicObject> = Api::namespaced_with(self.client.clone(), ns, &pr);
            let obj = desired.to_object(Some(ns));
            match api.patch(REPORT_NAME, &pp, &Patch::Apply(&obj)).await {
                Ok(_) => {
                    self.metrics.record("report", "applied");
                    tracing::info!(namespace = %ns, results = desired.results.len(), "PolicyReport applied");
                    memory.reports.insert(ns.clone(), Some(desired.clone()));
                }
                Err(e) if is_status(&e, 404) => {
                    // The CRDs were removed: look for them again later.
                    tracing::warn!(namespace = %ns, "cannot apply PolicyReport: the PolicyReport API is gone");
                    memory.reports_api = false;
                    memory.reports.clear();
                    memory.cluster_report = None;
                    return;
                }
                Err(e) => {
                    budget.stats.errors += 1;
                    self.metrics.record("report", "error");
                    tracing::warn!(namespace = %ns, error = %e, "cannot apply PolicyReport");
                }
            }
        }

        let api: Api<DynamicObject> =
            Api::all_with(self.client.clone(), &cluster_policy_report_resource());
        let desired = &plan.cluster_report;
        if desired.results.is_empty() {
            if memory.cluster_report.is_some() && budget.take() {
                match api.delete(REPORT_NAME, &DeleteParams::default()).await {
                    Ok(_) => {
                        self.metrics.record("cluster_report", "deleted");
                        memory.cluster_report = None;
                    }
                    Err(e) if is_status(&e, 404) => memory.cluster_report = None,
                    Err(e) => {
                        budget.stats.errors += 1;
                        self.metrics.record("cluster_report", "error");
                        tracing::warn!(error = %e, "cannot delete ClusterPolicyReport");
                    }
                }
            }
        } else if memory.cluster_report != Some(Some(desired.clone())) && budget.take() {
            match api
                .patch(REPORT_NAME, &pp, &Patch::Apply(&desired.to_object(None)))
                .await
            {
                Ok(_) => {
                    self.metrics.record("cluster_report", "applied");
                    memory.cluster_report = Some(Some(desired.clone()));
                }
                Err(e) => {
                    budget.stats.errors += 1;
                    self.metrics.record("cluster_report", "error");
                    tracing::warn!(error = %e, "cannot apply ClusterPolicyReport");
                }
            }
        }
    }

    async fn write_events(
        &self,
        memory: &mut Memory,
        plan: &AuditPlan,
        now: Timestamp,
        budget: &mut Budget,
    ) {
        // Findings that went away may be reported again if they come back.
        memory.events.retain(|k, _| plan.events.contains_key(k));
        for (key, planned) in &plan.events {
            let ns = &key.object.namespace;
            let name = event_name(key);
            let emitted = memory.events.get(key).copied();
            let outcome = self.emit(emitted, &name, ns, planned, now, budget).await;
            match outcome {
                Emit::Recorded(e) => {
                    memory.events.insert(key.clone(), e);
                }
                Emit::Nothing => {}
                Emit::Failed(e) => {
                    tracing::warn!(namespace = %ns, object = %key.object.name, error = %e, "cannot create or refresh Event");
                }
            }
        }
    }

    /// Label the claims classified objects mount (`super::claims`). No
    /// memory is kept: once the claim's watch delivers the label, the next
    /// plan no longer lists it, and a repeated merge patch changes nothing.
    async fn write_claim_labels(&self, plan: &AuditPlan, budget: &mut Budget) {
        for label in &plan.claim_labels {
            if !budget.take() {
                return;
            }
            let api: Api<PersistentVolumeClaim> =
                Api::namespaced(self.client.clone(), &label.namespace);
            let patch = json!({"metadata": {
                "labels": {crate::api::DATA_CLASS_LABEL: label.value},
                "annotations": {super::claims::CLASSIFIED_BY_ANNOTATION: label.classified_by},
            }});
            match api
                .patch(&label.claim, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => tracing::info!(
                    namespace = %label.namespace,
                    claim = %label.claim,
                    classes = %label.value,
                    by = %label.classified_by,
                    "labelled a claim a classified workload mounts: its data keeps the class after the workload is gone"
                ),
                // Deleted meanwhile: nothing to keep classified.
                Err(e) if is_status(&e, 404) => {}
                Err(e) => {
                    budget.stats.errors += 1;
                    tracing::warn!(
                        namespace = %label.namespace,
                        claim = %label.claim,
                        error = %e,
                        "cannot label a claim a classified workload mounts (needs patch on persistentvolumeclaims: chart value audit.labelClaims)"
                    );
                }
            }
        }
    }

    /// Events about policies (cluster-scoped objects: their Events live in
    /// the `default` namespace, where `kubectl describe rp` looks).
    async fn write_policy_events(
        &self,
        memory: &mut Memory,
        plan: &AuditPlan,
        now: Timestamp,
        budget: &mut Budget,
    ) {
        memory
            .policy_events
            .retain(|k, _| plan.policy_events.contains_key(k));
        for (key, planned) in &plan.policy_events {
            let name = policy_event_name(&key.0, key.1);
            let emitted = memory.policy_events.get(key).copied();
            match self
                .emit(
                    emitted,
                    &name,
                    POLICY_EVENTS_NAMESPACE,
                    planned,
                    now,
                    budget,
                )
                .await
            {
                Emit::Recorded(e) => {
                    memory.policy_events.insert(key.clone(), e);
                }
                Emit::Nothing => {}
                Emit::Failed(e) => {
                    tracing::warn!(policy = %key.0, error = %e, "cannot create or refresh the policy's Event");
                }
            }
        }
    }

    /// Create the Event `name` unless this leader already has (`emitted`);
    /// once it is `event_refresh_every` old, refresh its series, or create
    /// it again if it expired or was deleted.
    async fn emit(
        &self,
        emitted: Option<Emitted>,
        name: &str,
        namespace: &str,
        planned: &PlannedEvent,
        now: Timestamp,
        budget: &mut Budget,
    ) -> Emit {
        let refresh = jiff::SignedDuration::try_from(self.cfg.event_refresh_every)
            .unwrap_or(jiff::SignedDuration::from_secs(1800));
        if emitted.is_some_and(|e| now.duration_since(e.at) < refresh) || !budget.take() {
            return Emit::Nothing;
        }
        let api: Api<Event> = Api::namespaced(self.client.clone(), namespace);
        if let Some(e) = emitted {
            let count = e.count.saturating_add(1).max(2);
            let body = json!({"series": {"count": count, "lastObservedTime": MicroTime(now)}});
            match api
                .patch(name, &PatchParams::default(), &Patch::Merge(&body))
                .await
            {
                Ok(_) => {
                    self.metrics.record("event", "refreshed");
                    return Emit::Recorded(Emitted { at: now, count });
                }
                // Expired (the API server's --event-ttl) or deleted: create
                // it again below.
                Err(err) if is_status(&err, 404) => {
                    self.metrics.record("event", "expired");
                }
                Err(err) => {
                    budget.stats.errors += 1;
                    self.metrics.record("event", "error");
                    return Emit::Failed(err);
                }
            }
        }
        let event = self.event_at(name.to_string(), namespace, planned, now);
        match api.create(&PostParams::default(), &event).await {
            Ok(_) => {
                self.metrics.record("event", "created");
                Emit::Recorded(Emitted { at: now, count: 1 })
            }
            // Same name: already reported (by us or a previous leader); it
            // is refreshed from now on.
            Err(err) if is_status(&err, 409) => {
                self.metrics.record("event", "exists");
                Emit::Recorded(Emitted { at: now, count: 1 })
            }
            Err(err) => {
                budget.stats.errors += 1;
                self.metrics.record("event", "error");
                Emit::Failed(err)
            }
        }
    }

    fn event_at(
        &self,
        name: String,
        namespace: &str,
        planned: &PlannedEvent,
        now: Timestamp,
    ) -> Event {
        Event {
            metadata: ObjectMeta {
                name: Some(name),
                namespace: Some(namespace.to_string()),
                labels: Some(BTreeMap::from([(
                    MANAGED_BY_LABEL.to_string(),
                    MANAGED_BY.to_string(),
                )])),
                ..ObjectMeta::default()
            },
            event_time: Some(MicroTime(now)),
            action: Some("Audit".into()),
            reason: Some(planned.reason.clone()),
            note: Some(planned.note.clone()),
            type_: Some("Warning".into()),
            reporting_controller: Some(self.cfg.reporting_controller.clone()),
            reporting_instance: Some(self.cfg.reporting_instance.clone()),
            regarding: Some(object_reference(&planned.regarding)),
            related: planned.related.as_ref().map(object_reference),
            ..Event::default()
        }
    }
}

/// What one Event write did.
enum Emit {
    /// Created, found, or refreshed: remember it as of now.
    Recorded(Emitted),
    /// Nothing due (or no budget left).
    Nothing,
    Failed(kube::Error),
}

fn object_reference(r: &ObjectRef) -> ObjectReference {
    ObjectReference {
        api_version: Some(r.api_version.clone()),
        kind: Some(r.kind.clone()),
        namespace: r.namespace.clone(),
        name: Some(r.name.clone()),
        uid: r.uid.clone(),
        ..ObjectReference::default()
    }
}

/// Where Events about cluster-scoped objects (policies) are written.
pub const POLICY_EVENTS_NAMESPACE: &str = "default";

/// A deterministic Event name per invalid policy version: a second create
/// is a 409, so replicas and restarts never duplicate it.
pub fn policy_event_name(policy: &str, generation: Option<i64>) -> String {
    let base: String = policy.chars().take(200).collect();
    format!("{base}.invalid-{}", generation.unwrap_or(0))
}

/// A deterministic Event name per (object, policy, code): a second create
/// of the same finding is a 409, so replicas and restarts never duplicate.
pub fn event_name(key: &EventKey) -> String {
    let text = format!(
        "{}/{}/{}/{}/{}",
        key.object.kind.as_str(),
        key.object.namespace,
        key.object.name,
        key.policy,
        key.code.as_str()
    );
    // FNV-1a, 64 bit: stable across builds and platforms.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    let base: String = key
        .object
        .name
        .trim_end_matches('*')
        .chars()
        .take(200)
        .collect::<String>()
        .to_ascii_lowercase();
    let base = if base.is_empty() {
        "workload".into()
    } else {
        base
    };
    format!("{base}.rg-{h:016x}")
}

/// API times have second precision.
fn seconds(t: Timestamp) -> Timestamp {
    Timestamp::from_second(t.as_second()).unwrap_or(t)
}

fn status_json(s: &PlannedStatus, now: Timestamp, transition: Timestamp) -> Value {
    let (now, transition) = (seconds(now), seconds(transition));
    json!({
        "observedGeneration": s.observed_generation,
        "conditions": [{
            "type": "Ready",
            "status": if s.ready { "True" } else { "False" },
            "reason": s.reason,
            "message": s.message,
            "lastTransitionTime": transition.to_string(),
            "observedGeneration": s.observed_generation,
        }],
        "violations": s.violations,
        "lastEvaluated": now.to_string(),
        "topOffenders": s.top_offenders,
    })
}

/// The status as the API holds it, reduced to what the plan compares.
fn written_status_of(p: &ResidencyPolicy) -> Option<WrittenStatus> {
    let st = p.status.as_ref()?;
    let cond = st.conditions.iter().find(|c| c.type_ == "Ready")?;
    Some(WrittenStatus {
        status: PlannedStatus {
            observed_generation: st.observed_generation,
            ready: cond.status == "True",
            reason: cond.reason.clone(),
            message: cond.message.clone(),
            violations: st.violations.unwrap_or(0),
            top_offenders: st.top_offenders.clone(),
        },
        last_evaluated: st.last_evaluated.as_ref().map(|t| t.0),
        transition: cond.last_transition_time.0,
    })
}
