//! The README's `kubectl apply` transcripts are real: this test runs them
//! on the cluster (the chart's example policies, the manifests under
//! tests/e2e/fixtures/transcripts/) and fails when the README's blocks
//! differ from what kubectl printed. To refresh them after a message
//! change: `RESIDENCY_GUARD_UPDATE_TRANSCRIPTS=1 scripts/e2e.sh -E 'test(transcripts)'`.

use std::time::Duration;

use crate::harness::{Cluster, apply_policies, cluster, eventually, install_and_run, root};

/// The README block between `<!-- e2e-transcript:NAME -->` markers.
fn check_block(name: &str, actual: &str) {
    let path = root().join("README.md");
    let readme = std::fs::read_to_string(&path).expect("README.md");
    let open = format!("<!-- e2e-transcript:{name} -->\n");
    let close = format!("<!-- /e2e-transcript:{name} -->");
    let start = readme
        .find(&open)
        .unwrap_or_else(|| panic!("README.md has no {open:?} marker"))
        + open.len();
    let end = readme[start..]
        .find(&close)
        .unwrap_or_else(|| panic!("README.md has no {close:?} marker"))
        + start;
    let expected = format!("```text\n{actual}```\n");
    if readme[start..end] == expected {
        return;
    }
    if std::env::var("RESIDENCY_GUARD_UPDATE_TRANSCRIPTS").is_ok_and(|v| v == "1") {
        let updated = format!("{}{expected}{}", &readme[..start], &readme[end..]);
        std::fs::write(&path, updated).expect("write README.md");
        println!("README.md: transcript {name} updated");
        return;
    }
    panic!(
        "README.md transcript {name} differs from what kubectl printed on a real cluster.\n\
         Run: RESIDENCY_GUARD_UPDATE_TRANSCRIPTS=1 scripts/e2e.sh -E 'test(transcripts)'\n\
         --- README\n{}\n--- kubectl\n{expected}",
        &readme[start..end]
    );
}

fn setup(c: &Cluster) {
    let examples = root().join("charts/residency-guard/examples");
    for name in ["mainland-personal-data", "accounting-rollout"] {
        let text =
            std::fs::read_to_string(examples.join(format!("{name}.yaml"))).expect("example policy");
        apply_policies(c, &[name], &text);
    }
    c.fresh_namespace("payments", &[]);
    c.fresh_namespace("finance", &[("team", "finance")]);
}

#[test]
fn readme_transcripts_are_what_kubectl_prints() {
    let Some(c) = cluster("transcripts") else {
        return;
    };
    let _installed = install_and_run(&c, "residency-guard", "residency-guard", &[]);
    setup(&c);
    let dir = root().join("tests/e2e/fixtures/transcripts");

    let denied = eventually("the denial", Duration::from_secs(20), || {
        let r = c.kubectl_from(&dir, &["apply", "-f", "api.yaml"]);
        (!r.ok && r.stderr.contains("denied the request")).then_some(r)
    });
    // The README shows the kit's five nodes. When the kit's real node runs
    // too (it runs the operator in Pods mode: mainland, tainted, so it is
    // never among the nodes listed abroad) it is a sixth matching node.
    let worker = c.get_json(&["node", crate::harness::WORKER_NODE]).is_some();
    let five_nodes = |text: &str| {
        if worker {
            text.replace(" of 6 matching nodes", " of 5 matching nodes")
        } else {
            text.to_string()
        }
    };
    check_block(
        "deny",
        &format!(
            "$ kubectl apply -f api.yaml\n{}",
            five_nodes(&denied.stderr)
        ),
    );

    let warned = c.kubectl_from(&dir, &["apply", "-f", "ledger-export.yaml"]);
    assert!(warned.ok, "{}", warned.stderr);
    check_block(
        "warn",
        // As a terminal shows it: the warnings (stderr) come first.
        &format!(
            "$ kubectl apply -f ledger-export.yaml\n{}{}",
            five_nodes(&warned.stderr),
            warned.stdout
        ),
    );
}
