//! What the real API server does with a request body before it stores it: decoding (400), preparing
//! (dropping disabled fields) and validation (422), with the real server's messages.
//!
//! Decoding follows the Go types ([`schema`]): `kind`/`apiVersion` are checked as the API server's
//! scheme checks them, a wrongly typed field is a 400 with Go's `json: cannot unmarshal` message, an
//! unknown field is dropped with a `Warning` (the default `fieldValidation=Warn`), timestamps are parsed
//! as Go parses them ([`gotime`]) and printed back in UTC, and empty values Go leaves out are left out.
//! Validation mirrors apimachinery's `ValidateObjectMeta` (name, generateName, labels, annotations),
//! coordination's `ValidateLeaseSpec`, core's `ValidateConfigMap`/`ValidateConfigMapUpdate` and
//! `ValidateEventCreate`/`ValidateEventUpdate` (strict for `events.k8s.io/v1`, the legacy rules only for
//! core `v1` events), as of Kubernetes v1.37.2.

mod gotime;
mod schema;

use serde_json::{json, Map, Value};

use super::resource::Resource;
use super::status::{go_quote, ApiError, BadValue, FieldError};
pub use gotime::MICRO_TIME_LAYOUT;
use schema::{Schema, Ty};

/// The longest DNS-1123 subdomain.
const MAX_NAME_LEN: usize = 253;
/// The most bytes of values a ConfigMap may hold (`core.MaxSecretSize`, 1 MiB).
pub const MAX_CONFIG_MAP_BYTES: usize = 1024 * 1024;
/// The most bytes of annotations (keys and values) an object may carry.
const MAX_ANNOTATION_BYTES: usize = 256 * 1024;
/// The longest ConfigMap key.
const MAX_CONFIG_MAP_KEY_LEN: usize = 253;
/// The longest name part of a qualified name (label key) and the longest label value.
const MAX_QUALIFIED_NAME_LEN: usize = 63;
/// Event field limits (`ReportingInstanceLengthLimit`, `ActionLengthLimit`, `ReasonLengthLimit`).
const EVENT_SHORT_FIELD_LIMIT: usize = 128;
/// `NoteLengthLimit`.
const EVENT_NOTE_LIMIT: usize = 1024;

const DNS_SUBDOMAIN_MESSAGE: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric \
     characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex \
     used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
const QUALIFIED_NAME_MESSAGE: &str = "must consist of alphanumeric characters, '-', '_' or '.', and must \
     start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used \
     for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";
const LABEL_VALUE_MESSAGE: &str = "a valid label must be an empty string or consist of alphanumeric \
     characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or \
     'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')";
const CONFIG_MAP_KEY_MESSAGE: &str = "a valid config key must consist of alphanumeric characters, '-', '_' \
     or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')";

/// A decoded request body and the warnings decoding it raised (unknown fields).
#[derive(Clone, Debug)]
pub struct Decoded {
    /// The object, as the server would store it.
    pub object: Value,
    /// `Warning` header texts (`unknown field "spec.x"`).
    pub warnings: Vec<String>,
}

/// Decodes a request body as an object of `resource` (400 on failure).
pub fn decode(resource: Resource, body: &[u8]) -> Result<Decoded, ApiError> {
    let object: Value = serde_json::from_slice(body).map_err(|e| {
        unrecognized(
            resource,
            &format!("couldn't get version/kind; json parse error: {e}"),
        )
    })?;
    decode_value(resource, object)
}

/// Decodes an already parsed body (a patch's result) as an object of `resource` (400 on failure).
pub fn decode_value(resource: Resource, mut object: Value) -> Result<Decoded, ApiError> {
    let Some(fields) = object.as_object() else {
        let why = format!(
            "couldn't get version/kind; json parse error: json: cannot unmarshal {} into Go value of type \
             struct {{ APIVersion string \"json:\\\"apiVersion,omitempty\\\"\"; Kind string \
             \"json:\\\"kind,omitempty\\\"\" }}",
            json_type(&object)
        );
        return Err(unrecognized(resource, &why));
    };
    let mut type_meta = [
        resource.kind().to_owned(),
        resource.api_version().to_owned(),
    ];
    for (slot, field) in type_meta.iter_mut().zip(["kind", "apiVersion"]) {
        match fields.get(field) {
            None | Some(Value::Null) => {}
            Some(Value::String(text)) if text.is_empty() => {}
            Some(Value::String(text)) => text.clone_into(slot),
            Some(other) => {
                let why = format!(
                    "couldn't get version/kind; json parse error: json: cannot unmarshal {} into Go struct \
                     field .{field} of type string",
                    json_type(other)
                );
                return Err(unrecognized(resource, &why));
            }
        }
    }
    let [kind, api_version] = type_meta;
    let version = api_version
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .to_owned();
    let cannot = |why: String| {
        ApiError::bad_request(format!(
            "{kind} in version {} cannot be handled as a {}: {why}",
            go_quote(&version),
            resource.kind()
        ))
    };
    match internal_type(&api_version, &kind) {
        None => {
            return Err(cannot(format!(
                "no kind {} is registered for version {} in scheme \"pkg/runtime/scheme.go:111\"",
                go_quote(&kind),
                go_quote(&api_version)
            )))
        }
        Some(internal) if internal != internal_type_of(resource) => {
            return Err(cannot(format!(
                "converting ({version}.{kind}) to ({}): unknown conversion",
                internal_type_of(resource)
            )))
        }
        Some(_) => {}
    }
    let mut warnings = Vec::new();
    walk_struct(&mut object, schema_of(resource), "", &mut warnings).map_err(cannot)?;
    if api_version != resource.api_version() {
        return Err(ApiError::bad_request(format!(
            "the API version in the data ({api_version}) does not match the expected API version ({})",
            resource.api_version()
        )));
    }
    object["kind"] = json!(resource.kind());
    object["apiVersion"] = json!(resource.api_version());
    Ok(Decoded { object, warnings })
}

fn unrecognized(resource: Resource, why: &str) -> ApiError {
    ApiError::bad_request(format!(
        "the object provided is unrecognized (must be of type {}): {why}",
        resource.kind()
    ))
}

/// The internal Go type a registered (apiVersion, kind) decodes into, for the kinds near the fake's.
fn internal_type(api_version: &str, kind: &str) -> Option<&'static str> {
    const CORE_KINDS: [&str; 14] = [
        "Binding",
        "ConfigMap",
        "Endpoints",
        "Event",
        "LimitRange",
        "Namespace",
        "Node",
        "PersistentVolume",
        "PersistentVolumeClaim",
        "Pod",
        "PodTemplate",
        "ResourceQuota",
        "Secret",
        "ServiceAccount",
    ];
    match (api_version, kind) {
        ("coordination.k8s.io/v1" | "coordination.k8s.io/v1beta1", "Lease") => {
            Some("coordination.Lease")
        }
        ("events.k8s.io/v1" | "events.k8s.io/v1beta1", "Event") | ("v1", "Event") => {
            Some("core.Event")
        }
        ("v1", kind) if CORE_KINDS.contains(&kind) => Some(match kind {
            "ConfigMap" => "core.ConfigMap",
            _ => "core.Other",
        }),
        _ => None,
    }
}

fn internal_type_of(resource: Resource) -> &'static str {
    match resource {
        Resource::Leases => "coordination.Lease",
        Resource::ConfigMaps => "core.ConfigMap",
        Resource::CoreEvents | Resource::Events => "core.Event",
    }
}

fn schema_of(resource: Resource) -> &'static Schema {
    match resource {
        Resource::Leases => &schema::LEASE,
        Resource::ConfigMaps => &schema::CONFIG_MAP,
        Resource::CoreEvents => &schema::CORE_EVENT,
        Resource::Events => &schema::EVENT,
    }
}

/// Checks and normalizes a struct's fields in place; an error is Go's decoding error text.
fn walk_struct(
    value: &mut Value,
    schema: &'static Schema,
    path: &str,
    warnings: &mut Vec<String>,
) -> Result<(), String> {
    let Value::Object(fields) = value else {
        unreachable!("walk_struct is called on objects only");
    };
    let names: Vec<String> = fields.keys().cloned().collect();
    for name in names {
        let field_path = if path.is_empty() {
            name.clone()
        } else {
            format!("{path}.{name}")
        };
        let Some(ty) = schema.field(&name) else {
            fields.remove(&name);
            warnings.push(format!("unknown field {}", go_quote(&field_path)));
            continue;
        };
        let Some(field) = fields.get_mut(&name) else {
            continue;
        };
        if field.is_null() {
            fields.remove(&name);
            continue;
        }
        walk(field, ty, &field_path, schema, warnings)?;
        if is_left_out(field, ty) {
            fields.remove(&name);
        }
    }
    Ok(())
}

/// Checks one value of type `ty` at `path` in the struct `parent`.
fn walk(
    value: &mut Value,
    ty: Ty,
    path: &str,
    parent: &'static Schema,
    warnings: &mut Vec<String>,
) -> Result<(), String> {
    let mismatch = |value: &Value, go_type: String| {
        let found = match value {
            Value::Number(n)
                if matches!(ty, Ty::Int32 | Ty::Int32Keep | Ty::Int64 | Ty::Int64Keep) =>
            {
                format!("number {n}")
            }
            other => json_type(other).to_owned(),
        };
        format!(
            "json: cannot unmarshal {found} into Go struct field {}.{path} of type {go_type}",
            parent.short_name()
        )
    };
    match ty {
        Ty::Str | Ty::StrKeep => {
            if !value.is_string() {
                return Err(mismatch(value, ty.go_type()));
            }
        }
        Ty::Bool => {
            if !value.is_boolean() {
                return Err(mismatch(value, ty.go_type()));
            }
        }
        Ty::Int32 | Ty::Int32Keep | Ty::Int64 | Ty::Int64Keep => {
            let fits = match ty {
                Ty::Int32 | Ty::Int32Keep => {
                    value.as_i64().is_some_and(|n| i32::try_from(n).is_ok())
                }
                _ => value.as_i64().is_some(),
            };
            if !fits {
                return Err(mismatch(value, ty.go_type()));
            }
        }
        Ty::MicroTime | Ty::Time => {
            let Some(text) = value.as_str() else {
                return Err(mismatch(value, ty.go_type()));
            };
            let printed = if matches!(ty, Ty::MicroTime) {
                gotime::parse_micro_time(text)?
            } else {
                gotime::parse_time(text)?
            };
            *value = json!(printed);
        }
        Ty::MapStr | Ty::MapBytes => {
            let Value::Object(entries) = value else {
                return Err(mismatch(value, ty.go_type()));
            };
            for entry in entries.values_mut() {
                match entry {
                    Value::Null => *entry = json!(""),
                    Value::String(text) if matches!(ty, Ty::MapBytes) => {
                        base64_decoded_len(text)?;
                    }
                    Value::String(_) => {}
                    other => {
                        let item = if matches!(ty, Ty::MapBytes) {
                            "[]uint8"
                        } else {
                            "string"
                        };
                        return Err(mismatch(other, item.to_owned()));
                    }
                }
            }
        }
        Ty::Any => {}
        Ty::Obj(schema) => {
            if !value.is_object() {
                return Err(mismatch(value, ty.go_type()));
            }
            walk_struct(value, schema, path, warnings)?;
        }
        Ty::List(item) => {
            let Value::Array(items) = value else {
                return Err(mismatch(value, ty.go_type()));
            };
            for (index, element) in items.iter_mut().enumerate() {
                if element.is_null() {
                    continue;
                }
                let element_parent = match item {
                    Ty::Obj(schema) => schema,
                    _ => parent,
                };
                match item {
                    Ty::Obj(schema) => {
                        if !element.is_object() {
                            return Err(mismatch(element, item.go_type()));
                        }
                        walk_struct(element, schema, &format!("{path}[{index}]"), warnings)?;
                    }
                    other => walk(element, *other, path, element_parent, warnings)?,
                }
            }
        }
    }
    Ok(())
}

/// Whether Go leaves the value out when it prints the object (`omitempty` on a non-pointer field).
fn is_left_out(value: &Value, ty: Ty) -> bool {
    match ty {
        Ty::Str => value.as_str() == Some(""),
        Ty::Int32 | Ty::Int64 => value.as_i64() == Some(0),
        Ty::MapStr | Ty::MapBytes => value.as_object().is_some_and(Map::is_empty),
        Ty::List(_) => value.as_array().is_some_and(Vec::is_empty),
        _ => false,
    }
}

/// The JSON type of `value` as Go's decoder names it in its messages.
pub(super) fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// The decoded length of standard base64 (as Go's `base64.StdEncoding`), or Go's error.
fn base64_decoded_len(text: &str) -> Result<usize, String> {
    let bytes = text.as_bytes();
    let body_len = bytes.iter().take_while(|&&b| b != b'=').count();
    let alphabet = |b: u8| b.is_ascii_alphanumeric() || b == b'+' || b == b'/';
    if let Some(bad) = bytes[..body_len].iter().position(|&b| !alphabet(b)) {
        return Err(format!("illegal base64 data at input byte {bad}"));
    }
    let padding = bytes.len() - body_len;
    let valid_padding = bytes[body_len..].iter().all(|&b| b == b'=')
        && bytes.len() % 4 == 0
        && padding <= 2
        && body_len % 4 != 1;
    if !valid_padding {
        let at = if bytes.len() % 4 == 0 {
            body_len
        } else {
            bytes.len() / 4 * 4
        };
        return Err(format!("illegal base64 data at input byte {at}"));
    }
    Ok(body_len * 3 / 4)
}

/// What the registry strategy's `PrepareForCreate` does: Leases lose `strategy` and `preferredHolder`
/// (the `CoordinatedLeaderElection` feature gate is off by default in v1.37).
pub fn prepare_for_create(resource: Resource, object: &mut Value) {
    if resource == Resource::Leases {
        if let Some(spec) = object.get_mut("spec").and_then(Value::as_object_mut) {
            spec.remove("strategy");
            spec.remove("preferredHolder");
        }
    }
}

/// What `PrepareForUpdate` does: a Lease keeps `strategy`/`preferredHolder` only if the old one had them.
pub fn prepare_for_update(resource: Resource, object: &mut Value, old: &Value) {
    if resource == Resource::Leases {
        for field in ["strategy", "preferredHolder"] {
            if old["spec"][field].is_null() {
                if let Some(spec) = object.get_mut("spec").and_then(Value::as_object_mut) {
                    spec.remove(field);
                }
            }
        }
    }
}

/// Adds the fields Go always prints (non-pointer structs and timestamps without `omitempty`).
pub fn fill_defaults(resource: Resource, object: &mut Value) {
    let defaults = match resource {
        Resource::Leases => json!({ "spec": {} }),
        Resource::ConfigMaps => json!({}),
        Resource::CoreEvents => json!({
            "involvedObject": {}, "source": {}, "firstTimestamp": null, "lastTimestamp": null,
            "eventTime": null, "reportingComponent": "", "reportingInstance": "",
        }),
        Resource::Events => json!({
            "eventTime": null, "regarding": {}, "deprecatedSource": {},
            "deprecatedFirstTimestamp": null, "deprecatedLastTimestamp": null,
        }),
    };
    if let (Value::Object(object), Value::Object(defaults)) = (object, defaults) {
        for (field, value) in defaults {
            let slot = object.entry(field).or_insert(Value::Null);
            if slot.is_null() {
                *slot = value;
            }
        }
    }
}

/// Validates a new object as the registry does before creating it (422 `Invalid`).
pub fn validate_create(resource: Resource, object: &Value) -> Result<(), ApiError> {
    let mut errors = Vec::new();
    match resource {
        Resource::Leases => {
            object_meta_errors(&object["metadata"], &mut errors);
            errors.extend(lease_spec_errors(&object["spec"]));
        }
        Resource::ConfigMaps => {
            object_meta_errors(&object["metadata"], &mut errors);
            errors.extend(config_map_errors(object));
        }
        Resource::CoreEvents => {
            if str_at(object, "/metadata/name").is_empty() {
                errors.push(FieldError::required(
                    "metadata.name",
                    "name or generateName is required",
                ));
            }
            errors.extend(legacy_event_errors(resource, object));
        }
        Resource::Events => {
            errors.extend(legacy_event_errors(resource, object));
            object_meta_errors(&object["metadata"], &mut errors);
            errors.extend(event_series_errors(object));
            errors.extend(strict_event_errors(object));
        }
    }
    result(resource, object, errors)
}

/// Validates an update of `old` to `object` as the registry does (422 `Invalid`); metadata's
/// resourceVersion and uid are checked before this, by the store.
pub fn validate_update(resource: Resource, object: &Value, old: &Value) -> Result<(), ApiError> {
    let mut errors = Vec::new();
    match resource {
        Resource::Leases => {
            meta_update_errors(&object["metadata"], &mut errors);
            errors.extend(lease_spec_errors(&object["spec"]));
        }
        Resource::ConfigMaps => {
            meta_update_errors(&object["metadata"], &mut errors);
            if old["immutable"] == json!(true) {
                let why = "field is immutable when `immutable` is set";
                if object["immutable"] != json!(true) {
                    errors.push(FieldError::forbidden("immutable", why));
                }
                for field in ["data", "binaryData"] {
                    if object[field] != old[field] {
                        errors.push(FieldError::forbidden(field, why));
                    }
                }
            }
            object_meta_errors(&object["metadata"], &mut errors);
            errors.extend(config_map_errors(object));
        }
        Resource::CoreEvents => errors.extend(legacy_event_errors(resource, object)),
        Resource::Events => {
            errors.extend(legacy_event_errors(resource, object));
            meta_update_errors(&object["metadata"], &mut errors);
            if object["series"] != old["series"] {
                errors.extend(event_series_errors(object));
            }
            errors.extend(event_immutable_errors(object, old));
        }
    }
    result(resource, object, errors)
}

fn result(resource: Resource, object: &Value, errors: Vec<FieldError>) -> Result<(), ApiError> {
    if errors.is_empty() {
        return Ok(());
    }
    let mut error = ApiError::invalid(
        resource,
        &resource.qualified_internal_kind(),
        str_at(object, "/metadata/name"),
        errors,
    );
    if matches!(resource, Resource::CoreEvents | Resource::Events) {
        // The internal type of both kinds of events is the core group's Event.
        if let Some(details) = error.details.as_mut().and_then(Value::as_object_mut) {
            details.remove("group");
        }
    }
    Err(error)
}

fn str_at<'a>(object: &'a Value, pointer: &str) -> &'a str {
    object
        .pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_default()
}

/// `ValidateObjectMeta` with `NameIsDNSSubdomain`: generateName, name, labels, annotations.
fn object_meta_errors(meta: &Value, errors: &mut Vec<FieldError>) {
    let generate_name = meta["generateName"].as_str().unwrap_or_default();
    if !generate_name.is_empty() {
        // A prefix may end in '-': Go masks it before checking.
        let masked = match generate_name.strip_suffix('-') {
            Some(rest) if !rest.is_empty() => format!("{rest}a"),
            _ => generate_name.to_owned(),
        };
        for why in dns_subdomain_errors(&masked) {
            errors.push(FieldError::invalid(
                "metadata.generateName",
                generate_name,
                why,
            ));
        }
    }
    let name = meta["name"].as_str().unwrap_or_default();
    if name.is_empty() {
        errors.push(FieldError::required(
            "metadata.name",
            "name or generateName is required",
        ));
    } else {
        for why in dns_subdomain_errors(name) {
            errors.push(FieldError::invalid("metadata.name", name, why));
        }
    }
    labels_and_annotations_errors(meta, errors);
}

/// The part of `ValidateObjectMetaUpdate` not checked elsewhere: labels and annotations.
fn meta_update_errors(meta: &Value, errors: &mut Vec<FieldError>) {
    labels_and_annotations_errors(meta, errors);
}

fn labels_and_annotations_errors(meta: &Value, errors: &mut Vec<FieldError>) {
    for (key, value) in meta["labels"].as_object().into_iter().flatten() {
        for why in qualified_name_errors(key) {
            errors.push(FieldError::invalid("metadata.labels", key.as_str(), &why));
        }
        let value = value.as_str().unwrap_or_default();
        if value.len() > MAX_QUALIFIED_NAME_LEN {
            errors.push(FieldError::invalid(
                "metadata.labels",
                value,
                &format!("must be no more than {MAX_QUALIFIED_NAME_LEN} characters"),
            ));
        }
        if !value.is_empty() && !is_qualified_name_part(value) {
            errors.push(FieldError::invalid(
                "metadata.labels",
                value,
                LABEL_VALUE_MESSAGE,
            ));
        }
    }
    let mut total = 0;
    for (key, value) in meta["annotations"].as_object().into_iter().flatten() {
        for why in qualified_name_errors(&key.to_lowercase()) {
            errors.push(FieldError::invalid(
                "metadata.annotations",
                key.as_str(),
                &why,
            ));
        }
        total += key.len() + value.as_str().unwrap_or_default().len();
    }
    if total > MAX_ANNOTATION_BYTES {
        errors.push(FieldError::too_long(
            "metadata.annotations",
            MAX_ANNOTATION_BYTES,
        ));
    }
}

/// The first of `IsQualifiedName`'s complaints about a label key, if any (for selectors).
pub fn label_key_error(key: &str) -> Option<String> {
    qualified_name_errors(key).into_iter().next()
}

/// `IsValidLabelValue`'s first complaint, if any (for selectors).
pub fn label_value_error(value: &str) -> Option<String> {
    if value.len() > MAX_QUALIFIED_NAME_LEN {
        return Some(format!(
            "must be no more than {MAX_QUALIFIED_NAME_LEN} characters"
        ));
    }
    (!value.is_empty() && !is_qualified_name_part(value)).then(|| LABEL_VALUE_MESSAGE.to_owned())
}

/// `IsDNS1123Subdomain`.
fn dns_subdomain_errors(name: &str) -> Vec<&'static str> {
    let mut errors = Vec::new();
    if name.len() > MAX_NAME_LEN {
        errors.push("must be no more than 253 characters");
    }
    if !is_dns_subdomain(name) {
        errors.push(DNS_SUBDOMAIN_MESSAGE);
    }
    errors
}

/// A lowercase RFC 1123 subdomain: dot-separated labels of `[a-z0-9-]`, each starting and ending with an
/// alphanumeric character.
fn is_dns_subdomain(name: &str) -> bool {
    let label_ok = |label: &str| {
        let alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
        label.chars().all(|c| alnum(c) || c == '-')
            && label.chars().next().is_some_and(alnum)
            && label.chars().last().is_some_and(alnum)
    };
    name.split('.').all(label_ok)
}

/// `IsQualifiedName`: an optional DNS subdomain prefix and `/`, then a name part of at most 63
/// characters.
fn qualified_name_errors(value: &str) -> Vec<String> {
    let mut errors = Vec::new();
    let parts: Vec<&str> = value.split('/').collect();
    let name = match parts.as_slice() {
        [name] => *name,
        [prefix, name] => {
            if prefix.is_empty() {
                errors.push("prefix part must be non-empty".to_owned());
            } else {
                errors.extend(
                    dns_subdomain_errors(prefix)
                        .into_iter()
                        .map(|why| format!("prefix part {why}")),
                );
            }
            *name
        }
        _ => {
            return vec![format!(
                "a qualified name {QUALIFIED_NAME_MESSAGE} with an optional DNS subdomain prefix and '/' \
                 (e.g. 'example.com/MyName')"
            )]
        }
    };
    if name.is_empty() {
        errors.push("name part must be non-empty".to_owned());
    } else if name.len() > MAX_QUALIFIED_NAME_LEN {
        errors.push(format!(
            "name part must be no more than {MAX_QUALIFIED_NAME_LEN} characters"
        ));
    }
    if !is_qualified_name_part(name) {
        errors.push(format!("name part {QUALIFIED_NAME_MESSAGE}"));
    }
    errors
}

/// `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`.
fn is_qualified_name_part(name: &str) -> bool {
    let alnum = |c: char| c.is_ascii_alphanumeric();
    name.chars()
        .all(|c| alnum(c) || matches!(c, '-' | '_' | '.'))
        && name.chars().next().is_some_and(alnum)
        && name.chars().last().is_some_and(alnum)
}

/// `ValidateConfigMap`'s data rules: every key a ConfigMap key, none in both maps, at most
/// [`MAX_CONFIG_MAP_BYTES`] of values (`binaryData` counted decoded).
fn config_map_errors(object: &Value) -> Vec<FieldError> {
    let entries = |field: &str| {
        object[field]
            .as_object()
            .map(|entries| {
                entries
                    .iter()
                    .map(|(key, value)| {
                        (key.clone(), value.as_str().unwrap_or_default().to_owned())
                    })
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default()
    };
    let (data, binary) = (entries("data"), entries("binaryData"));
    let mut errors = Vec::new();
    let mut total = 0;
    for (key, value) in &data {
        let field = format!("data[{key}]");
        for why in config_map_key_errors(key) {
            errors.push(FieldError::invalid(&field, key.as_str(), &why));
        }
        if binary.iter().any(|(other, _)| other == key) {
            errors.push(FieldError::invalid(
                &field,
                key.as_str(),
                "duplicate of key present in binaryData",
            ));
        }
        total += value.len();
    }
    for (key, value) in &binary {
        for why in config_map_key_errors(key) {
            errors.push(FieldError::invalid(
                &format!("binaryData[{key}]"),
                key.as_str(),
                &why,
            ));
        }
        total += base64_decoded_len(value).unwrap_or_default();
    }
    if total > MAX_CONFIG_MAP_BYTES {
        // The path of the whole object, as Go prints `field.NewPath("")`.
        errors.push(FieldError::too_long("[]", MAX_CONFIG_MAP_BYTES));
    }
    errors
}

/// apimachinery's `IsConfigMapKey`.
fn config_map_key_errors(key: &str) -> Vec<String> {
    let mut errors = Vec::new();
    if key.len() > MAX_CONFIG_MAP_KEY_LEN {
        errors.push(format!(
            "must be no more than {MAX_CONFIG_MAP_KEY_LEN} characters"
        ));
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    if key.is_empty() || !key.chars().all(allowed) {
        errors.push(CONFIG_MAP_KEY_MESSAGE.to_owned());
    }
    match key {
        "." => errors.push("must not be '.'".to_owned()),
        ".." => errors.push("must not be '..'".to_owned()),
        _ if key.starts_with("..") => errors.push("must not start with '..'".to_owned()),
        _ => {}
    }
    errors
}

/// `ValidateLeaseSpec`.
fn lease_spec_errors(spec: &Value) -> Vec<FieldError> {
    let mut errors = Vec::new();
    if let Some(duration) = spec["leaseDurationSeconds"].as_i64().filter(|d| *d <= 0) {
        errors.push(FieldError::invalid(
            "spec.leaseDurationSeconds",
            duration,
            "must be greater than 0",
        ));
    }
    if let Some(transitions) = spec["leaseTransitions"].as_i64().filter(|t| *t < 0) {
        errors.push(FieldError::invalid(
            "spec.leaseTransitions",
            transitions,
            "must be greater than or equal to 0",
        ));
    }
    let has_strategy = spec["strategy"].as_str().is_some_and(|s| !s.is_empty());
    if spec["preferredHolder"]
        .as_str()
        .is_some_and(|p| !p.is_empty())
        && !has_strategy
    {
        errors.push(FieldError::forbidden(
            "spec.preferredHolder",
            "may only be specified if `strategy` is defined",
        ));
    }
    errors
}

/// An Event's fields under their internal (core) names, whichever API version it came in.
struct EventView<'a> {
    object: &'a Value,
    events_api: bool,
}

impl<'a> EventView<'a> {
    fn new(resource: Resource, object: &'a Value) -> EventView<'a> {
        EventView {
            object,
            events_api: resource == Resource::Events,
        }
    }

    /// The value of internal field `name`.
    fn get(&self, name: &str) -> &'a Value {
        let external = match (self.events_api, name) {
            (true, "involvedObject") => "regarding",
            (true, "message") => "note",
            (true, "source") => "deprecatedSource",
            (true, "firstTimestamp") => "deprecatedFirstTimestamp",
            (true, "lastTimestamp") => "deprecatedLastTimestamp",
            (true, "count") => "deprecatedCount",
            (false, "reportingController") => "reportingComponent",
            (_, other) => other,
        };
        &self.object[external]
    }

    fn str(&self, name: &str) -> &'a str {
        self.get(name).as_str().unwrap_or_default()
    }

    fn namespace(&self) -> &'a str {
        str_at(self.object, "/metadata/namespace")
    }
}

/// `legacyValidateEvent`.
fn legacy_event_errors(resource: Resource, object: &Value) -> Vec<FieldError> {
    let event = EventView::new(resource, object);
    let mut errors = Vec::new();
    let involved_namespace = event.get("involvedObject")["namespace"]
        .as_str()
        .unwrap_or_default();
    let namespace = event.namespace();
    let mismatch = || {
        FieldError::invalid(
            "involvedObject.namespace",
            involved_namespace,
            "does not match event.namespace",
        )
    };
    if event.get("eventTime").is_null() {
        if involved_namespace.is_empty() {
            if !namespace.is_empty() && namespace != "default" {
                errors.push(mismatch());
            }
        } else if namespace != involved_namespace {
            errors.push(mismatch());
        }
        return errors;
    }
    if involved_namespace.is_empty() && namespace != "default" && namespace != "kube-system" {
        errors.push(mismatch());
    }
    let controller_field = if resource == Resource::CoreEvents {
        "reportingComponent"
    } else {
        "reportingController"
    };
    let controller = event.str("reportingController");
    if controller.is_empty() {
        errors.push(FieldError::required(controller_field, ""));
    }
    for why in qualified_name_errors(controller) {
        errors.push(FieldError::invalid(controller_field, controller, &why));
    }
    let too_long = |field: &str, limit: usize| {
        FieldError::invalid(field, "", &format!("can have at most {limit} characters"))
    };
    for field in ["reportingInstance", "action", "reason"] {
        let value = event.str(field);
        if value.is_empty() {
            errors.push(FieldError::required(field, ""));
        }
        if value.len() > EVENT_SHORT_FIELD_LIMIT {
            errors.push(too_long(field, EVENT_SHORT_FIELD_LIMIT));
        }
    }
    if event.str("message").len() > EVENT_NOTE_LIMIT {
        errors.push(too_long("message", EVENT_NOTE_LIMIT));
    }
    errors
}

/// `validateV1EventSeries`.
fn event_series_errors(object: &Value) -> Vec<FieldError> {
    let series = &object["series"];
    let mut errors = Vec::new();
    if series.is_object() {
        if series["count"].as_i64().unwrap_or_default() < 2 {
            errors.push(FieldError::invalid(
                "series.count",
                "",
                "should be at least 2",
            ));
        }
        if series["lastObservedTime"].is_null() {
            errors.push(FieldError::required("series.lastObservedTime", ""));
        }
    }
    errors
}

/// The rest of `ValidateEventCreate` for `events.k8s.io/v1`.
fn strict_event_errors(object: &Value) -> Vec<FieldError> {
    let event = EventView::new(Resource::Events, object);
    let mut errors = Vec::new();
    if event.get("eventTime").is_null() {
        errors.push(FieldError::required("eventTime", ""));
    }
    let kind = event.str("type");
    if kind != "Normal" && kind != "Warning" {
        errors.push(FieldError::invalid(
            "type",
            "",
            &format!("has invalid value: {kind}"),
        ));
    }
    for field in ["firstTimestamp", "lastTimestamp"] {
        if !event.get(field).is_null() {
            errors.push(FieldError::invalid(field, "", "needs to be unset"));
        }
    }
    if event.get("count").as_i64().unwrap_or_default() != 0 {
        errors.push(FieldError::invalid("count", "", "needs to be unset"));
    }
    let source = event.get("source");
    if !source["component"].as_str().unwrap_or_default().is_empty()
        || !source["host"].as_str().unwrap_or_default().is_empty()
    {
        errors.push(FieldError::invalid("source", "", "needs to be unset"));
    }
    errors
}

/// `ValidateEventUpdate`'s immutable fields (in its order; `reason` is checked twice, as in Go).
fn event_immutable_errors(object: &Value, old: &Value) -> Vec<FieldError> {
    let (new, old) = (
        EventView::new(Resource::Events, object),
        EventView::new(Resource::Events, old),
    );
    let mut errors = Vec::new();
    for field in [
        "involvedObject",
        "reason",
        "message",
        "source",
        "firstTimestamp",
        "lastTimestamp",
        "count",
        "reason",
        "type",
        "eventTime",
        "action",
        "related",
        "reportingController",
        "reportingInstance",
    ] {
        let (value, was) = (new.get(field), old.get(field));
        if normalized(value) != normalized(was) {
            errors.push(FieldError::invalid(
                field,
                bad_value(value),
                "field is immutable",
            ));
        }
    }
    errors
}

/// Absent, null and Go's zero values compare equal, as Go compares the decoded structs.
fn normalized(value: &Value) -> Value {
    match value {
        Value::Null => Value::Null,
        Value::String(text) if text.is_empty() => Value::Null,
        Value::Number(n) if n.as_i64() == Some(0) => Value::Null,
        Value::Object(fields) if fields.is_empty() => Value::Null,
        other => other.clone(),
    }
}

fn bad_value(value: &Value) -> BadValue {
    match value {
        Value::String(text) => BadValue::Str(text.clone()),
        Value::Number(n) => n
            .as_i64()
            .map_or(BadValue::Str(n.to_string()), BadValue::Int),
        Value::Null => BadValue::Str(String::new()),
        other => BadValue::Json(other.to_string()),
    }
}
