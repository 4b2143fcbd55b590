//! residency-guard: keeps workloads that carry regulated data on mainland-China
//! nodes and mainland-China egress.
//!
//! `engine` is the one pure decision. The three front ends only translate to
//! and from it: `cli` (`check`, manifests → report, exit code), `webhook`
//! (AdmissionReview → response) and `audit` (watched state → policy status,
//! Events, PolicyReports). `state` builds the snapshot from watches, `tls`
//! provides the serving certificate, and `serve` wires the process together.
//! docs/architecture.md walks through the flow.
#![forbid(unsafe_code)]

pub mod api;
pub mod audit;
pub mod backoff;
pub mod cli;
pub mod crdgen;
pub mod datafiles;
pub mod engine;
pub mod exposure;
pub mod freshness;
pub mod probe;
pub mod report;
pub mod serve;
pub mod state;
pub mod tls;
pub mod webhook;
