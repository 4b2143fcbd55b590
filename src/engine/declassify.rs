//! Declassification: an UPDATE that takes a data class away from a
//! workload (its own label or its pod template's) or from a Namespace.
//!
//! Without this check one UPDATE could drop the label and the node
//! affinity together (judged as unclassified, admitted, rescheduled
//! abroad), or do it in two steps: drop the label while still compliant,
//! then unpin, which the webhook never sees because nothing is classified
//! any more. So removing a class is a decision of its own: the webhook
//! allows it only to a user authorised for the verb `declassify` on
//! `dataclasses.residencyguard.io/<class>` in the namespace (a
//! SubjectAccessReview, as Kubernetes does for `escalate`, `bind` and
//! `approve`). Adding classes is always allowed.
//!
//! A class is taken away whenever a classified object's pods end up with
//! fewer classes, or out of a policy's scope, whichever label moved:
//!
//! - the label removed or narrowed, on the object, its pod template or its
//!   Namespace ([`removed_classes`]);
//! - the label moved from a controller's pod template to its own metadata
//!   (the union is unchanged, but the pods it creates carry nothing):
//!   [`removed_from_pods`];
//! - a Namespace relabelled out of a policy's `namespaceSelector`, taking
//!   the classified workloads in it (or its labelled claims) out of that
//!   policy's scope: [`scope_losses`];
//! - a claim created as a clone of a labelled claim without its label:
//!   [`clone_losses`].

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use super::{Snapshot, Workload, WorkloadKind};
use crate::api::{DATA_CLASS_LABEL, DataClass};

/// The API group, resource and verb a declassification is authorised by.
pub const DECLASSIFY_GROUP: &str = "residencyguard.io";
pub const DECLASSIFY_RESOURCE: &str = "dataclasses";
pub const DECLASSIFY_VERB: &str = "declassify";

/// The classes named by data-class label values. Unknown names are left
/// out: a class that was never valid cannot be taken away.
pub fn classes_named<'a>(values: impl IntoIterator<Item = &'a str>) -> BTreeSet<DataClass> {
    values
        .into_iter()
        .flat_map(|v| v.split('.'))
        .filter_map(|name| DataClass::parse(name.trim()))
        .collect()
}

/// The data-class label value in `labels`, if any.
pub fn class_label(labels: Option<&BTreeMap<String, String>>) -> Option<&str> {
    labels?.get(DATA_CLASS_LABEL).map(String::as_str)
}

/// Classes the old object carried that the new one no longer carries
/// anywhere. `old` and `new` are the label values on the object and its
/// pod template; `still` are classes that keep applying regardless (the
/// Namespace's, for a workload).
pub fn removed_classes<'a>(
    old: impl IntoIterator<Item = &'a str>,
    new: impl IntoIterator<Item = &'a str>,
    still: &BTreeSet<DataClass>,
) -> BTreeSet<DataClass> {
    let new = classes_named(new);
    classes_named(old)
        .into_iter()
        .filter(|c| !new.contains(c) && !still.contains(c))
        .collect()
}

/// Classes a controller's pod template carried that the pods it creates
/// would no longer carry (`still`: the Namespace's), even where the object
/// keeps them on its own metadata. A Pod is its own template.
pub fn removed_from_pods(
    kind: WorkloadKind,
    old_template: Option<&str>,
    new_template: Option<&str>,
    still: &BTreeSet<DataClass>,
) -> BTreeSet<DataClass> {
    if kind == WorkloadKind::Pod {
        return BTreeSet::new();
    }
    removed_classes(old_template, new_template, still)
}

/// A policy whose `namespaceSelector` matched a Namespace before a relabel
/// and does not after, with the classes it governed there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScopeLoss {
    pub policy: String,
    /// The policy's classes that the Namespace or its workloads carry.
    pub classes: BTreeSet<DataClass>,
    /// The classified workloads it governed there (a few, for the message).
    pub workloads: Vec<String>,
}

/// The policies a Namespace relabel (`old` → `new` labels) takes the
/// Namespace out of, where it holds data they govern: its own classes,
/// those of `workloads` in it, or those of its labelled
/// PersistentVolumeClaims (data at rest that classifies whoever mounts the
/// claim next, after its workload is gone). Policies without a
/// namespaceSelector, or that govern none of those classes, lose nothing.
pub fn scope_losses(
    snapshot: &Snapshot,
    namespace: &str,
    old: &BTreeMap<String, String>,
    new: &BTreeMap<String, String>,
    workloads: &[Arc<Workload>],
) -> Vec<ScopeLoss> {
    const LISTED: usize = 3;
    let own = classes_named(class_label(Some(old)));
    let mut losses = Vec::new();
    for policy in snapshot.policies.iter() {
        let Some(selector) = &policy.namespace_selector else {
            continue;
        };
        if !selector.matches(old) || selector.matches(new) {
            continue;
        }
        let mut classes: BTreeSet<DataClass> = own.intersection(&policy.classes).copied().collect();
        let mut named = Vec::new();
        for w in workloads {
            let carried = classes_named(
                [
                    class_label(Some(&w.labels)),
                    class_label(Some(&w.template_labels)),
                ]
                .into_iter()
                .flatten(),
            );
            let governed: Vec<DataClass> = carried.intersection(&policy.classes).copied().collect();
            if governed.is_empty() {
                continue;
            }
            classes.extend(governed);
            if named.len() < LISTED {
                named.push(w.reference());
            }
        }
        for claim in snapshot
            .storage()
            .claims()
            .filter(|c| c.namespace == namespace)
        {
            let carried = classes_named(claim.class_label.as_deref());
            let governed: Vec<DataClass> = carried.intersection(&policy.classes).copied().collect();
            if governed.is_empty() {
                continue;
            }
            classes.extend(governed);
            if named.len() < LISTED {
                named.push(format!(
                    "PersistentVolumeClaim {}/{}",
                    claim.namespace, claim.name
                ));
            }
        }
        if !classes.is_empty() {
            losses.push(ScopeLoss {
                policy: policy.name.to_string(),
                classes,
                workloads: named,
            });
        }
    }
    losses
}

/// What the update does, for the refusal: the default (a label removed),
/// or another way of taking classes away.
pub fn label_removal(classes: &[DataClass]) -> super::Text {
    let list = classes
        .iter()
        .map(|c| c.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    super::Text {
        en: format!(
            "this update removes data class [{list}] (label {DATA_CLASS_LABEL}), which declassifies it: it would no longer be held to the policies that keep that data in mainland China"
        ),
        zh: format!(
            "此更新移除了数据类别 [{list}]（标签 {DATA_CLASS_LABEL}），即解除其分类：它将不再受把此类数据留在中国大陆的策略约束"
        ),
    }
}

/// The change text for a class moved off a controller's pod template.
pub fn moved_off_template(classes: &[DataClass], template_path: &str) -> super::Text {
    let list = classes
        .iter()
        .map(|c| c.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    super::Text {
        en: format!(
            "this update takes data class [{list}] off the pod template ({template_path}), which declassifies the pods it creates: they would carry no class and no longer be held to the policies that keep that data in mainland China, even though the object keeps the label on its own metadata"
        ),
        zh: format!(
            "此更新把数据类别 [{list}] 从 Pod 模板（{template_path}）中移走，即解除其所创建 Pod 的分类：即使对象自身的 metadata 仍带有该标签，这些 Pod 也将不带类别，不再受把此类数据留在中国大陆的策略约束"
        ),
    }
}

/// The change text for a Namespace relabelled out of policies' scope.
pub fn out_of_scope(losses: &[ScopeLoss]) -> super::Text {
    let describe = |l: &ScopeLoss, zh: bool| {
        let classes = l
            .classes
            .iter()
            .map(|c| c.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        let workloads = if l.workloads.is_empty() {
            String::new()
        } else if zh {
            format!("，例如 {}", l.workloads.join("、"))
        } else {
            format!(", e.g. {}", l.workloads.join(", "))
        };
        if zh {
            format!(
                "策略 {} 的 namespaceSelector（约束 [{classes}]{workloads}）",
                l.policy
            )
        } else {
            format!(
                "policy {}'s namespaceSelector (governing [{classes}]{workloads})",
                l.policy
            )
        }
    };
    let en = losses
        .iter()
        .map(|l| describe(l, false))
        .collect::<Vec<_>>()
        .join("; ");
    let zh = losses
        .iter()
        .map(|l| describe(l, true))
        .collect::<Vec<_>>()
        .join("；");
    super::Text {
        en: format!(
            "this update changes the Namespace's labels so that it no longer matches {en}, which declassifies the data there: its workloads would no longer be held to the policy"
        ),
        zh: format!(
            "此更新修改了命名空间的标签，使其不再匹配{zh}，即解除其中数据的分类：其工作负载将不再受该策略约束"
        ),
    }
}

/// A claim created as a copy of another claim's data (`spec.dataSource`
/// or `spec.dataSourceRef` naming a PersistentVolumeClaim: a CSI clone):
/// the classes the source carries (its label's, and those of the
/// classified workloads that mount it) that the new claim's label leaves
/// out. Without this an `edit` user clones a labelled claim into an
/// unlabelled one, and any pod that mounts the copy is held to no policy.
pub fn clone_losses<'a>(
    source_labels: impl IntoIterator<Item = &'a str>,
    new_label: Option<&'a str>,
) -> BTreeSet<DataClass> {
    removed_classes(source_labels, new_label, &BTreeSet::new())
}

/// What a clone that leaves classes out does, for the refusal: the source,
/// the field that names it, and the label the copy must carry.
pub fn cloned_without(source: &str, field: &str, classes: &[DataClass]) -> super::Text {
    let list = classes
        .iter()
        .map(|c| c.as_str())
        .collect::<Vec<_>>()
        .join(".");
    let shown = list.replace('.', ", ");
    super::Text {
        en: format!(
            "this claim copies the data of {source} ({field}), which is labelled data class [{shown}], without that label ({DATA_CLASS_LABEL}), which declassifies the copy: pods that mount it would be held to no policy that keeps that data in mainland China; label the new claim {DATA_CLASS_LABEL}={list}"
        ),
        zh: format!(
            "此存储卷声明复制了 {source}（{field}）的数据，源数据的类别为 [{shown}]，但新声明没有该标签（{DATA_CLASS_LABEL}），即解除副本的分类：挂载它的 Pod 将不受把此类数据留在中国大陆的任何策略约束；请给新声明加上标签 {DATA_CLASS_LABEL}={list}"
        ),
    }
}

/// Why a declassification was refused, for the person who tried it.
/// `who` is the user, `subject` the object ("Deployment payments/api"),
/// `change` what the update does (see [`label_removal`]).
pub fn refusal(
    subject: &str,
    who: &str,
    namespace: &str,
    classes: &[DataClass],
    error: Option<&str>,
    role: &str,
    change: &super::Text,
) -> super::Text {
    let names: Vec<&str> = classes.iter().map(|c| c.as_str()).collect();
    let list = names.join(", ");
    let first = names.first().copied().unwrap_or_default();
    let (why_en, why_zh) = match error {
        None => (
            format!(
                "{who} is not allowed to `{DECLASSIFY_VERB}` {DECLASSIFY_RESOURCE}.{DECLASSIFY_GROUP} [{list}] in namespace {namespace}"
            ),
            format!(
                "{who} 没有在命名空间 {namespace} 中对 {DECLASSIFY_RESOURCE}.{DECLASSIFY_GROUP} [{list}] 执行 `{DECLASSIFY_VERB}` 的权限"
            ),
        ),
        Some(e) => (
            format!(
                "residency-guard could not check whether {who} may `{DECLASSIFY_VERB}` them ({e}), so the change is refused"
            ),
            format!(
                "residency-guard 无法确认 {who} 是否有 `{DECLASSIFY_VERB}` 权限（{e}），因此拒绝此更改"
            ),
        ),
    };
    super::Text {
        en: format!(
            "{subject}: {}. {why_en}. Fix: keep the label where it was, or have an administrator grant the verb, e.g. kubectl create rolebinding declassify-{first} -n {namespace} --clusterrole={role} --user=<you>, and retry.",
            change.en
        ),
        zh: format!(
            "{subject}：{}。{why_zh}。修复：把标签保留在原处，或请管理员授予该权限，例如 kubectl create rolebinding declassify-{first} -n {namespace} --clusterrole={role} --user=<你的用户名>，然后重试。",
            change.zh
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(classes: &[DataClass]) -> BTreeSet<DataClass> {
        classes.iter().copied().collect()
    }

    #[test]
    fn a_clone_must_carry_its_sources_classes() {
        assert_eq!(
            clone_losses(["personal.health"], None),
            set(&[DataClass::Personal, DataClass::Health])
        );
        assert_eq!(
            clone_losses(["personal.health"], Some("health")),
            set(&[DataClass::Personal])
        );
        assert!(clone_losses(["personal"], Some("personal.financial")).is_empty());
        assert!(clone_losses([], None).is_empty());
        assert_eq!(
            clone_losses(["health", "personal"], Some("health")),
            set(&[DataClass::Personal])
        );
        let text = cloned_without(
            "PersistentVolumeClaim app/records-data",
            "spec.dataSource",
            &[DataClass::Personal, DataClass::Health],
        );
        assert!(
            text.en.contains("data-class=personal.health"),
            "{}",
            text.en
        );
        assert!(
            text.zh.contains("data-class=personal.health"),
            "{}",
            text.zh
        );
        assert!(text.en.contains("spec.dataSource"));
    }

    #[test]
    fn dropping_a_label_removes_its_classes() {
        let removed = removed_classes(["personal.financial"], [], &BTreeSet::new());
        assert_eq!(removed, set(&[DataClass::Personal, DataClass::Financial]));
    }

    #[test]
    fn moving_a_class_from_the_object_to_its_template_removes_nothing() {
        let removed = removed_classes(["personal"], ["", "personal"], &BTreeSet::new());
        assert!(removed.is_empty());
    }

    #[test]
    fn narrowing_a_list_removes_what_was_left_out() {
        let removed = removed_classes(["personal.health"], ["health.map"], &BTreeSet::new());
        assert_eq!(removed, set(&[DataClass::Personal]));
    }

    #[test]
    fn a_class_the_namespace_still_gives_is_not_removed() {
        let removed = removed_classes(["personal"], [], &set(&[DataClass::Personal]));
        assert!(removed.is_empty());
    }

    #[test]
    fn unknown_names_were_never_classes() {
        let removed = removed_classes(["personal.medical"], ["personal"], &BTreeSet::new());
        assert!(removed.is_empty());
    }
}
