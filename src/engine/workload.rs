//! Every pod-creating kind reduced to what placement and egress depend on:
//! its labels, its pod template's labels and the scheduling/network fields of
//! its pod spec, with the field path the pod spec lives under (for messages).
//!
//! Decoding reads only these fields; everything else (containers,
//! managedFields, annotations) is skipped by serde without being built.

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::api::core::v1::NodeAffinity;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum WorkloadKind {
    Pod,
    Deployment,
    ReplicaSet,
    StatefulSet,
    DaemonSet,
    Job,
    CronJob,
    ReplicationController,
}

impl WorkloadKind {
    pub const ALL: [WorkloadKind; 8] = [
        WorkloadKind::Pod,
        WorkloadKind::Deployment,
        WorkloadKind::ReplicaSet,
        WorkloadKind::StatefulSet,
        WorkloadKind::DaemonSet,
        WorkloadKind::Job,
        WorkloadKind::CronJob,
        WorkloadKind::ReplicationController,
    ];

    /// Recognise a kind by its apiVersion group and kind name.
    pub fn from_type(api_version: &str, kind: &str) -> Option<WorkloadKind> {
        let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
        let k = WorkloadKind::ALL.into_iter().find(|k| k.as_str() == kind)?;
        (k.group() == group).then_some(k)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            WorkloadKind::Pod => "Pod",
            WorkloadKind::Deployment => "Deployment",
            WorkloadKind::ReplicaSet => "ReplicaSet",
            WorkloadKind::StatefulSet => "StatefulSet",
            WorkloadKind::DaemonSet => "DaemonSet",
            WorkloadKind::Job => "Job",
            WorkloadKind::CronJob => "CronJob",
            WorkloadKind::ReplicationController => "ReplicationController",
        }
    }

    pub fn group(self) -> &'static str {
        match self {
            WorkloadKind::Pod | WorkloadKind::ReplicationController => "",
            WorkloadKind::Job | WorkloadKind::CronJob => "batch",
            _ => "apps",
        }
    }

    /// Where the pod spec lives in this kind's manifest.
    pub fn pod_spec_path(self) -> &'static str {
        match self {
            WorkloadKind::Pod => "spec",
            WorkloadKind::CronJob => "spec.jobTemplate.spec.template.spec",
            _ => "spec.template.spec",
        }
    }

    /// Where the pod template's labels live.
    pub fn template_labels_path(self) -> &'static str {
        match self {
            WorkloadKind::Pod => "metadata.labels",
            WorkloadKind::CronJob => "spec.jobTemplate.spec.template.metadata.labels",
            _ => "spec.template.metadata.labels",
        }
    }
}

impl fmt::Display for WorkloadKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The pod-spec fields the engine reads.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodSpecView {
    #[serde(default)]
    pub node_selector: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub affinity: Option<AffinityView>,
    #[serde(default)]
    pub node_name: Option<String>,
    #[serde(default)]
    pub host_network: Option<bool>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AffinityView {
    #[serde(default)]
    pub node_affinity: Option<NodeAffinity>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OwnerRef {
    pub kind: String,
    pub name: String,
    #[serde(default)]
    pub controller: Option<bool>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct MetaView {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    generate_name: Option<String>,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    labels: Option<BTreeMap<String, String>>,
    #[serde(default)]
    owner_references: Option<Vec<OwnerRef>>,
}

#[derive(Clone, Debug, Default, Deserialize)]
struct TemplateView {
    #[serde(default)]
    metadata: Option<MetaView>,
    #[serde(default)]
    spec: Option<PodSpecView>,
}

#[derive(Deserialize)]
struct PodDoc {
    #[serde(default)]
    metadata: MetaView,
    #[serde(default)]
    spec: Option<PodSpecView>,
}

#[derive(Deserialize)]
struct TemplatedSpec {
    #[serde(default)]
    template: Option<TemplateView>,
}

#[derive(Deserialize)]
struct TemplatedDoc {
    #[serde(default)]
    metadata: MetaView,
    #[serde(default)]
    spec: Option<TemplatedSpec>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CronSpec {
    #[serde(default)]
    job_template: Option<JobTemplate>,
}

#[derive(Deserialize)]
struct JobTemplate {
    #[serde(default)]
    spec: Option<TemplatedSpec>,
}

#[derive(Deserialize)]
struct CronDoc {
    #[serde(default)]
    metadata: MetaView,
    #[serde(default)]
    spec: Option<CronSpec>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TypeHeader {
    #[serde(default)]
    api_version: Option<String>,
    #[serde(default)]
    kind: Option<String>,
}

/// A workload as the engine sees it.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Workload {
    pub kind: WorkloadKind,
    pub namespace: String,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub template_labels: BTreeMap<String, String>,
    pub pod: PodSpecView,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub controller: Option<OwnerRef>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WorkloadError {
    #[error("apiVersion and kind are required")]
    MissingType,
    #[error("{api_version} {kind} does not create pods, so it is not judged")]
    NotAWorkload { api_version: String, kind: String },
    #[error("{kind} has no metadata.name (or generateName)")]
    MissingName { kind: WorkloadKind },
    #[error("{kind} field {path}: {message}")]
    Malformed {
        kind: WorkloadKind,
        path: String,
        message: String,
    },
    #[error("not a Kubernetes object: {0}")]
    NotAnObject(String),
}

impl WorkloadError {
    /// True for objects that are fine but simply not pod-creating kinds.
    pub fn is_not_a_workload(&self) -> bool {
        matches!(self, WorkloadError::NotAWorkload { .. })
    }
}

impl Workload {
    /// A readable reference: `Deployment payments/api`.
    pub fn reference(&self) -> String {
        format!("{} {}/{}", self.kind, self.namespace, self.name)
    }

    pub fn pod_spec_path(&self) -> &'static str {
        self.kind.pod_spec_path()
    }

    /// Decode from JSON bytes, reading only what the engine needs.
    pub fn from_json_slice(
        bytes: &[u8],
        default_namespace: &str,
    ) -> Result<Workload, WorkloadError> {
        let header: TypeHeader =
            serde_json::from_slice(bytes).map_err(|e| WorkloadError::NotAnObject(e.to_string()))?;
        let kind = kind_of(header)?;
        let mut de = serde_json::Deserializer::from_slice(bytes);
        Self::decode_kind(kind, default_namespace, &mut de)
    }

    /// Decode from an already-parsed JSON value (the CLI parses YAML to this).
    pub fn from_value(
        value: &serde_json::Value,
        default_namespace: &str,
    ) -> Result<Workload, WorkloadError> {
        let header = TypeHeader {
            api_version: value
                .get("apiVersion")
                .and_then(|v| v.as_str())
                .map(str::to_string),
            kind: value
                .get("kind")
                .and_then(|v| v.as_str())
                .map(str::to_string),
        };
        let kind = kind_of(header)?;
        Self::decode_kind(kind, default_namespace, value)
    }

    fn decode_kind<'de, D>(
        kind: WorkloadKind,
        default_namespace: &str,
        de: D,
    ) -> Result<Workload, WorkloadError>
    where
        D: serde::Deserializer<'de>,
        D::Error: fmt::Display,
    {
        let (meta, template) = match kind {
            WorkloadKind::Pod => {
                let doc: PodDoc = decode(kind, de)?;
                let labels = doc.metadata.labels.clone();
                let template = TemplateView {
                    metadata: Some(MetaView {
                        labels,
                        ..MetaView::default()
                    }),
                    spec: doc.spec,
                };
                (doc.metadata, template)
            }
            WorkloadKind::CronJob => {
                let doc: CronDoc = decode(kind, de)?;
                let template = doc
                    .spec
                    .and_then(|s| s.job_template)
                    .and_then(|j| j.spec)
                    .and_then(|s| s.template)
                    .unwrap_or_default();
                (doc.metadata, template)
            }
            _ => {
                let doc: TemplatedDoc = decode(kind, de)?;
                let template = doc.spec.and_then(|s| s.template).unwrap_or_default();
                (doc.metadata, template)
            }
        };
        let name = meta
            .name
            .filter(|n| !n.is_empty())
            .or_else(|| {
                meta.generate_name
                    .filter(|n| !n.is_empty())
                    .map(|g| format!("{g}*"))
            })
            .ok_or(WorkloadError::MissingName { kind })?;
        let controller = meta
            .owner_references
            .unwrap_or_default()
            .into_iter()
            .find(|o| o.controller == Some(true));
        Ok(Workload {
            kind,
            namespace: meta
                .namespace
                .filter(|n| !n.is_empty())
                .unwrap_or_else(|| default_namespace.to_string()),
            name,
            labels: meta.labels.unwrap_or_default(),
            template_labels: template.metadata.and_then(|m| m.labels).unwrap_or_default(),
            pod: template.spec.unwrap_or_default(),
            controller,
        })
    }
}

fn kind_of(header: TypeHeader) -> Result<WorkloadKind, WorkloadError> {
    let (Some(api_version), Some(kind)) = (header.api_version, header.kind) else {
        return Err(WorkloadError::MissingType);
    };
    WorkloadKind::from_type(&api_version, &kind)
        .ok_or(WorkloadError::NotAWorkload { api_version, kind })
}

fn decode<'de, T: DeserializeOwned, D>(kind: WorkloadKind, de: D) -> Result<T, WorkloadError>
where
    D: serde::Deserializer<'de>,
    D::Error: fmt::Display,
{
    serde_path_to_error::deserialize(de).map_err(|e| WorkloadError::Malformed {
        kind,
        path: e.path().to_string(),
        message: e.inner().to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_kind_finds_its_pod_template() {
        let spec = json!({"nodeSelector": {"a": "b"}});
        let tpl = json!({"metadata": {"labels": {"t": "1"}}, "spec": spec});
        let cases = [
            (
                "v1",
                "Pod",
                json!({"metadata": {"name": "p", "labels": {"t": "1"}}, "spec": spec}),
            ),
            (
                "apps/v1",
                "Deployment",
                json!({"metadata": {"name": "d"}, "spec": {"template": tpl}}),
            ),
            (
                "apps/v1",
                "ReplicaSet",
                json!({"metadata": {"name": "d"}, "spec": {"template": tpl}}),
            ),
            (
                "apps/v1",
                "StatefulSet",
                json!({"metadata": {"name": "d"}, "spec": {"template": tpl}}),
            ),
            (
                "apps/v1",
                "DaemonSet",
                json!({"metadata": {"name": "d"}, "spec": {"template": tpl}}),
            ),
            (
                "batch/v1",
                "Job",
                json!({"metadata": {"name": "d"}, "spec": {"template": tpl}}),
            ),
            (
                "batch/v1",
                "CronJob",
                json!({"metadata": {"name": "d"}, "spec": {"jobTemplate": {"spec": {"template": tpl}}}}),
            ),
            (
                "v1",
                "ReplicationController",
                json!({"metadata": {"name": "d"}, "spec": {"template": tpl}}),
            ),
        ];
        for (api, kind, mut doc) in cases {
            doc["apiVersion"] = json!(api);
            doc["kind"] = json!(kind);
            let w = Workload::from_value(&doc, "default").unwrap();
            assert_eq!(w.kind.as_str(), kind);
            assert_eq!(
                w.template_labels.get("t").map(String::as_str),
                Some("1"),
                "{kind}"
            );
            assert_eq!(w.pod.node_selector.as_ref().unwrap()["a"], "b", "{kind}");
            let bytes = serde_json::to_vec(&doc).unwrap();
            assert_eq!(Workload::from_json_slice(&bytes, "default").unwrap(), w);
        }
    }

    #[test]
    fn wrong_group_or_kind_is_not_a_workload() {
        let doc = json!({"apiVersion": "v1", "kind": "Deployment", "metadata": {"name": "x"}});
        assert!(
            Workload::from_value(&doc, "d")
                .unwrap_err()
                .is_not_a_workload()
        );
        let doc = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}});
        assert!(
            Workload::from_value(&doc, "d")
                .unwrap_err()
                .is_not_a_workload()
        );
    }

    #[test]
    fn wrong_types_name_the_field() {
        let doc = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x"},
            "spec": {"template": {"spec": {"nodeSelector": "cn-north-1"}}}});
        let err = Workload::from_value(&doc, "d").unwrap_err().to_string();
        assert!(err.contains("spec.template.spec.nodeSelector"), "{err}");
    }
}
