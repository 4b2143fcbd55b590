//! Load benchmark of `residency-guard serve`, end to end over HTTPS/1.1
//! keep-alive on 127.0.0.1, against the targets of the performance issue:
//!
//! | measurement                                        | target              |
//! |----------------------------------------------------|---------------------|
//! | latency at a fixed 1,000 reviews/s (open loop)      | p99 ≤ 2 ms, none dropped |
//! | saturation, closed loop, server on one core         | ≥ 10,000 reviews/s  |
//! | one 3 MiB review (sequential, p50 of 20)            | ≤ 5 ms              |
//! | server resident memory under load (VmRSS / VmHWM)   | ≤ 32 MiB            |
//! | spawn → TLS handshake and /readyz 200 (median of 5)  | ≤ 100 ms            |
//!
//! Handler CPU per review (≤ 25 µs) is measured in process by
//! `benches/handler.rs`; this binary also reports the server's CPU time per
//! review under saturation (TLS and HTTP included).
//!
//! Setup: a mock Kubernetes API server (axum, plain HTTP, in this process)
//! serves LIST and WATCH for every kind `serve` watches, with the objects of
//! `examples/cluster/*.yaml`; a kubeconfig points at it. A CA and serving
//! certificate are generated into a temporary directory, and the release
//! binary is started as `taskset -c 0 residency-guard serve --tls-mode files`.
//! This process (the load generator and the mock) pins itself to CPU 1. The
//! reviews are the 14.7 KB Deployment AdmissionReviews of
//! `benches/handler.rs` (a denied and an allowed variant, alternated), whose
//! answers are asserted before anything is measured and checked on every
//! response.
//!
//! Open-loop latency is measured from each review's scheduled send time, so
//! a stalled server is not hidden by the generator waiting for it
//! (no coordinated omission).
//!
//! After /readyz first answers 200 the benchmark keeps sending the denied
//! review until it is denied, and reports how many were allowed before:
//! reviews answered before the synced snapshot is published are judged
//! against an empty one.
//!
//! Runs only under `cargo bench` (or with `RG_BENCH_FORCE=1`); CI compiles
//! it but does not run it. `scripts/bench-webhook.sh` runs it with the
//! handler benchmark and prints a summary. Knobs (environment):
//! `RG_BENCH_SERVER_BIN`, `RG_BENCH_SERVER_CPU` (0), `RG_BENCH_CLIENT_CPU`
//! (1), `RG_BENCH_SECONDS` (10), `RG_BENCH_RATE` (1000), `RG_BENCH_CONNS`
//! (4), `RG_BENCH_SAT_CONNS` (32), `RG_BENCH_LARGE_COUNT` (20),
//! `RG_BENCH_STARTS` (4 extra starts for the startup median),
//! `RG_BENCH_PRIORITY` (`nice` or `rt`: run the server and the generator
//! at `nice -n -10` or SCHED_FIFO, to keep other work on a shared machine
//! from preempting them; needs root), `RG_BENCH_VERBOSE=1` (print the
//! mock API requests).

#[allow(dead_code)]
#[path = "handler.rs"]
mod handler;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::State as AxumState;
use axum::http::{StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use handler::fixture::{self, Variant};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

// ---------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------

/// How the server and the load generator compete with other processes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Priority {
    /// As started (a fair share of a busy machine).
    Normal,
    /// `nice -n -10` for both.
    Nice,
    /// SCHED_FIFO 10 for both (`chrt -f 10`); the kernel still keeps 5% of
    /// each CPU for everything else.
    Realtime,
}

impl Priority {
    fn name(self) -> &'static str {
        match self {
            Priority::Normal => "normal",
            Priority::Nice => "nice -n -10",
            Priority::Realtime => "SCHED_FIFO 10",
        }
    }

    /// The command prefix that runs a program at this priority.
    fn prefix(self) -> &'static [&'static str] {
        match self {
            Priority::Normal => &[],
            Priority::Nice => &["nice", "-n", "-10"],
            Priority::Realtime => &["chrt", "-f", "10"],
        }
    }

    /// Apply to this process (before any thread exists).
    fn apply_to_self(self) -> bool {
        let pid = std::process::id().to_string();
        let args: Vec<&str> = match self {
            Priority::Normal => return true,
            Priority::Nice => vec!["renice", "-n", "-10", "-p", &pid],
            Priority::Realtime => vec!["chrt", "-f", "-p", "10", &pid],
        };
        Command::new(args[0])
            .args(&args[1..])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }
}

struct Config {
    server_bin: PathBuf,
    priority: Priority,
    server_cpu: Option<String>,
    client_cpu: Option<String>,
    seconds: u64,
    rate: u64,
    conns: usize,
    sat_conns: usize,
    large_count: usize,
    /// Extra starts for the startup figure.
    starts: usize,
}

fn env_num<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

impl Config {
    fn from_env() -> Config {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let taskset = Command::new("taskset")
            .arg("-V")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        let pin = cores >= 2 && taskset;
        let cpu = |name: &str, default: &str| {
            pin.then(|| std::env::var(name).unwrap_or_else(|_| default.to_string()))
        };
        Config {
            server_bin: std::env::var_os("RG_BENCH_SERVER_BIN")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_residency-guard"))),
            priority: match std::env::var("RG_BENCH_PRIORITY").as_deref() {
                Ok("nice") => Priority::Nice,
                Ok("rt") => Priority::Realtime,
                _ => Priority::Normal,
            },
            server_cpu: cpu("RG_BENCH_SERVER_CPU", "0"),
            client_cpu: cpu("RG_BENCH_CLIENT_CPU", "1"),
            seconds: env_num("RG_BENCH_SECONDS", 10u64).clamp(1, 120),
            rate: env_num("RG_BENCH_RATE", 1000u64).clamp(1, 100_000),
            conns: env_num("RG_BENCH_CONNS", 4usize).clamp(1, 256),
            sat_conns: env_num("RG_BENCH_SAT_CONNS", 32usize).clamp(1, 1024),
            large_count: env_num("RG_BENCH_LARGE_COUNT", 20usize).clamp(1, 1000),
            starts: env_num("RG_BENCH_STARTS", 4usize).clamp(0, 50),
        }
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if !args.iter().any(|a| a == "--bench") && std::env::var_os("RG_BENCH_FORCE").is_none() {
        println!(
            "webhook_load: skipped (run `cargo bench --bench webhook_load` or scripts/bench-webhook.sh)"
        );
        return ExitCode::SUCCESS;
    }
    let cfg = Config::from_env();
    // Pin before any thread exists, so every thread of this process
    // (runtime, dispatcher) inherits the affinity.
    if let Some(cpu) = &cfg.client_cpu {
        let pid = std::process::id().to_string();
        let ok = Command::new("taskset")
            .args(["-cp", cpu, &pid])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            eprintln!("webhook_load: cannot pin the load generator to CPU {cpu}");
        }
    } else {
        eprintln!(
            "webhook_load: fewer than 2 CPUs or no taskset: server and load generator are not pinned"
        );
    }
    if !cfg.priority.apply_to_self() {
        eprintln!(
            "webhook_load: cannot set priority {} (root needed)",
            cfg.priority.name()
        );
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("webhook_load: tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    if std::env::var("RG_BENCH_SCENARIO").as_deref() == Ok("abuse") {
        return match runtime.block_on(abuse::run(&cfg)) {
            Ok(report) => {
                report.print();
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("webhook_load: FAILED: {e}");
                ExitCode::FAILURE
            }
        };
    }
    match runtime.block_on(run(&cfg)) {
        Ok(report) => {
            report.print(&cfg);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("webhook_load: FAILED: {e}");
            ExitCode::FAILURE
        }
    }
}

// ---------------------------------------------------------------------------
// The mock Kubernetes API server
// ---------------------------------------------------------------------------

/// Every resource `serve` lists and watches (src/state/mod.rs), as
/// (collection path, apiVersion, kind).
const RESOURCES: &[(&str, &str, &str)] = &[
    (
        "/apis/residencyguard.io/v1alpha1/residencypolicies",
        "residencyguard.io/v1alpha1",
        "ResidencyPolicy",
    ),
    ("/api/v1/nodes", "v1", "Node"),
    ("/api/v1/namespaces", "v1", "Namespace"),
    (
        "/apis/networking.k8s.io/v1/networkpolicies",
        "networking.k8s.io/v1",
        "NetworkPolicy",
    ),
    ("/api/v1/services", "v1", "Service"),
    ("/api/v1/pods", "v1", "Pod"),
    ("/apis/apps/v1/deployments", "apps/v1", "Deployment"),
    ("/apis/apps/v1/replicasets", "apps/v1", "ReplicaSet"),
    ("/apis/apps/v1/statefulsets", "apps/v1", "StatefulSet"),
    ("/apis/apps/v1/daemonsets", "apps/v1", "DaemonSet"),
    ("/apis/batch/v1/jobs", "batch/v1", "Job"),
    ("/apis/batch/v1/cronjobs", "batch/v1", "CronJob"),
    (
        "/api/v1/replicationcontrollers",
        "v1",
        "ReplicationController",
    ),
    ("/api/v1/persistentvolumes", "v1", "PersistentVolume"),
    (
        "/api/v1/persistentvolumeclaims",
        "v1",
        "PersistentVolumeClaim",
    ),
    (
        "/apis/storage.k8s.io/v1/storageclasses",
        "storage.k8s.io/v1",
        "StorageClass",
    ),
];

const LIST_RESOURCE_VERSION: &str = "1000";
const MAX_LOGGED_REQUESTS: usize = 200;

struct Mock {
    /// Collection path → serialized list.
    lists: BTreeMap<&'static str, Bytes>,
    objects: usize,
    list_requests: AtomicUsize,
    watch_requests: AtomicUsize,
    unknown_requests: AtomicUsize,
    /// The first requests (path and query), to check what kube-runtime asks.
    log: Mutex<Vec<String>>,
    /// When the first and the latest LIST arrived.
    lists_seen: Mutex<(Option<Instant>, Option<Instant>)>,
}

impl Mock {
    fn from_examples() -> Result<Mock, String> {
        let mut by_kind: BTreeMap<String, Vec<Value>> = BTreeMap::new();
        for path in fixture::example_files() {
            let text =
                std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            let docs = residency_guard::cli::parse_documents(&path.display().to_string(), &text)
                .map_err(|e| e.to_string())?;
            for d in docs {
                let kind = d.value["kind"].as_str().unwrap_or_default().to_string();
                by_kind.entry(kind).or_default().push(d.value);
            }
        }
        let mut lists = BTreeMap::new();
        let mut objects = 0;
        for (path, api_version, kind) in RESOURCES {
            let mut items = by_kind.remove(*kind).unwrap_or_default();
            for (i, item) in items.iter_mut().enumerate() {
                let meta = &mut item["metadata"];
                meta["resourceVersion"] = json!(format!("{}", 900 + i));
                meta["uid"] = json!(format!("00000000-0000-4000-8000-{:012}", objects + i));
                meta["creationTimestamp"] = json!("2026-10-01T00:00:00Z");
            }
            objects += items.len();
            let list = json!({
                "apiVersion": api_version,
                "kind": format!("{kind}List"),
                "metadata": {"resourceVersion": LIST_RESOURCE_VERSION},
                "items": items,
            });
            lists.insert(
                *path,
                Bytes::from(serde_json::to_vec(&list).map_err(|e| e.to_string())?),
            );
        }
        if !by_kind.is_empty() {
            return Err(format!(
                "examples/cluster has kinds the mock does not serve: {:?}",
                by_kind.keys().collect::<Vec<_>>()
            ));
        }
        Ok(Mock {
            lists,
            objects,
            list_requests: AtomicUsize::new(0),
            watch_requests: AtomicUsize::new(0),
            unknown_requests: AtomicUsize::new(0),
            log: Mutex::new(Vec::new()),
            lists_seen: Mutex::new((None, None)),
        })
    }
}

fn query_param<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

async fn mock_api(AxumState(mock): AxumState<Arc<Mock>>, uri: Uri) -> Response {
    let path = uri.path();
    let query = uri.query().unwrap_or_default();
    if let Ok(mut log) = mock.log.lock()
        && log.len() < MAX_LOGGED_REQUESTS
    {
        log.push(format!("GET {path}?{query}"));
    }
    let Some((&collection, list)) = mock.lists.get_key_value(path) else {
        mock.unknown_requests.fetch_add(1, Ordering::Relaxed);
        let status = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
            "message": format!("the mock has no {path}"), "reason": "NotFound", "code": 404});
        return (StatusCode::NOT_FOUND, axum::Json(status)).into_response();
    };
    if query_param(query, "watch") != Some("true") {
        mock.list_requests.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut seen) = mock.lists_seen.lock() {
            let now = Instant::now();
            seen.0.get_or_insert(now);
            seen.1 = Some(now);
        }
        return ([(header::CONTENT_TYPE, "application/json")], list.clone()).into_response();
    }
    mock.watch_requests.fetch_add(1, Ordering::Relaxed);
    // Stay open sending a bookmark every 5 s until timeoutSeconds (at most
    // 10 min), as the API server does.
    let (api_version, kind) = RESOURCES
        .iter()
        .find(|(p, _, _)| *p == collection)
        .map(|(_, a, k)| (*a, *k))
        .unwrap_or(("v1", "Unknown"));
    let timeout: u64 = query_param(query, "timeoutSeconds")
        .and_then(|t| t.parse().ok())
        .unwrap_or(290)
        .min(600);
    let ticks = timeout / 5;
    let stream = futures::stream::unfold(0u64, move |n| async move {
        if n >= ticks {
            return None;
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
        let event = json!({"type": "BOOKMARK", "object": {"apiVersion": api_version, "kind": kind,
            "metadata": {"resourceVersion": LIST_RESOURCE_VERSION}}});
        let mut line = serde_json::to_vec(&event).unwrap_or_default();
        line.push(b'\n');
        Some((Ok::<_, Infallible>(Bytes::from(line)), n + 1))
    });
    (
        [(header::CONTENT_TYPE, "application/json")],
        Body::from_stream(stream),
    )
        .into_response()
}

fn write_kubeconfig(dir: &Path, api: SocketAddr) -> Result<PathBuf, String> {
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: mock\n  cluster:\n    server: http://{api}\n\
         users:\n- name: mock\n  user: {{}}\ncontexts:\n- name: mock\n  context:\n    cluster: mock\n    user: mock\n\
         current-context: mock\n"
    );
    let path = dir.join("kubeconfig");
    std::fs::write(&path, text).map_err(|e| format!("kubeconfig: {e}"))?;
    Ok(path)
}

// ---------------------------------------------------------------------------
// Certificates and connections
// ---------------------------------------------------------------------------

/// A CA and a serving certificate for 127.0.0.1 in `dir` (tls.crt, tls.key);
/// returns the CA certificate to trust.
fn write_certificates(dir: &Path) -> Result<CertificateDer<'static>, String> {
    let err = |e: rcgen::Error| e.to_string();
    let ca_key = KeyPair::generate().map_err(err)?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(err)?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).map_err(err)?;
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().map_err(err)?;
    let params = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
        .map_err(err)?;
    let cert = params.signed_by(&key, &issuer).map_err(err)?;
    std::fs::write(dir.join("tls.crt"), cert.pem()).map_err(|e| e.to_string())?;
    std::fs::write(dir.join("tls.key"), key.serialize_pem()).map_err(|e| e.to_string())?;
    Ok(ca_cert.der().clone())
}

fn tls_connector(ca: CertificateDer<'static>) -> Result<TlsConnector, String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca).map_err(|e| e.to_string())?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(TlsConnector::from(Arc::new(config)))
}

type Sender = SendRequest<Full<Bytes>>;

/// One HTTPS/1.1 keep-alive connection.
async fn connect(addr: SocketAddr, tls: &TlsConnector) -> Result<Sender, String> {
    let tcp = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let _ = tcp.set_nodelay(true);
    let name = ServerName::IpAddress(addr.ip().into());
    let stream = tls
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS handshake: {e}"))?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("HTTP handshake: {e}"))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

/// POST one review; returns the status and the response body.
async fn post(sender: &mut Sender, body: Bytes) -> Result<(u16, Bytes), String> {
    post_pooled(sender, body)
        .await
        .map(|(status, bytes, _)| (status, bytes))
}

/// `post`, as an HTTP client's connection pool does it: also says whether
/// the server asked to close the connection (`Connection: close`, sent by a
/// replica that is shutting down), after which a client opens a new
/// connection for its next request instead of writing on this one.
async fn post_pooled(sender: &mut Sender, body: Bytes) -> Result<(u16, Bytes, bool), String> {
    sender.ready().await.map_err(|e| e.to_string())?;
    let req = hyper::Request::post("/validate/workloads")
        .header(header::HOST, "127.0.0.1")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(body))
        .map_err(|e| e.to_string())?;
    let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let close = resp
        .headers()
        .get(header::CONNECTION)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
    let bytes = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, bytes, close))
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// The review was answered as expected: HTTP 200 and the right `allowed`.
fn answered(status: u16, body: &[u8], allowed: bool) -> bool {
    let want: &[u8] = if allowed {
        b"\"allowed\":true"
    } else {
        b"\"allowed\":false"
    };
    status == 200 && contains(body, want)
}

async fn readyz(admin: SocketAddr) -> Option<u16> {
    let attempt = async {
        let tcp = TcpStream::connect(admin).await.ok()?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .ok()?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let req = hyper::Request::get("/readyz")
            .header(header::HOST, "127.0.0.1")
            .body(Empty::<Bytes>::new())
            .ok()?;
        let resp = sender.send_request(req).await.ok()?;
        Some(resp.status().as_u16())
    };
    tokio::time::timeout(Duration::from_millis(500), attempt)
        .await
        .ok()
        .flatten()
}

// ---------------------------------------------------------------------------
// The server process
// ---------------------------------------------------------------------------

struct Server {
    child: Child,
    log: PathBuf,
}

impl Server {
    fn stderr_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    fn exited(&mut self) -> Option<String> {
        match self.child.try_wait() {
            Ok(Some(status)) => Some(format!(
                "the server exited ({status}); its stderr ends with:\n{}",
                self.stderr_tail()
            )),
            _ => None,
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> Result<SocketAddr, String> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    l.local_addr().map_err(|e| e.to_string())
}

// ---------------------------------------------------------------------------
// /proc readings
// ---------------------------------------------------------------------------

fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// utime + stime of a process, in clock ticks.
fn process_ticks(pid: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

/// (busy, total) ticks of one CPU from /proc/stat.
fn cpu_ticks(cpu: &str) -> Option<(u64, u64)> {
    let text = std::fs::read_to_string("/proc/stat").ok()?;
    let line = text
        .lines()
        .find(|l| l.split_whitespace().next() == Some(&format!("cpu{cpu}")))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let idle = v.get(3)? + v.get(4).copied().unwrap_or(0);
    let total: u64 = v.iter().take(8).sum();
    Some((total - idle, total))
}

/// Memory of a process, in KiB.
#[derive(Clone, Copy, Debug, Default)]
struct Memory {
    rss: u64,
    hwm: u64,
    anon: u64,
    file: u64,
}

impl Memory {
    fn describe(&self) -> String {
        format!(
            "VmRSS {:.1} MiB (anonymous {:.1}, file-backed {:.1}), VmHWM {:.1} MiB",
            mib(self.rss),
            mib(self.anon),
            mib(self.file),
            mib(self.hwm)
        )
    }
}

fn memory_kib(pid: u32) -> Option<Memory> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<u64> {
        text.lines()
            .find(|l| l.starts_with(name))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    };
    Some(Memory {
        rss: field("VmRSS:")?,
        hwm: field("VmHWM:")?,
        anon: field("RssAnon:").unwrap_or(0),
        file: field("RssFile:").unwrap_or(0),
    })
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// CPU use of the server, of this process and of each pinned CPU over a phase.
struct CpuMeter {
    server_pid: String,
    server_cpu: Option<String>,
    client_cpu: Option<String>,
    hz: f64,
    started: Instant,
    server: u64,
    client: u64,
    core_server: Option<(u64, u64)>,
    core_client: Option<(u64, u64)>,
}

#[derive(Clone, Copy, Default, Debug)]
struct CpuUse {
    /// CPU seconds used by the server process.
    server_s: f64,
    /// ... and by the load generator (this process).
    client_s: f64,
    wall_s: f64,
    /// Busy fraction of the server's and the generator's CPUs (all processes).
    core_server_busy: Option<f64>,
    core_client_busy: Option<f64>,
}

impl CpuMeter {
    fn start(
        server_pid: u32,
        server_cpu: Option<String>,
        client_cpu: Option<String>,
        hz: f64,
    ) -> CpuMeter {
        let server_pid = server_pid.to_string();
        CpuMeter {
            server: process_ticks(&server_pid).unwrap_or(0),
            client: process_ticks("self").unwrap_or(0),
            core_server: server_cpu.as_deref().and_then(cpu_ticks),
            core_client: client_cpu.as_deref().and_then(cpu_ticks),
            server_pid,
            server_cpu,
            client_cpu,
            hz,
            started: Instant::now(),
        }
    }

    fn stop(&self) -> CpuUse {
        let busy = |cpu: &Option<String>, before: Option<(u64, u64)>| {
            let (b0, t0) = before?;
            let (b1, t1) = cpu_ticks(cpu.as_deref()?)?;
            (t1 > t0).then(|| (b1 - b0) as f64 / (t1 - t0) as f64)
        };
        CpuUse {
            server_s: process_ticks(&self.server_pid)
                .unwrap_or(0)
                .saturating_sub(self.server) as f64
                / self.hz,
            client_s: process_ticks("self")
                .unwrap_or(0)
                .saturating_sub(self.client) as f64
                / self.hz,
            wall_s: self.started.elapsed().as_secs_f64(),
            core_server_busy: busy(&self.server_cpu, self.core_server),
            core_client_busy: busy(&self.client_cpu, self.core_client),
        }
    }
}

/// Samples the server's VmRSS every 20 ms; `take_peak` returns the largest
/// value since the previous call.
struct RssSampler {
    peak: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl RssSampler {
    fn start(pid: u32, limit: Duration) -> RssSampler {
        let peak = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (p, s) = (peak.clone(), stop.clone());
        tokio::spawn(async move {
            let deadline = Instant::now() + limit;
            while !s.load(Ordering::Relaxed) && Instant::now() < deadline {
                if let Some(m) = memory_kib(pid) {
                    p.fetch_max(m.rss, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        RssSampler { peak, stop }
    }

    fn take_peak(&self, pid: u32) -> u64 {
        let now = memory_kib(pid).map_or(0, |m| m.rss);
        self.peak.swap(0, Ordering::Relaxed).max(now)
    }
}

impl Drop for RssSampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

// ---------------------------------------------------------------------------
// Statistics
// ---------------------------------------------------------------------------

#[derive(Clone, Debug, Default)]
struct Latencies {
    /// Nanoseconds, sorted.
    sorted: Vec<u64>,
}

impl Latencies {
    fn new(mut ns: Vec<u64>) -> Latencies {
        ns.sort_unstable();
        Latencies { sorted: ns }
    }

    /// The q-quantile (nearest rank), in milliseconds.
    fn ms(&self, q: f64) -> f64 {
        if self.sorted.is_empty() {
            return f64::NAN;
        }
        let rank = ((q * self.sorted.len() as f64).ceil() as usize).clamp(1, self.sorted.len());
        self.sorted[rank - 1] as f64 / 1e6
    }

    fn max_ms(&self) -> f64 {
        self.sorted.last().map_or(f64::NAN, |&n| n as f64 / 1e6)
    }

    fn summary(&self) -> String {
        format!(
            "p50 {:.3} ms, p90 {:.3} ms, p99 {:.3} ms, p99.9 {:.3} ms, max {:.3} ms (n = {})",
            self.ms(0.50),
            self.ms(0.90),
            self.ms(0.99),
            self.ms(0.999),
            self.max_ms(),
            self.sorted.len()
        )
    }
}

// ---------------------------------------------------------------------------
// The phases
// ---------------------------------------------------------------------------

struct Startup {
    /// The admin port answered (any status).
    admin_up: Option<Duration>,
    tls: Duration,
    readyz: Duration,
    /// Both: the first handshake and /readyz 200 have happened.
    ready: Duration,
    /// The first review answered from synced stores (the denial is denied).
    first_correct_denial: Option<Duration>,
    /// Reviews wrongly allowed between readiness and the first denial.
    allowed_after_ready: usize,
}

async fn wait_ready(
    server: &mut Server,
    spawned: Instant,
    addr: SocketAddr,
    admin: SocketAddr,
    tls: &TlsConnector,
    denied: &Bytes,
) -> Result<Startup, String> {
    let deadline = spawned + Duration::from_secs(20);
    let (mut tls_at, mut ready_at, mut admin_up) = (None, None, None);
    while tls_at.is_none() || ready_at.is_none() {
        if Instant::now() > deadline {
            return Err(format!(
                "not ready 20 s after start (TLS: {tls_at:?}, /readyz: {ready_at:?}); server stderr:\n{}",
                server.stderr_tail()
            ));
        }
        if let Some(e) = server.exited() {
            return Err(e);
        }
        if tls_at.is_none() {
            let hs = tokio::time::timeout(Duration::from_millis(500), connect(addr, tls)).await;
            if matches!(hs, Ok(Ok(_))) {
                tls_at = Some(spawned.elapsed());
            }
        }
        if ready_at.is_none() {
            let status = readyz(admin).await;
            if status.is_some() && admin_up.is_none() {
                admin_up = Some(spawned.elapsed());
            }
            if status == Some(200) {
                ready_at = Some(spawned.elapsed());
            }
        }
        if tls_at.is_none() || ready_at.is_none() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    let (tls_d, readyz_d) = (tls_at.unwrap_or_default(), ready_at.unwrap_or_default());
    let ready = tls_d.max(readyz_d);
    // How long after readiness a review is judged against the synced
    // snapshot (the snapshot is rebuilt after a debounce).
    let mut sender = connect(addr, tls).await?;
    let mut first = None;
    let mut allowed_after_ready = 0;
    for _ in 0..5000 {
        let (status, body) = post(&mut sender, denied.clone()).await?;
        if answered(status, &body, false) {
            first = Some(spawned.elapsed());
            break;
        }
        if status == 200 && contains(&body, b"\"allowed\":true") {
            allowed_after_ready += 1;
        } else {
            return Err(format!(
                "unexpected answer while starting: HTTP {status}: {}",
                String::from_utf8_lossy(&body)
            ));
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    Ok(Startup {
        admin_up,
        tls: tls_d,
        readyz: readyz_d,
        ready,
        first_correct_denial: first,
        allowed_after_ready,
    })
}

/// Start `residency-guard serve` (pinned, at the configured priority) on
/// fresh ports; stderr goes to `server-N.log` in `dir`.
fn spawn_server(
    cfg: &Config,
    dir: &Path,
    kubeconfig: &Path,
    tls_dir: &Path,
    n: usize,
) -> Result<(Server, Instant, SocketAddr, SocketAddr), String> {
    let addr = free_port()?;
    let admin = free_port()?;
    let log = dir.join(format!("server-{n}.log"));
    let stderr = std::fs::File::create(&log).map_err(|e| e.to_string())?;
    let bin = cfg.server_bin.display().to_string();
    let mut argv: Vec<String> = Vec::new();
    if let Some(cpu) = &cfg.server_cpu {
        argv.extend(["taskset".to_string(), "-c".into(), cpu.clone()]);
    }
    argv.extend(cfg.priority.prefix().iter().map(|s| s.to_string()));
    argv.push(bin.clone());
    argv.extend([
        "serve".to_string(),
        "--tls-mode".into(),
        "files".into(),
        "--tls-dir".into(),
        tls_dir.display().to_string(),
        "--webhook-addr".into(),
        addr.to_string(),
        "--admin-addr".into(),
        admin.to_string(),
        "--log-level".into(),
        "warn".into(),
    ]);
    // taskset, nice and chrt exec the next program: the child's pid is the
    // server's.
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .env("KUBECONFIG", kubeconfig)
        .env("HOME", dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(stderr));
    let spawned = Instant::now();
    let child = cmd.spawn().map_err(|e| format!("spawn {bin}: {e}"))?;
    Ok((Server { child, log }, spawned, addr, admin))
}

/// The two reviews, alternated; `i` even is the denial.
#[derive(Clone)]
struct Reviews {
    denied: Bytes,
    allowed: Bytes,
}

impl Reviews {
    fn get(&self, i: usize) -> (Bytes, bool) {
        if i.is_multiple_of(2) {
            (self.denied.clone(), false)
        } else {
            (self.allowed.clone(), true)
        }
    }
}

struct OpenLoop {
    latency: Latencies,
    sent: usize,
    ok: usize,
    errors: usize,
    timeouts: usize,
    wrong: usize,
    /// How late the generator handed reviews to a connection (diagnostic).
    dispatch_late: Latencies,
    /// Latency from the actual send (diagnostic: excludes generator and
    /// queueing delay, so it hides coordinated omission).
    from_send: Latencies,
    achieved_rps: f64,
    cpu: CpuUse,
}

const REQUEST_TIMEOUT: Duration = Duration::from_secs(1);

/// Fixed-rate open loop: review i is due at start + i/rate; idle
/// connections take due reviews from a shared queue, and each latency runs
/// from the due time.
async fn open_loop(
    cfg: &Config,
    addr: SocketAddr,
    tls: &TlsConnector,
    reviews: &Reviews,
    meter: impl Fn() -> CpuMeter,
) -> Result<OpenLoop, String> {
    let total = (cfg.rate * cfg.seconds) as usize;
    let interval = Duration::from_nanos(1_000_000_000 / cfg.rate);
    let mut senders = Vec::new();
    for _ in 0..cfg.conns {
        senders.push(connect(addr, tls).await?);
    }
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<(usize, Instant)>();
    let rx = Arc::new(tokio::sync::Mutex::new(rx));
    let cpu = meter();
    let start = Instant::now() + Duration::from_millis(20);
    // A plain thread sleeps with microsecond precision (tokio's timer wheel
    // has 1 ms slots).
    let dispatcher = std::thread::spawn(move || {
        for i in 0..total {
            let due = start + interval * i as u32;
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
            if tx.send((i, due)).is_err() {
                break;
            }
        }
    });
    let mut workers = Vec::new();
    for mut sender in senders {
        let rx = rx.clone();
        let reviews = reviews.clone();
        let tls = tls.clone();
        workers.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(total);
            let mut from_send = Vec::with_capacity(total);
            let mut late = Vec::with_capacity(total);
            let (mut errors, mut timeouts, mut wrong) = (0usize, 0usize, 0usize);
            let mut broken = false;
            loop {
                let next = rx.lock().await.recv().await;
                let Some((i, due)) = next else { break };
                late.push(due.elapsed().as_nanos() as u64);
                if broken {
                    match connect(addr, &tls).await {
                        Ok(s) => {
                            sender = s;
                            broken = false;
                        }
                        Err(_) => {
                            errors += 1;
                            continue;
                        }
                    }
                }
                let (body, allowed) = reviews.get(i);
                let sent = Instant::now();
                match tokio::time::timeout(REQUEST_TIMEOUT, post(&mut sender, body)).await {
                    Ok(Ok((status, resp))) => {
                        if answered(status, &resp, allowed) {
                            lat.push(due.elapsed().as_nanos() as u64);
                            from_send.push(sent.elapsed().as_nanos() as u64);
                        } else {
                            wrong += 1;
                        }
                    }
                    Ok(Err(_)) => {
                        errors += 1;
                        broken = true;
                    }
                    Err(_) => {
                        timeouts += 1;
                        broken = true;
                    }
                }
            }
            (lat, from_send, late, errors, timeouts, wrong)
        }));
    }
    let limit = Duration::from_secs(cfg.seconds + 10);
    let mut all = Vec::with_capacity(total);
    let mut late_all = Vec::with_capacity(total);
    let mut send_all = Vec::with_capacity(total);
    let (mut errors, mut timeouts, mut wrong) = (0, 0, 0);
    for w in workers {
        match tokio::time::timeout(limit, w).await {
            Ok(Ok((lat, send, late, e, t, x))) => {
                all.extend(lat);
                send_all.extend(send);
                late_all.extend(late);
                errors += e;
                timeouts += t;
                wrong += x;
            }
            _ => return Err("an open-loop worker did not finish in time".into()),
        }
    }
    let cpu = cpu.stop();
    let _ = dispatcher.join();
    let elapsed = start.elapsed().as_secs_f64();
    let ok = all.len();
    Ok(OpenLoop {
        latency: Latencies::new(all),
        sent: late_all.len(),
        ok,
        errors,
        timeouts,
        wrong,
        dispatch_late: Latencies::new(late_all),
        from_send: Latencies::new(send_all),
        achieved_rps: ok as f64 / elapsed,
        cpu,
    })
}

struct ClosedLoop {
    conns: usize,
    ok: usize,
    failed: usize,
    rps: f64,
    latency: Latencies,
    cpu: CpuUse,
}

/// Closed loop: every connection sends its next review as soon as the
/// previous one is answered, for `seconds`.
async fn closed_loop(
    conns: usize,
    seconds: u64,
    addr: SocketAddr,
    tls: &TlsConnector,
    reviews: &Reviews,
    meter: impl Fn() -> CpuMeter,
) -> Result<ClosedLoop, String> {
    let mut senders = Vec::new();
    for _ in 0..conns {
        senders.push(connect(addr, tls).await?);
    }
    let cpu = meter();
    let start = Instant::now();
    let end = start + Duration::from_secs(seconds);
    let mut workers = Vec::new();
    for (k, mut sender) in senders.into_iter().enumerate() {
        let reviews = reviews.clone();
        workers.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut failed = 0usize;
            let mut i = k;
            // Bounded by time and by a count no run reaches.
            while Instant::now() < end && lat.len() + failed < 10_000_000 {
                let (body, allowed) = reviews.get(i);
                i += 1;
                let t = Instant::now();
                match tokio::time::timeout(REQUEST_TIMEOUT, post(&mut sender, body)).await {
                    Ok(Ok((status, resp))) if answered(status, &resp, allowed) => {
                        lat.push(t.elapsed().as_nanos() as u64);
                    }
                    Ok(Ok(_)) => failed += 1,
                    _ => {
                        failed += 1;
                        break;
                    }
                }
            }
            (lat, failed)
        }));
    }
    let mut all = Vec::new();
    let mut failed = 0;
    for w in workers {
        match tokio::time::timeout(Duration::from_secs(seconds + 10), w).await {
            Ok(Ok((lat, f))) => {
                all.extend(lat);
                failed += f;
            }
            _ => return Err("a closed-loop worker did not finish in time".into()),
        }
    }
    let cpu = cpu.stop();
    let elapsed = start.elapsed().as_secs_f64();
    let ok = all.len();
    Ok(ClosedLoop {
        conns,
        ok,
        failed,
        rps: ok as f64 / elapsed,
        latency: Latencies::new(all),
        cpu,
    })
}

/// Sequential large reviews on one connection (two warm-ups first).
async fn large_reviews(
    count: usize,
    addr: SocketAddr,
    tls: &TlsConnector,
    body: &Bytes,
) -> Result<Latencies, String> {
    let mut sender = connect(addr, tls).await?;
    let mut lat = Vec::new();
    for i in 0..count + 2 {
        let t = Instant::now();
        let (status, resp) =
            tokio::time::timeout(Duration::from_secs(10), post(&mut sender, body.clone()))
                .await
                .map_err(|_| "a 3 MiB review took more than 10 s".to_string())??;
        let d = t.elapsed();
        if !answered(status, &resp, false) {
            return Err(format!(
                "the 3 MiB review was not denied: HTTP {status}: {}",
                String::from_utf8_lossy(&resp[..resp.len().min(500)])
            ));
        }
        if i >= 2 {
            lat.push(d.as_nanos() as u64);
        }
    }
    Ok(Latencies::new(lat))
}

// ---------------------------------------------------------------------------
// The run
// ---------------------------------------------------------------------------

struct Report {
    review_bytes: usize,
    large_bytes: usize,
    mock_objects: usize,
    mock_requests: (usize, usize, usize),
    mock_log: Vec<String>,
    startup: Startup,
    /// Spawn → ready of every start, sorted.
    ready_times: Vec<Duration>,
    open: OpenLoop,
    saturation: ClosedLoop,
    large: Latencies,
    /// Server CPU over the large-review phase (warm-ups included).
    large_cpu: CpuUse,
    rss_idle_kib: u64,
    rss_open_kib: u64,
    rss_saturation_kib: u64,
    rss_large_kib: u64,
    hwm_before_large_kib: u64,
    hwm_kib: u64,
    idle_memory: Memory,
    end_memory: Memory,
    /// Spawn → first and last LIST seen by the mock.
    lists_seen: (Option<Duration>, Option<Duration>),
    load_before: String,
    load_after: String,
}

async fn run(cfg: &Config) -> Result<Report, String> {
    let load_before = loadavg();
    if !cfg.server_bin.exists() {
        return Err(format!(
            "{} does not exist: run `cargo build --release` first",
            cfg.server_bin.display()
        ));
    }
    let reviews = Reviews {
        denied: Bytes::from(fixture::review_14k(Variant::Denied)),
        allowed: Bytes::from(fixture::review_14k(Variant::Allowed)),
    };
    let large = Bytes::from(fixture::review_3mib(Variant::Denied));
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;

    // The mock API server.
    let mock = Arc::new(Mock::from_examples()?);
    let api = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let api_addr = api.local_addr().map_err(|e| e.to_string())?;
    let router = Router::new().fallback(mock_api).with_state(mock.clone());
    tokio::spawn(async move {
        let _ = axum::serve(api, router).await;
    });
    let kubeconfig = write_kubeconfig(dir.path(), api_addr)?;

    let tls_dir = dir.path().join("tls");
    std::fs::create_dir(&tls_dir).map_err(|e| e.to_string())?;
    let tls = tls_connector(write_certificates(&tls_dir)?)?;

    // Start the server a few times for the startup figure (each start
    // lists and watches everything again), then once more to measure.
    let mut ready_times = Vec::new();
    for n in 0..cfg.starts {
        let (mut server, spawned, addr, admin) =
            spawn_server(cfg, dir.path(), &kubeconfig, &tls_dir, n)?;
        let s = wait_ready(&mut server, spawned, addr, admin, &tls, &reviews.denied).await?;
        ready_times.push(s.ready);
    }
    if let Ok(mut seen) = mock.lists_seen.lock() {
        *seen = (None, None);
    }
    let (mut server, spawned, addr, admin) =
        spawn_server(cfg, dir.path(), &kubeconfig, &tls_dir, cfg.starts)?;
    let pid = server.child.id();
    let startup = wait_ready(&mut server, spawned, addr, admin, &tls, &reviews.denied).await?;
    ready_times.push(startup.ready);
    ready_times.sort();

    let idle_memory = memory_kib(pid).unwrap_or_default();
    // Check both answers before measuring (the large review is checked on
    // every answer of its phase).
    {
        let mut s = connect(addr, &tls).await?;
        for (body, want) in [(&reviews.denied, false), (&reviews.allowed, true)] {
            let (status, resp) = post(&mut s, body.clone()).await?;
            if !answered(status, &resp, want) {
                return Err(format!(
                    "{} byte review: expected allowed={want}, got HTTP {status}: {}",
                    body.len(),
                    String::from_utf8_lossy(&resp[..resp.len().min(1000)])
                ));
            }
        }
    }

    let hz = clock_ticks();
    let meter = || CpuMeter::start(pid, cfg.server_cpu.clone(), cfg.client_cpu.clone(), hz);
    let sampler = RssSampler::start(pid, Duration::from_secs(cfg.seconds * 4 + 120));
    let rss_idle_kib = sampler.take_peak(pid);

    // Warm up (connections, allocator, caches); not reported.
    closed_loop(4, 1, addr, &tls, &reviews, meter).await?;
    let _ = sampler.take_peak(pid);

    let open = open_loop(cfg, addr, &tls, &reviews, meter).await?;
    let rss_open_kib = sampler.take_peak(pid);

    let saturation = closed_loop(cfg.sat_conns, cfg.seconds, addr, &tls, &reviews, meter).await?;
    let rss_saturation_kib = sampler.take_peak(pid);
    let hwm_before_large_kib = memory_kib(pid).map_or(0, |m| m.hwm);

    let large_meter = meter();
    let large_lat = large_reviews(cfg.large_count, addr, &tls, &large).await?;
    let large_cpu = large_meter.stop();
    let rss_large_kib = sampler.take_peak(pid);
    let end_memory = memory_kib(pid).unwrap_or_default();
    let hwm_kib = end_memory.hwm;
    if let Some(e) = server.exited() {
        return Err(e);
    }
    drop(sampler);
    let mock_log = mock.log.lock().map(|l| l.clone()).unwrap_or_default();
    let lists_seen = mock
        .lists_seen
        .lock()
        .map(|s| {
            let since = |t: Option<Instant>| t.map(|t| t.saturating_duration_since(spawned));
            (since(s.0), since(s.1))
        })
        .unwrap_or((None, None));
    Ok(Report {
        review_bytes: reviews.denied.len(),
        large_bytes: large.len(),
        mock_objects: mock.objects,
        mock_requests: (
            mock.list_requests.load(Ordering::Relaxed),
            mock.watch_requests.load(Ordering::Relaxed),
            mock.unknown_requests.load(Ordering::Relaxed),
        ),
        mock_log,
        startup,
        ready_times,
        open,
        saturation,
        large: large_lat,
        large_cpu,
        rss_idle_kib,
        rss_open_kib,
        rss_saturation_kib,
        rss_large_kib,
        hwm_before_large_kib,
        hwm_kib,
        idle_memory,
        end_memory,
        lists_seen,
        load_before,
        load_after: loadavg(),
    })
}

// ---------------------------------------------------------------------------
// Output
// ---------------------------------------------------------------------------

fn pct(x: Option<f64>) -> String {
    x.map_or("n/a".into(), |v| format!("{:.0}%", v * 100.0))
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn verdict(ok: bool) -> &'static str {
    if ok { "PASS" } else { "MISS" }
}

impl Report {
    fn print(&self, cfg: &Config) {
        let s = &self.startup;
        let o = &self.open;
        let c = &self.saturation;
        println!();
        println!("== residency-guard webhook load benchmark ==");
        println!(
            "server: {} (CPU {}), load generator + mock API: CPU {}; priority {}",
            cfg.server_bin.display(),
            cfg.server_cpu.as_deref().unwrap_or("any"),
            cfg.client_cpu.as_deref().unwrap_or("any"),
            cfg.priority.name()
        );
        println!(
            "reviews: {} bytes (Deployment CREATE, denied/allowed alternated), large: {} bytes",
            self.review_bytes, self.large_bytes
        );
        println!(
            "mock API: {} objects; {} LIST, {} WATCH, {} unknown requests",
            self.mock_objects, self.mock_requests.0, self.mock_requests.1, self.mock_requests.2
        );
        if std::env::var_os("RG_BENCH_VERBOSE").is_some() || self.mock_requests.2 > 0 {
            for line in &self.mock_log {
                println!("  {line}");
            }
        }
        println!(
            "load average before/after: {} / {}",
            self.load_before, self.load_after
        );
        println!();
        let ready_median = self.ready_times[self.ready_times.len() / 2];
        println!(
            "startup, spawn -> TLS handshake and /readyz 200, {} starts: median {:.1} ms, min {:.1} ms, max {:.1} ms",
            self.ready_times.len(),
            ready_median.as_secs_f64() * 1e3,
            self.ready_times[0].as_secs_f64() * 1e3,
            self.ready_times[self.ready_times.len() - 1].as_secs_f64() * 1e3
        );
        let ms = |d: Option<Duration>| {
            d.map_or("n/a".to_string(), |d| {
                format!("{:.1} ms", d.as_secs_f64() * 1e3)
            })
        };
        println!(
            "last start, from spawn: admin port answers {}, first LIST {}, last LIST {}",
            ms(s.admin_up),
            ms(self.lists_seen.0),
            ms(self.lists_seen.1)
        );
        println!(
            "last start: first TLS handshake {:.1} ms, /readyz 200 {:.1} ms, first correct denial {}; {} review(s) allowed after /readyz before the snapshot was published",
            s.tls.as_secs_f64() * 1e3,
            s.readyz.as_secs_f64() * 1e3,
            s.first_correct_denial.map_or("never".into(), |d| format!(
                "{:.1} ms",
                d.as_secs_f64() * 1e3
            )),
            s.allowed_after_ready
        );
        println!(
            "open loop {} rps x {} s over {} connections: {}",
            cfg.rate,
            cfg.seconds,
            cfg.conns,
            o.latency.summary()
        );
        println!(
            "  scheduled {}, dispatched {}, answered correctly {}, errors {}, timeouts (>{} s) {}, wrong answers {}, achieved {:.0} rps",
            cfg.rate * cfg.seconds,
            o.sent,
            o.ok,
            o.errors,
            REQUEST_TIMEOUT.as_secs(),
            o.timeouts,
            o.wrong,
            o.achieved_rps
        );
        println!(
            "  measured from the actual send instead: {}",
            o.from_send.summary()
        );
        println!(
            "  generator dispatch lateness: p99 {:.3} ms, max {:.3} ms; server CPU {:.0}% of a core ({:.1} µs/review); server core busy {}, generator core busy {}",
            o.dispatch_late.ms(0.99),
            o.dispatch_late.max_ms(),
            o.cpu.server_s / o.cpu.wall_s * 100.0,
            o.cpu.server_s / o.ok.max(1) as f64 * 1e6,
            pct(o.cpu.core_server_busy),
            pct(o.cpu.core_client_busy)
        );
        println!(
            "saturation, closed loop, {} connections x {} s: {:.0} reviews/s ({} ok, {} failed); {}",
            c.conns,
            cfg.seconds,
            c.rps,
            c.ok,
            c.failed,
            c.latency.summary()
        );
        let server_share = c.cpu.server_s / c.cpu.wall_s;
        let client_share = c.cpu.client_s / c.cpu.wall_s;
        let cpu_per_review = c.cpu.server_s / c.ok.max(1) as f64;
        println!(
            "  server CPU {:.0}% of a core = {:.1} µs/review (=> {:.0} reviews/s per fully used core); generator CPU {:.0}%; server core busy {} (others {}), generator core busy {}",
            server_share * 100.0,
            cpu_per_review * 1e6,
            1.0 / cpu_per_review.max(1e-9),
            client_share * 100.0,
            pct(c.cpu.core_server_busy),
            pct(c.cpu.core_server_busy.map(|b| (b - server_share).max(0.0))),
            pct(c.cpu.core_client_busy)
        );
        if client_share > 0.9 && server_share < 0.9 {
            println!(
                "  note: the load generator used its whole core while the server did not; the saturation figure is a lower bound"
            );
        }
        println!(
            "3 MiB review, sequential, n = {}: p50 {:.3} ms, max {:.3} ms; server CPU {:.2} ms/review",
            self.large.sorted.len(),
            self.large.ms(0.5),
            self.large.max_ms(),
            self.large_cpu.server_s * 1e3 / (self.large.sorted.len() + 2) as f64
        );
        println!(
            "server memory: VmRSS idle {:.1} MiB, peak at 1k rps {:.1} MiB, peak at saturation {:.1} MiB, peak with 3 MiB reviews {:.1} MiB; VmHWM {:.1} MiB before the 3 MiB reviews, {:.1} MiB at the end",
            mib(self.rss_idle_kib),
            mib(self.rss_open_kib),
            mib(self.rss_saturation_kib),
            mib(self.rss_large_kib),
            mib(self.hwm_before_large_kib),
            mib(self.hwm_kib)
        );
        println!("  idle: {}", self.idle_memory.describe());
        println!("  end:  {}", self.end_memory.describe());

        // Machine-readable: RESULT <key> <measured> <target> <PASS|MISS|INFO>
        let dropped = cfg.rate as usize * cfg.seconds as usize - o.ok;
        let rss_load = self.rss_open_kib.max(self.rss_saturation_kib);
        let rows: Vec<(&str, String, &str, &str)> = vec![
            (
                "p99_at_1000rps_ms",
                format!("{:.3}", o.latency.ms(0.99)),
                "<=2",
                verdict(o.latency.ms(0.99) <= 2.0),
            ),
            (
                "dropped_at_1000rps",
                dropped.to_string(),
                "0",
                verdict(dropped == 0),
            ),
            (
                "saturation_rps",
                format!("{:.0}", c.rps),
                ">=10000",
                verdict(c.rps >= 10_000.0),
            ),
            (
                "server_cpu_us_per_review",
                format!("{:.1}", cpu_per_review * 1e6),
                "-",
                "INFO",
            ),
            (
                "review_3mib_p50_ms",
                format!("{:.3}", self.large.ms(0.5)),
                "<=5",
                verdict(self.large.ms(0.5) <= 5.0),
            ),
            (
                "rss_under_load_mib",
                format!("{:.1}", mib(rss_load)),
                "<=32",
                verdict(mib(rss_load) <= 32.0),
            ),
            (
                "rss_hwm_incl_3mib_mib",
                format!("{:.1}", mib(self.hwm_kib)),
                "-",
                "INFO",
            ),
            (
                "tls_ready_ms",
                format!("{:.1}", ready_median.as_secs_f64() * 1e3),
                "<=100",
                verdict(ready_median <= Duration::from_millis(100)),
            ),
            (
                "first_correct_denial_ms",
                s.first_correct_denial
                    .map_or("never".into(), |d| format!("{:.1}", d.as_secs_f64() * 1e3)),
                "-",
                "INFO",
            ),
        ];
        println!();
        for (key, value, target, v) in rows {
            println!("RESULT {key} {value} {target} {v}");
        }
    }
}

// ---------------------------------------------------------------------------
// Hostile clients and shutdown (RG_BENCH_SCENARIO=abuse)
// ---------------------------------------------------------------------------

/// The two targets of the hardening issue, against the real binary:
///
/// 1. **SIGTERM under load**: two replicas; 500 reviews/s go to replica A
///    until it receives SIGTERM, and to replica B from `RG_BENCH_PROPAGATION_MS`
///    (1,000) later, as the API server's Service does once the endpoint of a
///    terminating pod is withdrawn. A keeps serving what reaches it
///    meanwhile (its listener closes only after `--shutdown-delay-seconds`)
///    and drains in-flight reviews. Target: 0 reviews lost.
/// 2. **Stalled clients**: 200 connections held by a hostile client (80 raw
///    TCP without a handshake, 80 TLS with half a request head, 40 TLS
///    requests declaring 7 MiB that send all but one byte, all from
///    127.0.0.3: another source than the real traffic), each reopened
///    as soon as the server closes it, while real traffic runs at 200
///    reviews/s. Target: p99 under 10 ms and resident memory under the
///    chart's memory limit (256 MiB).
///
/// Knobs: `RG_BENCH_SIGTERM_RATE` (500), `RG_BENCH_SIGTERM_SECONDS` (10,
/// SIGTERM after 3), `RG_BENCH_STALLED` (200), `RG_BENCH_STALLED_RATE` (200),
/// `RG_BENCH_SECONDS` (10, the stalled phase).
mod abuse {
    use super::*;
    use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

    const MEMORY_LIMIT_MIB: f64 = 256.0;

    pub struct Cardinality {
        bytes_before: usize,
        bytes_after: usize,
        series_before: usize,
        series_after: usize,
        statuses: Vec<u16>,
        rss_kib: u64,
    }

    pub struct Amplification {
        rate: u64,
        seconds: u64,
        took: f64,
        ok: usize,
        other: usize,
        errors: usize,
        /// The operator's residency_guard_review_api_requests_total.
        own_requests: f64,
        /// What the mock API server saw (LISTs and unknown paths).
        mock_requests: usize,
        budget: String,
        rss_peak_kib: u64,
    }

    pub struct FairShare {
        idle_target: usize,
        held_at_start: usize,
        hostile_rate: u64,
        hostile: (usize, usize, usize),
        rate: u64,
        seconds: u64,
        real: Routed,
        rss_peak_kib: u64,
        hwm_kib: u64,
        refused: String,
    }

    pub struct Report {
        cardinality: Cardinality,
        amplification: Amplification,
        fair_share: FairShare,
        rate: u64,
        seconds: u64,
        propagation: Duration,
        sigterm: Routed,
        a_exit: String,
        a_exit_after: Option<Duration>,
        stalled_target: usize,
        stalled_rate: u64,
        stalled_seconds: u64,
        stalled: Routed,
        reopened: usize,
        by_kind: [usize; 3],
        rss_before_kib: u64,
        rss_peak_kib: u64,
        hwm_kib: u64,
        refused: String,
    }

    /// Open-loop results, routed between two servers.
    #[derive(Default)]
    pub struct Routed {
        latency: Latencies,
        scheduled: usize,
        ok: usize,
        errors: usize,
        timeouts: usize,
        wrong: usize,
        to: [usize; 2],
        error_samples: Vec<String>,
    }

    impl Routed {
        fn lost(&self) -> usize {
            self.scheduled - self.ok
        }
    }

    /// Fixed-rate open loop; each review goes to `addrs[route]` as `route`
    /// reads when it is due. Latency from the due time.
    async fn routed_open_loop(
        rate: u64,
        seconds: u64,
        conns: usize,
        addrs: [SocketAddr; 2],
        route: Arc<AtomicUsize>,
        tls: &TlsConnector,
        reviews: &Reviews,
    ) -> Result<Routed, String> {
        let total = (rate * seconds) as usize;
        let interval = Duration::from_nanos(1_000_000_000 / rate);
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<(usize, Instant)>();
        let rx = Arc::new(tokio::sync::Mutex::new(rx));
        let start = Instant::now() + Duration::from_millis(20);
        let dispatcher = std::thread::spawn(move || {
            for i in 0..total {
                let due = start + interval * i as u32;
                let now = Instant::now();
                if due > now {
                    std::thread::sleep(due - now);
                }
                if tx.send((i, due)).is_err() {
                    break;
                }
            }
        });
        let mut workers = Vec::new();
        for _ in 0..conns {
            let rx = rx.clone();
            let reviews = reviews.clone();
            let tls = tls.clone();
            let route = route.clone();
            workers.push(tokio::spawn(async move {
                let mut r = Routed::default();
                let mut lat = Vec::new();
                let mut senders: [Option<Sender>; 2] = [None, None];
                loop {
                    let next = rx.lock().await.recv().await;
                    let Some((i, due)) = next else { break };
                    r.scheduled += 1;
                    let t = route.load(Ordering::Relaxed).min(1);
                    r.to[t] += 1;
                    if senders[t].is_none() {
                        match connect(addrs[t], &tls).await {
                            Ok(s) => senders[t] = Some(s),
                            Err(e) => {
                                r.errors += 1;
                                if r.error_samples.len() < 5 {
                                    r.error_samples
                                        .push(format!("connect to {}: {e}", addrs[t]));
                                }
                                continue;
                            }
                        }
                    }
                    let Some(sender) = senders[t].as_mut() else {
                        continue;
                    };
                    let (body, allowed) = reviews.get(i);
                    match tokio::time::timeout(REQUEST_TIMEOUT, post_pooled(sender, body)).await {
                        Ok(Ok((status, resp, close))) if answered(status, &resp, allowed) => {
                            lat.push(due.elapsed().as_nanos() as u64);
                            if close {
                                senders[t] = None;
                            }
                        }
                        Ok(Ok((status, resp, close))) => {
                            if close {
                                senders[t] = None;
                            }
                            r.wrong += 1;
                            if r.error_samples.len() < 5 {
                                r.error_samples.push(format!(
                                    "HTTP {status}: {}",
                                    String::from_utf8_lossy(&resp[..resp.len().min(200)])
                                ));
                            }
                        }
                        Ok(Err(e)) => {
                            r.errors += 1;
                            if r.error_samples.len() < 5 {
                                r.error_samples.push(format!("to {}: {e}", addrs[t]));
                            }
                            senders[t] = None;
                        }
                        Err(_) => {
                            r.timeouts += 1;
                            senders[t] = None;
                        }
                    }
                }
                r.ok = lat.len();
                (r, lat)
            }));
        }
        let mut out = Routed::default();
        let mut all = Vec::new();
        for w in workers {
            match tokio::time::timeout(Duration::from_secs(seconds + 20), w).await {
                Ok(Ok((r, lat))) => {
                    all.extend(lat);
                    out.scheduled += r.scheduled;
                    out.ok += r.ok;
                    out.errors += r.errors;
                    out.timeouts += r.timeouts;
                    out.wrong += r.wrong;
                    out.to[0] += r.to[0];
                    out.to[1] += r.to[1];
                    out.error_samples.extend(r.error_samples);
                }
                _ => return Err("an open-loop worker did not finish in time".into()),
            }
        }
        let _ = dispatcher.join();
        out.latency = Latencies::new(all);
        Ok(out)
    }

    async fn until_closed(mut s: impl AsyncRead + Unpin, stop: &AtomicBool) {
        let mut buf = [0u8; 1024];
        loop {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            match tokio::time::timeout(Duration::from_millis(500), s.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return,
                _ => {}
            }
        }
    }

    /// One hostile slot: open a stalled connection of its kind, wait until
    /// the server closes it, open the next; counts the connections opened.
    async fn stall_slot(
        kind: usize,
        addr: SocketAddr,
        tls: TlsConnector,
        stop: Arc<AtomicBool>,
        opened: Arc<AtomicUsize>,
    ) {
        let large = vec![b' '; 7 * 1024 * 1024 - 1];
        while !stop.load(Ordering::Relaxed) {
            let began = Instant::now();
            // The hostile client is another source than the real traffic
            // (127.0.0.1), as a pod is another address than the API server.
            let Ok(tcp) = connect_tcp_from(addr, STALL_SOURCE).await else {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            };
            opened.fetch_add(1, Ordering::Relaxed);
            if kind == 0 {
                until_closed(tcp, &stop).await;
            } else {
                let name = ServerName::IpAddress(addr.ip().into());
                let Ok(Ok(mut s)) =
                    tokio::time::timeout(Duration::from_secs(5), tls.connect(name, tcp)).await
                else {
                    // Refused (closed at accept): back off like the others,
                    // not a reconnect storm.
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                };
                if kind == 1 {
                    let _ = s
                        .write_all(b"POST /validate/workloads HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: app")
                        .await;
                } else {
                    let head = format!(
                        "POST /validate/workloads HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                        large.len() + 1
                    );
                    let _ = s.write_all(head.as_bytes()).await;
                    let _ = s.flush().await;
                    // Refused at once (429) when the budget is full: then
                    // the write fails and the read sees the close.
                    let _ = s.write_all(&large).await;
                }
                let _ = s.flush().await;
                until_closed(s, &stop).await;
            }
            // Do not turn into a reconnect storm when refused at once.
            if began.elapsed() < Duration::from_secs(1) {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }

    fn refused_metrics(text: &str) -> String {
        text.lines()
            .filter(|l| l.starts_with("residency_guard_webhook_refused_total{"))
            .map(|l| l.trim_start_matches("residency_guard_webhook_refused_total"))
            .collect::<Vec<_>>()
            .join(", ")
    }

    async fn metrics(admin: SocketAddr) -> String {
        let attempt = async {
            let tcp = TcpStream::connect(admin).await.ok()?;
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
                .await
                .ok()?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            let req = hyper::Request::get("/metrics")
                .header(header::HOST, "127.0.0.1")
                .body(Empty::<Bytes>::new())
                .ok()?;
            let resp = sender.send_request(req).await.ok()?;
            let body = resp.into_body().collect().await.ok()?.to_bytes();
            Some(String::from_utf8_lossy(&body).into_owned())
        };
        tokio::time::timeout(Duration::from_secs(2), attempt)
            .await
            .ok()
            .flatten()
            .unwrap_or_default()
    }

    /// `base` (a review in namespace `payments`) as a forged one: in
    /// namespace `ns`, with `kind` as its `request.kind.kind`.
    fn forged(base: &[u8], ns: &str, kind: Option<&str>) -> Bytes {
        let mut v: Value = serde_json::from_slice(base).unwrap_or_default();
        v["request"]["namespace"] = json!(ns);
        v["request"]["object"]["metadata"]["namespace"] = json!(ns);
        v["request"]["uid"] = json!(format!("forged-{ns}"));
        if let Some(k) = kind {
            v["request"]["kind"]["kind"] = json!(k);
        }
        Bytes::from(serde_json::to_vec(&v).unwrap_or_default())
    }

    /// Where the stalled clients connect from.
    const STALL_SOURCE: std::net::Ipv4Addr = std::net::Ipv4Addr::new(127, 0, 0, 3);

    async fn connect_tcp_from(
        addr: SocketAddr,
        source: std::net::Ipv4Addr,
    ) -> Result<TcpStream, String> {
        let socket = tokio::net::TcpSocket::new_v4().map_err(|e| e.to_string())?;
        socket
            .bind(SocketAddr::new(source.into(), 0))
            .map_err(|e| format!("bind {source}: {e}"))?;
        socket
            .connect(addr)
            .await
            .map_err(|e| format!("connect: {e}"))
    }

    /// A TLS connection from `source` (another loopback address).
    async fn connect_from(
        addr: SocketAddr,
        source: std::net::IpAddr,
        tls: &TlsConnector,
    ) -> Result<Sender, String> {
        let stream = tls_from(addr, source, tls).await?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("HTTP handshake: {e}"))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(sender)
    }

    async fn tls_from(
        addr: SocketAddr,
        source: std::net::IpAddr,
        tls: &TlsConnector,
    ) -> Result<tokio_rustls::client::TlsStream<TcpStream>, String> {
        let socket = tokio::net::TcpSocket::new_v4().map_err(|e| e.to_string())?;
        socket
            .bind(SocketAddr::new(source, 0))
            .map_err(|e| format!("bind {source}: {e}"))?;
        let tcp = socket
            .connect(addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let name = ServerName::IpAddress(addr.ip().into());
        tls.connect(name, tcp)
            .await
            .map_err(|e| format!("TLS handshake: {e}"))
    }

    /// Forged reviews at a fixed rate from `source`, cycling through
    /// `bodies`; returns (answered 200, other statuses, errors).
    async fn forged_loop(
        rate: u64,
        seconds: u64,
        conns: usize,
        addr: SocketAddr,
        source: std::net::IpAddr,
        tls: &TlsConnector,
        bodies: Arc<Vec<Bytes>>,
    ) -> (usize, usize, usize) {
        let total = (rate * seconds) as usize;
        let interval = Duration::from_nanos(1_000_000_000 / rate);
        let next = Arc::new(AtomicUsize::new(0));
        let start = Instant::now() + Duration::from_millis(20);
        let mut workers = Vec::new();
        for _ in 0..conns {
            let (next, bodies, tls) = (next.clone(), bodies.clone(), tls.clone());
            workers.push(tokio::spawn(async move {
                let (mut ok, mut other, mut errors) = (0, 0, 0);
                let mut sender: Option<Sender> = None;
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= total {
                        break;
                    }
                    let due = start + interval * i as u32;
                    let now = Instant::now();
                    if due > now {
                        tokio::time::sleep(due - now).await;
                    }
                    if sender.is_none() {
                        match connect_from(addr, source, &tls).await {
                            Ok(s) => sender = Some(s),
                            Err(_) => {
                                errors += 1;
                                continue;
                            }
                        }
                    }
                    let Some(s) = sender.as_mut() else { continue };
                    let body = bodies[i % bodies.len()].clone();
                    match tokio::time::timeout(REQUEST_TIMEOUT, post(s, body)).await {
                        Ok(Ok((200, _))) => ok += 1,
                        Ok(Ok(_)) => {
                            other += 1;
                            sender = None;
                        }
                        _ => {
                            errors += 1;
                            sender = None;
                        }
                    }
                }
                (ok, other, errors)
            }));
        }
        let mut out = (0, 0, 0);
        for w in workers {
            if let Ok((a, b, c)) = w.await {
                out.0 += a;
                out.1 += b;
                out.2 += c;
            }
        }
        out
    }

    /// Hold `n` idle TLS connections from `source`, each reopened (after a
    /// second) when the server closes it; counts the handshakes completed.
    async fn hold_idle(
        addr: SocketAddr,
        source: std::net::IpAddr,
        tls: TlsConnector,
        stop: Arc<AtomicBool>,
        held: Arc<AtomicUsize>,
    ) {
        while !stop.load(Ordering::Relaxed) {
            if let Ok(s) = tls_from(addr, source, &tls).await {
                held.fetch_add(1, Ordering::Relaxed);
                until_closed(s, &stop).await;
                held.fetch_sub(1, Ordering::Relaxed);
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    fn metric_sum(text: &str, prefix: &str) -> f64 {
        text.lines()
            .filter(|l| l.starts_with(prefix))
            .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
            .sum()
    }

    fn series_count(text: &str) -> usize {
        text.lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .count()
    }

    /// Random-looking lowercase text (xorshift), `len` bytes.
    fn noise(seed: &mut u64, len: usize) -> String {
        (0..len)
            .map(|_| {
                *seed ^= *seed << 13;
                *seed ^= *seed >> 7;
                *seed ^= *seed << 17;
                char::from(b'a' + (*seed % 26) as u8)
            })
            .collect()
    }

    pub async fn run(cfg: &Config) -> Result<Report, String> {
        if !cfg.server_bin.exists() {
            return Err(format!(
                "{} does not exist: run `cargo build --release` first",
                cfg.server_bin.display()
            ));
        }
        let reviews = Reviews {
            denied: Bytes::from(fixture::review_14k(Variant::Denied)),
            allowed: Bytes::from(fixture::review_14k(Variant::Allowed)),
        };
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let mock = Arc::new(Mock::from_examples()?);
        let api = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| e.to_string())?;
        let api_addr = api.local_addr().map_err(|e| e.to_string())?;
        let router = Router::new().fallback(mock_api).with_state(mock.clone());
        tokio::spawn(async move {
            let _ = axum::serve(api, router).await;
        });
        let kubeconfig = write_kubeconfig(dir.path(), api_addr)?;
        let tls_dir = dir.path().join("tls");
        std::fs::create_dir(&tls_dir).map_err(|e| e.to_string())?;
        let tls = tls_connector(write_certificates(&tls_dir)?)?;

        // --- 1. SIGTERM under load -------------------------------------
        let rate = env_num("RG_BENCH_SIGTERM_RATE", 500u64).clamp(1, 100_000);
        let seconds = env_num("RG_BENCH_SIGTERM_SECONDS", 10u64).clamp(5, 120);
        let propagation =
            Duration::from_millis(env_num("RG_BENCH_PROPAGATION_MS", 1000u64).min(4000));
        let (mut a, a_spawned, a_addr, a_admin) =
            spawn_server(cfg, dir.path(), &kubeconfig, &tls_dir, 100)?;
        wait_ready(&mut a, a_spawned, a_addr, a_admin, &tls, &reviews.denied).await?;
        let (mut b, b_spawned, b_addr, b_admin) =
            spawn_server(cfg, dir.path(), &kubeconfig, &tls_dir, 101)?;
        wait_ready(&mut b, b_spawned, b_addr, b_admin, &tls, &reviews.denied).await?;
        let route = Arc::new(AtomicUsize::new(0));
        let a_pid = a.child.id();
        let r = route.clone();
        let sigterm_at = Duration::from_secs(3);
        let signaller = tokio::spawn(async move {
            tokio::time::sleep(sigterm_at).await;
            let sent = Instant::now();
            let ok = Command::new("kill")
                .args(["-TERM", &a_pid.to_string()])
                .status()
                .is_ok_and(|s| s.success());
            tokio::time::sleep(propagation).await;
            r.store(1, Ordering::Relaxed);
            (ok, sent)
        });
        let sigterm =
            routed_open_loop(rate, seconds, 8, [a_addr, b_addr], route, &tls, &reviews).await?;
        let (signalled, sent) = signaller.await.map_err(|e| e.to_string())?;
        if !signalled {
            return Err("could not send SIGTERM to replica A".into());
        }
        // A exits after its shutdown delay and drain.
        let mut a_exit = "still running 30 s after SIGTERM".to_string();
        let mut a_exit_after = None;
        while sent.elapsed() < Duration::from_secs(30) {
            if let Ok(Some(status)) = a.child.try_wait() {
                a_exit = status.to_string();
                a_exit_after = Some(sent.elapsed());
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let a_log = a.stderr_tail();
        if !a_log.is_empty() {
            eprintln!("replica A stderr (tail):\n{a_log}");
        }
        drop(a);
        drop(b);

        // --- 2. Stalled connections + real traffic ----------------------
        let stalled_target = env_num("RG_BENCH_STALLED", 200usize).clamp(1, 2000);
        let stalled_rate = env_num("RG_BENCH_STALLED_RATE", 200u64).clamp(1, 100_000);
        let stalled_seconds = cfg.seconds;
        let (mut server, spawned, addr, admin) =
            spawn_server(cfg, dir.path(), &kubeconfig, &tls_dir, 102)?;
        wait_ready(&mut server, spawned, addr, admin, &tls, &reviews.denied).await?;
        let pid = server.child.id();
        // Warm up the real traffic path first.
        closed_loop(4, 1, addr, &tls, &reviews, || {
            CpuMeter::start(pid, None, None, clock_ticks())
        })
        .await?;
        let rss_before_kib = memory_kib(pid).map_or(0, |m| m.rss);
        let stop = Arc::new(AtomicBool::new(false));
        let opened = Arc::new(AtomicUsize::new(0));
        let mut by_kind = [0usize; 3];
        let mut slots = Vec::new();
        for i in 0..stalled_target {
            // 40% raw TCP, 40% half heads, 20% large stalled bodies.
            let kind = match i % 5 {
                0 | 1 => 0,
                2 | 3 => 1,
                _ => 2,
            };
            by_kind[kind] += 1;
            slots.push(tokio::spawn(stall_slot(
                kind,
                addr,
                tls.clone(),
                stop.clone(),
                opened.clone(),
            )));
        }
        // Let them all connect before the measured traffic starts.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let sampler = RssSampler::start(pid, Duration::from_secs(stalled_seconds + 60));
        let _ = sampler.take_peak(pid);
        let stalled = routed_open_loop(
            stalled_rate,
            stalled_seconds,
            4,
            [addr, addr],
            Arc::new(AtomicUsize::new(0)),
            &tls,
            &reviews,
        )
        .await?;
        let rss_peak_kib = sampler.take_peak(pid);
        let hwm_kib = memory_kib(pid).map_or(0, |m| m.hwm);
        let refused = refused_metrics(&metrics(admin).await);
        stop.store(true, Ordering::Relaxed);
        for s in slots {
            let _ = tokio::time::timeout(Duration::from_secs(5), s).await;
        }
        if let Some(e) = server.exited() {
            return Err(e);
        }
        drop(server);

        // --- 3. Forged kinds: the metrics stay bounded -----------------
        let (mut server, spawned, addr, admin) =
            spawn_server(cfg, dir.path(), &kubeconfig, &tls_dir, 103)?;
        wait_ready(&mut server, spawned, addr, admin, &tls, &reviews.denied).await?;
        let pid = server.child.id();
        let mut sender = connect(addr, &tls).await?;
        // Every short label set first (a real review, a forged kind).
        post(&mut sender, reviews.allowed.clone()).await?;
        post(
            &mut sender,
            forged(&reviews.denied, "payments", Some("Short")),
        )
        .await?;
        let metrics_before = metrics(admin).await;
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut forged_statuses = Vec::new();
        for i in 0..16 {
            let kind = noise(&mut seed, 256 * 1024);
            let body = forged(&reviews.denied, &format!("kinds-{i}"), Some(&kind));
            let mut s = connect(addr, &tls).await?;
            forged_statuses.push(post(&mut s, body).await?.0);
        }
        let metrics_after = metrics(admin).await;
        let cardinality = Cardinality {
            bytes_before: metrics_before.len(),
            bytes_after: metrics_after.len(),
            series_before: series_count(&metrics_before),
            series_after: series_count(&metrics_after),
            statuses: forged_statuses,
            rss_kib: memory_kib(pid).map_or(0, |m| m.rss),
        };

        // --- 4. Amplification: forged denials, the API requests they cause
        let amp_rate = env_num("RG_BENCH_AMPLIFY_RATE", 1000u64).clamp(1, 100_000);
        let amp_seconds = env_num("RG_BENCH_AMPLIFY_SECONDS", 60u64).clamp(1, 600);
        // Denial-shaped, spread over 1,000 namespaces (a per-namespace
        // limit alone would not hold) and the real one.
        let mut bodies = vec![reviews.denied.clone()];
        for i in 0..1000 {
            bodies.push(forged(&reviews.denied, &format!("forged-{i}"), None));
        }
        let bodies = Arc::new(bodies);
        let mock_before = mock.list_requests.load(Ordering::Relaxed)
            + mock.unknown_requests.load(Ordering::Relaxed);
        let own_before = metric_sum(
            &metrics(admin).await,
            "residency_guard_review_api_requests_total",
        );
        let sampler = RssSampler::start(pid, Duration::from_secs(amp_seconds + 60));
        let _ = sampler.take_peak(pid);
        let started = Instant::now();
        let (amp_ok, amp_other, amp_errors) = forged_loop(
            amp_rate,
            amp_seconds,
            8,
            addr,
            "127.0.0.1".parse().map_err(|e| format!("{e}"))?,
            &tls,
            bodies.clone(),
        )
        .await;
        let took = started.elapsed().as_secs_f64();
        let amp_rss_peak_kib = sampler.take_peak(pid);
        drop(sampler);
        let text = metrics(admin).await;
        let own = metric_sum(&text, "residency_guard_review_api_requests_total") - own_before;
        let mock_seen = mock.list_requests.load(Ordering::Relaxed)
            + mock.unknown_requests.load(Ordering::Relaxed)
            - mock_before;
        let budget_lines: Vec<String> = text
            .lines()
            .filter(|l| l.starts_with("residency_guard_review_api_budget_total{"))
            .map(|l| {
                l.trim_start_matches("residency_guard_review_api_budget_total")
                    .to_string()
            })
            .collect();
        let amplification = Amplification {
            rate: amp_rate,
            seconds: amp_seconds,
            took,
            ok: amp_ok,
            other: amp_other,
            errors: amp_errors,
            own_requests: own,
            mock_requests: mock_seen,
            budget: budget_lines.join(", "),
            rss_peak_kib: amp_rss_peak_kib,
        };
        if let Some(e) = server.exited() {
            return Err(e);
        }
        drop(server);

        // --- 5. Fair sharing: one source holds 600 idle connections and
        // sends forged reviews; another's real reviews --------------------
        let idle_target = env_num("RG_BENCH_IDLE", 600usize).clamp(1, 5000);
        let hostile_rate = env_num("RG_BENCH_HOSTILE_RATE", 200u64).clamp(1, 100_000);
        let fair_seconds = cfg.seconds;
        let hostile: std::net::IpAddr = "127.0.0.2".parse().map_err(|e| format!("{e}"))?;
        let (mut server, spawned, addr, admin) =
            spawn_server(cfg, dir.path(), &kubeconfig, &tls_dir, 104)?;
        wait_ready(&mut server, spawned, addr, admin, &tls, &reviews.denied).await?;
        let pid = server.child.id();
        closed_loop(4, 1, addr, &tls, &reviews, || {
            CpuMeter::start(pid, None, None, clock_ticks())
        })
        .await?;
        let stop = Arc::new(AtomicBool::new(false));
        let held = Arc::new(AtomicUsize::new(0));
        let mut slots = Vec::new();
        for _ in 0..idle_target {
            slots.push(tokio::spawn(hold_idle(
                addr,
                hostile,
                tls.clone(),
                stop.clone(),
                held.clone(),
            )));
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        let held_at_start = held.load(Ordering::Relaxed);
        let sampler = RssSampler::start(pid, Duration::from_secs(fair_seconds + 60));
        let _ = sampler.take_peak(pid);
        let tls2 = tls.clone();
        let hostile_loop = tokio::spawn(async move {
            forged_loop(hostile_rate, fair_seconds, 4, addr, hostile, &tls2, bodies).await
        });
        let fair = routed_open_loop(
            stalled_rate,
            fair_seconds,
            4,
            [addr, addr],
            Arc::new(AtomicUsize::new(0)),
            &tls,
            &reviews,
        )
        .await?;
        let hostile_result = hostile_loop.await.map_err(|e| e.to_string())?;
        let fair_rss_peak_kib = sampler.take_peak(pid);
        let fair_hwm_kib = memory_kib(pid).map_or(0, |m| m.hwm);
        let fair_refused = refused_metrics(&metrics(admin).await);
        stop.store(true, Ordering::Relaxed);
        for s in slots {
            let _ = tokio::time::timeout(Duration::from_secs(5), s).await;
        }
        if let Some(e) = server.exited() {
            return Err(e);
        }
        let fair_share = FairShare {
            idle_target,
            held_at_start,
            hostile_rate,
            hostile: hostile_result,
            rate: stalled_rate,
            seconds: fair_seconds,
            real: fair,
            rss_peak_kib: fair_rss_peak_kib,
            hwm_kib: fair_hwm_kib,
            refused: fair_refused,
        };
        Ok(Report {
            cardinality,
            amplification,
            fair_share,
            rate,
            seconds,
            propagation,
            sigterm,
            a_exit,
            a_exit_after,
            stalled_target,
            stalled_rate,
            stalled_seconds,
            stalled,
            reopened: opened.load(Ordering::Relaxed),
            by_kind,
            rss_before_kib,
            rss_peak_kib,
            hwm_kib,
            refused,
        })
    }

    impl Report {
        pub fn print(&self) {
            let s = &self.sigterm;
            println!();
            println!("== residency-guard webhook: SIGTERM under load, stalled clients ==");
            println!(
                "SIGTERM: {} reviews/s x {} s; replica A gets SIGTERM at 3 s, traffic moves to B {} ms later",
                self.rate,
                self.seconds,
                self.propagation.as_millis()
            );
            println!(
                "  scheduled {}, answered correctly {}, lost {} (errors {}, timeouts {}, wrong {}); to A {}, to B {}; {}",
                s.scheduled,
                s.ok,
                s.lost(),
                s.errors,
                s.timeouts,
                s.wrong,
                s.to[0],
                s.to[1],
                s.latency.summary()
            );
            for e in &s.error_samples {
                println!("  error: {e}");
            }
            println!(
                "  replica A exited {} after SIGTERM: {}",
                self.a_exit_after
                    .map_or("-".into(), |d| format!("{:.2} s", d.as_secs_f64())),
                self.a_exit
            );
            let t = &self.stalled;
            println!(
                "stalled: {} hostile connections held open ({} raw TCP, {} half heads, {} 7 MiB bodies; {} connections opened in all, each reopened when closed) + {} reviews/s x {} s",
                self.stalled_target,
                self.by_kind[0],
                self.by_kind[1],
                self.by_kind[2],
                self.reopened,
                self.stalled_rate,
                self.stalled_seconds
            );
            println!(
                "  scheduled {}, answered correctly {}, lost {} (errors {}, timeouts {}, wrong {}); {}",
                t.scheduled,
                t.ok,
                t.lost(),
                t.errors,
                t.timeouts,
                t.wrong,
                t.latency.summary()
            );
            for e in &t.error_samples {
                println!("  error: {e}");
            }
            println!(
                "  server VmRSS {:.1} MiB before, peak {:.1} MiB during; VmHWM {:.1} MiB (chart limit {MEMORY_LIMIT_MIB} MiB)",
                mib(self.rss_before_kib),
                mib(self.rss_peak_kib),
                mib(self.hwm_kib)
            );
            println!("  refused by the listener: {}", self.refused);
            let c = &self.cardinality;
            println!(
                "forged kinds: 16 reviews with 256 KiB random kinds (answered {:?}): /metrics {} -> {} bytes, {} -> {} series; server VmRSS {:.1} MiB",
                c.statuses,
                c.bytes_before,
                c.bytes_after,
                c.series_before,
                c.series_after,
                mib(c.rss_kib)
            );
            let a = &self.amplification;
            println!(
                "amplification: {} forged denial-shaped reviews/s x {} s over 1,001 namespaces (took {:.1} s): answered 200 {}, other {}, errors {}",
                a.rate, a.seconds, a.took, a.ok, a.other, a.errors
            );
            println!(
                "  API requests because of reviews: {} by the operator's count ({:.1}/s), {} seen by the mock API server ({:.1}/s); budget: {}; server VmRSS peak {:.1} MiB",
                a.own_requests,
                a.own_requests / a.took,
                a.mock_requests,
                a.mock_requests as f64 / a.took,
                a.budget,
                mib(a.rss_peak_kib)
            );
            let f = &self.fair_share;
            println!(
                "fair share: source 127.0.0.2 holds {} idle TLS connections ({} open after 2 s) and sends {} forged reviews/s (answered {}, refused {}, errors {}); source 127.0.0.1 sends {} real reviews/s x {} s",
                f.idle_target,
                f.held_at_start,
                f.hostile_rate,
                f.hostile.0,
                f.hostile.1,
                f.hostile.2,
                f.rate,
                f.seconds
            );
            println!(
                "  scheduled {}, answered correctly {}, lost {} (errors {}, timeouts {}, wrong {}); {}",
                f.real.scheduled,
                f.real.ok,
                f.real.lost(),
                f.real.errors,
                f.real.timeouts,
                f.real.wrong,
                f.real.latency.summary()
            );
            for e in &f.real.error_samples {
                println!("  error: {e}");
            }
            println!(
                "  server VmRSS peak {:.1} MiB, VmHWM {:.1} MiB; refused by the listener: {}",
                mib(f.rss_peak_kib),
                mib(f.hwm_kib),
                f.refused
            );
            println!();
            let growth_kib = (c.bytes_after as f64 - c.bytes_before as f64) / 1024.0;
            let per_s = a.own_requests.max(a.mock_requests as f64) / a.took;
            let fair_p99 = f.real.latency.ms(0.99);
            let fair_peak = mib(f.hwm_kib.max(f.rss_peak_kib).max(a.rss_peak_kib));
            for (key, value, target, ok) in [
                (
                    "forged_kinds_metrics_growth_kib",
                    format!("{growth_kib:.1}"),
                    "<64",
                    growth_kib < 64.0,
                ),
                (
                    // The token bucket: at most burst (2N) + N x T over T.
                    "forged_denials_api_requests_per_s",
                    format!("{per_s:.2}"),
                    "<=20+40/T",
                    per_s <= (40.0 + 20.0 * a.took) / a.took,
                ),
                (
                    "fair_share_p99_ms",
                    format!("{fair_p99:.3}"),
                    "<10",
                    fair_p99 < 10.0,
                ),
                (
                    "fair_share_lost_reviews",
                    f.real.lost().to_string(),
                    "0",
                    f.real.lost() == 0,
                ),
                (
                    "abuse_rss_peak_mib",
                    format!("{fair_peak:.1}"),
                    "<256",
                    fair_peak < MEMORY_LIMIT_MIB,
                ),
            ] {
                println!("RESULT {key} {value} {target} {}", verdict(ok));
            }
            let p99 = t.latency.ms(0.99);
            let peak = mib(self.hwm_kib.max(self.rss_peak_kib));
            for (key, value, target, ok) in [
                (
                    "sigterm_lost_reviews",
                    s.lost().to_string(),
                    "0",
                    s.lost() == 0,
                ),
                ("stalled_p99_ms", format!("{p99:.3}"), "<10", p99 < 10.0),
                (
                    "stalled_rss_peak_mib",
                    format!("{peak:.1}"),
                    "<256",
                    peak < MEMORY_LIMIT_MIB,
                ),
                (
                    "stalled_lost_reviews",
                    t.lost().to_string(),
                    "0",
                    t.lost() == 0,
                ),
            ] {
                println!("RESULT {key} {value} {target} {}", verdict(ok));
            }
        }
    }
}
