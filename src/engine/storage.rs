//! Storage: "the workload's data at rest stays in mainland China".
//!
//! Every volume of the pod template that stores data off the node is
//! judged: a claim bound (or pre-bound) to a PersistentVolume by where the
//! PV is; a claim not bound yet, an ephemeral volume's claim template and
//! a StatefulSet's claim templates by what their StorageClass guarantees;
//! NFS, iSCSI and Ceph servers (and those NFS and SMB CSI volumes name) by
//! their address; object stores, Azure Files and inline CSI drivers not
//! known cannot be located, and fail closed. emptyDir, configMap, secret,
//! downwardAPI and projected volumes (and the CSI drivers that only put
//! secrets or certificates on the node) stay on the pod's node, which
//! placement already judges. The facts are computed once per workload;
//! each governing policy that checks storage turns them into violations.
//! Reports ask for more (`storage_evidence`): every such volume with what
//! it resolves to and where, the findings on it and its posture.

use std::collections::BTreeSet;
use std::net::IpAddr;

use super::evidence::{
    EndpointEvidence, Evidence, StorageEvidence, StoragePosture, VolumeEvidence, VolumeFinding,
};
use super::messages::MessageContext;
use super::policy::CompiledPolicy;
use super::text::{Message, Text};
use super::verdict::{Code, Notice, Violation};
use super::volumes::{
    ClaimRecord, ClassGuarantee, CsiData, Endpoint, EndpointStanding, StorageIndex, TopologyOp,
    TopologyRequirement, UnlocatedStore, VolumeLocation, csi_data, endpoint, endpoint_host,
    judge_endpoint,
};
use super::workload::{ClaimTemplateView, VolumeView};
use super::{Snapshot, Workload, WorkloadKind};
use crate::api::StorageMode;

/// One storage fault, whichever policy objects.
struct Finding {
    code: Code,
    field: String,
    evidence: StorageEvidence,
    /// What is wrong, after "but ".
    what: Text,
    fix: Text,
}

/// Policy-independent storage facts about one workload.
#[derive(Default)]
pub(crate) struct Facts {
    findings: Vec<Finding>,
    notices: Vec<Notice>,
    /// Each volume resolved and judged, when asked for (reports):
    /// `storage_evidence`. Admission and the audit never ask.
    volumes: Option<Vec<VolumeEvidence>>,
}

/// Every volume of `workload` that keeps data off its node, resolved
/// (claim, PersistentVolume or StorageClass, servers) and judged by the
/// same check `evaluate` runs, with the findings on each and its posture.
/// For reports; policy-independent (whether a policy checks storage is
/// the caller's to say).
pub fn storage_evidence(workload: &Workload, snapshot: &Snapshot) -> Vec<VolumeEvidence> {
    Facts::judge(workload, snapshot, true)
        .volumes
        .unwrap_or_default()
}

impl Facts {
    pub(crate) fn new(workload: &Workload, snapshot: &Snapshot) -> Facts {
        Facts::judge(workload, snapshot, false)
    }

    /// `new`, keeping each volume's evidence as well (`take_volumes`).
    pub(crate) fn with_evidence(workload: &Workload, snapshot: &Snapshot) -> Facts {
        Facts::judge(workload, snapshot, true)
    }

    /// The evidence kept by `with_evidence`: what `storage_evidence` gives.
    pub(crate) fn take_volumes(&mut self) -> Option<Vec<VolumeEvidence>> {
        self.volumes.take()
    }

    fn judge(workload: &Workload, snapshot: &Snapshot, record: bool) -> Facts {
        let mut facts = Facts {
            volumes: record.then(Vec::new),
            ..Facts::default()
        };
        let volumes = workload.pod.volumes.as_deref().unwrap_or_default();
        if volumes.is_empty() && workload.claim_templates.is_empty() {
            return facts;
        }
        let judge = Judge {
            storage: snapshot.storage(),
            snapshot,
            namespace: &workload.namespace,
        };
        let prefix = workload.pod_spec_path();
        let template_names: BTreeSet<&str> =
            workload.claim_templates.iter().map(|t| t.name()).collect();
        for (i, v) in volumes.iter().enumerate() {
            let field = format!("{prefix}.volumes[{i}]");
            judge.volume(v, &field, &template_names, &mut facts);
        }
        if workload.kind == WorkloadKind::StatefulSet {
            for (j, t) in workload.claim_templates.iter().enumerate() {
                let field = format!("spec.volumeClaimTemplates[{j}]");
                judge.claim_template_of_statefulset(t, &workload.name, &field, &mut facts);
            }
        }
        facts
    }

    /// Notices (host names that cannot be placed offline), once per
    /// workload.
    pub(crate) fn take_notices(&mut self) -> Vec<Notice> {
        // One per server, however many replicas' claims name it.
        let mut seen = BTreeSet::new();
        let mut notices = std::mem::take(&mut self.notices);
        notices.retain(|n| seen.insert(n.message.en.clone()));
        notices
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.findings.is_empty()
    }

    fn recording(&self) -> bool {
        self.volumes.is_some()
    }

    /// Keep `entry` with the findings made since `start` (and `extra`, a
    /// finding judged but not kept: a StatefulSet's further claims with
    /// the same fault), and the posture they establish.
    fn record(&mut self, start: usize, extra: Option<&Finding>, mut entry: VolumeEvidence) {
        let Facts {
            findings, volumes, ..
        } = self;
        let Some(volumes) = volumes else { return };
        entry.findings = findings
            .get(start..)
            .unwrap_or_default()
            .iter()
            .chain(extra)
            .map(|f| VolumeFinding {
                code: f.code,
                reason: f.evidence.reason,
                field: f.field.clone(),
            })
            .collect();
        entry.posture = entry
            .findings
            .iter()
            .map(|f| StoragePosture::of_reason(f.reason))
            .max()
            .unwrap_or_else(|| {
                // No finding: mainland, unless a server is a host name,
                // which cannot be placed offline (a notice, not a finding).
                if entry.endpoints.iter().any(|e| e.standing == "hostName") {
                    StoragePosture::Unknown
                } else {
                    StoragePosture::Mainland
                }
            });
        volumes.push(entry);
    }
}

struct Judge<'s> {
    storage: &'s StorageIndex,
    snapshot: &'s Snapshot,
    namespace: &'s str,
}

/// Where a claim (or template) is judged from, for messages.
struct Origin<'a> {
    volume: &'a str,
    field: String,
    claim: Option<String>,
}

impl Judge<'_> {
    fn volume(
        &self,
        v: &VolumeView,
        field: &str,
        template_names: &BTreeSet<&str>,
        facts: &mut Facts,
    ) {
        if let Some(pvc) = &v.persistent_volume_claim {
            // A StatefulSet's claim template of the same name replaces it.
            if template_names.contains(v.name.as_str()) {
                return;
            }
            let origin = Origin {
                volume: &v.name,
                field: format!("{field}.persistentVolumeClaim.claimName"),
                claim: Some(format!("{}/{}", self.namespace, pvc.claim_name)),
            };
            let start = facts.findings.len();
            let claim = self.storage.claim(self.namespace, &pvc.claim_name);
            match claim {
                Some(claim) => {
                    if let Some(f) = self.claim(claim, &origin, facts) {
                        facts.findings.push(f);
                    }
                }
                None => facts.findings.push(claim_not_found(&origin)),
            }
            if facts.recording() {
                let entry = self.describe_claim(&origin, claim);
                facts.record(start, None, entry);
            }
            return;
        }
        if let Some(template) = v
            .ephemeral
            .as_ref()
            .and_then(|e| e.volume_claim_template.as_ref())
        {
            let origin = Origin {
                volume: &v.name,
                field: format!("{field}.ephemeral.volumeClaimTemplate.spec"),
                claim: None,
            };
            let start = facts.findings.len();
            if let Some(f) = self.template(template, &origin, facts) {
                facts.findings.push(f);
            }
            if facts.recording() {
                let entry = self.describe_template(&origin, template);
                facts.record(start, None, entry);
            }
            return;
        }
        let mut endpoints = Vec::new();
        if let Some(nfs) = &v.nfs {
            endpoints.push(endpoint("nfs.server", &nfs.server));
        }
        if let Some(iscsi) = &v.iscsi {
            endpoints.push(endpoint("iscsi.targetPortal", &iscsi.target_portal));
            for p in iscsi.portals.iter().flatten() {
                endpoints.push(endpoint("iscsi.portals", p));
            }
        }
        for (source, monitors) in [("cephfs", &v.cephfs), ("rbd", &v.rbd)] {
            for m in monitors.iter().flat_map(|m| &m.monitors) {
                endpoints.push(endpoint(&format!("{source}.monitors"), m));
            }
        }
        let mut unlocated = None;
        if let Some(csi) = &v.csi {
            match csi_data(&csi.driver, csi.volume_attributes.as_ref()) {
                CsiData::Server(e) => endpoints.push(e),
                CsiData::OnNode => {}
                CsiData::Unlocated(u) => unlocated = Some(u),
                CsiData::UnknownDriver => {
                    unlocated = Some(UnlocatedStore::unknown_driver(&csi.driver));
                }
            }
        }
        if v.azure_file.is_some() {
            unlocated = Some(UnlocatedStore::azure_file());
        }
        let start = facts.findings.len();
        if let Some(u) = &unlocated {
            let origin = Origin {
                volume: &v.name,
                field: format!("{field}.{}", u.field),
                claim: None,
            };
            facts.findings.push(unlocated_store(u, &origin, None));
        }
        for e in &endpoints {
            let origin = Origin {
                volume: &v.name,
                field: format!("{field}.{}", e.field),
                claim: None,
            };
            self.endpoint(&e.server, &origin, None, facts);
        }
        if facts.recording() && (unlocated.is_some() || !endpoints.is_empty()) {
            let origin = Origin {
                volume: &v.name,
                field: field.to_string(),
                claim: None,
            };
            let mut entry = blank(&origin, "inline");
            entry.endpoints = endpoints
                .iter()
                .map(|e| self.endpoint_evidence(e))
                .collect();
            entry.driver = v.csi.as_ref().map(|c| c.driver.clone());
            if let Some(u) = &unlocated {
                describe_unlocated(&mut entry, u);
            }
            facts.record(start, None, entry);
        }
    }

    fn claim_template_of_statefulset(
        &self,
        t: &ClaimTemplateView,
        statefulset: &str,
        field: &str,
        facts: &mut Facts,
    ) {
        // The claims it has made, each judged on its own...
        let mut first: Option<Finding> = None;
        let mut more = 0;
        for claim in self
            .storage
            .template_claims(self.namespace, t.name(), statefulset)
        {
            let origin = Origin {
                volume: t.name(),
                field: field.to_string(),
                claim: Some(format!("{}/{}", claim.namespace, claim.name)),
            };
            let start = facts.findings.len();
            let finding = self.claim(claim, &origin, facts);
            if facts.recording() {
                let entry = self.describe_claim(&origin, Some(claim));
                facts.record(start, finding.as_ref(), entry);
            }
            if let Some(f) = finding {
                match first {
                    None => first = Some(f),
                    Some(_) => more += 1,
                }
            }
        }
        if let Some(mut f) = first {
            f.evidence.more_claims = more;
            facts.findings.push(f);
        }
        // ...and the claims it will make for new replicas.
        let origin = Origin {
            volume: t.name(),
            field: format!("{field}.spec"),
            claim: None,
        };
        let start = facts.findings.len();
        let finding = self.template(t, &origin, facts);
        if facts.recording() {
            let entry = self.describe_template(&origin, t);
            facts.record(start, finding.as_ref(), entry);
        }
        if let Some(f) = finding {
            facts.findings.push(f);
        }
    }

    // --- evidence for reports: what each volume resolves to ------------
    // The same lookups the judgement above makes, kept for the record.

    fn describe_claim(&self, origin: &Origin<'_>, claim: Option<&ClaimRecord>) -> VolumeEvidence {
        let mut e = blank(origin, "claim");
        if let Some(c) = claim {
            match &c.volume_name {
                Some(pv) => self.describe_volume(&mut e, pv, c.storage_class.as_deref()),
                None => self.describe_class(&mut e, c.storage_class.as_deref()),
            }
        }
        e
    }

    fn describe_template(&self, origin: &Origin<'_>, t: &ClaimTemplateView) -> VolumeEvidence {
        let mut e = blank(origin, "claimTemplate");
        match t.volume_name() {
            Some(pv) => self.describe_volume(&mut e, pv, t.storage_class()),
            None => self.describe_class(&mut e, t.storage_class()),
        }
        e
    }

    /// A claim bound (or pre-bound) to PersistentVolume `name`.
    fn describe_volume(&self, e: &mut VolumeEvidence, name: &str, class: Option<&str>) {
        e.persistent_volume = Some(name.to_string());
        e.storage_class = class.map(str::to_string);
        let Some(pv) = self.storage.volume(name) else {
            return;
        };
        let record = &pv.record;
        if e.storage_class.is_none() {
            e.storage_class = record.storage_class.clone();
        }
        if let Some(c) = e
            .storage_class
            .as_deref()
            .filter(|c| !c.is_empty())
            .and_then(|c| self.storage.class(c))
        {
            e.binding_mode = Some(c.record.binding_mode);
            e.provisioner = Some(c.record.provisioner.clone());
        }
        e.topology = record
            .labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .chain(record.terms.iter().flatten().map(|t| terms_text(t)))
            .collect();
        e.endpoints = record
            .endpoints
            .iter()
            .map(|x| self.endpoint_evidence(x))
            .collect();
        match &record.unlocated {
            Some(u) => describe_unlocated(e, u),
            // A remote volume without topology: its servers say where.
            None if record.terms.is_none()
                && record.labels.is_empty()
                && !record.endpoints.is_empty() => {}
            None => e.location = Some(pv.location.clone()),
        }
    }

    /// A claim not bound yet: the class that will provision it.
    fn describe_class(&self, e: &mut VolumeEvidence, class: Option<&str>) {
        let name = match class {
            Some(n) => n,
            None => match self.storage.default_class() {
                Some(d) => {
                    e.default_class = true;
                    d
                }
                None => return,
            },
        };
        e.storage_class = Some(name.to_string());
        let Some(c) = self.storage.class(name).filter(|_| !name.is_empty()) else {
            return;
        };
        e.binding_mode = Some(c.record.binding_mode);
        e.provisioner = Some(c.record.provisioner.clone());
        e.topology = c
            .record
            .allowed_topologies
            .iter()
            .map(|t| terms_text(t))
            .collect();
        if let ClassGuarantee::Topology { location } = &c.guarantee {
            e.location = Some(location.clone());
        }
        e.class_guarantee = Some(c.guarantee.clone());
    }

    fn endpoint_evidence(&self, e: &Endpoint) -> EndpointEvidence {
        let space = &self.snapshot.address_space;
        let (standing, address, country) = match judge_endpoint(&e.server, space) {
            EndpointStanding::Inside => {
                let ip = endpoint_host(&e.server).parse::<IpAddr>().ok();
                match ip {
                    Some(ip) if space.cluster.contains(ip) => ("cluster", Some(ip), None),
                    ip => ("mainland", ip, Some("CN".to_string())),
                }
            }
            EndpointStanding::Outside { address, country } => {
                ("outside", address.parse().ok(), country)
            }
            EndpointStanding::HostName { .. } => ("hostName", None, None),
        };
        EndpointEvidence {
            field: e.field.clone(),
            server: e.server.clone(),
            standing,
            address: address.map(|a| a.to_string()),
            country,
        }
    }

    fn claim(
        &self,
        claim: &ClaimRecord,
        origin: &Origin<'_>,
        facts: &mut Facts,
    ) -> Option<Finding> {
        match &claim.volume_name {
            Some(pv) => self.persistent_volume(pv, claim.storage_class.as_deref(), origin, facts),
            None => self.class(
                claim.storage_class.as_deref(),
                origin,
                "spec.storageClassName",
            ),
        }
    }

    fn template(
        &self,
        t: &ClaimTemplateView,
        origin: &Origin<'_>,
        facts: &mut Facts,
    ) -> Option<Finding> {
        match t.volume_name() {
            Some(pv) => self.persistent_volume(pv, t.storage_class(), origin, facts),
            None => {
                let origin = Origin {
                    volume: origin.volume,
                    field: format!("{}.storageClassName", origin.field),
                    claim: origin.claim.clone(),
                };
                self.class(t.storage_class(), &origin, "storageClassName")
            }
        }
    }

    fn persistent_volume(
        &self,
        name: &str,
        class: Option<&str>,
        origin: &Origin<'_>,
        facts: &mut Facts,
    ) -> Option<Finding> {
        let claim_en = claim_en(origin);
        let claim_zh = claim_zh(origin);
        let Some(pv) = self.storage.volume(name) else {
            return Some(Finding {
                code: Code::VolumeOutsideMainland,
                field: origin.field.clone(),
                evidence: evidence(origin, "volumeUnknown", Some(name), class, None),
                what: Text {
                    en: format!(
                        "{claim_en} is bound to PersistentVolume {name}, which is not known, so where its data is stored cannot be established"
                    ),
                    zh: format!(
                        "{claim_zh}绑定到未知的 PersistentVolume {name}，无法确定其数据的存储位置"
                    ),
                },
                fix: Text {
                    en: format!(
                        "make PersistentVolume {name} known (include it in the input) with a mainland region or zone in its labels or spec.nodeAffinity"
                    ),
                    zh: format!(
                        "提供 PersistentVolume {name}（将其加入输入），并在其标签或 spec.nodeAffinity 中注明中国大陆的地域或可用区"
                    ),
                },
            });
        };
        for e in &pv.record.endpoints {
            let origin = Origin {
                volume: origin.volume,
                field: origin.field.clone(),
                claim: origin.claim.clone(),
            };
            self.endpoint(&e.server, &origin, Some((name, &e.field)), facts);
        }
        // An object store or a managed share: its topology says where
        // nodes may mount it, not where the data is.
        if let Some(u) = &pv.record.unlocated {
            let mut f = unlocated_store(u, origin, Some(name));
            f.evidence.storage_class = class.map(str::to_string);
            return Some(f);
        }
        if pv.location.is_mainland() {
            return None;
        }
        let outside = matches!(pv.location, VolumeLocation::Outside { .. });
        let (en_where, zh_where) = (pv.location.describe_en(), pv.location.describe_zh());
        let (bind_en, bind_zh) = match &origin.claim {
            Some(c) => (format!("claim {c}"), format!("声明 {c}")),
            None => ("the claim".to_string(), "该声明".to_string()),
        };
        let fix = if outside {
            Text {
                en: format!(
                    "move the data to a PersistentVolume in a mainland-China region or zone (e.g. topology.kubernetes.io/zone=cn-north-1a) and bind {bind_en} to it, or recreate the claim with a StorageClass that provisions in mainland China; a PersistentVolume's topology cannot be changed in place"
                ),
                zh: format!(
                    "将数据迁移到位于中国大陆地域或可用区（例如 topology.kubernetes.io/zone=cn-north-1a）的 PersistentVolume 并将{bind_zh}绑定到它，或使用在中国大陆制备卷的 StorageClass 重新创建该声明；PersistentVolume 的拓扑无法原地修改"
                ),
            }
        } else {
            Text {
                en: format!(
                    "record where PersistentVolume {name} is: a mainland region or zone in its topology.kubernetes.io/region or /zone label or spec.nodeAffinity; if its zone is mainland but not in the jurisdiction catalogue, add it (--catalogue, with a source)"
                ),
                zh: format!(
                    "注明 PersistentVolume {name} 的位置：在其 topology.kubernetes.io/region 或 /zone 标签或 spec.nodeAffinity 中写明中国大陆的地域或可用区；若其可用区位于中国大陆但不在管辖区目录中，请添加（--catalogue，并注明来源）"
                ),
            }
        };
        let mut ev = evidence(
            origin,
            if outside {
                "boundOutside"
            } else {
                "volumeUnknown"
            },
            Some(name),
            class,
            None,
        );
        ev.location = Some(pv.location.clone());
        Some(Finding {
            code: Code::VolumeOutsideMainland,
            field: origin.field.clone(),
            evidence: ev,
            what: Text {
                en: format!("{claim_en} is bound to PersistentVolume {name}, which is {en_where}"),
                zh: format!("{claim_zh}绑定到 PersistentVolume {name}，该卷{zh_where}"),
            },
            fix,
        })
    }

    /// A claim not bound yet (or a template): where its StorageClass
    /// provisions. `class_field` is the claim's field naming the class.
    fn class(
        &self,
        class: Option<&str>,
        origin: &Origin<'_>,
        class_field: &str,
    ) -> Option<Finding> {
        let claim_en = claim_en(origin);
        let claim_zh = claim_zh(origin);
        let good = "a StorageClass with volumeBindingMode: WaitForFirstConsumer (the volume then follows the pod's mainland placement) or with allowedTopologies limited to mainland regions or zones";
        let good_zh = "volumeBindingMode 为 WaitForFirstConsumer（卷随 Pod 的中国大陆调度位置制备）或 allowedTopologies 仅限中国大陆地域或可用区的 StorageClass";
        let name = match class {
            None => match self.storage.default_class() {
                Some(d) => d,
                None => {
                    return Some(Finding {
                        code: Code::VolumeNotGuaranteed,
                        field: origin.field.clone(),
                        evidence: evidence(origin, "noDefaultClass", None, None, None),
                        what: Text {
                            en: format!(
                                "{claim_en} names no StorageClass and there is no default StorageClass, so it will take whichever class becomes the default, wherever that provisions"
                            ),
                            zh: format!(
                                "{claim_zh}未指定 StorageClass，且不存在默认 StorageClass，因此它将使用之后成为默认的任意类，无论其在何处制备卷"
                            ),
                        },
                        fix: Text {
                            en: format!("set {class_field} to {good}"),
                            zh: format!("将 {class_field} 设置为{good_zh}"),
                        },
                    });
                }
            },
            Some("") => {
                return Some(Finding {
                    code: Code::VolumeNotGuaranteed,
                    field: origin.field.clone(),
                    evidence: evidence(origin, "preProvisioned", None, Some(""), None),
                    what: Text {
                        en: format!(
                            "{claim_en} has storageClassName \"\" and no volumeName, so it binds to whichever pre-provisioned PersistentVolume without a class fits, wherever that is"
                        ),
                        zh: format!(
                            "{claim_zh}的 storageClassName 为 \"\" 且未指定 volumeName，因此会绑定到任意一个合适的无类别预制 PersistentVolume，无论其位于何处"
                        ),
                    },
                    fix: Text {
                        en: format!(
                            "set volumeName to a PersistentVolume in mainland China, or set {class_field} to {good}"
                        ),
                        zh: format!(
                            "将 volumeName 设置为位于中国大陆的 PersistentVolume，或将 {class_field} 设置为{good_zh}"
                        ),
                    },
                });
            }
            Some(n) => n,
        };
        let defaulted = if class.is_none() {
            (" (the default)", "（默认类）")
        } else {
            ("", "")
        };
        let Some(judged) = self.storage.class(name) else {
            return Some(Finding {
                code: Code::VolumeNotGuaranteed,
                field: origin.field.clone(),
                evidence: evidence(origin, "classUnknown", None, Some(name), None),
                what: Text {
                    en: format!(
                        "{claim_en} uses StorageClass {name}, which is not known, so where it provisions cannot be established"
                    ),
                    zh: format!("{claim_zh}使用未知的 StorageClass {name}，无法确定其在何处制备卷"),
                },
                fix: Text {
                    en: format!(
                        "make StorageClass {name} known (include it in the input), or set {class_field} to {good}"
                    ),
                    zh: format!(
                        "提供 StorageClass {name}（将其加入输入），或将 {class_field} 设置为{good_zh}"
                    ),
                },
            });
        };
        let fix_class = Text {
            en: format!(
                "create a StorageClass with volumeBindingMode: WaitForFirstConsumer (the volume then follows the pod's mainland placement) or with allowedTopologies limited to mainland China, e.g. topology.kubernetes.io/region values [cn-north-1, cn-northwest-1], and set {class_field} to it (volumeBindingMode and allowedTopologies of StorageClass {name} cannot be changed in place)"
            ),
            zh: format!(
                "创建 volumeBindingMode 为 WaitForFirstConsumer（卷随 Pod 的中国大陆调度位置制备）或 allowedTopologies 仅限中国大陆（例如 topology.kubernetes.io/region 取值 [cn-north-1, cn-northwest-1]）的 StorageClass，并将 {class_field} 设置为它（StorageClass {name} 的 volumeBindingMode 和 allowedTopologies 无法原地修改）"
            ),
        };
        match &judged.guarantee {
            ClassGuarantee::FollowsPod | ClassGuarantee::Mainland => None,
            ClassGuarantee::Anywhere => Some(Finding {
                code: Code::VolumeNotGuaranteed,
                field: origin.field.clone(),
                evidence: evidence(origin, "provisionedAnywhere", None, Some(name), None),
                what: Text {
                    en: format!(
                        "{claim_en} uses StorageClass {name}{}, which binds Immediately and has no allowedTopologies, so its volume is provisioned wherever the provisioner {} chooses, before any pod is placed",
                        defaulted.0, judged.record.provisioner
                    ),
                    zh: format!(
                        "{claim_zh}使用 StorageClass {name}{}，该类为 Immediate 绑定且没有 allowedTopologies，因此卷在 Pod 调度之前即由制备器 {} 在任意位置制备",
                        defaulted.1, judged.record.provisioner
                    ),
                },
                fix: fix_class,
            }),
            ClassGuarantee::Topology { location } => {
                let mut ev = evidence(origin, "topologyOutside", None, Some(name), None);
                ev.location = Some(location.clone());
                Some(Finding {
                    code: Code::VolumeNotGuaranteed,
                    field: origin.field.clone(),
                    evidence: ev,
                    what: Text {
                        en: format!(
                            "{claim_en} uses StorageClass {name}{}, which binds Immediately and whose allowedTopologies allow a volume {}",
                            defaulted.0,
                            location.describe_en()
                        ),
                        zh: format!(
                            "{claim_zh}使用 StorageClass {name}{}，该类为 Immediate 绑定，其 allowedTopologies 允许卷{}",
                            defaulted.1,
                            location.describe_zh()
                        ),
                    },
                    fix: fix_class,
                })
            }
        }
    }

    /// A remote server: outside mainland-China address space is a
    /// finding; a host name a notice.
    fn endpoint(
        &self,
        server: &str,
        origin: &Origin<'_>,
        pv: Option<(&str, &str)>,
        facts: &mut Facts,
    ) {
        let field = match pv {
            Some((_, f)) => f.to_string(),
            None => origin
                .field
                .rsplit_once(".volumes[")
                .and_then(|(_, rest)| rest.split_once("].").map(|(_, f)| f.to_string()))
                .unwrap_or_default(),
        };
        let (en_of, zh_of) = match pv {
            Some((name, _)) => (
                format!("PersistentVolume {name}'s {field}"),
                format!("PersistentVolume {name} 的 {field}"),
            ),
            None => (
                format!("volume {}'s {field}", origin.volume),
                format!("卷 {} 的 {field}", origin.volume),
            ),
        };
        match judge_endpoint(server, &self.snapshot.address_space) {
            EndpointStanding::Inside => {}
            EndpointStanding::HostName { host } => facts.notices.push(Notice {
                code: "StorageEndpointUnverified",
                policy: None,
                message: Text {
                    en: format!(
                        "{en_of} is the host name {host}; where it resolves cannot be verified offline, so check it is inside mainland China"
                    ),
                    zh: format!("{zh_of} 是主机名 {host}，无法离线核实其解析地址，请确认其位于中国大陆境内"),
                },
            }),
            EndpointStanding::Outside { address, country } => {
                let mut ev = evidence(origin, "endpointOutside", pv.map(|p| p.0), None, Some(server));
                ev.country = country.clone();
                let country_en = country
                    .as_deref()
                    .map(|c| format!(" ({c})"))
                    .unwrap_or_default();
                let country_zh = country
                    .as_deref()
                    .map(|c| format!("（{c}）"))
                    .unwrap_or_default();
                facts.findings.push(Finding {
                    code: Code::StorageEndpointOutside,
                    field: origin.field.clone(),
                    evidence: ev,
                    what: Text {
                        en: format!(
                            "{en_of} is {server}: address {address}{country_en} is outside mainland-China address space, so the data is stored abroad"
                        ),
                        zh: format!(
                            "{zh_of} 为 {server}：地址 {address}{country_zh} 不在中国大陆地址空间内，数据将存储在境外"
                        ),
                    },
                    fix: Text {
                        en: "use a storage server inside mainland China; if the address is one of the cluster's own networks (a private range), declare it as a cluster CIDR (--cluster-cidr)".to_string(),
                        zh: "使用位于中国大陆境内的存储服务器；若该地址属于集群自身网络（私有地址段），请将其声明为集群 CIDR（--cluster-cidr）".to_string(),
                    },
                });
            }
        }
    }
}

fn claim_en(origin: &Origin<'_>) -> String {
    match &origin.claim {
        Some(c) => format!("volume {} (claim {c})", origin.volume),
        None => format!("volume {}", origin.volume),
    }
}

fn claim_zh(origin: &Origin<'_>) -> String {
    match &origin.claim {
        Some(c) => format!("卷 {}（声明 {c}）", origin.volume),
        None => format!("卷 {}", origin.volume),
    }
}

/// A volume's record before it is resolved.
fn blank(origin: &Origin<'_>, source: &'static str) -> VolumeEvidence {
    VolumeEvidence {
        volume: origin.volume.to_string(),
        field: origin.field.clone(),
        source,
        claim: origin.claim.clone(),
        persistent_volume: None,
        storage_class: None,
        default_class: false,
        binding_mode: None,
        provisioner: None,
        class_guarantee: None,
        topology: Vec::new(),
        location: None,
        endpoints: Vec::new(),
        driver: None,
        store: None,
        posture: StoragePosture::None,
        findings: Vec::new(),
    }
}

fn describe_unlocated(e: &mut VolumeEvidence, u: &UnlocatedStore) {
    e.driver = Some(u.driver.clone());
    if u.reason == "objectStore" {
        e.store = Some(u.store.to_string());
    }
}

/// One topology term as written: `key In [a, b] AND key2 Exists`.
fn terms_text(term: &[TopologyRequirement]) -> String {
    term.iter()
        .map(|r| match r.op {
            TopologyOp::In | TopologyOp::NotIn => {
                format!("{} {:?} [{}]", r.key, r.op, r.values.join(", "))
            }
            TopologyOp::Exists | TopologyOp::DoesNotExist => format!("{} {:?}", r.key, r.op),
        })
        .collect::<Vec<_>>()
        .join(" AND ")
}

fn evidence(
    origin: &Origin<'_>,
    reason: &'static str,
    pv: Option<&str>,
    class: Option<&str>,
    endpoint: Option<&str>,
) -> StorageEvidence {
    StorageEvidence {
        volume: origin.volume.to_string(),
        reason,
        claim: origin.claim.clone(),
        persistent_volume: pv.map(str::to_string),
        storage_class: class.map(str::to_string),
        location: None,
        endpoint: endpoint.map(str::to_string),
        driver: None,
        country: None,
        more_claims: 0,
    }
}

/// A volume whose store cannot be located (an object store, Azure Files, an
/// inline CSI driver not known, a server-naming CSI volume naming none),
/// inline or through PersistentVolume `pv`.
fn unlocated_store(u: &UnlocatedStore, origin: &Origin<'_>, pv: Option<&str>) -> Finding {
    let driver = &u.driver;
    let (of_en, of_zh) = match pv {
        Some(pv) => (
            format!(
                "{} is bound to PersistentVolume {pv}, which",
                claim_en(origin)
            ),
            format!("{}绑定到 PersistentVolume {pv}，该卷", claim_zh(origin)),
        ),
        None => (
            format!("{} (field {})", claim_en(origin), origin.field),
            format!("{}（字段 {}）", claim_zh(origin), origin.field),
        ),
    };
    let exempt_en = "if the data is known to stay in mainland China, record that approval as an exemption in the policy (spec.exemptions)";
    let exempt_zh = "若已确认数据留存在中国大陆境内，请在策略中以豁免记录该批准（spec.exemptions）";
    let (what, fix) = match u.reason {
        "objectStore" => (
            Text {
                en: format!(
                    "{of_en} uses {} (driver {driver}): it names a bucket, account or share, not a place, and where that store keeps the data cannot be established from the cluster",
                    u.store
                ),
                zh: format!(
                    "{of_zh}使用 {}（驱动 {driver}）：它指定的是存储桶、账户或共享，而非位置，无法从集群确定该存储将数据保存在何处",
                    u.store
                ),
            },
            Text {
                en: format!(
                    "keep the data on storage whose location the cluster can establish (a PersistentVolumeClaim whose StorageClass provisions in mainland China, or an NFS or SMB server at a mainland address); {exempt_en}"
                ),
                zh: format!(
                    "将数据保存在集群可确定位置的存储上（其 StorageClass 在中国大陆制备卷的 PersistentVolumeClaim，或位于中国大陆地址的 NFS 或 SMB 服务器）；{exempt_zh}"
                ),
            },
        ),
        "csiNoServer" => (
            Text {
                en: format!(
                    "{of_en} uses CSI driver {driver} without a server in csi.volumeAttributes.{}, so the server holding its data is not named",
                    u.store
                ),
                zh: format!(
                    "{of_zh}使用 CSI 驱动 {driver}，但 csi.volumeAttributes.{} 中未指定服务器，无法确定保存数据的服务器",
                    u.store
                ),
            },
            Text {
                en: format!(
                    "name the server in csi.volumeAttributes.{}, at an address in mainland China",
                    u.store
                ),
                zh: format!(
                    "在 csi.volumeAttributes.{} 中指定位于中国大陆地址的服务器",
                    u.store
                ),
            },
        ),
        _ => (
            Text {
                en: format!(
                    "{of_en} is an inline CSI volume of driver {driver}, which this check does not know, so where it stores the data cannot be established"
                ),
                zh: format!(
                    "{of_zh}是驱动 {driver} 的内联 CSI 卷，本检查不认识该驱动，无法确定其数据存储在何处"
                ),
            },
            Text {
                en: format!(
                    "use a PersistentVolumeClaim whose PersistentVolume or StorageClass places the data in mainland China; {exempt_en}"
                ),
                zh: format!(
                    "改用其 PersistentVolume 或 StorageClass 将数据置于中国大陆的 PersistentVolumeClaim；{exempt_zh}"
                ),
            },
        ),
    };
    let mut ev = evidence(origin, u.reason, pv, None, None);
    ev.driver = Some(driver.clone());
    Finding {
        code: Code::VolumeNotGuaranteed,
        field: origin.field.clone(),
        evidence: ev,
        what,
        fix,
    }
}

fn claim_not_found(origin: &Origin<'_>) -> Finding {
    let claim = origin.claim.clone().unwrap_or_default();
    Finding {
        code: Code::VolumeNotGuaranteed,
        field: origin.field.clone(),
        evidence: evidence(origin, "claimNotFound", None, None, None),
        what: Text {
            en: format!(
                "volume {} uses PersistentVolumeClaim {claim}, which is not known, so where its data is stored cannot be established",
                origin.volume
            ),
            zh: format!(
                "卷 {} 使用未知的 PersistentVolumeClaim {claim}，无法确定其数据的存储位置",
                origin.volume
            ),
        },
        fix: Text {
            en: format!(
                "create PersistentVolumeClaim {claim} before the workload (or include it in the input) so its storage can be judged"
            ),
            zh: format!(
                "在工作负载之前创建 PersistentVolumeClaim {claim}（或将其加入输入），以便判定其存储位置"
            ),
        },
    }
}

pub(crate) fn check(
    facts: &Facts,
    policy: &CompiledPolicy,
    ctx: &MessageContext<'_>,
) -> Vec<Violation> {
    if policy.storage_mode == StorageMode::Unchecked {
        return Vec::new();
    }
    facts
        .findings
        .iter()
        .map(|f| Violation {
            code: f.code,
            field: f.field.clone(),
            evidence: Evidence::Storage(f.evidence.clone()),
            message: if ctx.langs.any() {
                let subject = ctx.subject();
                Message {
                    problem: Text {
                        en: format!(
                            "{}, but {}; policy {} requires its data at rest to stay in mainland China.",
                            subject.en, f.what.en, ctx.policy
                        ),
                        zh: format!(
                            "{}，但{}；策略 {} 要求其静态数据留存在中国大陆境内。",
                            subject.zh, f.what.zh, ctx.policy
                        ),
                    },
                    fix: f.fix.clone(),
                }
            } else {
                Message::default()
            },
            exempted: false,
        })
        .collect()
}
