//! Kubernetes Events on the strict fake API server and on the real one: what is written about the Lease,
//! aggregation of bursts, and that a refusing, failing or hanging API never reaches the caller.

use crate::on_both_servers;
use crate::support::fake_apiserver;

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Utc};
use fake_apiserver::{FakeApiServer, Fault, RequestRecord, Resource, Verb, Which};
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams};
use leasecron::event::{
    ConfigReload, DispatchEvent, ElectionEvent, Failure, LossReason, Outcome, RunEvent, RunReport,
    SkipReason,
};
use leasecron::kubernetes::events::{EventSink, Limits, API_TIMEOUT, QUEUE_CAPACITY};
use leasecron::observe::Observer;
use leasecron::term::FencingToken;

/// The Lease the Events are about.
const LEASE: &str = "leasecron-test";
/// The replica's identity and bearer token.
const IDENTITY: &str = "pod-a";
/// The token of the test's own reads.
const READER: &str = "reader";
/// How long a flush may take when the API answers (a hung write ends after [`API_TIMEOUT`]).
const PATIENCE: Duration = Duration::from_secs(30);

async fn sink(server: &FakeApiServer) -> EventSink {
    EventSink::new(
        server.client(IDENTITY).await,
        server.namespace(),
        LEASE,
        IDENTITY,
    )
}

async fn flush(sink: &EventSink) {
    tokio::time::timeout(PATIENCE, sink.flush())
        .await
        .expect("the flush ends");
}

/// Waits until the namespace holds `n` Events and returns their notes, oldest first.
async fn notes_once_there_are(server: &FakeApiServer, n: usize) -> Vec<String> {
    tokio::time::timeout(PATIENCE, async {
        loop {
            let events = events(server).await;
            if events.len() >= n {
                return events.iter().map(|e| summary(e).2.to_owned()).collect();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the Events are written")
}

/// Every Event in the namespace, oldest first.
async fn events(server: &FakeApiServer) -> Vec<Event> {
    let api: Api<Event> = Api::namespaced(server.client(READER).await, server.namespace());
    let mut events = api
        .list(&ListParams::default())
        .await
        .expect("list events")
        .items;
    events.sort_by_key(|e| e.event_time.clone().map(|t| t.0));
    events
}

/// The replica's requests so far.
fn writes(server: &FakeApiServer) -> Vec<RequestRecord> {
    server
        .requests()
        .into_iter()
        .filter(|r| r.token.as_deref() == Some(IDENTITY))
        .collect()
}

fn finished(job: &str, outcome: Outcome) -> RunEvent {
    let scheduled: DateTime<Utc> = "2026-03-01T10:00:00Z".parse().expect("a timestamp");
    RunEvent::Finished(RunReport {
        job: job.to_owned(),
        scheduled,
        attempts: 3,
        outcome,
        started_at: scheduled,
        duration: Duration::from_secs(2),
        start_delay: Duration::ZERO,
        fencing_token: 1,
        leftover_processes_killed: 0,
    })
}

fn failed(job: &str) -> RunEvent {
    finished(job, Outcome::Failed(Failure::ExitCode(3)))
}

/// The leader's run of `job` at `scheduled` missed its start deadline.
fn missed(job: &str, scheduled: DateTime<Utc>) -> DispatchEvent {
    DispatchEvent::Skipped {
        job: job.to_owned(),
        scheduled,
        reason: SkipReason::MissedDeadline,
        leader: true,
    }
}

/// A reload of the jobs failed with `message`.
fn reload_failed(message: &str) -> ConfigReload {
    ConfigReload::Failed {
        origin: "jobs.yaml".to_owned(),
        message: message.to_owned(),
    }
}

/// (type, reason, note) of an Event.
fn summary(event: &Event) -> (&str, &str, &str) {
    (
        event.type_.as_deref().unwrap_or_default(),
        event.reason.as_deref().unwrap_or_default(),
        event.note.as_deref().unwrap_or_default(),
    )
}

/// The log lines written while the returned guard is alive (on this thread, where `#[tokio::test]` runs
/// every task).
fn capture_logs() -> (Arc<Mutex<Vec<u8>>>, tracing::subscriber::DefaultGuard) {
    let buffer = Arc::new(Mutex::new(Vec::new()));
    let writer = Arc::clone(&buffer);
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_writer(move || LogWriter(Arc::clone(&writer)))
        .finish();
    (buffer, tracing::subscriber::set_default(subscriber))
}

fn logs(buffer: &Mutex<Vec<u8>>) -> String {
    String::from_utf8_lossy(&buffer.lock().unwrap_or_else(PoisonError::into_inner)).into_owned()
}

struct LogWriter(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

async fn leadership_acquired_and_lost_are_events_about_the_lease(which: Which) {
    let Some(server) = FakeApiServer::start_on(which, "leadership_acquired_and_lost_a").await
    else {
        return;
    };
    let sink = sink(&server).await;
    let token = FencingToken(7);
    sink.on_election(&ElectionEvent::Acquired { token });
    sink.on_election(&ElectionEvent::RenewFailed {
        error: "timeout".into(),
    });
    sink.on_election(&ElectionEvent::Lost {
        token,
        reason: LossReason::LeaseTaken,
    });
    flush(&sink).await;

    let events = events(&server).await;
    let summaries: Vec<_> = events.iter().map(summary).collect();
    assert_eq!(summaries.len(), 2, "{summaries:?}");
    assert_eq!(
        summaries[0],
        (
            "Normal",
            "LeaderElection",
            "pod-a became leader (fencing token 7)"
        )
    );
    assert_eq!(summaries[1].0, "Warning");
    assert_eq!(summaries[1].1, "LeadershipLost");
    assert!(summaries[1].2.contains("lease_taken"), "{summaries:?}");
    for event in &events {
        let regarding = event.regarding.as_ref().expect("regarding");
        assert_eq!(
            regarding.api_version.as_deref(),
            Some("coordination.k8s.io/v1")
        );
        assert_eq!(regarding.kind.as_deref(), Some("Lease"));
        assert_eq!(regarding.namespace.as_deref(), Some(server.namespace()));
        assert_eq!(regarding.name.as_deref(), Some(LEASE));
        assert_eq!(event.reporting_controller.as_deref(), Some("leasecron"));
        assert_eq!(event.reporting_instance.as_deref(), Some(IDENTITY));
    }
    assert!(writes(&server)
        .iter()
        .all(|r| r.resource == Some(Resource::Events) && r.verb == Some(Verb::Create)));
}

async fn a_lost_term_on_shutdown_is_a_normal_event(which: Which) {
    let Some(server) = FakeApiServer::start_on(which, "a_lost_term_on_shutdown_is_a_n").await
    else {
        return;
    };
    let sink = sink(&server).await;
    sink.on_election(&ElectionEvent::Lost {
        token: FencingToken(2),
        reason: LossReason::Shutdown,
    });
    flush(&sink).await;
    let events = events(&server).await;
    let summaries: Vec<_> = events.iter().map(summary).collect();
    assert_eq!(summaries.len(), 1);
    assert_eq!(summaries[0].0, "Normal");
    assert_eq!(summaries[0].1, "LeadershipLost");
}

async fn failed_timed_out_and_cancelled_runs_are_warnings_and_successes_are_not(which: Which) {
    let Some(server) = FakeApiServer::start_on(which, "failed_timed_out_and_cancelled").await
    else {
        return;
    };
    let sink = sink(&server).await;
    sink.on_run(&failed("backup"));
    sink.on_run(&finished("report", Outcome::TimedOut));
    sink.on_run(&finished("sync", Outcome::Cancelled));
    sink.on_run(&finished("ok", Outcome::Succeeded));
    flush(&sink).await;

    let events = events(&server).await;
    let mut summaries: Vec<_> = events.iter().map(summary).collect();
    summaries.sort();
    assert_eq!(summaries.len(), 3, "{summaries:?}");
    let expected = [
        ("JobCancelled", "job sync: ", "cancelled after 3 attempts"),
        (
            "JobFailed",
            "job backup: ",
            "failed (exit code 3) after 3 attempts",
        ),
        ("JobTimedOut", "job report: ", "timed_out after 3 attempts"),
    ];
    for ((type_, reason, note), (want_reason, job, detail)) in summaries.iter().zip(expected) {
        assert_eq!(*type_, "Warning");
        assert_eq!(*reason, want_reason);
        assert!(note.starts_with(job), "{note}");
        assert!(note.contains("2026-03-01T10:00:00Z"), "{note}");
        assert!(note.contains(detail), "{note}");
    }
}

async fn a_missed_deadline_and_a_failed_reload_are_warnings(which: Which) {
    let Some(server) = FakeApiServer::start_on(which, "a_missed_deadline_and_a_failed").await
    else {
        return;
    };
    let sink = sink(&server).await;
    let scheduled: DateTime<Utc> = "2026-03-01T10:05:00Z".parse().expect("a timestamp");
    sink.on_dispatch(&missed("backup", scheduled));
    sink.on_config_reload(&reload_failed("jobs.yaml:3:7: unknown field `comand`"));
    flush(&sink).await;

    let events = events(&server).await;
    let mut summaries: Vec<_> = events.iter().map(summary).collect();
    summaries.sort();
    assert_eq!(summaries.len(), 2);
    assert_eq!(summaries[0].1, "ConfigReloadFailed");
    assert!(summaries[0]
        .2
        .contains("jobs.yaml:3:7: unknown field `comand`"));
    assert_eq!(summaries[1].1, "JobMissedDeadline");
    assert!(summaries[1].2.contains("backup") && summaries[1].2.contains("2026-03-01T10:05:00Z"));
    assert!(summaries.iter().all(|s| s.0 == "Warning"));
}

async fn a_burst_of_failures_of_one_job_makes_two_writes_carrying_the_count(which: Which) {
    let Some(server) = FakeApiServer::start_on(which, "a_burst_of_failures_of_one_job").await
    else {
        return;
    };
    let sink = sink(&server).await;
    for _ in 0..100 {
        sink.on_run(&failed("flaky"));
    }
    flush(&sink).await;

    assert_eq!(writes(&server).len(), 2);
    let events = events(&server).await;
    let notes: Vec<_> = events.iter().map(|e| summary(e).2).collect();
    assert_eq!(notes.len(), 2);
    assert!(notes[0].starts_with("job flaky: "), "{notes:?}");
    assert!(
        notes[1].starts_with("99 times since the last report; latest: job flaky: "),
        "{notes:?}"
    );
    assert_eq!(sink.dropped(), 0);
}

async fn folded_repeats_are_written_when_the_key_interval_is_over(which: Which) {
    let Some(server) = FakeApiServer::start_on(which, "folded_repeats_are_written_whe").await
    else {
        return;
    };
    let limits = Limits {
        key_interval: Duration::from_millis(300),
        ..Limits::default()
    };
    let client = server.client(IDENTITY).await;
    let sink = EventSink::with_limits(client, server.namespace(), LEASE, IDENTITY, limits);
    for _ in 0..5 {
        sink.on_run(&failed("flaky"));
    }
    let notes = notes_once_there_are(&server, 2).await;
    assert!(notes[0].starts_with("job flaky: "), "{notes:?}");
    assert!(
        notes[1].starts_with("4 times since the last report; latest: job flaky: "),
        "{notes:?}"
    );
}

async fn dropping_the_last_sink_writes_what_was_folded(which: Which) {
    let Some(server) = FakeApiServer::start_on(which, "dropping_the_last_sink_writes_").await
    else {
        return;
    };
    let sink = sink(&server).await;
    sink.on_dispatch(&missed("a", Utc::now()));
    sink.on_dispatch(&missed("a", Utc::now()));
    sink.on_dispatch(&missed("a", Utc::now()));
    drop(sink);
    let notes = notes_once_there_are(&server, 2).await;
    assert!(
        notes[1].starts_with("2 times since the last report; latest: job a: "),
        "{notes:?}"
    );
}

async fn a_forbidden_events_api_is_logged_once_and_then_nothing_is_sent(which: Which) {
    let (logs_buffer, _guard) = capture_logs();
    let Some(server) = FakeApiServer::start_on(which, "a_forbidden_events_api_is_logg").await
    else {
        return;
    };
    server.deny(IDENTITY, Resource::Events, &[Verb::Create, Verb::Patch]);
    let sink = sink(&server).await;
    sink.on_election(&ElectionEvent::Acquired {
        token: FencingToken(1),
    });
    sink.on_run(&failed("a"));
    sink.on_run(&failed("b"));
    sink.on_dispatch(&missed("c", Utc::now()));
    flush(&sink).await;

    let refused = writes(&server);
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(refused[0].status, Some(403));
    assert!(!sink.is_enabled());
    for _ in 0..10 {
        sink.on_run(&failed("a"));
    }
    flush(&sink).await;
    assert_eq!(writes(&server).len(), 1);
    let logs = logs(&logs_buffer);
    assert_eq!(
        logs.matches("Kubernetes Events disabled").count(),
        1,
        "{logs}"
    );
}

async fn other_api_errors_drop_the_event_but_keep_the_sink(which: Which) {
    let (logs_buffer, _guard) = capture_logs();
    let Some(server) = FakeApiServer::start_on(which, "other_api_errors_drop_the_even").await
    else {
        return;
    };
    let sink = sink(&server).await;
    server.faults(IDENTITY).set(Fault::Status(500));
    sink.on_run(&failed("a"));
    sink.on_run(&failed("b"));
    flush(&sink).await;
    assert_eq!(writes(&server).len(), 2);
    assert!(sink.is_enabled());
    let logs = logs(&logs_buffer);
    assert_eq!(
        logs.matches("could not write a Kubernetes Event").count(),
        1,
        "{logs}"
    );

    server.faults(IDENTITY).clear();
    sink.on_run(&failed("c"));
    flush(&sink).await;
    let events = events(&server).await;
    assert_eq!(events.len(), 1);
    assert!(summary(&events[0]).2.starts_with("job c: "));
}

async fn a_hung_api_never_blocks_the_caller_and_a_full_queue_drops_and_counts(which: Which) {
    let Some(server) = FakeApiServer::start_on(which, "a_hung_api_never_blocks_the_ca").await
    else {
        return;
    };
    let sink = sink(&server).await;
    server.faults(IDENTITY).set(Fault::Hang);
    sink.on_run(&failed("a"));
    tokio::time::timeout(PATIENCE, async {
        while writes(&server).is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the first write reaches the server");
    server.faults(IDENTITY).clear();

    // The publisher is stuck in that write: these fill the queue and the rest are dropped.
    for _ in 0..QUEUE_CAPACITY + 10 {
        sink.on_run(&failed("b"));
    }
    assert_eq!(sink.dropped(), 10);

    // The hung write ends at its timeout; the queued repeats are written as one folded Event.
    tokio::time::timeout(PATIENCE + API_TIMEOUT, sink.flush())
        .await
        .expect("the flush ends");
    let events = events(&server).await;
    let notes: Vec<_> = events.iter().map(|e| summary(e).2).collect();
    assert_eq!(notes.len(), 2, "{notes:?}");
    assert!(notes.iter().any(|n| n.starts_with("job b: ")), "{notes:?}");
    let folded = format!("{} times since the last report", QUEUE_CAPACITY - 1);
    assert!(notes.iter().any(|n| n.starts_with(&folded)), "{notes:?}");
}

async fn a_disabled_sink_writes_nothing(which: Which) {
    let Some(server) = FakeApiServer::start_on(which, "a_disabled_sink_writes_nothing").await
    else {
        return;
    };
    let sink = EventSink::disabled();
    sink.on_election(&ElectionEvent::Acquired {
        token: FencingToken(1),
    });
    sink.on_run(&failed("a"));
    sink.on_dispatch(&missed("a", Utc::now()));
    sink.on_config_reload(&reload_failed("bad"));
    flush(&sink).await;
    assert!(server.requests().is_empty());
    assert!(!sink.is_enabled());
}

/// A pod name may have 253 characters, an Event's `reportingInstance` 128: the real server refuses a
/// longer one (422), so the sink shortens it, keeping both ends, and the Event is written.
async fn a_long_identity_is_shortened_so_that_the_event_is_accepted(which: Which) {
    let Some(server) = FakeApiServer::start_on(which, "a_long_identity_is_shortened").await else {
        return;
    };
    let identity = format!("{}-7d4f9c8b5-x2x9q", "p".repeat(220));
    let sink = EventSink::new(
        server.client(IDENTITY).await,
        server.namespace(),
        LEASE,
        &identity,
    );
    sink.on_election(&ElectionEvent::Acquired {
        token: FencingToken(1),
    });
    flush(&sink).await;
    let events = events(&server).await;
    assert_eq!(events.len(), 1, "{events:?}");
    let instance = events[0].reporting_instance.as_deref().unwrap_or_default();
    assert_eq!(instance.len(), 128, "{instance}");
    assert!(instance.ends_with("-7d4f9c8b5-x2x9q"), "{instance}");
    assert!(
        summary(&events[0]).2.contains(&identity),
        "the note names the whole identity"
    );
}

/// Events about a Lease are named `<lease>.<16 hex digits>`: for a Lease name over 236 characters that
/// name is over 253 and every write would be refused (422), so the sink is off from the start and says
/// why.
async fn a_lease_name_too_long_for_event_names_disables_events_and_says_so(which: Which) {
    let Some(server) = FakeApiServer::start_on(which, "a_lease_name_too_long_for_event").await
    else {
        return;
    };
    let (logs_buffer, _guard) = capture_logs();
    let longest = "l".repeat(leasecron::kubernetes::events::MAX_LEASE_NAME_FOR_EVENTS);
    let fits = EventSink::new(
        server.client(IDENTITY).await,
        server.namespace(),
        &longest,
        IDENTITY,
    );
    fits.on_election(&ElectionEvent::Acquired {
        token: FencingToken(1),
    });
    flush(&fits).await;
    assert_eq!(
        events(&server).await.len(),
        1,
        "a {}-character name fits",
        longest.len()
    );
    let long = "l".repeat(leasecron::kubernetes::events::MAX_LEASE_NAME_FOR_EVENTS + 1);
    let sink = EventSink::new(
        server.client(IDENTITY).await,
        server.namespace(),
        &long,
        IDENTITY,
    );
    assert!(!sink.is_enabled());
    sink.on_election(&ElectionEvent::Acquired {
        token: FencingToken(2),
    });
    flush(&sink).await;
    assert_eq!(events(&server).await.len(), 1);
    let logs = logs(&logs_buffer);
    assert!(logs.contains("Kubernetes Events disabled"), "{logs}");
}

on_both_servers!(
    #[tokio::test]
    a_long_identity_is_shortened_so_that_the_event_is_accepted,
    a_lease_name_too_long_for_event_names_disables_events_and_says_so,
    leadership_acquired_and_lost_are_events_about_the_lease,
    a_lost_term_on_shutdown_is_a_normal_event,
    failed_timed_out_and_cancelled_runs_are_warnings_and_successes_are_not,
    a_missed_deadline_and_a_failed_reload_are_warnings,
    a_burst_of_failures_of_one_job_makes_two_writes_carrying_the_count,
    folded_repeats_are_written_when_the_key_interval_is_over,
    dropping_the_last_sink_writes_what_was_folded,
    a_forbidden_events_api_is_logged_once_and_then_nothing_is_sent,
    other_api_errors_drop_the_event_but_keep_the_sink,
    a_hung_api_never_blocks_the_caller_and_a_full_queue_drops_and_counts,
    a_disabled_sink_writes_nothing,
);
