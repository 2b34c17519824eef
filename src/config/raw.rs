//! The jobs file as written: typed structs that keep every value's position, built from a [`Node`] tree.
//!
//! This is where the shape of the file is checked: unknown fields (with the list of expected ones),
//! duplicate keys and values of the wrong type. It replaces `#[serde(deny_unknown_fields)]` on derived
//! structs, which stops at the first unknown field of the whole file; here each problem is recorded with
//! its position, in the job it belongs to, and checking goes on with the next field and the next job.
//! A field with a problem is left unset (`None`).
//!
//! Scalars stay strings here (durations, zones, policies) so that [`super::validate`] can report every bad
//! value at once with its line and column.

use std::collections::HashMap;

use serde::de::{Error as _, Expected};
use serde_saphyr::{Location, Spanned};

use super::node::{into_scalar_text, scalar_text, Node};

/// Every field a job (or `defaults:`) may have, as written.
pub(super) const JOB_FIELDS: &[&str] = &[
    "name",
    "schedule",
    "timeZone",
    "command",
    "shell",
    "env",
    "workingDir",
    "timeout",
    "terminationGrace",
    "concurrencyPolicy",
    "startingDeadline",
    "retries",
    "retryBackoff",
    "suspend",
    "rerunInterrupted",
    "jitter",
    "executor",
    "jobTemplate",
    "cancelOnLeadershipLoss",
    "successfulJobsHistoryLimit",
    "failedJobsHistoryLimit",
];

/// The top-level fields.
const FILE_FIELDS: &[&str] = &["defaults", "jobs"];

/// Mappings with at most this many entries find duplicate keys by looking back through the earlier ones.
const LINEAR_KEY_SEARCH_MAX: usize = 32;

/// The whole file.
#[derive(Debug, Default)]
pub(super) struct RawFile {
    /// Values merged under every job.
    pub defaults: Option<At<RawJob>>,
    /// The jobs, in file order. `None` when the key is missing, null or not a list.
    pub jobs: Option<At<Vec<At<RawJob>>>>,
    /// Shape problems outside `defaults:` and the jobs.
    pub problems: Vec<Problem>,
}

/// One job, or the `defaults:` block (which may not set name, schedule, command or shell).
#[derive(Debug, Default)]
pub(super) struct RawJob {
    pub name: Option<At<String>>,
    pub schedule: Option<At<String>>,
    pub time_zone: Option<At<String>>,
    pub command: Option<At<Vec<At<String>>>>,
    pub shell: Option<At<String>>,
    pub env: Option<At<RawEnv>>,
    pub working_dir: Option<At<String>>,
    pub timeout: Option<At<String>>,
    pub termination_grace: Option<At<String>>,
    pub concurrency_policy: Option<At<String>>,
    pub starting_deadline: Option<At<String>>,
    pub retries: Option<At<RawInt>>,
    pub retry_backoff: Option<At<String>>,
    pub suspend: Option<At<bool>>,
    pub rerun_interrupted: Option<At<bool>>,
    pub jitter: Option<At<String>>,
    pub executor: Option<At<String>>,
    /// `jobTemplate:`, checked against the JobSpec schema as it is read (its problems are kept apart:
    /// they do not hide a missing `name` or `schedule`).
    pub job_template: Option<At<super::job_template::Checked>>,
    pub cancel_on_leadership_loss: Option<At<bool>>,
    pub successful_jobs_history_limit: Option<At<RawInt>>,
    pub failed_jobs_history_limit: Option<At<RawInt>>,
    /// Shape problems inside this job.
    pub problems: Vec<Problem>,
}

/// An integer as written: its value, if it fits an `i128`, and its text, for messages.
#[derive(Debug)]
pub(super) struct RawInt {
    pub value: Option<i128>,
    pub written: String,
}

/// An `env:` mapping with the position of every key (a `BTreeMap` would lose them).
#[derive(Debug, Default)]
pub(super) struct RawEnv(pub Vec<(At<String>, At<String>)>);

/// A value and the position where it is used (a [`Spanned`]'s `referenced` location), all that the
/// checks need.
///
/// A [`Spanned`] carries two full locations (with byte spans and a source id), 96 bytes; a job holds up to
/// sixteen values, and a file of 10 000 jobs held 20 MB of them at once, the memory of the whole file
/// again.
#[derive(Debug)]
pub(super) struct At<T> {
    pub value: T,
    pub at: Position,
}

impl<T> From<Spanned<T>> for At<T> {
    fn from(spanned: Spanned<T>) -> Self {
        At {
            at: Position::at(&spanned),
            value: spanned.value,
        }
    }
}

/// A shape problem: a message at a position, for the caller to attribute to a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Problem {
    pub at: Position,
    pub message: String,
}

// === building the raw structs ===

impl RawFile {
    /// True if no shape problem was found anywhere in the file.
    pub fn is_well_shaped(&self) -> bool {
        let job_ok = |job: &At<RawJob>| job.value.problems.is_empty();
        self.problems.is_empty()
            && self.defaults.as_ref().is_none_or(job_ok)
            && self
                .jobs
                .as_ref()
                .is_none_or(|jobs| jobs.value.iter().all(job_ok))
    }

    /// Imposes the file's shape on `root`, parsed from `source`, recording every mismatch.
    ///
    /// Positions stay those of `source`; `shift` places the ones quoted in messages ("first at line 3")
    /// in the file reported.
    pub fn from_node(root: Spanned<Node>, source: &str, shift: Shift) -> RawFile {
        let mut shaper = Shaper::new(source, shift);
        let mut file = RawFile::default();
        let Some(entries) = shaper.mapping(root, "a mapping with `jobs:` (and `defaults:`)") else {
            file.problems = shaper.problems;
            return file;
        };
        for (key, value) in entries {
            match key.value.as_str() {
                "defaults" => file.defaults = shaper.job(value),
                "jobs" => file.jobs = shaper.jobs(value),
                other => shaper.unknown_field(&key, other, FILE_FIELDS),
            }
        }
        file.problems = shaper.problems;
        file
    }
}

/// Checks shapes, collecting problems; `source` supplies the written text of non-string scalars.
struct Shaper<'s> {
    source: &'s str,
    shift: Shift,
    problems: Vec<Problem>,
}

impl<'s> Shaper<'s> {
    fn new(source: &'s str, shift: Shift) -> Self {
        Shaper {
            source,
            shift,
            problems: Vec::new(),
        }
    }

    fn problem(&mut self, at: Position, message: String) {
        let message = super::escape_controls(&message);
        self.problems.push(Problem { at, message });
    }

    fn invalid_type(&mut self, node: &Spanned<Node>, expected: &dyn Expected) {
        let err = serde::de::value::Error::invalid_type(node.value.unexpected(), expected);
        self.problem(Position::at(node), err.to_string());
    }

    fn unknown_field(&mut self, key: &At<String>, name: &str, expected: &'static [&str]) {
        let err = serde::de::value::Error::unknown_field(name, expected);
        self.problem(key.at, err.to_string());
    }

    /// The entries of a mapping with string keys; null is an empty mapping.
    ///
    /// Keys that are not scalars and repeated keys are reported and left out (the first one wins).
    fn mapping(
        &mut self,
        node: Spanned<Node>,
        expected: &str,
    ) -> Option<Vec<(At<String>, Spanned<Node>)>> {
        let entries = match node.value {
            Node::Map(entries) => entries,
            Node::Null => Vec::new(),
            _ => {
                self.invalid_type(&node, &expected);
                return None;
            }
        };
        // Jobs have a dozen keys: looking back through those is cheaper than hashing each key. Only a
        // mapping larger than that (a big `env:`) gets an index, so that none is quadratic.
        let mut index: Option<HashMap<String, Position>> =
            (entries.len() > LINEAR_KEY_SEARCH_MAX).then(HashMap::new);
        let mut kept: Vec<(At<String>, Spanned<Node>)> = Vec::with_capacity(entries.len());
        for (key, value) in entries {
            let key = match into_scalar_text(key, self.source) {
                Ok(key) => At::from(key),
                Err(key) => {
                    self.invalid_type(&key, &"a field name");
                    continue;
                }
            };
            let first = match &index {
                Some(index) => index.get(&key.value).copied(),
                None => kept
                    .iter()
                    .find(|(seen, _)| seen.value == key.value)
                    .map(|(seen, _)| seen.at),
            };
            let at = key.at;
            if let Some(first) = first {
                let first = self.shift.apply(first);
                let message = format!(
                    "duplicate mapping key `{}` (first at line {}, column {})",
                    key.value, first.line, first.column
                );
                self.problem(at, message);
                continue;
            }
            if let Some(index) = &mut index {
                index.insert(key.value.clone(), at);
            }
            kept.push((key, value));
        }
        Some(kept)
    }

    /// The `jobs:` list; null is treated as missing.
    fn jobs(&mut self, node: Spanned<Node>) -> Option<At<Vec<At<RawJob>>>> {
        let at = Position::at(&node);
        let items = match node.value {
            Node::Seq(items) => items,
            Node::Null => return None,
            _ => {
                self.invalid_type(&node, &"a list of jobs");
                return None;
            }
        };
        let jobs = items
            .into_iter()
            .map(|item| {
                let at = Position::at(&item);
                let job = Shaper::new(self.source, self.shift).job_fields(item);
                At { value: job, at }
            })
            .collect();
        Some(At { value: jobs, at })
    }

    /// `defaults:`, with its problems kept apart from the file's.
    fn job(&mut self, node: Spanned<Node>) -> Option<At<RawJob>> {
        if node.value == Node::Null {
            return None;
        }
        let at = Position::at(&node);
        let job = Shaper::new(self.source, self.shift).job_fields(node);
        Some(At { value: job, at })
    }

    /// One job's fields; this shaper's problems become the job's.
    fn job_fields(mut self, node: Spanned<Node>) -> RawJob {
        let mut job = RawJob::default();
        for (key, value) in self.mapping(node, "a job (a mapping)").unwrap_or_default() {
            self.job_field(&mut job, key, value);
        }
        job.problems = self.problems;
        job
    }

    fn job_field(&mut self, job: &mut RawJob, key: At<String>, value: Spanned<Node>) {
        match key.value.as_str() {
            "name" => job.name = self.string(value),
            "schedule" => job.schedule = self.string(value),
            "timeZone" => job.time_zone = self.string(value),
            "command" => job.command = self.argv(value),
            "shell" => job.shell = self.string(value),
            "env" => job.env = self.env(value),
            "workingDir" => job.working_dir = self.string(value),
            "timeout" => job.timeout = self.string(value),
            "terminationGrace" => job.termination_grace = self.string(value),
            "concurrencyPolicy" => job.concurrency_policy = self.string(value),
            "startingDeadline" => job.starting_deadline = self.string(value),
            "retries" => job.retries = self.integer(value),
            "retryBackoff" => job.retry_backoff = self.string(value),
            "suspend" => job.suspend = self.boolean(value),
            "rerunInterrupted" => job.rerun_interrupted = self.boolean(value),
            "jitter" => job.jitter = self.string(value),
            "executor" => job.executor = self.string(value),
            "jobTemplate" => {
                if value.value != Node::Null {
                    let at = Position::at(&value);
                    let checked = super::job_template::check(value, self.source);
                    job.job_template = Some(At { value: checked, at });
                }
            }
            "cancelOnLeadershipLoss" => job.cancel_on_leadership_loss = self.boolean(value),
            "successfulJobsHistoryLimit" => job.successful_jobs_history_limit = self.integer(value),
            "failedJobsHistoryLimit" => job.failed_jobs_history_limit = self.integer(value),
            other => self.unknown_field(&key, other, JOB_FIELDS),
        }
    }

    /// A string field; null means unset.
    fn string(&mut self, node: Spanned<Node>) -> Option<At<String>> {
        if node.value == Node::Null {
            return None;
        }
        self.required_string(node)
    }

    /// A string that must be there (a list item, an env value).
    fn required_string(&mut self, node: Spanned<Node>) -> Option<At<String>> {
        match into_scalar_text(node, self.source) {
            Ok(text) => Some(At::from(text)),
            Err(node) => {
                self.invalid_type(&node, &"a string");
                None
            }
        }
    }

    fn integer(&mut self, node: Spanned<Node>) -> Option<At<RawInt>> {
        let written = scalar_text(&node, self.source);
        match node.value {
            Node::Null => None,
            Node::Int(n) => Some(respan(
                &node,
                RawInt {
                    value: Some(n),
                    written: written.unwrap_or_else(|| n.to_string()),
                },
            )),
            // Digits too many for an integer type are read as a float: still an integer as written.
            Node::Float(_) => match written.filter(|text| is_integer_text(text)) {
                Some(written) => Some(respan(
                    &node,
                    RawInt {
                        value: None,
                        written,
                    },
                )),
                None => {
                    self.invalid_type(&node, &"an integer");
                    None
                }
            },
            _ => {
                self.invalid_type(&node, &"an integer");
                None
            }
        }
    }

    fn boolean(&mut self, node: Spanned<Node>) -> Option<At<bool>> {
        match node.value {
            Node::Null => None,
            Node::Bool(b) => Some(respan(&node, b)),
            _ => {
                self.invalid_type(&node, &"a boolean (true or false)");
                None
            }
        }
    }

    /// `command:`, a list of strings; one bad item leaves the whole field unset.
    fn argv(&mut self, node: Spanned<Node>) -> Option<At<Vec<At<String>>>> {
        let at = Position::at(&node);
        let items = match node.value {
            Node::Null => return None,
            Node::Seq(items) => items,
            _ => {
                self.invalid_type(&node, &"a list of strings (the argv)");
                return None;
            }
        };
        let count = items.len();
        let argv: Vec<_> = items
            .into_iter()
            .filter_map(|item| self.required_string(item))
            .collect();
        (argv.len() == count).then_some(At { value: argv, at })
    }

    /// `env:`, a mapping of names to strings; bad entries are reported and left out.
    fn env(&mut self, node: Spanned<Node>) -> Option<At<RawEnv>> {
        if node.value == Node::Null {
            return None;
        }
        let at = Position::at(&node);
        let expected = "a mapping of environment variable names to values";
        let entries = self.mapping(node, expected)?;
        let pairs = entries
            .into_iter()
            .filter_map(|(key, value)| Some((key, self.required_string(value)?)))
            .collect();
        Some(At {
            value: RawEnv(pairs),
            at,
        })
    }
}

/// True if `text` is a decimal integer (a sign, then digits).
fn is_integer_text(text: &str) -> bool {
    let digits = text.strip_prefix(['+', '-']).unwrap_or(text);
    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
}

/// `value` at the position of `node`.
fn respan<T, U>(node: &Spanned<T>, value: U) -> At<U> {
    At {
        value,
        at: Position::at(node),
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

/// How positions in parsed text move to the file reported.
///
/// A jobs file of its own is reported as parsed ([`Shift::NONE`]). A jobs file embedded as a block literal
/// in a manifest starts `lines` lines further down and is indented by `columns`: its line `n`, column `c`
/// is the manifest's line `lines + n`, column `columns + c`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Shift {
    pub lines: usize,
    pub columns: usize,
}

impl Shift {
    /// Positions stay as parsed.
    pub const NONE: Shift = Shift {
        lines: 0,
        columns: 0,
    };

    /// `at` in the file reported; an unknown position (line 0) stays unknown.
    pub fn apply(self, at: Position) -> Position {
        if at.line == 0 {
            return at;
        }
        Position {
            line: at.line.saturating_add(self.lines),
            column: at.column.saturating_add(self.columns),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::node;

    fn shape(source: &str) -> RawFile {
        RawFile::from_node(
            node::parse(source).expect("valid YAML"),
            source,
            Shift::NONE,
        )
    }

    fn messages(problems: &[Problem]) -> Vec<(usize, usize, &str)> {
        problems
            .iter()
            .map(|p| (p.at.line, p.at.column, p.message.as_str()))
            .collect()
    }

    #[test]
    fn null_fields_are_unset_and_a_null_job_is_empty() {
        let file = shape("defaults: ~\njobs:\n  - ~\n  - name: a\n    timeout: ~\n    retries:\n");
        assert!(file.is_well_shaped());
        assert!(file.defaults.is_none());
        let jobs = file.jobs.expect("jobs").value;
        assert_eq!(jobs.len(), 2);
        assert!(jobs[0].value.name.is_none());
        let job = &jobs[1].value;
        assert_eq!(job.name.as_ref().map(|n| n.value.as_str()), Some("a"));
        assert!(job.timeout.is_none() && job.retries.is_none());
    }

    #[test]
    fn problems_stay_with_the_job_they_are_in() {
        let file = shape("jobs:\n  - name: a\n    bogus: 1\n  - retries: 1.5\nextra: 1\n");
        assert!(!file.is_well_shaped());
        assert_eq!(messages(&file.problems)[0].0, 5);
        let jobs = file.jobs.expect("jobs").value;
        assert_eq!(messages(&jobs[0].value.problems)[0].0, 3);
        assert_eq!(
            messages(&jobs[1].value.problems),
            [(
                4,
                14,
                "invalid type: floating point `1.5`, expected an integer"
            )]
        );
    }

    #[test]
    fn one_bad_argv_item_leaves_command_unset_and_names_the_item() {
        let file = shape("jobs:\n  - command: [/bin/echo, [nested], ~]\n");
        let job = &file.jobs.expect("jobs").value[0].value;
        assert!(job.command.is_none());
        assert_eq!(
            messages(&job.problems),
            [
                (2, 26, "invalid type: sequence, expected a string"),
                (2, 36, "invalid type: null, expected a string"),
            ]
        );
    }

    #[test]
    fn a_shift_moves_known_positions_and_the_lines_messages_quote() {
        let shift = Shift {
            lines: 6,
            columns: 4,
        };
        let at = |line, column| Position { line, column };
        assert_eq!(shift.apply(at(1, 1)), at(7, 5));
        assert_eq!(shift.apply(at(0, 0)), at(0, 0));
        assert_eq!(Shift::NONE.apply(at(3, 2)), at(3, 2));
        assert_eq!(shift.apply(at(usize::MAX, 1)).line, usize::MAX);

        let source = "jobs:\n  - name: a\n    name: b\n";
        let file = RawFile::from_node(node::parse(source).expect("valid YAML"), source, shift);
        let job = &file.jobs.expect("jobs").value[0].value;
        assert_eq!(
            messages(&job.problems),
            [(
                3,
                5,
                "duplicate mapping key `name` (first at line 8, column 9)"
            )]
        );
    }

    #[test]
    fn control_characters_in_messages_are_escaped() {
        let file = shape("jobs:\n  - retries: \"x\\u001b[31m\"\n");
        let job = &file.jobs.expect("jobs").value[0].value;
        assert!(
            job.problems[0].message.contains("x\\u{1b}[31m"),
            "{:?}",
            job.problems
        );
    }
}
