//! Egress: "nothing this pod can reach is outside mainland China".
//!
//! Kubernetes NetworkPolicy is allow-list and additive. A pod selected by no
//! policy that isolates egress can reach anything; otherwise it reaches the
//! union of the egress rules of every policy in its namespace that selects
//! it. Peers by pod/namespace selector are in-cluster; an ipBlock reaches its
//! cidr minus except; a rule with no `to` reaches everything. hostNetwork
//! pods bypass NetworkPolicy altogether.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::{Arc, LazyLock};

use ipnet::IpNet;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::networking::v1::{NetworkPolicy, NetworkPolicyPeer};
use serde::Serialize;

pub use super::shared::Shared;

use super::classify::MessageContext;
use super::ipset::{CountryTable, IpSet, net_minus_excepts_subset};
use super::policy::{CompiledPolicy, parse_net};
use super::selector::LabelSelectorMatcher;
use super::verdict::{Code, Evidence, Notice, Text, Violation};
use super::{Snapshot, Workload};
use crate::api::{DATA_CLASS_LABEL, EgressMode};

const MAINLAND_CIDRS: &str = include_str!("../../data/mainland-china.cidrs");
const COUNTRY_HINTS: &str = include_str!("../../data/country-hints.cidrs");

/// Where addresses are: mainland-China space, the cluster's own networks,
/// and a country table for evidence.
#[derive(Clone, Debug, Default)]
pub struct AddressSpace {
    pub mainland: IpSet,
    /// The cluster's pod and service CIDRs: in-cluster, never cross-border.
    pub cluster: IpSet,
    /// `mainland ∪ cluster`, precomputed for the hot path.
    inside: IpSet,
    pub countries: CountryTable,
}

static BUILTIN_MAINLAND: LazyLock<IpSet> =
    // The bundled file is tested to parse; if it ever did not, an empty set
    // fails closed (no external address counts as mainland).
    LazyLock::new(|| IpSet::parse_list(MAINLAND_CIDRS).unwrap_or_default());
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

    fn country(&self, addr: IpAddr) -> Option<String> {
        self.countries.lookup(addr).map(str::to_string)
    }
}

/// One egress peer of a NetworkPolicy rule. Texts for evidence are built
/// here, once per NetworkPolicy, not on every evaluation.
#[derive(Clone, Debug)]
enum Peer {
    InCluster(Shared<str>),
    IpBlock {
        cidr: IpNet,
        except: Arc<[IpNet]>,
        text: Shared<str>,
        except_text: Shared<[String]>,
    },
    /// A peer the API server would reject; treated as reaching everything.
    /// Holds the complete reason given in evidence.
    Unreadable(Shared<str>),
}

#[derive(Clone, Debug)]
struct Rule {
    /// None: no `to` (or an empty one) — every destination.
    peers: Option<Vec<Peer>>,
}

/// How many evidence entries of each kind a policy contributes, so the
/// effective egress is allocated once at its final size.
#[derive(Clone, Copy, Debug, Default)]
struct EvidenceCounts {
    allow_all: usize,
    in_cluster: usize,
    blocks: usize,
}

static EVERY_DESTINATION: LazyLock<Shared<str>> =
    LazyLock::new(|| "the rule has no `to`, so it allows every destination".into());

/// A NetworkPolicy reduced to what egress analysis reads.
#[derive(Clone, Debug)]
pub struct CompiledNetworkPolicy {
    pub namespace: String,
    pub name: String,
    /// "NetworkPolicy ns/name", as evidence names it.
    reference: Shared<str>,
    pod_selector: Option<LabelSelectorMatcher>,
    /// Effective policyTypes contains Egress.
    isolates_egress: bool,
    rules: Vec<Rule>,
    counts: EvidenceCounts,
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
        CompiledNetworkPolicy {
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
        }
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
    if let Some(block) = &peer.ip_block {
        let cidr = block.cidr.parse::<IpNet>().map(|n| n.trunc());
        let except: Result<Vec<IpNet>, _> = block
            .except
            .iter()
            .flatten()
            .map(|e| e.parse::<IpNet>().map(|n| n.trunc()))
            .collect();
        return match (cidr, except) {
            (Ok(cidr), Ok(except)) => Peer::IpBlock {
                cidr,
                except_text: except
                    .iter()
                    .map(IpNet::to_string)
                    .collect::<Vec<_>>()
                    .into(),
                except: except.into(),
                text: block.cidr.as_str().into(),
            },
            _ => unreadable(format!("ipBlock {:?} does not parse", block.cidr)),
        };
    }
    match (&peer.namespace_selector, &peer.pod_selector) {
        (None, None) => unreadable("a peer with no selector and no ipBlock"),
        (ns, pods) => {
            let describe = |s: &Option<_>, what: &str| s.as_ref().map(|_| what.to_string());
            let parts: Vec<String> = [
                describe(ns, "namespaceSelector"),
                describe(pods, "podSelector"),
            ]
            .into_iter()
            .flatten()
            .collect();
            Peer::InCluster(parts.join("+").into())
        }
    }
}

fn unreadable(why: impl std::fmt::Display) -> Peer {
    Peer::Unreadable(format!("{why}; treated as allowing every destination").into())
}

/// NetworkPolicies and ExternalName Services, by namespace.
#[derive(Clone, Debug, Default)]
pub struct NetworkIndex {
    policies: BTreeMap<String, Vec<CompiledNetworkPolicy>>,
    external_names: BTreeMap<String, Vec<(String, String)>>,
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

    pub fn policies_in(&self, namespace: &str) -> &[CompiledNetworkPolicy] {
        self.policies
            .get(namespace)
            .map(Vec::as_slice)
            .unwrap_or_default()
    }
}

/// The pod's effective egress, as evidence for auditors.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EffectiveEgress {
    pub host_network: bool,
    /// Some NetworkPolicy with Egress in its policyTypes selects the pod.
    pub isolated: bool,
    pub selecting_policies: Vec<Shared<str>>,
    /// Rules that reach every destination.
    pub allow_all_rules: Vec<RuleRef>,
    pub in_cluster_peers: Vec<PeerRef>,
    pub external_blocks: Vec<ExternalBlock>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RuleRef {
    pub network_policy: Shared<str>,
    pub rule: usize,
    /// Why it reaches everything.
    pub reason: Shared<str>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PeerRef {
    pub network_policy: Shared<str>,
    pub rule: usize,
    pub peer: usize,
    pub selector: Shared<str>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ExternalBlock {
    pub network_policy: Shared<str>,
    pub rule: usize,
    pub peer: usize,
    pub cidr: Shared<str>,
    #[serde(skip_serializing_if = "no_excepts")]
    pub except: Shared<[String]>,
    /// Entirely inside mainland-China space or the cluster's own networks.
    pub mainland: bool,
    /// Entirely inside the cluster's own networks.
    pub in_cluster: bool,
    /// An address it reaches outside mainland China, and its country.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub example_outside: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub country: Option<String>,
    #[serde(skip)]
    net: Option<(IpNet, Arc<[IpNet]>)>,
}

fn no_excepts(except: &Shared<[String]>) -> bool {
    except.is_empty()
}

/// Structured evidence of one egress violation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EgressEvidence {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network_policy: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cidr: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub example_outside: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub country: Option<String>,
}

/// Compute what the workload's pods can reach. Policy-independent, so it is
/// computed once per workload.
pub fn effective_egress(workload: &Workload, snapshot: &Snapshot) -> EffectiveEgress {
    let space = &snapshot.address_space;
    let mut eff = EffectiveEgress {
        host_network: workload.pod.host_network == Some(true),
        ..EffectiveEgress::default()
    };
    let selecting: Vec<&CompiledNetworkPolicy> = snapshot
        .network
        .policies_in(&workload.namespace)
        .iter()
        .filter(|np| np.isolates_egress && np.selects(&workload.template_labels))
        .collect();
    // Allocate the evidence once at its final size.
    let total = selecting
        .iter()
        .fold(EvidenceCounts::default(), |t, np| EvidenceCounts {
            allow_all: t.allow_all + np.counts.allow_all,
            in_cluster: t.in_cluster + np.counts.in_cluster,
            blocks: t.blocks + np.counts.blocks,
        });
    eff.isolated = !selecting.is_empty();
    eff.selecting_policies.reserve_exact(selecting.len());
    eff.allow_all_rules.reserve_exact(total.allow_all);
    eff.in_cluster_peers.reserve_exact(total.in_cluster);
    eff.external_blocks.reserve_exact(total.blocks);
    for np in selecting {
        eff.selecting_policies.push(np.reference.clone());
        for (r, rule) in np.rules.iter().enumerate() {
            let Some(peers) = &rule.peers else {
                eff.allow_all_rules.push(RuleRef {
                    network_policy: np.reference.clone(),
                    rule: r,
                    reason: EVERY_DESTINATION.clone(),
                });
                continue;
            };
            for (p, peer) in peers.iter().enumerate() {
                match peer {
                    Peer::InCluster(sel) => eff.in_cluster_peers.push(PeerRef {
                        network_policy: np.reference.clone(),
                        rule: r,
                        peer: p,
                        selector: sel.clone(),
                    }),
                    Peer::Unreadable(reason) => eff.allow_all_rules.push(RuleRef {
                        network_policy: np.reference.clone(),
                        rule: r,
                        reason: reason.clone(),
                    }),
                    Peer::IpBlock {
                        cidr,
                        except,
                        text,
                        except_text,
                    } => {
                        let mainland = net_minus_excepts_subset(*cidr, except, &space.inside);
                        let in_cluster = net_minus_excepts_subset(*cidr, except, &space.cluster);
                        let example = (!mainland)
                            .then(|| first_outside(*cidr, except, &space.inside))
                            .flatten();
                        eff.external_blocks.push(ExternalBlock {
                            network_policy: np.reference.clone(),
                            rule: r,
                            peer: p,
                            cidr: text.clone(),
                            except: except_text.clone(),
                            mainland,
                            in_cluster,
                            country: example.and_then(|a| space.country(a)),
                            example_outside: example.map(|a| a.to_string()),
                            net: Some((*cidr, Arc::clone(except))),
                        });
                    }
                }
            }
        }
    }
    eff
}

fn first_outside(cidr: IpNet, except: &[IpNet], of: &IpSet) -> Option<IpAddr> {
    IpSet::from_nets([cidr])
        .subtract(&IpSet::from_nets(except.iter().copied()))
        .first_outside(of)
}

/// Judge the effective egress under one policy's egress mode.
pub(crate) fn check(
    eff: &EffectiveEgress,
    policy: &CompiledPolicy,
    snapshot: &Snapshot,
    ctx: &MessageContext<'_>,
) -> Vec<Violation> {
    let mode = policy.egress_mode;
    if mode == EgressMode::Unrestricted {
        return Vec::new();
    }
    let p = ctx.policy;
    let (rule_en, rule_zh) = match mode {
        EgressMode::ClusterOnly => (
            "allows no egress outside the cluster",
            "禁止访问集群外的任何地址",
        ),
        _ => (
            "allows egress only to mainland China",
            "只允许访问中国大陆境内的地址",
        ),
    };
    // A fix that ends in a YAML example gets no closing full stop.
    let stop = |fix: &str, mark: &'static str| if fix.ends_with(['}', ']']) { "" } else { mark };
    // The subject only when there is a violation: most checks find none.
    // The texts are written only when the caller wants messages.
    let lead = |texts: &dyn Fn() -> (String, String, String, String)| {
        if !ctx.render {
            return Text::default();
        }
        let (en, zh, fix_en, fix_zh) = texts();
        let subject = ctx.subject();
        Text {
            en: format!(
                "{} and policy {p} {rule_en}, but {en}. Fix: {fix_en}{}",
                subject.en,
                stop(&fix_en, ".")
            ),
            zh: format!(
                "{}，策略 {p} {rule_zh}，但 {zh}。修复：{fix_zh}{}",
                subject.zh,
                stop(&fix_zh, "。")
            ),
        }
    };
    let no_evidence = EgressEvidence {
        network_policy: None,
        rule: None,
        cidr: None,
        example_outside: None,
        country: None,
    };
    let mut out = Vec::new();
    let prefix = ctx.workload.pod_spec_path();

    if eff.host_network {
        out.push(Violation {
            code: Code::HostNetwork,
            field: format!("{prefix}.hostNetwork"),
            evidence: Evidence::Egress(no_evidence.clone()),
            message: lead(&|| {
                (
                    format!(
                        "{prefix}.hostNetwork is true, and host-network pods bypass every NetworkPolicy"
                    ),
                    format!("{prefix}.hostNetwork 为 true，主机网络 Pod 不受任何 NetworkPolicy 约束"),
                    "remove hostNetwork: true".into(),
                    "删除 hostNetwork: true".into(),
                )
            }),
            exempted: false,
        });
    }

    if !eff.isolated {
        out.push(Violation {
            code: Code::EgressUnrestricted,
            field: format!("NetworkPolicy in namespace {}", ctx.workload.namespace),
            evidence: Evidence::Egress(no_evidence),
            message: lead(&|| {
                let example = isolating_policy_example(ctx.workload);
                (
                    format!(
                        "no NetworkPolicy with Egress in its policyTypes selects its pods in namespace {}, so they can reach any address",
                        ctx.workload.namespace
                    ),
                    format!(
                        "命名空间 {} 中没有任何 policyTypes 含 Egress 的 NetworkPolicy 选中其 Pod，因此可以访问任意地址",
                        ctx.workload.namespace
                    ),
                    format!("apply a NetworkPolicy that isolates egress, for example:\n{example}"),
                    format!("应用一个限制出站流量的 NetworkPolicy，例如：\n{example}"),
                )
            }),
            exempted: false,
        });
        return out;
    }

    for r in &eff.allow_all_rules {
        out.push(Violation {
            code: Code::EgressAllowsAll,
            field: format!("{} spec.egress[{}]", r.network_policy, r.rule),
            evidence: Evidence::Egress(EgressEvidence {
                network_policy: Some(r.network_policy.to_string()),
                rule: Some(r.rule),
                cidr: None,
                example_outside: None,
                country: None,
            }),
            message: lead(&|| {
                (
                    format!(
                        "rule {} of {} reaches every destination: {}",
                        r.rule, r.network_policy, r.reason
                    ),
                    format!(
                        "{} 的第 {} 条规则允许访问任意目的地：{}",
                        r.network_policy, r.rule, r.reason
                    ),
                    "give the rule a `to` list of pod/namespace selectors or mainland ipBlocks"
                        .into(),
                    "为该规则设置 `to`，只列出 Pod/命名空间选择器或中国大陆的 ipBlock".into(),
                )
            }),
            exempted: false,
        });
    }

    let space = &snapshot.address_space;
    for b in &eff.external_blocks {
        let Some((cidr, except)) = &b.net else {
            continue;
        };
        let (ok, code) = match mode {
            EgressMode::ClusterOnly => (b.in_cluster, Code::EgressExternalForbidden),
            _ => (
                b.mainland || within_allowed(*cidr, except, &space.inside, &policy.allowed_cidrs),
                Code::EgressOutsideMainland,
            ),
        };
        if ok {
            continue;
        }
        let with_country =
            |a: Option<IpAddr>| (a.map(|a| a.to_string()), a.and_then(|a| space.country(a)));
        let (example, country) = match mode {
            EgressMode::ClusterOnly => with_country(first_outside(*cidr, except, &space.cluster)),
            // Allowing nothing extra, the example is the one effective_egress
            // found against the same set: reuse it and its country.
            _ if policy.allowed_cidrs.is_empty() => (b.example_outside.clone(), b.country.clone()),
            // Union only when the policy adds destinations: the mainland set
            // is thousands of ranges and this runs per outside block.
            _ => with_country(first_outside(
                *cidr,
                except,
                &space.inside.union(&policy.allowed_cidrs),
            )),
        };
        out.push(Violation {
            code,
            field: format!(
                "{} spec.egress[{}].to[{}].ipBlock",
                b.network_policy, b.rule, b.peer
            ),
            evidence: Evidence::Egress(EgressEvidence {
                network_policy: Some(b.network_policy.to_string()),
                rule: Some(b.rule),
                cidr: Some(b.cidr.to_string()),
                example_outside: example.clone(),
                country: country.clone(),
            }),
            message: lead(&|| {
                let ex = example.clone().unwrap_or_default();
                let (where_en, where_zh) = match (mode, &country) {
                    (EgressMode::ClusterOnly, _) => (
                        "is outside the cluster's networks".to_string(),
                        "在集群网络之外".to_string(),
                    ),
                    (_, Some(cc)) if cc != "CN" => (format!("is registered to {cc}"), format!("属于 {cc}")),
                    _ => (
                        "is not in the mainland-China address data".to_string(),
                        "不在中国大陆地址数据中".to_string(),
                    ),
                };
                let excepts = if b.except.is_empty() {
                    String::new()
                } else {
                    format!(" (except {})", b.except.join(", "))
                };
                let fix_en = match mode {
                    EgressMode::ClusterOnly => {
                        "remove the ipBlock, or pass the cluster's pod/service CIDRs if it is in-cluster"
                            .to_string()
                    }
                    _ => format!(
                        "narrow the ipBlock to mainland-China destinations, add an except for {ex}, or list an approved destination in spec.egress.allowedCIDRs of policy {p}"
                    ),
                };
                let fix_zh = match mode {
                    EgressMode::ClusterOnly => {
                        "删除该 ipBlock；若其属于集群内部网络，请提供集群的 Pod/Service CIDR".to_string()
                    }
                    _ => format!(
                        "将 ipBlock 收窄到中国大陆境内的目的地，为 {ex} 添加 except，或在策略 {p} 的 spec.egress.allowedCIDRs 中列出经批准的目的地"
                    ),
                };
                (
                    format!(
                        "rule {} of {} allows {}{excepts}; {ex} {where_en}",
                        b.rule, b.network_policy, b.cidr
                    ),
                    format!(
                        "{} 的第 {} 条规则允许 {}{excepts}；{ex} {where_zh}",
                        b.network_policy, b.rule, b.cidr
                    ),
                    fix_en,
                    fix_zh,
                )
            }),
            exempted: false,
        });
    }
    out
}

/// `cidr − except ⊆ inside ∪ allowed`, without building sets when the
/// policy allows nothing extra.
fn within_allowed(cidr: IpNet, except: &[IpNet], inside: &IpSet, allowed: &IpSet) -> bool {
    if allowed.is_empty() {
        return false;
    }
    IpSet::from_nets([cidr])
        .subtract(&IpSet::from_nets(except.iter().copied()))
        .subtract(inside)
        .is_subset_of(allowed)
}

/// The smallest NetworkPolicy that isolates the workload's pods, allowing
/// only in-cluster destinations (DNS included).
fn isolating_policy_example(w: &Workload) -> String {
    // Select on the app's own labels; the data-class label only if alone.
    let own: Vec<(&String, &String)> = w
        .template_labels
        .iter()
        .filter(|(k, _)| *k != DATA_CLASS_LABEL)
        .collect();
    let chosen = if own.is_empty() {
        w.template_labels.iter().collect()
    } else {
        own
    };
    let labels = if chosen.is_empty() {
        "{}".to_string()
    } else {
        let pairs: Vec<String> = chosen.iter().map(|(k, v)| format!("{k}: {v}")).collect();
        format!("{{matchLabels: {{{}}}}}", pairs.join(", "))
    };
    format!(
        "  apiVersion: networking.k8s.io/v1\n  kind: NetworkPolicy\n  metadata: {{name: {}-egress, namespace: {}}}\n  spec:\n    podSelector: {labels}\n    policyTypes: [Egress]\n    egress:\n    - to: [{{namespaceSelector: {{}}}}]",
        w.name.trim_end_matches('*'),
        w.namespace
    )
}

/// ExternalName Services in the workload's namespace: traffic NetworkPolicy
/// cannot see. A notice, not a violation.
pub fn external_name_notices(workload: &Workload, snapshot: &Snapshot) -> Vec<Notice> {
    snapshot
        .network
        .external_names
        .get(&workload.namespace)
        .into_iter()
        .flatten()
        .map(|(name, target)| Notice {
            code: "ExternalNameUnverified",
            policy: None,
            message: Text {
                en: format!(
                    "Service {}/{name} is an ExternalName for {target}; where that name resolves cannot be verified from the cluster's objects, so check it is inside mainland China",
                    workload.namespace
                ),
                zh: format!(
                    "Service {}/{name} 是指向 {target} 的 ExternalName，无法从集群对象核实其解析地址，请确认其位于中国大陆境内",
                    workload.namespace
                ),
            },
        })
        .collect()
}

/// Parse a list of CIDRs given on the command line or in values.
pub fn parse_cidr_args(items: &[String]) -> Result<IpSet, String> {
    let mut nets = Vec::new();
    for item in items {
        for part in item.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            nets.push(
                parse_net(part)
                    .ok_or_else(|| format!("{part:?} is not a CIDR or an IP address"))?,
            );
        }
    }
    Ok(IpSet::from_nets(nets))
}

impl NetworkIndex {
    /// The part of the index about one namespace (for a snapshot focused
    /// on it: nothing else is read when judging its workloads).
    pub fn namespace_only(&self, namespace: &str) -> NetworkIndex {
        let mut out = NetworkIndex::default();
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

    /// Forget an ExternalName Service.
    pub fn remove_service(&mut self, namespace: &str, name: &str) {
        if let Some(list) = self.external_names.get_mut(namespace) {
            list.retain(|(n, _)| n != name);
        }
    }
}
