//! Generated cluster objects of realistic size (managedFields, last-applied
//! annotations, status, containers with env and args), shared by
//! `benches/audit.rs`, `benches/cold_start.rs` and `tests/cold_start_mock.rs`
//! (each includes this file with `#[path = ...] mod cluster_data;`).
//!
//! The shape, at any scale:
//! - node `i` is in `cn-northwest-1` (`i % 10 == 0`), `ap-east-1`
//!   (`i % 10 == 9`, abroad) or `cn-north-1`;
//! - Deployment `d` is in namespace `ns-{d % namespaces}` and carries data
//!   class `CLASSES[d % 5]`; its template has no nodeSelector when
//!   `d % 4 == 0` (can land abroad), else a mainland region;
//! - Deployment `d` has one ReplicaSet, `app-{d}-abc{d}` (its template
//!   with `pod-template-hash`, owned by it), as a cluster has;
//! - Pod `i` belongs to Deployment `i % deployments` (through that
//!   ReplicaSet) and is bound to node `(i * 7) % nodes`;
//! - namespace `ns-n` has label `tier: t{n % 10}`;
//! - policy `p` governs class `CLASSES[p % 5]` in namespaces of tier
//!   `t{p % 10}` (action Audit).

use serde_json::{Value, json};

pub const REGION: &str = "topology.kubernetes.io/region";
pub const CLASSES: [&str; 5] = ["personal", "financial", "health", "credit", "map"];

/// How many objects of each kind.
#[derive(Clone, Copy, Debug)]
pub struct Scale {
    pub nodes: usize,
    pub deployments: usize,
    pub pods: usize,
    pub policies: usize,
    pub namespaces: usize,
    /// One Deployment in this many carries a data class (its pods too).
    pub classified_every: usize,
    pub network_policies: usize,
}

impl Scale {
    /// The scale of the performance issue: 10,000 Pods + 1,000 Nodes +
    /// 2,000 Deployments + 50 policies (in 100 namespaces).
    pub const ISSUE: Scale = Scale {
        nodes: 1_000,
        deployments: 2_000,
        pods: 10_000,
        policies: 50,
        namespaces: 100,
        classified_every: 1,
        network_policies: 0,
    };

    /// Kubernetes' published scalability envelope (issue #14): 150,000 Pods
    /// (10% classified) on 5,000 Nodes, 3,000 Deployments, 10,000
    /// namespaces, 200 policies, 5,000 NetworkPolicies.
    pub const ENVELOPE: Scale = Scale {
        nodes: 5_000,
        deployments: 3_000,
        pods: 150_000,
        policies: 200,
        namespaces: 10_000,
        classified_every: 10,
        network_policies: 5_000,
    };

    /// `RG_SCALE=envelope` picks the envelope; anything else the issue scale.
    /// `RG_PODS=N` then scales it to N pods, every other kind but the
    /// policies in proportion (the chart's sizing table is measured so).
    pub fn from_env() -> Scale {
        let base = match std::env::var("RG_SCALE").as_deref() {
            Ok("envelope") => Scale::ENVELOPE,
            _ => Scale::ISSUE,
        };
        match std::env::var("RG_PODS").ok().and_then(|p| p.parse().ok()) {
            Some(pods) => base.with_pods(pods),
            None => base,
        }
    }

    /// This shape with `pods` pods, the other kinds (not the policies) in
    /// proportion, at least one of each that has any.
    pub fn with_pods(&self, pods: usize) -> Scale {
        let scaled = |n: usize| {
            if n == 0 {
                0
            } else {
                (n * pods / self.pods.max(1)).max(1)
            }
        };
        Scale {
            nodes: scaled(self.nodes),
            deployments: scaled(self.deployments),
            pods,
            policies: self.policies,
            namespaces: scaled(self.namespaces),
            classified_every: self.classified_every,
            network_policies: scaled(self.network_policies),
        }
    }

    pub fn describe(&self) -> String {
        format!(
            "{} pods ({} classified), {} nodes, {} deployments, {} policies, {} namespaces, {} NetworkPolicies",
            self.pods,
            self.pods / self.classified_every.max(1),
            self.nodes,
            self.deployments,
            self.policies,
            self.namespaces,
            self.network_policies
        )
    }
}

/// Roughly what the API server sends: managedFields, status, containers.
pub fn bulk(i: usize) -> Value {
    json!({
        "managedFields": (0..4).map(|k| json!({
            "manager": format!("kube-controller-manager-{k}"), "operation": "Update",
            "apiVersion": "v1", "time": "2026-06-01T00:00:00Z", "fieldsType": "FieldsV1",
            "fieldsV1": {"f:metadata": {"f:labels": {".": {}, "f:app": {}, "f:pod-template-hash": {}}},
                         "f:spec": {"f:containers": {"k:{\"name\":\"app\"}": {".": {}, "f:image": {}, "f:resources": {}}}},
                         "f:status": {"f:conditions": {}, "f:podIP": {}, "f:startTime": {}}}
        })).collect::<Vec<_>>(),
        "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "x".repeat(1500 + i % 7)},
        "uid": format!("0000-{i:08}"), "resourceVersion": format!("{}", 100_000 + i),
    })
}

pub fn containers() -> Value {
    json!([{"name": "app", "image": "registry.example.com/team/app:1.2.3",
            "env": (0..20).map(|k| json!({"name": format!("ENV_{k}"), "value": format!("value-{k}-with-some-length")})).collect::<Vec<_>>(),
            "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "256Mi"}},
            "volumeMounts": [{"name": "data", "mountPath": "/data"}, {"name": "tmp", "mountPath": "/tmp"}],
            "livenessProbe": {"httpGet": {"path": "/healthz", "port": 8080}, "periodSeconds": 10}},
           {"name": "sidecar", "image": "registry.example.com/mesh/proxy:1.20",
            "args": (0..30).map(|k| format!("--flag-{k}=value")).collect::<Vec<_>>()}])
}

pub fn region_of(node: usize) -> &'static str {
    match node % 10 {
        0 => "cn-northwest-1",
        9 => "ap-east-1", // a few nodes abroad
        _ => "cn-north-1",
    }
}

pub fn node_obj(i: usize) -> Value {
    let mut meta = bulk(i);
    meta["name"] = json!(format!("node-{i:04}"));
    meta["labels"] = json!({REGION: region_of(i), "pool": format!("pool-{}", i % 5),
        "kubernetes.io/hostname": format!("node-{i:04}"), "node.kubernetes.io/instance-type": "m5.large"});
    json!({"apiVersion": "v1", "kind": "Node", "metadata": meta,
           "spec": {"providerID": format!("aws:///{}a/i-{i:08}", region_of(i))},
           "status": {"capacity": {"cpu": "4", "memory": "16Gi"}, "images": (0..30).map(|k| json!({"names": [format!("registry.example.com/image-{k}@sha256:{}", "a".repeat(64))], "sizeBytes": 1_000_000})).collect::<Vec<_>>()}})
}

/// Deployment `i`'s pod template: classified when `i` is a multiple of
/// `classified_every`; three in four pinned to a mainland region.
pub fn template(i: usize, classified_every: usize) -> Value {
    let mut spec = json!({"containers": containers()});
    if !i.is_multiple_of(4) {
        spec["nodeSelector"] =
            json!({REGION: if i % 4 == 1 { "cn-north-1" } else { "cn-northwest-1" }});
    }
    let mut labels = json!({"app": format!("app-{i}")});
    if i.is_multiple_of(classified_every.max(1)) {
        labels["residencyguard.io/data-class"] = json!(CLASSES[i % CLASSES.len()]);
    }
    json!({"metadata": {"labels": labels}, "spec": spec})
}

pub fn deployment_obj(i: usize, scale: &Scale) -> Value {
    let mut meta = bulk(i);
    meta["name"] = json!(format!("app-{i}"));
    meta["namespace"] = json!(format!("ns-{}", i % scale.namespaces));
    json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta,
           "spec": {"replicas": 5, "selector": {"matchLabels": {"app": format!("app-{i}")}}, "template": template(i, scale.classified_every)}})
}

/// Deployment `d`'s ReplicaSet, as the Deployment controller makes it.
pub fn replica_set_obj(d: usize, scale: &Scale) -> Value {
    let mut t = template(d, scale.classified_every);
    t["metadata"]["labels"]["pod-template-hash"] = json!(format!("abc{d}"));
    let mut meta = bulk(d);
    meta["name"] = json!(format!("app-{d}-abc{d}"));
    meta["namespace"] = json!(format!("ns-{}", d % scale.namespaces));
    meta["uid"] = json!(format!("4444-{d:08}"));
    meta["labels"] = t["metadata"]["labels"].clone();
    meta["ownerReferences"] = json!([{"apiVersion": "apps/v1", "kind": "Deployment", "name": format!("app-{d}"), "uid": format!("0000-{d:08}"), "controller": true, "blockOwnerDeletion": true}]);
    json!({"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": meta,
           "spec": {"replicas": 5, "selector": {"matchLabels": {"app": format!("app-{d}"), "pod-template-hash": format!("abc{d}")}}, "template": t},
           "status": {"replicas": 5, "readyReplicas": 5, "availableReplicas": 5, "observedGeneration": 1}})
}

pub fn pod_obj(i: usize, scale: &Scale) -> Value {
    let d = i % scale.deployments;
    let mut t = template(d, scale.classified_every);
    let mut meta = bulk(i);
    meta["name"] = json!(format!("app-{d}-abc{d}-{i}"));
    meta["namespace"] = json!(format!("ns-{}", d % scale.namespaces));
    meta["labels"] = t["metadata"]["labels"].clone();
    meta["labels"]["pod-template-hash"] = json!(format!("abc{d}"));
    meta["ownerReferences"] = json!([{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": format!("app-{d}-abc{d}"), "uid": format!("4444-{d:08}"), "controller": true}]);
    t["spec"]["nodeName"] = json!(format!("node-{:04}", (i * 7) % scale.nodes));
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": t["spec"],
           "status": {"phase": "Running", "podIP": "10.0.0.1", "conditions": (0..4).map(|k| json!({"type": format!("C{k}"), "status": "True", "lastTransitionTime": "2026-06-01T00:00:00Z"})).collect::<Vec<_>>()}})
}

/// ResidencyPolicy `i` as the API server returns it.
pub fn policy_value(i: usize) -> Value {
    json!({
        "apiVersion": "residencyguard.io/v1alpha1", "kind": "ResidencyPolicy",
        "metadata": {"name": format!("policy-{i}"), "generation": 1,
                     "uid": format!("1111-{i:08}"), "resourceVersion": format!("{}", 200_000 + i)},
        "spec": {"dataClasses": [CLASSES[i % CLASSES.len()]], "action": "Audit",
                 "namespaceSelector": {"matchExpressions": [{"key": "tier", "operator": "In", "values": [format!("t{}", i % 10)]}]}}
    })
}

pub fn policy_obj(i: usize) -> residency_guard::api::ResidencyPolicy {
    serde_json::from_value(policy_value(i)).expect("policy")
}

/// The labels of namespace `ns-{n}`.
pub fn namespace_tier(n: usize) -> String {
    format!("t{}", n % 10)
}

/// NetworkPolicy `i`: egress of Deployment `i % deployments`'s pods to
/// the cluster and to one mainland block (nothing abroad).
pub fn network_policy_obj(i: usize, scale: &Scale) -> Value {
    let d = i % scale.deployments.max(1);
    json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
           "metadata": {"name": format!("np-{i}"), "namespace": format!("ns-{}", d % scale.namespaces),
                        "uid": format!("3333-{i:08}"), "resourceVersion": format!("{}", 400_000 + i)},
           "spec": {"podSelector": {"matchLabels": {"app": format!("app-{d}")}},
                    "policyTypes": ["Egress"],
                    "egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/8"}},
                                       {"ipBlock": {"cidr": "52.80.0.0/16"}}],
                                "ports": [{"protocol": "TCP", "port": 443}]}]}})
}

pub fn namespace_obj(n: usize) -> Value {
    json!({"apiVersion": "v1", "kind": "Namespace",
           "metadata": {"name": format!("ns-{n}"), "uid": format!("2222-{n:08}"),
                        "resourceVersion": format!("{}", 300_000 + n),
                        "labels": {"tier": namespace_tier(n), "kubernetes.io/metadata.name": format!("ns-{n}")}},
           "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}})
}
