//! A mock Kubernetes API server for the kinds `residency-guard serve`
//! watches (src/state/mod.rs), shared by `benches/cold_start.rs` and
//! `tests/cold_start_mock.rs` (included with `#[path = ...] mod`).
//!
//! Plain HTTP on 127.0.0.1. It answers, like the API server:
//! - LIST (`GET <collection>`): honours `limit` and `continue`, returning
//!   `metadata.continue` and `metadata.remainingItemCount` while items
//!   remain, and `metadata.resourceVersion` on every page. `max_page` can cap
//!   a page below the requested `limit` (the API server may return fewer
//!   items than asked; clients must follow `continue`), which lets a test
//!   exercise paging with little data. Items of built-in kinds are sent
//!   without `apiVersion`/`kind`, as the API server does in lists
//!   (kubernetes/kubernetes#3030); custom resources keep them.
//! - WATCH (`watch=true`): holds the connection open, sending a BOOKMARK
//!   every `bookmark_every` until `timeoutSeconds` (at most 10 min). With
//!   `sendInitialEvents=true` (streaming lists) it first sends every item as
//!   an ADDED event, then the `k8s.io/initial-events-end` BOOKMARK.
//!
//! Anything else is a 404 Status.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// Every collection `serve` lists and watches, as (path, apiVersion, kind,
/// custom resource).
pub const RESOURCES: &[(&str, &str, &str, bool)] = &[
    (
        "/apis/residencyguard.io/v1alpha1/residencypolicies",
        "residencyguard.io/v1alpha1",
        "ResidencyPolicy",
        true,
    ),
    ("/api/v1/nodes", "v1", "Node", false),
    ("/api/v1/namespaces", "v1", "Namespace", false),
    (
        "/apis/networking.k8s.io/v1/networkpolicies",
        "networking.k8s.io/v1",
        "NetworkPolicy",
        false,
    ),
    ("/api/v1/services", "v1", "Service", false),
    ("/api/v1/persistentvolumes", "v1", "PersistentVolume", false),
    (
        "/api/v1/persistentvolumeclaims",
        "v1",
        "PersistentVolumeClaim",
        false,
    ),
    (
        "/apis/storage.k8s.io/v1/storageclasses",
        "storage.k8s.io/v1",
        "StorageClass",
        false,
    ),
    ("/api/v1/pods", "v1", "Pod", false),
    ("/apis/apps/v1/deployments", "apps/v1", "Deployment", false),
    ("/apis/apps/v1/replicasets", "apps/v1", "ReplicaSet", false),
    (
        "/apis/apps/v1/statefulsets",
        "apps/v1",
        "StatefulSet",
        false,
    ),
    ("/apis/apps/v1/daemonsets", "apps/v1", "DaemonSet", false),
    ("/apis/batch/v1/jobs", "batch/v1", "Job", false),
    ("/apis/batch/v1/cronjobs", "batch/v1", "CronJob", false),
    (
        "/api/v1/replicationcontrollers",
        "v1",
        "ReplicationController",
        false,
    ),
];

pub const LIST_RESOURCE_VERSION: &str = "1000";
const CONTINUE_PREFIX: &str = "rg-mock-offset-";
const MAX_LOGGED_REQUESTS: usize = 400;

struct Collection {
    api_version: &'static str,
    kind: &'static str,
    custom: bool,
    /// Each item serialized as it appears in a list.
    items: Vec<Bytes>,
    /// Events injected by `MockApi::inject`, fanned out to open watches.
    events: tokio::sync::broadcast::Sender<Bytes>,
}

/// Request counters.
#[derive(Debug, Default)]
pub struct Counters {
    /// LIST requests (every page counts).
    pub lists: AtomicUsize,
    /// LIST requests that carried a `continue` token (pages after the first).
    pub continued: AtomicUsize,
    /// LIST responses that returned a `continue` token (more pages followed).
    pub truncated: AtomicUsize,
    pub items_listed: AtomicUsize,
    pub watches: AtomicUsize,
    pub streaming_watches: AtomicUsize,
    pub unknown: AtomicUsize,
    pub bytes_listed: AtomicUsize,
}

pub struct MockApi {
    collections: BTreeMap<&'static str, Collection>,
    /// Serve at most this many items per page, whatever `limit` asks.
    pub max_page: Option<usize>,
    pub bookmark_every: Duration,
    pub counters: Counters,
    /// The first requests, as `GET path?query -> items`.
    log: Mutex<Vec<String>>,
}

impl MockApi {
    /// Every collection empty.
    pub fn new(max_page: Option<usize>, bookmark_every: Duration) -> MockApi {
        let collections = RESOURCES
            .iter()
            .map(|&(path, api_version, kind, custom)| {
                (
                    path,
                    Collection {
                        api_version,
                        kind,
                        custom,
                        items: Vec::new(),
                        events: tokio::sync::broadcast::channel(65_536).0,
                    },
                )
            })
            .collect();
        MockApi {
            collections,
            max_page,
            bookmark_every,
            counters: Counters::default(),
            log: Mutex::new(Vec::new()),
        }
    }

    /// A mock serving the generated cluster of `scale` (benches/cluster_data.rs,
    /// which every includer of this file includes beside it).
    pub fn with_cluster(
        scale: &super::cluster_data::Scale,
        max_page: Option<usize>,
        bookmark_every: Duration,
    ) -> MockApi {
        use super::cluster_data::{
            deployment_obj, namespace_obj, network_policy_obj, node_obj, pod_obj, policy_value,
            replica_set_obj,
        };
        let mut mock = MockApi::new(max_page, bookmark_every);
        mock.add("Node", (0..scale.nodes).map(node_obj));
        mock.add("Namespace", (0..scale.namespaces).map(namespace_obj));
        mock.add(
            "Deployment",
            (0..scale.deployments).map(|i| deployment_obj(i, scale)),
        );
        mock.add(
            "ReplicaSet",
            (0..scale.deployments).map(|i| replica_set_obj(i, scale)),
        );
        mock.add("Pod", (0..scale.pods).map(|i| pod_obj(i, scale)));
        mock.add("ResidencyPolicy", (0..scale.policies).map(policy_value));
        mock.add(
            "NetworkPolicy",
            (0..scale.network_policies).map(|i| network_policy_obj(i, scale)),
        );
        mock
    }

    /// Add objects of `kind` (full objects, with apiVersion and kind).
    pub fn add(&mut self, kind: &str, objects: impl IntoIterator<Item = Value>) {
        let c = self
            .collections
            .values_mut()
            .find(|c| c.kind == kind)
            .unwrap_or_else(|| panic!("the mock does not serve {kind}"));
        for mut obj in objects {
            assert_eq!(obj["kind"], kind, "object of the wrong kind");
            if !c.custom
                && let Some(map) = obj.as_object_mut()
            {
                map.remove("apiVersion");
                map.remove("kind");
            }
            c.items
                .push(Bytes::from(serde_json::to_vec(&obj).expect("serializable")));
        }
    }

    /// Send a watch event (`ADDED`, `MODIFIED`, `DELETED`) for `object` (a
    /// full object, with apiVersion and kind) to every open watch of its
    /// kind. The lists are not changed: this is churn after the initial
    /// sync, as watches see it.
    pub fn inject(&self, event_type: &str, object: &Value) {
        let kind = object["kind"].as_str().unwrap_or_default();
        let Some(c) = self.collections.values().find(|c| c.kind == kind) else {
            panic!("the mock does not serve {kind}");
        };
        let mut line = serde_json::to_vec(&json!({"type": event_type, "object": object}))
            .expect("serializable");
        line.push(b'\n');
        // No watch open yet is fine: nobody to tell.
        let _ = c.events.send(Bytes::from(line));
    }

    /// How many objects of `kind` are served.
    pub fn count(&self, kind: &str) -> usize {
        self.collections
            .values()
            .find(|c| c.kind == kind)
            .map_or(0, |c| c.items.len())
    }

    pub fn objects(&self) -> usize {
        self.collections.values().map(|c| c.items.len()).sum()
    }

    /// The bytes of every item, as listed.
    pub fn item_bytes(&self) -> usize {
        self.collections
            .values()
            .flat_map(|c| &c.items)
            .map(|b| b.len())
            .sum()
    }

    pub fn reset(&self) {
        let c = &self.counters;
        for n in [
            &c.lists,
            &c.continued,
            &c.truncated,
            &c.items_listed,
            &c.watches,
            &c.streaming_watches,
            &c.unknown,
            &c.bytes_listed,
        ] {
            n.store(0, Ordering::Relaxed);
        }
        if let Ok(mut log) = self.log.lock() {
            log.clear();
        }
    }

    /// The first requests since the last reset.
    pub fn requests(&self) -> Vec<String> {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }

    fn record(&self, line: String) {
        if let Ok(mut log) = self.log.lock()
            && log.len() < MAX_LOGGED_REQUESTS
        {
            log.push(line);
        }
    }
}

/// Bind 127.0.0.1:0 and serve `mock` on the current runtime.
pub async fn start(mock: Arc<MockApi>) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let app = axum::Router::new().fallback(handle).with_state(mock);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            eprintln!("mock API server: {e}");
        }
    });
    Ok(addr)
}

pub fn query_param<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

fn status(code: StatusCode, reason: &str, message: String) -> Response {
    let body = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code.as_u16()});
    (code, axum::Json(body)).into_response()
}

async fn handle(State(mock): State<Arc<MockApi>>, uri: Uri) -> Response {
    let path = uri.path();
    let query = uri.query().unwrap_or_default();
    let Some(c) = mock.collections.get(path) else {
        mock.counters.unknown.fetch_add(1, Ordering::Relaxed);
        mock.record(format!("GET {path}?{query} -> 404"));
        return status(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("the mock has no {path}"),
        );
    };
    if query_param(query, "watch") == Some("true") || query_param(query, "watch") == Some("1") {
        watch(&mock, c, path, query)
    } else {
        list(&mock, c, path, query)
    }
}

fn list(mock: &MockApi, c: &Collection, path: &str, query: &str) -> Response {
    let counters = &mock.counters;
    counters.lists.fetch_add(1, Ordering::Relaxed);
    let offset = match query_param(query, "continue").filter(|t| !t.is_empty()) {
        None => 0,
        Some(token) => {
            counters.continued.fetch_add(1, Ordering::Relaxed);
            match token
                .strip_prefix(CONTINUE_PREFIX)
                .and_then(|n| n.parse::<usize>().ok())
                .filter(|&n| n <= c.items.len())
            {
                Some(n) => n,
                None => {
                    return status(
                        StatusCode::BAD_REQUEST,
                        "BadRequest",
                        format!("invalid continue token {token:?}"),
                    );
                }
            }
        }
    };
    let limit = query_param(query, "limit")
        .and_then(|l| l.parse::<usize>().ok())
        .filter(|&l| l > 0)
        .unwrap_or(usize::MAX);
    let page = limit.min(mock.max_page.unwrap_or(usize::MAX)).max(1);
    let end = offset.saturating_add(page).min(c.items.len());
    let items = &c.items[offset..end];
    let mut metadata = json!({"resourceVersion": LIST_RESOURCE_VERSION});
    if end < c.items.len() {
        counters.truncated.fetch_add(1, Ordering::Relaxed);
        metadata["continue"] = json!(format!("{CONTINUE_PREFIX}{end}"));
        metadata["remainingItemCount"] = json!(c.items.len() - end);
    }
    let head = json!({"apiVersion": c.api_version, "kind": format!("{}List", c.kind), "metadata": metadata});
    let mut body = serde_json::to_vec(&head).expect("serializable");
    body.pop(); // the closing brace
    body.extend_from_slice(b",\"items\":[");
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(item);
    }
    body.extend_from_slice(b"]}");
    counters
        .items_listed
        .fetch_add(items.len(), Ordering::Relaxed);
    counters
        .bytes_listed
        .fetch_add(body.len(), Ordering::Relaxed);
    mock.record(format!("GET {path}?{query} -> {} items", items.len()));
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// One watch event line for an item of `c`.
fn added_event(c: &Collection, item: &Bytes) -> Bytes {
    let mut line = Vec::with_capacity(item.len() + 80);
    line.extend_from_slice(b"{\"type\":\"ADDED\",\"object\":");
    if c.custom {
        line.extend_from_slice(item);
    } else {
        // Watch events carry apiVersion and kind.
        let head = format!(
            "{{\"apiVersion\":{},\"kind\":{},",
            json!(c.api_version),
            json!(c.kind)
        );
        line.extend_from_slice(head.as_bytes());
        line.extend_from_slice(&item[1..]);
    }
    line.extend_from_slice(b"}\n");
    Bytes::from(line)
}

fn bookmark(c: &Collection, initial_end: bool) -> Bytes {
    let mut metadata = json!({"resourceVersion": LIST_RESOURCE_VERSION});
    if initial_end {
        metadata["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    let event = json!({"type": "BOOKMARK",
        "object": {"apiVersion": c.api_version, "kind": c.kind, "metadata": metadata}});
    let mut line = serde_json::to_vec(&event).expect("serializable");
    line.push(b'\n');
    Bytes::from(line)
}

fn watch(mock: &MockApi, c: &Collection, path: &str, query: &str) -> Response {
    mock.counters.watches.fetch_add(1, Ordering::Relaxed);
    let streaming = query_param(query, "sendInitialEvents") == Some("true");
    let mut initial = Vec::new();
    if streaming {
        mock.counters
            .streaming_watches
            .fetch_add(1, Ordering::Relaxed);
        initial.extend(c.items.iter().map(|item| added_event(c, item)));
        initial.push(bookmark(c, true));
    }
    mock.record(format!(
        "GET {path}?{query} -> watch ({} initial events)",
        initial.len().saturating_sub(1)
    ));
    let timeout = query_param(query, "timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .unwrap_or(290)
        .min(600);
    let every = mock.bookmark_every.max(Duration::from_millis(10));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(timeout);
    let tick = bookmark(c, false);
    let bookmarks = futures::stream::unfold((), move |()| {
        let tick = tick.clone();
        async move {
            let next = tokio::time::Instant::now() + every;
            if next >= deadline {
                tokio::time::sleep_until(deadline).await;
                return None;
            }
            tokio::time::sleep_until(next).await;
            Some((tick, ()))
        }
    });
    // Injected events, until the watch's deadline; a slow watch that lags
    // loses events, as a real one would get 410 Gone and relist.
    let events = futures::stream::unfold(c.events.subscribe(), move |mut rx| async move {
        loop {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Ok(event)) => return Some((event, rx)),
                Ok(Err(tokio::sync::broadcast::error::RecvError::Lagged(_))) => continue,
                Ok(Err(_)) | Err(_) => return None,
            }
        }
    });
    let stream = futures::StreamExt::map(
        futures::StreamExt::chain(
            futures::stream::iter(initial),
            futures::stream::select(bookmarks, events),
        ),
        Ok::<_, Infallible>,
    );
    (
        [(header::CONTENT_TYPE, "application/json")],
        Body::from_stream(stream),
    )
        .into_response()
}
