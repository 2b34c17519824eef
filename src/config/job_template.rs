//! `jobTemplate:` — a batch/v1 `JobSpec`, checked strictly against the API server's own schema with the
//! position of every problem, then deserialized into [`k8s_openapi::api::batch::v1::JobSpec`].
//!
//! The schema is `job_spec.schema.json`: the OpenAPI v3 schema of batch/v1 served by the kube-apiserver
//! v1.37 that `tools/kube-testenv` builds (`GET /openapi/v3/apis/batch/v1`), reduced to the JobSpec and
//! every schema it references, without descriptions. `scripts/job-spec-schema` regenerates it
//! (`--check` compares).
//!
//! The walk reports, each at its line and column, and all of them: unknown fields (with the nearest known
//! name when one is close), values of the wrong type (a number where a string is expected is an error, as
//! the API server's JSON decoding makes it), missing required fields, values outside an enum, integers
//! out of their format's range, `int-or-string` values, and resource quantities, parsed strictly with
//! Kubernetes' Quantity grammar. On top of the schema, what the API server would reject for every Job: a
//! container without `image`, a pod without containers, and a `restartPolicy` other than `Never` or
//! `OnFailure`.
//!
//! Finally, a field the schema knows but the `k8s-openapi` types of this build do not carry (a field newer
//! than the types' Kubernetes version) would be dropped silently by deserialization: it is an error too.

use std::collections::HashMap;
use std::sync::LazyLock;

use k8s_openapi::api::batch::v1::JobSpec;
use serde_json::{Map, Number, Value};
use serde_saphyr::Spanned;

use super::node::{into_scalar_text, scalar_text, Node};
use super::raw::{Position, Problem};

const QUANTITY: &str = "io.k8s.apimachinery.pkg.api.resource.Quantity";
const INT_OR_STRING: &str = "io.k8s.apimachinery.pkg.util.intstr.IntOrString";
const CONTAINER: &str = "io.k8s.api.core.v1.Container";
const POD_SPEC: &str = "io.k8s.api.core.v1.PodSpec";

/// The reduced schema (see the module docs).
static SCHEMA: LazyLock<Schema> = LazyLock::new(|| {
    let file: Value = serde_json::from_str(include_str!("job_spec.schema.json"))
        .expect("job_spec.schema.json is valid JSON");
    let root = file["root"].as_str().expect("a root").to_owned();
    let schemas = file["schemas"]
        .as_object()
        .expect("schemas")
        .iter()
        .map(|(name, schema)| (name.clone(), schema.clone()))
        .collect();
    Schema { root, schemas }
});

struct Schema {
    root: String,
    schemas: HashMap<String, Value>,
}

/// A checked `jobTemplate:`.
#[derive(Debug)]
pub(super) struct Checked {
    /// The JobSpec, if no problem was found.
    pub spec: Option<JobSpec>,
    /// Every problem, in the order found.
    pub problems: Vec<Problem>,
}

/// Checks `node` (parsed from `source`) as a JobSpec.
pub(super) fn check(node: Spanned<Node>, source: &str) -> Checked {
    let mut walker = Walker {
        source,
        problems: Vec::new(),
        keys: Vec::new(),
    };
    let schema = &SCHEMA;
    let root = Value::String(schema.root.clone());
    let value = walker.walk_ref(node, &root, "jobTemplate", &mut Vec::new());
    let spec = match value {
        Some(value) if walker.problems.is_empty() => walker.deserialize(value),
        _ => None,
    };
    Checked {
        spec: spec.filter(|_| walker.problems.is_empty()),
        problems: walker.problems,
    }
}

/// One step of a path into the template, for finding a key again in the deserialized value.
#[derive(Debug, Clone)]
enum Step {
    Key(String),
    Index(usize),
}

struct Walker<'s> {
    source: &'s str,
    problems: Vec<Problem>,
    /// Every field written, with its path and position.
    keys: Vec<(Vec<Step>, String, Position)>,
}

impl Walker<'_> {
    fn error(&mut self, at: Position, message: String) {
        self.problems.push(Problem { at, message });
    }

    /// `node` against the schema `schema` (an object of the reduced schema, or a schema's name).
    fn walk_ref(
        &mut self,
        node: Spanned<Node>,
        schema: &Value,
        path: &str,
        steps: &mut Vec<Step>,
    ) -> Option<Value> {
        let name = match schema {
            Value::String(name) => Some(name.as_str()),
            _ => schema.get("$ref").and_then(Value::as_str),
        };
        match name {
            Some(QUANTITY) => self.quantity(node, path),
            Some(INT_OR_STRING) => self.int_or_string(node, path),
            Some(name) => {
                let Some(resolved) = SCHEMA.schemas.get(name) else {
                    self.error(Position::at(&node), format!("{path}: no schema `{name}`"));
                    return None;
                };
                self.walk(node, resolved, Some(name), path, steps)
            }
            None => self.walk(node, schema, None, path, steps),
        }
    }

    fn walk(
        &mut self,
        node: Spanned<Node>,
        schema: &Value,
        name: Option<&str>,
        path: &str,
        steps: &mut Vec<Step>,
    ) -> Option<Value> {
        let at = Position::at(&node);
        match schema.get("type").and_then(Value::as_str) {
            Some("object") => self.object(node, schema, name, path, steps),
            Some("array") => self.array(node, schema, path, steps),
            Some("string") => {
                let text = self.string(node, path)?;
                if let Some(allowed) = schema.get("enum").and_then(Value::as_array) {
                    if !allowed.iter().any(|v| v.as_str() == Some(text.as_str())) {
                        let list: Vec<&str> = allowed.iter().filter_map(Value::as_str).collect();
                        self.error(
                            at,
                            format!(
                                "{path}: unsupported value `{text}` (expected one of {})",
                                list.join(", ")
                            ),
                        );
                        return None;
                    }
                }
                Some(Value::String(text))
            }
            Some("integer") => {
                let format = schema.get("format").and_then(Value::as_str);
                self.integer(node, format, path)
            }
            Some("number") => match node.value {
                Node::Int(n) => Some(Value::from(n as f64)),
                Node::Float(x) => Number::from_f64(x).map(Value::Number),
                _ => self.wrong_type(&node, path, "a number"),
            },
            Some("boolean") => match node.value {
                Node::Bool(b) => Some(Value::Bool(b)),
                _ => self.wrong_type(&node, path, "a boolean (true or false)"),
            },
            // No type: any value (none in the reduced schema but the two handled by name).
            _ => Some(to_json(node, self.source)),
        }
    }

    fn wrong_type(&mut self, node: &Spanned<Node>, path: &str, expected: &str) -> Option<Value> {
        let found = match &node.value {
            Node::Null => "null".to_owned(),
            Node::Bool(b) => format!("boolean `{b}`"),
            Node::Int(_) | Node::Float(_) => format!(
                "number `{}`",
                scalar_text(node, self.source).unwrap_or_default()
            ),
            Node::Str(s) => format!("string `{s}`"),
            Node::Seq(_) => "a list".to_owned(),
            Node::Map(_) => "a mapping".to_owned(),
        };
        let hint = match (&node.value, expected) {
            (Node::Bool(_) | Node::Int(_) | Node::Float(_), "a string") => {
                " (quote it to make it a string)"
            }
            _ => "",
        };
        self.error(
            Position::at(node),
            format!("{path}: expected {expected}, found {found}{hint}"),
        );
        None
    }

    fn string(&mut self, node: Spanned<Node>, path: &str) -> Option<String> {
        match node.value {
            Node::Str(s) => Some(s),
            _ => {
                self.wrong_type(&node, path, "a string");
                None
            }
        }
    }

    fn integer(&mut self, node: Spanned<Node>, format: Option<&str>, path: &str) -> Option<Value> {
        let Node::Int(n) = node.value else {
            return self.wrong_type(&node, path, "an integer");
        };
        let (min, max, what) = match format {
            Some("int32") => (i128::from(i32::MIN), i128::from(i32::MAX), "a 32-bit"),
            _ => (i128::from(i64::MIN), i128::from(i64::MAX), "a 64-bit"),
        };
        if n < min || n > max {
            self.error(
                Position::at(&node),
                format!("{path}: {n} does not fit {what} integer"),
            );
            return None;
        }
        i64::try_from(n).ok().map(Value::from)
    }

    fn int_or_string(&mut self, node: Spanned<Node>, path: &str) -> Option<Value> {
        match node.value {
            Node::Int(_) => self.integer(node, Some("int32"), path),
            Node::Str(s) => Some(Value::String(s)),
            _ => self.wrong_type(&node, path, "an integer or a string"),
        }
    }

    fn quantity(&mut self, node: Spanned<Node>, path: &str) -> Option<Value> {
        let at = Position::at(&node);
        let text = match node.value {
            Node::Str(_) | Node::Int(_) | Node::Float(_) => into_scalar_text(node, self.source)
                .ok()
                .map(|text| text.value),
            _ => return self.wrong_type(&node, path, "a quantity (e.g. 500m, 2, 1Gi)"),
        }?;
        match parse_quantity(&text) {
            Ok(()) => Some(Value::String(text)),
            Err(why) => {
                self.error(at, format!("{path}: invalid quantity `{text}`: {why}"));
                None
            }
        }
    }

    fn array(
        &mut self,
        node: Spanned<Node>,
        schema: &Value,
        path: &str,
        steps: &mut Vec<Step>,
    ) -> Option<Value> {
        let items = match node.value {
            Node::Seq(items) => items,
            Node::Null => return Some(Value::Null),
            _ => return self.wrong_type(&node, path, "a list"),
        };
        let item_schema = schema.get("items").cloned().unwrap_or(Value::Null);
        let map_keys: Vec<String> = schema
            .get("x-kubernetes-list-map-keys")
            .and_then(Value::as_array)
            .map(|keys| {
                keys.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        let mut out = Vec::with_capacity(items.len());
        let mut seen: HashMap<Vec<String>, Position> = HashMap::new();
        let mut ok = true;
        for (i, item) in items.into_iter().enumerate() {
            let item_at = Position::at(&item);
            steps.push(Step::Index(i));
            let value = self.walk_ref(item, &item_schema, &format!("{path}[{i}]"), steps);
            steps.pop();
            match value {
                Some(value) => {
                    // A list keyed by some fields (containers by name, ports by port and protocol) holds
                    // each key once, as the API server requires.
                    if !map_keys.is_empty() {
                        let key: Vec<String> = map_keys
                            .iter()
                            .map(|k| value.get(k).map_or(String::new(), Value::to_string))
                            .collect();
                        if key.iter().any(|k| !k.is_empty()) {
                            if let Some(first) = seen.get(&key) {
                                let shown: Vec<String> = map_keys
                                    .iter()
                                    .zip(&key)
                                    .map(|(k, v)| format!("{k}: {v}"))
                                    .collect();
                                self.error(
                                    item_at,
                                    format!(
                                        "{path}[{i}]: duplicate entry ({}), first at line {}",
                                        shown.join(", "),
                                        first.line
                                    ),
                                );
                                ok = false;
                            } else {
                                seen.insert(key, item_at);
                            }
                        }
                    }
                    out.push(value);
                }
                None => ok = false,
            }
        }
        ok.then_some(Value::Array(out))
    }

    fn object(
        &mut self,
        node: Spanned<Node>,
        schema: &Value,
        name: Option<&str>,
        path: &str,
        steps: &mut Vec<Step>,
    ) -> Option<Value> {
        let at = Position::at(&node);
        let entries = match node.value {
            Node::Map(entries) => entries,
            Node::Null => Vec::new(),
            _ => return self.wrong_type(&node, path, "a mapping"),
        };
        let properties = schema.get("properties").and_then(Value::as_object);
        let additional = schema.get("additionalProperties");
        let mut out = Map::new();
        let mut written: HashMap<String, Position> = HashMap::new();
        let mut ok = true;
        for (key, value) in entries {
            let key = match into_scalar_text(key, self.source) {
                Ok(key) => key,
                Err(key) => {
                    self.wrong_type(&key, path, "a field name");
                    ok = false;
                    continue;
                }
            };
            let key_at = Position::at(&key);
            let key = key.value;
            if let Some(first) = written.get(&key) {
                self.error(
                    key_at,
                    format!(
                        "{path}: duplicate field `{key}` (first at line {}, column {})",
                        first.line, first.column
                    ),
                );
                ok = false;
                continue;
            }
            written.insert(key.clone(), key_at);
            let field_schema = match (properties, additional) {
                (Some(properties), _) => match properties.get(&key) {
                    Some(field) => field.clone(),
                    None => {
                        let known: Vec<&str> = properties.keys().map(String::as_str).collect();
                        let what = name.map_or("", short_name);
                        let hint = match nearest(&key, &known) {
                            Some(near) => format!(": did you mean `{near}`?"),
                            None => String::new(),
                        };
                        self.error(
                            key_at,
                            format!("{path}: unknown field `{key}` in {what}{hint}"),
                        );
                        ok = false;
                        continue;
                    }
                },
                (None, Some(additional)) => additional.clone(),
                // An object of any shape.
                (None, None) => Value::Null,
            };
            // A null field is unset, as the API server reads it.
            if value.value == Node::Null {
                continue;
            }
            steps.push(Step::Key(key.clone()));
            let field_path = format!("{path}.{key}");
            let checked = if field_schema.is_null() {
                Some(to_json(value, self.source))
            } else {
                self.walk_ref(value, &field_schema, &field_path, steps)
            };
            if properties.is_some() {
                self.keys.push((steps.clone(), field_path, key_at));
            }
            steps.pop();
            match checked {
                Some(checked) => {
                    out.insert(key, checked);
                }
                None => ok = false,
            }
        }
        let mut required: Vec<&str> = schema
            .get("required")
            .and_then(Value::as_array)
            .map(|r| r.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        if name == Some(CONTAINER) {
            // Optional in the schema for the controllers that fill it in; a Job's pod needs one.
            required.push("image");
        }
        for field in required {
            if !written.contains_key(field) {
                self.error(at, format!("{path}: missing required field `{field}`"));
                ok = false;
            }
        }
        if name == Some(POD_SPEC) {
            ok &= self.pod_spec(&out, at, path);
        }
        ok.then_some(Value::Object(out))
    }

    /// What the API server requires of every Job's pod beyond the schema.
    fn pod_spec(&mut self, spec: &Map<String, Value>, at: Position, path: &str) -> bool {
        let mut ok = true;
        if spec
            .get("containers")
            .and_then(Value::as_array)
            .is_some_and(Vec::is_empty)
        {
            self.error(
                at,
                format!("{path}.containers: a pod needs at least one container"),
            );
            ok = false;
        }
        match spec.get("restartPolicy").and_then(Value::as_str) {
            Some("Never" | "OnFailure") => {}
            Some(other) => {
                self.error(
                    at,
                    format!(
                        "{path}.restartPolicy: a Job's pods need `Never` or `OnFailure`, not `{other}`"
                    ),
                );
                ok = false;
            }
            None => {
                self.error(
                    at,
                    format!(
                        "{path}: set `restartPolicy: Never` (or `OnFailure`): the default, `Always`, is \
                         not allowed for a Job's pods"
                    ),
                );
                ok = false;
            }
        }
        ok
    }

    /// Deserializes the checked value; a field the types do not carry is reported where it is written.
    fn deserialize(&mut self, value: Value) -> Option<JobSpec> {
        let spec: JobSpec = match serde_json::from_value(value) {
            Ok(spec) => spec,
            Err(e) => {
                self.error(
                    Position::START,
                    format!("jobTemplate: cannot be read as a JobSpec: {e}"),
                );
                return None;
            }
        };
        let back = serde_json::to_value(&spec).unwrap_or(Value::Null);
        let keys = std::mem::take(&mut self.keys);
        for (steps, path, at) in keys {
            if lookup(&back, &steps).is_none() {
                self.error(
                    at,
                    format!(
                        "{path}: this field is newer than the Kubernetes types of this build of \
                         leasecron (k8s-openapi, Kubernetes 1.33): it would be dropped, so it is refused"
                    ),
                );
            }
        }
        Some(spec)
    }
}

fn lookup<'v>(value: &'v Value, steps: &[Step]) -> Option<&'v Value> {
    steps.iter().try_fold(value, |value, step| match step {
        Step::Key(key) => value.get(key),
        Step::Index(i) => value.get(i),
    })
}

/// `Container` for `io.k8s.api.core.v1.Container`.
fn short_name(name: &str) -> &str {
    name.rsplit('.').next().unwrap_or(name)
}

/// The known name closest to `name`, if it is close (a different case, or at most a third of its
/// letters edited, and at most 3).
fn nearest<'k>(name: &str, known: &[&'k str]) -> Option<&'k str> {
    let limit = (name.chars().count() / 3).clamp(1, 3);
    known
        .iter()
        .map(|k| {
            let d = if k.eq_ignore_ascii_case(name) {
                0
            } else {
                edit_distance(name, k)
            };
            (d, *k)
        })
        .filter(|(d, _)| *d <= limit)
        .min()
        .map(|(_, k)| k)
}

/// Levenshtein distance, in characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            let next = (row[j + 1] + 1).min(row[j] + 1).min(prev + cost);
            prev = row[j + 1];
            row[j + 1] = next;
        }
    }
    row[b.len()]
}

/// Any YAML value as JSON (for the few fields of any shape).
fn to_json(node: Spanned<Node>, source: &str) -> Value {
    match node.value {
        Node::Null => Value::Null,
        Node::Bool(b) => Value::Bool(b),
        Node::Int(n) => i64::try_from(n).map_or(Value::String(n.to_string()), Value::from),
        Node::Float(x) => Number::from_f64(x).map_or_else(
            || Value::String(scalar_text(&node, source).unwrap_or_default()),
            Value::Number,
        ),
        Node::Str(s) => Value::String(s),
        Node::Seq(items) => Value::Array(items.into_iter().map(|i| to_json(i, source)).collect()),
        Node::Map(entries) => Value::Object(
            entries
                .into_iter()
                .filter_map(|(k, v)| Some((scalar_text(&k, source)?, to_json(v, source))))
                .collect(),
        ),
    }
}

/// Checks `text` against Kubernetes' Quantity grammar (`k8s.io/apimachinery/pkg/api/resource`):
///
/// ```text
/// <quantity>     ::= <signedNumber><suffix>
/// <signedNumber> ::= <number> | <sign><number>      <sign> ::= "+" | "-"
/// <number>       ::= <digits> | <digits>.<digits> | <digits>. | .<digits>
/// <suffix>       ::= <binarySI> | <decimalExponent> | <decimalSI>
/// <binarySI>     ::= Ki | Mi | Gi | Ti | Pi | Ei
/// <decimalSI>    ::= m | "" | k | M | G | T | P | E
/// <decimalExponent> ::= "e" <signedNumber> | "E" <signedNumber>
/// ```
///
/// Every quantity of a JobSpec is an amount (requests, limits, sizes): a negative one is refused too, as
/// the API server's validation does.
pub fn parse_quantity(text: &str) -> Result<(), String> {
    let example = "write e.g. 500m, 2, 1.5, 128Mi, 1Gi or 1e3";
    if text.is_empty() {
        return Err(format!("it is empty ({example})"));
    }
    let bytes = text.as_bytes();
    let mut i = 0;
    let negative = bytes[0] == b'-';
    if matches!(bytes[0], b'+' | b'-') {
        i += 1;
    }
    let int_start = i;
    while i < bytes.len() && bytes[i].is_ascii_digit() {
        i += 1;
    }
    let mut digits = i - int_start;
    if i < bytes.len() && bytes[i] == b'.' {
        i += 1;
        let frac_start = i;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
        digits += i - frac_start;
    }
    if digits == 0 {
        return Err(format!("it does not start with a number ({example})"));
    }
    let suffix = &text[i..];
    let valid_suffix = match suffix {
        "" | "m" | "k" | "M" | "G" | "T" | "P" | "E" | "Ki" | "Mi" | "Gi" | "Ti" | "Pi" | "Ei" => {
            true
        }
        _ => match suffix.strip_prefix(['e', 'E']) {
            Some(exponent) => {
                let digits = exponent.strip_prefix(['+', '-']).unwrap_or(exponent);
                !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
            }
            None => false,
        },
    };
    if !valid_suffix {
        return Err(format!(
            "unknown suffix `{suffix}` (the suffixes are m, k, M, G, T, P, E, Ki, Mi, Gi, Ti, Pi, Ei, \
             or an exponent such as e3; {example})"
        ));
    }
    if negative && text[1..].bytes().any(|b| b.is_ascii_digit() && b != b'0') {
        return Err("it is negative: resource amounts must be zero or more".to_owned());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_follow_the_kubernetes_grammar() {
        for good in [
            "1", "0", "500m", "1.5", ".5", "1.", "128Mi", "1Gi", "1e3", "1E-3", "+2", "2k", "10Ei",
        ] {
            assert_eq!(parse_quantity(good), Ok(()), "{good}");
        }
        for bad in [
            "", "1x", "x", "1.5.5", "1 Gi", "1gi", "1KiB", "1e", "1e+", ".", "-1", "-500m", "Mi",
            "1ki",
        ] {
            assert!(parse_quantity(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_quantity("-0"), Ok(()));
    }

    #[test]
    fn the_nearest_name_is_offered_only_when_close() {
        let known = ["image", "imagePullPolicy", "name", "resources"];
        assert_eq!(nearest("imag", &known), Some("image"));
        assert_eq!(nearest("Image", &known), Some("image"));
        assert_eq!(nearest("resource", &known), Some("resources"));
        assert_eq!(nearest("imagePullPolice", &known), Some("imagePullPolicy"));
        assert_eq!(nearest("volumes", &known), None);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }

    #[test]
    fn the_schema_has_the_job_spec_and_what_it_references() {
        let schema = &*SCHEMA;
        assert_eq!(schema.root, "io.k8s.api.batch.v1.JobSpec");
        for name in [CONTAINER, POD_SPEC, QUANTITY, INT_OR_STRING] {
            assert!(schema.schemas.contains_key(name), "{name}");
        }
    }
}
