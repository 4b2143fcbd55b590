//! Is this user allowed to take data classes away? A SubjectAccessReview
//! for the verb `declassify` on `dataclasses.residencyguard.io/<class>` in
//! the namespace, asked of the API server on behalf of the request's user
//! (engine::declassify explains the model).

use std::collections::BTreeMap;

use futures::future::BoxFuture;
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::Client;
use kube::api::{Api, PostParams};
use serde::Deserialize;

use crate::api::DataClass;
use crate::engine::declassify::{DECLASSIFY_GROUP, DECLASSIFY_RESOURCE, DECLASSIFY_VERB};

/// The request's user, as the API server authenticated them.
#[derive(Clone, Debug, Default, Deserialize, serde::Serialize, PartialEq)]
pub struct UserInfo {
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub uid: Option<String>,
    #[serde(default)]
    pub groups: Option<Vec<String>>,
    #[serde(default)]
    pub extra: Option<BTreeMap<String, Vec<String>>>,
}

impl UserInfo {
    /// The user of an AdmissionReview body (read only when needed).
    pub fn of_review(body: &[u8]) -> UserInfo {
        #[derive(Deserialize)]
        struct Review {
            request: Option<Request>,
        }
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Request {
            #[serde(default)]
            user_info: Option<UserInfo>,
        }
        serde_json::from_slice::<Review>(body)
            .ok()
            .and_then(|r| r.request?.user_info)
            .unwrap_or_default()
    }

    pub fn name(&self) -> &str {
        self.username.as_deref().unwrap_or("(unknown user)")
    }
}

/// Where declassifications are authorised (a trait, so tests can decide).
pub trait Authorizer: Send + Sync {
    /// The ClusterRole that grants the verb (named in refusals).
    fn role(&self) -> &str;

    /// The classes among `classes` that `user` may NOT declassify in
    /// `namespace` (empty: all allowed).
    fn refused<'a>(
        &'a self,
        user: &'a UserInfo,
        namespace: &'a str,
        classes: &'a [DataClass],
    ) -> BoxFuture<'a, Result<Vec<DataClass>, kube::Error>>;
}

/// SubjectAccessReviews through the API server.
pub struct ApiAuthorizer {
    client: Client,
    role: String,
}

impl ApiAuthorizer {
    /// `role`: the ClusterRole granting the verb (the chart's declassifier).
    pub fn new(client: Client, role: String) -> ApiAuthorizer {
        ApiAuthorizer { client, role }
    }
}

impl Authorizer for ApiAuthorizer {
    fn role(&self) -> &str {
        &self.role
    }

    fn refused<'a>(
        &'a self,
        user: &'a UserInfo,
        namespace: &'a str,
        classes: &'a [DataClass],
    ) -> BoxFuture<'a, Result<Vec<DataClass>, kube::Error>> {
        Box::pin(async move {
            let api: Api<SubjectAccessReview> = Api::all(self.client.clone());
            let mut refused = Vec::new();
            for class in classes {
                let review = SubjectAccessReview {
                    spec: SubjectAccessReviewSpec {
                        user: user.username.clone(),
                        uid: user.uid.clone(),
                        groups: user.groups.clone(),
                        extra: user.extra.clone(),
                        resource_attributes: Some(ResourceAttributes {
                            namespace: Some(namespace.to_string()),
                            verb: Some(DECLASSIFY_VERB.to_string()),
                            group: Some(DECLASSIFY_GROUP.to_string()),
                            resource: Some(DECLASSIFY_RESOURCE.to_string()),
                            name: Some(class.as_str().to_string()),
                            ..ResourceAttributes::default()
                        }),
                        ..SubjectAccessReviewSpec::default()
                    },
                    ..SubjectAccessReview::default()
                };
                let answer = api.create(&PostParams::default(), &review).await?;
                if !answer.status.is_some_and(|s| s.allowed) {
                    refused.push(*class);
                }
            }
            Ok(refused)
        })
    }
}
