//! Issue 17: what the messages say. Every violation message names the
//! object, rule, field, evidence and a fix that works, in English and
//! Simplified Chinese (fixtures: tests/fixtures/messages.yaml); policy
//! problems are refused with the field path, by `check` and the webhook
//! alike.

use std::collections::BTreeMap;
use std::path::PathBuf;

use jiff::Timestamp;
use residency_guard::api::{Action, ResidencyPolicy};
use residency_guard::cli::check_inputs;
use residency_guard::engine::Violation;
use residency_guard::engine::compile_policy as compile;
use residency_guard::engine::parse_cidr_args;
use residency_guard::engine::{AddressSpace, Catalogue, Code, Snapshot, Verdict};
use residency_guard::webhook::admission::{Endpoint, handle};

const NOW: &str = "2026-11-23T00:00:00Z";

fn judge(fixture: &str, cluster_cidrs: &[&str]) -> BTreeMap<String, Verdict> {
    let cidrs: Vec<String> = cluster_cidrs.iter().map(|s| s.to_string()).collect();
    let space = AddressSpace::builtin().with_cluster(parse_cidr_args(&cidrs).unwrap());
    let snapshot = Snapshot::new(Catalogue::builtin().clone(), space);
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(fixture);
    let report = check_inputs(&[path], snapshot, "default", NOW.parse().unwrap())
        .unwrap_or_else(|e| panic!("{fixture}: {e:?}"));
    report
        .results
        .into_iter()
        .map(|r| (r.verdict.workload.name.clone(), r.verdict))
        .collect()
}

fn messages() -> BTreeMap<String, Verdict> {
    judge("messages.yaml", &[])
}

/// The one counting violation of a workload.
fn only(v: &BTreeMap<String, Verdict>, name: &str) -> Violation {
    let verdict = v.get(name).unwrap_or_else(|| panic!("no workload {name}"));
    let found: Vec<&Violation> = verdict.violations().map(|(_, x)| x).collect();
    assert_eq!(found.len(), 1, "{name}: {verdict:#?}");
    found[0].clone()
}

/// Every violation carries its problem and its fix apart (issue 13): the
/// problem is a sentence of its own, the fix is never empty, and neither
/// holds the other's marker.
#[test]
fn problem_and_fix_are_kept_apart() {
    for fixture in [
        "messages.yaml",
        "egress.yaml",
        "placement-traps.yaml",
        "inventory.yaml",
    ] {
        for (name, verdict) in judge(fixture, &[]) {
            for (_, x) in verdict.violations() {
                let m = &x.message;
                assert!(m.problem.en.ends_with('.'), "{name}: {}", m.problem.en);
                assert!(m.problem.zh.ends_with('。'), "{name}: {}", m.problem.zh);
                assert!(!m.fix.en.is_empty() && !m.fix.zh.is_empty(), "{name}");
                lacks(&m.problem.en, "Fix:");
                lacks(&m.problem.zh, "修复：");
                has(&m.text().en, &format!("{} Fix: {}", m.problem.en, m.fix.en));
            }
        }
    }
}

#[track_caller]
fn has(text: &str, needle: &str) {
    assert!(text.contains(needle), "expected {needle:?} in:\n{text}");
}

#[track_caller]
fn lacks(text: &str, needle: &str) {
    assert!(
        !text.contains(needle),
        "did not expect {needle:?} in:\n{text}"
    );
}

#[test]
fn the_fix_offers_only_regions_whose_every_node_is_verified() {
    let v = messages();
    let x = only(&v, "anywhere");
    assert_eq!(x.code, Code::PlacementNotGuaranteed);
    has(
        &x.message.text().en,
        "topology.kubernetes.io/region In [cn-hangzhou, cn-northwest-1] under",
    );
    has(
        &x.message.text().en,
        "cn-north-1 is left out because node liar (labelled cn-north-1 but its aws providerID says ap-east-1); correct or remove that node to use cn-north-1",
    );
    has(
        &x.message.text().zh,
        "topology.kubernetes.io/region In [cn-hangzhou, cn-northwest-1]",
    );
    has(&x.message.text().zh, "未列出 cn-north-1，因为节点 liar");
    // Following the fix passes; pinning the withheld region does not.
    assert_eq!(v["fix-followed"].action, None, "{:#?}", v["fix-followed"]);
    assert_eq!(only(&v, "liar-region").code, Code::NodeOutsideMainland);
}

#[test]
fn a_node_name_the_inventory_lacks_is_named_as_unknown() {
    let x = only(&messages(), "unknown-node");
    assert_eq!(x.field, "spec.nodeName");
    has(
        &x.message.text().en,
        "spec.nodeName names node gpu-9, which is not in the node inventory (an unknown node)",
    );
    lacks(&x.message.text().en, "spec.nodeSelector");
    lacks(&x.message.text().en, "matching nodes are in mainland China");
    has(
        &x.message.text().en,
        "Fix: name a node that exists and is in mainland China",
    );
    has(
        &x.message.text().zh,
        "spec.nodeName 指定的节点 gpu-9 不在节点清单中（未知节点）",
    );
}

#[test]
fn a_node_name_without_any_inventory_is_named_too() {
    let v = judge("placement-traps.yaml", &[]);
    let x = only(&v, "nodename-no-inventory");
    assert_eq!(x.field, "spec.nodeName");
    has(
        &x.message.text().en,
        "spec.nodeName names node bj-1, and no nodes were given, so that node cannot be verified",
    );
    has(
        &x.message.text().zh,
        "spec.nodeName 指定了节点 bj-1，但未提供节点清单，无法核实该节点",
    );
}

#[test]
fn the_deprecated_region_key_is_named_with_the_ga_key_as_the_fix() {
    let x = only(&messages(), "legacy-selector");
    assert_eq!(x.code, Code::PlacementNotGuaranteed);
    has(
        &x.message.text().en,
        "pins the deprecated label failure-domain.beta.kubernetes.io/region, which does not count as a guarantee",
    );
    has(
        &x.message.text().en,
        "Fix: use the GA key topology.kubernetes.io/region instead of failure-domain.beta.kubernetes.io/region in spec.template.spec.nodeSelector (topology.kubernetes.io/region In [cn-northwest-1])",
    );
    has(
        &x.message.text().zh,
        "已弃用的标签 failure-domain.beta.kubernetes.io/region",
    );
    has(
        &x.message.text().zh,
        "用 GA 标签 topology.kubernetes.io/region 代替",
    );
}

#[test]
fn an_empty_to_list_is_described_as_such() {
    let x = only(&messages(), "to-empty");
    assert_eq!(x.code, Code::EgressAllowsAll);
    assert_eq!(x.field, "NetworkPolicy to-empty/dns spec.egress[1]");
    has(
        &x.message.text().en,
        "the rule's `to` is an empty list (`to: []`)",
    );
    lacks(&x.message.text().en, "the rule has no `to`");
    has(&x.message.text().zh, "`to` 是空列表（`to: []`）");
}

#[test]
fn rules_are_counted_from_one_next_to_their_field_path() {
    let v = messages();
    let x = only(&v, "to-empty");
    has(
        &x.message.text().en,
        "rule 2 (spec.egress[1]) of NetworkPolicy to-empty/dns",
    );
    has(
        &x.message.text().zh,
        "NetworkPolicy to-empty/dns 的第 2 条规则（spec.egress[1]）",
    );
    let x = only(&v, "private-8");
    has(
        &x.message.text().en,
        "rule 1 (spec.egress[0]) of NetworkPolicy private-8/internal",
    );
    has(&x.message.text().zh, "的第 1 条规则（spec.egress[0]）");
}

#[test]
fn a_private_range_points_to_the_cluster_cidrs_not_to_an_except() {
    let x = only(&messages(), "private-8");
    assert_eq!(x.code, Code::EgressOutsideMainland);
    has(&x.message.text().en, "10.0.0.0 is a private address");
    has(
        &x.message.text().en,
        "if 10.0.0.0/8 is the cluster's own pod or service network, declare it as a cluster CIDR (check --cluster-cidr, Helm value clusterCidrs)",
    );
    lacks(&x.message.text().en, "except");
    has(&x.message.text().zh, "--cluster-cidr，Helm 值 clusterCidrs");
    lacks(&x.message.text().zh, "except");
    // And the advice works.
    let with_cluster = judge("messages.yaml", &["10.0.0.0/8"]);
    assert_eq!(with_cluster["private-8"].action, None);
}

#[test]
fn an_except_is_offered_only_when_a_few_excepts_fix_the_block() {
    let v = messages();
    let x = only(&v, "v6-everything");
    lacks(&x.message.text().en, "except for");
    lacks(&x.message.text().en, "add except");
    has(
        &x.message.text().en,
        "Fix: narrow the ipBlock to mainland-China destinations",
    );
    has(
        &x.message.text().zh,
        "将 ipBlock 收窄到中国大陆境内的目的地",
    );
    let x = only(&v, "one-except");
    has(
        &x.message.text().en,
        "Fix: add except: [203.0.112.0/24] to the ipBlock",
    );
    has(&x.message.text().zh, "添加 except: [203.0.112.0/24]");
}

#[test]
fn a_near_miss_network_policy_is_named() {
    let v = messages();
    let x = only(&v, "near-deployment-label");
    assert_eq!(x.code, Code::EgressUnrestricted);
    has(
        &x.message.text().en,
        "nearly: NetworkPolicy near-deployment-label/team-egress isolates egress for podSelector {team: payments}, but only the Deployment's own metadata.labels carry that, not its pods (spec.template.metadata.labels)",
    );
    has(
        &x.message.text().en,
        "Fix: add those labels to spec.template.metadata.labels",
    );
    lacks(&x.message.text().en, "for example");
    has(
        &x.message.text().zh,
        "NetworkPolicy near-deployment-label/team-egress",
    );
    has(
        &x.message.text().zh,
        "只有该 Deployment 自身的 metadata.labels 带有这些标签",
    );

    let x = only(&v, "near-ingress-typed");
    has(
        &x.message.text().en,
        "its spec.policyTypes [Ingress] leaves out Egress, so the egress rules are ignored",
    );
    has(
        &x.message.text().en,
        "Fix: add Egress to spec.policyTypes of NetworkPolicy near-ingress-typed/typed-ingress",
    );
    has(&x.message.text().zh, "不含 Egress，因此出站规则不生效");

    let x = only(&v, "near-empty-untyped");
    has(
        &x.message.text().en,
        "has egress: [] but no spec.policyTypes, so the API server sets policyTypes to [Ingress]",
    );
    has(
        &x.message.text().en,
        "Fix: set spec.policyTypes: [Ingress, Egress] in NetworkPolicy near-empty-untyped/deny-all",
    );
    has(
        &x.message.text().zh,
        "API server 会将 policyTypes 设为 [Ingress]",
    );
}

#[test]
fn a_block_covered_by_allowed_cidrs_says_which_policy_allows_it() {
    let v = messages();
    let verdict = &v["allowed-block"];
    assert_eq!(verdict.action, None);
    let eff = verdict.egress.as_ref().unwrap();
    let block = &eff.external_blocks[0];
    assert!(!block.mainland);
    let allowed: Vec<&str> = block.allowed_by.iter().map(|p| &**p).collect();
    assert_eq!(allowed, ["personal-mainland"]);
    // A block nothing allows says nothing of the kind.
    let eff = v["one-except"].egress.as_ref().unwrap();
    assert!(eff.external_blocks[0].allowed_by.is_empty());
    let json = serde_json::to_value(&v["one-except"]).unwrap();
    assert!(
        json["egress"]["externalBlocks"][0]
            .get("allowedBy")
            .is_none(),
        "{json}"
    );
}

#[test]
fn every_message_in_the_fixture_is_in_both_languages() {
    for (name, verdict) in messages() {
        for (_, x) in verdict.violations() {
            assert!(
                x.message.text().en.contains("Fix: "),
                "{name}: {}",
                x.message.text().en
            );
            assert!(
                x.message.text().zh.contains("修复："),
                "{name}: {}",
                x.message.text().zh
            );
        }
    }
    for (name, verdict) in messages() {
        let expected = if verdict.policies.iter().any(|p| p.violated()) {
            Some(Action::Deny)
        } else {
            None
        };
        assert_eq!(verdict.action, expected, "{name}");
    }
}

fn policy(yaml: &str) -> ResidencyPolicy {
    serde_norway::from_str(yaml).unwrap()
}

#[test]
fn policy_problems_name_the_field_in_both_languages() {
    let now: Timestamp = NOW.parse().unwrap();
    let p = policy(
        "apiVersion: residencyguard.io/v1alpha1\nkind: ResidencyPolicy\nmetadata: {name: p}\nspec:\n  dataClasses: [personal]\n  namespaceSelector:\n    matchLabels: {\"bad key!\": \"yes\"}\n    matchExpressions: [{key: env, operator: In, values: []}, {key: \"a/b/c\", operator: Exists}]\n  placement:\n    allowedNodes: {nodeSelectorTerms: [{matchExpressions: [{key: topology.kubernetes.io/region, operator: In, values: [cn-hongkong, ap-southeast-1]}, {key: \"no good\", operator: Exists}]}]}\n  exemptions:\n  - {selector: {matchExpressions: [{key: app, operator: In, values: [\"not ok\"]}]}, basis: Certification, reference: r, approvedBy: a, expires: \"2026-02-30\"}\n  - {selector: {matchLabels: {app: x}}, basis: Certification, reference: r, approvedBy: a, expires: \"2026-13-01\"}\n  - {selector: {matchLabels: {app: y}}, basis: Certification, reference: r, approvedBy: a, expires: \"30.06.2027\"}\n",
    );
    let errors = compile(&p, Catalogue::builtin(), now).unwrap_err();
    let by_field = |f: &str| -> Vec<_> { errors.iter().filter(|e| e.field == f).collect() };
    let one = |f: &str| {
        let found = by_field(f);
        assert_eq!(found.len(), 1, "{f}: {errors:#?}");
        found[0].message.clone()
    };

    let m = one("spec.namespaceSelector.matchLabels");
    has(&m.en, "\"bad key!\" is not a valid label key");
    has(&m.zh, "\"bad key!\" 不是有效的标签键");
    has(
        &one("spec.namespaceSelector.matchExpressions[0].values").en,
        "env In has no values",
    );
    has(
        &one("spec.namespaceSelector.matchExpressions[1].key").en,
        "\"a/b/c\" is not a valid label key",
    );
    has(
        &one("spec.placement.allowedNodes.nodeSelectorTerms[0].matchExpressions[1].key").en,
        "\"no good\" is not a valid label key",
    );
    has(
        &one("spec.exemptions[0].selector.matchExpressions[0].values[0]").en,
        "\"not ok\" (for key app) is not a valid label value",
    );

    // Impossible dates are called impossible; malformed ones malformed.
    let m = one("spec.exemptions[0].expires");
    assert_eq!(
        m.en,
        "\"2026-02-30\" is an impossible date: February 2026 has 28 days"
    );
    has(
        &m.zh,
        "\"2026-02-30\" 是不存在的日期：2026 年 2 月只有 28 天",
    );
    lacks(&m.en, "not a date in the form");
    has(
        &one("spec.exemptions[1].expires").en,
        "\"2026-13-01\" is an impossible date: there is no month 13",
    );
    has(
        &one("spec.exemptions[2].expires").en,
        "\"30.06.2027\" is not a date in the form YYYY-MM-DD",
    );

    // Where a region is, said once.
    let regions = by_field("spec.placement.allowedNodes.nodeSelectorTerms[0]");
    let texts: Vec<&str> = regions.iter().map(|e| e.message.en.as_str()).collect();
    assert!(
        texts.contains(&"names region cn-hongkong, which is in Hong Kong; nodes there never count as mainland China"),
        "{texts:#?}"
    );
    for e in &regions {
        lacks(&e.message.en, "Hong Kong (Hong Kong)");
        lacks(&e.message.zh, "中国香港（Hong Kong）");
        has(&e.message.zh, "那里的节点永远不算中国大陆");
    }
}

#[test]
fn a_valid_selector_still_compiles() {
    let p = policy(
        "apiVersion: residencyguard.io/v1alpha1\nkind: ResidencyPolicy\nmetadata: {name: p}\nspec:\n  dataClasses: [personal]\n  namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: payments, env: \"\"}, matchExpressions: [{key: example.com/tier, operator: NotIn, values: [dev, test-1]}]}\n",
    );
    compile(&p, Catalogue::builtin(), NOW.parse().unwrap()).unwrap();
}

/// The webhook refuses what `check` refuses, in the same words: both call
/// the engine's policy compile.
#[test]
fn the_webhook_refuses_a_bad_selector_key_with_its_field_path() {
    let review = serde_json::json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "u-17",
            "kind": {"group": "residencyguard.io", "version": "v1alpha1", "kind": "ResidencyPolicy"},
            "name": "p",
            "operation": "CREATE",
            "object": {
                "apiVersion": "residencyguard.io/v1alpha1",
                "kind": "ResidencyPolicy",
                "metadata": {"name": "p"},
                "spec": {"dataClasses": ["personal"], "namespaceSelector": {"matchLabels": {"bad key!": "x"}}}
            }
        }
    });
    let body = serde_json::to_vec(&review).unwrap();
    let snapshot = Snapshot::new(Catalogue::builtin().clone(), AddressSpace::builtin());
    let none: BTreeMap<String, Vec<residency_guard::engine::Workload>> = BTreeMap::new();
    for (lang, needle) in [
        (
            residency_guard::engine::Lang::En,
            "ResidencyPolicy p is invalid: spec.namespaceSelector.matchLabels: \"bad key!\" is not a valid label key",
        ),
        (
            residency_guard::engine::Lang::ZhCn,
            "spec.namespaceSelector.matchLabels: \"bad key!\" 不是有效的标签键",
        ),
    ] {
        let handled = handle(
            &body,
            Endpoint::Policies,
            &snapshot,
            &none,
            lang,
            NOW.parse().unwrap(),
        )
        .unwrap();
        let response = handled.review.response;
        assert!(!response.allowed);
        let status = response.status.unwrap();
        assert_eq!(status.code, 422);
        has(&status.message, needle);
    }
}
