//! Kubernetes selector semantics, exactly: node selectors (nodeSelector,
//! required node affinity, matchFields, nodeName) and label selectors.
//!
//! Besides matching, this module answers the question the placement
//! guarantee needs: "does this conjunction of requirements *imply* that
//! requirement, for every node that could ever exist?" The answers are sound
//! (never "yes" when a counter-example node exists) and are checked against a
//! brute-force model in `tests/placement_properties.rs`.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{NodeSelector, NodeSelectorRequirement, NodeSelectorTerm};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

/// Node fields are matched in their own key space (`matchFields`);
/// Kubernetes supports only `metadata.name` there.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Space {
    Label,
    Field,
}

pub const NODE_NAME_FIELD: &str = "metadata.name";

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    In(BTreeSet<String>),
    NotIn(BTreeSet<String>),
    Exists,
    DoesNotExist,
    Gt(i64),
    Lt(i64),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Requirement {
    pub space: Space,
    pub key: String,
    pub op: Op,
}

impl Requirement {
    pub fn label_eq(key: &str, value: &str) -> Self {
        Requirement {
            space: Space::Label,
            key: key.to_string(),
            op: Op::In(BTreeSet::from([value.to_string()])),
        }
    }

    /// Kubernetes matching semantics for one requirement against one node.
    pub fn matches(&self, node: &NodeLabels<'_>) -> bool {
        let value = node.get(self.space, &self.key);
        match (&self.op, value) {
            (Op::In(values), Some(v)) => values.contains(v),
            (Op::In(_), None) => false,
            // NotIn and DoesNotExist match nodes that lack the label: the trap
            // that makes them useless as a guarantee.
            (Op::NotIn(values), Some(v)) => !values.contains(v),
            (Op::NotIn(_), None) => true,
            (Op::Exists, v) => v.is_some(),
            (Op::DoesNotExist, v) => v.is_none(),
            (Op::Gt(n), Some(v)) => v.parse::<i64>().is_ok_and(|x| x > *n),
            (Op::Lt(n), Some(v)) => v.parse::<i64>().is_ok_and(|x| x < *n),
            (Op::Gt(_) | Op::Lt(_), None) => false,
        }
    }
}

/// What a node looks like to a selector: its labels and its name.
#[derive(Clone, Copy, Debug)]
pub struct NodeLabels<'a> {
    pub name: &'a str,
    pub labels: &'a BTreeMap<String, String>,
}

impl<'a> NodeLabels<'a> {
    fn get(&self, space: Space, key: &str) -> Option<&'a str> {
        match space {
            Space::Label => self.labels.get(key).map(String::as_str),
            Space::Field if key == NODE_NAME_FIELD => Some(self.name),
            Space::Field => None,
        }
    }
}

/// One `nodeSelectorTerm`: requirements AND'ed. A term that Kubernetes would
/// reject or fail to parse (In with no values, Gt with a non-integer, an
/// unknown operator) matches no node, as in the scheduler; an empty term
/// matches no node either.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Term {
    pub requirements: Vec<Requirement>,
    /// Why the term matches nothing, when it does.
    pub invalid: Option<String>,
}

impl Term {
    pub fn from_k8s(term: &NodeSelectorTerm) -> Term {
        let mut requirements = Vec::new();
        let mut invalid = None;
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
        for (space, req) in exprs.chain(fields) {
            match convert_requirement(space, req) {
                Ok(r) => requirements.push(r),
                Err(why) => {
                    invalid.get_or_insert(why);
                }
            }
        }
        if requirements.is_empty() && invalid.is_none() {
            invalid = Some("the term is empty, and an empty term matches no node".to_string());
        }
        Term {
            requirements,
            invalid,
        }
    }

    pub fn matches(&self, node: &NodeLabels<'_>) -> bool {
        self.invalid.is_none() && self.requirements.iter().all(|r| r.matches(node))
    }
}

fn convert_requirement(space: Space, req: &NodeSelectorRequirement) -> Result<Requirement, String> {
    let values = req.values.as_deref().unwrap_or_default();
    let set = || values.iter().cloned().collect::<BTreeSet<String>>();
    let single_int = || match values {
        [v] => v.parse::<i64>().map_err(|_| {
            format!(
                "{} {}: value {v:?} is not an integer",
                req.key, req.operator
            )
        }),
        _ => Err(format!(
            "{} {} needs exactly one integer value",
            req.key, req.operator
        )),
    };
    let op = match req.operator.as_str() {
        "In" | "NotIn" if values.is_empty() => {
            return Err(format!("{} {} has no values", req.key, req.operator));
        }
        // The API server rejects a node field selector with more than one
        // value (pods validation); the term then matches nothing.
        "In" | "NotIn" if space == Space::Field && values.len() != 1 => {
            return Err(format!(
                "{} {} on a node field must have exactly one value",
                req.key, req.operator
            ));
        }
        "In" => Op::In(set()),
        "NotIn" => Op::NotIn(set()),
        "Exists" | "DoesNotExist" if !values.is_empty() => {
            return Err(format!("{} {} must not have values", req.key, req.operator));
        }
        "Exists" if space == Space::Label => Op::Exists,
        "DoesNotExist" if space == Space::Label => Op::DoesNotExist,
        "Gt" if space == Space::Label => Op::Gt(single_int()?),
        "Lt" if space == Space::Label => Op::Lt(single_int()?),
        other => return Err(format!("operator {other:?} is not valid here")),
    };
    Ok(Requirement {
        space,
        key: req.key.clone(),
        op,
    })
}

/// A compiled `NodeSelector` (terms OR'ed).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeSelectorTerms {
    pub terms: Vec<Term>,
}

impl NodeSelectorTerms {
    pub fn from_k8s(selector: &NodeSelector) -> Self {
        NodeSelectorTerms {
            terms: selector
                .node_selector_terms
                .iter()
                .map(Term::from_k8s)
                .collect(),
        }
    }

    pub fn matches(&self, node: &NodeLabels<'_>) -> bool {
        self.terms.iter().any(|t| t.matches(node))
    }
}

/// What a conjunction of requirements says about one key.
#[derive(Clone, Debug, Default)]
struct KeyConstraint {
    /// Intersection of all `In` sets; `None` when no `In` constrains the key.
    allowed: Option<BTreeSet<String>>,
    forbidden: BTreeSet<String>,
    must_exist: bool,
    must_not_exist: bool,
    /// Strictest lower bound (`Gt`) and upper bound (`Lt`).
    gt: Option<i64>,
    lt: Option<i64>,
}

impl KeyConstraint {
    fn add(&mut self, op: &Op) {
        match op {
            Op::In(values) => {
                self.must_exist = true;
                self.allowed = Some(match self.allowed.take() {
                    Some(prev) => prev.intersection(values).cloned().collect(),
                    None => values.clone(),
                });
            }
            Op::NotIn(values) => self.forbidden.extend(values.iter().cloned()),
            Op::Exists => self.must_exist = true,
            Op::DoesNotExist => self.must_not_exist = true,
            Op::Gt(n) => {
                self.must_exist = true;
                self.gt = Some(self.gt.map_or(*n, |m| m.max(*n)));
            }
            Op::Lt(n) => {
                self.must_exist = true;
                self.lt = Some(self.lt.map_or(*n, |m| m.min(*n)));
            }
        }
    }

    fn value_ok(&self, v: &str) -> bool {
        if self.forbidden.contains(v) {
            return false;
        }
        if self.gt.is_none() && self.lt.is_none() {
            return true;
        }
        match v.parse::<i64>() {
            Ok(x) => self.gt.is_none_or(|g| x > g) && self.lt.is_none_or(|l| x < l),
            Err(_) => false,
        }
    }

    /// The finite set of values a matching node can have, when there is one.
    fn candidates(&self) -> Option<BTreeSet<&String>> {
        self.allowed
            .as_ref()
            .map(|a| a.iter().filter(|v| self.value_ok(v)).collect())
    }

    /// True when no node at all can satisfy the constraint (sound: only
    /// reports contradictions that are certain).
    fn unsatisfiable(&self) -> bool {
        if self.must_exist && self.must_not_exist {
            return true;
        }
        if let (Some(g), Some(l)) = (self.gt, self.lt)
            && g.checked_add(1).is_none_or(|g1| g1 >= l)
        {
            return true;
        }
        self.candidates().is_some_and(|c| c.is_empty())
    }

    /// Does every value allowed by this constraint satisfy `op`?
    fn implies(&self, op: &Op) -> bool {
        let all_candidates = |pred: &dyn Fn(&str) -> bool| {
            self.candidates().is_some_and(|c| c.iter().all(|v| pred(v)))
        };
        match op {
            Op::In(values) => all_candidates(&|v| values.contains(v)),
            Op::NotIn(values) => {
                self.must_not_exist
                    || values.is_subset(&self.forbidden)
                    || all_candidates(&|v| !values.contains(v))
            }
            Op::Exists => self.must_exist,
            Op::DoesNotExist => self.must_not_exist,
            Op::Gt(n) => {
                self.gt.is_some_and(|g| g >= *n)
                    || all_candidates(&|v| v.parse::<i64>().is_ok_and(|x| x > *n))
            }
            Op::Lt(n) => {
                self.lt.is_some_and(|l| l <= *n)
                    || all_candidates(&|v| v.parse::<i64>().is_ok_and(|x| x < *n))
            }
        }
    }
}

/// A conjunction of requirements (nodeSelector + one affinity term + nodeName),
/// summarised per key so implication questions are cheap.
#[derive(Clone, Debug, Default)]
pub struct Conjunction {
    keys: BTreeMap<(Space, String), KeyConstraint>,
}

impl Conjunction {
    pub fn new<'r>(requirements: impl IntoIterator<Item = &'r Requirement>) -> Self {
        let mut keys: BTreeMap<(Space, String), KeyConstraint> = BTreeMap::new();
        for r in requirements {
            keys.entry((r.space, r.key.clone())).or_default().add(&r.op);
        }
        Conjunction { keys }
    }

    /// No node can satisfy all requirements together.
    pub fn unsatisfiable(&self) -> bool {
        self.keys.values().any(KeyConstraint::unsatisfiable)
    }

    /// Every node satisfying the conjunction satisfies `r`.
    pub fn implies(&self, r: &Requirement) -> bool {
        self.keys
            .get(&(r.space, r.key.clone()))
            .is_some_and(|k| k.implies(&r.op))
    }

    /// Every node satisfying the conjunction satisfies the whole term.
    pub fn implies_term(&self, term: &Term) -> bool {
        term.invalid.is_none() && term.requirements.iter().all(|r| self.implies(r))
    }

    /// The finite set of values the label `key` can take on a matching node,
    /// if the conjunction pins it to one.
    pub fn label_values(&self, key: &str) -> Option<BTreeSet<&String>> {
        self.keys
            .get(&(Space::Label, key.to_string()))
            .and_then(KeyConstraint::candidates)
    }
}

/// A compiled `metav1.LabelSelector` (namespaceSelector, podSelector, ...).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LabelSelectorMatcher {
    requirements: Vec<Requirement>,
}

impl LabelSelectorMatcher {
    /// Compile a selector; an invalid one is an error naming the problem.
    /// An empty selector matches everything (Kubernetes semantics).
    pub fn compile(selector: &LabelSelector) -> Result<Self, String> {
        let mut requirements: Vec<Requirement> = selector
            .match_labels
            .iter()
            .flatten()
            .map(|(k, v)| Requirement::label_eq(k, v))
            .collect();
        for expr in selector.match_expressions.iter().flatten() {
            let values = expr.values.as_deref().unwrap_or_default();
            let set = values.iter().cloned().collect::<BTreeSet<String>>();
            let op = match expr.operator.as_str() {
                "In" | "NotIn" if values.is_empty() => {
                    return Err(format!("{} {} has no values", expr.key, expr.operator));
                }
                "In" => Op::In(set),
                "NotIn" => Op::NotIn(set),
                "Exists" | "DoesNotExist" if !values.is_empty() => {
                    return Err(format!(
                        "{} {} must not have values",
                        expr.key, expr.operator
                    ));
                }
                "Exists" => Op::Exists,
                "DoesNotExist" => Op::DoesNotExist,
                other => {
                    return Err(format!(
                        "operator {other:?} on key {:?} is not one of In, NotIn, Exists, DoesNotExist",
                        expr.key
                    ));
                }
            };
            requirements.push(Requirement {
                space: Space::Label,
                key: expr.key.clone(),
                op,
            });
        }
        Ok(LabelSelectorMatcher { requirements })
    }

    /// Like `compile`, but a selector Kubernetes would reject matches nothing.
    /// Used for objects the API server already validated.
    pub fn compile_lenient(selector: &LabelSelector) -> Option<Self> {
        Self::compile(selector).ok()
    }

    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let view = NodeLabels { name: "", labels };
        self.requirements.iter().all(|r| r.matches(&view))
    }

    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(key: &str, op: &str, values: &[&str]) -> NodeSelectorRequirement {
        NodeSelectorRequirement {
            key: key.into(),
            operator: op.into(),
            values: Some(values.iter().map(|s| s.to_string()).collect()),
        }
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn notin_and_doesnotexist_match_unlabelled_nodes() {
        let l = labels(&[]);
        let node = NodeLabels {
            name: "n",
            labels: &l,
        };
        let t = Term::from_k8s(&NodeSelectorTerm {
            match_expressions: Some(vec![
                req("r", "NotIn", &["us"]),
                req("z", "DoesNotExist", &[]),
            ]),
            match_fields: None,
        });
        assert!(t.matches(&node));
    }

    #[test]
    fn empty_and_invalid_terms_match_nothing() {
        let l = labels(&[("r", "1")]);
        let node = NodeLabels {
            name: "n",
            labels: &l,
        };
        assert!(!Term::from_k8s(&NodeSelectorTerm::default()).matches(&node));
        let bad = Term::from_k8s(&NodeSelectorTerm {
            match_expressions: Some(vec![req("r", "Gt", &["x"])]),
            match_fields: None,
        });
        assert!(bad.invalid.is_some());
        assert!(!bad.matches(&node));
    }

    #[test]
    fn match_fields_matches_node_name() {
        let l = labels(&[]);
        let t = Term::from_k8s(&NodeSelectorTerm {
            match_expressions: None,
            match_fields: Some(vec![req("metadata.name", "In", &["a"])]),
        });
        assert!(t.matches(&NodeLabels {
            name: "a",
            labels: &l
        }));
        assert!(!t.matches(&NodeLabels {
            name: "b",
            labels: &l
        }));
    }

    #[test]
    fn implication_basics() {
        let r = |k: &str, op: Op| Requirement {
            space: Space::Label,
            key: k.into(),
            op,
        };
        let set = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
        let c = Conjunction::new(&[
            r("a", Op::In(set(&["1", "2", "3"]))),
            r("a", Op::NotIn(set(&["3"]))),
        ]);
        assert!(c.implies(&r("a", Op::In(set(&["1", "2"])))));
        assert!(c.implies(&r("a", Op::Exists)));
        assert!(c.implies(&r("a", Op::Lt(3))));
        assert!(!c.implies(&r("a", Op::Gt(1))));
        assert!(!c.implies(&r("b", Op::NotIn(set(&["x"])))));
        let contradiction = Conjunction::new(&[r("a", Op::Exists), r("a", Op::DoesNotExist)]);
        assert!(contradiction.unsatisfiable());
        let numeric = Conjunction::new(&[r("a", Op::Gt(4)), r("a", Op::Lt(5))]);
        assert!(numeric.unsatisfiable());
    }

    #[test]
    fn label_selector_semantics() {
        let sel = LabelSelector {
            match_labels: Some(BTreeMap::from([("env".to_string(), "prod".to_string())])),
            match_expressions: None,
        };
        let m = LabelSelectorMatcher::compile(&sel).unwrap();
        assert!(m.matches(&labels(&[("env", "prod"), ("x", "y")])));
        assert!(!m.matches(&labels(&[("env", "dev")])));
        assert!(
            LabelSelectorMatcher::compile(&LabelSelector::default())
                .unwrap()
                .matches(&labels(&[]))
        );
    }
}
