//! Loading the catalogue and address data from the bundled files and the
//! user's overrides. Shared by `check` and `serve`.

use std::path::{Path, PathBuf};

use crate::freshness::AddressDataAge;

use crate::engine::{
    AddressSpace, BUNDLED_MAINLAND_CIDRS, Catalogue, CatalogueError, CidrError, IpSet,
    ListParseError, parse_cidr_args,
};

/// Why the data the user pointed at cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("{}: cannot read: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {source}", path.display())]
    AddressList {
        path: PathBuf,
        source: ListParseError,
    },
    #[error("{}: {source}", path.display())]
    Catalogue {
        path: PathBuf,
        source: CatalogueError,
    },
    #[error("cluster CIDRs: {0}")]
    ClusterCidrs(#[from] CidrError),
}

/// Where the user's data overrides live: the same flags for `check` and
/// `serve` (flattened into both).
#[derive(Clone, Debug, clap::Args)]
pub struct DataSources {
    /// Extra jurisdiction catalogue entries (YAML, same format as
    /// data/jurisdictions.yaml); they override built-in entries.
    #[arg(long, value_name = "FILE", env = "RESIDENCY_GUARD_CATALOGUE")]
    pub catalogue: Vec<PathBuf>,

    /// Replace the bundled mainland-China address data with this list
    /// (one CIDR per line, # comments).
    #[arg(long, value_name = "FILE", env = "RESIDENCY_GUARD_MAINLAND_CIDRS")]
    pub mainland_cidrs: Option<PathBuf>,

    /// Add these CIDRs (a file in the same format) to the mainland-China set.
    #[arg(
        long,
        value_name = "FILE",
        env = "RESIDENCY_GUARD_EXTRA_MAINLAND_CIDRS"
    )]
    pub extra_mainland_cidrs: Vec<PathBuf>,

    /// The cluster's own pod and service CIDRs (in-cluster, never
    /// cross-border). Repeatable or comma-separated.
    #[arg(
        long = "cluster-cidr",
        value_name = "CIDR",
        env = "RESIDENCY_GUARD_CLUSTER_CIDRS",
        value_delimiter = ','
    )]
    pub cluster_cidrs: Vec<String>,

    /// Warn when the mainland-China address data (bundled or
    /// --mainland-cidrs) is older than this many days by the date its
    /// header states, or states none; 0 turns the check off.
    #[arg(
        long,
        value_name = "DAYS",
        default_value_t = crate::freshness::DEFAULT_MAX_AGE_DAYS,
        env = "RESIDENCY_GUARD_MAX_ADDRESS_DATA_AGE_DAYS"
    )]
    pub max_address_data_age_days: u32,

    /// Whose egress enforcement the cluster has: kubernetes (NetworkPolicy,
    /// with AdminNetworkPolicy when served), cilium or calico; auto detects
    /// it from the policy kinds present (for `check`, in the manifests).
    #[arg(
        long = "egress-cni",
        value_name = "CNI",
        default_value = "auto",
        value_parser = ["auto", "kubernetes", "cilium", "calico"],
        env = "RESIDENCY_GUARD_EGRESS_CNI"
    )]
    pub egress_cni: String,

    /// Cilium's policy enforcement mode (the agent's enable-policy, Helm
    /// value policyEnforcementMode): default, always or never.
    #[arg(
        long = "cilium-enforcement",
        value_name = "MODE",
        default_value = "default",
        value_parser = ["default", "always", "never"],
        env = "RESIDENCY_GUARD_CILIUM_ENFORCEMENT"
    )]
    pub cilium_enforcement: String,
}

impl Default for DataSources {
    /// No user files, and the CLI's default age limit.
    fn default() -> Self {
        DataSources {
            catalogue: Vec::new(),
            mainland_cidrs: None,
            extra_mainland_cidrs: Vec::new(),
            cluster_cidrs: Vec::new(),
            max_address_data_age_days: crate::freshness::DEFAULT_MAX_AGE_DAYS,
            egress_cni: "auto".to_string(),
            cilium_enforcement: "default".to_string(),
        }
    }
}

fn read_text(path: &Path) -> Result<String, DataError> {
    std::fs::read_to_string(path).map_err(|source| DataError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn parse_cidr_file(path: &Path) -> Result<IpSet, DataError> {
    IpSet::parse_list(&read_text(path)?).map_err(|source| DataError::AddressList {
        path: path.to_path_buf(),
        source,
    })
}

impl DataSources {
    /// The mainland address data in force and the date it states (read
    /// again: the same file `load` read).
    pub fn address_data_age(&self) -> Result<AddressDataAge, DataError> {
        let (origin, created) = match &self.mainland_cidrs {
            Some(path) => (
                path.display().to_string(),
                crate::freshness::stated_date(&read_text(path)?),
            ),
            None => (
                "bundled".to_string(),
                crate::freshness::stated_date(BUNDLED_MAINLAND_CIDRS),
            ),
        };
        Ok(AddressDataAge {
            origin,
            created,
            max_age_days: self.max_address_data_age_days,
        })
    }

    /// The CNI named by `--egress-cni`; None for auto (or unset).
    pub fn egress_cni(&self) -> Option<crate::engine::Cni> {
        crate::engine::Cni::parse(&self.egress_cni)
    }

    /// Cilium's enforcement mode (default when unset).
    pub fn cilium_enforcement(&self) -> crate::engine::CiliumEnforcement {
        crate::engine::CiliumEnforcement::parse(&self.cilium_enforcement).unwrap_or_default()
    }

    /// The built-in catalogue and address data with the user's layers on top:
    /// catalogue entries override built-in ones; a mainland file replaces the
    /// bundled set; extra files extend it.
    pub fn load(&self) -> Result<(Catalogue, AddressSpace), DataError> {
        let mut catalogue = Catalogue::builtin().clone();
        for path in &self.catalogue {
            let extra = Catalogue::parse_yaml(&read_text(path)?).map_err(|source| {
                DataError::Catalogue {
                    path: path.clone(),
                    source,
                }
            })?;
            catalogue.extend(extra);
        }
        let mut mainland = match &self.mainland_cidrs {
            Some(path) => parse_cidr_file(path)?,
            None => AddressSpace::builtin_mainland().clone(),
        };
        for path in &self.extra_mainland_cidrs {
            mainland = mainland.union(&parse_cidr_file(path)?);
        }
        let cluster = parse_cidr_args(&self.cluster_cidrs)?;
        let space = AddressSpace::new(mainland, cluster, AddressSpace::builtin().countries);
        Ok((catalogue, space))
    }
}
