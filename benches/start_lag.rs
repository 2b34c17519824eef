//! Start lag: from a job's scheduled instant until its child process is running, measured by the child's
//! own clock. leasecron (the real schedule timer, dispatcher and runner, as a leader) and
//! tokio-cron-scheduler 0.15 (the baseline, see docs/design.md §1) each run a 1-second job for `LAG_SAMPLES`
//! (default 60) seconds, one after the other, in this one process. leasecron runs four times: without
//! run state and with the file run state, each with the process forked here (`Launcher::InProcess`, on
//! the spawner thread) and then through the run supervisor (`Launcher::Supervised`, what `leasecron run`
//! does: a small child process, `leasecron supervise`, forks and execs on request over a socket).
//!
//! Then where a supervised spawn's time goes, without the scheduler: this process speaks the supervisor's
//! protocol itself to a `leasecron supervise` of its own, one request at a time (`LAG_WIRE_SAMPLES`,
//! default 200, 10 ms apart): a request past its deadline (answered `TooLate` with no fork: the socket
//! round trip and the JSON both ways), and a request that spawns the probe (request → `Spawned`, which the
//! supervisor sends once the exec succeeded; request → the child's first clock read).
//!
//! The child is this same bench binary, re-executed with `LAG_PROBE_OUT` set: the first thing it does is
//! read `CLOCK_REALTIME` and append it to that file. The slot of a 1-second schedule is the whole second,
//! so lag = child clock − whole second.
//!
//! ```text
//! cargo bench --bench start_lag            # ~5 min; LAG_SAMPLES=120 cargo bench --bench start_lag for more
//! ```

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::fd::AsFd as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use chrono::Utc;
use leasecron::clock::{SharedClock, SystemClock};
use leasecron::config::{self, LoadOptions};
use leasecron::dispatch::Dispatcher;
use leasecron::event::RunEvent;
use leasecron::local::run_state::StateFile;
use leasecron::run_state::memory::MemoryStore;
use leasecron::run_state::{Ledger, TermStart};
use leasecron::runner::{Launcher, Runner};
use leasecron::supervisor::protocol::{self, Reply, Request, MAX_MESSAGE_BYTES};
use leasecron::supervisor::{LogFormat, Supervisor};
use leasecron::term::{FencingToken, Leadership, Term};
use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
use tokio_util::sync::CancellationToken;

#[path = "support/report.rs"]
mod report;

const PROBE_ENV: &str = "LAG_PROBE_OUT";
const DEFAULT_SAMPLES: u64 = 60;
const DEFAULT_WIRE_SAMPLES: usize = 200;
/// The leasecron binary, which `leasecron supervise` runs.
const LEASECRON: &str = env!("CARGO_BIN_EXE_leasecron");

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
    // One supervisor for the bench, as `leasecron run` has one for its life.
    let supervisor = runtime.block_on(async {
        Supervisor::start(Path::new(LEASECRON), LogFormat::Text).expect("start the run supervisor")
    });
    let supervised = Launcher::Supervised(Arc::clone(&supervisor));
    let (ours, ours_spawn) = runtime.block_on(measure_leasecron(
        &dir.path().join("leasecron"),
        samples,
        memory_ledger(),
        Launcher::InProcess,
    ));
    let (sup, sup_spawn) = runtime.block_on(measure_leasecron(
        &dir.path().join("supervised"),
        samples,
        memory_ledger(),
        supervised.clone(),
    ));
    // The same with the run state in a file (above, in memory): every slot is claimed (written, fsynced) before the spawn.
    // Each launcher has a record of its own, in the same directory (same disk).
    let file_ledger = |lease: &str| {
        let ledger = Arc::new(Ledger::new(
            StateFile::beside(&dir.path().join(lease)),
            "bench".to_owned(),
        ));
        let begun = Arc::clone(&ledger);
        runtime.block_on(async move {
            assert!(
                matches!(
                    begun
                        .begin_term(FencingToken(1))
                        .await
                        .expect("the state file is writable"),
                    TermStart::Begun(_)
                ),
                "no newer term"
            );
        });
        ledger
    };
    let (with_state, with_state_spawn) = runtime.block_on(measure_leasecron(
        &dir.path().join("with-state"),
        samples,
        file_ledger("lease"),
        Launcher::InProcess,
    ));
    let (sup_state, sup_state_spawn) = runtime.block_on(measure_leasecron(
        &dir.path().join("supervised-with-state"),
        samples,
        file_ledger("lease-supervised"),
        supervised,
    ));
    let supervisor_rss = rss_mib(supervisor.pid(), "VmRSS:");
    let supervisor_anon = rss_mib(supervisor.pid(), "RssAnon:");
    let (bench_rss, bench_anon) = (
        rss_mib(std::process::id(), "VmRSS:"),
        rss_mib(std::process::id(), "RssAnon:"),
    );
    runtime.block_on(supervisor.stop());
    let wire_samples = std::env::var("LAG_WIRE_SAMPLES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_WIRE_SAMPLES);
    let wire = measure_supervisor_wire(&dir.path().join("wire"), wire_samples);
    let theirs = runtime.block_on(measure_tokio_cron_scheduler(
        &dir.path().join("tcs"),
        samples,
    ));
    let mut report = report::Report::new("start_lag");
    report
        .param("samples", samples)
        .param("schedule", "* * * * * *")
        .param("wire_samples", wire_samples)
        .samples("lag.leasecron", "ms", &ours)
        .samples("to_spawn.leasecron", "ms", &ours_spawn)
        .samples("lag.leasecron_supervised", "ms", &sup)
        .samples("to_spawn.leasecron_supervised", "ms", &sup_spawn)
        .samples("lag.leasecron_file_state", "ms", &with_state)
        .samples("to_spawn.leasecron_file_state", "ms", &with_state_spawn)
        .samples("lag.leasecron_supervised_file_state", "ms", &sup_state)
        .samples(
            "to_spawn.leasecron_supervised_file_state",
            "ms",
            &sup_state_spawn,
        )
        .samples("lag.tokio_cron_scheduler", "ms", &theirs)
        .samples("wire.too_late_round_trip", "ms", &wire.too_late)
        .samples("wire.spawned_round_trip", "ms", &wire.spawned)
        .samples("wire.request_to_child", "ms", &wire.to_child)
        .value("wire.request_bytes", wire.request_bytes as f64, "bytes")
        .value("rss.supervisor", supervisor_rss, "MiB")
        .value("rss_anon.supervisor", supervisor_anon, "MiB")
        .value("rss.bench", bench_rss, "MiB")
        .value("rss_anon.bench", bench_anon, "MiB")
        .write();
    let ours = Summary::of(ours);
    let theirs = Summary::of(theirs);
    println!(
        "{:<40} {:>9} {:>9} {:>9} {:>9} {:>7}",
        "", "min", "median", "p99", "max", "n"
    );
    ours.print("leasecron, in-process");
    Summary::of(ours_spawn).print("  of which to spawn()");
    Summary::of(sup).print("leasecron, supervised");
    Summary::of(sup_spawn).print("  of which to the request");
    Summary::of(with_state).print("leasecron + file state, in-process");
    Summary::of(with_state_spawn).print("  of which to spawn()");
    Summary::of(sup_state).print("leasecron + file state, supervised");
    Summary::of(sup_state_spawn).print("  of which to the request");
    theirs.print("tokio-cron-scheduler");
    println!(
        "ratio tokio-cron-scheduler / leasecron (in-process): median {:.0}x, p99 {:.0}x",
        theirs.median / ours.median,
        theirs.p99 / ours.p99
    );
    println!(
        "\nthe supervisor's path alone, one request at a time ({wire_samples} each; a request is {} bytes of JSON):",
        wire.request_bytes
    );
    Summary::of(wire.too_late).print("request → TooLate (no fork)");
    Summary::of(wire.spawned).print("request → Spawned (fork, exec)");
    Summary::of(wire.to_child).print("request → child's clock");
    println!(
        "RSS (anonymous): the supervisor {supervisor_rss:.1} MiB ({supervisor_anon:.1} MiB), this process \
         {bench_rss:.1} MiB ({bench_anon:.1} MiB)"
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

/// A ledger over a run state in memory: each slot is claimed, without a write to disk.
fn memory_ledger() -> Arc<Ledger> {
    Arc::new(Ledger::new(MemoryStore::new(), "bench".to_owned()))
}

/// The child-measured lags, and the runner's own `start_delay`: in-process, slot until just before
/// `spawn()` on the spawner thread, so the difference between the two is the cost of fork, exec and the
/// child's start; supervised, slot until the request is made, so the difference also holds the request's
/// trip to the supervisor.
async fn measure_leasecron(
    out: &Path,
    samples: u64,
    ledger: Arc<Ledger>,
    launcher: Launcher,
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
    let runner = Runner::with_launcher(
        "bench".to_owned(),
        Arc::clone(&clock),
        Some(events),
        Arc::clone(&ledger),
        launcher,
    );
    let dispatcher = Dispatcher::new(runner, leadership, clock, ledger);
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

/// The supervisor's path alone (see the header), in ms.
struct Wire {
    too_late: Vec<f64>,
    spawned: Vec<f64>,
    to_child: Vec<f64>,
    request_bytes: usize,
}

/// Starts a `leasecron supervise` of its own (its socket as its stdin: no descriptor juggling) and sends it
/// `samples` requests past their deadline, then `samples` spawns of the probe, one at a time.
fn measure_supervisor_wire(out: &Path, samples: usize) -> Wire {
    let (ours, theirs) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .expect("socketpair");
    let mut child = std::process::Command::new(LEASECRON)
        .args(["supervise", "--fd", "0"])
        .stdin(Stdio::from(theirs))
        .stdout(Stdio::null())
        .spawn()
        .expect("start leasecron supervise");
    let exe = std::env::current_exe().expect("current exe");
    let request = |id: u64, not_after_ns: u64| Request::Spawn {
        id,
        program: exe.display().to_string(),
        args: vec![],
        // What the runner adds for every run: the job's env and the five LEASECRON_* variables.
        env: vec![
            (PROBE_ENV.to_owned(), out.display().to_string()),
            ("LEASECRON_JOB".to_owned(), "lag".to_owned()),
            (
                "LEASECRON_SCHEDULED_TIME".to_owned(),
                "2026-12-05T21:00:00Z".to_owned(),
            ),
            ("LEASECRON_IDENTITY".to_owned(), "bench".to_owned()),
            ("LEASECRON_FENCING_TOKEN".to_owned(), "1".to_owned()),
            ("LEASECRON_ATTEMPT".to_owned(), "1".to_owned()),
        ],
        cwd: None,
        not_after_ns,
        grace_ms: 30_000,
    };
    let request_bytes = serde_json::to_vec(&request(1, u64::MAX))
        .expect("a request encodes")
        .len();
    let mut buf = vec![0u8; MAX_MESSAGE_BYTES];
    let mut recv = || -> Reply {
        protocol::recv::<Reply>(ours.as_fd(), &mut buf)
            .expect("the supervisor answers")
            .expect("the supervisor is up")
            .0
    };
    let gap = Duration::from_millis(10);
    let mut too_late = Vec::with_capacity(samples);
    for id in 0..samples as u64 {
        std::thread::sleep(gap);
        let t0 = Instant::now();
        protocol::send(ours.as_fd(), &request(id, 0), &[], false).expect("send");
        match recv() {
            Reply::TooLate { id: got } if got == id => {}
            other => panic!("expected TooLate for {id}, got {other:?}"),
        }
        too_late.push(t0.elapsed().as_secs_f64() * 1e3);
    }
    let mut spawned = Vec::with_capacity(samples);
    let mut sent_at = Vec::with_capacity(samples);
    for id in 0..samples as u64 {
        std::thread::sleep(gap);
        let (_stdout, stdout_w) = nix::unistd::pipe().expect("pipe");
        let (_stderr, stderr_w) = nix::unistd::pipe().expect("pipe");
        let message = request(1_000_000 + id, u64::MAX);
        let wall = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock");
        let t0 = Instant::now();
        protocol::send(
            ours.as_fd(),
            &message,
            &[stdout_w.as_fd(), stderr_w.as_fd()],
            false,
        )
        .expect("send");
        drop((stdout_w, stderr_w));
        let pid = match recv() {
            Reply::Spawned { id: got, pid } if got == 1_000_000 + id => pid,
            other => panic!("expected Spawned, got {other:?}"),
        };
        spawned.push(t0.elapsed().as_secs_f64() * 1e3);
        sent_at.push(wall.as_nanos());
        // The next request only once this probe is gone: nothing overlaps.
        loop {
            match recv() {
                Reply::Exited { pid: got, .. } if got == pid => break,
                Reply::Exited { .. } => {}
                other => panic!("expected Exited, got {other:?}"),
            }
        }
    }
    drop(ours);
    let _ = child.wait();
    let started: Vec<u128> = fs::read_to_string(out)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.parse::<u128>().ok())
        .collect();
    assert_eq!(started.len(), samples, "every probe recorded its start");
    let to_child = started
        .iter()
        .zip(&sent_at)
        .map(|(child, sent)| child.saturating_sub(*sent) as f64 / 1e6)
        .collect();
    Wire {
        too_late,
        spawned,
        to_child,
        request_bytes,
    }
}

/// A resident set field of process `pid` (`VmRSS:`, `RssAnon:`), in MiB.
fn rss_mib(pid: u32, field: &str) -> f64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0)
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
            "{name:<40} {:>7.2}ms {:>7.2}ms {:>7.2}ms {:>7.2}ms {:>7}",
            self.min, self.median, self.p99, self.max, self.n
        );
    }
}
