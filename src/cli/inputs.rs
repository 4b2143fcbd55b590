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
/// recursively, in sorted order so output is stable. Every path that cannot
/// be read is reported, not only the first.
pub fn expand_paths(paths: &[PathBuf]) -> Result<Vec<PathBuf>, Vec<InputError>> {
    let mut out = Vec::new();
    let mut errors = Vec::new();
    for p in paths {
        if p.as_os_str() == "-" {
            out.push(p.clone());
        } else if p.is_dir() {
            if let Err(e) = walk(p, &mut out) {
                errors.push(e);
            }
        } else if p.exists() {
            out.push(p.clone());
        } else {
            errors.push(InputError::Missing {
                path: p.display().to_string(),
            });
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
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

/// Read one input (a path or `-`) into documents, with every problem found.
pub fn read_documents(path: &Path) -> (Vec<Document>, Vec<InputError>) {
    match read_text(path) {
        Ok((name, text)) => parse_documents_all(&name, &text),
        Err(e) => (Vec::new(), vec![e]),
    }
}

/// The text of one input, and the name errors give it.
fn read_text(path: &Path) -> Result<(String, String), InputError> {
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
    Ok((name, text))
}

/// Split multi-document YAML (JSON is YAML) into JSON values; unwrap Lists.
/// Stops at the first bad document (see `parse_documents_all` for all of them).
pub fn parse_documents(name: &str, text: &str) -> Result<Vec<Document>, InputError> {
    let (docs, mut errors) = parse_documents_all(name, text);
    if errors.is_empty() {
        Ok(docs)
    } else {
        Err(errors.swap_remove(0))
    }
}

/// Every document of a file, and every problem found: a document that is
/// not an object is reported and the next one read. A YAML syntax error
/// ends the file (the parser cannot tell where the next document starts).
/// YAML merge keys (`<<: *anchor`) are resolved as kubectl resolves them.
pub fn parse_documents_all(name: &str, text: &str) -> (Vec<Document>, Vec<InputError>) {
    let mut docs = Vec::new();
    let mut errors = Vec::new();
    // JSON (what `kubectl get -o json` writes) is read by a JSON parser,
    // many times faster than the YAML one; anything it refuses is read as
    // YAML, so errors are the YAML reader's.
    let values: Box<dyn Iterator<Item = Result<serde_json::Value, String>>> =
        match json_documents(text) {
            Some(values) => Box::new(values.into_iter().map(Ok)),
            None => Box::new(serde_norway::Deserializer::from_str(text).map(read_document)),
        };
    for (i, value) in values.enumerate() {
        let origin = Origin {
            file: name.to_string(),
            document: (i + 1).to_string(),
        };
        let value = match value {
            Ok(v) => v,
            Err(message) => {
                errors.push(InputError::Parse { origin, message });
                break;
            }
        };
        let mut object = match value {
            serde_json::Value::Null => continue, // an empty document (`---` alone)
            serde_json::Value::Object(object) => object,
            other => {
                errors.push(InputError::Shape {
                    origin,
                    message: format!(
                        "expected a Kubernetes object (a mapping), found {}",
                        json_type(&other)
                    ),
                });
                continue;
            }
        };
        let is_list = object
            .get("kind")
            .and_then(|k| k.as_str())
            .is_some_and(|k| k.ends_with("List"))
            && object.contains_key("items");
        if !is_list {
            docs.push(Document {
                origin,
                value: serde_json::Value::Object(object),
            });
            continue;
        }
        // The items are moved out of the List, not copied: a List of
        // thousands of objects would otherwise be built twice and dropped once.
        let Some(serde_json::Value::Array(items)) = object.remove("items") else {
            errors.push(InputError::Shape {
                origin,
                message: "a List's items must be a sequence".into(),
            });
            continue;
        };
        docs.reserve(items.len());
        for (j, item) in items.into_iter().enumerate() {
            docs.push(Document {
                origin: Origin {
                    file: name.to_string(),
                    document: format!("{}.{}", i + 1, j + 1),
                },
                value: item,
            });
        }
    }
    (docs, errors)
}

/// The documents of a text that is JSON (one value or several in a row),
/// or None when it is not.
fn json_documents(text: &str) -> Option<Vec<serde_json::Value>> {
    if !text.trim_start().starts_with(['{', '[']) {
        return None;
    }
    serde_json::Deserializer::from_str(text)
        .into_iter::<serde_json::Value>()
        .collect::<Result<Vec<_>, _>>()
        .ok()
}

/// One YAML document as JSON, merge keys resolved.
fn read_document(de: serde_norway::Deserializer<'_>) -> Result<serde_json::Value, String> {
    let mut yaml = serde_norway::Value::deserialize(de).map_err(|e| e.to_string())?;
    resolve_merge_keys(&mut yaml)?;
    serde_json::Value::deserialize(yaml).map_err(|e| e.to_string())
}

/// Resolve YAML merge keys (`<<: *labels`, `<<: [*a, *b]`) the way kubectl
/// (go-yaml) does: the mapping's own keys win, then the merged mappings in
/// order. A merged mapping is resolved first, so merges may nest. The
/// parser bounds nesting depth (128), and so this recursion.
fn resolve_merge_keys(value: &mut serde_norway::Value) -> Result<(), String> {
    use serde_norway::Value;
    match value {
        Value::Mapping(map) => {
            for (_, child) in map.iter_mut() {
                resolve_merge_keys(child)?;
            }
            let Some(merged) = map.shift_remove("<<") else {
                return Ok(());
            };
            let sources = match merged {
                Value::Mapping(m) => vec![m],
                Value::Sequence(items) => items
                    .into_iter()
                    .map(|item| match item {
                        Value::Mapping(m) => Ok(m),
                        _ => Err("a merge key (<<) list may only hold mappings".to_string()),
                    })
                    .collect::<Result<Vec<_>, _>>()?,
                _ => {
                    return Err(
                        "a merge key (<<) must name a mapping or a list of mappings".to_string()
                    );
                }
            };
            for source in sources {
                for (k, v) in source {
                    map.entry(k).or_insert(v);
                }
            }
            Ok(())
        }
        Value::Sequence(items) => items.iter_mut().try_for_each(resolve_merge_keys),
        Value::Tagged(tagged) => resolve_merge_keys(&mut tagged.value),
        _ => Ok(()),
    }
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

    #[test]
    fn every_bad_document_is_reported_and_the_good_ones_kept() {
        let (docs, errors) = parse_documents_all("f.yaml", "a: 1\n---\n- x\n---\nb: 2\n---\n42\n");
        let names: Vec<&str> = docs.iter().map(|d| d.origin.document.as_str()).collect();
        assert_eq!(names, ["1", "3"]);
        let errors: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(errors[0].starts_with("f.yaml (document 2)"), "{errors:?}");
        assert!(errors[1].starts_with("f.yaml (document 4)"), "{errors:?}");
    }

    #[test]
    fn json_is_read_as_yaml_reads_it() {
        let docs = [
            "{\"kind\": \"List\", \"items\": [{\"kind\": \"X\", \"n\": 1.5}, {\"kind\": \"Y\"}]}",
            "{\"a\": \"\\u4e2d\", \"b\": [true, null, -3]}",
        ];
        // JSON values one after another (the fast path), and the same as
        // YAML documents.
        let fast = parse_documents("f.json", &docs.join("\n")).unwrap();
        let yaml = parse_documents("f.yaml", &docs.join("\n---\n")).unwrap();
        let names: Vec<&str> = fast.iter().map(|d| d.origin.document.as_str()).collect();
        assert_eq!(names, ["1.1", "1.2", "2"]);
        assert_eq!(fast.len(), yaml.len());
        for (f, y) in fast.iter().zip(&yaml) {
            assert_eq!(f.value, y.value);
        }
        // Not JSON after all: the YAML reader's error.
        let err = parse_documents("f.json", "{\"a\": [1, 2}\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("f.json (document 1): not valid YAML"),
            "{err}"
        );
    }

    #[test]
    fn merge_keys_resolve_like_kubectl() {
        let text = "\
common: &labels {app: api, tier: web}
extra: &extra {team: pay}
metadata:
  labels:
    <<: *labels
    tier: backend
nested:
  both: {<<: [*labels, *extra]}
  deep: &deep {<<: *labels, zone: a}
  deeper: {<<: *deep}
";
        let docs = parse_documents("f.yaml", text).unwrap();
        let v = &docs[0].value;
        assert_eq!(
            v["metadata"]["labels"],
            serde_json::json!({"app": "api", "tier": "backend"})
        );
        assert_eq!(
            v["nested"]["both"],
            serde_json::json!({"app": "api", "tier": "web", "team": "pay"})
        );
        assert_eq!(
            v["nested"]["deeper"],
            serde_json::json!({"app": "api", "tier": "web", "zone": "a"})
        );
        let err = parse_documents("f.yaml", "a: {<<: 1}\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("merge key"), "{err}");
    }
}
