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

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::event::{
    ConfigReload, DispatchEvent, ElectionEvent, LossReason, Outcome, RunEvent, RunReport,
    SkipReason,
};
use crate::observe::Observer;

/// The `reportingController` of every Event.
pub const REPORTING_CONTROLLER: &str = "leasecron";
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
/// HTTP 403: the service account may not create events.
const FORBIDDEN: u16 = 403;
/// HTTP 404: no `events.k8s.io/v1` API (or no such namespace).
const NOT_FOUND: u16 = 404;

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
    queue: mpsc::Sender<Message>,
    identity: String,
    shared: Arc<Shared>,
}

/// What the sinks and the publisher task share.
#[derive(Default)]
struct Shared {
    /// Drafts dropped because the queue was full.
    dropped: AtomicU64,
    /// Set when the API refused events for good (403/404).
    disabled: AtomicBool,
}

/// What goes through the queue.
enum Message {
    Draft(Draft),
    /// Write everything folded now, then answer.
    Flush(oneshot::Sender<()>),
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

/// One API write: the latest draft of a key and how many occurrences it stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Write {
    draft: Draft,
    count: u32,
}

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
        let (queue, drafts) = mpsc::channel(limits.queue_capacity);
        let shared = Arc::new(Shared::default());
        let publisher = Publisher {
            client,
            reporter: Reporter {
                controller: REPORTING_CONTROLLER.to_owned(),
                instance: Some(reporting_instance(identity)),
            },
            regarding: lease_reference(namespace, lease_name),
            shared: Arc::clone(&shared),
            errors: LogLimiter::default(),
            drops: LogLimiter::default(),
            dropped_seen: 0,
            limits,
        };
        runtime.spawn(publisher.run(drafts));
        EventSink {
            inner: Some(Arc::new(Inner {
                queue,
                identity: identity.to_owned(),
                shared,
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
            .is_some_and(|inner| !inner.shared.disabled.load(Ordering::Relaxed))
    }

    /// How many drafts were dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.inner
            .as_ref()
            .map_or(0, |inner| inner.shared.dropped.load(Ordering::Relaxed))
    }

    /// `Acquired`: Normal `LeaderElection` "ID became leader (fencing token N)". `Lost`: Warning
    /// `LeadershipLost` with the reason (Normal on shutdown, which is no trouble). `TokenRegression`:
    /// Warning `FencingTokenRegression`. Others: nothing.
    pub fn on_election(&self, event: &ElectionEvent) {
        let Some(identity) = self.identity() else {
            return;
        };
        match event {
            ElectionEvent::Acquired { token } => self.send(Draft {
                type_: EventType::Normal,
                reason: "LeaderElection",
                action: "AcquireLease",
                job: None,
                note: format!("{identity} became leader (fencing token {token})"),
            }),
            ElectionEvent::Lost { token, reason } => self.send(Draft {
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
            } => self.send(Draft {
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
            _ => {}
        }
    }

    /// A run that failed, timed out or was cancelled: Warning `JobFailed`, `JobTimedOut` or
    /// `JobCancelled`, naming the job, its scheduled time, attempts and detail. Others: nothing.
    pub fn on_run(&self, event: &RunEvent) {
        let RunEvent::Finished(report) = event else {
            return;
        };
        let reason = match report.outcome {
            Outcome::Succeeded => return,
            Outcome::Failed(_) => "JobFailed",
            Outcome::TimedOut => "JobTimedOut",
            Outcome::Cancelled => "JobCancelled",
        };
        let Some(identity) = self.identity() else {
            return;
        };
        self.send(Draft {
            type_: EventType::Warning,
            reason,
            action: "RunJob",
            job: Some(report.job.clone()),
            note: run_note(identity, report),
        });
    }

    /// A run that did not start within its deadline: Warning `JobMissedDeadline`.
    pub fn on_missed(&self, job: &str, scheduled: DateTime<Utc>) {
        let Some(identity) = self.identity() else {
            return;
        };
        self.send(Draft {
            type_: EventType::Warning,
            reason: "JobMissedDeadline",
            action: "StartJob",
            job: Some(job.to_owned()),
            note: format!(
                "job {job}: the run scheduled at {} missed its start deadline on {identity}",
                timestamp(scheduled)
            ),
        });
    }

    /// Slots that fell due while no replica led and will not run: Warning `JobMissedDeadline`.
    pub fn on_missed_slots(&self, job: &str, count: u64, latest: Option<DateTime<Utc>>) {
        let Some(identity) = self.identity() else {
            return;
        };
        let latest = latest.map_or_else(String::new, |at| {
            format!(", the latest at {}", timestamp(at))
        });
        self.send(Draft {
            type_: EventType::Warning,
            reason: "JobMissedDeadline",
            action: "StartJob",
            job: Some(job.to_owned()),
            note: format!(
                "job {job}: {count} scheduled run(s) fell due while no replica led and were skipped{latest}; {identity} took over"
            ),
        });
    }

    /// A config reload that failed: Warning `ConfigReloadFailed` with `message`.
    pub fn on_config_reload_failed(&self, message: &str) {
        let Some(identity) = self.identity() else {
            return;
        };
        self.send(Draft {
            type_: EventType::Warning,
            reason: "ConfigReloadFailed",
            action: "ReloadConfig",
            job: None,
            note: format!("{identity} kept its previous jobs: {message}"),
        });
    }

    /// Waits until everything sent before is written, folded repeats included (ignoring
    /// [`Limits::key_interval`]): for shutdown and tests. Waits for room in the queue, so bound it with a timeout.
    pub async fn flush(&self) {
        let Some(inner) = &self.inner else {
            return;
        };
        let (done, written) = oneshot::channel();
        if inner.queue.send(Message::Flush(done)).await.is_ok() {
            // An error means the publisher is gone: nothing is left to wait for.
            let _ = written.await;
        }
    }

    /// This replica's identity, or `None` when nothing is to be recorded.
    fn identity(&self) -> Option<&str> {
        self.inner
            .as_deref()
            .filter(|inner| !inner.shared.disabled.load(Ordering::Relaxed))
            .map(|inner| inner.identity.as_str())
    }

    fn send(&self, draft: Draft) {
        let Some(inner) = &self.inner else {
            return;
        };
        if inner.queue.try_send(Message::Draft(draft)).is_err() {
            inner.shared.dropped.fetch_add(1, Ordering::Relaxed);
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

/// The Lease as the Events' `regarding` object (no uid: the Lease may not exist yet).
/// The longest `reportingInstance` the API server accepts on an events.k8s.io/v1 Event.
const MAX_REPORTING_INSTANCE: usize = 128;
/// The longest Lease name Events can be written about: kube's `Recorder` names each Event
/// `<lease>.<16 hex digits>`, and an object name has at most 253 characters.
pub const MAX_LEASE_NAME_FOR_EVENTS: usize = 253 - 17;

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
            write.count, write.draft.note
        )
    } else {
        write.draft.note.clone()
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

// === impl Publisher ===

/// The background task: aggregates drafts and writes them.
struct Publisher {
    client: kube::Client,
    reporter: Reporter,
    regarding: ObjectReference,
    shared: Arc<Shared>,
    errors: LogLimiter,
    drops: LogLimiter,
    dropped_seen: u64,
    limits: Limits,
}

impl Publisher {
    async fn run(mut self, mut drafts: mpsc::Receiver<Message>) {
        let mut throttle = Throttle::new(Instant::now(), &self.limits);
        loop {
            let wake = throttle.next_due();
            let message = tokio::select! {
                message = drafts.recv() => message,
                () = sleep_until(wake), if wake.is_some() => {
                    self.write_all(throttle.due(Instant::now())).await;
                    continue;
                }
            };
            self.report_drops();
            match message {
                Some(Message::Draft(draft)) => {
                    if let Some(write) = throttle.offer(draft, Instant::now()) {
                        self.write(write).await;
                    }
                }
                Some(Message::Flush(done)) => {
                    self.write_all(throttle.drain()).await;
                    let _ = done.send(());
                }
                None => {
                    self.write_all(throttle.drain()).await;
                    return;
                }
            }
        }
    }

    async fn write_all(&mut self, writes: Vec<Write>) {
        for write in writes {
            self.write(write).await;
        }
    }

    async fn write(&mut self, write: Write) {
        if self.shared.disabled.load(Ordering::Relaxed) {
            return;
        }
        let event = Event {
            type_: write.draft.type_,
            reason: write.draft.reason.to_owned(),
            note: Some(note(&write)),
            action: write.draft.action.to_owned(),
            secondary: None,
        };
        let recorder = Recorder::new(self.client.clone(), self.reporter.clone());
        let timeout = self.limits.api_timeout;
        match tokio::time::timeout(timeout, recorder.publish(&event, &self.regarding)).await {
            Ok(Ok(())) => {}
            Ok(Err(kube::Error::Api(status)))
                if status.code == FORBIDDEN || status.code == NOT_FOUND =>
            {
                self.shared.disabled.store(true, Ordering::Relaxed);
                tracing::warn!(
                    namespace = self.regarding.namespace.as_deref().unwrap_or_default(),
                    code = status.code,
                    "Kubernetes Events disabled: the API server refused to create events.k8s.io \
                     events ({}); grant `create` on `events` in the `events.k8s.io` group to record \
                     them. The runner is not affected.",
                    status.message
                );
            }
            Ok(Err(error)) => self.log_error(&error.to_string(), write.draft.reason),
            Err(_) => self.log_error(
                &format!("timed out after {}", humantime::format_duration(timeout)),
                write.draft.reason,
            ),
        }
    }

    fn log_error(&mut self, error: &str, reason: &str) {
        if let Some(suppressed) = self.errors.allow(Instant::now()) {
            tracing::warn!(
                reason,
                suppressed,
                "could not write a Kubernetes Event: {error} (the event is dropped; further errors \
                 are logged at most once a minute)"
            );
        }
    }

    fn report_drops(&mut self) {
        let dropped = self.shared.dropped.load(Ordering::Relaxed);
        if dropped > self.dropped_seen && self.drops.allow(Instant::now()).is_some() {
            tracing::warn!(
                dropped = dropped - self.dropped_seen,
                "Kubernetes Events dropped: the event queue ({}) was full",
                self.limits.queue_capacity
            );
            self.dropped_seen = dropped;
        }
    }
}

async fn sleep_until(wake: Option<Instant>) {
    if let Some(wake) = wake {
        tokio::time::sleep_until(wake).await;
    }
}

// === impl LogLimiter ===

/// Allows one log line per [`ERROR_LOG_INTERVAL`] and counts the ones it suppressed.
#[derive(Debug, Default)]
struct LogLimiter {
    last: Option<Instant>,
    suppressed: u64,
}

impl LogLimiter {
    /// `Some(suppressed since the last line)` if a line may be logged now.
    fn allow(&mut self, now: Instant) -> Option<u64> {
        if self
            .last
            .is_some_and(|last| now < last + ERROR_LOG_INTERVAL)
        {
            self.suppressed += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.suppressed))
    }
}

// === impl Throttle ===

/// Per-key intervals and folding, under a global token bucket. Pure: time is passed in.
#[derive(Debug)]
struct Throttle {
    keys: HashMap<Key, KeyState>,
    bucket: TokenBucket,
    key_interval: Duration,
}

/// One key's last write and what was folded since.
#[derive(Debug, Default)]
struct KeyState {
    last_write: Option<Instant>,
    pending: Option<Write>,
}

impl KeyState {
    /// When the key may be written again (`None`: never written, open).
    fn open_at(&self, interval: Duration) -> Option<Instant> {
        self.last_write.map(|last| last + interval)
    }
}

impl Throttle {
    fn new(now: Instant, limits: &Limits) -> Throttle {
        Throttle {
            keys: HashMap::new(),
            bucket: TokenBucket::full(now, limits.burst, limits.refill),
            key_interval: limits.key_interval,
        }
    }

    /// The write to do now for `draft`, or `None` if it was folded into its key's pending write.
    fn offer(&mut self, draft: Draft, now: Instant) -> Option<Write> {
        self.forget_idle(now);
        let interval = self.key_interval;
        let state = self
            .keys
            .entry((draft.reason, draft.job.clone()))
            .or_default();
        let open = state.pending.is_none() && state.open_at(interval).is_none_or(|at| at <= now);
        if open && self.bucket.try_take(now) {
            state.last_write = Some(now);
            return Some(Write { draft, count: 1 });
        }
        let count = state.pending.as_ref().map_or(0, |p| p.count);
        state.pending = Some(Write {
            draft,
            count: count.saturating_add(1),
        });
        None
    }

    /// The pending writes whose key is open, as far as the bucket has tokens.
    fn due(&mut self, now: Instant) -> Vec<Write> {
        let mut writes = Vec::new();
        for state in self.keys.values_mut() {
            let open = state.open_at(self.key_interval).is_none_or(|at| at <= now);
            if state.pending.is_none() || !open {
                continue;
            }
            if !self.bucket.try_take(now) {
                break;
            }
            state.last_write = Some(now);
            writes.extend(state.pending.take());
        }
        writes
    }

    /// Every pending write, regardless of intervals and tokens.
    fn drain(&mut self) -> Vec<Write> {
        self.keys
            .values_mut()
            .filter_map(|state| state.pending.take())
            .collect()
    }

    /// When [`Throttle::due`] may next return something: the earliest pending key's opening, but not
    /// before the bucket's next token (a key never written is open at once).
    fn next_due(&self) -> Option<Instant> {
        let token = self.bucket.next_token_at();
        self.keys
            .values()
            .filter(|state| state.pending.is_some())
            .map(|state| {
                state
                    .open_at(self.key_interval)
                    .map_or(token, |at| at.max(token))
            })
            .min()
    }

    /// Drops keys with nothing pending whose interval is over: they behave as new keys.
    fn forget_idle(&mut self, now: Instant) {
        let interval = self.key_interval;
        self.keys.retain(|_, state| {
            state.pending.is_some() || state.open_at(interval).is_some_and(|at| at > now)
        });
    }
}

// === impl TokenBucket ===

/// `burst` tokens at most, one more every `refill`.
#[derive(Debug)]
struct TokenBucket {
    burst: u32,
    refill: Duration,
    tokens: u32,
    /// When the last token was added (or the bucket was last full).
    refilled: Instant,
}

impl TokenBucket {
    fn full(now: Instant, burst: u32, refill: Duration) -> TokenBucket {
        TokenBucket {
            burst,
            refill,
            tokens: burst,
            refilled: now,
        }
    }

    fn try_take(&mut self, now: Instant) -> bool {
        self.refill(now);
        if self.tokens == 0 {
            return false;
        }
        self.tokens -= 1;
        true
    }

    /// When the next token is there.
    fn next_token_at(&self) -> Instant {
        if self.tokens > 0 {
            self.refilled
        } else {
            self.refilled + self.refill
        }
    }

    fn refill(&mut self, now: Instant) {
        let periods =
            now.saturating_duration_since(self.refilled).as_nanos() / self.refill.as_nanos();
        let added = u32::try_from(periods).unwrap_or(u32::MAX);
        self.tokens = self.tokens.saturating_add(added).min(self.burst);
        if self.tokens == self.burst {
            self.refilled = now;
        } else {
            self.refilled += self.refill * added;
        }
    }
}

// === impl Observer for EventSink ===

impl Observer for EventSink {
    fn on_run(&self, event: &RunEvent) {
        EventSink::on_run(self, event);
    }

    fn on_election(&self, event: &ElectionEvent) {
        EventSink::on_election(self, event);
    }

    fn on_dispatch(&self, event: &DispatchEvent) {
        // Only the leader's missed slots are news; a follower's timers skip every slot.
        match event {
            DispatchEvent::Skipped {
                job,
                scheduled,
                reason: SkipReason::MissedDeadline,
                leader: true,
            } => self.on_missed(job, *scheduled),
            DispatchEvent::MissedSlots {
                job, count, latest, ..
            } => self.on_missed_slots(job, *count, *latest),
            _ => {}
        }
    }

    fn on_config_reload(&self, reload: &ConfigReload) {
        if let ConfigReload::Failed { message, .. } = reload {
            self.on_config_reload_failed(message);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    use crate::event::Failure;
    use crate::term::FencingToken;

    fn draft(reason: &'static str, job: &str, note: &str) -> Draft {
        Draft {
            type_: EventType::Warning,
            reason,
            action: "RunJob",
            job: Some(job.to_owned()),
            note: note.to_owned(),
        }
    }

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn the_first_draft_of_a_key_is_written_at_once() {
        let t0 = Instant::now();
        let mut throttle = Throttle::new(t0, &Limits::default());
        let write = throttle.offer(draft("JobFailed", "a", "n"), t0);
        assert_eq!(write.map(|w| w.count), Some(1));
        assert_eq!(throttle.next_due(), None);
    }

    #[test]
    fn repeats_within_the_interval_fold_into_one_write_with_the_count_and_latest_note() {
        let t0 = Instant::now();
        let mut throttle = Throttle::new(t0, &Limits::default());
        assert!(throttle.offer(draft("JobFailed", "a", "1"), t0).is_some());
        for i in 2..=60 {
            let written = throttle.offer(draft("JobFailed", "a", &i.to_string()), t0 + secs(i));
            assert_eq!(written, None, "repeat {i} was written");
        }
        assert_eq!(throttle.next_due(), Some(t0 + KEY_INTERVAL));
        assert!(throttle.due(t0 + KEY_INTERVAL - secs(1)).is_empty());
        let writes = throttle.due(t0 + KEY_INTERVAL);
        assert_eq!(writes.len(), 1);
        assert_eq!(writes[0].count, 59);
        assert_eq!(writes[0].draft.note, "60");
        assert_eq!(throttle.next_due(), None);
    }

    #[test]
    fn a_repeat_after_a_pending_write_was_flushed_waits_for_the_interval() {
        let t0 = Instant::now();
        let mut throttle = Throttle::new(t0, &Limits::default());
        throttle.offer(draft("JobFailed", "a", "1"), t0);
        throttle.offer(draft("JobFailed", "a", "2"), t0 + secs(1));
        assert_eq!(throttle.due(t0 + KEY_INTERVAL).len(), 1);
        let later = t0 + KEY_INTERVAL + secs(1);
        assert_eq!(throttle.offer(draft("JobFailed", "a", "3"), later), None);
        assert_eq!(throttle.next_due(), Some(t0 + KEY_INTERVAL * 2));
    }

    #[test]
    fn a_key_is_open_again_after_a_quiet_interval() {
        let t0 = Instant::now();
        let mut throttle = Throttle::new(t0, &Limits::default());
        throttle.offer(draft("JobFailed", "a", "1"), t0);
        let write = throttle.offer(draft("JobFailed", "a", "2"), t0 + KEY_INTERVAL);
        assert_eq!(write.map(|w| w.count), Some(1));
    }

    #[test]
    fn keys_differ_by_job_and_by_reason() {
        let t0 = Instant::now();
        let mut throttle = Throttle::new(t0, &Limits::default());
        assert!(throttle.offer(draft("JobFailed", "a", "n"), t0).is_some());
        assert!(throttle.offer(draft("JobFailed", "b", "n"), t0).is_some());
        assert!(throttle.offer(draft("JobTimedOut", "a", "n"), t0).is_some());
    }

    #[test]
    fn the_global_bucket_caps_writes_across_keys_and_folds_the_rest() {
        let t0 = Instant::now();
        let mut throttle = Throttle::new(t0, &Limits::default());
        let jobs: Vec<String> = (0..GLOBAL_BURST + 5).map(|i| format!("job{i}")).collect();
        let written = jobs
            .iter()
            .filter(|job| throttle.offer(draft("JobFailed", job, "n"), t0).is_some())
            .count();
        assert_eq!(written, GLOBAL_BURST as usize);
        assert_eq!(throttle.next_due(), Some(t0 + GLOBAL_REFILL));
        assert_eq!(throttle.due(t0 + GLOBAL_REFILL).len(), 1);
        assert_eq!(throttle.due(t0 + GLOBAL_REFILL * 5).len(), 4);
        assert_eq!(throttle.next_due(), None);
    }

    #[test]
    fn drain_returns_every_pending_write_regardless_of_limits() {
        let t0 = Instant::now();
        let mut throttle = Throttle::new(t0, &Limits::default());
        for i in 0..100 {
            throttle.offer(draft("JobFailed", "a", &i.to_string()), t0);
        }
        let drained = throttle.drain();
        assert_eq!(drained.len(), 1);
        assert_eq!(drained[0].count, 99);
        assert!(throttle.drain().is_empty());
    }

    #[test]
    fn the_bucket_refills_one_token_per_period_up_to_the_burst() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::full(t0, GLOBAL_BURST, GLOBAL_REFILL);
        for _ in 0..GLOBAL_BURST {
            assert!(bucket.try_take(t0));
        }
        assert!(!bucket.try_take(t0));
        assert!(!bucket.try_take(t0 + GLOBAL_REFILL - Duration::from_millis(1)));
        assert!(bucket.try_take(t0 + GLOBAL_REFILL));
        let much_later = t0 + GLOBAL_REFILL * 1000;
        let taken = (0..GLOBAL_BURST * 2)
            .filter(|_| bucket.try_take(much_later))
            .count();
        assert_eq!(taken, GLOBAL_BURST as usize);
    }

    #[test]
    fn the_log_limiter_allows_one_line_per_interval_and_counts_the_rest() {
        let t0 = Instant::now();
        let mut limiter = LogLimiter::default();
        assert_eq!(limiter.allow(t0), Some(0));
        assert_eq!(limiter.allow(t0 + secs(1)), None);
        assert_eq!(limiter.allow(t0 + secs(2)), None);
        assert_eq!(limiter.allow(t0 + ERROR_LOG_INTERVAL), Some(2));
    }

    #[test]
    fn a_folded_note_carries_the_count_and_is_cut_to_the_api_limit() {
        let write = Write {
            draft: draft("JobFailed", "a", "exit code 3"),
            count: 7,
        };
        assert_eq!(
            note(&write),
            "7 times since the last report; latest: exit code 3"
        );
        let long = Write {
            draft: draft("JobFailed", "a", &"é".repeat(MAX_NOTE_BYTES)),
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
        let mut throttle = Throttle::new(t0, &normalized);
        assert!(throttle.offer(draft("JobFailed", "a", "1"), t0).is_some());
        assert!(throttle.offer(draft("JobFailed", "b", "1"), t0).is_none());
        assert_eq!(throttle.due(t0 + MIN_REFILL).len(), 1);
    }

    #[tokio::test]
    async fn a_disabled_sink_accepts_everything_and_records_nothing() {
        let sink = EventSink::disabled();
        sink.on_election(&ElectionEvent::Acquired {
            token: FencingToken(1),
        });
        sink.on_missed("a", Utc::now());
        sink.on_config_reload_failed("bad");
        sink.flush().await;
        assert!(!sink.is_enabled());
        assert_eq!(sink.dropped(), 0);
    }
}
