//! Reads from the API server at review time, for the few answers that rest
//! on namespace facts the watches may not have delivered yet: a Namespace
//! or a NetworkPolicy created milliseconds before the workload, in the same
//! `kubectl apply`. Without this the first apply of the README's own fix
//! (a NetworkPolicy and the Deployment it isolates) would be denied.
//!
//! A denial that rests on storage reads the namespace's claims, the
//! PersistentVolumes they name and the StorageClasses the same way (a
//! claim and its workload applied together).
//!
//! Only LIST is used (a Namespace or a PV by a field selector), so the
//! operator needs no verb beyond the list/watch its watches already have.

use std::collections::BTreeMap;

use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::{Namespace, PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::storage::v1::StorageClass;
use kube::Client;
use kube::api::{Api, ListParams};

use crate::engine::{ClaimRecord, ClassRecord, LiveStorage, NamespaceFacts, VolumeRecord};

/// Where the webhook reads namespace facts live (a trait, so tests can
/// stand in for the API server).
pub trait LiveReader: Send + Sync {
    /// The namespace's labels (None: it does not exist) and, when asked,
    /// its NetworkPolicies and its storage (claims, the PVs they name,
    /// every StorageClass), as the API server has them now.
    fn namespace_facts<'a>(
        &'a self,
        namespace: &'a str,
        network_policies: bool,
        storage: bool,
    ) -> BoxFuture<'a, Result<NamespaceFacts, kube::Error>>;
}

/// The real thing: quorum reads (no resourceVersion) through `client`.
pub struct ApiReader {
    client: Client,
}

impl ApiReader {
    pub fn new(client: Client) -> ApiReader {
        ApiReader { client }
    }
}

impl LiveReader for ApiReader {
    fn namespace_facts<'a>(
        &'a self,
        namespace: &'a str,
        network_policies: bool,
        storage: bool,
    ) -> BoxFuture<'a, Result<NamespaceFacts, kube::Error>> {
        Box::pin(async move {
            let namespaces: Api<Namespace> = Api::all(self.client.clone());
            let by_name = ListParams::default().fields(&format!("metadata.name={namespace}"));
            let labels = namespaces
                .list(&by_name)
                .await?
                .items
                .into_iter()
                .next()
                .map(|ns| ns.metadata.labels.unwrap_or_default());
            let network_policies = if network_policies {
                let api: Api<NetworkPolicy> = Api::namespaced(self.client.clone(), namespace);
                Some(api.list(&ListParams::default()).await?.items)
            } else {
                None
            };
            let storage = if storage {
                Some(read_storage(&self.client, namespace).await?)
            } else {
                None
            };
            Ok(NamespaceFacts {
                labels: labels.map(|l: BTreeMap<String, String>| l),
                network_policies,
                storage,
            })
        })
    }
}

/// The namespace's claims, the PVs they name (each by a field selector on
/// its name: LIST only) and every StorageClass, projected.
async fn read_storage(client: &Client, namespace: &str) -> Result<LiveStorage, kube::Error> {
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), namespace);
    let claims: Vec<ClaimRecord> = claims
        .list(&ListParams::default())
        .await?
        .items
        .iter()
        .map(ClaimRecord::from_k8s)
        .collect();
    let pvs: Api<PersistentVolume> = Api::all(client.clone());
    let mut volumes = Vec::new();
    let mut names: Vec<&str> = claims
        .iter()
        .filter_map(|c| c.volume_name.as_deref())
        .collect();
    names.sort_unstable();
    names.dedup();
    for name in names {
        let by_name = ListParams::default().fields(&format!("metadata.name={name}"));
        volumes.extend(
            pvs.list(&by_name)
                .await?
                .items
                .iter()
                .map(VolumeRecord::from_k8s),
        );
    }
    let classes: Api<StorageClass> = Api::all(client.clone());
    let classes = classes
        .list(&ListParams::default())
        .await?
        .items
        .iter()
        .map(ClassRecord::from_k8s)
        .collect();
    Ok(LiveStorage {
        claims,
        volumes,
        classes,
    })
}
