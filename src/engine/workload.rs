//! Every pod-creating kind reduced to what placement and egress depend on:
//! its labels, its pod template's labels and the scheduling/network fields of
//! its pod spec, with the field path the pod spec lives under (for messages).
//!
//! Decoding reads only these fields; everything else (containers,
//! managedFields, annotations) is skipped by serde without being built.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use k8s_openapi::api::core::v1::NodeAffinity;
use serde::de::{
    self, DeserializeOwned, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor,
};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;

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
        WorkloadKind::named(kind).filter(|k| k.group() == group)
    }

    /// The kind of that name (`Deployment`), whatever its group.
    pub fn named(kind: &str) -> Option<WorkloadKind> {
        WorkloadKind::ALL.into_iter().find(|k| k.as_str() == kind)
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

    /// The API version served for this kind: `v1`, `apps/v1`, `batch/v1`.
    pub fn api_version(self) -> &'static str {
        match self.group() {
            "" => "v1",
            "apps" => "apps/v1",
            _ => "batch/v1",
        }
    }

    /// The version part of `api_version`.
    pub fn version(self) -> &'static str {
        "v1"
    }

    /// The resource name, as in a URL path or RBAC rule: `deployments`.
    pub fn plural(self) -> &'static str {
        match self {
            WorkloadKind::Pod => "pods",
            WorkloadKind::Deployment => "deployments",
            WorkloadKind::ReplicaSet => "replicasets",
            WorkloadKind::StatefulSet => "statefulsets",
            WorkloadKind::DaemonSet => "daemonsets",
            WorkloadKind::Job => "jobs",
            WorkloadKind::CronJob => "cronjobs",
            WorkloadKind::ReplicationController => "replicationcontrollers",
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
    /// `hostPID`: with a container that may enter namespaces (see
    /// `PrivilegedContainer`), the pod can join the node's network
    /// namespace (`nsenter -t 1 -n`).
    #[serde(default, rename = "hostPID")]
    pub host_pid: Option<bool>,
    #[serde(default)]
    pub volumes: Option<Vec<VolumeView>>,
    /// The first of `containers` that may enter the node's namespaces.
    #[serde(default)]
    pub containers: FirstPrivileged,
    /// The first of `initContainers` that may.
    #[serde(default)]
    pub init_containers: FirstPrivileged,
    /// The first of `ephemeralContainers` that may.
    #[serde(default)]
    pub ephemeral_containers: FirstPrivileged,
}

impl PodSpecView {
    /// With `hostPID: true`, the first container (of `containers`, then
    /// `initContainers`, then `ephemeralContainers`) that may enter the
    /// node's namespaces: the pod can then use the node's network as a
    /// `hostNetwork` pod does. Its list's field name comes with it.
    pub fn enters_node_network(&self) -> Option<(&'static str, &PrivilegedContainer)> {
        if self.host_pid != Some(true) {
            return None;
        }
        [
            ("containers", &self.containers),
            ("initContainers", &self.init_containers),
            ("ephemeralContainers", &self.ephemeral_containers),
        ]
        .into_iter()
        .find_map(|(list, first)| first.0.as_deref().map(|c| (list, c)))
    }
}

/// A container that may enter the node's namespaces (`setns` needs
/// `CAP_SYS_ADMIN`): `securityContext.privileged: true`, or
/// `securityContext.capabilities.add` naming `SYS_ADMIN` or `ALL` (any case,
/// with or without the `CAP_` prefix, as container runtimes accept them).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PrivilegedContainer {
    /// Its index in its list, for the field path.
    pub index: usize,
    pub name: String,
    /// The capability added, as written; `None` when it is privileged.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub capability: Option<String>,
}

/// The first container of one list that may enter the node's namespaces,
/// if any. Decoding reads only `name`, `securityContext.privileged` and
/// `securityContext.capabilities.add` of each container (the rest is
/// skipped unbuilt, as everywhere in this view) and keeps at most one, so
/// a pod's view grows by one pointer per list.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct FirstPrivileged(pub Option<Box<PrivilegedContainer>>);

/// What is read of each container.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ContainerDecode<'a> {
    #[serde(default, borrow)]
    name: Option<Str<'a>>,
    #[serde(default, borrow)]
    security_context: Option<SecurityContextDecode<'a>>,
}

#[derive(Deserialize)]
struct SecurityContextDecode<'a> {
    #[serde(default)]
    privileged: Option<bool>,
    #[serde(default, borrow)]
    capabilities: Option<CapabilitiesDecode<'a>>,
}

#[derive(Deserialize)]
struct CapabilitiesDecode<'a> {
    #[serde(default, borrow)]
    add: Option<Vec<Str<'a>>>,
}

/// A string borrowed from the input when it can be (no escapes), so the
/// containers that are read and dropped cost no allocation.
struct Str<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Str<'a> {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        struct StrVisitor;

        impl<'de> Visitor<'de> for StrVisitor {
            type Value = Cow<'de, str>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }

            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Cow::Borrowed(v))
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Cow::Owned(v.to_string()))
            }

            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(Cow::Owned(v))
            }
        }

        de.deserialize_str(StrVisitor).map(Str)
    }
}

/// Does adding `capability` let a container enter namespaces?
fn enters_namespaces(capability: &str) -> bool {
    let c = capability.trim();
    let c = match c.get(..4) {
        Some(prefix) if prefix.eq_ignore_ascii_case("CAP_") => c.get(4..).unwrap_or_default(),
        _ => c,
    };
    c.eq_ignore_ascii_case("SYS_ADMIN") || c.eq_ignore_ascii_case("ALL")
}

impl ContainerDecode<'_> {
    fn privileged(self, index: usize) -> Option<PrivilegedContainer> {
        let sc = self.security_context?;
        let capability = if sc.privileged == Some(true) {
            None
        } else {
            Some(
                sc.capabilities?
                    .add?
                    .into_iter()
                    .find(|c| enters_namespaces(&c.0))?
                    .0
                    .into_owned(),
            )
        };
        Some(PrivilegedContainer {
            index,
            name: self.name.map(|n| n.0.into_owned()).unwrap_or_default(),
            capability,
        })
    }
}

impl<'de> Deserialize<'de> for FirstPrivileged {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        struct ListVisitor;

        impl<'de> Visitor<'de> for ListVisitor {
            type Value = FirstPrivileged;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a list of containers")
            }

            fn visit_none<E: de::Error>(self) -> Result<FirstPrivileged, E> {
                Ok(FirstPrivileged::default())
            }

            fn visit_unit<E: de::Error>(self) -> Result<FirstPrivileged, E> {
                Ok(FirstPrivileged::default())
            }

            fn visit_some<D: Deserializer<'de>>(self, de: D) -> Result<FirstPrivileged, D::Error> {
                de.deserialize_seq(self)
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<FirstPrivileged, A::Error> {
                let mut first = None;
                let mut index = 0;
                // Every element is read (a malformed one is an error, in
                // whichever decoder), the first that may enter kept.
                while let Some(c) = seq.next_element::<ContainerDecode<'de>>()? {
                    if first.is_none() {
                        first = c.privileged(index).map(Box::new);
                    }
                    index += 1;
                }
                Ok(FirstPrivileged(first))
            }
        }

        de.deserialize_option(ListVisitor)
    }
}

/// The parts of a pod volume that say where its data is stored.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VolumeView {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub persistent_volume_claim: Option<ClaimSourceView>,
    #[serde(default)]
    pub ephemeral: Option<EphemeralView>,
    #[serde(default)]
    pub nfs: Option<NfsView>,
    #[serde(default)]
    pub iscsi: Option<IscsiView>,
    #[serde(default)]
    pub cephfs: Option<MonitorsView>,
    #[serde(default)]
    pub rbd: Option<MonitorsView>,
    /// An inline CSI volume: its driver and attributes. Boxed, as the
    /// next: rare, and every pod's volumes are kept by the operator.
    #[serde(default)]
    pub csi: Option<Box<CsiView>>,
    /// An Azure Files share (named by storage account, not by place).
    #[serde(default)]
    pub azure_file: Option<Box<AzureFileView>>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CsiView {
    #[serde(default)]
    pub driver: String,
    #[serde(default)]
    pub volume_attributes: Option<BTreeMap<String, String>>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AzureFileView {
    #[serde(default)]
    pub share_name: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClaimSourceView {
    #[serde(default)]
    pub claim_name: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EphemeralView {
    #[serde(default)]
    pub volume_claim_template: Option<ClaimTemplateView>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NfsView {
    #[serde(default)]
    pub server: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IscsiView {
    #[serde(default)]
    pub target_portal: String,
    #[serde(default)]
    pub portals: Option<Vec<String>>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MonitorsView {
    #[serde(default)]
    pub monitors: Vec<String>,
}

/// A claim template (a StatefulSet's `volumeClaimTemplates[]`, an
/// ephemeral volume's `volumeClaimTemplate`): its name and the fields
/// that decide where its volume is provisioned.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClaimTemplateView {
    #[serde(default)]
    pub metadata: Option<ClaimTemplateMeta>,
    #[serde(default)]
    pub spec: Option<ClaimSpecView>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ClaimTemplateMeta {
    #[serde(default)]
    pub name: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClaimSpecView {
    #[serde(default)]
    pub storage_class_name: Option<String>,
    #[serde(default)]
    pub volume_name: Option<String>,
}

impl ClaimTemplateView {
    pub fn name(&self) -> &str {
        self.metadata
            .as_ref()
            .and_then(|m| m.name.as_deref())
            .unwrap_or_default()
    }

    pub fn storage_class(&self) -> Option<&str> {
        self.spec.as_ref()?.storage_class_name.as_deref()
    }

    pub fn volume_name(&self) -> Option<&str> {
        self.spec
            .as_ref()?
            .volume_name
            .as_deref()
            .filter(|v| !v.is_empty())
    }
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
    /// Tells a built-in kind (`apps/v1` ReplicaSet) from a custom resource
    /// of the same kind name in another group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    pub kind: String,
    pub name: String,
    /// The owner's `metadata.uid`: an owner of the same name created anew
    /// is another object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    #[serde(default)]
    pub controller: Option<bool>,
}

/// A data class an object inherits from its controller owner chain (its
/// ReplicaSet's Deployment, its Job's CronJob): set by whoever holds the
/// other objects of the namespace (`state::graph`), never decoded.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InheritedClass {
    /// The owner the label is on: `Deployment payments/api`.
    pub owner: String,
    /// Where on the owner: `metadata.labels` or its pod template's labels.
    pub location: String,
    /// The label's value, as written (parsed by `evaluate`, like the
    /// object's own labels).
    pub value: String,
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
    uid: Option<String>,
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
    /// A StatefulSet's `spec.volumeClaimTemplates` (beside the template,
    /// not in it).
    #[serde(skip)]
    claim_templates: Vec<ClaimTemplateView>,
    /// `spec.replicas` (`spec.parallelism` for a Job), beside the template.
    #[serde(skip)]
    replicas: Option<i32>,
}

#[derive(Deserialize)]
struct PodDoc {
    #[serde(default)]
    metadata: MetaView,
    #[serde(default)]
    spec: Option<PodSpecView>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TemplatedSpec {
    #[serde(default)]
    template: Option<TemplateView>,
    #[serde(default)]
    volume_claim_templates: Option<Vec<ClaimTemplateView>>,
    #[serde(default)]
    replicas: Option<i32>,
    /// A Job's: how many of its pods run at once.
    #[serde(default)]
    parallelism: Option<i32>,
}

impl TemplatedSpec {
    /// The pod template, with the claim templates beside it.
    fn into_template(self) -> Option<TemplateView> {
        let mut template = self.template.unwrap_or_default();
        template.claim_templates = self.volume_claim_templates.unwrap_or_default();
        template.replicas = self.replicas.or(self.parallelism);
        Some(template)
    }
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

/// A label map, shared: a Pod's labels are its template's, and the
/// operator's state interns the maps that repeat across the replicas of a
/// workload (150,000 pods carry a few thousand distinct label sets).
pub type Labels = Arc<BTreeMap<String, String>>;

/// A workload as the engine sees it.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Workload {
    pub kind: WorkloadKind,
    pub namespace: String,
    pub name: String,
    /// `metadata.uid`, when the object has been created (not in manifests):
    /// Events and reports name it so `kubectl describe` finds them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    pub labels: Labels,
    pub template_labels: Labels,
    pub pod: PodSpecView,
    /// A StatefulSet's `spec.volumeClaimTemplates`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub claim_templates: Vec<ClaimTemplateView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub controller: Option<OwnerRef>,
    /// `spec.replicas` (a Job's `spec.parallelism`) when set: how many pods
    /// the object asks for. A write that only lowers it removes pods.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
    /// Classes of the controller owner chain in the namespace, unioned into
    /// the object's own by `evaluate`. Empty as decoded: an object alone
    /// does not know its owners.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub inherited_classes: Vec<InheritedClass>,
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
        // One pass when the input is well formed; anything it refuses goes
        // through the two-pass decoder below, whose errors name the field.
        if let Ok(object) = serde_json::from_slice::<WorkloadObject>(bytes) {
            return object.into_workload(default_namespace);
        }
        Self::from_json_slice_in_two_passes(bytes, default_namespace)
    }

    /// The type first, then the object as that kind, with the field path of
    /// any error.
    fn from_json_slice_in_two_passes(
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
                let template = TemplateView {
                    metadata: None,
                    spec: doc.spec,
                    claim_templates: Vec::new(),
                    replicas: None,
                };
                (doc.metadata, template)
            }
            WorkloadKind::CronJob => {
                let doc: CronDoc = decode(kind, de)?;
                let template = doc
                    .spec
                    .and_then(|s| s.job_template)
                    .and_then(|j| j.spec)
                    .and_then(TemplatedSpec::into_template)
                    .unwrap_or_default();
                (doc.metadata, template)
            }
            _ => {
                let doc: TemplatedDoc = decode(kind, de)?;
                let template = doc
                    .spec
                    .and_then(TemplatedSpec::into_template)
                    .unwrap_or_default();
                (doc.metadata, template)
            }
        };
        assemble(kind, meta, template, default_namespace)
    }
}

/// The parts of a decoded workload object → the Workload (shared by every
/// decoder so they agree on names, namespaces and template labels).
fn assemble(
    kind: WorkloadKind,
    meta: MetaView,
    mut template: TemplateView,
    default_namespace: &str,
) -> Result<Workload, WorkloadError> {
    let labels: Labels = Arc::new(meta.labels.unwrap_or_default());
    // A Pod is its own template: one shared map.
    let template_labels = if kind == WorkloadKind::Pod {
        Arc::clone(&labels)
    } else {
        Arc::new(
            template
                .metadata
                .take()
                .and_then(|m| m.labels)
                .unwrap_or_default(),
        )
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
        uid: meta.uid.filter(|u| !u.is_empty()),
        labels,
        template_labels,
        pod: template.spec.unwrap_or_default(),
        // Only a StatefulSet's claim templates make claims.
        claim_templates: if kind == WorkloadKind::StatefulSet {
            template.claim_templates
        } else {
            Vec::new()
        },
        controller,
        // A CronJob's parallelism is its Jobs', not a replica count.
        replicas: if kind == WorkloadKind::CronJob {
            None
        } else {
            template.replicas
        },
        inherited_classes: Vec::new(),
    })
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

/// A workload object decoded in one pass over borrowed JSON (for example
/// inside an AdmissionReview), finished into a [`Workload`] once the
/// default namespace is known.
///
/// The API server writes `apiVersion` and `kind` first, so the spec can be
/// decoded straight into the right shape; in any other order it is held as
/// raw JSON until the type is known. Only the fields the engine reads are
/// built; `managedFields`, annotations, containers and status are skipped
/// without allocating.
///
/// It is strict: any input it does not read exactly as the two-pass decoder
/// of [`Workload::from_json_slice`] does (wrong types, duplicate keys, a
/// non-object) is a deserialization error, and callers fall back to that
/// decoder for its precise, field-naming error.
#[derive(Debug)]
pub struct WorkloadObject {
    decoded: Result<(WorkloadKind, MetaView, TemplateView), WorkloadError>,
}

impl WorkloadObject {
    /// The workload, or why this object is not one (a kind that creates no
    /// pods, no apiVersion/kind, no name).
    pub fn into_workload(self, default_namespace: &str) -> Result<Workload, WorkloadError> {
        let (kind, meta, template) = self.decoded?;
        assemble(kind, meta, template, default_namespace)
    }
}

/// The object keys the one-pass decoder reads.
#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "camelCase")]
enum ObjectKey {
    ApiVersion,
    Kind,
    Metadata,
    Spec,
    #[serde(other)]
    Other,
}

/// Decodes `spec` as the pod template of `kind`.
struct SpecSeed(WorkloadKind);

impl<'de> DeserializeSeed<'de> for SpecSeed {
    type Value = TemplateView;

    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<TemplateView, D::Error> {
        Ok(match self.0 {
            // The Pod's own labels are added by `assemble`.
            WorkloadKind::Pod => TemplateView {
                metadata: None,
                spec: Option::<PodSpecView>::deserialize(de)?,
                claim_templates: Vec::new(),
                replicas: None,
            },
            WorkloadKind::CronJob => Option::<CronSpec>::deserialize(de)?
                .and_then(|s| s.job_template)
                .and_then(|j| j.spec)
                .and_then(TemplatedSpec::into_template)
                .unwrap_or_default(),
            _ => Option::<TemplatedSpec>::deserialize(de)?
                .and_then(TemplatedSpec::into_template)
                .unwrap_or_default(),
        })
    }
}

impl<'de> Deserialize<'de> for WorkloadObject {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        de.deserialize_map(ObjectVisitor)
    }
}

struct ObjectVisitor;

impl<'de> Visitor<'de> for ObjectVisitor {
    type Value = WorkloadObject;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a Kubernetes object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<WorkloadObject, A::Error> {
        // `None` = not seen; `Some(None)` = null, as the two-pass decoder reads it.
        let mut api_version: Option<Option<String>> = None;
        let mut kind: Option<Option<String>> = None;
        let mut metadata: Option<MetaView> = None;
        let mut spec: Option<TemplateView> = None;
        let mut raw_spec: Option<&'de RawValue> = None;
        while let Some(key) = map.next_key::<ObjectKey>()? {
            match key {
                ObjectKey::ApiVersion if api_version.is_none() => {
                    api_version = Some(map.next_value()?);
                }
                ObjectKey::Kind if kind.is_none() => kind = Some(map.next_value()?),
                ObjectKey::Metadata if metadata.is_none() => metadata = Some(map.next_value()?),
                ObjectKey::Spec if spec.is_none() && raw_spec.is_none() => {
                    match (&api_version, &kind) {
                        (Some(api_version), Some(kind)) => match kind_of(TypeHeader {
                            api_version: api_version.clone(),
                            kind: kind.clone(),
                        }) {
                            Ok(k) => spec = Some(map.next_value_seed(SpecSeed(k))?),
                            // Not judged: its spec is never read.
                            Err(_) => {
                                map.next_value::<IgnoredAny>()?;
                            }
                        },
                        // The type comes later: keep the spec as raw JSON.
                        _ => raw_spec = Some(map.next_value()?),
                    }
                }
                ObjectKey::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
                ObjectKey::ApiVersion | ObjectKey::Kind | ObjectKey::Metadata | ObjectKey::Spec => {
                    return Err(de::Error::custom("duplicate key"));
                }
            }
        }
        let header = TypeHeader {
            api_version: api_version.flatten(),
            kind: kind.flatten(),
        };
        let kind = match kind_of(header) {
            Ok(k) => k,
            Err(e) => return Ok(WorkloadObject { decoded: Err(e) }),
        };
        let template = match (spec, raw_spec) {
            (Some(t), _) => t,
            (None, Some(raw)) => SpecSeed(kind)
                .deserialize(&mut serde_json::Deserializer::from_str(raw.get()))
                .map_err(de::Error::custom)?,
            (None, None) => TemplateView::default(),
        };
        Ok(WorkloadObject {
            decoded: Ok((kind, metadata.unwrap_or_default(), template)),
        })
    }
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
    fn replicas_are_read_where_a_kind_has_them() {
        let tpl = json!({"metadata": {"labels": {"t": "1"}}});
        let cases = [
            (
                "apps/v1",
                "Deployment",
                json!({"replicas": 3, "template": tpl}),
                Some(3),
            ),
            (
                "apps/v1",
                "ReplicaSet",
                json!({"replicas": 0, "template": tpl}),
                Some(0),
            ),
            (
                "apps/v1",
                "StatefulSet",
                json!({"replicas": 2, "template": tpl}),
                Some(2),
            ),
            (
                "batch/v1",
                "Job",
                json!({"parallelism": 4, "template": tpl}),
                Some(4),
            ),
            ("apps/v1", "DaemonSet", json!({"template": tpl}), None),
            (
                "batch/v1",
                "CronJob",
                json!({"jobTemplate": {"spec": {"parallelism": 2, "template": tpl}}}),
                None,
            ),
        ];
        for (api, kind, spec, replicas) in cases {
            let doc =
                json!({"apiVersion": api, "kind": kind, "metadata": {"name": "x"}, "spec": spec});
            let w = Workload::from_value(&doc, "d").unwrap();
            assert_eq!(w.replicas, replicas, "{kind}");
            let bytes = serde_json::to_vec(&doc).unwrap();
            assert_eq!(Workload::from_json_slice(&bytes, "d").unwrap(), w, "{kind}");
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

    /// The API server's key order, written by hand: `json!` sorts keys.
    fn in_order(parts: &[(&str, serde_json::Value)]) -> Vec<u8> {
        let body = parts
            .iter()
            .map(|(k, v)| format!("{}:{v}", serde_json::Value::from(*k)))
            .collect::<Vec<_>>()
            .join(",");
        format!("{{{body}}}").into_bytes()
    }

    /// Whatever the one-pass decoder accepts, it reads as the two-pass one
    /// does; whatever it refuses, `from_json_slice` reports as that one does.
    #[test]
    fn one_pass_agrees_with_two_passes() {
        let tpl = json!({"metadata": {"labels": {"t": "1"}, "annotations": {"a": "b"}},
            "spec": {"nodeSelector": {"a": "b"}, "nodeName": "n", "hostPID": true,
                "containers": [{"name": "c", "image": "i", "env": [{"name": "x", "value": "y"}]},
                    {"name": "de\"bug", "securityContext": {"privileged": true, "runAsUser": 0}}],
                "initContainers": [{"name": "i", "securityContext": {"capabilities": {"add": ["NET_ADMIN", "SYS_ADMIN"], "drop": ["ALL"]}}}],
                "ephemeralContainers": null,
                "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution":
                    {"nodeSelectorTerms": [{"matchExpressions": [{"key": "k", "operator": "Exists"}]}]}}}}});
        let meta = json!({"name": "d", "labels": {"l": "1"}, "managedFields": [{"f:x": {}}],
            "ownerReferences": [{"kind": "X", "name": "x"}, {"kind": "Y", "name": "y", "controller": true}]});
        let pod_spec = json!({"nodeSelector": {"a": "b"}, "hostNetwork": true,
            "containers": [{"name": "c", "securityContext": {"privileged": false, "capabilities": {"add": ["all"]}}}],
            "ephemeralContainers": [{"name": "e", "securityContext": {"privileged": true}}]});
        let cron = json!({"jobTemplate": {"spec": {"template": tpl}}});
        const ACCEPTED: usize = 11;
        let cases: Vec<Vec<u8>> = vec![
            in_order(&[
                ("apiVersion", json!("apps/v1")),
                ("kind", json!("Deployment")),
                ("metadata", meta.clone()),
                ("spec", json!({"template": tpl})),
                ("status", json!({})),
            ]),
            in_order(&[
                ("spec", json!({"template": tpl})),
                ("metadata", meta.clone()),
                ("kind", json!("StatefulSet")),
                ("apiVersion", json!("apps/v1")),
            ]),
            in_order(&[
                ("kind", json!("Pod")),
                ("spec", pod_spec.clone()),
                ("apiVersion", json!("v1")),
                ("metadata", meta.clone()),
            ]),
            in_order(&[
                ("apiVersion", json!("v1")),
                ("kind", json!("Pod")),
                ("spec", pod_spec.clone()),
                ("metadata", json!({"generateName": "p-", "namespace": "ns"})),
            ]),
            in_order(&[
                ("apiVersion", json!("batch/v1")),
                ("kind", json!("CronJob")),
                ("metadata", meta.clone()),
                ("spec", cron.clone()),
            ]),
            in_order(&[
                ("spec", cron),
                ("apiVersion", json!("batch/v1")),
                ("kind", json!("CronJob")),
                ("metadata", meta.clone()),
            ]),
            in_order(&[
                ("apiVersion", json!("apps/v1")),
                ("kind", json!("Deployment")),
                ("spec", json!(null)),
                ("metadata", json!({"name": ""})),
            ]),
            in_order(&[
                ("apiVersion", json!("v1")),
                ("kind", json!("ConfigMap")),
                ("spec", json!(1)),
            ]),
            in_order(&[
                ("spec", json!(1)),
                ("apiVersion", json!("v1")),
                ("kind", json!("ConfigMap")),
            ]),
            in_order(&[("kind", json!("Deployment")), ("spec", json!({}))]),
            in_order(&[
                ("apiVersion", json!(null)),
                ("kind", json!("Deployment")),
                ("spec", json!({})),
            ]),
            // Refused by the single pass (all after the first ACCEPTED).
            in_order(&[
                ("apiVersion", json!("apps/v1")),
                ("kind", json!("Deployment")),
                ("metadata", meta.clone()),
                ("spec", json!({"template": {"spec": {"nodeName": 3}}})),
            ]),
            in_order(&[
                ("spec", json!({"template": {"spec": {"nodeName": 3}}})),
                ("apiVersion", json!("apps/v1")),
                ("kind", json!("Deployment")),
                ("metadata", meta.clone()),
            ]),
            in_order(&[
                ("apiVersion", json!("apps/v1")),
                ("kind", json!("Deployment")),
                ("metadata", json!({"labels": []})),
            ]),
            in_order(&[
                ("apiVersion", json!("apps/v1")),
                ("kind", json!("Deployment")),
                ("kind", json!("Deployment")),
                ("metadata", meta),
            ]),
            in_order(&[("apiVersion", json!(7)), ("kind", json!("Deployment"))]),
            // The container fields read are typed too.
            in_order(&[
                ("apiVersion", json!("v1")),
                ("kind", json!("Pod")),
                ("metadata", json!({"name": "p"})),
                (
                    "spec",
                    json!({"containers": [{"name": "c", "securityContext": {"privileged": "yes"}}]}),
                ),
            ]),
            in_order(&[
                ("apiVersion", json!("v1")),
                ("kind", json!("Pod")),
                ("metadata", json!({"name": "p"})),
                ("spec", json!({"containers": {"name": "c"}})),
            ]),
            in_order(&[
                ("apiVersion", json!("v1")),
                ("kind", json!("Pod")),
                ("metadata", json!({"name": "p"})),
                (
                    "spec",
                    json!({"initContainers": [{"name": "c", "securityContext": {"capabilities": {"add": [1]}}}]}),
                ),
            ]),
            b"[\"apps/v1\", \"Deployment\"]".to_vec(),
            b"{\"apiVersion\": \"v1\"".to_vec(),
            b"null".to_vec(),
        ];
        for (i, bytes) in cases.iter().enumerate() {
            let text = String::from_utf8_lossy(bytes);
            let two = Workload::from_json_slice_in_two_passes(bytes, "default");
            assert_eq!(Workload::from_json_slice(bytes, "default"), two, "{text}");
            match serde_json::from_slice::<WorkloadObject>(bytes) {
                Ok(one) => assert_eq!(one.into_workload("default"), two, "{text}"),
                Err(e) => assert!(i >= ACCEPTED, "refused {text}: {e}"),
            }
        }
        // The container fields are read, not skipped, by both.
        let w = serde_json::from_slice::<WorkloadObject>(&cases[0])
            .unwrap()
            .into_workload("default")
            .unwrap();
        let (list, c) = w.pod.enters_node_network().unwrap();
        assert_eq!(
            (list, c.index, c.name.as_str()),
            ("containers", 1, "de\"bug")
        );
        let init = w.pod.init_containers.0.as_deref().unwrap();
        assert_eq!(init.capability.as_deref(), Some("SYS_ADMIN"));
    }

    /// hostPID and the first container of each list that may enter the
    /// node's namespaces are read; every other container field is skipped.
    #[test]
    fn host_pid_and_privileged_containers_are_read() {
        let doc = json!({"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "x"},
            "spec": {"template": {"spec": {"hostPID": true,
                "containers": [
                    {"name": "app", "image": "i", "securityContext": {"privileged": false, "capabilities": {"add": ["SYS_PTRACE"]}}},
                    {"name": "sidecar", "securityContext": {"capabilities": {"add": ["NET_RAW", "cap_sys_admin"]}}},
                    {"name": "debug", "securityContext": {"privileged": true}}
                ],
                "initContainers": [{"name": "setup"}],
                "ephemeralContainers": [{"name": "e", "securityContext": {"capabilities": {"add": ["ALL"]}}}]}}}});
        let w = Workload::from_value(&doc, "d").unwrap();
        assert_eq!(w.pod.host_pid, Some(true));
        let first = |f: &FirstPrivileged| f.0.as_deref().cloned();
        assert_eq!(
            first(&w.pod.containers),
            Some(PrivilegedContainer {
                index: 1,
                name: "sidecar".into(),
                capability: Some("cap_sys_admin".into())
            })
        );
        assert_eq!(first(&w.pod.init_containers), None);
        assert_eq!(
            first(&w.pod.ephemeral_containers).map(|c| (c.index, c.capability)),
            Some((0, Some("ALL".to_string())))
        );
        let (list, c) = w.pod.enters_node_network().unwrap();
        assert_eq!((list, c.name.as_str()), ("containers", "sidecar"));
        // Without hostPID the containers do not reach the node's network.
        let mut no_pid = w.pod.clone();
        no_pid.host_pid = Some(false);
        assert!(no_pid.enters_node_network().is_none());
        // Neither privileged nor SYS_ADMIN / ALL: nothing kept.
        for add in [
            json!(["SYS_PTRACE", "NET_ADMIN"]),
            json!(["SYS_ADMINX"]),
            json!([]),
        ] {
            let doc = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
                "spec": {"hostPID": true, "containers": [{"name": "c", "securityContext": {"capabilities": {"add": add}}}]}});
            let w = Workload::from_value(&doc, "d").unwrap();
            assert_eq!(w.pod.containers, FirstPrivileged::default(), "{add}");
            assert!(w.pod.enters_node_network().is_none());
        }
    }

    #[test]
    fn wrong_types_name_the_field() {
        let doc = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x"},
            "spec": {"template": {"spec": {"nodeSelector": "cn-north-1"}}}});
        let err = Workload::from_value(&doc, "d").unwrap_err().to_string();
        assert!(err.contains("spec.template.spec.nodeSelector"), "{err}");
    }
}
