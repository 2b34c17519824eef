//! The job-labelled series, kept as plain numbers per job and turned into metric families at each scrape.
//!
//! prometheus's `*Vec` metrics keep every series as an object of its own that carries a copy of its
//! family's description (name, help text, label names) and its label pairs as strings: with the 16 series
//! each job has from the start, that was about 11 KiB a job, most of an idle replica's heap at 10 000
//! jobs (benches/heap_scale.rs). [`JobSeries`] keeps a job's series in one [`Cells`] (about 250 bytes)
//! under one lock, and builds the families only while a scrape encodes them: the exposition is the same,
//! series for series (the registry sorts families by name and series by label values).
//!
//! The one lock also makes a scrape see the job set of a reload entirely or not at all.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

use prometheus::core::{Collector, Desc, Describer as _};
use prometheus::proto::{self, LabelPair, Metric, MetricFamily, MetricType};
use prometheus::Opts;

use crate::event::{ClusterAction, Outcome, SkipReason};

/// One family's name, help, type and label names.
struct Family {
    desc: Desc,
    kind: MetricType,
}

/// Every job-labelled family, in the order of [`JobSeries::families`].
const RUNS: usize = 0;
const SKIPPED: usize = 1;
const RUNNING: usize = 2;
const DURATION: usize = 3;
const LAST_SUCCESS: usize = 4;
const NEXT_RUN: usize = 5;
const LEFTOVERS: usize = 6;
const KUBERNETES: usize = 7;
const SUSPENDED: usize = 8;
const REQUESTS: usize = 9;
const JOB_COUNT: usize = 10;

/// The families: (name, help, type, label names). The help texts are those of docs/design.md §3.
const FAMILIES: [(&str, &str, MetricType, &[&str]); 11] = [
    ("leasecron_job_runs_total", "Finished runs, by job and outcome.", MetricType::COUNTER, &["job", "outcome"]),
    ("leasecron_job_skipped_total", "Fires that started no run, by job and reason.", MetricType::COUNTER, &["job", "reason"]),
    ("leasecron_job_running", "Runs of the job in flight (from the first attempt's start to the run's end).", MetricType::GAUGE, &["job"]),
    ("leasecron_job_duration_seconds", "Duration of finished runs (all attempts and backoff), by job.", MetricType::HISTOGRAM, &["job"]),
    ("leasecron_job_last_success_timestamp_seconds", "Unix time at which the job's last successful run finished (absent until one succeeded here).", MetricType::GAUGE, &["job"]),
    ("leasecron_job_next_run_timestamp_seconds", "Unix time of the job's next scheduled fire (absent if it has none).", MetricType::GAUGE, &["job"]),
    ("leasecron_job_leftover_processes_killed_total", "Processes the job's runs left behind, SIGKILLed as each attempt ended: alive in the attempt's process group after its process exited by itself, or outside the group carrying the attempt's LEASECRON_* variables.", MetricType::COUNTER, &["job"]),
    ("leasecron_kubernetes_jobs_total", "executor: kubernetes: the runs' Kubernetes Jobs this replica created, adopted (found active at the start of its term, created by an earlier one), handed over (still active when its term ended; the next leader adopts them) or deleted (Replace, cancelOnLeadershipLoss, history limits), by job and action.", MetricType::COUNTER, &["job", "action"]),
    ("leasecron_job_suspended", "1 while the job is suspended (suspend: true in the jobs file, or leasecron suspend), else 0.", MetricType::GAUGE, &["job"]),
    ("leasecron_operator_requests_total", "Operators' requests (leasecron trigger, backfill, suspend, resume) that this replica carried out (result done) or refused, by job and kind; counted by the leader that acknowledged each, once.", MetricType::COUNTER, &["job", "kind", "result"]),
    ("leasecron_jobs", "Jobs in the loaded jobs file.", MetricType::GAUGE, &[]),
];

/// The histogram of a job without a finished run.
const NO_RUNS: Histogram = Histogram {
    buckets: [0; super::JOB_DURATION_BUCKETS.len()],
    sum: 0.0,
    count: 0,
};

/// A histogram's cells: the count of each bucket (not cumulative), the sum and the count.
#[derive(Debug, Clone, Default)]
struct Histogram {
    buckets: [u64; super::JOB_DURATION_BUCKETS.len()],
    sum: f64,
    count: u64,
}

/// One job's series. A series that exists from the job's load on is a plain number; one that exists
/// only once set or used (last success, next run, Kubernetes actions, operator requests) is an `Option`
/// or a list.
#[derive(Debug, Clone, Default)]
pub(super) struct Cells {
    /// By [`Outcome::LABELS`].
    runs: [u64; Outcome::LABELS.len()],
    /// By [`SkipReason::ALL`].
    skipped: [u64; SkipReason::ALL.len()],
    running: i64,
    /// `None` until the first run ends (boxed, as the Kubernetes actions: an idle job of a large set
    /// keeps only a pointer for them).
    duration: Option<Box<Histogram>>,
    last_success: Option<f64>,
    next_run: Option<f64>,
    leftovers: u64,
    /// By [`ClusterAction::LABELS`], each `None` until first used; all `None` until one is.
    kubernetes: Option<Box<[Option<u64>; ClusterAction::LABELS.len()]>>,
    suspended: bool,
    /// (kind, result, count), created on first use.
    requests: Vec<(&'static str, &'static str, u64)>,
}

impl Cells {
    pub(super) fn count_run(&mut self, outcome: &Outcome) {
        let index = Outcome::LABELS
            .iter()
            .position(|label| *label == outcome.as_str())
            .unwrap_or(0);
        self.runs[index] += 1;
    }

    pub(super) fn count_skips(&mut self, reason: SkipReason, count: u64) {
        let index = SkipReason::ALL
            .iter()
            .position(|r| *r == reason)
            .unwrap_or(0);
        self.skipped[index] += count;
    }

    pub(super) fn running(&mut self) -> &mut i64 {
        &mut self.running
    }

    /// As prometheus's `Histogram::observe`: the first bucket whose bound is at least `value`.
    pub(super) fn observe_duration(&mut self, value: f64) {
        if let Some(index) = super::JOB_DURATION_BUCKETS
            .iter()
            .position(|bound| value <= *bound)
        {
            self.duration.get_or_insert_with(Box::default).buckets[index] += 1;
        }
        let duration = self.duration.get_or_insert_with(Box::default);
        duration.sum += value;
        duration.count += 1;
    }

    pub(super) fn set_last_success(&mut self, at: f64) {
        self.last_success = Some(at);
    }

    pub(super) fn set_next_run(&mut self, at: Option<f64>) {
        self.next_run = at;
    }

    pub(super) fn add_leftovers(&mut self, count: u64) {
        self.leftovers += count;
    }

    pub(super) fn count_cluster(&mut self, action: &ClusterAction) {
        if let Some(index) = ClusterAction::LABELS
            .iter()
            .position(|label| *label == action.as_str())
        {
            *self.kubernetes.get_or_insert_with(Box::default)[index].get_or_insert(0) += 1;
        }
    }

    pub(super) fn set_suspended(&mut self, suspended: bool) {
        self.suspended = suspended;
    }

    pub(super) fn count_request(&mut self, kind: &'static str, result: &'static str) {
        match self
            .requests
            .iter_mut()
            .find(|(k, r, _)| *k == kind && *r == result)
        {
            Some((_, _, count)) => *count += 1,
            None => self.requests.push((kind, result, 1)),
        }
    }
}

/// The job-labelled series of every job in force, by job name; a [`Collector`] for the registry.
pub(super) struct JobSeries {
    families: Vec<Family>,
    jobs: Mutex<BTreeMap<String, Cells>>,
}

impl std::fmt::Debug for JobSeries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobSeries")
            .field("jobs", &self.lock().len())
            .finish_non_exhaustive()
    }
}

impl JobSeries {
    pub(super) fn new() -> Result<Self, prometheus::Error> {
        let families = FAMILIES
            .iter()
            .map(|(name, help, kind, labels)| {
                let labels: Vec<String> = labels.iter().map(|l| (*l).to_owned()).collect();
                Ok(Family {
                    desc: Opts::new(*name, *help).variable_labels(labels).describe()?,
                    kind: *kind,
                })
            })
            .collect::<Result<_, prometheus::Error>>()?;
        Ok(JobSeries {
            families,
            jobs: Mutex::new(BTreeMap::new()),
        })
    }

    /// The jobs and their series. The map is only ever changed whole-job at a time under this lock.
    pub(super) fn lock(&self) -> MutexGuard<'_, BTreeMap<String, Cells>> {
        self.jobs.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// `name="value"` pairs, sorted by name as prometheus sorts them.
fn labels(pairs: &[(&str, &str)]) -> Vec<LabelPair> {
    let mut labels: Vec<LabelPair> = pairs
        .iter()
        .map(|(name, value)| {
            let mut pair = LabelPair::default();
            pair.set_name((*name).to_owned());
            pair.set_value((*value).to_owned());
            pair
        })
        .collect();
    labels.sort();
    labels
}

fn counter(labels: Vec<LabelPair>, value: f64) -> Metric {
    let mut metric = Metric::from_label(labels);
    let mut counter = proto::Counter::default();
    counter.set_value(value);
    metric.set_counter(counter);
    metric
}

fn gauge(labels: Vec<LabelPair>, value: f64) -> Metric {
    let mut metric = Metric::from_label(labels);
    let mut gauge = proto::Gauge::default();
    gauge.set_value(value);
    metric.set_gauge(gauge);
    metric
}

fn histogram(labels: Vec<LabelPair>, cells: &Histogram) -> Metric {
    let mut metric = Metric::from_label(labels);
    let mut histogram = proto::Histogram::default();
    histogram.set_sample_sum(cells.sum);
    histogram.set_sample_count(cells.count);
    let mut cumulative = 0;
    let buckets = super::JOB_DURATION_BUCKETS
        .iter()
        .zip(cells.buckets)
        .map(|(bound, count)| {
            cumulative += count;
            let mut bucket = proto::Bucket::default();
            bucket.set_cumulative_count(cumulative);
            bucket.set_upper_bound(*bound);
            bucket
        })
        .collect();
    histogram.set_bucket(buckets);
    metric.set_histogram(histogram);
    metric
}

impl Collector for JobSeries {
    fn desc(&self) -> Vec<&Desc> {
        self.families.iter().map(|family| &family.desc).collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let mut metrics: Vec<Vec<Metric>> = vec![Vec::new(); self.families.len()];
        let jobs = self.lock();
        for (job, cells) in jobs.iter() {
            let job = job.as_str();
            for (outcome, count) in Outcome::LABELS.iter().zip(cells.runs) {
                metrics[RUNS].push(counter(
                    labels(&[("job", job), ("outcome", outcome)]),
                    count as f64,
                ));
            }
            for (reason, count) in SkipReason::ALL.iter().zip(cells.skipped) {
                metrics[SKIPPED].push(counter(
                    labels(&[("job", job), ("reason", reason.as_str())]),
                    count as f64,
                ));
            }
            metrics[RUNNING].push(gauge(labels(&[("job", job)]), cells.running as f64));
            let duration = cells.duration.as_deref().unwrap_or(&NO_RUNS);
            metrics[DURATION].push(histogram(labels(&[("job", job)]), duration));
            if let Some(at) = cells.last_success {
                metrics[LAST_SUCCESS].push(gauge(labels(&[("job", job)]), at));
            }
            if let Some(at) = cells.next_run {
                metrics[NEXT_RUN].push(gauge(labels(&[("job", job)]), at));
            }
            metrics[LEFTOVERS].push(counter(labels(&[("job", job)]), cells.leftovers as f64));
            let actions = cells.kubernetes.as_deref().into_iter().flatten();
            for (action, count) in ClusterAction::LABELS.iter().zip(actions) {
                if let Some(count) = *count {
                    metrics[KUBERNETES].push(counter(
                        labels(&[("job", job), ("action", action)]),
                        count as f64,
                    ));
                }
            }
            metrics[SUSPENDED].push(gauge(
                labels(&[("job", job)]),
                f64::from(u8::from(cells.suspended)),
            ));
            for (kind, result, count) in &cells.requests {
                metrics[REQUESTS].push(counter(
                    labels(&[("job", job), ("kind", kind), ("result", result)]),
                    *count as f64,
                ));
            }
        }
        metrics[JOB_COUNT].push(gauge(Vec::new(), jobs.len() as f64));
        drop(jobs);
        self.families
            .iter()
            .zip(metrics)
            .map(|(family, metrics)| {
                let mut out = MetricFamily::default();
                out.set_name(family.desc.fq_name.clone());
                out.set_help(family.desc.help.clone());
                out.set_field_type(family.kind);
                out.set_metric(metrics);
                out
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Failure;
    use prometheus::{
        Encoder as _, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec,
        Registry, TextEncoder,
    };

    fn encode(registry: &Registry) -> String {
        let mut buf = Vec::new();
        TextEncoder::new()
            .encode(&registry.gather(), &mut buf)
            .expect("encodes");
        String::from_utf8(buf).expect("UTF-8")
    }

    fn opts(index: usize) -> Opts {
        Opts::new(FAMILIES[index].0, FAMILIES[index].1)
    }

    /// The same series, set through prometheus's own `*Vec` metrics and through [`JobSeries`], encode to
    /// the same text: the exposition did not change.
    #[test]
    fn the_exposition_is_that_of_prometheus_vec_metrics() {
        let ours = JobSeries::new().expect("families");
        {
            let mut jobs = ours.lock();
            let mut busy = Cells::default();
            busy.count_run(&Outcome::Succeeded);
            busy.count_run(&Outcome::Succeeded);
            busy.count_run(&Outcome::Failed(Failure::ExitCode(2)));
            busy.count_skips(SkipReason::Overlap, 3);
            busy.count_skips(SkipReason::QueueReplaced, 1);
            *busy.running() = 1;
            for seconds in [0.05, 0.3, 7200.0, 1e6] {
                busy.observe_duration(seconds);
            }
            busy.set_last_success(1_700_000_000.25);
            busy.set_next_run(Some(1_800_000_000.5));
            busy.add_leftovers(2);
            busy.count_cluster(&ClusterAction::Created);
            busy.count_cluster(&ClusterAction::Deleted);
            busy.count_cluster(&ClusterAction::Deleted);
            busy.set_suspended(true);
            busy.count_request("trigger", "done");
            busy.count_request("backfill", "refused");
            busy.count_request("trigger", "done");
            jobs.insert("busy".to_owned(), busy);
            let mut quiet = Cells::default();
            quiet.set_next_run(Some(1_800_000_060.0));
            jobs.insert("a-quiet".to_owned(), quiet);
            jobs.insert("z-new".to_owned(), Cells::default());
        }
        let registry = Registry::new();
        registry.register(Box::new(ours)).expect("registers");

        let theirs = Registry::new();
        let runs = IntCounterVec::new(opts(RUNS), &["job", "outcome"]).expect("runs");
        let skipped = IntCounterVec::new(opts(SKIPPED), &["job", "reason"]).expect("skipped");
        let running = IntGaugeVec::new(opts(RUNNING), &["job"]).expect("running");
        let duration = HistogramVec::new(
            HistogramOpts::new(FAMILIES[DURATION].0, FAMILIES[DURATION].1)
                .buckets(super::super::JOB_DURATION_BUCKETS.to_vec()),
            &["job"],
        )
        .expect("duration");
        let last_success = GaugeVec::new(opts(LAST_SUCCESS), &["job"]).expect("last success");
        let next_run = GaugeVec::new(opts(NEXT_RUN), &["job"]).expect("next run");
        let leftovers = IntCounterVec::new(opts(LEFTOVERS), &["job"]).expect("leftovers");
        let kubernetes =
            IntCounterVec::new(opts(KUBERNETES), &["job", "action"]).expect("kubernetes");
        let suspended = IntGaugeVec::new(opts(SUSPENDED), &["job"]).expect("suspended");
        let requests =
            IntCounterVec::new(opts(REQUESTS), &["job", "kind", "result"]).expect("requests");
        let count = IntGauge::with_opts(opts(JOB_COUNT)).expect("count");
        for job in ["busy", "a-quiet", "z-new"] {
            for outcome in Outcome::LABELS {
                runs.with_label_values(&[job, outcome]);
            }
            for reason in SkipReason::ALL {
                skipped.with_label_values(&[job, reason.as_str()]);
            }
            running.with_label_values(&[job]);
            duration.with_label_values(&[job]);
            leftovers.with_label_values(&[job]);
            suspended.with_label_values(&[job]).set(0);
        }
        runs.with_label_values(&["busy", "succeeded"]).inc_by(2);
        runs.with_label_values(&["busy", "failed"]).inc();
        skipped.with_label_values(&["busy", "overlap"]).inc_by(3);
        skipped.with_label_values(&["busy", "queue_replaced"]).inc();
        running.with_label_values(&["busy"]).set(1);
        for seconds in [0.05, 0.3, 7200.0, 1e6] {
            duration.with_label_values(&["busy"]).observe(seconds);
        }
        last_success
            .with_label_values(&["busy"])
            .set(1_700_000_000.25);
        next_run.with_label_values(&["busy"]).set(1_800_000_000.5);
        next_run
            .with_label_values(&["a-quiet"])
            .set(1_800_000_060.0);
        leftovers.with_label_values(&["busy"]).inc_by(2);
        kubernetes.with_label_values(&["busy", "created"]).inc();
        kubernetes.with_label_values(&["busy", "deleted"]).inc_by(2);
        suspended.with_label_values(&["busy"]).set(1);
        requests
            .with_label_values(&["busy", "trigger", "done"])
            .inc_by(2);
        requests
            .with_label_values(&["busy", "backfill", "refused"])
            .inc();
        count.set(3);
        theirs.register(Box::new(runs)).expect("registers");
        theirs.register(Box::new(skipped)).expect("registers");
        theirs.register(Box::new(running)).expect("registers");
        theirs.register(Box::new(duration)).expect("registers");
        theirs.register(Box::new(last_success)).expect("registers");
        theirs.register(Box::new(next_run)).expect("registers");
        theirs.register(Box::new(leftovers)).expect("registers");
        theirs.register(Box::new(kubernetes)).expect("registers");
        theirs.register(Box::new(suspended)).expect("registers");
        theirs.register(Box::new(requests)).expect("registers");
        theirs.register(Box::new(count)).expect("registers");

        let text = encode(&registry);
        assert_eq!(text, encode(&theirs));
        assert!(text.contains("leasecron_job_runs_total{job=\"z-new\",outcome=\"cancelled\"} 0\n"));
        assert!(text.contains("leasecron_jobs 3\n"));
    }

    /// With no job, only the job count is exported, at 0 (the empty families are left out).
    #[test]
    fn no_job_exports_only_the_count() {
        let registry = Registry::new();
        registry
            .register(Box::new(JobSeries::new().expect("families")))
            .expect("registers");
        let text = encode(&registry);
        assert!(text.contains("leasecron_jobs 0\n"), "{text}");
        assert!(!text.contains("leasecron_job_runs_total"), "{text}");
    }
}
