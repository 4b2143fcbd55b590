//! Client-certificate authentication of the API server (`webhook.clientCA`)
//! on a real kube-apiserver given a webhook client certificate through an
//! AdmissionConfiguration (`--admission-control-config-file`).
//!
//! The shared e2e control plane cannot be restarted with other flags, so
//! this test starts a control plane of its own (the same kit, state in
//! target/kube-client-auth) and stops it at the end, passed or not.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};

use crate::harness::{
    Mode, apply_policies, apply_when_webhook_answers, cluster, eventually, fullname,
    install_and_run_in, root,
};

/// The control-plane kit (../shared/cluster), as scripts/with-cluster.sh
/// finds it.
fn kit() -> Option<PathBuf> {
    let candidates = [
        std::env::var_os("RESIDENCY_GUARD_CLUSTER_KIT").map(PathBuf::from),
        Some(root().join("../shared/cluster")),
        Some(PathBuf::from("/work/shared/cluster")),
    ];
    candidates
        .into_iter()
        .flatten()
        .find(|d| d.join("up").is_file())
}

/// A control plane of this test's own; `down` when dropped.
struct OwnControlPlane {
    kit: PathBuf,
    state: PathBuf,
}

impl OwnControlPlane {
    fn up(kit: &Path, state: &Path, apiserver_args: &str) -> OwnControlPlane {
        let out = Command::new(kit.join("up"))
            .arg(state)
            .env("KIT_APISERVER_EXTRA_ARGS", apiserver_args)
            .output()
            .expect("run the kit's up");
        let plane = OwnControlPlane {
            kit: kit.to_path_buf(),
            state: state.to_path_buf(),
        };
        assert!(
            out.status.success(),
            "{}/up {} failed:\n{}{}",
            kit.display(),
            state.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        plane
    }

    fn kubeconfig(&self) -> PathBuf {
        self.state.join("admin.kubeconfig")
    }
}

impl Drop for OwnControlPlane {
    fn drop(&mut self) {
        let _ = Command::new(self.kit.join("down"))
            .arg(&self.state)
            .output();
    }
}

const POLICY: &str = r#"
apiVersion: residencyguard.io/v1alpha1
kind: ResidencyPolicy
metadata: {name: e2e-ca-personal}
spec:
  dataClasses: [personal]
  namespaceSelector: {matchLabels: {residencyguard.io/e2e-ca: "true"}}
  action: Deny
"#;

fn deployment(ns: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: unpinned, namespace: {ns}}}\nspec:\n  selector: {{matchLabels: {{app: unpinned}}}}\n  template:\n    metadata: {{labels: {{app: unpinned, residencyguard.io/data-class: personal}}}}\n    spec:\n      containers: [{{name: c, image: registry.k8s.io/pause:3.10}}]\n"
    )
}

/// A forged review: what a pod could POST to the webhook port.
fn forged_review(ns: &str) -> String {
    serde_json::json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "forged",
            "kind": {"group": "apps", "version": "v1", "kind": "Deployment"},
            "resource": {"group": "apps", "version": "v1", "resource": "deployments"},
            "name": "unpinned",
            "namespace": ns,
            "operation": "CREATE",
            "userInfo": {"username": "mallory"},
            "object": yaml_object(&deployment(ns)),
        }
    })
    .to_string()
}

fn yaml_object(yaml: &str) -> serde_json::Value {
    crate::harness::yaml_documents(yaml)
        .into_iter()
        .next()
        .expect("one document")
}

/// POST `body` to `url` with curl, as a plain TLS client (no server
/// verification, as a forger would) or with a client certificate.
fn curl_post(url: &str, body: &str, client_cert: Option<(&Path, &Path)>) -> (bool, String) {
    let mut cmd = Command::new("curl");
    cmd.args([
        "-sS",
        "-k",
        "--max-time",
        "10",
        "-X",
        "POST",
        "-H",
        "Content-Type: application/json",
        "--data-binary",
        body,
        url,
    ]);
    if let Some((cert, key)) = client_cert {
        cmd.arg("--cert").arg(cert).arg("--key").arg(key);
    }
    let out = cmd.output().expect("run curl");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn refused_for_client_certificate(metrics: &str) -> u64 {
    let key = "residency_guard_webhook_refused_total{reason=\"client_certificate\"} ";
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// The API server, given a client certificate from the webhook's client
/// CA, gets `kubectl apply` judged (an unpinned classified Deployment is
/// denied with the operator's message); a plain TLS client without a
/// certificate is refused at the handshake, and one with a certificate
/// from the client CA is judged (so the refusal is the certificate's).
#[test]
fn the_api_server_with_a_client_certificate_is_judged_a_plain_client_is_refused() {
    let Some(mut c) = cluster("client-auth") else {
        return;
    };
    let Some(kit) = kit() else {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!(
                "CI=true and no control-plane kit (RESIDENCY_GUARD_CLUSTER_KIT, ../shared/cluster)"
            );
        }
        println!("skipped client-auth: no control-plane kit (set RESIDENCY_GUARD_CLUSTER_KIT)");
        return;
    };

    // The client CA and the API server's webhook client certificate.
    let ca_key = KeyPair::generate().expect("a key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "e2e webhook client CA");
    let ca_cert = ca_params.self_signed(&ca_key).expect("the CA certificate");
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let client_key = KeyPair::generate().expect("a key");
    let mut client_params = CertificateParams::new(Vec::<String>::new()).expect("params");
    client_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "kube-apiserver-webhook-client");
    client_params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let client_cert = client_params
        .signed_by(&client_key, &issuer)
        .expect("the client certificate");
    let dir = c.scratch.clone();
    let write = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).expect("write a scratch file");
        path
    };
    let ca_file = write("webhook-client-ca.crt", &ca_cert.pem());
    let cert_file = write("webhook-client.crt", &client_cert.pem());
    let key_file = write("webhook-client.key", &client_key.serialize_pem());
    // The API server presents this certificate to every webhook ("*"; on a
    // real cluster, name the webhook's host: "<service>.<namespace>.svc"
    // or "host:port" of a URL).
    let kubeconfig = write(
        "webhook-admission.kubeconfig",
        &format!(
            "apiVersion: v1\nkind: Config\nusers:\n- name: \"*\"\n  user:\n    client-certificate: {}\n    client-key: {}\n",
            cert_file.display(),
            key_file.display()
        ),
    );
    let admission = write(
        "admission-configuration.yaml",
        &format!(
            "apiVersion: apiserver.config.k8s.io/v1\nkind: AdmissionConfiguration\nplugins:\n- name: ValidatingAdmissionWebhook\n  configuration:\n    apiVersion: apiserver.config.k8s.io/v1\n    kind: WebhookAdmissionConfiguration\n    kubeConfigFile: {}\n",
            kubeconfig.display()
        ),
    );

    let plane = OwnControlPlane::up(
        &kit,
        &root().join("target/kube-client-auth"),
        &format!("--admission-control-config-file={}", admission.display()),
    );
    c.kubeconfig = plane.kubeconfig();

    let release = "e2e-ca";
    let system = format!("{release}-system");
    let ca_value = format!("webhook.clientCA.pem={}", ca_file.display());
    // This control plane has no worker node: the operator runs as a local
    // process, registered by URL, in every mode.
    let installed = install_and_run_in(
        Mode::Local,
        &c,
        release,
        &system,
        &["--set-file", &ca_value],
    );
    apply_policies(&c, &["e2e-ca-personal"], POLICY);
    let ns = "e2e-ca-apps";
    c.fresh_namespace(ns, &[("residencyguard.io/e2e-ca", "true")]);

    // kubectl apply through the API server, which authenticates with its
    // client certificate: judged, and denied with the operator's message.
    let r = eventually(
        "the webhook to judge the Deployment",
        Duration::from_secs(30),
        || {
            let r = apply_when_webhook_answers(&c, &deployment(ns));
            r.stderr.contains("policy e2e-ca-personal").then_some(r)
        },
    );
    assert!(!r.ok, "the unpinned Deployment was admitted");
    assert!(
        r.stderr.contains("denied the request"),
        "not a denial:\n{}",
        r.stderr
    );

    // A pod's forged review, from a plain TLS client: refused at the
    // handshake, before any HTTP.
    let vwc = c
        .get_json(&["validatingwebhookconfiguration", &fullname(release)])
        .expect("the webhook configuration");
    let url = vwc["webhooks"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|w| w["clientConfig"]["url"].as_str())
        .find(|u| u.ends_with("/validate/workloads"))
        .expect("the workloads entry's URL")
        .to_string();
    let before = refused_for_client_certificate(&installed.operator.metrics());
    let (ok, out) = curl_post(&url, &forged_review(ns), None);
    assert!(!ok, "a client without a certificate was answered: {out}");
    assert!(!out.contains("AdmissionReview"), "{out}");
    let after = refused_for_client_certificate(&installed.operator.metrics());
    assert_eq!(after, before + 1, "the refused handshake is counted");
    assert!(
        installed
            .operator
            .log()
            .contains("no client certificate issued by --client-ca-file"),
        "the refusal is logged"
    );

    // The same review with the API server's certificate is judged: the
    // refusal was the missing certificate's.
    let (ok, out) = curl_post(&url, &forged_review(ns), Some((&cert_file, &key_file)));
    assert!(ok, "a client with the client CA's certificate: {out}");
    assert!(out.contains("\"allowed\":false"), "{out}");
    assert!(out.contains("policy e2e-ca-personal"), "{out}");
    drop(installed);
    drop(plane);
}
