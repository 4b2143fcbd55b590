//! Reading manifests: files, directories (recursively), stdin; multi-document
//! YAML or JSON; `kind: List`. Every document keeps its origin
//! (`file#n`) so errors and results can point at it.

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Largest input accepted from one file or stdin. The apiserver caps objects
/// at 3 MiB; manifests bundles can be bigger, but not this big.
pub const MAX_INPUT_BYTES: u64 = 64 * 1024 * 1024;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin {
    pub file: String,
    /// 1-based document number within the file; items of a List are `n.i`.
    pub document: String,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (document {})", self.file, self.document)
    }
}

#[derive(Debug)]
pub struct Document {
    pub origin: Origin,
    pub value: serde_json::Value,
}

#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error(
        "{path}: {size} bytes is larger than the {MAX_INPUT_BYTES}-byte limit; split the input"
    )]
    TooLarge { path: String, size: u64 },
    #[error("{origin}: not valid YAML or JSON: {message}")]
    Parse { origin: Origin, message: String },
    #[error("{origin}: {message}")]
    Shape { origin: Origin, message: String },
    #[error("{path}: no such file or directory")]
    Missing { path: String },
}

/// Expand paths: a directory contributes its *.yaml, *.yml and *.json files,
/// recursively, in sorted order so output is stable.
pub fn expand_paths(paths: &[PathBuf]) -> Result<Vec<PathBuf>, InputError> {
    let mut out = Vec::new();
    for p in paths {
        if p.as_os_str() == "-" {
            out.push(p.clone());
        } else if p.is_dir() {
            walk(p, &mut out)?;
        } else if p.exists() {
            out.push(p.clone());
        } else {
            return Err(InputError::Missing {
                path: p.display().to_string(),
            });
        }
    }
    Ok(out)
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), InputError> {
    let read_err = |source| InputError::Read {
        path: dir.display().to_string(),
        source,
    };
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(read_err)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            walk(&path, out)?;
        } else if matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml" | "json")
        ) {
            out.push(path);
        }
    }
    Ok(())
}

/// Read one input (a path or `-`) into documents.
pub fn read_documents(path: &Path) -> Result<Vec<Document>, InputError> {
    let name = if path.as_os_str() == "-" {
        "<stdin>".to_string()
    } else {
        path.display().to_string()
    };
    let read_err = |source| InputError::Read {
        path: name.clone(),
        source,
    };
    let mut bytes = Vec::new();
    if path.as_os_str() == "-" {
        std::io::stdin()
            .take(MAX_INPUT_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(read_err)?;
    } else {
        let size = std::fs::metadata(path).map_err(read_err)?.len();
        if size > MAX_INPUT_BYTES {
            return Err(InputError::TooLarge { path: name, size });
        }
        std::fs::File::open(path)
            .map_err(read_err)?
            .take(MAX_INPUT_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(read_err)?;
    }
    if bytes.len() as u64 > MAX_INPUT_BYTES {
        return Err(InputError::TooLarge {
            path: name,
            size: bytes.len() as u64,
        });
    }
    let text = String::from_utf8(bytes).map_err(|e| InputError::Parse {
        origin: Origin {
            file: name.clone(),
            document: "1".into(),
        },
        message: format!("not UTF-8 text ({e})"),
    })?;
    parse_documents(&name, &text)
}

/// Split multi-document YAML (JSON is YAML) into JSON values; unwrap Lists.
pub fn parse_documents(name: &str, text: &str) -> Result<Vec<Document>, InputError> {
    let mut docs = Vec::new();
    for (i, de) in serde_norway::Deserializer::from_str(text).enumerate() {
        let origin = Origin {
            file: name.to_string(),
            document: (i + 1).to_string(),
        };
        let value = match serde_json::Value::deserialize(de) {
            Ok(v) => v,
            Err(e) => {
                return Err(InputError::Parse {
                    origin,
                    message: e.to_string(),
                });
            }
        };
        match value {
            serde_json::Value::Null => continue, // an empty document (`---` alone)
            serde_json::Value::Object(_) => {}
            other => {
                return Err(InputError::Shape {
                    origin,
                    message: format!(
                        "expected a Kubernetes object (a mapping), found {}",
                        json_type(&other)
                    ),
                });
            }
        }
        let is_list = value
            .get("kind")
            .and_then(|k| k.as_str())
            .is_some_and(|k| k.ends_with("List"))
            && value.get("items").is_some();
        if is_list {
            let Some(items) = value.get("items").and_then(|i| i.as_array()) else {
                return Err(InputError::Shape {
                    origin,
                    message: "a List's items must be a sequence".into(),
                });
            };
            for (j, item) in items.iter().enumerate() {
                docs.push(Document {
                    origin: Origin {
                        file: name.to_string(),
                        document: format!("{}.{}", i + 1, j + 1),
                    },
                    value: item.clone(),
                });
            }
        } else {
            docs.push(Document { origin, value });
        }
    }
    Ok(docs)
}

fn json_type(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "nothing",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "a sequence",
        serde_json::Value::Object(_) => "a mapping",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_documents_and_lists() {
        let text = "a: 1\n---\n---\nkind: List\napiVersion: v1\nitems:\n- {kind: X}\n- {kind: Y}\n";
        let docs = parse_documents("f", text).unwrap();
        let names: Vec<&str> = docs.iter().map(|d| d.origin.document.as_str()).collect();
        assert_eq!(names, ["1", "3.1", "3.2"]);
    }

    #[test]
    fn reports_the_document_number() {
        let err = parse_documents("f.yaml", "a: 1\n---\nb: [1, 2\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("f.yaml (document 2): not valid YAML"),
            "{err}"
        );
        let err = parse_documents("f.yaml", "- 1\n- 2\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("expected a Kubernetes object"), "{err}");
    }
}
