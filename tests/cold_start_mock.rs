//! Cold start against a mocked API server, small: the watches of
//! `state::start` list every kind in several pages (the mock serves at most
//! 7 items a page), the inventory syncs with exactly the served objects, and
//! the first audit pass finds the violations the generated data implies.
//! The paging path of `benches/cold_start.rs`, checked in CI.

#[allow(dead_code)]
#[path = "../benches/cluster_data.rs"]
mod cluster_data;
#[allow(dead_code)]
#[path = "../benches/mock_apiserver.rs"]
mod mock_apiserver;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use cluster_data::{
    REGION, Scale, deployment_obj, namespace_tier, node_obj, pod_obj, policy_obj, region_of,
    replica_set_obj,
};
use futures::TryStreamExt;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, ApiResource, DynamicObject};
use kube::runtime::watcher::{self, Event};
use kube::{Client, Config};
use mock_apiserver::MockApi;
use residency_guard::audit::Auditor;
use residency_guard::audit::plan::PlanConfig;
use residency_guard::datafiles::DataSources;
use residency_guard::engine::{NodeInfo, Snapshot, Workload};
use residency_guard::state::{self, Inventory, WorkloadKey};

/// Ten policies cover every (class, tier) pair the data uses, so every
/// Deployment is governed.
const SCALE: Scale = Scale {
    nodes: 10,
    deployments: 20,
    pods: 50,
    policies: 10,
    namespaces: 20,
    classified_every: 1,
    network_policies: 0,
};
const MAX_PAGE: usize = 7;
const NOW: &str = "2026-06-01T00:00:00Z";

fn mock() -> MockApi {
    MockApi::with_cluster(&SCALE, Some(MAX_PAGE), Duration::from_millis(200))
}

fn client(addr: std::net::SocketAddr) -> Client {
    let url = format!("http://{addr}").parse().expect("url");
    Client::try_from(Config::new(url)).expect("client")
}

/// The same objects, projected directly (no API server, no watches).
fn reference_inventory(now: Timestamp) -> Inventory {
    let (catalogue, space) = DataSources::default().load().expect("bundled data");
    let mut snapshot = Snapshot::new(catalogue, space);
    let policies: BTreeMap<String, _> = (0..SCALE.policies)
        .map(|i| (format!("policy-{i}"), policy_obj(i)))
        .collect();
    for p in policies.values() {
        snapshot.add_policy(p, now).expect("valid policy");
    }
    snapshot.set_nodes((0..SCALE.nodes).map(|i| {
        let node: Node = serde_json::from_value(node_obj(i)).expect("node");
        NodeInfo::from_node(&node)
    }));
    for n in 0..SCALE.namespaces {
        snapshot.namespaces.insert(
            format!("ns-{n}"),
            BTreeMap::from([
                ("tier".to_string(), namespace_tier(n)),
                ("kubernetes.io/metadata.name".to_string(), format!("ns-{n}")),
            ]),
        );
    }
    let workloads = (0..SCALE.deployments)
        .map(|i| deployment_obj(i, &SCALE))
        .chain((0..SCALE.deployments).map(|i| replica_set_obj(i, &SCALE)))
        .chain((0..SCALE.pods).map(|i| pod_obj(i, &SCALE)))
        .map(|v| {
            let w = Workload::from_value(&v, "default").expect("workload");
            (WorkloadKey::of(&w), Arc::new(w))
        })
        .collect();
    Inventory {
        snapshot: Arc::new(snapshot),
        policies: Arc::new(
            policies
                .into_iter()
                .map(|(k, p)| (k, Arc::new(p)))
                .collect(),
        ),
        egress_layers: Default::default(),
        network_policies: Default::default(),
        workloads,
        synced: true,
    }
}

fn violated(inv: Arc<Inventory>, now: Timestamp) -> BTreeSet<WorkloadKey> {
    let mut auditor = Auditor::new(PlanConfig::default());
    auditor.full_pass(inv, now);
    auditor
        .index
        .iter()
        .filter(|(_, f)| f.policies.iter().any(|p| p.violated()))
        .map(|(k, _)| k.clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cold_start_lists_in_pages_and_audits_everything() {
    let now: Timestamp = NOW.parse().expect("time");
    let mock = Arc::new(mock());
    let addr = mock_apiserver::start(mock.clone()).await.expect("mock");
    let (catalogue, address_space) = DataSources::default().load().expect("bundled data");
    let state = state::start(
        client(addr),
        state::Inputs {
            catalogue,
            address_space,
            egress: Default::default(),
        },
    );
    let mut rx = state.inventory();
    let inv = tokio::time::timeout(Duration::from_secs(10), rx.wait_for(|inv| inv.synced))
        .await
        .unwrap_or_else(|_| {
            panic!(
                "inventory not synced within 10 s; health {:?}; requests {:#?}",
                state.health,
                mock.requests()
            )
        })
        .expect("state running")
        .clone();

    // Exactly the served objects: every Deployment, and every Pod (all are
    // controller-owned and bound to a node).
    assert_eq!(state.health.skipped_objects.get(), 0);
    assert_eq!(state.health.watch_errors.get(), 0);
    let reference = reference_inventory(now);
    assert_eq!(
        inv.workloads.keys().collect::<Vec<_>>(),
        reference.workloads.keys().collect::<Vec<_>>()
    );
    // Each Deployment, its ReplicaSet, the Pods.
    assert_eq!(inv.workloads.len(), 2 * SCALE.deployments + SCALE.pods);
    for (k, w) in &inv.workloads {
        assert_eq!(**w, *reference.workloads[k], "{k:?} projected differently");
    }
    assert_eq!(inv.policies.len(), SCALE.policies);
    assert_eq!(inv.snapshot.policies.len(), SCALE.policies);
    assert_eq!(inv.snapshot.namespaces, reference.snapshot.namespaces);
    let nodes = inv.snapshot.nodes().expect("node inventory");
    assert_eq!(nodes.len(), SCALE.nodes);
    tokio::time::timeout(Duration::from_secs(5), async {
        while !state.ready() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("ready after the synced inventory");

    // Paging happened: every kind listed (empty ones in one page), the
    // populated ones in ceil(n / 7) pages, each page after the first asked
    // for with the continue token of the one before.
    let populated = [
        SCALE.nodes,
        SCALE.namespaces,
        SCALE.deployments,
        SCALE.deployments, // their ReplicaSets
        SCALE.pods,
        SCALE.policies,
    ];
    let pages: usize = populated
        .iter()
        .map(|n| n.div_ceil(MAX_PAGE))
        .sum::<usize>()
        + (mock_apiserver::RESOURCES.len() - populated.len());
    let c = &mock.counters;
    let requests = mock.requests();
    assert_eq!(c.lists.load(Ordering::Relaxed), pages, "{requests:#?}");
    assert_eq!(
        c.continued.load(Ordering::Relaxed),
        pages - mock_apiserver::RESOURCES.len(),
        "{requests:#?}"
    );
    assert_eq!(c.items_listed.load(Ordering::Relaxed), mock.objects());
    assert_eq!(c.unknown.load(Ordering::Relaxed), 0, "{requests:#?}");
    assert!(
        requests
            .iter()
            .filter(|r| !r.contains("watch"))
            .all(|r| r.contains("limit=500")),
        "the watcher asks for pages of 500: {requests:#?}"
    );
    // One watch per kind, held open after its list.
    tokio::time::timeout(Duration::from_secs(5), async {
        while c.watches.load(Ordering::Relaxed) < mock_apiserver::RESOURCES.len() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("a watch per kind: {:#?}", mock.requests()));

    // The first audit: Deployments without a nodeSelector (d % 4 == 0) can
    // land abroad; Pods bound to a node abroad run there.
    let found = violated(inv.clone(), now);
    let deployments = (0..SCALE.deployments).filter(|d| d % 4 == 0).count();
    let pods = (0..SCALE.pods)
        .filter(|i| region_of((i * 7) % SCALE.nodes) == "ap-east-1")
        .count();
    assert_eq!((deployments, pods), (5, 5));
    assert_eq!(found.len(), deployments + pods, "{found:#?}");
    assert_eq!(found, violated(Arc::new(reference), now));
    let plan = {
        let mut auditor = Auditor::new(PlanConfig::default());
        auditor.full_pass(inv.clone(), now);
        auditor.plan(now)
    };
    assert!(!plan.reports.is_empty());

    // Still healthy while the watches are held open (bookmarks every 200 ms).
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(state.health.watch_errors.get(), 0);
    assert_eq!(c.lists.load(Ordering::Relaxed), pages, "no relist");
    assert!(
        nodes
            .iter()
            .any(|n| n.info.labels.get(REGION).map(String::as_str) == Some("ap-east-1"))
    );

    // Then watch events, each applied to the index it changes (issue 14).
    // Pod events never rebuild the Snapshot, and the audit, following the
    // published inventories incrementally, ends where a full pass over the
    // last one does.
    let mut auditor = Auditor::new(PlanConfig::default());
    auditor.full_pass(inv.clone(), now);
    let snapshot_before = state.snapshot();
    let key_of = |v: &serde_json::Value| {
        WorkloadKey::of(&Workload::from_value(v, "default").expect("workload"))
    };
    let mut arrived = pod_obj(SCALE.pods, &SCALE);
    arrived["spec"]["nodeName"] = "node-0009".into(); // ap-east-1
    let gone = pod_obj(0, &SCALE);
    let mut status_only = pod_obj(1, &SCALE);
    status_only["status"]["phase"] = "Succeeded".into();
    mock.inject("ADDED", &arrived);
    mock.inject("DELETED", &gone);
    mock.inject("MODIFIED", &status_only);
    let (arrived_key, gone_key) = (key_of(&arrived), key_of(&gone));
    let inv2 = tokio::time::timeout(
        Duration::from_secs(5),
        rx.wait_for(|i| {
            i.workloads.contains_key(&arrived_key) && !i.workloads.contains_key(&gone_key)
        }),
    )
    .await
    .expect("pod events published")
    .expect("state running")
    .clone();
    assert!(
        Arc::ptr_eq(&state.snapshot(), &snapshot_before)
            && Arc::ptr_eq(&inv2.snapshot, &inv.snapshot),
        "pod events do not rebuild the Snapshot"
    );
    let (changes, rejudged) = auditor.update(inv2.clone(), now);
    assert_eq!(
        rejudged,
        BTreeSet::from([arrived_key.clone(), gone_key.clone()]),
        "exactly the pods that changed ({changes:?}); a status-only change is none"
    );
    assert!(auditor.needs_plan());

    // A node relabel rebuilds the Snapshot once.
    let mut relabelled = node_obj(1);
    relabelled["metadata"]["labels"][REGION] = "ap-east-1".into();
    mock.inject("MODIFIED", &relabelled);
    let abroad = |i: &Inventory| {
        i.snapshot
            .node("node-0001")
            .is_some_and(|n| n.info.labels.get(REGION).map(String::as_str) == Some("ap-east-1"))
    };
    let inv3 = tokio::time::timeout(Duration::from_secs(5), rx.wait_for(|i| abroad(i)))
        .await
        .expect("node event published")
        .expect("state running")
        .clone();
    assert!(!Arc::ptr_eq(&state.snapshot(), &snapshot_before));
    auditor.update(inv3.clone(), now);

    let mut full = Auditor::new(PlanConfig::default());
    full.full_pass(inv3.clone(), now);
    let findings = |a: &Auditor| {
        a.index
            .iter()
            .map(|(k, f)| (k.clone(), f.clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(findings(&auditor), findings(&full));
    let violated_now = violated(inv3, now);
    assert!(violated_now.contains(&arrived_key));
    assert!(!violated_now.contains(&gone_key));
}

/// The mock's streaming-list path (`sendInitialEvents=true`), used by a
/// watcher configured with `streaming_lists()`.
#[tokio::test]
async fn mock_serves_streaming_lists() {
    let mock = Arc::new(mock());
    let addr = mock_apiserver::start(mock.clone()).await.expect("mock");
    let api: Api<DynamicObject> = Api::all_with(
        client(addr),
        &ApiResource::erase::<k8s_openapi::api::core::v1::Pod>(&()),
    );
    let stream = watcher::watcher(api, watcher::Config::default().streaming_lists());
    futures::pin_mut!(stream);
    let mut applied = 0;
    let events = async {
        while let Some(e) = stream.try_next().await.expect("watch") {
            match e {
                Event::InitApply(obj) => {
                    assert_eq!(obj.types.as_ref().map(|t| t.kind.as_str()), Some("Pod"));
                    applied += 1;
                }
                Event::InitDone => return,
                _ => {}
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(5), events)
        .await
        .expect("initial events end");
    assert_eq!(applied, SCALE.pods);
    assert_eq!(mock.counters.streaming_watches.load(Ordering::Relaxed), 1);
    assert_eq!(mock.counters.lists.load(Ordering::Relaxed), 0);
}
