//! Certificates: generating a CA and a serving certificate (rcgen), and
//! verifying what a Secret holds with the webpki verifier rustls uses
//! (rcgen cannot parse certificates).

use std::sync::Arc;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PublicKeyData,
};
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::ServerCertVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use super::material::{Ca, KEY_TLS_CRT, KEY_TLS_KEY, Serving};
use super::{CertError, SelfManagedConfig, add};
use crate::tls::certified_key;

/// Certificates start this long before they are made, for clock skew.
const BACKDATE_SECONDS: i64 = 300;
const CA_NAME_PREFIX: &str = "residency-guard CA";
const PROBE_NAME: &str = "probe.residency-guard.invalid";
const PEM_BEGIN: &str = "-----BEGIN CERTIFICATE-----";
const PEM_END: &str = "-----END CERTIFICATE-----";

fn ca_name(not_before: Timestamp, not_after: Timestamp, key: &KeyPair) -> String {
    let raw = key.public_key_raw();
    let tail = &raw[raw.len().saturating_sub(4)..];
    let hex: String = tail.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{CA_NAME_PREFIX} {}-{} {hex}",
        not_before.as_second(),
        not_after.as_second()
    )
}

fn set_validity(
    p: &mut CertificateParams,
    not_before: Timestamp,
    not_after: Timestamp,
) -> Result<(), CertError> {
    let secs = |t: Timestamp| {
        u64::try_from(t.as_second())
            .map(Duration::from_secs)
            .map_err(|_| CertError::Invalid(format!("time {t} is before 1970")))
    };
    let epoch = rcgen::date_time_ymd(1970, 1, 1);
    p.not_before = epoch + secs(not_before)?;
    p.not_after = epoch + secs(not_after)?;
    Ok(())
}

fn ca_params(
    name: &str,
    not_before: Timestamp,
    not_after: Timestamp,
) -> Result<CertificateParams, CertError> {
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    set_validity(&mut p, not_before, not_after)?;
    Ok(p)
}

impl Ca {
    fn issuer(&self) -> Result<Issuer<'static, KeyPair>, CertError> {
        let key = KeyPair::from_pem(&self.key_pem)
            .map_err(|e| CertError::Invalid(format!("CA {}: key: {e}", self.name)))?;
        Ok(Issuer::new(
            ca_params(&self.name, self.not_before, self.not_after)?,
            key,
        ))
    }
}

pub(super) fn new_ca(cfg: &SelfManagedConfig, now: Timestamp) -> Result<Ca, CertError> {
    let key = KeyPair::generate()?;
    let not_before = now - SignedDuration::from_secs(BACKDATE_SECONDS);
    let not_after = add(now, cfg.ca_validity);
    let name = ca_name(not_before, not_after, &key);
    let cert = ca_params(&name, not_before, not_after)?.self_signed(&key)?;
    let ca = Ca {
        name,
        cert_pem: normalize_pem(&cert.pem()),
        key_pem: key.serialize_pem(),
        not_before,
        not_after,
    };
    let cert_pem = ca.cert_pem.clone();
    check_ca(
        &ca.name,
        not_before,
        not_after,
        cert_pem,
        ca.key_pem.clone(),
    )
    .map_err(|e| CertError::Generate(format!("the new CA fails its own check: {e}")))
}

pub(super) fn issue_serving(
    ca: &Ca,
    cfg: &SelfManagedConfig,
    now: Timestamp,
) -> Result<Serving, CertError> {
    let not_before = (now - SignedDuration::from_secs(BACKDATE_SECONDS)).max(ca.not_before);
    let not_after = add(now, cfg.serving_validity).min(ca.not_after);
    if not_after <= now {
        return Err(CertError::Generate(format!(
            "CA {} expires at {}, before a serving certificate could be used",
            ca.name, ca.not_after
        )));
    }
    let names = cfg.dns_names();
    let key = KeyPair::generate()?;
    let mut p = CertificateParams::new(names.clone())?;
    let mut dn = DistinguishedName::new();
    dn.push(
        DnType::CommonName,
        format!("{}.{}.svc", cfg.service_name, cfg.namespace),
    );
    p.distinguished_name = dn;
    p.is_ca = IsCa::ExplicitNoCa;
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    p.use_authority_key_identifier_extension = true;
    set_validity(&mut p, not_before, not_after)?;
    let cert = p.signed_by(&key, &ca.issuer()?)?;
    let serving = Serving {
        issuer: ca.name.clone(),
        cert_pem: normalize_pem(&cert.pem()),
        key_pem: key.serialize_pem(),
        not_before,
        not_after,
        dns_names: names,
    };
    check_serving(&serving, ca).map_err(|e| {
        CertError::Generate(format!(
            "the new serving certificate fails its own check: {e}"
        ))
    })?;
    Ok(serving)
}

/// Verify a CA: its name matches its key and validity, and a certificate
/// signed with the key under that name verifies against the certificate.
pub(super) fn check_ca(
    name: &str,
    not_before: Timestamp,
    not_after: Timestamp,
    cert_pem: String,
    key_pem: String,
) -> Result<Ca, String> {
    if not_before >= not_after {
        return Err(format!("validity {not_before}..{not_after} is empty"));
    }
    let key = KeyPair::from_pem(&key_pem).map_err(|e| format!("the key is unreadable: {e}"))?;
    if ca_name(not_before, not_after, &key) != name {
        return Err(format!(
            "the recorded name {name:?} does not match the key and validity"
        ));
    }
    let anchors = Anchors::new(&cert_pem)?;
    let ca = Ca {
        name: name.to_string(),
        cert_pem,
        key_pem,
        not_before,
        not_after,
    };
    let issuer = ca.issuer().map_err(|e| e.to_string())?;
    let mut p = CertificateParams::new(vec![PROBE_NAME.to_string()]).map_err(|e| e.to_string())?;
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    p.use_authority_key_identifier_extension = true;
    set_validity(&mut p, not_before, not_after).map_err(|e| e.to_string())?;
    let probe = p
        .signed_by(issuer.key(), &issuer)
        .map_err(|e| e.to_string())?;
    anchors
        .verify(probe.der(), PROBE_NAME, not_before)
        .map_err(|e| format!("the certificate does not match the key or the recorded name: {e}"))?;
    Ok(ca)
}

/// Verify a serving certificate against the CA that should have issued it.
pub(super) fn check_serving(s: &Serving, ca: &Ca) -> Result<(), String> {
    if s.issuer != ca.name {
        return Err(format!(
            "recorded as issued by {}, not the current CA {}",
            s.issuer, ca.name
        ));
    }
    let Some(first) = s.dns_names.first() else {
        return Err("no DNS names recorded".into());
    };
    let leaf = CertificateDer::from_pem_slice(s.cert_pem.as_bytes())
        .map_err(|e| format!("{KEY_TLS_CRT} is unreadable: {e}"))?;
    let key =
        KeyPair::from_pem(&s.key_pem).map_err(|e| format!("{KEY_TLS_KEY} is unreadable: {e}"))?;
    let spki = key.subject_public_key_info();
    if !leaf.windows(spki.len()).any(|w| w == spki.as_slice()) {
        return Err(format!("{KEY_TLS_KEY} does not belong to {KEY_TLS_CRT}"));
    }
    certified_key(s.cert_pem.as_bytes(), s.key_pem.as_bytes()).map_err(|e| e.to_string())?;
    let anchors = Anchors::new(&ca.cert_pem)?;
    for name in &s.dns_names {
        anchors
            .verify(&leaf, name, s.not_before)
            .map_err(|e| format!("not valid for {name} from CA {}: {e}", ca.name))?;
    }
    anchors
        .verify(&leaf, first, s.not_after)
        .map_err(|e| format!("not valid at its recorded expiry {}: {e}", s.not_after))?;
    let outside = |at: Timestamp, want: fn(&rustls::Error) -> bool, what: &str| match anchors
        .verify(&leaf, first, at)
    {
        Err(e) if want(&e) => Ok(()),
        _ => Err(format!(
            "the recorded {what} does not match the certificate"
        )),
    };
    outside(
        s.not_after + SignedDuration::from_secs(1),
        is_expired,
        "expiry",
    )?;
    outside(
        s.not_before - SignedDuration::from_secs(1),
        is_not_yet_valid,
        "start",
    )?;
    Ok(())
}

fn is_expired(e: &rustls::Error) -> bool {
    use rustls::CertificateError as C;
    matches!(
        e,
        rustls::Error::InvalidCertificate(C::Expired | C::ExpiredContext { .. })
    )
}

fn is_not_yet_valid(e: &rustls::Error) -> bool {
    use rustls::CertificateError as C;
    matches!(
        e,
        rustls::Error::InvalidCertificate(C::NotValidYet | C::NotValidYetContext { .. })
    )
}

/// A webpki verifier trusting exactly the given CA certificates.
pub(super) struct Anchors(Arc<WebPkiServerVerifier>);

impl Anchors {
    pub(super) fn new(ca_pem: &str) -> Result<Anchors, String> {
        let mut roots = rustls::RootCertStore::empty();
        for der in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
            let der = der.map_err(|e| format!("a CA certificate is unreadable: {e}"))?;
            roots
                .add(der)
                .map_err(|e| format!("a CA certificate is unusable: {e}"))?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .map(Anchors)
            .map_err(|e| format!("no usable CA certificate: {e}"))
    }

    fn verify(
        &self,
        leaf: &CertificateDer<'_>,
        name: &str,
        at: Timestamp,
    ) -> Result<(), rustls::Error> {
        let name = ServerName::try_from(name.to_string())
            .map_err(|e| rustls::Error::General(format!("{name:?} is not a DNS name: {e}")))?;
        let at = UnixTime::since_unix_epoch(Duration::from_secs(
            u64::try_from(at.as_second()).unwrap_or(0),
        ));
        self.0
            .verify_server_cert(leaf, &[], &name, &[], at)
            .map(|_| ())
    }
}

/// Whether `bundle_pem` trusts `leaf_pem` for `name` at `at` (for tests and
/// diagnostics).
pub fn bundle_trusts(
    bundle_pem: &str,
    leaf_pem: &str,
    name: &str,
    at: Timestamp,
) -> Result<(), String> {
    let leaf = CertificateDer::from_pem_slice(leaf_pem.as_bytes()).map_err(|e| e.to_string())?;
    Anchors::new(bundle_pem)?
        .verify(&leaf, name, at)
        .map_err(|e| e.to_string())
}

/// The CERTIFICATE blocks of a PEM text, each ending in one newline.
pub(super) fn pem_blocks(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find(PEM_BEGIN) {
        let block = &rest[start..];
        let Some(end) = block.find(PEM_END) else {
            break;
        };
        let end = end + PEM_END.len();
        out.push(format!("{}\n", block[..end].replace("\r\n", "\n")));
        rest = &block[end..];
    }
    out
}

fn normalize_pem(text: &str) -> String {
    pem_blocks(text).concat()
}
