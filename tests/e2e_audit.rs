//! End to end: the audit controller against a real cluster.
//!
//! Skipped (with a printed reason) unless RESIDENCY_GUARD_E2E_KUBECONFIG names
//! a kubeconfig file. Needs cluster-admin-ish rights: it installs the CRD,
//! labels a node (and restores it) and creates a namespace (and deletes it).

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Event as CoreEvent;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use residency_guard::api::ResidencyPolicy;
use residency_guard::audit::leader::LeaseConfig;
use residency_guard::audit::metrics::AuditMetrics;
use residency_guard::audit::writer::policy_report_resource;
use residency_guard::audit::{self, AuditConfig};
use residency_guard::engine::{AddressSpace, Catalogue};
use residency_guard::state;
use serde_json::{Value, json};

const REGION: &str = "topology.kubernetes.io/region";
const POLICY: &str = "rg-e2e-audit";

type Res<T> = Result<T, String>;

fn err<E: std::fmt::Display>(what: &str) -> impl FnOnce(E) -> String + '_ {
    move |e| format!("{what}: {e}")
}

async fn eventually<T, F, Fut>(what: &str, within: Duration, mut f: F) -> Res<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            eprintln!("e2e: {what}: after {:?}", start.elapsed());
            return Ok(v);
        }
        if start.elapsed() > within {
            return Err(format!("{what}: not seen within {within:?}"));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn client_from(path: &str) -> Res<Client> {
    let kubeconfig = Kubeconfig::read_from(path).map_err(err("reading the kubeconfig"))?;
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .map_err(err("kubeconfig"))?;
    Client::try_from(config).map_err(err("client"))
}

/// Minimal wgpolicyk8s.io CRDs, when the cluster has none (Policy Reporter
/// installs the real ones).
fn report_crd(kind: &str, plural: &str, scope: &str) -> Value {
    json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": format!("{plural}.wgpolicyk8s.io")},
        "spec": {
            "group": "wgpolicyk8s.io", "scope": scope,
            "names": {"kind": kind, "plural": plural, "listKind": format!("{kind}List"), "singular": kind.to_lowercase()},
            "versions": [{"name": "v1alpha2", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}]
        }
    })
}

async fn apply_crd(api: &Api<CustomResourceDefinition>, crd: &Value) -> Res<String> {
    let name = crd["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let pp = PatchParams::apply("residency-guard-e2e").force();
    api.patch(&name, &pp, &Patch::Apply(crd))
        .await
        .map_err(err("applying a CRD"))?;
    eventually(
        &format!("CRD {name} established"),
        Duration::from_secs(30),
        || async {
            let crd = api.get(&name).await.ok()?;
            crd.status?
                .conditions?
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True")
                .then_some(())
        },
    )
    .await?;
    Ok(name)
}

struct Cleanup {
    client: Client,
    namespace: String,
    node: Option<(String, Option<String>)>,
    created_crds: Vec<String>,
}

impl Cleanup {
    async fn run(self) {
        let dp = DeleteParams::default();
        let _ = Api::<Namespace>::all(self.client.clone())
            .delete(&self.namespace, &dp)
            .await;
        let _ = Api::<ResidencyPolicy>::all(self.client.clone())
            .delete(POLICY, &dp)
            .await;
        if let Some((node, original)) = self.node {
            let patch = json!({"metadata": {"labels": {REGION: original}}});
            let _ = Api::<Node>::all(self.client.clone())
                .patch(&node, &PatchParams::default(), &Patch::Merge(&patch))
                .await;
        }
        let crds: Api<CustomResourceDefinition> = Api::all(self.client.clone());
        for name in self.created_crds {
            let _ = crds.delete(&name, &dp).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_reports_violations_and_reacts_to_a_node_relabel() {
    let Ok(path) = std::env::var("RESIDENCY_GUARD_E2E_KUBECONFIG") else {
        eprintln!(
            "skipped: set RESIDENCY_GUARD_E2E_KUBECONFIG to a kubeconfig to run the audit e2e test"
        );
        return;
    };
    let client = client_from(&path).await.expect("cluster client");
    let namespace = format!("rg-e2e-audit-{}", std::process::id());
    let mut cleanup = Cleanup {
        client: client.clone(),
        namespace: namespace.clone(),
        node: None,
        created_crds: Vec::new(),
    };
    let result = scenario(client, &namespace, &mut cleanup).await;
    cleanup.run().await;
    if let Err(e) = result {
        panic!("{e}");
    }
}

async fn scenario(client: Client, ns: &str, cleanup: &mut Cleanup) -> Res<()> {
    // 1. CRDs: ours, and PolicyReports if the cluster has none.
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/crds/residencypolicies.residencyguard.io.yaml"
    ))
    .map_err(err("reading the CRD"))?;
    let crd: Value = serde_norway::from_str(&text).map_err(err("parsing the CRD"))?;
    apply_crd(&crds, &crd).await?;
    for (kind, plural, scope) in [
        ("PolicyReport", "policyreports", "Namespaced"),
        ("ClusterPolicyReport", "clusterpolicyreports", "Cluster"),
    ] {
        let name = format!("{plural}.wgpolicyk8s.io");
        if crds
            .get_opt(&name)
            .await
            .map_err(err("reading CRDs"))?
            .is_none()
        {
            cleanup
                .created_crds
                .push(apply_crd(&crds, &report_crd(kind, plural, scope)).await?);
        }
    }

    // 2. A namespace, a policy with action Audit scoped to it.
    let nss: Api<Namespace> = Api::all(client.clone());
    let ns_obj: Namespace =
        serde_json::from_value(json!({"metadata": {"name": ns, "labels": {"rg-e2e": "audit"}}}))
            .map_err(err("namespace"))?;
    nss.create(&PostParams::default(), &ns_obj)
        .await
        .map_err(err("creating the namespace"))?;
    let policies: Api<ResidencyPolicy> = Api::all(client.clone());
    let policy: ResidencyPolicy = serde_json::from_value(json!({
        "apiVersion": "residencyguard.io/v1alpha1", "kind": "ResidencyPolicy",
        "metadata": {"name": POLICY},
        "spec": {"dataClasses": ["personal"], "action": "Audit",
                 "namespaceSelector": {"matchLabels": {"rg-e2e": "audit"}}}
    }))
    .map_err(err("policy"))?;
    policies
        .create(&PostParams::default(), &policy)
        .await
        .map_err(err("creating the policy"))?;

    // 3. A node that is (for now) in mainland China.
    let nodes: Api<Node> = Api::all(client.clone());
    let node = nodes
        .list(&ListParams::default())
        .await
        .map_err(err("listing nodes"))?
        .items
        .into_iter()
        .find(|n| {
            !n.spec
                .as_ref()
                .and_then(|s| s.unschedulable)
                .unwrap_or(false)
        })
        .ok_or("no schedulable node")?;
    let node_name = node.metadata.name.clone().unwrap_or_default();
    let original = node
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(REGION).cloned());
    cleanup.node = Some((node_name.clone(), original));
    let relabel = |region: &'static str| {
        let nodes = nodes.clone();
        let node_name = node_name.clone();
        async move {
            let patch = json!({"metadata": {"labels": {REGION: region}}});
            nodes
                .patch(&node_name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map(|_| ())
                .map_err(err("labelling the node"))
        }
    };
    relabel("cn-north-1").await?;

    // 4. The controller, in process, against this cluster.
    let st = state::start(
        client.clone(),
        state::Inputs {
            catalogue: Catalogue::builtin().clone(),
            address_space: AddressSpace::builtin(),
        },
    );
    let config = AuditConfig {
        debounce: Duration::from_millis(100),
        ..AuditConfig::default()
    };
    let controller = audit::spawn(
        client.clone(),
        &st,
        config,
        LeaseConfig::new(ns, "e2e-audit"),
        Arc::new(AuditMetrics::default()),
    );

    // 5. A violating Deployment (no placement constraint) and a compliant
    //    one pinned to the node's region, which gets a running pod.
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let deployment = |name: &str, replicas: i32, selector: Option<Value>| -> Res<Deployment> {
        let mut pod_spec = json!({
            "containers": [{"name": "pause", "image": "registry.k8s.io/pause:3.9"}],
            "tolerations": [{"operator": "Exists"}],
        });
        if let Some(s) = selector {
            pod_spec["nodeSelector"] = s;
        }
        serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": name}},
                "template": {
                    "metadata": {"labels": {"app": name, "residencyguard.io/data-class": "personal"}},
                    "spec": pod_spec
                }
            }
        }))
        .map_err(err("deployment"))
    };
    let violating_uid = deployments
        .create(&PostParams::default(), &deployment("violating", 0, None)?)
        .await
        .map_err(err("creating the violating Deployment"))?
        .metadata
        .uid
        .ok_or("the API server returned the Deployment without a uid")?;
    deployments
        .create(
            &PostParams::default(),
            &deployment(
                "compliant",
                1,
                Some(
                    json!({REGION: "cn-north-1", "kubernetes.io/hostname": node_name_label(&node)}),
                ),
            )?,
        )
        .await
        .map_err(err("creating the compliant Deployment"))?;

    // 6. Status counts it, a PolicyReport and an Event name it.
    let offenders = |st: &ResidencyPolicy| -> Vec<(String, Vec<String>)> {
        st.status
            .iter()
            .flat_map(|s| s.top_offenders.iter())
            .map(|o| (o.name.clone(), o.codes.clone()))
            .collect()
    };
    eventually(
        "policy status counts the violating Deployment",
        Duration::from_secs(60),
        || async {
            let p = policies.get(POLICY).await.ok()?;
            let s = p.status.as_ref()?;
            (s.violations >= Some(1)
                && s.observed_generation == p.metadata.generation
                && offenders(&p).iter().any(|(n, _)| n == "violating"))
            .then_some(())
        },
    )
    .await?;
    let reports: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), ns, &policy_report_resource());
    eventually(
        "a PolicyReport names the Deployment",
        Duration::from_secs(30),
        || async {
            let r = reports.get("residency-guard").await.ok()?;
            let results = r.data.get("results")?.as_array()?.clone();
            results
                .iter()
                .any(|x| {
                    x["result"] == "fail"
                        && x["source"] == "residency-guard"
                        && x["resources"][0]["name"] == "violating"
                })
                .then_some(())
        },
    )
    .await?;
    let events: Api<Event> = Api::namespaced(client.clone(), ns);
    eventually(
        "an Event names the Deployment",
        Duration::from_secs(30),
        || async {
            let list = events.list(&ListParams::default()).await.ok()?;
            list.items
                .iter()
                .any(|e| {
                    e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("violating")
                        && e.reason.as_deref() == Some("PlacementNotGuaranteed")
                })
                .then_some(())
        },
    )
    .await?;
    // `kubectl describe deployment violating` finds Events through the
    // core/v1 view by involvedObject (uid included): so must this.
    let core_events: Api<CoreEvent> = Api::namespaced(client.clone(), ns);
    let describe_selector = format!(
        "involvedObject.kind=Deployment,involvedObject.name=violating,involvedObject.uid={violating_uid}"
    );
    eventually(
        "kubectl describe would show the Event (core/v1, by involvedObject uid)",
        Duration::from_secs(30),
        || async {
            let list = core_events
                .list(&ListParams::default().fields(&describe_selector))
                .await
                .ok()?;
            list.items
                .iter()
                .any(|e| e.reason.as_deref() == Some("PlacementNotGuaranteed"))
                .then_some(())
        },
    )
    .await?;

    // 7. The compliant pod runs on the node; no finding about it yet.
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let pod_name = eventually(
        "the compliant pod is bound",
        Duration::from_secs(120),
        || async {
            let list = pods
                .list(&ListParams::default().labels("app=compliant"))
                .await
                .ok()?;
            list.items.into_iter().find_map(|p| {
                p.spec.as_ref()?.node_name.as_ref()?;
                p.metadata.name
            })
        },
    )
    .await?;
    let p = policies
        .get(POLICY)
        .await
        .map_err(err("reading the policy"))?;
    if offenders(&p).iter().any(|(n, _)| n == &pod_name) {
        return Err(format!("{pod_name} reported before the relabel"));
    }
    // Let the audit see the bound pod before the relabel.
    tokio::time::sleep(Duration::from_secs(2)).await;

    // 8. Relabel the node abroad: the running pod is reported within 5 s.
    relabel("us-east-1").await?;
    eventually(
        "the pod bound abroad is reported",
        Duration::from_secs(5),
        || async {
            let p = policies.get(POLICY).await.ok()?;
            offenders(&p)
                .iter()
                .any(|(n, codes)| n == &pod_name && codes.iter().any(|c| c == "BoundToNodeOutside"))
                .then_some(())
        },
    )
    .await?;
    eventually(
        "the PolicyReport names the node",
        Duration::from_secs(5),
        || async {
            let r = reports.get("residency-guard").await.ok()?;
            r.data
                .get("results")?
                .as_array()?
                .iter()
                .any(|x| {
                    x["rule"] == "BoundToNodeOutside"
                        && x["properties"]["node"] == node_name.as_str()
                        && x["properties"]["region"] == "us-east-1"
                        && x["properties"]["workload"] == "Deployment compliant"
                })
                .then_some(())
        },
    )
    .await?;
    controller.shutdown(Duration::from_secs(5)).await;
    Ok(())
}

fn node_name_label(node: &Node) -> String {
    node.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get("kubernetes.io/hostname").cloned())
        .or_else(|| node.metadata.name.clone())
        .unwrap_or_default()
}
