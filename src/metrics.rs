//! The Prometheus metrics of docs/design.md §3, on a [`Metrics`] that owns its own `Registry` (no global).
//!
//! Labels are bounded: a `job` label value only ever comes from the loaded [`JobSet`]. Events naming a
//! job outside the current set (a run of a job removed by a reload, still finishing) are ignored, and
//! [`Metrics::set_jobs`] deletes every series of a job that left the set. `set_jobs` and [`Metrics::encode`]
//! take the same lock, so a scrape sees the job set either entirely before or entirely after a reload.
//!
//! [`Metrics`] is an [`Observer`]: the app's fan-out task feeds it the runner's, the elector's and the
//! dispatcher's events.

use chrono::{DateTime, Utc};
use prometheus::core::{Collector, Desc, Describer as _};
use prometheus::proto::MetricFamily;
use prometheus::{
    Encoder as _, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec,
    IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};
use std::collections::BTreeSet;
use std::sync::{Mutex, MutexGuard, PoisonError};

use crate::config::JobSet;
use crate::controls::Controls;
use crate::event::{
    hash_hex, ClusterAction, ConfigReload, DispatchEvent, ElectionEvent, LossReason, Outcome,
    RunEvent, SkipReason,
};
use crate::lease_store::Verb;
use crate::observe::Observer;
use crate::run_state::{RequestKind, RequestState};

/// The content type of [`Metrics::encode`]'s output (Prometheus text exposition format 0.0.4).
pub const CONTENT_TYPE: &str = prometheus::TEXT_FORMAT;

/// Every `result` label value of `leasecron_config_reloads_total`.
pub(crate) const RELOAD_RESULTS: [&str; 2] = ["success", "failure"];

/// Buckets of `leasecron_job_start_delay_seconds`: from 1 ms, since a healthy leader starts within a few.
pub(crate) const START_DELAY_BUCKETS: [f64; 13] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Buckets of `leasecron_job_duration_seconds`: jobs run from a fraction of a second to hours.
pub(crate) const JOB_DURATION_BUCKETS: [f64; 13] = [
    0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0, 21600.0,
];
/// Buckets of `leasecron_lease_request_duration_seconds`: API calls, bounded by their timeout.
pub(crate) const REQUEST_DURATION_BUCKETS: [f64; 13] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

const MILLIS_PER_SECOND: f64 = 1000.0;

/// Errors of the metrics registry.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A metric could not be created or registered (a programming error: names are constants).
    #[error("metrics registry: {0}")]
    Registry(#[from] prometheus::Error),
    /// The exposition text could not be encoded.
    #[error("metrics encoding: {0}")]
    Encode(String),
}

/// Every metric of leasecron, registered on an owned registry.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// The jobs whose series exist; held across job-labelled updates, [`Metrics::set_jobs`] and encoding.
    jobs: Mutex<BTreeSet<String>>,
    is_leader: IntGauge,
    lease_transitions: IntGauge,
    acquired: IntCounter,
    lost: IntCounterVec,
    renew_failures: IntCounter,
    token_regressions: IntCounter,
    request_duration: HistogramVec,
    runs: IntCounterVec,
    skipped: IntCounterVec,
    running: IntGaugeVec,
    duration: HistogramVec,
    start_delay: Histogram,
    last_success: GaugeVec,
    next_run: GaugeVec,
    config_reloads: IntCounterVec,
    config_successful: IntGauge,
    config_success_time: prometheus::Gauge,
    config_hash: prometheus::Gauge,
    config_info: IntGaugeVec,
    leftovers: IntCounterVec,
    /// `executor: kubernetes`: what happened to the runs' Jobs, by job and action (created on first use).
    kubernetes_jobs: IntCounterVec,
    job_count: IntGauge,
    suspended: IntGaugeVec,
    requests: IntCounterVec,
    /// The jobs suspended by the jobs file (`suspend: true`) and by operators (`leasecron suspend`).
    suspensions: Mutex<(BTreeSet<String>, BTreeSet<String>)>,
}

/// Creates a metric, registers it, and returns it.
fn register<M: prometheus::core::Collector + Clone + 'static>(
    registry: &Registry,
    metric: Result<M, prometheus::Error>,
) -> Result<M, Error> {
    let metric = metric?;
    registry.register(Box::new(metric.clone()))?;
    Ok(metric)
}

fn histogram_opts(name: &str, help: &str, buckets: &[f64]) -> HistogramOpts {
    HistogramOpts::new(name, help).buckets(buckets.to_vec())
}

// === impl Metrics ===

impl Metrics {
    /// A registry with every metric of docs/design.md §3, the process metrics, and `leasecron_build_info`.
    pub fn new() -> Result<Self, Error> {
        let r = Registry::new();
        #[cfg(target_os = "linux")]
        r.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        let build_info = register(
            &r,
            IntGaugeVec::new(
                Opts::new(
                    "leasecron_build_info",
                    "Always 1; the version label names the running build.",
                ),
                &["version"],
            ),
        )?;
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        let metrics = Self {
            jobs: Mutex::new(BTreeSet::new()),
            is_leader: register(&r, IntGauge::new("leasecron_is_leader", "1 while this replica holds the lease and leads a term, else 0."))?,
            lease_transitions: register(&r, IntGauge::new("leasecron_lease_transitions", "The Lease's leaseTransitions as last observed by this replica (survives restarts, for flapping alerts)."))?,
            acquired: register(&r, IntCounter::new("leasecron_leadership_acquired_total", "Leadership terms this replica began."))?,
            lost: register(&r, IntCounterVec::new(Opts::new("leasecron_leadership_lost_total", "Leadership terms this replica ended, by reason."), &["reason"]))?,
            renew_failures: register(&r, IntCounter::new("leasecron_lease_renew_failures_total", "Lease renew attempts that failed (the term continues until its renew deadline)."))?,
            token_regressions: register(&r, IntCounter::new("leasecron_fencing_token_regressions_total", "Times the fencing tokens went backwards: a Lease observed with a lower leaseTransitions than before, or an acquisition that found the Lease and the run state both below a token this replica had seen (both deleted or rewritten). This replica's own terms continue above the largest token it has seen."))?,
            request_duration: register(&r, HistogramVec::new(histogram_opts("leasecron_lease_request_duration_seconds", "Duration of lease store requests, by verb.", &REQUEST_DURATION_BUCKETS), &["verb"]))?,
            runs: register(&r, IntCounterVec::new(Opts::new("leasecron_job_runs_total", "Finished runs, by job and outcome."), &["job", "outcome"]))?,
            skipped: register(&r, IntCounterVec::new(Opts::new("leasecron_job_skipped_total", "Fires that started no run, by job and reason."), &["job", "reason"]))?,
            running: register(&r, IntGaugeVec::new(Opts::new("leasecron_job_running", "Runs of the job in flight (from the first attempt's start to the run's end)."), &["job"]))?,
            duration: register(&r, HistogramVec::new(histogram_opts("leasecron_job_duration_seconds", "Duration of finished runs (all attempts and backoff), by job.", &JOB_DURATION_BUCKETS), &["job"]))?,
            start_delay: register(&r, Histogram::with_opts(histogram_opts("leasecron_job_start_delay_seconds", "How late a run's first attempt started after its slot fired (the slot plus the job's jitter offset).", &START_DELAY_BUCKETS)))?,
            last_success: register(&r, GaugeVec::new(Opts::new("leasecron_job_last_success_timestamp_seconds", "Unix time at which the job's last successful run finished (absent until one succeeded here)."), &["job"]))?,
            next_run: register(&r, GaugeVec::new(Opts::new("leasecron_job_next_run_timestamp_seconds", "Unix time of the job's next scheduled fire (absent if it has none)."), &["job"]))?,
            config_reloads: register(&r, IntCounterVec::new(Opts::new("leasecron_config_reloads_total", "Jobs file reloads, by result."), &["result"]))?,
            config_successful: register(&r, IntGauge::new("leasecron_config_last_reload_successful", "1 if the last load or reload of the jobs succeeded, 0 if it failed (the last good jobs stay in force)."))?,
            config_success_time: register(&r, prometheus::Gauge::new("leasecron_config_last_reload_success_timestamp_seconds", "Unix time at which the jobs in force were loaded."))?,
            config_hash: register(&r, prometheus::Gauge::new("leasecron_config_hash", "Hash of the jobs text in force as a number (the top 53 bits of the FNV-1a 64 that leasecron_config_info's hash label and /status show in hex), to compare replicas."))?,
            config_info: register(&r, IntGaugeVec::new(Opts::new("leasecron_config_info", "Always 1; the hash label is the hash of the jobs text in force (FNV-1a 64, 16 hex digits, as /status shows it): equal on replicas that run the same version. Absent until the jobs are loaded."), &["hash"]))?,
            leftovers: register(&r, IntCounterVec::new(Opts::new("leasecron_job_leftover_processes_killed_total", "Processes the job's runs left behind, SIGKILLed as each attempt ended: alive in the attempt's process group after its process exited by itself, or outside the group carrying the attempt's LEASECRON_* variables."), &["job"]))?,
            job_count: register(&r, IntGauge::new("leasecron_jobs", "Jobs in the loaded jobs file."))?,
            kubernetes_jobs: register(&r, IntCounterVec::new(Opts::new("leasecron_kubernetes_jobs_total", "executor: kubernetes: the runs' Kubernetes Jobs this replica created, adopted (found active at the start of its term, created by an earlier one), handed over (still active when its term ended; the next leader adopts them) or deleted (Replace, cancelOnLeadershipLoss, history limits), by job and action."), &["job", "action"]))?,
            suspended: register(&r, IntGaugeVec::new(Opts::new("leasecron_job_suspended", "1 while the job is suspended (suspend: true in the jobs file, or leasecron suspend), else 0."), &["job"]))?,
            requests: register(&r, IntCounterVec::new(Opts::new("leasecron_operator_requests_total", "Operators' requests (leasecron trigger, backfill, suspend, resume) that this replica carried out (result done) or refused, by job and kind; counted by the leader that acknowledged each, once."), &["job", "kind", "result"]))?,
            suspensions: Mutex::new((BTreeSet::new(), BTreeSet::new())),
            registry: r,
        };
        metrics.registry.register(Box::new(ProcessCounter::new(
            "leasecron_log_write_errors_total",
            "Log lines lost because writing them to stderr failed (its reader is gone: EPIPE, EBADF, ...).",
            || crate::logging::STDERR.write_errors(),
        )?))?;
        metrics.registry.register(Box::new(ProcessCounter::new(
            "leasecron_log_lines_dropped_total",
            "Log lines dropped because stderr was not taking them (its reader is stopped and the log queue was full).",
            || crate::logging::STDERR.dropped(),
        )?))?;
        metrics.init_unlabelled_series();
        Ok(metrics)
    }

    /// Creates the series of every fixed label value at 0, so rates and alerts see them from the start.
    fn init_unlabelled_series(&self) {
        for reason in LossReason::ALL {
            self.lost.with_label_values(&[reason.as_str()]);
        }
        for verb in Verb::ALL {
            self.request_duration.with_label_values(&[verb.as_str()]);
        }
        for result in RELOAD_RESULTS {
            self.config_reloads.with_label_values(&[result]);
        }
    }

    /// Registers `collector`: a metric computed when gathered, such as [`crate::stall`]'s gauge.
    pub fn register(&self, collector: Box<dyn prometheus::core::Collector>) -> Result<(), Error> {
        self.registry.register(collector)?;
        Ok(())
    }

    /// Makes `jobs` the job set: creates its series at 0 and deletes the series of jobs not in it.
    pub fn set_jobs(&self, jobs: &JobSet) {
        let mut known = self.lock_jobs();
        let wanted: BTreeSet<String> = jobs.jobs.iter().map(|job| job.name.clone()).collect();
        for gone in known.difference(&wanted) {
            self.remove_job_series(gone);
        }
        for job in &wanted {
            self.create_job_series(job);
        }
        self.job_count
            .set(i64::try_from(wanted.len()).unwrap_or(i64::MAX));
        *known = wanted;
        drop(known);
        let mut suspensions = self.lock_suspensions();
        suspensions.0 = jobs
            .jobs
            .iter()
            .filter(|job| job.suspend)
            .map(|job| job.name.clone())
            .collect();
        self.publish_suspensions(&suspensions);
    }

    /// Makes the operators' suspensions of `controls` the ones `leasecron_job_suspended` counts.
    pub fn set_controls(&self, controls: &Controls) {
        let mut suspensions = self.lock_suspensions();
        suspensions.1 = controls.suspended.keys().cloned().collect();
        self.publish_suspensions(&suspensions);
    }

    fn publish_suspensions(&self, (by_file, by_operator): &(BTreeSet<String>, BTreeSet<String>)) {
        for job in self.lock_jobs().iter() {
            let suspended = by_file.contains(job) || by_operator.contains(job);
            self.suspended
                .with_label_values(&[job.as_str()])
                .set(i64::from(suspended));
        }
    }

    fn lock_suspensions(&self) -> MutexGuard<'_, (BTreeSet<String>, BTreeSet<String>)> {
        self.suspensions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts an operator's request that this replica carried out or refused.
    fn request(&self, job: &str, kind: RequestKind, state: RequestState) {
        if self.lock_jobs().contains(job) {
            self.requests
                .with_label_values(&[job, kind.as_str(), state.as_str()])
                .inc();
        }
    }

    fn create_job_series(&self, job: &str) {
        for outcome in Outcome::LABELS {
            self.runs.with_label_values(&[job, outcome]);
        }
        for reason in SkipReason::ALL {
            self.skipped.with_label_values(&[job, reason.as_str()]);
        }
        self.running.with_label_values(&[job]);
        self.duration.with_label_values(&[job]);
        self.leftovers.with_label_values(&[job]);
    }

    fn remove_job_series(&self, job: &str) {
        // Err only means the series did not exist (never created, e.g. no success yet): nothing to delete.
        for outcome in Outcome::LABELS {
            let _ = self.runs.remove_label_values(&[job, outcome]);
        }
        for reason in SkipReason::ALL {
            let _ = self.skipped.remove_label_values(&[job, reason.as_str()]);
        }
        let _ = self.running.remove_label_values(&[job]);
        let _ = self.duration.remove_label_values(&[job]);
        let _ = self.leftovers.remove_label_values(&[job]);
        let _ = self.suspended.remove_label_values(&[job]);
        for action in ClusterAction::LABELS {
            let _ = self.kubernetes_jobs.remove_label_values(&[job, action]);
        }
        for kind in RequestKind::ALL {
            for state in [RequestState::Done, RequestState::Refused] {
                let _ = self
                    .requests
                    .remove_label_values(&[job, kind.as_str(), state.as_str()]);
            }
        }
        let _ = self.last_success.remove_label_values(&[job]);
        let _ = self.next_run.remove_label_values(&[job]);
    }

    /// Records a runner event: running attempts, finished runs by outcome, durations, start delay, last
    /// success, processes left behind, and the runner's own skips.
    pub fn observe_run(&self, event: &RunEvent) {
        let known = self.lock_jobs();
        match event {
            // A run counts as running from its first attempt's spawn to its end, backoff included.
            RunEvent::Started {
                job, attempt: 1, ..
            } if known.contains(job) => {
                self.running.with_label_values(&[job.as_str()]).inc();
            }
            RunEvent::Cluster { job, action, .. } if known.contains(job) => {
                self.kubernetes_jobs
                    .with_label_values(&[job.as_str(), action.as_str()])
                    .inc();
                let running = self.running.with_label_values(&[job.as_str()]);
                match action {
                    ClusterAction::Created | ClusterAction::Adopted { .. } => running.inc(),
                    ClusterAction::HandedOver => running.set((running.get() - 1).max(0)),
                    ClusterAction::Deleted => {}
                }
            }
            RunEvent::Finished(report) if known.contains(&report.job) => {
                let job = report.job.as_str();
                if report.attempts > 0 {
                    let running = self.running.with_label_values(&[job]);
                    running.set((running.get() - 1).max(0));
                    self.start_delay.observe(report.start_delay.as_secs_f64());
                }
                self.runs
                    .with_label_values(&[job, report.outcome.as_str()])
                    .inc();
                self.duration
                    .with_label_values(&[job])
                    .observe(report.duration.as_secs_f64());
                self.leftovers
                    .with_label_values(&[job])
                    .inc_by(u64::from(report.leftover_processes_killed));
                if report.outcome == Outcome::Succeeded {
                    let finished = report.started_at
                        + chrono::Duration::from_std(report.duration).unwrap_or_default();
                    self.last_success
                        .with_label_values(&[job])
                        .set(unix_seconds(finished));
                }
            }
            RunEvent::Skipped { job, reason, .. } => {
                self.count_skip(&known, job, *reason, 1);
            }
            _ => {}
        }
    }

    /// Records an elector event: leadership, transitions, renew failures, fencing token regressions,
    /// request durations.
    pub fn observe_election(&self, event: &ElectionEvent) {
        match event {
            ElectionEvent::Observed {
                lease_transitions, ..
            } => self.lease_transitions.set(i64::from(*lease_transitions)),
            ElectionEvent::Acquired { .. } => {
                self.acquired.inc();
                self.is_leader.set(1);
            }
            ElectionEvent::Lost { reason, .. } => {
                self.lost.with_label_values(&[reason.as_str()]).inc();
                self.is_leader.set(0);
            }
            ElectionEvent::Released { .. } => self.is_leader.set(0),
            ElectionEvent::RenewFailed { .. } => self.renew_failures.inc(),
            ElectionEvent::TokenRegression { .. } => self.token_regressions.inc(),
            ElectionEvent::Request { verb, duration, .. } => self
                .request_duration
                .with_label_values(&[verb.as_str()])
                .observe(duration.as_secs_f64()),
        }
    }

    /// Counts a fire of `job` that started nothing.
    pub fn skipped(&self, job: &str, reason: SkipReason) {
        self.skipped_many(job, reason, 1);
    }

    /// Counts `count` fires of `job` that started nothing (slots missed while no replica led).
    pub fn skipped_many(&self, job: &str, reason: SkipReason, count: u64) {
        let known = self.lock_jobs();
        self.count_skip(&known, job, reason, count);
    }

    fn count_skip(&self, known: &BTreeSet<String>, job: &str, reason: SkipReason, count: u64) {
        if known.contains(job) {
            self.skipped
                .with_label_values(&[job, reason.as_str()])
                .inc_by(count);
        }
    }

    /// Sets the job's next fire time; `None` (no future fire) removes the series.
    pub fn next_run(&self, job: &str, at: Option<DateTime<Utc>>) {
        let known = self.lock_jobs();
        if !known.contains(job) {
            return;
        }
        match at {
            Some(at) => self
                .next_run
                .with_label_values(&[job])
                .set(unix_seconds(at)),
            None => {
                let _ = self.next_run.remove_label_values(&[job]);
            }
        }
    }

    /// Records a load (at start: not counted as a reload) or a reload of the jobs.
    pub fn config_reload(&self, reload: &ConfigReload) {
        match reload {
            ConfigReload::Applied { hash, initial, .. } => {
                if !initial {
                    self.config_reloads.with_label_values(&["success"]).inc();
                }
                self.config_successful.set(1);
                self.config_success_time.set(unix_seconds(Utc::now()));
                // An f64 holds 53 bits exactly.
                self.config_hash.set((hash >> 11) as f64);
                // Under the scrape lock: a scrape sees the old hash or the new one, never none or both.
                let _consistent = self.lock_jobs();
                self.config_info.reset();
                self.config_info
                    .with_label_values(&[&hash_hex(*hash)])
                    .set(1);
            }
            ConfigReload::Failed { .. } => {
                self.config_reloads.with_label_values(&["failure"]).inc();
                self.config_successful.set(0);
            }
        }
    }

    /// The whole registry in the Prometheus text exposition format ([`CONTENT_TYPE`]).
    pub fn encode(&self) -> Result<String, Error> {
        let families = {
            let _consistent = self.lock_jobs();
            self.registry.gather()
        };
        let mut buf = Vec::new();
        TextEncoder::new()
            .encode(&families, &mut buf)
            .map_err(|e| Error::Encode(e.to_string()))?;
        String::from_utf8(buf).map_err(|e| Error::Encode(e.to_string()))
    }

    fn lock_jobs(&self) -> MutexGuard<'_, BTreeSet<String>> {
        // The set is replaced in one assignment: it is consistent even after a panic elsewhere.
        self.jobs.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Observer for Metrics {
    fn on_run(&self, event: &RunEvent) {
        self.observe_run(event);
    }

    fn on_election(&self, event: &ElectionEvent) {
        self.observe_election(event);
    }

    fn on_dispatch(&self, event: &DispatchEvent) {
        match event {
            // Every replica's timers fire; only the leader's skips are skips of a run.
            DispatchEvent::Skipped {
                job,
                reason,
                leader: true,
                ..
            } => self.skipped(job, *reason),
            DispatchEvent::Skipped { .. } => {}
            DispatchEvent::NextRun { job, at } => self.next_run(job, *at),
            DispatchEvent::JobsApplied { jobs, .. } => self.set_jobs(jobs),
            // Sent by a leader only, when its term began.
            DispatchEvent::MissedSlots { job, count, .. } => {
                self.skipped_many(job, SkipReason::MissedDeadline, *count)
            }
            DispatchEvent::Request {
                job, kind, state, ..
            } => self.request(job, *kind, *state),
            DispatchEvent::ControlsApplied { controls } => self.set_controls(controls),
        }
    }

    fn on_config_reload(&self, reload: &ConfigReload) {
        self.config_reload(reload);
    }
}

/// A counter kept outside the registry (a process-wide atomic), read at each scrape.
struct ProcessCounter {
    opts: Opts,
    desc: Desc,
    read: fn() -> u64,
}

impl ProcessCounter {
    fn new(name: &str, help: &str, read: fn() -> u64) -> Result<Self, prometheus::Error> {
        let opts = Opts::new(name, help);
        let desc = opts.describe()?;
        Ok(Self { opts, desc, read })
    }
}

impl Collector for ProcessCounter {
    fn desc(&self) -> Vec<&Desc> {
        vec![&self.desc]
    }

    fn collect(&self) -> Vec<MetricFamily> {
        // A fresh counter per scrape: concurrent scrapes never add the value twice.
        match IntCounter::with_opts(self.opts.clone()) {
            Ok(counter) => {
                counter.inc_by((self.read)());
                counter.collect()
            }
            Err(_) => Vec::new(),
        }
    }
}

impl std::fmt::Debug for ProcessCounter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessCounter")
            .field("name", &self.opts.name)
            .finish_non_exhaustive()
    }
}

/// Seconds since the Unix epoch, with millisecond precision (what Prometheus timestamps carry).
fn unix_seconds(at: DateTime<Utc>) -> f64 {
    at.timestamp_millis() as f64 / MILLIS_PER_SECOND
}
