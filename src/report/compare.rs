//! `--compare previous.json`: what changed since an earlier report. The
//! earlier report is read as plain JSON (any report of this schema
//! version), so a report written by an older build compares too.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use serde_json::Value;

use super::model::{Report, SCHEMA_VERSION};

#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Changes {
    pub previous: PreviousReport,
    pub new_workloads: Vec<WorkloadChange>,
    pub removed_workloads: Vec<WorkloadChange>,
    pub reclassified: Vec<Reclassified>,
    pub moved_pods: Vec<MovedPods>,
    /// Volumes whose PersistentVolume, place or posture changed, and
    /// volumes new since that are outside mainland China.
    pub moved_volumes: Vec<MovedVolume>,
    pub new_exemptions: Vec<ExemptionChange>,
    pub expired_exemptions: Vec<ExemptionChange>,
    pub removed_exemptions: Vec<ExemptionChange>,
    pub new_violations: Vec<ViolationChange>,
    pub fixed_violations: Vec<ViolationChange>,
}

impl Changes {
    pub fn total(&self) -> usize {
        self.new_workloads.len()
            + self.removed_workloads.len()
            + self.reclassified.len()
            + self.moved_pods.len()
            + self.moved_volumes.len()
            + self.new_exemptions.len()
            + self.expired_exemptions.len()
            + self.removed_exemptions.len()
            + self.new_violations.len()
            + self.fixed_violations.len()
    }
}

#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PreviousReport {
    pub generated_at: Option<String>,
    /// SHA-256 of the earlier report's file.
    pub sha256: String,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadChange {
    pub namespace: String,
    pub kind: String,
    pub name: String,
    pub classes: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Reclassified {
    pub namespace: String,
    pub kind: String,
    pub name: String,
    pub before: Vec<String>,
    pub after: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodePods {
    pub node: String,
    pub region: Option<String>,
    pub jurisdiction: String,
    pub pods: usize,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MovedPods {
    pub namespace: String,
    pub kind: String,
    pub name: String,
    pub before: Vec<NodePods>,
    pub after: Vec<NodePods>,
    /// Pods now on nodes outside mainland China (or unverified) that were
    /// not there before.
    pub newly_outside: usize,
}

/// Where a volume's data is, as a report says.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VolumePlace {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub persistent_volume: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub storage_class: Option<String>,
    /// The region and country (outside), the regions (mainland),
    /// `unknown`, the servers and their countries, or the class's
    /// guarantee.
    pub location: String,
    /// The volume's storage posture.
    pub posture: String,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MovedVolume {
    pub namespace: String,
    pub kind: String,
    pub name: String,
    pub volume: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub claim: Option<String>,
    /// Null: the volume is not in the earlier report.
    pub before: Option<VolumePlace>,
    pub after: VolumePlace,
    /// Outside mainland China now, and not before.
    pub newly_outside: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ExemptionChange {
    pub policy: String,
    pub basis: String,
    pub reference: String,
    pub approved_by: String,
    pub expires: String,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ViolationChange {
    pub namespace: String,
    pub kind: String,
    pub name: String,
    pub policy: String,
    pub code: String,
    pub field: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
}

fn s(v: &Value, key: &str) -> String {
    v.get(key)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

fn strings(v: &Value, key: &str) -> Vec<String> {
    v.get(key)
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn array<'a>(v: &'a Value, key: &str) -> &'a [Value] {
    v.get(key)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
}

type Wk = (String, String, String);

fn workload_key(w: &Value) -> Wk {
    (s(w, "namespace"), s(w, "kind"), s(w, "name"))
}

fn node_pods(w: &Value) -> Vec<NodePods> {
    let mut by_node: BTreeMap<String, NodePods> = BTreeMap::new();
    let pods = w
        .get("placement")
        .map(|p| array(p, "pods"))
        .unwrap_or_default();
    for pod in pods {
        let node = pod.get("node").filter(|n| !n.is_null());
        let (name, region, jurisdiction) = match node {
            Some(n) => (
                s(n, "name"),
                n.get("region").and_then(Value::as_str).map(str::to_string),
                s(n, "jurisdiction"),
            ),
            None => (String::new(), None, "pending".to_string()),
        };
        by_node
            .entry(name.clone())
            .or_insert(NodePods {
                node: name,
                region,
                jurisdiction,
                pods: 0,
            })
            .pods += 1;
    }
    by_node.into_values().collect()
}

fn opt(v: &Value, key: &str) -> Option<String> {
    v.get(key).and_then(Value::as_str).map(str::to_string)
}

type VolumeKey = (String, Option<String>, String);

/// A workload's volumes by (volume, claim, source); None when the report
/// has no storage evidence (written before it had any).
fn volumes(w: &Value) -> Option<BTreeMap<VolumeKey, VolumePlace>> {
    let list = w.get("storage")?.get("volumes")?.as_array()?;
    Some(
        list.iter()
            .map(|v| ((s(v, "volume"), opt(v, "claim"), s(v, "source")), place(v)))
            .collect(),
    )
}

fn place(v: &Value) -> VolumePlace {
    let location = match v.get("location").filter(|l| !l.is_null()) {
        Some(l) => match l.get("standing").and_then(Value::as_str) {
            Some("outside") => format!("{} ({})", s(l, "region"), s(l, "country")),
            Some("mainland") if !strings(l, "regions").is_empty() => {
                strings(l, "regions").join(", ")
            }
            Some(standing) => standing.to_string(),
            None => "unknown".to_string(),
        },
        None => {
            let servers: Vec<String> = array(v, "endpoints")
                .iter()
                .map(|e| match opt(e, "country") {
                    Some(c) => format!("{} ({c})", s(e, "server")),
                    None => format!("{} ({})", s(e, "server"), s(e, "standing")),
                })
                .collect();
            if !servers.is_empty() {
                servers.join(", ")
            } else {
                opt(v, "classGuarantee").unwrap_or_else(|| "unknown".to_string())
            }
        }
    };
    VolumePlace {
        persistent_volume: opt(v, "persistentVolume"),
        storage_class: opt(v, "storageClass"),
        location,
        posture: s(v, "posture"),
    }
}

fn violations(w: &Value) -> BTreeSet<ViolationChange> {
    let (namespace, kind, name) = workload_key(w);
    array(w, "violations")
        .iter()
        .filter(|v| v.get("exempted").and_then(Value::as_bool) != Some(true))
        .map(|v| ViolationChange {
            namespace: namespace.clone(),
            kind: kind.clone(),
            name: name.clone(),
            policy: s(v, "policy"),
            code: s(v, "code"),
            field: s(v, "field"),
            pod: v.get("pod").and_then(Value::as_str).map(str::to_string),
        })
        .collect()
}

fn exemptions(report: &Value) -> BTreeMap<(String, String, String), (ExemptionChange, bool)> {
    array(report, "exemptions")
        .iter()
        .map(|e| {
            let change = ExemptionChange {
                policy: s(e, "policy"),
                basis: s(e, "basis"),
                reference: s(e, "reference"),
                approved_by: s(e, "approvedBy"),
                expires: s(e, "expires"),
            };
            let key = (
                change.policy.clone(),
                change.basis.clone(),
                change.reference.clone(),
            );
            (key, (change, s(e, "state") == "active"))
        })
        .collect()
}

/// Read an earlier report; the error says what is wrong with it.
pub fn read_previous(text: &str) -> Result<Value, String> {
    let v: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    let version = v.get("schemaVersion").and_then(Value::as_str);
    if version != Some(SCHEMA_VERSION) {
        return Err(format!(
            "not a residency report of schema {SCHEMA_VERSION} (schemaVersion is {})",
            version.map_or_else(|| "missing".to_string(), |v| format!("{v:?}"))
        ));
    }
    if !v.get("workloads").is_some_and(Value::is_array) {
        return Err("it has no workloads list".into());
    }
    Ok(v)
}

/// What changed from `previous` (a report read by `read_previous`) to `now`.
pub fn compare(previous: &Value, previous_sha256: String, now: &Report) -> Changes {
    // The current report through the same lens as the previous one.
    let current = serde_json::to_value(now).unwrap_or(Value::Null);
    let before: BTreeMap<Wk, &Value> = array(previous, "workloads")
        .iter()
        .map(|w| (workload_key(w), w))
        .collect();
    let after: BTreeMap<Wk, &Value> = array(&current, "workloads")
        .iter()
        .map(|w| (workload_key(w), w))
        .collect();
    let mut c = Changes {
        previous: PreviousReport {
            generated_at: previous
                .get("generatedAt")
                .and_then(Value::as_str)
                .map(str::to_string),
            sha256: previous_sha256,
        },
        ..Changes::default()
    };
    let change = |k: &Wk, w: &Value| WorkloadChange {
        namespace: k.0.clone(),
        kind: k.1.clone(),
        name: k.2.clone(),
        classes: strings(w, "classes"),
    };
    let mut old_violations = BTreeSet::new();
    let mut new_violations = BTreeSet::new();
    for (k, w) in &before {
        old_violations.extend(violations(w));
        if !after.contains_key(k) {
            c.removed_workloads.push(change(k, w));
        }
    }
    for (k, w) in &after {
        new_violations.extend(violations(w));
        // Volumes: compared where the earlier report has storage evidence;
        // a new workload's volumes count as new.
        let old_volumes = match before.get(k) {
            Some(old) => volumes(old),
            None => Some(BTreeMap::new()),
        };
        if let (Some(was), Some(is)) = (old_volumes, volumes(w)) {
            for (key, now) in is {
                let then = was.get(&key);
                let (volume, claim, _) = key;
                let outside = now.posture == "outside";
                let report = match then {
                    None => outside,
                    Some(t) => *t != now,
                };
                if report {
                    c.moved_volumes.push(MovedVolume {
                        namespace: k.0.clone(),
                        kind: k.1.clone(),
                        name: k.2.clone(),
                        volume,
                        claim,
                        newly_outside: outside && then.is_none_or(|t| t.posture != "outside"),
                        before: then.cloned(),
                        after: now,
                    });
                }
            }
        }
        let Some(old) = before.get(k) else {
            c.new_workloads.push(change(k, w));
            continue;
        };
        let (was, is) = (strings(old, "classes"), strings(w, "classes"));
        if was != is {
            c.reclassified.push(Reclassified {
                namespace: k.0.clone(),
                kind: k.1.clone(),
                name: k.2.clone(),
                before: was,
                after: is,
            });
        }
        let (was, is) = (node_pods(old), node_pods(w));
        if was != is {
            let outside = |list: &[NodePods]| -> BTreeMap<String, usize> {
                list.iter()
                    .filter(|n| n.jurisdiction != "mainland-china" && n.jurisdiction != "pending")
                    .map(|n| (n.node.clone(), n.pods))
                    .collect()
            };
            let old_out = outside(&was);
            let newly_outside = outside(&is)
                .iter()
                .map(|(node, n)| n.saturating_sub(old_out.get(node).copied().unwrap_or(0)))
                .sum();
            c.moved_pods.push(MovedPods {
                namespace: k.0.clone(),
                kind: k.1.clone(),
                name: k.2.clone(),
                before: was,
                after: is,
                newly_outside,
            });
        }
    }
    c.new_violations = new_violations
        .difference(&old_violations)
        .cloned()
        .collect();
    c.fixed_violations = old_violations
        .difference(&new_violations)
        .cloned()
        .collect();

    let (old_ex, new_ex) = (exemptions(previous), exemptions(&current));
    for (k, (e, active)) in &new_ex {
        match old_ex.get(k) {
            None => c.new_exemptions.push(e.clone()),
            Some((_, was_active)) if *was_active && !active => {
                c.expired_exemptions.push(e.clone());
            }
            Some(_) => {}
        }
    }
    for (k, (e, _)) in &old_ex {
        if !new_ex.contains_key(k) {
            c.removed_exemptions.push(e.clone());
        }
    }
    c.new_workloads.sort();
    c.removed_workloads.sort();
    c.reclassified.sort();
    c.moved_pods.sort();
    c.moved_volumes.sort();
    c.new_exemptions.sort();
    c.expired_exemptions.sort();
    c.removed_exemptions.sort();
    c
}
