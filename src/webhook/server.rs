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

use super::ServeError;
use super::admission::{self, Endpoint};
use super::admission::{ConfirmReason, Handled};
use super::declassify::{Authorizer, UserInfo};
use super::listener::Limits;
use super::metrics::{
    ConfirmLabels, DecisionLabels, EndpointLabels, Metrics, clip, kind_label, operation_label,
};
use crate::engine::Lang;
use crate::engine::NamespaceFacts;
use crate::state::State;
use crate::state::live::LiveReader;
use crate::tls::CertStore;

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
    /// Where answers that rest on namespace facts are confirmed before
    /// they stand (None: the snapshot alone decides; tests, benchmarks).
    pub live: Option<Arc<dyn LiveReader>>,
    /// Where declassifications are authorised (None: every one is refused,
    /// failing closed).
    pub authorizer: Option<Arc<dyn Authorizer>>,
}

/// The admission routes (also used in process by tests and benchmarks).
pub fn webhook_router(app: App) -> Router {
    let limit = app.max_body_bytes;
    Router::new()
        .route("/validate/workloads", post(workloads))
        .route("/validate/networkpolicies", post(network_policies))
        .route("/validate/policies", post(policies))
        .route("/validate/namespaces", post(namespaces))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(app)
}

async fn workloads(AxumState(app): AxumState<App>, body: Bytes) -> Response {
    review(&app, Endpoint::Workloads, body).await
}
async fn network_policies(AxumState(app): AxumState<App>, body: Bytes) -> Response {
    review(&app, Endpoint::NetworkPolicies, body).await
}
async fn policies(AxumState(app): AxumState<App>, body: Bytes) -> Response {
    review(&app, Endpoint::Policies, body).await
}
async fn namespaces(AxumState(app): AxumState<App>, body: Bytes) -> Response {
    review(&app, Endpoint::Namespaces, body).await
}

/// Reviews larger than this are judged on the blocking pool, like every
/// NetworkPolicy review (which judges every workload its change may
/// affect): the async workers keep serving other reviews meanwhile. A
/// typical workload review (~15 KB, ~20 µs) stays inline.
const OFFLOAD_BYTES: usize = 256 * 1024;

/// How long a live read may take. The API server waits `timeoutSeconds`
/// (at most 3 s) for the whole review.
const LIVE_READ_TIMEOUT: Duration = Duration::from_millis(1500);

fn endpoint_name(e: Endpoint) -> &'static str {
    match e {
        Endpoint::Workloads => "workloads",
        Endpoint::NetworkPolicies => "networkpolicies",
        Endpoint::Policies => "policies",
        Endpoint::Namespaces => "namespaces",
    }
}

async fn review(app: &App, endpoint: Endpoint, body: Bytes) -> Response {
    let started = Instant::now();
    let snapshot = app.state.snapshot();
    let name = endpoint_name(endpoint);
    let now = Timestamp::now();
    // ResidencyPolicy and Namespace reviews read no cluster state (a
    // declassification is authorised live); every other answer
    // would rest on the snapshot, which must be complete and current.
    let not_ready = match endpoint {
        Endpoint::Policies | Endpoint::Namespaces => None,
        _ => app.state.not_ready_because(),
    };
    let mut outcome = if let Some(why) = &not_ready {
        admission::refuse_unjudged(&body, why, app.lang)
    } else if endpoint == Endpoint::NetworkPolicies || body.len() > OFFLOAD_BYTES {
        let (app, body, snapshot) = (app.clone(), body.clone(), snapshot.clone());
        tokio::task::spawn_blocking(move || {
            admission::handle(&body, endpoint, &snapshot, &app.state, app.lang, now)
        })
        .await
        .unwrap_or_else(|e| {
            tracing::error!(error = %e, "admission review task failed");
            Err(admission::BadReview(
                "internal error while judging the review".into(),
            ))
        })
    } else {
        admission::handle(&body, endpoint, &snapshot, &app.state, app.lang, now)
    };
    let body: &[u8] = &body;
    if let Ok(handled) = &mut outcome
        && let Some(confirm) = handled.decision.confirm.take()
        && let Some(live) = &app.live
    {
        let read = tokio::time::timeout(
            LIVE_READ_TIMEOUT,
            live.namespace_facts(
                &confirm.namespace,
                confirm.network_policies,
                confirm.storage,
            ),
        )
        .await;
        let facts = match read {
            Ok(Ok(facts)) => Ok(facts),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no answer within {LIVE_READ_TIMEOUT:?}")),
        };
        let result = confirm_with(
            app, body, endpoint, &snapshot, now, &confirm, facts, handled,
        );
        app.metrics
            .live_confirmations
            .get_or_create(&ConfirmLabels {
                reason: confirm.why.as_str(),
                outcome: result,
            })
            .inc();
    }
    if let Ok(handled) = &mut outcome
        && let Some(removal) = handled.decision.declassify.take()
        && handled.review.response.allowed
    {
        authorize_declassification(app, body, &removal, handled).await;
    }
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
                    kind: kind_label(&d.kind),
                    operation: operation_label(&d.operation),
                    action,
                    result: d.result,
                    allowed: if d.allowed { "true" } else { "false" },
                })
                .inc();
            // Every string a caller chose is clipped: anyone who reaches
            // the port can send a review.
            tracing::info!(
                uid = %clip(&handled.review.response.uid),
                endpoint = name,
                kind = %clip(&d.kind),
                namespace = %clip(&d.namespace),
                name = %clip(&d.name),
                operation = %clip(&d.operation),
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
                    kind: "",
                    operation: "",
                    action: "None",
                    result: "bad_request",
                    allowed: "false",
                })
                .inc();
            tracing::warn!(endpoint = name, error = %clip(&bad.to_string()), "undecodable admission request");
            (StatusCode::BAD_REQUEST, bad.to_string()).into_response()
        }
    }
}

/// An UPDATE that removes data classes stands only if its user may
/// declassify them; otherwise (or when that cannot be checked) it is
/// refused with what to do.
async fn authorize_declassification(
    app: &App,
    body: &[u8],
    removal: &admission::Declassify,
    handled: &mut Handled,
) {
    let user = UserInfo::of_review(body);
    let answer = match &app.authorizer {
        Some(a) => tokio::time::timeout(
            LIVE_READ_TIMEOUT,
            a.refused(&user, &removal.namespace, &removal.classes),
        )
        .await
        .map_err(|_| format!("no answer within {LIVE_READ_TIMEOUT:?}"))
        .and_then(|r| r.map_err(|e| e.to_string())),
        None => Err("no authorizer is configured".to_string()),
    };
    let (refused, error) = match answer {
        Ok(refused) if refused.is_empty() => {
            tracing::info!(subject = %clip(&removal.subject), user = %clip(user.name()), classes = ?removal.classes, "declassification authorised");
            app.metrics
                .declassifications
                .get_or_create(&super::metrics::OutcomeLabels { outcome: "allowed" })
                .inc();
            return;
        }
        Ok(refused) => (refused, None),
        Err(e) => (removal.classes.clone(), Some(e)),
    };
    let outcome = if error.is_some() { "error" } else { "refused" };
    app.metrics
        .declassifications
        .get_or_create(&super::metrics::OutcomeLabels { outcome })
        .inc();
    let text = crate::engine::declassify::refusal(
        &removal.subject,
        user.name(),
        &removal.namespace,
        &refused,
        error.as_deref(),
        app.authorizer
            .as_ref()
            .map_or("residency-guard-declassifier", |a| a.role()),
        &removal.change,
    );
    tracing::info!(subject = %clip(&removal.subject), user = %clip(user.name()), classes = ?refused, error = ?error, "declassification refused");
    let uid = std::mem::take(&mut handled.review.response.uid);
    handled.review.response = admission::forbidden(uid, text.get(app.lang).to_string());
    handled.decision.allowed = false;
}

/// Judge the review again on a snapshot focused on the namespace, with what
/// the API server said (`facts`), and replace `handled` with that answer.
/// When the read failed, the snapshot's answer stands (a denial stays a
/// denial), except that a workload in a namespace the snapshot has never
/// seen is refused with a retryable message instead of admitted unjudged.
#[allow(clippy::too_many_arguments)]
fn confirm_with(
    app: &App,
    body: &[u8],
    endpoint: Endpoint,
    snapshot: &crate::engine::Snapshot,
    now: Timestamp,
    confirm: &admission::Confirm,
    facts: Result<NamespaceFacts, String>,
    handled: &mut Handled,
) -> &'static str {
    let facts = match facts {
        Ok(f) => f,
        Err(e) => {
            tracing::warn!(namespace = %clip(&confirm.namespace), reason = confirm.why.as_str(), error = %clip(&e), "cannot confirm namespace facts with the API server; the snapshot's answer stands");
            if confirm.why == ConfirmReason::NamespaceUnknown && handled.review.response.allowed {
                handled.review.response = admission::unavailable(
                    std::mem::take(&mut handled.review.response.uid),
                    format!(
                        "residency-guard has not seen namespace {} yet and could not read it from the API server ({e}), so it cannot tell which data classes and policies apply; try again in a moment",
                        confirm.namespace
                    ),
                );
                handled.decision.allowed = false;
                handled.decision.result = "error";
            }
            return "error";
        }
    };
    let focused = snapshot.focused_on(&confirm.namespace, &facts);
    match admission::handle(body, endpoint, &focused, &app.state, app.lang, now) {
        Ok(mut again) => {
            again.decision.confirm = None;
            let changed = again.review.response.allowed != handled.review.response.allowed
                || again.review.response.warnings != handled.review.response.warnings;
            if changed {
                tracing::info!(namespace = %clip(&confirm.namespace), reason = confirm.why.as_str(), allowed = again.review.response.allowed, "the API server's view of the namespace changed the answer");
            }
            *handled = again;
            if changed { "overturned" } else { "upheld" }
        }
        // The body decoded the first time; it cannot fail now. Keep the
        // first answer if it somehow does.
        Err(_) => "error",
    }
}

/// `/livez`, `/readyz`, `/metrics`.
pub fn admin_router(app: App) -> Router {
    Router::new()
        .route("/livez", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(|AxumState(app): AxumState<App>| async move {
                let why = if !app.serving.load(Ordering::Relaxed) {
                    Some("shutting down".to_string())
                } else if let Some(why) = app.state.not_ready_because() {
                    Some(format!("not ready: {why}"))
                } else if !app.certs.has_certificate() {
                    Some("no serving certificate yet".to_string())
                } else {
                    None
                };
                match why {
                    None => (StatusCode::OK, "ready").into_response(),
                    Some(why) => (StatusCode::SERVICE_UNAVAILABLE, why).into_response(),
                }
            }),
        )
        .route(
            "/metrics",
            get(|AxumState(app): AxumState<App>| async move {
                app.metrics.observe_policies(&app.state.snapshot());
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
) -> Result<(), ServeError> {
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
) -> Result<(), ServeError> {
    axum::serve(listener, admin_router(app))
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(ServeError::Admin)
}

pub async fn bind(addr: SocketAddr) -> Result<TcpListener, ServeError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind { addr, source })
}
