//! The dispatcher's rule: a fire starts a run only under a live term of this replica.

use crate::support::runner_fixtures as fixtures;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use fixtures::{ledger, live_term, runner_over, shell_job, slot, Events, TEST_TIMEOUT};
use leasecron::clock::{PausedClock, SharedClock, SystemClock, WallClock};
use leasecron::config::{self, JobSet, LoadOptions};
use leasecron::dispatch::Dispatcher;
use leasecron::event::{DispatchEvent, Outcome, RunEvent, SkipReason};
use leasecron::run_state::memory::MemoryStore;
use leasecron::run_state::{
    Ledger, Loaded, Saved, StateRecord, Store, StoreFuture, TermStart, MAX_CLAIM_LEAD,
};
use leasecron::runner::Runner;
use leasecron::term::{FencingToken, Leadership, Term, TermHandle};
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

// === claims ahead of the slot (runner::ahead) ===

/// A run state whose every write takes `delay` on tokio's clock, and that logs each write: when it began
/// and ended, and the record it wrote.
#[derive(Debug, Clone)]
struct SlowStore {
    inner: MemoryStore,
    delay: Duration,
    saves: Arc<std::sync::Mutex<Vec<Save>>>,
    saved: Arc<watch::Sender<usize>>,
}

#[derive(Debug, Clone)]
struct Save {
    began: Instant,
    ended: Instant,
    record: StateRecord,
}

impl SlowStore {
    fn new(delay: Duration) -> SlowStore {
        SlowStore {
            inner: MemoryStore::new(),
            delay,
            saves: Arc::default(),
            saved: Arc::new(watch::channel(0).0),
        }
    }

    fn saves(&self) -> Vec<Save> {
        self.saves.lock().expect("not poisoned").clone()
    }

    /// Waits for the first write whose record `wanted` accepts.
    async fn written(&self, wanted: impl Fn(&StateRecord) -> bool) -> Save {
        let mut saved = self.saved.subscribe();
        loop {
            if let Some(save) = self.saves().into_iter().find(|s| wanted(&s.record)) {
                return save;
            }
            tokio::time::timeout(TEST_TIMEOUT, saved.changed())
                .await
                .expect("a write within the bound")
                .expect("the store lives");
        }
    }
}

impl Store for SlowStore {
    fn describe(&self) -> String {
        "slow memory".to_owned()
    }

    fn load(&self) -> StoreFuture<'_, Loaded> {
        self.inner.load()
    }

    fn save<'a>(
        &'a self,
        record: &'a StateRecord,
        version: Option<&'a str>,
    ) -> StoreFuture<'a, Saved> {
        Box::pin(async move {
            let began = Instant::now();
            tokio::time::sleep(self.delay).await;
            let saved = self.inner.save(record, version).await;
            self.saves.lock().expect("not poisoned").push(Save {
                began,
                ended: Instant::now(),
                record: record.clone(),
            });
            self.saved.send_modify(|n| *n += 1);
            saved
        })
    }
}

const WRITE_DELAY: Duration = Duration::from_millis(40);

/// A dispatcher on a paused clock at 10:00:00.300 whose run state writes take [`WRITE_DELAY`], leading
/// under `term`, with one every-second job.
fn slow_dispatcher(
    term: &Term,
) -> (
    SlowStore,
    Arc<Ledger>,
    Dispatcher,
    fixtures::Events,
    watch::Sender<Leadership>,
) {
    let store = SlowStore::new(WRITE_DELAY);
    let ledger = Arc::new(Ledger::new(store.clone(), fixtures::IDENTITY.to_owned()));
    let clock: SharedClock = Arc::new(PausedClock::starting_at(utc("2026-11-21T10:00:00.300Z")));
    fixtures::capture_logs();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let runner = Runner::new(
        fixtures::IDENTITY.to_owned(),
        Arc::clone(&clock),
        Some(tx),
        Arc::clone(&ledger),
    );
    let (leadership, follower) = watch::channel(Leadership::Leader { term: term.clone() });
    let dispatcher = Dispatcher::new(runner, follower, clock, Arc::clone(&ledger));
    (
        store,
        ledger,
        dispatcher,
        fixtures::Events::from(rx),
        leadership,
    )
}

/// A term of `token` that stays live for an hour.
fn hour_long_term(token: u64) -> TermHandle {
    Term::begin(
        FencingToken(token),
        Utc::now(),
        Instant::now() + Duration::from_secs(3600),
    )
}

/// Stamps the run state with `token`, as a term's start does: a timed write, from which the lead is
/// derived.
async fn stamp(ledger: &Ledger, token: u64) {
    assert!(matches!(
        ledger
            .begin_term(FencingToken(token))
            .await
            .expect("writes"),
        TermStart::Begun(_)
    ));
}

fn every_second(name: &str) -> Arc<JobSet> {
    let yaml = format!(
        "jobs:\n  - name: {name}\n    schedule: \"* * * * * *\"\n    command: [/bin/true]\n"
    );
    Arc::new(config::parse_str(&yaml, "test", &LoadOptions::default()).expect("valid"))
}

fn started_slot(record: &StateRecord, job: &str) -> Option<(DateTime<Utc>, u64)> {
    record
        .jobs
        .get(job)
        .and_then(|r| r.last_started.as_ref())
        .map(|s| (s.slot, s.fencing_token))
}

#[tokio::test(start_paused = true)]
async fn a_durable_run_state_claims_each_slot_before_it_is_due_and_the_run_starts_on_time() {
    let handle = hour_long_term(5);
    let (store, ledger, dispatcher, mut events, _leadership) = slow_dispatcher(handle.term());
    let started = Instant::now();
    // The stamp of the term: a timed write, from which the lead is derived.
    stamp(&ledger, 5).await;
    let lead = ledger.claim_lead().expect("a slow store claims ahead");
    assert!(
        lead >= WRITE_DELAY * 2 && lead <= MAX_CLAIM_LEAD,
        "twice the write time and a little: {lead:?}"
    );
    let stop = CancellationToken::new();
    let timers = tokio::spawn({
        let stop = stop.clone();
        async move {
            dispatcher
                .run(watch::channel(every_second("ahead")).1, stop)
                .await
        }
    });
    // One slot: under paused time tokio leaps ahead while a real process runs, so later slots may be
    // handed out late (a stall), and claimed when due.
    let reports = [events.finished().await];
    stop.cancel();
    timers.await.expect("timers stop when told");
    for report in &reports {
        assert_eq!(report.outcome, Outcome::Succeeded);
        let slot = report.scheduled;
        // The slot's tokio instant: the clock started at 10:00:00.300 when `started` was taken.
        let due = started
            + (slot - utc("2026-11-21T10:00:00.300Z"))
                .to_std()
                .expect("after the start");
        let claim = store
            .written(|record| started_slot(record, "ahead") == Some((slot, 5)))
            .await;
        assert!(
            claim.ended <= due,
            "the claim of {slot} was written {:?} after the slot",
            claim.ended - due
        );
        assert!(
            claim.began >= due - MAX_CLAIM_LEAD,
            "the claim of {slot} began {:?} before the slot",
            due - claim.began
        );
        let entry = &claim.record.jobs["ahead"]
            .history
            .last()
            .expect("in the history")
            .clone();
        assert_eq!(
            (entry.slot, entry.started_at),
            (slot, slot),
            "the history keeps the fire time as the start"
        );
        let claims = store
            .saves()
            .iter()
            .filter(|save| {
                save.record.jobs.get("ahead").is_some_and(|r| {
                    r.history.iter().filter(|e| e.slot == slot).count() == 1
                        && r.history.last().is_some_and(|e| e.slot == slot)
                        && r.last_started.as_ref().is_some_and(|s| s.slot == slot)
                        && r.last_completion.as_ref().is_none_or(|c| c.slot < slot)
                })
            })
            .count();
        assert_eq!(
            claims, 1,
            "one write claimed {slot}, ahead; the run wrote no claim of its own"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_slot_claimed_ahead_is_released_when_its_term_ends_first_and_the_next_term_runs_it() {
    let first = hour_long_term(5);
    let (store, ledger, dispatcher, mut events, leadership) = slow_dispatcher(first.term());
    stamp(&ledger, 5).await;
    let stop = CancellationToken::new();
    let timers = tokio::spawn({
        let stop = stop.clone();
        async move {
            dispatcher
                .run(watch::channel(every_second("handed-over")).1, stop)
                .await
        }
    });
    // 10:00:01 is claimed ahead, before it is due.
    let slot = utc("2026-11-21T10:00:01Z");
    let claim = store
        .written(|record| started_slot(record, "handed-over") == Some((slot, 5)))
        .await;
    let history = &claim.record.jobs["handed-over"].history;
    assert_eq!(history.len(), 1, "the claimed run is in the history");

    // The term ends in order (a shutdown) before the slot is due: the end waits for the release.
    first.end().await;
    let saves = store.saves();
    let last = &saves.last().expect("written").record;
    assert_eq!(
        started_slot(last, "handed-over"),
        None,
        "released: the job's last start is what it was before the claim (none)"
    );
    assert!(
        last.jobs["handed-over"].history.is_empty(),
        "the unstarted run left the history"
    );
    assert!(
        !events.has_pending(),
        "nothing started under the ended term"
    );

    // The next term (a new leader) runs the slot on time, under its own token.
    let second = hour_long_term(6);
    leadership.send_replace(Leadership::Leader {
        term: second.term().clone(),
    });
    let report = events.finished().await;
    assert_eq!(
        (report.scheduled, report.fencing_token, report.outcome),
        (slot, 6, Outcome::Succeeded)
    );
    stop.cancel();
    timers.await.expect("timers stop when told");
}

#[tokio::test(start_paused = true)]
async fn a_slot_claimed_ahead_is_released_when_a_reload_changes_its_job_first() {
    let handle = hour_long_term(5);
    let (store, ledger, dispatcher, mut events, _leadership) = slow_dispatcher(handle.term());
    stamp(&ledger, 5).await;
    let stop = CancellationToken::new();
    let (jobs_tx, jobs_rx) = watch::channel(every_second("reloaded"));
    let timers = tokio::spawn({
        let stop = stop.clone();
        async move { dispatcher.run(jobs_rx, stop).await }
    });
    let slot = utc("2026-11-21T10:00:01Z");
    store
        .written(|record| started_slot(record, "reloaded") == Some((slot, 5)))
        .await;
    // A reload changes the job between its claim and its slot: its timer is replaced, the claim undone.
    let changed = config::parse_str(
        "jobs:\n  - name: reloaded\n    schedule: \"*/2 * * * * *\"\n    command: [/bin/true]\n",
        "test",
        &LoadOptions::default(),
    )
    .expect("valid");
    jobs_tx.send_replace(Arc::new(changed));
    store
        .written(|record| {
            record
                .jobs
                .get("reloaded")
                .is_some_and(|r| r.last_started.is_none() && r.history.is_empty())
        })
        .await;
    let report = events.finished().await;
    assert_eq!(
        report.scheduled,
        utc("2026-11-21T10:00:02Z"),
        "the claimed slot did not run; the changed job's first slot did"
    );
    stop.cancel();
    timers.await.expect("timers stop when told");
    handle.end().await;
}
