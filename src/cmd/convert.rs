//! `leasecron convert`: CronJob manifests in, jobs-file entries (`executor: kubernetes`) out.
//!
//! The input is any number of YAML streams (`---` separated documents,
//! or a `kind: List` as `kubectl get cronjob -o yaml` prints); every `batch/v1` or `batch/v1beta1`
//! CronJob in them becomes one job, other kinds are skipped with a note. The job's `jobTemplate` is the
//! CronJob's `spec.jobTemplate.spec` (a batch/v1 JobSpec) as written, key order included.
//!
//! Every field that cannot be carried over, or whose meaning changes, gives a warning naming the
//! CronJob and the field. A CronJob that cannot be converted at all (no valid name, a schedule or time
//! zone leasecron cannot parse, no JobSpec) gives an error and no job; the others are still printed.
//!
//! Decisions:
//! - `spec.jobTemplate.metadata` labels and annotations are dropped with a warning: a JobSpec has no
//!   place for the Job's own metadata, and copying them onto the pod template would change which
//!   selectors (NetworkPolicy, PodDisruptionBudget, Service) match the pods.
//! - `concurrencyPolicy` is always written: CronJob's default is `Allow`, leasecron's is `Forbid`.
//! - `activeDeadlineSeconds` and `backoffLimit` stay in the JobSpec; `timeout`/`retries` are not set
//!   from them, so nothing is said twice (a note says so).

use std::fmt::{self, Write as _};
use std::str::FromStr as _;

use chrono_tz::Tz;
use serde::de::{MapAccess, SeqAccess, Visitor};
use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::config::{check_dns_label, MAX_NAME_LEN};
use crate::schedule::Schedule;

/// The CronJob `spec` fields this command knows (batch/v1, Kubernetes 1.33).
const SPEC_FIELDS: &[&str] = &[
    "schedule",
    "timeZone",
    "startingDeadlineSeconds",
    "concurrencyPolicy",
    "suspend",
    "jobTemplate",
    "successfulJobsHistoryLimit",
    "failedJobsHistoryLimit",
];

/// `metadata` fields the API server sets: dropped without a word.
const SERVER_METADATA: &[&str] = &[
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "managedFields",
    "selfLink",
];

/// The annotation `kubectl apply` keeps: dropped without a word.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// A YAML value as written, mappings in file order.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `~`, `null` or nothing.
    Null,
    /// A boolean.
    Bool(bool),
    /// An integer.
    Int(i128),
    /// A float.
    Float(f64),
    /// A string.
    Str(String),
    /// A sequence.
    Seq(Vec<Value>),
    /// A mapping, entries in file order.
    Map(Vec<(Value, Value)>),
}

impl Value {
    /// The value at `key`, if this is a mapping that has it.
    fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Map(entries) => entries
                .iter()
                .find(|(k, _)| matches!(k, Value::Str(s) if s == key))
                .map(|(_, v)| v),
            _ => None,
        }
    }

    fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The keys of a mapping, as text.
    fn keys(&self) -> Vec<String> {
        match self {
            Value::Map(entries) => entries.iter().map(|(k, _)| k.describe()).collect(),
            _ => Vec::new(),
        }
    }

    fn is_empty_map(&self) -> bool {
        matches!(self, Value::Map(entries) if entries.is_empty()) || matches!(self, Value::Null)
    }

    /// A short rendering for messages.
    fn describe(&self) -> String {
        match self {
            Value::Null => "null".into(),
            Value::Bool(b) => b.to_string(),
            Value::Int(n) => n.to_string(),
            Value::Float(x) => x.to_string(),
            Value::Str(s) => s.clone(),
            Value::Seq(_) => "a sequence".into(),
            Value::Map(_) => "a mapping".into(),
        }
    }

    fn map(entries: Vec<(&str, Value)>) -> Value {
        Value::Map(
            entries
                .into_iter()
                .map(|(k, v)| (Value::Str(k.to_owned()), v))
                .collect(),
        )
    }
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ValueVisitor)
    }
}

struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        Value::deserialize(d)
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Int(v.into()))
    }
    fn visit_i128<E>(self, v: i128) -> Result<Value, E> {
        Ok(Value::Int(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Int(v.into()))
    }
    fn visit_u128<E: serde::de::Error>(self, v: u128) -> Result<Value, E> {
        i128::try_from(v)
            .map(Value::Int)
            .map_err(|_| E::custom("integer out of range"))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::Float(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::Str(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::Str(v))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Seq(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut entries = Vec::new();
        while let Some(entry) = map.next_entry()? {
            entries.push(entry);
        }
        Ok(Value::Map(entries))
    }
}

impl Serialize for Value {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Value::Null => s.serialize_unit(),
            Value::Bool(b) => s.serialize_bool(*b),
            Value::Int(n) => match i64::try_from(*n) {
                Ok(n) => s.serialize_i64(n),
                Err(_) => s.serialize_i128(*n),
            },
            Value::Float(x) => s.serialize_f64(*x),
            Value::Str(v) => s.serialize_str(v),
            Value::Seq(items) => {
                let mut seq = s.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(item)?;
                }
                seq.end()
            }
            Value::Map(entries) => {
                let mut map = s.serialize_map(Some(entries.len()))?;
                for (k, v) in entries {
                    map.serialize_entry(k, v)?;
                }
                map.end()
            }
        }
    }
}

/// One input: how it is named in messages, and its text.
#[derive(Debug)]
pub struct Input {
    /// The path, or `<stdin>`.
    pub origin: String,
    /// The YAML stream.
    pub text: String,
}

/// What [`convert`] made of the inputs.
#[derive(Debug, Default)]
pub struct Conversion {
    /// The jobs file: the header, `jobs:` and one entry per converted CronJob.
    pub output: String,
    /// Warnings and notes for stderr, one message each, in input order.
    pub warnings: Vec<String>,
    /// One message per CronJob (or input) that could not be converted at all.
    pub errors: Vec<String>,
}

/// A CronJob as found, before conversion.
struct Found<'a> {
    origin: &'a str,
    /// `apiVersion` of the CronJob.
    api_version: String,
    object: Value,
}

/// Converts every CronJob in `inputs` into jobs-file entries.
pub fn convert(inputs: &[Input]) -> Conversion {
    let mut conversion = Conversion::default();
    let mut found = Vec::new();
    for input in inputs {
        let documents: Vec<Value> = match serde_saphyr::from_multiple(&input.text) {
            Ok(documents) => documents,
            Err(err) => {
                conversion.errors.push(format!(
                    "{}: not valid YAML, nothing in it converted: {}",
                    input.origin,
                    first_line(&err.to_string())
                ));
                continue;
            }
        };
        for (index, document) in documents.into_iter().enumerate() {
            let place = format!("{}: document {}", input.origin, index + 1);
            collect(&input.origin, &place, document, &mut found, &mut conversion);
        }
    }

    let namespaces: Vec<Option<String>> = found
        .iter()
        .map(|f| {
            f.object
                .get("metadata")
                .and_then(|m| m.get("namespace"))
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
        .collect();
    let mut distinct: Vec<&str> = namespaces.iter().flatten().map(String::as_str).collect();
    distinct.sort_unstable();
    distinct.dedup();
    let several_namespaces = distinct.len() > 1;

    let mut jobs = Vec::new();
    let mut names: Vec<String> = Vec::new();
    for (f, namespace) in found.iter().zip(&namespaces) {
        let mut out = Messages::default();
        let job = convert_one(f, namespace.as_deref(), several_namespaces, &mut out);
        if let Some((name, job)) = job {
            if names.contains(&name) {
                out.error(format!(
                    "a job named `{name}` was already converted (job names are unique in a jobs file; \
                     CronJobs of the same name in different namespaces must be renamed)"
                ));
            } else {
                names.push(name);
                jobs.push(job);
            }
        }
        let who = cronjob_label(f, namespace.as_deref());
        conversion
            .warnings
            .extend(out.warnings.into_iter().map(|m| format!("{who}: {m}")));
        if let Some(error) = out.error {
            conversion
                .errors
                .push(format!("{who}: not converted: {error}"));
        }
    }

    let mut output = String::new();
    let sources: Vec<&str> = inputs.iter().map(|i| i.origin.as_str()).collect();
    let _ = writeln!(
        output,
        "# leasecron jobs converted by `leasecron convert` from CronJobs in: {}",
        sources.join(", ")
    );
    if let [namespace] = distinct.as_slice() {
        let _ = writeln!(output, "# Namespace of the CronJobs: {namespace}");
    }
    output.push_str(
        "# Review the warnings printed on stderr: some CronJob fields have no equivalent or a different meaning.\n",
    );
    if jobs.is_empty() {
        output.push_str("jobs: []\n");
    } else {
        let root = Value::map(vec![("jobs", Value::Seq(jobs))]);
        match serde_saphyr::to_string(&root) {
            Ok(yaml) => output.push_str(&yaml),
            Err(err) => conversion
                .errors
                .push(format!("cannot write the jobs as YAML: {err}")),
        }
        if !output.ends_with('\n') {
            output.push('\n');
        }
    }
    conversion.output = output;
    conversion
}

/// The first line of a (possibly multi-line, snippet-carrying) message.
fn first_line(message: &str) -> &str {
    message.lines().next().unwrap_or(message)
}

/// Adds the CronJobs in `document` (a CronJob, or a List of objects) to `found`; notes every other kind.
fn collect<'a>(
    origin: &'a str,
    place: &str,
    document: Value,
    found: &mut Vec<Found<'a>>,
    conversion: &mut Conversion,
) {
    if matches!(document, Value::Null) {
        return;
    }
    let kind = document.get("kind").and_then(Value::as_str).unwrap_or("");
    let api_version = document
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    match kind {
        "List" | "CronJobList" => {
            let Some(Value::Seq(items)) = document.get("items").cloned() else {
                conversion
                    .warnings
                    .push(format!("{place}: note: a {kind} without items, skipped"));
                return;
            };
            for (index, item) in items.into_iter().enumerate() {
                collect(
                    origin,
                    &format!("{place}, item {}", index + 1),
                    item,
                    found,
                    conversion,
                );
            }
        }
        "CronJob" if matches!(api_version.as_str(), "batch/v1" | "batch/v1beta1") => {
            found.push(Found {
                origin,
                api_version,
                object: document,
            });
        }
        "CronJob" => conversion.errors.push(format!(
            "{place}: CronJob of unknown apiVersion `{api_version}` not converted (expected batch/v1 or \
             batch/v1beta1)"
        )),
        "" => conversion
            .warnings
            .push(format!("{place}: note: not a Kubernetes object (no kind), skipped")),
        other => {
            let name = document
                .get("metadata")
                .and_then(|m| m.get("name"))
                .and_then(Value::as_str)
                .unwrap_or("?");
            conversion
                .warnings
                .push(format!("{place}: note: skipped {other} {name}: not a CronJob"));
        }
    }
}

/// How a CronJob is named in messages: `FILE: CronJob NS/NAME`.
fn cronjob_label(f: &Found<'_>, namespace: Option<&str>) -> String {
    let name = f
        .object
        .get("metadata")
        .and_then(|m| m.get("name"))
        .map_or_else(|| "<no name>".to_owned(), Value::describe);
    match namespace {
        Some(ns) => format!("{}: CronJob {ns}/{name}", f.origin),
        None => format!("{}: CronJob {name}", f.origin),
    }
}

/// The messages about one CronJob.
#[derive(Default)]
struct Messages {
    warnings: Vec<String>,
    /// Why it cannot be converted at all; the first reason only.
    error: Option<String>,
}

impl Messages {
    fn warn(&mut self, message: impl Into<String>) {
        self.warnings.push(format!("warning: {}", message.into()));
    }
    fn note(&mut self, message: impl Into<String>) {
        self.warnings.push(format!("note: {}", message.into()));
    }
    fn error(&mut self, message: impl Into<String>) {
        self.error.get_or_insert(message.into());
    }
}

/// Converts one CronJob; `None` (and an error in `out`) if it cannot be.
fn convert_one(
    f: &Found<'_>,
    namespace: Option<&str>,
    several_namespaces: bool,
    out: &mut Messages,
) -> Option<(String, Value)> {
    let object = &f.object;
    let empty = Value::Map(Vec::new());
    let metadata = object.get("metadata").unwrap_or(&empty);
    let spec = object.get("spec").unwrap_or(&empty);

    if f.api_version == "batch/v1beta1" {
        out.note(
            "batch/v1beta1 (removed in Kubernetes 1.25) read as batch/v1: the fields are the same",
        );
    }

    // --- metadata ---
    let name = match metadata.get("name") {
        Some(Value::Str(name)) => match check_dns_label(name) {
            Ok(()) => Some(name.clone()),
            Err(why) => {
                out.error(format!(
                    "metadata.name `{name}` is not a valid leasecron job name: {why} (a DNS-1123 label of \
                     at most {MAX_NAME_LEN} characters); rename it"
                ));
                None
            }
        },
        Some(other) => {
            out.error(format!(
                "metadata.name must be a string, found {}",
                other.describe()
            ));
            None
        }
        None => {
            if metadata.get("generateName").is_some() {
                out.error("metadata.generateName without metadata.name: a job needs a fixed name");
            } else {
                out.error("no metadata.name");
            }
            None
        }
    };
    if let (true, Some(ns)) = (several_namespaces, namespace) {
        out.warn(format!(
            "metadata.namespace `{ns}` dropped: the CronJobs come from several namespaces, and leasecron \
             creates every Job in one namespace (its own); check that the Jobs' service accounts, secrets \
             and config maps exist there"
        ));
    }
    for (key, value) in entries(metadata) {
        match key.as_str() {
            "name" | "namespace" => {}
            k if SERVER_METADATA.contains(&k) => {}
            "labels" if !value.is_empty_map() => out.warn(format!(
                "metadata.labels dropped ({}): a jobs-file job has no labels",
                value.keys().join(", ")
            )),
            "annotations" => {
                let kept: Vec<String> = value
                    .keys()
                    .into_iter()
                    .filter(|k| k != LAST_APPLIED)
                    .collect();
                if !kept.is_empty() {
                    out.warn(format!(
                        "metadata.annotations dropped ({}): a jobs-file job has no annotations",
                        kept.join(", ")
                    ));
                }
            }
            "ownerReferences" => out.warn(
                "metadata.ownerReferences dropped: the CronJob is owned by another object (a Helm release, \
                 an operator …) that may recreate it or fight its deletion; cut it over at the owner",
            ),
            "finalizers" => out.warn("metadata.finalizers dropped: a jobs-file job has none"),
            "labels" => {}
            other => out.warn(format!(
                "metadata.{other} dropped: a jobs-file job has no such field"
            )),
        }
    }
    if object.get("status").is_some_and(|s| !s.is_empty_map()) {
        out.warn(
            "status dropped (lastScheduleTime, active Jobs): leasecron's run state starts empty, so the \
             first leader runs nothing for slots before the cut-over; Jobs the CronJob still has active \
             are not known to leasecron's Forbid/Replace",
        );
    }
    for key in object.keys() {
        if !matches!(
            key.as_str(),
            "apiVersion" | "kind" | "metadata" | "spec" | "status"
        ) {
            out.warn(format!("{key} dropped: not a CronJob field"));
        }
    }

    // --- spec ---
    let mut job: Vec<(&str, Value)> = Vec::new();
    for key in spec.keys() {
        if !SPEC_FIELDS.contains(&key.as_str()) {
            out.warn(format!(
                "spec.{key} dropped: not a CronJob field this converter knows"
            ));
        }
    }
    let (schedule, prefix_zone) = match spec.get("schedule") {
        Some(Value::Str(s)) => split_tz_prefix(s),
        Some(other) => {
            out.error(format!(
                "spec.schedule must be a string, found {}",
                other.describe()
            ));
            (String::new(), None)
        }
        None => {
            out.error("no spec.schedule");
            (String::new(), None)
        }
    };
    let spec_zone = match spec.get("timeZone") {
        None | Some(Value::Null) => None,
        Some(Value::Str(z)) => Some(z.clone()),
        Some(other) => {
            out.error(format!(
                "spec.timeZone must be a string, found {}",
                other.describe()
            ));
            None
        }
    };
    let zone_text = match (spec_zone, prefix_zone) {
        (Some(spec_zone), Some(prefix)) => {
            if spec_zone != prefix {
                out.warn(format!(
                    "spec.schedule's prefix zone `{prefix}` ignored: spec.timeZone `{spec_zone}` is used \
                     (the API server refuses both together)"
                ));
            }
            Some(spec_zone)
        }
        (Some(zone), None) => Some(zone),
        (None, Some(prefix)) => {
            out.note(format!(
                "spec.schedule's TZ prefix became timeZone: {prefix} (leasecron refuses the prefix)"
            ));
            Some(prefix)
        }
        (None, None) => None,
    };
    let zone = match zone_text.as_deref().map(Tz::from_str) {
        None => Some(Tz::UTC),
        Some(Ok(zone)) => Some(zone),
        Some(Err(_)) => {
            out.error(format!(
                "time zone `{}` is not an IANA time zone leasecron knows",
                zone_text.as_deref().unwrap_or_default()
            ));
            None
        }
    };
    if let (Some(zone), false) = (zone, schedule.is_empty()) {
        if let Err(err) = Schedule::parse(&schedule, zone) {
            out.error(format!(
                "spec.schedule `{schedule}` cannot be parsed by leasecron: {err}"
            ));
        }
    }
    if zone_text.is_none() {
        out.note(
            "no time zone: CronJob uses the kube-controller-manager's local zone (UTC on most clusters), \
             leasecron uses UTC",
        );
    }

    let policy = match spec.get("concurrencyPolicy") {
        None | Some(Value::Null) => "Allow".to_owned(),
        Some(Value::Str(p)) if matches!(p.as_str(), "Allow" | "Forbid" | "Replace") => p.clone(),
        Some(other) => {
            out.error(format!(
                "spec.concurrencyPolicy `{}` is not Allow, Forbid or Replace",
                other.describe()
            ));
            String::new()
        }
    };

    let starting_deadline = match spec.get("startingDeadlineSeconds") {
        None | Some(Value::Null) => {
            out.warn(
                "no spec.startingDeadlineSeconds: CronJob starts a missed schedule however late (the \
                 latest one, unless more than 100 were missed), leasecron without startingDeadline skips \
                 it; add startingDeadline to keep some catch-up",
            );
            None
        }
        Some(Value::Int(n)) if *n > 0 => {
            out.warn(format!(
                "spec.startingDeadlineSeconds {n} became startingDeadline: {n}s, whose meaning differs: \
                 leasecron runs only the latest slot missed during a failover or stall if it is at most \
                 {n}s late, and counts older ones as missed_deadline; CronJob also counts the missed \
                 schedules within that window to give up past 100, and checks it only every ~10s"
            ));
            Some(Value::Str(format!("{n}s")))
        }
        Some(other) => {
            out.warn(format!(
                "spec.startingDeadlineSeconds {} dropped: not a positive integer",
                other.describe()
            ));
            None
        }
    };

    let suspend = match spec.get("suspend") {
        None | Some(Value::Null) => None,
        Some(Value::Bool(b)) => Some(Value::Bool(*b)),
        Some(other) => {
            out.warn(format!(
                "spec.suspend {} dropped: not a boolean",
                other.describe()
            ));
            None
        }
    };

    let mut limits = Vec::new();
    for field in ["successfulJobsHistoryLimit", "failedJobsHistoryLimit"] {
        match spec.get(field) {
            None | Some(Value::Null) => {}
            Some(Value::Int(n)) if *n >= 0 => limits.push((field, Value::Int(*n))),
            Some(other) => out.warn(format!(
                "spec.{field} {} dropped: not a non-negative integer",
                other.describe()
            )),
        }
    }

    // --- jobTemplate ---
    let template = spec.get("jobTemplate").unwrap_or(&empty);
    for (key, value) in entries(template) {
        match key.as_str() {
            "spec" => {}
            "metadata" => template_metadata(value, out),
            other => out.warn(format!(
                "spec.jobTemplate.{other} dropped: not a JobTemplateSpec field"
            )),
        }
    }
    let job_spec = match template.get("spec") {
        Some(job_spec @ Value::Map(_)) => Some(job_spec.clone()),
        Some(other) => {
            out.error(format!(
                "spec.jobTemplate.spec must be a mapping (a JobSpec), found {}",
                other.describe()
            ));
            None
        }
        None => {
            out.error("no spec.jobTemplate.spec (the JobSpec)");
            None
        }
    };
    if let Some(job_spec) = &job_spec {
        job_spec_notes(job_spec, !limits.is_empty(), out);
    }

    if out.error.is_some() {
        return None;
    }
    let name = name?;
    job.push(("name", Value::Str(name.clone())));
    job.push(("schedule", Value::Str(schedule)));
    if let Some(zone) = zone_text {
        job.push(("timeZone", Value::Str(zone)));
    }
    job.push(("concurrencyPolicy", Value::Str(policy)));
    if let Some(deadline) = starting_deadline {
        job.push(("startingDeadline", deadline));
    }
    if let Some(suspend) = suspend {
        job.push(("suspend", suspend));
    }
    job.extend(limits);
    job.push(("executor", Value::Str("kubernetes".into())));
    job.push(("jobTemplate", job_spec?));
    Some((name, Value::map(job)))
}

/// The entries of a mapping with text keys (none for anything else).
fn entries(value: &Value) -> Vec<(String, &Value)> {
    match value {
        Value::Map(entries) => entries.iter().map(|(k, v)| (k.describe(), v)).collect(),
        _ => Vec::new(),
    }
}

/// Warnings for `spec.jobTemplate.metadata`: nothing of it is carried over.
fn template_metadata(metadata: &Value, out: &mut Messages) {
    for (key, value) in entries(metadata) {
        match key.as_str() {
            // `kubectl get -o yaml` prints `creationTimestamp: null` there.
            _ if matches!(value, Value::Null) => {}
            "labels" | "annotations" if !value.is_empty_map() => out.warn(format!(
                "spec.jobTemplate.metadata.{key} dropped ({}): the jobTemplate is a JobSpec, without the \
                 Job's own metadata; leasecron sets its own labels and annotations on each Job (copy them \
                 to jobTemplate.template.metadata if the pods should carry them)",
                value.keys().join(", ")
            )),
            "labels" | "annotations" => {}
            "generateName" => out.warn(
                "spec.jobTemplate.metadata.generateName dropped: leasecron names each Job from the job \
                 and the slot",
            ),
            "name" => out.warn(
                "spec.jobTemplate.metadata.name dropped: leasecron names each Job from the job and the \
                 slot",
            ),
            "namespace" => out.warn(
                "spec.jobTemplate.metadata.namespace dropped: leasecron creates the Jobs in its own \
                 namespace",
            ),
            other => out.warn(format!(
                "spec.jobTemplate.metadata.{other} dropped: leasecron sets each Job's metadata"
            )),
        }
    }
}

/// Notes on JobSpec fields that overlap with leasecron's own.
fn job_spec_notes(job_spec: &Value, history_limits: bool, out: &mut Messages) {
    if let Some(deadline) = job_spec.get("activeDeadlineSeconds") {
        out.note(format!(
            "jobTemplate.activeDeadlineSeconds {} kept in the JobSpec, and no `timeout` set from it: \
             leasecron's timeout is written to activeDeadlineSeconds, so set one of the two",
            deadline.describe()
        ));
    }
    if let Some(limit) = job_spec.get("backoffLimit") {
        out.note(format!(
            "jobTemplate.backoffLimit {} kept in the JobSpec, and no `retries` set from it: leasecron's \
             retries are written to backoffLimit, so set one of the two",
            limit.describe()
        ));
    }
    if let Some(ttl) = job_spec.get("ttlSecondsAfterFinished") {
        let limits = if history_limits {
            "the history limits set here"
        } else {
            "the default history limits (3 successful, 1 failed)"
        };
        out.warn(format!(
            "jobTemplate.ttlSecondsAfterFinished {} kept: the TTL controller deletes each finished Job \
             that long after it ends, whatever {limits}, so fewer finished Jobs (and their logs) may be \
             kept than the limits say",
            ttl.describe()
        ));
    }
}

/// Splits a `CRON_TZ=Zone ` or `TZ=Zone ` prefix off a CronJob schedule.
fn split_tz_prefix(schedule: &str) -> (String, Option<String>) {
    let trimmed = schedule.trim();
    for prefix in ["CRON_TZ=", "TZ="] {
        if let Some(rest) = trimmed.strip_prefix(prefix) {
            let (zone, expr) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
            return (expr.trim().to_owned(), Some(zone.to_owned()));
        }
    }
    (trimmed.to_owned(), None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(text: &str) -> Conversion {
        convert(&[Input {
            origin: "in.yaml".into(),
            text: text.into(),
        }])
    }

    const MINIMAL: &str = "\
apiVersion: batch/v1
kind: CronJob
metadata:
  name: hello
spec:
  schedule: '*/5 * * * *'
  jobTemplate:
    spec:
      template:
        spec:
          restartPolicy: Never
          containers:
            - name: hello
              image: busybox:1.36
              command: [echo, hi]
";

    #[test]
    fn tz_prefix() {
        assert_eq!(
            split_tz_prefix("CRON_TZ=Europe/Berlin 0 2 * * *"),
            ("0 2 * * *".into(), Some("Europe/Berlin".into()))
        );
        assert_eq!(
            split_tz_prefix(" TZ=UTC  @daily"),
            ("@daily".into(), Some("UTC".into()))
        );
        assert_eq!(split_tz_prefix("@hourly"), ("@hourly".into(), None));
    }

    #[test]
    fn minimal_cronjob() {
        let c = run(MINIMAL);
        assert!(c.errors.is_empty(), "{:?}", c.errors);
        assert!(c.output.contains("name: hello"), "{}", c.output);
        assert!(
            c.output.contains("concurrencyPolicy: Allow"),
            "{}",
            c.output
        );
        assert!(c.output.contains("executor: kubernetes"), "{}", c.output);
        assert!(c.output.starts_with("# leasecron jobs"), "{}", c.output);
        // The output is a YAML document whose JobSpec is the one written.
        let back: Value = serde_saphyr::from_str(&c.output).expect("valid YAML");
        let original: Value = serde_saphyr::from_str(MINIMAL).expect("valid YAML");
        let Some(Value::Seq(jobs)) = back.get("jobs") else {
            panic!("no jobs")
        };
        assert_eq!(
            jobs[0].get("jobTemplate"),
            original
                .get("spec")
                .and_then(|s| s.get("jobTemplate"))
                .and_then(|t| t.get("spec"))
        );
    }

    #[test]
    fn other_kinds_are_skipped_with_a_note() {
        let c = run("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n---\n");
        assert!(c.errors.is_empty());
        assert_eq!(c.warnings.len(), 1);
        assert!(
            c.warnings[0].contains("skipped ConfigMap x"),
            "{:?}",
            c.warnings
        );
        assert!(c.output.ends_with("jobs: []\n"));
    }

    #[test]
    fn bad_schedule_is_an_error_with_the_parsers_message() {
        let c = run(&MINIMAL.replace("'*/5 * * * *'", "'61 * * * *'"));
        assert_eq!(c.errors.len(), 1, "{:?}", c.errors);
        assert!(c.errors[0].contains("CronJob hello: not converted: spec.schedule"));
        assert!(c.output.ends_with("jobs: []\n"));
    }

    #[test]
    fn long_name_is_an_error() {
        let long = "a".repeat(64);
        let c = run(&MINIMAL.replace("name: hello\n", &format!("name: {long}\n")));
        assert_eq!(c.errors.len(), 1, "{:?}", c.errors);
        assert!(c.errors[0].contains("longer than 63"), "{:?}", c.errors);
    }

    #[test]
    fn duplicate_names_keep_the_first() {
        let c = run(&format!("{MINIMAL}---\n{MINIMAL}"));
        assert_eq!(c.errors.len(), 1, "{:?}", c.errors);
        assert_eq!(
            c.output.matches("\n- name: hello\n").count(),
            1,
            "{}",
            c.output
        );
    }

    #[test]
    fn strings_that_look_like_other_types_stay_strings() {
        let c = run(&MINIMAL.replace("command: [echo, hi]", "command: [echo, 'yes', '1.10', '~']"));
        let back: Value = serde_saphyr::from_str(&c.output).expect("valid YAML");
        let text = format!("{back:?}");
        assert!(text.contains("Str(\"yes\")"), "{}", c.output);
        assert!(text.contains("Str(\"1.10\")"), "{}", c.output);
        assert!(text.contains("Str(\"~\")"), "{}", c.output);
    }
}
