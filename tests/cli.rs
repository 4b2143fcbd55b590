//! The `check` command as a user runs it: exit codes are a contract
//! (0 no Deny violation, 1 Deny violation, 2 bad input), bad input never
//! panics, and every error names the file and document.

use std::io::Write;
use std::process::{Command, Output, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_residency-guard");
const NOW: &str = "2026-11-23T00:00:00Z";

const POLICY: &str = "apiVersion: residencyguard.io/v1alpha1\nkind: ResidencyPolicy\nmetadata: {name: p}\nspec: {dataClasses: [personal], action: Deny}\n";

fn run(args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
        .env("LANG", "C")
        .env_remove("LC_ALL")
        .env_remove("LC_MESSAGES")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn residency-guard");
    let mut pipe = child.stdin.take().expect("stdin");
    let input = stdin.unwrap_or_default().to_vec();
    // Write from a thread so a large input cannot deadlock against output.
    let writer = std::thread::spawn(move || {
        let _ = pipe.write_all(&input);
    });
    let out = child.wait_with_output().expect("wait");
    let _ = writer.join();
    out
}

fn check_stdin(doc: &str) -> Output {
    run(&["check", "-f", "-", "--now", NOW], Some(doc.as_bytes()))
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn assert_bad_input(out: &Output, needle: &str) {
    let err = text(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(2),
        "stderr: {err}\nstdout: {}",
        text(&out.stdout)
    );
    assert!(err.contains(needle), "expected {needle:?} in stderr: {err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn bundled_example_exits_1_and_prints_the_report() {
    let out = run(&["check", "-f", "examples/cluster", "--now", NOW], None);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("DENY  Deployment payments/api"), "{stdout}");
    assert!(
        stdout.contains("PASS  Deployment payments/ledger"),
        "{stdout}"
    );
    assert!(stdout.contains("EgressOutsideMainland"), "{stdout}");
}

#[test]
fn compliant_and_warn_only_inputs_exit_0() {
    let good = format!(
        "{POLICY}---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: ok, namespace: a}}\nspec:\n  template:\n    metadata: {{labels: {{residencyguard.io/data-class: personal}}}}\n    spec: {{nodeSelector: {{topology.kubernetes.io/region: cn-north-1}}}}\n"
    );
    assert_eq!(check_stdin(&good).status.code(), Some(0));
    let warn = POLICY.replace("Deny", "Warn")
        + "---\napiVersion: v1\nkind: Pod\nmetadata: {name: w, labels: {residencyguard.io/data-class: personal}}\nspec: {containers: []}\n";
    let out = check_stdin(&warn);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("WARN"), "{}", text(&out.stdout));
}

#[test]
fn truncated_yaml_is_exit_2_with_the_document_number() {
    let doc = format!("{POLICY}---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: x\n");
    assert_bad_input(&check_stdin(&doc), "<stdin> (document 2): not valid YAML");
}

#[test]
fn wrong_types_are_exit_2_naming_the_field() {
    let doc = format!(
        "{POLICY}---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: x}}\nspec: {{template: {{spec: {{nodeSelector: [a, b]}}}}}}\n"
    );
    assert_bad_input(&check_stdin(&doc), "spec.template.spec.nodeSelector");
    let bad_policy = "apiVersion: residencyguard.io/v1alpha1\nkind: ResidencyPolicy\nmetadata: {name: p}\nspec: {dataClasses: [personal], action: Block}\n";
    assert_bad_input(&check_stdin(bad_policy), "spec.action");
    let scalar = "just a string\n";
    assert_bad_input(&check_stdin(scalar), "expected a Kubernetes object");
}

#[test]
fn unknown_kinds_and_classes_are_exit_2() {
    let typo = "apiVersion: apps/v1\nkind: Deploymnet\nmetadata: {name: x}\n";
    assert_bad_input(&check_stdin(typo), "unknown kind \"Deploymnet\" in apps/v1");
    let no_kind = "metadata: {name: x}\n";
    assert_bad_input(&check_stdin(no_kind), "apiVersion and kind are required");
    let bad_class = format!(
        "{POLICY}---\napiVersion: v1\nkind: Pod\nmetadata: {{name: x, labels: {{residencyguard.io/data-class: personal.medical}}}}\nspec: {{}}\n"
    );
    let out = check_stdin(&bad_class);
    assert_bad_input(&out, "unknown data class \"medical\"");
    assert!(
        text(&out.stderr).contains("valid classes are: personal, credit"),
        "{}",
        text(&out.stderr)
    );
    // Kinds outside Kubernetes' own groups (CRDs) are skipped, not errors.
    let crd_object = format!(
        "{POLICY}---\napiVersion: cert-manager.io/v1\nkind: Certificate\nmetadata: {{name: c}}\n"
    );
    assert_eq!(check_stdin(&crd_object).status.code(), Some(0));
}

#[test]
fn invalid_policies_are_exit_2_naming_the_field() {
    let doc = "apiVersion: residencyguard.io/v1alpha1\nkind: ResidencyPolicy\nmetadata: {name: p}\nspec:\n  dataClasses: [personal]\n  egress: {mode: MainlandOnly, allowedCIDRs: [not-a-cidr]}\n  exemptions:\n  - {selector: {}, basis: Certification, reference: r, approvedBy: a, expires: 2027-02-30}\n";
    let out = check_stdin(doc);
    assert_bad_input(&out, "spec.egress.allowedCIDRs[0]");
    let err = text(&out.stderr);
    assert!(err.contains("spec.exemptions[0].selector"), "{err}");
    assert!(err.contains("spec.exemptions[0].expires"), "{err}");
}

#[test]
fn huge_documents_do_not_panic() {
    // A 20 MB document: parsed or refused, but never a crash.
    let big_label = "x".repeat(20 * 1024 * 1024);
    let doc = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: big}}\ndata: {{blob: {big_label}}}\n"
    );
    let out = check_stdin(&doc);
    assert!(
        matches!(out.status.code(), Some(0 | 2)),
        "{}",
        text(&out.stderr)
    );
    assert!(!text(&out.stderr).contains("panicked"));
    // Deep nesting is refused with a message.
    let deep = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: deep}}\ndata: {}{}\n",
        "[".repeat(5000),
        "]".repeat(5000)
    );
    let out = check_stdin(&deep);
    assert_bad_input(&out, "document 1");
    // Over the input limit: refused before parsing.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("huge.yaml");
    let file = std::fs::File::create(&path).unwrap();
    file.set_len(65 * 1024 * 1024).unwrap();
    let out = run(&["check", "-f", path.to_str().unwrap()], None);
    assert_bad_input(&out, "larger than the");
}

#[test]
fn missing_files_and_bad_flags_are_exit_2() {
    assert_bad_input(
        &run(&["check", "-f", "/nonexistent/x.yaml"], None),
        "no such file or directory",
    );
    let out = run(&["check", "-f", "examples/cluster", "--lang", "fr"], None);
    assert_bad_input(&out, "--lang");
    let out = run(&["check"], None);
    assert_eq!(
        out.status.code(),
        Some(2),
        "clap usage errors are exit 2 too"
    );
}

#[test]
fn json_output_follows_the_documented_schema() {
    let out = run(
        &[
            "check",
            "-f",
            "examples/cluster",
            "--now",
            NOW,
            "-o",
            "json",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("valid JSON");
    assert_eq!(
        v["schemaVersion"],
        "residencyguard.io/check-report/v1alpha1"
    );
    assert!(v["summary"]["denied"].as_u64().unwrap() >= 1);
    let first = &v["results"][0];
    assert_eq!(first["verdict"]["workload"]["name"], "api");
    let violation = &first["verdict"]["policies"][0]["violations"][0];
    assert_eq!(violation["code"], "PlacementNotGuaranteed");
    assert!(
        violation["message"]["zh-CN"]
            .as_str()
            .unwrap()
            .contains("修复")
    );
    assert!(violation["evidence"]["outsideNodes"].is_array());
}

#[test]
fn language_follows_the_flag_and_the_locale() {
    let out = run(
        &[
            "check",
            "-f",
            "examples/cluster",
            "--now",
            NOW,
            "--lang",
            "zh-CN",
        ],
        None,
    );
    assert!(text(&out.stdout).contains("修复"), "{}", text(&out.stdout));
    let mut cmd = Command::new(BIN);
    let out = cmd
        .args(["check", "-f", "examples/cluster", "--now", NOW])
        .env("LANG", "zh_CN.UTF-8")
        .env_remove("LC_ALL")
        .env_remove("LC_MESSAGES")
        .env_remove("RESIDENCY_GUARD_LANG")
        .output()
        .unwrap();
    assert!(text(&out.stdout).contains("拒绝"), "{}", text(&out.stdout));
}

#[test]
fn exemption_expiry_follows_now() {
    let before = run(
        &[
            "check",
            "-f",
            "examples/cluster",
            "--now",
            "2027-06-30T15:59:59Z",
            "-o",
            "json",
        ],
        None,
    );
    let after = run(
        &[
            "check",
            "-f",
            "examples/cluster",
            "--now",
            "2027-06-30T16:00:00Z",
            "-o",
            "json",
        ],
        None,
    );
    let fx = |o: &Output| {
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        v["results"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["verdict"]["workload"]["name"] == "fx-rates")
            .unwrap()["verdict"]
            .clone()
    };
    // The exemption lapses at the end of 2027-06-30 China Standard Time (16:00 UTC).
    assert!(fx(&before).get("action").is_none(), "{}", fx(&before));
    assert_eq!(fx(&after)["action"], "Deny");
}

#[test]
fn committed_crd_matches_the_rust_types() {
    let out = run(&["crdgen", "--check"], None);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}
