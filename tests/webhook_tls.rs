//! The admission webhook over a real TLS socket on 127.0.0.1 with a
//! generated CA: AdmissionReview v1 for every kind, malformed, oversized,
//! unknown-kind, dry-run, UPDATE and DELETE requests, NetworkPolicy and
//! ResidencyPolicy changes, asserting the fields the API server relies on.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use residency_guard::engine::Lang;
use serde_json::{Value, json};
use support::{TestServer, fixture_object, review, snapshot_from};

const MIB: usize = 1024 * 1024;

async fn kinds_server() -> TestServer {
    let (snapshot, workloads) = snapshot_from(&["tests/fixtures/kinds.yaml"]);
    TestServer::start(snapshot, workloads, Lang::En, 8 * MIB).await
}

fn response(body: &[u8]) -> Value {
    let v: Value = serde_json::from_slice(body)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(body)));
    assert_eq!(v["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(v["kind"], "AdmissionReview");
    v["response"].clone()
}

#[tokio::test]
async fn every_kind_is_judged_with_the_uid_echoed() {
    let server = kinds_server().await;
    let client = server.client();
    for kind in [
        "pod",
        "deployment",
        "replicaset",
        "statefulset",
        "daemonset",
        "job",
        "cronjob",
        "replicationcontroller",
    ] {
        let bad = fixture_object("tests/fixtures/kinds.yaml", &format!("{kind}-bad"));
        let uid = format!("uid-{kind}-bad");
        let (status, body) = client
            .post(
                "/validate/workloads",
                review(&uid, "CREATE", Some(&bad), None, false),
            )
            .await;
        assert_eq!(status, 200);
        let r = response(&body);
        assert_eq!(r["uid"], uid.as_str());
        assert_eq!(r["allowed"], false, "{kind}: {r}");
        assert_eq!(r["status"]["code"], 403);
        assert_eq!(r["status"]["reason"], "Forbidden");
        let msg = r["status"]["message"].as_str().unwrap();
        assert!(
            msg.contains("policy personal-mainland requires mainland-China nodes"),
            "{msg}"
        );
        assert!(msg.contains("Fix:"), "{msg}");

        let good = fixture_object("tests/fixtures/kinds.yaml", &format!("{kind}-good"));
        let (_, body) = client
            .post(
                "/validate/workloads",
                review("u2", "CREATE", Some(&good), None, false),
            )
            .await;
        let r = response(&body);
        assert_eq!(r["allowed"], true, "{kind}: {r}");
        assert!(r.get("status").is_none());
        assert!(r.get("warnings").is_none());
    }
    server.stop();
}

#[tokio::test]
async fn update_is_judged_delete_never_blocked_dry_run_identical() {
    let server = kinds_server().await;
    let client = server.client();
    let bad = fixture_object("tests/fixtures/kinds.yaml", "deployment-bad");
    let good = fixture_object("tests/fixtures/kinds.yaml", "deployment-good");

    let (_, body) = client
        .post(
            "/validate/workloads",
            review("u", "UPDATE", Some(&bad), Some(&good), false),
        )
        .await;
    assert_eq!(response(&body)["allowed"], false);

    let (_, body) = client
        .post(
            "/validate/workloads",
            review("u", "DELETE", None, Some(&bad), false),
        )
        .await;
    assert_eq!(response(&body)["allowed"], true);

    let (_, wet) = client
        .post(
            "/validate/workloads",
            review("same", "CREATE", Some(&bad), None, false),
        )
        .await;
    let (_, dry) = client
        .post(
            "/validate/workloads",
            review("same", "CREATE", Some(&bad), None, true),
        )
        .await;
    assert_eq!(response(&wet), response(&dry));
    server.stop();
}

#[tokio::test]
async fn malformed_oversized_and_unknown_requests() {
    let (snapshot, workloads) = snapshot_from(&["tests/fixtures/kinds.yaml"]);
    let server = TestServer::start(snapshot, workloads, Lang::En, MIB).await;
    let client = server.client();

    let (status, body) = client
        .post("/validate/workloads", b"{not json".to_vec())
        .await;
    assert_eq!(status, 400);
    assert!(String::from_utf8_lossy(&body).contains("not an AdmissionReview"));

    let (status, _) = client
        .post(
            "/validate/workloads",
            br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#.to_vec(),
        )
        .await;
    assert_eq!(status, 400, "no request");

    let (status, body) = client
        .post(
            "/validate/workloads",
            br#"{"apiVersion":"admission.k8s.io/v1beta1","request":{"uid":"x"}}"#.to_vec(),
        )
        .await;
    assert_eq!(status, 400);
    assert!(String::from_utf8_lossy(&body).contains("admissionReviewVersions"));

    // Over the configured limit: 413, before any decoding.
    let huge = vec![b' '; 2 * MIB];
    let (status, _) = client.post("/validate/workloads", huge).await;
    assert_eq!(status, 413);

    // A kind that does not create pods is admitted.
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": "app"}, "data": {}});
    let (_, body) = client
        .post(
            "/validate/workloads",
            review("cm", "CREATE", Some(&cm), None, false),
        )
        .await;
    assert_eq!(response(&body)["allowed"], true);

    // A workload whose fields have the wrong types: 400 inside the review.
    let broken = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "b", "namespace": "app"},
        "spec": {"template": {"spec": {"nodeSelector": "cn-north-1"}}}});
    let (_, body) = client
        .post(
            "/validate/workloads",
            review("b", "CREATE", Some(&broken), None, false),
        )
        .await;
    let r = response(&body);
    assert_eq!(r["uid"], "b");
    assert_eq!(r["allowed"], false);
    assert_eq!(r["status"]["code"], 400);
    assert!(
        r["status"]["message"]
            .as_str()
            .unwrap()
            .contains("spec.template.spec.nodeSelector")
    );

    // An unknown data class: the user sees which value and the vocabulary.
    let bad_class = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "app",
        "labels": {"residencyguard.io/data-class": "medical"}}, "spec": {"containers": []}});
    let (_, body) = client
        .post(
            "/validate/workloads",
            review("p", "CREATE", Some(&bad_class), None, false),
        )
        .await;
    let r = response(&body);
    assert_eq!(r["allowed"], false);
    assert!(
        r["status"]["message"]
            .as_str()
            .unwrap()
            .contains("valid classes are")
    );
    server.stop();
}

#[tokio::test]
async fn a_3_mib_review_is_answered() {
    let server = kinds_server().await;
    let client = server.client();
    let mut bad = fixture_object("tests/fixtures/kinds.yaml", "deployment-bad");
    bad["metadata"]["annotations"] =
        json!({"kubectl.kubernetes.io/last-applied-configuration": "x".repeat(3 * MIB)});
    let (status, body) = client
        .post(
            "/validate/workloads",
            review("big", "CREATE", Some(&bad), None, false),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(response(&body)["allowed"], false);
    server.stop();
}

#[tokio::test]
async fn warn_policies_admit_with_warnings_and_audit_admits_silently() {
    let (snapshot, workloads) = snapshot_from(&["tests/fixtures/policies-combined.yaml"]);
    let server = TestServer::start(snapshot, workloads, Lang::En, 8 * MIB).await;
    let client = server.client();
    let warn = fixture_object("tests/fixtures/policies-combined.yaml", "warn-only");
    let (_, body) = client
        .post(
            "/validate/workloads",
            review("w", "CREATE", Some(&warn), None, false),
        )
        .await;
    let r = response(&body);
    assert_eq!(r["allowed"], true);
    let warnings: Vec<&str> = r["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w.as_str().unwrap())
        .collect();
    assert!(
        warnings.iter().any(|w| w.contains("policy financial-warn")),
        "{warnings:?}"
    );
    assert!(
        warnings
            .iter()
            .any(|w| w.starts_with("residency-guard: Fix:")),
        "{warnings:?}"
    );
    assert!(warnings.iter().all(|w| w.chars().count() <= 256));

    let audit = fixture_object("tests/fixtures/policies-combined.yaml", "audit-prod");
    let (_, body) = client
        .post(
            "/validate/workloads",
            review("a", "CREATE", Some(&audit), None, false),
        )
        .await;
    let r = response(&body);
    assert_eq!(r["allowed"], true);
    assert!(r.get("warnings").is_none());

    // Deny and Warn together: denied, and the Warn message still comes as a warning.
    let both = fixture_object("tests/fixtures/policies-combined.yaml", "strictest-wins");
    let (_, body) = client
        .post(
            "/validate/workloads",
            review("b", "CREATE", Some(&both), None, false),
        )
        .await;
    let r = response(&body);
    assert_eq!(r["allowed"], false);
    assert!(
        r["status"]["message"]
            .as_str()
            .unwrap()
            .contains("personal-deny")
    );
    assert!(r["warnings"].as_array().is_some_and(|w| !w.is_empty()));
    server.stop();
}

#[tokio::test]
async fn messages_follow_the_configured_language() {
    let (snapshot, workloads) = snapshot_from(&["tests/fixtures/kinds.yaml"]);
    let server = TestServer::start(snapshot, workloads, Lang::ZhCn, 8 * MIB).await;
    let bad = fixture_object("tests/fixtures/kinds.yaml", "deployment-bad");
    let (_, body) = server
        .client()
        .post(
            "/validate/workloads",
            review("z", "CREATE", Some(&bad), None, false),
        )
        .await;
    let msg = response(&body)["status"]["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(msg.contains("修复"), "{msg}");
    server.stop();
}

#[tokio::test]
async fn network_policy_changes_that_open_egress_are_denied() {
    let (snapshot, workloads) = snapshot_from(&["examples/cluster"]);
    let server = TestServer::start(snapshot, workloads, Lang::En, 8 * MIB).await;
    let client = server.client();

    // Opening 8.8.8.0/24 for the compliant ledger is denied.
    let opener = json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": "dns-fix", "namespace": "payments"},
        "spec": {"podSelector": {"matchLabels": {"app": "ledger"}}, "policyTypes": ["Egress"],
                 "egress": [{"to": [{"ipBlock": {"cidr": "8.8.8.0/24"}}]}]}});
    let (_, body) = client
        .post(
            "/validate/networkpolicies",
            review("np1", "CREATE", Some(&opener), None, false),
        )
        .await;
    let r = response(&body);
    assert_eq!(r["uid"], "np1");
    assert_eq!(r["allowed"], false, "{r}");
    let msg = r["status"]["message"].as_str().unwrap();
    assert!(
        msg.contains("payments/ledger") && msg.contains("8.8.8.0/24"),
        "{msg}"
    );

    // Deleting the ledger's egress policy would leave it unrestricted: denied.
    let existing = json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": "ledger-egress", "namespace": "payments"}, "spec": {"podSelector": {}}});
    let (_, body) = client
        .post(
            "/validate/networkpolicies",
            review("np2", "DELETE", None, Some(&existing), false),
        )
        .await;
    assert_eq!(response(&body)["allowed"], false);

    // A policy that only narrows egress is fine.
    let narrow = json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": "narrow", "namespace": "payments"},
        "spec": {"podSelector": {"matchLabels": {"app": "ledger"}}, "policyTypes": ["Egress"],
                 "egress": [{"to": [{"namespaceSelector": {}}]}]}});
    let (_, body) = client
        .post(
            "/validate/networkpolicies",
            review("np3", "CREATE", Some(&narrow), None, false),
        )
        .await;
    assert_eq!(response(&body)["allowed"], true);

    // A namespace with no governed workloads: anything goes.
    let web = json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": "open", "namespace": "web"},
        "spec": {"podSelector": {}, "policyTypes": ["Egress"], "egress": [{}]}});
    let (_, body) = client
        .post(
            "/validate/networkpolicies",
            review("np4", "CREATE", Some(&web), None, false),
        )
        .await;
    assert_eq!(response(&body)["allowed"], true);
    server.stop();
}

#[tokio::test]
async fn residency_policies_get_semantic_checks() {
    let server = kinds_server().await;
    let client = server.client();
    let contradictory = json!({"apiVersion": "residencyguard.io/v1alpha1", "kind": "ResidencyPolicy",
        "metadata": {"name": "bad"},
        "spec": {"dataClasses": ["personal"], "placement": {"allowedNodes": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": "topology.kubernetes.io/region", "operator": "In", "values": ["ap-east-1"]}]}]}}}});
    let (_, body) = client
        .post(
            "/validate/policies",
            review("p1", "CREATE", Some(&contradictory), None, false),
        )
        .await;
    let r = response(&body);
    assert_eq!(r["allowed"], false);
    assert_eq!(r["status"]["code"], 422);
    assert!(
        r["status"]["message"]
            .as_str()
            .unwrap()
            .contains("ap-east-1")
    );

    let expired = json!({"apiVersion": "residencyguard.io/v1alpha1", "kind": "ResidencyPolicy",
        "metadata": {"name": "old"},
        "spec": {"dataClasses": ["personal"], "exemptions": [{"selector": {"matchLabels": {"app": "x"}},
            "basis": "Certification", "reference": "r", "approvedBy": "a", "expires": "2020-01-01"}]}});
    let (_, body) = client
        .post(
            "/validate/policies",
            review("p2", "CREATE", Some(&expired), None, false),
        )
        .await;
    let r = response(&body);
    assert_eq!(r["allowed"], true);
    assert!(r["warnings"][0].as_str().unwrap().contains("in the past"));
    server.stop();
}

#[tokio::test]
async fn admin_endpoints_report_readiness_and_metrics() {
    let server = kinds_server().await;
    let bad = fixture_object("tests/fixtures/kinds.yaml", "deployment-bad");
    server
        .client()
        .post(
            "/validate/workloads",
            review("m", "CREATE", Some(&bad), None, false),
        )
        .await;
    let base = format!("http://{}", server.admin_addr);
    let get = |path: &'static str| {
        let url = format!("{base}{path}");
        async move {
            let stream = tokio::net::TcpStream::connect(
                url.trim_start_matches("http://").split('/').next().unwrap(),
            )
            .await
            .unwrap();
            let (mut sender, conn) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                    .await
                    .unwrap();
            tokio::spawn(conn);
            let req = hyper::Request::get(path)
                .header("host", "x")
                .body(http_body_util::Empty::<hyper::body::Bytes>::new())
                .unwrap();
            let resp = sender.send_request(req).await.unwrap();
            let status = resp.status().as_u16();
            use http_body_util::BodyExt;
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            (status, String::from_utf8_lossy(&body).into_owned())
        }
    };
    assert_eq!(get("/livez").await.0, 200);
    assert_eq!(get("/readyz").await.0, 200);
    let (status, metrics) = get("/metrics").await;
    assert_eq!(status, 200);
    assert!(metrics.contains("residency_guard_admission_decisions_total{endpoint=\"workloads\",kind=\"Deployment\",action=\"Deny\",result=\"judged\",allowed=\"false\"} 1"), "{metrics}");
    assert!(
        metrics.contains("residency_guard_admission_duration_seconds"),
        "{metrics}"
    );
    server.stop();
}

/// Rotate the serving certificate again and again while clients open new
/// connections continuously: not one handshake may fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_rotation_under_load_drops_no_handshake() {
    let server = kinds_server().await;
    let client = server.client();
    let good = fixture_object("tests/fixtures/kinds.yaml", "deployment-good");
    let body = review("r", "CREATE", Some(&good), None, false);
    let ok = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let (client, body, ok, failed) = (client.clone(), body.clone(), ok.clone(), failed.clone());
        tasks.push(tokio::spawn(async move {
            for _ in 0..60 {
                match client.connect().await {
                    Ok(mut conn) => match conn.post("/validate/workloads", body.clone()).await {
                        Ok((200, _)) => ok.fetch_add(1, Ordering::Relaxed),
                        _ => failed.fetch_add(1, Ordering::Relaxed),
                    },
                    Err(_) => failed.fetch_add(1, Ordering::Relaxed),
                };
            }
        }));
    }
    let mut rotations = 0;
    while tasks.iter().any(|t| !t.is_finished()) {
        let (cert, key) = server.ca.serving_pair();
        assert!(
            server
                .certs
                .replace(cert.as_bytes(), key.as_bytes())
                .unwrap()
        );
        rotations += 1;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "failed requests during {rotations} rotations"
    );
    assert_eq!(ok.load(Ordering::Relaxed), 240);
    assert!(rotations > 5, "only {rotations} rotations happened");
    server.stop();
}
