//! The run state in the ConfigMap `<lease>-state`, on the strict fake API server and on the real one:
//! through the real [`Ledger`] over [`StateConfigMap`] (claims across replicas, fencing of stale terms,
//! racing claims, rebuilds of unusable records — the file store's tests, on the API), the store's
//! compare-and-swap itself, the object as written, outages and hangs, and RBAC.

use crate::on_both_servers;
use crate::support::fake_apiserver;
use leasecron::run_state::{Origin, RunResult};

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use fake_apiserver::{FakeApiServer, Fault, Resource, Verb as ApiVerb, Which};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ObjectMeta, PostParams};
use leasecron::kubernetes::run_state::{self as kube_state, StateConfigMap, KEY};
use leasecron::run_state::{
    self, Claim, Completion, JobRecord, Ledger, Loaded, Saved, SlotStart, StateRecord, TermStart,
};
use leasecron::term::FencingToken;

/// The Lease whose run state the tests keep.
const LEASE: &str = "cron";
/// Its run state ConfigMap.
const STATE: &str = "cron-state";
/// The request timeout of the stores.
const TIMEOUT: Duration = Duration::from_secs(2);
/// A short request timeout, for the tests of hangs.
const SHORT_TIMEOUT: Duration = Duration::from_millis(300);
/// How long a bounded call may take at most, however the API server behaves.
const PATIENCE: Duration = Duration::from_secs(5);

fn slot(s: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_800_000_000 + s, 0)
        .single()
        .expect("valid")
}

/// The store of client `token`, with `timeout` on every request.
async fn store_with(server: &FakeApiServer, token: &str, timeout: Duration) -> StateConfigMap {
    StateConfigMap::new(
        server.config(token).await,
        server.namespace(),
        LEASE,
        timeout,
    )
    .expect("a store for a valid Lease name")
}

async fn store(server: &FakeApiServer, token: &str) -> StateConfigMap {
    store_with(server, token, TIMEOUT).await
}

/// The ledger of replica `token` (its identity too).
async fn ledger_with(server: &FakeApiServer, token: &str, timeout: Duration) -> Ledger {
    Ledger::new(store_with(server, token, timeout).await, token.to_owned())
}

async fn ledger(server: &FakeApiServer, token: &str) -> Ledger {
    ledger_with(server, token, TIMEOUT).await
}

/// The ConfigMap API of an administrator, who edits objects by hand.
async fn admin(server: &FakeApiServer) -> Api<ConfigMap> {
    Api::namespaced(server.client("admin").await, server.namespace())
}

/// Writes `data` into the state ConfigMap by hand (creating it, or replacing what is there), with a
/// label of the operator's own.
async fn hand_write(server: &FakeApiServer, data: &[(&str, &str)]) {
    let api = admin(server).await;
    let mut config_map = ConfigMap {
        metadata: ObjectMeta {
            name: Some(STATE.to_owned()),
            labels: Some(BTreeMap::from([("team".to_owned(), "ops".to_owned())])),
            ..ObjectMeta::default()
        },
        data: Some(
            data.iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        ),
        ..ConfigMap::default()
    };
    let post = PostParams::default();
    match api.get_opt(STATE).await.expect("get the state ConfigMap") {
        None => {
            api.create(&post, &config_map).await.expect("create");
        }
        Some(current) => {
            config_map.metadata.resource_version = current.metadata.resource_version;
            api.replace(STATE, &post, &config_map)
                .await
                .expect("replace");
        }
    }
}

/// How errors and logs name the state ConfigMap: `configmap NAMESPACE/cron-state`.
fn described(server: &FakeApiServer) -> String {
    format!("configmap {}/{STATE}", server.namespace())
}

/// The state ConfigMap as stored.
fn stored(server: &FakeApiServer) -> serde_json::Value {
    server
        .object(Resource::ConfigMaps, server.namespace(), STATE)
        .expect("the state ConfigMap exists")
}

/// The record in the stored ConfigMap.
fn stored_record(server: &FakeApiServer) -> StateRecord {
    let text = stored(server)["data"][KEY]
        .as_str()
        .expect("a state.json text")
        .to_owned();
    serde_json::from_str(&text).expect("a usable record")
}

/// Requests of client `token` with `verb` answered `status`.
fn answered(server: &FakeApiServer, token: &str, verb: ApiVerb, status: u16) -> usize {
    server
        .requests()
        .iter()
        .filter(|r| {
            r.token.as_deref() == Some(token) && r.verb == Some(verb) && r.status == Some(status)
        })
        .count()
}

/// The store's error inside a ledger's.
fn kube_error(error: run_state::Error) -> kube_state::Error {
    match error {
        run_state::Error::Store(error) => *error
            .downcast::<kube_state::Error>()
            .expect("the ConfigMap store's error"),
        other => panic!("expected a ConfigMap store error, got {other:?}"),
    }
}

async fn begin(ledger: &Ledger, token: u64) -> StateRecord {
    let begun = ledger.begin_term(FencingToken(token)).await;
    let TermStart::Begun(record) = begun.expect("the API answers") else {
        panic!("not stale");
    };
    record
}

// === The ledger over the ConfigMap (the file store's tests) ===

async fn a_slot_is_claimed_once_across_ledgers(which: Which) {
    let Some(server) = FakeApiServer::start_on(which, "a_slot_is_claimed_once_across_").await
    else {
        return;
    };
    let a = ledger(&server, "a").await;
    let b = ledger(&server, "b").await;
    begin(&a, 1).await;
    assert_eq!(
        a.claim("j", slot(10), FencingToken(1), slot(10), &Origin::SCHEDULE)
            .await
            .expect("api"),
        Claim::Claimed
    );
    // A new term on another replica sees the slot as started.
    let record = begin(&b, 2).await;
    assert_eq!(
        record.jobs["j"].last_started.as_ref().map(|s| s.slot),
        Some(slot(10))
    );
    assert_eq!(
        b.claim("j", slot(10), FencingToken(2), slot(11), &Origin::SCHEDULE)
            .await
            .expect("api"),
        Claim::AlreadyStarted {
            slot: slot(10),
            fencing_token: 1
        }
    );
    assert_eq!(
        b.claim("j", slot(20), FencingToken(2), slot(20), &Origin::SCHEDULE)
            .await
            .expect("api"),
        Claim::Claimed
    );
    let started = stored_record(&server).jobs["j"].last_started.clone();
    assert_eq!(
        started.map(|s| (s.slot, s.fencing_token, s.identity)),
        Some((slot(20), 2, "b".to_owned()))
    );
}

async fn a_stale_term_cannot_write(which: Which) {
    let Some(server) = FakeApiServer::start_on(which, "a_stale_term_cannot_write").await else {
        return;
    };
    let old = ledger(&server, "old").await;
    let new = ledger(&server, "new").await;
    begin(&old, 3).await;
    begin(&new, 4).await;
    // The old leader's cached view is outdated: its PUT is a 409, it re-reads, and is refused.
    assert_eq!(
        old.claim("j", slot(30), FencingToken(3), slot(30), &Origin::SCHEDULE)
            .await
            .expect("api"),
        Claim::Stale { record_token: 4 }
    );
    assert!(answered(&server, "old", ApiVerb::Update, 409) >= 1);
    let completion = Completion {
        slot: slot(30),
        outcome: "succeeded".to_owned(),
        finished_at: slot(31),
    };
    assert_eq!(
        old.complete(
            "j",
            FencingToken(3),
            &Origin::SCHEDULE,
            completion,
            RunResult::default()
        )
        .await
        .expect("api"),
        Claim::Stale { record_token: 4 }
    );
    assert_eq!(
        old.begin_term(FencingToken(3)).await.expect("api"),
        TermStart::Superseded { record_token: 4 },
        "an older term cannot even begin"
    );
    let record = new.refresh().await.expect("api");
    assert!(
        !record.jobs.contains_key("j"),
        "nothing of the stale term landed"
    );
    assert_eq!(stored_record(&server).fencing_token, 4);
}

async fn a_corrupt_or_newer_record_is_rebuilt(which: Which) {
    let Some(server) = FakeApiServer::start_on(which, "a_corrupt_or_newer_record_is_r").await
    else {
        return;
    };
    let unknown_field = r#"{"format": 1, "fencingToken": 2, "jobs": {}, "newField": 1}"#;
    let newer_format = r#"{"format": 3, "fencingToken": 2, "jobs": {}}"#;
    let cases: [&[(&str, &str)]; 4] = [
        &[(KEY, "not json")],
        &[(KEY, unknown_field)],
        &[(KEY, newer_format)],
        &[("other.json", "{}")],
    ];
    for data in cases {
        hand_write(&server, data).await;
        let ledger = ledger(&server, "a").await;
        let record = begin(&ledger, 5).await;
        assert!(record.jobs.is_empty(), "{data:?}");
        assert_eq!(record.fencing_token, 5, "{data:?}");
        assert_eq!(stored_record(&server).fencing_token, 5, "{data:?}");
        // Our label joins the operator's; the ConfigMap now holds the one key.
        let labels = &stored(&server)["metadata"]["labels"];
        assert_eq!(labels["team"], "ops", "{data:?}");
        assert_eq!(
            labels[kube_state::MANAGED_BY_LABEL],
            "leasecron",
            "{data:?}"
        );
        let keys: Vec<String> = stored(&server)["data"]
            .as_object()
            .map(|data| data.keys().cloned().collect())
            .unwrap_or_default();
        assert_eq!(keys, [KEY], "{data:?}");
    }
}

async fn a_rerun_may_claim_the_interrupted_slot_once(which: Which) {
    let Some(server) = FakeApiServer::start_on(which, "a_rerun_may_claim_the_interrup").await
    else {
        return;
    };
    let old = ledger(&server, "old").await;
    begin(&old, 1).await;
    old.claim("j", slot(10), FencingToken(1), slot(10), &Origin::SCHEDULE)
        .await
        .expect("api");
    let new = ledger(&server, "new").await;
    begin(&new, 2).await;
    assert_eq!(
        new.claim("j", slot(10), FencingToken(2), slot(12), &Origin::RETRY)
            .await
            .expect("api"),
        Claim::Claimed
    );
    assert!(matches!(
        new.claim("j", slot(10), FencingToken(2), slot(13), &Origin::RETRY)
            .await
            .expect("api"),
        Claim::AlreadyStarted {
            fencing_token: 2,
            ..
        }
    ));
}

// === Racing writers ===

async fn racing_claims_of_one_slot_by_two_ledgers_of_one_term_claim_it_once(which: Which) {
    let Some(server) = FakeApiServer::start_on(which, "racing_claims_of_one_slot_by_t").await
    else {
        return;
    };
    let a = ledger(&server, "a").await;
    let b = ledger(&server, "b").await;
    // Both begin the same term (two replicas that each believe they lead): both cache one version.
    begin(&a, 7).await;
    begin(&b, 7).await;
    for round in 1..=20 {
        let at = slot(10 * round);
        let (from_a, from_b) = tokio::join!(
            a.claim("j", at, FencingToken(7), at, &Origin::SCHEDULE),
            b.claim("j", at, FencingToken(7), at, &Origin::SCHEDULE),
        );
        let claims = [from_a.expect("api"), from_b.expect("api")];
        let won = claims.iter().filter(|c| **c == Claim::Claimed).count();
        assert_eq!(won, 1, "round {round}: {claims:?}");
        assert!(
            claims
                .iter()
                .any(|c| matches!(c, Claim::AlreadyStarted { slot, .. } if *slot == at)),
            "round {round}: {claims:?}"
        );
    }
    // The claims really raced: the loser's PUT carried the version the winner had just replaced.
    let conflicts =
        answered(&server, "a", ApiVerb::Update, 409) + answered(&server, "b", ApiVerb::Update, 409);
    assert!(conflicts > 0, "no write conflicted");
}

async fn racing_first_writes_create_the_configmap_once(which: Which) {
    let Some(server) = FakeApiServer::start_on(which, "racing_first_writes_create_the").await
    else {
        return;
    };
    let a = ledger(&server, "a").await;
    let b = ledger(&server, "b").await;
    let (from_a, from_b) = tokio::join!(
        a.claim("j", slot(10), FencingToken(1), slot(10), &Origin::SCHEDULE),
        b.claim("j", slot(10), FencingToken(1), slot(10), &Origin::SCHEDULE),
    );
    let claims = [from_a.expect("api"), from_b.expect("api")];
    assert_eq!(
        claims.iter().filter(|c| **c == Claim::Claimed).count(),
        1,
        "{claims:?}"
    );
    let creates =
        answered(&server, "a", ApiVerb::Create, 201) + answered(&server, "b", ApiVerb::Create, 201);
    assert_eq!(creates, 1);
}

// === The store ===

async fn every_write_is_a_compare_and_swap_on_the_resource_version(which: Which) {
    let Some(server) = FakeApiServer::start_on(which, "every_write_is_a_compare_and_s").await
    else {
        return;
    };
    let state = store(&server, "a").await;
    assert!(
        matches!(state.load().await.expect("api"), Loaded::Absent),
        "no ConfigMap yet"
    );
    let record = StateRecord {
        format: run_state::FORMAT,
        fencing_token: 1,
        ..StateRecord::default()
    };
    let Saved::Written(first) = state.save(&record, None).await.expect("api") else {
        panic!("the first create writes");
    };
    assert_eq!(
        state.save(&record, None).await.expect("api"),
        Saved::Conflict,
        "a second create is a conflict, not an overwrite"
    );
    let Loaded::Found {
        version,
        record: loaded,
    } = state.load().await.expect("api")
    else {
        panic!("a usable ConfigMap");
    };
    assert_eq!(version, first);
    assert_eq!(loaded, record);
    let next = StateRecord {
        fencing_token: 2,
        ..record.clone()
    };
    let Saved::Written(second) = state.save(&next, Some(&first)).await.expect("api") else {
        panic!("a write at the current version succeeds");
    };
    assert_ne!(second, first);
    assert_eq!(
        state.save(&record, Some(&first)).await.expect("api"),
        Saved::Conflict,
        "a stale version is a conflict"
    );
    assert_eq!(stored_record(&server).fencing_token, 2);
    admin(&server)
        .await
        .delete(STATE, &Default::default())
        .await
        .expect("delete");
    assert_eq!(
        state.save(&next, Some(&second)).await.expect("api"),
        Saved::Conflict,
        "a deleted ConfigMap is a conflict: read again"
    );
}

async fn the_configmap_holds_the_record_in_format_1_a_label_and_an_annotation(which: Which) {
    let Some(server) = FakeApiServer::start_on(which, "the_configmap_holds_the_record").await
    else {
        return;
    };
    let ledger = ledger(&server, "a").await;
    begin(&ledger, 1).await;
    ledger
        .claim("j", slot(10), FencingToken(1), slot(10), &Origin::SCHEDULE)
        .await
        .expect("api");
    let object = stored(&server);
    // Format 1, compact: what every leasecron version reads.
    let expected = serde_json::to_string(&ledger.snapshot()).expect("encodes");
    assert_eq!(object["data"][KEY], expected.as_str());
    assert_eq!(
        object["metadata"]["labels"][kube_state::MANAGED_BY_LABEL],
        "leasecron"
    );
    let description = object["metadata"]["annotations"][kube_state::DESCRIPTION_ANNOTATION]
        .as_str()
        .unwrap_or_default();
    let lease = format!("run state of Lease {}/{LEASE}", server.namespace());
    assert!(description.contains(&lease), "{description}");
    assert_eq!(
        ledger.describe(),
        described(&server),
        "logs name the object"
    );
}

async fn a_configmap_deleted_under_a_ledger_is_created_again(which: Which) {
    let Some(server) = FakeApiServer::start_on(which, "a_configmap_deleted_under_a_le").await
    else {
        return;
    };
    let ledger = ledger(&server, "a").await;
    begin(&ledger, 1).await;
    admin(&server)
        .await
        .delete(STATE, &Default::default())
        .await
        .expect("delete");
    // The cached version is gone: the PUT is a 404, the ledger reads again and creates it.
    assert_eq!(
        ledger
            .claim("j", slot(10), FencingToken(1), slot(10), &Origin::SCHEDULE)
            .await
            .expect("api"),
        Claim::Claimed
    );
    assert_eq!(answered(&server, "a", ApiVerb::Update, 404), 1);
    let record = stored_record(&server);
    assert_eq!(record.fencing_token, 1);
    assert!(record.jobs.contains_key("j"));
}

async fn a_record_too_large_for_a_configmap_is_a_permanent_error_naming_it_without_a_request(
    which: Which,
) {
    let Some(server) = FakeApiServer::start_on(which, "a_record_too_large_for_a_confi").await
    else {
        return;
    };
    let state = store(&server, "a").await;
    let job = JobRecord {
        last_started: Some(SlotStart {
            slot: slot(0),
            fencing_token: 1,
            identity: "pod-a".to_owned(),
            started_at: slot(0),
        }),
        ..JobRecord::default()
    };
    let record = StateRecord {
        format: run_state::FORMAT,
        fencing_token: 1,
        // About 80 bytes per job even with the essentials only: over the 1 MiB a ConfigMap may hold.
        jobs: (0..15_000)
            .map(|i| (format!("job-{i:05}-{}", "n".repeat(50)), job.clone()))
            .collect(),
        requests: Default::default(),
    };
    let error = state.save(&record, None).await.expect_err("too large");
    assert!(!error.is_transient());
    assert!(
        matches!(
            error,
            kube_state::Error::TooLarge {
                jobs: 15_000,
                limit: 1_048_576,
                ..
            }
        ),
        "{error:?}"
    );
    let message = error.to_string();
    let prefix = format!(
        "run state {}: the record of 15000 jobs needs ",
        described(&server)
    );
    assert!(message.starts_with(&prefix), "{message}");
    assert!(
        message.ends_with("bytes, over the 1048576 bytes a ConfigMap holds"),
        "{message}"
    );
    assert!(
        server
            .requests()
            .iter()
            .all(|r| r.verb != Some(ApiVerb::Create)),
        "nothing was sent"
    );
}

// === Outages ===

async fn a_503_is_a_transient_error_without_hidden_retries_and_the_next_call_works(which: Which) {
    let Some(server) = FakeApiServer::start_on(which, "a_503_is_a_transient_error_wit").await
    else {
        return;
    };
    let ledger = ledger(&server, "a").await;
    begin(&ledger, 1).await;
    server.faults("a").set(Fault::Status(503));
    let error = kube_error(
        ledger
            .claim("j", slot(10), FencingToken(1), slot(10), &Origin::SCHEDULE)
            .await
            .expect_err("503"),
    );
    assert!(error.is_transient(), "{error:?}");
    let prefix = format!(
        "run state {}: update: the Kubernetes API is unavailable: HTTP 503",
        described(&server)
    );
    assert!(error.to_string().starts_with(&prefix), "{error}");
    assert_eq!(
        answered(&server, "a", ApiVerb::Update, 503),
        1,
        "kube's retry layer is off"
    );
    server.faults("a").clear();
    assert_eq!(
        ledger
            .claim("j", slot(10), FencingToken(1), slot(11), &Origin::SCHEDULE)
            .await
            .expect("api"),
        Claim::Claimed
    );
}

async fn a_hung_api_server_is_a_transient_error_within_the_timeout_and_the_next_call_works(
    which: Which,
) {
    let Some(server) = FakeApiServer::start_on(which, "a_hung_api_server_is_a_transie").await
    else {
        return;
    };
    for (verb, token) in [(ApiVerb::Get, "reader"), (ApiVerb::Update, "writer")] {
        let ledger = ledger_with(&server, token, SHORT_TIMEOUT).await;
        if verb == ApiVerb::Update {
            begin(&ledger, 1).await;
        }
        server.faults(token).set_for(&[verb], Fault::Hang);
        let call = ledger.claim("j", slot(10), FencingToken(1), slot(10), &Origin::SCHEDULE);
        let error = tokio::time::timeout(PATIENCE, call)
            .await
            .expect("bounded by the request timeout, not hung")
            .expect_err("no answer");
        let error = kube_error(error);
        assert!(error.is_transient(), "{verb:?}: {error:?}");
        let prefix = format!("run state {}: ", described(&server));
        assert!(error.to_string().starts_with(&prefix), "{error}");
        server.faults(token).clear();
        let claim = ledger.claim("j", slot(10), FencingToken(1), slot(11), &Origin::SCHEDULE);
        assert_eq!(
            tokio::time::timeout(PATIENCE, claim)
                .await
                .expect("answered")
                .expect("api"),
            Claim::Claimed,
            "{verb:?}: the hung request wrote nothing"
        );
        admin(&server)
            .await
            .delete(STATE, &Default::default())
            .await
            .expect("delete");
    }
}

// === RBAC ===

async fn check_access_passes_when_the_verbs_are_allowed(which: Which) {
    let Some(server) = FakeApiServer::start_on(which, "check_access_passes_when_the_v").await
    else {
        return;
    };
    store(&server, "a")
        .await
        .check_access()
        .await
        .expect("get, create and update are allowed");
}

async fn check_access_reports_a_denied_update_with_the_rules_to_add(which: Which) {
    let Some(server) = FakeApiServer::start_on(which, "check_access_reports_a_denied_").await
    else {
        return;
    };
    server.deny("a", Resource::ConfigMaps, &[ApiVerb::Update]);
    let error = store(&server, "a")
        .await
        .check_access()
        .await
        .expect_err("update is denied");
    let kube_state::Error::AccessDenied { verbs, .. } = &error else {
        panic!("expected AccessDenied, got {error:?}");
    };
    assert_eq!(verbs, &["update"]);
    assert!(!error.is_transient());
    let message = error.to_string();
    for needle in [
        &format!(
            "run state {}: this replica's service account may not update the ConfigMap",
            described(&server)
        ),
        "{apiGroups: [\"\"], resources: [\"configmaps\"], verbs: [\"create\"]}",
        "resourceNames: [\"cron-state\"], verbs: [\"get\", \"update\"]}",
        &format!("namespace \"{}\"", server.namespace()),
    ] {
        assert!(message.contains(needle), "{needle} missing from: {message}");
    }
}

async fn a_review_that_cannot_be_made_passes_the_check(which: Which) {
    let Some(server) = FakeApiServer::start_on(which, "a_review_that_cannot_be_made_p").await
    else {
        return;
    };
    server.deny("a", Resource::ConfigMaps, &[ApiVerb::Update]);
    server.faults("a").set(Fault::Status(500));
    store(&server, "a")
        .await
        .check_access()
        .await
        .expect("a failed review proves nothing");
}

async fn a_forbidden_write_names_the_verb_and_the_rules(which: Which) {
    let Some(server) = FakeApiServer::start_on(which, "a_forbidden_write_names_the_ve").await
    else {
        return;
    };
    server.deny("a", Resource::ConfigMaps, &[ApiVerb::Create]);
    let error = kube_error(
        ledger(&server, "a")
            .await
            .begin_term(FencingToken(1))
            .await
            .expect_err("create is denied"),
    );
    assert!(
        matches!(error, kube_state::Error::Forbidden { verb: "create", .. }),
        "{error:?}"
    );
    assert!(!error.is_transient());

    begin(&ledger(&server, "b").await, 1).await;
    server.deny("c", Resource::ConfigMaps, &[ApiVerb::Update]);
    let error = kube_error(
        ledger(&server, "c")
            .await
            .begin_term(FencingToken(2))
            .await
            .expect_err("update is denied"),
    );
    let message = error.to_string();
    for needle in [
        &format!("run state {}: update is forbidden", described(&server)),
        "resourceNames: [\"cron-state\"], verbs: [\"get\", \"update\"]}",
        &format!("namespace \"{}\"", server.namespace()),
        "cannot update resource \"configmaps\"",
    ] {
        assert!(message.contains(needle), "{needle} missing from: {message}");
    }
}

on_both_servers!(
    #[tokio::test]
    a_slot_is_claimed_once_across_ledgers,
    a_stale_term_cannot_write,
    a_corrupt_or_newer_record_is_rebuilt,
    a_rerun_may_claim_the_interrupted_slot_once,
    racing_claims_of_one_slot_by_two_ledgers_of_one_term_claim_it_once,
    racing_first_writes_create_the_configmap_once,
    every_write_is_a_compare_and_swap_on_the_resource_version,
    the_configmap_holds_the_record_in_format_1_a_label_and_an_annotation,
    a_configmap_deleted_under_a_ledger_is_created_again,
    a_record_too_large_for_a_configmap_is_a_permanent_error_naming_it_without_a_request,
    a_503_is_a_transient_error_without_hidden_retries_and_the_next_call_works,
    a_hung_api_server_is_a_transient_error_within_the_timeout_and_the_next_call_works,
    check_access_passes_when_the_verbs_are_allowed,
    check_access_reports_a_denied_update_with_the_rules_to_add,
    a_review_that_cannot_be_made_passes_the_check,
    a_forbidden_write_names_the_verb_and_the_rules,
);
