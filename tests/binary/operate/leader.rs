//! The operator commands end to end, with real `leasecron run` replicas carrying them out: on a lease file
//! and on the Kubernetes Lease of the fake API server and of the real one (through the fake in proxy
//! mode). Each job records its runs (`start IDENTITY TOKEN SLOT NS`, then `end ...`), so a slot or a
//! trigger that ran twice shows.
//!
//! - a trigger runs once across a failover: the leader that ran it is killed mid-run, and the next leader
//!   does not run it again; a trigger filed while nobody leads runs once on the next leader;
//! - a suspension made under one leader holds on the next, until `resume`;
//! - a backfill cut off by a failover finishes on the next leader, no slot twice;
//! - a trigger of a job whose run is in flight under `Forbid` is refused, and `--wait` says why.

use crate::on_both_servers;
use crate::support::fake_apiserver::Which;
use crate::support::replica;
use crate::support::stores::{
    assert_each_slot_once, runs_by_slot, wait_following, wait_leading, Store, WAIT,
};

use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{SecondsFormat, Utc};
use nix::sys::signal::Signal;
use replica::{read_recorded_runs, record_line, wait_for, write_jobs_file, RecordedRun};
use serde_json::Value;

/// A jobs file with one job `name`, recording its runs in `runs`, running `body` between the records.
fn recording_jobs(dir: &Path, name: &str, schedule: &str, runs: &Path, body: &str) -> PathBuf {
    write_jobs_file(
        dir,
        &format!(
            "jobs:\n  - name: {name}\n    schedule: \"{schedule}\"\n    terminationGrace: 500ms\n    shell: '{}; {body}; {}'\n",
            record_line("start", runs),
            record_line("end", runs)
        ),
    )
}

// === a trigger across a failover ===

#[test]
fn a_trigger_runs_once_across_a_failover_on_a_lease_file() {
    a_trigger_runs_once_across_a_failover(Store::File);
}

fn a_trigger_runs_once_across_a_failover_on_the_kubernetes_lease(which: Which) {
    if let Some(store) = Store::kube(which, "a_trigger_runs_once_across") {
        a_trigger_runs_once_across_a_failover(store);
    }
}

fn a_trigger_runs_once_across_a_failover(store: Store) {
    let dir = tempfile::tempdir().expect("tempdir");
    let runs = dir.path().join("runs");
    // Never due during the test: every run is a trigger.
    let jobs = recording_jobs(dir.path(), "report", "0 0 1 1 *", &runs, "sleep 2");
    let a = store.start(dir.path(), "a", &jobs);
    wait_leading(&a);
    let mut b = store.start(dir.path(), "b", &jobs);
    wait_following(&b);

    // Filed under a, which starts it; a dies mid-run.
    store.ok(dir.path(), &jobs, &["trigger", "report"]);
    wait_for(WAIT, || read_recorded_runs(&runs).into_iter().next())
        .unwrap_or_else(|| panic!("a runs the trigger: {}", a.log_text()));
    a.signal(Signal::SIGKILL);
    // Filed while nobody leads: the next leader runs it.
    let filed = store.ok(dir.path(), &jobs, &["trigger", "report"]);
    assert!(filed.starts_with("request "), "{filed}");
    wait_leading(&b);
    let second = wait_for(WAIT, || {
        read_recorded_runs(&runs)
            .into_iter()
            .find(|run| run.identity == "b" && run.end_ns.is_some())
    })
    .unwrap_or_else(|| panic!("b runs the second trigger: {}", b.log_text()));
    assert_eq!(second.token, 2, "under b's term");
    // Time for b to run the first one again, if it were to.
    std::thread::sleep(Duration::from_secs(3));
    let all = read_recorded_runs(&runs);
    assert_eq!(all.len(), 2, "each trigger once: {all:?}");
    assert_eq!(all[0].identity, "a");
    assert_each_slot_once(&all);

    let history: Value =
        serde_json::from_str(&store.ok(dir.path(), &jobs, &["history", "report", "-o", "json"]))
            .expect("history as JSON");
    let causes: Vec<&str> = history["runs"]
        .as_array()
        .expect("runs")
        .iter()
        .map(|run| run["cause"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(causes, ["trigger", "trigger"], "{history}");
    b.stop_cleanly();
}

// === a suspension across a failover ===

#[test]
fn a_suspension_holds_on_the_next_leader_until_resumed_on_a_lease_file() {
    a_suspension_holds_on_the_next_leader_until_resumed(Store::File);
}

fn a_suspension_holds_on_the_next_leader_until_resumed_on_the_kubernetes_lease(which: Which) {
    if let Some(store) = Store::kube(which, "a_suspension_holds_on_the_n") {
        a_suspension_holds_on_the_next_leader_until_resumed(store);
    }
}

fn a_suspension_holds_on_the_next_leader_until_resumed(store: Store) {
    let dir = tempfile::tempdir().expect("tempdir");
    let runs = dir.path().join("runs");
    let jobs = recording_jobs(dir.path(), "tick", "* * * * * *", &runs, "true");
    let mut a = store.start(dir.path(), "a", &jobs);
    wait_leading(&a);
    let mut b = store.start(dir.path(), "b", &jobs);
    wait_following(&b);
    wait_for(WAIT, || read_recorded_runs(&runs).into_iter().next())
        .unwrap_or_else(|| panic!("a runs the job: {}", a.log_text()));

    store.ok(
        dir.path(),
        &jobs,
        &["suspend", "tick", "--note", "db migration"],
    );
    for replica in [&a, &b] {
        wait_for(WAIT, || {
            replica.status().filter(|s| {
                s["jobs"][0]["suspended"] == true
                    && s["jobs"][0]["suspension"]["note"] == "db migration"
            })
        })
        .unwrap_or_else(|| {
            panic!(
                "{} applies the suspension: {}",
                replica.identity,
                replica.log_text()
            )
        });
    }
    // A fire that was starting as the suspension arrived may still finish.
    std::thread::sleep(Duration::from_millis(1500));
    let before = read_recorded_runs(&runs).len();
    a.stop_cleanly();
    wait_leading(&b);
    std::thread::sleep(Duration::from_secs(3));
    let after = read_recorded_runs(&runs);
    assert_eq!(after.len(), before, "the suspended job ran on b: {after:?}");

    let status: Value =
        serde_json::from_str(&store.ok(dir.path(), &jobs, &["status", "-o", "json"]))
            .expect("status as JSON");
    assert_eq!(
        status["jobs"][0]["suspension"]["note"], "db migration",
        "{status}"
    );
    assert_eq!(status["lease"]["holder"], "b", "{status}");

    let resumed = store.ok(dir.path(), &jobs, &["resume", "tick"]);
    assert!(resumed.contains("leasecron backfill tick"), "{resumed}");
    wait_for(WAIT, || {
        read_recorded_runs(&runs)
            .into_iter()
            .find(|run| run.identity == "b" && run.end_ns.is_some())
    })
    .unwrap_or_else(|| panic!("b runs the job once resumed: {}", b.log_text()));
    b.stop_cleanly();
}

// === a backfill across a failover ===

#[test]
fn a_backfill_cut_off_by_a_failover_finishes_on_the_next_leader_on_a_lease_file() {
    a_backfill_cut_off_by_a_failover_finishes_on_the_next_leader(Store::File);
}

fn a_backfill_cut_off_by_a_failover_finishes_on_the_next_leader_on_the_kubernetes_lease(
    which: Which,
) {
    if let Some(store) = Store::kube(which, "a_backfill_cut_off_by_a_fai") {
        a_backfill_cut_off_by_a_failover_finishes_on_the_next_leader(store);
    }
}

fn a_backfill_cut_off_by_a_failover_finishes_on_the_next_leader(store: Store) {
    let dir = tempfile::tempdir().expect("tempdir");
    let runs = dir.path().join("runs");
    // Every minute at second 0: the backfill's slots are the six minutes before the last one.
    let jobs = recording_jobs(dir.path(), "fill", "0 * * * * *", &runs, "sleep 1");
    let a = store.start(dir.path(), "a", &jobs);
    wait_leading(&a);
    let mut b = store.start(dir.path(), "b", &jobs);
    wait_following(&b);

    let now = Utc::now();
    let to = now - chrono::Duration::seconds(70);
    let from = to - chrono::Duration::minutes(5);
    let (from, to) = (
        from.to_rfc3339_opts(SecondsFormat::Secs, true),
        to.to_rfc3339_opts(SecondsFormat::Secs, true),
    );
    let filed = store.ok(
        dir.path(),
        &jobs,
        &["backfill", "fill", "--from", &from, "--to", &to],
    );
    assert!(filed.contains("5 slot"), "{filed}");
    // Two slots done, the third running: a dies.
    wait_for(WAIT, || {
        let all = read_recorded_runs(&runs);
        (all.len() >= 3).then_some(())
    })
    .unwrap_or_else(|| panic!("a runs three slots: {}", a.log_text()));
    a.signal(Signal::SIGKILL);
    wait_leading(&b);
    let backfilled = |runs: &[RecordedRun]| -> Vec<RecordedRun> {
        runs.iter()
            .filter(|run| run.slot.as_str() <= to.as_str())
            .cloned()
            .collect()
    };
    wait_for(WAIT, || {
        let all = backfilled(&read_recorded_runs(&runs));
        let slots = runs_by_slot(&all);
        (slots.len() == 5 && all.iter().filter(|r| r.end_ns.is_some()).count() >= 4).then_some(())
    })
    .unwrap_or_else(|| panic!("b finishes the backfill: {}", b.log_text()));
    // Time for a slot to run twice, if one were to.
    std::thread::sleep(Duration::from_secs(2));
    let all = backfilled(&read_recorded_runs(&runs));
    assert_each_slot_once(&all);
    assert!(all.iter().any(|run| run.identity == "a"), "{all:?}");
    assert!(all.iter().any(|run| run.identity == "b"), "{all:?}");
    // Oldest first: the slots start in order.
    let mut by_start = all.clone();
    by_start.sort_by_key(|run| run.start_ns);
    let slots: Vec<&str> = by_start.iter().map(|run| run.slot.as_str()).collect();
    let mut sorted = slots.clone();
    sorted.sort_unstable();
    assert_eq!(slots, sorted, "oldest first");
    b.stop_cleanly();
}

// === a trigger refused by the concurrency policy ===

#[test]
fn a_trigger_refused_by_forbid_says_why_on_a_lease_file() {
    a_trigger_refused_by_forbid_says_why(Store::File);
}

fn a_trigger_refused_by_forbid_says_why_on_the_kubernetes_lease(which: Which) {
    if let Some(store) = Store::kube(which, "a_trigger_refused_by_forbid") {
        a_trigger_refused_by_forbid_says_why(store);
    }
}

fn a_trigger_refused_by_forbid_says_why(store: Store) {
    let dir = tempfile::tempdir().expect("tempdir");
    let runs = dir.path().join("runs");
    // Always running: every second, for 30 s.
    let jobs = recording_jobs(dir.path(), "busy", "* * * * * *", &runs, "sleep 30");
    let mut a = store.start(dir.path(), "a", &jobs);
    wait_leading(&a);
    wait_for(WAIT, || read_recorded_runs(&runs).into_iter().next())
        .unwrap_or_else(|| panic!("a runs the job: {}", a.log_text()));
    let out = store.command(
        dir.path(),
        &jobs,
        &["trigger", "busy", "--wait", "--timeout", "30s"],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("skipped: a run of busy is in flight and its concurrencyPolicy is Forbid"),
        "{stdout}"
    );
    assert_eq!(read_recorded_runs(&runs).len(), 1, "only the scheduled run");
    a.stop_cleanly();
}

on_both_servers!(
    processes:
    a_trigger_runs_once_across_a_failover_on_the_kubernetes_lease,
    a_suspension_holds_on_the_next_leader_until_resumed_on_the_kubernetes_lease,
    a_backfill_cut_off_by_a_failover_finishes_on_the_next_leader_on_the_kubernetes_lease,
    a_trigger_refused_by_forbid_says_why_on_the_kubernetes_lease,
);
