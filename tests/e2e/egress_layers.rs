//! Egress across policy layers on a real control plane (issue 27), with
//! the layers' CRDs applied from tests/e2e/fixtures/egress-layer-crds.yaml
//! before the operator starts (it discovers what is served at start, and
//! again every probe period):
//!
//! - Cilium: a classified Deployment restricted only by a
//!   CiliumNetworkPolicy to a mainland CIDR is admitted (applied by an
//!   ordinary `edit` user) and is mainland-only in the live report
//!   (`--egress-cni cilium`), which names the policy that allowed it; a
//!   CiliumClusterwideNetworkPolicy opening it to 0.0.0.0/0 is denied.
//! - Kubernetes: an AdminNetworkPolicy Allow of 8.8.8.0/24 at a higher
//!   priority than the namespace's NetworkPolicy is reported by the audit
//!   as egress abroad (the policy warns, so it is admitted); before that,
//!   the `edit` user relabelling her Namespace into an AdminNetworkPolicy
//!   that allows 9.9.9.0/24 is refused under a Deny policy.
//! - Calico: a GlobalNetworkPolicy Deny ordered before the NetworkPolicy
//!   closes what the NetworkPolicy opens, and the Deployment is admitted.
//! - Calico network sets: a namespace's `edit` user (allowed NetworkSets
//!   by an aggregated role, as a platform may allow) writes the sets a
//!   Calico NetworkPolicy's destination selector selects: one in the
//!   mainland is admitted with the Deployment; adding an address abroad to
//!   it, or relabelling another set abroad into the selector, is denied;
//!   deleting a GlobalNetworkSet that a GlobalNetworkPolicy Deny selects
//!   (so that a later Allow reaches it) is denied too; under a Warn policy
//!   the set's change is admitted with a warning and the audit reports the
//!   Deployment's egress abroad.
//! - Late CRDs: Cilium's CRDs installed after the operator started (with
//!   `egress.cni: auto`) are picked up within the probe period, without a
//!   restart: a CiliumClusterwideNetworkPolicy opening 0.0.0.0/0 is then
//!   reported by the audit.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::{
    Cluster, Run, apply_policies, apply_when_webhook_answers, cluster, eventually, install_and_run,
    root,
};

const USER: &str = "e2e-layers-dev";

const CRDS: &[&str] = &[
    "ciliumnetworkpolicies.cilium.io",
    "ciliumclusterwidenetworkpolicies.cilium.io",
    "networkpolicies.crd.projectcalico.org",
    "globalnetworkpolicies.crd.projectcalico.org",
    "tiers.crd.projectcalico.org",
    "networksets.crd.projectcalico.org",
    "globalnetworksets.crd.projectcalico.org",
    "adminnetworkpolicies.policy.networking.k8s.io",
    "baselineadminnetworkpolicies.policy.networking.k8s.io",
];

/// How often the operator looks for layer kinds installed after it
/// started (`residency_guard::probe::MISSING_API_PROBE_EVERY`).
const PROBE_PERIOD: Duration = Duration::from_secs(15);

/// The fixture's CRDs of API group `group` (documents of the file).
fn fixture_crds_of(group: &str) -> String {
    let file = root().join("tests/e2e/fixtures/egress-layer-crds.yaml");
    let text = std::fs::read_to_string(file).expect("the layer CRDs fixture");
    text.split("\n---\n")
        .filter(|doc| doc.contains(&format!("\n  group: {group}\n")))
        .collect::<Vec<_>>()
        .join("\n---\n")
}

/// Apply the layers' CRDs (deleted when the test ends) and wait until
/// they are served.
fn install_layer_crds(c: &Cluster) {
    for crd in CRDS {
        c.cluster_object("crd", crd);
    }
    let file = root().join("tests/e2e/fixtures/egress-layer-crds.yaml");
    c.must(&["apply", "-f", file.to_str().unwrap_or_default()]);
    for crd in CRDS {
        c.must(&[
            "wait",
            "--for=condition=Established",
            "--timeout=30s",
            &format!("crd/{crd}"),
        ]);
    }
}

fn policy(name: &str, action: &str) -> String {
    format!(
        "apiVersion: residencyguard.io/v1alpha1\nkind: ResidencyPolicy\nmetadata: {{name: {name}}}\nspec:\n  dataClasses: [personal]\n  namespaceSelector: {{matchLabels: {{residencyguard.io/e2e-layers: \"true\"}}}}\n  egress: {{mode: MainlandOnly}}\n  storage: {{mode: Unchecked}}\n  action: {action}\n"
    )
}

fn deployment(ns: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: api, namespace: {ns}}}\nspec:\n  replicas: 1\n  selector: {{matchLabels: {{app: api}}}}\n  template:\n    metadata: {{labels: {{app: api, residencyguard.io/data-class: personal}}}}\n    spec:\n      nodeSelector: {{topology.kubernetes.io/region: cn-north-1}}\n      containers: [{{name: c, image: registry.k8s.io/pause:3.10}}]\n"
    )
}

fn network_policy(ns: &str, cidr: &str) -> String {
    format!(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: api-egress, namespace: {ns}}}\nspec:\n  podSelector: {{matchLabels: {{app: api}}}}\n  policyTypes: [Egress]\n  egress: [{{to: [{{ipBlock: {{cidr: {cidr}}}}}]}}]\n"
    )
}

/// `residency-guard report --format json` of the cluster with `args`:
/// the exit code, stderr and the JSON report (when one was written).
fn live_report(c: &Cluster, dir: &str, args: &[&str]) -> (Option<i32>, String, Option<Value>) {
    let out_dir = c.scratch.join(dir);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_residency-guard"))
        .args(["report", "--format", "json", "--kubeconfig"])
        .arg(&c.kubeconfig)
        .arg("-o")
        .arg(&out_dir)
        .args(args)
        .env("LANG", "C")
        .env_remove("RESIDENCY_GUARD_EGRESS_CNI")
        .output()
        .expect("run residency-guard report");
    let json = std::fs::read(out_dir.join("residency-report.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        json,
    )
}

/// `kubectl apply` as the `edit` user.
fn apply_as_user(c: &Cluster, yaml: &str) -> Run {
    c.kubectl_in(&["apply", "--as", USER, "-f", "-"], yaml)
}

/// `kubectl apply --dry-run=server` as the `edit` user: judged by the
/// webhook, never stored. Loops that wait for a denial use it: a write
/// admitted before the operator's snapshot caught up would otherwise be
/// stored, and the same apply again is "unchanged", never sent to the
/// webhook, so the loop could not see the denial.
fn dry_run_as_user(c: &Cluster, yaml: &str) -> Run {
    c.kubectl_in(
        &["apply", "--dry-run=server", "--as", USER, "-f", "-"],
        yaml,
    )
}

/// Apply until `done` holds for the answer (the operator's snapshot follows
/// the watches, a moment after the objects it depends on are written).
fn apply_until(what: &str, mut apply: impl FnMut() -> Run, done: impl Fn(&Run) -> bool) -> Run {
    let start = Instant::now();
    loop {
        let r = apply();
        if done(&r) || start.elapsed() > Duration::from_secs(30) {
            assert!(done(&r), "{what}: {}\n{}", r.stdout, r.stderr);
            return r;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn setup(c: &Cluster, release: &str, cni: &str, ns: &str) -> crate::harness::Installed {
    install_layer_crds(c);
    let installed = install_and_run(
        c,
        release,
        &format!("{release}-system"),
        &["--set", &format!("egress.cni={cni}")],
    );
    c.fresh_namespace(ns, &[("residencyguard.io/e2e-layers", "true")]);
    c.grant_edit(ns, USER);
    installed
}

#[test]
fn cilium_policies_admit_and_deny() {
    let Some(c) = cluster("egress-layers-cilium") else {
        return;
    };
    let ns = "e2e-layers-cilium";
    let _installed = setup(&c, "e2e-layers-cilium", "cilium", ns);
    apply_policies(&c, &["e2e-layers-deny"], &policy("e2e-layers-deny", "Deny"));

    // Restricted only by a CiliumNetworkPolicy to a mainland CIDR.
    let cnp = format!(
        "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {{name: api-to-cn, namespace: {ns}}}\nspec:\n  endpointSelector: {{matchLabels: {{app: api}}}}\n  egress: [{{toCIDR: [1.0.1.0/24]}}]\n"
    );
    let r = apply_when_webhook_answers(&c, &cnp);
    assert!(r.ok, "{}", r.stderr);
    let admitted = apply_until(
        "the Deployment admitted once the operator sees the CiliumNetworkPolicy",
        || apply_as_user(&c, &deployment(ns)),
        |r| r.ok,
    );
    println!(
        "kubectl apply --as {USER} (CiliumNetworkPolicy to 1.0.1.0/24):\n{}",
        admitted.all()
    );

    // The live report reads the same layers the operator does: with
    // Cilium's and Calico's CRDs both served it needs the CNI named, as
    // the operator does (egress.cni), and with it the Deployment is
    // mainland-only, the CiliumNetworkPolicy named as what allowed it.
    let (code, stderr, _) = live_report(&c, "report-auto", &[]);
    assert_eq!(code, Some(3), "{stderr}");
    assert!(stderr.contains("egress.cni (--egress-cni)"), "{stderr}");
    let (code, stderr, report) = live_report(&c, "report-cilium", &["--egress-cni", "cilium"]);
    assert_eq!(code, Some(0), "{stderr}");
    let report = report.expect("the JSON report");
    let api = report["workloads"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|w| w["namespace"] == ns && w["name"] == "api" && w["kind"] == "Deployment")
        .unwrap_or_else(|| panic!("Deployment {ns}/api not in the report: {report:#}"));
    let egress = &api["egress"];
    assert_eq!(egress["posture"], "mainland", "{egress:#}");
    assert_eq!(egress["cni"], "cilium", "{egress:#}");
    let layers = egress["layers"].to_string();
    assert!(
        layers.contains(&format!("CiliumNetworkPolicy {ns}/api-to-cn"))
            && layers.contains("1.0.1.0/24"),
        "{layers}"
    );
    assert!(
        report["scope"]["cluster"]["lists"]
            .to_string()
            .contains("ciliumnetworkpolicies.cilium.io"),
        "the report's provenance names the Cilium list"
    );
    println!("live report, Deployment {ns}/api egress: {egress}");

    // Opened to 0.0.0.0/0 by a clusterwide policy: Cilium unions allows.
    c.cluster_object("ciliumclusterwidenetworkpolicy", "e2e-open-world");
    let ccnp = "apiVersion: cilium.io/v2\nkind: CiliumClusterwideNetworkPolicy\nmetadata: {name: e2e-open-world}\nspec:\n  endpointSelector: {}\n  egress: [{toCIDRSet: [{cidr: 0.0.0.0/0}]}]\n";
    let denied = apply_until(
        "the CiliumClusterwideNetworkPolicy denied once the operator sees the Deployment",
        || c.kubectl_in(&["apply", "--dry-run=server", "-f", "-"], ccnp),
        |r| !r.ok,
    );
    for part in [
        "denied the request",
        "CREATE CiliumClusterwideNetworkPolicy e2e-open-world would open this",
        &format!("Deployment {ns}/api"),
        "0.0.0.0/0",
    ] {
        assert!(
            denied.stderr.contains(part),
            "{part:?} not in:\n{}",
            denied.stderr
        );
    }
    assert!(
        c.get_json(&["ciliumclusterwidenetworkpolicy", "e2e-open-world"])
            .is_none(),
        "the denied policy exists"
    );
    println!(
        "kubectl apply (CiliumClusterwideNetworkPolicy 0.0.0.0/0):\n{}",
        denied.stderr
    );
}

#[test]
fn an_admin_network_policy_allow_abroad_is_reported() {
    let Some(c) = cluster("egress-layers-anp") else {
        return;
    };
    let ns = "e2e-layers-anp";
    let _installed = setup(&c, "e2e-layers-anp", "kubernetes", ns);
    apply_policies(&c, &["e2e-layers-warn"], &policy("e2e-layers-warn", "Warn"));
    let r = apply_as_user(&c, &network_policy(ns, "1.0.1.0/24"));
    assert!(r.ok, "{}", r.stderr);
    let r = apply_as_user(&c, &deployment(ns));
    assert!(r.ok, "{}", r.stderr);

    // The Namespace's labels decide which AdminNetworkPolicies select its
    // pods. An ANP for namespaces labelled `egress: open` selects nothing
    // yet; the user, who may label her Namespace, relabels it into the ANP:
    // under a Deny policy, refused like creating the ANP over her pods.
    c.cluster_object("adminnetworkpolicy", "e2e-open-quad9");
    let quad9 = "apiVersion: policy.networking.k8s.io/v1alpha1\nkind: AdminNetworkPolicy\nmetadata: {name: e2e-open-quad9}\nspec:\n  priority: 20\n  subject: {namespaces: {matchLabels: {egress: open}}}\n  egress: [{name: quad9, action: Allow, to: [{networks: [9.9.9.0/24]}]}]\n";
    let r = c.apply(quad9);
    assert!(r.ok, "{}", r.stderr);
    for (kind, name) in [
        ("clusterrole", "e2e-layers-label-ns"),
        ("clusterrolebinding", "e2e-layers-label-ns"),
    ] {
        c.cluster_object(kind, name);
    }
    c.must(&[
        "create",
        "clusterrole",
        "e2e-layers-label-ns",
        "--verb=get,patch,update",
        "--resource=namespaces",
        &format!("--resource-name={ns}"),
    ]);
    c.must(&[
        "create",
        "clusterrolebinding",
        "e2e-layers-label-ns",
        "--clusterrole=e2e-layers-label-ns",
        &format!("--user={USER}"),
    ]);
    apply_policies(&c, &["e2e-layers-deny"], &policy("e2e-layers-deny", "Deny"));
    let relabel = || {
        c.kubectl(&[
            "label",
            "namespace",
            ns,
            "egress=open",
            "--dry-run=server",
            "--as",
            USER,
        ])
    };
    let refused = apply_until(
        "the relabel into the AdminNetworkPolicy refused",
        relabel,
        |r| !r.ok && r.stderr.contains("9.9.9.0/24"),
    );
    assert!(
        refused
            .stderr
            .contains(&format!("UPDATE Namespace {ns} would open this")),
        "{}",
        refused.stderr
    );
    println!(
        "kubectl label namespace {ns} egress=open:\n{}",
        refused.all()
    );
    let r = c.kubectl(&["label", "namespace", ns, "cost-centre=42", "--as", USER]);
    assert!(r.ok, "an unrelated label: {}", r.stderr);
    c.must(&[
        "delete",
        "residencypolicy",
        "e2e-layers-deny",
        "--wait=true",
    ]);

    c.cluster_object("adminnetworkpolicy", "e2e-allow-google-dns");
    let anp = "apiVersion: policy.networking.k8s.io/v1alpha1\nkind: AdminNetworkPolicy\nmetadata: {name: e2e-allow-google-dns}\nspec:\n  priority: 10\n  subject: {namespaces: {matchLabels: {residencyguard.io/e2e-layers: \"true\"}}}\n  egress: [{name: google-dns, action: Allow, to: [{networks: [8.8.8.0/24]}]}]\n";
    // A Warn policy: admitted, with the warning naming what it opens.
    let warned = apply_until(
        "the AdminNetworkPolicy admitted with a warning",
        || c.apply(anp),
        |r| {
            r.ok && r
                .stderr
                .contains("AdminNetworkPolicy e2e-allow-google-dns would open this")
        },
    );
    println!(
        "kubectl apply (AdminNetworkPolicy 8.8.8.0/24):\n{}",
        warned.all()
    );

    // The audit reports it as egress abroad.
    let offenders = eventually(
        "the policy's status to report EgressOutsideMainland",
        Duration::from_secs(30),
        || {
            let p = c.get_json(&["rp", "e2e-layers-warn"])?;
            let offenders = p["status"]["topOffenders"].to_string();
            offenders
                .contains("EgressOutsideMainland")
                .then_some(offenders)
        },
    );
    assert!(
        offenders.contains(&format!("{ns}/api")) || offenders.contains("api"),
        "{offenders}"
    );
    println!("status.topOffenders: {offenders}");
}

#[test]
fn a_calico_global_deny_ordered_first_closes_a_network_policy() {
    let Some(c) = cluster("egress-layers-calico") else {
        return;
    };
    let ns = "e2e-layers-calico";
    let _installed = setup(&c, "e2e-layers-calico", "calico", ns);
    apply_policies(&c, &["e2e-layers-deny"], &policy("e2e-layers-deny", "Deny"));
    // The NetworkPolicy opens every IPv4 address.
    let r = apply_as_user(&c, &network_policy(ns, "0.0.0.0/0"));
    assert!(r.ok, "{}", r.stderr);
    let denied = apply_until(
        "the Deployment denied while the NetworkPolicy opens 0.0.0.0/0",
        || dry_run_as_user(&c, &deployment(ns)),
        |r| !r.ok,
    );
    assert!(denied.stderr.contains("0.0.0.0/0"), "{}", denied.stderr);

    // A GlobalNetworkPolicy Deny ordered before the NetworkPolicy (order
    // 1000 in Calico's default tier) closes it.
    c.cluster_object(
        "globalnetworkpolicy.crd.projectcalico.org",
        "e2e-deny-abroad",
    );
    let gnp = "apiVersion: crd.projectcalico.org/v1\nkind: GlobalNetworkPolicy\nmetadata: {name: e2e-deny-abroad}\nspec:\n  order: 10\n  selector: app == 'api'\n  types: [Egress]\n  egress: [{action: Deny, destination: {nets: [0.0.0.0/0]}}]\n";
    let r = apply_when_webhook_answers(&c, gnp);
    assert!(r.ok, "{}", r.stderr);
    let admitted = apply_until(
        "the Deployment admitted once the operator sees the GlobalNetworkPolicy",
        || apply_as_user(&c, &deployment(ns)),
        |r| r.ok,
    );
    println!(
        "kubectl apply --as {USER} (GlobalNetworkPolicy Deny first):\n{}",
        admitted.all()
    );
}

fn network_set(ns: &str, name: &str, role: &str, nets: &str) -> String {
    format!(
        "apiVersion: crd.projectcalico.org/v1\nkind: NetworkSet\nmetadata: {{name: {name}, namespace: {ns}, labels: {{role: {role}}}}}\nspec: {{nets: [{nets}]}}\n"
    )
}

#[test]
fn calico_network_sets_written_by_a_namespace_user_are_judged() {
    let Some(c) = cluster("egress-layers-sets") else {
        return;
    };
    let ns = "e2e-layers-sets";
    let _installed = setup(&c, "e2e-layers-sets", "calico", ns);
    // Namespace owners may write NetworkSets (and Calico policies) here.
    c.cluster_object("clusterrole", "e2e-calico-sets-edit");
    let role = "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata:\n  name: e2e-calico-sets-edit\n  labels: {rbac.authorization.k8s.io/aggregate-to-edit: \"true\"}\nrules:\n- apiGroups: [crd.projectcalico.org]\n  resources: [networksets, networkpolicies]\n  verbs: [get, list, watch, create, update, patch, delete]\n";
    c.must_apply(role);
    apply_policies(&c, &["e2e-sets-deny"], &policy("e2e-sets-deny", "Deny"));
    // The pod may reach the sets labelled role=egress of its namespace.
    let to_sets = format!(
        "apiVersion: crd.projectcalico.org/v1\nkind: NetworkPolicy\nmetadata: {{name: to-sets, namespace: {ns}}}\nspec:\n  selector: app == 'api'\n  types: [Egress]\n  egress: [{{action: Allow, destination: {{selector: role == 'egress'}}}}]\n"
    );
    let r = apply_until(
        "the edit user may write a Calico NetworkPolicy (aggregated role)",
        || apply_as_user(&c, &to_sets),
        |r| r.ok,
    );
    println!(
        "kubectl apply --as {USER} (Calico NetworkPolicy):\n{}",
        r.all()
    );
    let r = apply_as_user(&c, &network_set(ns, "cn", "egress", "1.0.1.0/24"));
    assert!(r.ok, "{}", r.stderr);
    let r = apply_as_user(&c, &network_set(ns, "elsewhere", "other", "8.8.8.0/24"));
    assert!(r.ok, "a set no rule selects: {}", r.stderr);
    let admitted = apply_until(
        "the Deployment admitted: the only set it reaches is in the mainland",
        || apply_as_user(&c, &deployment(ns)),
        |r| r.ok,
    );
    println!(
        "kubectl apply --as {USER} (Deployment):\n{}",
        admitted.all()
    );
    // Adding an address abroad to the selected set: denied.
    let denied = apply_until(
        "a NetworkSet update adding 8.8.8.0/24 denied",
        || {
            dry_run_as_user(
                &c,
                &network_set(ns, "cn", "egress", "1.0.1.0/24, 8.8.8.0/24"),
            )
        },
        |r| !r.ok,
    );
    assert!(
        denied.stderr.contains("EgressOutsideMainland") || denied.stderr.contains("8.8.8.0/24"),
        "{}",
        denied.stderr
    );
    println!(
        "kubectl apply --as {USER} (NetworkSet cn + 8.8.8.0/24):\n{}",
        denied.all()
    );
    // Relabelling the other set into the selector (labels only): denied.
    let relabel = c.kubectl(&[
        "label",
        "--as",
        USER,
        "-n",
        ns,
        "networkset.crd.projectcalico.org/elsewhere",
        "role=egress",
        "--overwrite",
    ]);
    assert!(!relabel.ok, "relabel admitted: {}", relabel.all());
    println!(
        "kubectl label --as {USER} networkset elsewhere role=egress:\n{}",
        relabel.all()
    );
    // A GlobalNetworkPolicy ordered first denies the GlobalNetworkSet of
    // every address; an Allow of everything comes after. Deleting the set
    // would open what the Deny closed: denied (admin, DELETE entry).
    c.cluster_object("globalnetworkset.crd.projectcalico.org", "e2e-everywhere");
    c.cluster_object("globalnetworkpolicy.crd.projectcalico.org", "e2e-deny-sets");
    let everywhere = "apiVersion: crd.projectcalico.org/v1\nkind: GlobalNetworkSet\nmetadata: {name: e2e-everywhere, labels: {zone: abroad}}\nspec: {nets: [0.0.0.0/0, \"::/0\"]}\n";
    let r = apply_when_webhook_answers(&c, everywhere);
    assert!(r.ok, "{}", r.stderr);
    let deny = "apiVersion: crd.projectcalico.org/v1\nkind: GlobalNetworkPolicy\nmetadata: {name: e2e-deny-sets}\nspec:\n  order: 10\n  selector: app == 'api'\n  types: [Egress]\n  egress: [{action: Deny, destination: {namespaceSelector: global(), selector: zone == 'abroad'}}]\n";
    let r = apply_when_webhook_answers(&c, deny);
    assert!(r.ok, "{}", r.stderr);
    let open_later = format!(
        "apiVersion: crd.projectcalico.org/v1\nkind: NetworkPolicy\nmetadata: {{name: open-later, namespace: {ns}}}\nspec:\n  order: 2000\n  selector: app == 'api'\n  types: [Egress]\n  egress: [{{action: Allow}}]\n"
    );
    let r = apply_until(
        "an Allow of everything after the Deny admitted (the Deny closes it)",
        || apply_as_user(&c, &open_later),
        |r| r.ok,
    );
    println!(
        "kubectl apply --as {USER} (Allow after the Deny):\n{}",
        r.all()
    );
    let deleted = apply_until(
        "deleting the GlobalNetworkSet the Deny selects denied",
        || {
            c.kubectl(&[
                "delete",
                "globalnetworkset.crd.projectcalico.org",
                "e2e-everywhere",
                "--wait=false",
                "--dry-run=server",
            ])
        },
        |r| !r.ok,
    );
    println!(
        "kubectl delete globalnetworkset e2e-everywhere:\n{}",
        deleted.all()
    );
    // Deleting the Allow only closes: admitted, and the cleanup's deletes
    // of the Deny and the set then open nothing either.
    let r = c.kubectl(&[
        "delete",
        "networkpolicy.crd.projectcalico.org",
        "open-later",
        "-n",
        ns,
        "--as",
        USER,
    ]);
    assert!(r.ok, "{}", r.stderr);

    // Under a Warn policy a set gaining an address abroad is admitted with
    // a warning, and the audit, judging again on the set's change, reports
    // the Deployment's egress abroad.
    for (kind, name) in [
        ("globalnetworkpolicy.crd.projectcalico.org", "e2e-deny-sets"),
        ("globalnetworkset.crd.projectcalico.org", "e2e-everywhere"),
        ("residencypolicy", "e2e-sets-deny"),
    ] {
        c.must(&["delete", kind, name, "--wait=true"]);
    }
    apply_policies(&c, &["e2e-sets-warn"], &policy("e2e-sets-warn", "Warn"));
    let warned = apply_until(
        "the NetworkSet update admitted with a warning under the Warn policy",
        || {
            apply_as_user(
                &c,
                &network_set(ns, "cn", "egress", "1.0.1.0/24, 8.8.8.0/24"),
            )
        },
        |r| {
            r.ok && r
                .stderr
                .contains("UPDATE NetworkSet e2e-layers-sets/cn would open this")
        },
    );
    println!(
        "kubectl apply --as {USER} (NetworkSet cn + 8.8.8.0/24, Warn):\n{}",
        warned.all()
    );
    let offenders = eventually(
        "the Warn policy's status to report EgressOutsideMainland",
        Duration::from_secs(30),
        || {
            let p = c.get_json(&["rp", "e2e-sets-warn"])?;
            let offenders = p["status"]["topOffenders"].to_string();
            offenders
                .contains("EgressOutsideMainland")
                .then_some(offenders)
        },
    );
    println!("status.topOffenders: {offenders}");
}

/// Cilium's CRDs installed after the operator started (`egress.cni:
/// auto`, so it judged under `kubernetes` until then) are found within the
/// probe period, without a restart: the semantics become `cilium`, the
/// CiliumClusterwideNetworkPolicy opening 0.0.0.0/0 is watched, and the
/// audit reports the Deployment the NetworkPolicy kept in mainland China
/// as egress abroad.
#[test]
fn cilium_crds_installed_after_the_operator_are_picked_up_within_the_probe_period() {
    let Some(c) = cluster("egress-layers-late") else {
        return;
    };
    let ns = "e2e-layers-late";
    let release = "e2e-layers-late";
    // No layer CRD is served when the operator starts (an earlier test's
    // are deleted when it ends; make sure).
    for crd in CRDS {
        c.cluster_object("crd", crd);
    }
    let installed = install_and_run(&c, release, &format!("{release}-system"), &[]);
    c.fresh_namespace(ns, &[("residencyguard.io/e2e-layers", "true")]);
    c.grant_edit(ns, USER);
    apply_policies(&c, &["e2e-layers-late"], &policy("e2e-layers-late", "Warn"));
    let r = apply_as_user(&c, &network_policy(ns, "1.0.1.0/24"));
    assert!(r.ok, "{}", r.stderr);
    let r = apply_until(
        "the Deployment admitted",
        || apply_as_user(&c, &deployment(ns)),
        |r| r.ok,
    );
    assert!(r.ok);
    // The audit has judged it: mainland-only through the NetworkPolicy.
    eventually(
        "the policy's status to be written",
        Duration::from_secs(30),
        || {
            let p = c.get_json(&["rp", "e2e-layers-late"])?;
            p["status"]["lastEvaluated"].as_str().map(|_| ())
        },
    );
    let p = c.get_json(&["rp", "e2e-layers-late"]).unwrap_or_default();
    assert!(
        !p["status"]["topOffenders"]
            .to_string()
            .contains("EgressOutsideMainland"),
        "egress abroad before any Cilium policy: {}",
        p["status"]
    );

    // Now Cilium's CRDs, and a clusterwide policy opening every IPv4
    // address: Cilium unions it with the NetworkPolicy.
    c.must_apply(&fixture_crds_of("cilium.io"));
    for crd in &CRDS[..2] {
        c.must(&[
            "wait",
            "--for=condition=Established",
            "--timeout=30s",
            &format!("crd/{crd}"),
        ]);
    }
    let established = Instant::now();
    c.cluster_object("ciliumclusterwidenetworkpolicy", "e2e-late-open-world");
    let ccnp = "apiVersion: cilium.io/v2\nkind: CiliumClusterwideNetworkPolicy\nmetadata: {name: e2e-late-open-world}\nspec:\n  endpointSelector: {}\n  egress: [{toCIDRSet: [{cidr: 0.0.0.0/0}]}]\n";
    let r = apply_when_webhook_answers(&c, ccnp);
    assert!(r.ok, "{}", r.stderr);
    let offenders = eventually(
        "the audit to report the Deployment's egress abroad",
        PROBE_PERIOD + Duration::from_secs(20),
        || {
            let p = c.get_json(&["rp", "e2e-layers-late"])?;
            let offenders = p["status"]["topOffenders"].to_string();
            (offenders.contains("EgressOutsideMainland") && offenders.contains("api"))
                .then_some(offenders)
        },
    );
    let took = established.elapsed();
    println!(
        "egress layers: EgressOutsideMainland in the policy status {:.1} s after Cilium's CRDs were established (probe period {} s): {offenders}",
        took.as_secs_f64(),
        PROBE_PERIOD.as_secs()
    );
    assert!(
        took <= PROBE_PERIOD + Duration::from_secs(10),
        "picked up {:.1} s after the CRDs were established",
        took.as_secs_f64()
    );
    let log = installed.operator.log();
    if !log.is_empty() {
        for part in [
            "egress layer kind served now; watching it",
            "ciliumclusterwidenetworkpolicies.cilium.io",
            "egress semantics changed",
        ] {
            assert!(log.contains(part), "{part:?} not in the operator's log");
        }
    }
}
