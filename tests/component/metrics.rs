//! The metrics registry: events in, Prometheus exposition text out, with bounded job labels.

use crate::support::exposition;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use exposition::sample;
use leasecron::config::{self, JobSet, LoadOptions};
use leasecron::event::{
    ConfigReload, DispatchEvent, ElectionEvent, Failure, LossReason, Outcome, RunEvent, RunReport,
    SkipReason,
};
use leasecron::lease_store::Verb;
use leasecron::metrics::{Metrics, CONTENT_TYPE};
use leasecron::observe::{self, Observers};
use leasecron::term::FencingToken;

/// The metric names of the first design contract (docs/design.md §3 lists them with those added since).
const CONTRACT: [&str; 16] = [
    "leasecron_is_leader",
    "leasecron_lease_transitions",
    "leasecron_leadership_acquired_total",
    "leasecron_leadership_lost_total",
    "leasecron_lease_renew_failures_total",
    "leasecron_lease_request_duration_seconds",
    "leasecron_job_runs_total",
    "leasecron_job_skipped_total",
    "leasecron_job_running",
    "leasecron_job_duration_seconds",
    "leasecron_job_start_delay_seconds",
    "leasecron_job_last_success_timestamp_seconds",
    "leasecron_job_next_run_timestamp_seconds",
    "leasecron_config_reloads_total",
    "leasecron_jobs",
    "leasecron_build_info",
];

fn jobs(names: &[&str]) -> JobSet {
    if names.is_empty() {
        return parse("jobs: []\n");
    }
    let mut yaml = String::from("jobs:\n");
    for name in names {
        yaml.push_str(&format!(
            "  - name: {name}\n    schedule: \"*/5 * * * *\"\n    shell: \"true\"\n"
        ));
    }
    parse(&yaml)
}

fn parse(yaml: &str) -> JobSet {
    let opts = LoadOptions {
        max_termination_grace: Duration::MAX,
    };
    config::parse_str(yaml, "test.yaml", &opts).expect("the test jobs file is valid")
}

fn metrics_for(names: &[&str]) -> Metrics {
    let metrics = Metrics::new().expect("the registry builds");
    metrics.set_jobs(&jobs(names));
    metrics
}

fn text(metrics: &Metrics) -> String {
    metrics.encode().expect("the registry encodes")
}

/// The `job` label values present in any series.
fn job_labels(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| line.split("job=\"").nth(1)?.split('"').next())
        .map(str::to_owned)
        .collect()
}

fn at(secs: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(secs, 0)
        .single()
        .expect("a valid timestamp")
}

fn report(job: &str, outcome: Outcome, attempts: u32) -> RunReport {
    RunReport {
        job: job.to_owned(),
        scheduled: at(1_000),
        attempts,
        outcome,
        started_at: at(1_002),
        duration: Duration::from_secs(3),
        start_delay: Duration::from_secs(2),
        fencing_token: 1,
        leftover_processes_killed: 0,
    }
}

fn started(job: &str, attempt: u32) -> RunEvent {
    RunEvent::Started {
        job: job.to_owned(),
        scheduled: at(1_000),
        attempt,
        pid: 42,
    }
}

#[test]
fn every_contract_metric_is_exposed_with_help_text_and_a_type() {
    let metrics = metrics_for(&["a"]);
    // The two timestamp gauges have a series only once there is a value (a 0 would read as 1970).
    metrics.observe_run(&RunEvent::Finished(report("a", Outcome::Succeeded, 1)));
    metrics.next_run("a", Some(at(2_000)));
    let text = text(&metrics);
    for name in CONTRACT {
        let help = format!("# HELP {name} ");
        let line = text
            .lines()
            .find(|l| l.starts_with(&help))
            .unwrap_or_else(|| panic!("no HELP for {name} in:\n{text}"));
        assert!(
            line.len() > help.len() + 10,
            "{name} has no real help: {line}"
        );
        assert!(
            text.contains(&format!("# TYPE {name} ")),
            "no TYPE for {name}"
        );
    }
    for line in text.lines().filter(|l| l.starts_with("# HELP ")) {
        assert!(line.split(' ').count() > 3, "empty help: {line}");
    }
    assert!(text.contains("process_resident_memory_bytes"));
    assert_eq!(CONTENT_TYPE, "text/plain; version=0.0.4");
}

#[test]
fn the_log_loss_counters_are_counters_with_help() {
    let text = text(&metrics_for(&[]));
    for name in [
        "leasecron_log_write_errors_total",
        "leasecron_log_lines_dropped_total",
    ] {
        assert!(text.contains(&format!("# TYPE {name} counter")), "{text}");
        let help = format!("# HELP {name} ");
        assert!(
            text.lines()
                .any(|l| l.starts_with(&help) && l.len() > help.len() + 10),
            "{text}"
        );
        // Nothing here writes to the process's log queue.
        assert_eq!(sample(&text, name), Some(0.0), "{name}");
    }
}

#[test]
fn build_info_carries_the_crate_version() {
    let text = text(&metrics_for(&[]));
    let series = format!(
        "leasecron_build_info{{version=\"{}\"}}",
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(sample(&text, &series), Some(1.0));
}

#[test]
fn a_new_job_set_exposes_every_job_series_at_zero() {
    let text = text(&metrics_for(&["a", "b"]));
    assert_eq!(sample(&text, "leasecron_jobs"), Some(2.0));
    for job in ["a", "b"] {
        for outcome in ["succeeded", "failed", "timed_out", "cancelled"] {
            let series = format!("leasecron_job_runs_total{{job=\"{job}\",outcome=\"{outcome}\"}}");
            assert_eq!(sample(&text, &series), Some(0.0), "{series}");
        }
        for reason in [
            "overlap",
            "not_leader",
            "missed_deadline",
            "suspended",
            "already_started",
            "state_unavailable",
            "queue_replaced",
        ] {
            let series =
                format!("leasecron_job_skipped_total{{job=\"{job}\",reason=\"{reason}\"}}");
            assert_eq!(sample(&text, &series), Some(0.0), "{series}");
        }
        let running = format!("leasecron_job_running{{job=\"{job}\"}}");
        assert_eq!(sample(&text, &running), Some(0.0));
        let leftovers = format!("leasecron_job_leftover_processes_killed_total{{job=\"{job}\"}}");
        assert_eq!(sample(&text, &leftovers), Some(0.0));
    }
    assert_eq!(
        sample(&text, "leasecron_config_reloads_total{result=\"failure\"}"),
        Some(0.0)
    );
    assert_eq!(
        sample(&text, "leasecron_config_reloads_total{result=\"success\"}"),
        Some(0.0)
    );
}

#[test]
fn finished_runs_count_by_outcome_with_duration_delay_and_last_success() {
    let metrics = metrics_for(&["a"]);
    metrics.observe_run(&started("a", 1));
    metrics.observe_run(&RunEvent::Finished(report("a", Outcome::Succeeded, 1)));
    metrics.observe_run(&started("a", 1));
    metrics.observe_run(&RunEvent::Finished(report(
        "a",
        Outcome::Failed(Failure::ExitCode(1)),
        1,
    )));
    let text = text(&metrics);
    let runs = |outcome: &str| {
        sample(
            &text,
            &format!("leasecron_job_runs_total{{job=\"a\",outcome=\"{outcome}\"}}"),
        )
    };
    assert_eq!(runs("succeeded"), Some(1.0));
    assert_eq!(runs("failed"), Some(1.0));
    assert_eq!(runs("timed_out"), Some(0.0));
    assert_eq!(
        sample(&text, "leasecron_job_duration_seconds_count{job=\"a\"}"),
        Some(2.0)
    );
    assert_eq!(
        sample(&text, "leasecron_job_duration_seconds_sum{job=\"a\"}"),
        Some(6.0)
    );
    assert_eq!(
        sample(&text, "leasecron_job_start_delay_seconds_count"),
        Some(2.0)
    );
    // started 1002 + 3 s duration: the success finished at 1005.
    assert_eq!(
        sample(
            &text,
            "leasecron_job_last_success_timestamp_seconds{job=\"a\"}"
        ),
        Some(1005.0)
    );
}

#[test]
fn processes_left_behind_are_counted_per_job_and_go_with_the_job() {
    let metrics = metrics_for(&["a", "b"]);
    let left = |count| {
        RunEvent::Finished(RunReport {
            leftover_processes_killed: count,
            ..report("a", Outcome::Succeeded, 1)
        })
    };
    metrics.observe_run(&left(2));
    metrics.observe_run(&left(0));
    metrics.observe_run(&left(3));
    let series =
        |job: &str| format!("leasecron_job_leftover_processes_killed_total{{job=\"{job}\"}}");
    let counted = text(&metrics);
    assert!(counted.contains("# TYPE leasecron_job_leftover_processes_killed_total counter"));
    assert_eq!(sample(&counted, &series("a")), Some(5.0));
    assert_eq!(sample(&counted, &series("b")), Some(0.0));
    metrics.set_jobs(&jobs(&["b"]));
    let after_reload = text(&metrics);
    assert_eq!(sample(&after_reload, &series("a")), None);
    assert_eq!(sample(&after_reload, &series("b")), Some(0.0));
}

#[test]
fn last_success_is_absent_until_a_run_succeeds() {
    let metrics = metrics_for(&["a"]);
    metrics.observe_run(&RunEvent::Finished(report("a", Outcome::TimedOut, 1)));
    let text = text(&metrics);
    assert_eq!(
        sample(
            &text,
            "leasecron_job_last_success_timestamp_seconds{job=\"a\"}"
        ),
        None
    );
}

#[test]
fn start_delay_buckets_begin_at_one_millisecond() {
    let metrics = metrics_for(&["a"]);
    let mut quick = report("a", Outcome::Succeeded, 1);
    quick.start_delay = Duration::from_micros(500);
    metrics.observe_run(&RunEvent::Finished(quick));
    let text = text(&metrics);
    assert_eq!(
        sample(
            &text,
            "leasecron_job_start_delay_seconds_bucket{le=\"0.001\"}"
        ),
        Some(1.0)
    );
    let first_bucket = text
        .lines()
        .find(|l| l.starts_with("leasecron_job_start_delay_seconds_bucket"))
        .expect("buckets");
    assert!(first_bucket.contains("le=\"0.001\""), "{first_bucket}");
}

#[test]
fn running_counts_runs_not_attempts_and_drops_at_the_end() {
    let metrics = metrics_for(&["a"]);
    let running = |m: &Metrics| sample(&text(m), "leasecron_job_running{job=\"a\"}");
    metrics.observe_run(&started("a", 1));
    metrics.observe_run(&started("b-unknown", 1));
    assert_eq!(running(&metrics), Some(1.0));
    metrics.observe_run(&started("a", 2));
    metrics.observe_run(&started("a", 3));
    assert_eq!(running(&metrics), Some(1.0), "retries are the same run");
    metrics.observe_run(&RunEvent::Finished(report("a", Outcome::Succeeded, 3)));
    assert_eq!(running(&metrics), Some(0.0));
    // A run cancelled before its first attempt never counted as running.
    metrics.observe_run(&RunEvent::Finished(report("a", Outcome::Cancelled, 0)));
    assert_eq!(running(&metrics), Some(0.0));
}

#[test]
fn a_removed_jobs_series_vanish_and_a_new_jobs_appear() {
    let metrics = metrics_for(&["old", "kept"]);
    metrics.observe_run(&RunEvent::Finished(report("old", Outcome::Succeeded, 1)));
    metrics.next_run("old", Some(at(2_000)));
    metrics.set_jobs(&jobs(&["kept", "new"]));
    let text = text(&metrics);
    assert_eq!(
        job_labels(&text),
        BTreeSet::from(["kept".to_owned(), "new".to_owned()])
    );
    assert!(!text.contains("job=\"old\""), "{text}");
    assert_eq!(sample(&text, "leasecron_jobs"), Some(2.0));
    assert_eq!(
        sample(
            &text,
            "leasecron_job_runs_total{job=\"new\",outcome=\"succeeded\"}"
        ),
        Some(0.0)
    );
}

#[test]
fn a_kept_jobs_counters_survive_a_reload() {
    let metrics = metrics_for(&["kept"]);
    metrics.observe_run(&RunEvent::Finished(report("kept", Outcome::Succeeded, 1)));
    metrics.set_jobs(&jobs(&["kept", "new"]));
    assert_eq!(
        sample(
            &text(&metrics),
            "leasecron_job_runs_total{job=\"kept\",outcome=\"succeeded\"}"
        ),
        Some(1.0)
    );
}

#[test]
fn events_for_jobs_outside_the_set_create_no_series() {
    let metrics = metrics_for(&["a"]);
    metrics.observe_run(&RunEvent::Finished(report("ghost", Outcome::Succeeded, 1)));
    metrics.observe_run(&RunEvent::Skipped {
        job: "ghost".to_owned(),
        scheduled: at(1_000),
        reason: SkipReason::Overlap,
    });
    metrics.skipped("ghost", SkipReason::Suspended);
    metrics.next_run("ghost", Some(at(2_000)));
    let text = text(&metrics);
    assert_eq!(job_labels(&text), BTreeSet::from(["a".to_owned()]));
}

#[test]
fn skips_count_by_reason() {
    let metrics = metrics_for(&["a"]);
    metrics.observe_run(&RunEvent::Skipped {
        job: "a".to_owned(),
        scheduled: at(1_000),
        reason: SkipReason::Overlap,
    });
    metrics.skipped("a", SkipReason::MissedDeadline);
    metrics.observe_run(&RunEvent::Skipped {
        job: "a".to_owned(),
        scheduled: at(1_001),
        reason: SkipReason::QueueReplaced,
    });
    let text = text(&metrics);
    let skipped = |reason: &str| {
        sample(
            &text,
            &format!("leasecron_job_skipped_total{{job=\"a\",reason=\"{reason}\"}}"),
        )
    };
    assert_eq!(skipped("overlap"), Some(1.0));
    assert_eq!(skipped("missed_deadline"), Some(1.0));
    assert_eq!(skipped("queue_replaced"), Some(1.0));
    assert_eq!(skipped("suspended"), Some(0.0));
}

#[test]
fn next_run_is_set_and_removed_when_the_schedule_ends() {
    let metrics = metrics_for(&["a"]);
    metrics.next_run("a", Some(at(1_700_000_000)));
    let series = "leasecron_job_next_run_timestamp_seconds{job=\"a\"}";
    assert_eq!(sample(&text(&metrics), series), Some(1_700_000_000.0));
    metrics.next_run("a", None);
    assert_eq!(sample(&text(&metrics), series), None);
}

#[test]
fn leadership_follows_acquire_and_loss_and_a_follower_exports_zero() {
    let metrics = metrics_for(&["a"]);
    assert_eq!(sample(&text(&metrics), "leasecron_is_leader"), Some(0.0));
    metrics.observe_election(&ElectionEvent::Acquired {
        token: FencingToken(3),
    });
    let led = text(&metrics);
    assert_eq!(sample(&led, "leasecron_is_leader"), Some(1.0));
    assert_eq!(
        sample(&led, "leasecron_leadership_acquired_total"),
        Some(1.0)
    );
    metrics.observe_election(&ElectionEvent::Lost {
        token: FencingToken(3),
        reason: LossReason::LeaseTaken,
    });
    let lost = text(&metrics);
    assert_eq!(sample(&lost, "leasecron_is_leader"), Some(0.0));
    assert_eq!(
        sample(
            &lost,
            "leasecron_leadership_lost_total{reason=\"lease_taken\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &lost,
            "leasecron_leadership_lost_total{reason=\"shutdown\"}"
        ),
        Some(0.0)
    );
}

#[test]
fn lease_transitions_mirror_the_observed_record() {
    let metrics = metrics_for(&[]);
    for transitions in [7, 9] {
        metrics.observe_election(&ElectionEvent::Observed {
            holder: Some("peer".to_owned()),
            lease_transitions: transitions,
        });
    }
    assert_eq!(
        sample(&text(&metrics), "leasecron_lease_transitions"),
        Some(9.0)
    );
}

#[test]
fn fencing_token_regressions_are_counted_from_zero() {
    let metrics = metrics_for(&[]);
    assert_eq!(
        sample(&text(&metrics), "leasecron_fencing_token_regressions_total"),
        Some(0.0),
        "exported at 0 from the start, for alerts and rates"
    );
    metrics.observe_election(&ElectionEvent::TokenRegression {
        highest_seen: 9,
        durable: 0,
    });
    assert_eq!(
        sample(&text(&metrics), "leasecron_fencing_token_regressions_total"),
        Some(1.0)
    );
}

#[test]
fn renew_failures_and_request_durations_are_recorded() {
    let metrics = metrics_for(&[]);
    metrics.observe_election(&ElectionEvent::RenewFailed {
        error: "timeout".to_owned(),
    });
    for verb in [Verb::Update, Verb::Update, Verb::Get] {
        metrics.observe_election(&ElectionEvent::Request {
            verb,
            duration: Duration::from_millis(20),
            ok: true,
        });
    }
    let text = text(&metrics);
    assert_eq!(
        sample(&text, "leasecron_lease_renew_failures_total"),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            "leasecron_lease_request_duration_seconds_count{verb=\"update\"}"
        ),
        Some(2.0)
    );
    assert_eq!(
        sample(
            &text,
            "leasecron_lease_request_duration_seconds_count{verb=\"watch\"}"
        ),
        Some(0.0)
    );
}

fn applied(hash: u64, initial: bool) -> ConfigReload {
    ConfigReload::Applied {
        origin: "jobs.yaml".to_owned(),
        hash,
        jobs: 0,
        initial,
    }
}

fn failed() -> ConfigReload {
    ConfigReload::Failed {
        origin: "jobs.yaml".to_owned(),
        message: "jobs.yaml:1:1: bad".to_owned(),
    }
}

#[test]
fn config_reloads_count_by_result_and_the_load_at_start_is_not_a_reload() {
    let metrics = metrics_for(&[]);
    metrics.config_reload(&applied(1, true));
    metrics.config_reload(&applied(2, false));
    metrics.config_reload(&failed());
    metrics.config_reload(&failed());
    let text = text(&metrics);
    assert_eq!(
        sample(&text, "leasecron_config_reloads_total{result=\"success\"}"),
        Some(1.0)
    );
    assert_eq!(
        sample(&text, "leasecron_config_reloads_total{result=\"failure\"}"),
        Some(2.0)
    );
}

#[test]
fn the_last_reload_gauges_follow_success_and_failure() {
    let metrics = metrics_for(&[]);
    metrics.config_reload(&applied(u64::MAX, true));
    let text_after_load = text(&metrics);
    assert_eq!(
        sample(&text_after_load, "leasecron_config_last_reload_successful"),
        Some(1.0)
    );
    // The top 53 bits, exact in an f64.
    assert_eq!(
        sample(&text_after_load, "leasecron_config_hash"),
        Some((u64::MAX >> 11) as f64)
    );
    let loaded_at = sample(
        &text_after_load,
        "leasecron_config_last_reload_success_timestamp_seconds",
    )
    .expect("set by the load at start");
    assert!((loaded_at - Utc::now().timestamp() as f64).abs() < 60.0);

    metrics.config_reload(&failed());
    let text_after_failure = text(&metrics);
    assert_eq!(
        sample(
            &text_after_failure,
            "leasecron_config_last_reload_successful"
        ),
        Some(0.0)
    );
    // The jobs in force did not change: neither did their hash and load time.
    assert_eq!(
        sample(&text_after_failure, "leasecron_config_hash"),
        Some((u64::MAX >> 11) as f64)
    );
    assert_eq!(
        sample(
            &text_after_failure,
            "leasecron_config_last_reload_success_timestamp_seconds"
        ),
        Some(loaded_at)
    );

    metrics.config_reload(&applied(7 << 11, false));
    let text_after_fix = text(&metrics);
    assert_eq!(
        sample(&text_after_fix, "leasecron_config_last_reload_successful"),
        Some(1.0)
    );
    assert_eq!(sample(&text_after_fix, "leasecron_config_hash"), Some(7.0));
}

/// The `hash` label values of `leasecron_config_info`, with their values.
fn config_info(text: &str) -> Vec<(String, f64)> {
    text.lines()
        .filter_map(|line| line.strip_prefix("leasecron_config_info{hash=\""))
        .filter_map(|rest| {
            let (hash, value) = rest.split_once("\"} ")?;
            Some((hash.to_owned(), value.parse().ok()?))
        })
        .collect()
}

#[test]
fn the_config_info_names_the_hash_in_force_in_hex_as_status_shows_it() {
    let metrics = metrics_for(&[]);
    assert_eq!(config_info(&text(&metrics)), [], "absent before the load");
    let hash = 0x0123_4567_89ab_cdef_u64;
    metrics.config_reload(&applied(hash, true));
    let loaded = text(&metrics);
    assert!(loaded.contains("# TYPE leasecron_config_info gauge"));
    assert_eq!(config_info(&loaded), [("0123456789abcdef".to_owned(), 1.0)]);
    assert_eq!(leasecron::event::hash_hex(hash), "0123456789abcdef");
    // The number gauge stays, the same hash's top 53 bits.
    assert_eq!(
        sample(&loaded, "leasecron_config_hash"),
        Some((hash >> 11) as f64)
    );
    metrics.config_reload(&failed());
    assert_eq!(
        config_info(&text(&metrics)),
        [("0123456789abcdef".to_owned(), 1.0)],
        "a rejected version changes nothing in force"
    );
    metrics.config_reload(&applied(0xff, false));
    assert_eq!(
        config_info(&text(&metrics)),
        [("00000000000000ff".to_owned(), 1.0)],
        "one series: the old hash's is gone"
    );
}

#[test]
fn a_scrape_during_reloads_sees_one_whole_job_set() {
    let metrics = Arc::new(metrics_for(&["a", "b"]));
    let (first, second) = (jobs(&["a", "b"]), jobs(&["c", "d", "e"]));
    let stop = Arc::new(AtomicBool::new(false));
    let reloader = {
        let (metrics, stop) = (Arc::clone(&metrics), Arc::clone(&stop));
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                metrics.set_jobs(&second);
                metrics.set_jobs(&first);
            }
        })
    };
    let whole = [
        BTreeSet::from(["a".to_owned(), "b".to_owned()]),
        BTreeSet::from(["c".to_owned(), "d".to_owned(), "e".to_owned()]),
    ];
    for _ in 0..100 {
        let text = text(&metrics);
        let seen = job_labels(&text);
        assert!(whole.contains(&seen), "a half-updated job set: {seen:?}");
        let count = sample(&text, "leasecron_jobs").expect("leasecron_jobs");
        assert_eq!(count as usize, seen.len(), "leasecron_jobs disagrees");
    }
    stop.store(true, Ordering::Relaxed);
    reloader.join().expect("the reloader did not panic");
}

#[tokio::test]
async fn the_fan_out_delivers_every_source_to_every_observer() {
    let first = Arc::new(metrics_for(&["a"]));
    let second = Arc::new(metrics_for(&["a"]));
    let mut observers = Observers::new();
    observers.push(first.clone());
    observers.push(second.clone());
    let (senders, receivers) = observe::channels();
    let fan_out = tokio::spawn(observers.run(receivers));
    senders
        .runs
        .send(RunEvent::Finished(report("a", Outcome::Succeeded, 1)))
        .expect("open");
    senders
        .election
        .send(ElectionEvent::Acquired {
            token: FencingToken(1),
        })
        .expect("open");
    let skip = |leader| DispatchEvent::Skipped {
        job: "a".to_owned(),
        scheduled: at(1_000),
        reason: SkipReason::Suspended,
        leader,
    };
    senders.dispatch.send(skip(true)).expect("open");
    senders.dispatch.send(skip(false)).expect("open");
    drop(senders);
    fan_out
        .await
        .expect("the fan-out ends once every sender is gone");
    for metrics in [first, second] {
        let text = text(&metrics);
        assert_eq!(
            sample(
                &text,
                "leasecron_job_runs_total{job=\"a\",outcome=\"succeeded\"}"
            ),
            Some(1.0)
        );
        assert_eq!(sample(&text, "leasecron_is_leader"), Some(1.0));
        assert_eq!(
            sample(
                &text,
                "leasecron_job_skipped_total{job=\"a\",reason=\"suspended\"}"
            ),
            Some(1.0),
            "only the leader's skip counts"
        );
    }
}
