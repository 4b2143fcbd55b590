//! End to end against a real cluster: skipped (with the reason printed)
//! unless RESIDENCY_GUARD_E2E_KUBECONFIG names a kubeconfig.
//!
//! It applies the CRD and policies, runs `residency-guard serve` on this
//! machine with self-managed certificates, registers a
//! ValidatingWebhookConfiguration whose URL points back at it, and checks
//! what `kubectl apply` prints. The API server must be able to reach this
//! machine: set RESIDENCY_GUARD_E2E_WEBHOOK_HOST to the address it should
//! call (default: this machine's address on the route to the API server).
//! Only objects in a namespace labelled for the test are intercepted.

use std::io::Write;
use std::net::UdpSocket;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const NS: &str = "residency-guard-e2e";
const CONFIG: &str = "residency-guard-e2e";

struct Env {
    kubeconfig: String,
    kubectl: String,
}

fn env() -> Option<Env> {
    let Ok(kubeconfig) = std::env::var("RESIDENCY_GUARD_E2E_KUBECONFIG") else {
        println!(
            "skipped: RESIDENCY_GUARD_E2E_KUBECONFIG is not set (end-to-end tests need a real cluster)"
        );
        return None;
    };
    let local = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".tools/bin/kubectl");
    let kubectl = if local.exists() {
        local.display().to_string()
    } else {
        "kubectl".to_string()
    };
    Some(Env {
        kubeconfig,
        kubectl,
    })
}

impl Env {
    fn kubectl(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut child = Command::new(&self.kubectl)
            .args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run kubectl");
        if let Some(input) = stdin {
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(input.as_bytes())
                .expect("write stdin");
        }
        child.wait_with_output().expect("kubectl output")
    }

    fn apply(&self, yaml: &str) -> Output {
        self.kubectl(&["apply", "-f", "-"], Some(yaml))
    }

    fn must(&self, args: &[&str], stdin: Option<&str>) {
        let out = self.kubectl(args, stdin);
        assert!(
            out.status.success(),
            "kubectl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The API server's host:port, from the kubeconfig.
    fn api_server(&self) -> String {
        let out = self.kubectl(
            &[
                "config",
                "view",
                "--minify",
                "-o",
                "jsonpath={.clusters[0].cluster.server}",
            ],
            None,
        );
        let url = String::from_utf8_lossy(&out.stdout).to_string();
        let host = url
            .trim_start_matches("https://")
            .trim_start_matches("http://");
        let host = host.split('/').next().unwrap_or_default().to_string();
        if host.contains(':') {
            host
        } else {
            format!("{host}:443")
        }
    }
}

/// This machine's address as the API server would see it (no packet is sent).
fn local_address_towards(api: &str) -> String {
    if let Ok(h) = std::env::var("RESIDENCY_GUARD_E2E_WEBHOOK_HOST") {
        return h;
    }
    let socket = UdpSocket::bind("0.0.0.0:0").expect("udp socket");
    socket.connect(api).expect("route to the API server");
    socket.local_addr().expect("local address").ip().to_string()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("0.0.0.0:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Serve(Child);
impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    panic!("timed out after {timeout:?} waiting for {what}");
}

const POLICIES: &str = r#"
apiVersion: residencyguard.io/v1alpha1
kind: ResidencyPolicy
metadata: {name: e2e-personal-deny}
spec:
  dataClasses: [personal]
  namespaceSelector: {matchLabels: {residencyguard.io/e2e: "true"}}
  action: Deny
---
apiVersion: residencyguard.io/v1alpha1
kind: ResidencyPolicy
metadata: {name: e2e-accounting-warn}
spec:
  dataClasses: [accounting]
  namespaceSelector: {matchLabels: {residencyguard.io/e2e: "true"}}
  action: Warn
"#;

fn deployment(name: &str, class: &str, region: Option<&str>) -> String {
    let selector = region
        .map(|r| format!("      nodeSelector: {{topology.kubernetes.io/region: {r}}}\n"))
        .unwrap_or_default();
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: {name}, namespace: {NS}}}\nspec:\n  replicas: 1\n  selector: {{matchLabels: {{app: {name}}}}}\n  template:\n    metadata: {{labels: {{app: {name}, residencyguard.io/data-class: {class}}}}}\n    spec:\n{selector}      containers: [{{name: c, image: registry.k8s.io/pause:3.10}}]\n"
    )
}

fn webhook_configuration(url: &str) -> String {
    format!(
        r#"apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingWebhookConfiguration
metadata: {{name: {CONFIG}}}
webhooks:
- name: workload-templates.e2e.residencyguard.io
  admissionReviewVersions: [v1]
  sideEffects: None
  timeoutSeconds: 3
  failurePolicy: Fail
  clientConfig: {{url: "{url}/validate/workloads"}}
  namespaceSelector: {{matchLabels: {{residencyguard.io/e2e: "true"}}}}
  rules:
  - apiGroups: ["", apps, batch]
    apiVersions: [v1]
    operations: [CREATE, UPDATE]
    resources: [pods, deployments, replicasets, statefulsets, daemonsets, jobs, cronjobs, replicationcontrollers]
"#
    )
}

#[test]
fn kubectl_apply_shows_denials_and_warnings() {
    let Some(env) = env() else { return };
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    env.must(
        &[
            "apply",
            "-f",
            root.join("crds/residencypolicies.residencyguard.io.yaml")
                .to_str()
                .unwrap(),
        ],
        None,
    );
    env.must(
        &[
            "wait",
            "--for=condition=Established",
            "crd/residencypolicies.residencyguard.io",
            "--timeout=60s",
        ],
        None,
    );
    let _ = env.kubectl(&["create", "namespace", NS], None);
    env.must(
        &[
            "label",
            "namespace",
            NS,
            "residencyguard.io/e2e=true",
            "--overwrite",
        ],
        None,
    );
    env.must(&["apply", "-f", "-"], Some(POLICIES));

    let host = local_address_towards(&env.api_server());
    let port = free_port();
    let admin = free_port();
    let url = format!("https://{host}:{port}");
    env.must(&["apply", "-f", "-"], Some(&webhook_configuration(&url)));

    let serve = Serve(
        Command::new(env!("CARGO_BIN_EXE_residency-guard"))
            .args([
                "serve",
                "--tls-mode",
                "self-managed",
                "--namespace",
                NS,
                "--cert-secret",
                "residency-guard-e2e-tls",
                "--webhook-configs",
                CONFIG,
                "--cert-extra-san",
                &host,
                "--webhook-addr",
                &format!("0.0.0.0:{port}"),
                "--admin-addr",
                &format!("127.0.0.1:{admin}"),
                "--log-format",
                "text",
            ])
            .env("KUBECONFIG", &env.kubeconfig)
            .spawn()
            .expect("start residency-guard serve"),
    );

    // Ready: watches synced, certificate issued, caBundle patched.
    wait_until("the webhook to be ready", Duration::from_secs(60), || {
        std::net::TcpStream::connect(("127.0.0.1", admin))
            .and_then(|mut s| {
                s.write_all(b"GET /readyz HTTP/1.0\r\n\r\n")?;
                let mut buf = String::new();
                std::io::Read::read_to_string(&mut s, &mut buf)?;
                Ok(buf.starts_with("HTTP/1.0 200") || buf.starts_with("HTTP/1.1 200"))
            })
            .unwrap_or(false)
    });
    wait_until("caBundle to be patched", Duration::from_secs(30), || {
        let out = env.kubectl(
            &[
                "get",
                "validatingwebhookconfiguration",
                CONFIG,
                "-o",
                "jsonpath={.webhooks[0].clientConfig.caBundle}",
            ],
            None,
        );
        !out.stdout.is_empty()
    });
    // Policies reach the snapshot within the debounce.
    std::thread::sleep(Duration::from_secs(2));

    let denied = env.apply(&deployment("e2e-unpinned", "personal", None));
    let stderr = String::from_utf8_lossy(&denied.stderr).to_string();
    assert!(
        !denied.status.success(),
        "a violating Deployment was admitted"
    );
    assert!(stderr.contains("denied the request"), "{stderr}");
    assert!(
        stderr.contains("Deployment residency-guard-e2e/e2e-unpinned carries personal information"),
        "{stderr}"
    );
    assert!(
        stderr.contains("policy e2e-personal-deny requires mainland-China nodes"),
        "{stderr}"
    );
    assert!(
        stderr.contains("Fix: add a required node affinity on topology.kubernetes.io/region"),
        "{stderr}"
    );

    let ok = env.apply(&deployment("e2e-pinned", "personal", Some("cn-north-1")));
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );

    let warned = env.apply(&deployment("e2e-accounting", "accounting", None));
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&warned.stdout),
        String::from_utf8_lossy(&warned.stderr)
    );
    assert!(warned.status.success(), "{all}");
    assert!(all.contains("Warning:"), "{all}");
    assert!(all.contains("policy e2e-accounting-warn"), "{all}");

    drop(serve);
    let _ = env.kubectl(
        &[
            "delete",
            "validatingwebhookconfiguration",
            CONFIG,
            "--ignore-not-found",
        ],
        None,
    );
    let _ = env.kubectl(&["delete", "-f", "-", "--ignore-not-found"], Some(POLICIES));
    let _ = env.kubectl(
        &[
            "delete",
            "namespace",
            NS,
            "--ignore-not-found",
            "--wait=false",
        ],
        None,
    );
}
