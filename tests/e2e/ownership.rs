//! Every object is seen (issue 22, finding 1), on a real control plane: an
//! ordinary developer (ClusterRole `edit` in the namespace, impersonated)
//! adds a controller ownerReference to a ConfigMap of theirs on a pinned,
//! classified Deployment. The NetworkPolicy isolating its egress still
//! cannot be deleted, and the audit still lists the Deployment.

use std::time::Duration;

use crate::harness::{cluster, eventually, install_and_run};

const POLICY: &str = r#"
apiVersion: residencyguard.io/v1alpha1
kind: ResidencyPolicy
metadata: {name: e2e-owned-personal}
spec:
  dataClasses: [personal]
  namespaceSelector: {matchLabels: {residencyguard.io/e2e: "true"}}
  egress: {mode: MainlandOnly}
  action: Deny
"#;

const REGION: &str = "topology.kubernetes.io/region";

fn records(ns: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: records, namespace: {ns}}}\nspec:\n  replicas: 2\n  selector: {{matchLabels: {{app: records}}}}\n  template:\n    metadata: {{labels: {{app: records, residencyguard.io/data-class: personal}}}}\n    spec:\n      nodeSelector: {{{REGION}: cn-north-1}}\n      containers: [{{name: c, image: registry.k8s.io/pause:3.10}}]\n"
    )
}

fn records_egress(ns: &str) -> String {
    format!(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: records-egress, namespace: {ns}}}\nspec:\n  podSelector: {{matchLabels: {{app: records}}}}\n  policyTypes: [Egress]\n  egress:\n  - to:\n    - podSelector: {{}}\n"
    )
}

/// The rows of `kubectl get rp NAME`: VIOLATIONS is the fourth column.
fn violations(c: &crate::harness::Cluster, policy: &str) -> Option<u32> {
    let out = c.kubectl(&["get", "rp", policy, "--no-headers"]);
    out.stdout.split_whitespace().nth(3)?.parse().ok()
}

#[test]
fn an_owner_reference_to_a_config_map_hides_nothing() {
    let Some(c) = cluster("ownership-config-map") else {
        return;
    };
    let ns = "e2e-owned";
    // The PolicyReport API (upstream CRDs), for the audit's reports.
    crate::harness::remove_report_crds(&c);
    crate::harness::install_report_crds(&c, crate::harness::POLICY_REPORT_CRDS);
    let _installed = install_and_run(
        &c,
        "e2e-owned",
        "e2e-owned-system",
        &["--set", "audit.enabled=true"],
    );
    crate::harness::apply_policies(&c, &["e2e-owned-personal"], POLICY);
    c.fresh_namespace(ns, &[("residencyguard.io/e2e", "true")]);
    // bob: the built-in `edit` role in this namespace, nothing else.
    c.grant_edit(ns, "bob");
    let as_bob = |args: &[&str]| {
        let mut all = args.to_vec();
        all.push("--as=bob");
        c.kubectl(&all)
    };
    let apply_as_bob = |yaml: &str| c.kubectl_in(&["apply", "--as=bob", "-f", "-"], yaml);

    // bob's compliant workload: pinned, its egress isolated.
    let both = format!("{}---\n{}", records_egress(ns), records(ns));
    let r = eventually(
        "the pinned Deployment and its NetworkPolicy to be admitted",
        Duration::from_secs(30),
        || {
            let r = apply_as_bob(&both);
            r.ok.then_some(r)
        },
    );
    assert!(r.ok);
    // The webhook protects the NetworkPolicy before the trick...
    let r = as_bob(&[
        "delete",
        "networkpolicy",
        "records-egress",
        "-n",
        ns,
        "--dry-run=server",
    ]);
    assert!(!r.ok, "deleting the isolating NetworkPolicy was admitted");

    // ...the trick: a ConfigMap of bob's becomes the Deployment's controller.
    as_bob(&["create", "configmap", "decoy", "-n", ns]);
    let uid = c
        .get_json(&["configmap", "decoy", "-n", ns])
        .and_then(|cm| cm["metadata"]["uid"].as_str().map(str::to_string))
        .expect("the ConfigMap's uid");
    let patch = format!(
        r#"{{"metadata":{{"ownerReferences":[{{"apiVersion":"v1","kind":"ConfigMap","name":"decoy","uid":"{uid}","controller":true}}]}}}}"#
    );
    let r = as_bob(&[
        "patch",
        "deployment",
        "records",
        "-n",
        ns,
        "--type=merge",
        "-p",
        &patch,
    ]);
    assert!(r.ok, "bob could not add the ownerReference: {}", r.stderr);
    let owned = c
        .get_json(&["deployment", "records", "-n", ns])
        .expect("the Deployment");
    assert_eq!(owned["metadata"]["ownerReferences"][0]["kind"], "ConfigMap");
    // The operator's watch sees the patch within its debounce (50 ms);
    // give it ample time before the deletion is tried.
    std::thread::sleep(Duration::from_secs(3));

    // Deleting the NetworkPolicy is still refused, naming the Deployment.
    let r = as_bob(&["delete", "networkpolicy", "records-egress", "-n", ns]);
    assert!(
        !r.ok,
        "deleting the NetworkPolicy of a ConfigMap-owned classified Deployment was admitted"
    );
    for text in [
        "admission webhook \"networkpolicy-deletes.residencyguard.io\" denied the request",
        "DELETE NetworkPolicy e2e-owned/records-egress",
        "Deployment e2e-owned/records",
    ] {
        assert!(
            r.stderr.contains(text),
            "missing {text:?} in:\n{}",
            r.stderr
        );
    }
    assert!(
        c.get_json(&["networkpolicy", "records-egress", "-n", ns])
            .is_some()
    );

    // The audit: the policy becomes Audit-only (a platform decision), bob
    // deletes the NetworkPolicy, and the Deployment is the offender.
    c.must(&[
        "patch",
        "rp",
        "e2e-owned-personal",
        "--type=merge",
        "-p",
        r#"{"spec":{"action":"Audit"}}"#,
    ]);
    let r = eventually(
        "the NetworkPolicy deletion to be admitted under Audit",
        Duration::from_secs(20),
        || {
            let r = as_bob(&["delete", "networkpolicy", "records-egress", "-n", ns]);
            r.ok.then_some(r)
        },
    );
    assert!(r.ok);
    let n = eventually(
        "kubectl get rp to show the Deployment's violation",
        Duration::from_secs(30),
        || violations(&c, "e2e-owned-personal").filter(|n| *n >= 1),
    );
    let p = c
        .get_json(&["rp", "e2e-owned-personal"])
        .expect("the policy");
    let offenders = p["status"]["topOffenders"].to_string();
    assert!(
        offenders.contains("\"records\"") && offenders.contains("EgressUnrestricted"),
        "{n} violations, offenders: {offenders}"
    );
    eventually(
        "the PolicyReport to list the Deployment's failure",
        Duration::from_secs(40),
        || {
            let r = c.get_json(&["policyreports.wgpolicyk8s.io", "residency-guard", "-n", ns])?;
            r["results"]
                .as_array()?
                .iter()
                .any(|x| {
                    x["result"] == "fail"
                        && x["rule"] == "EgressUnrestricted"
                        && x["resources"][0]["kind"] == "Deployment"
                        && x["resources"][0]["name"] == "records"
                        && x["properties"]["owner"] == "ConfigMap decoy"
                })
                .then_some(())
        },
    );
}
