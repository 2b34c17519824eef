//! Structure-aware: cron fields built from `arbitrary` items (mostly valid, sometimes not), in a zone
//! from chrono-tz, starting up to ten hours around one of the zone's offset changes in a year between
//! 1970 and 2099. Reaches the DST paths far more often than text does.
//!
//! Checks as in `leasecron_fuzz::check_fires`: strictly increasing whole-second fires at wall times
//! that exist, each its own latest fire, the one before it found by walking back, `upcoming` agreeing.

#![no_main]

use chrono::{TimeDelta, TimeZone, Utc};
use chrono_tz::TZ_VARIANTS;
use leasecron::schedule::Schedule;
use leasecron_fuzz::{check_fires, transitions};
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
enum Item {
    Any,
    Question,
    Every(u8),
    Value(u8),
    Range(u8, u8),
    RangeStep(u8, u8, u8),
    Name(u8),
    NameRange(u8, u8),
    Last,
    LastWeekday,
    NearestWeekday(u8),
    LastOf(u8),
    Nth(u8, u8),
}

#[derive(Arbitrary, Debug)]
struct Input {
    macro_name: Option<u8>,
    second: Option<Vec<Item>>,
    minute: Vec<Item>,
    hour: Vec<Item>,
    day_of_month: Vec<Item>,
    month: Vec<Item>,
    day_of_week: Vec<Item>,
    zone: u16,
    year: u8,
    change: u8,
    minutes_from_change: i16,
    fires: u8,
}

const MACROS: [&str; 8] = [
    "@yearly",
    "@annually",
    "@monthly",
    "@weekly",
    "@daily",
    "@midnight",
    "@hourly",
    "@every",
];
const MONTHS: [&str; 12] = [
    "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
];
const DAYS: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

/// Values mostly within `0..limit`, sometimes just past it.
fn value(v: u8, limit: u8) -> u8 {
    v % (limit + 2)
}

fn field(items: &[Item], limit: u8, names: &[&str]) -> String {
    if items.is_empty() {
        return "*".to_string();
    }
    let name = |v: u8| {
        if names.is_empty() {
            value(v, limit).to_string()
        } else {
            names[v as usize % names.len()].to_string()
        }
    };
    let parts: Vec<String> = items
        .iter()
        .take(4)
        .map(|item| match *item {
            Item::Any => "*".to_string(),
            Item::Question => "?".to_string(),
            Item::Every(n) => format!("*/{}", value(n, limit)),
            Item::Value(v) => value(v, limit).to_string(),
            Item::Range(a, b) => format!("{}-{}", value(a, limit), value(b, limit)),
            Item::RangeStep(a, b, n) => {
                format!(
                    "{}-{}/{}",
                    value(a, limit),
                    value(b, limit),
                    value(n, limit)
                )
            }
            Item::Name(v) => name(v),
            Item::NameRange(a, b) => format!("{}-{}", name(a), name(b)),
            Item::Last => "L".to_string(),
            Item::LastWeekday => "LW".to_string(),
            Item::NearestWeekday(d) => format!("{}W", value(d, 31)),
            Item::LastOf(d) => format!("{}L", value(d, 7)),
            Item::Nth(d, k) => format!("{}#{}", value(d, 7), k % 7),
        })
        .collect();
    parts.join(",")
}

fuzz_target!(|input: Input| {
    let expression = match input.macro_name {
        Some(m) => MACROS[m as usize % MACROS.len()].to_string(),
        None => {
            let mut fields = Vec::new();
            if let Some(second) = &input.second {
                fields.push(field(second, 59, &[]));
            }
            fields.push(field(&input.minute, 59, &[]));
            fields.push(field(&input.hour, 23, &[]));
            fields.push(field(&input.day_of_month, 31, &[]));
            fields.push(field(&input.month, 12, &MONTHS));
            fields.push(field(&input.day_of_week, 7, &DAYS));
            fields.join(" ")
        }
    };
    let zone = TZ_VARIANTS[input.zone as usize % TZ_VARIANTS.len()];
    let Ok(schedule) = Schedule::parse(&expression, zone) else {
        return;
    };
    let year = 1970 + i32::from(input.year % 130);
    let start = Utc.with_ymd_and_hms(year, 1, 1, 0, 0, 0).unwrap();
    let end = Utc.with_ymd_and_hms(year + 1, 1, 1, 0, 0, 0).unwrap();
    let changes = transitions(zone, start, end);
    let around = if changes.is_empty() {
        start
    } else {
        changes[input.change as usize % changes.len()]
    };
    let t = around + TimeDelta::minutes(i64::from(input.minutes_from_change % 600));
    check_fires(&schedule, t, 1 + usize::from(input.fires % 16));
});
