//! The report's inputs from a live cluster: one LIST (paged, so each is a
//! consistent view at its resourceVersion) of every kind the snapshot
//! needs, plus what the audit wrote (its Events, its reports in either
//! report API, and the policies' status) for when each violation was first
//! reported.
//! Read-only: only `list` is used.

use std::collections::BTreeMap;
use std::path::Path;

use futures::future::join_all;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::{
    Namespace, Node, PersistentVolume, PersistentVolumeClaim, Service,
};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ListMeta;
use kube::api::{ApiResource, DynamicObject, ListParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use serde_json::Value;
use serde_json::value::RawValue;

use super::model::{
    AuditEvidence, AuditSources, Availability, ClusterIdentity, Inputs, ListEntry, PolicyMeta,
    PolicyStatusEntry, Source,
};
use crate::api::ResidencyPolicy;
use crate::audit::plan::{MANAGED_BY, MANAGED_BY_LABEL, ReportFormat};
use crate::engine::{
    CiliumEnforcement, ClaimRecord, ClassRecord, Cni, EgressSemantics, NodeInfo, Snapshot,
    SnapshotBuilder, VolumeRecord, Workload, WorkloadKind,
};
use crate::state::{LayerResource, workload_api_resource};

/// Objects per page.
const PAGE: u32 = 500;

/// Why the cluster could not be read.
#[derive(Debug, thiserror::Error)]
pub enum LiveError {
    #[error("cannot load the kubeconfig: {0}")]
    Config(String),
    #[error("cannot tell which egress policy layers to read: {0}")]
    Egress(String),
    #[error("cannot list {resource}: {source}")]
    List {
        resource: String,
        source: kube::Error,
    },
}

/// A connected client and the identity the report gives the cluster.
pub async fn connect(
    kubeconfig: Option<&Path>,
    context: Option<&str>,
) -> Result<(Client, String), LiveError> {
    let options = KubeConfigOptions {
        context: context.map(str::to_string),
        ..KubeConfigOptions::default()
    };
    let config = match (kubeconfig, context) {
        (Some(path), _) => {
            let file = Kubeconfig::read_from(path)
                .map_err(|e| LiveError::Config(format!("{}: {e}", path.display())))?;
            Config::from_custom_kubeconfig(file, &options)
                .await
                .map_err(|e| LiveError::Config(e.to_string()))?
        }
        (None, Some(_)) => Config::from_kubeconfig(&options)
            .await
            .map_err(|e| LiveError::Config(e.to_string()))?,
        (None, None) => Config::infer()
            .await
            .map_err(|e| LiveError::Config(e.to_string()))?,
    };
    let server = config.cluster_url.to_string();
    let client = Client::try_from(config).map_err(|e| LiveError::Config(e.to_string()))?;
    Ok((client, server))
}

/// One kind's objects, as the API server sent them (list items carry no
/// apiVersion or kind), and the list's resourceVersion.
struct Listed {
    resource: String,
    resource_version: Option<String>,
    api_version: String,
    kind: String,
    items: Vec<Box<RawValue>>,
}

/// A LIST response, its items left undecoded: each is decoded once, by
/// what reads it (a workload reads a handful of fields).
#[derive(serde::Deserialize)]
struct RawList {
    #[serde(default)]
    metadata: ListMeta,
    #[serde(default)]
    items: Vec<Box<RawValue>>,
}

impl Listed {
    /// An item as JSON, with its apiVersion and kind.
    /// What the report's provenance records of this list.
    fn entry(&self) -> ListEntry {
        ListEntry {
            resource: self.resource.clone(),
            resource_version: self.resource_version.clone(),
            items: self.items.len(),
        }
    }

    fn value(&self, raw: &RawValue) -> Result<Value, String> {
        let mut v: Value = serde_json::from_str(raw.get()).map_err(|e| e.to_string())?;
        if let Some(map) = v.as_object_mut() {
            map.entry("apiVersion")
                .or_insert_with(|| self.api_version.clone().into());
            map.entry("kind")
                .or_insert_with(|| self.kind.clone().into());
        }
        Ok(v)
    }

    /// A workload item, decoded straight from its bytes (only the fields
    /// the engine reads); through a JSON value when that fails, so errors
    /// name the field.
    fn workload(&self, raw: &RawValue) -> Result<Workload, String> {
        let text = raw.get().trim_start();
        if let Some(rest) = text.strip_prefix('{') {
            let sep = if rest.trim_start().starts_with('}') {
                ""
            } else {
                ","
            };
            let bytes = format!(
                "{{\"apiVersion\":{},\"kind\":{}{sep}{rest}",
                Value::from(self.api_version.as_str()),
                Value::from(self.kind.as_str())
            );
            if let Ok(w) = Workload::from_json_slice(bytes.as_bytes(), "default") {
                return Ok(w);
            }
        }
        Workload::from_value(&self.value(raw)?, "default").map_err(|e| e.to_string())
    }
}

async fn list_all(
    client: &Client,
    resource: &ApiResource,
    name: &str,
    params: ListParams,
) -> Result<Listed, kube::Error> {
    let path = <DynamicObject as kube::Resource>::url_path(resource, None);
    let mut items = Vec::new();
    let mut resource_version = None;
    let mut token: Option<String> = None;
    loop {
        let mut p = params.clone().limit(PAGE);
        if let Some(t) = &token {
            p = p.continue_token(t);
        }
        let request = kube::core::Request::new(path.clone())
            .list(&p)
            .map_err(kube::Error::BuildRequest)?;
        let page: RawList = client.request(request).await?;
        if resource_version.is_none() {
            resource_version = page.metadata.resource_version.clone();
        }
        items.extend(page.items);
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(next) => token = Some(next),
            None => break,
        }
    }
    Ok(Listed {
        resource: name.to_string(),
        resource_version,
        api_version: resource.api_version.clone(),
        kind: resource.kind.clone(),
        items,
    })
}

fn workload_resource(kind: WorkloadKind) -> (ApiResource, &'static str) {
    (workload_api_resource(kind), kind.plural())
}

fn is_status(e: &kube::Error, codes: &[u16]) -> bool {
    matches!(e, kube::Error::Api(s) if codes.contains(&s.code))
}

fn decode<T: serde::de::DeserializeOwned>(v: &Value) -> Result<T, String> {
    serde_path_to_error::deserialize(v).map_err(|e| format!("{}: {}", e.path(), e.inner()))
}

fn object_name(v: &Value) -> String {
    let meta = v.get("metadata");
    let get = |k: &str| {
        meta.and_then(|m| m.get(k))
            .and_then(Value::as_str)
            .unwrap_or_default()
    };
    match get("namespace") {
        "" => get("name").to_string(),
        ns => format!("{ns}/{}", get("name")),
    }
}

/// `namespace/name` of an item that could not be decoded, as far as it
/// can be read.
fn raw_name(raw: &RawValue) -> String {
    serde_json::from_str::<Value>(raw.get())
        .map_or_else(|_| "(unreadable)".into(), |v| object_name(&v))
}

fn time_of(v: Option<&Value>) -> Option<Timestamp> {
    v.and_then(Value::as_str).and_then(|s| s.parse().ok())
}

/// What the report judges egress under: `--egress-cni` (None: auto) and
/// `--cilium-enforcement`, decided against what the cluster serves as the
/// operator decides at start (`state::discover_egress`).
#[derive(Clone, Copy, Debug, Default)]
pub struct EgressChoice {
    pub requested: Option<Cni>,
    pub cilium_enforcement: CiliumEnforcement,
}

/// Everything read from the cluster, before any of it is judged.
struct Read {
    /// The semantics the served layer kinds and `EgressChoice` give.
    semantics: EgressSemantics,
    /// The kinds the snapshot needs, by name.
    lists: Vec<(&'static str, Result<Listed, kube::Error>)>,
    /// The egress layer kinds served and enforced under `semantics`.
    layers: Vec<(LayerResource, Result<Listed, kube::Error>)>,
    events: Result<Listed, kube::Error>,
    reports: Vec<(ReportFormat, Result<Listed, kube::Error>)>,
    kube_system_uid: Option<String>,
}

/// The kinds every snapshot needs, besides the egress layers.
fn required_resources() -> Vec<(ApiResource, &'static str)> {
    let mut required: Vec<(ApiResource, &'static str)> = vec![
        (
            ApiResource::erase::<ResidencyPolicy>(&()),
            "residencypolicies",
        ),
        (ApiResource::erase::<Node>(&()), "nodes"),
        (ApiResource::erase::<Namespace>(&()), "namespaces"),
        (ApiResource::erase::<NetworkPolicy>(&()), "networkpolicies"),
        (ApiResource::erase::<Service>(&()), "services"),
        // Storage residency: where governed workloads' volumes are.
        (
            ApiResource::erase::<PersistentVolume>(&()),
            "persistentvolumes",
        ),
        (
            ApiResource::erase::<PersistentVolumeClaim>(&()),
            "persistentvolumeclaims",
        ),
        (ApiResource::erase::<StorageClass>(&()), "storageclasses"),
    ];
    required.extend(WorkloadKind::ALL.into_iter().map(workload_resource));
    required
}

/// Read the cluster. Kinds the snapshot needs must list; the audit's
/// outputs are read where they exist and the caller may read them. The
/// egress layer kinds (Cilium, Calico, AdminNetworkPolicy) are found and
/// chosen as the operator finds and chooses them, so the report judges
/// egress as its webhook and audit do.
pub async fn gather(
    client: &Client,
    server: String,
    context: Option<String>,
    base: Snapshot,
    egress: EgressChoice,
    now: Timestamp,
) -> Result<Inputs, LiveError> {
    let read = read(client, egress).await?;
    assemble(read, base, server, context, now)
}

async fn read(client: &Client, egress: EgressChoice) -> Result<Read, LiveError> {
    let watch = crate::state::discover_egress(client, egress.requested, egress.cilium_enforcement)
        .await
        .map_err(|e| LiveError::Egress(e.to_string()))?;
    let required = required_resources();
    let lists = join_all(
        required
            .iter()
            .map(|(r, name)| list_all(client, r, name, ListParams::default())),
    );
    let layers = join_all(watch.resources.iter().map(|r| {
        let resource = r.api_resource();
        async move { list_all(client, &resource, r.name, ListParams::default()).await }
    }));
    let events_resource = ApiResource::erase::<k8s_openapi::api::events::v1::Event>(&());
    let by_us = ListParams::default().labels(&format!("{MANAGED_BY_LABEL}={MANAGED_BY}"));
    let list_reports = |format: ReportFormat| {
        let resource = crate::audit::writer::report_resource(format);
        let by_us = by_us.clone();
        async move {
            let listed = list_all(client, &resource, &format.resource(), by_us).await;
            (format, listed)
        }
    };
    let (lists, layers, events, reports) = futures::join!(
        lists,
        layers,
        list_all(
            client,
            &events_resource,
            "events.events.k8s.io",
            by_us.clone()
        ),
        join_all(ReportFormat::ALL.map(list_reports)),
    );
    let kube_system_uid = list_all(
        client,
        &ApiResource::erase::<Namespace>(&()),
        "namespaces",
        ListParams::default().fields("metadata.name=kube-system"),
    )
    .await
    .ok()
    .and_then(|l| l.items.first().and_then(|raw| l.value(raw).ok()))
    .and_then(|ns| {
        ns.get("metadata")
            .and_then(|m| m.get("uid"))
            .and_then(Value::as_str)
            .map(str::to_string)
    });

    let layers = watch.resources.iter().copied().zip(layers).collect();
    Ok(Read {
        semantics: watch.semantics,
        lists: required.iter().map(|(_, name)| *name).zip(lists).collect(),
        layers,
        events,
        reports,
        kube_system_uid,
    })
}

/// The report's inputs from what was read: no I/O, so a test can give it
/// what an API server would have answered.
fn assemble(
    read: Read,
    mut base: Snapshot,
    server: String,
    context: Option<String>,
    now: Timestamp,
) -> Result<Inputs, LiveError> {
    let Read {
        semantics,
        lists,
        layers,
        events,
        reports,
        kube_system_uid,
    } = read;
    base.network.set_semantics(semantics);
    let mut builder = SnapshotBuilder::new(base, now);
    let mut warnings = Vec::new();
    let mut entries = Vec::new();
    let mut workloads = Vec::new();
    let mut policy_meta = BTreeMap::new();
    let mut offenders = BTreeMap::new();
    let mut policy_status_objects = 0usize;
    for (name, listed) in lists {
        let listed = match listed {
            Ok(l) => l,
            // No ResidencyPolicy CRD: nothing is governed, and the report
            // says so rather than failing.
            Err(e) if name == "residencypolicies" && is_status(&e, &[404]) => {
                warnings.push(
                    "the ResidencyPolicy CRD is not installed: no policy governs anything".into(),
                );
                continue;
            }
            Err(source) => {
                return Err(LiveError::List {
                    resource: name.to_string(),
                    source,
                });
            }
        };
        entries.push(listed.entry());
        for raw in &listed.items {
            if WorkloadKind::ALL
                .iter()
                .any(|k| workload_resource(*k).1 == name)
            {
                match listed.workload(raw) {
                    Ok(w) => workloads.push(w),
                    Err(e) => warnings.push(format!("skipped {name} {}: {e}", raw_name(raw))),
                }
                continue;
            }
            let v = match listed.value(raw) {
                Ok(v) => v,
                Err(e) => {
                    warnings.push(format!("skipped {name} {}: {e}", raw_name(raw)));
                    continue;
                }
            };
            let v = &v;
            let skipped = |e: String| format!("skipped {name} {}: {e}", object_name(v));
            match name {
                "residencypolicies" => match decode::<ResidencyPolicy>(v) {
                    Ok(p) => {
                        let pname = p.metadata.name.clone().unwrap_or_default();
                        let status = p.status.as_ref().map(|s| {
                            policy_status_objects += 1;
                            for o in &s.top_offenders {
                                offenders.insert(
                                    (
                                        pname.clone(),
                                        o.kind.clone(),
                                        o.namespace.clone().unwrap_or_default(),
                                        o.name.clone(),
                                    ),
                                    o.codes.iter().cloned().collect(),
                                );
                            }
                            PolicyStatusEntry {
                                violations: s.violations,
                                last_evaluated: s
                                    .last_evaluated
                                    .as_ref()
                                    .map(|t| super::model::rfc3339(t.0)),
                                ready: s
                                    .conditions
                                    .iter()
                                    .find(|c| c.type_ == "Ready")
                                    .map(|c| format!("{} ({})", c.status, c.reason)),
                            }
                        });
                        policy_meta.insert(
                            pname,
                            PolicyMeta {
                                resource_version: p.metadata.resource_version.clone(),
                                uid: p.metadata.uid.clone(),
                                status,
                            },
                        );
                        // As the operator enforces a policy it has never
                        // seen compile: its strictest reading (the builder
                        // records it in `Snapshot::rejected`).
                        let _ = builder.policy(&p);
                    }
                    Err(e) => warnings.push(skipped(e)),
                },
                "nodes" => match decode::<Node>(v) {
                    Ok(n) => builder.node(NodeInfo::from_node(&n)),
                    Err(e) => warnings.push(skipped(e)),
                },
                "namespaces" => match decode::<Namespace>(v) {
                    Ok(ns) => {
                        builder.namespace(
                            ns.metadata.name.unwrap_or_default(),
                            ns.metadata.labels.unwrap_or_default(),
                        );
                    }
                    Err(e) => warnings.push(skipped(e)),
                },
                "networkpolicies" => match decode::<NetworkPolicy>(v) {
                    Ok(np) => builder.network_policy(&np),
                    Err(e) => warnings.push(skipped(e)),
                },
                "services" => match decode::<Service>(v) {
                    Ok(svc) => builder.service(&svc),
                    Err(e) => warnings.push(skipped(e)),
                },
                "persistentvolumes" => match decode::<PersistentVolume>(v) {
                    Ok(pv) => builder.persistent_volume(VolumeRecord::from_k8s(&pv)),
                    Err(e) => warnings.push(skipped(e)),
                },
                "persistentvolumeclaims" => match decode::<PersistentVolumeClaim>(v) {
                    Ok(c) => builder.persistent_volume_claim(ClaimRecord::from_k8s(&c)),
                    Err(e) => warnings.push(skipped(e)),
                },
                "storageclasses" => match decode::<StorageClass>(v) {
                    Ok(c) => builder.storage_class(ClassRecord::from_k8s(&c)),
                    Err(e) => warnings.push(skipped(e)),
                },
                _ => {}
            }
        }
    }
    for (resource, listed) in layers {
        let listed = match listed {
            Ok(l) => l,
            // Served at discovery, gone by the list: its CRD was deleted
            // meanwhile, and its objects with it.
            Err(e) if is_status(&e, &[404]) => {
                warnings.push(format!(
                    "{} was served a moment ago but is not now: judged without it",
                    resource.name
                ));
                continue;
            }
            Err(source) => {
                return Err(LiveError::List {
                    resource: resource.name.to_string(),
                    source,
                });
            }
        };
        entries.push(listed.entry());
        for raw in &listed.items {
            match listed.value(raw) {
                // The engine projects the object; one it cannot read
                // fails closed there, as in the operator.
                Ok(v) => builder.layer_object(&listed.api_version, &listed.kind, &v),
                Err(e) => {
                    warnings.push(format!("skipped {} {}: {e}", resource.name, raw_name(raw)))
                }
            }
        }
    }
    builder.nodes_known();
    let snapshot = builder.build();
    for r in &snapshot.rejected {
        warnings.push(format!(
            "ResidencyPolicy {} does not compile; the report judges with its strictest reading: {}",
            r.name,
            r.problems
                .iter()
                .map(|p| format!("{}: {}", p.field, p.message.en))
                .collect::<Vec<_>>()
                .join("; ")
        ));
    }

    let mut evidence = AuditEvidence {
        offenders,
        ..AuditEvidence::default()
    };
    let events_source = match events {
        Ok(listed) => index_all(&listed, index_event, &mut entries, &mut evidence),
        Err(e) => Availability::unavailable(
            format!("cannot list Events: {e}"),
            format!("无法列出 Events：{e}"),
        ),
    };
    let reports_source = read_reports(reports, &mut entries, &mut evidence, &mut warnings);
    entries.sort_by(|a, b| a.resource.cmp(&b.resource));
    Ok(Inputs {
        snapshot,
        workloads,
        origins: BTreeMap::new(),
        policy_meta,
        evidence,
        audit_sources: AuditSources {
            events: events_source,
            policy_reports: reports_source,
            policy_status: Availability::read(policy_status_objects),
        },
        source: Source::Cluster(ClusterIdentity {
            server,
            kube_system_uid,
            context,
            lists: entries,
        }),
        data: Vec::new(),
        warnings,
        unclassifiable_is_error: false,
    })
}

/// The operator's reports (labelled `app.kubernetes.io/managed-by:
/// residency-guard`) from each report API the cluster serves: with
/// `reports.kind` `auto` or `both` and both APIs installed the operator
/// writes the same results to each, and reading both changes nothing; with
/// one API, only it holds ours. An API that is not installed (404) is
/// skipped; one that cannot be read (403) is a warning, unless no API could
/// be read at all.
fn read_reports(
    lists: Vec<(ReportFormat, Result<Listed, kube::Error>)>,
    entries: &mut Vec<ListEntry>,
    evidence: &mut AuditEvidence,
    warnings: &mut Vec<String>,
) -> Availability {
    let mut objects = 0;
    let mut read_any = false;
    let mut failures: Vec<String> = Vec::new();
    for (format, listed) in lists {
        match listed {
            Ok(listed) => {
                read_any = true;
                objects += index_all(&listed, index_report, entries, evidence).objects;
            }
            Err(e) if is_status(&e, &[404]) => {}
            Err(e) => failures.push(format!("cannot list {}: {e}", format.resource())),
        }
    }
    if read_any {
        warnings.extend(failures);
        return Availability::read(objects);
    }
    if failures.is_empty() {
        Availability::unavailable(
            "no report API is installed (neither wgpolicyk8s.io PolicyReports nor openreports.io Reports)",
            "未安装任何报告 API（既无 wgpolicyk8s.io PolicyReport，也无 openreports.io Report）",
        )
    } else {
        let text = failures.join("; ");
        Availability::unavailable(text.clone(), format!("无法读取报告：{text}"))
    }
}

/// An audit Event: its name, what it is about, its reason and its time.
/// Read every audit record in `listed` into `evidence` with `index`
/// (records that do not parse are skipped: they are evidence, not input).
fn index_all(
    listed: &Listed,
    index: fn(&Value, &mut AuditEvidence),
    entries: &mut Vec<ListEntry>,
    evidence: &mut AuditEvidence,
) -> Availability {
    entries.push(listed.entry());
    for raw in &listed.items {
        if let Ok(v) = listed.value(raw) {
            index(&v, evidence);
        }
    }
    Availability::read(listed.items.len())
}

fn index_event(e: &Value, evidence: &mut AuditEvidence) {
    let meta = e.get("metadata");
    let time = time_of(e.get("eventTime"))
        .or_else(|| time_of(e.get("deprecatedFirstTimestamp")))
        .or_else(|| time_of(meta.and_then(|m| m.get("creationTimestamp"))));
    let Some(time) = time else { return };
    let str_of = |v: Option<&Value>, k: &str| {
        v.and_then(|x| x.get(k))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let name = str_of(meta, "name");
    let earliest = |slot: &mut Timestamp| {
        if time < *slot {
            *slot = time;
        }
    };
    evidence
        .events_by_name
        .entry(name)
        .and_modify(earliest)
        .or_insert(time);
    let regarding = e.get("regarding");
    let key = (
        str_of(regarding, "kind"),
        str_of(regarding, "namespace"),
        str_of(regarding, "name"),
        str_of(Some(e), "reason"),
    );
    evidence
        .events_by_object
        .entry(key)
        .and_modify(earliest)
        .or_insert(time);
}

/// A report's results (PolicyReport or OpenReports Report: the same
/// fields): which (object, policy, rule) it lists, with the result's own
/// time when it carries one.
fn index_report(r: &Value, evidence: &mut AuditEvidence) {
    let report_ns = r
        .get("metadata")
        .and_then(|m| m.get("namespace"))
        .and_then(Value::as_str)
        .unwrap_or_default();
    for result in r
        .get("results")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if result.get("result").and_then(Value::as_str) != Some("fail") {
            continue;
        }
        let s = |k: &str| {
            result
                .get(k)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        let time = result
            .get("timestamp")
            .and_then(|t| t.get("seconds"))
            .and_then(Value::as_i64)
            .and_then(|s| Timestamp::from_second(s).ok());
        for res in result
            .get("resources")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let get = |k: &str| res.get(k).and_then(Value::as_str).unwrap_or_default();
            let ns = match get("namespace") {
                "" => report_ns,
                ns => ns,
            };
            let key = (
                get("kind").to_string(),
                ns.to_string(),
                get("name").to_string(),
                s("policy"),
                s("rule"),
            );
            let slot = evidence.report_results.entry(key).or_insert(time);
            if let (Some(t), Some(old)) = (time, *slot)
                && t < old
            {
                *slot = Some(t);
            }
            if slot.is_none() {
                *slot = time;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{AddressSpace, Catalogue};
    use crate::state::LAYER_RESOURCES;

    fn api_error(code: u16, reason: &str) -> kube::Error {
        let status: kube::core::Status = serde_json::from_value(serde_json::json!({
            "status": "Failure", "code": code, "reason": reason, "message": reason
        }))
        .expect("a Status");
        kube::Error::Api(Box::new(status))
    }

    fn not_found() -> kube::Error {
        api_error(404, "NotFound")
    }

    /// A LIST response as the API server gives it: items without
    /// apiVersion or kind.
    fn listed(resource: &ApiResource, name: &str, items: &[Value]) -> Listed {
        Listed {
            resource: name.to_string(),
            resource_version: Some("7".into()),
            api_version: resource.api_version.clone(),
            kind: resource.kind.clone(),
            items: items
                .iter()
                .map(|v| serde_json::value::to_raw_value(v).expect("JSON"))
                .collect(),
        }
    }

    fn layer(kind: &str) -> LayerResource {
        *LAYER_RESOURCES
            .iter()
            .find(|r| r.kind == kind)
            .expect("a layer kind")
    }

    /// A cluster with a classified Deployment in `pay` whose only egress
    /// restriction is a CiliumNetworkPolicy to 1.0.1.0/24 (mainland), read
    /// under `cni` with the layer kinds `layers`.
    fn cluster_read(cni: Cni, layers: Vec<(LayerResource, Result<Listed, kube::Error>)>) -> Read {
        let objects = |name: &str| -> Vec<Value> {
            match name {
                "residencypolicies" => vec![serde_json::json!({
                    "apiVersion": "residencyguard.io/v1alpha1",
                    "kind": "ResidencyPolicy",
                    "metadata": {"name": "personal", "resourceVersion": "3", "uid": "u-1"},
                    "spec": {"dataClasses": ["personal"], "action": "Deny", "egress": {"mode": "MainlandOnly"}}
                })],
                "namespaces" => vec![
                    serde_json::json!({"metadata": {"name": "pay", "labels": {"kubernetes.io/metadata.name": "pay"}}}),
                ],
                "deployments" => vec![serde_json::json!({
                    "metadata": {"name": "api", "namespace": "pay", "uid": "u-2"},
                    "spec": {
                        "selector": {"matchLabels": {"app": "api"}},
                        "template": {
                            "metadata": {"labels": {"app": "api", "residencyguard.io/data-class": "personal"}},
                            "spec": {
                                "nodeSelector": {"topology.kubernetes.io/region": "cn-north-1"},
                                "containers": [{"name": "c", "image": "i"}]
                            }
                        }
                    }
                })],
                _ => Vec::new(),
            }
        };
        Read {
            semantics: EgressSemantics {
                cni,
                cilium_enforcement: CiliumEnforcement::default(),
            },
            lists: required_resources()
                .iter()
                .map(|(r, name)| (*name, Ok(listed(r, name, &objects(name)))))
                .collect(),
            layers,
            events: Err(not_found()),
            reports: ReportFormat::ALL
                .into_iter()
                .map(|f| (f, Err(not_found())))
                .collect(),
            kube_system_uid: Some("kube-system-uid".into()),
        }
    }

    fn cilium_policy() -> (LayerResource, Result<Listed, kube::Error>) {
        let cnp = layer("CiliumNetworkPolicy");
        let objects = [serde_json::json!({
            "apiVersion": "cilium.io/v2",
            "kind": "CiliumNetworkPolicy",
            "metadata": {"name": "api-to-cn", "namespace": "pay"},
            "spec": {"endpointSelector": {"matchLabels": {"app": "api"}}, "egress": [{"toCIDR": ["1.0.1.0/24"]}]}
        })];
        (cnp, Ok(listed(&cnp.api_resource(), cnp.name, &objects)))
    }

    fn api_egress(read: Read) -> (Value, Value) {
        let now: Timestamp = "2026-06-01T00:00:00Z".parse().expect("time");
        let base = Snapshot::new(Catalogue::builtin().clone(), AddressSpace::builtin());
        let inputs =
            assemble(read, base, "https://cluster.test".into(), None, now).expect("the inputs");
        let report = super::super::model::build(&inputs, now).expect("the report");
        let json = serde_json::to_value(&report).expect("JSON");
        let api = json["workloads"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|w| w["name"] == "api")
            .expect("the Deployment in the report")
            .clone();
        (api["egress"].clone(), json)
    }

    /// The live report reads the served layer kinds as the operator does:
    /// restricted by a CiliumNetworkPolicy alone, the Deployment is
    /// mainland-only, and the report says which layer allowed what.
    #[test]
    fn a_cilium_policy_read_from_the_cluster_restricts_the_report() {
        let (egress, json) = api_egress(cluster_read(Cni::Cilium, vec![cilium_policy()]));
        assert_eq!(egress["posture"], "mainland", "{egress:#}");
        assert_eq!(egress["cni"], "cilium");
        let layers = egress["layers"].to_string();
        assert!(
            layers.contains("CiliumNetworkPolicy pay/api-to-cn") && layers.contains("1.0.1.0/24"),
            "{layers}"
        );
        let lists = json["scope"]["cluster"]["lists"].to_string();
        assert!(
            lists.contains("ciliumnetworkpolicies.cilium.io"),
            "the provenance names the layer list: {lists}"
        );

        // The same cluster read as if Cilium's kinds were not served: no
        // NetworkPolicy isolates the Deployment.
        let (egress, _) = api_egress(cluster_read(Cni::Kubernetes, Vec::new()));
        assert_eq!(egress["posture"], "unrestricted", "{egress:#}");
    }

    /// A layer kind that was served at discovery but is gone by its list
    /// (its CRD deleted, its objects with it) is absent, with a warning;
    /// one that cannot be listed otherwise (403) fails the report rather
    /// than be judged as absent.
    #[test]
    fn a_layer_kind_gone_by_the_list_is_a_warning_and_a_refused_list_an_error() {
        let cnp = layer("CiliumNetworkPolicy");
        let read = cluster_read(Cni::Cilium, vec![(cnp, Err(not_found()))]);
        let now: Timestamp = "2026-06-01T00:00:00Z".parse().expect("time");
        let base = Snapshot::new(Catalogue::builtin().clone(), AddressSpace::builtin());
        let inputs = assemble(read, base.clone(), String::new(), None, now).expect("inputs");
        assert!(
            inputs
                .warnings
                .iter()
                .any(|w| w.contains("ciliumnetworkpolicies.cilium.io")),
            "{:?}",
            inputs.warnings
        );
        let forbidden = api_error(403, "Forbidden");
        let read = cluster_read(Cni::Cilium, vec![(cnp, Err(forbidden))]);
        match assemble(read, base, String::new(), None, now) {
            Err(e) => assert!(
                e.to_string()
                    .contains("cannot list ciliumnetworkpolicies.cilium.io"),
                "{e}"
            ),
            Ok(_) => panic!("a layer kind that cannot be listed was judged as absent"),
        }
    }
}
