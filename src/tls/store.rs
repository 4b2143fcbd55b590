//! The serving key pair, swappable at run time without a restart.
//!
//! `CertStore` is the rustls certificate resolver: handshakes read the
//! current key pair, and `replace` swaps it atomically, so a rotation never
//! fails a handshake.

use std::sync::{Arc, RwLock};

use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use rustls::ServerConfig;
use rustls::server::danger::ClientCertVerifier;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{0}: cannot read: {1}")]
    Read(String, std::io::Error),
    #[error("certificate PEM has no certificate: {0}")]
    NoCertificate(String),
    #[error("private key PEM is unreadable: {0}")]
    Key(String),
    #[error("the private key does not match a supported algorithm: {0}")]
    Unsupported(String),
    #[error("TLS configuration: {0}")]
    Config(String),
    #[error(
        "{0}: no usable CA certificate for client authentication ({1}); give the PEM of the CA that signed the API server's webhook client certificate"
    )]
    ClientCa(String, String),
}

/// The CA whose certificates the webhook accepts as client certificates
/// (`--client-ca-file`): with one, a connection without a client
/// certificate chained to it is refused at the TLS handshake.
#[derive(Clone, Debug)]
pub struct ClientCa {
    /// Where it came from (a path), for messages.
    pub source: String,
    pem: Vec<u8>,
    verifier: Arc<dyn ClientCertVerifier>,
}

impl PartialEq for ClientCa {
    fn eq(&self, other: &ClientCa) -> bool {
        self.source == other.source && self.pem == other.pem
    }
}

impl Eq for ClientCa {}

impl ClientCa {
    /// Parse the PEM of one or more CA certificates.
    pub fn from_pem(source: &str, pem: &[u8]) -> Result<ClientCa, TlsError> {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem)
            .collect::<Result<_, _>>()
            .map_err(|e| TlsError::ClientCa(source.to_string(), e.to_string()))?;
        if certs.is_empty() {
            return Err(TlsError::ClientCa(
                source.to_string(),
                "no CERTIFICATE block".into(),
            ));
        }
        let mut roots = rustls::RootCertStore::empty();
        for cert in certs {
            roots
                .add(cert)
                .map_err(|e| TlsError::ClientCa(source.to_string(), e.to_string()))?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .map_err(|e| TlsError::ClientCa(source.to_string(), e.to_string()))?;
        Ok(ClientCa {
            source: source.to_string(),
            pem: pem.to_vec(),
            verifier,
        })
    }

    /// Read and parse a PEM file.
    pub fn from_file(path: &std::path::Path) -> Result<ClientCa, TlsError> {
        let source = path.display().to_string();
        let pem = std::fs::read(path).map_err(|e| TlsError::Read(source.clone(), e))?;
        ClientCa::from_pem(&source, &pem)
    }
}

/// Parse a PEM certificate chain and private key into a rustls key pair.
pub fn certified_key(cert_pem: &[u8], key_pem: &[u8]) -> Result<CertifiedKey, TlsError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::NoCertificate(e.to_string()))?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate("no CERTIFICATE block".into()));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| TlsError::Key(e.to_string()))?;
    let signer = rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|e| TlsError::Unsupported(e.to_string()))?;
    Ok(CertifiedKey::new(chain, signer))
}

/// The current serving key pair.
#[derive(Debug)]
pub struct CertStore {
    current: RwLock<Option<Arc<CertifiedKey>>>,
    /// The PEM it was made from, to skip no-op reloads.
    pem: RwLock<(Vec<u8>, Vec<u8>)>,
    /// The served certificate's notAfter as Unix time (0: none yet, or
    /// unreadable), for the expiry alert.
    expiry: Gauge,
}

impl Default for CertStore {
    fn default() -> Self {
        CertStore {
            current: RwLock::new(None),
            pem: RwLock::new((Vec::new(), Vec::new())),
            expiry: Gauge::default(),
        }
    }
}

/// The notAfter (Unix seconds) of the first certificate in a PEM chain:
/// the serving certificate itself.
pub fn not_after(cert_pem: &[u8]) -> Result<i64, String> {
    let der = CertificateDer::pem_slice_iter(cert_pem)
        .next()
        .ok_or_else(|| "no CERTIFICATE block".to_string())?
        .map_err(|e| e.to_string())?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der).map_err(|e| e.to_string())?;
    Ok(cert.validity().not_after.timestamp())
}

impl CertStore {
    pub fn new() -> Arc<CertStore> {
        Arc::new(CertStore::default())
    }

    /// Register the expiry gauge (under the registry's prefix,
    /// `residency_guard_` on the admin endpoint).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "certificate_expiration_timestamp_seconds",
            "Unix time the serving certificate expires (its notAfter; 0 while none is loaded)",
            self.expiry.clone(),
        );
    }

    /// Install a new key pair; returns false (and keeps the old one) when the
    /// PEM is unchanged. An invalid pair is an error and changes nothing.
    pub fn replace(&self, cert_pem: &[u8], key_pem: &[u8]) -> Result<bool, TlsError> {
        if let Ok(pem) = self.pem.read()
            && pem.0 == cert_pem
            && pem.1 == key_pem
        {
            return Ok(false);
        }
        let key = certified_key(cert_pem, key_pem)?;
        if let Ok(mut cur) = self.current.write() {
            *cur = Some(Arc::new(key));
        }
        if let Ok(mut pem) = self.pem.write() {
            *pem = (cert_pem.to_vec(), key_pem.to_vec());
        }
        match not_after(cert_pem) {
            Ok(t) => {
                self.expiry.set(t);
            }
            Err(e) => {
                // Unlikely (the PEM held a certificate chain rustls took);
                // the expiry alert cannot watch it, which the log says.
                tracing::warn!(error = %e, "cannot read the serving certificate's expiry; residency_guard_certificate_expiration_timestamp_seconds stays 0");
                self.expiry.set(0);
            }
        }
        Ok(true)
    }

    /// The PEM of the certificate chain being served, if any.
    pub fn cert_pem(&self) -> Option<Vec<u8>> {
        if !self.has_certificate() {
            return None;
        }
        self.pem.read().ok().map(|p| p.0.clone())
    }

    pub fn has_certificate(&self) -> bool {
        self.current.read().map(|c| c.is_some()).unwrap_or(false)
    }

    /// A rustls server configuration that resolves through this store;
    /// with `client_ca`, every client must present a certificate chained to
    /// it (the handshake fails otherwise).
    pub fn server_config(
        self: &Arc<Self>,
        client_ca: Option<&ClientCa>,
    ) -> Result<Arc<ServerConfig>, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| TlsError::Config(e.to_string()))?;
        let builder = match client_ca {
            Some(ca) => builder.with_client_cert_verifier(ca.verifier.clone()),
            None => builder.with_no_client_auth(),
        };
        let mut config = builder.with_cert_resolver(self.clone());
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current.read().ok().and_then(|c| c.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_expiry_gauge_is_the_served_certificates_not_after() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        params.not_after = rcgen::date_time_ymd(2030, 1, 1);
        let cert = params.self_signed(&key).unwrap();
        let (cert_pem, key_pem) = (cert.pem(), key.serialize_pem());
        assert_eq!(not_after(cert_pem.as_bytes()), Ok(1_893_456_000));

        let store = CertStore::new();
        assert_eq!(store.expiry.get(), 0, "nothing served yet");
        assert_eq!(
            store.replace(cert_pem.as_bytes(), key_pem.as_bytes()).ok(),
            Some(true)
        );
        assert_eq!(store.expiry.get(), 1_893_456_000);

        assert!(not_after(b"not a certificate").is_err());
        let garbage = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        assert!(not_after(garbage.as_bytes()).is_err());
    }
}
