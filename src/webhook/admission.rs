//! AdmissionReview v1 ↔ engine. Decodes only what the engine needs and
//! turns a Verdict into allow / deny(403, message) / warnings.
//!
//! A workload review is decoded in one pass: the envelope and the object's
//! few fields together, with managedFields, annotations, containers and
//! `oldObject` skipped unbuilt. Anything that pass refuses is decoded again
//! the general way (the object kept as raw JSON, then read on its own), so
//! malformed input gets the same precise error either way.

use jiff::Timestamp;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::api::{Action, ResidencyPolicy};
use crate::engine::{
    self, Code, Lang, Message, Snapshot, Text, Verdict, Workload, WorkloadError, WorkloadObject,
};
use crate::state::WorkloadSource;

/// The part of an AdmissionReview request we read. `O` is how `object` is
/// decoded and `P` how `oldObject` is: raw JSON ([`RawReviewIn`]), or for
/// workloads the object's fields in the same pass and no old object.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReviewIn<O, P> {
    #[serde(default)]
    pub api_version: Option<String>,
    pub request: Option<RequestIn<O, P>>,
}

/// A review with `object` and `oldObject` kept as raw JSON.
pub type RawReviewIn<'a> = ReviewIn<&'a RawValue, &'a RawValue>;

/// A workload review: the object and, on UPDATE, the old object decoded in
/// the same pass (to see a declassification, and whether the write can only
/// remove pods or narrow placement).
type WorkloadReviewIn = ReviewIn<WorkloadObject, WorkloadObject>;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestIn<O, P> {
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
    // Absent means None (no `#[serde(default)]`: it would require O: Default).
    pub object: Option<O>,
    pub old_object: Option<P>,
}

impl<O, P> RequestIn<O, P> {
    /// A CREATE or UPDATE: a write whose object is judged. DELETE is never
    /// blocked; CONNECT has nothing to judge.
    fn writes(&self) -> bool {
        matches!(self.operation.as_str(), "CREATE" | "UPDATE")
    }
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
    /// The answer rests on what the snapshot knows of the namespace, which
    /// may be milliseconds behind the API server: read it live and judge
    /// again before answering (see `server::confirm`).
    pub confirm: Option<Confirm>,
    /// The UPDATE takes data classes away: it stands only if the user may
    /// declassify them (see `engine::declassify`).
    pub declassify: Option<Declassify>,
}

/// Classes an UPDATE removes, and from what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Declassify {
    /// The namespace the SubjectAccessReview names (the object's, or the
    /// Namespace itself).
    pub namespace: String,
    /// "Deployment payments/api", "Namespace payments".
    pub subject: String,
    pub classes: Vec<crate::api::DataClass>,
    /// What the update does that takes them away (for the refusal).
    pub change: Text,
}

/// What to read from the API server before the answer stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Confirm {
    pub namespace: String,
    /// Read the namespace's NetworkPolicies too (the answer rests on them).
    pub network_policies: bool,
    /// Read its claims, their PVs and the StorageClasses too (a storage
    /// finding: the claim may have been created moments ago).
    pub storage: bool,
    pub why: ConfirmReason,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfirmReason {
    /// The snapshot has not seen the namespace (created in the same apply):
    /// its data-class label and the policies' namespaceSelectors are unknown.
    NamespaceUnknown,
    /// The object reached the webhook (the API server saw a data-class label
    /// on it, its template or its Namespace) but the snapshot finds no class:
    /// the Namespace was probably labelled moments ago.
    NotClassified,
    /// A denial: confirm the namespace labels and, for egress findings, the
    /// NetworkPolicies it rests on (one may have been created moments ago).
    Denial,
    /// A StatefulSet with claim templates of which the snapshot knows no
    /// claim: claims restored or pre-bound for it are usually applied with
    /// it, moments before, and are judged by where their PVs are.
    StorageUnseen,
}

impl ConfirmReason {
    pub fn as_str(self) -> &'static str {
        match self {
            ConfirmReason::NamespaceUnknown => "namespace_unknown",
            ConfirmReason::NotClassified => "not_classified",
            ConfirmReason::Denial => "denial",
            ConfirmReason::StorageUnseen => "storage_unseen",
        }
    }
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
    Namespaces,
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
    let judging = Judging {
        snapshot,
        workloads,
        lang,
        now,
    };
    if endpoint == Endpoint::Workloads
        && let Ok(review) = serde_json::from_slice::<WorkloadReviewIn>(body)
    {
        return answer(review, |req, decision| {
            workload_review(req, judging, decision)
        });
    }
    // Not a workload review, or one the single pass refused: the general
    // decoder finds the precise error, if any.
    handle_raw(body, endpoint, judging)
}

/// What a review is judged against, and the language it is answered in.
#[derive(Clone, Copy)]
struct Judging<'a> {
    snapshot: &'a Snapshot,
    /// The workloads already admitted (NetworkPolicy reviews judge them).
    workloads: &'a dyn WorkloadSource,
    lang: Lang,
    now: Timestamp,
}

/// `handle` with the object kept as raw JSON and decoded on its own.
fn handle_raw(body: &[u8], endpoint: Endpoint, judging: Judging<'_>) -> Result<Handled, BadReview> {
    let review: RawReviewIn<'_> = serde_json::from_slice(body)
        .map_err(|e| BadReview(format!("the body is not an AdmissionReview: {e}")))?;
    answer(review, |req, decision| match endpoint {
        Endpoint::Workloads => workload_review(req, judging, decision),
        Endpoint::NetworkPolicies => network_policy_review(&req, judging, decision),
        Endpoint::Policies => policy_review(&req, judging, decision),
        Endpoint::Namespaces => namespace_review(&req, judging, decision),
    })
}

/// Check the envelope, judge the request with `judge`, and wrap the answer.
fn answer<O, P>(
    review: ReviewIn<O, P>,
    judge: impl FnOnce(RequestIn<O, P>, &mut Decision) -> Response,
) -> Result<Handled, BadReview> {
    if let Some(v) = &review.api_version
        && v != "admission.k8s.io/v1"
    {
        return Err(BadReview(format!(
            "AdmissionReview {v} is not supported; configure admissionReviewVersions: [v1]"
        )));
    }
    let mut req = review
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
        confirm: None,
        declassify: None,
    };
    let uid = std::mem::take(&mut req.uid);
    let response = judge(req, &mut decision);
    decision.allowed = response.allowed;
    Ok(Handled {
        review: ReviewOut {
            api_version: "admission.k8s.io/v1",
            kind: "AdmissionReview",
            response: Response { uid, ..response },
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

/// Answer a review without judging it: the snapshot cannot be trusted
/// (`why`), so the request is refused with a retryable message instead of
/// being admitted on missing or stale data.
pub fn refuse_unjudged(body: &[u8], why: &str, lang: Lang) -> Result<Handled, BadReview> {
    let review: ReviewIn<IgnoredAny, IgnoredAny> = serde_json::from_slice(body)
        .map_err(|e| BadReview(format!("the body is not an AdmissionReview: {e}")))?;
    answer(review, |_, decision| {
        decision.result = "not_ready";
        let message = match lang {
            Lang::En => format!(
                "residency-guard cannot judge this request now: {why}. Nothing was decided; try again in a moment. If this persists, check the operator's logs and its RBAC (kubectl logs -n <namespace> deploy/residency-guard)."
            ),
            Lang::ZhCn => format!(
                "residency-guard 现在无法判定此请求：{why}。未作出任何决定，请稍后重试。如果持续出现，请检查 operator 的日志及其 RBAC 权限（kubectl logs -n <namespace> deploy/residency-guard）。"
            ),
        };
        unavailable(String::new(), message)
    })
}

/// A denial decided outside the engine's verdict (a declassification).
pub fn forbidden(uid: String, message: String) -> Response {
    Response {
        uid,
        ..refuse(403, "Forbidden", message)
    }
}

/// A refusal the client should retry (the webhook cannot decide yet).
pub fn unavailable(uid: String, message: String) -> Response {
    Response {
        uid,
        ..refuse(503, "ServiceUnavailable", message)
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

/// A review's old object, as the workload it was.
trait OldInput {
    /// The API server's own copy of the stored object: well formed; should
    /// it not be, nothing is known to have been removed and the write is
    /// judged as a new object.
    fn old_workload(self, default_namespace: &str) -> Option<Workload>;
}

impl OldInput for &RawValue {
    fn old_workload(self, default_namespace: &str) -> Option<Workload> {
        Workload::from_json_slice(self.get().as_bytes(), default_namespace).ok()
    }
}

impl OldInput for WorkloadObject {
    fn old_workload(self, default_namespace: &str) -> Option<Workload> {
        self.into_workload(default_namespace).ok()
    }
}

/// A review's object, as something that yields the workload.
trait WorkloadInput {
    fn workload(self, default_namespace: &str) -> Result<Workload, WorkloadError>;
}

impl WorkloadInput for &RawValue {
    fn workload(self, default_namespace: &str) -> Result<Workload, WorkloadError> {
        Workload::from_json_slice(self.get().as_bytes(), default_namespace)
    }
}

impl WorkloadInput for WorkloadObject {
    fn workload(self, default_namespace: &str) -> Result<Workload, WorkloadError> {
        self.into_workload(default_namespace)
    }
}

fn workload_review<O: WorkloadInput, P: OldInput>(
    mut req: RequestIn<O, P>,
    judging: Judging<'_>,
    decision: &mut Decision,
) -> Response {
    let Some(object) = req.object.take().filter(|_| req.writes()) else {
        return allow();
    };
    let namespace = req.namespace.as_deref().unwrap_or("default");
    let mut workload = match object.workload(namespace) {
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
    // Data follows the volume: a pod mounting a claim that a classified
    // workload of the namespace uses carries that workload's classes. Only
    // objects that mount a claim pay for reading the namespace.
    if engine::claims_mounted(&workload).next().is_some() {
        let others = judging.workloads.in_namespace(&workload.namespace);
        for shared in engine::classes_through_claims(&workload, &others) {
            workload.inherited_classes.push(engine::InheritedClass {
                owner: shared.owner,
                location: format!("the claim {} it shares", shared.claim),
                value: shared.value,
            });
        }
    }
    // Messages in the answer's language only: the verdict is dropped once
    // answered, and writing the other language was a third of the cost of
    // a denial.
    let verdict = match engine::evaluate_with(
        judging.snapshot,
        &workload,
        judging.now,
        engine::Detail::In(judging.lang),
    ) {
        Ok(v) => v,
        Err(e) => {
            decision.result = "error";
            return refuse(400, "BadRequest", e.to_string());
        }
    };
    let old = match req.old_object.take() {
        Some(old) if req.operation == "UPDATE" => old.old_workload(namespace),
        _ => None,
    };
    if let Some(old) = &old {
        decision.declassify = declassification(judging.snapshot, &workload, old);
        if verdict.denied() && engine::only_removes_or_narrows(old, &workload) {
            // Nothing this write does can put a pod anywhere it could not
            // already run: admit it (a controller scaling down, a fix in
            // progress) and say what still violates.
            return respond_to_narrowing(&verdict, judging.lang, decision);
        }
    }
    decision.confirm = confirmation_needed(judging.snapshot, namespace, &verdict)
        .or_else(|| unseen_claims(judging.snapshot, &workload, &verdict));
    respond_to_verdict(&verdict, judging.lang, decision)
}

/// The classes this UPDATE takes away from the workload or from the pods
/// it creates (the Namespace's classes keep applying, so they are not
/// taken away).
fn declassification(
    snapshot: &Snapshot,
    workload: &Workload,
    old: &Workload,
) -> Option<Declassify> {
    use engine::declassify::{
        class_label, classes_named, label_removal, moved_off_template, removed_classes,
        removed_from_pods,
    };
    let still = classes_named(class_label(snapshot.namespaces.get(&workload.namespace)));
    let old_values = [
        class_label(Some(&old.labels)),
        class_label(Some(&old.template_labels)),
    ];
    let new_values = [
        class_label(Some(&workload.labels)),
        class_label(Some(&workload.template_labels)),
    ];
    let removed = removed_classes(
        old_values.into_iter().flatten(),
        new_values.into_iter().flatten(),
        &still,
    );
    if !removed.is_empty() {
        let classes: Vec<_> = removed.into_iter().collect();
        return Some(Declassify {
            namespace: workload.namespace.clone(),
            subject: workload.reference(),
            change: label_removal(&classes),
            classes,
        });
    }
    let off_pods = removed_from_pods(workload.kind, old_values[1], new_values[1], &still);
    (!off_pods.is_empty()).then(|| {
        let classes: Vec<_> = off_pods.into_iter().collect();
        Declassify {
            namespace: workload.namespace.clone(),
            subject: workload.reference(),
            change: moved_off_template(&classes, workload.kind.template_labels_path()),
            classes,
        }
    })
}

/// An UPDATE that can only remove pods or narrow where they run, of an
/// object that violates a Deny policy: admitted, every violation a warning.
fn respond_to_narrowing(verdict: &Verdict, lang: Lang, decision: &mut Decision) -> Response {
    let mut response = respond_to_verdict(verdict, lang, decision);
    decision.result = "narrowing";
    let note = match lang {
        Lang::En => {
            "this update can only remove pods or narrow where they run, so it is admitted; the object still violates a Deny policy:"
        }
        Lang::ZhCn => {
            "此更新只会减少 Pod 或缩小其可运行的范围，因此予以放行；但该对象仍违反 Deny 策略："
        }
    };
    let mut warnings = Vec::new();
    split_warning(note, &mut warnings);
    warnings.extend(warnings_from(
        verdict
            .messages_for(Action::Deny)
            .chain(verdict.messages_for(Action::Warn)),
        lang,
    ));
    warnings.truncate(MAX_WARNINGS);
    response.allowed = true;
    response.status = None;
    response.warnings = warnings;
    response
}

/// Does this answer rest on namespace facts the snapshot may not have yet?
/// Only then is the API server asked (a compliant, classified workload in a
/// known namespace, the common case, costs nothing more).
fn confirmation_needed(snapshot: &Snapshot, namespace: &str, verdict: &Verdict) -> Option<Confirm> {
    let confirm = |network_policies, storage, why| {
        Some(Confirm {
            namespace: namespace.to_string(),
            network_policies,
            storage,
            why,
        })
    };
    if !snapshot.namespaces.contains_key(namespace) {
        return confirm(true, true, ConfirmReason::NamespaceUnknown);
    }
    if verdict.classes.is_empty() {
        return confirm(false, false, ConfirmReason::NotClassified);
    }
    if verdict.denied() {
        let denied_on = |f: fn(Code) -> bool| {
            verdict
                .violations()
                .any(|(p, v)| p.action == Action::Deny && f(v.code))
        };
        return confirm(
            denied_on(Code::is_egress),
            denied_on(Code::is_storage),
            ConfirmReason::Denial,
        );
    }
    None
}

/// An admitted StatefulSet whose claim templates the snapshot knows no
/// claim of: read the namespace's claims before the answer stands (a claim
/// bound abroad, applied with the StatefulSet, must not slip through
/// because the watch is milliseconds behind). Only when a governing policy
/// checks storage; a StatefulSet's creation is rare enough for one LIST.
fn unseen_claims(snapshot: &Snapshot, workload: &Workload, verdict: &Verdict) -> Option<Confirm> {
    let checked = verdict.policies.iter().any(|p| {
        snapshot
            .policies
            .iter()
            .any(|c| c.name == p.policy && c.storage_mode == crate::api::StorageMode::MainlandOnly)
    });
    let unseen = workload.claim_templates.iter().any(|t| {
        snapshot
            .storage()
            .template_claims(&workload.namespace, t.name(), &workload.name)
            .next()
            .is_none()
    });
    (checked && unseen && !verdict.denied()).then(|| Confirm {
        namespace: workload.namespace.clone(),
        network_policies: false,
        storage: true,
        why: ConfirmReason::StorageUnseen,
    })
}

/// Deny → 403 with every Deny-policy message; Warn-policy messages become
/// warnings; Audit admits silently (the decision is logged).
fn respond_to_verdict(verdict: &Verdict, lang: Lang, decision: &mut Decision) -> Response {
    decision.classes = verdict
        .classes
        .iter()
        .map(|c| c.as_str().to_string())
        .collect();
    decision.policies = verdict
        .policies
        .iter()
        .map(|p| p.policy.to_string())
        .collect();
    decision.action = verdict.action;
    if !verdict.classes.is_empty() {
        decision.result = "judged";
    }
    let warnings = warnings_from(verdict.messages_for(Action::Warn), lang);
    if verdict.denied() {
        let messages: Vec<String> = verdict
            .messages_for(Action::Deny)
            .map(|m| m.get(lang))
            .collect();
        let mut r = refuse(403, "Forbidden", messages.join("\n"));
        r.warnings = warnings;
        return r;
    }
    Response {
        warnings,
        ..allow()
    }
}

/// Each message's problem, then its fix ("Fix: ..."), as warnings of at
/// most 256 characters (the API server may truncate longer ones), cut
/// between words, so kubectl shows the whole problem, its evidence and the
/// fix. At most `MAX_WARNINGS` in all (the API server keeps 4 KiB of
/// warnings).
pub fn warnings_from<'m>(
    messages: impl IntoIterator<Item = &'m Message>,
    lang: Lang,
) -> Vec<String> {
    let mut out = Vec::new();
    for m in messages {
        for part in [m.problem(lang), &m.fix_line(lang)] {
            split_warning(&part.replace('\n', " "), &mut out);
        }
    }
    if out.len() > MAX_WARNINGS {
        out.truncate(MAX_WARNINGS - 1);
        out.push("residency-guard: … more in the operator's log, or run `residency-guard check -f` on the manifest".to_string());
    }
    out
}

const PREFIX: &str = "residency-guard: ";
const CONTINUED: &str = "residency-guard: … ";

/// `text` as warnings of at most `MAX_WARNING_CHARS` characters each.
fn split_warning(text: &str, out: &mut Vec<String>) {
    let mut rest = text.trim();
    let mut prefix = PREFIX;
    while !rest.is_empty() {
        let room = MAX_WARNING_CHARS - prefix.chars().count();
        if rest.chars().count() <= room {
            out.push(format!("{prefix}{rest}"));
            return;
        }
        // The byte index after `room` characters, then back to the last
        // space or CJK punctuation before it (a hard cut if there is none).
        let limit = rest.char_indices().nth(room).map_or(rest.len(), |(i, _)| i);
        let cut = rest[..limit]
            .char_indices()
            .rev()
            .find(|(_, c)| c.is_whitespace() || matches!(c, '，' | '；' | '、' | '。'))
            .map(|(i, c)| i + c.len_utf8())
            .filter(|&i| i > limit / 2)
            .unwrap_or(limit);
        out.push(format!("{prefix}{}", rest[..cut].trim_end()));
        rest = rest[cut..].trim_start();
        prefix = CONTINUED;
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
/// workloads and pods of its namespace, owned or not, with the classes they
/// inherit from their owners, against the changed set: a change that opens
/// cross-border egress for one of them under a Deny policy is denied.
fn network_policy_review(
    req: &RequestIn<&RawValue, &RawValue>,
    judging: Judging<'_>,
    decision: &mut Decision,
) -> Response {
    // The other egress layers share this endpoint (and its two webhook
    // entries): Cilium, Calico and AdminNetworkPolicy objects.
    if !req.kind.group.is_empty() && req.kind.group != "networking.k8s.io" {
        return layer_review(req, judging, decision);
    }
    let Judging {
        snapshot,
        workloads,
        lang,
        now,
    } = judging;
    // The request names the object; a DELETE may carry only the old object,
    // which is read only then.
    let old_meta = || {
        req.old_object
            .and_then(|old| serde_json::from_str::<NetworkPolicyMeta>(old.get()).ok())
            .map(|m| m.metadata)
            .unwrap_or_default()
    };
    let namespace = req
        .namespace
        .clone()
        .filter(|n| !n.is_empty())
        .or_else(|| old_meta().namespace)
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
        .or_else(|| old_meta().name)
        .unwrap_or_default();
    decision.result = "judged";
    let change = engine::judge_network_policy_change(
        snapshot,
        &workloads.in_namespace(&namespace),
        &namespace,
        &name,
        replacement.as_ref(),
        now,
    );
    let subject = format!("{} NetworkPolicy {namespace}/{name}", req.operation);
    answer_change(&change, &subject, lang, decision)
}

/// A change to a policy of another egress layer (or a Calico Tier), judged
/// by re-evaluating the classified workloads of every namespace it may
/// touch (its own for a namespaced kind), as for a NetworkPolicy.
fn layer_review(
    req: &RequestIn<&RawValue, &RawValue>,
    Judging {
        snapshot,
        workloads,
        lang,
        now,
    }: Judging<'_>,
    decision: &mut Decision,
) -> Response {
    let old_meta = || {
        req.old_object
            .and_then(|old| serde_json::from_str::<NetworkPolicyMeta>(old.get()).ok())
            .map(|m| m.metadata)
            .unwrap_or_default()
    };
    let kind = req.kind.kind.as_str();
    let api_version = format!("{}/{}", req.kind.group, req.kind.version);
    let replacement = match req.operation.as_str() {
        "CREATE" | "UPDATE" => {
            let Some(object) = req.object else {
                return allow();
            };
            match serde_json::from_str::<serde_json::Value>(object.get()) {
                Ok(v) if v.is_object() => Some(v),
                Ok(_) | Err(_) => {
                    decision.result = "error";
                    return refuse(
                        400,
                        "BadRequest",
                        format!("residency-guard cannot read this {kind}: not a JSON object"),
                    );
                }
            }
        }
        "DELETE" => None,
        _ => return allow(),
    };
    let namespace = req
        .namespace
        .clone()
        .filter(|n| !n.is_empty())
        .or_else(|| old_meta().namespace);
    let name = req
        .name
        .clone()
        .filter(|n| !n.is_empty())
        .or_else(|| old_meta().name)
        .unwrap_or_default();
    decision.result = "judged";
    let change = engine::judge_layer_change(
        snapshot,
        &|ns| workloads.in_namespace(ns),
        &api_version,
        kind,
        namespace.as_deref(),
        &name,
        replacement.as_ref(),
        now,
    );
    let subject = match &namespace {
        Some(ns) => format!("{} {kind} {ns}/{name}", req.operation),
        None => format!("{} {kind} {name}", req.operation),
    };
    answer_change(&change, &subject, lang, decision)
}

/// The answer to a policy change: denied when it opens egress for a
/// workload under a Deny policy (or when a workload cannot be judged),
/// warnings for Warn policies.
fn answer_change(
    change: &engine::NetworkPolicyChange,
    subject: &str,
    lang: Lang,
    decision: &mut Decision,
) -> Response {
    decision.action = change.action();
    if !change.unjudgeable.is_empty() {
        // Fail closed: what the change does to these workloads is unknown.
        let reasons: Vec<String> = change
            .unjudgeable
            .iter()
            .map(|e| match lang {
                Lang::En => format!(
                    "{subject} cannot be checked: {e}. Fix that workload's residencyguard.io/data-class label first, then retry."
                ),
                Lang::ZhCn => format!(
                    "无法检查 {subject}：{e}。请先修正该工作负载的 residencyguard.io/data-class 标签，然后重试。"
                ),
            })
            .collect();
        decision.action = Some(Action::Deny);
        return refuse(403, "Forbidden", reasons.join("\n"));
    }
    let mut deny = Vec::new();
    let mut warn = Vec::new();
    for o in &change.opened {
        let found = &o.violation.message;
        // The replicas of one ReplicaSet are judged once, named once.
        let (alike_en, alike_zh) = match o.alike {
            0 => (String::new(), String::new()),
            n => (
                format!(" (and for {n} more objects with the same labels)"),
                format!("（另有 {n} 个标签相同的对象同样如此）"),
            ),
        };
        let msg = Message {
            problem: Text {
                en: format!("{subject} would open this{alike_en}: {}", found.problem.en),
                zh: format!("{subject} 将导致{alike_zh}：{}", found.problem.zh),
            },
            fix: found.fix.clone(),
        };
        match o.action {
            Action::Deny => deny.push(msg.get(lang)),
            Action::Warn => warn.push(msg),
            Action::Audit => {}
        }
    }
    let warnings = warnings_from(&warn, lang);
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

/// A Namespace whose labels change (or a PersistentVolumeClaim whose
/// data-class label does, judged by the same rules in its namespace). The
/// data-class label's new value must
/// name known classes (every workload in it is classified by it); classes
/// it loses, and policies whose `namespaceSelector` it stops matching while
/// it holds data they govern, are a declassification of every workload in
/// the namespace (authorised by the server, like a workload's).
fn namespace_review(
    req: &RequestIn<&RawValue, &RawValue>,
    judging: Judging<'_>,
    decision: &mut Decision,
) -> Response {
    let Some(object) = req.object.filter(|_| req.writes()) else {
        return allow();
    };
    #[derive(Deserialize)]
    struct NamespaceLabels {
        #[serde(default)]
        metadata: Option<LabelsOnly>,
    }
    #[derive(Deserialize)]
    struct LabelsOnly {
        #[serde(default)]
        labels: Option<std::collections::BTreeMap<String, String>>,
    }
    let labels_of = |raw: &RawValue| -> std::collections::BTreeMap<String, String> {
        serde_json::from_str::<NamespaceLabels>(raw.get())
            .ok()
            .and_then(|n| n.metadata?.labels)
            .unwrap_or_default()
    };
    let name = req
        .name
        .clone()
        .or_else(|| {
            serde_json::from_str::<NetworkPolicyMeta>(object.get())
                .ok()
                .and_then(|m| m.metadata.name)
        })
        .unwrap_or_default();
    decision.name = name.clone();
    decision.result = "judged";
    // A PersistentVolumeClaim's label classifies the data at rest (and
    // every pod that mounts it): the same rules, in its namespace, without
    // the policies' namespaceSelectors.
    let claim_namespace = (req.kind.kind == "PersistentVolumeClaim")
        .then(|| req.namespace.clone().unwrap_or_default());
    let subject = match &claim_namespace {
        Some(ns) => format!("PersistentVolumeClaim {ns}/{name}"),
        None => format!("Namespace {name}"),
    };
    let new_labels = labels_of(object);
    let new = engine::declassify::class_label(Some(&new_labels));
    if let Some(value) = new
        && let Err(error) = crate::api::parse_class_list(value)
    {
        let e = engine::ClassificationError {
            workload: subject.clone(),
            location: "metadata.labels".into(),
            error,
        };
        return refuse(422, "Invalid", e.text().get(judging.lang).to_string());
    }
    if let Some(ns) = &claim_namespace
        && req.operation == "CREATE"
        && let Some(source) = cloned_claim(object, ns)
    {
        let mut source_labels = judging
            .snapshot
            .storage()
            .claim(&source.namespace, &source.name)
            .and_then(|c| c.class_label.clone())
            .into_iter()
            .collect::<Vec<_>>();
        let users = judging.workloads.in_namespace(&source.namespace);
        source_labels.extend(
            engine::classes_of_claim(&source.namespace, &source.name, &users)
                .into_iter()
                .map(|c| c.value),
        );
        let lost = engine::declassify::clone_losses(source_labels.iter().map(String::as_str), new);
        if !lost.is_empty() {
            let list: Vec<_> = lost.iter().copied().collect();
            decision.declassify = Some(Declassify {
                namespace: ns.clone(),
                subject,
                change: engine::declassify::cloned_without(
                    &format!("PersistentVolumeClaim {}/{}", source.namespace, source.name),
                    source.field,
                    &list,
                ),
                classes: list,
            });
        }
        return allow();
    }
    let Some(old_labels) = req.old_object.map(labels_of) else {
        return allow();
    };
    let old = engine::declassify::class_label(Some(&old_labels));
    let mut classes =
        engine::declassify::removed_classes(old, new, &std::collections::BTreeSet::new());
    let mut change = None;
    if !classes.is_empty() {
        let list: Vec<_> = classes.iter().copied().collect();
        change = Some(engine::declassify::label_removal(&list));
    }
    let mut answer = None;
    if old_labels != new_labels && claim_namespace.is_none() {
        let workloads = judging.workloads.in_namespace(&name);
        let losses = engine::declassify::scope_losses(
            judging.snapshot,
            &name,
            &old_labels,
            &new_labels,
            &workloads,
        );
        if !losses.is_empty() {
            classes.extend(losses.iter().flat_map(|l| l.classes.iter().copied()));
            change.get_or_insert_with(|| engine::declassify::out_of_scope(&losses));
        }
        // The labels also decide which AdminNetworkPolicies, Cilium and
        // Calico policies select the namespace's pods: judged like a change
        // of those policies.
        let mut opened = engine::judge_namespace_relabel(
            judging.snapshot,
            &workloads,
            &name,
            &new_labels,
            judging.now,
        );
        // The labels also decide which Calico rules select the
        // namespace's NetworkSets, for pods of any namespace.
        opened.absorb(engine::judge_namespace_relabel_through_sets(
            judging.snapshot,
            &|ns| judging.workloads.in_namespace(ns),
            &name,
            &new_labels,
            judging.now,
        ));
        if !opened.opened.is_empty() || !opened.unjudgeable.is_empty() {
            answer = Some(answer_change(
                &opened,
                &format!("UPDATE Namespace {name}"),
                judging.lang,
                decision,
            ));
        }
    }
    if let Some(change) = change {
        decision.declassify = Some(Declassify {
            namespace: claim_namespace.unwrap_or_else(|| name.clone()),
            subject,
            classes: classes.into_iter().collect(),
            change,
        });
    }
    answer.unwrap_or_else(allow)
}

/// The claim a new claim copies (a CSI clone): `spec.dataSource` or
/// `spec.dataSourceRef` naming a PersistentVolumeClaim (core group), in
/// `namespace` unless the ref names another (cross-namespace sources).
struct ClonedClaim {
    namespace: String,
    name: String,
    field: &'static str,
}

fn cloned_claim(object: &RawValue, namespace: &str) -> Option<ClonedClaim> {
    #[derive(Deserialize)]
    struct Claim {
        #[serde(default)]
        spec: Option<Spec>,
    }
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Spec {
        #[serde(default)]
        data_source: Option<Source>,
        #[serde(default)]
        data_source_ref: Option<Source>,
    }
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Source {
        #[serde(default)]
        api_group: Option<String>,
        #[serde(default)]
        kind: String,
        #[serde(default)]
        name: String,
        #[serde(default)]
        namespace: Option<String>,
    }
    let spec = serde_json::from_str::<Claim>(object.get()).ok()?.spec?;
    // The API server mirrors one field into the other for a core-group
    // source, so both are usually set: name the older one first.
    [
        (spec.data_source, "spec.dataSource"),
        (spec.data_source_ref, "spec.dataSourceRef"),
    ]
    .into_iter()
    .find_map(|(source, field)| {
        let s = source?;
        (s.kind == "PersistentVolumeClaim"
            && s.api_group.as_deref().unwrap_or_default().is_empty()
            && !s.name.is_empty())
        .then(|| ClonedClaim {
            namespace: s
                .namespace
                .filter(|n| !n.is_empty())
                .unwrap_or_else(|| namespace.to_string()),
            name: s.name,
            field,
        })
    })
}

/// Semantic checks on a ResidencyPolicy that the CRD schema cannot express.
fn policy_review(
    req: &RequestIn<&RawValue, &RawValue>,
    judging: Judging<'_>,
    decision: &mut Decision,
) -> Response {
    let Some(object) = req.object.filter(|_| req.writes()) else {
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
    match engine::compile_policy(&policy, &judging.snapshot.catalogue, judging.now) {
        Ok((_, warnings)) => Response {
            warnings: warnings
                .iter()
                .flat_map(|w| {
                    let mut out = Vec::new();
                    split_warning(
                        &format!(
                            "ResidencyPolicy {name}: {}: {}",
                            w.field,
                            w.message.get(judging.lang)
                        ),
                        &mut out,
                    );
                    out
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
                        e.field,
                        e.message.get(judging.lang)
                    )
                })
                .collect::<Vec<_>>()
                .join("\n"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::engine::{AddressSpace, Catalogue, ClaimRecord, VolumeRecord};
    use serde_json::{Value, json};

    const NOW: &str = "2026-11-23T00:00:00Z";

    /// Long warnings are split between words, none over the API server's
    /// 256 characters, and nothing of the text is lost.
    #[test]
    fn warnings_are_split_not_truncated() {
        let problem = "Deployment finance/ledger-export carries accounting information (residencyguard.io/data-class=accounting on spec.template.metadata.labels) and policy accounting-rollout requires mainland-China nodes, but spec.template.spec.nodeSelector is not set and there is no required node affinity, so the pods may run on any node: 3 of 5 matching nodes are outside mainland China or unverified (hk-node-1 in ap-east-1 (HK), sg-node-1 in ap-southeast-1 (SG), us-node-1 in us-east-1 (US)).";
        let zh = "Deployment finance/ledger-export 含有会计信息，策略 accounting-rollout 要求使用中国大陆节点，但未设置 spec.template.spec.nodeSelector，也没有必需的节点亲和性，因此 Pod 可能运行在任何节点上：5 个匹配节点中有 3 个位于中国大陆以外或未经核实（hk-node-1 位于 ap-east-1（香港），sg-node-1 位于 ap-southeast-1（新加坡），us-node-1 位于 us-east-1（美国）），该 Deployment 可能被调度到这些节点上。这是一段很长的中文说明，用来测试没有空格的文本如何被分割成多条不超过二百五十六个字符的警告信息，而且不会丢失任何内容。";
        for text in [problem, zh] {
            let message = Message {
                problem: Text {
                    en: text.to_string(),
                    zh: String::new(),
                },
                fix: Text {
                    en: "add a required node affinity.".to_string(),
                    zh: String::new(),
                },
            };
            let out = warnings_from([&message], Lang::En);
            assert!(out.len() >= 2, "{out:?}");
            for w in &out {
                assert!(w.chars().count() <= MAX_WARNING_CHARS, "{w}");
                assert!(w.starts_with("residency-guard: "), "{w}");
            }
            let joined: String = out
                .iter()
                .map(|w| w.trim_start_matches(CONTINUED).trim_start_matches(PREFIX))
                .collect::<Vec<_>>()
                .join(" ");
            let squash = |s: &str| s.chars().filter(|c| !c.is_whitespace()).collect::<String>();
            assert_eq!(
                squash(&joined),
                squash(&format!("{text} Fix: add a required node affinity."))
            );
            assert!(
                out.last()
                    .is_some_and(|w| w.contains("Fix: add a required node affinity."))
            );
        }
    }

    fn example() -> (Snapshot, BTreeMap<String, Vec<Workload>>) {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/cluster");
        let base = Snapshot::new(Catalogue::builtin().clone(), AddressSpace::builtin());
        let loaded = crate::cli::load_inputs(&[dir], base, "default", NOW.parse().unwrap())
            .unwrap_or_else(|e| panic!("examples/cluster: {e:?}"));
        let mut by_ns: BTreeMap<String, Vec<Workload>> = BTreeMap::new();
        for (_, w) in loaded.workloads {
            by_ns.entry(w.namespace.clone()).or_default().push(w);
        }
        (loaded.snapshot, by_ns)
    }

    fn review(operation: &str, object: Value) -> Vec<u8> {
        serde_json::to_vec(&json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": "u-1",
                "kind": {"group": "apps", "version": "v1", "kind": "Deployment"},
                "name": "api",
                "namespace": "payments",
                "operation": operation,
                "object": object,
                "oldObject": {"anything": ["goes", 1, null]},
            }
        }))
        .unwrap()
    }

    /// The API server's key order, written by hand: `json!` sorts keys.
    fn in_order(parts: &[(&str, Value)]) -> Value {
        let body = parts
            .iter()
            .map(|(k, v)| format!("{}:{v}", Value::from(*k)))
            .collect::<Vec<_>>()
            .join(",");
        serde_json::from_str(&format!("{{{body}}}")).unwrap()
    }

    fn outcome(r: Result<Handled, BadReview>) -> Result<(ReviewOut, Decision), String> {
        r.map(|h| (h.review, h.decision)).map_err(|e| e.0)
    }

    /// An UPDATE review with both objects (the API server's shape).
    fn update(kind: &str, old: Value, new: Value) -> Vec<u8> {
        let group = match kind {
            "Namespace" | "PersistentVolumeClaim" | "Pod" => "",
            _ => "apps",
        };
        serde_json::to_vec(&json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": "u-2",
                "kind": {"group": group, "version": "v1", "kind": kind},
                "name": new["metadata"]["name"],
                "namespace": new["metadata"]["namespace"],
                "operation": "UPDATE",
                "object": new,
                "oldObject": old,
            }
        }))
        .unwrap()
    }

    /// An unpinned, personal-data ReplicaSet in payments (violates the
    /// example's Deny policy) with `replicas` and `extra` template spec.
    fn replica_set(replicas: i32, class_on_template: bool, extra: Value) -> Value {
        let mut template_labels = json!({"app": "api"});
        if class_on_template {
            template_labels[crate::api::DATA_CLASS_LABEL] = json!("personal");
        }
        let mut spec = json!({"containers": [{"name": "c", "image": "i"}]});
        if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
            s.extend(e.clone());
        }
        json!({"apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": {"name": "api-7d9f", "namespace": "payments",
                "labels": {crate::api::DATA_CLASS_LABEL: "personal", "app": "api"}},
            "spec": {"replicas": replicas, "template": {
                "metadata": {"labels": template_labels}, "spec": spec}}})
    }

    fn judge_body(body: &[u8], endpoint: Endpoint) -> (ReviewOut, Decision) {
        let (snap, workloads) = example();
        outcome(handle(
            body,
            endpoint,
            &snap,
            &workloads,
            Lang::En,
            NOW.parse().unwrap(),
        ))
        .unwrap()
    }

    /// Another egress layer's policy shares the NetworkPolicy endpoint: an
    /// AdminNetworkPolicy opening 8.8.8.0/24 above every namespace's
    /// NetworkPolicies is denied; deleting one that opens nothing is not.
    #[test]
    fn an_admin_network_policy_opening_egress_is_denied() {
        let anp = json!({
            "apiVersion": "policy.networking.k8s.io/v1alpha1", "kind": "AdminNetworkPolicy",
            "metadata": {"name": "open-dns"},
            "spec": {"priority": 1, "subject": {"namespaces": {}},
                     "egress": [{"name": "google", "action": "Allow", "to": [{"networks": ["8.8.8.0/24"]}]}]}
        });
        let body = |operation: &str, object: Value| {
            serde_json::to_vec(&json!({
                "apiVersion": "admission.k8s.io/v1",
                "kind": "AdmissionReview",
                "request": {
                    "uid": "u-1",
                    "kind": {"group": "policy.networking.k8s.io", "version": "v1alpha1", "kind": "AdminNetworkPolicy"},
                    "name": "open-dns",
                    "operation": operation,
                    "object": object,
                }
            }))
            .unwrap()
        };
        let (out, decision) = judge_body(&body("CREATE", anp), Endpoint::NetworkPolicies);
        assert!(!out.response.allowed, "{out:?}");
        assert_eq!(decision.result, "judged");
        let message = out.response.status.map(|s| s.message).unwrap_or_default();
        assert!(
            message.contains("CREATE AdminNetworkPolicy open-dns would open this")
                && message.contains("8.8.8.0/24"),
            "{message}"
        );
        let (out, _) = judge_body(&body("DELETE", Value::Null), Endpoint::NetworkPolicies);
        assert!(out.response.allowed, "{out:?}");
    }

    /// A controller scaling a violating object down (the Deployment
    /// controller during `kubectl scale --replicas=0` or a fixing
    /// rollout) is admitted with the violations as warnings; scaling up,
    /// or moving pods, is judged as a new object.
    #[test]
    fn writes_that_only_remove_pods_or_narrow_are_admitted_with_warnings() {
        let old = replica_set(2, true, json!({}));
        for (new, what) in [
            (replica_set(0, true, json!({})), "scale to zero"),
            (replica_set(1, true, json!({})), "scale down"),
            (
                replica_set(2, true, json!({"nodeSelector": {"disk": "ssd"}})),
                "a constraint added",
            ),
        ] {
            let (out, decision) =
                judge_body(&update("ReplicaSet", old.clone(), new), Endpoint::Workloads);
            assert!(out.response.allowed, "{what}: {out:?}");
            assert_eq!(decision.result, "narrowing", "{what}");
            let warnings = out.response.warnings.join(" ");
            assert!(
                warnings.contains("can only remove pods or narrow where they run")
                    && warnings
                        .contains("ReplicaSet payments/api-7d9f carries personal information"),
                "{what}: {warnings}"
            );
        }
        for (new, what) in [
            (replica_set(3, true, json!({})), "scale up"),
            (
                replica_set(
                    1,
                    true,
                    json!({"nodeSelector": {"topology.kubernetes.io/region": "ap-east-1"}, "hostNetwork": true}),
                ),
                "fewer replicas but the host network",
            ),
        ] {
            let (out, _) = judge_body(&update("ReplicaSet", old.clone(), new), Endpoint::Workloads);
            assert!(!out.response.allowed, "{what}: {out:?}");
        }
    }

    /// Moving the class from the pod template to the object's own metadata
    /// keeps the union of labels but declassifies the pods it creates: it
    /// needs the `declassify` verb (issue 22, finding 2).
    #[test]
    fn moving_the_class_off_the_pod_template_is_a_declassification() {
        let pinned = json!({"nodeSelector": {"topology.kubernetes.io/region": "cn-north-1"}});
        let old = replica_set(2, true, pinned.clone());
        let moved = replica_set(2, false, pinned.clone());
        let (_, decision) = judge_body(
            &update("ReplicaSet", old.clone(), moved),
            Endpoint::Workloads,
        );
        let d = decision.declassify.expect("a declassification");
        assert_eq!(d.classes, [crate::api::DataClass::Personal]);
        assert!(
            d.change.en.contains(
                "takes data class [personal] off the pod template (spec.template.metadata.labels)"
            ),
            "{}",
            d.change.en
        );
        // Unchanged labels: nothing is taken away.
        let (_, decision) =
            judge_body(&update("ReplicaSet", old.clone(), old), Endpoint::Workloads);
        assert!(decision.declassify.is_none());
    }

    /// A Namespace relabel that takes it out of a policy's
    /// namespaceSelector, while a workload there carries a class the policy
    /// governs, declassifies that workload (issue 22, finding 3).
    #[test]
    fn relabelling_a_namespace_out_of_a_policys_scope_is_a_declassification() {
        let ns = |labels: Value| {
            json!({"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": "finance", "labels": labels}})
        };
        let body = update(
            "Namespace",
            ns(json!({"team": "finance"})),
            ns(json!({"team": "other"})),
        );
        let (out, decision) = judge_body(&body, Endpoint::Namespaces);
        assert!(out.response.allowed, "allowed until the server asks who");
        let d = decision.declassify.expect("a declassification");
        assert_eq!(d.classes, [crate::api::DataClass::Accounting]);
        assert_eq!(d.subject, "Namespace finance");
        for part in [
            "no longer matches policy accounting-rollout's namespaceSelector",
            "Deployment finance/ledger-export",
        ] {
            assert!(d.change.en.contains(part), "{part:?} in {}", d.change.en);
        }
        // A label no policy selects on: nothing lost.
        let body = update(
            "Namespace",
            ns(json!({"team": "finance"})),
            ns(json!({"team": "finance", "cost-centre": "42"})),
        );
        assert!(
            judge_body(&body, Endpoint::Namespaces)
                .1
                .declassify
                .is_none()
        );
        // The payments namespace matches no selector before or after.
        let payments = |team: &str| {
            json!({"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": "payments", "labels": {"team": team}}})
        };
        let body = update("Namespace", payments("payments"), payments("x"));
        assert!(
            judge_body(&body, Endpoint::Namespaces)
                .1
                .declassify
                .is_none()
        );
    }

    /// A Namespace whose classified workloads are gone still holds their
    /// data in a labelled claim: taking it out of the policy's scope is a
    /// declassification too, or the next pod to mount the claim is judged
    /// by no policy (found by tests/graph_model.rs: delete the Deployment,
    /// relabel the Namespace, mount the claim from an unisolated pod).
    #[test]
    fn a_labelled_claim_keeps_its_namespace_in_scope() {
        let (mut snap, mut workloads) = example();
        workloads.remove("finance");
        let claim = |class: &str| ClaimRecord {
            namespace: "finance".into(),
            name: "ledger-data".into(),
            storage_class: None,
            volume_name: None,
            class_label: Some(class.into()),
        };
        let ns = |team: &str| {
            json!({"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": "finance", "labels": {"team": team}}})
        };
        let body = update("Namespace", ns("finance"), ns("other"));
        let judge = |snap: &Snapshot, workloads: &BTreeMap<String, Vec<Workload>>| {
            outcome(handle(
                &body,
                Endpoint::Namespaces,
                snap,
                workloads,
                Lang::En,
                NOW.parse().unwrap(),
            ))
            .unwrap()
            .1
        };
        assert!(
            judge(&snap, &workloads).declassify.is_none(),
            "no workload and no claim: nothing is governed there"
        );
        snap.set_storage(
            Vec::<VolumeRecord>::new(),
            [claim("accounting")],
            Vec::new(),
        );
        let d = judge(&snap, &workloads)
            .declassify
            .expect("the claim's data is declassified");
        assert_eq!(d.classes, [crate::api::DataClass::Accounting]);
        assert!(
            d.change
                .en
                .contains("PersistentVolumeClaim finance/ledger-data"),
            "{}",
            d.change.en
        );
        // A claim of a class the policy does not govern keeps nothing.
        snap.set_storage(Vec::<VolumeRecord>::new(), [claim("health")], Vec::new());
        assert!(judge(&snap, &workloads).declassify.is_none());
    }

    /// A claim cloned from a labelled claim (or from one a classified
    /// workload mounts) copies the data: without the source's classes on
    /// its own label it is a declassification.
    #[test]
    fn a_clone_of_a_classified_claim_keeps_its_classes() {
        let (mut snap, mut workloads) = example();
        snap.set_storage(
            Vec::<VolumeRecord>::new(),
            [ClaimRecord {
                namespace: "clinic".into(),
                name: "records-data".into(),
                storage_class: None,
                volume_name: None,
                class_label: Some("health".into()),
            }],
            Vec::new(),
        );
        let user = json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "ledger", "namespace": "clinic"},
            "spec": {"template": {"metadata": {"labels": {crate::api::DATA_CLASS_LABEL: "personal"}},
                "spec": {"volumes": [{"name": "d", "persistentVolumeClaim": {"claimName": "ledger-data"}}]}}}});
        workloads
            .entry("clinic".into())
            .or_default()
            .push(Workload::from_value(&user, "clinic").unwrap());
        let judge = |source: Value, labels: Value| {
            let claim = json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                "metadata": {"name": "copy", "namespace": "clinic", "labels": labels},
                "spec": source});
            let body = serde_json::to_vec(&json!({"apiVersion": "admission.k8s.io/v1",
                "kind": "AdmissionReview",
                "request": {"uid": "u", "kind": {"group": "", "version": "v1", "kind": "PersistentVolumeClaim"},
                    "namespace": "clinic", "name": "copy", "operation": "CREATE", "object": claim}}))
            .unwrap();
            let (out, decision) = outcome(handle(
                &body,
                Endpoint::Namespaces,
                &snap,
                &workloads,
                Lang::En,
                NOW.parse().unwrap(),
            ))
            .unwrap();
            assert!(out.response.allowed, "allowed until the server asks who");
            decision.declassify
        };
        let pvc = |name: &str| json!({"kind": "PersistentVolumeClaim", "name": name});
        let d = judge(json!({"dataSource": pvc("records-data")}), json!({}))
            .expect("an unlabelled clone of a health claim");
        assert_eq!(d.classes, [crate::api::DataClass::Health]);
        assert_eq!(d.subject, "PersistentVolumeClaim clinic/copy");
        assert!(
            d.change
                .en
                .contains("PersistentVolumeClaim clinic/records-data (spec.dataSource)")
                && d.change.en.contains("data-class=health"),
            "{}",
            d.change.en
        );
        // The same through dataSourceRef; and from a claim only a
        // classified workload's mount classifies.
        let d = judge(json!({"dataSourceRef": pvc("ledger-data")}), json!({}))
            .expect("an unlabelled clone of a claim a personal workload mounts");
        assert_eq!(d.classes, [crate::api::DataClass::Personal]);
        assert!(
            d.change.en.contains("(spec.dataSourceRef)"),
            "{}",
            d.change.en
        );
        // Labelled like its source, or cloned from an unclassified claim, or
        // restored from something else: nothing is declassified.
        let label = json!({crate::api::DATA_CLASS_LABEL: "health.personal"});
        assert!(judge(json!({"dataSource": pvc("records-data")}), label).is_none());
        assert!(judge(json!({"dataSource": pvc("scratch")}), json!({})).is_none());
        let snapshot = json!({"apiGroup": "snapshot.storage.k8s.io", "kind": "VolumeSnapshot", "name": "records-data"});
        assert!(judge(json!({"dataSource": snapshot}), json!({})).is_none());
        assert!(judge(json!({"dataSource": "not an object"}), json!({})).is_none());
    }

    /// A Namespace's labels decide which AdminNetworkPolicies select its
    /// pods: relabelling payments into one that allows 8.8.8.0/24 opens
    /// egress abroad for its personal-data ledger, as creating the policy
    /// would. Out of it again, or into a policy's scope, opens nothing.
    #[test]
    fn relabelling_a_namespace_into_an_admin_network_policy_that_opens_egress_is_denied() {
        let (mut snap, workloads) = example();
        let anp = json!({
            "apiVersion": "policy.networking.k8s.io/v1alpha1", "kind": "AdminNetworkPolicy",
            "metadata": {"name": "open-dns"},
            "spec": {"priority": 1, "subject": {"namespaces": {"matchLabels": {"egress": "open"}}},
                     "egress": [{"name": "google", "action": "Allow", "to": [{"networks": ["8.8.8.0/24"]}]}]}
        });
        snap.network.add_layer_object(
            "policy.networking.k8s.io/v1alpha1",
            "AdminNetworkPolicy",
            &anp,
        );
        let ns = |labels: Value| {
            json!({"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": "payments", "labels": labels}})
        };
        let judge_with = |workloads: &BTreeMap<String, Vec<Workload>>, old: Value, new: Value| {
            let body = update("Namespace", ns(old), ns(new));
            outcome(handle(
                &body,
                Endpoint::Namespaces,
                &snap,
                workloads,
                Lang::En,
                NOW.parse().unwrap(),
            ))
            .unwrap()
        };
        let judge = |old: Value, new: Value| judge_with(&workloads, old, new);
        let (out, decision) = judge(
            json!({"team": "payments"}),
            json!({"team": "payments", "egress": "open"}),
        );
        assert!(!out.response.allowed, "{out:?}");
        let message = out.response.status.unwrap().message;
        for part in [
            "UPDATE Namespace payments would open this",
            "8.8.8.0/24",
            "payments/ledger",
        ] {
            assert!(message.contains(part), "{part:?} in {message}");
        }
        assert_eq!(decision.action, Some(Action::Deny));
        // Leaving it, or an unrelated label, opens nothing.
        let (out, _) = judge(
            json!({"team": "payments", "egress": "open"}),
            json!({"team": "payments"}),
        );
        assert!(out.response.allowed, "{out:?}");
        let (out, _) = judge(
            json!({"team": "payments"}),
            json!({"team": "payments", "cost-centre": "42"}),
        );
        assert!(out.response.allowed, "{out:?}");
        // Into a policy's scope: governance added, not egress opened (the
        // finance policy's selector; finance's ledger-export is unpinned).
        let (out, _) = judge(json!({"team": "payments"}), json!({"team": "finance"}));
        assert!(out.response.allowed, "{out:?}");

        // A workload whose class label cannot be read blocks (fail closed)
        // only a relabel that changes which policies select it, never an
        // unrelated label.
        let mut workloads = workloads.clone();
        let broken = json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "broken", "namespace": "payments"},
            "spec": {"template": {"metadata": {"labels": {crate::api::DATA_CLASS_LABEL: "no-such-class"}}}}});
        workloads
            .entry("payments".into())
            .or_default()
            .push(Workload::from_value(&broken, "payments").unwrap());
        let judge = |old: Value, new: Value| judge_with(&workloads, old, new).0;
        let out = judge(
            json!({"team": "payments"}),
            json!({"team": "payments", "cost-centre": "42"}),
        );
        assert!(out.response.allowed, "{out:?}");
        let out = judge(
            json!({"team": "payments"}),
            json!({"team": "payments", "egress": "open"}),
        );
        assert!(!out.response.allowed, "{out:?}");
    }

    /// A copy mounting a claim that a classified workload of the namespace
    /// uses carries its classes, with no label of its own (issue 22).
    #[test]
    fn a_pod_sharing_a_classified_workloads_claim_carries_its_classes() {
        let (snap, mut workloads) = example();
        let owner = json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "records-db", "namespace": "payments"},
            "spec": {"template": {"metadata": {"labels": {crate::api::DATA_CLASS_LABEL: "personal"}},
                "spec": {"volumes": [{"name": "d", "persistentVolumeClaim": {"claimName": "shared"}}]}}}});
        workloads
            .entry("payments".into())
            .or_default()
            .push(Workload::from_value(&owner, "payments").unwrap());
        let copy = json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "copy", "namespace": "payments"},
            "spec": {"nodeSelector": {"topology.kubernetes.io/region": "ap-east-1"},
                "volumes": [{"name": "d", "persistentVolumeClaim": {"claimName": "shared"}}]}});
        let body = serde_json::to_vec(
            &json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {"uid": "u", "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "namespace": "payments", "name": "copy", "operation": "CREATE", "object": copy}}),
        )
        .unwrap();
        let (out, decision) = outcome(handle(
            &body,
            Endpoint::Workloads,
            &snap,
            &workloads,
            Lang::En,
            NOW.parse().unwrap(),
        ))
        .unwrap();
        assert!(!out.response.allowed, "{out:?}");
        assert_eq!(decision.classes, ["personal"]);
    }

    /// A claim's data-class label classifies the data at rest: removing it
    /// is a declassification, and an unknown class is refused.
    #[test]
    fn a_claims_class_label_is_judged_like_a_namespaces() {
        let claim = |labels: Value| {
            json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": "records-data", "namespace": "clinic", "labels": labels}})
        };
        let body = update(
            "PersistentVolumeClaim",
            claim(json!({crate::api::DATA_CLASS_LABEL: "health"})),
            claim(json!({})),
        );
        let (out, decision) = judge_body(&body, Endpoint::Namespaces);
        assert!(out.response.allowed, "until the server asks who");
        let d = decision.declassify.expect("a declassification");
        assert_eq!(d.subject, "PersistentVolumeClaim clinic/records-data");
        assert_eq!(d.namespace, "clinic");
        assert_eq!(d.classes, [crate::api::DataClass::Health]);
        let body = update(
            "PersistentVolumeClaim",
            claim(json!({crate::api::DATA_CLASS_LABEL: "health"})),
            claim(json!({crate::api::DATA_CLASS_LABEL: "health.medical"})),
        );
        let (out, _) = judge_body(&body, Endpoint::Namespaces);
        assert!(!out.response.allowed);
        let message = out.response.status.map(|s| s.message).unwrap_or_default();
        assert!(
            message.contains("PersistentVolumeClaim clinic/records-data"),
            "{message}"
        );
    }

    /// The single pass answers exactly as the general decoder does, for
    /// well-formed, odd and malformed workload reviews alike.
    #[test]
    fn one_pass_and_general_decoding_agree() {
        let (snapshot, workloads) = example();
        let now: Timestamp = NOW.parse().unwrap();
        let labels = json!({"app": "api", "residencyguard.io/data-class": "personal"});
        let deployment = |spec: Value| {
            json!({
                "apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": "api", "labels": labels,
                    "managedFields": [{"manager": "kubectl", "fieldsV1": {"f:spec": {}}}],
                    "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{\"a\":\"\\\"b\"}"}},
                "spec": spec,
                "status": {},
            })
        };
        let pinned = json!({"template": {"metadata": {"labels": labels}, "spec": {
            "nodeSelector": {"topology.kubernetes.io/region": "cn-north-1"},
            "containers": [{"name": "c", "image": "i"}]}}});
        let mut bodies = vec![
            review("CREATE", deployment(json!({"template": {"metadata": {"labels": labels}}}))),
            review("CREATE", deployment(pinned.clone())),
            review("UPDATE", deployment(pinned.clone())),
            review("DELETE", Value::Null),
            review("CONNECT", json!({"kind": "PodExecOptions", "apiVersion": "v1"})),
            review("CREATE", Value::Null),
            // The spec before the type, and the type after everything.
            review(
                "CREATE",
                in_order(&[
                    ("spec", pinned.clone()),
                    ("metadata", json!({"name": "api", "labels": labels})),
                    ("kind", json!("Deployment")),
                    ("apiVersion", json!("apps/v1")),
                ]),
            ),
            review(
                "CREATE",
                in_order(&[
                    ("kind", json!("Pod")),
                    ("spec", json!({"nodeName": "n1", "hostNetwork": true})),
                    ("apiVersion", json!("v1")),
                    ("metadata", json!({"generateName": "api-", "namespace": "", "labels": labels,
                        "ownerReferences": [{"kind": "ReplicaSet", "name": "rs", "controller": true}]})),
                ]),
            ),
            review(
                "CREATE",
                json!({"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "c", "namespace": "other"},
                    "spec": {"jobTemplate": {"spec": {"template": {"metadata": {"labels": labels}}}}}}),
            ),
            // Not workloads, or not judgeable.
            review("CREATE", json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": 5, "spec": "x"})),
            review("CREATE", json!({"apiVersion": "v1", "kind": "Deployment", "metadata": {"name": "x"}})),
            review("CREATE", json!({"kind": "Deployment", "metadata": {"name": "x"}})),
            review("CREATE", json!({"apiVersion": null, "kind": "Deployment"})),
            review("CREATE", json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {}})),
            // Malformed: wrong types, before or after the type, duplicates.
            review("CREATE", deployment(json!({"template": {"spec": {"nodeSelector": "cn-north-1"}}}))),
            review("CREATE", deployment(json!({"template": {"spec": {"affinity": {"nodeAffinity": 3}}}}))),
            review("CREATE", json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": 7}})),
            review("CREATE", json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": null})),
            review("CREATE", json!({"apiVersion": 1, "kind": "Deployment"})),
            review(
                "CREATE",
                in_order(&[
                    ("spec", json!({"template": {"spec": {"nodeName": 1}}})),
                    ("kind", json!("Deployment")),
                    ("apiVersion", json!("apps/v1")),
                    ("metadata", json!({"name": "x"})),
                ]),
            ),
            review("CREATE", json!(["apps/v1", "Deployment"])),
            review("CREATE", json!("a string")),
            // Envelope problems.
            br#"{"apiVersion":"admission.k8s.io/v1beta1","request":{"uid":"u"}}"#.to_vec(),
            br#"{"apiVersion":"admission.k8s.io/v1"}"#.to_vec(),
            br#"{"request":{"operation":"CREATE"}}"#.to_vec(),
            br#"{"request":{"uid":"u","operation":"CREATE","object":{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p"}},"object":null}}"#.to_vec(),
            br#"{"request":{"uid":"u","operation":"CREATE","oldObject":1,"oldObject":2}}"#.to_vec(),
            b"not json".to_vec(),
        ];
        // The same object with a duplicated key, written by hand.
        let dup = r#"{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"a"},"metadata":{"name":"b"}}"#;
        bodies.push(
            format!(r#"{{"request":{{"uid":"u","operation":"CREATE","object":{dup}}}}}"#)
                .into_bytes(),
        );
        for (i, body) in bodies.iter().enumerate() {
            let text = String::from_utf8_lossy(body);
            // The well-formed ones (the first nine) take the single pass.
            if i < 9 {
                let one_pass = serde_json::from_slice::<WorkloadReviewIn>(body);
                assert!(one_pass.is_ok(), "{text}: {one_pass:?}");
            }
            let fast = handle(
                body,
                Endpoint::Workloads,
                &snapshot,
                &workloads,
                Lang::En,
                now,
            );
            let judging = Judging {
                snapshot: &snapshot,
                workloads: &workloads,
                lang: Lang::En,
                now,
            };
            let general = handle_raw(body, Endpoint::Workloads, judging);
            assert_eq!(outcome(fast), outcome(general), "{text}");
        }
    }

    #[test]
    fn malformed_objects_name_the_field() {
        let (snapshot, workloads) = example();
        let now: Timestamp = NOW.parse().unwrap();
        let body = review(
            "CREATE",
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x"},
                "spec": {"template": {"spec": {"nodeSelector": "cn-north-1"}}}}),
        );
        let h = handle(
            &body,
            Endpoint::Workloads,
            &snapshot,
            &workloads,
            Lang::En,
            now,
        )
        .unwrap();
        let status = h.review.response.status.unwrap();
        assert_eq!(status.code, 400);
        assert!(
            status.message.contains(
                "cannot read this object: Deployment field spec.template.spec.nodeSelector"
            ),
            "{}",
            status.message
        );
        assert_eq!(h.decision.result, "error");
    }
}
