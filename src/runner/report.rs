//! What a run reports: its [`Outcome`], why a run was skipped, and the [`RunEvent`]s the runner emits.

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};

/// How a run ended. Every run that started ends with exactly one outcome: its last attempt's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The process exited with status 0.
    Succeeded,
    /// The process failed, or could not be started.
    Failed(Failure),
    /// The attempt outlived the job's `timeout` and was terminated (TERM, then KILL after the grace).
    TimedOut,
    /// The run was cancelled (term ended, shutdown, or replaced) and terminated.
    Cancelled,
}

/// Why a run failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The process exited with this non-zero status.
    ExitCode(i32),
    /// The process was killed by this signal (not by the runner's own escalation).
    Signal(i32),
    /// The process could not be started (no such program, working directory missing, ...).
    Spawn(String),
    /// The process ran, but its exit status could not be collected.
    Lost(String),
}

/// Why a fire started nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SkipReason {
    /// A run of the job is still going and the policy is `Forbid`.
    Overlap,
    /// The term was not live at the moment of spawn (or a newer term has written the run state).
    NotLeader,
    /// The run state records the slot as started already (by this or another term): it runs at most once.
    AlreadyStarted,
    /// The slot could not be recorded as started in the run state, so it is not started (at most once).
    StateUnavailable,
}

/// The summary of one finished run (all its attempts).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunReport {
    /// The job's name.
    pub job: String,
    /// The slot the run was for.
    pub scheduled: DateTime<Utc>,
    /// How many attempts were made (0 if the run was cancelled before its first attempt).
    pub attempts: u32,
    /// The last attempt's outcome.
    pub outcome: Outcome,
    /// Wall-clock time of the first attempt (or of the end, if no attempt was made).
    pub started_at: DateTime<Utc>,
    /// Monotonic time from the first attempt to the end of the last, backoff included.
    pub duration: Duration,
    /// How late the first attempt started: `started_at - scheduled`, zero if early.
    pub start_delay: Duration,
    /// The fencing token of the term the run belonged to.
    pub fencing_token: u64,
    /// Processes the run's attempts left behind, SIGKILLed as each attempt ended: alive in the attempt's
    /// process group when its process exited by itself (`cmd &`), or outside the group and carrying its
    /// `LEASECRON_*` variables (`setsid`, a double fork). Not counted for an attempt the runner ended
    /// (timeout, cancellation): its group was signalled with it.
    pub leftover_processes_killed: u32,
}

/// What the runner tells the rest of the process (metrics, `/status`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunEvent {
    /// An attempt's process was spawned.
    Started {
        /// The job's name.
        job: String,
        /// The slot the run is for.
        scheduled: DateTime<Utc>,
        /// 1-based attempt number.
        attempt: u32,
        /// The process id (also its process group id).
        pid: u32,
    },
    /// A run ended.
    Finished(RunReport),
    /// A fire started nothing.
    Skipped {
        /// The job's name.
        job: String,
        /// The slot that was skipped.
        scheduled: DateTime<Utc>,
        /// Why.
        reason: SkipReason,
    },
}

// === impl Outcome ===

impl Outcome {
    /// The metric label: `succeeded`, `failed`, `timed_out` or `cancelled`.
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Succeeded => "succeeded",
            Outcome::Failed(_) => "failed",
            Outcome::TimedOut => "timed_out",
            Outcome::Cancelled => "cancelled",
        }
    }

    /// True for the outcomes a retry may fix: failed and timed out (never cancelled).
    pub fn is_retryable(&self) -> bool {
        matches!(self, Outcome::Failed(_) | Outcome::TimedOut)
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Failed(failure) => write!(f, "failed ({failure})"),
            other => f.write_str(other.label()),
        }
    }
}

// === impl Failure ===

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::ExitCode(code) => write!(f, "exit code {code}"),
            Failure::Signal(signal) => write!(f, "killed by signal {signal}"),
            Failure::Spawn(why) => write!(f, "could not start: {why}"),
            Failure::Lost(why) => write!(f, "exit status lost: {why}"),
        }
    }
}

// === impl SkipReason ===

impl SkipReason {
    /// The metric label: `overlap` or `not_leader`.
    pub fn label(&self) -> &'static str {
        match self {
            SkipReason::Overlap => "overlap",
            SkipReason::NotLeader => "not_leader",
            SkipReason::AlreadyStarted => "already_started",
            SkipReason::StateUnavailable => "state_unavailable",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_match_the_metric_contract() {
        assert_eq!(Outcome::Succeeded.label(), "succeeded");
        assert_eq!(Outcome::Failed(Failure::ExitCode(3)).label(), "failed");
        assert_eq!(Outcome::TimedOut.label(), "timed_out");
        assert_eq!(Outcome::Cancelled.label(), "cancelled");
        assert_eq!(SkipReason::Overlap.label(), "overlap");
        assert_eq!(SkipReason::NotLeader.label(), "not_leader");
    }

    #[test]
    fn only_failures_and_timeouts_are_retried() {
        assert!(Outcome::Failed(Failure::Signal(9)).is_retryable());
        assert!(Outcome::Failed(Failure::Spawn("x".into())).is_retryable());
        assert!(Outcome::TimedOut.is_retryable());
        assert!(!Outcome::Cancelled.is_retryable());
        assert!(!Outcome::Succeeded.is_retryable());
    }

    #[test]
    fn display_names_the_failure() {
        let failed = Outcome::Failed(Failure::ExitCode(3));
        assert_eq!(failed.to_string(), "failed (exit code 3)");
        assert_eq!(Outcome::TimedOut.to_string(), "timed_out");
    }
}
