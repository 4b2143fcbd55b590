//! Storage facts: PersistentVolumes, PersistentVolumeClaims and
//! StorageClasses projected to the few fields a residency decision reads,
//! and where a volume is, reasoned from its topology through the
//! catalogue (regions, and zones mapped to regions).
//!
//! A volume is in mainland China only when its topology says so; anything
//! missing, unknown or contradictory fails closed with the reason, as a
//! node does.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{
    NodeSelectorRequirement, PersistentVolume, PersistentVolumeClaim,
};
use k8s_openapi::api::storage::v1::StorageClass;
use serde::Serialize;

use super::catalogue::{Catalogue, Jurisdiction, RegionLookup};
use super::node_inventory::NodeInventory;
use super::nodes::{LEGACY_REGION_LABEL, NodeStanding, REGION_LABEL};

/// Label keys that name a region.
pub const REGION_KEYS: [&str; 2] = [REGION_LABEL, LEGACY_REGION_LABEL];

/// Label and topology keys that name a zone: the well-known ones and the
/// disk CSI drivers' own (AWS EBS, Alibaba Cloud disk, Azure disk, Tencent
/// CBS, GCE PD, Huawei's open-source EVS driver).
pub const ZONE_KEYS: [&str; 8] = [
    "topology.kubernetes.io/zone",
    "failure-domain.beta.kubernetes.io/zone",
    "topology.ebs.csi.aws.com/zone",
    "topology.diskplugin.csi.alibabacloud.com/zone",
    "topology.disk.csi.azure.com/zone",
    "topology.com.tencent.cloud.csi.cbs/zone",
    "topology.gke.io/zone",
    "topology.evs.csi.huaweicloud.com/zone",
];

/// The node a local volume lives on.
pub const HOSTNAME_KEY: &str = "kubernetes.io/hostname";

/// The annotation that makes a StorageClass the default.
pub const DEFAULT_CLASS_ANNOTATION: &str = "storageclass.kubernetes.io/is-default-class";

/// What a topology key says about location.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum KeyKind {
    Region,
    Zone,
    Host,
}

fn key_kind(key: &str) -> Option<KeyKind> {
    if REGION_KEYS.contains(&key) {
        Some(KeyKind::Region)
    } else if ZONE_KEYS.contains(&key) {
        Some(KeyKind::Zone)
    } else if key == HOSTNAME_KEY {
        Some(KeyKind::Host)
    } else {
        None
    }
}

/// One topology requirement on a location key (others are not kept).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TopologyRequirement {
    pub key: String,
    pub op: TopologyOp,
    pub values: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum TopologyOp {
    In,
    NotIn,
    Exists,
    DoesNotExist,
}

impl TopologyRequirement {
    pub fn new(key: &str, op: TopologyOp, values: &[&str]) -> Self {
        TopologyRequirement {
            key: key.to_string(),
            op,
            values: values.iter().map(|v| v.to_string()).collect(),
        }
    }

    fn from_k8s(r: &NodeSelectorRequirement) -> Option<Self> {
        key_kind(&r.key)?;
        let op = match r.operator.as_str() {
            "In" => TopologyOp::In,
            "NotIn" => TopologyOp::NotIn,
            "Exists" => TopologyOp::Exists,
            "DoesNotExist" => TopologyOp::DoesNotExist,
            // Gt/Lt on a location key pin nothing.
            _ => return None,
        };
        Some(TopologyRequirement {
            key: r.key.clone(),
            op,
            values: r.values.clone().unwrap_or_default(),
        })
    }
}

/// A remote server a volume's data is stored on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Endpoint {
    /// The field naming it, relative to the volume source: `nfs.server`.
    pub field: String,
    /// As written: a host name or an address, perhaps with a port.
    pub server: String,
}

/// CSI drivers whose volumes name the server holding the data, and the
/// volume attribute that names it: judged as `nfs.server` is. Sources:
/// kubernetes-csi/csi-driver-nfs (`server`, with `share`) and
/// kubernetes-csi/csi-driver-smb (`source`, `//server/share`), both listed
/// in the Kubernetes CSI driver list (kubernetes-csi/docs, drivers.md).
pub const SERVER_CSI_DRIVERS: [(&str, &str); 2] =
    [("nfs.csi.k8s.io", "server"), ("smb.csi.k8s.io", "source")];

/// CSI drivers whose data lives in an object store (or a managed share, or
/// a cache of one) that the volume names by account, bucket or dataset,
/// never by place: where the data is cannot be known from the cluster.
/// Sources: the Kubernetes CSI driver list (kubernetes-csi/docs,
/// drivers.md: `ossplugin.csi.alibabacloud.com`, `file.csi.azure.com`,
/// `com.tencent.cloud.csi.cosfs`, `gcs.csi.ofek.dev`, `csi.juicefs.com`)
/// and each driver's project: kubernetes-sigs/blob-csi-driver
/// (`blob.csi.azure.com`), awslabs/mountpoint-s3-csi-driver
/// (`s3.csi.aws.com`), GoogleCloudPlatform/gcs-fuse-csi-driver
/// (`gcsfuse.csi.storage.gke.io`), fluid-cloudnative/fluid
/// (`fuse.csi.fluid.io`).
pub const OBJECT_STORE_CSI_DRIVERS: [(&str, &str); 9] = [
    ("blob.csi.azure.com", "Azure Blob Storage"),
    ("file.csi.azure.com", "Azure Files"),
    ("s3.csi.aws.com", "Amazon S3 (Mountpoint)"),
    ("ossplugin.csi.alibabacloud.com", "Alibaba Cloud OSS"),
    ("com.tencent.cloud.csi.cosfs", "Tencent Cloud COS"),
    (
        "gcsfuse.csi.storage.gke.io",
        "Google Cloud Storage (Cloud Storage FUSE)",
    ),
    ("gcs.csi.ofek.dev", "Google Cloud Storage"),
    (
        "fuse.csi.fluid.io",
        "a Fluid dataset (a cache of a remote store)",
    ),
    ("csi.juicefs.com", "JuiceFS (on an object store)"),
];

/// Inline CSI drivers that only put data onto the node for the pod (secrets
/// fetched from a secrets store, certificates minted for it) and store
/// nothing off the node: placement judges them, as `secret` volumes.
/// Sources: kubernetes-sigs/secrets-store-csi-driver
/// (`secrets-store.csi.k8s.io`, "Ephemeral" in the CSI driver list),
/// cert-manager/csi-driver (`csi.cert-manager.io`).
pub const ON_NODE_CSI_DRIVERS: [&str; 2] = ["secrets-store.csi.k8s.io", "csi.cert-manager.io"];

/// The in-tree Azure Files volume type, read as a store of unknown place.
pub const AZURE_FILE: &str = "azureFile";

/// Where a CSI volume keeps its data, as far as its driver and attributes
/// tell.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CsiData {
    /// On the server its attributes name (`csi.volumeAttributes.server`).
    Server(Endpoint),
    /// On the node only.
    OnNode,
    /// Somewhere the volume does not tell (an object store, a server the
    /// attributes do not name).
    Unlocated(UnlocatedStore),
    /// A driver this engine does not know.
    UnknownDriver,
}

/// A volume whose store cannot be located from the cluster.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UnlocatedStore {
    /// The field at fault, relative to the volume source: `csi.driver`,
    /// `azureFile`, `csi.volumeAttributes.server`.
    pub field: String,
    /// The CSI driver, or `azureFile`.
    pub driver: String,
    /// Why, in one word: `objectStore`, `csiNoServer` (a server-naming
    /// driver whose attributes name none), `csiDriverUnknown`.
    pub reason: &'static str,
    /// What the store is (`Azure Blob Storage`), or the attribute that
    /// should name the server; empty for an unknown driver.
    pub store: &'static str,
}

impl UnlocatedStore {
    /// An inline CSI volume of a driver this engine does not know.
    pub fn unknown_driver(driver: &str) -> UnlocatedStore {
        UnlocatedStore {
            field: "csi.driver".into(),
            driver: driver.to_string(),
            reason: "csiDriverUnknown",
            store: "",
        }
    }

    /// An Azure Files share.
    pub fn azure_file() -> UnlocatedStore {
        UnlocatedStore {
            field: AZURE_FILE.into(),
            driver: AZURE_FILE.into(),
            reason: "objectStore",
            store: "Azure Files",
        }
    }
}

/// The server of an SMB source: `//server/share` (or `\\server\share`)
/// gives `server`.
fn smb_host(source: &str) -> Option<&str> {
    source
        .trim()
        .trim_start_matches(['/', '\\'])
        .split(['/', '\\'])
        .next()
        .filter(|h| !h.is_empty())
}

/// Where the data of a CSI volume of `driver` with `attributes` is.
pub fn csi_data(driver: &str, attributes: Option<&BTreeMap<String, String>>) -> CsiData {
    if let Some((_, attr)) = SERVER_CSI_DRIVERS.iter().find(|(d, _)| *d == driver) {
        let value = attributes.and_then(|a| a.get(*attr)).map(String::as_str);
        let server = match *attr {
            "source" => value.and_then(smb_host),
            _ => value.map(str::trim).filter(|v| !v.is_empty()),
        };
        return match server {
            Some(server) => {
                CsiData::Server(endpoint(&format!("csi.volumeAttributes.{attr}"), server))
            }
            None => CsiData::Unlocated(UnlocatedStore {
                field: format!("csi.volumeAttributes.{attr}"),
                driver: driver.to_string(),
                reason: "csiNoServer",
                store: attr,
            }),
        };
    }
    if let Some((_, store)) = OBJECT_STORE_CSI_DRIVERS.iter().find(|(d, _)| *d == driver) {
        return CsiData::Unlocated(UnlocatedStore {
            field: "csi.driver".into(),
            driver: driver.to_string(),
            reason: "objectStore",
            store,
        });
    }
    if ON_NODE_CSI_DRIVERS.contains(&driver) {
        return CsiData::OnNode;
    }
    CsiData::UnknownDriver
}

/// A PersistentVolume, projected.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VolumeRecord {
    pub name: String,
    /// Its region and zone labels (other labels are not kept).
    pub labels: Vec<(String, String)>,
    /// `spec.nodeAffinity.required.nodeSelectorTerms`, location keys only;
    /// `None` when there is no required node affinity.
    pub terms: Option<Vec<Vec<TopologyRequirement>>>,
    /// Remote servers (NFS, iSCSI, Ceph, NFS and SMB CSI) holding its data.
    pub endpoints: Vec<Endpoint>,
    /// A store whose place the PV does not tell (Azure Files, an object
    /// store's CSI driver): its topology says where nodes may mount it,
    /// not where the data is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unlocated: Option<Box<UnlocatedStore>>,
    pub storage_class: Option<String>,
    /// `spec.claimRef` (namespace, name).
    pub claim: Option<(String, String)>,
}

/// A PersistentVolumeClaim, projected.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClaimRecord {
    pub namespace: String,
    pub name: String,
    /// `None`: omitted (the default class); `Some("")`: a pre-provisioned PV.
    pub storage_class: Option<String>,
    /// `spec.volumeName`: the PV it is bound (or pre-bound) to.
    pub volume_name: Option<String>,
    /// Its `residencyguard.io/data-class` label: the data at rest is
    /// classified, and every pod that mounts the claim carries the classes
    /// (a StatefulSet's claim templates' labels reach its claims).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub class_label: Option<String>,
}

/// `volumeBindingMode`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub enum BindingMode {
    /// The API's default: provisioned as soon as the claim is created.
    #[default]
    Immediate,
    WaitForFirstConsumer,
}

/// A StorageClass, projected.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClassRecord {
    pub name: String,
    pub provisioner: String,
    pub binding_mode: BindingMode,
    /// `allowedTopologies`, each term's `matchLabelExpressions` as `In`s.
    pub allowed_topologies: Vec<Vec<TopologyRequirement>>,
    pub is_default: bool,
}

impl VolumeRecord {
    pub fn from_k8s(pv: &PersistentVolume) -> VolumeRecord {
        let labels = pv
            .metadata
            .labels
            .iter()
            .flatten()
            .filter(|(k, _)| matches!(key_kind(k), Some(KeyKind::Region | KeyKind::Zone)))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let spec = pv.spec.as_ref();
        let terms = spec
            .and_then(|s| s.node_affinity.as_ref())
            .and_then(|a| a.required.as_ref())
            .map(|sel| {
                sel.node_selector_terms
                    .iter()
                    .map(|t| {
                        t.match_expressions
                            .iter()
                            .flatten()
                            .filter_map(TopologyRequirement::from_k8s)
                            .collect()
                    })
                    .collect()
            });
        let mut endpoints = Vec::new();
        let mut unlocated = None;
        if let Some(s) = spec {
            if let Some(csi) = &s.csi {
                match csi_data(&csi.driver, csi.volume_attributes.as_ref()) {
                    CsiData::Server(e) => endpoints.push(e),
                    CsiData::Unlocated(u) => unlocated = Some(Box::new(u)),
                    // A PV of another driver (a disk): its topology decides.
                    CsiData::OnNode | CsiData::UnknownDriver => {}
                }
            }
            if s.azure_file.is_some() {
                unlocated = Some(Box::new(UnlocatedStore::azure_file()));
            }
            if let Some(nfs) = &s.nfs {
                endpoints.push(endpoint("nfs.server", &nfs.server));
            }
            if let Some(iscsi) = &s.iscsi {
                endpoints.push(endpoint("iscsi.targetPortal", &iscsi.target_portal));
                for p in iscsi.portals.iter().flatten() {
                    endpoints.push(endpoint("iscsi.portals", p));
                }
            }
            if let Some(ceph) = &s.cephfs {
                for m in &ceph.monitors {
                    endpoints.push(endpoint("cephfs.monitors", m));
                }
            }
            if let Some(rbd) = &s.rbd {
                for m in &rbd.monitors {
                    endpoints.push(endpoint("rbd.monitors", m));
                }
            }
        }
        VolumeRecord {
            name: pv.metadata.name.clone().unwrap_or_default(),
            labels,
            terms,
            endpoints,
            unlocated,
            storage_class: spec.and_then(|s| s.storage_class_name.clone()),
            claim: spec
                .and_then(|s| s.claim_ref.as_ref())
                .and_then(|r| Some((r.namespace.clone().unwrap_or_default(), r.name.clone()?))),
        }
    }
}

pub(crate) fn endpoint(field: &str, server: &str) -> Endpoint {
    Endpoint {
        field: field.to_string(),
        server: server.to_string(),
    }
}

impl ClaimRecord {
    pub fn from_k8s(pvc: &PersistentVolumeClaim) -> ClaimRecord {
        let spec = pvc.spec.as_ref();
        ClaimRecord {
            namespace: pvc.metadata.namespace.clone().unwrap_or_default(),
            name: pvc.metadata.name.clone().unwrap_or_default(),
            storage_class: spec.and_then(|s| s.storage_class_name.clone()),
            volume_name: spec
                .and_then(|s| s.volume_name.clone())
                .filter(|v| !v.is_empty()),
            class_label: pvc
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(crate::api::DATA_CLASS_LABEL))
                .cloned(),
        }
    }
}

impl ClassRecord {
    pub fn from_k8s(sc: &StorageClass) -> ClassRecord {
        ClassRecord {
            name: sc.metadata.name.clone().unwrap_or_default(),
            provisioner: sc.provisioner.clone(),
            binding_mode: match sc.volume_binding_mode.as_deref() {
                Some("WaitForFirstConsumer") => BindingMode::WaitForFirstConsumer,
                _ => BindingMode::Immediate,
            },
            allowed_topologies: sc
                .allowed_topologies
                .iter()
                .flatten()
                .map(|t| {
                    t.match_label_expressions
                        .iter()
                        .flatten()
                        .filter(|e| key_kind(&e.key).is_some())
                        .map(|e| TopologyRequirement {
                            key: e.key.clone(),
                            op: TopologyOp::In,
                            values: e.values.clone(),
                        })
                        .collect()
                })
                .collect(),
            is_default: sc
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(DEFAULT_CLASS_ANNOTATION))
                .is_some_and(|v| v == "true"),
        }
    }
}

/// Where a volume (or what a class provisions) is, and on what evidence.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(
    tag = "standing",
    rename_all = "camelCase",
    rename_all_fields = "camelCase"
)]
pub enum VolumeLocation {
    /// Every place its topology allows is a mainland region.
    Mainland { regions: Vec<String> },
    /// Its topology allows a place known to be outside mainland China.
    Outside {
        key: String,
        value: String,
        region: String,
        jurisdiction: Jurisdiction,
        country: String,
    },
    /// Its location cannot be established.
    Unknown { reason: UnknownLocation },
}

/// Why a volume's location cannot be established.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(
    tag = "reason",
    rename_all = "camelCase",
    rename_all_fields = "camelCase"
)]
pub enum UnknownLocation {
    /// No region, zone or hostname pins it.
    NoTopology,
    /// A region or zone value the catalogue does not know (or that means
    /// different places at different clouds).
    UnknownValue { key: String, value: String },
    /// A local volume on a node that is unknown or not trusted.
    Node { name: String, why: String },
    /// Its topology matches no place (contradictory or empty terms).
    MatchesNothing,
}

impl VolumeLocation {
    pub fn is_mainland(&self) -> bool {
        matches!(self, VolumeLocation::Mainland { .. })
    }

    /// "in Hong Kong (topology.kubernetes.io/zone=ap-east-1a, region ap-east-1)"
    pub fn describe_en(&self) -> String {
        match self {
            VolumeLocation::Mainland { regions } => {
                format!("in mainland China ({})", regions.join(", "))
            }
            VolumeLocation::Outside {
                key,
                value,
                region,
                jurisdiction,
                country,
            } => format!(
                "in {} ({key}={value}, region {region}, {country})",
                jurisdiction.describe_en()
            ),
            VolumeLocation::Unknown { reason } => match reason {
                UnknownLocation::NoTopology => "of unknown location: neither its node affinity nor its labels name a region, zone or node".to_string(),
                UnknownLocation::UnknownValue { key, value } => format!(
                    "of unknown location: {key}={value} is not in the jurisdiction catalogue (or means different places at different clouds)"
                ),
                UnknownLocation::Node { name, why } => {
                    format!("of unknown location: it lives on node {name}, which {why}")
                }
                UnknownLocation::MatchesNothing => {
                    "of unknown location: its topology matches no place".to_string()
                }
            },
        }
    }

    pub fn describe_zh(&self) -> String {
        match self {
            VolumeLocation::Mainland { regions } => {
                format!("位于中国大陆（{}）", regions.join("、"))
            }
            VolumeLocation::Outside {
                key,
                value,
                region,
                jurisdiction,
                ..
            } => format!(
                "位于{}（{key}={value}，地域 {region}）",
                jurisdiction.describe_zh()
            ),
            VolumeLocation::Unknown { reason } => match reason {
                UnknownLocation::NoTopology => {
                    "位置无法确定：其节点亲和性和标签均未指明地域、可用区或节点".to_string()
                }
                UnknownLocation::UnknownValue { key, value } => {
                    format!("位置无法确定：{key}={value} 不在管辖区目录中（或在不同云上含义不同）")
                }
                UnknownLocation::Node { name, why } => {
                    format!("位置无法确定：它位于节点 {name}，该节点{why}")
                }
                UnknownLocation::MatchesNothing => "位置无法确定：其拓扑不匹配任何位置".to_string(),
            },
        }
    }
}

/// What one term (with the labels) allows, per location attribute.
#[derive(Default)]
struct Pins<'a> {
    regions: Option<BTreeSet<&'a str>>,
    zones: Option<BTreeSet<&'a str>>,
    hosts: Option<BTreeSet<&'a str>>,
    not_regions: BTreeSet<&'a str>,
    not_zones: BTreeSet<&'a str>,
    not_hosts: BTreeSet<&'a str>,
    /// DoesNotExist on a key of that kind.
    absent: Vec<KeyKind>,
    /// The key each pinned value came from (first seen), for evidence.
    key_of: BTreeMap<&'a str, &'a str>,
}

fn restrict<'a>(set: &mut Option<BTreeSet<&'a str>>, values: impl Iterator<Item = &'a str>) {
    let values: BTreeSet<&str> = values.collect();
    *set = Some(match set.take() {
        None => values,
        Some(s) => s.intersection(&values).copied().collect(),
    });
}

impl<'a> Pins<'a> {
    fn add(&mut self, key: &'a str, op: TopologyOp, values: impl Iterator<Item = &'a str> + Clone) {
        let Some(kind) = key_kind(key) else { return };
        for v in values.clone() {
            self.key_of.entry(v).or_insert(key);
        }
        let (set, not) = match kind {
            KeyKind::Region => (&mut self.regions, &mut self.not_regions),
            KeyKind::Zone => (&mut self.zones, &mut self.not_zones),
            KeyKind::Host => (&mut self.hosts, &mut self.not_hosts),
        };
        match op {
            TopologyOp::In => restrict(set, values),
            TopologyOp::NotIn => not.extend(values),
            TopologyOp::Exists => {}
            TopologyOp::DoesNotExist => self.absent.push(kind),
        }
    }

    fn finish(mut self) -> Option<Self> {
        for (set, not) in [
            (&mut self.regions, &self.not_regions),
            (&mut self.zones, &self.not_zones),
            (&mut self.hosts, &self.not_hosts),
        ] {
            if let Some(s) = set {
                s.retain(|v| !not.contains(v));
                if s.is_empty() {
                    return None;
                }
            }
        }
        // A key pinned and required absent: no place has both.
        let pinned_absent = self.absent.iter().any(|k| match k {
            KeyKind::Region => self.regions.is_some(),
            KeyKind::Zone => self.zones.is_some(),
            KeyKind::Host => self.hosts.is_some(),
        });
        (!pinned_absent).then_some(self)
    }
}

/// Where one term (with the labels) puts the volume: `None` when it
/// matches no place.
fn locate_term(
    pins: Pins<'_>,
    catalogue: &Catalogue,
    inventory: Option<&NodeInventory>,
) -> Option<VolumeLocation> {
    let pins = pins.finish()?;
    // (region, the key and value that gave it)
    let mut places: Vec<(&str, &str, &str)> = Vec::new();
    let mut unknown = None;
    match (&pins.zones, &pins.regions) {
        (Some(zones), regions) => {
            for &z in zones {
                let key = pins.key_of.get(z).copied().unwrap_or_default();
                match catalogue.zone_region(z) {
                    Some(r)
                        if regions.as_ref().is_none_or(|rs| rs.contains(r))
                            && !pins.not_regions.contains(r) =>
                    {
                        places.push((r, key, z));
                    }
                    Some(_) => {} // a zone outside the pinned regions: no such place
                    None => match regions {
                        Some(rs) => places.extend(
                            rs.iter()
                                .map(|&r| (r, pins.key_of.get(r).copied().unwrap_or_default(), r)),
                        ),
                        None => {
                            unknown.get_or_insert(VolumeLocation::Unknown {
                                reason: UnknownLocation::UnknownValue {
                                    key: key.to_string(),
                                    value: z.to_string(),
                                },
                            });
                        }
                    },
                }
            }
            if places.is_empty() && unknown.is_none() {
                return None;
            }
        }
        (None, Some(regions)) => places.extend(
            regions
                .iter()
                .map(|&r| (r, pins.key_of.get(r).copied().unwrap_or_default(), r)),
        ),
        (None, None) => return Some(locate_hosts(&pins, inventory)),
    }
    let mut mainland = BTreeSet::new();
    for (region, key, value) in places {
        match catalogue.lookup(None, region) {
            RegionLookup::Known(e) if e.jurisdiction.is_mainland() => {
                mainland.insert(region.to_string());
            }
            RegionLookup::Known(e) => {
                return Some(VolumeLocation::Outside {
                    key: key.to_string(),
                    value: value.to_string(),
                    region: region.to_string(),
                    jurisdiction: e.jurisdiction,
                    country: e.country.clone(),
                });
            }
            _ => {
                unknown.get_or_insert(VolumeLocation::Unknown {
                    reason: UnknownLocation::UnknownValue {
                        key: key.to_string(),
                        value: value.to_string(),
                    },
                });
            }
        }
    }
    Some(unknown.unwrap_or(VolumeLocation::Mainland {
        regions: mainland.into_iter().collect(),
    }))
}

/// A local volume pinned only to nodes: where those nodes are.
fn locate_hosts(pins: &Pins<'_>, inventory: Option<&NodeInventory>) -> VolumeLocation {
    let Some(hosts) = &pins.hosts else {
        return VolumeLocation::Unknown {
            reason: UnknownLocation::NoTopology,
        };
    };
    let mut regions = BTreeSet::new();
    let mut unknown = None;
    for &h in hosts {
        match inventory.and_then(|i| i.node(h)).map(|n| &n.standing) {
            Some(NodeStanding::Mainland { region }) => {
                regions.insert(region.clone());
            }
            Some(NodeStanding::Outside {
                region,
                jurisdiction,
                country,
                ..
            }) => {
                return VolumeLocation::Outside {
                    key: HOSTNAME_KEY.to_string(),
                    value: h.to_string(),
                    region: region.clone(),
                    jurisdiction: *jurisdiction,
                    country: country.clone(),
                };
            }
            Some(NodeStanding::Untrusted(why)) => {
                unknown.get_or_insert(UnknownLocation::Node {
                    name: h.to_string(),
                    why: super::nodes::describe_untrusted(why, super::text::Lang::En),
                });
            }
            None => {
                unknown.get_or_insert(UnknownLocation::Node {
                    name: h.to_string(),
                    why: "is not among the known nodes".to_string(),
                });
            }
        }
    }
    match unknown {
        Some(reason) => VolumeLocation::Unknown { reason },
        None => VolumeLocation::Mainland {
            regions: regions.into_iter().collect(),
        },
    }
}

/// Where terms OR'ed together (each AND'ed with `labels`) put a volume:
/// outside if any term allows a place outside, unknown if any term's place
/// cannot be established or no term matches anything, else mainland.
pub fn locate(
    terms: Option<&[Vec<TopologyRequirement>]>,
    labels: &[(String, String)],
    catalogue: &Catalogue,
    inventory: Option<&NodeInventory>,
) -> VolumeLocation {
    let with_labels = |term: &'_ [TopologyRequirement]| {
        let mut pins = Pins::default();
        for (k, v) in labels {
            // Multi-zone labels (regional disks) join zones with "__".
            pins.add(k, TopologyOp::In, v.split("__"));
        }
        for r in term {
            pins.add(&r.key, r.op, r.values.iter().map(String::as_str));
        }
        locate_term(pins, catalogue, inventory)
    };
    let located: Vec<VolumeLocation> = match terms {
        None => with_labels(&[]).into_iter().collect(),
        Some(terms) => terms.iter().filter_map(|t| with_labels(t)).collect(),
    };
    let mut regions = BTreeSet::new();
    let mut unknown = None;
    for l in located.iter() {
        match l {
            VolumeLocation::Outside { .. } => return l.clone(),
            VolumeLocation::Unknown { .. } => {
                unknown.get_or_insert_with(|| l.clone());
            }
            VolumeLocation::Mainland { regions: r } => regions.extend(r.iter().cloned()),
        }
    }
    if located.is_empty() {
        return VolumeLocation::Unknown {
            reason: UnknownLocation::MatchesNothing,
        };
    }
    unknown.unwrap_or(VolumeLocation::Mainland {
        regions: regions.into_iter().collect(),
    })
}

/// Where an endpoint's address is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(
    tag = "standing",
    rename_all = "camelCase",
    rename_all_fields = "camelCase"
)]
pub enum EndpointStanding {
    /// Inside mainland-China address space or the cluster's own networks.
    Inside,
    Outside {
        address: String,
        country: Option<String>,
    },
    /// A host name: where it resolves cannot be known offline.
    HostName { host: String },
}

/// The host part of a server string: `10.0.0.1:3260` → `10.0.0.1`,
/// `[2001:db8::1]:3260` → `2001:db8::1`, `2001:db8::1` → itself.
pub fn endpoint_host(server: &str) -> &str {
    let s = server.trim();
    if let Some(rest) = s.strip_prefix('[') {
        return rest.split_once(']').map_or(rest, |(h, _)| h);
    }
    if s.parse::<IpAddr>().is_ok() {
        return s;
    }
    match s.rsplit_once(':') {
        Some((h, port)) if port.chars().all(|c| c.is_ascii_digit()) => h,
        _ => s,
    }
}

pub(crate) fn judge_endpoint(server: &str, space: &super::AddressSpace) -> EndpointStanding {
    let host = endpoint_host(server);
    match host.parse::<IpAddr>() {
        Ok(ip) if space.inside.contains(ip) => EndpointStanding::Inside,
        Ok(ip) => EndpointStanding::Outside {
            address: ip.to_string(),
            country: space.country(ip),
        },
        Err(_) => EndpointStanding::HostName {
            host: host.to_string(),
        },
    }
}

/// What a StorageClass guarantees about where it provisions.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(
    tag = "guarantee",
    rename_all = "camelCase",
    rename_all_fields = "camelCase"
)]
pub enum ClassGuarantee {
    /// WaitForFirstConsumer: the volume follows the pod's placement.
    FollowsPod,
    /// Immediate, with allowedTopologies that are mainland only.
    Mainland,
    /// Immediate, without allowedTopologies: anywhere the provisioner likes.
    Anywhere,
    /// Immediate, with allowedTopologies that allow a place abroad or
    /// unknown.
    Topology { location: VolumeLocation },
}

/// A located PV and a judged StorageClass, kept in the index.
#[derive(Clone, Debug)]
pub struct LocatedVolume {
    /// Shared with the watch's projection: a rebuild copies no record.
    pub record: Arc<VolumeRecord>,
    pub location: VolumeLocation,
}

#[derive(Clone, Debug)]
pub struct JudgedClass {
    pub record: ClassRecord,
    pub guarantee: ClassGuarantee,
}

/// The storage objects of a snapshot, located and judged once when it is
/// built.
#[derive(Clone, Debug, Default)]
pub struct StorageIndex {
    volumes: BTreeMap<String, Arc<LocatedVolume>>,
    claims: BTreeMap<(String, String), Arc<ClaimRecord>>,
    classes: BTreeMap<String, Arc<JudgedClass>>,
    /// The default StorageClass: of several, the one the API server picks
    /// (the newest; here, the last by name, since creation times are not
    /// kept).
    default_class: Option<String>,
}

impl StorageIndex {
    pub fn build(
        volumes: Vec<Arc<VolumeRecord>>,
        claims: Vec<Arc<ClaimRecord>>,
        classes: Vec<ClassRecord>,
        catalogue: &Catalogue,
        inventory: Option<&NodeInventory>,
    ) -> StorageIndex {
        let volumes = volumes
            .into_iter()
            .map(|record| {
                let location = if record.terms.is_none()
                    && record.labels.is_empty()
                    && !record.endpoints.is_empty()
                {
                    // A remote volume without topology: its endpoints decide.
                    VolumeLocation::Mainland {
                        regions: Vec::new(),
                    }
                } else {
                    locate(
                        record.terms.as_deref(),
                        &record.labels,
                        catalogue,
                        inventory,
                    )
                };
                (
                    record.name.clone(),
                    Arc::new(LocatedVolume { record, location }),
                )
            })
            .collect();
        let default_class = classes
            .iter()
            .filter(|c| c.is_default)
            .map(|c| c.name.clone())
            .max();
        let classes = classes
            .into_iter()
            .map(|record| {
                let guarantee = match record.binding_mode {
                    BindingMode::WaitForFirstConsumer => ClassGuarantee::FollowsPod,
                    BindingMode::Immediate if record.allowed_topologies.is_empty() => {
                        ClassGuarantee::Anywhere
                    }
                    BindingMode::Immediate => {
                        match locate(Some(&record.allowed_topologies), &[], catalogue, inventory) {
                            VolumeLocation::Mainland { .. } => ClassGuarantee::Mainland,
                            location => ClassGuarantee::Topology { location },
                        }
                    }
                };
                (
                    record.name.clone(),
                    Arc::new(JudgedClass { record, guarantee }),
                )
            })
            .collect();
        let claims = claims
            .into_iter()
            .map(|c| ((c.namespace.clone(), c.name.clone()), c))
            .collect();
        StorageIndex {
            volumes,
            claims,
            classes,
            default_class,
        }
    }

    pub fn volume(&self, name: &str) -> Option<&LocatedVolume> {
        self.volumes.get(name).map(Arc::as_ref)
    }

    pub fn claim(&self, namespace: &str, name: &str) -> Option<&ClaimRecord> {
        self.claims
            .get(&(namespace.to_string(), name.to_string()))
            .map(Arc::as_ref)
    }

    pub fn class(&self, name: &str) -> Option<&JudgedClass> {
        self.classes.get(name).map(Arc::as_ref)
    }

    pub fn default_class(&self) -> Option<&str> {
        self.default_class.as_deref()
    }

    pub fn volumes(&self) -> impl Iterator<Item = &LocatedVolume> {
        self.volumes.values().map(Arc::as_ref)
    }

    pub fn claims(&self) -> impl Iterator<Item = &ClaimRecord> {
        self.claims.values().map(Arc::as_ref)
    }

    pub fn classes(&self) -> impl Iterator<Item = &JudgedClass> {
        self.classes.values().map(Arc::as_ref)
    }

    /// The claims a StatefulSet's claim template has made:
    /// `<template>-<statefulset>-<ordinal>` in its namespace.
    pub fn template_claims<'s>(
        &'s self,
        namespace: &str,
        template: &str,
        statefulset: &str,
    ) -> impl Iterator<Item = &'s ClaimRecord> + use<'s> {
        let template_len = template.len() + statefulset.len() + 2;
        let prefix = format!("{template}-{statefulset}-");
        let start = (namespace.to_string(), prefix.clone());
        let namespace = namespace.to_string();
        self.claims
            .range(start..)
            .take_while(move |((ns, name), _)| *ns == namespace && name.starts_with(&prefix))
            .filter(move |((_, name), _)| {
                let ordinal = name.get(template_len..).unwrap_or_default();
                !ordinal.is_empty() && ordinal.chars().all(|c| c.is_ascii_digit())
            })
            .map(|(_, c)| c.as_ref())
    }
}
