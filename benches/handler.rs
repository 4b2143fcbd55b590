//! In-process CPU cost of one admission review: `admission::handle` on a
//! realistic 14.7 KB Deployment AdmissionReview (`kubectl apply` CREATE of
//! a Deployment with an app container and a sidecar, managedFields and the
//! last-applied-configuration annotation included, labelled
//! `residencyguard.io/data-class: personal` in namespace `payments`) against
//! the snapshot of `examples/cluster`, with no network, TLS or HTTP in the
//! way. Target: ≤ 25 µs per review; a 3 MiB review ≤ 5 ms.
//!
//! | benchmark                    | what                                           |
//! |------------------------------|------------------------------------------------|
//! | `handler/deployment_denied`  | 14.7 KB review of `payments/api`: denied       |
//! | `handler/deployment_allowed` | 14.7 KB review of `payments/ledger`: allowed   |
//! | `handler/encode_response`    | handle + encode the denial, as the server does |
//! | `handler/review_3mib`        | 3 MiB review (padded last-applied): denied     |
//!
//! With `RG_SCALE=envelope` it also times a NetworkPolicy review (issue 22):
//! the DELETE of `np-0`, which selects envelope Deployment `app-0`, its
//! ReplicaSet and its 50 pods in `ns-0`, judged as the webhook does now
//! (every pod and workload the NetworkPolicy selects, owned or not, with
//! inherited classes), and as before (the Deployment alone), for the cost
//! of judging owned objects.
//!
//! Under `cargo bench`, before criterion (which reports wall time) runs,
//! `main` prints the CPU time per review from the scheduler's per-thread
//! accounting, which a busy machine does not inflate, as `RESULT` lines.
//!
//! `benches/webhook_load.rs` (the end-to-end load benchmark) includes this
//! file for the review builders in [`fixture`]; `scripts/bench-webhook.sh`
//! runs both.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};

#[allow(dead_code)]
#[path = "cluster_data.rs"]
mod cluster_data;
use residency_guard::engine::{Lang, Snapshot, Workload};
use residency_guard::webhook::admission::{self, Endpoint};

/// Reviews and the example snapshot, shared with `benches/webhook_load.rs`
/// (which includes this file as a module).
pub mod fixture {
    use std::collections::BTreeMap;
    use std::path::PathBuf;

    use jiff::Timestamp;
    use residency_guard::cli::load_inputs;
    use residency_guard::engine::{AddressSpace, Catalogue, Snapshot, Workload};
    use serde_json::{Map, Value, json};

    /// The instant the handler benchmark judges at (the example exemption
    /// is still valid then).
    pub const NOW: &str = "2026-11-23T00:00:00Z";
    /// "14.7 KB": the size of the everyday review.
    pub const REVIEW_BYTES: usize = 14_700;
    /// The API server's object size cap, as one review body.
    pub const LARGE_REVIEW_BYTES: usize = 3 * 1024 * 1024;

    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum Variant {
        /// `payments/api`: personal data, no placement, no NetworkPolicy.
        Denied,
        /// `payments/ledger`: pinned to mainland regions, egress limited by
        /// the example `ledger-egress` NetworkPolicy.
        Allowed,
    }

    impl Variant {
        pub fn name(self) -> &'static str {
            match self {
                Variant::Denied => "api",
                Variant::Allowed => "ledger",
            }
        }
    }

    pub fn example_dir() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/cluster")
    }

    /// The example cluster's YAML files, sorted.
    pub fn example_files() -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(example_dir())
            .expect("examples/cluster")
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
            .collect();
        files.sort();
        files
    }

    /// The snapshot `serve` builds from the example cluster, loaded the way
    /// `check` loads it.
    pub fn example_snapshot() -> (Snapshot, BTreeMap<String, Vec<Workload>>) {
        snapshot_of(&example_files())
    }

    /// The snapshot and workloads of `files`, loaded the way `check` loads
    /// them, judged at `NOW`.
    pub fn snapshot_of(files: &[PathBuf]) -> (Snapshot, BTreeMap<String, Vec<Workload>>) {
        let base = Snapshot::new(Catalogue::builtin().clone(), AddressSpace::builtin());
        let now: Timestamp = NOW.parse().expect("NOW");
        let loaded = load_inputs(files, base, "default", now)
            .unwrap_or_else(|e| panic!("{:?}", &e[..e.len().min(3)]));
        let mut workloads: BTreeMap<String, Vec<Workload>> = BTreeMap::new();
        for (_, w) in loaded.workloads {
            workloads.entry(w.namespace.clone()).or_default().push(w);
        }
        (loaded.snapshot, workloads)
    }

    /// `env` entries of the application container: a realistic mix of
    /// literals, secret references and downward-API fields.
    fn env_vars(name: &str, count: usize) -> Vec<Value> {
        let mut env = vec![
            json!({"name": "POD_NAME", "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.name"}}}),
            json!({"name": "POD_IP", "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "status.podIP"}}}),
            json!({"name": "GOMAXPROCS", "valueFrom": {"resourceFieldRef": {"containerName": name, "divisor": "0", "resource": "limits.cpu"}}}),
            json!({"name": "OTEL_EXPORTER_OTLP_ENDPOINT", "value": "http://otel-collector.observability.svc.cluster.local:4317"}),
        ];
        for i in 0..count {
            env.push(match i % 3 {
                0 => json!({"name": format!("FEATURE_{i:03}_ENABLED"), "value": "true"}),
                1 => json!({"name": format!("DB_PARAM_{i:03}"), "valueFrom": {"secretKeyRef": {"name": format!("{name}-db"), "key": format!("param-{i}")}}}),
                _ => json!({"name": format!("UPSTREAM_{i:03}_URL"), "value": format!("http://svc-{i}.payments.svc.cluster.local:8080")}),
            });
        }
        env
    }

    /// The Deployment spec as kubectl applies it.
    fn applied_spec(variant: Variant, tag: &str, env: Vec<Value>) -> Value {
        let name = variant.name();
        let mut pod = json!({
            "serviceAccountName": name,
            "automountServiceAccountToken": false,
            "terminationGracePeriodSeconds": 45,
            "securityContext": {"runAsNonRoot": true, "runAsUser": 10001, "runAsGroup": 10001, "fsGroup": 10001, "seccompProfile": {"type": "RuntimeDefault"}},
            "initContainers": [{
                "name": "migrate",
                "image": format!("registry.example.com/payments/{name}-migrate:{tag}"),
                "command": ["/app/migrate", "--to=latest", "--lock-timeout=30s"],
                "envFrom": [{"secretRef": {"name": format!("{name}-db")}}],
                "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"memory": "128Mi"}}
            }],
            "containers": [{
                "name": name,
                "image": format!("registry.example.com/payments/{name}:{tag}"),
                "imagePullPolicy": "IfNotPresent",
                "args": ["--listen=:8080", "--metrics-listen=:9090", "--log-format=json", "--shutdown-grace=30s"],
                "ports": [
                    {"name": "http", "containerPort": 8080, "protocol": "TCP"},
                    {"name": "metrics", "containerPort": 9090, "protocol": "TCP"}
                ],
                "env": env,
                "envFrom": [{"configMapRef": {"name": format!("{name}-config")}}, {"secretRef": {"name": format!("{name}-secrets")}}],
                "resources": {"requests": {"cpu": "500m", "memory": "512Mi"}, "limits": {"cpu": "2", "memory": "1Gi"}},
                "livenessProbe": {"httpGet": {"path": "/livez", "port": "http"}, "initialDelaySeconds": 10, "periodSeconds": 10, "timeoutSeconds": 2, "failureThreshold": 3},
                "readinessProbe": {"httpGet": {"path": "/readyz", "port": "http"}, "periodSeconds": 5, "timeoutSeconds": 2, "failureThreshold": 2},
                "startupProbe": {"httpGet": {"path": "/livez", "port": "http"}, "periodSeconds": 2, "failureThreshold": 30},
                "volumeMounts": [
                    {"name": "config", "mountPath": "/etc/app", "readOnly": true},
                    {"name": "tls", "mountPath": "/etc/tls", "readOnly": true},
                    {"name": "tmp", "mountPath": "/tmp"}
                ],
                "securityContext": {"allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true, "capabilities": {"drop": ["ALL"]}}
            }, {
                "name": "envoy",
                "image": "registry.example.com/platform/envoy:v1.31.2",
                "args": ["-c", "/etc/envoy/envoy.yaml", "--service-cluster", name, "--drain-time-s", "20"],
                "ports": [{"name": "envoy-admin", "containerPort": 9901, "protocol": "TCP"}],
                "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "256Mi"}},
                "volumeMounts": [{"name": "envoy-config", "mountPath": "/etc/envoy", "readOnly": true}],
                "securityContext": {"allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true, "capabilities": {"drop": ["ALL"]}}
            }],
            "volumes": [
                {"name": "config", "configMap": {"name": format!("{name}-config")}},
                {"name": "envoy-config", "configMap": {"name": format!("{name}-envoy")}},
                {"name": "tls", "secret": {"secretName": format!("{name}-tls")}},
                {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}}
            ],
            "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "payments", "effect": "NoSchedule"}],
            "topologySpreadConstraints": [{
                "maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone", "whenUnsatisfiable": "ScheduleAnyway",
                "labelSelector": {"matchLabels": {"app": name}}
            }]
        });
        if variant == Variant::Allowed {
            pod["affinity"] = json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchExpressions": [
                    {"key": "topology.kubernetes.io/region", "operator": "In", "values": ["cn-north-1", "cn-northwest-1"]}
                ]}]
            }}});
        }
        json!({
            "replicas": 3,
            "selector": {"matchLabels": {"app": name}},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 0}},
            "template": {
                "metadata": {
                    "labels": labels(name),
                    "annotations": {"prometheus.io/scrape": "true", "prometheus.io/port": "9090"}
                },
                "spec": pod
            }
        })
    }

    fn labels(name: &str) -> Value {
        json!({
            "app": name,
            "app.kubernetes.io/name": name,
            "app.kubernetes.io/part-of": "payments",
            "app.kubernetes.io/managed-by": "kubectl",
            "residencyguard.io/data-class": "personal"
        })
    }

    /// The managedFields (FieldsV1) shape of `v`: objects become `f:`
    /// entries, lists of named (or typed) objects become `k:` entries.
    fn fields_v1(v: &Value) -> Value {
        let mut out = Map::new();
        match v {
            Value::Object(map) => {
                for (k, child) in map {
                    out.insert(format!("f:{k}"), fields_v1(child));
                }
            }
            Value::Array(items) => {
                for item in items {
                    let key = ["name", "type", "containerPort", "key"]
                        .iter()
                        .find_map(|k| item.get(*k).map(|v| json!({*k: v})));
                    if let Some(key) = key {
                        let mut entry = fields_v1(item);
                        if let Value::Object(m) = &mut entry {
                            m.insert(".".into(), json!({}));
                        }
                        out.insert(format!("k:{key}"), entry);
                    }
                }
            }
            _ => {}
        }
        Value::Object(out)
    }

    /// How a review is shaped: `env` vars in the app container, `applied_env`
    /// extra entries in the last-applied annotation only (to make a very
    /// large review), and `pad` ASCII bytes of change-cause on the object.
    #[derive(Clone, Copy)]
    struct Shape {
        env: usize,
        applied_env: usize,
        pad: usize,
    }

    /// The Deployment as a validating webhook sees it on CREATE (uid,
    /// creationTimestamp and managedFields already set, status empty).
    fn deployment(variant: Variant, shape: Shape) -> Value {
        let name = variant.name();
        let spec = applied_spec(variant, "1.5.0", env_vars(name, shape.env));
        let mut applied_spec_value = spec.clone();
        if shape.applied_env > 0 {
            let env = env_vars(name, shape.env + shape.applied_env);
            applied_spec_value["template"]["spec"]["containers"][0]["env"] = Value::Array(env);
        }
        let applied = json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"annotations": {}, "labels": labels(name), "name": name, "namespace": "payments"},
            "spec": applied_spec_value
        });
        let last_applied = format!("{}\n", serde_json::to_string(&applied).expect("json"));
        let mut annotations = json!({
            "kubectl.kubernetes.io/last-applied-configuration": last_applied
        });
        if shape.pad > 0 {
            annotations["kubernetes.io/change-cause"] = Value::String("r".repeat(shape.pad));
        }
        let managed = json!([{
            "apiVersion": "apps/v1",
            "fieldsType": "FieldsV1",
            "fieldsV1": {
                "f:metadata": {
                    "f:annotations": {".": {}, "f:kubectl.kubernetes.io/last-applied-configuration": {}},
                    "f:labels": fields_v1(&labels(name))
                },
                "f:spec": fields_v1(&spec)
            },
            "manager": "kubectl-client-side-apply",
            "operation": "Update",
            "time": "2026-11-20T16:01:58Z"
        }]);
        let mut full_spec = spec;
        full_spec["progressDeadlineSeconds"] = json!(600);
        full_spec["revisionHistoryLimit"] = json!(10);
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {
                "name": name,
                "namespace": "payments",
                "uid": "4f6d0c1e-8a43-4b0e-9a51-2d7c3f1b9e60",
                "generation": 1,
                "creationTimestamp": "2026-11-20T16:01:58Z",
                "labels": labels(name),
                "annotations": annotations,
                "managedFields": managed
            },
            "spec": full_spec,
            "status": {}
        })
    }

    /// A CREATE AdmissionReview of the Deployment (`kubectl apply`).
    fn review(variant: Variant, shape: Shape) -> Vec<u8> {
        let name = variant.name();
        let object = deployment(variant, shape);
        let gvk = json!({"group": "apps", "version": "v1", "kind": "Deployment"});
        let gvr = json!({"group": "apps", "version": "v1", "resource": "deployments"});
        serde_json::to_vec(&json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
                "kind": gvk, "resource": gvr, "requestKind": gvk, "requestResource": gvr,
                "name": name,
                "namespace": "payments",
                "operation": "CREATE",
                "userInfo": {
                    "username": "system:serviceaccount:ci:deployer",
                    "uid": "a1b2c3d4-0000-4000-8000-00000000cafe",
                    "groups": ["system:serviceaccounts", "system:serviceaccounts:ci", "system:authenticated"]
                },
                "object": object,
                "oldObject": null,
                "dryRun": false,
                "options": {"kind": "CreateOptions", "apiVersion": "meta.k8s.io/v1", "fieldManager": "kubectl-client-side-apply", "fieldValidation": "Strict"}
            }
        }))
        .expect("json")
    }

    /// The largest `count` (≤ `max`) whose review is at most `target` bytes,
    /// then pad to exactly `target`.
    fn fit(target: usize, max: usize, build: impl Fn(usize, usize) -> Vec<u8>) -> Vec<u8> {
        let (mut lo, mut hi) = (0usize, max);
        assert!(
            build(0, 0).len() <= target,
            "the base review exceeds {target} bytes: {}",
            build(0, 0).len()
        );
        // Binary search, at most log2(max) + 1 steps.
        while lo < hi {
            let mid = (lo + hi).div_ceil(2);
            if build(mid, 0).len() <= target {
                lo = mid;
            } else {
                hi = mid - 1;
            }
        }
        let base = build(lo, 0).len();
        // The change-cause annotation adds its key and quotes once (pad > 0).
        let overhead = build(lo, 1).len() - base - 1;
        let out = if target > base + overhead {
            build(lo, target - base - overhead)
        } else {
            build(lo, 0)
        };
        assert!(out.len() <= target && target - out.len() < 64);
        out
    }

    /// The everyday review: exactly 14,700 bytes.
    pub fn review_14k(variant: Variant) -> Vec<u8> {
        fit(REVIEW_BYTES, 200, |env, pad| {
            review(
                variant,
                Shape {
                    env,
                    applied_env: 0,
                    pad,
                },
            )
        })
    }

    /// A 3 MiB review: the object's last-applied annotation carries a huge
    /// `env` list.
    pub fn review_3mib(variant: Variant) -> Vec<u8> {
        fit(LARGE_REVIEW_BYTES, 60_000, |applied_env, pad| {
            review(
                variant,
                Shape {
                    env: 8,
                    applied_env,
                    pad,
                },
            )
        })
    }
}

/// The snapshot, the reviews, and the answers checked.
struct Setup {
    snapshot: Snapshot,
    workloads: BTreeMap<String, Vec<Workload>>,
    now: jiff::Timestamp,
    denied: Vec<u8>,
    allowed: Vec<u8>,
    large: Vec<u8>,
    /// At the envelope: a NetworkPolicy DELETE review.
    network_policy: Option<NetworkPolicyReview>,
}

/// The DELETE of envelope NetworkPolicy `np-0` in `ns-0`, and what it is
/// judged against: the state's inventory of `ns-0` (Deployment `app-0`, its
/// ReplicaSet and its 50 pods), or the Deployment alone (as before issue 22).
struct NetworkPolicyReview {
    body: Vec<u8>,
    state: residency_guard::state::State,
    unowned_only: BTreeMap<String, Vec<Workload>>,
    objects: usize,
}

fn network_policy_review(snapshot: &Snapshot) -> NetworkPolicyReview {
    use cluster_data::{Scale, deployment_obj, network_policy_obj, pod_obj, replica_set_obj};
    let scale = Scale::ENVELOPE;
    let values: Vec<serde_json::Value> = [deployment_obj(0, &scale), replica_set_obj(0, &scale)]
        .into_iter()
        .chain(
            (0..scale.pods)
                .step_by(scale.deployments)
                .map(|i| pod_obj(i, &scale)),
        )
        .collect();
    let all: Vec<Workload> = values
        .iter()
        .map(|v| Workload::from_value(v, "default").expect("workload"))
        .collect();
    let objects = all.len();
    let unowned_only = BTreeMap::from([(
        "ns-0".to_string(),
        all.iter()
            .filter(|w| w.controller.is_none())
            .cloned()
            .collect(),
    )]);
    let state = residency_guard::state::State::fixed(
        snapshot.clone(),
        BTreeMap::from([("ns-0".to_string(), all)]),
    );
    let body = serde_json::to_vec(&serde_json::json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": "np-1",
            "kind": {"group": "networking.k8s.io", "version": "v1", "kind": "NetworkPolicy"},
            "resource": {"group": "networking.k8s.io", "version": "v1", "resource": "networkpolicies"},
            "name": "np-0", "namespace": "ns-0", "operation": "DELETE",
            "userInfo": {"username": "bob"},
            "oldObject": network_policy_obj(0, &scale),
        }
    }))
    .expect("JSON");
    NetworkPolicyReview {
        body,
        state,
        unowned_only,
        objects,
    }
}

const LANG: Lang = Lang::En;

/// `RG_SCALE=envelope`: the example cluster plus Kubernetes' envelope
/// (`cluster_data::Scale::ENVELOPE`: 5,000 Nodes, 10,000 namespaces, 200
/// policies, 5,000 NetworkPolicies; its pods are the audit's, not a
/// review's), loaded the way `check` loads manifests.
fn envelope_snapshot() -> (Snapshot, BTreeMap<String, Vec<Workload>>) {
    use cluster_data::{Scale, namespace_obj, network_policy_obj, node_obj, policy_value};
    let scale = Scale::ENVELOPE;
    let items: Vec<serde_json::Value> = (0..scale.nodes)
        .map(node_obj)
        .chain((0..scale.namespaces).map(namespace_obj))
        .chain((0..scale.policies).map(policy_value))
        .chain((0..scale.network_policies).map(|i| network_policy_obj(i, &scale)))
        .collect();
    let dir = tempfile::tempdir().expect("temporary directory");
    let file = dir.path().join("envelope.json");
    let list = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": items});
    std::fs::write(&file, serde_json::to_vec(&list).expect("JSON")).expect("write");
    let mut files = fixture::example_files();
    files.push(file);
    let loaded = fixture::snapshot_of(&files);
    println!(
        "snapshot: examples/cluster + the envelope ({} nodes, {} namespaces, {} policies, {} NetworkPolicies)",
        scale.nodes, scale.namespaces, scale.policies, scale.network_policies
    );
    loaded
}

impl Setup {
    fn new() -> Setup {
        use fixture::Variant;
        let (snapshot, workloads) = match std::env::var("RG_SCALE").as_deref() {
            Ok("envelope") => envelope_snapshot(),
            _ => fixture::example_snapshot(),
        };
        let network_policy = matches!(std::env::var("RG_SCALE").as_deref(), Ok("envelope"))
            .then(|| network_policy_review(&snapshot));
        let setup = Setup {
            snapshot,
            workloads,
            now: fixture::NOW.parse().expect("NOW"),
            denied: fixture::review_14k(Variant::Denied),
            allowed: fixture::review_14k(Variant::Allowed),
            large: fixture::review_3mib(Variant::Denied),
            network_policy,
        };
        // Check the answers before timing them.
        for (body, want) in [
            (&setup.denied, false),
            (&setup.allowed, true),
            (&setup.large, false),
        ] {
            let allowed = setup.handle(body).expect("a valid review");
            assert_eq!(allowed, want, "{} byte review", body.len());
        }
        setup
    }

    fn handle(&self, body: &[u8]) -> Option<bool> {
        admission::handle(
            black_box(body),
            Endpoint::Workloads,
            &self.snapshot,
            &self.workloads,
            LANG,
            self.now,
        )
        .ok()
        .map(|h| h.review.response.allowed)
    }

    /// The NetworkPolicy review against `workloads`: its answer.
    fn handle_network_policy(
        &self,
        review: &NetworkPolicyReview,
        workloads: &dyn residency_guard::state::WorkloadSource,
    ) -> Option<bool> {
        admission::handle(
            black_box(&review.body),
            Endpoint::NetworkPolicies,
            &self.snapshot,
            workloads,
            LANG,
            self.now,
        )
        .ok()
        .map(|h| h.review.response.allowed)
    }

    /// CPU per NetworkPolicy review, every selected object judged (now) and
    /// the unowned ones alone (before issue 22).
    fn network_policy_report(&self) {
        let Some(review) = &self.network_policy else {
            return;
        };
        let iterations = 2_000;
        let mut figures = Vec::new();
        let sources: [(&str, &dyn residency_guard::state::WorkloadSource); 2] = [
            ("every selected object", &review.state),
            ("the Deployment alone (before)", &review.unowned_only),
        ];
        for (what, source) in sources {
            let _ = self.handle_network_policy(review, source);
            let cpu0 = thread_cpu_ns();
            for _ in 0..iterations {
                black_box(self.handle_network_policy(review, source));
            }
            let cpu_us = cpu0
                .zip(thread_cpu_ns())
                .map(|(a, b)| (b - a) as f64 / 1e3 / iterations as f64);
            figures.push(cpu_us);
            println!(
                "NetworkPolicy DELETE review of np-0 ({} objects in ns-0), {what}: {} µs CPU",
                review.objects,
                cpu_us.map_or("unavailable".to_string(), |c| format!("{c:.1}"))
            );
        }
        if let [Some(now), Some(before)] = figures[..] {
            println!(
                "RESULT np_review_cpu_us {now:.1} (the Deployment alone: {before:.1}; ownership adds {:.1})",
                now - before
            );
        }
    }

    /// CPU time per review from the scheduler's per-thread accounting,
    /// which time spent waiting for a shared CPU does not inflate (criterion
    /// reports wall time).
    fn cpu_report(&self) {
        println!("handler CPU time per review (/proc/thread-self/schedstat):");
        let rows = [
            ("handler_cpu_us_denied", &self.denied, 20_000, 25.0),
            ("handler_cpu_us_allowed", &self.allowed, 20_000, 25.0),
            ("handler_cpu_us_3mib", &self.large, 40, 5_000.0),
        ];
        for (key, body, iterations, target) in rows {
            let _ = self.handle(body);
            let (cpu0, wall) = (thread_cpu_ns(), Instant::now());
            for _ in 0..iterations {
                black_box(self.handle(body));
            }
            let wall_us = wall.elapsed().as_secs_f64() * 1e6 / iterations as f64;
            let Some(cpu_us) = cpu0
                .zip(thread_cpu_ns())
                .map(|(a, b)| (b - a) as f64 / 1e3 / iterations as f64)
            else {
                println!("  {key}: schedstat unavailable (wall {wall_us:.1} µs)");
                continue;
            };
            println!(
                "  {} bytes: {cpu_us:.1} µs CPU, {wall_us:.1} µs wall ({iterations} reviews)",
                body.len()
            );
            let verdict = if cpu_us <= target { "PASS" } else { "MISS" };
            println!("RESULT {key} {cpu_us:.1} <={target} {verdict}");
        }
    }
}

fn thread_cpu_ns() -> Option<u64> {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn bench(c: &mut Criterion, setup: &Setup) {
    let mut group = c.benchmark_group("handler");
    group
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    for (name, body) in [
        ("deployment_denied", &setup.denied),
        ("deployment_allowed", &setup.allowed),
    ] {
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_function(name, |b| b.iter(|| setup.handle(body)));
    }
    group.throughput(Throughput::Bytes(setup.denied.len() as u64));
    group.bench_function("encode_response", |b| {
        b.iter(|| {
            let h = admission::handle(
                black_box(&setup.denied),
                Endpoint::Workloads,
                &setup.snapshot,
                &setup.workloads,
                LANG,
                setup.now,
            )
            .expect("valid");
            serde_json::to_vec(&h.review).expect("json").len()
        })
    });
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(4))
        .throughput(Throughput::Bytes(setup.large.len() as u64));
    group.bench_function("review_3mib", |b| b.iter(|| setup.handle(&setup.large)));
    group.finish();
}

fn main() {
    let setup = Setup::new();
    // Under `cargo bench` only; `cargo test --benches` runs each benchmark once.
    if std::env::args().any(|a| a == "--bench") {
        setup.cpu_report();
        setup.network_policy_report();
    }
    let mut c = Criterion::default().configure_from_args();
    bench(&mut c, &setup);
    c.final_summary();
}
