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

use cluster_data::{Scale, deployment_obj, namespace_obj, node_obj, policy_value};
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

    // From a cluster: the mock API server.
    let mock = Arc::new(MockApi::with_cluster(&scale, None, Duration::from_secs(5)));
    println!(
        "cluster: {} Deployments, {} Pods, {} Nodes, {} policies, {} namespaces; {:.1} MB of JSON served",
        mock.count("Deployment"),
        mock.count("Pod"),
        mock.count("Node"),
        mock.count("ResidencyPolicy"),
        mock.count("Namespace"),
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
        (0..scale.deployments).map(|i| deployment_obj(i, &scale)),
    );
    println!(
        "manifests: {} Deployments, {} Nodes, {} policies, {} namespaces; {:.1} MB",
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
}
