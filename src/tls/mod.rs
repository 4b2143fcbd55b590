//! Serving TLS for the webhook: where the key pair every handshake reads
//! comes from.
//!
//! - `store`: the [`CertStore`] (the rustls resolver) and PEM parsing.
//! - `files`: files mode, a mounted Secret re-read on a timer.
//! - `self_managed`: the operator's own CA and serving certificate in a
//!   Secret, rotated, with the webhook configurations' caBundles kept in
//!   step (split into `material`, `rotation`, `x509` and `reconcile`).

mod files;
pub mod self_managed;
mod store;

pub use files::CertFiles;
pub use store::{CertStore, ClientCa, TlsError, certified_key};
