//! The validating admission webhook: AdmissionReview → engine → allow /
//! deny / warnings, over HTTPS, with the admin endpoints beside it.
//!
//! - `admission`: decode a review, call the engine, turn the verdict into
//!   the AdmissionReview response (this is where a Deny becomes a 403).
//! - `server`: the routes, readiness, live confirmation and declassification
//!   around `admission`; `listener`: the bounded TLS/HTTP listener.
//! - `declassify`: SubjectAccessReviews for the `declassify` verb.
//! - `budget`: the token buckets and short cache that bound the API
//!   requests reviews may trigger (live reads, SubjectAccessReviews).
//! - `metrics`: the Prometheus registry the admin endpoint serves.
//!
//! The snapshot comes from `crate::state`, the serving certificate from
//! `crate::tls`; `crate::serve` wires them together.

pub mod admission;
pub mod budget;
pub mod declassify;
pub mod listener;
pub mod metrics;
pub mod server;

use std::net::SocketAddr;

use crate::tls::TlsError;

/// Why the webhook or admin server cannot serve.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Limits(#[from] listener::LimitsError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("{0}")]
    Admin(std::io::Error),
}
