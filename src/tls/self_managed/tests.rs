//! Rotation, read back and verified as another replica would see it.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;

use super::reconcile::BACKOFF;
use super::*;
use crate::tls::CertStore;

/// A named way to damage a Secret.
type Corruption<'a> = (&'static str, Box<dyn Fn(&mut Secret) + 'a>);

fn cfg() -> SelfManagedConfig {
    SelfManagedConfig {
        namespace: "rg-system".into(),
        ..SelfManagedConfig::default()
    }
}

fn t0() -> Timestamp {
    "2026-01-01T00:00:00Z".parse().expect("timestamp")
}

fn days(n: i64) -> SignedDuration {
    SignedDuration::from_hours(24 * n)
}

/// Write and read back, as another replica would see it.
fn roundtrip(m: &Material) -> Material {
    Material::from_secret(&m.to_secret(&cfg(), None).expect("secret"))
}

fn step(m: &Material, now: Timestamp) -> (Plan, Material) {
    let p = plan(Some(m), &cfg(), now);
    if p.is_empty() {
        return (p, m.clone());
    }
    let next = roundtrip(&apply(&p, Some(m), &cfg(), now).expect("apply"));
    assert!(next.problems.is_empty(), "{:?}", next.problems);
    (p, next)
}

fn serving(m: &Material) -> &Serving {
    m.serving.as_ref().expect("serving")
}

fn ca(m: &Material) -> &Ca {
    m.ca.as_ref().expect("ca")
}

fn kinds(p: &Plan) -> Vec<&'static str> {
    p.actions
        .iter()
        .map(|a| match a {
            Action::GenerateAll { .. } => "generate",
            Action::StartCaRotation { .. } => "phase1",
            Action::RestartRotationWait { .. } => "restart-wait",
            Action::PromoteNextCa { .. } => "phase2",
            Action::DropRetiredCas { .. } => "phase3",
            Action::RenewServing { .. } => "renew",
            Action::RewriteSecret { .. } => "rewrite",
        })
        .collect()
}

/// The overlap invariant: the serving certificate is trusted by the
/// bundle stored with it, and across a change by both the old and the
/// new bundle (the API server may hold either), and the old serving
/// certificate (a replica may not have reloaded yet) by the new bundle.
fn assert_overlap(before: &Material, after: &Material, now: Timestamp) {
    let name = "residency-guard.rg-system.svc";
    let new = serving(after);
    bundle_trusts(&after.bundle_pem(), &new.cert_pem, name, now)
        .expect("new bundle trusts new serving cert");
    assert!(
        after.bundle_pem().contains(ca(after).cert_pem.as_str()),
        "bundle holds the CA that signed the serving cert"
    );
    bundle_trusts(&before.bundle_pem(), &new.cert_pem, name, now)
        .expect("old bundle trusts new serving cert");
    let old = serving(before);
    if old.not_after > now {
        bundle_trusts(&after.bundle_pem(), &old.cert_pem, name, now)
            .expect("new bundle trusts old serving cert");
    }
}

#[test]
fn no_secret_creates_everything() {
    let p = plan(None, &cfg(), t0());
    assert_eq!(kinds(&p), ["generate"]);
    let m = roundtrip(&apply(&p, None, &cfg(), t0()).expect("apply"));
    assert!(m.problems.is_empty(), "{:?}", m.problems);
    assert!(m.next.is_none() && m.retired.is_empty());
    assert_eq!(m.bundle_pem(), ca(&m).cert_pem);
    assert_eq!(serving(&m).issuer, ca(&m).name);
    let name = "residency-guard.rg-system.svc";
    bundle_trusts(&m.bundle_pem(), &serving(&m).cert_pem, name, t0()).expect("trusted");
}

#[test]
fn fresh_secret_needs_nothing() {
    let m = roundtrip(&Material::generate(&cfg(), t0()).expect("generate"));
    assert!(m.problems.is_empty(), "{:?}", m.problems);
    for at in [t0(), t0() + days(1), t0() + days(200)] {
        assert!(plan(Some(&m), &cfg(), at).is_empty(), "at {at}");
    }
}

#[test]
fn serving_near_expiry_renews_only_the_serving_cert() {
    let m = roundtrip(&Material::generate(&cfg(), t0()).expect("generate"));
    let now = t0() + days(250); // less than a third of a year left
    let (p, after) = step(&m, now);
    assert_eq!(kinds(&p), ["renew"]);
    assert_eq!(ca(&after), ca(&m));
    assert_eq!(after.bundle_pem(), m.bundle_pem());
    assert_ne!(serving(&after).cert_pem, serving(&m).cert_pem);
    assert_eq!(serving(&after).not_after, add(now, cfg().serving_validity));
    assert_overlap(&m, &after, now);
    assert!(plan(Some(&after), &cfg(), now).is_empty());
}

#[test]
fn ca_rotation_runs_three_phases_with_overlap() {
    let c = cfg();
    let mut m = roundtrip(&Material::generate(&c, t0()).expect("generate"));
    let old_ca = ca(&m).clone();
    // Keep the serving cert fresh so that only CA rotation is in play.
    let rotation = t0() + days(365 * 7); // under a third of 10 years left
    let (p, renewed) = step(&m, t0() + days(365 * 6 + 180));
    assert_eq!(kinds(&p), ["renew"]);
    m = renewed;

    // Phase 1: next CA joins the bundle; serving cert unchanged.
    let (p, p1) = step(&m, rotation);
    assert_eq!(kinds(&p), ["phase1"]);
    let next = p1.next.clone().expect("next CA");
    assert_eq!(ca(&p1), &old_ca);
    assert_eq!(serving(&p1), serving(&m));
    assert_eq!(
        p1.bundle_pem(),
        format!("{}{}", old_ca.cert_pem, next.ca.cert_pem)
    );
    assert_overlap(&m, &p1, rotation);

    // Not before check_every has passed.
    let early = rotation + SignedDuration::from_mins(59);
    assert!(plan(Some(&p1), &c, early).is_empty());

    // Phase 2: the next CA becomes current and signs the serving cert;
    // the old CA stays in the bundle.
    let due = rotation + SignedDuration::from_hours(1);
    let (p, p2) = step(&p1, due);
    assert_eq!(kinds(&p), ["phase2"]);
    assert_eq!(ca(&p2), &next.ca);
    assert_eq!(serving(&p2).issuer, next.ca.name);
    assert_eq!(p2.retired.len(), 1);
    assert_eq!(p2.retired[0].name, old_ca.name);
    assert!(p2.next.is_none());
    assert_overlap(&p1, &p2, due);

    // Until the old CA expires nothing changes but serving renewals.
    let mut cur = p2;
    let mut at = due;
    while at < old_ca.not_after {
        at += days(30);
        let (p, after) = step(&cur, at);
        if !p.is_empty() {
            assert!(
                kinds(&p).iter().all(|k| *k == "renew" || *k == "phase3"),
                "{p}"
            );
            assert_overlap(&cur, &after, at);
        }
        if at < old_ca.not_after {
            assert!(after.retired.iter().any(|r| r.name == old_ca.name));
        }
        cur = after;
    }
    // Phase 3 happened: the old CA is gone, the new one stays.
    assert!(cur.retired.is_empty());
    assert_eq!(cur.bundle_pem(), next.ca.cert_pem);
}

#[test]
fn twenty_five_years_of_weekly_checks_keep_the_overlap() {
    let c = cfg();
    let mut m = roundtrip(&Material::generate(&c, t0()).expect("generate"));
    let mut seen = Vec::new();
    let mut at = t0();
    let end = t0() + days(365 * 25);
    while at < end {
        at += days(7);
        let (p, after) = step(&m, at);
        assert!(!kinds(&p).contains(&"generate"), "regenerated at {at}: {p}");
        if !p.is_empty() {
            assert_overlap(&m, &after, at);
            seen.extend(kinds(&p));
        }
        assert!(serving(&after).not_after > at);
        m = after;
    }
    for phase in ["phase1", "phase2", "phase3", "renew"] {
        assert!(seen.contains(&phase), "{phase} never happened: {seen:?}");
    }
    // A CA rotation every 2/3 of 10 years: three in 25 years.
    assert_eq!(
        seen.iter().filter(|k| **k == "phase2").count(),
        3,
        "{seen:?}"
    );
}

#[test]
fn corrupt_secret_is_regenerated() {
    let c = cfg();
    let good = Material::generate(&c, t0()).expect("generate");
    let secret = good.to_secret(&c, None).expect("secret");
    let other = Material::generate(&c, t0()).expect("generate");

    let corruptions: Vec<Corruption> = vec![
        (
            "no annotation",
            Box::new(|s: &mut Secret| {
                s.metadata.annotations = None;
            }),
        ),
        (
            "unreadable annotation",
            Box::new(|s: &mut Secret| {
                s.metadata
                    .annotations
                    .get_or_insert_default()
                    .insert(STATE_ANNOTATION.into(), "{not json".into());
            }),
        ),
        (
            "garbage CA key",
            Box::new(|s: &mut Secret| {
                s.data
                    .get_or_insert_default()
                    .insert(KEY_CA_KEY.into(), ByteString(b"garbage".to_vec()));
            }),
        ),
        (
            "CA certificate from another CA",
            Box::new(|s: &mut Secret| {
                let foreign = other.ca.as_ref().expect("ca").cert_pem.clone();
                s.data
                    .get_or_insert_default()
                    .insert(KEY_CA_CRT.into(), ByteString(foreign.into_bytes()));
            }),
        ),
        (
            "no data",
            Box::new(|s: &mut Secret| {
                s.data = None;
            }),
        ),
    ];
    for (what, corrupt) in corruptions {
        let mut s = secret.clone();
        corrupt(&mut s);
        let m = Material::from_secret(&s);
        assert!(m.ca.is_none(), "{what}");
        assert!(!m.problems.is_empty(), "{what}");
        let p = plan(Some(&m), &c, t0());
        assert_eq!(kinds(&p), ["generate"], "{what}");
        let fresh = roundtrip(&apply(&p, Some(&m), &c, t0()).expect("apply"));
        assert!(fresh.problems.is_empty(), "{what}: {:?}", fresh.problems);
        assert_ne!(ca(&fresh).name, ca(&good).name, "{what}");
    }
}

#[test]
fn corrupt_serving_cert_is_reissued_from_the_same_ca() {
    let c = cfg();
    let good = Material::generate(&c, t0()).expect("generate");
    let secret = good.to_secret(&c, None).expect("secret");
    let other = Material::generate(&c, t0()).expect("generate");
    let other_secret = other.to_secret(&c, None).expect("secret");

    let corruptions: Vec<Corruption> = vec![
        (
            "garbage certificate",
            Box::new(|s: &mut Secret| {
                s.data
                    .get_or_insert_default()
                    .insert(KEY_TLS_CRT.into(), ByteString(b"garbage".to_vec()));
            }),
        ),
        (
            "key of another certificate",
            Box::new(|s: &mut Secret| {
                let key = other.serving.as_ref().expect("serving").key_pem.clone();
                s.data
                    .get_or_insert_default()
                    .insert(KEY_TLS_KEY.into(), ByteString(key.into_bytes()));
            }),
        ),
        (
            "pair signed by another CA",
            Box::new(|s: &mut Secret| {
                let data = s.data.get_or_insert_default();
                for k in [KEY_TLS_CRT, KEY_TLS_KEY] {
                    let v = other_secret
                        .data
                        .as_ref()
                        .and_then(|d| d.get(k))
                        .expect("data")
                        .clone();
                    data.insert(k.into(), v);
                }
            }),
        ),
        (
            "annotation lies about the expiry",
            Box::new(|s: &mut Secret| {
                let annotations = s.metadata.annotations.get_or_insert_default();
                let mut state: serde_json::Value =
                    serde_json::from_str(&annotations[STATE_ANNOTATION]).expect("state");
                state["serving"]["notAfter"] = "2099-01-01T00:00:00Z".into();
                annotations.insert(STATE_ANNOTATION.into(), state.to_string());
            }),
        ),
    ];
    for (what, corrupt) in corruptions {
        let mut s = secret.clone();
        corrupt(&mut s);
        let m = Material::from_secret(&s);
        assert_eq!(ca(&m), ca(&good), "{what}");
        assert!(m.serving.is_none(), "{what}");
        let p = plan(Some(&m), &c, t0());
        assert_eq!(kinds(&p), ["renew"], "{what}");
        let fixed = roundtrip(&apply(&p, Some(&m), &c, t0()).expect("apply"));
        assert!(fixed.problems.is_empty(), "{what}: {:?}", fixed.problems);
        assert_eq!(fixed.bundle_pem(), good.bundle_pem(), "{what}");
        assert_eq!(serving(&fixed).issuer, ca(&good).name, "{what}");
    }
}

#[test]
fn edited_bundle_is_rewritten() {
    let c = cfg();
    let good = Material::generate(&c, t0()).expect("generate");
    let mut s = good.to_secret(&c, None).expect("secret");
    let bundle = format!("{}{}", good.bundle_pem(), good.bundle_pem());
    s.data
        .get_or_insert_default()
        .insert(KEY_CA_CRT.into(), ByteString(bundle.into_bytes()));
    let m = Material::from_secret(&s);
    assert!(m.problems.is_empty(), "{:?}", m.problems);
    assert_eq!(kinds(&plan(Some(&m), &c, t0())), ["rewrite"]);
}

#[test]
fn expired_ca_without_next_is_regenerated_and_with_next_promoted() {
    let c = cfg();
    let m = roundtrip(&Material::generate(&c, t0()).expect("generate"));
    let after_expiry = ca(&m).not_after + days(1);
    assert_eq!(kinds(&plan(Some(&m), &c, after_expiry)), ["generate"]);

    let rotation = t0() + days(365 * 7);
    let (_, p1) = step(&m, rotation);
    assert!(p1.next.is_some());
    let (p, p2) = step(&p1, after_expiry);
    assert_eq!(kinds(&p), ["phase2"]);
    assert!(p2.retired.is_empty(), "an expired CA is not kept");
}

#[test]
fn service_rename_reissues_the_serving_cert() {
    let m = roundtrip(&Material::generate(&cfg(), t0()).expect("generate"));
    let renamed = SelfManagedConfig {
        service_name: "guard".into(),
        ..cfg()
    };
    assert_eq!(kinds(&plan(Some(&m), &renamed, t0())), ["renew"]);
}

#[test]
fn generated_pair_loads_into_cert_store_with_the_service_names() {
    let c = cfg();
    let m = Material::generate(&c, t0()).expect("generate");
    let s = serving(&m);
    let store = CertStore::new();
    assert!(
        store
            .replace(s.cert_pem.as_bytes(), s.key_pem.as_bytes())
            .expect("loads")
    );
    assert!(store.has_certificate());
    assert_eq!(
        c.dns_names(),
        [
            "residency-guard",
            "residency-guard.rg-system",
            "residency-guard.rg-system.svc",
            "residency-guard.rg-system.svc.cluster.local",
        ]
    );
    for name in c.dns_names() {
        bundle_trusts(&m.bundle_pem(), &s.cert_pem, &name, t0())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    assert!(bundle_trusts(&m.bundle_pem(), &s.cert_pem, "other.rg-system.svc", t0()).is_err());
}

#[test]
fn config_is_validated() {
    assert!(cfg().validate().is_ok());
    assert!(
        SelfManagedConfig::default().validate().is_err(),
        "namespace is required"
    );
    let short = SelfManagedConfig {
        ca_validity: Duration::from_secs(3 * 3600),
        ..cfg()
    };
    assert!(short.validate().is_err());
    let bad_name = SelfManagedConfig {
        service_name: "not a name".into(),
        ..cfg()
    };
    assert!(bad_name.validate().is_err());
}

#[test]
fn backoff_is_capped_at_a_minute() {
    assert_eq!(BACKOFF.after(1), Duration::from_secs(1));
    assert_eq!(BACKOFF.after(3), Duration::from_secs(4));
    assert_eq!(BACKOFF.after(100), Duration::from_secs(60));
}
