//! The CSV: one row per governed workload and governing policy, for
//! spreadsheets (RFC 4180; UTF-8 with a byte-order mark so spreadsheet
//! programs read the Chinese text right).

use std::collections::BTreeSet;

use super::model::{ExemptionInForce, Report, VolumeEntry, WorkloadEntry};

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
/// apostrophe. Written straight into `out`: a report has a million cells.
fn push_cell(out: &mut String, s: &str) {
    let formula = s.starts_with(['=', '+', '-', '@', '\t', '\r']) && s.parse::<f64>().is_err();
    let apostrophe = if formula { "'" } else { "" };
    if s.contains([',', '"', '\n', '\r']) {
        out.push('"');
        out.push_str(apostrophe);
        for part in s.split_inclusive('"') {
            out.push_str(part);
            if part.ends_with('"') {
                out.push('"');
            }
        }
        out.push('"');
    } else {
        out.push_str(apostrophe);
        out.push_str(s);
    }
}

fn push_row(out: &mut String, cells: &[&str]) {
    for (i, c) in cells.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_cell(out, c);
    }
    out.push_str("\r\n");
}

fn rows_of(w: &WorkloadEntry, out: &mut String) {
    // What every row of the workload shares, written once.
    let classes = w
        .classes
        .iter()
        .map(|c| c.as_str())
        .collect::<Vec<_>>()
        .join(";");
    let sources = w
        .class_sources
        .iter()
        .map(|s| format!("{}={}", s.location, s.value))
        .collect::<Vec<_>>()
        .join(";");
    let outside_pods = w.placement.pods_outside_mainland().to_string();
    let pods = w.placement.pods.len().to_string();
    let nodes = w
        .placement
        .pods
        .iter()
        .filter_map(|p| p.node.as_ref())
        .map(|n| format!("{} ({})", n.name, n.region.as_deref().unwrap_or("?")))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect::<Vec<_>>()
        .join(";");
    let outside_blocks = w
        .egress
        .iter()
        .flat_map(|e| &e.external_blocks)
        .filter(|b| !b.mainland)
        .map(|b| format!("{} ({})", b.cidr, b.country.as_deref().unwrap_or("?")))
        .collect::<Vec<_>>()
        .join(";");
    let volumes = w
        .storage
        .volumes
        .iter()
        .map(volume_text)
        .collect::<Vec<_>>()
        .join(";");
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
        let first_seen = mine.iter().filter_map(|v| v.first_seen.as_deref()).min();
        let e = p.exemption.as_ref();
        let codes = codes.into_iter().collect::<Vec<_>>().join(";");
        let days_left = e
            .and_then(|e| e.days_left)
            .map(|d| d.to_string())
            .unwrap_or_default();
        let exemption = |field: fn(&ExemptionInForce) -> &str| e.map(field).unwrap_or_default();
        push_row(
            out,
            &[
                w.kind.as_str(),
                &w.namespace,
                &w.name,
                &classes,
                &sources,
                &p.policy,
                p.action.as_str(),
                result,
                w.status,
                &codes,
                exemption(|e| &e.basis),
                exemption(|e| &e.reference),
                exemption(|e| &e.approved_by),
                exemption(|e| &e.expires),
                &days_left,
                if w.placement.guaranteed {
                    "true"
                } else {
                    "false"
                },
                &pods,
                &outside_pods,
                &nodes,
                w.egress.as_ref().map_or("notChecked", |e| e.posture),
                &outside_blocks,
                first_seen.unwrap_or_default(),
                w.storage.posture.as_str(),
                &volumes,
            ],
        );
    }
}

pub fn render(report: &Report) -> String {
    let mut out = String::from("\u{feff}");
    push_row(&mut out, &HEADER);
    for w in &report.workloads {
        rows_of(w, &mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    fn cell(s: &str) -> String {
        let mut out = String::new();
        super::push_cell(&mut out, s);
        out
    }

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
