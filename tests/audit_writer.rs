//! The audit writer against a mocked API server (a kube `Client` over
//! `tower_test::mock::pair`), asserting every request it makes: idempotent
//! writes, no write when nothing changed, cleanup, rate limits, and writes on
//! the leader only.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response, StatusCode};
use jiff::Timestamp;
use kube::Client;
use kube::client::Body;
use residency_guard::api::ResidencyPolicy;
use residency_guard::audit::leader::{Elector, LeaseConfig};
use residency_guard::audit::metrics::AuditMetrics;
use residency_guard::audit::plan::{
    AuditPlan, EventKey, ObjectRef, PlannedEvent, PlannedReport, PlannedStatus, ReportResult,
    ResultKind,
};
use residency_guard::audit::writer::{Writer, WriterConfig, event_name};
use residency_guard::audit::{AuditConfig, run};
use residency_guard::engine::{Code, WorkloadKind};
use residency_guard::state::{Inventory, WorkloadKey};
use serde_json::{Value, json};
use tokio::sync::watch;

type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

fn mock() -> (Client, Handle) {
    let (svc, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    (Client::new(svc, "default"), handle)
}

fn now() -> Timestamp {
    "2026-06-01T00:00:00Z".parse().unwrap()
}

fn json_response(status: u16, body: &Value) -> Response<Body> {
    Response::builder()
        .status(StatusCode::from_u16(status).unwrap())
        .header("content-type", "application/json")
        .body(Body::from(serde_json::to_vec(body).unwrap()))
        .unwrap()
}

fn status_error(code: u16, reason: &str) -> Response<Body> {
    json_response(
        code,
        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "reason": reason, "message": reason, "code": code}),
    )
}

fn empty_list(kind: &str) -> Value {
    json!({"apiVersion": "wgpolicyk8s.io/v1alpha2", "kind": kind, "metadata": {"resourceVersion": "1"}, "items": []})
}

fn policy_json(name: &str) -> Value {
    json!({"apiVersion": "residencyguard.io/v1alpha1", "kind": "ResidencyPolicy",
           "metadata": {"name": name, "generation": 3, "resourceVersion": "7"},
           "spec": {"dataClasses": ["personal"]}})
}

/// One request as seen by the mock server.
#[derive(Debug)]
struct Seen {
    method: String,
    path: String,
    query: String,
    body: Value,
}

async fn next(handle: &mut Handle) -> (Seen, tower_test::mock::SendResponse<Response<Body>>) {
    let (req, send) = tokio::time::timeout(Duration::from_secs(5), handle.next_request())
        .await
        .expect("expected a request")
        .expect("client gone");
    let method = req.method().to_string();
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or_default().to_string();
    let bytes = req.into_body().collect_bytes().await.unwrap();
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap()
    };
    (
        Seen {
            method,
            path,
            query,
            body,
        },
        send,
    )
}

/// Nothing more reaches the server within a short while.
async fn assert_quiet(handle: &mut Handle) {
    let got = tokio::time::timeout(Duration::from_millis(300), handle.next_request()).await;
    if let Ok(Some((req, _))) = got {
        panic!("unexpected request {} {}", req.method(), req.uri());
    }
}

fn status(violations: i64) -> PlannedStatus {
    PlannedStatus {
        observed_generation: Some(3),
        ready: true,
        reason: "Evaluated".into(),
        message: format!(
            "2 governed workloads and pods, {violations} out of policy (action Audit)"
        ),
        violations,
        top_offenders: Vec::new(),
    }
}

fn bad_key() -> WorkloadKey {
    WorkloadKey {
        kind: WorkloadKind::Deployment,
        namespace: "app".into(),
        name: "bad".into(),
    }
}

fn sample_plan() -> AuditPlan {
    let mut plan = AuditPlan::default();
    plan.statuses.insert("personal-mainland".into(), status(1));
    let key = EventKey {
        object: bad_key(),
        policy: "personal-mainland".into(),
        code: Code::PlacementNotGuaranteed,
    };
    plan.events.insert(
        key,
        PlannedEvent {
            regarding: ObjectRef::workload(&bad_key()),
            related: None,
            reason: "PlacementNotGuaranteed".into(),
            note: "Deployment app/bad carries personal information ...".into(),
            policy: "personal-mainland".into(),
        },
    );
    plan.reports.insert(
        "app".into(),
        PlannedReport {
            results: vec![ReportResult {
                policy: "personal-mainland".into(),
                rule: "PlacementNotGuaranteed".into(),
                result: ResultKind::Fail,
                severity: "medium",
                message: "Deployment app/bad ...".into(),
                resources: vec![ObjectRef::workload(&bad_key())],
                properties: BTreeMap::new(),
            }],
            truncated: 0,
        },
    );
    plan
}

fn observed() -> BTreeMap<String, ResidencyPolicy> {
    BTreeMap::from([(
        "personal-mainland".to_string(),
        serde_json::from_value(policy_json("personal-mainland")).unwrap(),
    )])
}

fn writer(client: Client) -> Writer {
    Writer::new(client, WriterConfig::default(), AuditMetrics::new())
}

/// Serve the two seed LISTs with no existing reports.
async fn serve_seed(handle: &mut Handle, existing_ns: Option<&str>) {
    let (seen, send) = next(handle).await;
    assert_eq!(seen.method, "GET");
    assert_eq!(seen.path, "/apis/wgpolicyk8s.io/v1alpha2/policyreports");
    assert!(
        seen.query
            .contains("labelSelector=app.kubernetes.io%2Fmanaged-by%3Dresidency-guard"),
        "{}",
        seen.query
    );
    let mut list = empty_list("PolicyReportList");
    if let Some(ns) = existing_ns {
        list["items"] = json!([{"apiVersion": "wgpolicyk8s.io/v1alpha2", "kind": "PolicyReport",
            "metadata": {"name": "residency-guard", "namespace": ns}}]);
    }
    send.send_response(json_response(200, &list));
    let (seen, send) = next(handle).await;
    assert_eq!(
        seen.path,
        "/apis/wgpolicyk8s.io/v1alpha2/clusterpolicyreports"
    );
    send.send_response(json_response(200, &empty_list("ClusterPolicyReportList")));
}

#[tokio::test]
async fn first_pass_writes_status_report_and_event_then_nothing() {
    let (client, mut handle) = mock();
    let server = tokio::spawn(async move {
        serve_seed(&mut handle, None).await;

        let (seen, send) = next(&mut handle).await;
        assert_eq!(seen.method, "PATCH");
        assert_eq!(
            seen.path,
            "/apis/residencyguard.io/v1alpha1/residencypolicies/personal-mainland/status"
        );
        let st = &seen.body["status"];
        assert_eq!(st["observedGeneration"], 3);
        assert_eq!(st["violations"], 1);
        assert_eq!(st["lastEvaluated"], "2026-06-01T00:00:00Z");
        assert_eq!(st["conditions"][0]["type"], "Ready");
        assert_eq!(st["conditions"][0]["status"], "True");
        assert_eq!(st["conditions"][0]["reason"], "Evaluated");
        assert_eq!(
            st["conditions"][0]["lastTransitionTime"],
            "2026-06-01T00:00:00Z"
        );
        assert_eq!(
            st["topOffenders"],
            json!([]),
            "an empty list must clear the old one"
        );
        send.send_response(json_response(200, &policy_json("personal-mainland")));

        let (seen, send) = next(&mut handle).await;
        assert_eq!(seen.method, "PATCH");
        assert_eq!(
            seen.path,
            "/apis/wgpolicyk8s.io/v1alpha2/namespaces/app/policyreports/residency-guard"
        );
        assert!(
            seen.query.contains("fieldManager=residency-guard"),
            "{}",
            seen.query
        );
        assert!(seen.query.contains("force=true"), "{}", seen.query);
        assert_eq!(seen.body["kind"], "PolicyReport");
        assert_eq!(seen.body["results"][0]["rule"], "PlacementNotGuaranteed");
        assert_eq!(seen.body["results"][0]["source"], "residency-guard");
        let echo = seen.body.clone();
        send.send_response(json_response(200, &echo));

        let (seen, send) = next(&mut handle).await;
        assert_eq!(seen.method, "POST");
        assert_eq!(seen.path, "/apis/events.k8s.io/v1/namespaces/app/events");
        assert_eq!(seen.body["reason"], "PlacementNotGuaranteed");
        assert_eq!(seen.body["type"], "Warning");
        assert_eq!(seen.body["action"], "Audit");
        assert_eq!(seen.body["reportingController"], "residencyguard.io/audit");
        assert_eq!(seen.body["regarding"]["kind"], "Deployment");
        assert_eq!(seen.body["regarding"]["name"], "bad");
        assert!(
            seen.body["metadata"]["name"]
                .as_str()
                .unwrap()
                .starts_with("bad.rg-")
        );
        let echo = seen.body.clone();
        send.send_response(json_response(201, &echo));

        // The second apply of the same plan makes no request at all.
        assert_quiet(&mut handle).await;
    });
    let mut w = writer(client);
    let plan = sample_plan();
    let stats = w.apply(&plan, &observed(), now()).await;
    assert_eq!((stats.writes, stats.errors), (3, 0));
    let later: Timestamp = "2026-06-01T00:05:00Z".parse().unwrap();
    let stats = w.apply(&plan, &observed(), later).await;
    assert_eq!(stats.writes, 0);
    server.await.unwrap();
}

#[tokio::test]
async fn status_already_in_the_api_is_not_rewritten_until_last_evaluated_is_stale() {
    let (client, mut handle) = mock();
    let mut pol = policy_json("personal-mainland");
    pol["status"] = json!({
        "observedGeneration": 3, "violations": 1, "lastEvaluated": "2026-05-31T23:58:00Z",
        "conditions": [{"type": "Ready", "status": "True", "reason": "Evaluated",
            "message": "2 governed workloads and pods, 1 out of policy (action Audit)",
            "lastTransitionTime": "2026-05-01T00:00:00Z"}]
    });
    let observed = BTreeMap::from([(
        "personal-mainland".to_string(),
        serde_json::from_value::<ResidencyPolicy>(pol.clone()).unwrap(),
    )]);
    let mut plan = AuditPlan::default();
    plan.statuses.insert("personal-mainland".into(), status(1));
    let server = tokio::spawn(async move {
        serve_seed(&mut handle, None).await;
        // (The first apply makes no write: asserted on the client side.)
        // 10 minutes later lastEvaluated is due; the transition time is kept.
        let (seen, send) = next(&mut handle).await;
        assert_eq!(seen.method, "PATCH");
        assert_eq!(seen.body["status"]["lastEvaluated"], "2026-06-01T00:10:00Z");
        assert_eq!(
            seen.body["status"]["conditions"][0]["lastTransitionTime"],
            "2026-05-01T00:00:00Z"
        );
        send.send_response(json_response(200, &pol));
        assert_quiet(&mut handle).await;
    });
    let mut w = writer(client);
    assert_eq!(w.apply(&plan, &observed, now()).await.writes, 0);
    let due: Timestamp = "2026-06-01T00:10:00Z".parse().unwrap();
    assert_eq!(w.apply(&plan, &observed, due).await.writes, 1);
    // Written just now: nothing more.
    assert_eq!(w.apply(&plan, &observed, due).await.writes, 0);
    server.await.unwrap();
}

#[tokio::test]
async fn reports_without_findings_are_deleted_including_a_previous_leaders() {
    let (client, mut handle) = mock();
    let server = tokio::spawn(async move {
        // A previous leader left a report in `old`.
        serve_seed(&mut handle, Some("old")).await;
        let (seen, send) = next(&mut handle).await;
        assert_eq!(seen.method, "DELETE");
        assert_eq!(
            seen.path,
            "/apis/wgpolicyk8s.io/v1alpha2/namespaces/old/policyreports/residency-guard"
        );
        send.send_response(json_response(
            200,
            &json!({"kind": "Status", "apiVersion": "v1", "status": "Success", "metadata": {}}),
        ));
        assert_quiet(&mut handle).await;
    });
    let mut w = writer(client);
    let stats = w
        .apply(&AuditPlan::default(), &BTreeMap::new(), now())
        .await;
    assert_eq!(stats.writes, 1);
    assert_eq!(
        w.apply(&AuditPlan::default(), &BTreeMap::new(), now())
            .await
            .writes,
        0
    );
    server.await.unwrap();
}

#[tokio::test]
async fn an_event_that_exists_is_not_created_again() {
    let (client, mut handle) = mock();
    let mut plan = sample_plan();
    plan.statuses.clear();
    plan.reports.clear();
    let server = tokio::spawn(async move {
        serve_seed(&mut handle, None).await;
        let (seen, send) = next(&mut handle).await;
        assert_eq!(seen.method, "POST");
        send.send_response(status_error(409, "AlreadyExists"));
        assert_quiet(&mut handle).await;
    });
    let mut w = writer(client);
    let stats = w.apply(&plan, &BTreeMap::new(), now()).await;
    assert_eq!((stats.writes, stats.errors), (1, 0));
    assert_eq!(w.apply(&plan, &BTreeMap::new(), now()).await.writes, 0);
    server.await.unwrap();
}

#[tokio::test]
async fn missing_policy_report_crd_disables_reports_only() {
    let (client, mut handle) = mock();
    let mut plan = sample_plan();
    plan.statuses.clear();
    let server = tokio::spawn(async move {
        let (seen, send) = next(&mut handle).await;
        assert_eq!(seen.path, "/apis/wgpolicyk8s.io/v1alpha2/policyreports");
        send.send_response(status_error(404, "NotFound"));
        // No report write; the Event still goes out.
        let (seen, send) = next(&mut handle).await;
        assert_eq!(seen.method, "POST");
        assert_eq!(seen.path, "/apis/events.k8s.io/v1/namespaces/app/events");
        let echo = seen.body.clone();
        send.send_response(json_response(201, &echo));
        assert_quiet(&mut handle).await;
    });
    let mut w = writer(client);
    assert_eq!(w.apply(&plan, &BTreeMap::new(), now()).await.writes, 1);
    server.await.unwrap();
}

#[tokio::test]
async fn writes_beyond_the_budget_wait_for_the_next_pass() {
    let (client, mut handle) = mock();
    let mut plan = AuditPlan::default();
    plan.statuses.insert("a".into(), status(0));
    plan.statuses.insert("b".into(), status(0));
    let server = tokio::spawn(async move {
        serve_seed(&mut handle, None).await;
        for name in ["a", "b"] {
            let (seen, send) = next(&mut handle).await;
            assert_eq!(
                seen.path,
                format!("/apis/residencyguard.io/v1alpha1/residencypolicies/{name}/status")
            );
            send.send_response(json_response(200, &policy_json(name)));
        }
        assert_quiet(&mut handle).await;
    });
    let cfg = WriterConfig {
        max_writes_per_pass: 1,
        ..WriterConfig::default()
    };
    let mut w = Writer::new(client, cfg, AuditMetrics::new());
    let s1 = w.apply(&plan, &BTreeMap::new(), now()).await;
    assert_eq!((s1.writes, s1.deferred), (1, 1));
    let s2 = w.apply(&plan, &BTreeMap::new(), now()).await;
    assert_eq!((s2.writes, s2.deferred), (1, 0));
    assert_eq!(w.apply(&plan, &BTreeMap::new(), now()).await.writes, 0);
    server.await.unwrap();
}

#[test]
fn event_names_are_deterministic_and_valid() {
    let key = EventKey {
        object: bad_key(),
        policy: "personal-mainland".into(),
        code: Code::PlacementNotGuaranteed,
    };
    let a = event_name(&key);
    assert_eq!(a, event_name(&key.clone()));
    assert!(
        a.starts_with("bad.rg-") && a.len() == "bad.rg-".len() + 16,
        "{a}"
    );
    let other = EventKey {
        code: Code::HostNetwork,
        ..key
    };
    assert_ne!(a, event_name(&other));
}

fn fixed_inventory() -> Arc<Inventory> {
    use residency_guard::engine::{AddressSpace, Catalogue, Snapshot};
    let mut snapshot = Snapshot::new(Catalogue::builtin().clone(), AddressSpace::builtin());
    let policy: ResidencyPolicy = serde_json::from_value(policy_json("personal-mainland")).unwrap();
    snapshot.add_policy(&policy, now()).unwrap();
    snapshot.set_nodes(Vec::new());
    Arc::new(Inventory {
        snapshot: Arc::new(snapshot),
        policies: BTreeMap::from([("personal-mainland".to_string(), policy)]),
        synced: true,
        ..Inventory::default()
    })
}

#[tokio::test]
async fn only_the_leader_writes() {
    let (client, mut handle) = mock();
    let (_inv_tx, inv_rx) = watch::channel(fixed_inventory());
    let (lead_tx, lead_rx) = watch::channel(false);
    let cfg = AuditConfig {
        debounce: Duration::from_millis(10),
        clock: Arc::new(now),
        ..AuditConfig::default()
    };
    let task = tokio::spawn(run(client, inv_rx, None, lead_rx, cfg, AuditMetrics::new()));

    // A follower judges but never talks to the API.
    assert_quiet(&mut handle).await;

    // Elected: it seeds and writes the status.
    lead_tx.send(true).unwrap();
    serve_seed(&mut handle, None).await;
    let (seen, send) = next(&mut handle).await;
    assert_eq!(seen.method, "PATCH");
    assert_eq!(seen.body["status"]["violations"], 0);
    send.send_response(json_response(200, &policy_json("personal-mainland")));
    assert_quiet(&mut handle).await;

    // Demoted, then elected again: it forgets what it wrote and re-seeds.
    lead_tx.send(false).unwrap();
    assert_quiet(&mut handle).await;
    lead_tx.send(true).unwrap();
    serve_seed(&mut handle, None).await;
    let (seen, send) = next(&mut handle).await;
    assert_eq!(seen.method, "PATCH");
    send.send_response(json_response(200, &policy_json("personal-mainland")));
    assert_quiet(&mut handle).await;
    task.abort();
}

#[tokio::test]
async fn elector_creates_a_missing_lease_and_respects_a_live_holder() {
    let (client, mut handle) = mock();
    let cfg = LeaseConfig::new("residency-guard", "pod-a");
    let server = tokio::spawn(async move {
        let (seen, send) = next(&mut handle).await;
        assert_eq!(seen.method, "GET");
        assert_eq!(
            seen.path,
            "/apis/coordination.k8s.io/v1/namespaces/residency-guard/leases/residency-guard-audit"
        );
        send.send_response(status_error(404, "NotFound"));
        let (seen, send) = next(&mut handle).await;
        assert_eq!(seen.method, "POST");
        assert_eq!(seen.body["spec"]["holderIdentity"], "pod-a");
        assert_eq!(seen.body["spec"]["leaseDurationSeconds"], 15);
        let echo = seen.body.clone();
        send.send_response(json_response(201, &echo));

        // Someone else holds a fresh lease: stay a follower, write nothing.
        let (seen, send) = next(&mut handle).await;
        assert_eq!(seen.method, "GET");
        send.send_response(json_response(200, &json!({
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": "residency-guard-audit", "namespace": "residency-guard", "resourceVersion": "9"},
            "spec": {"holderIdentity": "pod-b", "leaseDurationSeconds": 15, "renewTime": "2026-06-01T00:00:00.000000Z"}
        })));
        assert_quiet(&mut handle).await;
    });
    let api = kube::Api::namespaced(client, "residency-guard");
    let mut elector = Elector::default();
    assert!(
        elector
            .try_acquire_or_renew(&api, &cfg, now())
            .await
            .unwrap()
    );
    let mut other = Elector::default();
    assert!(!other.try_acquire_or_renew(&api, &cfg, now()).await.unwrap());
    server.await.unwrap();
}
