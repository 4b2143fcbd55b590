//! Benchmarks of the engine and of `check`, against the targets of the
//! performance issue:
//!
//! | group          | what                                                    | target   |
//! |----------------|---------------------------------------------------------|----------|
//! | `guarantee`    | `evaluate`, no inventory, 100 policies                  | ≤ 5 µs   |
//! | `full_verdict` | `evaluate`, 100 policies, 5,000 nodes                   | ≤ 200 µs |
//! | `egress`       | `evaluate` against 50 NetworkPolicies, minus a baseline | ≤ 50 µs  |
//! | `ipset`        | `net_minus_excepts_subset` vs the mainland set          | ≤ 1 µs   |
//! | `ipset`        | `IpSet::parse_list` of the mainland data                | ≤ 5 ms   |
//! | `check`        | `cli::check_inputs` over 10,000 Deployments             | ≤ 2 s    |
//!
//! Before criterion runs, `main` prints the memory footprint of the address
//! data (computed from the range counts and measured with a counting
//! allocator). `scripts/bench.sh` runs everything and prints a summary.
//!
//! With `RESIDENCY_GUARD_BENCH_WRITE_CORPUS=DIR` set, the binary only writes
//! the 10,000-manifest corpus (plus the example cluster) to DIR and exits;
//! `scripts/bench.sh` uses it to time the release binary end to end.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::hint::black_box;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use criterion::{BenchmarkGroup, Criterion, SamplingMode, measurement::WallTime};
use ipnet::IpNet;
use jiff::Timestamp;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use residency_guard::api::{DATA_CLASS_LABEL, ResidencyPolicy};
use residency_guard::cli;
use residency_guard::engine::{AddressSpace, Catalogue, NodeInfo, Snapshot, Workload, evaluate};
use residency_guard::engine::{
    CiliumEnforcement, Cni, EgressSemantics, IpSet, net_minus_excepts_subset,
};
use serde_json::{Value, json};

#[path = "counting_alloc.rs"]
mod counting_alloc;

use counting_alloc::heap_of;

// ---------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------

const BUNDLED_MAINLAND: &str = include_str!("../data/mainland-china.cidrs");
const REGION: &str = "topology.kubernetes.io/region";
const ZONE: &str = "topology.kubernetes.io/zone";
const POOL: &str = "pool.example.com/name";
const NAMESPACE: &str = "payments";
/// Below this many ranges the bundled list is taken to be a placeholder, and
/// the IP-set and egress figures are also taken on a synthetic full-size set.
const REALISTIC_RANGES: usize = 1_000;

fn now() -> Timestamp {
    "2026-11-01T00:00:00Z".parse().expect("valid timestamp")
}

/// A deterministic xorshift generator: the fixtures are the same every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A synthetic mainland-China list of the size of the real one (APNIC/libloc
/// CN: ~8,500 IPv4 and ~3,500 IPv6 prefixes), in CN-allocated /8s, always
/// containing the blocks the benchmarks probe (52.80.0.0/16, 47.96.0.0/16,
/// 240e::/20) and never 8.0.0.0/8 or 10.0.0.0/8.
fn synthetic_mainland_list() -> String {
    const FIRST_OCTETS: &[u32] = &[
        1, 14, 27, 36, 39, 42, 49, 58, 59, 60, 61, 101, 103, 106, 110, 111, 112, 113, 114, 115,
        116, 117, 118, 119, 120, 121, 122, 123, 124, 125, 139, 140, 144, 150, 153, 157, 171, 175,
        180, 182, 183, 202, 203, 210, 211, 218, 219, 220, 221, 222, 223,
    ];
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut out = String::from(
        "# synthetic full-size mainland list (benches/engine.rs)\n52.80.0.0/16\n47.96.0.0/16\n240e::/20\n",
    );
    for _ in 0..8_500 {
        let a = FIRST_OCTETS[rng.below(FIRST_OCTETS.len() as u64) as usize];
        let prefix = 11 + rng.below(14) as u32; // /11../24, most /16../24
        let prefix = prefix.max(14 + rng.below(3) as u32);
        let addr = (a << 24) | (rng.next() as u32 & 0x00ff_ffff);
        let mask = u32::MAX << (32 - prefix);
        let _ = writeln!(out, "{}/{prefix}", std::net::Ipv4Addr::from(addr & mask));
    }
    for _ in 0..3_500 {
        // 2400::/12 (APNIC), prefixes /29../48.
        let prefix = 29 + rng.below(20) as u32;
        let addr = (0x2400u128 << 112) | (((rng.next() as u128) << 64 | rng.next() as u128) >> 12);
        let mask = u128::MAX << (128 - prefix);
        let _ = writeln!(out, "{}/{prefix}", std::net::Ipv6Addr::from(addr & mask));
    }
    out
}

fn ranges(set: &IpSet) -> usize {
    let (v4, v6) = set.range_count();
    v4 + v6
}

/// The mainland sets to measure against: the bundled one, and a synthetic
/// full-size one when the bundled one is a placeholder.
fn mainland_sets() -> Vec<(&'static str, IpSet)> {
    let bundled = AddressSpace::builtin_mainland().clone();
    let mut sets = Vec::new();
    if ranges(&bundled) < REALISTIC_RANGES {
        let synthetic =
            IpSet::parse_list(&synthetic_mainland_list()).expect("synthetic list parses");
        sets.push(("synthetic", synthetic));
    }
    sets.push(("bundled", bundled));
    sets
}

/// The most realistic mainland set available (for the egress benchmarks).
fn realistic_mainland() -> (&'static str, IpSet) {
    mainland_sets().remove(0)
}

/// The benchmarked workload: personal data, required node affinity on
/// region In [cn-north-1, cn-northwest-1], nodeSelector pool=cn-general.
fn workload_json() -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "api", "namespace": NAMESPACE, "labels": {"app": "api"}},
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": {"app": "api"}},
            "template": {
                "metadata": {"labels": {"app": "api", "tier": "backend", DATA_CLASS_LABEL: "personal"}},
                "spec": {
                    "nodeSelector": {POOL: "cn-general"},
                    "affinity": {"nodeAffinity": {
                        "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                            {"matchExpressions": [
                                {"key": REGION, "operator": "In", "values": ["cn-north-1", "cn-northwest-1"]}
                            ]}
                        ]},
                        "preferredDuringSchedulingIgnoredDuringExecution": [
                            {"weight": 10, "preference": {"matchExpressions": [
                                {"key": ZONE, "operator": "In", "values": ["cn-north-1a"]}
                            ]}}
                        ]
                    }},
                    "containers": [{"name": "api", "image": "registry.example.com/payments/api:1.4.2"}]
                }
            }
        }
    })
}

fn workload() -> Workload {
    let bytes = serde_json::to_vec(&workload_json()).expect("serialisable");
    Workload::from_json_slice(&bytes, "default").expect("valid workload")
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Governing {
    /// 5 of the 100 policies govern the workload (the others name other
    /// classes, or select other namespaces).
    Five,
    /// All 100 do (worst case).
    All,
}

/// One ResidencyPolicy. `allowed_nodes` and a non-matching exemption make
/// the compiled policy as heavy as real ones.
fn policy(i: usize, classes: &[&str], team: Option<&str>, egress: &str) -> ResidencyPolicy {
    let action = ["Deny", "Warn", "Audit"][i % 3];
    let mut spec = json!({
        "dataClasses": classes,
        "placement": {
            "jurisdiction": "mainland-china",
            "allowedNodes": {"nodeSelectorTerms": [
                {"matchExpressions": [{"key": POOL, "operator": "In", "values": ["cn-general", "cn-gpu"]}]}
            ]}
        },
        "egress": {"mode": egress},
        "action": action,
        "exemptions": [{
            "selector": {"matchLabels": {"app": format!("legacy-{i}")}},
            "namespaces": [NAMESPACE],
            "basis": "StandardContract",
            "reference": format!("CAC filing 2026-{i:04}"),
            "approvedBy": "dpo@example.com",
            "expires": "2027-06-30"
        }]
    });
    if let Some(team) = team {
        spec["namespaceSelector"] = json!({"matchLabels": {"team": team}});
    }
    serde_json::from_value(json!({
        "apiVersion": "residencyguard.io/v1alpha1",
        "kind": "ResidencyPolicy",
        "metadata": {"name": format!("policy-{i:03}")},
        "spec": spec
    }))
    .expect("valid ResidencyPolicy")
}

/// 100 policies; `governing` says how many govern the workload.
fn policies(governing: Governing, egress: &str) -> Vec<ResidencyPolicy> {
    const OTHER: [&str; 8] = [
        "credit",
        "financial",
        "health",
        "map",
        "government",
        "accounting",
        "genetic",
        "important",
    ];
    (0..100usize)
        .map(|i| match governing {
            Governing::All => {
                let team = i.is_multiple_of(2).then_some(NAMESPACE);
                policy(i, &["personal", OTHER[i % OTHER.len()]], team, egress)
            }
            Governing::Five => match i {
                // Governing: personal, in all namespaces or in this one.
                0..5 => policy(
                    i,
                    &["personal", OTHER[i % OTHER.len()]],
                    i.is_multiple_of(2).then_some(NAMESPACE),
                    egress,
                ),
                // Personal, but scoped to other teams' namespaces.
                5..40 => policy(
                    i,
                    &["personal"],
                    Some(["web", "clinic", "treasury"][i % 3]),
                    egress,
                ),
                // Other classes only.
                _ => policy(
                    i,
                    &[OTHER[i % OTHER.len()], OTHER[(i + 3) % OTHER.len()]],
                    None,
                    egress,
                ),
            },
        })
        .collect()
}

/// 5,000 nodes: ~80% in mainland regions (cn-north-1, cn-northwest-1 and
/// cn-hangzhou, with agreeing providerIDs), ~20% in ap-east-1, us-east-1
/// and ap-southeast-1. `mislabelled` puts a node whose providerID says Hong
/// Kong under a cn-north-1 label into the cn-general pool every 250 nodes.
fn nodes(mislabelled: bool) -> Vec<NodeInfo> {
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    (0..5_000usize)
        .map(|i| {
            let roll = rng.below(100);
            let (region, zone, provider_id, pool) = match roll {
                0..35 => (
                    "cn-north-1",
                    "cn-north-1a",
                    format!("aws:///cn-north-1a/i-{:017x}", rng.next()),
                    "cn-general",
                ),
                35..60 => (
                    "cn-northwest-1",
                    "cn-northwest-1b",
                    format!("aws:///cn-northwest-1b/i-{:017x}", rng.next()),
                    if roll.is_multiple_of(2) {
                        "cn-general"
                    } else {
                        "cn-batch"
                    },
                ),
                60..80 => (
                    "cn-hangzhou",
                    "cn-hangzhou-h",
                    format!("cn-hangzhou.i-bp{:018x}", rng.next()),
                    "cn-gpu",
                ),
                80..88 => (
                    "ap-east-1",
                    "ap-east-1a",
                    format!("aws:///ap-east-1a/i-{:017x}", rng.next()),
                    "hk-general",
                ),
                88..95 => (
                    "us-east-1",
                    "us-east-1c",
                    format!("aws:///us-east-1c/i-{:017x}", rng.next()),
                    "batch",
                ),
                _ => (
                    "ap-southeast-1",
                    "ap-southeast-1b",
                    format!("aws:///ap-southeast-1b/i-{:017x}", rng.next()),
                    "edge",
                ),
            };
            let (region, zone, provider_id, pool) = if mislabelled && i.is_multiple_of(250) {
                (
                    "cn-north-1",
                    "cn-north-1a",
                    format!("aws:///ap-east-1a/i-{:017x}", rng.next()),
                    "cn-general",
                )
            } else {
                (region, zone, provider_id, pool)
            };
            let name = format!(
                "ip-10-{}-{}-{}.{region}.compute.internal",
                i / 65_536,
                (i / 256) % 256,
                i % 256
            );
            let labels: BTreeMap<String, String> = [
                (REGION, region.to_string()),
                (ZONE, zone.to_string()),
                (POOL, pool.to_string()),
                ("kubernetes.io/hostname", name.clone()),
                ("kubernetes.io/os", "linux".to_string()),
                ("kubernetes.io/arch", "amd64".to_string()),
                (
                    "node.kubernetes.io/instance-type",
                    "m6i.2xlarge".to_string(),
                ),
                ("eks.amazonaws.com/nodegroup", format!("{pool}-ng")),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
            NodeInfo {
                name,
                labels,
                provider_id: Some(provider_id),
            }
        })
        .collect()
}

/// 50 NetworkPolicies in the workload's namespace, all selecting its pods
/// (the worst case: every rule of every policy is analysed). Each allows
/// in-cluster traffic and a few mainland blocks (IPv4, IPv4 with excepts,
/// IPv6). With `outside`, two of them also reach abroad: 8.8.8.0/24 and
/// 0.0.0.0/0 except 10.0.0.0/8.
fn network_policies(outside: bool) -> Vec<NetworkPolicy> {
    (0..50usize)
        .map(|i| {
            let selector = if i.is_multiple_of(2) {
                json!({})
            } else {
                json!({"matchLabels": {"app": "api"}})
            };
            let mut egress = vec![
                json!({"to": [{"namespaceSelector": {}, "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}],
                       "ports": [{"protocol": "UDP", "port": 53}]}),
                json!({"to": [{"podSelector": {"matchLabels": {"app": format!("db-{i}")}}}]}),
                json!({"to": [
                    {"ipBlock": {"cidr": format!("52.80.{i}.0/24")}},
                    {"ipBlock": {"cidr": "47.96.0.0/16", "except": [format!("47.96.{i}.0/24"), format!("47.96.{}.0/24", i + 100)]}},
                    {"ipBlock": {"cidr": format!("240e:0:{i:x}::/48")}}
                ]}),
            ];
            if outside && i == 25 {
                egress.push(json!({"to": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": ["10.0.0.0/8"]}}]}));
            }
            if outside && i == 49 {
                egress.push(json!({"to": [{"ipBlock": {"cidr": "8.8.8.0/24"}}]}));
            }
            serde_json::from_value(json!({
                "apiVersion": "networking.k8s.io/v1",
                "kind": "NetworkPolicy",
                "metadata": {"name": format!("egress-{i:02}"), "namespace": NAMESPACE},
                "spec": {"podSelector": selector, "policyTypes": ["Egress"], "egress": egress}
            }))
            .expect("valid NetworkPolicy")
        })
        .collect()
}

struct Setup {
    governing: Governing,
    egress: &'static str,
    nodes: Option<bool>,
    network_policies: Option<bool>,
    /// 50 CiliumNetworkPolicies and 10 AdminNetworkPolicies besides the
    /// NetworkPolicies, judged under this CNI's semantics.
    layers: Option<Cni>,
}

/// 50 CiliumNetworkPolicies selecting the pod (mainland CIDRs, an
/// except, in-cluster endpoints and entities) and 10 AdminNetworkPolicies
/// whose subject is the namespace (Pass and Deny of mainland-irrelevant
/// ranges, so NetworkPolicy still decides).
fn layer_objects(cni: Cni) -> Vec<(&'static str, &'static str, serde_json::Value)> {
    if cni == Cni::Calico {
        return calico_objects();
    }
    let mut out = Vec::new();
    for i in 0..50usize {
        out.push((
            "cilium.io/v2",
            "CiliumNetworkPolicy",
            json!({"metadata": {"name": format!("cnp-{i:02}"), "namespace": NAMESPACE},
                   "spec": {"endpointSelector": {"matchLabels": {"k8s:app": "api"}},
                            "egress": [
                                {"toEndpoints": [{"matchLabels": {"app": format!("db-{i}")}}]},
                                {"toEntities": ["cluster", "kube-apiserver"]},
                                {"toCIDRSet": [{"cidr": "47.96.0.0/16", "except": [format!("47.96.{i}.0/24")]}],
                                 "toCIDR": [format!("52.80.{i}.0/24"), format!("240e:1:{i:x}::/48")]}
                            ]}}),
        ));
    }
    for i in 0..10usize {
        out.push((
            "policy.networking.k8s.io/v1alpha1",
            "AdminNetworkPolicy",
            json!({"metadata": {"name": format!("anp-{i:02}")},
                   "spec": {"priority": i * 10,
                            "subject": {"namespaces": {"matchLabels": {"team": NAMESPACE}}},
                            "egress": [
                                {"name": "pass-dns", "action": "Pass", "to": [{"networks": [format!("10.{i}.0.0/16")]}]},
                                {"name": "deny-meta", "action": "Deny", "to": [{"networks": ["169.254.169.254/32"]}]}
                            ]}}),
        ));
    }
    out
}

/// Under Calico: 50 Calico NetworkPolicies selecting the pod, each
/// allowing egress to the NetworkSets labelled `role=egress-<i>`, and 50
/// such sets of the namespace holding a mainland /24 each: every policy's
/// rule resolves its sets per pod (the set-selecting path).
fn calico_objects() -> Vec<(&'static str, &'static str, serde_json::Value)> {
    let mut out = Vec::new();
    for i in 0..50usize {
        out.push((
            "crd.projectcalico.org/v1",
            "NetworkPolicy",
            json!({"metadata": {"name": format!("calico-{i:02}"), "namespace": NAMESPACE},
                   "spec": {"order": i, "selector": "app == 'api'", "types": ["Egress"],
                            "egress": [{"action": "Allow",
                                        "destination": {"selector": format!("role == 'egress-{i}'")}}]}}),
        ));
        out.push((
            "crd.projectcalico.org/v1",
            "NetworkSet",
            json!({"metadata": {"name": format!("set-{i:02}"), "namespace": NAMESPACE,
                                "labels": {"role": format!("egress-{i}")}},
                   "spec": {"nets": [format!("47.96.{i}.0/24")]}}),
        ));
    }
    out
}

fn snapshot(setup: &Setup, mainland: &IpSet) -> Snapshot {
    let space = AddressSpace::new(
        mainland.clone(),
        IpSet::new(),
        AddressSpace::builtin().countries,
    );
    let mut s = Snapshot::new(Catalogue::builtin().clone(), space);
    for p in policies(setup.governing, setup.egress) {
        s.add_policy(&p, now()).expect("policy compiles");
    }
    for (ns, team) in [
        (NAMESPACE, NAMESPACE),
        ("web", "web"),
        ("clinic", "health"),
        ("treasury", "treasury"),
    ] {
        s.namespaces.insert(
            ns.to_string(),
            BTreeMap::from([("team".to_string(), team.to_string())]),
        );
    }
    if let Some(mislabelled) = setup.nodes {
        s.set_nodes(nodes(mislabelled));
    }
    if let Some(outside) = setup.network_policies {
        for np in network_policies(outside) {
            s.network.add_network_policy(&np);
        }
    }
    if let Some(cni) = setup.layers {
        s.network.set_semantics(EgressSemantics {
            cni,
            cilium_enforcement: CiliumEnforcement::Default,
        });
        for (api, kind, obj) in layer_objects(cni) {
            assert!(s.network.add_layer_object(api, kind, &obj), "{kind}");
        }
    }
    // As `SnapshotBuilder::build` does for the webhook and the audit.
    s.judge_egress_rules();
    s
}

/// Benchmark `evaluate` on `setup`, after checking that the verdict is the
/// one the benchmark claims to measure.
fn bench_evaluate(
    g: &mut BenchmarkGroup<'_, WallTime>,
    id: &str,
    setup: &Setup,
    mainland: &IpSet,
    expect_violation: bool,
) {
    let snap = snapshot(setup, mainland);
    let w = workload();
    let t = now();
    let verdict = evaluate(&snap, &w, t).expect("classifiable");
    let want = match setup.governing {
        Governing::Five => 5,
        Governing::All => 100,
    };
    assert_eq!(verdict.policies.len(), want, "{id}: governing policies");
    let violated = verdict.policies.iter().any(|o| !o.violations.is_empty());
    assert_eq!(violated, expect_violation, "{id}: {verdict:#?}");
    g.bench_function(id, |b| {
        b.iter(|| evaluate(black_box(&snap), black_box(&w), t))
    });
}

// ---------------------------------------------------------------------------
// Benchmarks
// ---------------------------------------------------------------------------

fn short(g: &mut BenchmarkGroup<'_, WallTime>) {
    g.warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
}

/// Benchmark 1, the placement guarantee: no inventory, so `evaluate` decides from the
/// pod's own constraints alone.
fn guarantee(c: &mut Criterion) {
    let mainland = AddressSpace::builtin_mainland().clone();
    let mut g = c.benchmark_group("guarantee");
    short(&mut g);
    for (id, governing) in [
        ("100_policies_5_governing", Governing::Five),
        ("100_policies_100_governing", Governing::All),
    ] {
        let setup = Setup {
            governing,
            egress: "Unrestricted",
            nodes: None,
            network_policies: None,
            layers: None,
        };
        bench_evaluate(&mut g, id, &setup, &mainland, false);
    }
    g.finish();
}

/// Benchmark 2, the full verdict, with a 5,000-node inventory.
fn full_verdict(c: &mut Criterion) {
    let (_, mainland) = realistic_mainland();
    let mut g = c.benchmark_group("full_verdict");
    short(&mut g);
    let cases = [
        (
            "5000_nodes_100_policies_5_governing",
            Governing::Five,
            "Unrestricted",
            false,
            None,
            false,
        ),
        (
            "5000_nodes_100_policies_100_governing",
            Governing::All,
            "Unrestricted",
            false,
            None,
            false,
        ),
        (
            "5000_nodes_5_governing_mislabelled_nodes",
            Governing::Five,
            "Unrestricted",
            true,
            None,
            true,
        ),
        (
            "5000_nodes_5_governing_mainland_only_50_netpols",
            Governing::Five,
            "MainlandOnly",
            false,
            Some(false),
            false,
        ),
    ];
    for (id, governing, egress, mislabelled, network_policies, violation) in cases {
        let setup = Setup {
            governing,
            egress,
            nodes: Some(mislabelled),
            network_policies,
            layers: None,
        };
        bench_evaluate(&mut g, id, &setup, &mainland, violation);
    }
    g.finish();
}

/// Benchmark 2b, egress in isolation: placement satisfied, no inventory, 50
/// NetworkPolicies selecting the pod. The egress cost is the MainlandOnly
/// figure minus the Unrestricted baseline (same snapshot otherwise).
fn egress(c: &mut Criterion) {
    let (_, mainland) = realistic_mainland();
    let mut g = c.benchmark_group("egress");
    short(&mut g);
    let cases = [
        (
            "baseline_unrestricted_50_netpols",
            Governing::Five,
            "Unrestricted",
            false,
            false,
        ),
        (
            "mainland_only_50_netpols_inside",
            Governing::Five,
            "MainlandOnly",
            false,
            false,
        ),
        (
            "mainland_only_50_netpols_2_outside",
            Governing::Five,
            "MainlandOnly",
            true,
            true,
        ),
        (
            "baseline_unrestricted_100_governing",
            Governing::All,
            "Unrestricted",
            false,
            false,
        ),
        (
            "mainland_only_50_netpols_100_governing",
            Governing::All,
            "MainlandOnly",
            false,
            false,
        ),
    ];
    for (id, governing, mode, outside, violation) in cases {
        let setup = Setup {
            governing,
            egress: mode,
            nodes: None,
            network_policies: Some(outside),
            layers: None,
        };
        bench_evaluate(&mut g, id, &setup, &mainland, violation);
    }
    // Issue 27: the same 50 NetworkPolicies with 50 CiliumNetworkPolicies
    // and 10 AdminNetworkPolicies. Under Cilium the NetworkPolicies and
    // CNPs are one union (ANPs are not Cilium's); under Kubernetes the
    // ANPs come first (CNPs are not read). Target ≤ 50 µs for the
    // two-outside case, minus the Unrestricted baseline.
    for (id, cni, mode, outside, violation) in [
        (
            "layers_cilium_baseline_unrestricted",
            Cni::Cilium,
            "Unrestricted",
            false,
            false,
        ),
        (
            "layers_cilium_50np_50cnp_10anp_2_outside",
            Cni::Cilium,
            "MainlandOnly",
            true,
            true,
        ),
        (
            "layers_kubernetes_50np_50cnp_10anp_2_outside",
            Cni::Kubernetes,
            "MainlandOnly",
            true,
            true,
        ),
        // Calico with network sets: 50 Calico policies whose rules select
        // 50 NetworkSets, ordered before the 50 NetworkPolicies.
        (
            "layers_calico_50np_50calico_50sets_2_outside",
            Cni::Calico,
            "MainlandOnly",
            true,
            true,
        ),
    ] {
        let setup = Setup {
            governing: Governing::Five,
            egress: mode,
            nodes: None,
            network_policies: Some(outside),
            layers: Some(cni),
        };
        bench_evaluate(&mut g, id, &setup, &mainland, violation);
    }
    // What building a snapshot pays for the above: judging where each
    // rule's addresses lie, once (`Snapshot::judge_egress_rules`).
    let mut snap = snapshot(
        &Setup {
            governing: Governing::Five,
            egress: "MainlandOnly",
            nodes: None,
            network_policies: Some(true),
            layers: Some(Cni::Cilium),
        },
        &mainland,
    );
    // On a clone: the table replaced stays alive (shared with `snap`), so
    // what is kept is the new table alone.
    let mut fresh = snap.clone();
    let (judged, kept, _) = heap_of(|| fresh.judge_egress_rules());
    drop(fresh);
    println!(
        "rule whereabouts: {judged} address sets of 50 NetworkPolicies, 50 CiliumNetworkPolicies and 10 AdminNetworkPolicies judged in advance keep {kept} bytes"
    );
    g.bench_function("judge_egress_rules_50np_50cnp_10anp", |b| {
        b.iter(|| black_box(&mut snap).judge_egress_rules())
    });
    g.finish();
}

/// Memory per projected policy: the heap the 50 CiliumNetworkPolicies and
/// 10 AdminNetworkPolicies of the layer benchmark keep once projected into
/// an index (counted by the allocator), per policy.
fn layer_memory(_c: &mut Criterion) {
    let mut objects = layer_objects(Cni::Cilium);
    objects.extend(calico_objects());
    // Statics (the every-address set) are built once, outside the count.
    let mut warm = residency_guard::engine::NetworkIndex::default();
    for (api, kind, obj) in objects.iter().take(1) {
        warm.add_layer_object(api, kind, obj);
    }
    // "NetworkPolicy" here is Calico's: the list holds no Kubernetes ones.
    for wanted in [
        "CiliumNetworkPolicy",
        "AdminNetworkPolicy",
        "NetworkPolicy",
        "NetworkSet",
    ] {
        let of_kind: Vec<_> = objects.iter().filter(|(_, k, _)| *k == wanted).collect();
        let (index, kept, peak) = heap_of(|| {
            let mut index = residency_guard::engine::NetworkIndex::default();
            for (api, kind, obj) in &of_kind {
                index.add_layer_object(api, kind, obj);
            }
            index
        });
        let layers = index.layers();
        let n = layers.policies.len().max(layers.network_sets.len()).max(1);
        println!(
            "layer memory: {} projected {wanted}s keep {kept} bytes ({} bytes each; peak {peak} bytes while projecting)",
            n,
            kept / n as isize
        );
        drop(index);
    }
}

/// Benchmark 3, IP sets: one CIDR minus excepts against the mainland set; loading it.
fn ipset(c: &mut Criterion) {
    let net = |s: &str| s.parse::<IpNet>().expect("valid net");
    let cases: [(&str, IpNet, Vec<IpNet>, bool); 4] = [
        (
            "52.80.0.0_16_minus_2x24_inside",
            net("52.80.0.0/16"),
            vec![net("52.80.7.0/24"), net("52.80.200.0/24")],
            true,
        ),
        ("8.8.8.0_24_outside", net("8.8.8.0/24"), vec![], false),
        (
            "0.0.0.0_0_minus_10_8_outside",
            net("0.0.0.0/0"),
            vec![net("10.0.0.0/8")],
            false,
        ),
        ("240e::_20_inside", net("240e::/20"), vec![], true),
    ];
    let mut g = c.benchmark_group("ipset");
    short(&mut g);
    for (set_name, set) in mainland_sets() {
        for (id, n, excepts, inside) in &cases {
            assert_eq!(
                net_minus_excepts_subset(*n, excepts, &set),
                *inside,
                "{set_name} {id}"
            );
            g.bench_function(format!("subset/{set_name}/{id}"), |b| {
                b.iter(|| {
                    net_minus_excepts_subset(black_box(*n), black_box(excepts), black_box(&set))
                })
            });
        }
        // A single-address lookup, for scale.
        let addr: IpAddr = "52.80.1.1".parse().expect("valid address");
        g.bench_function(format!("contains/{set_name}/52.80.1.1"), |b| {
            b.iter(|| black_box(&set).contains(black_box(addr)))
        });
    }
    g.bench_function("parse_list/bundled", |b| {
        b.iter(|| IpSet::parse_list(black_box(BUNDLED_MAINLAND)))
    });
    if ranges(AddressSpace::builtin_mainland()) < REALISTIC_RANGES {
        let text = synthetic_mainland_list();
        g.bench_function("parse_list/synthetic", |b| {
            b.iter(|| IpSet::parse_list(black_box(&text)))
        });
    }
    g.finish();
}

/// Supporting figures: decoding one workload, classifying the inventory.
fn support(c: &mut Criterion) {
    let mut g = c.benchmark_group("support");
    short(&mut g);
    let bytes = serde_json::to_vec(&workload_json()).expect("serialisable");
    g.bench_function("workload_from_json_slice", |b| {
        b.iter(|| Workload::from_json_slice(black_box(&bytes), "default"))
    });
    g.bench_function("address_space_builtin", |b| b.iter(AddressSpace::builtin));
    let inventory = nodes(false);
    let base = Snapshot::new(Catalogue::builtin().clone(), AddressSpace::builtin());
    g.bench_function("set_nodes_5000", |b| {
        b.iter_batched(
            || (base.clone(), inventory.clone()),
            |(mut s, n)| {
                s.set_nodes(n);
                s
            },
            criterion::BatchSize::LargeInput,
        )
    });
    // What the webhook pays per NetworkPolicy admission review
    // (src/webhook/admission.rs clones the snapshot).
    let mut full = snapshot(
        &Setup {
            governing: Governing::Five,
            egress: "MainlandOnly",
            nodes: Some(false),
            network_policies: Some(false),
            layers: None,
        },
        AddressSpace::builtin_mainland(),
    );
    full.address_space = AddressSpace::builtin().into();
    g.bench_function("snapshot_clone_5000_nodes_builtin_address_space", |b| {
        b.iter(|| black_box(&full).clone())
    });
    g.finish();
}

/// Benchmark 4, `check` over 10,000 Deployments plus the example cluster, in process.
/// (scripts/bench.sh times the release binary on the same corpus.)
fn check(c: &mut Criterion) {
    let t = now();
    let run = |dir: &Path| {
        let snap = Snapshot::new(Catalogue::builtin().clone(), AddressSpace::builtin());
        cli::check_inputs(&[dir.to_path_buf()], snap, "default", t)
    };
    // Written on first use, so a filtered run that skips this group does not
    // pay for the corpus.
    let corpus: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
    let corpus_dir = || {
        corpus
            .get_or_init(|| {
                let dir = tempfile::tempdir().expect("temp dir");
                let docs = write_corpus(dir.path()).expect("corpus written");
                let report = run(dir.path()).expect("corpus is valid");
                assert_eq!(report.results.len(), docs, "every Deployment judged");
                assert!(report.summary.denied > 0, "some Deployments are denied");
                dir
            })
            .path()
    };

    let mut g = c.benchmark_group("check");
    g.sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(15));
    g.bench_function("check_inputs_10000_deployments", |b| {
        let dir = corpus_dir();
        b.iter(|| run(dir))
    });
    g.finish();
}

// ---------------------------------------------------------------------------
// The 10,000-manifest corpus
// ---------------------------------------------------------------------------

const CORPUS_FILES: usize = 100;
const DOCS_PER_FILE: usize = 100;
const EXAMPLE_FILES: [&str; 4] = [
    "policies.yaml",
    "nodes.yaml",
    "namespaces.yaml",
    "networkpolicies.yaml",
];

/// Write 100 files × 100 Deployments and the example cluster's policies,
/// nodes, namespaces and NetworkPolicies to `dir`. Returns the number of
/// Deployments. Some pass, some are denied, some are not classified.
fn write_corpus(dir: &Path) -> std::io::Result<usize> {
    let examples = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/cluster");
    std::fs::create_dir_all(dir.join("cluster"))?;
    for f in EXAMPLE_FILES {
        std::fs::copy(examples.join(f), dir.join("cluster").join(f))?;
    }
    let namespaces = [
        "payments", "clinic", "genomics", "treasury", "finance", "web",
    ];
    let classes = [
        Some("personal"),
        Some("financial"),
        Some("health"),
        Some("accounting"),
        Some("personal.map"),
        None,
        None,
    ];
    let workloads = dir.join("workloads");
    std::fs::create_dir_all(&workloads)?;
    for f in 0..CORPUS_FILES {
        let mut text = String::with_capacity(DOCS_PER_FILE * 1_600);
        for d in 0..DOCS_PER_FILE {
            let i = f * DOCS_PER_FILE + d;
            let ns = namespaces[i % namespaces.len()];
            let name = format!("svc-{f:03}-{d:03}");
            let class = classes[i % classes.len()]
                .map(|c| format!(", {DATA_CLASS_LABEL}: {c}"))
                .unwrap_or_default();
            let placement = match i % 10 {
                0..5 => format!(
                    "      affinity:\n        nodeAffinity:\n          requiredDuringSchedulingIgnoredDuringExecution:\n            nodeSelectorTerms:\n            - matchExpressions:\n              - {{key: {REGION}, operator: In, values: [cn-north-1, cn-northwest-1]}}\n"
                ),
                5 | 6 => format!("      nodeSelector: {{{POOL}: cn-general}}\n"),
                7 => format!(
                    "      affinity:\n        nodeAffinity:\n          requiredDuringSchedulingIgnoredDuringExecution:\n            nodeSelectorTerms:\n            - matchExpressions:\n              - {{key: {REGION}, operator: In, values: [cn-north-1, ap-east-1]}}\n"
                ),
                _ => String::new(),
            };
            let _ = write!(
                text,
                "---
# generated by benches/engine.rs
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
  namespace: {ns}
  labels: {{app: {name}, team: {ns}}}
  annotations:
    deployment.kubernetes.io/revision: \"3\"
spec:
  replicas: 3
  selector:
    matchLabels: {{app: {name}}}
  strategy: {{type: RollingUpdate, rollingUpdate: {{maxSurge: 25%, maxUnavailable: 0}}}}
  template:
    metadata:
      labels: {{app: {name}, team: {ns}{class}}}
    spec:
{placement}      serviceAccountName: {name}
      containers:
      - name: app
        image: registry.example.com/{ns}/{name}:1.{d}.0
        ports: [{{containerPort: 8080, name: http}}]
        env:
        - {{name: LOG_LEVEL, value: info}}
        - {{name: DB_HOST, value: db.{ns}.svc.cluster.local}}
        resources:
          requests: {{cpu: 100m, memory: 128Mi}}
          limits: {{cpu: \"1\", memory: 512Mi}}
        readinessProbe:
          httpGet: {{path: /healthz, port: http}}
          periodSeconds: 10
      - name: proxy
        image: registry.example.com/mesh/proxy:1.20.3
        args: [--listen, \"0.0.0.0:15001\", --upstream, \"127.0.0.1:8080\"]
        resources:
          requests: {{cpu: 50m, memory: 64Mi}}
"
            );
        }
        std::fs::write(workloads.join(format!("deployments-{f:03}.yaml")), text)?;
    }
    Ok(CORPUS_FILES * DOCS_PER_FILE)
}

// ---------------------------------------------------------------------------
// Footprint report and main
// ---------------------------------------------------------------------------

fn footprint(name: &str, text: &str) {
    let lines = text
        .lines()
        .filter(|l| {
            let l = l.trim();
            !l.is_empty() && !l.starts_with('#')
        })
        .count();
    let start = Instant::now();
    let (set, live, peak) = heap_of(|| IpSet::parse_list(text).expect("list parses"));
    let elapsed = start.elapsed();
    let (v4, v6) = set.range_count();
    let computed = v4 * size_of::<(u32, u32)>() + v6 * size_of::<(u128, u128)>();
    println!(
        "footprint/{name}: {lines} entries -> {v4} IPv4 + {v6} IPv6 ranges; \
         computed {computed} bytes ({v4}×{} + {v6}×{}); heap after parse_list {live} bytes \
         (spare Vec capacity is given back after merging), peak during parse {peak} bytes; one cold parse {:.3} ms",
        size_of::<(u32, u32)>(),
        size_of::<(u128, u128)>(),
        elapsed.as_secs_f64() * 1e3,
    );
}

fn print_footprints() {
    footprint("bundled", BUNDLED_MAINLAND);
    if ranges(AddressSpace::builtin_mainland()) < REALISTIC_RANGES {
        println!(
            "footprint: the bundled list has fewer than {REALISTIC_RANGES} ranges (a placeholder?); \
             IP-set and egress figures are also taken on a synthetic full-size list"
        );
        footprint("synthetic", &synthetic_mainland_list());
    }
    let _ = AddressSpace::builtin_mainland(); // force the LazyLock outside the measurement
    let start = Instant::now();
    let first = AddressSpace::builtin();
    let cold = start.elapsed();
    drop(first);
    let start = Instant::now();
    let (space, live, _) = heap_of(AddressSpace::builtin);
    let warm = start.elapsed();
    let (c4, c6) = space.countries.range_count();
    let (countries, countries_live, _) = heap_of(|| AddressSpace::builtin().countries);
    drop(countries);
    println!(
        "footprint/AddressSpace::builtin(): {live} bytes per call (mainland copy + mainland∪cluster copy + \
         country table of {c4} IPv4 + {c6} IPv6 ranges = {countries_live} bytes); \
         first call (parses data/country-hints.cidrs) {:.1} ms, later calls (clone) {:.2} ms",
        cold.as_secs_f64() * 1e3,
        warm.as_secs_f64() * 1e3,
    );
    drop(space);
    let mut snap = Snapshot::new(Catalogue::builtin().clone(), AddressSpace::default());
    let ((), live, _) = heap_of(|| snap.set_nodes(nodes(false)));
    println!(
        "footprint/5000 classified nodes: {live} bytes in the snapshot (nodes, standings, index)"
    );
    drop(snap);
}

fn main() {
    if let Some(dir) = std::env::var_os("RESIDENCY_GUARD_BENCH_WRITE_CORPUS") {
        let dir = PathBuf::from(dir);
        match write_corpus(&dir) {
            Ok(n) => println!(
                "wrote {n} Deployments and the example cluster to {}",
                dir.display()
            ),
            Err(e) => {
                eprintln!("cannot write the corpus to {}: {e}", dir.display());
                std::process::exit(1);
            }
        }
        return;
    }
    print_footprints();
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    guarantee(&mut c);
    full_verdict(&mut c);
    egress(&mut c);
    layer_memory(&mut c);
    ipset(&mut c);
    support(&mut c);
    check(&mut c);
    c.final_summary();
}
