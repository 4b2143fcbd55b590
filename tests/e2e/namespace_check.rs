//! The start-up check of the operator's namespace: SubjectAccessReviews,
//! made with the chart's ServiceAccount, ask whether every authenticated
//! user, every ServiceAccount or anonymous requests can create pods, exec
//! into them or add ephemeral containers there; the answer is the gauge
//! `residency_guard_operator_namespace_exposed{verb}` and one warning.

use std::time::Duration;

use crate::harness::{
    Mode, Operator, cluster, eventually, free_port, fullname, install_and_run_in,
};

fn exposed(metrics: &str, verb: &str) -> Option<i64> {
    let key = format!("residency_guard_operator_namespace_exposed{{verb=\"{verb}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(key.as_str()))
        .and_then(|v| v.trim().parse().ok())
}

/// Wait until the check has run (no verb unknown) and return the gauge.
fn checked(op: &Operator) -> [i64; 3] {
    eventually(
        "the namespace check to finish",
        Duration::from_secs(30),
        || {
            let m = op.metrics();
            let v = [
                exposed(&m, "create_pods")?,
                exposed(&m, "exec_pods")?,
                exposed(&m, "ephemeral_containers")?,
            ];
            v.iter().all(|x| *x >= 0).then_some(v)
        },
    )
}

/// A locked-down namespace reads 0; after a RoleBinding of `edit` to the
/// group system:authenticated in it, a restarted operator reads 1 for
/// creating pods and exec, and warns naming the group and the fix.
#[test]
fn an_edit_binding_for_every_authenticated_user_exposes_the_namespace() {
    let Some(c) = cluster("namespace-check") else {
        return;
    };
    let release = "e2e-nscheck";
    let system = format!("{release}-system");
    // A local process, so that it can be restarted after the binding
    // (the check runs once, at start-up) with the chart's ServiceAccount.
    let mut installed = install_and_run_in(Mode::Local, &c, release, &system, &[]);
    let [create, exec, ephemeral] = checked(&installed.operator);
    assert_eq!(
        [create, exec, ephemeral],
        [0, 0, 0],
        "a fresh release namespace is exposed:\n{}",
        installed.operator.log()
    );
    assert!(
        installed
            .operator
            .log()
            .contains("operator namespace check: no ordinary subject"),
        "the clean result is logged"
    );

    c.must(&[
        "create",
        "rolebinding",
        "everyone-edit",
        "-n",
        &system,
        "--clusterrole=edit",
        "--group=system:authenticated",
    ]);
    installed.operator.kill();
    let kubeconfig = c.service_account_kubeconfig(&system, &fullname(release));
    let op = Operator::start_as_chart(&c, release, &system, &kubeconfig, free_port());
    let [create, exec, _] = checked(&op);
    assert_eq!((create, exec), (1, 1), "{}", op.log());
    let log = op.log();
    let warning = log
        .lines()
        .find(|l| l.contains("is open"))
        .unwrap_or_else(|| panic!("no warning in the log:\n{log}"));
    for text in [
        &system,
        "create pods: group system:authenticated",
        "exec or attach into pods: group system:authenticated",
        "Fix:",
        "Who can switch the guard off",
    ] {
        assert!(warning.contains(text), "missing {text:?} in: {warning}");
    }
}
