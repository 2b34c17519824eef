//! Turns a cron expression as users write it into the strict form handed to croner.
//!
//! croner accepts more than cron users expect: it replaces month and day names anywhere in the pattern
//! (`0 0 * MON *` would mean January), has a `+` modifier that switches day-of-month/day-of-week to AND,
//! and accepts a year field. This module splits the expression into fields itself, expands the `@` macros,
//! maps names only in the field they belong to, and rejects the rest, so croner only ever sees numbers.

use super::Error;

/// Names of the fields of a 6-field expression, in order.
const FIELD_NAMES: [&str; 6] = [
    "second",
    "minute",
    "hour",
    "day-of-month",
    "month",
    "day-of-week",
];
const MINUTE: usize = 1;
const HOUR: usize = 2;
const DAY_OF_MONTH: usize = 3;
const MONTH: usize = 4;
const DAY_OF_WEEK: usize = 5;

const MONTH_NAMES: [&str; 12] = [
    "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
];
const DAY_NAMES: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];
/// `SUN` as the end of a range (`FRI-SUN`) is 7, as in cron.
const SUNDAY_AS_RANGE_END: usize = 7;

/// The `@` macros and the 5-field expressions they stand for.
const MACROS: [(&str, &str); 7] = [
    ("@yearly", "0 0 1 1 *"),
    ("@annually", "0 0 1 1 *"),
    ("@monthly", "0 0 1 * *"),
    ("@weekly", "0 0 * * 0"),
    ("@daily", "0 0 * * *"),
    ("@midnight", "0 0 * * *"),
    ("@hourly", "0 * * * *"),
];

/// An expression split into its six fields (seconds first), names replaced by numbers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Fields([String; 6]);

impl Fields {
    /// Splits, expands and checks `expr`.
    pub(super) fn parse(expr: &str) -> Result<Fields, Error> {
        let expr = expr.trim();
        if expr.is_empty() {
            return Err(Error::Empty);
        }
        let expanded = expand_macro(expr)?;
        let parts: Vec<&str> = expanded.split_whitespace().collect();
        let mut fields: [String; 6] = match parts.as_slice() {
            [m, h, dom, mon, dow] => ["0", *m, *h, *dom, *mon, *dow].map(str::to_uppercase),
            [s, m, h, dom, mon, dow] => [*s, *m, *h, *dom, *mon, *dow].map(str::to_uppercase),
            _ => return Err(Error::FieldCount(parts.len())),
        };
        for (index, field) in fields.iter_mut().enumerate() {
            // croner reads `,` and `1,,2` as lists with empty items; cron refuses them. A field of empty
            // items matches nothing, and croner then searches thousands of years for a fire.
            if field.split(',').any(str::is_empty) {
                return Err(Error::InvalidField {
                    field: FIELD_NAMES[index],
                    text: field.clone(),
                    reason: "a list item is empty".to_owned(),
                });
            }
            *field = replace_names(index, field)?;
        }
        for index in [DAY_OF_MONTH, DAY_OF_WEEK] {
            if is_unrestricted(&fields[index]) {
                fields[index] = "*".to_string();
            }
        }
        Ok(Fields(fields))
    }

    /// The six fields joined for croner.
    pub(super) fn to_pattern(&self) -> String {
        self.0.join(" ")
    }

    /// The fields one at a time, each in an otherwise all-`*` pattern (to name the field croner rejects).
    pub(super) fn isolated(&self) -> impl Iterator<Item = (&'static str, &str, String)> + '_ {
        self.0.iter().enumerate().map(|(index, field)| {
            let mut pattern = ["0", "*", "*", "*", "*", "*"];
            pattern[index] = field;
            (FIELD_NAMES[index], field.as_str(), pattern.join(" "))
        })
    }

    /// Vixie cron's "fixed-time" job: neither the minute nor the hour field starts with `*`.
    ///
    /// Fixed-time schedules name wall-clock times, so a time skipped or repeated by a DST change still runs
    /// exactly once; wildcard schedules express an interval, which real time keeps (see the module doc).
    pub(super) fn is_fixed_time(&self) -> bool {
        !self.0[MINUTE].starts_with('*') && !self.0[HOUR].starts_with('*')
    }
}

fn expand_macro(expr: &str) -> Result<String, Error> {
    if !expr.starts_with('@') {
        return Ok(expr.to_string());
    }
    MACROS
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(expr))
        .map(|(_, expansion)| expansion.to_string())
        .ok_or_else(|| Error::UnknownMacro(expr.to_string()))
}

/// Replaces the names a field may hold by their numbers; rejects letters that do not belong there.
fn replace_names(index: usize, field: &str) -> Result<String, Error> {
    let mut out = String::with_capacity(field.len());
    let mut rest = field;
    while let Some(start) = rest.find(|c: char| c.is_ascii_alphabetic()) {
        let (before, from_word) = rest.split_at(start);
        let end = from_word
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(from_word.len());
        let (word, after) = from_word.split_at(end);
        out.push_str(before);
        out.push_str(&replace_word(index, word, ends_range_after(&out))?);
        rest = after;
    }
    out.push_str(rest);
    if index == DAY_OF_WEEK && out.starts_with('+') {
        return Err(Error::PlusModifier);
    }
    Ok(out)
}

/// True if a word after `out` ends a range that starts after Sunday: `SUN` there is 7 (`FRI-SUN`), but
/// `SUN-SUN` (`0-SUN`) is Sunday alone, as in Vixie cron and CronJob, not `0-7`, the whole week.
fn ends_range_after(out: &str) -> bool {
    let Some(before) = out.strip_suffix('-') else {
        return false;
    };
    let start = before.rsplit(|c: char| !c.is_ascii_digit()).next();
    start != Some("0")
}

fn replace_word(index: usize, word: &str, ends_range: bool) -> Result<String, Error> {
    let position = |names: &[&str]| names.iter().position(|name| *name == word);
    let replaced = match index {
        MONTH => position(&MONTH_NAMES).map(|i| (i + 1).to_string()),
        DAY_OF_WEEK => match position(&DAY_NAMES) {
            Some(0) if ends_range => Some(SUNDAY_AS_RANGE_END.to_string()),
            Some(i) => Some(i.to_string()),
            None if word == "L" => Some(word.to_string()),
            None => None,
        },
        DAY_OF_MONTH if matches!(word, "L" | "W" | "LW") => Some(word.to_string()),
        _ => None,
    };
    replaced.ok_or_else(|| Error::UnexpectedWord {
        field: FIELD_NAMES[index],
        word: word.to_string(),
    })
}

/// A day field that matches every day (`*`, `?`, `*/1`, or a list holding one of them).
///
/// Kubernetes CronJob (robfig/cron) treats such a field as unrestricted, so day-of-month and day-of-week
/// then combine with AND (the other field alone decides); `*/2` is restricted. croner only recognises a
/// bare `*`, so these are rewritten to it.
fn is_unrestricted(field: &str) -> bool {
    field
        .split(',')
        .any(|part| matches!(part, "*" | "?" | "*/1" | "?/1"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(expr: &str) -> String {
        Fields::parse(expr).expect("valid").to_pattern()
    }

    #[test]
    fn five_fields_get_a_zero_seconds_field() {
        assert_eq!(pattern("30 2 * * *"), "0 30 2 * * *");
        assert_eq!(pattern("15 30 2 * * *"), "15 30 2 * * *");
    }

    #[test]
    fn macros_expand_case_insensitively() {
        assert_eq!(pattern("@daily"), "0 0 0 * * *");
        assert_eq!(pattern("@Midnight"), "0 0 0 * * *");
        assert_eq!(pattern("@weekly"), "0 0 0 * * 0");
        assert!(matches!(
            Fields::parse("@every 5m"),
            Err(Error::UnknownMacro(_))
        ));
    }

    #[test]
    fn names_are_replaced_only_in_their_own_field() {
        assert_eq!(pattern("0 0 * jan-Mar mon-fri"), "0 0 0 * 1-3 1-5");
        assert_eq!(pattern("0 0 * * FRI-SUN"), "0 0 0 * * 5-7");
        assert_eq!(pattern("0 0 * * SUN-SUN"), "0 0 0 * * 0-0");
        assert_eq!(pattern("0 0 * * 0-SUN,sun-sun/2"), "0 0 0 * * 0-0,0-0/2");
        assert_eq!(pattern("0 0 * * SUN-TUE,7-SUN"), "0 0 0 * * 0-2,7-7");
        assert_eq!(pattern("0 0 * * 5#L"), "0 0 0 * * 5#L");
        assert_eq!(pattern("0 0 LW * *"), "0 0 0 LW * *");
        for (expr, field) in [
            ("0 0 * MON *", "month"),
            ("0 0 * * JAN", "day-of-week"),
            ("0 0 MON * *", "day-of-month"),
            ("0 L * * *", "hour"),
            ("0 0 * * MONDAY", "day-of-week"),
        ] {
            match Fields::parse(expr) {
                Err(Error::UnexpectedWord { field: got, .. }) => assert_eq!(got, field, "{expr}"),
                other => panic!("{expr}: expected UnexpectedWord, got {other:?}"),
            }
        }
    }

    #[test]
    fn empty_list_items_are_rejected_naming_the_field() {
        for (expr, field) in [
            ("* , 4-8 * */3 *", "minute"),
            ("0 1,,2 * * *", "hour"),
            ("0 0 1, * *", "day-of-month"),
            ("0 0 * * ,MON", "day-of-week"),
        ] {
            match Fields::parse(expr) {
                Err(Error::InvalidField {
                    field: got, reason, ..
                }) => {
                    assert_eq!(
                        (got, reason.as_str()),
                        (field, "a list item is empty"),
                        "{expr}"
                    );
                }
                other => panic!("{expr}: expected InvalidField, got {other:?}"),
            }
        }
    }

    #[test]
    fn wrong_field_counts_and_plus_are_rejected() {
        assert!(matches!(
            Fields::parse("0 0 1 1 * 2030 *"),
            Err(Error::FieldCount(7))
        ));
        assert!(matches!(Fields::parse("* * *"), Err(Error::FieldCount(3))));
        assert!(matches!(Fields::parse("   "), Err(Error::Empty)));
        assert!(matches!(
            Fields::parse("0 0 1 * +MON"),
            Err(Error::PlusModifier)
        ));
    }

    #[test]
    fn unrestricted_day_fields_become_a_bare_star() {
        assert_eq!(pattern("0 0 ? * */1"), "0 0 0 * * *");
        assert_eq!(pattern("0 0 1,* * 1"), "0 0 0 * * 1");
        assert_eq!(pattern("0 0 */2 * 1"), "0 0 0 */2 * 1");
    }

    #[test]
    fn fixed_time_means_minute_and_hour_without_a_leading_star() {
        let fixed = |expr: &str| Fields::parse(expr).expect("valid").is_fixed_time();
        assert!(fixed("30 2 * * *"));
        assert!(fixed("0,30 1-3 * * *"));
        assert!(fixed("*/10 30 2 * * *"));
        assert!(!fixed("*/15 * * * *"));
        assert!(!fixed("0 * * * *"));
        assert!(!fixed("*/5 2 * * *"));
    }
}
