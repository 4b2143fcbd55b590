//! The rotation plan: what must change in the Secret, decided from what
//! it holds and the time (`plan`), and carried out in memory (`apply`).
//! No I/O; the rules are in the parent module's documentation.

use std::fmt;

use jiff::Timestamp;

use super::material::{Ca, KEY_CA_CRT, Material, NextCa, RetiredCa};
use super::x509::{issue_serving, new_ca};
use super::{CertError, SelfManagedConfig, add};

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

    pub(super) fn promotes(&self) -> bool {
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

/// Why the serving certificate must be re-issued by `ca`, if it must.
pub(super) fn serving_renewal(
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
