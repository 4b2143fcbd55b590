//! The report's inputs from manifests (`-f`), read exactly as `check`
//! reads them (`cli::load_inputs`): the same snapshot, the same errors.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::PathBuf;

use jiff::Timestamp;

use super::model::{
    AuditSources, Availability, Inputs, ManifestScope, PolicyMeta, PolicyStatusEntry, Source,
};
use crate::cli;
use crate::engine::{Lang, Snapshot};

/// Manifests given on stdin are read once, into a file `load_inputs` can
/// read and the policy metadata pass can read again; errors name it
/// `<stdin>`.
struct StdinCopy {
    path: PathBuf,
}

impl StdinCopy {
    fn read() -> Result<StdinCopy, String> {
        let mut bytes = Vec::new();
        std::io::stdin()
            .take(cli::MAX_INPUT_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| format!("<stdin>: cannot read: {e}"))?;
        let path = std::env::temp_dir().join(format!(
            "residency-guard-report-stdin-{}.yaml",
            std::process::id()
        ));
        std::fs::write(&path, &bytes)
            .map_err(|e| format!("<stdin>: cannot keep a copy in {}: {e}", path.display()))?;
        Ok(StdinCopy { path })
    }
}

impl Drop for StdinCopy {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// resourceVersion, uid and status of the ResidencyPolicies in the files
/// (the compiled policies keep neither). Only files that mention the kind
/// are parsed a second time.
fn policy_meta(paths: &[PathBuf]) -> BTreeMap<String, PolicyMeta> {
    let mut out = BTreeMap::new();
    for path in paths {
        let Ok(text) = std::fs::read_to_string(path) else {
            continue;
        };
        if !text.contains("ResidencyPolicy") {
            continue;
        }
        let Ok(docs) = cli::parse_documents(&path.display().to_string(), &text) else {
            continue;
        };
        for doc in docs {
            let v = &doc.value;
            if v.get("kind").and_then(|k| k.as_str()) != Some("ResidencyPolicy") {
                continue;
            }
            let meta = v.get("metadata");
            let get = |key: &str| {
                meta.and_then(|m| m.get(key))
                    .and_then(|x| x.as_str())
                    .map(str::to_string)
            };
            let Some(name) = get("name") else { continue };
            let status = v.get("status").map(|s| PolicyStatusEntry {
                violations: s.get("violations").and_then(|x| x.as_i64()),
                last_evaluated: s
                    .get("lastEvaluated")
                    .and_then(|x| x.as_str())
                    .map(str::to_string),
                ready: None,
            });
            out.insert(
                name,
                PolicyMeta {
                    resource_version: get("resourceVersion"),
                    uid: get("uid"),
                    status,
                },
            );
        }
    }
    out
}

/// Everything in the manifests, or every problem found in them (in `lang`).
pub fn gather(
    files: &[PathBuf],
    base: Snapshot,
    namespace: &str,
    now: Timestamp,
    lang: Lang,
) -> Result<Inputs, Vec<String>> {
    let stdin = if files.iter().any(|f| f.as_os_str() == "-") {
        Some(StdinCopy::read().map_err(|e| vec![e])?)
    } else {
        None
    };
    let files: Vec<PathBuf> = files
        .iter()
        .map(|f| match &stdin {
            Some(copy) if f.as_os_str() == "-" => copy.path.clone(),
            _ => f.clone(),
        })
        .collect();
    let stdin_name = stdin.as_ref().map(|c| c.path.display().to_string());
    let rename = |s: String| match &stdin_name {
        Some(tmp) => s.replace(tmp.as_str(), "<stdin>"),
        None => s,
    };
    let loaded = match cli::load_inputs(&files, base.clone(), namespace, now) {
        Ok(l) => l,
        Err(errors) => {
            // The errors in the reader's language, as `check` gives them.
            let errors = match lang {
                Lang::En => errors,
                Lang::ZhCn => match cli::check_inputs_in(&files, base, namespace, now, lang) {
                    Err(e) => e,
                    Ok(_) => errors,
                },
            };
            return Err(errors.into_iter().map(rename).collect());
        }
    };
    let paths = cli::expand_paths(&files).unwrap_or_default();
    let policy_meta = policy_meta(&paths);
    let mut origins = BTreeMap::new();
    let mut workloads = Vec::with_capacity(loaded.workloads.len());
    for (origin, w) in loaded.workloads {
        origins.insert(
            (w.kind, w.namespace.clone(), w.name.clone()),
            rename(origin.to_string()),
        );
        workloads.push(w);
    }
    let none =
        || Availability::unavailable("manifests carry no audit output", "清单文件不含审计输出");
    Ok(Inputs {
        snapshot: loaded.snapshot,
        workloads,
        origins,
        policy_meta,
        evidence: Default::default(),
        audit_sources: AuditSources {
            events: none(),
            policy_reports: none(),
            policy_status: none(),
        },
        source: Source::Manifests(ManifestScope {
            files: paths
                .iter()
                .map(|p| rename(p.display().to_string()))
                .collect(),
            documents: loaded.inputs.documents,
        }),
        data: Vec::new(),
        warnings: loaded.policy_warnings.into_iter().map(rename).collect(),
        unclassifiable_is_error: true,
    })
}
