//! The log of real `leasecron run` processes, as an SRE reads and greps it: what a follower and a leader
//! say and why, logfmt text that parses, and JSON whose fields keep one type.

use crate::support::{logfmt, replica};

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::time::Duration;

use nix::sys::signal::Signal;
use replica::{every_second_job, wait_for, Replica, FAST_TIMINGS};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(30);

/// Waits until a line of `replica`'s text log satisfies `probe`, and returns it.
fn wait_for_line(
    replica: &Replica,
    what: &str,
    probe: impl Fn(&logfmt::Line) -> bool,
) -> logfmt::Line {
    wait_for(WAIT, || {
        logfmt::lines(&replica.log_text())
            .into_iter()
            .find(|line| probe(line))
    })
    .unwrap_or_else(|| {
        panic!(
            "{}: no {what} in the log:\n{}",
            replica.identity,
            replica.log_text()
        )
    })
}

/// The last line of the log: how the process ended.
fn assert_exit_line(replica: &Replica, code: &str) {
    let log = replica.log_text();
    let lines = logfmt::lines(&log);
    let last = lines.last().expect("a log");
    assert_eq!(last.msg(), "leasecron exiting", "{log}");
    assert_eq!(last.get("exit_code"), Some(code), "{log}");
}

#[test]
fn a_follower_says_whom_it_follows_once_and_the_take_over_and_the_exit_are_logged() {
    let dir = tempfile::tempdir().expect("tempdir");
    let jobs = every_second_job(
        dir.path(),
        "tick",
        "500ms",
        "echo tick-output; echo tick-complaint >&2",
    );
    let lease = dir.path().join("lease.json");
    let mut r0 = Replica::start(dir.path(), "r0", &jobs, &lease, &FAST_TIMINGS);
    let acquired = wait_for_line(&r0, "acquisition", |l| l.msg().starts_with("acquired"));
    assert_eq!(acquired.msg(), "acquired: no holder");
    assert_eq!(acquired.get("cause"), Some("no_holder"));
    assert_eq!(acquired.get("fencing_token"), Some("1"));
    assert_eq!(acquired.get("level"), Some("info"));

    let mut r1 = Replica::start(dir.path(), "r1", &jobs, &lease, &FAST_TIMINGS);
    let following = wait_for_line(&r1, "following line", |l| l.msg().starts_with("following "));
    assert!(
        following.msg().starts_with("following r0 (lease renewed ")
            && following.msg().ends_with(" s ago)"),
        "{following:?}"
    );
    assert_eq!(following.get("holder"), Some("r0"));
    // Four more retry periods: r0 renews four times, r1 sees four new versions, and says nothing new.
    std::thread::sleep(Duration::from_secs(2));
    let said: Vec<String> = logfmt::lines(&r1.log_text())
        .iter()
        .filter(|l| l.get("target") == Some("leasecron::election"))
        .map(|l| l.msg().to_owned())
        .collect();
    assert_eq!(
        said.iter().filter(|m| m.starts_with("following")).count(),
        1,
        "once per holder, not once per renew: {said:?}"
    );

    // A job's stderr is its own output, at INFO, told apart by `stream`.
    let complaint = wait_for_line(&r0, "stderr line", |l| l.msg() == "tick-complaint");
    assert_eq!(complaint.get("level"), Some("info"));
    assert_eq!(complaint.get("stream"), Some("stderr"));
    assert_eq!(complaint.get("job"), Some("tick"));

    r0.stop_cleanly();
    let r0_lines = logfmt::lines(&r0.log_text());
    let ended = r0_lines
        .iter()
        .find(|l| l.msg() == "term ended: shutdown")
        .unwrap_or_else(|| panic!("no term end: {}", r0.log_text()));
    assert_eq!(ended.get("reason"), Some("shutdown"));
    assert_eq!(ended.get("fencing_token"), Some("1"));
    assert!(r0_lines.iter().any(|l| l.msg() == "released the lease"));
    assert_exit_line(&r0, "0");

    let taken = wait_for_line(&r1, "take-over", |l| l.msg().starts_with("acquired"));
    assert_eq!(taken.msg(), "acquired from r0: released");
    assert_eq!(taken.get("cause"), Some("released"));
    assert_eq!(taken.get("previous_holder"), Some("r0"));
    assert_eq!(taken.get("fencing_token"), Some("2"));
    r1.stop_cleanly();
    assert_exit_line(&r1, "0");
}

#[test]
fn a_frozen_leader_logs_why_its_term_ended_and_whom_it_follows_after() {
    let dir = tempfile::tempdir().expect("tempdir");
    let jobs = every_second_job(dir.path(), "tick", "500ms", "true");
    let lease = dir.path().join("lease.json");
    let mut r0 = Replica::start(dir.path(), "r0", &jobs, &lease, &FAST_TIMINGS);
    wait_for_line(&r0, "acquisition", |l| l.msg().starts_with("acquired"));
    let mut r1 = Replica::start(dir.path(), "r1", &jobs, &lease, &FAST_TIMINGS);
    wait_for_line(&r1, "following line", |l| {
        l.msg().starts_with("following r0")
    });

    // Frozen past LD (3 s): r1 takes over from the record it saw unchanged that long.
    r0.signal(Signal::SIGSTOP);
    let taken = wait_for_line(&r1, "take-over", |l| l.msg().starts_with("acquired"));
    r0.signal(Signal::SIGCONT);
    assert!(
        taken.msg().starts_with("acquired from r0: expired after "),
        "{taken:?}"
    );
    assert_eq!(taken.get("cause"), Some("expired"));
    assert_eq!(taken.get("previous_holder"), Some("r0"));

    // r0 wakes past its deadline: its term ends at once, for the deadline, or for r1's record if it reads
    // that before its deadline timer fires.
    let lost = wait_for_line(&r0, "loss", |l| l.msg().starts_with("lost leadership"));
    assert_eq!(lost.get("level"), Some("warn"));
    let why = match lost.get("reason") {
        Some("renew_deadline") => {
            "renew deadline passed (no renew succeeded for 1.5 s); ending the term"
        }
        Some("lease_taken") => {
            "lost the lease to r1 (the renew deadline had passed too); ending the term"
        }
        other => panic!("reason {other:?}: {lost:?}"),
    };
    assert_eq!(lost.msg(), format!("lost leadership: {why}"));
    let ended = wait_for_line(&r0, "term end", |l| l.msg().starts_with("term ended"));
    assert_eq!(ended.get("reason"), lost.get("reason"));
    assert_eq!(ended.get("fencing_token"), Some("1"));
    // Then it follows the new holder (once it reads r1's record), and says so once.
    wait_for_line(&r0, "following line", |l| {
        l.msg().starts_with("following r1 (lease renewed ")
    });
    r0.stop_cleanly();
    r1.stop_cleanly();
    let follows: Vec<String> = logfmt::lines(&r0.log_text())
        .iter()
        .filter(|l| l.msg().starts_with("following"))
        .map(|l| l.msg().to_owned())
        .collect();
    assert_eq!(follows.len(), 1, "{follows:?}");
    assert_exit_line(&r0, "0");
    assert_exit_line(&r1, "0");
}

/// The JSON type of a value, by name.
fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(n) if n.is_f64() => "float",
        Value::Number(_) => "integer",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

#[test]
fn json_fields_keep_one_type_the_fencing_token_is_a_number_and_times_are_rfc_3339() {
    let dir = tempfile::tempdir().expect("tempdir");
    let jobs = every_second_job(dir.path(), "tick", "500ms", "echo tick-output");
    let lease = dir.path().join("lease.json");
    let mut leader = Replica::start(
        dir.path(),
        "json",
        &jobs,
        &lease,
        &[&FAST_TIMINGS[..], &["--log-format", "json"]].concat(),
    );
    wait_for(WAIT, || {
        leader.log_text().contains("\"run finished\"").then_some(())
    })
    .unwrap_or_else(|| panic!("no run finished: {}", leader.log_text()));
    leader.stop_cleanly();

    let log = leader.log_text();
    let lines: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let mut kinds: BTreeMap<String, BTreeSet<&str>> = BTreeMap::new();
    for line in &lines {
        for (key, value) in line.as_object().expect("an object") {
            kinds.entry(key.clone()).or_default().insert(kind(value));
        }
    }
    let mixed: Vec<_> = kinds.iter().filter(|(_, k)| k.len() > 1).collect();
    assert!(
        mixed.is_empty(),
        "fields with more than one type: {mixed:?}\n{log}"
    );
    assert!(
        !kinds.contains_key("duration"),
        "one duration field: duration_seconds"
    );

    let token_of = |message: &str| {
        let line = lines
            .iter()
            .find(|l| l["message"] == message)
            .unwrap_or_else(|| panic!("no {message:?} line:\n{log}"));
        assert!(line["fencing_token"].is_u64(), "{line}");
        line["fencing_token"].as_u64()
    };
    // Election lines and run lines alike.
    let token = token_of("acquired: no holder");
    for message in [
        "started",
        "tick-output",
        "run finished",
        "term ended: shutdown",
        "released the lease",
    ] {
        assert_eq!(token_of(message), token, "{message}");
    }

    for line in &lines {
        for key in ["timestamp", "scheduled", "slot", "latest"] {
            if let Some(value) = line.get(key) {
                let text = value
                    .as_str()
                    .unwrap_or_else(|| panic!("{key} is text: {line}"));
                assert!(
                    chrono::DateTime::parse_from_rfc3339(text).is_ok() && text.ends_with('Z'),
                    "{key} is RFC 3339 UTC: {line}"
                );
            }
        }
    }
    let last = lines.last().expect("a log");
    assert_eq!(last["message"], "leasecron exiting");
    assert_eq!(last["exit_code"], 0);
}

#[test]
fn a_suspended_job_is_logged_once_when_it_is_suspended_and_once_when_it_is_resumed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let jobs = dir.path().join("jobs.yaml");
    let write_jobs = |suspend: bool| {
        fs::write(
            &jobs,
            format!(
                "jobs:\n  - name: paused\n    schedule: \"* * * * * *\"\n    terminationGrace: 500ms\n    \
                 suspend: {suspend}\n    shell: \"echo paused-ran\"\n"
            ),
        )
        .expect("write the jobs file");
    };
    write_jobs(true);
    let lease = dir.path().join("lease.json");
    let mut leader = Replica::start(dir.path(), "r0", &jobs, &lease, &FAST_TIMINGS);
    wait_for_line(&leader, "acquisition", |l| l.msg().starts_with("acquired"));
    // Three fires of the every-second schedule while suspended.
    std::thread::sleep(Duration::from_secs(3));
    let lines = logfmt::lines(&leader.log_text());
    let about = |job: &str| -> Vec<String> {
        lines
            .iter()
            .filter(|l| l.get("job") == Some(job))
            .map(|l| format!("{} {}", l.get("level").unwrap_or_default(), l.msg()))
            .collect()
    };
    assert_eq!(
        about("paused"),
        ["info job suspended: its fires are skipped until it is resumed"],
        "{}",
        leader.log_text()
    );

    write_jobs(false);
    wait_for_line(&leader, "resumption", |l| {
        l.msg().starts_with("job resumed") && l.get("job") == Some("paused")
    });
    wait_for_line(&leader, "run", |l| l.msg() == "paused-ran");
    leader.stop_cleanly();
    let suspended = logfmt::lines(&leader.log_text())
        .iter()
        .filter(|l| l.msg().starts_with("job suspended"))
        .count();
    assert_eq!(suspended, 1);
}
