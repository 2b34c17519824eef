//! API errors as `metav1.Status` bodies, with the reasons and messages of the real API server
//! (kube-apiserver v1.37.2; each constructor names where the real server makes the same error).

use serde_json::{json, Map, Value};

use super::resource::Resource;

/// A failed request: the HTTP code and the `metav1.Status` body sent with it.
#[derive(Clone, Debug, PartialEq)]
pub struct ApiError {
    /// The HTTP status code (also the `code` of the body).
    pub code: u16,
    /// The machine-readable `reason` (`Conflict`, `NotFound`, ...); empty: none (an internal error).
    pub reason: &'static str,
    /// The human-readable `message`.
    pub message: String,
    /// The `details` object, if any.
    pub details: Option<Value>,
}

/// One field problem of an `Invalid` (422) error, as apimachinery's `field.Error`.
#[derive(Clone, Debug, PartialEq)]
pub struct FieldError {
    /// The JSON path of the field (`spec.leaseDurationSeconds`).
    pub field: String,
    /// The cause reason (`FieldValueInvalid`, `FieldValueRequired`, `FieldValueForbidden`).
    pub reason: &'static str,
    /// The body of the message, as `field.Error.ErrorBody()` prints it.
    pub body: String,
}

/// The bad value of a [`FieldError::invalid`], printed as `field.Error.ErrorBody()` prints it: strings
/// quoted (Go's `%q`), numbers bare.
#[derive(Clone, Debug, PartialEq)]
pub enum BadValue {
    /// A string (`"x"`).
    Str(String),
    /// An integer (`0`).
    Int(i64),
    /// Anything else, printed as JSON (Go marshals the value).
    Json(String),
}

// === impl BadValue ===

impl From<&str> for BadValue {
    fn from(value: &str) -> BadValue {
        BadValue::Str(value.to_owned())
    }
}

impl From<String> for BadValue {
    fn from(value: String) -> BadValue {
        BadValue::Str(value)
    }
}

impl From<i64> for BadValue {
    fn from(value: i64) -> BadValue {
        BadValue::Int(value)
    }
}

impl std::fmt::Display for BadValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BadValue::Str(text) => f.write_str(&go_quote(text)),
            BadValue::Int(n) => write!(f, "{n}"),
            BadValue::Json(json) => f.write_str(json),
        }
    }
}

// === impl FieldError ===

impl FieldError {
    /// `field.Invalid(path, value, detail)`.
    pub fn invalid(field: &str, value: impl Into<BadValue>, detail: &str) -> FieldError {
        let mut body = format!("Invalid value: {}", value.into());
        if !detail.is_empty() {
            body.push_str(": ");
            body.push_str(detail);
        }
        FieldError {
            field: field.to_owned(),
            reason: "FieldValueInvalid",
            body,
        }
    }

    /// `field.Required(path, detail)`.
    pub fn required(field: &str, detail: &str) -> FieldError {
        let body = if detail.is_empty() {
            "Required value".to_owned()
        } else {
            format!("Required value: {detail}")
        };
        FieldError {
            field: field.to_owned(),
            reason: "FieldValueRequired",
            body,
        }
    }

    /// `field.TooLong(path, value, max)`.
    pub fn too_long(field: &str, max: usize) -> FieldError {
        FieldError {
            field: field.to_owned(),
            reason: "FieldValueTooLong",
            body: format!("Too long: may not be more than {max} bytes"),
        }
    }

    /// `field.NotSupported(path, value, supported)`.
    pub fn not_supported(field: &str, value: &str, supported: &[&str]) -> FieldError {
        let supported: Vec<String> = supported.iter().map(|s| go_quote(s)).collect();
        FieldError {
            field: field.to_owned(),
            reason: "FieldValueNotSupported",
            body: format!(
                "Unsupported value: {}: supported values: {}",
                go_quote(value),
                supported.join(", ")
            ),
        }
    }

    /// `field.Forbidden(path, detail)`.
    pub fn forbidden(field: &str, detail: &str) -> FieldError {
        FieldError {
            field: field.to_owned(),
            reason: "FieldValueForbidden",
            body: format!("Forbidden: {detail}"),
        }
    }
}

// === impl ApiError ===

impl ApiError {
    /// 404 `NotFound` for a named object (`errors.NewNotFound`).
    pub fn not_found(resource: Resource, name: &str) -> ApiError {
        let message = format!("{} \"{name}\" not found", resource.qualified_resource());
        ApiError::about(404, "NotFound", message, resource, name)
    }

    /// 404 `NotFound` for a URL that names no resource the fake serves.
    pub fn no_route() -> ApiError {
        ApiError {
            details: Some(json!({})),
            ..ApiError::plain(
                404,
                "NotFound",
                "the server could not find the requested resource".to_owned(),
            )
        }
    }

    /// 403 `Forbidden`, worded as the API server's RBAC authorizer words it for `user` (the fake's
    /// users are their bearer tokens, as the proxy's are; `system:anonymous` without one).
    pub fn forbidden(
        user: &str,
        verb: &str,
        resource: Resource,
        namespace: &str,
        name: Option<&str>,
    ) -> ApiError {
        let object = match name {
            Some(name) => format!("{} \"{name}\"", resource.qualified_resource()),
            None => resource.qualified_resource(),
        };
        let message = format!(
            "{object} is forbidden: User \"{user}\" cannot {verb} resource \"{}\" in API group \"{}\" in \
             the namespace \"{namespace}\"",
            resource.plural(),
            resource.group()
        );
        ApiError::about(
            403,
            "Forbidden",
            message,
            resource,
            name.unwrap_or_default(),
        )
    }

    /// 403 `Forbidden` for a path outside the served resources.
    pub fn forbidden_path(user: &str, verb: &str, path: &str) -> ApiError {
        let message = format!("forbidden: User \"{user}\" cannot {verb} path \"{path}\"");
        ApiError::plain(403, "Forbidden", message)
    }

    /// 409 `AlreadyExists` on create.
    pub fn already_exists(resource: Resource, name: &str) -> ApiError {
        let message = format!(
            "{} \"{name}\" already exists",
            resource.qualified_resource()
        );
        ApiError::about(409, "AlreadyExists", message, resource, name)
    }

    /// 409 `Conflict`: the resourceVersion precondition failed.
    pub fn conflict(resource: Resource, name: &str) -> ApiError {
        let message = format!(
            "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your \
             changes to the latest version and try again",
            resource.qualified_resource()
        );
        ApiError::about(409, "Conflict", message, resource, name)
    }

    /// 409 `Conflict` of a delete whose precondition failed: the registry names the object by its kind
    /// (`Lease.coordination.k8s.io`, `ConfigMap`), as `rest.BeforeDelete` does.
    pub fn delete_precondition(resource: Resource, name: &str, cause: &str) -> ApiError {
        let message = format!(
            "Operation cannot be fulfilled on {} \"{name}\": {cause}",
            resource.qualified_kind()
        );
        ApiError {
            code: 409,
            reason: "Conflict",
            message,
            details: Some(details(resource.group(), resource.kind(), name)),
        }
    }

    /// 409 `Conflict` of an update whose body carries another `metadata.uid`: etcd3's precondition
    /// check fails with a `StorageError` that the registry wraps as a conflict.
    pub fn uid_precondition(
        resource: Resource,
        namespace: &str,
        name: &str,
        sent: &str,
        stored: &str,
    ) -> ApiError {
        let message = format!(
            "Operation cannot be fulfilled on {} \"{name}\": StorageError: invalid object, Code: 4, Key: \
             /registry/{}/{namespace}/{name}, ResourceVersion: 0, AdditionalErrorMsg: Precondition failed: \
             UID in precondition: {sent}, UID in object meta: {stored}",
            resource.qualified_resource(),
            resource.plural()
        );
        ApiError::about(409, "Conflict", message, resource, name)
    }

    /// 422 `Invalid` (`errors.NewInvalid`); `kind` is printed as given (the real server says
    /// `leases.coordination.k8s.io` for a missing resourceVersion but `Lease.coordination.k8s.io` for
    /// validation failures). Identical messages are printed once, as `ErrorList.ToAggregate` does.
    pub fn invalid(
        resource: Resource,
        kind: &str,
        name: &str,
        errors: Vec<FieldError>,
    ) -> ApiError {
        let mut printed: Vec<String> = Vec::new();
        for error in &errors {
            let line = format!("{}: {}", error.field, error.body);
            if !printed.contains(&line) {
                printed.push(line);
            }
        }
        let joined = match printed.as_slice() {
            [one] => one.clone(),
            many => format!("[{}]", many.join(", ")),
        };
        let causes: Vec<Value> = errors
            .iter()
            .map(|e| json!({ "reason": e.reason, "message": e.body, "field": e.field }))
            .collect();
        let mut details = details(resource.group(), kind_only(kind), name);
        details["causes"] = json!(causes);
        ApiError {
            code: 422,
            reason: "Invalid",
            message: format!("{kind} {} is invalid: {joined}", go_quote(name)),
            details: Some(details),
        }
    }

    /// 422 `Invalid` of request options (`ListOptions`, `PatchOptions`), as the real server words it.
    pub fn invalid_options(kind: &str, errors: Vec<FieldError>) -> ApiError {
        let mut error = ApiError::invalid(Resource::Leases, kind, "", errors);
        error.details = error.details.map(|mut details| {
            details["group"] = json!("meta.k8s.io");
            details
        });
        error
    }

    /// 400 `BadRequest`.
    pub fn bad_request(message: String) -> ApiError {
        ApiError::plain(400, "BadRequest", message)
    }

    /// 410 `Expired` of a watch from a resourceVersion the watch cache no longer holds (leases and
    /// configmaps are watched through the cache).
    pub fn gone(requested: u64, oldest: u64) -> ApiError {
        ApiError::plain(
            410,
            "Expired",
            format!("too old resource version: {requested} ({oldest})"),
        )
    }

    /// 410 `Expired` of a watch served by etcd (events have no watch cache) from a compacted revision.
    pub fn watch_compacted() -> ApiError {
        ApiError::plain(
            410,
            "Expired",
            "The resourceVersion for the provided watch is too old.".to_owned(),
        )
    }

    /// 410 `Expired` of a list at an exact resourceVersion etcd has compacted.
    pub fn list_compacted() -> ApiError {
        ApiError::plain(
            410,
            "Expired",
            "The resourceVersion for the provided list is too old.".to_owned(),
        )
    }

    /// 410 `Expired` of a `continue` token whose version etcd has compacted (the body also carries a
    /// token to continue at the latest version).
    pub fn continue_compacted() -> ApiError {
        ApiError::plain(
            410,
            "Expired",
            "The provided continue parameter is too old to display a consistent list result. You can start a \
             new list without the continue parameter, or use the continue token in this response to retrieve \
             the remainder of the results. Continuing with the provided token results in an inconsistent list \
             - objects that were created, modified, or deleted between the time the first chunk was returned \
             and now may show up in the list."
                .to_owned(),
        )
    }

    /// 413 `RequestEntityTooLarge`: a body over the API server's 3 MiB limit.
    pub fn too_large_body(limit: usize) -> ApiError {
        ApiError::plain(
            413,
            "RequestEntityTooLarge",
            format!("Request entity too large: limit is {limit}"),
        )
    }

    /// 405 `MethodNotAllowed`: a method the route does not take (POST on a named object, say).
    pub fn method_not_allowed() -> ApiError {
        ApiError {
            details: Some(json!({})),
            ..ApiError::plain(
                405,
                "MethodNotAllowed",
                "the server does not allow this method on the requested resource".to_owned(),
            )
        }
    }

    /// 415 `UnsupportedMediaType`: a patch type the real server does not know.
    pub fn unsupported_media_type() -> ApiError {
        ApiError::plain(
            415,
            "UnsupportedMediaType",
            "415: Unsupported Media Type".to_owned(),
        )
    }

    /// 415 `UnsupportedMediaType` for server-side apply, which the real server supports and the fake does
    /// not (field ownership is beyond it): the message says so.
    pub fn apply_unsupported() -> ApiError {
        ApiError::plain(
            415,
            "UnsupportedMediaType",
            "the fake API server does not implement server-side apply (application/apply-patch+yaml)"
                .to_owned(),
        )
    }

    /// 504 `Timeout`: a read at a resourceVersion the store has not reached.
    pub fn too_large_resource_version(requested: u64, current: u64) -> ApiError {
        let message =
            format!("Timeout: Too large resource version: {requested}, current: {current}");
        ApiError {
            code: 504,
            reason: "Timeout",
            message,
            details: Some(json!({
                "causes": [{ "reason": "ResourceVersionTooLarge", "message": "Too large resource version" }],
                "retryAfterSeconds": 1,
            })),
        }
    }

    /// 500 without a reason (`errors.NewInternalError` of a plain error from storage, as etcd3's
    /// "resourceVersion should not be set on objects to be created").
    pub fn internal(message: String) -> ApiError {
        ApiError::plain(500, "", message)
    }

    /// An injected failure with status `code` (5xx or 429), with the reason the real server uses for it.
    pub fn injected(code: u16) -> ApiError {
        let reason = match code {
            429 => "TooManyRequests",
            503 => "ServiceUnavailable",
            504 => "Timeout",
            _ => "InternalError",
        };
        ApiError::plain(code, reason, format!("injected fault: HTTP {code}"))
    }

    /// The `metav1.Status` JSON body.
    pub fn body(&self) -> Value {
        let mut body = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
        });
        if !self.reason.is_empty() {
            body["reason"] = json!(self.reason);
        }
        if let Some(details) = &self.details {
            body["details"] = details.clone();
        }
        body["code"] = json!(self.code);
        body
    }

    fn plain(code: u16, reason: &'static str, message: String) -> ApiError {
        ApiError {
            code,
            reason,
            message,
            details: None,
        }
    }

    fn about(
        code: u16,
        reason: &'static str,
        message: String,
        resource: Resource,
        name: &str,
    ) -> ApiError {
        ApiError {
            code,
            reason,
            message,
            details: Some(details(resource.group(), resource.plural(), name)),
        }
    }
}

/// `StatusDetails` as Go serializes it: empty `name` and `group` are left out.
pub fn details(group: &str, kind: &str, name: &str) -> Value {
    let mut details = Map::new();
    if !name.is_empty() {
        details.insert("name".to_owned(), json!(name));
    }
    if !group.is_empty() {
        details.insert("group".to_owned(), json!(group));
    }
    if !kind.is_empty() {
        details.insert("kind".to_owned(), json!(kind));
    }
    Value::Object(details)
}

/// `Lease.coordination.k8s.io` → `Lease` (details carry the kind without the group).
fn kind_only(kind: &str) -> &str {
    kind.split('.').next().unwrap_or(kind)
}

/// Go's `strconv.Quote`: double quotes, with `"`, `\` and non-printable characters escaped.
pub fn go_quote(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
