//! Reconciling against the API server: read the Secret, plan, write it
//! with optimistic concurrency, keep the webhook configurations' caBundles
//! in step, and load the serving pair into the store.

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, Patch, PatchParams, PostParams};

use super::material::Material;
use super::rotation::{Action, apply, plan, serving_renewal};
use super::x509::bundle_trusts;
use super::{CertError, SelfManagedConfig, add};
use crate::backoff::Backoff;
use crate::tls::CertStore;

/// Writes of one Secret or one configuration before giving up for this round.
const MAX_WRITE_ATTEMPTS: u32 = 5;
/// Between failed rounds: 1 s doubling to a minute (and never longer than
/// `check_every`).
pub(super) const BACKOFF: Backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));

fn kube_error(context: impl Into<String>) -> impl FnOnce(kube::Error) -> CertError {
    let context = context.into();
    move |source| CertError::Kube { context, source }
}

/// What happened to one webhook configuration's caBundle.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BundleStatus {
    /// It does not exist (skipped).
    Missing,
    /// Every webhook already carried the bundle.
    InSync,
    /// This many webhooks were patched.
    Patched(usize),
    Failed(String),
}

impl BundleStatus {
    fn was_in_place(&self) -> bool {
        matches!(self, BundleStatus::Missing | BundleStatus::InSync)
    }
}

/// The result of one [`reconcile`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// What this replica wrote to the Secret (empty if nothing).
    pub written: Vec<Action>,
    /// Writes lost to another replica (then re-read).
    pub conflicts: u32,
    /// Per webhook configuration, in the configured order.
    pub bundles: Vec<(String, BundleStatus)>,
    /// The serving pair in the store changed.
    pub serving_reloaded: bool,
    /// A regenerated pair was written but this replica keeps serving its
    /// current certificate (trusted by the carried-over CAs) until its next
    /// round, so the new bundle reaches the API server first.
    pub serving_deferred: bool,
    /// CA certificates carried over into the bundle after a regeneration.
    pub carried_over: usize,
    /// The Secret was given its owner reference to the webhook configuration.
    pub owner_set: bool,
    pub serving_not_after: Option<Timestamp>,
}

impl Outcome {
    pub fn bundle_failures(&self) -> usize {
        self.bundles
            .iter()
            .filter(|(_, s)| matches!(s, BundleStatus::Failed(_)))
            .count()
    }
}

/// One reconcile: read the Secret, plan, write (create/replace) if needed,
/// patch caBundles, load the serving pair into `store`.
pub async fn reconcile(
    client: &kube::Client,
    cfg: &SelfManagedConfig,
    store: &CertStore,
    now: Timestamp,
) -> Result<Outcome, CertError> {
    cfg.validate()?;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &cfg.namespace);
    let secret_ref = cfg.secret_ref();
    let mut outcome = Outcome::default();

    let material = loop {
        let existing = secrets
            .get_opt(&cfg.secret_name)
            .await
            .map_err(kube_error(format!("cannot read Secret {secret_ref}")))?;
        let current = existing.as_ref().map(Material::from_secret);
        if let Some(m) = &current {
            for problem in &m.problems {
                tracing::warn!(secret = %secret_ref, problem = %problem, "webhook TLS Secret: part unusable");
            }
        }
        let mut todo = plan(current.as_ref(), cfg, now);

        // Phase 2 only if the two-CA bundle is verifiably in place.
        if let Some(m) = current.as_ref().filter(|_| todo.promotes())
            && let Some(ca) = m.ca.as_ref().filter(|ca| ca.not_after > now)
        {
            let (before, _) = sync_ca_bundles(client, cfg, &m.bundle_pem()).await;
            let not_in_place: Vec<&str> = before
                .iter()
                .filter(|(_, s)| !s.was_in_place())
                .map(|(n, _)| n.as_str())
                .collect();
            if !not_in_place.is_empty() {
                tracing::warn!(
                    configs = ?not_in_place,
                    ca = %ca.name,
                    "the CA bundle with the next CA was not in place; postponing CA promotion"
                );
                todo.actions
                    .retain(|a| !matches!(a, Action::PromoteNextCa { .. }));
                todo.actions.push(Action::RestartRotationWait {
                    reason: format!(
                        "the caBundle of {} was not up to date",
                        not_in_place.join(", ")
                    ),
                });
                if let Some(reason) = serving_renewal(m, ca, cfg, now) {
                    todo.actions.push(Action::RenewServing { reason });
                }
            }
        }

        if todo.is_empty() {
            let material = current.ok_or_else(|| {
                CertError::Invalid("internal: an empty plan without a Secret".into())
            })?;
            break (material, existing);
        }
        let mut next = apply(&todo, current.as_ref(), cfg, now)?;
        let mut owner = None;
        if todo
            .actions
            .iter()
            .any(|a| matches!(a, Action::GenerateAll { .. }))
        {
            // What the API server and the other replicas may still rely on.
            let previous = read_configs(client, cfg).await;
            owner = previous.owner.clone();
            let mut pems: Vec<&str> = previous.bundles.iter().map(String::as_str).collect();
            if let Some(stored) = current.as_ref().and_then(|m| m.stored_bundle.as_deref()) {
                pems.push(stored);
            }
            outcome.carried_over = next.carry_over(pems, add(now, cfg.previous_ca_grace));
            if outcome.carried_over > 0 {
                tracing::info!(
                    secret = %secret_ref,
                    cas = outcome.carried_over,
                    until = %add(now, cfg.previous_ca_grace),
                    "regenerating: the CAs trusted so far stay in the caBundle until replicas serve the new certificate"
                );
            }
        }
        let mut secret = next.to_secret(cfg, existing.as_ref())?;
        if let Some(owner) = owner {
            set_owner(&mut secret, owner);
        }
        let (verb, written) = match &existing {
            None => (
                "create",
                secrets.create(&PostParams::default(), &secret).await,
            ),
            Some(_) => (
                "replace",
                secrets
                    .replace(&cfg.secret_name, &PostParams::default(), &secret)
                    .await,
            ),
        };
        match written {
            Ok(stored) => {
                tracing::info!(secret = %secret_ref, verb, plan = %todo, "webhook TLS Secret written");
                outcome.written = todo.actions;
                break (next, Some(stored));
            }
            Err(kube::Error::Api(status)) if status.code == 409 => {
                outcome.conflicts += 1;
                if outcome.conflicts >= MAX_WRITE_ATTEMPTS {
                    return Err(CertError::Contended(format!(
                        "Secret {secret_ref}: {verb} lost to other writers {} times in a row",
                        outcome.conflicts
                    )));
                }
                tracing::info!(
                    secret = %secret_ref,
                    verb,
                    reason = %status.reason,
                    "another replica changed the webhook TLS Secret first; re-reading"
                );
            }
            Err(e) => return Err(kube_error(format!("cannot {verb} Secret {secret_ref}"))(e)),
        }
    };
    let (material, stored) = material;

    let (bundles, owner) = sync_ca_bundles(client, cfg, &material.bundle_pem()).await;
    outcome.bundles = bundles;
    if let (Some(owner), Some(stored)) = (owner, stored)
        && !has_owner(&stored, &owner)
    {
        let mut with_owner = stored;
        with_owner.metadata.managed_fields = None;
        set_owner(&mut with_owner, owner);
        match secrets
            .replace(&cfg.secret_name, &PostParams::default(), &with_owner)
            .await
        {
            Ok(_) => {
                outcome.owner_set = true;
                tracing::info!(secret = %secret_ref, "webhook TLS Secret now owned by the webhook configuration (deleted with it on uninstall)");
            }
            Err(kube::Error::Api(status)) if status.code == 409 => {
                tracing::debug!(secret = %secret_ref, "Secret changed before its owner reference was set; next round");
            }
            Err(e) => {
                tracing::warn!(secret = %secret_ref, error = %e, "cannot set the Secret's owner reference; it will outlive helm uninstall until this succeeds");
            }
        }
    }
    let serving = material.serving.as_ref().ok_or_else(|| {
        CertError::Invalid(format!(
            "Secret {secret_ref} has no usable serving certificate"
        ))
    })?;
    // After a regeneration, keep serving the current certificate for one
    // more round if the bundle still trusts it: the API server may not have
    // the new CA yet.
    if outcome.carried_over > 0
        && let Some(current) = store.cert_pem()
        && let Some(name) = serving.dns_names.first()
        && material.retired.iter().any(|r| {
            bundle_trusts(&r.cert_pem, &String::from_utf8_lossy(&current), name, now).is_ok()
        })
    {
        outcome.serving_deferred = true;
        tracing::info!(
            secret = %secret_ref,
            "regenerated serving certificate is loaded on the next round, once the new caBundle is in place"
        );
        return Ok(outcome);
    }
    outcome.serving_reloaded =
        store.replace(serving.cert_pem.as_bytes(), serving.key_pem.as_bytes())?;
    outcome.serving_not_after = Some(serving.not_after);
    if outcome.serving_reloaded {
        tracing::info!(
            secret = %secret_ref,
            issuer = %serving.issuer,
            not_after = %serving.not_after,
            "serving certificate loaded"
        );
    }
    Ok(outcome)
}

/// The owner reference the Secret gets: the webhook configuration.
fn owner_reference(config: &ValidatingWebhookConfiguration) -> Option<OwnerReference> {
    Some(OwnerReference {
        api_version: "admissionregistration.k8s.io/v1".into(),
        kind: "ValidatingWebhookConfiguration".into(),
        name: config.metadata.name.clone()?,
        uid: config.metadata.uid.clone()?,
        controller: None,
        block_owner_deletion: None,
    })
}

fn has_owner(secret: &Secret, owner: &OwnerReference) -> bool {
    secret
        .metadata
        .owner_references
        .iter()
        .flatten()
        .any(|o| o.uid == owner.uid)
}

/// Add `owner`, replacing references to other configurations of that kind
/// (a configuration that was deleted and created anew).
fn set_owner(secret: &mut Secret, owner: OwnerReference) {
    let refs = secret
        .metadata
        .owner_references
        .get_or_insert_with(Vec::new);
    refs.retain(|o| o.kind != owner.kind || o.uid == owner.uid);
    if !refs.iter().any(|o| o.uid == owner.uid) {
        refs.push(owner);
    }
}

/// What the webhook configurations hold before a regeneration.
#[derive(Default)]
struct PreviousConfigs {
    /// Their caBundles (PEM text).
    bundles: Vec<String>,
    /// The owner reference to the first one that exists.
    owner: Option<OwnerReference>,
}

async fn read_configs(client: &kube::Client, cfg: &SelfManagedConfig) -> PreviousConfigs {
    let api: Api<ValidatingWebhookConfiguration> = Api::all(client.clone());
    let mut out = PreviousConfigs::default();
    for name in &cfg.webhook_configs {
        match api.get_opt(name).await {
            Ok(Some(config)) => {
                if out.owner.is_none() {
                    out.owner = owner_reference(&config);
                }
                for webhook in config.webhooks.iter().flatten() {
                    if let Some(bundle) = &webhook.client_config.ca_bundle
                        && let Ok(text) = String::from_utf8(bundle.0.clone())
                        && !out.bundles.contains(&text)
                    {
                        out.bundles.push(text);
                    }
                }
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(
                config = %name,
                error = %e,
                "cannot read the ValidatingWebhookConfiguration before regenerating; its current CAs are not kept in the new bundle"
            ),
        }
    }
    out
}

/// Bring each configured webhook configuration's caBundle to `bundle_pem`.
/// Also returns the owner reference to the first configuration that exists.
async fn sync_ca_bundles(
    client: &kube::Client,
    cfg: &SelfManagedConfig,
    bundle_pem: &str,
) -> (Vec<(String, BundleStatus)>, Option<OwnerReference>) {
    let api: Api<ValidatingWebhookConfiguration> = Api::all(client.clone());
    let want = ByteString(bundle_pem.as_bytes().to_vec());
    let mut out = Vec::with_capacity(cfg.webhook_configs.len());
    let mut owner = None;
    for name in &cfg.webhook_configs {
        let status = sync_ca_bundle(&api, name, &want, &mut owner).await;
        if let BundleStatus::Failed(e) = &status {
            tracing::warn!(config = %name, error = %e, "caBundle not updated");
        }
        out.push((name.clone(), status));
    }
    (out, owner)
}

async fn sync_ca_bundle(
    api: &Api<ValidatingWebhookConfiguration>,
    name: &str,
    want: &ByteString,
    owner: &mut Option<OwnerReference>,
) -> BundleStatus {
    let mut last = String::new();
    for _ in 0..MAX_WRITE_ATTEMPTS {
        let config = match api.get_opt(name).await {
            Ok(Some(c)) => {
                if owner.is_none() {
                    *owner = owner_reference(&c);
                }
                c
            }
            Ok(None) => {
                tracing::warn!(
                    config = %name,
                    "ValidatingWebhookConfiguration not found; caBundle not set (is the chart installed?)"
                );
                return BundleStatus::Missing;
            }
            Err(e) => {
                return BundleStatus::Failed(format!(
                    "cannot read ValidatingWebhookConfiguration {name}: {e}"
                ));
            }
        };
        let value = match serde_json::to_value(want) {
            Ok(v) => v,
            Err(e) => {
                return BundleStatus::Failed(format!("internal: cannot encode the caBundle: {e}"));
            }
        };
        let mut ops = Vec::new();
        for (i, webhook) in config.webhooks.iter().flatten().enumerate() {
            if webhook.client_config.ca_bundle.as_ref() != Some(want) {
                ops.push(serde_json::json!({"op": "test", "path": format!("/webhooks/{i}/name"), "value": webhook.name}));
                ops.push(serde_json::json!({"op": "add", "path": format!("/webhooks/{i}/clientConfig/caBundle"), "value": value}));
            }
        }
        if ops.is_empty() {
            return BundleStatus::InSync;
        }
        let patched = ops.len() / 2;
        let Some(rv) = config.metadata.resource_version.clone() else {
            return BundleStatus::Failed(format!(
                "ValidatingWebhookConfiguration {name} has no resourceVersion"
            ));
        };
        ops.insert(
            0,
            serde_json::json!({"op": "test", "path": "/metadata/resourceVersion", "value": rv}),
        );
        let patch = match serde_json::from_value(serde_json::Value::Array(ops)) {
            Ok(p) => Patch::Json::<()>(p),
            Err(e) => {
                return BundleStatus::Failed(format!("internal: cannot build the JSON patch: {e}"));
            }
        };
        match api.patch(name, &PatchParams::default(), &patch).await {
            Ok(_) => {
                tracing::info!(config = %name, webhooks = patched, "caBundle patched");
                return BundleStatus::Patched(patched);
            }
            // 409, or 422 from a failed `test` op: it changed since we read it.
            Err(kube::Error::Api(status)) if status.code == 409 || status.code == 422 => {
                tracing::info!(config = %name, reason = %status.reason, "ValidatingWebhookConfiguration changed while patching; re-reading");
                last = format!("{} ({})", status.message, status.reason);
            }
            Err(e) => {
                return BundleStatus::Failed(format!(
                    "cannot patch ValidatingWebhookConfiguration {name}: {e}"
                ));
            }
        }
    }
    BundleStatus::Failed(format!(
        "ValidatingWebhookConfiguration {name} kept changing while patching: {last}"
    ))
}

/// Loop: reconcile every `check_every` (and at once); errors are logged and
/// retried with backoff (cap 1 min). Never returns.
pub async fn run(client: kube::Client, cfg: SelfManagedConfig, store: Arc<CertStore>) {
    let mut failures: u32 = 0;
    loop {
        let delay = match reconcile(&client, &cfg, &store, Timestamp::now()).await {
            Ok(outcome) if outcome.bundle_failures() == 0 => {
                failures = 0;
                tracing::debug!(?outcome, "webhook TLS reconciled");
                cfg.reload_every.min(cfg.check_every)
            }
            Ok(outcome) => {
                failures = failures.saturating_add(1);
                let delay = BACKOFF.after(failures).min(cfg.check_every);
                tracing::warn!(
                    failed = outcome.bundle_failures(),
                    retry_in = ?delay,
                    "webhook TLS reconciled, but some caBundles could not be updated"
                );
                delay
            }
            Err(e) => {
                failures = failures.saturating_add(1);
                let delay = BACKOFF.after(failures).min(cfg.check_every);
                tracing::error!(error = %e, retry_in = ?delay, "webhook TLS reconcile failed");
                delay
            }
        };
        tokio::time::sleep(delay).await;
    }
}
