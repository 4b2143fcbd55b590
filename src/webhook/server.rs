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
use super::budget::{LiveBudget, Over, plausible_namespace, read_cost};
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
    /// What reviews may make the operator ask the API server (live reads
    /// and SubjectAccessReviews): token buckets and a short cache.
    pub budget: Arc<LiveBudget>,
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
        let (facts, budget) = live_facts(app, live.as_ref(), &confirm).await;
        let result = confirm_with(
            app, body, endpoint, &snapshot, now, &confirm, facts, budget, handled,
        );
        // Not asked: the snapshot's answer stood because of the budget.
        let result = match budget {
            "over_budget_global" | "over_budget_namespace" | "implausible" => budget,
            _ => result,
        };
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

/// The namespace facts a confirmation asks for: read live while the budget
/// allows, else a reading of the same namespace a few seconds old, else
/// none (the snapshot's answer stands). Also says what the budget decided.
async fn live_facts(
    app: &App,
    live: &dyn LiveReader,
    confirm: &admission::Confirm,
) -> (Result<NamespaceFacts, String>, &'static str) {
    let ns = confirm.namespace.as_str();
    let (np, storage) = (confirm.network_policies, confirm.storage);
    if !plausible_namespace(ns) {
        app.metrics.budget("confirmation", "implausible");
        return (
            Err(format!("{:?} is not a namespace name", clip(ns))),
            "implausible",
        );
    }
    let estimate = read_cost(np, storage, None);
    let now = Instant::now();
    if let Err(over) = app.budget.try_take(ns, estimate, now) {
        if let Some(facts) = app.budget.cached_facts(ns, np, storage, now) {
            app.metrics.budget("confirmation", "cached");
            return (Ok(facts), "cached");
        }
        let outcome = over_budget(over);
        app.metrics.budget("confirmation", outcome);
        return (Err(over_budget_text(app, over)), outcome);
    }
    app.metrics.budget("confirmation", "live");
    let read = tokio::time::timeout(LIVE_READ_TIMEOUT, live.namespace_facts(ns, np, storage)).await;
    let facts = match read {
        Ok(Ok(facts)) => Ok(facts),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {LIVE_READ_TIMEOUT:?}")),
    };
    let cost = read_cost(np, storage, facts.as_ref().ok());
    app.budget.charge(ns, cost - estimate);
    app.metrics.api_requests("confirmation", cost as u64);
    if let Ok(f) = &facts {
        app.budget
            .remember_facts(ns, np, storage, f, Instant::now());
    }
    (facts, "live")
}

fn over_budget(over: Over) -> &'static str {
    match over {
        Over::Global => "over_budget_global",
        Over::Namespace => "over_budget_namespace",
    }
}

/// Why the API server was not asked (for logs and refusals).
fn over_budget_text(app: &App, over: Over) -> String {
    let l = app.budget.limits();
    match over {
        Over::Global => format!(
            "the operator is already sending the API server its budget of {} requests/s for reviews (--api-requests-per-second)",
            l.rate
        ),
        Over::Namespace => format!(
            "reviews in this namespace already use their budget of {} API requests/s (--api-requests-per-namespace-per-second)",
            l.namespace_rate
        ),
    }
}

/// A refusal the API server's client should retry: a declassification that
/// could not be authorised because of the budget.
fn retry_declassification(app: &App, subject: &str, why: &str) -> String {
    match app.lang {
        crate::engine::Lang::En => format!(
            "residency-guard cannot check now whether you may remove the data classes from {subject}: {why}. Nothing was decided; try again in a few seconds."
        ),
        crate::engine::Lang::ZhCn => format!(
            "residency-guard 现在无法检查您是否可以移除 {subject} 的数据类别：{why}。未作出任何决定，请几秒后重试。"
        ),
    }
}

/// Largest userInfo (serialised) sent on in a SubjectAccessReview: a real
/// one is a few hundred bytes; a forged one may be megabytes.
const MAX_USER_INFO_BYTES: usize = 16 * 1024;

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
    let key =
        serde_json::to_string(&(&user, &removal.namespace, &removal.classes)).unwrap_or_default();
    let now = Instant::now();
    let answer = match &app.authorizer {
        Some(_) if key.len() > MAX_USER_INFO_BYTES => {
            app.metrics.budget("authorisation", "implausible");
            Err(format!(
                "the request's userInfo is larger than {MAX_USER_INFO_BYTES} bytes"
            ))
        }
        Some(_) if !plausible_namespace(&removal.namespace) => {
            app.metrics.budget("authorisation", "implausible");
            Err(format!(
                "{:?} is not a namespace name",
                clip(&removal.namespace)
            ))
        }
        Some(a) => match app.budget.cached_authorisation(&key, now) {
            Some(refused) => {
                app.metrics.budget("authorisation", "cached");
                Ok(refused)
            }
            None => {
                let cost = removal.classes.len().max(1) as f64;
                if let Err(over) = app.budget.try_take(&removal.namespace, cost, now) {
                    app.metrics.budget("authorisation", over_budget(over));
                    let why = over_budget_text(app, over);
                    tracing::debug!(subject = %clip(&removal.subject), user = %clip(user.name()), reason = over.as_str(), "declassification not authorised: over the API request budget; refused retryably");
                    app.metrics
                        .declassifications
                        .get_or_create(&super::metrics::OutcomeLabels { outcome: "error" })
                        .inc();
                    let uid = std::mem::take(&mut handled.review.response.uid);
                    handled.review.response = admission::unavailable(
                        uid,
                        retry_declassification(app, &removal.subject, &why),
                    );
                    handled.decision.allowed = false;
                    handled.decision.result = "error";
                    return;
                }
                app.metrics.budget("authorisation", "live");
                app.metrics.api_requests("authorisation", cost as u64);
                let answer = tokio::time::timeout(
                    LIVE_READ_TIMEOUT,
                    a.refused(&user, &removal.namespace, &removal.classes),
                )
                .await
                .map_err(|_| format!("no answer within {LIVE_READ_TIMEOUT:?}"))
                .and_then(|r| r.map_err(|e| e.to_string()));
                if let Ok(refused) = &answer {
                    app.budget
                        .remember_authorisation(key, refused, Instant::now());
                }
                answer
            }
        },
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
    budget: &'static str,
    handled: &mut Handled,
) -> &'static str {
    let facts = match facts {
        Ok(f) => f,
        // Not asked because of the budget: one line per review would let
        // forged reviews flood the log (the metrics count them).
        Err(e) if budget != "live" => {
            tracing::debug!(namespace = %clip(&confirm.namespace), reason = confirm.why.as_str(), budget, error = %clip(&e), "namespace facts not read (request budget); the snapshot's answer stands");
            refuse_unseen(app, confirm, &e, handled);
            return "error";
        }
        Err(e) => {
            tracing::warn!(namespace = %clip(&confirm.namespace), reason = confirm.why.as_str(), error = %clip(&e), "cannot confirm namespace facts with the API server; the snapshot's answer stands");
            refuse_unseen(app, confirm, &e, handled);
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

/// A workload in a namespace the snapshot has never seen, whose facts could
/// not be read (`e`), is refused retryably instead of admitted unjudged.
fn refuse_unseen(app: &App, confirm: &admission::Confirm, e: &str, handled: &mut Handled) {
    if confirm.why == ConfirmReason::NamespaceUnknown && handled.review.response.allowed {
        let ns = clip(&confirm.namespace);
        let text = match app.lang {
            crate::engine::Lang::En => format!(
                "residency-guard has not seen namespace {ns} yet and could not read it from the API server ({e}), so it cannot tell which data classes and policies apply; try again in a moment"
            ),
            crate::engine::Lang::ZhCn => format!(
                "residency-guard 尚未见到命名空间 {ns}，也无法从 API server 读取它（{e}），因此无法判断适用哪些数据类别和策略；请稍后重试"
            ),
        };
        handled.review.response =
            admission::unavailable(std::mem::take(&mut handled.review.response.uid), text);
        handled.decision.allowed = false;
        handled.decision.result = "error";
    }
}

/// Why `/readyz` fails, or None when ready.
fn not_ready(app: &App) -> Option<String> {
    if !app.serving.load(Ordering::Relaxed) {
        Some("shutting down".to_string())
    } else if let Some(why) = app.state.not_ready_because() {
        Some(format!("not ready: {why}"))
    } else if !app.certs.has_certificate() {
        Some("no serving certificate yet".to_string())
    } else {
        None
    }
}

/// `/livez`, `/readyz`, `/metrics`.
pub fn admin_router(app: App) -> Router {
    Router::new()
        .route("/livez", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(|AxumState(app): AxumState<App>| async move {
                match not_ready(&app) {
                    None => (StatusCode::OK, "ready").into_response(),
                    Some(why) => (StatusCode::SERVICE_UNAVAILABLE, why).into_response(),
                }
            }),
        )
        .route(
            "/metrics",
            get(|AxumState(app): AxumState<App>| async move {
                let snapshot = app.state.snapshot();
                app.metrics.observe_policies(&snapshot);
                app.metrics.observe_exemptions(&snapshot);
                app.metrics.ready.set(i64::from(not_ready(&app).is_none()));
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
