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
    // ...and its record says which claims, PVs and classes, and where.
    let volumes = archive["storage"]["volumes"].as_array().unwrap();
    assert_eq!(archive["storage"]["posture"], "outside");
    assert_eq!(archive["storage"]["checked"], true);
    let claim = volumes.iter().find(|v| v["source"] == "claim").unwrap();
    assert_eq!(claim["claim"], "clinic/data-archive-0");
    assert_eq!(claim["persistentVolume"], "pv-archive-0");
    assert_eq!(claim["storageClass"], "fast");
    assert_eq!(claim["bindingMode"], "Immediate");
    assert_eq!(claim["location"]["standing"], "outside");
    assert_eq!(claim["location"]["key"], "topology.ebs.csi.aws.com/zone");
    assert_eq!(claim["location"]["value"], "ap-east-1a");
    assert_eq!(claim["location"]["region"], "ap-east-1");
    assert_eq!(claim["location"]["country"], "HK");
    assert_eq!(claim["posture"], "outside");
    assert_eq!(claim["findings"][0]["reason"], "boundOutside");
    let template = volumes
        .iter()
        .find(|v| v["source"] == "claimTemplate")
        .unwrap();
    assert_eq!(template["storageClass"], "fast");
    assert_eq!(template["classGuarantee"], "anywhere");
    assert_eq!(template["posture"], "notGuaranteed");
    let ledger = workloads.iter().find(|w| w["name"] == "ledger").unwrap();
    assert_eq!(ledger["storage"]["posture"], "mainland");
    let journal = &ledger["storage"]["volumes"][0];
    assert_eq!(journal["claim"], "payments/ledger-journal");
    assert_eq!(journal["storageClass"], "cn-gp3");
    assert_eq!(journal["defaultClass"], true);
    assert_eq!(journal["bindingMode"], "WaitForFirstConsumer");
    assert_eq!(journal["classGuarantee"], "followsPod");
    // Every governed workload's record describes its volumes: each
    // storage violation is a finding on one of them (same code and
    // field), and a workload without any has posture none.
    for w in workloads {
        let storage = &w["storage"];
        let findings: BTreeSet<(String, String)> = storage["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|v| v["findings"].as_array().unwrap())
            .map(|f| (f["code"].to_string(), f["field"].to_string()))
            .collect();
        for v in w["violations"].as_array().unwrap() {
            let code = v["code"].as_str().unwrap();
            if code.starts_with("Volume") || code.starts_with("Storage") {
                assert!(
                    findings.contains(&(v["code"].to_string(), v["field"].to_string())),
                    "{}: violation {code} at {} is on no volume: {storage:#}",
                    w["name"],
                    v["field"]
                );
            }
        }
        if storage["volumes"].as_array().unwrap().is_empty() {
            assert_eq!(storage["posture"], "none", "{}", w["name"]);
        }
    }
    // Every class with storage findings states a posture other than "not
    // assessed", and it is the most serious of its workloads'.
    let rank = ["none", "mainland", "notGuaranteed", "unknown", "outside"];
    for c in r["summary"]["classes"].as_array().unwrap() {
        let class = c["class"].as_str().unwrap();
        let of_class: Vec<&Value> = workloads
            .iter()
            .filter(|w| w["classes"].as_array().unwrap().iter().any(|x| x == class))
            .collect();
        let has_findings = of_class.iter().any(|w| {
            w["violations"]
                .as_array()
                .unwrap()
                .iter()
                .any(|v| v["code"].as_str().unwrap().starts_with("Volume"))
        });
        let posture = c["storage"].as_str().unwrap();
        assert!(rank.contains(&posture), "{class}: {posture}");
        if has_findings {
            assert!(
                posture != "none" && posture != "mainland",
                "{class} has storage findings but says {posture}"
            );
        }
        let worst = of_class
            .iter()
            .map(|w| {
                rank.iter()
                    .position(|p| w["storage"]["posture"] == *p)
                    .unwrap()
            })
            .max()
            .unwrap();
        assert_eq!(posture, rank[worst], "{class}");
    }
    let health = r["summary"]["classes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["class"] == "health")
        .unwrap();
    assert_eq!(health["storage"], "outside");
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
    // Storage is stated, never "not assessed".
    assert!(!out.html.contains("not assessed") && !out.html.contains("未评估"));
    assert!(out.html.contains("Storage at rest") && out.html.contains("静态存储"));
    assert!(out.html.contains("<code>pv-archive-0</code>"));
    assert!(out.html.contains("stored outside mainland China"));
    assert!(out.html.contains("数据驻留合规报告") && out.html.contains("Data residency report"));

    // The CSV: one row per governed workload and policy, the same names.
    let csv = out.csv.trim_start_matches('\u{feff}');
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    assert_eq!(header[..3], ["kind", "namespace", "name"]);
    assert_eq!(header[header.len() - 2..], ["storagePosture", "volumes"]);
    assert!(
        csv.lines()
            .any(|l| l.starts_with("StatefulSet,clinic,archive,")
                && l.contains("pv pv-archive-0")
                && l.contains("outside (ap-east-1, HK)")),
        "{csv}"
    );
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
        "movedVolumes",
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

/// The example with the archive's PersistentVolume restored in Beijing
/// instead of Hong Kong.
fn example_with_archive_in_beijing(dir: &Path) -> PathBuf {
    let copy = dir.join("cluster");
    std::fs::create_dir_all(&copy).unwrap();
    for entry in std::fs::read_dir(root().join("examples/cluster")).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let text = if path.file_name().unwrap() == "storage.yaml" {
            assert!(text.contains("values: [ap-east-1a]"));
            text.replace("values: [ap-east-1a]", "values: [cn-north-1a]")
        } else {
            text
        };
        std::fs::write(copy.join(path.file_name().unwrap()), text).unwrap();
    }
    copy
}

#[test]
fn compare_reports_moved_and_newly_outside_volumes() {
    let dir = tempfile::tempdir().unwrap();
    let beijing = example_with_archive_in_beijing(dir.path());
    let home = dir.path().join("home");
    let before = report_in(&home, &["-f", beijing.to_str().unwrap()]);
    let archive = |r: &Value| {
        r["workloads"]
            .as_array()
            .unwrap()
            .iter()
            .find(|w| w["name"] == "archive")
            .unwrap()["storage"]["volumes"][0]
            .clone()
    };
    assert_eq!(archive(&before.json)["posture"], "mainland");
    let previous = dir.path().join("previous.json");
    std::fs::write(&previous, &before.json_bytes).unwrap();

    // The volume is now in Hong Kong: moved, and newly outside.
    let abroad = dir.path().join("abroad");
    let after = report_in(
        &abroad,
        &[
            "-f",
            "examples/cluster",
            "--compare",
            previous.to_str().unwrap(),
        ],
    );
    assert!(
        schema_errors(&after.json).is_empty(),
        "{:#?}",
        schema_errors(&after.json)
    );
    let moved = after.json["changes"]["movedVolumes"].as_array().unwrap();
    assert_eq!(moved.len(), 1, "{moved:#?}");
    let m = &moved[0];
    assert_eq!(m["name"], "archive");
    assert_eq!(m["volume"], "data");
    assert_eq!(m["claim"], "clinic/data-archive-0");
    assert_eq!(m["before"]["location"], "cn-north-1");
    assert_eq!(m["before"]["posture"], "mainland");
    assert_eq!(m["after"]["location"], "ap-east-1 (HK)");
    assert_eq!(m["after"]["posture"], "outside");
    assert_eq!(m["after"]["persistentVolume"], "pv-archive-0");
    assert_eq!(m["newlyOutside"], true);
    assert!(after.html.contains("Moved or newly outside volumes"));
    assert!(after.html.contains("newly outside mainland China"));

    // And back home: moved, not newly outside.
    let previous = dir.path().join("abroad.json");
    std::fs::write(&previous, &after.json_bytes).unwrap();
    let back = report_in(
        &dir.path().join("back"),
        &[
            "-f",
            beijing.to_str().unwrap(),
            "--compare",
            previous.to_str().unwrap(),
        ],
    );
    let moved = back.json["changes"]["movedVolumes"].as_array().unwrap();
    assert_eq!(moved.len(), 1, "{moved:#?}");
    assert_eq!(moved[0]["newlyOutside"], false);
    assert_eq!(moved[0]["after"]["posture"], "mainland");
}

/// One storage reason: the objects and the workload's volumes that give
/// it, and what the report's record of that volume must say.
struct StorageCase {
    reason: &'static str,
    objects: &'static str,
    volumes: &'static str,
    code: Option<&'static str>,
    posture: &'static str,
    /// JSON pointers into the volume's record, and their values.
    fields: &'static [(&'static str, &'static str)],
}

const POLICY: &str = "apiVersion: residencyguard.io/v1alpha1\nkind: ResidencyPolicy\nmetadata: {name: pipl}\nspec: {dataClasses: [personal], action: Deny}\n";
const PV_HK: &str = "apiVersion: v1\nkind: PersistentVolume\nmetadata: {name: pv-x}\nspec:\n  capacity: {storage: 1Gi}\n  accessModes: [ReadWriteOnce]\n  csi: {driver: ebs.csi.aws.com, volumeHandle: vol-1}\n  nodeAffinity: {required: {nodeSelectorTerms: [{matchExpressions: [{key: topology.ebs.csi.aws.com/zone, operator: In, values: [ap-east-1a]}]}]}}\n";
const PV_CN: &str = "apiVersion: v1\nkind: PersistentVolume\nmetadata: {name: pv-x, labels: {topology.kubernetes.io/zone: cn-north-1a}}\nspec:\n  capacity: {storage: 1Gi}\n  accessModes: [ReadWriteOnce]\n  csi: {driver: ebs.csi.aws.com, volumeHandle: vol-1}\n";
const CLAIM: &str = "[{name: data, persistentVolumeClaim: {claimName: data}}]";

fn storage_cases() -> Vec<StorageCase> {
    vec![
        StorageCase {
            reason: "boundOutside",
            objects: concat!(
                "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {name: data, namespace: pay}\nspec: {storageClassName: gp3, volumeName: pv-x, accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}}\n---\n",
                "apiVersion: v1\nkind: PersistentVolume\nmetadata: {name: pv-x}\nspec:\n  capacity: {storage: 1Gi}\n  accessModes: [ReadWriteOnce]\n  csi: {driver: ebs.csi.aws.com, volumeHandle: vol-1}\n  nodeAffinity: {required: {nodeSelectorTerms: [{matchExpressions: [{key: topology.ebs.csi.aws.com/zone, operator: In, values: [ap-east-1a]}]}]}}\n"
            ),
            volumes: CLAIM,
            code: Some("VolumeOutsideMainland"),
            posture: "outside",
            fields: &[
                ("/claim", "pay/data"),
                ("/persistentVolume", "pv-x"),
                ("/storageClass", "gp3"),
                (
                    "/topology/0",
                    "topology.ebs.csi.aws.com/zone In [ap-east-1a]",
                ),
                ("/location/standing", "outside"),
                ("/location/key", "topology.ebs.csi.aws.com/zone"),
                ("/location/region", "ap-east-1"),
                ("/location/jurisdiction", "hong-kong"),
                ("/location/country", "HK"),
            ],
        },
        StorageCase {
            reason: "volumeUnknown",
            objects: "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {name: data, namespace: pay}\nspec: {volumeName: pv-gone, accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}}\n",
            volumes: CLAIM,
            code: Some("VolumeOutsideMainland"),
            posture: "unknown",
            fields: &[("/claim", "pay/data"), ("/persistentVolume", "pv-gone")],
        },
        StorageCase {
            reason: "claimNotFound",
            objects: "",
            volumes: CLAIM,
            code: Some("VolumeNotGuaranteed"),
            posture: "unknown",
            fields: &[("/claim", "pay/data"), ("/source", "claim")],
        },
        StorageCase {
            reason: "noDefaultClass",
            objects: "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {name: data, namespace: pay}\nspec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}}\n",
            volumes: CLAIM,
            code: Some("VolumeNotGuaranteed"),
            posture: "notGuaranteed",
            fields: &[("/claim", "pay/data"), ("/defaultClass", "false")],
        },
        StorageCase {
            reason: "preProvisioned",
            objects: "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {name: data, namespace: pay}\nspec: {storageClassName: '', accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}}\n",
            volumes: CLAIM,
            code: Some("VolumeNotGuaranteed"),
            posture: "notGuaranteed",
            fields: &[("/storageClass", "")],
        },
        StorageCase {
            reason: "classUnknown",
            objects: "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {name: data, namespace: pay}\nspec: {storageClassName: ghost, accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}}\n",
            volumes: CLAIM,
            code: Some("VolumeNotGuaranteed"),
            posture: "notGuaranteed",
            fields: &[("/storageClass", "ghost")],
        },
        StorageCase {
            reason: "provisionedAnywhere",
            objects: concat!(
                "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {name: data, namespace: pay}\nspec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}}\n---\n",
                "apiVersion: storage.k8s.io/v1\nkind: StorageClass\nmetadata: {name: fast, annotations: {storageclass.kubernetes.io/is-default-class: 'true'}}\nprovisioner: ebs.csi.aws.com\nvolumeBindingMode: Immediate\n"
            ),
            volumes: CLAIM,
            code: Some("VolumeNotGuaranteed"),
            posture: "notGuaranteed",
            fields: &[
                ("/storageClass", "fast"),
                ("/defaultClass", "true"),
                ("/bindingMode", "Immediate"),
                ("/provisioner", "ebs.csi.aws.com"),
                ("/classGuarantee", "anywhere"),
            ],
        },
        StorageCase {
            reason: "topologyOutside",
            objects: concat!(
                "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {name: data, namespace: pay}\nspec: {storageClassName: hk, accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}}\n---\n",
                "apiVersion: storage.k8s.io/v1\nkind: StorageClass\nmetadata: {name: hk}\nprovisioner: ebs.csi.aws.com\nvolumeBindingMode: Immediate\nallowedTopologies: [{matchLabelExpressions: [{key: topology.kubernetes.io/region, values: [ap-east-1]}]}]\n"
            ),
            volumes: CLAIM,
            code: Some("VolumeNotGuaranteed"),
            posture: "notGuaranteed",
            fields: &[
                ("/storageClass", "hk"),
                ("/classGuarantee", "topology"),
                (
                    "/topology/0",
                    "topology.kubernetes.io/region In [ap-east-1]",
                ),
                ("/location/standing", "outside"),
                ("/location/region", "ap-east-1"),
            ],
        },
        StorageCase {
            reason: "endpointOutside",
            objects: "",
            volumes: "[{name: share, nfs: {server: 8.8.8.8, path: /export}}]",
            code: Some("StorageEndpointOutside"),
            posture: "outside",
            fields: &[
                ("/source", "inline"),
                ("/endpoints/0/field", "nfs.server"),
                ("/endpoints/0/server", "8.8.8.8"),
                ("/endpoints/0/standing", "outside"),
                ("/endpoints/0/country", "US"),
            ],
        },
        StorageCase {
            reason: "objectStore",
            objects: "",
            volumes: "[{name: bucket, csi: {driver: s3.csi.aws.com, volumeAttributes: {bucketName: b}}}]",
            code: Some("VolumeNotGuaranteed"),
            posture: "unknown",
            fields: &[
                ("/driver", "s3.csi.aws.com"),
                ("/store", "Amazon S3 (Mountpoint)"),
            ],
        },
        StorageCase {
            reason: "csiNoServer",
            objects: "",
            volumes: "[{name: share, csi: {driver: nfs.csi.k8s.io, volumeAttributes: {share: /x}}}]",
            code: Some("VolumeNotGuaranteed"),
            posture: "unknown",
            fields: &[("/driver", "nfs.csi.k8s.io")],
        },
        StorageCase {
            reason: "csiDriverUnknown",
            objects: "",
            volumes: "[{name: odd, csi: {driver: odd.example.com}}]",
            code: Some("VolumeNotGuaranteed"),
            posture: "unknown",
            fields: &[("/driver", "odd.example.com")],
        },
        // No finding: mainland, and a server named by host name.
        StorageCase {
            reason: "",
            objects: "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {name: data, namespace: pay}\nspec: {storageClassName: gp3, volumeName: pv-x, accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}}\n",
            volumes: CLAIM,
            code: None,
            posture: "mainland",
            fields: &[
                ("/persistentVolume", "pv-x"),
                ("/topology/0", "topology.kubernetes.io/zone=cn-north-1a"),
                ("/location/standing", "mainland"),
                ("/location/regions/0", "cn-north-1"),
            ],
        },
        StorageCase {
            reason: "",
            objects: "",
            volumes: "[{name: share, nfs: {server: nas.example.com, path: /export}}]",
            code: None,
            posture: "unknown",
            fields: &[("/endpoints/0/standing", "hostName")],
        },
        StorageCase {
            reason: "",
            objects: "",
            volumes: "[{name: scratch, emptyDir: {}}]",
            code: None,
            posture: "none",
            fields: &[],
        },
    ]
}

#[test]
fn every_storage_reason_gives_its_posture_and_evidence() {
    use residency_guard::engine::{AddressSpace, Catalogue, Lang, STORAGE_REASONS, Snapshot};
    use residency_guard::report::{manifests, model};

    let cases = storage_cases();
    let covered: BTreeSet<&str> = cases.iter().map(|c| c.reason).collect();
    for reason in STORAGE_REASONS {
        assert!(covered.contains(reason), "no case for reason {reason}");
    }
    let dir = tempfile::tempdir().unwrap();
    let now = NOW.parse().unwrap();
    for (i, case) in cases.iter().enumerate() {
        let label = format!("case {i} ({:?}, {})", case.reason, case.volumes);
        // A PersistentVolume named pv-x is in Hong Kong for the first
        // case and in Beijing for the mainland one.
        let pv = match (case.reason, case.posture) {
            ("", "mainland") => PV_CN,
            _ => PV_HK,
        };
        let workload = format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: api, namespace: pay}}\nspec:\n  selector: {{matchLabels: {{app: api}}}}\n  template:\n    metadata: {{labels: {{app: api, residencyguard.io/data-class: personal}}}}\n    spec:\n      nodeSelector: {{topology.kubernetes.io/region: cn-north-1}}\n      containers: [{{name: c, image: x}}]\n      volumes: {}\n",
            case.volumes
        );
        let mut docs = vec![POLICY.to_string(), workload];
        if !case.objects.is_empty() {
            docs.push(case.objects.to_string());
        }
        if case.objects.contains("pv-x") && !case.objects.contains("kind: PersistentVolume\n") {
            docs.push(pv.to_string());
        }
        let file = dir.path().join(format!("case-{i}.yaml"));
        std::fs::write(&file, docs.join("---\n")).unwrap();
        let base = Snapshot::new(Catalogue::builtin().clone(), AddressSpace::builtin());
        let inputs = manifests::gather(&[file], base, "default", now, Lang::En)
            .unwrap_or_else(|e| panic!("{label}: {e:?}"));
        let report = model::build(&inputs, now).unwrap_or_else(|_| panic!("{label}"));
        let json = serde_json::to_value(&report).unwrap();
        assert!(
            schema_errors(&json).is_empty(),
            "{label}: {:#?}",
            schema_errors(&json)
        );
        let w = &json["workloads"][0];
        assert_eq!(w["name"], "api", "{label}");
        let storage = &w["storage"];
        assert_eq!(storage["posture"], case.posture, "{label}: {storage:#}");
        assert_eq!(storage["checked"], true, "{label}");
        let volumes = storage["volumes"].as_array().unwrap();
        if case.posture == "none" {
            assert!(volumes.is_empty(), "{label}: {storage:#}");
            continue;
        }
        assert_eq!(volumes.len(), 1, "{label}: {storage:#}");
        let v = &volumes[0];
        assert_eq!(v["posture"], case.posture, "{label}: {v:#}");
        let findings = v["findings"].as_array().unwrap();
        match case.code {
            Some(code) => {
                assert_eq!(findings.len(), 1, "{label}: {v:#}");
                assert_eq!(findings[0]["code"], code, "{label}");
                assert_eq!(findings[0]["reason"], case.reason, "{label}");
                // The violation the finding stands for is in the record.
                assert!(
                    w["violations"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|x| x["code"] == code && x["field"] == findings[0]["field"]),
                    "{label}: {w:#}"
                );
            }
            None => {
                assert!(findings.is_empty(), "{label}: {v:#}");
                assert_eq!(w["violations"], serde_json::json!([]), "{label}");
            }
        }
        for (pointer, want) in case.fields {
            let got = v.pointer(pointer).unwrap_or(&Value::Null);
            let got = match got {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            assert_eq!(got, *want, "{label}: {pointer} in {v:#}");
        }
        // The class summary states the same posture.
        assert_eq!(
            json["summary"]["classes"][0]["storage"], case.posture,
            "{label}"
        );
    }
}

#[test]
fn storage_is_described_even_where_no_policy_checks_it() {
    use residency_guard::engine::{AddressSpace, Catalogue, Lang, Snapshot};
    use residency_guard::report::{manifests, model};

    let dir = tempfile::tempdir().unwrap();
    let now = NOW.parse().unwrap();
    let docs = [
        POLICY.replace("action: Deny}", "action: Deny, storage: {mode: Unchecked}}"),
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: api, namespace: pay}\nspec:\n  selector: {matchLabels: {app: api}}\n  template:\n    metadata: {labels: {app: api, residencyguard.io/data-class: personal}}\n    spec:\n      nodeSelector: {topology.kubernetes.io/region: cn-north-1}\n      containers: [{name: c, image: x}]\n      volumes: [{name: data, persistentVolumeClaim: {claimName: data}}]\n".to_string(),
        "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {name: data, namespace: pay}\nspec: {volumeName: pv-x, accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}}\n".to_string(),
        PV_HK.to_string(),
    ];
    assert!(docs[0].contains("Unchecked"));
    let file = dir.path().join("unchecked.yaml");
    std::fs::write(&file, docs.join("---\n")).unwrap();
    let base = Snapshot::new(Catalogue::builtin().clone(), AddressSpace::builtin());
    let inputs = manifests::gather(&[file], base, "default", now, Lang::En).unwrap();
    let report = serde_json::to_value(model::build(&inputs, now).unwrap()).unwrap();
    let w = &report["workloads"][0];
    assert_eq!(w["violations"], serde_json::json!([]), "{w:#}");
    assert_eq!(w["storage"]["checked"], false);
    assert_eq!(w["storage"]["posture"], "outside");
    assert_eq!(w["storage"]["volumes"][0]["persistentVolume"], "pv-x");
    assert_eq!(report["summary"]["classes"][0]["storage"], "outside");
}

/// The report records, and says on stderr, that the address data is older
/// than allowed (the clock 400 days after the bundled data's own date).
#[test]
fn stale_address_data_is_a_report_warning() {
    let created =
        residency_guard::freshness::stated_date(residency_guard::engine::BUNDLED_MAINLAND_CIDRS)
            .expect("the bundled data states its date");
    let now = created
        .checked_add(jiff::SignedDuration::from_hours(400 * 24))
        .unwrap()
        .to_string();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let out = run(
        &[
            "-f",
            "examples/cluster",
            "--now",
            &now,
            "-o",
            d,
            "--format",
            "json",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!(
            "warning: The mainland-China address data (bundled) is dated {}, 400 days ago",
            created.strftime("%Y-%m-%d")
        )),
        "{err}"
    );
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("residency-report.json")).unwrap())
            .unwrap();
    assert!(
        report
            .to_string()
            .contains("older than the 180 days allowed"),
        "the report's warnings: {}",
        report["warnings"]
    );
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
