//! Prometheus metrics of the audit controller.

use std::collections::BTreeMap;
use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use super::index::FindingsIndex;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ViolationLabels {
    pub policy: String,
    pub class: String,
    pub namespace: String,
    pub kind: String,
}

/// One violation code under one policy and data class.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CodeLabels {
    pub policy: String,
    pub class: String,
    /// A stable violation code (`engine::Code`): a closed set.
    pub code: &'static str,
    /// "true" when an exemption covers the violation.
    pub exempted: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PassLabels {
    /// full, incremental, expiry; messages (the leader writing the
    /// messages of re-judged findings before it plans).
    pub pass: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WriteLabels {
    /// status, event, report, cluster_report.
    pub target: &'static str,
    /// created, updated, deleted, unchanged_conflict, error.
    pub outcome: &'static str,
}

#[derive(Clone, Debug)]
pub struct AuditMetrics {
    /// Objects out of policy (exempted excluded), by policy, class, namespace, kind.
    pub violations: Family<ViolationLabels, Gauge>,
    /// Objects with a violation of a code, by policy, class, code and
    /// whether it is exempted (no namespace label: codes times namespaces
    /// would multiply the series).
    pub violation_codes: Family<CodeLabels, Gauge>,
    /// Unix time the leader last planned and applied its writes with no
    /// write failing (0: not yet, or never the leader).
    pub last_plan: Gauge,
    pub evaluation_seconds: Family<PassLabels, Histogram>,
    pub rejudged_objects: Family<PassLabels, Counter>,
    pub writes: Family<WriteLabels, Counter>,
    pub write_skipped_rate_limited: Counter,
    pub leader: Gauge,
    pub findings: Gauge,
}

impl Default for AuditMetrics {
    fn default() -> Self {
        AuditMetrics {
            violations: Family::default(),
            violation_codes: Family::default(),
            last_plan: Gauge::default(),
            evaluation_seconds: Family::new_with_constructor(|| {
                // 100 µs .. ~3.3 s, doubling.
                Histogram::new(exponential_buckets(0.000_1, 2.0, 16))
            }),
            rejudged_objects: Family::default(),
            writes: Family::default(),
            write_skipped_rate_limited: Counter::default(),
            leader: Gauge::default(),
            findings: Gauge::default(),
        }
    }
}

impl AuditMetrics {
    pub fn new() -> Arc<AuditMetrics> {
        Arc::new(AuditMetrics::default())
    }

    /// Register under `registry` (e.g. the admin endpoint's, prefix
    /// `residency_guard`): names are `audit_*`.
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("audit");
        r.register(
            "violations",
            "Objects out of policy (exempted excluded) by policy, data class, namespace and kind",
            self.violations.clone(),
        );
        r.register(
            "violations_by_code",
            "Objects with a violation of a code, by policy, data class, code and whether an exemption covers it",
            self.violation_codes.clone(),
        );
        r.register(
            "last_plan_timestamp_seconds",
            "Unix time this replica, as the audit leader, last planned and applied its writes with none failing (0: not yet, or never the leader)",
            self.last_plan.clone(),
        );
        r.register(
            "evaluation_duration_seconds",
            "Time to re-judge, by pass (full, incremental, expiry), and for the leader to write the messages of re-judged findings (messages)",
            self.evaluation_seconds.clone(),
        );
        r.register(
            "rejudged_objects",
            "Objects re-judged, by pass (messages: findings whose messages the leader wrote)",
            self.rejudged_objects.clone(),
        );
        r.register(
            "writes",
            "API writes by target and outcome",
            self.writes.clone(),
        );
        r.register(
            "writes_deferred",
            "Writes deferred to a later pass by the rate limit",
            self.write_skipped_rate_limited.clone(),
        );
        r.register(
            "leader",
            "1 while this replica holds the audit Lease",
            self.leader.clone(),
        );
        r.register(
            "findings",
            "Objects carrying a data class, as indexed",
            self.findings.clone(),
        );
    }

    pub fn record(&self, target: &'static str, outcome: &'static str) {
        self.writes
            .get_or_create(&WriteLabels { target, outcome })
            .inc();
    }

    /// Recompute the violation gauges from the index.
    pub fn observe_findings(&self, index: &FindingsIndex) {
        let mut counts: BTreeMap<(String, String, String, String), i64> = BTreeMap::new();
        let mut codes: BTreeMap<(&str, &str, &'static str, bool), i64> = BTreeMap::new();
        for (key, f) in index.iter() {
            for p in &f.policies {
                // Each (code, exempted) once per object, however many
                // containers or volumes share it.
                let mut seen: Vec<(&'static str, bool)> = p
                    .violations
                    .iter()
                    .map(|v| (v.code.as_str(), v.exempted))
                    .collect();
                seen.sort_unstable();
                seen.dedup();
                for c in &f.classes {
                    for (code, exempted) in &seen {
                        *codes
                            .entry((&*p.policy, c.as_str(), code, *exempted))
                            .or_default() += 1;
                    }
                }
            }
            for p in f.policies.iter().filter(|p| p.violated()) {
                for c in &f.classes {
                    *counts
                        .entry((
                            p.policy.to_string(),
                            c.as_str().to_string(),
                            key.namespace.clone(),
                            key.kind.as_str().to_string(),
                        ))
                        .or_default() += 1;
                }
            }
        }
        self.violations.clear();
        for ((policy, class, namespace, kind), n) in counts {
            self.violations
                .get_or_create(&ViolationLabels {
                    policy,
                    class,
                    namespace,
                    kind,
                })
                .set(n);
        }
        self.violation_codes.clear();
        for ((policy, class, code, exempted), n) in codes {
            self.violation_codes
                .get_or_create(&CodeLabels {
                    policy: policy.to_string(),
                    class: class.to_string(),
                    code,
                    exempted: if exempted { "true" } else { "false" },
                })
                .set(n);
        }
        self.findings
            .set(i64::try_from(index.len()).unwrap_or(i64::MAX));
    }
}
