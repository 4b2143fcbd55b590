//! China's clouds as they are (issue 25), on a real control plane:
//!
//! - PersistentVolumes written as the providers' disk CSI drivers write
//!   them, pinned by a zone alone (Alibaba disk, Tencent CBS), are admitted
//!   for a classified StatefulSet in a mainland zone and denied in Hong Kong;
//! - nodes labelled the way TKE labels them (numeric zone beside the short
//!   region `gz`) and VKE nodes (`volcengine://` providerID) are trusted as
//!   the catalogue documents; a TKE node whose providerID names a Hong Kong
//!   zone while its labels say Guangzhou, and a VKE node carrying another
//!   provider's region code, are not;
//! - the operator reads address data mounted from a ConfigMap
//!   (`mainlandCidrs.configMap`): its verdicts and its age metrics follow
//!   the mounted file, not the bundled one.

use std::time::Duration;

use crate::harness::{
    Cluster, Installed, apply_when_webhook_answers, cluster, eventually, install_and_run,
};

const STORAGE_POLICY: &str = r#"
apiVersion: residencyguard.io/v1alpha1
kind: ResidencyPolicy
metadata: {name: e2e-clouds-health}
spec:
  dataClasses: [health]
  namespaceSelector: {matchLabels: {residencyguard.io/e2e: "true"}}
  egress: {mode: Unrestricted}
  storage: {mode: MainlandOnly}
  action: Deny
"#;

/// A PV pinned by `key In [zone]` alone (as the CSI driver writes it),
/// pre-bound to `claim`, the claim, and a health-data StatefulSet pinned
/// to Beijing whose replica 0 mounts it (later replicas' volumes follow
/// their pods: WaitForFirstConsumer): one `kubectl apply`.
fn csi_volume_and_statefulset(ns: &str, sts: &str, pv: &str, key: &str, zone: &str) -> String {
    let claim = format!("data-{sts}-0");
    format!(
        r#"apiVersion: v1
kind: PersistentVolume
metadata: {{name: {pv}}}
spec:
  capacity: {{storage: 1Gi}}
  accessModes: [ReadWriteOnce]
  storageClassName: ""
  persistentVolumeReclaimPolicy: Retain
  claimRef: {{namespace: {ns}, name: {claim}}}
  hostPath: {{path: /tmp/{pv}}}
  nodeAffinity:
    required:
      nodeSelectorTerms:
      - matchExpressions:
        - {{key: {key}, operator: In, values: [{zone}]}}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {{name: {claim}, namespace: {ns}}}
spec:
  accessModes: [ReadWriteOnce]
  storageClassName: ""
  volumeName: {pv}
  resources: {{requests: {{storage: 1Gi}}}}
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {{name: {sts}, namespace: {ns}}}
spec:
  serviceName: {sts}
  replicas: 1
  selector: {{matchLabels: {{app: {sts}}}}}
  template:
    metadata: {{labels: {{app: {sts}, residencyguard.io/data-class: health}}}}
    spec:
      nodeSelector: {{topology.kubernetes.io/region: cn-north-1}}
      containers:
      - name: c
        image: registry.k8s.io/pause:3.10
        volumeMounts: [{{name: data, mountPath: /data}}]
  volumeClaimTemplates:
  - metadata: {{name: data}}
    spec:
      accessModes: [ReadWriteOnce]
      storageClassName: e2e-clouds-wffc
      resources: {{requests: {{storage: 1Gi}}}}
"#
    )
}

fn storage_setup(c: &Cluster, release: &str, ns: &str) -> Installed {
    let installed = install_and_run(c, release, &format!("{release}-system"), &[]);
    crate::harness::apply_policies(c, &["e2e-clouds-health"], STORAGE_POLICY);
    // New replicas' claims are provisioned where their pod is placed.
    c.cluster_object("storageclass", "e2e-clouds-wffc");
    c.must_apply(
        "apiVersion: storage.k8s.io/v1\nkind: StorageClass\nmetadata: {name: e2e-clouds-wffc}\nprovisioner: example.com/nowhere\nvolumeBindingMode: WaitForFirstConsumer\n",
    );
    c.fresh_namespace(ns, &[("residencyguard.io/e2e", "true")]);
    installed
}

#[test]
fn volumes_pinned_by_a_provider_zone_alone_are_placed() {
    let Some(c) = cluster("clouds-csi-zones") else {
        return;
    };
    let ns = "e2e-clouds-volumes";
    let cases = [
        // (StatefulSet, PV, key as the driver writes it, zone, mainland?)
        (
            "ack-ledger",
            "e2e-pv-ack-zjk",
            "topology.diskplugin.csi.alibabacloud.com/zone",
            "cn-zhangjiakou-a",
            true,
        ),
        (
            "tke-ledger",
            "e2e-pv-tke-cd",
            "topology.com.tencent.cloud.csi.cbs/zone",
            "ap-chengdu-1",
            true,
        ),
        (
            "ack-vault",
            "e2e-pv-ack-hk",
            "topology.diskplugin.csi.alibabacloud.com/zone",
            "cn-hongkong-b",
            false,
        ),
        (
            "tke-vault",
            "e2e-pv-tke-hk",
            "topology.com.tencent.cloud.csi.cbs/zone",
            "ap-hongkong-2",
            false,
        ),
    ];
    // Registered before the namespace, so deleted after it: a PV bound to
    // a claim is not deleted while the claim exists.
    for (_, pv, ..) in &cases {
        c.cluster_object("pv", pv);
    }
    let _installed = storage_setup(&c, "e2e-clouds-volumes", ns);

    for (sts, pv, key, zone, mainland) in cases {
        let yaml = csi_volume_and_statefulset(ns, sts, pv, key, zone);
        let r = apply_when_webhook_answers(&c, &yaml);
        if mainland {
            assert!(
                r.ok,
                "{key}={zone} is mainland, but the StatefulSet was denied:\n{}",
                r.stderr
            );
            assert!(c.get_json(&["statefulset", sts, "-n", ns]).is_some());
        } else {
            assert!(!r.ok, "{key}={zone} is Hong Kong, but it was admitted");
            for part in [
                format!("StatefulSet {ns}/{sts}"),
                format!("PersistentVolume {pv}"),
                "Hong Kong".to_string(),
                format!("{key}={zone}"),
            ] {
                assert!(r.stderr.contains(&part), "{part:?} not in:\n{}", r.stderr);
            }
            assert!(c.get_json(&["statefulset", sts, "-n", ns]).is_none());
            println!("kubectl apply ({key}={zone}):\n{}", r.stderr);
        }
    }
}

/// A Node as a cloud registers it (created directly: the tests' nodes have
/// no kubelet; the providerID is set once, at creation, as a kubelet would).
fn node(name: &str, provider_id: &str, labels: &[(&str, &str)]) -> String {
    let mut label_lines = format!("    kubernetes.io/hostname: {name}\n");
    for (k, v) in labels {
        label_lines.push_str(&format!("    {k}: \"{v}\"\n"));
    }
    format!(
        "apiVersion: v1\nkind: Node\nmetadata:\n  name: {name}\n  labels:\n{label_lines}spec:\n  providerID: {provider_id}\n"
    )
}

/// A health-data Deployment pinned to one node by name and to the region
/// its label names (the pin a policy asks for).
fn pinned_deployment(ns: &str, name: &str, node: &str, region: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n  replicas: 1\n  selector: {{matchLabels: {{app: {name}}}}}\n  template:\n    metadata: {{labels: {{app: {name}, residencyguard.io/data-class: health}}}}\n    spec:\n      nodeSelector: {{kubernetes.io/hostname: {node}, topology.kubernetes.io/region: {region}}}\n      containers: [{{name: c, image: registry.k8s.io/pause:3.10}}]\n"
    )
}

#[test]
fn tke_and_vke_nodes_are_trusted_as_the_catalogue_documents() {
    let Some(c) = cluster("clouds-nodes") else {
        return;
    };
    let ns = "e2e-clouds-nodes";
    let region = "topology.kubernetes.io/region";
    let zone = "topology.kubernetes.io/zone";
    let nodes = [
        // (node, providerID, labels, trusted as mainland?, what a denial names)
        (
            "e2e-tke-gz-1",
            "qcloud:///100003/ins-e2e00001",
            vec![(region, "gz"), (zone, "100003")],
            true,
            "",
        ),
        (
            // Labelled Guangzhou, but the providerID the cloud set at
            // registration names a Hong Kong zone (300002).
            "e2e-tke-liar-1",
            "qcloud:///300002/ins-e2e00002",
            vec![(region, "gz"), (zone, "100003")],
            false,
            "providerID",
        ),
        (
            "e2e-vke-bj-1",
            "volcengine://i-e2e0000000000001",
            vec![(region, "cn-beijing"), (zone, "cn-beijing-a")],
            true,
            "",
        ),
        (
            // Tencent's region code on a Volcano Engine node.
            "e2e-vke-wrong-1",
            "volcengine://i-e2e0000000000002",
            vec![(region, "ap-beijing")],
            false,
            "ap-beijing",
        ),
    ];
    for (name, ..) in &nodes {
        c.cluster_object("node", name);
    }
    let _installed = storage_setup(&c, "e2e-clouds-nodes", ns);
    for (name, provider_id, labels, ..) in &nodes {
        c.must_apply(&node(name, provider_id, labels));
    }

    for (name, provider_id, labels, mainland, names) in &nodes {
        let workload = format!("on-{name}");
        let yaml = pinned_deployment(ns, &workload, name, labels[0].1);
        // The snapshot must know the node before the answer means anything:
        // a node it has not seen is named as unknown.
        let r = eventually(
            &format!("the operator to judge a Deployment on node {name}"),
            Duration::from_secs(30),
            || {
                let r = apply_when_webhook_answers(&c, &yaml);
                (r.ok || (r.stderr.contains(name) && !r.stderr.contains("not found"))).then_some(r)
            },
        );
        if *mainland {
            assert!(
                r.ok,
                "node {name} ({provider_id}, {labels:?}) should be trusted as mainland:\n{}",
                r.stderr
            );
        } else {
            assert!(!r.ok, "node {name} ({provider_id}, {labels:?}) was trusted");
            assert!(r.stderr.contains(names), "{names:?} not in:\n{}", r.stderr);
            println!("kubectl apply (node {name}):\n{}", r.stderr);
        }
    }
}

const EGRESS_POLICY: &str = r#"
apiVersion: residencyguard.io/v1alpha1
kind: ResidencyPolicy
metadata: {name: e2e-clouds-egress}
spec:
  dataClasses: [personal]
  namespaceSelector: {matchLabels: {residencyguard.io/e2e: "true"}}
  egress: {mode: MainlandOnly}
  action: Deny
"#;

/// A NetworkPolicy letting `app` reach only `cidr` (and in-cluster pods),
/// and a personal-data Deployment `app` pinned to Beijing.
fn egress_to(ns: &str, app: &str, cidr: &str) -> (String, String) {
    let netpol = format!(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: {app}-egress, namespace: {ns}}}\nspec:\n  podSelector: {{matchLabels: {{app: {app}}}}}\n  policyTypes: [Egress]\n  egress:\n  - to:\n    - podSelector: {{}}\n    - ipBlock: {{cidr: {cidr}}}\n"
    );
    let deployment = format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: {app}, namespace: {ns}}}\nspec:\n  replicas: 1\n  selector: {{matchLabels: {{app: {app}}}}}\n  template:\n    metadata: {{labels: {{app: {app}, residencyguard.io/data-class: personal}}}}\n    spec:\n      nodeSelector: {{topology.kubernetes.io/region: cn-north-1}}\n      containers: [{{name: c, image: registry.k8s.io/pause:3.10}}]\n"
    );
    (netpol, deployment)
}

/// `mainlandCidrs.configMap`: the list in the user's ConfigMap replaces the
/// bundled one without a new image. 203.0.113.0/24 (a documentation range,
/// not mainland in the bundled data) is mainland in the mounted list, dated
/// 2026-11-30; the operator's verdicts and its age metrics follow it.
#[test]
fn the_operator_uses_address_data_mounted_from_a_config_map() {
    let Some(c) = cluster("clouds-address-data") else {
        return;
    };
    let release = "e2e-address-data";
    let system = format!("{release}-system");
    let apps = "e2e-address-data-apps";
    // The ConfigMap must exist before the Pods start: the namespace is
    // made first and the release installed into it.
    c.fresh_namespace(&system, &[]);
    let list = "# Fresher data, as scripts/gen-mainland-cidrs.sh --out-dir writes it.\n# Database created: 2026-11-30 04:00:00 UTC\n203.0.113.0/24\n52.80.0.0/14\n";
    c.must_apply(&format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: e2e-address-data, namespace: {system}}}\ndata:\n  mainland-china.cidrs: |\n{}",
        list.lines()
            .map(|l| format!("    {l}\n"))
            .collect::<String>()
    ));
    let installed = install_and_run(
        &c,
        release,
        &system,
        &[
            "--set",
            "mainlandCidrs.configMap.name=e2e-address-data",
            "--set",
            "mainlandCidrs.maxAgeDays=3650",
        ],
    );
    crate::harness::apply_policies(&c, &["e2e-clouds-egress"], EGRESS_POLICY);
    c.fresh_namespace(apps, &[("residencyguard.io/e2e", "true")]);

    // The metrics carry the mounted file's date, not the bundled data's date.
    let created: jiff::Timestamp = "2026-11-30T04:00:00Z".parse().unwrap();
    let metrics = eventually("the address-data metrics", Duration::from_secs(30), || {
        let m = installed.operator.metrics();
        m.contains("residency_guard_address_data_stale")
            .then_some(m)
    });
    assert!(
        metrics.contains(&format!(
            "residency_guard_address_data_created_timestamp_seconds {}",
            created.as_second()
        )),
        "{metrics}"
    );
    assert!(
        metrics.contains("residency_guard_address_data_stale 0"),
        "{metrics}"
    );
    assert!(
        metrics.contains("residency_guard_address_data_max_age_seconds 315360000"),
        "{metrics}"
    );
    // And the start-up log names the file and its date (no staleness warning).
    let log = installed.operator.log();
    assert!(
        log.contains("mainland-China address data loaded") && log.contains("dated 2026-11-30"),
        "{log}"
    );
    assert!(!log.contains("older than the"), "{log}");

    // Egress only to 203.0.113.0/24: mainland by the mounted list.
    let (netpol, deployment) = egress_to(apps, "billing", "203.0.113.0/24");
    c.must_apply(&netpol);
    let r = eventually(
        "the operator to admit egress the mounted list places in mainland China",
        Duration::from_secs(40),
        || {
            let r = apply_when_webhook_answers(&c, &deployment);
            (r.ok || r.stderr.contains("203.0.113.0/24")).then_some(r)
        },
    );
    assert!(
        r.ok,
        "egress to 203.0.113.0/24 (mainland in the mounted list) was denied:\n{}",
        r.stderr
    );

    // The control: a range the mounted list does not hold is refused.
    let (netpol, deployment) = egress_to(apps, "export", "198.51.100.0/24");
    c.must_apply(&netpol);
    let r = eventually(
        "the operator to judge egress outside the mounted list",
        Duration::from_secs(40),
        || {
            let r = apply_when_webhook_answers(&c, &deployment);
            (!r.ok && r.stderr.contains("198.51.100.0/24")).then_some(r)
        },
    );
    assert!(r.stderr.contains("denied the request"), "{}", r.stderr);
    println!(
        "kubectl apply (egress outside the mounted list):\n{}",
        r.stderr
    );
}
