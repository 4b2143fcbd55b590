//! The webhook's HTTPS listener: what keeps slow, stalled and oversized
//! clients from exhausting the process.
//!
//! Every connection is bounded in time and every request in memory:
//!
//! | limit | default | what happens |
//! |---|---|---|
//! | connections open at once (`--max-connections`) | 512 | further connections are accepted and closed at once |
//! | TLS handshake (`--tls-handshake-timeout-seconds`) | 5 s | the socket is closed |
//! | request headers (`--header-timeout-seconds`) | 10 s | the connection is closed; this also bounds how long a keep-alive connection may sit idle between requests |
//! | whole request: body and review (`--request-timeout-seconds`) | 10 s | 408 if the body had not arrived, 503 if the review had not finished; the connection is closed |
//! | one body (`--max-body-bytes`) | 8 MiB | 413 |
//! | bodies buffered by all requests together (`--max-inflight-body-bytes`) | 32 MiB | 429 with `Retry-After: 1` (the API server retries it) |
//! | connections from one source address (`--max-connections-per-source`) | 128 | further connections from it are closed at once |
//! | reviews in flight from one source address (`--max-inflight-reviews-per-source`) | 64 | 429 with `Retry-After: 1` |
//! | connections from untrusted sources together, when `--trusted-source-cidrs` is set | `--max-connections` − `--reserved-connections` (512 − 128) | further untrusted connections are closed at once |
//! | a client certificate, when `--client-ca-file` is set | none | the TLS handshake fails without one chained to that CA |
//!
//! Every pod can reach the webhook port, so one source must not take every
//! connection or every worker: the per-source caps keep a share for the
//! others. Sources in `--trusted-source-cidrs` (the API server's addresses,
//! where known) have no per-source cap and `--reserved-connections` that
//! no one else can take. On a managed cluster the API server may reach the
//! webhook from a few addresses only (its own, or a proxy's): 128
//! connections and 64 reviews in flight from one address are more than an
//! API server keeps open to one webhook endpoint at a few hundred reviews
//! per second (each review takes well under a millisecond); with a higher
//! load, list those addresses as trusted or raise the caps.
//!
//! A body is charged against the shared budget before it is read: its
//! declared `Content-Length` at once (the API server always sends one), a
//! chunked body as its buffer grows. The charge is returned when the review
//! has been answered. Headers are read into a buffer of at most
//! [`MAX_HEADER_BUFFER`] per connection, so the memory of N stalled
//! connections is bounded by N × that plus the budget.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderValue, Request, Response, StatusCode, header};
use hyper::body::{Body as _, Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use super::ServeError;
use super::metrics::Metrics;
use super::server::{App, webhook_router};
use crate::tls::ClientCa;

/// Largest read buffer per connection (request line and headers must fit).
pub const MAX_HEADER_BUFFER: usize = 64 * 1024;

/// Limits of the webhook listener (see the module documentation).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    pub handshake_timeout: Duration,
    pub header_timeout: Duration,
    pub request_timeout: Duration,
    pub max_connections: usize,
    /// Request bodies buffered by all requests in flight together.
    pub inflight_body_bytes: usize,
    /// After shutdown, how long in-flight reviews may take to finish.
    pub drain: Duration,
    /// Connections open at once from one source address (untrusted).
    pub max_connections_per_source: usize,
    /// Reviews in flight at once from one source address (untrusted).
    pub max_inflight_per_source: usize,
    /// Sources with no per-source cap and reserved connections.
    pub trusted_sources: Vec<ipnet::IpNet>,
    /// Connections only trusted sources may use (when any are listed).
    pub reserved_connections: usize,
    /// With a CA, only clients presenting a certificate it issued (the
    /// API server, configured with one) complete the TLS handshake.
    pub client_ca: Option<ClientCa>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            handshake_timeout: Duration::from_secs(5),
            header_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(10),
            max_connections: 512,
            inflight_body_bytes: 32 * 1024 * 1024,
            drain: Duration::from_secs(10),
            max_connections_per_source: 128,
            max_inflight_per_source: 64,
            trusted_sources: Vec::new(),
            reserved_connections: 128,
            client_ca: None,
        }
    }
}

/// Listener settings under which the webhook could not work.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LimitsError {
    #[error("{0} must be at least 1")]
    Zero(&'static str),
    #[error(
        "--max-connections-per-source ({per_source}) must be below --max-connections ({max}): one source must not be able to take every connection"
    )]
    PerSourceNotBelowGlobal { per_source: usize, max: usize },
    #[error(
        "--reserved-connections ({reserved}) must be below --max-connections ({max}) when --trusted-source-cidrs is set"
    )]
    ReservedNotBelowGlobal { reserved: usize, max: usize },
    #[error(
        "--max-inflight-body-bytes ({budget}) is smaller than --max-body-bytes ({max_body_bytes}): a review of the largest allowed size could never be read"
    )]
    BudgetBelowBody {
        budget: usize,
        max_body_bytes: usize,
    },
}

impl Limits {
    /// Reject settings under which the webhook could not work.
    pub fn validate(&self, max_body_bytes: usize) -> Result<(), LimitsError> {
        for (flag, d) in [
            ("--tls-handshake-timeout-seconds", self.handshake_timeout),
            ("--header-timeout-seconds", self.header_timeout),
            ("--request-timeout-seconds", self.request_timeout),
        ] {
            if d.is_zero() {
                return Err(LimitsError::Zero(flag));
            }
        }
        for (flag, n) in [
            ("--max-connections", self.max_connections),
            (
                "--max-connections-per-source",
                self.max_connections_per_source,
            ),
            (
                "--max-inflight-reviews-per-source",
                self.max_inflight_per_source,
            ),
        ] {
            if n == 0 {
                return Err(LimitsError::Zero(flag));
            }
        }
        if self.max_connections_per_source >= self.max_connections {
            return Err(LimitsError::PerSourceNotBelowGlobal {
                per_source: self.max_connections_per_source,
                max: self.max_connections,
            });
        }
        if !self.trusted_sources.is_empty() && self.reserved_connections >= self.max_connections {
            return Err(LimitsError::ReservedNotBelowGlobal {
                reserved: self.reserved_connections,
                max: self.max_connections,
            });
        }
        if self.inflight_body_bytes < max_body_bytes {
            return Err(LimitsError::BudgetBelowBody {
                budget: self.inflight_body_bytes,
                max_body_bytes,
            });
        }
        Ok(())
    }
}

/// Bytes that request bodies may hold at once, shared by all connections.
#[derive(Debug)]
pub struct ByteBudget {
    total: usize,
    used: AtomicUsize,
}

impl ByteBudget {
    pub fn new(total: usize) -> Arc<ByteBudget> {
        Arc::new(ByteBudget {
            total,
            used: AtomicUsize::new(0),
        })
    }

    pub fn in_use(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// Charge `n` bytes, or `None` if that would exceed the budget.
    pub fn try_take(self: &Arc<Self>, n: usize) -> Option<Charge> {
        let mut charge = Charge {
            budget: self.clone(),
            bytes: 0,
        };
        charge.grow(n).then_some(charge)
    }

    fn take(&self, n: usize) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(n).filter(|&after| after <= self.total)
            })
            .is_ok()
    }
}

/// Bytes charged to a [`ByteBudget`], returned on drop.
#[derive(Debug)]
pub struct Charge {
    budget: Arc<ByteBudget>,
    bytes: usize,
}

impl Charge {
    /// Charge `n` more bytes; false (and nothing charged) if over budget.
    pub fn grow(&mut self, n: usize) -> bool {
        if n == 0 || self.budget.take(n) {
            self.bytes += n;
            true
        } else {
            false
        }
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.budget.used.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

/// What each source address holds: open connections and reviews in flight.
#[derive(Debug, Default)]
struct Held {
    connections: usize,
    inflight: usize,
}

/// Per-source counts (an entry lives while its source holds anything, so
/// the table is bounded by the connections open).
#[derive(Debug)]
pub struct Sources {
    trusted: Vec<ipnet::IpNet>,
    max_connections: usize,
    max_inflight: usize,
    held: Mutex<HashMap<IpAddr, Held>>,
}

/// One source's share, returned on drop.
#[derive(Debug)]
pub struct SourceSlot {
    sources: Arc<Sources>,
    ip: IpAddr,
    inflight: bool,
}

impl Drop for SourceSlot {
    fn drop(&mut self) {
        let mut held = self.sources.lock();
        if let Some(h) = held.get_mut(&self.ip) {
            if self.inflight {
                h.inflight = h.inflight.saturating_sub(1);
            } else {
                h.connections = h.connections.saturating_sub(1);
            }
            if h.connections == 0 && h.inflight == 0 {
                held.remove(&self.ip);
            }
        }
    }
}

/// The address a connection came from, IPv4-mapped IPv6 as IPv4.
fn source_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

impl Sources {
    pub fn new(limits: &Limits) -> Arc<Sources> {
        Arc::new(Sources {
            trusted: limits.trusted_sources.clone(),
            max_connections: limits.max_connections_per_source,
            max_inflight: limits.max_inflight_per_source,
            held: Mutex::new(HashMap::new()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, Held>> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn trusted(&self, ip: IpAddr) -> bool {
        let ip = source_of(ip);
        self.trusted.iter().any(|n| n.contains(&ip))
    }

    /// A connection from `ip`, or None when that source holds its cap.
    pub fn connect(self: &Arc<Self>, ip: IpAddr) -> Option<SourceSlot> {
        self.take(ip, false)
    }

    /// A review in flight from `ip`, or None when that source holds its cap.
    pub fn review(self: &Arc<Self>, ip: IpAddr) -> Option<SourceSlot> {
        self.take(ip, true)
    }

    fn take(self: &Arc<Self>, ip: IpAddr, inflight: bool) -> Option<SourceSlot> {
        let ip = source_of(ip);
        let trusted = self.trusted(ip);
        let mut held = self.lock();
        let h = held.entry(ip).or_default();
        let (n, cap) = if inflight {
            (&mut h.inflight, self.max_inflight)
        } else {
            (&mut h.connections, self.max_connections)
        };
        if !trusted && *n >= cap {
            if h.connections == 0 && h.inflight == 0 {
                held.remove(&ip);
            }
            return None;
        }
        *n += 1;
        Some(SourceSlot {
            sources: self.clone(),
            ip,
            inflight,
        })
    }

    /// Sources holding anything now.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Counts an open connection in the gauge for as long as it lives.
struct OpenConnection(Arc<Metrics>);

impl OpenConnection {
    fn new(metrics: Arc<Metrics>) -> OpenConnection {
        metrics.connections.inc();
        OpenConnection(metrics)
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.connections.dec();
    }
}

/// Logs a repeated warning at most once per `every`, with how many
/// occurrences it stands for.
struct Throttled {
    every: Duration,
    started: Instant,
    /// Milliseconds since `started` of the last log line (u64::MAX: never).
    last_ms: AtomicU64,
    suppressed: AtomicU64,
}

impl Throttled {
    fn new(every: Duration) -> Throttled {
        Throttled {
            every,
            started: Instant::now(),
            last_ms: AtomicU64::new(u64::MAX),
            suppressed: AtomicU64::new(0),
        }
    }

    /// Some(occurrences since the last line) when a line should be logged now.
    fn tick(&self) -> Option<u64> {
        let now = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let every = u64::try_from(self.every.as_millis()).unwrap_or(u64::MAX);
        let last = self.last_ms.load(Ordering::Relaxed);
        let due = last == u64::MAX || now.saturating_sub(last) >= every;
        if due
            && self
                .last_ms
                .compare_exchange(last, now, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        {
            Some(self.suppressed.swap(0, Ordering::AcqRel) + 1)
        } else {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            None
        }
    }
}

/// What every request on every connection shares.
struct Shared {
    router: Router,
    budget: Arc<ByteBudget>,
    metrics: Arc<Metrics>,
    max_body_bytes: usize,
    request_timeout: Duration,
    over_budget: Throttled,
    sources: Arc<Sources>,
    source_busy: Throttled,
    /// False once shutdown began (readiness failing): answers then carry
    /// `Connection: close`.
    serving: Arc<AtomicBool>,
}

/// Serve HTTPS on `listener` until `shutdown` resolves, then let in-flight
/// reviews finish (up to `limits.drain`) while idle keep-alive connections
/// close.
pub async fn serve(
    listener: TcpListener,
    app: App,
    limits: Limits,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), ServeError> {
    limits.validate(app.max_body_bytes)?;
    let config = app.certs.server_config(limits.client_ca.as_ref())?;
    let acceptor = TlsAcceptor::from(config);
    let metrics = app.metrics.clone();
    let shared = Arc::new(Shared {
        router: webhook_router(app.clone()),
        budget: ByteBudget::new(limits.inflight_body_bytes),
        metrics: metrics.clone(),
        max_body_bytes: app.max_body_bytes,
        request_timeout: limits.request_timeout,
        over_budget: Throttled::new(Duration::from_secs(10)),
        sources: Sources::new(&limits),
        source_busy: Throttled::new(Duration::from_secs(10)),
        serving: app.serving.clone(),
    });
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(MAX_HEADER_BUFFER);
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    // Untrusted sources together leave the reserved connections free.
    let untrusted_slots = Arc::new(Semaphore::new(if limits.trusted_sources.is_empty() {
        limits.max_connections
    } else {
        limits.max_connections - limits.reserved_connections
    }));
    let at_capacity = Throttled::new(Duration::from_secs(10));
    let source_capped = Throttled::new(Duration::from_secs(10));
    let no_client_cert = Arc::new(Throttled::new(Duration::from_secs(10)));
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: do not spin.
                    tracing::warn!(error = %e, "webhook listener: accept failed; retrying in 50 ms");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let trusted = shared.sources.trusted(peer.ip());
        let Some(source_slot) = shared.sources.connect(peer.ip()) else {
            metrics.refuse("source_connections");
            if let Some(n) = source_capped.tick() {
                tracing::warn!(
                    source = %peer.ip(),
                    max_connections_per_source = limits.max_connections_per_source,
                    refused = n,
                    "webhook connection refused: this source address holds --max-connections-per-source (if it is the API server, list it in --trusted-source-cidrs)"
                );
            }
            drop(tcp);
            continue;
        };
        let untrusted_slot = if trusted {
            None
        } else if let Ok(s) = untrusted_slots.clone().try_acquire_owned() {
            Some(s)
        } else {
            metrics.refuse("connection_limit");
            if let Some(n) = at_capacity.tick() {
                tracing::warn!(
                    %peer,
                    max_connections = limits.max_connections,
                    reserved_connections = limits.reserved_connections,
                    refused = n,
                    "webhook connection refused: untrusted sources hold every connection not reserved for --trusted-source-cidrs"
                );
            }
            drop(tcp);
            continue;
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            metrics.refuse("connection_limit");
            if let Some(n) = at_capacity.tick() {
                tracing::warn!(
                    %peer,
                    max_connections = limits.max_connections,
                    refused = n,
                    "webhook connection refused: --max-connections are open (stalled clients?); the API server retries or applies the failure policy"
                );
            }
            drop(tcp);
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let builder = builder.clone();
        let watcher = graceful.watcher();
        let shared = shared.clone();
        let handshake_timeout = limits.handshake_timeout;
        let no_client_cert = no_client_cert.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let _untrusted = untrusted_slot;
            let _source = source_slot;
            let _open = OpenConnection::new(shared.metrics.clone());
            let tls = match tokio::time::timeout(handshake_timeout, acceptor.accept(tcp)).await {
                Ok(Ok(t)) => t,
                Ok(Err(e)) => {
                    if is_client_certificate_error(&e) {
                        shared.metrics.refuse("client_certificate");
                        if let Some(n) = no_client_cert.tick() {
                            tracing::warn!(
                                %peer,
                                error = %e,
                                refused = n,
                                "webhook connection refused: no client certificate issued by --client-ca-file (if this is the API server, give it one in its AdmissionConfiguration kubeconfig; see docs/operator-contract.md, \"Client certificates\")"
                            );
                        }
                    } else {
                        tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    }
                    return;
                }
                Err(_) => {
                    shared.metrics.refuse("handshake_timeout");
                    tracing::debug!(%peer, timeout = ?handshake_timeout, "TLS handshake not finished in time; connection closed");
                    return;
                }
            };
            let ip = peer.ip();
            let service = service_fn(move |req| handle(req, shared.clone(), ip));
            let conn = builder.serve_connection(TokioIo::new(tls), service);
            if let Err(e) = watcher.watch(conn).await {
                if e.is_timeout() {
                    tracing::debug!(%peer, "request headers not received in time (or keep-alive connection idle); connection closed");
                } else {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
            }
        });
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(limits.drain) => tracing::warn!("shutdown: connections still open after the drain period"),
    }
    Ok(())
}

/// A handshake refused because the client presented no certificate, or
/// one not chained to the client CA.
fn is_client_certificate_error(e: &std::io::Error) -> bool {
    matches!(
        e.get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>()),
        Some(rustls::Error::NoCertificatesPresented | rustls::Error::InvalidCertificate(_))
    )
}

/// Why a request was not handed to the router.
#[derive(Debug)]
enum Refusal {
    TooLarge(usize),
    OverBudget,
    SourceBusy,
    BodyTimeout,
    ReviewTimeout,
    Body(String),
}

impl Refusal {
    fn reason(&self) -> &'static str {
        match self {
            Refusal::TooLarge(_) => "too_large",
            Refusal::OverBudget => "inflight_bytes",
            Refusal::SourceBusy => "source_inflight",
            Refusal::BodyTimeout => "body_timeout",
            Refusal::ReviewTimeout => "review_timeout",
            Refusal::Body(_) => "body_error",
        }
    }

    fn response(&self, shared: &Shared) -> Response<Body> {
        let (status, text) = match self {
            Refusal::TooLarge(limit) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the AdmissionReview is larger than {limit} bytes (--max-body-bytes)"),
            ),
            Refusal::OverBudget => (
                StatusCode::TOO_MANY_REQUESTS,
                format!(
                    "residency-guard is already reading {} bytes of admission requests (--max-inflight-body-bytes {}); retry shortly",
                    shared.budget.in_use(),
                    shared.budget.total
                ),
            ),
            Refusal::SourceBusy => (
                StatusCode::TOO_MANY_REQUESTS,
                format!(
                    "this source address already has {} admission reviews in flight (--max-inflight-reviews-per-source); retry shortly",
                    shared.sources.max_inflight
                ),
            ),
            Refusal::BodyTimeout => (
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "the request body did not arrive within {:?} (--request-timeout-seconds)",
                    shared.request_timeout
                ),
            ),
            Refusal::ReviewTimeout => (
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "the review did not finish within {:?} (--request-timeout-seconds)",
                    shared.request_timeout
                ),
            ),
            Refusal::Body(e) => (
                StatusCode::BAD_REQUEST,
                format!("the request body could not be read: {e}"),
            ),
        };
        let mut resp = Response::new(Body::from(text));
        *resp.status_mut() = status;
        let headers = resp.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        // The body may be unread or half read: never reuse the connection.
        headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
        if matches!(self, Refusal::OverBudget | Refusal::SourceBusy) {
            headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        resp
    }
}

/// One request: charge and read the body within the deadline, then hand it
/// to the router, still within the deadline.
async fn handle(
    req: Request<Incoming>,
    shared: Arc<Shared>,
    source: IpAddr,
) -> Result<Response<Body>, Infallible> {
    let deadline = tokio::time::Instant::now() + shared.request_timeout;
    let (parts, body) = req.into_parts();
    let outcome = async {
        // One source's share of the workers: held until answered.
        let _review = shared.sources.review(source).ok_or(Refusal::SourceBusy)?;
        let (bytes, charge) = tokio::time::timeout_at(deadline, read_body(body, &shared))
            .await
            .map_err(|_| Refusal::BodyTimeout)??;
        let req = Request::from_parts(parts, Body::from(bytes));
        let resp = tokio::time::timeout_at(deadline, shared.router.clone().oneshot(req))
            .await
            .map_err(|_| Refusal::ReviewTimeout)?;
        // The body stays charged until the review has been answered.
        drop(charge);
        Ok::<_, Refusal>(match resp {
            Ok(r) => r,
            Err(never) => match never {},
        })
    }
    .await;
    let mut resp = match outcome {
        Ok(resp) => resp,
        Err(refusal) => {
            shared.metrics.refuse(refusal.reason());
            match &refusal {
                Refusal::OverBudget => {
                    if let Some(n) = shared.over_budget.tick() {
                        tracing::warn!(
                            in_use = shared.budget.in_use(),
                            budget = shared.budget.total,
                            refused = n,
                            "admission request refused with 429: the bodies of requests in flight fill --max-inflight-body-bytes"
                        );
                    }
                }
                Refusal::SourceBusy => {
                    if let Some(n) = shared.source_busy.tick() {
                        tracing::warn!(
                            %source,
                            max_inflight_per_source = shared.sources.max_inflight,
                            refused = n,
                            "admission request refused with 429: this source has --max-inflight-reviews-per-source reviews in flight"
                        );
                    }
                }
                Refusal::ReviewTimeout => tracing::warn!(
                    timeout = ?shared.request_timeout,
                    "admission review abandoned: it took longer than --request-timeout-seconds"
                ),
                _ => tracing::debug!(reason = refusal.reason(), "admission request refused"),
            }
            refusal.response(&shared)
        }
    };
    // Shutting down (readiness fails while the endpoint is withdrawn): this
    // connection is not kept for another request. The API server pools
    // connections by the Service's name, not the Pod, and would go on
    // sending reviews on them until the listener closes them, racing the
    // close ("write: broken pipe", a failed admission, seen in
    // tests/e2e/availability.rs during `helm upgrade`); now it dials
    // again and reaches a ready replica.
    if !shared.serving.load(Ordering::Relaxed) {
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    Ok(resp)
}

/// Read a body within the per-request and the shared limits.
async fn read_body(mut body: Incoming, shared: &Shared) -> Result<(Bytes, Charge), Refusal> {
    let max = shared.max_body_bytes;
    let declared = body.size_hint().exact();
    let mut charge;
    let mut buf: Vec<u8>;
    if let Some(len) = declared {
        let len = usize::try_from(len).unwrap_or(usize::MAX);
        if len > max {
            return Err(Refusal::TooLarge(max));
        }
        charge = shared.budget.try_take(len).ok_or(Refusal::OverBudget)?;
        buf = Vec::with_capacity(len);
    } else {
        charge = shared.budget.try_take(0).ok_or(Refusal::OverBudget)?;
        buf = Vec::new();
    }
    // The next frame (what http-body-util's `BodyExt::frame` does).
    while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
        let frame = frame.map_err(|e| Refusal::Body(e.to_string()))?;
        let Ok(data) = frame.into_data() else {
            continue; // trailers
        };
        let needed = buf.len().saturating_add(data.len());
        if needed > max {
            return Err(Refusal::TooLarge(max));
        }
        if needed > buf.capacity() {
            // Only a chunked body (or a peer sending more than it declared,
            // which hyper refuses) gets here: charge the growth first.
            let target = needed.max(buf.capacity().saturating_mul(2)).min(max);
            if !charge.grow(target - buf.capacity()) {
                return Err(Refusal::OverBudget);
            }
            buf.reserve_exact(target - buf.len());
        }
        buf.extend_from_slice(&data);
    }
    Ok((Bytes::from(buf), charge))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_charges_and_returns_bytes() {
        let budget = ByteBudget::new(100);
        let a = budget.try_take(60).expect("fits");
        assert!(budget.try_take(41).is_none());
        let mut b = budget.try_take(40).expect("fits exactly");
        assert_eq!(budget.in_use(), 100);
        assert!(!b.grow(1));
        drop(a);
        assert!(b.grow(60));
        assert_eq!(b.bytes(), 100);
        drop(b);
        assert_eq!(budget.in_use(), 0);
    }

    #[test]
    fn limits_are_validated() {
        assert!(Limits::default().validate(8 * 1024 * 1024).is_ok());
        let small = Limits {
            inflight_body_bytes: 1024,
            ..Limits::default()
        };
        let e = small.validate(4096).unwrap_err().to_string();
        assert!(e.contains("--max-inflight-body-bytes"), "{e}");
        let zero = Limits {
            max_connections: 0,
            ..Limits::default()
        };
        assert!(zero.validate(1).is_err());
    }

    #[test]
    fn sources_are_capped_one_by_one_and_trusted_ones_are_not() {
        let limits = Limits {
            max_connections_per_source: 2,
            max_inflight_per_source: 1,
            trusted_sources: vec!["10.0.0.0/24".parse().unwrap()],
            ..Limits::default()
        };
        let sources = Sources::new(&limits);
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let mapped: IpAddr = "::ffff:127.0.0.1".parse().unwrap();
        let b: IpAddr = "127.0.0.2".parse().unwrap();
        let api: IpAddr = "10.0.0.7".parse().unwrap();
        let c1 = sources.connect(a).expect("first");
        let c2 = sources.connect(mapped).expect("second (the same source)");
        assert!(sources.connect(a).is_none(), "a third from the same source");
        let _b = sources
            .connect(b)
            .expect("another source has its own share");
        let r = sources.review(a).expect("one review in flight");
        assert!(sources.review(a).is_none());
        drop(r);
        let _r = sources.review(a).expect("returned on drop");
        drop(c1);
        let _c3 = sources.connect(a).expect("a connection returned");
        let trusted: Vec<_> = (0..10).filter_map(|_| sources.connect(api)).collect();
        assert_eq!(trusted.len(), 10, "trusted sources have no per-source cap");
        drop(trusted);
        drop(c2);
        assert_eq!(sources.len(), 2, "entries go when a source holds nothing");
    }

    #[test]
    fn per_source_caps_must_stay_below_the_global_cap() {
        let l = Limits {
            max_connections_per_source: 512,
            ..Limits::default()
        };
        assert!(
            l.validate(1)
                .unwrap_err()
                .to_string()
                .contains("per-source")
        );
        let l = Limits {
            trusted_sources: vec!["10.0.0.0/8".parse().unwrap()],
            reserved_connections: 512,
            ..Limits::default()
        };
        assert!(l.validate(1).is_err());
    }

    #[test]
    fn throttled_logs_once_per_period_and_counts_the_rest() {
        let t = Throttled {
            started: Instant::now() - Duration::from_secs(7200),
            ..Throttled::new(Duration::from_secs(3600))
        };
        assert_eq!(t.tick(), Some(1), "the first occurrence is logged");
        assert_eq!(t.tick(), None);
        assert_eq!(t.tick(), None);
        // The last line was two hours ago: log, counting the suppressed two.
        t.last_ms.store(0, Ordering::Relaxed);
        assert_eq!(t.tick(), Some(3));
    }
}
