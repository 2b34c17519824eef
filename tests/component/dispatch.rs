//! The dispatcher's rule: a fire starts a run only under a live term of this replica.

use crate::support::runner_fixtures as fixtures;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use fixtures::{ledger, live_term, runner_over, shell_job, slot, Events, TEST_TIMEOUT};
use leasecron::clock::{PausedClock, SharedClock, SystemClock, WallClock};
use leasecron::config::{self, LoadOptions};
use leasecron::dispatch::Dispatcher;
use leasecron::event::{DispatchEvent, Outcome, RunEvent, SkipReason};
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

// === jitter ===

fn utc(s: &str) -> DateTime<Utc> {
    s.parse().expect("RFC 3339 test time")
}

#[tokio::test(start_paused = true)]
async fn a_jittered_job_fires_at_its_slot_plus_its_offset_for_the_nominal_slot() {
    // Suspended, so that a fire reports a skip at the instant it fires and starts no process.
    let jobs = config::parse_str(
        "jobs:\n  - name: jittered\n    schedule: \"*/10 * * * * *\"\n    jitter: 9s\n    suspend: true\n    command: [/bin/true]\n",
        "test",
        &LoadOptions::default(),
    )
    .expect("valid");
    let offset = jobs.jobs[0].jitter_offset();
    assert_eq!(
        offset,
        config::jitter_offset("jittered", Duration::from_secs(9))
    );
    assert!(
        offset > Duration::from_secs(1),
        "an offset worth measuring: {offset:?}"
    );
    let offset = TimeDelta::from_std(offset).expect("small");
    let clock = Arc::new(PausedClock::starting_at(utc("2026-11-21T10:00:00.500Z")));
    let ledger = ledger();
    let (runner, _runs) = runner_over(Arc::clone(&ledger));
    let (_leadership, rx) = watch::channel(Leadership::Follower { holder: None });
    let shared: SharedClock = clock.clone();
    let (tx, mut events) = tokio::sync::mpsc::unbounded_channel();
    let dispatcher = Dispatcher::new(runner, rx, shared, ledger).with_events(tx);
    let stop = CancellationToken::new();
    let timers = tokio::spawn({
        let stop = stop.clone();
        async move { dispatcher.run(watch::channel(Arc::new(jobs)).1, stop).await }
    });
    let mut fired = Vec::new();
    let mut next_runs = Vec::new();
    while fired.len() < 3 {
        match events.recv().await.expect("the dispatcher reports") {
            DispatchEvent::Skipped {
                scheduled, reason, ..
            } => {
                assert_eq!(reason, SkipReason::Suspended);
                fired.push((scheduled, clock.now()));
            }
            DispatchEvent::NextRun { at, .. } => next_runs.push(at.expect("a next slot")),
            _ => {}
        }
    }
    for (i, (scheduled, at)) in fired.iter().enumerate() {
        // 10:00:00 fires 5.6 s after the timer starts at 10:00:00.5: it is the first.
        let slot = utc("2026-11-21T10:00:00Z") + TimeDelta::seconds(10 * i as i64);
        assert_eq!(*scheduled, slot, "the nominal slot");
        assert!(
            *at >= slot + offset,
            "fire {i} at {at}, before {slot} + {offset}"
        );
        assert!(
            *at - (slot + offset) <= TimeDelta::milliseconds(5),
            "fire {i} at {at}, after {slot} + {offset}"
        );
    }
    assert_eq!(
        next_runs[..3],
        [
            utc("2026-11-21T10:00:00Z"),
            utc("2026-11-21T10:00:10Z"),
            utc("2026-11-21T10:00:20Z")
        ],
        "the next run it reports is the nominal slot"
    );
    stop.cancel();
    timers.await.expect("timers stop when told");
}

#[tokio::test]
async fn a_jittered_run_starts_after_its_offset_and_sees_its_nominal_slot() {
    let dir = tempfile::tempdir().expect("tempdir");
    let yaml = format!(
        "jobs:\n  - name: spread-out\n    schedule: \"* * * * * *\"\n    jitter: 900ms\n    workingDir: {}\n    shell: 'echo \"$LEASECRON_SCHEDULED_TIME\" >> slots'\n",
        dir.path().display()
    );
    let jobs = config::parse_str(&yaml, "test", &LoadOptions::default()).expect("valid");
    let offset = jobs.jobs[0].jitter_offset();
    assert_eq!(offset, Duration::from_millis(837), "pinned by the name");
    let term = live_term();
    let (dispatcher, mut events, _tx) = dispatcher(Leadership::Leader {
        term: term.term().clone(),
    });
    let stop = CancellationToken::new();
    let timers = tokio::spawn({
        let stop = stop.clone();
        async move { dispatcher.run(watch::channel(Arc::new(jobs)).1, stop).await }
    });
    let report = tokio::time::timeout(TEST_TIMEOUT, events.finished())
        .await
        .expect("a run");
    stop.cancel();
    timers.await.expect("timers stop when told");
    assert_eq!(report.outcome, Outcome::Succeeded);
    let slot = report.scheduled;
    assert_eq!(
        slot,
        slot.duration_trunc(TimeDelta::seconds(1)).unwrap(),
        "a whole second"
    );
    let fires_at = slot + TimeDelta::from_std(offset).expect("small");
    assert!(
        report.started_at >= fires_at,
        "started {} before its fire time {fires_at}",
        report.started_at
    );
    assert_eq!(
        report.start_delay,
        (report.started_at - fires_at).to_std().expect("after"),
        "the start delay counts from the fire time"
    );
    let written = std::fs::read_to_string(dir.path().join("slots")).expect("the run wrote");
    assert_eq!(
        written.lines().next(),
        Some(
            slot.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
                .as_str()
        ),
        "LEASECRON_SCHEDULED_TIME is the nominal slot"
    );
    let finished: Vec<_> = fixtures::logged("spread-out")
        .into_iter()
        .filter(|e| e["fields"]["message"] == "run finished")
        .collect();
    assert_eq!(finished[0]["fields"]["jitter_seconds"], 0.837);
    assert_eq!(
        finished[0]["fields"]["fires_at"],
        fires_at.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
    );
}
