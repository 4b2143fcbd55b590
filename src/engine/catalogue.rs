//! The jurisdiction catalogue: cloud region codes → where they are.
//!
//! The built-in table is `data/jurisdictions.yaml` (each entry cites its
//! source); users extend or override it with a file in the same format.
//! The same code can mean different places at different providers
//! (`ap-southeast-1` is Singapore at AWS but Hong Kong at Huawei), so entries
//! are keyed by (provider, region) and a region alone is only trusted when
//! every provider that uses it agrees on mainland-or-not.
//!
//! Zones are placed two ways: explicit `zones:` entries, and `zone-rules:`,
//! one per way a provider documents its zone names (`<region>-<letter>`,
//! `<region><letter>`, `<region>-<n>`, a numeric zone ID per region). A
//! rule only ever maps a zone to a region the catalogue already has for
//! that provider, so an unknown region never maps, and a zone every
//! reading of which does not name the same region maps to nothing.

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
    /// Why no zone of this region can be placed (no documented zone naming,
    /// no sourced zone list). Only the catalogue's own tests read it: they
    /// require every region to place its zones or say here why not.
    #[serde(default, rename = "no-zones", skip_serializing_if = "Option::is_none")]
    pub no_zones: Option<String>,
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

/// How a provider spells its zones, relative to a region code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ZoneForm {
    /// `<region><letter>`: `cn-north-1a` (AWS), `cn-north-4a` (Huawei).
    Letter,
    /// `<region>-<letter>`: `cn-beijing-h` (Alibaba), `asia-east2-a` (GCP).
    DashLetter,
    /// `<region>-<number>`: `ap-guangzhou-3` (Tencent), `chinanorth3-1` (Azure).
    DashNumber,
    /// `<region>-<two digits>`: `cn-sh2-02`, `hk-01` (UCloud).
    DashPadded,
    /// A decimal zone ID whose thousands are the rule's `prefix`, in the
    /// rule's `region`: `100003` is zone 3 of Tencent's `gz`.
    ZoneId,
    /// `zone<LETTER>` (`zoneA`): names a zone only together with a region
    /// label, never a region by itself (Baidu). `zone_region` ignores it.
    Qualified,
}

/// Which region codes a rule applies to, by their last character.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RegionEnding {
    Letter,
    Digit,
}

/// A provider's documented zone naming. It applies to every region the
/// catalogue has for that provider (optionally only those whose code ends
/// in a letter or a digit), never to a region the catalogue lacks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ZoneRule {
    pub provider: String,
    pub form: ZoneForm,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region_ends_with: Option<RegionEnding>,
    /// When not empty, the rule applies only to region codes starting with
    /// one of these (Tencent's `<region>-<n>` is for its API names `ap-...`,
    /// not for the abbreviations TKE puts on nodes).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub region_prefixes: Vec<String>,
    /// `zone-id` only: the zone ID divided by 1000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<u32>,
    /// `zone-id` only: the region those zone IDs are in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

impl ZoneRule {
    /// The region code this rule reads `zone` as being in, before checking
    /// that the catalogue has it.
    fn candidate<'z>(&'z self, zone: &'z str) -> Option<&'z str> {
        let region = match self.form {
            ZoneForm::Letter => zone
                .strip_suffix(|c: char| c.is_ascii_lowercase())
                .filter(|r| !r.ends_with('-')),
            ZoneForm::DashLetter => zone
                .strip_suffix(|c: char| c.is_ascii_lowercase())
                .and_then(|r| r.strip_suffix('-')),
            ZoneForm::DashNumber => zone
                .rsplit_once('-')
                .filter(|(_, n)| zone_number(n))
                .map(|(r, _)| r),
            ZoneForm::DashPadded => zone
                .rsplit_once('-')
                .filter(|(_, n)| {
                    n.len() == 2 && n.bytes().all(|b| b.is_ascii_digit()) && *n != "00"
                })
                .map(|(r, _)| r),
            ZoneForm::ZoneId => {
                let id = (zone.len() == 6 && zone.bytes().all(|b| b.is_ascii_digit()))
                    .then(|| zone.parse::<u32>().ok())
                    .flatten()?;
                (Some(id / 1000) == self.prefix && id % 1000 != 0)
                    .then_some(self.region.as_deref())
                    .flatten()
            }
            ZoneForm::Qualified => None,
        }?;
        (!region.is_empty() && self.applies_to(region)).then_some(region)
    }

    /// Whether the rule is for region codes spelled like `region`.
    fn applies_to(&self, region: &str) -> bool {
        let ends_ok = match self.region_ends_with {
            None => true,
            Some(RegionEnding::Letter) => region.ends_with(|c: char| c.is_ascii_alphabetic()),
            Some(RegionEnding::Digit) => region.ends_with(|c: char| c.is_ascii_digit()),
        };
        ends_ok
            && (self.region_prefixes.is_empty()
                || self
                    .region_prefixes
                    .iter()
                    .any(|p| region.starts_with(p.as_str())))
    }

    /// An example zone name this rule places in `region` (for tests and
    /// docs); `None` when the rule does not apply to that region.
    pub fn example_zone(&self, region: &str) -> Option<String> {
        if !self.applies_to(region) {
            return None;
        }
        match self.form {
            ZoneForm::Letter => Some(format!("{region}a")),
            ZoneForm::DashLetter => Some(format!("{region}-a")),
            ZoneForm::DashNumber => Some(format!("{region}-1")),
            ZoneForm::DashPadded => Some(format!("{region}-01")),
            ZoneForm::ZoneId => (self.region.as_deref() == Some(region))
                .then(|| self.prefix.map(|p| format!("{:06}", p * 1000 + 1)))
                .flatten(),
            ZoneForm::Qualified => Some("zoneA".to_string()),
        }
    }

    /// Whether `zone` names a zone of `region` under this rule, reading a
    /// `qualified` zone together with the region it is labelled beside.
    pub fn places(&self, zone: &str, region: &str) -> bool {
        match self.form {
            ZoneForm::Qualified => zone
                .strip_prefix("zone")
                .is_some_and(|l| l.len() == 1 && l.bytes().all(|b| b.is_ascii_uppercase())),
            _ => self.candidate(zone) == Some(region),
        }
    }
}

/// A zone number as providers write them: 1 to 99, no leading zero.
fn zone_number(n: &str) -> bool {
    (1..=2).contains(&n.len()) && n.bytes().all(|b| b.is_ascii_digit()) && !n.starts_with('0')
}

/// What the catalogue records about a provider as a whole: the scheme of
/// its nodes' `spec.providerID` and the CSI zone keys its disk drivers
/// write (each `ZONE_KEYS` member, which the tests check), with sources.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ProviderEntry {
    pub provider: String,
    pub name: String,
    /// The providerID format, e.g. `aws:///<zone>/<instance-id>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_id: Option<String>,
    /// Topology keys the provider's disk CSI driver pins volumes with.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub csi_zone_keys: Vec<String>,
    /// Labels the provider's managed Kubernetes puts on nodes, as written.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub node_labels: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// When the sources of this provider's region entries were read
    /// (`YYYY-MM-DD`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regions_checked: Option<String>,
    /// When the sources of its zone rules and zones were read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zones_checked: Option<String>,
}

/// What a providerID template captured: `{region}` and `{zone}` values.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProviderIdParts<'a> {
    pub region: Option<&'a str>,
    pub zone: Option<&'a str>,
}

impl ProviderEntry {
    /// Match `id` against this provider's `provider-id` template: literal
    /// text must match exactly; `{region}`, `{zone}` and `{instance}` each
    /// match a non-empty run without `/` up to the next literal (or the
    /// end). `None` when the template does not fit (or there is none).
    pub fn match_provider_id<'a>(&self, id: &'a str) -> Option<ProviderIdParts<'a>> {
        let template = self.provider_id.as_deref()?;
        let tokens = template_tokens(template)?;
        let mut parts = ProviderIdParts::default();
        let mut rest = id;
        let mut iter = tokens.iter().peekable();
        while let Some(token) = iter.next() {
            match token {
                Token::Literal(lit) => rest = rest.strip_prefix(lit)?,
                Token::Field(field) => {
                    let end = match iter.peek() {
                        Some(Token::Literal(next)) => rest.find(next)?,
                        Some(Token::Field(_)) => return None,
                        None => rest.len(),
                    };
                    let (value, after) = rest.split_at(end);
                    if value.is_empty() || value.contains('/') {
                        return None;
                    }
                    match *field {
                        "region" => parts.region = Some(value),
                        "zone" => parts.zone = Some(value),
                        _ => {}
                    }
                    rest = after;
                }
            }
        }
        rest.is_empty().then_some(parts)
    }
}

enum Token<'t> {
    Literal(&'t str),
    Field(&'t str),
}

/// A template's literal runs and `{field}`s; `None` for an unknown field
/// or an unclosed brace.
fn template_tokens(template: &str) -> Option<Vec<Token<'_>>> {
    let mut tokens = Vec::new();
    let mut rest = template;
    while !rest.is_empty() {
        match rest.find('{') {
            Some(0) => {
                let close = rest.find('}')?;
                let field = &rest[1..close];
                if !matches!(field, "region" | "zone" | "instance") {
                    return None;
                }
                tokens.push(Token::Field(field));
                rest = &rest[close + 1..];
            }
            Some(open) => {
                tokens.push(Token::Literal(&rest[..open]));
                rest = &rest[open..];
            }
            None => {
                tokens.push(Token::Literal(rest));
                rest = "";
            }
        }
    }
    Some(tokens)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CatalogueFile {
    #[serde(default)]
    providers: Vec<ProviderEntry>,
    #[serde(default)]
    regions: Vec<RegionEntry>,
    #[serde(default)]
    zones: Vec<ZoneEntry>,
    #[serde(default, rename = "zone-rules")]
    zone_rules: Vec<ZoneRule>,
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
    rules: Vec<ZoneRule>,
    providers: BTreeMap<String, ProviderEntry>,
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
        for rule in file.zone_rules {
            if rule.provider.is_empty() {
                return Err(CatalogueError(format!(
                    "zone rule {rule:?} needs a provider"
                )));
            }
            match (rule.form, rule.prefix, rule.region.as_deref()) {
                (ZoneForm::ZoneId, Some(_), Some(region)) => {
                    if !cat.provider_has_region(&rule.provider, region) {
                        return Err(CatalogueError(format!(
                            "zone rule of {} names region {region}, which has no entry for that provider",
                            rule.provider
                        )));
                    }
                }
                (ZoneForm::ZoneId, _, _) => {
                    return Err(CatalogueError(format!(
                        "zone rule {rule:?}: a zone-id rule needs a prefix and a region"
                    )));
                }
                (_, None, None) => {}
                _ => {
                    return Err(CatalogueError(format!(
                        "zone rule {rule:?}: only a zone-id rule has a prefix and a region"
                    )));
                }
            }
            cat.insert_rule(rule);
        }
        for provider in file.providers {
            if provider.provider.is_empty() {
                return Err(CatalogueError(format!(
                    "provider entry {provider:?} needs a provider"
                )));
            }
            cat.providers.insert(provider.provider.clone(), provider);
        }
        Ok(cat)
    }

    /// Add a zone rule (an identical one is kept once).
    pub fn insert_rule(&mut self, rule: ZoneRule) {
        if !self.rules.iter().any(|r| {
            r.provider == rule.provider
                && r.form == rule.form
                && r.region_ends_with == rule.region_ends_with
                && r.region_prefixes == rule.region_prefixes
                && r.prefix == rule.prefix
                && r.region == rule.region
        }) {
            self.rules.push(rule);
        }
    }

    pub fn zone_rules(&self) -> &[ZoneRule] {
        &self.rules
    }

    pub fn providers(&self) -> impl Iterator<Item = &ProviderEntry> {
        self.providers.values()
    }

    /// The provider whose `provider-id` template `id` fits (the first, by
    /// name, when several do), and the region the template's `{region}`
    /// names or its `{zone}` places for that provider, when the catalogue
    /// has it for that provider. Only templates that start with a scheme
    /// (`name://`) are tried: one that starts with a field (Alibaba's
    /// `{region}.{instance}`) would claim any dotted string.
    pub fn locate_provider_id<'s>(&'s self, id: &str) -> Option<(&'s str, Option<&'s str>)> {
        self.providers.values().find_map(|p| {
            let scheme = p
                .provider_id
                .as_deref()
                .and_then(|t| t.split_once("://"))
                .is_some_and(|(before, _)| !before.is_empty() && !before.contains('{'));
            if !scheme {
                return None;
            }
            let parts = p.match_provider_id(id)?;
            let by_region = parts.region.and_then(|r| {
                self.by_region
                    .get_key_value(r)
                    .filter(|(_, l)| l.iter().any(|e| e.provider == p.provider))
                    .map(|(k, _)| k.as_str())
            });
            let by_zone = || {
                parts.zone.and_then(|z| {
                    let mut regions = self
                        .zone_readings(z)
                        .filter(|(provider, _)| *provider == p.provider)
                        .map(|(_, r)| r);
                    let first = regions.next()?;
                    regions.all(|r| r == first).then_some(first)
                })
            };
            Some((p.provider.as_str(), by_region.or_else(by_zone)))
        })
    }

    /// The (provider, region) readings of a zone code: explicit entries
    /// first, then every rule whose provider has the region it names.
    pub fn zone_readings<'s, 'z>(
        &'s self,
        zone: &'z str,
    ) -> impl Iterator<Item = (&'s str, &'s str)> + use<'s, 'z> {
        let explicit = self
            .by_zone
            .get(zone)
            .into_iter()
            .flatten()
            .map(|e| (e.provider.as_str(), e.region.as_str()));
        let ruled = self.rules.iter().filter_map(move |rule| {
            let region = rule.candidate(zone)?;
            let (key, list) = self.by_region.get_key_value(region)?;
            list.iter()
                .any(|e| e.provider == rule.provider)
                .then_some((rule.provider.as_str(), key.as_str()))
        });
        explicit.chain(ruled)
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

    /// The region a zone code belongs to, when every reading of it (the
    /// explicit entries and the providers' zone rules) names the same
    /// region (`None`: unknown or ambiguous).
    pub fn zone_region<'s>(&'s self, zone: &str) -> Option<&'s str> {
        let mut readings = self.zone_readings(zone).map(|(_, region)| region);
        let first = readings.next()?;
        readings.all(|r| r == first).then_some(first)
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
        for rule in other.rules {
            self.insert_rule(rule);
        }
        self.providers.extend(other.providers);
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
        // Rules: a zone of a region the catalogue has, spelled as the
        // provider documents it, maps; anything else does not.
        for (zone, region, mainland) in [
            ("cn-zhangjiakou-a", "cn-zhangjiakou", true),
            ("cn-wulanchabu-c", "cn-wulanchabu", true),
            ("ap-chengdu-1", "ap-chengdu", true),
            ("ap-nanjing-3", "ap-nanjing", true),
            ("ap-chongqing-1", "ap-chongqing", true),
            ("cn-north-4a", "cn-north-4", true),
            ("cn-north-1z", "cn-north-1", true),
            ("cn-north-1-pkx-1a", "cn-north-1", true),
            ("100003", "gz", true),
            ("800005", "bj", true),
            ("300002", "hk", false),
            ("ap-southeast-1a", "ap-southeast-1", false),
            ("asia-east2-a", "asia-east2", false),
            ("asia-east1-b", "asia-east1", false),
        ] {
            assert_eq!(cat.zone_region(zone), Some(region), "{zone}");
            assert_eq!(cat.is_mainland_region(region), mainland, "{zone}");
        }
        for unknown in [
            "cn-north-7a",      // no provider has cn-north-7
            "cn-hangzhou",      // a region, not a zone
            "cn-hangzhoua",     // Alibaba's cn- regions take a dash
            "ap-guangzhou-03",  // no leading zero
            "ap-guangzhou-100", // two digits at most
            "100000",           // zone 0
            "999001",           // no region has prefix 999
            "1000003",          // seven digits
            "zoneA",            // Baidu's: only beside a region label
            "gz-1",             // Tencent's <region>-<n> is for ap- names only
            "",
            "-a",
        ] {
            assert_eq!(cat.zone_region(unknown), None, "{unknown}");
        }
    }

    fn rule(provider: &str, form: ZoneForm) -> ZoneRule {
        ZoneRule {
            provider: provider.into(),
            form,
            region_ends_with: None,
            region_prefixes: Vec::new(),
            prefix: None,
            region: None,
            source: Some("test".into()),
        }
    }

    #[test]
    fn zone_rules_map_only_into_known_regions_and_only_when_every_reading_agrees() {
        let mut cat = Catalogue::parse_yaml(
            "regions:\n\
             - {provider: a, region: r-1, jurisdiction: mainland-china, country: CN}\n\
             - {provider: b, region: r-1a, jurisdiction: hong-kong, country: HK}\n\
             - {provider: b, region: r, jurisdiction: hong-kong, country: HK}\n",
        )
        .unwrap();
        cat.insert_rule(rule("a", ZoneForm::Letter));
        assert_eq!(cat.zone_region("r-1a"), Some("r-1"));
        assert_eq!(cat.zone_region("r-2a"), None, "r-2 is not in the catalogue");
        // b's dash-number reading of r-1 would need a region `r`... which b has.
        cat.insert_rule(rule("b", ZoneForm::DashNumber));
        assert_eq!(cat.zone_region("r-1"), Some("r"));
        // r-1ab: a reads r-1a? No: r-1a is b's region, and a's rule is a's.
        assert_eq!(cat.zone_region("r-1ab"), None);
        cat.insert_rule(rule("b", ZoneForm::Letter));
        // Now r-1ab reads as b's r-1a only; r-1a reads as a's r-1 and as
        // nothing of b's (b has no region r-1).
        assert_eq!(cat.zone_region("r-1ab"), Some("r-1a"));
        assert_eq!(cat.zone_region("r-1a"), Some("r-1"));
        // An explicit entry that disagrees with a rule: no answer.
        cat.insert_zone(ZoneEntry {
            provider: "b".into(),
            zone: "r-1a".into(),
            region: "r".into(),
            source: Some("test".into()),
        });
        assert_eq!(cat.zone_region("r-1a"), None);
        let readings: Vec<_> = cat.zone_readings("r-1a").collect();
        assert_eq!(readings, [("b", "r"), ("a", "r-1")]);
    }

    #[test]
    fn zone_rule_files_are_checked() {
        let regions =
            "regions:\n- {provider: t, region: gz, jurisdiction: mainland-china, country: CN}\n";
        for (bad, why) in [
            (
                "zone-rules:\n- {provider: t, form: zone-id, prefix: 100}\n",
                "needs a region",
            ),
            (
                "zone-rules:\n- {provider: t, form: zone-id, region: gz}\n",
                "needs a prefix",
            ),
            (
                "zone-rules:\n- {provider: t, form: zone-id, prefix: 1, region: sz}\n",
                "unknown region",
            ),
            (
                "zone-rules:\n- {provider: t, form: letter, prefix: 1}\n",
                "prefix on a letter rule",
            ),
            (
                "zone-rules:\n- {provider: '', form: letter}\n",
                "no provider",
            ),
            (
                "zone-rules:\n- {provider: t, form: hyphen}\n",
                "unknown form",
            ),
            (
                "zone-rules:\n- {provider: t, form: letter, colour: red}\n",
                "unknown field",
            ),
        ] {
            assert!(
                Catalogue::parse_yaml(&format!("{regions}{bad}")).is_err(),
                "{why}"
            );
        }
        let good = Catalogue::parse_yaml(&format!(
            "{regions}zone-rules:\n- {{provider: t, form: zone-id, prefix: 100, region: gz, source: s}}\n"
        ))
        .unwrap();
        assert_eq!(good.zone_region("100007"), Some("gz"));
        assert_eq!(good.zone_region("200007"), None);
        let rule = &good.zone_rules()[0];
        assert_eq!(rule.example_zone("gz").as_deref(), Some("100001"));
        assert_eq!(rule.example_zone("sh"), None);
    }

    #[test]
    fn qualified_zones_only_count_beside_a_region() {
        let cat = Catalogue::builtin();
        let baidu = cat
            .zone_rules()
            .iter()
            .find(|r| r.provider == "baidu")
            .expect("Baidu's rule");
        assert_eq!(baidu.form, ZoneForm::Qualified);
        assert!(baidu.places("zoneA", "bj"));
        assert!(!baidu.places("zonea", "bj"));
        assert!(!baidu.places("zoneAB", "bj"));
        assert_eq!(cat.zone_region("zoneA"), None);
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

#[cfg(test)]
mod provider_id_tests {
    use super::*;

    fn entry(template: &str) -> ProviderEntry {
        ProviderEntry {
            provider: "p".into(),
            name: "P".into(),
            provider_id: Some(template.into()),
            csi_zone_keys: Vec::new(),
            node_labels: Vec::new(),
            source: None,
            regions_checked: None,
            zones_checked: None,
        }
    }

    #[test]
    fn provider_id_templates_capture_region_and_zone_and_nothing_else() {
        let ucloud = entry("UCloud://{zone}//{instance}");
        let parts = ucloud
            .match_provider_id("UCloud://cn-sh2-02//uk8s-x")
            .unwrap();
        assert_eq!((parts.region, parts.zone), (None, Some("cn-sh2-02")));
        for bad in [
            "UCloud://cn-sh2-02/uk8s-x",   // one slash
            "UCloud:///uk8s-x",            // empty zone... and "/uk8s-x" has a '/'
            "UCloud://cn-sh2-02//",        // empty instance
            "UCloud://cn-sh2-02//a/b",     // instance with a '/'
            "ucloud://cn-sh2-02//uk8s-x",  // case
            "xUCloud://cn-sh2-02//uk8s-x", // prefix
        ] {
            assert_eq!(ucloud.match_provider_id(bad), None, "{bad}");
        }
        let ali = entry("{region}.{instance}");
        let parts = ali.match_provider_id("cn-hangzhou.i-bp1").unwrap();
        assert_eq!(parts.region, Some("cn-hangzhou"));
        assert_eq!(entry("{region}{instance}").match_provider_id("ab"), None);
        assert_eq!(entry("x://{colour}").match_provider_id("x://red"), None);
        assert_eq!(entry("x://{zone").match_provider_id("x://a"), None);
        let volc = entry("volcengine://{instance}");
        assert_eq!(
            volc.match_provider_id("volcengine://i-1"),
            Some(ProviderIdParts::default())
        );
    }

    #[test]
    fn a_provider_id_locates_only_into_its_own_providers_regions() {
        let cat = Catalogue::builtin();
        assert_eq!(
            cat.locate_provider_id("UCloud://cn-sh2-02//n"),
            Some(("ucloud", Some("cn-sh2")))
        );
        assert_eq!(
            cat.locate_provider_id("volcengine://i-1"),
            Some(("volcengine", None))
        );
        // cn-north-1a is AWS's and Huawei's spelling, never UCloud's.
        assert_eq!(
            cat.locate_provider_id("UCloud://cn-north-1a//n"),
            Some(("ucloud", None))
        );
        assert_eq!(cat.locate_provider_id("nothing://x"), None);
        // Alibaba's template starts with a field: never tried generically.
        assert_eq!(cat.locate_provider_id("foo.bar"), None);
        assert_eq!(cat.locate_provider_id("cn-hangzhou.i-1"), None);
    }
}
