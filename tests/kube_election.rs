//! Electors on the Kubernetes Lease store against the fake API server, in real time with fast timings
//! (LD 3 s, RD 1.5 s, RP 500 ms). Assertions are about who leads and in what order, never about how fast;
//! the only time bounds are lower bounds that load cannot break (load only delays).

#[path = "support/fake_apiserver.rs"]
mod fake_apiserver;
#[path = "support/kube_electors.rs"]
mod kube_electors;

use std::collections::HashSet;
use std::time::Duration;

use fake_apiserver::{FakeApiServer, Fault, Verb as ApiVerb, NAMESPACE};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, ObjectMeta, PostParams};
use kube_electors::{wait_any_leader, KubeElector, LD, LEASE, PATIENCE, RD, RP};
use leasecron::election::{ElectionEvent, LossReason};
use tokio::time::Instant;

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_electors_elect_exactly_one_leader_with_distinct_tokens_across_terms() {
    let server = FakeApiServer::start().await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_hands_over_to_the_next_term() {
    let server = FakeApiServer::start().await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_leader_is_replaced_only_after_the_lease_duration() {
    let server = FakeApiServer::start().await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_5xx_burst_shorter_than_the_renew_deadline_does_not_end_the_term() {
    let server = FakeApiServer::start().await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_leader_ends_its_term_before_anyone_else_takes_over() {
    let server = FakeApiServer::start().await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_renewed_by_a_client_go_holder_is_respected_until_it_expires() {
    let server = FakeApiServer::start().await;
    let go: Api<Lease> = Api::namespaced(server.client("go").await, NAMESPACE);
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
