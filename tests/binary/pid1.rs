//! leasecron as PID 1 (as in a container): orphaned grandchildren of jobs are reparented to it, and it
//! must reap them. The test runs the real binary as the init of a new PID namespace (`unshare`, needs
//! root, as CI has) with a job that leaves a daemonised grandchild behind every second.

use crate::support::replica;

use std::fs;
use std::process::{Command, Stdio};
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use replica::{every_second_job, wait_for, FAST_TIMINGS};

/// `(pid, state, ppid)` of every process, from /proc.
fn processes() -> Vec<(i32, char, i32)> {
    let mut out = Vec::new();
    for entry in fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let mut fields = rest.split_whitespace();
        let state = fields.next().and_then(|s| s.chars().next()).unwrap_or('?');
        let ppid = fields.next().and_then(|p| p.parse().ok()).unwrap_or(0);
        out.push((pid, state, ppid));
    }
    out
}

fn zombies_of(parent: i32) -> usize {
    processes()
        .iter()
        .filter(|(_, state, ppid)| *state == 'Z' && *ppid == parent)
        .count()
}

#[test]
fn as_pid_1_orphaned_grandchildren_are_reaped() {
    let namespaces = Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc", "true"])
        .status();
    if !namespaces.is_ok_and(|s| s.success()) {
        eprintln!("skipped: cannot create a PID namespace here (unshare --pid needs root)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let runs = dir.path().join("runs");
    // The grandchild leaves the job's process group (setsid), so the group kill after the job exits does
    // not touch it; it is orphaned, reparented to PID 1, and exits 200 ms later: a zombie for PID 1.
    let script = format!("setsid sleep 0.2 & echo run >> {}", runs.display());
    let jobs = every_second_job(dir.path(), "orphan-maker", "500ms", &script);
    let lease = dir.path().join("lease.json");
    let log = fs::File::create(dir.path().join("log")).unwrap();
    let mut unshare = Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc", "--kill-child"])
        .arg(env!("CARGO_BIN_EXE_leasecron"))
        .args(["run", "--jobs"])
        .arg(&jobs)
        .arg("--lease-file")
        .arg(&lease)
        .args(["--identity", "init", "--http-addr", "127.0.0.1:0"])
        .args(FAST_TIMINGS)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("spawn unshare");
    let unshare_pid = unshare.id() as i32;
    let init = wait_for(Duration::from_secs(10), || {
        processes()
            .iter()
            .find(|(_, _, ppid)| *ppid == unshare_pid)
            .map(|(pid, _, _)| *pid)
    })
    .expect("leasecron started inside the namespace");

    wait_for(Duration::from_secs(30), || {
        let count = fs::read_to_string(&runs)
            .unwrap_or_default()
            .lines()
            .count();
        (count >= 4).then_some(())
    })
    .expect("the job ran at least four times");
    std::thread::sleep(Duration::from_millis(500));

    // Zombies exist for a moment between an orphan's exit and the reap; they must not pile up.
    let samples: Vec<usize> = (0..10)
        .map(|_| {
            std::thread::sleep(Duration::from_millis(100));
            zombies_of(init)
        })
        .collect();
    let log_text = fs::read_to_string(dir.path().join("log")).unwrap_or_default();
    assert!(
        samples.contains(&0),
        "orphans are reaped, zombies sampled: {samples:?}\n{log_text}"
    );
    assert!(
        samples.iter().all(|&n| n <= 1),
        "zombies do not accumulate: {samples:?}\n{log_text}"
    );

    kill(Pid::from_raw(init), Signal::SIGTERM).expect("signal leasecron");
    let status = unshare.wait().expect("unshare exits");
    assert!(
        status.success(),
        "clean shutdown as PID 1: {status}\n{log_text}"
    );
}
