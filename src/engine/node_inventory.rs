//! The node inventory, classified once and indexed for selector evaluation.
//!
//! Evaluating a workload's node constraints against 5,000 label maps costs
//! hundreds of microseconds; the inventory instead keeps, per label key, the
//! set of nodes that carry it and the nodes carrying each value, so a
//! requirement becomes a few bitset operations over the node indices. The
//! result is exactly `Requirement::matches` applied node by node (a property
//! test below checks that against the plain scan).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use fixedbitset::FixedBitSet;

use super::catalogue::Catalogue;
use super::evidence::NodeEvidence;
use super::nodes::{self, NodeInfo, NodeStanding, REGION_LABEL};
use super::selector::{NODE_NAME_FIELD, Op, Requirement, Space, Term};
use super::shared::Shared;

/// A node with its policy-independent standing, computed once per snapshot.
#[derive(Clone, Debug)]
pub struct ClassifiedNode {
    pub info: NodeInfo,
    pub standing: NodeStanding,
    /// The node as verdicts cite it (name, region, standing), built once
    /// and shared by every verdict that names it.
    pub evidence: Shared<NodeEvidence>,
}

impl ClassifiedNode {
    pub fn new(info: NodeInfo, catalogue: &Catalogue) -> Self {
        let standing = nodes::classify(&info, catalogue);
        let evidence = Shared::new(NodeEvidence {
            name: info.name.clone(),
            region: info.region_label().map(str::to_string),
            standing: standing.clone(),
        });
        ClassifiedNode {
            info,
            standing,
            evidence,
        }
    }
}

/// Nodes carrying one key, and which nodes carry each of its values.
#[derive(Clone, Debug)]
struct KeyIndex {
    present: FixedBitSet,
    by_value: HashMap<String, Postings>,
}

/// The nodes carrying one value: their indices while few, a bitset once
/// that is smaller (see `Postings::compact`). A region label's value sits
/// on thousands of nodes at the envelope, and adding them to a set one by
/// one cost more than the rest of a review's placement check.
#[derive(Clone, Debug)]
enum Postings {
    Sparse(Vec<u32>),
    Dense(FixedBitSet),
}

impl Postings {
    /// Dense once the bitset (`len` bits) is no larger than the indices.
    fn compact(&mut self, len: usize) {
        if let Postings::Sparse(indices) = self
            && indices.len() * 32 >= len
        {
            let mut set = FixedBitSet::with_capacity(len);
            set.extend(indices.iter().map(|&i| i as usize));
            *self = Postings::Dense(set);
        }
    }

    fn add_to(&self, set: &mut FixedBitSet) {
        match self {
            Postings::Sparse(indices) => set.extend(indices.iter().map(|&i| i as usize)),
            Postings::Dense(nodes) => set.union_with(nodes),
        }
    }

    fn first(&self) -> Option<usize> {
        match self {
            Postings::Sparse(indices) => indices.first().map(|&i| i as usize),
            Postings::Dense(nodes) => nodes.ones().next(),
        }
    }
}

impl KeyIndex {
    fn new(len: usize) -> Self {
        KeyIndex {
            present: FixedBitSet::with_capacity(len),
            by_value: HashMap::new(),
        }
    }

    fn add(&mut self, node: u32, value: &str) {
        self.present.insert(node as usize);
        match self.by_value.get_mut(value) {
            Some(Postings::Sparse(indices)) => indices.push(node),
            // Only built sparse; compacted once every node is added.
            Some(Postings::Dense(nodes)) => nodes.insert(node as usize),
            None => {
                self.by_value
                    .insert(value.to_string(), Postings::Sparse(vec![node]));
            }
        }
    }

    fn compact(&mut self, len: usize) {
        for postings in self.by_value.values_mut() {
            postings.compact(len);
        }
    }
}

/// The mainland regions a placement fix may tell a user to pin
/// (`topology.kubernetes.io/region In [...]`): only regions whose every
/// node carrying that label is verified mainland. A region with a node
/// whose label lies (its providerID contradicts it, ...) is withheld, with
/// that node, because pinning it would still admit the node.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FixRegions {
    pub offered: BTreeSet<String>,
    /// Withheld mainland regions, each with the first unverified node
    /// labelled with it.
    pub withheld: BTreeMap<String, Shared<NodeEvidence>>,
}

#[derive(Clone, Debug, Default)]
pub struct NodeInventory {
    nodes: Vec<ClassifiedNode>,
    labels: HashMap<String, KeyIndex>,
    /// The `metadata.name` field, indexed like a label every node carries.
    names: Option<KeyIndex>,
    /// Nodes the catalogue does not place in mainland China (abroad, or
    /// unverified): the only ones a policy can object to.
    not_mainland: FixedBitSet,
    /// Of those, the nodes with a missing or unknown region: the only ones
    /// a policy's `allowedNodes` can vouch for.
    vouchable: FixedBitSet,
    /// Mainland regions present in the inventory.
    mainland_regions: BTreeSet<String>,
    /// Those a fix may name (see `FixRegions`).
    fix_regions: FixRegions,
}

impl NodeInventory {
    pub fn new(nodes: impl IntoIterator<Item = NodeInfo>, catalogue: &Catalogue) -> Self {
        let nodes: Vec<ClassifiedNode> = nodes
            .into_iter()
            .map(|info| ClassifiedNode::new(info, catalogue))
            .collect();
        let len = nodes.len();
        let mut labels: HashMap<String, KeyIndex> = HashMap::new();
        let mut names = KeyIndex::new(len);
        let mut not_mainland = FixedBitSet::with_capacity(len);
        let mut vouchable = FixedBitSet::with_capacity(len);
        let mut mainland_regions = BTreeSet::new();
        // Unverified nodes by the GA region label they claim: the label a
        // fix pins.
        let mut unverified: BTreeMap<&str, usize> = BTreeMap::new();
        for (i, node) in nodes.iter().enumerate() {
            // A cluster has far fewer than 2^32 nodes; an index that does
            // not fit is simply not indexed (and so matches nothing extra).
            let Ok(idx) = u32::try_from(i) else { break };
            names.add(idx, &node.info.name);
            for (key, value) in &node.info.labels {
                // get_mut first: the same few dozen keys repeat on every node,
                // and `entry` would allocate the key each time.
                match labels.get_mut(key) {
                    Some(index) => index.add(idx, value),
                    None => {
                        let mut index = KeyIndex::new(len);
                        index.add(idx, value);
                        labels.insert(key.clone(), index);
                    }
                }
            }
            match &node.standing {
                NodeStanding::Mainland { region } => {
                    mainland_regions.insert(region.clone());
                }
                standing => {
                    not_mainland.insert(i);
                    vouchable.set(i, standing.vouchable());
                    if let Some(region) = node.info.labels.get(REGION_LABEL) {
                        unverified.entry(region.as_str()).or_insert(i);
                    }
                }
            }
        }
        for index in labels.values_mut() {
            index.compact(len);
        }
        names.compact(len);
        let mut fix_regions = FixRegions::default();
        for region in &mainland_regions {
            match unverified.get(region.as_str()).and_then(|&i| nodes.get(i)) {
                Some(node) => {
                    fix_regions
                        .withheld
                        .insert(region.clone(), node.evidence.clone());
                }
                None => {
                    fix_regions.offered.insert(region.clone());
                }
            }
        }
        NodeInventory {
            nodes,
            labels,
            names: Some(names),
            not_mainland,
            vouchable,
            mainland_regions,
            fix_regions,
        }
    }

    pub fn nodes(&self) -> &[ClassifiedNode] {
        &self.nodes
    }

    pub fn get(&self, index: usize) -> Option<&ClassifiedNode> {
        self.nodes.get(index)
    }

    /// The first node of that name.
    pub fn node(&self, name: &str) -> Option<&ClassifiedNode> {
        let postings = self.names.as_ref()?.by_value.get(name)?;
        self.nodes.get(postings.first()?)
    }

    pub fn mainland_regions(&self) -> &BTreeSet<String> {
        &self.mainland_regions
    }

    /// The mainland regions a placement fix may name.
    pub fn fix_regions(&self) -> &FixRegions {
        &self.fix_regions
    }

    /// Nodes the catalogue does not place in mainland China.
    pub fn not_mainland(&self) -> &FixedBitSet {
        &self.not_mainland
    }

    /// Nodes with a missing or unknown region (`NodeStanding::vouchable`).
    pub fn vouchable(&self) -> &FixedBitSet {
        &self.vouchable
    }

    fn all(&self) -> FixedBitSet {
        let mut set = FixedBitSet::with_capacity(self.nodes.len());
        set.insert_range(..);
        set
    }

    fn key(&self, space: Space, key: &str) -> Option<&KeyIndex> {
        match space {
            Space::Label => self.labels.get(key),
            Space::Field if key == NODE_NAME_FIELD => self.names.as_ref(),
            // No other node field is matchable: no node carries it.
            Space::Field => None,
        }
    }

    /// The nodes `requirement` matches (`Requirement::matches`, set-wise).
    pub fn requirement_matches(&self, requirement: &Requirement) -> FixedBitSet {
        let len = self.nodes.len();
        let key = self.key(requirement.space, &requirement.key);
        let union_of = |pick: &mut dyn FnMut(&str) -> bool| {
            let mut set = FixedBitSet::with_capacity(len);
            for (value, postings) in key.iter().flat_map(|k| &k.by_value) {
                if pick(value) {
                    postings.add_to(&mut set);
                }
            }
            set
        };
        let union_of_values = |values: &BTreeSet<String>| {
            let mut set = FixedBitSet::with_capacity(len);
            if let Some(k) = key {
                for v in values {
                    if let Some(postings) = k.by_value.get(v) {
                        postings.add_to(&mut set);
                    }
                }
            }
            set
        };
        let present = || {
            key.map(|k| k.present.clone())
                .unwrap_or_else(|| FixedBitSet::with_capacity(len))
        };
        let complement = |mut set: FixedBitSet| {
            set.toggle_range(..);
            set
        };
        match &requirement.op {
            Op::In(values) => union_of_values(values),
            // NotIn matches nodes without the key too.
            Op::NotIn(values) => complement(union_of_values(values)),
            Op::Exists => present(),
            Op::DoesNotExist => complement(present()),
            Op::Gt(n) => union_of(&mut |v| v.parse::<i64>().is_ok_and(|x| x > *n)),
            Op::Lt(n) => union_of(&mut |v| v.parse::<i64>().is_ok_and(|x| x < *n)),
        }
    }

    /// The nodes a term matches (`Term::matches`, set-wise).
    pub fn term_matches(&self, term: &Term) -> FixedBitSet {
        if term.invalid.is_some() {
            return FixedBitSet::with_capacity(self.nodes.len());
        }
        self.conjunction_matches(&term.requirements)
    }

    /// The nodes matching every requirement.
    pub fn conjunction_matches(&self, requirements: &[Requirement]) -> FixedBitSet {
        let mut set = self.all();
        for r in requirements {
            if set.is_clear() {
                break;
            }
            set.intersect_with(&self.requirement_matches(r));
        }
        set
    }

    /// The nodes a pod with these constraints may be scheduled onto: all of
    /// `base` (nodeSelector, nodeName) and, when required node affinity is
    /// set, any one of its terms.
    pub fn constraint_matches(&self, base: &[Requirement], terms: Option<&[Term]>) -> FixedBitSet {
        let mut set = self.conjunction_matches(base);
        if let Some(terms) = terms {
            let mut any = FixedBitSet::with_capacity(self.nodes.len());
            for t in terms {
                any.union_with(&self.term_matches(t));
            }
            set.intersect_with(&any);
        }
        set
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;
    use crate::engine::placement::NodeConstraints;
    use crate::engine::selector::NodeLabels;

    const KEYS: [&str; 3] = ["topology.kubernetes.io/region", "pool", "gen"];
    const VALUES: [&str; 5] = ["cn-north-1", "ap-east-1", "1", "7", "x"];

    fn node_strategy() -> impl Strategy<Value = NodeInfo> {
        (
            0usize..6,
            proptest::collection::btree_map(
                proptest::sample::select(KEYS.to_vec()),
                proptest::sample::select(VALUES.to_vec()),
                0..=3,
            ),
        )
            .prop_map(|(n, labels)| NodeInfo {
                name: format!("node-{n}"),
                labels: labels
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect::<BTreeMap<_, _>>(),
                provider_id: None,
            })
    }

    fn requirement_strategy() -> impl Strategy<Value = Requirement> {
        let values = proptest::collection::btree_set(
            proptest::sample::select(vec![
                "cn-north-1",
                "ap-east-1",
                "1",
                "7",
                "x",
                "node-1",
                "node-3",
            ])
            .prop_map(str::to_string),
            1..=3,
        );
        let op = prop_oneof![
            values.clone().prop_map(Op::In),
            values.prop_map(Op::NotIn),
            Just(Op::Exists),
            Just(Op::DoesNotExist),
            (-1i64..9).prop_map(Op::Gt),
            (-1i64..9).prop_map(Op::Lt),
        ];
        let key = prop_oneof![
            proptest::sample::select(KEYS.to_vec()).prop_map(|k| (Space::Label, k.to_string())),
            Just((Space::Label, "absent".to_string())),
            Just((Space::Field, NODE_NAME_FIELD.to_string())),
            Just((Space::Field, "spec.unschedulable".to_string())),
        ];
        (key, op).prop_map(|((space, key), op)| Requirement { space, key, op })
    }

    fn term_strategy() -> impl Strategy<Value = Term> {
        (
            proptest::collection::vec(requirement_strategy(), 0..3),
            proptest::bool::weighted(0.1),
        )
            .prop_map(|(requirements, invalid)| Term {
                requirements,
                invalid: invalid.then(|| "invalid".to_string()),
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// The indexed evaluation agrees with matching node by node.
        #[test]
        fn indexed_matching_agrees_with_the_scan(
            nodes in proptest::collection::vec(node_strategy(), 0..12),
            base in proptest::collection::vec(requirement_strategy(), 0..3),
            terms in proptest::option::of(proptest::collection::vec(term_strategy(), 0..3)),
        ) {
            let inventory = NodeInventory::new(nodes.clone(), Catalogue::builtin());
            let constraints = NodeConstraints { base, terms };
            let got = constraints.matching(&inventory);
            for (i, n) in nodes.iter().enumerate() {
                let view = NodeLabels { name: &n.name, labels: &n.labels };
                let want = constraints.base.iter().all(|r| r.matches(&view))
                    && constraints.terms.as_ref().is_none_or(|ts| ts.iter().any(|t| t.matches(&view)));
                prop_assert_eq!(got.contains(i), want, "node {} {:?}", i, n);
                prop_assert_eq!(constraints.admits(&view), want, "node {} {:?}", i, n);
            }
            prop_assert!(got.ones().all(|i| i < nodes.len()));
        }
    }

    #[test]
    fn node_lookup_and_not_mainland() {
        let nodes = vec![
            NodeInfo {
                name: "a".into(),
                labels: BTreeMap::from([(
                    "topology.kubernetes.io/region".to_string(),
                    "cn-north-1".to_string(),
                )]),
                provider_id: None,
            },
            NodeInfo {
                name: "b".into(),
                labels: BTreeMap::from([(
                    "topology.kubernetes.io/region".to_string(),
                    "ap-east-1".to_string(),
                )]),
                provider_id: None,
            },
            NodeInfo {
                name: "c".into(),
                labels: BTreeMap::new(),
                provider_id: None,
            },
        ];
        let inv = NodeInventory::new(nodes, Catalogue::builtin());
        assert_eq!(inv.node("b").map(|n| n.info.name.as_str()), Some("b"));
        assert!(inv.node("zz").is_none());
        assert_eq!(inv.not_mainland().ones().collect::<Vec<_>>(), vec![1, 2]);
        assert_eq!(
            inv.mainland_regions().iter().collect::<Vec<_>>(),
            vec!["cn-north-1"]
        );
    }
    /// A mainland region with a node whose GA label claims it but cannot
    /// be verified is withheld from fixes, with that node; a region whose
    /// nodes all check out is offered.
    #[test]
    fn fix_regions_withhold_a_region_with_a_lying_node() {
        let node = |name: &str, region: &str, provider_id: &str| NodeInfo {
            name: name.into(),
            labels: BTreeMap::from([(REGION_LABEL.to_string(), region.to_string())]),
            provider_id: Some(provider_id.to_string()),
        };
        let inv = NodeInventory::new(
            vec![
                node("bj", "cn-north-1", "aws:///cn-north-1a/i-1"),
                node("nx", "cn-northwest-1", "aws:///cn-northwest-1a/i-2"),
                node("liar", "cn-north-1", "aws:///ap-east-1a/i-3"),
                node("hk", "ap-east-1", "aws:///ap-east-1a/i-4"),
            ],
            Catalogue::builtin(),
        );
        let fix = inv.fix_regions();
        assert_eq!(
            fix.offered.iter().collect::<Vec<_>>(),
            vec!["cn-northwest-1"]
        );
        assert_eq!(
            fix.withheld
                .iter()
                .map(|(r, n)| (r.as_str(), n.name.as_str()))
                .collect::<Vec<_>>(),
            vec![("cn-north-1", "liar")]
        );
    }
}
