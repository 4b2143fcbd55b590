//! `residency-guard report`: evidence for auditors. Read-only: from
//! manifests (`-f`, read as `check` reads them) or from the cluster of a
//! kubeconfig (one LIST of each kind), it writes
//!
//! - `residency-report.json`: the data, deterministic, with a published
//!   schema (docs/report.schema.json);
//! - `residency-report.html`: one self-contained page (inline CSS and SVG,
//!   no script), English and Simplified Chinese, printable, carrying the
//!   JSON's SHA-256 so a reader can check one against the other;
//! - `residency-report.csv`: one row per governed workload and policy.
//!
//! `--compare previous.json` adds what changed since an earlier report.
//! Exit codes: 0 written, 2 bad input or usage, 3 the cluster could not be
//! read.

pub mod compare;
pub mod csv;
pub mod html;
pub mod live;
pub mod manifests;
pub mod model;
pub mod provenance;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use jiff::Timestamp;

use crate::cli::JudgingArgs;
use crate::engine::{Lang, Snapshot};
pub use model::{Report, SCHEMA_VERSION};

pub const EXIT_OK: u8 = 0;
pub const EXIT_BAD_INPUT: u8 = 2;
pub const EXIT_CLUSTER: u8 = 3;

/// File names written in `--output-dir`.
pub const JSON_FILE: &str = "residency-report.json";
pub const HTML_FILE: &str = "residency-report.html";
pub const CSV_FILE: &str = "residency-report.csv";

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ReportFormat {
    Html,
    Json,
    Csv,
}

#[derive(Debug, clap::Args)]
pub struct ReportArgs {
    /// Manifests to report on instead of a cluster: files, directories
    /// (recursively: *.yaml, *.yml, *.json) or - for stdin, as with `check`.
    /// Without it the report reads the cluster of the kubeconfig.
    #[arg(
        short = 'f',
        long = "filename",
        value_name = "PATH",
        value_delimiter = ',',
        env = "RESIDENCY_GUARD_FILENAME"
    )]
    pub files: Vec<PathBuf>,

    /// The kubeconfig of the cluster to read. Default: KUBECONFIG, then
    /// ~/.kube/config, then the in-cluster ServiceAccount.
    #[arg(long, value_name = "FILE", env = "RESIDENCY_GUARD_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,

    /// The kubeconfig context to use. Default: its current context.
    #[arg(long, value_name = "NAME", env = "RESIDENCY_GUARD_CONTEXT")]
    pub context: Option<String>,

    /// Directory to write residency-report.{html,json,csv} in (created if
    /// missing).
    #[arg(
        short = 'o',
        long = "output-dir",
        value_name = "DIR",
        default_value = ".",
        env = "RESIDENCY_GUARD_REPORT_DIR"
    )]
    pub output_dir: PathBuf,

    /// Which files to write: html, json, csv (comma-separated).
    #[arg(
        long = "format",
        value_enum,
        value_delimiter = ',',
        default_values_t = [ReportFormat::Html, ReportFormat::Json, ReportFormat::Csv],
        env = "RESIDENCY_GUARD_REPORT_FORMATS"
    )]
    pub formats: Vec<ReportFormat>,

    /// An earlier residency-report.json: the report adds what changed since.
    #[arg(long, value_name = "FILE", env = "RESIDENCY_GUARD_COMPARE")]
    pub compare: Option<PathBuf>,

    #[command(flatten)]
    pub judging: JudgingArgs,

    /// Workloads the HTML shows in full (violating first); the next 10
    /// times as many are one line each, the rest counted per namespace.
    /// The JSON and CSV always hold every workload.
    #[arg(
        long,
        value_name = "N",
        default_value_t = 200,
        env = "RESIDENCY_GUARD_REPORT_DETAIL_LIMIT"
    )]
    pub detail_limit: usize,
}

fn say(lang: Lang, en: &str, zh: &str) -> String {
    match lang {
        Lang::En => en.to_string(),
        Lang::ZhCn => zh.to_string(),
    }
}

fn fail(code: u8, errors: &[String], lang: Lang) -> ExitCode {
    let prefix = say(lang, "error", "错误");
    for e in errors {
        eprintln!("{prefix}: {e}");
    }
    ExitCode::from(code)
}

/// The JSON as written: pretty, with a final newline. Its SHA-256 is the
/// digest the HTML prints.
pub fn json_bytes(report: &Report) -> Result<Vec<u8>, serde_json::Error> {
    let mut bytes = serde_json::to_vec_pretty(report)?;
    bytes.push(b'\n');
    Ok(bytes)
}

/// The three renderings of a report, and the JSON's digest.
pub struct Rendered {
    pub json: Vec<u8>,
    pub sha256: String,
    pub html: String,
    pub csv: String,
}

pub fn render(report: &Report, lang: Lang, detail_limit: usize) -> Result<Rendered, String> {
    let json = json_bytes(report).map_err(|e| format!("cannot encode the report: {e}"))?;
    let sha256 = provenance::sha256_hex(&json);
    let html = html::render(
        report,
        &html::Options {
            sha256: sha256.clone(),
            json_file: JSON_FILE.to_string(),
            lang,
            detail_limit,
        },
    );
    let csv = csv::render(report);
    Ok(Rendered {
        json,
        sha256,
        html,
        csv,
    })
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> Result<PathBuf, String> {
    let path = dir.join(name);
    std::fs::write(&path, bytes).map_err(|e| format!("{}: cannot write: {e}", path.display()))?;
    Ok(path)
}

/// `residency-guard report`. For `main` only: it leaves what it read and
/// built for the process exit to free.
pub fn run_report(args: &ReportArgs) -> ExitCode {
    let lang = match args.judging.lang() {
        Ok(l) => l,
        Err(e) => return fail(EXIT_BAD_INPUT, &[e.to_string()], Lang::En),
    };
    let bad = |errors: &[String]| fail(EXIT_BAD_INPUT, errors, lang);
    if !args.files.is_empty() && (args.kubeconfig.is_some() || args.context.is_some()) {
        return bad(&[say(
            lang,
            "-f reads manifests; --kubeconfig and --context read a cluster: give one or the other",
            "-f 读取清单文件，--kubeconfig 和 --context 读取集群：只能二选一",
        )]);
    }
    let now = match args.judging.now(lang) {
        Ok(t) => t,
        Err(e) => return bad(&[e]),
    };
    let (catalogue, space) = match args.judging.data.load() {
        Ok(d) => d,
        Err(e) => return bad(&[e.to_string()]),
    };
    let data = match provenance::sources(&args.judging.data) {
        Ok(d) => d,
        Err(e) => return bad(&[e]),
    };
    let data_warning = match args.judging.data.address_data_age() {
        Ok(age) => age.warning_line(now, lang),
        Err(e) => return bad(&[e.to_string()]),
    };
    let previous = match &args.compare {
        None => None,
        Some(path) => {
            let read = std::fs::read(path)
                .map_err(|e| format!("--compare {}: cannot read: {e}", path.display()))
                .and_then(|bytes| {
                    let text = String::from_utf8(bytes.clone())
                        .map_err(|_| format!("--compare {}: not UTF-8", path.display()))?;
                    compare::read_previous(&text)
                        .map(|v| (v, provenance::sha256_hex(&bytes)))
                        .map_err(|e| format!("--compare {}: {e}", path.display()))
                });
            match read {
                Ok(p) => Some(p),
                Err(e) => return bad(&[e]),
            }
        }
    };
    let mut base = Snapshot::new(catalogue, space);
    let sources = &args.judging.data;
    match sources.egress_cni() {
        Some(cni) => base.network.set_semantics(crate::engine::EgressSemantics {
            cni,
            cilium_enforcement: sources.cilium_enforcement(),
        }),
        None => base
            .network
            .set_cilium_enforcement(sources.cilium_enforcement()),
    }

    let mut inputs = if args.files.is_empty() {
        match read_cluster(args, base, now) {
            Ok(i) => i,
            Err(e) => {
                return fail(
                    EXIT_CLUSTER,
                    &[say(
                        lang,
                        &format!("cannot read the cluster: {e}"),
                        &format!("无法读取集群：{e}"),
                    )],
                    lang,
                );
            }
        }
    } else {
        match manifests::gather(&args.files, base, &args.judging.namespace, now, lang) {
            Ok(i) => i,
            Err(errors) => return bad(&errors),
        }
    };
    inputs.data = data;
    if let Some(w) = &data_warning {
        inputs.warnings.push(w.clone());
    }
    let mut report = match model::build(&inputs, now) {
        Ok(r) => r,
        Err(model::BuildErrors(errors)) => {
            let errors: Vec<String> = errors.iter().map(|t| t.get(lang).to_string()).collect();
            return bad(&errors);
        }
    };
    if let Some(w) = &data_warning {
        // Said on the terminal too (once the inputs are known good): a stale
        // list affects every egress verdict in the report.
        eprintln!("{}: {w}", say(lang, "warning", "警告"));
    }
    if let Some((previous, sha256)) = &previous {
        report.changes = Some(compare::compare(previous, sha256.clone(), &report));
    }
    let rendered = match render(&report, lang, args.detail_limit) {
        Ok(r) => r,
        Err(e) => return bad(&[e]),
    };
    if let Err(e) = std::fs::create_dir_all(&args.output_dir) {
        return bad(&[format!("{}: cannot create: {e}", args.output_dir.display())]);
    }
    let mut written = Vec::new();
    for format in &args.formats {
        let (name, bytes) = match format {
            ReportFormat::Json => (JSON_FILE, rendered.json.as_slice()),
            ReportFormat::Html => (HTML_FILE, rendered.html.as_bytes()),
            ReportFormat::Csv => (CSV_FILE, rendered.csv.as_bytes()),
        };
        if written.iter().any(|(n, _)| *n == name) {
            continue;
        }
        match write(&args.output_dir, name, bytes) {
            Ok(path) => written.push((name, path)),
            Err(e) => return bad(&[e]),
        }
    }
    let s = &report.summary;
    for (_, path) in &written {
        println!(
            "{}",
            say(
                lang,
                &format!("wrote {}", path.display()),
                &format!("已写入 {}", path.display())
            )
        );
    }
    let (workloads, violating, exempted, compliant, pods) =
        (s.workloads, s.violating, s.exempted, s.compliant, s.pods);
    let (unclassified, sha256) = (s.unclassified_in_governed_namespaces, &rendered.sha256);
    match lang {
        Lang::En => println!(
            "{workloads} governed workloads ({violating} violating, {exempted} exempted, {compliant} compliant), {pods} pods; {unclassified} unclassified in governed namespaces. JSON SHA-256 {sha256}"
        ),
        Lang::ZhCn => println!(
            "受管工作负载 {workloads} 个（违规 {violating}，豁免 {exempted}，合规 {compliant}），Pod {pods} 个；受管命名空间中未分类的工作负载 {unclassified} 个。JSON SHA-256 {sha256}"
        ),
    }
    // The process ends with this call (`main` returns its code): the
    // operating system takes the inputs and the report back at once,
    // where freeing their millions of allocations one by one cost a
    // tenth of a 10,000-workload report's time.
    std::mem::forget((inputs, report, rendered));
    ExitCode::from(EXIT_OK)
}

fn read_cluster(
    args: &ReportArgs,
    base: Snapshot,
    now: Timestamp,
) -> Result<model::Inputs, String> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    runtime.block_on(async {
        let (client, server) = live::connect(args.kubeconfig.as_deref(), args.context.as_deref())
            .await
            .map_err(|e| e.to_string())?;
        let egress = live::EgressChoice {
            requested: args.judging.data.egress_cni(),
            cilium_enforcement: args.judging.data.cilium_enforcement(),
        };
        live::gather(&client, server, args.context.clone(), base, egress, now)
            .await
            .map_err(|e| e.to_string())
    })
}
