//! The image that `scripts/build-image.sh` builds offline (the e2e suite's
//! Pods mode and CI run it) is the Dockerfile's image: same user,
//! entrypoint, command, environment and labels, and it holds every shared
//! library the binary links against at the path the loader looks for it.
//!
//! Builds the image from this test's own binary with the cluster kit's
//! `image-build` ($RESIDENCY_GUARD_CLUSTER_KIT, ../shared/cluster or
//! /work/shared/cluster). Without a kit the test prints that it is skipped,
//! except under `CI=true`, where that is a failure.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// What the final stage of a Dockerfile says about the image's config.
#[derive(Debug, Default, PartialEq)]
struct Stage {
    user: Option<String>,
    entrypoint: Option<Vec<String>>,
    cmd: Option<Vec<String>>,
    env: BTreeMap<String, String>,
    labels: BTreeMap<String, String>,
}

/// `key=value` pairs, values optionally double-quoted (ENV and LABEL).
fn pairs(text: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut rest = text.trim();
    while !rest.is_empty() {
        let Some((key, after)) = rest.split_once('=') else {
            panic!("not a key=value pair: {rest}");
        };
        let (value, next) = if let Some(quoted) = after.strip_prefix('"') {
            let end = quoted.find('"').expect("a closing quote");
            (&quoted[..end], &quoted[end + 1..])
        } else {
            after.split_once(char::is_whitespace).unwrap_or((after, ""))
        };
        out.insert(key.trim().to_string(), value.to_string());
        rest = next.trim();
    }
    out
}

fn parse_dockerfile(text: &str) -> Stage {
    let joined = text.replace("\\\n", " ");
    let mut stage = Stage::default();
    for line in joined.lines().map(str::trim) {
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let (instruction, args) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
        let args = args.trim();
        let exec_form =
            || serde_json::from_str::<Vec<String>>(args).expect("ENTRYPOINT/CMD in exec form");
        match instruction.to_ascii_uppercase().as_str() {
            "FROM" => stage = Stage::default(),
            "USER" => stage.user = Some(args.to_string()),
            "ENTRYPOINT" => stage.entrypoint = Some(exec_form()),
            "CMD" => stage.cmd = Some(exec_form()),
            "ENV" => stage.env.extend(pairs(args)),
            "LABEL" => stage.labels.extend(pairs(args)),
            _ => {}
        }
    }
    stage
}

/// The environment the Dockerfile's base (gcr.io/distroless/cc-debian12)
/// sets and the final stage inherits.
const BASE_ENV: &[(&str, &str)] = &[
    (
        "PATH",
        "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    ),
    ("SSL_CERT_FILE", "/etc/ssl/certs/ca-certificates.crt"),
];

fn kit() -> Option<PathBuf> {
    let candidates = [
        std::env::var_os("RESIDENCY_GUARD_CLUSTER_KIT").map(PathBuf::from),
        Some(root().join("../shared/cluster")),
        Some(PathBuf::from("/work/shared/cluster")),
    ];
    candidates
        .into_iter()
        .flatten()
        .find(|k| k.join("image-build").is_file())
}

fn read_json(dir: &Path, path: &str) -> Value {
    let text = std::fs::read_to_string(dir.join(path)).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn blob_path(descriptor: &Value) -> String {
    let digest = descriptor["digest"].as_str().expect("a digest");
    format!("blobs/sha256/{}", digest.trim_start_matches("sha256:"))
}

fn strings(v: &Value) -> Option<Vec<String>> {
    v.as_array().map(|a| {
        a.iter()
            .map(|s| s.as_str().unwrap_or_default().to_string())
            .collect()
    })
}

#[test]
fn the_dockerfile_parser_reads_the_final_stage_only() {
    let stage = parse_dockerfile(
        "FROM a AS build\nUSER 1\nENV X=1\nFROM b\nLABEL a=\"x y\" \\\n  b=z\nENV K=v L=\"w w\"\nUSER 65532:65532\nENTRYPOINT [\"/e\"]\nCMD [\"serve\"]\n",
    );
    assert_eq!(stage.user.as_deref(), Some("65532:65532"));
    assert_eq!(stage.entrypoint, Some(vec!["/e".to_string()]));
    assert_eq!(stage.cmd, Some(vec!["serve".to_string()]));
    assert_eq!(
        stage.env,
        BTreeMap::from([("K".into(), "v".into()), ("L".into(), "w w".into())])
    );
    assert_eq!(
        stage.labels,
        BTreeMap::from([("a".into(), "x y".into()), ("b".into(), "z".into())])
    );
}

#[test]
fn the_offline_image_is_the_dockerfiles_image() {
    let Some(kit) = kit() else {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("CI=true but no cluster kit with image-build was found");
        }
        println!("skipped: no cluster kit with image-build (RESIDENCY_GUARD_CLUSTER_KIT)");
        return;
    };
    let dir = tempfile::tempdir().expect("a temporary directory");
    let tar = dir.path().join("image.tar");
    let binary = env!("CARGO_BIN_EXE_residency-guard");
    let out = Command::new(root().join("scripts/build-image.sh"))
        .args([
            "--binary",
            binary,
            "--ref",
            "localhost/residency-guard:test",
        ])
        .arg("--out")
        .arg(&tar)
        .env("RESIDENCY_GUARD_CLUSTER_KIT", &kit)
        .output()
        .expect("run scripts/build-image.sh");
    assert!(
        out.status.success(),
        "build-image.sh failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    let layout = dir.path().join("layout");
    std::fs::create_dir(&layout).expect("mkdir");
    let untar = Command::new("tar")
        .arg("-xf")
        .arg(&tar)
        .arg("-C")
        .arg(&layout)
        .status()
        .expect("run tar");
    assert!(untar.success());
    let index = read_json(&layout, "index.json");
    assert_eq!(
        index["manifests"][0]["annotations"]["io.containerd.image.name"],
        "localhost/residency-guard:test"
    );
    let manifest = read_json(&layout, &blob_path(&index["manifests"][0]));
    let config = read_json(&layout, &blob_path(&manifest["config"]));
    let config = &config["config"];

    let dockerfile =
        std::fs::read_to_string(root().join("Dockerfile")).expect("read the Dockerfile");
    let stage = parse_dockerfile(&dockerfile);
    assert_eq!(config["User"].as_str(), stage.user.as_deref(), "USER");
    assert_eq!(
        strings(&config["Entrypoint"]),
        stage.entrypoint,
        "ENTRYPOINT"
    );
    assert_eq!(strings(&config["Cmd"]), stage.cmd, "CMD");
    let env: BTreeMap<String, String> = strings(&config["Env"])
        .unwrap_or_default()
        .iter()
        .map(|e| {
            let (k, v) = e.split_once('=').expect("NAME=VALUE");
            (k.to_string(), v.to_string())
        })
        .collect();
    let mut expected: BTreeMap<String, String> = BASE_ENV
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    expected.extend(stage.env.clone());
    assert_eq!(env, expected, "the environment (base image's + ENV)");
    let labels: BTreeMap<String, String> =
        serde_json::from_value(config["Labels"].clone()).unwrap_or_default();
    assert_eq!(labels, stage.labels, "LABEL");

    // The layer: the binary, every library `ldd` names (and the loader) at
    // that path, the CA bundle, and the nonroot user of USER.
    let layer = layout.join(blob_path(&manifest["layers"][0]));
    let listing = Command::new("tar")
        .arg("-tf")
        .arg(&layer)
        .output()
        .expect("list the layer");
    let files: BTreeSet<String> = String::from_utf8_lossy(&listing.stdout)
        .lines()
        .map(|l| format!("/{}", l.trim_start_matches("./").trim_end_matches('/')))
        .collect();
    let ldd = Command::new("ldd").arg(binary).output().expect("run ldd");
    let ldd = String::from_utf8_lossy(&ldd.stdout);
    let libs: Vec<&str> = ldd
        .lines()
        .filter_map(|l| {
            let path = l.split("=>").last()?.split_whitespace().next()?;
            path.starts_with('/').then_some(path)
        })
        .collect();
    assert!(
        libs.iter().any(|l| l.contains("ld-linux")),
        "ldd named no loader:\n{ldd}"
    );
    for needed in libs
        .iter()
        .copied()
        .chain(["/residency-guard", "/etc/ssl/certs/ca-certificates.crt"])
    {
        assert!(
            files.contains(needed),
            "{needed} is not in the image: {files:?}"
        );
    }
    let extract = Command::new("tar")
        .arg("-xOf")
        .arg(&layer)
        .arg("etc/passwd")
        .output()
        .expect("read /etc/passwd");
    let passwd = String::from_utf8_lossy(&extract.stdout);
    let uid = stage
        .user
        .as_deref()
        .and_then(|u| u.split(':').next())
        .expect("a numeric USER");
    assert!(
        passwd
            .lines()
            .any(|l| l.split(':').nth(2) == Some(uid) && l.starts_with("nonroot:")),
        "no nonroot user {uid} in /etc/passwd:\n{passwd}"
    );
}
