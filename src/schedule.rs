//! Cron schedules (croner + chrono-tz) and the per-job [`Timer`].
//!
//! # Expressions
//!
//! A [`Schedule`] is a cron expression evaluated on the wall clock of an IANA time zone:
//!
//! - 5 fields as in a Kubernetes CronJob (`minute hour day-of-month month day-of-week`, seconds = 0), or
//!   6 fields with a leading seconds field. A 7th (year) field is rejected.
//! - The macros `@yearly` (= `@annually`), `@monthly`, `@weekly`, `@daily` (= `@midnight`) and `@hourly`.
//!   croner has no `@midnight`; we add it because CronJob accepts it. `@every` is not supported.
//! - Month names `JAN`–`DEC` in the month field, day names `SUN`–`SAT` in the day-of-week field (any case;
//!   names elsewhere are errors), `0` and `7` both Sunday.
//! - `L` (last day of month; `5L`/`5#L` last Friday), `W` (`15W` nearest weekday, `LW` last weekday),
//!   `#` (`1#2` second Monday), `?` as `*` in the day fields. croner's `+` (AND) modifier is rejected.
//! - Day-of-month and day-of-week combine with **OR** when both are restricted, and with AND (the
//!   restricted one decides) when either is unrestricted, as in CronJob (robfig/cron): a day field is
//!   unrestricted if it is `*`, `?` or `*/1`; `*/2` is a restriction. croner's `dom_and_dow` is forced off.
//! - An expression that can never fire (`0 0 30 2 *`) is rejected.
//!
//! # Daylight-saving time
//!
//! The expression matches wall-clock times in the schedule's zone. A zone's offset change either skips
//! wall-clock times (spring forward: a gap) or repeats them (fall back: an overlap). We follow Vixie cron,
//! which sorts schedules in two kinds:
//!
//! - **fixed-time**: neither the minute nor the hour field starts with `*` (`30 2 * * *`, `0 2,14 * * *`).
//!   A time in a gap fires once, at the first instant after the gap (02:30 Europe/Berlin on the
//!   spring-forward day fires at 03:00 CEST = 01:00 UTC; several skipped times of one schedule merge into
//!   that one fire). A time in an overlap fires once, at its first occurrence.
//! - **wildcard**: the minute or the hour field starts with `*` (`*/15 * * * *`, `0 * * * *`). These
//!   express an interval, and real time keeps it: times in a gap do not exist and are skipped, times in an
//!   overlap fire at both occurrences. `*/15 * * * *` fires every 15 minutes of real time through both
//!   changes; `@hourly` fires every hour of real time.
//!
//! croner 4 has the same two rules but calls a schedule fixed-time only when its second, minute and hour
//! fields are single values, so `0 2,14 * * *` would skip 02:00 on a spring-forward day. We therefore use
//! croner only to match wall-clock times (on `NaiveDateTime`) and map them to instants here.
//!
//! # Timer
//!
//! [`Timer`] turns a schedule into ticks on tokio's clock; see its documentation for stalls and catch-up.

mod expr;
mod timer;

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;
use std::rc::Rc;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use chrono::{
    DateTime, FixedOffset, MappedLocalTime, NaiveDateTime, Offset, SubsecRound, TimeDelta,
    TimeZone, Utc,
};
use chrono_tz::Tz;
use croner::errors::CronError;
use croner::parser::{CronParser, Seconds, Year};
use croner::{Cron, CronComponent};

pub use timer::{Tick, Timer, MAX_SLEEP, ON_TIME_TOLERANCE, PRECISE_LEAD};

/// Half-width of the window searched for the end of a DST gap: wider than any UTC offset ever in use.
const ZONE_SEARCH_RADIUS: TimeDelta = TimeDelta::hours(16);
/// One second, the resolution of cron and of zone transitions.
const ONE_SECOND: TimeDelta = TimeDelta::seconds(1);

/// Why an expression is not a valid schedule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// Nothing but whitespace.
    #[error("the schedule is empty")]
    Empty,
    /// An `@` word that is not one of the macros.
    #[error(
        "unknown macro `{0}` (expected @yearly, @annually, @monthly, @weekly, @daily, @midnight or @hourly)"
    )]
    UnknownMacro(String),
    /// Not 5 or 6 fields.
    #[error(
        "expected 5 fields (minute hour day-of-month month day-of-week) or 6 (with leading seconds), found {0}"
    )]
    FieldCount(usize),
    /// Letters that are not a name (or `L`/`W`) of the field they are in.
    #[error("unexpected `{word}` in the {field} field")]
    UnexpectedWord {
        /// The field's name.
        field: &'static str,
        /// The offending word.
        word: String,
    },
    /// croner's `+` prefix on day-of-week.
    #[error(
        "the `+` modifier is not supported: day-of-month and day-of-week combine with OR, as in cron"
    )]
    PlusModifier,
    /// croner rejected one field.
    #[error("invalid {field} field `{text}`: {reason}")]
    InvalidField {
        /// The field's name.
        field: &'static str,
        /// The field as written (names replaced by numbers).
        text: String,
        /// croner's reason.
        reason: String,
    },
    /// croner rejected the expression as a whole.
    #[error("invalid schedule: {0}")]
    Invalid(String),
    /// The expression is valid but matches no date (`0 0 30 2 *`).
    #[error("the schedule never fires")]
    NeverFires,
}

/// A parsed cron expression in an IANA time zone.
///
/// Two schedules are equal when their expressions are written the same and their zones are the same.
#[derive(Debug, Clone)]
pub struct Schedule {
    /// The parsed form without its table of years ([`compact`]), shared by the clones and by the
    /// schedules of the same expression; [`Schedule::cron`] lends the whole form.
    compact: Arc<Cron>,
    zone: Tz,
    /// Shared by the clones (each job's timer holds one).
    expression: Arc<str>,
    fixed_time: bool,
}

// === impl Schedule ===

impl Schedule {
    /// Parses `expr` (see the module documentation for the accepted syntax) for the zone `zone`.
    pub fn parse(expr: &str, zone: Tz) -> Result<Schedule, Error> {
        Ok(Compiled::new(expr)?.in_zone(expr, zone))
    }

    /// The expression as written (trimmed).
    pub fn expression(&self) -> &str {
        &self.expression
    }

    /// The zone whose wall clock the expression is evaluated on.
    pub fn zone(&self) -> Tz {
        self.zone
    }

    /// True for a fixed-time schedule, false for a wildcard one (see the module doc on DST).
    pub fn is_fixed_time(&self) -> bool {
        self.fixed_time
    }

    /// First fire strictly after `t`. `None` only if croner's bounded search finds none (past year 5000).
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let wall = self.wall(t);
        let ahead = self.first_fire_after_wall(t, wall);
        let repeated = if self.fixed_time {
            None
        } else {
            self.first_repeat_after(t, wall)
        };
        [ahead, repeated].into_iter().flatten().min()
    }

    /// The fires in `[from, to]`, oldest first (a backfill's slots).
    pub fn slots_in(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> impl Iterator<Item = DateTime<Utc>> + '_ {
        let first = self.next_after(from - chrono::Duration::nanoseconds(1));
        std::iter::successors(first, move |slot| self.next_after(*slot))
            .take_while(move |slot| *slot <= to)
    }

    /// Latest fire at or before `t` (for catch-up after a stall). `None` if croner's bounded search finds
    /// none; a valid schedule fires at least every 8 years, so that means `t` is before its first fire
    /// since year 1.
    pub fn latest_at_or_before(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let wall = self.wall(t);
        let behind = self.last_fire_at_or_before_wall(t, wall);
        let first_fold = self.last_first_fold_fire_before(t, wall);
        [behind, first_fold].into_iter().flatten().max()
    }

    /// The next `n` fires strictly after `t`, in the schedule's zone (for `leasecron next`).
    pub fn upcoming(&self, t: DateTime<Utc>, n: usize) -> Vec<DateTime<Tz>> {
        let mut fires = Vec::with_capacity(n);
        let mut after = t;
        while fires.len() < n {
            let Some(next) = self.next_after(after) else {
                break;
            };
            fires.push(next.with_timezone(&self.zone));
            after = next;
        }
        fires
    }

    /// The shortest time between two consecutive fires among the first `count` fires after `t`, with
    /// the two fires that are that close; `None` if fewer than two fires follow `t`.
    ///
    /// A look-ahead, not a bound on the whole schedule: a gap that only a distant date produces (a DST
    /// change months away merging two fixed times, a 29 February) may be shorter.
    pub fn shortest_gap(
        &self,
        t: DateTime<Utc>,
        count: usize,
    ) -> Option<(Duration, DateTime<Utc>, DateTime<Utc>)> {
        let mut previous = self.next_after(t)?;
        let mut shortest: Option<(Duration, DateTime<Utc>, DateTime<Utc>)> = None;
        for _ in 1..count {
            let Some(next) = self.next_after(previous) else {
                break;
            };
            let gap = (next - previous).to_std().unwrap_or_default();
            if shortest.is_none_or(|(least, _, _)| gap < least) {
                shortest = Some((gap, previous, next));
            }
            previous = next;
        }
        shortest
    }

    /// Walks wall-clock matches forward from `wall` (the wall time of `t`) to the first that fires after `t`.
    ///
    /// This misses only the second occurrences of times *before* `wall` in an overlap that `t` is in the
    /// first half of; [`Self::first_repeat_after`] covers those.
    fn first_fire_after_wall(
        &self,
        t: DateTime<Utc>,
        wall: NaiveDateTime,
    ) -> Option<DateTime<Utc>> {
        let mut cursor = wall;
        loop {
            let matched = self.cron().find_next_occurrence(&cursor, false).ok()?;
            cursor = matched;
            match self.zone.from_local_datetime(&matched) {
                MappedLocalTime::Single(at) if at.to_utc() > t => return Some(at.to_utc()),
                MappedLocalTime::Single(_) => {}
                MappedLocalTime::Ambiguous(first, second) => {
                    if first.to_utc() > t {
                        return Some(first.to_utc());
                    }
                    if !self.fixed_time && second.to_utc() > t {
                        return Some(second.to_utc());
                    }
                }
                MappedLocalTime::None => {
                    let Some(after_gap) = self.first_instant_after_gap(matched) else {
                        continue;
                    };
                    if self.fixed_time && after_gap > t {
                        return Some(after_gap);
                    }
                    // Every wall time in the gap is skipped: resume the search at the gap's end.
                    cursor = cursor.max(self.wall(after_gap) - ONE_SECOND);
                }
            }
        }
    }

    /// The second occurrence of the earliest match in the repeated range, when `t` is in its first half
    /// and that match is not after `wall` (wildcard schedules only).
    fn first_repeat_after(&self, t: DateTime<Utc>, wall: NaiveDateTime) -> Option<DateTime<Utc>> {
        let MappedLocalTime::Ambiguous(first, second) = self.zone.from_local_datetime(&wall) else {
            return None;
        };
        if first.to_utc() != t {
            return None;
        }
        let change = self.offset_change(t, second.to_utc())?;
        let matched = self
            .cron()
            .find_next_occurrence(&self.wall(change), true)
            .ok()?;
        if matched > wall {
            return None;
        }
        match self.zone.from_local_datetime(&matched) {
            MappedLocalTime::Ambiguous(_, second) => Some(second.to_utc()),
            _ => None,
        }
    }

    /// Walks wall-clock matches backward from `wall` to the first that fires at or before `t`.
    fn last_fire_at_or_before_wall(
        &self,
        t: DateTime<Utc>,
        wall: NaiveDateTime,
    ) -> Option<DateTime<Utc>> {
        let mut cursor = wall;
        let mut inclusive = true;
        loop {
            let matched = self
                .cron()
                .find_previous_occurrence(&cursor, inclusive)
                .ok()?;
            cursor = matched;
            inclusive = false;
            match self.zone.from_local_datetime(&matched) {
                MappedLocalTime::Single(at) if at.to_utc() <= t => return Some(at.to_utc()),
                MappedLocalTime::Single(_) => {}
                MappedLocalTime::Ambiguous(first, second) => {
                    if !self.fixed_time && second.to_utc() <= t {
                        return Some(second.to_utc());
                    }
                    if first.to_utc() <= t {
                        return Some(first.to_utc());
                    }
                }
                MappedLocalTime::None => {
                    let Some(after_gap) = self.first_instant_after_gap(matched) else {
                        continue;
                    };
                    if self.fixed_time && after_gap <= t {
                        return Some(after_gap);
                    }
                    cursor = cursor.min(self.wall(after_gap - ONE_SECOND) + ONE_SECOND);
                }
            }
        }
    }

    /// The first occurrence of the latest match in the repeated range after `wall`, when `t` is in the
    /// range's second half.
    fn last_first_fold_fire_before(
        &self,
        t: DateTime<Utc>,
        wall: NaiveDateTime,
    ) -> Option<DateTime<Utc>> {
        let MappedLocalTime::Ambiguous(first, second) = self.zone.from_local_datetime(&wall) else {
            return None;
        };
        if second.to_utc() != t {
            return None;
        }
        let change = self.offset_change(first.to_utc(), t)?;
        let range_end = self.wall(change - ONE_SECOND) + ONE_SECOND;
        let matched = self
            .cron()
            .find_previous_occurrence(&range_end, false)
            .ok()?;
        if matched <= wall {
            return None;
        }
        match self.zone.from_local_datetime(&matched) {
            MappedLocalTime::Ambiguous(first, _) => Some(first.to_utc()),
            _ => None,
        }
    }

    /// The first instant whose wall time is past `skipped`, a wall time inside a gap.
    fn first_instant_after_gap(&self, skipped: NaiveDateTime) -> Option<DateTime<Utc>> {
        let mut lo = skipped.and_utc() - ZONE_SEARCH_RADIUS;
        let mut hi = skipped.and_utc() + ZONE_SEARCH_RADIUS;
        if self.wall(lo) >= skipped || self.wall(hi) <= skipped {
            return None;
        }
        while hi - lo > ONE_SECOND {
            let mid = lo + TimeDelta::seconds((hi - lo).num_seconds() / 2);
            if self.wall(mid) > skipped {
                hi = mid;
            } else {
                lo = mid;
            }
        }
        Some(hi)
    }

    /// The first whole second in `(from, to]` at which the zone's offset differs from the one at `from`.
    fn offset_change(&self, from: DateTime<Utc>, to: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let before = self.offset_at(from);
        let mut lo = from.trunc_subsecs(0);
        let mut hi = to.trunc_subsecs(0);
        if self.offset_at(hi) == before {
            return None;
        }
        while hi - lo > ONE_SECOND {
            let mid = lo + TimeDelta::seconds((hi - lo).num_seconds() / 2);
            if self.offset_at(mid) == before {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        Some(hi)
    }

    /// The whole parsed form, with the table of years every search reads: rebuilt from the compact one
    /// when this thread last used another schedule (a clone of a few small tables and one copy of the
    /// years'), else the one this thread kept.
    fn cron(&self) -> Rc<Cron> {
        WHOLE.with(|last| {
            let mut last = last.borrow_mut();
            if let Some((compact, whole)) = &*last {
                if Arc::ptr_eq(compact, &self.compact) {
                    return Rc::clone(whole);
                }
            }
            let whole = Rc::new(whole(&self.compact));
            *last = Some((Arc::clone(&self.compact), Rc::clone(&whole)));
            whole
        })
    }

    fn offset_at(&self, t: DateTime<Utc>) -> FixedOffset {
        self.zone.offset_from_utc_datetime(&t.naive_utc()).fix()
    }

    fn wall(&self, t: DateTime<Utc>) -> NaiveDateTime {
        // Within a day of chrono's limits the wall time may not be representable (`naive_local` panics):
        // saturate. croner searches only years 1 to 5000, so nothing fires there either way.
        let offset = self.offset_at(t);
        t.naive_utc()
            .checked_add_offset(offset)
            .unwrap_or(if offset.local_minus_utc() > 0 {
                NaiveDateTime::MAX
            } else {
                NaiveDateTime::MIN
            })
    }
}

thread_local! {
    /// The compact form this thread last searched with, and its whole form ([`Schedule::cron`]).
    static WHOLE: RefCell<Option<(Arc<Cron>, Rc<Cron>)>> = const { RefCell::new(None) };
}

/// `cron` without its table of years, which every schedule has the same (every year, [`EVERY_YEAR`]):
/// croner sizes that table by the largest year it searches, 5 001 bytes, which was most of what a job
/// cost at rest (benches/heap_scale.rs). [`whole`] puts it back.
fn compact(mut cron: Cron) -> Cron {
    cron.pattern.years = CronComponent::new(0, 0, 0, 0);
    cron
}

/// The form croner searches with: `compact` with the years of `*`.
fn whole(compact: &Cron) -> Cron {
    let mut cron = compact.clone();
    cron.pattern.years = EVERY_YEAR.clone();
    cron
}

/// An expression parsed for croner, in no zone yet: what [`Parser`] keeps per distinct expression.
#[derive(Debug, Clone)]
struct Compiled {
    /// Without its table of years ([`compact`]).
    cron: Arc<Cron>,
    fixed_time: bool,
}

impl Compiled {
    fn new(expr: &str) -> Result<Compiled, Error> {
        let fields = expr::Fields::parse(expr)?;
        let cron =
            parse_cron(&fields.to_pattern()).map_err(|whole| name_the_field(&fields, &whole))?;
        let epoch = DateTime::<Utc>::UNIX_EPOCH.naive_utc();
        if cron.find_next_occurrence(&epoch, false).is_err() {
            return Err(Error::NeverFires);
        }
        Ok(Compiled {
            cron: Arc::new(compact(cron)),
            fixed_time: fields.is_fixed_time(),
        })
    }

    fn in_zone(&self, expr: &str, zone: Tz) -> Schedule {
        Schedule {
            compact: Arc::clone(&self.cron),
            zone,
            expression: Arc::from(expr.trim()),
            fixed_time: self.fixed_time,
        }
    }
}

/// Parses many schedules (those of one jobs file), each distinct expression once.
///
/// A large file repeats expressions (`@daily`, `*/5 * * * *`, the same time in many zones), and parsing
/// one costs tens of microseconds in croner; here a repeat costs a lookup, and the schedules of the same
/// expression share one parsed form. The result is exactly [`Schedule::parse`]'s, errors included.
#[derive(Debug, Default)]
pub struct Parser {
    /// By the expression exactly as given (the result depends on nothing else but the zone, which is
    /// applied after the lookup).
    parsed: HashMap<String, Result<Compiled, Error>>,
}

impl Parser {
    /// A parser that has seen no expression yet.
    pub fn new() -> Parser {
        Parser::default()
    }

    /// [`Schedule::parse`], reusing the result for an expression seen before.
    pub fn parse(&mut self, expr: &str, zone: Tz) -> Result<Schedule, Error> {
        let compiled = match self.parsed.get(expr) {
            Some(compiled) => compiled,
            None => self
                .parsed
                .entry(expr.to_string())
                .or_insert_with(|| Compiled::new(expr)),
        };
        match compiled {
            Ok(compiled) => Ok(compiled.in_zone(expr, zone)),
            Err(err) => Err(err.clone()),
        }
    }
}

impl PartialEq for Schedule {
    fn eq(&self, other: &Self) -> bool {
        self.expression == other.expression && self.zone == other.zone
    }
}

impl Eq for Schedule {}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.expression, self.zone)
    }
}

/// The year field [`parse_cron`] hands croner in place of `*`.
const PLACEHOLDER_YEAR: &str = "2000";

/// croner's year field for `*` (every year it can match), parsed once.
static EVERY_YEAR: LazyLock<CronComponent> = LazyLock::new(|| {
    let every = parser().parse("0 0 0 * * * *");
    every.expect("a valid pattern").pattern.years
});

/// Parses six fields (seconds first) that match in every year.
///
/// croner parses a `*` year field by setting 5 000 bits one at a time: that was three quarters of the
/// cost of parsing a schedule, and most of the cost of validating a large jobs file. So the fields are
/// parsed with one placeholder year, and the years of a parsed `*` are copied in.
fn parse_cron(six_fields: &str) -> Result<Cron, CronError> {
    let mut cron = parser().parse(&format!("{six_fields} {PLACEHOLDER_YEAR}"))?;
    cron.pattern.years = EVERY_YEAR.clone();
    Ok(cron)
}

/// croner configured for our syntax: fields already normalised to six, plus a year field ([`parse_cron`]),
/// OR of the day fields.
fn parser() -> CronParser {
    CronParser::builder()
        .seconds(Seconds::Required)
        .year(Year::Required)
        .dom_and_dow(false)
        .alternative_weekdays(false)
        .sloppy_ranges(false)
        .build()
}

/// Finds the field croner objects to, so the message can name it.
fn name_the_field(fields: &expr::Fields, whole: &CronError) -> Error {
    for (field, text, pattern) in fields.isolated() {
        if let Err(err) = parse_cron(&pattern) {
            return Error::InvalidField {
                field,
                text: text.to_string(),
                reason: describe(&err),
            };
        }
    }
    Error::Invalid(describe(whole))
}

fn describe(err: &CronError) -> String {
    match err {
        CronError::ComponentError(msg)
        | CronError::InvalidPattern(msg)
        | CronError::IllegalCharacters(msg) => msg.trim_end_matches('.').to_string(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        s.parse().expect("RFC 3339 test time")
    }

    #[test]
    fn field_errors_name_the_field() {
        let err = Schedule::parse("60 * * * *", Tz::UTC).unwrap_err();
        assert!(
            matches!(
                err,
                Error::InvalidField {
                    field: "minute",
                    ..
                }
            ),
            "{err:?}"
        );
        let err = Schedule::parse("0 0 * 13 *", Tz::UTC).unwrap_err();
        assert!(
            matches!(err, Error::InvalidField { field: "month", .. }),
            "{err:?}"
        );
        let err = Schedule::parse("0/10 * * * *", Tz::UTC).unwrap_err();
        assert!(
            matches!(
                err,
                Error::InvalidField {
                    field: "minute",
                    ..
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn schedules_that_never_fire_are_rejected() {
        for expr in ["0 0 30 2 *", "0 0 31 4,6,9,11 *", "0 0 * * L"] {
            assert_eq!(
                Schedule::parse(expr, Tz::UTC).unwrap_err(),
                Error::NeverFires,
                "{expr}"
            );
        }
    }

    #[test]
    fn the_slots_in_a_range_include_both_ends() {
        let s = Schedule::parse("*/10 * * * *", Tz::UTC).expect("valid");
        let slots: Vec<_> = s
            .slots_in(utc("2024-05-01T10:20:00Z"), utc("2024-05-01T10:40:00Z"))
            .collect();
        assert_eq!(
            slots,
            [
                utc("2024-05-01T10:20:00Z"),
                utc("2024-05-01T10:30:00Z"),
                utc("2024-05-01T10:40:00Z")
            ]
        );
        let between = s.slots_in(utc("2024-05-01T10:21:00Z"), utc("2024-05-01T10:29:00Z"));
        assert_eq!(between.count(), 0);
    }

    #[test]
    fn next_after_is_strict_and_latest_is_inclusive() {
        let s = Schedule::parse("*/10 * * * *", Tz::UTC).expect("valid");
        let on_slot = utc("2024-05-01T10:20:00Z");
        assert_eq!(s.next_after(on_slot), Some(utc("2024-05-01T10:30:00Z")));
        assert_eq!(s.latest_at_or_before(on_slot), Some(on_slot));
        let between = utc("2024-05-01T10:20:00.5Z");
        assert_eq!(s.next_after(between), Some(utc("2024-05-01T10:30:00Z")));
        assert_eq!(s.latest_at_or_before(between), Some(on_slot));
    }

    #[test]
    fn instants_at_the_limits_of_chrono_do_not_panic() {
        // Apia is UTC+13 and New York UTC-5 there: their wall times are past chrono's limits.
        for zone in [Tz::Pacific__Apia, Tz::America__New_York] {
            let s = Schedule::parse("* * * * *", zone).expect("valid");
            assert_eq!(s.next_after(DateTime::<Utc>::MAX_UTC), None, "{zone}");
            assert_eq!(
                s.latest_at_or_before(DateTime::<Utc>::MIN_UTC),
                None,
                "{zone}"
            );
            assert!(s.next_after(DateTime::<Utc>::MIN_UTC).is_some(), "{zone}");
            assert!(
                s.latest_at_or_before(DateTime::<Utc>::MAX_UTC).is_some(),
                "{zone}"
            );
        }
    }

    #[test]
    fn the_parser_gives_what_parse_gives_and_shares_repeats() {
        let mut parser = Parser::new();
        let now = utc("2024-03-31T00:30:00Z");
        for _ in 0..2 {
            for expr in [
                "30 2 * * *",
                " 30 2 * * * ",
                "*/15 * * * *",
                "@daily",
                "0 0 30 2 *",
                "61 * * * *",
                "",
            ] {
                for zone in [Tz::UTC, Tz::Europe__Berlin] {
                    let direct = Schedule::parse(expr, zone);
                    let reused = parser.parse(expr, zone);
                    assert_eq!(reused, direct, "{expr:?} in {zone}");
                    if let (Ok(direct), Ok(reused)) = (direct, reused) {
                        assert_eq!(reused.expression(), direct.expression());
                        assert_eq!(reused.is_fixed_time(), direct.is_fixed_time());
                        assert_eq!(reused.next_after(now), direct.next_after(now), "{expr:?}");
                    }
                }
            }
        }
        let a = parser.parse("@hourly", Tz::UTC).expect("valid");
        let b = parser.parse("@hourly", Tz::Asia__Tokyo).expect("valid");
        assert!(
            Arc::ptr_eq(&a.compact, &b.compact),
            "one parsed form per expression"
        );
        assert_eq!(b.zone(), Tz::Asia__Tokyo);
    }

    #[test]
    fn equality_is_by_expression_and_zone() {
        let a = Schedule::parse("@daily", Tz::UTC).expect("valid");
        let b = Schedule::parse(" @daily ", Tz::UTC).expect("valid");
        let c = Schedule::parse("@daily", Tz::Europe__Berlin).expect("valid");
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(a.to_string(), "@daily (UTC)");
    }
}
