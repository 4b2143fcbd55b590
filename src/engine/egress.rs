//! Egress: "nothing this pod can reach is outside mainland China".
//!
//! Kubernetes NetworkPolicy is allow-list and additive. A pod selected by no
//! policy that isolates egress can reach anything; otherwise it reaches the
//! union of the egress rules of every policy in its namespace that selects
//! it. Peers by pod/namespace selector are in-cluster; an ipBlock reaches its
//! cidr minus except; a rule with no `to` reaches everything. hostNetwork
//! pods bypass NetworkPolicy altogether, and so do `hostPID` pods with a
//! container that may enter namespaces (it can join the node's network
//! namespace: `nsenter -t 1 -n`).

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::{Arc, LazyLock};

use ipnet::IpNet;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use super::evidence::{EffectiveEgress, EgressEvidence, Evidence, ExternalBlock, PeerRef, RuleRef};
use super::ipset::{IpSet, net_minus_excepts_subset};
use super::layers::{
    self, CiliumEnforcement, Cni, LayerKind, LayerPolicy, PodView, calico_reach, cilium_reach,
    kubernetes_reach,
};
use super::messages::MessageContext;
use super::network::{
    AddressSpace, CompiledNetworkPolicy, EMPTY_TO, EvidenceCounts, NO_TO, NetworkIndex, Peer,
};
use super::policy::{CompiledPolicy, domain_allowed};
use super::shared::Shared;
use super::text::{Langs, Message, Text};
use super::verdict::{Code, Notice, Violation};
use super::workload::PrivilegedContainer;
use super::{Snapshot, Workload, WorkloadKind};
use crate::api::{DATA_CLASS_LABEL, EgressMode};

/// Compute what the workload's pods can reach. Policy-independent, so it is
/// computed once per workload.
pub(crate) fn effective_egress(workload: &Workload, snapshot: &Snapshot) -> EffectiveEgress {
    let space = &snapshot.address_space;
    // hostPID with a container that may enter namespaces is the node's
    // network too: judged exactly as hostNetwork.
    let mut eff = EffectiveEgress {
        host_network: workload.pod.host_network == Some(true)
            || workload.pod.enters_node_network().is_some(),
        ..EffectiveEgress::default()
    };
    if uses_layers(snapshot) {
        layered_egress(workload, snapshot, &mut eff);
        return eff;
    }
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
                let reason = if rule.empty_to { &*EMPTY_TO } else { &*NO_TO };
                eff.allow_all_rules.push(RuleRef {
                    network_policy: np.reference.clone(),
                    rule: r,
                    reason: reason.en.clone(),
                    reason_zh: reason.zh.clone(),
                    malformed: false,
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
                        reason: reason.en.clone(),
                        reason_zh: reason.zh.clone(),
                        malformed: true,
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
                            allowed_by: Vec::new(),
                            country: example.and_then(|a| space.country(a)),
                            example_outside: example.map(|a| a.to_string()),
                            net: Some((*cidr, Arc::clone(except))),
                            reach: None,
                            field: None,
                            default_allow: false,
                        });
                    }
                }
            }
        }
    }
    eff
}

/// NetworkPolicy alone decides unless another layer has policies, or
/// Cilium's enforcement mode is not `default` (with NetworkPolicies only,
/// the three orders agree with Kubernetes').
fn uses_layers(snapshot: &Snapshot) -> bool {
    let sem = snapshot.network.semantics;
    let relevant = |k: LayerKind| match sem.cni {
        Cni::Kubernetes => k.is_admin(),
        Cni::Calico => k.is_admin() || k.is_calico(),
        Cni::Cilium => k.is_cilium(),
    };
    (sem.cni == Cni::Cilium && sem.cilium_enforcement != CiliumEnforcement::Default)
        || snapshot
            .network
            .layers
            .policies
            .iter()
            .any(|p| relevant(p.kind))
}

/// The effective egress across every enforcing layer, in the CNI's order.
fn layered_egress(workload: &Workload, snapshot: &Snapshot, eff: &mut EffectiveEgress) {
    let sem = snapshot.network.semantics;
    static NO_LABELS: BTreeMap<String, String> = BTreeMap::new();
    let ns_labels = snapshot
        .namespaces
        .get(&workload.namespace)
        .unwrap_or(&NO_LABELS);
    let pod = PodView::new(&workload.namespace, ns_labels, &workload.template_labels);
    let nps: Vec<&LayerPolicy> = snapshot
        .network
        .policies_in(&workload.namespace)
        .iter()
        .map(|np| &*np.layer)
        .collect();
    let layers = &snapshot.network.layers;
    let mut reach = match sem.cni {
        Cni::Kubernetes => kubernetes_reach(&nps, layers, &pod),
        Cni::Calico => calico_reach(&nps, layers, &pod, &snapshot.namespaces),
        Cni::Cilium => cilium_reach(&nps, layers, &pod, sem.cilium_enforcement),
    };
    eff.cni = Some(sem.cni);
    eff.isolated = reach.restricted || !reach.unreadable.is_empty();
    // At their final size: the blocks are large, and growing copies them.
    eff.external_blocks.reserve_exact(reach.grants.len() + 1);
    eff.allow_all_rules.reserve(reach.unreadable.len());
    for (policy, why) in &reach.unreadable {
        eff.allow_all_rules.push(RuleRef {
            network_policy: policy.clone(),
            rule: 0,
            reason: why.en.clone(),
            reason_zh: why.zh.clone(),
            malformed: true,
        });
    }
    let mut seen: Vec<Shared<str>> = Vec::new();
    // Taken, not cloned: each clone of a shared text or set is an atomic
    // count to raise and lower again, and there is one grant per rule.
    let grants = std::mem::take(&mut reach.grants);
    for g in grants {
        // Grants come policy by policy: a repeat is the last one.
        if seen.last() != Some(&g.reference) {
            seen.push(g.reference.clone());
        }
        if let Some(why) = g.unknown {
            eff.allow_all_rules.push(RuleRef {
                network_policy: g.reference,
                rule: g.index,
                reason: why.en,
                reason_zh: why.zh,
                malformed: true,
            });
        } else if g.everything {
            eff.allow_all_rules.push(RuleRef {
                network_policy: g.reference,
                rule: g.index,
                reason: format!("{} ({}) allows every destination", g.field, g.text).into(),
                reason_zh: format!("{}（{}）允许访问任意目的地", g.field, g.text).into(),
                malformed: false,
            });
        } else {
            eff.external_blocks.push(set_block(
                g.reference,
                g.index,
                Some(g.field),
                g.text,
                g.nets,
                snapshot,
                false,
            ));
        }
    }
    eff.selecting_policies = seen;
    if reach.restricted && !reach.default_allowed.is_empty() {
        let text = layers::list_ranges(&reach.default_allowed).join(", ");
        eff.external_blocks.push(set_block(
            "the CNI's default allow".into(),
            0,
            None,
            text.into(),
            Arc::new(reach.default_allowed.clone()),
            snapshot,
            true,
        ));
    }
    eff.domains = reach.domains;
    eff.layers = reach.decisions;
}

/// Where a set of addresses lies: what a grant's block is judged on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Whereabouts {
    /// Inside mainland China or the cluster's own networks.
    mainland: bool,
    /// Inside the cluster's own networks.
    in_cluster: bool,
}

impl Whereabouts {
    fn of(nets: &IpSet, space: &AddressSpace) -> Whereabouts {
        Whereabouts {
            mainland: nets.is_subset_of(&space.inside),
            in_cluster: nets.is_subset_of(&space.cluster),
        }
    }
}

/// Where each projected egress rule's addresses lie, judged once when the
/// snapshot is built rather than on every check: the answer depends on the
/// rule and the address data, not on the pod. A grant that keeps its
/// rule's whole set (it shares the rule's `Arc`, see `layers::grant`)
/// reads it here.
///
/// Keyed by the identity of each rule's shared set, which the table holds
/// (so no other set can take its address, and the set behind it cannot
/// change), and tied to the address data it was judged against (also
/// held): under other address data, or for a set it does not hold (a rule
/// added since, a grant narrowed by an earlier rule), the set is judged
/// on the spot. So it is never stale, only sometimes unused; building it
/// again after changing the policies or the address data restores the fast
/// path.
#[derive(Clone, Default)]
pub(crate) struct RuleWhereabouts {
    space: Option<Arc<AddressSpace>>,
    /// By the address of the set, ascending.
    sets: Vec<(usize, Arc<IpSet>, Whereabouts)>,
}

impl std::fmt::Debug for RuleWhereabouts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RuleWhereabouts({} sets)", self.sets.len())
    }
}

fn set_key(nets: &Arc<IpSet>) -> usize {
    Arc::as_ptr(nets).addr()
}

impl RuleWhereabouts {
    /// Judge the addresses of every rule of every layer, NetworkPolicy
    /// included, against `space`.
    pub(crate) fn new(network: &NetworkIndex, space: &Arc<AddressSpace>) -> RuleWhereabouts {
        let mut sets: Vec<(usize, Arc<IpSet>, Whereabouts)> = network
            .layers
            .policies
            .iter()
            .chain(network.network_policy_layers())
            .flat_map(|p| &p.rules)
            .filter(|r| r.unknown.is_none() && !r.nets.is_empty())
            .map(|r| {
                let at = Whereabouts::of(&r.nets, space);
                (set_key(&r.nets), Arc::clone(&r.nets), at)
            })
            .collect();
        sets.sort_unstable_by_key(|s| s.0);
        // A set shared by several rules (every address) once.
        sets.dedup_by_key(|s| s.0);
        sets.shrink_to_fit();
        RuleWhereabouts {
            space: Some(Arc::clone(space)),
            sets,
        }
    }

    /// Where `nets` lies under `space`: from the table when it holds that
    /// very set judged against that very address data, else judged now.
    fn of(&self, nets: &Arc<IpSet>, space: &Arc<AddressSpace>) -> Whereabouts {
        if self.space.as_ref().is_some_and(|s| Arc::ptr_eq(s, space))
            && let Ok(i) = self.sets.binary_search_by_key(&set_key(nets), |s| s.0)
        {
            return self.sets[i].2;
        }
        Whereabouts::of(nets, space)
    }

    /// How many sets are judged in advance.
    pub(crate) fn len(&self) -> usize {
        self.sets.len()
    }
}

/// An external block of the layer model: an address set.
fn set_block(
    network_policy: Shared<str>,
    rule: usize,
    field: Option<Shared<str>>,
    text: Shared<str>,
    nets: Arc<IpSet>,
    snapshot: &Snapshot,
    default_allow: bool,
) -> ExternalBlock {
    // Shared: an empty slice behind an Arc is still an allocation.
    static NO_EXCEPTS: LazyLock<Shared<[String]>> = LazyLock::new(|| Vec::new().into());
    let space = &*snapshot.address_space;
    let Whereabouts {
        mainland,
        in_cluster,
    } = snapshot
        .rule_whereabouts()
        .of(&nets, &snapshot.address_space);
    let example = (!mainland)
        .then(|| nets.first_outside(&space.inside))
        .flatten();
    ExternalBlock {
        network_policy,
        rule,
        peer: 0,
        cidr: text,
        except: NO_EXCEPTS.clone(),
        mainland,
        in_cluster,
        allowed_by: Vec::new(),
        country: example.and_then(|a| space.country(a)),
        example_outside: example.map(|a| a.to_string()),
        net: None,
        reach: Some(nets),
        field,
        default_allow,
    }
}

/// The problem and fix of a `hostPID` pod with a container that may enter
/// namespaces: it can run in the node's network namespace.
fn host_pid_texts(
    prefix: &str,
    list: &str,
    c: &PrivilegedContainer,
) -> (String, String, String, String) {
    let at = format!("{prefix}.{list}[{}]", c.index);
    let name = &c.name;
    let (why_en, why_zh, drop_en, drop_zh) = match &c.capability {
        None => (
            format!("is privileged ({at}.securityContext.privileged: true)"),
            format!("为特权容器（{at}.securityContext.privileged: true）"),
            "privileged: true".to_string(),
            "privileged: true".to_string(),
        ),
        Some(cap) => (
            format!("adds capability {cap} ({at}.securityContext.capabilities.add)"),
            format!("添加了 {cap} 能力（{at}.securityContext.capabilities.add）"),
            format!("capability {cap}"),
            format!("{cap} 能力"),
        ),
    };
    (
        format!(
            "{prefix}.hostPID is true and container {name} {why_en}, so it can enter the node's network namespace (nsenter -t 1 -n) and bypass every NetworkPolicy, as a host-network pod does"
        ),
        format!(
            "{prefix}.hostPID 为 true，且容器 {name} {why_zh}，因此可进入节点的网络命名空间（nsenter -t 1 -n），与主机网络 Pod 一样不受任何 NetworkPolicy 约束"
        ),
        format!("remove hostPID: true, or drop {drop_en} from container {name}"),
        format!("删除 hostPID: true，或从容器 {name} 中去掉 {drop_zh}"),
    )
}

fn first_outside(cidr: IpNet, except: &[IpNet], of: &IpSet) -> Option<IpAddr> {
    IpSet::from_nets([cidr])
        .subtract(&IpSet::from_nets(except.iter().copied()))
        .first_outside(of)
}

/// Judge the effective egress under one policy's egress mode. A block
/// outside mainland China that the policy's `allowedCIDRs` cover is
/// recorded in its `allowedBy`.
pub(crate) fn check(
    eff: &mut EffectiveEgress,
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
        if !ctx.langs.any() {
            return Message::default();
        }
        let (en, zh, fix_en, fix_zh) = texts();
        let subject = ctx.subject();
        let langs = ctx.langs;
        // Joined, not formatted: each text is allocated once at its final
        // size (formatting these long texts grew each string several
        // times).
        let closed = |fix: String, mark| [fix.as_str(), stop(&fix, mark)].concat();
        Message {
            problem: Text {
                en: if langs.en {
                    [
                        &*subject.en,
                        " and policy ",
                        p,
                        " ",
                        rule_en,
                        ", but ",
                        &en,
                        ".",
                    ]
                    .concat()
                } else {
                    String::new()
                },
                zh: if langs.zh {
                    [&*subject.zh, "，策略 ", p, " ", rule_zh, "，但 ", &zh, "。"].concat()
                } else {
                    String::new()
                },
            },
            fix: Text {
                en: if langs.en {
                    closed(fix_en, ".")
                } else {
                    String::new()
                },
                zh: if langs.zh {
                    closed(fix_zh, "。")
                } else {
                    String::new()
                },
            },
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

    let pod = &ctx.workload.pod;
    if eff.host_network && pod.host_network == Some(true) {
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
    } else if eff.host_network
        && let Some((list, c)) = pod.enters_node_network()
    {
        out.push(Violation {
            code: Code::HostNetwork,
            field: format!("{prefix}.hostPID"),
            evidence: Evidence::Egress(no_evidence.clone()),
            message: lead(&|| host_pid_texts(prefix, list, c)),
            exempted: false,
        });
    }

    if !eff.isolated {
        out.push(Violation {
            code: Code::EgressUnrestricted,
            field: format!("NetworkPolicy in namespace {}", ctx.workload.namespace),
            evidence: Evidence::Egress(no_evidence),
            message: lead(&|| unrestricted_texts(ctx.workload, snapshot, ctx.langs)),
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
                let (n, np) = (r.rule + 1, &r.network_policy);
                let (fix_en, fix_zh) = if r.malformed {
                    (
                        format!("correct the peer in spec.egress[{}] of {np} as described", r.rule),
                        format!("按上述说明修正 {np} 中 spec.egress[{}] 的 peer", r.rule),
                    )
                } else {
                    (
                        "give the rule a non-empty `to` list of pod/namespace selectors or mainland ipBlocks".into(),
                        "为该规则设置非空的 `to`，只列出 Pod/命名空间选择器或中国大陆的 ipBlock".into(),
                    )
                };
                (
                    format!(
                        "rule {n} (spec.egress[{}]) of {np} reaches every destination: {}",
                        r.rule, r.reason
                    ),
                    format!(
                        "{np} 的第 {n} 条规则（spec.egress[{}]）允许访问任意目的地：{}",
                        r.rule, r.reason_zh
                    ),
                    fix_en,
                    fix_zh,
                )
            }),
            exempted: false,
        });
    }

    let space = &snapshot.address_space;
    for b in &mut eff.external_blocks {
        // The addresses as a set: the layer model's, or cidr minus except
        // (built only when needed below).
        let as_set = || match (&b.reach, &b.net) {
            (Some(set), _) => Some(Arc::clone(set)),
            (None, Some((cidr, except))) => Some(Arc::new(
                IpSet::from_nets([*cidr]).subtract(&IpSet::from_nets(except.iter().copied())),
            )),
            (None, None) => None,
        };
        let (ok, code) = match mode {
            EgressMode::ClusterOnly => (b.in_cluster, Code::EgressExternalForbidden),
            _ if b.mainland => (true, Code::EgressOutsideMainland),
            _ => {
                let allowed = match (&b.net, &b.reach) {
                    (Some((cidr, except)), _) => {
                        within_allowed(*cidr, except, &space.inside, &policy.allowed_cidrs)
                    }
                    (None, Some(set)) => {
                        !policy.allowed_cidrs.is_empty()
                            && set
                                .subtract(&space.inside)
                                .is_subset_of(&policy.allowed_cidrs)
                    }
                    (None, None) => false,
                };
                if allowed {
                    b.allowed_by.push(policy.name.clone());
                }
                (allowed, Code::EgressOutsideMainland)
            }
        };
        if ok {
            continue;
        }
        let b = &*b;
        let with_country =
            |a: Option<IpAddr>| (a.map(|a| a.to_string()), a.and_then(|a| space.country(a)));
        let (example, country) = match mode {
            EgressMode::ClusterOnly => {
                with_country(as_set().and_then(|set| set.first_outside(&space.cluster)))
            }
            // Allowing nothing extra, the example is the one effective_egress
            // found against the same set: reuse it and its country.
            _ if policy.allowed_cidrs.is_empty() => (b.example_outside.clone(), b.country.clone()),
            // Union only when the policy adds destinations: the mainland set
            // is thousands of ranges and this runs per outside block.
            _ => with_country(
                as_set()
                    .and_then(|set| set.first_outside(&space.inside.union(&policy.allowed_cidrs))),
            ),
        };
        out.push(Violation {
            code,
            field: match &b.field {
                // Joined: `format!` would grow it from nothing.
                Some(field) => [&*b.network_policy, " ", field].concat(),
                None if b.default_allow => format!(
                    "{} (no policy decides; the CNI's default allows)",
                    b.network_policy
                ),
                None => format!(
                    "{} spec.egress[{}].to[{}].ipBlock",
                    b.network_policy, b.rule, b.peer
                ),
            },
            evidence: Evidence::Egress(EgressEvidence {
                network_policy: Some(b.network_policy.to_string()),
                rule: Some(b.rule),
                cidr: Some(b.cidr.to_string()),
                example_outside: example.clone(),
                country: country.clone(),
            }),
            message: lead(&|| {
                block_texts(
                    b,
                    mode,
                    example.as_deref(),
                    country.as_deref(),
                    policy,
                    space,
                    p,
                )
            }),
            exempted: false,
        });
    }
    domain_violations(eff, policy, ctx, &mut out);
    out
}

/// Domain names the pod's egress rules allow: a violation under
/// MainlandOnly unless `allowedDomains` lists them; any name is outside
/// the cluster under ClusterOnly.
fn domain_violations(
    eff: &EffectiveEgress,
    policy: &CompiledPolicy,
    ctx: &MessageContext<'_>,
    out: &mut Vec<Violation>,
) {
    let p = ctx.policy;
    for d in &eff.domains {
        let cluster_only = policy.egress_mode == EgressMode::ClusterOnly;
        if !cluster_only && domain_allowed(&d.domain, &policy.allowed_domains) {
            continue;
        }
        let message = if ctx.langs.any() {
            let subject = ctx.subject();
            let (rule_en, rule_zh, fix_en, fix_zh) = if cluster_only {
                (
                    "allows no egress outside the cluster",
                    "禁止访问集群外的任何地址",
                    format!(
                        "remove the domain {} from {} of {}.",
                        d.domain, d.field, d.policy
                    ),
                    format!("从 {} 的 {} 中删除域名 {}。", d.policy, d.field, d.domain),
                )
            } else {
                (
                    "allows egress only to mainland China",
                    "只允许访问中国大陆境内的地址",
                    format!(
                        "if {0} is served from mainland China, list it in spec.egress.allowedDomains of policy {p} with its source (e.g. its ICP filing); otherwise remove it from {1} of {2}.",
                        d.domain, d.field, d.policy
                    ),
                    format!(
                        "若 {0} 由中国大陆境内提供服务，请将其连同依据（如 ICP 备案）列入策略 {p} 的 spec.egress.allowedDomains；否则从 {2} 的 {1} 中删除。",
                        d.domain, d.field, d.policy
                    ),
                )
            };
            Message {
                problem: Text {
                    en: format!(
                        "{} and policy {p} {rule_en}, but {} of {} allows the domain name {}; where a name resolves cannot be verified from the cluster's objects.",
                        subject.en, d.field, d.policy, d.domain
                    ),
                    zh: format!(
                        "{}，策略 {p} {rule_zh}，但 {} 的 {} 允许访问域名 {}；无法从集群对象核实该域名解析到的地址。",
                        subject.zh, d.policy, d.field, d.domain
                    ),
                },
                fix: Text {
                    en: fix_en,
                    zh: fix_zh,
                },
            }
        } else {
            Message::default()
        };
        out.push(Violation {
            code: if cluster_only {
                Code::EgressExternalForbidden
            } else {
                Code::EgressNotGuaranteed
            },
            field: format!("{} {} {}", d.policy, d.field, d.domain),
            evidence: Evidence::Egress(EgressEvidence {
                network_policy: Some(d.policy.to_string()),
                rule: None,
                cidr: Some(d.domain.to_string()),
                example_outside: None,
                country: None,
            }),
            message,
            exempted: false,
        });
    }
}

/// Domains a pod's egress rules allow: a notice naming each, as for
/// ExternalName Services.
pub(crate) fn domain_notices(eff: &EffectiveEgress) -> Vec<Notice> {
    eff.domains
        .iter()
        .map(|d| Notice {
            code: "EgressDomainUnverified",
            policy: None,
            message: Text {
                en: format!(
                    "{} of {} allows the domain name {}; where it resolves cannot be verified from the cluster's objects, so check it is inside mainland China",
                    d.field, d.policy, d.domain
                ),
                zh: format!(
                    "{} 的 {} 允许访问域名 {}；无法从集群对象核实其解析地址，请确认其位于中国大陆境内",
                    d.policy, d.field, d.domain
                ),
            },
        })
        .collect()
}

/// Private address space (RFC 1918, shared 100.64/10, IPv6 ULA): what
/// clusters use for pods and services, and what may route anywhere.
fn is_private(addr: IpAddr) -> bool {
    match addr {
        IpAddr::V4(a) => {
            let o = a.octets();
            a.is_private() || (o[0] == 100 && (64..128).contains(&o[1]))
        }
        IpAddr::V6(a) => (a.segments()[0] & 0xfe00) == 0xfc00,
    }
}

/// What `long_text!` reserves: more than the longest problem or fix of an
/// outside block in either language.
const LONG_TEXT: usize = 512;

/// `format!` for the problem and fix texts `block_texts` returns, which
/// `check` copies into the message and drops: reserved once at
/// `LONG_TEXT` bytes. `format!` sizes its string from the literal parts
/// alone and grew these texts several times while writing them.
macro_rules! long_text {
    ($($arg:tt)*) => {{
        let mut out = String::with_capacity(LONG_TEXT);
        // Writing to a String cannot fail.
        let _ = std::fmt::Write::write_fmt(&mut out, format_args!($($arg)*));
        out
    }};
}

/// At most this many excepts are suggested; a block with more ranges
/// outside is to be narrowed, not punched with holes.
const MAX_EXCEPTS_SUGGESTED: usize = 3;

/// The problem and fix of an ipBlock that reaches outside: which address,
/// where it is, and a fix that works (an except only when a few excepts
/// would do it; the cluster CIDR flags for a private range).
fn block_texts(
    b: &ExternalBlock,
    mode: EgressMode,
    example: Option<&str>,
    country: Option<&str>,
    policy: &CompiledPolicy,
    space: &AddressSpace,
    p: &str,
) -> (String, String, String, String) {
    let ex = example.unwrap_or_default();
    let private = example
        .and_then(|e| e.parse::<IpAddr>().ok())
        .is_some_and(is_private);
    let (where_en, where_zh) = match (mode, country) {
        (EgressMode::ClusterOnly, _) => (
            "is outside the cluster's networks".to_string(),
            "在集群网络之外".to_string(),
        ),
        _ if private => (
            "is a private address, which may route anywhere".to_string(),
            "是私有地址，可能被路由到任何地方".to_string(),
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
    let (n, np, r) = (b.rule + 1, &b.network_policy, b.rule);
    let (problem_en, problem_zh) = match (&b.field, b.default_allow) {
        (_, true) => (
            long_text!(
                "no policy of any layer decides {}, so the CNI's default allows it; {ex} {where_en}",
                b.cidr
            ),
            long_text!(
                "没有任何层级的策略处理 {}，因此 CNI 默认允许；{ex} {where_zh}",
                b.cidr
            ),
        ),
        (Some(field), false) => (
            long_text!(
                "{field} of {np} allows {} (after the layers before it); {ex} {where_en}",
                b.cidr
            ),
            long_text!(
                "{np} 的 {field} 允许 {}（在其之前的层级处理之后）；{ex} {where_zh}",
                b.cidr
            ),
        ),
        (None, false) => (
            long_text!(
                "rule {n} (spec.egress[{r}]) of {np} allows {}{excepts}; {ex} {where_en}",
                b.cidr
            ),
            long_text!(
                "{np} 的第 {n} 条规则（spec.egress[{r}]）允许 {}{excepts}；{ex} {where_zh}",
                b.cidr
            ),
        ),
    };
    let cluster_en = "declare the cluster's pod and service CIDRs (check --cluster-cidr, Helm value clusterCidrs) if this block is in-cluster";
    let cluster_zh = "若该地址段属于集群内部网络，请声明集群的 Pod/Service CIDR（check 的 --cluster-cidr，Helm 值 clusterCidrs）";
    if mode == EgressMode::ClusterOnly {
        return (
            problem_en,
            problem_zh,
            long_text!("remove the ipBlock, or {cluster_en}"),
            long_text!("删除该 ipBlock；{cluster_zh}"),
        );
    }
    let approved_en =
        format!("list an approved destination in spec.egress.allowedCIDRs of policy {p}");
    let approved_zh = format!("在策略 {p} 的 spec.egress.allowedCIDRs 中列出经批准的目的地");
    if private {
        return (
            problem_en,
            problem_zh,
            long_text!(
                "if {} is the cluster's own pod or service network, declare it as a cluster CIDR (check --cluster-cidr, Helm value clusterCidrs): in-cluster traffic does not leave the country; otherwise narrow the ipBlock to mainland-China destinations or {approved_en}",
                b.cidr
            ),
            long_text!(
                "若 {} 是集群自身的 Pod 或 Service 网络，请将其声明为集群 CIDR（check 的 --cluster-cidr，Helm 值 clusterCidrs），集群内流量不会出境；否则将 ipBlock 收窄到中国大陆境内的目的地，或{approved_zh}",
                b.cidr
            ),
        );
    }
    // What of the block lies outside: the whole of it, a few ranges that
    // excepts can remove, or too many to list.
    let reachable = match (&b.net, &b.reach) {
        (Some((cidr, except)), _) => {
            Some(IpSet::from_nets([*cidr]).subtract(&IpSet::from_nets(except.iter().copied())))
        }
        (None, Some(set)) => Some((**set).clone()),
        (None, None) => None,
    };
    let (fix_en, fix_zh) = match reachable {
        Some(reachable) => {
            // Borrowed, not cloned: the mainland set is thousands of ranges.
            let inside = if policy.allowed_cidrs.is_empty() {
                Cow::Borrowed(&space.inside)
            } else {
                Cow::Owned(space.inside.union(&policy.allowed_cidrs))
            };
            // Only as many ranges of the outside part as the message can
            // use: it equals `reachable` (so has as many ranges) or is
            // listed when small; past that it is "too many" whatever its
            // size, and 0.0.0.0/0 minus the mainland is thousands.
            let (v4, v6) = reachable.range_count();
            let outside = reachable.subtract_within(&inside, MAX_EXCEPTS_SUGGESTED.max(v4 + v6));
            // Each range is at least one CIDR: count ranges before listing.
            let nets = match &outside {
                Some(o) if o.range_count().0 + o.range_count().1 <= MAX_EXCEPTS_SUGGESTED => {
                    o.to_nets()
                }
                _ => Vec::new(),
            };
            if outside.as_ref() == Some(&reachable) {
                (
                    long_text!(
                        "remove this ipBlock or replace it with mainland-China destinations (none of {} is in mainland China), or {approved_en}",
                        b.cidr
                    ),
                    long_text!(
                        "删除该 ipBlock 或改为中国大陆境内的目的地（{} 完全不在中国大陆），或{approved_zh}",
                        b.cidr
                    ),
                )
            } else if !nets.is_empty() && nets.len() <= MAX_EXCEPTS_SUGGESTED {
                let list = nets
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ");
                (
                    long_text!(
                        "add except: [{list}] to the ipBlock (the part outside mainland China), or {approved_en}"
                    ),
                    long_text!(
                        "为该 ipBlock 添加 except: [{list}]（其不在中国大陆的部分），或{approved_zh}"
                    ),
                )
            } else {
                (
                    long_text!(
                        "narrow the ipBlock to mainland-China destinations (it reaches too many ranges outside mainland China to remove with excepts), or {approved_en}"
                    ),
                    long_text!(
                        "将 ipBlock 收窄到中国大陆境内的目的地（其不在中国大陆的地址段过多，无法用 except 逐一排除），或{approved_zh}"
                    ),
                )
            }
        }
        None => (
            long_text!("narrow the ipBlock to mainland-China destinations, or {approved_en}"),
            long_text!("将 ipBlock 收窄到中国大陆境内的目的地，或{approved_zh}"),
        ),
    };
    (problem_en, problem_zh, fix_en, fix_zh)
}

/// A NetworkPolicy in the workload's namespace that nearly isolates its
/// egress: what the user most likely meant, and how to make it work.
struct NearMiss {
    en: String,
    zh: String,
    fix_en: String,
    fix_zh: String,
}

/// "{app: api}": a selector as written, for messages.
fn quote_selector(sel: &LabelSelector) -> String {
    let mut parts: Vec<String> = sel
        .match_labels
        .iter()
        .flatten()
        .map(|(k, v)| format!("{k}: {v}"))
        .collect();
    for e in sel.match_expressions.iter().flatten() {
        let values = e.values.as_deref().unwrap_or_default().join(", ");
        parts.push(format!("{} {} [{values}]", e.key, e.operator));
    }
    format!("{{{}}}", parts.join(", "))
}

fn near_misses(w: &Workload, snapshot: &Snapshot) -> Vec<NearMiss> {
    let kind = w.kind;
    let mut out = Vec::new();
    for np in snapshot.network.policies_in(&w.namespace) {
        let reference = &np.reference;
        let shape = &np.shape;
        let selects_pods = np.selects(&w.template_labels);
        if np.isolates_egress {
            // Isolates egress, but selects a label only the workload's own
            // metadata carries: NetworkPolicies select pods.
            if !selects_pods && kind != WorkloadKind::Pod && np.selects(&w.labels) {
                let sel = quote_selector(&shape.pod_selector);
                let at = kind.template_labels_path();
                out.push(NearMiss {
                    en: format!(
                        "{reference} isolates egress for podSelector {sel}, but only the {kind}'s own metadata.labels carry that, not its pods ({at})"
                    ),
                    zh: format!(
                        "{reference} 为 podSelector {sel} 限制了出站流量，但只有该 {kind} 自身的 metadata.labels 带有这些标签，其 Pod（{at}）没有"
                    ),
                    fix_en: format!(
                        "add those labels to {at} (a NetworkPolicy selects pods), or change the podSelector of {reference} to labels the pods carry"
                    ),
                    fix_zh: format!(
                        "将这些标签加到 {at}（NetworkPolicy 选择的是 Pod），或将 {reference} 的 podSelector 改为 Pod 带有的标签"
                    ),
                });
            }
            continue;
        }
        if !selects_pods {
            continue;
        }
        match (&shape.policy_types, shape.egress_rules) {
            // Egress rules, but policyTypes leaves Egress out: ignored.
            (Some(types), Some(n)) if n > 0 => {
                let list = types.join(", ");
                out.push(NearMiss {
                    en: format!(
                        "{reference} selects its pods and has egress rules, but its spec.policyTypes [{list}] leaves out Egress, so the egress rules are ignored"
                    ),
                    zh: format!(
                        "{reference} 选中了其 Pod 且有出站规则，但其 spec.policyTypes [{list}] 不含 Egress，因此出站规则不生效"
                    ),
                    fix_en: format!("add Egress to spec.policyTypes of {reference}"),
                    fix_zh: format!("在 {reference} 的 spec.policyTypes 中加入 Egress"),
                });
            }
            // `egress: []` without policyTypes: defaulted to Ingress only.
            (None, Some(0)) => out.push(NearMiss {
                en: format!(
                    "{reference} selects its pods and has egress: [] but no spec.policyTypes, so the API server sets policyTypes to [Ingress] and it does not restrict egress"
                ),
                zh: format!(
                    "{reference} 选中了其 Pod 且写了 egress: []，但没有 spec.policyTypes，API server 会将 policyTypes 设为 [Ingress]，因此它不限制出站流量"
                ),
                fix_en: format!(
                    "set spec.policyTypes: [Ingress, Egress] in {reference} (egress: [] then blocks all egress: add rules for what the pods need, DNS included)"
                ),
                fix_zh: format!(
                    "在 {reference} 中设置 spec.policyTypes: [Ingress, Egress]（此时 egress: [] 会阻断全部出站流量，请为 Pod 所需的目的地添加规则，包括 DNS）"
                ),
            }),
            _ => {}
        }
    }
    out
}

/// The problem and fix of a pod whose egress no NetworkPolicy isolates:
/// a near miss when there is one, else an example policy (as
/// `(en, zh, fix_en, fix_zh)`, the languages not in `langs` empty).
fn unrestricted_texts(
    w: &Workload,
    snapshot: &Snapshot,
    langs: Langs,
) -> (String, String, String, String) {
    let ns = &w.namespace;
    // Under another CNI's semantics, say which layers were read too.
    let layers = uses_layers(snapshot).then(|| {
        let sem = snapshot.network.semantics;
        match sem.cni {
            Cni::Cilium if sem.cilium_enforcement == CiliumEnforcement::Never => (
                "Cilium's policy enforcement mode is never, so no policy is enforced",
                "Cilium 的策略执行模式为 never，任何策略都不生效",
            ),
            Cni::Cilium => (
                "nor does any CiliumNetworkPolicy or CiliumClusterwideNetworkPolicy with egress rules",
                "也没有带出站规则的 CiliumNetworkPolicy 或 CiliumClusterwideNetworkPolicy 选中它们",
            ),
            Cni::Calico => (
                "nor does any Calico NetworkPolicy or GlobalNetworkPolicy with Egress in its types, or any AdminNetworkPolicy",
                "也没有 types 含 Egress 的 Calico NetworkPolicy、GlobalNetworkPolicy 或任何 AdminNetworkPolicy 选中它们",
            ),
            Cni::Kubernetes => (
                "nor does any AdminNetworkPolicy or BaselineAdminNetworkPolicy",
                "也没有任何 AdminNetworkPolicy 或 BaselineAdminNetworkPolicy 选中它们",
            ),
        }
    });
    let mut problem = match layers {
        Some((layer_en, layer_zh)) => langs.text(
            format_args!(
                "no NetworkPolicy with Egress in its policyTypes selects its pods in namespace {ns} ({layer_en}), so they can reach any address"
            ),
            format_args!(
                "命名空间 {ns} 中没有任何 policyTypes 含 Egress 的 NetworkPolicy 选中其 Pod（{layer_zh}），因此可以访问任意地址"
            ),
        ),
        None => langs.text(
            format_args!(
                "no NetworkPolicy with Egress in its policyTypes selects its pods in namespace {ns}, so they can reach any address"
            ),
            format_args!(
                "命名空间 {ns} 中没有任何 policyTypes 含 Egress 的 NetworkPolicy 选中其 Pod，因此可以访问任意地址"
            ),
        ),
    };
    let misses = near_misses(w, snapshot);
    if misses.is_empty() {
        let example = isolating_policy_example(w);
        let fix = langs.text(
            format_args!("apply a NetworkPolicy that isolates egress, for example:\n{example}"),
            format_args!("应用一个限制出站流量的 NetworkPolicy，例如：\n{example}"),
        );
        return (problem.en, problem.zh, fix.en, fix.zh);
    }
    let join = |wanted: bool, f: &dyn Fn(&NearMiss) -> &str, sep: &str| {
        if wanted {
            misses.iter().map(f).collect::<Vec<_>>().join(sep)
        } else {
            String::new()
        }
    };
    langs.write(
        &mut problem,
        format_args!("; nearly: {}", join(langs.en, &|m| &m.en, "; ")),
        format_args!("；接近生效的是：{}", join(langs.zh, &|m| &m.zh, "；")),
    );
    (
        problem.en,
        problem.zh,
        join(langs.en, &|m| &m.fix_en, "; "),
        join(langs.zh, &|m| &m.fix_zh, "；"),
    )
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
pub(crate) fn external_name_notices(workload: &Workload, snapshot: &Snapshot) -> Vec<Notice> {
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
