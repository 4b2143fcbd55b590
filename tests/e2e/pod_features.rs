//! Issue 22, findings 6 and 7 on a real control plane, as `alice` (the
//! built-in ClusterRole `edit` in the namespace, no `declassify`):
//! `allowedNodes` never vouches for a node whose providerID places it
//! abroad, a privileged pod with `hostPID` is on the node's network as a
//! `hostNetwork` pod is, and inline CSI and Azure Files volumes are read.

use crate::harness::{Cluster, cluster};
use crate::journey::{egress_policy, setup};

const USER: &str = "alice";

fn apply_as_alice(c: &Cluster, yaml: &str) -> crate::harness::Run {
    c.kubectl_in(&["apply", "--as=alice", "-f", "-"], yaml)
}

/// A pinned, isolated personal-data Pod in `ns` with `spec_extra` (YAML
/// lines at the pod spec's indentation).
fn pod(ns: &str, name: &str, spec_extra: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: {ns}\n  labels: {{app: records, residencyguard.io/data-class: personal}}\nspec:\n  nodeSelector: {{topology.kubernetes.io/region: cn-north-1}}\n{spec_extra}"
    )
}

/// Finding 6: a node with no region label whose providerID says
/// `ap-east-1` matches a policy's `allowedNodes`. A health-data Deployment
/// pinned to it by that label was admitted: the providerID was only a hint.
#[test]
fn allowed_nodes_never_vouch_for_a_node_whose_provider_id_is_abroad() {
    let Some(c) = cluster("pod-features-allowed-nodes") else {
        return;
    };
    let apps = "e2e-allowed-nodes";
    let _installed = setup(&c, "e2e-allowed-nodes", apps);
    c.grant_edit(apps, USER);
    let node = "e2e-pool-node-1";
    c.cluster_object("node", node);
    c.must_apply(&format!(
        r#"
apiVersion: v1
kind: Node
metadata:
  name: {node}
  labels: {{kubernetes.io/hostname: {node}, residencyguard.io/e2e-pool: gpu-cn}}
spec:
  providerID: aws:///ap-east-1a/i-0e2e000000000001
"#
    ));
    c.cluster_object("residencypolicy", "e2e-pool");
    crate::harness::apply_policies(
        &c,
        &["e2e-pool"],
        r#"
apiVersion: residencyguard.io/v1alpha1
kind: ResidencyPolicy
metadata: {name: e2e-pool}
spec:
  dataClasses: [health]
  namespaceSelector: {matchLabels: {residencyguard.io/e2e: "true"}}
  placement:
    allowedNodes:
      nodeSelectorTerms:
      - matchExpressions: [{key: residencyguard.io/e2e-pool, operator: In, values: [gpu-cn]}]
  action: Deny
"#,
    );
    let deployment = format!(
        r#"
apiVersion: apps/v1
kind: Deployment
metadata: {{name: scans, namespace: {apps}}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: scans}}}}
  template:
    metadata: {{labels: {{app: scans, residencyguard.io/data-class: health}}}}
    spec:
      nodeSelector: {{residencyguard.io/e2e-pool: gpu-cn}}
      containers: [{{name: c, image: registry.k8s.io/pause:3.10}}]
"#
    );
    // The snapshot must know the node before the answer means anything.
    let r = crate::harness::eventually(
        "the operator to see the node",
        std::time::Duration::from_secs(30),
        || {
            let r = apply_as_alice(&c, &deployment);
            assert!(
                !r.ok,
                "a health-data Deployment pinned to a node whose providerID is abroad was admitted"
            );
            r.stderr.contains(node).then_some(r)
        },
    );
    assert!(
        r.stderr.contains("providerID") && r.stderr.contains("ap-east-1"),
        "the denial names the providerID evidence: {}",
        r.stderr
    );
    assert!(
        c.get_json(&["deployment", "scans", "-n", apps]).is_none(),
        "the Deployment was created"
    );
}

/// Finding 7: a privileged pod with `hostPID` can enter the node's network
/// namespace, where no NetworkPolicy applies; inline CSI volumes naming a
/// server abroad, and Azure Files (whose place the object cannot tell),
/// hold the data somewhere the pod's placement does not decide.
#[test]
fn host_pid_privileged_pods_and_inline_csi_volumes_are_judged() {
    let Some(c) = cluster("pod-features-host-pid") else {
        return;
    };
    let apps = "e2e-pod-features";
    let _installed = setup(&c, "e2e-pod-features", apps);
    c.grant_edit(apps, USER);
    let r = apply_as_alice(&c, &egress_policy(apps, "records-egress", "records", &[]));
    assert!(r.ok, "{}", r.stderr);

    // The control: pinned and isolated, admitted.
    let plain = pod(
        apps,
        "plain",
        "  containers: [{name: c, image: registry.k8s.io/pause:3.10}]\n",
    );
    let r = apply_as_alice(&c, &plain);
    assert!(r.ok, "a pinned, isolated pod is admitted: {}", r.stderr);

    let host_pid = pod(
        apps,
        "debugger",
        "  hostPID: true\n  containers:\n  - name: c\n    image: registry.k8s.io/pause:3.10\n    securityContext: {privileged: true}\n",
    );
    let r = apply_as_alice(&c, &host_pid);
    assert!(!r.ok, "a privileged hostPID pod was admitted");
    assert!(r.stderr.contains("hostPID"), "{}", r.stderr);
    assert!(
        r.stderr.contains("Pod e2e-pod-features/debugger"),
        "{}",
        r.stderr
    );

    let nfs_csi = pod(
        apps,
        "nfs-reader",
        "  containers:\n  - name: c\n    image: registry.k8s.io/pause:3.10\n    volumeMounts: [{name: d, mountPath: /d}]\n  volumes:\n  - name: d\n    csi:\n      driver: nfs.csi.k8s.io\n      volumeAttributes: {server: 8.8.8.8, share: /export}\n",
    );
    let r = apply_as_alice(&c, &nfs_csi);
    assert!(!r.ok, "a pod writing to an NFS server abroad was admitted");
    assert!(r.stderr.contains("8.8.8.8"), "{}", r.stderr);

    let azure = pod(
        apps,
        "azure-reader",
        "  containers:\n  - name: c\n    image: registry.k8s.io/pause:3.10\n    volumeMounts: [{name: d, mountPath: /d}]\n  volumes:\n  - name: d\n    azureFile: {secretName: az, shareName: records}\n",
    );
    let r = apply_as_alice(&c, &azure);
    assert!(!r.ok, "a pod on Azure Files was admitted");
    assert!(r.stderr.contains("azureFile"), "{}", r.stderr);
}
