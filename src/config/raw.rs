//! The jobs file as written: strict serde structs that keep every value's position.
//!
//! Scalars stay strings here (durations, zones, policies) so that [`super::validate`] can report every bad
//! value at once with its line and column; serde would stop at the first.

use std::fmt;

use serde::de::{IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_saphyr::{Location, Spanned};

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct RawFile {
    /// Values merged under every job.
    pub defaults: Option<Spanned<RawJob>>,
    /// The jobs, in file order. `None` when the key is missing (an error) or null.
    pub jobs: Option<Spanned<Vec<Spanned<RawJob>>>>,
}

/// One job, or the `defaults:` block (which may not set name, schedule, command or shell).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct RawJob {
    pub name: Option<Spanned<String>>,
    pub schedule: Option<Spanned<String>>,
    pub time_zone: Option<Spanned<String>>,
    pub command: Option<Spanned<Vec<Spanned<String>>>>,
    pub shell: Option<Spanned<String>>,
    pub env: Option<Spanned<RawEnv>>,
    pub working_dir: Option<Spanned<String>>,
    pub timeout: Option<Spanned<String>>,
    pub termination_grace: Option<Spanned<String>>,
    pub concurrency_policy: Option<Spanned<String>>,
    pub starting_deadline: Option<Spanned<String>>,
    pub retries: Option<Spanned<i64>>,
    pub retry_backoff: Option<Spanned<String>>,
    pub suspend: Option<Spanned<bool>>,
}

/// An `env:` mapping with the position of every key (a `BTreeMap` would lose them).
#[derive(Debug, Default)]
pub(super) struct RawEnv(pub Vec<(Spanned<String>, Spanned<String>)>);

impl<'de> Deserialize<'de> for RawEnv {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(EnvVisitor)
    }
}

struct EnvVisitor;

impl<'de> Visitor<'de> for EnvVisitor {
    type Value = RawEnv;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a mapping of environment variable names to values")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawEnv, A::Error> {
        let mut pairs = Vec::new();
        while let Some(pair) = map.next_entry()? {
            pairs.push(pair);
        }
        Ok(RawEnv(pairs))
    }
}

/// Just enough of a file to tell which job a serde error is in; ignores unknown fields and odd values.
#[derive(Debug, Deserialize)]
pub(super) struct Outline {
    #[serde(default)]
    defaults: Option<Spanned<IgnoredAny>>,
    #[serde(default)]
    jobs: Option<Vec<Spanned<OutlineJob>>>,
}

#[derive(Debug, Deserialize)]
struct OutlineJob {
    #[serde(default)]
    name: Option<OutlineName>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum OutlineName {
    Text(String),
    Other(IgnoredAny),
}

impl Outline {
    /// The label of the job that a serde error at `at` is in, if `source` parses leniently.
    ///
    /// serde-saphyr records where a node starts but not where it ends, so this picks the last job
    /// starting at or before `at`. Errors in column 1 belong to the top-level mapping (in block style),
    /// and a `defaults:` block between that job and `at` means the error is in the defaults.
    pub fn job_at(source: &str, at: Position) -> Option<String> {
        // A duplicate key is one of the errors being located: let the outline read past it.
        let lenient = serde_saphyr::options! {
            duplicate_keys: serde_saphyr::DuplicateKeyPolicy::LastWins,
        };
        let outline: Outline = serde_saphyr::from_str_with_options(source, lenient).ok()?;
        let jobs = outline.jobs?;
        if at.column <= 1 {
            return None;
        }
        let index = jobs.iter().rposition(|job| Position::at(job) <= at)?;
        let job_start = Position::at(&jobs[index]);
        if let Some(defaults) = &outline.defaults {
            let defaults_start = Position::at(defaults);
            if job_start < defaults_start && defaults_start <= at {
                return None;
            }
        }
        let name = match &jobs[index].value.name {
            Some(OutlineName::Text(name)) => Some(name.as_str()),
            _ => None,
        };
        Some(job_label(name, index))
    }
}

/// How diagnostics call a job: its name as written, or `jobs[INDEX]` without a usable one.
pub(super) fn job_label(name: Option<&str>, index: usize) -> String {
    match name.map(str::trim) {
        Some(name) if !name.is_empty() => super::escape_controls(name),
        _ => format!("jobs[{index}]"),
    }
}

/// A 1-based line and column (0:0 when unknown), ordered by line, then column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Position {
    pub line: usize,
    pub column: usize,
}

impl Position {
    /// The top of the file, for problems that belong to no particular value.
    pub const START: Position = Position { line: 1, column: 1 };

    /// The position serde-saphyr recorded.
    pub fn of(location: Location) -> Position {
        let to_usize = |n: u64| usize::try_from(n).unwrap_or(usize::MAX);
        Position {
            line: to_usize(location.line()),
            column: to_usize(location.column()),
        }
    }

    /// Where a spanned value is used.
    pub fn at<T>(spanned: &Spanned<T>) -> Position {
        Position::of(spanned.referenced)
    }
}
