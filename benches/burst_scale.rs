//! Many runs due at the same instant: `SCALE_BURST` (default 1 000) jobs whose schedule fires once, at the
//! same second, a few seconds after start. Each runs a probe (the child records its own clock first, as in
//! `start_lag`) and exits. leasecron's real timers, dispatcher and runner run as a leader, with the
//! observers `run` wires (metrics, `/status`), in a fresh process per variant:
//!
//! - no run state;
//! - the file run state (every slot claimed, written and fsynced, before its spawn), whose record already
//!   holds every job (each ran before: the steady state);
//! - no run state, every process started through the run supervisor (`Launcher::Supervised`, as
//!   `leasecron run` does: a small child process forks them, one request at a time, over a socket).
//!
//! Reported: the spread from the slot to each child's start (min, median, p99, max), slot → `spawn()`
//! (the runner), the time until every run has finished, failures and skips, that every job ran exactly
//! once, the most runs and file descriptors in use at once against `RLIMIT_NOFILE`, and the claims' writes.
//!
//! ```text
//! cargo bench --bench burst_scale                    # ~1 min
//! SCALE_BURST=2000 cargo bench --bench burst_scale
//! SCALE_PROBE_HOLD_MS=5000 cargo bench --bench burst_scale   # runs that last 5 s: all in flight at once
//! ```

#[path = "support/report.rs"]
mod report;
#[path = "support/scale.rs"]
mod scale;
#[path = "../tests/support/scale_jobs.rs"]
pub mod scale_jobs;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Timelike, Utc};
use leasecron::clock::{SharedClock, SystemClock};
use leasecron::config::{self, JobSet, LoadOptions};
use leasecron::dispatch::Dispatcher;
use leasecron::event::{DispatchEvent, ElectionEvent, Outcome, RunEvent};
use leasecron::http::StatusBoard;
use leasecron::metrics::Metrics;
use leasecron::observe::{self, Observer, Observers};
use scale::{Summary, PROBE_ENV};
use scale_jobs::JobSpec;
use tokio_util::sync::CancellationToken;

const WIDTH: usize = 44;
/// Runs the variant N in a child process (set by the parent).
const VARIANT_ENV: &str = "SCALE_VARIANT";
/// Where the child writes its figures.
const RESULT_ENV: &str = "SCALE_RESULT_OUT";
/// How long after start the burst is due: time to load the jobs and start every timer.
const LEAD_TIME: Duration = Duration::from_secs(5);
/// Longest wait for every run of the burst to finish.
const DRAIN_LIMIT: Duration = Duration::from_secs(120);

fn main() {
    if scale::probe_if_asked() {
        return;
    }
    let burst: usize = scale::env_or("SCALE_BURST", 1_000);
    // (name, file run state, through the run supervisor)
    let variants = [
        ("no run state", false, false),
        ("file run state (record holds every job)", true, false),
        ("no run state, supervised", false, true),
    ];
    if let Ok(index) = std::env::var(VARIANT_ENV) {
        let index: usize = index.parse().expect("a variant index");
        let out = std::env::var_os(RESULT_ENV).expect("a result file");
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let dir = tempfile::tempdir().expect("tempdir");
        let (_, with_state, supervised) = variants[index];
        let (report, figures) =
            runtime.block_on(burst_run(dir.path(), burst, with_state, supervised));
        std::fs::write(&out, report).expect("write the figures");
        std::fs::write(figures_path(Path::new(&out)), figures.to_string())
            .expect("write the figures");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    println!(
        "{burst} runs due at the same second (one job each, a probe that exits at once), each variant in a fresh process"
    );
    let mut results = report::Report::new("burst_scale");
    results
        .param("burst", burst)
        .param("lead_time_s", LEAD_TIME.as_secs())
        .param("probe_hold_ms", scale::env_or(scale::HOLD_ENV, 0u64));
    for (index, (name, ..)) in variants.iter().enumerate() {
        let out = dir.path().join(format!("report-{index}"));
        let status = std::process::Command::new(std::env::current_exe().expect("current exe"))
            .env(VARIANT_ENV, index.to_string())
            .env(RESULT_ENV, &out)
            .status()
            .expect("run the variant");
        assert!(status.success(), "variant {name} failed: {status}");
        println!("\n== {name}");
        print!("{}", std::fs::read_to_string(&out).expect("report"));
        let figures = std::fs::read_to_string(figures_path(&out)).expect("figures");
        let mut figures: serde_json::Value = serde_json::from_str(&figures).expect("figures");
        figures["name"] = (*name).into();
        results.raw(&format!("variant{index}"), figures);
    }
    results.write();
    println!(
        "\ngoal: all {burst} runs started (none skipped or lost); report the spread from the slot to the last start"
    );
}

/// Where a variant's child writes its figures as JSON, beside its text report `out`.
fn figures_path(out: &Path) -> std::path::PathBuf {
    out.with_extension("json")
}

/// Runs one burst in this process and returns the report's text and its figures as JSON.
async fn burst_run(
    work: &Path,
    burst: usize,
    with_state: bool,
    supervised: bool,
) -> (String, serde_json::Value) {
    let probes = work.join("probes");
    let due = scale::next_whole_second(
        Utc::now() + chrono::Duration::from_std(LEAD_TIME).expect("small"),
    );
    let set = jobs(burst, due, &probes);
    let clock: SharedClock = Arc::new(SystemClock);
    let metrics = Arc::new(Metrics::new().expect("metrics"));
    let ledger = match with_state {
        true => scale::steady_state_ledger(work, &set).await,
        false => scale::memory_ledger(),
    };
    let status = Arc::new(StatusBoard::new("bench", Arc::clone(&ledger)));
    let collector = Arc::new(Collector::default());
    metrics.set_jobs(&set);
    status.set_jobs(&set);
    let mut observers = Observers::new();
    observers.push(Arc::clone(&metrics) as Arc<dyn Observer>);
    observers.push(Arc::clone(&status) as Arc<dyn Observer>);
    observers.push(Arc::clone(&collector) as Arc<dyn Observer>);
    let (senders, receivers) = observe::channels();
    let fan_out = tokio::spawn(observers.run(receivers));
    drop(senders.election);

    let (handle, leadership, _leader) = scale::lead();
    let (runner, supervisor) = scale::bench_runner(
        supervised,
        Arc::clone(&clock),
        senders.runs,
        Arc::clone(&ledger),
    );
    let dispatcher =
        Dispatcher::new(runner, leadership, clock, ledger).with_events(senders.dispatch);
    let stop = CancellationToken::new();
    let running = {
        let stop = stop.clone();
        let (jobs_tx, jobs) = tokio::sync::watch::channel(Arc::new(set));
        tokio::spawn(async move {
            dispatcher.run(jobs, stop).await;
            drop(jobs_tx);
        })
    };
    let sampler = FdSampler::start();
    let state_writes_before = state_generation(work);
    // Wait for the burst, then for every run of it to finish.
    let wait = (due - Utc::now()).to_std().unwrap_or_default();
    tokio::time::sleep(wait).await;
    let drained = Instant::now();
    while collector.done.load(Ordering::Relaxed) < burst && drained.elapsed() < DRAIN_LIMIT {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (peak_fds, base_fds) = sampler.stop();
    stop.cancel();
    running.await.expect("the dispatcher stops");
    handle.end().await;
    if let Some(supervisor) = &supervisor {
        supervisor.stop().await;
    }
    let _ = tokio::time::timeout(Duration::from_secs(10), fan_out).await;
    let state_writes = state_generation(work).saturating_sub(state_writes_before);

    let mut out = String::new();
    let mut line = |text: String| {
        out.push_str(&text);
        out.push('\n');
    };
    let probes = scale::read_probes(&probes);
    let mut per_job: BTreeMap<&str, usize> = BTreeMap::new();
    for probe in &probes {
        *per_job.entry(probe.job.as_str()).or_default() += 1;
    }
    let ran_once = per_job.values().filter(|&&n| n == 1).count();
    let ran_twice = per_job.values().filter(|&&n| n > 1).count();
    let lags: Vec<f64> = probes
        .iter()
        .filter(|p| p.scheduled == due)
        .map(|p| p.lag_ms())
        .collect();
    let finished = collector.finished.lock().expect("lock").clone();
    let to_spawn: Vec<f64> = finished.iter().map(|f| f.to_spawn_ms).collect();
    let last_end = finished
        .iter()
        .map(|f| f.ended)
        .max()
        .map(|end| (end - due).num_microseconds().unwrap_or(0) as f64 / 1e3);
    // By reason: the last part of the message (`Too many open files (os error 24)`), not the job's name.
    let failed: Vec<String> = finished
        .iter()
        .filter(|f| !f.succeeded)
        .map(|f| f.outcome.rsplit(": ").next().unwrap_or_default().to_owned())
        .collect();
    // One failure whole, for its cause (the reasons above keep only the message's last part).
    let failed_example = finished
        .iter()
        .find(|f| !f.succeeded)
        .map(|f| f.outcome.clone());
    let skipped = collector.skipped.lock().expect("lock").clone();
    let (soft, hard) = nofile_limits();
    line(format!(
        "jobs {burst}; ran exactly once: {ran_once}; more than once: {ran_twice}; never: {}; skipped: {} {:?}; failed: {} {:?}",
        burst - per_job.len(),
        skipped.len(),
        summarize(&skipped),
        failed.len(),
        summarize(&failed)
    ));
    {
        let mut print = |summary: Option<Summary>, name: &str| {
            match summary {
            Some(s) => line(format!(
                "{name:<WIDTH$} min {:>8.1}ms  median {:>8.1}ms  p99 {:>8.1}ms  max {:>8.1}ms  n {}",
                s.min, s.median, s.p99, s.max, s.n
            )),
            None => line(format!("{name:<WIDTH$} (no samples)")),
        }
        };
        print(
            Summary::of(lags.clone()),
            "slot → child running (child's clock)",
        );
        print(Summary::of(to_spawn.clone()), "slot → spawn() (runner)");
    }
    if let Some(example) = &failed_example {
        line(format!("{:<WIDTH$} {example}", "a failure, whole"));
    }
    if let Some(last_end) = last_end {
        line(format!(
            "{:<WIDTH$} {last_end:.1}ms after the slot",
            "every run finished"
        ));
    }
    line(format!(
        "{:<WIDTH$} {} runs in flight (spawned, not yet finished and recorded), {} fds open ({} before the burst; RLIMIT_NOFILE soft {soft}, hard {hard})",
        "at most at once",
        collector.peak_running.load(Ordering::Relaxed),
        peak_fds,
        base_fds
    ));
    if with_state {
        let size = std::fs::metadata(work.join("lease.state")).map_or(0, |m| m.len());
        line(format!(
            "{:<WIDTH$} {state_writes} writes (each fsynced with its directory), record {:.2} MiB",
            "run state",
            size as f64 / (1024.0 * 1024.0)
        ));
    }
    let peak_running = collector.peak_running.load(Ordering::Relaxed);
    let record_bytes = std::fs::metadata(work.join("lease.state")).map_or(0, |m| m.len());
    let figures = serde_json::json!({
        "file_run_state": with_state,
        "launcher": if supervised { "supervised" } else { "in-process" },
        // The default send buffer of a socket: how many requests the supervisor's socket holds.
        "wmem_default": std::fs::read_to_string("/proc/sys/net/core/wmem_default")
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok()),
        "jobs": burst,
        "ran_once": ran_once,
        "ran_more_than_once": ran_twice,
        "never_ran": burst - per_job.len(),
        "skipped": skipped.len(),
        "skipped_by_reason": summarize(&skipped),
        "failed": failed.len(),
        "failed_by_reason": summarize(&failed),
        "failed_example": failed_example,
        "lag": report::summarize("ms", &lags),
        "to_spawn": report::summarize("ms", &to_spawn),
        "every_run_finished_ms": last_end,
        "peak_running": peak_running,
        "peak_fds": peak_fds,
        "fds_before": base_fds,
        "nofile_soft": soft,
        "nofile_hard": hard,
        "state_writes": with_state.then_some(state_writes),
        "record_bytes": with_state.then_some(record_bytes),
    });
    (out, figures)
}

/// `burst` jobs due at `due` (daily at that second, UTC), each running the probe.
fn jobs(burst: usize, due: DateTime<Utc>, probes: &Path) -> JobSet {
    let exe = std::env::current_exe().expect("current exe");
    let exe = exe.to_str().expect("a UTF-8 path");
    let out = probes.to_str().expect("a UTF-8 path");
    let schedule = format!("{} {} {} * * *", due.second(), due.minute(), due.hour());
    let specs: Vec<JobSpec> = (0..burst)
        .map(|i| {
            JobSpec::new(format!("burst-{i:05}"), schedule.as_str(), &[exe])
                .with_env(PROBE_ENV, out)
        })
        .collect();
    config::parse_str(
        &scale_jobs::jobs_file(&specs),
        "bench",
        &LoadOptions::default(),
    )
    .expect("valid bench jobs")
}

/// The state file's generation: one per write.
fn state_generation(work: &Path) -> u64 {
    let text = std::fs::read_to_string(work.join("lease.state")).unwrap_or_default();
    serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| v.get("generation")?.as_u64())
        .unwrap_or(0)
}

fn summarize(items: &[String]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for item in items {
        *counts.entry(item.clone()).or_default() += 1;
    }
    counts
}

/// `RLIMIT_NOFILE` (soft, hard) as `/proc/self/limits` shows it.
fn nofile_limits() -> (String, String) {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap_or_default();
    let mut values = line.split_whitespace().skip(3);
    (
        values.next().unwrap_or("?").to_owned(),
        values.next().unwrap_or("?").to_owned(),
    )
}

/// Counts this process's open file descriptors every millisecond, on a thread of its own.
struct FdSampler {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<usize>,
    base: usize,
}

impl FdSampler {
    fn start() -> FdSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let base = open_fds();
        let thread = {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let mut peak = 0;
                while !stop.load(Ordering::Relaxed) {
                    peak = peak.max(open_fds());
                    std::thread::sleep(Duration::from_millis(1));
                }
                peak
            })
        };
        FdSampler { stop, thread, base }
    }

    /// (peak, before).
    fn stop(self) -> (usize, usize) {
        self.stop.store(true, Ordering::Relaxed);
        (self.thread.join().unwrap_or(0), self.base)
    }
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |dir| dir.count())
}

/// One finished run.
#[derive(Debug, Clone)]
struct Finished {
    to_spawn_ms: f64,
    ended: DateTime<Utc>,
    succeeded: bool,
    outcome: String,
}

/// Collects the runner's reports.
#[derive(Default)]
struct Collector {
    done: AtomicUsize,
    /// Runs whose first attempt's process was spawned and that have not finished yet: a run whose spawn
    /// failed finishes with an attempt but was never started, so a plain counter would underflow.
    running: Mutex<std::collections::HashSet<(String, DateTime<Utc>)>>,
    peak_running: AtomicUsize,
    finished: Mutex<Vec<Finished>>,
    skipped: Mutex<Vec<String>>,
}

impl Observer for Collector {
    fn on_run(&self, event: &RunEvent) {
        match event {
            RunEvent::Started {
                job,
                scheduled,
                attempt: 1,
                ..
            } => {
                let mut running = self.running.lock().expect("lock");
                running.insert((job.clone(), *scheduled));
                self.peak_running
                    .fetch_max(running.len(), Ordering::Relaxed);
            }
            RunEvent::Finished(report) => {
                self.running
                    .lock()
                    .expect("lock")
                    .remove(&(report.job.clone(), report.scheduled));
                let ended = report.started_at
                    + chrono::Duration::from_std(report.duration).unwrap_or_default();
                self.finished.lock().expect("lock").push(Finished {
                    to_spawn_ms: report.start_delay.as_secs_f64() * 1e3,
                    ended,
                    succeeded: report.outcome == Outcome::Succeeded,
                    outcome: report.outcome.to_string(),
                });
                self.done.fetch_add(1, Ordering::Relaxed);
            }
            RunEvent::Skipped { reason, .. } => {
                self.skipped
                    .lock()
                    .expect("lock")
                    .push(reason.as_str().to_owned());
                self.done.fetch_add(1, Ordering::Relaxed);
            }
            _ => {}
        }
    }

    fn on_election(&self, _event: &ElectionEvent) {}

    fn on_dispatch(&self, event: &DispatchEvent) {
        if let DispatchEvent::Skipped { reason, .. } = event {
            self.skipped
                .lock()
                .expect("lock")
                .push(reason.as_str().to_owned());
            self.done.fetch_add(1, Ordering::Relaxed);
        }
    }
}
