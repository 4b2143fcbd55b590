//! The network side of the snapshot: where addresses are (mainland-China
//! space, the cluster's own networks, countries), NetworkPolicies compiled
//! once to what egress analysis reads, and the index of NetworkPolicies and
//! ExternalName Services by namespace. Also what the API server would
//! refuse in a NetworkPolicy (`validate_network_policy`, for `check`).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::{Arc, LazyLock};

use ipnet::IpNet;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::networking::v1::{IPBlock, NetworkPolicy, NetworkPolicyPeer};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use super::ipset::{CountryTable, IpSet};
use super::ipset::{parse_cidr, parse_net};
use super::layers::{
    CiliumEnforcement, Cni, EVERYWHERE, EgressSemantics, LayerKind, LayerPolicy, LayerRule, Layers,
    RuleAction, Subject, Unknown,
};
use super::policy::PolicyProblem;
use super::projection::{
    admin_policy, calico_network_set, calico_policy, calico_tier, cilium_policies,
};
use super::selector::LabelSelectorMatcher;
use super::shared::Shared;
use super::text::Text;

/// The bundled mainland-China list (data/mainland-china.cidrs), header included.
pub const BUNDLED_MAINLAND_CIDRS: &str = include_str!("../../data/mainland-china.cidrs");
const COUNTRY_HINTS: &str = include_str!("../../data/country-hints.cidrs");

/// Where addresses are: mainland-China space, the cluster's own networks,
/// and a country table for evidence.
#[derive(Clone, Debug, Default)]
pub struct AddressSpace {
    pub mainland: IpSet,
    /// The cluster's pod and service CIDRs: in-cluster, never cross-border.
    pub cluster: IpSet,
    /// `mainland ∪ cluster`, precomputed for the hot path.
    pub(super) inside: IpSet,
    pub countries: CountryTable,
}

static BUILTIN_MAINLAND: LazyLock<IpSet> =
    // The bundled file is tested to parse; if it ever did not, an empty set
    // fails closed (no external address counts as mainland).
    LazyLock::new(|| IpSet::parse_list(BUNDLED_MAINLAND_CIDRS).unwrap_or_default());
static BUILTIN_COUNTRIES: LazyLock<CountryTable> =
    LazyLock::new(|| CountryTable::parse(COUNTRY_HINTS).unwrap_or_default());

impl AddressSpace {
    /// The bundled data (data/mainland-china.cidrs, see data/PROVENANCE.md).
    pub fn builtin() -> AddressSpace {
        AddressSpace::new(
            BUILTIN_MAINLAND.clone(),
            IpSet::new(),
            BUILTIN_COUNTRIES.clone(),
        )
    }

    pub fn builtin_mainland() -> &'static IpSet {
        &BUILTIN_MAINLAND
    }

    pub fn new(mainland: IpSet, cluster: IpSet, countries: CountryTable) -> AddressSpace {
        // Kept for the snapshot's life: a merge leaves spare capacity.
        let mut inside = mainland.union(&cluster);
        inside.shrink_to_fit();
        AddressSpace {
            mainland,
            cluster,
            inside,
            countries,
        }
    }

    pub fn with_cluster(self, cluster: IpSet) -> AddressSpace {
        AddressSpace::new(self.mainland, cluster, self.countries)
    }

    pub fn with_mainland(self, mainland: IpSet) -> AddressSpace {
        AddressSpace::new(mainland, self.cluster, self.countries)
    }

    pub(super) fn country(&self, addr: IpAddr) -> Option<String> {
        self.countries.lookup(addr).map(str::to_string)
    }
}

/// One egress peer of a NetworkPolicy rule. Texts for evidence are built
/// here, once per NetworkPolicy, not on every evaluation.
#[derive(Clone, Debug)]
pub(super) enum Peer {
    InCluster(Shared<str>),
    IpBlock {
        cidr: IpNet,
        except: Arc<[IpNet]>,
        text: Shared<str>,
        except_text: Shared<[String]>,
    },
    /// A peer the API server would reject (it never reaches the webhook
    /// or the watches; `check` refuses it as bad input); treated as
    /// reaching everything. Holds the complete reason given in evidence.
    Unreadable(Reason),
}

/// Why a rule reaches every destination, in both languages (evidence
/// carries the English; messages the reader's language).
#[derive(Clone, Debug)]
pub(super) struct Reason {
    pub(super) en: Shared<str>,
    pub(super) zh: Shared<str>,
}

#[derive(Clone, Debug)]
pub(super) struct Rule {
    /// None: no `to`, or an empty one — every destination.
    pub(super) peers: Option<Vec<Peer>>,
    /// `to: []` (rather than no `to` at all), for messages.
    pub(super) empty_to: bool,
}

/// How many evidence entries of each kind a policy contributes, so the
/// effective egress is allocated once at its final size.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct EvidenceCounts {
    pub(super) allow_all: usize,
    pub(super) in_cluster: usize,
    pub(super) blocks: usize,
}

pub(super) static NO_TO: LazyLock<Reason> = LazyLock::new(|| Reason {
    en: "the rule has no `to`, so it allows every destination".into(),
    zh: "该规则没有 `to`，因此允许访问任意目的地".into(),
});
pub(super) static EMPTY_TO: LazyLock<Reason> = LazyLock::new(|| {
    Reason {
    en: "the rule's `to` is an empty list (`to: []`), which, like a missing `to`, allows every destination".into(),
    zh: "该规则的 `to` 是空列表（`to: []`），与不写 `to` 一样允许访问任意目的地".into(),
}
});

/// A NetworkPolicy reduced to what egress analysis reads.
#[derive(Clone, Debug)]
pub struct CompiledNetworkPolicy {
    pub namespace: String,
    pub name: String,
    /// "NetworkPolicy ns/name", as evidence names it.
    pub(super) reference: Shared<str>,
    pod_selector: Option<LabelSelectorMatcher>,
    /// Effective policyTypes contains Egress.
    pub(super) isolates_egress: bool,
    pub(super) rules: Vec<Rule>,
    pub(super) counts: EvidenceCounts,
    /// What a near miss is made of (see `near_miss`): read only to write
    /// the message of a pod whose egress nothing isolates.
    pub(super) shape: Shape,
    /// The same policy in the layer model, for the other layers' orders.
    pub(super) layer: Arc<LayerPolicy>,
}

/// The parts of a NetworkPolicy that make it *almost* isolate egress.
#[derive(Clone, Debug, Default)]
pub(super) struct Shape {
    /// `spec.policyTypes`, when given and not empty.
    pub(super) policy_types: Option<Vec<String>>,
    /// `spec.egress`: None when absent, else its length.
    pub(super) egress_rules: Option<usize>,
    /// `spec.podSelector` as written, to quote it.
    pub(super) pod_selector: LabelSelector,
}

impl CompiledNetworkPolicy {
    pub fn from_k8s(np: &NetworkPolicy) -> CompiledNetworkPolicy {
        let spec = np.spec.clone().unwrap_or_default();
        // API defaulting: without policyTypes, Egress applies only when the
        // egress list is non-empty (`egress: []` alone does NOT isolate).
        let isolates_egress = match &spec.policy_types {
            Some(types) if !types.is_empty() => types.iter().any(|t| t == "Egress"),
            _ => spec.egress.as_ref().is_some_and(|e| !e.is_empty()),
        };
        let rules: Vec<Rule> = spec
            .egress
            .iter()
            .flatten()
            .map(|rule| Rule {
                peers: rule
                    .to
                    .as_ref()
                    .filter(|to| !to.is_empty())
                    .map(|to| to.iter().map(compile_peer).collect()),
                empty_to: rule.to.as_ref().is_some_and(Vec::is_empty),
            })
            .collect();
        let mut counts = EvidenceCounts::default();
        for rule in &rules {
            let Some(peers) = &rule.peers else {
                counts.allow_all += 1;
                continue;
            };
            for peer in peers {
                match peer {
                    Peer::InCluster(_) => counts.in_cluster += 1,
                    Peer::IpBlock { .. } => counts.blocks += 1,
                    Peer::Unreadable(_) => counts.allow_all += 1,
                }
            }
        }
        let namespace = np.metadata.namespace.clone().unwrap_or_default();
        let name = np.metadata.name.clone().unwrap_or_default();
        let mut compiled = CompiledNetworkPolicy {
            reference: format!("NetworkPolicy {namespace}/{name}").into(),
            namespace,
            name,
            // podSelector {} (or absent) selects every pod in the namespace.
            pod_selector: LabelSelectorMatcher::compile_lenient(
                &spec.pod_selector.clone().unwrap_or_default(),
            ),
            isolates_egress,
            rules,
            counts,
            layer: Arc::clone(&EMPTY_LAYER),
            shape: Shape {
                policy_types: spec.policy_types.clone().filter(|t| !t.is_empty()),
                egress_rules: spec.egress.as_ref().map(Vec::len),
                pod_selector: spec.pod_selector.clone().unwrap_or_default(),
            },
        };
        compiled.layer = Arc::new(network_policy_layer(
            &compiled,
            compiled.pod_selector.clone(),
        ));
        compiled
    }

    pub fn selects(&self, pod_labels: &BTreeMap<String, String>) -> bool {
        self.pod_selector
            .as_ref()
            .is_some_and(|s| s.matches(pod_labels))
    }

    pub fn reference(&self) -> &str {
        &self.reference
    }
}

fn compile_peer(peer: &NetworkPolicyPeer) -> Peer {
    // What the API server admitted is valid: the problems (and their
    // messages) are written only when it is not.
    let problems = if peer_is_valid(peer) {
        Vec::new()
    } else {
        peer_problems(peer, "")
    };
    if let Some(first) = problems.first() {
        let field = first.field.trim_start_matches('.');
        let at = |sep: &str| {
            if field.is_empty() {
                String::new()
            } else {
                format!("{field}{sep}")
            }
        };
        return Peer::Unreadable(Reason {
            en: format!(
                "{}{}; the API server would refuse this peer, and it is treated as allowing every destination",
                at(": "),
                first.message.en
            )
            .into(),
            zh: format!(
                "{}{}；API server 会拒绝该 peer，此处按允许访问任意目的地处理",
                at("："),
                first.message.zh
            )
            .into(),
        });
    }
    if let Some(block) = &peer.ip_block {
        // Validated above: both parse.
        let cidr = parse_cidr(&block.cidr);
        let except: Option<Vec<IpNet>> = block
            .except
            .iter()
            .flatten()
            .map(|e| parse_cidr(e))
            .collect();
        if let (Some(cidr), Some(except)) = (cidr, except) {
            return Peer::IpBlock {
                cidr,
                except_text: except
                    .iter()
                    .map(IpNet::to_string)
                    .collect::<Vec<_>>()
                    .into(),
                except: except.into(),
                text: block.cidr.as_str().into(),
            };
        }
    }
    let describe = |present: bool, what: &str| present.then(|| what.to_string());
    let parts: Vec<String> = [
        describe(peer.namespace_selector.is_some(), "namespaceSelector"),
        describe(peer.pod_selector.is_some(), "podSelector"),
    ]
    .into_iter()
    .flatten()
    .collect();
    Peer::InCluster(parts.join("+").into())
}

fn cidr_problem(field: String, text: &str, what: &str) -> PolicyProblem {
    let (en, zh) = if text.trim().is_empty() {
        (
            format!("{what} is required (e.g. 203.0.113.0/24)"),
            format!("必须填写 {what}（例如 203.0.113.0/24）"),
        )
    } else if let Ok(addr) = text.trim().parse::<IpAddr>() {
        let one = IpNet::from(addr);
        (
            format!("{text:?} is an address, not a CIDR: write {one} for that one address"),
            format!("{text:?} 是地址而不是 CIDR：单个地址请写成 {one}"),
        )
    } else {
        (
            format!(
                "{text:?} is not a valid CIDR (an address, '/' and a prefix length, e.g. 203.0.113.0/24 or 240e::/20)"
            ),
            format!(
                "{text:?} 不是有效的 CIDR（地址、'/' 和前缀长度，例如 203.0.113.0/24 或 240e::/20）"
            ),
        )
    };
    PolicyProblem {
        field,
        message: Text { en, zh },
    }
}

/// What the API server refuses in an ipBlock (`cidr` a CIDR; every
/// `except` a CIDR strictly inside it), under `at` (e.g. `.ipBlock`).
fn ip_block_problems(block: &IPBlock, at: &str) -> Vec<PolicyProblem> {
    let mut problems = Vec::new();
    let Some(cidr) = parse_cidr(&block.cidr) else {
        problems.push(cidr_problem(format!("{at}.cidr"), &block.cidr, "cidr"));
        return problems;
    };
    for (i, text) in block.except.iter().flatten().enumerate() {
        let field = format!("{at}.except[{i}]");
        match parse_cidr(text) {
            None => problems.push(cidr_problem(field, text, "except")),
            Some(e) if !(cidr.contains(&e) && e.prefix_len() > cidr.prefix_len()) => {
                problems.push(PolicyProblem {
                    field,
                    message: Text {
                        en: format!(
                            "{text:?} must be a strict subset of cidr {}: an except lies inside the cidr and is smaller than it",
                            block.cidr
                        ),
                        zh: format!(
                            "{text:?} 必须是 cidr {} 的真子集：except 必须位于 cidr 之内且比它小",
                            block.cidr
                        ),
                    },
                });
            }
            Some(_) => {}
        }
    }
    problems
}

/// `peer_problems(peer, ..)` is empty, without writing any message.
fn peer_is_valid(peer: &NetworkPolicyPeer) -> bool {
    let selectors_ok = [&peer.pod_selector, &peer.namespace_selector]
        .into_iter()
        .flatten()
        .all(LabelSelectorMatcher::is_valid);
    let shape_ok = match &peer.ip_block {
        Some(_) => peer.pod_selector.is_none() && peer.namespace_selector.is_none(),
        None => peer.pod_selector.is_some() || peer.namespace_selector.is_some(),
    };
    let block_ok = peer.ip_block.as_ref().is_none_or(|block| {
        parse_cidr(&block.cidr).is_some_and(|cidr| {
            block.except.iter().flatten().all(|e| {
                parse_cidr(e)
                    .is_some_and(|e| cidr.contains(&e) && e.prefix_len() > cidr.prefix_len())
            })
        })
    });
    selectors_ok && shape_ok && block_ok
}

/// What the API server refuses in one peer, under `at`.
fn peer_problems(peer: &NetworkPolicyPeer, at: &str) -> Vec<PolicyProblem> {
    let mut problems = Vec::new();
    let selector = |sel: &Option<LabelSelector>, name: &str, problems: &mut Vec<PolicyProblem>| {
        if let Some(Err(found)) = sel.as_ref().map(LabelSelectorMatcher::compile) {
            problems.extend(found.into_iter().map(|p| PolicyProblem {
                field: format!("{at}.{name}.{}", p.field),
                message: p.message,
            }));
        }
    };
    selector(&peer.pod_selector, "podSelector", &mut problems);
    selector(&peer.namespace_selector, "namespaceSelector", &mut problems);
    if let Some(block) = &peer.ip_block {
        problems.extend(ip_block_problems(block, &format!("{at}.ipBlock")));
        if peer.pod_selector.is_some() || peer.namespace_selector.is_some() {
            problems.push(PolicyProblem {
                field: at.to_string(),
                message: Text {
                    en: "a peer may not set both ipBlock and a selector: make them two peers"
                        .into(),
                    zh: "一个 peer 不能同时设置 ipBlock 和选择器：请拆成两个 peer".into(),
                },
            });
        }
    } else if peer.pod_selector.is_none() && peer.namespace_selector.is_none() {
        problems.push(PolicyProblem {
            field: at.to_string(),
            message: Text {
                en: "a peer must set podSelector, namespaceSelector or ipBlock".into(),
                zh: "peer 必须设置 podSelector、namespaceSelector 或 ipBlock 之一".into(),
            },
        });
    }
    problems
}

/// What the API server would refuse in a NetworkPolicy, among the fields
/// this engine reads: `podSelector`, `policyTypes`, and every peer of
/// `egress` and `ingress` (selectors, ipBlocks). `check` reports these as
/// bad input (exit 2) instead of guessing what the policy means; in a
/// cluster such an object never exists.
pub fn validate_network_policy(np: &NetworkPolicy) -> Vec<PolicyProblem> {
    let mut problems = Vec::new();
    let Some(spec) = &np.spec else {
        return problems;
    };
    if let Some(Err(found)) = spec
        .pod_selector
        .as_ref()
        .map(LabelSelectorMatcher::compile)
    {
        problems.extend(found.into_iter().map(|p| PolicyProblem {
            field: format!("spec.podSelector.{}", p.field),
            message: p.message,
        }));
    }
    let types = spec.policy_types.as_deref().unwrap_or_default();
    for (i, t) in types.iter().enumerate() {
        if t != "Ingress" && t != "Egress" {
            problems.push(PolicyProblem {
                field: format!("spec.policyTypes[{i}]"),
                message: Text {
                    en: format!("{t:?} is not a policy type: use Ingress and/or Egress"),
                    zh: format!("{t:?} 不是有效的策略类型：只能是 Ingress 和/或 Egress"),
                },
            });
        }
    }
    if types.len() > 2 {
        problems.push(PolicyProblem {
            field: "spec.policyTypes".into(),
            message: Text {
                en: "may not list more than two policy types".into(),
                zh: "最多只能列出两种策略类型".into(),
            },
        });
    }
    for (r, rule) in spec.egress.iter().flatten().enumerate() {
        for (p, peer) in rule.to.iter().flatten().enumerate() {
            problems.extend(peer_problems(peer, &format!("spec.egress[{r}].to[{p}]")));
        }
    }
    for (r, rule) in spec.ingress.iter().flatten().enumerate() {
        for (p, peer) in rule.from.iter().flatten().enumerate() {
            problems.extend(peer_problems(peer, &format!("spec.ingress[{r}].from[{p}]")));
        }
    }
    problems
}

/// The layer kind of an object (None: not a layer policy; a Calico Tier
/// is not a policy).
pub fn layer_kind(api_version: &str, kind: &str) -> Option<LayerKind> {
    let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
    Some(match (group, kind) {
        ("cilium.io", "CiliumNetworkPolicy") => LayerKind::CiliumNetworkPolicy,
        ("cilium.io", "CiliumClusterwideNetworkPolicy") => {
            LayerKind::CiliumClusterwideNetworkPolicy
        }
        ("crd.projectcalico.org", "NetworkPolicy") => LayerKind::CalicoNetworkPolicy,
        ("crd.projectcalico.org", "GlobalNetworkPolicy") => LayerKind::GlobalNetworkPolicy,
        ("policy.networking.k8s.io", "AdminNetworkPolicy") => LayerKind::AdminNetworkPolicy,
        ("policy.networking.k8s.io", "BaselineAdminNetworkPolicy") => {
            LayerKind::BaselineAdminNetworkPolicy
        }
        _ => return None,
    })
}

/// A placeholder while a NetworkPolicy's layer form is built.
static EMPTY_LAYER: LazyLock<Arc<LayerPolicy>> = LazyLock::new(|| {
    Arc::new(LayerPolicy {
        kind: LayerKind::NetworkPolicy,
        namespace: None,
        name: String::new(),
        reference: "".into(),
        subject: Subject::Labels {
            namespace: None,
            namespaces: None,
            pods: None,
            cilium_view: false,
        },
        egress: false,
        default_deny: false,
        order: None,
        tier: None,
        rules: Vec::new(),
    })
});

/// NetworkPolicies and ExternalName Services, by namespace; the other
/// policy layers (Cilium, Calico, AdminNetworkPolicy) and the semantics
/// they are combined under.
#[derive(Clone, Debug, Default)]
pub struct NetworkIndex {
    policies: BTreeMap<String, Vec<CompiledNetworkPolicy>>,
    pub(super) external_names: BTreeMap<String, Vec<(String, String)>>,
    /// Shared when a snapshot is cloned or focused: cluster-wide kinds
    /// apply to every namespace.
    pub(super) layers: Arc<Layers>,
    pub(super) semantics: EgressSemantics,
    /// The semantics were set (a flag or Helm value), rather than left to
    /// be detected from the kinds present.
    semantics_chosen: bool,
}

impl NetworkIndex {
    pub fn add_network_policy(&mut self, np: &NetworkPolicy) {
        let c = CompiledNetworkPolicy::from_k8s(np);
        self.policies
            .entry(c.namespace.clone())
            .or_default()
            .push(c);
    }

    /// Services of type ExternalName send traffic to a DNS name that
    /// NetworkPolicy cannot see; they are reported as unverifiable.
    pub fn add_service(&mut self, svc: &Service) {
        let Some(spec) = &svc.spec else { return };
        if spec.type_.as_deref() != Some("ExternalName") {
            return;
        }
        let ns = svc
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        let name = svc.metadata.name.clone().unwrap_or_default();
        let target = spec.external_name.clone().unwrap_or_default();
        self.external_names
            .entry(ns)
            .or_default()
            .push((name, target));
    }

    /// Every NetworkPolicy of every namespace, in the layer model.
    pub(super) fn network_policy_layers(&self) -> impl Iterator<Item = &LayerPolicy> {
        self.policies.values().flatten().map(|np| &*np.layer)
    }

    pub fn policies_in(&self, namespace: &str) -> &[CompiledNetworkPolicy] {
        self.policies
            .get(namespace)
            .map(Vec::as_slice)
            .unwrap_or_default()
    }
}

impl NetworkIndex {
    /// The part of the index about one namespace (for a snapshot focused
    /// on it: nothing else is read when judging its workloads).
    pub fn namespace_only(&self, namespace: &str) -> NetworkIndex {
        let mut out = NetworkIndex {
            layers: Arc::clone(&self.layers),
            semantics: self.semantics,
            semantics_chosen: self.semantics_chosen,
            ..NetworkIndex::default()
        };
        if let Some(p) = self.policies.get(namespace) {
            out.policies.insert(namespace.to_string(), p.clone());
        }
        if let Some(e) = self.external_names.get(namespace) {
            out.external_names.insert(namespace.to_string(), e.clone());
        }
        out
    }

    /// Replace every NetworkPolicy of `namespace` with `policies`.
    pub fn replace_network_policies(&mut self, namespace: &str, policies: &[NetworkPolicy]) {
        self.policies.remove(namespace);
        for np in policies {
            let mut np = np.clone();
            np.metadata.namespace = Some(namespace.to_string());
            self.add_network_policy(&np);
        }
    }

    /// Forget a NetworkPolicy (before replacing it, or on delete).
    pub fn remove_network_policy(&mut self, namespace: &str, name: &str) {
        if let Some(list) = self.policies.get_mut(namespace) {
            list.retain(|p| p.name != name);
        }
    }

    /// The semantics egress is judged under.
    pub fn semantics(&self) -> EgressSemantics {
        self.semantics
    }

    pub fn set_semantics(&mut self, semantics: EgressSemantics) {
        self.semantics = semantics;
        self.semantics_chosen = true;
    }

    /// Set only Cilium's enforcement mode, leaving the CNI to detection.
    pub fn set_cilium_enforcement(&mut self, mode: CiliumEnforcement) {
        self.semantics.cilium_enforcement = mode;
    }

    pub fn semantics_chosen(&self) -> bool {
        self.semantics_chosen
    }

    /// The CNI the policy kinds present imply: Cilium's kinds, Calico's, or
    /// neither (Kubernetes). Both: Err, the caller must be told which.
    pub fn detect_cni(&self) -> Result<Cni, (usize, usize)> {
        let cilium = self
            .layers
            .policies
            .iter()
            .filter(|p| p.kind.is_cilium())
            .count();
        let calico = self
            .layers
            .policies
            .iter()
            .filter(|p| p.kind.is_calico())
            .count()
            + self.layers.tiers.len()
            + self.layers.network_sets.len();
        match (cilium, calico) {
            (0, 0) => Ok(Cni::Kubernetes),
            (_, 0) => Ok(Cni::Cilium),
            (0, _) => Ok(Cni::Calico),
            both => Err(both),
        }
    }

    /// The other layers' policies.
    pub fn layers(&self) -> &Layers {
        &self.layers
    }

    /// Change the other layers' policies (copied if shared).
    pub fn layers_mut(&mut self) -> &mut Layers {
        Arc::make_mut(&mut self.layers)
    }

    /// Add a policy of another layer (or a Calico Tier, NetworkSet or
    /// GlobalNetworkSet) from its object:
    /// `apiVersion` and `kind` say which. Returns false for a kind that is
    /// not a policy layer.
    pub fn add_layer_object(
        &mut self,
        api_version: &str,
        kind: &str,
        obj: &serde_json::Value,
    ) -> bool {
        let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
        let layers = self.layers_mut();
        match (group, kind) {
            ("cilium.io", "CiliumNetworkPolicy" | "CiliumClusterwideNetworkPolicy") => {
                let clusterwide = kind == "CiliumClusterwideNetworkPolicy";
                let projected = cilium_policies(obj, clusterwide);
                if let Some(first) = projected.first() {
                    let (k, ns, name) = (first.kind, first.namespace.clone(), first.name.clone());
                    layers.remove(k, ns.as_deref(), &name);
                }
                layers.policies.extend(projected);
            }
            ("crd.projectcalico.org", "NetworkPolicy") => layers.upsert(calico_policy(obj, false)),
            ("crd.projectcalico.org", "GlobalNetworkPolicy") => {
                layers.upsert(calico_policy(obj, true))
            }
            ("crd.projectcalico.org", "Tier") => {
                let (name, tier) = calico_tier(obj);
                layers.set_tier(&name, tier);
            }
            ("crd.projectcalico.org", "NetworkSet" | "GlobalNetworkSet") => {
                layers.upsert_network_set(calico_network_set(obj, kind == "GlobalNetworkSet"));
            }
            ("policy.networking.k8s.io", "AdminNetworkPolicy") => {
                layers.upsert(admin_policy(obj, false))
            }
            ("policy.networking.k8s.io", "BaselineAdminNetworkPolicy") => {
                layers.upsert(admin_policy(obj, true))
            }
            _ => return false,
        }
        true
    }

    /// Forget a policy of another layer (or a Calico Tier).
    pub fn remove_layer_object(
        &mut self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
    ) {
        let Some(layer) = layer_kind(api_version, kind) else {
            let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
            match (group, kind) {
                ("crd.projectcalico.org", "Tier") => {
                    self.layers_mut().tiers.remove(name);
                }
                ("crd.projectcalico.org", "NetworkSet") => self
                    .layers_mut()
                    .remove_network_set(Some(namespace.unwrap_or("default")), name),
                ("crd.projectcalico.org", "GlobalNetworkSet") => {
                    self.layers_mut().remove_network_set(None, name)
                }
                _ => {}
            }
            return;
        };
        let namespace = if layer.namespaced_layer() {
            namespace.or(Some("default"))
        } else {
            None
        };
        self.layers_mut().remove(layer, namespace, name);
    }

    /// Forget an ExternalName Service.
    pub fn remove_service(&mut self, namespace: &str, name: &str) {
        if let Some(list) = self.external_names.get_mut(namespace) {
            list.retain(|(n, _)| n != name);
        }
    }
}

/// A CIDR given on the command line or in values that is not one.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a CIDR or an IP address")]
pub struct CidrError(pub String);

/// Parse a list of CIDRs given on the command line or in values.
pub fn parse_cidr_args(items: &[String]) -> Result<IpSet, CidrError> {
    let mut nets = Vec::new();
    for item in items {
        for part in item.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            nets.push(parse_net(part).map_err(|_| CidrError(part.to_string()))?);
        }
    }
    Ok(IpSet::from_nets(nets))
}

/// A Kubernetes NetworkPolicy in the layer model: one Allow rule per ipBlock
/// peer (and per rule that allows every destination).
fn network_policy_layer(
    np: &CompiledNetworkPolicy,
    pod_selector: Option<LabelSelectorMatcher>,
) -> LayerPolicy {
    let mut rules = Vec::new();
    for (r, rule) in np.rules.iter().enumerate() {
        let Some(peers) = &rule.peers else {
            rules.push(LayerRule {
                action: RuleAction::Allow,
                nets: Arc::clone(&EVERYWHERE),
                everything: true,
                partial: false,
                domains: Vec::new(),
                unknown: None,
                index: r,
                field: format!("spec.egress[{r}]").into(),
                text: if rule.empty_to { "to: []" } else { "no to" }.into(),
                sets: None,
            });
            continue;
        };
        for (p, peer) in peers.iter().enumerate() {
            let field = format!("spec.egress[{r}].to[{p}]");
            match peer {
                Peer::InCluster(_) => {}
                Peer::IpBlock {
                    cidr, except, text, ..
                } => {
                    let set = IpSet::from_nets([*cidr])
                        .subtract(&IpSet::from_nets(except.iter().copied()));
                    rules.push(LayerRule {
                        action: RuleAction::Allow,
                        nets: Arc::new(set),
                        everything: false,
                        partial: false,
                        domains: Vec::new(),
                        unknown: None,
                        index: r,
                        field: format!("{field}.ipBlock").into(),
                        text: text.clone(),
                        sets: None,
                    });
                }
                Peer::Unreadable(reason) => rules.push(LayerRule {
                    action: RuleAction::Allow,
                    nets: Arc::new(IpSet::new()),
                    everything: false,
                    partial: false,
                    domains: Vec::new(),
                    unknown: Some(Unknown {
                        en: reason.en.clone(),
                        zh: reason.zh.clone(),
                    }),
                    index: r,
                    field: field.into(),
                    text: "unreadable peer".into(),
                    sets: None,
                }),
            }
        }
    }
    let selects_some = np.isolates_egress && pod_selector.is_some();
    LayerPolicy {
        kind: LayerKind::NetworkPolicy,
        namespace: Some(np.namespace.clone()),
        name: np.name.clone(),
        reference: np.reference.clone(),
        subject: Subject::Labels {
            namespace: Some(np.namespace.clone()),
            namespaces: None,
            pods: pod_selector,
            cilium_view: false,
        },
        // A podSelector that cannot be compiled selects nothing, as in
        // `CompiledNetworkPolicy::selects`.
        egress: selects_some,
        default_deny: selects_some,
        order: Some(super::layers::K8S_NP_ORDER_IN_CALICO),
        tier: None,
        rules,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(json: serde_json::Value) -> NetworkPolicyPeer {
        serde_json::from_value(json).unwrap()
    }

    /// The allocation-free check and the problem list agree, so a valid
    /// peer never pays for messages and an invalid one always gets them.
    #[test]
    fn peer_validity_agrees_with_its_problems() {
        use serde_json::json;
        let peers = [
            json!({"ipBlock": {"cidr": "10.0.0.0/8"}}),
            json!({"ipBlock": {"cidr": "010.0.0.0/8"}}),
            json!({"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}}),
            json!({"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.0.0.0/8"]}}),
            json!({"ipBlock": {"cidr": "10.0.0.0/8", "except": ["11.0.0.0/16"]}}),
            json!({"ipBlock": {"cidr": "300.0.0.0/8"}}),
            json!({"ipBlock": {"cidr": "8.8.8.8"}}),
            json!({"ipBlock": {"cidr": ""}}),
            json!({"ipBlock": {"cidr": "::/0"}}),
            json!({"ipBlock": {"cidr": "1.2.3.0/24"}, "podSelector": {}}),
            json!({}),
            json!({"podSelector": {}}),
            json!({"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "x"}}}),
            json!({"namespaceSelector": {"matchLabels": {"bad key!": "x"}}}),
            json!({"podSelector": {"matchExpressions": [{"key": "a", "operator": "In"}]}}),
        ];
        for p in peers {
            let compiled = peer(p.clone());
            assert_eq!(
                peer_is_valid(&compiled),
                peer_problems(&compiled, "").is_empty(),
                "{p}"
            );
        }
    }

    #[test]
    fn cidrs_parse_as_the_api_server_reads_them() {
        assert_eq!(parse_cidr("10.1.2.3/8"), "10.0.0.0/8".parse().ok());
        assert_eq!(parse_cidr("010.001.0.0/16"), "10.1.0.0/16".parse().ok());
        assert_eq!(parse_cidr("240e::/20"), "240e::/20".parse().ok());
        for bad in [
            "",
            "8.8.8.8",
            "/8",
            "10.0.0.0/",
            "10.0.0.0/33",
            "300.0.0.0/8",
            "1.2.3/8",
            "::/129",
            "10.0.0.0/+8",
        ] {
            assert_eq!(parse_cidr(bad), None, "{bad:?}");
        }
    }
}
