//! The audit controller on a real cluster, run by `serve` under the chart's
//! ServiceAccount: what already runs is re-judged when a node is relabelled,
//! and the finding reaches policy status (`kubectl get rp`), Events (as
//! `kubectl describe` finds them) and PolicyReports, whose CRDs are
//! installed after the operator started.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::{cluster, eventually, install_and_run};

const REGION: &str = "topology.kubernetes.io/region";

const POLICY: &str = r#"
apiVersion: residencyguard.io/v1alpha1
kind: ResidencyPolicy
metadata: {name: e2e-audit-personal}
spec:
  dataClasses: [personal]
  namespaceSelector: {matchLabels: {residencyguard.io/e2e: "true"}}
  action: Deny
"#;

fn pinned(ns: &str, name: &str, region: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n  replicas: 1\n  selector: {{matchLabels: {{app: {name}}}}}\n  template:\n    metadata: {{labels: {{app: {name}, residencyguard.io/data-class: personal}}}}\n    spec:\n      nodeSelector: {{{REGION}: {region}}}\n      containers: [{{name: c, image: registry.k8s.io/pause:3.10}}]\n"
    )
}

#[test]
fn a_relabelled_node_is_reported_in_status_events_and_policy_reports() {
    let Some(c) = cluster("audit-relabel") else {
        return;
    };
    let apps = "e2e-audit-apps";
    // No report API when the operator starts.
    crate::harness::remove_report_crds(&c);
    let installed = install_and_run(
        &c,
        "e2e-audit",
        "e2e-audit-system",
        &["--set", "audit.enabled=true"],
    );
    crate::harness::apply_policies(&c, &["e2e-audit-personal"], POLICY);
    c.fresh_namespace(apps, &[("residencyguard.io/e2e", "true")]);

    // A compliant Deployment pinned to cn-north-1: its pod lands on cn-node-1.
    eventually(
        "the pinned Deployment to be admitted",
        Duration::from_secs(20),
        || {
            c.apply(&pinned(apps, "records", "cn-north-1"))
                .ok
                .then_some(())
        },
    );
    let pod = eventually("the pod to be bound", Duration::from_secs(60), || {
        let list = c.get_json(&["pods", "-n", apps, "-l", "app=records"])?;
        let p = list["items"].as_array()?.first()?.clone();
        p["spec"]["nodeName"].as_str()?;
        Some(p)
    });
    let pod_name = pod["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert_eq!(pod["spec"]["nodeName"], "cn-node-1");

    // The status is written and says: no violation.
    eventually(
        "the policy status (0 violations)",
        Duration::from_secs(20),
        || {
            let p = c.get_json(&["rp", "e2e-audit-personal"])?;
            (p["status"]["violations"] == 0).then_some(())
        },
    );

    // The PolicyReport CRDs (upstream) arrive after the operator started.
    crate::harness::install_report_crds(&c, crate::harness::POLICY_REPORT_CRDS);

    // The node is relabelled abroad: nothing else notices (scheduling is
    // IgnoredDuringExecution), the audit must.
    c.label_node("cn-node-1", REGION, "us-east-1");
    let relabelled = Instant::now();

    let violations = eventually(
        "kubectl get rp to show the violation",
        Duration::from_secs(5),
        || {
            let out = c.kubectl(&["get", "rp", "e2e-audit-personal", "--no-headers"]);
            // NAME ACTION CLASSES VIOLATIONS AGE
            let cols: Vec<&str> = out.stdout.split_whitespace().collect();
            let n: u32 = cols.get(3)?.parse().ok()?;
            (n >= 1).then_some(n)
        },
    );
    let p = c
        .get_json(&["rp", "e2e-audit-personal"])
        .expect("the policy");
    let offenders = p["status"]["topOffenders"].to_string();
    assert!(offenders.contains(&pod_name), "{offenders}");
    assert!(offenders.contains("BoundToNodeOutside"), "{offenders}");
    let ready = p["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready").cloned())
        .unwrap_or(Value::Null);
    assert!(ready.to_string().contains("1 out of policy"), "{ready}");

    // An Event on the pod, found the way `kubectl describe pod` finds it.
    let uid = pod["metadata"]["uid"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let event = eventually("an Event on the pod", Duration::from_secs(5), || {
        let list = c.get_json(&[
            "events",
            "-n",
            apps,
            "--field-selector",
            &format!("involvedObject.uid={uid},reason=BoundToNodeOutside"),
        ])?;
        list["items"].as_array()?.first().cloned()
    });
    let message = event["message"].as_str().unwrap_or_default();
    assert!(message.contains("cn-node-1"), "{message}");
    assert!(message.contains("us-east-1"), "{message}");
    let within = relabelled.elapsed();
    println!("relabel reported in status and Events within {within:?} ({violations} violations)");

    // The PolicyReport, once the operator has found the new API.
    eventually(
        "a PolicyReport naming the node",
        Duration::from_secs(40),
        || {
            let r = c.get_json(&[
                "policyreports.wgpolicyk8s.io",
                "residency-guard",
                "-n",
                apps,
            ])?;
            r["results"]
                .as_array()?
                .iter()
                .any(|x| {
                    x["result"] == "fail"
                        && x["rule"] == "BoundToNodeOutside"
                        && x["properties"]["node"] == "cn-node-1"
                        && x["properties"]["region"] == "us-east-1"
                })
                .then_some(())
        },
    );
    let log = installed.operator.log();
    assert!(
        log.contains("the report API is installed now") && log.contains("wgpolicyk8s.io/v1alpha2"),
        "the operator did not say it found the PolicyReport API"
    );
}

/// A policy the operator cannot compile (here: stored before the operator
/// ran, with an allowedNodes region abroad) is not dropped: its strictest
/// reading is enforced at admission, and the policy's status, an Event and
/// a metric say so.
#[test]
fn an_invalid_policy_stays_enforced_and_says_so() {
    let Some(c) = cluster("audit-invalid-policy") else {
        return;
    };
    let apps = "e2e-invalid-apps";
    crate::harness::install_generated_crd(&c);
    c.cluster_object("residencypolicy", "e2e-invalid");
    // No webhook yet, so nothing refuses it: the API server's schema
    // accepts it; only the operator knows ap-east-1 is Hong Kong.
    c.must_apply(
        r#"
apiVersion: residencyguard.io/v1alpha1
kind: ResidencyPolicy
metadata: {name: e2e-invalid}
spec:
  dataClasses: [personal]
  namespaceSelector: {matchLabels: {residencyguard.io/e2e: "true"}}
  placement:
    allowedNodes:
      nodeSelectorTerms:
      - matchExpressions: [{key: topology.kubernetes.io/region, operator: In, values: [ap-east-1]}]
  action: Deny
"#,
    );
    let installed = install_and_run(
        &c,
        "e2e-invalid",
        "e2e-invalid-system",
        &["--set", "audit.enabled=true"],
    );
    c.fresh_namespace(apps, &[("residencyguard.io/e2e", "true")]);

    // Enforced: an unpinned personal workload is denied.
    let r = eventually(
        "the strict reading to be enforced",
        Duration::from_secs(20),
        || {
            let r = c.apply(&pinned(apps, "anywhere", "ap-east-1"));
            (!r.ok && r.stderr.contains("policy e2e-invalid")).then_some(r)
        },
    );
    assert!(r.stderr.contains("denied the request"), "{}", r.stderr);

    // Status: not Ready, why, and what is enforced instead.
    let ready = eventually(
        "the policy's Ready condition",
        Duration::from_secs(20),
        || {
            let p = c.get_json(&["rp", "e2e-invalid"])?;
            let cond = p["status"]["conditions"]
                .as_array()?
                .iter()
                .find(|c| c["type"] == "Ready")?
                .clone();
            (cond["reason"] == "InvalidPolicy").then_some(cond)
        },
    );
    assert_eq!(ready["status"], "False");
    let message = ready["message"].as_str().unwrap_or_default();
    assert!(message.contains("spec.placement.allowedNodes"), "{message}");
    assert!(message.contains("strictest reading"), "{message}");

    // An Event on the policy (cluster-scoped objects: namespace default).
    let event = eventually("an Event on the policy", Duration::from_secs(20), || {
        let list = c.get_json(&[
            "events",
            "-n",
            "default",
            "--field-selector",
            "involvedObject.name=e2e-invalid,reason=InvalidPolicy",
        ])?;
        list["items"].as_array()?.first().cloned()
    });
    assert!(
        event["message"]
            .as_str()
            .unwrap_or_default()
            .contains("ap-east-1"),
        "{event}"
    );
    c.kubectl(&[
        "delete",
        "events",
        "-n",
        "default",
        "--field-selector",
        "involvedObject.name=e2e-invalid",
    ]);

    // And a metric.
    let metrics = installed.operator.metrics();
    assert!(
        metrics.contains("residency_guard_policies{state=\"strictest\"} 1"),
        "{metrics}"
    );
}

/// A tenant deletes the PolicyReport of their namespace while its finding
/// persists (issue 23): the audit writes it again within one full pass
/// (`audit.resyncSeconds`, 5 s here).
#[test]
fn a_deleted_policy_report_is_written_again_while_the_finding_persists() {
    let Some(c) = cluster("audit-report-rewritten") else {
        return;
    };
    let apps = "e2e-rewrite-apps";
    crate::harness::remove_report_crds(&c);
    crate::harness::install_report_crds(&c, crate::harness::POLICY_REPORT_CRDS);
    let _installed = install_and_run(
        &c,
        "e2e-rewrite",
        "e2e-rewrite-system",
        &[
            "--set",
            "audit.enabled=true",
            "--set",
            "audit.resyncSeconds=5",
        ],
    );
    crate::harness::apply_policies(
        &c,
        &["e2e-rewrite-personal"],
        r#"
apiVersion: residencyguard.io/v1alpha1
kind: ResidencyPolicy
metadata: {name: e2e-rewrite-personal}
spec:
  dataClasses: [personal]
  namespaceSelector: {matchLabels: {residencyguard.io/e2e-rewrite: "true"}}
  action: Audit
"#,
    );
    c.fresh_namespace(apps, &[("residencyguard.io/e2e-rewrite", "true")]);
    // Unpinned personal data under an Audit policy: admitted, reported.
    let unpinned = format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: anywhere, namespace: {apps}}}\nspec:\n  replicas: 1\n  selector: {{matchLabels: {{app: anywhere}}}}\n  template:\n    metadata: {{labels: {{app: anywhere, residencyguard.io/data-class: personal}}}}\n    spec:\n      containers: [{{name: c, image: registry.k8s.io/pause:3.10}}]\n"
    );
    eventually(
        "the Deployment to be admitted",
        Duration::from_secs(20),
        || c.apply(&unpinned).ok.then_some(()),
    );
    let report = |c: &crate::harness::Cluster| {
        let r = c.get_json(&[
            "policyreports.wgpolicyk8s.io",
            "residency-guard",
            "-n",
            apps,
        ])?;
        let failing = r["results"]
            .as_array()?
            .iter()
            .any(|x| x["result"] == "fail" && x["policy"] == "e2e-rewrite-personal");
        failing.then(|| {
            r["metadata"]["uid"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
    };
    let first = eventually("the PolicyReport", Duration::from_secs(30), || report(&c));

    c.must(&[
        "delete",
        "policyreports.wgpolicyk8s.io",
        "residency-guard",
        "-n",
        apps,
    ]);
    let deleted = Instant::now();
    let again = eventually(
        "the deleted PolicyReport to be written again",
        Duration::from_secs(30),
        || report(&c).filter(|uid| *uid != first),
    );
    println!(
        "PolicyReport written again {:?} after it was deleted (uid {first} -> {again})",
        deleted.elapsed()
    );
}
