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
            "namespaces": ["payments"], "basis": "Certification", "reference": "r", "approvedBy": "a", "expires": "2020-01-01"}]}});
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
    assert!(metrics.contains("residency_guard_admission_decisions_total{endpoint=\"workloads\",kind=\"Deployment\",operation=\"CREATE\",action=\"Deny\",result=\"judged\",allowed=\"false\"} 1"), "{metrics}");
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

// ---------------------------------------------------------------------------
// Slow, stalled and oversized clients (the listener's limits).

mod limits {
    use super::*;
    use residency_guard::webhook::listener::Limits;
    use std::collections::BTreeMap;
    use std::time::Instant;
    use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

    /// Short timeouts so the test runs in seconds; generous slack for slow
    /// CI machines in every assertion about when a socket closes.
    fn short_limits() -> Limits {
        Limits {
            handshake_timeout: Duration::from_secs(3),
            header_timeout: Duration::from_secs(3),
            request_timeout: Duration::from_secs(5),
            max_connections: 256,
            inflight_body_bytes: 16 * MIB,
            drain: Duration::from_secs(2),
            ..Limits::default()
        }
    }

    const SLACK: Duration = Duration::from_secs(15);

    async fn limited_server(limits: Limits) -> TestServer {
        let (snapshot, workloads) = snapshot_from(&["tests/fixtures/kinds.yaml"]);
        TestServer::start_limited(snapshot, workloads, Lang::En, 8 * MIB, limits).await
    }

    /// Read until the peer closes (EOF or an error); returns what was read.
    async fn read_until_closed(mut s: impl AsyncRead + Unpin) -> Vec<u8> {
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return out,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    }

    fn status_line(bytes: &[u8]) -> String {
        String::from_utf8_lossy(bytes)
            .lines()
            .next()
            .unwrap_or_default()
            .to_string()
    }

    fn metric(text: &str, reason: &str) -> u64 {
        let key = format!("residency_guard_webhook_refused_total{{reason=\"{reason}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(key.as_str()))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    }

    /// A real review on a fresh connection, answered (denied) in time.
    async fn real_review(server: &TestServer) -> Duration {
        let bad = fixture_object("tests/fixtures/kinds.yaml", "deployment-bad");
        let started = Instant::now();
        let (status, body) = tokio::time::timeout(
            Duration::from_secs(10),
            server.client().post(
                "/validate/workloads",
                review("real", "CREATE", Some(&bad), None, false),
            ),
        )
        .await
        .expect("a real review is answered while stalled clients hold connections");
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        assert_eq!(response(&body)["allowed"], false);
        started.elapsed()
    }

    /// Many stalled clients: TLS requests that declare ~7 MiB and stop
    /// sending, TLS connections stopped in the middle of their headers, and
    /// raw TCP that never starts a handshake. A real review is still
    /// answered while they are open, the large bodies beyond the shared
    /// budget are refused with 429 at once, and every stalled socket is
    /// closed by its timeout.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn stalled_clients_are_bounded_and_real_reviews_still_answered() {
        let limits = short_limits();
        let server = limited_server(limits.clone()).await;
        let client = server.client();

        // 12 requests declaring 7 MiB: two fit the 16 MiB budget (they get
        // 1 MiB of body each, then stall), the other ten are refused at once.
        let declared = 7 * MIB;
        let bodies_started = Instant::now();
        let mut bodies = Vec::new();
        for _ in 0..12 {
            let mut s = client.raw().await.unwrap();
            let head = format!(
                "POST /validate/workloads HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {declared}\r\n\r\n"
            );
            s.write_all(head.as_bytes()).await.unwrap();
            s.flush().await.unwrap();
            bodies.push(s);
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut early = Vec::new();
        let mut stalled = Vec::new();
        for mut s in bodies {
            let mut first = [0u8; 64];
            match tokio::time::timeout(Duration::from_millis(50), s.read(&mut first)).await {
                Ok(Ok(n)) if n > 0 => {
                    let mut got = first[..n].to_vec();
                    got.extend(read_until_closed(s).await);
                    early.push(status_line(&got));
                }
                Ok(_) => early.push("closed without an answer".into()),
                Err(_) => {
                    s.write_all(&vec![b' '; MIB]).await.unwrap();
                    s.flush().await.unwrap();
                    stalled.push(s);
                }
            }
        }
        assert_eq!(
            early,
            vec!["HTTP/1.1 429 Too Many Requests".to_string(); 10],
            "requests over the shared body budget are refused at once"
        );
        assert_eq!(stalled.len(), 2);

        // 40 TLS connections with half a request head.
        let heads_started = Instant::now();
        let mut heads = Vec::new();
        for _ in 0..40 {
            let mut s = client.raw().await.unwrap();
            s.write_all(
                b"POST /validate/workloads HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: app",
            )
            .await
            .unwrap();
            s.flush().await.unwrap();
            heads.push(s);
        }
        // 40 raw TCP sockets: no ClientHello.
        let tcp_started = Instant::now();
        let mut tcp = Vec::new();
        for _ in 0..40 {
            tcp.push(tokio::net::TcpStream::connect(server.addr).await.unwrap());
        }

        // A real review is answered while all of that is open.
        let took = real_review(&server).await;
        for (what, since, limit) in [
            ("stalled bodies", bodies_started, limits.request_timeout),
            ("half heads", heads_started, limits.header_timeout),
            ("raw TCP", tcp_started, limits.handshake_timeout),
        ] {
            assert!(
                since.elapsed() < limit,
                "the {what} may already have timed out ({:?} after they were opened), so this run proves nothing; the review took {took:?}",
                since.elapsed()
            );
        }

        // Every stalled socket is closed: raw TCP after the handshake
        // timeout, half heads after the header timeout, stalled bodies with
        // 408 after the request timeout.
        let not_before = |since: Instant, limit: Duration, what: &'static str| {
            move || {
                let after = since.elapsed();
                assert!(
                    after + Duration::from_millis(200) >= limit,
                    "{what}: closed after {after:?}, before its timeout {limit:?}"
                );
            }
        };
        let mut waits = Vec::new();
        for s in tcp {
            let check = not_before(tcp_started, limits.handshake_timeout, "raw TCP");
            waits.push(tokio::spawn(async move {
                read_until_closed(s).await;
                check();
                "tcp".to_string()
            }));
        }
        for s in heads {
            let check = not_before(heads_started, limits.header_timeout, "half head");
            waits.push(tokio::spawn(async move {
                read_until_closed(s).await;
                check();
                "head".to_string()
            }));
        }
        for s in stalled {
            let check = not_before(bodies_started, limits.request_timeout, "stalled body");
            waits.push(tokio::spawn(async move {
                let got = read_until_closed(s).await;
                check();
                format!("body {}", status_line(&got))
            }));
        }
        let mut outcomes = BTreeMap::<String, usize>::new();
        for w in waits {
            let what = tokio::time::timeout(limits.request_timeout + SLACK, w)
                .await
                .expect("a stalled socket is still open long after its timeout")
                .unwrap();
            *outcomes.entry(what).or_default() += 1;
        }
        assert_eq!(
            outcomes,
            BTreeMap::from([
                ("body HTTP/1.1 408 Request Timeout".to_string(), 2),
                ("head".to_string(), 40),
                ("tcp".to_string(), 40),
            ])
        );

        // The budget was returned: a real review still goes through.
        real_review(&server).await;
        let text = server.metrics.encode();
        assert_eq!(metric(&text, "handshake_timeout"), 40, "{text}");
        assert_eq!(metric(&text, "inflight_bytes"), 10, "{text}");
        assert_eq!(metric(&text, "body_timeout"), 2, "{text}");
        server.stop();
    }

    /// Past --max-connections, a new connection is closed at once (not left
    /// to hang), and a slot frees up when a stalled one times out.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn connections_past_the_cap_are_closed_at_once() {
        let limits = Limits {
            max_connections: 8,
            max_connections_per_source: 4,
            ..short_limits()
        };
        let server = limited_server(limits.clone()).await;
        let mut held = Vec::new();
        // Two sources, each within its own share, fill the global cap.
        for source in ["127.0.0.1", "127.0.0.2"] {
            for _ in 0..4 {
                held.push(server.client().with_source(source).tcp().await.unwrap());
            }
        }
        // Let the server accept them all.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let extra = server
            .client()
            .with_source("127.0.0.3")
            .tcp()
            .await
            .unwrap();
        let t = Instant::now();
        tokio::time::timeout(limits.handshake_timeout, read_until_closed(extra))
            .await
            .expect("the connection over the cap is closed before any timeout");
        assert!(t.elapsed() < limits.handshake_timeout);
        let text = server.metrics.encode();
        assert_eq!(metric(&text, "connection_limit"), 1, "{text}");

        // Once the held ones time out, reviews are served again.
        for s in held {
            tokio::time::timeout(limits.handshake_timeout + SLACK, read_until_closed(s))
                .await
                .expect("held connections time out");
        }
        real_review(&server).await;
        server.stop();
    }

    /// One source holding its share of connections cannot take more, and
    /// another source's reviews are still answered (issue 23).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_source_cannot_take_every_connection() {
        let limits = Limits {
            max_connections: 16,
            max_connections_per_source: 4,
            ..short_limits()
        };
        let server = limited_server(limits.clone()).await;
        let hostile = server.client().with_source("127.0.0.1");
        let mut held = Vec::new();
        for _ in 0..4 {
            held.push(hostile.raw().await.unwrap());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        // The fifth from the same source is closed at once.
        let extra = hostile.tcp().await.unwrap();
        tokio::time::timeout(limits.handshake_timeout, read_until_closed(extra))
            .await
            .expect("closed before any timeout");
        let text = server.metrics.encode();
        assert_eq!(metric(&text, "source_connections"), 1, "{text}");
        assert_eq!(metric(&text, "connection_limit"), 0, "{text}");
        // Another source is served while the first holds its share.
        let other = server.client().with_source("127.0.0.2");
        let bad = fixture_object("tests/fixtures/kinds.yaml", "deployment-bad");
        let (status, body) = tokio::time::timeout(
            Duration::from_secs(10),
            other.post(
                "/validate/workloads",
                review("other", "CREATE", Some(&bad), None, false),
            ),
        )
        .await
        .expect("answered");
        assert_eq!(status, 200);
        assert_eq!(response(&body)["allowed"], false);
        drop(held);
        server.stop();
    }

    /// Trusted source CIDRs have no per-source cap and connections no one
    /// else can take: untrusted sources together stop at the cap less the
    /// reservation.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn trusted_sources_keep_reserved_connections() {
        let limits = Limits {
            max_connections: 8,
            max_connections_per_source: 2,
            reserved_connections: 4,
            trusted_sources: vec!["127.0.0.3/32".parse().unwrap()],
            ..short_limits()
        };
        let server = limited_server(limits.clone()).await;
        let mut held = Vec::new();
        for source in ["127.0.0.1", "127.0.0.2"] {
            for _ in 0..2 {
                held.push(server.client().with_source(source).raw().await.unwrap());
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        // Untrusted sources hold the 4 unreserved connections: a third
        // untrusted source is closed at once, though 4 are free.
        let extra = server
            .client()
            .with_source("127.0.0.4")
            .tcp()
            .await
            .unwrap();
        tokio::time::timeout(limits.handshake_timeout, read_until_closed(extra))
            .await
            .expect("closed before any timeout");
        let text = server.metrics.encode();
        assert_eq!(metric(&text, "connection_limit"), 1, "{text}");
        // The trusted source opens more than the per-source cap, and its
        // reviews are answered on them.
        let api = server.client().with_source("127.0.0.3");
        let mut conns = Vec::new();
        for _ in 0..3 {
            conns.push(api.connect().await.unwrap());
        }
        let good = fixture_object("tests/fixtures/kinds.yaml", "deployment-good");
        for c in &mut conns {
            let (status, body) = c
                .post(
                    "/validate/workloads",
                    review("api", "CREATE", Some(&good), None, false),
                )
                .await
                .unwrap();
            assert_eq!(status, 200);
            assert_eq!(response(&body)["allowed"], true);
        }
        drop(held);
        server.stop();
    }

    /// A source with its share of reviews in flight gets 429 (the API server
    /// retries) for the next, while another source is answered.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reviews_in_flight_are_capped_per_source() {
        let limits = Limits {
            max_inflight_per_source: 1,
            ..short_limits()
        };
        let server = limited_server(limits.clone()).await;
        let hostile = server.client().with_source("127.0.0.1");
        // A review whose body never finishes holds the source's one slot.
        let mut stalled = hostile.raw().await.unwrap();
        stalled
            .write_all(b"POST /validate/workloads HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{")
            .await
            .unwrap();
        stalled.flush().await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        let good = fixture_object("tests/fixtures/kinds.yaml", "deployment-good");
        let body = review("again", "CREATE", Some(&good), None, false);
        let (status, text) = hostile.post("/validate/workloads", body.clone()).await;
        assert_eq!(status, 429, "{}", String::from_utf8_lossy(&text));
        assert!(
            String::from_utf8_lossy(&text).contains("--max-inflight-reviews-per-source"),
            "{}",
            String::from_utf8_lossy(&text)
        );
        let (status, _) = server
            .client()
            .with_source("127.0.0.2")
            .post("/validate/workloads", body)
            .await;
        assert_eq!(status, 200);
        let metrics = server.metrics.encode();
        assert_eq!(metric(&metrics, "source_inflight"), 1, "{metrics}");
        drop(stalled);
        server.stop();
    }

    /// A keep-alive connection serves several reviews, and a chunked body
    /// (no Content-Length) is read and charged as it grows.
    #[tokio::test]
    async fn keep_alive_and_chunked_bodies_still_work() {
        let server = limited_server(short_limits()).await;
        let good = fixture_object("tests/fixtures/kinds.yaml", "deployment-good");
        let body = review("k", "CREATE", Some(&good), None, false);
        let mut conn = server.client().connect().await.unwrap();
        for _ in 0..3 {
            let (status, resp) = conn
                .post("/validate/workloads", body.clone())
                .await
                .unwrap();
            assert_eq!(status, 200);
            assert_eq!(response(&resp)["allowed"], true);
        }
        let mut s = server.client().raw().await.unwrap();
        let mut req = b"POST /validate/workloads HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n".to_vec();
        for chunk in body.chunks(1000) {
            req.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
            req.extend_from_slice(chunk);
            req.extend_from_slice(b"\r\n");
        }
        req.extend_from_slice(b"0\r\n\r\n");
        s.write_all(&req).await.unwrap();
        s.flush().await.unwrap();
        let got = tokio::time::timeout(Duration::from_secs(10), read_until_closed(s))
            .await
            .unwrap();
        assert!(status_line(&got).contains(" 200 "), "{}", status_line(&got));
        assert!(String::from_utf8_lossy(&got).contains("\"allowed\":true"));
        server.stop();
    }
}

/// Once shutdown begins (readiness fails), every answer closes its
/// connection: the API server pools connections by the Service's name and
/// would otherwise keep sending reviews to a terminating Pod until the
/// listener closes them under it (a failed admission during a rollout,
/// tests/e2e/availability.rs).
#[tokio::test]
async fn answers_close_their_connection_once_shutdown_begins() {
    let (snapshot, workloads) = snapshot_from(&["tests/fixtures/kinds.yaml"]);
    let mut serving = None;
    let server = TestServer::start_with(
        snapshot,
        workloads,
        Lang::En,
        8 * MIB,
        residency_guard::webhook::listener::Limits::default(),
        |app| serving = Some(app.serving.clone()),
    )
    .await;
    let serving = serving.expect("the App's serving flag");
    let good = fixture_object("tests/fixtures/kinds.yaml", "deployment-good");
    let body = || review("k", "CREATE", Some(&good), None, false);
    let mut conn = server.client().connect().await.unwrap();
    // Kept alive while serving.
    for _ in 0..2 {
        let (status, _) = conn.post("/validate/workloads", body()).await.unwrap();
        assert_eq!(status, 200);
    }
    serving.store(false, Ordering::Relaxed);
    // Still answered, and then the connection is gone.
    let (status, _) = conn.post("/validate/workloads", body()).await.unwrap();
    assert_eq!(status, 200);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        conn.post("/validate/workloads", body()).await.is_err(),
        "the connection was kept alive after shutdown began"
    );
    server.stop();
}
