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

use std::collections::{BTreeMap, BTreeSet};

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

/// Why a declassification was refused, for the person who tried it.
/// `who` is the user, `subject` the object ("Deployment payments/api").
pub fn refusal(
    subject: &str,
    who: &str,
    namespace: &str,
    classes: &[DataClass],
    error: Option<&str>,
    role: &str,
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
            "{subject}: this update removes data class [{list}] (label residencyguard.io/data-class), which declassifies it: it would no longer be held to the policies that keep that data in mainland China. {why_en}. Fix: keep the label, or have an administrator grant the verb, e.g. kubectl create rolebinding declassify-{first} -n {namespace} --clusterrole={role} --user=<you>, and retry."
        ),
        zh: format!(
            "{subject}：此更新移除了数据类别 [{list}]（标签 residencyguard.io/data-class），即解除其分类：它将不再受把此类数据留在中国大陆的策略约束。{why_zh}。修复：保留该标签，或请管理员授予该权限，例如 kubectl create rolebinding declassify-{first} -n {namespace} --clusterrole={role} --user=<你的用户名>，然后重试。"
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
