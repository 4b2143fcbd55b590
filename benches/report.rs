//! `residency-guard report` at scale: 10,000 workloads, 1,000 nodes, 50
//! policies in 100 namespaces (benches/cluster_data.rs), measured with the
//! release binary end to end, two ways:
//!
//! - from a cluster: the mock API server of benches/mock_apiserver.rs
//!   (plain HTTP on 127.0.0.1) serves the objects as the API server does
//!   (managedFields, status, containers), with the workloads' 10,000 Pods;
//! - from manifests as a repository holds them: the 10,000 Deployments,
//!   the Nodes, Namespaces and policies, without status or managedFields;
//!
//! and, in process, each phase of the manifests path. Prints the time and
//! the size of each output. Targets: ≤ 2 s, an HTML under 5 MB.
//!
//! Every workload has storage, so the report carries storage evidence for
//! each (`with_volumes`): a claim bound to an EBS PersistentVolume (a tenth
//! in Hong Kong) or, one in five, not bound yet with an Immediate class
//! that provisions anywhere; and one in three an NFS server (half of those
//! abroad).
//!
//!     cargo bench --bench report [-- WORKLOADS NODES]

#[allow(dead_code)]
#[path = "cluster_data.rs"]
mod cluster_data;
#[allow(dead_code)]
#[path = "mock_apiserver.rs"]
mod mock_apiserver;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cluster_data::{
    Scale, deployment_obj, namespace_obj, node_obj, pod_obj, policy_value, replica_set_obj,
};
use mock_apiserver::MockApi;
use serde_json::{Value, json};

const NOW: &str = "2026-11-23T00:00:00Z";

/// An object as a repository keeps it: no status, no server-set metadata.
fn as_in_a_repository(mut v: Value) -> Value {
    if let Some(map) = v.as_object_mut() {
        map.remove("status");
    }
    if let Some(meta) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        for k in ["managedFields", "annotations", "uid", "resourceVersion"] {
            meta.remove(k);
        }
    }
    v
}

/// Objects as `kind: List` files of at most 1,000 items each.
fn write_lists(dir: &Path, name: &str, items: impl Iterator<Item = Value>) -> usize {
    let items: Vec<Value> = items.map(as_in_a_repository).collect();
    let mut bytes = 0;
    for (i, chunk) in items.chunks(1_000).enumerate() {
        let text =
            serde_json::to_string(&json!({"apiVersion": "v1", "kind": "List", "items": chunk}))
                .expect("encode");
        bytes += text.len();
        std::fs::write(dir.join(format!("{name}-{i:03}.json")), text).expect("write");
    }
    bytes
}

fn namespace_of(d: usize, scale: &Scale) -> String {
    format!("ns-{}", d % scale.namespaces)
}

/// Deployment `d`'s volumes: claim `data-app-{d}`, and one in three an NFS
/// share (abroad when `d % 6 == 3`).
fn volumes_of(d: usize) -> Value {
    let mut volumes = vec![
        json!({"name": "data", "persistentVolumeClaim": {"claimName": format!("data-app-{d}")}}),
    ];
    if d.is_multiple_of(3) {
        let server = if d % 6 == 3 {
            "8.8.8.8"
        } else {
            "114.114.114.114"
        };
        volumes.push(json!({"name": "share", "nfs": {"server": server, "path": format!("/exports/app-{d}")}}));
    }
    Value::Array(volumes)
}

/// `obj` (a Deployment, its ReplicaSet or a Pod of Deployment `d`) with
/// the Deployment's volumes in its pod spec.
fn with_volumes(mut obj: Value, d: usize) -> Value {
    let spec = if obj["kind"] == "Pod" {
        &mut obj["spec"]
    } else {
        &mut obj["spec"]["template"]["spec"]
    };
    spec["volumes"] = volumes_of(d);
    obj
}

/// Deployment `d`'s claim: bound to `pv-app-{d}`, or (one in five) not
/// bound yet, of class `fast`.
fn claim_obj(d: usize, scale: &Scale) -> Value {
    let mut spec = json!({"accessModes": ["ReadWriteOnce"], "volumeMode": "Filesystem",
        "resources": {"requests": {"storage": "20Gi"}}});
    if d.is_multiple_of(5) {
        spec["storageClassName"] = json!("fast");
    } else {
        spec["storageClassName"] = json!("gp3");
        spec["volumeName"] = json!(format!("pv-app-{d}"));
    }
    json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": format!("data-app-{d}"), "namespace": namespace_of(d, scale),
            "uid": format!("5555-{d:08}"), "resourceVersion": format!("{}", 500_000 + d),
            "annotations": {"pv.kubernetes.io/bind-completed": "yes", "volume.kubernetes.io/storage-provisioner": "ebs.csi.aws.com"},
            "finalizers": ["kubernetes.io/pvc-protection"]},
        "spec": spec, "status": {"phase": "Bound"}})
}

/// The PersistentVolume of a bound claim, as the EBS CSI driver writes it:
/// in Hong Kong when `d % 10 == 9`, else in a Beijing or Ningxia zone.
fn volume_obj(d: usize, scale: &Scale) -> Value {
    let zone = match d % 10 {
        9 => "ap-east-1a",
        n if n % 2 == 0 => "cn-north-1a",
        _ => "cn-northwest-1b",
    };
    json!({"apiVersion": "v1", "kind": "PersistentVolume",
        "metadata": {"name": format!("pv-app-{d}"), "uid": format!("6666-{d:08}"),
            "resourceVersion": format!("{}", 600_000 + d),
            "annotations": {"pv.kubernetes.io/provisioned-by": "ebs.csi.aws.com"},
            "finalizers": ["kubernetes.io/pv-protection", "external-attacher/ebs-csi-aws-com"]},
        "spec": {"capacity": {"storage": "20Gi"}, "accessModes": ["ReadWriteOnce"],
            "persistentVolumeReclaimPolicy": "Delete", "storageClassName": "gp3", "volumeMode": "Filesystem",
            "claimRef": {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "namespace": namespace_of(d, scale),
                "name": format!("data-app-{d}"), "uid": format!("5555-{d:08}")},
            "csi": {"driver": "ebs.csi.aws.com", "fsType": "ext4", "volumeHandle": format!("vol-0{d:016x}")},
            "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                {"key": "topology.ebs.csi.aws.com/zone", "operator": "In", "values": [zone]}]}]}}},
        "status": {"phase": "Bound"}})
}

/// `gp3` (the default, WaitForFirstConsumer) and `fast` (Immediate, no
/// allowedTopologies: provisions anywhere).
fn class_objs() -> Vec<Value> {
    vec![
        json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
            "metadata": {"name": "gp3", "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
            "provisioner": "ebs.csi.aws.com", "volumeBindingMode": "WaitForFirstConsumer",
            "reclaimPolicy": "Delete", "parameters": {"type": "gp3"}}),
        json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
            "metadata": {"name": "fast"}, "provisioner": "ebs.csi.aws.com",
            "volumeBindingMode": "Immediate", "reclaimPolicy": "Delete", "parameters": {"type": "io2"}}),
    ]
}

fn bound(scale: &Scale) -> impl Iterator<Item = usize> {
    (0..scale.deployments).filter(|d| !d.is_multiple_of(5))
}

fn median(mut xs: Vec<Duration>) -> Duration {
    xs.sort();
    xs[xs.len() / 2]
}

/// Run the binary three times; the times and the output sizes.
fn runs(what: &str, args: &[&str], out: &Path) {
    let mut times = Vec::new();
    for _ in 0..3 {
        let start = Instant::now();
        let run = Command::new(env!("CARGO_BIN_EXE_residency-guard"))
            .arg("report")
            .args(args)
            .arg("-o")
            .arg(out)
            .args(["--now", NOW])
            .env("LANG", "C")
            .output()
            .expect("run residency-guard report");
        times.push(start.elapsed());
        assert!(
            run.status.success(),
            "{}",
            String::from_utf8_lossy(&run.stderr)
        );
    }
    let size = |f: &str| std::fs::metadata(out.join(f)).map_or(0, |m| m.len()) as f64 / 1e6;
    println!(
        "report {what} (binary, end to end): median {:.2} s of 3 (min {:.2} s); HTML {:.2} MB, JSON {:.2} MB, CSV {:.2} MB",
        median(times.clone()).as_secs_f64(),
        times
            .iter()
            .min()
            .copied()
            .unwrap_or_default()
            .as_secs_f64(),
        size("residency-report.html"),
        size("residency-report.json"),
        size("residency-report.csv")
    );
    assert!(
        size("residency-report.html") < 5.0,
        "the HTML is 5 MB or more"
    );
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let workloads = args.first().copied().unwrap_or(10_000);
    let nodes = args.get(1).copied().unwrap_or(1_000);
    let scale = Scale {
        nodes,
        deployments: workloads,
        pods: workloads,
        policies: 50,
        namespaces: 100,
        ..Scale::ISSUE
    };
    let dir = tempfile::tempdir().expect("tempdir");

    // From a cluster: the mock API server, every workload with volumes.
    let mut mock = MockApi::new(None, Duration::from_secs(5));
    mock.add("Node", (0..scale.nodes).map(node_obj));
    mock.add("Namespace", (0..scale.namespaces).map(namespace_obj));
    mock.add(
        "Deployment",
        (0..scale.deployments).map(|d| with_volumes(deployment_obj(d, &scale), d)),
    );
    mock.add(
        "ReplicaSet",
        (0..scale.deployments).map(|d| with_volumes(replica_set_obj(d, &scale), d)),
    );
    mock.add(
        "Pod",
        (0..scale.pods).map(|i| with_volumes(pod_obj(i, &scale), i % scale.deployments)),
    );
    mock.add("ResidencyPolicy", (0..scale.policies).map(policy_value));
    mock.add(
        "PersistentVolumeClaim",
        (0..scale.deployments).map(|d| claim_obj(d, &scale)),
    );
    mock.add(
        "PersistentVolume",
        bound(&scale).map(|d| volume_obj(d, &scale)),
    );
    mock.add("StorageClass", class_objs());
    let mock = Arc::new(mock);
    println!(
        "cluster: {} Deployments, {} Pods, {} Nodes, {} policies, {} namespaces, {} PVCs, {} PVs; {:.1} MB of JSON served",
        mock.count("Deployment"),
        mock.count("Pod"),
        mock.count("Node"),
        mock.count("ResidencyPolicy"),
        mock.count("Namespace"),
        mock.count("PersistentVolumeClaim"),
        mock.count("PersistentVolume"),
        mock.item_bytes() as f64 / 1e6
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let addr = runtime
        .block_on(mock_apiserver::start(mock.clone()))
        .expect("mock API server");
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!("apiVersion: v1\nkind: Config\nclusters:\n- name: mock\n  cluster: {{server: 'http://{addr}'}}\nusers:\n- name: u\n  user: {{}}\ncontexts:\n- name: mock\n  context: {{cluster: mock, user: u}}\ncurrent-context: mock\n"),
    )
    .expect("kubeconfig");
    runs(
        "from a cluster",
        &["--kubeconfig", kubeconfig.to_str().expect("UTF-8")],
        &dir.path().join("out-cluster"),
    );

    // From manifests.
    let input = dir.path().join("input");
    std::fs::create_dir_all(&input).expect("mkdir");
    let mut bytes = 0;
    bytes += write_lists(&input, "nodes", (0..scale.nodes).map(node_obj));
    bytes += write_lists(
        &input,
        "namespaces",
        (0..scale.namespaces).map(namespace_obj),
    );
    bytes += write_lists(&input, "policies", (0..scale.policies).map(policy_value));
    bytes += write_lists(
        &input,
        "deployments",
        (0..scale.deployments).map(|d| with_volumes(deployment_obj(d, &scale), d)),
    );
    bytes += write_lists(
        &input,
        "claims",
        (0..scale.deployments).map(|d| claim_obj(d, &scale)),
    );
    bytes += write_lists(
        &input,
        "volumes",
        bound(&scale).map(|d| volume_obj(d, &scale)),
    );
    bytes += write_lists(&input, "classes", class_objs().into_iter());
    println!(
        "manifests: {} Deployments (with their claims and volumes), {} Nodes, {} policies, {} namespaces; {:.1} MB",
        scale.deployments,
        scale.nodes,
        scale.policies,
        scale.namespaces,
        bytes as f64 / 1e6
    );
    runs(
        "from manifests",
        &["-f", input.to_str().expect("UTF-8")],
        &dir.path().join("out-manifests"),
    );

    // In process, phase by phase.
    use residency_guard::engine::{AddressSpace, Catalogue, Lang, Snapshot};
    use residency_guard::report::{manifests, model, render};
    let base = Snapshot::new(Catalogue::builtin().clone(), AddressSpace::builtin());
    let t = Instant::now();
    let inputs = manifests::gather(
        std::slice::from_ref(&input),
        base,
        "default",
        NOW.parse().expect("now"),
        Lang::En,
    )
    .expect("inputs");
    let read = t.elapsed();
    let t = Instant::now();
    let report = model::build(&inputs, NOW.parse().expect("now")).expect("report");
    let built = t.elapsed();
    let t = Instant::now();
    let rendered = render(&report, Lang::En, 200).expect("render");
    let rendered_in = t.elapsed();
    println!(
        "phases from manifests (in process): read {:.0} ms, judge and build {:.0} ms, render JSON+HTML+CSV {:.0} ms; {} governed workloads, {} violations; HTML {:.2} MB",
        read.as_secs_f64() * 1e3,
        built.as_secs_f64() * 1e3,
        rendered_in.as_secs_f64() * 1e3,
        report.summary.workloads,
        report.summary.violations,
        rendered.html.len() as f64 / 1e6
    );
    let mut volumes = std::collections::BTreeMap::<&str, usize>::new();
    for v in report.workloads.iter().flat_map(|w| &w.storage.volumes) {
        *volumes.entry(v.posture.as_str()).or_default() += 1;
    }
    let outside = report
        .summary
        .classes
        .iter()
        .filter(|c| c.storage.as_str() == "outside")
        .count();
    println!(
        "storage evidence: {} volumes judged ({volumes:?}); {outside} of {} classes outside",
        volumes.values().sum::<usize>(),
        report.summary.classes.len()
    );
    assert!(
        volumes.values().sum::<usize>() >= report.summary.workloads,
        "every workload has a volume in its record"
    );
}
