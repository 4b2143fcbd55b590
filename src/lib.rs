//! residency-guard: keeps workloads that carry regulated data on mainland-China
//! nodes and mainland-China egress.
//!
//! `engine` is the one pure decision; `cli` (and later the webhook and the
//! audit controller) only translate to and from it.
#![forbid(unsafe_code)]

pub mod api;
pub mod audit;
pub mod cli;
pub mod crdgen;
pub mod datafiles;
pub mod engine;
pub mod report;
pub mod state;
pub mod webhook;
