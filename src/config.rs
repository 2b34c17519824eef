//! The jobs file: parsing (serde-saphyr, strict) and validation into [`Job`]s.
//!
//! Loading happens in three steps, and every problem is reported at once, ordered by position, each as
//! `FILE:LINE:COL: job NAME: message` (a job without a usable name is called `jobs[INDEX]`):
//!
//! 1. `node` parses the YAML with serde-saphyr into an untyped tree that keeps the line and column of
//!    every value. Only broken YAML fails here (a syntax error, an undefined alias, a budget limit); the
//!    parser cannot recover from it, so that is the one case reported alone, first error only.
//! 2. `raw` imposes the file's shape on the tree: unknown fields (with the expected ones listed),
//!    duplicate keys and values of the wrong type (`retries: many`, `command: "a string"`) are all
//!    recorded, in the job they belong to, and checking goes on.
//! 3. `validate` checks every value and builds the [`Job`]s.
//!
//! `defaults:` may set any job field except `name`, `schedule`, `command` and `shell`. A job's own value
//! wins; `env` is merged key by key (the job's keys win).
//!
//! [`load_source`] also takes Kubernetes manifests: `manifest` finds the jobs file embedded in each
//! ConfigMap (`data.jobs.yaml`) and loads it as above, with the positions of its problems moved into the
//! manifest (a `raw::Shift`) when the text is a block literal.

mod job_template;
mod manifest;
mod node;
mod raw;
mod read;
mod split;
mod syntax;
mod validate;
pub(crate) use validate::check_dns_label;

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::schedule::Schedule;
use raw::Shift;

pub use job_template::parse_quantity;
pub use manifest::{ConfigMapJobs, KubeObject, Source, DEFAULT_CONFIG_MAP_KEY};
pub use read::{format_size, origin_of, parse_size, read_text, STDIN_ORIGIN, STDIN_PATH};

/// Default `terminationGrace`.
pub const DEFAULT_TERMINATION_GRACE: Duration = Duration::from_secs(3);
/// Largest accepted `terminationGrace` under the default lease timings (LD 15 s, RD 10 s): LD − margin − RD
/// = 15 − 1.5 − 10 = 3.5 s, the grace bound of `election::Config`'s defaults (its tests keep them equal).
pub const DEFAULT_MAX_TERMINATION_GRACE: Duration = Duration::from_millis(3500);
/// Cap on the doubling `retryBackoff`.
pub const MAX_RETRY_BACKOFF: Duration = Duration::from_secs(300);
/// Default `retryBackoff`.
pub const DEFAULT_RETRY_BACKOFF: Duration = Duration::from_secs(10);
/// Largest accepted `retries`: more attempts than this is a retry loop, not a cron job.
pub const MAX_RETRIES: u32 = 100;
/// Prefix of the variables leasecron sets for every run; jobs may not set them.
pub const RESERVED_ENV_PREFIX: &str = "LEASECRON_";
/// Longest job name: a DNS-1123 label.
pub const MAX_NAME_LEN: usize = 63;
/// Largest jobs file the commands read unless `--max-file-size` says otherwise: 1 MiB, the most a
/// ConfigMap holds.
pub const DEFAULT_MAX_FILE_SIZE: u64 = 1024 * 1024;
/// Longest `shell:` script, `command:` argument and `env` entry (`NAME=value`), in bytes: Linux refuses to
/// exec a program with a longer one (`MAX_ARG_STRLEN`, 128 KiB with its terminating NUL; `E2BIG`).
pub const MAX_ARGUMENT_LEN: usize = 128 * 1024 - 1;
/// Shortest `timeout`: a shorter one stops every attempt before its process has started.
pub(crate) const MIN_TIMEOUT: Duration = Duration::from_millis(1);
/// Shortest `jitter`: the offset is chosen in whole milliseconds ([`jitter_offset`]).
pub const MIN_JITTER: Duration = Duration::from_millis(1);
/// How many upcoming slots of a schedule validation looks at to find its shortest interval, which a
/// `jitter` must stay under (from the moment the file is validated; each distinct schedule and zone once).
///
/// A cron pattern's shortest interval shows within a few of its slots (two times of a day, the 31st and
/// the 1st, Friday and Monday); what a look-ahead can miss is a gap that only a distant date makes (a DST
/// change merging two fixed times). Such a slot then fires after the next nominal slot: the fires stay in
/// order (every slot of a job is offset by the same amount), only the slot's meaning suffers. The bound
/// keeps the check's cost at 64 fire computations per distinct schedule and zone of a jittered job.
pub const JITTER_LOOKAHEAD_SLOTS: usize = 64;

/// What a job executes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Program {
    /// argv, exec'd directly (`command:`).
    Command(Vec<String>),
    /// A script run by `/bin/sh -c` (`shell:`).
    Shell(String),
}

/// Default `successfulJobsHistoryLimit` (CronJob's).
pub const DEFAULT_SUCCESSFUL_JOBS_HISTORY_LIMIT: u32 = 3;
/// Default `failedJobsHistoryLimit` (CronJob's).
pub const DEFAULT_FAILED_JOBS_HISTORY_LIMIT: u32 = 1;

/// A job with `executor: kubernetes`: each run is a Kubernetes Job created from `jobTemplate`.
///
/// [`crate::runner`] runs them through [`crate::kubernetes::batch`], on the Kubernetes backend only (`run`
/// with a lease file refuses a jobs file that has one).
#[derive(Debug, Clone, PartialEq)]
pub struct KubernetesJob {
    /// `jobTemplate:`, the batch/v1 JobSpec, checked against the API server's schema. `timeout` and
    /// `retries` are not merged in here: they become `activeDeadlineSeconds` and `backoffLimit` when the
    /// Job is created.
    pub spec: k8s_openapi::api::batch::v1::JobSpec,
    /// Delete the job's active Jobs when the term that created them ends.
    pub cancel_on_leadership_loss: bool,
    /// Finished Jobs kept per job after success.
    pub successful_jobs_history_limit: u32,
    /// Finished Jobs kept per job after failure.
    pub failed_jobs_history_limit: u32,
}

// JobSpec is only `PartialEq` because k8s-openapi derives no `Eq`; it holds no floating point value, so
// equality is reflexive.
impl Eq for KubernetesJob {}

/// How a job's runs are executed: a view of [`Job::program`] and [`Job::kubernetes`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Executor<'a> {
    /// `executor: process` (the default): a process in the leader's pod.
    Process(&'a Program),
    /// `executor: kubernetes`: a Kubernetes Job per run.
    Kubernetes(&'a KubernetesJob),
}

/// What to do when a job fires while a run of it is still going.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ConcurrencyPolicy {
    /// Skip the new run (counted as an overlap).
    #[default]
    Forbid,
    /// Start the new run beside the old one.
    Allow,
    /// Stop the running one (TERM, then KILL after the grace), then start.
    Replace,
    /// Start when the running one ends (Temporal's `BufferOne`): at most one fire waits, a later fire
    /// replaces the waiting one (the dropped slot is skipped as `queue_replaced`), and the waiting fire
    /// belongs to the term (if the term ends first, it never starts: skipped as `not_leader`).
    Queue,
}

/// One validated job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    /// Unique DNS-1123 label.
    pub name: String,
    /// When it fires (carries its time zone).
    pub schedule: Schedule,
    /// What it runs, with the process executor. A kubernetes job has none: an empty
    /// `Program::Command`, never run (see [`Job::executor`]).
    pub program: Program,
    /// `executor: kubernetes`: the Job to create per run; `None` with the process executor.
    pub kubernetes: Option<Box<KubernetesJob>>,
    /// Extra environment, on top of the replica's.
    pub env: Env,
    /// Working directory of the process, if set.
    pub working_dir: Option<PathBuf>,
    /// Per-attempt timeout, if set.
    pub timeout: Option<Duration>,
    /// Time between SIGTERM and SIGKILL (may be zero: SIGKILL right after SIGTERM).
    pub termination_grace: Duration,
    /// Overlap policy.
    pub concurrency_policy: ConcurrencyPolicy,
    /// How late a missed fire may still start; `None`: missed fires are skipped.
    pub starting_deadline: Option<Duration>,
    /// Extra attempts after a failed one.
    pub retries: u32,
    /// Delay before the first retry; doubles per attempt, capped at [`MAX_RETRY_BACKOFF`].
    pub retry_backoff: Duration,
    /// A suspended job fires (for metrics) but starts nothing.
    pub suspend: bool,
    /// Run a slot again under a new term if its run was cut off by the end of the previous term (within
    /// `startingDeadline`, with the new fencing token). Default: an interrupted slot is not run again.
    pub rerun_interrupted: bool,
    /// `jitter:`, if set: every fire of the job is delayed by [`Job::jitter_offset`], a fixed offset in
    /// `[0, jitter)` derived from the job's name, so that jobs on one schedule do not all start at once.
    /// The run's slot (`LEASECRON_SCHEDULED_TIME`, the run state, metrics) stays the nominal one.
    pub jitter: Option<Duration>,
}

/// A job's extra environment: names and values, sorted by name, each name once.
///
/// A boxed slice rather than a `BTreeMap`: a map's first entry allocates a whole node of eleven, about
/// 540 bytes, and most jobs set a variable or two (with 10 000 jobs of one variable, 5 MiB of a replica's
/// RSS; docs/benchmarks.md, the heap section). Looked up by binary search, built once per load.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Env(Box<[(String, String)]>);

impl Env {
    /// The variables in name order, as a map iterates.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &String)> + '_ {
        self.0.iter().map(|(name, value)| (name, value))
    }

    /// The value of `name`, if set.
    pub fn get(&self, name: &str) -> Option<&String> {
        self.0
            .binary_search_by(|(n, _)| n.as_str().cmp(name))
            .ok()
            .map(|at| &self.0[at].1)
    }

    /// How many variables.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True if none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Sets `name` to `value`; returns the value it replaced, as a map's `insert` does.
    pub fn insert(&mut self, name: String, value: String) -> Option<String> {
        let mut entries = std::mem::take(&mut self.0).into_vec();
        let replaced = match entries.binary_search_by(|(n, _)| n.cmp(&name)) {
            Ok(at) => Some(std::mem::replace(&mut entries[at].1, value)),
            Err(at) => {
                entries.insert(at, (name, value));
                None
            }
        };
        self.0 = entries.into_boxed_slice();
        replaced
    }
}

impl From<BTreeMap<String, String>> for Env {
    fn from(map: BTreeMap<String, String>) -> Self {
        Env(map.into_iter().collect())
    }
}

impl FromIterator<(String, String)> for Env {
    /// As a map collects: sorted by name, and the last value of a name wins.
    fn from_iter<I: IntoIterator<Item = (String, String)>>(iter: I) -> Self {
        Env::from(iter.into_iter().collect::<BTreeMap<_, _>>())
    }
}

impl IntoIterator for Env {
    type Item = (String, String);
    type IntoIter = std::vec::IntoIter<(String, String)>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.into_vec().into_iter()
    }
}

impl Job {
    /// How its runs are executed.
    pub fn executor(&self) -> Executor<'_> {
        match &self.kubernetes {
            Some(kubernetes) => Executor::Kubernetes(kubernetes),
            None => Executor::Process(&self.program),
        }
    }

    /// How late every slot of this job fires: [`jitter_offset`] of its name and `jitter`, zero without
    /// one.
    pub fn jitter_offset(&self) -> Duration {
        self.jitter
            .map_or(Duration::ZERO, |jitter| jitter_offset(&self.name, jitter))
    }
}

/// The offset in `[0, jitter)` by which `jitter:` delays every slot of the job `name`, in whole
/// milliseconds (zero for a `jitter` under 1 ms).
///
/// It depends on the name and the `jitter` alone, never on a process, a replica or a version: every
/// replica fires a job at the same instant, before and after a restart or an upgrade (a test pins its
/// values). The function: the 64-bit FNV-1a hash of the name's UTF-8 bytes (offset basis
/// `0xcbf29ce484222325`, prime `0x100000001b3`), then the splitmix64 finalizer (`x ^= x >> 30;
/// x *= 0xbf58476d1ce4e5b9; x ^= x >> 27; x *= 0x94d049bb133111eb; x ^= x >> 31`, wrapping), so that
/// names that differ in one character land far apart, then the remainder of its division by `jitter` in
/// milliseconds.
pub fn jitter_offset(name: &str, jitter: Duration) -> Duration {
    let jitter_ms = u64::try_from(jitter.as_millis()).unwrap_or(u64::MAX);
    if jitter_ms == 0 {
        return Duration::ZERO;
    }
    Duration::from_millis(stable_name_hash(name) % jitter_ms)
}

/// The name of the Kubernetes Job that runs the slot `slot` of the job `job` (a valid job name): a DNS-1123
/// label of at most 63 characters, the same on every replica and in every version, and unique per (job,
/// slot), so that a second leader creating the same slot gets AlreadyExists.
///
/// `{job}-{slot}`, where `{slot}` is the slot in unix seconds (`1700000000`), or in unix milliseconds with
/// an `m` when it is not a whole second (`1700000000250m`; finer parts are ignored: slots are whole
/// milliseconds at most), `n` before it when it is before 1970. A `{slot}` has no `-`, so the job is
/// everything before the last `-`: two jobs never share a Job name. When `{job}-{slot}` is longer than 63
/// characters, the job name is cut and followed by 8 hex digits of a stable hash of the whole name (the
/// one [`jitter_offset`] uses): `{job prefix}-{hash}-{slot}`, so that two long names with the same prefix
/// still differ.
pub fn kubernetes_job_name(job: &str, slot: chrono::DateTime<chrono::Utc>) -> String {
    let millis = slot.timestamp_millis();
    let sign = if millis < 0 { "n" } else { "" };
    let slot = if millis % 1000 == 0 {
        format!("{sign}{}", (millis / 1000).unsigned_abs())
    } else {
        format!("{sign}{}m", millis.unsigned_abs())
    };
    if job.len() + 1 + slot.len() <= MAX_NAME_LEN {
        return format!("{job}-{slot}");
    }
    let hash = format!("{:08x}", stable_name_hash(job) >> 32);
    let room = MAX_NAME_LEN - slot.len() - hash.len() - 2;
    // A job name is ASCII: any byte is a character boundary.
    let prefix = job
        .get(..room.min(job.len()))
        .unwrap_or(job)
        .trim_end_matches('-');
    format!("{prefix}-{hash}-{slot}")
}

/// FNV-1a 64 of `name`, then the splitmix64 finalizer (see [`jitter_offset`]).
fn stable_name_hash(name: &str) -> u64 {
    const FNV_OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut hash = FNV_OFFSET_BASIS;
    for byte in name.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(FNV_PRIME);
    }
    hash ^= hash >> 30;
    hash = hash.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    hash ^= hash >> 27;
    hash = hash.wrapping_mul(0x94d0_49bb_1331_11eb);
    hash ^ (hash >> 31)
}

/// Caller-supplied bounds for validation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadOptions {
    /// Largest accepted `terminationGrace`: LD − margin − RD (docs/design.md §2), so that a run stopped at the
    /// term deadline is dead before any other replica can acquire the lease.
    pub max_termination_grace: Duration,
}

impl Default for LoadOptions {
    /// The bound for the default timings (LD 15 s, RD 10 s): [`DEFAULT_MAX_TERMINATION_GRACE`].
    fn default() -> Self {
        LoadOptions {
            max_termination_grace: DEFAULT_MAX_TERMINATION_GRACE,
        }
    }
}

/// The validated jobs of one file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobSet {
    /// In file order.
    pub jobs: Vec<Arc<Job>>,
}

impl JobSet {
    /// The first job with `executor: kubernetes`, if any.
    pub fn kubernetes_job(&self) -> Option<&Arc<Job>> {
        self.jobs.iter().find(|job| job.kubernetes.is_some())
    }

    /// The job called `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<Job>> {
        self.jobs.iter().find(|job| job.name == name)
    }
}

/// Why a jobs file could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file could not be read.
    #[error("{}: cannot read the jobs file: {source}", origin_of(path))]
    Read {
        /// The file (`-`: standard input).
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// The file is larger than the commands read.
    #[error(
        "{origin}: the file is larger than {}, the most leasecron reads as a jobs file: check the path, \
         or raise the limit with --max-file-size",
        format_size(*limit)
    )]
    TooLarge {
        /// The file, as messages name it.
        origin: String,
        /// The limit, in bytes.
        limit: u64,
    },
    /// The file was read but is not valid; every problem found is listed.
    #[error("{0}")]
    Invalid(Diagnostics),
}

/// Every problem found in one file, ordered by position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostics(Vec<Diagnostic>);

/// One problem, at a place in a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// The file (or other origin) the source came from.
    pub origin: String,
    /// 1-based line; 0 when the position is unknown.
    pub line: usize,
    /// 1-based column; 0 when the position is unknown.
    pub column: usize,
    /// The job concerned: its name, or `jobs[INDEX]` if it has no usable name.
    pub job: Option<String>,
    /// What is wrong.
    pub message: String,
}

// === impl Diagnostics ===

impl Diagnostics {
    /// The problems, ordered by position.
    pub fn as_slice(&self) -> &[Diagnostic] {
        &self.0
    }

    /// Iterates over the problems.
    pub fn iter(&self) -> std::slice::Iter<'_, Diagnostic> {
        self.0.iter()
    }

    /// How many problems there are (never zero in an [`Error::Invalid`]).
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True if there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The problems, owned.
    pub fn into_vec(self) -> Vec<Diagnostic> {
        self.0
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, diagnostic) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{diagnostic}")?;
        }
        Ok(())
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:", self.origin)?;
        if self.line > 0 {
            write!(f, "{}:{}:", self.line, self.column)?;
        }
        if let Some(job) = &self.job {
            write!(f, " job {job}:")?;
        }
        write!(f, " {}", self.message)
    }
}

// === loading ===

/// Reads and validates the jobs file at `path`, all of it (the commands bound what they read: see
/// [`check_source`] and [`read_text`]).
pub fn load_file(path: &Path, opts: &LoadOptions) -> Result<JobSet, Error> {
    let source = read_text(path, u64::MAX)?;
    parse_str(&source, &origin_of(path), opts)
}

/// Reads and validates `path`, all of it: a jobs file, or Kubernetes manifests that embed one in each
/// ConfigMap, under `data.KEY` ([`DEFAULT_CONFIG_MAP_KEY`] unless `key` names another one).
///
/// A file is a manifest if one of its documents has `apiVersion` and `kind`; see [`parse_source`].
pub fn load_source(path: &Path, key: &str, opts: &LoadOptions) -> Result<Source, Error> {
    let source = read_text(path, u64::MAX)?;
    parse_source(&source, &origin_of(path), key, opts)
}

/// A file that [`check_source`] accepted, with what only this machine can tell about it.
#[derive(Debug)]
pub struct Checked {
    /// The jobs.
    pub source: Source,
    /// What may fail when the jobs run on this machine (a `workingDir` that does not exist here), in
    /// file order.
    pub warnings: Vec<Warning>,
}

/// A problem that depends on the machine: reported, but the file is valid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning(pub Diagnostic);

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Diagnostic {
            origin,
            line,
            column,
            job,
            message,
        } = &self.0;
        write!(f, "{origin}:")?;
        if *line > 0 {
            write!(f, "{line}:{column}:")?;
        }
        write!(f, " warning:")?;
        if let Some(job) = job {
            write!(f, " job {job}:")?;
        }
        write!(f, " {message}")
    }
}

/// What `leasecron validate` does with one file: reads at most `max_size` bytes of `path` (`-`: standard
/// input), loads it as [`load_source`] does, and checks on this machine what the file can only name (each
/// `workingDir`).
pub fn check_source(
    path: &Path,
    key: &str,
    opts: &LoadOptions,
    max_size: u64,
) -> Result<Checked, Error> {
    let text = read_text(path, max_size)?;
    let mut facts = validate::MachineFacts::default();
    let source = manifest::parse(&text, &origin_of(path), key, opts, &mut facts)?;
    Ok(Checked {
        source,
        warnings: facts.check(),
    })
}

/// Like [`load_source`], for a file held in memory; `origin` names it in diagnostics.
///
/// Every problem of every ConfigMap is reported, at its place in the manifest: the embedded jobs file's
/// problems too when it is a block literal (`jobs.yaml: |`), else at their place in the embedded text,
/// with an origin that says so (`cm.yaml (data.jobs.yaml):3:7: ...`).
pub fn parse_source(
    source: &str,
    origin: &str,
    key: &str,
    opts: &LoadOptions,
) -> Result<Source, Error> {
    manifest::parse(
        source,
        origin,
        key,
        opts,
        &mut validate::MachineFacts::default(),
    )
}

/// Parses and validates a jobs file held in memory; `origin` names it in diagnostics.
pub fn parse_str(source: &str, origin: &str, opts: &LoadOptions) -> Result<JobSet, Error> {
    let mut facts = validate::MachineFacts::default();
    parse_text(source, origin, Shift::NONE, opts, &mut facts).map_err(Error::Invalid)
}

/// How the YAML of a jobs file is parsed. Every way gives the same result; [`parse_str_with`] lets
/// tests and benchmarks choose one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum YamlPass {
    /// What [`parse_str`] does: a large file of the usual shape in pieces on several threads, else in
    /// one pass.
    #[default]
    Auto,
    /// One pass over the whole file.
    Single,
    /// The `jobs:` sequence cut into this many pieces parsed at once, whatever the file's size, when
    /// its shape allows; else one pass.
    Split(usize),
}

/// [`parse_str`], with the YAML parsed as `pass` says.
pub fn parse_str_with(
    source: &str,
    origin: &str,
    opts: &LoadOptions,
    pass: YamlPass,
) -> Result<JobSet, Error> {
    let root = node::parse_with(source, pass).map_err(|err| {
        Error::Invalid(Diagnostics(vec![syntax::diagnostic(
            origin,
            source,
            Shift::NONE,
            &err,
        )]))
    })?;
    let mut facts = validate::MachineFacts::default();
    validate_tree(root, source, origin, Shift::NONE, opts, &mut facts).map_err(Error::Invalid)
}

/// Parses and validates the text of a jobs file found in `origin`, where `shift` places its positions.
fn parse_text(
    text: &str,
    origin: &str,
    shift: Shift,
    opts: &LoadOptions,
    facts: &mut validate::MachineFacts,
) -> Result<JobSet, Diagnostics> {
    let root = node::parse(text)
        .map_err(|err| Diagnostics(vec![syntax::diagnostic(origin, text, shift, &err)]))?;
    validate_tree(root, text, origin, shift, opts, facts)
}

/// Validates the parsed tree `root` of `text`, a jobs file found in `origin` where `shift` places its
/// positions; what only the machine can check goes to `facts`.
fn validate_tree(
    root: serde_saphyr::Spanned<node::Node>,
    text: &str,
    origin: &str,
    shift: Shift,
    opts: &LoadOptions,
    facts: &mut validate::MachineFacts,
) -> Result<JobSet, Diagnostics> {
    let raw = raw::RawFile::from_node(root, text, shift);
    validate::validate(raw, origin, shift, opts, facts)
}

/// Parses a duration as humantime does (`500ms`, `30s`, `1m30s`, `2h`) and requires it to be positive.
///
/// The error is a message without position, for the caller to place (a flag name, a file position).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    match parse_duration_or_zero(s)? {
        Duration::ZERO => Err(format!("duration `{}` must be greater than zero", s.trim())),
        duration => Ok(duration),
    }
}

/// Like [`parse_duration`], but zero is accepted.
fn parse_duration_or_zero(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let example = "write e.g. 500ms, 30s, 1m30s or 2h";
    if s.starts_with('-') {
        return Err(format!(
            "invalid duration `{s}`: a duration cannot be negative ({example})"
        ));
    }
    humantime::parse_duration(s).map_err(|err| {
        // humantime counts bytes from 0; people count characters from 1.
        let character = |offset: usize| {
            let column = s.get(..offset).map_or(offset, |head| head.chars().count()) + 1;
            match s.get(offset..).and_then(|tail| tail.chars().next()) {
                Some(c) => format!("`{c}` (character {column})"),
                None => format!("the end (character {column})"),
            }
        };
        let why = match err {
            humantime::DurationError::InvalidCharacter(offset) => {
                format!("unexpected {}", character(offset))
            }
            humantime::DurationError::NumberExpected(offset) => {
                format!("expected a number at {}", character(offset))
            }
            humantime::DurationError::Empty => "it is empty".to_owned(),
            other => other.to_string(),
        };
        format!("invalid duration `{s}`: {why} ({example})")
    })
}

/// `s` with control characters escaped (`\n`, `\u{1b}`), for one-line messages.
pub(crate) fn escape_controls(s: &str) -> String {
    // Called for every job's label: the common case, nothing to escape, is one copy.
    if !s.chars().any(char::is_control) {
        return s.to_string();
    }
    let mut escaped = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if c.is_control() {
            escaped.extend(c.escape_default());
        } else {
            escaped.push(c);
        }
    }
    escaped
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_env_is_a_sorted_map() {
        let mut env: Env = [("B", "1"), ("A", "2"), ("B", "3")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        let pairs = |env: &Env| {
            env.iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
        };
        assert_eq!(pairs(&env), ["A=2", "B=3"], "sorted, the last value wins");
        assert_eq!(env.insert("AA".into(), "4".into()), None);
        assert_eq!(env.insert("A".into(), "5".into()), Some("2".into()));
        assert_eq!(pairs(&env), ["A=5", "AA=4", "B=3"]);
        assert_eq!(env.get("AA").map(String::as_str), Some("4"));
        assert_eq!(env.get("C"), None);
        assert_eq!((env.len(), env.is_empty()), (3, false));
        assert!(Env::default().is_empty());
    }

    #[test]
    fn parse_duration_accepts_humantime_and_rejects_zero_and_junk() {
        assert_eq!(parse_duration("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse_duration(" 1m30s "), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert!(parse_duration("0s")
            .unwrap_err()
            .contains("greater than zero"));
        assert!(parse_duration("30")
            .unwrap_err()
            .contains("invalid duration `30`"));
        assert!(parse_duration("-5s").is_err());
        assert_eq!(parse_duration_or_zero("0s"), Ok(Duration::ZERO));
    }

    #[test]
    fn the_name_hash_is_fnv1a_64_then_the_splitmix64_finalizer() {
        // FNV-1a 64 of "" and "a" (the published test vectors), then the finalizer, spelled out.
        let finalize = |mut x: u64| {
            x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            x ^ (x >> 31)
        };
        assert_eq!(stable_name_hash(""), finalize(0xcbf2_9ce4_8422_2325));
        assert_eq!(stable_name_hash("a"), finalize(0xaf63_dc4c_8601_ec8c));
        // splitmix64's first output from seed 0 is the finalizer of its increment.
        assert_eq!(finalize(0x9e37_79b9_7f4a_7c15), 0xe220_a839_7b1d_cdaf);
    }

    #[test]
    fn jitter_offsets_are_pinned_across_versions() {
        // Every replica, before and after an upgrade, must fire a job at the same instant: these values
        // may never change.
        let ms = Duration::from_millis;
        let minute = Duration::from_secs(60);
        assert_eq!(jitter_offset("nightly-report", minute), ms(52_990));
        assert_eq!(jitter_offset("backup", minute), ms(42_999));
        assert_eq!(jitter_offset("tick", minute), ms(44_389));
        assert_eq!(jitter_offset("job-1", Duration::from_secs(10)), ms(560));
        assert_eq!(jitter_offset("job-2", Duration::from_secs(10)), ms(194));
        assert_eq!(jitter_offset("a", Duration::from_secs(9)), ms(6_736));
    }

    #[test]
    fn jitter_offsets_are_deterministic_within_range_and_spread_over_names() {
        for jitter in [
            Duration::from_millis(1),
            Duration::from_millis(1500),
            Duration::from_secs(60),
            Duration::from_secs(86_400),
        ] {
            let mut seen = std::collections::BTreeSet::new();
            for i in 0..200 {
                let name = format!("job-{i}");
                let offset = jitter_offset(&name, jitter);
                assert!(offset < jitter, "{name}: {offset:?} within [0, {jitter:?})");
                assert_eq!(
                    offset,
                    jitter_offset(&name, jitter),
                    "{name}: the same every time"
                );
                assert_eq!(offset.subsec_nanos() % 1_000_000, 0, "whole milliseconds");
                seen.insert(offset);
            }
            // 200 names over at least 1500 distinct offsets: nearly all differ (1 ms: all are zero).
            let expected = if jitter == Duration::from_millis(1) {
                1
            } else {
                150
            };
            assert!(
                seen.len() >= expected,
                "{jitter:?}: {} distinct",
                seen.len()
            );
        }
        // A jitter under 1 ms (refused by validation) has nothing to offset by.
        assert_eq!(
            jitter_offset("a", Duration::from_micros(999)),
            Duration::ZERO
        );
        // Names that differ in one character land far apart.
        let hour = Duration::from_secs(3600);
        let (one, two) = (jitter_offset("job-1", hour), jitter_offset("job-2", hour));
        assert!(
            one.abs_diff(two) > Duration::from_secs(60),
            "{one:?} {two:?}"
        );
    }

    fn is_dns_label(name: &str) -> bool {
        let alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
        !name.is_empty()
            && name.len() <= MAX_NAME_LEN
            && name.chars().all(|c| alnum(c) || c == '-')
            && name.starts_with(alnum)
            && name.ends_with(alnum)
    }

    #[test]
    fn kubernetes_job_names_are_pinned_labels_unique_per_job_and_slot() {
        use chrono::{TimeZone, Utc};
        let slot = Utc.timestamp_opt(1_700_000_000, 0).unwrap();
        let sub = Utc.timestamp_millis_opt(1_700_000_000_250).unwrap();
        assert_eq!(kubernetes_job_name("report", slot), "report-1700000000");
        assert_eq!(kubernetes_job_name("report", sub), "report-1700000000250m");
        assert_eq!(
            kubernetes_job_name("report", Utc.timestamp_opt(-5, 0).unwrap()),
            "report-n5"
        );
        // Deterministic, and a label however long the name.
        let long = "a".repeat(MAX_NAME_LEN);
        let name = kubernetes_job_name(&long, sub);
        assert_eq!(name, kubernetes_job_name(&long, sub));
        assert!(is_dns_label(&name), "{name}");
        assert_eq!(name.len(), MAX_NAME_LEN);
        assert!(name.ends_with("-1700000000250m"), "{name}");
        // The longest name that needs no cut keeps its whole name.
        let fits = "b".repeat(MAX_NAME_LEN - 11);
        assert_eq!(
            kubernetes_job_name(&fits, slot),
            format!("{fits}-1700000000")
        );
        // Names with the same long prefix differ, and so do slots.
        let one = format!("{}-one", "x".repeat(60));
        let two = format!("{}-two", "x".repeat(60));
        assert_ne!(
            kubernetes_job_name(&one, slot),
            kubernetes_job_name(&two, slot)
        );
        assert_ne!(
            kubernetes_job_name(&one, slot),
            kubernetes_job_name(&one, sub)
        );
        // A cut that ends on `-` does not leave `--` or a trailing `-`.
        let dashed = format!("{}-{}", "c".repeat(43), "d".repeat(19));
        let name = kubernetes_job_name(&dashed, slot);
        assert!(is_dns_label(&name) && !name.contains("--"), "{name}");
        // A job name ending in digits cannot meet another job's slot: the slot has no `-`.
        let mut seen = std::collections::HashSet::new();
        for job in ["a", "a-1", "a-17", "a-1700000000"] {
            for slot in [slot, sub, Utc.timestamp_opt(1, 0).unwrap()] {
                let name = kubernetes_job_name(job, slot);
                assert!(is_dns_label(&name), "{name}");
                assert!(seen.insert(name.clone()), "{name} twice");
            }
        }
    }

    #[test]
    fn control_characters_are_escaped_and_the_rest_kept() {
        assert_eq!(escape_controls("nightly-report"), "nightly-report");
        assert_eq!(escape_controls(""), "");
        assert_eq!(escape_controls("a\nb\u{1b}[31mé\t"), "a\\nb\\u{1b}[31mé\\t");
    }

    #[test]
    fn diagnostics_print_one_line_each() {
        let at = |line, job: Option<&str>, message: &str| Diagnostic {
            origin: "jobs.yaml".into(),
            line,
            column: 7,
            job: job.map(str::to_string),
            message: message.into(),
        };
        let all = Diagnostics(vec![
            at(3, Some("nightly"), "bad zone"),
            at(1, None, "missing jobs"),
            at(0, None, "unknown place"),
        ]);
        assert_eq!(
            all.to_string(),
            "jobs.yaml:3:7: job nightly: bad zone\njobs.yaml:1:7: missing jobs\njobs.yaml: unknown place"
        );
    }
}
