//! The audit controller: re-judges what runs whenever something relevant
//! changes, and (on the elected leader only) writes the results — policy
//! status, Events, reports (OpenReports and/or PolicyReports) — plus
//! metrics on every replica.
//!
//! - `index`: findings per object, `diff` of two inventories into changes,
//!   and `affected_by(change)`: exactly what to re-judge. Pure.
//! - `plan`: findings → the statuses, Events and reports that should exist. Pure.
//! - `writer`: applies a plan through the API, idempotently, rate-limited.
//! - `leader`: leader election on a Lease (the `kube-lease-manager` crate).
//! - this module: the `Auditor` (index + inventory, synchronous) and `run`.

pub mod claims;
pub mod index;
pub mod leader;
pub mod metrics;
pub mod plan;
pub mod writer;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use kube::Client;
use tokio::sync::watch;

use crate::engine::Workload;
use crate::state::{Inventory, State, WorkloadKey};
use index::{Change, FindingsIndex};
use metrics::{AuditMetrics, PassLabels};
use plan::{AuditPlan, PlanConfig};
use writer::{Writer, WriterConfig};

/// The audit's clock (injected so tests control exemption expiry).
pub type Clock = Arc<dyn Fn() -> Timestamp + Send + Sync>;

pub fn system_clock() -> Clock {
    Arc::new(Timestamp::now)
}

#[derive(Clone)]
pub struct AuditConfig {
    pub plan: PlanConfig,
    pub writer: WriterConfig,
    /// A full re-judgement of everything, as a safety net.
    pub full_pass_every: Duration,
    /// Changes arriving within this window are handled together.
    pub debounce: Duration,
    /// The leader plans (and writes) at most this often: under steady churn
    /// a plan is O(findings), so it is paced, not run per change.
    pub plan_every_at_most: Duration,
    pub clock: Clock,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            plan: PlanConfig::default(),
            writer: WriterConfig::default(),
            full_pass_every: Duration::from_secs(10 * 60),
            debounce: Duration::from_millis(200),
            plan_every_at_most: Duration::from_secs(1),
            clock: system_clock(),
        }
    }
}

/// When the leader plans: at once when it has just been elected, else when
/// something moved and the last plan is at least `every` old. The check
/// runs at the top of every loop turn, so a steady stream of changes
/// delays a plan by at most `every`, never forever.
#[derive(Clone, Debug)]
pub struct PlanPacer {
    every: Duration,
    last: Option<Instant>,
}

impl PlanPacer {
    pub fn new(every: Duration) -> PlanPacer {
        PlanPacer { every, last: None }
    }

    /// Plan now? `elected`: leadership was just gained; `moved`: something
    /// a plan reads changed since the last one.
    pub fn due(&self, now: Instant, elected: bool, moved: bool) -> bool {
        elected
            || (moved
                && self
                    .last
                    .is_none_or(|t| now.duration_since(t) >= self.every))
    }

    pub fn planned(&mut self, at: Instant) {
        self.last = Some(at);
    }

    /// How long until a plan for a change made now is due.
    pub fn wait(&self, now: Instant) -> Duration {
        self.last.map_or(Duration::ZERO, |t| {
            self.every.saturating_sub(now.duration_since(t))
        })
    }
}

/// The synchronous core: the findings and the inventory they were judged on.
pub struct Auditor {
    pub index: FindingsIndex,
    inventory: Arc<Inventory>,
    pub plan_config: PlanConfig,
    /// Something a plan reads moved since the last plan: a finding was
    /// re-judged, or the cluster changed beyond workloads. Churn of
    /// unclassified pods (most of a big cluster's) leaves it false.
    unplanned: bool,
}

impl Auditor {
    pub fn new(plan_config: PlanConfig) -> Auditor {
        Auditor {
            index: FindingsIndex::new(),
            inventory: Arc::new(Inventory::default()),
            plan_config,
            unplanned: true,
        }
    }

    /// Has anything a plan reads changed since the last `plan`?
    pub fn needs_plan(&self) -> bool {
        self.unplanned
    }

    pub fn inventory(&self) -> &Arc<Inventory> {
        &self.inventory
    }

    /// Judge everything in `inv` afresh.
    pub fn full_pass(&mut self, inv: Arc<Inventory>, now: Timestamp) {
        self.index.rebuild(&inv, now);
        self.inventory = inv;
        self.unplanned = true;
    }

    /// Move to `inv`, re-judging only what the differences affect.
    /// Returns the changes seen and the objects re-judged.
    pub fn update(
        &mut self,
        inv: Arc<Inventory>,
        now: Timestamp,
    ) -> (Vec<Change>, BTreeSet<WorkloadKey>) {
        let changes = index::diff(&self.inventory, &inv);
        let mut keys = self.affected(&changes, &inv);
        // The workload graph first (a new child is filed under its owner),
        // then what depends on the objects that changed.
        let moved: Vec<(&WorkloadKey, Option<&Workload>, Option<&Workload>)> = changes
            .iter()
            .filter_map(|c| match c {
                Change::Workload(key) => Some((
                    key,
                    self.inventory.workloads.get(key).map(|w| &**w),
                    inv.workloads.get(key).map(|w| &**w),
                )),
                _ => None,
            })
            .collect();
        for (key, old, new) in &moved {
            self.index.refile_owner(key, *old, *new);
        }
        for (key, old, new) in &moved {
            keys.extend(index::dependents_affected(key, *old, *new, &self.index));
        }
        let touched = self.index.rejudge(&keys, &inv, now);
        self.unplanned |= touched > 0 || changes.iter().any(|c| !matches!(c, Change::Workload(_)));
        // Placement fixes name the mainland regions the cluster has ("add a
        // required node affinity on ... In [cn-north-1, ...]"): when that
        // list changes, every message is rewritten, not only those of the
        // objects the node change affects.
        if self.inventory.snapshot.inventory_mainland_regions()
            != inv.snapshot.inventory_mainland_regions()
        {
            self.index.invalidate_messages();
        }
        self.inventory = inv;
        (changes, keys)
    }

    /// Objects affected by `changes`, judged against the new inventory and
    /// the current index (which still holds what they were governed by).
    pub fn affected(&self, changes: &[Change], inv: &Inventory) -> BTreeSet<WorkloadKey> {
        let mut keys = BTreeSet::new();
        for c in changes {
            keys.extend(index::affected_by(c, inv, &self.index));
        }
        keys
    }

    /// The next exemption lapse after `now`.
    pub fn next_lapse(&self, now: Timestamp) -> Option<(Timestamp, Vec<String>)> {
        index::next_lapse(&self.inventory, now)
    }

    /// Re-judge what `policies`' exemptions covered (they lapsed by `now`).
    pub fn lapse(&mut self, policies: &[String], now: Timestamp) -> BTreeSet<WorkloadKey> {
        let changes: Vec<Change> = policies
            .iter()
            .map(|p| Change::ExemptionLapsed { policy: p.clone() })
            .collect();
        let inv = self.inventory.clone();
        let keys = self.affected(&changes, &inv);
        self.index.rejudge(&keys, &inv, now);
        self.unplanned = true;
        keys
    }

    /// Write the messages of the findings re-judged since they were last
    /// written. Returns how many findings got messages.
    pub fn render_messages(&mut self, now: Timestamp) -> usize {
        self.index
            .render_messages(&self.inventory, now, self.plan_config.lang)
    }

    /// Write the messages still to be written, then plan. Only the leader
    /// plans, so followers write no message.
    pub fn plan(&mut self, now: Timestamp) -> AuditPlan {
        self.render_messages(now);
        self.unplanned = false;
        plan::plan(&self.index, &self.inventory, &self.plan_config)
    }
}

/// The running audit controller (see [`spawn`]).
pub struct AuditHandle {
    task: tokio::task::JoinHandle<()>,
    election: leader::Election,
}

impl AuditHandle {
    /// On shutdown: stop the controller (no write after this returns), then
    /// release the Lease so another replica takes over without waiting for
    /// it to expire. Takes at most `within` for the release.
    pub async fn shutdown(self, within: Duration) {
        self.task.abort();
        let _ = self.task.await;
        self.election.step_down(within).await;
    }
}

/// Start the audit controller for `serve`: elects a leader on a Lease in
/// `lease.namespace`, keeps judging on every replica, writes on the leader.
pub fn spawn(
    client: Client,
    state: &State,
    config: AuditConfig,
    lease: leader::LeaseConfig,
    metrics: Arc<AuditMetrics>,
) -> AuditHandle {
    let (leadership, election) = leader::elect(client.clone(), lease);
    let task = tokio::spawn(run(client, state.inventory(), leadership, config, metrics));
    AuditHandle { task, election }
}

/// The controller loop. Returns when the inventory channel closes.
pub async fn run(
    client: Client,
    mut inventory: watch::Receiver<Arc<Inventory>>,
    mut leadership: watch::Receiver<bool>,
    config: AuditConfig,
    metrics: Arc<AuditMetrics>,
) {
    let clock = config.clock.clone();
    // The writer re-checks leadership before every write: a pass started as
    // leader stops writing as soon as leadership is lost.
    let mut writer =
        Writer::new(client, config.writer.clone(), metrics.clone()).gated_by(leadership.clone());
    let mut auditor = Auditor::new(config.plan.clone());

    // Judge nothing before every watch has listed: a partial view would
    // report (and clean up) the wrong things.
    loop {
        if inventory.borrow_and_update().synced {
            break;
        }
        if inventory.changed().await.is_err() {
            return;
        }
    }
    let started = Instant::now();
    let inv = inventory.borrow_and_update().clone();
    auditor.full_pass(inv, clock());
    observe_pass(&metrics, "full", started, auditor.index.len());
    tracing::info!(
        objects = auditor.inventory().workloads.len(),
        findings = auditor.index.len(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "audit: first full pass done"
    );

    let mut full_timer = tokio::time::interval(config.full_pass_every);
    full_timer.tick().await; // the first tick is immediate
    let mut refresh_timer = tokio::time::interval(config.writer.last_evaluated_every);
    refresh_timer.tick().await;
    let mut inventory_open = true;
    let mut leadership_open = true;
    let mut was_leader = false;
    let mut dirty = true;
    let mut retry_soon = false;
    let mut reports_missing = false;
    let mut pacer = PlanPacer::new(config.plan_every_at_most);

    loop {
        // A closed channel (the election is gone) means follower.
        let leader = *leadership.borrow_and_update() && writer::leads(&leadership);
        metrics.leader.set(i64::from(leader));
        if was_leader && !leader {
            tracing::info!("audit: no longer the leader; writes stop");
            writer.step_down();
        }
        if leader && pacer.due(Instant::now(), !was_leader, dirty) {
            pacer.planned(Instant::now());
            dirty = false;
            let now = clock();
            let started = Instant::now();
            let written = auditor.render_messages(now);
            if written > 0 {
                observe_pass(&metrics, "messages", started, written);
            }
            let plan = auditor.plan(now);
            let stats = writer
                .apply(&plan, &auditor.inventory().policies, now)
                .await;
            retry_soon = stats.deferred > 0 || stats.errors > 0;
            reports_missing = stats.reports_missing;
            // What the "audit not planned" alert watches: a leader whose
            // writes keep failing (RBAC, API server) stops moving it.
            if stats.errors == 0 {
                metrics.last_plan.set(now.as_second());
            }
            if stats.writes > 0 {
                tracing::info!(
                    writes = stats.writes,
                    deferred = stats.deferred,
                    errors = stats.errors,
                    "audit: writes applied"
                );
            }
        }
        was_leader = leader;
        // A follower writes nothing; once elected it plans at once.
        if !leader {
            dirty = false;
        }
        // A leader with changes not planned yet plans when the pace allows.
        let plan_in = (leader && dirty).then(|| pacer.wait(Instant::now()));

        let now = clock();
        let lapse = auditor.next_lapse(now);
        let lapse_in = lapse
            .as_ref()
            .map(|(t, _)| Duration::try_from(t.duration_since(now)).unwrap_or(Duration::ZERO))
            .unwrap_or(Duration::from_secs(24 * 3600));
        // Retry failed or deferred writes soon; while the CRDs of a report
        // API in use are missing, look for them again now and then (the
        // writer probes at most every `reports_probe_every`), and plan only
        // once one is found.
        let retry_in = if retry_soon {
            Duration::from_secs(5)
        } else if reports_missing && leader {
            config.writer.reports_probe_every
        } else {
            Duration::from_secs(24 * 3600)
        };
        let retry = retry_soon || (reports_missing && leader);

        tokio::select! {
            r = inventory.changed(), if inventory_open => {
                if r.is_err() {
                    inventory_open = false;
                    continue;
                }
                tokio::time::sleep(config.debounce).await;
                let started = Instant::now();
                let inv = inventory.borrow_and_update().clone();
                let (changes, keys) = auditor.update(inv, clock());
                if !changes.is_empty() {
                    observe_pass(&metrics, "incremental", started, keys.len());
                    tracing::debug!(changes = changes.len(), rejudged = keys.len(), elapsed_us = started.elapsed().as_micros() as u64, "audit: incremental pass");
                }
                dirty |= auditor.needs_plan();
            }
            r = leadership.changed(), if leadership_open => {
                if r.is_err() {
                    leadership_open = false;
                }
            }
            _ = tokio::time::sleep(lapse_in), if lapse.is_some() => {
                let now = clock();
                if let Some((at, policies)) = lapse.filter(|(at, _)| *at <= now) {
                    let started = Instant::now();
                    let keys = auditor.lapse(&policies, now);
                    observe_pass(&metrics, "expiry", started, keys.len());
                    tracing::info!(?policies, lapsed_at = %at, rejudged = keys.len(), "audit: exemptions lapsed");
                    dirty = true;
                }
            }
            _ = full_timer.tick() => {
                // Reports deleted meanwhile are written again this pass.
                writer.recheck_reports();
                let started = Instant::now();
                let inv = auditor.inventory().clone();
                auditor.full_pass(inv, clock());
                observe_pass(&metrics, "full", started, auditor.index.len());
                dirty = true;
            }
            _ = refresh_timer.tick() => {
                dirty = true; // the writer refreshes lastEvaluated when due
            }
            _ = tokio::time::sleep(retry_in), if retry => {
                if retry_soon || writer.probe_reports().await {
                    dirty = true;
                }
            }
            _ = tokio::time::sleep(plan_in.unwrap_or_default()), if plan_in.is_some() => {}
        }
        metrics.observe_findings(&auditor.index);
    }
}

fn observe_pass(metrics: &AuditMetrics, pass: &'static str, started: Instant, objects: usize) {
    let labels = PassLabels { pass };
    metrics
        .evaluation_seconds
        .get_or_create(&labels)
        .observe(started.elapsed().as_secs_f64());
    metrics
        .rejudged_objects
        .get_or_create(&labels)
        .inc_by(objects as u64);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A change every 50 ms for 10 s, with plans at most once a second:
    /// about one plan a second, none starved, none closer than the pace.
    #[test]
    fn steady_changes_are_planned_at_the_pace_and_never_starved() {
        let every = Duration::from_secs(1);
        let mut pacer = PlanPacer::new(every);
        let start = Instant::now();
        let mut plans = Vec::new();
        // The first turn of a new leader plans at once.
        assert!(pacer.due(start, true, false));
        pacer.planned(start);
        plans.push(start);
        for tick in 1..=200u32 {
            let now = start + Duration::from_millis(50) * tick;
            if pacer.due(now, false, true) {
                pacer.planned(now);
                plans.push(now);
            } else {
                assert!(pacer.wait(now) <= every);
            }
        }
        assert!((10..=11).contains(&plans.len()), "{} plans", plans.len());
        for pair in plans.windows(2) {
            assert!(pair[1] - pair[0] >= every);
        }
    }

    #[test]
    fn nothing_moved_nothing_planned_and_a_quiet_change_is_planned_at_once() {
        let mut pacer = PlanPacer::new(Duration::from_secs(1));
        let start = Instant::now();
        assert!(pacer.due(start, false, true), "never planned: due at once");
        pacer.planned(start);
        let later = start + Duration::from_secs(5);
        assert!(!pacer.due(later, false, false));
        assert!(pacer.due(later, false, true));
        assert_eq!(pacer.wait(later), Duration::ZERO);
        assert_eq!(
            pacer.wait(start + Duration::from_millis(300)),
            Duration::from_millis(700)
        );
    }
}
