//! Placement: "every node this pod could run on is in mainland China".
//!
//! Check 1, the guarantee, reads only the pod's own constraints: every
//! required term, combined with nodeSelector, must pin the region label to
//! mainland regions or imply the policy's `allowedNodes`. Check 2, the
//! inventory, looks at the nodes that exist and match today: any of them not
//! in mainland China is a violation too (and the best evidence for messages).

use std::borrow::Cow;
use std::cell::{OnceCell, RefCell};
use std::collections::BTreeSet;
use std::rc::Rc;

use super::messages::MessageContext;
use super::node_inventory::FixRegions;
use super::nodes::{LEGACY_REGION_LABEL, NodeStanding, REGION_LABEL};
use super::policy::CompiledPolicy;
use fixedbitset::FixedBitSet;

use super::evidence::{Evidence, NodeEvidence, PinnedNode};
use super::node_inventory::NodeInventory;
use super::nodes::describe_node;
use super::selector::{Conjunction, NODE_NAME_FIELD, NodeLabels, Op, Requirement, Space, Term};
use super::shared::Shared;
use super::text::{Langs, Message, Text};
use super::verdict::{Code, Violation};
use super::workload::PodSpecView;
use super::{ClassifiedNode, Snapshot, Workload, WorkloadKind};

/// Outside nodes listed as evidence; the rest are counted.
const MAX_NODES_LISTED: usize = 20;
const MAX_NODES_IN_MESSAGE: usize = 3;
// Messages name nodes from the evidence list.
const _: () = assert!(MAX_NODES_IN_MESSAGE <= MAX_NODES_LISTED);

/// Policy-independent facts about a workload's placement, computed once and
/// shared by every governing policy.
pub(crate) struct Facts<'s> {
    /// One conjunction per required term (or one for nodeSelector alone).
    terms: Vec<TermFacts>,
    has_required_affinity: bool,
    has_preferred_affinity: bool,
    /// Nodes matching the constraints today (None: no inventory).
    matching: Option<Matching<'s>>,
    /// The node inventory, when nodes are known: a term that pins the
    /// pods by name is judged by the nodes it names.
    inventory: Option<&'s NodeInventory>,
    /// `spec.nodeName` and the node it names, if in the inventory.
    bound: Option<(String, Option<&'s ClassifiedNode>)>,
    /// Mainland regions a fix may name (and those withheld, with why).
    fix_regions: &'s FixRegions,
    catalogue: &'s super::Catalogue,
    /// Message text shared by the governing policies (see
    /// `Facts::placement_body`).
    placement_bodies: RefCell<Vec<(BodyKey, Rc<Message>)>>,
}

/// The inventory's nodes that match a pod's constraints, as a set of
/// indices into the inventory.
struct Matching<'s> {
    inventory: &'s NodeInventory,
    count: usize,
    /// Matching nodes the catalogue does not place in mainland China: the
    /// only ones any policy can object to.
    not_mainland: FixedBitSet,
    /// Those nodes, counted and the first few listed (see `unacceptable`).
    all_not_mainland: OnceCell<OutsideNodes<'s>>,
}

/// The matching nodes a policy does not accept: how many, and the first
/// `MAX_NODES_LISTED` in inventory order (all that evidence and messages
/// name). Not the whole list: at the envelope thousands of nodes can be
/// outside, and collecting them cost each denied review more than the
/// rest of placement.
#[derive(Clone, Default)]
struct OutsideNodes<'s> {
    count: usize,
    first: Vec<&'s ClassifiedNode>,
}

impl OutsideNodes<'_> {
    fn is_empty(&self) -> bool {
        self.count == 0
    }
}

impl<'s> Matching<'s> {
    fn new(inventory: &'s NodeInventory, mut nodes: FixedBitSet) -> Self {
        let count = nodes.count_ones(..);
        nodes.intersect_with(inventory.not_mainland());
        Matching {
            inventory,
            count,
            not_mainland: nodes,
            all_not_mainland: OnceCell::new(),
        }
    }

    /// Matching nodes `policy` does not accept, in inventory order.
    fn unacceptable(&self, policy: &CompiledPolicy) -> Cow<'_, OutsideNodes<'s>> {
        // Without allowedNodes a policy accepts exactly the mainland nodes:
        // the same list for every such policy, built once.
        let all = || {
            self.all_not_mainland
                .get_or_init(|| self.outside(&self.not_mainland))
        };
        if policy.allowed_nodes.is_none() {
            return Cow::Borrowed(all());
        }
        // allowedNodes can vouch only for nodes with a missing or unknown
        // region: only those are looked at, not every node abroad (at the
        // envelope, walking its 500 nodes abroad was a third of a
        // denial's placement check).
        let mut vouchable = self.not_mainland.clone();
        vouchable.intersect_with(self.inventory.vouchable());
        let accepted: Vec<usize> = vouchable
            .ones()
            .filter(|&i| self.inventory.get(i).is_some_and(|n| node_ok(n, policy)))
            .collect();
        if accepted.is_empty() {
            return Cow::Borrowed(all());
        }
        let mut outside = self.not_mainland.clone();
        for i in accepted {
            outside.set(i, false);
        }
        Cow::Owned(self.outside(&outside))
    }

    /// The nodes of `set`: counted by popcount, the first
    /// `MAX_NODES_LISTED` kept. Every index of the set is a node.
    fn outside(&self, set: &FixedBitSet) -> OutsideNodes<'s> {
        let count = set.count_ones(..);
        let mut first = Vec::with_capacity(count.min(MAX_NODES_LISTED));
        first.extend(
            set.ones()
                .take(MAX_NODES_LISTED)
                .filter_map(|i| self.inventory.get(i)),
        );
        OutsideNodes { count, first }
    }
}

/// What one term (a required term AND nodeSelector) says about placement,
/// independent of any policy: computed once per workload, not per policy.
struct TermFacts {
    /// The term matches no node (invalid, or contradictory), so it never
    /// lets the pod run anywhere and cannot break the guarantee.
    matches_nothing: bool,
    /// The term pins the region label to mainland regions only.
    region_ok: bool,
    /// It constrains the region label at all.
    pins_region: bool,
    /// Region values it allows that are not mainland, for messages.
    non_mainland_regions: Vec<String>,
    /// The node names it pins `metadata.name` to (`matchFields` and
    /// `spec.nodeName`), when it pins them: the DaemonSet controller pins
    /// each of its pods to one node this way.
    names: Option<Vec<String>>,
    conjunction: Conjunction,
}

impl TermFacts {
    fn new(invalid: bool, conjunction: Conjunction, snapshot: &Snapshot) -> TermFacts {
        let matches_nothing = invalid || conjunction.unsatisfiable();
        let regions = conjunction.label_values(REGION_LABEL);
        let non_mainland_regions: Vec<String> = regions
            .iter()
            .flatten()
            .filter(|v| !snapshot.catalogue.is_mainland_region(v))
            .map(|v| v.to_string())
            .collect();
        let names = conjunction
            .node_names()
            .map(|names| names.into_iter().cloned().collect());
        TermFacts {
            matches_nothing,
            region_ok: regions.is_some() && non_mainland_regions.is_empty(),
            pins_region: regions.is_some(),
            non_mainland_regions,
            names,
            conjunction,
        }
    }
}

/// Which nodes a pod may use by its own constraints: nodeSelector (label
/// equality) and nodeName (the node's `metadata.name`) must all hold and,
/// when required node affinity is set, one of its terms. The one reading
/// of a pod's node constraints: verdicts match it against the inventory
/// set-wise (`matching`), the audit node by node (`admits`) to find what a
/// node change affects, so the two cannot disagree.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeConstraints {
    /// nodeSelector and nodeName: every one must hold.
    pub base: Vec<Requirement>,
    /// The required node affinity's terms, when set: one must hold.
    pub terms: Option<Vec<Term>>,
}

impl NodeConstraints {
    pub fn of(pod: &PodSpecView) -> NodeConstraints {
        let mut base: Vec<Requirement> = pod
            .node_selector
            .iter()
            .flatten()
            .map(|(k, v)| Requirement::label_eq(k, v))
            .collect();
        if let Some(name) = &pod.node_name {
            base.push(Requirement {
                space: Space::Field,
                key: NODE_NAME_FIELD.to_string(),
                op: Op::In(BTreeSet::from([name.clone()])),
            });
        }
        let terms = pod
            .affinity
            .as_ref()
            .and_then(|a| a.node_affinity.as_ref())
            .and_then(|na| {
                na.required_during_scheduling_ignored_during_execution
                    .as_ref()
            })
            .map(|sel| sel.node_selector_terms.iter().map(Term::from_k8s).collect());
        NodeConstraints { base, terms }
    }

    /// May the pod run on `node`?
    pub fn admits(&self, node: &NodeLabels<'_>) -> bool {
        self.base.iter().all(|r| r.matches(node))
            && self
                .terms
                .as_ref()
                .is_none_or(|terms| terms.iter().any(|t| t.matches(node)))
    }

    /// The inventory's nodes the pod may run on (`admits`, set-wise).
    pub fn matching(&self, inventory: &NodeInventory) -> FixedBitSet {
        inventory.constraint_matches(&self.base, self.terms.as_deref())
    }
}

impl<'s> Facts<'s> {
    pub(crate) fn new(workload: &Workload, snapshot: &'s Snapshot) -> Facts<'s> {
        let pod = &workload.pod;
        let constraints = NodeConstraints::of(pod);
        let node_affinity = pod.affinity.as_ref().and_then(|a| a.node_affinity.as_ref());
        let has_preferred_affinity = node_affinity
            .and_then(|na| {
                na.preferred_during_scheduling_ignored_during_execution
                    .as_ref()
            })
            .is_some_and(|p| !p.is_empty());
        let base = &constraints.base;
        let terms = match &constraints.terms {
            None => vec![TermFacts::new(false, Conjunction::new(base), snapshot)],
            Some(terms) => terms
                .iter()
                .map(|t| {
                    let conjunction = Conjunction::new(base.iter().chain(&t.requirements));
                    TermFacts::new(t.invalid.is_some(), conjunction, snapshot)
                })
                .collect(),
        };

        // spec.nodeName bypasses the scheduler: when the named node is known,
        // it alone is judged and the inventory need not be scanned.
        let bound = pod
            .node_name
            .as_ref()
            .map(|name| (name.clone(), snapshot.node(name)));
        let bound_known = matches!(bound, Some((_, Some(_))));
        let matching = snapshot
            .inventory()
            .filter(|_| !bound_known)
            .map(|inventory| Matching::new(inventory, constraints.matching(inventory)));
        Facts {
            terms,
            has_required_affinity: constraints.terms.is_some(),
            has_preferred_affinity,
            matching,
            inventory: snapshot.inventory(),
            bound,
            fix_regions: snapshot.inventory_mainland_regions(),
            catalogue: &snapshot.catalogue,
            placement_bodies: RefCell::new(Vec::new()),
        }
    }
}

/// Is `node` acceptable under `policy`? Mainland by catalogue, or vouched
/// for by `allowedNodes` when its region is merely missing or unknown.
fn node_ok(node: &ClassifiedNode, policy: &CompiledPolicy) -> bool {
    match &node.standing {
        NodeStanding::Mainland { .. } => true,
        s if s.vouchable() => policy
            .allowed_nodes
            .as_ref()
            .is_some_and(|a| a.matches(&node.info.selector_view())),
        _ => false,
    }
}

/// The first term that does not guarantee mainland placement, with the
/// region values it allows that are not mainland.
#[derive(Clone, PartialEq, Eq)]
struct Gap {
    term: Option<usize>,
    non_mainland_regions: Vec<String>,
    pins_region: bool,
    /// The term pins the pods by name to this node, which is no guarantee
    /// (unknown, or not acceptable to the policy).
    pinned_node: Option<PinnedNode>,
    /// The term pins only the deprecated region label, to these values.
    legacy_values: Option<Vec<String>>,
}

impl Facts<'_> {
    /// A term pins the pods by name to `names`: the first named node that
    /// is no guarantee (not in the node inventory, there is no inventory,
    /// or the policy does not accept it), or None when every named node
    /// exists and is acceptable, so the pods can only ever run there.
    fn unguaranteed_pin(&self, names: &[String], policy: &CompiledPolicy) -> Option<PinnedNode> {
        names.iter().find_map(|name| {
            match self.inventory.and_then(|inventory| inventory.node(name)) {
                Some(node) if node_ok(node, policy) => None,
                node => Some(PinnedNode {
                    name: name.clone(),
                    node: node.map(|n| n.evidence.clone()),
                }),
            }
        })
    }
}

fn guarantee_gap(facts: &Facts<'_>, policy: &CompiledPolicy) -> Option<Gap> {
    for (i, t) in facts.terms.iter().enumerate() {
        if t.matches_nothing || t.region_ok {
            continue;
        }
        // Pinned by name (a DaemonSet's pods): a node keeps its name, so
        // the pods can only run on the named nodes, and their trust decides.
        let pinned_node = match &t.names {
            Some(names) => match facts.unguaranteed_pin(names, policy) {
                None => continue,
                unguaranteed => unguaranteed,
            },
            None => None,
        };
        // Not pinned to mainland regions: acceptable only if the term can
        // only ever select nodes the policy's allowedNodes vouches for.
        let allowed_ok = policy
            .allowed_nodes
            .as_ref()
            .is_some_and(|a| a.terms.iter().any(|at| t.conjunction.implies_term(at)));
        if !allowed_ok {
            return Some(Gap {
                term: facts.has_required_affinity.then_some(i),
                non_mainland_regions: t.non_mainland_regions.clone(),
                pins_region: t.pins_region,
                pinned_node,
                // Only on a gap (the violation path): the lookup allocates.
                legacy_values: (!t.pins_region)
                    .then(|| t.conjunction.label_values(LEGACY_REGION_LABEL))
                    .flatten()
                    .map(|values| values.into_iter().cloned().collect()),
            });
        }
    }
    None
}

pub(crate) fn check(
    facts: &Facts<'_>,
    policy: &CompiledPolicy,
    ctx: &MessageContext<'_>,
) -> Vec<Violation> {
    let prefix = ctx.workload.pod_spec_path();

    // spec.nodeName bypasses the scheduler: judge the node itself.
    if let Some((_, Some(node))) = &facts.bound {
        if node_ok(node, policy) {
            return Vec::new();
        }
        let ev = node.evidence.clone();
        return vec![Violation {
            code: Code::BoundToNodeOutside,
            field: format!("{prefix}.nodeName"),
            message: if ctx.langs.any() {
                bound_message(ctx, prefix, &ev)
            } else {
                Message::default()
            },
            evidence: Evidence::BoundNode { node: ev },
            exempted: false,
        }];
    }

    let (matching_count, outside): (Option<usize>, Cow<'_, OutsideNodes<'_>>) =
        match &facts.matching {
            Some(m) => (Some(m.count), m.unacceptable(policy)),
            None => (None, Cow::Owned(OutsideNodes::default())),
        };
    let listed: Vec<Shared<NodeEvidence>> =
        outside.first.iter().map(|n| n.evidence.clone()).collect();
    let more_outside = outside.count.saturating_sub(listed.len());

    let gap = guarantee_gap(facts, policy);
    let (code, field) = match &gap {
        Some(g) => (Code::PlacementNotGuaranteed, gap_field(prefix, g, facts)),
        None if !outside.is_empty() => (Code::NodeOutsideMainland, constraint_field(prefix, facts)),
        None => return Vec::new(),
    };
    let message = if ctx.langs.any() {
        let found = Shortfall {
            gap: gap.as_ref(),
            field: &field,
            matching: matching_count,
            outside: &outside,
        };
        placement_message(ctx, policy, facts, &found)
    } else {
        Message::default()
    };
    let term = gap.as_ref().and_then(|g| g.term);
    let (non_mainland_regions, pinned_node) = gap
        .map(|g| (g.non_mainland_regions, g.pinned_node))
        .unwrap_or_default();
    vec![Violation {
        code,
        field,
        evidence: Evidence::Placement {
            term,
            non_mainland_regions,
            matching_nodes: matching_count,
            outside_nodes: listed,
            more_outside,
            pinned_node,
        },
        message,
        exempted: false,
    }]
}

fn constraint_field(prefix: &str, facts: &Facts<'_>) -> String {
    if facts.has_required_affinity {
        format!("{prefix}.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution")
    } else {
        format!("{prefix}.nodeSelector")
    }
}

fn gap_field(prefix: &str, gap: &Gap, facts: &Facts<'_>) -> String {
    match gap.term {
        Some(i) => format!(
            "{prefix}.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[{i}]"
        ),
        // spec.nodeName names a node that cannot be judged: that field is
        // what decides where the pod runs.
        None if facts.unknown_bound_node().is_some() => format!("{prefix}.nodeName"),
        None => constraint_field(prefix, facts),
    }
}

fn node_list(nodes: &OutsideNodes<'_>, lang: super::Lang) -> String {
    let mut parts: Vec<String> = nodes
        .first
        .iter()
        .take(MAX_NODES_IN_MESSAGE)
        .map(|n| describe_node(&n.info.name, n.info.region_label(), &n.standing, lang))
        .collect();
    if nodes.count > MAX_NODES_IN_MESSAGE {
        let more = nodes.count - MAX_NODES_IN_MESSAGE;
        parts.push(match lang {
            super::Lang::En => format!("and {more} more"),
            super::Lang::ZhCn => format!("另有 {more} 个"),
        });
    }
    parts.join(", ")
}

impl Facts<'_> {
    /// `spec.nodeName`, when it names a node the inventory does not have
    /// (or there is no inventory): the node cannot be judged.
    fn unknown_bound_node(&self) -> Option<&str> {
        match &self.bound {
            Some((name, None)) => Some(name),
            _ => None,
        }
    }

    /// "cn-north-1, cn-northwest-1": the mainland regions to suggest in a
    /// fix (only those whose every node is verified).
    fn region_fix_list(&self) -> String {
        if self.fix_regions.offered.is_empty() {
            "<your mainland regions, e.g. cn-north-1, cn-northwest-1>".to_string()
        } else {
            let regions: Vec<&str> = self
                .fix_regions
                .offered
                .iter()
                .map(String::as_str)
                .collect();
            regions.join(", ")
        }
    }

    /// " (cn-north-1 is left out: node liar ...)": the mainland regions the
    /// fix does not offer (of `among`, when given), and the node to correct
    /// for each.
    fn withheld_note(&self, among: Option<&[String]>, langs: Langs) -> Text {
        let withheld: Vec<(&String, &Shared<NodeEvidence>)> = self
            .fix_regions
            .withheld
            .iter()
            .filter(|(region, _)| among.is_none_or(|a| a.contains(region)))
            .collect();
        if withheld.is_empty() {
            return Text::default();
        }
        let each = |lang| {
            withheld
                .iter()
                .map(|(region, node)| (region.as_str(), node.describe(lang)))
                .collect::<Vec<_>>()
        };
        let mut note = Text::default();
        if langs.en {
            let en: Vec<String> = each(super::Lang::En)
                .into_iter()
                .map(|(r, n)| {
                    format!(
                        "{r} is left out because node {n}; correct or remove that node to use {r}"
                    )
                })
                .collect();
            note.en = format!(" ({})", en.join("; "));
        }
        if langs.zh {
            let zh: Vec<String> = each(super::Lang::ZhCn)
                .into_iter()
                .map(|(r, n)| format!("未列出 {r}，因为节点 {n}；修正或移除该节点后才能使用 {r}"))
                .collect();
            note.zh = format!("（{}）", zh.join("；"));
        }
        note
    }

    /// Everything in a placement message after "but": the problem, hints,
    /// what the inventory shows and the fix. It depends on the workload,
    /// the gap and the outside nodes, not on which policy objects, so the
    /// policies governing a workload (which mostly see the same gap) share
    /// one copy and only splice in their name.
    fn placement_body(
        &self,
        workload: &Workload,
        found: &Shortfall<'_>,
        langs: Langs,
    ) -> Rc<Message> {
        let mut cache = self.placement_bodies.borrow_mut();
        if let Some((_, text)) = cache.iter().find(|(key, _)| key.is(found)) {
            return Rc::clone(text);
        }
        let text = Rc::new(write_placement_body(workload, self, found, langs));
        cache.push((BodyKey::of(found), Rc::clone(&text)));
        text
    }
}

/// What a placement violation found, whichever policy objects: the gap in
/// the guarantee (if any), the field at fault, how many nodes match today
/// (None: no inventory) and those of them outside mainland China.
#[derive(Clone, Copy)]
struct Shortfall<'a> {
    gap: Option<&'a Gap>,
    field: &'a str,
    matching: Option<usize>,
    outside: &'a OutsideNodes<'a>,
}

/// What a placement message body depends on besides the workload.
struct BodyKey {
    gap: Option<Gap>,
    field: String,
    outside: usize,
    /// The outside nodes the message names.
    named: Vec<String>,
}

impl BodyKey {
    fn named<'n>(outside: &'n OutsideNodes<'_>) -> impl Iterator<Item = &'n String> {
        outside
            .first
            .iter()
            .take(MAX_NODES_IN_MESSAGE)
            .map(|n| &n.info.name)
    }

    fn of(found: &Shortfall<'_>) -> BodyKey {
        BodyKey {
            gap: found.gap.cloned(),
            field: found.field.to_string(),
            outside: found.outside.count,
            named: Self::named(found.outside).cloned().collect(),
        }
    }

    fn is(&self, found: &Shortfall<'_>) -> bool {
        self.gap.as_ref() == found.gap
            && self.field == found.field
            && self.outside == found.outside.count
            && self.named.iter().eq(Self::named(found.outside))
    }
}

fn write_inventory_clause(
    kind: WorkloadKind,
    m: usize,
    outside: &OutsideNodes<'_>,
    langs: Langs,
) -> Text {
    if m == 0 {
        return langs.text(
            format_args!(
                ": no node matches today, and nothing keeps the pods in mainland China when one joins"
            ),
            format_args!("：目前没有匹配的节点，但新加入的匹配节点不受中国大陆的约束"),
        );
    }
    if outside.is_empty() {
        return langs.text(
            format_args!(
                ": today all {m} matching nodes are in mainland China, but nothing keeps the pods there when other nodes join"
            ),
            format_args!("：目前匹配的 {m} 个节点都在中国大陆，但新加入的节点不受约束"),
        );
    }
    let daemonset = kind == WorkloadKind::DaemonSet;
    let verb_en = if daemonset {
        "will run a pod on"
    } else {
        "may schedule onto"
    };
    let verb_zh = if daemonset {
        "将在这些节点上各运行一个 Pod"
    } else {
        "可能被调度到这些节点"
    };
    let list = |wanted: bool, lang| {
        if wanted {
            node_list(outside, lang)
        } else {
            String::new()
        }
    };
    langs.text(
        format_args!(
            ": {} of {m} matching nodes are outside mainland China or unverified ({}), and the {kind} {verb_en} them",
            outside.count,
            list(langs.en, super::Lang::En),
        ),
        format_args!(
            "：{m} 个匹配节点中有 {} 个不在中国大陆或无法核实（{}），{verb_zh}",
            outside.count,
            list(langs.zh, super::Lang::ZhCn),
        ),
    )
}

/// The message of a placement violation: "<subject> and policy <p>
/// requires mainland-China nodes, but <body>", the body shared by the
/// workload's governing policies.
fn placement_message(
    ctx: &MessageContext<'_>,
    policy: &CompiledPolicy,
    facts: &Facts<'_>,
    found: &Shortfall<'_>,
) -> Message {
    let subject = ctx.subject();
    let langs = ctx.langs;
    let body = facts.placement_body(ctx.workload, found, langs);
    let p = ctx.policy;
    // Each text allocated once, at its final size (most of the cost of a
    // verdict with violations is writing its messages), in the languages
    // wanted only.
    let mut problem = Text::default();
    let mut fix = Text::default();
    if langs.en {
        problem
            .en
            .reserve(subject.en.len() + body.problem.en.len() + p.len() + 48);
        fix.en.reserve(body.fix.en.len() + p.len() + 80);
    }
    if langs.zh {
        problem
            .zh
            .reserve(subject.zh.len() + body.problem.zh.len() + p.len() + 80);
        fix.zh.reserve(body.fix.zh.len() + p.len() + 80);
    }
    langs.write(
        &mut problem,
        format_args!(
            "{} and policy {p} requires mainland-China nodes, but {}.",
            subject.en, body.problem.en
        ),
        format_args!(
            "{}，策略 {p} 要求只能运行在中国大陆节点上，但 {}。",
            subject.zh, body.problem.zh
        ),
    );
    langs.push(&mut fix, &body.fix);
    if found.gap.is_some() && policy.allowed_nodes.is_some() {
        langs.write(
            &mut fix,
            format_args!(
                ", or select only nodes matching spec.placement.allowedNodes of policy {p}"
            ),
            format_args!("，或仅选择符合策略 {p} 中 spec.placement.allowedNodes 的节点"),
        );
    }
    langs.write(&mut fix, format_args!("."), format_args!("。"));
    Message { problem, fix }
}

/// See `Facts::placement_body`.
fn write_placement_body(
    workload: &Workload,
    facts: &Facts<'_>,
    found: &Shortfall<'_>,
    langs: Langs,
) -> Message {
    let Shortfall {
        gap,
        field,
        matching,
        outside,
    } = *found;
    let mut problem = Text::default();
    if langs.en {
        problem.en.reserve(512);
    }
    if langs.zh {
        problem.zh.reserve(512);
    }
    let prefix = workload.pod_spec_path();
    // spec.nodeName naming a node that cannot be judged, when that is the
    // field at fault (no required affinity term to blame instead).
    let unknown_node = facts
        .unknown_bound_node()
        .filter(|_| gap.is_some_and(|g| g.term.is_none()));
    // The problem.
    match gap {
        _ if unknown_node.is_some() => {
            let name = unknown_node.unwrap_or_default();
            if matching.is_some() {
                langs.write(
                    &mut problem,
                    format_args!("{field} names node {name}, which is not in the node inventory (an unknown node), so where the pods run cannot be verified"),
                    format_args!("{field} 指定的节点 {name} 不在节点清单中（未知节点），无法核实 Pod 运行在哪里"),
                );
            } else {
                langs.write(
                    &mut problem,
                    format_args!("{field} names node {name}, and no nodes were given, so that node cannot be verified"),
                    format_args!("{field} 指定了节点 {name}，但未提供节点清单，无法核实该节点"),
                );
            }
        }
        Some(Gap {
            pinned_node: Some(pin),
            ..
        }) => {
            let name = &pin.name;
            match &pin.node {
                Some(node) => {
                    let node_en = langs.en.then(|| node.describe(super::Lang::En));
                    let node_zh = langs.zh.then(|| node.describe(super::Lang::ZhCn));
                    let (node_en, node_zh) =
                        (node_en.unwrap_or_default(), node_zh.unwrap_or_default());
                    langs.write(
                        &mut problem,
                        format_args!("{field} pins the pods by {NODE_NAME_FIELD} to node {}, which is not in mainland China or cannot be verified",
                            node_en),
                        format_args!("{field} 通过 {NODE_NAME_FIELD} 将 Pod 固定到节点 {}，该节点不在中国大陆或无法核实",
                            node_zh),
                    );
                }
                None if facts.inventory.is_some() => {
                    langs.write(
                        &mut problem,
                        format_args!("{field} pins the pods by {NODE_NAME_FIELD} to node {name}, which is not in the node inventory (an unknown node), so where they run cannot be verified"),
                        format_args!("{field} 通过 {NODE_NAME_FIELD} 将 Pod 固定到节点 {name}，该节点不在节点清单中（未知节点），无法核实 Pod 运行在哪里"),
                    );
                }
                None => {
                    langs.write(
                        &mut problem,
                        format_args!("{field} pins the pods by {NODE_NAME_FIELD} to node {name}, and no nodes were given, so that node cannot be verified"),
                        format_args!("{field} 通过 {NODE_NAME_FIELD} 将 Pod 固定到节点 {name}，但未提供节点清单，无法核实该节点"),
                    );
                }
            }
        }
        Some(g) if !g.non_mainland_regions.is_empty() => {
            let r = g.non_mainland_regions.join(", ");
            langs.write(
                &mut problem,
                format_args!("{field} allows {REGION_LABEL} {r}, which is not mainland China"),
                format_args!("{field} 允许 {REGION_LABEL} 为 {r}，不属于中国大陆"),
            );
        }
        Some(g) if g.legacy_values.is_some() => {
            langs.write(
                &mut problem,
                format_args!("{field} pins the deprecated label {LEGACY_REGION_LABEL}, which does not count as a guarantee (a node's GA label {REGION_LABEL} may say otherwise, and the GA label is the one nodes are judged by)"),
                format_args!("{field} 使用了已弃用的标签 {LEGACY_REGION_LABEL}，它不构成保证（节点的 GA 标签 {REGION_LABEL} 可能与之不同，且判断节点以 GA 标签为准）"),
            );
        }
        Some(g)
            if facts.has_required_affinity
                || workload.pod.node_selector.iter().flatten().next().is_some()
                || g.pins_region =>
        {
            langs.write(
                &mut problem,
                format_args!("{field} does not restrict {REGION_LABEL} to mainland-China regions"),
                format_args!("{field} 未将 {REGION_LABEL} 限定为中国大陆地域"),
            );
        }
        Some(_) => {
            langs.write(
                &mut problem,
                format_args!("{field} is not set and there is no required node affinity, so the pods may run on any node"),
                format_args!("{field} 未设置且没有必需的节点亲和性，Pod 可被调度到任意节点"),
            );
        }
        None => {
            langs.write(
                &mut problem,
                format_args!("{field} selects nodes that are not in mainland China"),
                format_args!("{field} 选中了不在中国大陆的节点"),
            );
        }
    }

    // Hints about constraints that look like they help but do not.
    if gap.is_some() && facts.has_preferred_affinity {
        langs.write(
            &mut problem,
            format_args!(" (preferred affinity is only a preference and guarantees nothing)"),
            format_args!("（首选亲和性只是偏好，不构成保证）"),
        );
    }
    // A term that pins by name already names the node it is about.
    let pinned = gap.and_then(|g| g.pinned_node.as_ref());
    if let Some(name) = facts.unknown_bound_node()
        && gap.is_some()
        && unknown_node.is_none()
        && pinned.is_none()
        && matching.is_some()
    {
        langs.write(
            &mut problem,
            format_args!(
                " ({prefix}.nodeName names node {name}, which is not in the node inventory)"
            ),
            format_args!("（{prefix}.nodeName 指定的节点 {name} 不在节点清单中）"),
        );
    }

    // What the inventory shows today (nothing, for a node it lacks).
    if let Some(m) = matching
        && unknown_node.is_none()
        && pinned.is_none()
    {
        let clause = write_inventory_clause(workload.kind, m, outside, langs);
        langs.push(&mut problem, &clause);
    }

    // The fix.
    let affinity =
        format!("{prefix}.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution");
    // The fix, and the mainland regions it leaves out (with why).
    let (mut fix, withheld) = match gap {
        _ if unknown_node.is_some() => {
            let regions = facts.region_fix_list();
            let fix = langs.text(format_args!(
                    "name a node that exists and is in mainland China, or remove nodeName and add a required node affinity on {REGION_LABEL} In [{regions}] under {affinity}"
                ), format_args!(
                    "指定一个存在且位于中国大陆的节点，或删除 nodeName 并在 {affinity} 中添加必需的节点亲和性 {REGION_LABEL} In [{regions}]"
                ));
            (fix, Some(facts.withheld_note(None, langs)))
        }
        Some(Gap {
            pinned_node: Some(pin),
            ..
        }) => {
            let regions = facts.region_fix_list();
            let node = &pin.name;
            let daemonset = workload
                .controller
                .as_ref()
                .filter(|c| workload.kind == WorkloadKind::Pod && c.kind == "DaemonSet");
            let fix = match daemonset {
                // The controller wrote this term; the fix is on its template.
                Some(ds) => {
                    let ds_affinity = format!(
                        "{}.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution",
                        WorkloadKind::DaemonSet.pod_spec_path()
                    );
                    langs.text(format_args!(
                            "the DaemonSet controller pins each of its pods to one node this way, replacing the template's node affinity: restrict the pod template of DaemonSet {}/{} to mainland-China nodes (a required node affinity on {REGION_LABEL} In [{regions}] under {ds_affinity}) so that it creates no pod on node {node}",
                            workload.namespace, ds.name
                        ), format_args!(
                            "DaemonSet 控制器以这种方式将每个 Pod 固定到一个节点（替换模板中的节点亲和性）：请将 DaemonSet {}/{} 的 Pod 模板限定到中国大陆节点（在 {ds_affinity} 中添加必需的节点亲和性 {REGION_LABEL} In [{regions}]），使其不在节点 {node} 上创建 Pod",
                            workload.namespace, ds.name
                        ))
                }
                None => langs.text(format_args!(
                        "pin the pods by {NODE_NAME_FIELD} only to nodes that exist and are in mainland China, or add a required node affinity on {REGION_LABEL} In [{regions}] under {affinity}"
                    ), format_args!(
                        "仅通过 {NODE_NAME_FIELD} 将 Pod 固定到存在且位于中国大陆的节点，或在 {affinity} 中添加必需的节点亲和性 {REGION_LABEL} In [{regions}]"
                    )),
            };
            (fix, Some(facts.withheld_note(None, langs)))
        }
        Some(g) if !g.non_mainland_regions.is_empty() => {
            let r = g.non_mainland_regions.join(", ");
            let fix = langs.text(
                format_args!("remove {r} from the allowed regions"),
                format_args!("从允许的地域中移除 {r}"),
            );
            (fix, None)
        }
        Some(g) => {
            // The deprecated label's values, when they are all mainland,
            // are what the user meant; else the inventory's regions.
            let (regions, among) = match &g.legacy_values {
                Some(values)
                    if !values.is_empty()
                        && values.iter().all(|v| facts.catalogue.is_mainland_region(v)) =>
                {
                    (values.join(", "), Some(values.as_slice()))
                }
                _ => (facts.region_fix_list(), None),
            };
            let fix = if g.legacy_values.is_some() {
                langs.text(format_args!(
                        "use the GA key {REGION_LABEL} instead of {LEGACY_REGION_LABEL} in {field} ({REGION_LABEL} In [{regions}])"
                    ), format_args!(
                        "在 {field} 中用 GA 标签 {REGION_LABEL} 代替 {LEGACY_REGION_LABEL}（{REGION_LABEL} In [{regions}]）"
                    ))
            } else {
                langs.text(format_args!(
                        "add a required node affinity on {REGION_LABEL} In [{regions}] under {affinity}"
                    ), format_args!(
                        "在 {affinity} 中添加必需的节点亲和性 {REGION_LABEL} In [{regions}]"
                    ))
            };
            (fix, Some(facts.withheld_note(among, langs)))
        }
        None => {
            let fix = Text {
                en: "fix the region labels of the nodes listed (or remove them from the pool), or narrow the selector to nodes in mainland China".into(),
                zh: "修正上述节点的地域标签（或将其移出节点池），或将选择器收窄到中国大陆的节点".into(),
            };
            (fix, None)
        }
    };
    if let Some(note) = withheld {
        langs.push(&mut fix, &note);
    }
    Message { problem, fix }
}

fn bound_message(ctx: &MessageContext<'_>, prefix: &str, node: &NodeEvidence) -> Message {
    let subject = ctx.subject();
    let langs = ctx.langs;
    let p = ctx.policy;
    let describe = |wanted: bool, lang| {
        if wanted {
            node.describe(lang)
        } else {
            String::new()
        }
    };
    Message {
        problem: langs.text(
            format_args!(
                "{} and policy {p} requires mainland-China nodes, but {prefix}.nodeName binds it to node {}, which is not in mainland China or cannot be verified.",
                subject.en,
                describe(langs.en, super::Lang::En)
            ),
            format_args!(
                "{}，策略 {p} 要求只能运行在中国大陆节点上，但 {prefix}.nodeName 将其绑定到节点 {}，该节点不在中国大陆或无法核实。",
                subject.zh,
                describe(langs.zh, super::Lang::ZhCn)
            ),
        ),
        fix: langs.text(
            format_args!(
                "run it on a node in mainland China (remove nodeName and add a required node affinity on {REGION_LABEL})."
            ),
            format_args!(
                "改为在中国大陆节点上运行（删除 nodeName，并添加 {REGION_LABEL} 的必需节点亲和性）。"
            ),
        ),
    }
}
