//! The runner against real processes: `/bin/sh` scripts that exit, trap signals, fork, and print.

use crate::support::runner_fixtures;

use std::sync::Arc;
use std::time::Duration;

use leasecron::config::{ConcurrencyPolicy, Program};
use leasecron::event::{Failure, Outcome, RunEvent, SkipReason};
use leasecron::runner::{Start, MAX_LINE_BYTES};
use leasecron::term::{FencingToken, Term};
use tokio::time::Instant;

use runner_fixtures::*;

/// Blocks until the test creates `go` in the working directory.
const WAIT_FOR_GO: &str = "while [ ! -e go ]; do sleep 0.02; done";

/// Runs one job to its end on a fresh runner and live term; returns its report.
async fn run_once(job: leasecron::config::Job) -> leasecron::event::RunReport {
    let (runner, mut events) = runner();
    let term = live_term();
    let start = runner.start(Arc::new(job), slot(0), term.term());
    assert_eq!(start, Start::Spawned);
    events.finished().await
}

fn in_dir(mut job: leasecron::config::Job, dir: &tempfile::TempDir) -> leasecron::config::Job {
    job.working_dir = Some(dir.path().to_owned());
    job
}

// === exit statuses ===

#[tokio::test]
async fn exit_zero_succeeds() {
    let report = run_once(shell_job("exit-zero", "exit 0")).await;
    assert_eq!(report.outcome, Outcome::Succeeded);
    assert_eq!(report.attempts, 1);
    assert_eq!(report.job, "exit-zero");
    assert_eq!(report.scheduled, slot(0));
    assert_eq!(report.leftover_processes_killed, 0);
}

#[tokio::test]
async fn a_non_zero_exit_code_is_a_failure_with_that_code() {
    let report = run_once(shell_job("exit-three", "exit 3")).await;
    assert_eq!(report.outcome, Outcome::Failed(Failure::ExitCode(3)));
}

#[tokio::test]
async fn death_by_signal_is_a_failure_naming_the_signal() {
    let report = run_once(shell_job("killed", "kill -9 $$")).await;
    assert_eq!(report.outcome, Outcome::Failed(Failure::Signal(9)));
}

#[tokio::test]
async fn a_missing_program_is_a_spawn_failure() {
    let (runner, mut events) = runner();
    let term = live_term();
    let job = job(
        "missing",
        Program::Command(vec!["/nonexistent/leasecron-test".into()]),
    );
    runner.start(Arc::new(job), slot(0), term.term());
    match events.next().await {
        RunEvent::Finished(report) => {
            assert!(
                matches!(&report.outcome, Outcome::Failed(Failure::Spawn(why)) if why.contains("/nonexistent/leasecron-test")),
                "{:?}",
                report.outcome
            );
            assert_eq!(report.attempts, 1);
        }
        other => panic!("expected Finished without Started, got {other:?}"),
    }
}

/// The spawn failure of `job`, run once.
async fn spawn_failure(job: leasecron::config::Job) -> String {
    let (runner, mut events) = runner();
    let term = live_term();
    runner.start(Arc::new(job), slot(0), term.term());
    match events.next().await {
        RunEvent::Finished(report) => match report.outcome {
            Outcome::Failed(Failure::Spawn(why)) => why,
            other => panic!("expected a spawn failure, got {other:?}"),
        },
        other => panic!("expected Finished without Started, got {other:?}"),
    }
}

#[tokio::test]
async fn a_missing_working_directory_is_named_not_the_program() {
    let dir = tempfile::tempdir().unwrap();
    let mut job = job("no-dir", Program::Command(vec!["/bin/true".into()]));
    job.working_dir = Some(dir.path().join("missing"));
    let why = spawn_failure(job.clone()).await;
    assert_eq!(
        why,
        format!(
            "job no-dir: cannot start /bin/true: its workingDir {} does not exist",
            dir.path().join("missing").display()
        )
    );

    let file = dir.path().join("file");
    std::fs::write(&file, "").unwrap();
    job.working_dir = Some(file.clone());
    let why = spawn_failure(job.clone()).await;
    assert_eq!(
        why,
        format!(
            "job no-dir: cannot start /bin/true: its workingDir {} is not a directory",
            file.display()
        )
    );

    // With a good directory, a missing program is still the program's fault.
    job.working_dir = Some(dir.path().to_owned());
    job.program = Program::Command(vec!["/nonexistent/leasecron-test".into()]);
    let why = spawn_failure(job).await;
    assert!(
        why.starts_with("job no-dir: cannot start /nonexistent/leasecron-test: ")
            && !why.contains("workingDir"),
        "{why}"
    );
}

#[tokio::test]
async fn argv_is_executed_directly_without_a_shell() {
    let dir = tempfile::tempdir().expect("tempdir");
    let argv = [
        "/bin/sh",
        "-c",
        "printf '%s' \"$1\" > out",
        "sh",
        "$HOME; not expanded",
    ];
    let job = job(
        "argv",
        Program::Command(argv.iter().map(|s| s.to_string()).collect()),
    );
    let report = run_once(in_dir(job, &dir)).await;
    assert_eq!(report.outcome, Outcome::Succeeded);
    let out = std::fs::read_to_string(dir.path().join("out")).expect("out");
    assert_eq!(out, "$HOME; not expanded");
}

#[tokio::test]
async fn the_report_measures_the_start_delay_from_the_scheduled_slot() {
    let (runner, mut events) = runner();
    let term = live_term();
    let an_hour = chrono::TimeDelta::hours(1);
    let scheduled = chrono::Utc::now() - an_hour;
    runner.start(
        Arc::new(shell_job("late", "exit 0")),
        scheduled,
        term.term(),
    );
    let report = events.finished().await;
    assert!(report.started_at >= scheduled + an_hour);
    assert!(report.start_delay >= Duration::from_secs(3600));
    assert_eq!(
        report.start_delay,
        (report.started_at - scheduled).to_std().expect("positive")
    );
}

// === timeouts and escalation ===

#[tokio::test]
async fn a_timeout_sends_term_then_kill_after_the_grace() {
    let dir = tempfile::tempdir().expect("tempdir");
    let script = "trap 'echo TERM >> log' TERM; echo $$ > pid; while :; do sleep 0.05; done";
    let mut job = in_dir(shell_job("ignores-term", script), &dir);
    job.timeout = Some(Duration::from_secs(2));
    job.termination_grace = Duration::from_secs(1);
    let report = run_once(job).await;
    assert_eq!(report.outcome, Outcome::TimedOut);
    let log = std::fs::read_to_string(dir.path().join("log")).expect("the child logged");
    assert!(
        log.contains("TERM"),
        "the child got SIGTERM and ran during the grace"
    );
    assert!(process_is_gone(read_pid(&dir.path().join("pid"))));
}

#[tokio::test]
async fn a_child_that_exits_on_term_needs_no_kill() {
    let mut job = shell_job("exits-on-term", "exec sleep 1000");
    job.timeout = Some(Duration::from_millis(500));
    // Far beyond TEST_TIMEOUT: the run can only finish in time if SIGTERM alone ended it.
    job.termination_grace = Duration::from_secs(3600);
    let report = run_once(job).await;
    assert_eq!(report.outcome, Outcome::TimedOut);
}

#[tokio::test]
async fn grandchildren_die_with_the_process_group() {
    let dir = tempfile::tempdir().expect("tempdir");
    // The grandchild ignores SIGTERM (ignored signals survive exec); only the group SIGKILL ends it.
    let script = "(trap '' TERM; exec sleep 1000) & echo $! > grandchild; wait";
    let mut job = in_dir(shell_job("grandchild", script), &dir);
    job.timeout = Some(Duration::from_secs(1));
    job.termination_grace = Duration::from_secs(1);
    let report = run_once(job).await;
    assert_eq!(report.outcome, Outcome::TimedOut);
    assert_eq!(
        report.leftover_processes_killed, 0,
        "the escalation signalled the whole group: nothing in it was left behind"
    );
    let grandchild = read_pid(&dir.path().join("grandchild"));
    assert!(
        wait_until_gone(grandchild).await,
        "grandchild {grandchild} survived its run"
    );
}

#[tokio::test]
async fn background_processes_are_killed_after_a_normal_exit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let script = "sleep 1000 & echo $! > background; exit 0";
    let report = run_once(in_dir(shell_job("background", script), &dir)).await;
    assert_eq!(report.outcome, Outcome::Succeeded);
    assert_eq!(report.leftover_processes_killed, 1);
    let background = read_pid(&dir.path().join("background"));
    assert!(
        wait_until_gone(background).await,
        "background {background} leaked"
    );
}

#[tokio::test]
async fn processes_left_in_the_group_are_counted_over_every_attempt() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Each attempt leaves two processes in its group, and fails. (What leaves the group is found by its
    // environment among the runner's descendants, so only where it is a subreaper, as `leasecron run` is:
    // tests/binary/http.rs counts both kinds.)
    let script = "sleep 1000 & echo $! >> pids; sleep 1000 & echo $! >> pids; exit 1";
    let mut job = in_dir(shell_job("leaves-two", script), &dir);
    job.retries = 1;
    job.retry_backoff = Duration::ZERO;
    let report = run_once(job).await;
    assert_eq!(report.outcome, Outcome::Failed(Failure::ExitCode(1)));
    assert_eq!(report.attempts, 2);
    assert_eq!(report.leftover_processes_killed, 4);
    let pids = std::fs::read_to_string(dir.path().join("pids")).expect("the pids");
    for pid in pids.split_whitespace() {
        let pid = pid.parse().expect("a pid");
        assert!(wait_until_gone(pid).await, "{pid} outlived its run");
    }
}

// === the term ===

#[tokio::test]
async fn ending_the_term_returns_only_after_the_process_is_gone() {
    let mut job = shell_job("term-ends", "exec sleep 1000");
    job.retries = 3;
    let (runner, mut events) = runner();
    let term = live_term();
    runner.start(Arc::new(job), slot(0), term.term());
    let pid = events.started().await;
    let end = tokio::time::timeout(TEST_TIMEOUT, term.end()).await;
    assert!(end.is_ok(), "TermHandle::end() did not return");
    let pid = i32::try_from(pid).expect("pid");
    assert!(process_is_gone(pid), "process {pid} outlived the term");
    let report = events.finished().await;
    assert_eq!(report.outcome, Outcome::Cancelled);
    assert_eq!(report.attempts, 1, "a cancelled run is not retried");
}

#[tokio::test]
async fn nothing_is_spawned_when_the_term_deadline_has_passed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (runner, mut events) = runner();
    let expired = Term::begin(FencingToken(1), chrono::Utc::now(), Instant::now());
    let job = in_dir(shell_job("expired", "touch ran"), &dir);
    let start = runner.start(Arc::new(job), slot(0), expired.term());
    assert_eq!(start, Start::Skipped(SkipReason::NotLeader));
    match events.next().await {
        RunEvent::Skipped { job, reason, .. } => {
            assert_eq!(job, "expired");
            assert_eq!(reason, SkipReason::NotLeader);
        }
        other => panic!("expected Skipped, got {other:?}"),
    }
    assert!(!dir.path().join("ran").exists());
    assert_eq!(runner.running("expired"), 0);
}

#[tokio::test]
async fn no_retry_is_spawned_once_the_term_is_no_longer_live() {
    let dir = tempfile::tempdir().expect("tempdir");
    let script = format!("echo x >> attempts; {WAIT_FOR_GO}; exit 1");
    let mut job = in_dir(shell_job("expires-mid-run", &script), &dir);
    job.retries = 3;
    let (runner, mut events) = runner();
    let term = live_term();
    runner.start(Arc::new(job), slot(0), term.term());
    events.started().await;
    term.extend_to(Instant::now());
    std::fs::write(dir.path().join("go"), "").expect("go");
    let report = events.finished().await;
    assert_eq!(report.attempts, 1);
    assert_eq!(report.outcome, Outcome::Failed(Failure::ExitCode(1)));
    let attempts = std::fs::read_to_string(dir.path().join("attempts")).expect("attempts");
    assert_eq!(attempts.lines().count(), 1);
}

// === concurrency policy ===

#[tokio::test]
async fn forbid_skips_a_fire_while_a_run_is_going() {
    let dir = tempfile::tempdir().expect("tempdir");
    let job = Arc::new(in_dir(shell_job("forbid", WAIT_FOR_GO), &dir));
    let (runner, mut events) = runner();
    let term = live_term();
    assert_eq!(
        runner.start(job.clone(), slot(0), term.term()),
        Start::Spawned
    );
    events.started().await;
    let second = runner.start(job.clone(), slot(1), term.term());
    assert_eq!(second, Start::Skipped(SkipReason::Overlap));
    match events.next().await {
        RunEvent::Skipped {
            scheduled, reason, ..
        } => {
            assert_eq!(scheduled, slot(1));
            assert_eq!(reason, SkipReason::Overlap);
        }
        other => panic!("expected Skipped, got {other:?}"),
    }
    assert_eq!(runner.running("forbid"), 1);
    std::fs::write(dir.path().join("go"), "").expect("go");
    let report = events.finished().await;
    assert_eq!(
        (report.scheduled, report.outcome),
        (slot(0), Outcome::Succeeded)
    );
    assert_eq!(runner.running("forbid"), 0);
}

#[tokio::test]
async fn allow_runs_side_by_side() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut job = in_dir(shell_job("allow", WAIT_FOR_GO), &dir);
    job.concurrency_policy = ConcurrencyPolicy::Allow;
    let job = Arc::new(job);
    let (runner, mut events) = runner();
    let term = live_term();
    assert_eq!(
        runner.start(job.clone(), slot(0), term.term()),
        Start::Spawned
    );
    assert_eq!(
        runner.start(job.clone(), slot(1), term.term()),
        Start::Spawned
    );
    events.started().await;
    events.started().await;
    assert_eq!(runner.running("allow"), 2);
    std::fs::write(dir.path().join("go"), "").expect("go");
    let mut finished = [events.finished().await, events.finished().await];
    finished.sort_by_key(|report| report.scheduled);
    assert_eq!(finished[0].scheduled, slot(0));
    assert_eq!(finished[1].scheduled, slot(1));
    assert!(finished.iter().all(|r| r.outcome == Outcome::Succeeded));
    assert_eq!(runner.running("allow"), 0);
}

#[tokio::test]
async fn replace_ends_the_running_run_before_starting_the_new_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut job = in_dir(
        shell_job("replace", "echo $$ >> pids; exec sleep 1000"),
        &dir,
    );
    job.concurrency_policy = ConcurrencyPolicy::Replace;
    let job = Arc::new(job);
    let (runner, mut events) = runner();
    let term = live_term();
    runner.start(job.clone(), slot(0), term.term());
    let first = events.started().await;
    assert_eq!(
        runner.start(job.clone(), slot(1), term.term()),
        Start::Spawned
    );
    match events.next().await {
        RunEvent::Finished(report) => {
            assert_eq!(report.scheduled, slot(0));
            assert_eq!(report.outcome, Outcome::Cancelled);
        }
        other => panic!("the old run must finish before the new one starts, got {other:?}"),
    }
    assert!(process_is_gone(i32::try_from(first).expect("pid")));
    match events.next().await {
        RunEvent::Started { scheduled, .. } => assert_eq!(scheduled, slot(1)),
        other => panic!("expected the new run to start, got {other:?}"),
    }
    assert_eq!(runner.running("replace"), 1);
    term.end().await;
    let report = events.finished().await;
    assert_eq!(
        (report.scheduled, report.outcome),
        (slot(1), Outcome::Cancelled)
    );
}

/// A `Queue` job whose runs append their slot to `order` in `dir`, then run `rest`.
fn queue_job(name: &str, dir: &tempfile::TempDir, rest: &str) -> Arc<leasecron::config::Job> {
    let script = format!("echo \"$LEASECRON_SCHEDULED_TIME\" >> order; {rest}");
    let mut job = in_dir(shell_job(name, &script), dir);
    job.concurrency_policy = ConcurrencyPolicy::Queue;
    Arc::new(job)
}

/// The slot `job` last claimed in `ledger`'s run state.
fn claimed(
    ledger: &leasecron::run_state::Ledger,
    job: &str,
) -> Option<chrono::DateTime<chrono::Utc>> {
    let record = ledger.snapshot();
    record.jobs.get(job)?.last_started.as_ref().map(|s| s.slot)
}

/// The slots the runs of a queue job wrote, in order.
fn ran(dir: &tempfile::TempDir) -> Vec<String> {
    std::fs::read_to_string(dir.path().join("order"))
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn rfc(at: chrono::DateTime<chrono::Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

/// The messages logged for `job`.
fn messages(job: &str) -> Vec<String> {
    logged(job)
        .into_iter()
        .filter_map(|e| e["fields"]["message"].as_str().map(str::to_owned))
        .collect()
}

#[tokio::test]
async fn queue_starts_the_waiting_slot_when_the_run_in_flight_ends_and_claims_it_then() {
    let dir = tempfile::tempdir().expect("tempdir");
    let job = queue_job("queue-waits", &dir, WAIT_FOR_GO);
    let ledger = ledger();
    let (runner, mut events) = runner_over(Arc::clone(&ledger));
    let term = live_term();
    assert_eq!(
        runner.start(job.clone(), slot(0), term.term()),
        Start::Spawned
    );
    events.started().await;
    assert_eq!(
        runner.start(job.clone(), slot(1), term.term()),
        Start::Spawned
    );
    assert_eq!(
        runner.running("queue-waits"),
        2,
        "one in flight, one waiting"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!events.has_pending(), "the queued slot waits");
    assert_eq!(
        claimed(&ledger, "queue-waits"),
        Some(slot(0)),
        "a queued slot is not claimed while it waits"
    );

    std::fs::write(dir.path().join("go"), "").expect("go");
    match events.next().await {
        RunEvent::Finished(report) => assert_eq!(report.scheduled, slot(0)),
        other => panic!("the run in flight ends first, got {other:?}"),
    }
    match events.next().await {
        RunEvent::Started { scheduled, .. } => assert_eq!(scheduled, slot(1)),
        other => panic!("then the queued slot starts, got {other:?}"),
    }
    let report = events.finished().await;
    assert_eq!(
        (report.scheduled, report.outcome),
        (slot(1), Outcome::Succeeded)
    );
    assert_eq!(claimed(&ledger, "queue-waits"), Some(slot(1)));
    assert_eq!(ran(&dir), [rfc(slot(0)), rfc(slot(1))]);
    assert_eq!(runner.running("queue-waits"), 0);
    let logs = messages("queue-waits");
    for said in [
        "slot queued: a run of the job is in flight; this one starts when it ends",
        "queued slot starting: the run before it has ended",
    ] {
        assert!(logs.iter().any(|m| m == said), "{said:?} in {logs:#?}");
    }
}

#[tokio::test]
async fn queue_with_nothing_in_flight_starts_at_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let job = queue_job("queue-idle", &dir, "exit 0");
    let (runner, mut events) = runner();
    let term = live_term();
    assert_eq!(
        runner.start(job.clone(), slot(0), term.term()),
        Start::Spawned
    );
    assert_eq!(events.finished().await.scheduled, slot(0));
    assert_eq!(runner.start(job, slot(1), term.term()), Start::Spawned);
    assert_eq!(events.finished().await.scheduled, slot(1));
    assert!(!messages("queue-idle")
        .iter()
        .any(|m| m.starts_with("slot queued")));
}

#[tokio::test]
async fn a_later_fire_replaces_the_waiting_slot_and_the_replaced_one_is_skipped() {
    let dir = tempfile::tempdir().expect("tempdir");
    let job = queue_job("queue-replaced", &dir, WAIT_FOR_GO);
    let ledger = ledger();
    let (runner, mut events) = runner_over(Arc::clone(&ledger));
    let term = live_term();
    runner.start(job.clone(), slot(0), term.term());
    events.started().await;
    assert_eq!(
        runner.start(job.clone(), slot(1), term.term()),
        Start::Spawned
    );
    assert_eq!(
        runner.start(job.clone(), slot(2), term.term()),
        Start::Spawned
    );
    match events.next().await {
        RunEvent::Skipped {
            scheduled, reason, ..
        } => assert_eq!((scheduled, reason), (slot(1), SkipReason::QueueReplaced)),
        other => panic!("the waiting slot is dropped, got {other:?}"),
    }
    assert_eq!(runner.running("queue-replaced"), 2, "at most one waits");

    std::fs::write(dir.path().join("go"), "").expect("go");
    let mut seen = Vec::new();
    while seen.len() < 3 {
        match events.next().await {
            RunEvent::Started { scheduled, .. } => seen.push(("started", scheduled)),
            RunEvent::Finished(report) => seen.push(("finished", report.scheduled)),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(
        seen,
        [
            ("finished", slot(0)),
            ("started", slot(2)),
            ("finished", slot(2))
        ]
    );
    assert_eq!(ran(&dir), [rfc(slot(0)), rfc(slot(2))], "slot 1 never ran");
    assert_eq!(claimed(&ledger, "queue-replaced"), Some(slot(2)));
    let skipped: Vec<_> = logged("queue-replaced")
        .into_iter()
        .filter(|e| e["fields"]["message"] == "run skipped")
        .collect();
    assert_eq!(skipped.len(), 1, "{skipped:#?}");
    assert_eq!(skipped[0]["fields"]["reason"], "queue_replaced");
    assert_eq!(skipped[0]["fields"]["scheduled"], rfc(slot(1)));
    assert!(messages("queue-replaced")
        .iter()
        .any(|m| m == "queued slot replaced by a later fire: not starting it"));
}

#[tokio::test]
async fn a_term_that_ends_discards_the_waiting_slot_unclaimed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let job = queue_job("queue-term", &dir, "exec sleep 1000");
    let ledger = ledger();
    let (runner, mut events) = runner_over(Arc::clone(&ledger));
    let term = live_term();
    runner.start(job.clone(), slot(0), term.term());
    events.started().await;
    wait_for_file(&dir.path().join("order")).await;
    assert_eq!(
        runner.start(job.clone(), slot(1), term.term()),
        Start::Spawned
    );
    term.end().await;
    let mut ended = Vec::new();
    for _ in 0..2 {
        match events.next().await {
            RunEvent::Finished(report) => {
                ended.push((report.scheduled, format!("{}", report.outcome)))
            }
            RunEvent::Skipped {
                scheduled, reason, ..
            } => ended.push((scheduled, reason.as_str().to_owned())),
            other => panic!("unexpected {other:?}"),
        }
    }
    ended.sort();
    assert_eq!(
        ended,
        [
            (slot(0), "cancelled".to_owned()),
            (slot(1), "not_leader".to_owned())
        ]
    );
    assert_eq!(
        claimed(&ledger, "queue-term"),
        Some(slot(0)),
        "slot 1 was never claimed"
    );
    assert_eq!(ran(&dir), [rfc(slot(0))]);
    assert_eq!(runner.running("queue-term"), 0);
    assert!(messages("queue-term")
        .iter()
        .any(|m| m == "queued slot dropped: its term ended before it could start"));
}

#[tokio::test]
async fn a_queued_slot_the_run_state_already_records_does_not_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let job = queue_job("queue-claimed", &dir, WAIT_FOR_GO);
    let ledger = ledger();
    let (runner, mut events) = runner_over(Arc::clone(&ledger));
    let term = live_term();
    runner.start(job.clone(), slot(0), term.term());
    events.started().await;
    runner.start(job.clone(), slot(1), term.term());
    // While it waits, its slot is recorded as started (say, by a catch-up).
    let token = term.term().fencing_token();
    let claim = ledger
        .claim(
            "queue-claimed",
            slot(1),
            token,
            slot(1),
            &leasecron::run_state::Origin::SCHEDULE,
        )
        .await;
    assert_eq!(claim.expect("claims"), leasecron::run_state::Claim::Claimed);
    std::fs::write(dir.path().join("go"), "").expect("go");
    assert_eq!(events.finished().await.scheduled, slot(0));
    match events.next().await {
        RunEvent::Skipped {
            scheduled, reason, ..
        } => assert_eq!((scheduled, reason), (slot(1), SkipReason::AlreadyStarted)),
        other => panic!("the queued run claims its slot before it starts, got {other:?}"),
    }
    assert_eq!(ran(&dir), [rfc(slot(0))]);
}

// === retries ===

#[tokio::test]
async fn a_failing_run_is_retried_until_it_succeeds() {
    let dir = tempfile::tempdir().expect("tempdir");
    let script = r#"echo "$LEASECRON_ATTEMPT" >> attempts; [ "$(wc -l < attempts)" -ge 3 ]"#;
    let mut job = in_dir(shell_job("retries", script), &dir);
    job.retries = 5;
    let (runner, mut events) = runner();
    let term = live_term();
    runner.start(Arc::new(job), slot(0), term.term());
    let mut started = Vec::new();
    let report = loop {
        match events.next().await {
            RunEvent::Started { attempt, .. } => started.push(attempt),
            RunEvent::Finished(report) => break report,
            other => panic!("unexpected {other:?}"),
        }
    };
    assert_eq!(report.outcome, Outcome::Succeeded);
    assert_eq!(report.attempts, 3);
    assert_eq!(started, [1, 2, 3]);
    let attempts = std::fs::read_to_string(dir.path().join("attempts")).expect("attempts");
    assert_eq!(attempts, "1\n2\n3\n");
}

#[tokio::test]
async fn retries_stop_after_the_configured_count_with_the_last_outcome() {
    let mut job = shell_job("retries-exhausted", "exit 7");
    job.retries = 2;
    let report = run_once(job).await;
    assert_eq!(report.attempts, 3);
    assert_eq!(report.outcome, Outcome::Failed(Failure::ExitCode(7)));
}

#[tokio::test]
async fn a_timed_out_attempt_is_retried() {
    let dir = tempfile::tempdir().expect("tempdir");
    let script = r#"echo x >> attempts; [ "$(wc -l < attempts)" -ge 2 ] || exec sleep 1000"#;
    let mut job = in_dir(shell_job("retry-timeout", script), &dir);
    job.retries = 1;
    job.timeout = Some(Duration::from_millis(500));
    let report = run_once(job).await;
    assert_eq!(report.attempts, 2);
    assert_eq!(report.outcome, Outcome::Succeeded);
}

// === environment ===

#[tokio::test]
async fn the_environment_carries_contract_variables_job_env_and_replica_env() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut job = in_dir(shell_job("env", "env > env; pwd > pwd"), &dir);
    job.env.insert("JOB_VAR".into(), "from the job".into());
    let report = run_once(job).await;
    assert_eq!(report.outcome, Outcome::Succeeded);
    let env = std::fs::read_to_string(dir.path().join("env")).expect("env");
    let has = |line: &str| env.lines().any(|l| l == line);
    assert!(has("LEASECRON_JOB=env"));
    assert!(has("LEASECRON_SCHEDULED_TIME=2026-11-21T10:00:00Z"));
    assert!(has(&format!("LEASECRON_IDENTITY={IDENTITY}")));
    assert!(has(&format!("LEASECRON_FENCING_TOKEN={FENCING_TOKEN}")));
    assert!(has("LEASECRON_ATTEMPT=1"));
    assert!(has("JOB_VAR=from the job"));
    let path = std::env::var("PATH").expect("the test has a PATH");
    assert!(
        has(&format!("PATH={path}")),
        "the replica's environment is inherited"
    );
    let pwd = std::fs::read_to_string(dir.path().join("pwd")).expect("pwd");
    let expected = dir.path().canonicalize().expect("canonical");
    assert_eq!(pwd.trim(), expected.to_string_lossy());
}

#[tokio::test]
async fn stdin_is_empty() {
    let dir = tempfile::tempdir().expect("tempdir");
    let job = in_dir(shell_job("stdin", "cat > stdin"), &dir);
    let report = run_once(job).await;
    assert_eq!(report.outcome, Outcome::Succeeded);
    let stdin = std::fs::read(dir.path().join("stdin")).expect("stdin");
    assert!(stdin.is_empty());
}

// === output ===

#[tokio::test]
async fn output_is_streamed_line_by_line_with_long_lines_split_and_bad_utf8_replaced() {
    let long = 2 * MAX_LINE_BYTES + 100;
    let script = format!(
        "head -c {long} /dev/zero | tr '\\0' a; echo; printf 'bad \\377\\376 bytes\\n'; echo oops >&2; echo after"
    );
    let report = run_once(shell_job("output", &script)).await;
    assert_eq!(report.outcome, Outcome::Succeeded);
    let stdout = output_lines("output", "stdout");
    let pieces: Vec<_> = stdout.iter().take(3).collect();
    assert!(pieces.iter().all(|(text, _)| text.len() <= MAX_LINE_BYTES));
    assert_eq!(
        pieces
            .iter()
            .map(|(_, partial)| *partial)
            .collect::<Vec<_>>(),
        [true, true, false]
    );
    let joined: String = pieces.iter().map(|(text, _)| text.as_str()).collect();
    assert_eq!(joined, "a".repeat(long));
    let rest: Vec<_> = stdout[3..].iter().map(|(text, _)| text.as_str()).collect();
    assert_eq!(rest, ["bad \u{FFFD}\u{FFFD} bytes", "after"]);
    let stderr = logged("output")
        .into_iter()
        .filter(|e| e["fields"]["stream"] == "stderr")
        .collect::<Vec<_>>();
    assert_eq!(stderr.len(), 1);
    assert_eq!(
        stderr[0]["level"], "INFO",
        "a job's stderr is not a warning of ours"
    );
    assert_eq!(stderr[0]["fields"]["message"], "oops");
}

#[tokio::test]
async fn the_run_is_logged_once_when_it_finishes() {
    run_once(shell_job("logged-once", "exit 3")).await;
    let finished: Vec<_> = logged("logged-once")
        .into_iter()
        .filter(|e| e["fields"]["message"] == "run finished")
        .collect();
    assert_eq!(finished.len(), 1);
    assert_eq!(finished[0]["fields"]["outcome"], "failed");
    assert_eq!(finished[0]["fields"]["attempts"], 1);
}

// === shutdown ===

#[tokio::test]
async fn kill_all_kills_at_once_without_grace() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut job = in_dir(
        shell_job("kill-all", "trap '' TERM; echo $$ > pid; exec sleep 1000"),
        &dir,
    );
    job.termination_grace = Duration::from_secs(3600);
    job.retries = 3;
    let (runner, mut events) = runner();
    let term = live_term();
    runner.start(Arc::new(job), slot(0), term.term());
    let pid = events.started().await;
    wait_for_file(&dir.path().join("pid")).await;
    runner.kill_all();
    let report = events.finished().await;
    assert_eq!(report.outcome, Outcome::Cancelled);
    assert_eq!(report.attempts, 1);
    assert!(process_is_gone(i32::try_from(pid).expect("pid")));
    let after = runner.start(
        Arc::new(shell_job("after-kill-all", "exit 0")),
        slot(1),
        term.term(),
    );
    assert_eq!(after, Start::Spawned);
    let report = events.finished().await;
    assert_eq!(
        (report.attempts, report.outcome),
        (0, Outcome::Cancelled),
        "nothing is spawned after kill_all"
    );
}

// === crash safety ===

/// Set in the runner process of [`a_run_dies_with_its_runner_process`]: where it writes its run's pid.
const CRASHED_RUNNER_ENV: &str = "LEASECRON_TEST_CRASHED_RUNNER_PID_FILE";

/// PR_SET_PDEATHSIG: a run dies when the process that runs it dies without ending its term (a crash). The
/// runner is this test binary, run again for this one test: it starts a run, writes the run's pid, and
/// waits to be killed.
#[tokio::test]
async fn a_run_dies_with_its_runner_process() {
    if let Some(pid_file) = std::env::var_os(CRASHED_RUNNER_ENV) {
        let (runner, mut events) = runner();
        let term = live_term();
        let job = shell_job("orphaned", "exec sleep 1000");
        runner.start(Arc::new(job), slot(0), term.term());
        let pid = events.started().await;
        std::fs::write(pid_file, pid.to_string()).expect("write the pid");
        std::future::pending::<()>().await;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let pid_file = dir.path().join("pid");
    // The name the harness knows this test by: its module path without the crate's name.
    let name = concat!(module_path!(), "::a_run_dies_with_its_runner_process");
    let name = name.split_once("::").map_or(name, |(_, name)| name);
    let mut crashing = std::process::Command::new(std::env::current_exe().expect("test binary"))
        .args([name, "--exact", "--test-threads=1"])
        .env(CRASHED_RUNNER_ENV, &pid_file)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start the runner process");
    let read_pid = async {
        loop {
            if let Some(pid) = std::fs::read_to_string(&pid_file)
                .ok()
                .and_then(|text| text.trim().parse::<i32>().ok())
            {
                return pid;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let pid = tokio::time::timeout(TEST_TIMEOUT, read_pid)
        .await
        .expect("the runner process started a run");
    crashing.kill().expect("SIGKILL the runner process");
    crashing.wait().expect("reap the runner process");
    assert!(
        wait_until_gone(pid).await,
        "process {pid} outlived its runner process"
    );
}
