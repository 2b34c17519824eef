//! The open file limit: `run` raises its soft `RLIMIT_NOFILE` to the hard limit, so runs in flight are not
//! capped at a third of the usual soft limit, while the runs' processes keep the limit leasecron was given;
//! and a spawn refused for lack of descriptors fails its run with a message that says so.
//!
//! The limits are set by the shell that execs leasecron (`ulimit`), as a container runtime would.

use crate::support::replica;

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use replica::{wait_for, write_jobs_file, Replica};

/// How long the runs may take to get going on a loaded machine.
const PATIENCE: Duration = Duration::from_secs(90);

/// Starts `leasecron run` on a lease file through `sh -c 'ulimit ARGS; exec leasecron ...'`.
fn start_with_ulimit(dir: &Path, ulimit: &str, jobs: &Path) -> Replica {
    let log = dir.join("r.log");
    let file = fs::File::create(&log).expect("create log");
    let child = Command::new("sh")
        .arg("-c")
        .arg(format!("ulimit {ulimit} && exec \"$0\" \"$@\""))
        .arg(env!("CARGO_BIN_EXE_leasecron"))
        .args(["run", "--jobs"])
        .arg(jobs)
        .arg("--lease-file")
        .arg(dir.join("lease.json"))
        .args(["--identity", "r", "--http-addr", "127.0.0.1:0"])
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(file.try_clone().expect("dup log"))
        .stderr(file)
        .spawn()
        .expect("spawn sh");
    Replica {
        identity: "r".to_owned(),
        child,
        log,
    }
}

/// `count` jobs firing together every 2 seconds, each running `script` (`$DIR` is `dir`).
fn jobs_file(dir: &Path, count: usize, script: &str) -> std::path::PathBuf {
    let mut text = format!(
        "defaults:\n  timeout: 60s\n  env:\n    DIR: {}\njobs:\n",
        dir.display()
    );
    for i in 0..count {
        text.push_str(&format!(
            "  - name: j{i:03}\n    schedule: \"*/2 * * * * *\"\n    shell: '{script}'\n"
        ));
    }
    write_jobs_file(dir, &text)
}

/// The sum of `leasecron_job_runs_total` samples with `outcome`.
fn runs(replica: &Replica, outcome: &str) -> Option<f64> {
    let body = replica.http_get("/metrics")?.body;
    let label = format!("outcome=\"{outcome}\"");
    Some(
        body.lines()
            .filter(|line| line.starts_with("leasecron_job_runs_total{") && line.contains(&label))
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum(),
    )
}

#[test]
fn a_hundred_runs_in_flight_at_once_succeed_with_a_soft_limit_of_64() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Each run marks itself in flight, then waits until all 100 are: none ends before all have started.
    let script = "touch \"$DIR/in-$LEASECRON_JOB\"; ulimit -Sn > \"$DIR/limit-$LEASECRON_JOB\"; \
                  while set -- \"$DIR\"/in-*; [ $# -lt 100 ]; do sleep 0.5; done";
    let jobs = jobs_file(dir.path(), 100, script);
    let mut replica = start_with_ulimit(dir.path(), "-Sn 64", &jobs);

    let succeeded = wait_for(PATIENCE, || {
        runs(&replica, "succeeded").filter(|n| *n >= 100.0)
    });
    let log = replica.log_text();
    assert!(succeeded.is_some(), "100 runs at once: {log}");
    assert_eq!(runs(&replica, "failed"), Some(0.0), "{log}");
    assert_eq!(runs(&replica, "timed_out"), Some(0.0), "{log}");
    assert!(
        log.contains("raised the open file limit (soft RLIMIT_NOFILE) to the hard limit")
            && log.contains("before=64"),
        "{log}"
    );
    // The runs' processes got the limit leasecron was started with, not the raised one.
    let limit = fs::read_to_string(dir.path().join("limit-j000")).expect("the run wrote its limit");
    assert_eq!(limit.trim(), "64");
    replica.stop_cleanly();
}

#[test]
fn a_run_refused_for_lack_of_descriptors_fails_saying_so() {
    let dir = tempfile::tempdir().expect("tempdir");
    // 60 runs of ~3 descriptors each cannot all be in flight under a hard limit of 64.
    let jobs = jobs_file(dir.path(), 60, "sleep 3");
    let mut replica = start_with_ulimit(dir.path(), "-n 64", &jobs);
    let failed = wait_for(PATIENCE, || runs(&replica, "failed").filter(|n| *n >= 1.0));
    let log = replica.log_text();
    assert!(failed.is_some(), "some runs fail: {log}");
    assert!(
        log.contains("leasecron has no file descriptor left (its open file limit, RLIMIT_NOFILE, is 64; each run in flight holds about 3)"),
        "{log}"
    );
    replica.signal(nix::sys::signal::Signal::SIGTERM);
    replica.wait_exit(replica::EXIT_LIMIT).expect("exits");
}
