//! The CSV: one row per governed workload and governing policy, for
//! spreadsheets (RFC 4180; UTF-8 with a byte-order mark so spreadsheet
//! programs read the Chinese text right).

use std::collections::BTreeSet;

use super::model::{Report, VolumeEntry, WorkloadEntry};

/// One volume in a cell: `data claim clinic/data-archive-0 pv pv-archive-0
/// class fast: outside (ap-east-1, HK)`.
fn volume_text(v: &VolumeEntry) -> String {
    let mut out = v.volume.clone();
    if let Some(c) = &v.claim {
        out.push_str(&format!(" claim {c}"));
    }
    if let Some(pv) = &v.persistent_volume {
        out.push_str(&format!(" pv {pv}"));
    }
    if let Some(c) = &v.storage_class {
        out.push_str(&format!(" class {c:?}"));
    }
    for e in &v.endpoints {
        out.push_str(&format!(" server {}", e.server));
        if let Some(c) = &e.country {
            out.push_str(&format!(" ({c})"));
        }
    }
    if let Some(d) = &v.driver {
        out.push_str(&format!(" driver {d}"));
    }
    out.push_str(&format!(": {}", v.posture.as_str()));
    if let Some(l) = &v.location {
        let place = match (&l.region, &l.country) {
            (Some(r), Some(c)) => format!("{r}, {c}"),
            _ if !l.regions.is_empty() => l.regions.join(" "),
            _ => l.standing.to_string(),
        };
        out.push_str(&format!(" ({place})"));
    }
    out
}

pub const HEADER: [&str; 24] = [
    "kind",
    "namespace",
    "name",
    "classes",
    "classSources",
    "policy",
    "action",
    "policyResult",
    "workloadStatus",
    "violations",
    "exemptionBasis",
    "exemptionReference",
    "exemptionApprovedBy",
    "exemptionExpires",
    "exemptionDaysLeft",
    "placementGuaranteed",
    "pods",
    "podsOutsideMainland",
    "nodes",
    "egressPosture",
    "externalBlocksOutside",
    "firstSeen",
    "storagePosture",
    "volumes",
];

/// A cell, quoted when it must be; a cell a spreadsheet would run as a
/// formula (= + - @ at its start, and not a number) is prefixed with an
/// apostrophe.
fn cell(s: &str) -> String {
    let formula = s.starts_with(['=', '+', '-', '@', '\t', '\r']) && s.parse::<f64>().is_err();
    let s = if formula {
        format!("'{s}")
    } else {
        s.to_string()
    };
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s
    }
}

fn row(cells: &[String]) -> String {
    let mut line = cells.iter().map(|c| cell(c)).collect::<Vec<_>>().join(",");
    line.push_str("\r\n");
    line
}

fn rows_of(w: &WorkloadEntry, out: &mut String) {
    let classes: Vec<&str> = w.classes.iter().map(|c| c.as_str()).collect();
    let sources: Vec<String> = w
        .class_sources
        .iter()
        .map(|s| format!("{}={}", s.location, s.value))
        .collect();
    let outside_pods = w.placement.pods_outside_mainland();
    let nodes: BTreeSet<String> = w
        .placement
        .pods
        .iter()
        .filter_map(|p| p.node.as_ref())
        .map(|n| format!("{} ({})", n.name, n.region.as_deref().unwrap_or("?")))
        .collect();
    let outside_blocks: Vec<String> = w
        .egress
        .iter()
        .flat_map(|e| &e.external_blocks)
        .filter(|b| !b.mainland)
        .map(|b| format!("{} ({})", b.cidr, b.country.as_deref().unwrap_or("?")))
        .collect();
    let volumes: Vec<String> = w.storage.volumes.iter().map(volume_text).collect();
    for p in &w.policies {
        let mine: Vec<_> = w
            .violations
            .iter()
            .filter(|v| v.policy == p.policy)
            .collect();
        let result = if p.violated {
            "violated"
        } else if mine.iter().any(|v| v.exempted) {
            "exempted"
        } else {
            "satisfied"
        };
        let codes: BTreeSet<String> = mine
            .iter()
            .map(|v| {
                let tag = if v.exempted { " (exempted)" } else { "" };
                format!("{}{tag}", v.code.as_str())
            })
            .collect();
        let first_seen = mine.iter().filter_map(|v| v.first_seen.clone()).min();
        let e = p.exemption.as_ref();
        out.push_str(&row(&[
            w.kind.as_str().to_string(),
            w.namespace.clone(),
            w.name.clone(),
            classes.join(";"),
            sources.join(";"),
            p.policy.clone(),
            p.action.as_str().to_string(),
            result.to_string(),
            w.status.to_string(),
            codes.into_iter().collect::<Vec<_>>().join(";"),
            e.map(|e| e.basis.clone()).unwrap_or_default(),
            e.map(|e| e.reference.clone()).unwrap_or_default(),
            e.map(|e| e.approved_by.clone()).unwrap_or_default(),
            e.map(|e| e.expires.clone()).unwrap_or_default(),
            e.and_then(|e| e.days_left)
                .map(|d| d.to_string())
                .unwrap_or_default(),
            w.placement.guaranteed.to_string(),
            w.placement.pods.len().to_string(),
            outside_pods.to_string(),
            nodes.iter().cloned().collect::<Vec<_>>().join(";"),
            w.egress
                .as_ref()
                .map_or("notChecked", |e| e.posture)
                .to_string(),
            outside_blocks.join(";"),
            first_seen.unwrap_or_default(),
            w.storage.posture.as_str().to_string(),
            volumes.join(";"),
        ]));
    }
}

pub fn render(report: &Report) -> String {
    let mut out = String::from("\u{feff}");
    out.push_str(&row(&HEADER.map(str::to_string)));
    for w in &report.workloads {
        rows_of(w, &mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::cell;

    #[test]
    fn cells_are_quoted_and_formulas_defused() {
        assert_eq!(cell("plain"), "plain");
        assert_eq!(cell("a,b"), "\"a,b\"");
        assert_eq!(cell("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(cell("=HYPERLINK(\"x\")"), "\"'=HYPERLINK(\"\"x\"\")\"");
        assert_eq!(cell("-1"), "-1");
        assert_eq!(cell("-cmd"), "'-cmd");
    }
}
