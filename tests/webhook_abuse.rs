//! Forged AdmissionReviews from anyone who can reach the webhook port
//! (issue 23): what they may cost the operator. Over a real TLS socket on
//! 127.0.0.1, through the real handler and the admin endpoint.

mod support;

use std::io::Write;
use std::sync::{Arc, Mutex};

use residency_guard::engine::Lang;
use serde_json::json;
use support::{TestServer, fixture_object, review, snapshot_from};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const MIB: usize = 1024 * 1024;
const KIB: usize = 1024;

/// `GET /metrics` from the admin listener, as Prometheus scrapes it.
async fn scrape(server: &TestServer) -> String {
    let mut s = tokio::net::TcpStream::connect(server.admin_addr)
        .await
        .unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    let text = String::from_utf8(out).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    body.to_string()
}

/// The series /metrics exposes (every line that is not a comment).
fn series(text: &str) -> Vec<String> {
    let mut s: Vec<String> = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| l.rsplit_once(' ').map_or(l, |(name, _)| name).to_string())
        .collect();
    s.sort();
    s
}

/// A cheap deterministic generator (xorshift): random-looking strings.
struct Noise(u64);

impl Noise {
    fn string(&mut self, len: usize) -> String {
        (0..len)
            .map(|_| {
                self.0 ^= self.0 << 13;
                self.0 ^= self.0 >> 7;
                self.0 ^= self.0 << 17;
                char::from(b'a' + (self.0 % 26) as u8)
            })
            .collect()
    }
}

/// A forged review: a Deployment's object under a `kind` and an
/// `operation` of the forger's choosing.
fn forged(kind: &str, operation: &str, name: &str) -> Vec<u8> {
    let object = fixture_object("tests/fixtures/kinds.yaml", "deployment-bad");
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": name,
            "kind": {"group": "apps", "version": "v1", "kind": kind},
            "resource": {"group": "apps", "version": "v1", "resource": "deployments"},
            "name": name,
            "namespace": name,
            "operation": operation,
            "userInfo": {"username": name},
            "object": object,
        }
    }))
    .unwrap()
}

/// Log lines written while the test runs (the handler logs on the
/// runtime's thread: a current-thread runtime keeps them on this one).
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// 16 forged reviews with 256 KiB random kinds, operations and names on
/// every endpoint add no series to /metrics and less than 64 KiB to it,
/// and no log line echoes them whole.
#[tokio::test]
async fn forged_kinds_and_operations_add_no_series_and_no_long_log_lines() {
    let logs = Captured::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .with_max_level(tracing::Level::DEBUG)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let (snapshot, workloads) = snapshot_from(&["tests/fixtures/kinds.yaml"]);
    let server = TestServer::start(snapshot, workloads, Lang::En, 8 * MIB).await;
    let client = server.client();
    let endpoints = [
        "/validate/workloads",
        "/validate/networkpolicies",
        "/validate/policies",
        "/validate/namespaces",
    ];

    // Every label set a forger can reach with short strings: a real review
    // and a forged one (unknown kind and operation) on each endpoint, and
    // an undecodable body.
    let bad = fixture_object("tests/fixtures/kinds.yaml", "deployment-bad");
    for path in endpoints {
        for body in [
            review("real", "CREATE", Some(&bad), None, false),
            forged("Short", "PATCH", "short"),
            b"{not json".to_vec(),
        ] {
            let (status, _) = client.post(path, body).await;
            assert!(status == 200 || status == 400, "{path}: {status}");
        }
    }
    let before = scrape(&server).await;
    let before_series = series(&before);

    let mut noise = Noise(0x9e37_79b9_7f4a_7c15);
    for i in 0..16 {
        let kind = noise.string(256 * KIB);
        let operation = noise.string(if i % 2 == 0 { 256 * KIB } else { 6 });
        let name = noise.string(64 * KIB);
        let path = endpoints[i % endpoints.len()];
        let (status, body) = client.post(path, forged(&kind, &operation, &name)).await;
        assert!(
            status == 200 || status == 400,
            "{path}: {status} {}",
            String::from_utf8_lossy(&body[..body.len().min(300)])
        );
    }
    let after = scrape(&server).await;
    let after_series = series(&after);
    let new: Vec<String> = after_series
        .iter()
        .filter(|s| !before_series.contains(s))
        .map(|s| s.chars().take(200).collect())
        .collect();
    assert!(
        new.is_empty() && before_series.len() == after_series.len(),
        "forged kinds or operations created {} series ({} before, {} after), e.g. {:?}",
        new.len(),
        before_series.len(),
        after_series.len(),
        new.first()
    );
    assert!(
        after.len() < before.len() + 64 * KIB,
        "/metrics grew from {} to {} bytes",
        before.len(),
        after.len()
    );
    assert!(
        after.contains("kind=\"other\"") && after.contains("operation=\"other\""),
        "forged reviews are counted under other"
    );
    assert!(
        after.contains("kind=\"Deployment\",operation=\"CREATE\""),
        "real reviews keep their kind and operation"
    );

    let logs = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(
        logs.contains("admission decision"),
        "the decisions were logged"
    );
    let longest = logs.lines().map(str::len).max().unwrap_or(0);
    assert!(
        longest < 4 * KIB,
        "a log line of {longest} bytes echoes a forged string"
    );
    server.stop();
}

mod amplification {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::{Duration, Instant};

    use futures::future::BoxFuture;
    use residency_guard::api::DataClass;
    use residency_guard::engine::NamespaceFacts;
    use residency_guard::state::live::LiveReader;
    use residency_guard::webhook::budget::{BudgetLimits, LiveBudget};
    use residency_guard::webhook::declassify::{Authorizer, UserInfo};
    use residency_guard::webhook::listener::Limits;

    /// The API server as the live reads see it: every namespace exists,
    /// unlabelled; counts the reads.
    struct CountingReader(Arc<AtomicUsize>);

    impl LiveReader for CountingReader {
        fn namespace_facts<'a>(
            &'a self,
            _namespace: &'a str,
            _network_policies: bool,
            _storage: bool,
        ) -> BoxFuture<'a, Result<NamespaceFacts, kube::Error>> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Box::pin(async {
                Ok(NamespaceFacts {
                    labels: Some(Default::default()),
                    ..NamespaceFacts::default()
                })
            })
        }
    }

    /// Every declassification is allowed; counts the SubjectAccessReviews.
    struct CountingAuthorizer(Arc<AtomicUsize>);

    impl Authorizer for CountingAuthorizer {
        fn role(&self) -> &str {
            "declassifier"
        }
        fn refused<'a>(
            &'a self,
            _user: &'a UserInfo,
            _namespace: &'a str,
            classes: &'a [DataClass],
        ) -> BoxFuture<'a, Result<Vec<DataClass>, kube::Error>> {
            self.0.fetch_add(classes.len(), Ordering::SeqCst);
            Box::pin(async { Ok(Vec::new()) })
        }
    }

    fn metric(text: &str, line_start: &str) -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(line_start))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    }

    /// Forged denial-shaped reviews, in one namespace and across many, make
    /// at most burst + rate × elapsed live reads; the rest keep the
    /// snapshot's answer (a denial stays a denial), and the metrics say so.
    #[tokio::test]
    async fn forged_denials_make_a_bounded_number_of_live_reads() {
        let reads = Arc::new(AtomicUsize::new(0));
        let (snapshot, workloads) = snapshot_from(&["tests/fixtures/kinds.yaml"]);
        let r = reads.clone();
        let limits = BudgetLimits {
            rate: 5.0,
            burst: 10.0,
            namespace_rate: 1.0,
            namespace_burst: 3.0,
            ..BudgetLimits::default()
        };
        let server = TestServer::start_with(
            snapshot,
            workloads,
            Lang::En,
            8 * MIB,
            Limits::default(),
            |app| {
                app.live = Some(Arc::new(CountingReader(r)));
                app.budget = Arc::new(LiveBudget::new(limits));
            },
        )
        .await;
        let mut conn = server.client().connect().await.unwrap();
        let bad = fixture_object("tests/fixtures/kinds.yaml", "deployment-bad");
        let started = Instant::now();
        for i in 0..200 {
            let body = review(&format!("f{i}"), "CREATE", Some(&bad), None, false);
            let (status, resp) = conn.post("/validate/workloads", body).await.unwrap();
            assert_eq!(status, 200);
            let v: serde_json::Value = serde_json::from_slice(&resp).unwrap();
            assert_eq!(v["response"]["allowed"], false, "a denial stays a denial");
        }
        let same_ns = reads.load(Ordering::SeqCst);
        let elapsed = started.elapsed().as_secs_f64();
        assert!(same_ns >= 1, "the first denial is confirmed live");
        assert!(
            same_ns as f64 <= 3.0 + elapsed + 1.0,
            "{same_ns} reads for one namespace in {elapsed:.2} s"
        );
        // Many namespaces: the global bucket holds.
        for i in 0..200 {
            let mut obj = bad.clone();
            obj["metadata"]["namespace"] = json!(format!("forged-{i}"));
            let body = review(&format!("g{i}"), "CREATE", Some(&obj), None, false);
            let (status, _) = conn.post("/validate/workloads", body).await.unwrap();
            assert_eq!(status, 200);
        }
        let all = reads.load(Ordering::SeqCst);
        let elapsed = started.elapsed().as_secs_f64();
        assert!(
            all as f64 <= 10.0 + 5.0 * elapsed + 1.0,
            "{all} reads in {elapsed:.2} s"
        );
        let text = scrape(&server).await;
        let requests = metric(
            &text,
            "residency_guard_review_api_requests_total{purpose=\"confirmation\"} ",
        );
        // Each read is a few requests (the Namespace, its NetworkPolicies,
        // its storage), all counted.
        assert!(requests as usize >= all, "{requests} < {all}");
        let live = metric(
            &text,
            "residency_guard_review_api_budget_total{purpose=\"confirmation\",outcome=\"live\"} ",
        );
        assert_eq!(live as usize, all, "one live outcome per read");
        let over = metric(
            &text,
            "residency_guard_review_api_budget_total{purpose=\"confirmation\",outcome=\"over_budget_global\"} ",
        ) + metric(
            &text,
            "residency_guard_review_api_budget_total{purpose=\"confirmation\",outcome=\"over_budget_namespace\"} ",
        ) + metric(
            &text,
            "residency_guard_review_api_budget_total{purpose=\"confirmation\",outcome=\"cached\"} ",
        );
        assert_eq!(over as usize + all, 400, "{text}");
        server.stop();
    }

    /// Declassifications: answered from the cache for the same user, and
    /// over the budget refused retryably (503), never allowed unchecked.
    #[tokio::test]
    async fn declassifications_over_budget_are_refused_retryably() {
        let asked = Arc::new(AtomicUsize::new(0));
        let (snapshot, workloads) = snapshot_from(&["tests/fixtures/kinds.yaml"]);
        let a = asked.clone();
        let limits = BudgetLimits {
            rate: 2.0,
            burst: 3.0,
            namespace_rate: 2.0,
            namespace_burst: 3.0,
            cache_for: Duration::from_secs(60),
            ..BudgetLimits::default()
        };
        let server = TestServer::start_with(
            snapshot,
            workloads,
            Lang::ZhCn,
            8 * MIB,
            Limits::default(),
            |app| {
                app.authorizer = Some(Arc::new(CountingAuthorizer(a)));
                app.budget = Arc::new(LiveBudget::new(limits));
            },
        )
        .await;
        let mut conn = server.client().connect().await.unwrap();
        let old = fixture_object("tests/fixtures/kinds.yaml", "deployment-good");
        let mut new = old.clone();
        new["spec"]["template"]["metadata"]["labels"] = json!({"app": "x"});
        let declassify = |user: &str| {
            let mut v: serde_json::Value =
                serde_json::from_slice(&review("d", "UPDATE", Some(&new), Some(&old), false))
                    .unwrap();
            v["request"]["userInfo"] = json!({"username": user});
            serde_json::to_vec(&v).unwrap()
        };
        let mut outcomes = Vec::new();
        for i in 0..10 {
            // The same user twice in a row (cached), then a new one.
            let user = format!("forged-{}", i / 2);
            let (status, resp) = conn
                .post("/validate/workloads", declassify(&user))
                .await
                .unwrap();
            assert_eq!(status, 200);
            let v: serde_json::Value = serde_json::from_slice(&resp).unwrap();
            outcomes.push((
                v["response"]["allowed"].as_bool().unwrap(),
                v["response"]["status"]["code"].as_u64().unwrap_or(0),
                v["response"]["status"]["message"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            ));
        }
        let n = asked.load(Ordering::SeqCst);
        assert!(n <= 4, "{n} SubjectAccessReviews");
        assert!(outcomes[0].0 && outcomes[1].0, "{outcomes:?}");
        let refused: Vec<_> = outcomes.iter().filter(|o| !o.0).collect();
        assert!(!refused.is_empty(), "{outcomes:?}");
        for (_, code, message) in refused {
            assert_eq!(*code, 503, "retryable: {message}");
            assert!(message.contains("请几秒后重试"), "{message}");
        }
        server.stop();
    }
}
