//! Prometheus metrics for admission decisions and the watches behind them.

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DecisionLabels {
    pub endpoint: &'static str,
    pub kind: String,
    /// Deny, Warn, Audit or None.
    pub action: &'static str,
    /// judged, skipped, error, bad_request, too_large.
    pub result: &'static str,
    pub allowed: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointLabels {
    pub endpoint: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    /// connection_limit, handshake_timeout, too_large, inflight_bytes,
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
pub struct PolicyStateLabels {
    /// valid; last_valid (invalid, its last valid version enforced);
    /// strictest (invalid, no valid version seen: its strictest reading).
    pub state: &'static str,
}

pub struct Metrics {
    pub registry: Registry,
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
            "Admission reviews answered, by endpoint, kind, action and result",
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
        Arc::new(Metrics {
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

    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}
