//! The HTTP endpoint: `/` (the status page, HTML: [`page`]), `/metrics` (Prometheus text format),
//! `/status` (JSON), `/healthz` and `/readyz`.
//!
//! `/healthz` fails only when the process is wedged: a leader whose term is past its deadline by more than
//! [`WEDGED_AFTER`] and still not ended means the elector's deadline timer is not running, and a restart is
//! the right cure. `/readyz` is ready once the jobs file is loaded and the lease store has answered once,
//! except while this replica is a stalled leader ([`crate::stall`]): it holds the lease but has skipped
//! every fire for longer than LD, and `/readyz` answers 503 with the reason (a restart would not cure a
//! run state that cannot be written, so `/healthz` stays healthy).
//! `/status` combines the leadership channel with a [`StatusBoard`], an [`Observer`] of runs and fires; `/`
//! renders the same [`Status`] snapshot as a page.

pub mod page;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::config::{Executor, JobSet};
use crate::controls::{Controls, Suspension};
use crate::event::{
    hash_hex, ClusterAction, ConfigReload, DispatchEvent, ElectionEvent, Failure, Outcome,
    RunEvent, RunReport,
};
use crate::metrics::{self, Metrics};
use crate::observe::Observer;
use crate::run_state::{JobRecord, Ledger};
use crate::stall::{Stall, StallWatch};
use crate::term::{Leadership, Term};

/// How long past its deadline a term may stay un-ended before the process counts as wedged.
pub const WEDGED_AFTER: Duration = Duration::from_secs(5);

/// The content type of `/status`.
pub(crate) const JSON_CONTENT_TYPE: &str = "application/json";

/// Errors of the HTTP endpoint.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The address could not be bound.
    #[error("--http-addr {addr}: cannot listen: {source}{}", bind_hint(source))]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The server failed.
    #[error("HTTP server failed: {0}")]
    Serve(std::io::Error),
}

/// What to do about a bind error, if anything is to be said.
fn bind_hint(source: &std::io::Error) -> &'static str {
    match source.kind() {
        std::io::ErrorKind::AddrInUse => {
            ": another process holds this address (another leasecron on this machine?): give each \
             replica its own port, e.g. --http-addr 127.0.0.1:9091, or --http-addr 127.0.0.1:0 for any \
             free one (it is logged)"
        }
        _ => "",
    }
}

/// What the endpoints read.
#[derive(Debug, Clone)]
pub struct Health {
    leadership: watch::Receiver<Leadership>,
    ready: Arc<AtomicBool>,
    stall: Option<Arc<StallWatch>>,
}

// === impl Health ===

impl Health {
    /// Health over the elector's leadership channel; not ready until [`Health::set_ready`].
    pub fn new(leadership: watch::Receiver<Leadership>) -> Self {
        Self {
            leadership,
            ready: Arc::new(AtomicBool::new(false)),
            stall: None,
        }
    }

    /// Not ready while `stall` says this replica is a stalled leader.
    #[must_use]
    pub fn with_stall_watch(mut self, stall: Arc<StallWatch>) -> Self {
        self.stall = Some(stall);
        self
    }

    /// `Some` while this replica is a stalled leader.
    pub fn stall(&self) -> Option<Stall> {
        self.stall.as_ref().and_then(|watch| watch.stall())
    }

    /// Marks the replica ready (config loaded, lease store answered).
    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::Release);
    }

    /// True unless this replica leads a term that outlived its deadline without being ended.
    pub fn is_healthy(&self) -> bool {
        match &*self.leadership.borrow() {
            Leadership::Leader { term } => {
                term.is_ended() || tokio::time::Instant::now() < term.deadline() + WEDGED_AFTER
            }
            _ => true,
        }
    }

    fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }
}

/// What `/status` knows about the jobs, kept current from the runner's and the dispatcher's events.
#[derive(Debug)]
pub struct StatusBoard {
    identity: String,
    jobs: Mutex<BTreeMap<String, JobEntry>>,
    config: Mutex<ConfigStatus>,
    /// The run state, whose entry of each job `/status` shows.
    ledger: Arc<Ledger>,
    /// The operators' suspensions in force, by job.
    suspensions: Mutex<BTreeMap<String, Suspension>>,
}

/// What the board keeps of one job; [`StatusBoard::snapshot`] turns it into a [`JobStatus`].
#[derive(Debug, Clone)]
struct JobEntry {
    schedule: String,
    zone: String,
    executor: &'static str,
    suspended: bool,
    /// The schedule's next slot, whether or not the job is suspended.
    next_slot: Option<DateTime<Utc>>,
    /// The job's jitter offset, if it has a `jitter`.
    jitter: Option<Duration>,
    /// The last run that finished on this replica (boxed: most jobs of a large set have none, and the
    /// board keeps an entry per job).
    last_run: Option<Box<LastRun>>,
    running: u32,
}

/// The jobs in force and the last reload, in `/status`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ConfigStatus {
    /// Where the jobs in force came from: a path, or `configmap/NAMESPACE/NAME/KEY`.
    pub source: Option<String>,
    /// The hash of their text (FNV-1a 64, hex): equal on replicas that run the same version.
    pub hash: Option<String>,
    /// When they were loaded.
    pub loaded_at: Option<DateTime<Utc>>,
    /// The problems of the last version seen, if it was rejected (the jobs in force are older).
    pub last_error: Option<String>,
    /// When that version was rejected.
    pub last_error_at: Option<DateTime<Utc>>,
}

/// One job in `/status`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JobStatus {
    /// The job's name.
    pub name: String,
    /// The cron expression.
    pub schedule: String,
    /// The schedule's time zone.
    pub zone: String,
    /// How its runs are executed: `process` (in the leader's pod) or `kubernetes` (a Kubernetes Job per
    /// run; `running` then counts the Jobs this replica follows, its own and those it adopted).
    pub executor: String,
    /// True if the job is suspended (`suspend: true` in the jobs file, or `leasecron suspend`): its fires
    /// start nothing.
    pub suspended: bool,
    /// Who suspended it with `leasecron suspend`, when and why; null if it is not suspended that way
    /// (`suspend: true` in the file has no note).
    pub suspension: Option<Suspension>,
    /// The next slot that will start a run (RFC 3339): the nominal slot, its `LEASECRON_SCHEDULED_TIME`;
    /// null if the schedule has none, or while suspended.
    pub next_run: Option<DateTime<Utc>>,
    /// When that slot fires: `next_run` plus the job's jitter offset (equal to `next_run` without a
    /// `jitter`); null with `next_run`.
    pub next_fire: Option<DateTime<Utc>>,
    /// The job's jitter offset in seconds: how late after its slot every slot fires, fixed per job name
    /// in `[0, jitter)`; null without a `jitter`.
    pub jitter_seconds: Option<f64>,
    /// While suspended, the schedule's next slot: the fire the job would have if it were resumed now.
    /// Null otherwise.
    pub next_slot_if_resumed: Option<DateTime<Utc>>,
    /// The job's last finished run: the last one that finished on this replica, or, if the run state
    /// records a later completion (another replica ran it: on a follower, after a failover), that one.
    pub last_run: Option<LastRun>,
    /// Runs in flight on this replica.
    pub running: u32,
    /// The job's entry in the run state (last slot started, last completion, last success), as this
    /// replica last read it; absent without a run state or before the job's first run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_state: Option<JobRecord>,
}

/// The last finished run of a job, in `/status`.
///
/// A run that finished on this replica (`source: this_replica`) is known in full. One known from the run
/// state (`source: run_state`) is what the record keeps: its slot, outcome and end, and, from the record of
/// the slot's start, who ran it and when it started; its exit code, signal, error, attempts and leftovers
/// are null. A follower re-reads the run state every [`crate::dispatch::STATE_REFRESH_INTERVAL`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LastRun {
    /// The slot it ran for.
    pub scheduled: DateTime<Utc>,
    /// `succeeded`, `failed`, `timed_out` or `cancelled`.
    pub outcome: String,
    /// The exit code of a run that failed with one.
    pub exit_code: Option<i32>,
    /// The number of the signal that killed a run that failed by one (not the runner's own escalation,
    /// which is `timed_out` or `cancelled`).
    pub signal: Option<i32>,
    /// Why a failed run's process could not be started, or why its exit status was lost.
    pub error: Option<String>,
    /// When its first attempt started; from the run state, when its slot was recorded as started.
    pub started: Option<DateTime<Utc>>,
    /// When it finished.
    pub finished: DateTime<Utc>,
    /// From its first attempt's start to its last attempt's end, backoff included; from the run state,
    /// from the slot's start record to its completion record.
    pub duration_seconds: Option<f64>,
    /// How many attempts it made (0: cancelled before the first).
    pub attempts: Option<u32>,
    /// Processes its attempts left behind, killed as each attempt ended (what
    /// `leasecron_job_leftover_processes_killed_total` counts).
    pub leftover_processes_killed: Option<u32>,
    /// Where this replica knows it from.
    pub source: RunSource,
    /// The replica that ran it; null if the run state no longer says (a later slot has started since).
    pub identity: Option<String>,
    /// The fencing token of the term it ran under; null as `identity`.
    pub fencing_token: Option<u64>,
}

/// Where `/status` knows a run from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunSource {
    /// It finished on this replica.
    ThisReplica,
    /// From the run state shared by the replicas (this replica did not run it, or has restarted since).
    RunState,
}

/// The `/status` document.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Status {
    /// This replica's identity.
    pub identity: String,
    /// The lease holder as this replica knows it (itself while leading).
    pub holder: Option<String>,
    /// True while this replica leads.
    pub leading: bool,
    /// The current term's fencing token while leading.
    pub fencing_token: Option<u64>,
    /// When the current term began (wall clock) while leading.
    pub term_acquired_at: Option<DateTime<Utc>>,
    /// Seconds left before the current term's deadline (renewals push it out) while leading.
    pub term_deadline_remaining_seconds: Option<f64>,
    /// The jobs in force and the last reload.
    pub config: ConfigStatus,
    /// Every job of the loaded set, by name.
    pub jobs: Vec<JobStatus>,
}

// === impl StatusBoard ===

impl StatusBoard {
    /// An empty board for the replica `identity`, showing each job's entry of the run state kept by
    /// `ledger`; [`StatusBoard::set_jobs`] fills it.
    pub fn new(identity: impl Into<String>, ledger: Arc<Ledger>) -> Self {
        Self {
            identity: identity.into(),
            jobs: Mutex::new(BTreeMap::new()),
            config: Mutex::new(ConfigStatus::default()),
            ledger,
            suspensions: Mutex::new(BTreeMap::new()),
        }
    }

    /// Makes the suspensions of `controls` the ones `/status` shows.
    pub fn set_controls(&self, controls: &Controls) {
        *self
            .suspensions
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = controls.suspended.clone();
    }

    /// Makes `jobs` the job set, keeping what is known of jobs that stay.
    pub fn set_jobs(&self, jobs: &JobSet) {
        let mut board = self.lock();
        let mut next = BTreeMap::new();
        for job in &jobs.jobs {
            let old = board.remove(&job.name);
            next.insert(
                job.name.clone(),
                JobEntry {
                    schedule: job.schedule.expression().to_owned(),
                    zone: job.schedule.zone().to_string(),
                    executor: match job.executor() {
                        Executor::Process(_) => "process",
                        Executor::Kubernetes(_) => "kubernetes",
                    },
                    suspended: job.suspend,
                    next_slot: old.as_ref().and_then(|o| o.next_slot),
                    jitter: job.jitter.map(|_| job.jitter_offset()),
                    last_run: old.as_ref().and_then(|o| o.last_run.clone()),
                    running: old.as_ref().map_or(0, |o| o.running),
                },
            );
        }
        *board = next;
    }

    /// The document, with leadership read from `leadership`.
    pub fn snapshot(&self, leadership: &Leadership) -> Status {
        let (holder, term) = match leadership {
            Leadership::Unknown => (None, None),
            Leadership::Follower { holder } => (holder.clone(), None),
            Leadership::Leader { term } => (Some(self.identity.clone()), Some(term)),
        };
        // A term that has ended is over, though the record names us until the release returns: not
        // leading, as `leasecron_is_leader` says.
        let term = term.filter(|term| !term.is_ended());
        let remaining = term.map(|term| {
            term.deadline()
                .saturating_duration_since(tokio::time::Instant::now())
                .as_secs_f64()
        });
        Status {
            identity: self.identity.clone(),
            holder,
            leading: term.is_some(),
            fencing_token: term.map(|term| term.fencing_token().0),
            term_acquired_at: term.map(Term::acquired_at),
            term_deadline_remaining_seconds: remaining,
            config: self
                .config
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
            jobs: {
                let mut record = self.ledger.snapshot();
                let suspensions = self
                    .suspensions
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .clone();
                self.lock()
                    .iter()
                    .map(|(name, entry)| {
                        let run_state = record.jobs.remove(name);
                        job_status(name, entry, run_state, suspensions.get(name).cloned())
                    })
                    .collect()
            },
        }
    }

    fn update(&self, job: &str, change: impl FnOnce(&mut JobEntry)) {
        if let Some(entry) = self.lock().get_mut(job) {
            change(entry);
        }
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, JobEntry>> {
        // Every update is a single field write or one replacement: consistent even after a panic.
        self.jobs.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Observer for StatusBoard {
    fn on_run(&self, event: &RunEvent) {
        match event {
            RunEvent::Started {
                job, attempt: 1, ..
            }
            | RunEvent::Cluster {
                job,
                action: ClusterAction::Created | ClusterAction::Adopted { .. },
                ..
            } => self.update(job, |s| s.running += 1),
            RunEvent::Cluster {
                job,
                action: ClusterAction::HandedOver,
                ..
            } => self.update(job, |s| s.running = s.running.saturating_sub(1)),
            RunEvent::Finished(report) => self.update(&report.job, |s| {
                if report.attempts > 0 {
                    s.running = s.running.saturating_sub(1);
                }
                s.last_run = Some(Box::new(LastRun::finished_here(&self.identity, report)));
            }),
            _ => {}
        }
    }

    fn on_election(&self, _event: &ElectionEvent) {}

    fn on_dispatch(&self, event: &DispatchEvent) {
        match event {
            DispatchEvent::NextRun { job, at } => self.update(job, |s| s.next_slot = *at),
            DispatchEvent::JobsApplied { jobs, .. } => self.set_jobs(jobs),
            DispatchEvent::ControlsApplied { controls } => self.set_controls(controls),
            DispatchEvent::Skipped { .. }
            | DispatchEvent::MissedSlots { .. }
            | DispatchEvent::Request { .. } => {}
        }
    }

    fn on_config_reload(&self, reload: &ConfigReload) {
        let mut config = self.config.lock().unwrap_or_else(PoisonError::into_inner);
        match reload {
            ConfigReload::Applied { origin, hash, .. } => {
                *config = ConfigStatus {
                    source: Some(origin.clone()),
                    hash: Some(hash_hex(*hash)),
                    loaded_at: Some(Utc::now()),
                    last_error: None,
                    last_error_at: None,
                };
            }
            ConfigReload::Failed { message, .. } => {
                config.last_error = Some(message.clone());
                config.last_error_at = Some(Utc::now());
            }
        }
    }
}

/// A job's `/status` entry from what the board keeps and the job's record in the run state.
fn job_status(
    name: &str,
    entry: &JobEntry,
    run_state: Option<JobRecord>,
    suspension: Option<Suspension>,
) -> JobStatus {
    let suspended = entry.suspended || suspension.is_some();
    let recorded = run_state.as_ref().and_then(LastRun::recorded);
    let last_run = match (entry.last_run.as_deref(), recorded) {
        (Some(here), Some(recorded)) if recorded.is_later_than(here) => Some(recorded),
        (Some(here), _) => Some(here.clone()),
        (None, recorded) => recorded,
    };
    let (next_run, next_slot_if_resumed) = if suspended {
        (None, entry.next_slot)
    } else {
        (entry.next_slot, None)
    };
    let offset = chrono::Duration::from_std(entry.jitter.unwrap_or_default()).unwrap_or_default();
    JobStatus {
        name: name.to_owned(),
        schedule: entry.schedule.clone(),
        zone: entry.zone.clone(),
        executor: entry.executor.to_owned(),
        suspended,
        suspension,
        next_run,
        next_fire: next_run.map(|slot| slot + offset),
        jitter_seconds: entry.jitter.map(|offset| offset.as_secs_f64()),
        next_slot_if_resumed,
        last_run,
        running: entry.running,
        run_state,
    }
}

// === impl LastRun ===

impl LastRun {
    /// A run that finished on the replica `identity`.
    fn finished_here(identity: &str, report: &RunReport) -> LastRun {
        let (exit_code, signal, error) = match &report.outcome {
            Outcome::Failed(Failure::ExitCode(code)) => (Some(*code), None, None),
            Outcome::Failed(Failure::Signal(signal)) => (None, Some(*signal), None),
            Outcome::Failed(Failure::Spawn(why) | Failure::Lost(why) | Failure::Refused(why)) => {
                (None, None, Some(why.clone()))
            }
            Outcome::Failed(failure @ Failure::Job { exit_code, .. }) => {
                (*exit_code, None, Some(failure.to_string()))
            }
            Outcome::Succeeded | Outcome::TimedOut | Outcome::Cancelled => (None, None, None),
        };
        LastRun {
            scheduled: report.scheduled,
            outcome: report.outcome.as_str().to_owned(),
            exit_code,
            signal,
            error,
            started: Some(report.started_at),
            finished: report.started_at
                + chrono::Duration::from_std(report.duration).unwrap_or_default(),
            duration_seconds: Some(report.duration.as_secs_f64()),
            attempts: Some(report.attempts),
            leftover_processes_killed: Some(report.leftover_processes_killed),
            source: RunSource::ThisReplica,
            identity: Some(identity.to_owned()),
            fencing_token: Some(report.fencing_token),
        }
    }

    /// The last completion the run state records, with who ran it and when it started if the record of
    /// the slot's start is still that run's.
    fn recorded(record: &JobRecord) -> Option<LastRun> {
        let completion = record.last_completion.as_ref()?;
        let start = record
            .last_started
            .as_ref()
            .filter(|start| start.slot == completion.slot);
        let duration =
            start.and_then(|start| (completion.finished_at - start.started_at).to_std().ok());
        Some(LastRun {
            scheduled: completion.slot,
            outcome: completion.outcome.clone(),
            exit_code: None,
            signal: None,
            error: None,
            started: start.map(|start| start.started_at),
            finished: completion.finished_at,
            duration_seconds: duration.map(|d| d.as_secs_f64()),
            attempts: None,
            leftover_processes_killed: None,
            source: RunSource::RunState,
            identity: start.map(|start| start.identity.clone()),
            fencing_token: start.map(|start| start.fencing_token),
        })
    }

    /// True if this recorded run is another run than `here`, and finished after it. The same slot under
    /// the same term is the same run (each slot starts at most once per term; a rerun of an interrupted
    /// slot is a newer term's).
    fn is_later_than(&self, here: &LastRun) -> bool {
        let same_run = self.scheduled == here.scheduled
            && self
                .fencing_token
                .is_none_or(|token| Some(token) == here.fencing_token);
        !same_run && self.finished > here.finished
    }
}

/// Everything the endpoints read.
#[derive(Debug, Clone)]
pub struct Endpoints {
    /// `/healthz`, `/readyz`, and the leadership for `/status`.
    pub health: Health,
    /// `/metrics`.
    pub metrics: Arc<Metrics>,
    /// The jobs part of `/status`.
    pub status: Arc<StatusBoard>,
}

/// Binds `addr` (fails fast, before the lease is touched).
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, Error> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Bind { addr, source })
}

/// Serves the endpoints on `listener` until `stop` is cancelled.
pub async fn serve(
    listener: TcpListener,
    endpoints: Endpoints,
    stop: CancellationToken,
) -> Result<(), Error> {
    let app = Router::new()
        .route("/", get(status_page))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .route("/status", get(status))
        .with_state(endpoints);
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { stop.cancelled().await })
        .await
        .map_err(Error::Serve)
}

/// Serves the endpoints of a replica that is still starting (its start-up requests to the Kubernetes API
/// may be retrying) on `listener` until `stop` is cancelled: `/healthz` is healthy, so probes do not restart
/// it for waiting, `/readyz` and everything else is 503 "starting".
pub(crate) async fn serve_starting(
    listener: TcpListener,
    stop: CancellationToken,
) -> Result<(), Error> {
    let app = Router::new()
        .route("/healthz", get(|| async { (StatusCode::OK, "ok\n") }))
        .fallback(|| async { (StatusCode::SERVICE_UNAVAILABLE, "not ready: starting\n") });
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { stop.cancelled().await })
        .await
        .map_err(Error::Serve)
}

async fn metrics_text(State(endpoints): State<Endpoints>) -> Response {
    // Off the runtime's workers: with 10 000 jobs an exposition is 17 MB and takes 400 ms to build, and the
    // timers of the jobs due meanwhile would wait for it.
    let encoded = tokio::task::spawn_blocking(move || endpoints.metrics.encode()).await;
    let encoded = encoded.unwrap_or_else(|panic| Err(metrics::Error::Encode(panic.to_string())));
    match encoded {
        Ok(text) => ([(header::CONTENT_TYPE, metrics::CONTENT_TYPE)], text).into_response(),
        Err(error) => {
            tracing::warn!(%error, "cannot encode the metrics");
            (StatusCode::INTERNAL_SERVER_ERROR, format!("{error}\n")).into_response()
        }
    }
}

async fn status(State(endpoints): State<Endpoints>) -> Response {
    let leadership = endpoints.health.leadership.borrow().clone();
    match serde_json::to_string_pretty(&endpoints.status.snapshot(&leadership)) {
        Ok(json) => ([(header::CONTENT_TYPE, JSON_CONTENT_TYPE)], json + "\n").into_response(),
        Err(error) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{error}\n")).into_response(),
    }
}

async fn status_page(State(endpoints): State<Endpoints>) -> Response {
    let leadership = endpoints.health.leadership.borrow().clone();
    // Off the runtime's workers, as `/metrics`: with 10 000 jobs the page is about 10 MiB.
    let rendered = tokio::task::spawn_blocking(move || {
        let now = Utc::now();
        page::render(&endpoints.status.snapshot(&leadership), now)
    })
    .await;
    match rendered {
        Ok(html) => (
            [
                (header::CONTENT_TYPE, page::CONTENT_TYPE),
                (
                    header::CONTENT_SECURITY_POLICY,
                    page::CONTENT_SECURITY_POLICY,
                ),
                (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
                (header::CACHE_CONTROL, "no-store"),
            ],
            html,
        )
            .into_response(),
        Err(panic) => {
            tracing::warn!(error = %panic, "cannot render the status page");
            (StatusCode::INTERNAL_SERVER_ERROR, format!("{panic}\n")).into_response()
        }
    }
}

async fn healthz(State(endpoints): State<Endpoints>) -> (StatusCode, &'static str) {
    if endpoints.health.is_healthy() {
        (StatusCode::OK, "ok\n")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "wedged: term past its deadline and not ended\n",
        )
    }
}

async fn readyz(State(endpoints): State<Endpoints>) -> (StatusCode, String) {
    if !endpoints.health.is_ready() {
        return (StatusCode::SERVICE_UNAVAILABLE, "not ready\n".to_owned());
    }
    match endpoints.health.stall() {
        Some(stall) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {stall} (docs/alerts.md#leasecronleaderstalled)\n"),
        ),
        None => (StatusCode::OK, "ready\n".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run_state::{Origin, RunResult};
    use crate::term::FencingToken;
    use chrono::Utc;
    use tokio::time::Instant;

    use crate::config::{self, LoadOptions};
    use crate::run_state::memory::MemoryStore;

    fn job_set(names: &[&str]) -> JobSet {
        let mut yaml = String::from("jobs:\n");
        for name in names {
            yaml.push_str(&format!(
                "  - name: {name}\n    schedule: \"*/5 * * * *\"\n    timeZone: Europe/Paris\n    shell: \"true\"\n"
            ));
        }
        let opts = LoadOptions {
            max_termination_grace: Duration::MAX,
        };
        config::parse_str(&yaml, "test.yaml", &opts).expect("valid jobs")
    }

    fn finished(job: &str, attempts: u32) -> RunEvent {
        RunEvent::Finished(report(job, attempts, Outcome::TimedOut))
    }

    fn report(job: &str, attempts: u32, outcome: Outcome) -> RunReport {
        let scheduled = Utc::now();
        RunReport {
            job: job.to_owned(),
            scheduled,
            attempts,
            outcome,
            started_at: scheduled,
            duration: Duration::from_secs(2),
            start_delay: Duration::ZERO,
            fencing_token: 1,
            leftover_processes_killed: 0,
        }
    }

    fn job_set_with(yaml_tail: &str) -> JobSet {
        let yaml = format!(
            "jobs:\n  - name: a\n    schedule: \"*/5 * * * *\"\n    shell: \"true\"\n{yaml_tail}"
        );
        let opts = LoadOptions {
            max_termination_grace: Duration::MAX,
        };
        config::parse_str(&yaml, "test.yaml", &opts).expect("valid jobs")
    }

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + seconds, 0).expect("a valid time")
    }

    /// A ledger over a run state in memory, with no record yet.
    fn in_memory() -> Arc<Ledger> {
        Arc::new(Ledger::new(MemoryStore::new(), "me".to_owned()))
    }

    /// A ledger over a run state file in `dir`, writing as `identity`.
    fn ledger(dir: &tempfile::TempDir, identity: &str) -> Arc<Ledger> {
        let lease = dir.path().join("lease.json");
        Arc::new(Ledger::new(
            crate::local::run_state::StateFile::beside(&lease),
            identity.to_owned(),
        ))
    }

    /// Records in `ledger` a run of job `a` for `slot`, started and finished at the given offsets.
    async fn record_run(ledger: &Ledger, slot: i64, token: u64, outcome: &str, finished: i64) {
        let token = FencingToken(token);
        let claim = ledger
            .claim("a", at(slot), token, at(slot + 1), &Origin::SCHEDULE)
            .await;
        assert_eq!(claim.expect("claims"), crate::run_state::Claim::Claimed);
        let completion = crate::run_state::Completion {
            slot: at(slot),
            outcome: outcome.to_owned(),
            finished_at: at(finished),
        };
        let completed = ledger
            .complete(
                "a",
                token,
                &Origin::SCHEDULE,
                completion,
                RunResult::default(),
            )
            .await;
        assert_eq!(
            completed.expect("completes"),
            crate::run_state::Claim::Claimed
        );
    }

    fn last_run(board: &StatusBoard) -> Option<LastRun> {
        board.snapshot(&Leadership::Unknown).jobs[0]
            .last_run
            .clone()
    }

    #[test]
    fn a_failed_runs_last_run_carries_its_exit_code_signal_or_error_and_every_run_its_duration() {
        let board = StatusBoard::new("me", in_memory());
        board.set_jobs(&job_set(&["a"]));
        let cases = [
            (Outcome::Failed(Failure::ExitCode(3)), Some(3), None, None),
            (Outcome::Failed(Failure::Signal(9)), None, Some(9), None),
            (
                Outcome::Failed(Failure::Spawn("No such file or directory".to_owned())),
                None,
                None,
                Some("No such file or directory"),
            ),
            (
                Outcome::Failed(Failure::Lost("supervisor gone".to_owned())),
                None,
                None,
                Some("supervisor gone"),
            ),
            (Outcome::Succeeded, None, None, None),
            (Outcome::TimedOut, None, None, None),
            (Outcome::Cancelled, None, None, None),
        ];
        for (outcome, exit_code, signal, error) in cases {
            let label = outcome.as_str();
            let mut report = report("a", 2, outcome);
            report.fencing_token = 7;
            report.leftover_processes_killed = 3;
            report.duration = Duration::from_millis(1500);
            board.on_run(&RunEvent::Finished(report.clone()));
            let last = last_run(&board).expect("a last run");
            assert_eq!(last.outcome, label);
            assert_eq!(
                (last.exit_code, last.signal, last.error.as_deref()),
                (exit_code, signal, error),
                "{label}"
            );
            assert_eq!(last.duration_seconds, Some(1.5), "{label}");
            assert_eq!(last.started, Some(report.started_at));
            assert_eq!(
                last.finished - report.started_at,
                chrono::Duration::milliseconds(1500)
            );
            assert_eq!(last.attempts, Some(2));
            assert_eq!(last.leftover_processes_killed, Some(3));
            assert_eq!(last.source, RunSource::ThisReplica);
            assert_eq!(
                (last.identity.as_deref(), last.fencing_token),
                (Some("me"), Some(7))
            );
        }
        let json = serde_json::to_value(last_run(&board)).expect("serializes");
        let keys: Vec<&str> = json
            .as_object()
            .expect("an object")
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            keys,
            [
                "attempts",
                "duration_seconds",
                "error",
                "exit_code",
                "fencing_token",
                "finished",
                "identity",
                "leftover_processes_killed",
                "outcome",
                "scheduled",
                "signal",
                "source",
                "started"
            ]
        );
        assert_eq!(json["source"], "this_replica");
        assert_eq!(json["exit_code"], serde_json::Value::Null);
    }

    #[tokio::test]
    async fn without_a_run_of_its_own_a_replica_shows_the_last_run_the_run_state_records() {
        let dir = tempfile::tempdir().expect("tempdir");
        let peer = ledger(&dir, "peer");
        record_run(&peer, 0, 5, "failed", 3).await;
        // This replica reads the record its peer wrote, as a follower's refresh does.
        let mine = ledger(&dir, "me");
        let board = StatusBoard::new("me", Arc::clone(&mine));
        board.set_jobs(&job_set_with(""));
        assert_eq!(last_run(&board), None, "no run state read yet");
        mine.refresh().await.expect("reads");
        let last = last_run(&board).expect("a last run from the run state");
        assert_eq!(last.source, RunSource::RunState);
        assert_eq!((last.scheduled, last.finished), (at(0), at(3)));
        assert_eq!(last.outcome, "failed");
        assert_eq!(
            (last.identity.as_deref(), last.fencing_token),
            (Some("peer"), Some(5))
        );
        assert_eq!(
            last.started,
            Some(at(1)),
            "when the slot was recorded as started"
        );
        assert_eq!(last.duration_seconds, Some(2.0));
        assert_eq!(
            (
                last.exit_code,
                last.signal,
                last.error.clone(),
                last.attempts,
                last.leftover_processes_killed
            ),
            (None, None, None, None, None),
            "the run state does not keep them"
        );
        let json = serde_json::to_value(&last).expect("serializes");
        assert_eq!(json["source"], "run_state");

        // A later slot started (running now, or interrupted): who ran the completed one is not known.
        let claim = peer
            .claim("a", at(10), FencingToken(5), at(10), &Origin::SCHEDULE)
            .await;
        assert_eq!(claim.expect("claims"), crate::run_state::Claim::Claimed);
        mine.refresh().await.expect("reads");
        let last = last_run(&board).expect("still the completed run");
        assert_eq!(
            (last.scheduled, last.identity, last.fencing_token),
            (at(0), None, None)
        );
        assert_eq!((last.started, last.duration_seconds), (None, None));
    }

    #[tokio::test]
    async fn the_later_of_this_replicas_last_run_and_the_run_states_is_shown() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ledger = ledger(&dir, "peer");
        let board = StatusBoard::new("me", Arc::clone(&ledger));
        board.set_jobs(&job_set_with(""));
        // This replica ran slot 0 under token 4 (and recorded it: the same run, shown with its detail).
        record_run(&ledger, 0, 4, "failed", 2).await;
        let mut here = report("a", 1, Outcome::Failed(Failure::ExitCode(3)));
        (here.scheduled, here.started_at, here.fencing_token) = (at(0), at(1), 4);
        board.on_run(&RunEvent::Finished(here));
        let last = last_run(&board).expect("a last run");
        assert_eq!(
            (last.source, last.exit_code),
            (RunSource::ThisReplica, Some(3))
        );
        // Then another replica led and ran slot 10.
        record_run(&ledger, 10, 6, "succeeded", 12).await;
        let last = last_run(&board).expect("a last run");
        assert_eq!(last.source, RunSource::RunState);
        assert_eq!(
            (last.scheduled, last.identity.as_deref(), last.fencing_token),
            (at(10), Some("peer"), Some(6))
        );
    }

    #[test]
    fn a_suspended_job_has_no_next_run_but_shows_the_slot_it_would_fire_at() {
        let board = StatusBoard::new("me", in_memory());
        board.set_jobs(&job_set_with("    suspend: true\n"));
        board.on_dispatch(&DispatchEvent::NextRun {
            job: "a".to_owned(),
            at: Some(at(300)),
        });
        let job = board.snapshot(&Leadership::Unknown).jobs[0].clone();
        assert!(job.suspended);
        assert_eq!(
            (job.next_run, job.next_slot_if_resumed),
            (None, Some(at(300)))
        );
        let json = serde_json::to_value(&job).expect("serializes");
        assert_eq!(json["next_run"], serde_json::Value::Null);
        assert_eq!(json["next_slot_if_resumed"], serde_json::json!(at(300)));
        // Resumed by a reload: the same slot is its next run.
        board.set_jobs(&job_set_with(""));
        let job = board.snapshot(&Leadership::Unknown).jobs[0].clone();
        assert!(!job.suspended);
        assert_eq!(
            (job.next_run, job.next_slot_if_resumed),
            (Some(at(300)), None)
        );
    }

    #[test]
    fn a_jittered_job_shows_its_offset_and_when_its_nominal_next_run_fires() {
        let board = StatusBoard::new("me", in_memory());
        board.set_jobs(&job_set_with("    jitter: 2m\n"));
        board.on_dispatch(&DispatchEvent::NextRun {
            job: "a".to_owned(),
            at: Some(at(300)),
        });
        let offset = config::jitter_offset("a", Duration::from_secs(120));
        let job = board.snapshot(&Leadership::Unknown).jobs[0].clone();
        assert_eq!(job.next_run, Some(at(300)), "the nominal slot");
        assert_eq!(
            job.next_fire,
            Some(at(300) + chrono::Duration::from_std(offset).expect("small"))
        );
        assert_eq!(job.jitter_seconds, Some(offset.as_secs_f64()));
        let json = serde_json::to_value(&job).expect("serializes");
        assert_eq!(
            json["jitter_seconds"],
            serde_json::json!(offset.as_secs_f64())
        );

        // Without a jitter the next fire is the next run; suspended, neither.
        board.set_jobs(&job_set_with(""));
        let job = board.snapshot(&Leadership::Unknown).jobs[0].clone();
        assert_eq!((job.next_fire, job.jitter_seconds), (Some(at(300)), None));
        let json = serde_json::to_value(&job).expect("serializes");
        assert_eq!(json["jitter_seconds"], serde_json::Value::Null);
        board.set_jobs(&job_set_with("    jitter: 2m\n    suspend: true\n"));
        let job = board.snapshot(&Leadership::Unknown).jobs[0].clone();
        assert_eq!((job.next_run, job.next_fire), (None, None));
    }

    #[test]
    fn the_board_tracks_running_runs_last_run_and_next_fire() {
        let board = StatusBoard::new("me", in_memory());
        board.set_jobs(&job_set(&["a"]));
        let started = |attempt| RunEvent::Started {
            job: "a".to_owned(),
            scheduled: Utc::now(),
            attempt,
            pid: 1,
        };
        board.on_run(&started(1));
        board.on_run(&started(2));
        let follower = Leadership::Follower {
            holder: Some("peer".to_owned()),
        };
        assert_eq!(board.snapshot(&follower).jobs[0].running, 1);
        board.on_run(&finished("a", 2));
        let next = Utc::now();
        board.on_dispatch(&DispatchEvent::NextRun {
            job: "a".to_owned(),
            at: Some(next),
        });
        let status = board.snapshot(&follower);
        assert_eq!(status.holder.as_deref(), Some("peer"));
        assert!(!status.leading);
        assert_eq!(status.fencing_token, None);
        let job = &status.jobs[0];
        assert_eq!((job.running, job.next_run), (0, Some(next)));
        assert_eq!(job.zone, "Europe/Paris");
        let last = job.last_run.as_ref().expect("a last run");
        assert_eq!(last.outcome, "timed_out");
        assert_eq!(last.finished - last.scheduled, chrono::Duration::seconds(2));
    }

    #[test]
    fn a_reload_keeps_the_state_of_kept_jobs_and_drops_removed_ones() {
        let board = StatusBoard::new("me", in_memory());
        board.set_jobs(&job_set(&["kept", "gone"]));
        board.on_run(&finished("kept", 1));
        board.set_jobs(&job_set(&["kept", "new"]));
        board.on_run(&finished("gone", 1));
        let status = board.snapshot(&Leadership::Unknown);
        let names: Vec<_> = status.jobs.iter().map(|j| j.name.as_str()).collect();
        assert_eq!(names, ["kept", "new"]);
        assert!(status.jobs[0].last_run.is_some());
        assert!(status.jobs[1].last_run.is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn a_leaders_status_carries_its_token_and_the_time_left_in_its_term() {
        let board = StatusBoard::new("me", in_memory());
        let handle = Term::begin(
            FencingToken(7),
            Utc::now(),
            Instant::now() + Duration::from_secs(10),
        );
        tokio::time::advance(Duration::from_secs(4)).await;
        let status = board.snapshot(&Leadership::Leader {
            term: handle.term().clone(),
        });
        assert_eq!(status.holder.as_deref(), Some("me"));
        assert!(status.leading);
        assert_eq!(status.fencing_token, Some(7));
        assert_eq!(status.term_acquired_at, Some(handle.term().acquired_at()));
        assert_eq!(status.term_deadline_remaining_seconds, Some(6.0));
        let term = handle.term().clone();
        handle.end().await;
        // Ended, still published as the leader until the release returns: the record still names us,
        // but we no longer lead.
        let status = board.snapshot(&Leadership::Leader { term });
        assert_eq!(status.holder.as_deref(), Some("me"));
        assert!(!status.leading);
        assert_eq!(status.fencing_token, None);
        assert_eq!(status.term_deadline_remaining_seconds, None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_leader_whose_term_outlived_its_deadline_is_wedged() {
        let handle = Term::begin(
            FencingToken(1),
            Utc::now(),
            Instant::now() + Duration::from_secs(10),
        );
        let (_tx, rx) = watch::channel(Leadership::Leader {
            term: handle.term().clone(),
        });
        let health = Health::new(rx);
        assert!(health.is_healthy());
        tokio::time::advance(Duration::from_secs(10) + WEDGED_AFTER - Duration::from_millis(1))
            .await;
        assert!(
            health.is_healthy(),
            "past the deadline, but within the slack the elector needs"
        );
        tokio::time::advance(Duration::from_millis(2)).await;
        assert!(
            !health.is_healthy(),
            "the deadline timer did not end the term"
        );
        handle.end().await;
        assert!(health.is_healthy(), "an ended term is not wedged");
    }

    #[tokio::test]
    async fn followers_are_healthy_and_readiness_is_explicit() {
        let (_tx, rx) = watch::channel(Leadership::Follower { holder: None });
        let health = Health::new(rx);
        assert!(health.is_healthy());
        assert!(!health.is_ready());
        health.set_ready();
        assert!(health.is_ready());
    }
}
