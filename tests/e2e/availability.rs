//! The operator as the chart ships it (Pods mode: RESIDENCY_GUARD_E2E_IMAGE,
//! two Pods on the kit's worker node, the webhook called through its
//! Service) under a steady stream of real admissions through the API server:
//! how many fail while one operator Pod is deleted and while `helm upgrade`
//! rolls both; how long the audit Lease takes to reach another replica
//! after its leader is deleted; the containers' peak memory against the
//! chart's limit. And `helm uninstall` with the operator dead leaves
//! nothing behind.
//!
//! The figures are printed (eprintln) so that they show in the test output.
//! In Local mode (no image) these tests print that they are skipped: they
//! are about Pods.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, PostParams};
use serde_json::Value;

use crate::harness::{Cluster, Mode, cluster, eventually, fullname, install_and_run, mode};

const POLICY: &str = r#"
apiVersion: residencyguard.io/v1alpha1
kind: ResidencyPolicy
metadata: {name: e2e-availability}
spec:
  dataClasses: [personal]
  namespaceSelector: {matchLabels: {residencyguard.io/e2e-availability: "true"}}
  action: Deny
"#;

/// Admissions per second the load aims at (`kubectl apply --dry-run=server`
/// of a classified Deployment, through the API server and the webhook).
const TARGET_RATE: u64 = 100;
const CLIENTS: u64 = 8;

/// Pods mode, or a printed skip. Under `CI=true` a skip needs
/// RESIDENCY_GUARD_E2E_IMAGE set empty on purpose (scripts/with-cluster.sh
/// does that, saying why, when it cannot start the worker): unset, it is a
/// failure.
fn pods_mode(test: &str) -> bool {
    if mode() == Mode::Pods {
        return true;
    }
    if std::env::var_os("RESIDENCY_GUARD_E2E_IMAGE").is_none()
        && std::env::var("CI").is_ok_and(|v| v == "true")
    {
        panic!(
            "CI=true and RESIDENCY_GUARD_E2E_IMAGE is not set: {test} needs the operator image \
             on the kit's worker node (scripts/with-cluster.sh, as root)"
        );
    }
    println!(
        "skipped {test}: needs Pods mode (RESIDENCY_GUARD_E2E_IMAGE; scripts/with-cluster.sh sets it when the kit has a worker)"
    );
    false
}

/// A classified Deployment pinned to cn-north-1: allowed by the policy, so
/// every answer but "created (dry run)" is a failed admission.
fn classified(ns: &str) -> Deployment {
    let yaml = format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: steady, namespace: {ns}}}\nspec:\n  replicas: 1\n  selector: {{matchLabels: {{app: steady}}}}\n  template:\n    metadata: {{labels: {{app: steady, residencyguard.io/data-class: personal}}}}\n    spec:\n      nodeSelector: {{topology.kubernetes.io/region: cn-north-1}}\n      containers: [{{name: c, image: registry.k8s.io/pause:3.10}}]\n"
    );
    serde_norway::from_str(&yaml).expect("a Deployment")
}

#[derive(Default)]
struct Counts {
    ok: AtomicU64,
    failed: AtomicU64,
    errors: Mutex<BTreeMap<String, u64>>,
}

impl Counts {
    fn snapshot(&self) -> (u64, u64) {
        (
            self.ok.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        )
    }
}

/// Dry-run creates through the API server from `CLIENTS` tasks at about
/// `TARGET_RATE` per second in all, until dropped.
struct Load {
    counts: Arc<Counts>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start(kubeconfig: PathBuf, ns: &str) -> Load {
        let counts = Arc::new(Counts::default());
        let stop = Arc::new(AtomicBool::new(false));
        let deployment = classified(ns);
        let ns = ns.to_string();
        let thread = {
            let counts = counts.clone();
            let stop = stop.clone();
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .expect("a tokio runtime");
                rt.block_on(async move {
                    let kubeconfig =
                        kube::config::Kubeconfig::read_from(&kubeconfig).expect("the kubeconfig");
                    let config = kube::Config::from_custom_kubeconfig(
                        kubeconfig,
                        &kube::config::KubeConfigOptions::default(),
                    )
                    .await
                    .expect("a client config");
                    let client = kube::Client::try_from(config).expect("a client");
                    let api: Api<Deployment> = Api::namespaced(client, &ns);
                    let params = PostParams {
                        dry_run: true,
                        field_manager: None,
                    };
                    let period = Duration::from_micros(1_000_000 * CLIENTS / TARGET_RATE);
                    let mut tasks = Vec::new();
                    for _ in 0..CLIENTS {
                        let (api, params, deployment) =
                            (api.clone(), params.clone(), deployment.clone());
                        let (counts, stop) = (counts.clone(), stop.clone());
                        tasks.push(tokio::spawn(async move {
                            let mut tick = tokio::time::interval(period);
                            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                            while !stop.load(Ordering::Relaxed) {
                                tick.tick().await;
                                match api.create(&params, &deployment).await {
                                    Ok(_) => {
                                        counts.ok.fetch_add(1, Ordering::Relaxed);
                                    }
                                    Err(e) => {
                                        counts.failed.fetch_add(1, Ordering::Relaxed);
                                        let text: String =
                                            e.to_string().chars().take(300).collect();
                                        let mut errors =
                                            counts.errors.lock().unwrap_or_else(|p| p.into_inner());
                                        *errors.entry(text).or_default() += 1;
                                    }
                                }
                            }
                        }));
                    }
                    for t in tasks {
                        let _ = t.await;
                    }
                });
            })
        };
        Load {
            counts,
            stop,
            thread: Some(thread),
        }
    }

    /// Run `scenario` and return (admissions, failed, seconds) during it.
    fn measure(&self, scenario: impl FnOnce()) -> (u64, u64, f64) {
        let (ok0, failed0) = self.counts.snapshot();
        let started = Instant::now();
        scenario();
        let (ok1, failed1) = self.counts.snapshot();
        (
            ok1 - ok0 + failed1 - failed0,
            failed1 - failed0,
            started.elapsed().as_secs_f64(),
        )
    }

    fn errors(&self) -> String {
        let errors = self.counts.errors.lock().unwrap_or_else(|p| p.into_inner());
        errors
            .iter()
            .map(|(e, n)| format!("  {n} x {e}"))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The release's operator Pods: name, uid, containerd container id, ready.
fn operator_pods(c: &Cluster, ns: &str, release: &str) -> Vec<(String, String, String, bool)> {
    let list = c
        .get_json(&[
            "pods",
            "-n",
            ns,
            "-l",
            &format!("app.kubernetes.io/instance={release}"),
        ])
        .unwrap_or(Value::Null);
    list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .map(|p| {
            let status = &p["status"]["containerStatuses"][0];
            (
                p["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                p["metadata"]["uid"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                status["containerID"]
                    .as_str()
                    .unwrap_or_default()
                    .trim_start_matches("containerd://")
                    .to_string(),
                status["ready"] == true,
            )
        })
        .collect()
}

/// Wait until the Deployment has `n` ready Pods and no others.
fn wait_ready(c: &Cluster, ns: &str, release: &str, n: usize) {
    eventually(
        &format!("{n} ready operator Pods"),
        Duration::from_secs(120),
        || {
            let pods = operator_pods(c, ns, release);
            (pods.len() == n && pods.iter().all(|p| p.3)).then_some(())
        },
    );
}

/// The worker's cgroup root (`/kit-N`), from STATE_DIR/worker/net.env next
/// to the kit's admin.kubeconfig.
fn cgroup_root(c: &Cluster) -> Option<String> {
    let env = c.kubeconfig.parent()?.join("worker/net.env");
    let text = std::fs::read_to_string(env).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("KIT_WORKER_CGROUP_ROOT="))
        .map(str::to_string)
}

/// Peak memory (bytes) of each operator container so far: the memory
/// cgroup's max_usage_in_bytes of the container (cgroup v1, as the kit's
/// worker runs it; Burstable QoS from the chart's requests and limits).
fn peak_memory(c: &Cluster, ns: &str, release: &str) -> Vec<(String, u64)> {
    let root = cgroup_root(c).expect("the kit worker's net.env (KIT_WORKER_CGROUP_ROOT)");
    operator_pods(c, ns, release)
        .into_iter()
        .map(|(name, uid, container, _)| {
            let path = format!(
                "/sys/fs/cgroup/memory{root}/kubepods/burstable/pod{uid}/{container}/memory.max_usage_in_bytes"
            );
            let bytes = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("read {path}: {e}"))
                .trim()
                .parse()
                .unwrap_or_else(|e| panic!("{path}: {e}"));
            (name, bytes)
        })
        .collect()
}

fn lease_holder(c: &Cluster, ns: &str) -> Option<String> {
    lease_holder_since(c, ns).map(|(holder, _)| holder)
}

/// The Lease's holder and when it took the Lease (`acquireTime`, written
/// by the API server's host clock's neighbour: the same machine here).
fn lease_holder_since(c: &Cluster, ns: &str) -> Option<(String, Option<jiff::Timestamp>)> {
    let lease = c.get_json(&["lease", "residency-guard-audit", "-n", ns])?;
    let holder = lease["spec"]["holderIdentity"]
        .as_str()
        .filter(|h| !h.is_empty())?;
    let acquired = lease["spec"]["acquireTime"]
        .as_str()
        .and_then(|t| t.parse().ok());
    Some((holder.to_string(), acquired))
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

#[test]
fn admissions_keep_flowing_while_pods_are_deleted_and_rolled() {
    let Some(c) = cluster("availability-rollout") else {
        return;
    };
    if !pods_mode("availability-rollout") {
        return;
    }
    let release = "e2e-avail";
    let ns = "e2e-avail-system";
    let apps = "e2e-avail-apps";
    let _installed = install_and_run(&c, release, ns, &[]);
    crate::harness::apply_policies(&c, &["e2e-availability"], POLICY);
    c.fresh_namespace(apps, &[("residencyguard.io/e2e-availability", "true")]);
    wait_ready(&c, ns, release, 2);
    let limit = c
        .get_json(&["deployment", &fullname(release), "-n", ns])
        .and_then(|d| {
            d["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["memory"]
                .as_str()
                .map(str::to_string)
        })
        .expect("the chart sets a memory limit");
    let limit_bytes: u64 = limit
        .strip_suffix("Mi")
        .and_then(|n| n.parse::<u64>().ok())
        .map(|n| n * 1024 * 1024)
        .expect("a limit in Mi");

    let load = Load::start(c.kubeconfig.clone(), apps);
    // Warm up: the policy is enforced and admissions succeed.
    eventually(
        "the steady load to be admitted",
        Duration::from_secs(30),
        || (load.counts.snapshot().0 > 20).then_some(()),
    );
    let warm_up_failed = load.counts.snapshot().1;
    eprintln!("availability: {warm_up_failed} admissions failed while the load started");
    let mut peaks: BTreeMap<String, u64> = BTreeMap::new();
    let mut record_peaks = |c: &Cluster| {
        for (pod, bytes) in peak_memory(c, ns, release) {
            let peak = peaks.entry(pod).or_default();
            *peak = (*peak).max(bytes);
        }
    };

    let (n, baseline_failed, secs) = load.measure(|| std::thread::sleep(Duration::from_secs(5)));
    eprintln!(
        "availability: steady state: {n} admissions in {secs:.1} s ({:.0}/s), {baseline_failed} failed",
        n as f64 / secs
    );

    // (a) One operator Pod deleted; its replacement starts and gets ready.
    record_peaks(&c);
    let victim = operator_pods(&c, ns, release)[0].0.clone();
    let (n, failed_delete, secs) = load.measure(|| {
        c.must(&["delete", "pod", &victim, "-n", ns, "--wait=false"]);
        std::thread::sleep(Duration::from_secs(2));
        wait_ready(&c, ns, release, 2);
        std::thread::sleep(Duration::from_secs(3));
    });
    eprintln!(
        "availability: pod {victim} deleted: {failed_delete} of {n} admissions failed in {secs:.1} s"
    );

    // (b) `helm upgrade` changes a value: both Pods are replaced, one at a
    // time (maxUnavailable 0, maxSurge 1).
    record_peaks(&c);
    let before: Vec<String> = operator_pods(&c, ns, release)
        .into_iter()
        .map(|p| p.0)
        .collect();
    let chart = crate::harness::root().join("charts/residency-guard");
    let (n, failed_upgrade, secs) = load.measure(|| {
        let r = c.helm(&[
            "upgrade",
            release,
            chart.to_str().expect("UTF-8"),
            "-n",
            ns,
            "--reuse-values",
            "--set",
            "log.level=debug",
            "--wait",
            "--timeout=180s",
        ]);
        assert!(r.ok, "helm upgrade failed:\n{}", r.stderr);
        wait_ready(&c, ns, release, 2);
        std::thread::sleep(Duration::from_secs(3));
    });
    let after: Vec<String> = operator_pods(&c, ns, release)
        .into_iter()
        .map(|p| p.0)
        .collect();
    assert!(
        after.iter().all(|p| !before.contains(p)),
        "helm upgrade did not roll both Pods: {before:?} -> {after:?}"
    );
    eprintln!(
        "availability: helm upgrade rolled both Pods: {failed_upgrade} of {n} admissions failed in {secs:.1} s"
    );

    // The audit Lease: its holder deleted, another replica takes it; twice.
    // Measured from the moment kubectl is asked to delete the leader Pod
    // to the successor's acquireTime in the Lease (this test's own polling
    // is not counted; it is printed as "seen after"). The follower's phase
    // matters: kube-lease-manager alone rereads the Lease only when the
    // term it last saw would expire (15 s after that renewal), so the
    // first deletion comes ~10 s after the rollout (a follower that
    // started then is about to reread anyway) and the second as soon as
    // the replacement Pod is ready (~5 s into its first term).
    let mut handovers = Vec::new();
    let (n, failed_leader, secs) = load.measure(|| {
        for round in 0..2 {
            let holder = eventually("an audit leader", Duration::from_secs(30), || {
                lease_holder(&c, ns)
            });
            record_peaks(&c);
            let deleted = jiff::Timestamp::now();
            let seen = Instant::now();
            c.must(&["delete", "pod", &holder, "-n", ns, "--wait=false"]);
            let (successor, acquired) = eventually(
                "another replica to hold the audit Lease",
                Duration::from_secs(60),
                || lease_holder_since(&c, ns).filter(|(h, _)| *h != holder),
            );
            let acquired = acquired.expect("the successor's acquireTime");
            let took = acquired.duration_since(deleted).as_secs_f64();
            eprintln!(
                "availability: audit Lease handover {round}: {holder} -> {successor} in {took:.2} s (acquireTime; target <= 2 s; seen by the test after {:.2} s)",
                seen.elapsed().as_secs_f64()
            );
            handovers.push(took);
            wait_ready(&c, ns, release, 2);
        }
        std::thread::sleep(Duration::from_secs(3));
    });
    let handover = handovers.iter().copied().fold(0.0, f64::max);
    eprintln!(
        "availability: leader Pods deleted twice: {failed_leader} of {n} admissions failed in {secs:.1} s"
    );
    record_peaks(&c);

    let total = load.counts.snapshot();
    let errors = load.errors();
    drop(load);
    let peak = peaks.values().copied().max().unwrap_or_default();
    eprintln!(
        "availability: peak container memory {:.1} MiB of the {limit} limit ({} containers: {})",
        mib(peak),
        peaks.len(),
        peaks
            .iter()
            .map(|(p, b)| format!("{p} {:.1} MiB", mib(*b)))
            .collect::<Vec<_>>()
            .join(", ")
    );
    eprintln!(
        "availability: in all {} admitted, {} failed{}",
        total.0,
        total.1,
        if errors.is_empty() {
            String::new()
        } else {
            format!(":\n{errors}")
        }
    );

    assert_eq!(
        baseline_failed, 0,
        "failures without any disruption:\n{errors}"
    );
    assert_eq!(
        failed_delete, 0,
        "admissions failed while a Pod was deleted:\n{errors}"
    );
    assert_eq!(
        failed_upgrade, 0,
        "admissions failed during helm upgrade:\n{errors}"
    );
    assert_eq!(
        failed_leader, 0,
        "admissions failed while the leader was deleted:\n{errors}"
    );
    assert!(
        handover <= 2.0,
        "the audit Lease took {handover:.2} s to reach another replica (target 2 s)"
    );
    assert!(
        peak > 0 && peak < limit_bytes,
        "peak memory {peak} bytes against the limit {limit}"
    );

    // Uninstalled while both replicas run (one leads): no replica, dying,
    // brings the Lease back after Helm deleted it.
    let started = Instant::now();
    let r = c.helm(&["uninstall", release, "-n", ns, "--wait", "--timeout=120s"]);
    assert!(r.ok, "helm uninstall failed:\n{}", r.stderr);
    eventually(
        "the operator Pods to be gone",
        Duration::from_secs(60),
        || operator_pods(&c, ns, release).is_empty().then_some(()),
    );
    std::thread::sleep(Duration::from_secs(2));
    let leases = c.must(&["get", "leases", "-n", ns, "-o", "name"]);
    assert!(leases.trim().is_empty(), "left behind: {leases}");
    eprintln!(
        "availability: helm uninstall with the operator running, its Pods gone, no Lease left, in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

/// `helm uninstall` while no operator runs (the Deployment scaled to 0,
/// as after a crash loop): the webhook configuration, the certificate
/// Secret and the audit Lease go, and the namespace can be deleted.
#[test]
fn uninstall_with_the_operator_dead_leaves_nothing_behind() {
    let Some(c) = cluster("availability-uninstall-dead") else {
        return;
    };
    if !pods_mode("availability-uninstall-dead") {
        return;
    }
    let release = "e2e-dead";
    let ns = "e2e-dead-system";
    let name = fullname(release);
    let mut installed = install_and_run(&c, release, ns, &[]);
    // What the operator made is there: the Secret, a held Lease.
    let secret = format!("{name}-tls");
    assert!(c.get_json(&["secret", &secret, "-n", ns]).is_some());
    eventually("an audit leader", Duration::from_secs(30), || {
        lease_holder(&c, ns)
    });

    installed.operator.kill();
    let started = Instant::now();
    let r = c.helm(&["uninstall", release, "-n", ns, "--wait", "--timeout=120s"]);
    assert!(r.ok, "helm uninstall failed:\n{}", r.stderr);
    eprintln!(
        "availability: helm uninstall with the operator dead in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert!(
        c.get_json(&["validatingwebhookconfiguration", &name])
            .is_none(),
        "the webhook configuration is left"
    );
    let leases = c.must(&["get", "leases", "-n", ns, "-o", "name"]);
    assert!(leases.trim().is_empty(), "left behind: {leases}");
    // The Secret is the webhook configuration's: the garbage collector.
    eventually(
        "the garbage collector to delete the certificate Secret",
        Duration::from_secs(60),
        || {
            c.get_json(&["secret", &secret, "-n", ns])
                .is_none()
                .then_some(())
        },
    );
    let started = Instant::now();
    let r = c.kubectl(&["delete", "namespace", ns, "--wait=true", "--timeout=90s"]);
    assert!(r.ok, "the namespace is stuck:\n{}", r.stderr);
    assert!(c.get_json(&["namespace", ns]).is_none());
    eprintln!(
        "availability: namespace deleted in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}
