//! Self-managed TLS against a scripted API server: each scenario lists the
//! exact requests it expects, in order; anything else fails the test.

use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use jiff::Timestamp;
use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::{
    ServiceReference, ValidatingWebhook, ValidatingWebhookConfiguration, WebhookClientConfig,
};
use k8s_openapi::api::core::v1::Secret;
use kube::client::Body;
use residency_guard::tls::CertStore;
use residency_guard::tls::self_managed::{
    self as certs, Action, BundleStatus, KEY_CA_CRT, Material, SelfManagedConfig, bundle_trusts,
};
use tower_test::mock::{Handle, SendResponse};

const SECRETS: &str = "/api/v1/namespaces/rg-system/secrets";
const SECRET: &str = "/api/v1/namespaces/rg-system/secrets/residency-guard-tls";
const VWC: &str =
    "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations/residency-guard";

type ApiHandle = Handle<Request<Body>, Response<Body>>;

fn cfg() -> SelfManagedConfig {
    SelfManagedConfig {
        namespace: "rg-system".into(),
        ..SelfManagedConfig::default()
    }
}

fn now() -> Timestamp {
    "2026-03-01T12:00:00Z".parse().expect("timestamp")
}

/// Wait for the next request and check its method and path.
async fn expect(
    handle: &mut ApiHandle,
    method: Method,
    path: &str,
) -> (serde_json::Value, SendResponse<Response<Body>>) {
    let (request, send) = handle
        .next_request()
        .await
        .unwrap_or_else(|| panic!("expected {method} {path}, but the client sent nothing more"));
    assert_eq!(
        (request.method(), request.uri().path()),
        (&method, path),
        "unexpected request {} {}",
        request.method(),
        request.uri()
    );
    let body = request
        .into_body()
        .collect_bytes()
        .await
        .expect("request body");
    let body = if body.is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::from_slice(&body).expect("request body is JSON")
    };
    (body, send)
}

fn reply(send: SendResponse<Response<Body>>, status: StatusCode, body: serde_json::Value) {
    let body = serde_json::to_vec(&body).expect("response body");
    send.send_response(
        Response::builder()
            .status(status)
            .body(Body::from(body))
            .expect("response"),
    );
}

fn reply_status(send: SendResponse<Response<Body>>, code: u16, reason: &str, message: &str) {
    let status = StatusCode::from_u16(code).expect("status code");
    reply(
        send,
        status,
        serde_json::json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {},
            "status": "Failure", "message": message, "reason": reason, "code": code,
        }),
    );
}

/// After the scenario, the client must send nothing more.
async fn expect_no_more(handle: &mut ApiHandle) {
    if let Some((request, _)) = handle.next_request().await {
        panic!(
            "unexpected extra request {} {}",
            request.method(),
            request.uri()
        );
    }
}

fn webhook_config(ca_bundle: Option<&str>) -> ValidatingWebhookConfiguration {
    let webhook = |name: &str, path: &str| ValidatingWebhook {
        name: name.into(),
        admission_review_versions: vec!["v1".into()],
        side_effects: "None".into(),
        client_config: WebhookClientConfig {
            ca_bundle: ca_bundle.map(|b| ByteString(b.as_bytes().to_vec())),
            service: Some(ServiceReference {
                name: "residency-guard".into(),
                namespace: "rg-system".into(),
                path: Some(path.into()),
                port: Some(443),
            }),
            url: None,
        },
        ..ValidatingWebhook::default()
    };
    ValidatingWebhookConfiguration {
        metadata: kube::api::ObjectMeta {
            name: Some("residency-guard".into()),
            resource_version: Some("41".into()),
            ..Default::default()
        },
        webhooks: Some(vec![
            webhook("workloads.residencyguard.io", "/validate/workloads"),
            webhook("policies.residencyguard.io", "/validate/policies"),
        ]),
    }
}

const VWC_UID: &str = "5f1c2a7e-0000-4000-8000-000000000041";

/// The configuration as the API server returns it, uid included (the
/// Secret's owner reference names it).
fn owned_webhook_config(ca_bundle: Option<&str>) -> ValidatingWebhookConfiguration {
    let mut c = webhook_config(ca_bundle);
    c.metadata.uid = Some(VWC_UID.into());
    c
}

fn owner_uids(secret: &Secret) -> Vec<String> {
    secret
        .metadata
        .owner_references
        .iter()
        .flatten()
        .map(|o| o.uid.clone())
        .collect()
}

fn with_resource_version(mut secret: Secret, rv: &str) -> Secret {
    secret.metadata.resource_version = Some(rv.into());
    secret
}

fn data(secret: &Secret, key: &str) -> String {
    let bytes = secret
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .unwrap_or_else(|| panic!("{key} missing"));
    String::from_utf8(bytes.0.clone()).expect("text")
}

/// Run `reconcile` against a scripted server; the scenario runs to its end
/// and then checks that nothing else was sent.
async fn run_scenario<F>(store: &CertStore, scenario: impl FnOnce(ApiHandle) -> F) -> certs::Outcome
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    run_scenario_at(store, now(), scenario).await
}

/// `run_scenario` with `reconcile` at `at`.
async fn run_scenario_at<F>(
    store: &CertStore,
    at: Timestamp,
    scenario: impl FnOnce(ApiHandle) -> F,
) -> certs::Outcome
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let server = tokio::spawn(scenario(handle));
    let client = kube::Client::new(service, "default");
    let outcome = tokio::time::timeout(Duration::from_secs(20), async {
        let outcome = certs::reconcile(&client, &cfg(), store, at).await;
        drop(client);
        server.await.expect("scenario");
        outcome
    })
    .await
    .expect("scenario timed out");
    outcome.expect("reconcile")
}

#[tokio::test]
async fn missing_secret_is_created_and_ca_bundle_patched() {
    let store = CertStore::new();
    let outcome = run_scenario(&store, |mut h| async move {
        let (_, send) = expect(&mut h, Method::GET, SECRET).await;
        reply_status(
            send,
            404,
            "NotFound",
            "secrets \"residency-guard-tls\" not found",
        );
        // Before generating: what the configuration trusts now, and its uid.
        let (_, send) = expect(&mut h, Method::GET, VWC).await;
        reply(
            send,
            StatusCode::OK,
            serde_json::to_value(owned_webhook_config(None)).expect("json"),
        );

        let (body, send) = expect(&mut h, Method::POST, SECRETS).await;
        let posted: Secret = serde_json::from_value(body).expect("a Secret was posted");
        assert_eq!(posted.metadata.name.as_deref(), Some("residency-guard-tls"));
        assert_eq!(posted.type_.as_deref(), Some("kubernetes.io/tls"));
        // Owned by the webhook configuration: deleted with it on uninstall,
        // without blocking its deletion.
        let owner = &posted.metadata.owner_references.as_ref().expect("owner")[0];
        assert_eq!(
            (owner.kind.as_str(), owner.name.as_str(), owner.uid.as_str()),
            ("ValidatingWebhookConfiguration", "residency-guard", VWC_UID)
        );
        assert_eq!(owner.api_version, "admissionregistration.k8s.io/v1");
        assert_eq!(owner.block_owner_deletion, None);
        let bundle = data(&posted, KEY_CA_CRT);
        let created = with_resource_version(posted, "1");
        reply(
            send,
            StatusCode::CREATED,
            serde_json::to_value(&created).expect("json"),
        );

        let (_, send) = expect(&mut h, Method::GET, VWC).await;
        reply(
            send,
            StatusCode::OK,
            serde_json::to_value(owned_webhook_config(None)).expect("json"),
        );

        let (patch, send) = expect(&mut h, Method::PATCH, VWC).await;
        let ops = patch.as_array().expect("a JSON patch");
        assert_eq!(
            ops[0],
            serde_json::json!({"op": "test", "path": "/metadata/resourceVersion", "value": "41"})
        );
        for i in 0..2 {
            let path = format!("/webhooks/{i}/clientConfig/caBundle");
            let op = ops
                .iter()
                .find(|op| op["path"] == path.as_str())
                .unwrap_or_else(|| panic!("no op for {path}"));
            let value: ByteString = serde_json::from_value(op["value"].clone()).expect("base64");
            assert_eq!(value.0, bundle.as_bytes(), "{path} carries ca.crt");
        }
        reply(
            send,
            StatusCode::OK,
            serde_json::to_value(owned_webhook_config(Some(&bundle))).expect("json"),
        );
        expect_no_more(&mut h).await;
    })
    .await;

    assert!(
        matches!(outcome.written[..], [Action::GenerateAll { .. }]),
        "{outcome:?}"
    );
    assert_eq!(outcome.carried_over, 0, "a fresh install has no CA to keep");
    assert!(!outcome.serving_deferred);
    assert_eq!(
        outcome.bundles,
        [("residency-guard".to_string(), BundleStatus::Patched(2))]
    );
    assert!(outcome.serving_reloaded);
    assert!(store.has_certificate());
}

#[tokio::test]
async fn up_to_date_secret_and_bundle_cause_no_writes() {
    let material = Material::generate(&cfg(), now()).expect("generate");
    let secret = with_resource_version(material.to_secret(&cfg(), None).expect("secret"), "7");
    let bundle = material.bundle_pem();
    let store = CertStore::new();
    let outcome = run_scenario(&store, |mut h| async move {
        let (_, send) = expect(&mut h, Method::GET, SECRET).await;
        reply(
            send,
            StatusCode::OK,
            serde_json::to_value(&secret).expect("json"),
        );
        let (_, send) = expect(&mut h, Method::GET, VWC).await;
        reply(
            send,
            StatusCode::OK,
            serde_json::to_value(webhook_config(Some(&bundle))).expect("json"),
        );
        expect_no_more(&mut h).await;
    })
    .await;

    assert!(outcome.written.is_empty(), "{outcome:?}");
    assert_eq!(outcome.conflicts, 0);
    assert_eq!(
        outcome.bundles,
        [("residency-guard".to_string(), BundleStatus::InSync)]
    );
    assert!(outcome.serving_reloaded);
    let serving = material.serving.as_ref().expect("serving");
    assert!(
        !store
            .replace(serving.cert_pem.as_bytes(), serving.key_pem.as_bytes())
            .expect("valid"),
        "the Secret's pair is already loaded"
    );
}

#[tokio::test]
async fn lost_create_race_loads_the_other_replicas_pair() {
    let theirs = Material::generate(&cfg(), now()).expect("generate");
    let their_secret = with_resource_version(theirs.to_secret(&cfg(), None).expect("secret"), "3");
    let bundle = theirs.bundle_pem();
    let store = CertStore::new();
    let outcome = run_scenario(&store, |mut h| async move {
        let (_, send) = expect(&mut h, Method::GET, SECRET).await;
        reply_status(
            send,
            404,
            "NotFound",
            "secrets \"residency-guard-tls\" not found",
        );
        let (_, send) = expect(&mut h, Method::GET, VWC).await;
        reply(
            send,
            StatusCode::OK,
            serde_json::to_value(webhook_config(None)).expect("json"),
        );
        let (_, send) = expect(&mut h, Method::POST, SECRETS).await;
        reply_status(
            send,
            409,
            "AlreadyExists",
            "secrets \"residency-guard-tls\" already exists",
        );
        let (_, send) = expect(&mut h, Method::GET, SECRET).await;
        reply(
            send,
            StatusCode::OK,
            serde_json::to_value(&their_secret).expect("json"),
        );
        let (_, send) = expect(&mut h, Method::GET, VWC).await;
        reply(
            send,
            StatusCode::OK,
            serde_json::to_value(webhook_config(Some(&bundle))).expect("json"),
        );
        expect_no_more(&mut h).await;
    })
    .await;

    assert!(outcome.written.is_empty(), "{outcome:?}");
    assert_eq!(outcome.conflicts, 1);
    let serving = theirs.serving.as_ref().expect("serving");
    assert!(
        !store
            .replace(serving.cert_pem.as_bytes(), serving.key_pem.as_bytes())
            .expect("valid"),
        "the other replica's pair is loaded"
    );
}

#[tokio::test]
async fn lost_replace_race_replans_from_the_winner() {
    // Ours is due for serving renewal; another replica renews first.
    let issued = now() - jiff::SignedDuration::from_hours(24 * 300);
    let old = Material::generate(&cfg(), issued).expect("generate");
    let old_secret = with_resource_version(old.to_secret(&cfg(), None).expect("secret"), "10");
    let plan = certs::plan(Some(&Material::from_secret(&old_secret)), &cfg(), now());
    let winner = certs::apply(
        &plan,
        Some(&Material::from_secret(&old_secret)),
        &cfg(),
        now(),
    )
    .expect("apply");
    let winner_secret = with_resource_version(
        winner.to_secret(&cfg(), Some(&old_secret)).expect("secret"),
        "11",
    );
    let bundle = old.bundle_pem();
    assert_eq!(
        bundle,
        winner.bundle_pem(),
        "serving renewal keeps the bundle"
    );
    let served_bundle = bundle.clone();
    let store = CertStore::new();
    let outcome = run_scenario(&store, |mut h| async move {
        let (_, send) = expect(&mut h, Method::GET, SECRET).await;
        reply(
            send,
            StatusCode::OK,
            serde_json::to_value(&old_secret).expect("json"),
        );
        let (body, send) = expect(&mut h, Method::PUT, SECRET).await;
        assert_eq!(
            body["metadata"]["resourceVersion"], "10",
            "replace carries the read resourceVersion"
        );
        reply_status(send, 409, "Conflict", "the object has been modified");
        let (_, send) = expect(&mut h, Method::GET, SECRET).await;
        reply(
            send,
            StatusCode::OK,
            serde_json::to_value(&winner_secret).expect("json"),
        );
        let (_, send) = expect(&mut h, Method::GET, VWC).await;
        reply(
            send,
            StatusCode::OK,
            serde_json::to_value(webhook_config(Some(&served_bundle))).expect("json"),
        );
        expect_no_more(&mut h).await;
    })
    .await;

    assert!(outcome.written.is_empty(), "{outcome:?}");
    assert_eq!(outcome.conflicts, 1);
    let serving = winner.serving.as_ref().expect("serving");
    assert!(
        !store
            .replace(serving.cert_pem.as_bytes(), serving.key_pem.as_bytes())
            .expect("valid")
    );
    let name = "residency-guard.rg-system.svc";
    bundle_trusts(&bundle, &serving.cert_pem, name, now()).expect("trusted");
}

#[tokio::test]
async fn missing_webhook_configuration_is_skipped() {
    let material = Material::generate(&cfg(), now()).expect("generate");
    let secret = with_resource_version(material.to_secret(&cfg(), None).expect("secret"), "7");
    let store = CertStore::new();
    let outcome = run_scenario(&store, |mut h| async move {
        let (_, send) = expect(&mut h, Method::GET, SECRET).await;
        reply(send, StatusCode::OK, serde_json::to_value(&secret).expect("json"));
        let (_, send) = expect(&mut h, Method::GET, VWC).await;
        reply_status(
            send,
            404,
            "NotFound",
            "validatingwebhookconfigurations.admissionregistration.k8s.io \"residency-guard\" not found",
        );
        expect_no_more(&mut h).await;
    })
    .await;
    assert_eq!(
        outcome.bundles,
        [("residency-guard".to_string(), BundleStatus::Missing)]
    );
    assert_eq!(outcome.bundle_failures(), 0);
    assert!(store.has_certificate());
}

/// A Secret in CA-rotation phase 1, published two hours before `now()`.
fn phase_one() -> (Material, Secret) {
    let published = now() - jiff::SignedDuration::from_hours(2);
    let start = published - jiff::SignedDuration::from_hours(24 * 365 * 7);
    let fresh = Material::generate(&cfg(), start).expect("generate");
    let plan = certs::plan(Some(&fresh), &cfg(), published);
    assert!(
        plan.actions
            .iter()
            .any(|a| matches!(a, Action::StartCaRotation { .. })),
        "{plan}"
    );
    let p1 = certs::apply(&plan, Some(&fresh), &cfg(), published).expect("apply");
    assert!(p1.next.is_some());
    let secret = with_resource_version(p1.to_secret(&cfg(), None).expect("secret"), "20");
    (p1, secret)
}

#[tokio::test]
async fn promotion_waits_for_the_two_ca_bundle_to_be_in_place() {
    let (p1, secret) = phase_one();
    let p1_bundle = p1.bundle_pem();
    let store = CertStore::new();
    let outcome = run_scenario(&store, |mut h| async move {
        let (_, send) = expect(&mut h, Method::GET, SECRET).await;
        reply(
            send,
            StatusCode::OK,
            serde_json::to_value(&secret).expect("json"),
        );
        // The check before promotion finds a stale bundle (say, a helm
        // upgrade reset it) and patches it ...
        let (_, send) = expect(&mut h, Method::GET, VWC).await;
        reply(
            send,
            StatusCode::OK,
            serde_json::to_value(webhook_config(Some("stale"))).expect("json"),
        );
        let (patch, send) = expect(&mut h, Method::PATCH, VWC).await;
        let value: ByteString = serde_json::from_value(patch[2]["value"].clone()).expect("base64");
        assert_eq!(
            value.0,
            p1_bundle.as_bytes(),
            "the phase-1 bundle is restored"
        );
        reply(
            send,
            StatusCode::OK,
            serde_json::to_value(webhook_config(Some(&p1_bundle))).expect("json"),
        );
        // ... so the Secret only records a new start of the wait.
        let (body, send) = expect(&mut h, Method::PUT, SECRET).await;
        let written: Secret = serde_json::from_value(body).expect("a Secret");
        assert_eq!(data(&written, KEY_CA_CRT), p1_bundle, "no promotion yet");
        reply(
            send,
            StatusCode::OK,
            serde_json::to_value(with_resource_version(written, "21")).expect("json"),
        );
        let (_, send) = expect(&mut h, Method::GET, VWC).await;
        reply(
            send,
            StatusCode::OK,
            serde_json::to_value(webhook_config(Some(&p1_bundle))).expect("json"),
        );
        expect_no_more(&mut h).await;
    })
    .await;
    assert!(
        matches!(outcome.written[..], [Action::RestartRotationWait { .. }]),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn promotion_happens_when_the_two_ca_bundle_is_in_place() {
    let (p1, secret) = phase_one();
    let p1_bundle = p1.bundle_pem();
    let next_ca = p1.next.as_ref().expect("next").ca.clone();
    let store = CertStore::new();
    let outcome = run_scenario(&store, |mut h| async move {
        let (_, send) = expect(&mut h, Method::GET, SECRET).await;
        reply(
            send,
            StatusCode::OK,
            serde_json::to_value(&secret).expect("json"),
        );
        let (_, send) = expect(&mut h, Method::GET, VWC).await;
        reply(
            send,
            StatusCode::OK,
            serde_json::to_value(webhook_config(Some(&p1_bundle))).expect("json"),
        );
        let (body, send) = expect(&mut h, Method::PUT, SECRET).await;
        let written: Secret = serde_json::from_value(body).expect("a Secret");
        let p2 = Material::from_secret(&written);
        assert!(p2.problems.is_empty(), "{:?}", p2.problems);
        assert_eq!(p2.ca.as_ref().expect("ca").name, next_ca.name);
        let new_bundle = p2.bundle_pem();
        let serving = data(&written, "tls.crt");
        let name = "residency-guard.rg-system.svc";
        // The API server may still hold the phase-1 bundle: it must trust
        // the new serving certificate too.
        bundle_trusts(&p1_bundle, &serving, name, now()).expect("phase-1 bundle trusts it");
        bundle_trusts(&new_bundle, &serving, name, now()).expect("new bundle trusts it");
        reply(
            send,
            StatusCode::OK,
            serde_json::to_value(with_resource_version(written, "21")).expect("json"),
        );
        let (_, send) = expect(&mut h, Method::GET, VWC).await;
        reply(
            send,
            StatusCode::OK,
            serde_json::to_value(webhook_config(Some(&p1_bundle))).expect("json"),
        );
        let (_, send) = expect(&mut h, Method::PATCH, VWC).await;
        reply(
            send,
            StatusCode::OK,
            serde_json::to_value(webhook_config(Some(&new_bundle))).expect("json"),
        );
        expect_no_more(&mut h).await;
    })
    .await;
    assert!(
        matches!(outcome.written[..], [Action::PromoteNextCa { .. }]),
        "{outcome:?}"
    );
    assert!(outcome.serving_reloaded);
}

/// A corrupt Secret is regenerated while other replicas still serve the old
/// certificate: the old CA stays in the caBundle next to the new one, the
/// replica that regenerated keeps serving its old certificate for one more
/// round, and the old CA leaves the bundle only after the grace period.
#[tokio::test]
async fn regenerating_a_corrupt_secret_keeps_the_old_ca_until_replicas_reload() {
    let old =
        Material::generate(&cfg(), now() - jiff::SignedDuration::from_hours(24)).expect("generate");
    let old_bundle = old.bundle_pem();
    let old_serving = old.serving.as_ref().expect("serving").clone();
    let mut corrupt = with_resource_version(old.to_secret(&cfg(), None).expect("secret"), "30");
    corrupt
        .metadata
        .annotations
        .get_or_insert_default()
        .insert(certs::STATE_ANNOTATION.into(), "{not json".into());
    // This replica (like the others) serves the old pair.
    let store = CertStore::new();
    store
        .replace(
            old_serving.cert_pem.as_bytes(),
            old_serving.key_pem.as_bytes(),
        )
        .expect("old pair loads");
    let name = "residency-guard.rg-system.svc";

    let (tx, rx) = tokio::sync::oneshot::channel::<Secret>();
    let seen_bundle = old_bundle.clone();
    let old_cert = old_serving.cert_pem.clone();
    let outcome = run_scenario(&store, |mut h| async move {
        let (_, send) = expect(&mut h, Method::GET, SECRET).await;
        reply(
            send,
            StatusCode::OK,
            serde_json::to_value(&corrupt).expect("json"),
        );
        // The bundle the API server trusts now is read before generating.
        let (_, send) = expect(&mut h, Method::GET, VWC).await;
        reply(
            send,
            StatusCode::OK,
            serde_json::to_value(owned_webhook_config(Some(&seen_bundle))).expect("json"),
        );
        let (body, send) = expect(&mut h, Method::PUT, SECRET).await;
        let written: Secret = serde_json::from_value(body).expect("a Secret");
        let m = Material::from_secret(&written);
        assert!(m.problems.is_empty(), "{:?}", m.problems);
        let new_bundle = m.bundle_pem();
        let new_cert = data(&written, "tls.crt");
        // Old and new together: replicas not yet reloaded stay trusted ...
        bundle_trusts(&new_bundle, &old_cert, name, now())
            .expect("new bundle trusts the old certificate");
        bundle_trusts(&new_bundle, &new_cert, name, now())
            .expect("new bundle trusts the new certificate");
        assert!(
            new_bundle.starts_with(&m.ca.as_ref().expect("ca").cert_pem),
            "the new CA comes first"
        );
        assert_eq!(owner_uids(&written), [VWC_UID]);
        let written = with_resource_version(written, "31");
        reply(
            send,
            StatusCode::OK,
            serde_json::to_value(&written).expect("json"),
        );
        let (_, send) = expect(&mut h, Method::GET, VWC).await;
        reply(
            send,
            StatusCode::OK,
            serde_json::to_value(owned_webhook_config(Some(&seen_bundle))).expect("json"),
        );
        let (patch, send) = expect(&mut h, Method::PATCH, VWC).await;
        let value: ByteString = serde_json::from_value(patch[2]["value"].clone()).expect("base64");
        assert_eq!(
            value.0,
            new_bundle.as_bytes(),
            "old + new CA published together"
        );
        reply(
            send,
            StatusCode::OK,
            serde_json::to_value(owned_webhook_config(Some(&new_bundle))).expect("json"),
        );
        expect_no_more(&mut h).await;
        let _ = tx.send(written);
    })
    .await;
    assert!(
        matches!(outcome.written[..], [Action::GenerateAll { .. }]),
        "{outcome:?}"
    );
    assert_eq!(outcome.carried_over, 1);
    assert!(outcome.serving_deferred, "{outcome:?}");
    assert_eq!(
        store.cert_pem().expect("a certificate"),
        old_serving.cert_pem.as_bytes(),
        "still serving the old certificate this round"
    );
    let regenerated = rx.await.expect("the written Secret");
    let new_serving = data(&regenerated, "tls.crt");
    let two_ca_bundle = data(&regenerated, KEY_CA_CRT);

    // Next round: nothing to write; the new pair is loaded.
    let later = now() + jiff::SignedDuration::from_secs(30);
    let secret = regenerated.clone();
    let bundle = two_ca_bundle.clone();
    let outcome = run_scenario_at(&store, later, |mut h| async move {
        let (_, send) = expect(&mut h, Method::GET, SECRET).await;
        reply(
            send,
            StatusCode::OK,
            serde_json::to_value(&secret).expect("json"),
        );
        let (_, send) = expect(&mut h, Method::GET, VWC).await;
        reply(
            send,
            StatusCode::OK,
            serde_json::to_value(owned_webhook_config(Some(&bundle))).expect("json"),
        );
        expect_no_more(&mut h).await;
    })
    .await;
    assert!(outcome.written.is_empty(), "{outcome:?}");
    assert!(outcome.serving_reloaded);
    assert_eq!(
        store.cert_pem().expect("a certificate"),
        new_serving.as_bytes()
    );

    // After the grace period the old CA leaves the bundle.
    let after_grace = now()
        + jiff::SignedDuration::try_from(cfg().previous_ca_grace).expect("grace")
        + jiff::SignedDuration::from_secs(1);
    let secret = regenerated.clone();
    let bundle = two_ca_bundle.clone();
    let (tx, rx) = tokio::sync::oneshot::channel::<String>();
    let outcome = run_scenario_at(&store, after_grace, |mut h| async move {
        let (_, send) = expect(&mut h, Method::GET, SECRET).await;
        reply(
            send,
            StatusCode::OK,
            serde_json::to_value(&secret).expect("json"),
        );
        let (body, send) = expect(&mut h, Method::PUT, SECRET).await;
        let written: Secret = serde_json::from_value(body).expect("a Secret");
        let final_bundle = data(&written, KEY_CA_CRT);
        reply(
            send,
            StatusCode::OK,
            serde_json::to_value(with_resource_version(written, "32")).expect("json"),
        );
        let (_, send) = expect(&mut h, Method::GET, VWC).await;
        reply(
            send,
            StatusCode::OK,
            serde_json::to_value(owned_webhook_config(Some(&bundle))).expect("json"),
        );
        let (_, send) = expect(&mut h, Method::PATCH, VWC).await;
        reply(
            send,
            StatusCode::OK,
            serde_json::to_value(owned_webhook_config(Some(&final_bundle))).expect("json"),
        );
        expect_no_more(&mut h).await;
        let _ = tx.send(final_bundle);
    })
    .await;
    assert!(
        matches!(outcome.written[..], [Action::DropRetiredCas { .. }]),
        "{outcome:?}"
    );
    let final_bundle = rx.await.expect("the final bundle");
    bundle_trusts(&final_bundle, &new_serving, name, after_grace).expect("new certificate trusted");
    assert!(
        bundle_trusts(&final_bundle, &old_serving.cert_pem, name, after_grace).is_err(),
        "the old CA is gone"
    );
}

/// A Secret written before owner references (or before the configuration
/// existed) gets one, so `helm uninstall` takes it with the configuration.
#[tokio::test]
async fn an_unowned_secret_gets_the_webhook_configuration_as_owner() {
    let material = Material::generate(&cfg(), now()).expect("generate");
    let secret = with_resource_version(material.to_secret(&cfg(), None).expect("secret"), "7");
    assert!(owner_uids(&secret).is_empty());
    let bundle = material.bundle_pem();
    let store = CertStore::new();
    let outcome = run_scenario(&store, |mut h| async move {
        let (_, send) = expect(&mut h, Method::GET, SECRET).await;
        reply(
            send,
            StatusCode::OK,
            serde_json::to_value(&secret).expect("json"),
        );
        let (_, send) = expect(&mut h, Method::GET, VWC).await;
        reply(
            send,
            StatusCode::OK,
            serde_json::to_value(owned_webhook_config(Some(&bundle))).expect("json"),
        );
        let (body, send) = expect(&mut h, Method::PUT, SECRET).await;
        let written: Secret = serde_json::from_value(body).expect("a Secret");
        assert_eq!(written.metadata.resource_version.as_deref(), Some("7"));
        assert_eq!(owner_uids(&written), [VWC_UID]);
        assert_eq!(written.data, secret.data, "only the owner changes");
        reply(
            send,
            StatusCode::OK,
            serde_json::to_value(with_resource_version(written, "8")).expect("json"),
        );
        expect_no_more(&mut h).await;
    })
    .await;
    assert!(outcome.written.is_empty());
    assert!(outcome.owner_set);
    assert!(store.has_certificate());
}
