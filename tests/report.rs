//! `residency-guard report` as a user runs it: the bundled example gives
//! all three outputs, the JSON follows its published schema
//! (docs/report.schema.json), the HTML and CSV agree with the JSON (names,
//! counts, the digest), the same inputs give the same bytes, bad input is
//! exit 2, and `--compare` says what changed.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;
use sha2::{Digest, Sha256};

const BIN: &str = env!("CARGO_BIN_EXE_residency-guard");
const NOW: &str = "2026-11-23T00:00:00Z";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn run(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(BIN)
        .arg("report")
        .args(args)
        .current_dir(root())
        .env("LANG", "C")
        .env_remove("LC_ALL")
        .env_remove("LC_MESSAGES")
        .env_remove("RESIDENCY_GUARD_FILENAME")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn residency-guard");
    let mut pipe = child.stdin.take().expect("stdin");
    if let Some(text) = stdin {
        pipe.write_all(text.as_bytes()).expect("write stdin");
    }
    drop(pipe);
    child.wait_with_output().expect("wait")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

struct Outputs {
    json_bytes: Vec<u8>,
    json: Value,
    html: String,
    csv: String,
}

fn report_in(dir: &Path, args: &[&str]) -> Outputs {
    let mut all = vec!["-o", dir.to_str().expect("UTF-8 path"), "--now", NOW];
    all.extend_from_slice(args);
    let out = run(&all, None);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stderr: {}\nstdout: {}",
        text(&out.stderr),
        text(&out.stdout)
    );
    let json_bytes = std::fs::read(dir.join("residency-report.json")).expect("the JSON");
    Outputs {
        json: serde_json::from_slice(&json_bytes).expect("the JSON parses"),
        json_bytes,
        html: std::fs::read_to_string(dir.join("residency-report.html")).expect("the HTML"),
        csv: std::fs::read_to_string(dir.join("residency-report.csv")).expect("the CSV"),
    }
}

fn example(dir: &Path) -> Outputs {
    report_in(
        dir,
        &["-f", "examples/cluster", "-f", "examples/running-pods"],
    )
}

fn schema_errors(report: &Value) -> Vec<String> {
    let schema: Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("docs/report.schema.json")).expect("the schema"),
    )
    .expect("the schema is JSON");
    let validator = jsonschema::draft202012::new(&schema).expect("the schema compiles");
    validator
        .iter_errors(report)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect()
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn the_bundled_example_gives_all_three_outputs_and_they_agree() {
    let dir = tempfile::tempdir().unwrap();
    let out = example(dir.path());
    let r = &out.json;

    // The JSON follows its published schema.
    let errors = schema_errors(r);
    assert!(errors.is_empty(), "{errors:#?}");
    assert_eq!(
        r["schemaVersion"],
        "residencyguard.io/residency-report/v1alpha1"
    );
    assert_eq!(r["generatedAt"], NOW);

    // What the example holds: 9 governed workloads (frontend carries no
    // class), with their pods and the evidence that matters.
    let workloads = r["workloads"].as_array().unwrap();
    let names: BTreeSet<String> = workloads
        .iter()
        .map(|w| {
            format!(
                "{} {}/{}",
                w["kind"].as_str().unwrap(),
                w["namespace"].as_str().unwrap(),
                w["name"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        names,
        [
            "Deployment payments/api",
            "Deployment payments/ledger",
            "CronJob payments/statements",
            "StatefulSet clinic/records",
            "StatefulSet clinic/archive",
            "Job genomics/sequencer",
            "Deployment treasury/fx-rates",
            "Deployment finance/ledger-export",
            "DaemonSet payments/log-shipper",
        ]
        .map(str::to_string)
        .into_iter()
        .collect()
    );
    assert_eq!(r["summary"]["workloads"], 9);
    // The storage case: the archive's volume in Hong Kong, its class
    // provisioning anywhere.
    let archive = workloads.iter().find(|w| w["name"] == "archive").unwrap();
    let codes: BTreeSet<&str> = archive["violations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["code"].as_str().unwrap())
        .collect();
    assert_eq!(
        codes,
        BTreeSet::from(["VolumeOutsideMainland", "VolumeNotGuaranteed"])
    );
    assert_eq!(
        r["coverage"]["unclassified"],
        serde_json::json!([{"namespace": "web", "kind": "Deployment", "name": "frontend"}])
    );
    let records = workloads.iter().find(|w| w["name"] == "records").unwrap();
    let pods: Vec<(&str, &str)> = records["placement"]["pods"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap(),
                p["node"]["jurisdiction"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        pods,
        [("records-0", "mainland-china"), ("records-1", "hong-kong")]
    );
    let bound: Vec<&Value> = records["violations"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v["code"] == "BoundToNodeOutside")
        .collect();
    assert_eq!(bound.len(), 1, "{records:#}");
    assert_eq!(bound[0]["pod"], "records-1");
    assert_eq!(bound[0]["node"], "hk-general-1");
    let block = &records["egress"]["externalBlocks"][0];
    assert_eq!(block["cidr"], "8.8.8.0/24");
    assert_eq!(block["country"], "US");
    // The exemption in force, with its days left (2027-06-30 is 219 days
    // after 2026-11-23 in China Standard Time).
    let fx = workloads.iter().find(|w| w["name"] == "fx-rates").unwrap();
    assert_eq!(fx["status"], "exempted");
    assert_eq!(fx["policies"][0]["exemption"]["daysLeft"], 219);
    assert_eq!(r["exemptions"][0]["daysLeft"], 219);
    // Provenance.
    let data = r["scope"]["data"].as_array().unwrap();
    let mainland = data.iter().find(|d| d["name"] == "mainlandCidrs").unwrap();
    assert_eq!(mainland["licence"], "CC BY-SA 4.0");
    assert_eq!(
        r["scope"]["policies"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap())
            .collect::<Vec<_>>(),
        [
            "accounting-rollout",
            "genetic-cluster-only",
            "mainland-personal-data"
        ]
    );

    // The HTML carries the JSON's digest, every workload, the counts, and
    // nothing from elsewhere.
    let digest = sha256_hex(&out.json_bytes);
    assert!(
        out.html.contains(&format!("<code>{digest}</code>")),
        "the HTML does not carry the JSON's SHA-256 {digest}"
    );
    assert!(out.html.contains(&format!("content=\"{digest}\"")));
    for name in &names {
        assert!(
            out.html.contains(name.as_str()),
            "{name} is not in the HTML"
        );
    }
    let stat = |n: &Value, en: &str| format!("<b>{n}</b><span class=\"en\">{en}</span>");
    assert!(
        out.html
            .contains(&stat(&r["summary"]["workloads"], "governed workloads"))
    );
    assert!(
        out.html
            .contains(&stat(&r["summary"]["violating"], "violating"))
    );
    assert!(
        out.html
            .contains(&stat(&r["summary"]["pods"], "their pods"))
    );
    for forbidden in ["<script", "<link", "@import", "url(", " src=", "@font-face"] {
        assert!(
            !out.html.contains(forbidden),
            "the HTML contains {forbidden}"
        );
    }
    assert!(out.html.contains("<svg"), "no chart");
    assert!(out.html.contains("数据驻留合规报告") && out.html.contains("Data residency report"));

    // The CSV: one row per governed workload and policy, the same names.
    let csv = out.csv.trim_start_matches('\u{feff}');
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    assert_eq!(header[..3], ["kind", "namespace", "name"]);
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    let expected: usize = workloads
        .iter()
        .map(|w| w["policies"].as_array().unwrap().len())
        .sum();
    assert_eq!(rows.len(), expected);
    for w in workloads {
        for p in w["policies"].as_array().unwrap() {
            let found = rows.iter().any(|row| {
                row[0] == w["kind"]
                    && row[1] == w["namespace"]
                    && row[2] == w["name"]
                    && row[5] == p["policy"]
                    && row[8] == w["status"]
            });
            assert!(found, "no CSV row for {} / {}", w["name"], p["policy"]);
        }
    }
}

#[test]
fn the_same_inputs_give_the_same_bytes() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (x, y) = (example(a.path()), example(b.path()));
    assert!(
        x.json_bytes == y.json_bytes,
        "the JSON is not deterministic"
    );
    assert_eq!(x.html, y.html);
    assert_eq!(x.csv, y.csv);
}

#[test]
fn bad_input_is_exit_2_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let bad_class = "apiVersion: v1\nkind: Pod\nmetadata: {name: p, labels: {residencyguard.io/data-class: medical}}\nspec: {}\n";
    let out = run(&["-f", "-", "-o", d], Some(bad_class));
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(
        err.contains("<stdin> (document 1)") && err.contains("medical"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    assert!(!dir.path().join("residency-report.json").exists());

    // The same in Chinese.
    let out = run(&["-f", "-", "-o", d, "--lang", "zh-CN"], Some(bad_class));
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).starts_with("错误"),
        "{}",
        text(&out.stderr)
    );

    let out = run(&["-f", "does/not/exist.yaml", "-o", d], None);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("does/not/exist.yaml"));

    let out = run(
        &["-f", "examples/cluster", "--now", "yesterday", "-o", d],
        None,
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("--now"));

    let out = run(
        &["-f", "examples/cluster", "--kubeconfig", "x", "-o", d],
        None,
    );
    assert_eq!(out.status.code(), Some(2));

    // --compare with something that is not a report.
    let junk = dir.path().join("junk.json");
    std::fs::write(&junk, "{\"schemaVersion\": \"other\"}").unwrap();
    let out = run(
        &[
            "-f",
            "examples/cluster",
            "-o",
            d,
            "--compare",
            junk.to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("not a residency report"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn an_unreachable_cluster_is_exit_3() {
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster: {server: 'https://127.0.0.1:1'}\nusers:\n- name: u\n  user: {token: t}\ncontexts:\n- name: x\n  context: {cluster: c, user: u}\ncurrent-context: x\n",
    )
    .unwrap();
    let out = run(
        &[
            "--kubeconfig",
            kubeconfig.to_str().unwrap(),
            "-o",
            dir.path().to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("cannot read the cluster"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn compare_says_what_changed() {
    let dir = tempfile::tempdir().unwrap();
    let before = example(dir.path());
    let previous = dir.path().join("previous.json");
    std::fs::write(&previous, &before.json_bytes).unwrap();

    // Seven months later the exemption has lapsed, and a new classified
    // workload runs; the ledger-export pod abroad has moved home.
    let later = tempfile::tempdir().unwrap();
    let extra = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: maps, namespace: clinic}\nspec:\n  selector: {matchLabels: {app: maps}}\n  template:\n    metadata: {labels: {app: maps, residencyguard.io/data-class: map}}\n    spec:\n      nodeSelector: {topology.kubernetes.io/region: cn-north-1}\n      containers: [{name: m, image: m}]\n";
    let extra_file = later.path().join("extra.yaml");
    std::fs::write(&extra_file, extra).unwrap();
    let mut args = vec![
        "-o".to_string(),
        later.path().display().to_string(),
        "--now".into(),
        "2027-07-01T00:00:00Z".into(),
        "-f".into(),
        "examples/cluster".into(),
        "-f".into(),
        extra_file.display().to_string(),
        "--compare".into(),
        previous.display().to_string(),
    ];
    let out = run(&args.iter().map(String::as_str).collect::<Vec<_>>(), None);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let r: Value =
        serde_json::from_slice(&std::fs::read(later.path().join("residency-report.json")).unwrap())
            .unwrap();
    assert!(schema_errors(&r).is_empty(), "{:#?}", schema_errors(&r));
    let c = &r["changes"];
    assert_eq!(c["previous"]["sha256"], sha256_hex(&before.json_bytes));
    assert_eq!(c["previous"]["generatedAt"], NOW);
    assert_eq!(c["newWorkloads"][0]["name"], "maps");
    assert_eq!(
        c["expiredExemptions"][0]["reference"],
        "CAC filing 2026-0042"
    );
    let new: Vec<(&str, &str)> = c["newViolations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| (v["name"].as_str().unwrap(), v["code"].as_str().unwrap()))
        .collect();
    assert!(
        new.contains(&("fx-rates", "EgressOutsideMainland")),
        "{new:?}"
    );
    // Without examples/running-pods every pod is gone: moved (to nowhere),
    // and the pod-level violations are fixed.
    let fixed: Vec<&str> = c["fixedViolations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["code"].as_str().unwrap())
        .collect();
    assert!(fixed.contains(&"BoundToNodeOutside"), "{fixed:?}");
    assert!(!c["movedPods"].as_array().unwrap().is_empty());
    let html = std::fs::read_to_string(later.path().join("residency-report.html")).unwrap();
    assert!(html.contains("Changes since the previous report"));
    assert!(html.contains("自上次报告以来的变化"));

    // Comparing a report with itself: nothing changed.
    args[3] = NOW.into();
    args.truncate(6);
    args.extend([
        "-f".into(),
        "examples/running-pods".into(),
        "--compare".into(),
        previous.display().to_string(),
    ]);
    let out = run(&args.iter().map(String::as_str).collect::<Vec<_>>(), None);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let r: Value =
        serde_json::from_slice(&std::fs::read(later.path().join("residency-report.json")).unwrap())
            .unwrap();
    for key in [
        "newWorkloads",
        "removedWorkloads",
        "reclassified",
        "movedPods",
        "newExemptions",
        "expiredExemptions",
        "removedExemptions",
        "newViolations",
        "fixedViolations",
    ] {
        assert_eq!(r["changes"][key], serde_json::json!([]), "{key}");
    }
}

#[test]
fn every_report_flag_can_be_set_by_environment_variable_and_is_documented() {
    use clap::Args;
    let cmd = residency_guard::report::ReportArgs::augment_args(clap::Command::new("report"));
    let doc = std::fs::read_to_string(root().join("docs/cli.md")).unwrap();
    for arg in cmd.get_arguments() {
        let id = arg.get_id().as_str();
        if id == "help" {
            continue;
        }
        let env = arg
            .get_env()
            .unwrap_or_else(|| panic!("report --{id} has no environment variable"))
            .to_string_lossy()
            .into_owned();
        assert!(env.starts_with("RESIDENCY_GUARD_"), "{id}: {env}");
        let long = arg.get_long().unwrap_or(id);
        assert!(
            doc.contains(&format!("`{env}`")) && doc.contains(&format!("`--{long}`")),
            "report --{long} ({env}) is not in docs/cli.md"
        );
    }
}

#[test]
fn environment_variables_set_report_flags() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .arg("report")
        .current_dir(root())
        .env("LANG", "C")
        .env("RESIDENCY_GUARD_FILENAME", "examples/cluster")
        .env("RESIDENCY_GUARD_NOW", NOW)
        .env("RESIDENCY_GUARD_REPORT_DIR", dir.path())
        .env("RESIDENCY_GUARD_REPORT_FORMATS", "json,csv")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(dir.path().join("residency-report.json").exists());
    assert!(dir.path().join("residency-report.csv").exists());
    assert!(!dir.path().join("residency-report.html").exists());
}

/// `report -f` reads the other egress layers: the JSON (valid against the
/// schema) and the HTML say which layer allowed and which closed each range.
#[test]
fn the_report_shows_which_layer_allowed_and_blocked() {
    let dir = tempfile::tempdir().expect("temp dir");
    let manifests = dir.path().join("in.yaml");
    std::fs::write(
        &manifests,
        "apiVersion: residencyguard.io/v1alpha1\nkind: ResidencyPolicy\nmetadata: {name: p}\nspec: {dataClasses: [personal], action: Deny, egress: {mode: MainlandOnly}}\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {name: api, namespace: pay}\nspec:\n  template:\n    metadata: {labels: {app: api, residencyguard.io/data-class: personal}}\n    spec:\n      nodeSelector: {topology.kubernetes.io/region: cn-north-1}\n      containers: [{name: c, image: i}]\n---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: np, namespace: pay}\nspec:\n  podSelector: {}\n  policyTypes: [Egress]\n  egress: [{to: [{ipBlock: {cidr: 1.0.1.0/24}}]}]\n---\napiVersion: policy.networking.k8s.io/v1alpha1\nkind: AdminNetworkPolicy\nmetadata: {name: open-dns}\nspec:\n  priority: 10\n  subject: {namespaces: {}}\n  egress:\n  - {name: deny-meta, action: Deny, to: [{networks: [169.254.169.254/32]}]}\n  - {name: dns, action: Allow, to: [{networks: [8.8.8.0/24]}]}\n",
    )
    .expect("write manifests");
    let out_dir = dir.path().join("out");
    let out = report_in(&out_dir, &["-f", manifests.to_str().expect("UTF-8")]);
    assert_eq!(schema_errors(&out.json), Vec::<String>::new());
    let text = out.json.to_string();
    for part in [
        "\"cni\":\"kubernetes\"",
        "\"by\":\"AdminNetworkPolicy open-dns\"",
        "\"outcome\":\"denied\"",
        "169.254.169.254/32",
        "\"outcome\":\"allowed\"",
        "8.8.8.0/24",
        "EgressOutsideMainland",
    ] {
        assert!(text.contains(part), "{part} not in the JSON report");
    }
    assert!(out.html.contains("AdminNetworkPolicy open-dns"), "the HTML");
    assert!(out.html.contains("Layer decisions, in order"), "the HTML");
}
