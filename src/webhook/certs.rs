//! Self-managed webhook TLS (`--tls-mode self-managed`).
//!
//! The operator keeps its own CA and serving certificate in one Secret, keeps
//! the `caBundle` of its ValidatingWebhookConfigurations in step with it, and
//! rotates both long before they expire. Every replica runs the same
//! [`reconcile`] loop and loads the serving pair from the Secret into its
//! [`CertStore`]; the Secret is the single source of truth.
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

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, Patch, PatchParams, PostParams};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PublicKeyData,
};
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::ServerCertVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use serde::{Deserialize, Serialize};

use crate::webhook::tls::{CertStore, TlsError, certified_key};

/// JSON record of the Secret's certificates (see the module documentation).
pub const STATE_ANNOTATION: &str = "residencyguard.io/tls-state";
/// Informational: when the serving certificate expires (RFC 3339).
pub const SERVING_NOT_AFTER_ANNOTATION: &str = "residencyguard.io/serving-not-after";

pub const KEY_TLS_CRT: &str = "tls.crt";
pub const KEY_TLS_KEY: &str = "tls.key";
pub const KEY_CA_CRT: &str = "ca.crt";
pub const KEY_CA_KEY: &str = "ca.key";
pub const KEY_CA_NEXT_CRT: &str = "ca-next.crt";
pub const KEY_CA_NEXT_KEY: &str = "ca-next.key";
pub const KEY_CA_RETIRED_CRT: &str = "ca-retired.crt";

const STATE_VERSION: u32 = 1;
/// Certificates start this long before they are made, for clock skew.
const BACKDATE_SECONDS: i64 = 300;
/// Writes of one Secret or one configuration before giving up for this round.
const MAX_WRITE_ATTEMPTS: u32 = 5;
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// Longest accepted validity, to keep every timestamp far from overflow.
const MAX_VALIDITY: Duration = Duration::from_secs(100 * 366 * 24 * 3600);
const CA_NAME_PREFIX: &str = "residency-guard CA";
const PROBE_NAME: &str = "probe.residency-guard.invalid";
const PEM_BEGIN: &str = "-----BEGIN CERTIFICATE-----";
const PEM_END: &str = "-----END CERTIFICATE-----";

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

fn kube_error(context: impl Into<String>) -> impl FnOnce(kube::Error) -> CertError {
    let context = context.into();
    move |source| CertError::Kube { context, source }
}

// ---------------------------------------------------------------------------
// Material: the parsed, verified content of the Secret.

/// A CA with its key.
#[derive(Clone, PartialEq, Eq)]
pub struct Ca {
    /// The certificate's common name; embeds its validity and key.
    pub name: String,
    pub cert_pem: String,
    pub key_pem: String,
    pub not_before: Timestamp,
    pub not_after: Timestamp,
}

impl fmt::Debug for Ca {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ca")
            .field("name", &self.name)
            .field("not_before", &self.not_before)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

/// The next CA during a rotation, and when it was put in the bundle.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NextCa {
    pub ca: Ca,
    pub published_at: Timestamp,
}

/// A former CA kept in the bundle until it expires (no key).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetiredCa {
    pub name: String,
    pub cert_pem: String,
    pub not_after: Timestamp,
}

/// The serving certificate (leaf) and key.
#[derive(Clone, PartialEq, Eq)]
pub struct Serving {
    /// Name of the CA that issued it.
    pub issuer: String,
    pub cert_pem: String,
    pub key_pem: String,
    pub not_before: Timestamp,
    pub not_after: Timestamp,
    pub dns_names: Vec<String>,
}

impl fmt::Debug for Serving {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Serving")
            .field("issuer", &self.issuer)
            .field("not_before", &self.not_before)
            .field("not_after", &self.not_after)
            .field("dns_names", &self.dns_names)
            .finish_non_exhaustive()
    }
}

/// What the Secret holds, after verification. Parts that failed it are
/// `None` (or left out) and explained in `problems`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Material {
    pub ca: Option<Ca>,
    pub next: Option<NextCa>,
    pub retired: Vec<RetiredCa>,
    pub serving: Option<Serving>,
    /// `ca.crt` as stored, to detect a bundle that differs from the parts.
    pub stored_bundle: Option<String>,
    pub problems: Vec<String>,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct State {
    version: u32,
    ca: CaState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    next: Option<NextState>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    retired: Vec<RetiredState>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    serving: Option<ServingState>,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct CaState {
    name: String,
    not_before: Timestamp,
    not_after: Timestamp,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct NextState {
    name: String,
    not_before: Timestamp,
    not_after: Timestamp,
    published_at: Timestamp,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RetiredState {
    name: String,
    not_after: Timestamp,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ServingState {
    issuer: String,
    not_before: Timestamp,
    not_after: Timestamp,
    dns_names: Vec<String>,
}

impl Material {
    /// A new CA and serving certificate.
    pub fn generate(cfg: &SelfManagedConfig, now: Timestamp) -> Result<Material, CertError> {
        apply(
            &Plan {
                actions: vec![Action::GenerateAll {
                    reason: "requested".into(),
                }],
            },
            None,
            cfg,
            now,
        )
    }

    /// The CA bundle: current, next, then retired CAs.
    pub fn bundle_pem(&self) -> String {
        let mut out = String::new();
        if let Some(ca) = &self.ca {
            out.push_str(&ca.cert_pem);
        }
        if let Some(next) = &self.next {
            out.push_str(&next.ca.cert_pem);
        }
        for r in &self.retired {
            out.push_str(&r.cert_pem);
        }
        out
    }

    /// Keep CA certificates the API server may still trust (from the
    /// webhook configurations' caBundles and a replaced Secret's `ca.crt`)
    /// in the bundle as retired CAs until `until`. Blocks that are not
    /// usable CA certificates, and CAs the bundle already holds, are
    /// skipped. Returns how many were kept.
    pub fn carry_over<'a>(
        &mut self,
        pems: impl IntoIterator<Item = &'a str>,
        until: Timestamp,
    ) -> usize {
        let mut kept = 0;
        for text in pems {
            for block in pem_blocks(text) {
                if self.bundle_pem().contains(block.as_str()) || Anchors::new(&block).is_err() {
                    continue;
                }
                kept += 1;
                self.retired.push(RetiredCa {
                    name: format!(
                        "previous CA {} (kept until {until})",
                        self.retired.len() + 1
                    ),
                    cert_pem: block,
                    not_after: until,
                });
            }
        }
        self.stored_bundle = Some(self.bundle_pem());
        kept
    }

    /// Read and verify a Secret. Never fails: what cannot be used is left
    /// out and explained in `problems`.
    pub fn from_secret(secret: &Secret) -> Material {
        let mut m = Material::default();
        let data = secret.data.as_ref();
        let text = |key: &str| -> Result<String, String> {
            let bytes = data
                .and_then(|d| d.get(key))
                .ok_or_else(|| format!("{key} is missing"))?;
            String::from_utf8(bytes.0.clone()).map_err(|_| format!("{key} is not text"))
        };
        m.stored_bundle = text(KEY_CA_CRT).ok();
        let annotation = secret
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(STATE_ANNOTATION));
        let Some(annotation) = annotation else {
            m.problems
                .push(format!("the annotation {STATE_ANNOTATION} is missing"));
            return m;
        };
        let state: State = match serde_json::from_str(annotation) {
            Ok(s) => s,
            Err(e) => {
                m.problems.push(format!(
                    "the annotation {STATE_ANNOTATION} is unreadable: {e}"
                ));
                return m;
            }
        };
        if state.version != STATE_VERSION {
            m.problems.push(format!(
                "the annotation {STATE_ANNOTATION} has version {}, expected {STATE_VERSION}",
                state.version
            ));
            return m;
        }

        let ca = (|| {
            let bundle = text(KEY_CA_CRT)?;
            let first = pem_blocks(&bundle)
                .into_iter()
                .next()
                .ok_or_else(|| format!("{KEY_CA_CRT} holds no certificate"))?;
            check_ca(
                &state.ca.name,
                state.ca.not_before,
                state.ca.not_after,
                first,
                text(KEY_CA_KEY)?,
            )
        })();
        let ca = match ca {
            Ok(ca) => ca,
            Err(e) => {
                m.problems.push(format!("current CA: {e}"));
                return m;
            }
        };

        if let Some(next) = &state.next {
            let checked = text(KEY_CA_NEXT_CRT).and_then(|cert| {
                let key = text(KEY_CA_NEXT_KEY)?;
                let cert = pem_blocks(&cert)
                    .into_iter()
                    .next()
                    .ok_or_else(|| format!("{KEY_CA_NEXT_CRT} holds no certificate"))?;
                check_ca(&next.name, next.not_before, next.not_after, cert, key)
            });
            match checked {
                Ok(c) => {
                    m.next = Some(NextCa {
                        ca: c,
                        published_at: next.published_at,
                    })
                }
                Err(e) => m.problems.push(format!("next CA (dropped): {e}")),
            }
        }

        if !state.retired.is_empty() {
            let checked = text(KEY_CA_RETIRED_CRT).and_then(|pem| {
                let blocks = pem_blocks(&pem);
                if blocks.len() != state.retired.len() {
                    return Err(format!(
                        "{KEY_CA_RETIRED_CRT} holds {} certificates, the annotation lists {}",
                        blocks.len(),
                        state.retired.len()
                    ));
                }
                blocks
                    .into_iter()
                    .zip(&state.retired)
                    .map(|(cert_pem, r)| {
                        Anchors::new(&cert_pem)?;
                        Ok(RetiredCa {
                            name: r.name.clone(),
                            cert_pem,
                            not_after: r.not_after,
                        })
                    })
                    .collect::<Result<Vec<_>, String>>()
            });
            match checked {
                Ok(r) => m.retired = r,
                Err(e) => m.problems.push(format!("retired CAs (dropped): {e}")),
            }
        }

        match &state.serving {
            None => m
                .problems
                .push("the annotation records no serving certificate".into()),
            Some(s) => {
                let checked = text(KEY_TLS_CRT).and_then(|cert| {
                    let serving = Serving {
                        issuer: s.issuer.clone(),
                        cert_pem: cert,
                        key_pem: text(KEY_TLS_KEY)?,
                        not_before: s.not_before,
                        not_after: s.not_after,
                        dns_names: s.dns_names.clone(),
                    };
                    check_serving(&serving, &ca)?;
                    Ok(serving)
                });
                match checked {
                    Ok(s) => m.serving = Some(s),
                    Err(e) => m.problems.push(format!("serving certificate: {e}")),
                }
            }
        }
        m.ca = Some(ca);
        m
    }

    /// The Secret holding this material. `base` is the Secret that was read
    /// (its resourceVersion, type and other metadata are kept).
    pub fn to_secret(
        &self,
        cfg: &SelfManagedConfig,
        base: Option<&Secret>,
    ) -> Result<Secret, CertError> {
        let incomplete = || {
            CertError::Invalid(
                "internal: cannot write material without a CA and serving certificate".into(),
            )
        };
        let ca = self.ca.as_ref().ok_or_else(incomplete)?;
        let serving = self.serving.as_ref().ok_or_else(incomplete)?;
        let state = State {
            version: STATE_VERSION,
            ca: CaState {
                name: ca.name.clone(),
                not_before: ca.not_before,
                not_after: ca.not_after,
            },
            next: self.next.as_ref().map(|n| NextState {
                name: n.ca.name.clone(),
                not_before: n.ca.not_before,
                not_after: n.ca.not_after,
                published_at: n.published_at,
            }),
            retired: self
                .retired
                .iter()
                .map(|r| RetiredState {
                    name: r.name.clone(),
                    not_after: r.not_after,
                })
                .collect(),
            serving: Some(ServingState {
                issuer: serving.issuer.clone(),
                not_before: serving.not_before,
                not_after: serving.not_after,
                dns_names: serving.dns_names.clone(),
            }),
        };
        let state = serde_json::to_string(&state).map_err(|e| {
            CertError::Invalid(format!("internal: cannot encode the TLS state: {e}"))
        })?;

        let mut data = BTreeMap::new();
        let mut put = |k: &str, v: &str| {
            data.insert(k.to_string(), ByteString(v.as_bytes().to_vec()));
        };
        put(KEY_TLS_CRT, &serving.cert_pem);
        put(KEY_TLS_KEY, &serving.key_pem);
        put(KEY_CA_CRT, &self.bundle_pem());
        put(KEY_CA_KEY, &ca.key_pem);
        if let Some(next) = &self.next {
            put(KEY_CA_NEXT_CRT, &next.ca.cert_pem);
            put(KEY_CA_NEXT_KEY, &next.ca.key_pem);
        }
        if !self.retired.is_empty() {
            let retired: String = self.retired.iter().map(|r| r.cert_pem.as_str()).collect();
            put(KEY_CA_RETIRED_CRT, &retired);
        }

        let mut secret = base.cloned().unwrap_or_default();
        secret.metadata.name = Some(cfg.secret_name.clone());
        secret.metadata.namespace = Some(cfg.namespace.clone());
        secret.metadata.managed_fields = None;
        if base.is_none() {
            secret.metadata.labels = Some(BTreeMap::from([(
                "app.kubernetes.io/managed-by".to_string(),
                "residency-guard".to_string(),
            )]));
        }
        let annotations = secret
            .metadata
            .annotations
            .get_or_insert_with(BTreeMap::new);
        annotations.insert(STATE_ANNOTATION.into(), state);
        annotations.insert(
            SERVING_NOT_AFTER_ANNOTATION.into(),
            serving.not_after.to_string(),
        );
        // The type is immutable; keep whatever an existing Secret has.
        if secret.type_.is_none() {
            secret.type_ = Some("kubernetes.io/tls".into());
        }
        secret.data = Some(data);
        secret.string_data = None;
        Ok(secret)
    }
}

// ---------------------------------------------------------------------------
// Planning.

/// One change to the Secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// No usable CA: a new CA and serving certificate, bundle = the new CA.
    GenerateAll { reason: String },
    /// Phase 1: a next CA joins the bundle.
    StartCaRotation { reason: String },
    /// The bundle was not verifiably in place: phase 2 waits again from now.
    RestartRotationWait { reason: String },
    /// Phase 2: the next CA becomes current and issues the serving
    /// certificate; the old CA is retired (kept in the bundle).
    PromoteNextCa { reason: String },
    /// Phase 3: expired retired CAs leave the bundle.
    DropRetiredCas { names: Vec<String> },
    /// A new serving certificate from the current CA.
    RenewServing { reason: String },
    /// Nothing to generate, but the stored Secret is not in canonical form
    /// (a dropped part, a bundle that differs from the parts).
    RewriteSecret { reason: String },
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::GenerateAll { reason } => {
                write!(f, "generate a new CA and serving certificate ({reason})")
            }
            Action::StartCaRotation { reason } => {
                write!(f, "CA rotation phase 1: publish a next CA ({reason})")
            }
            Action::RestartRotationWait { reason } => {
                write!(f, "CA rotation: wait again before phase 2 ({reason})")
            }
            Action::PromoteNextCa { reason } => {
                write!(
                    f,
                    "CA rotation phase 2: promote the next CA and re-issue the serving certificate ({reason})"
                )
            }
            Action::DropRetiredCas { names } => {
                write!(
                    f,
                    "CA rotation phase 3: drop expired CAs from the bundle ({})",
                    names.join(", ")
                )
            }
            Action::RenewServing { reason } => {
                write!(f, "re-issue the serving certificate ({reason})")
            }
            Action::RewriteSecret { reason } => write!(f, "rewrite the Secret ({reason})"),
        }
    }
}

/// What [`reconcile`] must write; empty when the Secret is fine.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub actions: Vec<Action>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.actions.is_empty()
    }

    fn one(action: Action) -> Plan {
        Plan {
            actions: vec![action],
        }
    }

    fn promotes(&self) -> bool {
        self.actions
            .iter()
            .any(|a| matches!(a, Action::PromoteNextCa { .. }))
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, a) in self.actions.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{a}")?;
        }
        Ok(())
    }
}

/// Less than a third of `[not_before, not_after]` is left at `now`.
fn third_left(not_before: Timestamp, not_after: Timestamp, now: Timestamp) -> bool {
    let total = i128::from(not_after.as_second()) - i128::from(not_before.as_second());
    let left = i128::from(not_after.as_second()) - i128::from(now.as_second());
    left * 3 < total
}

fn add(t: Timestamp, d: Duration) -> Timestamp {
    SignedDuration::try_from(d)
        .ok()
        .and_then(|d| t.checked_add(d).ok())
        .unwrap_or(Timestamp::MAX)
}

/// Why the serving certificate must be re-issued by `ca`, if it must.
fn serving_renewal(
    m: &Material,
    ca: &Ca,
    cfg: &SelfManagedConfig,
    now: Timestamp,
) -> Option<String> {
    match &m.serving {
        None => Some("there is no usable serving certificate".to_string()),
        Some(s) if s.issuer != ca.name => {
            Some(format!("it was issued by {}, not the current CA", s.issuer))
        }
        Some(s) if s.dns_names != cfg.dns_names() => Some(format!(
            "its names {:?} differ from {:?}",
            s.dns_names,
            cfg.dns_names()
        )),
        Some(s) if third_left(s.not_before, s.not_after, now) => {
            Some(format!("it expires at {}", s.not_after))
        }
        Some(_) => None,
    }
}

/// Decide what to change; see the module documentation for the rules.
pub fn plan(existing: Option<&Material>, cfg: &SelfManagedConfig, now: Timestamp) -> Plan {
    let Some(m) = existing else {
        return Plan::one(Action::GenerateAll {
            reason: "no Secret".into(),
        });
    };
    let Some(ca) = &m.ca else {
        return Plan::one(Action::GenerateAll {
            reason: format!("the Secret is unusable: {}", m.problems.join("; ")),
        });
    };
    let mut actions = Vec::new();
    let next = m.next.as_ref().filter(|n| n.ca.not_after > now);

    if now >= ca.not_after {
        if next.is_none() {
            return Plan::one(Action::GenerateAll {
                reason: format!("the CA expired at {}", ca.not_after),
            });
        }
        actions.push(Action::PromoteNextCa {
            reason: format!("the current CA expired at {}", ca.not_after),
        });
    } else if let Some(n) = next {
        if now >= add(n.published_at, cfg.check_every) {
            actions.push(Action::PromoteNextCa {
                reason: format!(
                    "the current CA expires at {}; the next CA has been in the bundle since {}",
                    ca.not_after, n.published_at
                ),
            });
        }
    } else if third_left(ca.not_before, ca.not_after, now) {
        actions.push(Action::StartCaRotation {
            reason: format!("the CA expires at {}", ca.not_after),
        });
    }
    let promotes = !actions.is_empty() && matches!(actions[0], Action::PromoteNextCa { .. });

    let expired: Vec<String> = m
        .retired
        .iter()
        .filter(|r| r.not_after <= now)
        .map(|r| r.name.clone())
        .collect();
    if !expired.is_empty() {
        actions.push(Action::DropRetiredCas { names: expired });
    }

    if !promotes && let Some(reason) = serving_renewal(m, ca, cfg, now) {
        actions.push(Action::RenewServing { reason });
    }

    if actions.is_empty() {
        if m.next.is_some() && next.is_none() {
            actions.push(Action::RewriteSecret {
                reason: "the next CA has expired".into(),
            });
        } else if !m.problems.is_empty() {
            actions.push(Action::RewriteSecret {
                reason: m.problems.join("; "),
            });
        } else if m.stored_bundle.as_deref() != Some(m.bundle_pem().as_str()) {
            actions.push(Action::RewriteSecret {
                reason: format!("{KEY_CA_CRT} differs from the CAs it should hold"),
            });
        }
    }
    Plan { actions }
}

/// Carry out a plan in memory (generates keys; no I/O).
pub fn apply(
    plan: &Plan,
    existing: Option<&Material>,
    cfg: &SelfManagedConfig,
    now: Timestamp,
) -> Result<Material, CertError> {
    let now =
        Timestamp::from_second(now.as_second()).map_err(|e| CertError::Invalid(e.to_string()))?;
    let mut m = if plan
        .actions
        .iter()
        .any(|a| matches!(a, Action::GenerateAll { .. }))
    {
        let ca = new_ca(cfg, now)?;
        let serving = issue_serving(&ca, cfg, now)?;
        Material {
            ca: Some(ca),
            serving: Some(serving),
            ..Material::default()
        }
    } else {
        let mut m = existing.cloned().ok_or_else(|| {
            CertError::Invalid("internal: the plan needs the existing material".into())
        })?;
        if m.ca.is_none() {
            return Err(CertError::Invalid(
                "internal: the plan needs a usable CA".into(),
            ));
        }
        m.problems.clear();
        for action in &plan.actions {
            match action {
                Action::StartCaRotation { .. } => {
                    m.next = Some(NextCa {
                        ca: new_ca(cfg, now)?,
                        published_at: now,
                    });
                }
                Action::RestartRotationWait { .. } => {
                    if let Some(n) = &mut m.next {
                        n.published_at = now;
                    }
                }
                Action::PromoteNextCa { .. } => {
                    let next = m.next.take().ok_or_else(|| {
                        CertError::Invalid("internal: no next CA to promote".into())
                    })?;
                    m.serving = Some(issue_serving(&next.ca, cfg, now)?);
                    if let Some(old) = m.ca.replace(next.ca) {
                        m.retired.push(RetiredCa {
                            name: old.name,
                            cert_pem: old.cert_pem,
                            not_after: old.not_after,
                        });
                    }
                }
                Action::RenewServing { .. } => {
                    let ca =
                        m.ca.as_ref()
                            .ok_or_else(|| CertError::Invalid("internal: no CA".into()))?;
                    m.serving = Some(issue_serving(ca, cfg, now)?);
                }
                Action::DropRetiredCas { .. }
                | Action::RewriteSecret { .. }
                | Action::GenerateAll { .. } => {}
            }
        }
        m
    };
    m.next = m.next.filter(|n| n.ca.not_after > now);
    m.retired.retain(|r| r.not_after > now);
    m.stored_bundle = Some(m.bundle_pem());
    Ok(m)
}

// ---------------------------------------------------------------------------
// Certificates.

fn ca_name(not_before: Timestamp, not_after: Timestamp, key: &KeyPair) -> String {
    let raw = key.public_key_raw();
    let tail = &raw[raw.len().saturating_sub(4)..];
    let hex: String = tail.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{CA_NAME_PREFIX} {}-{} {hex}",
        not_before.as_second(),
        not_after.as_second()
    )
}

fn set_validity(
    p: &mut CertificateParams,
    not_before: Timestamp,
    not_after: Timestamp,
) -> Result<(), CertError> {
    let secs = |t: Timestamp| {
        u64::try_from(t.as_second())
            .map(Duration::from_secs)
            .map_err(|_| CertError::Invalid(format!("time {t} is before 1970")))
    };
    let epoch = rcgen::date_time_ymd(1970, 1, 1);
    p.not_before = epoch + secs(not_before)?;
    p.not_after = epoch + secs(not_after)?;
    Ok(())
}

fn ca_params(
    name: &str,
    not_before: Timestamp,
    not_after: Timestamp,
) -> Result<CertificateParams, CertError> {
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    set_validity(&mut p, not_before, not_after)?;
    Ok(p)
}

impl Ca {
    fn issuer(&self) -> Result<Issuer<'static, KeyPair>, CertError> {
        let key = KeyPair::from_pem(&self.key_pem)
            .map_err(|e| CertError::Invalid(format!("CA {}: key: {e}", self.name)))?;
        Ok(Issuer::new(
            ca_params(&self.name, self.not_before, self.not_after)?,
            key,
        ))
    }
}

fn new_ca(cfg: &SelfManagedConfig, now: Timestamp) -> Result<Ca, CertError> {
    let key = KeyPair::generate()?;
    let not_before = now - SignedDuration::from_secs(BACKDATE_SECONDS);
    let not_after = add(now, cfg.ca_validity);
    let name = ca_name(not_before, not_after, &key);
    let cert = ca_params(&name, not_before, not_after)?.self_signed(&key)?;
    let ca = Ca {
        name,
        cert_pem: normalize_pem(&cert.pem()),
        key_pem: key.serialize_pem(),
        not_before,
        not_after,
    };
    let cert_pem = ca.cert_pem.clone();
    check_ca(
        &ca.name,
        not_before,
        not_after,
        cert_pem,
        ca.key_pem.clone(),
    )
    .map_err(|e| CertError::Generate(format!("the new CA fails its own check: {e}")))
}

fn issue_serving(ca: &Ca, cfg: &SelfManagedConfig, now: Timestamp) -> Result<Serving, CertError> {
    let not_before = (now - SignedDuration::from_secs(BACKDATE_SECONDS)).max(ca.not_before);
    let not_after = add(now, cfg.serving_validity).min(ca.not_after);
    if not_after <= now {
        return Err(CertError::Generate(format!(
            "CA {} expires at {}, before a serving certificate could be used",
            ca.name, ca.not_after
        )));
    }
    let names = cfg.dns_names();
    let key = KeyPair::generate()?;
    let mut p = CertificateParams::new(names.clone())?;
    let mut dn = DistinguishedName::new();
    dn.push(
        DnType::CommonName,
        format!("{}.{}.svc", cfg.service_name, cfg.namespace),
    );
    p.distinguished_name = dn;
    p.is_ca = IsCa::ExplicitNoCa;
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    p.use_authority_key_identifier_extension = true;
    set_validity(&mut p, not_before, not_after)?;
    let cert = p.signed_by(&key, &ca.issuer()?)?;
    let serving = Serving {
        issuer: ca.name.clone(),
        cert_pem: normalize_pem(&cert.pem()),
        key_pem: key.serialize_pem(),
        not_before,
        not_after,
        dns_names: names,
    };
    check_serving(&serving, ca).map_err(|e| {
        CertError::Generate(format!(
            "the new serving certificate fails its own check: {e}"
        ))
    })?;
    Ok(serving)
}

/// Verify a CA: its name matches its key and validity, and a certificate
/// signed with the key under that name verifies against the certificate.
fn check_ca(
    name: &str,
    not_before: Timestamp,
    not_after: Timestamp,
    cert_pem: String,
    key_pem: String,
) -> Result<Ca, String> {
    if not_before >= not_after {
        return Err(format!("validity {not_before}..{not_after} is empty"));
    }
    let key = KeyPair::from_pem(&key_pem).map_err(|e| format!("the key is unreadable: {e}"))?;
    if ca_name(not_before, not_after, &key) != name {
        return Err(format!(
            "the recorded name {name:?} does not match the key and validity"
        ));
    }
    let anchors = Anchors::new(&cert_pem)?;
    let ca = Ca {
        name: name.to_string(),
        cert_pem,
        key_pem,
        not_before,
        not_after,
    };
    let issuer = ca.issuer().map_err(|e| e.to_string())?;
    let mut p = CertificateParams::new(vec![PROBE_NAME.to_string()]).map_err(|e| e.to_string())?;
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    p.use_authority_key_identifier_extension = true;
    set_validity(&mut p, not_before, not_after).map_err(|e| e.to_string())?;
    let probe = p
        .signed_by(issuer.key(), &issuer)
        .map_err(|e| e.to_string())?;
    anchors
        .verify(probe.der(), PROBE_NAME, not_before)
        .map_err(|e| format!("the certificate does not match the key or the recorded name: {e}"))?;
    Ok(ca)
}

/// Verify a serving certificate against the CA that should have issued it.
fn check_serving(s: &Serving, ca: &Ca) -> Result<(), String> {
    if s.issuer != ca.name {
        return Err(format!(
            "recorded as issued by {}, not the current CA {}",
            s.issuer, ca.name
        ));
    }
    let Some(first) = s.dns_names.first() else {
        return Err("no DNS names recorded".into());
    };
    let leaf = CertificateDer::from_pem_slice(s.cert_pem.as_bytes())
        .map_err(|e| format!("{KEY_TLS_CRT} is unreadable: {e}"))?;
    let key =
        KeyPair::from_pem(&s.key_pem).map_err(|e| format!("{KEY_TLS_KEY} is unreadable: {e}"))?;
    let spki = key.subject_public_key_info();
    if !leaf.windows(spki.len()).any(|w| w == spki.as_slice()) {
        return Err(format!("{KEY_TLS_KEY} does not belong to {KEY_TLS_CRT}"));
    }
    certified_key(s.cert_pem.as_bytes(), s.key_pem.as_bytes()).map_err(|e| e.to_string())?;
    let anchors = Anchors::new(&ca.cert_pem)?;
    for name in &s.dns_names {
        anchors
            .verify(&leaf, name, s.not_before)
            .map_err(|e| format!("not valid for {name} from CA {}: {e}", ca.name))?;
    }
    anchors
        .verify(&leaf, first, s.not_after)
        .map_err(|e| format!("not valid at its recorded expiry {}: {e}", s.not_after))?;
    let outside = |at: Timestamp, want: fn(&rustls::Error) -> bool, what: &str| match anchors
        .verify(&leaf, first, at)
    {
        Err(e) if want(&e) => Ok(()),
        _ => Err(format!(
            "the recorded {what} does not match the certificate"
        )),
    };
    outside(
        s.not_after + SignedDuration::from_secs(1),
        is_expired,
        "expiry",
    )?;
    outside(
        s.not_before - SignedDuration::from_secs(1),
        is_not_yet_valid,
        "start",
    )?;
    Ok(())
}

fn is_expired(e: &rustls::Error) -> bool {
    use rustls::CertificateError as C;
    matches!(
        e,
        rustls::Error::InvalidCertificate(C::Expired | C::ExpiredContext { .. })
    )
}

fn is_not_yet_valid(e: &rustls::Error) -> bool {
    use rustls::CertificateError as C;
    matches!(
        e,
        rustls::Error::InvalidCertificate(C::NotValidYet | C::NotValidYetContext { .. })
    )
}

/// A webpki verifier trusting exactly the given CA certificates.
struct Anchors(Arc<WebPkiServerVerifier>);

impl Anchors {
    fn new(ca_pem: &str) -> Result<Anchors, String> {
        let mut roots = rustls::RootCertStore::empty();
        for der in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
            let der = der.map_err(|e| format!("a CA certificate is unreadable: {e}"))?;
            roots
                .add(der)
                .map_err(|e| format!("a CA certificate is unusable: {e}"))?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .map(Anchors)
            .map_err(|e| format!("no usable CA certificate: {e}"))
    }

    fn verify(
        &self,
        leaf: &CertificateDer<'_>,
        name: &str,
        at: Timestamp,
    ) -> Result<(), rustls::Error> {
        let name = ServerName::try_from(name.to_string())
            .map_err(|e| rustls::Error::General(format!("{name:?} is not a DNS name: {e}")))?;
        let at = UnixTime::since_unix_epoch(Duration::from_secs(
            u64::try_from(at.as_second()).unwrap_or(0),
        ));
        self.0
            .verify_server_cert(leaf, &[], &name, &[], at)
            .map(|_| ())
    }
}

/// Whether `bundle_pem` trusts `leaf_pem` for `name` at `at` (for tests and
/// diagnostics).
pub fn bundle_trusts(
    bundle_pem: &str,
    leaf_pem: &str,
    name: &str,
    at: Timestamp,
) -> Result<(), String> {
    let leaf = CertificateDer::from_pem_slice(leaf_pem.as_bytes()).map_err(|e| e.to_string())?;
    Anchors::new(bundle_pem)?
        .verify(&leaf, name, at)
        .map_err(|e| e.to_string())
}

/// The CERTIFICATE blocks of a PEM text, each ending in one newline.
fn pem_blocks(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find(PEM_BEGIN) {
        let block = &rest[start..];
        let Some(end) = block.find(PEM_END) else {
            break;
        };
        let end = end + PEM_END.len();
        out.push(format!("{}\n", block[..end].replace("\r\n", "\n")));
        rest = &block[end..];
    }
    out
}

fn normalize_pem(text: &str) -> String {
    pem_blocks(text).concat()
}

// ---------------------------------------------------------------------------
// Reconciling against the API server.

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

fn backoff(failures: u32) -> Duration {
    Duration::from_secs(1u64 << failures.saturating_sub(1).min(6)).min(MAX_BACKOFF)
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
                let delay = backoff(failures).min(cfg.check_every);
                tracing::warn!(
                    failed = outcome.bundle_failures(),
                    retry_in = ?delay,
                    "webhook TLS reconciled, but some caBundles could not be updated"
                );
                delay
            }
            Err(e) => {
                failures = failures.saturating_add(1);
                let delay = backoff(failures).min(cfg.check_every);
                tracing::error!(error = %e, retry_in = ?delay, "webhook TLS reconcile failed");
                delay
            }
        };
        tokio::time::sleep(delay).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A named way to damage a Secret.
    type Corruption<'a> = (&'static str, Box<dyn Fn(&mut Secret) + 'a>);

    fn cfg() -> SelfManagedConfig {
        SelfManagedConfig {
            namespace: "rg-system".into(),
            ..SelfManagedConfig::default()
        }
    }

    fn t0() -> Timestamp {
        "2026-01-01T00:00:00Z".parse().expect("timestamp")
    }

    fn days(n: i64) -> SignedDuration {
        SignedDuration::from_hours(24 * n)
    }

    /// Write and read back, as another replica would see it.
    fn roundtrip(m: &Material) -> Material {
        Material::from_secret(&m.to_secret(&cfg(), None).expect("secret"))
    }

    fn step(m: &Material, now: Timestamp) -> (Plan, Material) {
        let p = plan(Some(m), &cfg(), now);
        if p.is_empty() {
            return (p, m.clone());
        }
        let next = roundtrip(&apply(&p, Some(m), &cfg(), now).expect("apply"));
        assert!(next.problems.is_empty(), "{:?}", next.problems);
        (p, next)
    }

    fn serving(m: &Material) -> &Serving {
        m.serving.as_ref().expect("serving")
    }

    fn ca(m: &Material) -> &Ca {
        m.ca.as_ref().expect("ca")
    }

    fn kinds(p: &Plan) -> Vec<&'static str> {
        p.actions
            .iter()
            .map(|a| match a {
                Action::GenerateAll { .. } => "generate",
                Action::StartCaRotation { .. } => "phase1",
                Action::RestartRotationWait { .. } => "restart-wait",
                Action::PromoteNextCa { .. } => "phase2",
                Action::DropRetiredCas { .. } => "phase3",
                Action::RenewServing { .. } => "renew",
                Action::RewriteSecret { .. } => "rewrite",
            })
            .collect()
    }

    /// The overlap invariant: the serving certificate is trusted by the
    /// bundle stored with it, and across a change by both the old and the
    /// new bundle (the API server may hold either), and the old serving
    /// certificate (a replica may not have reloaded yet) by the new bundle.
    fn assert_overlap(before: &Material, after: &Material, now: Timestamp) {
        let name = "residency-guard.rg-system.svc";
        let new = serving(after);
        bundle_trusts(&after.bundle_pem(), &new.cert_pem, name, now)
            .expect("new bundle trusts new serving cert");
        assert!(
            after.bundle_pem().contains(ca(after).cert_pem.as_str()),
            "bundle holds the CA that signed the serving cert"
        );
        bundle_trusts(&before.bundle_pem(), &new.cert_pem, name, now)
            .expect("old bundle trusts new serving cert");
        let old = serving(before);
        if old.not_after > now {
            bundle_trusts(&after.bundle_pem(), &old.cert_pem, name, now)
                .expect("new bundle trusts old serving cert");
        }
    }

    #[test]
    fn no_secret_creates_everything() {
        let p = plan(None, &cfg(), t0());
        assert_eq!(kinds(&p), ["generate"]);
        let m = roundtrip(&apply(&p, None, &cfg(), t0()).expect("apply"));
        assert!(m.problems.is_empty(), "{:?}", m.problems);
        assert!(m.next.is_none() && m.retired.is_empty());
        assert_eq!(m.bundle_pem(), ca(&m).cert_pem);
        assert_eq!(serving(&m).issuer, ca(&m).name);
        let name = "residency-guard.rg-system.svc";
        bundle_trusts(&m.bundle_pem(), &serving(&m).cert_pem, name, t0()).expect("trusted");
    }

    #[test]
    fn fresh_secret_needs_nothing() {
        let m = roundtrip(&Material::generate(&cfg(), t0()).expect("generate"));
        assert!(m.problems.is_empty(), "{:?}", m.problems);
        for at in [t0(), t0() + days(1), t0() + days(200)] {
            assert!(plan(Some(&m), &cfg(), at).is_empty(), "at {at}");
        }
    }

    #[test]
    fn serving_near_expiry_renews_only_the_serving_cert() {
        let m = roundtrip(&Material::generate(&cfg(), t0()).expect("generate"));
        let now = t0() + days(250); // less than a third of a year left
        let (p, after) = step(&m, now);
        assert_eq!(kinds(&p), ["renew"]);
        assert_eq!(ca(&after), ca(&m));
        assert_eq!(after.bundle_pem(), m.bundle_pem());
        assert_ne!(serving(&after).cert_pem, serving(&m).cert_pem);
        assert_eq!(serving(&after).not_after, add(now, cfg().serving_validity));
        assert_overlap(&m, &after, now);
        assert!(plan(Some(&after), &cfg(), now).is_empty());
    }

    #[test]
    fn ca_rotation_runs_three_phases_with_overlap() {
        let c = cfg();
        let mut m = roundtrip(&Material::generate(&c, t0()).expect("generate"));
        let old_ca = ca(&m).clone();
        // Keep the serving cert fresh so that only CA rotation is in play.
        let rotation = t0() + days(365 * 7); // under a third of 10 years left
        let (p, renewed) = step(&m, t0() + days(365 * 6 + 180));
        assert_eq!(kinds(&p), ["renew"]);
        m = renewed;

        // Phase 1: next CA joins the bundle; serving cert unchanged.
        let (p, p1) = step(&m, rotation);
        assert_eq!(kinds(&p), ["phase1"]);
        let next = p1.next.clone().expect("next CA");
        assert_eq!(ca(&p1), &old_ca);
        assert_eq!(serving(&p1), serving(&m));
        assert_eq!(
            p1.bundle_pem(),
            format!("{}{}", old_ca.cert_pem, next.ca.cert_pem)
        );
        assert_overlap(&m, &p1, rotation);

        // Not before check_every has passed.
        let early = rotation + SignedDuration::from_mins(59);
        assert!(plan(Some(&p1), &c, early).is_empty());

        // Phase 2: the next CA becomes current and signs the serving cert;
        // the old CA stays in the bundle.
        let due = rotation + SignedDuration::from_hours(1);
        let (p, p2) = step(&p1, due);
        assert_eq!(kinds(&p), ["phase2"]);
        assert_eq!(ca(&p2), &next.ca);
        assert_eq!(serving(&p2).issuer, next.ca.name);
        assert_eq!(p2.retired.len(), 1);
        assert_eq!(p2.retired[0].name, old_ca.name);
        assert!(p2.next.is_none());
        assert_overlap(&p1, &p2, due);

        // Until the old CA expires nothing changes but serving renewals.
        let mut cur = p2;
        let mut at = due;
        while at < old_ca.not_after {
            at += days(30);
            let (p, after) = step(&cur, at);
            if !p.is_empty() {
                assert!(
                    kinds(&p).iter().all(|k| *k == "renew" || *k == "phase3"),
                    "{p}"
                );
                assert_overlap(&cur, &after, at);
            }
            if at < old_ca.not_after {
                assert!(after.retired.iter().any(|r| r.name == old_ca.name));
            }
            cur = after;
        }
        // Phase 3 happened: the old CA is gone, the new one stays.
        assert!(cur.retired.is_empty());
        assert_eq!(cur.bundle_pem(), next.ca.cert_pem);
    }

    #[test]
    fn twenty_five_years_of_weekly_checks_keep_the_overlap() {
        let c = cfg();
        let mut m = roundtrip(&Material::generate(&c, t0()).expect("generate"));
        let mut seen = Vec::new();
        let mut at = t0();
        let end = t0() + days(365 * 25);
        while at < end {
            at += days(7);
            let (p, after) = step(&m, at);
            assert!(!kinds(&p).contains(&"generate"), "regenerated at {at}: {p}");
            if !p.is_empty() {
                assert_overlap(&m, &after, at);
                seen.extend(kinds(&p));
            }
            assert!(serving(&after).not_after > at);
            m = after;
        }
        for phase in ["phase1", "phase2", "phase3", "renew"] {
            assert!(seen.contains(&phase), "{phase} never happened: {seen:?}");
        }
        // A CA rotation every 2/3 of 10 years: three in 25 years.
        assert_eq!(
            seen.iter().filter(|k| **k == "phase2").count(),
            3,
            "{seen:?}"
        );
    }

    #[test]
    fn corrupt_secret_is_regenerated() {
        let c = cfg();
        let good = Material::generate(&c, t0()).expect("generate");
        let secret = good.to_secret(&c, None).expect("secret");
        let other = Material::generate(&c, t0()).expect("generate");

        let corruptions: Vec<Corruption> = vec![
            (
                "no annotation",
                Box::new(|s: &mut Secret| {
                    s.metadata.annotations = None;
                }),
            ),
            (
                "unreadable annotation",
                Box::new(|s: &mut Secret| {
                    s.metadata
                        .annotations
                        .get_or_insert_default()
                        .insert(STATE_ANNOTATION.into(), "{not json".into());
                }),
            ),
            (
                "garbage CA key",
                Box::new(|s: &mut Secret| {
                    s.data
                        .get_or_insert_default()
                        .insert(KEY_CA_KEY.into(), ByteString(b"garbage".to_vec()));
                }),
            ),
            (
                "CA certificate from another CA",
                Box::new(|s: &mut Secret| {
                    let foreign = other.ca.as_ref().expect("ca").cert_pem.clone();
                    s.data
                        .get_or_insert_default()
                        .insert(KEY_CA_CRT.into(), ByteString(foreign.into_bytes()));
                }),
            ),
            (
                "no data",
                Box::new(|s: &mut Secret| {
                    s.data = None;
                }),
            ),
        ];
        for (what, corrupt) in corruptions {
            let mut s = secret.clone();
            corrupt(&mut s);
            let m = Material::from_secret(&s);
            assert!(m.ca.is_none(), "{what}");
            assert!(!m.problems.is_empty(), "{what}");
            let p = plan(Some(&m), &c, t0());
            assert_eq!(kinds(&p), ["generate"], "{what}");
            let fresh = roundtrip(&apply(&p, Some(&m), &c, t0()).expect("apply"));
            assert!(fresh.problems.is_empty(), "{what}: {:?}", fresh.problems);
            assert_ne!(ca(&fresh).name, ca(&good).name, "{what}");
        }
    }

    #[test]
    fn corrupt_serving_cert_is_reissued_from_the_same_ca() {
        let c = cfg();
        let good = Material::generate(&c, t0()).expect("generate");
        let secret = good.to_secret(&c, None).expect("secret");
        let other = Material::generate(&c, t0()).expect("generate");
        let other_secret = other.to_secret(&c, None).expect("secret");

        let corruptions: Vec<Corruption> = vec![
            (
                "garbage certificate",
                Box::new(|s: &mut Secret| {
                    s.data
                        .get_or_insert_default()
                        .insert(KEY_TLS_CRT.into(), ByteString(b"garbage".to_vec()));
                }),
            ),
            (
                "key of another certificate",
                Box::new(|s: &mut Secret| {
                    let key = other.serving.as_ref().expect("serving").key_pem.clone();
                    s.data
                        .get_or_insert_default()
                        .insert(KEY_TLS_KEY.into(), ByteString(key.into_bytes()));
                }),
            ),
            (
                "pair signed by another CA",
                Box::new(|s: &mut Secret| {
                    let data = s.data.get_or_insert_default();
                    for k in [KEY_TLS_CRT, KEY_TLS_KEY] {
                        let v = other_secret
                            .data
                            .as_ref()
                            .and_then(|d| d.get(k))
                            .expect("data")
                            .clone();
                        data.insert(k.into(), v);
                    }
                }),
            ),
            (
                "annotation lies about the expiry",
                Box::new(|s: &mut Secret| {
                    let annotations = s.metadata.annotations.get_or_insert_default();
                    let mut state: serde_json::Value =
                        serde_json::from_str(&annotations[STATE_ANNOTATION]).expect("state");
                    state["serving"]["notAfter"] = "2099-01-01T00:00:00Z".into();
                    annotations.insert(STATE_ANNOTATION.into(), state.to_string());
                }),
            ),
        ];
        for (what, corrupt) in corruptions {
            let mut s = secret.clone();
            corrupt(&mut s);
            let m = Material::from_secret(&s);
            assert_eq!(ca(&m), ca(&good), "{what}");
            assert!(m.serving.is_none(), "{what}");
            let p = plan(Some(&m), &c, t0());
            assert_eq!(kinds(&p), ["renew"], "{what}");
            let fixed = roundtrip(&apply(&p, Some(&m), &c, t0()).expect("apply"));
            assert!(fixed.problems.is_empty(), "{what}: {:?}", fixed.problems);
            assert_eq!(fixed.bundle_pem(), good.bundle_pem(), "{what}");
            assert_eq!(serving(&fixed).issuer, ca(&good).name, "{what}");
        }
    }

    #[test]
    fn edited_bundle_is_rewritten() {
        let c = cfg();
        let good = Material::generate(&c, t0()).expect("generate");
        let mut s = good.to_secret(&c, None).expect("secret");
        let bundle = format!("{}{}", good.bundle_pem(), good.bundle_pem());
        s.data
            .get_or_insert_default()
            .insert(KEY_CA_CRT.into(), ByteString(bundle.into_bytes()));
        let m = Material::from_secret(&s);
        assert!(m.problems.is_empty(), "{:?}", m.problems);
        assert_eq!(kinds(&plan(Some(&m), &c, t0())), ["rewrite"]);
    }

    #[test]
    fn expired_ca_without_next_is_regenerated_and_with_next_promoted() {
        let c = cfg();
        let m = roundtrip(&Material::generate(&c, t0()).expect("generate"));
        let after_expiry = ca(&m).not_after + days(1);
        assert_eq!(kinds(&plan(Some(&m), &c, after_expiry)), ["generate"]);

        let rotation = t0() + days(365 * 7);
        let (_, p1) = step(&m, rotation);
        assert!(p1.next.is_some());
        let (p, p2) = step(&p1, after_expiry);
        assert_eq!(kinds(&p), ["phase2"]);
        assert!(p2.retired.is_empty(), "an expired CA is not kept");
    }

    #[test]
    fn service_rename_reissues_the_serving_cert() {
        let m = roundtrip(&Material::generate(&cfg(), t0()).expect("generate"));
        let renamed = SelfManagedConfig {
            service_name: "guard".into(),
            ..cfg()
        };
        assert_eq!(kinds(&plan(Some(&m), &renamed, t0())), ["renew"]);
    }

    #[test]
    fn generated_pair_loads_into_cert_store_with_the_service_names() {
        let c = cfg();
        let m = Material::generate(&c, t0()).expect("generate");
        let s = serving(&m);
        let store = CertStore::new();
        assert!(
            store
                .replace(s.cert_pem.as_bytes(), s.key_pem.as_bytes())
                .expect("loads")
        );
        assert!(store.has_certificate());
        assert_eq!(
            c.dns_names(),
            [
                "residency-guard",
                "residency-guard.rg-system",
                "residency-guard.rg-system.svc",
                "residency-guard.rg-system.svc.cluster.local",
            ]
        );
        for name in c.dns_names() {
            bundle_trusts(&m.bundle_pem(), &s.cert_pem, &name, t0())
                .unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        assert!(bundle_trusts(&m.bundle_pem(), &s.cert_pem, "other.rg-system.svc", t0()).is_err());
    }

    #[test]
    fn config_is_validated() {
        assert!(cfg().validate().is_ok());
        assert!(
            SelfManagedConfig::default().validate().is_err(),
            "namespace is required"
        );
        let short = SelfManagedConfig {
            ca_validity: Duration::from_secs(3 * 3600),
            ..cfg()
        };
        assert!(short.validate().is_err());
        let bad_name = SelfManagedConfig {
            service_name: "not a name".into(),
            ..cfg()
        };
        assert!(bad_name.validate().is_err());
    }

    #[test]
    fn backoff_is_capped_at_a_minute() {
        assert_eq!(backoff(1), Duration::from_secs(1));
        assert_eq!(backoff(3), Duration::from_secs(4));
        assert_eq!(backoff(100), MAX_BACKOFF);
    }
}
