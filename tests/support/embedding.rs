//! Text helpers shared by the proptest properties (`tests/slow/properties.rs`) and the fuzz targets
//! (`fuzz/src/lib.rs` includes this file by path): embedding a jobs file in a ConfigMap manifest, moving
//! quoted positions by the embedding's shift, and finding a zone's offset changes. Plain functions of
//! their input, no proptest or libFuzzer, so both packages compile the same code.

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use chrono_tz::Tz;

/// The manifest above `data`'s entries.
const CONFIG_MAP_HEADER: &str =
    "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: leasecron-jobs\ndata:\n";

/// `s` as a YAML double-quoted scalar, escaping everything outside printable ASCII: it reads back as
/// exactly `s`.
pub fn double_quoted(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            ' '..='~' => out.push(c),
            c if (c as u32) <= 0xFFFF => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push_str(&format!("\\U{:08X}", c as u32)),
        }
    }
    out.push('"');
    out
}

/// `text` as the `data.KEY` block literal of a ConfigMap, indented by `indent` (at least 3); also the
/// number of manifest lines above the first line of `text`.
pub fn config_map_literal(text: &str, key: &str, indent: usize) -> (String, usize) {
    let header = format!("{CONFIG_MAP_HEADER}  {key}: |\n");
    let above = header.matches('\n').count();
    let pad = " ".repeat(indent);
    let body: String = text
        .split_inclusive('\n')
        .map(|line| {
            if line.trim_end_matches(['\n', '\r']).is_empty() {
                line.to_string()
            } else {
                format!("{pad}{line}")
            }
        })
        .collect();
    (format!("{header}{body}"), above)
}

/// `text` as the `data.KEY` of a ConfigMap, as a double-quoted scalar.
pub fn config_map_quoted(text: &str, key: &str) -> String {
    format!("{CONFIG_MAP_HEADER}  {key}: {}\n", double_quoted(text))
}

/// True if a block literal indented by a fixed amount reads back as exactly `text`: no line break
/// but LF, a first line that sets the indentation, one final newline, no control characters but tab.
pub fn embeds_as_written(text: &str) -> bool {
    let printable = text
        .chars()
        .all(|c| !c.is_control() || c == '\n' || c == '\t')
        && !text.contains(['\u{feff}', '\u{85}', '\u{2028}', '\u{2029}']);
    let first = text.lines().next().unwrap_or_default();
    printable
        && !first.is_empty()
        && !first.starts_with([' ', '\t'])
        && text.ends_with('\n')
        && !text.ends_with("\n\n")
}

/// `message` with the positions it quotes (`at line L, column C`) moved by `lines` and `columns`.
pub fn shift_quoted_positions(message: &str, lines: usize, columns: usize) -> String {
    let mut out = String::new();
    let mut rest = message;
    while let Some(at) = rest.find("at line ") {
        let (before, after) = rest.split_at(at + "at line ".len());
        out.push_str(before);
        let digits = after.chars().take_while(char::is_ascii_digit).count();
        let line: usize = after[..digits].parse().unwrap_or(0);
        out.push_str(&(line + lines).to_string());
        let after = &after[digits..];
        let Some(column_at) = after.strip_prefix(", column ") else {
            rest = after;
            continue;
        };
        let digits = column_at.chars().take_while(char::is_ascii_digit).count();
        let column: usize = column_at[..digits].parse().unwrap_or(0);
        out.push_str(&format!(", column {}", column + columns));
        rest = &column_at[digits..];
    }
    out.push_str(rest);
    out
}

/// The instants in `[from, to]` at which `zone`'s offset changes, found by bisection between samples a
/// week apart (a change closer than that to another would be missed: none is, in tzdata).
pub fn transitions(zone: Tz, from: DateTime<Utc>, to: DateTime<Utc>) -> Vec<DateTime<Utc>> {
    use chrono::Offset;
    let offset = |t: DateTime<Utc>| zone.offset_from_utc_datetime(&t.naive_utc()).fix();
    let step = TimeDelta::days(7);
    let mut found = Vec::new();
    let mut lo = from;
    while lo < to {
        let hi = (lo + step).min(to);
        if offset(lo) != offset(hi) {
            let (mut a, mut b) = (lo, hi);
            while b - a > TimeDelta::seconds(1) {
                let mid = a + TimeDelta::seconds((b - a).num_seconds() / 2);
                if offset(mid) == offset(a) {
                    a = mid;
                } else {
                    b = mid;
                }
            }
            found.push(b);
        }
        lo = hi;
    }
    found
}
