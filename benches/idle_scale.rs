//! What 10 000 loaded jobs cost a replica when nothing fires: a real `leasecron run` process on a lease file
//! (it leads, with the file run state), with 10 jobs and with `SCALE_JOBS` (default 10 000), every job due
//! half a year from now. Reported for each: the time from the process's start until it leads and `/readyz`
//! answers 200, its RSS (`VmRSS`, and the peak `VmHWM`), its CPU time per second over `SCALE_IDLE_SECONDS`
//! (default 30: every timer re-reads the wall clock every 30 s), one `/metrics` and one `/status` (bytes,
//! time), and the time from SIGTERM to exit.
//!
//! Wake-ups: over the same idle window, the sum over the process's threads of the growth of
//! `voluntary_ctxt_switches` (`/proc/PID/task/TID/status`). A thread switches out voluntarily each time it
//! blocks (a tokio worker parks, the log thread waits), and each such block ends in one wake-up, so the
//! count per second is the rate at which the idle process is woken; the threads are listed by name with
//! their share. Preemptions (`nonvoluntary_ctxt_switches`) are not wake-ups and are left out. The run
//! supervisor (a child process) is reported beside the replica: its RSS and its wake-ups.
//!
//! A thread also switches out voluntarily while it waits for the disk, and each renewal of the lease file
//! waits for it (fsync of the file and of its directory). So the 10-job replica is measured once more with
//! its lease file on tmpfs (`/dev/shm`, if there is one), where no write waits: what is left is the
//! process's own wake-ups. The disk's share is measured apart: the switches of one such durable write
//! made by the bench itself.
//!
//! ```text
//! cargo bench --bench idle_scale                # ~1.5 min
//! SCALE_JOBS=50000 SCALE_IDLE_SECONDS=60 cargo bench --bench idle_scale
//! ```

#[path = "../tests/support/replica.rs"]
pub mod replica;
#[path = "support/report.rs"]
mod report;
#[path = "support/scale.rs"]
mod scale;
#[path = "../tests/support/scale_jobs.rs"]
pub mod scale_jobs;

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use replica::{http_request, wait_for, Replica};

const STARTUP_LIMIT: Duration = Duration::from_secs(120);
/// After ready: let the start-up's allocations and first reports settle.
const SETTLE: Duration = Duration::from_secs(3);
const WIDTH: usize = 36;

/// One replica's figures.
struct Figures {
    ready_ms: f64,
    rss_mib: f64,
    /// Of the RSS: anonymous memory (heap, stacks) and file-backed pages (the binary's code and data).
    rss_anon_mib: f64,
    rss_file_mib: f64,
    hwm_mib: f64,
    cpu_ms_per_s: f64,
    metrics: (usize, f64),
    status: (usize, f64),
    exit_ms: f64,
    /// Voluntary context switches per second over the idle window, all threads.
    wakeups_per_s: f64,
    /// The same by thread name (threads of one name summed), most first.
    wakeups_by_thread: Vec<(String, f64)>,
    threads: usize,
    /// The run supervisor: RSS in MiB and wake-ups per second.
    supervisor: (f64, f64),
}

fn main() {
    let jobs: usize = scale::env_or("SCALE_JOBS", 10_000);
    let idle: u64 = scale::env_or("SCALE_IDLE_SECONDS", 30);
    let small = measure(10, idle, None);
    let large = measure(jobs, idle, None);
    // The lease file's renewals write it durably (fsync of the file and of its directory), and each wait for
    // the disk is a voluntary switch as much as a wake-up is: on tmpfs, which has no disk to wait for, what
    // is left is the process's own wake-ups. The disk's share is measured on its own below.
    let shm = tmpfs_dir();
    let small_tmpfs = shm.as_ref().map(|dir| measure(10, idle, Some(dir.path())));
    let write_waits = durable_write_switches(&std::env::temp_dir());
    println!(
        "idle replica (`leasecron run`, lease file, leading), every job due half a year from now"
    );
    println!(
        "{:<WIDTH$} {:>14} {:>14} {:>8}",
        "",
        "10 jobs",
        format!("{jobs} jobs"),
        "ratio"
    );
    let row = |name: &str, a: f64, b: f64, unit: &str| {
        println!(
            "{name:<WIDTH$} {:>11.1} {unit:<2} {:>11.1} {unit:<2} {:>7.1}x",
            a,
            b,
            b / a
        );
    };
    row(
        "start → leading and ready",
        small.ready_ms,
        large.ready_ms,
        "ms",
    );
    row("RSS (VmRSS)", small.rss_mib, large.rss_mib, "Mi");
    row(
        "  anonymous (RssAnon)",
        small.rss_anon_mib,
        large.rss_anon_mib,
        "Mi",
    );
    row(
        "  file-backed (RssFile)",
        small.rss_file_mib,
        large.rss_file_mib,
        "Mi",
    );
    row("peak RSS (VmHWM)", small.hwm_mib, large.hwm_mib, "Mi");
    row(
        &format!("CPU per second, idle ({idle} s)"),
        small.cpu_ms_per_s,
        large.cpu_ms_per_s,
        "ms",
    );
    row("GET /metrics", small.metrics.1, large.metrics.1, "ms");
    row(
        "  its size",
        small.metrics.0 as f64 / 1024.0,
        large.metrics.0 as f64 / 1024.0,
        "Ki",
    );
    row("GET /status", small.status.1, large.status.1, "ms");
    row(
        "  its size",
        small.status.0 as f64 / 1024.0,
        large.status.0 as f64 / 1024.0,
        "Ki",
    );
    row("SIGTERM → exit", small.exit_ms, large.exit_ms, "ms");
    row(
        &format!("wake-ups per second, idle ({idle} s)"),
        small.wakeups_per_s,
        large.wakeups_per_s,
        "/s",
    );
    row("threads", small.threads as f64, large.threads as f64, "");
    row(
        "run supervisor: RSS",
        small.supervisor.0,
        large.supervisor.0,
        "Mi",
    );
    row(
        "run supervisor: wake-ups per second",
        small.supervisor.1,
        large.supervisor.1,
        "/s",
    );
    match &small_tmpfs {
        Some(tmpfs) => println!(
            "wake-ups per second, idle, 10 jobs, lease file on tmpfs: {:.2} /s",
            tmpfs.wakeups_per_s
        ),
        None => println!("wake-ups on tmpfs: not measured (no tmpfs at /dev/shm)"),
    }
    println!(
        "one durable write of a lease file (write, fsync, rename, fsync of the directory): {write_waits:.1} \
         voluntary switches (waits for the disk)"
    );
    let large_key = format!("{jobs} jobs");
    let mut by_thread = vec![("10 jobs", &small), (large_key.as_str(), &large)];
    if let Some(tmpfs) = &small_tmpfs {
        by_thread.push(("10 jobs, tmpfs", tmpfs));
    }
    for (key, figures) in by_thread {
        let threads: Vec<String> = figures
            .wakeups_by_thread
            .iter()
            .map(|(name, rate)| format!("{name} {rate:.2}"))
            .collect();
        println!("wake-ups/s by thread, {key}: {}", threads.join(", "));
    }
    println!(
        "per job: RSS {:.1} KiB",
        (large.rss_mib - small.rss_mib) * 1024.0 / (jobs - 10) as f64
    );
    let mut report = report::Report::new("idle_scale");
    report
        .param("jobs", jobs)
        .param("small_jobs", 10)
        .param("idle_seconds", idle)
        .param("settle_seconds", SETTLE.as_secs());
    report.value("durable_write.switches", write_waits, "switches");
    let mut keyed = vec![("small", &small), ("large", &large)];
    if let Some(tmpfs) = &small_tmpfs {
        keyed.push(("small_tmpfs", tmpfs));
    }
    for (key, figures) in keyed {
        report
            .value(&format!("{key}.ready"), figures.ready_ms, "ms")
            .value(&format!("{key}.rss"), figures.rss_mib, "MiB")
            .value(&format!("{key}.rss_anon"), figures.rss_anon_mib, "MiB")
            .value(&format!("{key}.rss_file"), figures.rss_file_mib, "MiB")
            .value(&format!("{key}.hwm"), figures.hwm_mib, "MiB")
            .value(&format!("{key}.cpu_per_s"), figures.cpu_ms_per_s, "ms/s")
            .value(&format!("{key}.metrics_ms"), figures.metrics.1, "ms")
            .value(
                &format!("{key}.metrics_bytes"),
                figures.metrics.0 as f64,
                "B",
            )
            .value(&format!("{key}.status_ms"), figures.status.1, "ms")
            .value(&format!("{key}.status_bytes"), figures.status.0 as f64, "B")
            .value(&format!("{key}.sigterm_to_exit"), figures.exit_ms, "ms")
            .value(
                &format!("{key}.wakeups_per_s"),
                figures.wakeups_per_s,
                "1/s",
            )
            .value(&format!("{key}.threads"), figures.threads as f64, "threads")
            .value(
                &format!("{key}.supervisor_rss"),
                figures.supervisor.0,
                "MiB",
            )
            .value(
                &format!("{key}.supervisor_wakeups_per_s"),
                figures.supervisor.1,
                "1/s",
            )
            .raw(
                &format!("{key}.wakeups_by_thread"),
                serde_json::Value::Object(
                    figures
                        .wakeups_by_thread
                        .iter()
                        .map(|(name, rate)| (name.clone(), serde_json::json!(rate)))
                        .collect(),
                ),
            );
    }
    report.write();
}

/// Measures a replica with `jobs` jobs, idle for `idle` seconds, its lease file in `lease_dir` (by default
/// beside the jobs file, in a temporary directory on disk).
fn measure(jobs: usize, idle: u64, lease_dir: Option<&std::path::Path>) -> Figures {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = scale_jobs::far_away_jobs_file(dir.path(), jobs);
    let started = Instant::now();
    let mut replica = Replica::start(
        dir.path(),
        "idle",
        &file,
        &lease_dir.unwrap_or(dir.path()).join("lease"),
        // 10 000 jobs are over the 1 MiB a ConfigMap holds, the default bound.
        &["--max-file-size", "16MiB"],
    );
    let ready = wait_for(STARTUP_LIMIT, || {
        if let Ok(Some(status)) = replica.child.try_wait() {
            panic!("the replica exited: {status}\n{}", replica.log_text());
        }
        let leads = replica.log_text().contains(" msg=\"acquired");
        let ready = replica.http_get("/readyz").is_some_and(|r| r.status == 200);
        (leads && ready).then_some(())
    });
    assert!(
        ready.is_some(),
        "the replica did not lead within {STARTUP_LIMIT:?}"
    );
    let ready_ms = started.elapsed().as_secs_f64() * 1e3;
    std::thread::sleep(SETTLE);
    let pid = replica.child.id();
    let rss_mib = scale::rss_mib(pid);
    let rss_anon_mib = scale::status_kib(pid, "RssAnon:") as f64 / 1024.0;
    let rss_file_mib = scale::status_kib(pid, "RssFile:") as f64 / 1024.0;
    let hwm_mib = scale::status_kib(pid, "VmHWM:") as f64 / 1024.0;
    let supervisor = children(pid).into_iter().next();
    let cpu_before = scale::cpu_ms(pid);
    let switches_before = switches(pid);
    let supervisor_before = supervisor.map(switches).unwrap_or_default();
    std::thread::sleep(Duration::from_secs(idle));
    let cpu_ms_per_s = (scale::cpu_ms(pid) - cpu_before) / idle as f64;
    let switches_after = switches(pid);
    let threads = switches_after.len();
    let mut by_name: std::collections::BTreeMap<String, f64> = std::collections::BTreeMap::new();
    for (tid, (name, after)) in &switches_after {
        let before = switches_before.get(tid).map_or(0, |(_, count)| *count);
        *by_name.entry(name.clone()).or_default() +=
            after.saturating_sub(before) as f64 / idle as f64;
    }
    let wakeups_per_s = by_name.values().sum();
    let mut wakeups_by_thread: Vec<(String, f64)> = by_name.into_iter().collect();
    wakeups_by_thread.sort_by(|a, b| b.1.total_cmp(&a.1));
    let supervisor = supervisor.map_or((0.0, 0.0), |child| {
        let after = switches(child);
        let woken: u64 = after
            .iter()
            .map(|(tid, (_, count))| {
                count.saturating_sub(supervisor_before.get(tid).map_or(0, |(_, c)| *c))
            })
            .sum();
        (scale::rss_mib(child), woken as f64 / idle as f64)
    });
    let addr = replica.http_addr().expect("the replica serves HTTP");
    let get = |path: &str| {
        let started = Instant::now();
        let response = http_request(addr, path).expect("an answer");
        assert_eq!(response.status, 200, "{path}");
        (response.body.len(), started.elapsed().as_secs_f64() * 1e3)
    };
    let metrics = get("/metrics");
    let status = get("/status");
    let stopping = Instant::now();
    replica.signal(Signal::SIGTERM);
    replica
        .wait_exit(Duration::from_secs(60))
        .expect("the replica exits");
    let exit_ms = stopping.elapsed().as_secs_f64() * 1e3;
    eprintln!(
        "{jobs} jobs: ready {ready_ms:.0} ms, RSS {rss_mib:.1} MiB, CPU {cpu_ms_per_s:.2} ms/s"
    );
    Figures {
        ready_ms,
        rss_mib,
        rss_anon_mib,
        rss_file_mib,
        hwm_mib,
        cpu_ms_per_s,
        metrics,
        status,
        exit_ms,
        wakeups_per_s,
        wakeups_by_thread,
        threads,
        supervisor,
    }
}

/// A temporary directory on tmpfs (`/dev/shm`), if there is one.
fn tmpfs_dir() -> Option<tempfile::TempDir> {
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    let is_tmpfs = mounts.lines().any(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        fields.get(1) == Some(&"/dev/shm") && fields.get(2) == Some(&"tmpfs")
    });
    is_tmpfs
        .then(|| tempfile::tempdir_in("/dev/shm").ok())
        .flatten()
}

/// The voluntary switches of this thread for one durable write of a lease-sized file in `dir`, as the lease
/// file's store makes it: temporary file, write, fsync, rename over, fsync of the directory (a mean of 50).
fn durable_write_switches(dir: &std::path::Path) -> f64 {
    use std::io::Write as _;
    const WRITES: u32 = 50;
    let dir = tempfile::tempdir_in(dir).expect("tempdir");
    let own = || {
        let status = std::fs::read_to_string("/proc/thread-self/status").expect("status");
        status
            .lines()
            .find_map(|line| line.strip_prefix("voluntary_ctxt_switches:"))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .expect("voluntary_ctxt_switches")
    };
    let record = [b'x'; 200];
    let before = own();
    for _ in 0..WRITES {
        let temp = dir.path().join("lease.tmp");
        let mut file = std::fs::File::create(&temp).expect("create");
        file.write_all(&record).expect("write");
        file.sync_all().expect("fsync");
        std::fs::rename(&temp, dir.path().join("lease")).expect("rename");
        std::fs::File::open(dir.path())
            .and_then(|d| d.sync_all())
            .expect("fsync the directory");
    }
    (own() - before) as f64 / f64::from(WRITES)
}

/// Each thread of `pid`: its name and its `voluntary_ctxt_switches` so far.
fn switches(pid: u32) -> std::collections::BTreeMap<u32, (String, u64)> {
    let mut threads = std::collections::BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return threads;
    };
    for task in tasks.flatten() {
        let Some(tid) = task.file_name().to_str().and_then(|t| t.parse().ok()) else {
            continue;
        };
        let status = std::fs::read_to_string(task.path().join("status")).unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|line| line.strip_prefix(name))
                .map(str::trim)
        };
        let name = field("Name:").unwrap_or("?").to_owned();
        let count = field("voluntary_ctxt_switches:")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        threads.insert(tid, (name, count));
    }
    threads
}

/// The child processes of `pid` (`/proc/PID/task/*/children`).
fn children(pid: u32) -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("children")).ok())
        .flat_map(|text| {
            text.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect()
}
