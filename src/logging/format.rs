//! The format of a log line: logfmt text (the default) or one JSON object per line.
//!
//! A text line is [logfmt](https://brandur.org/logfmt): space-separated `key=value` pairs, always in
//! this order:
//!
//! ```text
//! ts=2026-12-05T20:21:15.123456Z level=info target=leasecron::runner msg="run finished" job=tick run_id=1 …
//! ```
//!
//! - `ts`: when the event was logged, RFC 3339 in UTC with microseconds (fixed width, so lines sort);
//! - `level`: `trace`, `debug`, `info`, `warn` or `error`;
//! - `target`: the module that logged it (for an event of a dependency that logs through the `log` crate,
//!   that crate's target);
//! - `msg`: the message, always present;
//! - then the event's own fields, in the order the event names them, then those of its spans (outermost
//!   first).
//!
//! A value is written bare unless it is empty or holds a space, a `=`, a `"`, a control character or
//! other whitespace: then it is double-quoted, with `\` and `"` escaped as `\\` and `\"`,
//! newline, carriage return and tab as `\n`, `\r` and `\t`, and any other control character as `\u00XX`.
//! So a line is always one line, and splitting it on unquoted spaces gives its pairs. Numbers and
//! booleans are bare.
//!
//! A JSON line is `tracing-subscriber`'s JSON with the event's fields at the top level beside
//! `timestamp` (the same RFC 3339 UTC time as `ts`), `level` (upper case), `message` and `target`.
//! A field recorded as a number is a JSON number, and a string a JSON string.
//!
//! The conventions the code keeps for fields, so that each field has one type and one spelling: times
//! are RFC 3339 in UTC ([`rfc3339`]), durations are seconds as a float in a field named `…_seconds`
//! ([`seconds`]), counts and tokens are numbers, never text.

use std::fmt::{self, Write as _};
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, TimeZone, Utc};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::FormatTime;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields, MakeWriter};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::EnvFilter;

/// The format of the log lines (`--log-format`), of leasecron and of its run supervisor alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// logfmt: `ts=… level=… target=… msg=… key=value …` (see the [module documentation](self)).
    Text,
    /// One JSON object per line.
    Json,
}

impl LogFormat {
    /// The name `--log-format` takes.
    pub fn name(self) -> &'static str {
        match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        }
    }

    /// One line logged outside `tracing` (by the run supervisor, which has no subscriber), newline
    /// included: `level` (`ERROR`, `WARN`, `INFO`, …), `target` and `message`, then `fields` (numbers).
    pub fn line(self, level: Level, target: &str, message: &str, fields: &[(&str, u64)]) -> String {
        let now = timestamp(Utc::now());
        match self {
            LogFormat::Text => {
                let mut line = format!("ts={now} level={} target=", level_name(level));
                push_value(&mut line, target);
                line.push_str(" msg=");
                push_value(&mut line, message);
                for (key, value) in fields {
                    let _ = write!(line, " {key}={value}");
                }
                line.push('\n');
                line
            }
            LogFormat::Json => {
                let mut object = serde_json::Map::new();
                object.insert("timestamp".into(), now.into());
                object.insert("level".into(), level.as_str().into());
                object.insert("message".into(), message.into());
                for (key, value) in fields {
                    object.insert((*key).into(), (*value).into());
                }
                object.insert("target".into(), target.into());
                format!("{}\n", serde_json::Value::Object(object))
            }
        }
    }
}

/// The subscriber `leasecron run` logs through: `format`, the events `filter` lets through, written to
/// `writer`. Never writes ANSI colours (a log is read by programs), never reports its own write errors
/// (the writer counts them).
pub fn subscriber<W>(
    format: LogFormat,
    filter: EnvFilter,
    writer: W,
) -> Box<dyn Subscriber + Send + Sync>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .with_writer(writer)
        .log_internal_errors(false);
    match format {
        LogFormat::Text => Box::new(
            builder
                .fmt_fields(LogfmtFields)
                .event_format(Logfmt)
                .finish(),
        ),
        LogFormat::Json => Box::new(
            builder
                .json()
                .flatten_event(true)
                .with_current_span(false)
                .with_timer(Rfc3339)
                .finish(),
        ),
    }
}

/// The time of a log line: RFC 3339 in UTC, with microseconds (`2026-12-05T20:21:15.123456Z`).
pub fn timestamp(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// A time as a field value: RFC 3339 in UTC, with as many fractional digits as it has
/// (`2026-12-05T20:21:15Z` for a schedule slot).
pub fn rfc3339<Tz: TimeZone>(at: &DateTime<Tz>) -> String {
    at.with_timezone(&Utc)
        .to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// A duration as a field value: seconds, as a float (log it in a field named `…_seconds`).
pub fn seconds(duration: Duration) -> f64 {
    duration.as_secs_f64()
}

/// Appends `value` to `out` as a logfmt value: bare if it can be, else quoted and escaped (see the
/// [module documentation](self)).
pub(crate) fn push_value(out: &mut String, value: &str) {
    let bare = !value.is_empty()
        && !value
            .chars()
            .any(|c| c == '=' || c == '"' || c.is_whitespace() || c.is_control());
    if bare {
        out.push_str(value);
        return;
    }
    out.push('"');
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

fn level_name(level: Level) -> &'static str {
    match level {
        Level::TRACE => "trace",
        Level::DEBUG => "debug",
        Level::INFO => "info",
        Level::WARN => "warn",
        Level::ERROR => "error",
    }
}

/// The text format of an event: a logfmt line (see the [module documentation](self)).
#[derive(Debug, Clone, Copy, Default)]
pub struct Logfmt;

/// The text format of a span's fields (appended to the lines of the events inside it): logfmt pairs.
#[derive(Debug, Clone, Copy, Default)]
pub struct LogfmtFields;

/// The timer of the JSON lines: [`timestamp`].
#[derive(Debug, Clone, Copy, Default)]
struct Rfc3339;

impl FormatTime for Rfc3339 {
    fn format_time(&self, w: &mut Writer<'_>) -> fmt::Result {
        w.write_str(&timestamp(Utc::now()))
    }
}

impl<S, N> FormatEvent<S, N> for Logfmt
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let metadata = event.metadata();
        let mut fields = Pairs::default();
        event.record(&mut fields);
        let mut line = String::with_capacity(128 + fields.pairs.len());
        line.push_str("ts=");
        line.push_str(&timestamp(Utc::now()));
        line.push_str(" level=");
        line.push_str(level_name(*metadata.level()));
        line.push_str(" target=");
        push_value(
            &mut line,
            fields.log_target.as_deref().unwrap_or(metadata.target()),
        );
        line.push_str(" msg=");
        push_value(&mut line, fields.message.as_deref().unwrap_or_default());
        line.push_str(&fields.pairs);
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                let extensions = span.extensions();
                if let Some(formatted) = extensions.get::<FormattedFields<N>>() {
                    if !formatted.is_empty() {
                        line.push(' ');
                        line.push_str(formatted);
                    }
                }
            }
        }
        line.push('\n');
        writer.write_str(&line)
    }
}

impl<'w> FormatFields<'w> for LogfmtFields {
    fn format_fields<R: tracing_subscriber::field::RecordFields>(
        &self,
        mut writer: Writer<'w>,
        fields: R,
    ) -> fmt::Result {
        let mut pairs = Pairs::default();
        fields.record(&mut pairs);
        if let Some(message) = pairs.message.take() {
            pairs.push("message", |out| push_value(out, &message));
        }
        writer.write_str(pairs.pairs.trim_start())
    }
}

/// Collects an event's fields as ` key=value` pairs, setting its message (and the target of an event
/// from the `log` crate) aside.
#[derive(Debug, Default)]
struct Pairs {
    message: Option<String>,
    log_target: Option<String>,
    pairs: String,
}

impl Pairs {
    fn push(&mut self, key: &str, value: impl FnOnce(&mut String)) {
        self.pairs.push(' ');
        self.pairs.push_str(key);
        self.pairs.push('=');
        value(&mut self.pairs);
    }

    fn bare(&mut self, field: &Field, value: impl fmt::Display) {
        self.push(field.name(), |out| {
            let _ = write!(out, "{value}");
        });
    }
}

impl Visit for Pairs {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "message" => self.message = Some(value.to_owned()),
            "log.target" => self.log_target = Some(value.to_owned()),
            // The rest of a `log` record's metadata (module, file, line): not part of the line.
            name if name.starts_with("log.") => {}
            name => self.push(name, |out| push_value(out, value)),
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.record_str(field, &format!("{value:?}"));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.bare(field, value);
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.bare(field, value);
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        if !field.name().starts_with("log.") {
            self.bare(field, value);
        }
    }

    fn record_i128(&mut self, field: &Field, value: i128) {
        self.bare(field, value);
    }

    fn record_u128(&mut self, field: &Field, value: u128) {
        self.bare(field, value);
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.bare(field, value);
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.record_str(field, &value.to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;
    use std::sync::{Arc, Mutex, PoisonError};

    /// A `MakeWriter` into a shared buffer.
    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Buffer {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            self.0
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Buffer {
        fn text(&self) -> String {
            String::from_utf8(
                self.0
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .clone(),
            )
            .expect("UTF-8")
        }
    }

    /// What `emit` logs, in `format`, through the subscriber `leasecron run` uses.
    fn logged(format: LogFormat, emit: impl FnOnce()) -> String {
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let subscriber = subscriber(format, EnvFilter::new("trace"), move || writer.clone());
        tracing::subscriber::with_default(subscriber, emit);
        buffer.text()
    }

    fn value(value: &str) -> String {
        let mut out = String::new();
        push_value(&mut out, value);
        out
    }

    /// Splits a logfmt line into its pairs, unescaping quoted values: the reader's side of the format.
    fn parse(line: &str) -> Vec<(String, String)> {
        let mut pairs = Vec::new();
        let mut chars = line.chars().peekable();
        loop {
            while chars.peek() == Some(&' ') {
                chars.next();
            }
            let Some(_) = chars.peek() else {
                return pairs;
            };
            let key: String = chars.by_ref().take_while(|&c| c != '=').collect();
            let mut value = String::new();
            if chars.peek() == Some(&'"') {
                chars.next();
                while let Some(c) = chars.next() {
                    match c {
                        '"' => break,
                        '\\' => match chars.next().expect("an escape") {
                            'n' => value.push('\n'),
                            'r' => value.push('\r'),
                            't' => value.push('\t'),
                            'u' => {
                                let hex: String = chars.by_ref().take(4).collect();
                                let code = u32::from_str_radix(&hex, 16).expect("hex");
                                value.push(char::from_u32(code).expect("a char"));
                            }
                            other => value.push(other),
                        },
                        c => value.push(c),
                    }
                }
            } else {
                while let Some(&c) = chars.peek() {
                    if c == ' ' {
                        break;
                    }
                    value.push(c);
                    chars.next();
                }
            }
            pairs.push((key, value));
        }
    }

    #[test]
    fn values_are_bare_unless_they_need_quotes() {
        assert_eq!(value("tick"), "tick");
        assert_eq!(value("leasecron::runner"), "leasecron::runner");
        assert_eq!(value("2026-12-05T20:21:15Z"), "2026-12-05T20:21:15Z");
        assert_eq!(value("a\\b"), "a\\b", "a backslash alone needs no quotes");
        assert_eq!(value(""), "\"\"");
        assert_eq!(value("run finished"), "\"run finished\"");
        assert_eq!(value("a=b"), "\"a=b\"");
        assert_eq!(value("say \"hi\""), "\"say \\\"hi\\\"\"");
        assert_eq!(value("x\"y"), "\"x\\\"y\"");
        assert_eq!(value("one\ntwo\r\tthree"), "\"one\\ntwo\\r\\tthree\"");
        assert_eq!(value("bell\u{7}"), "\"bell\\u0007\"");
        assert_eq!(value("nbsp\u{a0}"), "\"nbsp\u{a0}\"");
        assert_eq!(value("c:\\ \"d\""), "\"c:\\\\ \\\"d\\\"\"");
    }

    #[test]
    fn a_text_line_is_logfmt_with_the_fields_in_order() {
        let text = logged(LogFormat::Text, || {
            let job = String::from("tick");
            tracing::warn!(
                job = %job,
                run_id = 7u64,
                fencing_token = 3u64,
                duration_seconds = 1.5f64,
                delta = -2i64,
                partial = false,
                detail = "failed (exit code 1)",
                error = %"job x: cannot start \"sh\"",
                equals = "a=b",
                empty = "",
                lines = "one\ntwo",
                "run finished"
            );
        });
        assert_eq!(text.matches('\n').count(), 1, "one line: {text}");
        let line = text.trim_end();
        let rest = line
            .strip_prefix("ts=")
            .and_then(|rest| rest.split_once(' '))
            .map(|(ts, rest)| {
                DateTime::parse_from_rfc3339(ts).expect("RFC 3339");
                assert!(
                    ts.ends_with('Z') && ts.len() == 27,
                    "UTC, microseconds: {ts}"
                );
                rest
            })
            .expect("starts with ts=");
        assert_eq!(
            rest,
            "level=warn target=leasecron::logging::format::tests msg=\"run finished\" job=tick \
             run_id=7 fencing_token=3 duration_seconds=1.5 delta=-2 partial=false \
             detail=\"failed (exit code 1)\" error=\"job x: cannot start \\\"sh\\\"\" equals=\"a=b\" \
             empty=\"\" lines=\"one\\ntwo\""
        );
        let pairs = parse(line);
        let get = |key: &str| {
            pairs
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.as_str())
                .unwrap_or_else(|| panic!("no {key} in {pairs:?}"))
        };
        assert_eq!(get("msg"), "run finished");
        assert_eq!(get("error"), "job x: cannot start \"sh\"");
        assert_eq!(get("lines"), "one\ntwo");
        assert_eq!(get("empty"), "");
        assert_eq!(get("equals"), "a=b");
        assert_eq!(pairs.len(), 15, "{pairs:?}");
    }

    #[test]
    fn display_and_str_captures_of_a_name_print_the_same() {
        let text = logged(LogFormat::Text, || {
            let job = String::from("tick");
            tracing::info!(job = %job, "a");
            tracing::info!(job = job.as_str(), "b");
            tracing::info!(job, "c");
        });
        let jobs: Vec<&str> = text
            .lines()
            .map(|line| line.split(" job=").nth(1).expect("a job field"))
            .collect();
        assert_eq!(jobs, ["tick", "tick", "tick"], "{text}");
    }

    #[test]
    fn a_message_that_needs_quotes_is_quoted_and_an_event_without_one_has_an_empty_msg() {
        let text = logged(LogFormat::Text, || {
            tracing::info!("{}", "output with \"quotes\" and = signs\n");
            tracing::info!(n = 1u64);
        });
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines[0].ends_with(" msg=\"output with \\\"quotes\\\" and = signs\\n\""),
            "{text}"
        );
        assert!(lines[1].ends_with(" msg=\"\" n=1"), "{text}");
    }

    #[test]
    fn span_fields_follow_the_event_fields_in_logfmt() {
        let text = logged(LogFormat::Text, || {
            let span = tracing::info_span!("outer", lease = "default/leasecron", n = 2u64);
            let _entered = span.enter();
            tracing::info!(job = "a b", "inside");
        });
        assert!(
            text.trim_end()
                .ends_with("msg=inside job=\"a b\" lease=default/leasecron n=2"),
            "{text}"
        );
    }

    #[test]
    fn a_json_line_keeps_numbers_as_numbers_and_times_in_rfc_3339() {
        let text = logged(LogFormat::Json, || {
            tracing::info!(
                fencing_token = 3u64,
                duration_seconds = 0.25f64,
                scheduled = %rfc3339(&"2026-12-05T21:21:15+01:00".parse::<DateTime<chrono::FixedOffset>>().expect("a time")),
                "run finished"
            );
        });
        let line: serde_json::Value = serde_json::from_str(text.trim_end()).expect("JSON");
        assert_eq!(line["message"], "run finished");
        assert_eq!(line["level"], "INFO");
        assert_eq!(line["fencing_token"], 3);
        assert_eq!(line["duration_seconds"], 0.25);
        assert_eq!(line["scheduled"], "2026-12-05T20:21:15Z");
        let ts = line["timestamp"].as_str().expect("a timestamp");
        DateTime::parse_from_rfc3339(ts).expect("RFC 3339");
        assert!(ts.ends_with('Z') && ts.len() == 27, "{ts}");
    }

    #[test]
    fn a_line_logged_outside_tracing_has_the_same_format() {
        let text = LogFormat::Text.line(
            Level::WARN,
            "leasecron::supervisor",
            "a \"b\"",
            &[("supervisor_pid", 12)],
        );
        assert_eq!(text.matches('\n').count(), 1, "{text}");
        let pairs = parse(text.trim_end());
        let keys: Vec<&str> = pairs.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["ts", "level", "target", "msg", "supervisor_pid"]);
        assert_eq!(pairs[1].1, "warn");
        assert_eq!(pairs[3].1, "a \"b\"");
        assert_eq!(pairs[4].1, "12");
        let json = LogFormat::Json.line(
            Level::ERROR,
            "leasecron::supervisor",
            "x",
            &[("supervisor_pid", 12)],
        );
        let value: serde_json::Value = serde_json::from_str(json.trim_end()).expect("JSON");
        assert_eq!(value["level"], "ERROR");
        assert_eq!(value["supervisor_pid"], 12);
        assert!(DateTime::parse_from_rfc3339(value["timestamp"].as_str().expect("ts")).is_ok());
    }

    #[test]
    fn seconds_are_a_float_and_times_are_utc() {
        assert_eq!(seconds(Duration::from_millis(2300)), 2.3);
        let paris = "2026-03-29T03:30:00+02:00"
            .parse::<DateTime<chrono::FixedOffset>>()
            .expect("a time");
        assert_eq!(rfc3339(&paris), "2026-03-29T01:30:00Z");
        let precise = "2026-03-29T01:30:00.5Z"
            .parse::<DateTime<Utc>>()
            .expect("a time");
        assert_eq!(rfc3339(&precise), "2026-03-29T01:30:00.500Z");
    }
}
