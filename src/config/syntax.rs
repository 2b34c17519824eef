//! Broken YAML as a diagnostic: the parser's error in plain words, at the place to fix.
//!
//! Two of the parser's errors need help to be useful:
//!
//! - A budget limit (too many values, nested too deep) is reported by serde-saphyr with its internal
//!   names (`Nodes { nodes: 250001 }`); here it says what was too much and what the limit is.
//! - An unclosed quote is found by the parser only where the quoted value can no longer go on: on a later
//!   line, as an indentation problem. Here the quote that opened it is found and reported instead.

use serde_saphyr::budget::BudgetBreach;
use serde_saphyr::{Budget, MessageFormatter as _};

use super::raw::{Position, Shift};
use super::{escape_controls, Diagnostic};

/// A YAML error (syntax, alias, limit) in `source` as a diagnostic at the place to fix, in no particular
/// job; `shift` places positions of `source` in `origin`.
pub(super) fn diagnostic(
    origin: &str,
    source: &str,
    shift: Shift,
    err: &serde_saphyr::Error,
) -> Diagnostic {
    let mut position = err
        .location()
        .map_or(Position { line: 0, column: 0 }, Position::of);
    let formatted = serde_saphyr::UserMessageFormatter.format_message(err.without_snippet());
    let message = match err.without_snippet() {
        serde_saphyr::Error::Budget { breach, .. } => budget_message(breach),
        _ if is_quote_error(&formatted) && position.line > 0 => {
            match open_quote(source, position).or_else(|| quote_at(source, position)) {
                Some((opened, quote)) => {
                    position = opened;
                    unclosed_quote_message(quote)
                }
                None => formatted.into_owned(),
            }
        }
        _ => formatted.into_owned(),
    };
    let position = shift.apply(position);
    Diagnostic {
        origin: origin.to_string(),
        line: position.line,
        column: position.column,
        job: None,
        // The message may quote the input; keep control characters out of terminals and logs.
        message: escape_controls(&message),
    }
}

/// A limit of the YAML parser, in words, with the limit.
fn budget_message(breach: &BudgetBreach) -> String {
    let limits = Budget::default();
    let what = match breach {
        BudgetBreach::Nodes { .. } => format!(
            "the file has more than {} values (scalars, lists and mappings)",
            limits.max_nodes
        ),
        BudgetBreach::Depth { .. } => format!(
            "lists and mappings are nested more than {} levels deep here",
            limits.max_depth
        ),
        BudgetBreach::Events { .. } => format!(
            "the file has more than {} YAML events (values and their ends)",
            limits.max_events
        ),
        BudgetBreach::Aliases { .. } => format!(
            "the file has more than {} aliases (`*name`)",
            limits.max_aliases
        ),
        BudgetBreach::Anchors { .. } => format!(
            "the file has more than {} anchors (`&name`)",
            limits.max_anchors
        ),
        BudgetBreach::Documents { .. } => format!(
            "the file has more than {} documents (`---` separators)",
            limits.max_documents
        ),
        BudgetBreach::ScalarBytes { .. } => format!(
            "the file has more than {} MiB of text in its values",
            limits.max_total_scalar_bytes / (1024 * 1024)
        ),
        BudgetBreach::MergeKeys { .. } => format!(
            "the file has more than {} merge keys (`<<`)",
            limits.max_merge_keys
        ),
        BudgetBreach::AliasAnchorRatio { aliases, anchors } => format!(
            "the file has {aliases} aliases for {anchors} anchors, more than {} per anchor",
            limits.alias_anchor_ratio_multiplier
        ),
        _ => return "the file is too large or too complex for the YAML parser's limits".to_owned(),
    };
    format!("{what}, the most a jobs file may have")
}

/// True for the parser's errors about a quoted value that does not end where it should.
fn is_quote_error(message: &str) -> bool {
    message.contains("unclosed quote") || message.contains("multiline quoted scalar")
}

fn unclosed_quote_message(quote: char) -> String {
    format!(
        "unclosed quote: this {quote} is never closed, so the value runs on into the next lines: \
         add the closing {quote} (a quoted value that goes on over several lines must indent them \
         more than its key)"
    )
}

/// The opening quote of the quoted value still open at `end` in `source`, if reading `source` up to `end`
/// leaves one open: its position and the quote character.
///
/// A light reading of YAML that knows what matters here: a quote opens a value only where a value starts
/// (at the start of a line's content, after `key: `, `- `, `? `, or after `[`, `{`, `,`), a `#` after a
/// blank starts a comment, the lines of a block scalar (`|`, `>`) are text, and a quoted value ends at its
/// closing quote (`\"` in double quotes and `''` in single quotes do not end it).
fn open_quote(source: &str, end: Position) -> Option<(Position, char)> {
    let mut open: Option<(Position, char)> = None;
    // While in a block scalar: the indentation of its key; more indented lines are its text.
    let mut block: Option<usize> = None;
    for (index, line) in yaml_lines(source).enumerate() {
        let number = index + 1;
        if number > end.line {
            break;
        }
        let chars: Vec<char> = line.chars().collect();
        let indent = chars.iter().take_while(|&&c| c == ' ').count();
        if open.is_none() {
            if let Some(key_indent) = block {
                if indent == chars.len() || indent > key_indent {
                    continue;
                }
                block = None;
            }
        }
        let limit = if number == end.line {
            end.column.saturating_sub(1).min(chars.len())
        } else {
            chars.len()
        };
        // The last significant character outside quotes, and whether blanks followed it.
        let mut previous: Option<char> = None;
        let mut blank_after = true;
        let mut content_end = limit;
        let mut i = 0;
        while i < limit {
            let c = chars[i];
            match open {
                Some((_, '"')) => match c {
                    '\\' => i += 1,
                    '"' => {
                        open = None;
                        (previous, blank_after) = (Some('"'), false);
                    }
                    _ => {}
                },
                Some((_, quote)) => {
                    if c == quote {
                        if chars.get(i + 1) == Some(&quote) {
                            i += 1;
                        } else {
                            open = None;
                            (previous, blank_after) = (Some(quote), false);
                        }
                    }
                }
                None => {
                    if c == '#' && blank_after {
                        content_end = i;
                        break;
                    }
                    if c == ' ' || c == '\t' {
                        blank_after = true;
                    } else {
                        let starts_value = match previous {
                            None => true,
                            Some('[' | '{' | ',') => true,
                            Some(':' | '-' | '?') => blank_after,
                            Some(_) => false,
                        };
                        if (c == '"' || c == '\'') && starts_value {
                            open = Some((
                                Position {
                                    line: number,
                                    column: i + 1,
                                },
                                c,
                            ));
                        } else {
                            (previous, blank_after) = (Some(c), false);
                        }
                    }
                }
            }
            i += 1;
        }
        if open.is_none() && number < end.line {
            block = block_scalar_key_indent(&chars[..content_end]);
        }
    }
    open
}

/// The quote at `at` in `source`, if there is one there (the parser may report an unclosed quote at the
/// quote itself).
fn quote_at(source: &str, at: Position) -> Option<(Position, char)> {
    let line = yaml_lines(source).nth(at.line.checked_sub(1)?)?;
    let c = line.chars().nth(at.column.checked_sub(1)?)?;
    matches!(c, '"' | '\'').then_some((at, c))
}

/// The lines of `source` as YAML counts them: a line ends at `\n`, `\r\n` or a lone `\r`.
fn yaml_lines(source: &str) -> impl Iterator<Item = &str> {
    let mut rest = Some(source);
    std::iter::from_fn(move || {
        let text = rest?;
        match text.find(['\n', '\r']) {
            Some(at) => {
                let skip = if text[at..].starts_with("\r\n") { 2 } else { 1 };
                rest = Some(&text[at + skip..]);
                Some(&text[..at])
            }
            None => {
                rest = None;
                Some(text)
            }
        }
    })
}

/// If `line` (outside quotes, without its comment) ends with a block scalar header (`key: |`, `- >-`),
/// the indentation of the key or item that owns it.
fn block_scalar_key_indent(line: &[char]) -> Option<usize> {
    let text: String = line.iter().collect();
    let trimmed = text.trim_end();
    let (before, header) = trimmed.rsplit_once([' ', '\t'])?;
    let mut header_chars = header.chars();
    if !matches!(header_chars.next(), Some('|' | '>'))
        || !header_chars.all(|c| c.is_ascii_digit() || c == '+' || c == '-')
    {
        return None;
    }
    let before = before.trim_end();
    if !(before.ends_with(':') || before.ends_with('-') || before.is_empty()) {
        return None;
    }
    // The key's column: past the indentation and any `- ` item markers.
    let mut column = text.len() - text.trim_start_matches(' ').len();
    let mut rest = &text[column..];
    while let Some(after) = rest.strip_prefix("- ") {
        let blanks = after.len() - after.trim_start_matches(' ').len();
        column += 2 + blanks;
        rest = &after[blanks..];
    }
    Some(column)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(line: usize, column: usize) -> Position {
        Position { line, column }
    }

    #[test]
    fn lines_end_as_yaml_ends_them() {
        let lines: Vec<&str> = yaml_lines("a\nb\r\nc\rd\r\r\n").collect();
        assert_eq!(lines, ["a", "b", "c", "d", "", ""]);
        assert_eq!(
            open_quote("x: 1\r[\"", at(2, 3)),
            Some((at(2, 2), '"')),
            "a lone CR ends a line"
        );
    }

    #[test]
    fn the_opening_quote_is_found_on_an_earlier_line() {
        let source = "jobs:\n  - name: a\n    schedule: \"* * * * *\n    shell: \"true\"\n";
        assert_eq!(open_quote(source, at(4, 5)), Some((at(3, 15), '"')));
        let single = "jobs:\n  - name: 'it''s\n    shell: x\n";
        assert_eq!(open_quote(single, at(3, 5)), Some((at(2, 11), '\'')));
    }

    #[test]
    fn quotes_that_open_no_value_are_not_openings() {
        // Inside a plain scalar, in a comment, escaped, or closed on their line.
        for source in [
            "a: it's\nb: x\n",
            "a: x # it's\nb: x\n",
            "a: \"say \\\"hi\\\"\"\nb: x\n",
            "a: ['x', \"y\"]\nb: x\n",
            "a: |\n  it's \"\nb: x\n",
            "- shell: >-\n    echo \"\n  name: x\n",
        ] {
            assert_eq!(open_quote(source, at(3, 1)), None, "{source:?}");
        }
        // A quote after a block scalar ends.
        let after_block = "a: |\n  text\nb: \"x\nc: y\n";
        assert_eq!(open_quote(after_block, at(4, 1)), Some((at(3, 4), '"')));
    }

    #[test]
    fn a_quote_left_open_in_a_flow_list_is_found() {
        let source = "jobs:\n  - command: [\"/bin/echo\", \"hi]\n  - name: b\n";
        assert_eq!(open_quote(source, at(3, 3)), Some((at(2, 28), '"')));
    }
}
