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
            egress: Default::default(),
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

/// Answer every list and watch, except that once `failing` is set, every
/// request for NetworkPolicies is refused with 403 (an RBAC change).
async fn api_server_losing_networkpolicies(
    mut handle: ApiHandle,
    failing: std::sync::Arc<std::sync::atomic::AtomicBool>,
) {
    let mut watches = Vec::new();
    while let Some((request, send)) = handle.next_request().await {
        let path = request.uri().path().to_string();
        let query = request.uri().query().unwrap_or_default().to_string();
        if path.contains("networkpolicies") && failing.load(std::sync::atomic::Ordering::SeqCst) {
            let body = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "reason": "Forbidden", "code": 403,
                "message": "networkpolicies.networking.k8s.io is forbidden: User \"system:serviceaccount:residency-guard:residency-guard\" cannot list resource \"networkpolicies\""});
            send.send_response(
                Response::builder()
                    .status(StatusCode::FORBIDDEN)
                    .body(Body::from(serde_json::to_vec(&body).expect("json")))
                    .expect("response"),
            );
        } else if query.contains("watch=true") {
            // End the NetworkPolicy watch (no events) after a moment so the
            // client comes back, and meets the 403 once it is on; hold the
            // others open.
            if path.contains("networkpolicies") {
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    send.send_response(
                        Response::builder()
                            .status(StatusCode::OK)
                            .body(Body::empty())
                            .expect("response"),
                    );
                });
            } else {
                watches.push(send);
            }
        } else {
            reply(send, &list(Vec::new()));
        }
    }
}

/// The operator's state against `api_server_losing_networkpolicies`, with
/// `stale_after` as its staleness threshold, once ready; set the flag to
/// make the NetworkPolicy watch fail.
async fn ready_state_losing_networkpolicies(
    stale_after: Duration,
) -> (
    State,
    std::sync::Arc<std::sync::atomic::AtomicBool>,
    tokio::task::JoinHandle<()>,
) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let failing = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let server = tokio::spawn(api_server_losing_networkpolicies(handle, failing.clone()));
    let client = kube::Client::new(service, "default");
    let state = state::start(
        client,
        Inputs {
            catalogue: Catalogue::builtin().clone(),
            address_space: AddressSpace::builtin(),
            egress: Default::default(),
        },
    );
    state.health.set_stale_after(stale_after);
    wait_for("readiness", || state.ready()).await;
    (state, failing, server)
}

/// A watch that keeps failing freezes its part of the snapshot: past the
/// threshold the operator is not ready, and a classified review is refused
/// (retryably, 503) instead of judged on stale data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_failing_past_the_threshold_makes_the_operator_not_ready_and_refuse() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    let (state, failing, server) =
        ready_state_losing_networkpolicies(Duration::from_millis(500)).await;

    failing.store(true, Ordering::SeqCst);
    wait_for("the operator to stop being ready", || !state.ready()).await;
    let why = state.not_ready_because().expect("a reason");
    assert!(why.contains("networkpolicies"), "{why}");
    assert!(why.contains("forbidden"), "{why}");

    // A labelled hostNetwork Pod: refused with 503, not admitted.
    let app = residency_guard::webhook::server::App {
        state: state.clone(),
        lang: residency_guard::engine::Lang::En,
        metrics: residency_guard::webhook::metrics::Metrics::new(),
        max_body_bytes: 1 << 20,
        serving: Arc::new(AtomicBool::new(true)),
        certs: residency_guard::tls::CertStore::new(),
        live: None,
        authorizer: None,
        budget: Arc::new(residency_guard::webhook::budget::LiveBudget::new(
            Default::default(),
        )),
    };
    let review = json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {"uid": "u-stale", "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "namespace": "payments", "name": "p", "operation": "CREATE",
            "object": {"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": "p", "namespace": "payments",
                    "labels": {"residencyguard.io/data-class": "personal"}},
                "spec": {"hostNetwork": true, "containers": [{"name": "c", "image": "i"}]}}}
    });
    let request = Request::post("/validate/workloads")
        .header("content-type", "application/json")
        .body(axum::body::Body::from(
            serde_json::to_vec(&review).expect("json"),
        ))
        .expect("request");
    let response = tower::ServiceExt::oneshot(
        residency_guard::webhook::server::webhook_router(app.clone()),
        request,
    )
    .await
    .expect("response");
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .expect("body");
    let out: Value = serde_json::from_slice(&bytes).expect("an AdmissionReview");
    assert_eq!(out["response"]["uid"], "u-stale");
    assert_eq!(out["response"]["allowed"], false, "{out}");
    assert_eq!(out["response"]["status"]["code"], 503, "{out}");
    let message = out["response"]["status"]["message"]
        .as_str()
        .unwrap_or_default();
    assert!(message.contains("stale"), "{message}");

    // The watch comes back: ready again.
    failing.store(false, Ordering::SeqCst);
    let deadline = Instant::now() + Duration::from_secs(40);
    while !state.ready() {
        assert!(
            Instant::now() < deadline,
            "not ready again: {:?}",
            state.not_ready_because()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    server.abort();
}

/// A watch that keeps failing stays stale across its retries: a retry
/// starting over (the watcher's `Init`, emitted before it lists) is no
/// proof that the watch works, so it must not restart the staleness clock.
/// With the clock restarted on every retry, a watch retried more often than
/// `stale_after` (the backoff tops out at 16 s, the default threshold is
/// 30 s) would never count as stale.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_watch_stays_stale_across_its_retries() {
    use std::sync::atomic::Ordering;

    // Longer than the first retries (0.5 s, 0.5 s, 1 s, 2 s after failures).
    let (state, failing, server) =
        ready_state_losing_networkpolicies(Duration::from_millis(1500)).await;

    failing.store(true, Ordering::SeqCst);
    wait_for("the operator to stop being ready", || !state.ready()).await;
    // Through the next retries (the fourth comes 2 s after the third), it
    // stays not ready.
    let until = Instant::now() + Duration::from_secs(4);
    while Instant::now() < until {
        assert!(
            !state.ready(),
            "ready again while the watch still fails: a retry restarted the staleness clock"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    server.abort();
}
