//! `scripts/gen-mainland-cidrs.sh --db FILE` regenerates the mainland
//! address data offline from a local copy of the IPFire location database:
//! run here on a small signed fixture database
//! (tests/fixtures/address-data), with every network tool on PATH replaced
//! by one that fails, and the result read back the way the operator reads
//! it.
//!
//! Needs Debian's `location` and `python3-location` (the generator's own
//! requirement) and `openssl`; without them the test says so and skips,
//! except under `CI=true`, where it fails (`scripts/install-tools.sh`
//! installs them).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use residency_guard::engine::IpSet;
use residency_guard::freshness;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn have_tools() -> bool {
    let python = Command::new("/usr/bin/python3")
        .args(["-c", "import location"])
        .output()
        .is_ok_and(|o| o.status.success());
    let cli = Command::new("location")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    let openssl = Command::new("openssl")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success());
    python && cli && openssl
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("start the command");
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A PATH whose network tools fail loudly, ahead of the real one.
fn offline_path(dir: &Path) -> String {
    let bin = dir.join("no-network-bin");
    std::fs::create_dir_all(&bin).unwrap();
    for tool in ["apt-get", "apt", "pip", "pip3", "curl", "wget", "sudo"] {
        let path = bin.join(tool);
        std::fs::write(
            &path,
            format!("#!/bin/sh\necho \"offline test: {tool} was called\" >&2\nexit 99\n"),
        )
        .unwrap();
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
    }
    format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

#[test]
fn a_local_database_regenerates_the_address_data_offline() {
    if !have_tools() {
        let why = "needs location, python3-location (apt-get install location python3-location) and openssl";
        // CI installs them (scripts/install-tools.sh): a skip there would
        // hide the regeneration path.
        assert!(std::env::var("CI").as_deref() != Ok("true"), "{why}");
        println!("skipped: {why}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("fixture-key.pem");
    let public = dir.path().join("fixture-key.pub.pem");
    run(Command::new("openssl")
        .args(["ecparam", "-genkey", "-name", "secp384r1", "-noout", "-out"])
        .arg(&key));
    run(Command::new("openssl")
        .args(["ec", "-pubout", "-in"])
        .arg(&key)
        .arg("-out")
        .arg(&public));
    let db = dir.path().join("location.db");
    let fixtures = root().join("tests/fixtures/address-data");
    run(Command::new("/usr/bin/python3")
        .arg(fixtures.join("make_location_db.py"))
        .arg(fixtures.join("networks.txt"))
        .arg(&key)
        .arg(&db));

    let out_dir = dir.path().join("out");
    let path = offline_path(dir.path());
    let gen_script = root().join("scripts/gen-mainland-cidrs.sh");
    run(Command::new(&gen_script)
        .arg("--db")
        .arg(&db)
        .arg("--public-key")
        .arg(&public)
        .arg("--out-dir")
        .arg(&out_dir)
        .env("PATH", &path)
        .env("http_proxy", "http://127.0.0.1:9")
        .env("https_proxy", "http://127.0.0.1:9"));

    let text = std::fs::read_to_string(out_dir.join("mainland-china.cidrs")).unwrap();
    let set = IpSet::parse_list(&text).expect("the operator parses the generated list");
    let inside = |a: &str| set.contains(a.parse().unwrap());
    // The fixture's CN networks, and the committed provider overrides (AWS
    // Beijing's IPv6 /56 that libloc places in the US).
    for a in [
        "52.80.0.1",
        "47.96.0.1",
        "240e::1",
        "203.0.113.7",
        "2600:f0f3:f010:a00::1",
    ] {
        assert!(inside(a), "{a} should be mainland:\n{text}");
    }
    // Hong Kong, Taiwan and the US stay outside.
    for a in ["18.162.0.1", "198.51.100.1", "8.8.8.8", "2001:4860::1"] {
        assert!(!inside(a), "{a} should be outside:\n{text}");
    }
    assert!(text.contains("Local copy location.db (sha256 "), "{text}");
    assert!(
        text.contains("signature verified with the public key fixture-key.pub.pem"),
        "{text}"
    );
    // The date the operator checks is the fixture database's (made now).
    let created = freshness::stated_date(&text).expect("the header states the date");
    let age = jiff::Timestamp::now().as_second() - created.as_second();
    assert!(
        (0..3600).contains(&age),
        "fixture made {age} s ago?\n{text}"
    );
    let hints = std::fs::read_to_string(out_dir.join("country-hints.cidrs")).unwrap();
    assert!(hints.contains("18.162.0.0/15 HK"), "{hints}");
    assert!(hints.contains("198.51.100.0/24 TW"), "{hints}");

    // A database whose signature the given key does not verify is refused.
    let unsigned_by_ipfire = Command::new(&gen_script)
        .arg("--db")
        .arg(&db)
        .arg("--out-dir")
        .arg(dir.path().join("refused"))
        .env("PATH", &path)
        .output()
        .unwrap();
    assert!(!unsigned_by_ipfire.status.success());
    assert!(
        String::from_utf8_lossy(&unsigned_by_ipfire.stderr)
            .contains("signature verification FAILED"),
        "{}",
        String::from_utf8_lossy(&unsigned_by_ipfire.stderr)
    );
    assert!(!dir.path().join("refused/mainland-china.cidrs").exists());
}
