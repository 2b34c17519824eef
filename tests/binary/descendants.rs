//! No process started for a run outlives it, nor its replica, whatever the replica dies of.
//!
//! Every run holds a kernel `flock` on one file, inherited by every process it starts (a shell's child, a
//! `setsid` one, a `nohup … &` one). A run that finds the lock taken records an overlap: two runs at once,
//! decided by the kernel, not by clocks. Each of those processes also records its pid, so the tests can
//! tell that none is left.

use crate::support::{logfmt, replica};

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::Signal;
use replica::{alive, lease_holder, wait_for, write_jobs_file, Replica, FAST_TIMINGS};

const WAIT: Duration = Duration::from_secs(30);

/// A job, every second, whose run takes the lock `dir/lock` (or records an overlap in `dir/overlaps`),
/// then starts three descendants that each sleep 30 s holding it: one under a nested shell, one in a
/// session of its own (`setsid`), one detached (`nohup … &` in a subshell, so its parent exits at once).
/// Each writes its pid into `dir/pids`, and the run records `start TOKEN` in `dir/runs`.
fn job_with_descendants(dir: &Path) -> PathBuf {
    let d = dir.display();
    let script = format!(
        r#"flock -n -E 99 {d}/lock sh -c '
  echo "start $LEASECRON_FENCING_TOKEN $$" >> {d}/runs
  sh -c "echo \$\$ >> {d}/pids; exec sleep 30" &
  setsid sh -c "echo \$\$ >> {d}/pids; exec sleep 30" &
  (nohup sh -c "echo \$\$ >> {d}/pids; exec sleep 30" >/dev/null 2>&1 &)
  wait'
[ $? -eq 99 ] && echo "overlap $LEASECRON_IDENTITY $LEASECRON_FENCING_TOKEN" >> {d}/overlaps
exit 0
"#
    );
    let lines: Vec<String> = script.lines().map(str::to_owned).collect();
    write_job(dir, "holder", "* * * * * *", "500ms", &lines)
}

/// Writes `dir/jobs.yaml` with one `Forbid` job, `name`, on `schedule` with `grace`, running the shell
/// `lines`; returns its path.
fn write_job(dir: &Path, name: &str, schedule: &str, grace: &str, lines: &[String]) -> PathBuf {
    let script: String = lines.iter().map(|line| format!("      {line}\n")).collect();
    write_jobs_file(
        dir,
        &format!(
            "jobs:\n  - name: {name}\n    schedule: \"{schedule}\"\n    terminationGrace: {grace}\n    \
             concurrencyPolicy: Forbid\n    shell: |\n{script}"
        ),
    )
}

fn pids(dir: &Path) -> Vec<i32> {
    fs::read_to_string(dir.join("pids"))
        .unwrap_or_default()
        .lines()
        .filter_map(|line| line.trim().parse().ok())
        .collect()
}

fn overlaps(dir: &Path) -> String {
    fs::read_to_string(dir.join("overlaps")).unwrap_or_default()
}

fn run_count(dir: &Path) -> usize {
    fs::read_to_string(dir.join("runs"))
        .unwrap_or_default()
        .lines()
        .count()
}

/// Waits until the first run's three descendants have recorded their pid, and returns them.
fn descendants_started(dir: &Path, replica: &Replica) -> Vec<i32> {
    descendants_started_n(dir, replica, 3)
}

fn assert_all_gone(pids: &[i32], what: &str) {
    let left = wait_for(WAIT, || {
        let left: Vec<i32> = pids.iter().copied().filter(|&pid| alive(pid)).collect();
        left.is_empty().then_some(())
    });
    let still: Vec<i32> = pids.iter().copied().filter(|&pid| alive(pid)).collect();
    assert!(left.is_some(), "{what}: processes still alive: {still:?}");
}

#[test]
fn a_sigkilled_leader_leaves_no_descendant_and_the_next_leader_never_overlaps() {
    let dir = tempfile::tempdir().expect("tempdir");
    let jobs = job_with_descendants(dir.path());
    let lease = dir.path().join("lease.json");
    let mut first = Replica::start(dir.path(), "r0", &jobs, &lease, &FAST_TIMINGS);
    let started = descendants_started(dir.path(), &first);

    let mut second = Replica::start(dir.path(), "r1", &jobs, &lease, &FAST_TIMINGS);
    first.signal(Signal::SIGKILL);
    first.wait_exit(WAIT).expect("SIGKILL ends it");
    assert_all_gone(&started, "after the leader's SIGKILL");

    // The follower takes over once the lease expires, and its runs find the lock free.
    wait_for(WAIT, || {
        (lease_holder(&lease).as_deref() == Some("r1")).then_some(())
    })
    .expect("the follower takes over");
    let before = run_count(dir.path());
    wait_for(WAIT, || (run_count(dir.path()) > before).then_some(()))
        .unwrap_or_else(|| panic!("the new leader runs the job: {}", second.log_text()));
    assert_eq!(overlaps(dir.path()), "", "two runs held the lock at once");
    let all = pids(dir.path());
    second.stop_cleanly();
    assert_all_gone(&all, "after the new leader's clean shutdown");
    assert_eq!(overlaps(dir.path()), "");
}

#[test]
fn every_ending_signal_ends_the_descendants_too() {
    for signal in [Signal::SIGTERM, Signal::SIGINT] {
        let dir = tempfile::tempdir().expect("tempdir");
        let jobs = job_with_descendants(dir.path());
        let lease = dir.path().join("lease.json");
        let mut replica = Replica::start(dir.path(), "r0", &jobs, &lease, &FAST_TIMINGS);
        let started = descendants_started(dir.path(), &replica);
        replica.signal(signal);
        let status = replica.wait_exit(WAIT).expect("exits");
        assert!(
            status.success(),
            "{signal}: {status}: {}",
            replica.log_text()
        );
        // A clean shutdown ends the runs before it returns, and only then releases the lease.
        let left: Vec<i32> = pids(dir.path())
            .into_iter()
            .filter(|&pid| alive(pid))
            .collect();
        assert!(left.is_empty(), "{signal}: alive after exit: {left:?}");
        assert!(started.iter().all(|&pid| !alive(pid)));
        assert_eq!(
            lease_holder(&lease),
            None,
            "{signal}: the lease is released"
        );
    }
}

#[test]
fn a_killed_supervisor_ends_the_term_releases_the_lease_and_exits_1() {
    let dir = tempfile::tempdir().expect("tempdir");
    let jobs = job_with_descendants(dir.path());
    let lease = dir.path().join("lease.json");
    let mut replica = Replica::start(dir.path(), "r0", &jobs, &lease, &FAST_TIMINGS);
    let started = descendants_started(dir.path(), &replica);
    let supervisor = supervisor_of(replica.pid().as_raw()).expect("leasecron runs a supervisor");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(supervisor), Signal::SIGKILL)
        .expect("kill the supervisor");
    let status = replica.wait_exit(WAIT).expect("leasecron exits");
    let log = replica.log_text();
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(log.contains("the run supervisor is gone"), "{log}");
    assert!(
        log.contains(&format!("the run supervisor (pid {supervisor}) died")),
        "{log}"
    );
    // The log's last line says how it ended; then the error, on its own, for a terminal.
    let exit = log
        .lines()
        .rev()
        .find(|l| l.starts_with("ts="))
        .map(|l| logfmt::parse(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .expect("a log line");
    assert_eq!(exit.msg(), "leasecron exiting", "{log}");
    assert_eq!(
        (exit.get("level"), exit.get("exit_code")),
        (Some("error"), Some("1"))
    );
    assert!(
        exit.get("error")
            .is_some_and(|e| e.starts_with(&format!("the run supervisor (pid {supervisor}) died"))),
        "{exit:?}"
    );
    let last = log.trim_end().lines().last().unwrap_or_default();
    assert!(last.starts_with("leasecron: the run supervisor"), "{last}");
    assert_eq!(lease_holder(&lease), None, "the lease is released: {log}");
    assert_all_gone(&started, "after the supervisor's SIGKILL");
}

/// The pid of `parent`'s child that runs `leasecron supervise`.
fn supervisor_of(parent: i32) -> Option<i32> {
    wait_for(WAIT, || {
        fs::read_dir("/proc").ok()?.flatten().find_map(|entry| {
            let pid: i32 = entry.file_name().to_str()?.parse().ok()?;
            let stat = fs::read_to_string(entry.path().join("stat")).ok()?;
            let ppid: i32 = stat
                .rsplit_once(')')?
                .1
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()?;
            let cmdline = fs::read_to_string(entry.path().join("cmdline")).ok()?;
            (ppid == parent && cmdline.split('\0').any(|arg| arg == "supervise")).then_some(pid)
        })
    })
}

#[test]
fn what_a_run_leaves_outside_its_group_dies_with_the_run() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path().display();
    let jobs = write_job(
        dir.path(),
        "detacher",
        "*/2 * * * * *",
        "500ms",
        &[
            format!("setsid sh -c \"echo \\$\\$ >> {d}/pids; exec sleep 30\" &"),
            format!("(nohup sh -c \"echo \\$\\$ >> {d}/pids; exec sleep 30\" >/dev/null 2>&1 &)"),
            "sleep 0.3".to_owned(),
        ],
    );
    let lease = dir.path().join("lease.json");
    let mut replica = Replica::start(dir.path(), "r0", &jobs, &lease, &FAST_TIMINGS);
    let started = descendants_started_n(dir.path(), &replica, 2);
    assert_all_gone(&started, "after their run ended");
    assert!(
        nix::sys::signal::kill(replica.pid(), None).is_ok(),
        "the replica still runs"
    );
    assert_eq!(
        lease_holder(&lease).as_deref(),
        Some("r0"),
        "the term goes on"
    );
    let log = replica.log_text();
    assert!(
        log.contains("the run left processes behind outside its process group"),
        "{log}"
    );
    replica.stop_cleanly();
}

/// Waits until at least `n` descendants have recorded their pid, and returns them.
fn descendants_started_n(dir: &Path, replica: &Replica, n: usize) -> Vec<i32> {
    wait_for(WAIT, || {
        let pids = pids(dir);
        (pids.len() >= n).then_some(pids)
    })
    .unwrap_or_else(|| panic!("the run started no descendants: {}", replica.log_text()))
}

#[test]
fn a_leader_killed_during_a_runs_grace_does_not_give_the_run_a_new_grace() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path().display();
    // Ignores SIGTERM, so only the SIGKILL at the end of its 12 s grace ends it.
    let jobs = write_job(
        dir.path(),
        "stubborn",
        "* * * * * *",
        "12s",
        &[
            "trap '' TERM".to_owned(),
            format!("echo $$ >> {d}/pids"),
            "sleep 60".to_owned(),
        ],
    );
    let lease = dir.path().join("lease.json");
    let timings = [
        "--lease-duration",
        "60s",
        "--renew-deadline",
        "10s",
        "--retry-period",
        "2s",
    ];
    let mut replica = Replica::start(dir.path(), "r0", &jobs, &lease, &timings);
    let run = descendants_started_n(dir.path(), &replica, 1)[0];
    replica.signal(Signal::SIGTERM);
    wait_for(WAIT, || {
        replica
            .log_text()
            .contains("sending SIGTERM to the process group")
            .then_some(())
    })
    .expect("the shutdown escalates");
    // 8 s into its 12 s grace, the leader dies: 4 s of grace are left, not 12.
    std::thread::sleep(Duration::from_secs(8));
    assert!(alive(run), "the run still has its grace");
    replica.signal(Signal::SIGKILL);
    replica.wait_exit(WAIT).expect("SIGKILL ends it");
    let gone = wait_for(Duration::from_secs(8), || (!alive(run)).then_some(()));
    assert!(
        gone.is_some(),
        "the run outlived the end of the grace leasecron had given it"
    );
}
