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

// ---- Issue 17: input kubectl accepts, every error at once, env flags, JSON.

fn fixture(path: &str) -> String {
    format!("{}/tests/fixtures/{path}", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn yaml_merge_keys_are_accepted_like_kubectl() {
    let out = run(
        &[
            "check",
            "-f",
            &fixture("merge-keys.yaml"),
            "--now",
            NOW,
            "-o",
            "json",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let classes = |name: &str| {
        v["results"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["verdict"]["workload"]["name"] == name)
            .unwrap_or_else(|| panic!("no {name}: {v}"))["verdict"]["classes"]
            .clone()
    };
    // The merged key is overridden by the template's own; both judged.
    assert_eq!(
        classes("merged"),
        serde_json::json!(["personal", "financial"])
    );
    assert_eq!(classes("merged-list"), serde_json::json!(["financial"]));
    assert_eq!(v["summary"]["compliant"], 2, "{v}");
}

/// Every error in tests/fixtures/bad-input/, each naming its file and
/// document, in one run (the CronJob's class used to appear only once
/// everything before it was fixed).
const BAD_INPUT_EN: &[&str] = &[
    "a-syntax.yaml (document 2): not valid YAML or JSON",
    "b-policies.yaml (document 1): ResidencyPolicy medical-data is invalid: spec.dataClasses[1]: \"medical\" is not a data class; valid classes are: personal, credit, financial, health, map, government, accounting, genetic, important",
    "b-policies.yaml (document 2): ResidencyPolicy bad-selector is invalid: spec.namespaceSelector.matchLabels: \"bad key!\" is not a valid label key",
    "b-policies.yaml (document 3): ResidencyPolicy bad-exemption is invalid: spec.placement.allowedNodes.nodeSelectorTerms[0]: names region cn-hongkong, which is in Hong Kong; nodes there",
    "b-policies.yaml (document 3): ResidencyPolicy bad-exemption is invalid: spec.exemptions[0].expires: \"2026-02-30\" is an impossible date: February 2026 has 28 days",
    "c-networkpolicies.yaml (document 1): NetworkPolicy app/octet-too-big is invalid (the API server would refuse it): spec.egress[0].to[0].ipBlock.cidr: \"300.0.0.0/8\" is not a valid CIDR",
    "c-networkpolicies.yaml (document 2): NetworkPolicy app/bare-address is invalid (the API server would refuse it): spec.egress[0].to[0].ipBlock.cidr: \"8.8.8.8\" is an address, not a CIDR: write 8.8.8.8/32",
    "c-networkpolicies.yaml (document 3): NetworkPolicy app/empty-block is invalid (the API server would refuse it): spec.egress[0].to[0].ipBlock.cidr: cidr is required",
    "d-workloads.yaml (document 1): CronJob app/nightly: spec.jobTemplate.spec.template.metadata.labels: label residencyguard.io/data-class=\"personal.medical\" names unknown data class \"medical\"; valid classes are: personal, credit",
];

const BAD_INPUT_ZH: &[&str] = &[
    "ResidencyPolicy medical-data 无效：spec.dataClasses[1]：\"medical\" 不是有效的数据类别；有效的类别为：personal",
    "ResidencyPolicy bad-selector 无效：spec.namespaceSelector.matchLabels：\"bad key!\" 不是有效的标签键",
    "列出了地域 cn-hongkong，该地域位于中国香港；那里的节点永远不算中国大陆",
    "\"2026-02-30\" 是不存在的日期：2026 年 2 月只有 28 天",
    "NetworkPolicy app/octet-too-big 无效（API server 会拒绝它）：spec.egress[0].to[0].ipBlock.cidr：\"300.0.0.0/8\" 不是有效的 CIDR",
    "\"8.8.8.8\" 是地址而不是 CIDR：单个地址请写成 8.8.8.8/32",
    "必须填写 cidr",
    "CronJob app/nightly：spec.jobTemplate.spec.template.metadata.labels：标签 residencyguard.io/data-class=\"personal.medical\" 含有未知的数据类别 \"medical\"",
];

#[test]
fn every_input_error_is_reported_in_one_run() {
    let dir = fixture("bad-input");
    let out = run(&["check", "-f", &dir, "--now", NOW], None);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stdout));
    assert!(
        out.stdout.is_empty(),
        "nothing on stdout: {}",
        text(&out.stdout)
    );
    let err = text(&out.stderr);
    for needle in BAD_INPUT_EN {
        assert!(err.contains(needle), "expected {needle:?} in:\n{err}");
    }
    assert_eq!(err.lines().count(), BAD_INPUT_EN.len(), "{err}");
    // Malformed ipBlocks are bad input, never reported as EgressAllowsAll.
    assert!(
        !err.contains("EgressAllowsAll") && !err.contains("give the rule"),
        "{err}"
    );

    let out = run(
        &["check", "-f", &dir, "--now", NOW, "--lang", "zh-CN"],
        None,
    );
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    for needle in BAD_INPUT_ZH {
        assert!(err.contains(needle), "expected {needle:?} in:\n{err}");
    }
}

#[test]
fn a_malformed_ip_block_is_bad_input_naming_the_field() {
    let cases = [
        (
            "{cidr: 300.0.0.0/8}",
            "ipBlock.cidr: \"300.0.0.0/8\" is not a valid CIDR",
        ),
        ("{cidr: 8.8.8.8}", "write 8.8.8.8/32 for that one address"),
        ("{}", "ipBlock.cidr: cidr is required"),
        (
            "{cidr: 10.0.0.0/8, except: [10.0.0.0/8]}",
            "ipBlock.except[0]: \"10.0.0.0/8\" must be a strict subset of cidr 10.0.0.0/8",
        ),
        (
            "{cidr: 10.0.0.0/8, except: [11.0.0.0/16]}",
            "must be a strict subset of cidr",
        ),
        ("{cidr: \"2001:db8::/129\"}", "is not a valid CIDR"),
    ];
    for (block, needle) in cases {
        let doc = format!(
            "{POLICY}---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: np, namespace: a}}\nspec: {{podSelector: {{}}, policyTypes: [Egress], egress: [{{to: [{{ipBlock: {block}}}]}}]}}\n"
        );
        let out = check_stdin(&doc);
        assert_bad_input(&out, needle);
        assert_bad_input(
            &out,
            "NetworkPolicy a/np is invalid (the API server would refuse it): spec.egress[0].to[0]",
        );
    }
    // Peers the API server refuses, and what it accepts.
    let peer = |p: &str| {
        format!(
            "{POLICY}---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: np, namespace: a}}\nspec: {{podSelector: {{}}, policyTypes: [Egress], egress: [{{to: [{p}]}}]}}\n"
        )
    };
    assert_bad_input(
        &check_stdin(&peer("{}")),
        "spec.egress[0].to[0]: a peer must set podSelector, namespaceSelector or ipBlock",
    );
    assert_bad_input(
        &check_stdin(&peer("{ipBlock: {cidr: 1.2.3.0/24}, podSelector: {}}")),
        "a peer may not set both ipBlock and a selector",
    );
    assert_bad_input(
        &check_stdin(&peer("{podSelector: {matchLabels: {\"bad key!\": x}}}")),
        "spec.egress[0].to[0].podSelector.matchLabels: \"bad key!\" is not a valid label key",
    );
    for ok in [
        "{ipBlock: {cidr: 010.1.0.0/16}}",
        "{ipBlock: {cidr: 10.1.2.3/16, except: [10.1.0.0/24]}}",
        "{ipBlock: {cidr: \"240e::/20\"}}",
    ] {
        let out = check_stdin(&peer(ok));
        assert_eq!(out.status.code(), Some(0), "{ok}: {}", text(&out.stderr));
    }
}

#[test]
fn every_check_flag_can_be_set_by_environment_variable() {
    use clap::Args;
    let cmd = residency_guard::cli::CheckArgs::augment_args(clap::Command::new("check"));
    for arg in cmd.get_arguments() {
        let id = arg.get_id().as_str();
        if id == "help" {
            continue;
        }
        let env = arg
            .get_env()
            .unwrap_or_else(|| panic!("check --{id} has no environment variable"));
        let env = env.to_string_lossy();
        assert!(env.starts_with("RESIDENCY_GUARD_"), "{id}: {env}");
        // Documented where the README sends people.
        let doc =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/cli.md")).unwrap();
        assert!(
            doc.contains(&format!("`{env}`")),
            "{env} is not in docs/cli.md"
        );
    }
}

#[test]
fn environment_variables_set_check_flags() {
    let fx = |extra: &[(&str, &str)]| {
        let mut cmd = Command::new(BIN);
        cmd.args(["check", "-o", "json"])
            .env("LANG", "C")
            .env("RESIDENCY_GUARD_FILENAME", "examples/cluster");
        for (k, v) in extra {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", text(&out.stderr)));
        v["results"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["verdict"]["workload"]["name"] == "fx-rates")
            .unwrap()["verdict"]["action"]
            .clone()
    };
    // RESIDENCY_GUARD_NOW moves the clock past the exemption's expiry.
    assert_eq!(
        fx(&[("RESIDENCY_GUARD_NOW", "2027-06-30T15:59:59Z")]),
        serde_json::Value::Null
    );
    assert_eq!(
        fx(&[("RESIDENCY_GUARD_NOW", "2027-06-30T16:00:00Z")]),
        "Deny"
    );

    let out = Command::new(BIN)
        .args(["check", "-f", "-"])
        .env("LANG", "C")
        .env("RESIDENCY_GUARD_NOW", NOW)
        .env("RESIDENCY_GUARD_QUIET", "true")
        .env("RESIDENCY_GUARD_DEFAULT_NAMESPACE", "elsewhere")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            let doc = format!(
                "{POLICY}---\napiVersion: v1\nkind: Pod\nmetadata: {{name: ok, labels: {{residencyguard.io/data-class: personal}}}}\nspec: {{nodeSelector: {{topology.kubernetes.io/region: cn-north-1}}}}\n---\napiVersion: v1\nkind: Pod\nmetadata: {{name: bad, labels: {{residencyguard.io/data-class: personal}}}}\nspec: {{}}\n"
            );
            c.stdin.take().unwrap().write_all(doc.as_bytes())?;
            c.wait_with_output()
        })
        .unwrap();
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("DENY  Pod elsewhere/bad"), "{stdout}");
    assert!(
        !stdout.contains("elsewhere/ok"),
        "quiet hides compliant: {stdout}"
    );
}

#[test]
fn the_json_report_is_camel_case_throughout() {
    fn walk(v: &serde_json::Value, path: &str, bad: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, x) in m {
                    // zh-CN is a language tag, not a field name.
                    if k.contains('_') || (k.contains('-') && k != "zh-CN") {
                        bad.push(format!("{path}.{k}"));
                    }
                    walk(x, &format!("{path}.{k}"), bad);
                }
            }
            serde_json::Value::Array(a) => {
                for (i, x) in a.iter().enumerate() {
                    walk(x, &format!("{path}[{i}]"), bad);
                }
            }
            _ => {}
        }
    }
    for input in ["examples/cluster", &fixture("messages.yaml")] {
        let out = run(&["check", "-f", input, "--now", NOW, "-o", "json"], None);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let mut bad = Vec::new();
        walk(&v, "", &mut bad);
        assert!(bad.is_empty(), "{input}: not camelCase: {bad:?}");
    }
    // The providerID contradiction, spelt as the rest of the schema.
    let out = run(
        &[
            "check",
            "-f",
            &fixture("messages.yaml"),
            "--now",
            NOW,
            "-o",
            "json",
        ],
        None,
    );
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("\"providerRegion\": \"ap-east-1\""),
        "{stdout}"
    );
    assert!(stdout.contains("\"allowedBy\": ["), "{stdout}");
}

/// The example outputs in README.md and docs/cli.md are what the binary
/// prints (scripts/render-docs.sh regenerates them; scripts/test.sh runs
/// the same check).
#[test]
fn documented_example_outputs_match_the_binary() {
    let out = Command::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/scripts/render-docs.sh"
    ))
    .arg("--check")
    .env("RESIDENCY_GUARD_BIN", BIN)
    .current_dir(env!("CARGO_MANIFEST_DIR"))
    .output()
    .expect("run scripts/render-docs.sh");
    assert!(
        out.status.success(),
        "the docs' example outputs are stale; run scripts/render-docs.sh\n{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
}

/// `check` says when the mainland address data is older than
/// `--max-address-data-age-days` (by the date its header states), in the
/// text and JSON outputs and in both languages, without changing the exit
/// code; 0 turns the check off. The clock is set 400 days after the
/// bundled data's own date, whichever data is bundled.
#[test]
fn stale_address_data_is_reported_and_the_limit_is_a_flag() {
    let created =
        residency_guard::freshness::stated_date(residency_guard::engine::BUNDLED_MAINLAND_CIDRS)
            .expect("the bundled data states its date");
    let now = created
        .checked_add(jiff::SignedDuration::from_hours(400 * 24))
        .unwrap()
        .to_string();
    let date = created.strftime("%Y-%m-%d").to_string();
    let args = |extra: &[&str]| -> Vec<String> {
        ["check", "-f", "examples/cluster", "--now", now.as_str()]
            .iter()
            .chain(extra)
            .map(|s| s.to_string())
            .collect()
    };
    let run_with = |extra: &[&str]| {
        let owned = args(extra);
        let refs: Vec<&str> = owned.iter().map(String::as_str).collect();
        run(&refs, None)
    };
    let out = run_with(&["--lang", "en"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "the verdicts decide the exit code"
    );
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains(&format!(
            "warning: The mainland-China address data (bundled) is dated {date}, 400 days ago, older than the 180 days allowed"
        )),
        "{stdout}"
    );
    let zh = text(&run_with(&["--lang", "zh-CN"]).stdout);
    assert!(
        zh.contains(&format!(
            "中国大陆地址数据（bundled）的日期为 {date}，距今 400 天"
        )),
        "{zh}"
    );

    let json = run_with(&["-o", "json"]);
    let report: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    let warnings = report["dataWarnings"].as_array().expect("dataWarnings");
    assert_eq!(warnings.len(), 1, "{warnings:?}");

    // Within the limit, or with the check off: nothing said.
    for extra in [
        &["--max-address-data-age-days", "401"][..],
        &["--max-address-data-age-days", "0"][..],
    ] {
        let out = run_with(extra);
        assert!(
            !text(&out.stdout).contains("The mainland-China address data"),
            "{extra:?}: {}",
            text(&out.stdout)
        );
    }
}

/// Calico NetworkSets in the manifests are read: a Calico rule whose
/// destination selector selects a set holding an address abroad opens
/// egress there (issue 27), and the evidence names the set.
#[test]
fn calico_network_sets_in_manifests_are_read() {
    const EGRESS_POLICY: &str = "apiVersion: residencyguard.io/v1alpha1\nkind: ResidencyPolicy\nmetadata: {name: p}\nspec: {dataClasses: [personal], action: Deny, egress: {mode: MainlandOnly}}\n";
    const DEPLOYMENT: &str = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: api, namespace: pay}\nspec:\n  template:\n    metadata: {labels: {app: api, residencyguard.io/data-class: personal}}\n    spec:\n      nodeSelector: {topology.kubernetes.io/region: cn-north-1}\n      containers: [{name: c, image: i}]\n";
    const TO_SETS: &str = "apiVersion: crd.projectcalico.org/v1\nkind: NetworkPolicy\nmetadata: {name: to-sets, namespace: pay}\nspec:\n  selector: app == 'api'\n  types: [Egress]\n  egress: [{action: Allow, destination: {selector: role == 'egress'}}]\n";
    const ABROAD: &str = "apiVersion: crd.projectcalico.org/v1\nkind: NetworkSet\nmetadata: {name: out, namespace: pay, labels: {role: egress}}\nspec: {nets: [8.8.8.0/24]}\n";
    const MAINLAND: &str = "apiVersion: crd.projectcalico.org/v1\nkind: NetworkSet\nmetadata: {name: cn, namespace: pay, labels: {role: egress}}\nspec: {nets: [1.0.1.0/24]}\n";
    const GLOBAL: &str = "apiVersion: crd.projectcalico.org/v1\nkind: GlobalNetworkSet\nmetadata: {name: world, labels: {role: egress}}\nspec: {nets: [0.0.0.0/0]}\n";
    let docs = |parts: &[&str]| parts.join("---\n");

    // The set of the policy's namespace is in the mainland: admitted.
    let out = check_stdin(&docs(&[EGRESS_POLICY, DEPLOYMENT, TO_SETS, MAINLAND]));
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    // A GlobalNetworkSet is not selected by a namespaced policy's selector.
    let out = check_stdin(&docs(&[
        EGRESS_POLICY,
        DEPLOYMENT,
        TO_SETS,
        MAINLAND,
        GLOBAL,
    ]));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
    // A set abroad in the namespace: denied, naming the set.
    let out = check_stdin(&docs(&[EGRESS_POLICY, DEPLOYMENT, TO_SETS, ABROAD]));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("EgressOutsideMainland"), "{stdout}");
    assert!(stdout.contains("NetworkSet pay/out"), "{stdout}");
}

/// Cilium, Calico and AdminNetworkPolicy objects in the manifests are read,
/// and which CNI enforces them is detected from the kinds present.
#[test]
fn policy_layers_in_manifests_are_read_and_the_cni_detected() {
    const EGRESS_POLICY: &str = "apiVersion: residencyguard.io/v1alpha1\nkind: ResidencyPolicy\nmetadata: {name: p}\nspec: {dataClasses: [personal], action: Deny, egress: {mode: MainlandOnly}}\n";
    const DEPLOYMENT: &str = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: api, namespace: pay}\nspec:\n  template:\n    metadata: {labels: {app: api, residencyguard.io/data-class: personal}}\n    spec:\n      nodeSelector: {topology.kubernetes.io/region: cn-north-1}\n      containers: [{name: c, image: i}]\n";
    const CNP: &str = "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: to-cn, namespace: pay}\nspec:\n  endpointSelector: {matchLabels: {app: api}}\n  egress: [{toCIDR: [1.0.1.0/24]}]\n";
    const CCNP: &str = "apiVersion: cilium.io/v2\nkind: CiliumClusterwideNetworkPolicy\nmetadata: {name: open}\nspec:\n  endpointSelector: {}\n  egress: [{toCIDRSet: [{cidr: 0.0.0.0/0}]}]\n";
    const GNP: &str = "apiVersion: crd.projectcalico.org/v1\nkind: GlobalNetworkPolicy\nmetadata: {name: g}\nspec: {selector: all(), types: [Egress], egress: [{action: Deny}]}\n";
    let docs = |parts: &[&str]| parts.join("---\n");

    // Restricted only by a CiliumNetworkPolicy to a mainland CIDR: admitted.
    let out = check_stdin(&docs(&[EGRESS_POLICY, DEPLOYMENT, CNP]));
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    // Opened to 0.0.0.0/0 by a CiliumClusterwideNetworkPolicy: denied.
    let out = check_stdin(&docs(&[EGRESS_POLICY, DEPLOYMENT, CNP, CCNP]));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("EgressOutsideMainland"), "{stdout}");
    assert!(
        stdout.contains("CiliumClusterwideNetworkPolicy open"),
        "{stdout}"
    );
    // Told the cluster is not Cilium, the Cilium objects do not count.
    let all = docs(&[EGRESS_POLICY, DEPLOYMENT, CNP]);
    let out = run(
        &[
            "check",
            "-f",
            "-",
            "--now",
            NOW,
            "--egress-cni",
            "kubernetes",
        ],
        Some(all.as_bytes()),
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("EgressUnrestricted"));
    // Cilium enforcement never: nothing is enforced.
    let out = run(
        &[
            "check",
            "-f",
            "-",
            "--now",
            NOW,
            "--cilium-enforcement",
            "never",
        ],
        Some(all.as_bytes()),
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    // Both Cilium and Calico objects: the user must say which enforces.
    assert_bad_input(
        &check_stdin(&docs(&[EGRESS_POLICY, DEPLOYMENT, CNP, GNP])),
        "--egress-cni",
    );
    let both = docs(&[EGRESS_POLICY, DEPLOYMENT, CNP, GNP]);
    let out = run(
        &["check", "-f", "-", "--now", NOW, "--egress-cni", "calico"],
        Some(both.as_bytes()),
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert_bad_input(
        &run(&["check", "-f", "-", "--egress-cni", "weave"], Some(b"")),
        "weave",
    );
}
