//! What every end-to-end test needs: the cluster's kubeconfig, real
//! `kubectl` and `helm`, the operator, waiting, and a cleanup that runs even
//! when the test fails.
//!
//! The tests talk to the cluster the way a user does (kubectl, helm). The
//! operator runs in one of two modes (`Mode`): as a local process the way
//! the chart runs it (its environment, its ServiceAccount; the webhook
//! registered by URL), or, with RESIDENCY_GUARD_E2E_IMAGE, as the chart
//! ships it: its own Pods on the kit's worker node, the webhook called
//! through the Service. Only the journey's stale-watch test (it reads the
//! local process's /readyz) always runs the local process.

use std::cell::RefCell;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Where the repository is (charts, CRDs, the binary's sources).
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `cargo test` runs the tests of one binary on threads: one at a time, as
/// nextest's `e2e` test group does across processes (.config/nextest.toml).
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// The output of one command.
pub struct Run {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// stdout and stderr together (kubectl prints warnings on stderr).
    pub fn all(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

/// Something a test created, undone when the test ends (passed or not).
enum Undo {
    Namespace(String),
    /// `kubectl delete <kind> <name>` for a cluster-scoped object.
    ClusterObject(String, String),
    HelmRelease {
        release: String,
        namespace: String,
    },
    NodeLabel {
        node: String,
        key: String,
        value: Option<String>,
    },
}

pub struct Cluster {
    pub kubeconfig: PathBuf,
    kubectl: PathBuf,
    helm: PathBuf,
    undo: RefCell<Vec<Undo>>,
    /// Namespaces `fresh_namespace` made in this test: `helm_install` keeps
    /// them (the test may have put objects the release needs in them).
    made_here: RefCell<std::collections::BTreeSet<String>>,
    /// Per-test scratch directory (operator logs, kubeconfigs).
    pub scratch: PathBuf,
    _one_at_a_time: MutexGuard<'static, ()>,
}

fn tool(name: &str, env: &str) -> PathBuf {
    if let Ok(p) = std::env::var(env) {
        return PathBuf::from(p);
    }
    let local = root().join(".tools/bin").join(name);
    if local.exists() {
        local
    } else {
        PathBuf::from(name)
    }
}

/// The cluster under test, or `None` (with the reason printed) when no
/// kubeconfig is given. Under `CI=true` a missing cluster is a failure:
/// a skipped end-to-end test proves nothing.
pub fn cluster(test: &str) -> Option<Cluster> {
    let Some(kubeconfig) = std::env::var_os("RESIDENCY_GUARD_E2E_KUBECONFIG") else {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!(
                "CI=true but RESIDENCY_GUARD_E2E_KUBECONFIG is not set: end-to-end tests must \
                 run in CI (.ci/run starts a control plane with ../shared/cluster)"
            );
        }
        println!(
            "skipped {test}: RESIDENCY_GUARD_E2E_KUBECONFIG is not set (end-to-end tests need a \
             cluster; see README, Development)"
        );
        return None;
    };
    let guard = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let scratch = root().join("target/e2e").join(test);
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(&scratch).expect("create the scratch directory");
    Some(Cluster {
        kubeconfig: PathBuf::from(kubeconfig),
        kubectl: tool("kubectl", "RESIDENCY_GUARD_E2E_KUBECTL"),
        helm: tool("helm", "RESIDENCY_GUARD_E2E_HELM"),
        undo: RefCell::new(Vec::new()),
        made_here: RefCell::new(std::collections::BTreeSet::new()),
        scratch,
        _one_at_a_time: guard,
    })
}

fn run(program: &Path, args: &[&str], stdin: Option<&str>, kubeconfig: &Path) -> Run {
    run_in(None, program, args, stdin, kubeconfig)
}

fn run_in(
    dir: Option<&Path>,
    program: &Path,
    args: &[&str],
    stdin: Option<&str>,
    kubeconfig: &Path,
) -> Run {
    let mut command = Command::new(program);
    if let Some(dir) = dir {
        command.current_dir(dir);
    }
    let mut child = command
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", program.display()));
    let mut input = child.stdin.take().expect("stdin is piped");
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).expect("write stdin");
    }
    drop(input);
    let out = child.wait_with_output().expect("wait for the command");
    Run {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

impl Cluster {
    pub fn kubectl(&self, args: &[&str]) -> Run {
        run(&self.kubectl, args, None, &self.kubeconfig)
    }

    /// kubectl run from `dir` (so paths in its output are as a user types them).
    pub fn kubectl_from(&self, dir: &Path, args: &[&str]) -> Run {
        run_in(Some(dir), &self.kubectl, args, None, &self.kubeconfig)
    }

    pub fn kubectl_in(&self, args: &[&str], stdin: &str) -> Run {
        run(&self.kubectl, args, Some(stdin), &self.kubeconfig)
    }

    /// Run kubectl; panic with its stderr when it fails.
    pub fn must(&self, args: &[&str]) -> String {
        let r = self.kubectl(args);
        assert!(r.ok, "kubectl {} failed:\n{}", args.join(" "), r.stderr);
        r.stdout
    }

    /// `kubectl apply -f -`.
    pub fn apply(&self, yaml: &str) -> Run {
        self.kubectl_in(&["apply", "-f", "-"], yaml)
    }

    pub fn must_apply(&self, yaml: &str) -> String {
        let r = self.apply(yaml);
        assert!(r.ok, "kubectl apply failed:\n{}\n---\n{yaml}", r.stderr);
        r.all()
    }

    pub fn helm(&self, args: &[&str]) -> Run {
        run(&self.helm, args, None, &self.kubeconfig)
    }

    pub fn must_helm(&self, args: &[&str]) -> String {
        let r = self.helm(args);
        assert!(r.ok, "helm {} failed:\n{}", args.join(" "), r.stderr);
        r.stdout
    }

    /// `kubectl get ... -o json`, parsed; None when it fails (not found).
    pub fn get_json(&self, args: &[&str]) -> Option<Value> {
        let mut all = vec!["get"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["-o", "json"]);
        let r = self.kubectl(&all);
        if !r.ok {
            return None;
        }
        serde_json::from_str(&r.stdout).ok()
    }

    /// A namespace of this test, new: one left by an earlier run is deleted
    /// first. Deleted again when the test ends.
    pub fn fresh_namespace(&self, name: &str, labels: &[(&str, &str)]) {
        delete_namespace(self, name);
        self.must(&["create", "namespace", name]);
        self.made_here.borrow_mut().insert(name.to_string());
        self.undo
            .borrow_mut()
            .push(Undo::Namespace(name.to_string()));
        if !labels.is_empty() {
            let mut args = vec!["label".to_string(), "namespace".into(), name.into()];
            args.extend(labels.iter().map(|(k, v)| format!("{k}={v}")));
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            self.must(&args);
        }
    }

    /// `user` gets the built-in ClusterRole `edit` in `namespace` and
    /// nothing else: the ordinary developer the tests act as (`--as`).
    pub fn grant_edit(&self, namespace: &str, user: &str) {
        self.must(&[
            "create",
            "rolebinding",
            &format!("{user}-edit"),
            "-n",
            namespace,
            "--clusterrole=edit",
            &format!("--user={user}"),
        ]);
    }

    /// Delete this namespace when the test ends (it is created by the test
    /// itself, e.g. in a manifest).
    pub fn forget_namespace_later(&self, name: &str) {
        delete_namespace(self, name);
        self.undo
            .borrow_mut()
            .push(Undo::Namespace(name.to_string()));
    }

    /// Delete this cluster-scoped object when the test ends; one left by an
    /// earlier run is deleted now.
    pub fn cluster_object(&self, kind: &str, name: &str) {
        self.kubectl(&["delete", kind, name, "--ignore-not-found", "--wait=true"]);
        self.undo
            .borrow_mut()
            .push(Undo::ClusterObject(kind.into(), name.into()));
    }

    /// Set a node label; its old value comes back when the test ends.
    pub fn label_node(&self, node: &str, key: &str, value: &str) {
        let old = self
            .get_json(&["node", node])
            .and_then(|n| n["metadata"]["labels"][key].as_str().map(str::to_string));
        self.undo.borrow_mut().push(Undo::NodeLabel {
            node: node.into(),
            key: key.into(),
            value: old,
        });
        self.must(&[
            "label",
            "node",
            node,
            &format!("{key}={value}"),
            "--overwrite",
        ]);
    }

    /// `helm install` (an earlier run's release of the same name is removed
    /// first); uninstalled when the test ends.
    pub fn helm_install(&self, release: &str, namespace: &str, args: &[&str]) -> Run {
        self.helm_install_chart(
            &root().join("charts/residency-guard"),
            release,
            namespace,
            args,
        )
    }

    /// `helm_install` of another chart directory (an older version of ours).
    pub fn helm_install_chart(
        &self,
        chart: &Path,
        release: &str,
        namespace: &str,
        args: &[&str],
    ) -> Run {
        self.helm(&["uninstall", release, "-n", namespace, "--wait"]);
        // `--create-namespace` makes it; uninstall leaves it. A namespace
        // this test made itself (`fresh_namespace`, e.g. to put a ConfigMap
        // the release mounts in it first) is kept.
        if !self.made_here.borrow().contains(namespace) {
            self.forget_namespace_later(namespace);
        }
        self.undo.borrow_mut().push(Undo::HelmRelease {
            release: release.into(),
            namespace: namespace.into(),
        });
        let chart = chart.to_str().expect("a UTF-8 path");
        let mut all = vec![
            "install",
            release,
            chart,
            "-n",
            namespace,
            "--create-namespace",
        ];
        all.extend_from_slice(args);
        self.helm(&all)
    }

    /// A kubeconfig that authenticates as a ServiceAccount (a bound token),
    /// so what runs with it has exactly that account's RBAC.
    pub fn service_account_kubeconfig(&self, namespace: &str, account: &str) -> PathBuf {
        let token = self.must(&["create", "token", account, "-n", namespace, "--duration=2h"]);
        let server = self.must(&[
            "config",
            "view",
            "--minify",
            "-o",
            "jsonpath={.clusters[0].cluster.server}",
        ]);
        let ca = self.must(&[
            "config",
            "view",
            "--raw",
            "--minify",
            "-o",
            "jsonpath={.clusters[0].cluster.certificate-authority-data}",
        ]);
        let config = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: e2e\n  cluster:\n    server: {server}\n    certificate-authority-data: {ca}\nusers:\n- name: {account}\n  user:\n    token: {}\ncontexts:\n- name: e2e\n  context: {{cluster: e2e, user: {account}}}\ncurrent-context: e2e\n",
            token.trim()
        );
        let path = self.scratch.join(format!("{account}.kubeconfig"));
        std::fs::write(&path, config).expect("write the ServiceAccount kubeconfig");
        path
    }
}

fn delete_namespace(c: &Cluster, name: &str) {
    if c.get_json(&["namespace", name]).is_none() {
        return;
    }
    c.kubectl(&["delete", "namespace", name, "--wait=false"]);
    // There is no kubelet to confirm that a pod stopped: pods are removed by
    // force, or the namespace never finishes terminating.
    let deadline = Instant::now() + Duration::from_secs(90);
    while Instant::now() < deadline {
        c.kubectl(&[
            "delete",
            "pods",
            "--all",
            "-n",
            name,
            "--grace-period=0",
            "--force",
            "--ignore-not-found",
        ]);
        if c.get_json(&["namespace", name]).is_none() {
            return;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    eprintln!("warning: namespace {name} still terminating after 90 s");
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let steps: Vec<Undo> = self.undo.borrow_mut().drain(..).rev().collect();
        for step in steps {
            let started = Instant::now();
            let what = match &step {
                Undo::Namespace(n) => format!("namespace {n}"),
                Undo::ClusterObject(k, n) => format!("{k} {n}"),
                Undo::HelmRelease { release, .. } => format!("release {release}"),
                Undo::NodeLabel { node, key, .. } => format!("node {node} {key}"),
            };
            match step {
                Undo::Namespace(name) => delete_namespace(self, &name),
                Undo::ClusterObject(kind, name) => {
                    // Never wait: a PersistentVolume keeps its protection
                    // finalizer while a claim in a namespace not yet
                    // deleted is bound to it.
                    self.kubectl(&["delete", &kind, &name, "--ignore-not-found", "--wait=false"]);
                }
                Undo::HelmRelease { release, namespace } => {
                    let r = self.helm(&["uninstall", &release, "-n", &namespace, "--wait"]);
                    if !r.ok && !r.stderr.contains("not found") {
                        eprintln!("cleanup: helm uninstall {release}: {}", r.stderr);
                    }
                }
                Undo::NodeLabel { node, key, value } => {
                    let label = match value {
                        Some(v) => format!("{key}={v}"),
                        None => format!("{key}-"),
                    };
                    self.kubectl(&["label", "node", &node, &label, "--overwrite"]);
                }
            }
            eprintln!("cleanup: {what} in {:?}", started.elapsed());
        }
    }
}

/// Poll `f` every 200 ms until it gives a value; panic after `within`.
pub fn eventually<T>(what: &str, within: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        if start.elapsed() > within {
            panic!("timed out after {within:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// `GET path` on a plain-HTTP port: the status code and the body.
fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\n\r\n").ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    let status = buf.split_whitespace().nth(1)?.parse().ok()?;
    let body = buf.split_once("\r\n\r\n").map(|(_, b)| b.to_string())?;
    Some((status, body))
}

pub fn http_status(port: u16, path: &str) -> Option<u16> {
    http_get(port, path).map(|(status, _)| status)
}

pub fn http_body(port: u16, path: &str) -> Option<String> {
    http_get(port, path).map(|(_, body)| body)
}

/// Every document of a multi-document YAML stream.
pub fn yaml_documents(text: &str) -> Vec<Value> {
    use serde::Deserialize;
    serde_norway::Deserializer::from_str(text)
        .filter_map(|doc| Value::deserialize(doc).ok())
        .filter(|v| !v.is_null())
        .collect()
}

/// The chart's client CA (webhook.clientCA) as the pod would see it: the
/// ConfigMap its `client-ca` volume names, written to a local file.
fn client_ca_file(c: &Cluster, deployment: &Value, namespace: &str) -> String {
    let volumes = deployment["spec"]["template"]["spec"]["volumes"].as_array();
    let map = volumes
        .into_iter()
        .flatten()
        .find(|v| v["name"] == "client-ca")
        .and_then(|v| v["configMap"]["name"].as_str())
        .expect("RESIDENCY_GUARD_CLIENT_CA_FILE without a client-ca volume");
    let cm = eventually("the client CA ConfigMap", Duration::from_secs(10), || {
        c.get_json(&["configmap", map, "-n", namespace])
    });
    let pem = cm["data"]["ca.crt"]
        .as_str()
        .expect("the client CA ConfigMap has ca.crt");
    let path = c.scratch.join("client-ca.crt");
    std::fs::write(&path, pem).expect("write the client CA");
    path.to_str().expect("a UTF-8 path").to_string()
}

/// The file at `path` in the chart's Pod, for the local process: the key
/// of the ConfigMap whose volume is mounted at the path's directory, read
/// from the cluster as the kubelet would and written to the scratch
/// directory.
fn mounted_file(c: &Cluster, deployment: &Value, namespace: &str, path: &str) -> String {
    let pod = &deployment["spec"]["template"]["spec"];
    let (dir, key) = path.rsplit_once('/').expect("an absolute path");
    let volume_name = pod["containers"][0]["volumeMounts"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|m| m["mountPath"] == dir)
        .and_then(|m| m["name"].as_str())
        .unwrap_or_else(|| panic!("{path}: no volume is mounted at {dir}"));
    let volume = pod["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|v| v["name"] == volume_name)
        .unwrap_or_else(|| panic!("{path}: no volume {volume_name}"));
    let map = volume["configMap"]["name"]
        .as_str()
        .unwrap_or_else(|| panic!("{path}: volume {volume_name} is not a ConfigMap"));
    // An `items` entry may give the key another file name.
    let item = volume["configMap"]["items"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|i| i["path"] == key)
        .and_then(|i| i["key"].as_str())
        .unwrap_or(key);
    let cm = eventually(
        &format!("ConfigMap {map} (mounted at {dir})"),
        Duration::from_secs(10),
        || c.get_json(&["configmap", map, "-n", namespace]),
    );
    let text = cm["data"][item]
        .as_str()
        .unwrap_or_else(|| panic!("ConfigMap {map} has no key {item}"));
    let local = c.scratch.join(format!("{map}-{key}"));
    std::fs::write(&local, text).expect("write the mounted file");
    local.to_str().expect("a UTF-8 path").to_string()
}

/// How the tests run the operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// `serve` as a local process under the chart's ServiceAccount, the
    /// webhook registered by URL (`webhook.url`), no replicas in the cluster.
    Local,
    /// As the chart ships it: the image RESIDENCY_GUARD_E2E_IMAGE (already
    /// imported into the kit's worker node), two Pods on `kit-worker`, the
    /// webhook called through its Service, self-managed certificates, the
    /// chart's ServiceAccount, RBAC, probes, limits and security context.
    Pods,
}

/// The node that runs Pods (the kit's `worker`); the fake nodes never do.
pub const WORKER_NODE: &str = "kit-worker";

/// The taint that keeps the tests' own workloads off the worker (they are
/// scheduled among the five fake nodes, as without a worker); the
/// operator's Pods tolerate it in Pods mode. scripts/with-cluster.sh sets
/// it; Pods mode sets it too, for a cluster started by hand.
pub const WORKER_TAINT: &str = "residencyguard.io/e2e-operator";

/// The worker's region label (with WORKER_TAINT): the operator runs on a
/// mainland node, as it would in a mainland cluster, and the worker is
/// never one of the nodes abroad or unverified that the tests' denial
/// messages list (the engine counts every node a workload's selectors
/// match; a taint does not hide one).
pub const WORKER_REGION: &str = "cn-north-1";

/// Pods mode when RESIDENCY_GUARD_E2E_IMAGE names an image, else Local.
pub fn mode() -> Mode {
    if image().is_some() {
        Mode::Pods
    } else {
        Mode::Local
    }
}

/// RESIDENCY_GUARD_E2E_IMAGE split into repository and tag.
pub fn image() -> Option<(String, String)> {
    let image = std::env::var("RESIDENCY_GUARD_E2E_IMAGE").ok()?;
    let image = image.trim();
    if image.is_empty() {
        return None;
    }
    let slash = image.rfind('/').map_or(0, |i| i + 1);
    match image[slash..].rfind(':') {
        Some(colon) => Some((
            image[..slash + colon].to_string(),
            image[slash + colon + 1..].to_string(),
        )),
        None => Some((image.to_string(), "latest".to_string())),
    }
}

/// The operator under test: a local process, or the release's Pods.
pub struct Operator {
    running: Running,
    /// The local process's admin port (/metrics, /readyz); 0 in Pods mode,
    /// so tests that read it directly run in `Mode::Local`.
    pub admin_port: u16,
}

enum Running {
    Local {
        child: Option<Child>,
        log: PathBuf,
    },
    Pods {
        kubectl: PathBuf,
        kubeconfig: PathBuf,
        namespace: String,
        release: String,
    },
}

impl Operator {
    /// Start `residency-guard serve` with the environment the chart's
    /// Deployment gives its container (the downward-API values filled in),
    /// listening on local ports, authenticated with `kubeconfig`.
    pub fn start_as_chart(
        c: &Cluster,
        release: &str,
        namespace: &str,
        kubeconfig: &Path,
        webhook_port: u16,
    ) -> Operator {
        let manifest = c.must_helm(&["get", "manifest", release, "-n", namespace]);
        let deployment = yaml_documents(&manifest)
            .into_iter()
            .find(|d| d["kind"] == "Deployment")
            .expect("the chart renders a Deployment");
        let container = &deployment["spec"]["template"]["spec"]["containers"][0];
        let admin_port = free_port();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_residency-guard"));
        for arg in container["args"].as_array().into_iter().flatten() {
            cmd.arg(arg.as_str().unwrap_or_default());
        }
        cmd.env_clear()
            .env("KUBECONFIG", kubeconfig)
            .env("PATH", std::env::var_os("PATH").unwrap_or_default());
        for e in container["env"].as_array().into_iter().flatten() {
            let name = e["name"].as_str().unwrap_or_default();
            let value = match (e["value"].as_str(), name) {
                (_, "RESIDENCY_GUARD_WEBHOOK_ADDR") => format!("127.0.0.1:{webhook_port}"),
                (_, "RESIDENCY_GUARD_ADMIN_ADDR") => format!("127.0.0.1:{admin_port}"),
                (_, "RESIDENCY_GUARD_NAMESPACE") => namespace.to_string(),
                (_, "RESIDENCY_GUARD_POD_NAME") => format!("{release}-e2e-0"),
                (_, "RESIDENCY_GUARD_LOG_FORMAT") => "text".to_string(),
                (_, "RESIDENCY_GUARD_CLIENT_CA_FILE") => client_ca_file(c, &deployment, namespace),
                (
                    Some(path),
                    "RESIDENCY_GUARD_MAINLAND_CIDRS"
                    | "RESIDENCY_GUARD_EXTRA_MAINLAND_CIDRS"
                    | "RESIDENCY_GUARD_CATALOGUE",
                ) => mounted_file(c, &deployment, namespace, path),
                (Some(v), _) => v.to_string(),
                (None, _) => panic!("env {name} is neither a value nor known to the test: {e}"),
            };
            cmd.env(name, value);
        }
        Operator::spawn(c, cmd, webhook_port, admin_port)
    }

    fn spawn(c: &Cluster, mut cmd: Command, webhook_port: u16, admin_port: u16) -> Operator {
        let log = c.scratch.join(format!("operator-{webhook_port}.log"));
        let file = std::fs::File::create(&log).expect("create the operator log");
        let err = file.try_clone().expect("clone the log file");
        let child = cmd
            .stdout(Stdio::from(file))
            .stderr(Stdio::from(err))
            .spawn()
            .expect("start residency-guard serve");
        let op = Operator {
            running: Running::Local {
                child: Some(child),
                log,
            },
            admin_port,
        };
        eventually(
            "the operator to be ready (/readyz 200)",
            Duration::from_secs(60),
            || (http_status(admin_port, "/readyz") == Some(200)).then_some(()),
        );
        op
    }

    /// The release's Pods (installed and ready).
    fn pods_of(c: &Cluster, release: &str, namespace: &str) -> Operator {
        Operator {
            running: Running::Pods {
                kubectl: c.kubectl.clone(),
                kubeconfig: c.kubeconfig.clone(),
                namespace: namespace.to_string(),
                release: release.to_string(),
            },
            admin_port: 0,
        }
    }

    /// The names of the release's running operator Pods (Pods mode).
    pub fn pod_names(&self) -> Vec<String> {
        let Running::Pods {
            kubectl,
            kubeconfig,
            namespace,
            release,
        } = &self.running
        else {
            return Vec::new();
        };
        let r = run(
            kubectl,
            &[
                "get",
                "pods",
                "-n",
                namespace,
                "-l",
                &format!("app.kubernetes.io/instance={release}"),
                "--field-selector=status.phase=Running",
                "-o",
                "jsonpath={.items[*].metadata.name}",
            ],
            None,
            kubeconfig,
        );
        r.stdout.split_whitespace().map(str::to_string).collect()
    }

    /// /metrics: of the local process, or of every running Pod one after
    /// the other (the API server's pod proxy; counters are per Pod, and the
    /// tests look for series that some replica has).
    pub fn metrics(&self) -> String {
        match &self.running {
            Running::Local { .. } => http_body(self.admin_port, "/metrics").unwrap_or_default(),
            Running::Pods {
                kubectl,
                kubeconfig,
                namespace,
                ..
            } => self
                .pod_names()
                .iter()
                .map(|pod| {
                    let path =
                        format!("/api/v1/namespaces/{namespace}/pods/{pod}:8080/proxy/metrics");
                    run(kubectl, &["get", "--raw", &path], None, kubeconfig).stdout
                })
                .collect(),
        }
    }

    /// The operator's log so far (every Pod's, prefixed, in Pods mode).
    pub fn log(&self) -> String {
        match &self.running {
            Running::Local { log, .. } => std::fs::read_to_string(log).unwrap_or_default(),
            Running::Pods {
                kubectl,
                kubeconfig,
                namespace,
                release,
            } => {
                let r = run(
                    kubectl,
                    &[
                        "logs",
                        "-n",
                        namespace,
                        "-l",
                        &format!("app.kubernetes.io/instance={release}"),
                        "--prefix",
                        "--tail=200",
                    ],
                    None,
                    kubeconfig,
                );
                r.all()
            }
        }
    }

    /// The operator is gone, as after a crash or an eviction: SIGKILL of
    /// the local process; in Pods mode the Deployment is scaled to 0 and
    /// this returns once no operator Pod is left.
    pub fn kill(&mut self) {
        match &mut self.running {
            Running::Local { child, .. } => {
                if let Some(mut child) = child.take() {
                    let _ = child.kill();
                    let _ = child.wait();
                }
            }
            Running::Pods {
                kubectl,
                kubeconfig,
                namespace,
                release,
            } => {
                let r = run(
                    kubectl,
                    &[
                        "scale",
                        "deployment",
                        &fullname(release),
                        "-n",
                        namespace,
                        "--replicas=0",
                    ],
                    None,
                    kubeconfig,
                );
                assert!(r.ok, "scale the operator to 0: {}", r.stderr);
                let selector = format!("app.kubernetes.io/instance={release}");
                eventually(
                    "the operator Pods to be gone",
                    Duration::from_secs(90),
                    || {
                        let r = run(
                            kubectl,
                            &[
                                "get", "pods", "-n", namespace, "-l", &selector, "-o", "name",
                            ],
                            None,
                            kubeconfig,
                        );
                        (r.ok && r.stdout.trim().is_empty()).then_some(())
                    },
                );
            }
        }
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        if let Running::Local { .. } = self.running {
            self.kill();
        }
        if std::thread::panicking() {
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(60).collect();
            eprintln!("--- operator log, last lines:");
            for line in tail.iter().rev() {
                eprintln!("{line}");
            }
        }
    }
}

/// The chart installed and its operator running: a local process under the
/// chart's ServiceAccount (webhook registered by URL), or the chart's own
/// Pods (`Mode::Pods`).
pub struct Installed {
    pub operator: Operator,
}

/// Install the chart and run the operator the way `mode()` says, then wait
/// until the webhook configuration carries the CA.
pub fn install_and_run(c: &Cluster, release: &str, namespace: &str, extra: &[&str]) -> Installed {
    install_and_run_in(mode(), c, release, namespace, extra)
}

/// `install_and_run` in the given mode. Tests that read the local
/// process's admin port ask for `Mode::Local` (journey's stale-watch test).
pub fn install_and_run_in(
    mode: Mode,
    c: &Cluster,
    release: &str,
    namespace: &str,
    extra: &[&str],
) -> Installed {
    // The CRD outlives every release (helm.sh/resource-policy: keep) and
    // helm will not adopt one another release installed: apply it as a
    // platform team applying crds/ would, and install without it.
    install_generated_crd(c);
    let fullname = fullname(release);
    let operator = match (mode, image()) {
        (Mode::Pods, Some((repository, tag))) => {
            let args = pods_values(c, &repository, &tag);
            let mut args: Vec<&str> = args.iter().map(String::as_str).collect();
            args.extend_from_slice(&["--set", "crds.install=false"]);
            args.extend_from_slice(extra);
            let r = c.helm_install(release, namespace, &args);
            if !r.ok {
                let pods = c.kubectl(&["describe", "pods", "-n", namespace]);
                panic!(
                    "helm install (Pods mode) failed:\n{}\n{}",
                    r.stderr, pods.stdout
                );
            }
            Operator::pods_of(c, release, namespace)
        }
        (Mode::Pods, None) => panic!("Mode::Pods needs RESIDENCY_GUARD_E2E_IMAGE"),
        (Mode::Local, _) => {
            let port = free_port();
            let url = format!("webhook.url=https://127.0.0.1:{port}");
            let mut args = vec![
                "--set",
                &url,
                "--set",
                "replicaCount=0",
                "--set",
                "crds.install=false",
            ];
            args.extend_from_slice(extra);
            let r = c.helm_install(release, namespace, &args);
            assert!(r.ok, "helm install failed:\n{}", r.stderr);
            let kubeconfig = c.service_account_kubeconfig(namespace, &fullname);
            Operator::start_as_chart(c, release, namespace, &kubeconfig, port)
        }
    };
    eventually(
        "the operator to patch the webhook's caBundle",
        Duration::from_secs(30),
        || {
            let vwc = c.get_json(&["validatingwebhookconfiguration", &fullname])?;
            let webhooks = vwc["webhooks"].as_array()?;
            webhooks
                .iter()
                .all(|w| {
                    w["clientConfig"]["caBundle"]
                        .as_str()
                        .is_some_and(|s| !s.is_empty())
                })
                .then_some(())
        },
    );
    Installed { operator }
}

/// The `helm install` arguments that run the chart's own Pods on the
/// worker node from the imported image (never pulled), waiting until they
/// are ready. Taints and labels the worker first (idempotent).
pub fn pods_values(c: &Cluster, repository: &str, tag: &str) -> Vec<String> {
    prepare_worker(c);
    [
        "--set-string",
        &format!("image.repository={repository}"),
        "--set-string",
        &format!("image.tag={tag}"),
        "--set",
        "image.pullPolicy=Never",
        "--set-string",
        &format!("nodeSelector.kubernetes\\.io/hostname={WORKER_NODE}"),
        "--set-string",
        &format!("tolerations[0].key={WORKER_TAINT}"),
        "--set-string",
        "tolerations[0].operator=Exists",
        "--set-string",
        "tolerations[0].effect=NoSchedule",
        "--wait",
        "--timeout=180s",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// Taint and label the worker node (idempotent): the tests' own workloads
/// stay on the fake nodes, the operator runs on a mainland node. A worker
/// started again registers a fresh Node and needs this again.
pub fn prepare_worker(c: &Cluster) {
    c.must(&[
        "taint",
        "node",
        WORKER_NODE,
        &format!("{WORKER_TAINT}=true:NoSchedule"),
        "--overwrite",
    ]);
    c.must(&[
        "label",
        "node",
        WORKER_NODE,
        &format!("topology.kubernetes.io/region={WORKER_REGION}"),
        &format!("topology.kubernetes.io/zone={WORKER_REGION}a"),
        "--overwrite",
    ]);
}

/// `kubectl apply -f crds/...` and wait until it is served.
pub fn install_generated_crd(c: &Cluster) {
    // An earlier test's cleanup deletes the CRD without waiting: applied
    // while it is still terminating, it would be gone once the deletion
    // completes ("not found" from the wait below).
    eventually(
        "an earlier test's CRD to finish terminating",
        Duration::from_secs(120),
        || match c.get_json(&["crd", "residencypolicies.residencyguard.io"]) {
            Some(crd) if !crd["metadata"]["deletionTimestamp"].is_null() => None,
            _ => Some(()),
        },
    );
    let path = root().join("crds/residencypolicies.residencyguard.io.yaml");
    c.must(&["apply", "-f", path.to_str().expect("UTF-8 path")]);
    c.must(&[
        "wait",
        "--for=condition=Established",
        "crd/residencypolicies.residencyguard.io",
        "--timeout=60s",
    ]);
}

/// The chart's fullname for a release name (the chart's _helpers.tpl rule).
pub fn fullname(release: &str) -> String {
    if release.contains("residency-guard") {
        release.to_string()
    } else {
        format!("{release}-residency-guard")
    }
}

/// Retry `kubectl apply` while the API server has not yet picked up a new
/// webhook configuration or CA ("failed calling webhook", x509 errors):
/// registration takes effect asynchronously. A denial is an answer, not a
/// reason to retry.
pub fn apply_when_webhook_answers(c: &Cluster, yaml: &str) -> Run {
    let start = Instant::now();
    loop {
        let r = c.apply(yaml);
        let transient = r.stderr.contains("failed calling webhook");
        if !transient || start.elapsed() > Duration::from_secs(20) {
            return r;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// Apply ResidencyPolicies (`yaml`, the policies named `names`) once the
/// webhook answers, deleting them when the test ends (and any left by an
/// earlier run first).
pub fn apply_policies(c: &Cluster, names: &[&str], yaml: &str) {
    for name in names {
        c.cluster_object("residencypolicy", name);
    }
    let r = apply_when_webhook_answers(c, yaml);
    assert!(r.ok, "policies {names:?}: {}", r.stderr);
}

/// The report APIs, by the folder of their upstream CRDs, with the CRDs'
/// names.
pub const POLICY_REPORT_CRDS: (&str, [&str; 2]) = (
    "wgpolicyk8s",
    [
        "policyreports.wgpolicyk8s.io",
        "clusterpolicyreports.wgpolicyk8s.io",
    ],
);
pub const OPEN_REPORTS_CRDS: (&str, [&str; 2]) = (
    "openreports",
    ["reports.openreports.io", "clusterreports.openreports.io"],
);

/// The upstream report CRDs, unmodified (wgpolicyk8s.io from
/// kubernetes-sigs/wg-policy-prototypes, openreports.io from
/// openreports/reports-api; their README names the commits): the first of
/// $RESIDENCY_GUARD_REPORT_CRDS, ../shared/crds next to the repository
/// and /work/shared/crds, as scripts/with-cluster.sh finds the kit. A
/// report those schemas refuse fails the test.
pub fn report_crds_dir() -> PathBuf {
    let candidates = [
        std::env::var_os("RESIDENCY_GUARD_REPORT_CRDS").map(PathBuf::from),
        Some(root().join("../shared/crds")),
        Some(PathBuf::from("/work/shared/crds")),
    ];
    candidates
        .into_iter()
        .flatten()
        .find(|d| d.join(OPEN_REPORTS_CRDS.0).is_dir() && d.join(POLICY_REPORT_CRDS.0).is_dir())
        .expect(
            "the upstream report CRDs are not found (RESIDENCY_GUARD_REPORT_CRDS, ../shared/crds, \
             /work/shared/crds): the report tests need the real schemas",
        )
}

/// No report CRDs now (their reports go with them), and none left when the
/// test ends.
pub fn remove_report_crds(c: &Cluster) {
    for name in POLICY_REPORT_CRDS.1.iter().chain(&OPEN_REPORTS_CRDS.1) {
        c.cluster_object("crd", name);
    }
}

/// `kubectl apply -f` one API's upstream CRDs (`POLICY_REPORT_CRDS` or
/// `OPEN_REPORTS_CRDS`) and wait until both are served; removed when the
/// test ends.
pub fn install_report_crds(c: &Cluster, api: (&str, [&str; 2])) {
    for name in api.1 {
        c.cluster_object("crd", name);
    }
    let dir = report_crds_dir().join(api.0);
    c.must(&["apply", "-f", dir.to_str().expect("UTF-8 path")]);
    // Polled rather than `kubectl wait`, which fails at once on a CRD whose
    // status has no conditions yet.
    for name in api.1 {
        eventually(
            &format!("the CRD {name} to be established"),
            Duration::from_secs(60),
            || {
                let crd = c.get_json(&["crd", name])?;
                crd["status"]["conditions"]
                    .as_array()?
                    .iter()
                    .any(|k| k["type"] == "Established" && k["status"] == "True")
                    .then_some(())
            },
        );
    }
}
