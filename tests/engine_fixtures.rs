//! Table tests over real YAML fixtures (tests/fixtures/): every pod-creating
//! kind and every placement and egress trap of semantics.md, each asserting
//! the verdict's action and the exact violation codes.

use std::collections::BTreeMap;
use std::path::PathBuf;

use jiff::Timestamp;
use residency_guard::api::Action;
use residency_guard::cli::check_inputs;
use residency_guard::engine::Evidence;
use residency_guard::engine::parse_cidr_args;
use residency_guard::engine::{AddressSpace, Catalogue, Code, Snapshot, Verdict};

const NOW: &str = "2026-11-23T00:00:00Z";

fn judge(fixture: &str, cluster_cidrs: &[&str]) -> BTreeMap<String, Verdict> {
    let cidrs: Vec<String> = cluster_cidrs.iter().map(|s| s.to_string()).collect();
    let space = AddressSpace::builtin().with_cluster(parse_cidr_args(&cidrs).unwrap());
    let snapshot = Snapshot::new(Catalogue::builtin().clone(), space);
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(fixture);
    let now: Timestamp = NOW.parse().unwrap();
    let report = check_inputs(&[path], snapshot, "default", now)
        .unwrap_or_else(|e| panic!("{fixture}: {e:?}"));
    report
        .results
        .into_iter()
        .map(|r| (r.verdict.workload.name.clone(), r.verdict))
        .collect()
}

/// The codes that count (not exempted), in order.
fn codes(v: &Verdict) -> Vec<Code> {
    v.violations().map(|(_, x)| x.code).collect()
}

fn assert_table(
    fixture: &str,
    verdicts: &BTreeMap<String, Verdict>,
    table: &[(&str, Option<Action>, &[Code])],
) {
    for (name, action, expected) in table {
        let v = verdicts
            .get(*name)
            .unwrap_or_else(|| panic!("{fixture}: no workload named {name}"));
        assert_eq!(
            v.action, *action,
            "{fixture}/{name}: action; verdict: {v:#?}"
        );
        assert_eq!(
            codes(v),
            *expected,
            "{fixture}/{name}: codes; verdict: {v:#?}"
        );
    }
    assert_eq!(
        verdicts.len(),
        table.len(),
        "{fixture}: every workload must be in the table"
    );
}

use Code::*;
const DENY: Option<Action> = Some(Action::Deny);
const PASS: Option<Action> = None;

#[test]
fn every_kind_is_judged_on_its_pod_template() {
    let v = judge("kinds.yaml", &[]);
    let mut table: Vec<(String, Option<Action>, &[Code])> = Vec::new();
    for kind in [
        "pod",
        "deployment",
        "replicaset",
        "statefulset",
        "daemonset",
        "job",
        "cronjob",
        "replicationcontroller",
    ] {
        table.push((format!("{kind}-good"), PASS, &[]));
        table.push((format!("{kind}-bad"), DENY, &[PlacementNotGuaranteed]));
    }
    let table: Vec<(&str, Option<Action>, &[Code])> =
        table.iter().map(|(n, a, c)| (n.as_str(), *a, *c)).collect();
    assert_table("kinds.yaml", &v, &table);
    // The field path names where the pod spec lives in each kind.
    let cron = &v["cronjob-bad"];
    let (_, x) = cron.violations().next().unwrap();
    assert_eq!(x.field, "spec.jobTemplate.spec.template.spec.nodeSelector");
    assert!(
        x.message.text().en.contains("us-east-1"),
        "{}",
        x.message.text().en
    );
    let (_, pod) = v["pod-bad"].violations().next().unwrap();
    assert_eq!(pod.field, "spec.nodeSelector");
}

#[test]
fn a_class_must_reach_the_pods() {
    let v = judge("class-propagation.yaml", &[]);
    assert_table(
        "class-propagation.yaml",
        &v,
        &[
            ("metadata-only", DENY, &[ClassNotOnPodTemplate]),
            ("both", PASS, &[]),
            ("namespace-gives-the-rest", PASS, &[]),
            ("cron-metadata-only", DENY, &[ClassNotOnPodTemplate]),
            ("pod", PASS, &[]),
            ("debug-copy", DENY, &[PlacementNotGuaranteed]),
        ],
    );
    let copy = &v["debug-copy"];
    assert_eq!(copy.classes, [residency_guard::api::DataClass::Personal]);
    assert_eq!(
        copy.class_sources[0].location,
        "PersistentVolumeClaim app/records-data"
    );
    let (_, x) = v["metadata-only"].violations().next().unwrap();
    assert_eq!(x.field, "spec.template.metadata.labels");
    let text = x.message.text();
    for part in [
        "Deployment app/metadata-only declares residencyguard.io/data-class=personal on metadata.labels",
        "the ReplicaSets and Pods it creates are not classified",
        "add residencyguard.io/data-class: personal to spec.template.metadata.labels",
    ] {
        assert!(text.en.contains(part), "{part:?} in {}", text.en);
    }
    assert!(text.zh.contains("Pod 模板"), "{}", text.zh);
    let (_, cron) = v["cron-metadata-only"].violations().next().unwrap();
    assert_eq!(cron.field, "spec.jobTemplate.spec.template.metadata.labels");
}

#[test]
fn placement_traps_without_inventory() {
    let v = judge("placement-traps.yaml", &[]);
    let bad: &[Code] = &[PlacementNotGuaranteed];
    assert_table(
        "placement-traps.yaml",
        &v,
        &[
            ("notin", DENY, bad),
            ("doesnotexist", DENY, bad),
            ("exists", DENY, bad),
            ("gt", DENY, bad),
            ("preferred-only", DENY, bad),
            ("tolerations-only", DENY, bad),
            ("or-of-terms", DENY, bad),
            ("nodeselector-and-term", PASS, &[]),
            ("in-intersection", PASS, &[]),
            ("allowed-pool", PASS, &[]),
            ("allowed-pool-and-edge", DENY, bad),
            ("lookalike-cn-hongkong", DENY, bad),
            ("legacy-label", DENY, bad),
            ("nodename-no-inventory", DENY, bad),
            ("matchfields-and-region", PASS, &[]),
            ("invalid-term-ignored", PASS, &[]),
        ],
    );
    // The failing term is named, and so is the preferred-affinity trap.
    let (_, x) = v["or-of-terms"].violations().next().unwrap();
    assert!(x.field.ends_with("nodeSelectorTerms[1]"), "{}", x.field);
    let (_, x) = v["preferred-only"].violations().next().unwrap();
    assert!(
        x.message
            .text()
            .en
            .contains("preferred affinity is only a preference"),
        "{}",
        x.message.text().en
    );
    let (_, x) = v["lookalike-cn-hongkong"].violations().next().unwrap();
    assert!(
        x.message
            .text()
            .en
            .contains("allows topology.kubernetes.io/region cn-hongkong"),
        "{}",
        x.message.text().en
    );
    assert!(
        x.message.text().zh.contains("cn-hongkong"),
        "{}",
        x.message.text().zh
    );
}

fn outside_names(v: &Verdict) -> Vec<String> {
    v.violations()
        .filter_map(|(_, x)| match &x.evidence {
            Evidence::Placement { outside_nodes, .. } => Some(
                outside_nodes
                    .iter()
                    .map(|n| n.name.clone())
                    .collect::<Vec<_>>(),
            ),
            Evidence::BoundNode { node } => Some(vec![node.name.clone()]),
            _ => None,
        })
        .flatten()
        .collect()
}

#[test]
fn inventory_and_node_trust() {
    let v = judge("inventory.yaml", &[]);
    assert_table(
        "inventory.yaml",
        &v,
        &[
            ("pinned-region", PASS, &[]),
            ("pinned-region-liar", DENY, &[NodeOutsideMainland]),
            ("allowed-pool-abroad", DENY, &[NodeOutsideMainland]),
            ("private-dc", PASS, &[]),
            ("unlabelled-node", DENY, &[PlacementNotGuaranteed]),
            ("everywhere", DENY, &[PlacementNotGuaranteed]),
            ("bound-mainland", PASS, &[]),
            ("bound-abroad", DENY, &[BoundToNodeOutside]),
            ("bound-liar", DENY, &[BoundToNodeOutside]),
        ],
    );
    assert_eq!(outside_names(&v["pinned-region-liar"]), ["liar"]);
    assert_eq!(outside_names(&v["allowed-pool-abroad"]), ["hk-in-cn-pool"]);
    assert_eq!(outside_names(&v["unlabelled-node"]), ["unlabelled"]);
    assert_eq!(
        outside_names(&v["everywhere"]),
        ["hk-in-cn-pool", "liar", "unlabelled", "us-1"]
    );
    let (_, x) = v["pinned-region-liar"].violations().next().unwrap();
    assert!(
        x.message
            .text()
            .en
            .contains("labelled cn-north-1 but its aws providerID says ap-east-1"),
        "{}",
        x.message.text().en
    );
    let (_, x) = v["unlabelled-node"].violations().next().unwrap();
    assert!(
        x.message
            .text()
            .en
            .contains("no region label; its providerID suggests cn-north-1"),
        "{}",
        x.message.text().en
    );
    let (_, x) = v["everywhere"].violations().next().unwrap();
    assert!(
        x.message.text().en.contains("4 of 7 matching nodes"),
        "{}",
        x.message.text().en
    );
    assert!(
        x.message
            .text()
            .en
            .contains("DaemonSet will run a pod on them"),
        "{}",
        x.message.text().en
    );
}

#[test]
fn policies_combine_strictest_action_wins() {
    let v = judge("policies-combined.yaml", &[]);
    assert_table(
        "policies-combined.yaml",
        &v,
        &[
            (
                "strictest-wins",
                DENY,
                &[PlacementNotGuaranteed, PlacementNotGuaranteed],
            ),
            ("warn-only", Some(Action::Warn), &[PlacementNotGuaranteed]),
            ("audit-prod", Some(Action::Audit), &[PlacementNotGuaranteed]),
            ("health-dev", PASS, &[]),
            (
                "union-of-sources",
                DENY,
                // `health` sits on the Deployment's metadata alone: its
                // pods would not carry it (issue 22).
                &[
                    PlacementNotGuaranteed,
                    PlacementNotGuaranteed,
                    ClassNotOnPodTemplate,
                    PlacementNotGuaranteed,
                ],
            ),
            ("exempt-active", PASS, &[]),
            ("exempt-copied", DENY, &[PlacementNotGuaranteed]),
            ("exempt-lapsed", DENY, &[PlacementNotGuaranteed]),
            ("unclassified", PASS, &[]),
        ],
    );
    let named: Vec<&str> = v["strictest-wins"]
        .violations()
        .map(|(p, _)| &*p.policy)
        .collect();
    assert_eq!(named, ["personal-deny", "financial-warn"]);
    let union = &v["union-of-sources"];
    let classes: Vec<&str> = union.classes.iter().map(|c| c.as_str()).collect();
    assert_eq!(classes, ["personal", "financial", "health"]);
    assert!(v["health-dev"].policies.is_empty());
    let active = &v["exempt-active"];
    assert!(
        active.policies[0]
            .exemption
            .as_ref()
            .is_some_and(|e| e.active)
    );
    assert!(active.policies[0].violations.iter().all(|x| x.exempted));
    let lapsed = &v["exempt-lapsed"];
    assert!(
        lapsed.notices.iter().any(|n| n.code == "ExemptionExpired"),
        "{lapsed:#?}"
    );
}

#[test]
fn egress_under_mainland_only() {
    let v = judge("egress.yaml", &[]);
    assert_table(
        "egress.yaml",
        &v,
        &[
            ("no-policy", DENY, &[EgressUnrestricted]),
            ("ingress-only", DENY, &[EgressUnrestricted]),
            ("empty-egress-typed", PASS, &[]),
            ("empty-egress-untyped", DENY, &[EgressUnrestricted]),
            ("no-to", DENY, &[EgressAllowsAll]),
            ("additive", DENY, &[EgressOutsideMainland]),
            ("known-mainland", PASS, &[]),
            ("aws-hk", DENY, &[EgressOutsideMainland]),
            ("ipv6-google", DENY, &[EgressOutsideMainland]),
            ("except-removes-outside", PASS, &[]),
            ("except-partial", DENY, &[EgressOutsideMainland]),
            ("allowed-cidr", PASS, &[]),
            ("other-namespace", DENY, &[EgressUnrestricted]),
            ("selector-miss", DENY, &[EgressUnrestricted]),
            ("external-name", PASS, &[]),
            ("host-network", DENY, &[HostNetwork, EgressUnrestricted]),
            ("host-pid-privileged", DENY, &[HostNetwork]),
            ("host-pid-sys-admin", DENY, &[HostNetwork]),
            ("host-pid-ephemeral", DENY, &[HostNetwork]),
            ("host-pid-unprivileged", PASS, &[]),
            ("privileged-without-host-pid", PASS, &[]),
        ],
    );
    // hostPID with a container that may enter namespaces: the field is
    // hostPID, and the message names the container and what lets it in.
    for (name, field, container, why) in [
        (
            "host-pid-privileged",
            "spec.template.spec.hostPID",
            "container debug is privileged (spec.template.spec.containers[1].securityContext.privileged: true)",
            "drop privileged: true from container debug",
        ),
        (
            "host-pid-sys-admin",
            "spec.template.spec.hostPID",
            "container setup adds capability CAP_SYS_ADMIN (spec.template.spec.initContainers[0].securityContext.capabilities.add)",
            "drop capability CAP_SYS_ADMIN from container setup",
        ),
        (
            "host-pid-ephemeral",
            "spec.hostPID",
            "container debugger adds capability all (spec.ephemeralContainers[0].securityContext.capabilities.add)",
            "drop capability all from container debugger",
        ),
    ] {
        let (_, x) = v[name].violations().next().unwrap();
        assert_eq!(x.field, field, "{name}");
        let text = x.message.text();
        assert!(
            text.en.contains(container) && text.en.contains("nsenter -t 1 -n"),
            "{name}: {}",
            text.en
        );
        assert!(
            text.en.contains(&format!("remove hostPID: true, or {why}")),
            "{name}: {}",
            text.en
        );
        assert!(
            text.zh.contains("hostPID 为 true") && text.zh.contains("节点的网络命名空间"),
            "{name}: {}",
            text.zh
        );
    }
    let (_, x) = v["host-pid-privileged"].violations().next().unwrap();
    assert!(
        matches!(&x.evidence, Evidence::Egress(_)),
        "{:?}",
        x.evidence
    );
    let (_, x) = v["additive"].violations().next().unwrap();
    assert_eq!(
        x.field,
        "NetworkPolicy additive/b-dns spec.egress[0].to[0].ipBlock"
    );
    assert!(
        x.message.text().en.contains("8.8.8.0/24")
            && x.message.text().en.contains("registered to US"),
        "{}",
        x.message.text().en
    );
    let (_, x) = v["except-partial"].violations().next().unwrap();
    assert!(
        x.message.text().en.contains("8.8.8.8 is registered to US"),
        "{}",
        x.message.text().en
    );
    let (_, x) = v["aws-hk"].violations().next().unwrap();
    assert!(
        x.message.text().en.contains("registered to HK"),
        "{}",
        x.message.text().en
    );
    let (_, x) = v["no-policy"].violations().next().unwrap();
    assert!(
        x.message.text().en.contains("policyTypes: [Egress]"),
        "the fix shows an isolating policy: {}",
        x.message.text().en
    );
    assert!(
        v["external-name"]
            .notices
            .iter()
            .any(|n| n.code == "ExternalNameUnverified")
    );
    // Evidence for auditors: the effective egress as data.
    let eff = v["known-mainland"].egress.as_ref().unwrap();
    assert_eq!(eff.external_blocks.len(), 3);
    assert!(eff.external_blocks.iter().all(|b| b.mainland), "{eff:#?}");
}

#[test]
fn egress_under_cluster_only() {
    let v = judge("egress-cluster-only.yaml", &["10.0.0.0/16,10.96.0.0/12"]);
    assert_table(
        "egress-cluster-only.yaml",
        &v,
        &[
            ("uploader", DENY, &[EgressExternalForbidden]),
            ("worker", PASS, &[]),
        ],
    );
}

#[test]
fn bundled_example_shows_placement_and_egress_findings() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/cluster");
    let snapshot = Snapshot::new(Catalogue::builtin().clone(), AddressSpace::builtin());
    let report = check_inputs(&[path], snapshot, "default", NOW.parse().unwrap()).unwrap();
    let all: Vec<Code> = report
        .results
        .iter()
        .flat_map(|r| codes(&r.verdict))
        .collect();
    for code in [
        PlacementNotGuaranteed,
        NodeOutsideMainland,
        EgressUnrestricted,
        EgressOutsideMainland,
        HostNetwork,
    ] {
        assert!(all.contains(&code), "example lacks {code:?}");
    }
    assert!(report.summary.denied > 0 && report.summary.compliant > 0 && report.summary.warned > 0);
}

/// An exemption stored without `namespaces` (the CRD now requires them)
/// applies nowhere, and the policy says so; the policy itself is enforced.
#[test]
fn an_exemption_without_namespaces_applies_nowhere() {
    use residency_guard::api::ResidencyPolicy;
    use residency_guard::engine::compile_policy as compile;
    let policy: ResidencyPolicy = serde_json::from_value(serde_json::json!({
        "apiVersion": "residencyguard.io/v1alpha1", "kind": "ResidencyPolicy",
        "metadata": {"name": "legacy"},
        "spec": {"dataClasses": ["personal"], "exemptions": [{
            "selector": {"matchLabels": {"app": "fx-rates"}},
            "basis": "StandardContract", "reference": "CAC filing 2026-0042",
            "approvedBy": "dpo@example.com", "expires": "2027-06-30"}]}
    }))
    .unwrap();
    let now: Timestamp = NOW.parse().unwrap();
    let (compiled, warnings) = compile(&policy, Catalogue::builtin(), now).expect("still enforced");
    assert!(
        compiled.exemptions.is_empty(),
        "an unbound exemption must not apply"
    );
    assert_eq!(warnings.len(), 1);
    assert_eq!(warnings[0].field, "spec.exemptions[0].namespaces");
    assert!(warnings[0].message.en.contains("does not apply anywhere"));
    assert!(warnings[0].message.zh.contains("不适用"));
}

/// A policy that stops compiling keeps its last valid version enforced;
/// with none, its strictest reading (no loosening fields) is enforced.
#[test]
fn an_invalid_policy_stays_enforced() {
    use residency_guard::api::ResidencyPolicy;
    use residency_guard::engine::{Enforcement, LastValid, SnapshotBuilder};
    let now: Timestamp = NOW.parse().unwrap();
    let policy = |generation: i64, cidr: &str| -> ResidencyPolicy {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "residencyguard.io/v1alpha1", "kind": "ResidencyPolicy",
            "metadata": {"name": "p", "uid": "u-1", "generation": generation},
            "spec": {"dataClasses": ["personal"], "action": "Deny",
                     "egress": {"mode": "MainlandOnly", "allowedCIDRs": [cidr]}}
        }))
        .unwrap()
    };
    let base = || Snapshot::new(Catalogue::builtin().clone(), AddressSpace::builtin());

    // The operator's state keeps the last valid versions across builds.
    let mut memory = LastValid::default();
    let mut builder = SnapshotBuilder::new(base(), now).remembering(&mut memory);
    assert!(
        builder.policy(&policy(1, "203.0.113.0/24")).is_ok(),
        "compiles"
    );
    let s = builder.build();
    assert!(s.rejected.is_empty());

    let mut builder = SnapshotBuilder::new(base(), now).remembering(&mut memory);
    assert!(builder.policy(&policy(2, "not-a-cidr")).is_err());
    let s = builder.build();
    assert_eq!(s.policies.len(), 1);
    assert_eq!(s.policies[0].generation, Some(1), "the last valid version");
    assert_eq!(
        s.rejected[0].enforced,
        Enforcement::LastValid {
            generation: Some(1)
        }
    );
    assert!(s.rejected[0].summary().en.contains("generation 1"));

    let mut builder = SnapshotBuilder::new(base(), now);
    assert!(builder.policy(&policy(2, "not-a-cidr")).is_err());
    let s = builder.build();
    assert_eq!(s.rejected[0].enforced, Enforcement::Strictest);
    assert!(
        s.policies[0].allowed_cidrs.is_empty(),
        "nothing that loosens it"
    );
    assert_eq!(s.policies[0].action, Action::Deny);
    assert!(s.rejected[0].summary().zh.contains("最严格"));
}

/// Messages written in one language (`Detail::In`, the webhook's answer)
/// are exactly that language of the bilingual messages, and the verdict is
/// otherwise the same, for every workload of every fixture and of
/// examples/cluster.
#[test]
fn one_language_messages_equal_that_language_of_both() {
    use residency_guard::cli::load_inputs;
    use residency_guard::engine::{Detail, Lang, evaluate_with};

    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut inputs: Vec<Vec<PathBuf>> = std::fs::read_dir(root.join("tests/fixtures"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .map(|p| vec![p])
        .collect();
    let mut example: Vec<PathBuf> = std::fs::read_dir(root.join("examples/cluster"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    example.sort();
    inputs.push(example);
    let now: Timestamp = NOW.parse().unwrap();
    let space =
        AddressSpace::builtin().with_cluster(parse_cidr_args(&["10.0.0.0/8".into()]).unwrap());
    let mut messages = 0;
    for files in &inputs {
        let base = Snapshot::new(Catalogue::builtin().clone(), space.clone());
        let loaded =
            load_inputs(files, base, "default", now).unwrap_or_else(|e| panic!("{files:?}: {e:?}"));
        for (_, w) in &loaded.workloads {
            let Ok(full) = evaluate_with(&loaded.snapshot, w, now, Detail::Full) else {
                continue;
            };
            for lang in [Lang::En, Lang::ZhCn] {
                let mut one = evaluate_with(&loaded.snapshot, w, now, Detail::In(lang)).unwrap();
                for (p, q) in full.policies.iter().zip(one.policies.iter_mut()) {
                    assert_eq!(p.violations.len(), q.violations.len());
                    for (v, u) in p.violations.iter().zip(q.violations.iter_mut()) {
                        assert!(
                            !v.message.get(lang).is_empty(),
                            "{}: {:?}",
                            w.reference(),
                            v.code
                        );
                        assert_eq!(
                            u.message.get(lang),
                            v.message.get(lang),
                            "{} {:?} in {lang:?}",
                            w.reference(),
                            v.code
                        );
                        messages += 1;
                        // The rest of the verdict is the same.
                        u.message = v.message.clone();
                    }
                }
                assert_eq!(one, full, "{}", w.reference());
            }
        }
    }
    assert!(messages > 50, "only {messages} messages compared");
}
