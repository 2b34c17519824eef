//! What every fuzz target checks, beyond "no panic, no hang": the invariants of the jobs-file
//! diagnostics and of the schedules, the same ones `tests/slow/properties.rs` checks on generated input.
//!
//! A broken invariant panics, which libFuzzer reports as a crash with the input that caused it.

use std::time::Duration;

use chrono::{DateTime, Datelike, MappedLocalTime, TimeDelta, TimeZone, Utc};
use leasecron::cmd::Timings;
use leasecron::config::{self, Diagnostic, JobSet, LoadOptions, Source};
use leasecron::schedule::Schedule;

#[path = "../../tests/support/embedding.rs"]
mod embedding;
pub use embedding::{
    config_map_literal, config_map_quoted, double_quoted, embeds_as_written,
    shift_quoted_positions, transitions,
};

/// The name diagnostics give the fuzzed text.
pub const ORIGIN: &str = "jobs.yaml";

/// The bounds a file is validated against: `leasecron validate` without flags (the default lease
/// timings), with tight and with generous lease timings, and without any (`leasecron next`), in
/// increasing order of the grace they allow.
pub fn load_options() -> [LoadOptions; 4] {
    let timings = |ld, rd, rp| Timings {
        lease_duration: Duration::from_secs(ld),
        renew_deadline: Duration::from_secs(rd),
        retry_period: Duration::from_secs(rp),
    };
    let with = |t: Timings| t.load_options().expect("valid lease timings");
    [
        with(timings(5, 3, 1)),
        LoadOptions::default(),
        with(timings(60, 40, 2)),
        LoadOptions {
            max_termination_grace: Duration::MAX,
        },
    ]
}

/// The lines of `text` as YAML counts them: broken at LF, CRLF and lone CR.
pub fn yaml_lines(text: &str) -> Vec<&str> {
    let mut lines = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find(['\n', '\r']) {
        lines.push(&rest[..at]);
        let skip = if rest[at..].starts_with("\r\n") { 2 } else { 1 };
        rest = &rest[at + skip..];
    }
    lines.push(rest);
    lines
}

/// A diagnostic of `text` is at a line of the text and at most one column past its end, and prints as
/// one line without control characters.
pub fn check_in_text(text: &str, found: &Diagnostic) {
    let lines = yaml_lines(text);
    assert!(
        found.line >= 1 && found.line <= lines.len(),
        "line out of the text ({} lines): {found}",
        lines.len()
    );
    let width = lines[found.line - 1].chars().count();
    assert!(
        found.column >= 1 && found.column <= width + 1,
        "column out of line {} ({width} characters): {found}",
        found.line
    );
    check_printable(found);
}

/// A diagnostic prints as one line without control characters.
pub fn check_printable(found: &Diagnostic) {
    let printed = found.to_string();
    assert!(
        !printed.chars().any(char::is_control),
        "control character in {printed:?}"
    );
}

/// The diagnostics of a jobs file are in the text, in order.
pub fn check_jobs(text: &str, result: &Result<JobSet, config::Error>) {
    match result {
        Ok(_) => {}
        Err(config::Error::Invalid(diagnostics)) => {
            assert!(!diagnostics.is_empty());
            let positions: Vec<_> = diagnostics.iter().map(|d| (d.line, d.column)).collect();
            assert!(positions.is_sorted(), "not in order: {positions:?}");
            for found in diagnostics.iter() {
                assert_eq!(found.origin, ORIGIN);
                check_in_text(text, found);
            }
        }
        Err(other) => panic!("not a diagnostic: {other}"),
    }
}

/// The diagnostics of a manifest are in the manifest, or at a known position of an embedded jobs file
/// (whose origin says so).
pub fn check_source(text: &str, result: &Result<Source, config::Error>) {
    match result {
        Ok(source) => {
            let _ = source.to_string();
        }
        Err(config::Error::Invalid(diagnostics)) => {
            assert!(!diagnostics.is_empty());
            for found in diagnostics.iter() {
                if found.origin == ORIGIN {
                    check_in_text(text, found);
                } else {
                    assert!(found.origin.starts_with("jobs.yaml ("), "{found}");
                    assert!(found.line >= 1 && found.column >= 1, "{found}");
                    check_printable(found);
                }
            }
        }
        Err(other) => panic!("not a diagnostic: {other}"),
    }
}

/// The problems of a result, empty for jobs.
pub fn problems<T>(result: &Result<T, config::Error>) -> Vec<Diagnostic> {
    match result {
        Ok(_) => Vec::new(),
        Err(config::Error::Invalid(diagnostics)) => diagnostics.as_slice().to_vec(),
        Err(other) => panic!("not a diagnostic: {other}"),
    }
}

/// croner searches backward only while the wall clock is after year 1; a fire in year 2 may be on the
/// wall clock of year 1 in a zone west of UTC.
const LAST_UNSEARCHED_YEAR: i32 = 2;

/// Computes up to `count` fires after `t` and checks them: strictly increasing whole seconds at wall
/// times that exist, each its own latest fire, the one before it found by walking back, and the same
/// list from `upcoming`.
pub fn check_fires(schedule: &Schedule, t: DateTime<Utc>, count: usize) -> Vec<DateTime<Utc>> {
    let one = TimeDelta::seconds(1);
    let zone = schedule.zone();
    let mut fires: Vec<DateTime<Utc>> = Vec::new();
    while fires.len() < count {
        let after = fires.last().copied().unwrap_or(t);
        let Some(fire) = schedule.next_after(after) else {
            break;
        };
        assert!(fire > after, "{schedule}: {fire} after {after}");
        assert_eq!(fire.timestamp_subsec_nanos(), 0, "{schedule}: {fire}");
        let wall = fire.with_timezone(&zone).naive_local();
        assert!(
            !matches!(zone.from_local_datetime(&wall), MappedLocalTime::None),
            "{schedule}: {fire} is at {wall}, a wall time the zone skips"
        );
        if fire.year() <= LAST_UNSEARCHED_YEAR {
            // croner does not search backward in year 1 (its documented bound): nothing to compare.
            fires.push(fire);
            continue;
        }
        assert_eq!(schedule.latest_at_or_before(fire), Some(fire), "{schedule}");
        let before = schedule.latest_at_or_before(fire - one);
        match fires.last() {
            Some(&previous) => {
                assert_eq!(
                    before,
                    Some(previous),
                    "{schedule}: walking back from {fire}"
                )
            }
            None => assert!(
                before.is_none_or(|b| b <= t),
                "{schedule}: {before:?} between {t} and {fire}"
            ),
        }
        fires.push(fire);
    }
    let listed: Vec<DateTime<Utc>> = schedule
        .upcoming(t, fires.len())
        .into_iter()
        .map(|at| at.with_timezone(&Utc))
        .collect();
    assert_eq!(listed, fires, "{schedule}: upcoming from {t}");
    if let Some(latest) = schedule.latest_at_or_before(t) {
        assert!(latest <= t, "{schedule}: latest {latest} after {t}");
    }
    fires
}

/// A 64-bit FNV-1a hash, to turn unparseable input into a choice.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}
