//! Electors on the Kubernetes Lease store, on the fake API server and on the real one, in real time with
//! fast timings (LD 3 s, RD 1.5 s, RP 500 ms). Assertions are about who leads and in what order, never
//! about how fast; the only time bounds are lower bounds that load cannot break (load only delays).

use crate::on_both_servers;
use crate::support::{fake_apiserver, kube_electors};

use std::collections::HashSet;
use std::time::Duration;

use fake_apiserver::{FakeApiServer, Fault, Verb as ApiVerb, Which};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, ObjectMeta, PostParams};
use kube_electors::{
    config, wait_any_leader, Garble, GarblingProxy, KubeElector, LD, LEASE, PATIENCE, RD, RP,
};
use leasecron::event::{ElectionEvent, LossReason};
use leasecron::term::Leadership;
use tokio::time::Instant;

/// How long the fake holds the racing writes, so that both electors have sent theirs before either is
/// answered; well under RP, the store's request timeout.
const RACE_LATENCY: Duration = Duration::from_millis(200);
/// The simulated termination grace of a run: it takes this long to stop after its term is cancelled.
/// Within the bound LD − max(1 s, LD/10) − RD of the fast timings.
const GRACE: Duration = Duration::from_millis(400);

async fn start_three(server: &FakeApiServer) -> Vec<KubeElector> {
    let mut electors = Vec::new();
    for id in ["a", "b", "c"] {
        electors.push(KubeElector::start(server, id).await);
    }
    electors
}

/// When the server received the last successful write (acquire or renew) of client `token`.
fn last_update(server: &FakeApiServer, token: &str) -> Instant {
    server
        .requests()
        .iter()
        .filter(|r| {
            r.token.as_deref() == Some(token)
                && matches!(r.verb, Some(ApiVerb::Update | ApiVerb::Create))
                && matches!(r.status, Some(200 | 201))
        })
        .map(|r| r.at)
        .next_back()
        .expect("a successful write")
}

/// Waits for the next successful update of client `token` after `after` updates.
async fn next_update(server: &FakeApiServer, token: &str) {
    let count = || {
        server
            .requests()
            .iter()
            .filter(|r| {
                r.token.as_deref() == Some(token)
                    && r.verb == Some(ApiVerb::Update)
                    && r.status == Some(200)
            })
            .count()
    };
    let before = count();
    tokio::time::timeout(PATIENCE, async {
        while count() == before {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the leader renews");
}

fn leaders(electors: &[KubeElector]) -> usize {
    electors.iter().filter(|e| e.is_leader()).count()
}

async fn three_electors_elect_exactly_one_leader_with_distinct_tokens_across_terms(which: Which) {
    let Some(server) = FakeApiServer::start_on(which, "three_electors_elect_exactly_o").await
    else {
        return;
    };
    let mut electors = start_three(&server).await;
    let mut tokens = HashSet::new();
    for _ in 0..2 {
        let i = wait_any_leader(&mut electors).await;
        let term = electors[i].wait_leader().await;
        assert!(tokens.insert(term.fencing_token()), "a fresh fencing token");
        // Several renew periods: still exactly one leader.
        for _ in 0..6 {
            tokio::time::sleep(RP).await;
            assert_eq!(leaders(&electors), 1);
        }
        // Hand over: the leader shuts down (releases), another takes over.
        let old = electors.remove(i);
        old.shutdown.cancel();
        old.task.await.expect("clean shutdown");
    }
}

async fn a_release_hands_over_to_the_next_term(which: Which) {
    let Some(server) = FakeApiServer::start_on(which, "a_release_hands_over_to_the_ne").await
    else {
        return;
    };
    let mut electors = start_three(&server).await;
    let i = wait_any_leader(&mut electors).await;
    let first = electors[i].wait_leader().await.fencing_token();
    let old = electors.remove(i);
    old.shutdown.cancel();
    old.task.await.expect("clean shutdown");
    let j = wait_any_leader(&mut electors).await;
    let next = electors[j].wait_leader().await.fencing_token();
    assert_eq!(next.0, first.0 + 1, "the next term's token follows");
}

async fn a_crashed_leader_is_replaced_only_after_the_lease_duration(which: Which) {
    let Some(server) = FakeApiServer::start_on(which, "a_crashed_leader_is_replaced_o").await
    else {
        return;
    };
    let mut electors = start_three(&server).await;
    let i = wait_any_leader(&mut electors).await;
    electors[i].wait_leader().await;
    let crashed = electors.remove(i);
    crashed.task.abort();
    let _ = crashed.task.await;
    let j = wait_any_leader(&mut electors).await;
    let took_over_at = Instant::now();
    // Followers observed the crashed leader's last renew after the server received it.
    let last_renew = last_update(&server, &crashed.identity);
    assert!(
        took_over_at >= last_renew + LD,
        "took over {:?} after the last renew",
        took_over_at - last_renew
    );
    assert!(electors[j].is_leader());
}

async fn a_5xx_burst_shorter_than_the_renew_deadline_does_not_end_the_term(which: Which) {
    let Some(server) = FakeApiServer::start_on(which, "a_5xx_burst_shorter_than_the_r").await
    else {
        return;
    };
    let mut electors = start_three(&server).await;
    let i = wait_any_leader(&mut electors).await;
    let term = electors[i].wait_leader().await;
    // Start the burst right after a successful renew, so the term has (almost) a full RD ahead.
    next_update(&server, &electors[i].identity).await;
    let faults = server.faults(&electors[i].identity);
    faults.set(Fault::Status(503));
    // Longer than RP (a renew attempt fails), shorter than RD − RP (the next one is before the deadline).
    tokio::time::sleep(RP + (RD - RP * 2) / 2).await;
    faults.clear();
    for _ in 0..6 {
        tokio::time::sleep(RP).await;
    }
    let events = electors[i].drain_events();
    assert!(!term.is_ended(), "the term survived the burst: {events:?}");
    assert!(electors[i].is_leader());
    assert!(
        events
            .iter()
            .any(|e| matches!(e, ElectionEvent::RenewFailed { .. })),
        "the burst was noticed: {events:?}"
    );
}

async fn a_partitioned_leader_ends_its_term_before_anyone_else_takes_over(which: Which) {
    let Some(server) = FakeApiServer::start_on(which, "a_partitioned_leader_ends_its_").await
    else {
        return;
    };
    let mut electors = start_three(&server).await;
    let i = wait_any_leader(&mut electors).await;
    let term = electors[i].wait_leader().await;
    server.faults(&electors[i].identity).set(Fault::Hang);
    let partitioned_at = Instant::now();
    tokio::time::timeout(PATIENCE, term.ended())
        .await
        .expect("the partitioned leader's term ends");
    let ended_at = Instant::now();
    let others: Vec<usize> = (0..electors.len()).filter(|&k| k != i).collect();
    let next = loop {
        if let Some(&k) = others.iter().find(|&&k| electors[k].is_leader()) {
            break k;
        }
        assert!(partitioned_at.elapsed() < PATIENCE, "nobody took over");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let took_over_at = Instant::now();
    assert!(ended_at <= took_over_at, "the old term ended first");
    let last_renew = last_update(&server, &electors[i].identity);
    assert!(took_over_at >= last_renew + LD);
    let events = electors[i].drain_events();
    assert!(
        events.iter().any(|e| matches!(
            e,
            ElectionEvent::Lost {
                reason: LossReason::RenewDeadline,
                ..
            }
        )),
        "{events:?}"
    );
    assert!(electors[next].is_leader());
}

async fn a_lease_renewed_by_a_client_go_holder_is_respected_until_it_expires(which: Which) {
    let Some(server) = FakeApiServer::start_on(which, "a_lease_renewed_by_a_client_go").await
    else {
        return;
    };
    let go: Api<Lease> = Api::namespaced(server.client("go").await, server.namespace());
    let now = || Some(MicroTime(k8s_openapi::jiff::Timestamp::now()));
    let mut lease = go
        .create(
            &PostParams::default(),
            &Lease {
                metadata: ObjectMeta {
                    name: Some(LEASE.to_owned()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some("go-holder".to_owned()),
                    lease_duration_seconds: Some(3),
                    acquire_time: now(),
                    renew_time: now(),
                    lease_transitions: Some(2),
                    ..LeaseSpec::default()
                }),
            },
        )
        .await
        .expect("create");
    let mut electors = start_three(&server).await;
    // The Go holder renews every RP for several lease durations.
    let renew_until = Instant::now() + LD * 2;
    while Instant::now() < renew_until {
        tokio::time::sleep(RP).await;
        lease.spec.as_mut().expect("spec").renew_time = now();
        lease = go
            .replace(LEASE, &PostParams::default(), &lease)
            .await
            .expect("the Go holder renews");
        assert_eq!(leaders(&electors), 0, "nobody takes a renewed lease");
    }
    let i = wait_any_leader(&mut electors).await;
    assert!(Instant::now() >= last_update(&server, "go") + LD);
    let token = electors[i].wait_leader().await.fencing_token();
    assert_eq!(
        token.0, 3,
        "leaseTransitions continues from the Go holder's"
    );
}

/// The successful writes (acquire, renew, release) of client `token`, in arrival order.
fn writes(server: &FakeApiServer, token: &str) -> Vec<fake_apiserver::RequestRecord> {
    server
        .requests()
        .into_iter()
        .filter(|r| {
            r.token.as_deref() == Some(token)
                && matches!(r.verb, Some(ApiVerb::Update | ApiVerb::Create))
                && matches!(r.status, Some(200 | 201))
        })
        .collect()
}

/// The statuses of client `token`'s requests with `verb`, in arrival order.
fn statuses(server: &FakeApiServer, token: &str, verb: ApiVerb) -> Vec<Option<u16>> {
    server
        .requests()
        .into_iter()
        .filter(|r| r.token.as_deref() == Some(token) && r.verb == Some(verb))
        .map(|r| r.status)
        .collect()
}

/// Creates the Lease as another client (`go`) would: held by `holder` (empty: released), with
/// `transitions`; returns it as stored.
async fn create_lease(server: &FakeApiServer, holder: &str, transitions: i32) -> Lease {
    let go: Api<Lease> = Api::namespaced(server.client("go").await, server.namespace());
    let now = || Some(MicroTime(k8s_openapi::jiff::Timestamp::now()));
    go.create(
        &PostParams::default(),
        &Lease {
            metadata: ObjectMeta {
                name: Some(LEASE.to_owned()),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(holder.to_owned()),
                lease_duration_seconds: Some(3),
                acquire_time: now(),
                renew_time: now(),
                lease_transitions: Some(transitions),
                ..LeaseSpec::default()
            }),
        },
    )
    .await
    .expect("create the Lease")
}

/// Waits until `elector` follows `holder`; panics after [`PATIENCE`].
async fn wait_following(elector: &mut KubeElector, holder: &str) {
    tokio::time::timeout(
        PATIENCE,
        elector
            .leadership
            .wait_for(|l| matches!(l, Leadership::Follower { holder: Some(h) } if h == holder)),
    )
    .await
    .unwrap_or_else(|_| panic!("{} never followed {holder}", elector.identity))
    .expect("the elector is alive");
}

/// Asserts for several retry periods that exactly `electors[leader]` leads and nobody has stopped.
async fn assert_stable_leader(electors: &[KubeElector], leader: usize) {
    for _ in 0..4 {
        tokio::time::sleep(RP).await;
        assert_eq!(leaders(electors), 1);
        assert!(electors[leader].is_leader());
        assert!(
            electors.iter().all(|e| !e.task.is_finished()),
            "an elector stopped"
        );
    }
}

async fn two_electors_racing_the_create_elect_one_and_the_loser_follows(which: Which) {
    let Some(server) = FakeApiServer::start_on(which, "two_electors_racing_the_create").await
    else {
        return;
    };
    for id in ["a", "b"] {
        server
            .faults(id)
            .set_for(&[ApiVerb::Create], Fault::Latency(RACE_LATENCY));
    }
    let mut electors = KubeElector::start_all(&server, &["a", "b"]).await;
    let winner = wait_any_leader(&mut electors).await;
    let loser = 1 - winner;
    let token = electors[winner].wait_leader().await.fencing_token();
    assert_eq!(token.0, 1, "the first term");
    let winner_id = electors[winner].identity.clone();
    wait_following(&mut electors[loser], &winner_id).await;

    assert_eq!(
        statuses(&server, &winner_id, ApiVerb::Create),
        [Some(201)],
        "the winner created the Lease"
    );
    let loser_creates = statuses(&server, &electors[loser].identity, ApiVerb::Create);
    assert_eq!(
        loser_creates.first(),
        Some(&Some(409)),
        "the loser raced the create and got AlreadyExists: {loser_creates:?}"
    );
    assert_stable_leader(&electors, winner).await;
    let events = electors[loser].drain_events();
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, ElectionEvent::Acquired { .. })),
        "the loser never led: {events:?}"
    );
}

/// Two electors find the Lease (held by `holder`, or released if empty) with `leaseTransitions` 4 and
/// race to write it; the fake holds both writes until both are sent. Returns the server and electors,
/// the winner's index, and when the Lease was created.
async fn race_update(
    which: Which,
    test: &str,
    holder: &str,
) -> Option<(FakeApiServer, Vec<KubeElector>, usize, Instant)> {
    let server = FakeApiServer::start_on(which, test).await?;
    create_lease(&server, holder, 4).await;
    let created_at = Instant::now();
    for id in ["a", "b"] {
        server
            .faults(id)
            .set_for(&[ApiVerb::Update], Fault::Latency(RACE_LATENCY));
    }
    let mut electors = KubeElector::start_all(&server, &["a", "b"]).await;
    let winner = wait_any_leader(&mut electors).await;
    let token = electors[winner].wait_leader().await.fencing_token();
    assert_eq!(token.0, 5, "leaseTransitions + 1");
    let (winner_id, loser) = (electors[winner].identity.clone(), 1 - winner);
    wait_following(&mut electors[loser], &winner_id).await;

    let winner_updates = statuses(&server, &winner_id, ApiVerb::Update);
    assert_eq!(
        winner_updates.first(),
        Some(&Some(200)),
        "{winner_updates:?}"
    );
    let loser_updates = statuses(&server, &electors[loser].identity, ApiVerb::Update);
    assert_eq!(
        loser_updates.first(),
        Some(&Some(409)),
        "the loser raced the update and got a Conflict: {loser_updates:?}"
    );
    for id in ["a", "b"] {
        server.faults(id).clear();
    }
    assert_stable_leader(&electors, winner).await;
    Some((server, electors, winner, created_at))
}

async fn two_electors_racing_to_take_a_released_lease_elect_one_and_the_loser_follows(
    which: Which,
) {
    race_update(which, "racing-to-take-a-released-lease", "").await;
}

async fn two_electors_racing_to_take_an_expired_lease_elect_one_after_it_expired(which: Which) {
    let Some((server, electors, winner, created_at)) =
        race_update(which, "racing-to-take-an-expired-lease", "gone-holder").await
    else {
        return;
    };
    let acquired_at = writes(&server, &electors[winner].identity)[0].at;
    assert!(
        acquired_at >= created_at + LD,
        "the held Lease was taken only once expired"
    );
}

async fn a_partitioned_leaders_run_has_ended_before_the_next_term_begins(which: Which) {
    let Some(server) = FakeApiServer::start_on(which, "a_partitioned_leaders_run_has_").await
    else {
        return;
    };
    let mut electors = Vec::new();
    for id in ["a", "b", "c"] {
        electors.push(KubeElector::start_on(config(&server, id).await, id, GRACE));
    }
    let i = wait_any_leader(&mut electors).await;
    let old = electors[i].identity.clone();
    let term = electors[i].wait_leader().await;
    // A run that, once cancelled, takes GRACE to stop.
    let (report, ran) = tokio::sync::oneshot::channel();
    let cancelled = term.child_token();
    term.tracker().spawn(async move {
        cancelled.cancelled().await;
        let told = Instant::now();
        tokio::time::sleep(GRACE).await;
        let _ = report.send((told, Instant::now()));
    });

    server.faults(&old).set(Fault::Hang);
    let (told, finished) = tokio::time::timeout(PATIENCE, ran)
        .await
        .expect("the partitioned leader's run is cancelled")
        .expect("the run reports");
    // The old leader publishes that it follows just after its run ended; wait for someone else.
    let waiting_since = Instant::now();
    let next = loop {
        if let Some(k) = (0..electors.len()).find(|&k| k != i && electors[k].is_leader()) {
            break k;
        }
        assert!(waiting_since.elapsed() < PATIENCE, "nobody took over");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let acquired = writes(&server, &electors[next].identity)[0].at;
    assert!(
        told + GRACE <= finished && finished <= acquired,
        "the old run ended before the new leader's acquire reached the server"
    );
    let last_renew = last_update(&server, &old);
    assert!(
        acquired >= last_renew + LD,
        "taken over no earlier than LD after the old leader's last successful write"
    );
    assert!(term.is_ended());
    assert!(
        !electors[i].is_leader(),
        "the old leader published that it follows"
    );
}

async fn a_lease_without_a_spec_reads_as_free_and_is_taken(which: Which) {
    let Some(server) = FakeApiServer::start_on(which, "a_lease_without_a_spec_reads_a").await
    else {
        return;
    };
    let go: Api<Lease> = Api::namespaced(server.client("go").await, server.namespace());
    let specless = Lease {
        metadata: ObjectMeta {
            name: Some(LEASE.to_owned()),
            ..ObjectMeta::default()
        },
        spec: None,
    };
    go.create(&PostParams::default(), &specless)
        .await
        .expect("create a Lease without a spec");
    let mut electors = KubeElector::start_all(&server, &["a", "b"]).await;
    let i = wait_any_leader(&mut electors).await;
    let token = electors[i].wait_leader().await.fencing_token();
    assert_eq!(token.0, 1, "missing leaseTransitions read as 0");
    let lease = server
        .object(fake_apiserver::Resource::Leases, server.namespace(), LEASE)
        .expect("the Lease");
    assert_eq!(
        lease["spec"]["holderIdentity"].as_str(),
        Some(electors[i].identity.as_str())
    );
    assert_stable_leader(&electors, i).await;
}

async fn a_held_lease_answered_with_a_zero_or_negative_duration_is_contended_until_our_lease_duration(
    which: Which,
) {
    for seconds in [0, -7] {
        let Some(server) = FakeApiServer::start_on(which, "zero-or-negative-duration").await else {
            return;
        };
        let proxy = GarblingProxy::start(&server).await;
        proxy.set(Garble::LeaseDuration(seconds), &["GET", "PUT", "POST"]);
        let mut lease = create_lease(&server, "go-holder", 2).await;
        let mut electors = Vec::new();
        for id in ["a", "b"] {
            let config = proxy.config(&server, id).await;
            electors.push(KubeElector::start_on(config, id, Duration::ZERO));
        }
        // The holder renews (directly, not through the proxy) for more than a lease duration; the
        // electors read it with the odd duration and still wait.
        let go: Api<Lease> = Api::namespaced(server.client("go").await, server.namespace());
        let renew_until = Instant::now() + LD + LD / 2;
        while Instant::now() < renew_until {
            tokio::time::sleep(RP).await;
            lease.spec.as_mut().expect("spec").renew_time =
                Some(MicroTime(k8s_openapi::jiff::Timestamp::now()));
            lease = go
                .replace(LEASE, &PostParams::default(), &lease)
                .await
                .expect("the holder renews");
            assert_eq!(
                leaders(&electors),
                0,
                "leaseDurationSeconds {seconds}: a renewed lease is not taken"
            );
        }
        assert!(proxy.garbled() > 0, "the electors read the odd duration");
        let i = wait_any_leader(&mut electors).await;
        assert!(
            Instant::now() >= last_update(&server, "go") + LD,
            "leaseDurationSeconds {seconds}: taken only LD after the holder's last renew"
        );
        assert_eq!(electors[i].wait_leader().await.fencing_token().0, 3);
        assert_stable_leader(&electors, i).await;
    }
}

async fn answers_that_are_not_json_elect_nobody_and_break_nothing_until_they_stop(which: Which) {
    let Some(server) = FakeApiServer::start_on(which, "answers_that_are_not_json_elec").await
    else {
        return;
    };
    let proxy = GarblingProxy::start(&server).await;
    proxy.set(Garble::NotJson, &["GET", "PUT", "POST"]);
    let mut electors = Vec::new();
    for id in ["a", "b"] {
        let config = proxy.config(&server, id).await;
        electors.push(KubeElector::start_on(config, id, Duration::ZERO));
    }
    // Long enough for a garbled create (a lost reply) to expire, and for many retries.
    for _ in 0..8 {
        tokio::time::sleep(RP).await;
        assert_eq!(
            leaders(&electors),
            0,
            "nobody leads on answers it cannot read"
        );
        assert!(
            electors.iter().all(|e| !e.task.is_finished()),
            "an elector stopped"
        );
    }
    let garbled_reads = server
        .requests()
        .iter()
        .filter(|r| r.verb == Some(ApiVerb::Get) && r.status == Some(200))
        .count();
    assert!(
        garbled_reads > 0 && proxy.garbled() > 0,
        "the electors read the Lease and got garbage"
    );

    proxy.set(Garble::Pass, &[]);
    let i = wait_any_leader(&mut electors).await;
    electors[i].wait_leader().await;
    let lease = server
        .object(fake_apiserver::Resource::Leases, server.namespace(), LEASE)
        .expect("the Lease");
    assert_eq!(
        lease["spec"]["holderIdentity"].as_str(),
        Some(electors[i].identity.as_str())
    );
    assert_stable_leader(&electors, i).await;
}

on_both_servers!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    three_electors_elect_exactly_one_leader_with_distinct_tokens_across_terms,
    a_release_hands_over_to_the_next_term,
    a_crashed_leader_is_replaced_only_after_the_lease_duration,
    a_5xx_burst_shorter_than_the_renew_deadline_does_not_end_the_term,
    a_partitioned_leader_ends_its_term_before_anyone_else_takes_over,
    a_lease_renewed_by_a_client_go_holder_is_respected_until_it_expires,
    two_electors_racing_the_create_elect_one_and_the_loser_follows,
    a_partitioned_leaders_run_has_ended_before_the_next_term_begins,
    a_lease_without_a_spec_reads_as_free_and_is_taken,
    two_electors_racing_to_take_a_released_lease_elect_one_and_the_loser_follows,
    two_electors_racing_to_take_an_expired_lease_elect_one_after_it_expired,
    a_held_lease_answered_with_a_zero_or_negative_duration_is_contended_until_our_lease_duration,
    answers_that_are_not_json_elect_nobody_and_break_nothing_until_they_stop,
);
