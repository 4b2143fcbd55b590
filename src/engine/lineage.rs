//! Data follows the volume. A pod that mounts a PersistentVolumeClaim that
//! a classified workload uses reads and writes that workload's data, so it
//! carries that workload's classes, whatever its own labels say: an ad-hoc
//! pod, a `kubectl debug --copy-to` copy, a second Deployment pointed at the
//! same claim. Without this, copying a classified pod's volume into an
//! unlabelled pod pinned abroad would be a way around every check.
//!
//! Claims are matched by name within the namespace: a pod volume's
//! `persistentVolumeClaim.claimName`, and the claims a StatefulSet's
//! `volumeClaimTemplates` make (`<template>-<statefulset>-<ordinal>`).

use std::collections::BTreeSet;
use std::sync::Arc;

use super::Workload;
use crate::api::DATA_CLASS_LABEL;

/// A class a workload carries because it shares a claim with `owner`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClaimClass {
    /// The classified workload: `StatefulSet clinic/records`.
    pub owner: String,
    /// The claim they share.
    pub claim: String,
    /// The data-class label value on `owner` (its pod template's, else its
    /// own), as written.
    pub value: String,
}

/// The claim names `w`'s pods mount through `persistentVolumeClaim`.
pub fn claims_mounted(w: &Workload) -> impl Iterator<Item = &str> {
    w.pod
        .volumes
        .iter()
        .flatten()
        .filter_map(|v| v.persistent_volume_claim.as_ref())
        .map(|c| c.claim_name.as_str())
        .filter(|n| !n.is_empty())
}

fn mounted_claims(w: &Workload) -> BTreeSet<&str> {
    claims_mounted(w).collect()
}

/// Does a claim named `claim` belong to `w`: mounted by its pods, or made
/// by its claim templates for one of its ordinals?
fn uses_claim(w: &Workload, mounted: &BTreeSet<&str>, claim: &str) -> bool {
    mounted.contains(claim)
        || w.claim_templates.iter().any(|t| {
            claim
                .strip_prefix(t.name())
                .and_then(|rest| rest.strip_prefix('-'))
                .and_then(|rest| rest.strip_prefix(w.name.as_str()))
                .and_then(|rest| rest.strip_prefix('-'))
                .is_some_and(|ordinal| {
                    !ordinal.is_empty() && ordinal.bytes().all(|b| b.is_ascii_digit())
                })
        })
}

/// The classes `workload` carries through the claims it mounts, from the
/// classified workloads among `others` (the same namespace's) that use
/// the same claims. Empty when it mounts no claim (the common case costs
/// one pass over its volumes).
pub fn classes_through_claims(workload: &Workload, others: &[Arc<Workload>]) -> Vec<ClaimClass> {
    let wanted = mounted_claims(workload);
    if wanted.is_empty() {
        return Vec::new();
    }
    let mut out = Vec::new();
    for other in others {
        if other.namespace != workload.namespace
            || (other.kind == workload.kind && other.name == workload.name)
        {
            continue;
        }
        let Some(value) = other
            .template_labels
            .get(DATA_CLASS_LABEL)
            .or_else(|| other.labels.get(DATA_CLASS_LABEL))
        else {
            continue;
        };
        let theirs = mounted_claims(other);
        if let Some(claim) = wanted.iter().find(|c| uses_claim(other, &theirs, c)) {
            out.push(ClaimClass {
                owner: other.reference(),
                claim: (*claim).to_string(),
                value: value.clone(),
            });
        }
    }
    out
}

/// The classified workloads among `others` that use the claim `claim` of
/// `namespace` (mount it, or make it from a claim template), with their
/// label values: whose data the claim holds, even before the audit labels
/// it. A clone of the claim copies that data.
pub fn classes_of_claim(namespace: &str, claim: &str, others: &[Arc<Workload>]) -> Vec<ClaimClass> {
    others
        .iter()
        .filter(|o| o.namespace == namespace)
        .filter_map(|other| {
            let value = other
                .template_labels
                .get(DATA_CLASS_LABEL)
                .or_else(|| other.labels.get(DATA_CLASS_LABEL))?;
            uses_claim(other, &mounted_claims(other), claim).then(|| ClaimClass {
                owner: other.reference(),
                claim: claim.to_string(),
                value: value.clone(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn workload(doc: serde_json::Value) -> Arc<Workload> {
        Arc::new(Workload::from_value(&doc, "clinic").unwrap())
    }

    fn pod(name: &str, class: Option<&str>, claim: &str) -> Arc<Workload> {
        let labels = class.map_or(json!({}), |c| json!({DATA_CLASS_LABEL: c}));
        workload(json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "labels": labels},
            "spec": {"volumes": [{"name": "d", "persistentVolumeClaim": {"claimName": claim}}]}}))
    }

    fn stateful_set() -> Arc<Workload> {
        workload(json!({"apiVersion": "apps/v1", "kind": "StatefulSet",
            "metadata": {"name": "records"},
            "spec": {"template": {"metadata": {"labels": {DATA_CLASS_LABEL: "health"}}},
                "volumeClaimTemplates": [{"metadata": {"name": "data"}}]}}))
    }

    #[test]
    fn a_copy_mounting_a_classified_claim_carries_its_classes() {
        let copy = pod("copy", None, "data-records-0");
        let found = classes_through_claims(&copy, &[stateful_set()]);
        assert_eq!(
            found,
            [ClaimClass {
                owner: "StatefulSet clinic/records".into(),
                claim: "data-records-0".into(),
                value: "health".into(),
            }]
        );
        // Mounted directly by a classified pod: the same.
        let owner = pod("api", Some("personal"), "shared");
        let found = classes_through_claims(&pod("debug", None, "shared"), &[owner]);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].value, "personal");
    }

    #[test]
    fn only_the_claims_a_workload_really_uses_count() {
        let sts = stateful_set();
        for claim in [
            "data-records-",
            "data-records-x",
            "data-record-0",
            "other-records-0",
        ] {
            assert!(
                classes_through_claims(&pod("p", None, claim), &[Arc::clone(&sts)]).is_empty(),
                "{claim}"
            );
        }
        // An unclassified neighbour gives nothing; nor does the pod itself.
        let plain = pod("plain", None, "shared");
        assert!(classes_through_claims(&pod("p", None, "shared"), &[plain]).is_empty());
        let me = pod("p", Some("personal"), "shared");
        assert!(classes_through_claims(&me, &[Arc::clone(&me)]).is_empty());
    }
}
