//! The status page at `/`: the [`Status`] that `/status` serves, as one read-only HTML page for a person.
//!
//! Rendered here, on the server, from the same snapshot type as `/status`, so the two never disagree on
//! what they show. The page is self-contained: inline CSS, no script, no image, font or style sheet from
//! anywhere, and a [`CONTENT_SECURITY_POLICY`] that forbids them all — a note that escaped its escaping
//! still could not run anything. It reloads itself every [`REFRESH_SECONDS`] with a `<meta>` refresh,
//! and says so.
//!
//! Everything that comes from outside leasecron's own code is escaped ([`Escaped`]): job names are DNS
//! labels, but schedules, zones, identities, the holder, notes, who suspended a job, outcomes read back
//! from the run state, errors and the rejected reload's message are free text.
//!
//! Size: a job is one table row, and its strip of recent runs shows at most [`STRIP_RUNS`] of the up to
//! [`HISTORY_PER_JOB`](crate::run_state::HISTORY_PER_JOB) runs the run state keeps (`/status` has them
//! all). With 10 000 jobs, each with a full history, the page is 10.6 MiB (1.1 KiB a job) and renders in
//! about 0.1 s optimized (`tests/slow/scale.rs` prints the figures); the endpoint renders it off the
//! runtime's workers, as it encodes `/metrics`.

use std::fmt::{self, Write as _};

use chrono::{DateTime, Datelike, Timelike, Utc};

use super::{JobStatus, LastRun, RunSource, Status};
use crate::run_state::{Cause, HistoryEntry};

/// The content type of `/`.
pub const CONTENT_TYPE: &str = "text/html; charset=utf-8";

/// The `Content-Security-Policy` of `/`: inline CSS and the empty `data:` favicon, nothing else (no
/// script, no request to any origin, no form, no framing).
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; style-src 'unsafe-inline'; \
     img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// How often the page reloads itself.
pub const REFRESH_SECONDS: u32 = 10;

/// How many of a job's last runs its strip shows (the run state keeps up to
/// [`HISTORY_PER_JOB`](crate::run_state::HISTORY_PER_JOB)).
pub const STRIP_RUNS: usize = 10;

/// How many jobs whose last run did not succeed the summary links to.
const NOT_SUCCEEDED_LINKS: usize = 20;

/// The page's style: light and dark, a table on a wide screen, one card per job on a phone.
const STYLE: &str = "\
:root{color-scheme:light dark;--bg:#fff;--fg:#1b1b1b;--mute:#5f6368;--line:#e0e0e0;--card:#f6f7f9;\
--ok:#2e7d32;--fail:#c62828;--tmo:#e65100;--cxl:#757575;--run:#1565c0;--sus:#6a1b9a}\
@media(prefers-color-scheme:dark){:root{--bg:#121212;--fg:#e8e8e8;--mute:#a0a0a0;--line:#333;\
--card:#1c1c1e;--ok:#66bb6a;--fail:#ef5350;--tmo:#ffa726;--cxl:#9e9e9e;--run:#42a5f5;--sus:#ce93d8}}\
*{box-sizing:border-box}\
body{margin:0;padding:12px 16px;background:var(--bg);color:var(--fg);font:14px/1.45 system-ui,sans-serif}\
h1{font-size:20px;margin:0 0 2px}h1 small{font-weight:normal}\
small,.mute,th,dt{color:var(--mute)}\
code,pre{font:12.5px ui-monospace,SFMono-Regular,Menlo,monospace}\
pre{white-space:pre-wrap;overflow-wrap:anywhere;margin:2px 0;padding:6px 8px;background:var(--card);\
border-left:3px solid var(--fail)}\
dl{display:grid;grid-template-columns:max-content minmax(0,1fr);gap:2px 14px;margin:10px 0}\
dd{margin:0;overflow-wrap:anywhere}\
.sum{margin:10px 0;padding:8px 10px;background:var(--card);border-radius:6px}\
.sum a{color:inherit}\
table{border-collapse:collapse;width:100%}\
th{text-align:left;font-size:12px;font-weight:600;padding:4px 8px;border-bottom:2px solid var(--line)}\
td{vertical-align:top;padding:6px 8px;border-bottom:1px solid var(--line);overflow-wrap:anywhere}\
td.n{font-weight:600;white-space:nowrap;border-left:4px solid transparent}\
tr.failed td.n,tr.timed_out td.n{border-left-color:var(--fail)}\
tr.suspended td.n{border-left-color:var(--sus)}\
.b{display:inline-block;padding:0 7px;border-radius:9px;color:#fff;font-size:12px;font-weight:600;\
white-space:nowrap}\
.succeeded{--c:var(--ok)}.failed{--c:var(--fail)}.timed_out{--c:var(--tmo)}.cancelled{--c:var(--cxl)}\
.running{--c:var(--run)}.suspended{--c:var(--sus)}.interrupted,.unknown{--c:var(--cxl)}\
.b{background:var(--c)}\
.note{margin:2px 0;font-style:italic;overflow-wrap:anywhere}\
.s{display:flex;gap:2px;align-items:flex-end;height:18px}\
.s i{display:block;width:10px;height:18px;border-radius:2px;background:var(--c)}\
.s i.succeeded{height:11px}.s i.cancelled{height:14px}\
.s i.interrupted{background:none;border:1px dashed var(--c)}\
.s i.running{background:repeating-linear-gradient(45deg,var(--c) 0 3px,transparent 3px 5px)}\
footer{margin-top:14px;font-size:12.5px;color:var(--mute)}\
footer .s{display:inline-flex;vertical-align:middle}\
@media(max-width:700px){body{padding:10px}thead{display:none}table,tbody,tr,td{display:block}\
tr{margin:0 0 10px;border:1px solid var(--line);border-radius:6px;background:var(--card)}\
td{border:0;padding:3px 10px}td.n{padding-top:6px;white-space:normal;border-left:0;border-top:4px solid transparent;\
border-radius:6px 6px 0 0}tr.failed td.n,tr.timed_out td.n{border-top-color:var(--fail)}\
tr.suspended td.n{border-top-color:var(--sus)}\
td.sc::before{content:'schedule '}td.st::before{content:'state '}td.lr::before{content:'last run '}\
td.nx::before{content:'next run '}td.h::before{content:'last runs '}\
td::before{color:var(--mute);font-size:12px}td.h{display:flex;gap:8px;align-items:center;\
padding-bottom:8px}}";

/// Renders `status` as the page, with times relative to `now` (the moment of the snapshot).
pub fn render(status: &Status, now: DateTime<Utc>) -> String {
    // About 1.1 KiB per job with a full strip: reserve it once rather than grow a large page by doubling.
    let mut out = String::with_capacity(8 * 1024 + status.jobs.len() * 1152);
    // Writing to a String cannot fail.
    let _ = Page { status, now }.write(&mut out);
    out
}

/// `text`, HTML-escaped when displayed: in text and in quoted attribute values alike.
#[derive(Debug, Clone, Copy)]
pub struct Escaped<'a>(pub &'a str);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rest = self.0;
        while let Some(at) = rest.find(['&', '<', '>', '"', '\'']) {
            f.write_str(&rest[..at])?;
            f.write_str(match rest.as_bytes()[at] {
                b'&' => "&amp;",
                b'<' => "&lt;",
                b'>' => "&gt;",
                b'"' => "&quot;",
                _ => "&#39;",
            })?;
            rest = &rest[at + 1..];
        }
        f.write_str(rest)
    }
}

fn esc(text: &str) -> Escaped<'_> {
    Escaped(text)
}

/// One rendering.
struct Page<'a> {
    status: &'a Status,
    now: DateTime<Utc>,
}

impl Page<'_> {
    fn write(&self, out: &mut String) -> fmt::Result {
        let status = self.status;
        write!(
            out,
            "<!doctype html>\n<html lang=en>\n<head>\n<meta charset=utf-8>\n\
             <meta name=viewport content=\"width=device-width,initial-scale=1\">\n\
             <meta http-equiv=refresh content={REFRESH_SECONDS}>\n\
             <title>leasecron · {}</title>\n<link rel=icon href=\"data:,\">\n<style>{STYLE}</style>\n\
             </head>\n<body>\n",
            esc(&status.identity)
        )?;
        self.header(out)?;
        self.summary(out)?;
        self.jobs(out)?;
        self.footer(out)?;
        out.push_str("</body>\n</html>\n");
        Ok(())
    }

    fn header(&self, out: &mut String) -> fmt::Result {
        let status = self.status;
        let role = match (&status.holder, status.leading) {
            (_, true) => "leads".to_owned(),
            (Some(holder), false) if *holder == status.identity => {
                "is named the holder but does not lead: its term has ended".to_owned()
            }
            (Some(holder), false) => format!("follows {}", esc(holder)),
            (None, false) => "knows no leader yet".to_owned(),
        };
        write!(
            out,
            "<header>\n<h1>leasecron <small>{}</small></h1>\n<div>This replica {role}.</div>\n</header>\n\
             <dl>\n<dt>replica</dt><dd>{}</dd>\n<dt>leader</dt><dd>",
            esc(&status.identity),
            esc(&status.identity)
        )?;
        match &status.holder {
            Some(holder) if status.leading => write!(out, "{} (this replica)", esc(holder))?,
            Some(holder) => write!(out, "{}", esc(holder))?,
            None => out.push_str("none known"),
        }
        out.push_str("</dd>\n<dt>term</dt><dd>");
        match (status.fencing_token, status.term_acquired_at) {
            (Some(token), acquired) if status.leading => {
                write!(out, "fencing token <b>{token}</b>")?;
                if let Some(acquired) = acquired {
                    write!(out, " · acquired {}", self.when(acquired))?;
                }
                if let Some(left) = status.term_deadline_remaining_seconds {
                    write!(
                        out,
                        " · deadline in {} <small>(each renewal pushes it out)</small>",
                        duration(left)
                    )?;
                }
            }
            _ => out.push_str(
                "<small>not leading: the leader's own page shows its fencing token and term</small>",
            ),
        }
        out.push_str("</dd>\n");
        let config = &status.config;
        out.push_str("<dt>jobs from</dt><dd>");
        match &config.source {
            Some(source) => write!(out, "<code>{}</code>", esc(source))?,
            None => out.push_str("not loaded yet"),
        }
        if let Some(hash) = &config.hash {
            write!(out, " · hash <code>{}</code>", esc(hash))?;
        }
        if let Some(loaded) = config.loaded_at {
            write!(out, " · loaded {}", self.when(loaded))?;
        }
        out.push_str("</dd>\n<dt>last reload</dt><dd>");
        match &config.last_error {
            Some(error) => {
                out.push_str("<b class=\"b failed\">rejected</b>");
                if let Some(at) = config.last_error_at {
                    write!(out, " {}", self.when(at))?;
                }
                write!(
                    out,
                    " <small>(the jobs in force are the version before it)</small><pre>{}</pre>",
                    esc(error)
                )?;
            }
            None if config.source.is_some() => out.push_str("ok"),
            None => out.push('—'),
        }
        out.push_str("</dd>\n</dl>\n");
        Ok(())
    }

    fn summary(&self, out: &mut String) -> fmt::Result {
        let jobs = &self.status.jobs;
        let suspended = jobs.iter().filter(|job| job.suspended).count();
        let running: u64 = jobs.iter().map(|job| u64::from(job.running)).sum();
        let not_succeeded: Vec<&JobStatus> = jobs
            .iter()
            .filter(|job| {
                job.last_run
                    .as_ref()
                    .is_some_and(|last| last.outcome != "succeeded")
            })
            .collect();
        write!(
            out,
            "<div class=sum>{} · {suspended} suspended · {running} running on this replica · {} whose \
             last run did not succeed",
            plural(jobs.len(), "job", "jobs"),
            not_succeeded.len()
        )?;
        if !not_succeeded.is_empty() {
            out.push_str(": ");
            for (i, job) in not_succeeded.iter().take(NOT_SUCCEEDED_LINKS).enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write!(out, "<a href=\"#job-{0}\">{0}</a>", esc(&job.name))?;
            }
            if not_succeeded.len() > NOT_SUCCEEDED_LINKS {
                write!(
                    out,
                    " and {} more",
                    not_succeeded.len() - NOT_SUCCEEDED_LINKS
                )?;
            }
        }
        out.push_str("</div>\n");
        Ok(())
    }

    fn jobs(&self, out: &mut String) -> fmt::Result {
        if self.status.jobs.is_empty() {
            out.push_str("<p>No jobs loaded.</p>\n");
            return Ok(());
        }
        let newest_token = newest_token(self.status);
        write!(
            out,
            "<table>\n<thead><tr><th>job</th><th>schedule</th><th>state</th><th>last run</th>\
             <th>next run</th><th>last {STRIP_RUNS} runs</th></tr></thead>\n<tbody>\n"
        )?;
        for job in &self.status.jobs {
            self.job(out, job, newest_token)?;
        }
        out.push_str("</tbody>\n</table>\n");
        Ok(())
    }

    fn job(&self, out: &mut String, job: &JobStatus, newest_token: u64) -> fmt::Result {
        let name = esc(&job.name);
        write!(out, "<tr id=\"job-{name}\" class=\"")?;
        let classes = [
            job.last_run
                .as_ref()
                .map(|last| outcome_class(&last.outcome)),
            job.suspended.then_some("suspended"),
            (job.running > 0).then_some("running"),
        ];
        for (i, class) in classes.into_iter().flatten().enumerate() {
            if i > 0 {
                out.push(' ');
            }
            out.push_str(class);
        }
        write!(
            out,
            "\"><td class=n>{name}</td><td class=sc><code>{}</code> <small>{}{}</small></td><td class=st>",
            esc(&job.schedule),
            esc(&job.zone),
            if job.executor == "kubernetes" {
                " · Kubernetes Jobs"
            } else {
                ""
            }
        )?;
        self.state(out, job)?;
        out.push_str("</td><td class=lr>");
        match &job.last_run {
            Some(last) => self.last_run(out, last)?,
            None => out.push_str("<small>none yet</small>"),
        }
        out.push_str("</td><td class=nx>");
        match (job.suspended, job.next_run, job.next_slot_if_resumed) {
            (false, Some(next), _) => write!(out, "{}", self.when(next))?,
            (true, _, Some(slot)) => {
                write!(out, "— <small>if resumed: {}</small>", self.when(slot))?
            }
            (true, _, None) => out.push('—'),
            (false, None, _) => out.push_str("<small>none: the schedule has no next fire</small>"),
        }
        out.push_str("</td><td class=h>");
        let history = job
            .run_state
            .as_ref()
            .map_or(&[][..], |record| &record.history[..]);
        if history.is_empty() {
            out.push_str("<small>none recorded</small>");
        } else {
            out.push_str("<div class=s>");
            let shown = &history[history.len().saturating_sub(STRIP_RUNS)..];
            for entry in shown {
                self.strip_cell(out, entry, newest_token)?;
            }
            out.push_str("</div>");
        }
        out.push_str("</td></tr>\n");
        Ok(())
    }

    fn state(&self, out: &mut String, job: &JobStatus) -> fmt::Result {
        if job.suspended {
            out.push_str("<b class=\"b suspended\">suspended</b>");
            match &job.suspension {
                Some(suspension) => {
                    match &suspension.note {
                        Some(note) => write!(out, "<div class=note>“{}”</div>", esc(note))?,
                        None => out.push(' '),
                    }
                    write!(
                        out,
                        "<small>by {}, {}</small>",
                        esc(&suspension.by),
                        self.when(suspension.at)
                    )?;
                }
                None => out.push_str(" <small><code>suspend: true</code> in the jobs file</small>"),
            }
        }
        if job.running > 0 {
            if job.suspended {
                out.push_str("<br>");
            }
            out.push_str("<b class=\"b running\">running</b>");
            if job.running > 1 {
                write!(out, " ×{}", job.running)?;
            }
        }
        if !job.suspended && job.running == 0 {
            out.push_str("<small>idle</small>");
        }
        Ok(())
    }

    fn last_run(&self, out: &mut String, last: &LastRun) -> fmt::Result {
        let class = outcome_class(&last.outcome);
        write!(out, "<b class=\"b {class}\">{}</b>", esc(&last.outcome))?;
        if let Some(code) = last.exit_code {
            write!(out, " exit {code}")?;
        }
        if let Some(signal) = last.signal {
            write!(out, " signal {signal}")?;
        }
        write!(out, " {}", self.when(last.finished))?;
        if let Some(seconds) = last.duration_seconds {
            write!(out, " · took {}", duration(seconds))?;
        }
        if let Some(attempts) = last.attempts.filter(|attempts| *attempts > 1) {
            write!(out, " · {attempts} attempts")?;
        }
        if let Some(error) = &last.error {
            write!(out, "<pre>{}</pre>", esc(error))?;
        }
        out.push_str("<br><small>");
        match (&last.identity, last.fencing_token) {
            (Some(identity), Some(token)) => {
                write!(out, "ran on {} under token {token}", esc(identity))?
            }
            (Some(identity), None) => write!(out, "ran on {}", esc(identity))?,
            _ => out.push_str("ran on a replica the run state no longer names"),
        }
        if last.source == RunSource::RunState {
            out.push_str(", from the run state");
        }
        out.push_str("</small>");
        Ok(())
    }

    fn strip_cell(&self, out: &mut String, entry: &HistoryEntry, newest_token: u64) -> fmt::Result {
        let class = match &entry.outcome {
            Some(outcome) => outcome_class(outcome),
            // A run under a term older than the newest one known can no longer record an outcome: only a
            // live term writes the run state.
            None if entry.fencing_token < newest_token => "interrupted",
            None => "running",
        };
        write!(
            out,
            "<i class={class} title=\"{}",
            self.absolute(entry.started_at)
        )?;
        match (entry.finished_at, &entry.outcome) {
            (Some(finished), Some(outcome)) => {
                let seconds = (finished - entry.started_at).num_milliseconds() as f64 / 1e3;
                write!(out, " · {} · {}", duration(seconds), esc(outcome))?;
            }
            _ if class == "interrupted" => out.push_str(" · interrupted: its term ended first"),
            _ => write!(
                out,
                " · running for {}",
                duration((self.now - entry.started_at).num_milliseconds() as f64 / 1e3)
            )?,
        }
        if let Some(code) = entry.exit_code {
            write!(out, ", exit {code}")?;
        }
        if let Some(signal) = entry.signal {
            write!(out, ", signal {signal}")?;
        }
        if let Some(attempts) = entry.attempts.filter(|attempts| *attempts > 1) {
            write!(out, ", {attempts} attempts")?;
        }
        if entry.cause != Cause::Schedule {
            write!(out, " · {}", entry.cause.as_str())?;
            if entry.cause != Cause::Trigger {
                write!(out, " of slot {}", self.absolute(entry.slot))?;
            }
        }
        out.push_str("\"></i>");
        Ok(())
    }

    fn footer(&self, out: &mut String) -> fmt::Result {
        write!(
            out,
            "<footer>\n<p>Runs, oldest left: <span class=s><i class=succeeded></i></span> succeeded \
             <span class=s><i class=failed></i></span> failed <span class=s><i class=timed_out></i></span> \
             timed out <span class=s><i class=cancelled></i></span> cancelled \
             <span class=s><i class=running></i></span> running (no outcome yet) \
             <span class=s><i class=interrupted></i></span> interrupted. Hover over a run for its start, \
             duration and outcome. The strip shows each job's last {STRIP_RUNS} runs of the up to {} the \
             run state keeps; <a href=status>/status</a> has them all.</p>\n\
             <p>Rendered {} by this replica, from the snapshot <a href=status>/status</a> serves as JSON \
             (<a href=metrics>/metrics</a> for Prometheus). Times are UTC. This page reloads itself every \
             {REFRESH_SECONDS} s.</p>\n</footer>\n",
            crate::run_state::HISTORY_PER_JOB,
            self.absolute(self.now)
        )
    }

    /// A time with how far it is from now: `12:00:05 · 3 min ago`, the date too if not today.
    fn when(&self, at: DateTime<Utc>) -> When {
        When { at, now: self.now }
    }

    /// A time in UTC, to the second: `12:00:05` today, `2026-11-20 12:00:05` another day.
    fn absolute(&self, at: DateTime<Utc>) -> Absolute {
        Absolute { at, now: self.now }
    }
}

/// See [`Page::when`].
struct When {
    at: DateTime<Utc>,
    now: DateTime<Utc>,
}

impl fmt::Display for When {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (at, now) = (self.at, self.now);
        write!(
            f,
            "{} <small>· {}</small>",
            Absolute { at, now },
            Relative { at, now }
        )
    }
}

/// See [`Page::absolute`]. Written digit by digit: chrono's `format` parses its pattern at every call,
/// and a page of 10 000 jobs writes 150 000 times.
struct Absolute {
    at: DateTime<Utc>,
    now: DateTime<Utc>,
}

impl fmt::Display for Absolute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let at = self.at;
        if at.date_naive() != self.now.date_naive() {
            write!(f, "{:04}-{:02}-{:02} ", at.year(), at.month(), at.day())?;
        }
        write!(f, "{:02}:{:02}:{:02}", at.hour(), at.minute(), at.second())
    }
}

/// The newest fencing token the snapshot knows: the term's while leading, else the largest any job's
/// record carries.
fn newest_token(status: &Status) -> u64 {
    let recorded = status
        .jobs
        .iter()
        .filter_map(|job| job.run_state.as_ref())
        .flat_map(|record| {
            let started = record
                .last_started
                .as_ref()
                .map(|start| start.fencing_token);
            let history = record.history.iter().map(|entry| entry.fencing_token);
            started.into_iter().chain(history)
        })
        .max()
        .unwrap_or(0);
    status.fencing_token.unwrap_or(0).max(recorded)
}

/// The CSS class of an outcome; outcomes come back from the run state as text, so an unknown one is
/// `unknown`, never the text itself.
fn outcome_class(outcome: &str) -> &'static str {
    match outcome {
        "succeeded" => "succeeded",
        "failed" => "failed",
        "timed_out" => "timed_out",
        "cancelled" => "cancelled",
        _ => "unknown",
    }
}

/// `1 job`, `2 jobs`.
fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// A duration for a person: `850 ms`, `1.2 s`, `3 min 5 s`, `2 h 3 min`.
fn duration(seconds: f64) -> Took {
    Took(seconds)
}

/// See [`duration`].
struct Took(f64);

impl fmt::Display for Took {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let seconds = self.0.max(0.0);
        if seconds < 1.0 {
            return write!(f, "{:.0} ms", seconds * 1e3);
        }
        if seconds < 60.0 {
            return write!(f, "{seconds:.1} s");
        }
        let whole = seconds as u64;
        if whole < 3600 {
            return write!(f, "{} min {} s", whole / 60, whole % 60);
        }
        write!(f, "{} h {} min", whole / 3600, whole % 3600 / 60)
    }
}

/// How far `at` is from `now`: `in 4 s`, `3 min ago`, `now`.
struct Relative {
    at: DateTime<Utc>,
    now: DateTime<Utc>,
}

impl fmt::Display for Relative {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let seconds = (self.at - self.now).num_seconds();
        let (n, unit) = match seconds.unsigned_abs() {
            0 => return f.write_str("now"),
            n @ 1..60 => (n, "s"),
            n @ 60..3600 => (n / 60, "min"),
            n @ 3600..86_400 => (n / 3600, "h"),
            n => (n / 86_400, "d"),
        };
        if seconds > 0 {
            write!(f, "in {n} {unit}")
        } else {
            write!(f, "{n} {unit} ago")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controls::Suspension;
    use crate::http::ConfigStatus;
    use crate::run_state::{Completion, JobRecord, SlotStart};

    fn at(seconds: i64) -> DateTime<Utc> {
        // 2027-01-15T08:00:00Z, and seconds from it.
        DateTime::from_timestamp(1_800_000_000 + seconds, 0).expect("a valid time")
    }

    fn now() -> DateTime<Utc> {
        at(1000)
    }

    fn job(name: &str) -> JobStatus {
        JobStatus {
            name: name.to_owned(),
            schedule: "*/5 * * * *".to_owned(),
            zone: "Europe/Paris".to_owned(),
            executor: "process".to_owned(),
            suspended: false,
            suspension: None,
            next_run: Some(at(1100)),
            next_fire: Some(at(1100)),
            jitter_seconds: None,
            next_slot_if_resumed: None,
            last_run: None,
            running: 0,
            run_state: None,
        }
    }

    fn status(jobs: Vec<JobStatus>) -> Status {
        Status {
            identity: "r1".to_owned(),
            holder: Some("r1".to_owned()),
            leading: true,
            fencing_token: Some(7),
            term_acquired_at: Some(at(-3600)),
            term_deadline_remaining_seconds: Some(9.5),
            config: ConfigStatus {
                source: Some("/etc/leasecron/jobs.yaml".to_owned()),
                hash: Some("00112233aabbccdd".to_owned()),
                loaded_at: Some(at(-60)),
                last_error: None,
                last_error_at: None,
            },
            jobs,
        }
    }

    fn last_run(outcome: &str) -> LastRun {
        LastRun {
            scheduled: at(900),
            outcome: outcome.to_owned(),
            exit_code: None,
            signal: None,
            error: None,
            started: Some(at(900)),
            finished: at(902),
            duration_seconds: Some(1.5),
            attempts: Some(1),
            leftover_processes_killed: Some(0),
            source: RunSource::ThisReplica,
            identity: Some("r1".to_owned()),
            fencing_token: Some(7),
        }
    }

    fn entry(slot: i64, token: u64, outcome: Option<&str>) -> HistoryEntry {
        HistoryEntry {
            slot: at(slot),
            cause: Cause::Schedule,
            request: None,
            fencing_token: token,
            identity: "r1".to_owned(),
            started_at: at(slot),
            finished_at: outcome.map(|_| at(slot + 2)),
            outcome: outcome.map(str::to_owned),
            exit_code: None,
            signal: None,
            attempts: outcome.map(|_| 1),
        }
    }

    fn with_history(mut job: JobStatus, history: Vec<HistoryEntry>) -> JobStatus {
        job.run_state = Some(JobRecord {
            history,
            ..JobRecord::default()
        });
        job
    }

    /// The `<tr>` of job `name`, up to its end.
    fn row<'a>(page: &'a str, name: &str) -> &'a str {
        let start = page
            .find(&format!("<tr id=\"job-{name}\""))
            .unwrap_or_else(|| panic!("no row for {name}"));
        let end = page[start..].find("</tr>").expect("the row ends") + start;
        &page[start..end]
    }

    /// The strip of a row: the class of each cell, oldest first.
    fn strip(row: &str) -> Vec<&str> {
        row.split("<i class=")
            .skip(1)
            .map(|cell| cell.split(' ').next().expect("a class"))
            .collect()
    }

    const HOSTILE: &str =
        "</td></tr></table><script>alert(1)</script><img src=x onerror=\"alert('x')\"> & \
                           <!-- --> ]]> javascript:alert(1)";

    #[test]
    fn everything_user_supplied_is_escaped() {
        let mut suspended = job("hostile");
        suspended.suspended = true;
        suspended.suspension = Some(Suspension {
            note: Some(HOSTILE.to_owned()),
            by: format!("mallory {HOSTILE}"),
            at: at(500),
            request: "req-1".to_owned(),
        });
        suspended.schedule = HOSTILE.to_owned();
        suspended.zone = HOSTILE.to_owned();
        let mut failed = last_run(HOSTILE);
        failed.error = Some(HOSTILE.to_owned());
        failed.identity = Some(HOSTILE.to_owned());
        suspended.last_run = Some(failed);
        let mut history = entry(800, 7, Some("failed"));
        history.outcome = Some(HOSTILE.to_owned());
        let suspended = with_history(suspended, vec![history]);
        let mut status = status(vec![suspended]);
        status.identity = HOSTILE.to_owned();
        status.holder = Some(HOSTILE.to_owned());
        status.config.source = Some(HOSTILE.to_owned());
        status.config.last_error = Some(HOSTILE.to_owned());
        status.config.last_error_at = Some(at(990));

        let page = render(&status, now());
        assert!(!page.contains("<script"), "{page}");
        assert!(!page.contains("<img"), "{page}");
        assert!(!page.contains("onerror=\""), "{page}");
        assert!(!page.contains("</td></tr></table>"), "{page}");
        assert!(!page.contains("<!--"), "{page}");
        let escaped = "&lt;/td&gt;&lt;/tr&gt;&lt;/table&gt;&lt;script&gt;alert(1)&lt;/script&gt;\
                       &lt;img src=x onerror=&quot;alert(&#39;x&#39;)&quot;&gt; &amp; &lt;!-- --&gt;";
        // The note, who suspended it, the schedule, zone, outcome, error, identity, holder, source and the
        // reload's error: each once, escaped (the identity twice more: the title and the heading).
        assert!(
            page.matches(escaped).count() >= 12,
            "{} escaped copies in {page}",
            page.matches(escaped).count()
        );
        // Still one table, one row, and the row's cells all there.
        assert_eq!(page.matches("<table>").count(), 1);
        assert_eq!(page.matches("<tr id=").count(), 1);
        assert_eq!(page.matches("</table>").count(), 1);
        let row = row(&page, "hostile");
        assert_eq!(row.matches("<td").count(), 6, "{row}");
        assert_eq!(
            strip(row),
            ["unknown"],
            "an unknown outcome is no class of its own"
        );
    }

    #[test]
    fn escaping_replaces_the_five_special_characters_and_nothing_else() {
        assert_eq!(
            Escaped("a<b>c&d\"e'f ü —").to_string(),
            "a&lt;b&gt;c&amp;d&quot;e&#39;f ü —"
        );
        assert_eq!(Escaped("").to_string(), "");
        assert_eq!(Escaped("&&").to_string(), "&amp;&amp;");
    }

    #[test]
    fn the_page_is_self_contained_and_readable_on_a_phone() {
        let page = render(&status(vec![job("a")]), now());
        assert!(page.starts_with("<!doctype html>\n"));
        assert!(page.contains("<meta charset=utf-8>"));
        assert!(
            page.contains("<meta name=viewport content=\"width=device-width,initial-scale=1\">")
        );
        assert!(page.contains("<meta http-equiv=refresh content=10>"));
        assert!(page.contains("reloads itself every 10 s"));
        assert!(page.contains("@media(max-width:700px)"));
        for external in [
            "http:",
            "https:",
            "//",
            "src=",
            "<script",
            "<link rel=stylesheet",
            "@import",
        ] {
            let found = page
                .match_indices(external)
                .map(|(i, _)| &page[i.saturating_sub(40)..(i + 40).min(page.len())])
                .collect::<Vec<_>>();
            assert!(found.is_empty(), "{external}: {found:?}");
        }
        assert!(page.ends_with("</html>\n"));
    }

    #[test]
    fn the_header_shows_the_replica_the_leader_its_term_and_the_config() {
        let page = render(&status(vec![]), now());
        assert!(page.contains("<title>leasecron · r1</title>"));
        assert!(page.contains("This replica leads."));
        assert!(page.contains("<dt>leader</dt><dd>r1 (this replica)</dd>"));
        assert!(
            page.contains("fencing token <b>7</b> · acquired 07:00:00 <small>· 1 h ago</small>"),
            "{page}"
        );
        assert!(page.contains("deadline in 9.5 s"));
        assert!(page.contains("<code>/etc/leasecron/jobs.yaml</code>"));
        assert!(page.contains("hash <code>00112233aabbccdd</code>"));
        assert!(page.contains("<dt>last reload</dt><dd>ok</dd>"));
        assert!(page.contains("<p>No jobs loaded.</p>"));

        let mut follower = status(vec![]);
        follower.identity = "r2".to_owned();
        (
            follower.leading,
            follower.fencing_token,
            follower.term_acquired_at,
        ) = (false, None, None);
        follower.term_deadline_remaining_seconds = None;
        follower.config.last_error = Some("jobs.yaml:3:15: unknown time zone".to_owned());
        follower.config.last_error_at = Some(at(995));
        let page = render(&follower, now());
        assert!(page.contains("This replica follows r1."));
        assert!(page.contains("<dt>leader</dt><dd>r1</dd>"));
        assert!(page.contains("the leader's own page shows its fencing token"));
        assert!(
            page.contains("<b class=\"b failed\">rejected</b> 08:16:35 <small>· 5 s ago</small>")
        );
        assert!(page.contains("<pre>jobs.yaml:3:15: unknown time zone</pre>"));

        follower.holder = None;
        assert!(render(&follower, now()).contains("This replica knows no leader yet."));
    }

    #[test]
    fn each_job_has_a_row_with_its_schedule_state_last_and_next_run() {
        let mut ok = job("ok");
        ok.last_run = Some(last_run("succeeded"));
        let mut failing = job("failing");
        let mut failed = last_run("failed");
        (failed.exit_code, failed.attempts) = (Some(3), Some(2));
        failing.last_run = Some(failed);
        failing.running = 2;
        let mut missing = job("missing");
        let mut spawn = last_run("failed");
        spawn.error = Some("cannot start /nonexistent: No such file or directory".to_owned());
        (spawn.source, spawn.identity, spawn.fencing_token) = (RunSource::RunState, None, None);
        missing.last_run = Some(spawn);
        let mut never = job("never");
        never.next_run = None;
        let page = render(&status(vec![ok, failing, missing, never]), now());

        let ok = row(&page, "ok");
        assert!(
            ok.starts_with("<tr id=\"job-ok\" class=\"succeeded\">"),
            "{ok}"
        );
        assert!(ok.contains("<code>*/5 * * * *</code> <small>Europe/Paris</small>"));
        assert!(ok.contains("<td class=st><small>idle</small></td>"));
        assert!(ok.contains(
            "<b class=\"b succeeded\">succeeded</b> 08:15:02 <small>· 1 min ago</small> · took 1.5 s"
        ));
        assert!(ok.contains("ran on r1 under token 7</small>"));
        assert!(
            ok.contains("<td class=nx>08:18:20 <small>· in 1 min</small></td>"),
            "{ok}"
        );
        assert!(ok.contains("<small>none recorded</small>"));

        let failing = row(&page, "failing");
        assert!(failing.contains("class=\"failed running\""), "{failing}");
        assert!(failing.contains("<b class=\"b running\">running</b> ×2"));
        assert!(failing.contains("<b class=\"b failed\">failed</b> exit 3"));
        assert!(failing.contains(" · 2 attempts"));

        let missing = row(&page, "missing");
        assert!(missing.contains("<pre>cannot start /nonexistent: No such file or directory</pre>"));
        assert!(
            missing.contains("ran on a replica the run state no longer names, from the run state")
        );

        let never = row(&page, "never");
        assert!(never.contains("<small>none yet</small>"));
        assert!(never.contains("none: the schedule has no next fire"));

        assert!(page.contains(
            "4 jobs · 0 suspended · 2 running on this replica · 2 whose last run did not succeed: \
             <a href=\"#job-failing\">failing</a>, <a href=\"#job-missing\">missing</a></div>"
        ));
    }

    #[test]
    fn a_suspended_job_shows_the_operators_note_or_the_jobs_file_and_its_slot_if_resumed() {
        let mut by_operator = job("by-operator");
        by_operator.suspended = true;
        by_operator.suspension = Some(Suspension {
            note: Some("waiting for the DB migration (INC-42)".to_owned()),
            by: "alice".to_owned(),
            at: at(-86_400),
            request: "req-1".to_owned(),
        });
        (by_operator.next_run, by_operator.next_slot_if_resumed) = (None, Some(at(1100)));
        let mut without_note = by_operator.clone();
        without_note.name = "without-note".to_owned();
        without_note.suspension.as_mut().expect("suspended").note = None;
        let mut in_file = job("in-file");
        in_file.suspended = true;
        (in_file.next_run, in_file.next_slot_if_resumed) = (None, None);
        in_file.running = 1;
        let page = render(&status(vec![by_operator, without_note, in_file]), now());

        let row_ = row(&page, "by-operator");
        assert!(row_.contains("class=\"suspended\""));
        assert!(row_.contains(
            "<b class=\"b suspended\">suspended</b><div class=note>“waiting for the DB migration \
             (INC-42)”</div><small>by alice, 2027-01-14 08:00:00 <small>· 1 d ago</small></small>"
        ), "{row_}");
        assert!(row_.contains(
            "<td class=nx>— <small>if resumed: 08:18:20 <small>· in 1 min</small></small></td>"
        ));
        let row_ = row(&page, "without-note");
        assert!(row_.contains("<b class=\"b suspended\">suspended</b> <small>by alice"));
        let row_ = row(&page, "in-file");
        assert!(row_.contains(
            "<b class=\"b suspended\">suspended</b> <small><code>suspend: true</code> in the jobs \
             file</small><br><b class=\"b running\">running</b>"
        ), "{row_}");
        assert!(row_.contains("<td class=nx>—</td>"));
        assert!(page.contains("3 suspended"));
    }

    #[test]
    fn the_strip_shows_the_last_runs_oldest_first_coloured_by_outcome_with_time_and_duration() {
        let outcomes = ["succeeded", "failed", "timed_out", "cancelled"];
        let mut history: Vec<HistoryEntry> = (0..14)
            .map(|i| entry(i * 60, 7, Some(outcomes[i as usize % 4])))
            .collect();
        // Under an older term, without an outcome: interrupted. Under the newest: running.
        history.push(entry(840, 6, None));
        history.push(entry(900, 7, None));
        let mut backfill = entry(960, 7, Some("failed"));
        (
            backfill.cause,
            backfill.slot,
            backfill.exit_code,
            backfill.attempts,
        ) = (Cause::Backfill, at(-86_400), Some(2), Some(3));
        history.push(backfill);
        let page = render(&status(vec![with_history(job("a"), history)]), now());
        let row = row(&page, "a");
        assert_eq!(
            strip(row),
            [
                "cancelled",
                "succeeded",
                "failed",
                "timed_out",
                "cancelled",
                "succeeded",
                "failed",
                "interrupted",
                "running",
                "failed"
            ],
            "the last {STRIP_RUNS}, oldest first"
        );
        assert!(
            row.contains("<i class=succeeded title=\"08:12:00 · 2.0 s · succeeded\"></i>"),
            "{row}"
        );
        assert!(row.contains(
            "<i class=interrupted title=\"08:14:00 · interrupted: its term ended first\"></i>"
        ));
        assert!(row.contains("<i class=running title=\"08:15:00 · running for 1 min 40 s\"></i>"));
        assert!(row.contains(
            "<i class=failed title=\"08:16:00 · 2.0 s · failed, exit 2, 3 attempts · backfill of slot \
             2027-01-14 08:00:00\"></i>"
        ), "{row}");
        assert!(page.contains("<th>last 10 runs</th>"));
    }

    #[test]
    fn a_follower_knows_a_run_is_interrupted_from_a_newer_token_in_the_run_state() {
        let mut other = job("b");
        other.run_state = Some(JobRecord {
            last_started: Some(SlotStart {
                slot: at(0),
                fencing_token: 9,
                identity: "r2".to_owned(),
                started_at: at(0),
            }),
            last_completion: Some(Completion {
                slot: at(0),
                outcome: "succeeded".to_owned(),
                finished_at: at(1),
            }),
            ..JobRecord::default()
        });
        let mut follower = status(vec![with_history(job("a"), vec![entry(0, 8, None)]), other]);
        (follower.leading, follower.fencing_token) = (false, None);
        assert_eq!(newest_token(&follower), 9);
        assert_eq!(strip(row(&render(&follower, now()), "a")), ["interrupted"]);
    }

    #[test]
    fn durations_and_relative_times_read_as_a_person_would_say_them() {
        assert_eq!(duration(0.0123).to_string(), "12 ms");
        assert_eq!(duration(1.25).to_string(), "1.2 s");
        assert_eq!(duration(185.0).to_string(), "3 min 5 s");
        assert_eq!(duration(7384.0).to_string(), "2 h 3 min");
        assert_eq!(duration(-1.0).to_string(), "0 ms");
        assert_eq!(
            Relative {
                at: at(0),
                now: at(0)
            }
            .to_string(),
            "now"
        );
        assert_eq!(
            Relative {
                at: at(4),
                now: at(0)
            }
            .to_string(),
            "in 4 s"
        );
        assert_eq!(
            Relative {
                at: at(0),
                now: at(180)
            }
            .to_string(),
            "3 min ago"
        );
        assert_eq!(
            Relative {
                at: at(0),
                now: at(7200)
            }
            .to_string(),
            "2 h ago"
        );
        assert_eq!(
            Relative {
                at: at(3 * 86_400),
                now: at(0)
            }
            .to_string(),
            "in 3 d"
        );
    }

    #[test]
    fn many_jobs_not_succeeding_link_only_the_first_ones() {
        let jobs = (0..25)
            .map(|i| {
                let mut job = job(&format!("j{i:02}"));
                job.last_run = Some(last_run("failed"));
                job
            })
            .collect();
        let page = render(&status(jobs), now());
        assert_eq!(page.matches("<a href=\"#job-").count(), NOT_SUCCEEDED_LINKS);
        assert!(page.contains("<a href=\"#job-j19\">j19</a> and 5 more</div>"));
    }
}
