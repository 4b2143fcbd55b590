//! Leader election for the audit controller on a coordination.k8s.io/v1 Lease.
//!
//! The election itself is the maintained [`kube_lease_manager`] crate (the
//! former hand-rolled elector is gone): it creates the Lease when missing
//! (`LeaseCreateMode::AutoCreate`), takes it with a server-side apply (so of
//! two replicas racing for a free Lease one gets 409 Conflict), renews it
//! `grace` seconds before it expires, force-frees a Lease its holder let
//! expire, and `release()` clears the holder. Expiry is judged from the
//! Lease's `renewTime`, so clocks may be skewed by up to `grace`.
//!
//! Every replica keeps judging with warm caches; this module only says whether
//! *this* replica may write. What it adds around the crate:
//!
//! - It drives the crate's `changed()` itself rather than `watch()`, because
//!   `watch()` logs a failed renewal and keeps publishing the last state
//!   (`true`) while it backs off. Here any error from the manager makes this
//!   replica a follower at once; a new manager is built after a backoff
//!   (1 s doubling to 30 s).
//! - A new manager first releases a claim still in this pod's name (left by
//!   a failed manager or a restarted container): the crate would report such
//!   a claim as leadership at once, even when it has expired. Leadership thus
//!   always comes from a fresh take of the Lease.
//! - Every Lease request has a deadline (`request_timeout`, shorter than
//!   `grace`): a renewal that hangs fails in time to step down before the
//!   Lease expires for the other replicas.
//! - [`Election::step_down`] (on SIGTERM) publishes "follower" first and then
//!   releases the Lease, so a successor takes over as soon as it next looks
//!   instead of waiting for the Lease to expire.
//! - A follower looks every `follower_poll` (0.5 s): the crate's follower
//!   only reads the Lease again when the holder's term expires (up to
//!   `duration_secs` later), so it would miss a release. When a GET shows
//!   the Lease without a holder, the manager is built anew (a fresh one
//!   reads the Lease at once) and takes it: a handover after SIGTERM takes
//!   about a second, not up to 15 (measured in tests/e2e/availability.rs).
//!   A Lease that is gone is not "free": the manager recreates it when it
//!   fails (helm uninstall deletes it; a dying replica should not bring it
//!   back early).
//!
//! - A Lease the chart did not make (a release installed before the
//!   chart's `templates/lease.yaml`, which Helm will not adopt, or one
//!   recreated after a manual delete) gets an ownerReference to the
//!   release's Service from each new leader (`owner_service`): `helm
//!   uninstall` deletes the Service, and the garbage collector the Lease,
//!   also when no operator runs. A Lease Helm manages is left alone.
//!
//! Leadership changes are logged at info, manager failures at warn.

use std::time::Duration;

use hyper::{Request, Response};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{ListParams, Patch, PatchParams};
use kube::client::Body;
use kube::{Api, Client};
use kube_lease_manager::{LeaseCreateMode, LeaseManager, LeaseManagerBuilder, LeaseManagerError};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::backoff::Backoff;

/// The Lease's name, in the operator's namespace.
pub const LEASE_NAME: &str = "residency-guard-audit";

#[derive(Clone, Debug)]
pub struct LeaseConfig {
    /// The operator's own namespace.
    pub namespace: String,
    pub name: String,
    /// This replica (the pod name).
    pub identity: String,
    /// A Lease not renewed for this long is free (`leaseDurationSeconds`).
    pub duration_secs: u64,
    /// The holder renews this long before expiry, i.e. every
    /// `duration_secs - grace_secs`.
    pub grace_secs: u64,
    /// Deadline of one Lease request (keep it below `grace_secs`).
    pub request_timeout: Duration,
    /// After a manager failure: first wait, doubling up to `retry_max`.
    pub retry_min: Duration,
    pub retry_max: Duration,
    /// A follower reads the Lease this often to notice a release.
    pub follower_poll: Duration,
    /// The release's Service (the chart's fullname): the owner a Lease not
    /// managed by Helm gets, so that it goes with the release. None: none.
    pub owner_service: Option<String>,
}

impl LeaseConfig {
    pub fn new(namespace: &str, identity: &str) -> LeaseConfig {
        LeaseConfig {
            namespace: namespace.to_string(),
            name: LEASE_NAME.into(),
            identity: identity.to_string(),
            // Renew every 5 s; 10 s of slack for retries, slow requests and skew.
            duration_secs: 15,
            grace_secs: 10,
            request_timeout: Duration::from_secs(5),
            retry_min: Duration::from_secs(1),
            retry_max: Duration::from_secs(30),
            follower_poll: Duration::from_millis(500),
            owner_service: None,
        }
    }

    /// After a manager failure: `retry_min`, doubling up to `retry_max`.
    fn backoff(&self) -> Backoff {
        Backoff::new(self.retry_min, self.retry_max)
    }

    /// `duration > grace > 0`, as the crate requires (it does not check
    /// values given through its builder).
    fn durations(&self) -> (u64, u64) {
        let duration = self.duration_secs.max(2);
        let grace = self.grace_secs.clamp(1, duration - 1);
        (duration, grace)
    }
}

/// A running campaign for the Lease.
pub struct Election {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Election {
    /// Stop campaigning: the leadership receivers say `false` first, then the
    /// Lease is released if this replica holds it. Waits at most `within`.
    pub async fn step_down(self, within: Duration) {
        let _ = self.stop.send(true);
        if tokio::time::timeout(within, self.task).await.is_err() {
            tracing::warn!(
                "audit Lease not released in time; the next leader waits for it to expire"
            );
        }
    }
}

/// Campaign for the Lease in the background. The receiver says whether this
/// replica leads (it starts `false`; a closed channel means `false` too).
/// The campaign ends (releasing the Lease) on [`Election::step_down`], when
/// the `Election` is dropped, or when every receiver is dropped.
pub fn elect(client: Client, cfg: LeaseConfig) -> (watch::Receiver<bool>, Election) {
    let (tx, rx) = watch::channel(false);
    let (stop, stop_rx) = watch::channel(false);
    let client = with_deadline(client, cfg.request_timeout);
    let task = tokio::spawn(supervise(client, cfg, tx, stop_rx));
    (rx, Election { stop, task })
}

/// Run the campaign; should it die (a panic), a follower until it is
/// restarted after a backoff.
async fn supervise(
    client: Client,
    cfg: LeaseConfig,
    tx: watch::Sender<bool>,
    mut stop: watch::Receiver<bool>,
) {
    let mut failures: u32 = 0;
    loop {
        let campaign = tokio::spawn(campaign(
            client.clone(),
            cfg.clone(),
            tx.clone(),
            stop.clone(),
        ));
        match campaign.await {
            Ok(()) => return,
            Err(e) => {
                publish(&tx, &cfg, false);
                failures = failures.saturating_add(1);
                tracing::error!(lease = %cfg.name, error = %e, retry_in_ms = cfg.backoff().after(failures).as_millis() as u64, "audit Lease manager task died; a follower until it is restarted");
            }
        }
        if !back_off(cfg.backoff().after(failures), &mut stop, &tx).await {
            return;
        }
    }
}

/// Wait out `wait`. False when told to stop first.
async fn back_off(
    wait: Duration,
    stop: &mut watch::Receiver<bool>,
    tx: &watch::Sender<bool>,
) -> bool {
    tokio::select! {
        biased;
        _ = stopping(stop, tx) => false,
        _ = tokio::time::sleep(wait) => true,
    }
}

/// `client`, but every request (response body included) fails after `deadline`.
fn with_deadline(client: Client, deadline: Duration) -> Client {
    let namespace = client.default_namespace().to_string();
    let service = tower::service_fn(move |req: Request<Body>| {
        let client = client.clone();
        async move {
            let call = async {
                let res = client.send(req).await?;
                let (parts, body) = res.into_parts();
                let bytes = body.collect_bytes().await?;
                Ok::<_, kube::Error>(Response::from_parts(parts, Body::from(bytes)))
            };
            match tokio::time::timeout(deadline, call).await {
                Ok(r) => r.map_err(tower::BoxError::from),
                Err(elapsed) => Err(tower::BoxError::from(elapsed)),
            }
        }
    });
    Client::new(service, namespace)
}

async fn campaign(
    client: Client,
    cfg: LeaseConfig,
    tx: watch::Sender<bool>,
    mut stop: watch::Receiver<bool>,
) {
    let (duration, grace) = cfg.durations();
    let leases: Api<Lease> = Api::namespaced(client.clone(), &cfg.namespace);
    let mut failures: u32 = 0;
    // The last manager built, kept to release the Lease on stop.
    let mut manager: Option<LeaseManager> = None;
    // The last manager saw the Lease released by its holder: no claim in
    // this pod's name can be left, so the new one takes it at once.
    let mut freed = false;
    loop {
        let built = tokio::select! {
            biased;
            _ = stopping(&mut stop, &tx) => None,
            built = LeaseManagerBuilder::new(client.clone(), &cfg.name)
                .with_namespace(&cfg.namespace)
                .with_identity(&cfg.identity)
                // The builder keeps the field manager derived from its random
                // default identity; the server-side apply that takes the Lease
                // must be this pod's own.
                .with_field_manager(format!("kube-lease-manager-{}", cfg.identity))
                .with_duration(duration)
                .with_grace(grace)
                .with_create_mode(LeaseCreateMode::AutoCreate)
                .build() => Some(built),
        };
        let failure = match built {
            None => break,
            Some(Ok(m)) => {
                let m = manager.insert(m);
                let release_own_claim = !std::mem::take(&mut freed);
                match follow(
                    m,
                    &leases,
                    &cfg,
                    &tx,
                    &mut stop,
                    &mut failures,
                    release_own_claim,
                )
                .await
                {
                    Ok(Followed::Stopped) => break,
                    Ok(Followed::Freed) => {
                        tracing::debug!(lease = %cfg.name, "audit Lease released by its holder; taking it");
                        freed = true;
                        continue;
                    }
                    Err(e) => e,
                }
            }
            Some(Err(e)) => e,
        };
        publish(&tx, &cfg, false);
        failures = failures.saturating_add(1);
        let wait = cfg.backoff().after(failures);
        tracing::warn!(lease = %cfg.name, error = %failure, retry_in_ms = wait.as_millis() as u64, "audit Lease manager failed; a follower until it is back");
        if !back_off(wait, &mut stop, &tx).await {
            break;
        }
    }
    // Stop writing before anyone else may start.
    publish(&tx, &cfg, false);
    if let Some(m) = manager {
        match m.release().await {
            Ok(()) => {
                tracing::info!(lease = %cfg.name, identity = %cfg.identity, "audit Lease released")
            }
            Err(e) => {
                tracing::warn!(lease = %cfg.name, error = %e, "cannot release the audit Lease; it expires on its own")
            }
        }
    }
}

/// Why [`follow`] returned without a manager failure.
#[derive(Debug, PartialEq)]
enum Followed {
    /// The campaign stops.
    Stopped,
    /// This replica follows and the Lease has no holder: build a new
    /// manager to take it now.
    Freed,
}

/// Publish what the manager reports until it fails (`Err`), the campaign
/// stops, or (while following) the Lease is released. A report means the
/// manager works: the backoff starts over.
async fn follow(
    manager: &LeaseManager,
    leases: &Api<Lease>,
    cfg: &LeaseConfig,
    tx: &watch::Sender<bool>,
    stop: &mut watch::Receiver<bool>,
    failures: &mut u32,
    release_own_claim: bool,
) -> Result<Followed, LeaseManagerError> {
    // A fresh manager would report a Lease still in this pod's name (left by
    // a failed manager or a restarted container) as leadership at once, even
    // if it expired and another replica is taking it over. Give such a claim
    // up first: leadership then only comes from taking the Lease anew, which
    // also proves the API accepts this replica's Lease writes. Not after a
    // follower saw the Lease released: no claim of its own can be left then,
    // and the crate's release of a holderless Lease costs a patch and a read
    // that would only delay the takeover.
    if release_own_claim {
        tokio::select! {
            biased;
            _ = stopping(stop, tx) => return Ok(Followed::Stopped),
            released = manager.release() => released?,
        }
    }
    loop {
        let following = !*tx.borrow();
        tokio::select! {
            biased;
            _ = stopping(stop, tx) => return Ok(Followed::Stopped),
            changed = manager.changed() => {
                let leading = changed?;
                publish(tx, cfg, leading);
                if leading && following {
                    tokio::spawn(tie_to_release(leases.clone(), cfg.clone()));
                }
                *failures = 0;
            }
            () = released(leases, cfg), if following => return Ok(Followed::Freed),
        }
    }
}

/// Resolves once a GET (every `follower_poll`) shows the Lease without a
/// holder. Failed reads and a missing Lease are left to the manager.
async fn released(leases: &Api<Lease>, cfg: &LeaseConfig) {
    loop {
        tokio::time::sleep(cfg.follower_poll).await;
        if let Ok(Some(lease)) = leases.get_opt(&cfg.name).await
            && holderless(&lease)
        {
            return;
        }
    }
}

/// A Lease nobody holds: no holderIdentity, or an empty one (a release).
fn holderless(lease: &Lease) -> bool {
    lease
        .spec
        .as_ref()
        .and_then(|s| s.holder_identity.as_deref())
        .is_none_or(str::is_empty)
}

/// Helm's annotation on every resource of a release.
const HELM_RELEASE_ANNOTATION: &str = "meta.helm.sh/release-name";

/// The owner reference a Lease still needs to go with the release, if any:
/// none when Helm manages it (the chart's Lease) or when it already names
/// this Service.
fn missing_owner(lease: &Lease, service: &Service) -> Option<OwnerReference> {
    let helm_managed = lease
        .metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(HELM_RELEASE_ANNOTATION));
    let uid = service.metadata.uid.as_deref()?;
    let owned = lease
        .metadata
        .owner_references
        .iter()
        .flatten()
        .any(|o| o.uid == uid);
    if helm_managed || owned {
        return None;
    }
    Some(OwnerReference {
        api_version: "v1".into(),
        kind: "Service".into(),
        name: service.metadata.name.clone()?,
        uid: uid.to_string(),
        controller: None,
        block_owner_deletion: None,
    })
}

/// Give a Lease Helm does not manage an ownerReference to the release's
/// Service (see the module notes). Best effort: a failure is logged and
/// the next leader tries again.
async fn tie_to_release(leases: Api<Lease>, cfg: LeaseConfig) {
    let Some(service_name) = cfg.owner_service.as_deref() else {
        return;
    };
    let lease = match leases.get_opt(&cfg.name).await {
        Ok(Some(lease)) => lease,
        Ok(None) => return,
        Err(e) => {
            tracing::warn!(lease = %cfg.name, error = %e, "cannot read the audit Lease to tie it to the release");
            return;
        }
    };
    let services: Api<Service> = Api::namespaced(leases.clone().into_client(), &cfg.namespace);
    // `list` by name: the chart grants list/watch on Services, not get.
    let by_name = ListParams::default().fields(&format!("metadata.name={service_name}"));
    let service = match services.list(&by_name).await {
        Ok(list) => list.items.into_iter().next(),
        Err(e) => {
            tracing::warn!(lease = %cfg.name, service = %service_name, error = %e, "cannot read the release's Service to tie the audit Lease to it");
            return;
        }
    };
    let Some(service) = service else {
        tracing::debug!(lease = %cfg.name, service = %service_name, "no such Service; the audit Lease is left as it is");
        return;
    };
    let Some(owner) = missing_owner(&lease, &service) else {
        return;
    };
    let mut owners = lease.metadata.owner_references.unwrap_or_default();
    owners.push(owner);
    let patch = serde_json::json!({"metadata": {"ownerReferences": owners}});
    match leases
        .patch(&cfg.name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => tracing::info!(
            lease = %cfg.name,
            service = %service_name,
            "the audit Lease is not Helm's (made before the chart managed it): owned by the release's Service now, so helm uninstall removes it"
        ),
        Err(e) => {
            tracing::warn!(lease = %cfg.name, error = %e, "cannot tie the audit Lease to the release's Service; helm uninstall may leave it behind")
        }
    }
}

/// Resolves when the campaign should end: stop requested, the `Election`
/// dropped, or nobody listening any more.
async fn stopping(stop: &mut watch::Receiver<bool>, tx: &watch::Sender<bool>) {
    tokio::select! {
        _ = stop.wait_for(|s| *s) => {}
        _ = tx.closed() => {}
    }
}

fn publish(tx: &watch::Sender<bool>, cfg: &LeaseConfig, leading: bool) {
    tx.send_if_modified(|was| {
        if *was == leading {
            return false;
        }
        *was = leading;
        tracing::info!(lease = %cfg.name, identity = %cfg.identity, leading, "audit leadership changed");
        true
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_renew_every_five_seconds_with_ten_of_slack() {
        let cfg = LeaseConfig::new("ns", "pod-a");
        assert_eq!(
            (cfg.name.as_str(), cfg.identity.as_str()),
            (LEASE_NAME, "pod-a")
        );
        assert_eq!(cfg.durations(), (15, 10));
        assert!(cfg.request_timeout < Duration::from_secs(cfg.grace_secs));
    }

    #[test]
    fn a_lease_without_a_holder_is_free() {
        use k8s_openapi::api::coordination::v1::LeaseSpec;
        let with = |holder: Option<&str>| Lease {
            spec: Some(LeaseSpec {
                holder_identity: holder.map(str::to_string),
                ..LeaseSpec::default()
            }),
            ..Lease::default()
        };
        assert!(holderless(&Lease::default()));
        assert!(holderless(&with(None)));
        assert!(holderless(&with(Some(""))));
        assert!(!holderless(&with(Some("pod-a"))));
    }

    #[test]
    fn only_a_lease_helm_does_not_manage_gets_the_service_as_owner() {
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
        let service = Service {
            metadata: ObjectMeta {
                name: Some("rg".into()),
                uid: Some("svc-uid".into()),
                ..ObjectMeta::default()
            },
            ..Service::default()
        };
        let lease = |annotations: &[(&str, &str)], owners: &[&str]| Lease {
            metadata: ObjectMeta {
                annotations: Some(
                    annotations
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                ),
                owner_references: Some(
                    owners
                        .iter()
                        .map(|uid| OwnerReference {
                            uid: uid.to_string(),
                            ..OwnerReference::default()
                        })
                        .collect(),
                ),
                ..ObjectMeta::default()
            },
            ..Lease::default()
        };
        // Made by an operator before the chart had templates/lease.yaml.
        let owner = missing_owner(&lease(&[], &[]), &service).expect("an owner to add");
        assert_eq!(
            (owner.kind.as_str(), owner.name.as_str(), owner.uid.as_str()),
            ("Service", "rg", "svc-uid")
        );
        assert!(missing_owner(&lease(&[], &["other"]), &service).is_some());
        // The chart's own Lease, or one already tied.
        assert!(missing_owner(&lease(&[(HELM_RELEASE_ANNOTATION, "rg")], &[]), &service).is_none());
        assert!(missing_owner(&lease(&[], &["svc-uid"]), &service).is_none());
        // A Service without a uid (never from the API server) ties nothing.
        let unsaved = Service {
            metadata: ObjectMeta {
                uid: None,
                ..service.metadata.clone()
            },
            ..Service::default()
        };
        assert!(missing_owner(&lease(&[], &[]), &unsaved).is_none());
    }

    #[test]
    fn durations_are_kept_valid_for_the_crate() {
        let with = |duration_secs, grace_secs| LeaseConfig {
            duration_secs,
            grace_secs,
            ..LeaseConfig::new("ns", "pod-a")
        };
        assert_eq!(with(0, 0).durations(), (2, 1));
        assert_eq!(with(15, 15).durations(), (15, 14));
        assert_eq!(with(15, 0).durations(), (15, 1));
        assert_eq!(with(u64::MAX, 5).durations(), (u64::MAX, 5));
    }
}
