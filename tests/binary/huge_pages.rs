//! Transparent huge pages: `run` and its run supervisor turn them off for themselves (each idle 2 MiB
//! region of mimalloc's arena would otherwise be resident in full), and the jobs' processes get back the
//! setting leasecron was started with: a job's program may want huge pages.

use crate::support::replica;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use replica::{every_second_job, wait_for, Replica};

const PATIENCE: Duration = Duration::from_secs(60);

/// `THP_enabled` of `/proc/PID/status` (Linux 5.0 and later): `Some(true)` unless the process has
/// `PR_SET_THP_DISABLE`.
fn thp_enabled(pid: &str) -> Option<bool> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("THP_enabled:"))
        .map(|value| value.trim() == "1")
}

/// The first child of `pid` (`/proc/PID/task/PID/children`).
fn first_child(pid: u32) -> Option<String> {
    let children = fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).ok()?;
    children.split_whitespace().next().map(str::to_owned)
}

/// A job, every second, that writes its own `THP_enabled` line to `dir/seen` (the grep is the job's
/// process, as its program would be).
fn reporting_job(dir: &Path) -> PathBuf {
    let seen = dir.join("seen");
    every_second_job(
        dir,
        "thp",
        "1s",
        &format!("grep THP_enabled /proc/self/status > {}", seen.display()),
    )
}

/// The line the job of [`reporting_job`] wrote, once it ran.
fn reported(replica: &Replica, dir: &Path) -> String {
    wait_for(PATIENCE, || {
        fs::read_to_string(dir.join("seen"))
            .ok()
            .filter(|text| text.contains("THP_enabled"))
    })
    .unwrap_or_else(|| panic!("the job ran: {}", replica.log_text()))
}

#[test]
fn leasecron_turns_huge_pages_off_for_itself_and_gives_its_jobs_the_setting_it_found() {
    let Some(inherited) = thp_enabled("self") else {
        eprintln!("skipped: this kernel has no THP_enabled in /proc/PID/status (Linux < 5.0)");
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let jobs = reporting_job(dir.path());
    let mut replica = Replica::start(dir.path(), "a", &jobs, &dir.path().join("lease"), &[]);
    let line = reported(&replica, dir.path());
    let job_enabled = line.split_whitespace().nth(1) == Some("1");
    assert_eq!(
        job_enabled, inherited,
        "the job has the setting leasecron found: {line}"
    );

    let pid = replica.child.id();
    assert_eq!(
        thp_enabled(&pid.to_string()),
        Some(false),
        "leasecron run: off"
    );
    let supervisor = first_child(pid).expect("the run supervisor");
    assert_eq!(
        thp_enabled(&supervisor),
        Some(false),
        "the run supervisor: off"
    );
    replica.stop_cleanly();
}

#[test]
fn a_process_started_with_huge_pages_off_gives_its_jobs_them_off() {
    // leasecron started with huge pages already off (its parent set PR_SET_THP_DISABLE, which survives
    // exec): its jobs keep them off, rather than getting them turned on.
    let Some(_) = thp_enabled("self") else {
        eprintln!("skipped: this kernel has no THP_enabled in /proc/PID/status (Linux < 5.0)");
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let jobs = reporting_job(dir.path());
    let mut command = replica::leasecron();
    command
        .args(["run", "--jobs"])
        .arg(&jobs)
        .arg("--lease-file")
        .arg(dir.path().join("lease"))
        .args(["--identity", "a", "--http-addr", "127.0.0.1:0"]);
    // SAFETY: the closure runs in the forked child before exec and makes one prctl(2) call, which is
    // async-signal-safe; it allocates nothing and takes no lock.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut command, || {
            nix::sys::prctl::set_thp_disable(true).map_err(std::io::Error::from)
        });
    }
    let mut replica = Replica::spawn(dir.path(), "a", command);
    let line = reported(&replica, dir.path());
    assert!(line.contains("THP_enabled:\t0"), "still off: {line}");
    replica.stop_cleanly();
}
