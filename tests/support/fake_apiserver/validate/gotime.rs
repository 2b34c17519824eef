//! Go's `time.Parse` for the two layouts the API server decodes timestamps with: `metav1.MicroTime`
//! (`2006-01-02T15:04:05.000000Z07:00`) and `metav1.Time` (`time.RFC3339`), accepting what Go accepts
//! (a comma before the fraction, a one-digit hour, offsets up to ±24:00) and failing with Go's messages.
//! Parsed times are printed back as the API server prints them: in UTC, with six fractional digits for a
//! `MicroTime` and none for a `Time`.

use chrono::{Duration, NaiveDate, NaiveDateTime, NaiveTime};

use super::super::status::go_quote;

/// The Go layout of `metav1.MicroTime`.
pub const MICRO_TIME_LAYOUT: &str = "2006-01-02T15:04:05.000000Z07:00";
/// The Go layout of `metav1.Time` (`time.RFC3339`).
pub const TIME_LAYOUT: &str = "2006-01-02T15:04:05Z07:00";

/// One element of a layout.
#[derive(Clone, Copy)]
enum Chunk {
    /// Literal text that must be there.
    Lit(&'static str),
    Year,
    Month,
    Day,
    Hour,
    Minute,
    Second,
    /// `.000000`: a `.` or `,` and exactly this many digits.
    Fraction(usize),
    /// `Z07:00`.
    Zone,
}

const MICRO_TIME_CHUNKS: [(Chunk, &str); 13] = [
    (Chunk::Year, "2006"),
    (Chunk::Lit("-"), "-"),
    (Chunk::Month, "01"),
    (Chunk::Lit("-"), "-"),
    (Chunk::Day, "02"),
    (Chunk::Lit("T"), "T"),
    (Chunk::Hour, "15"),
    (Chunk::Lit(":"), ":"),
    (Chunk::Minute, "04"),
    (Chunk::Lit(":"), ":"),
    (Chunk::Second, "05"),
    (Chunk::Fraction(6), ".000000"),
    (Chunk::Zone, "Z07:00"),
];

/// Parses a `MicroTime` as the API server does; `Ok` is the time as the server prints it back.
pub fn parse_micro_time(text: &str) -> Result<String, String> {
    let parsed = parse(text, MICRO_TIME_LAYOUT, &MICRO_TIME_CHUNKS)?;
    Ok(parsed.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string())
}

/// Parses a `Time` (RFC 3339) as the API server does; `Ok` is the time as the server prints it back.
pub fn parse_time(text: &str) -> Result<String, String> {
    let chunks: Vec<(Chunk, &str)> = MICRO_TIME_CHUNKS
        .iter()
        .copied()
        .filter(|(chunk, _)| !matches!(chunk, Chunk::Fraction(_)))
        .collect();
    let parsed = parse(text, TIME_LAYOUT, &chunks)?;
    Ok(parsed.format("%Y-%m-%dT%H:%M:%SZ").to_string())
}

#[derive(Default)]
struct Fields {
    year: i32,
    month: u32,
    day: u32,
    hour: u32,
    minute: u32,
    second: u32,
    nanos: i64,
    offset_seconds: i64,
}

fn parse(text: &str, layout: &str, chunks: &[(Chunk, &str)]) -> Result<NaiveDateTime, String> {
    let cannot = |value: &str, element: &str| {
        format!(
            "parsing time {} as {}: cannot parse {} as {}",
            go_quote(text),
            go_quote(layout),
            go_quote(value),
            go_quote(element)
        )
    };
    let out_of_range = |what: &str| format!("parsing time {}: {what} out of range", go_quote(text));
    let mut fields = Fields::default();
    let mut value = text;
    for (index, (chunk, element)) in chunks.iter().enumerate() {
        let hold = value;
        let failed = || cannot(hold, element);
        match chunk {
            Chunk::Lit(literal) => {
                value = value.strip_prefix(literal).ok_or_else(failed)?;
            }
            Chunk::Year => {
                let digits = value
                    .get(..4)
                    .filter(|d| d.bytes().all(|b| b.is_ascii_digit()));
                let digits = digits.ok_or_else(failed)?;
                fields.year = digits.parse().map_err(|_| failed())?;
                value = &value[4..];
            }
            Chunk::Month => {
                let (month, rest) = getnum(value, true).ok_or_else(failed)?;
                if !(1..=12).contains(&month) {
                    return Err(out_of_range("month"));
                }
                (fields.month, value) = (month, rest);
            }
            Chunk::Day => {
                (fields.day, value) = getnum(value, true).ok_or_else(failed)?;
            }
            Chunk::Hour => {
                let (hour, rest) = getnum(value, false).ok_or_else(failed)?;
                if hour >= 24 {
                    return Err(out_of_range("hour"));
                }
                (fields.hour, value) = (hour, rest);
            }
            Chunk::Minute => {
                let (minute, rest) = getnum(value, true).ok_or_else(failed)?;
                if minute >= 60 {
                    return Err(out_of_range("minute"));
                }
                (fields.minute, value) = (minute, rest);
            }
            Chunk::Second => {
                let (second, rest) = getnum(value, true).ok_or_else(failed)?;
                if second >= 60 {
                    return Err(out_of_range("second"));
                }
                (fields.second, value) = (second, rest);
                // A fraction in the value where the layout has none is taken as Go takes it.
                let next_is_fraction =
                    matches!(chunks.get(index + 1), Some((Chunk::Fraction(_), _)));
                let bytes = value.as_bytes();
                if !next_is_fraction
                    && bytes.len() >= 2
                    && matches!(bytes[0], b'.' | b',')
                    && bytes[1].is_ascii_digit()
                {
                    let n = 1 + bytes[1..].iter().take_while(|b| b.is_ascii_digit()).count();
                    fields.nanos = nanoseconds(&value[..n]).map_err(|e| match e {
                        Nanos::Range => out_of_range("fractional second"),
                        Nanos::Bad => failed(),
                    })?;
                    value = &value[n..];
                }
            }
            Chunk::Fraction(digits) => {
                let n = 1 + digits;
                let part = value.get(..n).ok_or_else(failed)?;
                fields.nanos = nanoseconds(part).map_err(|e| match e {
                    Nanos::Range => out_of_range("fractional second"),
                    Nanos::Bad => failed(),
                })?;
                value = &value[n..];
            }
            Chunk::Zone => {
                if let Some(rest) = value.strip_prefix('Z') {
                    value = rest;
                    continue;
                }
                let bytes = value.as_bytes();
                if bytes.len() < 6 || bytes[3] != b':' {
                    return Err(failed());
                }
                let (hours, _) = getnum(&value[1..3], true).ok_or_else(failed)?;
                let (minutes, _) = getnum(&value[4..6], true).ok_or_else(failed)?;
                if hours > 24 {
                    return Err(out_of_range("time zone offset hour"));
                }
                if minutes > 60 {
                    return Err(out_of_range("time zone offset minute"));
                }
                let magnitude = i64::from(hours * 60 + minutes) * 60;
                fields.offset_seconds = match bytes[0] {
                    b'+' => magnitude,
                    b'-' => -magnitude,
                    _ => return Err(failed()),
                };
                value = &value[6..];
            }
        }
    }
    if !value.is_empty() {
        return Err(format!(
            "parsing time {}: extra text: {}",
            go_quote(text),
            go_quote(value)
        ));
    }
    let date = NaiveDate::from_ymd_opt(fields.year, fields.month, fields.day)
        .ok_or_else(|| out_of_range("day"))?;
    let time = NaiveTime::from_hms_opt(fields.hour, fields.minute, fields.second)
        .ok_or_else(|| out_of_range("second"))?;
    Ok(date.and_time(time) + Duration::nanoseconds(fields.nanos)
        - Duration::seconds(fields.offset_seconds))
}

/// Go's `getnum`: one or two digits (exactly two if `fixed`).
fn getnum(value: &str, fixed: bool) -> Option<(u32, &str)> {
    let bytes = value.as_bytes();
    let digit = |i: usize| {
        bytes
            .get(i)
            .filter(|b| b.is_ascii_digit())
            .map(|b| u32::from(b - b'0'))
    };
    let first = digit(0)?;
    match digit(1) {
        Some(second) => Some((first * 10 + second, &value[2..])),
        None if fixed => None,
        None => Some((first, &value[1..])),
    }
}

enum Nanos {
    Bad,
    Range,
}

/// Go's `parseNanoseconds`: a `.` or `,`, then a (signed, as Go's `atoi` takes it) decimal fraction.
fn nanoseconds(part: &str) -> Result<i64, Nanos> {
    let (separator, digits) = part.split_at(1);
    if separator != "." && separator != "," {
        return Err(Nanos::Bad);
    }
    let (negative, unsigned) = match digits.as_bytes().first() {
        Some(b'-') => (true, &digits[1..]),
        Some(b'+') => (false, &digits[1..]),
        _ => (false, digits),
    };
    if unsigned.is_empty() || !unsigned.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Nanos::Bad);
    }
    if negative && unsigned.bytes().any(|b| b != b'0') {
        return Err(Nanos::Range);
    }
    let kept = &unsigned[..unsigned.len().min(9)];
    let value: i64 = kept.parse().map_err(|_| Nanos::Bad)?;
    Ok(value * 10_i64.pow(9 - u32::try_from(kept.len()).unwrap_or(9)))
}
