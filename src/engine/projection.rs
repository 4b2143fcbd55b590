//! Each policy kind projected into the layer model (`layers.rs`). Read from
//! the object's JSON, field by field, after the upstream definitions:
//!
//! - Cilium `cilium.io/v2` CiliumNetworkPolicy and
//!   CiliumClusterwideNetworkPolicy (`spec` or `specs`: `endpointSelector`,
//!   `egress`, `egressDeny`, `enableDefaultDeny`);
//! - Calico `crd.projectcalico.org/v1` NetworkPolicy, GlobalNetworkPolicy
//!   (`selector`, `namespaceSelector`, `serviceAccountSelector`, `order`,
//!   `tier`, `types`, `egress`), Tier (`order`, `defaultAction`), and
//!   NetworkSet and GlobalNetworkSet (labels, `nets`,
//!   `allowedEgressDomains`), which a rule's destination selector selects;
//! - `policy.networking.k8s.io/v1alpha1` AdminNetworkPolicy and
//!   BaselineAdminNetworkPolicy (`priority`, `subject`, `egress`).
//!
//! What cannot be read fails closed: an unreadable subject makes the
//! policy's reach unknown for every pod it might select; an unreadable
//! destination makes an Allow reach everything and a Deny or Pass close
//! nothing.

use std::sync::Arc;

use ipnet::IpNet;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use serde_json::Value;

use super::calico_selector::CalicoSelector;
use super::ipset::{IpSet, parse_cidr, parse_net};
use super::layers::{
    CalicoTier, EVERYWHERE, LayerKind, LayerPolicy, LayerRule, NetworkSet, RuleAction,
    SetDestination, Subject, Unknown,
};
use super::selector::LabelSelectorMatcher;

fn unknown(en: impl Into<String>, zh: impl Into<String>) -> Unknown {
    Unknown {
        en: en.into().into(),
        zh: zh.into().into(),
    }
}

/// A rule whose destination cannot be known offline (`problem` says why),
/// as every projection reports it.
fn unreadable_destination(field: &str, problem: &str) -> Unknown {
    unknown(
        format!("{field}: {problem}"),
        format!("{field}：{problem}（无法离线判断其可达地址）"),
    )
}

fn v4_all() -> IpSet {
    IpSet::from_nets([IpNet::V4(ipnet::Ipv4Net::default())])
}

fn v6_all() -> IpSet {
    IpSet::from_nets([IpNet::V6(ipnet::Ipv6Net::default())])
}

/// A non-empty array at `key`, or None (absent, null or `[]`).
fn list<'a>(obj: &'a Value, key: &str) -> Option<&'a Vec<Value>> {
    obj.get(key)
        .and_then(Value::as_array)
        .filter(|a| !a.is_empty())
}

fn strings(obj: &Value, key: &str) -> Vec<String> {
    list(obj, key)
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect()
}

fn meta(obj: &Value) -> (Option<String>, String) {
    let m = obj.get("metadata");
    let s = |k: &str| {
        m.and_then(|m| m.get(k))
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    (s("namespace"), s("name").unwrap_or_default())
}

fn reference(kind: LayerKind, namespace: Option<&str>, name: &str) -> String {
    match namespace {
        Some(ns) => format!("{} {ns}/{name}", kind.as_str()),
        None => format!("{} {name}", kind.as_str()),
    }
}

/// A label selector from JSON, compiled; Err with the reason.
fn label_selector(
    v: &Value,
    map_key: impl Fn(&str) -> Result<String, String>,
) -> Result<LabelSelectorMatcher, String> {
    let mut sel: LabelSelector =
        serde_json::from_value(v.clone()).map_err(|e| format!("not a label selector: {e}"))?;
    if let Some(labels) = sel.match_labels.take() {
        let mut out = std::collections::BTreeMap::new();
        for (k, val) in labels {
            out.insert(map_key(&k)?, val);
        }
        sel.match_labels = Some(out);
    }
    for e in sel.match_expressions.iter_mut().flatten() {
        e.key = map_key(&e.key)?;
    }
    LabelSelectorMatcher::compile(&sel).map_err(|problems| {
        problems
            .first()
            .map(|p| format!("{}: {}", p.field, p.message.en))
            .unwrap_or_default()
    })
}

/// Cilium label keys: `k8s:` and `any:` read the pod's labels; another
/// source (`reserved:`, `cidr:`...) is no pod label.
fn cilium_key(key: &str) -> Result<String, String> {
    match key.split_once(':') {
        Some(("k8s" | "any", rest)) => Ok(rest.to_string()),
        Some((source, _)) if !source.contains('/') && !source.contains('.') => Err(format!(
            "label key {key:?} has source {source:?}, which is not a pod label"
        )),
        _ => Ok(key.to_string()),
    }
}

/// The object's namespace as its kind scopes it (`default` when a
/// namespaced kind omits it; none for a cluster-wide kind) and its name.
fn scoped_meta(obj: &Value, kind: LayerKind) -> (Option<String>, String) {
    let (namespace, name) = meta(obj);
    let namespace = kind
        .namespaced_layer()
        .then(|| namespace.unwrap_or_else(|| "default".into()));
    (namespace, name)
}

// ---------------------------------------------------------------- Cilium

/// A CiliumNetworkPolicy or CiliumClusterwideNetworkPolicy: one projected
/// policy per entry of `spec` and `specs`.
pub fn cilium_policies(obj: &Value, clusterwide: bool) -> Vec<LayerPolicy> {
    let kind = if clusterwide {
        LayerKind::CiliumClusterwideNetworkPolicy
    } else {
        LayerKind::CiliumNetworkPolicy
    };
    let (namespace, name) = scoped_meta(obj, kind);
    let mut specs: Vec<(String, &Value)> = Vec::new();
    if let Some(s) = obj.get("spec").filter(|s| s.is_object()) {
        specs.push(("spec".into(), s));
    }
    for (i, s) in obj
        .get("specs")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        specs.push((format!("specs[{i}]"), s));
    }
    let base = reference(kind, namespace.as_deref(), &name);
    specs
        .into_iter()
        .map(|(at, spec)| {
            let reference = if at == "spec" {
                base.clone()
            } else {
                format!("{base} {at}")
            };
            cilium_spec(kind, namespace.clone(), &name, reference, &at, spec)
        })
        .collect()
}

fn cilium_spec(
    kind: LayerKind,
    namespace: Option<String>,
    name: &str,
    reference: String,
    at: &str,
    spec: &Value,
) -> LayerPolicy {
    let subject = match spec.get("endpointSelector") {
        // A host policy (nodeSelector) selects nodes, not pods.
        None => Subject::Calico {
            namespace: None,
            selector: CalicoSelector::Global,
            namespace_selector: None,
        },
        Some(sel) => match label_selector(sel, cilium_key) {
            Ok(m) => Subject::Labels {
                namespace: namespace.clone(),
                namespaces: None,
                pods: Some(m),
                cilium_view: true,
            },
            Err(e) => Subject::Unreadable(unknown(
                format!("{at}.endpointSelector cannot be read ({e})"),
                format!("{at}.endpointSelector 无法解析（{e}）"),
            )),
        },
    };
    let mut rules = Vec::new();
    for (i, r) in spec
        .get("egress")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        rules.push(cilium_rule(
            r,
            RuleAction::Allow,
            i,
            &format!("{at}.egress[{i}]"),
        ));
    }
    for (i, r) in spec
        .get("egressDeny")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        rules.push(cilium_rule(
            r,
            RuleAction::Deny,
            i,
            &format!("{at}.egressDeny[{i}]"),
        ));
    }
    let has_egress = spec
        .get("egress")
        .and_then(Value::as_array)
        .is_some_and(|a| !a.is_empty())
        || spec
            .get("egressDeny")
            .and_then(Value::as_array)
            .is_some_and(|a| !a.is_empty());
    let default_deny = has_egress
        && spec
            .pointer("/enableDefaultDeny/egress")
            .and_then(Value::as_bool)
            .unwrap_or(true);
    LayerPolicy {
        kind,
        namespace,
        name: name.to_string(),
        reference: reference.into(),
        subject,
        egress: has_egress,
        default_deny,
        order: None,
        tier: None,
        rules,
    }
}

/// Cilium entities: `world` (and `all`) are every address outside the
/// cluster; the others name in-cluster or node-local identities.
fn cilium_entity(name: &str) -> Result<Option<IpSet>, String> {
    match name {
        "world" | "all" => Ok(Some((**EVERYWHERE).clone())),
        "world-ipv4" => Ok(Some(v4_all())),
        "world-ipv6" => Ok(Some(v6_all())),
        "cluster" | "host" | "remote-node" | "kube-apiserver" | "health" | "init" | "ingress"
        | "unmanaged" | "none" => Ok(None),
        other => Err(format!("entity {other:?} is not one Cilium defines")),
    }
}

/// A Cilium CIDR: a CIDR or a bare address.
fn cilium_cidr(text: &str) -> Option<IpNet> {
    parse_cidr(text).or_else(|| parse_net(text.trim()).ok())
}

fn cilium_rule(r: &Value, action: RuleAction, index: usize, field: &str) -> LayerRule {
    let mut nets = IpSet::new();
    let mut everything = false;
    let mut texts: Vec<String> = Vec::new();
    let mut problem: Option<String> = None;
    let mut l3 = false;
    for c in strings(r, "toCIDR") {
        l3 = true;
        texts.push(format!("toCIDR {c}"));
        match cilium_cidr(&c) {
            Some(n) => nets.insert_net(n),
            None => problem = Some(format!("toCIDR {c:?} is not a CIDR")),
        }
    }
    for set in list(r, "toCIDRSet").into_iter().flatten() {
        l3 = true;
        if set.get("cidrGroupRef").is_some() || set.get("cidrGroupSelector").is_some() {
            problem = Some("toCIDRSet names a CiliumCIDRGroup, which is not read".into());
            texts.push("toCIDRSet cidrGroup".into());
            continue;
        }
        let cidr = set.get("cidr").and_then(Value::as_str).unwrap_or_default();
        let except = strings(set, "except");
        texts.push(if except.is_empty() {
            format!("toCIDRSet {cidr}")
        } else {
            format!("toCIDRSet {cidr} except {}", except.join(", "))
        });
        let Some(net) = cilium_cidr(cidr) else {
            problem = Some(format!("toCIDRSet cidr {cidr:?} is not a CIDR"));
            continue;
        };
        let mut block = IpSet::from_nets([net]);
        for e in &except {
            match cilium_cidr(e) {
                Some(e) => block = block.subtract(&IpSet::from_nets([e])),
                None => problem = Some(format!("toCIDRSet except {e:?} is not a CIDR")),
            }
        }
        nets = nets.union(&block);
    }
    for e in strings(r, "toEntities") {
        l3 = true;
        texts.push(format!("toEntities {e}"));
        match cilium_entity(&e) {
            Ok(Some(set)) => {
                everything |= set == **EVERYWHERE;
                nets = nets.union(&set);
            }
            Ok(None) => {}
            Err(why) => problem = Some(why),
        }
    }
    for key in ["toEndpoints", "toNodes"] {
        if list(r, key).is_some() {
            l3 = true;
            texts.push(key.into());
        }
    }
    for (key, why) in [
        (
            "toServices",
            "toServices reaches a Service's endpoints, which are not read (a Service without a selector may point outside the cluster)",
        ),
        (
            "toGroups",
            "toGroups names cloud-provider groups, whose addresses are not read",
        ),
    ] {
        if list(r, key).is_some() {
            l3 = true;
            texts.push(key.into());
            problem = Some(why.into());
        }
    }
    let mut domains = Vec::new();
    for f in list(r, "toFQDNs").into_iter().flatten() {
        l3 = true;
        let name = f
            .get("matchName")
            .or_else(|| f.get("matchPattern"))
            .and_then(Value::as_str)
            .unwrap_or("*");
        texts.push(format!("toFQDNs {name}"));
        domains.push(name.to_ascii_lowercase().trim_end_matches('.').into());
    }
    let partial = list(r, "toPorts").is_some() || list(r, "icmps").is_some();
    if !l3 && partial {
        // Ports alone: those ports to every destination.
        nets = (**EVERYWHERE).clone();
        everything = true;
        texts.push("toPorts only (every destination)".into());
    }
    LayerRule {
        action,
        nets: Arc::new(nets),
        everything,
        partial,
        domains,
        unknown: problem.map(|p| unreadable_destination(field, &p)),
        index,
        field: field.into(),
        text: texts.join(", ").into(),
        sets: None,
    }
}

// ---------------------------------------------------------------- Calico

/// A Calico NetworkPolicy (namespaced) or GlobalNetworkPolicy.
pub fn calico_policy(obj: &Value, global: bool) -> LayerPolicy {
    let kind = if global {
        LayerKind::GlobalNetworkPolicy
    } else {
        LayerKind::CalicoNetworkPolicy
    };
    let (namespace, name) = scoped_meta(obj, kind);
    let reference = reference(kind, namespace.as_deref(), &name);
    let empty = Value::Null;
    let spec = obj.get("spec").unwrap_or(&empty);
    let parse = |key: &str| -> Result<Option<CalicoSelector>, String> {
        match spec.get(key).and_then(Value::as_str) {
            None => Ok(None),
            Some(text) => CalicoSelector::parse(text)
                .map(Some)
                .map_err(|e| format!("spec.{key} {text:?}: {e}")),
        }
    };
    let subject = (|| {
        if spec
            .get("serviceAccountSelector")
            .and_then(Value::as_str)
            .is_some_and(|s| !s.trim().is_empty())
        {
            return Err(
                "spec.serviceAccountSelector selects by service account, which is not read"
                    .to_string(),
            );
        }
        let selector = parse("selector")?.unwrap_or(CalicoSelector::All);
        let namespace_selector = if global {
            parse("namespaceSelector")?
        } else {
            None
        };
        Ok(Subject::Calico {
            namespace: namespace.clone(),
            selector,
            namespace_selector,
        })
    })()
    .unwrap_or_else(|e: String| {
        Subject::Unreadable(unknown(
            format!("{e}; which pods it selects is unknown"),
            format!("{e}；无法确定其选中哪些 Pod"),
        ))
    });
    let egress_rules = spec.get("egress").and_then(Value::as_array);
    let egress = match spec.get("types").and_then(Value::as_array) {
        Some(types) if !types.is_empty() => types.iter().any(|t| t.as_str() == Some("Egress")),
        _ => egress_rules.is_some_and(|e| !e.is_empty()),
    };
    let rules = egress_rules
        .into_iter()
        .flatten()
        .enumerate()
        .map(|(i, r)| calico_rule(r, i, namespace.as_deref()))
        .collect();
    LayerPolicy {
        kind,
        namespace,
        name,
        reference: reference.into(),
        subject,
        egress,
        default_deny: egress,
        order: spec.get("order").and_then(Value::as_f64),
        tier: spec.get("tier").and_then(Value::as_str).map(str::to_string),
        rules,
    }
}

fn non_empty(v: Option<&Value>) -> bool {
    match v {
        None | Some(Value::Null) => false,
        Some(Value::String(s)) => !s.trim().is_empty(),
        Some(Value::Array(a)) => !a.is_empty(),
        Some(Value::Object(o)) => !o.is_empty(),
        Some(_) => true,
    }
}

fn calico_rule(r: &Value, index: usize, policy_namespace: Option<&str>) -> LayerRule {
    let field = format!("spec.egress[{index}]");
    let mut problem: Option<String> = None;
    let action = match r.get("action").and_then(Value::as_str) {
        Some("Allow") => RuleAction::Allow,
        Some("Deny") => RuleAction::Deny,
        Some("Pass") => RuleAction::Pass,
        Some("Log") => RuleAction::Log,
        other => {
            problem = Some(format!("action {other:?} is not Allow, Deny, Pass or Log"));
            RuleAction::Allow
        }
    };
    let empty = Value::Null;
    let dst = r.get("destination").unwrap_or(&empty);
    let mut texts = Vec::new();
    // Only part of the traffic: protocol, ICMP, HTTP, ports, or a source
    // condition (a Deny or Pass then closes nothing for sure).
    let partial = ["protocol", "notProtocol", "icmp", "notICMP", "http"]
        .iter()
        .any(|k| non_empty(r.get(*k)))
        || non_empty(r.get("source"))
        || non_empty(dst.get("ports"))
        || non_empty(dst.get("notPorts"));
    let nets_text = strings(dst, "nets");
    let not_nets = strings(dst, "notNets");
    let parse_all = |items: &[String], what: &str, problem: &mut Option<String>| {
        let mut out = Vec::new();
        for t in items {
            match parse_net(t.trim()) {
                Ok(n) => out.push(n),
                Err(_) => *problem = Some(format!("destination.{what} {t:?} is not a CIDR")),
            }
        }
        out
    };
    let mut selector_at = |key: &str, problem: &mut Option<String>| {
        let text = dst.get(key).and_then(Value::as_str)?;
        texts.push(format!("{key} {text}"));
        match CalicoSelector::parse(text) {
            Ok(sel) => Some(sel),
            Err(e) => {
                *problem = Some(format!("destination.{key} {text:?}: {e}"));
                None
            }
        }
    };
    let selector = selector_at("selector", &mut problem);
    let namespace_selector = selector_at("namespaceSelector", &mut problem);
    let not_selector = selector_at("notSelector", &mut problem);
    let service_accounts = match dst.get("serviceAccounts").filter(|v| non_empty(Some(v))) {
        None => None,
        Some(sa) => {
            texts.push("serviceAccounts".into());
            service_account_selector(sa).unwrap_or_else(|e| {
                problem = Some(format!("destination.serviceAccounts: {e}"));
                None
            })
        }
    };
    if non_empty(dst.get("services")) {
        problem =
            Some("destination.services reaches a Service's endpoints, which are not read".into());
    }
    if !nets_text.is_empty() {
        texts.push(format!("nets {}", nets_text.join(", ")));
    }
    if !not_nets.is_empty() {
        texts.push(format!("notNets {}", not_nets.join(", ")));
    }
    let domains: Vec<_> = strings(dst, "domains")
        .into_iter()
        .map(|d| d.to_ascii_lowercase().trim_end_matches('.').into())
        .collect();
    if !domains.is_empty() {
        // Domains restrict the destination to those names.
        texts.push(format!("domains {}", strings(dst, "domains").join(", ")));
    }
    // Calico's one destination selector (libcalico-go, rules.go): the
    // scope is the namespaceSelector (keys read as the namespace's `pcns.`
    // labels, all() as every namespaced endpoint, global() as every
    // non-namespaced one), else the policy's own namespace, else (a
    // GlobalNetworkPolicy) none; it applies once any selector field is set.
    // In `selector` and `notSelector`, global() matches like all().
    let calico_global =
        |s: CalicoSelector| s.rewritten("", &CalicoSelector::All, &CalicoSelector::All);
    let namespaced = CalicoSelector::Has("projectcalico.org/namespace".into());
    let scope = match &namespace_selector {
        Some(ns) => Some(ns.rewritten(
            "pcns.",
            &namespaced,
            &CalicoSelector::Not(Box::new(namespaced.clone())),
        )),
        None => policy_namespace
            .map(|ns| CalicoSelector::Eq("projectcalico.org/namespace".into(), ns.into())),
    };
    let own = match (service_accounts, selector.map(calico_global)) {
        (Some(a), Some(b)) => Some(a.and(b)),
        (a, b) => a.or(b),
    };
    let positive = match scope {
        Some(scope) if own.is_some() || not_selector.is_some() || namespace_selector.is_some() => {
            Some(match own {
                Some(own) => scope.and(own),
                None => scope,
            })
        }
        _ => own,
    };
    let destination = SetDestination {
        selector: positive,
        not_selector: not_selector.map(calico_global),
        nets: (!nets_text.is_empty())
            .then(|| IpSet::from_nets(parse_all(&nets_text, "nets", &mut problem))),
        not_nets: IpSet::from_nets(parse_all(&not_nets, "notNets", &mut problem)),
        ip_version: r
            .get("ipVersion")
            .and_then(Value::as_u64)
            .and_then(|v| u8::try_from(v).ok()),
        domains_only: !domains.is_empty(),
    };
    let selects_sets = destination.selector.is_some() || destination.not_selector.is_some();
    let mut rule = LayerRule {
        action,
        nets: Arc::new(IpSet::new()),
        everything: false,
        partial,
        domains,
        unknown: problem.map(|p| unreadable_destination(&field, &p)),
        index,
        field: field.into(),
        text: "".into(),
        sets: None,
    };
    // What it reaches when no network set is selected.
    rule = destination.resolve(&rule, &[]);
    if rule.everything {
        texts.push("no destination (every address)".into());
    }
    rule.text = texts.join(", ").into();
    if selects_sets && rule.unknown.is_none() {
        rule.sets = Some(Arc::new(destination));
    }
    rule
}

/// `destination.serviceAccounts` as the selector Calico builds from it:
/// `names` as the `projectcalico.org/serviceaccount` label, `selector` on
/// the service account's labels (`pcsa.` keys); None when neither is set.
fn service_account_selector(sa: &Value) -> Result<Option<CalicoSelector>, String> {
    let names = strings(sa, "names");
    let by_name = (!names.is_empty())
        .then(|| CalicoSelector::In("projectcalico.org/serviceaccount".into(), names));
    let by_labels = match sa.get("selector").and_then(Value::as_str) {
        Some(text) if !text.trim().is_empty() => Some(
            CalicoSelector::parse(text)
                .map_err(|e| format!("selector {text:?}: {e}"))?
                .rewritten("pcsa.", &CalicoSelector::All, &CalicoSelector::All),
        ),
        _ => None,
    };
    Ok(match (by_labels, by_name) {
        (Some(a), Some(b)) => Some(a.and(b)),
        (a, b) => a.or(b),
    })
}

/// A Calico NetworkSet (namespaced, `global` false) or GlobalNetworkSet:
/// its labels, `spec.nets` and `spec.allowedEgressDomains`. An entry of
/// `spec.nets` that is not a CIDR (Calico skips it with a warning) makes
/// the set unreadable, so a rule selecting it fails closed.
pub fn calico_network_set(obj: &Value, global: bool) -> NetworkSet {
    let (namespace, name) = meta(obj);
    let namespace = (!global).then(|| namespace.unwrap_or_else(|| "default".into()));
    let labels = obj
        .pointer("/metadata/labels")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string())))
                .collect()
        })
        .unwrap_or_default();
    let empty = Value::Null;
    let spec = obj.get("spec").unwrap_or(&empty);
    let mut nets = IpSet::new();
    let mut problem = None;
    for text in strings(spec, "nets") {
        match parse_cidr(&text).or_else(|| parse_net(text.trim()).ok()) {
            Some(n) => nets.insert_net(n),
            None => problem = Some(format!("spec.nets entry {text:?} is not a CIDR")),
        }
    }
    if spec
        .get("nets")
        .is_some_and(|n| !n.is_array() && !n.is_null())
    {
        problem = Some("spec.nets is not a list".into());
    }
    NetworkSet {
        namespace,
        name,
        labels,
        nets,
        domains: strings(spec, "allowedEgressDomains")
            .into_iter()
            .map(|d| d.to_ascii_lowercase().trim_end_matches('.').into())
            .collect(),
        problem,
    }
}

/// A Calico Tier: its order and default action.
pub fn calico_tier(obj: &Value) -> (String, CalicoTier) {
    let (_, name) = meta(obj);
    let spec = obj.get("spec");
    (
        name,
        CalicoTier {
            order: spec.and_then(|s| s.get("order")).and_then(Value::as_f64),
            default_pass: spec
                .and_then(|s| s.get("defaultAction"))
                .and_then(Value::as_str)
                == Some("Pass"),
        },
    )
}

// ------------------------------------------- AdminNetworkPolicy, Baseline

/// An AdminNetworkPolicy (`baseline` false) or BaselineAdminNetworkPolicy.
pub fn admin_policy(obj: &Value, baseline: bool) -> LayerPolicy {
    let kind = if baseline {
        LayerKind::BaselineAdminNetworkPolicy
    } else {
        LayerKind::AdminNetworkPolicy
    };
    let (_, name) = meta(obj);
    let reference = reference(kind, None, &name);
    let empty = Value::Null;
    let spec = obj.get("spec").unwrap_or(&empty);
    let subject = admin_subject(spec.get("subject"));
    let rules: Vec<LayerRule> = spec
        .get("egress")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
        .map(|(i, r)| admin_rule(r, i))
        .collect();
    LayerPolicy {
        kind,
        namespace: None,
        name,
        reference: reference.into(),
        subject,
        egress: !rules.is_empty(),
        default_deny: false,
        order: if baseline {
            None
        } else {
            spec.get("priority").and_then(Value::as_f64)
        },
        tier: None,
        rules,
    }
}

fn admin_subject(subject: Option<&Value>) -> Subject {
    let unreadable = |e: String| {
        Subject::Unreadable(unknown(
            format!("spec.subject cannot be read ({e}); which pods it selects is unknown"),
            format!("spec.subject 无法解析（{e}）；无法确定其选中哪些 Pod"),
        ))
    };
    let keep = |k: &str| Ok::<String, String>(k.to_string());
    let Some(subject) = subject else {
        return unreadable("no subject".into());
    };
    if let Some(ns) = subject.get("namespaces") {
        return match label_selector(ns, keep) {
            Ok(m) => Subject::Labels {
                namespace: None,
                namespaces: Some(m),
                pods: None,
                cilium_view: false,
            },
            Err(e) => unreadable(e),
        };
    }
    if let Some(pods) = subject.get("pods") {
        let ns = pods
            .get("namespaceSelector")
            .map(|s| label_selector(s, keep))
            .transpose();
        let ps = pods
            .get("podSelector")
            .map(|s| label_selector(s, keep))
            .transpose();
        return match (ns, ps) {
            (Ok(namespaces), Ok(pods)) => Subject::Labels {
                namespace: None,
                namespaces,
                pods,
                cilium_view: false,
            },
            (Err(e), _) | (_, Err(e)) => unreadable(e),
        };
    }
    unreadable("neither namespaces nor pods".into())
}

fn admin_rule(r: &Value, index: usize) -> LayerRule {
    let field = format!("spec.egress[{index}]");
    let mut problem = None;
    let action = match r.get("action").and_then(Value::as_str) {
        Some("Allow") => RuleAction::Allow,
        Some("Deny") => RuleAction::Deny,
        Some("Pass") => RuleAction::Pass,
        other => {
            problem = Some(format!("action {other:?} is not Allow, Deny or Pass"));
            RuleAction::Allow
        }
    };
    let mut nets = IpSet::new();
    let mut texts = Vec::new();
    let mut domains = Vec::new();
    for peer in r.get("to").and_then(Value::as_array).into_iter().flatten() {
        for c in strings(peer, "networks") {
            texts.push(format!("networks {c}"));
            match parse_cidr(&c) {
                Some(n) => nets.insert_net(n),
                None => problem = Some(format!("networks {c:?} is not a CIDR")),
            }
        }
        for d in strings(peer, "domainNames") {
            texts.push(format!("domainNames {d}"));
            domains.push(d.to_ascii_lowercase().trim_end_matches('.').into());
        }
        for key in ["namespaces", "pods", "nodes"] {
            if peer.get(key).is_some() {
                texts.push(key.to_string());
            }
        }
    }
    LayerRule {
        action,
        nets: Arc::new(nets),
        everything: false,
        partial: non_empty(r.get("ports")),
        domains,
        unknown: problem.map(|p| unreadable_destination(&field, &p)),
        index,
        field: field.into(),
        text: texts.join(", ").into(),
        sets: None,
    }
}
