//! Prometheus metrics for admission decisions and the watches behind them.

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Every label value comes from a closed set, whatever a review says
/// (anyone who reaches the webhook port can send one): `kind` is one of
/// [`KNOWN_KINDS`] or `other` ([`kind_label`]), `operation` one of
/// [`OPERATIONS`] or `other` ([`operation_label`]).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DecisionLabels {
    pub endpoint: &'static str,
    pub kind: &'static str,
    /// CREATE, UPDATE, DELETE, CONNECT or other.
    pub operation: &'static str,
    /// Deny, Warn, Audit or None.
    pub action: &'static str,
    /// judged, skipped, error, bad_request, too_large.
    pub result: &'static str,
    pub allowed: &'static str,
}

/// The kinds the webhook's entries send it (the workload kinds,
/// NetworkPolicy, Namespace, ResidencyPolicy, PersistentVolumeClaim): the
/// only `kind` label values
/// besides `other`.
pub const KNOWN_KINDS: [&str; 12] = [
    "Pod",
    "Deployment",
    "ReplicaSet",
    "StatefulSet",
    "DaemonSet",
    "Job",
    "CronJob",
    "ReplicationController",
    "NetworkPolicy",
    "Namespace",
    "ResidencyPolicy",
    "PersistentVolumeClaim",
];

/// The admission operations: the only `operation` label values besides
/// `other`.
pub const OPERATIONS: [&str; 4] = ["CREATE", "UPDATE", "DELETE", "CONNECT"];

/// The `kind` label of a review's `request.kind.kind`: a known kind, or
/// `other` (never the caller's string).
pub fn kind_label(kind: &str) -> &'static str {
    KNOWN_KINDS
        .iter()
        .find(|k| **k == kind)
        .copied()
        .unwrap_or("other")
}

/// The `operation` label of a review's `request.operation`.
pub fn operation_label(operation: &str) -> &'static str {
    OPERATIONS
        .iter()
        .find(|o| **o == operation)
        .copied()
        .unwrap_or("other")
}

/// At most [`LOG_FIELD_BYTES`] of a caller's string for a log field (cut
/// on a character boundary, with how much was left out): a forged review
/// may carry megabytes in its kind, name or user.
pub fn clip(s: &str) -> std::borrow::Cow<'_, str> {
    if s.len() <= LOG_FIELD_BYTES {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut end = LOG_FIELD_BYTES;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    std::borrow::Cow::Owned(format!("{}…(+{} bytes)", &s[..end], s.len() - end))
}

/// The longest caller-supplied string logged whole (a Kubernetes name is at
/// most 253 bytes).
pub const LOG_FIELD_BYTES: usize = 256;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointLabels {
    pub endpoint: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    /// connection_limit, source_connections, source_inflight,
    /// handshake_timeout, client_certificate, too_large, inflight_bytes,
    /// body_timeout, review_timeout, body_error.
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConfirmLabels {
    /// namespace_unknown, not_classified, denial.
    pub reason: &'static str,
    /// upheld (the live read changed nothing), overturned (the answer
    /// changed), error (the read failed; the snapshot's answer stands,
    /// failing closed).
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PurposeLabels {
    /// confirmation (live reads of a namespace), authorisation
    /// (SubjectAccessReviews of a declassification).
    pub purpose: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BudgetLabels {
    /// confirmation, authorisation.
    pub purpose: &'static str,
    /// live (asked of the API server), cached (answered from a reading a
    /// few seconds old), over_budget_global, over_budget_namespace (not
    /// asked: the snapshot's answer stands, or the declassification is
    /// refused retryably), implausible (a namespace name the API server
    /// could not hold: not asked).
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PolicyStateLabels {
    /// valid; last_valid (invalid, its last valid version enforced);
    /// strictest (invalid, no valid version seen: its strictest reading).
    pub state: &'static str,
}

/// One exemption: its policy, its position in `spec.exemptions` and its
/// reference (policies are cluster-scoped and written by their owners; at
/// most 128 exemptions each).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ExemptionLabels {
    pub policy: String,
    pub index: String,
    pub reference: String,
}

pub struct Metrics {
    pub registry: Registry,
    /// 1 while `/readyz` would answer ready (set at scrape time).
    pub ready: Gauge,
    /// When each enforced exemption lapses (set at scrape time).
    pub exemption_expiry: Family<ExemptionLabels, Gauge>,
    pub policies: Family<PolicyStateLabels, Gauge>,
    pub live_confirmations: Family<ConfirmLabels, Counter>,
    pub declassifications: Family<OutcomeLabels, Counter>,
    pub decisions: Family<DecisionLabels, Counter>,
    pub latency: Family<EndpointLabels, Histogram>,
    pub cert_reloads: Family<OutcomeLabels, Counter>,
    /// Webhook connections open (TLS handshake included).
    pub connections: Gauge,
    /// Connections and requests the listener turned away, by reason.
    pub refused: Family<ReasonLabels, Counter>,
    /// API requests made because of reviews (the budget's N bounds them).
    pub review_api_requests: Family<PurposeLabels, Counter>,
    /// What the budget decided for each live read or authorisation.
    pub review_api_budget: Family<BudgetLabels, Counter>,
}

impl Metrics {
    pub fn new() -> Arc<Metrics> {
        Metrics::new_with(|_| {})
    }

    /// Build the registry, letting other components (the watches, the
    /// audit controller) register their own metrics under the same prefix.
    pub fn new_with(extra: impl FnOnce(&mut Registry)) -> Arc<Metrics> {
        let mut registry = Registry::with_prefix("residency_guard");
        extra(&mut registry);
        let decisions = Family::<DecisionLabels, Counter>::default();
        registry.register(
            "admission_decisions",
            "Admission reviews answered, by endpoint, kind (a known kind or other), operation, action and result",
            decisions.clone(),
        );
        let latency = Family::<EndpointLabels, Histogram>::new_with_constructor(|| {
            // 50 µs .. ~1.6 s, doubling.
            Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
                0.000_05, 2.0, 16,
            ))
        });
        registry.register(
            "admission_duration_seconds",
            "Time to decode, judge and encode one admission review",
            latency.clone(),
        );
        let ready = Gauge::default();
        registry.register(
            "ready",
            "1 while this replica is ready to judge reviews (what /readyz answers), 0 otherwise",
            ready.clone(),
        );
        let exemption_expiry = Family::<ExemptionLabels, Gauge>::default();
        registry.register(
            "exemption_expiry_timestamp_seconds",
            "Unix time each exemption of an enforced policy lapses (the end of its expires day, China Standard Time), by policy, index in spec.exemptions and reference",
            exemption_expiry.clone(),
        );
        let policies = Family::<PolicyStateLabels, Gauge>::default();
        registry.register(
            "policies",
            "ResidencyPolicies enforced, by state: valid, last_valid (invalid; its last valid version is enforced), strictest (invalid; its strictest reading is enforced)",
            policies.clone(),
        );
        let live_confirmations = Family::<ConfirmLabels, Counter>::default();
        registry.register(
            "live_confirmations",
            "Admission answers that rested on namespace facts the snapshot might not have yet, confirmed against the API server, by reason and outcome",
            live_confirmations.clone(),
        );
        let declassifications = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "declassifications",
            "UPDATEs that remove data classes, by outcome (allowed, refused, error)",
            declassifications.clone(),
        );
        let cert_reloads = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "certificate_reloads",
            "Serving certificate reloads by outcome",
            cert_reloads.clone(),
        );
        let connections = Gauge::default();
        registry.register(
            "webhook_connections",
            "Webhook connections open, TLS handshakes included",
            connections.clone(),
        );
        let refused = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "webhook_refused",
            "Webhook connections closed and requests refused by the listener's limits, by reason",
            refused.clone(),
        );
        let review_api_requests = Family::<PurposeLabels, Counter>::default();
        registry.register(
            "review_api_requests",
            "Requests sent to the API server because of admission reviews (live confirmations, SubjectAccessReviews), by purpose",
            review_api_requests.clone(),
        );
        let review_api_budget = Family::<BudgetLabels, Counter>::default();
        registry.register(
            "review_api_budget",
            "Live reads and authorisations reviews asked for, by purpose and what the rate limit decided (live, cached, over_budget_global, over_budget_namespace, implausible)",
            review_api_budget.clone(),
        );
        Arc::new(Metrics {
            ready,
            exemption_expiry,
            review_api_requests,
            review_api_budget,
            registry,
            policies,
            live_confirmations,
            declassifications,
            decisions,
            latency,
            cert_reloads,
            connections,
            refused,
        })
    }

    pub fn budget(&self, purpose: &'static str, outcome: &'static str) {
        self.review_api_budget
            .get_or_create(&BudgetLabels { purpose, outcome })
            .inc();
    }

    pub fn api_requests(&self, purpose: &'static str, n: u64) {
        self.review_api_requests
            .get_or_create(&PurposeLabels { purpose })
            .inc_by(n);
    }

    /// Count a connection or request turned away by the listener.
    pub fn refuse(&self, reason: &'static str) {
        self.refused.get_or_create(&ReasonLabels { reason }).inc();
    }

    /// Copy the policy states of `snapshot` into the gauge (at scrape time).
    pub fn observe_policies(&self, snapshot: &crate::engine::Snapshot) {
        use crate::engine::Enforcement;
        let last_valid = snapshot
            .rejected
            .iter()
            .filter(|r| matches!(r.enforced, Enforcement::LastValid { .. }))
            .count();
        let strictest = snapshot.rejected.len() - last_valid;
        let valid = snapshot
            .policies
            .len()
            .saturating_sub(snapshot.rejected.len());
        for (state, n) in [
            ("valid", valid),
            ("last_valid", last_valid),
            ("strictest", strictest),
        ] {
            self.policies
                .get_or_create(&PolicyStateLabels { state })
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
    }

    /// Copy the exemptions of the enforced policies into the gauge (at
    /// scrape time; lapsed ones stay until their policy drops them).
    pub fn observe_exemptions(&self, snapshot: &crate::engine::Snapshot) {
        self.exemption_expiry.clear();
        for policy in snapshot.policies.iter() {
            for e in &policy.exemptions {
                self.exemption_expiry
                    .get_or_create(&ExemptionLabels {
                        policy: policy.name.to_string(),
                        index: e.index.to_string(),
                        reference: e.reference.clone(),
                    })
                    .set(e.lapses_at.as_second());
            }
        }
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_come_from_closed_sets() {
        assert_eq!(kind_label("Deployment"), "Deployment");
        assert_eq!(kind_label("NetworkPolicy"), "NetworkPolicy");
        assert_eq!(kind_label("deployment"), "other");
        assert_eq!(kind_label(&"x".repeat(1 << 20)), "other");
        assert_eq!(operation_label("UPDATE"), "UPDATE");
        assert_eq!(operation_label("PATCH"), "other");
    }

    #[test]
    fn clip_bounds_log_fields_on_char_boundaries() {
        assert_eq!(clip("payments"), "payments");
        let long = "数".repeat(1000); // 3 bytes each
        let c = clip(&long);
        assert!(c.len() < LOG_FIELD_BYTES + 32, "{}", c.len());
        assert!(c.ends_with("…(+2745 bytes)"), "{c}");
    }
}
