//! The closed data-class vocabulary and the `residencyguard.io/data-class` label.

use std::collections::BTreeSet;
use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The one label a workload, its pod template or its Namespace carries to
/// declare which regulated data it handles. One key (not a key per class)
/// lets webhook configurations pre-filter with a single `Exists` selector.
pub const DATA_CLASS_LABEL: &str = "residencyguard.io/data-class";

/// Separator between several classes in one label value (`personal.financial`).
/// A dot is legal in label values, unlike `,` or `+`.
pub const CLASS_SEPARATOR: char = '.';

/// Categories of data that Chinese law requires to stay in mainland China.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum DataClass {
    /// Personal information (个人信息), PIPL.
    Personal,
    /// Personal credit information (个人征信信息).
    Credit,
    /// Personal financial information (个人金融信息).
    Financial,
    /// Population health information (人口健康信息).
    Health,
    /// Map and geographic data (地图数据).
    Map,
    /// Government information (政务信息).
    Government,
    /// Accounting information (会计信息).
    Accounting,
    /// Human genetic resource information (人类遗传资源信息).
    Genetic,
    /// "Important data" under the Data Security Law (重要数据).
    Important,
}

impl DataClass {
    pub const ALL: [DataClass; 9] = [
        DataClass::Personal,
        DataClass::Credit,
        DataClass::Financial,
        DataClass::Health,
        DataClass::Map,
        DataClass::Government,
        DataClass::Accounting,
        DataClass::Genetic,
        DataClass::Important,
    ];

    /// The label spelling of the class.
    pub fn as_str(self) -> &'static str {
        match self {
            DataClass::Personal => "personal",
            DataClass::Credit => "credit",
            DataClass::Financial => "financial",
            DataClass::Health => "health",
            DataClass::Map => "map",
            DataClass::Government => "government",
            DataClass::Accounting => "accounting",
            DataClass::Genetic => "genetic",
            DataClass::Important => "important",
        }
    }

    /// English description used in messages.
    pub fn describe_en(self) -> &'static str {
        match self {
            DataClass::Personal => "personal information",
            DataClass::Credit => "personal credit information",
            DataClass::Financial => "personal financial information",
            DataClass::Health => "population health information",
            DataClass::Map => "map and geographic data",
            DataClass::Government => "government information",
            DataClass::Accounting => "accounting information",
            DataClass::Genetic => "human genetic resource information",
            DataClass::Important => "important data (Data Security Law)",
        }
    }

    /// Simplified Chinese term used in messages.
    pub fn describe_zh(self) -> &'static str {
        match self {
            DataClass::Personal => "个人信息",
            DataClass::Credit => "个人征信信息",
            DataClass::Financial => "个人金融信息",
            DataClass::Health => "人口健康信息",
            DataClass::Map => "地图数据",
            DataClass::Government => "政务信息",
            DataClass::Accounting => "会计信息",
            DataClass::Genetic => "人类遗传资源信息",
            DataClass::Important => "重要数据",
        }
    }

    pub fn parse(s: &str) -> Option<DataClass> {
        DataClass::ALL.into_iter().find(|c| c.as_str() == s)
    }

    /// The valid spellings, for error messages.
    pub fn vocabulary() -> String {
        DataClass::ALL.map(DataClass::as_str).join(", ")
    }
}

impl fmt::Display for DataClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A data-class label value that cannot be understood. The workload cannot be
/// judged, so callers treat this as an error the user must fix.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ClassError {
    #[error(
        "label {DATA_CLASS_LABEL} is empty; set it to one or more of: {} (joined by \".\")",
        DataClass::vocabulary()
    )]
    Empty,
    #[error(
        "label {DATA_CLASS_LABEL}={value:?} names unknown data class {unknown:?}; valid classes are: {} (several are joined by \".\", e.g. personal.financial)",
        DataClass::vocabulary()
    )]
    Unknown { value: String, unknown: String },
}

/// Parse a label value such as `personal` or `personal.financial`.
/// Surrounding whitespace and case are not forgiven: label values are exact.
pub fn parse_class_list(value: &str) -> Result<BTreeSet<DataClass>, ClassError> {
    if value.is_empty() {
        return Err(ClassError::Empty);
    }
    value
        .split(CLASS_SEPARATOR)
        .map(|part| {
            DataClass::parse(part).ok_or_else(|| ClassError::Unknown {
                value: value.to_string(),
                unknown: part.to_string(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_single_and_joined_classes() {
        assert_eq!(
            parse_class_list("personal").unwrap(),
            BTreeSet::from([DataClass::Personal])
        );
        assert_eq!(
            parse_class_list("personal.financial.personal").unwrap(),
            BTreeSet::from([DataClass::Personal, DataClass::Financial])
        );
    }

    #[test]
    fn unknown_class_names_the_bad_value_and_the_vocabulary() {
        let err = parse_class_list("personal.medical").unwrap_err();
        let text = err.to_string();
        assert!(text.contains("\"medical\""), "{text}");
        assert!(text.contains("personal, credit, financial"), "{text}");
        assert_eq!(parse_class_list(""), Err(ClassError::Empty));
        assert!(parse_class_list("Personal").is_err());
        assert!(parse_class_list("personal.").is_err());
    }

    #[test]
    fn every_class_round_trips() {
        for class in DataClass::ALL {
            assert_eq!(DataClass::parse(class.as_str()), Some(class));
            let json = serde_json::to_string(&class).unwrap();
            assert_eq!(json, format!("\"{}\"", class.as_str()));
        }
    }
}
