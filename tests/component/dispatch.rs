//! The dispatcher's rule: a fire starts a run only under a live term of this replica.

use crate::support::runner_fixtures as fixtures;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DurationRound, TimeDelta, Utc};
use fixtures::{ledger, live_term, runner_over, shell_job, slot, Events, TEST_TIMEOUT};
use leasecron::clock::{SharedClock, SystemClock};
use leasecron::config::{self, LoadOptions};
use leasecron::dispatch::Dispatcher;
use leasecron::event::{Outcome, RunEvent};
use leasecron::term::{FencingToken, Leadership, Term};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

fn dispatcher(leadership: Leadership) -> (Dispatcher, Events, watch::Sender<Leadership>) {
    let ledger = ledger();
    let (runner, events) = runner_over(Arc::clone(&ledger));
    let (tx, rx) = watch::channel(leadership);
    let clock: SharedClock = Arc::new(SystemClock);
    (Dispatcher::new(runner, rx, clock, ledger), events, tx)
}

/// Gives a started run time to report; a fire that starts nothing reports nothing.
async fn nothing_reported(events: &mut Events) -> bool {
    tokio::time::sleep(Duration::from_millis(300)).await;
    !events.has_pending()
}

#[tokio::test]
async fn a_fire_under_a_live_term_starts_a_run() {
    let term = live_term();
    let (dispatcher, mut events, _tx) = dispatcher(Leadership::Leader {
        term: term.term().clone(),
    });
    dispatcher.fire(&Arc::new(shell_job("now", "exit 0")), slot(1));
    let report = events.finished().await;
    assert_eq!(report.outcome, Outcome::Succeeded);
    assert_eq!(report.scheduled, slot(1));
}

#[tokio::test]
async fn a_follower_starts_nothing() {
    let (dispatcher, mut events, _tx) = dispatcher(Leadership::Follower {
        holder: Some("someone-else".into()),
    });
    dispatcher.fire(&Arc::new(shell_job("not-mine", "exit 0")), slot(2));
    assert!(nothing_reported(&mut events).await);
}

#[tokio::test]
async fn a_term_past_its_deadline_starts_nothing() {
    // The elector has not ended it yet (e.g. this process was frozen), but its deadline has passed.
    let handle = Term::begin(FencingToken(3), Utc::now(), Instant::now());
    let (dispatcher, mut events, _tx) = dispatcher(Leadership::Leader {
        term: handle.term().clone(),
    });
    dispatcher.fire(&Arc::new(shell_job("late", "exit 0")), slot(3));
    assert!(nothing_reported(&mut events).await);
}

#[tokio::test]
async fn an_ended_term_starts_nothing() {
    let handle = live_term();
    let term = handle.term().clone();
    handle.end().await;
    let (dispatcher, mut events, _tx) = dispatcher(Leadership::Leader { term });
    dispatcher.fire(&Arc::new(shell_job("over", "exit 0")), slot(4));
    assert!(nothing_reported(&mut events).await);
}

#[tokio::test]
async fn a_suspended_job_starts_nothing_even_when_leading() {
    let term = live_term();
    let (dispatcher, mut events, _tx) = dispatcher(Leadership::Leader {
        term: term.term().clone(),
    });
    let mut job = shell_job("paused", "exit 0");
    job.suspend = true;
    dispatcher.fire(&Arc::new(job), slot(5));
    assert!(nothing_reported(&mut events).await);
}

#[tokio::test]
async fn runs_follow_the_schedule_and_stop_when_leadership_moves() {
    let jobs = config::parse_str(
        "jobs:\n  - name: every-second\n    schedule: \"* * * * * *\"\n    command: [\"/bin/true\"]\n",
        "test",
        &LoadOptions::default(),
    )
    .expect("valid");
    let term = live_term();
    let (dispatcher, mut events, leadership) = dispatcher(Leadership::Leader {
        term: term.term().clone(),
    });
    let stop = CancellationToken::new();
    let timers = tokio::spawn({
        let stop = stop.clone();
        async move { dispatcher.run(watch::channel(Arc::new(jobs)).1, stop).await }
    });

    let mut slots = Vec::new();
    while slots.len() < 3 {
        let report = tokio::time::timeout(TEST_TIMEOUT, events.finished())
            .await
            .expect("runs keep coming");
        assert_eq!(report.outcome, Outcome::Succeeded);
        slots.push(report.scheduled);
    }
    for slot in &slots {
        assert_eq!(
            *slot,
            slot.duration_trunc(TimeDelta::seconds(1)).unwrap(),
            "slots are whole seconds: {slots:?}"
        );
    }
    for pair in slots.windows(2) {
        assert!(pair[0] < pair[1], "each slot once, in order: {slots:?}");
    }

    leadership.send_replace(Leadership::Follower { holder: None });
    // Drain what may have started before the change, then nothing more.
    tokio::time::sleep(Duration::from_millis(200)).await;
    while events.has_pending() {
        if let RunEvent::Started { .. } = events.next().await {
            let _ = events.finished().await;
        }
    }
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(!events.has_pending(), "a follower starts nothing");
    stop.cancel();
    timers.await.expect("timers stop when told");
}
