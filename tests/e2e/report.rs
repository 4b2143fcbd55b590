//! `residency-guard report` against a real cluster: after a small scenario
//! (a Warn policy, a pinned and an unpinned Deployment, the pinned pod's
//! node relabelled abroad while the audit runs), the report taken from the
//! live cluster lists the workloads, the regions of the nodes their pods
//! run on, and the violations the audit reported, with when it reported
//! them, and a Deployment's volume on a PersistentVolume in Hong Kong with
//! its claim, PV and place. It also runs under the chart's own
//! ServiceAccount.

use std::time::Duration;

use serde_json::Value;

use crate::harness::{Cluster, cluster, eventually, fullname, install_and_run, root};

const REGION: &str = "topology.kubernetes.io/region";
const POLICY_NAME: &str = "e2e-report-personal";

const POLICY: &str = r#"
apiVersion: residencyguard.io/v1alpha1
kind: ResidencyPolicy
metadata: {name: e2e-report-personal}
spec:
  dataClasses: [personal]
  namespaceSelector: {matchLabels: {residencyguard.io/e2e-report: "true"}}
  action: Warn
"#;

fn deployment(ns: &str, name: &str, node_selector: Option<&str>) -> String {
    let selector = node_selector
        .map(|r| format!("      nodeSelector: {{{REGION}: {r}}}\n"))
        .unwrap_or_default();
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n  replicas: 1\n  selector: {{matchLabels: {{app: {name}}}}}\n  template:\n    metadata: {{labels: {{app: {name}, residencyguard.io/data-class: personal}}}}\n    spec:\n{selector}      containers: [{{name: c, image: registry.k8s.io/pause:3.10}}]\n"
    )
}

/// A claim in `ns` pre-bound to a PersistentVolume in a Hong Kong zone,
/// and a Deployment (no replicas) that mounts it.
fn archive(ns: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: PersistentVolume
metadata: {{name: e2e-report-pv-hk}}
spec:
  capacity: {{storage: 1Gi}}
  accessModes: [ReadWriteOnce]
  storageClassName: ""
  hostPath: {{path: /tmp/e2e-report}}
  claimRef: {{namespace: {ns}, name: archive-data}}
  nodeAffinity: {{required: {{nodeSelectorTerms: [{{matchExpressions: [{{key: topology.kubernetes.io/zone, operator: In, values: [ap-east-1a]}}]}}]}}}}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {{name: archive-data, namespace: {ns}}}
spec: {{storageClassName: "", volumeName: e2e-report-pv-hk, accessModes: [ReadWriteOnce], resources: {{requests: {{storage: 1Gi}}}}}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: archive, namespace: {ns}}}
spec:
  replicas: 0
  selector: {{matchLabels: {{app: archive}}}}
  template:
    metadata: {{labels: {{app: archive, residencyguard.io/data-class: personal}}}}
    spec:
      nodeSelector: {{{REGION}: cn-north-1}}
      containers: [{{name: c, image: registry.k8s.io/pause:3.10}}]
      volumes: [{{name: data, persistentVolumeClaim: {{claimName: archive-data}}}}]
"#
    )
}

fn bound_pod(c: &Cluster, ns: &str, app: &str) -> Value {
    eventually(
        &format!("the {app} pod to be bound"),
        Duration::from_secs(60),
        || {
            let list = c.get_json(&["pods", "-n", ns, "-l", &format!("app={app}")])?;
            let p = list["items"].as_array()?.first()?.clone();
            p["spec"]["nodeName"].as_str()?;
            Some(p)
        },
    )
}

/// Run `report` against the cluster with `kubeconfig`; the parsed JSON.
fn report(c: &Cluster, kubeconfig: &std::path::Path, dir: &str) -> (Value, String) {
    let out_dir = c.scratch.join(dir);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_residency-guard"))
        .args(["report", "--kubeconfig"])
        .arg(kubeconfig)
        .arg("-o")
        .arg(&out_dir)
        .env("LANG", "C")
        .env_remove("RESIDENCY_GUARD_FILENAME")
        .output()
        .expect("run residency-guard report");
    assert_eq!(
        out.status.code(),
        Some(0),
        "report failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let json = std::fs::read(out_dir.join("residency-report.json")).expect("the JSON");
    let html = std::fs::read_to_string(out_dir.join("residency-report.html")).expect("the HTML");
    (serde_json::from_slice(&json).expect("JSON"), html)
}

fn schema_errors(report: &Value) -> Vec<String> {
    let schema: Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("docs/report.schema.json")).expect("the schema"),
    )
    .expect("the schema is JSON");
    let validator = jsonschema::draft202012::new(&schema).expect("the schema compiles");
    validator
        .iter_errors(report)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect()
}

#[test]
fn a_live_report_lists_workloads_regions_and_the_audits_violations() {
    let Some(c) = cluster("report-live") else {
        return;
    };
    let apps = "e2e-report-apps";
    let release = "e2e-report";
    let system = "e2e-report-system";
    let _installed = install_and_run(&c, release, system, &["--set", "audit.enabled=true"]);
    crate::harness::apply_policies(&c, &[POLICY_NAME], POLICY);
    c.fresh_namespace(apps, &[("residencyguard.io/e2e-report", "true")]);

    // A pinned Deployment (lands on cn-node-1) and an unpinned one (a Warn
    // policy admits it, with warnings).
    eventually(
        "the Deployments to be admitted",
        Duration::from_secs(20),
        || {
            let a = c.apply(&deployment(apps, "pinned", Some("cn-north-1")));
            let b = c.apply(&deployment(apps, "unpinned", None));
            let d = c.apply(&archive(apps));
            (a.ok && b.ok && d.ok).then_some(())
        },
    );
    let pinned = bound_pod(&c, apps, "pinned");
    let pinned_pod = pinned["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert_eq!(pinned["spec"]["nodeName"], "cn-node-1");
    let unpinned = bound_pod(&c, apps, "unpinned");
    let unpinned_node = unpinned["spec"]["nodeName"]
        .as_str()
        .unwrap_or_default()
        .to_string();

    // The node is relabelled abroad; the audit reports the pod on it.
    c.label_node("cn-node-1", REGION, "us-east-1");
    let uid = pinned["metadata"]["uid"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    eventually(
        "the audit's Event on the pod",
        Duration::from_secs(20),
        || {
            let list = c.get_json(&[
                "events",
                "-n",
                apps,
                "--field-selector",
                &format!("involvedObject.uid={uid},reason=BoundToNodeOutside"),
            ])?;
            list["items"].as_array()?.first().cloned()
        },
    );
    eventually(
        "the audit's Event on the unpinned Deployment",
        Duration::from_secs(20),
        || {
            let list = c.get_json(&[
                "events",
                "-n",
                apps,
                "--field-selector",
                "involvedObject.name=unpinned,reason=PlacementNotGuaranteed",
            ])?;
            list["items"].as_array()?.first().cloned()
        },
    );

    // The report, as a cluster admin (the auditor) takes it.
    let (r, html) = report(&c, &c.kubeconfig, "admin");
    let errors = schema_errors(&r);
    assert!(errors.is_empty(), "{errors:#?}");

    // Scope: the cluster's identity and the policy's resourceVersion.
    let server = c.must(&[
        "config",
        "view",
        "--minify",
        "-o",
        "jsonpath={.clusters[0].cluster.server}",
    ]);
    let cluster_id = &r["scope"]["cluster"];
    assert_eq!(
        cluster_id["server"]
            .as_str()
            .map(|s| s.trim_end_matches('/')),
        Some(server.trim().trim_end_matches('/'))
    );
    let kube_system_uid = c.must(&[
        "get",
        "namespace",
        "kube-system",
        "-o",
        "jsonpath={.metadata.uid}",
    ]);
    assert_eq!(cluster_id["kubeSystemUid"], kube_system_uid.trim());
    let rv = c.must(&[
        "get",
        "rp",
        POLICY_NAME,
        "-o",
        "jsonpath={.metadata.resourceVersion}",
    ]);
    let policy = r["scope"]["policies"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["name"] == POLICY_NAME).cloned())
        .expect("the policy in the report's scope");
    // The audit may have written the status again since.
    let rv_now: u64 = rv.trim().parse().unwrap_or(0);
    let rv_report: u64 = policy["resourceVersion"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    assert!(rv_report > 0 && rv_report <= rv_now, "{policy} vs {rv}");
    assert_eq!(
        r["scope"]["auditSources"]["events"]["read"], true,
        "{}",
        r["scope"]["auditSources"]
    );

    // The workloads, where their pods run, and the audit's violations.
    let workload = |name: &str| -> Value {
        r["workloads"]
            .as_array()
            .and_then(|ws| {
                ws.iter()
                    .find(|w| w["namespace"] == apps && w["name"] == name)
                    .cloned()
            })
            .unwrap_or_else(|| panic!("{name} is not in the report: {:#}", r["workloads"]))
    };
    let p = workload("pinned");
    assert_eq!(p["kind"], "Deployment");
    let pod = &p["placement"]["pods"][0];
    assert_eq!(pod["name"], pinned_pod.as_str());
    assert_eq!(pod["node"]["name"], "cn-node-1");
    assert_eq!(pod["node"]["region"], "us-east-1");
    // Its providerID still says cn-north-1: the relabelled node is
    // unverified, and the report says why.
    assert_eq!(pod["node"]["jurisdiction"], "unverified", "{pod:#}");
    assert_eq!(pod["node"]["providerRegion"], "cn-north-1", "{pod:#}");
    let why = pod["node"]["unverifiedBecause"]["en"]
        .as_str()
        .unwrap_or_default();
    assert!(why.contains("providerID"), "{why}");
    let bound = p["violations"]
        .as_array()
        .and_then(|vs| {
            vs.iter()
                .find(|v| v["code"] == "BoundToNodeOutside")
                .cloned()
        })
        .unwrap_or_else(|| panic!("no BoundToNodeOutside: {p:#}"));
    assert_eq!(bound["pod"], pinned_pod.as_str());
    assert_eq!(bound["policy"], POLICY_NAME);
    assert!(
        bound["seenBy"]
            .as_array()
            .is_some_and(|s| s.iter().any(|x| x == "event")),
        "{bound:#}"
    );
    assert!(
        bound["firstSeen"].is_string(),
        "no first-seen time: {bound:#}"
    );

    let u = workload("unpinned");
    assert_eq!(u["placement"]["guaranteed"], false);
    assert_eq!(
        u["placement"]["pods"][0]["node"]["name"],
        unpinned_node.as_str()
    );
    assert!(
        u["placement"]["pods"][0]["node"]["region"].is_string(),
        "{u:#}"
    );
    let not_guaranteed = u["violations"]
        .as_array()
        .and_then(|vs| {
            vs.iter()
                .find(|v| v["code"] == "PlacementNotGuaranteed")
                .cloned()
        })
        .unwrap_or_else(|| panic!("no PlacementNotGuaranteed: {u:#}"));
    assert!(
        not_guaranteed["firstSeen"].is_string(),
        "{not_guaranteed:#}"
    );
    assert!(html.contains(&format!("Deployment {apps}/pinned")));
    assert!(html.contains("us-east-1"));

    // Storage, from the cluster's own PersistentVolumes and claims.
    let a = workload("archive");
    assert_eq!(a["storage"]["posture"], "outside", "{a:#}");
    let v = &a["storage"]["volumes"][0];
    assert_eq!(v["claim"], format!("{apps}/archive-data"));
    assert_eq!(v["persistentVolume"], "e2e-report-pv-hk");
    assert_eq!(v["storageClass"], "");
    assert_eq!(v["location"]["key"], "topology.kubernetes.io/zone");
    assert_eq!(v["location"]["region"], "ap-east-1");
    assert_eq!(v["location"]["country"], "HK");
    assert_eq!(v["findings"][0]["code"], "VolumeOutsideMainland");
    assert!(
        a["violations"]
            .as_array()
            .is_some_and(|vs| vs.iter().any(|x| x["code"] == "VolumeOutsideMainland")),
        "{a:#}"
    );
    assert!(html.contains("e2e-report-pv-hk"));

    // The chart's ServiceAccount can take the same report (it lists every
    // kind the snapshot needs).
    let sa = c.service_account_kubeconfig(system, &fullname(release));
    let (r2, _) = report(&c, &sa, "service-account");
    let names: Vec<&str> = r2["workloads"]
        .as_array()
        .map(|ws| {
            ws.iter()
                .filter(|w| w["namespace"] == apps)
                .filter_map(|w| w["name"].as_str())
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(
        names,
        ["archive", "pinned", "unpinned"],
        "{:#}",
        r2["scope"]
    );
}
