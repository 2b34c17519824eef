//! Cron expressions for the property tests: a model of the syntax leasecron accepts (README "Schedules"),
//! a proptest strategy that writes it out in its many spellings, and an oracle that says, from the model
//! alone, whether a wall-clock time matches and whether an instant should fire.
//!
//! The oracle is written from the documented rules, not from croner or `schedule.rs`: a field is a set of
//! values, `L`/`W`/`#` are computed from the calendar, restricted day fields combine with OR, and the DST
//! rules of Vixie cron decide which instants fire.

use chrono::{
    DateTime, Datelike, MappedLocalTime, NaiveDate, NaiveDateTime, TimeDelta, TimeZone, Timelike,
    Utc,
};
use chrono_tz::Tz;
use proptest::prelude::*;
use proptest::sample::select;

/// One item of a comma-separated list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    /// `*` (or `?` in a day field).
    Any,
    /// `*/n`.
    Every(u32),
    /// `a`.
    Value(u32),
    /// `a-b`.
    Range(u32, u32),
    /// `a-b/n`.
    RangeStep(u32, u32, u32),
}

/// A day-of-month field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DayOfMonth {
    /// A list of items.
    List(Vec<Item>),
    /// `L`: the last day of the month.
    Last,
    /// `LW`: the last weekday (Monday–Friday) of the month.
    LastWeekday,
    /// `nW`: the weekday nearest to day `n`, in the same month.
    NearestWeekday(u32),
}

/// A day-of-week field (0 and 7 are Sunday).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DayOfWeek {
    /// A list of items.
    List(Vec<Item>),
    /// `dL` or `d#L`: the last `d` of the month.
    Last(u32),
    /// `d#k`: the `k`-th `d` of the month.
    Nth(u32, u32),
}

/// A cron expression as the model sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cron {
    /// `None` for a 5-field expression (second 0).
    pub second: Option<Vec<Item>>,
    pub minute: Vec<Item>,
    pub hour: Vec<Item>,
    pub day_of_month: DayOfMonth,
    pub month: Vec<Item>,
    pub day_of_week: DayOfWeek,
}

/// A generated expression: the model and the text it is written as.
#[derive(Debug, Clone)]
pub struct CronCase {
    pub cron: Cron,
    pub text: String,
}

const MONTH_NAMES: [&str; 12] = [
    "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
];
const DAY_NAMES: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

/// The macros and what they stand for, 5-field.
pub const MACROS: [(&str, &str); 7] = [
    ("@yearly", "0 0 1 1 *"),
    ("@annually", "0 0 1 1 *"),
    ("@monthly", "0 0 1 * *"),
    ("@weekly", "0 0 * * 0"),
    ("@daily", "0 0 * * *"),
    ("@midnight", "0 0 * * *"),
    ("@hourly", "0 * * * *"),
];

// === strategies ===

/// A list item of a field whose values run from `min` to `max`; `*` and `*/n` only alone (`alone`).
fn item(min: u32, max: u32) -> impl Strategy<Value = Item> {
    let span = max - min;
    prop_oneof![
        3 => (min..=max).prop_map(Item::Value),
        2 => (min..=max, min..=max).prop_map(|(a, b)| Item::Range(a.min(b), a.max(b))),
        1 => (min..=max, min..=max, 1..=span.max(1))
            .prop_map(|(a, b, n)| Item::RangeStep(a.min(b), a.max(b), n)),
    ]
}

/// A field of values `min..=max`: `*`, `*/n`, or a list of one to three items.
fn numeric_field(min: u32, max: u32) -> impl Strategy<Value = Vec<Item>> {
    let span = max - min;
    prop_oneof![
        2 => Just(vec![Item::Any]),
        2 => (1..=span.max(1)).prop_map(|n| vec![Item::Every(n)]),
        5 => prop::collection::vec(item(min, max), 1..=3),
    ]
}

fn day_of_month(month_is_any: bool) -> impl Strategy<Value = DayOfMonth> {
    // Days past the 28th exist in every month only when the month field does not restrict it (the
    // expression must be able to fire); `*` may also appear inside a list (`1,*` is unrestricted).
    let last = if month_is_any { 31 } else { 28 };
    prop_oneof![
        4 => Just(DayOfMonth::List(vec![Item::Any])),
        1 => Just(DayOfMonth::List(vec![Item::Every(1)])),
        1 => (2..=15u32).prop_map(|n| DayOfMonth::List(vec![Item::Every(n)])),
        4 => prop::collection::vec(item(1, last), 1..=3).prop_map(DayOfMonth::List),
        1 => (prop::collection::vec(item(1, last), 1..=2), any::<bool>()).prop_map(|(mut items, first)| {
            let at = if first { 0 } else { items.len() };
            items.insert(at, Item::Any);
            DayOfMonth::List(items)
        }),
        1 => Just(DayOfMonth::Last),
        1 => Just(DayOfMonth::LastWeekday),
        1 => (1..=28u32).prop_map(DayOfMonth::NearestWeekday),
    ]
}

fn day_of_week() -> impl Strategy<Value = DayOfWeek> {
    prop_oneof![
        4 => Just(DayOfWeek::List(vec![Item::Any])),
        1 => Just(DayOfWeek::List(vec![Item::Every(1)])),
        1 => (2..=6u32).prop_map(|n| DayOfWeek::List(vec![Item::Every(n)])),
        4 => prop::collection::vec(item(0, 7), 1..=3).prop_map(DayOfWeek::List),
        1 => (0..=6u32).prop_map(DayOfWeek::Last),
        1 => (0..=6u32, 1..=4u32).prop_map(|(d, k)| DayOfWeek::Nth(d, k)),
    ]
}

/// A cron model (not a macro).
pub fn cron() -> impl Strategy<Value = Cron> {
    (
        prop::option::of(numeric_field(0, 59)),
        numeric_field(0, 59),
        numeric_field(0, 23),
        numeric_field(1, 12),
        day_of_week(),
    )
        .prop_flat_map(|(second, minute, hour, month, day_of_week)| {
            let month_is_any = month == [Item::Any];
            day_of_month(month_is_any).prop_map(move |day_of_month| Cron {
                second: second.clone(),
                minute: minute.clone(),
                hour: hour.clone(),
                day_of_month,
                month: month.clone(),
                day_of_week: day_of_week.clone(),
            })
        })
}

/// How an expression is spelled: names or numbers, letter case, separators.
#[derive(Debug, Clone)]
pub struct Spelling {
    names: bool,
    case: u8,
    question_mark: bool,
    separators: Vec<&'static str>,
    padding: (&'static str, &'static str),
}

fn spelling() -> impl Strategy<Value = Spelling> {
    let separator = select(vec![" ", " ", " ", "  ", "\t", " \t "]);
    let pad = select(vec!["", "", "", " ", "\t", "  "]);
    (
        any::<bool>(),
        0..3u8,
        any::<bool>(),
        prop::collection::vec(separator, 5),
        (pad.clone(), pad),
    )
        .prop_map(
            |(names, case, question_mark, separators, padding)| Spelling {
                names,
                case,
                question_mark,
                separators,
                padding,
            },
        )
}

/// A valid expression with its model: a macro (any case) or 5/6 fields in some spelling.
pub fn cron_case() -> impl Strategy<Value = CronCase> {
    prop_oneof![
        1 => (select(MACROS.to_vec()), 0..3u8).prop_map(|((name, expansion), case)| CronCase {
            cron: parse_plain(expansion),
            text: recase(name, case),
        }),
        6 => (cron(), spelling()).prop_map(|(cron, spelling)| CronCase {
            text: cron.write(&spelling),
            cron,
        }),
    ]
}

/// An IANA zone: often one with DST (or a history of odd changes), otherwise any chrono-tz knows.
pub fn zone() -> impl Strategy<Value = Tz> {
    let interesting: Vec<Tz> = [
        "Europe/Berlin",
        "America/New_York",
        "Australia/Lord_Howe", // 30-minute DST
        "America/Havana",      // changes at midnight
        "America/Santiago",    // changes at midnight, southern hemisphere
        "Asia/Tehran",
        "America/St_Johns", // -03:30
        "Europe/Dublin",    // negative DST
        "Africa/Casablanca",
        "Antarctica/Troll", // 2-hour DST
        "Pacific/Apia",     // skipped a whole day in 2011
        "Pacific/Chatham",  // +12:45
        "Asia/Kathmandu",   // +05:45
        "America/Sao_Paulo",
        "UTC",
    ]
    .iter()
    .map(|name| name.parse().expect("a chrono-tz zone"))
    .collect();
    prop_oneof![
        2 => select(interesting),
        1 => select(chrono_tz::TZ_VARIANTS.to_vec()),
    ]
}

fn recase(s: &str, case: u8) -> String {
    match case {
        0 => s.to_uppercase(),
        1 => s.to_lowercase(),
        _ => {
            let lower = s.to_lowercase();
            let mut chars = lower.chars();
            match chars.next() {
                Some('@') => {
                    let rest: String = chars.collect();
                    format!("@{}", recase(&rest, 2))
                }
                Some(first) => first.to_uppercase().chain(chars).collect(),
                None => String::new(),
            }
        }
    }
}

// === writing ===

/// Which names a field may spell its values with.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Names {
    None,
    Months,
    Days,
}

impl Cron {
    /// The expression in `spelling`.
    pub fn write(&self, spelling: &Spelling) -> String {
        let mut fields = Vec::new();
        if let Some(second) = &self.second {
            fields.push(write_list(second, Names::None, spelling, false));
        }
        fields.push(write_list(&self.minute, Names::None, spelling, false));
        fields.push(write_list(&self.hour, Names::None, spelling, false));
        fields.push(match &self.day_of_month {
            DayOfMonth::List(items) => write_list(items, Names::None, spelling, true),
            DayOfMonth::Last => "L".to_string(),
            DayOfMonth::LastWeekday => "LW".to_string(),
            DayOfMonth::NearestWeekday(n) => format!("{n}W"),
        });
        fields.push(write_list(&self.month, Names::Months, spelling, false));
        fields.push(match &self.day_of_week {
            DayOfWeek::List(items) => write_list(items, Names::Days, spelling, true),
            DayOfWeek::Last(d) if spelling.names => {
                format!("{}#L", write_value(*d, Names::Days, spelling))
            }
            DayOfWeek::Last(d) => format!("{d}L"),
            DayOfWeek::Nth(d, k) => format!("{}#{k}", write_value(*d, Names::Days, spelling)),
        });
        let mut text = spelling.padding.0.to_string();
        for (i, field) in fields.iter().enumerate() {
            if i > 0 {
                text.push_str(spelling.separators[i - 1]);
            }
            text.push_str(field);
        }
        text.push_str(spelling.padding.1);
        text
    }

    /// The expression with single spaces, numbers only (for messages).
    pub fn plain(&self) -> String {
        let spelling = Spelling {
            names: false,
            case: 0,
            question_mark: false,
            separators: vec![" "; 5],
            padding: ("", ""),
        };
        self.write(&spelling)
    }
}

fn write_list(items: &[Item], names: Names, spelling: &Spelling, day: bool) -> String {
    let parts: Vec<String> = items
        .iter()
        .map(|item| match item {
            Item::Any if day && spelling.question_mark => "?".to_string(),
            Item::Any => "*".to_string(),
            Item::Every(n) => format!("*/{n}"),
            Item::Value(v) => write_value(*v, names, spelling),
            Item::Range(a, b) => write_range(*a, *b, names, spelling),
            Item::RangeStep(a, b, n) => format!("{}/{n}", write_range(*a, *b, names, spelling)),
        })
        .collect();
    parts.join(",")
}

fn write_range(a: u32, b: u32, names: Names, spelling: &Spelling) -> String {
    // `0-7` (every day) has no spelling with names: `SUN-SUN` is Sunday alone.
    let names = if names == Names::Days && a != b && a % 7 == b % 7 {
        Names::None
    } else {
        names
    };
    format!(
        "{}-{}",
        write_value(a, names, spelling),
        write_value(b, names, spelling)
    )
}

fn write_value(v: u32, names: Names, spelling: &Spelling) -> String {
    if !spelling.names {
        return v.to_string();
    }
    let name = match names {
        Names::None => return v.to_string(),
        Names::Months => MONTH_NAMES[v as usize - 1],
        Names::Days => DAY_NAMES[v as usize % 7],
    };
    recase(name, spelling.case)
}

/// The model of a plain numeric 5-field expression (the macros' expansions).
fn parse_plain(expr: &str) -> Cron {
    let field = |s: &str| -> Vec<Item> {
        match s {
            "*" => vec![Item::Any],
            n => vec![Item::Value(n.parse().expect("a number"))],
        }
    };
    let parts: Vec<&str> = expr.split(' ').collect();
    Cron {
        second: None,
        minute: field(parts[0]),
        hour: field(parts[1]),
        day_of_month: DayOfMonth::List(field(parts[2])),
        month: field(parts[3]),
        day_of_week: DayOfWeek::List(field(parts[4])),
    }
}

// === the oracle ===

/// The values a list of items selects, as flags indexed by value.
fn values(items: &[Item], min: u32, max: u32) -> Vec<bool> {
    let mut set = vec![false; max as usize + 1];
    let mut add = |range: std::iter::StepBy<std::ops::RangeInclusive<u32>>| {
        for v in range {
            set[v as usize] = true;
        }
    };
    for item in items {
        match *item {
            Item::Any => add((min..=max).step_by(1)),
            Item::Every(n) => add((min..=max).step_by(n as usize)),
            Item::Value(v) => add((v..=v).step_by(1)),
            Item::Range(a, b) => add((a..=b).step_by(1)),
            Item::RangeStep(a, b, n) => add((a..=b).step_by(n as usize)),
        }
    }
    set
}

fn unrestricted(items: &[Item]) -> bool {
    items
        .iter()
        .any(|item| matches!(item, Item::Any | Item::Every(1)))
}

fn last_day(date: NaiveDate) -> u32 {
    let (y, m) = (date.year(), date.month());
    let first_of_next = if m == 12 {
        NaiveDate::from_ymd_opt(y + 1, 1, 1)
    } else {
        NaiveDate::from_ymd_opt(y, m + 1, 1)
    };
    first_of_next
        .and_then(|d| d.pred_opt())
        .map_or(31, |d| d.day())
}

fn is_weekday(date: NaiveDate) -> bool {
    date.weekday().num_days_from_monday() < 5
}

/// A [`Cron`] compiled to flags, to check many instants quickly.
#[derive(Debug, Clone)]
pub struct Matcher {
    second: Vec<bool>,
    minute: Vec<bool>,
    hour: Vec<bool>,
    month: Vec<bool>,
    day_of_month: DayOfMonth,
    days_of_month: Vec<bool>,
    day_of_week: DayOfWeek,
    days_of_week: Vec<bool>,
    /// (day-of-month restricted, day-of-week restricted)
    restricted: (bool, bool),
    fixed_time: bool,
    has_seconds: bool,
}

impl Cron {
    /// The oracle for this expression.
    pub fn matcher(&self) -> Matcher {
        let second = match &self.second {
            Some(items) => values(items, 0, 59),
            None => values(&[Item::Value(0)], 0, 59),
        };
        let (days_of_month, dom_restricted) = match &self.day_of_month {
            DayOfMonth::List(items) => (values(items, 1, 31), !unrestricted(items)),
            _ => (vec![false; 32], true),
        };
        let (days_of_week, dow_restricted) = match &self.day_of_week {
            DayOfWeek::List(items) => {
                let mut days = vec![false; 7];
                for (d, set) in values(items, 0, 7).into_iter().enumerate() {
                    days[d % 7] |= set;
                }
                (days, !unrestricted(items))
            }
            _ => (vec![false; 7], true),
        };
        Matcher {
            second,
            minute: values(&self.minute, 0, 59),
            hour: values(&self.hour, 0, 23),
            month: values(&self.month, 1, 12),
            day_of_month: self.day_of_month.clone(),
            days_of_month,
            day_of_week: self.day_of_week.clone(),
            days_of_week,
            restricted: (dom_restricted, dow_restricted),
            fixed_time: self.is_fixed_time(),
            has_seconds: self.second.is_some(),
        }
    }

    /// Vixie cron's fixed-time rule: neither the minute nor the hour field starts with `*`.
    pub fn is_fixed_time(&self) -> bool {
        let starts_with_star = |items: &[Item]| matches!(items[0], Item::Any | Item::Every(_));
        !starts_with_star(&self.minute) && !starts_with_star(&self.hour)
    }
}

impl Matcher {
    fn day_of_month_matches(&self, date: NaiveDate) -> bool {
        let day = date.day();
        let last = last_day(date);
        match &self.day_of_month {
            DayOfMonth::List(_) => self.days_of_month[day as usize],
            DayOfMonth::Last => day == last,
            DayOfMonth::LastWeekday => {
                let mut d = last;
                while !is_weekday(date.with_day(d).expect("a day of the month")) {
                    d -= 1;
                }
                day == d
            }
            DayOfMonth::NearestWeekday(n) => {
                let target = date.with_day(*n).expect("n <= 28");
                let nearest = match target.weekday().num_days_from_monday() {
                    5 if *n == 1 => n + 2, // Saturday the 1st: Monday the 3rd
                    5 => n - 1,
                    6 if *n == last => n - 2, // Sunday, the last day: Friday
                    6 => n + 1,
                    _ => *n,
                };
                day == nearest
            }
        }
    }

    fn day_of_week_matches(&self, date: NaiveDate) -> bool {
        let weekday = date.weekday().num_days_from_sunday();
        match &self.day_of_week {
            DayOfWeek::List(_) => self.days_of_week[weekday as usize],
            DayOfWeek::Last(d) => weekday == *d && date.day() + 7 > last_day(date),
            DayOfWeek::Nth(d, k) => weekday == *d && (date.day() - 1) / 7 + 1 == *k,
        }
    }

    /// True if the wall-clock time `wall` matches the expression.
    pub fn matches(&self, wall: NaiveDateTime) -> bool {
        if wall.nanosecond() != 0
            || !self.second[wall.second() as usize]
            || !self.minute[wall.minute() as usize]
            || !self.hour[wall.hour() as usize]
            || !self.month[wall.month() as usize]
        {
            return false;
        }
        let date = wall.date();
        match self.restricted {
            (false, false) => true,
            (true, false) => self.day_of_month_matches(date),
            (false, true) => self.day_of_week_matches(date),
            (true, true) => self.day_of_month_matches(date) || self.day_of_week_matches(date),
        }
    }

    pub fn is_fixed_time(&self) -> bool {
        self.fixed_time
    }

    /// True if the instant `at` should fire in `zone` (README "Schedules", DST rules).
    ///
    /// A wall time that occurs once fires if it matches. In an overlap, a match fires at its first
    /// occurrence, and for a wildcard schedule at its second too. A fixed-time schedule whose matches
    /// fall in a gap fires once, at the first instant after the gap.
    pub fn fires_at(&self, zone: Tz, at: DateTime<Utc>) -> bool {
        let wall = at.with_timezone(&zone).naive_local();
        if self.matches(wall) {
            match zone.from_local_datetime(&wall) {
                MappedLocalTime::Single(_) => return true,
                MappedLocalTime::Ambiguous(first, second) => {
                    if first.to_utc() == at || (!self.fixed_time && second.to_utc() == at) {
                        return true;
                    }
                }
                MappedLocalTime::None => panic!("{wall}, the wall time of {at}, does not exist"),
            }
        }
        self.fixed_time && self.skipped_before(zone, at).any(|w| self.matches(w))
    }

    /// If the wall clock of `zone` jumps forward at `at`, the wall-clock times it skips (whole seconds,
    /// or whole minutes for an expression without seconds); nothing otherwise.
    pub fn skipped_before(
        &self,
        zone: Tz,
        at: DateTime<Utc>,
    ) -> impl Iterator<Item = NaiveDateTime> {
        let second = TimeDelta::seconds(1);
        let before = (at - second).with_timezone(&zone).naive_local() + second;
        let after = at.with_timezone(&zone).naive_local();
        let step = if self.has_seconds {
            second
        } else {
            TimeDelta::minutes(1)
        };
        let mut cursor = if self.has_seconds || before.second() == 0 {
            before
        } else {
            before.with_second(0).expect("second 0") + step
        };
        std::iter::from_fn(move || {
            (cursor < after).then(|| {
                let wall = cursor;
                cursor += step;
                wall
            })
        })
    }
}
