//! Start lag: from a job's scheduled instant until its child process is running, measured by the child's
//! own clock. leasecron (the real schedule timer, dispatcher and runner, as a leader) and
//! tokio-cron-scheduler 0.15 (the baseline, see DESIGN.md §1) each run a 1-second job for `LAG_SAMPLES`
//! (default 60) seconds, one after the other, in this one process.
//!
//! The child is this same bench binary, re-executed with `LAG_PROBE_OUT` set: the first thing it does is
//! read `CLOCK_REALTIME` and append it to that file. The slot of a 1-second schedule is the whole second,
//! so lag = child clock − whole second.
//!
//! ```text
//! cargo bench --bench start_lag            # LAG_SAMPLES=120 cargo bench --bench start_lag for more
//! ```

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chrono::Utc;
use leasecron::clock::{SharedClock, SystemClock};
use leasecron::config::{self, LoadOptions};
use leasecron::dispatch::Dispatcher;
use leasecron::runner::{RunEvent, Runner};
use leasecron::state::file::FileState;
use leasecron::state::{Backend, Ledger};
use leasecron::term::{FencingToken, Leadership, Term};
use tokio_util::sync::CancellationToken;

#[path = "support/report.rs"]
mod report;

const PROBE_ENV: &str = "LAG_PROBE_OUT";
const DEFAULT_SAMPLES: u64 = 60;

fn main() {
    if let Some(out) = std::env::var_os(PROBE_ENV) {
        probe(Path::new(&out));
        return;
    }
    let samples = std::env::var("LAG_SAMPLES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_SAMPLES);
    let dir = tempfile::tempdir().expect("tempdir");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");

    println!(
        "start lag, 1-second jobs, {samples} samples each (child's own clock − scheduled second)"
    );
    let (ours, ours_spawn) = runtime.block_on(measure_leasecron(
        &dir.path().join("leasecron"),
        samples,
        None,
    ));
    // The same with the run state in a file: every slot is claimed (written, fsynced) before the spawn.
    let ledger = Arc::new(Ledger::new(
        Backend::File(FileState::beside(&dir.path().join("lease"))),
        "bench".to_owned(),
    ));
    let (with_state, with_state_spawn) = runtime.block_on(async {
        ledger
            .begin_term(FencingToken(1))
            .await
            .expect("the state file is writable")
            .expect("no newer term");
        measure_leasecron(&dir.path().join("with-state"), samples, Some(ledger)).await
    });
    let theirs = runtime.block_on(measure_tokio_cron_scheduler(
        &dir.path().join("tcs"),
        samples,
    ));
    let mut report = report::Report::new("start_lag");
    report
        .param("samples", samples)
        .param("schedule", "* * * * * *")
        .samples("lag.leasecron", "ms", &ours)
        .samples("to_spawn.leasecron", "ms", &ours_spawn)
        .samples("lag.leasecron_file_state", "ms", &with_state)
        .samples("to_spawn.leasecron_file_state", "ms", &with_state_spawn)
        .samples("lag.tokio_cron_scheduler", "ms", &theirs)
        .write();
    let ours = Summary::of(ours);
    let theirs = Summary::of(theirs);
    println!(
        "{:<24} {:>9} {:>9} {:>9} {:>9} {:>7}",
        "", "min", "median", "p99", "max", "n"
    );
    ours.print("leasecron");
    Summary::of(ours_spawn).print("  of which to spawn()");
    Summary::of(with_state).print("leasecron + file state");
    theirs.print("tokio-cron-scheduler");
    println!(
        "ratio tokio-cron-scheduler / leasecron: median {:.0}x, p99 {:.0}x",
        theirs.median / ours.median,
        theirs.p99 / ours.p99
    );
}

/// The child: record the clock first, then everything else.
fn probe(out: &Path) {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock");
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(out)
        .expect("probe output");
    writeln!(file, "{}", now.as_nanos()).expect("write probe");
}

/// The child-measured lags, and the runner's own `start_delay` (slot until just before `spawn()`): the
/// difference between the two is the cost of fork, exec and the child's start.
async fn measure_leasecron(
    out: &Path,
    samples: u64,
    ledger: Option<Arc<Ledger>>,
) -> (Vec<f64>, Vec<f64>) {
    let exe = std::env::current_exe().expect("current exe");
    let yaml = format!(
        "jobs:\n  - name: lag\n    schedule: \"* * * * * *\"\n    concurrencyPolicy: Allow\n    command: [{:?}]\n    env: {{{PROBE_ENV}: {:?}}}\n",
        exe.display().to_string(),
        out.display().to_string()
    );
    let jobs = config::parse_str(&yaml, "bench", &LoadOptions::default()).expect("bench job");
    let clock: SharedClock = Arc::new(SystemClock);
    // This replica leads for the whole bench: a term whose deadline is far away.
    let handle = Term::begin(
        FencingToken(1),
        Utc::now(),
        tokio::time::Instant::now() + Duration::from_secs(24 * 3600),
    );
    let (_tx, leadership) = tokio::sync::watch::channel(Leadership::Leader {
        term: handle.term().clone(),
    });
    let (events, mut reports) = tokio::sync::mpsc::unbounded_channel();
    let runner = match ledger {
        Some(ledger) => {
            Runner::with_ledger("bench".to_owned(), Arc::clone(&clock), Some(events), ledger)
        }
        None => Runner::new("bench".to_owned(), Arc::clone(&clock), Some(events)),
    };
    let dispatcher = Dispatcher::new(runner, leadership, clock);
    let stop = CancellationToken::new();
    let stopper = stop.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(samples + 1)).await;
        stopper.cancel();
    });
    dispatcher
        .run(tokio::sync::watch::channel(Arc::new(jobs)).1, stop)
        .await;
    handle.end().await;
    drop(dispatcher);
    let mut to_spawn = Vec::new();
    while let Some(event) = reports.recv().await {
        if let RunEvent::Finished(report) = event {
            to_spawn.push(report.start_delay.as_secs_f64() * 1e3);
        }
    }
    (lags(out), to_spawn)
}

async fn measure_tokio_cron_scheduler(out: &Path, samples: u64) -> Vec<f64> {
    use tokio_cron_scheduler::{Job, JobScheduler};
    let exe = std::env::current_exe().expect("current exe");
    let record: PathBuf = out.to_owned();
    let mut scheduler = JobScheduler::new().await.expect("scheduler");
    let job = Job::new_async("* * * * * *", move |_id, _lock| {
        let exe = exe.clone();
        let out = record.clone();
        Box::pin(async move {
            let mut child = tokio::process::Command::new(exe)
                .env(PROBE_ENV, out)
                .spawn()
                .expect("spawn probe");
            let _ = child.wait().await;
        })
    })
    .expect("job");
    scheduler.add(job).await.expect("add");
    scheduler.start().await.expect("start");
    tokio::time::sleep(Duration::from_secs(samples + 1)).await;
    scheduler.shutdown().await.expect("shutdown");
    lags(out)
}

/// Lags in milliseconds, from the probe's records (slot = the whole second).
fn lags(out: &Path) -> Vec<f64> {
    fs::read_to_string(out)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.parse::<u128>().ok())
        .map(|ns| (ns % 1_000_000_000) as f64 / 1e6)
        .collect()
}

struct Summary {
    min: f64,
    median: f64,
    p99: f64,
    max: f64,
    n: usize,
}

impl Summary {
    fn of(mut ms: Vec<f64>) -> Self {
        assert!(!ms.is_empty(), "no samples recorded");
        ms.sort_by(f64::total_cmp);
        let at = |q: f64| ms[((ms.len() as f64 - 1.0) * q).round() as usize];
        Summary {
            min: ms[0],
            median: at(0.5),
            p99: at(0.99),
            max: ms[ms.len() - 1],
            n: ms.len(),
        }
    }

    fn print(&self, name: &str) {
        println!(
            "{name:<24} {:>7.2}ms {:>7.2}ms {:>7.2}ms {:>7.2}ms {:>7}",
            self.min, self.median, self.p99, self.max, self.n
        );
    }
}
