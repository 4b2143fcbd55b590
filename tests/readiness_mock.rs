//! Readiness against a scripted API server: the operator must not report
//! ready until a snapshot built from every watch's initial list is
//! published. Reporting ready as soon as the last watch synced (before the
//! debounced rebuild) admitted reviews against a snapshot that lacked that
//! watch's objects: failing open.

use std::time::{Duration, Instant};

use http::{Request, Response, StatusCode};
use kube::client::Body;
use residency_guard::engine::{AddressSpace, Catalogue};
use residency_guard::state::{self, Inputs, State};
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tower_test::mock::{Handle, SendResponse};

type ApiHandle = Handle<Request<Body>, Response<Body>>;

/// The list held back until the test releases it.
const HELD: &str = "/api/v1/namespaces";

fn reply(send: SendResponse<Response<Body>>, body: &Value) {
    let body = serde_json::to_vec(body).expect("response body");
    send.send_response(
        Response::builder()
            .status(StatusCode::OK)
            .body(Body::from(body))
            .expect("response"),
    );
}

fn list(items: Vec<Value>) -> Value {
    json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": "1"}, "items": items})
}

/// Answer every initial list with an empty list, except `HELD`, whose
/// responder goes to the test; hold every watch open without events.
async fn api_server(mut handle: ApiHandle, held: oneshot::Sender<SendResponse<Response<Body>>>) {
    let mut held = Some(held);
    let mut watches = Vec::new();
    while let Some((request, send)) = handle.next_request().await {
        let query = request.uri().query().unwrap_or_default();
        if query.contains("watch=true") {
            watches.push(send);
        } else if request.uri().path() == HELD
            && let Some(to_test) = held.take()
        {
            let _ = to_test.send(send);
        } else {
            reply(send, &list(Vec::new()));
        }
    }
}

async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

fn synced(state: &State) -> (usize, usize) {
    use std::sync::atomic::Ordering;
    (
        state.health.synced.load(Ordering::Acquire),
        state.health.total.load(Ordering::Acquire),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_only_once_a_snapshot_of_every_synced_watch_is_published() {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let (held_tx, held_rx) = oneshot::channel();
    let server = tokio::spawn(api_server(handle, held_tx));
    let client = kube::Client::new(service, "default");
    let state = state::start(
        client,
        Inputs {
            catalogue: Catalogue::builtin().clone(),
            address_space: AddressSpace::builtin(),
        },
    );

    // Every watch but the namespaces one syncs; snapshots of that partial
    // data get published (several debounce periods pass).
    let held = tokio::time::timeout(Duration::from_secs(20), held_rx)
        .await
        .expect("the namespaces list request")
        .expect("the held responder");
    wait_for("all other watches to sync", || {
        let (synced, total) = synced(&state);
        total > 1 && synced == total - 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !state.ready(),
        "ready while the namespaces watch has not delivered its initial list"
    );

    // The namespaces list arrives: the first time readiness is reported,
    // the published snapshot must already contain it.
    reply(
        held,
        &list(vec![json!({
            "apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": "payments", "resourceVersion": "1",
                "labels": {"residencyguard.io/data-class": "personal"}},
        })]),
    );
    wait_for("readiness", || state.ready()).await;
    let snapshot = state.snapshot();
    assert_eq!(
        snapshot
            .namespaces
            .get("payments")
            .and_then(|labels| labels.get("residencyguard.io/data-class"))
            .map(String::as_str),
        Some("personal"),
        "ready before the snapshot includes the last watch's initial list: {:?}",
        snapshot.namespaces
    );
    let (synced, total) = synced(&state);
    assert_eq!(synced, total);
    server.abort();
}
