//! The operator commands against stores in memory: what each files, what each prints, and how each
//! refuses.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;

use super::request::{self, check_range, count_slots, missed_slots_advice, parse_time};
use super::view::{self, current_term, job_view, render_history, render_status, Format};
use super::*;
use crate::backend::AnyLeaseStore;
use crate::config::{self, Job};
use crate::controls::{
    Controls, Read, Request, Saved, Store, StoreFuture, Suspension, FORMAT as CONTROLS_FORMAT,
};
use crate::local::lease::FileStore;
use crate::run_state::memory::MemoryStore;
use crate::run_state::{
    Cause, Completion, HistoryEntry, JobRecord, Ledger, Origin, RequestAck, RequestKind,
    RequestState, RunResult, StateRecord, MAX_BACKFILL_SLOTS,
};
use crate::term::FencingToken;

/// The controls in memory, with the compare-and-swap of the real stores.
#[derive(Debug, Clone, Default)]
struct MemoryControls {
    stored: Arc<Mutex<Option<(u64, Controls)>>>,
}

impl MemoryControls {
    fn controls(&self) -> Controls {
        self.lock()
            .as_ref()
            .map(|(_, c)| c.clone())
            .unwrap_or_default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<(u64, Controls)>> {
        self.stored.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Store for MemoryControls {
    fn describe(&self) -> String {
        "memory controls".to_owned()
    }

    fn load(&self) -> StoreFuture<'_, Read> {
        let read = match &*self.lock() {
            None => Read::default(),
            Some((generation, controls)) => Read {
                controls: controls.clone(),
                version: Some(generation.to_string()),
            },
        };
        Box::pin(std::future::ready(Ok(read)))
    }

    fn save<'a>(
        &'a self,
        controls: &'a Controls,
        version: Option<&'a str>,
    ) -> StoreFuture<'a, Saved> {
        let mut stored = self.lock();
        let current = stored.as_ref().map(|(g, _)| g.to_string());
        let saved = if current.as_deref() == version {
            let next = stored.as_ref().map_or(1, |(g, _)| g + 1);
            *stored = Some((next, controls.clone()));
            Saved::Written
        } else {
            Saved::Conflict
        };
        Box::pin(std::future::ready(Ok(saved)))
    }
}

const JOBS: &str = "jobs:
  - name: backup
    schedule: \"0 3 * * *\"
    timeZone: Europe/Berlin
    shell: \"true\"
  - name: tick
    schedule: \"*/10 * * * *\"
    shell: \"true\"
  - name: paused
    schedule: \"@hourly\"
    suspend: true
    shell: \"true\"
";

fn jobs() -> Jobs {
    let opts = LoadOptions {
        max_termination_grace: Duration::MAX,
    };
    Jobs {
        set: config::parse_str(JOBS, "jobs.yaml", &opts).expect("valid"),
        origin: "jobs.yaml".to_owned(),
    }
}

fn job(name: &str) -> Job {
    jobs().set.get(name).expect("configured").as_ref().clone()
}

/// An operator's view of a lease file with no lease yet, the run state and the controls in memory.
struct Fixture {
    opened: Opened,
    state: MemoryStore,
    controls: MemoryControls,
    _dir: tempfile::TempDir,
}

fn fixture(with_jobs: bool) -> Fixture {
    let dir = tempfile::tempdir().expect("temp dir");
    let lease = dir.path().join("lease");
    let state = MemoryStore::new();
    let controls = MemoryControls::default();
    let opened = Opened {
        place: Place::Local {
            lease: lease.clone(),
        },
        lease: AnyLeaseStore::File(FileStore::reader(lease.clone())),
        ledger: Ledger::new(state.clone(), String::new()),
        controls: Box::new(controls.clone()),
        jobs: with_jobs.then(jobs),
        flags: format!("--lease-file {} --jobs jobs.yaml", lease.display()),
        request_timeout: DEFAULT_REQUEST_TIMEOUT,
    };
    Fixture {
        opened,
        state,
        controls,
        _dir: dir,
    }
}

fn at(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .expect("RFC 3339")
        .with_timezone(&Utc)
}

fn printed(out: &[u8]) -> String {
    String::from_utf8_lossy(out).into_owned()
}

// === times and ranges ===

#[test]
fn times_are_rfc_3339_or_a_wall_clock_time_in_the_jobs_zone() {
    let berlin = chrono_tz::Europe::Berlin;
    assert_eq!(
        parse_time("2026-11-21T03:00:00+01:00", Tz::UTC).expect("offset"),
        at("2026-11-21T02:00:00Z")
    );
    assert_eq!(
        parse_time("2026-11-21T03:00", berlin).expect("local"),
        at("2026-11-21T02:00:00Z")
    );
    assert_eq!(
        parse_time("2026-11-21 03:00:30", berlin).expect("local, with a space"),
        at("2026-11-21T02:00:30Z")
    );
    let ambiguous = parse_time("2026-10-25T02:30", berlin).expect_err("the clocks go back");
    assert_eq!(
        ambiguous,
        "is ambiguous in Europe/Berlin, whose clocks go back then: it is 2026-10-25T02:30:00+02:00 or \
         2026-10-25T02:30:00+01:00; write the one you mean"
    );
    let skipped = parse_time("2026-03-29T02:30", berlin).expect_err("the clocks go forward");
    assert!(
        skipped.starts_with("does not exist in Europe/Berlin"),
        "{skipped}"
    );
    let garbage = parse_time("yesterday", berlin).expect_err("not a time");
    assert!(
        garbage.starts_with("not a time: write RFC 3339"),
        "{garbage}"
    );
    assert!(
        parse_time("2026-11-21", berlin).is_err(),
        "a date alone is not an instant"
    );
}

#[test]
fn slots_are_counted_inclusively_and_up_to_a_limit() {
    let tick = job("tick");
    let count = count_slots(
        &tick.schedule,
        at("2026-11-21T10:00:00Z"),
        at("2026-11-21T11:00:00Z"),
        100,
    );
    assert_eq!(count.count, 7, "10:00 to 11:00, both ends included");
    assert_eq!(count.first, Some(at("2026-11-21T10:00:00Z")));
    assert_eq!(count.last, Some(at("2026-11-21T11:00:00Z")));
    let capped = count_slots(
        &tick.schedule,
        at("2026-11-21T10:00:00Z"),
        at("2026-11-21T11:00:00Z"),
        3,
    );
    assert!(capped.truncated);
    assert_eq!(capped.describe(), "more than 3");
}

#[test]
fn a_backfill_range_must_have_passed_and_hold_one_to_a_thousand_slots() {
    let tick = job("tick");
    let now = at("2026-11-21T12:00:00Z");
    let ok = check_range(
        &tick,
        at("2026-11-21T10:00:00Z"),
        at("2026-11-21T10:59:59Z"),
        now,
    )
    .expect("six slots");
    assert_eq!(ok.count, 6);
    let message = |from, to| {
        let error = check_range(&tick, at(from), at(to), now).expect_err("refused");
        assert!(error.is_usage(), "{error}");
        error.to_string()
    };
    assert_eq!(
        message("2026-11-21T11:00:00Z", "2026-11-21T10:00:00Z"),
        "--from 2026-11-21T11:00:00Z is after --to 2026-11-21T10:00:00Z: the range is empty"
    );
    assert_eq!(
        message("2026-11-21T11:00:00Z", "2026-11-21T12:00:01Z"),
        "--to 2026-11-21T12:00:01Z is in the future (it is 2026-11-21T12:00:00Z now): a backfill runs \
         slots that have passed; `leasecron trigger tick` runs the job now"
    );
    assert_eq!(
        message("2026-11-21T10:01:00Z", "2026-11-21T10:09:00Z"),
        "0 slots of tick (\"*/10 * * * *\" in UTC) fall from 2026-11-21T10:01:00Z to \
         2026-11-21T10:09:00Z: nothing to backfill"
    );
    // Ten days of 10-minute slots: 1440.
    assert_eq!(
        message("2026-11-10T00:00:00Z", "2026-11-19T23:59:59Z"),
        format!(
            "1440 slots of tick (\"*/10 * * * *\" in UTC) fall from 2026-11-10T00:00:00Z to \
             2026-11-19T23:59:59Z; a backfill runs at most {MAX_BACKFILL_SLOTS}: split the range (the first \
             1000 end at 2026-11-16T22:30:00Z)"
        )
    );
}

#[test]
fn resuming_says_how_many_slots_were_missed_and_the_backfill_that_runs_them() {
    let tick = job("tick");
    let flags = "--lease-file /tmp/l --jobs jobs.yaml";
    // Suspended mid-second: the range starts at the next whole second and ends at the last one.
    let lines = missed_slots_advice(
        "tick",
        Some(&tick.schedule),
        at("2026-11-21T09:55:00.300Z"),
        at("2026-11-21T10:25:30.900Z"),
        flags,
    );
    assert_eq!(
        lines,
        [
            "the 3 slots that fell due while it was suspended are not run; to run them:",
            "  leasecron backfill tick --from 2026-11-21T09:55:01Z --to 2026-11-21T10:25:30Z --lease-file \
             /tmp/l --jobs jobs.yaml",
        ]
    );
    let one = missed_slots_advice(
        "tick",
        Some(&tick.schedule),
        at("2026-11-21T09:55:00Z"),
        at("2026-11-21T10:05:00Z"),
        "",
    );
    assert_eq!(
        one[0],
        "the 1 slot that fell due while it was suspended is not run; to run it:"
    );
    assert!(one[1].ends_with("--to 2026-11-21T10:05:00Z"), "{}", one[1]);
    let none = missed_slots_advice(
        "tick",
        Some(&tick.schedule),
        at("2026-11-21T10:01:00Z"),
        at("2026-11-21T10:05:00Z"),
        "",
    );
    assert_eq!(none, ["no slot fell due while it was suspended"]);
    let unknown = missed_slots_advice(
        "tick",
        None,
        at("2026-11-21T10:01:00Z"),
        at("2026-11-21T10:05:00Z"),
        "",
    );
    assert_eq!(
        unknown[0],
        "the slots that fell due while it was suspended are not run; to run them:"
    );
}

// === status and history ===

fn entry(slot: &str, token: u64, outcome: Option<&str>) -> HistoryEntry {
    HistoryEntry {
        slot: at(slot),
        cause: Cause::Schedule,
        request: None,
        fencing_token: token,
        identity: format!("r{token}"),
        started_at: at(slot) + chrono::Duration::milliseconds(2),
        finished_at: outcome.map(|_| at(slot) + chrono::Duration::milliseconds(1_502)),
        outcome: outcome.map(str::to_owned),
        exit_code: outcome.map(|o| i32::from(o != "succeeded")),
        signal: None,
        attempts: outcome.map(|_| 1),
    }
}

fn lease(holder: Option<&str>, transitions: i32, renewed: &str) -> LeaseRecord {
    LeaseRecord {
        holder_identity: holder.map(str::to_owned),
        lease_duration_seconds: 15,
        acquire_time: Some(at("2026-11-21T08:00:00Z")),
        renew_time: Some(at(renewed)),
        lease_transitions: transitions,
    }
}

#[test]
fn the_current_term_is_the_holders_while_the_lease_is_live() {
    let now = at("2026-11-21T10:00:10Z");
    assert_eq!(
        current_term(Some(&lease(Some("r7"), 7, "2026-11-21T10:00:00Z")), now),
        Some(7)
    );
    assert_eq!(
        current_term(Some(&lease(Some("r7"), 7, "2026-11-21T09:59:00Z")), now),
        None,
        "expired"
    );
    assert_eq!(
        current_term(Some(&lease(None, 7, "2026-11-21T10:00:00Z")), now),
        None,
        "released"
    );
    assert_eq!(current_term(None, now), None);
}

#[test]
fn a_job_shows_its_runs_in_flight_last_run_next_slot_suspension_and_requests() {
    let tick = job("tick");
    let now = at("2026-11-21T10:20:05Z");
    let mut record = StateRecord::default();
    record.jobs.insert(
        "tick".to_owned(),
        JobRecord {
            history: vec![
                entry("2026-11-21T10:00:00Z", 6, Some("failed")),
                // Its term ended first.
                entry("2026-11-21T10:10:00Z", 6, None),
                // The current term's, not finished.
                entry("2026-11-21T10:20:00Z", 7, None),
            ],
            ..JobRecord::default()
        },
    );
    let mut controls = Controls::default();
    controls.suspended.insert(
        "tick".to_owned(),
        Suspension {
            note: Some("db migration".to_owned()),
            by: "alice@laptop".to_owned(),
            at: at("2026-11-21T10:15:00Z"),
            request: "s1".to_owned(),
        },
    );
    let request = |id: &str, kind, minutes_ago| Request {
        id: id.to_owned(),
        kind,
        job: "tick".to_owned(),
        by: "bob".to_owned(),
        requested_at: now - chrono::Duration::minutes(minutes_ago),
        from: None,
        to: None,
        note: None,
    };
    controls.requests = vec![
        request("done", RequestKind::Trigger, 5),
        request("waiting", RequestKind::Trigger, 1),
        request("stale", RequestKind::Trigger, 90),
        request("other", RequestKind::Resume, 1),
    ];
    controls.requests[3].job = "backup".to_owned();
    record.requests.insert(
        "done".to_owned(),
        RequestAck {
            kind: RequestKind::Trigger,
            job: "tick".to_owned(),
            requested_at: now,
            state: RequestState::Done,
            detail: None,
            fencing_token: 7,
            identity: "r7".to_owned(),
            updated_at: now,
            slot: None,
            outcome: None,
            cursor: None,
            started: 0,
            skipped: 0,
            failed: 0,
        },
    );
    let view = job_view(&tick, &record, &controls, Some(7), now);
    assert_eq!(view.running.len(), 1);
    assert_eq!(view.running[0].slot, at("2026-11-21T10:20:00Z"));
    assert_eq!(view.running[0].duration_seconds, Some(4.998));
    let last = view.last_run.as_ref().expect("a last run");
    assert_eq!(
        (last.slot, last.state.as_str()),
        (at("2026-11-21T10:10:00Z"), "interrupted")
    );
    assert_eq!(last.duration_seconds, None);
    assert_eq!(view.next_slot, Some(at("2026-11-21T10:30:00Z")));
    assert!(view.suspended && !view.suspended_in_file);
    let states: Vec<(&str, &str)> = view
        .requests
        .iter()
        .map(|r| (r.id.as_str(), r.state.as_str()))
        .collect();
    assert_eq!(states, [("waiting", "pending"), ("stale", "expired")]);

    let document = view::StatusDocument {
        version: view::DOCUMENT_VERSION,
        time: now,
        lease: None,
        jobs_source: "jobs.yaml".to_owned(),
        jobs: vec![view],
    };
    let text = render_status(&document, "lease file /tmp/l", &[Tz::UTC]);
    assert_eq!(
        text,
        "lease: lease file /tmp/l: none yet (no replica has run on it)
jobs: jobs.yaml

NAME  SCHEDULE      ZONE  SUSPENDED  RUNNING  LAST RUN                          NEXT                  REQUESTS
tick  */10 * * * *  UTC   operator   1        2026-11-21T10:10:00Z interrupted  2026-11-21T10:30:00Z  2

tick: suspended by alice@laptop at 2026-11-21T10:15:00Z: \"db migration\"
tick: running the slot 2026-11-21T10:20:00Z (schedule) on r7, fencing token 7, for 5s
tick: request waiting: trigger by bob at 2026-11-21T10:19:05Z, pending: no leader has acknowledged it
tick: request stale: trigger by bob at 2026-11-21T08:50:05Z, expired: no leader acknowledged it in time, \
and none will carry it out
"
    );
    let json: serde_json::Value =
        serde_json::from_str(&serde_json::to_string(&document).expect("serializes")).expect("JSON");
    let job = &json["jobs"][0];
    assert_eq!(job["suspension"]["by"], "alice@laptop");
    assert_eq!(job["last_run"]["state"], "interrupted");
    assert_eq!(job["last_run"]["finished_at"], serde_json::Value::Null);
    assert_eq!(job["running"][0]["cause"], "schedule");
    assert_eq!(job["requests"][0]["kind"], "trigger");
    assert_eq!(json["lease"], serde_json::Value::Null);
}

#[test]
fn the_lease_line_says_who_leads_and_whether_the_lease_is_live() {
    let now = at("2026-11-21T10:00:02Z");
    let document = |lease: LeaseRecord| view::StatusDocument {
        version: 1,
        time: now,
        lease: Some(view::LeaseView::of(
            "Lease ops/leasecron".to_owned(),
            &lease,
            now,
        )),
        jobs_source: "jobs.yaml".to_owned(),
        jobs: Vec::new(),
    };
    let first_line = |lease| {
        render_status(&document(lease), "Lease ops/leasecron", &[])
            .lines()
            .next()
            .expect("a line")
            .to_owned()
    };
    assert_eq!(
        first_line(lease(Some("leasecron-7f9c"), 7, "2026-11-21T10:00:00Z")),
        "lease: Lease ops/leasecron: held by leasecron-7f9c, fencing token 7, acquired 2026-11-21T08:00:00Z, \
         renewed 2s ago"
    );
    assert_eq!(
        first_line(lease(None, 7, "2026-11-21T10:00:00Z")),
        "lease: Lease ops/leasecron: free, no replica leads (the last fencing token was 7)"
    );
    assert_eq!(
        first_line(lease(Some("r1"), 7, "2026-11-21T09:59:00Z")),
        "lease: Lease ops/leasecron: held by r1, fencing token 7, but expired: not renewed for 1m 2s \
         (lease duration 15s, by this machine's clock); its runs show as interrupted"
    );
}

#[test]
fn history_is_a_table_newest_first_with_exit_codes_and_signals() {
    let now = at("2026-11-21T10:30:00Z");
    let mut killed = entry("2026-11-21T10:10:00Z", 6, Some("timed_out"));
    killed.exit_code = None;
    killed.signal = Some(9);
    let runs = [
        entry("2026-11-21T10:20:00Z", 7, Some("succeeded")),
        killed,
        entry("2026-11-21T10:00:00Z", 6, None),
    ];
    let document = view::HistoryDocument {
        version: 1,
        job: "tick".to_owned(),
        kept: 20,
        runs: runs
            .iter()
            .map(|e| view::RunView::of(e, Some(7), now))
            .collect(),
    };
    assert_eq!(
        render_history(&document, Tz::UTC),
        "SLOT                  CAUSE     TOKEN  IDENTITY  STARTED               DURATION  OUTCOME      EXIT
2026-11-21T10:20:00Z  schedule  7      r7        2026-11-21T10:20:00Z  1.5s      succeeded    0
2026-11-21T10:10:00Z  schedule  6      r6        2026-11-21T10:10:00Z  1.5s      timed_out    signal 9 (SIGKILL)
2026-11-21T10:00:00Z  schedule  6      r6        2026-11-21T10:00:00Z  -         interrupted  -
"
    );
}

// === the commands, on stores in memory ===

#[tokio::test]
async fn trigger_files_a_request_and_drops_the_acknowledged_ones() {
    let fixture = fixture(true);
    // An acknowledged request from before: dropped as the new one is filed.
    fixture.controls.lock().replace((
        1,
        Controls {
            format: CONTROLS_FORMAT,
            requests: vec![Request {
                id: "old".to_owned(),
                kind: RequestKind::Trigger,
                job: "tick".to_owned(),
                by: "bob".to_owned(),
                requested_at: Utc::now(),
                from: None,
                to: None,
                note: None,
            }],
            ..Controls::default()
        },
    ));
    let leader = Ledger::new(fixture.state.clone(), "r1".to_owned());
    leader.begin_term(FencingToken(3)).await.expect("term");
    let origin = Origin::requested(Cause::Trigger, "old", Utc::now());
    leader
        .claim("tick", Utc::now(), FencingToken(3), Utc::now(), &origin)
        .await
        .expect("claimed");
    let completion = Completion {
        slot: leader.snapshot().requests["old"].slot.expect("a slot"),
        outcome: "succeeded".to_owned(),
        finished_at: Utc::now(),
    };
    leader
        .complete(
            "tick",
            FencingToken(3),
            &origin,
            completion,
            RunResult::default(),
        )
        .await
        .expect("completed");

    let mut out = Vec::new();
    request::trigger(&fixture.opened, "tick", None, &mut out)
        .await
        .expect("filed");
    let controls = fixture.controls.controls();
    assert_eq!(controls.requests.len(), 1, "{controls:?}");
    let filed = &controls.requests[0];
    assert_eq!(
        (filed.kind, filed.job.as_str()),
        (RequestKind::Trigger, "tick")
    );
    assert_eq!(filed.by, local_user());
    let text = printed(&out);
    assert!(
        text.starts_with(&format!(
            "request {}: trigger tick, filed by {} in memory controls\n",
            filed.id, filed.by
        )),
        "{text}"
    );
    assert!(
        text.contains("`leasecron status tick --lease-file "),
        "{text}"
    );

    let unknown = request::trigger(&fixture.opened, "nope", None, &mut Vec::new())
        .await
        .expect_err("unknown");
    assert_eq!(
        unknown.to_string(),
        "no job nope in jobs.yaml; jobs: backup, tick, paused"
    );
    assert!(unknown.is_usage());
    assert_eq!(
        fixture.controls.controls().requests.len(),
        1,
        "nothing filed"
    );
}

/// Plays the leader of `fixture` (`leasecron-7f9c`, fencing token 7): waits for a request to be filed,
/// then carries it out with `act`.
async fn lead<F, Fut>(fixture: &Fixture, act: F)
where
    F: FnOnce(Ledger, Request) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let request = loop {
        if let Some(request) = fixture.controls.controls().requests.last().cloned() {
            break request;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let ledger = Ledger::new(fixture.state.clone(), "leasecron-7f9c".to_owned());
    ledger.begin_term(FencingToken(7)).await.expect("term");
    act(ledger, request).await;
}

/// The leader's acknowledgement of `request` in `state`, now, without details.
fn leader_ack(request: &Request, state: RequestState) -> RequestAck {
    RequestAck {
        kind: request.kind,
        job: request.job.clone(),
        requested_at: request.requested_at,
        state,
        detail: None,
        fencing_token: 7,
        identity: "leasecron-7f9c".to_owned(),
        updated_at: Utc::now(),
        slot: None,
        outcome: None,
        cursor: None,
        started: 0,
        skipped: 0,
        failed: 0,
    }
}

#[tokio::test]
async fn trigger_wait_follows_the_run_to_its_outcome() {
    let fixture = fixture(true);
    let leader = lead(&fixture, |ledger, request| async move {
        let token = FencingToken(7);
        let origin = Origin::requested(Cause::Trigger, request.id, request.requested_at);
        let slot = Utc::now();
        ledger
            .claim("tick", slot, token, slot, &origin)
            .await
            .expect("claimed");
        tokio::time::sleep(Duration::from_millis(300)).await;
        let completion = Completion {
            slot,
            outcome: "failed".to_owned(),
            finished_at: slot + chrono::Duration::milliseconds(1_204),
        };
        let result = RunResult {
            exit_code: Some(3),
            signal: None,
            attempts: 1,
        };
        ledger
            .complete("tick", token, &origin, completion, result)
            .await
            .expect("completed");
    });
    let mut out = Vec::new();
    let wait = request::trigger(
        &fixture.opened,
        "tick",
        Some(Duration::from_secs(10)),
        &mut out,
    );
    let (result, ()) = tokio::join!(wait, leader);
    let error = result.expect_err("the run failed");
    assert!(!error.is_usage());
    let text = printed(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 6, "{text}");
    assert!(lines[1].starts_with("waiting up to 10s for the leader to carry it out (no replica has created the lease yet)"), "{text}");
    assert!(
        lines[2].starts_with("acknowledged by leasecron-7f9c (fencing token 7) at "),
        "{text}"
    );
    assert!(lines[3].starts_with("running: started at "), "{text}");
    assert!(
        lines[4].starts_with("failed: the run on leasecron-7f9c (fencing token 7) started at ")
            && lines[4].ends_with(" and took 1.2s, exit code 3"),
        "{text}"
    );
    assert_eq!(
        lines[5],
        "output: in the log (stderr) of the replica leasecron-7f9c, the lines with job=tick fencing_token=7"
    );
    assert!(
        error
            .to_string()
            .ends_with(": the run of tick failed (exit code 3)"),
        "{error}"
    );
}

#[tokio::test]
async fn trigger_wait_says_why_the_leader_refused() {
    let fixture = fixture(true);
    let leader = lead(&fixture, |ledger, request| async move {
        let ack = RequestAck {
            detail: Some(
                "skipped: a run of tick is in flight and its concurrencyPolicy is Forbid"
                    .to_owned(),
            ),
            ..leader_ack(&request, RequestState::Refused)
        };
        ledger
            .acknowledge(FencingToken(7), &request.id, ack)
            .await
            .expect("acknowledged");
    });
    let mut out = Vec::new();
    let wait = request::trigger(
        &fixture.opened,
        "tick",
        Some(Duration::from_secs(10)),
        &mut out,
    );
    let (result, ()) = tokio::join!(wait, leader);
    let error = result.expect_err("refused");
    assert!(!error.is_usage());
    assert!(
        printed(&out).ends_with(
            "refused by leasecron-7f9c (fencing token 7): skipped: a run of tick is in flight and its \
             concurrencyPolicy is Forbid\n"
        ),
        "{}",
        printed(&out)
    );
    assert!(
        error.to_string().contains("was refused by leasecron-7f9c"),
        "{error}"
    );
}

#[tokio::test]
async fn trigger_wait_without_a_leader_says_the_request_stays_filed() {
    let fixture = fixture(true);
    let mut out = Vec::new();
    let error = request::trigger(
        &fixture.opened,
        "backup",
        Some(Duration::from_millis(300)),
        &mut out,
    )
    .await
    .expect_err("nobody acknowledged it");
    assert!(!error.is_usage());
    let text = error.to_string();
    assert!(
        text.contains(
            ": no leader acknowledged it within 300ms (no replica has created the lease yet); it stays \
             filed until "
        ) && text.ends_with(
            ", 1h after it was filed: a leader that reads it before then carries it out, a later one \
             refuses it as expired"
        ),
        "{text}"
    );
    assert_eq!(fixture.controls.controls().requests.len(), 1, "still filed");
}

#[tokio::test]
async fn suspend_sets_the_suspension_and_files_one_request_and_again_changes_the_note() {
    let fixture = fixture(true);
    let mut out = Vec::new();
    request::suspend(
        &fixture.opened,
        "backup",
        Some("db migration".to_owned()),
        &mut out,
    )
    .await
    .expect("suspended");
    let controls = fixture.controls.controls();
    let suspension = controls.suspension("backup").expect("suspended").clone();
    assert_eq!(suspension.note.as_deref(), Some("db migration"));
    assert_eq!(controls.requests.len(), 1);
    assert_eq!(controls.requests[0].kind, RequestKind::Suspend);
    assert_eq!(controls.requests[0].id, suspension.request);
    assert_eq!(controls.requests[0].note.as_deref(), Some("db migration"));
    let text = printed(&out);
    assert!(
        text.contains(
            "backup is suspended: its fires start nothing until `leasecron resume backup --lease-file "
        ),
        "{text}"
    );

    let mut again = Vec::new();
    request::suspend(
        &fixture.opened,
        "backup",
        Some("until Monday".to_owned()),
        &mut again,
    )
    .await
    .expect("note changed");
    let controls = fixture.controls.controls();
    assert_eq!(controls.requests.len(), 1, "no second request");
    let changed = controls.suspension("backup").expect("suspended");
    assert_eq!(changed.note.as_deref(), Some("until Monday"));
    assert_eq!(changed.at, suspension.at, "still suspended since then");
    let text = printed(&again);
    assert!(
        text.starts_with(&format!(
            "backup is already suspended (by {} at ",
            suspension.by
        )) && text.ends_with(": \"db migration\"); its note is now \"until Monday\"\n"),
        "{text}"
    );

    let long = "x".repeat(controls::MAX_NOTE_BYTES + 1);
    let error = request::suspend(&fixture.opened, "tick", Some(long), &mut Vec::new())
        .await
        .expect_err("too long");
    assert!(error.is_usage());
    assert_eq!(
        error.to_string(),
        "--note has 1025 bytes; a note has at most 1024 bytes"
    );
}

#[tokio::test]
async fn resume_removes_the_suspension_files_a_request_and_prints_the_backfill() {
    let fixture = fixture(true);
    let since = Utc::now() - chrono::Duration::hours(2);
    fixture.controls.lock().replace((
        1,
        Controls {
            format: CONTROLS_FORMAT,
            suspended: [(
                "tick".to_owned(),
                Suspension {
                    note: None,
                    by: "alice".to_owned(),
                    at: since,
                    request: "s0".to_owned(),
                },
            )]
            .into(),
            requests: Vec::new(),
        },
    ));
    let mut out = Vec::new();
    request::resume(&fixture.opened, "tick", &mut out)
        .await
        .expect("resumed");
    let controls = fixture.controls.controls();
    assert!(controls.suspension("tick").is_none());
    assert_eq!(controls.requests.len(), 1);
    assert_eq!(controls.requests[0].kind, RequestKind::Resume);
    let text = printed(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4, "{text}");
    assert!(
        lines[1].starts_with("tick is resumed; it was suspended by alice at "),
        "{text}"
    );
    assert!(
        lines[2] == "the 12 slots that fell due while it was suspended are not run; to run them:"
            || lines[2]
                == "the 13 slots that fell due while it was suspended are not run; to run them:",
        "{text}"
    );
    assert!(
        lines[3].starts_with("  leasecron backfill tick --from ")
            && lines[3].ends_with(" --jobs jobs.yaml"),
        "{text}"
    );

    // Not suspended any more: exit 2, and nothing filed.
    let error = request::resume(&fixture.opened, "tick", &mut Vec::new())
        .await
        .expect_err("not suspended");
    assert!(error.is_usage());
    assert_eq!(
        error.to_string(),
        "tick is not suspended: no operator suspended it, so there is nothing to resume"
    );
    let error = request::resume(&fixture.opened, "paused", &mut Vec::new())
        .await
        .expect_err("the file suspends it");
    assert_eq!(
        error.to_string(),
        "paused is not suspended by an operator: the jobs file jobs.yaml suspends it (suspend: true), and \
         resume cannot override the file; remove suspend: true there (the replicas reload it)"
    );
    let error = request::resume(&fixture.opened, "nope", &mut Vec::new())
        .await
        .expect_err("unknown");
    assert_eq!(
        error.to_string(),
        "no job nope in jobs.yaml; jobs: backup, tick, paused"
    );
    assert_eq!(fixture.controls.controls().requests.len(), 1);
}

#[tokio::test]
async fn backfill_files_the_range_and_wait_follows_its_slots() {
    let fixture = fixture(true);
    let leader = lead(&fixture, |ledger, request| async move {
        let token = FencingToken(7);
        let from = request.from.expect("from");
        let ack = leader_ack(&request, RequestState::Running);
        ledger
            .acknowledge(token, &request.id, ack)
            .await
            .expect("acknowledged");
        let origin = Origin::requested(Cause::Backfill, request.id.clone(), request.requested_at);
        for minutes in [0, 10] {
            let slot = from + chrono::Duration::minutes(minutes);
            ledger
                .claim("tick", slot, token, Utc::now(), &origin)
                .await
                .expect("claimed");
            tokio::time::sleep(Duration::from_millis(300)).await;
            let completion = Completion {
                slot,
                outcome: "succeeded".to_owned(),
                finished_at: Utc::now(),
            };
            ledger
                .complete("tick", token, &origin, completion, RunResult::default())
                .await
                .expect("completed");
        }
        ledger
            .update_request(token, &request.id, |ack| {
                ack.state = RequestState::Done;
                true
            })
            .await
            .expect("done");
    });
    let mut out = Vec::new();
    let wait = request::backfill(
        &fixture.opened,
        "tick",
        "2026-11-21T10:00:00Z",
        "2026-11-21T10:15:00Z",
        Some(Duration::from_secs(10)),
        &mut out,
    );
    let (result, ()) = tokio::join!(wait, leader);
    result.expect("every run succeeded");
    let text = printed(&out);
    let request = &fixture.controls.controls().requests[0];
    assert_eq!(
        (request.from, request.to),
        (
            Some(at("2026-11-21T10:00:00Z")),
            Some(at("2026-11-21T10:15:00Z"))
        )
    );
    assert!(
        text.starts_with(&format!(
            "request {}: backfill tick, 2 slots from 2026-11-21T10:00:00Z to 2026-11-21T10:10:00Z, filed by ",
            request.id
        )),
        "{text}"
    );
    assert!(
        text.contains(
            "progress: up to 2026-11-21T10:00:00Z: 1 started, 0 skipped (already run), 0 failed\n"
        ),
        "{text}"
    );
    assert!(
        text.contains("\ndone: 2 started, 0 skipped (already run), 0 failed\n"),
        "{text}"
    );

    // A bad time, a range in the future: exit 2, nothing more filed.
    for (from, to, expected) in [
        ("soon", "2026-11-21T10:15:00Z", "--from soon: not a time"),
        (
            "2026-11-21T10:00:00Z",
            "2999-01-01T00:00:00Z",
            "--to 2999-01-01T00:00:00Z is in the future",
        ),
    ] {
        let error = request::backfill(&fixture.opened, "tick", from, to, None, &mut Vec::new())
            .await
            .expect_err("refused");
        assert!(error.is_usage(), "{error}");
        assert!(error.to_string().starts_with(expected), "{error}");
    }
    assert_eq!(fixture.controls.controls().requests.len(), 1);
}

#[tokio::test]
async fn history_without_the_jobs_checks_the_name_against_the_run_state() {
    let fixture = fixture(false);
    let ledger = Ledger::new(fixture.state.clone(), "r1".to_owned());
    ledger.begin_term(FencingToken(2)).await.expect("term");
    let slot = at("2026-11-21T10:00:00Z");
    ledger
        .claim("tick", slot, FencingToken(2), slot, &Origin::SCHEDULE)
        .await
        .expect("claimed");
    let mut out = Vec::new();
    view::history(&fixture.opened, "tick", 20, Format::Json, &mut out)
        .await
        .expect("shown");
    let json: serde_json::Value = serde_json::from_slice(&out).expect("JSON");
    assert_eq!(json["version"], 1);
    assert_eq!(json["kept"], 20);
    // No lease: no current term, so the unfinished run is interrupted.
    assert_eq!(json["runs"][0]["state"], "interrupted");
    assert_eq!(json["runs"][0]["identity"], "r1");
    let error = view::history(&fixture.opened, "nope", 20, Format::Text, &mut Vec::new())
        .await
        .expect_err("unknown");
    assert!(error.is_usage());
    assert_eq!(
        error.to_string(),
        "no run of nope is recorded in memory; jobs with runs: tick (give --jobs FILE or \
         --jobs-configmap NAME[/KEY] to check the name against the jobs)"
    );
}

#[test]
fn a_lease_file_without_jobs_is_refused_for_the_commands_that_need_them() {
    let error = Error::JobsRequired {
        command: "status",
        why: "their schedules and next slots",
    };
    assert!(error.is_usage());
    assert_eq!(
        error.to_string(),
        "status needs the jobs (their schedules and next slots): with --lease-file, give --jobs FILE (or \
         --jobs-configmap NAME[/KEY])"
    );
}
