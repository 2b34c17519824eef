//! `trigger`, `suspend`, `resume` and `backfill`: each files one request in the controls with a
//! read-modify-write ([`controls::update`]), dropping the requests that need no more attention on the way;
//! `suspend` and `resume` also set or remove the job's suspension in the same write. With `--wait`, a
//! trigger or a backfill is followed in the run state until the leader's acknowledgement
//! ([`RequestAck`]) says it is done or refused.

use std::io;
use std::time::Duration;

use chrono::{DateTime, LocalResult, NaiveDateTime, TimeZone as _, Utc};
use chrono_tz::Tz;

use super::{format_duration, format_time, say, Error, Opened};
use crate::config::Job;
use crate::controls::{self, Controls, Request, Suspension, UpdateError};
use crate::lease_store::LeaseRecord;
use crate::run_state::{
    HistoryEntry, RequestAck, RequestKind, RequestState, StateRecord, MAX_BACKFILL_SLOTS,
    REQUEST_TTL,
};
use crate::schedule::Schedule;

/// How often `--wait` reads the run state at first: a trigger's run is often over within seconds.
pub const POLL_INTERVAL: Duration = Duration::from_millis(250);
/// How often `--wait` reads the run state after [`FAST_POLLS`] reads: the run state of many jobs is a large
/// object to GET four times a second for as long as a run lasts.
pub const SLOW_POLL_INTERVAL: Duration = Duration::from_secs(1);
/// How many reads `--wait` makes every [`POLL_INTERVAL`] (the first 5 s).
pub const FAST_POLLS: u32 = 20;
/// How far `backfill` counts a range's slots before it stops and says "more than".
pub const MAX_COUNTED_SLOTS: u64 = 100_000;

/// A request as filed.
#[derive(Debug, Clone)]
pub struct Filed {
    /// The request.
    pub request: Request,
    /// The store it was filed in.
    pub store: String,
}

/// Files a request of `kind` for `job` (with `from`, `to` and `note` as a backfill or a suspension
/// has them). `change` sees the document first and may refuse (an error), or say that the request is
/// not needed (`false`: the document is written as `change` left it, without the request).
async fn file(
    opened: &Opened,
    kind: RequestKind,
    job: &str,
    range: Option<(DateTime<Utc>, DateTime<Utc>)>,
    note: Option<String>,
    mut change: impl FnMut(&mut Controls, &Request) -> Result<bool, Error>,
) -> Result<Option<Filed>, Error> {
    // Acknowledged requests are dropped as the request is filed: the run state says which.
    let record = opened.run_state().await?;
    let by = opened.who().await;
    let now = Utc::now();
    let request = Request {
        id: controls::new_request_id(now),
        kind,
        job: job.to_owned(),
        by,
        requested_at: now,
        from: range.map(|(from, _)| from),
        to: range.map(|(_, to)| to),
        note,
    };
    request.check().map_err(Error::BadRange)?;
    let store = opened.controls.describe();
    let mut filed = false;
    controls::update(opened.controls.as_ref(), |controls| {
        controls.prune(&record, now);
        filed = change(controls, &request)?;
        if filed {
            controls::check_capacity(controls)
                .map_err(|why| Error::Busy(format!("{store}: {why}")))?;
            controls.requests.push(request.clone());
        }
        Ok::<(), Error>(())
    })
    .await
    .map_err(|error| match error {
        UpdateError::Store(e) => Error::Controls(e),
        UpdateError::Refused(e) => e,
        UpdateError::Contended { .. } => Error::Busy(error.to_string()),
    })?;
    Ok(filed.then_some(Filed { request, store }))
}

/// `leasecron trigger JOB [--wait]`: files a request to run JOB once now, outside its schedule; with
/// `wait`, follows it until it is done (exit 0 only if the run succeeded) or the limit passes.
pub async fn trigger(
    opened: &Opened,
    job: &str,
    wait: Option<Duration>,
    out: &mut dyn io::Write,
) -> Result<(), Error> {
    let zone = opened.jobs()?.get(job)?.schedule.zone();
    let filed = file(opened, RequestKind::Trigger, job, None, None, |_, _| {
        Ok(true)
    })
    .await?
    .ok_or_else(|| Error::Unsuccessful("internal error: the request was not filed".into()))?;
    say(out, &filed_line(&filed, &format!("trigger {job}")))?;
    match wait {
        Some(limit) => follow(opened, &filed, zone, limit, out).await,
        None => say(
            out,
            &format!(
                "the leader runs {job} once when it reads the request (a request no leader acknowledges \
                 within {} expires); `leasecron status {job}{}` shows it",
                format_duration(chrono_duration(REQUEST_TTL)),
                flags_suffix(opened)
            ),
        ),
    }
}

/// `leasecron suspend JOB [--note TEXT]`: JOB's fires start nothing until `resume`. A job already
/// suspended by an operator gets the new note, if one is given.
pub async fn suspend(
    opened: &Opened,
    job: &str,
    note: Option<String>,
    out: &mut dyn io::Write,
) -> Result<(), Error> {
    let jobs = opened.jobs()?;
    let in_file = jobs.get(job)?.suspend;
    let note = note.filter(|note| !note.is_empty());
    if let Some(note) = &note {
        if note.len() > controls::MAX_NOTE_BYTES {
            return Err(Error::NoteTooLong { bytes: note.len() });
        }
    }
    let mut previous: Option<Suspension> = None;
    let filed = file(
        opened,
        RequestKind::Suspend,
        job,
        None,
        note.clone(),
        |controls, request| {
            previous = controls.suspended.get(job).cloned();
            match controls.suspended.get_mut(job) {
                Some(suspension) => {
                    if note.is_some() {
                        suspension.note.clone_from(&note);
                    }
                    Ok(false)
                }
                None => {
                    controls.suspended.insert(
                        job.to_owned(),
                        Suspension {
                            note: note.clone(),
                            by: request.by.clone(),
                            at: request.requested_at,
                            request: request.id.clone(),
                        },
                    );
                    Ok(true)
                }
            }
        },
    )
    .await?;
    let zone = jobs.get(job)?.schedule.zone();
    match (filed, previous) {
        (Some(filed), _) => {
            say(out, &filed_line(&filed, &format!("suspend {job}")))?;
            say(
                out,
                &format!(
                    "{job} is suspended: its fires start nothing until `leasecron resume {job}{}`; a run in \
                     flight goes on",
                    flags_suffix(opened)
                ),
            )?;
            if in_file {
                say(
                    out,
                    &format!(
                        "(the jobs file {} suspends it too: suspend: true)",
                        jobs.origin
                    ),
                )?;
            }
            Ok(())
        }
        (None, Some(previous)) => {
            let was = describe_suspension(&previous, zone);
            let line = match (&note, &previous.note) {
                (None, _) => format!("{job} is already suspended ({was}); nothing changed"),
                (Some(new), Some(old)) if new == old => {
                    format!("{job} is already suspended ({was}); nothing changed")
                }
                (Some(new), _) => {
                    format!("{job} is already suspended ({was}); its note is now {new:?}")
                }
            };
            say(out, &line)
        }
        (None, None) => Err(Error::Unsuccessful(
            "internal error: the suspension was not filed".into(),
        )),
    }
}

/// `leasecron resume JOB`: removes an operator's suspension of JOB, and says how to run the slots missed
/// meanwhile (they are not run otherwise).
pub async fn resume(opened: &Opened, job: &str, out: &mut dyn io::Write) -> Result<(), Error> {
    // The job in the jobs, if they were read (a job no longer there may still be resumed).
    let configured = opened
        .jobs
        .as_ref()
        .map(|jobs| (jobs, jobs.set.get(job).map(AsRef::as_ref)));
    let mut removed: Option<Suspension> = None;
    let filed = file(
        opened,
        RequestKind::Resume,
        job,
        None,
        None,
        |controls, _| match controls.suspended.remove(job) {
            Some(suspension) => {
                removed = Some(suspension);
                Ok(true)
            }
            None => Err(not_suspended(job, configured)),
        },
    )
    .await?
    .ok_or_else(|| Error::Unsuccessful("internal error: the request was not filed".into()))?;
    let Some(suspension) = removed else {
        return Err(Error::Unsuccessful(
            "internal error: no suspension was removed".into(),
        ));
    };
    let job_config = configured.and_then(|(_, job)| job);
    let zone = job_config.map_or(Tz::UTC, |job| job.schedule.zone());
    say(out, &filed_line(&filed, &format!("resume {job}")))?;
    say(
        out,
        &format!(
            "{job} is resumed; it was suspended {}",
            describe_suspension(&suspension, zone)
        ),
    )?;
    let now = filed.request.requested_at;
    for line in missed_slots_advice(
        job,
        job_config.map(|job| &job.schedule),
        suspension.at,
        now,
        &opened.flags,
    ) {
        say(out, &line)?;
    }
    if let Some((jobs, Some(job_config))) = configured {
        if job_config.suspend {
            say(
                out,
                &format!(
                    "the jobs file {} still suspends {job} (suspend: true): its fires start nothing until \
                     the file says otherwise",
                    jobs.origin
                ),
            )?;
        }
    }
    Ok(())
}

/// Why `resume JOB` refuses: JOB is unknown, or suspended by the file, or not suspended.
fn not_suspended(job: &str, configured: Option<(&super::Jobs, Option<&Job>)>) -> Error {
    match configured {
        Some((jobs, None)) => jobs.get(job).err().unwrap_or_else(|| {
            Error::NotSuspended(format!("{job} is not suspended"))
        }),
        Some((jobs, Some(config))) if config.suspend => Error::NotSuspended(format!(
            "{job} is not suspended by an operator: the jobs file {} suspends it (suspend: true), and \
             resume cannot override the file; remove suspend: true there (the replicas reload it)",
            jobs.origin
        )),
        _ => Error::NotSuspended(format!(
            "{job} is not suspended: no operator suspended it, so there is nothing to resume"
        )),
    }
}

/// What `resume` says about the slots that fell due from `since` to `now`: none, or how many and the
/// exact `backfill` command that runs them.
pub fn missed_slots_advice(
    job: &str,
    schedule: Option<&Schedule>,
    since: DateTime<Utc>,
    now: DateTime<Utc>,
    flags: &str,
) -> Vec<String> {
    // The range in whole seconds, inside the suspension: slots are whole seconds.
    let from = ceil_to_second(since);
    let to = floor_to_second(now);
    let command = format!(
        "  leasecron backfill {job} --from {} --to {}{}",
        from.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        to.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        if flags.is_empty() {
            String::new()
        } else {
            format!(" {flags}")
        }
    );
    let Some(schedule) = schedule else {
        return vec![
            "the slots that fell due while it was suspended are not run; to run them:".to_owned(),
            command,
        ];
    };
    let count = count_slots(schedule, from, to, MAX_COUNTED_SLOTS);
    match count.count {
        0 => vec!["no slot fell due while it was suspended".to_owned()],
        n if n > MAX_BACKFILL_SLOTS => vec![
            format!(
                "the {} slots that fell due while it was suspended are not run; a backfill runs at most \
                 {MAX_BACKFILL_SLOTS}: split the range of this command to run them:",
                count.describe()
            ),
            command,
        ],
        n => vec![
            format!(
                "the {n} slot{} that fell due while it was suspended {} not run; to run {}:",
                if n == 1 { "" } else { "s" },
                if n == 1 { "is" } else { "are" },
                if n == 1 { "it" } else { "them" }
            ),
            command,
        ],
    }
}

/// `leasecron backfill JOB --from T --to T`: files a request to run JOB's slots in [from, to], which
/// must have passed, be at least one and at most [`MAX_BACKFILL_SLOTS`]; with `wait`, follows it.
pub async fn backfill(
    opened: &Opened,
    job: &str,
    from: &str,
    to: &str,
    wait: Option<Duration>,
    out: &mut dyn io::Write,
) -> Result<(), Error> {
    let config = opened.jobs()?.get(job)?;
    let zone = config.schedule.zone();
    let from = parse_time(from, zone).map_err(|why| Error::BadTime {
        flag: "--from",
        value: from.to_owned(),
        why,
    })?;
    let to = parse_time(to, zone).map_err(|why| Error::BadTime {
        flag: "--to",
        value: to.to_owned(),
        why,
    })?;
    let slots = check_range(config, from, to, Utc::now())?;
    let filed = file(
        opened,
        RequestKind::Backfill,
        job,
        Some((from, to)),
        None,
        |_, _| Ok(true),
    )
    .await?
    .ok_or_else(|| Error::Unsuccessful("internal error: the request was not filed".into()))?;
    say(
        out,
        &filed_line(
            &filed,
            &format!(
                "backfill {job}, {} slot{} from {} to {}",
                slots.count,
                if slots.count == 1 { "" } else { "s" },
                format_time(slots.first.unwrap_or(from), zone),
                format_time(slots.last.unwrap_or(to), zone)
            ),
        ),
    )?;
    match wait {
        Some(limit) => follow(opened, &filed, zone, limit, out).await,
        None => say(
            out,
            &format!(
                "the leader runs them one after the other, skipping the slots that already ran; \
                 `leasecron status {job}{}` shows how far it got",
                flags_suffix(opened)
            ),
        ),
    }
}

/// The slots of a schedule in a range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotCount {
    /// How many (up to the limit counted).
    pub count: u64,
    /// True if counting stopped at the limit: there are more.
    pub truncated: bool,
    /// The first slot in the range.
    pub first: Option<DateTime<Utc>>,
    /// The last slot counted.
    pub last: Option<DateTime<Utc>>,
    /// The [`MAX_BACKFILL_SLOTS`]th slot, if there are that many: where a first backfill would end.
    pub at_limit: Option<DateTime<Utc>>,
}

impl SlotCount {
    /// `24`, or `more than 100000`.
    pub fn describe(&self) -> String {
        if self.truncated {
            format!("more than {}", self.count)
        } else {
            self.count.to_string()
        }
    }
}

/// The slots of `schedule` in [from, to], counted up to `limit`.
pub fn count_slots(
    schedule: &Schedule,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    limit: u64,
) -> SlotCount {
    let mut count = SlotCount {
        count: 0,
        truncated: false,
        first: None,
        last: None,
        at_limit: None,
    };
    for slot in schedule.slots_in(from, to) {
        if count.count == limit {
            count.truncated = true;
            break;
        }
        count.count += 1;
        count.first.get_or_insert(slot);
        count.last = Some(slot);
        if count.count == MAX_BACKFILL_SLOTS {
            count.at_limit = Some(slot);
        }
    }
    count
}

/// Checks a backfill's range against `job`'s schedule at `now`: it must be in order, have passed, and
/// hold 1 to [`MAX_BACKFILL_SLOTS`] slots. Returns its slots.
pub fn check_range(
    job: &Job,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<SlotCount, Error> {
    let zone = job.schedule.zone();
    let name = &job.name;
    if from > to {
        return Err(Error::BadRange(format!(
            "--from {} is after --to {}: the range is empty",
            format_time(from, zone),
            format_time(to, zone)
        )));
    }
    if to > now {
        return Err(Error::BadRange(format!(
            "--to {} is in the future (it is {} now): a backfill runs slots that have passed; `leasecron \
             trigger {name}` runs the job now",
            format_time(to, zone),
            format_time(now, zone)
        )));
    }
    let slots = count_slots(&job.schedule, from, to, MAX_COUNTED_SLOTS);
    let range = format!(
        "from {} to {}",
        format_time(from, zone),
        format_time(to, zone)
    );
    let schedule = format!("\"{}\" in {zone}", job.schedule.expression());
    if slots.count == 0 {
        return Err(Error::BadRange(format!(
            "0 slots of {name} ({schedule}) fall {range}: nothing to backfill"
        )));
    }
    if slots.count > MAX_BACKFILL_SLOTS {
        let split = slots
            .at_limit
            .map(|at| {
                format!(
                    " (the first {MAX_BACKFILL_SLOTS} end at {})",
                    format_time(at, zone)
                )
            })
            .unwrap_or_default();
        return Err(Error::BadRange(format!(
            "{} slots of {name} ({schedule}) fall {range}; a backfill runs at most {MAX_BACKFILL_SLOTS}: \
             split the range{split}",
            slots.describe()
        )));
    }
    Ok(slots)
}

/// Parses `--from` or `--to`: RFC 3339 (`2026-11-21T03:00:00Z`, `2026-11-21T03:00:00+01:00`), or a date
/// and time without an offset (`2026-11-21T03:00`, `2026-11-21 03:00:00`), read in the job's zone.
pub fn parse_time(text: &str, zone: Tz) -> Result<DateTime<Utc>, String> {
    let text = text.trim();
    if let Ok(at) = DateTime::parse_from_rfc3339(text) {
        return Ok(at.with_timezone(&Utc));
    }
    const LOCAL_FORMATS: [&str; 4] = [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%d %H:%M",
    ];
    let Some(local) = LOCAL_FORMATS
        .iter()
        .find_map(|format| NaiveDateTime::parse_from_str(text, format).ok())
    else {
        return Err(format!(
            "not a time: write RFC 3339 (2026-11-21T03:00:00Z, 2026-11-21T03:00:00+01:00), or a date and \
             time in the job's zone {zone} (2026-11-21T03:00)"
        ));
    };
    match zone.from_local_datetime(&local) {
        LocalResult::Single(at) => Ok(at.with_timezone(&Utc)),
        LocalResult::Ambiguous(early, late) => Err(format!(
            "is ambiguous in {zone}, whose clocks go back then: it is {} or {}; write the one you mean",
            early.to_rfc3339(),
            late.to_rfc3339()
        )),
        LocalResult::None => Err(format!(
            "does not exist in {zone}, whose clocks go forward then; write a time with its offset"
        )),
    }
}

/// Follows a filed request in the run state until its acknowledgement says it is done or refused, or
/// `limit` passes.
async fn follow(
    opened: &Opened,
    filed: &Filed,
    zone: Tz,
    limit: Duration,
    out: &mut dyn io::Write,
) -> Result<(), Error> {
    let request = &filed.request;
    let id = &request.id;
    let deadline = tokio::time::Instant::now() + limit;
    let lease = opened.lease_record().await.ok().flatten();
    say(
        out,
        &format!(
            "waiting up to {} for the leader to carry it out ({})",
            humantime::format_duration(limit),
            describe_holder(lease.as_ref())
        ),
    )?;
    let mut seen: Option<RequestAck> = None;
    let mut polls = 0u32;
    loop {
        polls = polls.saturating_add(1);
        let last_error = match opened.ledger.refresh().await {
            Ok(record) => {
                if let Some(ack) = record.requests.get(id) {
                    report_progress(seen.as_ref(), ack, request, zone, out)?;
                    match ack.state {
                        RequestState::Running => seen = Some(ack.clone()),
                        RequestState::Done => {
                            return report_done(opened, request, ack, &record, zone, out)
                        }
                        RequestState::Refused => {
                            let why = ack.detail.as_deref().unwrap_or("no reason given");
                            say(
                                out,
                                &format!(
                                    "refused by {} (fencing token {}): {why}",
                                    ack.identity, ack.fencing_token
                                ),
                            )?;
                            return Err(Error::Unsuccessful(format!(
                                "request {id} ({} {}) was refused by {} (fencing token {}): {why}",
                                request.kind.as_str(),
                                request.job,
                                ack.identity,
                                ack.fencing_token
                            )));
                        }
                    }
                }
                None
            }
            Err(error) => Some(Error::State(error)),
        };
        let now = tokio::time::Instant::now();
        if now >= deadline {
            let lease = opened.lease_record().await.ok().flatten();
            return Err(timed_out(
                filed,
                seen.as_ref(),
                lease.as_ref(),
                last_error,
                limit,
                zone,
                &opened.flags,
            ));
        }
        let interval = if polls < FAST_POLLS {
            POLL_INTERVAL
        } else {
            SLOW_POLL_INTERVAL
        };
        tokio::time::sleep(interval.min(deadline - now)).await;
    }
}

/// Prints what changed in the acknowledgement since `seen`.
fn report_progress(
    seen: Option<&RequestAck>,
    ack: &RequestAck,
    request: &Request,
    zone: Tz,
    out: &mut dyn io::Write,
) -> Result<(), Error> {
    // A request done (or refused) when first seen: its outcome says who.
    if seen.is_none() && ack.state == RequestState::Running {
        say(
            out,
            &format!(
                "acknowledged by {} (fencing token {}) at {}",
                ack.identity,
                ack.fencing_token,
                format_time(ack.updated_at, zone)
            ),
        )?;
    }
    if ack.state != RequestState::Running {
        return Ok(());
    }
    match request.kind {
        RequestKind::Trigger if seen.is_none() => {
            let started = ack.slot.unwrap_or(ack.updated_at);
            say(
                out,
                &format!(
                    "running: started at {} on {}",
                    format_time(started, zone),
                    ack.identity
                ),
            )
        }
        RequestKind::Backfill => {
            let progress = |ack: &RequestAck| (ack.cursor, ack.started, ack.skipped, ack.failed);
            if seen.map(progress) == Some(progress(ack)) || ack.cursor.is_none() {
                return Ok(());
            }
            say(
                out,
                &format!(
                    "progress: up to {}: {}",
                    ack.cursor
                        .map_or("-".to_owned(), |at| format_time(at, zone)),
                    backfill_counts(ack)
                ),
            )
        }
        _ => Ok(()),
    }
}

/// `3 started, 1 skipped (already run), 0 failed`.
fn backfill_counts(ack: &RequestAck) -> String {
    format!(
        "{} started, {} skipped (already run), {} failed",
        ack.started, ack.skipped, ack.failed
    )
}

/// Prints how a request ended; an error if it did not succeed.
fn report_done(
    opened: &Opened,
    request: &Request,
    ack: &RequestAck,
    record: &StateRecord,
    zone: Tz,
    out: &mut dyn io::Write,
) -> Result<(), Error> {
    let id = &request.id;
    let job = &request.job;
    match request.kind {
        RequestKind::Trigger => {
            let run = record.jobs.get(job).and_then(|record| {
                record
                    .history
                    .iter()
                    .rev()
                    .find(|entry| entry.request.as_deref() == Some(id))
            });
            let outcome = run
                .and_then(|run| run.outcome.clone())
                .or_else(|| ack.outcome.clone())
                .unwrap_or_else(|| "done".to_owned());
            let (identity, token) = run.map_or((&ack.identity, ack.fencing_token), |run| {
                (&run.identity, run.fencing_token)
            });
            let started = run
                .map(|run| run.started_at)
                .or(ack.slot)
                .unwrap_or(ack.updated_at);
            let finished = run
                .and_then(|run| run.finished_at)
                .unwrap_or(ack.updated_at);
            let how = run.and_then(exit_text);
            say(
                out,
                &format!(
                    "{outcome}: the run on {identity} (fencing token {token}) started at {} and took {}{}",
                    format_time(started, zone),
                    format_duration(finished - started),
                    how.as_deref()
                        .map(|how| format!(", {how}"))
                        .unwrap_or_default()
                ),
            )?;
            say(
                out,
                &format!(
                    "output: {}",
                    opened.output_hint(identity, job, token, started, run.map(|run| run.slot))
                ),
            )?;
            if outcome == "succeeded" {
                Ok(())
            } else {
                Err(Error::Unsuccessful(format!(
                    "request {id}: the run of {job} {}{}",
                    outcome.replace('_', " "),
                    how.map(|how| format!(" ({how})")).unwrap_or_default()
                )))
            }
        }
        _ => {
            say(out, &format!("done: {}", backfill_counts(ack)))?;
            if let Some(detail) = &ack.detail {
                say(out, &format!("  {detail}"))?;
            }
            let since = request.requested_at;
            say(
                out,
                &format!(
                    "output: {}",
                    opened.output_hint(&ack.identity, job, ack.fencing_token, since, None)
                ),
            )?;
            if ack.failed == 0 {
                Ok(())
            } else {
                Err(Error::Unsuccessful(format!(
                    "request {id}: {} of the backfill's runs of {job} did not succeed",
                    ack.failed
                )))
            }
        }
    }
}

/// `exit code 3`, `killed by signal 9 (SIGKILL)`, if the run says.
pub fn exit_text(run: &HistoryEntry) -> Option<String> {
    match (run.exit_code, run.signal) {
        (_, Some(signal)) => Some(format!("killed by signal {}", signal_text(signal))),
        (Some(code), None) => Some(format!("exit code {code}")),
        (None, None) => None,
    }
}

/// `9 (SIGKILL)`, or the number alone if it names no signal.
pub fn signal_text(signal: i32) -> String {
    match nix::sys::signal::Signal::try_from(signal) {
        Ok(name) => format!("{signal} ({})", name.as_str()),
        Err(_) => signal.to_string(),
    }
}

/// Why `--wait` gave up: no acknowledgement (the request stays filed until it expires), or a request
/// still running.
fn timed_out(
    filed: &Filed,
    seen: Option<&RequestAck>,
    lease: Option<&LeaseRecord>,
    last_error: Option<Error>,
    limit: Duration,
    zone: Tz,
    flags: &str,
) -> Error {
    let request = &filed.request;
    let waited = humantime::format_duration(limit);
    let error = last_error
        .map(|e| format!(" (the last read of the run state failed: {e})"))
        .unwrap_or_default();
    match seen {
        None => {
            let expires = request.requested_at + chrono_duration(REQUEST_TTL);
            Error::Unsuccessful(format!(
                "request {}: no leader acknowledged it within {waited} ({}){error}; it stays filed until \
                 {}, {} after it was filed: a leader that reads it before then carries it out, a later \
                 one refuses it as expired",
                request.id,
                describe_holder(lease),
                format_time(expires, zone),
                format_duration(chrono_duration(REQUEST_TTL))
            ))
        }
        Some(ack) => Error::Unsuccessful(format!(
            "request {}: still running after {waited} (on {}, fencing token {}){error}; it goes on: \
             `leasecron status {}{}` shows it",
            request.id,
            ack.identity,
            ack.fencing_token,
            request.job,
            if flags.is_empty() {
                String::new()
            } else {
                format!(" {flags}")
            }
        )),
    }
}

/// Who holds the lease, for the messages of `--wait`.
fn describe_holder(lease: Option<&LeaseRecord>) -> String {
    match lease {
        None => "no replica has created the lease yet".to_owned(),
        Some(record) => match record.holder() {
            Some(holder) => format!(
                "{holder} holds the lease, fencing token {}",
                record.lease_transitions
            ),
            None => "no replica holds the lease".to_owned(),
        },
    }
}

/// `by alice at 2026-11-21T09:00:00Z: "db migration"`.
fn describe_suspension(suspension: &Suspension, zone: Tz) -> String {
    let note = suspension
        .note
        .as_ref()
        .map(|note| format!(": {note:?}"))
        .unwrap_or_default();
    format!(
        "by {} at {}{note}",
        suspension.by,
        format_time(suspension.at, zone)
    )
}

/// `request ID: WHAT, filed by WHO in STORE`.
fn filed_line(filed: &Filed, what: &str) -> String {
    format!(
        "request {}: {what}, filed by {} in {}",
        filed.request.id, filed.request.by, filed.store
    )
}

/// ` FLAGS`, or nothing when they are the defaults.
fn flags_suffix(opened: &Opened) -> String {
    if opened.flags.is_empty() {
        String::new()
    } else {
        format!(" {}", opened.flags)
    }
}

fn chrono_duration(duration: Duration) -> chrono::Duration {
    chrono::Duration::from_std(duration).unwrap_or(chrono::Duration::MAX)
}

fn ceil_to_second(at: DateTime<Utc>) -> DateTime<Utc> {
    let floor = floor_to_second(at);
    if floor == at {
        at
    } else {
        floor + chrono::Duration::seconds(1)
    }
}

fn floor_to_second(at: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp(at.timestamp(), 0).unwrap_or(at)
}
