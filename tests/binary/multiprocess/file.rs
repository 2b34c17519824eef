//! Several real `leasecron run` processes sharing one lease file.
//!
//! The job appends `start`/`end` lines with its identity, fencing token, slot and the child's own clock to a
//! shared file, so the tests can check who ran, under which term, and that no two runs overlapped.

use crate::support::{exposition, replica};

use std::fs;
use std::path::Path;
use std::time::Duration;

use exposition::metric;
use nix::sys::signal::Signal;
use replica::{
    alive, assert_no_overlap, every_second_job, lease_holder, now_ns, read_recorded_runs,
    recording_job, wait_for, Replica, FAST_TIMINGS,
};

const WAIT: Duration = Duration::from_secs(30);

#[test]
fn three_replicas_elect_one_leader_whose_runs_carry_identity_and_token() {
    let dir = tempfile::tempdir().unwrap();
    let runs = dir.path().join("runs");
    let jobs = recording_job(dir.path(), &runs);
    let lease = dir.path().join("lease.json");
    let mut replicas: Vec<Replica> = ["r0", "r1", "r2"]
        .iter()
        .map(|id| Replica::start(dir.path(), id, &jobs, &lease, &FAST_TIMINGS))
        .collect();

    let seen = wait_for(WAIT, || {
        let r = read_recorded_runs(&runs);
        (r.iter().filter(|r| r.end_ns.is_some()).count() >= 4).then_some(r)
    })
    .expect("the leader ran the job at least four times");

    let leader = &seen[0].identity;
    assert!(
        seen.iter()
            .all(|r| &r.identity == leader && r.token == seen[0].token),
        "one leader, one term: {seen:?}"
    );
    assert!(seen[0].token >= 1, "fencing tokens start at 1");
    assert_eq!(lease_holder(&lease).as_deref(), Some(leader.as_str()));
    for pair in seen.windows(2) {
        if let Some(end) = pair[0].end_ns {
            assert!(
                end <= pair[1].start_ns,
                "runs of a Forbid job never overlap: {pair:?}"
            );
        }
    }
    for replica in &replicas {
        assert_eq!(
            replica.http_get("/healthz").map(|r| r.status),
            Some(200),
            "{}",
            replica.identity
        );
        assert_eq!(
            replica.http_get("/readyz").map(|r| r.status),
            Some(200),
            "{}",
            replica.identity
        );
        assert_eq!(replica.http_get("/nope").map(|r| r.status), Some(404));
    }
    for replica in &mut replicas {
        replica.stop_cleanly();
    }
}

#[test]
fn killing_the_leader_hands_over_without_overlapping_runs() {
    let dir = tempfile::tempdir().unwrap();
    let runs = dir.path().join("runs");
    let jobs = recording_job(dir.path(), &runs);
    let lease = dir.path().join("lease.json");
    let mut replicas: Vec<Replica> = ["k0", "k1", "k2"]
        .iter()
        .map(|id| Replica::start(dir.path(), id, &jobs, &lease, &FAST_TIMINGS))
        .collect();

    let first = wait_for(WAIT, || read_recorded_runs(&runs).first().cloned()).expect("a first run");
    let old = replicas
        .iter()
        .position(|r| r.identity == first.identity)
        .expect("the leader is one of ours");
    replicas[old].signal(Signal::SIGKILL);
    let killed_at = now_ns();
    replicas[old].wait_exit(WAIT).expect("SIGKILL ends it");

    let successor = wait_for(WAIT, || {
        read_recorded_runs(&runs)
            .into_iter()
            .find(|r| r.identity != first.identity)
    })
    .expect("another replica takes over");
    assert!(
        successor.token > first.token,
        "the new term has a larger fencing token: {successor:?} after {first:?}"
    );
    assert!(
        successor.start_ns > killed_at,
        "no take-over before the kill"
    );

    // Let the new leader run a few times, then check every pair of runs for overlap. A run of the killed
    // leader has no end record: its process died with it (PR_SET_PDEATHSIG), at the kill at the latest.
    std::thread::sleep(Duration::from_secs(3));
    assert_no_overlap(&read_recorded_runs(&runs), |_| killed_at);
    for (i, replica) in replicas.iter_mut().enumerate() {
        if i != old {
            replica.stop_cleanly();
        }
    }
}

#[test]
fn sigterm_ends_the_runs_then_releases_the_lease() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("job.pid");
    let script = format!("echo $$ > {}; exec sleep 60", pidfile.display());
    let jobs = every_second_job(dir.path(), "long", "500ms", &script);
    let lease = dir.path().join("lease.json");
    let mut leader = Replica::start(dir.path(), "first", &jobs, &lease, &FAST_TIMINGS);
    let job_pid: i32 = wait_for(WAIT, || {
        fs::read_to_string(&pidfile).ok()?.trim().parse().ok()
    })
    .expect("the job started");
    assert!(alive(job_pid));
    assert_eq!(lease_holder(&lease).as_deref(), Some("first"));

    leader.stop_cleanly();
    assert!(!alive(job_pid), "the run was terminated before exit");
    assert_eq!(lease_holder(&lease), None, "the lease was released");
    assert!(
        leader.log_text().contains("cancelled"),
        "the run is reported as cancelled: {}",
        leader.log_text()
    );
}

#[test]
fn a_released_lease_is_taken_at_once_not_after_the_lease_duration() {
    let dir = tempfile::tempdir().unwrap();
    let runs = dir.path().join("runs");
    let jobs = recording_job(dir.path(), &runs);
    let lease = dir.path().join("lease.json");
    // A long lease: a follower that waited for expiry would need 60 s.
    let slow = [
        "--lease-duration",
        "60s",
        "--renew-deadline",
        "10s",
        "--retry-period",
        "500ms",
    ];
    let mut first = Replica::start(dir.path(), "a", &jobs, &lease, &slow);
    wait_for(WAIT, || read_recorded_runs(&runs).first().cloned()).expect("a leads and runs");
    let mut second = Replica::start(dir.path(), "b", &jobs, &lease, &slow);
    std::thread::sleep(Duration::from_secs(1));
    first.stop_cleanly();

    let taken = wait_for(WAIT, || {
        (lease_holder(&lease).as_deref() == Some("b")).then_some(())
    });
    assert!(
        taken.is_some(),
        "b acquired the released lease well within LD"
    );
    second.stop_cleanly();
}

#[test]
fn a_follower_on_a_lease_file_wakes_on_the_release_not_on_its_poll() {
    let dir = tempfile::tempdir().unwrap();
    let runs = dir.path().join("runs");
    let jobs = recording_job(dir.path(), &runs);
    let lease = dir.path().join("lease.json");
    // The follower polls every RP = 60 s and would wait LD = 200 s for an expiry: only the watch of the
    // lease file's directory can wake it within the test's wait.
    let slow = [
        "--lease-duration",
        "200s",
        "--renew-deadline",
        "100s",
        "--retry-period",
        "60s",
    ];
    let mut first = Replica::start(dir.path(), "a", &jobs, &lease, &slow);
    wait_for(WAIT, || read_recorded_runs(&runs).first().cloned()).expect("a leads and runs");
    let mut second = Replica::start(dir.path(), "b", &jobs, &lease, &slow);
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(lease_holder(&lease).as_deref(), Some("a"));
    first.stop_cleanly();

    let taken = wait_for(WAIT, || {
        (lease_holder(&lease).as_deref() == Some("b")).then_some(())
    });
    assert!(
        taken.is_some(),
        "b took the released lease long before its 60 s poll: {}",
        second.log_text()
    );
    second.stop_cleanly();
}

#[test]
fn a_second_signal_kills_the_runs_and_exits_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("job.pid");
    // The job ignores SIGTERM, so a clean shutdown would wait out its 3 s grace.
    let script = format!(
        "trap \"\" TERM; echo $$ > {}; while :; do sleep 0.1; done",
        pidfile.display()
    );
    let jobs = every_second_job(dir.path(), "stubborn", "3s", &script);
    let lease = dir.path().join("lease.json");
    let mut leader = Replica::start(dir.path(), "forced", &jobs, &lease, &[]);
    let job_pid: i32 = wait_for(WAIT, || {
        fs::read_to_string(&pidfile).ok()?.trim().parse().ok()
    })
    .expect("the job started");

    leader.signal(Signal::SIGTERM);
    // Once the clean shutdown has begun (the job got its SIGTERM and ignores it), force it.
    wait_for(WAIT, || {
        leader.log_text().contains("sending SIGTERM").then_some(())
    })
    .expect("the clean shutdown started");
    leader.signal(Signal::SIGTERM);
    let status = leader
        .wait_exit(WAIT)
        .expect("exits after the second signal");
    assert_eq!(
        status.code(),
        Some(1),
        "a forced shutdown exits 1: {}",
        leader.log_text()
    );
    assert!(
        wait_for(Duration::from_secs(5), || (!alive(job_pid)).then_some(())).is_some(),
        "the run was killed"
    );
    assert!(
        !leader.log_text().contains("still running after the grace"),
        "it did not wait for the grace: {}",
        leader.log_text()
    );
    assert_eq!(
        lease_holder(&lease).as_deref(),
        Some("forced"),
        "a forced exit does not release: the lease expires"
    );
}

#[test]
fn processes_that_leave_their_group_die_with_the_term_before_the_release() {
    let dir = tempfile::tempdir().unwrap();
    let strays = dir.path().join("strays");
    // Each run starts a process in a session of its own (outside the run's process group, which the
    // escalation signals), then ends at once: the stray is reparented to leasecron, its subreaper.
    let script = format!(
        "setsid sh -c \"echo \\$\\$ >> {}; exec sleep 60\" >/dev/null 2>&1 & sleep 0.1",
        strays.display()
    );
    let jobs = every_second_job(dir.path(), "daemonises", "500ms", &script);
    let lease = dir.path().join("lease.json");
    let mut leader = Replica::start(dir.path(), "first", &jobs, &lease, &FAST_TIMINGS);
    let read_strays = || -> Vec<i32> {
        fs::read_to_string(&strays)
            .unwrap_or_default()
            .lines()
            .filter_map(|line| line.trim().parse().ok())
            .collect()
    };
    let first = wait_for(WAIT, || read_strays().first().copied()).expect("a run left a process");
    assert!(
        alive(first),
        "the stray outlives its run while the term lasts"
    );

    leader.stop_cleanly();
    let left = read_strays();
    let survivors: Vec<i32> = left.iter().copied().filter(|&pid| alive(pid)).collect();
    assert!(
        survivors.is_empty(),
        "every process the runs left behind died with the term: {survivors:?} of {left:?}"
    );
    let log = leader.log_text();
    let swept = log
        .find("left processes behind")
        .unwrap_or_else(|| panic!("the sweep is logged: {log}"));
    let released = log
        .find("released the lease")
        .unwrap_or_else(|| panic!("the release is logged: {log}"));
    assert!(
        swept < released,
        "the strays died before the release: {log}"
    );
}

#[test]
fn a_second_process_with_an_identity_in_use_on_the_lease_file_exits_2_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let runs = dir.path().join("runs");
    let jobs = recording_job(dir.path(), &runs);
    let lease = dir.path().join("lease.json");
    let mut leader = Replica::start(dir.path(), "lead", &jobs, &lease, &FAST_TIMINGS);
    wait_for(WAIT, || read_recorded_runs(&runs).first().cloned()).expect("lead leads and runs");
    let mut follower = Replica::start(dir.path(), "dup", &jobs, &lease, &FAST_TIMINGS);
    wait_for(WAIT, || {
        let ready = follower.http_get("/readyz")?;
        (ready.status == 200).then_some(())
    })
    .expect("dup joins as a follower");

    // The same identity as the holder, and as a follower (which the lease record cannot tell).
    for identity in ["lead", "dup"] {
        let mut twin = Replica::start_as(
            dir.path(),
            &format!("{identity}-twin"),
            identity,
            &jobs,
            &lease,
            &FAST_TIMINGS,
        );
        let status = twin.wait_exit(WAIT).expect("the twin exits");
        assert_eq!(status.code(), Some(2), "{}", twin.log_text());
        let log = twin.log_text();
        assert!(
            log.contains(&format!(
                "identity \"{identity}\" is already used by another live leasecron process"
            )),
            "{log}"
        );
        assert!(
            twin.http_addr().is_none(),
            "refused before the HTTP port is taken: {log}"
        );
    }
    assert_eq!(lease_holder(&lease).as_deref(), Some("lead"));
    leader.stop_cleanly();
    follower.stop_cleanly();
}

#[test]
fn a_holder_killed_with_sigkill_restarts_with_its_identity_and_acquires_after_expiry() {
    let dir = tempfile::tempdir().unwrap();
    let runs = dir.path().join("runs");
    let jobs = recording_job(dir.path(), &runs);
    let lease = dir.path().join("lease.json");
    let mut first = Replica::start(dir.path(), "solo", &jobs, &lease, &FAST_TIMINGS);
    let before = wait_for(WAIT, || read_recorded_runs(&runs).first().cloned()).expect("solo runs");
    first.signal(Signal::SIGKILL);
    first.wait_exit(WAIT).expect("SIGKILL ends it");
    assert_eq!(
        lease_holder(&lease).as_deref(),
        Some("solo"),
        "no release: the record still names it"
    );

    let mut again = Replica::start_as(
        dir.path(),
        "solo-again",
        "solo",
        &jobs,
        &lease,
        &FAST_TIMINGS,
    );
    let after = wait_for(WAIT, || {
        read_recorded_runs(&runs)
            .into_iter()
            .find(|r| r.token > before.token)
    })
    .unwrap_or_else(|| panic!("the restarted solo acquires: {}", again.log_text()));
    assert_eq!(after.identity, "solo");
    assert!(
        again.child.try_wait().expect("try_wait").is_none(),
        "still running"
    );
    again.stop_cleanly();
}

/// Starts "a" twice on `lease` (a clean stop between), so that its second term has fencing token 2 and
/// the run state records it; returns the running second incarnation and the runs so far.
fn leader_in_its_second_term(
    dir: &Path,
    jobs: &Path,
    lease: &Path,
    runs: &Path,
) -> (Replica, Vec<replica::RecordedRun>) {
    let mut first = Replica::start(dir, "a", jobs, lease, &FAST_TIMINGS);
    wait_for(WAIT, || read_recorded_runs(runs).first().cloned()).expect("a leads and runs");
    first.stop_cleanly();
    let second = Replica::start_as(dir, "a-again", "a", jobs, lease, &FAST_TIMINGS);
    let seen = wait_for(WAIT, || {
        let all = read_recorded_runs(runs);
        all.iter()
            .any(|r| r.token == 2 && r.end_ns.is_some())
            .then_some(all)
    })
    .expect("a runs under its second term, token 2");
    (second, seen)
}

/// Waits until runs with a token above `above` have completed `count` times; returns every run.
fn runs_above(runs: &Path, above: u64, count: usize) -> Vec<replica::RecordedRun> {
    wait_for(WAIT, || {
        let all = read_recorded_runs(runs);
        let done = all
            .iter()
            .filter(|r| r.token > above && r.end_ns.is_some())
            .count();
        (done >= count).then_some(all)
    })
    .unwrap_or_else(|| {
        panic!(
            "runs with a token above {above}: {:?}",
            read_recorded_runs(runs)
        )
    })
}

fn assert_tokens_never_decrease(runs: &[replica::RecordedRun]) {
    for pair in runs.windows(2) {
        assert!(
            pair[0].token <= pair[1].token,
            "the fencing token went backwards: {pair:?}"
        );
    }
}

#[test]
fn a_lease_file_deleted_mid_term_leaves_the_leader_running_jobs_with_a_larger_token() {
    let dir = tempfile::tempdir().unwrap();
    let runs = dir.path().join("runs");
    let jobs = recording_job(dir.path(), &runs);
    let lease = dir.path().join("lease.json");
    let (mut leader, _) = leader_in_its_second_term(dir.path(), &jobs, &lease, &runs);
    let mut follower = Replica::start(dir.path(), "b", &jobs, &lease, &FAST_TIMINGS);
    std::thread::sleep(Duration::from_secs(1));

    // A /tmp cleaner deletes the lease file; the run state beside it records token 2.
    fs::remove_file(&lease).expect("the lease file is deleted");
    let all = runs_above(&runs, 2, 3);
    let after: Vec<_> = all.iter().filter(|r| r.token > 2).collect();
    assert!(
        after.iter().all(|r| r.identity == "a"),
        "the leader takes its lease back: {after:?}"
    );
    assert_tokens_never_decrease(&all);
    let status = leader.status().expect("/status");
    let token = status["fencing_token"].as_u64().expect("a leader's token");
    assert!(token > 2, "{status}");
    let record: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(&lease).expect("the lease file is back"))
            .expect("JSON");
    assert_eq!(
        record["leaseTransitions"].as_u64(),
        Some(token),
        "the token is written back into the lease"
    );
    assert_eq!(leader.http_get("/readyz").map(|r| r.status), Some(200));
    assert_eq!(metric(&leader, "leasecron_leader_stalled"), Some(0.0));
    assert_eq!(
        metric(&leader, "leasecron_fencing_token_regressions_total"),
        Some(0.0),
        "the run state kept the token: nothing went backwards"
    );
    leader.stop_cleanly();
    follower.stop_cleanly();
}

#[test]
fn deleting_the_lease_file_and_the_run_state_keeps_tokens_increasing_and_reports_it() {
    let dir = tempfile::tempdir().unwrap();
    let runs = dir.path().join("runs");
    let jobs = recording_job(dir.path(), &runs);
    let lease = dir.path().join("lease.json");
    let (mut leader, _) = leader_in_its_second_term(dir.path(), &jobs, &lease, &runs);

    // The job is suspended first: otherwise a claim (ahead of a slot, every second) or a completion may
    // write the run state anew between the two deletions, and the leader then rightly sees no regression.
    let lease_arg = lease.to_str().expect("a UTF-8 path");
    let jobs_arg = jobs.to_str().expect("a UTF-8 path");
    let place = ["--lease-file", lease_arg, "--jobs", jobs_arg];
    let suspend = replica::output(&[&["suspend", "tick"][..], &place].concat());
    assert!(suspend.status.success(), "{suspend:?}");
    wait_for(WAIT, || {
        leader
            .status()
            .filter(|s| s["jobs"][0]["suspended"] == true && s["jobs"][0]["running"] == 0)
    })
    .expect("the job is suspended and its last run ended");
    // A slot claimed ahead before the suspension applied is released when it comes due: past it.
    std::thread::sleep(Duration::from_millis(1500));

    // Both go: the lease file and the run state beside it.
    fs::remove_file(dir.path().join("lease.json.state")).expect("the run state is deleted");
    fs::remove_file(&lease).expect("the lease file is deleted");
    let regressions = wait_for(WAIT, || {
        metric(&leader, "leasecron_fencing_token_regressions_total").filter(|v| *v >= 1.0)
    });
    assert_eq!(regressions, Some(1.0), "{}", leader.log_text());
    let resume = replica::output(&[&["resume", "tick"][..], &place].concat());
    assert!(resume.status.success(), "{resume:?}");
    let all = runs_above(&runs, 2, 2);
    assert_tokens_never_decrease(&all);
    assert_eq!(
        metric(&leader, "leasecron_fencing_token_regressions_total"),
        Some(1.0),
        "reported once"
    );
    let log = leader.log_text();
    let error = log
        .lines()
        .find(|l| l.contains("fencing tokens went backwards"))
        .unwrap_or_else(|| panic!("an error is logged: {log}"));
    assert!(error.contains(" level=error "), "{error}");
    assert!(error.contains("from 2 to 0"), "{error}");
    assert_eq!(leader.http_get("/readyz").map(|r| r.status), Some(200));
    leader.stop_cleanly();
}

#[test]
fn a_leader_that_cannot_claim_a_slot_for_longer_than_the_lease_duration_is_not_ready() {
    let dir = tempfile::tempdir().unwrap();
    let runs = dir.path().join("runs");
    let jobs = recording_job(dir.path(), &runs);
    let lease = dir.path().join("lease.json");
    let mut leader = Replica::start(dir.path(), "a", &jobs, &lease, &FAST_TIMINGS);
    wait_for(WAIT, || read_recorded_runs(&runs).first().cloned()).expect("a leads and runs");
    assert_eq!(leader.http_get("/readyz").map(|r| r.status), Some(200));
    assert_eq!(metric(&leader, "leasecron_leader_stalled"), Some(0.0));

    // The run state can no longer be written: a directory where its file was.
    let state = dir.path().join("lease.json.state");
    fs::remove_file(&state).expect("the run state file exists");
    fs::create_dir(&state).expect("a directory in its place");
    fs::write(state.join("keep"), "").expect("not empty");
    let stalled = wait_for(WAIT, || {
        let ready = leader.http_get("/readyz")?;
        (ready.status == 503).then_some(ready.body)
    })
    .unwrap_or_else(|| panic!("the stalled leader turns not ready: {}", leader.log_text()));
    assert!(
        stalled.starts_with("not ready: leader stalled: every fire for ")
            && stalled.contains("last as state_unavailable")
            && stalled.contains("docs/alerts.md#leasecronleaderstalled"),
        "{stalled}"
    );
    assert_eq!(metric(&leader, "leasecron_leader_stalled"), Some(1.0));
    assert_eq!(metric(&leader, "leasecron_is_leader"), Some(1.0));
    assert_eq!(
        leader.http_get("/healthz").map(|r| r.status),
        Some(200),
        "not wedged: a restart would not help"
    );

    // Writable again: the next fire starts a run, and the leader is ready again.
    fs::remove_dir_all(&state).expect("removes the directory");
    let recovered = wait_for(WAIT, || {
        let ready = leader.http_get("/readyz")?;
        (ready.status == 200).then_some(())
    });
    assert!(recovered.is_some(), "{}", leader.log_text());
    assert_eq!(metric(&leader, "leasecron_leader_stalled"), Some(0.0));
    leader.stop_cleanly();
}
