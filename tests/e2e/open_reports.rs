//! The audit's reports in the OpenReports API (`openreports.io/v1alpha1`,
//! issue 26) on a real API server with the upstream CRDs of both report
//! APIs (harness::report_crds_dir): a cluster with only the OpenReports
//! CRDs gets Reports (with the default `reports.kind: auto`), a cluster
//! with both gets the same results in each, CRDs installed after the
//! operator are picked up within the probe period (15 s), and a fixed
//! `reports.kind` is granted and writes only its API. The workloads
//! are created by an ordinary user (`edit` in one namespace); the reports
//! by the operator under the chart's ServiceAccount, whose ClusterRole
//! grants exactly the report API(s) `reports.kind` selects.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::{
    Cluster, OPEN_REPORTS_CRDS, POLICY_REPORT_CRDS, cluster, eventually, install_and_run,
    install_report_crds, remove_report_crds,
};

const REGION: &str = "topology.kubernetes.io/region";
/// How often the operator looks for a report API that is missing
/// (`WriterConfig::reports_probe_every`).
const PROBE_PERIOD: Duration = Duration::from_secs(15);

fn policy(name: &str, label: &str, action: &str) -> String {
    format!(
        "apiVersion: residencyguard.io/v1alpha1\nkind: ResidencyPolicy\nmetadata: {{name: {name}}}\nspec:\n  dataClasses: [personal]\n  namespaceSelector: {{matchLabels: {{{label}: \"true\"}}}}\n  action: {action}\n"
    )
}

fn deployment(ns: &str, name: &str, region: Option<&str>) -> String {
    let selector = region
        .map(|r| format!("      nodeSelector: {{{REGION}: {r}}}\n"))
        .unwrap_or_default();
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n  replicas: 1\n  selector: {{matchLabels: {{app: {name}}}}}\n  template:\n    metadata: {{labels: {{app: {name}, residencyguard.io/data-class: personal}}}}\n    spec:\n{selector}      containers: [{{name: c, image: registry.k8s.io/pause:3.10}}]\n"
    )
}

/// `alice` (edit in `ns` only) applies `yaml` once the webhook answers.
fn apply_as_alice(c: &Cluster, yaml: &str) {
    eventually(
        "alice's Deployment to be admitted",
        Duration::from_secs(30),
        || {
            c.kubectl_in(&["apply", "--as=alice", "-f", "-"], yaml)
                .ok
                .then_some(())
        },
    );
}

/// The pod of Deployment `app`, once bound to a node.
fn bound_pod(c: &Cluster, ns: &str, app: &str) -> Value {
    eventually(
        &format!("the {app} pod to be bound"),
        Duration::from_secs(60),
        || {
            let list = c.get_json(&["pods", "-n", ns, "-l", &format!("app={app}")])?;
            let p = list["items"].as_array()?.first()?.clone();
            p["spec"]["nodeName"].as_str()?;
            Some(p)
        },
    )
}

/// The result of `rule` in a report, if it has one.
fn result<'a>(report: &'a Value, rule: &str) -> Option<&'a Value> {
    report["results"]
        .as_array()?
        .iter()
        .find(|r| r["rule"] == rule && r["result"] == "fail")
}

/// Every field the operator writes in a result survived the API server:
/// the upstream schema accepted each (a field it does not define would have
/// been pruned, or the write refused).
fn assert_result_intact(r: &Value) {
    for field in [
        "policy",
        "rule",
        "result",
        "severity",
        "category",
        "source",
        "scored",
        "message",
        "resources",
        "properties",
    ] {
        assert!(r.get(field).is_some(), "{field} was pruned: {r:#}");
    }
    assert_eq!(r["source"], "residency-guard");
    assert_eq!(r["category"], "Data residency");
}

/// `residency-guard report --format json` of the cluster, as an admin.
fn live_report(c: &Cluster) -> Value {
    let out_dir = c.scratch.join("report");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_residency-guard"))
        .args(["report", "--format", "json", "--kubeconfig"])
        .arg(&c.kubeconfig)
        .arg("-o")
        .arg(&out_dir)
        .env("LANG", "C")
        .output()
        .expect("run residency-guard report");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&std::fs::read(out_dir.join("residency-report.json")).expect("the JSON"))
        .expect("JSON")
}

/// A cluster with only the OpenReports CRDs (as Kubewarden's chart now
/// installs by default): with the default `reports.kind: auto` a
/// relabelled node's violation reaches a Report and a ClusterReport the
/// upstream schema accepted, and `residency-guard report` reads it.
#[test]
fn open_reports_only_a_relabelled_nodes_violation_reaches_a_report() {
    let Some(c) = cluster("open-reports-only") else {
        return;
    };
    let apps = "e2e-or-apps";
    remove_report_crds(&c);
    install_report_crds(&c, OPEN_REPORTS_CRDS);
    let installed = install_and_run(
        &c,
        "e2e-or",
        "e2e-or-system",
        &["--set", "audit.enabled=true"],
    );
    crate::harness::apply_policies(
        &c,
        &["e2e-or-personal"],
        &policy("e2e-or-personal", "residencyguard.io/e2e-or", "Deny"),
    );
    c.fresh_namespace(apps, &[("residencyguard.io/e2e-or", "true")]);
    c.grant_edit(apps, "alice");
    apply_as_alice(&c, &deployment(apps, "records", Some("cn-north-1")));
    let pod = bound_pod(&c, apps, "records");
    assert_eq!(pod["spec"]["nodeName"], "cn-node-1");
    let pod_name = pod["metadata"]["name"].as_str().unwrap_or_default();

    c.label_node("cn-node-1", REGION, "us-east-1");
    let relabelled = Instant::now();
    let report = eventually(
        "a Report naming the node abroad",
        Duration::from_secs(40),
        || {
            let r = c.get_json(&["reports.openreports.io", "residency-guard", "-n", apps])?;
            let bound = result(&r, "BoundToNodeOutside")?;
            (bound["properties"]["node"] == "cn-node-1"
                && bound["properties"]["region"] == "us-east-1")
                .then(|| r.clone())
        },
    );
    println!(
        "relabel reported in a Report within {:?}",
        relabelled.elapsed()
    );
    assert_eq!(report["apiVersion"], "openreports.io/v1alpha1");
    assert_eq!(report["kind"], "Report");
    assert_eq!(report["source"], "residency-guard");
    assert_eq!(
        report["metadata"]["labels"]["app.kubernetes.io/managed-by"],
        "residency-guard"
    );
    let bound = result(&report, "BoundToNodeOutside").expect("the finding");
    assert_result_intact(bound);
    // Data proven abroad under a Deny policy.
    assert_eq!(bound["severity"], "critical");
    assert_eq!(bound["policy"], "e2e-or-personal");
    assert_eq!(bound["properties"]["classes"], "personal");
    assert_eq!(bound["properties"]["action"], "Deny");
    assert_eq!(bound["resources"][0]["kind"], "Pod");
    assert_eq!(bound["resources"][0]["name"], pod_name);
    assert_eq!(bound["resources"][0]["uid"], pod["metadata"]["uid"]);
    assert!(report["summary"]["fail"].as_u64() >= Some(1), "{report:#}");

    // The node abroad, in the ClusterReport.
    let cluster_report = eventually(
        "a ClusterReport naming the node",
        Duration::from_secs(20),
        || {
            let r = c.get_json(&["clusterreports.openreports.io", "residency-guard"])?;
            let bound = result(&r, "BoundToNodeOutside")?;
            (bound["resources"][0]["name"] == "cn-node-1").then(|| r.clone())
        },
    );
    assert_eq!(cluster_report["kind"], "ClusterReport");
    assert_result_intact(result(&cluster_report, "BoundToNodeOutside").expect("the node"));
    let log = installed.operator.log();
    assert!(
        !log.contains("cannot apply report") && !log.contains("cannot apply the cluster report"),
        "a report write failed:\n{log}"
    );

    // `residency-guard report` reads the Reports as the audit's evidence.
    let r = live_report(&c);
    let sources = &r["scope"]["auditSources"]["policyReports"];
    assert_eq!(sources["read"], true, "{sources:#}");
    assert!(sources["objects"].as_u64() >= Some(1), "{sources:#}");
    let lists = r["scope"]["cluster"]["lists"].to_string();
    assert!(lists.contains("reports.openreports.io"), "{lists}");
    let seen_by = r["workloads"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|w| w["namespace"] == apps && w["name"] == "records")
        .flat_map(|w| w["violations"].as_array().into_iter().flatten())
        .find(|v| v["code"] == "BoundToNodeOutside")
        .map(|v| v["seenBy"].clone())
        .unwrap_or(Value::Null);
    assert!(seen_by.to_string().contains("policyReport"), "{seen_by}");
}

/// Both report APIs installed, `reports.kind: both`: the same results,
/// summary and metadata in the PolicyReport and the Report, and in the
/// ClusterPolicyReport and the ClusterReport.
#[test]
fn both_report_apis_hold_identical_results() {
    let Some(c) = cluster("open-reports-both") else {
        return;
    };
    let apps = "e2e-both-apps";
    remove_report_crds(&c);
    install_report_crds(&c, POLICY_REPORT_CRDS);
    install_report_crds(&c, OPEN_REPORTS_CRDS);
    let _installed = install_and_run(
        &c,
        "e2e-both",
        "e2e-both-system",
        &["--set", "audit.enabled=true", "--set", "reports.kind=both"],
    );
    crate::harness::apply_policies(
        &c,
        &["e2e-both-personal"],
        &policy("e2e-both-personal", "residencyguard.io/e2e-both", "Warn"),
    );
    c.fresh_namespace(apps, &[("residencyguard.io/e2e-both", "true")]);
    c.grant_edit(apps, "alice");
    // A Warn policy admits the unpinned one (with a warning).
    apply_as_alice(&c, &deployment(apps, "pinned", Some("cn-north-1")));
    apply_as_alice(&c, &deployment(apps, "unpinned", None));
    assert_eq!(
        bound_pod(&c, apps, "pinned")["spec"]["nodeName"],
        "cn-node-1"
    );
    c.label_node("cn-node-1", REGION, "us-east-1");

    let same = |a: &Value, b: &Value| {
        a["results"] == b["results"]
            && a["summary"] == b["summary"]
            && a["metadata"]["labels"] == b["metadata"]["labels"]
            && a["metadata"]["annotations"] == b["metadata"]["annotations"]
    };
    let (wg, or) = eventually(
        "the same findings in the PolicyReport and the Report",
        Duration::from_secs(40),
        || {
            let wg = c.get_json(&[
                "policyreports.wgpolicyk8s.io",
                "residency-guard",
                "-n",
                apps,
            ])?;
            let or = c.get_json(&["reports.openreports.io", "residency-guard", "-n", apps])?;
            result(&or, "BoundToNodeOutside")?;
            result(&or, "PlacementNotGuaranteed")?;
            same(&wg, &or).then_some((wg, or))
        },
    );
    assert_eq!(or["source"], "residency-guard");
    let results = or["results"].as_array().expect("results");
    for r in results {
        assert_result_intact(r);
    }
    // Under Warn: one step below the finding's own weight.
    assert_eq!(
        result(&or, "BoundToNodeOutside").expect("bound")["severity"],
        "high"
    );
    assert_eq!(
        result(&or, "PlacementNotGuaranteed").expect("unpinned")["severity"],
        "low"
    );
    println!(
        "PolicyReport and Report: {} identical results, summary {}",
        results.len(),
        wg["summary"]
    );
    eventually(
        "the same node abroad in the ClusterPolicyReport and the ClusterReport",
        Duration::from_secs(20),
        || {
            let wg = c.get_json(&["clusterpolicyreports.wgpolicyk8s.io", "residency-guard"])?;
            let or = c.get_json(&["clusterreports.openreports.io", "residency-guard"])?;
            result(&or, "BoundToNodeOutside")?;
            same(&wg, &or).then_some(())
        },
    );
    // `residency-guard report` reads both (the same results: the evidence
    // does not change), and lists each in its provenance.
    let r = live_report(&c);
    let lists = r["scope"]["cluster"]["lists"].to_string();
    assert!(
        lists.contains("reports.openreports.io") && lists.contains("policyreports.wgpolicyk8s.io"),
        "{lists}"
    );
    assert!(
        r["scope"]["auditSources"]["policyReports"]["objects"].as_u64() >= Some(2),
        "{}",
        r["scope"]["auditSources"]
    );
}

/// No report API when the operator starts (`auto`); the OpenReports CRDs
/// are installed later: the operator finds them within one probe period
/// (15 s) and writes the Report at once.
#[test]
fn open_reports_crds_installed_after_the_operator_are_picked_up_within_the_probe_period() {
    let Some(c) = cluster("open-reports-late") else {
        return;
    };
    let apps = "e2e-late-apps";
    remove_report_crds(&c);
    let installed = install_and_run(
        &c,
        "e2e-late",
        "e2e-late-system",
        &["--set", "audit.enabled=true"],
    );
    crate::harness::apply_policies(
        &c,
        &["e2e-late-personal"],
        &policy("e2e-late-personal", "residencyguard.io/e2e-late", "Audit"),
    );
    c.fresh_namespace(apps, &[("residencyguard.io/e2e-late", "true")]);
    c.grant_edit(apps, "alice");
    apply_as_alice(&c, &deployment(apps, "anywhere", None));
    // The audit has judged it (its status counts it) with no report API.
    eventually(
        "the policy status to count the violation",
        Duration::from_secs(30),
        || {
            let p = c.get_json(&["rp", "e2e-late-personal"])?;
            (p["status"]["violations"].as_i64()? >= 1).then_some(())
        },
    );

    install_report_crds(&c, OPEN_REPORTS_CRDS);
    let installed_at = Instant::now();
    eventually(
        "the Report once its CRDs are installed",
        PROBE_PERIOD + Duration::from_secs(25),
        || {
            let r = c.get_json(&["reports.openreports.io", "residency-guard", "-n", apps])?;
            result(&r, "PlacementNotGuaranteed").map(|_| ())
        },
    );
    let took = installed_at.elapsed();
    println!(
        "OpenReports CRDs installed after the operator: Report written {took:?} later (probe period {PROBE_PERIOD:?})"
    );
    // One probe period, plus a plan and a write (and the kubectl polls).
    assert!(
        took <= PROBE_PERIOD + Duration::from_secs(5),
        "picked up after {took:?}, over the probe period {PROBE_PERIOD:?}"
    );
    let log = installed.operator.log();
    assert!(
        log.contains("the report API is installed now") && log.contains("openreports.io/v1alpha1"),
        "the operator did not say it found the OpenReports API"
    );
}

/// `reports.kind: openReports` on a cluster with both report APIs: the
/// chart's ClusterRole grants only `openreports.io`, and the operator
/// writes only Reports under it (a PolicyReport write would be refused).
#[test]
fn a_fixed_kind_writes_only_its_api_and_is_granted_only_that() {
    let Some(c) = cluster("open-reports-fixed-kind") else {
        return;
    };
    let apps = "e2e-fixed-apps";
    let (release, system) = ("e2e-fixed", "e2e-fixed-system");
    remove_report_crds(&c);
    install_report_crds(&c, POLICY_REPORT_CRDS);
    install_report_crds(&c, OPEN_REPORTS_CRDS);
    let installed = install_and_run(
        &c,
        release,
        system,
        &[
            "--set",
            "audit.enabled=true",
            "--set",
            "reports.kind=openReports",
        ],
    );
    // What the API server's authorizer says the operator may do.
    let account = format!(
        "--as=system:serviceaccount:{system}:{}",
        crate::harness::fullname(release)
    );
    let may = |verb: &str, resource: &str| {
        let r = c.kubectl(&["auth", "can-i", verb, resource, "-A", &account]);
        r.stdout.trim() == "yes"
    };
    assert!(may("list", "reports.openreports.io"));
    assert!(may("list", "clusterreports.openreports.io"));
    assert!(!may("list", "policyreports.wgpolicyk8s.io"));
    assert!(!may("list", "clusterpolicyreports.wgpolicyk8s.io"));

    crate::harness::apply_policies(
        &c,
        &["e2e-fixed-personal"],
        &policy("e2e-fixed-personal", "residencyguard.io/e2e-fixed", "Audit"),
    );
    c.fresh_namespace(apps, &[("residencyguard.io/e2e-fixed", "true")]);
    c.grant_edit(apps, "alice");
    apply_as_alice(&c, &deployment(apps, "anywhere", None));
    eventually("the Report", Duration::from_secs(30), || {
        let r = c.get_json(&["reports.openreports.io", "residency-guard", "-n", apps])?;
        result(&r, "PlacementNotGuaranteed").map(|_| ())
    });
    // A full plan has been written: no PolicyReport, no refused write.
    let policy_reports = c
        .get_json(&["policyreports.wgpolicyk8s.io", "-n", apps])
        .expect("the PolicyReport API is installed");
    assert_eq!(policy_reports["items"], serde_json::json!([]));
    let log = installed.operator.log();
    assert!(
        !log.contains("forbidden") && !log.contains("Forbidden"),
        "a request was refused:\n{log}"
    );
}
