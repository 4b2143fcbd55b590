//! The workload graph on a real control plane (issue 22), as an ordinary
//! developer: `alice` has the built-in ClusterRole `edit` in the namespace
//! (and, where a test says so, may label one Namespace), never the
//! `declassify` verb. Every test acts as her through impersonation and lets
//! the real controllers (Deployment, ReplicaSet) act after each write.

use std::time::Duration;

use serde_json::Value;

use crate::harness::{Cluster, cluster, eventually};
use crate::journey::{deployment, egress_policy, setup};

const USER: &str = "alice";

fn as_alice(c: &Cluster, args: &[&str]) -> crate::harness::Run {
    let mut all: Vec<&str> = args.to_vec();
    all.push("--as=alice");
    c.kubectl(&all)
}

fn apply_as_alice(c: &Cluster, yaml: &str) -> crate::harness::Run {
    c.kubectl_in(&["apply", "--as=alice", "-f", "-"], yaml)
}

/// The ReplicaSets of Deployment `name`: (name, spec.replicas, status.replicas).
fn replica_sets(c: &Cluster, ns: &str, name: &str) -> Vec<(String, i64, i64)> {
    let Some(list) = c.get_json(&["replicasets", "-n", ns, "-l", &format!("app={name}")]) else {
        return Vec::new();
    };
    list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|rs: &Value| {
            (
                rs["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                rs["spec"]["replicas"].as_i64().unwrap_or(-1),
                rs["status"]["replicas"].as_i64().unwrap_or(0),
            )
        })
        .collect()
}

/// Finding 2: in one patch alice moves the class from the pod template to
/// the Deployment's own metadata. The union of labels is unchanged, but
/// the ReplicaSet and pods the controller creates would carry no class.
/// Refused without `declassify`; and a Deployment declaring the class on
/// its metadata alone is denied with the fix.
#[test]
fn moving_the_class_off_the_pod_template_needs_declassify() {
    let Some(c) = cluster("graph-template-move") else {
        return;
    };
    let apps = "e2e-graph-move";
    let _installed = setup(&c, "e2e-graph-move", apps);
    c.grant_edit(apps, USER);
    let both = format!(
        "{}---\n{}",
        egress_policy(apps, "records-egress", "records", &[]),
        deployment(apps, "records", "personal", &["cn-north-1"], 1)
    );
    let r = apply_as_alice(&c, &both);
    assert!(
        r.ok,
        "a pinned, isolated Deployment is admitted: {}",
        r.stderr
    );

    let r = as_alice(
        &c,
        &[
            "patch",
            "deployment",
            "records",
            "-n",
            apps,
            "--type=json",
            "-p",
            r#"[{"op":"add","path":"/metadata/labels","value":{"residencyguard.io/data-class":"personal"}},{"op":"remove","path":"/spec/template/metadata/labels/residencyguard.io~1data-class"}]"#,
        ],
    );
    assert!(!r.ok, "the class was moved off the pod template");
    // Under a Deny policy the object itself is refused first (its class no
    // longer reaches the pods); under any policy the move is a
    // declassification (the webhook unit tests cover that text).
    assert!(
        r.stderr.contains(
            "Deployment e2e-graph-move/records declares residencyguard.io/data-class=personal on metadata.labels"
        ) || r.stderr.contains(
            "Deployment e2e-graph-move/records: this update takes data class [personal] off the pod template"
        ),
        "{}",
        r.stderr
    );
    // Under a Warn policy nothing denies the object, so the move is caught
    // as what it is: a declassification of the pods.
    let r = apply_as_alice(
        &c,
        &deployment(apps, "ledger", "accounting", &["cn-north-1"], 1),
    );
    assert!(r.ok, "{}", r.stderr);
    let r = as_alice(
        &c,
        &[
            "patch",
            "deployment",
            "ledger",
            "-n",
            apps,
            "--type=json",
            "-p",
            r#"[{"op":"add","path":"/metadata/labels","value":{"residencyguard.io/data-class":"accounting"}},{"op":"remove","path":"/spec/template/metadata/labels/residencyguard.io~1data-class"}]"#,
        ],
    );
    assert!(!r.ok, "the class was moved off the pod template under Warn");
    for text in [
        "Deployment e2e-graph-move/ledger: this update takes data class [accounting] off the pod template (spec.template.metadata.labels)",
        "alice is not allowed to `declassify`",
    ] {
        assert!(
            r.stderr.contains(text),
            "missing {text:?} in:\n{}",
            r.stderr
        );
    }
    // The ReplicaSet still carries the class on its template.
    let rs = c
        .get_json(&["replicasets", "-n", apps, "-l", "app=records"])
        .expect("replicasets");
    assert_eq!(
        rs["items"][0]["spec"]["template"]["metadata"]["labels"]["residencyguard.io/data-class"],
        "personal"
    );

    // Created that way from the start: denied, with the fix.
    let metadata_only = deployment(apps, "journal", "", &["cn-north-1"], 1).replacen(
        "metadata: {name: journal, namespace: e2e-graph-move}",
        "metadata: {name: journal, namespace: e2e-graph-move, labels: {residencyguard.io/data-class: personal}}",
        1,
    );
    assert!(metadata_only.contains("labels: {residencyguard.io/data-class: personal}}"));
    let r = apply_as_alice(&c, &metadata_only);
    assert!(!r.ok, "a class on metadata alone was admitted");
    assert!(
        r.stderr.contains("[ClassNotOnPodTemplate]")
            || r.stderr.contains("does not carry that class"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains(
            "add residencyguard.io/data-class: personal to spec.template.metadata.labels"
        ),
        "{}",
        r.stderr
    );
}

/// Finding 3: alice may label her Namespace. Removing the label a policy's
/// namespaceSelector matches takes her health-data Deployment out of the
/// policy: refused without `declassify`; other labels change freely.
#[test]
fn relabelling_a_namespace_out_of_a_policys_scope_needs_declassify() {
    let Some(c) = cluster("graph-namespace-scope") else {
        return;
    };
    let apps = "e2e-graph-scope";
    let _installed = setup(&c, "e2e-graph-scope", apps);
    c.grant_edit(apps, USER);
    c.cluster_object("clusterrole", "e2e-alice-label-scope");
    c.cluster_object("clusterrolebinding", "e2e-alice-label-scope");
    c.must(&[
        "create",
        "clusterrole",
        "e2e-alice-label-scope",
        "--verb=get,patch,update",
        "--resource=namespaces",
        &format!("--resource-name={apps}"),
    ]);
    c.must(&[
        "create",
        "clusterrolebinding",
        "e2e-alice-label-scope",
        "--clusterrole=e2e-alice-label-scope",
        &format!("--user={USER}"),
    ]);
    let both = format!(
        "{}---\n{}",
        egress_policy(apps, "records-egress", "records", &[]),
        deployment(apps, "records", "personal", &["cn-north-1"], 1)
    );
    let r = apply_as_alice(&c, &both);
    assert!(r.ok, "{}", r.stderr);

    let r = as_alice(&c, &["label", "namespace", apps, "residencyguard.io/e2e-"]);
    assert!(!r.ok, "the namespace left the policy's scope");
    for text in [
        format!(
            "Namespace {apps}: this update changes the Namespace's labels so that it no longer matches policy e2e-personal's namespaceSelector"
        ),
        format!("Deployment {apps}/records"),
        "alice is not allowed to `declassify`".to_string(),
    ] {
        assert!(
            r.stderr.contains(&text),
            "missing {text:?} in:\n{}",
            r.stderr
        );
    }
    let r = as_alice(&c, &["label", "namespace", apps, "cost-centre=42"]);
    assert!(r.ok, "an unrelated label: {}", r.stderr);
    // Still governed: unpinning is denied.
    let r = apply_as_alice(&c, &deployment(apps, "records", "personal", &[], 1));
    assert!(!r.ok, "unpinned after all");
    assert!(r.stderr.contains("policy e2e-personal"), "{}", r.stderr);
}

/// Finding 5: a Deny policy arrives while a Deployment runs unpinned. The
/// real controllers' writes that only remove pods are admitted: `kubectl
/// scale --replicas=0` takes the ReplicaSet to 0, and a fixing rollout
/// creates the pinned ReplicaSet and scales the old one down.
#[test]
fn scale_down_and_a_fixing_rollout_reach_the_replica_sets() {
    let Some(c) = cluster("graph-remediation") else {
        return;
    };
    let apps = "e2e-graph-fix";
    let _installed = setup(&c, "e2e-graph-fix", "e2e-graph-fix-probe");
    // Not yet in the policies' scope (no e2e label).
    c.fresh_namespace(apps, &[]);
    c.grant_edit(apps, USER);
    let fast_rollout = |yaml: String| {
        yaml.replacen(
            "  replicas: 2\n",
            "  replicas: 2\n  strategy: {type: RollingUpdate, rollingUpdate: {maxUnavailable: \"100%\"}}\n",
            1,
        )
    };
    for name in ["scaled", "fixed"] {
        let yaml = format!(
            "{}---\n{}",
            egress_policy(apps, &format!("{name}-egress"), name, &[]),
            fast_rollout(deployment(apps, name, "personal", &[], 2))
        );
        let r = apply_as_alice(&c, &yaml);
        assert!(r.ok, "not governed yet: {}", r.stderr);
        eventually(
            "the ReplicaSet to create its pods",
            Duration::from_secs(30),
            || {
                let sets = replica_sets(&c, apps, name);
                (sets.len() == 1 && sets[0].2 == 2).then_some(())
            },
        );
    }
    // The policy now governs the namespace (an administrator's label).
    c.must(&["label", "namespace", apps, "residencyguard.io/e2e=true"]);
    eventually(
        "the operator to govern the namespace",
        Duration::from_secs(30),
        || {
            let r = c.kubectl_in(
                &["apply", "--dry-run=server", "-f", "-"],
                &deployment(apps, "probe", "personal", &[], 1),
            );
            r.stderr.contains("policy e2e-personal").then_some(())
        },
    );

    let r = as_alice(
        &c,
        &["scale", "deployment", "scaled", "-n", apps, "--replicas=0"],
    );
    assert!(r.ok, "{}", r.stderr);
    eventually(
        "the Deployment controller's scale-down of the ReplicaSet to be admitted",
        Duration::from_secs(30),
        || {
            let sets = replica_sets(&c, apps, "scaled");
            (sets.len() == 1 && sets[0].1 == 0 && sets[0].2 == 0).then_some(())
        },
    );

    let pinned = fast_rollout(deployment(apps, "fixed", "personal", &["cn-north-1"], 2));
    let r = apply_as_alice(&c, &pinned);
    assert!(r.ok, "the fix is compliant: {}", r.stderr);
    let sets = eventually(
        "the rollout to scale the old ReplicaSet down and the new one up",
        Duration::from_secs(40),
        || {
            let sets = replica_sets(&c, apps, "fixed");
            (sets.len() == 2
                && sets.iter().filter(|s| s.1 == 0 && s.2 == 0).count() == 1
                && sets.iter().filter(|s| s.1 == 2).count() == 1)
                .then_some(sets)
        },
    );
    assert_eq!(sets.len(), 2, "{sets:?}");
    // Scaling back up is a write that adds pods where they may not run:
    // judged as ever (refused for the ReplicaSet the controller revives).
    let r = as_alice(&c, &["rollout", "undo", "deployment", "fixed", "-n", apps]);
    assert!(!r.ok, "rolling back to the unpinned template: {}", r.stdout);
}

/// Data follows the volume: a pod that mounts a claim holding personal data
/// carries its class, whatever its own labels (an ad-hoc pod, a `kubectl
/// debug --copy-to` copy). The claim's label classifies it even after the
/// workload is gone, and removing that label needs `declassify` (as does
/// cloning the claim into one without it); while a
/// classified workload uses an unlabelled claim, a pod mounting it is
/// classified through that workload.
#[test]
fn a_pod_mounting_a_classified_claim_carries_its_class() {
    let Some(c) = cluster("graph-claims") else {
        return;
    };
    let apps = "e2e-graph-claims";
    let _installed = setup(&c, "e2e-graph-claims", apps);
    c.grant_edit(apps, USER);
    let claim = |name: &str, labels: &str| {
        format!(
            "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {{name: {name}, namespace: {apps}, labels: {{{labels}}}}}\nspec: {{accessModes: [ReadWriteOnce], resources: {{requests: {{storage: 1Gi}}}}}}\n"
        )
    };
    let pod = |name: &str, claim: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: {apps}}}\nspec:\n  nodeSelector: {{topology.kubernetes.io/region: ap-east-1}}\n  containers: [{{name: c, image: registry.k8s.io/pause:3.10}}]\n  volumes: [{{name: d, persistentVolumeClaim: {{claimName: {claim}}}}}]\n"
        )
    };
    let r = apply_as_alice(
        &c,
        &claim("records", "residencyguard.io/data-class: personal"),
    );
    assert!(r.ok, "{}", r.stderr);
    let r = apply_as_alice(&c, &pod("copy", "records"));
    assert!(
        !r.ok,
        "an unlabelled pod mounting a personal-data claim ran abroad"
    );
    for text in [
        "Pod e2e-graph-claims/copy carries personal information (residencyguard.io/data-class=personal on PersistentVolumeClaim e2e-graph-claims/records)",
        "policy e2e-personal",
    ] {
        assert!(
            r.stderr.contains(text),
            "missing {text:?} in:\n{}",
            r.stderr
        );
    }
    let r = as_alice(
        &c,
        &[
            "label",
            "pvc",
            "records",
            "-n",
            apps,
            "residencyguard.io/data-class-",
        ],
    );
    assert!(!r.ok, "the claim was declassified without the verb");
    assert!(
        r.stderr.contains(&format!(
            "PersistentVolumeClaim {apps}/records: this update removes data class [personal]"
        )),
        "{}",
        r.stderr
    );
    // A clone copies the data: without the source's label, its creation is
    // a declassification too (spec.dataSource or spec.dataSourceRef).
    for field in ["dataSource", "dataSourceRef"] {
        let clone = claim("copy", "").replace(
            "spec: {",
            &format!("spec: {{{field}: {{kind: PersistentVolumeClaim, name: records}}, "),
        );
        let r = apply_as_alice(&c, &clone);
        assert!(!r.ok, "an unlabelled clone of a personal-data claim");
        for text in [
            format!(
                // The API server mirrors dataSourceRef into dataSource.
                "PersistentVolumeClaim {apps}/copy: this claim copies the data of PersistentVolumeClaim {apps}/records (spec.dataSource)"
            ),
            "label the new claim residencyguard.io/data-class=personal".to_string(),
            "alice is not allowed to `declassify`".to_string(),
        ] {
            assert!(
                r.stderr.contains(&text),
                "missing {text:?} in:\n{}",
                r.stderr
            );
        }
    }
    let clone = claim("copy", "residencyguard.io/data-class: personal").replace(
        "spec: {",
        "spec: {dataSource: {kind: PersistentVolumeClaim, name: records}, ",
    );
    let r = apply_as_alice(&c, &clone);
    assert!(r.ok, "a clone labelled like its source: {}", r.stderr);
    // A pod without the claim is none of our business.
    let plain = pod("plain", "records").replace(
        "  volumes: [{name: d, persistentVolumeClaim: {claimName: records}}]\n",
        "",
    );
    let r = apply_as_alice(&c, &plain);
    assert!(r.ok, "{}", r.stderr);
}

/// Data at rest keeps its class (`audit.labelClaims`): the audit leader
/// labels the unlabelled claim a classified Deployment mounts. Alice then
/// deletes the Deployment (its pods go with it) and mounts the claim in an
/// unlabelled pod pinned to Hong Kong: refused, through the claim's label,
/// which she cannot take off. Without the label the claim would have lent
/// its class only while the Deployment existed.
#[test]
fn the_audit_labels_a_classified_workloads_claim_so_its_data_stays_classified() {
    let Some(c) = cluster("graph-claim-labels") else {
        return;
    };
    let apps = "e2e-graph-claim-labels";
    // Registered before the namespace, so the claim bound to it goes first.
    let pv_name = "e2e-pv-claim-labels";
    c.cluster_object("pv", pv_name);
    let _installed = setup(&c, "e2e-graph-claim-labels", apps);
    c.grant_edit(apps, USER);
    c.must_apply(&crate::storage::pv(
        pv_name,
        "cn-north-1a",
        apps,
        "records-data",
        false,
    ));
    let r = apply_as_alice(&c, &crate::storage::claim(apps, "records-data", pv_name));
    assert!(r.ok, "{}", r.stderr);
    let mounting = deployment(apps, "records", "personal", &["cn-north-1"], 1).replace(
        "      containers: [{name: c, image: registry.k8s.io/pause:3.10}]\n",
        "      containers: [{name: c, image: registry.k8s.io/pause:3.10}]\n      volumes: [{name: d, persistentVolumeClaim: {claimName: records-data}}]\n",
    );
    assert!(mounting.contains("records-data"), "{mounting}");
    let both = format!(
        "{}---\n{}",
        egress_policy(apps, "records-egress", "records", &[]),
        mounting
    );
    let r = eventually(
        "the Deployment to be admitted once the claim is seen",
        Duration::from_secs(30),
        || {
            let r = apply_as_alice(&c, &both);
            r.ok.then_some(r)
        },
    );
    assert!(r.ok);

    let labelled = eventually(
        "the audit to label the claim",
        Duration::from_secs(60),
        || {
            let pvc = c.get_json(&["pvc", "records-data", "-n", apps])?;
            (pvc["metadata"]["labels"]["residencyguard.io/data-class"] == "personal").then_some(pvc)
        },
    );
    assert_eq!(
        labelled["metadata"]["annotations"]["residencyguard.io/classified-by"],
        format!("Deployment {apps}/records"),
        "{labelled}"
    );

    let r = as_alice(
        &c,
        &[
            "delete",
            "deployment",
            "records",
            "-n",
            apps,
            "--wait=false",
        ],
    );
    assert!(r.ok, "{}", r.stderr);
    let copy = format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: copy, namespace: {apps}}}\nspec:\n  nodeSelector: {{topology.kubernetes.io/region: ap-east-1}}\n  containers: [{{name: c, image: registry.k8s.io/pause:3.10}}]\n  volumes: [{{name: d, persistentVolumeClaim: {{claimName: records-data}}}}]\n"
    );
    let r = apply_as_alice(&c, &copy);
    assert!(
        !r.ok,
        "an unlabelled pod took the deleted Deployment's data abroad"
    );
    assert!(
        r.stderr.contains(&format!(
            "residencyguard.io/data-class=personal on PersistentVolumeClaim {apps}/records-data"
        )),
        "{}",
        r.stderr
    );
    let r = as_alice(
        &c,
        &[
            "label",
            "pvc",
            "records-data",
            "-n",
            apps,
            "residencyguard.io/data-class-",
        ],
    );
    assert!(!r.ok, "the claim was declassified without the verb");
}
