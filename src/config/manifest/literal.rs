//! Where the lines of a block literal (`jobs.yaml: |`) are in the manifest that holds it.
//!
//! A literal's text is its lines as written, less their indentation, so the position of anything in the
//! text maps to the manifest by a [`Shift`]: down by the line of the `|` header, right by the indentation.
//! The shift is worked out from the positions serde-saphyr reports and then checked against every line of
//! the manifest; when anything does not match (a lone CR as line break, tabs where spaces were expected),
//! there is no shift and the caller keeps the positions of the text.

use serde_saphyr::Spanned;

use super::super::node::Node;
use super::super::raw::Shift;

/// Where the lines of `text`, the value `value` of `key` in `source`, are in `source`: a [`Shift`] if the
/// value is a block literal whose every line is there as read, indented; `None` otherwise.
///
/// serde-saphyr places a block scalar at its first non-blank content line, at the content's indentation;
/// the header (`|`, `|-`, `|2+`, ...) lies between the key and there.
pub(super) fn block_literal_shift(
    source: &str,
    key: &Spanned<Node>,
    value: &Spanned<Node>,
    text: &str,
) -> Option<Shift> {
    let key_span = key.referenced.span();
    let key_end =
        usize::try_from(key_span.byte_offset()?.checked_add(key_span.byte_len()?)?).ok()?;
    let value_start = usize::try_from(value.referenced.span().byte_offset()?).ok()?;
    // serde-saphyr counts a lone CR as a line break, the shift below counts LFs: they differ after one.
    let above = source.get(..value_start)?;
    if above
        .match_indices('\r')
        .any(|(at, _)| !above[at + 1..].starts_with('\n'))
    {
        return None;
    }
    let header = key_end + literal_header(source.get(key_end..value_start)?)?;
    let shift = Shift {
        lines: source.get(..header)?.matches('\n').count() + 1,
        columns: usize::try_from(value.referenced.column())
            .ok()?
            .checked_sub(1)?,
    };
    // Without a non-blank line the indentation cannot be checked (nor matter much).
    let has_content = text.lines().any(|line| !line.trim().is_empty());
    (has_content && lines_match(source, shift, text)).then_some(shift)
}

/// The offset in `gap` (the text between a key and its value) of a block literal header, if there is one:
/// `:`, then tags or anchors, then `|` with an optional indentation indicator and chomping indicator.
fn literal_header(gap: &str) -> Option<usize> {
    let colon = gap.find(':')?;
    if !gap[..colon].trim().is_empty() {
        return None;
    }
    let after = &gap[colon + 1..];
    let line = after.split('\n').next().unwrap_or_default();
    let line = line.strip_suffix('\r').unwrap_or(line);
    let mut offset = colon + 1;
    for token in line.split([' ', '\t']) {
        let at = offset;
        offset += token.len() + 1;
        match token.chars().next() {
            None | Some('!' | '&') => continue,
            Some('|') if is_literal_indicators(&token[1..]) => return Some(at),
            _ => return None,
        }
    }
    None
}

/// What may follow `|`: nothing, a chomping indicator (`-`, `+`), an indentation indicator (1–9), or both
/// in either order.
fn is_literal_indicators(s: &str) -> bool {
    let digits = s.chars().filter(|c| matches!(c, '1'..='9')).count();
    let chomping = s.chars().filter(|c| matches!(c, '-' | '+')).count();
    digits <= 1 && chomping <= 1 && digits + chomping == s.chars().count()
}

/// True if every line of `text` is in `source` where `shift` puts it: the same characters after
/// `shift.columns` spaces, or a line of spaces for an empty one.
fn lines_match(source: &str, shift: Shift, text: &str) -> bool {
    let mut written = source
        .split('\n')
        .skip(shift.lines)
        .map(|line| line.strip_suffix('\r').unwrap_or(line));
    text.lines().all(|line| {
        let Some(written) = written.next() else {
            return line.is_empty();
        };
        if line.is_empty() {
            return written.bytes().all(|b| b == b' ');
        }
        let indented = written
            .get(..shift.columns)
            .is_some_and(|indent| indent.bytes().all(|b| b == b' '));
        indented && written.get(shift.columns..) == Some(line)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal_headers() {
        assert_eq!(literal_header(": |\n    a"), Some(2));
        assert_eq!(literal_header(":  !!str &a |+9 # x\n"), Some(12));
        assert_eq!(literal_header("\n  : |-\r\n"), Some(5));
        for not_literal in [
            ": >\n", ": \"", ": ", ": |x", ": |++", ": |12", "x: |", ": # |\n",
        ] {
            assert_eq!(literal_header(not_literal), None, "{not_literal:?}");
        }
    }

    #[test]
    fn lines_match_only_as_written_and_indented() {
        let source = "data:\n  jobs.yaml: |\n    jobs:\n\n      - a\n  other: x\n";
        let shift = Shift {
            lines: 2,
            columns: 4,
        };
        assert!(lines_match(source, shift, "jobs:\n\n  - a\n"));
        assert!(!lines_match(source, shift, "jobs:\n\n  - b\n"));
        assert!(!lines_match(
            source,
            Shift {
                lines: 2,
                columns: 3
            },
            "jobs:\n"
        ));
        assert!(!lines_match(
            source,
            Shift {
                lines: 2,
                columns: 99
            },
            "jobs:\n"
        ));
        assert!(lines_match(
            source,
            Shift {
                lines: 6,
                columns: 4
            },
            "\n\n"
        ));
        assert!(!lines_match(
            source,
            Shift {
                lines: 6,
                columns: 4
            },
            "x\n"
        ));
        assert!(!lines_match(
            source,
            Shift {
                lines: usize::MAX,
                columns: usize::MAX
            },
            "x"
        ));
    }
}
