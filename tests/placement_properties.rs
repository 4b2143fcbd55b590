//! The placement engine checked against an independent brute-force model of
//! Kubernetes node selection.
//!
//! The model below is written from the Kubernetes rules (nodeSelector,
//! required node affinity, matchFields, nodeName) and never calls the
//! engine's selector code. Small vocabularies make collisions between pod
//! constraints, `allowedNodes` and nodes likely; the node universe is small
//! enough to enumerate, so "every node the pod may run on" is checked
//! exhaustively rather than sampled.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{
    NodeAffinity, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, PreferredSchedulingTerm,
};
use proptest::prelude::*;
use proptest::sample::{select, subsequence};
use residency_guard::api::{
    DATA_CLASS_LABEL, DataClass, Placement, ResidencyPolicy, ResidencyPolicySpec,
};
use residency_guard::engine::REGION_LABEL;
use residency_guard::engine::RegionLookup;
use residency_guard::engine::{
    AddressSpace, Catalogue, Code, NodeInfo, Snapshot, Verdict, Workload, WorkloadKind, evaluate,
};
use residency_guard::engine::{AffinityView, PodSpecView};
use residency_guard::engine::{Evidence, Violation};

// ---------------------------------------------------------------------------
// Vocabulary
// ---------------------------------------------------------------------------

const LEGACY_REGION_LABEL: &str = "failure-domain.beta.kubernetes.io/region";
const NAME_FIELD: &str = "metadata.name";

/// Two mainland regions, three known to be outside (one of them the
/// Hong Kong look-alike `cn-hongkong`), and one the catalogue does not know
/// (a private data centre: only `allowedNodes` can vouch for it).
const REGIONS: &[&str] = &[
    "cn-north-1",
    "cn-hangzhou",
    "ap-east-1",
    "us-east-1",
    "cn-hongkong",
    "dc-onprem-1",
];
const MAINLAND_REGIONS: &[&str] = &["cn-north-1", "cn-hangzhou"];
/// Region values `allowedNodes` may name without the policy being rejected.
const VOUCHABLE_REGIONS: &[&str] = &["cn-north-1", "cn-hangzhou", "dc-onprem-1"];
/// Legacy region label values on inventory nodes.
const LEGACY_REGIONS: &[&str] = &["cn-north-1", "us-east-1", "dc-onprem-1"];
const POOLS: &[&str] = &["a", "b", "c"];
const TIERS: &[&str] = &["1", "2", "x"];
const INTS: &[&str] = &["0", "1", "2", "3"];
const NODE_NAMES: &[&str] = &["n0", "n1", "n2", "n3"];
/// providerIDs on inventory nodes, with the region each one names: in
/// mainland China, abroad (Hong Kong, the US), not in the catalogue, none.
/// A labelled node's providerID either agrees with its label or
/// contradicts it: the providers below have each region they name.
const PROVIDER_IDS: &[(&str, Option<&str>)] = &[
    ("aws:///cn-north-1a/i-1", Some("cn-north-1")),
    ("cn-hangzhou.i-bp1", Some("cn-hangzhou")),
    ("aws:///ap-east-1a/i-2", Some("ap-east-1")),
    ("alicloud://cn-hongkong.i-j6c", Some("cn-hongkong")),
    ("aws:///us-east-1a/i-3", Some("us-east-1")),
    ("aws:///eu-mars-1a/i-4", Some("eu-mars-1")),
    // A format no provider uses: read as no providerID at all.
    ("kind://docker/kind/n", None),
];
/// Names a pod may refer to: the universe's plus one no node has.
const POD_NODE_NAMES: &[&str] = &["n0", "n1", "n2", "n3", "n9"];

const KEYS: [(&str, &[&str]); 3] = [(REGION_LABEL, REGIONS), ("pool", POOLS), ("tier", TIERS)];

fn now() -> Timestamp {
    "2026-11-23T00:00:00Z".parse().unwrap()
}

fn catalogue() -> &'static Catalogue {
    Catalogue::builtin()
}

/// Every node over the vocabulary: each key absent or one of its values,
/// each name. 7 * 4 * 4 * 4 = 448 nodes.
static UNIVERSE: LazyLock<Vec<NodeInfo>> = LazyLock::new(|| {
    let mut nodes = vec![NodeInfo::default()];
    for (key, values) in KEYS {
        nodes = nodes
            .into_iter()
            .flat_map(|n| {
                let mut out = vec![n.clone()];
                for v in values {
                    let mut m = n.clone();
                    m.labels.insert(key.to_string(), v.to_string());
                    out.push(m);
                }
                out
            })
            .collect();
    }
    nodes
        .into_iter()
        .flat_map(|n| {
            NODE_NAMES.iter().map(move |name| NodeInfo {
                name: name.to_string(),
                ..n.clone()
            })
        })
        .collect()
});

// ---------------------------------------------------------------------------
// The model: Kubernetes node selection, from the rules
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq)]
enum Space {
    Label,
    Field,
}

/// One requirement against one node; `None` when Kubernetes would reject the
/// requirement (then the whole term matches no node).
fn model_requirement(space: Space, r: &NodeSelectorRequirement, node: &NodeInfo) -> Option<bool> {
    let values: &[String] = r.values.as_deref().unwrap_or(&[]);
    let value: Option<&str> = match space {
        Space::Label => node.labels.get(&r.key).map(String::as_str),
        // The only node field Kubernetes selects on.
        Space::Field => (r.key == NAME_FIELD).then_some(node.name.as_str()),
    };
    let listed = |v: &str| values.iter().any(|x| x == v);
    match (space, r.operator.as_str()) {
        (_, "In" | "NotIn") if values.is_empty() => None,
        // Pod validation: a node field selector takes exactly one value.
        (Space::Field, "In" | "NotIn") if values.len() != 1 => None,
        (_, "In") => Some(value.is_some_and(listed)),
        (_, "NotIn") => Some(value.is_none_or(|v| !listed(v))),
        (Space::Label, "Exists" | "DoesNotExist") if !values.is_empty() => None,
        (Space::Label, "Exists") => Some(value.is_some()),
        (Space::Label, "DoesNotExist") => Some(value.is_none()),
        (Space::Label, op @ ("Gt" | "Lt")) => {
            let [bound] = values else { return None };
            let bound: i64 = bound.parse().ok()?;
            let x = value.and_then(|v| v.parse::<i64>().ok());
            Some(x.is_some_and(|x| if op == "Gt" { x > bound } else { x < bound }))
        }
        _ => None,
    }
}

fn requirements(
    term: &NodeSelectorTerm,
) -> impl Iterator<Item = (Space, &NodeSelectorRequirement)> {
    let exprs = term
        .match_expressions
        .iter()
        .flatten()
        .map(|r| (Space::Label, r));
    let fields = term
        .match_fields
        .iter()
        .flatten()
        .map(|r| (Space::Field, r));
    exprs.chain(fields)
}

/// A term: its requirements AND'ed; empty or invalid terms match nothing.
fn model_term(term: &NodeSelectorTerm, node: &NodeInfo) -> bool {
    let mut any = false;
    let mut all = true;
    for (space, r) in requirements(term) {
        any = true;
        match model_requirement(space, r, node) {
            None => return false,
            Some(m) => all &= m,
        }
    }
    any && all
}

fn model_term_valid(term: &NodeSelectorTerm) -> bool {
    let probe = NodeInfo::default();
    let mut reqs = requirements(term).peekable();
    reqs.peek().is_some() && reqs.all(|(space, r)| model_requirement(space, r, &probe).is_some())
}

/// A NodeSelector: terms OR'ed.
fn model_selector(sel: &NodeSelector, node: &NodeInfo) -> bool {
    sel.node_selector_terms.iter().any(|t| model_term(t, node))
}

fn required_of(pod: &PodSpecView) -> Option<&NodeSelector> {
    pod.affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|na| {
            na.required_during_scheduling_ignored_during_execution
                .as_ref()
        })
}

/// May the scheduler (or the kubelet, for nodeName) put the pod on `node`?
fn model_may_run(pod: &PodSpecView, node: &NodeInfo) -> bool {
    pod.node_selector
        .iter()
        .flatten()
        .all(|(k, v)| node.labels.get(k) == Some(v))
        && pod.node_name.as_ref().is_none_or(|n| *n == node.name)
        && required_of(pod).is_none_or(|sel| model_selector(sel, node))
}

fn region_of(node: &NodeInfo) -> Option<&str> {
    node.labels.get(REGION_LABEL).map(String::as_str)
}

fn allowed_matches(allowed: Option<&NodeSelector>, node: &NodeInfo) -> bool {
    allowed.is_some_and(|a| model_selector(a, node))
}

/// Check 1's notion of inside: the region label says mainland, or the
/// policy's `allowedNodes` selects the node.
fn model_inside_by_labels(node: &NodeInfo, allowed: Option<&NodeSelector>) -> bool {
    region_of(node).is_some_and(|r| catalogue().is_mainland_region(r))
        || allowed_matches(allowed, node)
}

/// The region a node's providerID names (the table above).
fn model_provider_region(node: &NodeInfo) -> Option<&'static str> {
    let id = node.provider_id.as_deref()?;
    PROVIDER_IDS
        .iter()
        .find(|(known, _)| *known == id)
        .and_then(|(_, region)| *region)
}

/// Check 2's notion of acceptable: mainland, or vouched for by
/// `allowedNodes` when the region is missing or unknown. Known-abroad is
/// never acceptable, nor is a node whose GA and legacy region labels
/// disagree, nor one whose providerID names another region than its label;
/// the legacy label counts when the GA one is missing. A node with no
/// region label whose providerID names a region abroad is abroad.
fn model_acceptable(node: &NodeInfo, allowed: Option<&NodeSelector>) -> bool {
    let ga = node.labels.get(REGION_LABEL);
    let legacy = node.labels.get(LEGACY_REGION_LABEL);
    if ga.is_some() && legacy.is_some() && ga != legacy {
        return false;
    }
    let known = |r: &str| !matches!(catalogue().lookup(None, r), RegionLookup::Unknown);
    let known_abroad = |r: &str| matches!(catalogue().lookup(None, r), RegionLookup::Known(e) if !e.jurisdiction.is_mainland());
    match (
        ga.or(legacy).map(String::as_str),
        model_provider_region(node),
    ) {
        (Some(r), Some(p)) if r != p => false,
        (Some(r), _) if catalogue().is_mainland_region(r) => true,
        (Some(r), _) if known(r) => false,
        (None, Some(p)) if known_abroad(p) => false,
        _ => allowed_matches(allowed, node),
    }
}

/// Must `add_policy` reject this `allowedNodes`? An invalid or empty term, or
/// `In` on a region label naming a region known to be outside mainland China.
fn model_policy_rejected(allowed: Option<&NodeSelector>) -> bool {
    let Some(allowed) = allowed else { return false };
    allowed.node_selector_terms.iter().any(|t| {
        !model_term_valid(t)
            || requirements(t).any(|(space, r)| {
                space == Space::Label
                    && (r.key == REGION_LABEL || r.key == LEGACY_REGION_LABEL)
                    && r.operator == "In"
                    && r.values.iter().flatten().any(|v| {
                        matches!(catalogue().lookup(None, v), RegionLookup::Known(e) if !e.jurisdiction.is_mainland())
                    })
            })
    })
}

/// The pod's terms as the guarantee reads them: each required term (with
/// nodeSelector and nodeName), or nodeSelector alone (`None`).
fn model_terms(pod: &PodSpecView) -> Vec<Option<&NodeSelectorTerm>> {
    match required_of(pod) {
        Some(sel) => sel.node_selector_terms.iter().map(Some).collect(),
        None => vec![None],
    }
}

/// May the pod run on `node` through this term (`None`: no required
/// affinity)?
fn model_may_run_by(pod: &PodSpecView, term: Option<&NodeSelectorTerm>, node: &NodeInfo) -> bool {
    pod.node_selector
        .iter()
        .flatten()
        .all(|(k, v)| node.labels.get(k) == Some(v))
        && pod.node_name.as_ref().is_none_or(|n| *n == node.name)
        && term.is_none_or(|t| model_term(t, node))
}

/// The names a term (with nodeName) pins `metadata.name` to, when a valid
/// `In` on `metadata.name` or nodeName pins it: every name of the
/// vocabulary that all its name requirements and nodeName accept.
fn model_name_pin(pod: &PodSpecView, term: Option<&NodeSelectorTerm>) -> Option<Vec<&'static str>> {
    let fields: Vec<&NodeSelectorRequirement> = term
        .into_iter()
        .flat_map(|t| t.match_fields.iter().flatten())
        .filter(|r| r.key == NAME_FIELD)
        .collect();
    let probe = NodeInfo::default();
    let pinned = pod.node_name.is_some()
        || fields
            .iter()
            .any(|r| r.operator == "In" && model_requirement(Space::Field, r, &probe).is_some());
    pinned.then(|| {
        POD_NODE_NAMES
            .iter()
            .copied()
            .filter(|n| {
                let named = NodeInfo {
                    name: n.to_string(),
                    ..NodeInfo::default()
                };
                pod.node_name.as_deref().is_none_or(|x| x == *n)
                    && fields
                        .iter()
                        .all(|r| model_requirement(Space::Field, r, &named) == Some(true))
            })
            .collect()
    })
}

/// Does the term pin the pods by name to nodes that all exist in the
/// inventory (names are unique there) and are acceptable?
fn model_name_pin_holds(
    pod: &PodSpecView,
    term: Option<&NodeSelectorTerm>,
    allowed: Option<&NodeSelector>,
    inventory: &[NodeInfo],
) -> bool {
    model_name_pin(pod, term).is_some_and(|names| {
        names.iter().all(|n| {
            inventory
                .iter()
                .find(|node| node.name == *n)
                .is_some_and(|node| model_acceptable(node, allowed))
        })
    })
}

/// A counter-example to the guarantee when nodes are known: a node of the
/// universe the pod may run on through a term that is not pinned by name
/// to acceptable inventory nodes, and that is not inside by its labels.
fn inventory_counterexample(
    pod: &PodSpecView,
    allowed: Option<&NodeSelector>,
    inventory: &[NodeInfo],
) -> Option<&'static NodeInfo> {
    model_terms(pod)
        .into_iter()
        .filter(|t| !model_name_pin_holds(pod, *t, allowed, inventory))
        .find_map(|t| {
            UNIVERSE
                .iter()
                .find(|n| model_may_run_by(pod, t, n) && !model_inside_by_labels(n, allowed))
        })
}

/// The first node of the universe the pod may run on that is not inside,
/// if any: a counter-example to the placement guarantee.
fn universe_counterexample(
    pod: &PodSpecView,
    allowed: Option<&NodeSelector>,
) -> Option<&'static NodeInfo> {
    UNIVERSE
        .iter()
        .find(|n| model_may_run(pod, n) && !model_inside_by_labels(n, allowed))
}

// ---------------------------------------------------------------------------
// Driving the engine
// ---------------------------------------------------------------------------

fn policy(allowed: Option<NodeSelector>) -> ResidencyPolicy {
    ResidencyPolicy::new(
        "residency",
        ResidencyPolicySpec {
            data_classes: vec![DataClass::Personal],
            namespace_selector: None,
            placement: Placement {
                allowed_nodes: allowed,
                ..Placement::default()
            },
            egress: Default::default(),
            storage: Default::default(),
            action: Default::default(),
            exemptions: Vec::new(),
        },
    )
}

/// A snapshot with one policy; `None` when the policy is rejected.
fn snapshot(allowed: Option<&NodeSelector>, nodes: Option<Vec<NodeInfo>>) -> Option<Snapshot> {
    let mut snap = Snapshot::new(catalogue().clone(), AddressSpace::default());
    snap.add_policy(&policy(allowed.cloned()), now()).ok()?;
    if let Some(nodes) = nodes {
        snap.set_nodes(nodes);
    }
    Some(snap)
}

fn workload(pod: PodSpecView) -> Workload {
    Workload {
        kind: WorkloadKind::Deployment,
        namespace: "default".into(),
        name: "w".into(),
        uid: None,
        labels: Default::default(),
        template_labels: BTreeMap::from([(DATA_CLASS_LABEL.to_string(), "personal".to_string())])
            .into(),
        pod,
        claim_templates: Vec::new(),
        controller: None,
        replicas: None,
        inherited_classes: Vec::new(),
    }
}

fn judge(snap: &Snapshot, w: &Workload) -> Verdict {
    evaluate(snap, w, now()).expect("the data-class label is valid")
}

/// The violations of the one policy (egress is Unrestricted, so placement only).
fn violations(verdict: &Verdict) -> &[Violation] {
    assert_eq!(verdict.policies.len(), 1, "exactly one governing policy");
    &verdict.policies[0].violations
}

fn not_guaranteed(verdict: &Verdict) -> bool {
    violations(verdict)
        .iter()
        .any(|v| v.code == Code::PlacementNotGuaranteed)
}

fn names(nodes: impl IntoIterator<Item = impl AsRef<str>>) -> Vec<String> {
    let mut v: Vec<String> = nodes.into_iter().map(|n| n.as_ref().to_string()).collect();
    v.sort();
    v
}

// ---------------------------------------------------------------------------
// Generators
// ---------------------------------------------------------------------------

fn req(key: &str, op: &str, values: Option<Vec<String>>) -> NodeSelectorRequirement {
    NodeSelectorRequirement {
        key: key.to_string(),
        operator: op.to_string(),
        values,
    }
}

fn strings(v: Vec<&str>) -> Vec<String> {
    v.into_iter().map(str::to_string).collect()
}

fn some_of(
    vocab: &'static [&'static str],
    size: std::ops::RangeInclusive<usize>,
) -> impl Strategy<Value = Vec<String>> {
    subsequence(vocab, size).prop_map(strings)
}

/// Requirements Kubernetes rejects (the scheduler then ignores the term).
fn invalid_label_expr(key: &'static str) -> impl Strategy<Value = NodeSelectorRequirement> {
    select(vec![
        ("In", Some(vec![])),
        ("NotIn", None),
        ("Exists", Some(vec!["a"])),
        ("DoesNotExist", Some(vec!["1"])),
        ("Gt", Some(vec!["x"])),
        ("Lt", Some(vec!["1", "2"])),
        ("Gt", None),
        ("Equals", Some(vec!["a"])),
        ("in", Some(vec!["cn-north-1"])),
    ])
    .prop_map(move |(op, vals)| req(key, op, vals.map(strings)))
}

fn label_expr_for(
    key: &'static str,
    vocab: &'static [&'static str],
) -> BoxedStrategy<NodeSelectorRequirement> {
    prop_oneof![
        5 => some_of(vocab, 1..=3).prop_map(move |v| req(key, "In", Some(v))),
        3 => some_of(vocab, 1..=2).prop_map(move |v| req(key, "NotIn", Some(v))),
        1 => prop_oneof![Just(None), Just(Some(vec![]))].prop_map(move |v| req(key, "Exists", v)),
        1 => Just(req(key, "DoesNotExist", None)),
        1 => (select(&["Gt", "Lt"][..]), select(INTS)).prop_map(move |(op, n)| req(key, op, Some(vec![n.to_string()]))),
        1 => invalid_label_expr(key),
    ]
    .boxed()
}

fn label_expr() -> impl Strategy<Value = NodeSelectorRequirement> {
    prop_oneof![
        // What a careful author writes: pinned to mainland regions.
        3 => some_of(MAINLAND_REGIONS, 1..=2).prop_map(|v| req(REGION_LABEL, "In", Some(v))),
        // ... or pinned to a pool `allowedNodes` may vouch for.
        2 => some_of(POOLS, 1..=2).prop_map(|v| req("pool", "In", Some(v))),
        // Numeric bounds, so that Gt/Lt pairs meet on one key.
        2 => (select(&["Gt", "Lt"][..]), select(INTS))
            .prop_map(|(op, n)| req("tier", op, Some(vec![n.to_string()]))),
        3 => label_expr_for(REGION_LABEL, REGIONS),
        2 => label_expr_for("pool", POOLS),
        2 => label_expr_for("tier", TIERS),
    ]
}

fn field_expr() -> impl Strategy<Value = NodeSelectorRequirement> {
    prop_oneof![
        8 => (select(&["In", "NotIn"][..]), select(POD_NODE_NAMES))
            .prop_map(|(op, n)| req(NAME_FIELD, op, Some(vec![n.to_string()]))),
        // Not a node field: no node has it.
        1 => (select(&["In", "NotIn"][..]), select(POD_NODE_NAMES))
            .prop_map(|(op, n)| req("metadata.uid", op, Some(vec![n.to_string()]))),
        // Only In and NotIn with exactly one value are valid in matchFields.
        1 => select(vec![
            ("Exists", None),
            ("In", Some(vec![])),
            ("Gt", Some(vec!["1"])),
            ("In", Some(vec![POD_NODE_NAMES[0], POD_NODE_NAMES[1]])),
            ("NotIn", Some(vec![POD_NODE_NAMES[0], POD_NODE_NAMES[1]])),
        ])
            .prop_map(|(op, vals)| req(NAME_FIELD, op, vals.map(strings))),
    ]
}

fn term_with(
    exprs: impl Strategy<Value = NodeSelectorRequirement> + 'static,
    fields_weight: f64,
) -> impl Strategy<Value = NodeSelectorTerm> {
    let exprs = prop_oneof![
        1 => Just(Vec::new()),
        12 => prop::collection::vec(exprs, 1..=3),
    ];
    (
        exprs,
        prop::option::weighted(fields_weight, prop::collection::vec(field_expr(), 1..=2)),
        any::<bool>(),
    )
        .prop_map(|(exprs, fields, none_when_empty)| NodeSelectorTerm {
            match_expressions: if exprs.is_empty() && none_when_empty {
                None
            } else {
                Some(exprs)
            },
            match_fields: fields,
        })
}

fn term() -> impl Strategy<Value = NodeSelectorTerm> {
    term_with(label_expr(), 0.25)
}

fn node_selector() -> impl Strategy<Value = Option<BTreeMap<String, String>>> {
    let pair = (0..KEYS.len(), 0..8usize).prop_map(|(k, v)| {
        let (key, vocab) = KEYS[k];
        (key.to_string(), vocab[v % vocab.len()].to_string())
    });
    prop::option::weighted(
        0.4,
        prop::collection::vec(pair, 0..=2).prop_map(|pairs| pairs.into_iter().collect()),
    )
}

fn pod(
    node_name: impl Strategy<Value = Option<&'static str>>,
) -> impl Strategy<Value = PodSpecView> {
    (
        node_selector(),
        prop::option::weighted(
            0.75,
            prop_oneof![
                1 => Just(Vec::new()),
                12 => prop::collection::vec(term(), 1..=3),
            ],
        ),
        prop::option::weighted(0.2, term()),
        node_name,
    )
        .prop_map(|(node_selector, required, preferred, node_name)| {
            let affinity = (required.is_some() || preferred.is_some()).then(|| AffinityView {
                node_affinity: Some(NodeAffinity {
                    required_during_scheduling_ignored_during_execution: required.map(|terms| {
                        NodeSelector {
                            node_selector_terms: terms,
                        }
                    }),
                    preferred_during_scheduling_ignored_during_execution: preferred.map(|t| {
                        vec![PreferredSchedulingTerm {
                            weight: 10,
                            preference: t,
                        }]
                    }),
                }),
            });
            PodSpecView {
                node_selector,
                affinity,
                node_name: node_name.map(str::to_string),
                ..PodSpecView::default()
            }
        })
}

/// `allowedNodes`: mostly what a real policy would say (pools, tiers,
/// mainland or private regions), sometimes something the policy compiler
/// must reject.
fn allowed_nodes() -> impl Strategy<Value = Option<NodeSelector>> {
    let expr = prop_oneof![
        4 => some_of(POOLS, 1..=2).prop_map(|v| req("pool", "In", Some(v))),
        2 => some_of(TIERS, 1..=2).prop_map(|v| req("tier", "In", Some(v))),
        2 => select(&["pool", "tier"][..]).prop_map(|k| req(k, "Exists", None)),
        3 => label_expr_for("pool", POOLS),
        2 => label_expr_for("tier", TIERS),
        2 => some_of(VOUCHABLE_REGIONS, 1..=2).prop_map(|v| req(REGION_LABEL, "In", Some(v))),
        1 => some_of(REGIONS, 1..=2).prop_map(|v| req(REGION_LABEL, "NotIn", Some(v))),
        1 => label_expr_for(REGION_LABEL, REGIONS),
    ];
    let term = (
        prop::collection::vec(expr, 1..=2),
        prop::option::weighted(0.1, prop::collection::vec(field_expr(), 1..=1)),
    )
        .prop_map(|(exprs, fields)| NodeSelectorTerm {
            match_expressions: Some(exprs),
            match_fields: fields,
        });
    prop::option::weighted(
        0.6,
        prop::collection::vec(term, 1..=2).prop_map(|terms| NodeSelector {
            node_selector_terms: terms,
        }),
    )
}

/// Nodes from the universe, some also carrying the legacy region label
/// (which node trust reads, and which must agree with the GA one).
fn inventory() -> impl Strategy<Value = Vec<NodeInfo>> {
    let node = (
        0..UNIVERSE.len(),
        prop::option::weighted(0.25, select(LEGACY_REGIONS)),
        prop::option::weighted(0.3, select(PROVIDER_IDS)),
    )
        .prop_map(|(i, legacy, provider)| {
            let mut node = UNIVERSE[i].clone();
            if let Some(l) = legacy {
                node.labels
                    .insert(LEGACY_REGION_LABEL.to_string(), l.to_string());
            }
            node.provider_id = provider.map(|(id, _)| id.to_string());
            node
        });
    prop::collection::vec(node, 0..=8)
}

/// Node names are unique in a cluster: the first node of each name.
fn unique_names(nodes: Vec<NodeInfo>) -> Vec<NodeInfo> {
    let mut seen = std::collections::BTreeSet::new();
    nodes
        .into_iter()
        .filter(|n| seen.insert(n.name.clone()))
        .collect()
}

/// Builds the snapshot, or checks that the model agrees the policy is
/// rejected; `None` ends the case.
fn snapshot_checked(
    allowed: Option<&NodeSelector>,
    nodes: Option<Vec<NodeInfo>>,
) -> Result<Option<Snapshot>, TestCaseError> {
    let snap = snapshot(allowed, nodes);
    prop_assert_eq!(
        snap.is_none(),
        model_policy_rejected(allowed),
        "add_policy acceptance disagrees with the model for allowedNodes {:?}",
        allowed
    );
    Ok(snap)
}

// ---------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------

/// Cases per property: the whole file runs in a few seconds in the dev profile.
const CASES_GUARANTEE: u32 = 4000;
const CASES_INVENTORY: u32 = 3000;
const CASES_BOUND: u32 = 1000;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES_GUARANTEE))]

    /// Check 1 is sound: with no inventory, "no PlacementNotGuaranteed" means
    /// every node that can exist (over the vocabulary) and that the pod may
    /// run on is inside by its labels or by `allowedNodes`.
    #[test]
    fn guarantee_is_sound(pod in pod(prop::option::weighted(0.2, select(POD_NODE_NAMES))), allowed in allowed_nodes()) {
        let Some(snap) = snapshot_checked(allowed.as_ref(), None)? else { return Ok(()) };
        let verdict = judge(&snap, &workload(pod.clone()));
        let vs = violations(&verdict);
        prop_assert!(vs.len() <= 1, "at most one placement violation: {:?}", vs);
        for v in vs {
            prop_assert_eq!(v.code, Code::PlacementNotGuaranteed);
            match &v.evidence {
                Evidence::Placement { matching_nodes, outside_nodes, more_outside, .. } => {
                    prop_assert_eq!(*matching_nodes, None);
                    prop_assert!(outside_nodes.is_empty());
                    prop_assert_eq!(*more_outside, 0);
                }
                other => prop_assert!(false, "unexpected evidence {:?}", other),
            }
        }
        if vs.is_empty() {
            let cex = universe_counterexample(&pod, allowed.as_ref());
            prop_assert!(
                cex.is_none(),
                "engine guarantees placement, but the pod may run on {:?}\npod: {:?}\nallowedNodes: {:?}",
                cex, pod, allowed
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES_INVENTORY))]

    /// Check 2 agrees with the model on today's nodes: the count of matching
    /// nodes, exactly which of them are outside. The guarantee is the same
    /// with or without an inventory, except that a term pinning the pods by
    /// name to inventory nodes is judged by those nodes; and it is sound
    /// against the model that knows the inventory.
    #[test]
    fn inventory_agrees_with_model(pod in pod(Just(None)), allowed in allowed_nodes(), nodes in inventory()) {
        let nodes = unique_names(nodes);
        let Some(snap) = snapshot_checked(allowed.as_ref(), Some(nodes.clone()))? else { return Ok(()) };
        let blind = snapshot(allowed.as_ref(), None).expect("same policy");
        let w = workload(pod.clone());
        let verdict = judge(&snap, &w);
        let blind_guaranteed = !not_guaranteed(&judge(&blind, &w));
        let guaranteed = !not_guaranteed(&verdict);
        if blind_guaranteed {
            prop_assert!(guaranteed, "guaranteed without an inventory, not with one\npod: {:?}\nnodes: {:?}", pod, nodes);
        }
        if guaranteed && !blind_guaranteed {
            prop_assert!(
                model_terms(&pod).iter().any(|t| model_name_pin(&pod, *t).is_some()),
                "only a name pin may make the inventory a guarantee\npod: {:?}", pod
            );
        }
        if model_terms(&pod).iter().all(|t| model_name_pin_holds(&pod, *t, allowed.as_ref(), &nodes)) {
            prop_assert!(guaranteed, "every term pins the pods to acceptable nodes by name\npod: {:?}\nnodes: {:?}", pod, nodes);
        }

        let matching: Vec<&NodeInfo> = nodes.iter().filter(|n| model_may_run(&pod, n)).collect();
        let outside: Vec<&NodeInfo> = matching
            .iter()
            .copied()
            .filter(|n| !model_acceptable(n, allowed.as_ref()))
            .collect();

        let vs = violations(&verdict);
        prop_assert!(vs.len() <= 1, "at most one placement violation: {:?}", vs);
        match vs.first() {
            None => {
                prop_assert!(
                    outside.is_empty(),
                    "no violation, but matching nodes are not acceptable: {:?}\npod: {:?}\nallowedNodes: {:?}",
                    outside, pod, allowed
                );
                prop_assert!(guaranteed, "no violation with an inventory, but the guarantee fails without one");
            }
            Some(v) => {
                let Evidence::Placement { matching_nodes, outside_nodes, more_outside, .. } = &v.evidence else {
                    return Err(TestCaseError::fail(format!("unexpected evidence {:?}", v.evidence)));
                };
                prop_assert_eq!(*matching_nodes, Some(matching.len()), "matching nodes\npod: {:?}\nnodes: {:?}", pod, nodes);
                prop_assert_eq!(outside_nodes.len() + more_outside, outside.len());
                prop_assert_eq!(
                    names(outside_nodes.iter().map(|n| &n.name)),
                    names(outside.iter().map(|n| &n.name)),
                    "outside nodes\npod: {:?}\nallowedNodes: {:?}\nnodes: {:?}", pod, allowed, nodes
                );
                match v.code {
                    Code::NodeOutsideMainland => {
                        prop_assert!(!outside.is_empty());
                        prop_assert!(guaranteed, "NodeOutsideMainland is for constraints that are guaranteed");
                    }
                    Code::PlacementNotGuaranteed => {}
                    other => prop_assert!(false, "unexpected code {:?}", other),
                }
            }
        }
        if guaranteed {
            let cex = inventory_counterexample(&pod, allowed.as_ref(), &nodes);
            prop_assert!(cex.is_none(), "guaranteed, but the pod may run on {:?}\npod: {:?}\nallowedNodes: {:?}\nnodes: {:?}", cex, pod, allowed, nodes);
        }
    }
}

/// A pod as the DaemonSet controller makes it: the template's nodeSelector
/// (and preferred affinity) kept, its required affinity replaced by one
/// term `matchFields: metadata.name In [<node>]`; sometimes a term the
/// template kept beside it, or a nodeName.
fn daemonset_pod() -> impl Strategy<Value = PodSpecView> {
    (
        node_selector(),
        select(POD_NODE_NAMES),
        prop::option::weighted(0.2, term()),
        prop::option::weighted(0.1, select(POD_NODE_NAMES)),
    )
        .prop_map(|(node_selector, node, other, node_name)| {
            let pin = NodeSelectorTerm {
                match_expressions: None,
                match_fields: Some(vec![req(NAME_FIELD, "In", Some(vec![node.to_string()]))]),
            };
            PodSpecView {
                node_selector,
                affinity: Some(AffinityView {
                    node_affinity: Some(NodeAffinity {
                        required_during_scheduling_ignored_during_execution: Some(NodeSelector {
                            node_selector_terms: std::iter::once(pin).chain(other).collect(),
                        }),
                        preferred_during_scheduling_ignored_during_execution: None,
                    }),
                }),
                node_name: node_name.map(str::to_string),
                ..PodSpecView::default()
            }
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES_INVENTORY))]

    /// A term that pins the pods by name is judged by the node it names:
    /// the pin alone is a guarantee exactly when that node is in the
    /// inventory and acceptable (mainland, or vouched for by allowedNodes);
    /// otherwise the violation names the node and its standing. Without an
    /// inventory the pin guarantees nothing.
    #[test]
    fn name_pin_is_judged_by_the_named_node(pod in daemonset_pod(), allowed in allowed_nodes(), nodes in inventory()) {
        let nodes = unique_names(nodes);
        let Some(snap) = snapshot_checked(allowed.as_ref(), Some(nodes.clone()))? else { return Ok(()) };
        let blind = snapshot(allowed.as_ref(), None).expect("same policy");
        let w = workload(pod.clone());
        if pod.node_name.as_ref().is_some_and(|n| nodes.iter().any(|node| node.name == *n)) {
            // A known nodeName is judged by bound_node_is_judged.
            return Ok(());
        }
        let verdict = judge(&snap, &w);
        let guaranteed = !not_guaranteed(&verdict);
        let terms = model_terms(&pod);
        let pins_hold = terms.iter().all(|t| model_name_pin_holds(&pod, *t, allowed.as_ref(), &nodes));
        if pins_hold {
            prop_assert!(guaranteed, "pinned to acceptable nodes, yet not guaranteed\npod: {:?}\nnodes: {:?}\n{:?}", pod, nodes, violations(&verdict));
        }
        if guaranteed {
            let cex = inventory_counterexample(&pod, allowed.as_ref(), &nodes);
            prop_assert!(cex.is_none(), "guaranteed, but the pod may run on {:?}\npod: {:?}\nnodes: {:?}", cex, pod, nodes);
        }
        // Without an inventory, the name is no guarantee.
        if !not_guaranteed(&judge(&blind, &w)) {
            let cex = universe_counterexample(&pod, allowed.as_ref());
            prop_assert!(cex.is_none(), "a name pin was a guarantee without nodes: {:?}\npod: {:?}", cex, pod);
        }
        // A failing pin names its node, with its standing when known.
        for v in violations(&verdict) {
            let Evidence::Placement { term, pinned_node: Some(pinned), .. } = &v.evidence else { continue };
            prop_assert_eq!(v.code, Code::PlacementNotGuaranteed);
            let failing = term.and_then(|i| terms.get(i).copied()).flatten();
            let names = model_name_pin(&pod, failing).unwrap_or_default();
            prop_assert!(names.contains(&pinned.name.as_str()), "pinned node {:?} is not named by term {:?}", pinned.name, term);
            let node = nodes.iter().find(|n| n.name == pinned.name);
            prop_assert_eq!(pinned.node.is_some(), node.is_some());
            prop_assert!(!node.is_some_and(|n| model_acceptable(n, allowed.as_ref())), "an acceptable node is named as no guarantee: {:?}", node);
            prop_assert!(v.message.problem.en.contains(&pinned.name), "{}", v.message.problem.en);
            prop_assert!(v.message.problem.zh.contains(&pinned.name), "{}", v.message.problem.zh);
            prop_assert!(v.message.problem.en.contains("metadata.name"), "{}", v.message.problem.en);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES_BOUND))]

    /// spec.nodeName with an inventory: a node in the inventory is judged
    /// itself; a name not in the inventory falls back to the guarantee.
    #[test]
    fn bound_node_is_judged(pod in pod(select(POD_NODE_NAMES).prop_map(Some)), allowed in allowed_nodes(), nodes in inventory()) {
        // Node names are unique in a cluster.
        let mut seen = std::collections::BTreeSet::new();
        let nodes: Vec<NodeInfo> = nodes.into_iter().filter(|n| seen.insert(n.name.clone())).collect();
        let Some(snap) = snapshot_checked(allowed.as_ref(), Some(nodes.clone()))? else { return Ok(()) };
        let blind = snapshot(allowed.as_ref(), None).expect("same policy");
        let w = workload(pod.clone());
        let verdict = judge(&snap, &w);
        let vs = violations(&verdict);
        prop_assert!(vs.len() <= 1, "at most one placement violation: {:?}", vs);
        let name = pod.node_name.clone().expect("generated with nodeName");
        match nodes.iter().find(|n| n.name == name) {
            Some(node) => {
                let ok = model_acceptable(node, allowed.as_ref());
                prop_assert_eq!(vs.is_empty(), ok, "bound to {:?}", node);
                if let Some(v) = vs.first() {
                    prop_assert_eq!(v.code, Code::BoundToNodeOutside);
                    let Evidence::BoundNode { node: ev } = &v.evidence else {
                        return Err(TestCaseError::fail(format!("unexpected evidence {:?}", v.evidence)));
                    };
                    prop_assert_eq!(&ev.name, &name);
                }
            }
            None => {
                let guaranteed = !not_guaranteed(&judge(&blind, &w));
                prop_assert_eq!(vs.is_empty(), guaranteed);
                if let Some(v) = vs.first() {
                    prop_assert_eq!(v.code, Code::PlacementNotGuaranteed);
                    let Evidence::Placement { matching_nodes, .. } = &v.evidence else {
                        return Err(TestCaseError::fail(format!("unexpected evidence {:?}", v.evidence)));
                    };
                    prop_assert_eq!(*matching_nodes, Some(0));
                }
            }
        }
    }
}

/// The model itself, on hand-checked cases (so a bug in it cannot hide one
/// in the engine).
#[test]
fn model_follows_kubernetes() {
    let node = |name: &str, labels: &[(&str, &str)]| NodeInfo {
        name: name.into(),
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        provider_id: None,
    };
    let r = |k: &str, op: &str, v: &[&str]| req(k, op, Some(strings(v.to_vec())));
    let t = |reqs: Vec<NodeSelectorRequirement>| NodeSelectorTerm {
        match_expressions: Some(reqs),
        match_fields: None,
    };
    let bare = node("n0", &[]);
    let tier2 = node("n1", &[("tier", "2"), ("pool", "a")]);
    assert!(model_term(&t(vec![r("tier", "NotIn", &["1"])]), &bare));
    assert!(model_term(&t(vec![r("tier", "DoesNotExist", &[])]), &bare));
    assert!(!model_term(&t(vec![r("tier", "Exists", &[])]), &bare));
    assert!(model_term(
        &t(vec![r("tier", "Gt", &["1"]), r("tier", "Lt", &["3"])]),
        &tier2
    ));
    assert!(!model_term(&t(vec![r("tier", "Gt", &["2"])]), &tier2));
    assert!(!model_term(&t(vec![r("tier", "Gt", &["x"])]), &tier2));
    assert!(!model_term(&t(vec![r("pool", "In", &[])]), &tier2));
    assert!(!model_term(
        &t(vec![r("pool", "In", &["a"]), r("pool", "Exists", &["a"])]),
        &tier2
    ));
    assert!(!model_term(&t(vec![]), &tier2));
    assert!(!model_term(&NodeSelectorTerm::default(), &tier2));
    let by_name = NodeSelectorTerm {
        match_expressions: None,
        match_fields: Some(vec![r(NAME_FIELD, "In", &["n1"])]),
    };
    assert!(model_term(&by_name, &tier2) && !model_term(&by_name, &bare));
    let exists_field = NodeSelectorTerm {
        match_expressions: None,
        match_fields: Some(vec![r(NAME_FIELD, "Exists", &[])]),
    };
    assert!(!model_term(&exists_field, &tier2));
    assert_eq!(UNIVERSE.len(), 7 * 4 * 4 * 4);
    assert!(model_acceptable(
        &node("n", &[(REGION_LABEL, "cn-north-1")]),
        None
    ));
    let vouch = NodeSelector {
        node_selector_terms: vec![t(vec![r("pool", "In", &["a"])])],
    };
    assert!(model_acceptable(&node("n", &[("pool", "a")]), Some(&vouch)));
    assert!(model_acceptable(
        &node("n", &[("pool", "a"), (REGION_LABEL, "dc-onprem-1")]),
        Some(&vouch)
    ));
    assert!(!model_acceptable(
        &node("n", &[("pool", "a"), (REGION_LABEL, "us-east-1")]),
        Some(&vouch)
    ));
    let legacy = |l: &str| node("n", &[("pool", "a"), (LEGACY_REGION_LABEL, l)]);
    assert!(model_acceptable(&legacy("cn-north-1"), None));
    assert!(model_acceptable(&legacy("dc-onprem-1"), Some(&vouch)));
    assert!(!model_acceptable(&legacy("us-east-1"), Some(&vouch)));
    let disagree = node(
        "n",
        &[
            (REGION_LABEL, "cn-north-1"),
            (LEGACY_REGION_LABEL, "cn-hangzhou"),
        ],
    );
    assert!(!model_acceptable(&disagree, None));
    assert!(model_inside_by_labels(
        &node("n", &[("pool", "a"), (REGION_LABEL, "us-east-1")]),
        Some(&vouch)
    ));
}

// ---------------------------------------------------------------------------
// Traps
// ---------------------------------------------------------------------------

fn expr(key: &str, op: &str, values: &[&str]) -> NodeSelectorRequirement {
    req(
        key,
        op,
        (!values.is_empty()).then(|| strings(values.to_vec())),
    )
}

fn required(terms: Vec<Vec<NodeSelectorRequirement>>) -> PodSpecView {
    PodSpecView {
        affinity: Some(AffinityView {
            node_affinity: Some(NodeAffinity {
                required_during_scheduling_ignored_during_execution: Some(NodeSelector {
                    node_selector_terms: terms
                        .into_iter()
                        .map(|exprs| NodeSelectorTerm {
                            match_expressions: Some(exprs),
                            match_fields: None,
                        })
                        .collect(),
                }),
                preferred_during_scheduling_ignored_during_execution: None,
            }),
        }),
        ..PodSpecView::default()
    }
}

fn pool_in(values: &[&str]) -> NodeSelector {
    NodeSelector {
        node_selector_terms: vec![NodeSelectorTerm {
            match_expressions: Some(vec![expr("pool", "In", values)]),
            match_fields: None,
        }],
    }
}

/// Placement codes without an inventory.
fn codes_of(w: &Workload, allowed: Option<NodeSelector>) -> Vec<Code> {
    let snap = snapshot(allowed.as_ref(), None).expect("policy compiles");
    violations(&judge(&snap, w))
        .iter()
        .map(|v| v.code)
        .collect()
}

fn codes(pod: PodSpecView, allowed: Option<NodeSelector>) -> Vec<Code> {
    codes_of(&workload(pod), allowed)
}

const NOT_GUARANTEED: &[Code] = &[Code::PlacementNotGuaranteed];

#[test]
fn notin_abroad_region_is_not_a_guarantee() {
    let pod = required(vec![vec![expr(REGION_LABEL, "NotIn", &["us-east-1"])]]);
    assert_eq!(codes(pod, None), NOT_GUARANTEED);
}

#[test]
fn doesnotexist_is_not_a_guarantee() {
    let pod = required(vec![vec![expr(REGION_LABEL, "DoesNotExist", &[])]]);
    assert_eq!(codes(pod, None), NOT_GUARANTEED);
}

#[test]
fn exists_is_not_a_guarantee() {
    let pod = required(vec![vec![expr(REGION_LABEL, "Exists", &[])]]);
    assert_eq!(codes(pod, None), NOT_GUARANTEED);
}

#[test]
fn gt_and_lt_are_not_a_guarantee() {
    for op in ["Gt", "Lt"] {
        let pod = required(vec![vec![expr(REGION_LABEL, op, &["1"])]]);
        assert_eq!(codes(pod, None), NOT_GUARANTEED, "{op} on the region");
        let pod = required(vec![vec![expr("tier", op, &["1"])]]);
        assert_eq!(codes(pod, None), NOT_GUARANTEED, "{op} on a tier");
    }
}

#[test]
fn preferred_affinity_is_not_a_guarantee() {
    let pod = PodSpecView {
        affinity: Some(AffinityView {
            node_affinity: Some(NodeAffinity {
                required_during_scheduling_ignored_during_execution: None,
                preferred_during_scheduling_ignored_during_execution: Some(vec![
                    PreferredSchedulingTerm {
                        weight: 100,
                        preference: NodeSelectorTerm {
                            match_expressions: Some(vec![expr(
                                REGION_LABEL,
                                "In",
                                &["cn-north-1"],
                            )]),
                            match_fields: None,
                        },
                    },
                ]),
            }),
        }),
        ..PodSpecView::default()
    };
    assert_eq!(codes(pod, None), NOT_GUARANTEED);
}

#[test]
fn tolerations_are_not_a_guarantee() {
    let doc = serde_json::json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "api", "namespace": "payments"},
        "spec": {"template": {
            "metadata": {"labels": {DATA_CLASS_LABEL: "personal"}},
            "spec": {
                "tolerations": [
                    {"key": "residency", "operator": "Equal", "value": "cn", "effect": "NoSchedule"},
                    {"operator": "Exists"}
                ],
                "containers": [{"name": "app", "image": "app:1"}]
            }
        }}
    });
    let w = Workload::from_value(&doc, "default").expect("decodes");
    assert_eq!(codes_of(&w, None), NOT_GUARANTEED);
}

#[test]
fn in_mainland_regions_is_a_guarantee() {
    let pod = required(vec![vec![expr(
        REGION_LABEL,
        "In",
        &["cn-north-1", "cn-hangzhou"],
    )]]);
    assert_eq!(codes(pod, None), []);
}

#[test]
fn node_selector_on_mainland_region_is_a_guarantee() {
    let pod = PodSpecView {
        node_selector: Some(BTreeMap::from([(
            REGION_LABEL.to_string(),
            "cn-north-1".to_string(),
        )])),
        ..PodSpecView::default()
    };
    assert_eq!(codes(pod, None), []);
}

#[test]
fn one_term_abroad_breaks_the_guarantee() {
    let pod = required(vec![
        vec![expr(REGION_LABEL, "In", &["cn-north-1"])],
        vec![expr(REGION_LABEL, "In", &["cn-hongkong"])],
    ]);
    let snap = snapshot(None, None).unwrap();
    let verdict = judge(&snap, &workload(pod));
    let vs = violations(&verdict);
    assert_eq!(
        vs.iter().map(|v| v.code).collect::<Vec<_>>(),
        NOT_GUARANTEED
    );
    let Evidence::Placement {
        term,
        non_mainland_regions,
        ..
    } = &vs[0].evidence
    else {
        panic!("unexpected evidence {:?}", vs[0].evidence);
    };
    assert_eq!(*term, Some(1));
    assert_eq!(non_mainland_regions, &["cn-hongkong".to_string()]);
}

#[test]
fn invalid_term_beside_a_mainland_term_is_a_guarantee() {
    let pod = required(vec![
        vec![expr(REGION_LABEL, "In", &["cn-north-1"])],
        vec![expr(REGION_LABEL, "In", &[])],
    ]);
    assert_eq!(codes(pod, None), []);
}

#[test]
fn allowed_nodes_implied_by_the_pod_is_a_guarantee() {
    let pod = required(vec![vec![expr("pool", "In", &["a"])]]);
    assert_eq!(codes(pod, Some(pool_in(&["a"]))), []);
}

#[test]
fn pod_wider_than_allowed_nodes_is_not_a_guarantee() {
    let pod = required(vec![vec![expr("pool", "In", &["a", "b"])]]);
    assert_eq!(codes(pod, Some(pool_in(&["a"]))), NOT_GUARANTEED);
}

#[test]
fn legacy_region_label_is_not_a_guarantee() {
    // Documented design choice: only the GA label counts for the guarantee.
    let pod = required(vec![vec![expr(LEGACY_REGION_LABEL, "In", &["cn-north-1"])]]);
    assert_eq!(codes(pod, None), NOT_GUARANTEED);
}

#[test]
fn allowed_nodes_never_vouch_for_a_node_known_abroad() {
    let pod = required(vec![vec![expr("pool", "In", &["a"])]]);
    let abroad = NodeInfo {
        name: "n0".into(),
        labels: BTreeMap::from([
            ("pool".to_string(), "a".to_string()),
            (REGION_LABEL.to_string(), "us-east-1".to_string()),
        ]),
        provider_id: None,
    };
    let private = NodeInfo {
        name: "n1".into(),
        labels: BTreeMap::from([("pool".to_string(), "a".to_string())]),
        provider_id: None,
    };
    let snap = snapshot(Some(&pool_in(&["a"])), Some(vec![abroad, private])).unwrap();
    let verdict = judge(&snap, &workload(pod));
    let vs = violations(&verdict);
    assert_eq!(
        vs.iter().map(|v| v.code).collect::<Vec<_>>(),
        [Code::NodeOutsideMainland]
    );
    let Evidence::Placement {
        matching_nodes,
        outside_nodes,
        ..
    } = &vs[0].evidence
    else {
        panic!("unexpected evidence {:?}", vs[0].evidence);
    };
    assert_eq!(*matching_nodes, Some(2));
    assert_eq!(names(outside_nodes.iter().map(|n| &n.name)), ["n0"]);
}

#[test]
fn node_name_bound_abroad_is_reported() {
    let pod = PodSpecView {
        node_name: Some("n0".into()),
        ..PodSpecView::default()
    };
    let abroad = NodeInfo {
        name: "n0".into(),
        labels: BTreeMap::from([(REGION_LABEL.to_string(), "cn-hongkong".to_string())]),
        provider_id: None,
    };
    let snap = snapshot(None, Some(vec![abroad])).unwrap();
    let verdict = judge(&snap, &workload(pod.clone()));
    let got: Vec<Code> = violations(&verdict).iter().map(|v| v.code).collect();
    assert_eq!(got, [Code::BoundToNodeOutside]);
    // Without an inventory the name alone guarantees nothing.
    assert_eq!(codes(pod, None), NOT_GUARANTEED);
}

// ---------------------------------------------------------------------------
// Pinned by name: the DaemonSet controller's pods
// ---------------------------------------------------------------------------

fn node_at(name: &str, labels: &[(&str, &str)], provider_id: Option<&str>) -> NodeInfo {
    NodeInfo {
        name: name.into(),
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        provider_id: provider_id.map(str::to_string),
    }
}

/// The cluster kit's nodes, and two without a region label in pool a: one
/// whose providerID says Hong Kong, one whose providerID says nothing.
fn kit_nodes() -> Vec<NodeInfo> {
    vec![
        node_at(
            "cn-node-1",
            &[(REGION_LABEL, "cn-north-1")],
            Some("aws:///cn-north-1a/i-0cn1"),
        ),
        node_at(
            "cn-node-2",
            &[(REGION_LABEL, "cn-northwest-1")],
            Some("aws:///cn-northwest-1a/i-0cn2"),
        ),
        node_at(
            "hk-node-1",
            &[(REGION_LABEL, "ap-east-1")],
            Some("aws:///ap-east-1a/i-0hk1"),
        ),
        node_at(
            "pool-hk",
            &[("pool", "a")],
            Some("aws:///ap-east-1a/i-0hk2"),
        ),
        node_at("pool-dc", &[("pool", "a")], None),
    ]
}

/// A pod of DaemonSet `agent` on `node`, as the controller writes it.
fn daemonset_pod_on(node: &str) -> Workload {
    let doc = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": format!("agent-{node}"),
            "namespace": "default",
            "labels": {DATA_CLASS_LABEL: "personal", "app": "agent"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "agent", "uid": "u", "controller": true}]
        },
        "spec": {
            "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchFields": [{"key": "metadata.name", "operator": "In", "values": [node]}]}]
            }}},
            "containers": [{"name": "c", "image": "i"}]
        }
    });
    Workload::from_value(&doc, "default").expect("decodes")
}

fn placement_of(
    w: &Workload,
    allowed: Option<NodeSelector>,
    nodes: Option<Vec<NodeInfo>>,
) -> Vec<Violation> {
    let snap = snapshot(allowed.as_ref(), nodes).expect("policy compiles");
    violations(&judge(&snap, w)).to_vec()
}

#[test]
fn a_daemonset_pod_pinned_to_a_mainland_node_is_guaranteed() {
    for node in ["cn-node-1", "cn-node-2"] {
        let vs = placement_of(&daemonset_pod_on(node), None, Some(kit_nodes()));
        assert!(vs.is_empty(), "{node}: {vs:?}");
    }
}

#[test]
fn a_daemonset_pod_pinned_abroad_names_the_node_and_its_standing() {
    let vs = placement_of(&daemonset_pod_on("hk-node-1"), None, Some(kit_nodes()));
    assert_eq!(vs.len(), 1, "{vs:?}");
    let v = &vs[0];
    assert_eq!(v.code, Code::PlacementNotGuaranteed);
    assert_eq!(
        v.field,
        "spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0]"
    );
    let Evidence::Placement {
        pinned_node: Some(pinned),
        term,
        ..
    } = &v.evidence
    else {
        panic!("unexpected evidence {:?}", v.evidence);
    };
    assert_eq!(*term, Some(0));
    assert_eq!(pinned.name, "hk-node-1");
    assert!(
        pinned
            .node
            .as_ref()
            .is_some_and(|n| !n.standing.is_mainland())
    );
    let en = &v.message.problem.en;
    assert!(
        en.contains("pins the pods by metadata.name to node hk-node-1 in ap-east-1 (HK), which is not in mainland China or cannot be verified"),
        "{en}"
    );
    let zh = &v.message.problem.zh;
    assert!(
        zh.contains("通过 metadata.name 将 Pod 固定到节点 hk-node-1（ap-east-1，"),
        "{zh}"
    );
    // The fix is on the DaemonSet: the controller wrote this term.
    let fix = &v.message.fix.en;
    assert!(
        fix.contains("restrict the pod template of DaemonSet default/agent to mainland-China nodes (a required node affinity on topology.kubernetes.io/region In [cn-north-1, cn-northwest-1] under spec.template.spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution) so that it creates no pod on node hk-node-1"),
        "{fix}"
    );
    assert!(
        v.message.fix.zh.contains("DaemonSet default/agent"),
        "{}",
        v.message.fix.zh
    );
}

#[test]
fn a_pin_to_an_unknown_node_or_without_nodes_is_no_guarantee() {
    let vs = placement_of(&daemonset_pod_on("ghost"), None, Some(kit_nodes()));
    assert_eq!(vs.len(), 1, "{vs:?}");
    assert_eq!(vs[0].code, Code::PlacementNotGuaranteed);
    let Evidence::Placement {
        pinned_node: Some(pinned),
        ..
    } = &vs[0].evidence
    else {
        panic!("unexpected evidence {:?}", vs[0].evidence);
    };
    assert_eq!(
        (pinned.name.as_str(), pinned.node.is_none()),
        ("ghost", true)
    );
    let en = &vs[0].message.problem.en;
    assert!(
        en.contains("to node ghost, which is not in the node inventory (an unknown node)"),
        "{en}"
    );
    assert!(!en.contains("no node matches today"), "{en}");
    // The CLI with no nodes: even a mainland node's name proves nothing.
    let vs = placement_of(&daemonset_pod_on("cn-node-1"), None, None);
    assert_eq!(
        vs.iter().map(|v| v.code).collect::<Vec<_>>(),
        NOT_GUARANTEED
    );
    assert!(
        vs[0]
            .message
            .problem
            .en
            .contains("to node cn-node-1, and no nodes were given"),
        "{}",
        vs[0].message.problem.en
    );
}

#[test]
fn allowed_nodes_vouch_for_a_pinned_node_only_by_the_usual_rule() {
    let pool_a = Some(pool_in(&["a"]));
    // No region label, no providerID region, in the allowed pool: vouched.
    let vs = placement_of(
        &daemonset_pod_on("pool-dc"),
        pool_a.clone(),
        Some(kit_nodes()),
    );
    assert!(vs.is_empty(), "{vs:?}");
    // Outside the pool: not.
    let vs = placement_of(&daemonset_pod_on("pool-dc"), None, Some(kit_nodes()));
    assert_eq!(
        vs.iter().map(|v| v.code).collect::<Vec<_>>(),
        NOT_GUARANTEED
    );
    assert!(
        vs[0]
            .message
            .problem
            .en
            .contains("pool-dc (no region label)"),
        "{}",
        vs[0].message.problem.en
    );
    // In the pool, but its providerID says Hong Kong: never vouched for,
    // and the message says the providerID is the evidence.
    let vs = placement_of(&daemonset_pod_on("pool-hk"), pool_a, Some(kit_nodes()));
    assert_eq!(
        vs.iter().map(|v| v.code).collect::<Vec<_>>(),
        NOT_GUARANTEED
    );
    let en = &vs[0].message.problem.en;
    assert!(
        en.contains("pool-hk in ap-east-1 (HK): it has no region label, and its providerID aws:///ap-east-1a/i-0hk2 places it there"),
        "{en}"
    );
}

#[test]
fn a_name_pin_is_intersected_with_the_node_name_and_other_pins() {
    // The template kept a nodeSelector on a mainland region: the region
    // pins the pods whatever the name says, and the named node is judged by
    // the inventory (it matches, and lies about nothing).
    let mut w = daemonset_pod_on("cn-node-1");
    w.pod.node_selector = Some(BTreeMap::from([(
        REGION_LABEL.to_string(),
        "cn-north-1".to_string(),
    )]));
    assert!(placement_of(&w, None, Some(kit_nodes())).is_empty());
    // Two terms: both must hold.
    let mut w = daemonset_pod_on("cn-node-1");
    if let Some(required) = w
        .pod
        .affinity
        .as_mut()
        .and_then(|a| a.node_affinity.as_mut())
        .and_then(|na| {
            na.required_during_scheduling_ignored_during_execution
                .as_mut()
        })
    {
        required.node_selector_terms.push(NodeSelectorTerm {
            match_expressions: None,
            match_fields: Some(vec![expr(NAME_FIELD, "In", &["hk-node-1"])]),
        });
    }
    let vs = placement_of(&w, None, Some(kit_nodes()));
    assert_eq!(
        vs.iter().map(|v| v.code).collect::<Vec<_>>(),
        NOT_GUARANTEED
    );
    let Evidence::Placement { term, .. } = &vs[0].evidence else {
        panic!("unexpected evidence {:?}", vs[0].evidence);
    };
    assert_eq!(*term, Some(1));
}

/// A node with no region label whose providerID says it is abroad is
/// outside: `allowedNodes` never vouches for it (issue 22, finding 6).
#[test]
fn allowed_nodes_never_vouch_for_a_node_whose_provider_id_is_abroad() {
    let pod = required(vec![vec![expr("pool", "In", &["a"])]]);
    let snap = snapshot(Some(&pool_in(&["a"])), Some(kit_nodes())).expect("policy compiles");
    let verdict = judge(&snap, &workload(pod));
    let vs = violations(&verdict);
    assert_eq!(
        vs.iter().map(|v| v.code).collect::<Vec<_>>(),
        [Code::NodeOutsideMainland]
    );
    let Evidence::Placement {
        outside_nodes,
        matching_nodes,
        ..
    } = &vs[0].evidence
    else {
        panic!("unexpected evidence {:?}", vs[0].evidence);
    };
    assert_eq!(*matching_nodes, Some(2));
    assert_eq!(names(outside_nodes.iter().map(|n| &n.name)), ["pool-hk"]);
    assert!(
        vs[0]
            .message
            .problem
            .en
            .contains("its providerID aws:///ap-east-1a/i-0hk2 places it there"),
        "{}",
        vs[0].message.problem.en
    );
    assert!(
        vs[0]
            .message
            .problem
            .zh
            .contains("providerID aws:///ap-east-1a/i-0hk2"),
        "{}",
        vs[0].message.problem.zh
    );
}
