//! Where the report's reference data comes from: the jurisdiction
//! catalogue and the address data, bundled or the user's, each with its
//! SHA-256, version, date, licence and source as its own header states them
//! (see data/PROVENANCE.md).

use std::path::Path;

use sha2::{Digest, Sha256};

use super::model::DataSource;
use crate::datafiles::DataSources;

const BUNDLED_CATALOGUE: &str = include_str!("../../data/jurisdictions.yaml");
const BUNDLED_MAINLAND: &str = crate::engine::BUNDLED_MAINLAND_CIDRS;
const BUNDLED_HINTS: &str = include_str!("../../data/country-hints.cidrs");

/// Lower-case hex SHA-256.
pub fn sha256_hex(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    let mut out = String::with_capacity(64);
    for b in digest.iter() {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// What a data file's comment header says about itself.
#[derive(Default)]
struct Header {
    version: Option<String>,
    date: Option<String>,
    licence: Option<String>,
    source: Option<String>,
}

fn header(text: &str) -> Header {
    let mut h = Header::default();
    for line in text
        .lines()
        .take_while(|l| l.starts_with('#') || l.trim().is_empty())
    {
        let line = line.trim_start_matches('#').trim();
        if let Some(rest) = line.strip_prefix("Source:") {
            h.source.get_or_insert_with(|| {
                rest.trim()
                    .trim_end_matches('.')
                    .split(" (")
                    .next()
                    .unwrap_or_default()
                    .to_string()
            });
        } else if let Some(rest) = line.strip_prefix("Licence:") {
            h.licence.get_or_insert_with(|| {
                rest.split(" (")
                    .next()
                    .unwrap_or_default()
                    .trim()
                    .to_string()
            });
        } else if let Some(rest) = line.strip_prefix("Database created:") {
            h.date
                .get_or_insert_with(|| rest.trim().chars().take(10).collect());
        } else if let Some(rest) = line.strip_prefix("Catalogue date:") {
            h.date
                .get_or_insert_with(|| rest.trim().chars().take(10).collect());
        } else if let Some(rest) = line.strip_prefix("Debian package ") {
            let words: Vec<&str> = rest.split_whitespace().take(2).collect();
            h.version.get_or_insert_with(|| words.join(" "));
        }
    }
    h
}

fn data_lines(text: &str) -> usize {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .count()
}

/// Region entries: the items of the top-level `regions:` list (the
/// `providers:`, `zones:` and `zone-rules:` lists are not regions).
fn catalogue_entries(text: &str) -> usize {
    let mut in_regions = false;
    text.lines()
        .filter(|l| {
            if !l.starts_with([' ', '#', '-']) && !l.is_empty() {
                in_regions = l.trim_end() == "regions:";
            }
            in_regions && {
                let item = l.trim_start();
                item.starts_with("- provider:") || item.starts_with("- {provider:")
            }
        })
        .count()
}

fn describe(
    name: &'static str,
    origin: String,
    text: &str,
    entries: usize,
    licence_default: Option<&str>,
) -> DataSource {
    let h = header(text);
    DataSource {
        name,
        origin,
        sha256: Some(sha256_hex(text.as_bytes())),
        entries,
        version: h.version,
        date: h.date,
        licence: h.licence.or_else(|| licence_default.map(str::to_string)),
        source: h.source,
    }
}

fn read(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("{}: cannot read: {e}", path.display()))
}

/// The data sources in force for these flags (read again from disk: the
/// same files `DataSources::load` read moments before).
pub fn sources(data: &DataSources) -> Result<Vec<DataSource>, String> {
    let mut out = vec![describe(
        "jurisdictionCatalogue",
        "bundled".into(),
        BUNDLED_CATALOGUE,
        catalogue_entries(BUNDLED_CATALOGUE),
        Some("Apache-2.0 (residency-guard; every entry cites its source)"),
    )];
    for path in &data.catalogue {
        let text = read(path)?;
        out.push(describe(
            "jurisdictionCatalogue",
            path.display().to_string(),
            &text,
            catalogue_entries(&text),
            None,
        ));
    }
    match &data.mainland_cidrs {
        Some(path) => {
            let text = read(path)?;
            out.push(describe(
                "mainlandCidrs",
                path.display().to_string(),
                &text,
                data_lines(&text),
                None,
            ));
        }
        None => out.push(describe(
            "mainlandCidrs",
            "bundled".into(),
            BUNDLED_MAINLAND,
            data_lines(BUNDLED_MAINLAND),
            None,
        )),
    }
    for path in &data.extra_mainland_cidrs {
        let text = read(path)?;
        out.push(describe(
            "extraMainlandCidrs",
            path.display().to_string(),
            &text,
            data_lines(&text),
            None,
        ));
    }
    out.push(describe(
        "countryHints",
        "bundled".into(),
        BUNDLED_HINTS,
        data_lines(BUNDLED_HINTS),
        None,
    ));
    if !data.cluster_cidrs.is_empty() {
        let mut cidrs: Vec<String> = data
            .cluster_cidrs
            .iter()
            .flat_map(|c| c.split(','))
            .map(|c| c.trim().to_string())
            .filter(|c| !c.is_empty())
            .collect();
        cidrs.sort();
        out.push(DataSource {
            name: "clusterCidrs",
            origin: "--cluster-cidr".into(),
            sha256: None,
            entries: cidrs.len(),
            version: None,
            date: None,
            licence: None,
            source: Some(cidrs.join(", ")),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bundled_headers_are_read() {
        let all = sources(&DataSources::default()).unwrap();
        let mainland = all.iter().find(|d| d.name == "mainlandCidrs").unwrap();
        assert_eq!(mainland.origin, "bundled");
        assert_eq!(mainland.licence.as_deref(), Some("CC BY-SA 4.0"));
        let stated = crate::freshness::stated_date(BUNDLED_MAINLAND)
            .map(|t| t.strftime("%Y-%m-%d").to_string());
        assert!(stated.is_some());
        assert_eq!(
            mainland.date, stated,
            "the report and the age check read one date"
        );
        assert!(
            mainland
                .version
                .as_deref()
                .is_some_and(|v| v.starts_with("libloc-database ")),
            "{:?}",
            mainland.version
        );
        assert!(mainland.entries > 10_000);
        let catalogue = all
            .iter()
            .find(|d| d.name == "jurisdictionCatalogue")
            .unwrap();
        assert_eq!(
            catalogue.entries,
            crate::engine::Catalogue::builtin().len(),
            "the report counts region entries, not providers, zones or zone rules"
        );
        assert!(catalogue.date.is_some());
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
