//! Every region of every provider in the catalogue, judged as a node and as
//! a PersistentVolume the way that provider's cloud controller and disk CSI
//! driver write them. The cases are generated from the catalogue itself:
//! a region added without a way to place its zones (a zone rule of its
//! provider, an explicit zone entry, or a `no-zones` reason) fails here, and
//! so does a provider without a `providers:` entry or with a CSI zone key
//! the engine does not read.
//!
//! The property test: a zone spelled after a region by its provider's rule
//! maps to that region or to nothing, never into a region the catalogue
//! puts in another jurisdiction.

use std::collections::BTreeMap;

use proptest::prelude::*;
use residency_guard::engine::{
    Catalogue, ClassifiedNode, NodeInfo, NodeStanding, RegionEntry, RegionLookup, TopologyOp,
    TopologyRequirement, VolumeLocation, ZONE_KEYS, ZoneForm, locate_volume,
};

const GA_REGION: &str = "topology.kubernetes.io/region";
const GA_ZONE: &str = "topology.kubernetes.io/zone";

/// A zone of `region` as `entry`'s provider names it, and whether it names
/// a zone only beside a region label (Baidu's `zoneA`).
#[derive(Clone, Debug, PartialEq, Eq)]
struct ExampleZone {
    zone: String,
    qualified: bool,
}

/// Every zone the catalogue can place in this region: one per applicable
/// rule of the region's provider, and every explicit entry.
fn example_zones(cat: &Catalogue, entry: &RegionEntry) -> Vec<ExampleZone> {
    let mut out: Vec<ExampleZone> = cat
        .zone_rules()
        .iter()
        .filter(|r| r.provider == entry.provider)
        .filter_map(|r| {
            r.example_zone(&entry.region).map(|zone| ExampleZone {
                zone,
                qualified: r.form == ZoneForm::Qualified,
            })
        })
        .collect();
    out.extend(
        cat.zones()
            .filter(|z| z.provider == entry.provider && z.region == entry.region)
            .map(|z| ExampleZone {
                zone: z.zone.clone(),
                qualified: false,
            }),
    );
    out
}

/// Regions that can place no zone and do not say why.
fn unplaced(cat: &Catalogue) -> Vec<String> {
    cat.entries()
        .filter(|e| e.no_zones.is_none() && example_zones(cat, e).is_empty())
        .map(|e| format!("{}/{}", e.provider, e.region))
        .collect()
}

fn provider_id(cat: &Catalogue, entry: &RegionEntry, zone: &str) -> Option<String> {
    cat.providers()
        .find(|p| p.provider == entry.provider)
        .and_then(|p| p.provider_id.as_deref())
        .map(|t| {
            t.replace("{region}", &entry.region)
                .replace("{zone}", zone)
                .replace("{instance}", "i-example0")
        })
}

fn csi_zone_keys(cat: &Catalogue, provider: &str) -> Vec<String> {
    let mut keys: Vec<String> = cat
        .providers()
        .find(|p| p.provider == provider)
        .map(|p| p.csi_zone_keys.clone())
        .unwrap_or_default();
    keys.push(GA_ZONE.to_string());
    keys
}

/// Where a PV pinned to `zone` under `key` (beside `region_label`, when
/// given) is.
fn pv_location(
    cat: &Catalogue,
    key: &str,
    zone: &str,
    region_label: Option<&str>,
) -> VolumeLocation {
    let terms = vec![vec![TopologyRequirement {
        key: key.to_string(),
        op: TopologyOp::In,
        values: vec![zone.to_string()],
    }]];
    let labels: Vec<(String, String)> = region_label
        .map(|r| (GA_REGION.to_string(), r.to_string()))
        .into_iter()
        .collect();
    locate_volume(Some(&terms), &labels, cat, None)
}

fn node(cat: &Catalogue, entry: &RegionEntry, zone: Option<&str>) -> NodeStanding {
    let mut labels = BTreeMap::from([(GA_REGION.to_string(), entry.region.clone())]);
    if let Some(z) = zone {
        labels.insert(GA_ZONE.to_string(), z.to_string());
    }
    let info = NodeInfo {
        name: format!("node-{}-{}", entry.provider, entry.region),
        labels,
        provider_id: provider_id(cat, entry, zone.unwrap_or_default()),
    };
    ClassifiedNode::new(info, cat).standing
}

#[test]
fn every_region_places_its_zones_or_says_why_not() {
    let cat = Catalogue::builtin();
    assert_eq!(unplaced(cat), Vec::<String>::new());
    // The check has teeth: a region added for a provider without a zone
    // rule, an explicit zone or a reason is reported.
    let mut grown = cat.clone();
    grown.extend(
        Catalogue::parse_yaml(
            "regions:\n- {provider: newcloud, region: cn-new-1, jurisdiction: mainland-china, country: CN, source: test}\n",
        )
        .unwrap(),
    );
    assert_eq!(unplaced(&grown), ["newcloud/cn-new-1"]);
    // A region that says it cannot place zones really cannot.
    for e in cat.entries().filter(|e| e.no_zones.is_some()) {
        assert_eq!(
            example_zones(cat, e),
            Vec::<ExampleZone>::new(),
            "{}/{}: no-zones, yet a rule or entry places zones",
            e.provider,
            e.region
        );
    }
    for e in cat.entries().filter(|e| e.no_zones.is_some()) {
        assert!(
            e.no_zones
                .as_deref()
                .is_some_and(|w| w.contains("source") || w.contains("http")),
            "{}/{}: a no-zones reason cites what was read",
            e.provider,
            e.region
        );
    }
}

#[test]
fn every_provider_is_described_and_its_csi_keys_are_read() {
    let cat = Catalogue::builtin();
    let described: Vec<&str> = cat.providers().map(|p| p.provider.as_str()).collect();
    for e in cat.entries() {
        assert!(
            described.contains(&e.provider.as_str()),
            "provider {} has regions but no providers: entry",
            e.provider
        );
    }
    for p in cat.providers() {
        assert!(
            p.source.as_deref().is_some_and(|s| !s.is_empty()),
            "{}",
            p.provider
        );
        for key in &p.csi_zone_keys {
            assert!(
                ZONE_KEYS.contains(&key.as_str()),
                "{}: the engine does not read CSI zone key {key}",
                p.provider
            );
        }
    }
    for r in cat.zone_rules() {
        assert!(r.source.as_deref().is_some_and(|s| !s.is_empty()), "{r:?}");
    }
}

/// A PV in every region, under every zone key its provider's CSI driver
/// writes (and the well-known one), and a node there as the provider's
/// cloud controller registers it: mainland regions are judged mainland,
/// every other region (Hong Kong, Macao, Taiwan, Singapore, ...) outside.
#[test]
fn a_pv_and_a_node_in_every_region_are_judged_where_the_catalogue_puts_them() {
    let cat = Catalogue::builtin();
    let mut judged = BTreeMap::<&str, (usize, usize)>::new();
    for entry in cat.entries() {
        let mainland = entry.jurisdiction.is_mainland();
        let ambiguous = matches!(cat.lookup(None, &entry.region), RegionLookup::Ambiguous);
        assert!(!ambiguous, "{}: providers disagree on it", entry.region);
        let zones = example_zones(cat, entry);
        for z in &zones {
            let region_label = z.qualified.then_some(entry.region.as_str());
            if !z.qualified {
                assert_eq!(
                    cat.zone_region(&z.zone),
                    Some(entry.region.as_str()),
                    "{}/{}: zone {}",
                    entry.provider,
                    entry.region,
                    z.zone
                );
            }
            for key in csi_zone_keys(cat, &entry.provider) {
                let at = pv_location(cat, &key, &z.zone, region_label);
                let case = format!("{}/{}: PV {key}={}", entry.provider, entry.region, z.zone);
                match (&at, mainland) {
                    (VolumeLocation::Mainland { regions }, true) => {
                        assert_eq!(regions, std::slice::from_ref(&entry.region), "{case}");
                    }
                    (VolumeLocation::Outside { region, .. }, false) => {
                        assert_eq!(region, &entry.region, "{case}");
                    }
                    _ => panic!("{case}: judged {at:?}, mainland should be {mainland}"),
                }
                if z.qualified {
                    // Without the region beside it the zone says nothing.
                    assert!(
                        matches!(
                            pv_location(cat, &key, &z.zone, None),
                            VolumeLocation::Unknown { .. }
                        ),
                        "{case} alone"
                    );
                }
            }
            let standing = node(cat, entry, Some(&z.zone));
            let case = format!(
                "{}/{}: node in zone {} with providerID {:?}",
                entry.provider,
                entry.region,
                z.zone,
                provider_id(cat, entry, &z.zone)
            );
            match (&standing, mainland) {
                (NodeStanding::Mainland { region }, true) => assert_eq!(region, &entry.region),
                (NodeStanding::Outside { region, .. }, false) => {
                    assert_eq!(region, &entry.region)
                }
                _ => panic!("{case}: judged {standing:?}, mainland should be {mainland}"),
            }
        }
        // A node with a region label and no zone, too (regions whose zones
        // cannot be placed are still judged by their region).
        let standing = node(cat, entry, None);
        assert_eq!(
            standing.is_mainland(),
            mainland,
            "{}/{}: {standing:?}",
            entry.provider,
            entry.region
        );
        assert!(
            !matches!(standing, NodeStanding::Untrusted(_)),
            "{}/{}: {standing:?}",
            entry.provider,
            entry.region
        );
        let counts = judged.entry(entry.provider.as_str()).or_default();
        counts.0 += 1;
        counts.1 += zones.len();
    }
    // The issue's two false denials.
    for (key, zone) in [
        (
            "topology.diskplugin.csi.alibabacloud.com/zone",
            "cn-zhangjiakou-a",
        ),
        ("topology.com.tencent.cloud.csi.cbs/zone", "ap-chengdu-1"),
    ] {
        assert!(
            matches!(
                pv_location(cat, key, zone, None),
                VolumeLocation::Mainland { .. }
            ),
            "{key}={zone}"
        );
    }
    assert!(judged.len() >= 7, "{judged:?}");
}

/// Tencent TKE nodes: numeric zone beside the abbreviation, and the
/// providerID carrying the same zone ID.
#[test]
fn tencent_numeric_node_zones_are_placed() {
    let cat = Catalogue::builtin();
    for (zone, region, mainland) in [
        ("100003", "gz", true),
        ("160001", "cd", true),
        ("190001", "cq", true),
        ("330001", "nj", true),
        ("800005", "bj", true),
        ("300002", "hk", false),
        // Overseas prefixes from Tencent's CVM zone-ID list.
        ("900001", "sg", false),
        ("180001", "kr", false),
        ("150001", "usw", false),
        ("170001", "de", false),
    ] {
        assert_eq!(cat.zone_region(zone), Some(region), "{zone}");
        let at = pv_location(cat, GA_ZONE, zone, None);
        assert_eq!(
            matches!(at, VolumeLocation::Mainland { .. }),
            mainland,
            "{zone}: {at:?}"
        );
        let entry = match cat.lookup(Some("tencent"), region) {
            RegionLookup::Known(e) => e.clone(),
            other => panic!("{region}: {other:?}"),
        };
        assert_eq!(
            node(cat, &entry, Some(zone)).is_mainland(),
            mainland,
            "{zone}"
        );
    }
    // A zone ID whose prefix no source gives is no place (Tokyo's, say).
    assert_eq!(cat.zone_region("250001"), None);
    let at = pv_location(cat, GA_ZONE, "250001", None);
    assert!(
        !matches!(at, VolumeLocation::Mainland { .. }),
        "an unsourced prefix is not mainland: {at:?}"
    );
}

/// JD Cloud spells zones like AWS and Huawei (`cn-north-1a`) and shares
/// three of their region codes: every reading lands in the same mainland
/// region, and its own `cn-east-1a` (Suqian) is placed too. A JD Cloud node
/// has no providerID template to check, so its region label decides.
#[test]
fn jd_cloud_zones_read_the_same_as_aws_and_huawei() {
    let cat = Catalogue::builtin();
    for (zone, region) in [
        ("cn-north-1a", "cn-north-1"),
        ("cn-east-2b", "cn-east-2"),
        ("cn-south-1a", "cn-south-1"),
        ("cn-east-1a", "cn-east-1"),
    ] {
        assert_eq!(cat.zone_region(zone), Some(region), "{zone}");
        let at = pv_location(cat, GA_ZONE, zone, None);
        assert!(
            matches!(at, VolumeLocation::Mainland { .. }),
            "{zone}: {at:?}"
        );
    }
    let jd = cat
        .providers()
        .find(|p| p.provider == "jdcloud")
        .expect("JD Cloud is described");
    assert!(jd.provider_id.is_none() && jd.csi_zone_keys.is_empty());
    let entry = match cat.lookup(Some("jdcloud"), "cn-east-1") {
        RegionLookup::Known(e) => e.clone(),
        other => panic!("{other:?}"),
    };
    assert!(node(cat, &entry, Some("cn-east-1a")).is_mainland());
}

/// Kingsoft Cloud, as its disk CSI driver (kingsoftcloud/csi-plugin) writes
/// a PV: region = the zone without its letter, both under the legacy
/// failure-domain keys, beside its own disk-type key (not a location). KCE
/// nodes are judged by their legacy region label; there is no providerID
/// template to check. Hong Kong and Taipei look mainland by their "cn-"
/// prefix and are not.
#[test]
fn kingsoft_pvs_and_nodes_are_placed_as_its_csi_driver_writes_them() {
    use residency_guard::engine::Untrusted;
    const LEGACY_REGION: &str = "failure-domain.beta.kubernetes.io/region";
    const LEGACY_ZONE: &str = "failure-domain.beta.kubernetes.io/zone";
    let cat = Catalogue::builtin();
    let ks = cat
        .providers()
        .find(|p| p.provider == "kingsoft")
        .expect("Kingsoft Cloud is described");
    assert!(ks.provider_id.is_none());
    assert_eq!(ks.csi_zone_keys, [LEGACY_ZONE]);
    let csi_pv = |region: &str, zone: &str| {
        let req = |key: &str, value: &str| TopologyRequirement {
            key: key.to_string(),
            op: TopologyOp::In,
            values: vec![value.to_string()],
        };
        let terms = vec![vec![
            req(LEGACY_REGION, region),
            req(LEGACY_ZONE, zone),
            req("com.ksc.csi.node/disktype.ESSD", "available"),
        ]];
        locate_volume(Some(&terms), &[], cat, None)
    };
    for (region, zone, mainland) in [
        ("cn-beijing-6", "cn-beijing-6a", true),
        ("cn-shanghai-2", "cn-shanghai-2b", true),
        ("cn-guangzhou-1", "cn-guangzhou-1a", true),
        ("cn-beijing-fin", "cn-beijing-fin-a", true),
        ("cn-northwest-4", "cn-northwest-4a", true),
        ("cn-hongkong-2", "cn-hongkong-2a", false),
        ("cn-taipei-1", "cn-taipei-1a", false),
        ("eu-east-1", "eu-east-1b", false),
    ] {
        assert_eq!(cat.zone_region(zone), Some(region), "{zone}");
        match (csi_pv(region, zone), mainland) {
            (VolumeLocation::Mainland { regions }, true) => assert_eq!(regions, [region]),
            (VolumeLocation::Outside { region: r, .. }, false) => assert_eq!(r, region),
            (other, _) => panic!("{zone}: {other:?}, mainland should be {mainland}"),
        }
        // The zone alone places the PV too.
        assert_eq!(
            matches!(
                pv_location(cat, LEGACY_ZONE, zone, None),
                VolumeLocation::Mainland { .. }
            ),
            mainland,
            "{zone} alone"
        );
        // A KCE node as the driver reads it: the legacy labels.
        let info = NodeInfo {
            name: format!("kce-{zone}"),
            labels: BTreeMap::from([
                (LEGACY_REGION.to_string(), region.to_string()),
                (LEGACY_ZONE.to_string(), zone.to_string()),
            ]),
            provider_id: None,
        };
        let standing = ClassifiedNode::new(info, cat).standing;
        assert_eq!(standing.is_mainland(), mainland, "{zone}: {standing:?}");
        assert!(!matches!(standing, NodeStanding::Untrusted(_)), "{zone}");
    }
    // A PV whose region and zone disagree is not placed in the mainland.
    assert!(!matches!(
        csi_pv("cn-beijing-6", "cn-hongkong-2a"),
        VolumeLocation::Mainland { .. }
    ));
    // The contradictory test pool is not in the catalogue: unknown, fails closed.
    let test_pool = NodeInfo {
        name: "kce-test-pool".into(),
        labels: BTreeMap::from([(LEGACY_REGION.to_string(), "cn-qingyangtest-1".to_string())]),
        provider_id: None,
    };
    assert!(matches!(
        ClassifiedNode::new(test_pool, cat).standing,
        NodeStanding::Untrusted(Untrusted::UnknownRegion { .. })
    ));
    // cn-northwest-1 is AWS's Ningxia and Kingsoft's Qingyang: both mainland.
    assert!(matches!(
        cat.lookup(None, "cn-northwest-1"),
        RegionLookup::Known(e) if e.jurisdiction.is_mainland()
    ));
}

/// Huawei CCE: the Everest add-on (driver `disk.csi.everest.io`) places an
/// EVS disk's PV by labels, `failure-domain.beta.kubernetes.io/region` and
/// `.../zone` (CCE's documented PV), with no node affinity; Huawei's
/// open-source EVS driver pins it by `topology.evs.csi.huaweicloud.com/zone`.
#[test]
fn huawei_cce_everest_and_evs_csi_pvs_are_placed() {
    const LEGACY_REGION: &str = "failure-domain.beta.kubernetes.io/region";
    const LEGACY_ZONE: &str = "failure-domain.beta.kubernetes.io/zone";
    const EVS_ZONE: &str = "topology.evs.csi.huaweicloud.com/zone";
    let cat = Catalogue::builtin();
    let labelled = |region: &str, zone: &str| {
        let labels = vec![
            (LEGACY_REGION.to_string(), region.to_string()),
            (LEGACY_ZONE.to_string(), zone.to_string()),
        ];
        locate_volume(None, &labels, cat, None)
    };
    // The PV of CCE's "存储卷PV" page.
    match labelled("cn-north-4", "cn-north-4b") {
        VolumeLocation::Mainland { regions } => assert_eq!(regions, ["cn-north-4"]),
        other => panic!("{other:?}"),
    }
    // Huawei's ap-southeast-1 is Hong Kong.
    assert!(matches!(
        labelled("ap-southeast-1", "ap-southeast-1a"),
        VolumeLocation::Outside { .. }
    ));
    // Region and zone labels that disagree: not mainland.
    assert!(!matches!(
        labelled("cn-north-4", "ap-southeast-1a"),
        VolumeLocation::Mainland { .. }
    ));
    // The open-source EVS driver's key.
    assert!(matches!(
        pv_location(cat, EVS_ZONE, "cn-east-3a", None),
        VolumeLocation::Mainland { .. }
    ));
    assert!(matches!(
        pv_location(cat, EVS_ZONE, "ap-southeast-1a", Some("ap-southeast-1")),
        VolumeLocation::Outside { .. }
    ));
    let hw = cat
        .providers()
        .find(|p| p.provider == "huawei")
        .expect("Huawei is described");
    assert!(hw.csi_zone_keys.iter().any(|k| k == LEGACY_ZONE));
    assert!(hw.csi_zone_keys.iter().any(|k| k == EVS_ZONE));
}

/// Strategy: a region entry of the catalogue (by index).
fn any_entry() -> impl Strategy<Value = RegionEntry> {
    let entries: Vec<RegionEntry> = Catalogue::builtin().entries().cloned().collect();
    proptest::sample::select(entries)
}

/// A zone-like suffix in any provider's spelling, or a mangled one.
fn any_suffix() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z]".prop_map(|l| l),
        "-[a-z]".prop_map(|l| l),
        "-[0-9]{1,3}".prop_map(|n| n),
        "[0-9]{3}".prop_map(|n| n),
        "-[a-z]{1,3}-[0-9][a-z]".prop_map(|s| s),
        Just(String::new()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// A zone spelled after a region maps to that region or to nothing; the
    /// region it maps to is judged in the jurisdiction the catalogue gives
    /// the spelling's region, never another.
    #[test]
    fn a_zone_rule_never_maps_a_zone_into_another_jurisdiction(
        entry in any_entry(),
        suffix in any_suffix(),
    ) {
        let cat = Catalogue::builtin();
        let zone = format!("{}{}", entry.region, suffix);
        if let Some(region) = cat.zone_region(&zone) {
            // Every reading names a region its provider has, in the catalogue.
            for (provider, r) in cat.zone_readings(&zone) {
                prop_assert_eq!(r, region);
                prop_assert!(cat.provider_has_region(provider, r));
            }
            // Whatever region the zone lands in, its jurisdiction is the
            // one every provider using that code agrees on...
            let landed = match cat.lookup(None, region) {
                RegionLookup::Known(e) => e.jurisdiction.is_mainland(),
                other => return Err(TestCaseError::fail(format!("{zone} -> {region}: {other:?}"))),
            };
            // ...and when the zone is spelled by a rule of the region's own
            // provider, it lands in that very region, in its jurisdiction.
            let spelled = cat.zone_rules().iter().any(|r| {
                r.provider == entry.provider
                    && r.form != ZoneForm::Qualified
                    && r.places(&zone, &entry.region)
            });
            if spelled || region == entry.region {
                prop_assert_eq!(region, entry.region.as_str(), "{}", zone);
                prop_assert_eq!(landed, entry.jurisdiction.is_mainland(), "{}", zone);
            }
            // The PV is judged accordingly, under every zone key.
            for key in ZONE_KEYS {
                let at = pv_location(cat, key, &zone, None);
                let ok = match at {
                    VolumeLocation::Mainland { .. } => landed,
                    VolumeLocation::Outside { .. } => !landed,
                    VolumeLocation::Unknown { .. } => false,
                };
                prop_assert!(ok, "{}={}: {:?}", key, zone, at);
            }
        } else {
            // A zone that maps nowhere is never judged mainland by itself.
            let at = pv_location(cat, GA_ZONE, &zone, None);
            prop_assert!(!matches!(at, VolumeLocation::Mainland { .. }), "{}: {:?}", zone, at);
        }
    }

    /// Any string at all: if it maps, the region is known to the catalogue
    /// (an unknown region never maps) and a provider that has it reads it.
    #[test]
    fn only_known_regions_are_ever_mapped_to(zone in "[a-z0-9-]{1,24}") {
        let cat = Catalogue::builtin();
        if let Some(region) = cat.zone_region(&zone) {
            prop_assert!(!matches!(cat.lookup(None, region), RegionLookup::Unknown));
            prop_assert!(cat.zone_readings(&zone).all(|(p, r)| r == region && cat.provider_has_region(p, r)));
        }
    }
}

fn standing(region: Option<&str>, zone: Option<&str>, provider_id: &str) -> NodeStanding {
    let mut labels = BTreeMap::new();
    if let Some(r) = region {
        labels.insert(GA_REGION.to_string(), r.to_string());
    }
    if let Some(z) = zone {
        labels.insert(GA_ZONE.to_string(), z.to_string());
    }
    let info = NodeInfo {
        name: "n".into(),
        labels,
        provider_id: Some(provider_id.to_string()),
    };
    ClassifiedNode::new(info, Catalogue::builtin()).standing
}

/// Providers the catalogue describes only by data (a providerID template):
/// the providerID names the provider, and, where its template carries a
/// zone, the region, which the label must then agree with.
#[test]
fn nodes_of_template_providers_are_trusted_as_their_provider_id_says() {
    use residency_guard::engine::Untrusted;
    // Volcano Engine: volcengine://<instance>, no location in it.
    let vke = "volcengine://i-ybqzudcktgkdvbnfzcul";
    assert!(standing(Some("cn-beijing"), Some("cn-beijing-a"), vke).is_mainland());
    assert!(standing(Some("cn-datong"), None, vke).is_mainland());
    assert!(matches!(
        standing(Some("cn-hongkong"), Some("cn-hongkong-a"), vke),
        NodeStanding::Outside { .. }
    ));
    // A Volcano Engine node labelled with a region Volcano Engine does not
    // have is not trusted, even though the code is mainland elsewhere.
    assert!(matches!(
        standing(Some("ap-beijing"), None, vke),
        NodeStanding::Untrusted(Untrusted::RegionNotOfProvider { .. })
    ));
    assert!(matches!(
        standing(None, None, vke),
        NodeStanding::Untrusted(Untrusted::MissingRegion { hint: None })
    ));
    // UCloud: UCloud://<zone>//<node>, the zone places the node.
    let uk8s = "UCloud://cn-sh2-02//uk8s-vsc0vgob-n-mpzxc";
    assert!(standing(Some("cn-sh2"), Some("cn-sh2-02"), uk8s).is_mainland());
    assert!(matches!(
        standing(Some("cn-bj2"), None, uk8s),
        NodeStanding::Untrusted(Untrusted::ProviderIdContradicts { .. })
    ));
    // Without a region label, a providerID abroad is evidence enough...
    for (id, country) in [
        ("UCloud://hk-01//uk8s-x", "HK"),
        ("UCloud://tw-tp-01//uk8s-x", "TW"),
    ] {
        match standing(None, None, id) {
            NodeStanding::Outside { country: c, .. } => assert_eq!(c, country, "{id}"),
            other => panic!("{id}: {other:?}"),
        }
    }
    // ...and one in the mainland is only a hint.
    assert!(matches!(
        standing(None, None, uk8s),
        NodeStanding::Untrusted(Untrusted::MissingRegion { hint: Some(_) })
    ));
    // A zone the template captures but the catalogue cannot place names
    // the provider and no region.
    assert!(matches!(
        standing(Some("cn-sh2"), None, "UCloud://cn-zz9-01//x"),
        NodeStanding::Mainland { .. }
    ));
    // Not the template: not UCloud (case and separators matter).
    assert!(matches!(
        standing(Some("cn-sh2"), None, "ucloud://cn-sh2-02/x"),
        NodeStanding::Mainland { .. }
    ));
}

const README_BEGIN: &str = "<!-- BEGIN GENERATED catalogue-providers: tests/catalogue_zones.rs (RESIDENCY_GUARD_WRITE_README=1), do not edit -->\n";
const README_END: &str = "<!-- END GENERATED catalogue-providers -->";

fn is_date(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 10
        && b.iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            _ => c.is_ascii_digit(),
        })
}

/// The README's per-provider table, from the catalogue.
fn readme_table(cat: &Catalogue) -> String {
    use residency_guard::engine::Jurisdiction;
    let mut out = String::from(
        "| provider | regions | mainland | HK / Macao / Taiwan | elsewhere | regions placing zones | zone rules | explicit zones | providerID | sources read (regions; zones) |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---|---|\n",
    );
    let mut total = [0usize; 7];
    for p in cat.providers() {
        let regions: Vec<&RegionEntry> =
            cat.entries().filter(|e| e.provider == p.provider).collect();
        let mainland = regions
            .iter()
            .filter(|e| e.jurisdiction.is_mainland())
            .count();
        let look_alike = regions
            .iter()
            .filter(|e| {
                matches!(
                    e.jurisdiction,
                    Jurisdiction::HongKong | Jurisdiction::Macau | Jurisdiction::Taiwan
                )
            })
            .count();
        let placing = regions
            .iter()
            .filter(|e| !example_zones(cat, e).is_empty())
            .count();
        let rules = cat
            .zone_rules()
            .iter()
            .filter(|r| r.provider == p.provider)
            .count();
        let zones = cat.zones().filter(|z| z.provider == p.provider).count();
        let row = [
            regions.len(),
            mainland,
            look_alike,
            regions.len() - mainland - look_alike,
            placing,
            rules,
            zones,
        ];
        for (t, v) in total.iter_mut().zip(row) {
            *t += v;
        }
        out.push_str(&format!(
            "| {} (`{}`) | {} | {} | {} | {} | {} | {} | {} | `{}` | {}; {} |\n",
            p.name,
            p.provider,
            row[0],
            row[1],
            row[2],
            row[3],
            row[4],
            row[5],
            row[6],
            p.provider_id.as_deref().unwrap_or("?"),
            p.regions_checked.as_deref().unwrap_or("?"),
            p.zones_checked.as_deref().unwrap_or("?"),
        ));
    }
    out.push_str(&format!(
        "| **all {} providers** | {} | {} | {} | {} | {} | {} | {} | | |\n",
        cat.providers().count(),
        total[0],
        total[1],
        total[2],
        total[3],
        total[4],
        total[5],
        total[6]
    ));
    out
}

/// The README's provider table is this catalogue's: regenerate it with
/// `RESIDENCY_GUARD_WRITE_README=1 cargo nextest run --test catalogue_zones readme`.
#[test]
fn the_readme_provider_table_is_generated_from_the_catalogue() {
    let cat = Catalogue::builtin();
    for p in cat.providers() {
        for d in [&p.regions_checked, &p.zones_checked] {
            assert!(
                d.as_deref().is_some_and(is_date),
                "{}: sources-read dates are YYYY-MM-DD",
                p.provider
            );
        }
    }
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/README.md");
    let text = std::fs::read_to_string(path).expect("README.md");
    let start = text.find(README_BEGIN).expect("README begin marker") + README_BEGIN.len();
    let end = start + text[start..].find(README_END).expect("README end marker");
    let table = readme_table(cat);
    if std::env::var_os("RESIDENCY_GUARD_WRITE_README").is_some() {
        let new = format!("{}{table}{}", &text[..start], &text[end..]);
        std::fs::write(path, new).expect("write README.md");
        return;
    }
    assert_eq!(
        &text[start..end],
        table,
        "README.md's catalogue table is out of date: RESIDENCY_GUARD_WRITE_README=1 cargo nextest run --test catalogue_zones readme"
    );
}

/// The site catalogue example in docs/catalogue.md parses, and its nodes
/// and volumes are judged as the document says.
#[test]
fn the_private_site_example_in_the_docs_works_as_documented() {
    use residency_guard::engine::Untrusted;
    let doc = include_str!("../docs/catalogue.md");
    let begin =
        "<!-- BEGIN site-catalogue example: tested by tests/catalogue_zones.rs -->\n```yaml\n";
    let start = doc.find(begin).expect("example begin") + begin.len();
    let end = start + doc[start..].find("```\n").expect("example end");
    let site = Catalogue::parse_yaml(&doc[start..end]).expect("the example parses");
    let mut cat = Catalogue::builtin().clone();
    cat.extend(site);
    let node = |region: Option<&str>, id: Option<&str>| {
        let info = NodeInfo {
            name: "idc-1".into(),
            labels: region
                .map(|r| BTreeMap::from([(GA_REGION.to_string(), r.to_string())]))
                .unwrap_or_default(),
            provider_id: id.map(str::to_string),
        };
        ClassifiedNode::new(info, &cat).standing
    };
    // Without a providerID the region label decides.
    assert!(node(Some("idc-sh-jiading"), None).is_mainland());
    assert!(matches!(
        node(Some("idc-hk-kwaichung"), None),
        NodeStanding::Outside { .. }
    ));
    assert!(matches!(
        node(Some("idc-sz-unlisted"), None),
        NodeStanding::Untrusted(Untrusted::UnknownRegion { .. })
    ));
    assert!(matches!(
        node(None, None),
        NodeStanding::Untrusted(Untrusted::MissingRegion { .. })
    ));
    // With the declared providerID form, it is checked against the label.
    assert!(node(Some("idc-sh-jiading"), Some("acme-idc://idc-sh-jiading/n1")).is_mainland());
    assert!(matches!(
        node(
            Some("idc-sh-jiading"),
            Some("acme-idc://idc-hk-kwaichung/n2")
        ),
        NodeStanding::Untrusted(Untrusted::ProviderIdContradicts { .. })
    ));
    assert!(matches!(
        node(None, Some("acme-idc://idc-hk-kwaichung/n2")),
        NodeStanding::Outside { .. }
    ));
    // A volume pinned by the site's zone.
    assert!(matches!(
        pv_location(&cat, GA_ZONE, "idc-sh-jiading-hall3", None),
        VolumeLocation::Mainland { .. }
    ));
}
