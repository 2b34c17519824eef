//! Support for the chaos test (`tests/chaos.rs`): its settings and seeded PRNG, the jobs it runs, the
//! records those jobs write, and the monitor thread that watches them and the Lease while faults fly.
//!
//! - [`cluster`]: the replicas as processes (start, restart, SIGKILL/SIGTERM/SIGSTOP, API faults) and the
//!   log of every fault injected.
//! - [`analysis`]: the invariants, checked on what was recorded, and the report.
//!
//! Times are wall-clock nanoseconds since the epoch, the clock the jobs stamp their records with
//! (`date +%s%N`); the replicas run on this machine, so one clock orders every record.

pub mod analysis;
pub mod cluster;

use std::collections::HashMap;
use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::fake_apiserver::{real, FakeApiServer, Resource};
use super::replica::now_ns;

/// The Lease the replicas elect through (`run`'s default).
pub const LEASE: &str = "leasecron";
/// LD of [`crate::replica::FAST_TIMINGS`].
pub const LD: Duration = Duration::from_secs(3);
/// RD of the fast timings.
pub const RD: Duration = Duration::from_millis(1500);
/// RP of the fast timings.
pub const RP: Duration = Duration::from_millis(500);
/// G: the jobs' `terminationGrace`, the largest the fast timings allow (RD + G = LD − margin).
pub const GRACE: &str = "500ms";
/// The safety margin `run` demands of the fast timings: max(1 s, LD/10).
pub const MARGIN: Duration = Duration::from_secs(1);
/// Scheduling delay a loaded 2-core machine may add to any step (a timer firing, a fork, a request): the
/// slack every time bound below adds on top of the design's figure.
pub const SCHEDULING_SLACK: Duration = Duration::from_secs(2);
/// How long after a fault that disturbed the leader a slot may still be lost: a follower takes over at
/// most LD + RP after the leader's last renew (LD from its last observation; + RP if its watch was down
/// and it polls), then the slot in progress while the new term begins (its run state read and stamp)
/// may go too (1 s, one slot), plus [`SCHEDULING_SLACK`].
pub const RECOVERY: Duration = Duration::from_millis(
    (LD.as_millis() + RP.as_millis() + 1000 + SCHEDULING_SLACK.as_millis()) as u64,
);
/// A slot due this long before a fault may still be lost to it: it fired, but its claim in the run state
/// (an API write) or its spawn had not happened yet.
pub const BEFORE_FAULT: Duration = Duration::from_secs(1);
/// The longest freeze (SIGSTOP) the design covers without the fencing token: the margin absorbs a leader
/// whose deadline timer fires late, and a freeze is such a delay. Half the margin, leaving the other half
/// for the machine's own scheduling delays.
pub const COVERED_FREEZE: Duration = Duration::from_millis(500);
/// The every-second job: slots lost and run twice are counted on it.
pub const TICK: &str = "tick";
/// The 5-second job every 4 s (`Forbid` skips every other slot) that ignores SIGTERM: its runs are often in
/// flight when a term ends, must be SIGKILLed at +G, and outlive the next slot — so a run left alive
/// by a frozen runner meets the next leader's.
pub const LONG: &str = "long";
/// The 3-second job every 2 s with `concurrencyPolicy: Queue`: every slot fires while the run before it is
/// in flight, so it waits in the queue and starts when that run ends (a later slot replaces it when the
/// queue falls a whole run behind); a term that ends drops the waiting one. Its runs must never overlap,
/// start a slot twice, or start under a term that has ended.
pub const QUEUE: &str = "queue";
/// Every job, for the checks that apply to each.
pub const JOBS: [&str; 3] = [TICK, LONG, QUEUE];
/// How often the monitor looks at the records, the job processes and the Lease.
const MONITOR_INTERVAL: Duration = Duration::from_millis(20);

// === Settings ===

/// What a chaos run does: from `CHAOS_SEED`, `CHAOS_SECONDS` and `CHAOS_REPLICAS`.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Seeds every random choice (fault kinds, target roles, durations, gaps, restarts).
    pub seed: u64,
    /// How long faults are injected.
    pub chaos: Duration,
    /// How many replicas run (3 to 5).
    pub replicas: usize,
    /// The test's name, for the command that reproduces a run.
    pub test: &'static str,
    /// True for the `#[ignore]`d long form.
    pub ignored: bool,
}

impl Settings {
    /// The settings from the environment, else these defaults (the seed, else one from the clock).
    pub fn from_env(
        test: &'static str,
        ignored: bool,
        default_seconds: u64,
        default_replicas: usize,
    ) -> Settings {
        let seed = match std::env::var("CHAOS_SEED") {
            Ok(text) => parse_seed(&text)
                .unwrap_or_else(|| panic!("CHAOS_SEED={text:?}: a decimal or 0x-hex u64")),
            Err(_) => Rng::new(now_ns() as u64 ^ u64::from(std::process::id())).next_u64(),
        };
        let number = |name: &str, default: u64| match std::env::var(name) {
            Ok(text) => text
                .parse::<u64>()
                .unwrap_or_else(|_| panic!("{name}={text:?}: a whole number")),
            Err(_) => default,
        };
        let replicas = number("CHAOS_REPLICAS", default_replicas as u64) as usize;
        assert!(
            (3..=5).contains(&replicas),
            "CHAOS_REPLICAS={replicas}: 3 to 5 replicas"
        );
        Settings {
            seed,
            chaos: Duration::from_secs(number("CHAOS_SECONDS", default_seconds)),
            replicas,
            test,
            ignored,
        }
    }

    /// The command that runs this schedule again.
    pub fn reproduce(&self) -> String {
        format!(
            "CHAOS_SEED={} CHAOS_SECONDS={} CHAOS_REPLICAS={} cargo test --test chaos {} -- --exact{} --nocapture",
            self.seed,
            self.chaos.as_secs(),
            self.replicas,
            self.test,
            if self.ignored { " --ignored" } else { "" }
        )
    }
}

fn parse_seed(text: &str) -> Option<u64> {
    let text = text.trim();
    match text.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => text.parse().ok(),
    }
}

// === Rng ===

/// splitmix64: tiny, seedable, good enough to pick faults (and no dependency).
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }

    /// Uniform in [lo, hi).
    pub fn between(&mut self, lo: Duration, hi: Duration) -> Duration {
        lo + (hi - lo).mul_f64(self.unit())
    }
}

// === The jobs ===

/// The jobs file and the file the jobs record their runs in.
#[derive(Clone, Debug)]
pub struct Jobs {
    pub file: PathBuf,
    pub runs: PathBuf,
    /// Every job process has `CHAOS_RUN_DIR=<this>` in its environment, so strays can be found.
    pub marker: String,
}

/// Writes the three jobs into `dir`. Each run appends to `runs`:
///
/// `start JOB IDENTITY TOKEN SLOT NS PID LOCK`, then `end …` when it finishes, or (tick and queue) `term …`
/// when SIGTERM stops it. `NS` is `date +%s%N`; `PID` is the shell's, which is also its process group.
///
/// `LOCK` tells whether another run of the same job was alive when this one began, as the kernel saw it:
/// every run holds a shared `flock` on `JOB.lock` for as long as any of its processes lives (the fd is
/// inherited; a killed or exited process drops it, a stopped one keeps it), and first probes it with a
/// non-blocking exclusive lock: `free` if that succeeds, `busy` if some other run still holds it. A run
/// that could not take its shared lock within 2 s says `-unlocked` (`busy-unlocked`).
///
/// Every job has descendants that hold the lock too: `tick` and `queue` sleep in a nested shell, `long`
/// starts a `setsid` sleep that leaves its process group (and, like the job, ignores SIGTERM). A descendant that
/// outlived its run or its replica would be seen as `busy` by the next run.
pub fn write_jobs(dir: &Path) -> Jobs {
    let runs = dir.join("runs");
    let marker = dir.display().to_string();
    assert!(
        !marker.contains([' ', '\'', '"', '$', '\\']),
        "a plain temporary path: {marker}"
    );
    // The clock is read by its own command before the record is written: a SIGTERM that kills `date`
    // then runs the trap before the `echo` (dash runs traps between commands), never an `echo` with an
    // empty clock.
    let record = |job: &str, what: &str, lock: &str| {
        format!(
            r#"now=$(date +%s%N); echo "{what} {job} $LEASECRON_IDENTITY $LEASECRON_FENCING_TOKEN $LEASECRON_SCHEDULED_TIME $now $$ {lock}" >> {}"#,
            runs.display()
        )
    };
    let probe = |job: &str| {
        format!(
            "exec 9>>{lock}\n      if flock -n -x 9; then lock=free; else lock=busy; fi\n      flock -s -w 2 9 || lock=\"$lock-unlocked\"",
            lock = dir.join(format!("{job}.lock")).display()
        )
    };
    let tick = format!(
        "trap '{term}; exit 143' TERM\n      {probe}\n      {start}\n      sh -c 'sleep 0.2' & wait $!\n      {end}",
        term = record(TICK, "term", "-"),
        probe = probe(TICK),
        start = record(TICK, "start", "$lock"),
        end = record(TICK, "end", "-"),
    );
    let long = format!(
        "trap '' TERM\n      {probe}\n      {start}\n      setsid sleep 4.5 &\n      sleep 5\n      {end}",
        probe = probe(LONG),
        start = record(LONG, "start", "$lock"),
        end = record(LONG, "end", "-"),
    );
    let queue = format!(
        "trap '{term}; exit 143' TERM\n      {probe}\n      {start}\n      sh -c 'sleep 3' & wait $!\n      {end}",
        term = record(QUEUE, "term", "-"),
        probe = probe(QUEUE),
        start = record(QUEUE, "start", "$lock"),
        end = record(QUEUE, "end", "-"),
    );
    let file = dir.join("jobs.yaml");
    let yaml = format!(
        "defaults:\n  terminationGrace: {GRACE}\n  startingDeadline: 10s\n  env: {{CHAOS_RUN_DIR: {marker}}}\n\
         jobs:\n  - name: {TICK}\n    schedule: \"* * * * * *\"\n    shell: |\n      {tick}\n\
         \x20 - name: {LONG}\n    schedule: \"*/4 * * * * *\"\n    shell: |\n      {long}\n\
         \x20 - name: {QUEUE}\n    schedule: \"*/2 * * * * *\"\n    concurrencyPolicy: Queue\n    shell: |\n      {queue}\n"
    );
    fs::write(&file, yaml).expect("write the jobs file");
    Jobs { file, runs, marker }
}

// === The records ===

/// What a record line says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mark {
    Start,
    End,
    /// The SIGTERM trap of the tick and queue jobs.
    Term,
}

/// One line of the runs file.
#[derive(Clone, Debug)]
pub struct Line {
    pub mark: Mark,
    pub job: String,
    pub identity: String,
    pub token: u64,
    pub slot: DateTime<Utc>,
    pub ns: u128,
    pub pid: i32,
    /// `start` only: another run of the job was alive when this one probed the lock.
    pub busy: bool,
    /// `start` only: the run could not take its shared lock (its life is invisible to later probes).
    pub unlocked: bool,
}

/// Parses one record; `None` if it is malformed (which the report counts as a violation: the records are
/// the evidence).
fn parse_line(line: &str) -> Option<Line> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    let [mark, job, identity, token, slot, ns, pid, lock] = fields[..] else {
        return None;
    };
    let mark = match mark {
        "start" => Mark::Start,
        "end" => Mark::End,
        "term" => Mark::Term,
        _ => return None,
    };
    Some(Line {
        mark,
        job: job.to_owned(),
        identity: identity.to_owned(),
        token: token.parse().ok()?,
        slot: DateTime::parse_from_rfc3339(slot).ok()?.with_timezone(&Utc),
        ns: ns.parse().ok()?,
        pid: pid.parse().ok()?,
        busy: lock.starts_with("busy"),
        unlocked: lock.ends_with("-unlocked"),
    })
}

/// When the monitor saw a run's shell alive last, and first saw it gone (exited, killed or a zombie).
#[derive(Clone, Copy, Debug, Default)]
pub struct Liveness {
    pub last_alive_ns: Option<u128>,
    pub dead_seen_ns: Option<u128>,
}

/// One version of the Lease as the monitor saw it.
#[derive(Clone, Debug)]
pub struct LeaseSeen {
    /// When the monitor saw it.
    pub at_ns: u128,
    pub version: String,
    /// `holderIdentity`, `None` if empty.
    pub holder: Option<String>,
    pub transitions: u64,
    /// `acquireTime` as written (its text).
    pub acquire: Option<String>,
}

/// What the monitor recorded.
#[derive(Clone, Debug, Default)]
pub struct Observed {
    /// Every record line, in the order they were written.
    pub lines: Vec<Line>,
    /// By index of the `start` line in `lines`, for runs whose shell was seen alive or gone.
    pub liveness: HashMap<usize, Liveness>,
    /// Every version of the Lease seen, in order.
    pub lease: Vec<LeaseSeen>,
    /// Record lines that could not be parsed.
    pub malformed: Vec<String>,
}

impl Observed {
    /// The holder named by the latest version of the Lease seen.
    pub fn holder(&self) -> Option<String> {
        self.lease.last().and_then(|seen| seen.holder.clone())
    }

    /// `start` lines of `identity` whose shell was not seen gone, and that have no `end`/`term` line.
    pub fn unfinished_pids(&self, identity: &str) -> Vec<i32> {
        let mut open: HashMap<i32, usize> = HashMap::new();
        for (i, line) in self.lines.iter().enumerate() {
            if line.identity != identity {
                continue;
            }
            match line.mark {
                Mark::Start => {
                    open.insert(line.pid, i);
                }
                Mark::End | Mark::Term => {
                    open.remove(&line.pid);
                }
            }
        }
        open.into_iter()
            .filter(|(_, i)| {
                self.liveness
                    .get(i)
                    .is_none_or(|l| l.dead_seen_ns.is_none())
            })
            .map(|(pid, _)| pid)
            .collect()
    }
}

// === Monitor ===

/// A thread that, every [`MONITOR_INTERVAL`], reads new records, checks whether the shells of unfinished
/// runs are still alive, and reads the Lease.
pub struct Monitor {
    stop: Arc<AtomicBool>,
    state: Arc<Mutex<Watched>>,
    thread: Option<JoinHandle<()>>,
}

/// The monitor's state: what it observed and where it is in the runs file.
struct Watched {
    observed: Observed,
    runs: PathBuf,
    offset: u64,
    partial: String,
    /// `start` lines whose run has no end yet and was not seen gone: pid → line index.
    open: HashMap<i32, usize>,
    lease: LeaseReader,
}

/// Reads the Lease: from the fake's store, or, in front of the real server, with an admin client of its
/// own kept for the whole run (the proxy's [`FakeApiServer::object`] makes a client per call, too slow
/// for a look every [`MONITOR_INTERVAL`]); directly, so no fault of the proxy's hits the monitor.
enum LeaseReader {
    Fake(Arc<FakeApiServer>),
    Real(Box<RealLease>),
}

/// [`LeaseReader::Real`]: a runtime and a client of its own.
struct RealLease {
    runtime: tokio::runtime::Runtime,
    leases: kube::Api<k8s_openapi::api::coordination::v1::Lease>,
}

impl LeaseReader {
    fn new(server: Arc<FakeApiServer>) -> LeaseReader {
        let Some(real) = server.real() else {
            return LeaseReader::Fake(server);
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime for the monitor's reads of the Lease");
        let client = runtime.block_on(real::client_from(
            real.admin_kubeconfig(),
            Some(server.namespace()),
        ));
        LeaseReader::Real(Box::new(RealLease {
            runtime,
            leases: kube::Api::namespaced(client, server.namespace()),
        }))
    }

    /// The Lease as JSON, `None` if there is none (or it could not be read this time).
    fn read(&self) -> Option<serde_json::Value> {
        match self {
            LeaseReader::Fake(server) => server.object(Resource::Leases, server.namespace(), LEASE),
            LeaseReader::Real(real) => {
                let lease = real.runtime.block_on(async {
                    tokio::time::timeout(Duration::from_secs(2), real.leases.get_opt(LEASE)).await
                });
                serde_json::to_value(lease.ok()?.ok()??).ok()
            }
        }
    }
}

impl Monitor {
    pub fn start(runs: &Path, server: Arc<FakeApiServer>) -> Monitor {
        let stop = Arc::new(AtomicBool::new(false));
        let state = Arc::new(Mutex::new(Watched {
            observed: Observed::default(),
            runs: runs.to_path_buf(),
            offset: 0,
            partial: String::new(),
            open: HashMap::new(),
            lease: LeaseReader::new(server),
        }));
        let thread = {
            let (stop, state) = (Arc::clone(&stop), Arc::clone(&state));
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    lock(&state).poll();
                    std::thread::sleep(MONITOR_INTERVAL);
                }
            })
        };
        Monitor {
            stop,
            state,
            thread: Some(thread),
        }
    }

    /// A copy of what was observed so far (polled once more first).
    pub fn snapshot(&self) -> Observed {
        let mut state = lock(&self.state);
        state.poll();
        state.observed.clone()
    }

    /// The holder the Lease names now.
    pub fn holder(&self) -> Option<String> {
        let mut state = lock(&self.state);
        state.poll_lease();
        state.observed.holder()
    }

    /// Stops the thread after one last look; returns everything observed.
    pub fn finish(mut self) -> Observed {
        self.halt();
        let mut state = lock(&self.state);
        state.poll();
        std::mem::take(&mut state.observed)
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        self.halt();
    }
}

impl Watched {
    fn poll(&mut self) {
        self.poll_records();
        self.poll_processes();
        self.poll_lease();
    }

    fn poll_records(&mut self) {
        let Ok(mut file) = fs::File::open(&self.runs) else {
            return;
        };
        let mut text = String::new();
        if file.seek(SeekFrom::Start(self.offset)).is_err()
            || file.read_to_string(&mut text).is_err()
        {
            return;
        }
        self.offset += text.len() as u64;
        self.partial.push_str(&text);
        let Some(complete) = self.partial.rfind('\n') else {
            return;
        };
        let rest = self.partial.split_off(complete + 1);
        let lines = std::mem::replace(&mut self.partial, rest);
        for text in lines.lines().filter(|l| !l.trim().is_empty()) {
            let Some(line) = parse_line(text) else {
                self.observed.malformed.push(text.to_owned());
                continue;
            };
            let index = self.observed.lines.len();
            match line.mark {
                Mark::Start => {
                    self.open.insert(line.pid, index);
                }
                Mark::End | Mark::Term => {
                    self.open.remove(&line.pid);
                }
            }
            self.observed.lines.push(line);
        }
    }

    fn poll_processes(&mut self) {
        let now = now_ns();
        let mut gone = Vec::new();
        for (&pid, &index) in &self.open {
            let liveness = self.observed.liveness.entry(index).or_default();
            if job_shell_alive(pid) {
                liveness.last_alive_ns = Some(now);
            } else {
                liveness.dead_seen_ns = Some(now);
                gone.push(pid);
            }
        }
        for pid in gone {
            self.open.remove(&pid);
        }
    }

    fn poll_lease(&mut self) {
        let Some(lease) = self.lease.read() else {
            return;
        };
        let version = lease["metadata"]["resourceVersion"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        if self
            .observed
            .lease
            .last()
            .is_some_and(|seen| seen.version == version)
        {
            return;
        }
        let spec = &lease["spec"];
        self.observed.lease.push(LeaseSeen {
            at_ns: now_ns(),
            version,
            holder: spec["holderIdentity"]
                .as_str()
                .filter(|h| !h.is_empty())
                .map(str::to_owned),
            transitions: spec["leaseTransitions"].as_u64().unwrap_or(0),
            acquire: spec["acquireTime"].as_str().map(str::to_owned),
        });
    }
}

/// True if `pid` is a live (not zombie) process that leads its own process group: a job's shell. (A pid
/// reused by something else within one monitor interval is not worth guarding against further.)
pub fn job_shell_alive(pid: i32) -> bool {
    cluster::proc_stat(pid).is_some_and(|p| p.state != 'Z' && p.pgrp == pid)
}

/// A wall-clock instant as `HH:MM:SS.mmm`.
pub fn clock(ns: u128) -> String {
    DateTime::<Utc>::from_timestamp_nanos(ns as i64)
        .format("%H:%M:%S%.3f")
        .to_string()
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
