//! `status` and `history`: what the replicas recorded, read from the stores beside the lease (the lease,
//! the run state, the controls) and the jobs, without a replica's HTTP port. Each prints a table, or with
//! `-o json` a document whose shape is stable ([`StatusDocument`], [`HistoryDocument`]; README
//! "`leasecron status`" documents both).
//!
//! A run without an outcome is `running` if the term that started it is the current one (its fencing
//! token is the token of the lease's holder, and the lease has not expired by this machine's clock), else
//! `interrupted`: its term ended before it finished.

use std::io;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde::Serialize;

use super::request::signal_text;
use super::{format_duration, format_time, say, Error, Opened};
use crate::config::Job;
use crate::controls::{Controls, Suspension};
use crate::lease_store::LeaseRecord;
use crate::run_state::{
    self, Cause, HistoryEntry, JobRecord, RequestKind, RequestState, StateRecord, HISTORY_PER_JOB,
};

/// The version of the JSON documents: a change that could break a reader gets a new one.
pub const DOCUMENT_VERSION: u32 = 1;

/// How `status` and `history` print.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// A table.
    Text,
    /// One JSON document.
    Json,
}

/// `leasecron status -o json`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StatusDocument {
    /// [`DOCUMENT_VERSION`].
    pub version: u32,
    /// When it was read (this machine's clock): `running` and `expired` are as of then.
    pub time: DateTime<Utc>,
    /// The lease; `null` if no replica has created it yet.
    pub lease: Option<LeaseView>,
    /// Where the jobs were read from.
    pub jobs_source: String,
    /// The jobs (or the one asked for), in the file's order.
    pub jobs: Vec<JobView>,
}

/// The lease, as `status` shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LeaseView {
    /// `lease file PATH` or `Lease NS/NAME`.
    pub store: String,
    /// The leader; `null`: the lease is free (released).
    pub holder: Option<String>,
    /// The current term's fencing token (the lease's `leaseTransitions`); `null` without a holder.
    pub fencing_token: Option<u64>,
    /// The lease's `leaseTransitions`: the last term's token, with or without a holder.
    pub lease_transitions: u64,
    /// When the holder acquired it.
    pub acquired_at: Option<DateTime<Utc>>,
    /// When the holder last renewed it.
    pub renewed_at: Option<DateTime<Utc>>,
    /// Its `leaseDurationSeconds`.
    pub lease_duration_seconds: i32,
    /// True if it is held but was not renewed within its duration, by this machine's clock: the holder
    /// is gone (its runs ended with its term), and another replica takes over.
    pub expired: bool,
}

/// One job, as `status` shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JobView {
    /// The job's name.
    pub name: String,
    /// Its cron expression.
    pub schedule: String,
    /// Its time zone.
    pub zone: String,
    /// True if its fires start nothing: `suspended_in_file` or an operator's `suspension`.
    pub suspended: bool,
    /// `suspend: true` in the jobs file.
    pub suspended_in_file: bool,
    /// An operator's suspension (`leasecron suspend`): `by`, `at`, `note` (if any), `request`.
    pub suspension: Option<Suspension>,
    /// Its runs of the current term that have not finished.
    pub running: Vec<RunView>,
    /// Its newest run that is not running (finished, or interrupted).
    pub last_run: Option<RunView>,
    /// Its next slot by the schedule (`null` if it never fires again), suspended or not.
    pub next_slot: Option<DateTime<Utc>>,
    /// The operators' requests for it that are not done: pending, running, or expired unacknowledged.
    pub requests: Vec<RequestView>,
}

/// One run, as `status` and `history` show it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunView {
    /// The slot it ran for (a trigger's: the instant it started).
    pub slot: DateTime<Utc>,
    /// Why: `schedule`, `catch_up`, `retry`, `trigger` or `backfill`.
    pub cause: Cause,
    /// The operator's request of a trigger or a backfill.
    pub request: Option<String>,
    /// The fencing token of the term that ran it.
    pub fencing_token: u64,
    /// The replica that ran it.
    pub identity: String,
    /// When it started (`null` only for a run recorded before leasecron kept a history).
    pub started_at: Option<DateTime<Utc>>,
    /// When it finished; `null` while running, or interrupted.
    pub finished_at: Option<DateTime<Utc>>,
    /// From start to finish, or so far while running; `null` if interrupted.
    pub duration_seconds: Option<f64>,
    /// `succeeded`, `failed`, `timed_out`, `cancelled`, `running` or `interrupted`.
    pub state: String,
    /// The last attempt's exit code, if it exited.
    pub exit_code: Option<i32>,
    /// The signal that ended the last attempt, if one did.
    pub signal: Option<i32>,
    /// How many attempts it took.
    pub attempts: Option<u32>,
}

/// An operator's request, as `status` shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RequestView {
    /// Its id.
    pub id: String,
    /// `trigger`, `backfill`, `suspend` or `resume`.
    pub kind: RequestKind,
    /// Who filed it.
    pub by: String,
    /// When.
    pub requested_at: DateTime<Utc>,
    /// A backfill's range.
    pub from: Option<DateTime<Utc>>,
    /// A backfill's range.
    pub to: Option<DateTime<Utc>>,
    /// `pending` (no leader has acknowledged it), `running` (a trigger's run, a backfill's slots), or
    /// `expired` (unacknowledged past its time to live: a leader refuses it).
    pub state: String,
    /// The replica that acknowledged it.
    pub acknowledged_by: Option<String>,
    /// The fencing token of the term that acknowledged (or last advanced) it.
    pub fencing_token: Option<u64>,
    /// A backfill: the last slot dealt with.
    pub cursor: Option<DateTime<Utc>>,
    /// A backfill: slots started.
    pub started: u32,
    /// A backfill: slots skipped because they already ran.
    pub skipped: u32,
    /// A backfill: runs that did not succeed.
    pub failed: u32,
}

/// `leasecron history JOB -o json`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HistoryDocument {
    /// [`DOCUMENT_VERSION`].
    pub version: u32,
    /// The job.
    pub job: String,
    /// How many runs the run state keeps per job at most ([`HISTORY_PER_JOB`]; fewer where its
    /// ConfigMap would not hold them).
    pub kept: usize,
    /// The runs, newest first.
    pub runs: Vec<RunView>,
}

/// The current term's fencing token: the holder's, if the lease is held and not expired at `now`.
pub fn current_term(lease: Option<&LeaseRecord>, now: DateTime<Utc>) -> Option<u64> {
    let record = lease?;
    record.holder()?;
    if expired(record, now) {
        return None;
    }
    Some(u64::try_from(record.lease_transitions).unwrap_or(0))
}

/// True if the lease is held and its holder did not renew it within its duration, by `now`.
fn expired(record: &LeaseRecord, now: DateTime<Utc>) -> bool {
    match record.renew_time {
        Some(renewed) if record.holder().is_some() && record.lease_duration_seconds > 0 => {
            renewed + chrono::Duration::seconds(i64::from(record.lease_duration_seconds)) < now
        }
        _ => false,
    }
}

impl LeaseView {
    /// The lease `record` read from `store`, at `now`.
    pub fn of(store: String, record: &LeaseRecord, now: DateTime<Utc>) -> LeaseView {
        let transitions = u64::try_from(record.lease_transitions).unwrap_or(0);
        LeaseView {
            store,
            holder: record.holder().map(str::to_owned),
            fencing_token: record.holder().map(|_| transitions),
            lease_transitions: transitions,
            acquired_at: record.acquire_time,
            renewed_at: record.renew_time,
            lease_duration_seconds: record.lease_duration_seconds,
            expired: expired(record, now),
        }
    }
}

impl RunView {
    /// A history entry, `running` or `interrupted` by the current `term` if it has no outcome.
    pub fn of(entry: &HistoryEntry, term: Option<u64>, now: DateTime<Utc>) -> RunView {
        let state = match &entry.outcome {
            Some(outcome) => outcome.clone(),
            None if term == Some(entry.fencing_token) => "running".to_owned(),
            None => "interrupted".to_owned(),
        };
        let end = match (entry.finished_at, state.as_str()) {
            (Some(finished), _) => Some(finished),
            (None, "running") => Some(now),
            (None, _) => None,
        };
        RunView {
            slot: entry.slot,
            cause: entry.cause,
            request: entry.request.clone(),
            fencing_token: entry.fencing_token,
            identity: entry.identity.clone(),
            started_at: Some(entry.started_at),
            finished_at: entry.finished_at,
            duration_seconds: end.map(|end| seconds(end - entry.started_at)),
            state,
            exit_code: entry.exit_code,
            signal: entry.signal,
            attempts: entry.attempts,
        }
    }

    /// The last scheduled run of a record kept before leasecron kept a history: its last start, and the
    /// completion of that slot if there is one.
    fn of_last_started(record: &JobRecord, term: Option<u64>, now: DateTime<Utc>) -> Option<Self> {
        let started = record.last_started.as_ref()?;
        let completion = record
            .last_completion
            .as_ref()
            .filter(|completion| completion.slot == started.slot);
        let entry = HistoryEntry {
            slot: started.slot,
            cause: Cause::Schedule,
            request: None,
            fencing_token: started.fencing_token,
            identity: started.identity.clone(),
            started_at: started.started_at,
            finished_at: completion.map(|c| c.finished_at),
            outcome: completion.map(|c| c.outcome.clone()),
            exit_code: None,
            signal: None,
            attempts: None,
        };
        Some(RunView::of(&entry, term, now))
    }

    fn is_running(&self) -> bool {
        self.state == "running"
    }
}

fn seconds(duration: chrono::Duration) -> f64 {
    duration.to_std().unwrap_or_default().as_secs_f64()
}

/// One job's status from the run state `record`, the `controls` and the current `term`, at `now`.
pub fn job_view(
    job: &Job,
    record: &StateRecord,
    controls: &Controls,
    term: Option<u64>,
    now: DateTime<Utc>,
) -> JobView {
    let recorded = record.jobs.get(&job.name);
    let runs: Vec<RunView> = recorded
        .map(|r| {
            r.history
                .iter()
                .map(|e| RunView::of(e, term, now))
                .collect()
        })
        .unwrap_or_default();
    let last_run = runs
        .iter()
        .rev()
        .find(|run| !run.is_running())
        .cloned()
        .or_else(|| {
            recorded
                .filter(|r| r.history.is_empty())
                .and_then(|r| RunView::of_last_started(r, term, now))
        });
    let suspension = controls.suspension(&job.name).cloned();
    JobView {
        name: job.name.clone(),
        schedule: job.schedule.expression().to_owned(),
        zone: job.schedule.zone().to_string(),
        suspended: job.suspend || suspension.is_some(),
        suspended_in_file: job.suspend,
        suspension,
        running: runs.into_iter().filter(RunView::is_running).collect(),
        last_run,
        next_slot: job.schedule.next_after(now),
        requests: requests_of(&job.name, record, controls, now),
    }
}

/// The requests for `job` that are not done.
fn requests_of(
    job: &str,
    record: &StateRecord,
    controls: &Controls,
    now: DateTime<Utc>,
) -> Vec<RequestView> {
    controls
        .requests
        .iter()
        .filter(|request| request.job == job)
        .filter_map(|request| {
            let ack = record.requests.get(&request.id);
            let state = match ack.map(|ack| ack.state) {
                Some(RequestState::Done | RequestState::Refused) => return None,
                Some(RequestState::Running) => "running",
                None if run_state::is_expired(request.requested_at, now) => "expired",
                None => "pending",
            };
            Some(RequestView {
                id: request.id.clone(),
                kind: request.kind,
                by: request.by.clone(),
                requested_at: request.requested_at,
                from: request.from,
                to: request.to,
                state: state.to_owned(),
                acknowledged_by: ack.map(|ack| ack.identity.clone()),
                fencing_token: ack.map(|ack| ack.fencing_token),
                cursor: ack.and_then(|ack| ack.cursor),
                started: ack.map_or(0, |ack| ack.started),
                skipped: ack.map_or(0, |ack| ack.skipped),
                failed: ack.map_or(0, |ack| ack.failed),
            })
        })
        .collect()
}

/// `leasecron status [JOB]`.
pub async fn status(
    opened: &Opened,
    job: Option<&str>,
    format: Format,
    out: &mut dyn io::Write,
) -> Result<(), Error> {
    let jobs = opened.jobs()?;
    let selected: Vec<&Job> = match job {
        Some(name) => vec![jobs.get(name)?],
        None => jobs.set.jobs.iter().map(AsRef::as_ref).collect(),
    };
    let lease = opened.lease_record().await?;
    let record = opened.run_state().await?;
    let controls = opened.read_controls().await?;
    let now = Utc::now();
    let term = current_term(lease.as_ref(), now);
    let document = StatusDocument {
        version: DOCUMENT_VERSION,
        time: now,
        lease: lease
            .as_ref()
            .map(|lease| LeaseView::of(opened.describe_lease(), lease, now)),
        jobs_source: jobs.origin.clone(),
        jobs: selected
            .iter()
            .map(|job| job_view(job, &record, &controls, term, now))
            .collect(),
    };
    match format {
        Format::Json => say(out, &to_json(&document)?),
        Format::Text => {
            let zones: Vec<Tz> = selected.iter().map(|job| job.schedule.zone()).collect();
            say(
                out,
                render_status(&document, &opened.describe_lease(), &zones).trim_end(),
            )
        }
    }
}

/// `leasecron history JOB`: its last `limit` runs, newest first.
pub async fn history(
    opened: &Opened,
    job: &str,
    limit: usize,
    format: Format,
    out: &mut dyn io::Write,
) -> Result<(), Error> {
    let zone = match &opened.jobs {
        Some(jobs) => Some(jobs.get(job)?.schedule.zone()),
        None => None,
    };
    let lease = opened.lease_record().await?;
    let record = opened.run_state().await?;
    if zone.is_none() && !record.jobs.contains_key(job) {
        return Err(Error::NoRuns {
            job: job.to_owned(),
            store: opened.ledger.describe(),
            jobs: record.jobs.keys().cloned().collect(),
        });
    }
    let now = Utc::now();
    let term = current_term(lease.as_ref(), now);
    let runs = record.jobs.get(job).map_or_else(Vec::new, |recorded| {
        let mut runs: Vec<RunView> = recorded
            .history
            .iter()
            .rev()
            .map(|entry| RunView::of(entry, term, now))
            .collect();
        if runs.is_empty() {
            runs.extend(RunView::of_last_started(recorded, term, now));
        }
        runs.truncate(limit);
        runs
    });
    let document = HistoryDocument {
        version: DOCUMENT_VERSION,
        job: job.to_owned(),
        kept: HISTORY_PER_JOB,
        runs,
    };
    match format {
        Format::Json => say(out, &to_json(&document)?),
        Format::Text if document.runs.is_empty() => say(
            out,
            &format!(
                "no run of {job} is recorded in {}",
                opened.ledger.describe()
            ),
        ),
        Format::Text => say(
            out,
            render_history(&document, zone.unwrap_or(Tz::UTC)).trim_end(),
        ),
    }
}

fn to_json(document: &impl Serialize) -> Result<String, Error> {
    serde_json::to_string_pretty(document)
        .map_err(|e| Error::Unsuccessful(format!("internal error: {e}")))
}

/// `status` as text: the lease, the jobs' source, a table of the jobs, then a line for each suspension,
/// run and request. `zones[i]` is the zone of `document.jobs[i]`.
pub fn render_status(document: &StatusDocument, lease_name: &str, zones: &[Tz]) -> String {
    let now = document.time;
    let mut text = format!(
        "lease: {}\njobs: {}\n\n",
        describe_lease(lease_name, document.lease.as_ref(), now),
        document.jobs_source
    );
    let mut rows = vec![[
        "NAME",
        "SCHEDULE",
        "ZONE",
        "SUSPENDED",
        "RUNNING",
        "LAST RUN",
        "NEXT",
        "REQUESTS",
    ]
    .map(str::to_owned)
    .to_vec()];
    let mut details = Vec::new();
    for (job, zone) in document.jobs.iter().zip(zones.iter().copied()) {
        let suspended = match (job.suspended_in_file, job.suspension.is_some()) {
            (false, false) => "no",
            (true, false) => "file",
            (false, true) => "operator",
            (true, true) => "file,operator",
        };
        rows.push(vec![
            job.name.clone(),
            job.schedule.clone(),
            job.zone.clone(),
            suspended.to_owned(),
            job.running.len().to_string(),
            job.last_run.as_ref().map_or("-".to_owned(), |run| {
                format!("{} {}", format_time(run.slot, zone), run.state)
            }),
            job.next_slot
                .map_or("-".to_owned(), |next| format_time(next, zone)),
            job.requests.len().to_string(),
        ]);
        if let Some(suspension) = &job.suspension {
            details.push(format!(
                "{}: suspended by {} at {}{}",
                job.name,
                suspension.by,
                format_time(suspension.at, zone),
                suspension
                    .note
                    .as_ref()
                    .map(|note| format!(": {note:?}"))
                    .unwrap_or_default()
            ));
        }
        for run in &job.running {
            details.push(format!(
                "{}: running the slot {} ({}) on {}, fencing token {}, for {}",
                job.name,
                format_time(run.slot, zone),
                run.cause.as_str(),
                run.identity,
                run.fencing_token,
                run.duration_seconds
                    .map_or("-".to_owned(), |s| format_duration(from_seconds(s)))
            ));
        }
        for request in &job.requests {
            details.push(format!(
                "{}: request {}: {}",
                job.name,
                request.id,
                describe_request(request, zone)
            ));
        }
    }
    text.push_str(&table(&rows));
    if !details.is_empty() {
        text.push('\n');
        for line in details {
            text.push_str(&line);
            text.push('\n');
        }
    }
    text
}

/// The lease line of `status`.
fn describe_lease(name: &str, lease: Option<&LeaseView>, now: DateTime<Utc>) -> String {
    let Some(lease) = lease else {
        return format!("{name}: none yet (no replica has run on it)");
    };
    let Some(holder) = &lease.holder else {
        return format!(
            "{name}: free, no replica leads (the last fencing token was {})",
            lease.lease_transitions
        );
    };
    let token = lease.lease_transitions;
    let renewed = lease
        .renewed_at
        .map(|renewed| format_duration(now - renewed));
    if lease.expired {
        return format!(
            "{name}: held by {holder}, fencing token {token}, but expired: not renewed for {} (lease \
             duration {}s, by this machine's clock); its runs show as interrupted",
            renewed.unwrap_or_else(|| "-".to_owned()),
            lease.lease_duration_seconds
        );
    }
    format!(
        "{name}: held by {holder}, fencing token {token}{}{}",
        lease
            .acquired_at
            .map(|at| format!(", acquired {}", format_time(at, Tz::UTC)))
            .unwrap_or_default(),
        renewed
            .map(|ago| format!(", renewed {ago} ago"))
            .unwrap_or_default()
    )
}

/// `trigger by alice at T, pending: no leader has acknowledged it`, and the like.
fn describe_request(request: &RequestView, zone: Tz) -> String {
    let what = match (request.kind, request.from, request.to) {
        (RequestKind::Backfill, Some(from), Some(to)) => format!(
            "backfill from {} to {}",
            format_time(from, zone),
            format_time(to, zone)
        ),
        (kind, _, _) => kind.as_str().to_owned(),
    };
    let state = match request.state.as_str() {
        "pending" => "pending: no leader has acknowledged it".to_owned(),
        "expired" => {
            "expired: no leader acknowledged it in time, and none will carry it out".to_owned()
        }
        _ => {
            let by = format!(
                "on {}, fencing token {}",
                request.acknowledged_by.as_deref().unwrap_or("-"),
                request.fencing_token.unwrap_or(0)
            );
            match (request.kind, request.cursor) {
                (RequestKind::Backfill, Some(cursor)) => format!(
                    "running {by}: up to {}: {} started, {} skipped (already run), {} failed",
                    format_time(cursor, zone),
                    request.started,
                    request.skipped,
                    request.failed
                ),
                _ => format!("running {by}"),
            }
        }
    };
    format!(
        "{what} by {} at {}, {state}",
        request.by,
        format_time(request.requested_at, zone)
    )
}

/// `history` as text: a table, newest first.
pub fn render_history(document: &HistoryDocument, zone: Tz) -> String {
    let mut rows = vec![[
        "SLOT", "CAUSE", "TOKEN", "IDENTITY", "STARTED", "DURATION", "OUTCOME", "EXIT",
    ]
    .map(str::to_owned)
    .to_vec()];
    for run in &document.runs {
        let exit = match (run.exit_code, run.signal) {
            (_, Some(signal)) => format!("signal {}", signal_text(signal)),
            (Some(code), None) => code.to_string(),
            (None, None) => "-".to_owned(),
        };
        rows.push(vec![
            format_time(run.slot, zone),
            run.cause.as_str().to_owned(),
            run.fencing_token.to_string(),
            run.identity.clone(),
            run.started_at
                .map_or("-".to_owned(), |at| format_time(at, zone)),
            run.duration_seconds
                .map_or("-".to_owned(), |s| format_duration(from_seconds(s))),
            run.state.clone(),
            exit,
        ]);
    }
    table(&rows)
}

fn from_seconds(seconds: f64) -> chrono::Duration {
    chrono::Duration::from_std(std::time::Duration::from_secs_f64(seconds.max(0.0)))
        .unwrap_or(chrono::Duration::MAX)
}

/// Columns two spaces apart, each as wide as its widest cell; no trailing spaces.
fn table(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|column| {
            rows.iter()
                .filter_map(|row| row.get(column))
                .map(|cell| cell.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut text = String::new();
    for row in rows {
        let mut line = String::new();
        for (column, cell) in row.iter().enumerate() {
            if column > 0 {
                line.push_str("  ");
            }
            line.push_str(cell);
            let pad = widths[column].saturating_sub(cell.chars().count());
            line.extend(std::iter::repeat_n(' ', pad));
        }
        text.push_str(line.trim_end());
        text.push('\n');
    }
    text
}
