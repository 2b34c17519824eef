//! How the run state is written into its ConfigMap, which holds at most [`MAX_BYTES`] (the API server
//! refuses a larger one with 422 "Too long: must have at most 1048576 bytes").
//!
//! # Three encodings, the first that fits
//!
//! 1. **Format 1** — the [`StateRecord`] as compact JSON, as every leasecron reads it. About 390 bytes per
//!    job with a 20-character name: up to about 2 600 jobs. (Versions before format 2 wrote it pretty:
//!    about 550 bytes per job, so that every claim failed with 422 from about 1 800 jobs on.)
//! 2. **Format 2** — one array per job, numbers for times, identities in a table:
//!    `{"format":2,"fencingToken":7,"identities":["pod-a"],"jobs":{"backup":[1800000000,7,1800000000,0,0,12,5012]}}`.
//!    About 40 to 60 bytes per job plus its name (62 to 82 with a 20-character name): 12 000 to 16 000 jobs.
//! 3. **Format 2, essentials only** — each array cut after the fields that decide what runs (the slot last
//!    started, its fencing token, the last completion's slot and outcome); who started it, when exactly,
//!    and the last success are dropped (they only inform `/status` and `leasecron next`). At most
//!    [`ESSENTIAL_JOB_BOUND`] bytes plus the name's per job, whatever the times: this is the capacity that
//!    [`capacity_needed`] checks the jobs against when they are loaded.
//!
//! # Mixed versions
//!
//! A leasecron before format 2 reads only format 1; it finds a format-2 record unusable, logs it, and
//! rebuilds the record from scratch (missed slots are skipped, none runs twice), writing format 1 again,
//! which this version reads. Writing format 1 whenever it fits means that, during a rolling upgrade or a
//! rollback, an older replica that takes over finds a record it can read for every job set it could have
//! run itself; only a record too large for format 1 (which the older version could not write at all) is
//! rebuilt by it.
//!
//! # Format 2 entries
//!
//! `[slot, token, completionSlot, outcome, identity, startedMs, finishedMs, successSlot, successFinishedMs]`:
//! a slot is Unix seconds (an RFC 3339 string if not a whole second), `outcome` 0 succeeded, 1 failed,
//! 2 timed out, 3 cancelled (else the label), `identity` an index into `identities`, `startedMs` the start
//! after the slot and `finishedMs` the end after the completion's slot, in milliseconds (finer precision
//! is dropped). A missing value is `null`; trailing `null`s are left out. If the last completion succeeded
//! and the last success is that same run, the success fields are left out too.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, TimeZone, Utc};
use serde_json::{json, Value};

use crate::event::Outcome;
use crate::run_state::{
    Completion, HistoryEntry, JobRecord, SlotStart, StateRecord, FORMAT, HISTORY_PER_JOB,
};

/// The most a ConfigMap may hold: the sum of the lengths of its `data` and `binaryData` values.
pub const MAX_BYTES: usize = 1024 * 1024;
pub use crate::run_state::COMPACT_FORMAT;
/// The longest essentials-only entry and its punctuation, without the name: `"":[S,T,C,O],` with slots
/// `S`, `C` below 10^10 s (before the year 2286), a token `T` below 10^10 (a Lease's `leaseTransitions`
/// is a 32-bit integer) and a one-digit outcome: 40 bytes.
pub const ESSENTIAL_JOB_BOUND: usize = 2 + 1 + 1 + 10 + 1 + 10 + 1 + 10 + 1 + 1 + 1 + 1;
/// The longest header and closing of an essentials-only record: `{"format":2,"fencingToken":T,"jobs":{}}`.
pub(crate) const HEADER_BOUND: usize = 64;

/// The outcome labels, by code (an outcome's code is its index): 0 succeeded, 1 failed, 2 timed out, 3
/// cancelled.
const OUTCOMES: [&str; 4] = Outcome::LABELS;
/// How many entry fields are the essentials.
const ESSENTIAL_FIELDS: usize = 4;

/// Which encoding a record was written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// Format 1, readable by every version.
    Full,
    /// Format 2.
    Compact,
    /// Format 2, essentials only.
    Essential,
}

/// The bytes the run state of jobs with these names may need at most (essentials only).
pub fn capacity_needed<'a>(names: impl IntoIterator<Item = &'a str>) -> usize {
    HEADER_BOUND
        + names
            .into_iter()
            .map(|name| json_len(name) + ESSENTIAL_JOB_BOUND - 2)
            .sum::<usize>()
}

/// The record as text in the first encoding that fits in `limit` bytes, or the size of the smallest.
pub fn encode(record: &StateRecord, limit: usize) -> Result<(String, Encoding), usize> {
    if let Some(text) = bounded(record, limit) {
        return Ok((text, Encoding::Full));
    }
    for kept in HISTORY_STEPS {
        if let Some(text) = bounded(&compact(record, false, kept), limit) {
            return Ok((text, Encoding::Compact));
        }
    }
    let essential = compact(record, true, 0).to_string();
    if essential.len() <= limit {
        Ok((essential, Encoding::Essential))
    } else {
        Err(essential.len())
    }
}

/// The record in `text`, in either format; format 2 reads as format [`FORMAT`] in memory.
pub fn decode(text: &str) -> Result<StateRecord, String> {
    let value: Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
    match value.get("format").and_then(Value::as_u64) {
        Some(COMPACT_FORMAT) => from_compact(&value),
        _ => serde_json::from_value(value).map_err(|e| e.to_string()),
    }
}

/// `value` as JSON text if it is at most `limit` bytes; stops writing once it is longer.
fn bounded(value: &impl serde::Serialize, limit: usize) -> Option<String> {
    let mut out = Limited {
        bytes: Vec::new(),
        limit,
    };
    serde_json::to_writer(&mut out, value).ok()?;
    String::from_utf8(out.bytes).ok()
}

/// A writer that fails past `limit` bytes, so an encoding that does not fit costs no more than the limit.
struct Limited {
    bytes: Vec<u8>,
    limit: usize,
}

impl std::io::Write for Limited {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.bytes.len() + buf.len() > self.limit {
            return Err(std::io::Error::other("over the limit"));
        }
        self.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn json_len(text: &str) -> usize {
    serde_json::to_string(text).map_or(text.len() + 2, |quoted| quoted.len())
}

// === format 2 ===

/// How many history entries per job format 2 tries to keep, most first, before it drops them all.
const HISTORY_STEPS: [usize; 6] = [HISTORY_PER_JOB, 10, 5, 2, 1, 0];

fn compact(record: &StateRecord, essential: bool, history_kept: usize) -> Value {
    let mut identities: Vec<&str> = Vec::new();
    let mut jobs = serde_json::Map::new();
    for (name, job) in &record.jobs {
        let mut fields = vec![
            job.last_started
                .as_ref()
                .map_or(Value::Null, |s| time(s.slot)),
            job.last_started
                .as_ref()
                .map_or(Value::Null, |s| json!(s.fencing_token)),
            job.last_completion
                .as_ref()
                .map_or(Value::Null, |c| time(c.slot)),
            job.last_completion
                .as_ref()
                .map_or(Value::Null, |c| outcome(&c.outcome)),
        ];
        if !essential {
            let identity = job.last_started.as_ref().map_or(Value::Null, |s| {
                let index = identities
                    .iter()
                    .position(|known| *known == s.identity)
                    .unwrap_or_else(|| {
                        identities.push(&s.identity);
                        identities.len() - 1
                    });
                json!(index)
            });
            fields.push(identity);
            fields.push(
                job.last_started
                    .as_ref()
                    .map_or(Value::Null, |s| millis(s.started_at - s.slot)),
            );
            fields.push(
                job.last_completion
                    .as_ref()
                    .map_or(Value::Null, |c| millis(c.finished_at - c.slot)),
            );
            let implied = job
                .last_completion
                .as_ref()
                .is_some_and(|c| c.outcome == OUTCOMES[0] && job.last_success.as_ref() == Some(c));
            match &job.last_success {
                _ if implied => {}
                Some(success) => {
                    fields.push(time(success.slot));
                    fields.push(millis(success.finished_at - success.slot));
                }
                // A trailing null would be left out and read as "the last completion": say "none".
                None if job
                    .last_completion
                    .as_ref()
                    .is_some_and(|c| c.outcome == OUTCOMES[0]) =>
                {
                    fields.push(Value::Bool(false));
                }
                None => {}
            }
        }
        while fields.last() == Some(&Value::Null) {
            fields.pop();
        }
        jobs.insert(name.clone(), Value::Array(fields));
    }
    let mut out = serde_json::Map::new();
    out.insert("format".to_owned(), json!(COMPACT_FORMAT));
    out.insert("fencingToken".to_owned(), json!(record.fencing_token));
    if !essential {
        out.insert("identities".to_owned(), json!(identities));
    }
    out.insert("jobs".to_owned(), Value::Object(jobs));
    // Acknowledged requests decide what runs: never dropped.
    if !record.requests.is_empty() {
        out.insert("requests".to_owned(), json!(record.requests));
    }
    if history_kept > 0 {
        let history: serde_json::Map<String, Value> = record
            .jobs
            .iter()
            .filter(|(_, job)| !job.history.is_empty())
            .map(|(name, job)| {
                let from = job.history.len().saturating_sub(history_kept);
                (name.clone(), json!(job.history[from..]))
            })
            .collect();
        if !history.is_empty() {
            out.insert("history".to_owned(), Value::Object(history));
        }
    }
    Value::Object(out)
}

fn time(at: DateTime<Utc>) -> Value {
    if at.timestamp_subsec_nanos() == 0 {
        json!(at.timestamp())
    } else {
        json!(at.to_rfc3339())
    }
}

fn millis(span: Duration) -> Value {
    json!(span.num_milliseconds())
}

fn outcome(label: &str) -> Value {
    OUTCOMES
        .iter()
        .position(|known| *known == label)
        .map_or_else(|| json!(label), |code| json!(code))
}

fn from_compact(value: &Value) -> Result<StateRecord, String> {
    let object = value.as_object().ok_or("not an object")?;
    for key in object.keys() {
        if ![
            "format",
            "fencingToken",
            "identities",
            "jobs",
            "requests",
            "history",
        ]
        .contains(&key.as_str())
        {
            return Err(format!("format 2: unknown field `{key}`"));
        }
    }
    let fencing_token = object
        .get("fencingToken")
        .and_then(Value::as_u64)
        .ok_or("format 2: fencingToken is not a number")?;
    let identities: Vec<String> = match object.get("identities") {
        None => Vec::new(),
        Some(list) => serde_json::from_value(list.clone())
            .map_err(|e| format!("format 2: identities: {e}"))?,
    };
    let mut jobs = BTreeMap::new();
    if let Some(entries) = object.get("jobs") {
        let entries = entries
            .as_object()
            .ok_or("format 2: jobs is not an object")?;
        for (name, entry) in entries {
            let job = job_from(entry, &identities)
                .map_err(|why| format!("format 2: job {name}: {why}"))?;
            jobs.insert(name.clone(), job);
        }
    }
    let requests = match object.get("requests") {
        None => BTreeMap::new(),
        Some(requests) => serde_json::from_value(requests.clone())
            .map_err(|e| format!("format 2: requests: {e}"))?,
    };
    if let Some(history) = object.get("history") {
        let history: BTreeMap<String, Vec<HistoryEntry>> = serde_json::from_value(history.clone())
            .map_err(|e| format!("format 2: history: {e}"))?;
        for (name, entries) in history {
            jobs.entry(name).or_default().history = entries;
        }
    }
    Ok(StateRecord {
        format: FORMAT,
        fencing_token,
        jobs,
        requests,
    })
}

fn job_from(entry: &Value, identities: &[String]) -> Result<JobRecord, String> {
    let fields = entry.as_array().ok_or("not an array")?;
    if fields.len() > 9 {
        return Err(format!("{} fields, at most 9", fields.len()));
    }
    let field = |i: usize| fields.get(i).filter(|v| !v.is_null());
    let slot_at = |i: usize| field(i).map(|v| slot_from(v, i)).transpose();
    let millis_at = |i: usize| -> Result<Duration, String> {
        field(i).map_or(Ok(Duration::zero()), |v| {
            v.as_i64()
                .map(Duration::milliseconds)
                .ok_or(format!("field {i} is not an integer"))
        })
    };
    let last_started = match slot_at(0)? {
        None => None,
        Some(slot) => Some(SlotStart {
            slot,
            fencing_token: field(1)
                .and_then(Value::as_u64)
                .ok_or("field 1 (the fencing token) is not a number")?,
            identity: match field(4) {
                None => String::new(),
                Some(index) => index
                    .as_u64()
                    .and_then(|i| identities.get(usize::try_from(i).ok()?))
                    .cloned()
                    .ok_or("field 4 is not an index into identities")?,
            },
            started_at: slot + millis_at(5)?,
        }),
    };
    let last_completion = match slot_at(2)? {
        None => None,
        Some(slot) => Some(Completion {
            slot,
            outcome: match field(3) {
                None => "unknown".to_owned(),
                Some(Value::String(label)) => label.clone(),
                Some(code) => code
                    .as_u64()
                    .and_then(|c| OUTCOMES.get(usize::try_from(c).ok()?))
                    .map(|label| (*label).to_owned())
                    .ok_or("field 3 is not an outcome")?,
            },
            finished_at: slot + millis_at(6)?,
        }),
    };
    let last_success = match field(7)
        .filter(|v| **v != Value::Bool(false))
        .map(|v| slot_from(v, 7))
        .transpose()?
    {
        Some(slot) => Some(Completion {
            slot,
            outcome: OUTCOMES[0].to_owned(),
            finished_at: slot + millis_at(8)?,
        }),
        // Left out: the last completion, if it succeeded and the entry has its details.
        None if field(7).is_none() && fields.len() > ESSENTIAL_FIELDS => {
            last_completion.clone().filter(|c| c.outcome == OUTCOMES[0])
        }
        None => None,
    };
    Ok(JobRecord {
        last_started,
        last_completion,
        last_success,
        history: Vec::new(),
    })
}

fn slot_from(value: &Value, index: usize) -> Result<DateTime<Utc>, String> {
    match value {
        Value::Number(n) => n
            .as_i64()
            .and_then(|s| Utc.timestamp_opt(s, 0).single())
            .ok_or(format!("field {index} is not a time")),
        Value::String(text) => DateTime::parse_from_rfc3339(text)
            .map(|at| at.with_timezone(&Utc))
            .map_err(|e| format!("field {index}: {e}")),
        _ => Err(format!("field {index} is not a time")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: i64, ms: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_800_000_000 + s, 0)
            .single()
            .expect("valid")
            + Duration::milliseconds(ms)
    }

    /// A job whose last run (slot 60) ended with `outcome`, and whose last success was at `success`
    /// (60: that same run).
    fn job(outcome: &str, success: Option<i64>) -> JobRecord {
        let completion = Completion {
            slot: at(60, 0),
            outcome: outcome.to_owned(),
            finished_at: at(65, 12),
        };
        JobRecord {
            last_started: Some(SlotStart {
                slot: at(60, 0),
                fencing_token: 7,
                identity: "pod-a".to_owned(),
                started_at: at(60, 12),
            }),
            last_completion: Some(completion.clone()),
            last_success: success.map(|s| match s {
                60 => completion,
                s => Completion {
                    slot: at(s, 0),
                    outcome: "succeeded".to_owned(),
                    finished_at: at(s + 1, 500),
                },
            }),
            history: Vec::new(),
        }
    }

    fn record(jobs: usize) -> StateRecord {
        let variants = [
            job("succeeded", Some(60)),
            job("succeeded", Some(0)),
            job("succeeded", None),
            job("failed", Some(0)),
            job("timed_out", None),
            job("something-new", Some(0)),
            JobRecord {
                last_started: Some(SlotStart {
                    slot: at(0, 0),
                    fencing_token: 3,
                    identity: "pod-b".to_owned(),
                    started_at: at(0, 1),
                }),
                ..JobRecord::default()
            },
            JobRecord::default(),
        ];
        StateRecord {
            format: FORMAT,
            fencing_token: 7,
            jobs: (0..jobs)
                .map(|i| (format!("job-{i:05}"), variants[i % variants.len()].clone()))
                .collect(),
            requests: BTreeMap::new(),
        }
    }

    #[test]
    fn a_small_record_is_written_in_format_1_as_every_version_reads_it() {
        let record = record(12);
        let (text, encoding) = encode(&record, MAX_BYTES).expect("fits");
        assert_eq!(encoding, Encoding::Full);
        let old: StateRecord = serde_json::from_str(&text).expect("format 1");
        assert_eq!(old, record);
        assert_eq!(decode(&text), Ok(record));
    }

    #[test]
    fn format_2_reads_back_as_written_to_the_millisecond() {
        let record = record(12);
        let text = compact(&record, false, HISTORY_PER_JOB).to_string();
        assert_eq!(decode(&text), Ok(record));
    }

    #[test]
    fn format_2_keeps_slots_that_are_not_whole_seconds_exactly() {
        let mut record = record(1);
        let odd = at(5, 0) + Duration::nanoseconds(7);
        if let Some(started) = record
            .jobs
            .values_mut()
            .next()
            .and_then(|j| j.last_started.as_mut())
        {
            started.slot = odd;
            started.started_at = odd;
        }
        let decoded =
            decode(&compact(&record, false, HISTORY_PER_JOB).to_string()).expect("decodes");
        let started = decoded.jobs["job-00000"]
            .last_started
            .clone()
            .expect("started");
        assert_eq!(started.slot, odd);
    }

    #[test]
    fn essentials_keep_what_decides_the_runs_and_drop_the_details() {
        let record = record(6);
        let decoded = decode(&compact(&record, true, 0).to_string()).expect("decodes");
        for (name, job) in &record.jobs {
            let kept = &decoded.jobs[name];
            let started =
                |j: &JobRecord| j.last_started.as_ref().map(|s| (s.slot, s.fencing_token));
            assert_eq!(started(kept), started(job), "{name}");
            let completed = |j: &JobRecord| {
                j.last_completion
                    .as_ref()
                    .map(|c| (c.slot, c.outcome.clone()))
            };
            assert_eq!(completed(kept), completed(job), "{name}");
            assert_eq!(kept.last_success, None, "{name}");
        }
    }

    #[test]
    fn the_first_encoding_that_fits_is_chosen_and_none_is_an_error_with_the_size() {
        let record = record(3000);
        let full = serde_json::to_string(&record).expect("encodes").len();
        let compact_len = compact(&record, false, HISTORY_PER_JOB).to_string().len();
        let essential = compact(&record, true, 0).to_string().len();
        assert!(
            essential < compact_len && compact_len < full,
            "{essential} {compact_len} {full}"
        );
        assert_eq!(encode(&record, full).map(|e| e.1), Ok(Encoding::Full));
        assert_eq!(
            encode(&record, full - 1).map(|e| e.1),
            Ok(Encoding::Compact)
        );
        assert_eq!(
            encode(&record, compact_len - 1).map(|e| e.1),
            Ok(Encoding::Essential)
        );
        assert_eq!(encode(&record, essential - 1), Err(essential));
    }

    #[test]
    fn ten_thousand_jobs_with_the_longest_names_and_the_largest_values_fit() {
        let name = |i: usize| format!("{i:05}{}", "x".repeat(58));
        let latest = Utc.timestamp_opt(9_999_999_999, 0).single().expect("valid");
        let worst = JobRecord {
            last_started: Some(SlotStart {
                slot: latest,
                fencing_token: u64::from(u32::MAX),
                identity: "i".repeat(253),
                started_at: at(0, 0),
            }),
            last_completion: Some(Completion {
                slot: latest,
                outcome: "cancelled".to_owned(),
                finished_at: at(0, 0),
            }),
            last_success: None,
            history: Vec::new(),
        };
        let record = StateRecord {
            format: FORMAT,
            fencing_token: u64::from(u32::MAX),
            jobs: (0..10_000).map(|i| (name(i), worst.clone())).collect(),
            requests: BTreeMap::new(),
        };
        let names: Vec<String> = (0..10_000).map(name).collect();
        let needed = capacity_needed(names.iter().map(String::as_str));
        assert!(needed <= MAX_BYTES, "{needed}");
        let essential = compact(&record, true, 0).to_string().len();
        assert!(
            essential <= needed,
            "the bound holds: {essential} > {needed}"
        );
        let (_, encoding) = encode(&record, MAX_BYTES).expect("fits");
        assert_eq!(encoding, Encoding::Essential);
    }

    #[test]
    fn a_record_of_another_format_or_with_unknown_fields_is_unusable() {
        assert!(decode(r#"{"format":2,"fencingToken":1,"jobs":{},"x":1}"#).is_err());
        assert!(
            decode(r#"{"format":2,"fencingToken":1,"jobs":{"j":[1,2,3,4,9]}}"#)
                .expect_err("no identity 9")
                .contains("job j")
        );
        assert!(decode(r#"{"format":2,"fencingToken":1,"jobs":{"j":"x"}}"#).is_err());
        // Format 3 goes through format 1's reader, whose format check makes the ledger rebuild it.
        let other = decode(r#"{"format":3,"fencingToken":1,"jobs":{}}"#).expect("reads");
        assert_eq!(other.format, 3);
    }

    #[test]
    fn outcome_codes_are_fixed_by_the_format() {
        // Records already written carry these codes: the list they come from may grow, never reorder.
        assert_eq!(OUTCOMES, ["succeeded", "failed", "timed_out", "cancelled"]);
    }
}
