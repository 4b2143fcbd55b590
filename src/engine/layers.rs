//! Egress across every enforcing layer of the cluster's CNI, in that CNI's
//! own order (docs/semantics.md, "Egress across policy layers").
//!
//! Each policy kind is projected (`projection.rs`) into the same model: a
//! subject (which pods it applies to) and ordered rules, each an action
//! (Allow, Deny, Pass, Log) on a set of *external* addresses, plus names
//! (domains) and what cannot be known offline. In-cluster peers (pods,
//! namespaces, nodes, Services, the `cluster` entity) reach no external
//! address and drop out of the address model.
//!
//! Ports are abstracted: the question is "can the pod reach this address on
//! some port". A rule limited to some ports (or protocols) is *partial*: an
//! Allow still opens its addresses; a Deny closes nothing (other ports stay
//! open to later rules); a Pass both passes and lets evaluation continue.
//! Every approximation errs towards "reachable", never the other way.
//!
//! Three orders:
//! - `kubernetes`: AdminNetworkPolicy by priority, then NetworkPolicy, then
//!   BaselineAdminNetworkPolicy (the network-policy-api specification).
//! - `calico`: tiers by order (the AdminNetworkPolicy tier at 1,000, Tier
//!   objects, the default tier at 1,000,000 with Calico and Kubernetes
//!   NetworkPolicies, the BaselineAdminNetworkPolicy tier at 10,000,000);
//!   within a tier, policies by order then name; first matching Allow or
//!   Deny decides, Pass goes to the next tier, a tier that applies and
//!   decides nothing ends in its default action (Deny unless set to Pass);
//!   what passes every tier is allowed by the namespace profile.
//! - `cilium`: one union. Deny rules of every selecting policy (Cilium,
//!   clusterwide or Kubernetes) take precedence over every allow; a pod
//!   selected by a policy with egress rules is default-deny, else
//!   default-allow; enforcement mode `always` makes every pod default-deny
//!   and `never` turns enforcement off.

use std::collections::BTreeMap;
use std::sync::{Arc, LazyLock};

use ipnet::IpNet;
use serde::Serialize;

use super::calico_selector::CalicoSelector;
use super::ipset::IpSet;
use super::selector::LabelSelectorMatcher;
use super::shared::Shared;

/// Whose enforcement semantics the cluster has (Helm value `egress.cni`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Cni {
    /// NetworkPolicy, with AdminNetworkPolicy and BaselineAdminNetworkPolicy
    /// when served.
    #[default]
    Kubernetes,
    Cilium,
    Calico,
}

impl Cni {
    pub fn parse(text: &str) -> Option<Cni> {
        match text {
            "kubernetes" => Some(Cni::Kubernetes),
            "cilium" => Some(Cni::Cilium),
            "calico" => Some(Cni::Calico),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Cni::Kubernetes => "kubernetes",
            Cni::Cilium => "cilium",
            Cni::Calico => "calico",
        }
    }
}

/// Cilium's policy enforcement mode (agent flag `enable-policy`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum CiliumEnforcement {
    #[default]
    Default,
    Always,
    Never,
}

impl CiliumEnforcement {
    pub fn parse(text: &str) -> Option<CiliumEnforcement> {
        match text {
            "default" => Some(CiliumEnforcement::Default),
            "always" => Some(CiliumEnforcement::Always),
            "never" => Some(CiliumEnforcement::Never),
            _ => None,
        }
    }
}

/// The egress semantics a snapshot is judged under.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EgressSemantics {
    pub cni: Cni,
    pub cilium_enforcement: CiliumEnforcement,
}

/// The policy kinds read besides NetworkPolicy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum LayerKind {
    NetworkPolicy,
    AdminNetworkPolicy,
    BaselineAdminNetworkPolicy,
    CiliumNetworkPolicy,
    CiliumClusterwideNetworkPolicy,
    /// `crd.projectcalico.org/v1` NetworkPolicy.
    CalicoNetworkPolicy,
    GlobalNetworkPolicy,
}

impl LayerKind {
    /// The namespaced kinds of the other layers (their objects live in a
    /// namespace and select only its pods).
    pub fn namespaced_layer(self) -> bool {
        matches!(
            self,
            LayerKind::CiliumNetworkPolicy | LayerKind::CalicoNetworkPolicy
        )
    }

    /// As written in evidence: Calico's namespaced kind is qualified, since
    /// it shares its name with Kubernetes'.
    pub fn as_str(self) -> &'static str {
        match self {
            LayerKind::NetworkPolicy => "NetworkPolicy",
            LayerKind::AdminNetworkPolicy => "AdminNetworkPolicy",
            LayerKind::BaselineAdminNetworkPolicy => "BaselineAdminNetworkPolicy",
            LayerKind::CiliumNetworkPolicy => "CiliumNetworkPolicy",
            LayerKind::CiliumClusterwideNetworkPolicy => "CiliumClusterwideNetworkPolicy",
            LayerKind::CalicoNetworkPolicy => "NetworkPolicy.crd.projectcalico.org",
            LayerKind::GlobalNetworkPolicy => "GlobalNetworkPolicy",
        }
    }

    pub fn is_cilium(self) -> bool {
        matches!(
            self,
            LayerKind::CiliumNetworkPolicy | LayerKind::CiliumClusterwideNetworkPolicy
        )
    }

    pub fn is_calico(self) -> bool {
        matches!(
            self,
            LayerKind::CalicoNetworkPolicy | LayerKind::GlobalNetworkPolicy
        )
    }

    pub fn is_admin(self) -> bool {
        matches!(
            self,
            LayerKind::AdminNetworkPolicy | LayerKind::BaselineAdminNetworkPolicy
        )
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum RuleAction {
    Allow,
    Deny,
    Pass,
    Log,
}

/// Why something cannot be judged, in both languages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unknown {
    pub en: Shared<str>,
    pub zh: Shared<str>,
}

/// One egress rule, projected.
#[derive(Clone, Debug)]
pub struct LayerRule {
    pub action: RuleAction,
    /// The external addresses the rule's destination matches.
    pub nets: Arc<IpSet>,
    /// The rule names no destination (or `world`/`all`): every address.
    pub everything: bool,
    /// Limited to some ports or protocols (or otherwise to part of the
    /// traffic): a Deny or Pass does not close its addresses.
    pub partial: bool,
    /// Domain names the rule allows (`toFQDNs`, `domains`, `domainNames`).
    pub domains: Vec<Shared<str>>,
    /// What the rule reaches cannot be known from the objects read (a
    /// CIDR group, a Service's endpoints, a cloud group): an Allow counts
    /// as reaching every destination, a Deny or Pass as closing nothing.
    pub unknown: Option<Unknown>,
    /// Index into `spec.egress` (or `spec.egressDeny` for a Cilium deny).
    pub index: usize,
    /// "spec.egress[0]": where the rule is.
    pub field: Shared<str>,
    /// What the rule names, as written ("toCIDRSet 0.0.0.0/0").
    pub text: Shared<str>,
    /// Calico: the destination selects by labels, so it also reaches the
    /// network sets it selects; `nets` then holds what it reaches with no
    /// set, and `calico_reach` resolves it against the sets read.
    pub sets: Option<Arc<SetDestination>>,
}

/// A Calico rule destination that selects by labels (docs/semantics.md,
/// "Calico network sets"): besides in-cluster endpoints, it reaches the
/// addresses of the NetworkSets and GlobalNetworkSets it selects.
#[derive(Clone, Debug)]
pub struct SetDestination {
    /// The one positive selector Calico builds from the rule's
    /// namespaceSelector (or the policy's namespace), serviceAccounts and
    /// selector; None when the rule has none (then the destination is not
    /// limited to sets: every address, less what the rest excludes).
    pub selector: Option<CalicoSelector>,
    /// `notSelector`, applied unscoped as Calico applies it: the
    /// addresses of the sets it matches are excluded.
    pub not_selector: Option<CalicoSelector>,
    /// `nets`, when given: the destination is limited to them.
    pub nets: Option<IpSet>,
    /// `notNets`, subtracted.
    pub not_nets: IpSet,
    /// `ipVersion`, when given.
    pub ip_version: Option<u8>,
    /// `domains` limits the destination to names: no address.
    pub domains_only: bool,
}

/// A Calico NetworkSet (namespaced) or GlobalNetworkSet: labelled
/// addresses that a rule's destination selector can select.
#[derive(Clone, Debug, PartialEq)]
pub struct NetworkSet {
    /// None: a GlobalNetworkSet.
    pub namespace: Option<String>,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    /// `spec.nets`.
    pub nets: IpSet,
    /// `spec.allowedEgressDomains`: names, judged as a rule's `domains`.
    pub domains: Vec<Shared<str>>,
    /// An entry of `spec.nets` that is not a CIDR: what the set holds is
    /// not known for sure.
    pub problem: Option<String>,
}

impl NetworkSet {
    /// "NetworkSet ns/name" or "GlobalNetworkSet name", as evidence names it.
    pub fn reference(&self) -> String {
        match &self.namespace {
            Some(ns) => format!("NetworkSet {ns}/{}", self.name),
            None => format!("GlobalNetworkSet {}", self.name),
        }
    }

    /// The labels Calico's rule selectors see on the set: its own, the
    /// `projectcalico.org/namespace` label and, inherited from the
    /// namespace's profile, the namespace's labels as `pcns.` labels and
    /// its name as `pcns.projectcalico.org/name` (a GlobalNetworkSet has
    /// its own labels only).
    pub fn calico_labels(
        &self,
        namespaces: &BTreeMap<String, BTreeMap<String, String>>,
    ) -> BTreeMap<String, String> {
        let mut labels = BTreeMap::new();
        if let Some(ns) = &self.namespace {
            for (k, v) in namespaces.get(ns).into_iter().flatten() {
                labels.insert(format!("pcns.{k}"), v.clone());
            }
            labels.insert("pcns.projectcalico.org/name".into(), ns.clone());
        }
        labels.extend(self.labels.iter().map(|(k, v)| (k.clone(), v.clone())));
        if let Some(ns) = &self.namespace {
            labels.insert("projectcalico.org/namespace".into(), ns.clone());
        }
        labels
    }
}

/// The network sets a rule's destination selects and excludes.
pub struct SetMatch<'s> {
    pub selected: Vec<&'s NetworkSet>,
    pub excluded: Vec<&'s NetworkSet>,
}

impl SetMatch<'_> {
    pub fn is_empty(&self) -> bool {
        self.selected.is_empty() && self.excluded.is_empty()
    }
}

/// A network set with the labels its namespace gives it.
pub struct SetView<'a> {
    pub set: &'a NetworkSet,
    pub labels: BTreeMap<String, String>,
}

impl SetDestination {
    /// The sets the selector selects and the notSelector excludes, each
    /// set matched once (selector matching is most of the cost of a rule
    /// that selects sets). When it is empty the rule as projected
    /// (resolved against no set) stands.
    pub fn matching<'s>(&self, sets: &[SetView<'s>]) -> SetMatch<'s> {
        let matched = |sel: &Option<CalicoSelector>| -> Vec<&'s NetworkSet> {
            sel.as_ref().map_or_else(Vec::new, |sel| {
                sets.iter()
                    .filter(|v| sel.matches(&v.labels))
                    .map(|v| v.set)
                    .collect()
            })
        };
        SetMatch {
            selected: matched(&self.selector),
            excluded: matched(&self.not_selector),
        }
    }

    /// The rule with its destination resolved against the sets: the
    /// addresses of the sets the selector selects (every address when it
    /// has none), limited to `nets`, less the sets `notSelector` matches
    /// and `notNets`. A selected or excluded set that cannot be read makes
    /// the rule's destination unknown; a selected set's
    /// `allowedEgressDomains` become the rule's domains.
    pub fn resolve(&self, rule: &LayerRule, sets: &[SetView<'_>]) -> LayerRule {
        self.resolve_matched(rule, &self.matching(sets))
    }

    /// `resolve`, with the sets already matched (`matching`).
    pub fn resolve_matched(&self, rule: &LayerRule, matched: &SetMatch<'_>) -> LayerRule {
        let SetMatch { selected, excluded } = matched;
        let mut reached = match &self.selector {
            Some(_) => {
                let mut union = IpSet::new();
                for set in selected {
                    union = union.union(&set.nets);
                }
                union
            }
            None => (**EVERYWHERE).clone(),
        };
        if let Some(nets) = &self.nets {
            reached = reached.intersect(nets);
        }
        for set in excluded {
            reached = reached.subtract(&set.nets);
        }
        reached = reached.subtract(&self.not_nets);
        match self.ip_version {
            Some(4) => {
                reached =
                    reached.intersect(&IpSet::from_nets([IpNet::V4(ipnet::Ipv4Net::default())]))
            }
            Some(6) => {
                reached =
                    reached.intersect(&IpSet::from_nets([IpNet::V6(ipnet::Ipv6Net::default())]))
            }
            _ => {}
        }
        let mut out = rule.clone();
        if self.domains_only {
            reached = IpSet::new();
        }
        let mut text = rule.text.to_string();
        if !selected.is_empty() {
            let names: Vec<String> = selected.iter().map(|s| s.reference()).collect();
            text.push_str(&format!(" (selects {})", names.join(", ")));
        }
        if !excluded.is_empty() {
            let names: Vec<String> = excluded.iter().map(|s| s.reference()).collect();
            text.push_str(&format!(" (notSelector excludes {})", names.join(", ")));
        }
        // A set that cannot be read, selected or excluded: what the rule
        // reaches (or closes) is unknown.
        for set in selected.iter().chain(excluded) {
            if let Some(problem) = &set.problem {
                let reference = set.reference();
                out.unknown = Some(Unknown {
                    en: format!("{}: it selects {reference}, whose {problem}", rule.field).into(),
                    zh: format!(
                        "{}：其选中的 {reference} 中 {problem}（无法离线判断其可达地址）",
                        rule.field
                    )
                    .into(),
                });
            }
        }
        for set in selected {
            out.domains.extend(set.domains.iter().cloned());
        }
        out.everything = reached == **EVERYWHERE;
        out.nets = Arc::new(reached);
        out.text = text.into();
        out
    }
}

/// Which pods a policy applies to.
#[derive(Clone, Debug)]
pub enum Subject {
    /// Kubernetes label selectors (NetworkPolicy, AdminNetworkPolicy,
    /// Cilium after its label keys are read). `namespace`: only pods of that
    /// namespace; `namespaces`: only pods whose namespace matches.
    Labels {
        namespace: Option<String>,
        namespaces: Option<LabelSelectorMatcher>,
        pods: Option<LabelSelectorMatcher>,
        /// Cilium: selectors read the pod's labels with Cilium's
        /// namespace pseudo-labels added.
        cilium_view: bool,
    },
    Calico {
        namespace: Option<String>,
        selector: CalicoSelector,
        namespace_selector: Option<CalicoSelector>,
    },
    /// The subject cannot be read: the policy may apply to any pod, so what
    /// any pod it might select can reach is unknown.
    Unreadable(Unknown),
}

/// A pod as the subjects read it.
pub struct PodView<'a> {
    pub namespace: &'a str,
    pub namespace_labels: &'a BTreeMap<String, String>,
    pub labels: &'a BTreeMap<String, String>,
    cilium: std::cell::OnceCell<BTreeMap<String, String>>,
    calico: std::cell::OnceCell<BTreeMap<String, String>>,
}

impl<'a> PodView<'a> {
    pub fn new(
        namespace: &'a str,
        namespace_labels: &'a BTreeMap<String, String>,
        labels: &'a BTreeMap<String, String>,
    ) -> Self {
        PodView {
            namespace,
            namespace_labels,
            labels,
            cilium: std::cell::OnceCell::new(),
            calico: std::cell::OnceCell::new(),
        }
    }

    /// The labels Cilium's endpoint selectors see: the pod's, its
    /// namespace's name and its namespace's labels.
    fn cilium_labels(&self) -> &BTreeMap<String, String> {
        self.cilium.get_or_init(|| {
            let mut l = self.labels.clone();
            l.insert("io.kubernetes.pod.namespace".into(), self.namespace.into());
            for (k, v) in self.namespace_labels {
                l.insert(format!("io.cilium.k8s.namespace.labels.{k}"), v.clone());
            }
            l
        })
    }

    /// The labels Calico's selectors see on a pod's workload endpoint.
    fn calico_labels(&self) -> &BTreeMap<String, String> {
        self.calico.get_or_init(|| {
            let mut l = self.labels.clone();
            l.insert("projectcalico.org/namespace".into(), self.namespace.into());
            l.insert("projectcalico.org/orchestrator".into(), "k8s".into());
            for (k, v) in self.namespace_labels {
                l.insert(format!("pcns.{k}"), v.clone());
            }
            l
        })
    }

    /// The labels Calico's namespace selectors see.
    fn calico_namespace_labels(&self) -> BTreeMap<String, String> {
        let mut l = self.namespace_labels.clone();
        l.insert("projectcalico.org/name".into(), self.namespace.into());
        l
    }
}

impl Subject {
    /// Some(true/false), or None when the subject cannot be read.
    pub fn selects(&self, pod: &PodView<'_>) -> Option<bool> {
        match self {
            Subject::Labels {
                namespace,
                namespaces,
                pods,
                cilium_view,
            } => {
                if namespace.as_deref().is_some_and(|ns| ns != pod.namespace) {
                    return Some(false);
                }
                if let Some(ns) = namespaces {
                    let mut labels = pod.namespace_labels.clone();
                    labels
                        .entry("kubernetes.io/metadata.name".into())
                        .or_insert_with(|| pod.namespace.into());
                    if !ns.matches(&labels) {
                        return Some(false);
                    }
                }
                Some(pods.as_ref().is_none_or(|p| {
                    if *cilium_view {
                        p.matches(pod.cilium_labels())
                    } else {
                        p.matches(pod.labels)
                    }
                }))
            }
            Subject::Calico {
                namespace,
                selector,
                namespace_selector,
            } => {
                if namespace.as_deref().is_some_and(|ns| ns != pod.namespace) {
                    return Some(false);
                }
                if let Some(ns) = namespace_selector
                    && !ns.matches(&pod.calico_namespace_labels())
                {
                    return Some(false);
                }
                Some(selector.matches(pod.calico_labels()))
            }
            Subject::Unreadable(_) => None,
        }
    }
}

/// A policy of any kind, projected.
#[derive(Clone, Debug)]
pub struct LayerPolicy {
    pub kind: LayerKind,
    pub namespace: Option<String>,
    pub name: String,
    /// "CiliumNetworkPolicy ns/name", as evidence names it.
    pub reference: Shared<str>,
    pub subject: Subject,
    /// The policy governs egress at all (Calico `types`, a Cilium policy
    /// with egress or egressDeny rules, a NetworkPolicy isolating egress).
    pub egress: bool,
    /// Cilium: selecting a pod makes its egress default-deny
    /// (`enableDefaultDeny.egress`, true unless set false).
    pub default_deny: bool,
    /// Calico `order` (lower first; none last), AdminNetworkPolicy
    /// `priority`.
    pub order: Option<f64>,
    /// Calico tier name (`default` when not set).
    pub tier: Option<String>,
    pub rules: Vec<LayerRule>,
}

/// A Calico tier (`Tier` object, or a built-in one).
#[derive(Clone, Debug, PartialEq)]
pub struct CalicoTier {
    pub order: Option<f64>,
    /// What happens to traffic a tier that applies does not decide.
    pub default_pass: bool,
}

/// The policies of every layer besides NetworkPolicy, and Calico's tiers.
#[derive(Clone, Debug, Default)]
pub struct Layers {
    pub policies: Vec<LayerPolicy>,
    pub tiers: BTreeMap<String, CalicoTier>,
    /// Calico NetworkSets and GlobalNetworkSets.
    pub network_sets: Vec<NetworkSet>,
}

impl Layers {
    /// The Calico policies with a rule whose destination selects network
    /// sets: the ones a set's change (or its namespace's relabel) can move.
    pub fn selecting_network_sets(&self) -> impl Iterator<Item = &LayerPolicy> {
        self.policies
            .iter()
            .filter(|p| p.kind.is_calico() && p.rules.iter().any(|r| r.sets.is_some()))
    }

    pub fn is_empty(&self) -> bool {
        self.policies.is_empty()
    }

    /// Add a policy, replacing one of the same kind, namespace and name.
    pub fn upsert(&mut self, policy: LayerPolicy) {
        self.remove(policy.kind, policy.namespace.as_deref(), &policy.name);
        self.policies.push(policy);
    }

    pub fn remove(&mut self, kind: LayerKind, namespace: Option<&str>, name: &str) {
        self.policies
            .retain(|p| !(p.kind == kind && p.namespace.as_deref() == namespace && p.name == name));
    }

    pub fn set_tier(&mut self, name: &str, tier: CalicoTier) {
        self.tiers.insert(name.to_string(), tier);
    }

    /// Add a network set, replacing one of the same namespace and name.
    pub fn upsert_network_set(&mut self, set: NetworkSet) {
        self.remove_network_set(set.namespace.as_deref(), &set.name);
        self.network_sets.push(set);
    }

    /// Forget a network set (`namespace` None: a GlobalNetworkSet).
    pub fn remove_network_set(&mut self, namespace: Option<&str>, name: &str) {
        self.network_sets
            .retain(|s| !(s.namespace.as_deref() == namespace && s.name == name));
    }
}

/// Every address, IPv4 and IPv6.
pub static EVERYWHERE: LazyLock<Arc<IpSet>> = LazyLock::new(|| {
    Arc::new(IpSet::from_nets([
        IpNet::V4(ipnet::Ipv4Net::default()),
        IpNet::V6(ipnet::Ipv6Net::default()),
    ]))
});

/// Addresses a rule opened to the pod.
#[derive(Clone, Debug)]
pub struct Grant {
    pub kind: LayerKind,
    pub reference: Shared<str>,
    pub index: usize,
    pub field: Shared<str>,
    pub text: Shared<str>,
    /// The part of the rule's addresses that no earlier rule decided:
    /// the rule's own set, shared, when nothing earlier took any of it.
    pub nets: Arc<IpSet>,
    /// The rule names every destination and nothing earlier took any.
    pub everything: bool,
    pub unknown: Option<Unknown>,
}

/// Addresses a rule (or a tier's default) closed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LayerDecision {
    /// "CiliumNetworkPolicy ns/name", or "tier default" for its default.
    pub by: Shared<str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<Shared<str>>,
    /// allowed, denied, passed, defaultDenied, defaultAllowed.
    pub outcome: &'static str,
    /// The ranges, written as CIDRs (at most `MAX_LISTED`, then "…") only
    /// when serialized: judging does not pay for the text.
    #[serde(serialize_with = "serialize_ranges")]
    pub ranges: RangesOrUnknown,
}

/// What a decision covers: addresses, or what cannot be known.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RangesOrUnknown {
    /// Shared with the rule or grant it comes from, not copied.
    Set(Arc<IpSet>),
    Unknown,
}

impl RangesOrUnknown {
    /// The ranges as written in evidence.
    pub fn texts(&self) -> Vec<String> {
        match self {
            RangesOrUnknown::Set(set) => list_ranges(set),
            RangesOrUnknown::Unknown => vec!["(unknown)".into()],
        }
    }
}

fn serialize_ranges<S: serde::Serializer>(r: &RangesOrUnknown, s: S) -> Result<S::Ok, S::Error> {
    use serde::Serialize as _;
    r.texts().serialize(s)
}

const MAX_LISTED: usize = 8;

pub(crate) fn list_ranges(set: &IpSet) -> Vec<String> {
    let nets = set.to_nets();
    let mut out: Vec<String> = nets
        .iter()
        .take(MAX_LISTED)
        .map(ToString::to_string)
        .collect();
    if nets.len() > MAX_LISTED {
        out.push(format!("… {} more", nets.len() - MAX_LISTED));
    }
    out
}

/// A domain name a rule allows.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DomainGrant {
    pub policy: Shared<str>,
    pub field: Shared<str>,
    pub domain: Shared<str>,
}

/// What the pod reaches across the layers.
#[derive(Clone, Debug, Default)]
pub struct Reach {
    /// Some layer restricts the pod (else it reaches everything).
    pub restricted: bool,
    pub grants: Vec<Grant>,
    /// Addresses no layer decided, allowed by the CNI's default.
    pub default_allowed: IpSet,
    pub domains: Vec<DomainGrant>,
    /// Policies whose subject cannot be read.
    pub unreadable: Vec<(Shared<str>, Unknown)>,
    /// What each layer allowed and closed, for reports.
    pub decisions: Vec<LayerDecision>,
}

impl Reach {
    /// Every address the pod can reach.
    pub fn reachable(&self) -> IpSet {
        let mut all = self.default_allowed.clone();
        for g in &self.grants {
            if g.unknown.is_some() {
                return (**EVERYWHERE).clone();
            }
            all = all.union(&g.nets);
        }
        if !self.unreadable.is_empty() {
            return (**EVERYWHERE).clone();
        }
        all
    }
}

/// One tier as evaluated: its policies that apply to the pod, in order.
struct TierRun<'a> {
    label: Shared<str>,
    default_pass: bool,
    policies: Vec<&'a LayerPolicy>,
}

/// The policies of `all` that apply to the pod's egress; unreadable
/// subjects are recorded in `reach` and left out.
fn applying<'a>(
    all: impl IntoIterator<Item = &'a LayerPolicy>,
    pod: &PodView<'_>,
    reach: &mut Reach,
) -> Vec<&'a LayerPolicy> {
    let mut out = Vec::new();
    for p in all {
        if !p.egress {
            continue;
        }
        match p.subject.selects(pod) {
            Some(true) => out.push(p),
            Some(false) => {}
            None => {
                if let Subject::Unreadable(why) = &p.subject {
                    reach.unreadable.push((p.reference.clone(), why.clone()));
                }
            }
        }
    }
    out
}

fn grant(reach: &mut Reach, p: &LayerPolicy, r: &LayerRule, nets: Arc<IpSet>, everything: bool) {
    if r.unknown.is_none() && nets.is_empty() {
        return;
    }
    reach.decisions.push(LayerDecision {
        by: p.reference.clone(),
        field: Some(r.field.clone()),
        outcome: "allowed",
        ranges: if r.unknown.is_some() {
            RangesOrUnknown::Unknown
        } else {
            RangesOrUnknown::Set(Arc::clone(&nets))
        },
    });
    reach.grants.push(Grant {
        kind: p.kind,
        reference: p.reference.clone(),
        index: r.index,
        field: r.field.clone(),
        text: r.text.clone(),
        nets,
        everything,
        unknown: r.unknown.clone(),
    });
}

fn domains_of(reach: &mut Reach, p: &LayerPolicy, r: &LayerRule) {
    for d in &r.domains {
        reach.domains.push(DomainGrant {
            policy: p.reference.clone(),
            field: r.field.clone(),
            domain: d.clone(),
        });
    }
}

fn closed(
    reach: &mut Reach,
    by: Shared<str>,
    field: Option<Shared<str>>,
    outcome: &'static str,
    set: Arc<IpSet>,
) {
    if set.is_empty() {
        return;
    }
    reach.decisions.push(LayerDecision {
        by,
        field,
        outcome,
        ranges: RangesOrUnknown::Set(set),
    });
}

/// The part of a rule's addresses still pending: the rule's own set,
/// shared, when all of it is (the common case: earlier rules name other
/// addresses), else the intersection.
fn still_pending(rule: &Arc<IpSet>, pending: &IpSet) -> Arc<IpSet> {
    if rule.is_subset_of(pending) {
        Arc::clone(rule)
    } else {
        Arc::new(rule.intersect(pending))
    }
}

/// `pending \ taken`, in place: `scratch` receives the result and the two
/// swap, so narrowing rule after rule allocates only while sets grow.
fn take(pending: &mut IpSet, taken: &IpSet, scratch: &mut IpSet) {
    if taken.is_empty() {
        return;
    }
    pending.subtract_into(taken, scratch);
    std::mem::swap(pending, scratch);
}

/// Grants and decisions at most `rules` rules can add, reserved at once.
fn reserve(reach: &mut Reach, rules: usize) {
    reach.grants.reserve(rules);
    reach.decisions.reserve(rules + 2);
}

/// First-match evaluation through ordered tiers (Kubernetes' and Calico's
/// orders), over address sets.
fn run_tiers(tiers: Vec<TierRun<'_>>, mut reach: Reach) -> Reach {
    let mut pending: IpSet = (**EVERYWHERE).clone();
    let mut scratch = IpSet::new();
    let rules = tiers
        .iter()
        .flat_map(|t| &t.policies)
        .map(|p| p.rules.len())
        .sum::<usize>();
    reserve(&mut reach, rules + tiers.len());
    for tier in tiers {
        if tier.policies.is_empty() {
            continue;
        }
        reach.restricted = true;
        let mut passed = IpSet::new();
        for p in &tier.policies {
            for r in &p.rules {
                match r.action {
                    RuleAction::Allow => {
                        domains_of(&mut reach, p, r);
                        if r.unknown.is_some() {
                            grant(&mut reach, p, r, Arc::new(IpSet::new()), false);
                            continue;
                        }
                        let m = still_pending(&r.nets, &pending);
                        let everything = r.everything && *m == **EVERYWHERE;
                        if !r.partial {
                            take(&mut pending, &m, &mut scratch);
                        }
                        grant(&mut reach, p, r, m, everything);
                    }
                    RuleAction::Deny if !r.partial && r.unknown.is_none() => {
                        let m = still_pending(&r.nets, &pending);
                        take(&mut pending, &m, &mut scratch);
                        closed(
                            &mut reach,
                            p.reference.clone(),
                            Some(r.field.clone()),
                            "denied",
                            m,
                        );
                    }
                    RuleAction::Pass if r.unknown.is_none() => {
                        let m = still_pending(&r.nets, &pending);
                        if !r.partial {
                            take(&mut pending, &m, &mut scratch);
                        }
                        if !m.is_empty() {
                            passed = passed.union(&m);
                        }
                        closed(
                            &mut reach,
                            p.reference.clone(),
                            Some(r.field.clone()),
                            "passed",
                            m,
                        );
                    }
                    RuleAction::Deny | RuleAction::Pass | RuleAction::Log => {}
                }
            }
        }
        if tier.default_pass {
            pending = pending.union(&passed);
        } else {
            if !pending.is_empty() {
                closed(
                    &mut reach,
                    tier.label.clone(),
                    None,
                    "defaultDenied",
                    Arc::new(pending),
                );
            }
            pending = passed;
        }
    }
    if reach.restricted && !pending.is_empty() {
        closed(
            &mut reach,
            "the CNI's default allow".into(),
            None,
            "defaultAllowed",
            Arc::new(pending.clone()),
        );
    }
    reach.default_allowed = pending;
    reach
}

/// Kubernetes' order: AdminNetworkPolicy by priority (then name), then
/// NetworkPolicy, then BaselineAdminNetworkPolicy.
pub fn kubernetes_reach(
    network_policies: &[&LayerPolicy],
    layers: &Layers,
    pod: &PodView<'_>,
) -> Reach {
    let mut reach = Reach::default();
    let mut anps = applying(
        layers
            .policies
            .iter()
            .filter(|p| p.kind == LayerKind::AdminNetworkPolicy),
        pod,
        &mut reach,
    );
    sort_by_order(&mut anps);
    let nps = applying(network_policies.iter().copied(), pod, &mut reach);
    // One in a cluster (named `default`); by name, should there be more.
    let mut banps = applying(
        layers
            .policies
            .iter()
            .filter(|p| p.kind == LayerKind::BaselineAdminNetworkPolicy),
        pod,
        &mut reach,
    );
    sort_by_order(&mut banps);
    let tiers = vec![
        TierRun {
            label: "AdminNetworkPolicy (no rule matched: pass)".into(),
            default_pass: true,
            policies: anps,
        },
        TierRun {
            label: "NetworkPolicy isolation (default deny)".into(),
            default_pass: false,
            policies: nps,
        },
        TierRun {
            label: "BaselineAdminNetworkPolicy (no rule matched: pass)".into(),
            default_pass: true,
            policies: banps,
        },
    ];
    run_tiers(tiers, reach)
}

/// Order, then name; a policy without order comes last (Calico).
fn sort_by_order(policies: &mut [&LayerPolicy]) {
    policies.sort_by(|a, b| {
        let key = |p: &LayerPolicy| p.order.unwrap_or(f64::INFINITY);
        key(a)
            .total_cmp(&key(b))
            .then_with(|| a.name.cmp(&b.name))
            .then_with(|| a.namespace.cmp(&b.namespace))
    });
}

/// Calico's built-in tier orders.
pub const ANP_TIER_ORDER: f64 = 1_000.0;
pub const DEFAULT_TIER_ORDER: f64 = 1_000_000.0;
pub const BANP_TIER_ORDER: f64 = 10_000_000.0;
/// Kubernetes NetworkPolicies sit in Calico's default tier at this order.
pub const K8S_NP_ORDER_IN_CALICO: f64 = 1_000.0;

/// A Calico tier being filled: its order, whether its default is Pass,
/// and its policies that apply to the pod.
type TierSlot<'a> = (f64, bool, Vec<&'a LayerPolicy>);

/// Calico's order. Kubernetes NetworkPolicies are in the default tier at
/// order 1000; AdminNetworkPolicies in their tier by priority;
/// BaselineAdminNetworkPolicy in the last.
/// `namespaces` (name to labels) gives namespaced network sets the labels
/// they inherit.
pub fn calico_reach(
    network_policies: &[&LayerPolicy],
    layers: &Layers,
    pod: &PodView<'_>,
    namespaces: &BTreeMap<String, BTreeMap<String, String>>,
) -> Reach {
    let mut reach = Reach::default();
    let relevant = layers
        .policies
        .iter()
        .filter(|p| p.kind.is_calico() || p.kind.is_admin());
    let selecting = applying(
        relevant.chain(network_policies.iter().copied()),
        pod,
        &mut reach,
    );
    let resolved = with_network_sets(&selecting, &layers.network_sets, namespaces);
    // A policy naming a tier with no Tier object: where it sits is unknown.
    let mut tiers: BTreeMap<String, TierSlot<'_>> = BTreeMap::new();
    tiers.insert(
        "adminnetworkpolicy".into(),
        (ANP_TIER_ORDER, true, Vec::new()),
    );
    tiers.insert("default".into(), (DEFAULT_TIER_ORDER, false, Vec::new()));
    tiers.insert(
        "baselineadminnetworkpolicy".into(),
        (BANP_TIER_ORDER, true, Vec::new()),
    );
    for (name, t) in &layers.tiers {
        let entry = tiers
            .entry(name.clone())
            .or_insert((f64::INFINITY, false, Vec::new()));
        entry.0 = t.order.unwrap_or(f64::INFINITY);
        entry.1 = t.default_pass;
    }
    for (p, resolved) in selecting.into_iter().zip(&resolved) {
        let p = resolved.as_ref().unwrap_or(p);
        let tier = match p.kind {
            LayerKind::AdminNetworkPolicy => "adminnetworkpolicy",
            LayerKind::BaselineAdminNetworkPolicy => "baselineadminnetworkpolicy",
            LayerKind::NetworkPolicy => "default",
            _ => p.tier.as_deref().unwrap_or("default"),
        };
        match tiers.get_mut(tier) {
            Some(t) => t.2.push(p),
            None => reach.unreadable.push((
                p.reference.clone(),
                Unknown {
                    en: format!(
                        "its spec.tier {tier:?} names no Tier given, so where it is evaluated is unknown"
                    )
                    .into(),
                    zh: format!("其 spec.tier {tier:?} 指向的 Tier 不存在，无法确定其评估顺序").into(),
                },
            )),
        }
    }
    let mut ordered: Vec<(String, TierSlot<'_>)> = tiers.into_iter().collect();
    ordered.sort_by(|a, b| a.1.0.total_cmp(&b.1.0).then_with(|| a.0.cmp(&b.0)));
    let runs = ordered
        .into_iter()
        .map(|(name, (_, default_pass, mut policies))| {
            sort_by_order(&mut policies);
            TierRun {
                label: format!(
                    "Calico tier {name} (end of tier: {})",
                    if default_pass { "pass" } else { "deny" }
                )
                .into(),
                default_pass,
                policies,
            }
        })
        .collect();
    run_tiers(runs, reach)
}

/// The policies among `selecting` with a rule whose destination selects
/// network sets, with those rules resolved against `sets` (None for the
/// others, used as they are).
fn with_network_sets(
    selecting: &[&LayerPolicy],
    sets: &[NetworkSet],
    namespaces: &BTreeMap<String, BTreeMap<String, String>>,
) -> Vec<Option<LayerPolicy>> {
    let mut views: Option<Vec<SetView<'_>>> = None;
    selecting
        .iter()
        .map(|p| {
            // With no set, a rule's projected `nets` is already what it
            // reaches.
            if sets.is_empty() || p.rules.iter().all(|r| r.sets.is_none()) {
                return None;
            }
            let views = views.get_or_insert_with(|| {
                sets.iter()
                    .map(|set| SetView {
                        set,
                        labels: set.calico_labels(namespaces),
                    })
                    .collect()
            });
            // Cloned only when a rule selects or excludes some set: the
            // projected rules keep their shared address sets (and the
            // snapshot's answers judged in advance for them).
            let matches: Vec<Option<SetMatch<'_>>> = p
                .rules
                .iter()
                .map(|r| {
                    r.sets
                        .as_ref()
                        .map(|d| d.matching(views))
                        .filter(|m| !m.is_empty())
                })
                .collect();
            if matches.iter().all(Option::is_none) {
                return None;
            }
            let mut p = (*p).clone();
            for (r, matched) in p.rules.iter_mut().zip(&matches) {
                if let (Some(matched), Some(dest)) = (matched, r.sets.clone()) {
                    *r = dest.resolve_matched(r, matched);
                }
            }
            Some(p)
        })
        .collect()
}

/// Cilium: deny precedence over the union of allows, default-deny once a
/// policy with egress rules selects the pod (or always, or never).
pub fn cilium_reach(
    network_policies: &[&LayerPolicy],
    layers: &Layers,
    pod: &PodView<'_>,
    mode: CiliumEnforcement,
) -> Reach {
    let mut reach = Reach::default();
    if mode == CiliumEnforcement::Never {
        reach.default_allowed = (**EVERYWHERE).clone();
        return reach;
    }
    let relevant = layers.policies.iter().filter(|p| p.kind.is_cilium());
    let selecting = applying(
        relevant.chain(network_policies.iter().copied()),
        pod,
        &mut reach,
    );
    let default_deny =
        mode == CiliumEnforcement::Always || selecting.iter().any(|p| p.default_deny);
    reach.restricted = default_deny || !selecting.is_empty();
    reserve(&mut reach, selecting.iter().map(|p| p.rules.len()).sum());
    let mut denied = IpSet::new();
    for p in &selecting {
        for r in &p.rules {
            if r.action == RuleAction::Deny && !r.partial && r.unknown.is_none() {
                closed(
                    &mut reach,
                    p.reference.clone(),
                    Some(r.field.clone()),
                    "denied",
                    Arc::clone(&r.nets),
                );
                denied = denied.union(&r.nets);
            }
        }
    }
    for p in &selecting {
        for r in &p.rules {
            if r.action != RuleAction::Allow {
                continue;
            }
            domains_of(&mut reach, p, r);
            if r.unknown.is_some() {
                grant(&mut reach, p, r, Arc::new(IpSet::new()), false);
                continue;
            }
            // The rule's own set, shared, unless a deny takes part of it.
            let m = if r.nets.intersects(&denied) {
                Arc::new(r.nets.subtract(&denied))
            } else {
                Arc::clone(&r.nets)
            };
            let everything = r.everything && *m == **EVERYWHERE;
            grant(&mut reach, p, r, m, everything);
        }
    }
    if !default_deny {
        let rest = EVERYWHERE.subtract(&denied);
        closed(
            &mut reach,
            "Cilium's default allow (no policy selecting the pod enables egress default deny)"
                .into(),
            None,
            "defaultAllowed",
            Arc::new(rest.clone()),
        );
        reach.default_allowed = rest;
    }
    reach
}
