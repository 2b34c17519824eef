//! The YAML pass of a large jobs file on several threads: the `jobs:` sequence cut at item boundaries, the
//! pieces parsed at once, their items joined in order.
//!
//! Parsing is most of the time `validate` takes, and one YAML stream cannot be parsed in parallel; but a jobs
//! file is almost always `defaults:` and then one long block sequence of jobs, whose items can be read
//! independently. This fast path is taken only when the result is certain to be the tree the single pass
//! builds ([`super::node::parse`] falls back to that pass whenever it returns `None`):
//!
//! - the text is ASCII without carriage returns, directives or document markers, and its last key at
//!   column 0 is `jobs:`, followed only by lines indented deeper than its items, item starts (`- ` at
//!   the items' indent), blank lines and comments; the cuts are at item starts;
//! - the first piece is the file up to the first cut, parsed as it is; every later piece is parsed as
//!   the text before it blanked out (each byte but `\n` a space: lines, columns, byte and character
//!   offsets all stay those of the whole file) followed by its items, so its root is a sequence; a
//!   piece that ends at a cut ends with the next item's dash, so that an empty value or block scalar
//!   last in it is placed where the single pass places it, and the empty item that dash adds is dropped;
//! - every piece must parse, the first piece's root must be a mapping whose last key is that `jobs:`
//!   line and whose value is a sequence, and every later root a sequence;
//! - no piece may use anchors, aliases or merge keys (an alias may name an anchor of another piece), and
//!   the budget counts of all pieces together must stay within serde-saphyr's limits, which the single
//!   pass checks over the whole file.
//!
//! A line at the items' indent that starts with `- ` can only be the next item: a block or plain scalar
//! cannot continue at that indent, and a quoted scalar or flow collection that did would be left open
//! at the end of the piece before the cut, which then fails to parse.

use std::cell::RefCell;
use std::num::NonZeroUsize;
use std::rc::Rc;

use serde_saphyr::budget::BudgetReport;
use serde_saphyr::{Budget, Spanned};

use super::node::{self, Node};

/// Smallest file worth splitting: below it, starting a thread costs about what it saves.
pub(super) const MIN_SPLIT_BYTES: usize = 128 * 1024;
/// Most pieces a file is cut into, however many cores there are: the joined tree is built on one
/// thread, and more pieces mean more blanked-out text to skip.
pub(super) const MAX_PIECES: usize = 4;

/// How many pieces a file of `len` bytes is worth cutting into on this machine (1: do not split).
pub(super) fn pieces_for(len: usize) -> usize {
    if len < MIN_SPLIT_BYTES {
        return 1;
    }
    std::thread::available_parallelism()
        .map_or(1, NonZeroUsize::get)
        .min(MAX_PIECES)
}

/// The tree of `source`, parsed in up to `pieces` pieces at once; `None` if the file does not qualify or
/// any piece fails (the caller then parses the whole file, which also gives the exact first error).
pub(super) fn parse(source: &str, pieces: usize) -> Option<Spanned<Node>> {
    let plan = Plan::of(source, pieces)?;
    let (head, rest) = std::thread::scope(|scope| {
        let ranges = plan.ranges(source.len());
        let spawned: Vec<_> = ranges
            .iter()
            .map(|&(start, end)| {
                std::thread::Builder::new()
                    .name("leasecron-yaml".into())
                    .stack_size(node::PARSE_STACK_SIZE)
                    .spawn_scoped(scope, move || {
                        parse_piece(&blanked(source, start, end, end < source.len())?)
                    })
                    .map_err(|_| (start, end))
            })
            .collect();
        let head = blanked(source, 0, plan.cuts[0] + plan.indent, true)
            .and_then(|text| parse_piece(&text));
        let rest: Vec<_> = spawned
            .into_iter()
            .map(|piece| match piece {
                Ok(handle) => handle.join().ok().flatten(),
                // No thread to be had: parse the piece here instead.
                Err((start, end)) => parse_piece(&blanked(source, start, end, end < source.len())?),
            })
            .collect();
        (head, rest)
    });
    let (mut root, head_report) = head?;
    let rest: Vec<(Spanned<Node>, BudgetReport)> = rest.into_iter().collect::<Option<_>>()?;
    if !within_budget(&head_report, rest.iter().map(|(_, report)| report)) {
        return None;
    }
    let Node::Map(entries) = &mut root.value else {
        return None;
    };
    let (key, value) = entries.last_mut()?;
    let is_jobs_line = matches!(&key.value, Node::Str(name) if name == "jobs")
        && key.referenced.line() == plan.jobs_line
        && key.referenced.column() == 1;
    let Node::Seq(items) = &mut value.value else {
        return None;
    };
    if !is_jobs_line {
        return None;
    }
    drop_sentinel(items)?;
    let last = rest.len().saturating_sub(1);
    for (index, (piece, _)) in rest.into_iter().enumerate() {
        let Node::Seq(mut more) = piece.value else {
            return None;
        };
        if index < last {
            drop_sentinel(&mut more)?;
        }
        items.extend(more);
    }
    Some(root)
}

/// Where to cut a file that qualifies.
#[derive(Debug, PartialEq, Eq)]
struct Plan {
    /// 1-based line of the `jobs:` key.
    jobs_line: u64,
    /// Byte offsets of the item starts to cut at, ascending, at least one.
    cuts: Vec<usize>,
    /// The items' indent.
    indent: usize,
}

impl Plan {
    /// The cuts for `pieces` pieces of about equal size, if `source` has the simple shape the module
    /// documentation describes.
    fn of(source: &str, pieces: usize) -> Option<Plan> {
        if pieces < 2 || !source.is_ascii() || source.contains('\r') {
            return None;
        }
        let mut jobs_line = None;
        // The items' indent, once the first item is seen.
        let mut indent = None;
        let mut item_starts = Vec::new();
        let mut offset = 0;
        for (index, line) in source.split_inclusive('\n').enumerate() {
            let start = offset;
            offset += line.len();
            let line = line.strip_suffix('\n').unwrap_or(line);
            if ["%", "---", "..."]
                .iter()
                .any(|marker| line.starts_with(marker))
            {
                return None;
            }
            if jobs_line.is_none() {
                if is_jobs_key(line) {
                    jobs_line = Some(u64::try_from(index).ok()? + 1);
                }
                continue;
            }
            let content = line.trim_start_matches(' ');
            if content.is_empty() || content.starts_with('#') {
                continue;
            }
            let at = line.len() - content.len();
            let item = content == "-" || content.starts_with("- ");
            match indent {
                None if item => indent = Some(at),
                Some(items) if at == items && item => item_starts.push(start),
                Some(items) if at > items => {}
                _ => return None,
            }
        }
        let jobs_line = jobs_line?;
        let mut cuts: Vec<usize> = Vec::with_capacity(pieces - 1);
        for piece in 1..pieces {
            let target = source.len() / pieces * piece;
            let after = cuts.last().copied().unwrap_or(0);
            let next = item_starts.partition_point(|&start| start < target.max(after + 1));
            if let Some(&cut) = item_starts.get(next) {
                cuts.push(cut);
            }
        }
        (!cuts.is_empty()).then_some(Plan {
            jobs_line,
            cuts,
            indent: indent?,
        })
    }

    /// The byte ranges of the pieces after the first. A piece ends after the indent of the next item
    /// start, as the single pass reads it before it ends the piece's last value (the end of a block
    /// scalar's span is where that indent ends).
    fn ranges(&self, len: usize) -> Vec<(usize, usize)> {
        let ends = self
            .cuts
            .iter()
            .skip(1)
            .map(|&cut| cut + self.indent)
            .chain([len]);
        self.cuts.iter().copied().zip(ends).collect()
    }
}

/// Whether `line` is the key `jobs:` at column 0 with nothing after it but blanks and a comment.
fn is_jobs_key(line: &str) -> bool {
    line.strip_prefix("jobs:").is_some_and(|rest| {
        let rest = rest.trim_start_matches(' ');
        rest.is_empty() || rest.starts_with('#')
    })
}

/// `source[start..end]` preceded by `source[..start]` with every byte but `\n` made a space (`source` is
/// ASCII), so that every position in the piece is its position in `source`.
///
/// A piece that ends at a cut (`sentinel`) ends with a `-`, where the next item's dash stands in
/// `source`: the parser places an empty value, and ends some scalars, at the token that follows, and
/// with the dash that token is the one the single pass sees. The empty item it adds is dropped again
/// ([`drop_sentinel`]).
fn blanked(source: &str, start: usize, end: usize, sentinel: bool) -> Option<String> {
    let mut text: Vec<u8> = source.as_bytes()[..start]
        .iter()
        .map(|&byte| if byte == b'\n' { b'\n' } else { b' ' })
        .collect();
    text.extend_from_slice(source.get(start..end)?.as_bytes());
    if sentinel {
        text.push(b'-');
    }
    String::from_utf8(text).ok()
}

/// Removes the empty item that [`blanked`]'s sentinel dash added at the end of a piece; `None` if the
/// last item is not that empty value.
fn drop_sentinel(items: &mut Vec<Spanned<Node>>) -> Option<()> {
    match items.pop() {
        Some(Spanned {
            value: Node::Null, ..
        }) => Some(()),
        _ => None,
    }
}

/// One piece's tree and budget counts, if it parses.
fn parse_piece(text: &str) -> Option<(Spanned<Node>, BudgetReport)> {
    let report = Rc::new(RefCell::new(None));
    let sink = Rc::clone(&report);
    let options = node::options().with_budget_report(move |counts| {
        *sink.borrow_mut() = Some(counts);
    });
    let root = serde_saphyr::from_str_with_options(text, options).ok()?;
    let counts = report.borrow_mut().take()?;
    Some((root, counts))
}

/// Whether the whole file, whose pieces counted `head` and `rest`, is within the budget the single pass
/// enforces, and uses no anchors, aliases or merge keys.
///
/// The whole file's counts are at most the sums (each later piece adds its own stream, document and
/// sequence events); its depth is a later piece's plus one (the root mapping it lacks).
fn within_budget<'a>(head: &BudgetReport, rest: impl Iterator<Item = &'a BudgetReport>) -> bool {
    let budget = Budget::default();
    let mut total = head.clone();
    for report in rest {
        total.breached = total.breached.or(report.breached.clone());
        total.aliases += report.aliases;
        total.anchors += report.anchors;
        total.merge_keys += report.merge_keys;
        total.events = total.events.saturating_add(report.events);
        total.nodes = total.nodes.saturating_add(report.nodes);
        total.total_scalar_bytes = total
            .total_scalar_bytes
            .saturating_add(report.total_scalar_bytes);
        total.total_comment_bytes = total
            .total_comment_bytes
            .saturating_add(report.total_comment_bytes);
        total.max_depth = total.max_depth.max(report.max_depth.saturating_add(1));
    }
    total.breached.is_none()
        && total.aliases == 0
        && total.anchors == 0
        && total.merge_keys == 0
        && total.events < budget.max_events
        && total.nodes < budget.max_nodes
        && total.total_scalar_bytes < budget.max_total_scalar_bytes
        && total.total_comment_bytes < budget.max_total_comment_bytes
        && total.max_depth < budget.max_depth
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "defaults:\n  timeout: 1h\njobs:\n  - name: a\n    shell: x\n  # note\n  - name: b\n\n    shell: |\n      - y\n  - name: c\n    shell: z\n";

    #[test]
    fn cuts_fall_on_item_starts() {
        let plan = Plan::of(FILE, 3).expect("qualifies");
        assert_eq!(plan.jobs_line, 3);
        let starts: Vec<&str> = plan.cuts.iter().map(|&at| &FILE[at..at + 11]).collect();
        assert_eq!(starts, ["  - name: b", "  - name: c"]);
        assert_eq!(
            plan.ranges(FILE.len()).last().map(|r| r.1),
            Some(FILE.len())
        );
    }

    #[test]
    fn files_of_another_shape_are_not_split() {
        for source in [
            "jobs:\n  - name: a\n  - name: b\ndefaults: {}\n",
            "jobs:\n  - name: a\n  - name: b\n---\n",
            "%YAML 1.2\n---\njobs:\n  - name: a\n  - name: b\n",
            "jobs:\r\n  - name: a\r\n  - name: b\r\n",
            "jobs:\n  - name: é\n  - name: b\n",
            "jobs:\n  - name: a\n   - name: b\n",
            "jobs:\n  - name: a\n\t- name: b\n",
            "jobs: []\n",
            "jobs:\n  - name: a\n",
            "defaults: {}\n",
        ] {
            assert_eq!(Plan::of(source, 2), None, "{source:?}");
        }
        assert!(Plan::of(FILE, 1).is_none());
    }

    #[test]
    fn the_pieces_join_into_the_tree_of_the_single_pass() {
        for pieces in 2..=4 {
            assert_eq!(
                parse(FILE, pieces),
                Some(node::parse_single(FILE).expect("valid"))
            );
        }
        // Values whose span ends where the next item starts.
        let ends = "jobs:\n  - name: a\n    shell: |\n      - y\n\n  # c\n\n  - name: b\n    shell: >+\n      z\n\n  - name: c\n    shell: 'q\n      r'\n  - d\n    e\n  - name: f\n";
        for pieces in 2..=5 {
            assert_eq!(
                parse(ends, pieces),
                Some(node::parse_single(ends).expect("valid"))
            );
        }
        // Empty values last in a piece, an empty block scalar among them: the single pass places
        // them at the next item's dash.
        for tail in [
            "shell:\n",
            "shell: |\n",
            "shell: >-\n\n",
            "shell: |\n  \n",
            "env:\n",
        ] {
            let empty = format!(
                "jobs:\n  - name: z\n  - name: a\n    {tail}  - name: b\n    {tail}  - name: c\n    {tail}"
            );
            for pieces in 2..=4 {
                assert_eq!(
                    parse(&empty, pieces),
                    Some(node::parse_single(&empty).expect("valid")),
                    "{empty:?} in {pieces}"
                );
            }
        }
        // At column 0 too.
        let flush = "jobs:\n- name: a\n- name: b\n  env: {A: \"1\"}\n- c\n";
        assert_eq!(
            parse(flush, 2),
            Some(node::parse_single(flush).expect("valid"))
        );
    }

    #[test]
    fn anything_the_pieces_cannot_stand_for_falls_back() {
        for source in [
            // A quoted scalar running over the cut.
            "jobs:\n  - name: \"a\n  - b\"\n  - name: c\n",
            // An alias of an anchor in another piece.
            "jobs:\n  - &a name: x\n  - *a\n",
            // Anchors and aliases within one piece.
            "jobs:\n  - name: x\n  - &a {name: y}\n  - *a\n",
            // Not the root's key.
            "|\njobs:\n- a\n- b\n",
            // Broken YAML in the second piece.
            "jobs:\n  - name: a\n  - name: [b\n",
        ] {
            assert_eq!(parse(source, 2), None, "{source:?}");
        }
    }
}
