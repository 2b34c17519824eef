//! How the run state is written into its ConfigMap, which holds at most [`MAX_BYTES`] (the API server
//! refuses a larger one with 422 "Too long: must have at most 1048576 bytes").
//!
//! # Three encodings, the first that fits
//!
//! 1. **Format 1** — the [`StateRecord`] as compact JSON, as every leasecron reads it. About 390 bytes per
//!    job with a 20-character name, and about 235 more per run in its history: up to about 2 600 jobs
//!    without history, about 200 with a full history each. (Versions before format 2 wrote it pretty:
//!    about 550 bytes per job, so that every claim failed with 422 from about 1 800 jobs on.)
//! 2. **Format 2** — one array per job, numbers for times, identities in a table, runs and
//!    acknowledgements as arrays too:
//!    `{"fencingToken":7,"format":2,"identities":["pod-a"],"jobs":{"backup":[1800000000,7,1800000000,0,0,12,5012]},"history":{"backup":[[1800000000,0,7,0,12,5000,0,0,null,1]]}}`.
//!    About 40 to 60 bytes per job plus its name (62 to 82 with a 20-character name): 12 000 to 16 000 jobs
//!    without history. A run in the history takes about 38 bytes, and a job's history its name and 4 more.
//!    When the runs do not all fit, each job keeps the same number of its last runs, as many as fit (see
//!    "Shedding").
//! 3. **Format 2, essentials only** — each array cut after the fields that decide what runs (the slot last
//!    started, its fencing token, the last completion's slot and outcome); who started it, when exactly,
//!    the last success and the history are dropped (they only inform `/status` and `leasecron next`). At
//!    most [`ESSENTIAL_JOB_BOUND`] bytes plus the name's per job, whatever the times: this, with
//!    [`REQUESTS_RESERVE`], is the capacity that [`capacity_needed`] checks the jobs against when they are
//!    loaded.
//!
//! Every encoding holds every acknowledgement of an operator's request (`requests`) in full: they decide
//! what runs (a request acknowledged is never carried out again), and nothing sheds them.
//!
//! # Shedding
//!
//! What gives way, in order, when the record grows: format 1 (readable by every version), then the oldest
//! runs of the history, then the details (format 2 with the essentials only, no history at all). Never the
//! essentials, never an acknowledgement.
//!
//! The history is shed evenly: every job keeps its last `k` runs (all of them if it has fewer), for the
//! largest `k` from 0 to [`HISTORY_PER_JOB`] with which the record fits, so that no job loses all of its
//! history while another keeps 20. The length grows with `k`, so the largest `k` is the one before the
//! first that does not fit: [`encode`] adds the runs a level at a time (each job's newest first) and stops
//! within the first level that does not fit, which finds the `k` a binary search would, and encodes no run
//! of a level past it (at 10 000 jobs, fewer than 10 000 runs rather than 200 000). [`Encoding::Compact`] says which
//! `k`; the store logs it when format 2 begins, and at debug when it changes.
//!
//! The history is never the reason a write fails: the essentials-only encoding has none, so a record that
//! does not fit even so is too large for its essentials and acknowledgements alone ([`encode`]'s error,
//! the store's `TooLarge`), which [`capacity_needed`] keeps job sets from reaching (see "Capacity and the
//! acknowledgements").
//!
//! Runs kept per job with 20-character names, full histories of scheduled runs, and no acknowledgement
//! (measured by the test `history_kept_per_job_from_10_to_10_000_jobs`, which prints the sizes and the
//! encodings):
//!
//! | jobs | encoding | runs kept per job |
//! |---|---|---|
//! | 10 | format 1 (51 KB) | 20 |
//! | 100 | format 1 (508 KB) | 20 |
//! | 1 000 | format 2 (846 KB) | 20 |
//! | 2 600 | format 2 | 8 |
//! | 8 400 | format 2 | 1 |
//! | 8 500 to 10 000 | format 2 | 0 |
//!
//! From about 8 500 jobs the job entries (about 61 bytes each) leave less than a run costs (about 63
//! bytes with its job's name): near the ConfigMap's limit the history is gone, and every claim still
//! succeeds. Acknowledgements take their room first: with 120 of them, 8 400 jobs keep no run either.
//!
//! # Capacity and the acknowledgements
//!
//! [`capacity_needed`] counts, beside the essentials of every job, [`REQUESTS_RESERVE`] (16 KiB) for the
//! acknowledgements and the identities they name: 36 of the largest kind leasecron writes (a 64-character
//! id, a job name of 63 characters, every time to the nanosecond, a backfill's counts at 1 000, a
//! 100-byte detail, and a replica of 63 characters of its own each: about 450 bytes), or 90 of a trigger
//! of a job with a 63-character name (about 170 bytes). That is what a job set at the very limit can
//! count on; a smaller job set leaves the rest of the 1 MiB to them too: 1 000 jobs with names of 20
//! characters leave room for about 7 600 triggers' acknowledgements (130 bytes each).
//!
//! A reserve for the most requests that may wait at once (`controls::MAX_PENDING_REQUESTS`, 1 000) was not
//! chosen. It would take 170 to 450 KB: the bound would fall from "10 000 jobs whatever their names" to
//! about 5 800 to 8 500 jobs with names of 63 characters, and a job set that runs today would be refused
//! after an upgrade. Nor would it bound anything: an acknowledgement is kept for
//! [`ACK_RETENTION`](crate::run_state::ACK_RETENTION) (2 h) after its request, while the operators'
//! commands drop a finished request from the controls document at once, so more than 1 000 may be
//! acknowledged within 2 h.
//!
//! If acknowledgements do outgrow the room left (more than about 90 of them within 2 h, with a job set
//! within 16 KiB of the limit), no acknowledgement and no essential is dropped: the write fails as too
//! large, and so do the claims that it carries (`state_unavailable`: nothing runs, nothing runs twice),
//! until acknowledgements age out or jobs are removed. The history gives way long before: it is the first
//! thing shed.
//!
//! # Mixed versions
//!
//! A leasecron before format 2 reads only format 1; it finds a format-2 record unusable, logs it, and
//! rebuilds the record from scratch (missed slots are skipped, none runs twice), writing format 1 again,
//! which this version reads. Writing format 1 whenever it fits means that, during a rolling upgrade or a
//! rollback, an older replica that takes over can read the record whenever it could have written it
//! itself, provided it knows every field: a version before the history and the acknowledgements refuses
//! their fields (in format 1 and in format 2 alike) and rebuilds the record in the same way.
//!
//! # Format 2 entries
//!
//! A slot is Unix seconds (an RFC 3339 string if not a whole second), an outcome 0 succeeded, 1 failed,
//! 2 timed out, 3 cancelled (else the label), an identity an index into `identities`, and a span in
//! milliseconds (finer precision is dropped). A missing value is `null`; trailing `null`s are left out.
//! The codes are fixed by the format: a list of them may grow, never change order.
//!
//! A job, in `jobs`, by name:
//! `[slot, token, completionSlot, outcome, identity, startedMs, finishedMs, successSlot, successFinishedMs]`:
//! `startedMs` the start after the slot and `finishedMs` the end after the completion's slot. If the last
//! completion succeeded and the last success is that same run, the success fields are left out too
//! (`false` in `successSlot` says there is no success). The essentials are the first four.
//!
//! A job's history, in `history`, by name: its last runs, oldest first, each
//! `[slot, cause, token, identity, startedMs, durationMs, outcome, exitCode, signal, attempts, request]`:
//! `cause` 0 schedule, 1 catch-up, 2 retry, 3 trigger, 4 backfill (else the label); `startedMs` the start
//! after the slot; `durationMs` the end after the start (so that the end reads back as the slot plus
//! both, to the millisecond), `null` while it runs or if its term ended first; `exitCode` and `signal`
//! those of the last attempt; `attempts` how many it took; `request` the id of a trigger's or a backfill's
//! request. The first five are always there.
//!
//! An acknowledgement, in `requests`, by request id:
//! `[kind, job, requestedAt, state, token, identity, updatedMs, slot, outcome, cursor, started, skipped,
//! failed, detail]`: `kind` 0 trigger, 1 backfill, 2 suspend, 3 resume, `state` 0 running, 1 done,
//! 2 refused (else the label); `requestedAt` a time like a slot, exact; `updatedMs` the last update after
//! it (to the millisecond); `slot` and `cursor` times like a slot, exact; a count of 0 is `null`. The first
//! seven are always there.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

use chrono::{DateTime, Duration, SecondsFormat, TimeZone, Utc};
use serde_json::{json, Value};

use crate::event::Outcome;
use crate::run_state::{
    Cause, Completion, HistoryEntry, JobRecord, RequestAck, RequestKind, RequestState, SlotStart,
    StateRecord, FORMAT, HISTORY_PER_JOB,
};

/// The most a ConfigMap may hold: the sum of the lengths of its `data` and `binaryData` values.
pub const MAX_BYTES: usize = 1024 * 1024;
pub use crate::run_state::COMPACT_FORMAT;
/// The longest essentials-only entry and its punctuation, without the name: `"":[S,T,C,O],` with slots
/// `S`, `C` below 10^10 s (before the year 2286), a token `T` below 10^10 (a Lease's `leaseTransitions`
/// is a 32-bit integer) and a one-digit outcome: 40 bytes.
pub const ESSENTIAL_JOB_BOUND: usize = 2 + 1 + 1 + 10 + 1 + 10 + 1 + 10 + 1 + 1 + 1 + 1;
/// The longest header and closing of an essentials-only record: `{"fencingToken":T,"format":2,"jobs":{}}`.
pub(crate) const HEADER_BOUND: usize = 64;
/// The bytes [`capacity_needed`] keeps for the acknowledgements of operators' requests (`requests`, and
/// the `identities` they name), which every encoding keeps in full: 16 KiB, 36 acknowledgements of the
/// largest kind leasecron writes, 90 of triggers of jobs with names of 63 characters. See "Capacity and
/// the acknowledgements" in the [module documentation](self).
pub const REQUESTS_RESERVE: usize = 16 * 1024;

/// The outcome labels, by code (an outcome's code is its index): 0 succeeded, 1 failed, 2 timed out, 3
/// cancelled.
const OUTCOMES: [&str; 4] = Outcome::LABELS;
/// The causes of a run, by code: 0 schedule, 1 catch-up, 2 retry, 3 trigger, 4 backfill.
const CAUSES: [Cause; 5] = [
    Cause::Schedule,
    Cause::CatchUp,
    Cause::Retry,
    Cause::Trigger,
    Cause::Backfill,
];
/// The kinds of request, by code: 0 trigger, 1 backfill, 2 suspend, 3 resume.
const KINDS: [RequestKind; 4] = [
    RequestKind::Trigger,
    RequestKind::Backfill,
    RequestKind::Suspend,
    RequestKind::Resume,
];
/// Where a request stands, by code: 0 running, 1 done, 2 refused.
const STATES: [RequestState; 3] = [
    RequestState::Running,
    RequestState::Done,
    RequestState::Refused,
];
/// How many entry fields are the essentials.
const ESSENTIAL_FIELDS: usize = 4;
/// The most fields of a job entry, a history entry and an acknowledgement.
const JOB_FIELDS: usize = 9;
const HISTORY_FIELDS: usize = 11;
const REQUEST_FIELDS: usize = 14;
/// The fields of an acknowledgement that are always written.
const REQUIRED_REQUEST_FIELDS: usize = 7;
/// The fields of a history entry that are always written.
const REQUIRED_HISTORY_FIELDS: usize = 5;

/// Which encoding a record was written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// Format 1, readable by every version; everything kept.
    Full,
    /// Format 2, keeping the last `history` runs of each job (fewer if it has fewer; at most
    /// [`HISTORY_PER_JOB`]).
    Compact {
        /// The history entries kept per job.
        history: usize,
    },
    /// Format 2, essentials only (and no history).
    Essential,
}

/// The bytes the run state of jobs with these names may need at most: the essentials only, and
/// [`REQUESTS_RESERVE`] for the acknowledgements of operators' requests.
pub fn capacity_needed<'a>(names: impl IntoIterator<Item = &'a str>) -> usize {
    HEADER_BOUND
        + REQUESTS_RESERVE
        + names
            .into_iter()
            .map(|name| json_len(name) + ESSENTIAL_JOB_BOUND - 2)
            .sum::<usize>()
}

/// The record as text in the first encoding that fits in `limit` bytes, or the size of the smallest.
///
/// Format 1 if it fits; else format 2 with details and the most history that fits (each job keeps its
/// last `k` runs, the largest `k` up to [`HISTORY_PER_JOB`]); else format 2 with the essentials only.
/// The acknowledgements of requests are in every one, in full.
pub fn encode(record: &StateRecord, limit: usize) -> Result<(String, Encoding), usize> {
    if let Some(text) = bounded(record, limit) {
        return Ok((text, Encoding::Full));
    }
    if let Some(detailed) = Detailed::new(record, limit) {
        let (text, history) = detailed.into_text(HISTORY_PER_JOB, limit);
        return Ok((text, Encoding::Compact { history }));
    }
    let essential = essentials(record);
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
    json_string(text).len()
}

fn json_string(text: &str) -> String {
    serde_json::to_string(text).unwrap_or_else(|_| format!("\"{text}\""))
}

// === format 2 ===

/// The table of replica identities, each once; entries refer to one by its index.
#[derive(Default)]
struct Identities<'a> {
    names: Vec<&'a str>,
    index: HashMap<&'a str, usize>,
}

impl<'a> Identities<'a> {
    /// The index of `name`, added if it is not in the table yet.
    fn index(&mut self, name: &'a str) -> usize {
        *self.index.entry(name).or_insert_with(|| {
            self.names.push(name);
            self.names.len() - 1
        })
    }

    /// The index of `name`, which is in the table.
    fn known(&self, name: &str) -> Option<usize> {
        let index = self.index.get(name).copied();
        debug_assert!(index.is_some(), "{name} is in the table");
        index
    }
}

/// A record in format 2 with details: the record without its history, and each job's history to add
/// as much of as fits.
struct Detailed<'a> {
    /// The record without its history: `{…}`.
    base: String,
    /// Each job with a history, by name: its name as JSON, and its last [`HISTORY_PER_JOB`] runs.
    histories: Vec<(String, &'a [HistoryEntry])>,
    identities: Identities<'a>,
}

impl<'a> Detailed<'a> {
    /// The record's parts, or `None` if it does not fit in `limit` bytes even without its history.
    fn new(record: &'a StateRecord, limit: usize) -> Option<Detailed<'a>> {
        let mut identities = Identities::default();
        let jobs = jobs(record, false, &mut identities);
        let requests = requests(record, &mut identities);
        let histories: Vec<(String, &[HistoryEntry])> = record
            .jobs
            .iter()
            .filter(|(_, job)| !job.history.is_empty())
            .map(|(name, job)| {
                let from = job.history.len().saturating_sub(HISTORY_PER_JOB);
                (json_string(name), &job.history[from..])
            })
            .collect();
        // The table lists the replicas of every run, kept or not, so that the base's length does not
        // depend on how many are kept (a replica's name in a table of a few).
        for (_, history) in &histories {
            for entry in *history {
                identities.index(&entry.identity);
            }
        }
        let base = bounded(&object(record, Some(&identities), jobs), limit)?;
        let base = with_members(base, "requests", &requests);
        (base.len() <= limit).then_some(Detailed {
            base,
            histories,
            identities,
        })
    }

    /// The text with the last `k` runs of each job (fewer if it has fewer), for the largest `k` up to
    /// `most` that fits in `limit` bytes; and that `k`.
    ///
    /// The length grows with `k`, so the largest `k` that fits is the one before the first that does not:
    /// the runs are added a level at a time, each job's newest first, and the search stops within the
    /// first level that does not fit. It encodes no run beyond that level, so it costs what fits in the
    /// limit, not what the record holds.
    fn into_text(self, most: usize, limit: usize) -> (String, usize) {
        let most = most.min(HISTORY_PER_JOB);
        if self.histories.is_empty() {
            return (self.base, most);
        }
        // Each job's runs as JSON, newest first, as far as the search went.
        let mut encoded: Vec<Vec<String>> = vec![Vec::new(); self.histories.len()];
        let mut len = self.base.len();
        let mut kept = 0;
        'levels: for k in 1..=most {
            let mut grown = len;
            if k == 1 {
                // `,"history":{"name":[…],…}`, each job having at least one run.
                let names: Vec<(usize, usize)> = self
                    .histories
                    .iter()
                    .map(|(name, _)| (name.len(), 2))
                    .collect();
                grown += members_len("history", &names);
            }
            for ((_, history), encoded) in self.histories.iter().zip(&mut encoded) {
                let Some(entry) = history.len().checked_sub(k).map(|i| &history[i]) else {
                    continue;
                };
                let text = history_entry(entry, &self.identities);
                // A comma after each run but the last.
                grown += text.len() + usize::from(k > 1);
                encoded.push(text);
                if grown > limit {
                    break 'levels;
                }
            }
            len = grown;
            kept = k;
        }
        if kept == 0 {
            return (self.base, 0);
        }
        let members: Vec<(String, String)> = self
            .histories
            .into_iter()
            .zip(encoded)
            .map(|((name, _), mut entries)| {
                entries.truncate(kept);
                entries.reverse();
                (name, format!("[{}]", entries.join(",")))
            })
            .collect();
        let text = with_members(self.base, "history", &members);
        debug_assert_eq!(text.len(), len);
        (text, kept)
    }
}

/// The record in format 2 with the essentials only: no history, the acknowledgements in full.
fn essentials(record: &StateRecord) -> String {
    let mut identities = Identities::default();
    let jobs = jobs(record, true, &mut identities);
    let requests = requests(record, &mut identities);
    // Only the acknowledgements name replicas here: no table without them.
    let identities = (!identities.names.is_empty()).then_some(&identities);
    with_members(
        object(record, identities, jobs).to_string(),
        "requests",
        &requests,
    )
}

/// The record's object, without its acknowledgements and history.
fn object(
    record: &StateRecord,
    identities: Option<&Identities<'_>>,
    jobs: serde_json::Map<String, Value>,
) -> Value {
    let mut out = serde_json::Map::new();
    out.insert("format".to_owned(), json!(COMPACT_FORMAT));
    out.insert("fencingToken".to_owned(), json!(record.fencing_token));
    if let Some(identities) = identities {
        out.insert("identities".to_owned(), json!(identities.names));
    }
    out.insert("jobs".to_owned(), Value::Object(jobs));
    Value::Object(out)
}

/// `object`, the text of a JSON object, with the member `"key":{"name":value,…}` added last (none if
/// there are no `members`, each a name and a value as JSON).
fn with_members(mut object: String, key: &str, members: &[(String, String)]) -> String {
    if members.is_empty() {
        return object;
    }
    let closing = object.pop();
    debug_assert_eq!(closing, Some('}'));
    object.push_str(",\"");
    object.push_str(key);
    object.push_str("\":{");
    for (i, (name, value)) in members.iter().enumerate() {
        if i > 0 {
            object.push(',');
        }
        object.push_str(name);
        object.push(':');
        object.push_str(value);
    }
    object.push_str("}}");
    object
}

/// What [`with_members`] adds for members whose names and values have these lengths.
fn members_len(key: &str, members: &[(usize, usize)]) -> usize {
    if members.is_empty() {
        return 0;
    }
    // `,"key":{` and `}` (before the object's own closing `}`), and `name:value` with commas between.
    let values: usize = members.iter().map(|(name, value)| name + 1 + value).sum();
    key.len() + 6 + values + members.len() - 1
}

/// Each job's entry, by name.
fn jobs<'a>(
    record: &'a StateRecord,
    essential: bool,
    identities: &mut Identities<'a>,
) -> serde_json::Map<String, Value> {
    record
        .jobs
        .iter()
        .map(|(name, job)| (name.clone(), job_entry(job, essential, identities)))
        .collect()
}

fn job_entry<'a>(job: &'a JobRecord, essential: bool, identities: &mut Identities<'a>) -> Value {
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
        fields.push(
            job.last_started
                .as_ref()
                .map_or(Value::Null, |s| json!(identities.index(&s.identity))),
        );
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
    Value::Array(fields)
}

/// Every acknowledgement, by request id (as JSON): acknowledgements decide what runs, and are never left
/// out.
fn requests<'a>(record: &'a StateRecord, identities: &mut Identities<'a>) -> Vec<(String, String)> {
    record
        .requests
        .iter()
        .map(|(id, ack)| (json_string(id), request_entry(ack, identities)))
        .collect()
}

/// `[kind, job, requestedAt, state, token, identity, updatedMs, slot, outcome, cursor, started, skipped,
/// failed, detail]`.
fn request_entry<'a>(ack: &'a RequestAck, identities: &mut Identities<'a>) -> String {
    let mut fields = Positional::new();
    fields
        .code(&KINDS, ack.kind, RequestKind::as_str)
        .string(&ack.job)
        .time(ack.requested_at)
        .code(&STATES, ack.state, RequestState::as_str)
        .number(ack.fencing_token)
        .number(identities.index(&ack.identity))
        .number((ack.updated_at - ack.requested_at).num_milliseconds())
        .optional(ack.slot, Positional::time)
        .optional(ack.outcome.as_deref(), Positional::outcome)
        .optional(ack.cursor, Positional::time)
        .optional((ack.started > 0).then_some(ack.started), Positional::number)
        .optional((ack.skipped > 0).then_some(ack.skipped), Positional::number)
        .optional((ack.failed > 0).then_some(ack.failed), Positional::number)
        .optional(ack.detail.as_deref(), Positional::string);
    fields.finish()
}

/// `[slot, cause, token, identity, startedMs, durationMs, outcome, exitCode, signal, attempts,
/// request]`.
fn history_entry(entry: &HistoryEntry, identities: &Identities<'_>) -> String {
    let started = (entry.started_at - entry.slot).num_milliseconds();
    // To the millisecond after the slot, as `startedMs`: the end decodes to the slot plus both.
    let duration = entry
        .finished_at
        .map(|finished| (finished - entry.slot).num_milliseconds() - started);
    let mut fields = Positional::new();
    fields
        .time(entry.slot)
        .code(&CAUSES, entry.cause, Cause::as_str)
        .number(entry.fencing_token)
        .optional(identities.known(&entry.identity), Positional::number)
        .number(started)
        .optional(duration, Positional::number)
        .optional(entry.outcome.as_deref(), Positional::outcome)
        .optional(entry.exit_code, Positional::number)
        .optional(entry.signal, Positional::number)
        .optional(entry.attempts, Positional::number)
        .optional(entry.request.as_deref(), Positional::string);
    fields.finish()
}

/// A positional array written as JSON text field by field: a missing field is `null`, and trailing
/// `null`s are left out.
struct Positional {
    text: String,
    fields: usize,
    /// `null`s not written yet: only if a field follows them.
    nulls: usize,
}

impl Positional {
    fn new() -> Positional {
        Positional {
            text: String::from("["),
            fields: 0,
            nulls: 0,
        }
    }

    /// Starts the next field, after the `null`s before it.
    fn next(&mut self) {
        for _ in 0..std::mem::take(&mut self.nulls) {
            self.separate();
            self.text.push_str("null");
        }
        self.separate();
    }

    fn separate(&mut self) {
        if self.fields > 0 {
            self.text.push(',');
        }
        self.fields += 1;
    }

    /// An integer.
    fn number(&mut self, n: impl std::fmt::Display) -> &mut Positional {
        self.next();
        let _ = write!(self.text, "{n}");
        self
    }

    fn string(&mut self, text: &str) -> &mut Positional {
        self.next();
        self.text.push_str(&json_string(text));
        self
    }

    fn time(&mut self, at: DateTime<Utc>) -> &mut Positional {
        if at.timestamp_subsec_nanos() == 0 {
            self.number(at.timestamp())
        } else {
            self.string(&rfc3339(at))
        }
    }

    fn outcome(&mut self, label: &str) -> &mut Positional {
        match OUTCOMES.iter().position(|known| *known == label) {
            Some(code) => self.number(code),
            None => self.string(label),
        }
    }

    /// The code of `value` in `table` (its index), else its label.
    fn code<T: PartialEq + Copy>(
        &mut self,
        table: &[T],
        value: T,
        label: fn(T) -> &'static str,
    ) -> &mut Positional {
        match table.iter().position(|known| *known == value) {
            Some(code) => self.number(code),
            None => self.string(label(value)),
        }
    }

    fn optional<T>(
        &mut self,
        value: Option<T>,
        write: impl FnOnce(&mut Positional, T) -> &mut Positional,
    ) -> &mut Positional {
        match value {
            Some(value) => write(self, value),
            None => {
                self.nulls += 1;
                self
            }
        }
    }

    fn finish(&mut self) -> String {
        self.text.push(']');
        std::mem::take(&mut self.text)
    }
}

fn rfc3339(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

fn time(at: DateTime<Utc>) -> Value {
    if at.timestamp_subsec_nanos() == 0 {
        json!(at.timestamp())
    } else {
        json!(rfc3339(at))
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

// === reading format 2 ===

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
    for (name, entry) in members(object, "jobs")?.into_iter().flatten() {
        let job =
            job_from(entry, &identities).map_err(|why| format!("format 2: job {name}: {why}"))?;
        jobs.insert(name.clone(), job);
    }
    let mut requests = BTreeMap::new();
    for (id, entry) in members(object, "requests")?.into_iter().flatten() {
        let ack = request_from(entry, &identities)
            .map_err(|why| format!("format 2: request {id}: {why}"))?;
        requests.insert(id.clone(), ack);
    }
    for (name, list) in members(object, "history")?.into_iter().flatten() {
        let history = list
            .as_array()
            .ok_or("not an array")
            .map_err(|why| format!("format 2: history of {name}: {why}"))?
            .iter()
            .enumerate()
            .map(|(i, entry)| {
                history_from(entry, &identities)
                    .map_err(|why| format!("format 2: history of {name}, entry {i}: {why}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        jobs.entry(name.clone()).or_default().history = history;
    }
    Ok(StateRecord {
        format: FORMAT,
        fencing_token,
        jobs,
        requests,
    })
}

/// The object under `key`, if there is one.
fn members<'a>(
    object: &'a serde_json::Map<String, Value>,
    key: &str,
) -> Result<Option<&'a serde_json::Map<String, Value>>, String> {
    match object.get(key) {
        None => Ok(None),
        Some(Value::Object(members)) => Ok(Some(members)),
        Some(_) => Err(format!("format 2: {key} is not an object")),
    }
}

/// The fields of a positional array of at most `most` fields.
struct Fields<'a> {
    fields: &'a [Value],
    identities: &'a [String],
}

impl<'a> Fields<'a> {
    fn of(entry: &'a Value, most: usize, identities: &'a [String]) -> Result<Fields<'a>, String> {
        let fields = entry.as_array().ok_or("not an array")?;
        if fields.len() > most {
            return Err(format!("{} fields, at most {most}", fields.len()));
        }
        Ok(Fields { fields, identities })
    }

    /// Field `i`, unless it is missing or `null`.
    fn get(&self, i: usize) -> Option<&'a Value> {
        self.fields.get(i).filter(|v| !v.is_null())
    }

    fn required(&self, i: usize) -> Result<&'a Value, String> {
        self.get(i).ok_or(format!("field {i} is missing"))
    }

    fn time(&self, i: usize) -> Result<Option<DateTime<Utc>>, String> {
        self.get(i).map(|v| slot_from(v, i)).transpose()
    }

    fn integer<T: TryFrom<i64>>(&self, i: usize) -> Result<Option<T>, String> {
        self.get(i)
            .map(|v| {
                v.as_i64()
                    .and_then(|n| T::try_from(n).ok())
                    .ok_or(format!("field {i} is not an integer in range"))
            })
            .transpose()
    }

    /// `at` plus the milliseconds of field `i` (none if it is missing).
    fn after(&self, at: DateTime<Utc>, i: usize) -> Result<DateTime<Utc>, String> {
        plus_millis(at, self.integer(i)?.unwrap_or_default())
            .ok_or(format!("field {i} is out of range"))
    }

    fn token(&self, i: usize) -> Result<u64, String> {
        self.required(i)?
            .as_u64()
            .ok_or(format!("field {i} (a fencing token) is not a number"))
    }

    fn identity(&self, i: usize) -> Result<Option<String>, String> {
        self.get(i)
            .map(|index| {
                index
                    .as_u64()
                    .and_then(|n| self.identities.get(usize::try_from(n).ok()?))
                    .cloned()
                    .ok_or(format!("field {i} is not an index into identities"))
            })
            .transpose()
    }

    fn string(&self, i: usize) -> Result<Option<String>, String> {
        self.get(i)
            .map(|v| {
                v.as_str()
                    .map(str::to_owned)
                    .ok_or(format!("field {i} is not a string"))
            })
            .transpose()
    }

    fn outcome(&self, i: usize) -> Result<Option<String>, String> {
        self.get(i)
            .map(|v| match v {
                Value::String(label) => Ok(label.clone()),
                code => code
                    .as_u64()
                    .and_then(|c| OUTCOMES.get(usize::try_from(c).ok()?))
                    .map(|label| (*label).to_owned())
                    .ok_or(format!("field {i} is not an outcome")),
            })
            .transpose()
    }

    /// The value of code `table[i]`, or of its label.
    fn code<T: Copy + serde::de::DeserializeOwned>(
        &self,
        i: usize,
        table: &[T],
    ) -> Result<T, String> {
        match self.required(i)? {
            label @ Value::String(_) => {
                serde_json::from_value(label.clone()).map_err(|e| format!("field {i}: {e}"))
            }
            code => code
                .as_u64()
                .and_then(|c| table.get(usize::try_from(c).ok()?))
                .copied()
                .ok_or(format!("field {i} is not a known code")),
        }
    }
}

fn job_from(entry: &Value, identities: &[String]) -> Result<JobRecord, String> {
    let fields = Fields::of(entry, JOB_FIELDS, identities)?;
    let last_started = match fields.time(0)? {
        None => None,
        Some(slot) => Some(SlotStart {
            slot,
            fencing_token: fields.token(1)?,
            identity: fields.identity(4)?.unwrap_or_default(),
            started_at: fields.after(slot, 5)?,
        }),
    };
    let last_completion = match fields.time(2)? {
        None => None,
        Some(slot) => Some(Completion {
            slot,
            outcome: fields.outcome(3)?.unwrap_or_else(|| "unknown".to_owned()),
            finished_at: fields.after(slot, 6)?,
        }),
    };
    let last_success = match fields
        .get(7)
        .filter(|v| **v != Value::Bool(false))
        .map(|v| slot_from(v, 7))
        .transpose()?
    {
        Some(slot) => Some(Completion {
            slot,
            outcome: OUTCOMES[0].to_owned(),
            finished_at: fields.after(slot, 8)?,
        }),
        // Left out: the last completion, if it succeeded and the entry has its details.
        None if fields.get(7).is_none() && fields.fields.len() > ESSENTIAL_FIELDS => {
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

fn history_from(entry: &Value, identities: &[String]) -> Result<HistoryEntry, String> {
    let fields = Fields::of(entry, HISTORY_FIELDS, identities)?;
    if fields.fields.len() < REQUIRED_HISTORY_FIELDS {
        return Err(format!(
            "{} fields, at least {REQUIRED_HISTORY_FIELDS}",
            fields.fields.len()
        ));
    }
    let slot = fields.time(0)?.ok_or("field 0 (the slot) is missing")?;
    let started_at = fields.after(slot, 4)?;
    Ok(HistoryEntry {
        slot,
        cause: fields.code(1, &CAUSES)?,
        fencing_token: fields.token(2)?,
        identity: fields
            .identity(3)?
            .ok_or("field 3 (the identity) is missing")?,
        started_at,
        finished_at: match fields.get(5) {
            None => None,
            Some(_) => Some(fields.after(started_at, 5)?),
        },
        outcome: fields.outcome(6)?,
        exit_code: fields.integer(7)?,
        signal: fields.integer(8)?,
        attempts: fields.integer(9)?,
        request: fields.string(10)?,
    })
}

fn request_from(entry: &Value, identities: &[String]) -> Result<RequestAck, String> {
    let fields = Fields::of(entry, REQUEST_FIELDS, identities)?;
    if fields.fields.len() < REQUIRED_REQUEST_FIELDS {
        return Err(format!(
            "{} fields, at least {REQUIRED_REQUEST_FIELDS}",
            fields.fields.len()
        ));
    }
    let requested_at = fields.time(2)?.ok_or("field 2 (requestedAt) is missing")?;
    Ok(RequestAck {
        kind: fields.code(0, &KINDS)?,
        job: fields.string(1)?.ok_or("field 1 (the job) is missing")?,
        requested_at,
        state: fields.code(3, &STATES)?,
        fencing_token: fields.token(4)?,
        identity: fields
            .identity(5)?
            .ok_or("field 5 (the identity) is missing")?,
        updated_at: fields.after(requested_at, 6)?,
        slot: fields.time(7)?,
        outcome: fields.outcome(8)?,
        cursor: fields.time(9)?,
        started: fields.integer(10)?.unwrap_or_default(),
        skipped: fields.integer(11)?.unwrap_or_default(),
        failed: fields.integer(12)?.unwrap_or_default(),
        detail: fields.string(13)?,
    })
}

fn plus_millis(at: DateTime<Utc>, millis: i64) -> Option<DateTime<Utc>> {
    at.checked_add_signed(Duration::try_milliseconds(millis)?)
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

    /// Format 2 with details and the last `kept` entries of each job's history, whatever its size.
    fn format_2(record: &StateRecord, kept: usize) -> String {
        let (text, k) = Detailed::new(record, usize::MAX)
            .expect("no limit")
            .into_text(kept, usize::MAX);
        assert_eq!(k, kept);
        text
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

    /// A scheduled run of slot `s` by `identity` that took 5 s and succeeded.
    fn run(s: i64, identity: &str) -> HistoryEntry {
        HistoryEntry {
            slot: at(s, 0),
            cause: Cause::Schedule,
            request: None,
            fencing_token: 7,
            identity: identity.to_owned(),
            started_at: at(s, 12),
            finished_at: Some(at(s + 5, 12)),
            outcome: Some("succeeded".to_owned()),
            exit_code: Some(0),
            signal: None,
            attempts: Some(1),
        }
    }

    /// Runs of every kind: each cause, running and interrupted ones, every outcome and one this version
    /// does not know, signals, retries, requests, a slot that is not a whole second, negative offsets.
    fn varied_history() -> Vec<HistoryEntry> {
        let trigger_instant = at(300, 0) + Duration::nanoseconds(123_456_789);
        vec![
            run(0, "pod-a"),
            HistoryEntry {
                cause: Cause::CatchUp,
                started_at: at(100, 61_234),
                finished_at: Some(at(100, 70_000)),
                outcome: Some("failed".to_owned()),
                exit_code: Some(3),
                attempts: Some(4),
                ..run(100, "pod-b")
            },
            HistoryEntry {
                cause: Cause::Retry,
                fencing_token: 8,
                finished_at: Some(at(200, 3_600_000)),
                outcome: Some("timed_out".to_owned()),
                exit_code: None,
                signal: Some(9),
                ..run(200, "pod-c")
            },
            HistoryEntry {
                cause: Cause::Trigger,
                slot: trigger_instant,
                request: Some("0193a1b2c3d4-1a2b3c4d".to_owned()),
                started_at: trigger_instant,
                finished_at: Some(trigger_instant + Duration::milliseconds(1500)),
                outcome: Some("cancelled".to_owned()),
                exit_code: None,
                signal: Some(15),
                ..run(300, "pod-a")
            },
            HistoryEntry {
                cause: Cause::Backfill,
                request: Some("0193a1b2c3d4-5e6f7a8b".to_owned()),
                // The clock of the replica that ran it was behind.
                started_at: at(400, -250),
                finished_at: Some(at(400, -100)),
                outcome: Some("something-new".to_owned()),
                ..run(400, "pod-b")
            },
            // Interrupted: its term ended first.
            HistoryEntry {
                finished_at: None,
                outcome: None,
                exit_code: None,
                attempts: None,
                ..run(500, "pod-c")
            },
            // Running, with an exit code of an earlier attempt.
            HistoryEntry {
                finished_at: None,
                outcome: None,
                exit_code: Some(1),
                attempts: None,
                ..run(600, "pod-a")
            },
        ]
    }

    /// An acknowledgement of every kind and state, with the largest values, and times finer than a
    /// second.
    fn acknowledgements() -> BTreeMap<String, RequestAck> {
        let requested = at(0, 0) + Duration::nanoseconds(987_654_321);
        let trigger = RequestAck {
            kind: RequestKind::Trigger,
            job: "job-00000".to_owned(),
            requested_at: requested,
            state: RequestState::Done,
            detail: None,
            fencing_token: 7,
            identity: "pod-a".to_owned(),
            updated_at: requested + Duration::milliseconds(5_012),
            slot: Some(requested + Duration::nanoseconds(1_000_001)),
            outcome: Some("succeeded".to_owned()),
            cursor: None,
            started: 0,
            skipped: 0,
            failed: 0,
        };
        let backfill = RequestAck {
            kind: RequestKind::Backfill,
            job: "job-00001".to_owned(),
            state: RequestState::Running,
            fencing_token: u64::from(u32::MAX),
            identity: "pod-z".to_owned(),
            slot: None,
            outcome: Some("timed_out".to_owned()),
            cursor: Some(at(-3600, 0)),
            started: 1000,
            skipped: 3,
            failed: 0,
            detail: Some("skipped 3 slots already started: \"quoted\" and ünïcode".to_owned()),
            ..trigger.clone()
        };
        let refused = RequestAck {
            kind: RequestKind::Suspend,
            job: "no-such-job".to_owned(),
            state: RequestState::Refused,
            outcome: None,
            slot: None,
            updated_at: requested - Duration::milliseconds(40),
            detail: Some("the job is not in the jobs in force".to_owned()),
            ..trigger.clone()
        };
        let resume = RequestAck {
            kind: RequestKind::Resume,
            outcome: None,
            slot: None,
            failed: 2,
            ..trigger.clone()
        };
        [
            ("0193a1b2c3d4-00000001", trigger),
            ("0193a1b2c3d4-00000002", backfill),
            ("0193a1b2c3d4-00000003", refused),
            ("an id of the operator's own choosing", resume),
        ]
        .into_iter()
        .map(|(id, ack)| (id.to_owned(), ack))
        .collect()
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
        let text = format_2(&record, HISTORY_PER_JOB);
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
        let decoded = decode(&format_2(&record, HISTORY_PER_JOB)).expect("decodes");
        let started = decoded.jobs["job-00000"]
            .last_started
            .clone()
            .expect("started");
        assert_eq!(started.slot, odd);
    }

    #[test]
    fn history_entries_read_back_as_written_to_the_millisecond() {
        let mut record = record(8);
        record.requests = acknowledgements();
        let history = varied_history();
        for (i, job) in record.jobs.values_mut().enumerate() {
            // Histories of every length from 0; a job with only a history (a trigger's run) too.
            job.history = history[..i.min(history.len())].to_vec();
        }
        record.jobs.insert(
            "triggered-only".to_owned(),
            JobRecord {
                history: history[3..4].to_vec(),
                ..JobRecord::default()
            },
        );
        let text = format_2(&record, HISTORY_PER_JOB);
        assert_eq!(decode(&text), Ok(record.clone()));
        // Positional, as documented.
        let value: Value = serde_json::from_str(&text).expect("JSON");
        let identities = &value["identities"];
        let pod_a = identities
            .as_array()
            .and_then(|list| list.iter().position(|name| name == "pod-a"))
            .expect("pod-a is in the table");
        assert_eq!(
            value["history"]["job-00001"][0],
            json!([1_800_000_000, 0, 7, pod_a, 12, 5000, 0, 0, null, 1])
        );
        let trigger = &value["history"]["triggered-only"][0];
        assert_eq!(
            trigger,
            &json!([
                "2027-01-15T08:05:00.123456789Z",
                3,
                7,
                pod_a,
                0,
                1500,
                3,
                null,
                15,
                1,
                "0193a1b2c3d4-1a2b3c4d"
            ])
        );
    }

    #[test]
    fn history_times_finer_than_a_millisecond_are_cut_to_the_millisecond_after_the_slot() {
        let mut record = record(1);
        let entry = HistoryEntry {
            started_at: at(0, 12) + Duration::microseconds(999),
            finished_at: Some(at(5, 12) + Duration::microseconds(1)),
            ..run(0, "pod-a")
        };
        if let Some(job) = record.jobs.values_mut().next() {
            job.history = vec![entry];
        }
        let decoded = decode(&format_2(&record, HISTORY_PER_JOB)).expect("decodes");
        let entry = &decoded.jobs["job-00000"].history[0];
        assert_eq!(
            (entry.started_at, entry.finished_at),
            (at(0, 12), Some(at(5, 12)))
        );
    }

    #[test]
    fn acknowledgements_read_back_in_full_in_every_encoding() {
        let mut record = record(8);
        record.requests = acknowledgements();
        for text in [
            serde_json::to_string(&record).expect("format 1"),
            format_2(&record, HISTORY_PER_JOB),
            format_2(&record, 0),
            essentials(&record),
        ] {
            let decoded = decode(&text).expect("decodes");
            assert_eq!(decoded.requests, record.requests, "{text}");
        }
        let value: Value = serde_json::from_str(&essentials(&record)).expect("JSON");
        assert_eq!(
            value["requests"]["0193a1b2c3d4-00000001"],
            json!([
                0,
                "job-00000",
                "2027-01-15T08:00:00.987654321Z",
                1,
                7,
                0,
                5012,
                "2027-01-15T08:00:00.988654322Z",
                0
            ])
        );
        // The essentials name no replica but the acknowledgements'.
        assert_eq!(value["identities"], json!(["pod-a", "pod-z"]));
    }

    #[test]
    fn essentials_keep_what_decides_the_runs_and_drop_the_details() {
        let mut record = record(6);
        for job in record.jobs.values_mut() {
            job.history = varied_history();
        }
        let decoded = decode(&essentials(&record)).expect("decodes");
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
            assert_eq!(kept.history, [], "{name}");
        }
        let value: Value = serde_json::from_str(&essentials(&record)).expect("JSON");
        assert_eq!(
            value.get("identities"),
            None,
            "no acknowledgement, no table"
        );
    }

    #[test]
    fn the_first_encoding_that_fits_is_chosen_and_none_is_an_error_with_the_size() {
        let record = record(3000);
        let full = serde_json::to_string(&record).expect("encodes").len();
        let compact_len = format_2(&record, HISTORY_PER_JOB).len();
        let essential = essentials(&record).len();
        assert!(
            essential < compact_len && compact_len < full,
            "{essential} {compact_len} {full}"
        );
        assert_eq!(encode(&record, full).map(|e| e.1), Ok(Encoding::Full));
        // No job has a history: each keeps all of it.
        assert_eq!(
            encode(&record, full - 1).map(|e| e.1),
            Ok(Encoding::Compact {
                history: HISTORY_PER_JOB
            })
        );
        assert_eq!(
            encode(&record, compact_len - 1).map(|e| e.1),
            Ok(Encoding::Essential)
        );
        assert_eq!(encode(&record, essential - 1), Err(essential));
    }

    /// `count` jobs named `prefix` and a number, each with a full history of scheduled runs (and
    /// `requests` acknowledgements), as a leader would have them after 20 runs of each.
    fn busy(count: usize, name: impl Fn(usize) -> String, requests: usize) -> StateRecord {
        let identities = ["leasecron-7d9f8b6c5-x2k4q", "leasecron-7d9f8b6c5-m8w3z"];
        let jobs = (0..count)
            .map(|i| {
                let identity = identities[i % identities.len()];
                let history: Vec<HistoryEntry> = (0..HISTORY_PER_JOB)
                    .map(|n| run(3600 * i64::try_from(n).expect("small"), identity))
                    .collect();
                let last = history.last().cloned().expect("a run");
                let completion = Completion {
                    slot: last.slot,
                    outcome: "succeeded".to_owned(),
                    finished_at: last.finished_at.expect("finished"),
                };
                let job = JobRecord {
                    last_started: Some(SlotStart {
                        slot: last.slot,
                        fencing_token: last.fencing_token,
                        identity: last.identity.clone(),
                        started_at: last.started_at,
                    }),
                    last_completion: Some(completion.clone()),
                    last_success: Some(completion),
                    history,
                };
                (name(i), job)
            })
            .collect();
        StateRecord {
            format: FORMAT,
            fencing_token: 7,
            jobs,
            requests: trigger_acks(requests, |i| name(i % count.max(1)), identities[0]),
        }
    }

    /// `count` acknowledgements of triggers of the jobs `job(i)` that ran, with generated ids.
    fn trigger_acks(
        count: usize,
        job: impl Fn(usize) -> String,
        identity: &str,
    ) -> BTreeMap<String, RequestAck> {
        (0..count)
            .map(|i| {
                let n = i64::try_from(i).expect("small");
                let requested_at = at(n, 0) + Duration::nanoseconds(123_456_789);
                let ack = RequestAck {
                    kind: RequestKind::Trigger,
                    job: job(i),
                    requested_at,
                    state: RequestState::Done,
                    detail: None,
                    fencing_token: 7,
                    identity: identity.to_owned(),
                    updated_at: requested_at + Duration::milliseconds(5_012),
                    slot: Some(requested_at + Duration::nanoseconds(2_000_001)),
                    outcome: Some("succeeded".to_owned()),
                    cursor: None,
                    started: 0,
                    skipped: 0,
                    failed: 0,
                };
                (
                    format!("{:012x}-{:08x}", 0x0193_a1b2_c3d4_u64 + n as u64, i),
                    ack,
                )
            })
            .collect()
    }

    /// The history entries each job keeps when `record` is encoded in `limit` bytes.
    fn kept(record: &StateRecord, limit: usize) -> (Encoding, StateRecord) {
        let (text, encoding) = encode(record, limit).expect("fits");
        (encoding, decode(&text).expect("decodes"))
    }

    #[test]
    fn a_record_too_large_for_its_history_keeps_the_same_number_of_last_runs_of_every_job() {
        let mut record = busy(40, |i| format!("job-{i:05}"), 3);
        // Histories of 20, 0 and every length between.
        for (i, job) in record.jobs.values_mut().enumerate() {
            let drop = i % (HISTORY_PER_JOB + 1);
            job.history.drain(..drop);
        }
        let sizes: Vec<usize> = (0..=HISTORY_PER_JOB)
            .map(|k| format_2(&record, k).len())
            .collect();
        assert!(sizes.windows(2).all(|w| w[0] < w[1]), "{sizes:?}");
        // Every limit from the one that holds no history to the one that holds it all, in steps, and each
        // size and the byte before it.
        let limits = (sizes[0]..=sizes[HISTORY_PER_JOB])
            .step_by(97)
            .chain(sizes.iter().copied())
            .chain(sizes[1..].iter().map(|size| size - 1));
        for limit in limits {
            let (encoding, decoded) = kept(&record, limit);
            let Encoding::Compact { history: k } = encoding else {
                panic!("{encoding:?} at {limit}")
            };
            // The largest that fits.
            assert!(sizes[k] <= limit, "{k} at {limit}");
            assert!(
                k == HISTORY_PER_JOB || sizes[k + 1] > limit,
                "{k} at {limit}"
            );
            for (name, job) in &record.jobs {
                let from = job.history.len().saturating_sub(k);
                assert!(
                    decoded.jobs[name].history == job.history[from..],
                    "{name} at {limit}"
                );
            }
            assert!(decoded.requests == record.requests, "at {limit}");
        }
    }

    #[test]
    fn history_never_makes_a_record_not_fit_and_acknowledgements_are_never_shed() {
        let record = busy(100, |i| format!("job-{i:05}"), 200);
        let essential = essentials(&record).len();
        let (encoding, decoded) = kept(&record, essential);
        assert_eq!(encoding, Encoding::Essential);
        assert_eq!(decoded.requests, record.requests);
        assert!(decoded.jobs.values().all(|job| job.history.is_empty()));
        // Only the essentials and the acknowledgements decide: one byte less is too large.
        assert_eq!(encode(&record, essential - 1), Err(essential));
    }

    /// The figures of the module documentation and docs/design.md: how many runs each job keeps with
    /// names of 20 characters and full histories of scheduled runs that succeeded; and that with about
    /// the reserve's worth of acknowledgements (120 of triggers) those are all kept and the history gives
    /// way. `cargo test --lib history_kept_per_job -- --nocapture` prints them.
    #[test]
    fn history_kept_per_job_from_10_to_10_000_jobs() {
        let name = |i: usize| format!("nightly-report-{i:05}");
        assert_eq!(name(0).len(), 20);
        let documented = [
            (10, HISTORY_PER_JOB),
            (100, HISTORY_PER_JOB),
            (1_000, HISTORY_PER_JOB),
            (2_600, 8),
            (8_400, 1),
            (8_500, 0),
            (10_000, 0),
        ];
        for (jobs, documented) in documented {
            let record = busy(jobs, name, 0);
            let (text, encoding) = encode(&record, MAX_BYTES).expect("fits");
            let decoded = decode(&text).expect("decodes");
            let k = decoded.jobs[&name(0)].history.len();
            assert!(
                decoded.jobs.values().all(|job| job.history.len() == k),
                "{jobs} jobs: every job keeps {k}"
            );
            let with_requests = busy(jobs, name, 120);
            let (encoding_with_requests, decoded) = kept(&with_requests, MAX_BYTES);
            assert!(
                decoded.requests == with_requests.requests,
                "{jobs} jobs: every acknowledgement is kept"
            );
            let k_with_requests = decoded.jobs[&name(0)].history.len();
            assert!(
                decoded
                    .jobs
                    .values()
                    .all(|job| job.history.len() == k_with_requests),
                "{jobs} jobs and acknowledgements: every job keeps {k_with_requests}"
            );
            println!(
                "{jobs:>6} jobs: {encoding:?}, {} bytes, {k} runs of each job; with 120 \
                 acknowledgements: {encoding_with_requests:?}, {k_with_requests} runs",
                text.len()
            );
            assert_eq!(
                k, documented,
                "{jobs} jobs: update the figures of the module documentation and docs/design.md"
            );
        }
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
            history: vec![run(0, &"h".repeat(253)); HISTORY_PER_JOB],
        };
        // The reserve's worth of the largest acknowledgements leasecron writes: a refused backfill of a
        // job with the longest name, every time finer than a second, a detail of 100 bytes, each
        // acknowledged by another replica.
        let largest = |i: usize| RequestAck {
            kind: RequestKind::Backfill,
            job: name(i),
            requested_at: latest - Duration::nanoseconds(1),
            state: RequestState::Refused,
            detail: Some("d".repeat(100)),
            fencing_token: u64::from(u32::MAX),
            identity: format!("{i:03}{}", "r".repeat(60)),
            updated_at: latest - Duration::nanoseconds(1) + Duration::hours(2),
            slot: Some(latest - Duration::nanoseconds(1)),
            outcome: Some("cancelled".to_owned()),
            cursor: Some(latest - Duration::nanoseconds(1)),
            started: 1000,
            skipped: 1000,
            failed: 1000,
        };
        let record = StateRecord {
            format: FORMAT,
            fencing_token: u64::from(u32::MAX),
            jobs: (0..10_000).map(|i| (name(i), worst.clone())).collect(),
            requests: (0..36)
                .map(|i| (format!("{i:02}{}", "q".repeat(62)), largest(i)))
                .collect(),
        };
        let names: Vec<String> = (0..10_000).map(name).collect();
        let needed = capacity_needed(names.iter().map(String::as_str));
        assert!(needed <= MAX_BYTES, "{needed}");
        let without_requests = essentials(&StateRecord {
            requests: BTreeMap::new(),
            ..record.clone()
        })
        .len();
        assert!(
            without_requests <= needed - REQUESTS_RESERVE,
            "the bound per job holds: {without_requests} > {}",
            needed - REQUESTS_RESERVE
        );
        let essential = essentials(&record).len();
        assert!(
            essential - without_requests <= REQUESTS_RESERVE,
            "36 of the largest acknowledgements fit in the reserve: {}",
            essential - without_requests
        );
        let (text, encoding) = encode(&record, MAX_BYTES).expect("fits");
        assert_eq!(encoding, Encoding::Essential);
        assert!(
            decode(&text).map(|r| r.requests).as_ref() == Ok(&record.requests),
            "every acknowledgement is kept"
        );
        // The usual kind: 90 triggers of jobs with the longest names, acknowledged by one replica.
        let triggers = StateRecord {
            requests: trigger_acks(90, name, "leasecron-7d9f8b6c5-x2k4q"),
            ..record
        };
        let triggered = essentials(&triggers).len();
        assert!(
            triggered - without_requests <= REQUESTS_RESERVE,
            "90 triggers' acknowledgements fit in the reserve: {}",
            triggered - without_requests
        );
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
    fn malformed_history_entries_and_acknowledgements_are_unusable_not_a_panic() {
        let with = |member: &str| {
            decode(&format!(
                r#"{{"format":2,"fencingToken":1,"identities":["a"],"jobs":{{}},{member}}}"#
            ))
        };
        assert!(with(r#""history":{"j":[[1,0,1,0,0]]}"#).is_ok());
        for bad in [
            r#""history":{"j":[[1,0,1,0]]}"#,
            r#""history":{"j":[[1,9,1,0,0]]}"#,
            r#""history":{"j":[[1,"someday",1,0,0]]}"#,
            r#""history":{"j":[[1,0,1,5,0]]}"#,
            r#""history":{"j":[[1,0,1,0,9223372036854775807]]}"#,
            r#""history":{"j":[[1,0,1,0,0,-9223372036854775807]]}"#,
            r#""history":{"j":[[1,0,1,0,0,0,0,4294967296]]}"#,
            r#""history":{"j":[[1,0,1,0,0,null,null,null,null,null,null,null]]}"#,
            r#""history":{"j":[1]}"#,
            r#""history":{"j":1}"#,
            r#""history":[]"#,
            r#""requests":{"r":[0,"j",1,0,1,0]}"#,
            r#""requests":{"r":[4,"j",1,0,1,0,0]}"#,
            r#""requests":{"r":[0,"j",1,3,1,0,0]}"#,
            r#""requests":{"r":[0,"j",1,0,1,1,0]}"#,
            r#""requests":{"r":[0,null,1,0,1,0,0]}"#,
            r#""requests":{"r":[0,"j",1,0,1,0,0,null,null,null,-1]}"#,
            r#""requests":{"r":{}}"#,
        ] {
            assert!(with(bad).is_err(), "{bad}");
        }
        // A label this version knows is read as its code.
        let labels = with(r#""history":{"j":[[1,"catch_up",1,0,0]]},"requests":{"r":["suspend","j",1,"done",1,0,0]}"#)
            .expect("reads");
        assert_eq!(labels.jobs["j"].history[0].cause, Cause::CatchUp);
        assert_eq!(labels.requests["r"].kind, RequestKind::Suspend);
    }

    #[test]
    fn codes_are_fixed_by_the_format() {
        // Records already written carry these codes: the lists may grow, never reorder.
        assert_eq!(OUTCOMES, ["succeeded", "failed", "timed_out", "cancelled"]);
        assert_eq!(
            CAUSES.map(Cause::as_str),
            ["schedule", "catch_up", "retry", "trigger", "backfill"]
        );
        assert_eq!(
            KINDS.map(RequestKind::as_str),
            ["trigger", "backfill", "suspend", "resume"]
        );
        assert_eq!(
            STATES.map(RequestState::as_str),
            ["running", "done", "refused"]
        );
    }
}
