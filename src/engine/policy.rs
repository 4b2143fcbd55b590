//! ResidencyPolicy → CompiledPolicy: selectors compiled, CIDRs parsed, dates
//! resolved. What the CRD schema cannot express is checked here; the CLI and
//! the webhook report the same problems in the same words.

use std::collections::BTreeSet;

use ipnet::IpNet;
use jiff::Timestamp;
use jiff::civil::Date;
use jiff::tz::{Offset, TimeZone};

use super::catalogue::{Catalogue, RegionLookup};
use super::ipset::{IpSet, parse_net};
use super::nodes::{LEGACY_REGION_LABEL, REGION_LABEL};
use super::selector::{
    LabelSelectorMatcher, NodeSelectorTerms, Op, SelectorProblem, Space, label_key_problem,
};
use super::shared::Shared;
use super::text::Text;
use crate::api::{Action, DataClass, EgressMode, LegalBasis, ResidencyPolicy, StorageMode};

/// Exemption dates are read in China Standard Time: approvals are issued by
/// Chinese authorities, and "until 2027-06-30" means the end of that day there.
const CHINA_STANDARD_TIME_HOURS: i8 = 8;

#[derive(Clone, Debug)]
pub struct CompiledPolicy {
    /// Shared by every verdict that names the policy (one allocation, not
    /// one per governed workload).
    pub name: Shared<str>,
    pub generation: Option<i64>,
    pub classes: BTreeSet<DataClass>,
    /// `classes` as a bit set, so finding the governing policies among
    /// hundreds is one AND each.
    pub(crate) class_mask: u32,
    pub namespace_selector: Option<LabelSelectorMatcher>,
    pub allowed_nodes: Option<NodeSelectorTerms>,
    pub egress_mode: EgressMode,
    pub storage_mode: StorageMode,
    pub allowed_cidrs: IpSet,
    /// `spec.egress.allowedDomains`, lower case, without a trailing dot.
    pub allowed_domains: Vec<String>,
    pub action: Action,
    pub exemptions: Vec<CompiledExemption>,
}

/// A domain as compared: lower case, no trailing dot.
pub(crate) fn normalize_domain(text: &str) -> String {
    text.trim().trim_end_matches('.').to_ascii_lowercase()
}

/// `allowed` (a list of suffixes) covers the domain or pattern `name`
/// (`*.example.cn` is covered by `example.cn`; `*` by nothing).
pub(crate) fn domain_allowed(name: &str, allowed: &[String]) -> bool {
    let base = name.strip_prefix("*.").unwrap_or(name);
    if base.contains('*') || base.is_empty() {
        return false;
    }
    allowed.iter().any(|a| {
        base == a
            || base
                .strip_suffix(a.as_str())
                .is_some_and(|rest| rest.ends_with('.'))
    })
}

/// A set of data classes as bits (the vocabulary is closed and small).
pub(crate) fn class_mask(classes: impl IntoIterator<Item = DataClass>) -> u32 {
    classes
        .into_iter()
        .fold(0, |mask, c| mask | 1 << (c as u32))
}

#[derive(Clone, Debug)]
pub struct CompiledExemption {
    /// Position in `spec.exemptions`, for messages.
    pub index: usize,
    pub selector: LabelSelectorMatcher,
    pub namespaces: Vec<String>,
    pub basis: LegalBasis,
    pub reference: String,
    pub approved_by: String,
    pub expires: Date,
    /// The first instant the exemption no longer applies.
    pub lapses_at: Timestamp,
}

impl CompiledExemption {
    pub fn active_at(&self, now: Timestamp) -> bool {
        now < self.lapses_at
    }
}

/// A problem that makes a policy unusable (an error) or suspicious (a warning).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct PolicyProblem {
    /// The field at fault, e.g. `spec.exemptions[0].expires`.
    pub field: String,
    /// What is wrong and what to do, in both languages (the field is not
    /// repeated in it).
    pub message: Text,
}

impl PolicyProblem {
    fn new(field: impl Into<String>, en: impl Into<String>, zh: impl Into<String>) -> Self {
        PolicyProblem {
            field: field.into(),
            message: Text {
                en: en.into(),
                zh: zh.into(),
            },
        }
    }

    /// A data class in `spec.dataClasses[index]` that is not in the
    /// vocabulary (the CRD's enum refuses it in a cluster; `check` reads
    /// manifests no API server has seen).
    pub fn unknown_class(index: usize, value: &str) -> Self {
        let vocabulary = DataClass::vocabulary();
        PolicyProblem::new(
            format!("spec.dataClasses[{index}]"),
            format!("{value:?} is not a data class; valid classes are: {vocabulary}"),
            format!("{value:?} 不是有效的数据类别；有效的类别为：{vocabulary}"),
        )
    }
}

/// Selector problems under `prefix` (e.g. `spec.namespaceSelector`).
fn selector_problems(prefix: &str, problems: Vec<SelectorProblem>) -> Vec<PolicyProblem> {
    problems
        .into_iter()
        .map(|p| PolicyProblem {
            field: format!("{prefix}.{}", p.field),
            message: p.message,
        })
        .collect()
}

/// A ResidencyPolicy that does not compile (a catalogue update placed one
/// of its `allowedNodes` regions abroad; it was written while the webhook
/// was down; ...). It is not dropped: a guardrail that silently stops
/// guarding is worse than a strict one.
#[derive(Clone, Debug)]
pub struct RejectedPolicy {
    pub name: String,
    pub uid: Option<String>,
    pub generation: Option<i64>,
    pub problems: Vec<PolicyProblem>,
    pub enforced: Enforcement,
}

/// What is enforced in place of a policy that does not compile.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Enforcement {
    /// The last version that compiled (its generation), as it was.
    LastValid { generation: Option<i64> },
    /// No version compiled while the operator watched: its strictest
    /// reading (see [`strictest_reading`]).
    Strictest,
}

impl RejectedPolicy {
    /// One line for a status, an Event or a log, in both languages.
    pub fn summary(&self) -> Text {
        let problems_en: Vec<String> = self
            .problems
            .iter()
            .map(|p| format!("{}: {}", p.field, p.message.en))
            .collect();
        let problems_zh: Vec<String> = self
            .problems
            .iter()
            .map(|p| format!("{}：{}", p.field, p.message.zh))
            .collect();
        let (en, zh) = match &self.enforced {
            Enforcement::LastValid { generation } => {
                let g = generation.map_or_else(|| "?".to_string(), |g| g.to_string());
                (
                    format!("still enforcing its last valid version (generation {g}) until it is fixed"),
                    format!("在修正之前，继续执行其最后一个有效版本（generation {g}）"),
                )
            }
            Enforcement::Strictest => (
                "enforcing its strictest reading until it is fixed: its data classes, namespaces and action, mainland-China placement without allowedNodes, no allowedCIDRs and no exemptions".to_string(),
                "在修正之前，按最严格的方式执行：保留其数据类别、命名空间与动作，要求中国大陆节点（不含 allowedNodes），不含 allowedCIDRs，也不含豁免".to_string(),
            ),
        };
        Text {
            en: format!(
                "ResidencyPolicy {} is invalid ({}); {en}",
                self.name,
                problems_en.join("; ")
            ),
            zh: format!(
                "ResidencyPolicy {} 无效（{}）；{zh}",
                self.name,
                problems_zh.join("；")
            ),
        }
    }
}

/// A policy that does not compile, read as strictly as it can be: what it
/// governs (its classes, its namespaceSelector when that is valid, else
/// every namespace) and its action and egress mode are kept; everything
/// that loosens it (`allowedNodes`, `allowedCIDRs`, exemptions, storage
/// `Unchecked`) is dropped.
pub(crate) fn strictest_reading(policy: &ResidencyPolicy) -> CompiledPolicy {
    let spec = &policy.spec;
    CompiledPolicy {
        name: policy.metadata.name.as_deref().unwrap_or_default().into(),
        generation: policy.metadata.generation,
        classes: spec.data_classes.iter().copied().collect(),
        class_mask: class_mask(spec.data_classes.iter().copied()),
        namespace_selector: spec
            .namespace_selector
            .as_ref()
            .and_then(|s| LabelSelectorMatcher::compile(s).ok()),
        allowed_nodes: None,
        egress_mode: spec.egress.mode,
        // Unchecked loosens: the strictest reading checks storage.
        storage_mode: StorageMode::MainlandOnly,
        allowed_cidrs: IpSet::default(),
        allowed_domains: Vec::new(),
        action: spec.action,
        exemptions: Vec::new(),
    }
}

/// What compiling one policy found wrong: errors (it is rejected) and
/// warnings (it is enforced as written).
#[derive(Clone, Debug, Default)]
struct Problems {
    errors: Vec<PolicyProblem>,
    warnings: Vec<PolicyProblem>,
}

pub fn compile(
    policy: &ResidencyPolicy,
    catalogue: &Catalogue,
    now: Timestamp,
) -> Result<(CompiledPolicy, Vec<PolicyProblem>), Vec<PolicyProblem>> {
    let mut report = Problems::default();
    let spec = &policy.spec;

    if spec.data_classes.is_empty() {
        let vocabulary = DataClass::vocabulary();
        report.errors.push(PolicyProblem::new(
            "spec.dataClasses",
            format!("lists no data class; name at least one of: {vocabulary}"),
            format!("未列出任何数据类别；请至少填写以下之一：{vocabulary}"),
        ));
    }

    let namespace_selector = match &spec.namespace_selector {
        None => None,
        Some(sel) => match LabelSelectorMatcher::compile(sel) {
            Ok(m) => Some(m),
            Err(problems) => {
                report
                    .errors
                    .extend(selector_problems("spec.namespaceSelector", problems));
                None
            }
        },
    };

    let allowed_nodes = spec
        .placement
        .allowed_nodes
        .as_ref()
        .map(NodeSelectorTerms::from_k8s);
    if let Some(terms) = &allowed_nodes {
        check_allowed_nodes(terms, catalogue, &mut report);
    }
    if let Some(selector) = &spec.placement.allowed_nodes {
        check_allowed_node_keys(selector, &mut report);
    }

    let mut nets: Vec<IpNet> = Vec::new();
    for (i, text) in spec.egress.allowed_cidrs.iter().enumerate() {
        match parse_net(text.trim()) {
            Ok(net) => nets.push(net),
            Err(_) => report.errors.push(PolicyProblem::new(
                format!("spec.egress.allowedCIDRs[{i}]"),
                format!(
                    "{text:?} is not a CIDR (like 203.0.113.0/24 or 240e::/20) or an IP address"
                ),
                format!("{text:?} 不是 CIDR（如 203.0.113.0/24 或 240e::/20），也不是 IP 地址"),
            )),
        }
    }

    for (i, d) in spec.egress.allowed_domains.iter().enumerate() {
        let name = normalize_domain(&d.domain);
        if name.is_empty() || name.contains('*') || name.contains(char::is_whitespace) {
            report.errors.push(PolicyProblem::new(
                format!("spec.egress.allowedDomains[{i}].domain"),
                format!(
                    "{:?} is not a domain name (write example.cn: it covers every name under it)",
                    d.domain
                ),
                format!(
                    "{:?} 不是域名（请写 example.cn，它涵盖其下所有名称）",
                    d.domain
                ),
            ));
        }
        if d.source.trim().is_empty() {
            report.errors.push(PolicyProblem::new(
                format!("spec.egress.allowedDomains[{i}].source"),
                "say where the approval comes from (an ICP filing, a contract, a ticket)",
                "请写明批准依据（ICP 备案、合同或工单）",
            ));
        }
    }

    let mut exemptions = Vec::new();
    for (index, ex) in spec.exemptions.iter().enumerate() {
        let field = |f: &str| format!("spec.exemptions[{index}].{f}");
        let selector = match LabelSelectorMatcher::compile(&ex.selector) {
            Ok(m) if m.is_empty() => {
                report.errors.push(PolicyProblem::new(
                    field("selector"),
                    "selects every workload; an exemption must name specific workloads with matchLabels or matchExpressions",
                    "选中了所有工作负载；豁免必须用 matchLabels 或 matchExpressions 指明具体的工作负载",
                ));
                None
            }
            Ok(m) => Some(m),
            Err(problems) => {
                report
                    .errors
                    .extend(selector_problems(&field("selector"), problems));
                None
            }
        };
        if ex.reference.trim().is_empty() {
            report.errors.push(PolicyProblem::new(
                field("reference"),
                "is empty; give the filing or approval reference",
                "为空；请填写备案或批准文号",
            ));
        }
        if ex.approved_by.trim().is_empty() {
            report.errors.push(PolicyProblem::new(
                field("approvedBy"),
                "is empty; name who approved the transfer",
                "为空；请填写批准该数据出境的人",
            ));
        }
        let expiry = parse_expiry(&ex.expires);
        if let Err(why) = &expiry {
            report.errors.push(PolicyProblem {
                field: field("expires"),
                message: why.clone(),
            });
        }
        // An exemption is bound to the namespaces it names: its selector's
        // labels are written by the workloads' own authors, so without that
        // bound any workload anywhere could copy them. The CRD requires
        // `namespaces`; one stored before that never applies.
        let bound = !ex.namespaces.is_empty();
        if !bound {
            report.warnings.push(PolicyProblem::new(
                field("namespaces"),
                "is empty, so this exemption does not apply anywhere: an exemption must name the namespaces it covers (its selector's labels can be copied by any workload, so the namespace is what binds it)",
                "为空，因此该豁免在任何地方都不适用：豁免必须列出其适用的命名空间（选择器中的标签任何工作负载都能复制，命名空间才是约束）",
            ));
        }
        if let (Some(selector), Ok((expires, lapses_at)), true) = (selector, expiry, bound) {
            if now >= lapses_at {
                report.warnings.push(PolicyProblem::new(
                    field("expires"),
                    format!(
                        "{} is in the past: this exemption no longer applies",
                        ex.expires
                    ),
                    format!("{} 已过去：该豁免不再适用", ex.expires),
                ));
            }
            exemptions.push(CompiledExemption {
                index,
                selector,
                namespaces: ex.namespaces.clone(),
                basis: ex.basis,
                reference: ex.reference.clone(),
                approved_by: ex.approved_by.clone(),
                expires,
                lapses_at,
            });
        }
    }

    if !report.errors.is_empty() {
        return Err(report.errors);
    }
    Ok((
        CompiledPolicy {
            name: policy.metadata.name.as_deref().unwrap_or_default().into(),
            generation: policy.metadata.generation,
            classes: spec.data_classes.iter().copied().collect(),
            class_mask: class_mask(spec.data_classes.iter().copied()),
            namespace_selector,
            allowed_nodes,
            egress_mode: spec.egress.mode,
            storage_mode: spec.storage.mode,
            allowed_cidrs: IpSet::from_nets(nets),
            allowed_domains: spec
                .egress
                .allowed_domains
                .iter()
                .map(|d| normalize_domain(&d.domain))
                .collect(),
            action: spec.action,
            exemptions,
        },
        report.warnings,
    ))
}

/// An exemption's `expires` (`YYYY-MM-DD`): the date and the instant it
/// lapses, or why it is not a date: not in that form, or in the form but
/// impossible (`2026-02-30`).
fn parse_expiry(text: &str) -> Result<(Date, Timestamp), Text> {
    let b = text.as_bytes();
    let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
    let shaped = b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && digits(0..4)
        && digits(5..7)
        && digits(8..10);
    if !shaped {
        return Err(Text {
            en: format!("{text:?} is not a date in the form YYYY-MM-DD (e.g. 2027-06-30)"),
            zh: format!("{text:?} 不是 YYYY-MM-DD 格式的日期（例如 2027-06-30）"),
        });
    }
    // The shape is checked: these are plain digit runs.
    let num = |r: std::ops::Range<usize>| text[r].parse::<i16>().unwrap_or(0);
    let (year, month, day) = (num(0..4), num(5..7), num(8..10));
    let impossible = |en: String, zh: String| Text {
        en: format!("{text:?} is an impossible date: {en}"),
        zh: format!("{text:?} 是不存在的日期：{zh}"),
    };
    if !(1..=12).contains(&month) {
        return Err(impossible(
            format!("there is no month {month}"),
            format!("不存在 {month} 月"),
        ));
    }
    let first = Date::new(year, month as i8, 1).map_err(|_| {
        impossible(
            format!("year {year} is out of range"),
            format!("年份 {year} 超出范围"),
        )
    })?;
    let days = first.days_in_month();
    let date = Date::new(year, month as i8, day as i8).map_err(|_| {
        impossible(
            format!("{} {year} has {days} days", month_name(month)),
            format!("{year} 年 {month} 月只有 {days} 天"),
        )
    })?;
    let lapses = lapse_instant(date).ok_or_else(|| {
        impossible(
            "it is past the last date that can be represented".into(),
            "超出可表示的最后日期".into(),
        )
    })?;
    Ok((date, lapses))
}

fn month_name(month: i16) -> &'static str {
    const NAMES: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    usize::try_from(month - 1)
        .ok()
        .and_then(|i| NAMES.get(i))
        .copied()
        .unwrap_or("that month")
}

/// The end of `date` in China Standard Time.
fn lapse_instant(date: Date) -> Option<Timestamp> {
    let next = date.tomorrow().ok()?;
    let tz = TimeZone::fixed(Offset::constant(CHINA_STANDARD_TIME_HOURS));
    next.to_zoned(tz).ok().map(|z| z.timestamp())
}

/// `allowedNodes` vouches for nodes; naming a region that is known to be
/// outside mainland China there is a contradiction, and an unknown region
/// deserves a warning.
fn check_allowed_nodes(terms: &NodeSelectorTerms, catalogue: &Catalogue, report: &mut Problems) {
    for (t, term) in terms.terms.iter().enumerate() {
        let field = format!("spec.placement.allowedNodes.nodeSelectorTerms[{t}]");
        if let Some(why) = &term.invalid {
            report.errors.push(PolicyProblem::new(
                field.clone(),
                format!("{why}; this term would match no node"),
                format!("{why}；该条件不会匹配任何节点"),
            ));
        }
        for r in &term.requirements {
            let is_region =
                r.space == Space::Label && (r.key == REGION_LABEL || r.key == LEGACY_REGION_LABEL);
            let Op::In(values) = &r.op else { continue };
            if !is_region {
                continue;
            }
            for v in values {
                match catalogue.lookup(None, v) {
                    RegionLookup::Known(e) if !e.jurisdiction.is_mainland() => {
                        let (en_where, zh_where) = describe_place(e);
                        report.errors.push(PolicyProblem::new(
                            field.clone(),
                            format!(
                                "names region {v}, which is {en_where}; nodes there never count as mainland China"
                            ),
                            format!("列出了地域 {v}，该地域{zh_where}；那里的节点永远不算中国大陆"),
                        ));
                    }
                    RegionLookup::Unknown => report.warnings.push(PolicyProblem::new(
                        field.clone(),
                        format!(
                            "names region {v}, which is not in the jurisdiction catalogue; nodes labelled with it count as mainland only through this policy (consider adding it to the catalogue)"
                        ),
                        format!(
                            "列出了地域 {v}，该地域不在管辖目录中；带此标签的节点只有通过本策略才算中国大陆（建议将其加入管辖目录）"
                        ),
                    )),
                    _ => {}
                }
            }
        }
    }
}

/// Label keys in `allowedNodes` the API server would refuse in a node
/// selector (the CRD schema does not check them).
fn check_allowed_node_keys(
    selector: &k8s_openapi::api::core::v1::NodeSelector,
    report: &mut Problems,
) {
    for (t, term) in selector.node_selector_terms.iter().enumerate() {
        for (j, r) in term.match_expressions.iter().flatten().enumerate() {
            if let Some(why) = label_key_problem(&r.key) {
                report.errors.push(PolicyProblem {
                    field: format!(
                        "spec.placement.allowedNodes.nodeSelectorTerms[{t}].matchExpressions[{j}].key"
                    ),
                    message: why,
                });
            }
        }
    }
}

/// "in Hong Kong", "outside China (Singapore)": where a catalogue region
/// is, without saying the same place twice.
fn describe_place(e: &super::catalogue::RegionEntry) -> (String, String) {
    let j = e.jurisdiction;
    let detail = e
        .location
        .as_deref()
        .filter(|l| !l.eq_ignore_ascii_case(j.describe_en()))
        .or_else(|| (j == super::catalogue::Jurisdiction::Foreign).then_some(e.country.as_str()));
    let en = match j {
        super::catalogue::Jurisdiction::Foreign => j.describe_en().to_string(),
        _ => format!("in {}", j.describe_en()),
    };
    let zh = format!("位于{}", j.describe_zh());
    match detail {
        Some(d) => (format!("{en} ({d})"), format!("{zh}（{d}）")),
        None => (en, zh),
    }
}
