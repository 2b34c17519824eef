//! Checks every value of a [`RawFile`] and builds the [`Job`]s, collecting all problems.
//!
//! The shape problems `raw` found are reported here too, each in its job. While the file has any, missing
//! required fields (`jobs:`, a job's `name`, `schedule`, `command`/`shell`) are not reported: an unknown
//! or mistyped key is most often the missing one, misspelled or misshapen, and saying both is noise. Every
//! other check still runs on every value that is there.
//!
//! One cause gives one problem, at the place that sets the value: a `terminationGrace` or a
//! `rerunInterrupted` in `defaults:` that does not fit is reported there once, not again in every job that
//! inherits it, and a value that is wrong where it is written is not reported a second time as a default.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use chrono_tz::Tz;

use super::raw::{job_label, At, Position, Problem, RawEnv, RawFile, RawInt, RawJob, Shift};
use super::{
    escape_controls, parse_duration, parse_duration_or_zero, ConcurrencyPolicy, Diagnostic,
    Diagnostics, Job, JobSet, KubernetesJob, LoadOptions, Program, Warning,
    DEFAULT_FAILED_JOBS_HISTORY_LIMIT, DEFAULT_RETRY_BACKOFF,
    DEFAULT_SUCCESSFUL_JOBS_HISTORY_LIMIT, DEFAULT_TERMINATION_GRACE, JITTER_LOOKAHEAD_SLOTS,
    MAX_ARGUMENT_LEN, MAX_NAME_LEN, MAX_RETRIES, MAX_RETRY_BACKOFF, MIN_JITTER, MIN_TIMEOUT,
    RESERVED_ENV_PREFIX,
};
use crate::schedule::{self, Schedule};

/// How many job names a problem about several jobs lists before it says how many more there are.
const NAMES_LISTED: usize = 3;

/// Validates `raw` (from `origin`) into a [`JobSet`], or returns every problem found. What only the
/// machine can check (each `workingDir`) goes to `facts`.
///
/// `raw` keeps the positions of the text it was parsed from; `shift` places them in `origin`.
pub(super) fn validate(
    raw: RawFile,
    origin: &str,
    shift: Shift,
    opts: &LoadOptions,
    facts: &mut MachineFacts,
) -> Result<JobSet, Diagnostics> {
    let mut report = Report {
        origin,
        shift,
        problems: Vec::new(),
        report_missing: raw.is_well_shaped(),
        working_dirs: Vec::new(),
    };
    for problem in raw.problems {
        report.add(problem.at, None, problem.message);
    }
    let defaults_at = raw.defaults.as_ref().map(|defaults| defaults.at);
    let defaults = match raw.defaults {
        Some(defaults) => check_defaults(defaults, &mut report, opts),
        None => Settings::default(),
    };
    let mut jobs = Vec::new();
    let mut schedules = schedule::Parser::new();
    let mut gaps = Gaps::new(Utc::now());
    // The jobs that use a default that does not fit: one problem for all of them, below.
    let mut inheriting = Inheriting::default();
    match raw.jobs {
        None => report.missing(
            Position::START,
            "missing `jobs:` (write `jobs: []` for a replica with nothing to do)",
        ),
        Some(raw_jobs) => {
            let mut names = HashMap::new();
            for (index, mut raw_job) in raw_jobs.value.into_iter().enumerate() {
                let problems = std::mem::take(&mut raw_job.value.problems);
                let mut scope = Scope::for_job(&mut report, index, &raw_job.value, problems);
                let checked = check_job(
                    raw_job,
                    &defaults,
                    &mut names,
                    (&mut schedules, &mut gaps),
                    &mut scope,
                    &mut inheriting,
                    opts,
                );
                if let Some(job) = checked {
                    jobs.push(Arc::new(job));
                }
            }
        }
    }
    inheriting.report(&mut report, &defaults, defaults_at, opts);
    if report.problems.is_empty() {
        facts.working_dirs.append(&mut report.working_dirs);
        return Ok(JobSet { jobs });
    }
    // Checks run field by field, not in file order; report top to bottom like a compiler.
    report
        .problems
        .sort_by_key(|problem| (problem.line, problem.column));
    Err(Diagnostics(report.problems))
}

/// What a valid file names that only the machine it runs on can check.
#[derive(Debug, Default)]
pub(super) struct MachineFacts {
    /// Every `workingDir`, where it is written.
    working_dirs: Vec<WorkingDir>,
}

/// A `workingDir`, where it is written.
#[derive(Debug)]
struct WorkingDir {
    /// The diagnostic to give if the directory is not usable here, without its message.
    place: Diagnostic,
    /// `defaults: ` or nothing.
    prefix: &'static str,
    dir: PathBuf,
}

impl MachineFacts {
    /// Checks each fact on this machine: a warning for every `workingDir` that is not a directory here.
    pub(super) fn check(self) -> Vec<Warning> {
        let mut seen: HashMap<PathBuf, Option<String>> = HashMap::new();
        let mut warnings = Vec::new();
        for use_ in self.working_dirs {
            let problem = seen
                .entry(use_.dir.clone())
                .or_insert_with(|| working_dir_problem(&use_.dir))
                .clone();
            if let Some(problem) = problem {
                let mut diagnostic = use_.place;
                diagnostic.message = format!("{}{problem}", use_.prefix);
                warnings.push(Warning(diagnostic));
            }
        }
        warnings
    }
}

/// Why `dir` cannot be a job's working directory on this machine, if it cannot.
fn working_dir_problem(dir: &Path) -> Option<String> {
    let shown = escape_controls(&dir.display().to_string());
    let later =
        "runs on this machine would fail to start (the directory is checked again at each run)";
    match std::fs::metadata(dir) {
        Ok(meta) if meta.is_dir() => None,
        Ok(_) => Some(format!(
            "workingDir {shown} is not a directory here: {later}"
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Some(format!("workingDir {shown} does not exist here: {later}"))
        }
        Err(e) => Some(format!("workingDir {shown} cannot be checked here: {e}")),
    }
}

/// The problems found so far in one file.
struct Report<'a> {
    origin: &'a str,
    /// From positions in the parsed text to positions in `origin`.
    shift: Shift,
    problems: Vec<Diagnostic>,
    /// False while the file has shape problems (see the module docs).
    report_missing: bool,
    /// Every `workingDir` written, for [`MachineFacts`].
    working_dirs: Vec<WorkingDir>,
}

impl Report<'_> {
    /// A required top-level field is absent.
    fn missing(&mut self, at: Position, message: &str) {
        if self.report_missing {
            self.add(at, None, message.to_string());
        }
    }

    fn add(&mut self, at: Position, job: Option<&str>, message: String) {
        let diagnostic = self.diagnostic(at, job, message);
        self.problems.push(diagnostic);
    }

    fn diagnostic(&self, at: Position, job: Option<&str>, message: String) -> Diagnostic {
        let at = self.shift.apply(at);
        Diagnostic {
            origin: self.origin.to_string(),
            line: at.line,
            column: at.column,
            job: job.map(str::to_string),
            // Messages quote values (a duration, a schedule and croner's reason); escaping here covers
            // every check.
            message: escape_controls(&message),
        }
    }
}

/// Where problems are being reported: one job, or the `defaults:` block.
struct Scope<'r, 'a> {
    report: &'r mut Report<'a>,
    job: Option<String>,
    prefix: &'static str,
}

impl<'r, 'a> Scope<'r, 'a> {
    /// A job is named by its `name:` as written, or `jobs[INDEX]` without one; its shape `problems`
    /// are reported right away.
    fn for_job(
        report: &'r mut Report<'a>,
        index: usize,
        raw: &RawJob,
        problems: Vec<Problem>,
    ) -> Self {
        let name = raw.name.as_ref().map(|name| name.value.as_str());
        let scope = Scope {
            report,
            job: Some(job_label(name, index)),
            prefix: "",
        };
        scope.with_problems(problems)
    }

    fn with_problems(mut self, problems: Vec<Problem>) -> Self {
        for problem in problems {
            self.error(problem.at, problem.message);
        }
        self
    }

    fn error(&mut self, at: Position, message: impl Into<String>) {
        let message = format!("{}{}", self.prefix, message.into());
        self.report.add(at, self.job.as_deref(), message);
    }

    /// A required field is absent (reported only if the file is well shaped).
    fn missing(&mut self, at: Position, message: &str) {
        if self.report.report_missing {
            self.error(at, message);
        }
    }

    /// Notes a `workingDir` written at `at`, for the machine's check.
    fn working_dir(&mut self, at: Position, dir: &Path) {
        let place = self
            .report
            .diagnostic(at, self.job.as_deref(), String::new());
        self.report.working_dirs.push(WorkingDir {
            place,
            prefix: self.prefix,
            dir: dir.to_path_buf(),
        });
    }
}

/// The job fields `defaults:` may also set, parsed; `None` where unset or invalid.
#[derive(Debug, Default, Clone)]
struct Settings {
    zone: Option<Tz>,
    env: Option<BTreeMap<String, String>>,
    working_dir: Option<PathBuf>,
    timeout: Option<Duration>,
    termination_grace: Option<Duration>,
    concurrency_policy: Option<ConcurrencyPolicy>,
    starting_deadline: Option<Duration>,
    retries: Option<u32>,
    retry_backoff: Option<Duration>,
    suspend: Option<bool>,
    rerun_interrupted: Option<bool>,
    jitter: Option<Duration>,
    /// Where the fields whose problems span fields are written (set even when the value is invalid,
    /// which is then reported where it is and nowhere else).
    written: Written,
}

/// Where some fields are written.
#[derive(Debug, Default, Clone, Copy)]
struct Written {
    termination_grace: Option<Position>,
    starting_deadline: Option<Position>,
    rerun_interrupted: Option<Position>,
    jitter: Option<Position>,
}

/// The jobs that take a value from a default that does not fit, for one problem about them all.
#[derive(Debug, Default)]
struct Inheriting {
    /// The jobs without a `terminationGrace` anywhere, when the built-in one is more than the timings
    /// allow: their labels and positions.
    builtin_grace: Vec<(String, Position)>,
    /// The jobs with `rerunInterrupted: true` from `defaults:` and no `startingDeadline` anywhere.
    rerun_without_deadline: Vec<String>,
    /// The jobs whose schedule has slots closer together than the `jitter` of `defaults:`: their labels
    /// and their schedules' shortest intervals.
    jitter_too_long: Vec<(String, Gap)>,
}

impl Inheriting {
    /// One problem per default that does not fit, naming the jobs that use it.
    fn report(
        self,
        report: &mut Report<'_>,
        defaults: &Settings,
        defaults_at: Option<Position>,
        opts: &LoadOptions,
    ) {
        if let Some((label, at)) = self.builtin_grace.first() {
            let bound = fmt_duration(opts.max_termination_grace);
            let default = fmt_duration(DEFAULT_TERMINATION_GRACE);
            if self.builtin_grace.len() == 1 {
                let message = format!(
                    "terminationGrace is not set, and its default of {default} is more than the \
                     {bound} the lease timings allow: set `terminationGrace: {bound}` (or less) in the \
                     job or in `defaults:`"
                );
                report.add(*at, Some(label), message);
            } else {
                let names: Vec<&str> = self
                    .builtin_grace
                    .iter()
                    .map(|(label, _)| label.as_str())
                    .collect();
                let message = format!(
                    "{} set no terminationGrace, and its default of {default} is more than the {bound} \
                     the lease timings allow: set `terminationGrace: {bound}` (or less) in `defaults:`",
                    list_jobs(&names)
                );
                report.add(defaults_at.unwrap_or(*at), None, message);
            }
        }
        if let (Some(at), false) = (
            defaults.written.rerun_interrupted,
            self.rerun_without_deadline.is_empty(),
        ) {
            let names: Vec<&str> = self
                .rerun_without_deadline
                .iter()
                .map(String::as_str)
                .collect();
            let message = format!(
                "defaults: rerunInterrupted needs startingDeadline (how late the rerun of an interrupted \
                 run may still start), which {} set: set `startingDeadline` in `defaults:` or in \
                 those jobs",
                match names.len() {
                    1 => format!("job {} does not", names[0]),
                    _ => format!("{} do not", list_jobs(&names)),
                }
            );
            report.add(at, None, message);
        }
        if let (Some(at), Some(jitter), Some((_, shortest))) = (
            defaults.written.jitter,
            defaults.jitter,
            self.jitter_too_long
                .iter()
                .min_by_key(|(_, gap)| gap.interval),
        ) {
            let message = match &self.jitter_too_long[..] {
                [(label, gap)] => format!(
                    "defaults: jitter {} is not less than {}, the shortest interval between consecutive \
                     slots of job {label} ({}): set a shorter `jitter` in `defaults:`, or one of its own \
                     in the job",
                    fmt_duration(jitter),
                    fmt_duration(gap.interval),
                    gap.between()
                ),
                all => {
                    let names: Vec<&str> = all.iter().map(|(label, _)| label.as_str()).collect();
                    format!(
                        "defaults: jitter {} is not less than the shortest interval between consecutive \
                         slots of {} (as short as {}: {}): set a shorter `jitter` in `defaults:`, or one \
                         of their own in those jobs",
                        fmt_duration(jitter),
                        list_jobs(&names),
                        fmt_duration(shortest.interval),
                        shortest.between()
                    )
                }
            };
            report.add(at, None, message);
        }
    }
}

/// The shortest interval between consecutive slots of a schedule, among its next
/// [`JITTER_LOOKAHEAD_SLOTS`], and the two slots that are that close.
#[derive(Debug, Clone, Copy)]
struct Gap {
    interval: Duration,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
}

impl Gap {
    /// `from 2026-03-29T01:00:00Z to 2026-03-29T01:30:00Z`, for messages.
    fn between(&self) -> String {
        let at = |t: &DateTime<Utc>| t.to_rfc3339_opts(SecondsFormat::Secs, true);
        format!("from {} to {}", at(&self.from), at(&self.to))
    }
}

/// The shortest intervals of the schedules that jobs with a `jitter` use, each (expression, zone) worked
/// out once from the same instant.
#[derive(Debug)]
struct Gaps {
    now: DateTime<Utc>,
    seen: HashMap<(String, Tz), Option<Gap>>,
}

impl Gaps {
    fn new(now: DateTime<Utc>) -> Gaps {
        Gaps {
            now,
            seen: HashMap::new(),
        }
    }

    /// The shortest interval of `schedule` from now; `None` if it has fewer than two more slots.
    fn of(&mut self, schedule: &Schedule) -> Option<Gap> {
        let key = (schedule.expression().to_owned(), schedule.zone());
        let now = self.now;
        *self.seen.entry(key).or_insert_with(|| {
            schedule
                .shortest_gap(now, JITTER_LOOKAHEAD_SLOTS)
                .map(|(interval, from, to)| Gap { interval, from, to })
        })
    }
}

/// `jobs a, b and c`, or `jobs a, b, c and 7 more`.
fn list_jobs(names: &[&str]) -> String {
    match names {
        [one] => format!("job {one}"),
        _ if names.len() <= NAMES_LISTED => {
            let (last, rest) = names.split_last().unwrap_or((&"", &[]));
            format!("jobs {} and {last}", rest.join(", "))
        }
        _ => format!(
            "jobs {} and {} more",
            names[..NAMES_LISTED].join(", "),
            names.len() - NAMES_LISTED
        ),
    }
}

// === defaults ===

fn check_defaults(defaults: At<RawJob>, report: &mut Report<'_>, opts: &LoadOptions) -> Settings {
    let mut raw = defaults.value;
    let problems = std::mem::take(&mut raw.problems);
    let mut scope = Scope {
        report,
        job: None,
        prefix: "defaults: ",
    }
    .with_problems(problems);
    let per_job = [
        ("name", raw.name.as_ref().map(|value| value.at)),
        ("schedule", raw.schedule.as_ref().map(|value| value.at)),
        ("command", raw.command.as_ref().map(|value| value.at)),
        ("shell", raw.shell.as_ref().map(|value| value.at)),
        ("executor", raw.executor.as_ref().map(|value| value.at)),
        (
            "jobTemplate",
            raw.job_template.as_ref().map(|value| value.at),
        ),
        (
            "cancelOnLeadershipLoss",
            raw.cancel_on_leadership_loss.as_ref().map(|value| value.at),
        ),
        (
            "successfulJobsHistoryLimit",
            raw.successful_jobs_history_limit
                .as_ref()
                .map(|value| value.at),
        ),
        (
            "failedJobsHistoryLimit",
            raw.failed_jobs_history_limit.as_ref().map(|value| value.at),
        ),
    ];
    for (field, at) in per_job {
        if let Some(at) = at {
            scope.error(
                at,
                format!("`{field}` cannot be set in defaults, only per job"),
            );
        }
    }
    check_settings(raw, &mut scope, opts)
}

// === jobs ===

fn check_job(
    raw: At<RawJob>,
    defaults: &Settings,
    names: &mut HashMap<String, Position>,
    (schedules, gaps): (&mut schedule::Parser, &mut Gaps),
    scope: &mut Scope<'_, '_>,
    inheriting: &mut Inheriting,
    opts: &LoadOptions,
) -> Option<Job> {
    let job_at = raw.at;
    let mut raw = raw.value;
    let name = check_name(raw.name.take(), job_at, names, scope);
    let kubernetes = take_kubernetes(&mut raw, scope);
    let program = match &kubernetes {
        Executing::Process => check_program(raw.command.take(), raw.shell.take(), job_at, scope),
        Executing::Kubernetes(_) => Some(Program::Command(Vec::new())),
    };
    let schedule_source = raw.schedule.take();
    let own = check_settings(raw, scope, opts);
    let zone = own.zone.or(defaults.zone).unwrap_or(Tz::UTC);
    let schedule = check_schedule(schedule_source, zone, job_at, schedules, scope);
    let label = || scope.job.clone().unwrap_or_default();
    let termination_grace = own
        .termination_grace
        .or(defaults.termination_grace)
        .unwrap_or(DEFAULT_TERMINATION_GRACE);
    let grace_written =
        own.written.termination_grace.is_some() || defaults.written.termination_grace.is_some();
    // A kubernetes job has no grace of leasecron's (its pods have theirs): the bound does not apply.
    let process = matches!(kubernetes, Executing::Process);
    if process && !grace_written && DEFAULT_TERMINATION_GRACE > opts.max_termination_grace {
        inheriting.builtin_grace.push((label(), job_at));
    }
    let deadline_written =
        own.written.starting_deadline.is_some() || defaults.written.starting_deadline.is_some();
    let rerun_interrupted = own
        .rerun_interrupted
        .or(defaults.rerun_interrupted)
        .unwrap_or(false);
    if rerun_interrupted && !deadline_written {
        match own.written.rerun_interrupted {
            Some(at) => scope.error(
                at,
                "rerunInterrupted needs startingDeadline: how late the rerun of an interrupted run may \
                 still start (set `startingDeadline` in the job or in `defaults:`)",
            ),
            None => inheriting.rerun_without_deadline.push(label()),
        }
    }
    // A jitter written in the job is the job's, even if it is invalid (reported where it is written).
    let jitter = match own.written.jitter {
        Some(_) => own.jitter,
        None => defaults.jitter,
    };
    let gap = jitter
        .zip(schedule.as_ref())
        .and_then(|(jitter, schedule)| gaps.of(schedule).filter(|gap| jitter >= gap.interval));
    if let (Some(jitter), Some(gap)) = (jitter, gap) {
        match own.written.jitter {
            Some(at) => scope.error(
                at,
                format!(
                    "jitter {} is not less than {}, the shortest interval between consecutive slots of \
                     its schedule ({}, among the next {JITTER_LOOKAHEAD_SLOTS} slots): lower it below {1}",
                    fmt_duration(jitter),
                    fmt_duration(gap.interval),
                    gap.between()
                ),
            ),
            None => inheriting
                .jitter_too_long
                .push((scope.job.clone().unwrap_or_default(), gap)),
        }
    }
    let mut env = defaults.env.clone().unwrap_or_default();
    env.extend(own.env.unwrap_or_default());
    let kubernetes = match kubernetes {
        Executing::Process => None,
        Executing::Kubernetes(kubernetes) => {
            // The process settings of `defaults:` do not apply to a kubernetes job (see
            // `take_kubernetes`); a job's own are refused there.
            env.clear();
            Some(kubernetes?)
        }
    };
    let working_dir = match kubernetes {
        Some(_) => None,
        None => own.working_dir.or_else(|| defaults.working_dir.clone()),
    };
    Some(Job {
        name: name?,
        schedule: schedule?,
        program: program?,
        kubernetes,
        env: env.into(),
        working_dir,
        timeout: own.timeout.or(defaults.timeout),
        termination_grace,
        concurrency_policy: own
            .concurrency_policy
            .or(defaults.concurrency_policy)
            .unwrap_or_default(),
        starting_deadline: own.starting_deadline.or(defaults.starting_deadline),
        retries: own.retries.or(defaults.retries).unwrap_or(0),
        retry_backoff: own
            .retry_backoff
            .or(defaults.retry_backoff)
            .unwrap_or(DEFAULT_RETRY_BACKOFF),
        suspend: own.suspend.or(defaults.suspend).unwrap_or(false),
        rerun_interrupted,
        jitter: jitter.filter(|_| gap.is_none()),
    })
}

/// The executor of one job, as checked.
enum Executing {
    Process,
    /// `None` if something about it is invalid (reported).
    Kubernetes(Option<Box<KubernetesJob>>),
}

/// Checks `executor:` and the fields that depend on it, taking them (and the process-only fields of a
/// kubernetes job) out of `raw`.
///
/// With `executor: kubernetes`, per field:
/// - `command`, `shell`, `env`, `workingDir`: refused; they belong to the containers of `jobTemplate`.
/// - `terminationGrace`: refused; leasecron does not signal pods (the pod's grace is
///   `terminationGracePeriodSeconds` in the template, and Replace deletes the Job).
/// - `retryBackoff`: refused; the Job controller's own backoff (10 s, doubling, capped at 6 min) applies.
/// - `timeout` → `activeDeadlineSeconds` and `retries` → `backoffLimit`: they apply, so the template may not
///   set those too.
/// - `rerunInterrupted`: applies only with `cancelOnLeadershipLoss: true` (else a Job outlives the term
///   and is adopted, never interrupted).
/// - everything else (schedule, zone, policies, deadline, suspend, jitter) applies as to a process.
///
/// The process-only values of `defaults:` are left out of a kubernetes job, not refused: they are there
/// for the process jobs of the file.
///
/// With the process executor, `jobTemplate`, `cancelOnLeadershipLoss` and the history limits are refused.
fn take_kubernetes(raw: &mut RawJob, scope: &mut Scope<'_, '_>) -> Executing {
    let executor = raw.executor.take();
    let template = raw.job_template.take();
    let cancel = raw.cancel_on_leadership_loss.take();
    let successful = raw.successful_jobs_history_limit.take();
    let failed = raw.failed_jobs_history_limit.take();
    let kubernetes = match executor.as_ref().map(|e| e.value.trim()) {
        None | Some("process") => false,
        Some("kubernetes") => true,
        Some(other) => {
            let at = executor.as_ref().map_or(Position::START, |e| e.at);
            scope.error(
                at,
                format!(
                    "unknown executor `{}` (expected process or kubernetes)",
                    escape_controls(other)
                ),
            );
            // Whatever it was meant to be, the other fields are not checked against it.
            return Executing::Kubernetes(None);
        }
    };
    if !kubernetes {
        let only = "only applies to `executor: kubernetes`";
        if let Some(template) = &template {
            scope.error(
                template.at,
                format!(
                    "`jobTemplate` {only}: set `executor: kubernetes` to run the job as a Kubernetes \
                     Job, or remove it"
                ),
            );
        }
        let others = [
            ("cancelOnLeadershipLoss", cancel.as_ref().map(|v| v.at)),
            (
                "successfulJobsHistoryLimit",
                successful.as_ref().map(|v| v.at),
            ),
            ("failedJobsHistoryLimit", failed.as_ref().map(|v| v.at)),
        ];
        for (field, at) in others {
            if let Some(at) = at {
                scope.error(at, format!("`{field}` {only}"));
            }
        }
        return Executing::Process;
    }
    let executor_at = executor.as_ref().map_or(Position::START, |e| e.at);
    let mut valid = true;
    let process_only: [(&str, Option<Position>, &str); 6] = [
        (
            "command",
            raw.command.take().map(|v| v.at),
            "set the container's `command` in jobTemplate.template.spec.containers",
        ),
        (
            "shell",
            raw.shell.take().map(|v| v.at),
            "set the container's `command` (e.g. [/bin/sh, -c, ...]) in jobTemplate",
        ),
        (
            "env",
            raw.env.take().map(|v| v.at),
            "set `env` on the containers of jobTemplate",
        ),
        (
            "workingDir",
            raw.working_dir.take().map(|v| v.at),
            "set `workingDir` on the containers of jobTemplate",
        ),
        (
            "terminationGrace",
            raw.termination_grace.take().map(|v| v.at),
            "leasecron does not signal pods: set `terminationGracePeriodSeconds` in \
             jobTemplate.template.spec",
        ),
        (
            "retryBackoff",
            raw.retry_backoff.take().map(|v| v.at),
            "the Job controller retries with its own backoff (10s, doubling, at most 6m); \
             `retries` sets backoffLimit",
        ),
    ];
    for (field, at, instead) in process_only {
        if let Some(at) = at {
            scope.error(
                at,
                format!("`{field}` does not apply to `executor: kubernetes`: {instead}"),
            );
            valid = false;
        }
    }
    let spec = match template {
        None => {
            scope.error(
                executor_at,
                "`executor: kubernetes` needs `jobTemplate` (a batch/v1 JobSpec)",
            );
            None
        }
        Some(template) => {
            let checked = template.value;
            for problem in checked.problems {
                scope.error(problem.at, problem.message);
            }
            if let Some(spec) = &checked.spec {
                let both = [
                    (
                        "timeout",
                        "activeDeadlineSeconds",
                        raw.timeout.as_ref().map(|v| v.at),
                        spec.active_deadline_seconds.is_some(),
                    ),
                    (
                        "retries",
                        "backoffLimit",
                        raw.retries.as_ref().map(|v| v.at),
                        spec.backoff_limit.is_some(),
                    ),
                ];
                for (field, spec_field, at, in_spec) in both {
                    if let (Some(at), true) = (at, in_spec) {
                        scope.error(
                            at,
                            format!(
                                "`{field}` becomes the Job's `{spec_field}`, which jobTemplate sets too: \
                                 set one of them"
                            ),
                        );
                        valid = false;
                    }
                }
            }
            checked.spec
        }
    };
    if let (Some(rerun), false) = (
        raw.rerun_interrupted.as_ref(),
        cancel.as_ref().is_some_and(|c| c.value),
    ) {
        if rerun.value {
            scope.error(
                rerun.at,
                "rerunInterrupted applies to a kubernetes job only with `cancelOnLeadershipLoss: true`: \
                 otherwise its Jobs outlive the term and are adopted by the next leader, never interrupted",
            );
            valid = false;
        }
    }
    let successful = check_history_limit(
        "successfulJobsHistoryLimit",
        successful,
        DEFAULT_SUCCESSFUL_JOBS_HISTORY_LIMIT,
        scope,
    );
    let failed = check_history_limit(
        "failedJobsHistoryLimit",
        failed,
        DEFAULT_FAILED_JOBS_HISTORY_LIMIT,
        scope,
    );
    let kubernetes = match (spec, successful, failed, valid) {
        (Some(spec), Some(successful), Some(failed), true) => Some(Box::new(KubernetesJob {
            spec,
            cancel_on_leadership_loss: cancel.is_some_and(|c| c.value),
            successful_jobs_history_limit: successful,
            failed_jobs_history_limit: failed,
        })),
        _ => None,
    };
    Executing::Kubernetes(kubernetes)
}

/// A history limit: a non-negative int32, as CronJob's.
fn check_history_limit(
    field: &str,
    value: Option<At<RawInt>>,
    default: u32,
    scope: &mut Scope<'_, '_>,
) -> Option<u32> {
    let Some(value) = value else {
        return Some(default);
    };
    match value
        .value
        .value
        .and_then(|n| u32::try_from(n).ok())
        .filter(|n| i32::try_from(*n).is_ok())
    {
        Some(limit) => Some(limit),
        None => {
            scope.error(
                value.at,
                format!(
                    "{field} must be between 0 and {}, not {}",
                    i32::MAX,
                    value.value.written
                ),
            );
            None
        }
    }
}

fn check_name(
    name: Option<At<String>>,
    job_at: Position,
    names: &mut HashMap<String, Position>,
    scope: &mut Scope<'_, '_>,
) -> Option<String> {
    let Some(name) = name else {
        scope.missing(job_at, "missing `name`");
        return None;
    };
    let at = name.at;
    if let Err(why) = check_dns_label(&name.value) {
        scope.error(
            at,
            format!("invalid name `{}`: {why}", escape_controls(&name.value)),
        );
        return None;
    }
    if let Some(&first) = names.get(&name.value) {
        let first = scope.report.shift.apply(first);
        scope.error(
            at,
            format!(
                "duplicate name `{}` (first used at line {}, column {})",
                name.value, first.line, first.column
            ),
        );
        return None;
    }
    names.insert(name.value.clone(), at);
    Some(name.value)
}

/// A DNS-1123 label: 1–63 of `a-z`, `0-9`, `-`, starting and ending with a letter or digit.
pub(crate) fn check_dns_label(name: &str) -> Result<(), String> {
    let alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    if name.is_empty() {
        return Err("it is empty".to_string());
    }
    if name.len() > MAX_NAME_LEN {
        return Err(format!("it is longer than {MAX_NAME_LEN} characters"));
    }
    if !name.chars().all(|c| alnum(c) || c == '-') {
        return Err("use only lowercase letters, digits and `-` (a DNS-1123 label)".to_string());
    }
    if !name.starts_with(alnum) || !name.ends_with(alnum) {
        return Err("it must start and end with a lowercase letter or digit".to_string());
    }
    Ok(())
}

fn check_program(
    command: Option<At<Vec<At<String>>>>,
    shell: Option<At<String>>,
    job_at: Position,
    scope: &mut Scope<'_, '_>,
) -> Option<Program> {
    match (command, shell) {
        (Some(_), Some(shell)) => {
            scope.error(
                shell.at,
                "set exactly one of `command` and `shell`, not both",
            );
            None
        }
        (None, None) => {
            scope.missing(
                job_at,
                "set `command` (an argv list) or `shell` (a /bin/sh -c script)",
            );
            None
        }
        (Some(command), None) => check_command(command, scope),
        (None, Some(shell)) => check_shell(shell, scope),
    }
}

fn check_command(command: At<Vec<At<String>>>, scope: &mut Scope<'_, '_>) -> Option<Program> {
    let Some(program) = command.value.first() else {
        scope.error(command.at, "`command` is empty: give at least the program");
        return None;
    };
    let mut valid = true;
    if program.value.is_empty() {
        scope.error(program.at, "`command[0]` (the program) is empty");
        valid = false;
    }
    for (i, arg) in command.value.iter().enumerate() {
        if arg.value.contains('\0') {
            scope.error(arg.at, format!("`command[{i}]` contains a NUL byte"));
            valid = false;
        } else if let Some(why) = too_long_for_exec(arg.value.len()) {
            scope.error(
                arg.at,
                format!("`command[{i}]` {why}: pass the data in a file instead"),
            );
            valid = false;
        }
    }
    valid.then(|| Program::Command(command.value.into_iter().map(|a| a.value).collect()))
}

fn check_shell(shell: At<String>, scope: &mut Scope<'_, '_>) -> Option<Program> {
    if shell.value.trim().is_empty() {
        scope.error(shell.at, "`shell` is empty");
        return None;
    }
    if shell.value.contains('\0') {
        scope.error(shell.at, "`shell` contains a NUL byte");
        return None;
    }
    if let Some(why) = too_long_for_exec(shell.value.len()) {
        scope.error(
            shell.at,
            format!(
                "the `shell` script {why}: put it in a file and run that \
                 (`command: [/bin/sh, /path/to/script.sh]`)"
            ),
        );
        return None;
    }
    Some(Program::Shell(shell.value))
}

/// Why an argument or environment entry of `len` bytes cannot be passed to a program, if it cannot.
fn too_long_for_exec(len: usize) -> Option<String> {
    (len > MAX_ARGUMENT_LEN).then(|| {
        format!(
            "is {len} bytes, more than the {MAX_ARGUMENT_LEN} Linux passes to a program in one \
             argument (MAX_ARG_STRLEN): every run would fail to start"
        )
    })
}

fn check_schedule(
    source: Option<At<String>>,
    zone: Tz,
    job_at: Position,
    schedules: &mut schedule::Parser,
    scope: &mut Scope<'_, '_>,
) -> Option<Schedule> {
    let Some(source) = source else {
        scope.missing(job_at, "missing `schedule`");
        return None;
    };
    if let Some(message) = zone_prefix(&source.value) {
        scope.error(source.at, message);
        return None;
    }
    schedules
        .parse(&source.value, zone)
        .map_err(|err| {
            let expr = escape_controls(source.value.trim());
            scope.error(source.at, format!("invalid schedule `{expr}`: {err}"));
        })
        .ok()
}

/// The problem with a schedule that starts with a `CRON_TZ=` or `TZ=` prefix, if it does.
fn zone_prefix(expression: &str) -> Option<String> {
    let expression = expression.trim();
    let (variable, rest) = ["CRON_TZ=", "TZ="]
        .into_iter()
        .find_map(|prefix| Some((prefix, expression.strip_prefix(prefix)?)))?;
    let (zone, schedule) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
    Some(escape_controls(&format!(
        "a time zone cannot be set in `schedule` (`{variable}{zone}`): put the zone in `timeZone: {zone}` \
         and write `schedule: \"{}\"`",
        schedule.trim()
    )))
}

// === settings shared with defaults ===

fn check_settings(raw: RawJob, scope: &mut Scope<'_, '_>, opts: &LoadOptions) -> Settings {
    let written = Written {
        termination_grace: raw.termination_grace.as_ref().map(|value| value.at),
        starting_deadline: raw.starting_deadline.as_ref().map(|value| value.at),
        rerun_interrupted: raw.rerun_interrupted.as_ref().map(|value| value.at),
        jitter: raw.jitter.as_ref().map(|value| value.at),
    };
    Settings {
        written,
        zone: raw.time_zone.and_then(|z| check_zone(z, scope)),
        env: raw.env.map(|env| check_env(env, scope)),
        working_dir: raw
            .working_dir
            .and_then(|dir| check_working_dir(dir, scope)),
        timeout: raw.timeout.and_then(|d| check_timeout(d, scope)),
        termination_grace: raw
            .termination_grace
            .and_then(|d| check_grace(d, scope, opts)),
        concurrency_policy: raw.concurrency_policy.and_then(|p| check_policy(p, scope)),
        starting_deadline: raw
            .starting_deadline
            .and_then(|d| check_duration("startingDeadline", d, scope)),
        retries: raw.retries.and_then(|r| check_retries(r, scope)),
        retry_backoff: raw.retry_backoff.and_then(|d| check_backoff(d, scope)),
        suspend: raw.suspend.map(|s| s.value),
        rerun_interrupted: raw.rerun_interrupted.map(|s| s.value),
        jitter: raw.jitter.and_then(|d| check_jitter(d, scope)),
    }
}

fn check_zone(zone: At<String>, scope: &mut Scope<'_, '_>) -> Option<Tz> {
    let name = zone.value.trim();
    name.parse::<Tz>()
        .map_err(|_| {
            scope.error(
                zone.at,
                format!(
                    "unknown time zone `{}` (use an IANA name such as UTC or Europe/Berlin)",
                    escape_controls(name)
                ),
            );
        })
        .ok()
}

fn check_env(env: At<RawEnv>, scope: &mut Scope<'_, '_>) -> BTreeMap<String, String> {
    let mut checked = BTreeMap::new();
    for (key, value) in env.value.0 {
        if let Err(why) = check_env_name(&key.value) {
            scope.error(key.at, why);
            continue;
        }
        if value.value.contains('\0') {
            scope.error(value.at, format!("env `{}` contains a NUL byte", key.value));
            continue;
        }
        // Passed as one `NAME=value` string.
        if let Some(why) = too_long_for_exec(key.value.len() + 1 + value.value.len()) {
            scope.error(
                value.at,
                format!("env `{}` {why}: pass the data in a file instead", key.value),
            );
            continue;
        }
        checked.insert(key.value, value.value);
    }
    checked
}

fn check_env_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let valid = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid {
        return Err(format!(
            "invalid env name `{}`: use letters, digits and `_`, not starting with a digit",
            escape_controls(name)
        ));
    }
    if name.starts_with(RESERVED_ENV_PREFIX) {
        return Err(format!(
            "env `{name}` is reserved: leasecron sets the {RESERVED_ENV_PREFIX}* variables itself"
        ));
    }
    Ok(())
}

fn check_working_dir(dir: At<String>, scope: &mut Scope<'_, '_>) -> Option<PathBuf> {
    if dir.value.is_empty() {
        scope.error(dir.at, "`workingDir` is empty");
        return None;
    }
    if dir.value.contains('\0') {
        scope.error(dir.at, "`workingDir` contains a NUL byte");
        return None;
    }
    let path = PathBuf::from(dir.value);
    if !path.is_absolute() {
        scope.error(
            dir.at,
            format!(
                "workingDir `{}` is relative: give an absolute path (it would depend on the directory \
                 leasecron was started in)",
                path.display()
            ),
        );
        return None;
    }
    scope.working_dir(dir.at, &path);
    Some(path)
}

fn check_timeout(value: At<String>, scope: &mut Scope<'_, '_>) -> Option<Duration> {
    let at = value.at;
    let timeout = check_duration("timeout", value, scope)?;
    if timeout < MIN_TIMEOUT {
        scope.error(
            at,
            format!(
                "timeout {} is less than the minimum of {}: every attempt would be stopped before its \
                 process has started",
                fmt_duration(timeout),
                fmt_duration(MIN_TIMEOUT)
            ),
        );
        return None;
    }
    Some(timeout)
}

fn check_jitter(value: At<String>, scope: &mut Scope<'_, '_>) -> Option<Duration> {
    let at = value.at;
    let jitter = check_duration("jitter", value, scope)?;
    if jitter < MIN_JITTER {
        scope.error(
            at,
            format!(
                "jitter {} is less than the minimum of {}: the offset is chosen in whole milliseconds",
                fmt_duration(jitter),
                fmt_duration(MIN_JITTER)
            ),
        );
        return None;
    }
    Some(jitter)
}

fn check_duration(field: &str, value: At<String>, scope: &mut Scope<'_, '_>) -> Option<Duration> {
    parse_duration(&value.value)
        .map_err(|why| scope.error(value.at, format!("{field}: {why}")))
        .ok()
}

fn check_grace(
    value: At<String>,
    scope: &mut Scope<'_, '_>,
    opts: &LoadOptions,
) -> Option<Duration> {
    let at = value.at;
    let grace = parse_duration_or_zero(&value.value)
        .map_err(|why| scope.error(at, format!("terminationGrace: {why}")))
        .ok()?;
    if grace > opts.max_termination_grace {
        scope.error(
            at,
            format!(
                "terminationGrace {} is more than the {} the lease timings allow (renew deadline + grace \
                 must stay within the lease duration minus its margin): lower it to at most {1}, or \
                 lengthen --lease-duration",
                fmt_duration(grace),
                fmt_duration(opts.max_termination_grace)
            ),
        );
        return None;
    }
    Some(grace)
}

fn check_backoff(value: At<String>, scope: &mut Scope<'_, '_>) -> Option<Duration> {
    let at = value.at;
    let backoff = check_duration("retryBackoff", value, scope)?;
    if backoff > MAX_RETRY_BACKOFF {
        scope.error(
            at,
            format!(
                "retryBackoff {} is more than its cap of {}",
                fmt_duration(backoff),
                fmt_duration(MAX_RETRY_BACKOFF)
            ),
        );
        return None;
    }
    Some(backoff)
}

fn check_policy(value: At<String>, scope: &mut Scope<'_, '_>) -> Option<ConcurrencyPolicy> {
    match value.value.trim() {
        "Forbid" => Some(ConcurrencyPolicy::Forbid),
        "Allow" => Some(ConcurrencyPolicy::Allow),
        "Replace" => Some(ConcurrencyPolicy::Replace),
        "Queue" => Some(ConcurrencyPolicy::Queue),
        other => {
            scope.error(
                value.at,
                format!(
                    "unknown concurrencyPolicy `{}` (expected Forbid, Allow, Replace or Queue)",
                    escape_controls(other)
                ),
            );
            None
        }
    }
}

fn check_retries(value: At<RawInt>, scope: &mut Scope<'_, '_>) -> Option<u32> {
    match value.value.value.and_then(|n| u32::try_from(n).ok()) {
        Some(retries) if retries <= MAX_RETRIES => Some(retries),
        _ => {
            scope.error(
                value.at,
                format!(
                    "retries must be between 0 and {MAX_RETRIES}, not {}",
                    value.value.written
                ),
            );
            None
        }
    }
}

fn fmt_duration(duration: Duration) -> humantime::FormattedDuration {
    humantime::format_duration(duration)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_labels() {
        for good in ["a", "nightly-report", "x1", &"a".repeat(MAX_NAME_LEN)] {
            assert!(check_dns_label(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "-a",
            "a-",
            "Nightly",
            "a_b",
            "a.b",
            &"a".repeat(MAX_NAME_LEN + 1),
        ] {
            assert!(check_dns_label(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn messages_that_quote_a_value_escape_its_control_characters() {
        let source = concat!(
            "jobs:\n",
            "  - name: a\n",
            "    schedule: \"@\\e[31m\"\n",
            "    shell: x\n",
            "    timeout: \"\\0\"\n",
            "    retryBackoff: \"1\\x07s\"\n",
            "  - name: b\n",
            "    schedule: \"\\e 0 * * *\"\n",
            "    shell: x\n",
        );
        let Err(crate::config::Error::Invalid(found)) =
            crate::config::parse_str(source, "jobs.yaml", &LoadOptions::default())
        else {
            panic!("expected problems");
        };
        assert_eq!(found.len(), 4, "{found}");
        for problem in found.iter() {
            assert!(
                !problem.to_string().chars().any(char::is_control),
                "{problem:?}"
            );
        }
        assert!(found.to_string().contains("`@\\u{1b}[31m`"), "{found}");
    }

    #[test]
    fn env_names() {
        for good in ["A", "_x", "REPORT_BUCKET", "a1", "LEASECRON"] {
            assert!(check_env_name(good).is_ok(), "{good}");
        }
        for bad in ["", "1A", "A-B", "A B", "LEASECRON_JOB"] {
            assert!(check_env_name(bad).is_err(), "{bad}");
        }
    }
}
