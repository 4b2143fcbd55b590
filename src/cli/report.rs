//! The `check` report: one schema for JSON (documented in docs/cli.md) and a
//! human rendering grouped by workload.

use std::fmt::Write;

use serde::Serialize;

use super::Origin;
use crate::api::Action;
use crate::engine::{Lang, Verdict};

pub const SCHEMA_VERSION: &str = "residencyguard.io/check-report/v1alpha1";

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CheckReport {
    pub schema_version: &'static str,
    pub inputs: Inputs,
    pub summary: Summary,
    pub results: Vec<Outcome>,
    /// Warnings about policies (e.g. an expiry in the past).
    pub policy_warnings: Vec<String>,
    /// Warnings about the reference data (e.g. address data older than
    /// `--max-address-data-age-days`).
    pub data_warnings: Vec<String>,
}

#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Inputs {
    pub files: usize,
    pub documents: usize,
    pub policies: usize,
    /// Nodes given (null: none, so placement is judged by the guarantee alone).
    pub nodes: Option<usize>,
    pub namespaces: usize,
    /// Objects of kinds the engine does not judge.
    pub skipped: usize,
}

#[derive(Debug, Default, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    pub workloads: usize,
    /// Carry no data-class label: nothing governs them.
    pub unclassified: usize,
    /// Classified, but no policy governs their classes.
    pub ungoverned: usize,
    pub compliant: usize,
    pub denied: usize,
    pub warned: usize,
    pub audited: usize,
    /// Violations covered by an active exemption.
    pub exempted: usize,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Outcome {
    pub file: String,
    pub document: String,
    pub verdict: Verdict,
}

impl Outcome {
    pub fn new(origin: &Origin, verdict: Verdict) -> Self {
        Outcome {
            file: origin.file.clone(),
            document: origin.document.clone(),
            verdict,
        }
    }
}

impl CheckReport {
    pub fn new(results: Vec<Outcome>, policy_warnings: Vec<String>, inputs: Inputs) -> Self {
        let mut s = Summary {
            workloads: results.len(),
            ..Summary::default()
        };
        for r in &results {
            let v = &r.verdict;
            s.exempted += v
                .policies
                .iter()
                .flat_map(|p| &p.violations)
                .filter(|x| x.exempted)
                .count();
            match v.action {
                Some(Action::Deny) => s.denied += 1,
                Some(Action::Warn) => s.warned += 1,
                Some(Action::Audit) => s.audited += 1,
                None if v.classes.is_empty() => s.unclassified += 1,
                None if v.policies.is_empty() => s.ungoverned += 1,
                None => s.compliant += 1,
            }
        }
        CheckReport {
            schema_version: SCHEMA_VERSION,
            inputs,
            summary: s,
            results,
            policy_warnings,
            data_warnings: Vec::new(),
        }
    }
}

fn status_label(v: &Verdict, lang: Lang) -> &'static str {
    match (v.action, lang) {
        (Some(Action::Deny), Lang::En) => "DENY ",
        (Some(Action::Warn), Lang::En) => "WARN ",
        (Some(Action::Audit), Lang::En) => "AUDIT",
        (None, Lang::En) => "PASS ",
        (Some(Action::Deny), Lang::ZhCn) => "拒绝",
        (Some(Action::Warn), Lang::ZhCn) => "警告",
        (Some(Action::Audit), Lang::ZhCn) => "审计",
        (None, Lang::ZhCn) => "通过",
    }
}

fn indent(text: &str, prefix: &str) -> String {
    text.lines()
        .map(|l| format!("{prefix}{l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The human report. Unclassified workloads are counted, not listed.
pub fn render_text(report: &CheckReport, lang: Lang, quiet: bool) -> String {
    let mut out = String::new();
    let zh = lang == Lang::ZhCn;
    for r in &report.results {
        let v = &r.verdict;
        if v.classes.is_empty() || (quiet && v.compliant() && v.notices.is_empty()) {
            continue;
        }
        let classes: Vec<&str> = v.classes.iter().map(|c| c.as_str()).collect();
        let _ = writeln!(
            out,
            "{} {} {}/{}  [{}]  ({}#{})",
            status_label(v, lang),
            v.workload.kind,
            v.workload.namespace,
            v.workload.name,
            classes.join(", "),
            r.file,
            r.document
        );
        if v.policies.is_empty() {
            let _ = writeln!(
                out,
                "      {}",
                if zh {
                    "没有策略管辖这些数据类别"
                } else {
                    "no policy governs these classes"
                }
            );
        }
        for p in &v.policies {
            let exemption = match &p.exemption {
                Some(e) if e.active && zh => format!(
                    " — 已豁免：{} {}，至 {}",
                    e.basis.as_str(),
                    e.reference,
                    e.expires
                ),
                Some(e) if e.active => format!(
                    " — exempted: {} {}, until {}",
                    e.basis.as_str(),
                    e.reference,
                    e.expires
                ),
                _ => String::new(),
            };
            let verdict = match (p.violated(), zh) {
                (true, false) => "violated",
                (false, false) => "satisfied",
                (true, true) => "违反",
                (false, true) => "符合",
            };
            let _ = writeln!(
                out,
                "      policy {} ({}): {verdict}{exemption}",
                p.policy,
                p.action.as_str()
            );
            for x in &p.violations {
                let tag = if x.exempted { " (exempted)" } else { "" };
                let _ = writeln!(out, "        [{}]{tag} {}", x.code.as_str(), x.field);
                let _ = writeln!(out, "{}", indent(&x.message.get(lang), "          "));
            }
        }
        for n in &v.notices {
            let _ = writeln!(out, "      note [{}]: {}", n.code, n.message.get(lang));
        }
    }
    for w in report.policy_warnings.iter().chain(&report.data_warnings) {
        let _ = writeln!(out, "warning: {w}");
    }
    let s = &report.summary;
    let nodes = match report.inputs.nodes {
        Some(n) if zh => format!("{n} 个节点"),
        Some(n) => format!("{n} nodes"),
        None if zh => "无节点清单（仅依据 Pod 自身约束判断）".to_string(),
        None => "no nodes (placement judged by the pods' own constraints)".to_string(),
    };
    let (workloads, policies) = (s.workloads, report.inputs.policies);
    let (denied, warned, audited, compliant) = (s.denied, s.warned, s.audited, s.compliant);
    let (ungoverned, unclassified, exempted) = (s.ungoverned, s.unclassified, s.exempted);
    let _ = if zh {
        writeln!(
            out,
            "\n共 {workloads} 个工作负载，{policies} 条策略，{nodes}：拒绝 {denied}，警告 {warned}，审计 {audited}，合规 {compliant}，无策略管辖 {ungoverned}，未分类 {unclassified}，豁免的违规 {exempted}。"
        )
    } else {
        writeln!(
            out,
            "\n{workloads} workloads, {policies} policies, {nodes}: {denied} denied, {warned} warned, {audited} audited, {compliant} compliant, {ungoverned} ungoverned, {unclassified} unclassified; {exempted} exempted violations."
        )
    };
    out
}
