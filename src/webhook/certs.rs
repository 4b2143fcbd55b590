//! PLACEHOLDER so the crate compiles while self-managed certificates are
//! written (helper-7 replaces this whole file).
use std::sync::Arc;
use std::time::Duration;

pub struct SelfManagedConfig {
    pub namespace: String,
    pub secret_name: String,
    pub service_name: String,
    pub webhook_configs: Vec<String>,
    pub ca_validity: Duration,
    pub serving_validity: Duration,
    pub check_every: Duration,
}
impl Default for SelfManagedConfig {
    fn default() -> Self {
        SelfManagedConfig {
            namespace: String::new(),
            secret_name: String::new(),
            service_name: String::new(),
            webhook_configs: Vec::new(),
            ca_validity: Duration::from_secs(1),
            serving_validity: Duration::from_secs(1),
            check_every: Duration::from_secs(1),
        }
    }
}
pub async fn run(
    _client: kube::Client,
    _cfg: SelfManagedConfig,
    _store: Arc<super::tls::CertStore>,
) {
}
