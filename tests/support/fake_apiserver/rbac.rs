//! RBAC, as far as the tests need it: per client (bearer token), the (resource, verb) pairs it is
//! denied. A denied request gets the API server's 403 `Forbidden` Status, and a
//! `SelfSubjectAccessReview` (POST `/apis/authorization.k8s.io/v1/selfsubjectaccessreviews`, which every
//! authenticated user may make) answers `allowed: false` for it. Everything else is allowed.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};

use super::faults::{lock, Verb};
use super::resource::Resource;
use super::status::ApiError;

/// The path of `SelfSubjectAccessReview`s.
pub const ACCESS_REVIEW_PATH: &str = "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews";

/// What one client may not do.
type Denied = HashSet<(Resource, Verb)>;

/// The denied (resource, verb) pairs of every client, by bearer token.
#[derive(Clone, Debug, Default)]
pub struct Rbac(Arc<Mutex<HashMap<String, Denied>>>);

// === impl Rbac ===

impl Rbac {
    /// Denies `verbs` on `resource` to the client with bearer token `token`, from now on.
    pub fn deny(&self, token: &str, resource: Resource, verbs: &[Verb]) {
        let mut denied = lock(&self.0);
        let entry = denied.entry(token.to_owned()).or_default();
        entry.extend(verbs.iter().map(|verb| (resource, *verb)));
    }

    /// Whether `token` may `verb` `resource`.
    pub fn allows(&self, token: &str, resource: Resource, verb: Verb) -> bool {
        lock(&self.0)
            .get(token)
            .is_none_or(|denied| !denied.contains(&(resource, verb)))
    }

    /// Answers a `SelfSubjectAccessReview` of `token`: the review with its `status` filled in.
    pub fn review(&self, token: &str, mut review: Value) -> Result<Value, ApiError> {
        let attributes = review
            .pointer("/spec/resourceAttributes")
            .cloned()
            .ok_or_else(|| {
                ApiError::bad_request("spec.resourceAttributes is required".to_owned())
            })?;
        let field = |name: &str| attributes.get(name).and_then(Value::as_str).unwrap_or("");
        let resource = Resource::from_group_and_plural(field("group"), field("resource"));
        let verb = verb_named(field("verb"));
        let allowed = match (resource, verb) {
            (Some(resource), Some(verb)) => self.allows(token, resource, verb),
            // The fake has no rules about anything else.
            _ => true,
        };
        review["status"] = if allowed {
            json!({ "allowed": true, "reason": "allowed by the fake API server" })
        } else {
            json!({ "allowed": false, "reason": "denied by the test's RBAC rules" })
        };
        Ok(review)
    }
}

/// The RBAC name of a verb.
pub fn verb_name(verb: Verb) -> &'static str {
    match verb {
        Verb::Get => "get",
        Verb::List => "list",
        Verb::Watch => "watch",
        Verb::Create => "create",
        Verb::Update => "update",
        Verb::Delete => "delete",
        Verb::Patch => "patch",
    }
}

fn verb_named(name: &str) -> Option<Verb> {
    [
        Verb::Get,
        Verb::List,
        Verb::Watch,
        Verb::Create,
        Verb::Update,
        Verb::Delete,
        Verb::Patch,
    ]
    .into_iter()
    .find(|verb| verb_name(*verb) == name)
}
