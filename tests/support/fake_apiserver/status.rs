//! API errors as `metav1.Status` bodies, with the reasons and messages of the real API server.

use serde_json::{json, Value};

use super::resource::Resource;

/// A failed request: the HTTP code and the `metav1.Status` body sent with it.
#[derive(Clone, Debug, PartialEq)]
pub struct ApiError {
    /// The HTTP status code (also the `code` of the body).
    pub code: u16,
    /// The machine-readable `reason` (`Conflict`, `NotFound`, ...).
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

// === impl FieldError ===

impl FieldError {
    /// `field.Invalid(path, value, detail)`.
    pub fn invalid(field: &str, value: impl std::fmt::Display, detail: &str) -> FieldError {
        FieldError {
            field: field.to_owned(),
            reason: "FieldValueInvalid",
            body: format!("Invalid value: {value}: {detail}"),
        }
    }

    /// `field.Required(path, "")`.
    pub fn required(field: &str) -> FieldError {
        FieldError {
            field: field.to_owned(),
            reason: "FieldValueRequired",
            body: "Required value".to_owned(),
        }
    }

    /// `field.TooLong(path, value, max)` for a value measured in bytes.
    pub fn too_long(field: &str, max: usize) -> FieldError {
        FieldError {
            field: field.to_owned(),
            reason: "FieldValueTooLong",
            body: format!("Too long: may not be more than {max} bytes"),
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
    /// 404 `NotFound` for a named object.
    pub fn not_found(resource: Resource, name: &str) -> ApiError {
        let message = format!("{} \"{name}\" not found", resource.qualified_resource());
        ApiError::about(404, "NotFound", message, resource, name)
    }

    /// 404 `NotFound` for a URL that names no resource the fake serves.
    pub fn no_route() -> ApiError {
        ApiError::plain(
            404,
            "NotFound",
            "the server could not find the requested resource".to_owned(),
        )
    }

    /// 403 `Forbidden`, worded as the API server's RBAC authorizer words it.
    pub fn forbidden(
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
            "{object} is forbidden: User \"system:serviceaccount:{namespace}:test\" cannot {verb} resource \
             \"{}\" in API group \"{}\" in the namespace \"{namespace}\"",
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

    /// 409 `Conflict` with a custom cause (a failed UID or resourceVersion precondition on delete).
    pub fn precondition(resource: Resource, name: &str, cause: &str) -> ApiError {
        let message = format!(
            "Operation cannot be fulfilled on {} \"{name}\": {cause}",
            resource.qualified_resource()
        );
        ApiError::about(409, "Conflict", message, resource, name)
    }

    /// 422 `Invalid`; `kind` is printed as given (the real server says `leases.coordination.k8s.io` for a
    /// missing resourceVersion but `Lease.coordination.k8s.io` for validation failures).
    pub fn invalid(
        resource: Resource,
        kind: &str,
        name: &str,
        errors: Vec<FieldError>,
    ) -> ApiError {
        let printed: Vec<String> = errors
            .iter()
            .map(|e| format!("{}: {}", e.field, e.body))
            .collect();
        let joined = match printed.as_slice() {
            [one] => one.clone(),
            many => format!("[{}]", many.join(", ")),
        };
        let causes: Vec<Value> = errors
            .iter()
            .map(|e| json!({ "reason": e.reason, "message": e.body, "field": e.field }))
            .collect();
        ApiError {
            code: 422,
            reason: "Invalid",
            message: format!("{kind} \"{name}\" is invalid: {joined}"),
            details: Some(
                json!({ "name": name, "group": resource.group(), "kind": kind_only(kind), "causes": causes }),
            ),
        }
    }

    /// 400 `BadRequest`.
    pub fn bad_request(message: String) -> ApiError {
        ApiError::plain(400, "BadRequest", message)
    }

    /// 410 `Expired`: a resourceVersion older than the retained history.
    pub fn gone(requested: u64, oldest: u64) -> ApiError {
        ApiError::plain(
            410,
            "Expired",
            format!("too old resource version: {requested} ({oldest})"),
        )
    }

    /// 401 `Unauthorized`: no bearer token.
    pub fn unauthorized() -> ApiError {
        ApiError::plain(401, "Unauthorized", "Unauthorized".to_owned())
    }

    /// 405 `MethodNotAllowed`: a method the route does not take (POST on a named object, say).
    pub fn method_not_allowed(method: &axum::http::Method) -> ApiError {
        let message =
            format!("the server does not allow this method on the requested resource ({method})");
        ApiError::plain(405, "MethodNotAllowed", message)
    }

    /// 415 `UnsupportedMediaType`: a patch type the fake does not implement.
    pub fn unsupported_media_type(content_type: &str) -> ApiError {
        let message =
            format!("the fake API server supports merge patches only, not {content_type:?}");
        ApiError::plain(415, "UnsupportedMediaType", message)
    }

    /// 504 `Timeout`: a list at a resourceVersion the store has not reached.
    pub fn too_large_resource_version(requested: u64, current: u64) -> ApiError {
        let message = format!("Too large resource version: {requested}, current: {current}");
        ApiError::plain(504, "Timeout", message)
    }

    /// 500 `InternalError`.
    pub fn internal(message: String) -> ApiError {
        ApiError::plain(500, "InternalError", message)
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
            "reason": self.reason,
            "code": self.code,
        });
        if let Some(details) = &self.details {
            body["details"] = details.clone();
        }
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
        let details = json!({ "name": name, "group": resource.group(), "kind": resource.plural() });
        ApiError {
            code,
            reason,
            message,
            details: Some(details),
        }
    }
}

/// `Lease.coordination.k8s.io` → `Lease` (details carry the kind without the group).
fn kind_only(kind: &str) -> &str {
    kind.split('.').next().unwrap_or(kind)
}
