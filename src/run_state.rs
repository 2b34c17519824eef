//! Persisted run state: each scheduled slot of a job runs **at most once** across failovers and restarts,
//! and a slot that fell due while no replica could lead still runs if it is within `startingDeadline`.
//!
//! One [`StateRecord`] per lease holds, per job, the last slot started (with the fencing token of the term
//! that started it), the last completion and the last success. It lives beside the lease, in a [`Store`]:
//! a file next to the lease file ([`local::run_state`](crate::local::run_state)), or the ConfigMap
//! `<lease-name>-state` ([`kubernetes::run_state`](crate::kubernetes::run_state)); tests and benches keep
//! it in [`memory`]. The [`Ledger`] is the one writer of a replica:
//!
//! - a run's slot is **claimed** (written as started) before its process is spawned: a slot already
//!   recorded as started is never started again, whoever started it;
//! - every write is a compare-and-swap on the record's version, and carries the term's fencing token: a
//!   record already written by a newer term refuses the write ([`Claim::Stale`]), so a stale leader cannot
//!   overwrite it;
//! - when a term begins, [`Ledger::begin_term`] re-reads the record and stamps it with the new token, and
//!   [`catch_up`] decides per job what the gap without a leader owes: the latest due slot if it is within
//!   `startingDeadline` (as CronJob runs only the latest), the older ones counted as missed.
//!
//! The runner claims and completes each run's slot through the ledger. The [`Keeper`] owns the rest, and
//! the dispatcher calls it at the moments it concerns: when a term begins (stamp, catch up, forget the jobs
//! no longer configured), when a reload removes jobs while this replica leads (forget them), and on a
//! follower now and then (read the record again, for `/status`).
//!
//! A record that cannot be read (corrupt, or written by a newer leasecron with fields we do not know) is
//! logged and rebuilt from scratch: jobs without a record owe nothing, so missed slots are skipped, never
//! run twice.

mod keeper;
mod ledger;
pub mod memory;

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::config::Job;

pub use keeper::Keeper;
pub use ledger::{Ledger, MAX_CLAIM_LEAD, MIN_CLAIM_LEAD};

/// The record's format; a record with another `format` is rebuilt.
pub const FORMAT: u32 = 1;
/// The compact format a ConfigMap store writes when format 1 would not fit (`kubernetes::run_state::encoding`).
pub const COMPACT_FORMAT: u64 = 2;
/// How many runs each job's history keeps (the ConfigMap store keeps fewer when 1 MiB would not hold
/// them all: `kubernetes::run_state::encoding`).
pub const HISTORY_PER_JOB: usize = 20;
/// How long a request is carried out after it was made: an older one is refused as expired, so that a
/// trigger filed while no replica could lead does not start hours later by surprise.
pub const REQUEST_TTL: Duration = Duration::from_secs(3600);
/// How long a leader keeps a request's acknowledgement after the request was made: past it, the request is
/// expired anyway (twice [`REQUEST_TTL`], for clock skew between the operator's machine and the leader).
pub const ACK_RETENTION: Duration = Duration::from_secs(2 * 3600);
/// True if a request made at `requested_at` is older than [`REQUEST_TTL`] at `now`: it is refused, not
/// carried out.
pub fn is_expired(requested_at: DateTime<Utc>, now: DateTime<Utc>) -> bool {
    chrono::Duration::from_std(REQUEST_TTL)
        .ok()
        .and_then(|ttl| requested_at.checked_add_signed(ttl))
        .is_some_and(|end| end < now)
}

/// The instant before which requests made are forgotten at `now`, with their acknowledgements
/// ([`ACK_RETENTION`]).
pub fn ack_horizon(now: DateTime<Utc>) -> DateTime<Utc> {
    chrono::Duration::from_std(ACK_RETENTION)
        .ok()
        .and_then(|retention| now.checked_sub_signed(retention))
        .unwrap_or(now)
}

/// At most this many slots in one `leasecron backfill` (a month of hourly slots is 744).
pub const MAX_BACKFILL_SLOTS: u64 = 1000;
/// At most this many missed slots are enumerated per job when a term begins (a 1-second schedule after a
/// day without a leader); beyond it the count is a lower bound, and says so in the log.
pub const MAX_COUNTED_MISSED: u64 = 10_000;

/// The run state of every job, as stored.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct StateRecord {
    /// [`FORMAT`].
    pub format: u32,
    /// The newest fencing token that wrote this record: older terms may not write it.
    pub fencing_token: u64,
    /// Per job, by name.
    #[serde(default)]
    pub jobs: BTreeMap<String, JobRecord>,
    /// The operators' requests (`leasecron trigger`, `backfill`, `suspend`, `resume`) that a leader has
    /// acknowledged, by request id: a request with an acknowledgement here is never carried out again,
    /// whichever leader reads it (docs/design.md, "Operator controls").
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub requests: BTreeMap<String, RequestAck>,
}

impl StateRecord {
    /// The largest fencing token in the record: its own, or one a job's last start carries.
    pub fn highest_token(&self) -> u64 {
        self.jobs
            .values()
            .filter_map(|job| job.last_started.as_ref())
            .map(|start| start.fencing_token)
            .fold(self.fencing_token, u64::max)
    }
}

/// The run state of one job.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct JobRecord {
    /// The last slot a run was started for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_started: Option<SlotStart>,
    /// The last run that finished under a live term.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_completion: Option<Completion>,
    /// The last run that succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_success: Option<Completion>,
    /// The last runs, oldest first, at most [`HISTORY_PER_JOB`] (fewer where a ConfigMap would not hold
    /// them: `kubernetes::run_state::encoding`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<HistoryEntry>,
}

impl JobRecord {
    /// The history entry of the run of `slot` under `fencing_token`, if it is still kept.
    pub fn run_of(&mut self, slot: DateTime<Utc>, fencing_token: u64) -> Option<&mut HistoryEntry> {
        self.history
            .iter_mut()
            .rev()
            .find(|entry| entry.slot == slot && entry.fencing_token == fencing_token)
    }

    /// Records a run as started, dropping the oldest entries beyond [`HISTORY_PER_JOB`].
    pub fn push_history(&mut self, entry: HistoryEntry) {
        self.history.push(entry);
        let excess = self.history.len().saturating_sub(HISTORY_PER_JOB);
        self.history.drain(..excess);
    }

    /// True if a run of `slot` is recorded: the last slot started, or one in the history.
    pub fn has_started(&self, slot: DateTime<Utc>) -> bool {
        self.last_started.as_ref().is_some_and(|s| s.slot == slot)
            || self.history.iter().any(|entry| entry.slot == slot)
    }
}

/// Why a run runs, and the operator's request behind it, if any: what [`Ledger::claim`] checks a slot
/// against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// Why.
    pub cause: Cause,
    /// The request of a trigger or a backfill.
    pub request: Option<RequestRef>,
}

impl Origin {
    /// A run of a scheduled slot.
    pub const SCHEDULE: Origin = Origin {
        cause: Cause::Schedule,
        request: None,
    };
    /// A run of a slot that an earlier term started and was cut off from (`rerunInterrupted`).
    pub const RETRY: Origin = Origin {
        cause: Cause::Retry,
        request: None,
    };

    /// A run of the schedule (or of a catch-up, or a retry), without a request.
    pub fn scheduled(cause: Cause) -> Origin {
        Origin {
            cause,
            request: None,
        }
    }

    /// A run for the operator's request `id` made at `requested_at`.
    pub fn requested(cause: Cause, id: impl Into<String>, requested_at: DateTime<Utc>) -> Origin {
        Origin {
            cause,
            request: Some(RequestRef {
                id: id.into(),
                requested_at,
            }),
        }
    }
}

/// An operator's request, as a run refers to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestRef {
    /// The request's id.
    pub id: String,
    /// When it was made.
    pub requested_at: DateTime<Utc>,
}

/// Why a run ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Cause {
    /// Its slot fell due while this replica led.
    Schedule,
    /// Its slot fell due while no replica led, and a new term ran it within `startingDeadline`.
    CatchUp,
    /// An earlier term started its slot and was cut off; a new term ran it again (`rerunInterrupted`).
    Retry,
    /// `leasecron trigger`: once, outside the schedule.
    Trigger,
    /// `leasecron backfill`: a past slot, on request.
    Backfill,
}

impl Cause {
    /// Every cause, for metric labels.
    pub const ALL: [Cause; 5] = [
        Cause::Schedule,
        Cause::CatchUp,
        Cause::Retry,
        Cause::Trigger,
        Cause::Backfill,
    ];

    /// The label in logs, metrics and history.
    pub fn as_str(self) -> &'static str {
        match self {
            Cause::Schedule => "schedule",
            Cause::CatchUp => "catch_up",
            Cause::Retry => "retry",
            Cause::Trigger => "trigger",
            Cause::Backfill => "backfill",
        }
    }

    /// The cause whose [`Cause::as_str`] is `text`.
    pub fn parse(text: &str) -> Option<Cause> {
        Cause::ALL.into_iter().find(|cause| cause.as_str() == text)
    }

    /// True for the causes that advance the job's schedule (`lastStarted`): a trigger or a backfill runs
    /// beside the schedule, and neither moves it nor hides a slot that the schedule still owes.
    pub fn is_scheduled(self) -> bool {
        matches!(self, Cause::Schedule | Cause::CatchUp | Cause::Retry)
    }
}

/// One run in a job's history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HistoryEntry {
    /// The slot it ran for (a trigger's: the instant it was started).
    pub slot: DateTime<Utc>,
    /// Why it ran.
    pub cause: Cause,
    /// The operator's request, for a trigger or a backfill.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<String>,
    /// The fencing token of the term that ran it.
    pub fencing_token: u64,
    /// The replica that ran it.
    pub identity: String,
    /// When it was claimed, right before its first process (wall clock).
    pub started_at: DateTime<Utc>,
    /// When it finished; `None` while it runs, or if its term ended first (interrupted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<DateTime<Utc>>,
    /// `succeeded`, `failed`, `timed_out` or `cancelled`; `None` like `finished_at`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
    /// The last attempt's exit code, if it exited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// The signal that ended the last attempt, if one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
    /// How many attempts it took (more than one with `retries`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempts: Option<u32>,
}

/// How a run ended, for its history entry.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunResult {
    /// The last attempt's exit code, if it exited.
    pub exit_code: Option<i32>,
    /// The signal that ended the last attempt, if one did.
    pub signal: Option<i32>,
    /// How many attempts it took.
    pub attempts: u32,
}

/// What an operator asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RequestKind {
    /// Run the job once now.
    Trigger,
    /// Run the job's slots of a past range.
    Backfill,
    /// Skip the job's fires until resumed.
    Suspend,
    /// Start the job's fires again.
    Resume,
}

impl RequestKind {
    /// Every kind, for metric labels.
    pub const ALL: [RequestKind; 4] = [
        RequestKind::Trigger,
        RequestKind::Backfill,
        RequestKind::Suspend,
        RequestKind::Resume,
    ];

    /// The label in logs, metrics and files.
    pub fn as_str(self) -> &'static str {
        match self {
            RequestKind::Trigger => "trigger",
            RequestKind::Backfill => "backfill",
            RequestKind::Suspend => "suspend",
            RequestKind::Resume => "resume",
        }
    }
}

/// Where a request stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RequestState {
    /// Being carried out: a trigger's run, a backfill's slots.
    Running,
    /// Carried out: a trigger's run or a backfill's slots ended (see `outcome`), a suspension or a
    /// resumption took effect.
    Done,
    /// Not carried out, and it never will be: see `detail` (the concurrency policy refused a trigger, the
    /// job is not in the jobs in force, the request expired).
    Refused,
}

impl RequestState {
    /// The label in logs and output.
    pub fn as_str(self) -> &'static str {
        match self {
            RequestState::Running => "running",
            RequestState::Done => "done",
            RequestState::Refused => "refused",
        }
    }
}

/// A leader's acknowledgement of an operator's request: once written, the request is never carried out
/// again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RequestAck {
    /// What was asked.
    pub kind: RequestKind,
    /// Of which job.
    pub job: String,
    /// When the operator asked (the request's own time): acknowledgements are kept
    /// [`ACK_RETENTION`] past it.
    pub requested_at: DateTime<Utc>,
    /// Where it stands.
    pub state: RequestState,
    /// Why it was refused, or what a backfill skipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// The term that acknowledged it (and, for a backfill, that last advanced it).
    pub fencing_token: u64,
    /// The replica that acknowledged it.
    pub identity: String,
    /// When it was acknowledged, or last advanced (wall clock).
    pub updated_at: DateTime<Utc>,
    /// A trigger's run: its slot (the instant it started).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slot: Option<DateTime<Utc>>,
    /// A trigger's run, or a backfill's last run: how it ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
    /// A backfill: the last slot of its range that it has dealt with (started, or skipped because it had
    /// already started); the next leader goes on after it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<DateTime<Utc>>,
    /// A backfill: how many of its slots it started.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub started: u32,
    /// A backfill: how many of its slots it skipped because they had already started.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub skipped: u32,
    /// A backfill: how many of its runs failed (did not succeed).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub failed: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// A slot recorded as started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SlotStart {
    /// The scheduled time.
    pub slot: DateTime<Utc>,
    /// The fencing token of the term that started it.
    pub fencing_token: u64,
    /// The replica that started it.
    pub identity: String,
    /// When it was recorded (wall clock).
    pub started_at: DateTime<Utc>,
}

/// A finished run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Completion {
    /// The slot it ran for.
    pub slot: DateTime<Utc>,
    /// `succeeded`, `failed`, `timed_out` or `cancelled`.
    pub outcome: String,
    /// When it finished (wall clock).
    pub finished_at: DateTime<Utc>,
}

/// Why the state could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The store failed: its own error (a file's, a ConfigMap's), which names the store. The run state
    /// does not know the stores' types, so the dependency points from each store to here.
    #[error("{0}")]
    Store(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The write that carried this change together with others failed (the first change's caller has
    /// the error itself).
    #[error("{0}")]
    Batched(String),
    /// Writes kept conflicting with other writers.
    #[error("run state {store}: {attempts} writes in a row conflicted with another writer")]
    Contended {
        /// The store.
        store: String,
        /// How many attempts were made.
        attempts: u32,
    },
}

impl Error {
    /// A store's own error.
    pub fn store(error: impl std::error::Error + Send + Sync + 'static) -> Error {
        Error::Store(Box::new(error))
    }
}

/// The record as a store read it.
#[derive(Debug, Clone)]
pub enum Loaded {
    /// There is no record yet.
    Absent,
    /// The record, and its version for the next compare-and-swap (opaque: a resourceVersion, or the
    /// file's generation).
    Found {
        /// The version.
        version: String,
        /// The record.
        record: StateRecord,
    },
    /// A record that cannot be used (corrupt, or with fields this version does not know): why, and its
    /// version, so that the rebuild overwrites it.
    Unusable {
        /// The version.
        version: String,
        /// Why the content cannot be used.
        why: String,
    },
}

/// What a compare-and-swap write says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Saved {
    /// Written; the record's new version.
    Written(String),
    /// The record changed since it was read (another writer): read it again.
    Conflict,
}

/// The future of a [`Store`] request.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, Error>> + Send + 'a>>;

/// Where the record is kept: a file beside the lease file ([`StateFile`]), the ConfigMap beside the
/// Lease ([`StateConfigMap`]), or memory ([`MemoryStore`], for tests and benches). Every write is a
/// compare-and-swap on the version a read returned; the [`Ledger`] decides, retries and caches.
///
/// The futures are boxed so that the ledger holds any store as one `Box<dyn Store>`, chosen once at start,
/// and stays a single type that the runner, the dispatcher and `/status` share; one allocation per request
/// is nothing beside the fsync or the API request it waits for.
///
/// [`StateFile`]: crate::local::run_state::StateFile
/// [`StateConfigMap`]: crate::kubernetes::run_state::StateConfigMap
/// [`MemoryStore`]: memory::MemoryStore
pub trait Store: Send + Sync + std::fmt::Debug {
    /// For logs: `file PATH`, `configmap NS/NAME` or `memory`.
    fn describe(&self) -> String;

    /// Reads the record.
    fn load(&self) -> StoreFuture<'_, Loaded>;

    /// Writes `record` if the stored version is still `version` (`None`: if there is no record yet).
    fn save<'a>(
        &'a self,
        record: &'a StateRecord,
        version: Option<&'a str>,
    ) -> StoreFuture<'a, Saved>;

    /// True if a write takes long enough (an fsync, an API request) that scheduled slots are claimed
    /// ahead of their fire time ([`Ledger::claim_lead`]); false for a store that writes as fast as a claim
    /// inline costs nothing.
    fn claims_ahead(&self) -> bool {
        true
    }
}

/// Implements [`Store`] for a store type whose inherent `describe`, `load` and `save` have the trait's
/// shape with an error of its own, which the trait's methods box into [`Error::Store`]: the file store and
/// the ConfigMap store keep their typed API, and the ledger sees one trait.
macro_rules! store_from_inherent_methods {
    ($store:ty) => {
        impl $crate::run_state::Store for $store {
            fn describe(&self) -> String {
                <$store>::describe(self)
            }

            fn load(&self) -> $crate::run_state::StoreFuture<'_, $crate::run_state::Loaded> {
                Box::pin(async move {
                    <$store>::load(self)
                        .await
                        .map_err($crate::run_state::Error::store)
                })
            }

            fn save<'a>(
                &'a self,
                record: &'a $crate::run_state::StateRecord,
                version: Option<&'a str>,
            ) -> $crate::run_state::StoreFuture<'a, $crate::run_state::Saved> {
                Box::pin(async move {
                    <$store>::save(self, record, version)
                        .await
                        .map_err($crate::run_state::Error::store)
                })
            }
        }
    };
}
pub(crate) use store_from_inherent_methods;

/// What [`Ledger::claim`] decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// The slot is recorded as started under this term: start the run.
    Claimed,
    /// The slot (or a later one) is already recorded as started: do not start it again.
    AlreadyStarted {
        /// The recorded slot.
        slot: DateTime<Utc>,
        /// The token of the term that started it.
        fencing_token: u64,
    },
    /// A newer term has written the record: this term is stale and may not start anything.
    Stale {
        /// The record's token.
        record_token: u64,
    },
}

/// What [`Ledger::begin_term`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TermStart {
    /// The record is stamped with the term's token: older terms can no longer write it. It is the record
    /// as it stands now, for [`catch_up`].
    Begun(StateRecord),
    /// A newer term has already written the record: this term may write nothing, and owes nothing.
    Superseded {
        /// The record's token.
        record_token: u64,
    },
}

/// What a job is owed when a term begins.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CatchUp {
    /// The slot to run now: the latest one that fell due since the recorded start, if within
    /// `startingDeadline`, or an interrupted run's slot for a `rerunInterrupted` job.
    pub run: Option<DateTime<Utc>>,
    /// Slots that fell due since the recorded start and will not run (past `startingDeadline`, or older
    /// than the latest).
    pub missed: u64,
    /// The latest of the missed slots.
    pub latest_missed: Option<DateTime<Utc>>,
    /// True if `missed` stopped at [`MAX_COUNTED_MISSED`].
    pub missed_truncated: bool,
    /// True if `run` is a rerun of an interrupted run.
    pub rerun: bool,
}

/// What `job` is owed at `now`, given its record. A job without a record owes nothing (it was added, or the
/// record was rebuilt): only slots after its recorded start count.
///
/// Slots are nominal, but a job with a `jitter` is judged as its timer judges it: a slot is due once it
/// has *fired* (`slot + offset ≤ now`), and its lateness, checked against `startingDeadline`, is counted
/// from that fire time. So a slot whose fire time is still ahead is left to the timer (which fires it
/// under the new term), not run early here, and a jittered run is never counted late by its offset.
pub fn catch_up(job: &Job, record: Option<&JobRecord>, now: DateTime<Utc>) -> CatchUp {
    let now = now - chrono::Duration::from_std(job.jitter_offset()).unwrap_or_default();
    let mut owed = CatchUp::default();
    let Some(started) = record.and_then(|r| r.last_started.as_ref()) else {
        return owed;
    };
    let deadline = job.starting_deadline;
    let within_deadline =
        |slot: DateTime<Utc>| deadline.is_some_and(|deadline| lateness(slot, now) <= deadline);
    // Every slot in (recorded start, now]: the latest may run, the others are missed.
    let mut due = 0u64;
    let mut latest = None;
    let mut cursor = started.slot;
    while let Some(slot) = job.schedule.next_after(cursor).filter(|slot| *slot <= now) {
        if let Some(previous) = latest.replace(slot) {
            owed.latest_missed = Some(previous);
        }
        due += 1;
        cursor = slot;
        if due == MAX_COUNTED_MISSED && !owed.missed_truncated {
            owed.missed_truncated = true;
            // Counting stops; only a slot within the deadline can still run, so look from there.
            match deadline.and_then(|d| chrono::Duration::from_std(d).ok()) {
                Some(d) if now - d > cursor => {
                    cursor = now - d - chrono::Duration::nanoseconds(1);
                }
                Some(_) => {}
                None => break,
            }
        }
    }
    match latest {
        Some(latest) if within_deadline(latest) && !job.suspend => {
            owed.run = Some(latest);
            owed.missed = due.min(MAX_COUNTED_MISSED) - 1;
        }
        Some(latest) => {
            owed.missed = due.min(MAX_COUNTED_MISSED);
            owed.latest_missed = Some(latest);
        }
        None => {
            // Nothing fell due since the recorded start: was that run interrupted?
            let completed = record
                .and_then(|r| r.last_completion.as_ref())
                .is_some_and(|c| c.slot >= started.slot);
            if job.rerun_interrupted && !completed && within_deadline(started.slot) && !job.suspend
            {
                owed.run = Some(started.slot);
                owed.rerun = true;
            }
        }
    }
    owed
}

fn lateness(slot: DateTime<Utc>, now: DateTime<Utc>) -> Duration {
    (now - slot).to_std().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{self, LoadOptions};
    use chrono::TimeZone;

    fn job(extra: &str) -> Job {
        let yaml = format!(
            "jobs:\n  - name: j\n    schedule: \"*/10 * * * * *\"\n    shell: \"true\"\n{extra}"
        );
        let opts = LoadOptions {
            max_termination_grace: Duration::MAX,
        };
        let set = config::parse_str(&yaml, "test.yaml", &opts).expect("valid");
        (*set.jobs[0]).clone()
    }

    /// `job` under another name (the jitter offset depends on it).
    fn named(mut job: Job, name: &str) -> Job {
        job.name = name.to_owned();
        job
    }

    fn at(s: i64) -> DateTime<Utc> {
        // A multiple of 10 s: a slot of the */10 schedule.
        Utc.timestamp_opt(1_800_000_000 + s, 0)
            .single()
            .expect("valid")
    }

    fn started(slot: i64, completed: bool) -> JobRecord {
        JobRecord {
            last_started: Some(SlotStart {
                slot: at(slot),
                fencing_token: 1,
                identity: "old".to_owned(),
                started_at: at(slot),
            }),
            last_completion: completed.then(|| Completion {
                slot: at(slot),
                outcome: "succeeded".to_owned(),
                finished_at: at(slot + 1),
            }),
            last_success: None,
            history: Vec::new(),
        }
    }

    #[test]
    fn a_job_without_a_record_owes_nothing() {
        let owed = catch_up(&job("    startingDeadline: 1m\n"), None, at(100));
        assert_eq!(owed, CatchUp::default());
    }

    #[test]
    fn the_latest_due_slot_runs_within_the_deadline_and_older_ones_are_missed() {
        let job = job("    startingDeadline: 15s\n");
        // Started 10; slots 20, 30, 40 fell due; now 45: 40 is 5 s late.
        let owed = catch_up(&job, Some(&started(10, true)), at(45));
        assert_eq!(owed.run, Some(at(40)));
        assert_eq!(owed.missed, 2);
        assert_eq!(owed.latest_missed, Some(at(30)));
        assert!(!owed.rerun);
    }

    #[test]
    fn past_the_deadline_every_due_slot_is_missed() {
        let job = job("    startingDeadline: 3s\n");
        let owed = catch_up(&job, Some(&started(10, true)), at(45));
        assert_eq!(owed.run, None);
        assert_eq!(owed.missed, 3);
        assert_eq!(owed.latest_missed, Some(at(40)));
        let no_deadline = catch_up(&self::job(""), Some(&started(10, true)), at(45));
        assert_eq!((no_deadline.run, no_deadline.missed), (None, 3));
    }

    #[test]
    fn an_interrupted_run_reruns_only_when_the_job_asks_for_it() {
        let plain = job("    startingDeadline: 1m\n");
        assert_eq!(
            catch_up(&plain, Some(&started(10, false)), at(15)).run,
            None
        );
        let rerun = job("    startingDeadline: 1m\n    rerunInterrupted: true\n");
        let owed = catch_up(&rerun, Some(&started(10, false)), at(15));
        assert_eq!((owed.run, owed.rerun), (Some(at(10)), true));
        // A completed run is not rerun; nor is one past the deadline.
        assert_eq!(catch_up(&rerun, Some(&started(10, true)), at(15)).run, None);
        let short = job("    startingDeadline: 5s
    rerunInterrupted: true
");
        assert_eq!(
            catch_up(&short, Some(&started(10, false)), at(19)).run,
            None
        );
    }

    #[test]
    fn a_jittered_slot_is_due_at_its_fire_time_and_late_from_there() {
        // Slots every 10 s; the name `a` with a 9 s jitter fires each one 6.736 s after it.
        let job = named(job("    startingDeadline: 3s\n    jitter: 9s\n"), "a");
        assert_eq!(job.jitter_offset(), Duration::from_millis(6_736));
        let ms = |ms: i64| at(0) + chrono::Duration::milliseconds(ms);
        let record = started(10, true);
        // 20 is past, but fires at 26.736: not due yet, left to the timer (not run early here).
        let early = catch_up(&job, Some(&record), ms(26_000));
        assert_eq!((early.run, early.missed), (None, 0));
        // Just after its fire time: due and on time, though 6.8 s after the slot (over the deadline).
        let owed = catch_up(&job, Some(&record), ms(26_800));
        assert_eq!((owed.run, owed.missed), (Some(at(20)), 0));
        // 2.9 s after its fire time: within the 3 s deadline; 3.1 s: past it.
        assert_eq!(catch_up(&job, Some(&record), ms(29_636)).run, Some(at(20)));
        let late = catch_up(&job, Some(&record), ms(29_836));
        assert_eq!((late.run, late.missed), (None, 1));
        // Without the jitter, the same instants judge the nominal slot.
        let plain = named(self::job("    startingDeadline: 3s\n"), "a");
        assert_eq!(catch_up(&plain, Some(&record), ms(26_000)).missed, 1);
    }

    #[test]
    fn a_suspended_job_runs_nothing_and_counts_its_slots_as_missed() {
        let job = job("    startingDeadline: 1m\n    suspend: true\n");
        let owed = catch_up(&job, Some(&started(10, true)), at(45));
        assert_eq!((owed.run, owed.missed), (None, 3));
    }

    #[test]
    fn a_long_gap_is_counted_up_to_the_limit_and_the_latest_slot_still_runs() {
        let job = job("    startingDeadline: 15s\n");
        // A day of 10-second slots: 8640, below the limit.
        let day = catch_up(&job, Some(&started(0, true)), at(86_400 + 5));
        assert_eq!(
            (day.run, day.missed, day.missed_truncated),
            (Some(at(86_400)), 8639, false)
        );
        // Ten days: 86 400 slots, counted up to the limit.
        let long = catch_up(&job, Some(&started(0, true)), at(864_000 + 5));
        assert_eq!(long.run, Some(at(864_000)));
        assert!(long.missed_truncated);
        assert_eq!(long.missed, MAX_COUNTED_MISSED - 1);
    }
}
