//! Packaging tests: the Helm chart (charts/residency-guard) lints, renders with
//! every supported values set, refuses invalid values through its schema, and
//! every rendered object says what it must: webhook rules, selectors and
//! exclusions, failurePolicy, pod security, RBAC (an exact list, so privilege
//! creep fails), probes, PDB, Service, CRD, environment per certificate mode.
//! The plain manifests in deploy/ must match the chart.
//!
//! Needs a real `helm`: `$HELM`, else `.tools/bin/helm` (scripts/install-tools.sh),
//! else PATH. Without one every test prints "skipped" and passes, except when
//! the `CI` environment variable is set: then a missing helm is a failure.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde::Deserialize;
use serde_json::{Value, json};

const CHART: &str = "charts/residency-guard";
const RELEASE: &str = "residency-guard";
const NS: &str = "residency-guard";
const LABEL: &str = "residencyguard.io/data-class";
const WORKLOADS: &str = "workloads.residencyguard.io";
const WORKLOADS_NS: &str = "workloads-in-labelled-namespaces.residencyguard.io";
const WORKLOAD_TEMPLATES: &str = "workload-templates.residencyguard.io";
const PODS_MOUNTING_CLAIMS: &str = "pods-mounting-claims.residencyguard.io";
const CLAIMS: &str = "claims.residencyguard.io";
const CLAIM_CLONES: &str = "claim-clones.residencyguard.io";
const NETWORKPOLICIES: &str = "networkpolicies.residencyguard.io";
const NETWORKPOLICY_DELETES: &str = "networkpolicy-deletes.residencyguard.io";
const EGRESS_LAYERS: &str = "egress-layers.residencyguard.io";
const EGRESS_LAYER_DELETES: &str = "egress-layer-deletes.residencyguard.io";
const NAMESPACES: &str = "namespaces.residencyguard.io";
const POLICIES: &str = "policies.residencyguard.io";
/// A base64 PEM CA for certificates.mode=existingSecret (content irrelevant).
macro_rules! ca_b64 {
    () => {
        "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCk1JSUJ0ZXN0Ci0tLS0tRU5EIENFUlRJRklDQVRFLS0tLS0K"
    };
}
const CA_B64: &str = ca_b64!();
const CA_ARG: &str = concat!("certificates.existingSecret.caBundle=", ca_b64!());
const NO_ARGS: &[&str] = &[];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn chart_dir() -> PathBuf {
    root().join(CHART)
}

/// The helm binary, or None (after saying so) when the tests should skip.
fn helm() -> Option<PathBuf> {
    let found = std::env::var_os("HELM")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
        .or_else(|| Some(root().join(".tools/bin/helm")).filter(|p| p.is_file()))
        .or_else(|| {
            std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
                .map(|dir| dir.join("helm"))
                .find(|p| p.is_file())
        });
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "helm not found and CI is set: run scripts/install-tools.sh (or set $HELM)"
        );
        println!("skipped: helm not found (run scripts/install-tools.sh)");
    }
    found
}

macro_rules! helm_or_skip {
    () => {
        match helm() {
            Some(h) => h,
            None => return,
        }
    };
}

fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

/// `helm template` with the given release, namespace and extra arguments.
/// Ok(objects) or Err(stderr).
fn try_render<S: AsRef<OsStr>>(
    helm: &Path,
    release: &str,
    ns: &str,
    args: &[S],
) -> Result<Vec<Value>, String> {
    let out = run(Command::new(helm)
        .arg("template")
        .arg(release)
        .arg(chart_dir())
        .args(["--namespace", ns])
        .args(args));
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let text = String::from_utf8(out.stdout).expect("helm output is UTF-8");
    Ok(parse_yaml_stream(&text))
}

fn parse_yaml_stream(text: &str) -> Vec<Value> {
    serde_norway::Deserializer::from_str(text)
        .map(|doc| Value::deserialize(doc).expect("rendered YAML parses"))
        .filter(|v| !v.is_null())
        .collect()
}

fn render<S: AsRef<OsStr> + std::fmt::Debug>(helm: &Path, args: &[S]) -> Vec<Value> {
    render_as(helm, RELEASE, NS, args)
}

fn render_as<S: AsRef<OsStr> + std::fmt::Debug>(
    helm: &Path,
    release: &str,
    ns: &str,
    args: &[S],
) -> Vec<Value> {
    try_render(helm, release, ns, args)
        .unwrap_or_else(|e| panic!("helm template {args:?} failed:\n{e}"))
}

/// The values sets every invariant is checked against: (name, args, failurePolicy).
fn values_sets() -> Vec<(&'static str, Vec<String>, &'static str)> {
    let sets: [(&str, &[&str], &str); 7] = [
        ("default", &[], "Fail"),
        (
            "certManager",
            &["--set", "certificates.mode=certManager"],
            "Fail",
        ),
        (
            "existingSecret",
            &[
                "--set",
                "certificates.mode=existingSecret",
                "--set",
                "certificates.existingSecret.name=my-webhook-tls",
                "--set",
                CA_ARG,
            ],
            "Fail",
        ),
        (
            "audit+monitoring",
            &[
                "--set",
                "audit.enabled=true",
                "--set",
                "metrics.serviceMonitor.enabled=true",
                "--set",
                "metrics.prometheusRule.enabled=true",
                "--set",
                "metrics.dashboard.enabled=true",
            ],
            "Fail",
        ),
        (
            "Ignore+noNetworkPolicy+zh-CN",
            &[
                "--set",
                "webhook.failurePolicy=Ignore",
                "--set",
                "networkPolicy.enabled=false",
                "--set",
                "lang=zh-CN",
            ],
            "Ignore",
        ),
        (
            "openReports",
            &["--set", "reports.kind=openReports"],
            "Fail",
        ),
        (
            "certManager+audit+timeout2",
            &[
                "--set",
                "certificates.mode=certManager",
                "--set",
                "audit.enabled=true",
                "--set",
                "webhook.timeoutSeconds=2",
            ],
            "Fail",
        ),
    ];
    sets.iter()
        .map(|(n, args, fp)| (*n, args.iter().map(|a| a.to_string()).collect(), *fp))
        .collect()
}

fn kind(o: &Value) -> &str {
    o["kind"].as_str().unwrap_or_default()
}

fn name(o: &Value) -> &str {
    o["metadata"]["name"].as_str().unwrap_or_default()
}

fn all<'a>(objs: &'a [Value], k: &str) -> Vec<&'a Value> {
    objs.iter().filter(|o| kind(o) == k).collect()
}

fn one<'a>(objs: &'a [Value], k: &str) -> &'a Value {
    let found = all(objs, k);
    assert_eq!(
        found.len(),
        1,
        "expected exactly one {k}, found {}",
        found.len()
    );
    found[0]
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .map(|s| s.as_str().expect("a string").to_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn container(objs: &[Value]) -> &Value {
    let containers = one(objs, "Deployment")["spec"]["template"]["spec"]["containers"]
        .as_array()
        .expect("containers");
    assert_eq!(containers.len(), 1, "one container");
    &containers[0]
}

/// The container's environment: name → value, or "fieldRef:<path>".
fn env(objs: &[Value]) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for e in container(objs)["env"].as_array().expect("env") {
        let n = e["name"].as_str().expect("env name").to_owned();
        let v = match (&e["value"], &e["valueFrom"]["fieldRef"]["fieldPath"]) {
            (Value::String(v), _) => v.clone(),
            (_, Value::String(p)) => format!("fieldRef:{p}"),
            other => panic!("env {n}: unexpected source {other:?}"),
        };
        assert!(out.insert(n.clone(), v).is_none(), "env {n} set twice");
    }
    out
}

fn webhook_config(objs: &[Value]) -> &Value {
    assert!(
        all(objs, "MutatingWebhookConfiguration").is_empty(),
        "no mutating webhooks"
    );
    one(objs, "ValidatingWebhookConfiguration")
}

fn webhook<'a>(objs: &'a [Value], entry: &str) -> &'a Value {
    webhook_config(objs)["webhooks"]
        .as_array()
        .expect("webhooks")
        .iter()
        .find(|w| w["name"] == entry)
        .unwrap_or_else(|| panic!("webhook entry {entry} missing"))
}

fn expressions(selector: &Value) -> Vec<&Value> {
    selector["matchExpressions"]
        .as_array()
        .map(|a| a.iter().collect())
        .unwrap_or_default()
}

fn has_label_exists(selector: &Value) -> bool {
    expressions(selector)
        .iter()
        .any(|e| e["key"] == LABEL && e["operator"] == "Exists")
}

fn match_conditions(w: &Value) -> BTreeMap<String, String> {
    w["matchConditions"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|c| {
                    (
                        c["name"].as_str().expect("name").to_owned(),
                        c["expression"].as_str().expect("expression").to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Every field path a CEL expression reads below `object` / `oldObject` must be
/// guarded by `has(...)` (metadata always exists): an evaluation error would
/// fall back to failurePolicy and refuse unrelated requests.
fn unguarded_paths(expr: &str) -> Vec<String> {
    let mut missing = Vec::new();
    for token in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.')) {
        let mut segments: Vec<&str> = token.split('.').collect();
        if !matches!(segments[0], "object" | "oldObject") {
            continue;
        }
        // A CEL macro called on a list (`.exists(v, ...)`) is not a field.
        if segments.len() > 1
            && matches!(
                segments[segments.len() - 1],
                "exists" | "all" | "exists_one" | "map" | "filter"
            )
        {
            segments.pop();
        }
        for k in 2..=segments.len() {
            let prefix = segments[..k].join(".");
            if prefix.ends_with(".metadata") && k == 2 {
                continue;
            }
            if !expr.contains(&format!("has({prefix})")) {
                missing.push(prefix);
            }
        }
    }
    missing
}

/// (group, resource) → operations of a webhook entry's rules; no wildcards.
fn webhook_rules(w: &Value) -> BTreeMap<(String, String), BTreeSet<String>> {
    let mut out = BTreeMap::new();
    for rule in w["rules"].as_array().expect("rules") {
        let versions = strings(&rule["apiVersions"]);
        assert!(
            !versions.is_empty() && !versions.iter().any(|v| v.contains('*')),
            "apiVersions {versions:?}"
        );
        for g in strings(&rule["apiGroups"]) {
            for r in strings(&rule["resources"]) {
                assert!(
                    !g.contains('*') && !r.contains('*'),
                    "wildcard in webhook rule {rule}"
                );
                let ops: BTreeSet<String> = strings(&rule["operations"]).into_iter().collect();
                assert!(out.insert((g.clone(), r), ops).is_none(), "duplicate rule");
            }
        }
    }
    out
}

fn workload_kinds() -> BTreeSet<(String, String)> {
    [
        ("", "pods"),
        ("", "replicationcontrollers"),
        ("apps", "deployments"),
        ("apps", "replicasets"),
        ("apps", "statefulsets"),
        ("apps", "daemonsets"),
        ("batch", "jobs"),
        ("batch", "cronjobs"),
    ]
    .iter()
    .map(|(g, r)| (g.to_string(), r.to_string()))
    .collect()
}

/// Everything every webhook entry must say, whatever the values.
fn check_webhooks(
    objs: &[Value],
    fullname: &str,
    ns: &str,
    failure_policy: &str,
    extra_excluded: &[&str],
) {
    let config = webhook_config(objs);
    assert_eq!(name(config), fullname);
    let annotations = &config["metadata"]["annotations"];
    assert!(
        annotations.get("helm.sh/resource-policy").is_none(),
        "webhook configuration must be deleted on uninstall"
    );
    assert!(
        annotations.get("helm.sh/hook").is_none(),
        "webhook configuration must be a normal release resource"
    );

    let entries = config["webhooks"].as_array().expect("webhooks");
    let names: Vec<&str> = entries
        .iter()
        .map(|w| w["name"].as_str().expect("name"))
        .collect();
    assert_eq!(
        names,
        [
            WORKLOADS,
            WORKLOADS_NS,
            WORKLOAD_TEMPLATES,
            PODS_MOUNTING_CLAIMS,
            NETWORKPOLICIES,
            NETWORKPOLICY_DELETES,
            EGRESS_LAYERS,
            EGRESS_LAYER_DELETES,
            NAMESPACES,
            CLAIMS,
            CLAIM_CLONES,
            POLICIES
        ]
    );

    let mut excluded = set(&["kube-system", "kube-node-lease", ns]);
    excluded.extend(extra_excluded.iter().map(|s| s.to_string()));
    for w in entries {
        let entry = w["name"].as_str().unwrap_or_default();
        assert_eq!(w["admissionReviewVersions"], json!(["v1"]), "{entry}");
        assert_eq!(w["sideEffects"], "None", "{entry}");
        let timeout = w["timeoutSeconds"]
            .as_i64()
            .unwrap_or_else(|| panic!("{entry}: timeoutSeconds must be set"));
        assert!(
            (1..=3).contains(&timeout),
            "{entry}: timeoutSeconds {timeout}"
        );
        // NetworkPolicy DELETEs have their own failure policy (default
        // Ignore): an absent operator must not block namespace deletion.
        // Likewise unlabelled pods mounting a claim: every StatefulSet's
        // pods reach that entry, classified or not.
        let expected_policy = if entry == NETWORKPOLICY_DELETES
            || entry == EGRESS_LAYER_DELETES
            || entry == PODS_MOUNTING_CLAIMS
        {
            "Ignore"
        } else {
            failure_policy
        };
        assert_eq!(w["failurePolicy"], expected_policy, "{entry}");
        let service = &w["clientConfig"]["service"];
        assert_eq!(service["name"], fullname, "{entry}");
        assert_eq!(service["namespace"], ns, "{entry}");
        assert_eq!(service["port"], 443, "{entry}");
        assert!(
            w["clientConfig"].get("url").is_none(),
            "{entry}: no url clientConfig"
        );

        // The lock-out guard: on EVERY entry.
        let guard: Vec<_> = expressions(&w["namespaceSelector"])
            .into_iter()
            .filter(|e| e["key"] == "kubernetes.io/metadata.name" && e["operator"] == "NotIn")
            .collect();
        assert_eq!(
            guard.len(),
            1,
            "{entry}: one kubernetes.io/metadata.name NotIn expression"
        );
        let values: BTreeSet<String> = strings(&guard[0]["values"]).into_iter().collect();
        assert_eq!(values, excluded, "{entry}: excluded namespaces");

        let conditions = match_conditions(w);
        assert!(
            conditions.len() <= 64,
            "{entry}: at most 64 matchConditions"
        );
        for (cond, expr) in &conditions {
            assert_eq!(
                unguarded_paths(expr),
                Vec::<String>::new(),
                "{entry}/{cond}: unguarded field access in {expr}"
            );
        }
    }

    let create_update = set(&["CREATE", "UPDATE"]);
    for entry in [WORKLOADS, WORKLOADS_NS, WORKLOAD_TEMPLATES] {
        let w = webhook(objs, entry);
        assert_eq!(
            w["clientConfig"]["service"]["path"], "/validate/workloads",
            "{entry}"
        );
        let rules = webhook_rules(w);
        assert_eq!(
            rules.keys().cloned().collect::<BTreeSet<_>>(),
            workload_kinds(),
            "{entry}: resources"
        );
        assert!(
            rules.values().all(|ops| *ops == create_update),
            "{entry}: operations {rules:?}"
        );
    }
    // Data follows the volume (issue 22): unlabelled pods that mount a
    // claim are sent, on CREATE only (a pod's volumes are immutable).
    let claims = webhook(objs, PODS_MOUNTING_CLAIMS);
    assert_eq!(
        claims["clientConfig"]["service"]["path"],
        "/validate/workloads"
    );
    let mut expected = BTreeMap::new();
    expected.insert(("".to_owned(), "pods".to_owned()), set(&["CREATE"]));
    assert_eq!(webhook_rules(claims), expected);
    let conds = match_conditions(claims);
    assert!(
        conds["mounts-a-claim"]
            .contains("object.spec.volumes.exists(v, has(v.persistentVolumeClaim))"),
        "{conds:?}"
    );
    assert!(conds.contains_key("object-not-labelled-itself"));
    let np = webhook(objs, NETWORKPOLICIES);
    assert_eq!(
        np["clientConfig"]["service"]["path"],
        "/validate/networkpolicies"
    );
    let mut expected = BTreeMap::new();
    expected.insert(
        ("networking.k8s.io".to_owned(), "networkpolicies".to_owned()),
        set(&["CREATE", "UPDATE"]),
    );
    assert_eq!(webhook_rules(np), expected);
    let deletes = webhook(objs, NETWORKPOLICY_DELETES);
    assert_eq!(
        deletes["clientConfig"]["service"]["path"],
        "/validate/networkpolicies"
    );
    let mut expected = BTreeMap::new();
    expected.insert(
        ("networking.k8s.io".to_owned(), "networkpolicies".to_owned()),
        set(&["DELETE"]),
    );
    assert_eq!(webhook_rules(deletes), expected);
    let conditions = match_conditions(deletes);
    assert!(
        conditions.iter().any(|(_, e)| e.contains(
            "request.userInfo.username != 'system:serviceaccount:kube-system:namespace-controller'"
        )),
        "the namespace controller must not be sent NetworkPolicy DELETEs: {conditions:?}"
    );
    let namespaces = webhook(objs, NAMESPACES);
    assert_eq!(
        namespaces["clientConfig"]["service"]["path"],
        "/validate/namespaces"
    );
    let mut expected = BTreeMap::new();
    expected.insert(
        ("".to_owned(), "namespaces".to_owned()),
        create_update.clone(),
    );
    assert_eq!(webhook_rules(namespaces), expected);
    // Any label change of a Namespace may take it out of a policy's
    // namespaceSelector (issue 22): every one is sent, not just the class's.
    let relabel = &match_conditions(namespaces)["labelled-on-create-or-labels-changed"];
    assert!(
        relabel.contains("object.metadata.labels != oldObject.metadata.labels")
            && !relabel.contains("['residencyguard.io/data-class'] != "),
        "{relabel}"
    );
    // A claim's data-class label classifies the data at rest: set, changed
    // or removed, it is judged as a Namespace's is (issue 22).
    let claims = webhook(objs, CLAIMS);
    assert_eq!(
        claims["clientConfig"]["service"]["path"],
        "/validate/namespaces"
    );
    let mut expected = BTreeMap::new();
    expected.insert(
        ("".to_owned(), "persistentvolumeclaims".to_owned()),
        create_update.clone(),
    );
    assert_eq!(webhook_rules(claims), expected);
    assert_eq!(
        claims["objectSelector"],
        json!({"matchExpressions": [{"key": LABEL, "operator": "Exists"}]})
    );
    // A clone copies its source's data, labelled or not: every claim CREATE
    // whose dataSource or dataSourceRef names a claim is judged.
    let clones = webhook(objs, CLAIM_CLONES);
    assert_eq!(
        clones["clientConfig"]["service"]["path"],
        "/validate/namespaces"
    );
    let mut expected = BTreeMap::new();
    expected.insert(
        ("".to_owned(), "persistentvolumeclaims".to_owned()),
        set(&["CREATE"]),
    );
    assert_eq!(webhook_rules(clones), expected);
    assert!(clones.get("objectSelector").is_none_or(|s| s.is_null()));
    let cloned = &match_conditions(clones)["cloned-from-a-claim"];
    for field in ["dataSource", "dataSourceRef"] {
        assert!(
            cloned.contains(&format!(
                "object.spec.{field}.kind == 'PersistentVolumeClaim'"
            )),
            "{cloned}"
        );
    }
    let pol = webhook(objs, POLICIES);
    assert_eq!(pol["clientConfig"]["service"]["path"], "/validate/policies");
    let mut expected = BTreeMap::new();
    expected.insert(
        (
            "residencyguard.io".to_owned(),
            "residencypolicies".to_owned(),
        ),
        create_update.clone(),
    );
    assert_eq!(webhook_rules(pol), expected);
}

#[test]
fn webhook_url_registers_every_entry_by_url_and_names_the_host_in_the_certificate() {
    let helm = helm_or_skip!();
    let objs = render(
        &helm,
        &[
            "--set",
            "webhook.url=https://127.0.0.1:9443",
            "--set",
            "replicaCount=0",
        ],
    );
    let config = webhook_config(&objs);
    for w in config["webhooks"].as_array().expect("webhooks") {
        let url = w["clientConfig"]["url"].as_str().expect("url");
        assert!(url.starts_with("https://127.0.0.1:9443/validate/"), "{url}");
        assert!(w["clientConfig"].get("service").is_none());
    }
    let deployment = one(&objs, "Deployment");
    assert_eq!(deployment["spec"]["replicas"], 0);
    let env = deployment["spec"]["template"]["spec"]["containers"][0]["env"].to_string();
    assert!(
        env.contains(r#"{"name":"RESIDENCY_GUARD_CERT_EXTRA_SANS","value":"127.0.0.1"}"#),
        "{env}"
    );
    // Without a URL, no replica means no webhook server: refused.
    let err = try_render(&helm, RELEASE, NS, &["--set", "replicaCount=0"])
        .expect_err("replicaCount=0 without webhook.url must fail");
    assert!(err.contains("webhook.url"), "{err}");
}

/// RBAC flattened to single permissions: (where, apiGroup, resource, verb, resourceName or "").
/// "where" is "cluster" for a ClusterRole, the namespace for a Role.
type Perm = (String, String, String, String, String);

fn rbac(objs: &[Value], fullname: &str, ns: &str) -> BTreeSet<Perm> {
    let mut perms = BTreeSet::new();
    for o in objs {
        if kind(o) == "ClusterRole" && name(o) == format!("{fullname}-declassifier") {
            // For users, not the operator: checked on its own below.
            check_declassifier(o, objs);
            continue;
        }
        let (where_, k) = match kind(o) {
            "ClusterRole" => ("cluster".to_owned(), "ClusterRole"),
            "Role" => (
                o["metadata"]["namespace"]
                    .as_str()
                    .expect("Role namespace")
                    .to_owned(),
                "Role",
            ),
            _ => continue,
        };
        assert_eq!(name(o), fullname, "{k} name");
        assert!(o.get("aggregationRule").is_none(), "no aggregated roles");
        for rule in o["rules"].as_array().expect("rules") {
            assert!(rule.get("nonResourceURLs").is_none(), "no nonResourceURLs");
            let names = strings(&rule["resourceNames"]);
            let names = if names.is_empty() {
                vec![String::new()]
            } else {
                names
            };
            for g in strings(&rule["apiGroups"]) {
                for r in strings(&rule["resources"]) {
                    for v in strings(&rule["verbs"]) {
                        for n in &names {
                            for field in [&g, &r, &v, n] {
                                assert!(!field.contains('*'), "wildcard in {k} rule {rule}");
                            }
                            perms.insert((
                                where_.clone(),
                                g.clone(),
                                r.clone(),
                                v.clone(),
                                n.clone(),
                            ));
                        }
                    }
                }
            }
        }
    }
    // Bindings: only our roles, only our ServiceAccount.
    for o in objs {
        let (role_kind, binding) = match kind(o) {
            "ClusterRoleBinding" => ("ClusterRole", "ClusterRoleBinding"),
            "RoleBinding" => ("Role", "RoleBinding"),
            _ => continue,
        };
        assert_eq!(
            o["roleRef"],
            json!({"apiGroup": "rbac.authorization.k8s.io", "kind": role_kind, "name": fullname}),
            "{binding}"
        );
        assert_eq!(
            o["subjects"],
            json!([{"kind": "ServiceAccount", "name": fullname, "namespace": ns}]),
            "{binding}"
        );
    }
    // Every ClusterRole but the (unbound) declassifier is bound once.
    assert_eq!(
        all(objs, "ClusterRole").len(),
        all(objs, "ClusterRoleBinding").len() + 1
    );
    assert_eq!(all(objs, "Role").len(), all(objs, "RoleBinding").len());
    perms
}

/// One row of an RBAC table: (where, apiGroup, resources, verbs, resourceNames).
type Row<'a> = (
    &'a str,
    &'a str,
    &'a [&'a str],
    &'a [&'a str],
    &'a [&'a str],
);

/// Expand RBAC table rows into single permissions.
fn perms(rows: &[Row]) -> BTreeSet<Perm> {
    let mut out = BTreeSet::new();
    for (where_, g, resources, verbs, names) in rows {
        let names: Vec<&str> = if names.is_empty() {
            vec![""]
        } else {
            names.to_vec()
        };
        for r in *resources {
            for v in *verbs {
                for n in &names {
                    out.insert((
                        where_.to_string(),
                        g.to_string(),
                        r.to_string(),
                        v.to_string(),
                        n.to_string(),
                    ));
                }
            }
        }
    }
    out
}

/// The declassifier ClusterRole grants exactly `declassify` on
/// dataclasses.residencyguard.io and is bound to no one by the chart.
fn check_declassifier(role: &Value, objs: &[Value]) {
    assert_eq!(
        role["rules"],
        json!([{"apiGroups": ["residencyguard.io"], "resources": ["dataclasses"], "verbs": ["declassify"]}])
    );
    for o in objs {
        if matches!(kind(o), "ClusterRoleBinding" | "RoleBinding") {
            assert_ne!(
                o["roleRef"]["name"], role["metadata"]["name"],
                "the declassifier must not be bound by the chart"
            );
        }
    }
}

/// What a watch needs: kube-runtime lists and watches, and never GETs.
const READ: &[&str] = &["list", "watch"];

fn webhook_perms() -> BTreeSet<Perm> {
    perms(&[
        (
            "cluster",
            "residencyguard.io",
            &["residencypolicies"],
            READ,
            &[],
        ),
        (
            "cluster",
            "",
            &["nodes", "namespaces", "services"],
            READ,
            &[],
        ),
        (
            "cluster",
            "networking.k8s.io",
            &["networkpolicies"],
            READ,
            &[],
        ),
        // The other egress layers egress.cni (default auto) may read.
        (
            "cluster",
            "cilium.io",
            &["ciliumnetworkpolicies", "ciliumclusterwidenetworkpolicies"],
            READ,
            &[],
        ),
        (
            "cluster",
            "crd.projectcalico.org",
            &[
                "networkpolicies",
                "globalnetworkpolicies",
                "tiers",
                "networksets",
                "globalnetworksets",
            ],
            READ,
            &[],
        ),
        (
            "cluster",
            "policy.networking.k8s.io",
            &["adminnetworkpolicies", "baselineadminnetworkpolicies"],
            READ,
            &[],
        ),
        (
            "cluster",
            "",
            &["persistentvolumes", "persistentvolumeclaims"],
            READ,
            &[],
        ),
        ("cluster", "storage.k8s.io", &["storageclasses"], READ, &[]),
        (
            "cluster",
            "",
            &["pods", "replicationcontrollers"],
            &["list", "watch"],
            &[],
        ),
        (
            "cluster",
            "apps",
            &["deployments", "replicasets", "statefulsets", "daemonsets"],
            &["list", "watch"],
            &[],
        ),
        (
            "cluster",
            "batch",
            &["jobs", "cronjobs"],
            &["list", "watch"],
            &[],
        ),
        // Declassifications are authorised on the user's behalf.
        (
            "cluster",
            "authorization.k8s.io",
            &["subjectaccessreviews"],
            &["create"],
            &[],
        ),
    ])
}

fn self_managed_perms(fullname: &str, ns: &str) -> BTreeSet<Perm> {
    let secret = format!("{fullname}-tls");
    perms(&[
        (
            "cluster",
            "admissionregistration.k8s.io",
            &["validatingwebhookconfigurations"],
            &["get", "patch"],
            &[fullname],
        ),
        (ns, "", &["secrets"], &["get", "update"], &[&secret]),
        (ns, "", &["secrets"], &["create"], &[]),
    ])
}

fn audit_perms(ns: &str) -> BTreeSet<Perm> {
    perms(&[
        (
            "cluster",
            "residencyguard.io",
            &["residencypolicies/status"],
            &["patch"],
            &[],
        ),
        (
            "cluster",
            "events.k8s.io",
            &["events"],
            &["create", "patch"],
            &[],
        ),
        // Data at rest keeps its class (audit.labelClaims, default on).
        ("cluster", "", &["persistentvolumeclaims"], &["patch"], &[]),
        (
            ns,
            "coordination.k8s.io",
            &["leases"],
            &["get", "patch"],
            &["residency-guard-audit"],
        ),
        (ns, "coordination.k8s.io", &["leases"], &["create"], &[]),
    ])
}

/// What writing reports of one API needs: list (stale ones, and whether it
/// is served), and write only those named `residency-guard`.
fn report_perms(group: &str, resources: &[&str]) -> BTreeSet<Perm> {
    perms(&[
        ("cluster", group, resources, &["list"], &[]),
        (
            "cluster",
            group,
            resources,
            &["create", "patch", "delete"],
            &["residency-guard"],
        ),
    ])
}

fn policy_report_perms() -> BTreeSet<Perm> {
    report_perms("wgpolicyk8s.io", &["policyreports", "clusterpolicyreports"])
}

fn open_reports_perms() -> BTreeSet<Perm> {
    report_perms("openreports.io", &["reports", "clusterreports"])
}

/// The audit with `reports.kind: auto` (the default): both report APIs.
fn audit_perms_auto(ns: &str) -> BTreeSet<Perm> {
    union(&[audit_perms(ns), policy_report_perms(), open_reports_perms()])
}

fn union(sets: &[BTreeSet<Perm>]) -> BTreeSet<Perm> {
    sets.iter().flatten().cloned().collect()
}

fn assert_perms(actual: &BTreeSet<Perm>, expected: &BTreeSet<Perm>, what: &str) {
    let extra: Vec<_> = actual.difference(expected).collect();
    let missing: Vec<_> = expected.difference(actual).collect();
    assert!(
        extra.is_empty() && missing.is_empty(),
        "{what}: RBAC differs\n  granted but not expected: {extra:?}\n  expected but not granted: {missing:?}"
    );
}

fn chart_app_version() -> String {
    let text = std::fs::read_to_string(chart_dir().join("Chart.yaml")).expect("Chart.yaml");
    let chart: Value = serde_norway::from_str(&text).expect("Chart.yaml parses");
    chart["appVersion"].as_str().expect("appVersion").to_owned()
}

// ---------------------------------------------------------------------------

/// The CRD validates allowedCIDRs with CEL isCIDR/isIP, which CRD rules may
/// use from Kubernetes 1.31: the chart's kubeVersion and both READMEs say
/// that minimum, and Helm refuses an older cluster.
#[test]
fn the_minimum_kubernetes_version_covers_the_crd_cel_functions() {
    let text = std::fs::read_to_string(chart_dir().join("Chart.yaml")).expect("Chart.yaml");
    let chart: Value = serde_norway::from_str(&text).expect("Chart.yaml parses");
    assert_eq!(chart["kubeVersion"], ">=1.31.0-0");
    let crd = std::fs::read_to_string(root().join("crds/residencypolicies.residencyguard.io.yaml"))
        .expect("CRD");
    assert!(
        crd.contains("isCIDR(") && crd.contains("isIP("),
        "the CRD no longer needs 1.31?"
    );
    let readme = std::fs::read_to_string(root().join("README.md")).expect("README");
    assert!(readme.contains("Kubernetes ≥ 1.31"), "README.md");
    assert!(!readme.contains("1.30"), "README.md still names 1.30");
    let chart_readme =
        std::fs::read_to_string(chart_dir().join("README.md")).expect("chart README");
    assert!(chart_readme.contains("Requires Kubernetes 1.31 or later"));

    let helm = helm_or_skip!();
    let template = |version: &str| {
        run(Command::new(&helm)
            .args(["template", RELEASE])
            .arg(chart_dir())
            .args(["--namespace", NS, "--kube-version", version]))
    };
    let old = template("1.30.4");
    assert!(!old.status.success(), "Helm must refuse Kubernetes 1.30");
    assert!(
        String::from_utf8_lossy(&old.stderr).contains("kubeVersion"),
        "{}",
        String::from_utf8_lossy(&old.stderr)
    );
    let ok = template("1.31.0");
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
}

#[test]
fn helm_lint_passes_plain_and_strict_for_every_values_set() {
    let helm = helm_or_skip!();
    for (set_name, args, _) in values_sets() {
        for strict in [false, true] {
            let mut cmd = Command::new(&helm);
            cmd.arg("lint")
                .arg(chart_dir())
                .args(["--namespace", NS])
                .args(&args);
            if strict {
                cmd.arg("--strict");
            }
            let out = run(&mut cmd);
            assert!(
                out.status.success(),
                "helm lint (strict={strict}, {set_name}) failed:\n{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

#[test]
fn default_render_has_exactly_the_expected_objects() {
    let helm = helm_or_skip!();
    let objs = render(&helm, NO_ARGS);
    let actual: BTreeSet<(String, String)> = objs
        .iter()
        .map(|o| (kind(o).to_owned(), name(o).to_owned()))
        .collect();
    let declassifier = format!("{RELEASE}-declassifier");
    let expected: BTreeSet<(String, String)> = [
        ("ClusterRole", RELEASE),
        ("ClusterRole", declassifier.as_str()),
        ("ClusterRoleBinding", RELEASE),
        (
            "CustomResourceDefinition",
            "residencypolicies.residencyguard.io",
        ),
        ("Deployment", RELEASE),
        // The audit Lease, Helm's so that uninstall removes it with no
        // operator running (tests/e2e/availability.rs).
        ("Lease", "residency-guard-audit"),
        ("NetworkPolicy", RELEASE),
        ("PodDisruptionBudget", RELEASE),
        ("PriorityClass", RELEASE),
        ("Role", RELEASE),
        ("RoleBinding", RELEASE),
        ("Service", RELEASE),
        ("ServiceAccount", RELEASE),
        ("ValidatingWebhookConfiguration", RELEASE),
    ]
    .iter()
    .map(|(k, n)| (k.to_string(), n.to_string()))
    .collect();
    assert_eq!(actual, expected);
    assert_eq!(objs.len(), expected.len(), "no duplicate objects");

    // Namespaced objects name their namespace (deploy/ is applied with kubectl).
    let cluster_scoped = set(&[
        "ClusterRole",
        "ClusterRoleBinding",
        "CustomResourceDefinition",
        "PriorityClass",
        "ValidatingWebhookConfiguration",
    ]);
    for o in &objs {
        let ns = o["metadata"]["namespace"].as_str();
        if cluster_scoped.contains(kind(o)) {
            assert_eq!(ns, None, "{} {} is cluster-scoped", kind(o), name(o));
        } else {
            assert_eq!(ns, Some(NS), "{} {} namespace", kind(o), name(o));
        }
    }
}

#[test]
fn webhooks_hold_for_every_values_set() {
    let helm = helm_or_skip!();
    for (set_name, args, failure_policy) in values_sets() {
        let objs = render(&helm, &args);
        check_webhooks(&objs, RELEASE, NS, failure_policy, &[]);
        let expected_timeout = if set_name.contains("timeout2") { 2 } else { 3 };
        for w in webhook_config(&objs)["webhooks"].as_array().unwrap() {
            assert_eq!(w["timeoutSeconds"], expected_timeout, "{set_name}");
        }
    }
}

#[test]
fn workload_entries_prefilter_on_object_namespace_and_template_labels() {
    let helm = helm_or_skip!();
    let objs = render(&helm, NO_ARGS);

    // (1) The object's own labels: objectSelector Exists, any namespace (but the excluded).
    let own = webhook(&objs, WORKLOADS);
    assert_eq!(
        own["objectSelector"],
        json!({"matchExpressions": [{"key": LABEL, "operator": "Exists"}]})
    );
    assert!(!has_label_exists(&own["namespaceSelector"]));

    // (2) The Namespace's labels: namespaceSelector Exists (with the exclusions), any object.
    let in_ns = webhook(&objs, WORKLOADS_NS);
    assert!(
        in_ns.get("objectSelector").is_none_or(|s| s == &json!({})),
        "no objectSelector"
    );
    assert!(has_label_exists(&in_ns["namespaceSelector"]));
    let conds = match_conditions(in_ns);
    // Entry (1)'s objectSelector matches the old object or the new one, so
    // "labelled itself" means either (an UPDATE removing the label goes
    // through entry (1), once).
    assert_eq!(
        conds["object-not-labelled-itself"],
        format!(
            "!((has(object.metadata.labels) && '{LABEL}' in object.metadata.labels) || (oldObject != null && has(oldObject.metadata.labels) && '{LABEL}' in oldObject.metadata.labels))"
        )
    );

    // (3) The pod template's labels: only CEL can see them.
    let tpl = webhook(&objs, WORKLOAD_TEMPLATES);
    assert!(
        tpl.get("objectSelector").is_none_or(|s| s == &json!({})),
        "no objectSelector"
    );
    assert!(!has_label_exists(&tpl["namespaceSelector"]));
    let conds = match_conditions(tpl);
    let template = &conds["pod-template-labelled"];
    assert!(
        template.contains(&format!(
            "'{LABEL}' in object.spec.template.metadata.labels"
        )),
        "{template}"
    );
    assert!(
        template.contains(&format!(
            "'{LABEL}' in object.spec.jobTemplate.spec.template.metadata.labels"
        )),
        "{template}"
    );
    // A template that loses the label (a declassification) is sent too.
    assert!(
        template
            .contains("oldObject != null && ((has(oldObject.spec) && has(oldObject.spec.template)")
            && template.contains(&format!(
                "'{LABEL}' in oldObject.spec.jobTemplate.spec.template.metadata.labels"
            )),
        "{template}"
    );
    assert!(conds.contains_key("object-not-labelled-itself"));

    // Only updates that change nothing the verdict reads are skipped.
    for entry in [WORKLOADS, WORKLOADS_NS, WORKLOAD_TEMPLATES] {
        let expr = &match_conditions(webhook(&objs, entry))["spec-labels-or-owners-changed"];
        assert!(
            expr.starts_with("request.operation != 'UPDATE'"),
            "{entry}: {expr}"
        );
        // A metadata-only update of labels or ownerReferences can
        // declassify (issue 22): it must be sent.
        assert!(
            expr.contains("object.spec != oldObject.spec")
                && expr.contains("object.metadata.labels != oldObject.metadata.labels")
                && expr.contains(
                    "object.metadata.ownerReferences != oldObject.metadata.ownerReferences"
                )
        );
    }
    for entry in [NETWORKPOLICIES, POLICIES] {
        let w = webhook(&objs, entry);
        assert!(
            w.get("objectSelector").is_none(),
            "{entry}: no label pre-filter"
        );
        assert!(
            !has_label_exists(&w["namespaceSelector"]),
            "{entry}: no label pre-filter"
        );
        let conds = match_conditions(w);
        assert_eq!(
            conds.keys().collect::<Vec<_>>(),
            ["spec-changed"],
            "{entry}"
        );
        assert!(
            conds["spec-changed"].starts_with("request.operation != 'UPDATE'"),
            "{entry}: DELETE and CREATE always sent"
        );
    }
    assert_eq!(webhook(&objs, POLICIES)["rules"][0]["scope"], "Cluster");
}

#[test]
fn unguarded_path_detector_catches_a_missing_has() {
    assert_eq!(
        unguarded_paths("has(object.spec) && object.spec.template.x == 1"),
        ["object.spec.template", "object.spec.template.x"]
    );
    assert!(
        unguarded_paths("has(object.metadata.labels) && 'a' in object.metadata.labels").is_empty()
    );
    assert!(
        unguarded_paths(
            "has(object.spec) && has(object.spec.volumes) && object.spec.volumes.exists(v, true)"
        )
        .is_empty()
    );
    assert_eq!(
        unguarded_paths("has(object.spec) && object.spec.volumes.exists(v, true)"),
        ["object.spec.volumes"]
    );
}

#[test]
fn user_namespace_selector_and_exclusions_are_merged_into_every_entry() {
    let helm = helm_or_skip!();
    let args = [
        "--set",
        "webhook.namespaceSelector.matchLabels.env=prod",
        "--set",
        "webhook.namespaceSelector.matchExpressions[0].key=tier",
        "--set",
        "webhook.namespaceSelector.matchExpressions[0].operator=NotIn",
        "--set",
        "webhook.namespaceSelector.matchExpressions[0].values={sandbox}",
        "--set",
        "webhook.excludedNamespaces={monitoring,kube-system}",
    ];
    let objs = render(&helm, &args);
    check_webhooks(&objs, RELEASE, NS, "Fail", &["monitoring"]);
    for w in webhook_config(&objs)["webhooks"].as_array().unwrap() {
        let sel = &w["namespaceSelector"];
        assert_eq!(sel["matchLabels"], json!({"env": "prod"}), "{}", w["name"]);
        assert!(
            expressions(sel)
                .contains(&&json!({"key": "tier", "operator": "NotIn", "values": ["sandbox"]})),
            "{}",
            w["name"]
        );
    }
    assert!(has_label_exists(
        &webhook(&objs, WORKLOADS_NS)["namespaceSelector"]
    ));
}

#[test]
fn schema_rejects_invalid_values() {
    let helm = helm_or_skip!();
    let cases: &[(&[&str], &str)] = &[
        (&["--set", "webhook.timeoutSeconds=5"], "timeoutSeconds"),
        (&["--set", "webhook.timeoutSeconds=0"], "timeoutSeconds"),
        (&["--set", "webhook.failurePolicy=Maybe"], "failurePolicy"),
        (&["--set", "notAValue=1"], "notAValue"),
        (&["--set", "webhook.notAValue=1"], "notAValue"),
        (&["--set", "certificates.mode=letsEncrypt"], "mode"),
        (&["--set", "lang=fr"], "lang"),
        (&["--set", "log.format=xml"], "format"),
        (&["--set", "reports.kind=PolicyReports"], "kind"),
        (&["--set", "replicaCount=-1"], "replicaCount"),
        (&["--set", "webhook.url=http://insecure:8443"], "url"),
        (&["--set", "webhook.url=https://h:8443/path"], "url"),
        (
            &["--set", "webhook.deleteFailurePolicy=Maybe"],
            "deleteFailurePolicy",
        ),
        (
            &["--set", "webhook.claimMountFailurePolicy=Maybe"],
            "claimMountFailurePolicy",
        ),
        (&["--set", "clusterCidrs={not-a-cidr}"], "clusterCidrs"),
        (
            &["--set", "catalogue.extraRegions[0].provider=x"],
            "extraRegions",
        ),
    ];
    for (args, mentions) in cases {
        match try_render(&helm, RELEASE, NS, args) {
            Ok(_) => panic!("values {args:?} were accepted"),
            Err(stderr) => {
                assert!(
                    stderr.contains("schema"),
                    "{args:?} should fail schema validation:\n{stderr}"
                );
                assert!(
                    stderr.contains(mentions),
                    "{args:?}: error should mention {mentions}:\n{stderr}"
                );
            }
        }
    }
}

#[test]
fn existing_secret_mode_requires_its_secret_and_ca() {
    let helm = helm_or_skip!();
    let no_ca = try_render(
        &helm,
        RELEASE,
        NS,
        &[
            "--set",
            "certificates.mode=existingSecret",
            "--set",
            "certificates.existingSecret.name=x",
        ],
    );
    assert!(
        no_ca
            .unwrap_err()
            .contains("certificates.existingSecret.caBundle is required")
    );
    let no_name = try_render(
        &helm,
        RELEASE,
        NS,
        &["--set", "certificates.mode=existingSecret", "--set", CA_ARG],
    );
    assert!(
        no_name
            .unwrap_err()
            .contains("certificates.existingSecret.name is required")
    );

    // A PEM (e.g. --set-file) is base64-encoded; a base64 value is used as is.
    let dir = tempfile::tempdir().unwrap();
    let pem = "-----BEGIN CERTIFICATE-----\nMIIBtest\n-----END CERTIFICATE-----\n";
    let pem_file = dir.path().join("ca.pem");
    std::fs::write(&pem_file, pem).unwrap();
    let set_file = format!(
        "certificates.existingSecret.caBundle={}",
        pem_file.display()
    );
    for args in [
        vec![
            "--set",
            "certificates.mode=existingSecret",
            "--set",
            "certificates.existingSecret.name=x",
            "--set-file",
            &set_file,
        ],
        vec![
            "--set",
            "certificates.mode=existingSecret",
            "--set",
            "certificates.existingSecret.name=x",
            "--set",
            CA_ARG,
        ],
    ] {
        let objs = render(&helm, &args);
        for w in webhook_config(&objs)["webhooks"].as_array().unwrap() {
            assert_eq!(w["clientConfig"]["caBundle"], CA_B64, "{}", w["name"]);
        }
    }
}

#[test]
fn certificate_modes_wire_tls_env_volumes_and_ca_injection() {
    let helm = helm_or_skip!();
    let tls_dir = "/etc/residency-guard/tls";

    // selfManaged: the operator writes its Secret and patches the caBundle.
    let objs = render(&helm, NO_ARGS);
    let e = env(&objs);
    assert_eq!(e["RESIDENCY_GUARD_TLS_MODE"], "self-managed");
    assert_eq!(e["RESIDENCY_GUARD_CERT_SECRET"], format!("{RELEASE}-tls"));
    assert_eq!(
        e["RESIDENCY_GUARD_WEBHOOK_CONFIGS"],
        name(webhook_config(&objs))
    );
    assert!(!e.contains_key("RESIDENCY_GUARD_TLS_DIR"));
    let config = webhook_config(&objs);
    assert!(
        config["metadata"]["annotations"]
            .get("cert-manager.io/inject-ca-from")
            .is_none()
    );
    for w in config["webhooks"].as_array().unwrap() {
        assert!(
            w["clientConfig"].get("caBundle").is_none(),
            "created empty; the operator fills it"
        );
    }
    assert!(
        one(&objs, "Deployment")["spec"]["template"]["spec"]
            .get("volumes")
            .is_none()
    );
    assert!(
        all(&objs, "Certificate").is_empty()
            && all(&objs, "Issuer").is_empty()
            && all(&objs, "Secret").is_empty()
    );

    // certManager: a CA chain, a serving Certificate, injection, files mode.
    let objs = render(&helm, &["--set", "certificates.mode=certManager"]);
    let e = env(&objs);
    assert_eq!(e["RESIDENCY_GUARD_TLS_MODE"], "files");
    assert_eq!(e["RESIDENCY_GUARD_TLS_DIR"], tls_dir);
    assert!(
        !e.contains_key("RESIDENCY_GUARD_CERT_SECRET")
            && !e.contains_key("RESIDENCY_GUARD_WEBHOOK_CONFIGS")
    );
    let issuers: BTreeSet<&str> = all(&objs, "Issuer").into_iter().map(name).collect();
    assert_eq!(
        issuers,
        BTreeSet::from([
            format!("{RELEASE}-selfsigned").as_str(),
            format!("{RELEASE}-ca").as_str()
        ])
    );
    let certs = all(&objs, "Certificate");
    let ca = certs
        .iter()
        .find(|c| name(c) == format!("{RELEASE}-ca"))
        .expect("CA certificate");
    assert_eq!(ca["spec"]["isCA"], true);
    assert_eq!(
        ca["spec"]["issuerRef"]["name"],
        format!("{RELEASE}-selfsigned")
    );
    let serving = certs
        .iter()
        .find(|c| name(c) == format!("{RELEASE}-serving"))
        .expect("serving certificate");
    assert_eq!(
        serving["spec"]["issuerRef"]["name"],
        format!("{RELEASE}-ca")
    );
    let dns: BTreeSet<String> = strings(&serving["spec"]["dnsNames"]).into_iter().collect();
    assert!(dns.contains(&format!("{RELEASE}.{NS}.svc")), "{dns:?}");
    assert_eq!(
        webhook_config(&objs)["metadata"]["annotations"]["cert-manager.io/inject-ca-from"],
        format!("{NS}/{}", name(serving))
    );
    assert_tls_volume(
        &objs,
        serving["spec"]["secretName"].as_str().unwrap(),
        tls_dir,
    );

    // certManager with the user's issuer: no chart-made CA.
    let objs = render(
        &helm,
        &[
            "--set",
            "certificates.mode=certManager",
            "--set",
            "certificates.certManager.issuerRef.name=corp-ca",
            "--set",
            "certificates.certManager.issuerRef.kind=ClusterIssuer",
        ],
    );
    assert!(all(&objs, "Issuer").is_empty());
    let serving = one(&objs, "Certificate");
    assert_eq!(
        serving["spec"]["issuerRef"],
        json!({"name": "corp-ca", "kind": "ClusterIssuer", "group": "cert-manager.io"})
    );

    // existingSecret: the user's Secret, mounted.
    let objs = render(
        &helm,
        &[
            "--set",
            "certificates.mode=existingSecret",
            "--set",
            "certificates.existingSecret.name=my-webhook-tls",
            "--set",
            CA_ARG,
        ],
    );
    let e = env(&objs);
    assert_eq!(e["RESIDENCY_GUARD_TLS_MODE"], "files");
    assert_eq!(e["RESIDENCY_GUARD_TLS_DIR"], tls_dir);
    assert_tls_volume(&objs, "my-webhook-tls", tls_dir);
    assert!(all(&objs, "Certificate").is_empty());
}

fn assert_tls_volume(objs: &[Value], secret: &str, dir: &str) {
    let pod = &one(objs, "Deployment")["spec"]["template"]["spec"];
    let volume = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "tls")
        .expect("tls volume");
    assert_eq!(volume["secret"]["secretName"], secret);
    let mount = container(objs)["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "tls")
        .expect("tls mount");
    assert_eq!(mount["mountPath"], dir);
    assert_eq!(mount["readOnly"], true);
}

#[test]
fn default_environment_is_exactly_the_contract() {
    let helm = helm_or_skip!();
    let e = env(&render(&helm, NO_ARGS));
    let expected: BTreeMap<String, String> = [
        ("RESIDENCY_GUARD_NAMESPACE", "fieldRef:metadata.namespace"),
        ("RESIDENCY_GUARD_POD_NAME", "fieldRef:metadata.name"),
        ("RESIDENCY_GUARD_WEBHOOK_ADDR", "0.0.0.0:8443"),
        ("RESIDENCY_GUARD_ADMIN_ADDR", "0.0.0.0:8080"),
        ("RESIDENCY_GUARD_SERVICE_NAME", RELEASE),
        (
            "RESIDENCY_GUARD_DECLASSIFIER_ROLE",
            "residency-guard-declassifier",
        ),
        ("RESIDENCY_GUARD_TLS_MODE", "self-managed"),
        ("RESIDENCY_GUARD_CERT_SECRET", "residency-guard-tls"),
        ("RESIDENCY_GUARD_WEBHOOK_CONFIGS", RELEASE),
        ("RESIDENCY_GUARD_LANG", "en"),
        ("RESIDENCY_GUARD_LOG_FORMAT", "json"),
        ("RESIDENCY_GUARD_LOG_LEVEL", "info"),
        ("RESIDENCY_GUARD_MAX_BODY_BYTES", "8388608"),
        // The audit controller is on by default (issue 17).
        ("RESIDENCY_GUARD_AUDIT", "true"),
        ("RESIDENCY_GUARD_AUDIT_RESYNC_SECONDS", "600"),
        ("RESIDENCY_GUARD_LABEL_CLAIMS", "true"),
        ("RESIDENCY_GUARD_REPORTS_KIND", "auto"),
        ("RESIDENCY_GUARD_REQUEST_TIMEOUT_SECONDS", "3"),
        ("RESIDENCY_GUARD_STALE_AFTER_SECONDS", "30"),
        ("RESIDENCY_GUARD_MAX_CONNECTIONS", "512"),
        ("RESIDENCY_GUARD_MAX_CONNECTIONS_PER_SOURCE", "128"),
        ("RESIDENCY_GUARD_MAX_INFLIGHT_REVIEWS_PER_SOURCE", "64"),
        ("RESIDENCY_GUARD_MAX_ADDRESS_DATA_AGE_DAYS", "180"),
        ("RESIDENCY_GUARD_EGRESS_CNI", "auto"),
        ("RESIDENCY_GUARD_CILIUM_ENFORCEMENT", "default"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    assert_eq!(e, expected);

    let e = env(&render(
        &helm,
        &[
            "--set",
            "lang=zh-CN",
            "--set",
            "log.format=text",
            "--set",
            "log.level=debug",
        ],
    ));
    assert_eq!(
        (
            e["RESIDENCY_GUARD_LANG"].as_str(),
            e["RESIDENCY_GUARD_LOG_FORMAT"].as_str()
        ),
        ("zh-CN", "text")
    );
    assert_eq!(e["RESIDENCY_GUARD_LOG_LEVEL"], "debug");
    assert_eq!(e["RESIDENCY_GUARD_AUDIT"], "true");
    let no_audit = render(&helm, &["--set", "audit.enabled=false"]);
    let e = env(&no_audit);
    assert!(!e.contains_key("RESIDENCY_GUARD_AUDIT"));
    assert!(!e.contains_key("RESIDENCY_GUARD_AUDIT_RESYNC_SECONDS"));
    assert!(!e.contains_key("RESIDENCY_GUARD_LABEL_CLAIMS"));
    assert!(!e.contains_key("RESIDENCY_GUARD_REPORTS_KIND"));
    // No audit, no Lease.
    assert!(all(&no_audit, "Lease").is_empty());
    let e = env(&render(&helm, &["--set", "audit.resyncSeconds=60"]));
    assert_eq!(e["RESIDENCY_GUARD_AUDIT_RESYNC_SECONDS"], "60");
    for kind in ["policyReport", "openReports", "both"] {
        let e = env(&render(&helm, &["--set", &format!("reports.kind={kind}")]));
        assert_eq!(e["RESIDENCY_GUARD_REPORTS_KIND"], kind);
    }
    let e = env(&render(&helm, &["--set", "audit.labelClaims=false"]));
    assert_eq!(e["RESIDENCY_GUARD_LABEL_CLAIMS"], "false");
    // Trusted sources (issue 23): listed with their reservation.
    assert!(!e.contains_key("RESIDENCY_GUARD_TRUSTED_SOURCE_CIDRS"));
    let e = env(&render(
        &helm,
        &[
            "--set",
            "webhook.trustedSourceCIDRs={10.0.0.10/32,fd00::/64}",
            "--set",
            "webhook.reservedConnections=64",
            "--set",
            "webhook.maxConnectionsPerSource=32",
        ],
    ));
    assert_eq!(
        e["RESIDENCY_GUARD_TRUSTED_SOURCE_CIDRS"],
        "10.0.0.10/32,fd00::/64"
    );
    assert_eq!(e["RESIDENCY_GUARD_RESERVED_CONNECTIONS"], "64");
    assert_eq!(e["RESIDENCY_GUARD_MAX_CONNECTIONS_PER_SOURCE"], "32");

    // Every variable the chart sets is one docs/operator-contract.md defines.
    let contract =
        std::fs::read_to_string(root().join("docs/operator-contract.md")).expect("contract");
    for (set_name, args, _) in values_sets() {
        for var in env(&render(&helm, &args)).keys() {
            assert!(
                contract.contains(&format!("`{var}`")),
                "{set_name}: {var} is not in docs/operator-contract.md"
            );
        }
    }
}

#[test]
fn pod_security_is_restricted_for_every_values_set() {
    let helm = helm_or_skip!();
    for (set_name, args, _) in values_sets() {
        let objs = render(&helm, &args);
        let pod = &one(&objs, "Deployment")["spec"]["template"]["spec"];
        assert_eq!(
            pod["securityContext"],
            json!({
                "runAsNonRoot": true,
                "runAsUser": 65532,
                "runAsGroup": 65532,
                "fsGroup": 65532,
                "seccompProfile": {"type": "RuntimeDefault"}
            }),
            "{set_name}: pod securityContext"
        );
        assert_eq!(
            container(&objs)["securityContext"],
            json!({
                "runAsNonRoot": true,
                "runAsUser": 65532,
                "runAsGroup": 65532,
                "readOnlyRootFilesystem": true,
                "allowPrivilegeEscalation": false,
                "privileged": false,
                "capabilities": {"drop": ["ALL"]},
                "seccompProfile": {"type": "RuntimeDefault"}
            }),
            "{set_name}: container securityContext"
        );
        for field in [
            "hostNetwork",
            "hostPID",
            "hostIPC",
            "initContainers",
            "ephemeralContainers",
        ] {
            assert!(pod.get(field).is_none(), "{set_name}: {field}");
        }
        for v in pod["volumes"].as_array().into_iter().flatten() {
            assert!(
                v.get("secret").is_some() || v.get("configMap").is_some(),
                "{set_name}: volume {v}"
            );
        }
        assert_eq!(pod["serviceAccountName"], RELEASE);
    }
}

#[test]
fn rbac_is_exactly_the_contract_per_mode() {
    let helm = helm_or_skip!();
    let existing = [
        "--set",
        "certificates.mode=existingSecret",
        "--set",
        "certificates.existingSecret.name=t",
        "--set",
        CA_ARG,
    ];
    // The audit controller is on by default (issue 17): the cases without
    // it turn it off.
    let no_audit = ["--set", "audit.enabled=false"];
    let cases: Vec<(&str, Vec<&str>, BTreeSet<Perm>)> = vec![
        (
            "selfManaged without audit",
            no_audit.to_vec(),
            union(&[webhook_perms(), self_managed_perms(RELEASE, NS)]),
        ),
        (
            "certManager without audit",
            [&["--set", "certificates.mode=certManager"][..], &no_audit].concat(),
            webhook_perms(),
        ),
        (
            "existingSecret without audit",
            [&existing[..], &no_audit].concat(),
            webhook_perms(),
        ),
        (
            "default (selfManaged + audit)",
            vec![],
            union(&[
                webhook_perms(),
                self_managed_perms(RELEASE, NS),
                audit_perms_auto(NS),
            ]),
        ),
        (
            "certManager + audit",
            vec!["--set", "certificates.mode=certManager"],
            union(&[webhook_perms(), audit_perms_auto(NS)]),
        ),
        (
            "existingSecret + audit",
            existing.to_vec(),
            union(&[webhook_perms(), audit_perms_auto(NS)]),
        ),
        // reports.kind: exactly the API(s) in use (issue 26).
        (
            "selfManaged + audit, reports.kind=policyReport",
            vec!["--set", "reports.kind=policyReport"],
            union(&[
                webhook_perms(),
                self_managed_perms(RELEASE, NS),
                audit_perms(NS),
                policy_report_perms(),
            ]),
        ),
        (
            "selfManaged + audit, reports.kind=openReports",
            vec!["--set", "reports.kind=openReports"],
            union(&[
                webhook_perms(),
                self_managed_perms(RELEASE, NS),
                audit_perms(NS),
                open_reports_perms(),
            ]),
        ),
        (
            "selfManaged + audit, reports.kind=both",
            vec!["--set", "reports.kind=both"],
            union(&[
                webhook_perms(),
                self_managed_perms(RELEASE, NS),
                audit_perms_auto(NS),
            ]),
        ),
        (
            "selfManaged without audit, reports.kind=openReports",
            [&["--set", "reports.kind=openReports"][..], &no_audit].concat(),
            union(&[webhook_perms(), self_managed_perms(RELEASE, NS)]),
        ),
    ];
    for (what, args, expected) in cases {
        let objs = render(&helm, &args);
        let actual = rbac(&objs, RELEASE, NS);
        assert_perms(&actual, &expected, what);
        // Secrets: only in selfManaged mode, only in the release namespace.
        for (where_, _, resource, _, _) in &actual {
            if resource == "secrets" {
                assert!(
                    !what.starts_with("cert") && !what.starts_with("existing"),
                    "{what}: no Secrets access"
                );
                assert_eq!(where_, NS, "{what}: Secrets only in the release namespace");
            }
        }
        let audit_on = !args.contains(&"audit.enabled=false");
        assert_eq!(
            all(&objs, "Role").is_empty(),
            !(what.contains("selfManaged") || audit_on),
            "{what}: Role"
        );
    }
}

#[test]
fn no_wildcards_and_no_foreign_roles_in_any_values_set() {
    let helm = helm_or_skip!();
    for (set_name, args, _) in values_sets() {
        let objs = render(&helm, &args);
        let perms = rbac(&objs, RELEASE, NS); // asserts no '*' and only our own roles/bindings
        assert!(!perms.is_empty(), "{set_name}");
        assert!(
            !perms
                .iter()
                .any(|p| p.3 == "escalate" || p.3 == "bind" || p.3 == "impersonate"),
            "{set_name}"
        );
    }
}

#[test]
fn deployment_service_probes_and_disruption_budget() {
    let helm = helm_or_skip!();
    let objs = render(&helm, NO_ARGS);
    let deploy = one(&objs, "Deployment");
    assert_eq!(deploy["spec"]["replicas"], 2);
    assert_eq!(
        deploy["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"],
        0
    );
    let selector = &deploy["spec"]["selector"]["matchLabels"];
    let c = container(&objs);
    assert_eq!(
        c["image"],
        format!(
            "ghcr.io/residency-guard/residency-guard:{}",
            chart_app_version()
        )
    );
    assert_eq!(c["args"], json!(["serve"]));
    assert!(
        c.get("command").is_none(),
        "the image entrypoint is the binary"
    );
    assert_eq!(
        c["ports"],
        json!([
            {"name": "webhook", "containerPort": 8443, "protocol": "TCP"},
            {"name": "admin", "containerPort": 8080, "protocol": "TCP"}
        ])
    );
    for (probe, path) in [
        ("livenessProbe", "/livez"),
        ("readinessProbe", "/readyz"),
        ("startupProbe", "/livez"),
    ] {
        assert_eq!(c[probe]["httpGet"]["path"], path, "{probe}");
        assert_eq!(c[probe]["httpGet"]["port"], "admin", "{probe}");
    }
    assert!(
        c["resources"]["requests"]["cpu"].is_string()
            && c["resources"]["requests"]["memory"].is_string()
    );
    assert!(c["resources"]["limits"]["memory"].is_string());

    // Replicas spread over nodes.
    let spread = deploy["spec"]["template"]["spec"]["topologySpreadConstraints"]
        .as_array()
        .expect("topology spread");
    let by_host = spread
        .iter()
        .find(|t| t["topologyKey"] == "kubernetes.io/hostname")
        .expect("spread over nodes");
    assert_eq!(by_host["labelSelector"]["matchLabels"], *selector);

    let pdb = one(&objs, "PodDisruptionBudget");
    assert_eq!(pdb["spec"]["minAvailable"], 1);
    assert_eq!(pdb["spec"]["selector"]["matchLabels"], *selector);

    let svc = one(&objs, "Service");
    assert_eq!(svc["spec"]["selector"], *selector);
    assert_eq!(
        svc["spec"]["ports"],
        json!([
            {"name": "https", "port": 443, "targetPort": "webhook", "protocol": "TCP"},
            {"name": "metrics", "port": 8080, "targetPort": "admin", "protocol": "TCP"}
        ])
    );
    assert_eq!(
        name(svc),
        webhook(&objs, WORKLOADS)["clientConfig"]["service"]["name"]
    );

    // One replica: no PDB (minAvailable 1 would block every drain).
    assert!(
        all(
            &render(&helm, &["--set", "replicaCount=1"]),
            "PodDisruptionBudget"
        )
        .is_empty()
    );
    // Image by digest.
    let digest = format!("sha256:{}", "a".repeat(64));
    let objs = render(&helm, &["--set", &format!("image.digest={digest}")]);
    assert_eq!(
        container(&objs)["image"],
        format!("ghcr.io/residency-guard/residency-guard@{digest}")
    );
}

/// The operator runs with a PriorityClass by default: its own (not a
/// system-* class, which some distributions cap outside kube-system), or
/// one named by the user; memory is limited and requested.
#[test]
fn priority_class_and_memory_defaults() {
    let helm = helm_or_skip!();
    let objs = render(&helm, NO_ARGS);
    let pc = one(&objs, "PriorityClass");
    assert_eq!(name(pc), RELEASE);
    assert_eq!(pc["value"], 1_000_000_000);
    assert_eq!(pc["globalDefault"], false);
    assert_eq!(pc["preemptionPolicy"], "PreemptLowerPriority");
    let pod = &one(&objs, "Deployment")["spec"]["template"]["spec"];
    assert_eq!(pod["priorityClassName"], RELEASE);
    let c = container(&objs);
    assert_eq!(c["resources"]["limits"]["memory"], "384Mi");
    assert_eq!(c["resources"]["requests"]["memory"], "192Mi");

    let objs = render(
        &helm,
        &["--set", "priorityClassName=system-cluster-critical"],
    );
    assert!(all(&objs, "PriorityClass").is_empty());
    assert_eq!(
        one(&objs, "Deployment")["spec"]["template"]["spec"]["priorityClassName"],
        "system-cluster-critical"
    );
    let objs = render(&helm, &["--set", "priorityClass.create=false"]);
    assert!(all(&objs, "PriorityClass").is_empty());
    assert!(
        one(&objs, "Deployment")["spec"]["template"]["spec"]
            .get("priorityClassName")
            .is_none()
    );
    let objs = render(&helm, &["--set", "priorityClass.value=5000"]);
    assert_eq!(one(&objs, "PriorityClass")["value"], 5000);
    // The request deadline follows the webhook timeout.
    let e = env(&render(&helm, &["--set", "webhook.timeoutSeconds=2"]));
    assert_eq!(e["RESIDENCY_GUARD_REQUEST_TIMEOUT_SECONDS"], "2");
}

#[test]
fn network_policy_metrics_and_service_monitor_follow_their_values() {
    let helm = helm_or_skip!();
    let objs = render(&helm, NO_ARGS);
    let np = one(&objs, "NetworkPolicy");
    assert_eq!(
        np["spec"]["podSelector"]["matchLabels"],
        one(&objs, "Deployment")["spec"]["selector"]["matchLabels"]
    );
    assert_eq!(np["spec"]["policyTypes"], json!(["Ingress", "Egress"]));
    let ingress_ports: BTreeSet<i64> = np["spec"]["ingress"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| {
            r["ports"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p["port"].as_i64().unwrap())
        })
        .collect();
    assert_eq!(ingress_ports, BTreeSet::from([8443, 8080]));
    let webhook_rule = np["spec"]["ingress"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["ports"][0]["port"] == 8443)
        .unwrap();
    assert!(
        webhook_rule.get("from").is_none(),
        "the API server's source address is not predictable"
    );
    let egress: BTreeSet<(String, i64)> = np["spec"]["egress"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r["ports"].as_array().unwrap().iter())
        .map(|p| {
            (
                p["protocol"].as_str().unwrap().to_owned(),
                p["port"].as_i64().unwrap(),
            )
        })
        .collect();
    let expected: BTreeSet<(String, i64)> = [("TCP", 443), ("TCP", 6443), ("UDP", 53), ("TCP", 53)]
        .iter()
        .map(|(p, n)| (p.to_string(), *n))
        .collect();
    assert_eq!(egress, expected);
    assert!(
        all(&objs, "ServiceMonitor").is_empty(),
        "ServiceMonitor is off by default"
    );

    assert!(
        all(
            &render(&helm, &["--set", "networkPolicy.enabled=false"]),
            "NetworkPolicy"
        )
        .is_empty()
    );

    let objs = render(
        &helm,
        &[
            "--set",
            "metrics.serviceMonitor.enabled=true",
            "--set",
            "metrics.serviceMonitor.labels.release=prom",
        ],
    );
    let sm = one(&objs, "ServiceMonitor");
    assert_eq!(sm["spec"]["endpoints"][0]["port"], "metrics");
    assert_eq!(sm["spec"]["endpoints"][0]["path"], "/metrics");
    assert_eq!(
        sm["spec"]["selector"]["matchLabels"],
        one(&objs, "Service")["spec"]["selector"]
    );
    assert_eq!(sm["metadata"]["labels"]["release"], "prom");

    let objs = render(
        &helm,
        &[
            "--set",
            "metrics.enabled=false",
            "--set",
            "metrics.serviceMonitor.enabled=true",
        ],
    );
    assert!(all(&objs, "ServiceMonitor").is_empty());
    assert_eq!(
        one(&objs, "Service")["spec"]["ports"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[test]
fn crd_is_the_generated_one_kept_on_uninstall_and_optional() {
    let helm = helm_or_skip!();
    let text =
        std::fs::read_to_string(root().join("crds/residencypolicies.residencyguard.io.yaml"))
            .expect("crds/ file");
    let generated: Value = serde_norway::from_str(&text).expect("CRD parses");
    let objs = render(&helm, NO_ARGS);
    let crd = one(&objs, "CustomResourceDefinition");
    assert_eq!(crd["metadata"]["name"], generated["metadata"]["name"]);
    assert_eq!(
        crd["spec"], generated["spec"],
        "chart CRD differs from crds/: run scripts/render-deploy.sh"
    );
    assert_eq!(
        crd["metadata"]["annotations"]["helm.sh/resource-policy"],
        "keep"
    );
    assert!(crd["metadata"]["annotations"].get("helm.sh/hook").is_none());
    // Nothing else is kept on uninstall.
    for o in &objs {
        if kind(o) != "CustomResourceDefinition" {
            assert!(
                o["metadata"]["annotations"]
                    .get("helm.sh/resource-policy")
                    .is_none(),
                "{} {}",
                kind(o),
                name(o)
            );
        }
    }
    assert!(
        all(
            &render(&helm, &["--set", "crds.install=false"]),
            "CustomResourceDefinition"
        )
        .is_empty()
    );
}

#[test]
fn data_files_reach_the_operator_and_parse_with_the_real_binary() {
    let helm = helm_or_skip!();
    let dir = tempfile::tempdir().unwrap();
    let values = dir.path().join("values.yaml");
    std::fs::write(
        &values,
        r#"
catalogue:
  extraRegions:
    - provider: private
      region: dc-shanghai-1
      jurisdiction: mainland-china
      country: CN
      location: Shanghai
      source: "Facilities register FR-2024-118"
mainlandCidrs:
  extra: ["203.0.113.0/24", "2001:db8::/32"]
  replace: ["1.0.1.0/24", "240e::/20"]
clusterCidrs: ["10.244.0.0/16", "10.96.0.0/12"]
"#,
    )
    .unwrap();
    let objs = render(&helm, &["-f", values.to_str().unwrap()]);
    let cm = one(&objs, "ConfigMap");
    let e = env(&objs);
    assert_eq!(
        e["RESIDENCY_GUARD_CLUSTER_CIDRS"],
        "10.244.0.0/16,10.96.0.0/12"
    );
    let pod = &one(&objs, "Deployment")["spec"]["template"]["spec"];
    let volume = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "config")
        .expect("config volume");
    assert_eq!(volume["configMap"]["name"], name(cm));
    let mount = container(&objs)["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "config")
        .expect("config mount");
    let mount_path = mount["mountPath"].as_str().unwrap();

    // Each file variable points at a key of the mounted ConfigMap; write the
    // files out and hand them to the real binary, as the pod would.
    let mut cli = Command::new(env!("CARGO_BIN_EXE_residency-guard"));
    cli.arg("check")
        .args(["-f", chart_dir().join("examples").to_str().unwrap()])
        .arg("--cluster-cidr")
        .arg(&e["RESIDENCY_GUARD_CLUSTER_CIDRS"]);
    for (var, flag) in [
        ("RESIDENCY_GUARD_CATALOGUE", "--catalogue"),
        ("RESIDENCY_GUARD_MAINLAND_CIDRS", "--mainland-cidrs"),
        (
            "RESIDENCY_GUARD_EXTRA_MAINLAND_CIDRS",
            "--extra-mainland-cidrs",
        ),
    ] {
        let path = Path::new(&e[var]);
        assert_eq!(path.parent().unwrap(), Path::new(mount_path), "{var}");
        let key = path.file_name().unwrap().to_str().unwrap();
        let content = cm["data"][key]
            .as_str()
            .unwrap_or_else(|| panic!("{var}: ConfigMap has no key {key}"));
        let file = dir.path().join(key);
        std::fs::write(&file, content).unwrap();
        cli.arg(flag).arg(&file);
    }
    assert!(
        cm["data"]["catalogue.yaml"]
            .as_str()
            .unwrap()
            .contains("dc-shanghai-1")
    );
    let out = run(cli.env_remove("RESIDENCY_GUARD_OUTPUT"));
    assert_eq!(
        out.status.code(),
        Some(0),
        "residency-guard check rejected the chart's data files:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // Changing the data rolls the pods.
    let checksum = |objs: &[Value]| {
        one(objs, "Deployment")["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
            .clone()
    };
    assert_ne!(checksum(&objs), checksum(&render(&helm, NO_ARGS)));
}

/// Fresher address data from a ConfigMap the user made: mounted without a
/// new image, passed as the operator's --mainland-cidrs, and its age checked
/// against `mainlandCidrs.maxAgeDays` by the real binary reading the file the
/// pod would read.
#[test]
fn fresher_address_data_is_mounted_from_a_config_map_and_its_age_checked() {
    let helm = helm_or_skip!();
    let defaults = render(&helm, NO_ARGS);
    assert_eq!(
        env(&defaults)["RESIDENCY_GUARD_MAX_ADDRESS_DATA_AGE_DAYS"],
        "180"
    );
    assert!(!env(&defaults).contains_key("RESIDENCY_GUARD_MAINLAND_CIDRS"));

    let objs = render(
        &helm,
        &[
            "--set",
            "mainlandCidrs.configMap.name=rg-address-data",
            "--set",
            "mainlandCidrs.maxAgeDays=90",
        ],
    );
    let e = env(&objs);
    assert_eq!(e["RESIDENCY_GUARD_MAX_ADDRESS_DATA_AGE_DAYS"], "90");
    let file = Path::new(&e["RESIDENCY_GUARD_MAINLAND_CIDRS"]);
    let pod = &one(&objs, "Deployment")["spec"]["template"]["spec"];
    let volume = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "address-data")
        .expect("address-data volume");
    assert_eq!(volume["configMap"]["name"], "rg-address-data");
    assert_eq!(
        volume["configMap"]["items"][0]["key"],
        "mainland-china.cidrs"
    );
    let mount = container(&objs)["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "address-data")
        .expect("address-data mount");
    assert_eq!(mount["readOnly"], true);
    assert_eq!(
        file,
        Path::new(mount["mountPath"].as_str().unwrap())
            .join(volume["configMap"]["items"][0]["path"].as_str().unwrap()),
        "the variable names the mounted key"
    );
    // The chart's own ConfigMap is not involved.
    assert!(all(&objs, "ConfigMap").is_empty());

    // The binary, given the file as the pod's environment gives it.
    let dir = tempfile::tempdir().unwrap();
    let list = dir.path().join("mainland-china.cidrs");
    let check = |header_date: &str| {
        std::fs::write(
            &list,
            format!("# Database created: {header_date}\n1.0.1.0/24\n240e::/20\n"),
        )
        .unwrap();
        let out = run(Command::new(env!("CARGO_BIN_EXE_residency-guard"))
            .arg("check")
            .args(["-f", chart_dir().join("examples").to_str().unwrap()])
            .args(["--now", "2026-12-07T00:00:00Z", "--lang", "en"])
            .env("RESIDENCY_GUARD_MAINLAND_CIDRS", &list)
            .env(
                "RESIDENCY_GUARD_MAX_ADDRESS_DATA_AGE_DAYS",
                &e["RESIDENCY_GUARD_MAX_ADDRESS_DATA_AGE_DAYS"],
            )
            .env_remove("RESIDENCY_GUARD_OUTPUT"));
        assert_eq!(out.status.code(), Some(0));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let fresh = check("2026-11-30");
    assert!(
        !fresh.contains("warning: The mainland-China address data"),
        "{fresh}"
    );
    let stale = check("2026-08-01");
    assert!(
        stale.contains(&format!(
            "warning: The mainland-China address data ({}) is dated 2026-08-01, 128 days ago, older than the 90 days allowed",
            list.display()
        )),
        "{stale}"
    );

    // One replacement at a time, and `replace` can carry its date.
    let err = try_render(
        &helm,
        RELEASE,
        NS,
        &[
            "--set",
            "mainlandCidrs.configMap.name=rg-address-data",
            "--set",
            "mainlandCidrs.replace={1.0.1.0/24}",
        ],
    )
    .unwrap_err();
    assert!(
        err.contains("set configMap.name or replace, not both"),
        "{err}"
    );
    let objs = render(
        &helm,
        &[
            "--set",
            "mainlandCidrs.replace={1.0.1.0/24}",
            "--set",
            "mainlandCidrs.replaceDate=2026-11-30",
        ],
    );
    let replaced = one(&objs, "ConfigMap")["data"]["mainland-cidrs.txt"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        residency_guard::freshness::stated_date(&replaced),
        Some("2026-11-30T00:00:00Z".parse().unwrap()),
        "{replaced}"
    );
}

#[test]
fn example_policies_are_valid() {
    let examples = chart_dir().join("examples");
    let out = run(Command::new(env!("CARGO_BIN_EXE_residency-guard"))
        .arg("check")
        .arg("-f")
        .arg(&examples));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let count = std::fs::read_dir(&examples).unwrap().count();
    assert!(count >= 2, "at least two example policies");
    assert!(stdout.contains(&format!("{count} policies")), "{stdout}");
}

#[test]
fn names_follow_the_release_and_namespace() {
    let helm = helm_or_skip!();
    let (release, ns) = ("rg", "guard-system");
    let fullname = "rg-residency-guard";
    let objs = render_as(&helm, release, ns, &["--set", "audit.enabled=true"]);
    check_webhooks(&objs, fullname, ns, "Fail", &[]);
    assert_perms(
        &rbac(&objs, fullname, ns),
        &union(&[
            webhook_perms(),
            self_managed_perms(fullname, ns),
            audit_perms_auto(ns),
        ]),
        "rg",
    );
    let e = env(&objs);
    assert_eq!(
        e["RESIDENCY_GUARD_SERVICE_NAME"],
        name(one(&objs, "Service"))
    );
    assert_eq!(
        e["RESIDENCY_GUARD_WEBHOOK_CONFIGS"],
        name(webhook_config(&objs))
    );
    assert_eq!(e["RESIDENCY_GUARD_CERT_SECRET"], format!("{fullname}-tls"));
    assert_eq!(
        one(&objs, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"],
        name(one(&objs, "ServiceAccount"))
    );

    let objs = render_as(&helm, release, ns, &["--set", "fullnameOverride=guard"]);
    check_webhooks(&objs, "guard", ns, "Fail", &[]);
    assert_eq!(env(&objs)["RESIDENCY_GUARD_CERT_SECRET"], "guard-tls");
}

#[test]
fn notes_tell_the_user_what_to_do_next() {
    let helm = helm_or_skip!();
    let notes = |args: &[&str]| {
        let out = run(Command::new(&helm)
            .args(["install", RELEASE])
            .arg(chart_dir())
            .args(["--namespace", NS, "--dry-run=client"])
            .args(args));
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8(out.stdout).unwrap();
        text[text.find("NOTES:").expect("NOTES")..].to_owned()
    };
    let default = notes(NO_ARGS);
    for needle in [
        "rollout status deployment/residency-guard",
        "kubectl get rp",
        "residencyguard.io/data-class",
        "caBundle",
        "FAILS",
    ] {
        assert!(
            default.contains(needle),
            "NOTES should mention {needle}:\n{default}"
        );
    }
    // With the audit on (the default) NOTES say what VIOLATIONS means;
    // with it off, that the column stays empty.
    assert!(
        default.contains("VIOLATIONS is the number of") && default.contains("kubectl describe rp"),
        "{default}"
    );
    // The reports to look at: those of the API(s) reports.kind selects.
    for (args, open_reports, policy_reports) in [
        (NO_ARGS, true, true),
        (&["--set", "reports.kind=openReports"][..], true, false),
        (&["--set", "reports.kind=policyReport"][..], false, true),
    ] {
        let text = notes(args);
        assert_eq!(
            (
                text.contains("kubectl get reports.openreports.io -A"),
                text.contains("kubectl get policyreports.wgpolicyk8s.io -A")
            ),
            (open_reports, policy_reports),
            "{args:?}:\n{text}"
        );
    }
    let no_audit = notes(&["--set", "audit.enabled=false"]);
    assert!(
        no_audit.contains("The VIOLATIONS column stays empty: audit.enabled=false"),
        "{no_audit}"
    );
    let ignore = notes(&[
        "--set",
        "webhook.failurePolicy=Ignore",
        "--set",
        "certificates.mode=certManager",
    ]);
    assert!(
        ignore.contains("admitted unchecked") && ignore.contains("cert-manager"),
        "{ignore}"
    );
}

#[test]
fn deploy_manifests_and_chart_crd_are_up_to_date() {
    let helm = helm_or_skip!();
    let out = run(Command::new(root().join("scripts/render-deploy.sh"))
        .arg("--check")
        .env("HELM", &helm));
    assert!(
        out.status.success(),
        "deploy/ or the chart's CRD template is stale:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // deploy/ starts with its Namespace, restricted by Pod Security Admission.
    let text = std::fs::read_to_string(root().join("deploy/residency-guard.yaml")).unwrap();
    let objs = parse_yaml_stream(&text);
    assert_eq!(kind(&objs[0]), "Namespace");
    assert_eq!(name(&objs[0]), NS);
    assert_eq!(
        objs[0]["metadata"]["labels"]["pod-security.kubernetes.io/enforce"],
        "restricted"
    );
    assert_eq!(objs[1..].len(), render(&helm, NO_ARGS).len());
}

/// Leaf value paths the schema defines: objects with `properties` are walked
/// unless their default is empty (`issuerRef: {}`); free-form maps and lists
/// are leaves.
fn schema_leaves(schema: &Value, defaults: &Value, prefix: &str, out: &mut Vec<String>) {
    for (key, sub) in schema["properties"].as_object().expect("properties") {
        let path = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        if sub.get("properties").is_some() {
            assert_eq!(
                sub["additionalProperties"], false,
                "{path}: a defined object must be strict"
            );
        }
        let default = &defaults[key];
        if sub.get("properties").is_some() && default.as_object().is_some_and(|m| !m.is_empty()) {
            schema_leaves(sub, default, &path, out);
        } else {
            out.push(path);
        }
    }
}

#[test]
fn values_schema_and_readme_agree() {
    let schema: Value = serde_json::from_str(
        &std::fs::read_to_string(chart_dir().join("values.schema.json")).unwrap(),
    )
    .expect("schema is JSON");
    assert_eq!(schema["additionalProperties"], false);
    let values: Value =
        serde_norway::from_str(&std::fs::read_to_string(chart_dir().join("values.yaml")).unwrap())
            .unwrap();
    let readme = std::fs::read_to_string(chart_dir().join("README.md")).unwrap();
    let mut leaves = Vec::new();
    schema_leaves(&schema, &values, "", &mut leaves);
    for path in &leaves {
        let default = path.split('.').fold(&values, |v, k| &v[k]);
        assert!(
            !default.is_null(),
            "{path}: in the schema but without a default in values.yaml"
        );
        assert!(
            readme.contains(&format!("`{path}`")),
            "{path}: not documented in the chart README"
        );
    }
    for (path, allowed) in [
        ("webhook.failurePolicy", vec!["Fail", "Ignore"]),
        ("lang", vec!["en", "zh-CN"]),
        ("log.format", vec!["json", "text"]),
        (
            "reports.kind",
            vec!["auto", "policyReport", "openReports", "both"],
        ),
    ] {
        let node = path.split('.').fold(&schema, |v, k| &v["properties"][k]);
        assert_eq!(node["enum"], json!(allowed), "{path}");
    }
    let mode = &schema["properties"]["certificates"]["properties"]["mode"]["enum"];
    assert_eq!(
        *mode,
        json!(["selfManaged", "certManager", "existingSecret"])
    );
    assert_eq!(
        schema["properties"]["webhook"]["properties"]["timeoutSeconds"]["maximum"],
        3
    );
}

#[test]
fn dockerfile_matches_the_chart_and_the_contract() {
    let dockerfile = std::fs::read_to_string(root().join("Dockerfile")).expect("Dockerfile");
    let lines: Vec<&str> = dockerfile
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .collect();
    let froms: Vec<&str> = lines
        .iter()
        .filter(|l| l.starts_with("FROM "))
        .copied()
        .collect();
    assert_eq!(froms.len(), 2, "multi-stage: a builder and a runtime");
    assert!(
        froms[0].starts_with("FROM rust:") && froms[0].contains("bookworm"),
        "{}",
        froms[0]
    );
    assert_eq!(froms[1], "FROM gcr.io/distroless/cc-debian12:nonroot");
    assert!(dockerfile.contains("cargo build --release --locked"));
    // The runtime stage: only the binary, non-root as in the pod spec, the binary as entrypoint.
    let runtime = &dockerfile[dockerfile.find(froms[1]).unwrap()..];
    let copies: Vec<&str> = runtime.lines().filter(|l| l.starts_with("COPY")).collect();
    assert_eq!(
        copies,
        ["COPY --from=build /residency-guard /residency-guard"]
    );
    assert!(runtime.contains("\nUSER 65532:65532\n"));
    // The resident-memory figure of the cold-start benchmark assumes it.
    assert!(runtime.contains("\nENV MALLOC_ARENA_MAX=1\n"));
    assert!(runtime.contains("\nENTRYPOINT [\"/residency-guard\"]\n"));
    assert!(!runtime.contains("RUN "), "no shell in the runtime image");
    let ignore = std::fs::read_to_string(root().join(".dockerignore")).expect(".dockerignore");
    for entry in ["target/", ".tools/", ".git/"] {
        assert!(
            ignore.lines().any(|l| l.trim() == entry),
            ".dockerignore: {entry}"
        );
    }
}

/// Storage objects are not reviewed at admission: a PersistentVolume or
/// StorageClass holds no classified data until a governed workload mounts
/// it, and that workload is judged (with the claim, its PV and its class)
/// when it is applied; the audit re-judges running workloads when a claim
/// binds or a PV or class changes. Reviewing them would put the webhook in
/// the path of the PV controller's binding writes. The one exception is a
/// claim's data-class label (it classifies the data at rest): only a claim
/// that carries it, and only when the label itself is set, changed or
/// removed, so binding writes never reach the webhook; and a claim's
/// CREATE as a clone of another claim (it copies the data).
#[test]
fn storage_objects_are_watched_not_reviewed() {
    let helm = helm_or_skip!();
    let objs = render(&helm, NO_ARGS);
    let config = webhook_config(&objs);
    for w in config["webhooks"].as_array().unwrap() {
        if w["name"] == CLAIMS {
            let cond = &match_conditions(w)["data-class-label-set-or-changed"];
            assert!(cond.contains(&format!("'{LABEL}' in oldObject.metadata.labels")));
            continue;
        }
        if w["name"] == CLAIM_CLONES {
            assert_eq!(strings(&w["rules"][0]["operations"]), ["CREATE"]);
            continue;
        }
        for (group, resource) in webhook_rules(w).keys() {
            assert!(
                !matches!(
                    (group.as_str(), resource.as_str()),
                    ("", "persistentvolumeclaims" | "persistentvolumes")
                        | ("storage.k8s.io", "storageclasses")
                ),
                "{} reviews {group}/{resource}",
                w["name"]
            );
        }
    }
}

/// `webhook.clientCA`: the PEM (a ConfigMap of the chart) or an existing
/// ConfigMap is mounted and named in RESIDENCY_GUARD_CLIENT_CA_FILE; the
/// pods roll when the PEM changes; both at once is refused; without it
/// nothing is mounted.
#[test]
fn webhook_client_ca_is_mounted_and_named_in_the_environment() {
    let helm = helm_or_skip!();
    const PEM: &str = "-----BEGIN CERTIFICATE-----\nMIIBfake\n-----END CERTIFICATE-----";
    let path = "/etc/residency-guard/client-ca/ca.crt";
    let deployment = |objs: &[Value]| one(objs, "Deployment").clone();
    let volume = |d: &Value| {
        d["spec"]["template"]["spec"]["volumes"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|v| v["name"] == "client-ca")
            .map(|v| {
                v["configMap"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string()
            })
    };
    let mounted = |d: &Value| {
        d["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|m| m["name"] == "client-ca" && m["mountPath"] == "/etc/residency-guard/client-ca")
    };

    let objs = render(&helm, &["--set", &format!("webhook.clientCA.pem={PEM}")]);
    assert_eq!(env(&objs)["RESIDENCY_GUARD_CLIENT_CA_FILE"], path);
    let d = deployment(&objs);
    let map = format!("{}-client-ca", fullname_of(&objs));
    assert_eq!(volume(&d).as_deref(), Some(map.as_str()));
    assert!(mounted(&d));
    let cm = all(&objs, "ConfigMap")
        .into_iter()
        .find(|c| name(c) == map)
        .expect("the chart's client CA ConfigMap");
    assert_eq!(cm["data"]["ca.crt"].as_str().map(str::trim), Some(PEM));
    let checksum = |objs: &[Value]| {
        deployment(objs)["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    let other = render(
        &helm,
        &[
            "--set",
            &format!("webhook.clientCA.pem={}", PEM.replace("fake", "other")),
        ],
    );
    assert_ne!(
        checksum(&objs),
        checksum(&other),
        "pods roll when the CA changes"
    );

    let objs = render(
        &helm,
        &["--set", "webhook.clientCA.existingConfigMap=api-client-ca"],
    );
    assert_eq!(env(&objs)["RESIDENCY_GUARD_CLIENT_CA_FILE"], path);
    assert_eq!(volume(&deployment(&objs)).as_deref(), Some("api-client-ca"));
    assert!(
        all(&objs, "ConfigMap")
            .iter()
            .all(|c| !name(c).ends_with("-client-ca")),
        "an existing ConfigMap is not created"
    );

    let e = try_render(
        &helm,
        RELEASE,
        NS,
        &[
            "--set",
            "webhook.clientCA.existingConfigMap=api-client-ca",
            "--set",
            &format!("webhook.clientCA.pem={PEM}"),
        ],
    )
    .expect_err("pem and existingConfigMap together");
    assert!(e.contains("set pem or existingConfigMap, not both"), "{e}");

    let objs = render::<&str>(&helm, &[]);
    assert!(!env(&objs).contains_key("RESIDENCY_GUARD_CLIENT_CA_FILE"));
    assert_eq!(volume(&deployment(&objs)), None);
}

fn fullname_of(objs: &[Value]) -> String {
    name(one(objs, "Deployment")).to_string()
}

/// The alerts of the PrometheusRule: name -> the rule.
fn alert_rules(objs: &[Value]) -> BTreeMap<String, Value> {
    one(objs, "PrometheusRule")["spec"]["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .flat_map(|g| g["rules"].as_array().expect("rules").iter())
        .filter_map(|r| Some((r["alert"].as_str()?.to_owned(), r.clone())))
        .collect()
}

fn dashboard_config_maps(objs: &[Value]) -> Vec<&Value> {
    all(objs, "ConfigMap")
        .into_iter()
        .filter(|c| name(c).ends_with("-dashboard"))
        .collect()
}

#[test]
fn alerts_and_dashboard_are_off_by_default_and_follow_their_values() {
    let helm = helm_or_skip!();
    let objs = render(&helm, NO_ARGS);
    assert!(all(&objs, "PrometheusRule").is_empty(), "off by default");
    assert!(dashboard_config_maps(&objs).is_empty(), "off by default");

    // On: every alert, each with a runbook section that exists.
    let objs = render(
        &helm,
        &[
            "--set",
            "metrics.prometheusRule.enabled=true",
            "--set",
            "metrics.prometheusRule.labels.release=prom",
        ],
    );
    let rule = one(&objs, "PrometheusRule");
    assert_eq!(rule["metadata"]["namespace"], NS);
    assert_eq!(rule["metadata"]["labels"]["release"], "prom");
    let alerts = alert_rules(&objs);
    assert_eq!(
        alerts.keys().cloned().collect::<BTreeSet<_>>(),
        set(&[
            "ResidencyGuardWebhookErrorBudgetBurnFast",
            "ResidencyGuardWebhookErrorBudgetBurnSlow",
            "ResidencyGuardWebhookLatencyBudgetBurnFast",
            "ResidencyGuardWebhookLatencyBudgetBurnSlow",
            "ResidencyGuardUnavailable",
            "ResidencyGuardAuditNotPlanned",
            "ResidencyGuardCertificateExpiringSoon",
            "ResidencyGuardWatchStale",
            "ResidencyGuardNewViolations",
        ])
    );
    let runbook = std::fs::read_to_string(root().join("docs/runbook.md")).expect("runbook");
    for (alert, r) in &alerts {
        let url = r["annotations"]["runbook_url"]
            .as_str()
            .expect("runbook_url");
        let anchor = url
            .strip_prefix(
                "https://github.com/residency-guard/residency-guard/blob/main/docs/runbook.md#",
            )
            .unwrap_or_else(|| panic!("{alert}: {url}"));
        let section = runbook
            .lines()
            .filter_map(|l| l.strip_prefix("## "))
            .find(|h| h.to_lowercase() == anchor)
            .unwrap_or_else(|| panic!("{alert}: no section #{anchor} in docs/runbook.md"));
        assert!(alert.starts_with(section), "{alert} -> {section}");
        assert!(
            !r["labels"]["severity"]
                .as_str()
                .unwrap_or_default()
                .is_empty(),
            "{alert}"
        );
        // The default selector: this release's Service, as the ServiceMonitor scrapes it.
        let expr = r["expr"].as_str().expect("expr");
        assert!(
            expr.contains("residency_guard:")
                || expr.contains(r#"namespace="residency-guard",job="residency-guard""#),
            "{alert}: {expr}"
        );
    }
    assert_eq!(
        alerts["ResidencyGuardUnavailable"]["labels"]["severity"],
        "critical"
    );
    assert_eq!(alerts["ResidencyGuardUnavailable"]["for"], "2m");
    // The SLO and thresholds come from the values.
    assert!(
        alerts["ResidencyGuardWebhookErrorBudgetBurnFast"]["expr"]
            .as_str()
            .unwrap()
            .contains("(14.4 * (1 - 99.9 / 100))")
    );
    assert!(
        alerts["ResidencyGuardCertificateExpiringSoon"]["expr"]
            .as_str()
            .unwrap()
            .ends_with("< 14 * 86400")
    );
    assert!(
        alerts["ResidencyGuardWatchStale"]["expr"]
            .as_str()
            .unwrap()
            .ends_with("> 30"),
        "webhook.staleAfterSeconds"
    );
    assert!(
        alerts["ResidencyGuardAuditNotPlanned"]["expr"]
            .as_str()
            .unwrap()
            .ends_with("> 30 * 60")
    );
    let recording = &one(&objs, "PrometheusRule")["spec"]["groups"][0]["rules"];
    assert!(
        recording
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["expr"].as_str().unwrap().contains(r#"le="0.1024""#))
    );

    let objs = render(
        &helm,
        &[
            "--set",
            "metrics.prometheusRule.enabled=true",
            "--set",
            "webhook.failurePolicy=Ignore",
            "--set",
            "audit.enabled=false",
            "--set",
            "webhook.staleAfterSeconds=45",
            "--set",
            "metrics.prometheusRule.certificateExpiryDays=7",
            "--set-json",
            "metrics.prometheusRule.slo.availability=99.5",
            "--set",
            "metrics.prometheusRule.slo.latencyThresholdSeconds=0.2048",
            "--set",
            r#"metrics.prometheusRule.selector=job="rg""#,
            "--set",
            "metrics.prometheusRule.alertLabels.team=platform",
            "--set",
            "metrics.prometheusRule.runbookURL=https://wiki.example/rg",
        ],
    );
    let alerts = alert_rules(&objs);
    assert!(
        !alerts.contains_key("ResidencyGuardAuditNotPlanned"),
        "no audit, no audit alerts"
    );
    assert!(!alerts.contains_key("ResidencyGuardNewViolations"));
    assert_eq!(
        alerts["ResidencyGuardUnavailable"]["labels"]["severity"], "warning",
        "failurePolicy Ignore"
    );
    assert!(
        alerts["ResidencyGuardWatchStale"]["expr"]
            .as_str()
            .unwrap()
            .ends_with("> 45")
    );
    assert!(
        alerts["ResidencyGuardCertificateExpiringSoon"]["expr"]
            .as_str()
            .unwrap()
            .contains(r#"{job="rg"}"#)
    );
    assert!(
        alerts["ResidencyGuardCertificateExpiringSoon"]["expr"]
            .as_str()
            .unwrap()
            .ends_with("< 7 * 86400")
    );
    assert!(
        alerts["ResidencyGuardWebhookErrorBudgetBurnSlow"]["expr"]
            .as_str()
            .unwrap()
            .contains("(1 - 99.5 / 100)")
    );
    for (alert, r) in &alerts {
        assert_eq!(r["labels"]["team"], "platform", "{alert}");
        assert!(
            r["annotations"]["runbook_url"]
                .as_str()
                .unwrap()
                .starts_with("https://wiki.example/rg#"),
            "{alert}"
        );
    }
    let recording = &one(&objs, "PrometheusRule")["spec"]["groups"][0]["rules"];
    assert!(
        recording
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["expr"].as_str().unwrap().contains(r#"le="0.2048""#))
    );

    // A threshold of the wrong type is refused by the schema.
    let err = try_render(
        &helm,
        RELEASE,
        NS,
        &["--set-json", "metrics.prometheusRule.slo.availability=100"],
    )
    .unwrap_err();
    assert!(err.contains("availability") && err.contains("100"), "{err}");

    // The dashboard: the file in the chart, labelled for the sidecar.
    let objs = render(&helm, &["--set", "metrics.dashboard.enabled=true"]);
    let cms = dashboard_config_maps(&objs);
    assert_eq!(cms.len(), 1);
    assert_eq!(cms[0]["metadata"]["labels"]["grafana_dashboard"], "1");
    assert_eq!(cms[0]["metadata"]["namespace"], NS);
    let file = std::fs::read_to_string(chart_dir().join("dashboards/residency-guard.json"))
        .expect("dashboard file");
    let rendered = cms[0]["data"]["residency-guard.json"]
        .as_str()
        .expect("dashboard JSON");
    assert_eq!(rendered.trim_end(), file.trim_end());
    let dash: Value = serde_json::from_str(rendered).expect("the dashboard is JSON");
    assert_eq!(dash["uid"], "residency-guard");

    let objs = render(
        &helm,
        &[
            "--set",
            "metrics.dashboard.enabled=true",
            "--set",
            "metrics.dashboard.label=dashboards",
            "--set",
            "metrics.dashboard.labelValue=residency",
            "--set",
            "metrics.dashboard.namespace=monitoring",
            "--set",
            "metrics.dashboard.annotations.grafana_folder=Compliance",
        ],
    );
    let cm = dashboard_config_maps(&objs)[0];
    assert_eq!(cm["metadata"]["labels"]["dashboards"], "residency");
    assert!(cm["metadata"]["labels"].get("grafana_dashboard").is_none());
    assert_eq!(cm["metadata"]["namespace"], "monitoring");
    assert_eq!(
        cm["metadata"]["annotations"]["grafana_folder"],
        "Compliance"
    );
}

/// egress.cni decides which layer kinds are watched and reviewed: the RBAC
/// and both webhook entries cover exactly those, CREATE/UPDATE with
/// webhook.failurePolicy and DELETE with its own entry (Ignore).
#[test]
fn egress_layer_kinds_follow_egress_cni() {
    let helm = helm_or_skip!();
    let groups = |cni: &str| -> BTreeSet<(String, String)> {
        let objs = render(&helm, &["--set".to_string(), format!("egress.cni={cni}")]);
        let rules = webhook_rules(webhook(&objs, EGRESS_LAYERS));
        let deletes = webhook_rules(webhook(&objs, EGRESS_LAYER_DELETES));
        assert!(
            rules.values().all(|ops| *ops == set(&["CREATE", "UPDATE"])),
            "{cni}"
        );
        assert!(
            deletes.values().all(|ops| *ops == set(&["DELETE"])),
            "{cni}"
        );
        assert_eq!(
            webhook(&objs, EGRESS_LAYER_DELETES)["failurePolicy"],
            "Ignore"
        );
        assert_eq!(
            webhook(&objs, EGRESS_LAYERS)["clientConfig"]["service"]["path"],
            "/validate/networkpolicies"
        );
        // A Calico NetworkSet's labels decide which rules select it: an
        // update of its labels alone is sent.
        let changed = &match_conditions(webhook(&objs, EGRESS_LAYERS))["spec-changed"];
        assert!(
            changed.contains("object.spec != oldObject.spec")
                && changed.contains("object.metadata.labels != oldObject.metadata.labels"),
            "{cni}: {changed}"
        );
        let keys: BTreeSet<(String, String)> = rules.keys().cloned().collect();
        assert_eq!(keys, deletes.keys().cloned().collect(), "{cni}");
        // The ClusterRole lists and watches the same.
        let watched: BTreeSet<(String, String)> = rbac(&objs, RELEASE, NS)
            .into_iter()
            .filter(|p| {
                [
                    "cilium.io",
                    "crd.projectcalico.org",
                    "policy.networking.k8s.io",
                ]
                .contains(&p.1.as_str())
            })
            .map(|p| (p.1, p.2))
            .collect();
        assert_eq!(watched, keys, "{cni}");
        keys
    };
    let pairs = |items: &[(&str, &str)]| -> BTreeSet<(String, String)> {
        items
            .iter()
            .map(|(g, r)| (g.to_string(), r.to_string()))
            .collect()
    };
    let anp = [
        ("policy.networking.k8s.io", "adminnetworkpolicies"),
        ("policy.networking.k8s.io", "baselineadminnetworkpolicies"),
    ];
    let cilium = [
        ("cilium.io", "ciliumnetworkpolicies"),
        ("cilium.io", "ciliumclusterwidenetworkpolicies"),
    ];
    let calico = [
        ("crd.projectcalico.org", "networkpolicies"),
        ("crd.projectcalico.org", "globalnetworkpolicies"),
        ("crd.projectcalico.org", "tiers"),
        ("crd.projectcalico.org", "networksets"),
        ("crd.projectcalico.org", "globalnetworksets"),
    ];
    assert_eq!(groups("kubernetes"), pairs(&anp));
    assert_eq!(groups("cilium"), pairs(&cilium));
    assert_eq!(groups("calico"), pairs(&[&calico[..], &anp[..]].concat()));
    assert_eq!(
        groups("auto"),
        pairs(&[&cilium[..], &calico[..], &anp[..]].concat())
    );
    assert!(try_render(&helm, RELEASE, NS, &["--set", "egress.cni=weave"]).is_err());
}
