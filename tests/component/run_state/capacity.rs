//! The run state ConfigMap's capacity, on the strict fake API server (which refuses a ConfigMap over
//! 1 MiB with 422, as the real one does) and on the real one through the fake in proxy mode: 10 000 jobs fit;
//! format 1, which every version reads, is written while it fits and read whoever wrote it; the history
//! is shed evenly where 1 MiB cannot hold it, never a claim and never an acknowledgement. `leasecron run`
//! refusing a job set whose run state may not fit is in `tests/binary/run_state/capacity.rs`.

use crate::on_both_servers;
use crate::support::{fake_apiserver, scale_jobs};

use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use fake_apiserver::{FakeApiServer, Resource, Which};
use futures_util::future::join_all;
use leasecron::kubernetes::run_state::{encoding, StateConfigMap, KEY};
use leasecron::run_state::{
    Cause, Claim, Completion, Ledger, Origin, RequestState, RunResult, StateRecord, TermStart,
    HISTORY_PER_JOB,
};
use leasecron::term::FencingToken;
use scale_jobs::names;

const LEASE: &str = "cron";
const STATE: &str = "cron-state";
const TIMEOUT: Duration = Duration::from_secs(10);

fn slot(s: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_800_000_000 + s, 0)
        .single()
        .expect("valid")
}

async fn ledger(server: &FakeApiServer, token: &str) -> Ledger {
    let state = StateConfigMap::new(
        server.config(token).await,
        server.namespace(),
        LEASE,
        TIMEOUT,
    )
    .expect("a store for a valid Lease name");
    Ledger::new(state, format!("{token}-replica-7d9f8b6c5-x2k4q"))
}

/// The text under `state.json`.
fn stored_text(server: &FakeApiServer) -> String {
    server
        .object(Resource::ConfigMaps, server.namespace(), STATE)
        .expect("the state ConfigMap exists")["data"][KEY]
        .as_str()
        .expect("a state.json text")
        .to_owned()
}

/// The stored format, as a version that reads only format 1 sees it: `Some(record)` if it can read it.
fn readable_by_format_1_readers(server: &FakeApiServer) -> Option<StateRecord> {
    serde_json::from_str::<StateRecord>(&stored_text(server)).ok()
}

/// Claims slot `at` of every job and records its completion, all at once (as at a burst of fires).
async fn run_all(ledger: &Ledger, names: &[String], at: i64, token: u64, outcome: &str) {
    let claims = join_all(names.iter().map(|name| {
        ledger.claim(
            name,
            slot(at),
            FencingToken(token),
            slot(at),
            &Origin::SCHEDULE,
        )
    }))
    .await;
    for (name, claim) in names.iter().zip(claims) {
        assert_eq!(claim.expect("the API answers"), Claim::Claimed, "{name}");
    }
    let completions = join_all(names.iter().map(|name| {
        let completion = Completion {
            slot: slot(at),
            outcome: outcome.to_owned(),
            finished_at: slot(at + 5),
        };
        ledger.complete(
            name,
            FencingToken(token),
            &Origin::SCHEDULE,
            completion,
            RunResult::default(),
        )
    }))
    .await;
    for completion in completions {
        completion.expect("the API answers");
    }
}

async fn ten_thousand_jobs_with_the_longest_names_are_claimed_and_read_back_by_another_replica(
    which: Which,
) {
    let Some(server) = FakeApiServer::start_on(which, "ten_thousand_jobs_with_the_l").await else {
        return;
    };
    let a = ledger(&server, "a").await;
    assert!(
        matches!(
            a.begin_term(FencingToken(1)).await.expect("api"),
            TermStart::Begun(_)
        ),
        "not stale"
    );
    // 63 characters: the longest job name (a DNS-1123 label). Failed runs: the last success is kept apart.
    let names = names(10_000, &"n".repeat(57));
    run_all(&a, &names, 60, 1, "failed").await;

    let text = stored_text(&server);
    assert!(text.len() <= encoding::MAX_BYTES, "{} bytes", text.len());
    let format = serde_json::from_str::<serde_json::Value>(&text).expect("JSON")["format"].clone();
    assert_eq!(format, 2, "the compact format");
    let b = ledger(&server, "b").await;
    let TermStart::Begun(record) = b.begin_term(FencingToken(2)).await.expect("api") else {
        panic!("not stale")
    };
    assert_eq!(record.jobs.len(), 10_000);
    for name in &names {
        let job = &record.jobs[name];
        let started = job.last_started.as_ref().expect("started");
        assert_eq!(
            (started.slot, started.fencing_token),
            (slot(60), 1),
            "{name}"
        );
        let completed = job.last_completion.as_ref().expect("completed");
        assert_eq!(
            (completed.slot, completed.outcome.as_str()),
            (slot(60), "failed")
        );
    }
    // The slots are claimed: the new term does not start them again.
    assert_eq!(
        b.claim(
            &names[0],
            slot(60),
            FencingToken(2),
            slot(61),
            &Origin::SCHEDULE
        )
        .await
        .expect("api"),
        Claim::AlreadyStarted {
            slot: slot(60),
            fencing_token: 1
        }
    );
}

async fn a_record_written_by_the_previous_version_is_read_and_format_1_is_kept_while_it_fits(
    which: Which,
) {
    let Some(server) = FakeApiServer::start_on(which, "a_record_written_by_the_prev").await else {
        return;
    };
    // The previous version wrote pretty JSON in format 1.
    let old = ledger(&server, "old").await;
    assert!(
        matches!(
            old.begin_term(FencingToken(1)).await.expect("api"),
            TermStart::Begun(_)
        ),
        "not stale"
    );
    run_all(&old, &names(3, "job"), 60, 1, "succeeded").await;
    let pretty = serde_json::to_string_pretty(&old.snapshot()).expect("encodes");
    let admin = kube::Api::<k8s_openapi::api::core::v1::ConfigMap>::namespaced(
        server.client("admin").await,
        server.namespace(),
    );
    let mut config_map = admin.get(STATE).await.expect("get");
    config_map.data = Some([(KEY.to_owned(), pretty)].into());
    admin
        .replace(STATE, &Default::default(), &config_map)
        .await
        .expect("replace");

    let new = ledger(&server, "new").await;
    let TermStart::Begun(record) = new.begin_term(FencingToken(2)).await.expect("api") else {
        panic!("not stale")
    };
    assert_eq!(record.jobs, old.snapshot().jobs, "every field read");
    let more = names(5, "job");
    run_all(&new, &more, 120, 2, "succeeded").await;
    // Small enough for format 1: an older replica taking over reads it all.
    let readable = readable_by_format_1_readers(&server).expect("format 1");
    assert_eq!(readable.jobs.len(), 5);
    assert_eq!(readable, new.snapshot());
}

async fn a_record_goes_to_format_2_past_format_1s_capacity_and_back_once_jobs_are_removed(
    which: Which,
) {
    let Some(server) = FakeApiServer::start_on(which, "a_record_goes_to_format_2_pa").await else {
        return;
    };
    let a = ledger(&server, "a").await;
    assert!(
        matches!(
            a.begin_term(FencingToken(1)).await.expect("api"),
            TermStart::Begun(_)
        ),
        "not stale"
    );
    // Format 1 holds about 2 500 jobs with names of 23 characters: 4 000 do not fit.
    let names = names(4_000, "nightly-report-db");
    run_all(&a, &names, 60, 1, "succeeded").await;
    assert!(readable_by_format_1_readers(&server).is_none(), "format 2");
    let in_memory = a.snapshot();
    let b = ledger(&server, "b").await;
    let TermStart::Begun(record) = b.begin_term(FencingToken(2)).await.expect("api") else {
        panic!("not stale")
    };
    // Format 2 with details keeps every field, to the millisecond (these are whole seconds), the one run
    // in each job's history included.
    assert!(in_memory.jobs.values().all(|job| job.history.len() == 1));
    assert!(record.jobs == in_memory.jobs, "every field read back");

    let kept: Vec<&str> = names[..100].iter().map(String::as_str).collect();
    b.retain_jobs(FencingToken(2), &kept).await.expect("api");
    let readable = readable_by_format_1_readers(&server).expect("format 1 again");
    assert_eq!(readable.jobs.len(), 100);
}

/// Claims `slots` slots of every job and completes them, each slot's claims at once and all the slots
/// together (the group commit writes them in a few writes); the claims and completions of a slot come
/// after those of the slot before, so each job's history ends up with a run per slot.
async fn run_slots(ledger: &Ledger, names: &[String], slots: i64, token: u64) {
    let at = |n: i64| 3600 * (n + 1);
    let claims = join_all((0..slots).flat_map(|n| {
        names.iter().map(move |name| {
            ledger.claim(
                name,
                slot(at(n)),
                FencingToken(token),
                slot(at(n)),
                &Origin::SCHEDULE,
            )
        })
    }))
    .await;
    assert!(
        claims
            .into_iter()
            .all(|claim| claim.expect("the API answers") == Claim::Claimed),
        "every slot claimed"
    );
    let completions = join_all((0..slots).flat_map(|n| {
        names.iter().map(move |name| {
            let completion = Completion {
                slot: slot(at(n)),
                outcome: "succeeded".to_owned(),
                finished_at: slot(at(n) + 5),
            };
            let result = RunResult {
                exit_code: Some(0),
                signal: None,
                attempts: 1,
            };
            ledger.complete(
                name,
                FencingToken(token),
                &Origin::SCHEDULE,
                completion,
                result,
            )
        })
    }))
    .await;
    for completion in completions {
        completion.expect("the API answers");
    }
}

async fn ten_thousand_jobs_with_full_histories_shed_their_history_never_a_claim_or_an_acknowledgement(
    which: Which,
) {
    let Some(server) = FakeApiServer::start_on(which, "ten_thousand_jobs_with_full_h").await else {
        return;
    };
    let a = ledger(&server, "a").await;
    assert!(
        matches!(
            a.begin_term(FencingToken(1)).await.expect("api"),
            TermStart::Begun(_)
        ),
        "not stale"
    );
    // Names of 20 characters, as in the figures of the encoding's documentation.
    let names = names(10_000, "nightly-report");
    let slots = i64::try_from(HISTORY_PER_JOB).expect("small");
    run_slots(&a, &names, slots, 1).await;
    // An operator's trigger: its acknowledgement is written with its claim.
    let trigger = Origin::requested(Cause::Trigger, "0193a1b2c3d4-1a2b3c4d", slot(10));
    assert_eq!(
        a.claim(&names[7], slot(11), FencingToken(1), slot(11), &trigger)
            .await
            .expect("api"),
        Claim::Claimed
    );
    let in_memory = a.snapshot();
    assert!(
        in_memory
            .jobs
            .values()
            .all(|job| job.history.len() >= HISTORY_PER_JOB),
        "a full history each, in memory"
    );
    // One more claim, of a record whose full history 1 MiB cannot hold: the history gives way.
    let next = slot(3600 * (slots + 1));
    assert_eq!(
        a.claim(&names[0], next, FencingToken(1), next, &Origin::SCHEDULE)
            .await
            .expect("the claim is written"),
        Claim::Claimed
    );
    let text = stored_text(&server);
    assert!(text.len() <= encoding::MAX_BYTES, "{} bytes", text.len());
    let format = serde_json::from_str::<serde_json::Value>(&text).expect("JSON")["format"].clone();
    assert_eq!(format, 2, "the compact format");

    // Another replica reads every claim, the acknowledgement, and the same number of last runs of every
    // job.
    let b = ledger(&server, "b").await;
    let TermStart::Begun(record) = b.begin_term(FencingToken(2)).await.expect("api") else {
        panic!("not stale")
    };
    assert_eq!(record.jobs.len(), 10_000);
    assert_eq!(
        record.jobs[&names[0]]
            .last_started
            .as_ref()
            .map(|s| (s.slot, s.fencing_token)),
        Some((next, 1))
    );
    let kept = record.jobs[&names[1]].history.len();
    assert!(kept < HISTORY_PER_JOB, "the history is shed: {kept}");
    for name in &names[1..] {
        let job = &record.jobs[name];
        let started = job.last_started.as_ref().expect("started");
        assert_eq!(
            (started.slot, started.fencing_token),
            (slot(3600 * slots), 1),
            "{name}"
        );
        let known = &in_memory.jobs[name].history;
        assert!(
            job.history[..] == known[known.len() - kept..],
            "{name}: its last {kept} runs"
        );
    }
    let ack = &record.requests["0193a1b2c3d4-1a2b3c4d"];
    assert_eq!(
        (ack.job.as_str(), ack.state, ack.slot),
        (names[7].as_str(), RequestState::Running, Some(slot(11)))
    );
    // The trigger is not carried out again.
    assert_eq!(
        b.claim(&names[7], slot(12), FencingToken(2), slot(12), &trigger)
            .await
            .expect("api"),
        Claim::AlreadyStarted {
            slot: slot(11),
            fencing_token: 1
        }
    );
}

on_both_servers!(
    #[tokio::test]
    ten_thousand_jobs_with_the_longest_names_are_claimed_and_read_back_by_another_replica,
    a_record_written_by_the_previous_version_is_read_and_format_1_is_kept_while_it_fits,
    a_record_goes_to_format_2_past_format_1s_capacity_and_back_once_jobs_are_removed,
    ten_thousand_jobs_with_full_histories_shed_their_history_never_a_claim_or_an_acknowledgement,
);
