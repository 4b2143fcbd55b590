//! The parsed, verified content of the Secret (see the Secret layout in
//! the parent module): what it holds, how it is read, and how it is written.

use std::collections::BTreeMap;
use std::fmt;

use jiff::Timestamp;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use serde::{Deserialize, Serialize};

use super::rotation::{Action, Plan, apply};
use super::x509::{Anchors, check_ca, check_serving, pem_blocks};
use super::{CertError, SelfManagedConfig};

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
