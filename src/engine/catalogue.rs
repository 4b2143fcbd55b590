//! The jurisdiction catalogue: cloud region codes → where they are.
//!
//! The built-in table is `data/jurisdictions.yaml` (each entry cites its
//! source); users extend or override it with a file in the same format.
//! The same code can mean different places at different providers
//! (`ap-southeast-1` is Singapore at AWS but Hong Kong at Huawei), so entries
//! are keyed by (provider, region) and a region alone is only trusted when
//! every provider that uses it agrees on mainland-or-not.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use serde::{Deserialize, Serialize};

const BUILTIN_YAML: &str = include_str!("../../data/jurisdictions.yaml");

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Jurisdiction {
    MainlandChina,
    HongKong,
    Macau,
    Taiwan,
    Foreign,
}

impl Jurisdiction {
    pub fn is_mainland(self) -> bool {
        self == Jurisdiction::MainlandChina
    }

    pub fn describe_en(self) -> &'static str {
        match self {
            Jurisdiction::MainlandChina => "mainland China",
            Jurisdiction::HongKong => "Hong Kong",
            Jurisdiction::Macau => "Macau",
            Jurisdiction::Taiwan => "Taiwan",
            Jurisdiction::Foreign => "outside China",
        }
    }

    pub fn describe_zh(self) -> &'static str {
        match self {
            Jurisdiction::MainlandChina => "中国大陆",
            Jurisdiction::HongKong => "中国香港",
            Jurisdiction::Macau => "中国澳门",
            Jurisdiction::Taiwan => "中国台湾",
            Jurisdiction::Foreign => "境外",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegionEntry {
    pub provider: String,
    pub region: String,
    pub jurisdiction: Jurisdiction,
    pub country: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operator: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

/// A zone code and the region it belongs to, at one provider. Volumes'
/// topology often names only a zone; the region's entry (same provider)
/// says where it is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ZoneEntry {
    pub provider: String,
    pub zone: String,
    pub region: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CatalogueFile {
    #[serde(default)]
    regions: Vec<RegionEntry>,
    #[serde(default)]
    zones: Vec<ZoneEntry>,
}

#[derive(Debug, thiserror::Error)]
#[error("jurisdiction catalogue: {0}")]
pub struct CatalogueError(String);

/// What the catalogue knows about one region code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegionLookup<'a> {
    /// One meaning (or several that agree on mainland-or-not).
    Known(&'a RegionEntry),
    /// The provider is known and does not use this code.
    NotOfProvider,
    /// Providers disagree on whether this code is mainland; the provider is unknown.
    Ambiguous,
    Unknown,
}

#[derive(Clone, Debug, Default)]
pub struct Catalogue {
    by_region: BTreeMap<String, Vec<RegionEntry>>,
    by_zone: BTreeMap<String, Vec<ZoneEntry>>,
}

static BUILTIN: LazyLock<Catalogue> = LazyLock::new(|| {
    // The built-in file is tested to parse; should it ever not, an empty
    // catalogue fails closed (no node counts as mainland).
    Catalogue::parse_yaml(BUILTIN_YAML).unwrap_or_default()
});

impl Catalogue {
    pub fn builtin() -> &'static Catalogue {
        &BUILTIN
    }

    pub fn parse_yaml(text: &str) -> Result<Catalogue, CatalogueError> {
        let file: CatalogueFile =
            serde_norway::from_str(text).map_err(|e| CatalogueError(e.to_string()))?;
        let mut cat = Catalogue::default();
        for entry in file.regions {
            if entry.provider.is_empty() || entry.region.is_empty() {
                return Err(CatalogueError(format!(
                    "entry {entry:?} needs a provider and a region"
                )));
            }
            cat.insert(entry);
        }
        for zone in file.zones {
            if zone.provider.is_empty() || zone.zone.is_empty() || zone.region.is_empty() {
                return Err(CatalogueError(format!(
                    "zone entry {zone:?} needs a provider, a zone and a region"
                )));
            }
            if !cat.provider_has_region(&zone.provider, &zone.region) {
                return Err(CatalogueError(format!(
                    "zone {} of {} names region {}, which has no entry for that provider",
                    zone.zone, zone.provider, zone.region
                )));
            }
            cat.insert_zone(zone);
        }
        Ok(cat)
    }

    /// Add or replace the entry for (provider, zone).
    pub fn insert_zone(&mut self, entry: ZoneEntry) {
        let list = self.by_zone.entry(entry.zone.clone()).or_default();
        list.retain(|e| e.provider != entry.provider);
        list.push(entry);
    }

    pub fn zones(&self) -> impl Iterator<Item = &ZoneEntry> {
        self.by_zone.values().flatten()
    }

    /// The region a zone code belongs to, when every provider that uses the
    /// code agrees on the region (`None`: unknown or ambiguous).
    pub fn zone_region(&self, zone: &str) -> Option<&str> {
        let list = self.by_zone.get(zone)?;
        let (first, rest) = list.split_first()?;
        rest.iter()
            .all(|e| e.region == first.region)
            .then_some(first.region.as_str())
    }

    /// Add or replace the entry for (provider, region).
    pub fn insert(&mut self, entry: RegionEntry) {
        let list = self.by_region.entry(entry.region.clone()).or_default();
        list.retain(|e| e.provider != entry.provider);
        list.push(entry);
    }

    /// Layer `other` over `self` (user entries override built-in ones).
    pub fn extend(&mut self, other: Catalogue) {
        for entry in other.by_region.into_values().flatten() {
            self.insert(entry);
        }
        for zone in other.by_zone.into_values().flatten() {
            self.insert_zone(zone);
        }
    }

    pub fn len(&self) -> usize {
        self.by_region.values().map(Vec::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.by_region.is_empty()
    }

    pub fn entries(&self) -> impl Iterator<Item = &RegionEntry> {
        self.by_region.values().flatten()
    }

    pub fn provider_has_region(&self, provider: &str, region: &str) -> bool {
        self.by_region
            .get(region)
            .is_some_and(|l| l.iter().any(|e| e.provider == provider))
    }

    pub fn lookup(&self, provider: Option<&str>, region: &str) -> RegionLookup<'_> {
        let Some(list) = self.by_region.get(region) else {
            return RegionLookup::Unknown;
        };
        if let Some(p) = provider {
            return match list.iter().find(|e| e.provider == p) {
                Some(e) => RegionLookup::Known(e),
                None => RegionLookup::NotOfProvider,
            };
        }
        match list.split_first() {
            None => RegionLookup::Unknown,
            Some((first, rest)) => {
                let mainland = first.jurisdiction.is_mainland();
                if rest
                    .iter()
                    .all(|e| e.jurisdiction.is_mainland() == mainland)
                {
                    RegionLookup::Known(first)
                } else {
                    RegionLookup::Ambiguous
                }
            }
        }
    }

    /// A region code every provider that uses it places in mainland China.
    /// This is what a pod's `region In [...]` must be made of to count as a
    /// guarantee.
    pub fn is_mainland_region(&self, region: &str) -> bool {
        matches!(self.lookup(None, region), RegionLookup::Known(e) if e.jurisdiction.is_mainland())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_catalogue_parses_and_knows_the_look_alikes() {
        let cat = Catalogue::parse_yaml(BUILTIN_YAML).expect("built-in catalogue must parse");
        assert!(cat.len() > 50, "only {} entries", cat.len());
        for mainland in [
            "cn-north-1",
            "cn-northwest-1",
            "cn-hangzhou",
            "chinaeast2",
            "ap-beijing",
        ] {
            assert!(
                cat.is_mainland_region(mainland),
                "{mainland} should be mainland"
            );
        }
        for outside in [
            "cn-hongkong",
            "ap-hongkong",
            "eastasia",
            "ap-east-1",
            "ap-southeast-1",
            "us-east-1",
        ] {
            assert!(
                !cat.is_mainland_region(outside),
                "{outside} should be outside"
            );
        }
        let huawei = cat.lookup(Some("huawei"), "ap-southeast-1");
        assert!(
            matches!(huawei, RegionLookup::Known(e) if e.jurisdiction == Jurisdiction::HongKong)
        );
        let aws = cat.lookup(Some("aws"), "ap-southeast-1");
        assert!(matches!(aws, RegionLookup::Known(e) if e.country == "SG"));
        for e in cat.entries() {
            assert!(
                e.source.as_deref().is_some_and(|s| !s.is_empty()),
                "{e:?} cites no source"
            );
        }
        for z in cat.zones() {
            assert!(
                z.source.as_deref().is_some_and(|s| !s.is_empty()),
                "{z:?} cites no source"
            );
            assert!(
                z.zone.starts_with(&z.region),
                "{z:?}: a zone code starts with its region's"
            );
        }
        for (zone, region, mainland) in [
            ("cn-north-1a", "cn-north-1", true),
            ("cn-north-1d", "cn-north-1", true),
            ("cn-northwest-1c", "cn-northwest-1", true),
            ("cn-beijing-h", "cn-beijing", true),
            ("cn-shanghai-l", "cn-shanghai", true),
            ("chinanorth3-1", "chinanorth3", true),
            ("ap-guangzhou-3", "ap-guangzhou", true),
            ("ap-east-1a", "ap-east-1", false),
            ("cn-hongkong-b", "cn-hongkong", false),
            ("eastasia-1", "eastasia", false),
        ] {
            assert_eq!(cat.zone_region(zone), Some(region), "{zone}");
            assert_eq!(cat.is_mainland_region(region), mainland, "{zone}");
        }
        assert_eq!(cat.zone_region("cn-north-1z"), None);
    }

    #[test]
    fn user_entries_override_and_extend() {
        let mut cat = Catalogue::builtin().clone();
        let user = Catalogue::parse_yaml(
            "regions:\n- {provider: onprem, region: dc-shanghai-1, jurisdiction: mainland-china, country: CN}\n",
        )
        .unwrap();
        cat.extend(user);
        assert!(cat.is_mainland_region("dc-shanghai-1"));
        assert!(Catalogue::parse_yaml("regions: [{provider: x}]").is_err());
        let zoned = Catalogue::parse_yaml(
            "zones:\n- {provider: onprem, zone: dc-shanghai-1a, region: dc-shanghai-1, source: x}\n",
        );
        assert!(zoned.is_err(), "a zone's region must have an entry");
        cat.extend(
            Catalogue::parse_yaml(
                "regions:\n- {provider: onprem, region: dc-shanghai-1, jurisdiction: mainland-china, country: CN}\nzones:\n- {provider: onprem, zone: dc-shanghai-1a, region: dc-shanghai-1, source: x}\n",
            )
            .unwrap(),
        );
        assert_eq!(cat.zone_region("dc-shanghai-1a"), Some("dc-shanghai-1"));
        assert!(Catalogue::parse_yaml("not: yaml: [").is_err());
    }
}
