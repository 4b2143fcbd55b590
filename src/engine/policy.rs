//! ResidencyPolicy → CompiledPolicy: selectors compiled, CIDRs parsed, dates
//! resolved. What the CRD schema cannot express is checked here; the CLI and
//! the webhook report the same problems in the same words.

use std::collections::BTreeSet;

use ipnet::IpNet;
use jiff::Timestamp;
use jiff::civil::Date;
use jiff::tz::{Offset, TimeZone};

use super::catalogue::{Catalogue, RegionLookup};
use super::ipset::IpSet;
use super::nodes::{LEGACY_REGION_LABEL, REGION_LABEL};
use super::selector::{LabelSelectorMatcher, NodeSelectorTerms, Op, Space};
use super::shared::Shared;
use crate::api::{Action, DataClass, EgressMode, LegalBasis, ResidencyPolicy};

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
    pub allowed_cidrs: IpSet,
    pub action: Action,
    pub exemptions: Vec<CompiledExemption>,
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
    pub message: String,
}

#[derive(Clone, Debug, Default)]
pub struct PolicyReport {
    pub errors: Vec<PolicyProblem>,
    pub warnings: Vec<PolicyProblem>,
}

pub fn compile(
    policy: &ResidencyPolicy,
    catalogue: &Catalogue,
    now: Timestamp,
) -> Result<(CompiledPolicy, Vec<PolicyProblem>), Vec<PolicyProblem>> {
    let mut report = PolicyReport::default();
    let spec = &policy.spec;
    let problem = |field: &str, message: String| PolicyProblem {
        field: field.to_string(),
        message,
    };

    if spec.data_classes.is_empty() {
        report.errors.push(problem(
            "spec.dataClasses",
            format!(
                "lists no data class; name at least one of: {}",
                DataClass::vocabulary()
            ),
        ));
    }

    let namespace_selector = match &spec.namespace_selector {
        None => None,
        Some(sel) => match LabelSelectorMatcher::compile(sel) {
            Ok(m) => Some(m),
            Err(e) => {
                report.errors.push(problem("spec.namespaceSelector", e));
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

    let mut nets: Vec<IpNet> = Vec::new();
    for (i, text) in spec.egress.allowed_cidrs.iter().enumerate() {
        match parse_net(text) {
            Some(net) => nets.push(net),
            None => report.errors.push(problem(
                &format!("spec.egress.allowedCIDRs[{i}]"),
                format!(
                    "{text:?} is not a CIDR (like 203.0.113.0/24 or 240e::/20) or an IP address"
                ),
            )),
        }
    }

    let mut exemptions = Vec::new();
    for (index, ex) in spec.exemptions.iter().enumerate() {
        let field = |f: &str| format!("spec.exemptions[{index}].{f}");
        let selector = match LabelSelectorMatcher::compile(&ex.selector) {
            Ok(m) if m.is_empty() => {
                report.errors.push(problem(
                    &field("selector"),
                    "selects every workload; an exemption must name specific workloads with matchLabels or matchExpressions".into(),
                ));
                None
            }
            Ok(m) => Some(m),
            Err(e) => {
                report.errors.push(problem(&field("selector"), e));
                None
            }
        };
        if ex.reference.trim().is_empty() {
            report.errors.push(problem(
                &field("reference"),
                "is empty; give the filing or approval reference".into(),
            ));
        }
        if ex.approved_by.trim().is_empty() {
            report.errors.push(problem(
                &field("approvedBy"),
                "is empty; name who approved the transfer".into(),
            ));
        }
        let expiry = match ex.expires.parse::<Date>() {
            Ok(date) if ex.expires.len() == 10 => lapse_instant(date).map(|t| (date, t)),
            _ => None,
        };
        match (selector, expiry) {
            (Some(selector), Some((expires, lapses_at))) => {
                if now >= lapses_at {
                    report.warnings.push(problem(
                        &field("expires"),
                        format!(
                            "{} is in the past: this exemption no longer applies",
                            ex.expires
                        ),
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
            (_, None) => report.errors.push(problem(
                &field("expires"),
                format!("{:?} is not a date in the form YYYY-MM-DD", ex.expires),
            )),
            (None, Some(_)) => {}
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
            allowed_cidrs: IpSet::from_nets(nets),
            action: spec.action,
            exemptions,
        },
        report.warnings,
    ))
}

/// The end of `date` in China Standard Time.
fn lapse_instant(date: Date) -> Option<Timestamp> {
    let next = date.tomorrow().ok()?;
    let tz = TimeZone::fixed(Offset::constant(CHINA_STANDARD_TIME_HOURS));
    next.to_zoned(tz).ok().map(|z| z.timestamp())
}

/// A CIDR, or a bare address meaning a single host.
pub fn parse_net(text: &str) -> Option<IpNet> {
    let text = text.trim();
    text.parse::<IpNet>()
        .map(|n| n.trunc())
        .or_else(|_| text.parse::<std::net::IpAddr>().map(IpNet::from))
        .ok()
}

/// `allowedNodes` vouches for nodes; naming a region that is known to be
/// outside mainland China there is a contradiction, and an unknown region
/// deserves a warning.
fn check_allowed_nodes(
    terms: &NodeSelectorTerms,
    catalogue: &Catalogue,
    report: &mut PolicyReport,
) {
    for (t, term) in terms.terms.iter().enumerate() {
        let field = format!("spec.placement.allowedNodes.nodeSelectorTerms[{t}]");
        if let Some(why) = &term.invalid {
            report.errors.push(PolicyProblem {
                field: field.clone(),
                message: format!("{why}; this term would match no node"),
            });
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
                    RegionLookup::Known(e) if !e.jurisdiction.is_mainland() => report.errors.push(PolicyProblem {
                        field: field.clone(),
                        message: format!(
                            "names region {v}, which is in {} ({}); nodes there never count as mainland China",
                            e.jurisdiction.describe_en(),
                            e.location.as_deref().unwrap_or(&e.country)
                        ),
                    }),
                    RegionLookup::Unknown => report.warnings.push(PolicyProblem {
                        field: field.clone(),
                        message: format!(
                            "names region {v}, which is not in the jurisdiction catalogue; nodes labelled with it count as mainland only through this policy (consider adding it to the catalogue)"
                        ),
                    }),
                    _ => {}
                }
            }
        }
    }
}
