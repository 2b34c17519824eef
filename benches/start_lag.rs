//! Start lag: from a job's scheduled instant until its child process is running, measured by the child's
//! own clock. Every scheduler here starts the same child, a small static C probe
//! (`benches/support/lag_probe.c`, built by this bench with `gcc -static -O2` into its temporary directory):
//! the first thing it does is read `CLOCK_REALTIME`; it then appends that instant to the file named by its
//! argument. The slot of a 1-second schedule is the whole second, so lag = child clock − whole second.
//! A static probe has no loader, no shared libraries and no runtime to start, so the figure is the
//! scheduler's and the cost of one fork and exec, not the child's start-up.
//!
//! Two conditions, one after the other: **quiet**, and **with a hog** (a child process of this bench
//! spinning at full speed, so one of the machine's cores is busy). In each:
//!
//! - **the floor**: this process itself takes a timestamp and spawns the probe, one at a time
//!   (`LAG_FLOOR_SAMPLES`, default 200, 10 ms apart), with std's `Command` as is (`posix_spawn`: no fork
//!   of this process's page tables) and with leasecron's set-up (own process group, piped stdout and
//!   stderr, and a `pre_exec` hook setting `PR_SET_PDEATHSIG`, which forces a full `fork`); lag = probe
//!   clock − timestamp;
//! - **leasecron** (the real schedule timer, dispatcher and runner, as a leader) runs a 1-second job for
//!   `LAG_SAMPLES` (default 60) seconds, four times: without run state and with the file run state, each
//!   with the process forked here (`Launcher::InProcess`, on the spawner thread) and then through the run
//!   supervisor (`Launcher::Supervised`, what `leasecron run` does: a small child process,
//!   `leasecron supervise`, forks and execs on request over a socket);
//! - **supercronic** (a Go cron for containers, the peer closest to leasecron's use), with the crontab
//!   line `* * * * * * * PROBE FILE` (7 fields: seconds first, year last), if it can be built: the bench
//!   runs `go install github.com/aptible/supercronic@SUPERCRONIC_VERSION` into `target/start-lag/` the
//!   first time (or uses `LAG_SUPERCRONIC=PATH`), and skips it, saying why, without Go;
//! - quiet only: **tokio-cron-scheduler** 0.15 (the baseline, see docs/design.md §1) for `LAG_SAMPLES`
//!   seconds, and where a supervised spawn's time goes, without the scheduler: this process speaks the
//!   supervisor's protocol itself to a `leasecron supervise` of its own, one request at a time
//!   (`LAG_WIRE_SAMPLES`, default 200, 10 ms apart): a request past its deadline (answered `TooLate`
//!   with no fork: the socket round trip and the JSON both ways), and a request that spawns the probe
//!   (request → `Spawned`, which the supervisor sends once the exec succeeded; request → the child's
//!   first clock read).
//!
//! Per launcher and condition it records p99 with the file run state − p99 without state (the claim's cost
//! on the start path).
//!
//! ```text
//! cargo bench --bench start_lag            # ~12 min; LAG_SAMPLES=10 cargo bench --bench start_lag to try
//! ```

use std::fs;
use std::os::fd::AsFd as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use chrono::Utc;
use lag_probe::{build_probe, probe_records};
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
use serde_json::json;
use tokio_util::sync::CancellationToken;

#[path = "support/lag_probe.rs"]
mod lag_probe;
#[path = "support/report.rs"]
mod report;

/// Set (to this process's pid) in the hog's environment: the hog is this binary, re-executed.
const HOG_ENV: &str = "LAG_HOG_PARENT";
const DEFAULT_SAMPLES: u64 = 60;
const DEFAULT_WIRE_SAMPLES: usize = 200;
const DEFAULT_FLOOR_SAMPLES: usize = 200;
/// The leasecron binary, which `leasecron supervise` runs.
const LEASECRON: &str = env!("CARGO_BIN_EXE_leasecron");
/// The probe's source.
/// The supercronic release measured (the newest on the Go module proxy when this was written).
const SUPERCRONIC_VERSION: &str = "v0.2.48";
const SUPERCRONIC_MODULE: &str = "github.com/aptible/supercronic";

/// The two conditions every leasecron variant, the floor and supercronic run in.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Condition {
    Quiet,
    Hog,
}

impl Condition {
    /// The figure name's prefix, `lag` → `lag` (quiet) or `lag_hog`.
    fn key(self, figure: &str) -> String {
        match self {
            Condition::Quiet => figure.to_owned(),
            Condition::Hog => format!("{figure}_hog"),
        }
    }

    fn title(self) -> &'static str {
        match self {
            Condition::Quiet => "quiet",
            Condition::Hog => "with the other core busy (a CPU hog)",
        }
    }
}

/// leasecron's four runs: name in the results, whether the run state is the file, the launcher.
const VARIANTS: [(&str, bool, bool); 4] = [
    ("leasecron", false, false),
    ("leasecron_supervised", false, true),
    ("leasecron_file_state", true, false),
    ("leasecron_supervised_file_state", true, true),
];

fn main() {
    if let Some(parent) = std::env::var_os(HOG_ENV) {
        hog(parent.to_str().and_then(|p| p.parse().ok()).unwrap_or(0));
        return;
    }
    let samples = env_or("LAG_SAMPLES", DEFAULT_SAMPLES);
    let floor_samples = env_or("LAG_FLOOR_SAMPLES", DEFAULT_FLOOR_SAMPLES);
    let wire_samples = env_or("LAG_WIRE_SAMPLES", DEFAULT_WIRE_SAMPLES);
    let dir = tempfile::tempdir().expect("tempdir");
    let probe = build_probe(dir.path());
    let supercronic = supercronic();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");

    println!(
        "start lag, 1-second jobs, {samples} samples each (probe's own clock − scheduled second); \
         the child is {}",
        probe.display()
    );
    match &supercronic {
        Ok(path) => println!("supercronic {SUPERCRONIC_VERSION}: {}", path.display()),
        Err(why) => println!("supercronic: not measured: {why}"),
    }
    let mut report = report::Report::new("start_lag");
    report
        .param("samples", samples)
        .param("schedule", "* * * * * *")
        .param("floor_samples", floor_samples)
        .param("wire_samples", wire_samples)
        .param(
            "probe",
            "static C, gcc -static -O2 (benches/support/lag_probe.c)",
        )
        .param(
            "cpus",
            std::thread::available_parallelism().map_or(0, |n| n.get()),
        );
    report.raw(
        "supercronic",
        match &supercronic {
            Ok(_) => json!({"version": SUPERCRONIC_VERSION, "measured": true}),
            Err(why) => json!({"version": SUPERCRONIC_VERSION, "measured": false, "reason": why}),
        },
    );
    // One supervisor for the bench, as `leasecron run` has one for its life.
    let supervisor = runtime.block_on(async {
        Supervisor::start(Path::new(LEASECRON), LogFormat::Text).expect("start the run supervisor")
    });
    let mut tables = Vec::new();
    for condition in [Condition::Quiet, Condition::Hog] {
        let hog = (condition == Condition::Hog).then(Hog::start);
        let mut table: Vec<(String, Vec<f64>)> = Vec::new();
        let base = dir.path().join(condition.key("run"));
        fs::create_dir_all(&base).expect("run directory");
        for (name, fork) in [("spawn", false), ("fork_pre_exec", true)] {
            let lags = measure_floor(&probe, &base.join(name), floor_samples, fork);
            report.samples(&format!("{}.{name}", condition.key("floor")), "ms", &lags);
            table.push((format!("floor: {name}"), lags));
        }
        let mut p99 = std::collections::BTreeMap::new();
        for (name, file_state, supervised) in VARIANTS {
            let ledger = if file_state {
                file_ledger(&runtime, &base.join(format!("{name}.lease")))
            } else {
                memory_ledger()
            };
            let launcher = if supervised {
                Launcher::Supervised(Arc::clone(&supervisor))
            } else {
                Launcher::InProcess
            };
            let (lags, to_spawn) = runtime.block_on(measure_leasecron(
                &probe,
                &base.join(name),
                samples,
                ledger,
                launcher,
            ));
            report
                .samples(&format!("{}.{name}", condition.key("lag")), "ms", &lags)
                .samples(
                    &format!("{}.{name}", condition.key("to_spawn")),
                    "ms",
                    &to_spawn,
                );
            p99.insert(name, quantile(&lags, 0.99));
            table.push((name.to_owned(), lags));
            table.push((
                format!(
                    "  of which slot → {}",
                    if supervised { "request" } else { "spawn()" }
                ),
                to_spawn,
            ));
        }
        for (launcher, without, with) in [
            ("in_process", "leasecron", "leasecron_file_state"),
            (
                "supervised",
                "leasecron_supervised",
                "leasecron_supervised_file_state",
            ),
        ] {
            let delta = p99[with] - p99[without];
            report.value(
                &format!("{}.{launcher}", condition.key("state_delta_p99")),
                delta,
                "ms",
            );
            println!(
                "{}: p99 with the file run state − without, {launcher}: {delta:+.2} ms",
                condition.title()
            );
        }
        if let Ok(bin) = &supercronic {
            let lags = measure_supercronic(bin, &probe, &base.join("supercronic"), samples);
            report.samples(
                &format!("{}.supercronic", condition.key("lag")),
                "ms",
                &lags,
            );
            table.push(("supercronic".to_owned(), lags));
        }
        if condition == Condition::Quiet {
            let tcs = runtime.block_on(measure_tokio_cron_scheduler(
                &probe,
                &base.join("tcs"),
                samples,
            ));
            report.samples("lag.tokio_cron_scheduler", "ms", &tcs);
            table.push(("tokio-cron-scheduler".to_owned(), tcs));
        }
        if let Some(hog) = hog {
            let share = hog.stop();
            report.value("hog.cpu_share", share, "fraction");
            println!("the hog had {:.0} % of a CPU", share * 100.0);
        }
        tables.push((condition, table));
    }
    let supervisor_rss = rss_mib(supervisor.pid(), "VmRSS:");
    let supervisor_anon = rss_mib(supervisor.pid(), "RssAnon:");
    let (bench_rss, bench_anon) = (
        rss_mib(std::process::id(), "VmRSS:"),
        rss_mib(std::process::id(), "RssAnon:"),
    );
    runtime.block_on(supervisor.stop());
    let wire = measure_supervisor_wire(&probe, &dir.path().join("wire"), wire_samples);
    report
        .samples("wire.too_late_round_trip", "ms", &wire.too_late)
        .samples("wire.spawned_round_trip", "ms", &wire.spawned)
        .samples("wire.request_to_child", "ms", &wire.to_child)
        .value("wire.request_bytes", wire.request_bytes as f64, "bytes")
        .value("rss.supervisor", supervisor_rss, "MiB")
        .value("rss_anon.supervisor", supervisor_anon, "MiB")
        .value("rss.bench", bench_rss, "MiB")
        .value("rss_anon.bench", bench_anon, "MiB")
        .write();
    for (condition, table) in tables {
        println!("\n{}:", condition.title());
        println!(
            "{:<40} {:>9} {:>9} {:>9} {:>9} {:>7}",
            "", "min", "median", "p99", "max", "n"
        );
        for (name, lags) in table {
            Summary::of(lags).print(&name);
        }
    }
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

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// Where this bench keeps what it builds between runs: `target/start-lag/` (the bench binary is
/// `target/<profile>/deps/start_lag-…`).
fn cache_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let target = exe
        .parent()
        .filter(|deps| deps.ends_with("deps"))
        .and_then(Path::parent)
        .and_then(Path::parent)
        .map_or_else(
            || Path::new(env!("CARGO_MANIFEST_DIR")).join("target"),
            Path::to_path_buf,
        );
    target.join("start-lag")
}

/// The supercronic binary: `LAG_SUPERCRONIC` if set, else the one built before in `target/start-lag/`,
/// else built now with `go install` from the Go module proxy. An error says why it cannot be measured.
fn supercronic() -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os("LAG_SUPERCRONIC") {
        let path = PathBuf::from(path);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(format!("LAG_SUPERCRONIC={} is not a file", path.display()))
        };
    }
    let bin = cache_dir().join(format!("supercronic-{SUPERCRONIC_VERSION}"));
    let exe = bin.join("supercronic");
    if exe.is_file() {
        return Ok(exe);
    }
    let command = format!(
        "GOBIN={} go install {SUPERCRONIC_MODULE}@{SUPERCRONIC_VERSION}",
        bin.display()
    );
    if let Err(e) = Command::new("go").arg("version").output() {
        return Err(if e.kind() == std::io::ErrorKind::NotFound {
            "Go is not installed (no `go` on PATH); supercronic is built with `go install`"
                .to_owned()
        } else {
            format!("`go version` could not run: {e}")
        });
    }
    println!("building supercronic: {command} ...");
    let output = Command::new("go")
        .args([
            "install",
            &format!("{SUPERCRONIC_MODULE}@{SUPERCRONIC_VERSION}"),
        ])
        .env("GOBIN", &bin)
        // A module install ignores the working directory's go.mod, but not GOFLAGS=-mod=…
        .env_remove("GOFLAGS")
        .output()
        .map_err(|e| format!("`{command}` could not run: {e}"))?;
    if !output.status.success() || !exe.is_file() {
        // The last lines of go's message: the one that says why.
        let stderr = String::from_utf8_lossy(&output.stderr);
        let lines: Vec<&str> = stderr.lines().collect();
        let tail = lines[lines.len().saturating_sub(5)..].join(" / ");
        return Err(format!("`{command}` failed: {tail}"));
    }
    Ok(exe)
}

/// The hog: spins at full speed until its parent (this bench) is gone or kills it.
fn hog(parent: u32) {
    let mut x = 0u64;
    loop {
        let until = Instant::now() + Duration::from_millis(100);
        while Instant::now() < until {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
        }
        if std::os::unix::process::parent_id() != parent {
            return;
        }
    }
}

/// A running hog: a child process of this bench, this same binary re-executed, spinning on one core.
struct Hog {
    child: Child,
    started: Instant,
}

impl Hog {
    fn start() -> Hog {
        let child = Command::new(std::env::current_exe().expect("current exe"))
            .env(HOG_ENV, std::process::id().to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("start the hog");
        // Let it get going before anything is measured.
        std::thread::sleep(Duration::from_millis(500));
        Hog {
            child,
            started: Instant::now(),
        }
    }

    /// Stops it; the share of one CPU it had (its CPU time, from `/proc/PID/schedstat`, over its life).
    fn stop(mut self) -> f64 {
        let elapsed = self.started.elapsed().as_secs_f64() + 0.5;
        let cpu_ns = fs::read_to_string(format!("/proc/{}/schedstat", self.child.id()))
            .ok()
            .and_then(|s| s.split_whitespace().next()?.parse::<f64>().ok())
            .unwrap_or(f64::NAN);
        let _ = self.child.kill();
        let _ = self.child.wait();
        cpu_ns / 1e9 / elapsed
    }
}

/// The floor: this process spawns the probe itself, one at a time; lag = probe's clock − the instant
/// just before `spawn()`. `fork`: leasecron's set-up (own process group, stdin from `/dev/null`, piped
/// stdout and stderr, `PR_SET_PDEATHSIG` in a `pre_exec` hook, which makes std fork instead of
/// `posix_spawn`); else std's `Command` with its defaults.
fn measure_floor(probe: &Path, out: &Path, samples: usize, fork: bool) -> Vec<f64> {
    let mut before = Vec::with_capacity(samples);
    for _ in 0..samples {
        std::thread::sleep(Duration::from_millis(10));
        let mut command = Command::new(probe);
        command.arg(out);
        if fork {
            command
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .process_group(0);
            // SAFETY: the closure runs in the forked child before exec, where only async-signal-safe
            // calls are allowed: it makes one prctl(2) and allocates nothing. It is the hook leasecron
            // installs (src/process.rs), measured here for what it costs: it forces a full fork.
            unsafe {
                command.pre_exec(|| {
                    nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
                        .map_err(std::io::Error::from)
                });
            }
        }
        let at = now_ns();
        let mut child = command.spawn().expect("spawn the probe");
        before.push(at);
        let _ = child.wait();
    }
    let started = probe_records(out);
    assert_eq!(started.len(), samples, "every probe recorded its start");
    started
        .iter()
        .zip(&before)
        .map(|(child, at)| child.saturating_sub(*at) as f64 / 1e6)
        .collect()
}

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_nanos()
}

/// A ledger over a run state in memory: each slot is claimed, without a write to disk.
fn memory_ledger() -> Arc<Ledger> {
    Arc::new(Ledger::new(MemoryStore::new(), "bench".to_owned()))
}

/// A ledger over the file run state beside `lease` (each run has a record of its own, on the same disk),
/// with a term begun: every slot is claimed (written, fsynced) in that file.
fn file_ledger(runtime: &tokio::runtime::Runtime, lease: &Path) -> Arc<Ledger> {
    let ledger = Arc::new(Ledger::new(StateFile::beside(lease), "bench".to_owned()));
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
}

/// The child-measured lags, and the runner's own `start_delay`: in-process, slot until just before
/// `spawn()` on the spawner thread, so the difference between the two is the cost of fork, exec and the
/// child's start; supervised, slot until the request is made, so the difference also holds the request's
/// trip to the supervisor.
async fn measure_leasecron(
    probe: &Path,
    out: &Path,
    samples: u64,
    ledger: Arc<Ledger>,
    launcher: Launcher,
) -> (Vec<f64>, Vec<f64>) {
    let yaml = format!(
        "jobs:\n  - name: lag\n    schedule: \"* * * * * *\"\n    concurrencyPolicy: Allow\n    command: [{:?}, {:?}]\n",
        probe.display().to_string(),
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

/// supercronic with the one line `* * * * * * * PROBE OUT` for `samples` seconds. It runs a job through
/// `/bin/sh -c LINE` (its only way), in a process group of its own, logging each start to stderr (here
/// `/dev/null`), as it does by default.
fn measure_supercronic(bin: &Path, probe: &Path, out: &Path, samples: u64) -> Vec<f64> {
    let crontab = out.with_extension("crontab");
    fs::write(
        &crontab,
        format!("* * * * * * * {} {}\n", probe.display(), out.display()),
    )
    .expect("write the crontab");
    let mut child = Command::new(bin)
        .arg(&crontab)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start supercronic");
    std::thread::sleep(Duration::from_secs(samples + 1));
    // SIGTERM: supercronic waits for its running jobs (a probe lives for a fraction of a millisecond).
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let _ = child.wait();
    lags(out)
}

async fn measure_tokio_cron_scheduler(probe: &Path, out: &Path, samples: u64) -> Vec<f64> {
    use tokio_cron_scheduler::{Job, JobScheduler};
    let probe = probe.to_owned();
    let record: PathBuf = out.to_owned();
    let mut scheduler = JobScheduler::new().await.expect("scheduler");
    let job = Job::new_async("* * * * * *", move |_id, _lock| {
        let probe = probe.clone();
        let out = record.clone();
        Box::pin(async move {
            let mut child = tokio::process::Command::new(probe)
                .arg(out)
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
fn measure_supervisor_wire(probe: &Path, out: &Path, samples: usize) -> Wire {
    let (ours, theirs) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .expect("socketpair");
    let mut child = Command::new(LEASECRON)
        .args(["supervise", "--fd", "0"])
        .stdin(Stdio::from(theirs))
        .stdout(Stdio::null())
        .spawn()
        .expect("start leasecron supervise");
    let request = |id: u64, not_after_ns: u64| Request::Spawn {
        id,
        program: probe.display().to_string(),
        args: vec![out.display().to_string()],
        // What the runner adds for every run: the five LEASECRON_* variables.
        env: vec![
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
        let wall = now_ns();
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
        sent_at.push(wall);
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
    let started = probe_records(out);
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
    lag_probe::lags_every(out, 1)
}

/// The nearest-rank quantile, as benches/support/report.rs computes it.
fn quantile(values: &[f64], q: f64) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * q).round() as usize]
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
