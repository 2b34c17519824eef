//! The operator commands (`trigger`, `suspend`, `resume`, `backfill`, `status`, `history`) as an operator
//! runs them: the real binary on a lease file, without a running replica. The lease file is written by
//! hand, the run state through the run state's own API ([`Ledger`] over the file beside the lease), and
//! what the commands file is read back from the controls file. A "leader" played by the test carries out a
//! trigger for `--wait`, through the same API.

use crate::support::replica::{self, leasecron};

use std::fs;
use std::io::{BufRead as _, BufReader};
use std::path::PathBuf;
use std::process::{Output, Stdio};
use std::time::Duration;

use chrono::{DateTime, Utc};
use leasecron::controls::Controls;
use leasecron::local::controls::ControlsFile;
use leasecron::local::run_state::StateFile;
use leasecron::run_state::{Cause, Completion, Ledger, Origin, RunResult};
use leasecron::term::FencingToken;

const JOBS: &str = "jobs:
  - name: tick
    schedule: \"*/10 * * * *\"
    shell: \"true\"
  - name: backup
    schedule: \"0 3 * * *\"
    timeZone: Europe/Berlin
    shell: \"true\"
  - name: paused
    schedule: \"@hourly\"
    suspend: true
    shell: \"true\"
";

/// A lease file held by `r7` (fencing token 7, renewed now), and a jobs file, in a temporary directory.
struct Lease {
    dir: tempfile::TempDir,
    lease: PathBuf,
    jobs: PathBuf,
}

impl Lease {
    fn new() -> Lease {
        let dir = tempfile::tempdir().expect("temp dir");
        let lease = dir.path().join("lease");
        let jobs = replica::write_jobs_file(dir.path(), JOBS);
        let now = Utc::now().to_rfc3339();
        fs::write(
            &lease,
            format!(
                r#"{{"holderIdentity": "r7", "leaseDurationSeconds": 15, "acquireTime": "{now}",
                    "renewTime": "{now}", "leaseTransitions": 7, "version": 3}}"#
            ),
        )
        .expect("write the lease file");
        Lease { dir, lease, jobs }
    }

    fn lease(&self) -> &str {
        self.lease.to_str().expect("UTF-8")
    }

    fn jobs(&self) -> &str {
        self.jobs.to_str().expect("UTF-8")
    }

    /// `leasecron COMMAND... --lease-file LEASE --jobs JOBS`.
    fn run(&self, args: &[&str]) -> Output {
        let mut all = args.to_vec();
        all.extend(["--lease-file", self.lease(), "--jobs", self.jobs()]);
        replica::output(&all)
    }

    /// The controls document the commands wrote.
    fn controls(&self) -> Controls {
        block_on(ControlsFile::beside(&self.lease).load())
            .expect("the controls file reads")
            .controls
    }

    /// A ledger on the run state beside the lease, writing as `identity`.
    fn ledger(&self, identity: &str) -> Ledger {
        Ledger::new(StateFile::beside(&self.lease), identity.to_owned())
    }
}

fn block_on<T>(future: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
        .block_on(future)
}

fn at(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .expect("RFC 3339")
        .with_timezone(&Utc)
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Asserts that `out` exited 2 with one line on stderr that starts with `leasecron: ` and `message`.
fn assert_usage_error(out: &Output, message: &str) {
    assert_eq!(out.status.code(), Some(2), "{}", stderr(out));
    let err = stderr(out);
    assert!(
        err.starts_with(&format!("leasecron: {message}")),
        "expected `{message}`: {err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
}

/// Waits, if need be, until a slot of `tick` is more than 20 s away: the tests that count slots from
/// [`slot`] then see the same slots from their start to their end.
fn away_from_a_slot() {
    let into = Utc::now().timestamp() % 600;
    if into >= 580 {
        std::thread::sleep(Duration::from_secs(u64::try_from(601 - into).unwrap_or(21)));
    }
}

/// The slot of `tick` `n` slots before the last one that fell due (10-minute slots).
fn slot(n: i64) -> DateTime<Utc> {
    let now = Utc::now().timestamp();
    DateTime::from_timestamp(now - now % 600 - 600 * n, 0).expect("valid")
}

fn secs(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Runs recorded under term 6 and the current term 7: a finished run of `tick` two slots ago, one its
/// term cut off a slot ago, and one of the last slot in flight.
fn record_runs(lease: &Lease) {
    block_on(async {
        let old = lease.ledger("r6");
        old.begin_term(FencingToken(6)).await.expect("term 6");
        for (slot, finish) in [(slot(2), true), (slot(1), false)] {
            old.claim("tick", slot, FencingToken(6), slot, &Origin::SCHEDULE)
                .await
                .expect("claimed");
            if finish {
                let completion = Completion {
                    slot,
                    outcome: "failed".to_owned(),
                    finished_at: slot + chrono::Duration::milliseconds(1_500),
                };
                let result = RunResult {
                    exit_code: Some(3),
                    signal: None,
                    attempts: 1,
                };
                old.complete(
                    "tick",
                    FencingToken(6),
                    &Origin::SCHEDULE,
                    completion,
                    result,
                )
                .await
                .expect("completed");
            }
        }
        let current = lease.ledger("r7");
        current.begin_term(FencingToken(7)).await.expect("term 7");
        let slot = slot(0);
        current
            .claim("tick", slot, FencingToken(7), slot, &Origin::SCHEDULE)
            .await
            .expect("claimed");
    });
}

#[test]
fn status_shows_the_leader_and_each_jobs_runs_as_a_table_and_as_json() {
    away_from_a_slot();
    let lease = Lease::new();
    record_runs(&lease);
    let out = lease.run(&["status"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[0].starts_with(&format!(
            "lease: lease file {}: held by r7, fencing token 7, acquired ",
            lease.lease()
        )),
        "{text}"
    );
    assert_eq!(lines[1], format!("jobs: {}", lease.jobs()));
    assert_eq!(
        lines[3].split_whitespace().collect::<Vec<_>>(),
        [
            "NAME",
            "SCHEDULE",
            "ZONE",
            "SUSPENDED",
            "RUNNING",
            "LAST",
            "RUN",
            "NEXT",
            "REQUESTS"
        ]
    );
    assert!(
        lines[4].starts_with(&format!(
            "tick    */10 * * * *  UTC            no         1        {} interrupted  ",
            secs(slot(1))
        )),
        "{text}"
    );
    assert!(
        lines[5].starts_with("backup  0 3 * * *     Europe/Berlin  no         0        -  "),
        "{text}"
    );
    assert!(
        lines[6].starts_with("paused  @hourly       UTC            file       0        -  "),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "\ntick: running the slot {} (schedule) on r7, fencing token 7, for ",
            secs(slot(0))
        )),
        "{text}"
    );

    let out = lease.run(&["status", "tick", "-o", "json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON document");
    assert_eq!(json["version"], 1);
    assert_eq!(json["lease"]["holder"], "r7");
    assert_eq!(json["lease"]["fencing_token"], 7);
    assert_eq!(json["lease"]["expired"], false);
    let jobs = json["jobs"].as_array().expect("jobs");
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0]["name"], "tick");
    assert_eq!(jobs[0]["running"][0]["slot"], secs(slot(0)));
    assert_eq!(jobs[0]["last_run"]["state"], "interrupted");
    assert_eq!(jobs[0]["suspension"], serde_json::Value::Null);
    assert!(jobs[0]["next_slot"].is_string());

    // Without the jobs, on a lease file: they are needed.
    let out = replica::output(&["status", "--lease-file", lease.lease()]);
    assert_usage_error(
        &out,
        "status needs the jobs (their schedules and next slots): with --lease-file, give --jobs FILE",
    );
    // A lease file that is not there.
    let typo = lease.dir.path().join("typo");
    let out = replica::output(&[
        "status",
        "--lease-file",
        typo.to_str().expect("UTF-8"),
        "--jobs",
        lease.jobs(),
    ]);
    assert_usage_error(
        &out,
        &format!(
            "--lease-file {}: there is no lease file there",
            typo.display()
        ),
    );
}

#[test]
fn history_lists_the_runs_newest_first_with_interrupted_ones() {
    away_from_a_slot();
    let lease = Lease::new();
    record_runs(&lease);
    // Without the jobs: the run state says which jobs have runs.
    let out = replica::output(&["history", "tick", "--lease-file", lease.lease()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4, "{text}");
    let columns = |line: &str| {
        line.split_whitespace()
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        columns(lines[0]),
        ["SLOT", "CAUSE", "TOKEN", "IDENTITY", "STARTED", "DURATION", "OUTCOME", "EXIT"]
    );
    let running = columns(lines[1]);
    assert_eq!(
        running[..5],
        [
            secs(slot(0)),
            "schedule".into(),
            "7".into(),
            "r7".into(),
            secs(slot(0))
        ]
    );
    assert_eq!(running[running.len() - 2..], ["running", "-"], "{text}");
    assert_eq!(
        lines[2],
        format!(
            "{0}  schedule  6      r6        {0}  -         interrupted  -",
            secs(slot(1))
        )
    );
    assert_eq!(
        lines[3],
        format!(
            "{0}  schedule  6      r6        {0}  1.5s      failed       3",
            secs(slot(2))
        )
    );

    let out = lease.run(&["history", "tick", "-n", "1", "-o", "json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(json["job"], "tick");
    assert_eq!(json["kept"], 20);
    let runs = json["runs"].as_array().expect("runs");
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0]["state"], "running");
    assert_eq!(runs[0]["fencing_token"], 7);

    // A job without runs: none, exit 0; an unknown job: exit 2 with the jobs.
    let out = lease.run(&["history", "backup"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        format!(
            "no run of backup is recorded in file {}.state\n",
            lease.lease()
        )
    );
    let out = lease.run(&["history", "nope"]);
    assert_usage_error(
        &out,
        &format!(
            "no job nope in {}; jobs: tick, backup, paused",
            lease.jobs()
        ),
    );
}

#[test]
fn trigger_files_a_request_and_an_unknown_job_files_nothing() {
    let lease = Lease::new();
    let out = lease.run(&["trigger", "nope"]);
    assert_usage_error(
        &out,
        &format!(
            "no job nope in {}; jobs: tick, backup, paused",
            lease.jobs()
        ),
    );
    assert!(lease.controls().requests.is_empty(), "nothing filed");

    let out = lease.run(&["trigger", "tick"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let controls = lease.controls();
    assert_eq!(controls.requests.len(), 1);
    let request = &controls.requests[0];
    assert_eq!(request.job, "tick");
    assert_eq!(request.kind.as_str(), "trigger");
    let text = stdout(&out);
    assert!(
        text.starts_with(&format!(
            "request {}: trigger tick, filed by {} in file {}.controls\n",
            request.id,
            request.by,
            lease.lease()
        )),
        "{text}"
    );
}

#[test]
fn trigger_wait_follows_the_run_that_a_leader_carries_out() {
    let lease = Lease::new();
    let mut child = leasecron()
        .args(["trigger", "tick", "--wait", "--timeout", "30s"])
        .args(["--lease-file", lease.lease(), "--jobs", lease.jobs()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn leasecron");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let first = lines.next().expect("a line").expect("UTF-8");
    let id = first
        .strip_prefix("request ")
        .and_then(|rest| rest.split(':').next())
        .expect("request ID: ...")
        .to_owned();
    let requested_at = lease.controls().requests[0].requested_at;
    // The leader: claims the trigger's run (which acknowledges the request) and completes it.
    block_on(async {
        let leader = lease.ledger("r7");
        leader.begin_term(FencingToken(7)).await.expect("term");
        let origin = Origin::requested(Cause::Trigger, id.clone(), requested_at);
        let slot = Utc::now();
        leader
            .claim("tick", slot, FencingToken(7), slot, &origin)
            .await
            .expect("claimed");
        tokio::time::sleep(Duration::from_millis(600)).await;
        let completion = Completion {
            slot,
            outcome: "succeeded".to_owned(),
            finished_at: slot + chrono::Duration::milliseconds(1_200),
        };
        let result = RunResult {
            exit_code: Some(0),
            signal: None,
            attempts: 1,
        };
        leader
            .complete("tick", FencingToken(7), &origin, completion, result)
            .await
            .expect("completed");
    });
    let status = child.wait().expect("exits");
    let rest: Vec<String> = lines.map(|line| line.expect("UTF-8")).collect();
    assert_eq!(status.code(), Some(0), "{rest:?}");
    assert!(
        rest[0].starts_with("waiting up to 30s for the leader to carry it out (r7 holds the lease, fencing token 7)"),
        "{rest:?}"
    );
    let outcome = rest
        .iter()
        .find(|line| line.starts_with("succeeded: "))
        .unwrap_or_else(|| panic!("an outcome: {rest:?}"));
    assert!(
        outcome.starts_with("succeeded: the run on r7 (fencing token 7) started at ")
            && outcome.ends_with(" and took 1.2s, exit code 0"),
        "{outcome}"
    );
    assert_eq!(
        rest.last().map(String::as_str),
        Some("output: in the log (stderr) of the replica r7, the lines with job=tick fencing_token=7")
    );
}

#[test]
fn trigger_wait_without_a_leader_gives_up_and_the_request_stays() {
    let lease = Lease::new();
    let out = lease.run(&["trigger", "tick", "--wait", "--timeout", "1s"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains(": no leader acknowledged it within 1s (r7 holds the lease, fencing token 7); it stays filed until "),
        "{err}"
    );
    assert_eq!(lease.controls().requests.len(), 1);
    // --timeout means nothing without --wait.
    let out = lease.run(&["trigger", "tick", "--timeout", "1s"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}

#[test]
fn suspend_and_resume_set_and_remove_the_suspension_and_file_a_request_each() {
    away_from_a_slot();
    let lease = Lease::new();
    let out = lease.run(&["suspend", "tick", "--note", "db migration"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let controls = lease.controls();
    let suspension = controls.suspension("tick").expect("suspended");
    assert_eq!(suspension.note.as_deref(), Some("db migration"));
    assert_eq!(controls.requests.len(), 1);
    assert_eq!(controls.requests[0].id, suspension.request);

    let out = lease.run(&["status", "tick"]);
    let text = stdout(&out);
    assert!(text.contains("  operator  "), "{text}");
    assert!(
        text.contains(&format!("\ntick: suspended by {} at ", suspension.by))
            && text.contains(": \"db migration\"\n"),
        "{text}"
    );

    // Suspended since before the last four slots: resume says how to run them.
    let since = slot(3) - chrono::Duration::seconds(30);
    block_on(async {
        let file = ControlsFile::beside(&lease.lease);
        let mut read = file.load().await.expect("reads");
        read.controls
            .suspended
            .get_mut("tick")
            .expect("suspended")
            .at = since;
        file.save(&read.controls, read.version.as_deref())
            .await
            .expect("written");
    });
    let out = lease.run(&["resume", "tick"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("\ntick is resumed; it was suspended by "),
        "{text}"
    );
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[lines.len() - 2],
        "the 4 slots that fell due while it was suspended are not run; to run them:",
        "{text}"
    );
    let command = lines[lines.len() - 1];
    let prefix = format!("  leasecron backfill tick --from {} --to ", secs(since));
    let suffix = format!(" --lease-file {} --jobs {}", lease.lease(), lease.jobs());
    assert!(
        command.starts_with(&prefix) && command.ends_with(&suffix),
        "{text}"
    );
    // The command runs as printed: a backfill of those 4 slots.
    let args: Vec<&str> = command.split_whitespace().skip(1).collect();
    let out = replica::output(&args);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stdout(&out).contains(": backfill tick, 4 slots from "),
        "{}",
        stdout(&out)
    );
    let controls = lease.controls();
    assert!(controls.suspension("tick").is_none());
    assert_eq!(controls.requests.len(), 3, "suspend, resume, backfill");

    let out = lease.run(&["resume", "tick"]);
    assert_usage_error(
        &out,
        "tick is not suspended: no operator suspended it, so there is nothing to resume",
    );
    let out = lease.run(&["resume", "paused"]);
    assert_usage_error(
        &out,
        &format!(
            "paused is not suspended by an operator: the jobs file {} suspends it (suspend: true)",
            lease.jobs()
        ),
    );
    assert_eq!(lease.controls().requests.len(), 3, "nothing more filed");
}

#[test]
fn backfill_counts_the_slots_and_refuses_bad_ranges_with_exit_2() {
    let lease = Lease::new();
    let cases = [
        (
            ["tick", "--from", "last week", "--to", "2026-11-21T10:00:00Z"],
            "--from last week: not a time: write RFC 3339".to_owned(),
        ),
        (
            ["tick", "--from", "2026-11-21T10:00:00Z", "--to", "2999-01-01T00:00:00Z"],
            "--to 2999-01-01T00:00:00Z is in the future (it is ".to_owned(),
        ),
        (
            ["tick", "--from", "2026-11-21T10:01:00Z", "--to", "2026-11-21T10:09:00Z"],
            "0 slots of tick (\"*/10 * * * *\" in UTC) fall from 2026-11-21T10:01:00Z to \
             2026-11-21T10:09:00Z: nothing to backfill"
                .to_owned(),
        ),
        (
            ["tick", "--from", "2026-11-01T00:00:00Z", "--to", "2026-11-30T23:59:59Z"],
            "4320 slots of tick (\"*/10 * * * *\" in UTC) fall from 2026-11-01T00:00:00Z to \
             2026-11-30T23:59:59Z; a backfill runs at most 1000: split the range (the first 1000 end at \
             2026-11-07T22:30:00Z)"
                .to_owned(),
        ),
        (
            ["nope", "--from", "2026-11-01T00:00:00Z", "--to", "2026-11-02T00:00:00Z"],
            format!("no job nope in {}; jobs: tick, backup, paused", lease.jobs()),
        ),
    ];
    for (args, message) in cases {
        let mut all = vec!["backfill"];
        all.extend(args);
        assert_usage_error(&lease.run(&all), &message);
    }
    assert!(lease.controls().requests.is_empty(), "nothing filed");

    // Local times are the job's: 03:00 in Berlin each day.
    let out = lease.run(&[
        "backfill",
        "backup",
        "--from",
        "2026-11-01T00:00",
        "--to",
        "2026-11-03T12:00",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let request = lease.controls().requests[0].clone();
    assert_eq!(request.kind.as_str(), "backfill");
    assert_eq!(request.from, Some(at("2026-10-31T23:00:00Z")));
    assert_eq!(request.to, Some(at("2026-11-03T11:00:00Z")));
    assert!(
        stdout(&out).starts_with(&format!(
            "request {}: backfill backup, 3 slots from 2026-11-01T03:00:00+01:00 to 2026-11-03T03:00:00+01:00, \
             filed by ",
            request.id
        )),
        "{}",
        stdout(&out)
    );
}

#[test]
fn every_operator_command_has_a_help_that_names_its_exit_codes() {
    for command in [
        "trigger", "suspend", "resume", "backfill", "status", "history",
    ] {
        let out = replica::output(&[command, "--help"]);
        assert_eq!(out.status.code(), Some(0), "{command}: {}", stderr(&out));
        let help = stdout(&out);
        assert!(help.contains("Exit status: 0 "), "{command}: {help}");
        assert!(help.contains("--lease-file <PATH>"), "{command}: {help}");
        assert!(
            help.contains("--jobs-configmap <NAME[/KEY]>"),
            "{command}: {help}"
        );
    }
}
