//! Validating a large jobs file: `leasecron validate` on a generated file of `SCALE_JOBS` (default 10 000)
//! realistic jobs (tests/support/scale_jobs.rs: a `defaults:` block, 5- and 6-field schedules and
//! macros, a dozen time zones, env, `shell:` and `command:`, every optional field now and then).
//!
//! - end to end: the release binary as a process (`leasecron validate FILE`, exit 0), wall time from
//!   spawn to exit and the child's CPU time (user + sys, from `/proc/self/stat`, 10 ms resolution),
//!   `SCALE_REPS` (default 11) times; the same on a 10-job file gives the floor (process start-up);
//!   `SCALE_LEASECRON=PATH` times another build too (e.g. one from before a change);
//! - in process: [`config::load_source`] (what `validate` calls: read, manifest detection, parse,
//!   validate) and [`config::parse_str`] (what `run` and a reload call);
//! - schedule: the first fire after now of every job ([`Schedule::next_after`], what each job's timer
//!   computes when it starts).
//!
//! ```text
//! cargo bench --bench validate_scale                  # ~10 s
//! SCALE_JOBS=50000 SCALE_REPS=5 cargo bench --bench validate_scale
//! SCALE_JOBS_OUT=/tmp/jobs.yaml cargo bench --bench validate_scale   # also keep the file (profiling)
//! SCALE_LEASECRON=/tmp/leasecron-before cargo bench --bench validate_scale   # compare with another build
//! ```

#[path = "support/report.rs"]
mod report;
#[path = "../tests/support/scale_jobs.rs"]
pub mod scale_jobs;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use chrono::Utc;
use leasecron::config::{self, LoadOptions, Source, DEFAULT_CONFIG_MAP_KEY};

const GOAL: Duration = Duration::from_millis(200);

fn main() {
    let jobs = env_or("SCALE_JOBS", 10_000);
    let reps = env_or("SCALE_REPS", 11).max(1);
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("jobs.yaml");
    let text = scale_jobs::realistic(jobs);
    std::fs::write(&path, &text).expect("write the jobs file");
    if let Some(keep) = std::env::var_os("SCALE_JOBS_OUT") {
        // For profiling: `valgrind --tool=callgrind leasecron validate $SCALE_JOBS_OUT`.
        std::fs::write(&keep, &text).expect("write SCALE_JOBS_OUT");
    }
    let small = dir.path().join("small.yaml");
    std::fs::write(&small, scale_jobs::realistic(10)).expect("write the small file");
    println!(
        "validate: {jobs} generated jobs, {:.2} MiB, {} lines; {reps} repetitions each; ms",
        text.len() as f64 / (1024.0 * 1024.0),
        text.lines().count()
    );
    println!("{:<44} {:>9} {:>9} {:>9}", "", "min", "median", "max");

    let ours = Path::new(env!("CARGO_BIN_EXE_leasecron"));
    let other = std::env::var_os("SCALE_LEASECRON").map(PathBuf::from);
    let mut process = None;
    // Interleaved, so that a busy spell of the machine falls on both builds alike.
    let (mut wall, mut cpu, mut other_wall, mut other_cpu) = (vec![], vec![], vec![], vec![]);
    for _ in 0..reps {
        let (w, c) = validate_process(ours, &path);
        wall.push(w);
        cpu.push(c);
        if let Some(other) = &other {
            let (w, c) = validate_process(other, &path);
            other_wall.push(w);
            other_cpu.push(c);
        }
    }
    let wall = Summary::of(wall);
    wall.print(&format!("leasecron validate, {jobs} jobs (process)"));
    Summary::of(cpu).print("  its CPU time (user + sys)");
    if let Some(other) = &other {
        Summary::of(other_wall).print(&format!("{} (process)", other.display()));
        Summary::of(other_cpu).print("  its CPU time (user + sys)");
    }
    process.get_or_insert(wall);
    let floor = Summary::of(
        (0..reps)
            .map(|_| validate_process(ours, &small).0)
            .collect(),
    );
    floor.print("leasecron validate, 10 jobs (process)");
    let process = process.expect("measured");

    let opts = LoadOptions::default();
    let load = Summary::of(
        (0..reps)
            .map(|_| {
                timed(|| {
                    let source = config::load_source(&path, DEFAULT_CONFIG_MAP_KEY, &opts);
                    assert!(matches!(source, Ok(Source::JobsFile(_))), "valid");
                })
            })
            .collect(),
    );
    load.print("  in process: load_source (validate's path)");
    let parse = Summary::of(
        (0..reps)
            .map(|_| {
                timed(|| {
                    config::parse_str(&text, "jobs.yaml", &opts).expect("valid");
                })
            })
            .collect(),
    );
    parse.print("  in process: parse_str (run, reload)");

    let set = config::parse_str(&text, "jobs.yaml", &opts).expect("valid");
    assert_eq!(set.jobs.len(), jobs);
    let now = Utc::now();
    let schedule = Summary::of(
        (0..reps)
            .map(|_| {
                timed(|| {
                    for job in &set.jobs {
                        assert!(job.schedule.next_after(now).is_some());
                    }
                })
            })
            .collect(),
    );
    schedule.print(&format!("  schedule: next fire of {jobs} jobs"));
    println!(
        "  per job: parse+validate {:.1} µs, next fire {:.2} µs",
        parse.median * 1e3 / jobs as f64,
        schedule.median * 1e3 / jobs as f64
    );
    let verdict = if process.median <= GOAL.as_secs_f64() * 1e3 {
        "met"
    } else {
        "MISSED"
    };
    println!(
        "goal: `leasecron validate` of {jobs} jobs ≤ {} ms (median, process): {:.1} ms — {verdict}",
        GOAL.as_millis(),
        process.median
    );
    write_report(
        jobs,
        reps,
        &text,
        &[
            ("validate_process", &process),
            ("validate_process_10_jobs", &floor),
            ("load_source", &load),
            ("parse_str", &parse),
            ("schedule_next_fire", &schedule),
        ],
    );
}

/// Wall time and CPU time of one `BINARY validate FILE`, which must succeed, in ms.
fn validate_process(binary: &Path, path: &Path) -> (f64, f64) {
    let cpu_before = children_cpu_ms();
    let started = Instant::now();
    let status = Command::new(binary)
        .arg("validate")
        // 10 000 jobs are about 2 MiB: over the 1 MiB a ConfigMap holds, the default bound.
        .args(["--max-file-size", "16MiB"])
        .arg(path)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .status()
        .expect("run leasecron validate");
    let elapsed = started.elapsed();
    assert!(status.success(), "leasecron validate failed: {status}");
    (elapsed.as_secs_f64() * 1e3, children_cpu_ms() - cpu_before)
}

/// CPU time (user + sys) of this process's waited-for children so far, in ms: `cutime` + `cstime` of
/// `/proc/self/stat`, in ticks of 10 ms (USER_HZ is 100 on Linux).
fn children_cpu_ms() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    // Fields after the command name (which may hold spaces) start at field 3, `state`.
    let after_name = &stat[stat.rfind(')').expect("a command name") + 2..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks = |field: usize| fields[field - 3].parse::<f64>().expect("a tick count");
    (ticks(16) + ticks(17)) * 10.0
}

fn timed(f: impl FnOnce()) -> f64 {
    let started = Instant::now();
    f();
    started.elapsed().as_secs_f64() * 1e3
}

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Summary {
    min: f64,
    median: f64,
    max: f64,
}

impl Summary {
    fn of(mut ms: Vec<f64>) -> Self {
        ms.sort_by(f64::total_cmp);
        Summary {
            min: ms[0],
            median: ms[ms.len() / 2],
            max: ms[ms.len() - 1],
        }
    }

    fn print(&self, name: &str) {
        println!(
            "{name:<44} {:>7.1}ms {:>7.1}ms {:>7.1}ms",
            self.min, self.median, self.max
        );
    }
}

/// The machine-readable results (benches/support/report.rs), for `scripts/bench-report`.
fn write_report(jobs: usize, reps: usize, text: &str, figures: &[(&str, &Summary)]) {
    let mut report = report::Report::new("validate_scale");
    report
        .param("jobs", jobs)
        .param("reps", reps)
        .param("file_bytes", text.len())
        .param("goal_ms", GOAL.as_millis() as u64);
    for (name, summary) in figures {
        report.raw(
            name,
            serde_json::json!({"unit": "ms", "n": reps, "min": summary.min, "median": summary.median, "max": summary.max}),
        );
    }
    report.write();
}
