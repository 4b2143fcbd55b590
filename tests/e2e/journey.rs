//! The user journey on a real cluster: install the chart with helm, run the
//! operator under the chart's own ServiceAccount (a missing RBAC verb fails
//! here), and use kubectl as an application team would.

use std::time::Duration;

use serde_json::Value;

use crate::harness::{
    Installed, Mode, apply_when_webhook_answers, cluster, eventually, fullname, http_body,
    http_status, install_and_run_in, install_generated_crd, mode,
};

const REGION: &str = "topology.kubernetes.io/region";

/// The policies of the journey: personal data Deny (placement and egress),
/// accounting Warn (placement only), in namespaces labelled for the test.
const POLICIES: &str = r#"
apiVersion: residencyguard.io/v1alpha1
kind: ResidencyPolicy
metadata: {name: e2e-personal}
spec:
  dataClasses: [personal]
  namespaceSelector: {matchLabels: {residencyguard.io/e2e: "true"}}
  egress: {mode: MainlandOnly}
  action: Deny
---
apiVersion: residencyguard.io/v1alpha1
kind: ResidencyPolicy
metadata: {name: e2e-accounting}
spec:
  dataClasses: [accounting]
  namespaceSelector: {matchLabels: {residencyguard.io/e2e: "true"}}
  action: Warn
"#;

/// A Deployment whose pod template carries `class`; `regions` pins it with
/// a required node affinity.
pub(crate) fn deployment(
    ns: &str,
    name: &str,
    class: &str,
    regions: &[&str],
    replicas: u32,
) -> String {
    let affinity = if regions.is_empty() {
        String::new()
    } else {
        format!(
            "      affinity:\n        nodeAffinity:\n          requiredDuringSchedulingIgnoredDuringExecution:\n            nodeSelectorTerms:\n            - matchExpressions:\n              - {{key: {REGION}, operator: In, values: [{}]}}\n",
            regions.join(", ")
        )
    };
    let labels = if class.is_empty() {
        format!("{{app: {name}}}")
    } else {
        format!("{{app: {name}, residencyguard.io/data-class: {class}}}")
    };
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n  replicas: {replicas}\n  selector: {{matchLabels: {{app: {name}}}}}\n  template:\n    metadata: {{labels: {labels}}}\n    spec:\n{affinity}      containers: [{{name: c, image: registry.k8s.io/pause:3.10}}]\n"
    )
}

/// A NetworkPolicy isolating `app`'s egress to in-cluster pods (and
/// `extra` ipBlocks).
pub(crate) fn egress_policy(ns: &str, name: &str, app: &str, extra_cidrs: &[&str]) -> String {
    let mut to = String::from("    - podSelector: {}\n");
    for c in extra_cidrs {
        to.push_str(&format!("    - ipBlock: {{cidr: {c}}}\n"));
    }
    format!(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n  podSelector: {{matchLabels: {{app: {app}}}}}\n  policyTypes: [Egress]\n  egress:\n  - to:\n{to}"
    )
}

fn pods_nodes(c: &crate::harness::Cluster, ns: &str, app: &str) -> Vec<String> {
    c.get_json(&["pods", "-n", ns, "-l", &format!("app={app}")])
        .and_then(|l| {
            l["items"].as_array().map(|items| {
                items
                    .iter()
                    .filter_map(|p| p["spec"]["nodeName"].as_str().map(str::to_string))
                    .collect()
            })
        })
        .unwrap_or_default()
}

pub(crate) fn setup(c: &crate::harness::Cluster, release: &str, apps: &str) -> Installed {
    setup_in(mode(), c, release, apps, &[])
}

/// `setup` in a given mode, with more chart values (`--set` pairs).
fn setup_in(
    mode: Mode,
    c: &crate::harness::Cluster,
    release: &str,
    apps: &str,
    values: &[&str],
) -> Installed {
    let installed = install_and_run_in(mode, c, release, &format!("{release}-system"), values);
    apply_policies(c);
    c.fresh_namespace(apps, &[("residencyguard.io/e2e", "true")]);
    wait_until_enforced(c, apps);
    installed
}

fn apply_policies(c: &crate::harness::Cluster) {
    crate::harness::apply_policies(c, &["e2e-personal", "e2e-accounting"], POLICIES);
}

/// The operator's snapshot has the policies once a dry run that only they
/// would refuse is refused.
fn wait_until_enforced(c: &crate::harness::Cluster, apps: &str) {
    let probe = deployment(apps, "probe", "personal", &[], 1);
    eventually(
        "the operator to enforce the policies",
        Duration::from_secs(40),
        || {
            let r = c.kubectl_in(&["apply", "--dry-run=server", "-f", "-"], &probe);
            r.stderr.contains("policy e2e-personal").then_some(())
        },
    );
}

#[test]
fn kubectl_apply_is_judged_denials_warnings_and_dry_runs() {
    let Some(c) = cluster("journey-admission") else {
        return;
    };
    let apps = "e2e-apps";
    let _installed = setup(&c, "e2e-admission", apps);

    // An unpinned classified Deployment: denied, with the whole message.
    let denied = apply_when_webhook_answers(&c, &deployment(apps, "unpinned", "personal", &[], 1));
    assert!(
        !denied.ok,
        "an unpinned personal-data Deployment was admitted"
    );
    for text in [
        "admission webhook \"workload-templates.residencyguard.io\" denied the request",
        "Deployment e2e-apps/unpinned carries personal information",
        "policy e2e-personal requires mainland-China nodes",
        "us-node-1",
        "Fix: add a required node affinity on topology.kubernetes.io/region In [cn-north-1, cn-northwest-1]",
        "no NetworkPolicy with Egress in its policyTypes selects its pods in namespace e2e-apps",
    ] {
        assert!(
            denied.stderr.contains(text),
            "missing {text:?} in:\n{}",
            denied.stderr
        );
    }

    // --dry-run=server is judged the same, and creates nothing.
    let dry = c.kubectl_in(
        &["apply", "--dry-run=server", "-f", "-"],
        &deployment(apps, "unpinned", "personal", &[], 1),
    );
    assert!(!dry.ok);
    assert!(dry.stderr.contains("denied the request"), "{}", dry.stderr);
    assert!(
        c.get_json(&["deployment", "unpinned", "-n", apps])
            .is_none()
    );

    // The README's fix, in one apply: the NetworkPolicy and the pinned
    // Deployment it protects. Admitted the first time.
    let both = format!(
        "{}---\n{}",
        egress_policy(apps, "pinned-egress", "pinned", &[]),
        deployment(
            apps,
            "pinned",
            "personal",
            &["cn-north-1", "cn-northwest-1"],
            3
        )
    );
    let r = c.apply(&both);
    assert!(
        r.ok,
        "NetworkPolicy + Deployment in one apply was refused:\n{}",
        r.stderr
    );
    // Its pods are scheduled onto mainland nodes only.
    let nodes = eventually("3 pods scheduled", Duration::from_secs(60), || {
        let n = pods_nodes(&c, apps, "pinned");
        (n.len() == 3).then_some(n)
    });
    assert!(
        nodes.iter().all(|n| n == "cn-node-1" || n == "cn-node-2"),
        "pods scheduled outside mainland nodes: {nodes:?}"
    );

    // A Warn policy admits with Warning: lines naming the policy and fix.
    let warned = c.apply(&deployment(apps, "ledger", "accounting", &[], 1));
    assert!(warned.ok, "{}", warned.stderr);
    assert!(
        warned.stderr.contains("Warning: residency-guard:"),
        "{}",
        warned.all()
    );
    assert!(
        warned.stderr.contains("policy e2e-accounting"),
        "{}",
        warned.all()
    );

    // A NetworkPolicy change that opens egress abroad for the governed
    // workload is denied, with the destination named.
    let opened = c.apply(&egress_policy(
        apps,
        "pinned-egress",
        "pinned",
        &["8.8.8.0/24"],
    ));
    assert!(!opened.ok, "egress to 8.8.8.0/24 was admitted");
    for text in [
        "admission webhook \"networkpolicies.residencyguard.io\" denied the request",
        "NetworkPolicy e2e-apps/pinned-egress",
        "8.8.8.0",
    ] {
        assert!(
            opened.stderr.contains(text),
            "missing {text:?} in:\n{}",
            opened.stderr
        );
    }
}

#[test]
fn a_namespace_and_its_workloads_in_one_apply_are_judged() {
    let Some(c) = cluster("journey-namespace") else {
        return;
    };
    let installed = setup(&c, "e2e-namespace", "e2e-ns-base");
    let ns = "e2e-ns-new";
    c.forget_namespace_later(ns);
    let namespace = format!(
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {ns}\n  labels: {{residencyguard.io/e2e: \"true\", residencyguard.io/data-class: personal}}\n"
    );
    // The class comes only from the brand-new Namespace: the workload must
    // still be judged (denied: unpinned), not admitted unjudged.
    let unpinned = format!("{namespace}---\n{}", deployment(ns, "plain", "", &[], 1));
    let r = apply_when_webhook_answers(&c, &unpinned);
    assert!(
        !r.ok,
        "a workload in a new personal-data Namespace was admitted unjudged:\n{}",
        r.all()
    );
    assert!(
        r.stderr
            .contains("Deployment e2e-ns-new/plain carries personal information"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("on Namespace e2e-ns-new"), "{}", r.stderr);

    // And the compliant version in one apply (Namespace, NetworkPolicy,
    // pinned Deployment) is admitted the first time.
    c.forget_namespace_later(ns);
    let compliant = format!(
        "{namespace}---\n{}---\n{}",
        egress_policy(ns, "pinned-egress", "pinned", &[]),
        deployment(ns, "pinned", "", &["cn-north-1"], 1)
    );
    let r = c.apply(&compliant);
    assert!(r.ok, "refused:\n{}", r.stderr);
    let m = installed.operator.metrics();
    assert!(
        m.contains("residency_guard_live_confirmations_total"),
        "the live confirmations are not counted:\n{m}"
    );
}

#[test]
fn helm_install_upgrade_and_uninstall_with_default_values() {
    let Some(c) = cluster("journey-helm") else {
        return;
    };
    let release = "e2e-defaults";
    let ns = "e2e-defaults-system";
    let name = fullname(release);
    // A fresh cluster: no CRD yet (another release's CRD, kept on its
    // uninstall, could not be adopted by this one).
    c.cluster_object("crd", "residencypolicies.residencyguard.io");
    let r = c.helm_install(release, ns, &[]);
    assert!(
        r.ok,
        "helm install with default values failed:\n{}",
        r.stderr
    );
    let vwc = c
        .get_json(&["validatingwebhookconfiguration", &name])
        .expect("the webhook configuration exists");
    let service = &vwc["webhooks"][0]["clientConfig"]["service"];
    assert_eq!(service["name"], Value::from(name.as_str()));
    assert_eq!(service["namespace"], Value::from(ns));

    let chart = crate::harness::root().join("charts/residency-guard");
    let r = c.helm(&[
        "upgrade",
        release,
        chart.to_str().expect("UTF-8"),
        "-n",
        ns,
        "--set",
        "lang=zh-CN",
        "--set",
        "audit.enabled=false",
        "--set",
        "webhook.failurePolicy=Ignore",
    ]);
    assert!(r.ok, "helm upgrade failed:\n{}", r.stderr);
    let vwc = c
        .get_json(&["validatingwebhookconfiguration", &name])
        .expect("the webhook configuration exists");
    assert_eq!(vwc["webhooks"][0]["failurePolicy"], "Ignore");

    let r = c.helm(&["uninstall", release, "-n", ns, "--wait"]);
    assert!(r.ok, "helm uninstall failed:\n{}", r.stderr);
    assert!(
        c.get_json(&["validatingwebhookconfiguration", &name])
            .is_none(),
        "helm uninstall left the ValidatingWebhookConfiguration behind"
    );
    let left = c
        .get_json(&[
            "validatingwebhookconfigurations",
            "-l",
            &format!("app.kubernetes.io/instance={release}"),
        ])
        .expect("list webhook configurations");
    assert_eq!(left["items"].as_array().map(Vec::len), Some(0), "{left}");
    // The CRD stays (policies survive an uninstall).
    assert!(
        c.get_json(&["crd", "residencypolicies.residencyguard.io"])
            .is_some()
    );
}

#[test]
fn helm_install_with_the_audit_enabled() {
    let Some(c) = cluster("journey-helm-audit") else {
        return;
    };
    let release = "e2e-audit-values";
    let ns = "e2e-audit-values-system";
    c.cluster_object("crd", "residencypolicies.residencyguard.io");
    let r = c.helm_install(release, ns, &["--set", "audit.enabled=true"]);
    assert!(
        r.ok,
        "helm install --set audit.enabled=true failed:\n{}",
        r.stderr
    );
    let deployment = c
        .get_json(&["deployment", &fullname(release), "-n", ns])
        .expect("the operator Deployment");
    let env = deployment["spec"]["template"]["spec"]["containers"][0]["env"].to_string();
    assert!(env.contains("RESIDENCY_GUARD_AUDIT"), "{env}");
}

/// With the operator gone (crashed, evicted, not yet started), classified
/// workloads are refused (failurePolicy Fail: a compliance control), and
/// nothing else is held up: unclassified workloads, kube-system, deleting
/// NetworkPolicies and deleting namespaces.
#[test]
fn with_the_operator_down_only_judged_writes_fail() {
    let Some(c) = cluster("journey-operator-down") else {
        return;
    };
    let apps = "e2e-down-apps";
    let plain = "e2e-down-plain";
    let mut installed = setup(&c, "e2e-down", apps);
    c.fresh_namespace(plain, &[]);
    c.must_apply(&egress_policy(plain, "isolate", "web", &[]));
    c.must_apply(&egress_policy(plain, "isolate-too", "web", &[]));
    c.must_apply(&deployment(plain, "web", "", &[], 1));

    installed.operator.kill();

    // Classified: refused, because nobody can judge it.
    let r = c.apply(&deployment(
        apps,
        "classified",
        "personal",
        &["cn-north-1"],
        1,
    ));
    assert!(!r.ok, "a classified workload was admitted unjudged");
    assert!(r.stderr.contains("failed calling webhook"), "{}", r.stderr);
    // A NetworkPolicy CREATE anywhere is judged (it may open egress for a
    // governed pod), so it fails too: documented in the README.
    let r = c.apply(&egress_policy(plain, "another", "web", &[]));
    assert!(!r.ok);
    assert!(
        r.stderr.contains("networkpolicies.residencyguard.io"),
        "{}",
        r.stderr
    );

    // Unclassified workloads in an unlabelled namespace: untouched.
    let r = c.apply(&deployment(plain, "web-2", "", &[], 1));
    assert!(r.ok, "{}", r.stderr);
    // kube-system: never sent to the webhook.
    let r = c.apply(&egress_policy("kube-system", "e2e-probe", "none", &[]));
    assert!(r.ok, "{}", r.stderr);
    c.must(&["delete", "networkpolicy", "e2e-probe", "-n", "kube-system"]);
    // Deleting a NetworkPolicy: its own entry, failurePolicy Ignore.
    let r = c.kubectl(&["delete", "networkpolicy", "isolate", "-n", plain]);
    assert!(
        r.ok,
        "NetworkPolicy DELETE failed with the operator down:\n{}",
        r.stderr
    );
    // Deleting a namespace (the namespace controller deletes its
    // NetworkPolicies): completes.
    c.must(&["delete", "namespace", plain, "--wait=false"]);
    eventually(
        "the namespace to be deleted with the operator down",
        Duration::from_secs(90),
        || {
            c.kubectl(&[
                "delete",
                "pods",
                "--all",
                "-n",
                plain,
                "--grace-period=0",
                "--force",
            ]);
            c.get_json(&["namespace", plain]).is_none().then_some(())
        },
    );
}

/// Taking a data class away (a declassification) needs the `declassify`
/// verb: in one step (label and pinning dropped together) or two (label
/// first), on a workload or on its Namespace. With the chart's
/// declassifier role bound, the same change goes through.
#[test]
fn declassifying_needs_the_declassify_verb() {
    let Some(c) = cluster("journey-declassify") else {
        return;
    };
    let apps = "e2e-declassify";
    let release = "e2e-declassify";
    let installed = setup(&c, release, apps);
    // alice may edit workloads in the namespace (the built-in `edit` role)
    // and label one Namespace, nothing about data classes.
    c.grant_edit(apps, "alice");
    let labelled_ns = "e2e-declassify-ns";
    c.fresh_namespace(
        labelled_ns,
        &[
            ("residencyguard.io/data-class", "personal"),
            ("residencyguard.io/e2e", "true"),
        ],
    );
    c.cluster_object("clusterrole", "e2e-alice-namespaces");
    c.cluster_object("clusterrolebinding", "e2e-alice-namespaces");
    c.must(&[
        "create",
        "clusterrole",
        "e2e-alice-namespaces",
        "--verb=get,patch,update",
        "--resource=namespaces",
        &format!("--resource-name={labelled_ns}"),
    ]);
    c.must(&[
        "create",
        "clusterrolebinding",
        "e2e-alice-namespaces",
        "--clusterrole=e2e-alice-namespaces",
        "--user=alice",
    ]);

    let both = format!(
        "{}---\n{}",
        egress_policy(apps, "records-egress", "records", &[]),
        deployment(apps, "records", "personal", &["cn-north-1"], 1)
    );
    let r = c.apply(&both);
    assert!(r.ok, "{}", r.stderr);

    let drop_label = r#"[{"op":"remove","path":"/spec/template/metadata/labels/residencyguard.io~1data-class"}]"#;
    let drop_both = r#"[{"op":"remove","path":"/spec/template/metadata/labels/residencyguard.io~1data-class"},{"op":"remove","path":"/spec/template/spec/affinity"}]"#;
    let patch_as_alice = |patch: &str| {
        c.kubectl(&[
            "patch",
            "deployment",
            "records",
            "-n",
            apps,
            "--type=json",
            "-p",
            patch,
            "--as=alice",
        ])
    };
    // One step: declassify and unpin together.
    let r = patch_as_alice(drop_both);
    assert!(!r.ok, "declassified and unpinned in one update");
    for text in [
        "Deployment e2e-declassify/records: this update removes data class [personal]",
        "alice is not allowed to `declassify` dataclasses.residencyguard.io [personal] in namespace e2e-declassify",
        &format!("--clusterrole={}-declassifier", fullname(release)),
    ] {
        assert!(
            r.stderr.contains(text),
            "missing {text:?} in:\n{}",
            r.stderr
        );
    }
    // Two steps: the label alone is refused too, so there is no second step.
    let r = patch_as_alice(drop_label);
    assert!(!r.ok, "the label was dropped without the verb");
    assert!(r.stderr.contains("declassif"), "{}", r.stderr);
    // The Namespace's label: the same rule; an unknown class is refused.
    let r = c.kubectl(&[
        "label",
        "namespace",
        labelled_ns,
        "residencyguard.io/data-class-",
        "--as=alice",
    ]);
    assert!(!r.ok, "a Namespace was declassified without the verb");
    assert!(
        r.stderr
            .contains("Namespace e2e-declassify-ns: this update removes data class [personal]"),
        "{}",
        r.stderr
    );
    let r = c.kubectl(&[
        "label",
        "namespace",
        labelled_ns,
        "residencyguard.io/data-class=personal.medical",
        "--overwrite",
        "--as=alice",
    ]);
    assert!(!r.ok);
    assert!(
        r.stderr.contains("unknown data class \"medical\""),
        "{}",
        r.stderr
    );
    // Adding a class needs nothing.
    let r = c.kubectl(&[
        "label",
        "namespace",
        labelled_ns,
        "residencyguard.io/data-class=personal.health",
        "--overwrite",
        "--as=alice",
    ]);
    assert!(r.ok, "{}", r.stderr);

    // Granted (the chart's declassifier role, in this namespace only): the
    // label may go, and then the workload is simply not governed.
    c.must(&[
        "create",
        "rolebinding",
        "alice-declassify",
        "-n",
        apps,
        &format!("--clusterrole={}-declassifier", fullname(release)),
        "--user=alice",
    ]);
    let r = eventually(
        "the declassification to be authorised",
        Duration::from_secs(10),
        || {
            let r = patch_as_alice(drop_label);
            r.ok.then_some(r)
        },
    );
    assert!(r.ok);
    let m = installed.operator.metrics();
    assert!(
        m.contains("residency_guard_declassifications_total{outcome=\"refused\"}"),
        "{m}"
    );
    assert!(
        m.contains("residency_guard_declassifications_total{outcome=\"allowed\"}"),
        "{m}"
    );
}

/// A watch that keeps failing makes the operator's view stale (here the
/// ResidencyPolicy CRD is deleted, as in a botched CRD upgrade: every relist
/// gets 404). After `webhook.staleAfterSeconds` /readyz fails with the
/// watch and its error, and a classified workload is refused retryably
/// ("cannot judge this request now", HTTP 503) instead of judged on old
/// data; unclassified workloads are never sent. Once the watch lists again
/// the operator is ready and judges as before.
#[test]
fn a_failing_watch_makes_the_operator_unready_and_refuse_to_judge() {
    let Some(c) = cluster("journey-stale") else {
        return;
    };
    let apps = "e2e-stale-apps";
    // Reads /readyz of the local process: Mode::Local also in Pods mode.
    let installed = setup_in(
        Mode::Local,
        &c,
        "e2e-stale",
        apps,
        &["--set", "webhook.staleAfterSeconds=2"],
    );
    let port = installed.operator.admin_port;
    let unpinned = deployment(apps, "unpinned", "personal", &[], 1);
    let plain = deployment(apps, "plain", "", &[], 1);
    let dry_run = |yaml: &str| c.kubectl_in(&["apply", "--dry-run=server", "-f", "-"], yaml);

    c.must(&[
        "delete",
        "crd",
        "residencypolicies.residencyguard.io",
        "--wait=true",
    ]);
    eventually(
        "/readyz to fail once the watch has failed for 2 s",
        Duration::from_secs(60),
        || (http_status(port, "/readyz") == Some(503)).then_some(()),
    );
    let why = http_body(port, "/readyz").unwrap_or_default();
    assert!(why.contains("residencypolicies"), "/readyz says: {why}");
    let r = dry_run(&unpinned);
    assert!(!r.ok, "judged on a stale snapshot: {}", r.stdout);
    assert!(
        r.stderr.contains("cannot judge this request now") && r.stderr.contains("try again"),
        "{}",
        r.stderr
    );
    let r = dry_run(&plain);
    assert!(r.ok, "an unclassified workload was held up: {}", r.stderr);
    assert!(
        installed
            .operator
            .metrics()
            .lines()
            .any(|l| l.starts_with("residency_guard_watch_errors_total") && !l.ends_with(" 0")),
        "watch errors not counted:\n{}",
        installed.operator.metrics()
    );

    // The CRD comes back: the watch lists again and the operator judges.
    install_generated_crd(&c);
    apply_policies(&c);
    eventually("/readyz to pass again", Duration::from_secs(60), || {
        (http_status(port, "/readyz") == Some(200)).then_some(())
    });
    wait_until_enforced(&c, apps);
}
