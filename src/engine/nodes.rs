//! Node trust: where is a node, and how sure are we?
//!
//! Region labels are self-asserted by kubelets, so a node counts as mainland
//! only when its region label is a mainland region in the catalogue and its
//! `spec.providerID` (set at registration, checked by the cloud controller)
//! does not contradict it. Anything missing, unknown or contradictory fails
//! closed, and the reason travels into the message.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Node;
use serde::{Deserialize, Serialize};

use super::catalogue::{Catalogue, Jurisdiction, RegionEntry, RegionLookup};
use super::selector::NodeLabels;
use super::text::Lang;

pub const REGION_LABEL: &str = "topology.kubernetes.io/region";
pub const LEGACY_REGION_LABEL: &str = "failure-domain.beta.kubernetes.io/region";

/// The part of a Node the engine reads.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeInfo {
    pub name: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_id: Option<String>,
}

impl NodeInfo {
    pub fn from_node(node: &Node) -> Self {
        NodeInfo {
            name: node.metadata.name.clone().unwrap_or_default(),
            labels: node.metadata.labels.clone().unwrap_or_default(),
            provider_id: node.spec.as_ref().and_then(|s| s.provider_id.clone()),
        }
    }

    /// The node as selectors see it: its name and labels.
    pub fn selector_view(&self) -> NodeLabels<'_> {
        NodeLabels {
            name: &self.name,
            labels: &self.labels,
        }
    }

    /// The region the node claims: the GA label, else the legacy one.
    pub fn region_label(&self) -> Option<&str> {
        self.labels
            .get(REGION_LABEL)
            .or_else(|| self.labels.get(LEGACY_REGION_LABEL))
            .map(String::as_str)
    }
}

/// Where a node's `spec.providerID` says it is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub(crate) struct ProviderLocation<'c> {
    pub provider: &'c str,
    /// Spellings of the derived region (Tencent nodes carry `gz` where the
    /// API says `ap-guangzhou`); empty when the format carries no region.
    pub regions: Vec<String>,
}

impl<'c> ProviderLocation<'c> {
    fn new(provider: &'c str, region: Option<String>) -> Self {
        ProviderLocation {
            provider,
            regions: region.into_iter().collect(),
        }
    }

    pub(crate) fn region(&self) -> Option<&str> {
        self.regions.first().map(String::as_str)
    }
}

/// Tencent TKE providerIDs carry a numeric zone ID; zone / 1000 is the
/// region. Source: data/provider-ids.md (cluster-autoscaler's Tencent
/// provider and TKE node captures). Both spellings of each region.
const TENCENT_ZONE_PREFIXES: [(u64, [&str; 2]); 10] = [
    (100, ["ap-guangzhou", "gz"]),
    (110, ["ap-shenzhen-fsi", "szjr"]),
    (160, ["ap-chengdu", "cd"]),
    (190, ["ap-chongqing", "cq"]),
    (200, ["ap-shanghai", "sh"]),
    (300, ["ap-hongkong", "hk"]),
    (330, ["ap-nanjing", "nj"]),
    (460, ["ap-beijing-fsi", "bjjr"]),
    (700, ["ap-shanghai-fsi", "shjr"]),
    (800, ["ap-beijing", "bj"]),
];

/// Parse the providerID formats that carry a provider and, where possible, a
/// region. See data/provider-ids.md for the formats and their sources.
pub(crate) fn parse_provider_id<'c>(
    id: &str,
    catalogue: &'c Catalogue,
) -> Option<ProviderLocation<'c>> {
    if let Some(rest) = id.strip_prefix("aws://") {
        // aws:///<zone>/<instance-id> (also Fargate: aws:///<zone>/<hash>/fargate-ip-...).
        let zone = rest
            .trim_start_matches('/')
            .split('/')
            .next()
            .unwrap_or_default();
        return Some(ProviderLocation::new("aws", region_of_aws_zone(zone)));
    }
    if let Some(rest) = id.strip_prefix("gce://") {
        // gce://<project>/<zone>/<name>, zone = <region>-<letter>.
        let zone = rest.split('/').nth(1).unwrap_or_default();
        let region = zone.rsplit_once('-').map(|(r, _)| r.to_string());
        return Some(ProviderLocation::new(
            "gcp",
            region.filter(|r| !r.is_empty()),
        ));
    }
    if let Some(rest) = id.strip_prefix("azure://") {
        // AKS node resource groups default to MC_<group>_<cluster>_<location>;
        // a renamed group simply yields no region.
        let lower = rest.to_ascii_lowercase();
        let region = lower
            .split('/')
            .skip_while(|seg| *seg != "resourcegroups")
            .nth(1)
            .filter(|rg| rg.starts_with("mc_"))
            .and_then(|rg| rg.rsplit('_').next())
            .filter(|r| !r.is_empty())
            .map(str::to_string);
        return Some(ProviderLocation::new("azure", region));
    }
    if let Some(rest) = id.strip_prefix("qcloud://") {
        let zone_id = rest
            .trim_start_matches('/')
            .split('/')
            .next()
            .unwrap_or_default();
        let regions = zone_id
            .parse::<u64>()
            .ok()
            .and_then(|z| TENCENT_ZONE_PREFIXES.iter().find(|(p, _)| *p == z / 1000))
            .map(|(_, names)| names.iter().map(|n| n.to_string()).collect())
            .unwrap_or_default();
        return Some(ProviderLocation {
            provider: "tencent",
            regions,
        });
    }
    if id.starts_with("huaweicloud://") {
        return Some(ProviderLocation::new("huawei", None));
    }
    if id.starts_with("cce://") {
        // Baidu AI Cloud CCE (not Huawei's CCE).
        return Some(ProviderLocation::new("baidu", None));
    }
    // Alibaba ACK: [alicloud://]<region>.<instance-id>, e.g. cn-hangzhou.i-bp1abc.
    // Only trusted when the prefix is an Alibaba region we know, so arbitrary
    // dotted IDs are not misread.
    let ali = id.strip_prefix("alicloud://").unwrap_or(id);
    if !ali.contains("://")
        && let Some((region, instance)) = ali.split_once('.')
        && !instance.is_empty()
        && catalogue.provider_has_region("alibaba", region)
    {
        return Some(ProviderLocation::new("alibaba", Some(region.to_string())));
    }
    // Providers the catalogue describes by a providerID template
    // (data/jurisdictions.yaml `providers:`), e.g. Volcano Engine's
    // volcengine://<instance> or UCloud's UCloud://<zone>//<node>.
    catalogue
        .locate_provider_id(id)
        .map(|(provider, region)| ProviderLocation::new(provider, region.map(str::to_string)))
}

/// The region of an AWS zone: `cn-north-1a` and the local zone
/// `cn-north-1-pkx-1a` both give `cn-north-1` (the parts up to the first one
/// that starts with a digit, keeping that part's digits).
fn region_of_aws_zone(zone: &str) -> Option<String> {
    let parts: Vec<&str> = zone.split('-').collect();
    let idx = parts
        .iter()
        .position(|p| p.starts_with(|c: char| c.is_ascii_digit()))?;
    if idx < 2 {
        return None;
    }
    let digits: String = parts[idx]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    Some(format!("{}-{digits}", parts[..idx].join("-")))
}

/// Why a node cannot be trusted to be in mainland China.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(
    tag = "reason",
    rename_all = "camelCase",
    rename_all_fields = "camelCase"
)]
pub enum Untrusted {
    /// No region label; `hint` is what the providerID suggests, if anything.
    MissingRegion { hint: Option<String> },
    /// The region label is not in the jurisdiction catalogue.
    UnknownRegion { region: String },
    /// The GA and legacy region labels disagree.
    LabelsDisagree { label: String, legacy: String },
    /// The providerID places the node in another region than its label.
    ProviderIdContradicts {
        region: String,
        provider: String,
        provider_region: String,
    },
    /// The providerID's cloud does not have the labelled region.
    RegionNotOfProvider { region: String, provider: String },
    /// Providers disagree on this region code and the provider is unknown.
    AmbiguousRegion { region: String },
}

/// Where a node is, as far as the engine can tell without any policy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(
    tag = "standing",
    rename_all = "camelCase",
    rename_all_fields = "camelCase"
)]
pub enum NodeStanding {
    Mainland {
        region: String,
    },
    Outside {
        region: String,
        jurisdiction: Jurisdiction,
        country: String,
        /// The node has no region label and this, its `spec.providerID`,
        /// places it abroad: the providerID is the evidence.
        #[serde(skip_serializing_if = "Option::is_none")]
        provider_id: Option<String>,
    },
    Untrusted(Untrusted),
}

impl NodeStanding {
    pub fn is_mainland(&self) -> bool {
        matches!(self, NodeStanding::Mainland { .. })
    }

    /// A policy's `allowedNodes` may vouch for a node whose region is merely
    /// missing or unknown (a private data centre), never for one that is known
    /// to be abroad (by its region label, or without one by its providerID)
    /// or whose evidence contradicts itself.
    pub fn vouchable(&self) -> bool {
        matches!(
            self,
            NodeStanding::Untrusted(
                Untrusted::MissingRegion { .. } | Untrusted::UnknownRegion { .. }
            )
        )
    }
}

pub(crate) fn classify(node: &NodeInfo, catalogue: &Catalogue) -> NodeStanding {
    let ga = node.labels.get(REGION_LABEL);
    let legacy = node.labels.get(LEGACY_REGION_LABEL);
    if let (Some(ga), Some(legacy)) = (ga, legacy)
        && ga != legacy
    {
        return NodeStanding::Untrusted(Untrusted::LabelsDisagree {
            label: ga.clone(),
            legacy: legacy.clone(),
        });
    }
    let provider = node
        .provider_id
        .as_deref()
        .and_then(|id| parse_provider_id(id, catalogue));
    let Some(region) = node.region_label() else {
        // No region label: a providerID (set at registration, checked by
        // the cloud controller) that places the node abroad is evidence
        // enough, and no pool label can vouch for it.
        if let Some(p) = &provider
            && let Some(entry) = provider_region_abroad(p, catalogue)
        {
            return NodeStanding::Outside {
                region: p.region().unwrap_or_default().to_string(),
                jurisdiction: entry.jurisdiction,
                country: entry.country.clone(),
                provider_id: node.provider_id.clone(),
            };
        }
        return NodeStanding::Untrusted(Untrusted::MissingRegion {
            hint: provider.and_then(|p| p.region().map(str::to_string)),
        });
    };
    if let Some(p) = &provider
        && let Some(provider_region) = p.region()
        && !p.regions.iter().any(|r| r == region)
    {
        return NodeStanding::Untrusted(Untrusted::ProviderIdContradicts {
            region: region.to_string(),
            provider: p.provider.to_string(),
            provider_region: provider_region.to_string(),
        });
    }
    match catalogue.lookup(provider.as_ref().map(|p| p.provider), region) {
        RegionLookup::Known(entry) if entry.jurisdiction.is_mainland() => NodeStanding::Mainland {
            region: region.to_string(),
        },
        RegionLookup::Known(entry) => NodeStanding::Outside {
            region: region.to_string(),
            jurisdiction: entry.jurisdiction,
            country: entry.country.clone(),
            provider_id: None,
        },
        RegionLookup::NotOfProvider => {
            let provider = provider.map(|p| p.provider).unwrap_or_default().to_string();
            // A provider we know of, labelled with a region it does not have:
            // if that region is unknown everywhere, it is just unknown.
            if matches!(catalogue.lookup(None, region), RegionLookup::Unknown) {
                NodeStanding::Untrusted(Untrusted::UnknownRegion {
                    region: region.to_string(),
                })
            } else {
                NodeStanding::Untrusted(Untrusted::RegionNotOfProvider {
                    region: region.to_string(),
                    provider,
                })
            }
        }
        RegionLookup::Ambiguous => NodeStanding::Untrusted(Untrusted::AmbiguousRegion {
            region: region.to_string(),
        }),
        RegionLookup::Unknown => NodeStanding::Untrusted(Untrusted::UnknownRegion {
            region: region.to_string(),
        }),
    }
}

/// The catalogue entry of the region a providerID names, when the catalogue
/// places it outside mainland China: under the provider's own spelling, or
/// failing that under a code every provider reads alike.
fn provider_region_abroad<'c>(
    location: &ProviderLocation<'_>,
    catalogue: &'c Catalogue,
) -> Option<&'c RegionEntry> {
    location.regions.iter().find_map(|region| {
        match catalogue.lookup(Some(location.provider), region) {
            RegionLookup::Known(entry) => Some(entry),
            _ => match catalogue.lookup(None, region) {
                RegionLookup::Known(entry) => Some(entry),
                _ => None,
            },
        }
        .filter(|entry| !entry.jurisdiction.is_mainland())
    })
}

/// "node-7 in ap-east-1 (HK)": a node, its region and why it is (not)
/// mainland, for messages.
pub(crate) fn describe_node(
    name: &str,
    region: Option<&str>,
    standing: &NodeStanding,
    lang: Lang,
) -> String {
    let region = region.unwrap_or("?");
    match (standing, lang) {
        (NodeStanding::Mainland { .. }, Lang::En) => format!("{name} in {region}"),
        (NodeStanding::Mainland { .. }, Lang::ZhCn) => format!("{name}（{region}）"),
        (
            NodeStanding::Outside {
                region: located,
                country,
                provider_id: Some(id),
                ..
            },
            Lang::En,
        ) => {
            format!(
                "{name} in {located} ({country}): it has no region label, and its providerID {id} places it there"
            )
        }
        (
            NodeStanding::Outside {
                region: located,
                jurisdiction,
                provider_id: Some(id),
                ..
            },
            Lang::ZhCn,
        ) => {
            format!(
                "{name}（{located}，{}）：该节点没有地域标签，其 providerID {id} 表明它位于该地",
                jurisdiction.describe_zh()
            )
        }
        (NodeStanding::Outside { country, .. }, Lang::En) => {
            format!("{name} in {region} ({country})")
        }
        (NodeStanding::Outside { jurisdiction, .. }, Lang::ZhCn) => {
            format!("{name}（{region}，{}）", jurisdiction.describe_zh())
        }
        (NodeStanding::Untrusted(why), lang) => {
            format!("{name} ({})", describe_untrusted(why, lang))
        }
    }
}

pub(crate) fn describe_untrusted(why: &Untrusted, lang: Lang) -> String {
    match (why, lang) {
        (Untrusted::MissingRegion { hint: Some(h) }, Lang::En) => {
            format!("no region label; its providerID suggests {h}")
        }
        (Untrusted::MissingRegion { hint: None }, Lang::En) => "no region label".into(),
        (Untrusted::UnknownRegion { region }, Lang::En) => {
            format!("region {region} is not in the jurisdiction catalogue")
        }
        (Untrusted::LabelsDisagree { label, legacy }, Lang::En) => {
            format!("region label says {label} but the legacy region label says {legacy}")
        }
        (
            Untrusted::ProviderIdContradicts {
                region,
                provider,
                provider_region,
            },
            Lang::En,
        ) => {
            format!("labelled {region} but its {provider} providerID says {provider_region}")
        }
        (Untrusted::RegionNotOfProvider { region, provider }, Lang::En) => {
            format!(
                "labelled {region}, which is not a {provider} region, yet its providerID is {provider}'s"
            )
        }
        (Untrusted::AmbiguousRegion { region }, Lang::En) => {
            format!(
                "region {region} means different places at different clouds and the providerID does not say which"
            )
        }
        (Untrusted::MissingRegion { hint: Some(h) }, Lang::ZhCn) => {
            format!("缺少地域标签；providerID 显示为 {h}")
        }
        (Untrusted::MissingRegion { hint: None }, Lang::ZhCn) => "缺少地域标签".into(),
        (Untrusted::UnknownRegion { region }, Lang::ZhCn) => {
            format!("地域 {region} 不在管辖目录中")
        }
        (Untrusted::LabelsDisagree { label, legacy }, Lang::ZhCn) => {
            format!("地域标签为 {label}，旧版地域标签却为 {legacy}")
        }
        (
            Untrusted::ProviderIdContradicts {
                region,
                provider,
                provider_region,
            },
            Lang::ZhCn,
        ) => {
            format!("标签为 {region}，但其 {provider} providerID 显示为 {provider_region}")
        }
        (Untrusted::RegionNotOfProvider { region, provider }, Lang::ZhCn) => {
            format!("标签为 {region}，但这不是 {provider} 的地域")
        }
        (Untrusted::AmbiguousRegion { region }, Lang::ZhCn) => {
            format!("地域代码 {region} 在不同云厂商含义不同，且 providerID 无法确定")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(labels: &[(&str, &str)], provider_id: Option<&str>) -> NodeInfo {
        NodeInfo {
            name: "n1".into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            provider_id: provider_id.map(str::to_string),
        }
    }

    #[test]
    fn provider_ids_parse() {
        let cat = Catalogue::builtin();
        let aws = parse_provider_id("aws:///cn-north-1a/i-0abc", cat).unwrap();
        assert_eq!((aws.provider, aws.region()), ("aws", Some("cn-north-1")));
        let local = parse_provider_id("aws:///cn-north-1-pkx-1a/i-0abc", cat).unwrap();
        assert_eq!(local.region(), Some("cn-north-1"));
        let ali = parse_provider_id("cn-hangzhou.i-bp1abc", cat).unwrap();
        assert_eq!(
            (ali.provider, ali.region()),
            ("alibaba", Some("cn-hangzhou"))
        );
        let ali2 = parse_provider_id("alicloud://cn-hongkong.i-j6c", cat).unwrap();
        assert_eq!(ali2.region(), Some("cn-hongkong"));
        let tx = parse_provider_id("qcloud:///800002/ins-abc", cat).unwrap();
        assert_eq!(tx.regions, vec!["ap-beijing".to_string(), "bj".to_string()]);
        assert_eq!(
            parse_provider_id("cce://i-abc", cat).unwrap().provider,
            "baidu"
        );
        let az = parse_provider_id(
            "azure:///subscriptions/s/resourceGroups/MC_rg_aks_chinaeast2/providers/Microsoft.Compute/virtualMachineScaleSets/aks-np/virtualMachines/0",
            cat,
        )
        .unwrap();
        assert_eq!((az.provider, az.region()), ("azure", Some("chinaeast2")));
        let gce = parse_provider_id("gce://proj/asia-east2-a/node-1", cat).unwrap();
        assert_eq!(gce.region(), Some("asia-east2"));
        assert_eq!(
            parse_provider_id("kind://docker/kind/kind-control-plane", cat),
            None
        );
        assert_eq!(parse_provider_id("foo.bar", cat), None);
    }

    #[test]
    fn node_trust_fails_closed() {
        let cat = Catalogue::builtin();
        assert!(
            classify(
                &node(
                    &[(REGION_LABEL, "cn-north-1")],
                    Some("aws:///cn-north-1b/i-1")
                ),
                cat
            )
            .is_mainland()
        );
        assert!(matches!(
            classify(
                &node(
                    &[(REGION_LABEL, "cn-north-1")],
                    Some("aws:///ap-east-1a/i-1")
                ),
                cat
            ),
            NodeStanding::Untrusted(Untrusted::ProviderIdContradicts { .. })
        ));
        assert!(matches!(
            classify(&node(&[], Some("aws:///cn-north-1a/i-1")), cat),
            NodeStanding::Untrusted(Untrusted::MissingRegion { hint: Some(_) })
        ));
        assert!(matches!(
            classify(&node(&[(REGION_LABEL, "mars-1")], None), cat),
            NodeStanding::Untrusted(Untrusted::UnknownRegion { .. })
        ));
        assert!(matches!(
            classify(
                &node(
                    &[
                        (REGION_LABEL, "cn-north-1"),
                        (LEGACY_REGION_LABEL, "us-east-1")
                    ],
                    None
                ),
                cat
            ),
            NodeStanding::Untrusted(Untrusted::LabelsDisagree { .. })
        ));
        assert!(matches!(
            classify(&node(&[(REGION_LABEL, "cn-hongkong")], None), cat),
            NodeStanding::Outside {
                jurisdiction: Jurisdiction::HongKong,
                ..
            }
        ));
        // TKE labels nodes with short codes; the providerID agrees under either spelling.
        assert!(
            classify(
                &node(&[(REGION_LABEL, "gz")], Some("qcloud:///100003/ins-1")),
                cat
            )
            .is_mainland()
        );
        assert!(matches!(
            classify(
                &node(&[(REGION_LABEL, "gz")], Some("qcloud:///300001/ins-1")),
                cat
            ),
            NodeStanding::Untrusted(Untrusted::ProviderIdContradicts { .. })
        ));
        // Legacy label alone is still read.
        assert!(
            classify(&node(&[(LEGACY_REGION_LABEL, "cn-northwest-1")], None), cat).is_mainland()
        );
    }

    /// Without a region label, a providerID that places the node abroad
    /// makes it outside (so `allowedNodes` cannot vouch for it), and the
    /// description names the providerID as the evidence. A providerID in
    /// mainland China, or with no region the catalogue knows, stays a hint.
    #[test]
    fn a_provider_id_abroad_places_an_unlabelled_node_outside() {
        let cat = Catalogue::builtin();
        for (id, region, jurisdiction) in [
            (
                "aws:///ap-east-1a/i-0hk1",
                "ap-east-1",
                Jurisdiction::HongKong,
            ),
            (
                "alicloud://cn-hongkong.i-j6c",
                "cn-hongkong",
                Jurisdiction::HongKong,
            ),
            (
                "qcloud:///300001/ins-1",
                "ap-hongkong",
                Jurisdiction::HongKong,
            ),
            (
                "aws:///us-east-1a/i-0us1",
                "us-east-1",
                Jurisdiction::Foreign,
            ),
        ] {
            let standing = classify(&node(&[("pool", "a")], Some(id)), cat);
            let NodeStanding::Outside {
                region: r,
                jurisdiction: j,
                provider_id,
                ..
            } = &standing
            else {
                panic!("{id}: {standing:?}");
            };
            assert_eq!((r.as_str(), *j), (region, jurisdiction), "{id}");
            assert_eq!(provider_id.as_deref(), Some(id));
            assert!(!standing.vouchable(), "{id}");
            let en = describe_node("n1", None, &standing, Lang::En);
            assert!(en.contains(&format!("n1 in {region}")), "{en}");
            assert!(
                en.contains(&format!("no region label, and its providerID {id}")),
                "{en}"
            );
            let zh = describe_node("n1", None, &standing, Lang::ZhCn);
            assert!(zh.contains("没有地域标签") && zh.contains(id), "{zh}");
        }
        for id in [
            "aws:///cn-north-1a/i-1",
            "aws:///mars-1a/i-1",
            "huaweicloud://abc",
            "kind://docker/kind/kind-worker",
        ] {
            let standing = classify(&node(&[], Some(id)), cat);
            assert!(
                matches!(
                    standing,
                    NodeStanding::Untrusted(Untrusted::MissingRegion { .. })
                ),
                "{id}: {standing:?}"
            );
            assert!(standing.vouchable(), "{id}");
        }
        // A label the providerID contradicts is never vouched for either,
        // whichever side names the mainland.
        for (label, id) in [
            ("cn-north-1", "aws:///ap-east-1a/i-1"),
            ("dc-onprem-1", "aws:///ap-east-1a/i-1"),
            ("ap-east-1", "aws:///cn-north-1a/i-1"),
        ] {
            let standing = classify(&node(&[(REGION_LABEL, label)], Some(id)), cat);
            assert!(
                matches!(
                    standing,
                    NodeStanding::Untrusted(Untrusted::ProviderIdContradicts { .. })
                ),
                "{label} {id}: {standing:?}"
            );
            assert!(!standing.vouchable());
        }
    }
}
