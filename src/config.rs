//! The jobs file: parsing (serde-saphyr, strict) and validation into [`Job`]s.
//!
//! SKELETON — owned by the config/schedule helper. The public types below are the contract other modules
//! build against: keep their names and fields (adding is fine).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use crate::schedule::Schedule;

/// Default `terminationGrace`.
pub const DEFAULT_TERMINATION_GRACE: Duration = Duration::from_secs(3);
/// Cap on the doubling `retryBackoff`.
pub const MAX_RETRY_BACKOFF: Duration = Duration::from_secs(300);

/// What a job executes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Program {
    /// argv, exec'd directly (`command:`).
    Command(Vec<String>),
    /// A script run by `/bin/sh -c` (`shell:`).
    Shell(String),
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
}

/// One validated job.
#[derive(Debug, Clone)]
pub struct Job {
    /// Unique DNS-1123 label.
    pub name: String,
    /// When it fires (carries its time zone).
    pub schedule: Schedule,
    /// What it runs.
    pub program: Program,
    /// Extra environment, on top of the replica's.
    pub env: BTreeMap<String, String>,
    /// Working directory of the process, if set.
    pub working_dir: Option<PathBuf>,
    /// Per-attempt timeout, if set.
    pub timeout: Option<Duration>,
    /// Time between SIGTERM and SIGKILL.
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
}
