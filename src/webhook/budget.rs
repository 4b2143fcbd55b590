//! What reviews may make the operator ask the API server. Anyone who can
//! reach the webhook port can send a review, so the live reads a review
//! triggers (a denial's confirmation: LISTs of the namespace, its
//! NetworkPolicies, its storage) and the SubjectAccessReviews of a
//! declassification are drawn from token buckets: one global, one per
//! namespace. A request is made only while both have a token; its cost (the
//! API requests it made) is charged to both, so a bucket may go into debt
//! that later reviews pay back. Over any window of T seconds the operator
//! therefore sends at most `burst + rate × T` (plus the extra PV lookups of
//! one storage read) such requests: `rate` is the N named in
//! docs/operator-contract.md.
//!
//! Answers are kept for a few seconds: a confirmation over budget uses a
//! reading of the same namespace that recent (instead of none), and an
//! authorisation is answered from the cache before a token is spent (as
//! the API server's own webhook authorizer caches).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::api::DataClass;
use crate::engine::NamespaceFacts;

/// The budget's settings (`--api-requests-per-second`,
/// `--api-requests-per-namespace-per-second`).
#[derive(Clone, Debug, PartialEq)]
pub struct BudgetLimits {
    /// Requests per second, all namespaces together (N).
    pub rate: f64,
    pub burst: f64,
    /// Requests per second for one namespace.
    pub namespace_rate: f64,
    pub namespace_burst: f64,
    /// How long an answer is kept.
    pub cache_for: Duration,
    /// Namespaces (and cached answers) tracked at once: a forged review
    /// names any namespace it likes.
    pub max_entries: usize,
}

impl Default for BudgetLimits {
    fn default() -> Self {
        BudgetLimits::new(20.0, 4.0)
    }
}

impl BudgetLimits {
    /// `rate` requests/s in all (burst: twice that), `namespace_rate` per
    /// namespace (burst: five times that, at least 5).
    pub fn new(rate: f64, namespace_rate: f64) -> BudgetLimits {
        let rate = rate.max(0.1);
        let namespace_rate = namespace_rate.max(0.1).min(rate);
        BudgetLimits {
            rate,
            burst: (2.0 * rate).max(1.0),
            namespace_rate,
            namespace_burst: (5.0 * namespace_rate).clamp(5.0, (2.0 * rate).max(5.0)),
            cache_for: Duration::from_secs(3),
            max_entries: 1024,
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn full(burst: f64, now: Instant) -> Bucket {
        Bucket {
            tokens: burst,
            at: now,
        }
    }

    fn refill(&mut self, rate: f64, burst: f64, now: Instant) {
        let dt = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + dt * rate).min(burst);
        self.at = now;
    }
}

/// Why a request was not granted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Over {
    Global,
    Namespace,
}

impl Over {
    pub fn as_str(self) -> &'static str {
        match self {
            Over::Global => "global",
            Over::Namespace => "namespace",
        }
    }
}

type FactsKey = (String, bool, bool);
type AuthKey = String;

struct Inner {
    global: Bucket,
    namespaces: HashMap<String, Bucket>,
    facts: HashMap<FactsKey, (Instant, NamespaceFacts)>,
    authorisations: HashMap<AuthKey, (Instant, Vec<DataClass>)>,
}

/// The token buckets and the short-lived answers.
pub struct LiveBudget {
    limits: BudgetLimits,
    inner: Mutex<Inner>,
}

impl LiveBudget {
    pub fn new(limits: BudgetLimits) -> LiveBudget {
        let now = Instant::now();
        LiveBudget {
            inner: Mutex::new(Inner {
                global: Bucket::full(limits.burst, now),
                namespaces: HashMap::new(),
                facts: HashMap::new(),
                authorisations: HashMap::new(),
            }),
            limits,
        }
    }

    pub fn limits(&self) -> &BudgetLimits {
        &self.limits
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// May a request costing `cost` API requests be made for `namespace`
    /// now? If so the cost is charged to both buckets (they may go into
    /// debt: the cost of a read is known only once made).
    pub fn try_take(&self, namespace: &str, cost: f64, now: Instant) -> Result<(), Over> {
        let l = &self.limits;
        let mut inner = self.lock();
        inner.global.refill(l.rate, l.burst, now);
        if inner.global.tokens < 1.0 {
            return Err(Over::Global);
        }
        if !inner.namespaces.contains_key(namespace) && inner.namespaces.len() >= l.max_entries {
            // Forget the namespaces whose buckets have refilled: they
            // would start full anyway.
            inner.namespaces.retain(|_, b| {
                b.refill(l.namespace_rate, l.namespace_burst, now);
                b.tokens < l.namespace_burst
            });
            if inner.namespaces.len() >= l.max_entries {
                return Err(Over::Namespace);
            }
        }
        let ns = inner
            .namespaces
            .entry(namespace.to_string())
            .or_insert_with(|| Bucket::full(l.namespace_burst, now));
        ns.refill(l.namespace_rate, l.namespace_burst, now);
        if ns.tokens < 1.0 {
            return Err(Over::Namespace);
        }
        ns.tokens -= cost;
        inner.global.tokens -= cost;
        Ok(())
    }

    /// Charge `extra` requests a granted read made beyond its estimate.
    pub fn charge(&self, namespace: &str, extra: f64) {
        if extra <= 0.0 {
            return;
        }
        let mut inner = self.lock();
        inner.global.tokens -= extra;
        if let Some(b) = inner.namespaces.get_mut(namespace) {
            b.tokens -= extra;
        }
    }

    /// A reading of `key` no older than `cache_for`.
    pub fn cached_facts(
        &self,
        namespace: &str,
        network_policies: bool,
        storage: bool,
        now: Instant,
    ) -> Option<NamespaceFacts> {
        let key = (namespace.to_string(), network_policies, storage);
        let inner = self.lock();
        inner
            .facts
            .get(&key)
            .filter(|(at, _)| now.saturating_duration_since(*at) <= self.limits.cache_for)
            .map(|(_, f)| f.clone())
    }

    pub fn remember_facts(
        &self,
        namespace: &str,
        network_policies: bool,
        storage: bool,
        facts: &NamespaceFacts,
        now: Instant,
    ) {
        let key = (namespace.to_string(), network_policies, storage);
        let keep = self.limits.cache_for;
        let max = self.limits.max_entries;
        let mut inner = self.lock();
        if inner.facts.len() >= max && !inner.facts.contains_key(&key) {
            inner
                .facts
                .retain(|_, (at, _)| now.saturating_duration_since(*at) <= keep);
            if inner.facts.len() >= max {
                return;
            }
        }
        inner.facts.insert(key, (now, facts.clone()));
    }

    /// The classes `key` (user, namespace, classes) may not declassify, as
    /// answered no longer than `cache_for` ago.
    pub fn cached_authorisation(&self, key: &str, now: Instant) -> Option<Vec<DataClass>> {
        let inner = self.lock();
        inner
            .authorisations
            .get(key)
            .filter(|(at, _)| now.saturating_duration_since(*at) <= self.limits.cache_for)
            .map(|(_, r)| r.clone())
    }

    pub fn remember_authorisation(&self, key: String, refused: &[DataClass], now: Instant) {
        let keep = self.limits.cache_for;
        let max = self.limits.max_entries;
        let mut inner = self.lock();
        if inner.authorisations.len() >= max && !inner.authorisations.contains_key(&key) {
            inner
                .authorisations
                .retain(|_, (at, _)| now.saturating_duration_since(*at) <= keep);
            if inner.authorisations.len() >= max {
                return;
            }
        }
        inner.authorisations.insert(key, (now, refused.to_vec()));
    }
}

/// A namespace name the API server could hold (a DNS-1123 label): only
/// those are read live; a forged review may name anything.
pub fn plausible_namespace(ns: &str) -> bool {
    !ns.is_empty()
        && ns.len() <= 63
        && ns
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !ns.starts_with('-')
        && !ns.ends_with('-')
}

/// The API requests a live read made: the Namespace, its NetworkPolicies
/// when asked, and for storage its claims, the StorageClasses and one
/// lookup per PV its claims name.
pub fn read_cost(network_policies: bool, storage: bool, facts: Option<&NamespaceFacts>) -> f64 {
    let mut n = 1.0;
    if network_policies {
        n += 1.0;
    }
    if storage {
        n += 2.0;
        if let Some(s) = facts.and_then(|f| f.storage.as_ref()) {
            let mut names: Vec<&str> = s
                .claims
                .iter()
                .filter_map(|c| c.volume_name.as_deref())
                .collect();
            names.sort_unstable();
            names.dedup();
            n += names.len() as f64;
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> BudgetLimits {
        BudgetLimits {
            rate: 10.0,
            burst: 20.0,
            namespace_rate: 1.0,
            namespace_burst: 5.0,
            cache_for: Duration::from_secs(3),
            max_entries: 4,
        }
    }

    #[test]
    fn a_namespace_gets_its_burst_then_its_rate() {
        let b = LiveBudget::new(limits());
        let t0 = Instant::now();
        for _ in 0..5 {
            assert_eq!(b.try_take("a", 1.0, t0), Ok(()));
        }
        assert_eq!(b.try_take("a", 1.0, t0), Err(Over::Namespace));
        // Another namespace still has its own.
        assert_eq!(b.try_take("b", 1.0, t0), Ok(()));
        // One token a second comes back.
        let t1 = t0 + Duration::from_millis(999);
        assert_eq!(b.try_take("a", 1.0, t1), Err(Over::Namespace));
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(b.try_take("a", 1.0, t1), Ok(()));
        assert_eq!(b.try_take("a", 1.0, t1), Err(Over::Namespace));
    }

    #[test]
    fn the_global_bucket_bounds_every_namespace_together() {
        let b = LiveBudget::new(BudgetLimits {
            max_entries: 1000,
            ..limits()
        });
        let t0 = Instant::now();
        let mut granted = 0;
        // 1,000 namespaces, 5 requests each, within 60 s.
        for s in 0..60u64 {
            let now = t0 + Duration::from_secs(s);
            for ns in 0..1000 {
                if b.try_take(&format!("ns-{ns}"), 1.0, now).is_ok() {
                    granted += 1;
                }
            }
        }
        // burst + rate × 59 s.
        assert!(granted <= 20 + 10 * 59, "{granted}");
        assert!(granted >= 10 * 59, "{granted}");
    }

    #[test]
    fn debt_is_paid_back_before_the_next_grant() {
        let b = LiveBudget::new(limits());
        let t0 = Instant::now();
        assert_eq!(b.try_take("a", 1.0, t0), Ok(()));
        // That read listed 30 PVs: the global bucket is 11 tokens in debt.
        b.charge("a", 30.0);
        assert_eq!(b.try_take("b", 1.0, t0), Err(Over::Global));
        let later = t0 + Duration::from_millis(1100);
        assert_eq!(b.try_take("b", 1.0, later), Err(Over::Global));
        let later = t0 + Duration::from_millis(1300);
        assert_eq!(b.try_take("b", 1.0, later), Ok(()));
    }

    #[test]
    fn forged_namespaces_cannot_grow_the_tables() {
        let b = LiveBudget::new(limits());
        let t0 = Instant::now();
        for ns in ["a", "b", "c", "d"] {
            assert_eq!(b.try_take(ns, 1.0, t0), Ok(()));
        }
        // The table is full of namespaces in use.
        assert_eq!(b.try_take("e", 1.0, t0), Err(Over::Namespace));
        // Once theirs have refilled, they make room.
        let later = t0 + Duration::from_secs(2);
        assert_eq!(b.try_take("e", 1.0, later), Ok(()));
        assert!(b.lock().namespaces.len() <= 4);
        for i in 0..100 {
            b.remember_facts(
                &format!("n{i}"),
                false,
                false,
                &NamespaceFacts::default(),
                t0,
            );
            b.remember_authorisation(format!("k{i}"), &[], t0);
        }
        assert!(b.lock().facts.len() <= 4);
        assert!(b.lock().authorisations.len() <= 4);
    }

    #[test]
    fn answers_are_kept_for_a_few_seconds() {
        let b = LiveBudget::new(limits());
        let t0 = Instant::now();
        let facts = NamespaceFacts {
            labels: Some(Default::default()),
            ..NamespaceFacts::default()
        };
        b.remember_facts("a", true, false, &facts, t0);
        assert_eq!(b.cached_facts("a", true, false, t0), Some(facts.clone()));
        assert_eq!(b.cached_facts("a", false, false, t0), None, "another shape");
        assert_eq!(
            b.cached_facts("a", true, false, t0 + Duration::from_secs(4)),
            None
        );
        b.remember_authorisation("u/a/personal".into(), &[DataClass::Personal], t0);
        assert_eq!(
            b.cached_authorisation("u/a/personal", t0 + Duration::from_secs(3)),
            Some(vec![DataClass::Personal])
        );
        assert_eq!(
            b.cached_authorisation("u/a/personal", t0 + Duration::from_secs(4)),
            None
        );
    }

    #[test]
    fn only_plausible_namespaces_are_read() {
        assert!(plausible_namespace("payments-eu1"));
        assert!(!plausible_namespace(""));
        assert!(!plausible_namespace("Payments"));
        assert!(!plausible_namespace("a.b"));
        assert!(!plausible_namespace(&"a".repeat(64)));
        assert!(!plausible_namespace("-a"));
    }
}
