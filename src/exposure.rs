//! Start-up check of the operator's own namespace: can ordinary subjects
//! run code there?
//!
//! The namespace is excluded from every webhook entry and holds the
//! operator's ServiceAccount (which may patch its webhook configuration in
//! self-managed TLS mode) and its CA Secret, so whoever can create pods,
//! `exec`/`attach` into the operator's pods or add ephemeral containers to
//! them there can switch the guard off (README, "Who can switch the guard
//! off"). `serve` asks the API server, through SubjectAccessReviews, whether
//! these subjects can:
//!
//! | subject | user | groups |
//! |---|---|---|
//! | every authenticated user | `residency-guard:namespace-check` (bound to nothing) | `system:authenticated` |
//! | every ServiceAccount (any pod's token) | `system:serviceaccount:residency-guard-namespace-check:default` | `system:serviceaccounts`, `system:serviceaccounts:residency-guard-namespace-check`, `system:authenticated` |
//! | anonymous requests | `system:anonymous` | `system:unauthenticated` |
//!
//! do any of (the `verb` label of the gauge):
//!
//! | `verb` | attributes asked (any allowed counts) |
//! |---|---|
//! | `create_pods` | create pods |
//! | `exec_pods` | create pods/exec, get pods/exec (a WebSocket exec needs only get before Kubernetes 1.35), create pods/attach |
//! | `ephemeral_containers` | update pods/ephemeralcontainers, patch pods/ephemeralcontainers |
//!
//! A grant to one named user or group (a RoleBinding of `edit` or `admin`
//! to `alice`) cannot be asked this way: a SubjectAccessReview asks about a
//! subject, not a role. Bindings of `edit`/`admin` to the groups above (the
//! usual mistake: `--group=system:authenticated`) are found.
//!
//! The result is one warning in the log naming who can do what and the
//! fix, and the gauge `residency_guard_operator_namespace_exposed{verb}`:
//! 1 exposed, 0 not, −1 unknown (not yet checked, or the reviews failed,
//! e.g. forbidden). The check never blocks or fails start-up.

use std::time::Duration;

use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::Client;
use kube::api::{Api, PostParams};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::engine::Lang;

/// What an ordinary subject must not be able to do in the namespace.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Access {
    CreatePods,
    ExecPods,
    EphemeralContainers,
}

impl Access {
    pub const ALL: [Access; 3] = [
        Access::CreatePods,
        Access::ExecPods,
        Access::EphemeralContainers,
    ];

    /// The gauge's `verb` label (a closed set).
    pub fn label(self) -> &'static str {
        match self {
            Access::CreatePods => "create_pods",
            Access::ExecPods => "exec_pods",
            Access::EphemeralContainers => "ephemeral_containers",
        }
    }

    /// (verb, resource, subresource) asked; any one allowed counts.
    pub fn attributes(self) -> &'static [(&'static str, &'static str, &'static str)] {
        match self {
            Access::CreatePods => &[("create", "pods", "")],
            Access::ExecPods => &[
                ("create", "pods", "exec"),
                ("get", "pods", "exec"),
                ("create", "pods", "attach"),
            ],
            Access::EphemeralContainers => &[
                ("update", "pods", "ephemeralcontainers"),
                ("patch", "pods", "ephemeralcontainers"),
            ],
        }
    }

    fn describe(self, lang: Lang) -> &'static str {
        match (self, lang) {
            (Access::CreatePods, Lang::En) => "create pods",
            (Access::ExecPods, Lang::En) => "exec or attach into pods",
            (Access::EphemeralContainers, Lang::En) => "add ephemeral containers to pods",
            (Access::CreatePods, Lang::ZhCn) => "创建 Pod",
            (Access::ExecPods, Lang::ZhCn) => "exec 或 attach 进入 Pod",
            (Access::EphemeralContainers, Lang::ZhCn) => "向 Pod 添加临时容器",
        }
    }
}

/// A subject whose rights are asked about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subject {
    /// Its name in the warning.
    pub name: &'static str,
    pub user: &'static str,
    pub groups: &'static [&'static str],
}

/// The subjects asked about (see the module documentation).
pub const SUBJECTS: [Subject; 3] = [
    Subject {
        name: "group system:authenticated (every authenticated user)",
        user: "residency-guard:namespace-check",
        groups: &["system:authenticated"],
    },
    Subject {
        name: "group system:serviceaccounts (every pod's ServiceAccount token)",
        user: "system:serviceaccount:residency-guard-namespace-check:default",
        groups: &[
            "system:serviceaccounts",
            "system:serviceaccounts:residency-guard-namespace-check",
            "system:authenticated",
        ],
    },
    Subject {
        name: "group system:unauthenticated (anonymous requests)",
        user: "system:anonymous",
        groups: &["system:unauthenticated"],
    },
];

/// The API server's answer to one question.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    Allowed,
    Denied,
    /// The review failed (forbidden, timed out): why.
    Unknown(String),
}

/// What the answers say about one kind of access.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Exposure {
    /// These subjects can.
    Exposed(Vec<&'static str>),
    NotExposed,
    /// No subject was found allowed, but some answers are missing: why.
    Unknown(String),
}

impl Exposure {
    /// The gauge value: 1 exposed, 0 not, −1 unknown.
    pub fn gauge(&self) -> i64 {
        match self {
            Exposure::Exposed(_) => 1,
            Exposure::NotExposed => 0,
            Exposure::Unknown(_) => -1,
        }
    }
}

/// One answer: (access, subject name, answer).
pub type Asked = (Access, &'static str, Answer);

/// Decide each access from the answers: exposed when any subject is
/// allowed any of its attributes, unknown when none is allowed but an
/// answer is missing, else not exposed.
pub fn judge(answers: &[Asked]) -> Vec<(Access, Exposure)> {
    Access::ALL
        .iter()
        .map(|&access| {
            let mine = answers.iter().filter(|(a, _, _)| *a == access);
            let mut who: Vec<&'static str> = Vec::new();
            let mut unknown: Option<String> = None;
            let mut asked = false;
            for (_, subject, answer) in mine {
                asked = true;
                match answer {
                    Answer::Allowed => {
                        if !who.contains(subject) {
                            who.push(subject);
                        }
                    }
                    Answer::Denied => {}
                    Answer::Unknown(why) => {
                        unknown.get_or_insert_with(|| why.clone());
                    }
                }
            }
            let exposure = if !who.is_empty() {
                Exposure::Exposed(who)
            } else if let Some(why) = unknown {
                Exposure::Unknown(why)
            } else if !asked {
                Exposure::Unknown("not asked".to_string())
            } else {
                Exposure::NotExposed
            };
            (access, exposure)
        })
        .collect()
}

/// The one warning to log, when anything is exposed: who can do what in
/// `namespace`, and what to do.
pub fn warning(namespace: &str, findings: &[(Access, Exposure)], lang: Lang) -> Option<String> {
    let exposed: Vec<String> = findings
        .iter()
        .filter_map(|(access, e)| match e {
            Exposure::Exposed(who) => Some(format!(
                "{}: {}",
                access.describe(lang),
                who.join(if lang == Lang::ZhCn { "、" } else { ", " })
            )),
            _ => None,
        })
        .collect();
    if exposed.is_empty() {
        return None;
    }
    let list = exposed.join("; ");
    Some(match lang {
        Lang::En => format!(
            "the operator's namespace {namespace} is open: {list}. Whoever can do this can read the operator's ServiceAccount token and CA Secret and switch the guard off. Fix: remove those RoleBindings/ClusterRoleBindings (kubectl get rolebindings -n {namespace} -o wide; kubectl auth can-i --list -n {namespace} --as=residency-guard:namespace-check --as-group=system:authenticated) and lock the namespace down (README, \"Who can switch the guard off\")"
        ),
        Lang::ZhCn => format!(
            "运营者所在命名空间 {namespace} 未受保护：{list}。能做到这些的人可以读取运营者的 ServiceAccount 令牌和 CA Secret，从而关闭防护。修复：删除这些 RoleBinding/ClusterRoleBinding（kubectl get rolebindings -n {namespace} -o wide；kubectl auth can-i --list -n {namespace} --as=residency-guard:namespace-check --as-group=system:authenticated），并锁定该命名空间（README「Who can switch the guard off」）"
        ),
    })
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VerbLabels {
    /// create_pods, exec_pods, ephemeral_containers.
    pub verb: &'static str,
}

/// `residency_guard_operator_namespace_exposed{verb}`.
#[derive(Clone, Default)]
pub struct ExposureGauge {
    family: Family<VerbLabels, Gauge>,
}

impl ExposureGauge {
    /// Every verb starts unknown (−1) until the check has run.
    pub fn new() -> ExposureGauge {
        let g = ExposureGauge::default();
        for access in Access::ALL {
            g.family
                .get_or_create(&VerbLabels {
                    verb: access.label(),
                })
                .set(-1);
        }
        g
    }

    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "operator_namespace_exposed",
            "Whether ordinary subjects (every authenticated user, every ServiceAccount, anonymous) can create pods, exec/attach into them or add ephemeral containers in the operator's namespace, checked at start-up: 1 yes, 0 no, -1 unknown",
            self.family.clone(),
        );
    }

    pub fn set(&self, findings: &[(Access, Exposure)]) {
        for (access, exposure) in findings {
            self.family
                .get_or_create(&VerbLabels {
                    verb: access.label(),
                })
                .set(exposure.gauge());
        }
    }
}

/// How long one SubjectAccessReview may take.
const REVIEW_TIMEOUT: Duration = Duration::from_secs(5);

/// Ask the API server every question (sequentially: 18 small requests,
/// once). A forbidden or failed review is an unknown answer; after the
/// first forbidden one the rest are not asked (they would fail the same
/// way).
pub async fn ask(client: Client, namespace: &str) -> Vec<Asked> {
    let api: Api<SubjectAccessReview> = Api::all(client);
    let mut answers = Vec::new();
    let mut forbidden: Option<String> = None;
    for subject in &SUBJECTS {
        for access in Access::ALL {
            for &(verb, resource, subresource) in access.attributes() {
                if let Some(why) = &forbidden {
                    answers.push((access, subject.name, Answer::Unknown(why.clone())));
                    continue;
                }
                let review = SubjectAccessReview {
                    spec: SubjectAccessReviewSpec {
                        user: Some(subject.user.to_string()),
                        groups: Some(subject.groups.iter().map(|g| g.to_string()).collect()),
                        resource_attributes: Some(ResourceAttributes {
                            namespace: Some(namespace.to_string()),
                            verb: Some(verb.to_string()),
                            group: Some(String::new()),
                            resource: Some(resource.to_string()),
                            subresource: (!subresource.is_empty()).then(|| subresource.to_string()),
                            ..ResourceAttributes::default()
                        }),
                        ..SubjectAccessReviewSpec::default()
                    },
                    ..SubjectAccessReview::default()
                };
                let answer = match tokio::time::timeout(
                    REVIEW_TIMEOUT,
                    api.create(&PostParams::default(), &review),
                )
                .await
                {
                    Ok(Ok(r)) if r.status.as_ref().is_some_and(|s| s.allowed) => Answer::Allowed,
                    Ok(Ok(_)) => Answer::Denied,
                    Ok(Err(kube::Error::Api(e))) if e.code == 403 => {
                        let why = format!(
                            "the operator may not create SubjectAccessReviews ({}); grant create on subjectaccessreviews.authorization.k8s.io (the chart's ClusterRole does)",
                            e.message
                        );
                        forbidden = Some(why.clone());
                        Answer::Unknown(why)
                    }
                    Ok(Err(e)) => Answer::Unknown(format!("SubjectAccessReview failed: {e}")),
                    Err(_) => Answer::Unknown(format!(
                        "SubjectAccessReview not answered within {REVIEW_TIMEOUT:?}"
                    )),
                };
                answers.push((access, subject.name, answer));
            }
        }
    }
    answers
}

/// Check, set the gauge and log the outcome (one line).
pub async fn check(client: Client, namespace: String, lang: Lang, gauge: ExposureGauge) {
    let answers = ask(client, &namespace).await;
    let findings = judge(&answers);
    gauge.set(&findings);
    if let Some(text) = warning(&namespace, &findings, lang) {
        tracing::warn!(namespace = %namespace, "{text}");
    } else if let Some((_, Exposure::Unknown(why))) = findings
        .iter()
        .find(|(_, e)| matches!(e, Exposure::Unknown(_)))
    {
        tracing::warn!(
            namespace = %namespace,
            reason = %why,
            "could not check who can create pods, exec into pods or add ephemeral containers in the operator's namespace; residency_guard_operator_namespace_exposed is -1 (check it yourself: README, \"Who can switch the guard off\")"
        );
    } else {
        tracing::info!(
            namespace = %namespace,
            "operator namespace check: no ordinary subject (authenticated users, ServiceAccounts, anonymous) can create pods, exec into pods or add ephemeral containers here"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const AUTH: &str = SUBJECTS[0].name;
    const SA: &str = SUBJECTS[1].name;

    fn all(answer: Answer) -> Vec<Asked> {
        let mut v = Vec::new();
        for s in &SUBJECTS {
            for a in Access::ALL {
                for _ in a.attributes() {
                    v.push((a, s.name, answer.clone()));
                }
            }
        }
        v
    }

    #[test]
    fn all_denied_is_not_exposed_and_says_nothing() {
        let f = judge(&all(Answer::Denied));
        assert_eq!(f.len(), 3);
        assert!(f.iter().all(|(_, e)| *e == Exposure::NotExposed));
        assert!(f.iter().all(|(_, e)| e.gauge() == 0));
        assert_eq!(warning("rg", &f, Lang::En), None);
    }

    #[test]
    fn one_allowed_attribute_exposes_its_access_and_names_the_subject() {
        let mut answers = all(Answer::Denied);
        // `get pods/exec` for every ServiceAccount, `create pods` for every
        // authenticated user (an `edit` binding to the group).
        answers.push((Access::ExecPods, SA, Answer::Allowed));
        answers.push((Access::CreatePods, AUTH, Answer::Allowed));
        answers.push((Access::CreatePods, AUTH, Answer::Allowed));
        let f = judge(&answers);
        assert_eq!(f[0], (Access::CreatePods, Exposure::Exposed(vec![AUTH])));
        assert_eq!(f[1], (Access::ExecPods, Exposure::Exposed(vec![SA])));
        assert_eq!(f[2], (Access::EphemeralContainers, Exposure::NotExposed));
        let en = warning("residency-guard", &f, Lang::En).expect("a warning");
        assert!(en.contains("residency-guard is open"), "{en}");
        assert!(
            en.contains("create pods: group system:authenticated"),
            "{en}"
        );
        assert!(
            en.contains("exec or attach into pods: group system:serviceaccounts"),
            "{en}"
        );
        assert!(!en.contains("ephemeral"), "{en}");
        assert!(en.contains("Fix:"), "{en}");
        let zh = warning("residency-guard", &f, Lang::ZhCn).expect("a warning");
        assert!(zh.contains("修复"), "{zh}");
        assert!(zh.contains("创建 Pod"), "{zh}");
    }

    #[test]
    fn failures_are_unknown_unless_someone_is_allowed_anyway() {
        let mut answers = all(Answer::Denied);
        answers.push((
            Access::EphemeralContainers,
            AUTH,
            Answer::Unknown("forbidden".into()),
        ));
        answers.push((Access::CreatePods, SA, Answer::Unknown("timeout".into())));
        answers.push((Access::CreatePods, AUTH, Answer::Allowed));
        let f = judge(&answers);
        assert_eq!(f[0].1.gauge(), 1, "an allowed answer decides");
        assert_eq!(f[1].1.gauge(), 0);
        assert_eq!(
            f[2].1,
            Exposure::Unknown("forbidden".into()),
            "a missing answer is not a no"
        );
        assert_eq!(f[2].1.gauge(), -1);
        let all_forbidden = judge(&all(Answer::Unknown("forbidden".into())));
        assert!(all_forbidden.iter().all(|(_, e)| e.gauge() == -1));
        assert_eq!(warning("rg", &all_forbidden, Lang::En), None);
        assert!(
            judge(&[]).iter().all(|(_, e)| e.gauge() == -1),
            "nothing asked is unknown"
        );
    }

    #[test]
    fn the_gauge_has_one_series_per_verb_unknown_until_set() {
        let g = ExposureGauge::new();
        let mut registry = Registry::with_prefix("residency_guard");
        g.register(&mut registry);
        let encode = |r: &Registry| {
            let mut s = String::new();
            prometheus_client::encoding::text::encode(&mut s, r).unwrap();
            s
        };
        let text = encode(&registry);
        for verb in ["create_pods", "exec_pods", "ephemeral_containers"] {
            assert!(
                text.contains(&format!(
                    "residency_guard_operator_namespace_exposed{{verb=\"{verb}\"}} -1"
                )),
                "{text}"
            );
        }
        let mut answers = all(Answer::Denied);
        answers.push((Access::CreatePods, AUTH, Answer::Allowed));
        g.set(&judge(&answers));
        let text = encode(&registry);
        assert!(
            text.contains("residency_guard_operator_namespace_exposed{verb=\"create_pods\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("residency_guard_operator_namespace_exposed{verb=\"exec_pods\"} 0"),
            "{text}"
        );
    }
}
