//! `residency-guard check`: the engine on manifests, with no cluster.
//!
//! The inputs together form the snapshot (ResidencyPolicies, Nodes,
//! Namespaces, NetworkPolicies, Services) and every pod-creating object in
//! them is judged. Exit codes are a contract: 0 no Deny-policy violation,
//! 1 at least one, 2 bad input or usage.

mod inputs;
mod report;

use std::path::PathBuf;
use std::process::ExitCode;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{
    Namespace, Node, PersistentVolume, PersistentVolumeClaim, Service,
};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::storage::v1::StorageClass;
use serde::de::DeserializeOwned;

pub use inputs::{Document, InputError, MAX_INPUT_BYTES, Origin, expand_paths, parse_documents};
pub use report::{CheckReport, Outcome, render_text};

use crate::api::ResidencyPolicy;
use crate::datafiles::{DataError, DataSources};
use crate::engine::{
    self, ClaimRecord, ClassRecord, Lang, NodeInfo, Snapshot, SnapshotBuilder, UnknownLang,
    VolumeRecord, Workload, WorkloadKind,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    Text,
    Json,
}

#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// Manifests to read: files, directories (recursively: *.yaml, *.yml,
    /// *.json) or - for stdin. Repeatable or comma-separated, as with kubectl.
    #[arg(
        short = 'f',
        long = "filename",
        required = true,
        value_name = "PATH",
        value_delimiter = ',',
        env = "RESIDENCY_GUARD_FILENAME"
    )]
    pub files: Vec<PathBuf>,

    /// Report format.
    #[arg(short, long, value_enum, default_value_t = OutputFormat::Text, env = "RESIDENCY_GUARD_OUTPUT")]
    pub output: OutputFormat,

    #[command(flatten)]
    pub judging: JudgingArgs,

    /// Print only workloads with findings.
    #[arg(short, long, env = "RESIDENCY_GUARD_QUIET")]
    pub quiet: bool,
}

/// What `check` and `report` share: the language, the data, the default
/// namespace and the time to judge manifests with.
#[derive(Debug, clap::Args)]
pub struct JudgingArgs {
    /// Message language: en or zh-CN. Default: from LC_ALL / LC_MESSAGES / LANG.
    #[arg(long, env = "RESIDENCY_GUARD_LANG")]
    pub lang: Option<String>,

    #[command(flatten)]
    pub data: DataSources,

    /// Namespace for objects that do not name one. (Its variable is not
    /// RESIDENCY_GUARD_NAMESPACE: that is `serve`'s own namespace.)
    #[arg(
        short = 'n',
        long,
        default_value = "default",
        env = "RESIDENCY_GUARD_DEFAULT_NAMESPACE"
    )]
    pub namespace: String,

    /// Judge as of this instant (RFC 3339), e.g. to test exemption expiry.
    /// Default: now.
    #[arg(long, value_name = "TIMESTAMP", env = "RESIDENCY_GUARD_NOW")]
    pub now: Option<String>,
}

impl JudgingArgs {
    /// The message language: the flag, else the locale, else English.
    pub fn lang(&self) -> Result<Lang, UnknownLang> {
        resolve_lang(self.lang.as_deref())
    }

    /// The instant to judge as of: `--now`, else the clock. The error is
    /// worded in `lang`.
    pub fn now(&self, lang: Lang) -> Result<Timestamp, String> {
        let Some(t) = &self.now else {
            return Ok(Timestamp::now());
        };
        t.parse::<Timestamp>().map_err(|e| match lang {
            Lang::En => format!("--now {t:?} is not an RFC 3339 timestamp: {e}"),
            Lang::ZhCn => format!("--now {t:?} 不是 RFC 3339 时间戳：{e}"),
        })
    }
}

/// Exit codes of `check`.
pub const EXIT_OK: u8 = 0;
pub const EXIT_DENY: u8 = 1;
pub const EXIT_BAD_INPUT: u8 = 2;

/// Pick the message language: the flag, else the locale, else English.
pub fn resolve_lang(flag: Option<&str>) -> Result<Lang, UnknownLang> {
    if let Some(f) = flag {
        return Lang::from_setting(f);
    }
    let locale = ["LC_ALL", "LC_MESSAGES", "LANG"]
        .iter()
        .filter_map(|k| std::env::var(k).ok())
        .find(|v| !v.is_empty());
    Ok(locale.as_deref().and_then(Lang::parse).unwrap_or_default())
}

pub fn run_check(args: &CheckArgs) -> ExitCode {
    let lang = match args.judging.lang() {
        Ok(l) => l,
        Err(e) => return fail(&[e.to_string()]),
    };
    let now = match args.judging.now(lang) {
        Ok(t) => t,
        Err(e) => return fail(&[e]),
    };
    let snapshot_base = match base_snapshot(args) {
        Ok(s) => s,
        Err(e) => return fail(&[e.to_string()]),
    };
    let data_age = match args.judging.data.address_data_age() {
        Ok(a) => a,
        Err(e) => return fail(&[e.to_string()]),
    };
    let mut report = match check_inputs_in(
        &args.files,
        snapshot_base,
        &args.judging.namespace,
        now,
        lang,
    ) {
        Ok(r) => r,
        Err(errors) => return fail(&errors),
    };
    report
        .data_warnings
        .extend(data_age.warning_line(now, lang));
    match args.output {
        OutputFormat::Json => match serde_json::to_string_pretty(&report) {
            Ok(s) => println!("{s}"),
            Err(e) => return fail(&[format!("cannot encode the report: {e}")]),
        },
        OutputFormat::Text => print!("{}", render_text(&report, lang, args.quiet)),
    }
    ExitCode::from(if report.summary.denied > 0 {
        EXIT_DENY
    } else {
        EXIT_OK
    })
}

fn fail(errors: &[String]) -> ExitCode {
    for e in errors {
        eprintln!("error: {e}");
    }
    ExitCode::from(EXIT_BAD_INPUT)
}

/// The catalogue and address space, from the bundled data and the flags.
fn base_snapshot(args: &CheckArgs) -> Result<Snapshot, DataError> {
    let data = &args.judging.data;
    let (catalogue, space) = data.load()?;
    let mut snapshot = Snapshot::new(catalogue, space);
    match data.egress_cni() {
        Some(cni) => snapshot.network.set_semantics(engine::EgressSemantics {
            cni,
            cilium_enforcement: data.cilium_enforcement(),
        }),
        None => snapshot
            .network
            .set_cilium_enforcement(data.cilium_enforcement()),
    }
    Ok(snapshot)
}

/// Kinds in Kubernetes' own API groups that `check` reads or knowingly
/// skips. Another kind in these groups is most likely a typo and is an
/// error, so a misspelt Deployment is never silently unjudged.
const KNOWN_BUILTIN_KINDS: &[&str] = &[
    "ConfigMap",
    "Secret",
    "Service",
    "ServiceAccount",
    "Endpoints",
    "EndpointSlice",
    "PersistentVolume",
    "PersistentVolumeClaim",
    "LimitRange",
    "ResourceQuota",
    "Event",
    "PodTemplate",
    "Binding",
    "ControllerRevision",
    "Ingress",
    "IngressClass",
    "NetworkPolicy",
    "Role",
    "RoleBinding",
    "ClusterRole",
    "ClusterRoleBinding",
    "HorizontalPodAutoscaler",
    "PodDisruptionBudget",
    "StorageClass",
    "CSIDriver",
    "CSINode",
    "VolumeAttachment",
    "PriorityClass",
    "RuntimeClass",
    "Lease",
    "CustomResourceDefinition",
    "ValidatingWebhookConfiguration",
    "MutatingWebhookConfiguration",
    "ValidatingAdmissionPolicy",
    "ValidatingAdmissionPolicyBinding",
    "APIService",
    "CertificateSigningRequest",
    "Node",
    "Namespace",
    "ComponentStatus",
    "ServiceCIDR",
    "IPAddress",
];
const BUILTIN_GROUPS: &[&str] = &[
    "",
    "apps",
    "batch",
    "networking.k8s.io",
    "rbac.authorization.k8s.io",
    "policy",
    "autoscaling",
    "storage.k8s.io",
    "scheduling.k8s.io",
    "node.k8s.io",
    "coordination.k8s.io",
    "apiextensions.k8s.io",
    "admissionregistration.k8s.io",
    "apiregistration.k8s.io",
    "certificates.k8s.io",
    "discovery.k8s.io",
    "events.k8s.io",
];

fn typed<T: DeserializeOwned>(doc: &Document, what: &str) -> Result<T, String> {
    serde_path_to_error::deserialize(&doc.value)
        .map_err(|e| format!("{}: {what}: field {}: {}", doc.origin, e.path(), e.inner()))
}

/// The snapshot the inputs form, and the workloads in them to judge.
pub struct Loaded {
    pub snapshot: Snapshot,
    pub workloads: Vec<(Origin, Workload)>,
    pub policy_warnings: Vec<String>,
    pub inputs: report::Inputs,
}

/// Build the snapshot from the inputs and judge every workload in them.
/// Errors are every bad input found (all of them, not just the first),
/// in English.
pub fn check_inputs(
    files: &[PathBuf],
    snapshot: Snapshot,
    default_namespace: &str,
    now: Timestamp,
) -> Result<CheckReport, Vec<String>> {
    check_inputs_in(files, snapshot, default_namespace, now, Lang::En)
}

/// `check_inputs`, with errors and policy warnings in `lang`. A workload
/// whose classification label cannot be read is reported together with
/// every other bad input (parse errors, invalid policies and
/// NetworkPolicies), so one run shows everything to fix.
pub fn check_inputs_in(
    files: &[PathBuf],
    snapshot: Snapshot,
    default_namespace: &str,
    now: Timestamp,
    lang: Lang,
) -> Result<CheckReport, Vec<String>> {
    let (loaded, mut errors) = load(files, snapshot, default_namespace, now, lang);
    let mut results = Vec::with_capacity(loaded.workloads.len());
    for (origin, w) in &loaded.workloads {
        match engine::evaluate(&loaded.snapshot, w, now) {
            Ok(v) => results.push(report::Outcome::new(origin, v)),
            Err(e) => errors.push(format!("{origin}: {}", e.text().get(lang))),
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(CheckReport::new(
        results,
        loaded.policy_warnings,
        loaded.inputs,
    ))
}

/// Read every input into a snapshot plus the workloads to judge.
pub fn load_inputs(
    files: &[PathBuf],
    snapshot: Snapshot,
    default_namespace: &str,
    now: Timestamp,
) -> Result<Loaded, Vec<String>> {
    match load(files, snapshot, default_namespace, now, Lang::En) {
        (loaded, errors) if errors.is_empty() => Ok(loaded),
        (_, errors) => Err(errors),
    }
}

/// The unknown classes in a ResidencyPolicy's `spec.dataClasses`, each
/// with its index: what the CRD's enum would refuse, said the way the
/// workload label's error says it.
fn unknown_policy_classes(doc: &Document) -> Vec<engine::PolicyProblem> {
    let classes = doc
        .value
        .get("spec")
        .and_then(|s| s.get("dataClasses"))
        .and_then(|c| c.as_array());
    classes
        .into_iter()
        .flatten()
        .enumerate()
        .filter_map(|(i, c)| match c.as_str() {
            Some(s) if crate::api::DataClass::parse(s).is_some() => None,
            Some(s) => Some(engine::PolicyProblem::unknown_class(i, s)),
            None => Some(engine::PolicyProblem::unknown_class(i, &c.to_string())),
        })
        .collect()
}

/// The name in a document's metadata, before it is decoded.
fn raw_name(doc: &Document) -> &str {
    doc.value
        .get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(|n| n.as_str())
        .unwrap_or_default()
}

/// Everything the inputs hold, and every problem found in them: nothing
/// stops at the first bad document.
fn load(
    files: &[PathBuf],
    snapshot: Snapshot,
    default_namespace: &str,
    now: Timestamp,
    lang: Lang,
) -> (Loaded, Vec<String>) {
    // Reading problems come first, then those of the objects read, each
    // in input order, however the work is interleaved.
    let mut read_errors = Vec::new();
    let paths = inputs::expand_paths(files).unwrap_or_else(|e| {
        read_errors.extend(e.iter().map(ToString::to_string));
        Vec::new()
    });

    let mut errors = Vec::new();
    let mut builder = SnapshotBuilder::new(snapshot, now);
    let mut workloads: Vec<(Origin, Workload)> = Vec::new();
    let mut policy_warnings = Vec::new();
    let mut skipped = 0usize;
    let mut policy_count = 0usize;
    let mut documents = 0usize;
    // One file at a time, each document dropped once read: the JSON trees
    // of a large input are never all alive at once, and the memory of one
    // file's serves the next.
    for path in &paths {
        let (docs, e) = inputs::read_documents(path);
        read_errors.extend(e.iter().map(ToString::to_string));
        documents += docs.len();
        workloads.reserve(docs.len());
        for doc in docs {
            let api_version = doc
                .value
                .get("apiVersion")
                .and_then(|v| v.as_str())
                .unwrap_or_default();
            let kind = doc
                .value
                .get("kind")
                .and_then(|v| v.as_str())
                .unwrap_or_default();
            if api_version.is_empty() || kind.is_empty() {
                errors.push(format!("{}: apiVersion and kind are required", doc.origin));
                continue;
            }
            let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
            match (group, kind) {
                (crate::api::GROUP, "ResidencyPolicy") => {
                    let invalid = |field: &str, message: &str| match lang {
                        Lang::En => format!(
                            "{}: ResidencyPolicy {} is invalid: {field}: {message}",
                            doc.origin,
                            raw_name(&doc)
                        ),
                        Lang::ZhCn => format!(
                            "{}: ResidencyPolicy {} 无效：{field}：{message}",
                            doc.origin,
                            raw_name(&doc)
                        ),
                    };
                    let unknown = unknown_policy_classes(&doc);
                    if !unknown.is_empty() {
                        errors.extend(
                            unknown
                                .iter()
                                .map(|p| invalid(&p.field, p.message.get(lang))),
                        );
                        continue;
                    }
                    let policy: ResidencyPolicy = match serde_path_to_error::deserialize(&doc.value)
                    {
                        Ok(p) => p,
                        Err(e) => {
                            errors.push(invalid(&e.path().to_string(), &e.inner().to_string()));
                            continue;
                        }
                    };
                    let name = policy.metadata.name.clone().unwrap_or_default();
                    if name.is_empty() {
                        errors.push(format!(
                            "{}: ResidencyPolicy has no metadata.name",
                            doc.origin
                        ));
                        continue;
                    }
                    match builder.policy(&policy) {
                        Ok(warnings) => {
                            policy_count += 1;
                            policy_warnings.extend(warnings.into_iter().map(|w| {
                                let sep = if lang == Lang::ZhCn { "：" } else { ": " };
                                format!(
                                    "{}: ResidencyPolicy {name}{sep}{}{sep}{}",
                                    doc.origin,
                                    w.field,
                                    w.message.get(lang)
                                )
                            }));
                        }
                        Err(problems) => errors.extend(
                            problems
                                .iter()
                                .map(|p| invalid(&p.field, p.message.get(lang))),
                        ),
                    }
                }
                ("", "Node") => match typed::<Node>(&doc, "Node") {
                    Ok(n) => builder.node(NodeInfo::from_node(&n)),
                    Err(e) => errors.push(e),
                },
                ("", "Namespace") => match typed::<Namespace>(&doc, "Namespace") {
                    Ok(ns) => {
                        let name = ns.metadata.name.unwrap_or_default();
                        builder.namespace(name, ns.metadata.labels.unwrap_or_default());
                    }
                    Err(e) => errors.push(e),
                },
                ("networking.k8s.io", "NetworkPolicy") => {
                    match typed::<NetworkPolicy>(&doc, "NetworkPolicy") {
                        Ok(mut np) => {
                            if np.metadata.namespace.is_none() {
                                np.metadata.namespace = Some(default_namespace.to_string());
                            }
                            let problems = engine::validate_network_policy(&np);
                            if problems.is_empty() {
                                builder.network_policy(&np);
                            } else {
                                let reference = format!(
                                    "NetworkPolicy {}/{}",
                                    np.metadata.namespace.as_deref().unwrap_or_default(),
                                    np.metadata.name.as_deref().unwrap_or_default()
                                );
                                errors.extend(problems.iter().map(|p| {
                                    let (origin, field, message) =
                                        (&doc.origin, &p.field, p.message.get(lang));
                                    match lang {
                                        Lang::En => format!(
                                            "{origin}: {reference} is invalid (the API server would refuse it): {field}: {message}"
                                        ),
                                        Lang::ZhCn => format!(
                                            "{origin}: {reference} 无效（API server 会拒绝它）：{field}：{message}"
                                        ),
                                    }
                                }));
                            }
                        }
                        Err(e) => errors.push(e),
                    }
                }
                ("cilium.io", "CiliumNetworkPolicy" | "CiliumClusterwideNetworkPolicy")
                | (
                    "crd.projectcalico.org",
                    "NetworkPolicy"
                    | "GlobalNetworkPolicy"
                    | "Tier"
                    | "NetworkSet"
                    | "GlobalNetworkSet",
                )
                | (
                    "policy.networking.k8s.io",
                    "AdminNetworkPolicy" | "BaselineAdminNetworkPolicy",
                ) => {
                    let mut value = doc.value.clone();
                    let namespaced =
                        matches!(kind, "CiliumNetworkPolicy" | "NetworkPolicy" | "NetworkSet");
                    if namespaced
                        && value.pointer("/metadata/namespace").is_none()
                        && let Some(meta) =
                            value.get_mut("metadata").and_then(|m| m.as_object_mut())
                    {
                        meta.insert("namespace".into(), default_namespace.into());
                    }
                    if raw_name(&doc).is_empty() {
                        errors.push(format!("{}: {kind} has no metadata.name", doc.origin));
                        continue;
                    }
                    builder.layer_object(api_version, kind, &value);
                }
                ("", "Service") => match typed::<Service>(&doc, "Service") {
                    Ok(mut svc) => {
                        if svc.metadata.namespace.is_none() {
                            svc.metadata.namespace = Some(default_namespace.to_string());
                        }
                        builder.service(&svc);
                    }
                    Err(e) => errors.push(e),
                },
                ("", "PersistentVolume") => {
                    match typed::<PersistentVolume>(&doc, "PersistentVolume") {
                        Ok(pv) => builder.persistent_volume(VolumeRecord::from_k8s(&pv)),
                        Err(e) => errors.push(e),
                    }
                }
                ("", "PersistentVolumeClaim") => {
                    match typed::<PersistentVolumeClaim>(&doc, "PersistentVolumeClaim") {
                        Ok(mut pvc) => {
                            if pvc.metadata.namespace.is_none() {
                                pvc.metadata.namespace = Some(default_namespace.to_string());
                            }
                            builder.persistent_volume_claim(ClaimRecord::from_k8s(&pvc));
                        }
                        Err(e) => errors.push(e),
                    }
                }
                ("storage.k8s.io", "StorageClass") => {
                    match typed::<StorageClass>(&doc, "StorageClass") {
                        Ok(sc) => builder.storage_class(ClassRecord::from_k8s(&sc)),
                        Err(e) => errors.push(e),
                    }
                }
                _ => match Workload::from_value(&doc.value, default_namespace) {
                    Ok(w) => workloads.push((doc.origin, w)),
                    Err(e) if e.is_not_a_workload() => {
                        if BUILTIN_GROUPS.contains(&group) && !KNOWN_BUILTIN_KINDS.contains(&kind) {
                            errors.push(format!(
                                "{}: unknown kind {kind:?} in {api_version}; pod-creating kinds are {}",
                                doc.origin,
                                engine::join_en(WorkloadKind::ALL.iter().map(|k| k.as_str()))
                            ));
                        } else {
                            skipped += 1;
                        }
                    }
                    Err(e) => errors.push(format!("{}: {e}", doc.origin)),
                },
            }
        }
    }
    let mut snapshot = builder.build();
    if !snapshot.network.semantics_chosen() {
        match snapshot.network.detect_cni() {
            Ok(cni) => {
                let mode = snapshot.network.semantics().cilium_enforcement;
                snapshot.network.set_semantics(engine::EgressSemantics {
                    cni,
                    cilium_enforcement: mode,
                });
            }
            Err((cilium, calico)) => errors.push(match lang {
                Lang::En => format!(
                    "the manifests hold {cilium} Cilium and {calico} Calico policy objects: say which CNI enforces egress with --egress-cni cilium or --egress-cni calico"
                ),
                Lang::ZhCn => format!(
                    "清单中同时有 {cilium} 个 Cilium 与 {calico} 个 Calico 策略对象：请用 --egress-cni cilium 或 --egress-cni calico 指明由哪个 CNI 执行出站策略"
                ),
            }),
        }
    }
    read_errors.append(&mut errors);
    let errors = read_errors;
    let inputs = report::Inputs {
        files: paths.len(),
        documents,
        policies: policy_count,
        nodes: snapshot.nodes().map(<[_]>::len),
        namespaces: snapshot.namespaces.len(),
        skipped,
    };
    (
        Loaded {
            snapshot,
            workloads,
            policy_warnings,
            inputs,
        },
        errors,
    )
}
