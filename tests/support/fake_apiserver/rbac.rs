//! RBAC, as far as the tests need it, per client (bearer token), in two forms:
//!
//! - denials: (resource, verb) pairs taken away from a client that may otherwise do anything to what the
//!   fake serves (the proxy's default Role `fake-user-TOKEN` grants the same: every verb on leases,
//!   configmaps and both kinds of events, nothing else);
//! - grants: a Role's rules, which are then all the client may do, evaluated as the RBAC authorizer does
//!   (`apiGroups`, `resources`, `verbs`, with `*`; `resourceNames` match only requests that carry a name:
//!   get, update, patch and delete by their URL, list and watch by a `metadata.name` field selector,
//!   never create).
//!
//! A denied request gets the API server's 403 `Forbidden` Status, and a `SelfSubjectAccessReview` (POST
//! `/apis/authorization.k8s.io/v1/selfsubjectaccessreviews`, which every authenticated user may make)
//! answers `allowed: false` for it (without a reason, as RBAC's denial has none); an allowed one says
//! which RoleBinding allowed it, named as the proxy names its bindings.

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

/// The denials and grants of every client, by bearer token.
#[derive(Clone, Debug, Default)]
pub struct Rbac(Arc<Mutex<Clients>>);

#[derive(Debug, Default)]
struct Clients {
    denied: HashMap<String, Denied>,
    granted: HashMap<String, Vec<PolicyRule>>,
}

/// One rule of a Role (`rbac.authorization.k8s.io/v1` `PolicyRule`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyRule {
    /// `apiGroups` (`""` is the core group, `*` any).
    pub api_groups: Vec<String>,
    /// `resources` (plural names, `*` any).
    pub resources: Vec<String>,
    /// `verbs` (`*` any).
    pub verbs: Vec<String>,
    /// `resourceNames`; empty: any object.
    pub resource_names: Vec<String>,
}

/// What a request asks to do, as the authorizer sees it.
#[derive(Clone, Copy, Debug)]
pub struct Attributes<'a> {
    /// The API group.
    pub group: &'a str,
    /// The plural resource name.
    pub resource: &'a str,
    /// The RBAC verb.
    pub verb: &'a str,
    /// The object name: from the URL, or from a `metadata.name` field selector of a list or watch.
    pub name: Option<&'a str>,
}

// === impl Rbac ===

impl Rbac {
    /// Denies `verbs` on `resource` to the client with bearer token `token`, from now on.
    pub fn deny(&self, token: &str, resource: Resource, verbs: &[Verb]) {
        let mut clients = lock(&self.0);
        let entry = clients.denied.entry(token.to_owned()).or_default();
        entry.extend(verbs.iter().map(|verb| (resource, *verb)));
    }

    /// From now on, the client with bearer token `token` may do what `rules` grant and nothing else.
    pub fn grant(&self, token: &str, rules: Vec<PolicyRule>) {
        lock(&self.0).granted.insert(token.to_owned(), rules);
    }

    /// Whether `token` may `verb` the object `name` (if the request names one) of `resource`.
    pub fn allows(&self, token: &str, resource: Resource, verb: Verb, name: Option<&str>) -> bool {
        self.allows_attributes(
            token,
            &Attributes {
                group: resource.group(),
                resource: resource.plural(),
                verb: verb_name(verb),
                name,
            },
        )
    }

    /// Whether `token` may do what `attributes` describe: by its grant if it has one, else anything on
    /// the served resources but what was denied to it.
    pub fn allows_attributes(&self, token: &str, attributes: &Attributes<'_>) -> bool {
        let clients = lock(&self.0);
        if let Some(rules) = clients.granted.get(token) {
            return rules.iter().any(|rule| rule.allows(attributes));
        }
        let Some(resource) = Resource::from_group_and_plural(attributes.group, attributes.resource)
        else {
            return false;
        };
        let denied = verb_named(attributes.verb).is_some_and(|verb| {
            clients
                .denied
                .get(token)
                .is_some_and(|denied| denied.contains(&(resource, verb)))
        });
        verb_named(attributes.verb).is_some() && !denied
    }

    /// Answers a `SelfSubjectAccessReview` of `token` in `namespace` (the fake's): the review as the real
    /// server returns it, with its `status`.
    pub fn review(&self, token: &str, namespace: &str, review: Value) -> Result<Value, ApiError> {
        let spec = &review["spec"];
        let (resource, non_resource) =
            (&spec["resourceAttributes"], &spec["nonResourceAttributes"]);
        if resource.is_null() == non_resource.is_null() {
            let mut error = ApiError::invalid(
                Resource::Leases,
                ".authorization.k8s.io",
                "",
                vec![super::status::FieldError::invalid(
                    "spec",
                    super::status::BadValue::Json("null".to_owned()),
                    "exactly one of nonResourceAttributes or resourceAttributes must be specified",
                )],
            );
            error.details = Some(
                json!({ "group": "authorization.k8s.io", "causes": error.details
                .as_ref().map(|d| d["causes"].clone()).unwrap_or_default() }),
            );
            return Err(error);
        }
        let field = |attributes: &Value, name: &str| {
            attributes
                .get(name)
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned()
        };
        let status = if resource.is_null() {
            let (verb, path) = (field(non_resource, "verb"), field(non_resource, "path"));
            let discovery = ["/api", "/apis", "/healthz", "/livez", "/readyz", "/version"]
                .iter()
                .any(|p| path == *p || path.starts_with(&format!("{p}/")));
            if verb == "get" && discovery {
                json!({ "allowed": true, "reason": "RBAC: allowed by ClusterRoleBinding \"system:discovery\" \
                    of ClusterRole \"system:discovery\" to Group \"system:authenticated\"" })
            } else {
                json!({ "allowed": false })
            }
        } else {
            let name = field(resource, "name");
            let attributes = Attributes {
                group: &field(resource, "group"),
                resource: &field(resource, "resource"),
                verb: &field(resource, "verb"),
                name: Some(name.as_str()).filter(|name| !name.is_empty()),
            };
            if self.allows_attributes(token, &attributes) {
                let namespace = Some(field(resource, "namespace"))
                    .filter(|ns| !ns.is_empty())
                    .unwrap_or_else(|| namespace.to_owned());
                json!({ "allowed": true, "reason": format!(
                    "RBAC: allowed by RoleBinding \"fake-user-{token}/{namespace}\" of Role \"fake-user-{token}\" \
                     to User \"{token}\""
                ) })
            } else {
                json!({ "allowed": false })
            }
        };
        Ok(json!({
            "kind": "SelfSubjectAccessReview",
            "apiVersion": "authorization.k8s.io/v1",
            "metadata": {},
            "spec": spec,
            "status": status,
        }))
    }
}

// === impl PolicyRule ===

impl PolicyRule {
    /// The `rules` of a Role (or ClusterRole) object.
    pub fn of_role(role: &Value) -> Result<Vec<PolicyRule>, String> {
        let rules = role
            .get("rules")
            .and_then(Value::as_array)
            .ok_or("the Role has no rules list")?;
        rules.iter().map(PolicyRule::from_value).collect()
    }

    fn from_value(rule: &Value) -> Result<PolicyRule, String> {
        let strings = |field: &str| -> Result<Vec<String>, String> {
            match rule.get(field) {
                None | Some(Value::Null) => Ok(Vec::new()),
                Some(Value::Array(items)) => items
                    .iter()
                    .map(|item| {
                        item.as_str()
                            .map(str::to_owned)
                            .ok_or_else(|| format!("{field}: {item} is not a string"))
                    })
                    .collect(),
                Some(other) => Err(format!("{field}: {other} is not a list")),
            }
        };
        if let Some(unknown) = rule.as_object().and_then(|fields| {
            fields.keys().find(|key| {
                !["apiGroups", "resources", "verbs", "resourceNames"].contains(&key.as_str())
            })
        }) {
            return Err(format!("unexpected field {unknown} in rule {rule}"));
        }
        Ok(PolicyRule {
            api_groups: strings("apiGroups")?,
            resources: strings("resources")?,
            verbs: strings("verbs")?,
            resource_names: strings("resourceNames")?,
        })
    }

    /// Whether the rule allows a request, as `rbac.RuleAllows` judges it.
    pub fn allows(&self, request: &Attributes<'_>) -> bool {
        let has =
            |list: &[String], value: &str| list.iter().any(|item| item == "*" || item == value);
        has(&self.api_groups, request.group)
            && has(&self.resources, request.resource)
            && has(&self.verbs, request.verb)
            && (self.resource_names.is_empty()
                || request
                    .name
                    .is_some_and(|name| self.resource_names.iter().any(|n| n == name)))
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

/// Every verb a request can have, and so every verb a Role can name for the fake's resources.
pub const ALL_VERBS: [Verb; 7] = [
    Verb::Get,
    Verb::List,
    Verb::Watch,
    Verb::Create,
    Verb::Update,
    Verb::Delete,
    Verb::Patch,
];

fn verb_named(name: &str) -> Option<Verb> {
    ALL_VERBS.into_iter().find(|verb| verb_name(*verb) == name)
}
