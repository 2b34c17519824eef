//! The elector against the file store, on paused tokio time: safety (one leader, no early take-over, terms
//! end at their deadline), liveness (release, take-over, re-contention) and fencing.

use crate::support::election_faults as faults;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use chrono::TimeDelta;
use faults::{
    config, run_until, run_until_true, skewed_clock, Mode, Replica, TestFloor, EPSILON, GRACE, LD,
    RD, RP,
};
use leasecron::clock::PausedClock;
use leasecron::election::{Config, Elector};
use leasecron::event::{ElectionEvent, LossReason};
use leasecron::lease_store::LeaseStore;
use leasecron::local::lease::FileStore;
use leasecron::term::{FencingToken, Leadership};
use tokio::sync::oneshot;
use tokio::time::Instant;

fn lease_path(dir: &tempfile::TempDir) -> std::path::PathBuf {
    dir.path().join("leasecron.lease")
}

fn token(replica: &Replica) -> FencingToken {
    replica.term().expect("the replica leads").fencing_token()
}

/// Starts `identity` and lets it take the (free) lease.
async fn start_leader(path: &std::path::Path, identity: &str) -> Replica {
    let replica = Replica::start(path, identity);
    run_until(Instant::now() + EPSILON).await;
    assert!(replica.leads(), "{identity} takes a free lease at once");
    replica
}

/// Spawns a run on the replica's term that, once told to stop, takes `stopping` to end; resolves to the
/// instant it was told to stop and the instant it ended.
fn spawn_run(replica: &Replica, stopping: Duration) -> oneshot::Receiver<(Instant, Instant)> {
    let term = replica.term().expect("the replica leads");
    let stop = term.child_token();
    let (tx, rx) = oneshot::channel();
    term.tracker().spawn(async move {
        stop.cancelled().await;
        let told = Instant::now();
        tokio::time::sleep(stopping).await;
        let _ = tx.send((told, Instant::now()));
    });
    rx
}

/// Starts "a" as the leader with RD = 4 s and RP = 3 s: a renew sent at 3 s is answered (or hangs) across
/// the deadline at 4 s.
async fn start_slow_renewer(path: &std::path::Path) -> Replica {
    let config = Config {
        renew_deadline: Duration::from_secs(4),
        retry_period: Duration::from_secs(3),
        ..config("a")
    };
    let a = Replica::start_with_config(path, config, skewed_clock(TimeDelta::zero()));
    run_until(Instant::now() + EPSILON).await;
    a
}

#[tokio::test(start_paused = true)]
async fn one_leader_among_three_electors_on_one_file() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let path = lease_path(&dir);
    let replicas: Vec<Replica> = ["a", "b", "c"]
        .into_iter()
        .map(|id| Replica::start(&path, id))
        .collect();
    let start = Instant::now();
    let mut leaders = BTreeSet::new();
    for step in 1..=600 {
        run_until(start + Duration::from_millis(100) * step).await;
        let leading: Vec<_> = replicas
            .iter()
            .filter(|r| r.leads())
            .map(|r| r.identity.clone())
            .collect();
        assert_eq!(
            leading.len(),
            1,
            "after {step}00 ms the leaders are {leading:?}"
        );
        leaders.extend(leading);
    }
    assert_eq!(leaders.len(), 1, "the lease never moved: {leaders:?}");
    let leader = leaders.pop_first().expect("one leader");
    for replica in replicas.iter().filter(|r| r.identity != leader) {
        assert_eq!(replica.follows(), Some(Some(leader.clone())));
    }
    for replica in replicas {
        replica.stop().await.expect("a clean shutdown");
    }
}

#[tokio::test(start_paused = true)]
async fn a_follower_takes_over_only_lease_duration_after_it_observed_the_last_renewal() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let path = lease_path(&dir);
    let a = start_leader(&path, "a").await;
    // An hour ahead: a follower that compared renewTime with its own wall clock would take over at once.
    let b = Replica::start_with_clock(&path, "b", skewed_clock(TimeDelta::hours(1)));
    run_until(Instant::now() + Duration::from_secs(5)).await;
    assert_eq!(b.follows(), Some(Some("a".to_owned())));

    a.faults.set(Mode::Hang);
    let last = a.faults.last_successful_write().expect("a renewed");
    let version = last.result.expect("ok").expect("a record").version;
    let observed = b
        .faults
        .first_seen(&version)
        .expect("b observed a's last renewal");

    run_until(observed + LD - EPSILON).await;
    assert!(!a.leads(), "a's term ended at its renew deadline");
    assert!(!b.leads(), "b must not take over before o + LD");
    assert_eq!(b.follows(), Some(Some("a".to_owned())));

    run_until(observed + LD + EPSILON).await;
    assert!(b.leads(), "b takes over at o + LD");
    assert_eq!(token(&b), FencingToken(2));
    b.stop().await.expect("a clean shutdown");
    a.stop().await.expect("a clean shutdown");
}

#[tokio::test(start_paused = true)]
async fn exactly_one_of_two_racing_followers_takes_over() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let path = lease_path(&dir);
    let a = start_leader(&path, "a").await;
    // Started together, b and c poll together and see a's lease expire in the same instant.
    let b = Replica::start(&path, "b");
    let c = Replica::start(&path, "c");
    run_until(Instant::now() + Duration::from_secs(5)).await;
    a.faults.set(Mode::Hang);
    let start = Instant::now();
    for step in 1..=300 {
        run_until(start + Duration::from_millis(100) * step).await;
        let leaders = [&a, &b, &c].iter().filter(|r| r.leads()).count();
        assert!(leaders <= 1, "{leaders} leaders after {step}00 ms");
    }
    let (winner, loser) = if b.leads() { (&b, &c) } else { (&c, &b) };
    assert!(winner.leads(), "one of them took over");
    assert_eq!(loser.follows(), Some(Some(winner.identity.clone())));
    assert_eq!(token(winner), FencingToken(2));
    for replica in [a, b, c] {
        replica.stop().await.expect("a clean shutdown");
    }
}

#[tokio::test(start_paused = true)]
async fn a_release_wakes_a_follower_within_a_retry_period() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let path = lease_path(&dir);
    let a = start_leader(&path, "a").await;
    let b = Replica::start(&path, "b");
    run_until(Instant::now() + Duration::from_secs(5)).await;
    assert!(!b.leads());
    let a_faults = a.faults.clone();

    let released_at = Instant::now();
    a.stop().await.expect("a clean shutdown");
    let release = a_faults.last_successful_write().expect("a released");
    assert_eq!(release.written.expect("a record").holder(), None);

    // The last renewal b observed was at least 4 s in; without the release b would wait until 19 s.
    run_until(released_at + RP + EPSILON).await;
    assert!(b.leads(), "the release woke b within one poll");
    assert_eq!(token(&b), FencingToken(2));
    b.stop().await.expect("a clean shutdown");
}

#[tokio::test(start_paused = true)]
async fn failing_renewals_end_the_term_at_the_renew_deadline() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let path = lease_path(&dir);
    let mut a = start_leader(&path, "a").await;
    run_until(Instant::now() + Duration::from_secs(3)).await;
    let term = a.term().expect("a leads");
    let run = spawn_run(&a, Duration::ZERO);

    a.faults.set(Mode::Fail);
    let s = a.faults.last_successful_write().expect("a renewed").sent;
    run_until(s + RD - EPSILON).await;
    assert!(!term.is_ended(), "the term lives until s + RD");
    let failures = a
        .faults
        .calls()
        .iter()
        .filter(|c| c.sent > s && c.result.is_err())
        .count();
    assert!(
        failures >= 3,
        "a kept retrying ({failures} failed renewals)"
    );

    run_until(s + RD + EPSILON).await;
    assert!(term.is_ended(), "the term ended at s + RD");
    let (told, _) = run.await.expect("the run was stopped");
    assert!(
        told >= s + RD,
        "the run was stopped at the deadline, not before"
    );
    assert_eq!(a.follows(), Some(Some("a".to_owned())));
    assert!(a.drain_events().contains(&ElectionEvent::Lost {
        token: FencingToken(1),
        reason: LossReason::RenewDeadline,
    }));
    a.stop().await.expect("a clean shutdown");
}

#[tokio::test(start_paused = true)]
async fn a_hung_renewal_does_not_keep_the_term_alive_past_its_deadline() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let path = lease_path(&dir);
    // RD is not a multiple of RP: the renew sent at 3 s is still in flight when the deadline (4 s) comes.
    let a = start_slow_renewer(&path).await;
    let term = a.term().expect("a leads");
    a.faults.set(Mode::Hang);
    let s = a.faults.last_successful_write().expect("a acquired").sent;

    run_until(s + Duration::from_secs(4) - EPSILON).await;
    assert!(!term.is_ended(), "the term lives until s + RD");
    run_until(s + Duration::from_secs(4) + EPSILON).await;
    assert!(
        term.is_ended(),
        "the hung renewal was cut off at the deadline"
    );
    assert!(!a.leads());
    a.stop().await.expect("a clean shutdown");
}

#[tokio::test(start_paused = true)]
async fn the_deadline_counts_from_when_the_renewal_was_sent_not_answered() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let path = lease_path(&dir);
    let a = start_leader(&path, "a").await;
    run_until(Instant::now() + Duration::from_secs(3)).await;
    let term = a.term().expect("a leads");
    let slow = Duration::from_millis(1500);
    a.faults.set(Mode::Delay(slow));
    let sent = a.faults.last_successful_write().expect("a renewed").sent + RP;
    run_until(sent + slow + EPSILON).await;
    a.faults.set(Mode::Fail);
    let last = a
        .faults
        .last_successful_write()
        .expect("the slow renewal succeeded");
    assert_eq!(last.sent, sent);

    run_until(sent + RD - EPSILON).await;
    assert!(!term.is_ended(), "the slow renewal extended the term");
    run_until(sent + RD + EPSILON).await;
    assert!(
        term.is_ended(),
        "the deadline is s + RD, s being when it was sent"
    );
    a.stop().await.expect("a clean shutdown");
}

#[tokio::test(start_paused = true)]
async fn a_renewal_answered_at_the_deadline_does_not_extend_the_term() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let path = lease_path(&dir);
    let a = start_slow_renewer(&path).await;
    let term = a.term().expect("a leads");
    let s = a.faults.last_successful_write().expect("a acquired").sent;
    // The renewal sent at s + 3 s is answered exactly at the deadline, s + 4 s.
    a.faults.set(Mode::Delay(Duration::from_secs(1)));
    run_until(s + Duration::from_secs(4) + EPSILON).await;
    let answered_late = a.faults.last_successful_write().expect("a wrote").sent;
    assert_eq!(
        answered_late,
        s + Duration::from_secs(3),
        "the store did apply it"
    );
    assert!(term.is_ended(), "a reply at the deadline is too late");
    a.stop().await.expect("a clean shutdown");
}

#[tokio::test(start_paused = true)]
async fn fencing_tokens_strictly_increase_across_take_overs() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let path = lease_path(&dir);
    let a = start_leader(&path, "a").await;
    let b = Replica::start(&path, "b");
    run_until(Instant::now() + Duration::from_secs(5)).await;
    let mut terms = vec![("a", a.term().expect("a leads"))];

    a.faults.set(Mode::Hang);
    assert!(run_until_true(LD + RD, || b.leads()).await, "b takes over");
    terms.push(("b", b.term().expect("b leads")));

    a.faults.set(Mode::Healthy);
    b.faults.set(Mode::Hang);
    assert!(
        run_until_true(LD + RD, || a.leads()).await,
        "a takes it back"
    );
    terms.push(("a", a.term().expect("a leads")));

    b.faults.set(Mode::Healthy);
    run_until(Instant::now() + Duration::from_secs(5)).await;
    a.stop().await.expect("a clean shutdown");
    assert!(
        run_until_true(RP + EPSILON, || b.leads()).await,
        "b takes the release"
    );
    terms.push(("b", b.term().expect("b leads")));

    let holders: Vec<_> = terms.iter().map(|(who, _)| *who).collect();
    assert_eq!(holders, ["a", "b", "a", "b"]);
    let tokens: Vec<_> = terms.iter().map(|(_, t)| t.fencing_token().0).collect();
    assert_eq!(tokens, [1, 2, 3, 4], "one more per acquisition");
    assert!(
        terms[..3].iter().all(|(_, t)| t.is_ended()),
        "every earlier term ended"
    );
    b.stop().await.expect("a clean shutdown");
}

#[tokio::test(start_paused = true)]
async fn the_same_identity_gets_a_larger_token_when_it_acquires_again() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let path = lease_path(&dir);
    let mut a = start_leader(&path, "a").await;
    let first = a.term().expect("a leads");
    a.faults.set(Mode::Fail);
    assert!(run_until_true(RD + EPSILON, || first.is_ended()).await);
    assert!(!a.leads());

    a.faults.set(Mode::Healthy);
    assert!(
        run_until_true(LD + RP, || a.leads()).await,
        "a contends again on its own"
    );
    assert_eq!(token(&a), FencingToken(2));
    let acquired: Vec<_> = a
        .drain_events()
        .into_iter()
        .filter_map(|e| match e {
            ElectionEvent::Acquired { token } => Some(token.0),
            _ => None,
        })
        .collect();
    assert_eq!(acquired, [1, 2]);
    a.stop().await.expect("a clean shutdown");
}

#[tokio::test(start_paused = true)]
async fn the_lease_is_released_only_after_the_terms_runs_ended() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let path = lease_path(&dir);
    let a = start_leader(&path, "a").await;
    run_until(Instant::now() + Duration::from_secs(3)).await;
    let run = spawn_run(&a, GRACE);
    let a_faults = a.faults.clone();
    let shutdown_at = Instant::now();
    a.stop().await.expect("a clean shutdown");

    let (told, run_ended) = run.await.expect("the run ended");
    assert_eq!(told, shutdown_at, "shutdown stopped the run at once");
    let release = a_faults.last_successful_write().expect("a released");
    assert_eq!(release.written.as_ref().expect("a record").holder(), None);
    assert!(
        release.sent >= run_ended,
        "the release was written after the run ended"
    );
    let stored = FileStore::open(&path, RP)
        .expect("opens")
        .get()
        .await
        .expect("reads")
        .expect("a record");
    assert_eq!(stored.record.holder(), None);
    assert_eq!(
        stored.record.lease_transitions, 1,
        "release keeps the count"
    );
}

#[tokio::test(start_paused = true)]
async fn shutdown_reports_the_term_ending_then_the_release() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let path = lease_path(&dir);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let store = FileStore::open(&path, RP).expect("opens");
    let clock = Arc::new(PausedClock::starting_at(faults::start_of_test()));
    let (elector, leadership) = Elector::new(store, config("a"), clock).expect("valid");
    let shutdown = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn(elector.with_events(tx).run(shutdown.clone()));
    run_until(Instant::now() + EPSILON).await;
    assert!(leadership.borrow().is_leader());
    shutdown.cancel();
    task.await.expect("no panic").expect("a clean shutdown");

    let mut events = Vec::new();
    while let Ok(event) = rx.try_recv() {
        if !matches!(event, ElectionEvent::Request { .. }) {
            events.push(event);
        }
    }
    let one = FencingToken(1);
    assert_eq!(
        events,
        [
            ElectionEvent::Observed {
                holder: Some("a".into()),
                lease_transitions: 1
            },
            ElectionEvent::Acquired { token: one },
            ElectionEvent::Lost {
                token: one,
                reason: LossReason::Shutdown
            },
            ElectionEvent::Released { token: one },
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_follower_shutting_down_writes_nothing() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let path = lease_path(&dir);
    let a = start_leader(&path, "a").await;
    let b = Replica::start(&path, "b");
    run_until(Instant::now() + Duration::from_secs(3)).await;
    let b_faults = b.faults.clone();
    b.stop().await.expect("a clean shutdown");
    let writes = b_faults
        .calls()
        .into_iter()
        .filter(|c| c.written.is_some())
        .count();
    assert_eq!(writes, 0, "b never held the lease, so it writes nothing");
    run_until(Instant::now() + RP).await;
    assert!(a.leads());
    a.stop().await.expect("a clean shutdown");
}

#[tokio::test(start_paused = true)]
async fn a_leader_sees_a_foreign_write_and_ends_its_term() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let path = lease_path(&dir);
    let mut a = start_leader(&path, "a").await;
    let term = a.term().expect("a leads");

    let intruder = FileStore::open(&path, RP).expect("opens");
    let current = intruder.get().await.expect("reads").expect("a record");
    let mut taken = current.record.clone();
    taken.holder_identity = Some("intruder".into());
    taken.lease_transitions += 1;
    intruder
        .update(&taken, &current.version)
        .await
        .expect("the version is current");

    run_until(Instant::now() + RP + EPSILON).await;
    assert!(term.is_ended());
    assert_eq!(a.follows(), Some(Some("intruder".to_owned())));
    assert!(a.drain_events().contains(&ElectionEvent::Lost {
        token: FencingToken(1),
        reason: LossReason::LeaseTaken,
    }));
    a.stop().await.expect("a clean shutdown");
}

#[tokio::test(start_paused = true)]
async fn a_corrupt_record_ends_the_term_and_stops_the_elector() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let path = lease_path(&dir);
    let a = start_leader(&path, "a").await;
    let term = a.term().expect("a leads");
    let run = spawn_run(&a, Duration::from_secs(1));
    std::fs::write(&path, "{ not json").expect("writes");

    let result = a.task.await.expect("no panic");
    let error = result.expect_err("a corrupt record is not retried");
    let message = error.to_string();
    assert!(message.contains("corrupt"), "{message}");
    assert!(message.contains(&path.display().to_string()), "{message}");
    assert!(term.is_ended());
    run.await
        .expect("the run ended before the elector returned");
}

#[tokio::test(start_paused = true)]
async fn an_elector_that_cannot_read_the_record_keeps_trying() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let path = lease_path(&dir);
    let a = Replica::start(&path, "a");
    a.faults.set(Mode::Fail);
    run_until(Instant::now() + Duration::from_secs(5)).await;
    assert!(matches!(*a.leadership.borrow(), Leadership::Unknown));
    let failed_reads = a
        .faults
        .calls()
        .iter()
        .filter(|c| c.result.is_err())
        .count();
    assert_eq!(failed_reads, 3, "one read now and one per retry period");

    a.faults.set(Mode::Healthy);
    run_until(Instant::now() + RP).await;
    assert!(a.leads(), "a read the (absent) record and took the lease");
    a.stop().await.expect("a clean shutdown");
}

#[test]
fn config_validation_names_the_flag_to_fix() {
    let base = config("a");
    let secs = Duration::from_secs;
    let cases: Vec<(&str, Config, Option<&str>)> = vec![
        ("defaults", base.clone(), None),
        (
            "empty identity",
            Config {
                identity: " ".into(),
                ..base.clone()
            },
            Some("--identity"),
        ),
        (
            "zero lease duration",
            Config {
                lease_duration: Duration::ZERO,
                ..base.clone()
            },
            Some("--lease-duration must be greater than zero"),
        ),
        (
            "zero renew deadline",
            Config {
                renew_deadline: Duration::ZERO,
                ..base.clone()
            },
            Some("--renew-deadline must be greater than zero"),
        ),
        (
            "zero retry period",
            Config {
                retry_period: Duration::ZERO,
                ..base.clone()
            },
            Some("--retry-period must be greater than zero"),
        ),
        (
            "RD below 1.2 RP",
            Config {
                retry_period: secs(9),
                ..base.clone()
            },
            Some("--renew-deadline (10s) must be at least 1.2 × --retry-period (9s)"),
        ),
        (
            "RD exactly 1.2 RP",
            Config {
                renew_deadline: Duration::from_millis(2400),
                ..base.clone()
            },
            None,
        ),
        (
            "RD + G exactly LD - margin",
            Config {
                renew_deadline: Duration::from_millis(10_500),
                ..base.clone()
            },
            None,
        ),
        (
            "RD + G just over LD - margin",
            Config {
                renew_deadline: Duration::from_millis(10_501),
                ..base.clone()
            },
            Some("terminationGrace"),
        ),
        (
            "grace too long",
            Config {
                max_termination_grace: secs(5),
                ..base.clone()
            },
            Some("--lease-duration (15s) minus the safety margin"),
        ),
        (
            "margin of one second on a short lease",
            Config {
                lease_duration: secs(5),
                renew_deadline: secs(3),
                retry_period: secs(1),
                max_termination_grace: secs(1),
                ..base.clone()
            },
            None,
        ),
        (
            "short lease without its one-second margin",
            Config {
                lease_duration: secs(5),
                renew_deadline: Duration::from_millis(3001),
                retry_period: secs(1),
                max_termination_grace: secs(1),
                ..base.clone()
            },
            Some("max(1s, lease duration / 10) (1s)"),
        ),
        (
            "lease duration beyond leaseDurationSeconds",
            Config {
                lease_duration: secs(u64::from(u32::MAX)),
                ..base.clone()
            },
            Some("--lease-duration"),
        ),
    ];
    for (name, config, expected) in cases {
        let result = config.validate().map_err(|e| e.to_string());
        match expected {
            None => assert_eq!(result, Ok(()), "{name}"),
            Some(fragment) => {
                let message = result.expect_err(name);
                assert!(message.contains(fragment), "{name}: {message}");
            }
        }
    }
}

#[tokio::test]
async fn an_invalid_config_is_refused_before_anything_runs() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let store = FileStore::open(lease_path(&dir), RP).expect("opens");
    let clock = skewed_clock(TimeDelta::zero());
    let config = Config {
        max_termination_grace: LD,
        ..config("a")
    };
    let error = Elector::new(store, config, clock).expect_err("RD + G > LD");
    assert!(error.to_string().contains("terminationGrace"), "{error}");
}

/// Starts `identity` with the run state's token in `floor`, and lets it take the (free) lease.
async fn start_leader_with_floor(
    path: &std::path::Path,
    identity: &str,
    floor: &Arc<TestFloor>,
) -> Replica {
    let replica = Replica::start_with_floor(
        path,
        config(identity),
        skewed_clock(TimeDelta::zero()),
        Some(Arc::clone(floor)),
    );
    run_until(Instant::now() + EPSILON).await;
    assert!(replica.leads(), "{identity} takes a free lease at once");
    replica
}

/// The tokens of the terms `replica` began, in order.
fn acquired_tokens(events: &[ElectionEvent]) -> Vec<u64> {
    events
        .iter()
        .filter_map(|e| match e {
            ElectionEvent::Acquired { token } => Some(token.0),
            _ => None,
        })
        .collect()
}

fn regressions(events: &[ElectionEvent]) -> Vec<(u64, u64)> {
    events
        .iter()
        .filter_map(|e| match e {
            ElectionEvent::TokenRegression {
                highest_seen,
                durable,
            } => Some((*highest_seen, *durable)),
            _ => None,
        })
        .collect()
}

#[tokio::test(start_paused = true)]
async fn a_new_term_gets_a_token_above_the_run_states() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let path = lease_path(&dir);
    // The lease was deleted after term 7 wrote the run state: leaseTransitions would restart at 1.
    let floor = TestFloor::at(7);
    let mut a = start_leader_with_floor(&path, "a", &floor).await;
    assert_eq!(token(&a), FencingToken(8));
    let stored = FileStore::open(&path, RP)
        .expect("opens")
        .get()
        .await
        .expect("reads")
        .expect("a record");
    assert_eq!(
        stored.record.lease_transitions, 8,
        "the token is written back into the lease, for peers and later terms"
    );
    assert!(
        regressions(&a.drain_events()).is_empty(),
        "the run state still held the token: nothing was lost"
    );
    a.stop().await.expect("a clean shutdown");
}

#[tokio::test(start_paused = true)]
async fn a_deleted_lease_is_taken_back_by_its_leader_with_a_larger_token() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let path = lease_path(&dir);
    let floor = TestFloor::at(0);
    let mut a = start_leader_with_floor(&path, "a", &floor).await;
    let b = Replica::start_with_floor(
        &path,
        config("b"),
        skewed_clock(TimeDelta::zero()),
        Some(Arc::clone(&floor)),
    );
    run_until(Instant::now() + Duration::from_secs(5)).await;
    let first = a.term().expect("a leads");
    // The first term claimed slots: the run state holds its token.
    floor.set(first.fencing_token().0);

    std::fs::remove_file(&path).expect("the lease file is deleted");
    assert!(
        run_until_true(RP + EPSILON, || first.is_ended()).await,
        "the leader sees its record gone and ends the term"
    );
    assert!(
        run_until_true(EPSILON, || a.leads()).await,
        "its term ended, so it takes the lease again at once"
    );
    assert!(token(&a) > first.fencing_token(), "{:?}", token(&a));
    // b saw the record vanish; it waits LD from then, and by then a's new record is there.
    assert!(!run_until_true(LD + RP, || b.leads()).await);
    assert_eq!(b.follows(), Some(Some("a".to_owned())));
    assert_eq!(acquired_tokens(&a.drain_events()), [1, 2]);
    a.stop().await.expect("a clean shutdown");
    b.stop().await.expect("a clean shutdown");
}

#[tokio::test(start_paused = true)]
async fn a_follower_waits_lease_duration_after_a_held_lease_vanished() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let path = lease_path(&dir);
    let a = start_leader(&path, "a").await;
    let b = Replica::start(&path, "b");
    run_until(Instant::now() + Duration::from_secs(5)).await;
    assert_eq!(b.follows(), Some(Some("a".to_owned())));
    // a can no longer write (nor re-create its record); then its record is deleted.
    a.faults.set(Mode::Hang);
    let deleted_at = Instant::now();
    std::fs::remove_file(&path).expect("the lease file is deleted");
    // A follower that took a vanished record for a free one would acquire within a poll, while a's runs
    // may still be stopping.
    run_until(deleted_at + LD - EPSILON).await;
    assert!(
        !b.leads(),
        "b must not acquire before LD after the record vanished"
    );
    assert!(
        run_until_true(RP + EPSILON, || b.leads()).await,
        "b acquires LD after it saw the record vanish"
    );
    assert!(!a.leads());
    b.stop().await.expect("a clean shutdown");
    a.faults.set(Mode::Healthy);
    a.stop().await.expect("a clean shutdown");
}

#[tokio::test(start_paused = true)]
async fn deleting_the_lease_and_the_run_state_keeps_tokens_increasing_and_reports_the_regression() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let path = lease_path(&dir);
    let floor = TestFloor::at(5);
    let mut a = start_leader_with_floor(&path, "a", &floor).await;
    assert_eq!(token(&a), FencingToken(6));
    run_until(Instant::now() + Duration::from_secs(3)).await;
    assert!(regressions(&a.drain_events()).is_empty());

    // A /tmp cleaner deletes the lease file and the run state beside it.
    floor.set(0);
    std::fs::remove_file(&path).expect("the lease file is deleted");
    assert!(
        run_until_true(RP + RP, || a.leads() && token(&a) != FencingToken(6)).await,
        "a takes the lease again"
    );
    assert_eq!(
        token(&a),
        FencingToken(7),
        "above every token a has seen, though the lease and the run state hold none"
    );
    assert_eq!(regressions(&a.drain_events()), [(6, 0)]);
    a.stop().await.expect("a clean shutdown");
}

#[tokio::test(start_paused = true)]
async fn a_follower_reports_a_lease_whose_count_went_backwards_and_continues_above_it() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let path = lease_path(&dir);
    let floor = TestFloor::at(5);
    let a = start_leader_with_floor(&path, "a", &floor).await;
    let mut b = Replica::start(&path, "b");
    run_until(Instant::now() + Duration::from_secs(3)).await;
    assert!(regressions(&b.drain_events()).is_empty());

    // Someone rewrites the lease with a lower count (and then releases it).
    let intruder = FileStore::open(&path, RP).expect("opens");
    let current = intruder.get().await.expect("reads").expect("a record");
    let mut rewritten = current.record.clone();
    rewritten.holder_identity = None;
    rewritten.lease_transitions = 1;
    intruder
        .update(&rewritten, &current.version)
        .await
        .expect("the version is current");
    a.faults.set(Mode::Hang);

    assert!(
        run_until_true(RP + EPSILON, || b.leads()).await,
        "b takes the free lease"
    );
    assert_eq!(
        token(&b),
        FencingToken(7),
        "above the 6 b observed before, not 2"
    );
    assert_eq!(regressions(&b.drain_events()), [(6, 1)]);
    b.stop().await.expect("a clean shutdown");
    a.faults.set(Mode::Healthy);
    a.stop().await.expect("a clean shutdown");
}

#[tokio::test(start_paused = true)]
async fn no_term_begins_while_the_run_states_token_cannot_be_read() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let path = lease_path(&dir);
    let floor = TestFloor::at(3);
    floor.fail(true);
    let a = Replica::start_with_floor(
        &path,
        config("a"),
        skewed_clock(TimeDelta::zero()),
        Some(Arc::clone(&floor)),
    );
    run_until(Instant::now() + Duration::from_secs(5)).await;
    assert!(
        !a.leads(),
        "a term below the run state's token would start nothing"
    );
    assert_eq!(a.follows(), Some(None));

    floor.fail(false);
    assert!(run_until_true(RP + EPSILON, || a.leads()).await);
    assert_eq!(token(&a), FencingToken(4));
    a.stop().await.expect("a clean shutdown");
}
