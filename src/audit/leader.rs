//! Leader election on a coordination.k8s.io/v1 Lease.
//!
//! A small elector with optimistic concurrency: every write to the Lease
//! carries the resourceVersion that was read, so of two replicas racing for
//! it one gets 409 Conflict and stays a follower. A Lease counts as expired
//! when its record has not changed for `lease_duration` *by this replica's
//! clock* (as client-go does), so clock skew between nodes does not matter.
//! The holder renews every `renew_every`; if it cannot renew within
//! `renew_deadline` it steps down before anyone else can take over.

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::Client;
use kube::api::{Api, PostParams};
use tokio::sync::watch;
use tokio::time::Instant;

#[derive(Clone, Debug)]
pub struct LeaseConfig {
    /// The operator's own namespace.
    pub namespace: String,
    pub name: String,
    /// This replica (the pod name).
    pub identity: String,
    pub lease_duration: Duration,
    pub renew_deadline: Duration,
    pub renew_every: Duration,
    pub retry_every: Duration,
}

impl LeaseConfig {
    pub fn new(namespace: &str, identity: &str) -> LeaseConfig {
        LeaseConfig {
            namespace: namespace.to_string(),
            name: "residency-guard-audit".into(),
            identity: identity.to_string(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            renew_every: Duration::from_secs(2),
            retry_every: Duration::from_secs(2),
        }
    }
}

/// The elector's memory between attempts.
#[derive(Debug, Default)]
pub struct Elector {
    /// The Lease record last seen (holder, renewTime, resourceVersion) and
    /// when it was first seen unchanged.
    observed: Option<(String, Instant)>,
    /// When this replica last renewed successfully.
    last_renewal: Option<Instant>,
}

fn record_of(lease: &Lease) -> String {
    let spec = lease.spec.as_ref();
    format!(
        "{}|{}|{}",
        spec.and_then(|s| s.holder_identity.as_deref())
            .unwrap_or_default(),
        spec.and_then(|s| s.renew_time.as_ref())
            .map(|t| t.0.to_string())
            .unwrap_or_default(),
        lease
            .metadata
            .resource_version
            .as_deref()
            .unwrap_or_default()
    )
}

impl Elector {
    /// One attempt: acquire (if free or expired) or renew. Returns whether
    /// this replica holds the Lease afterwards.
    pub async fn try_acquire_or_renew(
        &mut self,
        api: &Api<Lease>,
        cfg: &LeaseConfig,
        now: Timestamp,
    ) -> Result<bool, kube::Error> {
        let held = self.holding(cfg);
        let result = self.attempt(api, cfg, now).await;
        match result {
            Ok(true) => {
                self.last_renewal = Some(Instant::now());
                Ok(true)
            }
            Ok(false) => {
                self.last_renewal = None;
                Ok(false)
            }
            // A transient error: keep leading until the renew deadline.
            Err(e) => {
                if !held {
                    self.last_renewal = None;
                }
                Err(e)
            }
        }
    }

    /// Still within the renew deadline of the last successful renewal.
    pub fn holding(&self, cfg: &LeaseConfig) -> bool {
        self.last_renewal
            .is_some_and(|t| t.elapsed() < cfg.renew_deadline)
    }

    async fn attempt(
        &mut self,
        api: &Api<Lease>,
        cfg: &LeaseConfig,
        now: Timestamp,
    ) -> Result<bool, kube::Error> {
        let duration_secs = i32::try_from(cfg.lease_duration.as_secs()).unwrap_or(15);
        let existing = api.get_opt(&cfg.name).await?;
        let Some(mut lease) = existing else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(cfg.name.clone()),
                    namespace: Some(cfg.namespace.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(cfg.identity.clone()),
                    lease_duration_seconds: Some(duration_secs),
                    acquire_time: Some(MicroTime(now)),
                    renew_time: Some(MicroTime(now)),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            return match api.create(&PostParams::default(), &lease).await {
                Ok(_) => {
                    tracing::info!(lease = %cfg.name, identity = %cfg.identity, "created the audit Lease: now leading");
                    Ok(true)
                }
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                Err(e) => Err(e),
            };
        };

        let record = record_of(&lease);
        let first_seen = match &self.observed {
            Some((r, t)) if *r == record => *t,
            _ => {
                let t = Instant::now();
                self.observed = Some((record, t));
                t
            }
        };
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        let holder = spec.holder_identity.clone().unwrap_or_default();
        let theirs = Duration::from_secs(
            spec.lease_duration_seconds
                .and_then(|s| u64::try_from(s).ok())
                .unwrap_or(cfg.lease_duration.as_secs()),
        );
        let mine = holder == cfg.identity;
        let expired = holder.is_empty() || first_seen.elapsed() >= theirs;
        if !mine && !expired {
            return Ok(false);
        }
        if !mine {
            spec.holder_identity = Some(cfg.identity.clone());
            spec.acquire_time = Some(MicroTime(now));
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0).saturating_add(1));
        }
        spec.renew_time = Some(MicroTime(now));
        spec.lease_duration_seconds = Some(duration_secs);
        // `replace` sends the resourceVersion read above: optimistic concurrency.
        match api.replace(&cfg.name, &PostParams::default(), &lease).await {
            Ok(updated) => {
                self.observed = Some((record_of(&updated), Instant::now()));
                if !mine {
                    tracing::info!(lease = %cfg.name, identity = %cfg.identity, previous = %holder, "took over the expired audit Lease: now leading");
                }
                Ok(true)
            }
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }
}

/// Campaign for the Lease in the background; the receiver says whether this
/// replica leads. Stops when every receiver is dropped.
pub fn elect(client: Client, cfg: LeaseConfig) -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        let api: Api<Lease> = Api::namespaced(client, &cfg.namespace);
        let mut elector = Elector::default();
        loop {
            let leading = match elector
                .try_acquire_or_renew(&api, &cfg, Timestamp::now())
                .await
            {
                Ok(l) => l,
                Err(e) => {
                    let still = elector.holding(&cfg);
                    tracing::warn!(lease = %cfg.name, error = %e, leading = still, "cannot read or renew the audit Lease");
                    still
                }
            };
            let was = *tx.borrow();
            if was != leading {
                tracing::info!(lease = %cfg.name, identity = %cfg.identity, leading, "audit leadership changed");
            }
            if tx.send(leading).is_err() {
                return;
            }
            let wait = if leading {
                cfg.renew_every
            } else {
                cfg.retry_every
            };
            tokio::time::sleep(wait).await;
        }
    });
    rx
}
