//! Reads from the API server at review time, for the few answers that rest
//! on namespace facts the watches may not have delivered yet: a Namespace
//! or a NetworkPolicy created milliseconds before the workload, in the same
//! `kubectl apply`. Without this the first apply of the README's own fix
//! (a NetworkPolicy and the Deployment it isolates) would be denied.
//!
//! Only LIST is used (a Namespace by a field selector), so the operator
//! needs no verb beyond the list/watch its watches already have.

use std::collections::BTreeMap;

use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::Client;
use kube::api::{Api, ListParams};

use crate::engine::NamespaceFacts;

/// Where the webhook reads namespace facts live (a trait, so tests can
/// stand in for the API server).
pub trait LiveReader: Send + Sync {
    /// The namespace's labels (None: it does not exist) and, when asked,
    /// its NetworkPolicies, as the API server has them now.
    fn namespace_facts<'a>(
        &'a self,
        namespace: &'a str,
        network_policies: bool,
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
            Ok(NamespaceFacts {
                labels: labels.map(|l: BTreeMap<String, String>| l),
                network_policies,
            })
        })
    }
}
