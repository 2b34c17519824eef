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
    Encoder as _, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

mod jobs;

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
    /// The job-labelled series of the jobs in force (the jobs whose series exist), under one lock that
    /// job-labelled updates, [`Metrics::set_jobs`] and a scrape's collection take.
    jobs: Arc<jobs::JobSeries>,
    /// Held by a scrape and by the swap of `leasecron_config_info`'s series: a scrape sees one of them.
    scrape: Mutex<()>,
    is_leader: IntGauge,
    lease_transitions: IntGauge,
    acquired: IntCounter,
    lost: IntCounterVec,
    renew_failures: IntCounter,
    token_regressions: IntCounter,
    request_duration: HistogramVec,
    start_delay: Histogram,
    config_reloads: IntCounterVec,
    config_successful: IntGauge,
    config_success_time: prometheus::Gauge,
    config_hash: prometheus::Gauge,
    config_info: IntGaugeVec,
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
        let jobs = Arc::new(jobs::JobSeries::new()?);
        r.register(Box::new(Shared(Arc::clone(&jobs))))?;
        let metrics = Self {
            jobs,
            scrape: Mutex::new(()),
            is_leader: register(&r, IntGauge::new("leasecron_is_leader", "1 while this replica holds the lease and leads a term, else 0."))?,
            lease_transitions: register(&r, IntGauge::new("leasecron_lease_transitions", "The Lease's leaseTransitions as last observed by this replica (survives restarts, for flapping alerts)."))?,
            acquired: register(&r, IntCounter::new("leasecron_leadership_acquired_total", "Leadership terms this replica began."))?,
            lost: register(&r, IntCounterVec::new(Opts::new("leasecron_leadership_lost_total", "Leadership terms this replica ended, by reason."), &["reason"]))?,
            renew_failures: register(&r, IntCounter::new("leasecron_lease_renew_failures_total", "Lease renew attempts that failed (the term continues until its renew deadline)."))?,
            token_regressions: register(&r, IntCounter::new("leasecron_fencing_token_regressions_total", "Times the fencing tokens went backwards: a Lease observed with a lower leaseTransitions than before, or an acquisition that found the Lease and the run state both below a token this replica had seen (both deleted or rewritten). This replica's own terms continue above the largest token it has seen."))?,
            request_duration: register(&r, HistogramVec::new(histogram_opts("leasecron_lease_request_duration_seconds", "Duration of lease store requests, by verb.", &REQUEST_DURATION_BUCKETS), &["verb"]))?,
            start_delay: register(&r, Histogram::with_opts(histogram_opts("leasecron_job_start_delay_seconds", "How late a run's first attempt started after its slot fired (the slot plus the job's jitter offset).", &START_DELAY_BUCKETS)))?,
            config_reloads: register(&r, IntCounterVec::new(Opts::new("leasecron_config_reloads_total", "Jobs file reloads, by result."), &["result"]))?,
            config_successful: register(&r, IntGauge::new("leasecron_config_last_reload_successful", "1 if the last load or reload of the jobs succeeded, 0 if it failed (the last good jobs stay in force)."))?,
            config_success_time: register(&r, prometheus::Gauge::new("leasecron_config_last_reload_success_timestamp_seconds", "Unix time at which the jobs in force were loaded."))?,
            config_hash: register(&r, prometheus::Gauge::new("leasecron_config_hash", "Hash of the jobs text in force as a number (the top 53 bits of the FNV-1a 64 that leasecron_config_info's hash label and /status show in hex), to compare replicas."))?,
            config_info: register(&r, IntGaugeVec::new(Opts::new("leasecron_config_info", "Always 1; the hash label is the hash of the jobs text in force (FNV-1a 64, 16 hex digits, as /status shows it): equal on replicas that run the same version. Absent until the jobs are loaded."), &["hash"]))?,
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
        // The suspensions' lock first, as in `set_controls`: a scrape sees the new set with its
        // `leasecron_job_suspended` values.
        let mut suspensions = self.lock_suspensions();
        suspensions.0 = jobs
            .jobs
            .iter()
            .filter(|job| job.suspend)
            .map(|job| job.name.clone())
            .collect();
        let (by_file, by_operator) = &*suspensions;
        let mut known = self.lock_jobs();
        let mut next = BTreeMap::new();
        for job in &jobs.jobs {
            let mut cells = known.remove(&job.name).unwrap_or_default();
            cells.set_suspended(by_file.contains(&job.name) || by_operator.contains(&job.name));
            next.insert(job.name.clone(), cells);
        }
        *known = next;
    }

    /// Makes the operators' suspensions of `controls` the ones `leasecron_job_suspended` counts.
    pub fn set_controls(&self, controls: &Controls) {
        let mut suspensions = self.lock_suspensions();
        suspensions.1 = controls.suspended.keys().cloned().collect();
        self.publish_suspensions(&suspensions);
    }

    fn publish_suspensions(&self, (by_file, by_operator): &(BTreeSet<String>, BTreeSet<String>)) {
        for (job, cells) in self.lock_jobs().iter_mut() {
            cells.set_suspended(by_file.contains(job) || by_operator.contains(job));
        }
    }

    fn lock_suspensions(&self) -> MutexGuard<'_, (BTreeSet<String>, BTreeSet<String>)> {
        self.suspensions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts an operator's request that this replica carried out or refused.
    fn request(&self, job: &str, kind: RequestKind, state: RequestState) {
        if let Some(cells) = self.lock_jobs().get_mut(job) {
            cells.count_request(kind.as_str(), state.as_str());
        }
    }

    /// Records a runner event: running attempts, finished runs by outcome, durations, start delay, last
    /// success, processes left behind, and the runner's own skips.
    pub fn observe_run(&self, event: &RunEvent) {
        let mut known = self.lock_jobs();
        match event {
            // A run counts as running from its first attempt's spawn to its end, backoff included.
            RunEvent::Started {
                job, attempt: 1, ..
            } => {
                if let Some(cells) = known.get_mut(job) {
                    *cells.running() += 1;
                }
            }
            RunEvent::Cluster { job, action, .. } => {
                if let Some(cells) = known.get_mut(job) {
                    cells.count_cluster(action);
                    let running = cells.running();
                    match action {
                        ClusterAction::Created | ClusterAction::Adopted { .. } => *running += 1,
                        ClusterAction::HandedOver => *running = (*running - 1).max(0),
                        ClusterAction::Deleted => {}
                    }
                }
            }
            RunEvent::Finished(report) => {
                let Some(cells) = known.get_mut(&report.job) else {
                    return;
                };
                if report.attempts > 0 {
                    let running = cells.running();
                    *running = (*running - 1).max(0);
                    self.start_delay.observe(report.start_delay.as_secs_f64());
                }
                cells.count_run(&report.outcome);
                cells.observe_duration(report.duration.as_secs_f64());
                cells.add_leftovers(u64::from(report.leftover_processes_killed));
                if report.outcome == Outcome::Succeeded {
                    let finished = report.started_at
                        + chrono::Duration::from_std(report.duration).unwrap_or_default();
                    cells.set_last_success(unix_seconds(finished));
                }
            }
            RunEvent::Skipped { job, reason, .. } => {
                if let Some(cells) = known.get_mut(job) {
                    cells.count_skips(*reason, 1);
                }
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
        if let Some(cells) = self.lock_jobs().get_mut(job) {
            cells.count_skips(reason, count);
        }
    }

    /// Sets the job's next fire time; `None` (no future fire) removes the series.
    pub fn next_run(&self, job: &str, at: Option<DateTime<Utc>>) {
        if let Some(cells) = self.lock_jobs().get_mut(job) {
            cells.set_next_run(at.map(unix_seconds));
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
                let _consistent = self.lock_scrape();
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
            let _consistent = self.lock_scrape();
            self.registry.gather()
        };
        let mut buf = Vec::new();
        TextEncoder::new()
            .encode(&families, &mut buf)
            .map_err(|e| Error::Encode(e.to_string()))?;
        String::from_utf8(buf).map_err(|e| Error::Encode(e.to_string()))
    }

    fn lock_jobs(&self) -> MutexGuard<'_, BTreeMap<String, jobs::Cells>> {
        self.jobs.lock()
    }

    fn lock_scrape(&self) -> MutexGuard<'_, ()> {
        self.scrape.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The registry's handle on the job-labelled series that [`Metrics`] updates.
struct Shared(Arc<jobs::JobSeries>);

impl Collector for Shared {
    fn desc(&self) -> Vec<&Desc> {
        self.0.desc()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        self.0.collect()
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
