//! AdmissionReview v1 ↔ engine. Decodes only what the engine needs (the
//! object stays raw JSON until the workload decoder reads its few fields),
//! and turns a Verdict into allow / deny(403, message) / warnings.

use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::api::{Action, ResidencyPolicy};
use crate::engine::{self, Lang, Snapshot, Verdict, Workload, policy};

/// The part of an AdmissionReview request we read.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReviewIn<'a> {
    #[serde(default)]
    pub api_version: Option<String>,
    #[serde(borrow)]
    pub request: Option<RequestIn<'a>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestIn<'a> {
    pub uid: String,
    #[serde(default)]
    pub kind: GroupVersionKind,
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub operation: String,
    #[serde(default)]
    pub dry_run: Option<bool>,
    #[serde(default, borrow)]
    pub object: Option<&'a RawValue>,
    #[serde(default, borrow)]
    pub old_object: Option<&'a RawValue>,
}

#[derive(Debug, Default, Deserialize)]
pub struct GroupVersionKind {
    #[serde(default)]
    pub group: String,
    #[serde(default)]
    pub version: String,
    #[serde(default)]
    pub kind: String,
}

#[derive(Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ReviewOut {
    pub api_version: &'static str,
    pub kind: &'static str,
    pub response: Response,
}

#[derive(Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Response {
    pub uid: String,
    pub allowed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<Status>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

#[derive(Debug, Serialize, PartialEq)]
pub struct Status {
    pub code: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'static str>,
    pub message: String,
}

/// What the handler decided, for logs and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub operation: String,
    pub dry_run: bool,
    pub classes: Vec<String>,
    pub policies: Vec<String>,
    /// Deny, Warn, Audit, or None when compliant / not judged.
    pub action: Option<Action>,
    pub allowed: bool,
    /// "judged", "skipped" (not classified, DELETE, ...) or "error".
    pub result: &'static str,
}

/// An AdmissionReview that cannot be answered as one: HTTP 400.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BadReview(pub String);

pub struct Handled {
    pub review: ReviewOut,
    pub decision: Decision,
}

/// Which endpoint the review arrived on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    Workloads,
    NetworkPolicies,
    Policies,
}

/// Kubernetes drops warnings past 4 KiB in total and may truncate each one
/// past 256 characters; keep them within that.
const MAX_WARNING_CHARS: usize = 256;
const MAX_WARNINGS: usize = 12;

/// Decode and judge one review. The only error is a body that is not an
/// AdmissionReview at all (no uid to answer to).
pub fn handle(
    body: &[u8],
    endpoint: Endpoint,
    snapshot: &Snapshot,
    workloads: &dyn WorkloadSource,
    lang: Lang,
    now: Timestamp,
) -> Result<Handled, BadReview> {
    let review: ReviewIn<'_> = serde_json::from_slice(body)
        .map_err(|e| BadReview(format!("the body is not an AdmissionReview: {e}")))?;
    if let Some(v) = &review.api_version
        && v != "admission.k8s.io/v1"
    {
        return Err(BadReview(format!(
            "AdmissionReview {v} is not supported; configure admissionReviewVersions: [v1]"
        )));
    }
    let req = review
        .request
        .ok_or_else(|| BadReview("the AdmissionReview has no request".into()))?;
    let mut decision = Decision {
        kind: req.kind.kind.clone(),
        namespace: req.namespace.clone().unwrap_or_default(),
        name: req.name.clone().unwrap_or_default(),
        operation: req.operation.clone(),
        dry_run: req.dry_run.unwrap_or(false),
        classes: Vec::new(),
        policies: Vec::new(),
        action: None,
        allowed: true,
        result: "skipped",
    };
    let response = match endpoint {
        Endpoint::Workloads => workload_review(&req, snapshot, lang, now, &mut decision),
        Endpoint::NetworkPolicies => {
            network_policy_review(&req, snapshot, workloads, lang, now, &mut decision)
        }
        Endpoint::Policies => policy_review(&req, snapshot, now, &mut decision),
    };
    decision.allowed = response.allowed;
    Ok(Handled {
        review: ReviewOut {
            api_version: "admission.k8s.io/v1",
            kind: "AdmissionReview",
            response: Response {
                uid: req.uid.clone(),
                ..response
            },
        },
        decision,
    })
}

fn allow() -> Response {
    Response {
        uid: String::new(),
        allowed: true,
        status: None,
        warnings: Vec::new(),
    }
}

fn refuse(code: u16, reason: &'static str, message: String) -> Response {
    Response {
        uid: String::new(),
        allowed: false,
        status: Some(Status {
            code,
            reason: Some(reason),
            message,
        }),
        warnings: Vec::new(),
    }
}

fn workload_review(
    req: &RequestIn<'_>,
    snapshot: &Snapshot,
    lang: Lang,
    now: Timestamp,
    decision: &mut Decision,
) -> Response {
    // DELETE is never blocked; CONNECT has nothing to judge.
    if !matches!(req.operation.as_str(), "CREATE" | "UPDATE") {
        return allow();
    }
    let Some(object) = req.object else {
        return allow();
    };
    let namespace = req.namespace.as_deref().unwrap_or("default");
    let workload = match Workload::from_json_slice(object.get().as_bytes(), namespace) {
        Ok(w) => w,
        Err(e) if e.is_not_a_workload() => return allow(),
        Err(e) => {
            decision.result = "error";
            return refuse(
                400,
                "BadRequest",
                format!("residency-guard cannot read this object: {e}"),
            );
        }
    };
    decision.name = workload.name.clone();
    let verdict = match engine::evaluate(snapshot, &workload, now) {
        Ok(v) => v,
        Err(e) => {
            decision.result = "error";
            return refuse(400, "BadRequest", e.to_string());
        }
    };
    respond_to_verdict(&verdict, lang, decision)
}

/// Deny → 403 with every Deny-policy message; Warn-policy messages become
/// warnings; Audit admits silently (the decision is logged).
fn respond_to_verdict(verdict: &Verdict, lang: Lang, decision: &mut Decision) -> Response {
    decision.classes = verdict
        .classes
        .iter()
        .map(|c| c.as_str().to_string())
        .collect();
    decision.policies = verdict.policies.iter().map(|p| p.policy.clone()).collect();
    decision.action = verdict.action;
    if !verdict.classes.is_empty() {
        decision.result = "judged";
    }
    let warnings = warnings_from(&verdict.messages_for(Action::Warn, lang));
    if verdict.denied() {
        let messages = verdict.messages_for(Action::Deny, lang);
        let mut r = refuse(403, "Forbidden", messages.join("\n"));
        r.warnings = warnings;
        return r;
    }
    Response {
        warnings,
        ..allow()
    }
}

/// Split each message at "Fix:" and bound the length, so kubectl shows the
/// problem and the fix even when the API server truncates long warnings.
pub fn warnings_from(messages: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for m in messages {
        let (problem, fix) = match m.find(" Fix: ").or_else(|| m.find("修复：")) {
            Some(i) => (&m[..i], Some(m[i..].trim_start())),
            None => (m.as_str(), None),
        };
        out.push(bounded(&format!("residency-guard: {problem}")));
        if let Some(fix) = fix {
            out.push(bounded(&format!("residency-guard: {fix}")));
        }
    }
    out.truncate(MAX_WARNINGS);
    out
}

fn bounded(s: &str) -> String {
    let flat = s.replace('\n', " ");
    if flat.chars().count() <= MAX_WARNING_CHARS {
        return flat;
    }
    let mut t: String = flat.chars().take(MAX_WARNING_CHARS - 1).collect();
    t.push('…');
    t
}

/// Workloads already in the cluster, for judging NetworkPolicy changes.
pub trait WorkloadSource: Send + Sync {
    fn in_namespace(&self, namespace: &str) -> Vec<Workload>;
}

impl WorkloadSource for BTreeMap<String, Vec<Workload>> {
    fn in_namespace(&self, namespace: &str) -> Vec<Workload> {
        self.get(namespace).cloned().unwrap_or_default()
    }
}

#[derive(Deserialize)]
struct NetworkPolicyMeta {
    #[serde(default)]
    metadata: NameMeta,
}

#[derive(Default, Deserialize)]
struct NameMeta {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    namespace: Option<String>,
}

/// A NetworkPolicy change is judged by re-evaluating the classified
/// workloads of its namespace against the changed set: a change that opens
/// cross-border egress for a workload under a Deny policy is denied.
fn network_policy_review(
    req: &RequestIn<'_>,
    snapshot: &Snapshot,
    workloads: &dyn WorkloadSource,
    lang: Lang,
    now: Timestamp,
    decision: &mut Decision,
) -> Response {
    // The request names the object; a DELETE may carry only the old object.
    let old_meta = req
        .old_object
        .and_then(|old| serde_json::from_str::<NetworkPolicyMeta>(old.get()).ok())
        .map(|m| m.metadata)
        .unwrap_or_default();
    let namespace = req
        .namespace
        .clone()
        .filter(|n| !n.is_empty())
        .or(old_meta.namespace)
        .unwrap_or_else(|| "default".into());
    let replacement = match req.operation.as_str() {
        "CREATE" | "UPDATE" => {
            let Some(object) = req.object else {
                return allow();
            };
            match serde_json::from_str::<NetworkPolicy>(object.get()) {
                Ok(np) => Some(np),
                Err(e) => {
                    decision.result = "error";
                    return refuse(
                        400,
                        "BadRequest",
                        format!("residency-guard cannot read this NetworkPolicy: {e}"),
                    );
                }
            }
        }
        "DELETE" => None,
        _ => return allow(),
    };
    let name = req
        .name
        .clone()
        .filter(|n| !n.is_empty())
        .or(old_meta.name)
        .unwrap_or_default();
    let mut changed = snapshot.clone();
    changed.network.remove_network_policy(&namespace, &name);
    if let Some(mut np) = replacement {
        np.metadata.namespace = Some(namespace.clone());
        if np.metadata.name.is_none() {
            np.metadata.name = Some(name.clone());
        }
        changed.network.add_network_policy(&np);
    }
    decision.result = "judged";
    let mut deny = Vec::new();
    let mut warn = Vec::new();
    let mut worst: Option<Action> = None;
    for w in workloads.in_namespace(&namespace) {
        let (Ok(before), Ok(after)) = (
            engine::evaluate(snapshot, &w, now),
            engine::evaluate(&changed, &w, now),
        ) else {
            continue;
        };
        let before_keys: Vec<(String, String)> = egress_keys(&before);
        for (p, v) in after.violations() {
            let is_egress = matches!(
                v.code,
                engine::Code::EgressUnrestricted
                    | engine::Code::EgressAllowsAll
                    | engine::Code::EgressOutsideMainland
                    | engine::Code::EgressExternalForbidden
            );
            if !is_egress
                || before_keys.contains(&(p.policy.clone(), v.code.as_str().to_string() + &v.field))
            {
                continue;
            }
            worst = worst.max(Some(p.action));
            let msg = format!(
                "{} NetworkPolicy {namespace}/{name} would open this: {}",
                req.operation,
                v.message.get(lang)
            );
            match p.action {
                Action::Deny => deny.push(msg),
                Action::Warn => warn.push(msg),
                Action::Audit => {}
            }
        }
    }
    decision.action = worst;
    let warnings = warnings_from(&warn);
    if !deny.is_empty() {
        let mut r = refuse(403, "Forbidden", deny.join("\n"));
        r.warnings = warnings;
        return r;
    }
    Response {
        warnings,
        ..allow()
    }
}

fn egress_keys(v: &Verdict) -> Vec<(String, String)> {
    v.violations()
        .map(|(p, x)| (p.policy.clone(), x.code.as_str().to_string() + &x.field))
        .collect()
}

/// Semantic checks on a ResidencyPolicy that the CRD schema cannot express.
fn policy_review(
    req: &RequestIn<'_>,
    snapshot: &Snapshot,
    now: Timestamp,
    decision: &mut Decision,
) -> Response {
    if !matches!(req.operation.as_str(), "CREATE" | "UPDATE") {
        return allow();
    }
    let Some(object) = req.object else {
        return allow();
    };
    decision.result = "judged";
    let policy: ResidencyPolicy = match serde_json::from_str(object.get()) {
        Ok(p) => p,
        Err(e) => {
            return refuse(
                400,
                "BadRequest",
                format!("this ResidencyPolicy cannot be read: {e}"),
            );
        }
    };
    let name = policy.metadata.name.clone().unwrap_or_default();
    match policy::compile(&policy, &snapshot.catalogue, now) {
        Ok((_, warnings)) => Response {
            warnings: warnings
                .iter()
                .map(|w| {
                    bounded(&format!(
                        "ResidencyPolicy {name}: {}: {}",
                        w.field, w.message
                    ))
                })
                .collect(),
            ..allow()
        },
        Err(errors) => refuse(
            422,
            "Invalid",
            errors
                .iter()
                .map(|e| {
                    format!(
                        "ResidencyPolicy {name} is invalid: {}: {}",
                        e.field, e.message
                    )
                })
                .collect::<Vec<_>>()
                .join("\n"),
        ),
    }
}
