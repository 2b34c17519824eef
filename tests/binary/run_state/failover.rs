//! Each slot runs at most once across failovers, and a slot that fell due without a leader still runs
//! within `startingDeadline`: real `leasecron run` processes, on a local lease file (the run state beside
//! it) and on the Lease of the fake API server and of the real one through the fake in proxy mode (the
//! run state in the ConfigMap `leasecron-state`), a leader killed with SIGKILL around a slot, and the
//! runs recorded by the job itself. Every scenario runs on all three.
//!
//! The job appends `start IDENTITY TOKEN SLOT NS` (and `end ...`) lines; a 10-second schedule leaves room to
//! kill the leader just before a slot and let the follower take over after it (LD 3 s).

use crate::on_both_servers;
use crate::support::stores::{assert_each_slot_once, runs_by_slot, wait_leading, Store, WAIT};
use crate::support::{exposition, fake_apiserver, replica};

use std::fs;
use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, Timelike, Utc};
use exposition::sample;
use fake_apiserver::Which;
use nix::sys::signal::Signal;
use replica::{read_recorded_runs, record_line, wait_for, write_jobs_file};

/// A job every 10 s that records its runs in `runs`, runs `body`, with `extra` settings.
fn jobs_file(dir: &Path, runs: &Path, body: &str, extra: &str) -> std::path::PathBuf {
    write_jobs_file(
        dir,
        &format!(
            "jobs:\n  - name: tick\n    schedule: \"*/10 * * * * *\"\n    terminationGrace: 500ms\n{extra}    shell: '{}; {body}; {}'\n",
            record_line("start", runs),
            record_line("end", runs)
        ),
    )
}

/// Sleeps until `lead` before the next slot of the 10-second schedule that is at least `min_ahead` away;
/// returns that slot.
fn sleep_until_before_next_slot(lead: Duration, min_ahead: Duration) -> DateTime<Utc> {
    let now = Utc::now();
    let mut slot = now
        .with_nanosecond(0)
        .expect("valid")
        .with_second(now.second() / 10 * 10)
        .expect("valid");
    while slot - chrono::Duration::from_std(lead + min_ahead).expect("small") <= now {
        slot += chrono::Duration::seconds(10);
    }
    let until = slot - chrono::Duration::from_std(lead).expect("small");
    std::thread::sleep((until - Utc::now()).to_std().unwrap_or_default());
    slot
}

fn slot_text(slot: DateTime<Utc>) -> String {
    slot.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

#[test]
fn a_slot_due_while_no_replica_leads_runs_once_on_the_new_leader_on_a_lease_file() {
    a_slot_due_while_no_replica_leads_runs_once_on_the_new_leader(Store::File);
}

fn a_slot_due_while_no_replica_leads_runs_once_on_the_new_leader_on_the_kubernetes_lease(
    which: Which,
) {
    if let Some(store) = Store::kube(which, "a_slot_due_while_no_replica_") {
        a_slot_due_while_no_replica_leads_runs_once_on_the_new_leader(store);
    }
}

fn a_slot_due_while_no_replica_leads_runs_once_on_the_new_leader(store: Store) {
    let dir = tempfile::tempdir().expect("tempdir");
    let runs = dir.path().join("runs");
    let jobs = jobs_file(dir.path(), &runs, "true", "    startingDeadline: 8s\n");
    let (a, mut b) = store.leader_and_follower(dir.path(), &jobs);
    // A job owes only slots after its recorded start: let a run one first.
    wait_for(WAIT, || {
        read_recorded_runs(&runs)
            .into_iter()
            .find(|r| r.end_ns.is_some())
    })
    .unwrap_or_else(|| panic!("a runs the job: {}", a.log_text()));

    // Kill the leader 1 s before a slot: the slot falls due while nobody leads (b takes over after LD).
    let slot = sleep_until_before_next_slot(Duration::from_secs(1), Duration::from_millis(500));
    a.signal(Signal::SIGKILL);
    wait_for(WAIT, || {
        read_recorded_runs(&runs)
            .into_iter()
            .find(|r| r.slot == slot_text(slot))
    })
    .unwrap_or_else(|| panic!("b runs the slot: {}", b.log_text()));
    // And the slot after it, on time.
    let next = slot_text(slot + chrono::Duration::seconds(10));
    wait_for(WAIT, || {
        read_recorded_runs(&runs)
            .into_iter()
            .find(|r| r.slot == next && r.end_ns.is_some())
    })
    .unwrap_or_else(|| panic!("b runs the next slot: {}", b.log_text()));

    let all = read_recorded_runs(&runs);
    let caught_up = &runs_by_slot(&all)[&slot_text(slot)];
    assert_eq!(caught_up.len(), 1, "{caught_up:?}");
    assert_eq!(caught_up[0].identity, "b");
    assert_eq!(caught_up[0].token, 2, "under b's term");
    assert_each_slot_once(&all);
    assert!(
        b.log_text().contains("catching up a slot"),
        "{}",
        b.log_text()
    );
    b.stop_cleanly();
}

#[test]
fn a_slot_interrupted_by_a_failover_does_not_run_again_on_a_lease_file() {
    a_slot_interrupted_by_a_failover_does_not_run_again(Store::File);
}

fn a_slot_interrupted_by_a_failover_does_not_run_again_on_the_kubernetes_lease(which: Which) {
    if let Some(store) = Store::kube(which, "a_slot_interrupted_by_a_fail") {
        a_slot_interrupted_by_a_failover_does_not_run_again(store);
    }
}

fn a_slot_interrupted_by_a_failover_does_not_run_again(store: Store) {
    let dir = tempfile::tempdir().expect("tempdir");
    let runs = dir.path().join("runs");
    let jobs = jobs_file(dir.path(), &runs, "sleep 6", "    startingDeadline: 8s\n");
    let (a, mut b) = store.leader_and_follower(dir.path(), &jobs);

    let started = wait_for(WAIT, || read_recorded_runs(&runs).into_iter().next())
        .unwrap_or_else(|| panic!("a starts a run: {}", a.log_text()));
    a.signal(Signal::SIGKILL);
    wait_leading(&b);
    // Past the interrupted slot's deadline and into the next slot.
    let next = DateTime::parse_from_rfc3339(&started.slot).expect("RFC 3339")
        + chrono::Duration::seconds(10);
    let next = slot_text(next.with_timezone(&Utc));
    wait_for(WAIT, || {
        read_recorded_runs(&runs)
            .into_iter()
            .find(|r| r.slot == next)
    })
    .unwrap_or_else(|| panic!("b runs the next slot: {}", b.log_text()));
    let all = read_recorded_runs(&runs);
    let interrupted = &runs_by_slot(&all)[&started.slot];
    assert_eq!(
        interrupted.len(),
        1,
        "the interrupted slot ran once: {interrupted:?}"
    );
    assert_eq!(interrupted[0].end_ns, None, "its run was killed with a");
    assert_each_slot_once(&all);
    b.stop_cleanly();
}

#[test]
fn a_rerun_interrupted_job_runs_the_interrupted_slot_again_under_the_new_term_on_a_lease_file() {
    a_rerun_interrupted_job_runs_the_interrupted_slot_again_under_the_new_term(Store::File);
}

fn a_rerun_interrupted_job_runs_the_interrupted_slot_again_under_the_new_term_on_the_kubernetes_lease(
    which: Which,
) {
    if let Some(store) = Store::kube(which, "a_rerun_interrupted_job_runs") {
        a_rerun_interrupted_job_runs_the_interrupted_slot_again_under_the_new_term(store);
    }
}

fn a_rerun_interrupted_job_runs_the_interrupted_slot_again_under_the_new_term(store: Store) {
    let dir = tempfile::tempdir().expect("tempdir");
    let runs = dir.path().join("runs");
    let jobs = jobs_file(
        dir.path(),
        &runs,
        "sleep 2",
        "    startingDeadline: 9s\n    rerunInterrupted: true\n",
    );
    let (a, mut b) = store.leader_and_follower(dir.path(), &jobs);

    let started = wait_for(WAIT, || read_recorded_runs(&runs).into_iter().next())
        .unwrap_or_else(|| panic!("a starts a run: {}", a.log_text()));
    a.signal(Signal::SIGKILL);
    let rerun = wait_for(WAIT, || {
        read_recorded_runs(&runs)
            .into_iter()
            .find(|r| r.slot == started.slot && r.identity == "b" && r.end_ns.is_some())
    })
    .unwrap_or_else(|| panic!("b reruns the interrupted slot: {}", b.log_text()));
    assert_eq!(rerun.token, 2, "with b's fencing token");
    let all = read_recorded_runs(&runs);
    let slot_runs = &runs_by_slot(&all)[&started.slot];
    assert_eq!(
        slot_runs.len(),
        2,
        "once interrupted, once rerun: {slot_runs:?}"
    );
    assert!(
        slot_runs[0].end_ns.is_none(),
        "the first run was killed with a: {slot_runs:?}"
    );
    b.stop_cleanly();
}

#[test]
fn an_outage_longer_than_the_starting_deadline_skips_the_slot_and_counts_it_on_a_lease_file() {
    an_outage_longer_than_the_starting_deadline_skips_the_slot_and_counts_it(Store::File);
}

fn an_outage_longer_than_the_starting_deadline_skips_the_slot_and_counts_it_on_the_kubernetes_lease(
    which: Which,
) {
    if let Some(store) = Store::kube(which, "an_outage_longer_than_the_st") {
        an_outage_longer_than_the_starting_deadline_skips_the_slot_and_counts_it(store);
    }
}

fn an_outage_longer_than_the_starting_deadline_skips_the_slot_and_counts_it(store: Store) {
    let dir = tempfile::tempdir().expect("tempdir");
    let runs = dir.path().join("runs");
    let jobs = jobs_file(dir.path(), &runs, "true", "    startingDeadline: 1s\n");
    let (a, mut b) = store.leader_and_follower(dir.path(), &jobs);
    wait_for(WAIT, || {
        read_recorded_runs(&runs)
            .into_iter()
            .find(|r| r.end_ns.is_some())
    })
    .unwrap_or_else(|| panic!("a runs the job: {}", a.log_text()));

    let slot = sleep_until_before_next_slot(Duration::from_millis(500), Duration::from_millis(500));
    a.signal(Signal::SIGKILL);
    wait_leading(&b);
    let missed = wait_for(WAIT, || {
        let body = b.http_get("/metrics")?.body;
        sample(
            &body,
            "leasecron_job_skipped_total{job=\"tick\",reason=\"missed_deadline\"}",
        )
        .filter(|&n| n >= 1.0)
    })
    .unwrap_or_else(|| panic!("b counts the missed slot: {}", b.log_text()));
    assert!(missed >= 1.0);
    assert!(
        !read_recorded_runs(&runs)
            .iter()
            .any(|r| r.slot == slot_text(slot)),
        "the slot past its deadline did not run"
    );
    // The log reaches its file through leasecron's writer thread, which may lag the metric.
    wait_for(WAIT, || {
        b.log_text()
            .contains("slots fell due without a leader")
            .then_some(())
    })
    .unwrap_or_else(|| panic!("b logs the missed slots: {}", b.log_text()));
    // /status shows the record's last slot.
    let status = b.status().expect("status");
    assert!(
        status["jobs"][0]["run_state"]["lastStarted"]["slot"].is_string(),
        "{status}"
    );
    b.stop_cleanly();
}

#[test]
fn a_corrupt_run_state_is_logged_and_rebuilt_and_the_jobs_run() {
    let dir = tempfile::tempdir().expect("tempdir");
    let runs = dir.path().join("runs");
    let jobs = jobs_file(dir.path(), &runs, "true", "    startingDeadline: 8s\n");
    fs::write(
        dir.path().join("lease.state"),
        "{\"generation\": 4, \"record\": [garbage",
    )
    .expect("write a corrupt state");
    let mut a = Store::File.start(dir.path(), "a", &jobs);
    wait_leading(&a);
    wait_for(WAIT, || {
        read_recorded_runs(&runs)
            .into_iter()
            .find(|r| r.end_ns.is_some())
    })
    .unwrap_or_else(|| panic!("the jobs run: {}", a.log_text()));
    assert!(
        a.log_text()
            .contains("the run state is unusable; rebuilding it"),
        "{}",
        a.log_text()
    );
    let rebuilt: serde_json::Value = serde_json::from_str(
        &fs::read_to_string(dir.path().join("lease.state")).expect("read the state"),
    )
    .expect("valid JSON again");
    assert_eq!(rebuilt["record"]["fencingToken"], 1);
    a.stop_cleanly();
}

fn next_shows_the_last_slot_from_the_clusters_run_state(which: Which) {
    let Some(store) = Store::kube(which, "next_shows_the_last_slot") else {
        return;
    };
    let Store::Kube { server, .. } = &store else {
        unreachable!("a Kubernetes store");
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let runs = dir.path().join("runs");
    let jobs = jobs_file(dir.path(), &runs, "true", "");
    let mut a = store.start(dir.path(), "a", &jobs);
    let ran = wait_for(WAIT, || {
        read_recorded_runs(&runs)
            .into_iter()
            .find(|r| r.end_ns.is_some())
    })
    .unwrap_or_else(|| panic!("a runs the job: {}", a.log_text()));
    a.stop_cleanly();

    let out = replica::leasecron()
        .args(["next"])
        .arg(&jobs)
        .args(["--count", "1", "--lease-name", "leasecron"])
        .env("KUBECONFIG", server.kubeconfig(dir.path(), "reader"))
        .env("HOME", dir.path())
        .env_remove("POD_NAMESPACE")
        .output()
        .expect("run next");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let slot = DateTime::parse_from_rfc3339(&ran.slot).expect("RFC 3339");
    assert!(
        stdout.contains(&format!(
            "  last slot: {} (fencing token 1, a, ",
            slot.to_rfc3339()
        )),
        "{stdout}"
    );
}

on_both_servers!(
    processes:
    a_slot_due_while_no_replica_leads_runs_once_on_the_new_leader_on_the_kubernetes_lease,
    a_slot_interrupted_by_a_failover_does_not_run_again_on_the_kubernetes_lease,
    a_rerun_interrupted_job_runs_the_interrupted_slot_again_under_the_new_term_on_the_kubernetes_lease,
    an_outage_longer_than_the_starting_deadline_skips_the_slot_and_counts_it_on_the_kubernetes_lease,
    next_shows_the_last_slot_from_the_clusters_run_state,
);
