//! Kubernetes Events about the Lease: leadership acquired and lost (as client-go's "became leader"), runs
//! that failed, timed out or were cancelled, missed start deadlines and failed config reloads.
//!
//! # Never in the way
//!
//! An [`EventSink`] only puts a draft on a bounded queue ([`QUEUE_CAPACITY`]); when the queue is full the
//! draft is dropped and counted ([`EventSink::dropped`]). One background task writes the Events through
//! kube's [`Recorder`] (`events.k8s.io/v1`), each write bounded by [`API_TIMEOUT`].
//!
//! # Aggregation and rate limits
//!
//! Drafts are keyed by (reason, job). A key is written at most once per [`KEY_INTERVAL`]; the repeats in
//! between are folded into the next write, whose note says how many there were and carries the latest
//! detail. A global token bucket ([`GLOBAL_BURST`], one token per [`GLOBAL_REFILL`]) caps the writes of all
//! keys together; a key without a token stays folded until one comes. So a job failing every second costs
//! one API write per minute, and many failing jobs at most [`GLOBAL_BURST`] writes at once.
//!
//! The numbers above are the defaults of [`Limits`] ([`EventSink::with_limits`]).
//!
//! We aggregate ourselves instead of relying on the recorder's series: the recorder's series keeps the
//! note of the first Event and counts publishes, not occurrences, so a folded count would be lost. Each
//! write therefore uses a fresh [`Recorder`] and creates a self-describing Event.
//!
//! # Errors
//!
//! A 403 (no RBAC for events) or 404 (no `events.k8s.io` API) is logged once as a warning and turns the
//! sink off for good; other errors and timeouts are logged at most once per [`ERROR_LOG_INTERVAL`]. None
//! of them reaches the caller.
//!
//! # Layout
//!
//! This module maps what happened to Events: the [`Observer`] impl of [`EventSink`] is the way in, and
//! says which Event (type, reason, action, note) a leadership change, a run, a missed slot or a failed
//! reload becomes. `publisher` holds the queue and the task that writes them, and the limiters are
//! `crate::rate_limit`'s.
//!
//! [`Recorder`]: kube::runtime::events::Recorder

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{EventType, Reporter};

use crate::event::{
    ClusterAction, ConfigReload, DispatchEvent, ElectionEvent, LossReason, Outcome, RunEvent,
    RunReport, SkipReason,
};
use crate::kubernetes::names::MAX_SUBDOMAIN_LEN;
use crate::observe::Observer;
use crate::rate_limit::Folded;
use crate::run_state::{RequestKind, RequestState};

mod publisher;

/// The `reportingController` of every Event.
pub(crate) const REPORTING_CONTROLLER: &str = "leasecron";
/// Default [`Limits::queue_capacity`].
pub const QUEUE_CAPACITY: usize = 256;
/// Default [`Limits::key_interval`].
pub const KEY_INTERVAL: Duration = Duration::from_secs(60);
/// Default [`Limits::burst`].
pub const GLOBAL_BURST: u32 = 10;
/// Default [`Limits::refill`]: 10 writes a minute, sustained.
pub const GLOBAL_REFILL: Duration = Duration::from_secs(6);
/// Default [`Limits::api_timeout`].
pub const API_TIMEOUT: Duration = Duration::from_secs(5);
/// The shortest time between two log lines about failed writes or dropped drafts.
pub const ERROR_LOG_INTERVAL: Duration = Duration::from_secs(60);
/// The longest note the API server accepts (`events.k8s.io/v1`: 1 kB).
const MAX_NOTE_BYTES: usize = 1024;
/// The shortest [`Limits::refill`] accepted (a zero period would mean no limit).
const MIN_REFILL: Duration = Duration::from_millis(1);

/// How much the sink queues and writes. [`Limits::default`] uses the `const`s of this module.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// How many drafts wait for the publisher before new ones are dropped (at least 1).
    pub queue_capacity: usize,
    /// The shortest time between two writes of one (reason, job) key; repeats in between are folded.
    pub key_interval: Duration,
    /// How many writes the global token bucket allows at once, all keys together (at least 1).
    pub burst: u32,
    /// How often the global token bucket gains a token (at least 1 ms).
    pub refill: Duration,
    /// The limit of one API write.
    pub api_timeout: Duration,
}

/// Writes Kubernetes Events about the Lease without ever blocking or failing its caller. Cheap to clone;
/// the publisher task ends (after writing what is folded) when the last clone is dropped.
#[derive(Clone)]
pub struct EventSink {
    inner: Option<Arc<Inner>>,
}

/// What the clones of an enabled sink share.
struct Inner {
    queue: publisher::Queue,
    identity: String,
}

/// An Event before aggregation.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Draft {
    type_: EventType,
    reason: &'static str,
    action: &'static str,
    /// The job the Event is about, if any: part of the aggregation key.
    job: Option<String>,
    note: String,
}

/// The aggregation key: (reason, job).
type Key = (&'static str, Option<String>);

impl Draft {
    /// The key whose repeats fold into one write.
    fn key(&self) -> Key {
        (self.reason, self.job.clone())
    }
}

/// One API write: the latest draft of a key and how many occurrences it stands for.
type Write = Folded<Draft>;

// === impl EventSink ===

impl EventSink {
    /// Events about the Lease `namespace/lease_name` (created in that namespace), reported as
    /// `reportingController = "leasecron"`, `reportingInstance = identity`, with [`Limits::default`].
    /// Spawns the publisher task; a sink made outside a Tokio runtime records nothing (and says so in the
    /// log).
    pub fn new(
        client: kube::Client,
        namespace: &str,
        lease_name: &str,
        identity: &str,
    ) -> EventSink {
        EventSink::with_limits(client, namespace, lease_name, identity, Limits::default())
    }

    /// [`EventSink::new`] with other [`Limits`] (out-of-range fields are raised to their minimum).
    pub fn with_limits(
        client: kube::Client,
        namespace: &str,
        lease_name: &str,
        identity: &str,
        limits: Limits,
    ) -> EventSink {
        let limits = limits.normalized();
        if lease_name.len() > MAX_LEASE_NAME_FOR_EVENTS {
            tracing::warn!(
                lease = lease_name,
                "Kubernetes Events disabled: an Event about the Lease is named after it plus 17 \
                 characters, and a Lease name over {MAX_LEASE_NAME_FOR_EVENTS} characters would make \
                 that name longer than the API server accepts (253)"
            );
            return EventSink::disabled();
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::warn!(
                "Kubernetes Events disabled: the event sink was made outside a Tokio runtime"
            );
            return EventSink::disabled();
        };
        let reporter = Reporter {
            controller: REPORTING_CONTROLLER.to_owned(),
            instance: Some(reporting_instance(identity)),
        };
        let regarding = lease_reference(namespace, lease_name);
        let queue = publisher::spawn(&runtime, client, reporter, regarding, limits);
        EventSink {
            inner: Some(Arc::new(Inner {
                queue,
                identity: identity.to_owned(),
            })),
        }
    }

    /// A sink that records nothing (file lease: no cluster).
    pub fn disabled() -> EventSink {
        EventSink { inner: None }
    }

    /// True if this sink may still write Events: not [`EventSink::disabled`], and the API has not refused.
    pub fn is_enabled(&self) -> bool {
        self.inner
            .as_ref()
            .is_some_and(|inner| !inner.queue.is_disabled())
    }

    /// How many drafts were dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.inner.as_ref().map_or(0, |inner| inner.queue.dropped())
    }

    /// Waits until everything sent before is written, folded repeats included (ignoring
    /// [`Limits::key_interval`]): for shutdown and tests. Waits for room in the queue, so bound it with a timeout.
    pub async fn flush(&self) {
        if let Some(inner) = &self.inner {
            inner.queue.flush().await;
        }
    }

    /// Queues the draft `event` maps to, if any, unless nothing is to be recorded. `event` is given this
    /// replica's identity.
    fn record(&self, event: impl FnOnce(&str) -> Option<Draft>) {
        let Some(inner) = &self.inner else {
            return;
        };
        if inner.queue.is_disabled() {
            return;
        }
        if let Some(draft) = event(&inner.identity) {
            inner.queue.send(draft);
        }
    }
}

impl std::fmt::Debug for EventSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventSink")
            .field("enabled", &self.is_enabled())
            .field("dropped", &self.dropped())
            .finish()
    }
}

/// The longest `reportingInstance` the API server accepts on an events.k8s.io/v1 Event.
const MAX_REPORTING_INSTANCE: usize = 128;
/// The longest Lease name Events can be written about: kube's `Recorder` names each Event
/// `<lease>.<16 hex digits>`, and an object name has at most 253 characters.
pub const MAX_LEASE_NAME_FOR_EVENTS: usize = MAX_SUBDOMAIN_LEN - ".0123456789abcdef".len();

/// `identity` as an Event's `reportingInstance`: unchanged if it fits in
/// [`MAX_REPORTING_INSTANCE`] characters, else its start and its end (where a pod name's unique suffix
/// is) joined by `...`.
fn reporting_instance(identity: &str) -> String {
    let chars: Vec<char> = identity.chars().collect();
    if chars.len() <= MAX_REPORTING_INSTANCE {
        return identity.to_owned();
    }
    const TAIL: usize = 32;
    let head = MAX_REPORTING_INSTANCE - TAIL - 3;
    let start: String = chars[..head].iter().collect();
    let end: String = chars[chars.len() - TAIL..].iter().collect();
    format!("{start}...{end}")
}

/// The Lease as the Events' `regarding` object (no uid: the Lease may not exist yet).
fn lease_reference(namespace: &str, lease_name: &str) -> ObjectReference {
    ObjectReference {
        api_version: Some("coordination.k8s.io/v1".to_owned()),
        kind: Some("Lease".to_owned()),
        namespace: Some(namespace.to_owned()),
        name: Some(lease_name.to_owned()),
        ..ObjectReference::default()
    }
}

fn loss_explanation(reason: LossReason) -> &'static str {
    match reason {
        LossReason::RenewDeadline => {
            "no renew succeeded within the renew deadline (renew_deadline)"
        }
        LossReason::LeaseTaken => "another replica took the lease, or it was deleted (lease_taken)",
        LossReason::Shutdown => "shutting down (shutdown)",
        LossReason::StoreError => {
            "the lease store failed in a way retrying cannot fix (store_error)"
        }
    }
}

fn run_note(identity: &str, report: &RunReport) -> String {
    let plural = if report.attempts == 1 { "" } else { "s" };
    format!(
        "job {}: the run scheduled at {} {} after {} attempt{plural} ({}) on {identity}",
        report.job,
        timestamp(report.scheduled),
        report.outcome,
        report.attempts,
        humantime::format_duration(Duration::from_millis(
            u64::try_from(report.duration.as_millis()).unwrap_or(u64::MAX)
        )),
    )
}

fn timestamp(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// The note of a write: the draft's, prefixed with the count of folded occurrences, cut to the API's limit.
fn note(write: &Write) -> String {
    let note = if write.count > 1 {
        format!(
            "{} times since the last report; latest: {}",
            write.count, write.item.note
        )
    } else {
        write.item.note.clone()
    };
    truncate(note, MAX_NOTE_BYTES)
}

fn truncate(mut text: String, max_bytes: usize) -> String {
    if text.len() > max_bytes {
        let mut end = max_bytes;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

// === impl Limits ===

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            queue_capacity: QUEUE_CAPACITY,
            key_interval: KEY_INTERVAL,
            burst: GLOBAL_BURST,
            refill: GLOBAL_REFILL,
            api_timeout: API_TIMEOUT,
        }
    }
}

impl Limits {
    /// Raises the fields that would panic or stop every write to their minimum.
    fn normalized(self) -> Limits {
        Limits {
            queue_capacity: self.queue_capacity.max(1),
            burst: self.burst.max(1),
            refill: self.refill.max(MIN_REFILL),
            ..self
        }
    }
}

// === impl Observer for EventSink ===

/// The way in: each event becomes at most one draft (see the mapping functions below), queued without
/// waiting.
impl Observer for EventSink {
    fn on_run(&self, event: &RunEvent) {
        self.record(|identity| run_draft(identity, event));
    }

    fn on_election(&self, event: &ElectionEvent) {
        self.record(|identity| election_draft(identity, event));
    }

    fn on_dispatch(&self, event: &DispatchEvent) {
        self.record(|identity| dispatch_draft(identity, event));
    }

    fn on_config_reload(&self, reload: &ConfigReload) {
        self.record(|identity| config_reload_draft(identity, reload));
    }
}

// === the mapping ===

/// `Acquired`: Normal `LeaderElection` "ID became leader (fencing token N)". `Lost`: Warning
/// `LeadershipLost` with the reason (Normal on shutdown, which is no trouble). `TokenRegression`:
/// Warning `FencingTokenRegression`. Others: nothing.
fn election_draft(identity: &str, event: &ElectionEvent) -> Option<Draft> {
    match event {
        ElectionEvent::Acquired { token } => Some(Draft {
            type_: EventType::Normal,
            reason: "LeaderElection",
            action: "AcquireLease",
            job: None,
            note: format!("{identity} became leader (fencing token {token})"),
        }),
        ElectionEvent::Lost { token, reason } => Some(Draft {
            type_: match reason {
                LossReason::Shutdown => EventType::Normal,
                _ => EventType::Warning,
            },
            reason: "LeadershipLost",
            action: "RenewLease",
            job: None,
            note: format!(
                "{identity} lost leadership (fencing token {token}): {}",
                loss_explanation(*reason)
            ),
        }),
        ElectionEvent::TokenRegression {
            highest_seen,
            durable,
        } => Some(Draft {
            type_: EventType::Warning,
            reason: "FencingTokenRegression",
            action: "AcquireLease",
            job: None,
            note: format!(
                "{identity}: the fencing tokens of the Lease and the run state went backwards from \
                 {highest_seen} to {durable} (deleted or rewritten); {identity}'s terms continue above \
                 {highest_seen}"
            ),
        }),
        _ => None,
    }
}

/// A run that failed, timed out or was cancelled: Warning `JobFailed`, `JobTimedOut` or
/// `JobCancelled`, naming the job, its scheduled time, attempts and detail. A Kubernetes Job an earlier
/// term created and this one adopted: Normal `JobAdopted`. Others: nothing.
fn run_draft(identity: &str, event: &RunEvent) -> Option<Draft> {
    if let RunEvent::Cluster {
        job,
        scheduled,
        name,
        action: ClusterAction::Adopted { created_by },
    } = event
    {
        return Some(Draft {
            type_: EventType::Normal,
            reason: "JobAdopted",
            action: "AdoptJob",
            job: Some(job.clone()),
            note: format!(
                "{identity} adopted Kubernetes Job {name} of job {job} (slot {}), created under fencing \
                 token {created_by}: it follows the Job to its end",
                crate::logging::rfc3339(scheduled)
            ),
        });
    }
    let RunEvent::Finished(report) = event else {
        return None;
    };
    let reason = match report.outcome {
        Outcome::Succeeded => return None,
        Outcome::Failed(_) => "JobFailed",
        Outcome::TimedOut => "JobTimedOut",
        Outcome::Cancelled => "JobCancelled",
    };
    Some(Draft {
        type_: EventType::Warning,
        reason,
        action: "RunJob",
        job: Some(report.job.clone()),
        note: run_note(identity, report),
    })
}

/// Only the leader's missed slots are news (a follower's timers skip every slot), both Warning
/// `JobMissedDeadline`: a run that did not start within its deadline, and slots that fell due while no
/// replica led and will not run. Others: nothing.
fn dispatch_draft(identity: &str, event: &DispatchEvent) -> Option<Draft> {
    if let DispatchEvent::Request { .. } = event {
        return request_draft(identity, event);
    }
    let (job, note) = match event {
        DispatchEvent::Skipped {
            job,
            scheduled,
            reason: SkipReason::MissedDeadline,
            leader: true,
        } => (
            job,
            format!(
                "job {job}: the run scheduled at {} missed its start deadline on {identity}",
                timestamp(*scheduled)
            ),
        ),
        DispatchEvent::MissedSlots {
            job, count, latest, ..
        } => {
            let latest = latest.map_or_else(String::new, |at| {
                format!(", the latest at {}", timestamp(at))
            });
            (
                job,
                format!(
                    "job {job}: {count} scheduled run(s) fell due while no replica led and were skipped{latest}; {identity} took over"
                ),
            )
        }
        _ => return None,
    };
    Some(Draft {
        type_: EventType::Warning,
        reason: "JobMissedDeadline",
        action: "StartJob",
        job: Some(job.clone()),
        note,
    })
}

/// An operator's request that the leader carried out or refused: Normal `JobTriggered`, `BackfillDone`,
/// `JobSuspended`, `JobResumed`, or Warning `RequestRefused` with the reason.
fn request_draft(identity: &str, event: &DispatchEvent) -> Option<Draft> {
    let DispatchEvent::Request {
        job,
        id,
        kind,
        by,
        state,
        detail,
        note,
    } = event
    else {
        return None;
    };
    let action = match kind {
        RequestKind::Trigger => "Trigger",
        RequestKind::Backfill => "Backfill",
        RequestKind::Suspend => "Suspend",
        RequestKind::Resume => "Resume",
    };
    let detail = detail
        .as_deref()
        .map_or_else(String::new, |d| format!(": {d}"));
    let (type_, reason, note) = match (state, kind) {
        (RequestState::Refused, _) => (
            EventType::Warning,
            "RequestRefused",
            format!("job {job}: {} request {id} by {by} not carried out by {identity}{detail}", kind.as_str()),
        ),
        (_, RequestKind::Trigger) => (
            EventType::Normal,
            "JobTriggered",
            format!("job {job}: run triggered by {by} (request {id}) ran on {identity}{detail}"),
        ),
        (_, RequestKind::Backfill) => (
            EventType::Normal,
            "BackfillDone",
            format!("job {job}: backfill by {by} (request {id}) done on {identity}{detail}"),
        ),
        (_, RequestKind::Suspend) => (
            EventType::Normal,
            "JobSuspended",
            match note {
                Some(note) => format!("job {job}: suspended by {by} (request {id}): {note}"),
                None => format!("job {job}: suspended by {by} (request {id})"),
            },
        ),
        (_, RequestKind::Resume) => (
            EventType::Normal,
            "JobResumed",
            format!("job {job}: resumed by {by} (request {id}); the slots missed while suspended are not run unless backfilled"),
        ),
    };
    Some(Draft {
        type_,
        reason,
        action,
        job: Some(job.clone()),
        note,
    })
}

/// A config reload that failed: Warning `ConfigReloadFailed` with its message. Others: nothing.
fn config_reload_draft(identity: &str, reload: &ConfigReload) -> Option<Draft> {
    let ConfigReload::Failed { message, .. } = reload else {
        return None;
    };
    Some(Draft {
        type_: EventType::Warning,
        reason: "ConfigReloadFailed",
        action: "ReloadConfig",
        job: None,
        note: format!("{identity} kept its previous jobs: {message}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Failure;
    use crate::rate_limit::Throttle;
    use crate::term::FencingToken;
    use tokio::time::Instant;

    fn draft(reason: &'static str, job: &str, note: &str) -> Draft {
        Draft {
            type_: EventType::Warning,
            reason,
            action: "RunJob",
            job: Some(job.to_owned()),
            note: note.to_owned(),
        }
    }

    fn throttle(now: Instant, limits: &Limits) -> Throttle<Key, Draft> {
        Throttle::new(now, limits.key_interval, limits.burst, limits.refill)
    }

    fn offer(throttle: &mut Throttle<Key, Draft>, draft: Draft, now: Instant) -> Option<Write> {
        throttle.offer(draft.key(), draft, now)
    }

    #[test]
    fn a_long_identity_is_shortened_to_what_an_event_accepts_keeping_both_ends() {
        assert_eq!(reporting_instance("r1"), "r1");
        let fits = "a".repeat(MAX_REPORTING_INSTANCE);
        assert_eq!(reporting_instance(&fits), fits);
        let pod = format!("{}-7d4f9c8b5-x2x9q", "d".repeat(230));
        let short = reporting_instance(&pod);
        assert_eq!(short.chars().count(), MAX_REPORTING_INSTANCE);
        assert!(short.starts_with("ddd"), "{short}");
        assert!(short.ends_with("-7d4f9c8b5-x2x9q"), "{short}");
        let wide = "é".repeat(200);
        assert_eq!(
            reporting_instance(&wide).chars().count(),
            MAX_REPORTING_INSTANCE
        );
    }

    #[test]
    fn the_longest_lease_name_leaves_room_for_the_event_name_suffix() {
        assert_eq!(MAX_LEASE_NAME_FOR_EVENTS, 236);
    }

    #[test]
    fn keys_differ_by_job_and_by_reason() {
        let t0 = Instant::now();
        let mut throttle = throttle(t0, &Limits::default());
        assert!(offer(&mut throttle, draft("JobFailed", "a", "n"), t0).is_some());
        assert!(offer(&mut throttle, draft("JobFailed", "b", "n"), t0).is_some());
        assert!(offer(&mut throttle, draft("JobTimedOut", "a", "n"), t0).is_some());
        assert!(offer(&mut throttle, draft("JobFailed", "a", "n"), t0).is_none());
    }

    #[test]
    fn a_folded_note_carries_the_count_and_is_cut_to_the_api_limit() {
        let write = Write {
            item: draft("JobFailed", "a", "exit code 3"),
            count: 7,
        };
        assert_eq!(
            note(&write),
            "7 times since the last report; latest: exit code 3"
        );
        let long = Write {
            item: draft("JobFailed", "a", &"é".repeat(MAX_NOTE_BYTES)),
            count: 1,
        };
        let cut = note(&long);
        assert!(cut.len() <= MAX_NOTE_BYTES && cut.len() > MAX_NOTE_BYTES - 2);
    }

    #[test]
    fn a_run_note_names_job_slot_outcome_attempts_and_replica() {
        let scheduled = DateTime::parse_from_rfc3339("2026-01-02T03:04:00Z")
            .map(|t| t.with_timezone(&Utc))
            .expect("a timestamp");
        let report = RunReport {
            job: "backup".to_owned(),
            scheduled,
            attempts: 2,
            outcome: Outcome::Failed(Failure::ExitCode(3)),
            started_at: scheduled,
            duration: Duration::from_millis(1500),
            start_delay: Duration::ZERO,
            fencing_token: 1,
            leftover_processes_killed: 0,
        };
        assert_eq!(
            run_note("pod-a", &report),
            "job backup: the run scheduled at 2026-01-02T03:04:00Z failed (exit code 3) after 2 \
             attempts (1s 500ms) on pod-a"
        );
    }

    #[test]
    fn only_the_leaders_missed_slots_are_events() {
        let scheduled = DateTime::parse_from_rfc3339("2026-01-02T03:04:00Z")
            .map(|t| t.with_timezone(&Utc))
            .expect("a timestamp");
        let skipped = |reason, leader| DispatchEvent::Skipped {
            job: "backup".to_owned(),
            scheduled,
            reason,
            leader,
        };
        let missed =
            dispatch_draft("pod-a", &skipped(SkipReason::MissedDeadline, true)).expect("an Event");
        assert_eq!(missed.reason, "JobMissedDeadline");
        assert_eq!(missed.job.as_deref(), Some("backup"));
        assert_eq!(
            missed.note,
            "job backup: the run scheduled at 2026-01-02T03:04:00Z missed its start deadline on pod-a"
        );
        assert_eq!(
            dispatch_draft("pod-a", &skipped(SkipReason::MissedDeadline, false)),
            None
        );
        assert_eq!(
            dispatch_draft("pod-a", &skipped(SkipReason::Suspended, true)),
            None
        );
    }

    #[test]
    fn limits_that_would_panic_or_block_every_write_are_raised() {
        let zero = Limits {
            queue_capacity: 0,
            key_interval: Duration::ZERO,
            burst: 0,
            refill: Duration::ZERO,
            api_timeout: Duration::ZERO,
        };
        let normalized = zero.normalized();
        assert_eq!(normalized.queue_capacity, 1);
        assert_eq!(normalized.burst, 1);
        assert_eq!(normalized.refill, MIN_REFILL);
        let t0 = Instant::now();
        let mut throttle = throttle(t0, &normalized);
        assert!(offer(&mut throttle, draft("JobFailed", "a", "1"), t0).is_some());
        assert!(offer(&mut throttle, draft("JobFailed", "b", "1"), t0).is_none());
        assert_eq!(throttle.due(t0 + MIN_REFILL).len(), 1);
    }

    #[tokio::test]
    async fn a_disabled_sink_accepts_everything_and_records_nothing() {
        let sink = EventSink::disabled();
        sink.on_election(&ElectionEvent::Acquired {
            token: FencingToken(1),
        });
        sink.on_dispatch(&DispatchEvent::Skipped {
            job: "a".to_owned(),
            scheduled: Utc::now(),
            reason: SkipReason::MissedDeadline,
            leader: true,
        });
        sink.on_config_reload(&ConfigReload::Failed {
            origin: "jobs.yaml".to_owned(),
            message: "bad".to_owned(),
        });
        sink.flush().await;
        assert!(!sink.is_enabled());
        assert_eq!(sink.dropped(), 0);
    }
}
