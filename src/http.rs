//! The HTTP endpoint: `/metrics` (Prometheus text format), `/status` (JSON), `/healthz` and `/readyz`.
//!
//! `/healthz` fails only when the process is wedged: a leader whose term is past its deadline by more than
//! [`WEDGED_AFTER`] and still not ended means the elector's deadline timer is not running, and a restart is
//! the right cure. `/readyz` is ready once the jobs file is loaded and the lease store has answered once,
//! except while this replica is a stalled leader ([`crate::stall`]): it holds the lease but has skipped
//! every fire for longer than LD, and `/readyz` answers 503 with the reason (a restart would not cure a
//! run state that cannot be written, so `/healthz` stays healthy).
//! `/status` combines the leadership channel with a [`StatusBoard`], an [`Observer`] of runs and fires.

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

use crate::config::JobSet;
use crate::dispatch::DispatchEvent;
use crate::election::ElectionEvent;
use crate::metrics::{self, Metrics};
use crate::observe::{ConfigReload, Observer};
use crate::runner::RunEvent;
use crate::stall::{Stall, StallWatch};
use crate::state::{JobRecord, Ledger};
use crate::term::{Leadership, Term};

/// How long past its deadline a term may stay un-ended before the process counts as wedged.
pub const WEDGED_AFTER: Duration = Duration::from_secs(5);

/// The content type of `/status`.
pub const JSON_CONTENT_TYPE: &str = "application/json";

/// Errors of the HTTP endpoint.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The address could not be bound.
    #[error("--http-addr {addr}: cannot listen: {source}")]
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
    jobs: Mutex<BTreeMap<String, JobStatus>>,
    config: Mutex<ConfigStatus>,
    ledger: std::sync::OnceLock<Arc<Ledger>>,
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
    /// True if the job is suspended.
    pub suspended: bool,
    /// The next fire (RFC 3339), if any.
    pub next_run: Option<DateTime<Utc>>,
    /// The last run that finished on this replica, if any.
    pub last_run: Option<LastRun>,
    /// Runs in flight on this replica.
    pub running: u32,
    /// The job's entry in the run state (last slot started, last completion, last success), as this
    /// replica last read it; absent without a run state or before the job's first run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_state: Option<JobRecord>,
}

/// The last finished run of a job, in `/status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LastRun {
    /// The slot it ran for.
    pub scheduled: DateTime<Utc>,
    /// `succeeded`, `failed`, `timed_out` or `cancelled`.
    pub outcome: &'static str,
    /// When it finished.
    pub finished: DateTime<Utc>,
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
    /// An empty board for the replica `identity`; [`StatusBoard::set_jobs`] fills it.
    pub fn new(identity: impl Into<String>) -> Self {
        Self {
            identity: identity.into(),
            jobs: Mutex::new(BTreeMap::new()),
            config: Mutex::new(ConfigStatus::default()),
            ledger: std::sync::OnceLock::new(),
        }
    }

    /// Makes `jobs` the job set, keeping what is known of jobs that stay.
    pub fn set_jobs(&self, jobs: &JobSet) {
        let mut board = self.lock();
        let mut next = BTreeMap::new();
        for job in &jobs.jobs {
            let old = board.remove(&job.name);
            next.insert(
                job.name.clone(),
                JobStatus {
                    name: job.name.clone(),
                    schedule: job.schedule.expression().to_owned(),
                    zone: job.schedule.zone().to_string(),
                    suspended: job.suspend,
                    next_run: old.as_ref().and_then(|o| o.next_run),
                    last_run: old.as_ref().and_then(|o| o.last_run.clone()),
                    running: old.as_ref().map_or(0, |o| o.running),
                    run_state: None,
                },
            );
        }
        *board = next;
    }

    /// Shows each job's entry of the run state kept by `ledger`.
    pub fn set_ledger(&self, ledger: Arc<Ledger>) {
        let _ = self.ledger.set(ledger);
    }

    /// The document, with leadership read from `leadership`.
    pub fn snapshot(&self, leadership: &Leadership) -> Status {
        let (holder, term) = match leadership {
            Leadership::Unknown => (None, None),
            Leadership::Follower { holder } => (holder.clone(), None),
            Leadership::Leader { term } => (Some(self.identity.clone()), Some(term)),
        };
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
                let record = self.ledger.get().map(|ledger| ledger.snapshot());
                self.lock()
                    .values()
                    .cloned()
                    .map(|mut job| {
                        job.run_state =
                            record.as_ref().and_then(|r| r.jobs.get(&job.name).cloned());
                        job
                    })
                    .collect()
            },
        }
    }

    fn update(&self, job: &str, change: impl FnOnce(&mut JobStatus)) {
        if let Some(status) = self.lock().get_mut(job) {
            change(status);
        }
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, JobStatus>> {
        // Every update is a single field write or one replacement: consistent even after a panic.
        self.jobs.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Observer for StatusBoard {
    fn on_run(&self, event: &RunEvent) {
        match event {
            RunEvent::Started {
                job, attempt: 1, ..
            } => self.update(job, |s| s.running += 1),
            RunEvent::Finished(report) => self.update(&report.job, |s| {
                if report.attempts > 0 {
                    s.running = s.running.saturating_sub(1);
                }
                let finished = report.started_at
                    + chrono::Duration::from_std(report.duration).unwrap_or_default();
                s.last_run = Some(LastRun {
                    scheduled: report.scheduled,
                    outcome: report.outcome.label(),
                    finished,
                });
            }),
            _ => {}
        }
    }

    fn on_election(&self, _event: &ElectionEvent) {}

    fn on_dispatch(&self, event: &DispatchEvent) {
        match event {
            DispatchEvent::NextRun { job, at } => self.update(job, |s| s.next_run = *at),
            DispatchEvent::JobsApplied { jobs, .. } => self.set_jobs(jobs),
            DispatchEvent::Skipped { .. } | DispatchEvent::MissedSlots { .. } => {}
        }
    }

    fn on_config_reload(&self, reload: &ConfigReload) {
        let mut config = self.config.lock().unwrap_or_else(PoisonError::into_inner);
        match reload {
            ConfigReload::Applied { origin, hash, .. } => {
                *config = ConfigStatus {
                    source: Some(origin.clone()),
                    hash: Some(crate::observe::hash_hex(*hash)),
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
pub async fn serve_starting(listener: TcpListener, stop: CancellationToken) -> Result<(), Error> {
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
    use crate::term::FencingToken;
    use chrono::Utc;
    use tokio::time::Instant;

    use crate::config::{self, LoadOptions};
    use crate::runner::{Outcome, RunReport};

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
        let scheduled = Utc::now();
        RunEvent::Finished(RunReport {
            job: job.to_owned(),
            scheduled,
            attempts,
            outcome: Outcome::TimedOut,
            started_at: scheduled,
            duration: Duration::from_secs(2),
            start_delay: Duration::ZERO,
            fencing_token: 1,
            leftover_processes_killed: 0,
        })
    }

    #[test]
    fn the_board_tracks_running_runs_last_run_and_next_fire() {
        let board = StatusBoard::new("me");
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
        let board = StatusBoard::new("me");
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
        let board = StatusBoard::new("me");
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
        handle.end().await;
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
