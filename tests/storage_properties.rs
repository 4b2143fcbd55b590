//! Where a PersistentVolume is (its zone / region / topology reasoning)
//! checked against an independent brute-force model.
//!
//! The model never calls the engine's location code. It enumerates every
//! node there could be over a small vocabulary — a (region, zone) pair the
//! zone table allows, with every region and zone key labelled, plus a
//! region and a zone no one has named, under each node name (no inventory:
//! a named node may be anywhere) — and lists the nodes a PV's topology (its
//! node affinity terms, each AND'ed with its labels) admits.
//! A PV is in mainland China iff it admits at least one place and every
//! place it admits is in a mainland region. The engine must agree exactly,
//! and when it says "outside" the place it names must be one the PV admits.

use std::collections::BTreeSet;

use proptest::prelude::*;
use proptest::sample::{select, subsequence};
use residency_guard::engine::{
    Catalogue, TopologyOp, TopologyRequirement, VolumeLocation, locate_volume,
};

const GA_REGION: &str = "topology.kubernetes.io/region";
const LEGACY_REGION: &str = "failure-domain.beta.kubernetes.io/region";
const GA_ZONE: &str = "topology.kubernetes.io/zone";
const EBS_ZONE: &str = "topology.ebs.csi.aws.com/zone";
const ALI_ZONE: &str = "topology.diskplugin.csi.alibabacloud.com/zone";
const HOSTNAME: &str = "kubernetes.io/hostname";
const POOL: &str = "pool";

const REGION_KEYS: &[&str] = &[GA_REGION, LEGACY_REGION];
const ZONE_KEYS: &[&str] = &[GA_ZONE, EBS_ZONE, ALI_ZONE];

/// Two mainland regions, two abroad (one the Hong Kong look-alike), one
/// the catalogue does not know.
const REGIONS: &[&str] = &[
    "cn-north-1",
    "cn-beijing",
    "ap-east-1",
    "us-east-1",
    "dc-onprem-1",
];
const MAINLAND: &[&str] = &["cn-north-1", "cn-beijing"];
/// Zones and their regions as the providers document them; `weird-zone-1`
/// is unknown.
const ZONES: &[(&str, Option<&str>)] = &[
    ("cn-north-1a", Some("cn-north-1")),
    ("cn-north-1b", Some("cn-north-1")),
    ("cn-beijing-h", Some("cn-beijing")),
    ("ap-east-1a", Some("ap-east-1")),
    ("us-east-1a", Some("us-east-1")),
    ("weird-zone-1", None),
];
/// Values nobody names: every place not otherwise described.
const OTHER_REGION: &str = "zz-other-region";
const OTHER_ZONE: &str = "zz-other-zone";

/// Node names a PV may pin; without an inventory none is known to be
/// anywhere in particular, so each may be in any place.
const HOSTS: &[&str] = &["node-1", "node-2"];
const OTHER_HOST: &str = "zz-other-node";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Class {
    Region,
    Zone,
    Host,
    Other,
}

fn class(key: &str) -> Class {
    if REGION_KEYS.contains(&key) {
        Class::Region
    } else if ZONE_KEYS.contains(&key) {
        Class::Zone
    } else if key == HOSTNAME {
        Class::Host
    } else {
        Class::Other
    }
}

/// A node: its region, zone and name.
type Place = (&'static str, &'static str, &'static str);

/// Every node there can be: each (region, zone) place, under each name.
fn places() -> Vec<Place> {
    locations()
        .into_iter()
        .flat_map(|(r, z)| {
            HOSTS
                .iter()
                .copied()
                .chain([OTHER_HOST])
                .map(move |h| (r, z, h))
        })
        .collect()
}

/// Every place a node can be: (region, zone).
fn locations() -> Vec<(&'static str, &'static str)> {
    let mut out = Vec::new();
    let zones = ZONES.iter().copied().chain([(OTHER_ZONE, None)]);
    for (z, region) in zones {
        match region {
            Some(r) => out.push((r, z)),
            None => {
                for r in REGIONS.iter().copied().chain([OTHER_REGION]) {
                    out.push((r, z));
                }
            }
        }
    }
    // Regions none of whose zones are listed still have places.
    for r in REGIONS.iter().copied().chain([OTHER_REGION]) {
        out.push((r, OTHER_ZONE));
    }
    out.sort();
    out.dedup();
    out
}

fn satisfies(place: Place, r: &TopologyRequirement) -> bool {
    let value = match class(&r.key) {
        Class::Region => place.0,
        Class::Zone => place.1,
        Class::Host => place.2,
        Class::Other => return true, // not about location: assume it can hold
    };
    let listed = r.values.iter().any(|v| v == value);
    match r.op {
        TopologyOp::In => listed,
        TopologyOp::NotIn => !listed,
        TopologyOp::Exists => true,
        TopologyOp::DoesNotExist => false,
    }
}

fn label_holds(place: Place, key: &str, value: &str) -> bool {
    match class(key) {
        Class::Region => place.0 == value,
        Class::Zone => value.split("__").any(|z| z == place.1),
        Class::Host => place.2 == value,
        Class::Other => true,
    }
}

/// The places the PV admits.
fn admitted(
    terms: &Option<Vec<Vec<TopologyRequirement>>>,
    labels: &[(String, String)],
) -> Vec<Place> {
    places()
        .into_iter()
        .filter(|&p| labels.iter().all(|(k, v)| label_holds(p, k, v)))
        .filter(|&p| match terms {
            None => true,
            Some(terms) => terms.iter().any(|t| t.iter().all(|r| satisfies(p, r))),
        })
        .collect()
}

fn model_mainland(admitted: &[Place]) -> bool {
    !admitted.is_empty() && admitted.iter().all(|(r, _, _)| MAINLAND.contains(r))
}

// --- generators ------------------------------------------------------------

fn values_for(key: &'static str) -> Vec<&'static str> {
    match class(key) {
        Class::Region => REGIONS.to_vec(),
        Class::Zone => ZONES.iter().map(|(z, _)| *z).collect(),
        Class::Host => HOSTS.to_vec(),
        Class::Other => vec!["a", "b"],
    }
}

fn requirement() -> impl Strategy<Value = TopologyRequirement> {
    let keys = vec![
        GA_REGION,
        LEGACY_REGION,
        GA_ZONE,
        EBS_ZONE,
        ALI_ZONE,
        HOSTNAME,
        POOL,
    ];
    (
        select(keys),
        select(vec![
            TopologyOp::In,
            TopologyOp::In,
            TopologyOp::NotIn,
            TopologyOp::Exists,
        ]),
    )
        .prop_flat_map(|(key, op)| {
            let vals = values_for(key);
            let n = vals.len();
            subsequence(vals, 1..=n.min(3)).prop_map(move |values| TopologyRequirement {
                key: key.to_string(),
                op,
                values: if op == TopologyOp::Exists {
                    Vec::new()
                } else {
                    values.into_iter().map(str::to_string).collect()
                },
            })
        })
}

fn labels() -> impl Strategy<Value = Vec<(String, String)>> {
    let region = proptest::option::of((select(REGION_KEYS.to_vec()), select(REGIONS.to_vec())));
    let zone_values: Vec<&str> = ZONES.iter().map(|(z, _)| *z).collect();
    let zone = proptest::option::of((select(ZONE_KEYS.to_vec()), subsequence(zone_values, 1..=2)));
    (region, zone).prop_map(|(r, z)| {
        let mut out = Vec::new();
        if let Some((k, v)) = r {
            out.push((k.to_string(), v.to_string()));
        }
        if let Some((k, zs)) = z {
            out.push((k.to_string(), zs.join("__")));
        }
        out
    })
}

fn terms() -> impl Strategy<Value = Option<Vec<Vec<TopologyRequirement>>>> {
    proptest::option::of(proptest::collection::vec(
        proptest::collection::vec(requirement(), 0..=3),
        1..=3,
    ))
}

#[test]
fn the_vocabulary_matches_the_catalogue() {
    let cat = Catalogue::builtin();
    for r in REGIONS {
        let known = *r != "dc-onprem-1";
        assert_eq!(cat.is_mainland_region(r), MAINLAND.contains(r), "{r}");
        assert_eq!(
            !matches!(
                cat.lookup(None, r),
                residency_guard::engine::RegionLookup::Unknown
            ),
            known,
            "{r}"
        );
    }
    for (z, region) in ZONES {
        assert_eq!(cat.zone_region(z), *region, "{z}");
    }
    assert_eq!(cat.zone_region(OTHER_ZONE), None);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    #[test]
    fn volume_location_agrees_with_the_brute_force_model(
        terms in terms(),
        labels in labels(),
    ) {
        let located = locate_volume(terms.as_deref(), &labels, Catalogue::builtin(), None);
        let admitted = admitted(&terms, &labels);
        prop_assert_eq!(
            located.is_mainland(),
            model_mainland(&admitted),
            "engine says {:?}; the PV admits {:?}",
            located,
            admitted
        );
        if let VolumeLocation::Outside { region, .. } = &located {
            prop_assert!(!MAINLAND.contains(&region.as_str()));
            let named: BTreeSet<&str> = admitted.iter().map(|(r, _, _)| *r).collect();
            prop_assert!(
                named.contains(region.as_str()),
                "engine names {} but the PV admits {:?}",
                region,
                admitted
            );
        }
        if let VolumeLocation::Mainland { regions } = &located {
            let named: BTreeSet<&str> = admitted.iter().map(|(r, _, _)| *r).collect();
            for r in regions {
                prop_assert!(named.contains(r.as_str()), "{} not admitted", r);
            }
        }
    }
}
