//! The CRD on a real API server: it is accepted (the generated file and the
//! chart's copy), a policy using every field is valid, and every CEL rule,
//! enum and format rejects a bad value with its own message in `kubectl`
//! output. `helm template` and `helm lint` compile no CEL and estimate no
//! cost: only an API server can prove this.

use std::time::Duration;

use serde_json::Value;

use crate::harness::{Cluster, cluster, eventually, root, yaml_documents};

const CRD: &str = "residencypolicies.residencyguard.io";

/// A policy that uses every field of the spec, with valid values.
const EVERY_FIELD: &str = r#"
apiVersion: residencyguard.io/v1alpha1
kind: ResidencyPolicy
metadata: {name: e2e-every-field}
spec:
  dataClasses: [personal, credit, financial, health, map, government, accounting, genetic, important]
  namespaceSelector:
    matchLabels: {env: prod}
    matchExpressions:
    - {key: tier, operator: In, values: [gold, silver]}
  placement:
    jurisdiction: mainland-china
    allowedNodes:
      nodeSelectorTerms:
      - matchExpressions:
        - {key: pool.example.com/name, operator: In, values: [cn-general, cn-gpu]}
  egress:
    mode: MainlandOnly
    allowedCIDRs: [203.0.113.0/24, "2001:db8::/32", 198.51.100.7]
  storage:
    mode: Unchecked
  action: Warn
  exemptions:
  - selector: {matchLabels: {app: fx-rates}}
    namespaces: [treasury]
    basis: StandardContract
    reference: "CAC filing 2026-0042"
    approvedBy: "dpo@example.com"
    expires: "2027-06-30"
"#;

/// One invalid policy: what is wrong (a path in the schema and the rule
/// kind), the spec, and what the API server must say.
struct Case {
    /// Schema path, as `walk` below names it, e.g. `.spec.action` (enum).
    path: &'static str,
    spec: &'static str,
    says: &'static [&'static str],
}

const CASES: &[Case] = &[
    Case {
        path: "cel .spec.egress.allowedCIDRs",
        spec: "dataClasses: [personal]\negress: {mode: MainlandOnly, allowedCIDRs: [203.0.113.0/24, not-a-cidr]}",
        says: &[
            "spec.egress.allowedCIDRs",
            "every entry of allowedCIDRs must be a CIDR such as 203.0.113.0/24 or an IP address",
        ],
    },
    Case {
        path: "cel .spec.exemptions[]",
        spec: "dataClasses: [personal]\nexemptions:\n- {selector: {}, namespaces: [treasury], basis: StandardContract, reference: r, approvedBy: dpo, expires: \"2027-06-30\"}",
        says: &[
            "an exemption must select specific workloads: an empty selector would exempt everything",
        ],
    },
    Case {
        path: "enum .spec.action",
        spec: "dataClasses: [personal]\naction: Block",
        says: &[
            "spec.action",
            "Unsupported value: \"Block\"",
            "\"Audit\", \"Warn\", \"Deny\"",
        ],
    },
    Case {
        path: "enum .spec.dataClasses[]",
        spec: "dataClasses: [personal, medical]",
        says: &[
            "spec.dataClasses[1]",
            "Unsupported value: \"medical\"",
            "\"personal\"",
        ],
    },
    Case {
        path: "enum .spec.egress.mode",
        spec: "dataClasses: [personal]\negress: {mode: Everything}",
        says: &[
            "spec.egress.mode",
            "Unsupported value: \"Everything\"",
            "\"MainlandOnly\"",
        ],
    },
    Case {
        path: "enum .spec.storage.mode",
        spec: "dataClasses: [personal]\nstorage: {mode: Anywhere}",
        says: &[
            "spec.storage.mode",
            "Unsupported value: \"Anywhere\"",
            "\"MainlandOnly\"",
            "\"Unchecked\"",
        ],
    },
    Case {
        path: "enum .spec.exemptions[].basis",
        spec: "dataClasses: [personal]\nexemptions:\n- {selector: {matchLabels: {app: a}}, namespaces: [treasury], basis: Handshake, reference: r, approvedBy: dpo, expires: \"2027-06-30\"}",
        says: &[
            "spec.exemptions[0].basis",
            "Unsupported value: \"Handshake\"",
            "\"StandardContract\"",
        ],
    },
    Case {
        path: "enum .spec.placement.jurisdiction",
        spec: "dataClasses: [personal]\nplacement: {jurisdiction: hong-kong}",
        says: &[
            "spec.placement.jurisdiction",
            "Unsupported value: \"hong-kong\"",
            "\"mainland-china\"",
        ],
    },
    Case {
        path: "format .spec.exemptions[].expires",
        spec: "dataClasses: [personal]\nexemptions:\n- {selector: {matchLabels: {app: a}}, namespaces: [treasury], basis: StandardContract, reference: r, approvedBy: dpo, expires: \"2026-02-30\"}",
        says: &[
            "spec.exemptions[0].expires",
            "must be of type date",
            "2026-02-30",
        ],
    },
    Case {
        path: "cel .spec.exemptions[] namespaces",
        spec: "dataClasses: [personal]\nexemptions:\n- {selector: {matchLabels: {app: a}}, basis: StandardContract, reference: r, approvedBy: dpo, expires: \"2027-06-30\"}",
        says: &["an exemption must name the namespaces it covers"],
    },
    Case {
        path: "bound .spec.dataClasses",
        spec: "dataClasses: []",
        says: &["spec.dataClasses", "should have at least 1 items"],
    },
    Case {
        path: "bound .spec.exemptions[].reference",
        spec: "dataClasses: [personal]\nexemptions:\n- {selector: {matchLabels: {app: a}}, namespaces: [treasury], basis: StandardContract, reference: \"\", approvedBy: dpo, expires: \"2027-06-30\"}",
        says: &[
            "spec.exemptions[0].reference",
            "should be at least 1 chars long",
        ],
    },
];

/// Every CEL rule, enum and format of the CRD's spec, as `walk` names them.
fn rules_in(schema: &Value, path: &str, out: &mut Vec<String>) {
    if schema.get("enum").is_some() {
        out.push(format!("enum {path}"));
    }
    for rule in schema
        .get("x-kubernetes-validations")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        // One entry per rule, named by the rule's message.
        let message = rule["message"].as_str().unwrap_or_default();
        out.push(format!("cel {path}: {message}"));
    }
    if let Some(f) = schema.get("format").and_then(Value::as_str)
        && f == "date"
    {
        out.push(format!("format {path}"));
    }
    if let Some(props) = schema.get("properties").and_then(Value::as_object) {
        for (k, v) in props {
            rules_in(v, &format!("{path}.{k}"), out);
        }
    }
    if let Some(items) = schema.get("items") {
        rules_in(items, &format!("{path}[]"), out);
    }
}

fn generated_crd() -> (String, Value) {
    let text = std::fs::read_to_string(root().join("crds").join(format!("{CRD}.yaml")))
        .expect("the generated CRD");
    let doc = yaml_documents(&text).remove(0);
    (text, doc)
}

fn install_crd(c: &Cluster, yaml: &str) {
    c.must_apply(yaml);
    c.must(&[
        "wait",
        "--for=condition=Established",
        &format!("crd/{CRD}"),
        "--timeout=60s",
    ]);
}

fn policy(name: &str, spec: &str) -> String {
    let indented: String = spec.lines().map(|l| format!("  {l}\n")).collect();
    format!(
        "apiVersion: residencyguard.io/v1alpha1\nkind: ResidencyPolicy\nmetadata: {{name: {name}}}\nspec:\n{indented}"
    )
}

#[test]
fn the_generated_crd_and_the_charts_copy_are_accepted() {
    let Some(c) = cluster("crd-accepted") else {
        return;
    };
    let (text, _) = generated_crd();
    install_crd(&c, &text);
    let chart = root().join("charts/residency-guard");
    let rendered = c.must_helm(&[
        "template",
        "x",
        chart.to_str().expect("UTF-8 path"),
        "--show-only",
        "templates/crd.yaml",
    ]);
    install_crd(&c, &rendered);
    // The server stores the same schema for both.
    let stored = c.get_json(&["crd", CRD]).expect("the CRD is stored");
    assert_eq!(
        stored["spec"]["versions"][0]["schema"],
        generated_crd().1["spec"]["versions"][0]["schema"]
    );
}

#[test]
fn a_policy_with_every_field_is_valid() {
    let Some(c) = cluster("crd-every-field") else {
        return;
    };
    install_crd(&c, &generated_crd().0);
    let r = c.kubectl_in(&["apply", "--dry-run=server", "-f", "-"], EVERY_FIELD);
    assert!(r.ok, "a valid policy was rejected:\n{}", r.stderr);
    assert!(
        r.stdout.contains("created (server dry run)"),
        "{}",
        r.stdout
    );
}

#[test]
fn every_cel_rule_enum_and_format_rejects_with_its_own_message() {
    let Some(c) = cluster("crd-rules") else {
        return;
    };
    let (text, crd) = generated_crd();
    install_crd(&c, &text);

    // Every rule of the schema has a case here: a rule added without one
    // fails this test.
    let mut rules = Vec::new();
    rules_in(
        &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"],
        ".spec",
        &mut rules,
    );
    for rule in &rules {
        let covered = match rule.strip_prefix("cel ") {
            // A CEL rule is covered by a case that expects its message.
            Some(cel) => {
                let message = cel.split_once(": ").map_or("", |(_, m)| m);
                CASES
                    .iter()
                    .any(|k| k.says.iter().any(|s| message.starts_with(s)))
            }
            None => CASES.iter().any(|k| k.path == rule),
        };
        assert!(covered, "no case for {rule}: add one to CASES");
    }

    for (i, case) in CASES.iter().enumerate() {
        let yaml = policy(&format!("e2e-invalid-{i}"), case.spec);
        let r = c.kubectl_in(&["apply", "--dry-run=server", "-f", "-"], &yaml);
        assert!(
            !r.ok,
            "{}: accepted, should be rejected:\n{yaml}",
            case.path
        );
        for text in case.says {
            assert!(
                r.stderr.contains(text),
                "{}: kubectl did not say {text:?}:\n{}",
                case.path,
                r.stderr
            );
        }
    }
}

#[test]
fn list_and_string_bounds_keep_the_cel_cost_within_budget() {
    let Some(c) = cluster("crd-bounds") else {
        return;
    };
    install_crd(&c, &generated_crd().0);
    // 256 addresses (the bound) pass and are all checked by the rule...
    let many: Vec<String> = (0..256).map(|i| format!("\"10.{i}.0.0/16\"")).collect();
    let ok = policy(
        "e2e-bounds",
        &format!(
            "dataClasses: [personal]\negress: {{mode: MainlandOnly, allowedCIDRs: [{}]}}",
            many.join(", ")
        ),
    );
    let r = c.kubectl_in(&["apply", "--dry-run=server", "-f", "-"], &ok);
    assert!(r.ok, "{}", r.stderr);
    // ...one more is refused by the bound, with the count.
    let mut too_many = many.clone();
    too_many.push("\"192.0.2.0/24\"".into());
    let bad = policy(
        "e2e-bounds",
        &format!(
            "dataClasses: [personal]\negress: {{mode: MainlandOnly, allowedCIDRs: [{}]}}",
            too_many.join(", ")
        ),
    );
    let r = c.kubectl_in(&["apply", "--dry-run=server", "-f", "-"], &bad);
    assert!(!r.ok);
    assert!(
        r.stderr.contains("must have at most 256 items"),
        "{}",
        r.stderr
    );
    // The API server is still answering (no pathological evaluation).
    eventually("the API server answers", Duration::from_secs(5), || {
        c.kubectl(&["get", "rp"]).ok.then_some(())
    });
}
