//! Fixtures for the runner tests: jobs, live terms, the runner's event stream, captured logs, and checks on
//! real processes.
//!
//! Every wait is bounded by [`TEST_TIMEOUT`], a generous limit that only turns a hang into a failure; no
//! test asserts how long anything took.

use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use leasecron::clock::SystemClock;
use leasecron::config::{ConcurrencyPolicy, Env, Job, Program, DEFAULT_TERMINATION_GRACE};
use leasecron::event::{RunEvent, RunReport};
use leasecron::run_state::memory::MemoryStore;
use leasecron::run_state::Ledger;
use leasecron::runner::Runner;
use leasecron::schedule::Schedule;
use leasecron::term::{FencingToken, Term, TermHandle};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Upper bound on any single wait in a test.
pub const TEST_TIMEOUT: Duration = Duration::from_secs(60);
/// The fencing token of every test term.
pub const FENCING_TOKEN: u64 = 42;
/// The identity every test runner passes to its runs.
pub const IDENTITY: &str = "replica-under-test";
/// How long a test term lives without renewal: far longer than any test.
const TERM_LENGTH: Duration = Duration::from_secs(3600);
/// Pause between polls of the file system.
const POLL: Duration = Duration::from_millis(20);

/// A job running `script` through `/bin/sh -c`, with the defaults of the jobs file.
pub fn shell_job(name: &str, script: &str) -> Job {
    job(name, Program::Shell(script.to_owned()))
}

/// A job with the defaults of the jobs file.
pub fn job(name: &str, program: Program) -> Job {
    Job {
        name: name.to_owned(),
        schedule: Schedule::parse("* * * * *", chrono_tz::UTC).expect("a valid schedule"),
        program,
        kubernetes: None,
        env: Env::default(),
        working_dir: None,
        timeout: None,
        termination_grace: DEFAULT_TERMINATION_GRACE,
        concurrency_policy: ConcurrencyPolicy::Forbid,
        starting_deadline: None,
        retries: 0,
        retry_backoff: Duration::from_millis(10),
        suspend: false,
        rerun_interrupted: false,
        jitter: None,
    }
}

/// A fixed scheduled slot; `n` tells runs of one test apart.
pub fn slot(n: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 21, 10, n, 0)
        .single()
        .unwrap_or_default()
}

/// A term that stays live for the whole test unless ended or expired by the test.
pub fn live_term() -> TermHandle {
    Term::begin(
        FencingToken(FENCING_TOKEN),
        Utc::now(),
        Instant::now() + TERM_LENGTH,
    )
}

/// A ledger over a run state in memory, with no record yet: a term owes nothing, and every slot is new.
pub fn ledger() -> Arc<Ledger> {
    Arc::new(Ledger::new(MemoryStore::new(), IDENTITY.to_owned()))
}

/// A runner on the system clock, with a run state of its own in memory, and its event stream.
pub fn runner() -> (Arc<Runner>, Events) {
    runner_over(ledger())
}

/// A runner on the system clock that claims its slots in `ledger`, and its event stream.
pub fn runner_over(ledger: Arc<Ledger>) -> (Arc<Runner>, Events) {
    capture_logs();
    let (tx, rx) = mpsc::unbounded_channel();
    let runner = Runner::new(IDENTITY.to_owned(), Arc::new(SystemClock), Some(tx), ledger);
    (runner, Events { rx })
}

/// The runner's events, read with a bound.
pub struct Events {
    rx: mpsc::UnboundedReceiver<RunEvent>,
}

impl From<mpsc::UnboundedReceiver<RunEvent>> for Events {
    fn from(rx: mpsc::UnboundedReceiver<RunEvent>) -> Events {
        Events { rx }
    }
}

impl Events {
    /// The next event.
    pub async fn next(&mut self) -> RunEvent {
        match tokio::time::timeout(TEST_TIMEOUT, self.rx.recv()).await {
            Ok(Some(event)) => event,
            Ok(None) => panic!("the runner dropped its event sender"),
            Err(_) => panic!("no runner event within {TEST_TIMEOUT:?}"),
        }
    }

    /// Skips events until a run finishes; returns its report.
    pub async fn finished(&mut self) -> RunReport {
        loop {
            if let RunEvent::Finished(report) = self.next().await {
                return report;
            }
        }
    }

    /// Skips events until an attempt starts; returns its pid.
    pub async fn started(&mut self) -> u32 {
        loop {
            if let RunEvent::Started { pid, .. } = self.next().await {
                return pid;
            }
        }
    }

    /// True if an event is waiting right now.
    pub fn has_pending(&mut self) -> bool {
        !self.rx.is_empty()
    }
}

/// Polls until `path` exists.
pub async fn wait_for_file(path: &Path) {
    let wait = async {
        while !path.exists() {
            tokio::time::sleep(POLL).await;
        }
    };
    if tokio::time::timeout(TEST_TIMEOUT, wait).await.is_err() {
        panic!("{} did not appear within {TEST_TIMEOUT:?}", path.display());
    }
}

/// Reads a pid a script wrote into `path`.
pub fn read_pid(path: &Path) -> i32 {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    text.trim()
        .parse()
        .unwrap_or_else(|e| panic!("{} holds no pid ({text:?}): {e}", path.display()))
}

/// True if no process `pid` is running: it does not exist, or only its zombie is left (waiting for an init
/// that is not ours to control).
pub fn process_is_gone(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(text) => leasecron::reaper::parse_stat(&text).is_none_or(|stat| stat.state == 'Z'),
    }
}

/// Polls until process `pid` is gone. A SIGKILLed process can take a moment to be torn down by the kernel.
pub async fn wait_until_gone(pid: i32) -> bool {
    let wait = async {
        while !process_is_gone(pid) {
            tokio::time::sleep(POLL).await;
        }
    };
    tokio::time::timeout(TEST_TIMEOUT, wait).await.is_ok()
}

// === captured logs ===

static LOG: Mutex<Vec<u8>> = Mutex::new(Vec::new());

struct LogWriter;

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        LOG.lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Installs (once per test binary) a JSON subscriber that records every event.
pub fn capture_logs() {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        let subscriber = tracing_subscriber::fmt()
            .json()
            .with_max_level(tracing::Level::DEBUG)
            .with_writer(|| LogWriter)
            .finish();
        // Another harness may already have installed one; then there is nothing to capture into.
        let _ = tracing::subscriber::set_global_default(subscriber);
    });
}

/// Every captured event whose `job` field is `job`, as JSON objects (`level`, `fields.message`, ...).
pub fn logged(job: &str) -> Vec<serde_json::Value> {
    let log = LOG.lock().unwrap_or_else(PoisonError::into_inner);
    String::from_utf8_lossy(&log)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|event| event["fields"]["job"] == job)
        .collect()
}

/// The job's output lines on `stream`, as `(message, partial)`.
pub fn output_lines(job: &str, stream: &str) -> Vec<(String, bool)> {
    logged(job)
        .into_iter()
        .filter(|event| event["fields"]["stream"] == stream)
        .map(|event| {
            let message = event["fields"]["message"].as_str().unwrap_or_default();
            let partial = event["fields"]["partial"].as_bool().unwrap_or_default();
            (message.to_owned(), partial)
        })
        .collect()
}
