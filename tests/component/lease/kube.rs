//! The Kubernetes Lease store against the strict fake API server: the requests, the fields as client-go
//! writes them, conflicts, the watch (no polling while it is healthy, recovery from 410 Gone), timeouts
//! and no hidden retries, and Leases written by others.

use crate::on_both_servers;
use crate::support::{fake_apiserver, kube_electors};

use std::time::Duration;

use chrono::{TimeZone, Utc};
use fake_apiserver::{FakeApiServer, Fault, Resource, Verb as ApiVerb, Which};
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, PostParams};
use kube_electors::{store, LEASE, PATIENCE, RP};
use leasecron::lease_store::{Change, Error, LeaseRecord, LeaseStore};

fn record(holder: &str, transitions: i32) -> LeaseRecord {
    LeaseRecord {
        holder_identity: Some(holder.to_owned()),
        lease_duration_seconds: 3,
        acquire_time: Some(Utc.with_ymd_and_hms(2025, 3, 1, 10, 0, 0).unwrap()),
        renew_time: Some(Utc::now()),
        lease_transitions: transitions,
    }
}

/// Requests of client `token` with `verb` so far.
fn count(server: &FakeApiServer, token: &str, verb: ApiVerb) -> usize {
    server
        .requests()
        .iter()
        .filter(|r| r.token.as_deref() == Some(token) && r.verb == Some(verb))
        .count()
}

/// A raw client's Lease API, to write Leases the way other programs do.
async fn raw(server: &FakeApiServer, token: &str) -> Api<Lease> {
    Api::namespaced(server.client(token).await, server.namespace())
}

async fn changed(store: &impl LeaseStore, known: Option<String>) -> Change {
    tokio::time::timeout(PATIENCE, store.changed(known))
        .await
        .expect("changed() resolves")
}

async fn create_get_and_a_version_checked_update_round_trip(which: Which) {
    let Some(server) = FakeApiServer::start_on(which, "create_get_and_a_version_check").await
    else {
        return;
    };
    let store = store(&server, "a").await;
    assert_eq!(store.get().await.expect("get"), None);
    let created = store.create(&record("a", 1)).await.expect("create");
    assert_eq!(store.get().await.expect("get"), Some(created.clone()));
    let renewed = store
        .update(&record("a", 1), &created.version)
        .await
        .expect("update");
    assert_ne!(renewed.version, created.version);
    assert_eq!(renewed.record.holder(), Some("a"));
}

async fn a_second_create_and_a_stale_update_are_conflicts_not_blind_writes(which: Which) {
    let Some(server) = FakeApiServer::start_on(which, "a_second_create_and_a_stale_up").await
    else {
        return;
    };
    let a = store(&server, "a").await;
    let b = store(&server, "b").await;
    let created = a.create(&record("a", 1)).await.expect("create");
    let again = b.create(&record("b", 1)).await.expect_err("exists");
    assert!(matches!(again, Error::AlreadyExists { .. }), "{again}");
    a.update(&record("a", 1), &created.version)
        .await
        .expect("renew");
    let stale = b
        .update(&record("b", 2), &created.version)
        .await
        .expect_err("stale version");
    assert!(matches!(stale, Error::Conflict { .. }), "{stale}");
    assert!(stale.is_conflict());
    let current = b.get().await.expect("get").expect("a record");
    assert_eq!(current.record.holder(), Some("a"), "b wrote nothing");
}

async fn the_lease_carries_the_fields_client_go_writes(which: Which) {
    let Some(server) = FakeApiServer::start_on(which, "the_lease_carries_the_fields_c").await
    else {
        return;
    };
    let store = store(&server, "a").await;
    store.create(&record("pod-a", 4)).await.expect("create");
    let object = server
        .object(Resource::Leases, server.namespace(), LEASE)
        .expect("stored");
    let spec = &object["spec"];
    assert_eq!(spec["holderIdentity"], "pod-a");
    assert_eq!(spec["leaseDurationSeconds"], 3);
    assert_eq!(spec["leaseTransitions"], 4);
    assert_eq!(spec["acquireTime"], "2025-03-01T10:00:00.000000Z");
    let renew = spec["renewTime"].as_str().expect("renewTime");
    let fraction = renew.rsplit_once('.').map(|(_, f)| f.trim_end_matches('Z'));
    assert_eq!(fraction.map(str::len), Some(6), "{renew}");
}

async fn a_released_lease_is_written_with_an_empty_holder(which: Which) {
    let Some(server) = FakeApiServer::start_on(which, "a_released_lease_is_written_wi").await
    else {
        return;
    };
    let store = store(&server, "a").await;
    let created = store.create(&record("a", 1)).await.expect("create");
    let mut released = record("a", 1);
    released.holder_identity = None;
    released.lease_duration_seconds = 1;
    let written = store
        .update(&released, &created.version)
        .await
        .expect("release");
    assert_eq!(written.record.holder(), None);
    let object = server
        .object(Resource::Leases, server.namespace(), LEASE)
        .expect("stored");
    assert_eq!(object["spec"]["holderIdentity"], "");
}

async fn leases_released_by_client_go_read_as_free_whether_empty_or_null(which: Which) {
    let Some(server) = FakeApiServer::start_on(which, "leases_released_by_client_go_r").await
    else {
        return;
    };
    let go = raw(&server, "go").await;
    for holder in [serde_json::json!(""), serde_json::Value::Null] {
        let _ = go.delete(LEASE, &Default::default()).await;
        let lease: Lease = serde_json::from_value(serde_json::json!({
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": LEASE},
            "spec": {
                "holderIdentity": holder,
                "leaseDurationSeconds": 1,
                "acquireTime": "2025-03-01T10:00:00.000000Z",
                "renewTime": "2025-03-01T10:00:00.000000Z",
                "leaseTransitions": 5,
            },
        }))
        .expect("a lease");
        go.create(&PostParams::default(), &lease)
            .await
            .expect("create");
        let store = store(&server, "a").await;
        let current = store.get().await.expect("get").expect("a record");
        assert_eq!(current.record.holder(), None, "holder {holder}");
        assert_eq!(current.record.lease_transitions, 5);
    }
}

async fn a_lease_without_a_spec_reads_as_free_and_can_be_taken(which: Which) {
    let Some(server) = FakeApiServer::start_on(which, "a_lease_without_a_spec_reads_a").await
    else {
        return;
    };
    let go = raw(&server, "go").await;
    let lease: Lease = serde_json::from_value(serde_json::json!({
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": LEASE},
    }))
    .expect("a lease");
    go.create(&PostParams::default(), &lease)
        .await
        .expect("create");
    let store = store(&server, "a").await;
    let current = store.get().await.expect("get").expect("a record");
    assert_eq!(current.record.holder(), None);
    assert_eq!(current.record.lease_transitions, 0);
    let taken = store
        .update(&record("a", 1), &current.version)
        .await
        .expect("take");
    assert_eq!(taken.record.holder(), Some("a"));
}

async fn a_watching_store_sees_a_peers_write_without_polling(which: Which) {
    let Some(server) = FakeApiServer::start_on(which, "a_watching_store_sees_a_peers_").await
    else {
        return;
    };
    let follower = store(&server, "follower").await;
    let leader = store(&server, "leader").await;
    let mut current = leader.create(&record("leader", 1)).await.expect("create");
    // The first call starts the watch; it reports the record it does not know yet.
    let first = changed(&follower, None).await;
    assert_eq!(first, Change::Record(Some(current.clone())));
    tokio::time::timeout(PATIENCE, async {
        while !follower.is_watching() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the watch comes up");
    let gets_before = count(&server, "follower", ApiVerb::Get);
    for _ in 0..4 {
        let known = Some(current.version.clone());
        let next = leader
            .update(&record("leader", 1), &current.version)
            .await
            .expect("renew");
        // Several poll intervals pass between renews: a polling store would GET meanwhile.
        tokio::time::sleep(RP * 3).await;
        match changed(&follower, known).await {
            Change::Record(Some(seen)) => assert_eq!(seen, next),
            other => panic!("expected the renewed record, got {other:?}"),
        }
        current = next;
    }
    assert_eq!(
        count(&server, "follower", ApiVerb::Get),
        gets_before,
        "no GETs while the watch is healthy"
    );
}

#[tokio::test]
async fn after_a_compaction_and_a_broken_watch_later_changes_are_still_reported() {
    let server = FakeApiServer::start().await;
    let follower = store(&server, "follower").await;
    let leader = store(&server, "leader").await;
    let mut current = leader.create(&record("leader", 1)).await.expect("create");
    assert_eq!(
        changed(&follower, None).await,
        Change::Record(Some(current.clone()))
    );
    for round in 0..2 {
        server.compact();
        server.break_watches();
        let known = Some(current.version.clone());
        current = leader
            .update(&record("leader", 1), &current.version)
            .await
            .expect("renew");
        match changed(&follower, known).await {
            Change::Record(Some(seen)) => assert_eq!(seen, current, "round {round}"),
            other => panic!("round {round}: {other:?}"),
        }
    }
}

async fn a_deleted_lease_is_reported_as_no_record(which: Which) {
    let Some(server) = FakeApiServer::start_on(which, "a_deleted_lease_is_reported_as").await
    else {
        return;
    };
    let follower = store(&server, "follower").await;
    let leader = store(&server, "leader").await;
    let current = leader.create(&record("leader", 1)).await.expect("create");
    assert_eq!(
        changed(&follower, None).await,
        Change::Record(Some(current.clone()))
    );
    raw(&server, "admin")
        .await
        .delete(LEASE, &Default::default())
        .await
        .expect("delete");
    assert_eq!(
        changed(&follower, Some(current.version)).await,
        Change::Record(None)
    );
}

async fn a_hung_request_times_out_instead_of_waiting_forever(which: Which) {
    let Some(server) = FakeApiServer::start_on(which, "a_hung_request_times_out_inste").await
    else {
        return;
    };
    let store = store(&server, "a").await;
    server.faults("a").set(Fault::Hang);
    let error = store.get().await.expect_err("hangs");
    assert!(matches!(error, Error::Timeout { .. }), "{error}");
    assert!(error.is_transient());
    let error = store.create(&record("a", 1)).await.expect_err("hangs");
    assert!(matches!(error, Error::Timeout { .. }), "{error}");
}

async fn kube_does_not_retry_a_503_behind_our_back(which: Which) {
    let Some(server) = FakeApiServer::start_on(which, "kube_does_not_retry_a_503_behi").await
    else {
        return;
    };
    let store = store(&server, "a").await;
    server.faults("a").set(Fault::Status(503));
    let error = store.get().await.expect_err("503");
    assert!(matches!(error, Error::Api { code: 503, .. }), "{error}");
    assert!(error.is_transient());
    assert_eq!(count(&server, "a", ApiVerb::Get), 1, "exactly one request");
}

async fn polling_takes_over_while_the_watch_is_down(which: Which) {
    let Some(server) = FakeApiServer::start_on(which, "polling_takes_over_while_the_w").await
    else {
        return;
    };
    let follower = store(&server, "follower").await;
    let leader = store(&server, "leader").await;
    let current = leader.create(&record("leader", 1)).await.expect("create");
    server
        .faults("follower")
        .set_for(&[ApiVerb::Watch], Fault::Status(500));
    assert_eq!(
        changed(&follower, None).await,
        Change::Record(Some(current.clone()))
    );
    let next = leader
        .update(&record("leader", 1), &current.version)
        .await
        .expect("renew");
    assert_eq!(
        changed(&follower, Some(current.version)).await,
        Change::Record(Some(next))
    );
    assert!(!follower.is_watching());
    assert!(count(&server, "follower", ApiVerb::Get) >= 1, "it polled");
}

async fn a_forbidden_read_names_the_verb_and_resource(which: Which) {
    let Some(server) = FakeApiServer::start_on(which, "a_forbidden_read_names_the_ver").await
    else {
        return;
    };
    let store = store(&server, "a").await;
    server.deny("a", Resource::Leases, &[ApiVerb::Get]);
    let error = store.get().await.expect_err("forbidden");
    assert!(!error.is_transient());
    let text = error.to_string();
    assert!(
        text.contains("\"get\"")
            && text.contains("\"leases\"")
            && text.contains("coordination.k8s.io"),
        "{text}"
    );
}

/// The store keeps its connection between requests, however long it idles: a new connection per request
/// costs a TLS handshake, and on Linux the first request after it waited for a delayed ACK (~40 ms, since
/// kube's connector leaves TCP_NODELAY off), which the real server showed as a run-state claim 51 ms
/// late for a job every 5 s. A read timeout on the connection used to close it after RP of idling.
async fn an_idle_store_keeps_its_connection(which: Which) {
    let Some(server) = FakeApiServer::start_on(which, "an_idle_store_keeps_its_connection").await
    else {
        return;
    };
    let store = store(&server, "a").await;
    assert_eq!(store.get().await.expect("get"), None);
    let opened = server.connections();
    for _ in 0..2 {
        tokio::time::sleep(RP * 3).await;
        assert_eq!(store.get().await.expect("get"), None);
    }
    tokio::time::sleep(RP * 3).await;
    store.create(&record("a", 1)).await.expect("create");
    assert_eq!(
        server.connections(),
        opened,
        "idle for 3 × RP between requests, the store opened new connections"
    );
}

on_both_servers!(
    #[tokio::test]
    an_idle_store_keeps_its_connection,
    create_get_and_a_version_checked_update_round_trip,
    a_second_create_and_a_stale_update_are_conflicts_not_blind_writes,
    the_lease_carries_the_fields_client_go_writes,
    a_released_lease_is_written_with_an_empty_holder,
    leases_released_by_client_go_read_as_free_whether_empty_or_null,
    a_lease_without_a_spec_reads_as_free_and_can_be_taken,
    a_watching_store_sees_a_peers_write_without_polling,
    a_deleted_lease_is_reported_as_no_record,
    a_hung_request_times_out_instead_of_waiting_forever,
    kube_does_not_retry_a_503_behind_our_back,
    polling_takes_over_while_the_watch_is_down,
    a_forbidden_read_names_the_verb_and_resource,
);
