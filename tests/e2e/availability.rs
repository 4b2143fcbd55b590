//! The operator as the chart ships it (Pods mode: RESIDENCY_GUARD_E2E_IMAGE,
//! two Pods on the kit's worker node, the webhook called through its
//! Service) under a steady stream of real admissions through the API server:
//! how many fail while one operator Pod is deleted, while `helm upgrade`
//! rolls both, and when the leader's process is SIGKILLed through the
//! node's containerd; how long the audit Lease takes to reach another
//! replica after its leader is deleted (SIGTERM) or killed (SIGKILL, with
//! and without its Pod); the containers' peak memory against the chart's
//! limit. A whole-cluster restart comes back with no manual step; `helm
//! uninstall` with the operator dead leaves nothing behind, also after an
//! upgrade from the chart before it managed the audit Lease.
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
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, PostParams};
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
    worker_env(c, "KIT_WORKER_CGROUP_ROOT")
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

/// Delete a Pod through the API (no kubectl process to start, whose
/// start-up on a loaded machine would count as handover time); returns
/// the instant just before the request.
fn delete_pod(c: &Cluster, ns: &str, pod: &str) -> jiff::Timestamp {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    rt.block_on(async {
        let kubeconfig =
            kube::config::Kubeconfig::read_from(&c.kubeconfig).expect("the kubeconfig");
        let config = kube::Config::from_custom_kubeconfig(
            kubeconfig,
            &kube::config::KubeConfigOptions::default(),
        )
        .await
        .expect("a client config");
        let client = kube::Client::try_from(config).expect("a client");
        let pods: Api<Pod> = Api::namespaced(client, ns);
        // Connect first: the clock starts at the request, not the handshake.
        pods.get(pod)
            .await
            .unwrap_or_else(|e| panic!("pod {pod}: {e}"));
        let at = jiff::Timestamp::now();
        pods.delete(pod, &DeleteParams::default())
            .await
            .unwrap_or_else(|e| panic!("delete pod {pod}: {e}"));
        at
    })
}

/// The Pod's container id in containerd and its restart count.
fn container_of(c: &Cluster, ns: &str, pod: &str) -> (String, u64) {
    let pod = c
        .get_json(&["pod", pod, "-n", ns])
        .unwrap_or_else(|| panic!("pod {pod} in {ns}"));
    let status = &pod["status"]["containerStatuses"][0];
    let id = status["containerID"]
        .as_str()
        .and_then(|id| id.strip_prefix("containerd://"))
        .expect("a containerd container id")
        .to_string();
    (id, status["restartCount"].as_u64().unwrap_or_default())
}

/// A value of the kit worker's STATE_DIR/worker/net.env.
fn worker_env(c: &Cluster, key: &str) -> Option<String> {
    let env = c.kubeconfig.parent()?.join("worker/net.env");
    let text = std::fs::read_to_string(env).ok()?;
    let prefix = format!("{key}=");
    text.lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .map(|v| v.trim_matches('"').to_string())
}

/// SIGKILL a container's process through the worker's containerd (as the
/// OOM killer or a crashed runtime would: no SIGTERM first). containerd
/// runs in the worker's own mount and network namespaces (the kit's
/// README, "STATE_DIR/worker").
fn kill_container(c: &Cluster, container: &str) {
    let state = c.kubeconfig.parent().expect("the kit's STATE_DIR");
    let socket = worker_env(c, "KIT_WORKER_CONTAINERD_SOCK")
        .expect("KIT_WORKER_CONTAINERD_SOCK in the worker's net.env");
    let ns = state.join("worker/ns");
    let out = std::process::Command::new("nsenter")
        .arg(format!("--mount={}", ns.join("mnt").display()))
        .arg(format!("--net={}", ns.join("net").display()))
        .args(["--", "ctr", "--address", &socket, "-n", "k8s.io"])
        .args(["task", "kill", "--signal", "SIGKILL", container])
        .output()
        .expect("run nsenter ctr");
    assert!(
        out.status.success(),
        "ctr task kill {container}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
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
    // Measured from the API request that deletes the leader Pod to the
    // successor's acquireTime in the Lease (this test's own polling is not
    // counted; it is printed as "seen after"). The follower's phase
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
            let seen = Instant::now();
            let deleted = delete_pod(&c, ns, &holder);
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

    // (c) SIGKILL of the leader's process through the node's containerd:
    // no shutdown, no release of the Lease, no `Connection: close`. The
    // API server does not retry a failed webhook call (docs/performance.md,
    // "SIGKILL, restart and upgrade"), so the calls that reach the dead
    // replica before its endpoint is withdrawn fail; they are counted, not
    // required to be 0.
    // The Lease must reach a live process within its duration.
    let (holder, _) = eventually("an audit leader", Duration::from_secs(30), || {
        lease_holder_since(&c, ns)
    });
    let duration = c
        .get_json(&["lease", "residency-guard-audit", "-n", ns])
        .and_then(|l| l["spec"]["leaseDurationSeconds"].as_f64())
        .expect("the audit Lease's leaseDurationSeconds");
    let (container, restarts_before) = container_of(&c, ns, &holder);
    let mut sigkill_handover = f64::MAX;
    let mut successor = String::new();
    let (n, failed_sigkill, secs) = load.measure(|| {
        let killed = jiff::Timestamp::now();
        kill_container(&c, &container);
        let (next, acquired) = eventually(
            "a new term of the audit Lease after SIGKILL",
            Duration::from_secs(60),
            || {
                lease_holder_since(&c, ns).filter(|(_, acquired)| {
                    acquired.is_some_and(|a| a.duration_since(killed).as_secs_f64() > 0.0)
                })
            },
        );
        let acquired = acquired.expect("the new term's acquireTime");
        sigkill_handover = acquired.duration_since(killed).as_secs_f64();
        successor = next;
        eventually(
            "the killed container to be restarted",
            Duration::from_secs(60),
            || (container_of(&c, ns, &holder).1 > restarts_before).then_some(()),
        );
        wait_ready(&c, ns, release, 2);
    });
    eprintln!(
        "availability: SIGKILL of the leader {holder}'s process: {failed_sigkill} of {n} admissions failed in {secs:.1} s; audit Lease new term held by {successor} after {sigkill_handover:.2} s (acquireTime; leaseDurationSeconds {duration})"
    );
    // Once the replica is back, nothing fails any more.
    let (n, after_sigkill_failed, secs) =
        load.measure(|| std::thread::sleep(Duration::from_secs(3)));
    eprintln!(
        "availability: after the SIGKILL, both Pods ready: {after_sigkill_failed} of {n} admissions failed in {secs:.1} s"
    );
    record_peaks(&c);

    // (d) SIGKILL, and the Pod gone with its process (force-deleted, as
    // when its node is lost): no restarted container gives the claim up,
    // so the other replica takes the Lease once it expires, within
    // leaseDurationSeconds of the last renewal.
    let (holder, _) = eventually("an audit leader", Duration::from_secs(30), || {
        lease_holder_since(&c, ns)
    });
    let (container, _) = container_of(&c, ns, &holder);
    let mut expiry_handover = f64::MAX;
    let mut expiry_successor = String::new();
    let mut since_renewal = 0.0;
    let (n, failed_lost, secs) = load.measure(|| {
        let renewed = c
            .get_json(&["lease", "residency-guard-audit", "-n", ns])
            .and_then(|l| {
                l["spec"]["renewTime"]
                    .as_str()?
                    .parse::<jiff::Timestamp>()
                    .ok()
            });
        let killed = jiff::Timestamp::now();
        kill_container(&c, &container);
        since_renewal = renewed.map_or(f64::NAN, |r| killed.duration_since(r).as_secs_f64());
        c.must(&[
            "delete",
            "pod",
            &holder,
            "-n",
            ns,
            "--grace-period=0",
            "--force",
            "--wait=false",
        ]);
        let (next, acquired) = eventually(
            "another replica to take the expired audit Lease",
            Duration::from_secs(60),
            || lease_holder_since(&c, ns).filter(|(h, _)| *h != holder),
        );
        expiry_handover = acquired
            .expect("the new term's acquireTime")
            .duration_since(killed)
            .as_secs_f64();
        expiry_successor = next;
        wait_ready(&c, ns, release, 2);
    });
    eprintln!(
        "availability: SIGKILL of the leader {holder} with its Pod force-deleted: {failed_lost} of {n} admissions failed in {secs:.1} s; audit Lease taken by {expiry_successor} after {expiry_handover:.2} s (acquireTime; the last renewal {since_renewal:.2} s before the kill, so the term expired {:.2} s after it; leaseDurationSeconds {duration})",
        duration - since_renewal
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
        sigkill_handover <= duration,
        "after SIGKILL the audit Lease took {sigkill_handover:.2} s to get a new holder (leaseDurationSeconds {duration})"
    );
    // The term ends leaseDurationSeconds after the last renewal, which
    // came 0-5 s before the kill (renewals every 5 s); a second is left for
    // the follower to see the expiry and take the Lease.
    assert!(
        expiry_handover <= duration + 1.0,
        "after SIGKILL with the Pod gone the audit Lease took {expiry_handover:.2} s to reach another replica (leaseDurationSeconds {duration}, last renewal {since_renewal:.2} s before the kill)"
    );
    assert_eq!(
        after_sigkill_failed, 0,
        "admissions still failed once the killed replica was ready again:\n{errors}"
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

/// What the API server answered to one dry-run create.
#[derive(Debug, PartialEq)]
enum Answer {
    /// Created (dry run): no webhook refused it.
    Admitted,
    /// Our webhook answered and denied it: judged.
    Judged,
    /// The webhook could not be called and `failurePolicy: Fail` refused
    /// the request ("failed calling webhook": no endpoints, refused).
    Refused,
    /// Anything else (the API server itself not answering).
    Other(String),
}

fn dry_run_create(c: &Cluster, yaml: &str) -> Answer {
    let r = c.kubectl_in(&["create", "--dry-run=server", "-f", "-"], yaml);
    if r.ok {
        Answer::Admitted
    } else if r.stderr.contains("denied the request") {
        Answer::Judged
    } else if r.stderr.contains("failed calling webhook") {
        Answer::Refused
    } else {
        Answer::Other(r.stderr.trim().to_string())
    }
}

/// A personal-data Deployment that names no region: every policy judging
/// it denies it.
fn unpinned(ns: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: unpinned, namespace: {ns}}}\nspec:\n  selector: {{matchLabels: {{app: unpinned}}}}\n  template:\n    metadata: {{labels: {{app: unpinned, residencyguard.io/data-class: personal}}}}\n    spec:\n      containers: [{{name: c, image: registry.k8s.io/pause:3.10}}]\n"
    )
}

/// A process of the kit's control plane (a line of STATE_DIR/pids) and
/// the command line it was started with.
struct ControlPlaneProcess {
    name: String,
    argv: Vec<String>,
}

/// Stop the control plane the kit started (etcd, kube-apiserver,
/// kube-controller-manager, kube-scheduler) in reverse start order, as
/// the kit's `down` does, keeping their command lines. etcd's data dir
/// is kept: `up` would wipe it, so the restart is done here.
fn stop_control_plane(state: &std::path::Path) -> Vec<ControlPlaneProcess> {
    let pids = std::fs::read_to_string(state.join("pids")).expect("the kit's STATE_DIR/pids");
    let mut running = Vec::new();
    for line in pids.lines() {
        let mut fields = line.split_whitespace();
        let (Some(pid), Some(name)) = (fields.next(), fields.next()) else {
            continue;
        };
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline"))
            .unwrap_or_else(|e| panic!("{name} (pid {pid}) is not running: {e}"));
        let argv = cmdline
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        running.push((
            pid.to_string(),
            ControlPlaneProcess {
                name: name.to_string(),
                argv,
            },
        ));
    }
    for (pid, process) in running.iter().rev() {
        let status = std::process::Command::new("kill")
            .args(["-TERM", pid])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM {} ({pid})", process.name);
        eventually(
            &format!("{} (pid {pid}) to exit", process.name),
            Duration::from_secs(60),
            || (!std::path::Path::new(&format!("/proc/{pid}")).exists()).then_some(()),
        );
    }
    running.into_iter().map(|(_, p)| p).collect()
}

/// Start the stopped control plane again with the same command lines, in
/// its own session (the processes outlive the test, as the kit's), logs
/// appended to STATE_DIR/logs; STATE_DIR/pids names the new processes so
/// that the kit's `down` stops them. Waits for etcd's client port and the
/// API server's /readyz before starting the next.
fn start_control_plane(c: &Cluster, state: &std::path::Path, processes: &[ControlPlaneProcess]) {
    let mut pids = String::new();
    for process in processes {
        let log = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(state.join(format!("logs/{}.log", process.name)))
            .expect("the component's log");
        let err = log.try_clone().expect("clone the log");
        // As the kit's `up` starts them: a new session (`setsid --fork`,
        // so the component is nobody's child here), its PID written by
        // the shell that then becomes it.
        let pidfile = state.join(format!(".{}.restart.pid", process.name));
        let _ = std::fs::remove_file(&pidfile);
        let status = std::process::Command::new("setsid")
            .args(["--fork", "bash", "-c", r#"echo $$ > "$0"; exec "$@""#])
            .arg(&pidfile)
            .args(&process.argv)
            .stdin(std::process::Stdio::null())
            .stdout(log)
            .stderr(err)
            .status()
            .unwrap_or_else(|e| panic!("start {}: {e}", process.name));
        assert!(status.success(), "setsid {}: {status}", process.name);
        let pid = eventually(
            &format!("{}'s PID", process.name),
            Duration::from_secs(10),
            || {
                std::fs::read_to_string(&pidfile)
                    .ok()
                    .filter(|p| !p.trim().is_empty())
            },
        );
        let _ = std::fs::remove_file(&pidfile);
        pids.push_str(&format!(
            "{} {} {}\n",
            pid.trim(),
            process.name,
            process.argv[0]
        ));
        std::fs::write(state.join("pids"), &pids).expect("write STATE_DIR/pids");
        match process.name.as_str() {
            "etcd" => {
                let url = process
                    .argv
                    .iter()
                    .find_map(|a| a.strip_prefix("--listen-client-urls="))
                    .or_else(|| {
                        let at = process
                            .argv
                            .iter()
                            .position(|a| a == "--listen-client-urls")?;
                        process.argv.get(at + 1).map(String::as_str)
                    })
                    .expect("etcd's --listen-client-urls");
                let address = url.trim_start_matches("http://").to_string();
                eventually("etcd to listen", Duration::from_secs(60), || {
                    std::net::TcpStream::connect(&address).ok().map(|_| ())
                });
            }
            "kube-apiserver" => {
                eventually("the API server's /readyz", Duration::from_secs(120), || {
                    c.kubectl(&["get", "--raw", "/readyz"]).ok.then_some(())
                });
            }
            _ => {}
        }
    }
}

/// Run one of the kit's scripts (`worker`, `image-import`); panic with its
/// output when it fails.
fn kit(script: &str, args: &[&str]) {
    let kit = std::env::var("RESIDENCY_GUARD_E2E_KIT").expect("RESIDENCY_GUARD_E2E_KIT");
    let out = std::process::Command::new(PathBuf::from(kit).join(script))
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run the kit's {script}: {e}"));
    assert!(
        out.status.success(),
        "kit {script} {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The Service's ready endpoints in its EndpointSlices: what the API
/// server picks a webhook's Pod from (v1.36 resolves Services through an
/// EndpointSlice indexer, `k8s.io/apiserver/pkg/util/proxy`).
fn ready_endpoints(c: &Cluster, ns: &str, service: &str) -> usize {
    let slices = c
        .get_json(&[
            "endpointslices",
            "-n",
            ns,
            "-l",
            &format!("kubernetes.io/service-name={service}"),
        ])
        .unwrap_or(Value::Null);
    slices["items"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|s| s["endpoints"].as_array().into_iter().flatten())
        .filter(|e| e["conditions"]["ready"] != false)
        .count()
}

/// Whole-cluster restart (the deadlock class of kyverno#16177 and
/// gatekeeper#3829: a webhook with `failurePolicy: Fail` that intercepts
/// its own Pods, or kube-system, can never come back). The worker node is
/// stopped (every Pod on it killed, the Node deleted, the dead Pods'
/// objects deleted as the pod garbage collector would), the control plane
/// (etcd with its data, API server, controller-manager, scheduler) is
/// stopped and started again, then the worker. With no manual step: the
/// operator's Pods start (their namespace is never intercepted, even
/// labelled as classified), kube-system is admitted throughout, classified
/// writes are refused until a replica is ready, then judged.
#[test]
fn the_cluster_comes_back_from_a_whole_restart_with_no_manual_step() {
    let Some(c) = cluster("availability-restart") else {
        return;
    };
    if !pods_mode("availability-restart") {
        return;
    }
    let (Ok(_), Ok(image_tar)) = (
        std::env::var("RESIDENCY_GUARD_E2E_KIT"),
        std::env::var("RESIDENCY_GUARD_E2E_IMAGE_TAR"),
    ) else {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!(
                "CI=true: the restart test needs RESIDENCY_GUARD_E2E_KIT and RESIDENCY_GUARD_E2E_IMAGE_TAR (scripts/with-cluster.sh)"
            );
        }
        println!(
            "skipped availability-restart: needs the kit's scripts and the image tarball (RESIDENCY_GUARD_E2E_KIT, RESIDENCY_GUARD_E2E_IMAGE_TAR; scripts/with-cluster.sh sets them)"
        );
        return;
    };
    let state = c
        .kubeconfig
        .parent()
        .expect("the kit's STATE_DIR")
        .to_path_buf();
    let state_arg = state.to_str().expect("a UTF-8 path").to_string();
    let release = "e2e-restart";
    let ns = "e2e-restart-system";
    let apps = "e2e-restart-apps";
    let _installed = install_and_run(&c, release, ns, &[]);
    crate::harness::apply_policies(&c, &["e2e-availability"], POLICY);
    c.fresh_namespace(apps, &[("residencyguard.io/e2e-availability", "true")]);
    // The worst case for a deadlock: the operator's own namespace looks
    // classified. The chart excludes the release namespace from every
    // entry, so its Pods are still never sent to the webhook.
    c.must(&[
        "label",
        "namespace",
        ns,
        "residencyguard.io/data-class=personal",
        "residencyguard.io/e2e-availability=true",
        "--overwrite",
    ]);
    wait_ready(&c, ns, release, 2);
    let workload = unpinned(apps);
    let in_kube_system = unpinned("kube-system");
    // Both replicas may take a moment to see the new policy.
    eventually("the policy to be enforced", Duration::from_secs(30), || {
        (dry_run_create(&c, &workload) == Answer::Judged).then_some(())
    });

    // The worker stops: every operator Pod dies with it. Their objects are
    // deleted too ("every Pod gone"): the pod garbage collector does that
    // on its own 40 s after their Node is gone (51-57 s here, the
    // EndpointSlices keeping the dead Pods' addresses until then); the test
    // does not wait for it.
    let started = Instant::now();
    kit("worker", &["--stop", &state_arg]);
    c.must(&[
        "delete",
        "pods",
        "--all",
        "-n",
        ns,
        "--grace-period=0",
        "--force",
    ]);
    let service = fullname(release);
    eventually(
        "the webhook Service to have no ready endpoint",
        Duration::from_secs(120),
        || (ready_endpoints(&c, ns, &service) == 0).then_some(()),
    );
    eprintln!(
        "availability: worker stopped and its Pods deleted, no ready endpoint after {:.1} s",
        started.elapsed().as_secs_f64()
    );
    // The API server's own EndpointSlice informer follows within moments.
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        dry_run_create(&c, &workload),
        Answer::Refused,
        "with no replica a classified write must be refused (failurePolicy Fail)"
    );
    assert_eq!(
        dry_run_create(&c, &in_kube_system),
        Answer::Admitted,
        "kube-system must never wait for the operator"
    );

    // The control plane restarts on the same etcd data.
    let processes = stop_control_plane(&state);
    let restarted = Instant::now();
    start_control_plane(&c, &state, &processes);
    let api_ready = restarted.elapsed().as_secs_f64();
    assert_eq!(dry_run_create(&c, &workload), Answer::Refused);
    assert_eq!(dry_run_create(&c, &in_kube_system), Answer::Admitted);

    // The worker comes back (a new node of the same name; the kit's node
    // keeps no images, so the operator image is imported again).
    kit("worker", &[&state_arg]);
    let worker_ready = restarted.elapsed().as_secs_f64();
    kit("image-import", &[&state_arg, &image_tar]);
    let imported = restarted.elapsed().as_secs_f64();
    // What with-cluster.sh set on the first node (the harness's Pods mode
    // needs it for the tests that follow).
    crate::harness::prepare_worker(&c);

    let mut refused = 0;
    let judged = loop {
        match dry_run_create(&c, &workload) {
            Answer::Judged => break restarted.elapsed().as_secs_f64(),
            Answer::Refused => refused += 1,
            Answer::Admitted => panic!(
                "an unpinned personal-data Deployment was admitted while the operator was starting"
            ),
            Answer::Other(e) => panic!("the API server did not answer as expected: {e}"),
        }
        assert!(
            restarted.elapsed() < Duration::from_secs(240),
            "the operator did not judge within 240 s of the restart"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(dry_run_create(&c, &in_kube_system), Answer::Admitted);
    wait_ready(&c, ns, release, 2);
    eprintln!(
        "availability: whole-cluster restart: API server ready {api_ready:.1} s after the control plane started, worker {worker_ready:.1} s, image imported {imported:.1} s, first judged admission {judged:.1} s ({refused} classified writes refused before it); both replicas ready {:.1} s",
        restarted.elapsed().as_secs_f64()
    );
}

/// The last commit whose chart had no `templates/lease.yaml`: its operator
/// made the audit Lease itself, without Helm's ownership metadata
/// (`git log -- charts/residency-guard/templates/lease.yaml`).
const CHART_BEFORE_LEASE: &str = "758da74cc6a8d1f06c0029a7e59b2fbea0db1aee";

/// `helm upgrade` from that chart to this one. Helm refuses to adopt an
/// object without its ownership metadata ("exists and cannot be imported
/// into the current release"), so the chart leaves such a Lease out; the
/// new leader then gives it an ownerReference to the release's Service,
/// and `helm uninstall`, with the operator dead, still leaves no Lease.
#[test]
fn upgrading_from_a_chart_whose_operator_made_the_lease_leaves_nothing_behind() {
    let Some(c) = cluster("availability-upgrade-lease") else {
        return;
    };
    if !pods_mode("availability-upgrade-lease") {
        return;
    }
    let (repository, tag) = crate::harness::image().expect("Pods mode has an image");
    let release = "e2e-old";
    let ns = "e2e-old-system";
    let old = c.scratch.join("chart-before-lease");
    std::fs::create_dir_all(&old).expect("create the old chart's directory");
    // The chart as that commit had it, kept as a fixture (made with `git
    // archive --format=tar.gz 758da74 charts/residency-guard`) so the test
    // needs no repository history: CI may run on a shallow clone.
    let archive = crate::harness::root().join("tests/e2e/fixtures/chart-758da74.tar.gz");
    let out = std::process::Command::new("tar")
        .arg("-xzf")
        .arg(&archive)
        .arg("-C")
        .arg(&old)
        .output()
        .expect("run tar");
    assert!(
        out.status.success(),
        "tar: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let old_chart = old.join("charts/residency-guard");
    assert!(
        !old_chart.join("templates/lease.yaml").exists(),
        "{CHART_BEFORE_LEASE} already has templates/lease.yaml"
    );

    crate::harness::install_generated_crd(&c);
    let mut values = crate::harness::pods_values(&c, &repository, &tag);
    values.extend(["--set".to_string(), "crds.install=false".to_string()]);
    let values: Vec<&str> = values.iter().map(String::as_str).collect();
    let r = c.helm_install_chart(&old_chart, release, ns, &values);
    assert!(r.ok, "helm install of the old chart failed:\n{}", r.stderr);
    let lease = eventually(
        "the old operator's audit Lease",
        Duration::from_secs(60),
        || {
            c.get_json(&["lease", "residency-guard-audit", "-n", ns])
                .filter(|l| {
                    l["spec"]["holderIdentity"]
                        .as_str()
                        .is_some_and(|h| !h.is_empty())
                })
        },
    );
    assert!(
        lease["metadata"]["annotations"]["meta.helm.sh/release-name"].is_null(),
        "the old chart's Lease is the operator's, not Helm's: {lease}"
    );
    // The image is this commit's operator, which ties the Lease to the
    // Service at once; the operators that shipped with the old chart did
    // not. Their Lease is restored: the reference removed once this term's
    // leader has written it (it is written once per term, so only the
    // upgrade's new Pods can bring it back).
    let service_uid = |c: &Cluster| {
        c.get_json(&["service", &fullname(release), "-n", ns])
            .and_then(|s| s["metadata"]["uid"].as_str().map(str::to_string))
            .expect("the release's Service")
    };
    let tied = |c: &Cluster, uid: &str| {
        c.get_json(&["lease", "residency-guard-audit", "-n", ns])
            .and_then(|l| {
                l["metadata"]["ownerReferences"].as_array().map(|owners| {
                    owners
                        .iter()
                        .any(|o| o["kind"] == "Service" && o["uid"] == uid)
                })
            })
            .unwrap_or(false)
    };
    let uid = service_uid(&c);
    eventually(
        "the leader to tie the Lease to the Service",
        Duration::from_secs(30),
        || tied(&c, &uid).then_some(()),
    );
    c.must(&[
        "patch",
        "lease",
        "residency-guard-audit",
        "-n",
        ns,
        "--type=json",
        "-p",
        r#"[{"op": "remove", "path": "/metadata/ownerReferences"}]"#,
    ]);
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        !tied(&c, &uid),
        "the ownerReference came back without a new term"
    );

    let chart = crate::harness::root().join("charts/residency-guard");
    let started = Instant::now();
    let mut upgrade = vec!["upgrade", release, chart.to_str().expect("UTF-8"), "-n", ns];
    upgrade.extend_from_slice(&values);
    let r = c.helm(&upgrade);
    assert!(
        r.ok,
        "helm upgrade from {CHART_BEFORE_LEASE}'s chart failed:\n{}",
        r.stderr
    );
    wait_ready(&c, ns, release, 2);
    let uid = service_uid(&c);
    eventually(
        "the new leader to give the Lease an ownerReference to the Service",
        Duration::from_secs(60),
        || tied(&c, &uid).then_some(()),
    );
    eprintln!(
        "availability: helm upgrade from the chart before templates/lease.yaml: upgraded, Lease tied to the Service in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    eventually(
        "an audit leader after the upgrade",
        Duration::from_secs(30),
        || lease_holder(&c, ns),
    );

    // Uninstalled with the operator dead (no Pod left, not even a
    // terminating one): the Lease goes with the Service.
    let r = c.kubectl(&[
        "scale",
        "deployment",
        &fullname(release),
        "-n",
        ns,
        "--replicas=0",
    ]);
    assert!(r.ok, "scale to 0: {}", r.stderr);
    let selector = format!("app.kubernetes.io/instance={release}");
    eventually(
        "the operator Pods to be gone",
        Duration::from_secs(90),
        || {
            c.must(&["get", "pods", "-n", ns, "-l", &selector, "-o", "name"])
                .trim()
                .is_empty()
                .then_some(())
        },
    );
    let started = Instant::now();
    let r = c.helm(&["uninstall", release, "-n", ns, "--wait", "--timeout=120s"]);
    assert!(r.ok, "helm uninstall failed:\n{}", r.stderr);
    eventually(
        "the garbage collector to delete the Lease",
        Duration::from_secs(60),
        || {
            c.get_json(&["lease", "residency-guard-audit", "-n", ns])
                .is_none()
                .then_some(())
        },
    );
    eprintln!(
        "availability: helm uninstall with the operator dead: the upgraded release's Lease gone in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}
