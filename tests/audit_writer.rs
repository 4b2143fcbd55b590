//! The audit writer against a mocked API server (a kube `Client` over
//! `tower_test::mock::pair`), asserting every request it makes: idempotent
//! writes, no write when nothing changed, cleanup, rate limits, and writes on
//! the leader only, and leader election on a Lease (kube-lease-manager) against
//! a fake Lease API.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Request, Response, StatusCode};
use jiff::Timestamp;
use kube::Client;
use kube::client::Body;
use residency_guard::api::ResidencyPolicy;
use residency_guard::audit::leader::{self, LeaseConfig};
use residency_guard::audit::metrics::AuditMetrics;
use residency_guard::audit::plan::{
    AuditPlan, EventKey, ObjectRef, PlannedEvent, PlannedStatus, ReportResult, ResultKind,
    fit_report,
};
use residency_guard::audit::writer::{ReportsKind, Writer, WriterConfig, event_name};
use residency_guard::audit::{AuditConfig, run};
use residency_guard::engine::{Code, Lang, WorkloadKind};
use residency_guard::state::{Inventory, WorkloadKey};
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};

type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;
type Respond = tower_test::mock::SendResponse<Response<Body>>;

/// Where the test takes the client's requests from: the mock itself, or what
/// `route_leases` passes on (everything but the Lease).
trait Server {
    async fn next_req(&mut self) -> Option<(Request<Body>, Respond)>;
}

impl Server for Handle {
    async fn next_req(&mut self) -> Option<(Request<Body>, Respond)> {
        self.next_request().await
    }
}

impl Server for mpsc::UnboundedReceiver<(Request<Body>, Respond)> {
    async fn next_req(&mut self) -> Option<(Request<Body>, Respond)> {
        self.recv().await
    }
}

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
#[derive(Clone, Debug)]
struct Seen {
    method: String,
    path: String,
    query: String,
    content_type: String,
    body: Value,
}

async fn seen_of(req: Request<Body>) -> Seen {
    let method = req.method().to_string();
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or_default().to_string();
    let content_type = req
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let bytes = req.into_body().collect_bytes().await.unwrap();
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap()
    };
    Seen {
        method,
        path,
        query,
        content_type,
        body,
    }
}

async fn next<S: Server>(server: &mut S) -> (Seen, Respond) {
    let (req, send) = tokio::time::timeout(Duration::from_secs(5), server.next_req())
        .await
        .expect("expected a request")
        .expect("client gone");
    (seen_of(req).await, send)
}

/// Nothing more reaches the server within a short while.
async fn assert_quiet<S: Server>(server: &mut S) {
    assert_quiet_for(server, Duration::from_millis(300)).await;
}

async fn assert_quiet_for<S: Server>(server: &mut S, within: Duration) {
    let got = tokio::time::timeout(within, server.next_req()).await;
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
            regarding: ObjectRef {
                uid: Some("0b5e-bad-uid".into()),
                ..ObjectRef::workload(&bad_key())
            },
            related: None,
            reason: "PlacementNotGuaranteed".into(),
            note: "Deployment app/bad carries personal information ...".into(),
            policy: "personal-mainland".into(),
        },
    );
    plan.reports.insert(
        "app".into(),
        fit_report(
            vec![ReportResult {
                policy: "personal-mainland".into(),
                rule: "PlacementNotGuaranteed".into(),
                result: ResultKind::Fail,
                severity: "medium",
                message: "Deployment app/bad ...".into(),
                resources: vec![ObjectRef::workload(&bad_key())],
                properties: BTreeMap::new(),
            }],
            1024 * 1024,
            Lang::En,
        ),
    );
    plan
}

fn observed() -> BTreeMap<String, Arc<ResidencyPolicy>> {
    BTreeMap::from([(
        "personal-mainland".to_string(),
        Arc::new(serde_json::from_value(policy_json("personal-mainland")).unwrap()),
    )])
}

/// The writer of the PolicyReport-only tests (`reports.kind:
/// policyReport`): no OpenReports request among those asserted.
fn policy_reports_only() -> WriterConfig {
    WriterConfig {
        reports_kind: ReportsKind::PolicyReport,
        ..WriterConfig::default()
    }
}

fn writer(client: Client) -> Writer {
    Writer::new(client, policy_reports_only(), AuditMetrics::new())
}

/// Serve the two seed LISTs with no existing reports.
async fn serve_seed<S: Server>(handle: &mut S, existing_ns: Option<&str>) {
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
        assert_eq!(seen.body["regarding"]["uid"], "0b5e-bad-uid");
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
        Arc::new(serde_json::from_value::<ResidencyPolicy>(pol.clone()).unwrap()),
    )]);
    let mut plan = AuditPlan::default();
    plan.statuses.insert("personal-mainland".into(), status(1));
    let server = tokio::spawn(async move {
        serve_seed(&mut handle, None).await;
        // (The first apply makes no write: asserted on the client side.)
        // 10 minutes later the reports are listed again (none exist), and
        // lastEvaluated is due; the transition time is kept.
        serve_recheck(&mut handle, None).await;
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
async fn policy_report_crds_installed_after_start_are_picked_up_without_a_restart() {
    let (client, mut handle) = mock();
    let mut plan = sample_plan();
    plan.statuses.clear();
    plan.events.clear();
    let server = tokio::spawn(async move {
        // Pass 1: no PolicyReport API.
        let (seen, send) = next(&mut handle).await;
        assert_eq!(seen.path, "/apis/wgpolicyk8s.io/v1alpha2/policyreports");
        send.send_response(status_error(404, "NotFound"));
        assert_quiet(&mut handle).await;
        // Pass 2, after the probe interval: the CRDs are there now; the
        // report is written.
        serve_seed(&mut handle, None).await;
        let (seen, send) = next(&mut handle).await;
        assert_eq!(seen.method, "PATCH");
        assert_eq!(
            seen.path,
            "/apis/wgpolicyk8s.io/v1alpha2/namespaces/app/policyreports/residency-guard"
        );
        let echo = seen.body.clone();
        send.send_response(json_response(200, &echo));
        assert_quiet(&mut handle).await;
    });
    let cfg = WriterConfig {
        reports_probe_every: Duration::from_millis(100),
        ..policy_reports_only()
    };
    let mut w = Writer::new(client, cfg, AuditMetrics::new());
    let first = w.apply(&plan, &BTreeMap::new(), now()).await;
    assert!(
        first.reports_missing,
        "the run loop must be told to come back"
    );
    assert_eq!(first.writes, 0);
    tokio::time::sleep(Duration::from_millis(400)).await;
    let second = w.apply(&plan, &BTreeMap::new(), now()).await;
    assert!(!second.reports_missing);
    assert_eq!(second.writes, 1);
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
        ..policy_reports_only()
    };
    let mut w = Writer::new(client, cfg, AuditMetrics::new());
    let s1 = w.apply(&plan, &BTreeMap::new(), now()).await;
    assert_eq!((s1.writes, s1.deferred), (1, 1));
    let s2 = w.apply(&plan, &BTreeMap::new(), now()).await;
    assert_eq!((s2.writes, s2.deferred), (1, 0));
    assert_eq!(w.apply(&plan, &BTreeMap::new(), now()).await.writes, 0);
    server.await.unwrap();
}

fn at(t: &str) -> Timestamp {
    t.parse().unwrap()
}

/// Serve the re-check LISTs: the namespaces whose report still exists.
async fn serve_recheck<S: Server>(handle: &mut S, existing_ns: Option<&str>) {
    serve_seed(handle, existing_ns).await;
}

/// A tenant deletes the PolicyReport of a namespace whose finding persists:
/// the writer lists the reports again once per re-check period (and when
/// the audit loop asks, at every full pass) and applies the missing one.
#[tokio::test]
async fn a_deleted_policy_report_is_written_again_within_one_recheck_period() {
    let (client, mut handle) = mock();
    let mut plan = sample_plan();
    plan.statuses.clear();
    plan.events.clear();
    let report_path = "/apis/wgpolicyk8s.io/v1alpha2/namespaces/app/policyreports/residency-guard";
    let server = tokio::spawn(async move {
        serve_seed(&mut handle, None).await;
        let (seen, send) = next(&mut handle).await;
        assert_eq!(
            (seen.method.as_str(), seen.path.as_str()),
            ("PATCH", report_path)
        );
        let echo = seen.body.clone();
        send.send_response(json_response(200, &echo));
        // 00:05, asked by the audit loop: the report is still there.
        serve_recheck(&mut handle, Some("app")).await;
        // 00:15, a period later: it is gone, and is applied again.
        serve_recheck(&mut handle, None).await;
        let (seen, send) = next(&mut handle).await;
        assert_eq!(
            (seen.method.as_str(), seen.path.as_str()),
            ("PATCH", report_path)
        );
        assert_eq!(seen.body["results"][0]["rule"], "PlacementNotGuaranteed");
        let echo = seen.body.clone();
        send.send_response(json_response(200, &echo));
        assert_quiet(&mut handle).await;
    });
    let mut w = writer(client);
    assert_eq!(w.apply(&plan, &BTreeMap::new(), now()).await.writes, 1);
    // Within the period, nothing is listed or written.
    let s = w
        .apply(&plan, &BTreeMap::new(), at("2026-06-01T00:05:00Z"))
        .await;
    assert_eq!(s.writes, 0);
    w.recheck_reports();
    let s = w
        .apply(&plan, &BTreeMap::new(), at("2026-06-01T00:05:00Z"))
        .await;
    assert_eq!(s.writes, 0, "the report still exists");
    let s = w
        .apply(&plan, &BTreeMap::new(), at("2026-06-01T00:14:00Z"))
        .await;
    assert_eq!(s.writes, 0, "not a period since the last check");
    let s = w
        .apply(&plan, &BTreeMap::new(), at("2026-06-01T00:15:00Z"))
        .await;
    assert_eq!(s.writes, 1, "the deleted report is written again");
    assert_eq!(
        w.apply(&plan, &BTreeMap::new(), at("2026-06-01T00:16:00Z"))
            .await
            .writes,
        0
    );
    server.await.unwrap();
}

/// While a finding persists its Event is refreshed every 30 minutes as an
/// event series (count, lastObservedTime), which renews its time to live;
/// one that expired or was deleted is created again.
#[tokio::test]
async fn a_persisting_findings_event_is_refreshed_and_created_again_once_expired() {
    let (client, mut handle) = mock();
    let mut plan = sample_plan();
    plan.statuses.clear();
    plan.reports.clear();
    let events = "/apis/events.k8s.io/v1/namespaces/app/events";
    let server = tokio::spawn(async move {
        serve_seed(&mut handle, None).await;
        let (seen, send) = next(&mut handle).await;
        assert_eq!((seen.method.as_str(), seen.path.as_str()), ("POST", events));
        let name = seen.body["metadata"]["name"].as_str().unwrap().to_string();
        let echo = seen.body.clone();
        send.send_response(json_response(201, &echo));
        // 00:30: refreshed as a series.
        let (seen, send) = next(&mut handle).await;
        assert_eq!(seen.method, "PATCH");
        assert_eq!(seen.path, format!("{events}/{name}"));
        assert_eq!(seen.content_type, "application/merge-patch+json");
        assert_eq!(seen.body["series"]["count"], 2);
        assert_eq!(
            seen.body["series"]["lastObservedTime"],
            "2026-06-01T00:30:00.000000Z"
        );
        send.send_response(json_response(200, &echo));
        // 01:00: refreshed again, but it expired meanwhile: created anew.
        let (seen, send) = next(&mut handle).await;
        assert_eq!(seen.method, "PATCH");
        assert_eq!(seen.body["series"]["count"], 3);
        send.send_response(status_error(404, "NotFound"));
        let (seen, send) = next(&mut handle).await;
        assert_eq!((seen.method.as_str(), seen.path.as_str()), ("POST", events));
        assert_eq!(seen.body["metadata"]["name"], name.as_str());
        assert_eq!(seen.body["reason"], "PlacementNotGuaranteed");
        let echo = seen.body.clone();
        send.send_response(json_response(201, &echo));
        assert_quiet(&mut handle).await;
    });
    let cfg = WriterConfig {
        reports_recheck_every: Duration::from_secs(24 * 3600),
        ..policy_reports_only()
    };
    let mut w = Writer::new(client, cfg, AuditMetrics::new());
    assert_eq!(w.apply(&plan, &BTreeMap::new(), now()).await.writes, 1);
    for (t, writes) in [
        ("2026-06-01T00:29:59Z", 0),
        ("2026-06-01T00:30:00Z", 1),
        ("2026-06-01T00:45:00Z", 0),
        ("2026-06-01T01:00:00Z", 1),
        ("2026-06-01T01:10:00Z", 0),
    ] {
        let s = w.apply(&plan, &BTreeMap::new(), at(t)).await;
        assert_eq!((t, s.writes, s.errors), (t, writes, 0));
    }
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
        policies: Arc::new(BTreeMap::from([(
            "personal-mainland".to_string(),
            Arc::new(policy),
        )])),
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
        writer: policy_reports_only(),
        ..AuditConfig::default()
    };
    let metrics = AuditMetrics::new();
    let task = tokio::spawn(run(client, inv_rx, lead_rx, cfg, metrics.clone()));

    // A follower judges but never talks to the API, nor plans.
    assert_quiet(&mut handle).await;
    assert_eq!(metrics.last_plan.get(), 0, "a follower has not planned");

    // Elected: it seeds and writes the status.
    lead_tx.send(true).unwrap();
    serve_seed(&mut handle, None).await;
    let (seen, send) = next(&mut handle).await;
    assert_eq!(seen.method, "PATCH");
    assert_eq!(seen.body["status"]["violations"], 0);
    send.send_response(json_response(200, &policy_json("personal-mainland")));
    assert_quiet(&mut handle).await;
    // What the "audit not planned" alert reads: the plan's time, once its
    // writes went through.
    assert_eq!(metrics.last_plan.get(), now().as_second());

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
async fn a_writer_stops_mid_pass_when_leadership_is_lost() {
    let (client, mut handle) = mock();
    let (lead_tx, lead_rx) = watch::channel(true);
    let server = tokio::spawn(async move {
        serve_seed(&mut handle, None).await;
        let (seen, send) = next(&mut handle).await;
        assert_eq!(seen.method, "PATCH");
        assert!(seen.path.ends_with("/status"), "{}", seen.path);
        // Leadership goes while the first write is in flight.
        lead_tx.send(false).unwrap();
        send.send_response(json_response(200, &policy_json("personal-mainland")));
        // The report and the Event of the same pass are not written.
        assert_quiet(&mut handle).await;
    });
    let mut w = writer(client).gated_by(lead_rx);
    let stats = w.apply(&sample_plan(), &observed(), now()).await;
    assert_eq!((stats.writes, stats.deferred, stats.errors), (1, 0, 0));
    server.await.unwrap();
}

// ---- Leader election against a fake Lease API -------------------------------

const LEASES: &str = "/apis/coordination.k8s.io/v1/namespaces/residency-guard/leases";
const LEASE: &str =
    "/apis/coordination.k8s.io/v1/namespaces/residency-guard/leases/residency-guard-audit";

/// One Lease as the API server would keep it; every request recorded.
#[derive(Default)]
struct FakeLeases {
    lease: Option<Value>,
    version: u64,
    requests: Vec<Seen>,
    /// PATCHes get no answer (the request hangs).
    hang_patches: bool,
}

fn micro_time(t: Timestamp) -> Value {
    serde_json::to_value(k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(t)).unwrap()
}

/// RFC 7386 merge (what a strategic merge patch amounts to for a Lease spec).
fn merge(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        (t, p) => *t = p.clone(),
    }
}

impl FakeLeases {
    fn held_by(holder: &str, renewed: Timestamp) -> FakeLeases {
        let mut fake = FakeLeases::default();
        fake.store(json!({
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": "residency-guard-audit"},
            "spec": {"holderIdentity": holder, "leaseDurationSeconds": 15,
                     "acquireTime": micro_time(renewed), "renewTime": micro_time(renewed)}
        }));
        fake
    }

    fn store(&mut self, mut lease: Value) -> Value {
        self.version += 1;
        lease["metadata"]["namespace"] = json!("residency-guard");
        lease["metadata"]["resourceVersion"] = json!(self.version.to_string());
        self.lease = Some(lease.clone());
        lease
    }

    fn holder(&self) -> Option<String> {
        self.lease.as_ref()?["spec"]["holderIdentity"]
            .as_str()
            .map(str::to_string)
    }

    /// `None`: leave the request hanging.
    fn serve(&mut self, seen: Seen) -> Option<Response<Body>> {
        self.requests.push(seen.clone());
        let not_found = || status_error(404, "NotFound");
        Some(match (seen.method.as_str(), seen.path.as_str()) {
            ("GET", LEASE) => match &self.lease {
                Some(l) => json_response(200, l),
                None => not_found(),
            },
            ("POST", LEASES) if self.lease.is_some() => status_error(409, "AlreadyExists"),
            ("POST", LEASES) => json_response(201, &self.store(seen.body)),
            ("PATCH", LEASE) if self.hang_patches => return None,
            ("PATCH", LEASE) => match self.lease.clone() {
                Some(mut l) => {
                    merge(&mut l, &seen.body);
                    json_response(200, &self.store(l))
                }
                None => not_found(),
            },
            _ => panic!("unexpected Lease request {} {}", seen.method, seen.path),
        })
    }
}

/// Serve the Lease from `fake`; pass every other request on to the test.
fn route_leases(
    mut handle: Handle,
    fake: Arc<Mutex<FakeLeases>>,
) -> mpsc::UnboundedReceiver<(Request<Body>, Respond)> {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut hanging = Vec::new();
        while let Some((req, send)) = handle.next_request().await {
            if req.uri().path().starts_with("/apis/coordination.k8s.io/") {
                let seen = seen_of(req).await;
                match fake.lock().unwrap().serve(seen) {
                    Some(response) => send.send_response(response),
                    None => hanging.push(send),
                }
            } else if tx.send((req, send)).is_err() {
                return;
            }
        }
    });
    rx
}

async fn wait_leading(rx: &mut watch::Receiver<bool>, leading: bool, within: Duration) {
    tokio::time::timeout(within, rx.wait_for(|l| *l == leading))
        .await
        .unwrap_or_else(|_| panic!("leading={leading} not seen within {within:?}"))
        .unwrap();
}

#[tokio::test]
async fn a_missing_lease_is_created_taken_as_the_pod_and_released_on_step_down() {
    let (client, handle) = mock();
    let fake = Arc::new(Mutex::new(FakeLeases::default()));
    let mut others = route_leases(handle, fake.clone());
    let (mut leading, election) =
        leader::elect(client, LeaseConfig::new("residency-guard", "pod-a"));
    assert!(!*leading.borrow(), "a follower until the Lease is taken");
    wait_leading(&mut leading, true, Duration::from_secs(5)).await;
    {
        let fake = fake.lock().unwrap();
        let r = &fake.requests;
        // Looked up, missing, created (AutoCreate), empty at first.
        assert_eq!((r[0].method.as_str(), r[0].path.as_str()), ("GET", LEASE));
        assert_eq!((r[1].method.as_str(), r[1].path.as_str()), ("POST", LEASES));
        assert_eq!(r[1].body["metadata"]["name"], "residency-guard-audit");
        assert_eq!(r[1].body["spec"], Value::Null);
        // Taken with a server-side apply in the pod's name.
        let take = r
            .iter()
            .find(|s| s.method == "PATCH" && s.content_type == "application/apply-patch+yaml")
            .expect("a server-side apply of the Lease");
        assert_eq!(take.path, LEASE);
        assert!(
            take.query.contains("fieldManager=kube-lease-manager-pod-a"),
            "{}",
            take.query
        );
        assert_eq!(take.body["spec"]["holderIdentity"], "pod-a");
        assert_eq!(take.body["spec"]["leaseDurationSeconds"], 15);
        // Only Lease requests, all of them for this one Lease.
        assert!(
            r.iter().all(|s| s.path == LEASE || s.path == LEASES),
            "{r:?}"
        );
        assert_eq!(fake.holder().as_deref(), Some("pod-a"));
        let spec = &fake.lease.as_ref().unwrap()["spec"];
        assert_eq!(spec["leaseDurationSeconds"], 15);
        assert_eq!(spec["leaseTransitions"], 1);
    }
    assert_quiet(&mut others).await;

    // SIGTERM: a follower first, then the Lease is free for the next leader.
    election.step_down(Duration::from_secs(5)).await;
    assert!(!*leading.borrow());
    let fake = fake.lock().unwrap();
    assert_eq!(fake.holder(), None, "released");
    let release = fake
        .requests
        .iter()
        .rev()
        .find(|s| s.method == "PATCH")
        .unwrap();
    assert_eq!(release.body["spec"]["holderIdentity"], Value::Null);
    assert!(
        release.body["spec"]
            .as_object()
            .unwrap()
            .contains_key("holderIdentity"),
        "the release clears the holder: {:?}",
        release.body
    );
}

#[tokio::test]
async fn a_follower_makes_no_writes_and_writes_once_it_takes_the_expired_lease() {
    let (client, handle) = mock();
    // pod-b holds the Lease; it expires in about 2 s unless pod-b renews it.
    let renewed = Timestamp::now() - jiff::SignedDuration::from_secs(13);
    let fake = Arc::new(Mutex::new(FakeLeases::held_by("pod-b", renewed)));
    let mut others = route_leases(handle, fake.clone());
    let (leading, election) =
        leader::elect(client.clone(), LeaseConfig::new("residency-guard", "pod-a"));
    let (_inv_tx, inv_rx) = watch::channel(fixed_inventory());
    let cfg = AuditConfig {
        debounce: Duration::from_millis(10),
        clock: Arc::new(now),
        writer: policy_reports_only(),
        ..AuditConfig::default()
    };
    let mut watch_leading = leading.clone();
    let task = tokio::spawn(run(client, inv_rx, leading, cfg, AuditMetrics::new()));

    // A follower: it judges, reads the Lease, and writes nothing.
    assert_quiet_for(&mut others, Duration::from_millis(1200)).await;
    assert!(!*watch_leading.borrow());
    {
        let fake = fake.lock().unwrap();
        assert_eq!(fake.holder().as_deref(), Some("pod-b"));
        assert!(
            fake.requests.iter().all(|s| s.method == "GET"),
            "{:?}",
            fake.requests
        );
    }

    // pod-b does not renew: pod-a frees the expired Lease, takes it, and the
    // writer starts (seed, then the status).
    serve_seed(&mut others, None).await;
    assert!(*watch_leading.borrow());
    {
        let fake = fake.lock().unwrap();
        assert_eq!(fake.holder().as_deref(), Some("pod-a"));
        let patches: Vec<&Seen> = fake
            .requests
            .iter()
            .filter(|s| s.method == "PATCH")
            .collect();
        // The forced release of pod-b's expired Lease comes before the take.
        assert_eq!(patches[0].body["spec"]["holderIdentity"], Value::Null);
        assert!(
            patches
                .iter()
                .any(|s| s.body["spec"]["holderIdentity"] == "pod-a")
        );
    }
    let (seen, send) = next(&mut others).await;
    assert_eq!(seen.method, "PATCH");
    assert_eq!(
        seen.path,
        "/apis/residencyguard.io/v1alpha1/residencypolicies/personal-mainland/status"
    );
    send.send_response(json_response(200, &policy_json("personal-mainland")));
    assert_quiet(&mut others).await;

    task.abort();
    let _ = task.await;
    election.step_down(Duration::from_secs(5)).await;
    wait_leading(&mut watch_leading, false, Duration::from_secs(1)).await;
    assert_eq!(fake.lock().unwrap().holder(), None);
}

#[tokio::test]
async fn a_leader_whose_renewal_hangs_steps_down_before_expiry_and_comes_back() {
    let (client, handle) = mock();
    let fake = Arc::new(Mutex::new(FakeLeases::default()));
    let _others = route_leases(handle, fake.clone());
    let cfg = LeaseConfig {
        duration_secs: 3,
        grace_secs: 2,
        request_timeout: Duration::from_millis(500),
        retry_min: Duration::from_millis(100),
        retry_max: Duration::from_millis(400),
        ..LeaseConfig::new("residency-guard", "pod-a")
    };
    let (mut leading, election) = leader::elect(client, cfg);
    wait_leading(&mut leading, true, Duration::from_secs(5)).await;
    let led = std::time::Instant::now();

    // Renewals (due 1 s after each renewal) now hang: the request deadline
    // fails it and the replica is a follower before the 3 s Lease expires.
    fake.lock().unwrap().hang_patches = true;
    wait_leading(&mut leading, false, Duration::from_secs(3)).await;
    assert!(
        led.elapsed() < Duration::from_millis(2900),
        "stepped down after {:?}",
        led.elapsed()
    );

    // No flapping back while Lease writes still hang, not even after the
    // Lease (still in this pod's name) expired.
    let led_again = tokio::time::timeout(Duration::from_secs(2), leading.wait_for(|l| *l))
        .await
        .is_ok();
    assert!(!led_again, "led again while the Lease could not be renewed");

    // The API answers again: the old claim is released, the Lease taken anew.
    fake.lock().unwrap().hang_patches = false;
    wait_leading(&mut leading, true, Duration::from_secs(5)).await;
    election.step_down(Duration::from_secs(5)).await;
    assert_eq!(fake.lock().unwrap().holder(), None);
}

/// pod-b releases a Lease it renewed a moment ago (SIGTERM): pod-a, a
/// follower, takes it within about a second (it reads the Lease every
/// 0.5 s), not when pod-b's term would have expired 15 s later.
#[tokio::test]
async fn a_follower_takes_a_released_lease_at_once() {
    let (client, handle) = mock();
    let fake = Arc::new(Mutex::new(FakeLeases::held_by("pod-b", Timestamp::now())));
    let _others = route_leases(handle, fake.clone());
    let (mut leading, election) =
        leader::elect(client, LeaseConfig::new("residency-guard", "pod-a"));
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert!(!*leading.borrow(), "took a Lease pod-b holds");

    // pod-b steps down: its release clears the holder.
    {
        let mut fake = fake.lock().unwrap();
        let mut lease = fake.lease.clone().unwrap();
        merge(&mut lease, &json!({"spec": {"holderIdentity": null}}));
        fake.store(lease);
    }
    let released = std::time::Instant::now();
    wait_leading(&mut leading, true, Duration::from_secs(3)).await;
    assert!(
        released.elapsed() < Duration::from_millis(1500),
        "took over after {:?}",
        released.elapsed()
    );
    assert_eq!(fake.lock().unwrap().holder().as_deref(), Some("pod-a"));
    election.step_down(Duration::from_secs(5)).await;
}

// --- report APIs (issue 26): auto, openReports, both ---------------------------

/// Serve the two seed LISTs of one report API: served (no report yet) or
/// not installed (404 on the first, and nothing more is asked of it).
async fn serve_api_seed<S: Server>(
    handle: &mut S,
    group_version: &str,
    plurals: (&str, &str),
    served: bool,
) {
    let (seen, send) = next(handle).await;
    assert_eq!(seen.method, "GET");
    assert_eq!(seen.path, format!("/apis/{group_version}/{}", plurals.0));
    assert!(
        seen.query
            .contains("labelSelector=app.kubernetes.io%2Fmanaged-by%3Dresidency-guard"),
        "{}",
        seen.query
    );
    if !served {
        send.send_response(status_error(404, "NotFound"));
        return;
    }
    send.send_response(json_response(200, &json!({"apiVersion": group_version, "kind": "List", "metadata": {"resourceVersion": "1"}, "items": []})));
    let (seen, send) = next(handle).await;
    assert_eq!(seen.path, format!("/apis/{group_version}/{}", plurals.1));
    send.send_response(json_response(200, &json!({"apiVersion": group_version, "kind": "List", "metadata": {"resourceVersion": "1"}, "items": []})));
}

const WG: (&str, (&str, &str)) = (
    "wgpolicyk8s.io/v1alpha2",
    ("policyreports", "clusterpolicyreports"),
);
const OR: (&str, (&str, &str)) = ("openreports.io/v1alpha1", ("reports", "clusterreports"));

/// Answer the report's server-side apply and return what was applied.
async fn serve_apply<S: Server>(handle: &mut S, path: &str) -> Value {
    let (seen, send) = next(handle).await;
    assert_eq!((seen.method.as_str(), seen.path.as_str()), ("PATCH", path));
    assert_eq!(seen.content_type, "application/apply-patch+yaml");
    assert!(
        seen.query.contains("fieldManager=residency-guard"),
        "{}",
        seen.query
    );
    let echo = seen.body.clone();
    send.send_response(json_response(200, &echo));
    seen.body
}

fn reports_only_plan() -> AuditPlan {
    let mut plan = sample_plan();
    plan.statuses.clear();
    plan.events.clear();
    plan
}

/// `auto` with only the PolicyReport CRDs installed writes PolicyReports;
/// once the OpenReports CRDs are installed, a probe finds them (without a
/// plan of its own) and the next pass writes the same results as a Report.
#[tokio::test]
async fn auto_writes_the_served_api_and_picks_up_open_reports_once_installed() {
    let (client, mut handle) = mock();
    let plan = reports_only_plan();
    let server = tokio::spawn(async move {
        serve_api_seed(&mut handle, WG.0, WG.1, true).await;
        serve_api_seed(&mut handle, OR.0, OR.1, false).await;
        let wg = serve_apply(
            &mut handle,
            "/apis/wgpolicyk8s.io/v1alpha2/namespaces/app/policyreports/residency-guard",
        )
        .await;
        // The first probe: still not installed.
        serve_api_seed(&mut handle, OR.0, OR.1, false).await;
        assert_quiet(&mut handle).await;
        // The second: installed now.
        serve_api_seed(&mut handle, OR.0, OR.1, true).await;
        let or = serve_apply(
            &mut handle,
            "/apis/openreports.io/v1alpha1/namespaces/app/reports/residency-guard",
        )
        .await;
        assert_eq!(or["kind"], "Report");
        assert_eq!(or["source"], "residency-guard");
        assert_eq!(or["results"], wg["results"]);
        assert_eq!(or["summary"], wg["summary"]);
        assert_eq!(or["metadata"], wg["metadata"]);
        assert_quiet(&mut handle).await;
    });
    let cfg = WriterConfig {
        reports_probe_every: Duration::from_millis(100),
        ..WriterConfig::default()
    };
    assert_eq!(cfg.reports_kind, ReportsKind::Auto, "auto is the default");
    let mut w = Writer::new(client, cfg, AuditMetrics::new());
    let first = w.apply(&plan, &BTreeMap::new(), now()).await;
    assert_eq!(first.writes, 1);
    assert!(first.reports_missing, "the run loop must keep probing");
    // Not due yet: no request.
    assert!(!w.probe_reports().await);
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert!(!w.probe_reports().await, "not installed yet");
    // (The server stays quiet for 300 ms meanwhile.)
    tokio::time::sleep(Duration::from_millis(450)).await;
    assert!(w.probe_reports().await, "installed now");
    let second = w.apply(&plan, &BTreeMap::new(), now()).await;
    assert_eq!(second.writes, 1, "only the Report is new");
    assert!(!second.reports_missing);
    assert_eq!(w.apply(&plan, &BTreeMap::new(), now()).await.writes, 0);
    server.await.unwrap();
}

/// `openReports` never asks the PolicyReport API anything (the chart grants
/// it no access to it): Reports and ClusterReports only, and cleanup of its
/// own Reports.
#[tokio::test]
async fn open_reports_only_never_touches_policy_reports() {
    let (client, mut handle) = mock();
    let mut plan = reports_only_plan();
    plan.cluster_report = plan.reports["app"].clone();
    let server = tokio::spawn(async move {
        serve_api_seed(&mut handle, OR.0, OR.1, true).await;
        let or = serve_apply(
            &mut handle,
            "/apis/openreports.io/v1alpha1/namespaces/app/reports/residency-guard",
        )
        .await;
        assert_eq!(or["apiVersion"], "openreports.io/v1alpha1");
        assert_eq!(or["results"][0]["rule"], "PlacementNotGuaranteed");
        assert_eq!(or["results"][0]["source"], "residency-guard");
        let cluster = serve_apply(
            &mut handle,
            "/apis/openreports.io/v1alpha1/clusterreports/residency-guard",
        )
        .await;
        assert_eq!(cluster["kind"], "ClusterReport");
        assert!(cluster["metadata"].get("namespace").is_none());
        // No findings left: both deleted.
        for path in [
            "/apis/openreports.io/v1alpha1/namespaces/app/reports/residency-guard",
            "/apis/openreports.io/v1alpha1/clusterreports/residency-guard",
        ] {
            let (seen, send) = next(&mut handle).await;
            assert_eq!((seen.method.as_str(), seen.path.as_str()), ("DELETE", path));
            send.send_response(json_response(
                200,
                &json!({"kind": "Status", "apiVersion": "v1", "status": "Success", "metadata": {}}),
            ));
        }
        assert_quiet(&mut handle).await;
    });
    let cfg = WriterConfig {
        reports_kind: ReportsKind::OpenReports,
        ..WriterConfig::default()
    };
    let mut w = Writer::new(client, cfg, AuditMetrics::new());
    let s = w.apply(&plan, &BTreeMap::new(), now()).await;
    assert_eq!((s.writes, s.errors, s.reports_missing), (2, 0, false));
    let s = w
        .apply(&AuditPlan::default(), &BTreeMap::new(), now())
        .await;
    assert_eq!(s.writes, 2);
    server.await.unwrap();
}

/// `both`: the same report in each API. When one API's CRDs are deleted
/// (its reports go with them) the writer notices at its next write, has
/// nothing to delete, and looks for it again.
#[tokio::test]
async fn both_writes_each_api_and_looks_again_for_one_that_vanishes() {
    let (client, mut handle) = mock();
    let plan = reports_only_plan();
    let mut changed = reports_only_plan();
    changed
        .reports
        .insert("other".into(), plan.reports["app"].clone());
    let server = tokio::spawn(async move {
        serve_api_seed(&mut handle, WG.0, WG.1, true).await;
        serve_api_seed(&mut handle, OR.0, OR.1, true).await;
        let wg = serve_apply(
            &mut handle,
            "/apis/wgpolicyk8s.io/v1alpha2/namespaces/app/policyreports/residency-guard",
        )
        .await;
        let or = serve_apply(
            &mut handle,
            "/apis/openreports.io/v1alpha1/namespaces/app/reports/residency-guard",
        )
        .await;
        assert_eq!(or["results"], wg["results"]);
        // The PolicyReport CRDs are deleted: the next write finds out.
        let (seen, send) = next(&mut handle).await;
        assert_eq!(
            seen.path,
            "/apis/wgpolicyk8s.io/v1alpha2/namespaces/other/policyreports/residency-guard"
        );
        send.send_response(status_error(404, "NotFound"));
        serve_apply(
            &mut handle,
            "/apis/openreports.io/v1alpha1/namespaces/other/reports/residency-guard",
        )
        .await;
        // No findings left: only the Reports are deleted; of the vanished
        // API nothing is left to delete, and its probe is not due.
        for ns in ["app", "other"] {
            let (seen, send) = next(&mut handle).await;
            assert_eq!(seen.method, "DELETE");
            assert_eq!(
                seen.path,
                format!("/apis/openreports.io/v1alpha1/namespaces/{ns}/reports/residency-guard")
            );
            send.send_response(json_response(
                200,
                &json!({"kind": "Status", "apiVersion": "v1", "status": "Success", "metadata": {}}),
            ));
        }
        assert_quiet(&mut handle).await;
    });
    let cfg = WriterConfig {
        reports_kind: ReportsKind::Both,
        reports_probe_every: Duration::from_secs(3600),
        ..WriterConfig::default()
    };
    let mut w = Writer::new(client, cfg, AuditMetrics::new());
    let s = w.apply(&plan, &BTreeMap::new(), now()).await;
    assert_eq!((s.writes, s.reports_missing), (2, false));
    let s = w.apply(&changed, &BTreeMap::new(), now()).await;
    assert_eq!(s.writes, 2);
    assert_eq!(s.errors, 0, "a vanished API is not an error");
    assert!(s.reports_missing, "the vanished API is looked for again");
    let s = w
        .apply(&AuditPlan::default(), &BTreeMap::new(), now())
        .await;
    assert_eq!((s.writes, s.errors), (2, 0));
    server.await.unwrap();
}

/// `auto` with an API the operator may not use (403: RBAC made by hand):
/// treated as missing, so no write is attempted against it (each would be
/// refused) while the other API is written.
#[tokio::test]
async fn auto_skips_an_api_it_may_not_use() {
    let (client, mut handle) = mock();
    let plan = reports_only_plan();
    let server = tokio::spawn(async move {
        serve_api_seed(&mut handle, WG.0, WG.1, true).await;
        let (seen, send) = next(&mut handle).await;
        assert_eq!(seen.path, "/apis/openreports.io/v1alpha1/reports");
        send.send_response(status_error(403, "Forbidden"));
        serve_apply(
            &mut handle,
            "/apis/wgpolicyk8s.io/v1alpha2/namespaces/app/policyreports/residency-guard",
        )
        .await;
        assert_quiet(&mut handle).await;
    });
    let cfg = WriterConfig {
        reports_probe_every: Duration::from_secs(3600),
        ..WriterConfig::default()
    };
    let mut w = Writer::new(client, cfg, AuditMetrics::new());
    let s = w.apply(&plan, &BTreeMap::new(), now()).await;
    assert_eq!((s.writes, s.errors, s.reports_missing), (1, 0, true));
    assert_eq!(w.apply(&plan, &BTreeMap::new(), now()).await.writes, 0);
    server.await.unwrap();
}
