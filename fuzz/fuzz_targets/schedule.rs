//! An arbitrary expression, time zone name and instant into `Schedule::parse` and, when it parses, up to
//! eight next fires (checked as in `leasecron_fuzz::check_fires`), the latest fire and `upcoming`.
//!
//! The input is text: `EXPRESSION\nZONE\nSECONDS` (the last two lines; the expression may span lines).
//! An unknown zone name or unparseable instant still picks one, from a hash, so every input runs.

#![no_main]

use chrono::DateTime;
use chrono_tz::{Tz, TZ_VARIANTS};
use leasecron::schedule::Schedule;
use leasecron_fuzz::{check_fires, fnv1a};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut parts = text.rsplitn(3, '\n');
    let (instant, zone, expr) = match (parts.next(), parts.next(), parts.next()) {
        (Some(instant), Some(zone), Some(expr)) => (instant, zone, expr),
        (Some(zone), Some(expr), None) => ("", zone, expr),
        _ => ("", "", text),
    };
    let zone: Tz = zone.parse().unwrap_or_else(|_| {
        TZ_VARIANTS[(fnv1a(zone.as_bytes()) % TZ_VARIANTS.len() as u64) as usize]
    });
    let (min, max) = (
        DateTime::<chrono::Utc>::MIN_UTC.timestamp(),
        DateTime::<chrono::Utc>::MAX_UTC.timestamp(),
    );
    let seconds = instant.trim().parse::<i64>().unwrap_or_else(|_| {
        // Mostly between 1900 and 2100, sometimes anywhere.
        let h = fnv1a(instant.as_bytes());
        if h.is_multiple_of(8) {
            min + (h >> 3) as i64 % (max - min)
        } else {
            -2_208_988_800 + (h >> 3) as i64 % 6_311_433_600
        }
    });
    let Some(t) = DateTime::from_timestamp(seconds.clamp(min, max), 0) else {
        return;
    };
    if let Ok(schedule) = Schedule::parse(expr, zone) {
        check_fires(&schedule, t, 8);
    }
});
