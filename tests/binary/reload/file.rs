//! Live reload of the jobs file, end to end: real `leasecron run` processes on a local lease file, a jobs
//! file updated the way kubelet updates a ConfigMap volume (an atomic swap of the `..data` symlink) or the
//! way an editor saves it, and the runs recorded by the jobs themselves.
//!
//! Each job appends `JOB WHAT SLOT NS` lines (`start`/`end`, its `LEASECRON_SCHEDULED_TIME`, the child's
//! own clock) to a shared file.

use crate::support::{exposition, mount, replica};

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};
use exposition::{metric, sample};
use leasecron::reload::content_hash;
use mount::KubeletMount;
use replica::{now_ns, wait_for, Replica, FAST_TIMINGS};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(30);

/// One line written by a job.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Record {
    job: String,
    what: String,
    slot: DateTime<Utc>,
    ns: u128,
}

/// A job firing on `schedule` that records `start`, runs `body`, then records `end` (tagged `tag`).
fn job(name: &str, schedule: &str, body: &str, runs: &Path) -> String {
    let record = |what: &str| {
        format!(
            r#"echo "$LEASECRON_JOB {what} $LEASECRON_SCHEDULED_TIME $(date +%s%N)" >> {}"#,
            runs.display()
        )
    };
    format!(
        "  - name: {name}\n    schedule: \"{schedule}\"\n    terminationGrace: 500ms\n    shell: '{}; {body}; {}'\n",
        record("start"),
        record("end")
    )
}

/// A job that never fires in a test's lifetime.
fn idle_job(name: &str) -> String {
    format!("  - name: {name}\n    schedule: \"0 0 1 1 *\"\n    terminationGrace: 500ms\n    shell: \"true\"\n")
}

fn jobs_file(jobs: &[String]) -> String {
    format!("jobs:\n{}", jobs.concat())
}

fn records(runs: &Path) -> Vec<Record> {
    let text = fs::read_to_string(runs).unwrap_or_default();
    text.lines()
        .map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [job, what, slot, ns] = fields[..] else {
                panic!("malformed record {line:?}");
            };
            Record {
                job: job.to_owned(),
                what: what.to_owned(),
                slot: DateTime::parse_from_rfc3339(slot)
                    .expect("LEASECRON_SCHEDULED_TIME is RFC 3339")
                    .with_timezone(&Utc),
                ns: ns.parse().expect("the clock is a number"),
            }
        })
        .collect()
}

fn records_of(runs: &Path, job: &str, what: &str) -> Vec<Record> {
    records(runs)
        .into_iter()
        .filter(|r| r.job == job && r.what == what)
        .collect()
}

fn job_names(status: &Value) -> Vec<String> {
    status["jobs"]
        .as_array()
        .map(|jobs| {
            jobs.iter()
                .filter_map(|j| j["name"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn start_leader(dir: &Path, jobs: &Path, identity: &str) -> Replica {
    let replica = Replica::start(dir, identity, jobs, &dir.join("lease"), &FAST_TIMINGS);
    wait_for(WAIT, || replica.status().filter(|s| s["leading"] == true))
        .unwrap_or_else(|| panic!("{identity} leads: {}", replica.log_text()));
    replica
}

/// Waits until `leasecron_config_reloads_total{result}` reaches `count`.
fn wait_reloads(replica: &Replica, result: &str, count: f64) {
    let series = format!("leasecron_config_reloads_total{{result=\"{result}\"}}");
    wait_for(WAIT, || metric(replica, &series).filter(|&n| n >= count))
        .unwrap_or_else(|| panic!("{series} reaches {count}: {}", replica.log_text()));
}

fn ns_to_time(ns: u128) -> DateTime<Utc> {
    DateTime::from_timestamp_nanos(i64::try_from(ns).expect("fits"))
}

#[test]
fn a_kubelet_swap_adds_a_job_that_runs_within_two_seconds() {
    let dir = tempfile::tempdir().expect("tempdir");
    let runs = dir.path().join("runs");
    let mut mount = KubeletMount::new(dir.path(), &jobs_file(&[idle_job("idle")]));
    let mut replica = start_leader(dir.path(), &mount.path(), "a");

    let swapped_at = now_ns();
    mount.swap(&jobs_file(&[
        idle_job("idle"),
        job("added", "* * * * * *", "true", &runs),
    ]));
    let first = wait_for(WAIT, || {
        records_of(&runs, "added", "start").into_iter().next()
    })
    .unwrap_or_else(|| panic!("the added job runs: {}", replica.log_text()));
    // The first slot it ran for is at most 2 s after the swap: the schedule was active by then.
    let lead = first.slot - ns_to_time(swapped_at);
    assert!(
        lead <= chrono::Duration::seconds(2),
        "first slot {} is {lead} after the swap",
        first.slot
    );
    assert_eq!(
        metric(
            &replica,
            "leasecron_config_reloads_total{result=\"success\"}"
        ),
        Some(1.0)
    );
    let status = replica.status().expect("status");
    assert_eq!(job_names(&status), ["added", "idle"]);
    replica.stop_cleanly();
}

#[test]
fn a_swap_to_broken_yaml_keeps_the_old_jobs_and_reports_the_failure() {
    let dir = tempfile::tempdir().expect("tempdir");
    let runs = dir.path().join("runs");
    let good = jobs_file(&[job("tick", "* * * * * *", "true", &runs)]);
    let mut mount = KubeletMount::new(dir.path(), &good);
    let mut replica = start_leader(dir.path(), &mount.path(), "a");
    wait_for(WAIT, || records_of(&runs, "tick", "end").first().cloned()).expect("tick runs");

    // Line 3, column 15: the flow sequence is never closed.
    mount.swap("jobs:\n  - name: tick\n    schedule: [\"* * * * * *\"\n");
    wait_reloads(&replica, "failure", 1.0);
    let failed_at = now_ns();
    let log = replica.log_text();
    let origin = mount.path().display().to_string();
    assert!(
        log.lines()
            .any(|l| l.contains(" level=error ") && l.contains(&format!("{origin}:3:15"))),
        "the log names FILE:LINE:COL: {log}"
    );
    assert_eq!(
        metric(&replica, "leasecron_config_last_reload_successful"),
        Some(0.0)
    );
    assert_eq!(replica.http_get("/readyz").map(|r| r.status), Some(200));
    let status = replica.status().expect("status");
    assert!(status["config"]["last_error"]
        .as_str()
        .is_some_and(|e| e.contains(&origin)));
    assert_eq!(
        status["config"]["hash"],
        format!("{:016x}", content_hash(&good))
    );
    // The old jobs keep running.
    wait_for(WAIT, || {
        let later = records_of(&runs, "tick", "end")
            .into_iter()
            .filter(|r| r.ns > failed_at)
            .count();
        (later >= 2).then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "tick keeps running after the failed reload: {}",
            replica.log_text()
        )
    });

    // The next valid version applies.
    mount.swap(&jobs_file(&[
        job("tick", "* * * * * *", "true", &runs),
        idle_job("later"),
    ]));
    wait_reloads(&replica, "success", 1.0);
    assert_eq!(
        metric(&replica, "leasecron_config_last_reload_successful"),
        Some(1.0)
    );
    let status = replica.status().expect("status");
    assert_eq!(job_names(&status), ["later", "tick"]);
    assert_eq!(status["config"]["last_error"], Value::Null);
    replica.stop_cleanly();
}

#[test]
fn a_long_run_survives_a_reload_that_changes_another_job() {
    let dir = tempfile::tempdir().expect("tempdir");
    let runs = dir.path().join("runs");
    let long = job("long", "* * * * * *", "sleep 3", &runs);
    let mut mount = KubeletMount::new(dir.path(), &jobs_file(&[long.clone(), idle_job("other")]));
    let mut replica = start_leader(dir.path(), &mount.path(), "a");
    let started = wait_for(WAIT, || records_of(&runs, "long", "start").first().cloned())
        .expect("long starts");

    mount.swap(&jobs_file(&[
        long,
        "  - name: other\n    schedule: \"0 0 2 1 *\"\n    terminationGrace: 500ms\n    shell: \"true\"\n".to_owned(),
    ]));
    wait_reloads(&replica, "success", 1.0);
    let ended = wait_for(WAIT, || {
        records_of(&runs, "long", "end")
            .into_iter()
            .find(|r| r.slot == started.slot)
    })
    .unwrap_or_else(|| panic!("the long run ends by itself: {}", replica.log_text()));
    assert!(
        ended.ns - started.ns >= 3_000_000_000,
        "it ran its full 3 s"
    );
    let status = replica.status().expect("status");
    assert_eq!(job_names(&status), ["long", "other"]);
    replica.stop_cleanly();
}

#[test]
fn a_run_of_a_changed_job_finishes_under_its_old_settings() {
    let dir = tempfile::tempdir().expect("tempdir");
    let runs = dir.path().join("runs");
    let mut mount = KubeletMount::new(
        dir.path(),
        &jobs_file(&[job("long", "* * * * * *", "sleep 3", &runs)]),
    );
    let mut replica = start_leader(dir.path(), &mount.path(), "a");
    let started = wait_for(WAIT, || records_of(&runs, "long", "start").first().cloned())
        .expect("long starts");

    // The new version runs briefly, with a marker in its environment.
    let versions = PathBuf::from(format!("{}.versions", runs.display()));
    let body = format!("echo $VERSION >> {}", versions.display());
    mount.swap(&jobs_file(&[format!(
        "{}    env: {{VERSION: two}}\n",
        job("long", "* * * * * *", &body, &runs)
    )]));
    wait_reloads(&replica, "success", 1.0);
    let ended = wait_for(WAIT, || {
        records_of(&runs, "long", "end")
            .into_iter()
            .find(|r| r.slot == started.slot)
    })
    .unwrap_or_else(|| {
        panic!(
            "the old version's run ends by itself: {}",
            replica.log_text()
        )
    });
    assert!(
        ended.ns - started.ns >= 3_000_000_000,
        "it ran its full 3 s"
    );
    // Then the new version runs (Forbid: not beside the old run).
    wait_for(WAIT, || {
        fs::read_to_string(&versions)
            .ok()
            .filter(|v| v.lines().any(|l| l == "two"))
    })
    .unwrap_or_else(|| panic!("the new version runs: {}", replica.log_text()));
    let overlapping = records_of(&runs, "long", "start")
        .into_iter()
        .filter(|r| r.ns > started.ns && r.ns < ended.ns)
        .count();
    assert_eq!(overlapping, 0, "Forbid holds across the change");
    replica.stop_cleanly();
}

#[test]
fn removing_a_job_stops_its_schedule() {
    let dir = tempfile::tempdir().expect("tempdir");
    let runs = dir.path().join("runs");
    let keep = job("keep", "* * * * * *", "true", &runs);
    let mut mount = KubeletMount::new(
        dir.path(),
        &jobs_file(&[keep.clone(), job("gone", "* * * * * *", "true", &runs)]),
    );
    let mut replica = start_leader(dir.path(), &mount.path(), "a");
    wait_for(WAIT, || records_of(&runs, "gone", "end").first().cloned()).expect("gone runs");

    mount.swap(&jobs_file(&[keep]));
    wait_reloads(&replica, "success", 1.0);
    let applied_at = ns_to_time(now_ns());
    let seen = records_of(&runs, "keep", "end").len();
    wait_for(WAIT, || {
        (records_of(&runs, "keep", "end").len() >= seen + 3).then_some(())
    })
    .expect("keep goes on running");
    let late: Vec<Record> = records_of(&runs, "gone", "start")
        .into_iter()
        .filter(|r| r.slot > applied_at)
        .collect();
    assert!(late.is_empty(), "gone ran after its removal: {late:?}");
    let metrics = replica.http_get("/metrics").expect("metrics").body;
    assert!(
        !metrics.contains("job=\"gone\""),
        "the removed job's series are gone: {metrics}"
    );
    replica.stop_cleanly();
}

#[test]
fn an_editors_in_place_write_and_rename_over_are_picked_up() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("jobs.yaml");
    fs::write(&path, jobs_file(&[idle_job("one")])).expect("write");
    let mut replica = start_leader(dir.path(), &path, "a");

    // In place, as `echo > file` or an editor with backupcopy=yes does.
    fs::write(&path, jobs_file(&[idle_job("one"), idle_job("two")])).expect("write");
    wait_reloads(&replica, "success", 1.0);
    assert_eq!(
        job_names(&replica.status().expect("status")),
        ["one", "two"]
    );

    // A temporary file renamed over the original, as most editors and config tools do.
    let tmp = dir.path().join(".jobs.yaml.tmp");
    fs::write(&tmp, jobs_file(&[idle_job("three")])).expect("write");
    fs::rename(&tmp, &path).expect("rename");
    wait_reloads(&replica, "success", 2.0);
    assert_eq!(job_names(&replica.status().expect("status")), ["three"]);
    replica.stop_cleanly();
}

#[test]
fn a_reload_storm_ends_in_the_final_state() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut mount = KubeletMount::new(dir.path(), &jobs_file(&[idle_job("v0")]));
    let mut replica = start_leader(dir.path(), &mount.path(), "a");

    // 100 swaps within about a second; every tenth version is broken.
    let mut last = String::new();
    for i in 1..=100 {
        last = if i % 10 == 5 {
            format!("jobs:\n  - name: v{i}\n    schedule: [\n")
        } else {
            jobs_file(&[idle_job(&format!("v{i}")), idle_job(&format!("w{}", i % 7))])
        };
        mount.swap(&last);
        std::thread::sleep(Duration::from_millis(10));
    }
    let final_hash = format!("{:016x}", content_hash(&last));
    let status = wait_for(WAIT, || {
        replica
            .status()
            .filter(|s| s["config"]["hash"] == final_hash.as_str())
    })
    .unwrap_or_else(|| panic!("the last version applies: {}", replica.log_text()));
    assert_eq!(job_names(&status), ["v100", "w2"]);
    assert_eq!(status["config"]["last_error"], Value::Null);
    // Metrics and the status agree with the final version, with nothing left of the others.
    let metrics = replica.http_get("/metrics").expect("metrics").body;
    assert_eq!(sample(&metrics, "leasecron_jobs"), Some(2.0));
    assert_eq!(
        sample(&metrics, "leasecron_config_last_reload_successful"),
        Some(1.0)
    );
    let mut labelled: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("leasecron_job_next_run_timestamp_seconds{"))
        .filter_map(|l| l.split('"').nth(1))
        .collect();
    labelled.sort_unstable();
    assert_eq!(labelled, ["v100", "w2"]);
    let hash_metric = sample(&metrics, "leasecron_config_hash").expect("hash gauge");
    assert_eq!(hash_metric, (content_hash(&last) >> 11) as f64);
    let info = format!(
        "leasecron_config_info{{hash=\"{:016x}\"}}",
        content_hash(&last)
    );
    assert_eq!(sample(&metrics, &info), Some(1.0), "{info}");
    let infos = metrics
        .lines()
        .filter(|l| l.starts_with("leasecron_config_info{"));
    assert_eq!(infos.count(), 1, "the versions before are gone");
    assert!(
        replica.log_text().lines().all(|l| !l.contains("panicked")),
        "no panic"
    );
    replica.stop_cleanly();
}

#[test]
fn followers_reload_too_so_a_new_leader_runs_the_latest_jobs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let runs = dir.path().join("runs");
    let mut mount = KubeletMount::new(dir.path(), &jobs_file(&[idle_job("idle")]));
    let mut leader = start_leader(dir.path(), &mount.path(), "a");
    let mut follower = Replica::start(
        dir.path(),
        "b",
        &mount.path(),
        &dir.path().join("lease"),
        &FAST_TIMINGS,
    );
    wait_for(WAIT, || {
        follower
            .status()
            .filter(|s| s["holder"] == "a" && s["leading"] == false)
    })
    .unwrap_or_else(|| panic!("b follows a: {}", follower.log_text()));

    let latest = jobs_file(&[idle_job("idle"), job("added", "* * * * * *", "true", &runs)]);
    mount.swap(&latest);
    wait_reloads(&follower, "success", 1.0);
    let hash = format!("{:016x}", content_hash(&latest));
    assert_eq!(
        follower.status().expect("status")["config"]["hash"],
        hash.as_str()
    );
    wait_reloads(&leader, "success", 1.0);

    leader.stop_cleanly();
    let handed_over = now_ns();
    wait_for(WAIT, || {
        records_of(&runs, "added", "start")
            .into_iter()
            .find(|r| r.ns > handed_over)
    })
    .unwrap_or_else(|| panic!("b runs the added job: {}", follower.log_text()));
    assert_eq!(follower.status().expect("status")["leading"], true);
    follower.stop_cleanly();
}
