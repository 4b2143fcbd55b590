//! The chart's alerts and dashboard against the operator's real metrics.
//!
//! `residency-guard serve` runs as a process against a mock API server
//! (benches/mock_apiserver.rs, serving a small generated cluster and a
//! policy with an exemption) with a certificate from files, is sent a few
//! admission reviews and an oversized request, and its `/metrics` is
//! scraped. (prometheus-client writes nothing, not even HELP and TYPE, for a
//! family with no series yet, so the test makes each family it checks
//! carry one.) Every metric the
//! rendered PrometheusRule and Grafana dashboard name (parsed with
//! promql-parser) must be a series that output defines, so a renamed metric
//! fails here instead of silently silencing an alert. `promtool check
//! rules` checks the rendered rule file.
//!
//! Needs `helm` (as tests/chart.rs) and, for the promtool tests, `promtool`
//! (`$PROMTOOL`, else `.tools/bin/promtool`, which scripts/install-tools.sh
//! unpacks from Debian's `prometheus` package, else PATH). Without them the
//! tests print "skipped" and pass, except when `CI` is set: then a missing
//! tool is a failure.

#[allow(dead_code)]
#[path = "../benches/cluster_data.rs"]
mod cluster_data;
#[allow(dead_code)]
#[path = "../benches/mock_apiserver.rs"]
mod mock_apiserver;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mock_apiserver::MockApi;
use promql_parser::parser::{self, Expr};
use promql_parser::util::{ExprVisitor, walk_expr};
use serde::Deserialize;
use serde_json::Value;

const RELEASE: &str = "residency-guard";
const NS: &str = "residency-guard";
/// Every monitoring object on, with the audit (whose alerts need it).
const MONITORING: &[&str] = &[
    "--set",
    "audit.enabled=true",
    "--set",
    "metrics.prometheusRule.enabled=true",
    "--set",
    "metrics.dashboard.enabled=true",
];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A tool from `$VAR`, `.tools/bin`, or PATH; None (after saying so) when
/// the test should skip, a failure under CI.
fn tool(name: &str, var: &str, install: &str) -> Option<PathBuf> {
    let found = std::env::var_os(var)
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
        .or_else(|| Some(root().join(".tools/bin").join(name)).filter(|p| p.is_file()))
        .or_else(|| {
            std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
                .map(|dir| dir.join(name))
                .find(|p| p.is_file())
        });
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "{name} not found and CI is set: {install} (or set ${var})"
        );
        println!("skipped: {name} not found ({install})");
    }
    found
}

fn helm() -> Option<PathBuf> {
    tool("helm", "HELM", "run scripts/install-tools.sh")
}

/// `helm template` of the chart with `args`: the rendered objects.
fn render(helm: &Path, args: &[&str]) -> Vec<Value> {
    let out = Command::new(helm)
        .arg("template")
        .arg(RELEASE)
        .arg(root().join("charts/residency-guard"))
        .args(["--namespace", NS])
        .args(args)
        .output()
        .expect("run helm");
    assert!(
        out.status.success(),
        "helm template {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("helm output is UTF-8");
    serde_norway::Deserializer::from_str(&text)
        .map(|doc| Value::deserialize(doc).expect("rendered YAML parses"))
        .filter(|v| !v.is_null())
        .collect()
}

fn one<'a>(objs: &'a [Value], kind: &str) -> &'a Value {
    let found: Vec<_> = objs.iter().filter(|o| o["kind"] == kind).collect();
    assert_eq!(found.len(), 1, "expected one {kind}");
    found[0]
}

/// Every rule of the rendered PrometheusRule: (record or alert name, expr).
fn rules(objs: &[Value]) -> Vec<(String, String, bool)> {
    let rule = one(objs, "PrometheusRule");
    let mut out = Vec::new();
    for group in rule["spec"]["groups"].as_array().expect("groups") {
        for r in group["rules"].as_array().expect("rules") {
            let expr = r["expr"].as_str().expect("expr").to_owned();
            match (r["record"].as_str(), r["alert"].as_str()) {
                (Some(record), None) => out.push((record.to_owned(), expr, true)),
                (None, Some(alert)) => out.push((alert.to_owned(), expr, false)),
                _ => panic!("a rule is a record or an alert: {r}"),
            }
        }
    }
    out
}

/// Every query of the rendered dashboard: (where, PromQL). Grafana's
/// variables are replaced by values PromQL accepts, and a templating
/// `label_values(selector, label)` query by its selector.
fn dashboard_queries(objs: &[Value]) -> Vec<(String, String)> {
    let cm = objs
        .iter()
        .find(|o| o["kind"] == "ConfigMap" && o["metadata"]["name"] == "residency-guard-dashboard")
        .expect("the dashboard ConfigMap");
    let json = cm["data"]["residency-guard.json"]
        .as_str()
        .expect("dashboard JSON");
    let dash: Value = serde_json::from_str(json).expect("the dashboard is JSON");
    let mut out = Vec::new();
    for panel in dash["panels"].as_array().expect("panels") {
        for t in panel["targets"].as_array().into_iter().flatten() {
            let expr = t["expr"].as_str().expect("a target's expr");
            out.push((
                format!("panel {:?}", panel["title"].as_str().unwrap_or("")),
                expr.to_owned(),
            ));
        }
    }
    for var in dash["templating"]["list"].as_array().expect("templating") {
        if var["type"] != "query" {
            continue;
        }
        let q = var["query"]["query"].as_str().expect("a variable's query");
        let selector = q
            .strip_prefix("label_values(")
            .and_then(|rest| rest.rsplit_once(','))
            .map(|(sel, _)| sel.to_owned())
            .unwrap_or_else(|| panic!("variable query {q:?} is not label_values(selector, label)"));
        out.push((format!("variable {}", var["name"]), selector));
    }
    assert!(out.len() >= 15, "{} dashboard queries", out.len());
    out.into_iter()
        .map(|(at, q)| (at, grafana_variables_replaced(&q)))
        .collect()
}

/// `$__rate_interval` and the like become a duration, `$name` and
/// `${name}` a plain word (they only appear in label values).
fn grafana_variables_replaced(q: &str) -> String {
    let mut out = String::new();
    let mut rest = q;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let (name, tail) = match after.strip_prefix('{') {
            Some(b) => {
                let end = b.find('}').expect("closed ${...}");
                (&b[..end], &b[end + 1..])
            }
            None => {
                let end = after
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(after.len());
                (&after[..end], &after[end..])
            }
        };
        out.push_str(if name.starts_with("__") { "5m" } else { "x" });
        rest = tail;
    }
    out.push_str(rest);
    out
}

/// The series names and bucket bounds one expression selects.
#[derive(Default)]
struct Selected {
    names: BTreeSet<String>,
    /// (histogram bucket series, le value) pairs the expression matches on.
    buckets: BTreeSet<(String, String)>,
}

impl ExprVisitor for Selected {
    type Error = String;
    fn pre_visit(&mut self, expr: &Expr) -> Result<bool, String> {
        let selector = match expr {
            Expr::VectorSelector(vs) => vs,
            Expr::MatrixSelector(ms) => &ms.vs,
            _ => return Ok(true),
        };
        let name = selector
            .name
            .clone()
            .or_else(|| {
                selector
                    .matchers
                    .matchers
                    .iter()
                    .find(|m| m.name == "__name__")
                    .map(|m| m.value.clone())
            })
            .ok_or_else(|| format!("a selector without a metric name: {selector}"))?;
        for m in &selector.matchers.matchers {
            if m.name == "le" {
                self.buckets.insert((name.clone(), m.value.clone()));
            }
        }
        self.names.insert(name);
        Ok(true)
    }
}

fn selected(expr: &str) -> Result<Selected, String> {
    let ast = parser::parse(expr).map_err(|e| format!("does not parse: {e}"))?;
    let mut s = Selected::default();
    walk_expr(&mut s, &ast)?;
    Ok(s)
}

/// What a scrape of the operator defines: every series name a query may
/// select (counters as `_total`, histograms as `_bucket`/`_sum`/`_count`,
/// gauges as themselves), and each histogram's bucket bounds as written.
struct Exported {
    series: BTreeSet<String>,
    bounds: BTreeMap<String, BTreeSet<String>>,
}

fn exported(text: &str) -> Exported {
    let mut series = BTreeSet::new();
    let mut bounds: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (family, kind) = rest.split_once(' ').expect("# TYPE name type");
            match kind {
                "counter" => {
                    series.insert(format!("{family}_total"));
                }
                "histogram" => {
                    for suffix in ["_bucket", "_sum", "_count"] {
                        series.insert(format!("{family}{suffix}"));
                    }
                }
                "gauge" => {
                    series.insert(family.to_owned());
                }
                other => panic!("a metric type the rules do not expect: {other} ({family})"),
            }
        } else if !line.starts_with('#') && !line.is_empty() {
            let name_end = line.find(['{', ' ']).expect("a sample line");
            let name = &line[..name_end];
            assert!(
                series.contains(name),
                "sample {name} before its # TYPE line"
            );
            if let Some(le) = line.split("le=\"").nth(1).and_then(|v| v.split('"').next()) {
                bounds
                    .entry(name.to_owned())
                    .or_default()
                    .insert(le.to_owned());
            }
        }
    }
    Exported { series, bounds }
}

/// `residency-guard serve` against a mock API server, killed on drop.
struct Operator {
    child: Child,
    admin: SocketAddr,
    webhook: SocketAddr,
    /// The CA of the serving certificate.
    ca: rustls_pki_types::CertificateDer<'static>,
    _dir: tempfile::TempDir,
    _runtime: tokio::runtime::Runtime,
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("local address")
}

/// The serving certificate's notAfter: 2030-01-01T00:00:00Z.
const NOT_AFTER: i64 = 1_893_456_000;
/// The exemption's last day; it lapses at its end in China Standard Time.
const EXPIRES: &str = "2027-06-30";
const LAPSES_AT: i64 = 1_814_371_200; // 2027-06-30T16:00:00Z

impl Operator {
    fn start() -> Operator {
        let runtime = tokio::runtime::Runtime::new().expect("runtime");
        let scale = cluster_data::Scale {
            nodes: 4,
            deployments: 6,
            pods: 12,
            policies: 3,
            namespaces: 4,
            classified_every: 1,
            network_policies: 0,
        };
        let mut mock = MockApi::with_cluster(&scale, None, Duration::from_secs(1));
        let mut exempting = cluster_data::policy_value(90);
        exempting["metadata"]["name"] = "exempting".into();
        exempting["spec"]["exemptions"] = serde_json::json!([{
            "selector": {"matchLabels": {"app": "app-0"}},
            "namespaces": ["ns-0"],
            "basis": "StandardContract",
            "reference": "CAC filing 2026-0042",
            "approvedBy": "dpo@example.com",
            "expires": EXPIRES,
        }]);
        mock.add("ResidencyPolicy", [exempting]);
        let mock = Arc::new(mock);
        let api = runtime
            .block_on(mock_apiserver::start(mock))
            .expect("start the mock API server");

        let dir = tempfile::tempdir().expect("temp dir");
        let kubeconfig = dir.path().join("kubeconfig");
        std::fs::write(
            &kubeconfig,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: mock\n  cluster:\n    server: http://{api}\nusers:\n- name: mock\n  user: {{}}\ncontexts:\n- name: mock\n  context: {{cluster: mock, user: mock}}\ncurrent-context: mock\n"
            ),
        )
        .expect("write kubeconfig");
        let ca_key = rcgen::KeyPair::generate().expect("CA key");
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key).expect("CA");
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params =
            rcgen::CertificateParams::new(vec!["localhost".to_string()]).expect("params");
        params.not_before = rcgen::date_time_ymd(2025, 1, 1);
        params.not_after = rcgen::date_time_ymd(2030, 1, 1);
        let cert = params.signed_by(&key, &issuer).expect("certificate");
        let tls = dir.path().join("tls");
        std::fs::create_dir(&tls).expect("tls dir");
        std::fs::write(tls.join("tls.crt"), cert.pem()).expect("tls.crt");
        std::fs::write(tls.join("tls.key"), key.serialize_pem()).expect("tls.key");

        let admin = free_port();
        let webhook = free_port();
        let child = Command::new(env!("CARGO_BIN_EXE_residency-guard"))
            .arg("serve")
            .env_clear()
            .env("KUBECONFIG", &kubeconfig)
            .env("RESIDENCY_GUARD_TLS_MODE", "files")
            .env("RESIDENCY_GUARD_TLS_DIR", &tls)
            .env("RESIDENCY_GUARD_WEBHOOK_ADDR", webhook.to_string())
            .env("RESIDENCY_GUARD_ADMIN_ADDR", admin.to_string())
            .env("RESIDENCY_GUARD_AUDIT", "true")
            .env("RESIDENCY_GUARD_POD_NAME", "monitoring-test")
            .env("RESIDENCY_GUARD_LOG_LEVEL", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start residency-guard serve");
        Operator {
            child,
            admin,
            webhook,
            ca: ca.der().clone(),
            _dir: dir,
            _runtime: runtime,
        }
    }

    /// Send `request` (raw HTTP/1.1) to the webhook over TLS; the answer's
    /// status line.
    fn webhook_request(&self, request: &[u8]) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca.clone()).expect("CA");
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        self._runtime.block_on(async {
            let tcp = tokio::net::TcpStream::connect(self.webhook)
                .await
                .expect("connect to the webhook");
            let name = rustls_pki_types::ServerName::try_from("localhost").expect("name");
            let mut tls = connector.connect(name, tcp).await.expect("TLS handshake");
            tls.write_all(request).await.expect("send");
            let mut answer = Vec::new();
            let _ =
                tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut answer)).await;
            String::from_utf8_lossy(&answer)
                .lines()
                .next()
                .unwrap_or_default()
                .to_owned()
        })
    }

    /// Reviews and a refused request, so that the admission families have
    /// series: a classified Deployment in a namespace the operator has not
    /// seen (judged after a live read of the namespace) and a body larger
    /// than the webhook takes.
    fn exercise(&self) {
        let deployment = serde_json::json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "ledger", "namespace": "fresh",
                         "labels": {"residencyguard.io/data-class": "personal"}},
            "spec": {"selector": {"matchLabels": {"app": "ledger"}},
                     "template": {"metadata": {"labels": {"app": "ledger"}},
                                  "spec": {"containers": [{"name": "c", "image": "ledger:1"}]}}},
        });
        let review = serde_json::to_vec(&serde_json::json!({
            "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {
                "uid": "monitoring-1",
                "kind": {"group": "apps", "version": "v1", "kind": "Deployment"},
                "resource": {"group": "apps", "version": "v1", "resource": "deployments"},
                "name": "ledger", "namespace": "fresh", "operation": "CREATE",
                "userInfo": {"username": "alice@example.com"},
                "object": deployment,
            }
        }))
        .expect("review JSON");
        let mut request = format!(
            "POST /validate/workloads HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            review.len()
        )
        .into_bytes();
        request.extend_from_slice(&review);
        let status = self.webhook_request(&request);
        assert!(status.starts_with("HTTP/1.1 200"), "the review: {status}");
        let status = self.webhook_request(
            b"POST /validate/workloads HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 99999999\r\nConnection: close\r\n\r\n",
        );
        assert!(
            status.starts_with("HTTP/1.1 413"),
            "the oversized request: {status}"
        );
    }

    fn metrics(&self) -> Option<String> {
        let mut s = TcpStream::connect_timeout(&self.admin, Duration::from_secs(2)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        s.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
            .ok()?;
        let mut response = String::new();
        s.read_to_string(&mut response).ok()?;
        let (head, body) = response.split_once("\r\n\r\n")?;
        head.starts_with("HTTP/1.0 200").then(|| body.to_owned())
    }

    /// /metrics once the replica is ready (every watch listed, the
    /// certificate loaded) and the audit has counted its findings; with
    /// `also`, once that is in it too.
    fn ready_metrics(&mut self, also: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().expect("child status") {
                panic!("residency-guard serve exited: {status}");
            }
            if let Some(text) = self.metrics()
                && text.lines().any(|l| l == "residency_guard_ready 1")
                && text.contains("residency_guard_audit_violations{")
                && text.contains(also)
            {
                return text;
            }
            assert!(
                Instant::now() < deadline,
                "the operator was not ready within 60 s; last /metrics:\n{}",
                self.metrics().unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

#[test]
fn the_extractor_finds_every_selector_and_bucket_bound() {
    let s = selected(
        r#"histogram_quantile(0.9, sum by (le) (rate(a_bucket{job="j",le="0.1"}[5m]))) / on(job) group_left b_total or {__name__="c"} offset 5m unless absent(d)"#,
    )
    .expect("parses");
    assert_eq!(
        s.names,
        ["a_bucket", "b_total", "c", "d"]
            .map(String::from)
            .into_iter()
            .collect()
    );
    assert_eq!(
        s.buckets,
        [("a_bucket".to_string(), "0.1".to_string())].into()
    );
    assert!(
        selected("sum(rate(x[5m])").is_err(),
        "unbalanced parentheses"
    );
    assert_eq!(
        grafana_variables_replaced(r#"rate(m{ns="$namespace",j="${job}"}[$__rate_interval])"#),
        r#"rate(m{ns="x",j="x"}[5m])"#
    );
    let e = exported(
        "# HELP c_x A.\n# TYPE c_x counter\nc_x_total 1\n# TYPE h histogram\nh_bucket{le=\"0.5\"} 1\nh_sum 1\nh_count 1\n# TYPE g gauge\n# EOF\n",
    );
    assert!(e.series.contains("c_x_total") && !e.series.contains("c_x"));
    assert!(e.series.contains("h_count") && e.series.contains("g"));
    assert_eq!(e.bounds["h_bucket"], ["0.5".to_string()].into());
}

#[test]
fn every_alert_and_dashboard_query_names_metrics_the_operator_exports() {
    let Some(helm) = helm() else { return };
    let objs = render(&helm, MONITORING);
    let rules = rules(&objs);
    let queries = dashboard_queries(&objs);

    let mut operator = Operator::start();
    operator.ready_metrics("");
    operator.exercise();
    let text = operator.ready_metrics("residency_guard_webhook_refused_total{");
    let exported = exported(&text);

    // The new gauges carry real values, not placeholders.
    assert_eq!(
        sample(
            &text,
            "residency_guard_certificate_expiration_timestamp_seconds"
        ),
        Some(NOT_AFTER as f64),
        "the expiry gauge is the served certificate's notAfter"
    );
    assert_eq!(sample(&text, "residency_guard_ready"), Some(1.0));
    assert_eq!(
        sample(
            &text,
            r#"residency_guard_exemption_expiry_timestamp_seconds{policy="exempting",index="0",reference="CAC filing 2026-0042"}"#
        ),
        Some(LAPSES_AT as f64),
        "the exemption's lapse"
    );
    assert_eq!(
        sample(
            &text,
            r#"residency_guard_watch_failing_since_timestamp_seconds{watch="nodes"}"#
        ),
        Some(0.0),
        "a healthy watch"
    );

    // Every (policy, class) out of policy has its codes counted.
    let label = |line: &str, name: &str| -> String {
        line.split(&format!("{name}=\""))
            .nth(1)
            .and_then(|v| v.split('"').next())
            .unwrap_or_default()
            .to_owned()
    };
    let violated: BTreeSet<(String, String)> = text
        .lines()
        .filter(|l| l.starts_with("residency_guard_audit_violations{"))
        .map(|l| (label(l, "policy"), label(l, "class")))
        .collect();
    let coded: BTreeSet<(String, String)> = text
        .lines()
        .filter(|l| {
            l.starts_with("residency_guard_audit_violations_by_code{")
                && l.contains(r#"exempted="false""#)
        })
        .map(|l| (label(l, "policy"), label(l, "class")))
        .collect();
    assert!(!violated.is_empty(), "the generated cluster has violations");
    assert_eq!(
        violated, coded,
        "violations without their codes, or codes without violations"
    );

    let recorded: BTreeSet<String> = rules
        .iter()
        .filter(|(_, _, record)| *record)
        .map(|(name, _, _)| name.clone())
        .collect();
    let mut problems = Vec::new();
    let mut used = BTreeSet::new();
    let exprs = rules
        .iter()
        .map(|(name, expr, record)| {
            let what = if *record { "record" } else { "alert" };
            (format!("{what} {name}"), expr.clone())
        })
        .chain(queries);
    for (at, expr) in exprs {
        let s = match selected(&expr) {
            Ok(s) => s,
            Err(e) => {
                problems.push(format!("{at}: {e}\n{expr}"));
                continue;
            }
        };
        for name in &s.names {
            used.insert(name.clone());
            if !exported.series.contains(name) && !recorded.contains(name) {
                problems.push(format!("{at}: {name} is not a metric the operator exports"));
            }
        }
        for (bucket, le) in &s.buckets {
            if !exported.bounds.get(bucket).is_some_and(|b| b.contains(le)) {
                problems.push(format!(
                    "{at}: {bucket} has no bucket le=\"{le}\" (bounds: {:?})",
                    exported.bounds.get(bucket)
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    // Every family the alerts are built on is used (the rule is not empty).
    for name in [
        "residency_guard_admission_decisions_total",
        "residency_guard_admission_duration_seconds_bucket",
        "residency_guard_ready",
        "residency_guard_audit_last_plan_timestamp_seconds",
        "residency_guard_certificate_expiration_timestamp_seconds",
        "residency_guard_watch_failing_since_timestamp_seconds",
        "residency_guard_audit_violations",
        "residency_guard_audit_violations_by_code",
        "residency_guard_exemption_expiry_timestamp_seconds",
        "residency_guard_live_confirmations_total",
    ] {
        assert!(used.contains(name), "nothing uses {name}");
    }
}

#[test]
fn promtool_checks_the_rendered_rules() {
    let Some(helm) = helm() else { return };
    let Some(promtool) = tool("promtool", "PROMTOOL", "run scripts/install-tools.sh") else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    // The audit off and failurePolicy Ignore render other branches.
    let variants: [&[&str]; 2] = [
        MONITORING,
        &[
            "--set",
            "metrics.prometheusRule.enabled=true",
            "--set",
            "audit.enabled=false",
            "--set",
            "webhook.failurePolicy=Ignore",
        ],
    ];
    for (i, args) in variants.iter().enumerate() {
        let objs = render(&helm, args);
        let spec = &one(&objs, "PrometheusRule")["spec"];
        let file = dir.path().join(format!("rules-{i}.yaml"));
        std::fs::write(&file, serde_norway::to_string(spec).expect("YAML")).expect("write rules");
        let out = Command::new(&promtool)
            .args(["check", "rules"])
            .arg(&file)
            .output()
            .expect("run promtool");
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success(),
            "promtool check rules {args:?}:\n{said}"
        );
        assert!(said.contains("SUCCESS"), "{said}");
    }
}

/// The alerts fire on the series they are meant for and stay quiet
/// otherwise: `promtool test rules` with tests/fixtures/monitoring/alerts_test.yaml.
#[test]
fn promtool_unit_tests_of_the_alerts_pass() {
    let Some(helm) = helm() else { return };
    let Some(promtool) = tool("promtool", "PROMTOOL", "run scripts/install-tools.sh") else {
        return;
    };
    let objs = render(&helm, MONITORING);
    let mut spec = one(&objs, "PrometheusRule")["spec"].clone();
    // The tests compare labels; annotations (checked by `check rules`)
    // would have to be repeated word for word.
    for group in spec["groups"].as_array_mut().expect("groups") {
        for rule in group["rules"].as_array_mut().expect("rules") {
            if let Some(rule) = rule.as_object_mut() {
                rule.remove("annotations");
            }
        }
    }
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(
        dir.path().join("rules.yaml"),
        serde_norway::to_string(&spec).expect("YAML"),
    )
    .expect("write rules");
    let tests = dir.path().join("alerts_test.yaml");
    std::fs::copy(
        root().join("tests/fixtures/monitoring/alerts_test.yaml"),
        &tests,
    )
    .expect("copy the alert tests");
    let out = Command::new(&promtool)
        .args(["test", "rules"])
        .arg(&tests)
        .output()
        .expect("run promtool");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool test rules:\n{said}");
    assert!(said.contains("SUCCESS"), "{said}");
}
