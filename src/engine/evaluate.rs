//! The decision: `evaluate(&Snapshot, &Workload, now) -> Verdict`. Reads
//! the workload's data classes (its labels, its pod template's, its
//! Namespace's, and those it inherits from its controller owners), finds the policies that govern them, applies exemptions,
//! runs the placement, egress and storage checks of each governing policy, and
//! assembles the verdict.

use std::collections::{BTreeMap, BTreeSet};

use jiff::Timestamp;

use super::egress;
use super::evidence::{Evidence, VolumeEvidence};
use super::messages::{MessageContext, Subjects};
use super::placement;
use super::policy::{CompiledPolicy, class_mask};
use super::storage;
use super::text::{Langs, Message, Text};
use super::verdict::{
    ClassSource, Code, ExemptionUse, Notice, PolicyOutcome, Verdict, Violation, WorkloadRef,
};
use super::{Snapshot, Workload};
use crate::api::{
    ClassError, DATA_CLASS_LABEL, DataClass, EgressMode, StorageMode, parse_class_list,
};

/// A classification label that cannot be understood, with where it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{workload}: {location}: {error}")]
pub struct ClassificationError {
    pub workload: String,
    pub location: String,
    pub error: ClassError,
}

impl ClassificationError {
    /// The error in both languages: the workload, where the label is, the
    /// bad value and the valid classes.
    pub fn text(&self) -> Text {
        let (w, at) = (&self.workload, &self.location);
        let vocabulary = DataClass::vocabulary();
        match &self.error {
            ClassError::Empty => Text {
                en: format!("{w}: {at}: {}", self.error),
                zh: format!(
                    "{w}：{at}：标签 {DATA_CLASS_LABEL} 为空；请设置为以下一个或多个类别（用 \".\" 连接）：{vocabulary}"
                ),
            },
            ClassError::Unknown { value, unknown } => Text {
                en: format!("{w}: {at}: {}", self.error),
                zh: format!(
                    "{w}：{at}：标签 {DATA_CLASS_LABEL}={value:?} 含有未知的数据类别 {unknown:?}；有效的类别为：{vocabulary}（多个类别用 \".\" 连接，例如 personal.financial）"
                ),
            },
        }
    }
}

fn evaluate_verdict(
    snapshot: &Snapshot,
    workload: &Workload,
    now: Timestamp,
    detail: Detail,
    storage_evidence: StorageRecord,
) -> Result<(Verdict, Option<Vec<VolumeEvidence>>), ClassificationError> {
    let ns_labels = snapshot.namespaces.get(&workload.namespace);
    let (classes, class_sources) = classes_of(workload, ns_labels, snapshot)?;
    let mut notices = Vec::new();
    let mut outcomes = Vec::new();

    let workload_mask = class_mask(classes.iter().copied());
    let governing: Vec<(&CompiledPolicy, Vec<DataClass>)> = snapshot
        .policies
        .iter()
        .filter_map(|p| {
            if p.class_mask & workload_mask == 0 {
                return None;
            }
            let in_scope = match (&p.namespace_selector, ns_labels) {
                (None, _) => true,
                (Some(sel), Some(labels)) => sel.matches(labels),
                (Some(sel), None) if sel.is_empty() => true,
                (Some(_), None) => {
                    // Fail closed: judge it, and say why.
                    notices.push(Notice {
                        code: "NamespaceUnknown",
                        policy: Some(p.name.to_string()),
                        message: Text {
                            en: format!(
                                "namespace {} is not in the inputs, so policy {}'s namespaceSelector cannot be evaluated; the policy is applied",
                                workload.namespace, p.name
                            ),
                            zh: format!(
                                "输入中没有命名空间 {}，无法评估策略 {} 的 namespaceSelector，已按适用处理",
                                workload.namespace, p.name
                            ),
                        },
                    });
                    true
                }
            };
            in_scope.then(|| (p, p.classes.intersection(&classes).copied().collect()))
        })
        .collect();

    let facts = (!governing.is_empty()).then(|| placement::Facts::new(workload, snapshot));
    let needs_egress = governing
        .iter()
        .any(|(p, _)| p.egress_mode != EgressMode::Unrestricted);
    let mut effective = needs_egress.then(|| egress::effective_egress(workload, snapshot));
    if effective.is_some() {
        notices.extend(egress::external_name_notices(workload, snapshot));
        notices.extend(effective.iter().flat_map(egress::domain_notices));
    }
    let needs_storage = governing
        .iter()
        .any(|(p, _)| p.storage_mode != StorageMode::Unchecked);
    let mut storage_facts = needs_storage.then(|| match storage_evidence {
        StorageRecord::Keep => storage::Facts::with_evidence(workload, snapshot),
        StorageRecord::Skip => storage::Facts::new(workload, snapshot),
    });
    if let Some(f) = &mut storage_facts {
        notices.extend(f.take_notices());
    }

    let unpropagated = classes_not_on_pod_template(workload, ns_labels);
    let subjects = Subjects::default();
    for (policy, matched) in governing {
        let exemption = policy
            .exemptions
            .iter()
            .filter(|e| e.namespaces.is_empty() || e.namespaces.contains(&workload.namespace))
            .filter(|e| {
                e.selector.matches(&workload.labels)
                    || e.selector.matches(&workload.template_labels)
            })
            // An active exemption wins over a lapsed one.
            .max_by_key(|e| (e.active_at(now), e.lapses_at));
        let exemption_use = exemption.map(|e| ExemptionUse {
            index: e.index,
            basis: e.basis,
            reference: e.reference.clone(),
            approved_by: e.approved_by.clone(),
            expires: e.expires.to_string(),
            active: e.active_at(now),
        });
        let exempted = exemption_use.as_ref().is_some_and(|e| e.active);

        let ctx = MessageContext {
            langs: match detail {
                Detail::Full => Langs::BOTH,
                Detail::In(lang) => Langs::only(lang),
                Detail::Decision => Langs::NONE,
            },
            workload,
            policy: &policy.name,
            classes: &matched,
            sources: &class_sources,
            subjects: &subjects,
        };
        let mut violations = Vec::new();
        violations.extend(class_propagation_check(&unpropagated, &ctx));
        if let Some(facts) = &facts {
            violations.extend(placement::check(facts, policy, &ctx));
        }
        if let Some(eff) = &mut effective {
            violations.extend(egress::check(eff, policy, snapshot, &ctx));
        }
        if let Some(f) = storage_facts.as_ref().filter(|f| !f.is_empty()) {
            violations.extend(storage::check(f, policy, &ctx));
        }
        for v in &mut violations {
            v.exempted = exempted;
        }
        if let Some(e) = exemption_use
            .as_ref()
            .filter(|e| !e.active && !violations.is_empty())
        {
            notices.push(Notice {
                code: "ExemptionExpired",
                policy: Some(policy.name.to_string()),
                message: Text {
                    en: format!(
                        "exemption {} of policy {} ({} {}, approved by {}) expired on {}; it no longer covers {}",
                        e.index,
                        policy.name,
                        e.basis.as_str(),
                        e.reference,
                        e.approved_by,
                        e.expires,
                        workload.reference()
                    ),
                    zh: format!(
                        "策略 {} 的豁免 {}（{} {}，批准人 {}）已于 {} 到期，不再覆盖 {}",
                        policy.name,
                        e.index,
                        e.basis.as_str(),
                        e.reference,
                        e.approved_by,
                        e.expires,
                        workload.reference()
                    ),
                },
            });
        }
        outcomes.push(PolicyOutcome {
            policy: policy.name.clone(),
            action: policy.action,
            classes: matched,
            exemption: exemption_use,
            violations,
        });
    }

    let action = outcomes
        .iter()
        .filter(|o| o.violated())
        .map(|o| o.action)
        .max();
    let volumes = storage_facts
        .as_mut()
        .and_then(storage::Facts::take_volumes);
    let verdict = Verdict {
        workload: WorkloadRef {
            kind: workload.kind.as_str().to_string(),
            namespace: workload.namespace.clone(),
            name: workload.name.clone(),
        },
        classes: classes.into_iter().collect(),
        class_sources,
        policies: outcomes,
        action,
        notices,
        egress: effective,
    };
    Ok((verdict, volumes))
}

/// Whether `evaluate_verdict` keeps each volume's storage evidence from
/// the judgement it makes anyway.
#[derive(Clone, Copy, PartialEq, Eq)]
enum StorageRecord {
    Keep,
    Skip,
}

/// Judge one workload. Errors only when the workload's classification label
/// cannot be understood (the user must fix it before it can be judged).
pub fn evaluate(
    snapshot: &Snapshot,
    workload: &Workload,
    now: Timestamp,
) -> Result<Verdict, ClassificationError> {
    evaluate_verdict(snapshot, workload, now, Detail::Full, StorageRecord::Skip).map(|(v, _)| v)
}

/// `evaluate`, keeping the storage evidence (what `storage_evidence`
/// gives) from the verdict's own storage judgement, for reports: `Some`
/// when a governing policy checks storage, so the volumes are not judged
/// a second time; `None` when none does (the volumes were not judged;
/// `storage_evidence` judges them if the caller needs them).
pub fn evaluate_keeping_storage_evidence(
    snapshot: &Snapshot,
    workload: &Workload,
    now: Timestamp,
) -> Result<(Verdict, Option<Vec<VolumeEvidence>>), ClassificationError> {
    evaluate_verdict(snapshot, workload, now, Detail::Full, StorageRecord::Keep)
}

/// How much of a verdict to write out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Detail {
    /// Everything, violation messages included.
    Full,
    /// Everything, with violation messages in `Lang` alone (the other
    /// language's texts left empty): what a webhook answer carries, at
    /// about half the cost of writing both.
    In(super::Lang),
    /// The decision only: every violation's code, field, evidence and
    /// exemption as with `Full`, but its `message` left empty. Writing the
    /// messages is most of the cost of a verdict with violations; the audit
    /// controller re-judges with this and writes messages only for the
    /// findings it reports (which `Full` then gives exactly).
    Decision,
}

/// `evaluate`, with the detail chosen by the caller.
pub fn evaluate_with(
    snapshot: &Snapshot,
    workload: &Workload,
    now: Timestamp,
    detail: Detail,
) -> Result<Verdict, ClassificationError> {
    evaluate_verdict(snapshot, workload, now, detail, StorageRecord::Skip).map(|(v, _)| v)
}

/// The classes a controller declares on its own metadata that neither its
/// pod template nor its Namespace gives its pods. Controllers copy the pod
/// template's labels, not their own, to what they create (a Deployment's
/// ReplicaSets and Pods, a CronJob's Pods): a class left on the metadata
/// alone classifies the controller but none of its pods, so the pods are
/// never sent to the webhook and can be moved abroad by editing the
/// ReplicaSet. A Pod is its own template.
fn classes_not_on_pod_template(
    workload: &Workload,
    ns_labels: Option<&BTreeMap<String, String>>,
) -> BTreeSet<DataClass> {
    if workload.kind == super::WorkloadKind::Pod {
        return BTreeSet::new();
    }
    let classes_at = |labels: Option<&BTreeMap<String, String>>| {
        labels
            .and_then(|l| l.get(DATA_CLASS_LABEL))
            .and_then(|v| parse_class_list(v).ok())
            .unwrap_or_default()
    };
    let own = classes_at(Some(&workload.labels));
    if own.is_empty() {
        return own;
    }
    let reaching: BTreeSet<DataClass> = classes_at(Some(&workload.template_labels))
        .union(&classes_at(ns_labels))
        .copied()
        .collect();
    own.difference(&reaching).copied().collect()
}

/// The violation for the classes of `unpropagated` this policy governs.
fn class_propagation_check(
    unpropagated: &BTreeSet<DataClass>,
    ctx: &MessageContext<'_>,
) -> Option<Violation> {
    let missing: Vec<DataClass> = ctx
        .classes
        .iter()
        .filter(|c| unpropagated.contains(c))
        .copied()
        .collect();
    if missing.is_empty() {
        return None;
    }
    let field = ctx.workload.kind.template_labels_path();
    let message = if ctx.langs.any() {
        let w = ctx.workload.reference();
        let names = missing
            .iter()
            .map(|c| c.as_str())
            .collect::<Vec<_>>()
            .join(".");
        let p = ctx.policy;
        let creates = match ctx.workload.kind {
            super::WorkloadKind::Deployment => "ReplicaSets and Pods",
            super::WorkloadKind::CronJob => "Jobs and Pods",
            _ => "Pods",
        };
        let creates_zh = match ctx.workload.kind {
            super::WorkloadKind::Deployment => "ReplicaSet 和 Pod",
            super::WorkloadKind::CronJob => "Job 和 Pod",
            _ => "Pod",
        };
        Message {
            problem: ctx.langs.text(format_args!(
                    "{w} declares {DATA_CLASS_LABEL}={names} on metadata.labels, which policy {p} governs, but its pod template ({field}) does not carry that class, so the {creates} it creates are not classified: residency-guard does not judge them, and they can be moved abroad without the `declassify` verb."
                ), format_args!(
                    "{w} 在 metadata.labels 上声明了 {DATA_CLASS_LABEL}={names}（受策略 {p} 约束），但其 Pod 模板（{field}）没有该类别，因此它创建的 {creates_zh} 不带分类：residency-guard 不会判定它们，无需 `declassify` 权限即可把它们移到境外。"
                )),
            fix: ctx.langs.text(format_args!(
                    "add {DATA_CLASS_LABEL}: {names} to {field} (controllers copy the pod template's labels, not their own, to what they create), or label the Namespace."
                ), format_args!(
                    "在 {field} 中加上 {DATA_CLASS_LABEL}: {names}（控制器把 Pod 模板的标签而不是自身的标签复制给它创建的对象），或给命名空间加上该标签。"
                )),
        }
    } else {
        Message::default()
    };
    Some(Violation {
        code: Code::ClassNotOnPodTemplate,
        field: field.to_string(),
        evidence: Evidence::Classification {
            not_on_pod_template: missing,
        },
        message,
        exempted: false,
    })
}

type ClassesAndSources = (BTreeSet<DataClass>, Vec<ClassSource>);

fn classes_of(
    workload: &Workload,
    ns_labels: Option<&BTreeMap<String, String>>,
    snapshot: &Snapshot,
) -> Result<ClassesAndSources, ClassificationError> {
    let ns_location = format!("Namespace {}", workload.namespace);
    let candidates = [
        (Some(&*workload.labels), "metadata.labels".to_string()),
        (
            Some(&*workload.template_labels),
            workload.kind.template_labels_path().to_string(),
        ),
        (ns_labels, ns_location),
    ];
    let mut found = Found {
        workload,
        classes: BTreeSet::new(),
        sources: Vec::new(),
    };
    for (labels, location) in candidates {
        let Some(value) = labels.and_then(|l| l.get(DATA_CLASS_LABEL)) else {
            continue;
        };
        if found.sources.iter().any(|s| s.location == location) {
            continue; // a Pod's labels are its own template's labels
        }
        found.record(value, location.clone(), location, None)?;
    }
    // Classes of the controller owner chain (filled by the caller, which
    // holds the other objects of the namespace): a ReplicaSet or Pod of a
    // classified Deployment is classified whatever labels it carries.
    for inherited in &workload.inherited_classes {
        found.record(
            &inherited.value,
            inherited.location.clone(),
            format!("{} of {}", inherited.location, inherited.owner),
            Some(inherited.owner.clone()),
        )?;
    }
    // Data at rest is classified where it lives: a claim labelled with a
    // class gives it to every pod that mounts it (after its workload is
    // gone, too).
    for claim in labelled_claims(workload, snapshot) {
        let Some(value) = &claim.class_label else {
            continue;
        };
        let location = format!("PersistentVolumeClaim {}/{}", claim.namespace, claim.name);
        found.record(value, location.clone(), location, None)?;
    }
    Ok((found.classes, found.sources))
}

/// The classes found so far and where each was declared.
struct Found<'w> {
    workload: &'w Workload,
    classes: BTreeSet<DataClass>,
    sources: Vec<ClassSource>,
}

impl Found<'_> {
    /// Parse one declaration and record where it came from; `error_at` is
    /// where an unreadable value is reported.
    fn record(
        &mut self,
        value: &str,
        location: String,
        error_at: String,
        inherited_from: Option<String>,
    ) -> Result<(), ClassificationError> {
        let parsed = parse_class_list(value).map_err(|error| ClassificationError {
            workload: self.workload.reference(),
            location: error_at,
            error,
        })?;
        self.classes.extend(parsed);
        self.sources.push(ClassSource {
            location,
            value: value.to_string(),
            inherited_from,
        });
        Ok(())
    }
}

/// The claims the workload's pods mount that carry a data-class label: its
/// `persistentVolumeClaim` volumes, and a StatefulSet's claims made from its
/// claim templates.
fn labelled_claims<'s>(workload: &Workload, snapshot: &'s Snapshot) -> Vec<&'s super::ClaimRecord> {
    let storage = snapshot.storage();
    let mut out: Vec<&super::ClaimRecord> = workload
        .pod
        .volumes
        .iter()
        .flatten()
        .filter_map(|v| v.persistent_volume_claim.as_ref())
        .filter_map(|c| storage.claim(&workload.namespace, &c.claim_name))
        .filter(|c| c.class_label.is_some())
        .collect();
    for t in &workload.claim_templates {
        out.extend(
            storage
                .template_claims(&workload.namespace, t.name(), &workload.name)
                .filter(|c| c.class_label.is_some()),
        );
    }
    out.dedup_by(|a, b| a.name == b.name);
    out
}
