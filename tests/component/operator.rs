//! The leader's side of the operator controls: triggers, backfills, suspensions and resumptions carried
//! out once, across terms of different replicas sharing one run state (two ledgers over one store).

use crate::support::runner_fixtures as fixtures;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use fixtures::{runner_over, shell_job, Events, IDENTITY, TEST_TIMEOUT};
use leasecron::clock::{SharedClock, SystemClock};
use leasecron::config::{ConcurrencyPolicy, Job, JobSet};
use leasecron::controls::{Controls, Request, Suspension};
use leasecron::dispatch::Dispatcher;
use leasecron::event::{DispatchEvent, Outcome};
use leasecron::operator::Operator;
use leasecron::run_state::memory::MemoryStore;
use leasecron::run_state::{Cause, Ledger, RequestKind, RequestState, StateRecord, TermStart};
use leasecron::runner::Runner;
use leasecron::schedule::Schedule;
use leasecron::term::{FencingToken, Leadership, Term, TermHandle};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

/// One replica: its ledger over the shared store, its runner, its operator.
struct Replica {
    ledger: Arc<Ledger>,
    runner: Arc<Runner>,
    operator: Arc<Operator>,
    runs: Events,
    requests: mpsc::UnboundedReceiver<DispatchEvent>,
}

fn replica(store: &MemoryStore) -> Replica {
    let ledger = Arc::new(Ledger::new(store.clone(), IDENTITY.to_owned()));
    let (runner, runs) = runner_over(Arc::clone(&ledger));
    let clock: SharedClock = Arc::new(SystemClock);
    let (tx, requests) = mpsc::unbounded_channel();
    let operator = Arc::new(
        Operator::new(
            Arc::clone(&runner),
            Arc::clone(&ledger),
            clock,
            IDENTITY.to_owned(),
        )
        .with_events(tx),
    );
    Replica {
        ledger,
        runner,
        operator,
        runs,
        requests,
    }
}

/// A term with `token`, begun in the run state as the dispatcher begins one.
async fn term(replica: &Replica, token: u64) -> TermHandle {
    let handle = Term::begin(
        FencingToken(token),
        Utc::now(),
        Instant::now() + Duration::from_secs(3600),
    );
    assert!(matches!(
        replica.ledger.begin_term(FencingToken(token)).await,
        Ok(TermStart::Begun(_))
    ));
    handle
}

fn jobs(list: Vec<Job>) -> JobSet {
    JobSet {
        jobs: list.into_iter().map(Arc::new).collect(),
    }
}

fn request(id: &str, kind: RequestKind, job: &str) -> Request {
    Request {
        id: id.to_owned(),
        kind,
        job: job.to_owned(),
        by: "alice".to_owned(),
        requested_at: Utc::now(),
        from: None,
        to: None,
        note: None,
    }
}

fn controls(requests: Vec<Request>) -> Controls {
    Controls {
        format: 1,
        requests,
        ..Controls::default()
    }
}

/// Waits until the run state says request `id` is no longer running; returns the record.
async fn settled(ledger: &Ledger, id: &str) -> StateRecord {
    let wait = async {
        loop {
            let record = ledger.snapshot();
            if record
                .requests
                .get(id)
                .is_some_and(|ack| ack.state != RequestState::Running)
            {
                return record;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(TEST_TIMEOUT, wait)
        .await
        .expect("the request settles")
}

/// Every 10 seconds, from a fixed past minute.
fn every_ten_seconds(name: &str, script: &str) -> Job {
    let mut job = shell_job(name, script);
    job.schedule = Schedule::parse("*/10 * * * * *", chrono_tz::UTC).expect("valid");
    job
}

fn at(minute: u32, second: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 21, 9, minute, second)
        .single()
        .expect("valid")
}

#[tokio::test]
async fn a_trigger_runs_once_whoever_leads_and_its_outcome_is_acknowledged() {
    let store = MemoryStore::new();
    let mut a = replica(&store);
    let term_a = term(&a, 1).await;
    let set = jobs(vec![shell_job("report", "exit 3")]);
    let document = controls(vec![request("t1", RequestKind::Trigger, "report")]);
    // The same version twice (a watch event and a term's start): one run.
    a.operator.carry_out(&document, &set, term_a.term());
    a.operator.carry_out(&document, &set, term_a.term());
    let report = a.runs.finished().await;
    assert_eq!(report.outcome.as_str(), "failed");
    let record = settled(&a.ledger, "t1").await;
    let ack = &record.requests["t1"];
    assert_eq!(
        (ack.state, ack.outcome.as_deref(), ack.fencing_token),
        (RequestState::Done, Some("failed"), 1)
    );
    let history = &record.jobs["report"].history;
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].cause, Cause::Trigger);
    assert_eq!(history[0].request.as_deref(), Some("t1"));
    assert_eq!(history[0].exit_code, Some(3));
    // The schedule is untouched: a trigger runs beside it.
    assert!(record.jobs["report"].last_started.is_none());
    match a.requests.recv().await {
        Some(DispatchEvent::Request { id, state, .. }) => {
            assert_eq!((id.as_str(), state), ("t1", RequestState::Done));
        }
        other => panic!("expected the request's report, got {other:?}"),
    }
    term_a.end().await;

    // The next leader (another replica, a newer term) finds it acknowledged: nothing runs.
    let mut b = replica(&store);
    let term_b = term(&b, 2).await;
    b.operator.carry_out(&document, &set, term_b.term());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!b.runs.has_pending(), "the trigger ran again");
    assert!(b.requests.try_recv().is_err());
}

#[tokio::test]
async fn a_trigger_while_a_forbid_run_is_in_flight_is_refused_with_the_reason() {
    let store = MemoryStore::new();
    let mut a = replica(&store);
    let term_a = term(&a, 1).await;
    let job = Arc::new(shell_job("slow", "sleep 5"));
    assert_eq!(job.concurrency_policy, ConcurrencyPolicy::Forbid);
    let _ = a
        .runner
        .start(Arc::clone(&job), fixtures::slot(1), term_a.term());
    a.runs.started().await;
    let set = JobSet {
        jobs: vec![Arc::clone(&job)],
    };
    let document = controls(vec![request("t2", RequestKind::Trigger, "slow")]);
    a.operator.carry_out(&document, &set, term_a.term());
    let record = settled(&a.ledger, "t2").await;
    let ack = &record.requests["t2"];
    assert_eq!(ack.state, RequestState::Refused);
    assert_eq!(
        ack.detail.as_deref(),
        Some("skipped: a run of slow is in flight and its concurrencyPolicy is Forbid")
    );
    assert_eq!(a.runner.running("slow"), 1, "only the scheduled run");
    term_a.end().await;
}

#[tokio::test]
async fn a_request_for_an_unknown_job_or_an_expired_one_is_refused_and_never_run() {
    let store = MemoryStore::new();
    let a = replica(&store);
    let term_a = term(&a, 1).await;
    let set = jobs(vec![shell_job("known", "exit 0")]);
    let mut old = request("old", RequestKind::Trigger, "known");
    old.requested_at = Utc::now() - chrono::Duration::hours(2);
    let document = controls(vec![request("typo", RequestKind::Trigger, "knwon"), old]);
    a.operator.carry_out(&document, &set, term_a.term());
    let record = settled(&a.ledger, "typo").await;
    assert_eq!(
        record.requests["typo"].detail.as_deref(),
        Some("refused: there is no job knwon in the jobs in force")
    );
    let record = settled(&a.ledger, "old").await;
    let detail = record.requests["old"].detail.clone().unwrap_or_default();
    assert!(detail.starts_with("expired: filed at "), "{detail}");
    assert!(!record.jobs.contains_key("known"), "nothing ran");
    term_a.end().await;
}

#[tokio::test]
async fn a_backfill_runs_its_slots_oldest_first_once_each_and_skips_one_already_started() {
    let store = MemoryStore::new();
    let mut a = replica(&store);
    let term_a = term(&a, 1).await;
    let job = every_ten_seconds("nightly", "exit 0");
    // The slot at :20 ran on schedule.
    let _ = a
        .runner
        .start(Arc::new(job.clone()), at(0, 20), term_a.term());
    a.runs.finished().await;
    let set = jobs(vec![job]);
    let mut backfill = request("b1", RequestKind::Backfill, "nightly");
    (backfill.from, backfill.to) = (Some(at(0, 0)), Some(at(0, 40)));
    a.operator
        .carry_out(&controls(vec![backfill]), &set, term_a.term());
    let record = settled(&a.ledger, "b1").await;
    let ack = &record.requests["b1"];
    assert_eq!(
        (ack.state, ack.started, ack.skipped, ack.failed),
        (RequestState::Done, 4, 1, 0)
    );
    let backfilled: Vec<DateTime<Utc>> = record.jobs["nightly"]
        .history
        .iter()
        .filter(|entry| entry.cause == Cause::Backfill)
        .map(|entry| entry.slot)
        .collect();
    assert_eq!(backfilled, [at(0, 0), at(0, 10), at(0, 30), at(0, 40)]);
    // The schedule's own record is untouched by the backfill.
    assert_eq!(
        record.jobs["nightly"].last_started.as_ref().map(|s| s.slot),
        Some(at(0, 20))
    );
    term_a.end().await;
}

#[tokio::test]
async fn a_backfill_interrupted_by_a_failover_finishes_on_the_next_leader_without_running_a_slot_twice(
) {
    let store = MemoryStore::new();
    let mut a = replica(&store);
    let term_a = term(&a, 1).await;
    let set = jobs(vec![every_ten_seconds("slow-fill", "sleep 0.3")]);
    let mut backfill = request("b2", RequestKind::Backfill, "slow-fill");
    (backfill.from, backfill.to) = (Some(at(1, 0)), Some(at(1, 50)));
    let document = controls(vec![backfill]);
    a.operator.carry_out(&document, &set, term_a.term());
    // Two slots finish, the third is cut off by the end of the term.
    a.runs.finished().await;
    a.runs.finished().await;
    a.runs.started().await;
    term_a.end().await;
    let interrupted = a.ledger.snapshot().requests["b2"].clone();
    assert_eq!(interrupted.state, RequestState::Running);
    assert_eq!(interrupted.started, 3);

    let b = replica(&store);
    let term_b = term(&b, 2).await;
    b.operator.carry_out(&document, &set, term_b.term());
    let record = settled(&b.ledger, "b2").await;
    let ack = &record.requests["b2"];
    assert_eq!((ack.state, ack.started), (RequestState::Done, 6));
    let mut slots: Vec<(DateTime<Utc>, u64)> = record.jobs["slow-fill"]
        .history
        .iter()
        .map(|entry| (entry.slot, entry.fencing_token))
        .collect();
    slots.sort();
    let expected: Vec<(DateTime<Utc>, u64)> = (0..6)
        .map(|i| (at(1, i * 10), if i < 3 { 1 } else { 2 }))
        .collect();
    assert_eq!(slots, expected, "each slot once, the rest by the next term");
    term_b.end().await;
}

#[tokio::test]
async fn an_operators_suspension_holds_on_every_leader_until_resumed() {
    let store = MemoryStore::new();
    let a = replica(&store);
    let term_a = term(&a, 1).await;
    let mut document = controls(Vec::new());
    document.suspended.insert(
        "paused".to_owned(),
        Suspension {
            note: Some("db migration".to_owned()),
            by: "alice".to_owned(),
            at: Utc::now(),
            request: "s1".to_owned(),
        },
    );
    let (controls_tx, controls_rx) = watch::channel(Arc::new(document));
    let (_leadership_tx, leadership) = watch::channel(Leadership::Leader {
        term: term_a.term().clone(),
    });
    let clock: SharedClock = Arc::new(SystemClock);
    let (runner, mut runs) = runner_over(Arc::clone(&a.ledger));
    let dispatcher = Dispatcher::new(runner, leadership, clock, Arc::clone(&a.ledger))
        .with_controls(controls_rx, Arc::clone(&a.operator));
    let set = Arc::new(jobs(vec![shell_job("paused", "exit 0")]));
    let stop = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn({
        let (dispatcher, stop, set) = (dispatcher.clone(), stop.clone(), Arc::clone(&set));
        async move { dispatcher.run(watch::channel(set).1, stop).await }
    });
    // The document is applied as the dispatcher starts.
    tokio::time::sleep(Duration::from_millis(100)).await;
    dispatcher.fire(&set.jobs[0], fixtures::slot(7));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!runs.has_pending(), "a suspended job ran");
    // Resumed: the next fire runs.
    controls_tx.send_replace(Arc::new(controls(Vec::new())));
    tokio::time::sleep(Duration::from_millis(100)).await;
    dispatcher.fire(&set.jobs[0], fixtures::slot(8));
    assert_eq!(runs.finished().await.outcome, Outcome::Succeeded);
    stop.cancel();
    let _ = task.await;
    term_a.end().await;
}
