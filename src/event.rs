//! What happened: the events the elector, the dispatcher, the runner and the reloader report, and what
//! they carry.
//!
//! This is the vocabulary every producer speaks and every observer ([`crate::observe`]) hears, in one
//! place: [`ElectionEvent`] (with its [`LossReason`]), [`DispatchEvent`] (with its [`JobsDiff`]),
//! [`RunEvent`] (with a run's [`RunReport`] and [`Outcome`]), [`ConfigReload`], and the one [`SkipReason`]
//! for a fire that started nothing, whoever decided it. It is plain data: it depends on the jobs
//! ([`crate::config`]), the fencing token ([`crate::term`]) and the lease store's [`Verb`], never on the
//! modules that produce or consume it.
//!
//! Every enum that names a metric label says it with `as_str()` and lists every label value in one
//! constant (`ALL`, or [`Outcome::LABELS`] for an outcome, which carries data): [`crate::metrics`] creates
//! its series from those lists, and the run state's compact encoding numbers its outcomes by
//! [`Outcome::LABELS`].

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::config::{Job, JobSet};
use crate::controls::Controls;
use crate::lease_store::Verb;
use crate::run_state::{RequestKind, RequestState};
use crate::term::FencingToken;

/// Why a term ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LossReason {
    /// No renew succeeded within the renew deadline (RD after the last successful one was sent).
    RenewDeadline,
    /// Another writer changed the record: a peer took the lease over, or it was deleted.
    LeaseTaken,
    /// This replica is shutting down.
    Shutdown,
    /// The store failed in a way retrying cannot fix (a corrupt record, no permission).
    StoreError,
}

/// One thing the elector did or saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ElectionEvent {
    /// A lease record version not seen before (by this elector) was observed.
    Observed {
        /// The holder in the record, if any.
        holder: Option<String>,
        /// The record's `leaseTransitions`.
        lease_transitions: i32,
    },
    /// This replica acquired the lease and began a term.
    Acquired {
        /// The new term's fencing token.
        token: FencingToken,
    },
    /// A term ended (published after its runs ended).
    Lost {
        /// The term's fencing token.
        token: FencingToken,
        /// Why.
        reason: LossReason,
    },
    /// On shutdown, the lease was released (holder cleared) after the term's runs ended.
    Released {
        /// The released term's fencing token.
        token: FencingToken,
    },
    /// The durable record of the fencing tokens went backwards: a lease observed with a lower
    /// `leaseTransitions` than before, or, at an acquisition, the lease and the run state both below a
    /// token this process had seen (both deleted or replaced). This replica's next term still gets a token
    /// above `highest_seen`.
    TokenRegression {
        /// The largest token this process had seen.
        highest_seen: u64,
        /// The largest token the lease (and, at an acquisition, the run state) still held.
        durable: u64,
    },
    /// A renew attempt failed (the term continues until its deadline).
    RenewFailed {
        /// The error, as text.
        error: String,
    },
    /// A store request completed, failed or timed out.
    Request {
        /// Which request.
        verb: Verb,
        /// How long it took (up to its timeout).
        duration: Duration,
        /// True if it succeeded.
        ok: bool,
    },
}

/// Why a fire started nothing. The dispatcher decides [`SkipReason::Suspended`] and
/// [`SkipReason::MissedDeadline`] (and reports them as [`DispatchEvent::Skipped`]); the runner decides the
/// others (and reports them as [`RunEvent::Skipped`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SkipReason {
    /// A run of the job is still going and the policy is `Forbid`.
    Overlap,
    /// The term was not live at the moment of spawn (or a newer term has written the run state).
    NotLeader,
    /// The slot was missed (stall, restart, clock jump) and is past its `startingDeadline`.
    MissedDeadline,
    /// The job is suspended.
    Suspended,
    /// The run state records the slot as started already (by this or another term): it runs at most once.
    AlreadyStarted,
    /// The slot could not be recorded as started in the run state, so it is not started (at most once).
    StateUnavailable,
    /// The slot waited in its job's queue (`concurrencyPolicy: Queue`) for the run in flight to end, and a
    /// later fire took its place before it could start.
    QueueReplaced,
}

/// What the dispatcher tells the rest of the process (metrics, `/status`, Kubernetes Events).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DispatchEvent {
    /// A fire started nothing, for a reason the dispatcher decides (the runner reports its own skips).
    Skipped {
        /// The job's name.
        job: String,
        /// The slot that was skipped.
        scheduled: DateTime<Utc>,
        /// Why: [`SkipReason::Suspended`] or [`SkipReason::MissedDeadline`].
        reason: SkipReason,
        /// True if this replica led when the fire was skipped (a follower's skips are not news).
        leader: bool,
    },
    /// The job's next fire time changed (its timer started, or it fired); `None` if it has no future fire.
    NextRun {
        /// The job's name.
        job: String,
        /// The next slot.
        at: Option<DateTime<Utc>>,
    },
    /// When a term began, slots that fell due without a leader and will not run (older than the latest,
    /// or past `startingDeadline`).
    MissedSlots {
        /// The job's name.
        job: String,
        /// How many (a lower bound if `truncated`).
        count: u64,
        /// The latest of them.
        latest: Option<DateTime<Utc>>,
        /// True if counting stopped at [`crate::run_state::MAX_COUNTED_MISSED`].
        truncated: bool,
    },
    /// The leader carried out an operator's request, or refused it (`leasecron trigger`, `backfill`,
    /// `suspend`, `resume`): sent once per request, by the term that acknowledged it.
    Request {
        /// The job's name.
        job: String,
        /// The request's id.
        id: String,
        /// What was asked.
        kind: RequestKind,
        /// Who asked.
        by: String,
        /// [`RequestState::Done`] (a trigger's run ended, a backfill's slots ran, a suspension or a
        /// resumption took effect), [`RequestState::Refused`] (see `detail`).
        state: RequestState,
        /// A trigger's outcome, a backfill's summary, or why it was refused.
        detail: Option<String>,
        /// A suspension's note.
        note: Option<String>,
    },
    /// A version of the controls document is in force on this replica (its suspensions apply from now).
    ControlsApplied {
        /// The document.
        controls: Arc<Controls>,
    },
    /// A version of the jobs is now in force: the timers of removed and changed jobs have stopped (none
    /// of their events follow this one), and those of added and changed jobs are about to start.
    JobsApplied {
        /// The jobs now in force.
        jobs: Arc<JobSet>,
        /// How this version differs from the previous one.
        diff: JobsDiff,
    },
}

/// The job names that one version of the jobs added, removed, changed or kept, against the previous one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobsDiff {
    /// New names.
    pub added: Vec<String>,
    /// Names no longer present.
    pub removed: Vec<String>,
    /// Present in both, with different settings.
    pub changed: Vec<String>,
    /// How many are present in both with equal settings.
    pub unchanged: usize,
}

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
    /// `executor: kubernetes`: the Job failed (its `Failed` condition's reason and message, with the exit
    /// code of its last failed pod's container when it could be read).
    Job {
        /// The condition's reason (`BackoffLimitExceeded`, `PodFailurePolicy`, ...).
        reason: String,
        /// The condition's message.
        message: String,
        /// The failed container's exit code, if read.
        exit_code: Option<i32>,
    },
    /// `executor: kubernetes`: the API server refused to create the Job (invalid, admission, quota, RBAC),
    /// in its own words.
    Refused(String),
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
    /// How late the first attempt started after the slot's fire time: `started_at - (scheduled + the
    /// job's jitter offset)`, zero if early. A jittered job's runs start on time at their offset, so the
    /// lag is measured from there, not from the nominal slot.
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
    /// `executor: kubernetes`: something happened to a run's Kubernetes Job.
    Cluster {
        /// The job's name.
        job: String,
        /// The slot the run is for.
        scheduled: DateTime<Utc>,
        /// The Job's name.
        name: String,
        /// What happened.
        action: ClusterAction,
    },
    /// A fire started nothing.
    Skipped {
        /// The job's name.
        job: String,
        /// The slot that was skipped.
        scheduled: DateTime<Utc>,
        /// Why: [`SkipReason::Overlap`], [`SkipReason::NotLeader`], [`SkipReason::AlreadyStarted`],
        /// [`SkipReason::StateUnavailable`] or [`SkipReason::QueueReplaced`].
        reason: SkipReason,
    },
}

/// What happened to a run's Kubernetes Job (`executor: kubernetes`), as [`RunEvent::Cluster`] says.
///
/// A run counts as running from [`ClusterAction::Created`] or [`ClusterAction::Adopted`] to its
/// [`RunEvent::Finished`], or to [`ClusterAction::HandedOver`] (its term ended, the Job goes on and the
/// next leader adopts it: no outcome here).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClusterAction {
    /// This term created the Job.
    Created,
    /// This term found the Job active, created by an earlier term, and follows it to its end.
    Adopted {
        /// The fencing token of the term that created it.
        created_by: u64,
    },
    /// This term ended while the Job was active; it goes on (`cancelOnLeadershipLoss` is off).
    HandedOver,
    /// The Job was deleted: by `Replace`, at the end of the term (`cancelOnLeadershipLoss`), or after it
    /// finished, beyond the job's history limits.
    Deleted,
}

impl ClusterAction {
    /// Every action's label: the `action` label values of `leasecron_kubernetes_jobs_total`.
    pub const LABELS: [&'static str; 4] = ["created", "adopted", "handed_over", "deleted"];

    /// The metric label: `created`, `adopted`, `handed_over` or `deleted`.
    pub const fn as_str(&self) -> &'static str {
        match self {
            ClusterAction::Created => "created",
            ClusterAction::Adopted { .. } => "adopted",
            ClusterAction::HandedOver => "handed_over",
            ClusterAction::Deleted => "deleted",
        }
    }
}

/// What became of one version of the jobs text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigReload {
    /// The version is valid and now in force.
    Applied {
        /// Where it came from: a path, or `configmap/NAMESPACE/NAME/KEY`.
        origin: String,
        /// [`crate::reload::content_hash`] of the text.
        hash: u64,
        /// How many jobs it holds.
        jobs: usize,
        /// True for the load at start (not a reload: not counted in `leasecron_config_reloads_total`).
        initial: bool,
    },
    /// The version is unreadable or invalid; the jobs in force stay.
    Failed {
        /// Where it came from.
        origin: String,
        /// Every problem, one `FILE:LINE:COL: message` per line.
        message: String,
    },
}

/// A jobs text's hash as `/status` (`config.hash`) and `leasecron_config_info{hash}` show it: 16 hex digits.
pub fn hash_hex(hash: u64) -> String {
    format!("{hash:016x}")
}

// === impl LossReason ===

impl LossReason {
    /// Every reason: the `reason` label values of `leasecron_leadership_lost_total`.
    pub const ALL: [LossReason; 4] = [
        LossReason::RenewDeadline,
        LossReason::LeaseTaken,
        LossReason::Shutdown,
        LossReason::StoreError,
    ];

    /// The reason as a metrics label: `renew_deadline`, `lease_taken`, `shutdown`, `store_error`.
    pub const fn as_str(self) -> &'static str {
        match self {
            LossReason::RenewDeadline => "renew_deadline",
            LossReason::LeaseTaken => "lease_taken",
            LossReason::Shutdown => "shutdown",
            LossReason::StoreError => "store_error",
        }
    }
}

impl fmt::Display for LossReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

// === impl SkipReason ===

impl SkipReason {
    /// Every reason: the `reason` label values of `leasecron_job_skipped_total`.
    pub const ALL: [SkipReason; 7] = [
        SkipReason::Overlap,
        SkipReason::NotLeader,
        SkipReason::MissedDeadline,
        SkipReason::Suspended,
        SkipReason::AlreadyStarted,
        SkipReason::StateUnavailable,
        SkipReason::QueueReplaced,
    ];

    /// The metric label (and the `reason` of the "run skipped" log line): `overlap`, `not_leader`,
    /// `missed_deadline`, `suspended`, `already_started`, `state_unavailable` or `queue_replaced`.
    pub const fn as_str(self) -> &'static str {
        match self {
            SkipReason::Overlap => "overlap",
            SkipReason::NotLeader => "not_leader",
            SkipReason::MissedDeadline => "missed_deadline",
            SkipReason::Suspended => "suspended",
            SkipReason::AlreadyStarted => "already_started",
            SkipReason::StateUnavailable => "state_unavailable",
            SkipReason::QueueReplaced => "queue_replaced",
        }
    }
}

// === impl JobsDiff ===

impl JobsDiff {
    /// The difference from `old` to `new`, by job name.
    pub fn between(old: &BTreeMap<String, Arc<Job>>, new: &JobSet) -> JobsDiff {
        let mut diff = JobsDiff::default();
        for job in &new.jobs {
            match old.get(&job.name) {
                None => diff.added.push(job.name.clone()),
                Some(before) if **before != **job => diff.changed.push(job.name.clone()),
                Some(_) => diff.unchanged += 1,
            }
        }
        // By set, not `JobSet::get` (a scan of the list): 10 000 jobs took 66 ms to compare.
        let kept: HashSet<&str> = new.jobs.iter().map(|job| job.name.as_str()).collect();
        diff.removed = old
            .keys()
            .filter(|name| !kept.contains(name.as_str()))
            .cloned()
            .collect();
        diff
    }

    /// True if no job was added, removed or changed.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty()
    }
}

// === impl Outcome ===

impl Outcome {
    /// Every outcome's label: the `outcome` label values of `leasecron_job_runs_total`. The order is the
    /// run state's outcome codes (an outcome is stored as its index here): append, never reorder.
    pub const LABELS: [&'static str; 4] = [
        Outcome::Succeeded.as_str(),
        Outcome::Failed(Failure::ExitCode(1)).as_str(),
        Outcome::TimedOut.as_str(),
        Outcome::Cancelled.as_str(),
    ];

    /// The metric label: `succeeded`, `failed`, `timed_out` or `cancelled`.
    pub const fn as_str(&self) -> &'static str {
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
            other => f.write_str(other.as_str()),
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
            Failure::Job {
                reason,
                message,
                exit_code,
            } => {
                write!(f, "the Job failed: {reason}")?;
                if !message.is_empty() {
                    write!(f, ": {message}")?;
                }
                match exit_code {
                    Some(code) => write!(f, " (exit code {code})"),
                    None => Ok(()),
                }
            }
            Failure::Refused(why) => write!(f, "the Job was not created: {why}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_match_the_metric_contract() {
        assert_eq!(
            Outcome::LABELS,
            ["succeeded", "failed", "timed_out", "cancelled"]
        );
        assert_eq!(Outcome::Succeeded.as_str(), "succeeded");
        assert_eq!(Outcome::Failed(Failure::ExitCode(3)).as_str(), "failed");
        assert_eq!(Outcome::TimedOut.as_str(), "timed_out");
        assert_eq!(Outcome::Cancelled.as_str(), "cancelled");
        let skips: Vec<_> = SkipReason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(
            skips,
            [
                "overlap",
                "not_leader",
                "missed_deadline",
                "suspended",
                "already_started",
                "state_unavailable",
                "queue_replaced"
            ]
        );
    }

    #[test]
    fn loss_reasons_have_stable_labels() {
        let labels: Vec<_> = LossReason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(
            labels,
            ["renew_deadline", "lease_taken", "shutdown", "store_error"]
        );
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
