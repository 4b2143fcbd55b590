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
    PlannedStatus, REPORT_NAME, ReportFormat,
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
    /// Which report APIs to write (`--reports-kind`).
    pub reports_kind: ReportsKind,
    /// While the CRDs of a report API in use are not installed, look for
    /// them again this often (they may be installed after the operator
    /// started).
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
            reports_kind: ReportsKind::default(),
            reports_probe_every: crate::probe::MISSING_API_PROBE_EVERY,
            reports_recheck_every: Duration::from_secs(10 * 60),
            event_refresh_every: EVENT_REFRESH_EVERY,
        }
    }
}

/// Which report APIs the audit writes: `--reports-kind`
/// (`RESIDENCY_GUARD_REPORTS_KIND`), the chart's `reports.kind`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum ReportsKind {
    /// Each API the API server serves: both when both CRD sets are
    /// installed, none while neither is. One that is missing (or vanishes)
    /// is looked for again every 15 seconds.
    #[default]
    #[value(name = "auto")]
    Auto,
    /// `wgpolicyk8s.io/v1alpha2` PolicyReports only.
    #[value(name = "policyReport")]
    PolicyReport,
    /// `openreports.io/v1alpha1` Reports only.
    #[value(name = "openReports")]
    OpenReports,
    /// Both APIs; one whose CRDs are missing is looked for again as in
    /// `auto`, with a warning.
    #[value(name = "both")]
    Both,
}

impl ReportsKind {
    /// The report APIs this setting may write.
    pub fn formats(self) -> &'static [ReportFormat] {
        match self {
            ReportsKind::Auto | ReportsKind::Both => &ReportFormat::ALL,
            ReportsKind::PolicyReport => &[ReportFormat::PolicyReport],
            ReportsKind::OpenReports => &[ReportFormat::OpenReports],
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ReportsKind::Auto => "auto",
            ReportsKind::PolicyReport => "policyReport",
            ReportsKind::OpenReports => "openReports",
            ReportsKind::Both => "both",
        }
    }
}

/// The namespaced report resource of `format` (PolicyReport or Report).
pub fn report_resource(format: ReportFormat) -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(format.group(), format.version(), format.kind()),
        format.plural(),
    )
}

/// The cluster-scoped report resource of `format`.
pub fn cluster_report_resource(format: ReportFormat) -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(format.group(), format.version(), format.cluster_kind()),
        format.cluster_plural(),
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
    /// One entry per report API in use (`ReportsKind::formats`).
    reports: BTreeMap<ReportFormat, ReportsMemory>,
}

/// The reports written during one pass, by namespace (None: the cluster
/// report): the second API's memory shares the first's copy.
type SharedReports = BTreeMap<Option<String>, Arc<PlannedReport>>;

/// What this leader knows of the reports of one API.
#[derive(Debug, Default)]
struct ReportsMemory {
    /// Namespace → its report. Shared with the other API's memory when
    /// both hold the same content (one copy, not one per API).
    reports: BTreeMap<String, Option<Arc<PlannedReport>>>,
    cluster_report: Option<Option<Arc<PlannedReport>>>,
    /// The API server serves the API (its CRDs are installed).
    served: bool,
    /// When the API was last looked for (never, this leadership: due).
    probe: crate::probe::Probe,
    /// When the reports were last listed (None: list them on the next pass).
    checked: Option<Timestamp>,
}

impl ReportsMemory {
    /// The API is gone (or was never there): nothing of it exists.
    fn unserved(&mut self) {
        self.served = false;
        self.reports.clear();
        self.cluster_report = None;
    }
}

/// What one `apply` did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WriteStats {
    pub writes: usize,
    pub deferred: usize,
    pub errors: usize,
    /// The CRDs of a report API in use are not installed: call
    /// [`Writer::probe_reports`] (or `apply`) again within
    /// `reports_probe_every` so its reports start once they are.
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
            for g in m.reports.values_mut() {
                g.checked = None;
            }
        }
    }

    /// Look for the report APIs in use that were not served, if their probe
    /// is due. True when one is served now (the caller plans and applies,
    /// so its reports are written). Cheaper than a whole `apply` while an
    /// API stays missing (with `auto` and one API installed, for ever).
    pub async fn probe_reports(&mut self) -> bool {
        let Some(mut memory) = self.memory.take() else {
            // Nothing seeded yet: the next `apply` looks for everything.
            return true;
        };
        let found = self.probe_missing(&mut memory).await;
        self.memory = Some(memory);
        found
    }

    /// Probe each missing API whose probe is due; true when one appeared.
    async fn probe_missing(&self, memory: &mut Memory) -> bool {
        let mut found = false;
        for (format, g) in memory.reports.iter_mut() {
            if !g.served && g.probe.is_due(self.cfg.reports_probe_every) {
                self.seed_reports(*format, g).await;
                if g.served {
                    tracing::info!(
                        api = %format.api_version(),
                        kind = format.kind(),
                        "the report API is installed now; writing its reports"
                    );
                    found = true;
                }
            }
        }
        found
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
        for (format, g) in memory.reports.iter_mut() {
            if g.served && g.checked.is_none_or(|t| now.duration_since(t) >= recheck) {
                self.recheck_reports_exist(*format, g, now).await;
            }
        }
        self.probe_missing(&mut memory).await;
        let mut budget = Budget {
            left: self.cfg.max_writes_per_pass,
            stats: WriteStats::default(),
            leadership: self.leadership.clone(),
            lost: false,
        };
        self.write_statuses(&mut memory, plan, observed, now, &mut budget)
            .await;
        let mut shared = SharedReports::new();
        for (format, g) in memory.reports.iter_mut() {
            if g.served {
                self.write_reports(*format, g, plan, &mut shared, &mut budget)
                    .await;
            }
        }
        budget.stats.reports_missing = memory.reports.values().any(|g| !g.served);
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
        for format in self.cfg.reports_kind.formats() {
            let mut g = ReportsMemory::default();
            self.seed_reports(*format, &mut g).await;
            g.checked = Some(now);
            memory.reports.insert(*format, g);
        }
        let served: Vec<String> = memory
            .reports
            .iter()
            .filter(|(_, g)| g.served)
            .map(|(f, _)| f.api_version())
            .collect();
        if self.cfg.reports_kind == ReportsKind::Auto && served.is_empty() {
            tracing::warn!(
                probe_every_s = self.cfg.reports_probe_every.as_secs(),
                "neither report API is installed (wgpolicyk8s.io PolicyReports, openreports.io Reports): reports are not written until one is; install Policy Reporter's CRDs, or the OpenReports CRDs"
            );
        } else {
            tracing::info!(kind = self.cfg.reports_kind.as_str(), apis = ?served, "writing reports to these APIs");
        }
        memory
    }

    /// Which of the reports this leader wrote still exist? One it remembers
    /// that the API no longer has (a tenant deleted it) is forgotten, so the
    /// next write applies it again; one it does not remember is taken as
    /// existing with unknown content (cleaned up or rewritten).
    async fn recheck_reports_exist(
        &self,
        format: ReportFormat,
        g: &mut ReportsMemory,
        now: Timestamp,
    ) {
        let selector = format!("{MANAGED_BY_LABEL}={MANAGED_BY}");
        let lp = ListParams::default().labels(&selector);
        let api: Api<DynamicObject> = Api::all_with(self.client.clone(), &report_resource(format));
        let listed = match api.list(&lp).await {
            Ok(list) => list,
            Err(e) if is_status(&e, 404) => {
                tracing::warn!(api = %format.api_version(), kind = format.kind(), "the report API is gone (its CRDs were deleted, and their reports with them); looking for it again");
                g.unserved();
                return;
            }
            Err(e) => {
                tracing::warn!(api = %format.api_version(), kind = format.kind(), error = %e, "cannot list reports to check they still exist; retrying next pass");
                return;
            }
        };
        let existing: BTreeSet<String> = listed
            .items
            .into_iter()
            .filter(|o| o.metadata.name.as_deref() == Some(REPORT_NAME))
            .filter_map(|o| o.metadata.namespace)
            .collect();
        let gone: Vec<String> = g
            .reports
            .keys()
            .filter(|ns| !existing.contains(*ns))
            .cloned()
            .collect();
        for ns in &gone {
            g.reports.remove(ns);
        }
        if !gone.is_empty() {
            self.metrics.record("report", "missing");
            tracing::info!(kind = format.kind(), namespaces = ?gone, "reports deleted by someone else; writing them again while their findings persist");
        }
        for ns in existing {
            g.reports.entry(ns).or_insert(None);
        }
        let api: Api<DynamicObject> =
            Api::all_with(self.client.clone(), &cluster_report_resource(format));
        match api.list(&lp).await {
            Ok(list) => {
                let exists = list
                    .items
                    .iter()
                    .any(|o| o.metadata.name.as_deref() == Some(REPORT_NAME));
                if !exists && g.cluster_report.is_some() {
                    tracing::info!(
                        kind = format.cluster_kind(),
                        "the cluster report was deleted by someone else; writing it again while its findings persist"
                    );
                    g.cluster_report = None;
                } else if exists && g.cluster_report.is_none() {
                    g.cluster_report = Some(None);
                }
            }
            Err(e) => {
                tracing::warn!(kind = format.cluster_kind(), error = %e, "cannot list the cluster reports to check ours still exists");
                return;
            }
        }
        g.checked = Some(now);
    }

    /// Is the report API of `format` served, and which of our reports exist
    /// already? The first time it is missing (per leadership) the log says
    /// so: a warning when the setting asks for this API, information under
    /// `auto`.
    async fn seed_reports(&self, format: ReportFormat, g: &mut ReportsMemory) {
        let first_look = g.probe.looked();
        g.served = true;
        let selector = format!("{MANAGED_BY_LABEL}={MANAGED_BY}");
        let lp = ListParams::default().labels(&selector);
        let api: Api<DynamicObject> = Api::all_with(self.client.clone(), &report_resource(format));
        match api.list(&lp).await {
            Ok(list) => {
                for obj in list.items {
                    if obj.metadata.name.as_deref() == Some(REPORT_NAME)
                        && let Some(ns) = obj.metadata.namespace
                    {
                        g.reports.insert(ns, None);
                    }
                }
            }
            Err(e) if is_status(&e, 404) => {
                if first_look {
                    let probe_every_s = self.cfg.reports_probe_every.as_secs();
                    let (api, kind) = (format.api_version(), format.kind());
                    if self.cfg.reports_kind == ReportsKind::Auto {
                        tracing::info!(%api, kind, probe_every_s, "this report API is not installed; its reports are written once it is");
                    } else {
                        tracing::warn!(%api, kind, probe_every_s, reports_kind = self.cfg.reports_kind.as_str(), "this report API is not installed; its reports are not written until it is (install its CRDs)");
                    }
                }
                g.unserved();
                return;
            }
            // Installed, but this ServiceAccount may not use it (RBAC made by
            // hand, or a chart whose reports.kind excludes it): every write
            // would be refused too. Looked for again like a missing API.
            Err(e) if is_status(&e, 403) => {
                if first_look {
                    tracing::warn!(api = %format.api_version(), kind = format.kind(), reports_kind = self.cfg.reports_kind.as_str(), error = %e, "the operator may not list this report API's reports; its reports are not written (grant list, and create/patch/delete on the name residency-guard, as the chart does for the APIs reports.kind selects)");
                }
                g.unserved();
                return;
            }
            Err(e) => {
                tracing::warn!(api = %format.api_version(), kind = format.kind(), error = %e, "cannot list existing reports; stale ones may remain until the next leadership change");
            }
        }
        let api: Api<DynamicObject> =
            Api::all_with(self.client.clone(), &cluster_report_resource(format));
        match api.list(&lp).await {
            Ok(list) => {
                if list
                    .items
                    .iter()
                    .any(|o| o.metadata.name.as_deref() == Some(REPORT_NAME))
                {
                    g.cluster_report = Some(None);
                }
            }
            Err(e) => {
                tracing::warn!(kind = format.cluster_kind(), error = %e, "cannot list existing cluster reports");
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

    async fn write_reports(
        &self,
        format: ReportFormat,
        g: &mut ReportsMemory,
        plan: &AuditPlan,
        shared: &mut SharedReports,
        budget: &mut Budget,
    ) {
        let resource = report_resource(format);
        let kind = format.kind();
        let pp = PatchParams::apply(&self.cfg.field_manager).force();
        // Cleanup first: namespaces without findings lose their report.
        let stale: Vec<String> = g
            .reports
            .keys()
            .filter(|ns| !plan.reports.contains_key(*ns))
            .cloned()
            .collect();
        for ns in stale {
            if !budget.take() {
                continue;
            }
            let api: Api<DynamicObject> = Api::namespaced_with(self.client.clone(), &ns, &resource);
            match api.delete(REPORT_NAME, &DeleteParams::default()).await {
                Ok(_) => {
                    self.metrics.record("report", "deleted");
                    tracing::info!(namespace = %ns, kind, "report deleted: no findings left");
                    g.reports.remove(&ns);
                }
                Err(e) if is_status(&e, 404) => {
                    g.reports.remove(&ns);
                }
                Err(e) => {
                    budget.stats.errors += 1;
                    self.metrics.record("report", "error");
                    tracing::warn!(namespace = %ns, kind, error = %e, "cannot delete report");
                }
            }
        }
        for (ns, desired) in &plan.reports {
            if let Some(Some(written)) = g.reports.get(ns)
                && **written == *desired
            {
                // Unchanged: the other API's memory may share this copy.
                shared
                    .entry(Some(ns.clone()))
                    .or_insert_with(|| written.clone());
                continue;
            }
            if !budget.take() {
                continue;
            }
            let api: Api<DynamicObject> = Api::namespaced_with(self.client.clone(), ns, &resource);
            let obj = desired.to_object(format, Some(ns));
            match api.patch(REPORT_NAME, &pp, &Patch::Apply(&obj)).await {
                Ok(_) => {
                    self.metrics.record("report", "applied");
                    tracing::info!(namespace = %ns, kind, results = desired.results.len(), "report applied");
                    let written = shared
                        .entry(Some(ns.clone()))
                        .or_insert_with(|| Arc::new(desired.clone()));
                    g.reports.insert(ns.clone(), Some(written.clone()));
                }
                Err(e) if is_status(&e, 404) => {
                    // The CRDs were removed: look for them again later.
                    tracing::warn!(namespace = %ns, api = %format.api_version(), kind, "cannot apply report: the report API is gone; looking for it again");
                    g.unserved();
                    return;
                }
                Err(e) => {
                    budget.stats.errors += 1;
                    self.metrics.record("report", "error");
                    tracing::warn!(namespace = %ns, kind, error = %e, "cannot apply report");
                }
            }
        }

        let cluster_kind = format.cluster_kind();
        let api: Api<DynamicObject> =
            Api::all_with(self.client.clone(), &cluster_report_resource(format));
        let desired = &plan.cluster_report;
        if desired.results.is_empty() {
            if g.cluster_report.is_some() && budget.take() {
                match api.delete(REPORT_NAME, &DeleteParams::default()).await {
                    Ok(_) => {
                        self.metrics.record("cluster_report", "deleted");
                        g.cluster_report = None;
                    }
                    Err(e) if is_status(&e, 404) => g.cluster_report = None,
                    Err(e) => {
                        budget.stats.errors += 1;
                        self.metrics.record("cluster_report", "error");
                        tracing::warn!(kind = cluster_kind, error = %e, "cannot delete the cluster report");
                    }
                }
            }
        } else if let Some(Some(written)) = &g.cluster_report
            && **written == *desired
        {
            shared.entry(None).or_insert_with(|| written.clone());
        } else if budget.take() {
            match api
                .patch(
                    REPORT_NAME,
                    &pp,
                    &Patch::Apply(&desired.to_object(format, None)),
                )
                .await
            {
                Ok(_) => {
                    self.metrics.record("cluster_report", "applied");
                    let written = shared
                        .entry(None)
                        .or_insert_with(|| Arc::new(desired.clone()));
                    g.cluster_report = Some(Some(written.clone()));
                }
                Err(e) if is_status(&e, 404) => {
                    tracing::warn!(api = %format.api_version(), kind = cluster_kind, "cannot apply the cluster report: the report API is gone; looking for it again");
                    g.unserved();
                }
                Err(e) => {
                    budget.stats.errors += 1;
                    self.metrics.record("cluster_report", "error");
                    tracing::warn!(kind = cluster_kind, error = %e, "cannot apply the cluster report");
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
