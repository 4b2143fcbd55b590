//! A classified DaemonSet on the real control plane: the DaemonSet
//! controller rewrites each pod's required node affinity to one term,
//! `matchFields: metadata.name In [<node>]` (it replaces the template's
//! terms), so the pods it creates are pinned by node name, not by region.
//! The webhook must judge that pin by the named node's trust: a DaemonSet
//! pinned to mainland regions gets its pods, a pod pinned by name to a node
//! abroad is still refused. Everything is applied by an ordinary developer
//! (ClusterRole `edit` in the namespace, through impersonation).

use std::time::Duration;

use serde_json::Value;

use crate::harness::{Cluster, cluster, eventually, install_and_run};

const REGION: &str = "topology.kubernetes.io/region";
const MAINLAND: [&str; 2] = ["cn-north-1", "cn-northwest-1"];

/// Personal data: Deny, placement and egress, in the test's namespace.
const POLICY: &str = r#"
apiVersion: residencyguard.io/v1alpha1
kind: ResidencyPolicy
metadata: {name: e2e-ds-personal}
spec:
  dataClasses: [personal]
  namespaceSelector: {matchLabels: {residencyguard.io/e2e-ds: "true"}}
  egress: {mode: MainlandOnly}
  action: Deny
"#;

/// Egress of `app` isolated to in-cluster pods.
fn egress_policy(ns: &str, app: &str) -> String {
    format!(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: {app}-egress, namespace: {ns}}}\nspec:\n  podSelector: {{matchLabels: {{app: {app}}}}}\n  policyTypes: [Egress]\n  egress:\n  - to:\n    - podSelector: {{}}\n"
    )
}

/// A personal-data DaemonSet pinned to `regions` by required node affinity,
/// the fix the placement message suggests.
fn daemonset(ns: &str, name: &str, regions: &[&str]) -> String {
    format!(
        "apiVersion: apps/v1\nkind: DaemonSet\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n  selector: {{matchLabels: {{app: {name}}}}}\n  template:\n    metadata: {{labels: {{app: {name}, residencyguard.io/data-class: personal}}}}\n    spec:\n      affinity:\n        nodeAffinity:\n          requiredDuringSchedulingIgnoredDuringExecution:\n            nodeSelectorTerms:\n            - matchExpressions:\n              - {{key: {REGION}, operator: In, values: [{}]}}\n      containers: [{{name: c, image: registry.k8s.io/pause:3.10}}]\n",
        regions.join(", ")
    )
}

/// A personal-data Pod pinned by node name the way the DaemonSet controller
/// pins its pods.
fn pod_pinned_to(ns: &str, name: &str, app: &str, node: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: {ns}, labels: {{app: {app}, residencyguard.io/data-class: personal}}}}\nspec:\n  affinity:\n    nodeAffinity:\n      requiredDuringSchedulingIgnoredDuringExecution:\n        nodeSelectorTerms:\n        - matchFields:\n          - {{key: metadata.name, operator: In, values: [{node}]}}\n  containers: [{{name: c, image: registry.k8s.io/pause:3.10}}]\n"
    )
}

fn names_of(list: Option<Value>, path: &[&str]) -> Vec<String> {
    list.and_then(|l| {
        l["items"].as_array().map(|items| {
            items
                .iter()
                .filter_map(|item| {
                    path.iter()
                        .try_fold(item, |v, k| v.get(*k))
                        .and_then(Value::as_str)
                        .map(str::to_string)
                })
                .collect()
        })
    })
    .unwrap_or_default()
}

/// FailedCreate events in `ns` that our webhook caused.
fn webhook_failed_creates(c: &Cluster, ns: &str) -> Vec<String> {
    c.get_json(&[
        "events",
        "-n",
        ns,
        "--field-selector",
        "reason=FailedCreate",
    ])
    .and_then(|l| {
        l["items"].as_array().map(|items| {
            items
                .iter()
                .filter_map(|e| e["message"].as_str().map(str::to_string))
                .filter(|m| m.contains("residencyguard.io"))
                .collect()
        })
    })
    .unwrap_or_default()
}

/// The DaemonSet pinned to mainland regions by required node affinity gets
/// a pod on every mainland node: the DaemonSet controller's pods (pinned by
/// `matchFields metadata.name In [<node>]`) are admitted and scheduled. A
/// pod pinned by name to a node abroad is refused, naming the node.
#[test]
fn a_daemonset_pinned_to_mainland_regions_gets_its_pods() {
    let Some(c) = cluster("daemonset-pinned") else {
        return;
    };
    let release = "e2e-ds";
    let ns = "e2e-ds-apps";
    let _installed = install_and_run(&c, release, &format!("{release}-system"), &[]);
    crate::harness::apply_policies(&c, &["e2e-ds-personal"], POLICY);
    c.fresh_namespace(ns, &[("residencyguard.io/e2e-ds", "true")]);
    // bob may edit workloads in the namespace, nothing more.
    c.grant_edit(ns, "bob");
    let as_bob = |yaml: &str| c.kubectl_in(&["apply", "--as=bob", "-f", "-"], yaml);

    // The operator enforces the policy once an unpinned DaemonSet is refused.
    eventually(
        "the operator to enforce the policy",
        Duration::from_secs(40),
        || {
            let r = c.kubectl_in(
                &["apply", "--dry-run=server", "--as=bob", "-f", "-"],
                &daemonset(ns, "probe", &["ap-east-1"]),
            );
            r.stderr.contains("policy e2e-ds-personal").then_some(())
        },
    );

    // Untainted ones: the DaemonSet tolerates no taint (the kit's worker
    // node, when it runs, is mainland and tainted for the operator's Pods).
    let mainland_nodes = names_of(
        c.get_json(&[
            "nodes",
            "-l",
            &format!("{REGION} in ({})", MAINLAND.join(",")),
        ])
        .map(|mut list| {
            if let Some(items) = list["items"].as_array_mut() {
                items.retain(|n| n["spec"]["taints"].as_array().is_none_or(Vec::is_empty));
            }
            list
        }),
        &["metadata", "name"],
    );
    assert!(
        !mainland_nodes.is_empty(),
        "the cluster has no node in {MAINLAND:?}"
    );

    let r = as_bob(&format!(
        "{}---\n{}",
        egress_policy(ns, "agent"),
        daemonset(ns, "agent", &MAINLAND)
    ));
    assert!(
        r.ok,
        "bob's NetworkPolicy + DaemonSet was refused:\n{}",
        r.stderr
    );

    // The controller creates one pod per mainland node, and they are
    // scheduled there.
    let want = mainland_nodes.len() as u64;
    let scheduled = eventually(
        "the DaemonSet's pods to be created and scheduled",
        Duration::from_secs(60),
        || {
            let ds = c.get_json(&["daemonset", "agent", "-n", ns])?;
            let current = ds["status"]["currentNumberScheduled"].as_u64()?;
            let desired = ds["status"]["desiredNumberScheduled"].as_u64()?;
            let nodes = names_of(
                c.get_json(&["pods", "-n", ns, "-l", "app=agent"]),
                &["spec", "nodeName"],
            );
            (current == want && desired == want && nodes.len() == mainland_nodes.len())
                .then_some(nodes)
        },
    );
    let mut scheduled = scheduled;
    scheduled.sort();
    let mut expected = mainland_nodes.clone();
    expected.sort();
    assert_eq!(scheduled, expected, "pods scheduled outside mainland nodes");
    let failed = webhook_failed_creates(&c, ns);
    assert!(
        failed.is_empty(),
        "the webhook refused the DaemonSet controller's pods: {failed:?}"
    );

    // The same pin to a node abroad is refused, naming the node and why.
    let r = as_bob(&pod_pinned_to(ns, "abroad", "agent", "hk-node-1"));
    assert!(!r.ok, "a pod pinned by name to hk-node-1 was admitted");
    for text in [
        "denied the request",
        "policy e2e-ds-personal",
        "hk-node-1",
        "ap-east-1",
        "metadata.name",
    ] {
        assert!(
            r.stderr.contains(text),
            "missing {text:?} in:\n{}",
            r.stderr
        );
    }
    // ... and by name to a mainland node, admitted.
    let r = as_bob(&pod_pinned_to(ns, "at-home", "agent", &mainland_nodes[0]));
    assert!(
        r.ok,
        "a pod pinned by name to {} was refused:\n{}",
        mainland_nodes[0], r.stderr
    );
}
