//! The public API: the `ResidencyPolicy` custom resource and the data-class
//! label vocabulary. Field names here are the v1alpha1 contract.

mod classes;
mod policy;

pub use classes::{CLASS_SEPARATOR, ClassError, DATA_CLASS_LABEL, DataClass, parse_class_list};
pub use policy::{
    Action, Egress, EgressMode, Exemption, Jurisdiction, LegalBasis, Offender, Placement,
    ResidencyPolicy, ResidencyPolicySpec, ResidencyPolicyStatus, Storage, StorageMode,
};

/// The API group of every resource this project defines.
pub const GROUP: &str = "residencyguard.io";
