//! Properties of the jobs-file parser and validator, the manifest path and the schedules, checked on
//! generated inputs (proptest). The fuzz targets in `fuzz/` explore the same entry points for longer;
//! `docs/fuzzing.md` describes both.
//!
//! Each property runs a number of cases chosen to keep the whole file within a few seconds in CI;
//! `PROPTEST_CASES=N` runs N cases of every property instead. A failing case is shrunk and saved under
//! `proptest-regressions/properties.txt`, and replayed first on every later run.

use crate::support::{arbitrary_config, arbitrary_schedule, embedding};

use std::time::Duration;

use chrono::{DateTime, Datelike, MappedLocalTime, TimeDelta, TimeZone, Timelike, Utc};
use chrono_tz::Tz;
use leasecron::config::{
    self, Diagnostic, JobSet, LoadOptions, Source, YamlPass, DEFAULT_CONFIG_MAP_KEY,
};
use leasecron::schedule::Schedule;
use proptest::prelude::*;
use proptest::sample::select;
use proptest::test_runner::{FileFailurePersistence, TestCaseError};

use arbitrary_config::{load_options, model_file, ModelFile, Style};
use arbitrary_schedule::{cron_case, zone};
use embedding::{
    config_map_literal, config_map_quoted, double_quoted, embeds_as_written,
    shift_quoted_positions, transitions,
};

const ORIGIN: &str = "jobs.yaml";
/// Where failing cases are saved (relative to the package root, where cargo runs tests).
const REGRESSIONS: &str = "proptest-regressions/properties.txt";

/// `default_cases` cases unless `PROPTEST_CASES` says otherwise; with `timeout_ms`, each case runs
/// under that timeout (in a forked process), so a hang fails the property instead of the build.
fn config(default_cases: u32, timeout_ms: Option<u32>) -> ProptestConfig {
    let mut config = ProptestConfig::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = default_cases;
    }
    if let Some(timeout) = timeout_ms {
        config.timeout = timeout;
    }
    config.failure_persistence = Some(Box::new(FileFailurePersistence::Direct(REGRESSIONS)));
    config
}

// === positions ===

/// The lines of `text` as YAML counts them: broken at LF, CRLF and lone CR.
fn yaml_lines(text: &str) -> Vec<&str> {
    let mut lines = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find(['\n', '\r']) {
        lines.push(&rest[..at]);
        let skip = if rest[at..].starts_with("\r\n") { 2 } else { 1 };
        rest = &rest[at + skip..];
    }
    lines.push(rest);
    lines
}

/// Checks one diagnostic of `text`: a known position inside the text (a line that exists, a column at
/// most one past its end), one line of printable text.
fn check_in_text(text: &str, found: &Diagnostic) -> Result<(), TestCaseError> {
    let lines = yaml_lines(text);
    prop_assert!(
        found.line >= 1 && found.line <= lines.len(),
        "line out of the text ({} lines): {found}\n{text:?}",
        lines.len()
    );
    let width = lines[found.line - 1].chars().count();
    prop_assert!(
        found.column >= 1 && found.column <= width + 1,
        "column out of line {} ({width} characters): {found}\n{text:?}",
        found.line
    );
    check_printable(found)
}

/// Diagnostics are printed one per line: no control characters from the input.
fn check_printable(found: &Diagnostic) -> Result<(), TestCaseError> {
    let printed = found.to_string();
    prop_assert!(
        !printed.chars().any(char::is_control),
        "control character in {printed:?}"
    );
    Ok(())
}

/// Checks what validating a jobs file gave: jobs, or diagnostics in the text, ordered by position.
fn check_jobs_result(
    text: &str,
    result: &Result<JobSet, config::Error>,
) -> Result<(), TestCaseError> {
    match result {
        Ok(_) => Ok(()),
        Err(config::Error::Invalid(diagnostics)) => {
            prop_assert!(!diagnostics.is_empty());
            let positions: Vec<_> = diagnostics.iter().map(|d| (d.line, d.column)).collect();
            prop_assert!(positions.is_sorted(), "not in order: {positions:?}");
            for found in diagnostics.iter() {
                prop_assert_eq!(&found.origin, ORIGIN);
                check_in_text(text, found)?;
            }
            Ok(())
        }
        Err(other) => Err(TestCaseError::fail(format!("not a diagnostic: {other}"))),
    }
}

/// Checks what `parse_source` gave: positions in the manifest for diagnostics of the manifest itself,
/// and at least a known position for those of an embedded text (whose origin says so).
fn check_source_result(
    text: &str,
    result: &Result<Source, config::Error>,
) -> Result<(), TestCaseError> {
    match result {
        Ok(source) => {
            let _ = source.to_string();
            Ok(())
        }
        Err(config::Error::Invalid(diagnostics)) => {
            prop_assert!(!diagnostics.is_empty());
            for found in diagnostics.iter() {
                if found.origin == ORIGIN {
                    check_in_text(text, found)?;
                } else {
                    prop_assert!(found.origin.starts_with("jobs.yaml ("), "{found}");
                    prop_assert!(found.line >= 1 && found.column >= 1, "{found}");
                    check_printable(found)?;
                }
            }
            Ok(())
        }
        Err(other) => Err(TestCaseError::fail(format!("not a diagnostic: {other}"))),
    }
}

// === inputs ===

/// Text made of the pieces jobs files and manifests are made of, so that random input gets past the
/// YAML parser and into the shape checks and the validator.
fn yaml_soup() -> impl Strategy<Value = String> {
    let piece = select(vec![
        "jobs:",
        "defaults:",
        "- ",
        "name: ",
        "schedule: ",
        "command: ",
        "shell: ",
        "env: ",
        "timeZone: ",
        "workingDir: ",
        "timeout: ",
        "terminationGrace: ",
        "concurrencyPolicy: ",
        "startingDeadline: ",
        "retries: ",
        "retryBackoff: ",
        "suspend: ",
        "rerunInterrupted: ",
        "apiVersion: v1",
        "kind: ConfigMap",
        "data:",
        "jobs.yaml: |",
        "jobs.yaml: ",
        "metadata:",
        "binaryData:",
        "\n",
        "\n",
        "\n",
        "  ",
        "  ",
        "    ",
        "\t",
        "\r\n",
        "\r",
        "[",
        "]",
        "{",
        "}",
        ",",
        ": ",
        ":",
        "\"",
        "'",
        "&a ",
        "*a",
        "!!str ",
        "!!binary ",
        "!x ",
        "|",
        "|-",
        ">",
        "# c",
        "---",
        "...",
        "? ",
        "%YAML 1.2",
        "@daily",
        "* * * * *",
        "*/5 * * * * *",
        "0 0 L * *",
        "0 0 * * 5#L",
        "5s",
        "0s",
        "1h",
        "-1s",
        "99999999999h",
        "a",
        "x",
        "UTC",
        "Europe/Berlin",
        "Forbid",
        "Replace",
        "true",
        "no",
        "~",
        "null",
        "1",
        "-1",
        "0x7f",
        "1e400",
        ".nan",
        "101",
        "4294967296",
        "LEASECRON_JOB",
        "PATH",
        "/bin/true",
        "\\u0000",
        "\\e",
        "\u{0}",
        "\u{1b}",
        "\u{feff}",
        "\u{85}",
        "\u{2028}",
        "é",
        "🙂",
    ]);
    prop::collection::vec(piece, 0..60).prop_map(|pieces| pieces.concat())
}

/// Lines shaped like a jobs file (`indent`, maybe `- `, `key: value`), with keys and values drawn from
/// the file's own vocabulary, so that most texts are YAML and reach the shape checks and the validator.
fn yaml_lines_soup() -> impl Strategy<Value = String> {
    let key = select(vec![
        "jobs",
        "defaults",
        "name",
        "schedule",
        "command",
        "shell",
        "env",
        "timeZone",
        "workingDir",
        "timeout",
        "terminationGrace",
        "concurrencyPolicy",
        "startingDeadline",
        "retries",
        "retryBackoff",
        "suspend",
        "rerunInterrupted",
        "bogus",
        "PATH",
        "LEASECRON_X",
        "1",
        "",
        "? x",
    ]);
    let value = select(vec![
        "",
        "",
        "a",
        "nightly",
        "-bad-",
        "Bad_Name",
        "\"*/5 * * * *\"",
        "@daily",
        "@every 5m",
        "\"0 0 30 2 *\"",
        "\"61 * * * *\"",
        "\"0 0 * * MON#5\"",
        "\"* * * * * * *\"",
        "UTC",
        "Mars/Olympus",
        "[/bin/true]",
        "[]",
        "[\"\"]",
        "[a, [b]]",
        "\"echo hi\"",
        "\"\"",
        "|\n  x",
        "{A: b}",
        "{LEASECRON_JOB: x}",
        "{1A: x}",
        "/srv",
        "5s",
        "0s",
        "3s",
        "10m",
        "6m",
        "-1s",
        "1y",
        "Forbid",
        "Sometimes",
        "0",
        "2",
        "101",
        "-1",
        "1.5",
        "true",
        "yes",
        "~",
        "[1, 2]",
        "{a: b}",
        "&x 5s",
        "*x",
        "!!str 3",
        "!!int x",
        "\"\\u0000\"",
        "\"\\e[31m\"",
    ]);
    let line = (
        select(vec!["", "", "  ", "  ", "    ", "      ", " ", "\t"]),
        select(vec!["", "", "- "]),
        key,
        select(vec![": ", ": ", ":", " : "]),
        value,
    )
        .prop_map(|(indent, dash, key, colon, value)| format!("{indent}{dash}{key}{colon}{value}"));
    prop::collection::vec(line, 0..25).prop_map(|lines| lines.join("\n"))
}

/// Arbitrary text: the soups above, any string, or arbitrary bytes read as `leasecron validate` would
/// not (it refuses invalid UTF-8), lossily.
fn any_text() -> impl Strategy<Value = String> {
    prop_oneof![
        2 => yaml_soup(),
        4 => yaml_lines_soup(),
        1 => any::<String>(),
        1 => any::<Vec<u8>>().prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
    ]
}

/// Load options: the defaults, none at all (as `leasecron next`), or an arbitrary grace bound.
fn any_load_options() -> impl Strategy<Value = LoadOptions> {
    prop_oneof![
        Just(LoadOptions::default()),
        Just(LoadOptions {
            max_termination_grace: Duration::MAX
        }),
        (0u64..20_000).prop_map(|ms| LoadOptions {
            max_termination_grace: Duration::from_millis(ms)
        }),
    ]
}

/// A manifest stream: documents made of Kubernetes-looking headers and arbitrary text, the `jobs.yaml`
/// key holding soup as a literal or a quoted scalar.
fn manifest_text() -> impl Strategy<Value = String> {
    let document = (
        select(vec![
            "apiVersion: v1\nkind: ConfigMap\n",
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: jobs\n",
            "apiVersion: v1\rkind: ConfigMap\r\rmetadata:\r\n  name: jobs\r",
            "apiVersion: apps/v1\nkind: Deployment\n",
            "kind: ConfigMap\n",
            "apiVersion: v1\n",
            "",
        ]),
        select(vec![
            "data:\n  jobs.yaml: |\n",
            "data:\n  jobs.yaml: ",
            "binaryData:\n  jobs.yaml: ",
            "data:\n",
            "",
        ]),
        yaml_soup(),
        1..6usize,
    )
        .prop_map(|(header, data, soup, indent)| {
            let body = if data.ends_with("|\n") {
                let pad = " ".repeat(indent);
                soup.lines().map(|l| format!("{pad}{l}\n")).collect()
            } else if data.ends_with(": ") {
                format!("{}\n", double_quoted(&soup))
            } else {
                soup
            };
            format!("{header}{data}{body}")
        });
    prop::collection::vec(document, 1..4).prop_map(|docs| docs.join("---\n"))
}

// === the jobs file: no panic, problems in the text ===

proptest! {
    #![proptest_config(config(512, Some(10_000)))]

    /// Whatever the text, validation returns jobs or problems, each at a line and column of the text.
    #[test]
    fn any_text_gives_jobs_or_problems_inside_the_text(
        text in any_text(),
        opts in any_load_options(),
    ) {
        check_jobs_result(&text, &config::parse_str(&text, ORIGIN, &opts))?;
        let source = config::parse_source(&text, ORIGIN, DEFAULT_CONFIG_MAP_KEY, &opts);
        check_source_result(&text, &source)?;
    }

    /// Manifests too: the problems of the manifest are in the manifest, those of an embedded jobs file
    /// at a known position.
    #[test]
    fn any_manifest_gives_jobs_or_placed_problems(
        text in manifest_text(),
        opts in any_load_options(),
    ) {
        let source = config::parse_source(&text, ORIGIN, DEFAULT_CONFIG_MAP_KEY, &opts);
        check_source_result(&text, &source)?;
    }
}

// === valid files: accepted, and read as the model says ===

/// Validates `text` as a jobs file, failing the case with the problems if it is not valid.
fn valid_jobs(text: &str, opts: &LoadOptions) -> Result<JobSet, TestCaseError> {
    config::parse_str(text, ORIGIN, opts).map_err(|err| {
        TestCaseError::fail(format!("a valid file was refused:\n{err}\n---\n{text}"))
    })
}

/// The jobs of the one ConfigMap of a manifest.
fn manifest_jobs(source: Source) -> Result<JobSet, TestCaseError> {
    match source {
        Source::Manifest {
            mut config_maps,
            skipped,
        } => {
            prop_assert_eq!(config_maps.len(), 1);
            prop_assert!(skipped.is_empty());
            Ok(config_maps.remove(0).jobs)
        }
        Source::JobsFile(_) => Err(TestCaseError::fail("a manifest read as a jobs file")),
    }
}

proptest! {
    #![proptest_config(config(256, None))]

    /// A generated valid file, in any of the styles the renderer knows, is accepted, and its jobs are the
    /// model's: every field, with defaults merged as documented.
    #[test]
    fn valid_files_are_accepted_and_read_as_written(model in model_file(), seed in any::<u64>()) {
        let text = model.render(&mut Style::new(seed));
        let opts = load_options(&model.timings);
        let jobs = valid_jobs(&text, &opts)?;
        prop_assert_eq!(&jobs, &model.expected(), "read differently:\n{}", text);

        // `leasecron validate`'s entry point reads it as a jobs file, with the same jobs.
        let source = config::parse_source(&text, ORIGIN, DEFAULT_CONFIG_MAP_KEY, &opts);
        prop_assert_eq!(source.ok(), Some(Source::JobsFile(jobs)));
    }

    /// Round trip: the validated jobs, written out again (every field explicit, no defaults), validate to
    /// the same jobs, in the canonical style and in any other.
    #[test]
    fn validated_jobs_survive_a_round_trip(model in model_file(), seed in any::<u64>()) {
        let opts = load_options(&model.timings);
        let jobs = valid_jobs(&model.render(&mut Style::new(seed)), &opts)?;
        let written = ModelFile::from_jobs(&jobs, model.timings);
        let canonical = written.render(&mut Style::canonical());
        let again = valid_jobs(&canonical, &opts)?;
        prop_assert_eq!(&again, &jobs, "changed by a round trip:\n{}", canonical);
        let restyled = written.render(&mut Style::new(seed.rotate_left(17)));
        prop_assert_eq!(valid_jobs(&restyled, &opts)?, jobs);
    }

    /// The same file embedded in a ConfigMap, as a block literal at any indentation or as a quoted
    /// scalar, gives the same jobs.
    #[test]
    fn valid_files_embedded_in_a_config_map_give_the_same_jobs(
        model in model_file(),
        seed in any::<u64>(),
        indent in 3..8usize,
        key in select(vec![DEFAULT_CONFIG_MAP_KEY, "crontab.yaml", "jobs"]),
    ) {
        let text = model.render(&mut Style::new(seed));
        let opts = load_options(&model.timings);
        let expected = model.expected();
        let (literal, _) = config_map_literal(&text, key, indent);
        let source = config::parse_source(&literal, ORIGIN, key, &opts)
            .map_err(|err| TestCaseError::fail(format!("{err}\n---\n{literal}")))?;
        prop_assert_eq!(manifest_jobs(source)?, expected.clone(), "as a literal:\n{}", literal);
        let quoted = config_map_quoted(&text, key);
        let source = config::parse_source(&quoted, ORIGIN, key, &opts)
            .map_err(|err| TestCaseError::fail(format!("{err}\n---\n{quoted}")))?;
        prop_assert_eq!(manifest_jobs(source)?, expected, "quoted:\n{}", quoted);
    }
}

// === mutated files: problems stay in the text ===

/// One edit of a rendered file; indices are taken modulo the number of lines (or characters).
#[derive(Debug, Clone)]
enum Mutation {
    DeleteLine(usize),
    DuplicateLine(usize),
    /// Adds (or removes, if negative) spaces at the start of a line.
    Indent(usize, i8),
    IndentWithTab(usize),
    /// Inserts `bogus: 1` at the indentation of a line, after it.
    UnknownField(usize),
    /// Replaces the value of a `key: value` line or a `- item` line.
    SwapValue(usize, &'static str),
    Insert(usize, &'static str),
    Truncate(usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let value = select(vec![
        "[1, 2]",
        "{a: b}",
        "123",
        "-5",
        "true",
        "~",
        "1.5",
        "\"str\"",
        "''",
        "&a x",
        "*a",
        "!!binary aGk=",
        "!!int x",
        "|",
        ">",
        "[",
        "{",
        "\"unterminated",
        "@",
        "`",
        "0x",
        "99999999999999999999999999999999999999999",
        "\"\\u0000\"",
        "\"\\e[1m\"",
        "'\t'",
        "\"0 0 30 2 *\"",
        "Mars/Olympus",
        "-1s",
        "1y",
        "Sometimes",
        "LEASECRON_JOB",
    ]);
    let piece = select(vec![
        ":", ": ", "-", "- ", "[", "]", "{", "}", ",", "\"", "'", "#", "&", "*", "!", "|", ">",
        "%", "@", "`", "?", "\t", "\n", "\r", "\r\n", " ", "\u{feff}", "\u{85}", "\u{0}", "é",
        "---\n", "...\n",
    ]);
    prop_oneof![
        any::<usize>().prop_map(Mutation::DeleteLine),
        any::<usize>().prop_map(Mutation::DuplicateLine),
        (any::<usize>(), -4..=4i8).prop_map(|(i, by)| Mutation::Indent(i, by)),
        any::<usize>().prop_map(Mutation::IndentWithTab),
        any::<usize>().prop_map(Mutation::UnknownField),
        (any::<usize>(), value).prop_map(|(i, v)| Mutation::SwapValue(i, v)),
        (any::<usize>(), piece).prop_map(|(i, p)| Mutation::Insert(i, p)),
        any::<usize>().prop_map(Mutation::Truncate),
    ]
}

fn mutate(text: &str, mutation: &Mutation) -> String {
    let mut lines: Vec<String> = text.split('\n').map(str::to_string).collect();
    let n = lines.len();
    match *mutation {
        Mutation::DeleteLine(i) => {
            lines.remove(i % n);
        }
        Mutation::DuplicateLine(i) => lines.insert(i % n + 1, lines[i % n].clone()),
        Mutation::Indent(i, by) => {
            let line = &mut lines[i % n];
            if by >= 0 {
                line.insert_str(0, &" ".repeat(by as usize));
            } else {
                let spaces = line.len() - line.trim_start_matches(' ').len();
                line.drain(..spaces.min(by.unsigned_abs() as usize));
            }
        }
        Mutation::IndentWithTab(i) => lines[i % n].insert(0, '\t'),
        Mutation::UnknownField(i) => {
            let line = &lines[i % n];
            let indent = line.len() - line.trim_start_matches([' ', '-']).len();
            lines.insert(i % n + 1, format!("{}bogus: 1", " ".repeat(indent)));
        }
        Mutation::SwapValue(i, value) => {
            let line = &mut lines[i % n];
            if let Some(at) = line.find(": ") {
                line.replace_range(at + 2.., value);
            } else if let Some(at) = line.find("- ") {
                line.replace_range(at + 2.., value);
            }
        }
        Mutation::Insert(i, piece) => {
            let text = lines.join("\n");
            let at = text
                .char_indices()
                .map(|(at, _)| at)
                .chain([text.len()])
                .nth(i % (text.chars().count() + 1));
            let at = at.unwrap_or(text.len());
            return format!("{}{piece}{}", &text[..at], &text[at..]);
        }
        Mutation::Truncate(i) => {
            let text = lines.join("\n");
            let at = text
                .char_indices()
                .map(|(at, _)| at)
                .nth(i % text.chars().count().max(1));
            return text[..at.unwrap_or(0)].to_string();
        }
    }
    lines.join("\n")
}

proptest! {
    #![proptest_config(config(512, Some(10_000)))]

    /// A valid file with a few lines deleted, duplicated, re-indented, retyped or garbled is accepted or
    /// refused with problems inside the text; embedded in a ConfigMap, it gives the same result, at the
    /// same places moved into the manifest (a block literal) or at the same places in the embedded text
    /// (a quoted scalar).
    #[test]
    fn mutated_files_give_jobs_or_problems_inside_the_text(
        model in model_file(),
        seed in any::<u64>(),
        mutations in prop::collection::vec(mutation(), 1..=3),
    ) {
        let mut text = model.render(&mut Style::block(seed));
        for m in &mutations {
            text = mutate(&text, m);
        }
        let opts = load_options(&model.timings);
        let plain = config::parse_str(&text, ORIGIN, &opts);
        check_jobs_result(&text, &plain)?;
        let plain_problems = match &plain {
            Ok(_) => Vec::new(),
            Err(config::Error::Invalid(d)) => d.as_slice().to_vec(),
            Err(_) => unreachable!("checked"),
        };

        // Quoted, the embedded text is exactly `text`: the same problems, the origin naming the key.
        let quoted = config_map_quoted(&text, DEFAULT_CONFIG_MAP_KEY);
        match (&plain, config::parse_source(&quoted, ORIGIN, DEFAULT_CONFIG_MAP_KEY, &opts)) {
            (Ok(jobs), Ok(source)) => prop_assert_eq!(&manifest_jobs(source)?, jobs),
            (Err(_), Err(config::Error::Invalid(found))) => {
                let expected: Vec<Diagnostic> = plain_problems
                    .iter()
                    .map(|d| Diagnostic { origin: format!("{ORIGIN} (data.jobs.yaml)"), ..d.clone() })
                    .collect();
                prop_assert_eq!(found.into_vec(), expected, "quoted:\n{}", quoted);
            }
            (plain, embedded) => prop_assert!(false, "{plain:?}\nbut quoted: {embedded:?}\n{quoted}"),
        }

        // As a block literal, the same problems moved by the lines above and the indentation.
        if embeds_as_written(&text) {
            let indent = 4;
            let (literal, above) = config_map_literal(&text, DEFAULT_CONFIG_MAP_KEY, indent);
            match (&plain, config::parse_source(&literal, ORIGIN, DEFAULT_CONFIG_MAP_KEY, &opts)) {
                (Ok(jobs), Ok(source)) => prop_assert_eq!(&manifest_jobs(source)?, jobs),
                (Err(_), Err(config::Error::Invalid(found))) => {
                    let expected: Vec<Diagnostic> = plain_problems
                        .iter()
                        .map(|d| Diagnostic {
                            line: d.line + above,
                            // Moved right by the indentation, but at most one past the end of the line.
                            column: (d.column + indent)
                                .min(yaml_lines(&literal)[d.line + above - 1].chars().count() + 1),
                            message: shift_quoted_positions(&d.message, above, indent),
                            ..d.clone()
                        })
                        .collect();
                    prop_assert_eq!(found.into_vec(), expected, "literal:\n{}", literal);
                }
                (plain, embedded) => {
                    prop_assert!(false, "{plain:?}\nbut as a literal: {embedded:?}\n{literal}")
                }
            }
        }
    }
}

// === the YAML pass: pieces on several threads or one pass, the same result ===

/// The jobs, or the problems, of `text` parsed as `pass` says.
fn parsed_as(
    text: &str,
    opts: &LoadOptions,
    pass: YamlPass,
) -> Result<Result<JobSet, Vec<Diagnostic>>, TestCaseError> {
    match config::parse_str_with(text, ORIGIN, opts, pass) {
        Ok(jobs) => Ok(Ok(jobs)),
        Err(config::Error::Invalid(found)) => Ok(Err(found.into_vec())),
        Err(err) => Err(TestCaseError::fail(format!(
            "not a validation result: {err}"
        ))),
    }
}

/// The jobs sequence cut into 2 to 5 pieces (when the file's shape allows) gives what one pass gives.
fn check_split_equals_single(text: &str, opts: &LoadOptions) -> Result<(), TestCaseError> {
    let single = parsed_as(text, opts, YamlPass::Single)?;
    prop_assert_eq!(
        &parsed_as(text, opts, YamlPass::Auto)?,
        &single,
        "auto:\n{}",
        text
    );
    for pieces in 2..=5 {
        let split = parsed_as(text, opts, YamlPass::Split(pieces))?;
        prop_assert_eq!(&split, &single, "{} pieces:\n{}", pieces, text);
    }
    Ok(())
}

proptest! {
    #![proptest_config(config(256, Some(10_000)))]

    /// Valid files in every style: the same jobs.
    #[test]
    fn valid_files_read_the_same_in_pieces(model in model_file(), seed in any::<u64>()) {
        let text = model.render(&mut Style::new(seed));
        check_split_equals_single(&text, &load_options(&model.timings))?;
    }

    /// Garbled files (a quoted scalar or flow collection left open across a cut, an item start out of
    /// place, an alias, broken YAML in one piece): the same jobs, or the same problems at the same places.
    #[test]
    fn mutated_files_read_the_same_in_pieces(
        model in model_file(),
        seed in any::<u64>(),
        mutations in prop::collection::vec(mutation(), 1..=3),
    ) {
        let mut text = model.render(&mut Style::block(seed));
        for m in &mutations {
            text = mutate(&text, m);
        }
        check_split_equals_single(&text, &load_options(&model.timings))?;
    }
}

// === schedules ===

/// Where the fires of a schedule are computed from.
#[derive(Debug, Clone)]
enum Start {
    /// A second of a year, plus nanoseconds.
    InYear(i32, u32, u32),
    /// Up to three hours around one of the zone's offset changes in a year (or its start, if none).
    NearChange {
        year: i32,
        pick: usize,
        seconds: i64,
    },
}

fn start() -> impl Strategy<Value = Start> {
    prop_oneof![
        2 => (1900..2200i32, 0..366 * 86_400u32, prop_oneof![Just(0u32), 0..1_000_000_000u32])
            .prop_map(|(year, second, nanos)| Start::InYear(year, second, nanos)),
        1 => (2200..4900i32, 0..366 * 86_400u32).prop_map(|(year, second)| Start::InYear(year, second, 0)),
        4 => (1970..2100i32, any::<usize>(), -3 * 3600..=3 * 3600i64)
            .prop_map(|(year, pick, seconds)| Start::NearChange { year, pick, seconds }),
    ]
}

fn new_year(year: i32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(year, 1, 1, 0, 0, 0)
        .single()
        .expect("a valid date")
}

impl Start {
    fn instant(&self, zone: Tz) -> DateTime<Utc> {
        match *self {
            Start::InYear(year, second, nanos) => {
                new_year(year)
                    + TimeDelta::seconds(second.into())
                    + TimeDelta::nanoseconds(nanos.into())
            }
            Start::NearChange {
                year,
                pick,
                seconds,
            } => {
                let changes = transitions(zone, new_year(year), new_year(year + 1));
                let at = if changes.is_empty() {
                    new_year(year)
                } else {
                    changes[pick % changes.len()]
                };
                at + TimeDelta::seconds(seconds)
            }
        }
    }
}

/// How long the brute-force completeness check scans, second by second, from the start.
const SCAN: TimeDelta = TimeDelta::minutes(90);
/// How many fires each case computes.
const FIRES: usize = 6;

proptest! {
    #![proptest_config(config(256, Some(30_000)))]

    /// For valid expressions, in any zone, from any instant (often next to a DST change): the fires
    /// strictly increase, each fires by the documented rules (the expression matches its wall time, once
    /// per wall time for a fixed-time schedule, the first instant after a gap for a fixed-time time the gap
    /// skipped), no wall time of a fire is one the zone skips, walking back from a fire finds the fire
    /// before it, and second by second over the first 90 minutes, nothing that should fire is missed.
    #[test]
    fn fires_increase_match_the_expression_and_miss_nothing(
        case in cron_case(),
        zone in zone(),
        start in start(),
    ) {
        let schedule = Schedule::parse(&case.text, zone)
            .map_err(|e| TestCaseError::fail(format!("{:?} refused: {e}", case.text)))?;
        let oracle = case.cron.matcher();
        prop_assert_eq!(schedule.is_fixed_time(), oracle.is_fixed_time());
        let t = start.instant(zone);

        let mut fires = Vec::new();
        let mut after = t;
        while fires.len() < FIRES {
            let Some(next) = schedule.next_after(after) else { break };
            fires.push(next);
            after = next;
        }
        if t.year() < 4_800 {
            prop_assert!(!fires.is_empty(), "no fire after {}", t);
        }
        let one = TimeDelta::seconds(1);
        let mut previous: Option<DateTime<Utc>> = None;
        for &fire in &fires {
            let wall = fire.with_timezone(&zone).naive_local();
            prop_assert!(fire > previous.unwrap_or(t), "{} after {:?} (from {})", fire, previous, t);
            prop_assert_eq!(fire.nanosecond(), 0, "{} is not a whole second", fire);
            prop_assert!(
                !matches!(zone.from_local_datetime(&wall), MappedLocalTime::None),
                "{} fires at {}, a wall time {} skips", fire, wall, zone
            );
            prop_assert!(
                oracle.fires_at(zone, fire),
                "{:?} in {}: {} ({} local) should not fire", case.text, zone, fire, wall
            );
            prop_assert_eq!(schedule.latest_at_or_before(fire), Some(fire));
            let before = schedule.latest_at_or_before(fire - one);
            match previous {
                Some(previous) => prop_assert_eq!(before, Some(previous), "walking back from {}", fire),
                None => prop_assert!(before.is_none_or(|b| b <= t), "{:?} between {} and {}", before, t, fire),
            }
            previous = Some(fire);
        }
        let listed: Vec<DateTime<Utc>> = schedule
            .upcoming(t, fires.len())
            .into_iter()
            .map(|at| at.with_timezone(&Utc))
            .collect();
        prop_assert_eq!(&listed, &fires);

        // Completeness, by brute force.
        if let Some(&last) = fires.last() {
            let end = last.min(t + SCAN);
            let mut at = t.with_nanosecond(0).expect("0 ns") + one;
            while at <= end {
                let expected = oracle.fires_at(zone, at);
                let fired = fires.contains(&at);
                prop_assert_eq!(
                    fired, expected,
                    "{:?} in {} at {} ({} local): fired {}, should {}",
                    case.text, zone, at, at.with_timezone(&zone), fired, expected
                );
                at += one;
            }
        }
    }
}

/// Expressions made of the pieces cron expressions are made of, valid or not.
fn expression_soup() -> impl Strategy<Value = String> {
    let token = select(vec![
        "*",
        "?",
        "*/5",
        "*/0",
        "*/1",
        "/",
        ",",
        "-",
        "0",
        "7",
        "59",
        "60",
        "23",
        "24",
        "31",
        "32",
        "1-5",
        "5-1",
        "1-5/2",
        "0/10",
        "L",
        "W",
        "LW",
        "15W",
        "5L",
        "5#L",
        "1#5",
        "1#6",
        "#",
        "+MON",
        "MON",
        "mon-fri",
        "FRI-SUN",
        "SUN-SUN",
        "JAN",
        "dec",
        "JAN-DEC/3",
        "99999999999999999999",
        "-1",
        "@daily",
        "@hourly",
        "@every",
        "5m",
        "@",
        "L-3",
        "?/1",
        "1,*",
        "\t",
        "é",
        "\u{0}",
    ]);
    let field = prop::collection::vec(token, 1..3).prop_map(|tokens| tokens.concat());
    prop::collection::vec(field, 0..8).prop_map(|fields| fields.join(" "))
}

/// Any instant chrono can represent.
fn any_instant() -> impl Strategy<Value = DateTime<Utc>> {
    let (min, max) = (
        DateTime::<Utc>::MIN_UTC.timestamp(),
        DateTime::<Utc>::MAX_UTC.timestamp(),
    );
    // Far from years 1 to 5000 croner walks year by year before it gives up: a few such cases suffice.
    prop_oneof![
        1 => (min..=max).prop_map(|s| DateTime::from_timestamp(s, 0).expect("in range")),
        1 => select(vec![DateTime::<Utc>::MIN_UTC, DateTime::<Utc>::MAX_UTC]),
        12 => (-65_000_000_000i64..100_000_000_000)
            .prop_map(|s| DateTime::from_timestamp(s, 0).expect("in range")),
    ]
}

proptest! {
    #![proptest_config(config(512, Some(10_000)))]

    /// Any expression, in any zone, from any instant: parsing never panics, and a schedule that parses
    /// answers every question (next fires, the latest fire, the upcoming list) without panicking or
    /// hanging, in increasing order.
    #[test]
    fn any_expression_parses_or_fails_and_answers_from_any_instant(
        expr in prop_oneof![
            3 => expression_soup(),
            1 => any::<String>(),
            2 => cron_case().prop_map(|case| case.text),
        ],
        zone in zone(),
        t in any_instant(),
    ) {
        let Ok(schedule) = Schedule::parse(&expr, zone) else {
            return Ok(());
        };
        let mut after = t;
        for _ in 0..3 {
            let Some(next) = schedule.next_after(after) else { break };
            prop_assert!(next > after);
            after = next;
        }
        if let Some(latest) = schedule.latest_at_or_before(t) {
            prop_assert!(latest <= t);
        }
        let upcoming = schedule.upcoming(t, 3);
        prop_assert!(upcoming.windows(2).all(|w| w[0] < w[1]));
    }
}
