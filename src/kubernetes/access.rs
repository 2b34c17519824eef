//! The access review at start: the API server is asked (`SelfSubjectAccessReview`) which verbs this
//! replica may not use on an object, so a missing RBAC rule is a clear error before anything runs rather
//! than a 403 once leading. Each resource turns the denied verbs into its own error, with the rule to add.

use std::time::Duration;

use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use kube::api::{Api, PostParams};

use super::error_chain;

/// The object an access review asks about.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Reviewed<'a> {
    /// API group (`""` for the core group).
    pub group: &'a str,
    /// Plural resource name.
    pub resource: &'a str,
    /// The object's namespace.
    pub namespace: &'a str,
    /// The object's name.
    pub name: &'a str,
    /// What the log calls it: `the Lease`, `the jobs ConfigMap`.
    pub what: &'a str,
}

/// Checks that this replica may use every one of `verbs` on `object` (each review bounded by `timeout`);
/// `Err` with the denied verbs otherwise.
///
/// A review that cannot be made (an API server without the authorization API, a timeout) proves nothing:
/// it is logged at debug and the check passes; the requests themselves still report 403.
pub(crate) async fn check_access(
    client: &kube::Client,
    object: Reviewed<'_>,
    verbs: &[&'static str],
    timeout: Duration,
) -> Result<(), Vec<&'static str>> {
    match denied_verbs(client, object, verbs, timeout).await {
        Ok(denied) if denied.is_empty() => Ok(()),
        Ok(denied) => Err(denied),
        Err(error) => {
            tracing::debug!(
                namespace = object.namespace,
                name = object.name,
                error = %error_chain(&error),
                "cannot review access to {}; skipping the check",
                object.what
            );
            Ok(())
        }
    }
}

/// Which of `verbs` this replica may not use on `object`. `create` is reviewed without the name: RBAC
/// cannot restrict it to one (the others can, with `resourceNames`). `Err` if a review could not be made.
async fn denied_verbs(
    client: &kube::Client,
    object: Reviewed<'_>,
    verbs: &[&'static str],
    timeout: Duration,
) -> Result<Vec<&'static str>, kube::Error> {
    let reviews: Api<SelfSubjectAccessReview> = Api::all(client.clone());
    let mut denied = Vec::new();
    for &verb in verbs {
        let review = SelfSubjectAccessReview {
            spec: SelfSubjectAccessReviewSpec {
                resource_attributes: Some(ResourceAttributes {
                    group: Some(object.group.to_owned()),
                    resource: Some(object.resource.to_owned()),
                    namespace: Some(object.namespace.to_owned()),
                    verb: Some(verb.to_owned()),
                    name: (verb != "create").then(|| object.name.to_owned()),
                    ..ResourceAttributes::default()
                }),
                ..SelfSubjectAccessReviewSpec::default()
            },
            ..SelfSubjectAccessReview::default()
        };
        let answer = tokio::time::timeout(timeout, reviews.create(&PostParams::default(), &review))
            .await
            .map_err(|_| kube::Error::Service("the access review timed out".into()))??;
        if !answer.status.is_some_and(|status| status.allowed) {
            denied.push(verb);
        }
    }
    Ok(denied)
}
