//! Behaviour at scale: a file of 10 000 jobs loads, schedules hold in every year, runs due at the same
//! instant each run exactly once (with the run state in memory and in a file), concurrent claims of the
//! run state are decided one after the other, and the status page of 10 000 jobs renders (its size and
//! render time printed: `cargo test --test slow status_page -- --nocapture`). No test asserts how long
//! anything took (see `benches/*_scale.rs`).

use crate::support::scale_jobs;
use leasecron::run_state::Origin;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Timelike, Utc};
use leasecron::clock::{SharedClock, SystemClock};
use leasecron::config::{self, JobSet, LoadOptions, Source, DEFAULT_CONFIG_MAP_KEY};
use leasecron::dispatch::Dispatcher;
use leasecron::event::{DispatchEvent, Outcome, RunEvent};
use leasecron::local::run_state::StateFile;
use leasecron::run_state::memory::MemoryStore;
use leasecron::run_state::{Claim, Ledger, TermStart};
use leasecron::runner::Runner;
use leasecron::schedule::Schedule;
use leasecron::term::{FencingToken, Leadership, Term};
use scale_jobs::JobSpec;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

/// Upper bound on any wait: it only turns a hang into a failure.
const TEST_TIMEOUT: Duration = Duration::from_secs(120);
/// Runs due at the same instant: enough that spawning them all takes longer than the timers' on-time
/// tolerance (1 s), which is what once made the later timers skip their slots.
const BURST: usize = 1000;
/// How far ahead the burst is due: time to load the jobs and start every timer.
const LEAD_TIME: chrono::Duration = chrono::Duration::seconds(3);

fn utc(s: &str) -> DateTime<Utc> {
    s.parse().expect("an RFC 3339 time")
}

// === loading ===

#[test]
fn a_file_of_ten_thousand_jobs_loads_as_a_jobs_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("jobs.yaml");
    std::fs::write(&path, scale_jobs::realistic(10_000)).expect("write the jobs file");
    let source = config::load_source(&path, DEFAULT_CONFIG_MAP_KEY, &LoadOptions::default())
        .expect("the generated file is valid");
    let Source::JobsFile(jobs) = source else {
        panic!("a plain jobs file, not a manifest");
    };
    assert_eq!(jobs.jobs.len(), 10_000);
    let zones: std::collections::BTreeSet<String> = jobs
        .jobs
        .iter()
        .map(|job| job.schedule.zone().to_string())
        .collect();
    assert!(zones.len() > 5, "jobs in many zones: {zones:?}");
}

#[test]
fn a_schedule_matches_in_every_year() {
    let new_year = Schedule::parse("0 0 1 1 *", chrono_tz::UTC).expect("valid");
    for (after, next) in [
        ("1999-06-01T00:00:00Z", "2000-01-01T00:00:00Z"),
        ("2000-06-01T00:00:00Z", "2001-01-01T00:00:00Z"),
        ("2026-11-21T00:00:00Z", "2027-01-01T00:00:00Z"),
        ("4998-06-01T00:00:00Z", "4999-01-01T00:00:00Z"),
    ] {
        assert_eq!(
            new_year.next_after(utc(after)),
            Some(utc(next)),
            "after {after}"
        );
    }
    let leap_day = Schedule::parse("0 12 29 2 *", chrono_tz::UTC).expect("valid");
    let fires: Vec<DateTime<Utc>> = leap_day
        .upcoming(utc("2026-11-21T00:00:00Z"), 3)
        .into_iter()
        .map(|at| at.with_timezone(&Utc))
        .collect();
    assert_eq!(
        fires,
        [
            utc("2028-02-29T12:00:00Z"),
            utc("2032-02-29T12:00:00Z"),
            utc("2036-02-29T12:00:00Z")
        ]
    );
    assert_eq!(
        leap_day.latest_at_or_before(utc("2026-11-21T00:00:00Z")),
        Some(utc("2024-02-29T12:00:00Z"))
    );
}

// === many runs due at the same instant ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_due_at_the_same_instant_each_run_exactly_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ledger = Arc::new(Ledger::new(MemoryStore::new(), "me".to_owned()));
    let ran = burst(dir.path(), ledger).await;
    assert_each_ran_once(&ran);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_due_at_the_same_instant_each_claim_their_slot_and_run_exactly_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = StateFile::beside(&dir.path().join("lease"));
    let ledger = Arc::new(Ledger::new(store, "me".to_owned()));
    let ran = burst(dir.path(), Arc::clone(&ledger)).await;
    assert_each_ran_once(&ran);
    let record = ledger.snapshot();
    for job in ran.keys() {
        let entry = record.jobs.get(job).expect("every job is in the run state");
        let started = entry.last_started.as_ref().expect("recorded as started");
        let completed = entry
            .last_completion
            .as_ref()
            .expect("recorded as completed");
        assert_eq!(started.slot, completed.slot, "{job}");
        assert_eq!(completed.outcome, "succeeded", "{job}");
    }
}

/// `BURST` jobs due at one second a moment from now, run by a leader that claims their slots in `ledger`;
/// returns how often each job's process ran, and checks that no fire was skipped and every run succeeded.
async fn burst(dir: &Path, ledger: Arc<Ledger>) -> BTreeMap<String, usize> {
    let out = dir.join("ran");
    let due = Utc.timestamp_opt((Utc::now() + LEAD_TIME).timestamp() + 1, 0);
    let due = due.single().expect("a whole second");
    let schedule = format!("{} {} {} * * *", due.second(), due.minute(), due.hour());
    let record = format!("echo \"$LEASECRON_JOB\" >> {}", out.display());
    let specs: Vec<JobSpec> = (0..BURST)
        .map(|i| {
            JobSpec::new(
                format!("burst-{i:04}"),
                schedule.as_str(),
                &["/bin/sh", "-c", &record],
            )
        })
        .collect();
    let jobs: JobSet = config::parse_str(
        &scale_jobs::jobs_file(&specs),
        "test",
        &LoadOptions::default(),
    )
    .expect("valid jobs");

    let clock: SharedClock = Arc::new(SystemClock);
    let handle = Term::begin(
        FencingToken(1),
        Utc::now(),
        tokio::time::Instant::now() + Duration::from_secs(3600),
    );
    let (_leader, leadership) = watch::channel(Leadership::Leader {
        term: handle.term().clone(),
    });
    let (runs_tx, mut runs) = mpsc::unbounded_channel();
    let (dispatch_tx, mut dispatched) = mpsc::unbounded_channel();
    assert!(
        matches!(
            ledger
                .begin_term(FencingToken(1))
                .await
                .expect("the run state is writable"),
            TermStart::Begun(_)
        ),
        "no newer term"
    );
    let runner = Runner::new(
        "me".to_owned(),
        Arc::clone(&clock),
        Some(runs_tx),
        Arc::clone(&ledger),
    );
    let dispatcher = Dispatcher::new(runner, leadership, clock, ledger).with_events(dispatch_tx);
    let stop = CancellationToken::new();
    let (_jobs_tx, jobs_rx) = watch::channel(Arc::new(jobs));
    let running = tokio::spawn({
        let stop = stop.clone();
        async move { dispatcher.run(jobs_rx, stop).await }
    });

    let mut finished = 0;
    let collect = async {
        while finished < BURST {
            tokio::select! {
                event = runs.recv() => match event.expect("the runner reports") {
                    RunEvent::Finished(report) => {
                        assert_eq!(report.outcome, Outcome::Succeeded, "{}", report.job);
                        finished += 1;
                    }
                    RunEvent::Skipped { job, reason, .. } => panic!("{job}: run skipped ({reason:?})"),
                    RunEvent::Started { .. } | RunEvent::Cluster { .. } => {}
                },
                event = dispatched.recv() => {
                    if let Some(DispatchEvent::Skipped { job, reason, .. }) = event {
                        panic!("{job}: fire skipped ({reason:?})");
                    }
                }
            }
        }
    };
    tokio::time::timeout(TEST_TIMEOUT, collect)
        .await
        .expect("every run of the burst finishes");
    stop.cancel();
    running.await.expect("the dispatcher stops");
    handle.end().await;
    let mut ran: BTreeMap<String, usize> = BTreeMap::new();
    for line in std::fs::read_to_string(&out)
        .expect("the runs wrote")
        .lines()
    {
        *ran.entry(line.to_owned()).or_default() += 1;
    }
    ran
}

fn assert_each_ran_once(ran: &BTreeMap<String, usize>) {
    assert_eq!(ran.len(), BURST, "every job ran");
    let twice: Vec<&String> = ran
        .iter()
        .filter(|(_, n)| **n != 1)
        .map(|(job, _)| job)
        .collect();
    assert!(twice.is_empty(), "ran more than once: {twice:?}");
}

// === the run state's claims ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_claims_are_decided_one_after_the_other() {
    let dir = tempfile::tempdir().expect("tempdir");
    let lease = dir.path().join("lease");
    let ledger = Arc::new(Ledger::new(StateFile::beside(&lease), "a".to_owned()));
    assert!(
        matches!(
            ledger.begin_term(FencingToken(1)).await.expect("writable"),
            TermStart::Begun(_)
        ),
        "no newer term"
    );
    let slot = utc("2026-11-21T10:00:00Z");
    let claims = |job: fn(usize) -> String| {
        (0..100)
            .map(|i| {
                let ledger = Arc::clone(&ledger);
                tokio::spawn(async move {
                    ledger
                        .claim(&job(i), slot, FencingToken(1), slot, &Origin::SCHEDULE)
                        .await
                })
            })
            .collect::<Vec<_>>()
    };

    // One slot of one job: exactly one claim wins, whichever comes first.
    let mut decisions = Vec::new();
    for claim in claims(|_| "same".to_owned()) {
        decisions.push(claim.await.expect("no panic").expect("writable"));
    }
    let claimed = decisions.iter().filter(|d| **d == Claim::Claimed).count();
    assert_eq!(claimed, 1, "{decisions:?}");
    assert!(decisions.iter().all(|d| *d == Claim::Claimed
        || *d
            == Claim::AlreadyStarted {
                slot,
                fencing_token: 1
            }));

    // Distinct jobs: every claim wins and is recorded.
    for claim in claims(|i| format!("job-{i:03}")) {
        assert_eq!(
            claim.await.expect("no panic").expect("writable"),
            Claim::Claimed
        );
    }
    let stored = Ledger::new(StateFile::beside(&lease), "reader".to_owned());
    let record = stored.refresh().await.expect("readable");
    assert_eq!(record.jobs.len(), 101);

    // A newer term wrote the record: every later claim of the old term is refused as stale.
    let newer = Ledger::new(StateFile::beside(&lease), "b".to_owned());
    assert!(
        matches!(
            newer.begin_term(FencingToken(2)).await.expect("writable"),
            TermStart::Begun(_)
        ),
        "newest"
    );
    let later = utc("2026-11-21T10:01:00Z");
    let stale = (0..20).map(|i| {
        let ledger = Arc::clone(&ledger);
        tokio::spawn(async move {
            ledger
                .claim(
                    &format!("job-{i:03}"),
                    later,
                    FencingToken(1),
                    later,
                    &Origin::SCHEDULE,
                )
                .await
        })
    });
    for claim in stale.collect::<Vec<_>>() {
        // The ledger's cache does not know of the newer term yet: a conflicting write, then a re-read.
        let decision = claim.await.expect("no panic").expect("writable");
        assert_eq!(decision, Claim::Stale { record_token: 2 });
    }
}

// === the status page ===

/// A `/status` snapshot of the jobs of `scale_jobs::realistic(n)`, each with a full history (the worst
/// case for the page): a last run, every seventh job failed with exit code 2, every eleventh suspended by
/// an operator with a note, every thirteenth running.
fn status_of(n: usize) -> leasecron::http::Status {
    use leasecron::controls::Suspension;
    use leasecron::http::{ConfigStatus, JobStatus, LastRun, RunSource, Status};
    use leasecron::run_state::{Cause, HistoryEntry, JobRecord, HISTORY_PER_JOB};

    let set = config::parse_str(
        &scale_jobs::realistic(n),
        "jobs.yaml",
        &LoadOptions::default(),
    )
    .expect("the generated file is valid");
    let now = utc("2026-11-21T10:00:00Z");
    let minutes = |m: i64| now + chrono::Duration::minutes(m);
    let jobs = set
        .jobs
        .iter()
        .enumerate()
        .map(|(i, job)| {
            let failed = i % 7 == 0;
            let outcome = if failed { "failed" } else { "succeeded" };
            let history: Vec<HistoryEntry> = (0..HISTORY_PER_JOB as i64)
                .map(|k| HistoryEntry {
                    slot: minutes(-60 + k),
                    cause: if k == 3 {
                        Cause::CatchUp
                    } else {
                        Cause::Schedule
                    },
                    request: None,
                    fencing_token: 41,
                    identity: "leasecron-6c9f7d-x2k4q".to_owned(),
                    started_at: minutes(-60 + k),
                    finished_at: Some(minutes(-60 + k) + chrono::Duration::milliseconds(1234)),
                    outcome: Some(if k % 5 == 0 { "failed" } else { outcome }.to_owned()),
                    exit_code: (k % 5 == 0 || failed).then_some(2),
                    signal: None,
                    attempts: Some(1),
                })
                .collect();
            let suspension = (i % 11 == 0).then(|| Suspension {
                note: Some("paused while the warehouse migration runs (INC-4711)".to_owned()),
                by: "alice@example.com".to_owned(),
                at: minutes(-90),
                request: format!("req-{i}"),
            });
            let suspended = job.suspend || suspension.is_some();
            JobStatus {
                name: job.name.clone(),
                schedule: job.schedule.expression().to_owned(),
                zone: job.schedule.zone().to_string(),
                executor: "process".to_owned(),
                suspended,
                suspension,
                next_run: (!suspended).then(|| minutes(5)),
                next_fire: (!suspended).then(|| minutes(5)),
                jitter_seconds: None,
                next_slot_if_resumed: suspended.then(|| minutes(5)),
                last_run: Some(LastRun {
                    scheduled: minutes(-41),
                    outcome: outcome.to_owned(),
                    exit_code: failed.then_some(2),
                    signal: None,
                    error: None,
                    started: Some(minutes(-41)),
                    finished: minutes(-41) + chrono::Duration::milliseconds(1234),
                    duration_seconds: Some(1.234),
                    attempts: Some(1),
                    leftover_processes_killed: Some(0),
                    source: RunSource::ThisReplica,
                    identity: Some("leasecron-6c9f7d-x2k4q".to_owned()),
                    fencing_token: Some(41),
                }),
                running: u32::from(i % 13 == 0),
                run_state: Some(JobRecord {
                    history,
                    ..JobRecord::default()
                }),
            }
        })
        .collect();
    Status {
        identity: "leasecron-6c9f7d-x2k4q".to_owned(),
        holder: Some("leasecron-6c9f7d-x2k4q".to_owned()),
        leading: true,
        fencing_token: Some(41),
        term_acquired_at: Some(minutes(-120)),
        term_deadline_remaining_seconds: Some(9.5),
        config: ConfigStatus {
            source: Some("configmap/prod/leasecron-jobs/jobs.yaml".to_owned()),
            hash: Some("00112233aabbccdd".to_owned()),
            loaded_at: Some(minutes(-120)),
            last_error: None,
            last_error_at: None,
        },
        jobs,
    }
}

#[test]
fn the_status_page_of_ten_thousand_jobs_with_full_histories_renders_every_row() {
    use leasecron::http::page::{self, STRIP_RUNS};

    const JOBS: usize = 10_000;
    let status = status_of(JOBS);
    let now = utc("2026-11-21T10:00:00Z");
    let mut times = Vec::new();
    let mut html = String::new();
    for _ in 0..5 {
        let started = std::time::Instant::now();
        html = page::render(&status, now);
        times.push(started.elapsed());
    }
    times.sort();
    let json = serde_json::to_string_pretty(&status).expect("serializes");
    println!(
        "status page, {JOBS} jobs, {} runs each in the run state, strip of {STRIP_RUNS}: {} bytes \
         ({:.1} MiB, {} bytes a job), render median {:.1} ms (min {:.1} ms, of {}; {} build); \
         /status of the same snapshot: {:.1} MiB",
        status.jobs[0]
            .run_state
            .as_ref()
            .map_or(0, |r| r.history.len()),
        html.len(),
        html.len() as f64 / (1024.0 * 1024.0),
        html.len() / JOBS,
        times[times.len() / 2].as_secs_f64() * 1e3,
        times[0].as_secs_f64() * 1e3,
        times.len(),
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        },
        json.len() as f64 / (1024.0 * 1024.0),
    );
    assert_eq!(html.matches("<tr id=\"job-").count(), JOBS);
    assert_eq!(html.matches("<td class=h><div class=s>").count(), JOBS);
    // Each strip holds the last STRIP_RUNS runs, and no more (the legend has one cell of each kind).
    assert_eq!(html.matches("<i class=").count() - 6, JOBS * STRIP_RUNS);
    assert!(html.ends_with("</html>\n"));
    // Not a timing: the size stays about a kilobyte a job (it was 1.0 KiB when the page was written).
    assert!(
        html.len() < JOBS * 2048,
        "{} bytes for {JOBS} jobs",
        html.len()
    );
}
