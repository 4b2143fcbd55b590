//! What the engine returns: plain data, serialisable, with bilingual messages.

use serde::Serialize;

use super::nodes::{NodeStanding, Untrusted};
use super::shared::Shared;
use crate::api::{Action, DataClass, LegalBasis};

/// Language of the messages a front end prints.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub enum Lang {
    #[default]
    En,
    ZhCn,
}

impl Lang {
    /// `en`, `zh`, `zh-CN`, `zh_CN.UTF-8` ... anything else is English.
    pub fn parse(s: &str) -> Option<Lang> {
        let s = s.to_ascii_lowercase();
        if s.starts_with("zh") {
            Some(Lang::ZhCn)
        } else if s.starts_with("en") || s == "c" || s == "posix" {
            Some(Lang::En)
        } else {
            None
        }
    }
}

/// One message in both languages.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Text {
    pub en: String,
    #[serde(rename = "zh-CN")]
    pub zh: String,
}

impl Text {
    pub fn get(&self, lang: Lang) -> &str {
        match lang {
            Lang::En => &self.en,
            Lang::ZhCn => &self.zh,
        }
    }

    /// The message in `lang` alone, without spare capacity.
    pub fn into_lang(self, lang: Lang) -> Box<str> {
        match lang {
            Lang::En => self.en.into_boxed_str(),
            Lang::ZhCn => self.zh.into_boxed_str(),
        }
    }
}

/// The English text: for logs and other English-only sinks. Pick a
/// language with `get` wherever a person reads the message.
impl std::fmt::Display for Text {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.en)
    }
}

/// What joins a problem and its fix when they are shown as one text.
const FIX_EN: &str = " Fix: ";
const FIX_ZH: &str = "修复：";

/// A violation's message: the problem and its fix, kept apart. Shown as one
/// text, "<problem> Fix: <fix>" ("<problem>修复：<fix>"), by the CLI, in
/// denials, Events and reports (serialised so, as `{en, zh-CN}`); the
/// webhook's warnings put the fix on its own line.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Message {
    /// What is wrong and why it matters, ending in a full stop.
    pub problem: Text,
    /// What to change.
    pub fix: Text,
}

impl Message {
    /// The problem and the fix as one text in `lang`.
    pub fn get(&self, lang: Lang) -> String {
        let (problem, fix) = (self.problem.get(lang), self.fix.get(lang));
        if fix.is_empty() {
            return problem.to_string();
        }
        let joint = match lang {
            Lang::En => FIX_EN,
            Lang::ZhCn => FIX_ZH,
        };
        let mut out = String::with_capacity(problem.len() + joint.len() + fix.len());
        out.push_str(problem);
        out.push_str(joint);
        out.push_str(fix);
        out
    }

    /// The problem and the fix as one text, in both languages.
    pub fn text(&self) -> Text {
        Text {
            en: self.get(Lang::En),
            zh: self.get(Lang::ZhCn),
        }
    }

    /// The problem alone, in `lang`.
    pub fn problem(&self, lang: Lang) -> &str {
        self.problem.get(lang)
    }

    /// "Fix: <fix>" ("修复：<fix>") in `lang`; empty when there is no fix.
    pub fn fix_line(&self, lang: Lang) -> String {
        let fix = self.fix.get(lang);
        match lang {
            _ if fix.is_empty() => String::new(),
            Lang::En => format!("{}{fix}", FIX_EN.trim_start()),
            Lang::ZhCn => format!("{FIX_ZH}{fix}"),
        }
    }
}

/// As one text per language, exactly as `Text` serialises.
impl Serialize for Message {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.text().serialize(serializer)
    }
}

/// Stable violation codes: part of the contract (JSON output, reports, metrics).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum Code {
    /// The pod's own constraints do not keep it on mainland-China nodes.
    PlacementNotGuaranteed,
    /// The constraints look mainland, but a node they match today is not.
    NodeOutsideMainland,
    /// `spec.nodeName` binds the pod to a node that is not in mainland China.
    BoundToNodeOutside,
    /// No NetworkPolicy restricts the pod's egress.
    EgressUnrestricted,
    /// An egress rule with no `to` (or an empty peer) allows every destination.
    EgressAllowsAll,
    /// An ipBlock reaches addresses outside mainland China.
    EgressOutsideMainland,
    /// ClusterOnly: an ipBlock reaches addresses outside the cluster.
    EgressExternalForbidden,
    /// hostNetwork pods bypass NetworkPolicy.
    HostNetwork,
}

impl Code {
    pub fn as_str(self) -> &'static str {
        match self {
            Code::PlacementNotGuaranteed => "PlacementNotGuaranteed",
            Code::NodeOutsideMainland => "NodeOutsideMainland",
            Code::BoundToNodeOutside => "BoundToNodeOutside",
            Code::EgressUnrestricted => "EgressUnrestricted",
            Code::EgressAllowsAll => "EgressAllowsAll",
            Code::EgressOutsideMainland => "EgressOutsideMainland",
            Code::EgressExternalForbidden => "EgressExternalForbidden",
            Code::HostNetwork => "HostNetwork",
        }
    }

    /// The violation rests on the NetworkPolicies that select the pods (so
    /// a NetworkPolicy change can cause or cure it).
    pub fn is_egress(self) -> bool {
        matches!(
            self,
            Code::EgressUnrestricted
                | Code::EgressAllowsAll
                | Code::EgressOutsideMainland
                | Code::EgressExternalForbidden
        )
    }
}

/// A node named as evidence.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeEvidence {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    pub standing: NodeStanding,
}

impl NodeEvidence {
    pub fn describe(&self, lang: Lang) -> String {
        describe_node(&self.name, self.region.as_deref(), &self.standing, lang)
    }
}

/// "node-7 in ap-east-1 (HK)": a node, its region and why it is (not)
/// mainland, for messages.
pub fn describe_node(
    name: &str,
    region: Option<&str>,
    standing: &NodeStanding,
    lang: Lang,
) -> String {
    let region = region.unwrap_or("?");
    match (standing, lang) {
        (NodeStanding::Mainland { .. }, Lang::En) => format!("{name} in {region}"),
        (NodeStanding::Mainland { .. }, Lang::ZhCn) => format!("{name}（{region}）"),
        (NodeStanding::Outside { country, .. }, Lang::En) => {
            format!("{name} in {region} ({country})")
        }
        (NodeStanding::Outside { jurisdiction, .. }, Lang::ZhCn) => {
            format!("{name}（{region}，{}）", jurisdiction.describe_zh())
        }
        (NodeStanding::Untrusted(why), lang) => {
            format!("{name} ({})", describe_untrusted(why, lang))
        }
    }
}

pub fn describe_untrusted(why: &Untrusted, lang: Lang) -> String {
    match (why, lang) {
        (Untrusted::MissingRegion { hint: Some(h) }, Lang::En) => {
            format!("no region label; its providerID suggests {h}")
        }
        (Untrusted::MissingRegion { hint: None }, Lang::En) => "no region label".into(),
        (Untrusted::UnknownRegion { region }, Lang::En) => {
            format!("region {region} is not in the jurisdiction catalogue")
        }
        (Untrusted::LabelsDisagree { label, legacy }, Lang::En) => {
            format!("region label says {label} but the legacy region label says {legacy}")
        }
        (
            Untrusted::ProviderIdContradicts {
                region,
                provider,
                provider_region,
            },
            Lang::En,
        ) => {
            format!("labelled {region} but its {provider} providerID says {provider_region}")
        }
        (Untrusted::RegionNotOfProvider { region, provider }, Lang::En) => {
            format!(
                "labelled {region}, which is not a {provider} region, yet its providerID is {provider}'s"
            )
        }
        (Untrusted::AmbiguousRegion { region }, Lang::En) => {
            format!(
                "region {region} means different places at different clouds and the providerID does not say which"
            )
        }
        (Untrusted::MissingRegion { hint: Some(h) }, Lang::ZhCn) => {
            format!("缺少地域标签；providerID 显示为 {h}")
        }
        (Untrusted::MissingRegion { hint: None }, Lang::ZhCn) => "缺少地域标签".into(),
        (Untrusted::UnknownRegion { region }, Lang::ZhCn) => {
            format!("地域 {region} 不在管辖目录中")
        }
        (Untrusted::LabelsDisagree { label, legacy }, Lang::ZhCn) => {
            format!("地域标签为 {label}，旧版地域标签却为 {legacy}")
        }
        (
            Untrusted::ProviderIdContradicts {
                region,
                provider,
                provider_region,
            },
            Lang::ZhCn,
        ) => {
            format!("标签为 {region}，但其 {provider} providerID 显示为 {provider_region}")
        }
        (Untrusted::RegionNotOfProvider { region, provider }, Lang::ZhCn) => {
            format!("标签为 {region}，但这不是 {provider} 的地域")
        }
        (Untrusted::AmbiguousRegion { region }, Lang::ZhCn) => {
            format!("地域代码 {region} 在不同云厂商含义不同，且 providerID 无法确定")
        }
    }
}

/// Structured evidence, for reports and JSON output.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum Evidence {
    #[serde(rename_all = "camelCase")]
    Placement {
        /// Index of the failing nodeSelectorTerm (None: nodeSelector only).
        #[serde(skip_serializing_if = "Option::is_none")]
        term: Option<usize>,
        /// Region values the constraint allows that are not mainland.
        #[serde(skip_serializing_if = "Vec::is_empty")]
        non_mainland_regions: Vec<String>,
        /// Matching nodes known today (None: no inventory).
        #[serde(skip_serializing_if = "Option::is_none")]
        matching_nodes: Option<usize>,
        outside_nodes: Vec<Shared<NodeEvidence>>,
        /// Outside nodes beyond those listed.
        #[serde(skip_serializing_if = "is_zero")]
        more_outside: usize,
    },
    #[serde(rename_all = "camelCase")]
    BoundNode { node: Shared<NodeEvidence> },
    #[serde(rename_all = "camelCase")]
    Egress(super::egress::EgressEvidence),
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Violation {
    pub code: Code,
    /// The field at fault, as a path in the submitted manifest.
    pub field: String,
    pub evidence: Evidence,
    pub message: Message,
    /// Covered by an active exemption: reported, but does not count.
    pub exempted: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ExemptionUse {
    pub index: usize,
    pub basis: LegalBasis,
    pub reference: String,
    pub approved_by: String,
    pub expires: String,
    pub active: bool,
}

/// One policy that governs the workload, and how the workload fares under it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyOutcome {
    pub policy: Shared<str>,
    pub action: Action,
    /// The workload's classes this policy governs.
    pub classes: Vec<DataClass>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exemption: Option<ExemptionUse>,
    pub violations: Vec<Violation>,
}

impl PolicyOutcome {
    pub fn violated(&self) -> bool {
        self.violations.iter().any(|v| !v.exempted)
    }
}

/// Where a data class was declared.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClassSource {
    /// `metadata.labels`, `spec.template.metadata.labels` or `Namespace <name>`.
    pub location: String,
    pub value: String,
}

/// Something worth saying that is not a violation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Notice {
    pub code: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    pub message: Text,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadRef {
    pub kind: String,
    pub namespace: String,
    pub name: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Verdict {
    pub workload: WorkloadRef,
    pub classes: Vec<DataClass>,
    pub class_sources: Vec<ClassSource>,
    /// Every governing policy, violated or not.
    pub policies: Vec<PolicyOutcome>,
    /// The strictest action among violated policies; None when compliant.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action: Option<Action>,
    pub notices: Vec<Notice>,
    /// The pod's effective egress, when any governing policy checks egress.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub egress: Option<super::egress::EffectiveEgress>,
}

impl Verdict {
    pub fn compliant(&self) -> bool {
        self.action.is_none()
    }

    pub fn denied(&self) -> bool {
        self.action == Some(Action::Deny)
    }

    /// Violations that count, with their policy.
    pub fn violations(&self) -> impl Iterator<Item = (&PolicyOutcome, &Violation)> {
        self.policies.iter().flat_map(|p| {
            p.violations
                .iter()
                .filter(|v| !v.exempted)
                .map(move |v| (p, v))
        })
    }

    /// Every counting violation's message for the policies with `action`.
    pub fn messages_for(&self, action: Action) -> impl Iterator<Item = &Message> {
        self.violations()
            .filter(move |(p, _)| p.action == action)
            .map(|(_, v)| &v.message)
    }
}
