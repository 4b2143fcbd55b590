//! How old the mainland-China address data is, and the warning when it is
//! older than the operator allows (`--max-address-data-age-days`, chart
//! value `mainlandCidrs.maxAgeDays`, default 180 days).
//!
//! The date is the one the data states in its own header,
//! `# Database created: 2025-03-26 04:43:02 UTC` (written by
//! scripts/mainland_cidrs.py; a hand-made list may say `2025-03-26`). The
//! callers pass the clock, so `check --now` and the tests see fixed ages.
//! `check` and `report` print the warning, `serve` logs it at start and
//! exposes the age as metrics ([`AddressDataMetrics`]).

use std::fmt::Write;

use jiff::Timestamp;
use jiff::civil::{Date, DateTime};
use jiff::tz::TimeZone;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::gauge::ConstGauge;

use crate::engine::{Lang, Message, Text};

/// The default of `--max-address-data-age-days`.
pub const DEFAULT_MAX_AGE_DAYS: u32 = 180;

const DAY_SECONDS: i64 = 86_400;

/// The header field that dates a mainland-CIDR list.
pub const DATE_FIELD: &str = "Database created:";

/// The date a mainland-CIDR list's comment header states, if any. Only the
/// leading comment block is read; the first `Database created:` counts.
pub fn stated_date(text: &str) -> Option<Timestamp> {
    text.lines()
        .take_while(|l| l.trim_start().starts_with('#') || l.trim().is_empty())
        .map(|l| l.trim().trim_start_matches('#').trim())
        .find_map(|l| l.strip_prefix(DATE_FIELD))
        .and_then(parse_date)
}

/// `2025-03-26 04:43:02 UTC; ...`, `2025-03-26T04:43:02Z` or `2025-03-26`
/// (midnight UTC). Whatever follows a `;` is commentary.
fn parse_date(field: &str) -> Option<Timestamp> {
    let value = field.split(';').next()?.trim();
    if let Ok(t) = value.parse::<Timestamp>() {
        return Some(t);
    }
    let local = value.strip_suffix("UTC").unwrap_or(value).trim();
    if let Ok(dt) = local.parse::<DateTime>() {
        return dt.to_zoned(TimeZone::UTC).ok().map(|z| z.timestamp());
    }
    let date = local.parse::<Date>().ok()?;
    date.to_zoned(TimeZone::UTC).ok().map(|z| z.timestamp())
}

/// The address data in force and the age it may reach.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AddressDataAge {
    /// `bundled`, or the path of the user's list (`--mainland-cidrs`).
    pub origin: String,
    /// What its header states; `None` when it states no date.
    pub created: Option<Timestamp>,
    /// Warn beyond this many days; 0 turns the check off.
    pub max_age_days: u32,
}

impl AddressDataAge {
    /// Whole seconds from the data's date to `now` (negative if the date is
    /// in the future).
    pub fn age_seconds(&self, now: Timestamp) -> Option<i64> {
        self.created
            .map(|created| now.as_second() - created.as_second())
    }

    /// Older than allowed, or of unknown age while a limit is set.
    pub fn is_stale(&self, now: Timestamp) -> bool {
        if self.max_age_days == 0 {
            return false;
        }
        match self.age_seconds(now) {
            Some(age) => age > i64::from(self.max_age_days) * DAY_SECONDS,
            None => true,
        }
    }

    /// The warning to print or log, in both languages; `None` while fresh.
    pub fn warning(&self, now: Timestamp) -> Option<Message> {
        if !self.is_stale(now) {
            return None;
        }
        let origin = &self.origin;
        let max = self.max_age_days;
        let fix = Text {
            en: format!(
                "Regenerate the list from a newer IPFire location database \
                 (scripts/gen-mainland-cidrs.sh --db <location.db>, offline; see data/PROVENANCE.md) \
                 and give it to the operator with --mainland-cidrs or the chart value \
                 mainlandCidrs.configMap; if this age is accepted, raise \
                 --max-address-data-age-days (chart: mainlandCidrs.maxAgeDays, now {max}; 0 turns the check off)."
            ),
            zh: format!(
                "请用较新的 IPFire 位置数据库重新生成该列表（scripts/gen-mainland-cidrs.sh --db <location.db>，\
                 可离线运行；见 data/PROVENANCE.md），并通过 --mainland-cidrs 或 Chart 值 \
                 mainlandCidrs.configMap 提供给运维组件；如接受该数据年龄，请调高 \
                 --max-address-data-age-days（Chart：mainlandCidrs.maxAgeDays，当前为 {max}；设为 0 关闭此检查）。"
            ),
        };
        let problem = match (self.created, self.age_seconds(now)) {
            (Some(created), Some(age)) => {
                let date = created.strftime("%Y-%m-%d");
                let days = age / DAY_SECONDS;
                Text {
                    en: format!(
                        "The mainland-China address data ({origin}) is dated {date}, {days} days ago, \
                         older than the {max} days allowed: addresses that moved into or out of \
                         mainland China since then are judged by the old data, so egress to them \
                         may be wrongly allowed or denied."
                    ),
                    zh: format!(
                        "中国大陆地址数据（{origin}）的日期为 {date}，距今 {days} 天，超过允许的 {max} 天：\
                         此后迁入或迁出中国大陆的地址仍按旧数据判断，发往这些地址的出站流量可能被错误地放行或拒绝。"
                    ),
                }
            }
            _ => Text {
                en: format!(
                    "The mainland-China address data ({origin}) states no date (no \
                     '# {DATE_FIELD} YYYY-MM-DD' line in its header), so its age cannot be \
                     checked against the {max} days allowed."
                ),
                zh: format!(
                    "中国大陆地址数据（{origin}）未注明日期（文件头中没有 '# {DATE_FIELD} YYYY-MM-DD' 行），\
                     无法按允许的 {max} 天检查其年龄。"
                ),
            },
        };
        let fix = if self.created.is_none() {
            Text {
                en: format!(
                    "Add a '# {DATE_FIELD} YYYY-MM-DD' line (the date of the data, not of the copy) \
                     to the list's header; scripts/gen-mainland-cidrs.sh writes one. {}",
                    fix.en
                ),
                zh: format!(
                    "在列表文件头加入 '# {DATE_FIELD} YYYY-MM-DD' 行（数据本身的日期，而非复制的日期）；\
                     scripts/gen-mainland-cidrs.sh 会自动写入。{}",
                    fix.zh
                ),
            }
        } else {
            fix
        };
        Some(Message { problem, fix })
    }

    /// The warning as one line in `lang`, prefixed for a terminal.
    pub fn warning_line(&self, now: Timestamp, lang: Lang) -> Option<String> {
        self.warning(now).map(|m| m.get(lang))
    }
}

/// The address data's age as metrics, computed at every scrape:
///
/// - `residency_guard_address_data_created_timestamp_seconds`: the data's
///   stated date as Unix time (absent when it states none);
/// - `residency_guard_address_data_age_seconds`: now minus that date;
/// - `residency_guard_address_data_max_age_seconds`: the allowed age (0: no
///   limit);
/// - `residency_guard_address_data_stale`: 1 when [`AddressDataAge::is_stale`].
#[derive(Debug)]
pub struct AddressDataMetrics {
    age: AddressDataAge,
    clock: fn() -> Timestamp,
}

impl AddressDataMetrics {
    pub fn new(age: AddressDataAge) -> Self {
        AddressDataMetrics {
            age,
            clock: Timestamp::now,
        }
    }

    /// The same with another clock (tests).
    pub fn with_clock(age: AddressDataAge, clock: fn() -> Timestamp) -> Self {
        AddressDataMetrics { age, clock }
    }
}

fn gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: i64,
) -> Result<(), std::fmt::Error> {
    let metric = ConstGauge::new(value);
    let metric_encoder = encoder.encode_descriptor(name, help, None, metric.metric_type())?;
    metric.encode(metric_encoder)
}

impl Collector for AddressDataMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let now = (self.clock)();
        if let Some(created) = self.age.created {
            gauge(
                &mut encoder,
                "address_data_created_timestamp_seconds",
                "The date the mainland-China address data states in its header, as Unix time",
                created.as_second(),
            )?;
        }
        if let Some(age) = self.age.age_seconds(now) {
            gauge(
                &mut encoder,
                "address_data_age_seconds",
                "Seconds since the date the mainland-China address data states",
                age,
            )?;
        }
        gauge(
            &mut encoder,
            "address_data_max_age_seconds",
            "The age beyond which the address data is reported stale (0: no limit)",
            i64::from(self.age.max_age_days) * DAY_SECONDS,
        )?;
        gauge(
            &mut encoder,
            "address_data_stale",
            "1 when the mainland-China address data is older than allowed or states no date",
            i64::from(self.age.is_stale(now)),
        )
    }
}

/// `origin (dated YYYY-MM-DD, N days old)` for an info log line.
pub fn describe(age: &AddressDataAge, now: Timestamp) -> String {
    let mut out = age.origin.clone();
    match (age.created, age.age_seconds(now)) {
        (Some(created), Some(secs)) => {
            let _ = write!(
                out,
                " (dated {}, {} days old)",
                created.strftime("%Y-%m-%d"),
                secs / DAY_SECONDS
            );
        }
        _ => out.push_str(" (no date stated)"),
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn the_generators_header_is_read() {
        let text = "# residency-guard: IP ranges\n#\n#   Database created: 2025-03-26 04:43:02 UTC; signature verified.\n1.0.1.0/24\n";
        assert_eq!(stated_date(text), Some(at("2025-03-26T04:43:02Z")));
        assert_eq!(
            stated_date("# Database created: 2026-11-30\n10.0.0.0/8\n"),
            Some(at("2026-11-30T00:00:00Z"))
        );
        assert_eq!(
            stated_date("# Database created: 2026-11-30T10:00:00Z\n"),
            Some(at("2026-11-30T10:00:00Z"))
        );
        // Only the leading comment block counts, and nonsense is no date.
        assert_eq!(
            stated_date("10.0.0.0/8\n# Database created: 2026-11-30\n"),
            None
        );
        assert_eq!(stated_date("# Database created: last week\n"), None);
        assert_eq!(stated_date("1.0.0.0/8\n"), None);
    }

    #[test]
    fn the_bundled_data_states_its_date() {
        let bundled = crate::engine::BUNDLED_MAINLAND_CIDRS;
        let date = stated_date(bundled).expect("the generator writes the date");
        // Never older than the snapshot it replaced (2025-03-26).
        assert!(date >= at("2025-03-26T00:00:00Z"), "{date}");
    }

    #[test]
    fn the_warning_turns_on_past_the_limit_and_names_the_fix() {
        let age = AddressDataAge {
            origin: "bundled".into(),
            created: Some(at("2025-03-26T04:43:02Z")),
            max_age_days: 180,
        };
        // 180 days after the date: still fresh; a day later: stale.
        assert!(age.warning(at("2025-09-22T04:43:02Z")).is_none());
        let message = age.warning(at("2025-09-23T04:43:03Z")).expect("stale");
        let en = message.get(Lang::En);
        assert!(en.contains("dated 2025-03-26, 181 days ago"), "{en}");
        assert!(en.contains("older than the 180 days allowed"), "{en}");
        assert!(en.contains("gen-mainland-cidrs.sh --db"), "{en}");
        assert!(en.contains("mainlandCidrs.configMap"), "{en}");
        let zh = message.get(Lang::ZhCn);
        assert!(zh.contains("距今 181 天"), "{zh}");
        assert!(zh.contains("修复："), "{zh}");
        // 0 turns the check off.
        let off = AddressDataAge {
            max_age_days: 0,
            ..age
        };
        assert!(off.warning(at("2030-01-01T00:00:00Z")).is_none());
    }

    #[test]
    fn data_without_a_date_is_reported_while_a_limit_is_set() {
        let age = AddressDataAge {
            origin: "/etc/residency-guard/address-data/mainland-china.cidrs".into(),
            created: None,
            max_age_days: 180,
        };
        let message = age.warning(at("2026-12-07T00:00:00Z")).expect("no date");
        assert!(message.get(Lang::En).contains("states no date"));
        assert!(message.get(Lang::ZhCn).contains("未注明日期"));
        assert!(age.is_stale(at("2026-12-07T00:00:00Z")));
    }

    #[test]
    fn the_metrics_carry_the_date_the_age_and_the_verdict() {
        let age = AddressDataAge {
            origin: "bundled".into(),
            created: Some(at("2025-03-26T00:00:00Z")),
            max_age_days: 180,
        };
        let mut registry = prometheus_client::registry::Registry::with_prefix("residency_guard");
        registry.register_collector(Box::new(AddressDataMetrics::with_clock(age, || {
            "2025-03-27T00:00:00Z".parse().unwrap()
        })));
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry).unwrap();
        assert!(
            out.contains("residency_guard_address_data_created_timestamp_seconds 1742947200"),
            "{out}"
        );
        assert!(
            out.contains("residency_guard_address_data_age_seconds 86400"),
            "{out}"
        );
        assert!(
            out.contains("residency_guard_address_data_max_age_seconds 15552000"),
            "{out}"
        );
        assert!(
            out.contains("residency_guard_address_data_stale 0"),
            "{out}"
        );
    }
}
