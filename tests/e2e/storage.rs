//! Storage residency on a real cluster (issue #15): a classified
//! StatefulSet whose claim is bound to a PersistentVolume in a Hong Kong
//! zone is denied at `kubectl apply` with the message; the same bound in
//! Beijing is admitted; a StorageClass that binds Immediately with no
//! topology is caught; the audit flags a PV relabelled abroad. Each PV,
//! claim and StatefulSet is applied in one `kubectl apply`, as a user
//! would: the webhook's snapshot may not have seen the claim yet, and the
//! denial is confirmed against the API server's storage objects.

use std::time::Duration;

use crate::harness::{Cluster, apply_when_webhook_answers, cluster, eventually, install_and_run};

const POLICY: &str = r#"
apiVersion: residencyguard.io/v1alpha1
kind: ResidencyPolicy
metadata: {name: e2e-storage-health}
spec:
  dataClasses: [health]
  namespaceSelector: {matchLabels: {residencyguard.io/e2e: "true"}}
  egress: {mode: Unrestricted}
  storage: {mode: MainlandOnly}
  action: Deny
"#;

/// A PV in `zone` (topology by node affinity, or by labels when
/// `labelled`, which can change later), pre-bound to claim `<claim>`.
pub(crate) fn pv(name: &str, zone: &str, ns: &str, claim: &str, labelled: bool) -> String {
    let topology = if labelled {
        String::new()
    } else {
        format!(
            "  nodeAffinity:\n    required:\n      nodeSelectorTerms:\n      - matchExpressions:\n        - {{key: topology.ebs.csi.aws.com/zone, operator: In, values: [{zone}]}}\n"
        )
    };
    let labels = if labelled {
        format!("  labels: {{topology.kubernetes.io/zone: {zone}}}\n")
    } else {
        String::new()
    };
    format!(
        "apiVersion: v1\nkind: PersistentVolume\nmetadata:\n  name: {name}\n{labels}spec:\n  capacity: {{storage: 1Gi}}\n  accessModes: [ReadWriteOnce]\n  storageClassName: \"\"\n  persistentVolumeReclaimPolicy: Retain\n  claimRef: {{namespace: {ns}, name: {claim}}}\n  hostPath: {{path: /tmp/{name}}}\n{topology}"
    )
}

pub(crate) fn claim(ns: &str, name: &str, volume: &str) -> String {
    format!(
        "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n  accessModes: [ReadWriteOnce]\n  storageClassName: \"\"\n  volumeName: {volume}\n  resources: {{requests: {{storage: 1Gi}}}}\n"
    )
}

/// A StatefulSet pinned to Beijing whose claim template is `data` of
/// StorageClass `class`.
fn statefulset(ns: &str, name: &str, class: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: StatefulSet\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n  serviceName: {name}\n  replicas: 1\n  selector: {{matchLabels: {{app: {name}}}}}\n  template:\n    metadata: {{labels: {{app: {name}, residencyguard.io/data-class: health}}}}\n    spec:\n      nodeSelector: {{topology.kubernetes.io/region: cn-north-1}}\n      containers:\n      - name: c\n        image: registry.k8s.io/pause:3.10\n        volumeMounts: [{{name: data, mountPath: /data}}]\n  volumeClaimTemplates:\n  - metadata: {{name: data}}\n    spec:\n      accessModes: [ReadWriteOnce]\n      storageClassName: \"{class}\"\n      resources: {{requests: {{storage: 1Gi}}}}\n"
    )
}

/// PV, claim `data-<sts>-0` and StatefulSet in one apply.
fn bound_statefulset(ns: &str, sts: &str, pv_name: &str, zone: &str) -> String {
    let claim_name = format!("data-{sts}-0");
    [
        pv(pv_name, zone, ns, &claim_name, false),
        claim(ns, &claim_name, pv_name),
        statefulset(ns, sts, "e2e-wffc"),
    ]
    .join("---\n")
}

fn setup(c: &Cluster, release: &str, audit: bool) -> crate::harness::Installed {
    let extra: &[&str] = if audit {
        &["--set", "audit.enabled=true"]
    } else {
        &[]
    };
    let installed = install_and_run(c, release, &format!("{release}-system"), extra);
    crate::harness::apply_policies(c, &["e2e-storage-health"], POLICY);
    // New replicas' claims are provisioned where their pod is placed.
    c.cluster_object("storageclass", "e2e-wffc");
    c.must_apply(
        "apiVersion: storage.k8s.io/v1\nkind: StorageClass\nmetadata: {name: e2e-wffc}\nprovisioner: example.com/nowhere\nvolumeBindingMode: WaitForFirstConsumer\n",
    );
    installed
}

#[test]
fn storage_is_judged_at_kubectl_apply() {
    let Some(c) = cluster("storage-apply") else {
        return;
    };
    let _installed = setup(&c, "e2e-storage", false);
    let ns = "e2e-storage-apps";
    // Registered before the namespace, so deleted after it: a PV bound to
    // a claim is not deleted while the claim exists.
    for pv in ["e2e-pv-hk", "e2e-pv-bj"] {
        c.cluster_object("pv", pv);
    }
    c.fresh_namespace(ns, &[("residencyguard.io/e2e", "true")]);

    // Bound in Hong Kong: denied, with the message.
    let hk = bound_statefulset(ns, "vault", "e2e-pv-hk", "ap-east-1a");
    let r = apply_when_webhook_answers(&c, &hk);
    assert!(!r.ok, "applied: {}", r.stdout);
    for part in [
        "denied the request",
        "StatefulSet e2e-storage-apps/vault",
        "PersistentVolume e2e-pv-hk",
        "Hong Kong",
        "topology.ebs.csi.aws.com/zone=ap-east-1a",
        "Fix:",
    ] {
        assert!(r.stderr.contains(part), "{part:?} not in:\n{}", r.stderr);
    }
    assert!(
        c.get_json(&["statefulset", "vault", "-n", ns]).is_none(),
        "the denied StatefulSet exists"
    );
    println!("kubectl apply (Hong Kong PV):\n{}", r.stderr);

    // The same bound in Beijing: admitted.
    let bj = bound_statefulset(ns, "ledger", "e2e-pv-bj", "cn-north-1a");
    let r = apply_when_webhook_answers(&c, &bj);
    assert!(r.ok, "denied:\n{}", r.stderr);
    assert!(c.get_json(&["statefulset", "ledger", "-n", ns]).is_some());

    // A StorageClass that binds Immediately with no allowedTopologies.
    c.cluster_object("storageclass", "e2e-immediate");
    c.must_apply(
        "apiVersion: storage.k8s.io/v1\nkind: StorageClass\nmetadata: {name: e2e-immediate}\nprovisioner: example.com/nowhere\nvolumeBindingMode: Immediate\n",
    );
    let scratch = statefulset(ns, "scratch", "e2e-immediate");
    let r = eventually(
        "the StorageClass to reach the snapshot (or the live read)",
        Duration::from_secs(20),
        || {
            let r = apply_when_webhook_answers(&c, &scratch);
            (!r.ok).then_some(r)
        },
    );
    for part in [
        "StorageClass e2e-immediate",
        "binds Immediately and has no allowedTopologies",
        "WaitForFirstConsumer",
    ] {
        assert!(r.stderr.contains(part), "{part:?} not in:\n{}", r.stderr);
    }
    println!("kubectl apply (Immediate class):\n{}", r.stderr);
}

#[test]
fn the_audit_flags_a_pv_relabelled_abroad() {
    let Some(c) = cluster("storage-audit") else {
        return;
    };
    let _installed = setup(&c, "e2e-storage-audit", true);
    let ns = "e2e-storage-audit-apps";
    let pv_name = "e2e-pv-relabel";
    c.cluster_object("pv", pv_name);
    c.fresh_namespace(ns, &[("residencyguard.io/e2e", "true")]);
    let sts = "archive";
    let claim_name = format!("data-{sts}-0");
    let yaml = [
        pv(pv_name, "cn-north-1a", ns, &claim_name, true),
        claim(ns, &claim_name, pv_name),
        statefulset(ns, sts, "e2e-wffc"),
    ]
    .join("---\n");
    let r = apply_when_webhook_answers(&c, &yaml);
    assert!(r.ok, "denied:\n{}", r.stderr);
    eventually(
        "the policy status (0 violations)",
        Duration::from_secs(30),
        || {
            let p = c.get_json(&["rp", "e2e-storage-health"])?;
            (p["status"]["violations"] == 0).then_some(())
        },
    );

    // Relabelled abroad: nothing else notices; the audit must.
    c.must(&[
        "label",
        "pv",
        pv_name,
        "topology.kubernetes.io/zone=ap-east-1a",
        "--overwrite",
    ]);
    let p = eventually(
        "kubectl get rp to show the violation",
        Duration::from_secs(20),
        || {
            let p = c.get_json(&["rp", "e2e-storage-health"])?;
            (p["status"]["violations"].as_u64()? >= 1).then_some(p)
        },
    );
    let offenders = p["status"]["topOffenders"].to_string();
    assert!(
        offenders.contains(sts) && offenders.contains("VolumeOutsideMainland"),
        "{offenders}"
    );
    let uid = c
        .get_json(&["statefulset", sts, "-n", ns])
        .and_then(|s| s["metadata"]["uid"].as_str().map(str::to_string))
        .expect("the StatefulSet");
    let event = eventually(
        "an Event on the StatefulSet",
        Duration::from_secs(20),
        || {
            let list = c.get_json(&[
                "events",
                "-n",
                ns,
                "--field-selector",
                &format!("involvedObject.uid={uid},reason=VolumeOutsideMainland"),
            ])?;
            list["items"].as_array()?.first().cloned()
        },
    );
    let message = event["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(pv_name) && message.contains("ap-east-1a"),
        "{message}"
    );
    println!("audit Event: {message}");
}
