//! Where an idle replica's heap goes, by part: the real `leasecron run` (lease file, leading, file run
//! state) runs inside this bench's process under the `dhat` heap profiler, with 10 jobs and with
//! `HEAP_SCALE_JOBS` (default 2 000) jobs due half a year from now, as in `idle_scale`. (The profiler
//! records a stack for each of the millions of allocations that loading a jobs file makes, which is
//! about a hundred times slower than without it: 10 000 jobs take minutes to load under it. What a job
//! costs at rest does not depend on how many there are, so 2 000 measure it.) Once it leads and has
//! settled, the profile is taken: every block still live, with the stack that allocated it. Each block is
//! charged to the innermost `leasecron::MODULE` frame of its stack (the part of leasecron that asked for
//! it) and to the innermost crate frame (the library that allocated it: croner, prometheus, tokio, …);
//! blocks with no leasecron frame are the runtime's and the libraries' own (tokio's workers, the log
//! thread, …). The per-job cost of a part is its growth from 10 jobs to `SCALE_JOBS`.
//!
//! Each job count runs in a child process of its own (the bench re-executes itself), so the two profiles
//! do not mix and the process's own RSS is not the parent's. Under the profiler every allocation records
//! its stack: this measures the heap's bytes, not the RSS (see `idle_scale` for that).
//!
//! ```text
//! cargo bench --bench heap_scale                # ~2 min
//! HEAP_SCALE_JOBS=10000 cargo bench --bench heap_scale
//! ```

#[path = "../tests/support/replica.rs"]
pub mod replica;
#[path = "support/report.rs"]
mod report;
#[path = "support/scale.rs"]
mod scale;
#[path = "../tests/support/scale_jobs.rs"]
pub mod scale_jobs;

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use leasecron::backend::JobsSource;
use leasecron::clock::SystemClock;
use leasecron::cmd::run::RunOptions;
use leasecron::cmd::Timings;
use serde_json::Value;

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

/// Set in the child: the job count it runs with.
const CHILD_ENV: &str = "HEAP_SCALE_CHILD";
/// Classify the profiles in these directories (`SMALL:LARGE`) instead of making them.
const PROFILES_ENV: &str = "HEAP_SCALE_PROFILES";
/// Set in the child: the directory of its files (jobs, lease, profile, figures).
const DIR_ENV: &str = "HEAP_SCALE_DIR";
const STARTUP_LIMIT: Duration = Duration::from_secs(900);
/// After it leads: let the start-up's transient allocations go and the first reports settle.
const SETTLE: Duration = Duration::from_secs(3);
/// Parts smaller than this (per job at the large count, and in total at the small one) are summed as
/// "other" in the table.
const SHOWN_BYTES: f64 = 16.0 * 1024.0;

fn main() {
    if let Ok(jobs) = std::env::var(CHILD_ENV) {
        let jobs: usize = jobs.parse().expect("a job count");
        let dir = PathBuf::from(std::env::var_os(DIR_ENV).expect("the child's directory"));
        child(jobs, &dir);
        return;
    }
    let jobs: usize = scale::env_or("HEAP_SCALE_JOBS", 2_000);
    // `HEAP_SCALE_PROFILES=SMALL_DIR:LARGE_DIR`: classify the profiles a child left there (run by hand
    // with HEAP_SCALE_CHILD and HEAP_SCALE_DIR, e.g. by an earlier build) instead of running the children.
    let (small, large) = match std::env::var(PROFILES_ENV) {
        Ok(dirs) => {
            let (small, large) = dirs.split_once(':').expect("SMALL_DIR:LARGE_DIR");
            (
                read_profile(10, Path::new(small)),
                read_profile(jobs, Path::new(large)),
            )
        }
        Err(_) => (profile(10), profile(jobs)),
    };
    print_and_report(jobs, &small, &large);
}

/// One profile: live bytes (and blocks) at idle by part, and the totals.
struct Profile {
    jobs: usize,
    /// Part ("leasecron module ← crate") → (bytes, blocks).
    parts: BTreeMap<String, (f64, f64)>,
    total_bytes: f64,
    total_blocks: f64,
    /// What one GET /status then left allocated (the status cache), in bytes.
    status_retained: f64,
    /// Same for GET /metrics.
    metrics_retained: f64,
}

fn profile(jobs: usize) -> Profile {
    let dir = tempfile::tempdir().expect("tempdir");
    let started = Instant::now();
    let status = std::process::Command::new(std::env::current_exe().expect("this bench"))
        .env(CHILD_ENV, jobs.to_string())
        .env(DIR_ENV, dir.path())
        .env_remove(report::OUT_ENV)
        .stderr(std::fs::File::create(dir.path().join("log")).expect("the child's log"))
        .status()
        .expect("run the child");
    assert!(
        status.success(),
        "the {jobs}-job child failed: {status}\n{}",
        std::fs::read_to_string(dir.path().join("log")).unwrap_or_default()
    );
    eprintln!(
        "{jobs} jobs: profiled in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    read_profile(jobs, dir.path())
}

/// The profile a child left in `dir`, classified.
fn read_profile(jobs: usize, dir: &Path) -> Profile {
    let text = std::fs::read_to_string(dir.join("heap.json")).expect("the profile");
    let figures: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("figures.json")).expect("the child's figures"),
    )
    .expect("figures");
    let profile: Value = serde_json::from_str(&text).expect("dhat's JSON");
    let frames: Vec<&str> = profile["ftbl"]
        .as_array()
        .expect("ftbl")
        .iter()
        .map(|f| f.as_str().unwrap_or(""))
        .collect();
    let mut parts: BTreeMap<String, (f64, f64)> = BTreeMap::new();
    let (mut total_bytes, mut total_blocks) = (0.0, 0.0);
    for pp in profile["pps"].as_array().expect("pps") {
        let bytes = pp["eb"].as_f64().unwrap_or(0.0);
        if bytes == 0.0 {
            continue;
        }
        let blocks = pp["ebk"].as_f64().unwrap_or(0.0);
        let stack: Vec<&str> = pp["fs"]
            .as_array()
            .expect("fs")
            .iter()
            .filter_map(|i| frames.get(i.as_u64()? as usize).copied())
            .collect();
        let part = classify(&stack);
        let entry = parts.entry(part).or_default();
        entry.0 += bytes;
        entry.1 += blocks;
        total_bytes += bytes;
        total_blocks += blocks;
    }
    Profile {
        jobs,
        parts,
        total_bytes,
        total_blocks,
        status_retained: figures["status_retained"].as_f64().unwrap_or(0.0),
        metrics_retained: figures["metrics_retained"].as_f64().unwrap_or(0.0),
    }
}

/// The file of a dhat frame (`0xADDR: SYMBOL (FILE:LINE:COL)`), as dhat trims it: its last three
/// components (`wt-mem/src/schedule.rs`, `src/config/validate.rs`, `croner-4.0.3/src/component.rs`,
/// `runtime/task/raw.rs`). The symbols of inlined frames carry no module path, so the file is what tells
/// whose a frame is.
fn file(frame: &str) -> &str {
    let Some((_, rest)) = frame.rsplit_once(" (") else {
        return "";
    };
    let rest = rest.trim_end_matches(')');
    // FILE:LINE:COL
    let mut parts = rest.rsplitn(3, ':');
    let (_col, _line) = (parts.next(), parts.next());
    parts.next().unwrap_or("")
}

/// leasecron's top-level modules (src/lib.rs).
const MODULES: [&str; 29] = [
    "app",
    "backend",
    "clock",
    "cmd",
    "config",
    "controls",
    "dispatch",
    "election",
    "event",
    "http",
    "kubernetes",
    "lease_store",
    "local",
    "logging",
    "metrics",
    "observe",
    "operator",
    "process",
    "rate_limit",
    "reaper",
    "reload",
    "run_state",
    "runner",
    "schedule",
    "shutdown",
    "signals",
    "stall",
    "supervisor",
    "term",
];

/// The leasecron module of a frame's file: `…/src/MODULE.rs`, `src/MODULE/…`, or (deeper files, of
/// which only three components are left) `MODULE/SUBMODULE/FILE.rs`.
fn module_of(file: &str) -> Option<&'static str> {
    let parts: Vec<&str> = file.split('/').collect();
    let named = |part: &str| {
        MODULES
            .iter()
            .copied()
            .find(|module| *module == part.trim_end_matches(".rs"))
    };
    match parts.iter().position(|part| *part == "src") {
        // The standard library's own `src/process.rs` and the like are not ours.
        Some(at) if at > 0 && ["std", "alloc", "core"].contains(&parts[at - 1]) => None,
        Some(at) => parts.get(at + 1).and_then(|part| named(part)),
        None if parts.len() == 3 => named(parts[0]),
        None => None,
    }
}

/// The library of a frame's file: a crate's directory (`croner-4.0.3` → `croner`), or tokio's
/// (its files are deep enough to lose the crate's directory); `None` for the standard library.
fn library_of(file: &str) -> Option<String> {
    let first = file.split('/').next().unwrap_or("");
    if let Some((name, version)) = first.rsplit_once('-') {
        if version.starts_with(|c: char| c.is_ascii_digit()) && !name.is_empty() {
            return Some(name.to_owned());
        }
    }
    const TOKIO: [&str; 6] = ["runtime", "scheduler", "task", "sync", "time", "loom"];
    if TOKIO.contains(&first) || file.starts_with("src/task/") || file.starts_with("src/runtime/") {
        return Some("tokio".to_owned());
    }
    None
}

/// "MODULE ← LIBRARY" for a stack, innermost frame first: the innermost leasecron module, and the
/// innermost library frame inside it (the profiler's own frames excluded).
fn classify(stack: &[&str]) -> String {
    let mut library = None;
    let mut module = None;
    for frame in stack {
        let file = file(frame);
        if file.contains("heap_scale.rs") {
            continue;
        }
        if let Some(found) = module_of(file) {
            module = Some(found);
            break;
        }
        if library.is_none() {
            library =
                library_of(file).filter(|name| !["dhat", "backtrace"].contains(&name.as_str()));
        }
    }
    match (module, library) {
        (Some(module), Some(library)) => format!("{module} ← {library}"),
        (Some(module), None) => module.to_owned(),
        (None, Some(library)) => format!("(no leasecron frame) ← {library}"),
        (None, None) => "(no leasecron frame)".to_owned(),
    }
}

fn print_and_report(jobs: usize, small: &Profile, large: &Profile) {
    let extra = (large.jobs - small.jobs) as f64;
    let mut rows: Vec<(&String, f64, f64, f64)> = large
        .parts
        .iter()
        .map(|(part, (bytes, blocks))| {
            let before = small.parts.get(part).map_or(0.0, |(b, _)| *b);
            (part, before, *bytes, *blocks)
        })
        .collect();
    for (part, (bytes, _)) in &small.parts {
        if !large.parts.contains_key(part) {
            rows.push((part, *bytes, 0.0, 0.0));
        }
    }
    rows.sort_by(|a, b| (b.2 - b.1).total_cmp(&(a.2 - a.1)));
    println!(
        "live heap of an idle replica (`leasecron run`, lease file, leading) by part: the innermost \
         leasecron module ← the innermost library that allocated"
    );
    println!(
        "{:<52} {:>12} {:>12} {:>10} {:>10}",
        "part",
        "10 jobs",
        format!("{jobs} jobs"),
        "per job",
        "blocks/job"
    );
    let mut report = report::Report::new("heap_scale");
    report
        .param("jobs", jobs)
        .param("small_jobs", small.jobs)
        .param("settle_seconds", SETTLE.as_secs());
    let mut shown = Vec::new();
    let (mut other_small, mut other_large, mut other_blocks) = (0.0, 0.0, 0.0);
    for (part, before, after, blocks) in &rows {
        let per_job = (after - before) / extra;
        let small_blocks = small.parts.get(*part).map_or(0.0, |(_, k)| *k);
        let blocks_per_job = (blocks - small_blocks) / extra;
        if (after - before).abs() >= SHOWN_BYTES || *before >= SHOWN_BYTES {
            println!(
                "{part:<52} {:>9.1} Ki {:>9.1} Ki {:>8.0} B {:>10.2}",
                before / 1024.0,
                after / 1024.0,
                per_job,
                blocks_per_job
            );
            shown.push(serde_json::json!({
                "part": part, "small_bytes": before, "large_bytes": after,
                "per_job_bytes": per_job, "per_job_blocks": blocks_per_job,
            }));
        } else {
            other_small += before;
            other_large += after;
            other_blocks += blocks_per_job;
        }
    }
    println!(
        "{:<52} {:>9.1} Ki {:>9.1} Ki {:>8.0} B {:>10.2}",
        "other (smaller parts)",
        other_small / 1024.0,
        other_large / 1024.0,
        (other_large - other_small) / extra,
        other_blocks
    );
    shown.push(serde_json::json!({
        "part": "other (smaller parts)", "small_bytes": other_small, "large_bytes": other_large,
        "per_job_bytes": (other_large - other_small) / extra, "per_job_blocks": other_blocks,
    }));
    let per_job = (large.total_bytes - small.total_bytes) / extra;
    println!(
        "{:<52} {:>9.1} Ki {:>9.1} Ki {:>8.0} B {:>10.2}",
        "total live heap",
        small.total_bytes / 1024.0,
        large.total_bytes / 1024.0,
        per_job,
        (large.total_blocks - small.total_blocks) / extra
    );
    println!(
        "then left by one GET /status: {:.1} Ki / {:.1} Ki; by one GET /metrics: {:.1} Ki / {:.1} Ki",
        small.status_retained / 1024.0,
        large.status_retained / 1024.0,
        small.metrics_retained / 1024.0,
        large.metrics_retained / 1024.0
    );
    for (key, p) in [("small", small), ("large", large)] {
        report
            .value(&format!("{key}.heap"), p.total_bytes, "B")
            .value(&format!("{key}.blocks"), p.total_blocks, "blocks")
            .value(&format!("{key}.status_retained"), p.status_retained, "B")
            .value(&format!("{key}.metrics_retained"), p.metrics_retained, "B");
    }
    report
        .value("per_job.heap", per_job, "B")
        .value(
            "per_job.blocks",
            (large.total_blocks - small.total_blocks) / extra,
            "blocks",
        )
        .raw("parts", Value::Array(shown));
    report.write();
}

/// The child: runs the replica in this process under the profiler, and writes the profile once idle.
fn child(jobs: usize, dir: &Path) {
    let jobs_path = scale_jobs::far_away_jobs_file(dir, jobs);
    let addr = free_port();
    let opts = RunOptions {
        jobs: JobsSource::File(jobs_path),
        lease_name: "heap".to_owned(),
        lease_namespace: None,
        identity: Some("heap".to_owned()),
        timings: Timings::default(),
        lease_file: Some(dir.join("lease")),
        http_addr: addr,
        startup_timeout: Duration::from_secs(10),
        supervisor_program: PathBuf::from(env!("CARGO_BIN_EXE_leasecron")),
        log_format: leasecron::supervisor::LogFormat::Json,
        max_file_size: 64 << 20,
    };
    let profiler = dhat::Profiler::builder()
        .file_name(dir.join("heap.json"))
        .trim_backtraces(None)
        .build();
    // Logging and the runtime as `leasecron run` sets them up (src/main.rs); the log goes to the file
    // the parent made this process's stderr.
    let filter = tracing_subscriber::EnvFilter::new("info,kube_client=off");
    let writer = leasecron::logging::stderr().expect("the log thread");
    tracing::subscriber::set_global_default(leasecron::logging::subscriber(
        leasecron::logging::LogFormat::Text,
        filter,
        writer,
    ))
    .expect("one subscriber");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.spawn(leasecron::cmd::run::run(opts, Arc::new(SystemClock)));
    // Leading: the lease file names this replica, and `/readyz` answers 200 (a scrape of `/metrics`
    // would allocate for every job under the profiler; it is taken once, below).
    let deadline = Instant::now() + STARTUP_LIMIT;
    loop {
        let holds = std::fs::read_to_string(dir.join("lease"))
            .ok()
            .and_then(|text| serde_json::from_str::<Value>(&text).ok())
            .is_some_and(|lease| lease["holderIdentity"] == "heap");
        if holds && replica::http_request(addr, "/readyz").is_some_and(|r| r.status == 200) {
            break;
        }
        assert!(Instant::now() < deadline, "the replica did not lead");
        std::thread::sleep(Duration::from_millis(250));
    }
    std::thread::sleep(SETTLE);
    // What one GET leaves allocated (a cache, a series created on first use), from the profiler's totals.
    let retained = |path: &str| {
        let before = dhat::HeapStats::get().curr_bytes as f64;
        let response = replica::http_request(addr, path).expect("an answer");
        assert_eq!(response.status, 200, "{path}");
        drop(response);
        std::thread::sleep(Duration::from_millis(500));
        dhat::HeapStats::get().curr_bytes as f64 - before
    };
    let idle_bytes = dhat::HeapStats::get().curr_bytes as f64;
    let metrics_retained = retained("/metrics");
    let status_retained = retained("/status");
    // The profile: what is live now, an idle replica that has been scraped once.
    drop(profiler);
    let figures = serde_json::json!({
        "idle_bytes": idle_bytes,
        "status_retained": status_retained,
        "metrics_retained": metrics_retained,
    });
    std::fs::write(dir.join("figures.json"), figures.to_string()).expect("write figures");
    std::process::exit(0);
}

/// A port free now on loopback.
fn free_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("its address")
}
