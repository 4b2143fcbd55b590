//! The combined reachability of the policy layers checked against an
//! independent brute-force model of each CNI's documented order.
//!
//! The model never calls the engine's set algebra. It takes a small world —
//! the 16 addresses of 10.0.0.0/28, one address outside it and one IPv6
//! address — and two ports, and for each (address, port) walks the
//! policies one rule at a time as the documentation describes:
//!
//! - Kubernetes (network-policy-api): AdminNetworkPolicies by priority,
//!   first matching rule decides (Pass skips to NetworkPolicy); then, if a
//!   NetworkPolicy isolates the pod, allowed iff one of them allows; else
//!   BaselineAdminNetworkPolicy's first matching rule; else allowed.
//! - Calico: tiers by order, policies by order then name, first matching
//!   Allow/Deny decides, Pass goes to the next tier, Log goes on; a tier
//!   that applies and decides nothing ends in its default action; after
//!   the last tier, the profile allows.
//! - Cilium: any matching deny of a selecting policy drops; else any
//!   matching allow admits; else default-deny if a selecting policy asks
//!   for it (or enforcement is `always`), default-allow otherwise; `never`
//!   admits everything.
//!
//! Calico rules may also select network sets by label (`set == 'k'`),
//! scoped by the model as Calico documents it: a namespaced policy's
//! selector selects the NetworkSets of its namespace, `namespaceSelector:
//! global()` the GlobalNetworkSets, a GlobalNetworkPolicy's selector every
//! set; the address must be in a selected set (and in `nets` when given).
//! Those rules and the sets go through the engine's projection of the
//! objects' JSON.
//!
//! A rule limited to ports matches port 0 only. An address is reachable
//! when some port reaches it. The engine abstracts ports away, erring
//! towards "reachable": it must never miss an address the model reaches,
//! and must agree exactly when no rule is limited to ports.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;
use proptest::prelude::*;
use residency_guard::engine::{
    CalicoSelector, CalicoTier, CiliumEnforcement, IpSet, LayerKind, LayerPolicy, LayerRule,
    Layers, PodView, RuleAction, Subject, calico_network_set, calico_policy, calico_reach,
    cilium_reach, kubernetes_reach,
};
use serde_json::json;

#[derive(Clone, Debug)]
struct GenRule {
    action: RuleAction,
    /// None: every address.
    nets: Option<Vec<IpNet>>,
    partial: bool,
    /// Calico: the destination selects the network sets labelled
    /// `set == k`; `global` adds `namespaceSelector: global()`.
    set: Option<(u8, bool)>,
}

/// A Calico NetworkSet (in `ns` or `other`) or GlobalNetworkSet.
#[derive(Clone, Debug)]
struct GenSet {
    /// None: a GlobalNetworkSet.
    namespace: Option<&'static str>,
    label: u8,
    nets: Vec<IpNet>,
}

fn set_strategy() -> impl Strategy<Value = GenSet> {
    (
        proptest::sample::select(vec![Some("ns"), Some("other"), None]),
        0u8..2,
        proptest::collection::vec(net_strategy(), 1..3),
    )
        .prop_map(|(namespace, label, nets)| GenSet {
            namespace,
            label,
            nets,
        })
}

#[derive(Clone, Debug)]
struct GenPolicy {
    kind: LayerKind,
    selects: bool,
    egress: bool,
    default_deny: bool,
    order: Option<u8>,
    security_tier: bool,
    rules: Vec<GenRule>,
}

fn world() -> Vec<IpAddr> {
    let mut out: Vec<IpAddr> = (0..16u8).map(|i| IpAddr::from([10, 0, 0, i])).collect();
    out.push(IpAddr::from([11, 0, 0, 1]));
    out.push("2001:db8::1".parse().unwrap());
    out
}

fn net_strategy() -> impl Strategy<Value = IpNet> {
    (0u8..16, 28u8..=32).prop_map(|(host, len)| {
        IpNet::new(IpAddr::from([10, 0, 0, host]), len)
            .unwrap()
            .trunc()
    })
}

fn rule_strategy(
    actions: &'static [RuleAction],
    partial: bool,
    sets: bool,
) -> impl Strategy<Value = GenRule> {
    (
        proptest::sample::select(actions),
        proptest::option::weighted(0.85, proptest::collection::vec(net_strategy(), 1..3)),
        if partial {
            proptest::bool::weighted(0.3).boxed()
        } else {
            Just(false).boxed()
        },
        if sets {
            proptest::option::weighted(0.4, (0u8..2, any::<bool>())).boxed()
        } else {
            Just(None).boxed()
        },
    )
        .prop_map(|(action, nets, partial, set)| GenRule {
            action,
            nets,
            partial,
            set,
        })
}

const ALLOW: &[RuleAction] = &[RuleAction::Allow];
const ADMIN: &[RuleAction] = &[RuleAction::Allow, RuleAction::Deny, RuleAction::Pass];
const BASELINE: &[RuleAction] = &[RuleAction::Allow, RuleAction::Deny];
const CALICO: &[RuleAction] = &[
    RuleAction::Allow,
    RuleAction::Deny,
    RuleAction::Pass,
    RuleAction::Log,
];

fn policy_strategy(
    kinds: &'static [(LayerKind, &'static [RuleAction])],
    partial: bool,
) -> impl Strategy<Value = GenPolicy> {
    proptest::sample::select(kinds).prop_flat_map(move |(kind, actions)| {
        (
            proptest::bool::weighted(0.75),
            proptest::bool::weighted(0.85),
            proptest::bool::weighted(0.8),
            proptest::option::of(0u8..4),
            any::<bool>(),
            proptest::collection::vec(rule_strategy(actions, partial, kind.is_calico()), 0..4),
        )
            .prop_map(
                move |(selects, egress, default_deny, order, security_tier, rules)| {
                    GenPolicy {
                        kind,
                        selects,
                        egress,
                        default_deny,
                        // BaselineAdminNetworkPolicy has no priority.
                        order: order.filter(|_| kind != LayerKind::BaselineAdminNetworkPolicy),
                        security_tier,
                        rules,
                    }
                },
            )
    })
}

fn project(i: usize, g: &GenPolicy) -> LayerPolicy {
    let rules = g
        .rules
        .iter()
        .enumerate()
        .map(|(r, rule)| {
            if rule.set.is_some() {
                return calico_set_rule(g.kind, r, rule);
            }
            let nets = match &rule.nets {
                None => IpSet::from_nets(["0.0.0.0/0".parse().unwrap(), "::/0".parse().unwrap()]),
                Some(n) => IpSet::from_nets(n.iter().copied()),
            };
            LayerRule {
                action: rule.action,
                nets: Arc::new(nets),
                everything: rule.nets.is_none(),
                partial: rule.partial,
                domains: Vec::new(),
                unknown: None,
                index: r,
                field: format!("spec.egress[{r}]").into(),
                text: "".into(),
                sets: None,
            }
        })
        .collect();
    let app = if g.selects { "api" } else { "db" };
    let is_np = g.kind == LayerKind::NetworkPolicy;
    LayerPolicy {
        kind: g.kind,
        namespace: Some("ns".into()),
        name: format!("p{i}"),
        reference: format!("{} p{i}", g.kind.as_str()).into(),
        subject: Subject::Calico {
            namespace: None,
            selector: CalicoSelector::Eq("app".into(), app.into()),
            namespace_selector: None,
        },
        egress: g.egress,
        default_deny: g.egress && (is_np || g.default_deny),
        order: if is_np {
            Some(1000.0)
        } else {
            g.order.map(f64::from)
        },
        tier: (g.kind.is_calico() && g.security_tier).then(|| "security".to_string()),
        rules,
    }
}

/// A Calico rule selecting network sets, projected from its JSON as the
/// engine reads a policy (the namespaced kind in namespace `ns`).
fn calico_set_rule(kind: LayerKind, index: usize, rule: &GenRule) -> LayerRule {
    let (label, global) = rule.set.unwrap_or_default();
    let mut destination = json!({"selector": format!("set == '{label}'")});
    if global {
        destination["namespaceSelector"] = json!("global()");
    }
    if let Some(nets) = &rule.nets {
        destination["nets"] = json!(nets.iter().map(ToString::to_string).collect::<Vec<_>>());
    }
    let action = match rule.action {
        RuleAction::Allow => "Allow",
        RuleAction::Deny => "Deny",
        RuleAction::Pass => "Pass",
        RuleAction::Log => "Log",
    };
    let mut r = json!({"action": action, "destination": destination});
    if rule.partial {
        r["protocol"] = json!("TCP");
    }
    let egress: Vec<serde_json::Value> = (0..=index)
        .map(|i| {
            if i == index {
                r.clone()
            } else {
                json!({"action": "Log"})
            }
        })
        .collect();
    let namespaced = kind == LayerKind::CalicoNetworkPolicy;
    let mut obj = json!({"metadata": {"name": "p"}, "spec": {"egress": egress}});
    if namespaced {
        obj["metadata"]["namespace"] = json!("ns");
    }
    let projected = calico_policy(&obj, !namespaced);
    projected.rules[index].clone()
}

fn network_sets(sets: &[GenSet]) -> Vec<residency_guard::engine::NetworkSet> {
    sets.iter()
        .enumerate()
        .map(|(i, s)| {
            let mut obj = json!({
                "metadata": {"name": format!("s{i}"), "labels": {"set": s.label.to_string()}},
                "spec": {"nets": s.nets.iter().map(ToString::to_string).collect::<Vec<_>>()}
            });
            if let Some(ns) = s.namespace {
                obj["metadata"]["namespace"] = json!(ns);
            }
            calico_network_set(&obj, s.namespace.is_none())
        })
        .collect()
}

fn matches(rule: &GenRule, a: IpAddr, port: u8) -> bool {
    (!rule.partial || port == 0)
        && rule
            .nets
            .as_ref()
            .is_none_or(|nets| nets.iter().any(|n| n.contains(&a)))
}

/// Calico: `matches`, and in a selected set when the rule selects sets.
fn calico_matches(g: &GenPolicy, rule: &GenRule, sets: &[GenSet], a: IpAddr, port: u8) -> bool {
    let in_sets = match rule.set {
        None => true,
        Some((label, global)) => sets.iter().any(|s| {
            let scoped = if global {
                s.namespace.is_none()
            } else if g.kind == LayerKind::CalicoNetworkPolicy {
                s.namespace == Some("ns")
            } else {
                true
            };
            scoped && s.label == label && s.nets.iter().any(|n| n.contains(&a))
        }),
    };
    in_sets && matches(rule, a, port)
}

fn applies(g: &GenPolicy) -> bool {
    g.selects && g.egress
}

/// Order by (order or last, name).
fn sorted(policies: &[(usize, &GenPolicy)]) -> Vec<(usize, GenPolicy)> {
    let mut v: Vec<(usize, GenPolicy)> = policies.iter().map(|(i, g)| (*i, (*g).clone())).collect();
    v.sort_by(|(ia, a), (ib, b)| {
        // Calico puts Kubernetes NetworkPolicies at order 1000.
        let k = |g: &GenPolicy| match g.kind {
            LayerKind::NetworkPolicy => 1000.0,
            _ => g.order.map_or(f64::INFINITY, f64::from),
        };
        k(a).total_cmp(&k(b))
            .then_with(|| format!("p{ia}").cmp(&format!("p{ib}")))
    });
    v
}

fn model_kubernetes(policies: &[GenPolicy], a: IpAddr, port: u8) -> bool {
    let of = |kind: LayerKind| -> Vec<(usize, &GenPolicy)> {
        policies
            .iter()
            .enumerate()
            .filter(|(_, g)| g.kind == kind && applies(g))
            .collect()
    };
    'anp: for (_, g) in sorted(&of(LayerKind::AdminNetworkPolicy)) {
        for r in &g.rules {
            if matches(r, a, port) {
                match r.action {
                    RuleAction::Allow => return true,
                    RuleAction::Deny => return false,
                    _ => break 'anp,
                }
            }
        }
    }
    let nps = of(LayerKind::NetworkPolicy);
    if !nps.is_empty() {
        return nps
            .iter()
            .any(|(_, g)| g.rules.iter().any(|r| matches(r, a, port)));
    }
    for (_, g) in sorted(&of(LayerKind::BaselineAdminNetworkPolicy)) {
        for r in &g.rules {
            if matches(r, a, port) {
                return r.action == RuleAction::Allow;
            }
        }
    }
    true
}

fn model_calico(
    policies: &[GenPolicy],
    sets: &[GenSet],
    security_pass: bool,
    a: IpAddr,
    port: u8,
) -> bool {
    // (tier order, default pass, tier name, policies)
    let tier_of = |g: &GenPolicy| match g.kind {
        LayerKind::AdminNetworkPolicy => "adminnetworkpolicy",
        LayerKind::BaselineAdminNetworkPolicy => "baselineadminnetworkpolicy",
        LayerKind::NetworkPolicy => "default",
        _ if g.security_tier => "security",
        _ => "default",
    };
    let tiers: [(&str, bool); 4] = [
        ("security", security_pass),
        ("adminnetworkpolicy", true),
        ("default", false),
        ("baselineadminnetworkpolicy", true),
    ];
    'tier: for (name, default_pass) in tiers {
        let members: Vec<(usize, &GenPolicy)> = policies
            .iter()
            .enumerate()
            .filter(|(_, g)| applies(g) && tier_of(g) == name)
            .collect();
        if members.is_empty() {
            continue;
        }
        for (_, g) in sorted(&members) {
            for r in &g.rules {
                if calico_matches(&g, r, sets, a, port) {
                    match r.action {
                        RuleAction::Allow => return true,
                        RuleAction::Deny => return false,
                        RuleAction::Pass => continue 'tier,
                        RuleAction::Log => {}
                    }
                }
            }
        }
        if !default_pass {
            return false;
        }
    }
    true
}

fn model_cilium(policies: &[GenPolicy], mode: CiliumEnforcement, a: IpAddr, port: u8) -> bool {
    if mode == CiliumEnforcement::Never {
        return true;
    }
    let selecting: Vec<&GenPolicy> = policies.iter().filter(|g| applies(g)).collect();
    let rules = || selecting.iter().flat_map(|g| g.rules.iter());
    if rules().any(|r| r.action == RuleAction::Deny && matches(r, a, port)) {
        return false;
    }
    if rules().any(|r| r.action == RuleAction::Allow && matches(r, a, port)) {
        return true;
    }
    let default_deny = mode == CiliumEnforcement::Always
        || selecting
            .iter()
            .any(|g| g.kind == LayerKind::NetworkPolicy || g.default_deny);
    !default_deny
}

fn check(
    policies: &[GenPolicy],
    partial: bool,
    reachable: &IpSet,
    model: impl Fn(IpAddr, u8) -> bool,
) -> Result<(), TestCaseError> {
    for a in world() {
        let truth = model(a, 0) || model(a, 1);
        let engine = reachable.contains(a);
        if partial {
            prop_assert!(
                !truth || engine,
                "{a}: the model reaches it, the engine does not: {policies:#?}"
            );
        } else {
            prop_assert_eq!(truth, engine, "{}: {:#?}", a, policies);
        }
    }
    Ok(())
}

fn split(policies: &[GenPolicy]) -> (Vec<LayerPolicy>, Layers) {
    let mut nps = Vec::new();
    let mut layers = Layers::default();
    for (i, g) in policies.iter().enumerate() {
        let p = project(i, g);
        if g.kind == LayerKind::NetworkPolicy {
            nps.push(p);
        } else {
            layers.policies.push(p);
        }
    }
    (nps, layers)
}

fn pod_labels() -> BTreeMap<String, String> {
    [("app".to_string(), "api".to_string())].into()
}

const K8S_KINDS: &[(LayerKind, &[RuleAction])] = &[
    (LayerKind::AdminNetworkPolicy, ADMIN),
    (LayerKind::NetworkPolicy, ALLOW),
    (LayerKind::BaselineAdminNetworkPolicy, BASELINE),
];
const CALICO_KINDS: &[(LayerKind, &[RuleAction])] = &[
    (LayerKind::GlobalNetworkPolicy, CALICO),
    (LayerKind::CalicoNetworkPolicy, CALICO),
    (LayerKind::NetworkPolicy, ALLOW),
    (LayerKind::AdminNetworkPolicy, ADMIN),
    (LayerKind::BaselineAdminNetworkPolicy, BASELINE),
];
const CILIUM_KINDS: &[(LayerKind, &[RuleAction])] = &[
    (LayerKind::CiliumNetworkPolicy, BASELINE),
    (LayerKind::CiliumClusterwideNetworkPolicy, BASELINE),
    (LayerKind::NetworkPolicy, ALLOW),
];

fn policies(
    kinds: &'static [(LayerKind, &'static [RuleAction])],
) -> impl Strategy<Value = (bool, Vec<GenPolicy>)> {
    any::<bool>().prop_flat_map(move |partial| {
        (
            Just(partial),
            proptest::collection::vec(policy_strategy(kinds, partial), 0..6),
        )
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1500))]

    #[test]
    fn kubernetes_order_matches_the_model((partial, generated) in policies(K8S_KINDS)) {
        let (nps, layers) = split(&generated);
        let nps: Vec<&LayerPolicy> = nps.iter().collect();
        let (ns_labels, labels) = (BTreeMap::new(), pod_labels());
        let pod = PodView::new("ns", &ns_labels, &labels);
        let reach = kubernetes_reach(&nps, &layers, &pod).reachable();
        check(&generated, partial, &reach, |a, port| model_kubernetes(&generated, a, port))?;
    }

    #[test]
    fn calico_order_matches_the_model(
        (partial, generated) in policies(CALICO_KINDS),
        security_pass in any::<bool>(),
        sets in proptest::collection::vec(set_strategy(), 0..4),
    ) {
        let (nps, mut layers) = split(&generated);
        layers.set_tier("security", CalicoTier { order: Some(100.0), default_pass: security_pass });
        layers.network_sets = network_sets(&sets);
        let nps: Vec<&LayerPolicy> = nps.iter().collect();
        let (ns_labels, labels) = (BTreeMap::new(), pod_labels());
        let pod = PodView::new("ns", &ns_labels, &labels);
        let reach = calico_reach(&nps, &layers, &pod, &BTreeMap::new()).reachable();
        check(&generated, partial, &reach, |a, port| model_calico(&generated, &sets, security_pass, a, port))?;
    }

    #[test]
    fn cilium_union_matches_the_model(
        (partial, generated) in policies(CILIUM_KINDS),
        mode in proptest::sample::select(vec![CiliumEnforcement::Default, CiliumEnforcement::Always, CiliumEnforcement::Never]),
    ) {
        let (nps, layers) = split(&generated);
        let nps: Vec<&LayerPolicy> = nps.iter().collect();
        let (ns_labels, labels) = (BTreeMap::new(), pod_labels());
        let pod = PodView::new("ns", &ns_labels, &labels);
        let reach = cilium_reach(&nps, &layers, &pod, mode).reachable();
        check(&generated, partial, &reach, |a, port| model_cilium(&generated, mode, a, port))?;
    }
}
