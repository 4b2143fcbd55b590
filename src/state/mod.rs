//! Watch streams → an in-memory snapshot the engine can read.
//!
//! Each watched kind is listed and watched as untyped objects and projected,
//! one object at a time, to the few fields the engine reads, so a malformed
//! object is skipped with a warning instead of stalling its whole watch, and
//! managedFields and everything else never reach memory.
//!
//! Each event is applied to the index it changes (`index`): workloads and
//! bound pods to a persistent ordered map, everything else to its watch's
//! part. A publish (debounced) shares the workload map with the previous
//! inventory in O(1) and rebuilds the `Snapshot` only when a cluster object
//! changed in a way it sees, so pod churn costs O(log n) per event, not a
//! rebuild of the world. Snapshots and inventories are published as `Arc`s:
//! every admission request reads a consistent, immutable view without
//! locking.

pub mod graph;
pub mod index;
pub mod live;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use jiff::Timestamp;
use k8s_openapi::api::core::v1::{
    Namespace, Node, PersistentVolume, PersistentVolumeClaim, Service,
};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{Api, ApiResource, DynamicObject};
use kube::runtime::watcher::{self, Event};
use kube::{Client, Resource};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::sync::{Notify, watch};

use crate::api::ResidencyPolicy;
use crate::backoff::Backoff;
use crate::engine::{
    AddressSpace, Catalogue, CiliumEnforcement, ClaimRecord, ClassRecord, Cni, EgressSemantics,
    LastValid, NodeInfo, Snapshot, SnapshotBuilder, VolumeRecord, Workload, WorkloadKind,
};
pub use index::Workloads;
use index::{Index, Item, LabelPool, Part};

/// What a watch projects an object to.
enum Projected {
    Cluster(Item),
    Workload(Box<Workload>),
}

/// A watched resource kind and how to project its objects.
struct Watched {
    name: &'static str,
    resource: ApiResource,
    /// Set for the workload kinds, whose objects go to the workload map.
    workload: Option<WorkloadKind>,
    project: fn(&serde_json::Value) -> Result<Option<Projected>, String>,
}

fn decode<T: serde::de::DeserializeOwned>(v: &serde_json::Value) -> Result<T, String> {
    serde_path_to_error::deserialize(v).map_err(|e| format!("{}: {}", e.path(), e.inner()))
}

fn cluster(item: Item) -> Option<Projected> {
    Some(Projected::Cluster(item))
}

/// A policy kind of another egress layer the operator may watch, when its
/// CRD is served and the CNI semantics enforce it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LayerResource {
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    pub plural: &'static str,
    /// `plural.group`, as `kubectl` names it: the watch's name in logs and
    /// metrics, and the list's in a report (Calico's `networkpolicies`
    /// are not Kubernetes').
    pub name: &'static str,
}

impl LayerResource {
    pub fn api_version(&self) -> String {
        format!("{}/{}", self.group, self.version)
    }

    /// The resource to list and watch.
    pub fn api_resource(&self) -> ApiResource {
        ApiResource {
            group: self.group.to_string(),
            version: self.version.to_string(),
            api_version: self.api_version(),
            kind: self.kind.to_string(),
            plural: self.plural.to_string(),
        }
    }

    /// Read by the engine under `cni`.
    pub fn enforced_under(&self, cni: Cni) -> bool {
        group_enforced_under(self.group, cni)
    }
}

/// Does `cni` enforce the policies of API group `group`?
fn group_enforced_under(group: &str, cni: Cni) -> bool {
    matches!(
        (group, cni),
        ("cilium.io", Cni::Cilium)
            | ("crd.projectcalico.org", Cni::Calico)
            | ("policy.networking.k8s.io", Cni::Kubernetes | Cni::Calico)
    )
}

/// Every layer kind the engine reads (the chart's RBAC lists the same).
pub const LAYER_RESOURCES: &[LayerResource] = &[
    LayerResource {
        group: "cilium.io",
        version: "v2",
        kind: "CiliumNetworkPolicy",
        plural: "ciliumnetworkpolicies",
        name: "ciliumnetworkpolicies.cilium.io",
    },
    LayerResource {
        group: "cilium.io",
        version: "v2",
        kind: "CiliumClusterwideNetworkPolicy",
        plural: "ciliumclusterwidenetworkpolicies",
        name: "ciliumclusterwidenetworkpolicies.cilium.io",
    },
    LayerResource {
        group: "crd.projectcalico.org",
        version: "v1",
        kind: "NetworkPolicy",
        plural: "networkpolicies",
        name: "networkpolicies.crd.projectcalico.org",
    },
    LayerResource {
        group: "crd.projectcalico.org",
        version: "v1",
        kind: "GlobalNetworkPolicy",
        plural: "globalnetworkpolicies",
        name: "globalnetworkpolicies.crd.projectcalico.org",
    },
    LayerResource {
        group: "crd.projectcalico.org",
        version: "v1",
        kind: "Tier",
        plural: "tiers",
        name: "tiers.crd.projectcalico.org",
    },
    LayerResource {
        group: "crd.projectcalico.org",
        version: "v1",
        kind: "NetworkSet",
        plural: "networksets",
        name: "networksets.crd.projectcalico.org",
    },
    LayerResource {
        group: "crd.projectcalico.org",
        version: "v1",
        kind: "GlobalNetworkSet",
        plural: "globalnetworksets",
        name: "globalnetworksets.crd.projectcalico.org",
    },
    LayerResource {
        group: "policy.networking.k8s.io",
        version: "v1alpha1",
        kind: "AdminNetworkPolicy",
        plural: "adminnetworkpolicies",
        name: "adminnetworkpolicies.policy.networking.k8s.io",
    },
    LayerResource {
        group: "policy.networking.k8s.io",
        version: "v1alpha1",
        kind: "BaselineAdminNetworkPolicy",
        plural: "baselineadminnetworkpolicies",
        name: "baselineadminnetworkpolicies.policy.networking.k8s.io",
    },
];

/// What egress layers the operator judges under, and which it watches.
#[derive(Clone, Debug, Default)]
pub struct EgressWatch {
    pub semantics: EgressSemantics,
    /// Served and enforced under `semantics`: watched.
    pub resources: Vec<LayerResource>,
    /// Look again for layer kinds whose CRDs are installed later (None:
    /// never, as in tests against a fixed set of kinds).
    pub probe: Option<LayerProbe>,
}

/// How the layer kinds are looked for again after start.
#[derive(Clone, Copy, Debug)]
pub struct LayerProbe {
    /// The `egress.cni` choice the discovery is made with (None: auto).
    pub requested: Option<Cni>,
    pub every: Duration,
}

/// The layer kinds the API server serves, and the semantics: `requested`
/// (the Helm value), or detected from what is served (Cilium's CRDs:
/// cilium; Calico's: calico; both: refused, say which; neither:
/// kubernetes). Watched: served and enforced under the semantics.
pub async fn discover_egress(
    client: &Client,
    requested: Option<Cni>,
    cilium_enforcement: CiliumEnforcement,
) -> anyhow::Result<EgressWatch> {
    let mut served: Vec<LayerResource> = Vec::new();
    let mut versions: Vec<String> = LAYER_RESOURCES
        .iter()
        .map(LayerResource::api_version)
        .collect();
    versions.dedup();
    for gv in versions {
        match client.list_api_group_resources(&gv).await {
            Ok(list) => served.extend(LAYER_RESOURCES.iter().filter(|r| {
                r.api_version() == gv && list.resources.iter().any(|a| a.name == r.plural)
            })),
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(anyhow::anyhow!("discovering {gv}: {e}")),
        }
    }
    let has = |group: &str| served.iter().any(|r| r.group == group);
    let cni = match requested {
        Some(cni) => cni,
        None => match (has("cilium.io"), has("crd.projectcalico.org")) {
            (true, true) => anyhow::bail!(
                "both Cilium (cilium.io) and Calico (crd.projectcalico.org) policy CRDs are served: set the Helm value egress.cni (--egress-cni) to the one that enforces egress"
            ),
            (true, false) => Cni::Cilium,
            (false, true) => Cni::Calico,
            (false, false) => Cni::Kubernetes,
        },
    };
    Ok(EgressWatch {
        semantics: EgressSemantics {
            cni,
            cilium_enforcement,
        },
        resources: served
            .into_iter()
            .filter(|r| r.enforced_under(cni))
            .collect(),
        probe: Some(LayerProbe {
            requested,
            every: crate::probe::MISSING_API_PROBE_EVERY,
        }),
    })
}

/// Look for layer kinds installed after start, as the audit looks for
/// report APIs installed after start (`crate::probe`): every
/// `probe.every`, the same discovery as at start (`discover_egress`); a
/// kind now served that the CNI enforces is watched from then on. Under
/// `auto`, Cilium's or Calico's CRDs appearing on a cluster judged as
/// `kubernetes` change the semantics to what a restart would choose, and
/// every snapshot from then on is built under them. Both appearing is
/// refused as at start: the semantics stay, and the error is logged until
/// `egress.cni` names one. With `egress.cni` set, the probe ends once
/// every kind that CNI enforces is watched.
async fn probe_layers(
    client: Client,
    probe: LayerProbe,
    mut current: EgressWatch,
    shared: Arc<Projections>,
    health: Arc<WatchHealth>,
) {
    let mut last_error: Option<String> = None;
    loop {
        let settled = probe.requested.is_some()
            && LAYER_RESOURCES
                .iter()
                .filter(|r| r.enforced_under(current.semantics.cni))
                .all(|r| current.resources.contains(r));
        if settled {
            return;
        }
        tokio::time::sleep(probe.every).await;
        let found = match discover_egress(
            &client,
            probe.requested,
            current.semantics.cilium_enforcement,
        )
        .await
        {
            Ok(found) => found,
            Err(e) => {
                let error = e.to_string();
                if last_error.as_ref() != Some(&error) {
                    tracing::error!(cni = current.semantics.cni.as_str(), %error, "cannot tell which egress policy layers to read now; judging under the semantics chosen so far");
                    last_error = Some(error);
                }
                continue;
            }
        };
        last_error = None;
        for r in found.resources {
            if current.resources.contains(&r) {
                continue;
            }
            tracing::info!(
                resource = r.name,
                cni = found.semantics.cni.as_str(),
                "egress layer kind served now; watching it"
            );
            let index = shared.with_index(Index::add_watch);
            health.watch_added(r.name);
            let kind = layer_watched(&r);
            let api: Api<DynamicObject> = Api::all_with(client.clone(), &kind.resource);
            tokio::spawn(run_watch(api, kind, index, shared.clone(), health.clone()));
            current.resources.push(r);
        }
        if found.semantics != current.semantics {
            tracing::info!(
                from = current.semantics.cni.as_str(),
                to = found.semantics.cni.as_str(),
                "egress semantics changed with the policy CRDs served; judging every workload again"
            );
            current.semantics = found.semantics;
            shared.with_index(|ix| ix.set_semantics(found.semantics));
            shared.changed.notify_one();
        }
    }
}

/// The watch of a layer kind.
fn layer_watched(r: &LayerResource) -> Watched {
    Watched {
        name: r.name,
        resource: r.api_resource(),
        workload: None,
        project: project_layer,
    }
}

/// The layer object as kept: apiVersion, kind, name, namespace and spec,
/// and the labels of a Calico NetworkSet or GlobalNetworkSet (rules select
/// sets by them).
fn project_layer(v: &serde_json::Value) -> Result<Option<Projected>, String> {
    let mut kept = serde_json::Map::new();
    for key in ["apiVersion", "kind", "spec", "specs"] {
        if let Some(x) = v.get(key) {
            kept.insert(key.into(), x.clone());
        }
    }
    let meta = v.get("metadata").ok_or("no metadata")?;
    let mut m = serde_json::Map::new();
    let network_set = matches!(
        v.get("kind").and_then(serde_json::Value::as_str),
        Some("NetworkSet" | "GlobalNetworkSet")
    );
    let keys: &[&str] = if network_set {
        &["name", "namespace", "labels"]
    } else {
        &["name", "namespace"]
    };
    for &key in keys {
        if let Some(x) = meta.get(key) {
            m.insert(key.into(), x.clone());
        }
    }
    kept.insert("metadata".into(), m.into());
    Ok(cluster(Item::Layer(Arc::new(kept.into()))))
}

fn watched_kinds(egress: &EgressWatch) -> Vec<Watched> {
    let mut kinds = vec![
        Watched {
            name: "residencypolicies",
            resource: ApiResource::erase::<ResidencyPolicy>(&()),
            workload: None,
            project: |v| decode::<ResidencyPolicy>(v).map(|p| cluster(Item::Policy(Arc::new(p)))),
        },
        Watched {
            name: "nodes",
            resource: ApiResource::erase::<Node>(&()),
            workload: None,
            project: |v| {
                decode::<Node>(v).map(|n| cluster(Item::Node(Arc::new(NodeInfo::from_node(&n)))))
            },
        },
        Watched {
            name: "namespaces",
            resource: ApiResource::erase::<Namespace>(&()),
            workload: None,
            project: |v| {
                decode::<Namespace>(v).map(|n| {
                    cluster(Item::Namespace(Arc::new(
                        n.metadata.labels.unwrap_or_default(),
                    )))
                })
            },
        },
        Watched {
            name: "networkpolicies",
            resource: ApiResource::erase::<NetworkPolicy>(&()),
            workload: None,
            project: |v| {
                decode::<NetworkPolicy>(v).map(|n| cluster(Item::NetworkPolicy(Arc::new(n))))
            },
        },
        Watched {
            name: "services",
            resource: ApiResource::erase::<Service>(&()),
            workload: None,
            // Only ExternalName Services matter to the engine.
            project: |v| {
                let svc: Service = decode(v)?;
                let external =
                    svc.spec.as_ref().and_then(|s| s.type_.as_deref()) == Some("ExternalName");
                Ok(external.then(|| Projected::Cluster(Item::Service(Arc::new(svc)))))
            },
        },
        // Storage: where a governed workload's volumes are. Each object is
        // projected at once; the rest of it never stays in memory.
        Watched {
            name: "persistentvolumes",
            resource: ApiResource::erase::<PersistentVolume>(&()),
            workload: None,
            project: |v| {
                decode::<PersistentVolume>(v)
                    .map(|pv| cluster(Item::Volume(Arc::new(VolumeRecord::from_k8s(&pv)))))
            },
        },
        Watched {
            name: "persistentvolumeclaims",
            resource: ApiResource::erase::<PersistentVolumeClaim>(&()),
            workload: None,
            project: |v| {
                decode::<PersistentVolumeClaim>(v)
                    .map(|c| cluster(Item::Claim(Arc::new(ClaimRecord::from_k8s(&c)))))
            },
        },
        Watched {
            name: "storageclasses",
            resource: ApiResource::erase::<StorageClass>(&()),
            workload: None,
            project: |v| {
                decode::<StorageClass>(v)
                    .map(|c| cluster(Item::Class(Arc::new(ClassRecord::from_k8s(&c)))))
            },
        },
    ];
    kinds.extend(egress.resources.iter().map(layer_watched));
    for kind in WorkloadKind::ALL {
        kinds.push(Watched {
            name: kind.plural(),
            resource: workload_api_resource(kind),
            workload: Some(kind),
            project: project_workload,
        });
    }
    kinds
}

/// Every workload object is kept, owned or not, and every Pod, bound or
/// not: an ownerReference is written by whoever may edit the object, and a
/// controller of a kind the state does not watch (a custom resource) judges
/// nothing for us. How owned objects are judged and reported: `graph`.
fn project_workload(v: &serde_json::Value) -> Result<Option<Projected>, String> {
    match Workload::from_value(v, "default") {
        Ok(w) => Ok(Some(Projected::Workload(Box::new(w)))),
        Err(e) => Err(e.to_string()),
    }
}

/// The API resource of a workload kind (what `ApiResource::erase` gives
/// for its k8s-openapi type), from the kind's own table.
pub fn workload_api_resource(kind: WorkloadKind) -> ApiResource {
    ApiResource {
        group: kind.group().to_string(),
        version: kind.version().to_string(),
        api_version: kind.api_version().to_string(),
        kind: kind.as_str().to_string(),
        plural: kind.plural().to_string(),
    }
}

/// The `watch` label: a watched resource's plural (a closed set).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WatchLabels {
    pub watch: &'static str,
}

/// How the watches fare: what readiness reads, and the watch-health metrics
/// (registered once, by `register`).
#[derive(Debug, Default)]
pub struct WatchHealth {
    /// Watches that have delivered their initial list.
    pub synced: AtomicUsize,
    /// Watches the snapshot is built from.
    pub total: AtomicUsize,
    /// `synced` and `total` as metrics, kept in step with them.
    synced_gauge: Gauge,
    total_gauge: Gauge,
    /// Objects skipped because they could not be read.
    pub skipped_objects: Counter,
    /// Watch errors, each retried after a backoff.
    pub watch_errors: Counter,
    /// Per watch: the Unix time its current run of failures began, 0
    /// while it is healthy (what the stale-watch alert reads; one series
    /// per watched kind).
    failing_since: Family<WatchLabels, Gauge>,
    /// A snapshot built after every watch had synced has been published.
    /// Until then reviews would be judged against missing policies, so the
    /// operator is not ready (failing open is not an option).
    pub snapshot_synced: AtomicBool,
    /// Per watch: since when it has been failing, and the last error. A
    /// watch that keeps failing (RBAC or CRD changed) freezes its part of
    /// the snapshot; past `stale_after` the operator stops judging.
    failing: Mutex<BTreeMap<&'static str, (Instant, String)>>,
    /// How many entries `failing` has (read on every event without locking).
    failing_count: AtomicUsize,
    /// Zero: the default, `DEFAULT_STALE_AFTER`.
    stale_after_ms: AtomicU64,
}

/// How long a watch may fail before the snapshot counts as stale.
pub const DEFAULT_STALE_AFTER: Duration = Duration::from_secs(30);

impl WatchHealth {
    /// Register the watch-health metrics (under the registry's prefix,
    /// `residency_guard_` on the admin endpoint).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "watches_synced",
            "Watches that have delivered their initial list",
            self.synced_gauge.clone(),
        );
        registry.register(
            "watches",
            "Watches the snapshot is built from",
            self.total_gauge.clone(),
        );
        registry.register(
            "watch_skipped_objects",
            "Objects skipped because they could not be read",
            self.skipped_objects.clone(),
        );
        registry.register(
            "watch_errors",
            "Watch errors, each retried after a backoff",
            self.watch_errors.clone(),
        );
        registry.register(
            "watch_failing_since_timestamp_seconds",
            "Per watch: Unix time its current run of failures began, 0 while it is healthy",
            self.failing_since.clone(),
        );
    }

    fn set_total(&self, total: usize) {
        self.total.store(total, Ordering::Relaxed);
        self.total_gauge
            .set(i64::try_from(total).unwrap_or(i64::MAX));
    }

    /// Give every watch its failing-since series at 0 (healthy), so the
    /// series exist before the first failure.
    fn name_watches(&self, names: impl IntoIterator<Item = &'static str>) {
        for watch in names {
            self.failing_since
                .get_or_create(&WatchLabels { watch })
                .set(0);
        }
    }

    /// A watch started after the others (a layer kind installed later):
    /// the inventory is not synced again until it has listed.
    fn watch_added(&self, watch: &'static str) {
        self.total.fetch_add(1, Ordering::Relaxed);
        self.total_gauge.inc();
        self.name_watches([watch]);
    }

    /// One more watch delivered its initial list.
    fn watch_synced(&self) {
        // Release: a watch counts as synced only after its list is in the
        // parts (see `rebuild_loop`).
        self.synced.fetch_add(1, Ordering::Release);
        self.synced_gauge.inc();
    }

    pub fn set_stale_after(&self, after: Duration) {
        let ms = u64::try_from(after.as_millis()).unwrap_or(u64::MAX).max(1);
        self.stale_after_ms.store(ms, Ordering::Relaxed);
    }

    fn stale_after(&self) -> Duration {
        match self.stale_after_ms.load(Ordering::Relaxed) {
            0 => DEFAULT_STALE_AFTER,
            ms => Duration::from_millis(ms),
        }
    }

    fn failing(&self) -> std::sync::MutexGuard<'_, BTreeMap<&'static str, (Instant, String)>> {
        self.failing.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn watch_failed(&self, name: &'static str, error: String) {
        self.watch_errors.inc();
        let mut failing = self.failing();
        match failing.get_mut(name) {
            Some((_, last)) => *last = error,
            None => {
                failing.insert(name, (Instant::now(), error));
                self.failing_count.fetch_add(1, Ordering::Relaxed);
                self.failing_since
                    .get_or_create(&WatchLabels { watch: name })
                    .set(Timestamp::now().as_second());
            }
        }
    }

    fn watch_ok(&self, name: &'static str) {
        if self.failing_count.load(Ordering::Relaxed) == 0 {
            return;
        }
        let mut failing = self.failing();
        if let Some((since, _)) = failing.remove(name) {
            self.failing_count.fetch_sub(1, Ordering::Relaxed);
            self.failing_since
                .get_or_create(&WatchLabels { watch: name })
                .set(0);
            tracing::info!(
                resource = name,
                failed_for_s = since.elapsed().as_secs(),
                "watch recovered"
            );
        }
    }

    /// Watches failing for longer than the threshold, with for how long
    /// and their last error, e.g. "networkpolicies (failing for 45 s: ...)".
    pub fn stale_watches(&self) -> Vec<String> {
        let after = self.stale_after();
        self.failing()
            .iter()
            .filter(|(_, (since, _))| since.elapsed() >= after)
            .map(|(name, (since, error))| {
                format!(
                    "{name} (failing for {} s: {error})",
                    since.elapsed().as_secs()
                )
            })
            .collect()
    }
}

/// A workload's identity (kind, namespace, name).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WorkloadKey {
    pub kind: WorkloadKind,
    pub namespace: String,
    pub name: String,
}

impl WorkloadKey {
    pub fn of(w: &Workload) -> WorkloadKey {
        WorkloadKey {
            kind: w.kind,
            namespace: w.namespace.clone(),
            name: w.name.clone(),
        }
    }
}

/// Workloads already in the cluster, for judging NetworkPolicy changes.
pub trait WorkloadSource: Send + Sync {
    /// Every workload object and Pod of `namespace`, owned or not, with
    /// the classes they inherit. Shared, not copied: a namespace may hold
    /// thousands.
    fn in_namespace(&self, namespace: &str) -> Vec<Arc<Workload>>;
}

impl WorkloadSource for BTreeMap<String, Vec<Workload>> {
    fn in_namespace(&self, namespace: &str) -> Vec<Arc<Workload>> {
        self.get(namespace)
            .into_iter()
            .flatten()
            .map(|w| Arc::new(w.clone()))
            .collect()
    }
}

/// What the audit controller reads: the snapshot together with the raw
/// projections it was built from, so the audit can tell what changed.
/// Everything in it is shared with the state and with earlier inventories:
/// publishing one after a pod event copies no object and no map.
#[derive(Clone, Debug, Default)]
pub struct Inventory {
    pub snapshot: Arc<Snapshot>,
    /// ResidencyPolicies by name, valid or not, with their status.
    pub policies: Arc<BTreeMap<String, Arc<ResidencyPolicy>>>,
    /// NetworkPolicies by `namespace/name`.
    pub network_policies: Arc<BTreeMap<String, Arc<NetworkPolicy>>>,
    /// The other egress layers' objects by `kind namespace/name`.
    pub egress_layers: Arc<BTreeMap<String, Arc<serde_json::Value>>>,
    /// Every workload object and Pod, owned or not, bound or not.
    /// A persistent map shared with the watches' index: two inventories
    /// share every node neither changed, and `OrdMap::diff` skips those.
    pub workloads: Workloads,
    /// Every watch has delivered its initial list.
    pub synced: bool,
}

impl Inventory {
    /// Every workload object and Pod of `namespace`, owned or not, each with
    /// the classes its controller owner chain adds (`graph::with_inherited`):
    /// what a NetworkPolicy in the namespace can select.
    pub fn workloads_in_namespace(&self, namespace: &str) -> Vec<Arc<Workload>> {
        index::in_namespace(&self.workloads, namespace)
            .map(|(_, w)| graph::with_inherited(w, &self.workloads))
            .collect()
    }
}

/// The shared state: the latest snapshot and inventory.
#[derive(Clone)]
pub struct State {
    snapshot: watch::Receiver<Arc<Snapshot>>,
    inventory: watch::Receiver<Arc<Inventory>>,
    pub health: Arc<WatchHealth>,
}

impl State {
    /// A state that never changes (tests, benchmarks).
    pub fn fixed(snapshot: Snapshot, workloads: BTreeMap<String, Vec<Workload>>) -> State {
        // A receiver keeps the last value after its sender is gone.
        let snapshot = Arc::new(snapshot);
        let inventory = Inventory {
            snapshot: snapshot.clone(),
            workloads: workloads
                .into_values()
                .flatten()
                .map(|w| (WorkloadKey::of(&w), Arc::new(w)))
                .collect(),
            synced: true,
            ..Inventory::default()
        };
        let (_, rx) = watch::channel(snapshot);
        let (_, inventory) = watch::channel(Arc::new(inventory));
        let health = WatchHealth::default();
        health.snapshot_synced.store(true, Ordering::Release);
        State {
            snapshot: rx,
            inventory,
            health: Arc::new(health),
        }
    }

    /// The audit controller's view; changes whenever the snapshot does.
    pub fn inventory(&self) -> watch::Receiver<Arc<Inventory>> {
        self.inventory.clone()
    }

    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.borrow().clone()
    }

    /// Every watch has delivered its initial list, a snapshot built from
    /// all of them is published, and no watch has been failing for longer
    /// than the staleness threshold.
    pub fn ready(&self) -> bool {
        self.not_ready_because().is_none()
    }

    /// Why the snapshot cannot be trusted for a decision, if it cannot.
    pub fn not_ready_because(&self) -> Option<String> {
        if !self.health.snapshot_synced.load(Ordering::Acquire) {
            return Some("its watches have not all delivered their initial lists yet".into());
        }
        let stale = self.health.stale_watches();
        if stale.is_empty() {
            None
        } else {
            Some(format!(
                "its view of the cluster is stale: watch {}",
                stale.join(", ")
            ))
        }
    }
}

impl WorkloadSource for State {
    fn in_namespace(&self, namespace: &str) -> Vec<Arc<Workload>> {
        // Clone the Arc and let go of the channel's lock before the walk.
        let inventory = self.inventory.borrow().clone();
        inventory.workloads_in_namespace(namespace)
    }
}

/// Static inputs of the snapshot (from flags and bundled data).
#[derive(Clone)]
pub struct Inputs {
    pub catalogue: Catalogue,
    pub address_space: AddressSpace,
    /// The egress semantics and the layer kinds to watch.
    pub egress: EgressWatch,
}

/// The watches' index, and a signal that it changed.
struct Projections {
    index: Mutex<Index>,
    changed: Notify,
}

impl Projections {
    fn with_index<T>(&self, f: impl FnOnce(&mut Index) -> T) -> T {
        let mut guard = self.index.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut guard)
    }
}

/// Start one watch per kind and the publisher; returns at once.
pub fn start(client: Client, inputs: Inputs) -> State {
    let kinds = watched_kinds(&inputs.egress);
    let shared = Arc::new(Projections {
        index: Mutex::new(Index::new(kinds.len())),
        changed: Notify::new(),
    });
    let health = Arc::new(WatchHealth::default());
    health.set_total(kinds.len());
    health.name_watches(kinds.iter().map(|k| k.name));
    let initial = Snapshot::new(inputs.catalogue.clone(), inputs.address_space.clone());
    let (tx, rx) = watch::channel(Arc::new(initial));
    let (inventory_tx, inventory_rx) = watch::channel(Arc::new(Inventory::default()));

    for (index, kind) in kinds.into_iter().enumerate() {
        let api: Api<DynamicObject> = Api::all_with(client.clone(), &kind.resource);
        tokio::spawn(run_watch(api, kind, index, shared.clone(), health.clone()));
    }
    if let Some(probe) = inputs.egress.probe {
        tokio::spawn(probe_layers(
            client.clone(),
            probe,
            inputs.egress.clone(),
            shared.clone(),
            health.clone(),
        ));
    }
    tokio::spawn(publish_loop(
        shared,
        Publisher::new(inputs),
        tx,
        (inventory_tx, health.clone()),
    ));
    State {
        snapshot: rx,
        inventory: inventory_rx,
        health,
    }
}

fn key_of(obj: &DynamicObject) -> String {
    let meta = obj.meta();
    format!(
        "{}/{}",
        meta.namespace.as_deref().unwrap_or_default(),
        meta.name.as_deref().unwrap_or_default()
    )
}

/// The key of a workload object, from its metadata alone (deletions are
/// not projected). The namespace defaults as `Workload::from_value` does.
fn workload_key_of(kind: WorkloadKind, obj: &DynamicObject) -> WorkloadKey {
    let meta = obj.meta();
    WorkloadKey {
        kind,
        namespace: meta.namespace.clone().unwrap_or_else(|| "default".into()),
        name: meta.name.clone().unwrap_or_default(),
    }
}

async fn run_watch(
    api: Api<DynamicObject>,
    kind: Watched,
    index: usize,
    shared: Arc<Projections>,
    health: Arc<WatchHealth>,
) {
    // After an error the watch starts over with a fresh LIST, after a
    // backoff: its Init events are the proof that it works again (a resumed
    // watch that sees no change says nothing), which readiness needs, and
    // the relisted objects replace its part wholesale.
    let mut failures: u32 = 0;
    let mut watch = WatchState {
        kind,
        index,
        buffer: None,
        synced_once: false,
        labels: LabelPool::default(),
    };
    loop {
        let mut stream = watcher::watcher(api.clone(), watcher::Config::default()).boxed();
        loop {
            let event = match stream.try_next().await {
                Ok(Some(e)) => e,
                Ok(None) => break,
                Err(e) => {
                    failures = failures.saturating_add(1);
                    health.watch_failed(watch.kind.name, e.to_string());
                    tracing::warn!(resource = watch.kind.name, error = %e, retry_in_ms = WATCH_BACKOFF.after(failures).as_millis() as u64, "watch error; listing again after a backoff");
                    break;
                }
            };
            // The watcher says `Init` before it lists: no proof yet that the
            // watch works (counting it would restart the staleness clock on
            // every retry). Anything after it came from the API server.
            if !matches!(event, Event::Init) {
                health.watch_ok(watch.kind.name);
            }
            if matches!(event, Event::InitDone) {
                failures = 0;
            }
            watch.handle(event, &shared, &health);
        }
        tokio::time::sleep(WATCH_BACKOFF.after(failures)).await;
    }
}

/// Between a watch's attempts: 0.5 s, 1 s, 2 s, ... up to 16 s after
/// consecutive failures (none: a short pause before a clean restart).
const WATCH_BACKOFF: Backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(16));

/// A relist in progress: the objects listed so far.
enum Relist {
    Cluster(Part),
    Workloads(BTreeMap<WorkloadKey, Arc<Workload>>),
}

/// One watch: its kind, its place in the index, and its relist buffer.
struct WatchState {
    kind: Watched,
    index: usize,
    buffer: Option<Relist>,
    synced_once: bool,
    /// A workload watch's shared label maps.
    labels: LabelPool,
}

impl WatchState {
    /// Project an object; None when it is not kept or cannot be read (with
    /// a warning and a count, never a stalled watch).
    fn project(&mut self, obj: &DynamicObject, health: &WatchHealth) -> Option<Projected> {
        let mut projected = self.project_alone(obj, health);
        if let Some(Projected::Workload(w)) = projected.as_mut() {
            self.labels.share(w);
        }
        projected
    }

    fn project_alone(&self, obj: &DynamicObject, health: &WatchHealth) -> Option<Projected> {
        let kind = &self.kind;
        let mut value = match serde_json::to_value(obj) {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(resource = kind.name, object = %key_of(obj), error = %e, "skipping unreadable object");
                return None;
            }
        };
        // The API server leaves apiVersion and kind out of the items of
        // a LIST response (kubernetes/kubernetes#3030), so objects of the
        // initial list arrive without them; workload projection needs
        // them. The watched resource says what they are.
        if let Some(map) = value.as_object_mut() {
            map.entry("apiVersion")
                .or_insert_with(|| kind.resource.api_version.clone().into());
            map.entry("kind")
                .or_insert_with(|| kind.resource.kind.clone().into());
        }
        match (kind.project)(&value) {
            Ok(projected) => projected,
            Err(e) => {
                health.skipped_objects.inc();
                tracing::warn!(resource = kind.name, object = %key_of(obj), error = %e, "skipping malformed object");
                None
            }
        }
    }

    /// Apply one watch event to the index.
    fn handle(&mut self, event: Event<DynamicObject>, shared: &Projections, health: &WatchHealth) {
        match event {
            Event::Init => {
                self.buffer = Some(match self.kind.workload {
                    Some(_) => Relist::Workloads(BTreeMap::new()),
                    None => Relist::Cluster(Part::new()),
                });
            }
            Event::InitApply(obj) => {
                let projected = self.project(&obj, health);
                match (self.buffer.as_mut(), projected, self.kind.workload) {
                    (Some(Relist::Cluster(part)), Some(Projected::Cluster(item)), _) => {
                        part.insert(key_of(&obj), item);
                    }
                    (Some(Relist::Workloads(map)), Some(Projected::Workload(w)), Some(kind)) => {
                        map.insert(workload_key_of(kind, &obj), Arc::from(w));
                    }
                    _ => {}
                }
            }
            Event::InitDone => {
                let (index, workload) = (self.index, self.kind.workload);
                let changed = shared.with_index(|ix| {
                    let before = ix.changed();
                    match (self.buffer.take(), workload) {
                        (Some(Relist::Workloads(fresh)), Some(kind)) => {
                            ix.workloads_relisted(kind, fresh)
                        }
                        (Some(Relist::Cluster(fresh)), None) => ix.cluster_relisted(index, fresh),
                        // No Init before InitDone: the watcher never does that.
                        _ => {}
                    }
                    !before && ix.changed()
                });
                // The first sync publishes even when the list changed
                // nothing (an empty kind): readiness waits for it.
                if !self.synced_once {
                    self.synced_once = true;
                    health.watch_synced();
                    tracing::info!(resource = self.kind.name, "watch synced");
                    shared.changed.notify_one();
                } else if changed {
                    shared.changed.notify_one();
                }
            }
            Event::Apply(obj) => {
                let projected = self.project(&obj, health);
                self.apply(shared, &obj, projected);
            }
            Event::Delete(obj) => self.apply(shared, &obj, None),
        }
    }

    /// An object changed (`Some`) or went away (`None`).
    fn apply(&self, shared: &Projections, obj: &DynamicObject, projected: Option<Projected>) {
        let changed = shared.with_index(|ix| {
            let before = ix.changed();
            match (self.kind.workload, projected) {
                (Some(kind), Some(Projected::Workload(w))) => {
                    ix.workload(workload_key_of(kind, obj), Some(Arc::from(w)))
                }
                (Some(kind), _) => ix.workload(workload_key_of(kind, obj), None),
                (None, Some(Projected::Cluster(item))) => {
                    ix.cluster_object(self.index, key_of(obj), Some(item))
                }
                (None, _) => ix.cluster_object(self.index, key_of(obj), None),
            }
            !before && ix.changed()
        });
        // Only the first change since the last publish needs to wake the
        // publisher; later ones are picked up by the same publish.
        if changed {
            shared.changed.notify_one();
        }
    }
}

/// Coalesce bursts of changes (an initial list delivers thousands).
const DEBOUNCE: Duration = Duration::from_millis(50);

async fn publish_loop(
    shared: Arc<Projections>,
    mut publisher: Publisher,
    tx: watch::Sender<Arc<Snapshot>>,
    (inventory_tx, health): (watch::Sender<Arc<Inventory>>, Arc<WatchHealth>),
) {
    loop {
        shared.changed.notified().await;
        tokio::time::sleep(DEBOUNCE).await;
        // Read the sync count before the index: a watch bumps it only after
        // its initial list is in the index, so `synced` implies complete data.
        let synced = health.synced.load(Ordering::Acquire) >= health.total.load(Ordering::Relaxed);
        let taken = shared.with_index(Index::take);
        let (inventory, rebuilt) = publisher.publish(taken, synced, Timestamp::now());
        // The snapshot first: whoever sees the new inventory finds the
        // webhook's snapshot at least as new.
        if rebuilt && tx.send(publisher.snapshot.clone()).is_err() {
            return;
        }
        // Nobody listening (the audit is off) is fine.
        let _ = inventory_tx.send(inventory);
        if synced {
            health.snapshot_synced.store(true, Ordering::Release);
        }
    }
}

/// Turns what the index had into an inventory, keeping what did not
/// change (the Snapshot, the policy maps) from the previous one.
struct Publisher {
    inputs: Inputs,
    last_valid: LastValid,
    /// Rejected policies already logged (name, generation): once each.
    logged: std::collections::BTreeSet<(String, Option<i64>)>,
    snapshot: Arc<Snapshot>,
    policies: Arc<BTreeMap<String, Arc<ResidencyPolicy>>>,
    network_policies: Arc<BTreeMap<String, Arc<NetworkPolicy>>>,
    egress_layers: Arc<BTreeMap<String, Arc<serde_json::Value>>>,
}

impl Publisher {
    fn new(inputs: Inputs) -> Publisher {
        let snapshot = Snapshot::new(inputs.catalogue.clone(), inputs.address_space.clone());
        Publisher {
            inputs,
            last_valid: LastValid::default(),
            logged: Default::default(),
            snapshot: Arc::new(snapshot),
            policies: Default::default(),
            network_policies: Default::default(),
            egress_layers: Default::default(),
        }
    }

    /// The inventory for `taken`, and whether the Snapshot was rebuilt.
    fn publish(
        &mut self,
        taken: index::Taken,
        synced: bool,
        now: Timestamp,
    ) -> (Arc<Inventory>, bool) {
        let rebuilt = taken.rebuild.is_some();
        if let Some(semantics) = taken.semantics {
            self.inputs.egress.semantics = semantics;
        }
        if let Some(parts) = taken.rebuild {
            let snapshot = build(&parts, &self.inputs, now, &mut self.last_valid);
            self.log_rejected(&snapshot);
            self.snapshot = Arc::new(snapshot);
        }
        if let Some(network_policies) = taken.network_policies {
            self.network_policies = Arc::new(network_policies);
        }
        if let Some(layers) = taken.egress_layers
            && layers != *self.egress_layers
        {
            self.egress_layers = Arc::new(layers);
        }
        if let Some(policies) = taken.policies {
            self.policies = Arc::new(policies);
        }
        let inventory = Inventory {
            snapshot: self.snapshot.clone(),
            policies: self.policies.clone(),
            network_policies: self.network_policies.clone(),
            egress_layers: self.egress_layers.clone(),
            workloads: taken.workloads,
            synced,
        };
        (Arc::new(inventory), rebuilt)
    }

    fn log_rejected(&mut self, snapshot: &Snapshot) {
        let rejected: std::collections::BTreeSet<(String, Option<i64>)> = snapshot
            .rejected
            .iter()
            .map(|r| (r.name.clone(), r.generation))
            .collect();
        for r in &snapshot.rejected {
            if !self.logged.contains(&(r.name.clone(), r.generation)) {
                tracing::warn!(policy = %r.name, generation = ?r.generation, "{}", r.summary().en);
            }
        }
        self.logged = rejected;
    }
}

/// Build a Snapshot from projected cluster objects (`SnapshotBuilder`: a
/// policy that does not compile keeps being enforced, its last valid
/// version from `last_valid`, else its strictest reading, and is recorded
/// in `snapshot.rejected`; the webhook's policy endpoint stops new invalid
/// ones at the door).
fn build(parts: &[Part], inputs: &Inputs, now: Timestamp, last_valid: &mut LastValid) -> Snapshot {
    let mut base = Snapshot::new(inputs.catalogue.clone(), inputs.address_space.clone());
    base.network.set_semantics(inputs.egress.semantics);
    let mut builder = SnapshotBuilder::new(base, now).remembering(last_valid);
    // A cluster always has a node inventory, even an empty one.
    builder.nodes_known();
    for (key, item) in parts.iter().flatten() {
        match item {
            Item::Policy(p) => {
                // Problems are logged once per version by the publisher.
                let _ = builder.policy(p);
            }
            Item::Node(n) => builder.node((**n).clone()),
            Item::Namespace(labels) => {
                builder.namespace(key.trim_start_matches('/'), (**labels).clone());
            }
            Item::NetworkPolicy(np) => builder.network_policy(np),
            Item::Service(svc) => builder.service(svc),
            Item::Volume(pv) => builder.persistent_volume(Arc::clone(pv)),
            Item::Claim(c) => builder.persistent_volume_claim(Arc::clone(c)),
            Item::Class(c) => builder.storage_class((**c).clone()),
            Item::Layer(v) => {
                let field = |k: &str| v.get(k).and_then(|x| x.as_str()).unwrap_or_default();
                let group = field("apiVersion").rsplit_once('/').map_or("", |(g, _)| g);
                // A kind watched before the semantics changed (an
                // AdminNetworkPolicy, once Cilium's CRDs made it `cilium`)
                // is not read under the new ones.
                if group_enforced_under(group, inputs.egress.semantics.cni) {
                    builder.layer_object(field("apiVersion"), field("kind"), v);
                }
            }
        }
    }
    builder.build()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A network set keeps its labels (rules select sets by them); a
    /// policy keeps none.
    #[test]
    fn network_sets_keep_their_labels() {
        let kept = |kind: &str| {
            let v = serde_json::json!({
                "apiVersion": "crd.projectcalico.org/v1", "kind": kind,
                "metadata": {"name": "s", "namespace": "ns", "labels": {"role": "egress"}, "uid": "u"},
                "spec": {"nets": ["8.8.8.0/24"]}
            });
            match project_layer(&v) {
                Ok(Some(Projected::Cluster(Item::Layer(v)))) => v,
                _ => panic!("{kind}: not kept as a layer object"),
            }
        };
        for kind in ["NetworkSet", "GlobalNetworkSet"] {
            assert_eq!(kept(kind)["metadata"]["labels"]["role"], "egress", "{kind}");
            assert!(kept(kind)["metadata"].get("uid").is_none());
        }
        assert!(kept("NetworkPolicy")["metadata"].get("labels").is_none());
    }

    /// A layer kind's name is `plural.group`.
    #[test]
    fn layer_resources_are_named_plural_dot_group() {
        for r in LAYER_RESOURCES {
            assert_eq!(r.name, format!("{}.{}", r.plural, r.group));
        }
    }

    /// The kinds' own table names the resources k8s-openapi does.
    #[test]
    fn workload_resources_agree_with_k8s_openapi() {
        use k8s_openapi::api::{apps::v1 as apps, batch::v1 as batch, core::v1 as core};
        let erased = |kind| match kind {
            WorkloadKind::Pod => ApiResource::erase::<core::Pod>(&()),
            WorkloadKind::Deployment => ApiResource::erase::<apps::Deployment>(&()),
            WorkloadKind::ReplicaSet => ApiResource::erase::<apps::ReplicaSet>(&()),
            WorkloadKind::StatefulSet => ApiResource::erase::<apps::StatefulSet>(&()),
            WorkloadKind::DaemonSet => ApiResource::erase::<apps::DaemonSet>(&()),
            WorkloadKind::Job => ApiResource::erase::<batch::Job>(&()),
            WorkloadKind::CronJob => ApiResource::erase::<batch::CronJob>(&()),
            WorkloadKind::ReplicationController => {
                ApiResource::erase::<core::ReplicationController>(&())
            }
        };
        for kind in WorkloadKind::ALL {
            assert_eq!(workload_api_resource(kind), erased(kind), "{kind}");
        }
    }
}
