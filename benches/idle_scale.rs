//! What 10 000 loaded jobs cost a replica when nothing fires: a real `leasecron run` process on a lease file
//! (it leads, with the file run state), with 10 jobs and with `SCALE_JOBS` (default 10 000), every job due
//! half a year from now. Reported for each: the time from the process's start until it leads and `/readyz`
//! answers 200, its RSS (`VmRSS`, and the peak `VmHWM`), its CPU time per second over `SCALE_IDLE_SECONDS`
//! (default 30: every timer re-reads the wall clock every 30 s), one `/metrics` and one `/status` (bytes,
//! time), and the time from SIGTERM to exit.
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

use std::path::Path;
use std::time::{Duration, Instant};

use chrono::{Datelike, Utc};
use nix::sys::signal::Signal;
use replica::{http_request, wait_for, Replica};
use scale_jobs::JobSpec;

const STARTUP_LIMIT: Duration = Duration::from_secs(120);
/// After ready: let the start-up's allocations and first reports settle.
const SETTLE: Duration = Duration::from_secs(3);
const WIDTH: usize = 36;

/// One replica's figures.
struct Figures {
    ready_ms: f64,
    rss_mib: f64,
    hwm_mib: f64,
    cpu_ms_per_s: f64,
    metrics: (usize, f64),
    status: (usize, f64),
    exit_ms: f64,
}

fn main() {
    let jobs: usize = scale::env_or("SCALE_JOBS", 10_000);
    let idle: u64 = scale::env_or("SCALE_IDLE_SECONDS", 30);
    let small = measure(10, idle);
    let large = measure(jobs, idle);
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
    for (key, figures) in [("small", &small), ("large", &large)] {
        report
            .value(&format!("{key}.ready"), figures.ready_ms, "ms")
            .value(&format!("{key}.rss"), figures.rss_mib, "MiB")
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
            .value(&format!("{key}.sigterm_to_exit"), figures.exit_ms, "ms");
    }
    report.write();
}

fn measure(jobs: usize, idle: u64) -> Figures {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = jobs_file(dir.path(), jobs);
    let started = Instant::now();
    let mut replica = Replica::start(
        dir.path(),
        "idle",
        &file,
        &dir.path().join("lease"),
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
    let hwm_mib = scale::status_kib(pid, "VmHWM:") as f64 / 1024.0;
    let cpu_before = scale::cpu_ms(pid);
    std::thread::sleep(Duration::from_secs(idle));
    let cpu_ms_per_s = (scale::cpu_ms(pid) - cpu_before) / idle as f64;
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
        hwm_mib,
        cpu_ms_per_s,
        metrics,
        status,
        exit_ms,
    }
}

/// `jobs` jobs due half a year from now, each with a little env, as a file in `dir`.
fn jobs_file(dir: &Path, jobs: usize) -> std::path::PathBuf {
    let month = Utc::now().month();
    let specs: Vec<JobSpec> = (0..jobs)
        .map(|i| {
            JobSpec::new(
                format!("far-{i:05}"),
                scale_jobs::far_away_schedule(i, month),
                &["/usr/local/bin/report", "--shard", "3"],
            )
            .with_env("TEAM", "billing")
        })
        .collect();
    let path = dir.join("jobs.yaml");
    std::fs::write(&path, scale_jobs::jobs_file(&specs)).expect("write the jobs file");
    path
}
