#![forbid(unsafe_code)]
//! The `residency-guard` binary: parse arguments and dispatch. Everything
//! else lives in the library so tests can reach it.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use residency_guard::cli::{self, CheckArgs};
use residency_guard::crdgen;
use residency_guard::report::{self, ReportArgs};
use residency_guard::serve::{self, ServeArgs};

#[derive(Debug, Parser)]
#[command(
    name = "residency-guard",
    version,
    about = "Keeps workloads that carry regulated data on mainland-China nodes and mainland-China egress"
)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Judge manifests offline (no cluster): exit 0 when no Deny-policy
    /// violation is found, 1 when one is, 2 on bad input.
    Check(Box<CheckArgs>),
    /// Write a compliance report for auditors (HTML, JSON, CSV) from the
    /// cluster of a kubeconfig, or from manifests (-f). Read-only.
    Report(Box<ReportArgs>),
    /// Run the admission webhook (in a cluster).
    Serve(Box<ServeArgs>),
    /// Write the ResidencyPolicy CRD (YAML).
    Crdgen {
        /// Output file; - for stdout.
        #[arg(short, long, default_value = crdgen::CRD_PATH)]
        output: PathBuf,
        /// Exit 1 if the file differs from what would be written (CI drift check).
        #[arg(long)]
        check: bool,
    },
}

fn main() -> ExitCode {
    let args = Args::parse();
    match args.command {
        Command::Check(check) => cli::run_check(&check),
        Command::Report(args) => report::run_report(&args),
        Command::Serve(serve) => serve_blocking(*serve),
        Command::Crdgen { output, check } => match crdgen::run(&output, check) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
    }
}

fn serve_blocking(args: ServeArgs) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve::run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
