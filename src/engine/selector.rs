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

use super::text::Text;

/// Node fields are matched in their own key space (`matchFields`);
/// Kubernetes supports only `metadata.name` there.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Space {
    Label,
    Field,
}

pub(crate) const NODE_NAME_FIELD: &str = "metadata.name";

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
pub(crate) struct Conjunction {
    keys: BTreeMap<(Space, String), KeyConstraint>,
}

impl Conjunction {
    pub(crate) fn new<'r>(requirements: impl IntoIterator<Item = &'r Requirement>) -> Self {
        let mut keys: BTreeMap<(Space, String), KeyConstraint> = BTreeMap::new();
        for r in requirements {
            keys.entry((r.space, r.key.clone())).or_default().add(&r.op);
        }
        Conjunction { keys }
    }

    /// No node can satisfy all requirements together.
    pub(crate) fn unsatisfiable(&self) -> bool {
        self.keys.values().any(KeyConstraint::unsatisfiable)
    }

    /// Every node satisfying the conjunction satisfies `r`.
    pub(crate) fn implies(&self, r: &Requirement) -> bool {
        self.keys
            .get(&(r.space, r.key.clone()))
            .is_some_and(|k| k.implies(&r.op))
    }

    /// Every node satisfying the conjunction satisfies the whole term.
    pub(crate) fn implies_term(&self, term: &Term) -> bool {
        term.invalid.is_none() && term.requirements.iter().all(|r| self.implies(r))
    }

    /// The finite set of values the label `key` can take on a matching node,
    /// if the conjunction pins it to one.
    pub(crate) fn label_values(&self, key: &str) -> Option<BTreeSet<&String>> {
        self.keys
            .get(&(Space::Label, key.to_string()))
            .and_then(KeyConstraint::candidates)
    }

    /// The finite set of node names (`metadata.name`, from `matchFields`
    /// and `spec.nodeName`) a matching node can have, if the conjunction
    /// pins the name: the intersection of its `In` sets minus `NotIn`
    /// values. `None` when no `In` restricts the name.
    pub(crate) fn node_names(&self) -> Option<BTreeSet<&String>> {
        // Field keys sort after label keys and are rare: a range from the
        // empty field key finds the name without allocating a key.
        self.keys
            .range((Space::Field, String::new())..)
            .find(|((_, key), _)| key == NODE_NAME_FIELD)
            .and_then(|(_, constraint)| constraint.candidates())
    }
}

/// A compiled `metav1.LabelSelector` (namespaceSelector, podSelector, ...).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LabelSelectorMatcher {
    requirements: Vec<Requirement>,
}

/// Something the API server would refuse in a label selector.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SelectorProblem {
    /// The field below the selector: `matchLabels`,
    /// `matchExpressions[0].key`, `matchExpressions[1].values[0]`, ...
    pub field: String,
    pub message: Text,
}

impl LabelSelectorMatcher {
    /// Compile a selector, validated as the API server validates label
    /// selectors: keys are qualified names, values valid label values,
    /// operators known and value counts right. Every problem is returned.
    /// An empty selector matches everything (Kubernetes semantics).
    pub fn compile(selector: &LabelSelector) -> Result<Self, Vec<SelectorProblem>> {
        let mut problems = Vec::new();
        let mut requirements: Vec<Requirement> = Vec::new();
        for (k, v) in selector.match_labels.iter().flatten() {
            if let Some(why) = label_key_problem(k) {
                problems.push(SelectorProblem {
                    field: "matchLabels".into(),
                    message: why,
                });
            }
            if let Some(why) = label_value_problem(k, v) {
                problems.push(SelectorProblem {
                    field: "matchLabels".into(),
                    message: why,
                });
            }
            requirements.push(Requirement::label_eq(k, v));
        }
        for (i, expr) in selector.match_expressions.iter().flatten().enumerate() {
            let field = |f: &str| format!("matchExpressions[{i}].{f}");
            let values = expr.values.as_deref().unwrap_or_default();
            if let Some(why) = label_key_problem(&expr.key) {
                problems.push(SelectorProblem {
                    field: field("key"),
                    message: why,
                });
            }
            for (j, v) in values.iter().enumerate() {
                if let Some(why) = label_value_problem(&expr.key, v) {
                    problems.push(SelectorProblem {
                        field: field(&format!("values[{j}]")),
                        message: why,
                    });
                }
            }
            let set = || values.iter().cloned().collect::<BTreeSet<String>>();
            let op = match expr.operator.as_str() {
                "In" | "NotIn" if values.is_empty() => {
                    problems.push(SelectorProblem {
                        field: field("values"),
                        message: Text {
                            en: format!(
                                "{} {} has no values: values must be given when the operator is In or NotIn",
                                expr.key, expr.operator
                            ),
                            zh: format!(
                                "{} {} 没有取值：运算符为 In 或 NotIn 时必须给出 values",
                                expr.key, expr.operator
                            ),
                        },
                    });
                    continue;
                }
                "Exists" | "DoesNotExist" if !values.is_empty() => {
                    problems.push(SelectorProblem {
                        field: field("values"),
                        message: Text {
                            en: format!(
                                "{} {} must not have values: values are not allowed when the operator is Exists or DoesNotExist",
                                expr.key, expr.operator
                            ),
                            zh: format!(
                                "{} {} 不能带取值：运算符为 Exists 或 DoesNotExist 时不允许 values",
                                expr.key, expr.operator
                            ),
                        },
                    });
                    continue;
                }
                "In" => Op::In(set()),
                "NotIn" => Op::NotIn(set()),
                "Exists" => Op::Exists,
                "DoesNotExist" => Op::DoesNotExist,
                other => {
                    problems.push(SelectorProblem {
                        field: field("operator"),
                        message: Text {
                            en: format!(
                                "operator {other:?} on key {:?} is not one of In, NotIn, Exists, DoesNotExist",
                                expr.key
                            ),
                            zh: format!(
                                "键 {:?} 上的运算符 {other:?} 无效，只能是 In、NotIn、Exists、DoesNotExist 之一",
                                expr.key
                            ),
                        },
                    });
                    continue;
                }
            };
            requirements.push(Requirement {
                space: Space::Label,
                key: expr.key.clone(),
                op,
            });
        }
        if problems.is_empty() {
            Ok(LabelSelectorMatcher { requirements })
        } else {
            Err(problems)
        }
    }

    /// Whether `compile` would accept the selector, without writing any
    /// message or building the matcher.
    pub fn is_valid(selector: &LabelSelector) -> bool {
        let labels_ok =
            selector.match_labels.iter().flatten().all(|(k, v)| {
                label_key_problem(k).is_none() && label_value_problem(k, v).is_none()
            });
        let expressions_ok = selector.match_expressions.iter().flatten().all(|e| {
            let values = e.values.as_deref().unwrap_or_default();
            let op_ok = match e.operator.as_str() {
                "In" | "NotIn" => !values.is_empty(),
                "Exists" | "DoesNotExist" => values.is_empty(),
                _ => false,
            };
            op_ok
                && label_key_problem(&e.key).is_none()
                && values
                    .iter()
                    .all(|v| label_value_problem(&e.key, v).is_none())
        });
        labels_ok && expressions_ok
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

/// Longest label name (the part after any prefix) and label value.
const MAX_LABEL_NAME: usize = 63;
/// Longest DNS-1123 subdomain (a label key's prefix).
const MAX_SUBDOMAIN: usize = 253;

/// `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`: a label name, or a
/// non-empty label value.
fn is_label_token(s: &str) -> bool {
    let b = s.as_bytes();
    match (b.first(), b.last()) {
        (Some(f), Some(l)) => {
            f.is_ascii_alphanumeric()
                && l.is_ascii_alphanumeric()
                && b.iter()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
        }
        _ => false,
    }
}

/// A lowercase RFC 1123 subdomain: dot-separated labels of `[a-z0-9-]`,
/// each starting and ending alphanumeric.
fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.split('.').all(|part| {
            let b = part.as_bytes();
            match (b.first(), b.last()) {
                (Some(f), Some(l)) => {
                    (f.is_ascii_lowercase() || f.is_ascii_digit())
                        && (l.is_ascii_lowercase() || l.is_ascii_digit())
                        && b.iter()
                            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
                }
                _ => false,
            }
        })
}

const NAME_RULE_EN: &str = "a label name must be 63 characters or fewer, consist of alphanumeric characters, '-', '_' or '.', and start and end with an alphanumeric character (e.g. app, my.name, 123-abc)";
const NAME_RULE_ZH: &str = "标签名不超过 63 个字符，只能包含字母、数字、'-'、'_' 或 '.'，且必须以字母或数字开头和结尾（例如 app、my.name、123-abc）";

/// Why `key` is not a label key the API server accepts (a qualified name:
/// an optional DNS-subdomain prefix of at most 253 characters and `/`,
/// then a name of at most 63 characters), or None when it is one.
pub(crate) fn label_key_problem(key: &str) -> Option<Text> {
    let bad = |en: String, zh: String| {
        Some(Text {
            en: format!("{key:?} is not a valid label key: {en}"),
            zh: format!("{key:?} 不是有效的标签键：{zh}"),
        })
    };
    let (prefix, name) = match key.split_once('/') {
        None => (None, key),
        Some((_, name)) if name.contains('/') => {
            return bad(
                "a key is a name with an optional DNS subdomain prefix and one '/' (e.g. example.com/name)".into(),
                "标签键由名称和可选的 DNS 子域名前缀加一个 '/' 组成（例如 example.com/name）".into(),
            );
        }
        Some((prefix, name)) => (Some(prefix), name),
    };
    if let Some(prefix) = prefix {
        if prefix.is_empty() {
            return bad(
                "the prefix before '/' is empty".into(),
                "'/' 之前的前缀为空".into(),
            );
        }
        if prefix.len() > MAX_SUBDOMAIN {
            return bad(
                format!(
                    "the prefix is {} characters long; at most {MAX_SUBDOMAIN} are allowed",
                    prefix.len()
                ),
                format!(
                    "前缀长 {} 个字符，最多允许 {MAX_SUBDOMAIN} 个",
                    prefix.len()
                ),
            );
        }
        if !is_dns_subdomain(prefix) {
            return bad(
                format!(
                    "the prefix {prefix:?} must be a lowercase DNS subdomain (lowercase letters, digits, '-' and '.', starting and ending with a letter or digit)"
                ),
                format!(
                    "前缀 {prefix:?} 必须是小写的 DNS 子域名（小写字母、数字、'-' 和 '.'，以字母或数字开头和结尾）"
                ),
            );
        }
    }
    if name.is_empty() {
        return bad("the name part is empty".into(), "名称部分为空".into());
    }
    if name.len() > MAX_LABEL_NAME || !is_label_token(name) {
        return bad(NAME_RULE_EN.into(), NAME_RULE_ZH.into());
    }
    None
}

/// Why `value` (of label `key`) is not a label value the API server
/// accepts (empty, or at most 63 characters of `[A-Za-z0-9._-]` starting
/// and ending alphanumeric), or None when it is one.
pub(crate) fn label_value_problem(key: &str, value: &str) -> Option<Text> {
    if value.is_empty() || (value.len() <= MAX_LABEL_NAME && is_label_token(value)) {
        return None;
    }
    Some(Text {
        en: format!(
            "{value:?} (for key {key}) is not a valid label value: a label value must be empty or 63 characters or fewer, consist of alphanumeric characters, '-', '_' or '.', and start and end with an alphanumeric character"
        ),
        zh: format!(
            "{value:?}（键 {key}）不是有效的标签值：标签值可以为空，或不超过 63 个字符，只能包含字母、数字、'-'、'_' 或 '.'，且以字母或数字开头和结尾"
        ),
    })
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
    fn node_names_are_the_intersection_of_name_pins() {
        let name = |op: Op| Requirement {
            space: Space::Field,
            key: NODE_NAME_FIELD.into(),
            op,
        };
        let set = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
        let names = |c: &Conjunction| {
            c.node_names()
                .map(|n| n.into_iter().cloned().collect::<Vec<_>>())
        };
        // The DaemonSet controller's pin, and spec.nodeName beside it.
        let c = Conjunction::new(&[name(Op::In(set(&["a"])))]);
        assert_eq!(names(&c), Some(vec!["a".to_string()]));
        let c = Conjunction::new(&[name(Op::In(set(&["a"]))), name(Op::In(set(&["a", "b"])))]);
        assert_eq!(names(&c), Some(vec!["a".to_string()]));
        let c = Conjunction::new(&[name(Op::In(set(&["a"]))), name(Op::In(set(&["b"])))]);
        assert_eq!(names(&c), Some(vec![]));
        assert!(c.unsatisfiable());
        let c = Conjunction::new(&[name(Op::In(set(&["a", "b"]))), name(Op::NotIn(set(&["b"])))]);
        assert_eq!(names(&c), Some(vec!["a".to_string()]));
        // NotIn alone pins nothing; a label of that key is not a name.
        assert_eq!(
            names(&Conjunction::new(&[name(Op::NotIn(set(&["a"])))])),
            None
        );
        let label = Requirement::label_eq(NODE_NAME_FIELD, "a");
        assert_eq!(names(&Conjunction::new(&[label])), None);
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
    fn label_keys_and_values_are_validated_like_the_api_server() {
        for good in [
            "app",
            "a",
            "A.b-c_d9",
            "example.com/name",
            "residencyguard.io/data-class",
            "kubernetes.io/metadata.name",
        ] {
            assert_eq!(label_key_problem(good), None, "{good}");
        }
        let long_name = "a".repeat(64);
        let long_prefix = format!("{}/x", "a".repeat(254));
        for bad in [
            "bad key!",
            "",
            "/name",
            "example.com/",
            "a/b/c",
            "Example.com/name",
            "-app",
            "app-",
            "exa_mple.com/x",
            long_name.as_str(),
            long_prefix.as_str(),
        ] {
            let why = label_key_problem(bad).unwrap_or_else(|| panic!("{bad:?} accepted"));
            assert!(why.en.contains("is not a valid label key"), "{}", why.en);
            assert!(why.zh.contains("不是有效的标签键"), "{}", why.zh);
        }
        assert_eq!(label_value_problem("k", ""), None);
        assert_eq!(label_value_problem("k", "v1.2_3-x"), None);
        assert!(label_value_problem("k", "has space").is_some());
        assert!(label_value_problem("k", &"v".repeat(64)).is_some());
        assert!(label_value_problem("k", "-v").is_some());
    }

    #[test]
    fn every_selector_problem_is_reported_with_its_field() {
        let sel: LabelSelector = serde_json::from_value(serde_json::json!({
            "matchLabels": {"bad key!": "x", "ok": "bad value!"},
            "matchExpressions": [
                {"key": "env", "operator": "In", "values": []},
                {"key": "tier", "operator": "Exists", "values": ["a"]},
                {"key": "k", "operator": "Matches", "values": ["a"]},
                {"key": "k8s.io/", "operator": "In", "values": ["ok", "not ok"]}
            ]
        }))
        .unwrap();
        let problems = LabelSelectorMatcher::compile(&sel).unwrap_err();
        let fields: Vec<&str> = problems.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "matchLabels",
                "matchLabels",
                "matchExpressions[0].values",
                "matchExpressions[1].values",
                "matchExpressions[2].operator",
                "matchExpressions[3].key",
                "matchExpressions[3].values[1]",
            ]
        );
        assert!(problems[0].message.en.contains("\"bad key!\""));
        assert!(LabelSelectorMatcher::compile_lenient(&sel).is_none());
        assert!(!LabelSelectorMatcher::is_valid(&sel));
        assert!(LabelSelectorMatcher::is_valid(&LabelSelector::default()));
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
