//! Data at rest keeps its class. A classified workload's pods write its
//! data to the claims they mount; once the workload is gone (a cascading
//! delete), nothing would say those claims hold classified data, and an
//! unlabelled pod mounting one could take the data abroad. So the audit
//! leader labels every claim a classified object mounts with the object's
//! classes (`residencyguard.io/data-class`), adding to what the claim
//! already declares, never removing. From then on the claim classifies
//! every pod that mounts it, and taking the label off needs the
//! `declassify` verb (the `claims.residencyguard.io` webhook entry).
//!
//! Pure: from the findings and the inventory to the labels to write.

use std::collections::{BTreeMap, BTreeSet};

use crate::api::{CLASS_SEPARATOR, DataClass, parse_class_list};
use crate::state::Inventory;

use super::index::FindingsIndex;

/// Annotation naming the object whose classes the audit gave a claim.
pub const CLASSIFIED_BY_ANNOTATION: &str = "residencyguard.io/classified-by";

/// One claim label to write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClaimLabel {
    pub namespace: String,
    pub claim: String,
    /// The label's new value: what the claim declared plus the classes of
    /// the objects that mount it, joined by `.` (`personal.health`).
    pub value: String,
    /// An object that lent it a class, preferably one without a controller
    /// (the Deployment rather than its pods): `Deployment clinic/records`.
    pub classified_by: String,
}

/// What one claim should declare, and who says so.
struct Wanted {
    /// What its label declares now.
    declared: BTreeSet<DataClass>,
    /// That, plus the classes of the objects that mount it.
    classes: BTreeSet<DataClass>,
    by: String,
    by_unowned: bool,
}

/// The claims whose label does not yet carry every class of the classified
/// objects that mount them. A claim whose label cannot be read is left to
/// the webhook and the findings (its pods cannot be judged either); a claim
/// the snapshot does not have (not created yet, or deleted) is skipped.
pub fn claims_to_label(index: &FindingsIndex, inv: &Inventory) -> Vec<ClaimLabel> {
    let storage = inv.snapshot.storage();
    let mut wanted: BTreeMap<(&str, &str), Wanted> = BTreeMap::new();
    for (key, finding) in index.iter() {
        if finding.classes.is_empty() || finding.error.is_some() {
            continue;
        }
        let Some(w) = inv.workloads.get(key) else {
            continue;
        };
        for claim in crate::engine::claims_mounted(w) {
            let Some(record) = storage.claim(&key.namespace, claim) else {
                continue;
            };
            let declared = match record.class_label.as_deref().map(parse_class_list) {
                None => BTreeSet::new(),
                Some(Ok(classes)) => classes,
                Some(Err(_)) => continue,
            };
            let by = || format!("{} {}/{}", w.kind, w.namespace, w.name);
            let unowned = w.controller.is_none();
            let entry = wanted
                .entry((key.namespace.as_str(), claim))
                .or_insert_with(|| Wanted {
                    declared: declared.clone(),
                    classes: declared,
                    by: by(),
                    by_unowned: unowned,
                });
            entry.classes.extend(finding.classes.iter().copied());
            // Name the workload a person manages (the Deployment), not the
            // pod or ReplicaSet it made: an object without a controller.
            if unowned && !entry.by_unowned {
                entry.by = by();
                entry.by_unowned = true;
            }
        }
    }
    wanted
        .into_iter()
        .filter(|(_, w)| w.declared != w.classes)
        .map(|((namespace, claim), w)| ClaimLabel {
            namespace: namespace.to_string(),
            claim: claim.to_string(),
            value: w
                .classes
                .iter()
                .map(|c| c.as_str())
                .collect::<Vec<_>>()
                .join(&CLASS_SEPARATOR.to_string()),
            classified_by: w.by,
        })
        .collect()
}
