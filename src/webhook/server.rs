//! The HTTPS admission server and the plain-HTTP admin server.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State as AxumState};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use jiff::Timestamp;
use tokio::net::TcpListener;

use super::admission::{self, Endpoint};
use super::listener::Limits;
use super::metrics::{DecisionLabels, EndpointLabels, Metrics};
use super::tls::CertStore;
use crate::engine::Lang;
use crate::state::State;

/// What every request handler needs.
#[derive(Clone)]
pub struct App {
    pub state: State,
    pub lang: Lang,
    pub metrics: Arc<Metrics>,
    pub max_body_bytes: usize,
    /// Cleared on shutdown so /readyz fails before connections close.
    pub serving: Arc<AtomicBool>,
    pub certs: Arc<CertStore>,
}

/// The admission routes (also used in process by tests and benchmarks).
pub fn webhook_router(app: App) -> Router {
    let limit = app.max_body_bytes;
    Router::new()
        .route("/validate/workloads", post(workloads))
        .route("/validate/networkpolicies", post(network_policies))
        .route("/validate/policies", post(policies))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(app)
}

async fn workloads(AxumState(app): AxumState<App>, body: Bytes) -> Response {
    review(&app, Endpoint::Workloads, &body)
}
async fn network_policies(AxumState(app): AxumState<App>, body: Bytes) -> Response {
    review(&app, Endpoint::NetworkPolicies, &body)
}
async fn policies(AxumState(app): AxumState<App>, body: Bytes) -> Response {
    review(&app, Endpoint::Policies, &body)
}

fn endpoint_name(e: Endpoint) -> &'static str {
    match e {
        Endpoint::Workloads => "workloads",
        Endpoint::NetworkPolicies => "networkpolicies",
        Endpoint::Policies => "policies",
    }
}

fn review(app: &App, endpoint: Endpoint, body: &[u8]) -> Response {
    let started = Instant::now();
    let snapshot = app.state.snapshot();
    let name = endpoint_name(endpoint);
    let outcome = admission::handle(
        body,
        endpoint,
        &snapshot,
        &app.state,
        app.lang,
        Timestamp::now(),
    );
    let elapsed = started.elapsed();
    app.metrics
        .latency
        .get_or_create(&EndpointLabels { endpoint: name })
        .observe(elapsed.as_secs_f64());
    match outcome {
        Ok(handled) => {
            let d = &handled.decision;
            let action = d.action.map_or("None", |a| a.as_str());
            app.metrics
                .decisions
                .get_or_create(&DecisionLabels {
                    endpoint: name,
                    kind: d.kind.clone(),
                    action,
                    result: d.result,
                    allowed: if d.allowed { "true" } else { "false" },
                })
                .inc();
            tracing::info!(
                uid = %handled.review.response.uid,
                endpoint = name,
                kind = %d.kind,
                namespace = %d.namespace,
                name = %d.name,
                operation = %d.operation,
                dry_run = d.dry_run,
                classes = ?d.classes,
                policies = ?d.policies,
                action,
                allowed = d.allowed,
                result = d.result,
                latency_us = elapsed.as_micros() as u64,
                "admission decision"
            );
            match serde_json::to_vec(&handled.review) {
                Ok(json) => ([(header::CONTENT_TYPE, "application/json")], json).into_response(),
                Err(e) => {
                    tracing::error!(error = %e, "cannot encode an AdmissionReview response");
                    (StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response()
                }
            }
        }
        Err(bad) => {
            app.metrics
                .decisions
                .get_or_create(&DecisionLabels {
                    endpoint: name,
                    kind: String::new(),
                    action: "None",
                    result: "bad_request",
                    allowed: "false",
                })
                .inc();
            tracing::warn!(endpoint = name, error = %bad, "undecodable admission request");
            (StatusCode::BAD_REQUEST, bad.to_string()).into_response()
        }
    }
}

/// `/livez`, `/readyz`, `/metrics`.
pub fn admin_router(app: App) -> Router {
    Router::new()
        .route("/livez", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(|AxumState(app): AxumState<App>| async move {
                let ready = app.serving.load(Ordering::Relaxed)
                    && app.state.ready()
                    && app.certs.has_certificate();
                if ready {
                    (StatusCode::OK, "ready").into_response()
                } else {
                    let why = if !app.serving.load(Ordering::Relaxed) {
                        "shutting down"
                    } else if !app.state.ready() {
                        "watches not synced"
                    } else {
                        "no serving certificate yet"
                    };
                    (StatusCode::SERVICE_UNAVAILABLE, why).into_response()
                }
            }),
        )
        .route(
            "/metrics",
            get(|AxumState(app): AxumState<App>| async move {
                app.metrics.observe_watches(&app.state.health);
                (
                    [(
                        header::CONTENT_TYPE,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    app.metrics.encode(),
                )
            }),
        )
        .with_state(app)
}

/// Serve HTTPS on `listener` until `shutdown` resolves, then let in-flight
/// reviews finish (up to `drain`) while idle keep-alive connections close.
/// The default [`Limits`] apply; `listener::serve` takes others.
pub async fn serve_tls(
    listener: TcpListener,
    app: App,
    shutdown: impl std::future::Future<Output = ()>,
    drain: Duration,
) -> Result<(), String> {
    let limits = Limits {
        drain,
        ..Limits::default()
    };
    super::listener::serve(listener, app, limits, shutdown).await
}

/// Serve the admin endpoints until `shutdown` resolves.
pub async fn serve_admin(
    listener: TcpListener,
    app: App,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), String> {
    axum::serve(listener, admin_router(app))
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(|e| e.to_string())
}

pub async fn bind(addr: SocketAddr) -> Result<TcpListener, String> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on {addr}: {e}"))
}
