//! Egress across policy layers: table tests per kind (Cilium, Calico,
//! AdminNetworkPolicy and BaselineAdminNetworkPolicy, with NetworkPolicy),
//! each row a cluster's objects, the CNI semantics, and the egress codes a
//! classified Deployment gets under a MainlandOnly policy.

use jiff::Timestamp;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use residency_guard::api::ResidencyPolicy;
use residency_guard::engine::{
    AddressSpace, Catalogue, CiliumEnforcement, Cni, Code, EgressSemantics, IpSet, Snapshot,
    Workload, evaluate,
};
use serde_json::{Value, json};

const MAINLAND: &str = "1.0.1.0/24";
const ABROAD: &str = "8.8.8.0/24";

fn now() -> Timestamp {
    "2026-11-23T00:00:00Z".parse().unwrap()
}

fn deployment() -> Workload {
    let v: Value = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "api", "namespace": "payments"},
        "spec": {"template": {"metadata": {"labels": {"app": "api", "residencyguard.io/data-class": "personal"}},
                 "spec": {"nodeSelector": {"topology.kubernetes.io/region": "cn-north-1"},
                          "containers": [{"name": "c", "image": "i"}]}}}
    });
    Workload::from_value(&v, "payments").unwrap()
}

fn snapshot(cni: Cni, mode: CiliumEnforcement, objects: &[Value], egress: Value) -> Snapshot {
    let mut s = Snapshot::new(Catalogue::builtin().clone(), AddressSpace::builtin());
    let policy: ResidencyPolicy = serde_json::from_value(json!({
        "apiVersion": "residencyguard.io/v1alpha1", "kind": "ResidencyPolicy",
        "metadata": {"name": "mainland"},
        "spec": {"dataClasses": ["personal"], "egress": egress, "action": "Deny"}
    }))
    .unwrap();
    s.add_policy(&policy, now()).unwrap();
    s.namespaces.insert(
        "payments".into(),
        [("team".to_string(), "pay".to_string())].into(),
    );
    s.network.set_semantics(EgressSemantics {
        cni,
        cilium_enforcement: mode,
    });
    for o in objects {
        let api = o["apiVersion"].as_str().unwrap();
        let kind = o["kind"].as_str().unwrap();
        if api == "networking.k8s.io/v1" {
            let np: NetworkPolicy = serde_json::from_value(o.clone()).unwrap();
            s.network.add_network_policy(&np);
        } else {
            assert!(s.network.add_layer_object(api, kind, o), "{kind}");
        }
    }
    s
}

fn egress_codes(s: &Snapshot) -> Vec<Code> {
    let v = evaluate(s, &deployment(), now()).unwrap();
    let mut codes: Vec<Code> = v
        .violations()
        .map(|(_, v)| v.code)
        .filter(|c| c.is_egress())
        .collect();
    codes.sort_by_key(|c| c.as_str());
    codes.dedup();
    codes
}

/// Every row is judged twice: each rule's addresses judged on the spot,
/// and looked up from the snapshot's table (`judge_egress_rules`, as
/// `SnapshotBuilder::build` does). The verdicts must be the same.
fn codes_with(cni: Cni, mode: CiliumEnforcement, objects: &[Value], egress: Value) -> Vec<Code> {
    let mut s = snapshot(cni, mode, objects, egress);
    let on_the_spot = evaluate(&s, &deployment(), now()).unwrap();
    s.judge_egress_rules();
    let looked_up = evaluate(&s, &deployment(), now()).unwrap();
    assert_eq!(
        format!("{on_the_spot:?}"),
        format!("{looked_up:?}"),
        "judged in advance or on the spot, the verdict is the same"
    );
    egress_codes(&s)
}

fn codes(cni: Cni, objects: &[Value]) -> Vec<Code> {
    codes_with(
        cni,
        CiliumEnforcement::Default,
        objects,
        json!({"mode": "MainlandOnly"}),
    )
}

fn np(cidr: &str) -> Value {
    json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
           "metadata": {"name": "np", "namespace": "payments"},
           "spec": {"podSelector": {"matchLabels": {"app": "api"}}, "policyTypes": ["Egress"],
                    "egress": [{"to": [{"ipBlock": {"cidr": cidr}}]}]}})
}

fn np_in_cluster() -> Value {
    json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
           "metadata": {"name": "np", "namespace": "payments"},
           "spec": {"podSelector": {}, "policyTypes": ["Egress"],
                    "egress": [{"to": [{"namespaceSelector": {}}]}]}})
}

fn cnp(name: &str, egress: Value) -> Value {
    json!({"apiVersion": "cilium.io/v2", "kind": "CiliumNetworkPolicy",
           "metadata": {"name": name, "namespace": "payments"},
           "spec": {"endpointSelector": {"matchLabels": {"k8s:app": "api"}}, "egress": egress}})
}

fn ccnp(name: &str, spec: Value) -> Value {
    json!({"apiVersion": "cilium.io/v2", "kind": "CiliumClusterwideNetworkPolicy",
           "metadata": {"name": name}, "spec": spec})
}

fn anp(name: &str, priority: i32, action: &str, networks: &[&str]) -> Value {
    json!({"apiVersion": "policy.networking.k8s.io/v1alpha1", "kind": "AdminNetworkPolicy",
           "metadata": {"name": name},
           "spec": {"priority": priority,
                    "subject": {"namespaces": {"matchLabels": {"team": "pay"}}},
                    "egress": [{"name": "r", "action": action, "to": [{"networks": networks}]}]}})
}

fn banp(action: &str, networks: &[&str]) -> Value {
    json!({"apiVersion": "policy.networking.k8s.io/v1alpha1", "kind": "BaselineAdminNetworkPolicy",
           "metadata": {"name": "default"},
           "spec": {"subject": {"namespaces": {}},
                    "egress": [{"name": "r", "action": action, "to": [{"networks": networks}]}]}})
}

fn gnp(name: &str, order: f64, selector: &str, egress: Value) -> Value {
    json!({"apiVersion": "crd.projectcalico.org/v1", "kind": "GlobalNetworkPolicy",
           "metadata": {"name": name},
           "spec": {"order": order, "selector": selector, "types": ["Egress"], "egress": egress}})
}

use Code::*;

#[test]
fn cilium_policies_project_and_combine() {
    let c = Cni::Cilium;
    // Restricted only by a CiliumNetworkPolicy to a mainland CIDR.
    assert_eq!(
        codes(c, &[cnp("to-cn", json!([{"toCIDR": [MAINLAND]}]))]),
        vec![]
    );
    // The same, opened to the world by a clusterwide policy: allows union.
    let open = ccnp(
        "open",
        json!({"endpointSelector": {}, "egress": [{"toCIDRSet": [{"cidr": "0.0.0.0/0"}]}]}),
    );
    assert_eq!(
        codes(
            c,
            &[cnp("to-cn", json!([{"toCIDR": [MAINLAND]}])), open.clone()]
        ),
        vec![EgressOutsideMainland]
    );
    // NetworkPolicy isolation is no guard against a Cilium allow.
    assert_eq!(
        codes(c, &[np(MAINLAND), open.clone()]),
        vec![EgressOutsideMainland]
    );
    // toCIDRSet except removes the outside part.
    assert_eq!(
        codes(
            c,
            &[cnp(
                "x",
                json!([{"toCIDRSet": [{"cidr": "8.8.0.0/16", "except": ["8.8.0.0/16"]}]}, {"toCIDR": [MAINLAND]}])
            )]
        ),
        vec![]
    );
    // egressDeny takes precedence over every allow, of any kind.
    let deny_world = ccnp(
        "deny",
        json!({"endpointSelector": {"matchLabels": {"io.kubernetes.pod.namespace": "payments"}},
               "egressDeny": [{"toCIDRSet": [{"cidr": "0.0.0.0/1"}, {"cidr": "128.0.0.0/1"}]},
                              {"toEntities": ["world-ipv6"]}]}),
    );
    assert_eq!(codes(c, &[open.clone(), deny_world.clone()]), vec![]);
    // A deny on some ports closes nothing.
    let deny_port = ccnp(
        "deny-port",
        json!({"endpointSelector": {}, "egressDeny": [{"toEntities": ["world"], "toPorts": [{"ports": [{"port": "443"}]}]}]}),
    );
    assert_eq!(
        codes(c, &[open.clone(), deny_port]),
        vec![EgressOutsideMainland]
    );
    // toEntities world allows every destination.
    assert_eq!(
        codes(c, &[cnp("w", json!([{"toEntities": ["world"]}]))]),
        vec![EgressAllowsAll]
    );
    // In-cluster entities and endpoints reach nothing outside.
    assert_eq!(
        codes(
            c,
            &[cnp(
                "in",
                json!([{"toEntities": ["cluster", "kube-apiserver"]}, {"toEndpoints": [{}]}])
            )]
        ),
        vec![]
    );
    // Nothing selects the pod: unrestricted, unless enforcement is always.
    let other = json!({"apiVersion": "cilium.io/v2", "kind": "CiliumNetworkPolicy",
        "metadata": {"name": "o", "namespace": "payments"},
        "spec": {"endpointSelector": {"matchLabels": {"app": "db"}}, "egress": [{"toCIDR": [ABROAD]}]}});
    assert_eq!(
        codes(c, std::slice::from_ref(&other)),
        vec![EgressUnrestricted]
    );
    let mm = json!({"mode": "MainlandOnly"});
    assert_eq!(
        codes_with(
            c,
            CiliumEnforcement::Always,
            std::slice::from_ref(&other),
            mm.clone()
        ),
        vec![]
    );
    // never: no policy is enforced.
    assert_eq!(
        codes_with(
            c,
            CiliumEnforcement::Never,
            &[cnp("to-cn", json!([{"toCIDR": [MAINLAND]}]))],
            mm.clone()
        ),
        vec![EgressUnrestricted]
    );
    // enableDefaultDeny.egress false: its allows do not isolate.
    let no_dd = json!({"apiVersion": "cilium.io/v2", "kind": "CiliumNetworkPolicy",
        "metadata": {"name": "nodd", "namespace": "payments"},
        "spec": {"endpointSelector": {}, "enableDefaultDeny": {"egress": false},
                 "egress": [{"toCIDR": [MAINLAND]}]}});
    assert_eq!(codes(c, &[no_dd]), vec![EgressOutsideMainland]);
    // toServices and CIDR groups cannot be judged: fail closed.
    assert_eq!(
        codes(
            c,
            &[cnp(
                "svc",
                json!([{"toServices": [{"k8sService": {"serviceName": "x", "namespace": "payments"}}]}])
            )]
        ),
        vec![EgressAllowsAll]
    );
    // A CNP in another namespace does not select the pod.
    let elsewhere = json!({"apiVersion": "cilium.io/v2", "kind": "CiliumNetworkPolicy",
        "metadata": {"name": "e", "namespace": "other"},
        "spec": {"endpointSelector": {}, "egress": [{"toCIDR": [ABROAD]}]}});
    assert_eq!(codes(c, &[np(MAINLAND), elsewhere]), vec![]);
    // Cilium kinds are not read under Kubernetes semantics.
    assert_eq!(codes(Cni::Kubernetes, &[np(MAINLAND), open]), vec![]);
}

#[test]
fn names_are_not_addresses() {
    let fqdn = cnp(
        "fqdn",
        json!([{"toFQDNs": [{"matchName": "api.pay.example.cn"}, {"matchPattern": "*.cdn.example.cn"}]}]),
    );
    let c = Cni::Cilium;
    let mm = CiliumEnforcement::Default;
    assert_eq!(
        codes(c, std::slice::from_ref(&fqdn)),
        vec![EgressNotGuaranteed]
    );
    let allowed = json!({"mode": "MainlandOnly", "allowedDomains": [
        {"domain": "example.cn", "source": "ICP 备案 京ICP备00000000号"}]});
    assert_eq!(
        codes_with(c, mm, std::slice::from_ref(&fqdn), allowed),
        vec![]
    );
    let partly = json!({"mode": "MainlandOnly", "allowedDomains": [
        {"domain": "pay.example.cn", "source": "contract 42"}]});
    assert_eq!(
        codes_with(c, mm, std::slice::from_ref(&fqdn), partly),
        vec![EgressNotGuaranteed]
    );
    // A suffix match is on labels: "xample.cn" is not "example.cn".
    let wrong = json!({"mode": "MainlandOnly", "allowedDomains": [
        {"domain": "xample.cn", "source": "x"}]});
    assert_eq!(
        codes_with(c, mm, std::slice::from_ref(&fqdn), wrong),
        vec![EgressNotGuaranteed]
    );
    // The notice names the domain.
    let s = snapshot(c, mm, &[fqdn], json!({"mode": "MainlandOnly"}));
    let v = evaluate(&s, &deployment(), now()).unwrap();
    assert!(
        v.notices
            .iter()
            .any(|n| n.code == "EgressDomainUnverified"
                && n.message.en.contains("api.pay.example.cn")),
        "{:?}",
        v.notices
    );
}

#[test]
fn admin_network_policies_order_around_network_policy() {
    let k = Cni::Kubernetes;
    // An ANP Allow abroad wins over the namespace's NetworkPolicy.
    assert_eq!(
        codes(k, &[np(MAINLAND), anp("open", 10, "Allow", &[ABROAD])]),
        vec![EgressOutsideMainland]
    );
    // An ANP Deny of everything closes what the NetworkPolicy opens.
    assert_eq!(
        codes(
            k,
            &[
                np("0.0.0.0/0"),
                anp("close", 10, "Deny", &["0.0.0.0/0", "::/0"])
            ]
        ),
        vec![]
    );
    // Priority: lower number first. Deny at 5 beats Allow at 10.
    assert_eq!(
        codes(
            k,
            &[
                np(MAINLAND),
                anp("deny", 5, "Deny", &[ABROAD]),
                anp("allow", 10, "Allow", &[ABROAD])
            ]
        ),
        vec![]
    );
    // Pass hands the traffic to NetworkPolicy, which isolates it.
    assert_eq!(
        codes(
            k,
            &[
                np(MAINLAND),
                anp("pass", 1, "Pass", &[ABROAD]),
                anp("allow", 10, "Allow", &[ABROAD])
            ]
        ),
        vec![]
    );
    // No NetworkPolicy: BANP decides. A Deny of everything closes it.
    assert_eq!(codes(k, &[banp("Deny", &["0.0.0.0/0", "::/0"])]), vec![]);
    // A BANP Deny of part leaves the rest to the default allow.
    assert_eq!(
        codes(k, &[banp("Deny", &[ABROAD])]),
        vec![EgressOutsideMainland]
    );
    // A NetworkPolicy isolates: BANP is never consulted.
    assert_eq!(codes(k, &[np(MAINLAND), banp("Allow", &[ABROAD])]), vec![]);
    // An ANP whose subject is another namespace does nothing here.
    let other = json!({"apiVersion": "policy.networking.k8s.io/v1alpha1", "kind": "AdminNetworkPolicy",
        "metadata": {"name": "o"},
        "spec": {"priority": 1, "subject": {"namespaces": {"matchLabels": {"team": "other"}}},
                 "egress": [{"name": "r", "action": "Allow", "to": [{"networks": [ABROAD]}]}]}});
    assert_eq!(codes(k, &[np(MAINLAND), other]), vec![]);
    // Calico enforces AdminNetworkPolicy in its own tier, in the same order.
    assert_eq!(
        codes(
            Cni::Calico,
            &[np(MAINLAND), anp("open", 10, "Allow", &[ABROAD])]
        ),
        vec![EgressOutsideMainland]
    );
}

#[test]
fn calico_tiers_order_and_pass() {
    let c = Cni::Calico;
    let deny_all = json!([{"action": "Deny"}]);
    // A GlobalNetworkPolicy Deny ordered first closes what a
    // NetworkPolicy (order 1000 in the default tier) opens.
    assert_eq!(
        codes(
            c,
            &[
                np("0.0.0.0/0"),
                gnp("deny-abroad", 100.0, "all()", deny_all.clone())
            ]
        ),
        vec![]
    );
    // Ordered after the NetworkPolicy, it comes too late.
    assert_eq!(
        codes(
            c,
            &[
                np("0.0.0.0/0"),
                gnp("deny-late", 2000.0, "all()", deny_all.clone())
            ]
        ),
        vec![EgressOutsideMainland]
    );
    // Allow with nets / notNets.
    assert_eq!(
        codes(
            c,
            &[gnp(
                "a",
                1.0,
                "app == 'api'",
                json!([{"action": "Allow", "destination": {"nets": [MAINLAND]}}])
            )]
        ),
        vec![]
    );
    assert_eq!(
        codes(
            c,
            &[gnp(
                "a",
                1.0,
                "app == 'api'",
                json!([{"action": "Allow", "destination": {"nets": ["8.8.0.0/16"], "notNets": ["8.8.0.0/17"]}}])
            )]
        ),
        vec![EgressOutsideMainland]
    );
    // A policy that applies and decides nothing: the tier's end denies.
    assert_eq!(
        codes(c, &[gnp("log", 1.0, "all()", json!([{"action": "Log"}]))]),
        vec![]
    );
    // Pass to the next tier; with nothing after, the profile allows.
    let pass = gnp("pass", 1.0, "all()", json!([{"action": "Pass"}]));
    let mut security = pass.clone();
    security["spec"]["tier"] = json!("security");
    let tier = json!({"apiVersion": "crd.projectcalico.org/v1", "kind": "Tier",
                      "metadata": {"name": "security"}, "spec": {"order": 100}});
    assert_eq!(
        codes(c, &[security.clone(), tier.clone()]),
        vec![EgressOutsideMainland]
    );
    // ...and with the NetworkPolicy in the default tier after it, isolated.
    assert_eq!(codes(c, &[security, tier, np(MAINLAND)]), vec![]);
    // A policy naming a Tier not given: fail closed.
    let mut orphan = gnp("orphan", 1.0, "all()", deny_all);
    orphan["spec"]["tier"] = json!("missing");
    assert_eq!(codes(c, &[np(MAINLAND), orphan]), vec![EgressAllowsAll]);
    // Selector syntax not read here: fail closed.
    let odd = gnp("odd", 1.0, "app =~ 'a.*'", json!([{"action": "Deny"}]));
    assert_eq!(codes(c, &[np(MAINLAND), odd]), vec![EgressAllowsAll]);
    // A destination selector is in-cluster unless it selects a network
    // set; global() selects GlobalNetworkSets, here none.
    assert_eq!(
        codes(
            c,
            &[gnp(
                "dns",
                1.0,
                "all()",
                json!([{"action": "Allow", "destination": {"selector": "k8s-app == 'kube-dns'"}}])
            )]
        ),
        vec![]
    );
    assert_eq!(
        codes(
            c,
            &[gnp(
                "sets",
                1.0,
                "all()",
                json!([{"action": "Allow", "destination": {"namespaceSelector": "global()"}}])
            )]
        ),
        vec![]
    );
    // A Calico NetworkPolicy is scoped to its namespace.
    let cnp_other = json!({"apiVersion": "crd.projectcalico.org/v1", "kind": "NetworkPolicy",
        "metadata": {"name": "x", "namespace": "other"},
        "spec": {"selector": "all()", "types": ["Egress"], "egress": [{"action": "Allow"}]}});
    assert_eq!(codes(c, &[np(MAINLAND), cnp_other]), vec![]);
    // A GlobalNetworkPolicy's namespaceSelector reads namespace labels.
    let mut by_ns = gnp(
        "ns",
        1.0,
        "all()",
        json!([{"action": "Allow", "destination": {"nets": [ABROAD]}}]),
    );
    by_ns["spec"]["namespaceSelector"] = json!("team == 'pay'");
    assert_eq!(
        codes(c, &[np(MAINLAND), by_ns.clone()]),
        vec![EgressOutsideMainland]
    );
    by_ns["spec"]["namespaceSelector"] = json!("team == 'other'");
    assert_eq!(codes(c, &[np(MAINLAND), by_ns]), vec![]);
    // Deny with ports closes nothing.
    assert_eq!(
        codes(
            c,
            &[
                np("0.0.0.0/0"),
                gnp(
                    "d",
                    1.0,
                    "all()",
                    json!([{"action": "Deny", "protocol": "TCP", "destination": {"ports": [443]}}])
                )
            ]
        ),
        vec![EgressOutsideMainland]
    );
}

fn network_set(namespace: &str, name: &str, labels: Value, nets: &[&str]) -> Value {
    json!({"apiVersion": "crd.projectcalico.org/v1", "kind": "NetworkSet",
           "metadata": {"name": name, "namespace": namespace, "labels": labels},
           "spec": {"nets": nets}})
}

fn global_network_set(name: &str, labels: Value, nets: &[&str]) -> Value {
    json!({"apiVersion": "crd.projectcalico.org/v1", "kind": "GlobalNetworkSet",
           "metadata": {"name": name, "labels": labels},
           "spec": {"nets": nets}})
}

/// A Calico NetworkPolicy in `payments` selecting the Deployment.
fn calico_np(name: &str, order: f64, egress: Value) -> Value {
    json!({"apiVersion": "crd.projectcalico.org/v1", "kind": "NetworkPolicy",
           "metadata": {"name": name, "namespace": "payments"},
           "spec": {"order": order, "selector": "app == 'api'", "types": ["Egress"], "egress": egress}})
}

fn allow_to(destination: Value) -> Value {
    json!([{"action": "Allow", "destination": destination}])
}

#[test]
fn calico_network_sets_are_reached_by_the_selectors_that_select_them() {
    let c = Cni::Calico;
    let egress = || json!({"role": "egress"});
    let to_sets = calico_np(
        "to-sets",
        1.0,
        allow_to(json!({"selector": "role == 'egress'"})),
    );
    // A namespaced policy's selector selects the sets of its namespace:
    // one abroad opens egress abroad, one in the mainland does not.
    assert_eq!(
        codes(
            c,
            &[
                to_sets.clone(),
                network_set("payments", "out", egress(), &[ABROAD])
            ]
        ),
        vec![EgressOutsideMainland]
    );
    assert_eq!(
        codes(
            c,
            &[
                to_sets.clone(),
                network_set("payments", "cn", egress(), &[MAINLAND])
            ]
        ),
        vec![]
    );
    // A set with other labels, or in another namespace, is not selected.
    assert_eq!(
        codes(
            c,
            &[
                to_sets.clone(),
                network_set("payments", "x", json!({"role": "x"}), &[ABROAD])
            ]
        ),
        vec![]
    );
    assert_eq!(
        codes(
            c,
            &[
                to_sets.clone(),
                network_set("other", "out", egress(), &[ABROAD])
            ]
        ),
        vec![]
    );
    // ...unless the rule's namespaceSelector selects that namespace (by
    // name or by label: `payments` is labelled team=pay).
    let other_ns = calico_np(
        "to-other",
        1.0,
        allow_to(
            json!({"selector": "role == 'egress'", "namespaceSelector": "projectcalico.org/name == 'other'"}),
        ),
    );
    assert_eq!(
        codes(
            c,
            &[
                other_ns.clone(),
                network_set("other", "out", egress(), &[ABROAD])
            ]
        ),
        vec![EgressOutsideMainland]
    );
    assert_eq!(
        codes(
            c,
            &[
                other_ns,
                network_set("payments", "out", egress(), &[ABROAD])
            ]
        ),
        vec![]
    );
    let by_team = calico_np(
        "by-team",
        1.0,
        allow_to(json!({"namespaceSelector": "team == 'pay'"})),
    );
    assert_eq!(
        codes(
            c,
            &[
                by_team,
                network_set("payments", "any", json!({}), &[ABROAD])
            ]
        ),
        vec![EgressOutsideMainland]
    );
    // A GlobalNetworkSet: not selected by a namespaced selector...
    let everywhere = global_network_set("everywhere", egress(), &["0.0.0.0/0", "::/0"]);
    assert_eq!(codes(c, &[to_sets.clone(), everywhere.clone()]), vec![]);
    // ...but by global(), and by a GlobalNetworkPolicy's own selector.
    let via_global = calico_np(
        "via-global",
        1.0,
        allow_to(json!({"namespaceSelector": "global()", "selector": "role == 'egress'"})),
    );
    assert_eq!(
        codes(c, &[via_global.clone(), everywhere.clone()]),
        vec![EgressAllowsAll]
    );
    assert_eq!(
        codes(
            c,
            &[
                via_global,
                network_set("payments", "out", egress(), &[ABROAD])
            ]
        ),
        vec![],
        "global() selects no namespaced set"
    );
    let gnp_sets = gnp(
        "g",
        1.0,
        "all()",
        allow_to(json!({"selector": "role == 'egress'"})),
    );
    assert_eq!(
        codes(
            c,
            &[
                gnp_sets.clone(),
                global_network_set("abroad", egress(), &[ABROAD])
            ]
        ),
        vec![EgressOutsideMainland]
    );
    // A GlobalNetworkPolicy's selector spans every namespace's sets too.
    assert_eq!(
        codes(
            c,
            &[gnp_sets, network_set("other", "out", egress(), &[ABROAD])]
        ),
        vec![EgressOutsideMainland]
    );
    // nets and the set's addresses must both match; notNets subtracts.
    assert_eq!(
        codes(
            c,
            &[
                calico_np(
                    "both",
                    1.0,
                    allow_to(json!({"selector": "role == 'egress'", "nets": [MAINLAND]}))
                ),
                network_set("payments", "out", egress(), &[ABROAD, MAINLAND])
            ]
        ),
        vec![]
    );
    assert_eq!(
        codes(
            c,
            &[
                calico_np(
                    "less",
                    1.0,
                    allow_to(json!({"selector": "role == 'egress'", "notNets": [ABROAD]}))
                ),
                network_set("payments", "out", egress(), &[ABROAD, MAINLAND])
            ]
        ),
        vec![]
    );
    // A destination limited to service accounts selects no set.
    assert_eq!(
        codes(
            c,
            &[
                calico_np(
                    "sa",
                    1.0,
                    allow_to(
                        json!({"serviceAccounts": {"names": ["api"]}, "selector": "role == 'egress'"})
                    )
                ),
                network_set("payments", "out", egress(), &[ABROAD])
            ]
        ),
        vec![]
    );
    // A set whose nets cannot be read fails closed when selected.
    assert_eq!(
        codes(
            c,
            &[
                to_sets.clone(),
                network_set("payments", "bad", egress(), &["8.8.8.8/33"])
            ]
        ),
        vec![EgressAllowsAll]
    );
    // allowedEgressDomains are names, judged as a rule's domains.
    let mut named = network_set("payments", "named", egress(), &[]);
    named["spec"]["allowedEgressDomains"] = json!(["api.example.com"]);
    assert_eq!(codes(c, &[to_sets, named]), vec![EgressNotGuaranteed]);
}

#[test]
fn a_calico_deny_closes_the_sets_it_selects() {
    let c = Cni::Calico;
    let abroad = || json!({"zone": "abroad"});
    // A NetworkPolicy (default tier, order 1000) opens everything; a
    // GlobalNetworkPolicy ordered first denies the set: closed.
    let deny_set = gnp(
        "deny-abroad",
        100.0,
        "all()",
        json!([{"action": "Deny", "destination": {"selector": "zone == 'abroad'"}}]),
    );
    let all_v4 = global_network_set("all-v4", abroad(), &["0.0.0.0/0"]);
    assert_eq!(
        codes(c, &[np("0.0.0.0/0"), deny_set.clone(), all_v4.clone()]),
        vec![]
    );
    // Without the set (deleted), the Deny closes nothing outside.
    assert_eq!(
        codes(c, &[np("0.0.0.0/0"), deny_set.clone()]),
        vec![EgressOutsideMainland]
    );
    // A namespaced Deny with only a notSelector is scoped to its own
    // namespace's endpoints and sets: it closes no address outside.
    let not_only = calico_np(
        "not-only",
        1.0,
        json!([{"action": "Deny", "destination": {"notSelector": "zone == 'abroad'"}}]),
    );
    assert_eq!(
        codes(c, &[np("0.0.0.0/0"), not_only]),
        vec![EgressOutsideMainland]
    );
    // A global Allow to everything but the set: the set's addresses stay
    // closed for the tier's end.
    let all_but = gnp(
        "all-but",
        1.0,
        "all()",
        json!([{"action": "Allow", "destination": {"notSelector": "zone == 'abroad'"}}]),
    );
    assert_eq!(
        codes(
            c,
            &[
                all_but.clone(),
                global_network_set("all", abroad(), &["0.0.0.0/0", "::/0"])
            ]
        ),
        vec![]
    );
    assert_eq!(codes(c, &[all_but]), vec![EgressAllowsAll]);
    // A Deny excluding a set it cannot read closes nothing for sure.
    let deny_but = gnp(
        "deny-but",
        1.0,
        "all()",
        json!([{"action": "Deny", "destination": {"notSelector": "zone == 'abroad'"}}]),
    );
    assert_eq!(codes(c, &[np("0.0.0.0/0"), deny_but.clone()]), vec![]);
    assert_eq!(
        codes(
            c,
            &[
                np("0.0.0.0/0"),
                deny_but,
                global_network_set("odd", abroad(), &["8.8.8.8/33"])
            ]
        ),
        vec![EgressOutsideMainland]
    );
}

#[test]
fn a_network_set_change_is_judged_like_a_policy_change() {
    use residency_guard::api::Action;
    use residency_guard::engine::judge_layer_change;
    use std::sync::Arc;
    let to_sets = calico_np(
        "to-sets",
        1.0,
        allow_to(json!({"selector": "role == 'egress'"})),
    );
    let cn = network_set("other", "cn", json!({"role": "egress"}), &[MAINLAND]);
    // Evaluated in order: the Allow to sets, the Deny of the global set
    // (every address), then (in one case) an Allow of everything.
    let deny = gnp(
        "deny",
        10.0,
        "all()",
        json!([{"action": "Deny", "destination": {"namespaceSelector": "global()", "selector": "zone == 'abroad'"}}]),
    );
    let all_v4 = global_network_set("all-v4", json!({"zone": "abroad"}), &["0.0.0.0/0", "::/0"]);
    let open_after = calico_np("open", 20.0, json!([{"action": "Allow"}]));
    let s = snapshot(
        Cni::Calico,
        CiliumEnforcement::Default,
        &[to_sets, cn, deny, all_v4],
        json!({"mode": "MainlandOnly"}),
    );
    let w = Arc::new(deployment());
    let workloads_in = |ns: &str| {
        if ns == "payments" {
            vec![Arc::clone(&w)]
        } else {
            vec![]
        }
    };
    let judge = |kind: &str, namespace: Option<&str>, name: &str, new: Option<&Value>| {
        judge_layer_change(
            &s,
            &workloads_in,
            "crd.projectcalico.org/v1",
            kind,
            namespace,
            name,
            new,
            now(),
        )
    };
    // A set of the policy's namespace gaining an address abroad.
    let abroad = network_set("payments", "out", json!({"role": "egress"}), &[ABROAD]);
    let change = judge("NetworkSet", Some("payments"), "out", Some(&abroad));
    assert_eq!(change.action(), Some(Action::Deny), "{change:?}");
    assert_eq!(change.opened[0].violation.code, EgressOutsideMainland);
    // A set of another namespace, which no rule selects, opens nothing.
    let elsewhere = network_set("other", "cn", json!({"role": "egress"}), &[ABROAD]);
    let change = judge("NetworkSet", Some("other"), "cn", Some(&elsewhere));
    assert!(change.opened.is_empty(), "{change:?}");
    // Deleting a set a Deny selects opens what it closed, once an Allow
    // later reaches it; with none, deleting opens nothing.
    let change = judge("GlobalNetworkSet", None, "all-v4", None);
    assert!(change.opened.is_empty(), "{change:?}");
    let mut with_open = s.clone();
    with_open
        .network
        .add_layer_object("crd.projectcalico.org/v1", "NetworkPolicy", &open_after);
    let change = judge_layer_change(
        &with_open,
        &workloads_in,
        "crd.projectcalico.org/v1",
        "GlobalNetworkSet",
        None,
        "all-v4",
        None,
        now(),
    );
    assert_eq!(change.action(), Some(Action::Deny), "{change:?}");
    assert_eq!(change.opened[0].violation.code, EgressAllowsAll);
}

#[test]
fn kinds_absent_are_not_allow_all() {
    // Only NetworkPolicy: every semantics judges as Kubernetes does.
    for cni in [Cni::Kubernetes, Cni::Cilium, Cni::Calico] {
        assert_eq!(codes(cni, &[np_in_cluster()]), vec![], "{cni:?}");
        assert_eq!(
            codes(cni, &[np(ABROAD)]),
            vec![EgressOutsideMainland],
            "{cni:?}"
        );
        assert_eq!(codes(cni, &[]), vec![EgressUnrestricted], "{cni:?}");
    }
}

#[test]
fn evidence_names_the_layer_that_allowed_and_closed() {
    let s = snapshot(
        Cni::Kubernetes,
        CiliumEnforcement::Default,
        &[np("0.0.0.0/0"), anp("deny", 1, "Deny", &[ABROAD])],
        json!({"mode": "MainlandOnly"}),
    );
    let v = evaluate(&s, &deployment(), now()).unwrap();
    let eff = v.egress.as_ref().unwrap();
    let json = serde_json::to_value(eff).unwrap();
    let layers = json["layers"].as_array().unwrap();
    assert!(
        layers.iter().any(|d| d["by"] == "AdminNetworkPolicy deny"
            && d["outcome"] == "denied"
            && d["ranges"][0] == ABROAD),
        "{layers:?}"
    );
    assert!(
        layers
            .iter()
            .any(|d| d["by"] == "NetworkPolicy payments/np" && d["outcome"] == "allowed"),
        "{layers:?}"
    );
    // The message names the NetworkPolicy's rule and what it allows.
    let (_, violation) = v.violations().next().unwrap();
    assert_eq!(violation.code, EgressOutsideMainland);
    assert!(
        violation
            .field
            .starts_with("NetworkPolicy payments/np spec.egress[0].to[0].ipBlock"),
        "{}",
        violation.field
    );
    assert!(
        violation.message.problem.en.contains("0.0.0.0/0"),
        "{}",
        violation.message.problem.en
    );
}

#[test]
fn a_layer_change_that_opens_egress_is_what_the_webhook_denies() {
    use residency_guard::api::Action;
    use residency_guard::engine::judge_layer_change;
    use std::sync::Arc;
    let to_cn = cnp("to-cn", json!([{"toCIDR": [MAINLAND]}]));
    let s = snapshot(
        Cni::Cilium,
        CiliumEnforcement::Default,
        std::slice::from_ref(&to_cn),
        json!({"mode": "MainlandOnly"}),
    );
    let w = Arc::new(deployment());
    let workloads_in = |ns: &str| {
        if ns == "payments" {
            vec![Arc::clone(&w)]
        } else {
            vec![]
        }
    };
    let open = ccnp(
        "open",
        json!({"endpointSelector": {}, "egress": [{"toCIDRSet": [{"cidr": "0.0.0.0/0"}]}]}),
    );
    let change = judge_layer_change(
        &s,
        &workloads_in,
        "cilium.io/v2",
        "CiliumClusterwideNetworkPolicy",
        None,
        "open",
        Some(&open),
        now(),
    );
    assert_eq!(change.action(), Some(Action::Deny), "{change:?}");
    assert_eq!(change.opened[0].violation.code, EgressOutsideMainland);
    assert_eq!(change.opened[0].workload, "Deployment payments/api");
    // Narrowing it opens nothing.
    let narrow = cnp("to-cn", json!([{"toCIDR": ["1.0.1.0/25"]}]));
    let change = judge_layer_change(
        &s,
        &workloads_in,
        "cilium.io/v2",
        "CiliumNetworkPolicy",
        Some("payments"),
        "to-cn",
        Some(&narrow),
        now(),
    );
    assert!(change.opened.is_empty(), "{change:?}");
    // Deleting the only isolating policy opens the pod.
    let change = judge_layer_change(
        &s,
        &workloads_in,
        "cilium.io/v2",
        "CiliumNetworkPolicy",
        Some("payments"),
        "to-cn",
        None,
        now(),
    );
    assert_eq!(
        change.opened[0].violation.code, EgressUnrestricted,
        "{change:?}"
    );
    // A policy selecting other pods opens nothing for this one.
    let other = json!({"apiVersion": "cilium.io/v2", "kind": "CiliumNetworkPolicy",
        "metadata": {"name": "db", "namespace": "payments"},
        "spec": {"endpointSelector": {"matchLabels": {"app": "db"}}, "egress": [{"toEntities": ["world"]}]}});
    let change = judge_layer_change(
        &s,
        &workloads_in,
        "cilium.io/v2",
        "CiliumNetworkPolicy",
        Some("payments"),
        "db",
        Some(&other),
        now(),
    );
    assert!(change.opened.is_empty(), "{change:?}");
}

/// The table of rule answers built with the snapshot is never stale: after
/// the address data or the policies change, a rule is judged against what
/// the snapshot holds now.
#[test]
fn rule_answers_judged_in_advance_follow_the_address_data_and_policies() {
    let c = Cni::Cilium;
    let objects = [cnp("to-cn", json!([{"toCIDR": [MAINLAND]}]))];
    let mut s = snapshot(
        c,
        CiliumEnforcement::Default,
        &objects,
        json!({"mode": "MainlandOnly"}),
    );
    assert!(s.judge_egress_rules() >= 1);
    assert_eq!(egress_codes(&s), vec![]);

    // New address data in which MAINLAND is not mainland China: the rule's
    // answer in the table was judged against the old data and is not read.
    let mut moved = s.clone();
    moved.address_space = std::sync::Arc::new(
        (*moved.address_space)
            .clone()
            .with_mainland(IpSet::from_nets(["1.0.2.0/24".parse().unwrap()])),
    );
    assert_eq!(egress_codes(&moved), vec![EgressOutsideMainland]);
    // Judged again against the new data: the same.
    moved.judge_egress_rules();
    assert_eq!(egress_codes(&moved), vec![EgressOutsideMainland]);

    // A policy added after the table was built is judged on the spot.
    let mut opened = s.clone();
    let open = cnp("open", json!([{"toCIDR": [ABROAD]}]));
    assert!(
        opened
            .network
            .add_layer_object("cilium.io/v2", "CiliumNetworkPolicy", &open)
    );
    assert_eq!(egress_codes(&opened), vec![EgressOutsideMainland]);
    // The original snapshot, sharing the table, is unchanged.
    assert_eq!(egress_codes(&s), vec![]);

    // A policy replaced by one of the same name reaching abroad.
    let replaced = cnp("to-cn", json!([{"toCIDR": [ABROAD]}]));
    assert!(
        s.network
            .add_layer_object("cilium.io/v2", "CiliumNetworkPolicy", &replaced)
    );
    assert_eq!(egress_codes(&s), vec![EgressOutsideMainland]);
}

/// A rule's namespaceSelector selects NetworkSets by their namespace's
/// labels: relabelling that namespace can open egress for pods of another
/// one, and a snapshot focused on the pods' namespace still reads them.
#[test]
fn a_relabel_of_a_namespace_holding_network_sets_is_judged_for_every_namespace() {
    use residency_guard::api::Action;
    use residency_guard::engine::{NamespaceFacts, judge_namespace_relabel_through_sets};
    use std::sync::Arc;
    let by_label = calico_np(
        "by-label",
        1.0,
        allow_to(json!({"namespaceSelector": "zone == 'abroad'"})),
    );
    let set = network_set("other", "out", json!({}), &[ABROAD]);
    let mut s = snapshot(
        Cni::Calico,
        CiliumEnforcement::Default,
        &[by_label, set],
        json!({"mode": "MainlandOnly"}),
    );
    s.namespaces.insert("other".into(), Default::default());
    assert_eq!(egress_codes(&s), vec![]);
    let w = Arc::new(deployment());
    let workloads_in = |ns: &str| {
        if ns == "payments" {
            vec![Arc::clone(&w)]
        } else {
            vec![]
        }
    };
    let abroad: std::collections::BTreeMap<String, String> =
        [("zone".to_string(), "abroad".to_string())].into();
    let change = judge_namespace_relabel_through_sets(&s, &workloads_in, "other", &abroad, now());
    assert_eq!(change.action(), Some(Action::Deny), "{change:?}");
    assert_eq!(change.opened[0].violation.code, EgressOutsideMainland);
    assert_eq!(change.opened[0].workload, "Deployment payments/api");
    // A namespace without sets: nothing to judge here.
    let change =
        judge_namespace_relabel_through_sets(&s, &workloads_in, "payments", &abroad, now());
    assert!(change.opened.is_empty(), "{change:?}");
    // Once relabelled, a snapshot focused on `payments` still sees the set.
    s.namespaces.insert("other".into(), abroad);
    let focused = s.focused_on("payments", &NamespaceFacts::default());
    assert_eq!(egress_codes(&focused), vec![EgressOutsideMainland]);
}
