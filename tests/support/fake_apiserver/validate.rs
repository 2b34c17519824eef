//! What the real API server checks on a request body: decoding (400) and validation (422).
//!
//! Decoding mirrors the Go JSON decoder's strictness where it matters to a Lease client: wrong `kind` or
//! `apiVersion`, wrongly typed spec fields, and `MicroTime` strings without exactly six fractional digits
//! (Go parses them with the layout `2006-01-02T15:04:05.000000Z07:00`), and ConfigMap `data`/`binaryData`
//! values that are not strings. Validation mirrors apimachinery's `ValidateObjectMeta` (name required,
//! DNS-1123 subdomain), coordination's `ValidateLeaseSpec` and core's `ValidateConfigMap` (keys, no key in
//! both `data` and `binaryData`, at most 1 MiB of values).

use chrono::DateTime;
use serde_json::Value;

use super::resource::Resource;
use super::status::{ApiError, FieldError};

/// The Go layout of `metav1.MicroTime`.
pub const MICRO_TIME_LAYOUT: &str = "2006-01-02T15:04:05.000000Z07:00";
/// The fractional-second digits a `MicroTime` must carry.
const MICRO_TIME_DIGITS: usize = 6;
/// The longest DNS-1123 subdomain.
const MAX_NAME_LEN: usize = 253;
/// The Lease spec fields typed `MicroTime`.
const LEASE_MICRO_TIME_FIELDS: [&str; 2] = ["acquireTime", "renewTime"];
/// The Lease spec fields typed `int32`.
const LEASE_INT_FIELDS: [&str; 2] = ["leaseDurationSeconds", "leaseTransitions"];
/// The Lease spec fields typed `string`.
const LEASE_STRING_FIELDS: [&str; 3] = ["holderIdentity", "preferredHolder", "strategy"];
/// The ConfigMap fields typed `map[string]string` (`binaryData` holds base64 strings).
const CONFIG_MAP_FIELDS: [&str; 2] = ["data", "binaryData"];
/// The most bytes of values a ConfigMap may hold (`core.MaxSecretSize`, 1 MiB).
pub const MAX_CONFIG_MAP_BYTES: usize = 1024 * 1024;
/// The longest ConfigMap key.
const MAX_CONFIG_MAP_KEY_LEN: usize = 253;

/// Decodes a request body as an object of `resource`: a JSON object whose `kind`/`apiVersion`, if
/// present, match, and (for Leases) whose spec fields have the right types and formats. Errors are 400.
pub fn decode(resource: Resource, body: &[u8]) -> Result<Value, ApiError> {
    let object: Value =
        serde_json::from_slice(body).map_err(|e| cannot(resource, e.to_string()))?;
    check_decoded(resource, &object)?;
    Ok(object)
}

/// The decoding checks of [`decode`] on an already parsed object (a merge-patch result, for example).
pub fn check_decoded(resource: Resource, object: &Value) -> Result<(), ApiError> {
    if !object.is_object() {
        return Err(cannot(resource, "the body is not a JSON object".to_owned()));
    }
    check_type_meta(resource, object).map_err(|why| cannot(resource, why))?;
    if resource == Resource::Leases {
        check_lease_spec_types(object).map_err(|why| cannot(resource, why))?;
    }
    if resource == Resource::ConfigMaps {
        check_config_map_types(object).map_err(|why| cannot(resource, why))?;
    }
    Ok(())
}

fn cannot(resource: Resource, why: String) -> ApiError {
    let kind = resource.kind();
    ApiError::bad_request(format!(
        "{kind} in version \"v1\" cannot be handled as a {kind}: {why}"
    ))
}

/// Validates a decoded object as the registry does before writing it (422 `Invalid`).
pub fn validate(resource: Resource, object: &Value) -> Result<(), ApiError> {
    let name = object["metadata"]["name"].as_str().unwrap_or_default();
    let mut errors = Vec::new();
    if name.is_empty() {
        errors.push(FieldError::required("metadata.name"));
    } else if !is_dns_subdomain(name) {
        errors.push(FieldError::invalid(
            "metadata.name",
            format!("{name:?}"),
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', \
             and must start and end with an alphanumeric character",
        ));
    }
    if resource == Resource::Leases {
        errors.extend(lease_spec_errors(&object["spec"]));
    }
    if resource == Resource::ConfigMaps {
        errors.extend(config_map_errors(object));
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid(
            resource,
            &resource.qualified_kind(),
            name,
            errors,
        ))
    }
}

fn check_type_meta(resource: Resource, object: &Value) -> Result<(), String> {
    for (field, expected) in [
        ("kind", resource.kind()),
        ("apiVersion", resource.api_version()),
    ] {
        match &object[field] {
            Value::Null => {}
            Value::String(found) if found == expected => {}
            found => return Err(format!("{field} is {found}, expected {expected:?}")),
        }
    }
    Ok(())
}

fn check_lease_spec_types(object: &Value) -> Result<(), String> {
    let spec = match &object["spec"] {
        Value::Null => return Ok(()),
        Value::Object(spec) => spec,
        other => return Err(format!("spec: expected an object, found {other}")),
    };
    for field in LEASE_MICRO_TIME_FIELDS {
        match spec.get(field) {
            None | Some(Value::Null) => {}
            Some(Value::String(text)) => check_micro_time(text)?,
            Some(other) => {
                return Err(format!(
                    "spec.{field}: expected a MicroTime string, found {other}"
                ))
            }
        }
    }
    for field in LEASE_INT_FIELDS {
        match spec.get(field) {
            None | Some(Value::Null) => {}
            Some(Value::Number(n)) if n.as_i64().is_some_and(|n| i32::try_from(n).is_ok()) => {}
            Some(other) => return Err(format!("spec.{field}: expected an int32, found {other}")),
        }
    }
    for field in LEASE_STRING_FIELDS {
        match spec.get(field) {
            None | Some(Value::Null | Value::String(_)) => {}
            Some(other) => return Err(format!("spec.{field}: expected a string, found {other}")),
        }
    }
    Ok(())
}

fn check_config_map_types(object: &Value) -> Result<(), String> {
    for field in CONFIG_MAP_FIELDS {
        let entries = match &object[field] {
            Value::Null => continue,
            Value::Object(entries) => entries,
            other => return Err(format!("{field}: expected an object, found {other}")),
        };
        if let Some((key, value)) = entries
            .iter()
            .find(|(_, value)| !matches!(value, Value::String(_) | Value::Null))
        {
            return Err(format!("{field}.{key}: expected a string, found {value}"));
        }
    }
    Ok(())
}

/// `ValidateConfigMap`: every key a ConfigMap key, none in both maps, at most [`MAX_CONFIG_MAP_BYTES`] of
/// values (`binaryData` counted decoded, as the server stores it: 3 bytes per 4 base64 characters).
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
            errors.push(FieldError::invalid(&field, key, &why));
        }
        if binary.iter().any(|(other, _)| other == key) {
            errors.push(FieldError::invalid(
                &field,
                key,
                "duplicate of key present in binaryData",
            ));
        }
        total += value.len();
    }
    for (key, value) in &binary {
        for why in config_map_key_errors(key) {
            errors.push(FieldError::invalid(
                &format!("binaryData[{key}]"),
                key,
                &why,
            ));
        }
        total += value.trim_end_matches('=').len() * 3 / 4;
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
        errors.push(
            "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. \
             'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is \
             '[-._a-zA-Z0-9]+')"
                .to_owned(),
        );
    }
    match key {
        "." => errors.push("must not be '.'".to_owned()),
        ".." => errors.push("must not be '..'".to_owned()),
        _ if key.starts_with("..") => errors.push("must not start with '..'".to_owned()),
        _ => {}
    }
    errors
}

/// Accepts exactly `YYYY-MM-DDTHH:MM:SS.ffffff` followed by `Z` or `±HH:MM`, as Go's `time.Parse` with
/// [`MICRO_TIME_LAYOUT`] does.
pub fn check_micro_time(text: &str) -> Result<(), String> {
    let bad = || {
        format!("parsing time {text:?} as {MICRO_TIME_LAYOUT:?}: not a MicroTime with 6 fractional digits")
    };
    let (_, after_dot) = text.split_once('.').ok_or_else(bad)?;
    let digits = after_dot.bytes().take_while(u8::is_ascii_digit).count();
    if digits != MICRO_TIME_DIGITS {
        return Err(bad());
    }
    let zone = &after_dot[digits..];
    if zone != "Z"
        && !(zone.len() == "+00:00".len() && (zone.starts_with('+') || zone.starts_with('-')))
    {
        return Err(bad());
    }
    DateTime::parse_from_rfc3339(text)
        .map(|_| ())
        .map_err(|_| bad())
}

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

/// A lowercase RFC 1123 subdomain: dot-separated labels of `[a-z0-9-]`, each starting and ending with an
/// alphanumeric character, 253 characters at most.
fn is_dns_subdomain(name: &str) -> bool {
    let label_ok = |label: &str| {
        let alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
        label.chars().all(|c| alnum(c) || c == '-')
            && label.chars().next().is_some_and(alnum)
            && label.chars().last().is_some_and(alnum)
    };
    name.len() <= MAX_NAME_LEN && name.split('.').all(label_ok)
}
