//! Shared test support: a real HTTPS webhook server on 127.0.0.1 with a
//! generated CA, and a TLS client that trusts only that CA.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use jiff::Timestamp;
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use residency_guard::cli::load_inputs;
use residency_guard::engine::{AddressSpace, Catalogue, Lang, Snapshot, Workload};
use residency_guard::state::State;
use residency_guard::tls::CertStore;
use residency_guard::webhook::listener::{self, Limits};
use residency_guard::webhook::metrics::Metrics;
use residency_guard::webhook::server::{self, App};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_rustls::TlsConnector;

pub const NOW: &str = "2026-11-23T00:00:00Z";

/// A CA that can issue serving certificates for 127.0.0.1/localhost.
pub struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    pub cert_der: CertificateDer<'static>,
    pub cert_pem: String,
}

impl TestCa {
    pub fn new() -> TestCa {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let cert = params.self_signed(&key).unwrap();
        TestCa {
            cert_der: cert.der().clone(),
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// (cert PEM, key PEM) for localhost and 127.0.0.1.
    pub fn serving_pair(&self) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let params =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    /// (cert PEM, key PEM) of a TLS client certificate for `common_name`.
    pub fn client_pair(&self, common_name: &str) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, common_name);
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

/// A snapshot and the workloads by namespace, loaded from YAML fixtures
/// exactly as `check` loads them.
pub fn snapshot_from(paths: &[&str]) -> (Snapshot, BTreeMap<String, Vec<Workload>>) {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let files: Vec<PathBuf> = paths.iter().map(|p| root.join(p)).collect();
    let base = Snapshot::new(Catalogue::builtin().clone(), AddressSpace::builtin());
    let loaded = load_inputs(&files, base, "default", NOW.parse::<Timestamp>().unwrap()).unwrap();
    let mut workloads: BTreeMap<String, Vec<Workload>> = BTreeMap::new();
    for (_, w) in loaded.workloads {
        workloads.entry(w.namespace.clone()).or_default().push(w);
    }
    (loaded.snapshot, workloads)
}

pub struct TestServer {
    pub addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub ca: TestCa,
    pub certs: Arc<CertStore>,
    pub metrics: Arc<Metrics>,
    stop: watch::Sender<bool>,
}

impl TestServer {
    pub async fn start(
        snapshot: Snapshot,
        workloads: BTreeMap<String, Vec<Workload>>,
        lang: Lang,
        max_body: usize,
    ) -> TestServer {
        let limits = Limits {
            drain: Duration::from_secs(2),
            ..Limits::default()
        };
        TestServer::start_limited(snapshot, workloads, lang, max_body, limits).await
    }

    /// As `start`, with the listener's limits given.
    pub async fn start_limited(
        snapshot: Snapshot,
        workloads: BTreeMap<String, Vec<Workload>>,
        lang: Lang,
        max_body: usize,
        limits: Limits,
    ) -> TestServer {
        TestServer::start_with(snapshot, workloads, lang, max_body, limits, |_| {}).await
    }

    /// As `start_limited`, with the App changed by `customize` (a live
    /// reader, an authorizer, a budget).
    pub async fn start_with(
        snapshot: Snapshot,
        workloads: BTreeMap<String, Vec<Workload>>,
        lang: Lang,
        max_body: usize,
        limits: Limits,
        customize: impl FnOnce(&mut App),
    ) -> TestServer {
        let ca = TestCa::new();
        let certs = CertStore::new();
        let (cert, key) = ca.serving_pair();
        certs.replace(cert.as_bytes(), key.as_bytes()).unwrap();
        let metrics = Metrics::new();
        let app = App {
            state: State::fixed(snapshot, workloads),
            lang,
            metrics: metrics.clone(),
            max_body_bytes: max_body,
            serving: Arc::new(AtomicBool::new(true)),
            certs: certs.clone(),
            live: None,
            authorizer: None,
            budget: Arc::new(residency_guard::webhook::budget::LiveBudget::new(
                Default::default(),
            )),
        };
        let mut app = app;
        customize(&mut app);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let admin = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let admin_addr = admin.local_addr().unwrap();
        let (stop, rx) = watch::channel(false);
        let wait = |mut rx: watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        tokio::spawn(listener::serve(
            listener,
            app.clone(),
            limits,
            wait(rx.clone()),
        ));
        tokio::spawn(server::serve_admin(admin, app, wait(rx)));
        TestServer {
            addr,
            admin_addr,
            ca,
            certs,
            metrics,
            stop,
        }
    }

    pub fn client(&self) -> TlsClient {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca.cert_der.clone()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        TlsClient {
            addr: self.addr,
            connector: TlsConnector::from(Arc::new(config)),
            source: None,
        }
    }

    /// As `client`, presenting a client certificate (PEM chain and key).
    pub fn client_with_cert(&self, cert_pem: &str, key_pem: &str) -> TlsClient {
        use rustls::pki_types::PrivateKeyDer;
        use rustls::pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca.cert_der.clone()).unwrap();
        let chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(cert_pem.as_bytes())
                .collect::<Result<_, _>>()
                .unwrap();
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .unwrap();
        TlsClient {
            addr: self.addr,
            connector: TlsConnector::from(Arc::new(config)),
            source: None,
        }
    }

    pub fn stop(&self) {
        let _ = self.stop.send(true);
    }
}

#[derive(Clone)]
pub struct TlsClient {
    addr: SocketAddr,
    connector: TlsConnector,
    /// The local address to connect from (127.0.0.2, ...: another source
    /// on loopback); None: the system's choice.
    source: Option<std::net::IpAddr>,
}

/// One HTTP/1.1 connection over TLS, reusable for several requests.
pub struct Conn {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
}

impl TlsClient {
    /// The same client, connecting from `ip` (a loopback address).
    pub fn with_source(&self, ip: &str) -> TlsClient {
        TlsClient {
            source: Some(ip.parse().unwrap()),
            ..self.clone()
        }
    }

    /// A TCP connection from the client's source address.
    pub async fn tcp(&self) -> Result<TcpStream, String> {
        let Some(ip) = self.source else {
            return TcpStream::connect(self.addr)
                .await
                .map_err(|e| e.to_string());
        };
        let socket = match ip {
            std::net::IpAddr::V4(_) => tokio::net::TcpSocket::new_v4(),
            std::net::IpAddr::V6(_) => tokio::net::TcpSocket::new_v6(),
        }
        .map_err(|e| e.to_string())?;
        socket
            .bind(SocketAddr::new(ip, 0))
            .map_err(|e| e.to_string())?;
        socket.connect(self.addr).await.map_err(|e| e.to_string())
    }

    pub async fn connect(&self) -> Result<Conn, String> {
        let tcp = self.tcp().await?;
        let name = ServerName::try_from("127.0.0.1").map_err(|e| e.to_string())?;
        let tls = self
            .connector
            .connect(name, tcp)
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        Ok(Conn { sender })
    }

    /// A TLS connection with nothing sent on it yet (for raw HTTP bytes).
    pub async fn raw(&self) -> Result<tokio_rustls::client::TlsStream<TcpStream>, String> {
        let tcp = self.tcp().await?;
        let name = ServerName::try_from("127.0.0.1").map_err(|e| e.to_string())?;
        self.connector
            .connect(name, tcp)
            .await
            .map_err(|e| format!("handshake: {e}"))
    }

    /// POST on a fresh connection.
    pub async fn post(&self, path: &str, body: Vec<u8>) -> (u16, Vec<u8>) {
        let mut conn = self.connect().await.unwrap();
        conn.post(path, body).await.unwrap()
    }
}

impl Conn {
    pub async fn post(&mut self, path: &str, body: Vec<u8>) -> Result<(u16, Vec<u8>), String> {
        let req = hyper::Request::post(path)
            .header("host", "127.0.0.1")
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| e.to_string())?;
        let resp = self
            .sender
            .send_request(req)
            .await
            .map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok((status, bytes.to_vec()))
    }
}

/// An AdmissionReview v1 request around `object`.
pub fn review(
    uid: &str,
    operation: &str,
    object: Option<&serde_json::Value>,
    old: Option<&serde_json::Value>,
    dry_run: bool,
) -> Vec<u8> {
    let obj = object.or(old).cloned().unwrap_or_default();
    let kind = obj["kind"].as_str().unwrap_or_default();
    let api_version = obj["apiVersion"].as_str().unwrap_or("v1");
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    let review = serde_json::json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": {"group": group, "version": version, "kind": kind},
            "resource": {"group": group, "version": version, "resource": format!("{}s", kind.to_lowercase())},
            "name": obj["metadata"]["name"],
            "namespace": obj["metadata"]["namespace"],
            "operation": operation,
            "userInfo": {"username": "alice@example.com"},
            "object": object,
            "oldObject": old,
            "dryRun": dry_run,
        }
    });
    serde_json::to_vec(&review).unwrap()
}

/// Load one document by kind and name from a fixture file.
pub fn fixture_object(path: &str, name: &str) -> serde_json::Value {
    let full = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(path);
    let text = std::fs::read_to_string(&full).unwrap();
    residency_guard::cli::parse_documents(path, &text)
        .unwrap()
        .into_iter()
        .find(|d| d.value["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("{path}: no object named {name}"))
        .value
}
