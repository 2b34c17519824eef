//! What the scale benchmarks share: the probe child that records when it started, a leader's term that
//! outlives the benchmark, and the figures (min, median, p99, max).
//!
//! The probe is the benchmark binary itself, re-executed by a job with [`PROBE_ENV`] in its env: the first
//! thing it does is read `CLOCK_REALTIME`; then it appends `JOB SCHEDULED_NS STARTED_NS` (the job and slot
//! from `LEASECRON_JOB` and `LEASECRON_SCHEDULED_TIME`) to the file [`PROBE_ENV`] names, in one write.

#![allow(dead_code)] // each benchmark uses a different subset

use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chrono::{DateTime, Utc};
use leasecron::config::JobSet;
use leasecron::local::run_state::StateFile;
use leasecron::run_state::memory::MemoryStore;
use leasecron::run_state::{Completion, JobRecord, Ledger, SlotStart, StateRecord};
use leasecron::term::{FencingToken, Leadership, Term, TermHandle};
use tokio::sync::watch;

/// The env variable that makes the benchmark binary a probe, naming the file it appends to.
pub const PROBE_ENV: &str = "SCALE_PROBE_OUT";

/// How long a probe stays up after it recorded its start, in ms (default 0).
pub const HOLD_ENV: &str = "SCALE_PROBE_HOLD_MS";

/// One probe's record.
#[derive(Debug, Clone)]
pub struct Probe {
    /// `LEASECRON_JOB`.
    pub job: String,
    /// `LEASECRON_SCHEDULED_TIME`.
    pub scheduled: DateTime<Utc>,
    /// The child's clock when it started.
    pub started: DateTime<Utc>,
}

impl Probe {
    /// From the slot until the child ran, in ms.
    pub fn lag_ms(&self) -> f64 {
        (self.started - self.scheduled)
            .num_nanoseconds()
            .unwrap_or(i64::MAX) as f64
            / 1e6
    }
}

/// If this process is a probe: records its start and returns true (the caller exits).
pub fn probe_if_asked() -> bool {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock");
    let Some(out) = std::env::var_os(PROBE_ENV) else {
        return false;
    };
    let job = std::env::var("LEASECRON_JOB").unwrap_or_default();
    let scheduled = std::env::var("LEASECRON_SCHEDULED_TIME")
        .ok()
        .and_then(|s| DateTime::parse_from_rfc3339(&s).ok())
        .and_then(|t| t.timestamp_nanos_opt())
        .unwrap_or(0);
    let line = format!("{job} {scheduled} {}\n", now.as_nanos());
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(out)
        .expect("probe output");
    file.write_all(line.as_bytes()).expect("write probe");
    // Then stay up this long, if asked: a run that takes a while.
    let hold: u64 = env_or(HOLD_ENV, 0);
    std::thread::sleep(Duration::from_millis(hold));
    true
}

/// Every record of the probe file `path`.
pub fn read_probes(path: &Path) -> Vec<Probe> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter_map(|line| {
            let mut parts = line.split(' ');
            let job = parts.next()?.to_owned();
            let scheduled = parts.next()?.parse::<i64>().ok()?;
            let started = parts.next()?.parse::<i64>().ok()?;
            Some(Probe {
                job,
                scheduled: DateTime::from_timestamp_nanos(scheduled),
                started: DateTime::from_timestamp_nanos(started),
            })
        })
        .collect()
}

/// A term this replica leads for a day, and the leadership channel that says so.
pub fn lead() -> (
    TermHandle,
    watch::Receiver<Leadership>,
    watch::Sender<Leadership>,
) {
    let handle = Term::begin(
        FencingToken(1),
        Utc::now(),
        tokio::time::Instant::now() + Duration::from_secs(24 * 3600),
    );
    let (tx, rx) = watch::channel(Leadership::Leader {
        term: handle.term().clone(),
    });
    (handle, rx, tx)
}

/// `name` from the environment, else `default`.
pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The resident set (`VmRSS`) of process `pid`, in MiB.
pub fn rss_mib(pid: u32) -> f64 {
    status_kib(pid, "VmRSS:") as f64 / 1024.0
}

/// A `kB` field of `/proc/PID/status`.
pub fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// User + system CPU time of process `pid` so far, in ms (`/proc/PID/stat`, 10 ms ticks).
pub fn cpu_ms(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let Some(close) = stat.rfind(')') else {
        return 0.0;
    };
    let fields: Vec<&str> = stat[close + 2..].split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line; `state` (field 3) is the first after the name.
    let ticks = |field: usize| fields.get(field - 3).and_then(|v| v.parse::<f64>().ok());
    (ticks(14).unwrap_or(0.0) + ticks(15).unwrap_or(0.0)) * 10.0
}

/// Min, median, p99 and max of some milliseconds.
#[derive(Debug, Clone, Copy)]
pub struct Summary {
    pub min: f64,
    pub median: f64,
    pub p99: f64,
    pub max: f64,
    pub n: usize,
}

impl Summary {
    /// `None` without samples.
    pub fn of(mut ms: Vec<f64>) -> Option<Self> {
        if ms.is_empty() {
            return None;
        }
        ms.sort_by(f64::total_cmp);
        let at = |q: f64| ms[((ms.len() as f64 - 1.0) * q).round() as usize];
        Some(Summary {
            min: ms[0],
            median: at(0.5),
            p99: at(0.99),
            max: ms[ms.len() - 1],
            n: ms.len(),
        })
    }

    /// The header line for [`Summary::print`].
    pub fn header(width: usize) {
        println!(
            "{:<width$} {:>9} {:>9} {:>9} {:>9} {:>6}",
            "", "min", "median", "p99", "max", "n"
        );
    }

    /// One line, in ms.
    pub fn print(summary: Option<Self>, name: &str, width: usize) {
        match summary {
            Some(s) => println!(
                "{name:<width$} {:>7.2}ms {:>7.2}ms {:>7.2}ms {:>7.2}ms {:>6}",
                s.min, s.median, s.p99, s.max, s.n
            ),
            None => println!("{name:<width$} (no samples)"),
        }
    }
}

/// The first whole second after `t`.
pub fn next_whole_second(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp(t.timestamp() + 1, 0).expect("in range")
}

/// A ledger over a run state in memory, with no record yet: the runs claim their slots without a file.
pub fn memory_ledger() -> Arc<Ledger> {
    Arc::new(Ledger::new(MemoryStore::new(), "bench".to_owned()))
}

/// A ledger over the state file beside `work/lease` whose record has an entry for every job of `set`, as
/// after each ran its latest slot (the steady state); prints the file's size.
pub async fn steady_state_ledger(work: &Path, set: &JobSet) -> Arc<Ledger> {
    let now = Utc::now();
    let mut record = StateRecord {
        format: leasecron::run_state::FORMAT,
        fencing_token: 1,
        ..StateRecord::default()
    };
    for job in &set.jobs {
        let Some(slot) = job.schedule.latest_at_or_before(now) else {
            continue;
        };
        let completion = Completion {
            slot,
            outcome: "succeeded".to_owned(),
            finished_at: slot + chrono::Duration::seconds(1),
        };
        record.jobs.insert(
            job.name.clone(),
            JobRecord {
                last_started: Some(SlotStart {
                    slot,
                    fencing_token: 1,
                    identity: "bench".to_owned(),
                    started_at: slot,
                }),
                last_completion: Some(completion.clone()),
                last_success: Some(completion),
                history: Vec::new(),
            },
        );
    }
    let store = StateFile::beside(&work.join("lease"));
    store
        .save(&record, None)
        .await
        .expect("the state file is writable");
    let size = std::fs::metadata(store.path()).map_or(0, |m| m.len());
    eprintln!(
        "run state: {} entries, {:.2} MiB",
        record.jobs.len(),
        size as f64 / (1024.0 * 1024.0)
    );
    Arc::new(Ledger::new(store, "bench".to_owned()))
}

/// The runner of a scale bench, starting processes in this process or (`supervised`) through a run
/// supervisor of the leasecron binary, which it returns too (stop it at the end).
pub fn bench_runner(
    supervised: bool,
    clock: leasecron::clock::SharedClock,
    runs: tokio::sync::mpsc::UnboundedSender<leasecron::event::RunEvent>,
    ledger: Arc<Ledger>,
) -> (
    Arc<leasecron::runner::Runner>,
    Option<Arc<leasecron::supervisor::Supervisor>>,
) {
    use leasecron::runner::{Launcher, Runner};
    use leasecron::supervisor::{LogFormat, Supervisor};
    let supervisor = supervised.then(|| {
        Supervisor::start(Path::new(env!("CARGO_BIN_EXE_leasecron")), LogFormat::Text)
            .expect("start the run supervisor")
    });
    let launcher = match &supervisor {
        Some(supervisor) => Launcher::Supervised(Arc::clone(supervisor)),
        None => Launcher::InProcess,
    };
    let runner = Runner::with_launcher("bench".to_owned(), clock, Some(runs), ledger, launcher);
    (runner, supervisor)
}
