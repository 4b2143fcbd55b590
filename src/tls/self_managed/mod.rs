//! Self-managed webhook TLS (`--tls-mode self-managed`).
//!
//! The operator keeps its own CA and serving certificate in one Secret, keeps
//! the `caBundle` of its ValidatingWebhookConfigurations in step with it, and
//! rotates both long before they expire. Every replica runs the same
//! [`reconcile`] loop and loads the serving pair from the Secret into its
//! [`CertStore`](crate::tls::CertStore); the Secret is the single source of truth.
//!
//! # Secret layout
//!
//! | key | content |
//! |---|---|
//! | `tls.crt`, `tls.key` | the serving certificate (leaf only) and its key |
//! | `ca.crt` | the CA bundle the webhook configurations must carry: the current CA first, then the next CA (during a rotation), then retired CAs that have not expired yet |
//! | `ca.key` | the current CA's key |
//! | `ca-next.crt`, `ca-next.key` | the next CA, only during a CA rotation |
//! | `ca-retired.crt` | retired CAs still in the bundle, only after a CA rotation |
//!
//! The annotation [`STATE_ANNOTATION`] (JSON) records each certificate's
//! name and validity and when the next CA was published. rcgen cannot parse
//! certificates, so these facts are cross-checked against the certificates
//! themselves with the webpki verifier that rustls uses: each CA must verify
//! a probe certificate signed with its key under its recorded name (which
//! embeds its validity), and the serving certificate must verify against the
//! current CA for every recorded DNS name, be valid at its recorded
//! `notBefore` and `notAfter` and invalid one second outside them. A Secret
//! without the annotation, or whose parts fail these checks, is treated as
//! corrupt: an unusable CA means everything is generated afresh, an unusable
//! serving certificate is re-issued from the current CA.
//!
//! # Rotation rules
//!
//! "Less than a third left" means less than 1/3 of the certificate's own
//! validity period remains.
//!
//! 1. **Serving renewal**: the serving certificate is re-issued by the
//!    *current* CA when less than a third is left (or its SANs or issuer are
//!    wrong). The bundle does not change, so the API server trusts the new
//!    certificate at once.
//! 2. **CA rotation, phase 1**: when the current CA has less than a third
//!    left, a next CA is generated and published: `ca.crt` = current + next,
//!    and the caBundles are patched to that. The serving certificate is still
//!    issued by the current CA. The time is recorded (`publishedAt`).
//! 3. **Phase 2**, no earlier than `check_every` after `publishedAt`, and only
//!    if every existing webhook configuration already carries the two-CA
//!    bundle (otherwise they are patched and the wait starts again): the next
//!    CA becomes current and issues a new serving certificate; the old CA
//!    stays in the bundle as retired. Replicas still serving the old
//!    certificate stay trusted, and an API server that has not seen the new
//!    bundle yet trusts the new certificate through the phase-1 bundle.
//! 4. **Phase 3**: a retired CA is dropped from the bundle once it has
//!    expired; no certificate it signed can be valid any more (serving
//!    certificates never outlive their CA).
//!
//! If the current CA has already expired there is nothing left to protect:
//! a next CA is promoted at once if there is one, otherwise everything is
//! generated afresh (as for a missing or corrupt Secret).
//!
//! # Regenerating without a gap
//!
//! When everything is generated afresh (a corrupt or deleted Secret), other
//! replicas still serve their old certificate until their next reload (up
//! to [`SelfManagedConfig::reload_every`]), and the API server may still
//! hold the old bundle. So the CA certificates the webhook configurations
//! and the old Secret carried are kept in the new bundle as retired CAs
//! (see [`Material::carry_over`]) for [`SelfManagedConfig::previous_ca_grace`],
//! then dropped like any retired CA. The replica that regenerated keeps
//! serving its current certificate until its next round when the old bundle
//! trusts it, so the new bundle has reached the API server before any
//! replica presents a certificate from the new CA.
//!
//! # Uninstall
//!
//! The Secret carries an owner reference to the first of
//! [`SelfManagedConfig::webhook_configs`] that exists (a namespaced object
//! may have a cluster-scoped owner). `helm uninstall` deletes that
//! configuration, and the garbage collector then deletes the Secret and the
//! CA key in it. The reference does not block the owner's deletion
//! (`blockOwnerDeletion` unset), so it needs no permission beyond reading
//! the configuration. A Secret written without it (an older version, or a
//! configuration that did not exist yet) gets it on a later round.
//!
//! # Several replicas
//!
//! Writes use optimistic concurrency: the Secret is created (409
//! AlreadyExists means another replica won: re-read) or replaced with the
//! resourceVersion that was read (409 Conflict: re-read and re-plan). The
//! webhook configurations are patched with a JSON patch whose first
//! operation tests the resourceVersion that was read. Only the configurations
//! named in [`SelfManagedConfig::webhook_configs`] are touched; a missing one
//! is skipped with a warning (the chart may not be installed yet), and a
//! failure on one never stops the others.

mod material;
mod reconcile;
mod rotation;
#[cfg(test)]
mod tests;
mod x509;

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use rustls_pki_types::ServerName;

use crate::tls::TlsError;

pub use material::{
    Ca, KEY_CA_CRT, KEY_CA_KEY, KEY_CA_NEXT_CRT, KEY_CA_NEXT_KEY, KEY_CA_RETIRED_CRT, KEY_TLS_CRT,
    KEY_TLS_KEY, Material, NextCa, RetiredCa, SERVING_NOT_AFTER_ANNOTATION, STATE_ANNOTATION,
    Serving,
};
pub use reconcile::{BundleStatus, Outcome, reconcile, run};
pub use rotation::{Action, Plan, apply, plan};
pub use x509::bundle_trusts;

/// Longest accepted validity, to keep every timestamp far from overflow.
const MAX_VALIDITY: Duration = Duration::from_secs(100 * 366 * 24 * 3600);

/// Settings of self-managed mode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SelfManagedConfig {
    /// The operator's namespace (where the Secret lives and the Service runs).
    pub namespace: String,
    /// The Secret holding the CA and serving certificate.
    pub secret_name: String,
    /// The Service in front of the webhook; the serving certificate names
    /// `<svc>`, `<svc>.<ns>`, `<svc>.<ns>.svc`, `<svc>.<ns>.svc.cluster.local`.
    pub service_name: String,
    /// ValidatingWebhookConfigurations whose caBundle is kept in step.
    pub webhook_configs: Vec<String>,
    pub ca_validity: Duration,
    pub serving_validity: Duration,
    /// The least time a new CA is in the bundle before it signs the serving
    /// certificate (and the period of the rotation checks).
    pub check_every: Duration,
    /// Period of the reconcile loop. Reconciling is idempotent and writes
    /// nothing when all is current, so every replica re-reads the Secret this
    /// often and picks up a pair another replica wrote (or regenerated) soon.
    pub reload_every: Duration,
    /// Extra subject alternative names (DNS names or IP addresses), e.g. when
    /// the API server calls the webhook by URL.
    pub extra_sans: Vec<String>,
    /// After everything is regenerated, how long the CAs the API server
    /// trusted before stay in the bundle (replicas still serving the old
    /// certificate reload within `reload_every`).
    pub previous_ca_grace: Duration,
}

impl Default for SelfManagedConfig {
    /// Everything but `namespace`, which must be set.
    fn default() -> Self {
        SelfManagedConfig {
            namespace: String::new(),
            secret_name: "residency-guard-tls".into(),
            service_name: "residency-guard".into(),
            webhook_configs: vec!["residency-guard".into()],
            ca_validity: Duration::from_secs(10 * 365 * 24 * 3600),
            serving_validity: Duration::from_secs(365 * 24 * 3600),
            check_every: Duration::from_secs(3600),
            reload_every: Duration::from_secs(30),
            extra_sans: Vec::new(),
            previous_ca_grace: Duration::from_secs(600),
        }
    }
}

impl SelfManagedConfig {
    /// The serving certificate's DNS names.
    pub fn dns_names(&self) -> Vec<String> {
        let (svc, ns) = (&self.service_name, &self.namespace);
        let mut names = vec![
            svc.clone(),
            format!("{svc}.{ns}"),
            format!("{svc}.{ns}.svc"),
            format!("{svc}.{ns}.svc.cluster.local"),
        ];
        names.extend(self.extra_sans.iter().cloned());
        names
    }

    /// Reject settings under which rotation could not work.
    pub fn validate(&self) -> Result<(), CertError> {
        let invalid = |m: String| Err(CertError::Invalid(m));
        for (what, value) in [
            ("namespace", &self.namespace),
            ("secret name", &self.secret_name),
            ("service name", &self.service_name),
        ] {
            if value.is_empty() {
                return invalid(format!("self-managed TLS: the {what} is empty"));
            }
        }
        if self.check_every.is_zero() {
            return invalid("self-managed TLS: the check interval is zero".into());
        }
        if self.ca_validity > MAX_VALIDITY || self.serving_validity > MAX_VALIDITY {
            return invalid("self-managed TLS: a validity longer than 100 years".into());
        }
        // A third of the validity is the rotation lead time; it must leave
        // room for the loop to notice (and, for a CA, for the phase-2 wait).
        if self.ca_validity < self.check_every.saturating_mul(6) {
            return invalid(format!(
                "self-managed TLS: the CA validity ({:?}) must be at least 6 times the check interval ({:?})",
                self.ca_validity, self.check_every
            ));
        }
        if self.serving_validity < self.check_every.saturating_mul(3) {
            return invalid(format!(
                "self-managed TLS: the serving validity ({:?}) must be at least 3 times the check interval ({:?})",
                self.serving_validity, self.check_every
            ));
        }
        if self.previous_ca_grace < self.reload_every.saturating_mul(2) {
            return invalid(format!(
                "self-managed TLS: the grace for previous CAs ({:?}) must be at least twice the reload interval ({:?})",
                self.previous_ca_grace, self.reload_every
            ));
        }
        for name in self.dns_names() {
            if ServerName::try_from(name.clone()).is_err() {
                return invalid(format!(
                    "self-managed TLS: {name:?} is not a valid DNS name"
                ));
            }
        }
        Ok(())
    }

    fn secret_ref(&self) -> String {
        format!("{}/{}", self.namespace, self.secret_name)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("{context}: {source}")]
    Kube {
        context: String,
        #[source]
        source: kube::Error,
    },
    #[error("cannot generate a certificate: {0}")]
    Generate(String),
    #[error("{0}")]
    Invalid(String),
    #[error("the serving certificate from the Secret cannot be loaded: {0}")]
    Tls(#[from] TlsError),
    #[error("{0}")]
    Contended(String),
}

impl From<rcgen::Error> for CertError {
    fn from(e: rcgen::Error) -> Self {
        CertError::Generate(e.to_string())
    }
}

/// `t + d`, saturating at the end of time.
fn add(t: Timestamp, d: Duration) -> Timestamp {
    SignedDuration::try_from(d)
        .ok()
        .and_then(|d| t.checked_add(d).ok())
        .unwrap_or(Timestamp::MAX)
}
