//! The workload graph against a brute-force model (issue 22): random
//! sequences of writes by a developer with the `edit` role and no
//! `declassify` verb, interleaved with the built-in controllers that act
//! after each write (Deployment, ReplicaSet, garbage collector, an
//! adversarial scheduler), every write sent through the chart's pre-filter
//! and the real admission handler.
//!
//! The model tracks where the personal data really is, whatever the labels
//! say: in every pod made from the classified Deployment's template (by
//! its ReplicaSets, or copied from one of its pods) and in every pod that
//! mounts the claim its pods write to, or a clone of that claim. After
//! every step:
//!
//! - no such pod is bound to a node outside mainland China;
//! - none has open egress (no NetworkPolicy selects it);
//! - each is seen as classified by the audit (a full pass reports it, or
//!   the owner that answers for it);
//! - no controller's scale-down or orphaning write was refused.
//!
//! The operator's audit leader acts too: it labels the claim a classified
//! workload mounts (`audit.labelClaims`), so deleting the Deployment with a
//! cascade leaves a claim that still classifies whoever mounts it next.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use jiff::Timestamp;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use proptest::prelude::*;
use residency_guard::api::ResidencyPolicy;
use residency_guard::audit::Auditor;
use residency_guard::audit::plan::PlanConfig;
use residency_guard::engine::{
    AddressSpace, Catalogue, ClaimRecord, Lang, NodeInfo, Snapshot, SnapshotBuilder, VolumeRecord,
    Workload,
};
use residency_guard::state::{Inventory, State, WorkloadKey};
use residency_guard::webhook::admission::{Endpoint, handle};
use serde_json::{Value, json};

const NS: &str = "app";
const REGION: &str = "topology.kubernetes.io/region";
const CLASS: &str = "residencyguard.io/data-class";
const CLAIM: &str = "records-data";
/// The one clone of the claim a developer may make (`spec.dataSource`).
const CLONE: &str = "records-copy";
const SCOPE: (&str, &str) = ("compliance", "pipl");
const DEVELOPER: &str = "dev@example.com";
const DEPLOYMENT_CONTROLLER: &str = "system:serviceaccount:kube-system:deployment-controller";
const REPLICASET_CONTROLLER: &str = "system:serviceaccount:kube-system:replicaset-controller";
const GARBAGE_COLLECTOR: &str = "system:serviceaccount:kube-system:generic-garbage-collector";
const OPERATOR: &str = "system:serviceaccount:residency-guard:residency-guard";

fn now() -> Timestamp {
    "2026-06-01T00:00:00Z".parse().unwrap()
}

/// A pin a write can put on a pod template.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Pin {
    Mainland,
    /// Another mainland region: a legitimate rollout.
    Ningxia,
    HongKong,
    None,
}

impl Pin {
    fn apply(self, pod_spec: &mut Value) {
        match self {
            Pin::Mainland => pod_spec["nodeSelector"] = json!({REGION: "cn-north-1"}),
            Pin::Ningxia => pod_spec["nodeSelector"] = json!({REGION: "cn-northwest-1"}),
            Pin::HongKong => pod_spec["nodeSelector"] = json!({REGION: "ap-east-1"}),
            Pin::None => {
                if let Some(spec) = pod_spec.as_object_mut() {
                    spec.remove("nodeSelector");
                    spec.remove("nodeName");
                }
            }
        }
    }
}

/// What the developer tries.
#[derive(Clone, Debug)]
enum Write {
    /// Edit the Deployment's pod template placement.
    PinDeployment(Pin),
    /// Move the class label from the pod template to the metadata.
    MoveClassToMetadata,
    /// Drop the class label from the pod template.
    DropTemplateClass,
    /// A new image: a rollout that changes nothing about placement.
    ChangeImage,
    /// Point a controller ownerReference at a ConfigMap they made, or drop it.
    OwnDeploymentByConfigMap(bool),
    /// The same on the newest ReplicaSet.
    OwnReplicaSetByConfigMap(bool),
    Scale(i32),
    Pause(bool),
    /// Edit the newest ReplicaSet's template placement (finding 2).
    PinReplicaSet(Pin),
    /// Drop the class label from the newest ReplicaSet's template.
    DropReplicaSetClass,
    /// Take the scope label off the namespace, or put it back.
    NamespaceInScope(bool),
    /// Label the whole namespace `personal`, or take that label off.
    NamespaceClass(bool),
    /// `kubectl debug --copy-to`, or an ad-hoc pod: a copy of a running
    /// pod of the Deployment, with or without its labels, pinned, with or
    /// without the claim.
    CopyPod {
        keep_labels: bool,
        pin: Pin,
        mount_claim: bool,
    },
    /// An unrelated pod mounting the claim; with `app: records` (which the
    /// isolating NetworkPolicy selects) or no labels.
    PodOnClaim(Pin, bool),
    DeleteNetworkPolicy,
    DeleteAPod,
    /// `kubectl delete deployment --cascade=orphan`.
    OrphanDeployment,
    /// `kubectl delete deployment`: its ReplicaSets and pods go too.
    DeleteDeployment,
    /// Take the class label off the claim.
    UnlabelClaim,
    /// Clone the claim (`spec.dataSource`), with its class label or without.
    CloneClaim(bool),
    /// An unrelated pod mounting the clone, isolated or not.
    PodOnClone(Pin, bool),
}

fn pin() -> impl Strategy<Value = Pin> {
    prop_oneof![
        Just(Pin::Mainland),
        Just(Pin::Ningxia),
        Just(Pin::HongKong),
        Just(Pin::None)
    ]
}

fn write() -> impl Strategy<Value = Write> {
    prop_oneof![
        pin().prop_map(Write::PinDeployment),
        Just(Write::MoveClassToMetadata),
        Just(Write::DropTemplateClass),
        Just(Write::ChangeImage),
        any::<bool>().prop_map(Write::OwnDeploymentByConfigMap),
        any::<bool>().prop_map(Write::OwnReplicaSetByConfigMap),
        (0..3i32).prop_map(Write::Scale),
        any::<bool>().prop_map(Write::Pause),
        pin().prop_map(Write::PinReplicaSet),
        Just(Write::DropReplicaSetClass),
        any::<bool>().prop_map(Write::NamespaceInScope),
        any::<bool>().prop_map(Write::NamespaceClass),
        (any::<bool>(), pin(), any::<bool>()).prop_map(|(keep_labels, pin, mount_claim)| {
            Write::CopyPod {
                keep_labels,
                pin,
                mount_claim,
            }
        }),
        (pin(), any::<bool>()).prop_map(|(p, isolated)| Write::PodOnClaim(p, isolated)),
        Just(Write::DeleteNetworkPolicy),
        Just(Write::DeleteAPod),
        Just(Write::OrphanDeployment),
        Just(Write::DeleteDeployment),
        Just(Write::UnlabelClaim),
        any::<bool>().prop_map(Write::CloneClaim),
        (pin(), any::<bool>()).prop_map(|(p, isolated)| Write::PodOnClone(p, isolated)),
    ]
}

/// The cluster: objects by (kind, name), all in namespace `app`, the
/// namespace's labels, and the model's truth.
#[derive(Clone)]
struct Cluster {
    objects: BTreeMap<(String, String), Value>,
    namespace_labels: BTreeMap<String, String>,
    /// Pods that hold personal data (the model's truth, not labels).
    carrying: BTreeSet<String>,
    /// ReplicaSets made from the classified Deployment's template.
    data_replica_sets: BTreeSet<String>,
    next: u32,
    log: Vec<String>,
    /// Controller writes that must never be refused and were.
    refused_controller: Vec<String>,
    /// False: no webhook installed (every write lands), to show the model
    /// can fail.
    webhook: bool,
    /// The claim's `residencyguard.io/data-class` label.
    claim_label: Option<String>,
    /// The audit leader labels claims (`audit.labelClaims`).
    label_claims: bool,
    /// The clone's label, once the clone exists (it holds the data too).
    clone_label: Option<Option<String>>,
}

fn deployment() -> Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "records", "namespace": NS, "uid": "uid-records"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "records"}},
                 "template": {"metadata": {"labels": {"app": "records", CLASS: "personal"}},
                              "spec": {"nodeSelector": {REGION: "cn-north-1"},
                                       "containers": [{"name": "c", "image": "i"}],
                                       "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": CLAIM}}]}}}})
}

fn isolating_policy() -> Value {
    json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": "records-egress", "namespace": NS},
        "spec": {"podSelector": {"matchLabels": {"app": "records"}}, "policyTypes": ["Egress"],
                 "egress": [{"to": [{"podSelector": {}}]}]}})
}

fn residency_policy() -> ResidencyPolicy {
    serde_json::from_value(json!({
        "apiVersion": "residencyguard.io/v1alpha1", "kind": "ResidencyPolicy",
        "metadata": {"name": "personal", "generation": 1},
        "spec": {"dataClasses": ["personal"], "action": "Deny",
                 "namespaceSelector": {"matchLabels": {SCOPE.0: SCOPE.1}},
                 "egress": {"mode": "MainlandOnly"}}
    }))
    .unwrap()
}

fn labels(v: &Value) -> BTreeMap<String, String> {
    serde_json::from_value(v["metadata"]["labels"].clone()).unwrap_or_default()
}

fn owner_ref(kind: &str, name: &str, uid: &str) -> Value {
    let api = if kind == "ConfigMap" { "v1" } else { "apps/v1" };
    json!([{"apiVersion": api, "kind": kind, "name": name, "uid": uid,
            "controller": true, "blockOwnerDeletion": true}])
}

fn controller_of(v: &Value) -> Option<(String, String)> {
    v["metadata"]["ownerReferences"]
        .as_array()?
        .iter()
        .find(|r| r["controller"] == true)
        .map(|r| {
            (
                r["kind"].as_str().unwrap_or_default().to_string(),
                r["name"].as_str().unwrap_or_default().to_string(),
            )
        })
}

fn mounts_claim(pod: &Value) -> bool {
    pod["spec"]["volumes"].as_array().is_some_and(|vs| {
        vs.iter().any(|v| {
            [CLAIM, CLONE]
                .map(Value::from)
                .contains(&v["persistentVolumeClaim"]["claimName"])
        })
    })
}

/// The chart's matchConditions and selectors (templates/webhook.yaml),
/// written out: does the API server send this request at all?
fn pre_filter_sends(
    kind: &str,
    op: &str,
    new: Option<&Value>,
    old: Option<&Value>,
    namespace_labels: &BTreeMap<String, String>,
    user: &str,
) -> bool {
    match kind {
        "NetworkPolicy" => match op {
            "DELETE" => user != "system:serviceaccount:kube-system:namespace-controller",
            "UPDATE" => new.map(|n| &n["spec"]) != old.map(|o| &o["spec"]),
            _ => true,
        },
        "PersistentVolumeClaim" => {
            let class = |v: Option<&Value>| v.and_then(|v| labels(v).get(CLASS).cloned());
            let cloned = op == "CREATE"
                && new.is_some_and(|n| n["spec"]["dataSource"]["kind"] == "PersistentVolumeClaim");
            (class(new).is_some() || class(old).is_some())
                && (op != "UPDATE" || class(new) != class(old))
                || cloned
        }
        "Namespace" => match (new, old) {
            (Some(n), Some(o)) => labels(n) != labels(o),
            (Some(n), None) => labels(n).contains_key(CLASS),
            _ => false,
        },
        _ => {
            if op == "DELETE" {
                return false;
            }
            let changed = match (new, old) {
                (Some(n), Some(o)) if op == "UPDATE" => {
                    n["spec"] != o["spec"]
                        || n["metadata"]["labels"] != o["metadata"]["labels"]
                        || n["metadata"]["ownerReferences"] != o["metadata"]["ownerReferences"]
                }
                _ => true,
            };
            let labelled = |v: Option<&Value>| v.is_some_and(|v| labels(v).contains_key(CLASS));
            let template = |v: Option<&Value>| {
                v.is_some_and(|v| {
                    v["spec"]["template"]["metadata"]["labels"]
                        .get(CLASS)
                        .is_some()
                })
            };
            let entry1 = labelled(new) || labelled(old);
            let entry2 = namespace_labels.contains_key(CLASS);
            let entry3 = template(new) || template(old);
            let entry4 = kind == "Pod" && op == "CREATE" && new.is_some_and(mounts_claim);
            changed && (entry1 || entry2 || entry3) || entry4
        }
    }
}

impl Cluster {
    fn new() -> Cluster {
        Cluster::with_claim_labels(true)
    }

    fn with_claim_labels(label_claims: bool) -> Cluster {
        let mut c = Cluster {
            objects: BTreeMap::new(),
            namespace_labels: BTreeMap::from([(SCOPE.0.to_string(), SCOPE.1.to_string())]),
            carrying: BTreeSet::new(),
            data_replica_sets: BTreeSet::new(),
            next: 0,
            log: Vec::new(),
            refused_controller: Vec::new(),
            webhook: true,
            claim_label: None,
            label_claims,
            clone_label: None,
        };
        c.put(deployment());
        c.put(isolating_policy());
        c.put(json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "decoy", "namespace": NS, "uid": "uid-decoy"}}));
        // The Deployment was admitted and has run: its ReplicaSet and pod
        // exist, and the pod has written personal data to the claim.
        c.settle();
        assert!(
            !c.carrying.is_empty(),
            "setup: the Deployment's pod was not created: {:?}",
            c.log
        );
        c
    }

    fn put(&mut self, v: Value) {
        let kind = v["kind"].as_str().unwrap().to_string();
        let name = v["metadata"]["name"].as_str().unwrap().to_string();
        self.objects.insert((kind, name), v);
    }

    fn get(&self, kind: &str, name: &str) -> Option<&Value> {
        self.objects.get(&(kind.to_string(), name.to_string()))
    }

    fn of_kind(&self, kind: &str) -> Vec<Value> {
        self.objects
            .iter()
            .filter(|((k, _), _)| k == kind)
            .map(|(_, v)| v.clone())
            .collect()
    }

    fn snapshot(&self) -> Snapshot {
        let base = Snapshot::new(Catalogue::builtin().clone(), AddressSpace::builtin());
        let mut b = SnapshotBuilder::new(base, now());
        b.nodes_known();
        b.policy(&residency_policy()).unwrap();
        for (name, region) in [
            ("cn-node-1", "cn-north-1"),
            ("cn-node-2", "cn-northwest-1"),
            ("hk-node-1", "ap-east-1"),
        ] {
            b.node(NodeInfo {
                name: name.into(),
                labels: BTreeMap::from([(REGION.to_string(), region.to_string())]),
                provider_id: None,
            });
        }
        b.namespace(NS, self.namespace_labels.clone());
        b.persistent_volume_claim(ClaimRecord {
            namespace: NS.into(),
            name: CLAIM.into(),
            storage_class: Some(String::new()),
            volume_name: Some("pv-records".into()),
            class_label: self.claim_label.clone(),
        });
        // Bound to a zonal disk in Beijing.
        b.persistent_volume(VolumeRecord {
            name: "pv-records".into(),
            labels: vec![(REGION.to_string(), "cn-north-1".to_string())],
            storage_class: Some(String::new()),
            claim: Some((NS.into(), CLAIM.into())),
            ..VolumeRecord::default()
        });
        // A clone is provisioned beside its source.
        if let Some(label) = &self.clone_label {
            b.persistent_volume_claim(ClaimRecord {
                namespace: NS.into(),
                name: CLONE.into(),
                storage_class: Some(String::new()),
                volume_name: Some("pv-copy".into()),
                class_label: label.clone(),
            });
            b.persistent_volume(VolumeRecord {
                name: "pv-copy".into(),
                labels: vec![(REGION.to_string(), "cn-north-1".to_string())],
                storage_class: Some(String::new()),
                claim: Some((NS.into(), CLONE.into())),
                ..VolumeRecord::default()
            });
        }
        for np in self.of_kind("NetworkPolicy") {
            let np: NetworkPolicy = serde_json::from_value(np).unwrap();
            b.network_policy(&np);
        }
        b.build()
    }

    fn workloads(&self) -> Vec<Workload> {
        self.objects
            .iter()
            .filter(|((k, _), _)| matches!(k.as_str(), "Deployment" | "ReplicaSet" | "Pod"))
            .map(|(_, v)| Workload::from_value(v, NS).unwrap())
            .collect()
    }

    /// Send one write through the pre-filter and the handler as `user`
    /// (who may not declassify); apply it when admitted.
    fn write(&mut self, user: &str, op: &str, new: Option<Value>, old: Option<Value>) -> bool {
        let any = new.as_ref().or(old.as_ref()).unwrap().clone();
        let kind = any["kind"].as_str().unwrap().to_string();
        let name = any["metadata"]["name"].as_str().unwrap().to_string();
        let admitted = if !self.webhook {
            true
        } else if pre_filter_sends(
            &kind,
            op,
            new.as_ref(),
            old.as_ref(),
            &self.namespace_labels,
            user,
        ) {
            let (allowed, message) = self.review(user, op, &kind, &name, &new, &old);
            self.log.push(format!(
                "{user} {op} {kind} {name}: {}",
                if allowed { "admitted".into() } else { message }
            ));
            allowed
        } else {
            self.log
                .push(format!("{user} {op} {kind} {name}: not sent"));
            true
        };
        if admitted {
            match (kind.as_str(), new) {
                ("Namespace", Some(n)) => self.namespace_labels = labels(&n),
                ("PersistentVolumeClaim", Some(n)) if name == CLONE => {
                    self.clone_label = Some(labels(&n).get(CLASS).cloned())
                }
                ("PersistentVolumeClaim", Some(n)) => {
                    self.claim_label = labels(&n).get(CLASS).cloned()
                }
                (_, Some(n)) => self.put(n),
                (_, None) => {
                    self.objects.remove(&(kind, name));
                }
            }
        }
        admitted
    }

    fn review(
        &self,
        user: &str,
        op: &str,
        kind: &str,
        name: &str,
        new: &Option<Value>,
        old: &Option<Value>,
    ) -> (bool, String) {
        let (group, version, resource, endpoint) = match kind {
            "Deployment" => ("apps", "v1", "deployments", Endpoint::Workloads),
            "ReplicaSet" => ("apps", "v1", "replicasets", Endpoint::Workloads),
            "Pod" => ("", "v1", "pods", Endpoint::Workloads),
            "Namespace" => ("", "v1", "namespaces", Endpoint::Namespaces),
            // Claims' labels are judged on the Namespaces' path.
            "PersistentVolumeClaim" => ("", "v1", "persistentvolumeclaims", Endpoint::Namespaces),
            "NetworkPolicy" => (
                "networking.k8s.io",
                "v1",
                "networkpolicies",
                Endpoint::NetworkPolicies,
            ),
            other => panic!("no review for {other}"),
        };
        let body = serde_json::to_vec(&json!({
            "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {
                "uid": "u", "operation": op, "name": name,
                "namespace": if kind == "Namespace" { Value::Null } else { json!(NS) },
                "kind": {"group": group, "version": version, "kind": kind},
                "resource": {"group": group, "version": version, "resource": resource},
                "userInfo": {"username": user},
                "object": new, "oldObject": old,
            }
        }))
        .unwrap();
        let snapshot = self.snapshot();
        let state = State::fixed(
            snapshot.clone(),
            BTreeMap::from([(NS.to_string(), self.workloads())]),
        );
        let handled = handle(&body, endpoint, &snapshot, &state, Lang::En, now())
            .unwrap_or_else(|e| panic!("{op} {kind} {name}: {e}"));
        let response = handled.review.response;
        // The developer and the controllers hold no `declassify` verb: the
        // SubjectAccessReview the server would make answers no.
        if response.allowed && handled.decision.declassify.is_some() {
            return (
                false,
                "declassification refused (no declassify verb)".into(),
            );
        }
        (
            response.allowed,
            response.status.map(|s| s.message).unwrap_or_default(),
        )
    }

    fn namespace_object(&self) -> Value {
        json!({"apiVersion": "v1", "kind": "Namespace",
               "metadata": {"name": NS, "labels": self.namespace_labels}})
    }

    fn claim_object(&self) -> Value {
        self.claim_named(CLAIM)
    }

    fn claim_named(&self, name: &str) -> Value {
        let (label, volume) = if name == CLONE {
            (self.clone_label.clone().flatten(), "pv-copy")
        } else {
            (self.claim_label.clone(), "pv-records")
        };
        let mut labels = serde_json::Map::new();
        if let Some(v) = label {
            labels.insert(CLASS.into(), json!(v));
        }
        json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
               "metadata": {"name": name, "namespace": NS, "labels": labels},
               "spec": {"storageClassName": "", "volumeName": volume}})
    }

    fn newest_replica_set(&self) -> Option<Value> {
        self.of_kind("ReplicaSet")
            .into_iter()
            .max_by_key(|rs| rs["metadata"]["annotations"]["revision"].as_u64())
    }

    fn pods(&self) -> Vec<Value> {
        self.of_kind("Pod")
    }

    /// The developer's write.
    fn attempt(&mut self, w: &Write) {
        self.log.push(format!("-- {w:?}"));
        let deployment = self.get("Deployment", "records").cloned();
        let edit_deployment = |f: &dyn Fn(&mut Value)| {
            deployment.clone().map(|old| {
                let mut new = old.clone();
                f(&mut new);
                (new, old)
            })
        };
        let update = match w {
            Write::PinDeployment(p) => {
                edit_deployment(&|d| p.apply(&mut d["spec"]["template"]["spec"]))
            }
            Write::MoveClassToMetadata => edit_deployment(&|d| {
                if let Some(v) = d["spec"]["template"]["metadata"]["labels"]
                    .as_object_mut()
                    .and_then(|l| l.remove(CLASS))
                {
                    d["metadata"]["labels"] = json!({CLASS: v});
                }
            }),
            Write::DropTemplateClass => edit_deployment(&|d| {
                if let Some(l) = d["spec"]["template"]["metadata"]["labels"].as_object_mut() {
                    l.remove(CLASS);
                }
            }),
            Write::OwnDeploymentByConfigMap(on) => edit_deployment(&|d| {
                d["metadata"]["ownerReferences"] = if *on {
                    owner_ref("ConfigMap", "decoy", "uid-decoy")
                } else {
                    Value::Null
                };
            }),
            Write::ChangeImage => {
                let image = format!("i{}", self.bump());
                edit_deployment(&|d| {
                    d["spec"]["template"]["spec"]["containers"][0]["image"] = json!(image)
                })
            }
            Write::OwnReplicaSetByConfigMap(on) => self.newest_replica_set().map(|old| {
                let mut new = old.clone();
                new["metadata"]["ownerReferences"] = if *on {
                    owner_ref("ConfigMap", "decoy", "uid-decoy")
                } else {
                    Value::Null
                };
                (new, old)
            }),
            Write::Scale(n) => edit_deployment(&|d| d["spec"]["replicas"] = json!(n)),
            Write::Pause(p) => edit_deployment(&|d| d["spec"]["paused"] = json!(p)),
            Write::PinReplicaSet(p) => self.newest_replica_set().map(|old| {
                let mut new = old.clone();
                p.apply(&mut new["spec"]["template"]["spec"]);
                (new, old)
            }),
            Write::DropReplicaSetClass => self.newest_replica_set().map(|old| {
                let mut new = old.clone();
                if let Some(l) = new["spec"]["template"]["metadata"]["labels"].as_object_mut() {
                    l.remove(CLASS);
                }
                (new, old)
            }),
            Write::NamespaceInScope(on) => {
                let old = self.namespace_object();
                let mut new = old.clone();
                if *on {
                    new["metadata"]["labels"][SCOPE.0] = json!(SCOPE.1);
                } else if let Some(l) = new["metadata"]["labels"].as_object_mut() {
                    l.remove(SCOPE.0);
                }
                Some((new, old))
            }
            Write::NamespaceClass(on) => {
                let old = self.namespace_object();
                let mut new = old.clone();
                if *on {
                    new["metadata"]["labels"][CLASS] = json!("personal");
                } else if let Some(l) = new["metadata"]["labels"].as_object_mut() {
                    l.remove(CLASS);
                }
                Some((new, old))
            }
            Write::CopyPod {
                keep_labels,
                pin,
                mount_claim,
            } => {
                let Some(source) = self.pods().into_iter().find(|p| {
                    self.carrying
                        .contains(p["metadata"]["name"].as_str().unwrap())
                }) else {
                    return;
                };
                let name = format!("copy-{}", self.bump());
                let mut spec = source["spec"].clone();
                pin.apply(&mut spec);
                if let Some(s) = spec.as_object_mut() {
                    s.remove("nodeName");
                }
                if !mount_claim && let Some(s) = spec.as_object_mut() {
                    s.remove("volumes");
                }
                let mut meta = json!({"name": name, "namespace": NS});
                if *keep_labels {
                    meta["labels"] = source["metadata"]["labels"].clone();
                }
                let pod =
                    json!({"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec});
                // A copy holds the data when it reads the claim, and is
                // declared to when it keeps the labels. One with neither is
                // any pod the developer could have written by hand: out of
                // any admission control's reach (README, "Out of reach").
                let declared = *keep_labels && labels(&source).contains_key(CLASS);
                let reads_claim = mounts_claim(&pod);
                if self.write(DEVELOPER, "CREATE", Some(pod), None) && (declared || reads_claim) {
                    self.carrying.insert(name);
                }
                return;
            }
            Write::PodOnClaim(pin, isolated) => {
                self.pod_on(CLAIM, *pin, *isolated);
                return;
            }
            Write::DeleteNetworkPolicy => {
                if let Some(old) = self.get("NetworkPolicy", "records-egress").cloned() {
                    self.write(DEVELOPER, "DELETE", None, Some(old));
                }
                return;
            }
            Write::DeleteAPod => {
                if let Some(p) = self.pods().first() {
                    let name = p["metadata"]["name"].as_str().unwrap().to_string();
                    self.objects.remove(&("Pod".to_string(), name.clone()));
                    self.carrying.remove(&name);
                    self.log.push(format!("{DEVELOPER} DELETE Pod {name}"));
                }
                return;
            }
            Write::DeleteDeployment => {
                if deployment.is_some() {
                    self.log
                        .push(format!("{DEVELOPER} DELETE Deployment records (cascade)"));
                    // The garbage collector deletes what it owned, and what
                    // those owned (deletes are not reviewed).
                    let owned_by = |v: &Value, kind: &str, name: &str| {
                        controller_of(v) == Some((kind.to_string(), name.to_string()))
                    };
                    self.objects
                        .remove(&("Deployment".to_string(), "records".to_string()));
                    for rs in self.of_kind("ReplicaSet") {
                        if owned_by(&rs, "Deployment", "records") {
                            let rs_name = rs["metadata"]["name"].as_str().unwrap().to_string();
                            for pod in self.pods() {
                                if owned_by(&pod, "ReplicaSet", &rs_name) {
                                    let name = pod["metadata"]["name"].as_str().unwrap();
                                    self.objects.remove(&("Pod".to_string(), name.to_string()));
                                    self.carrying.remove(name);
                                }
                            }
                            self.objects.remove(&("ReplicaSet".to_string(), rs_name));
                        }
                    }
                }
                return;
            }
            Write::CloneClaim(labelled) => {
                if self.clone_label.is_none() {
                    let mut clone = self.claim_named(CLONE);
                    clone["spec"] = json!({"storageClassName": "",
                        "dataSource": {"kind": "PersistentVolumeClaim", "name": CLAIM}});
                    if *labelled {
                        clone["metadata"]["labels"][CLASS] = json!("personal");
                    }
                    self.write(DEVELOPER, "CREATE", Some(clone), None);
                }
                return;
            }
            Write::PodOnClone(pin, isolated) => {
                if self.clone_label.is_none() {
                    return;
                }
                self.pod_on(CLONE, *pin, *isolated);
                return;
            }
            Write::UnlabelClaim => {
                if self.claim_label.is_some() {
                    let old = self.claim_object();
                    let mut new = old.clone();
                    if let Some(l) = new["metadata"]["labels"].as_object_mut() {
                        l.remove(CLASS);
                    }
                    self.write(DEVELOPER, "UPDATE", Some(new), Some(old));
                }
                return;
            }
            Write::OrphanDeployment => {
                if deployment.is_some() {
                    self.objects
                        .remove(&("Deployment".to_string(), "records".to_string()));
                    self.log
                        .push(format!("{DEVELOPER} DELETE Deployment records (orphan)"));
                    // The garbage collector takes the ReplicaSets'
                    // ownerReferences off.
                    for rs in self.of_kind("ReplicaSet") {
                        if controller_of(&rs).is_some_and(|(k, _)| k == "Deployment") {
                            let mut new = rs.clone();
                            new["metadata"]["ownerReferences"] = Value::Null;
                            let name = rs["metadata"]["name"].as_str().unwrap().to_string();
                            if !self.write(GARBAGE_COLLECTOR, "UPDATE", Some(new), Some(rs)) {
                                self.refused_controller.push(format!("orphaning {name}"));
                            }
                        }
                    }
                }
                return;
            }
        };
        if let Some((new, old)) = update {
            self.write(DEVELOPER, "UPDATE", Some(new), Some(old));
        }
    }

    /// An ad-hoc pod mounting `claim`, pinned by `pin`; with `app: records`
    /// (which the isolating NetworkPolicy selects) when `isolated`. It holds
    /// the data when admitted.
    fn pod_on(&mut self, claim: &str, pin: Pin, isolated: bool) {
        let name = format!("adhoc-{}", self.bump());
        let mut spec = json!({"containers": [{"name": "sh", "image": "busybox"}],
            "volumes": [{"name": "d", "persistentVolumeClaim": {"claimName": claim}}]});
        pin.apply(&mut spec);
        let mut meta = json!({"name": name, "namespace": NS});
        if isolated {
            meta["labels"] = json!({"app": "records"});
        }
        let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec});
        if self.write(DEVELOPER, "CREATE", Some(pod), None) {
            self.carrying.insert(name);
        }
    }

    fn bump(&mut self) -> u32 {
        self.next += 1;
        self.next
    }

    /// Run the controllers until nothing changes, then the audit leader's
    /// pass (and the controllers again if it labelled the claim).
    fn settle(&mut self) {
        for _ in 0..3 {
            for _ in 0..6 {
                let before = self.objects.clone();
                self.deployment_controller();
                self.replica_set_controller();
                self.scheduler();
                if before == self.objects {
                    break;
                }
            }
            let label_before = (self.claim_label.clone(), self.clone_label.clone());
            self.claim_labeller();
            if label_before == (self.claim_label.clone(), self.clone_label.clone()) {
                return;
            }
        }
    }

    /// The audit leader's pass: it labels the claim classified objects
    /// mount (the operator's own write, judged like anyone's).
    fn claim_labeller(&mut self) {
        if !self.label_claims {
            return;
        }
        let mut auditor = Auditor::new(PlanConfig::default());
        auditor.full_pass(self.inventory(), now());
        for label in auditor.plan(now()).claim_labels {
            assert_eq!(label.namespace, NS);
            assert!([CLAIM, CLONE].contains(&label.claim.as_str()), "{label:?}");
            let old = self.claim_named(&label.claim);
            let mut new = old.clone();
            new["metadata"]["labels"][CLASS] = json!(label.value);
            if !self.write(OPERATOR, "UPDATE", Some(new), Some(old)) {
                self.refused_controller
                    .push(format!("labelling the claim {}", label.value));
            }
        }
    }

    fn deployment_controller(&mut self) {
        let Some(d) = self.get("Deployment", "records").cloned() else {
            return;
        };
        if d["spec"]["paused"] == true {
            return;
        }
        let owned: Vec<Value> = self
            .of_kind("ReplicaSet")
            .into_iter()
            .filter(|rs| controller_of(rs) == Some(("Deployment".into(), "records".into())))
            .collect();
        let template = &d["spec"]["template"];
        let strip_hash = |t: &Value| {
            let mut t = t.clone();
            if let Some(l) = t["metadata"]["labels"].as_object_mut() {
                l.remove("pod-template-hash");
            }
            t
        };
        let replicas = d["spec"]["replicas"].as_i64().unwrap_or(1);
        let current = owned
            .iter()
            .find(|rs| &strip_hash(&rs["spec"]["template"]) == template)
            .cloned();
        let current_name = match current {
            Some(rs) => {
                let name = rs["metadata"]["name"].as_str().unwrap().to_string();
                if rs["spec"]["replicas"].as_i64() != Some(replicas) {
                    let mut new = rs.clone();
                    new["spec"]["replicas"] = json!(replicas);
                    let down = replicas < rs["spec"]["replicas"].as_i64().unwrap_or(0);
                    if !self.write(DEPLOYMENT_CONTROLLER, "UPDATE", Some(new), Some(rs)) && down {
                        self.refused_controller
                            .push(format!("scale-down of {name}"));
                    }
                }
                Some(name)
            }
            None => {
                let revision = self.bump();
                let hash = format!("h{revision}");
                let name = format!("records-{hash}");
                let mut t = template.clone();
                t["metadata"]["labels"]["pod-template-hash"] = json!(hash);
                let rs = json!({"apiVersion": "apps/v1", "kind": "ReplicaSet",
                    "metadata": {"name": name, "namespace": NS, "uid": format!("uid-{name}"),
                                 "labels": t["metadata"]["labels"],
                                 "annotations": {"revision": revision},
                                 "ownerReferences": owner_ref("Deployment", "records", "uid-records")},
                    "spec": {"replicas": replicas, "selector": {"matchLabels": {"pod-template-hash": hash}},
                             "template": t}});
                // Whatever its labels now say, the Deployment's pods process
                // personal data: every ReplicaSet it makes carries it.
                if self.write(DEPLOYMENT_CONTROLLER, "CREATE", Some(rs), None) {
                    self.data_replica_sets.insert(name.clone());
                    Some(name)
                } else {
                    None
                }
            }
        };
        // Older revisions scale to zero.
        for rs in owned {
            let name = rs["metadata"]["name"].as_str().unwrap().to_string();
            if Some(&name) != current_name.as_ref() && rs["spec"]["replicas"].as_i64() != Some(0) {
                let mut new = rs.clone();
                new["spec"]["replicas"] = json!(0);
                if !self.write(DEPLOYMENT_CONTROLLER, "UPDATE", Some(new), Some(rs)) {
                    self.refused_controller
                        .push(format!("scale-down of {name}"));
                }
            }
        }
    }

    fn replica_set_controller(&mut self) {
        for rs in self.of_kind("ReplicaSet") {
            let rs_name = rs["metadata"]["name"].as_str().unwrap().to_string();
            let want = rs["spec"]["replicas"].as_i64().unwrap_or(0) as usize;
            let mine: Vec<String> = self
                .pods()
                .iter()
                .filter(|p| controller_of(p) == Some(("ReplicaSet".into(), rs_name.clone())))
                .map(|p| p["metadata"]["name"].as_str().unwrap().to_string())
                .collect();
            for extra in mine.iter().skip(want) {
                self.objects.remove(&("Pod".to_string(), extra.clone()));
                self.carrying.remove(extra);
            }
            for _ in mine.len()..want {
                let name = format!("{rs_name}-p{}", self.bump());
                let t = &rs["spec"]["template"];
                let pod = json!({"apiVersion": "v1", "kind": "Pod",
                    "metadata": {"name": name, "namespace": NS, "labels": t["metadata"]["labels"],
                                 "ownerReferences": owner_ref("ReplicaSet", &rs_name, &format!("uid-{rs_name}"))},
                    "spec": t["spec"]});
                if self.write(REPLICASET_CONTROLLER, "CREATE", Some(pod.clone()), None)
                    && (self.data_replica_sets.contains(&rs_name) || mounts_claim(&pod))
                {
                    self.carrying.insert(name);
                }
            }
        }
    }

    /// Binds every pending pod, to Hong Kong whenever its constraints
    /// allow it (the worst a scheduler may do).
    fn scheduler(&mut self) {
        for mut pod in self.pods() {
            if pod["spec"]["nodeName"].is_string() {
                continue;
            }
            let region = pod["spec"]["nodeSelector"][REGION].as_str();
            let node = match region {
                Some("cn-north-1") => "cn-node-1",
                Some("cn-northwest-1") => "cn-node-2",
                Some("ap-east-1") | None => "hk-node-1",
                Some(_) => continue,
            };
            pod["spec"]["nodeName"] = json!(node);
            self.put(pod);
        }
    }

    fn inventory(&self) -> Arc<Inventory> {
        let snapshot = self.snapshot();
        Arc::new(Inventory {
            snapshot: Arc::new(snapshot),
            policies: Arc::new(BTreeMap::from([(
                "personal".to_string(),
                Arc::new(residency_policy()),
            )])),
            egress_layers: Default::default(),
            network_policies: Arc::new(
                self.of_kind("NetworkPolicy")
                    .into_iter()
                    .map(|np| {
                        let name = np["metadata"]["name"].as_str().unwrap().to_string();
                        (
                            format!("{NS}/{name}"),
                            Arc::new(serde_json::from_value::<NetworkPolicy>(np).unwrap()),
                        )
                    })
                    .collect(),
            ),
            workloads: self
                .workloads()
                .into_iter()
                .map(|w| (WorkloadKey::of(&w), Arc::new(w)))
                .collect(),
            synced: true,
        })
    }

    /// The invariants, with the trace that broke one.
    fn check(&self) -> Result<(), String> {
        let fail = |what: String| {
            Err(format!(
                "{what}\ntrace:\n  {}\nobjects: {:#?}",
                self.log.join("\n  "),
                self.objects.keys().collect::<Vec<_>>()
            ))
        };
        if let Some(r) = self.refused_controller.first() {
            return fail(format!("a controller write was refused: {r}"));
        }
        let selected_by_policy = |pod: &Value| {
            self.get("NetworkPolicy", "records-egress").is_some()
                && labels(pod).get("app").map(String::as_str) == Some("records")
        };
        let mut auditor = Auditor::new(PlanConfig::default());
        auditor.full_pass(self.inventory(), now());
        let plan = auditor.plan(now());
        let reported: BTreeSet<(String, String)> = plan
            .reports
            .values()
            .flat_map(|r| &r.results)
            .flat_map(|r| &r.resources)
            .map(|o| (o.kind.clone(), o.name.clone()))
            .collect();
        for name in &self.carrying {
            let Some(pod) = self.get("Pod", name) else {
                continue;
            };
            if pod["spec"]["nodeName"] == "hk-node-1" {
                return fail(format!(
                    "pod {name}, which holds personal data, runs in Hong Kong"
                ));
            }
            if !selected_by_policy(pod) {
                return fail(format!(
                    "pod {name}, which holds personal data, has open egress"
                ));
            }
            // The audit reports the pod, or the owner chain that answers for it.
            let mut subject = Some(("Pod".to_string(), name.clone()));
            let mut seen = false;
            while let Some((kind, n)) = subject {
                if reported.contains(&(kind.clone(), n.clone())) {
                    seen = true;
                    break;
                }
                subject = self.get(&kind, &n).and_then(controller_of);
            }
            if !seen {
                return fail(format!(
                    "pod {name}, which holds personal data, is missing from the audit (reported: {reported:?})"
                ));
            }
        }
        Ok(())
    }
}

proptest! {
    // PROPTEST_CASES explores further (thousands before a release).
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(96),
        ..ProptestConfig::default()
    })]

    #[test]
    fn no_sequence_of_edit_writes_moves_personal_data_abroad_or_out_of_the_audit(
        writes in proptest::collection::vec(write(), 1..10)
    ) {
        let mut cluster = Cluster::new();
        for w in &writes {
            cluster.attempt(w);
            cluster.settle();
            if let Err(e) = cluster.check() {
                prop_assert!(false, "{}", e);
            }
        }
    }
}

/// Without the claim labeller, a cascading delete of the Deployment
/// leaves the claim unclassified: an ad-hoc pod takes its data abroad.
#[test]
fn without_claim_labels_a_cascading_delete_frees_the_data() {
    let mut cluster = Cluster::with_claim_labels(false);
    cluster.attempt(&Write::DeleteDeployment);
    cluster.settle();
    cluster.attempt(&Write::PodOnClaim(Pin::HongKong, false));
    cluster.settle();
    let error = cluster.check().unwrap_err();
    assert!(error.contains("runs in Hong Kong"), "{error}");

    // With it, the claim was labelled while the Deployment ran.
    let mut cluster = Cluster::new();
    assert_eq!(cluster.claim_label.as_deref(), Some("personal"));
    cluster.attempt(&Write::DeleteDeployment);
    cluster.settle();
    cluster.attempt(&Write::PodOnClaim(Pin::HongKong, false));
    cluster.settle();
    cluster.check().unwrap();
    assert!(
        cluster
            .log
            .last()
            .unwrap()
            .contains("PersistentVolumeClaim app/records-data"),
        "{:?}",
        cluster.log
    );
}

/// Found by the property above in CI: with the Deployment gone, only the
/// labelled claim holds the data, so relabelling the Namespace out of the
/// policy's scope is a declassification too; before the fix it was
/// admitted and an unisolated pod on the claim went unjudged.
#[test]
fn a_labelled_claim_keeps_its_namespace_in_the_policys_scope() {
    let mut cluster = Cluster::new();
    for w in [
        Write::DeleteDeployment,
        Write::NamespaceInScope(false),
        Write::PodOnClaim(Pin::Mainland, false),
    ] {
        cluster.attempt(&w);
        cluster.settle();
        cluster.check().unwrap();
    }
    let refused = |what: &str, why: &str| {
        cluster
            .log
            .iter()
            .any(|l| l.starts_with(DEVELOPER) && l.contains(what) && l.contains(why))
    };
    assert!(
        refused("UPDATE Namespace", "declassification refused"),
        "{:#?}",
        cluster.log
    );
    assert!(
        refused(
            "CREATE Pod adhoc-",
            "on PersistentVolumeClaim app/records-data"
        ),
        "{:#?}",
        cluster.log
    );
}

/// The model itself can fail: with no webhook at all, the finding 2
/// ends with personal data in Hong Kong.
#[test]
fn the_model_catches_the_template_move_when_nothing_is_judged() {
    let mut cluster = Cluster::new();
    cluster.webhook = false;
    cluster.attempt(&Write::MoveClassToMetadata);
    cluster.attempt(&Write::PinDeployment(Pin::HongKong));
    cluster.settle();
    let error = cluster.check().unwrap_err();
    assert!(error.contains("runs in Hong Kong"), "{error}");

    // And an unlabelled clone of the claim, mounted from Hong Kong.
    let mut cluster = Cluster::new();
    cluster.webhook = false;
    cluster.attempt(&Write::CloneClaim(false));
    cluster.attempt(&Write::PodOnClone(Pin::HongKong, true));
    cluster.settle();
    let error = cluster.check().unwrap_err();
    assert!(error.contains("runs in Hong Kong"), "{error}");
}

/// The random writes reach every path that matters, so the property above
/// is not passing on writes that all bounce: rollouts and scale-downs run,
/// copies and ad-hoc pods are both admitted and refused, declassifications
/// are refused, the garbage collector orphans.
#[test]
fn the_random_writes_reach_every_path() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let mut log = Vec::new();
    for _ in 0..200 {
        let writes = proptest::collection::vec(write(), 1..10)
            .new_tree(&mut runner)
            .unwrap()
            .current();
        let mut c = Cluster::new();
        for w in &writes {
            c.attempt(w);
            c.settle();
        }
        log.extend(c.log);
    }
    let count = |who: &str, what: &str, outcome: &str| {
        log.iter()
            .filter(|l| l.starts_with(who) && l.contains(what) && l.contains(outcome))
            .count()
    };
    // Beyond each run's first ReplicaSet: rollouts.
    assert!(count(DEPLOYMENT_CONTROLLER, "CREATE ReplicaSet", "admitted") > 200);
    for (who, what, outcome) in [
        (DEPLOYMENT_CONTROLLER, "UPDATE ReplicaSet", "admitted"),
        (REPLICASET_CONTROLLER, "CREATE Pod", "admitted"),
        (GARBAGE_COLLECTOR, "UPDATE ReplicaSet", "admitted"),
        (DEVELOPER, "CREATE Pod copy-", "admitted"),
        (
            DEVELOPER,
            "CREATE Pod copy-",
            "carries personal information",
        ),
        (DEVELOPER, "CREATE Pod adhoc-", "admitted"),
        (DEVELOPER, "CREATE Pod adhoc-", "the claim records-data"),
        (DEVELOPER, "UPDATE Deployment", "declassification refused"),
        (
            DEVELOPER,
            "UPDATE ReplicaSet",
            "carries personal information",
        ),
        (DEVELOPER, "UPDATE ReplicaSet", "admitted"),
        (DEVELOPER, "UPDATE Namespace", "declassification refused"),
        (DEVELOPER, "UPDATE Namespace", "admitted"),
        (DEVELOPER, "DELETE NetworkPolicy", "would open"),
        (
            DEVELOPER,
            "UPDATE PersistentVolumeClaim",
            "declassification refused",
        ),
        (OPERATOR, "UPDATE PersistentVolumeClaim", "admitted"),
        (
            DEVELOPER,
            "CREATE PersistentVolumeClaim records-copy",
            "declassification refused",
        ),
        (
            DEVELOPER,
            "CREATE PersistentVolumeClaim records-copy",
            "admitted",
        ),
    ] {
        assert!(
            count(who, what, outcome) > 0,
            "no run had `{who} {what}` end `{outcome}`"
        );
    }
}
