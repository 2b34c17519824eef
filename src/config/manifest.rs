//! Kubernetes manifests that embed the jobs file in a ConfigMap, as `kubectl apply` and kustomize take
//! them, so that CI can check the YAML it is about to apply.
//!
//! A file is a manifest if the top-level mapping of one of its (`---` separated) documents has `apiVersion`
//! and `kind`; any other file is a plain jobs file, loaded as before. In a manifest, every `kind: ConfigMap`
//! document that has the key must be `apiVersion: v1` and hold the jobs file as text in `data.KEY`
//! ([`DEFAULT_CONFIG_MAP_KEY`] unless the caller names another key). ConfigMaps without the key (a
//! dashboard, another app's settings in the same `kustomize build` output) and other objects are skipped,
//! but a manifest where no ConfigMap has the key is an error at each ConfigMap, and one without a ConfigMap
//! is an error at each `kind`.
//!
//! Diagnostics of the embedded jobs file point into the manifest. A block literal (`jobs.yaml: |`) is the
//! jobs file as written, indented: its line `n` is `n` lines below the `|` and its columns move by the
//! indentation (a [`Shift`]), which is checked line by line against the manifest before it is trusted.
//! Every other scalar style (quoted, plain, folded `>`) changes the text as it is read (escapes, folded
//! line breaks), so no such mapping exists: positions stay those of the embedded text and the origin says
//! so, as in `cm.yaml (data.jobs.yaml):3:7: ...`.

mod literal;

use std::fmt;

use serde_saphyr::Spanned;

use super::node::{self, scalar_text, Node};
use super::raw::{Position, Shift};
use super::validate::MachineFacts;
use super::{escape_controls, syntax, Diagnostic, Diagnostics, Error, JobSet, LoadOptions};
use literal::block_literal_shift;

/// The `data` key that holds the jobs file unless the caller names another one.
pub const DEFAULT_CONFIG_MAP_KEY: &str = "jobs.yaml";

/// A file that [`load_source`](super::load_source) accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A plain jobs file.
    JobsFile(JobSet),
    /// Kubernetes manifests.
    Manifest {
        /// The jobs of every ConfigMap, in file order (at least one).
        config_maps: Vec<ConfigMapJobs>,
        /// The other objects, not checked.
        skipped: Vec<KubeObject>,
    },
}

/// The jobs file embedded in one ConfigMap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigMapJobs {
    /// The ConfigMap's `metadata.name`, if it has one.
    pub name: Option<String>,
    /// The `data` key that holds the jobs file.
    pub key: String,
    /// Its jobs.
    pub jobs: JobSet,
}

/// A Kubernetes object, by kind and name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubeObject {
    /// Its `kind`.
    pub kind: String,
    /// Its `metadata.name`, if it has one.
    pub name: Option<String>,
}

// === impl Source ===

impl Source {
    /// Every set of jobs in the file: one for a jobs file, one per ConfigMap for a manifest.
    pub fn job_sets(&self) -> impl Iterator<Item = &JobSet> {
        let (file, config_maps) = match self {
            Source::JobsFile(jobs) => (Some(jobs), &[][..]),
            Source::Manifest { config_maps, .. } => (None, config_maps.as_slice()),
        };
        file.into_iter()
            .chain(config_maps.iter().map(|config_map| &config_map.jobs))
    }
}

/// `1 job`, `4 jobs`.
fn jobs_count(jobs: &JobSet) -> String {
    match jobs.jobs.len() {
        1 => "1 job".to_string(),
        n => format!("{n} jobs"),
    }
}

/// What was loaded, for a summary: `4 jobs`, or
/// `ConfigMap leasecron-jobs, key jobs.yaml, 4 jobs; skipped Deployment leasecron`.
impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (config_maps, skipped) = match self {
            Source::JobsFile(jobs) => return f.write_str(&jobs_count(jobs)),
            Source::Manifest {
                config_maps,
                skipped,
            } => (config_maps, skipped),
        };
        for (i, config_map) in config_maps.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            let object = KubeObject {
                kind: "ConfigMap".to_string(),
                name: config_map.name.clone(),
            };
            let (key, count) = (&config_map.key, jobs_count(&config_map.jobs));
            write!(f, "{object}, key {key}, {count}")?;
        }
        for (i, object) in skipped.iter().enumerate() {
            f.write_str(if i == 0 { "; skipped " } else { ", " })?;
            write!(f, "{object}")?;
        }
        Ok(())
    }
}

impl fmt::Display for KubeObject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.name {
            Some(name) => write!(f, "{} {name}", self.kind),
            None => write!(f, "{} (unnamed)", self.kind),
        }
    }
}

// === loading ===

/// Parses `source` (named `origin`): a manifest if a document is a Kubernetes object, else a jobs file.
/// What only the machine can check goes to `facts`.
pub(super) fn parse(
    source: &str,
    origin: &str,
    key: &str,
    opts: &LoadOptions,
    facts: &mut MachineFacts,
) -> Result<Source, Error> {
    // Almost every file is one document: parse it once, whichever it turns out to be. A stream of several
    // documents, or a syntax error, takes the general path below (the jobs-file path reports both).
    if let Ok(document) = node::parse(source) {
        if kind_of(&document).is_none() {
            return super::validate_tree(document, source, origin, Shift::NONE, opts, facts)
                .map(Source::JobsFile)
                .map_err(Error::Invalid);
        }
        let checker = Checker {
            source,
            origin,
            key,
            opts,
            facts,
            problems: Vec::new(),
        };
        return checker.manifest(std::slice::from_ref(&document));
    }
    let documents = node::parse_documents(source).map_err(|err| {
        Error::Invalid(Diagnostics(vec![syntax::diagnostic(
            origin,
            source,
            Shift::NONE,
            &err,
        )]))
    })?;
    if !documents.iter().any(|doc| kind_of(doc).is_some()) {
        return super::parse_text(source, origin, Shift::NONE, opts, facts)
            .map(Source::JobsFile)
            .map_err(Error::Invalid);
    }
    let checker = Checker {
        source,
        origin,
        key,
        opts,
        facts,
        problems: Vec::new(),
    };
    checker.manifest(&documents)
}

/// Entries of a YAML mapping, as [`Node::Map`] holds them.
type Entries = [(Spanned<Node>, Spanned<Node>)];

/// The `kind` of a document that is a Kubernetes object (a mapping with `apiVersion` and `kind`).
fn kind_of(doc: &Spanned<Node>) -> Option<&Spanned<Node>> {
    let Node::Map(entries) = &doc.value else {
        return None;
    };
    find(entries, "apiVersion")?;
    find(entries, "kind").map(|(_, kind)| kind)
}

/// True if `doc` is a ConfigMap with `key` in its `data` or `binaryData`.
fn is_config_map_with_key(doc: &Spanned<Node>, key: &str) -> bool {
    let Node::Map(entries) = &doc.value else {
        return false;
    };
    let is_config_map =
        kind_of(doc).is_some_and(|kind| kind.value == Node::Str("ConfigMap".to_string()));
    is_config_map
        && ["data", "binaryData"].into_iter().any(|field| {
            find(entries, field).is_some_and(|(_, data)| match &data.value {
                Node::Map(data) => find(data, key).is_some(),
                _ => false,
            })
        })
}

/// The first entry `name` of a mapping.
fn find<'n>(entries: &'n Entries, name: &str) -> Option<&'n (Spanned<Node>, Spanned<Node>)> {
    entries
        .iter()
        .find(|(key, _)| matches!(&key.value, Node::Str(k) if k == name))
}

/// One document that is a Kubernetes object, with what the checks need.
struct Object<'n> {
    kind: String,
    kind_at: Position,
    api_version: (String, Position),
    name: Option<(String, Position)>,
    entries: &'n Entries,
}

impl Object<'_> {
    fn is_config_map(&self) -> bool {
        self.kind == "ConfigMap"
    }

    fn name(&self) -> Option<String> {
        self.name.as_ref().map(|(name, _)| name.clone())
    }
}

/// Checks the documents of one manifest, collecting every problem.
struct Checker<'a> {
    source: &'a str,
    origin: &'a str,
    key: &'a str,
    opts: &'a LoadOptions,
    facts: &'a mut MachineFacts,
    problems: Vec<Diagnostic>,
}

impl Checker<'_> {
    fn manifest(mut self, documents: &[Spanned<Node>]) -> Result<Source, Error> {
        let config_map_count = documents
            .iter()
            .filter_map(kind_of)
            .filter(|kind| kind.value == Node::Str("ConfigMap".to_string()))
            .count();
        let holders = documents
            .iter()
            .filter(|doc| is_config_map_with_key(doc, self.key))
            .count();
        let mut config_maps = Vec::new();
        let mut skipped = Vec::new();
        for doc in documents {
            let Some(object) = self.object(doc) else {
                continue;
            };
            if config_map_count == 0 {
                let message = format!(
                    "kind {}: expected a ConfigMap that embeds the jobs file",
                    object.kind
                );
                self.problem(object.kind_at, message);
            } else if object.is_config_map()
                && (holders == 0 || is_config_map_with_key(doc, self.key))
            {
                config_maps.extend(self.config_map(&object, config_map_count > 1));
            } else {
                skipped.push(KubeObject {
                    kind: object.kind.clone(),
                    name: object.name(),
                });
            }
        }
        if self.problems.is_empty() {
            Ok(Source::Manifest {
                config_maps,
                skipped,
            })
        } else {
            Err(Error::Invalid(Diagnostics(self.problems)))
        }
    }

    /// `doc` as a Kubernetes object; anything else is reported.
    fn object<'n>(&mut self, doc: &'n Spanned<Node>) -> Option<Object<'n>> {
        let entries = match &doc.value {
            Node::Map(entries) => entries.as_slice(),
            _ => &[],
        };
        let api_version = self.entry(entries, "apiVersion");
        let kind = self.entry(entries, "kind");
        let (Some((_, api_version)), Some((_, kind))) = (api_version, kind) else {
            let message =
                "not a Kubernetes object: every document of a manifest has `apiVersion` and `kind`";
            self.problem(Position::at(doc), message.to_string());
            return None;
        };
        let metadata = self.entry(entries, "metadata");
        let name = match metadata.map(|(_, metadata)| &metadata.value) {
            Some(Node::Map(metadata)) => self.entry(metadata, "name"),
            _ => None,
        };
        Some(Object {
            kind: self.text(kind),
            kind_at: Position::at(kind),
            api_version: (self.text(api_version), Position::at(api_version)),
            name: name.map(|(_, name)| (self.text(name), Position::at(name))),
            entries,
        })
    }

    /// The jobs of one ConfigMap; `several`: the file has more than one, so origins name it.
    fn config_map(&mut self, object: &Object<'_>, several: bool) -> Option<ConfigMapJobs> {
        let key = self.key;
        let label = KubeObject {
            kind: object.kind.clone(),
            name: object.name(),
        };
        let (version, version_at) = &object.api_version;
        if version != "v1" {
            let message = format!("apiVersion {version}: a ConfigMap is `apiVersion: v1`");
            self.problem(*version_at, message);
        }
        let in_binary_data = self.in_binary_data(object.entries);
        let Some((data_key, data)) = self.entry(object.entries, "data") else {
            if !in_binary_data {
                let at = object.name.as_ref().map_or(object.kind_at, |(_, at)| *at);
                let message = format!(
                    "{label} has no `data`: expected the jobs file in data.{key} \
                     (name the key that holds it with --key)"
                );
                self.problem(at, message);
            }
            return None;
        };
        let data_entries = match &data.value {
            Node::Map(entries) => entries.as_slice(),
            Node::Null => &[],
            other => {
                let message = format!(
                    "data: expected a mapping of keys to text, found {}",
                    other.unexpected()
                );
                self.problem(Position::at(data), message);
                return None;
            }
        };
        let Some((text_key, text)) = self.entry(data_entries, key) else {
            if !in_binary_data {
                let message = self.missing_key(&label, data_entries);
                self.problem(Position::at(data_key), message);
            }
            return None;
        };
        let Node::Str(text_value) = &text.value else {
            let message = format!(
                "data.{key}: expected the jobs file as text (`{key}: |` with the file indented \
                 below it), found {}",
                text.value.unexpected()
            );
            self.problem(Position::at(text), message);
            return None;
        };
        let (origin, shift) = match block_literal_shift(self.source, text_key, text, text_value) {
            Some(shift) => (self.origin.to_string(), shift),
            None if several => {
                let origin = format!("{} ({label}, data.{key})", self.origin);
                (escape_controls(&origin), Shift::NONE)
            }
            None => {
                let origin = format!("{} (data.{key})", self.origin);
                (escape_controls(&origin), Shift::NONE)
            }
        };
        match super::parse_text(text_value, &origin, shift, self.opts, self.facts) {
            Ok(jobs) => Some(ConfigMapJobs {
                name: object.name(),
                key: key.to_string(),
                jobs,
            }),
            Err(diagnostics) => {
                let mut problems = diagnostics.into_vec();
                if shift != Shift::NONE {
                    for problem in &mut problems {
                        self.clamp_to_line(problem);
                    }
                }
                self.problems.extend(problems);
                None
            }
        }
    }

    /// Puts a problem moved into the manifest by a [`Shift`] at most one past the end of its line.
    ///
    /// The shift adds the literal's indentation to every column, but the end of the embedded text and its
    /// empty lines are empty (or shorter) lines of the manifest: a syntax error at the end of the text
    /// would otherwise point past the end of the line it is on.
    fn clamp_to_line(&self, problem: &mut Diagnostic) {
        let Some(line) = problem.line.checked_sub(1) else {
            return;
        };
        if let Some(text) = self.source.split('\n').nth(line) {
            let width = text.strip_suffix('\r').unwrap_or(text).chars().count();
            problem.column = problem.column.min(width + 1);
        }
    }

    /// True if `binaryData` holds the key (reported: the jobs file is text).
    fn in_binary_data(&mut self, entries: &Entries) -> bool {
        let Some((_, binary_data)) = self.entry(entries, "binaryData") else {
            return false;
        };
        let Node::Map(binary_entries) = &binary_data.value else {
            return false;
        };
        let Some((key, _)) = self.entry(binary_entries, self.key) else {
            return false;
        };
        let message = format!(
            "binaryData.{}: the jobs file must be in data, as text",
            self.key
        );
        self.problem(Position::at(key), message);
        true
    }

    /// The message for a ConfigMap whose `data` lacks the key: which keys it has, and `--key`.
    fn missing_key(&self, label: &KubeObject, data_entries: &Entries) -> String {
        let keys: Vec<String> = data_entries
            .iter()
            .filter_map(|(key, _)| scalar_text(key, self.source))
            .map(|key| format!("`{key}`"))
            .collect();
        let has = if keys.is_empty() {
            "it has no keys".to_string()
        } else {
            format!("it has {}", keys.join(", "))
        };
        format!(
            "{label} has no data.{} ({has}): name the key that holds the jobs file with --key",
            self.key
        )
    }

    /// The entry `name` of a mapping; a repeated one is reported and the first wins.
    fn entry<'n>(
        &mut self,
        entries: &'n Entries,
        name: &str,
    ) -> Option<&'n (Spanned<Node>, Spanned<Node>)> {
        let mut found = entries
            .iter()
            .filter(|(key, _)| matches!(&key.value, Node::Str(k) if k == name));
        let first = found.next()?;
        let first_at = Position::at(&first.0);
        for (again, _) in found {
            let message = format!(
                "duplicate mapping key `{name}` (first at line {}, column {})",
                first_at.line, first_at.column
            );
            self.problem(Position::at(again), message);
        }
        Some(first)
    }

    /// A scalar as written (`kind`, names), or how serde calls the value if it is not one.
    fn text(&self, node: &Spanned<Node>) -> String {
        let text = scalar_text(node, self.source)
            .unwrap_or_else(|| format!("({})", node.value.unexpected()));
        escape_controls(&text)
    }

    fn problem(&mut self, at: Position, message: String) {
        self.problems.push(Diagnostic {
            origin: self.origin.to_string(),
            line: at.line,
            column: at.column,
            job: None,
            message: escape_controls(&message),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const JOB: &str =
        "jobs:\n  - name: hello\n    schedule: \"*/5 * * * *\"\n    command: [/bin/true]\n";

    fn parse_manifest(source: &str) -> Result<Source, Error> {
        parse(
            source,
            "cm.yaml",
            DEFAULT_CONFIG_MAP_KEY,
            &LoadOptions::default(),
            &mut MachineFacts::default(),
        )
    }

    fn problems(source: &str) -> Vec<Diagnostic> {
        match parse_manifest(source) {
            Ok(loaded) => panic!("expected problems, got {loaded:?}"),
            Err(Error::Invalid(diagnostics)) => diagnostics.into_vec(),
            Err(other) => panic!("expected diagnostics, got {other}"),
        }
    }

    /// The only problem of `source`, as `ORIGIN:LINE:COL: ...`.
    fn one_problem(source: &str) -> String {
        let found = problems(source);
        assert_eq!(found.len(), 1, "{found:#?}");
        found[0].to_string()
    }

    /// 1-based line and column of the first `needle` in `text`, after the first `after`.
    fn position_of(text: &str, after: &str, needle: &str) -> (usize, usize) {
        let start = text.find(after).expect("the anchor text") + after.len();
        let at = start + text[start..].find(needle).expect("the needle");
        let line = text[..at].matches('\n').count() + 1;
        let line_start = text[..at].rfind('\n').map_or(0, |i| i + 1);
        (line, text[line_start..at].chars().count() + 1)
    }

    /// A ConfigMap manifest whose `data` holds `entries` (already indented by two spaces).
    fn config_map(entries: &str) -> String {
        format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: leasecron-jobs\n  \
             namespace: cron\ndata:\n{entries}"
        )
    }

    /// `text` indented by `n` spaces, line by line (blank lines stay empty).
    fn indent(text: &str, n: usize) -> String {
        text.lines()
            .map(|line| {
                if line.is_empty() {
                    "\n".to_string()
                } else {
                    format!("{}{line}\n", " ".repeat(n))
                }
            })
            .collect()
    }

    fn bad_schedule_job() -> String {
        JOB.replace("*/5 * * * *", "61 * * * *")
    }

    #[test]
    fn a_plain_jobs_file_loads_as_before() {
        let opts = LoadOptions::default();
        let loaded = parse_manifest(JOB).expect("valid");
        let plain = crate::config::parse_str(JOB, "cm.yaml", &opts).expect("valid");
        assert_eq!(loaded, Source::JobsFile(plain));
        assert_eq!(loaded.to_string(), "1 job");

        for broken in ["jobs: [\n", "jobs:\n  - name: a\n bad: 1\n", "kind: x\n"] {
            let plain =
                crate::config::parse_str(broken, "cm.yaml", &opts).map_err(|e| e.to_string());
            let loaded = parse_manifest(broken).map_err(|e| e.to_string());
            assert_eq!(loaded.map(|_| ()), plain.map(|_| ()), "{broken:?}");
        }
    }

    #[test]
    fn a_config_map_with_a_block_literal_loads() {
        let manifest = config_map(&format!("  jobs.yaml: |\n{}", indent(JOB, 4)));
        let loaded = parse_manifest(&manifest).expect("valid");
        assert_eq!(
            loaded.to_string(),
            "ConfigMap leasecron-jobs, key jobs.yaml, 1 job"
        );
        assert_eq!(loaded.job_sets().count(), 1);
    }

    #[test]
    fn block_literal_positions_are_the_manifests() {
        for header in ["|", "|-", "|+", "| # the jobs", "!!str |", "&jobs |"] {
            let manifest = config_map(&format!(
                "  other: x\n  jobs.yaml: {header}\n{}",
                indent(&bad_schedule_job(), 4)
            ));
            let (line, column) = position_of(&manifest, "jobs.yaml:", "\"61");
            let found = one_problem(&manifest);
            assert!(
                found.starts_with(&format!("cm.yaml:{line}:{column}: job hello: ")),
                "{header}: {found}"
            );
        }
    }

    #[test]
    fn an_explicit_indentation_indicator_and_a_leading_blank_line_keep_positions_exact() {
        // `|2` under a two-space key: content indentation 4; the first line is indented 2 more.
        let job = bad_schedule_job().replace("jobs:\n", "jobs:\n  \n");
        let over_indented = format!("      # a comment in the file\n\n{}", indent(&job, 4));
        let blank_first = format!("\n{}", indent(&job, 4));
        for (header, body) in [
            ("|2", &over_indented),
            ("|2-", &over_indented),
            ("|-2", &over_indented),
            ("|", &blank_first),
        ] {
            let manifest = config_map(&format!("  jobs.yaml: {header}\n{body}"));
            let (line, column) = position_of(&manifest, "jobs.yaml:", "\"61");
            let found = one_problem(&manifest);
            assert!(
                found.starts_with(&format!("cm.yaml:{line}:{column}: job hello: ")),
                "{header}: {found}"
            );
        }
    }

    #[test]
    fn a_syntax_error_in_a_block_literal_is_placed_in_the_manifest() {
        let job = "jobs:\n  - name: hello\n    command: [/bin/true\n";
        let manifest = config_map(&format!("  jobs.yaml: |\n{}", indent(job, 4)));
        let found = problems(&manifest);
        assert_eq!(found.len(), 1, "{found:#?}");
        // Where the parser reports the unclosed bracket in the text alone, shifted.
        let embedded = match crate::config::parse_str(job, "x", &LoadOptions::default()) {
            Err(Error::Invalid(d)) => d.into_vec().remove(0),
            other => panic!("expected a syntax error: {other:?}"),
        };
        let (header_line, _) = position_of(&manifest, "", "jobs.yaml: |");
        assert_eq!(
            (found[0].line, found[0].column),
            (header_line + embedded.line, 4 + embedded.column)
        );
        assert_eq!(found[0].message, embedded.message);
        assert_eq!(
            (found[0].line, found[0].column),
            position_of(&manifest, "command:", "["),
            "at the bracket"
        );
    }

    #[test]
    fn duplicate_names_quote_the_first_in_manifest_lines() {
        let job = format!("{JOB}  - name: hello\n    shell: \"true\"\n    schedule: \"@hourly\"\n");
        let manifest = config_map(&format!("  jobs.yaml: |\n{}", indent(&job, 4)));
        let (first_line, first_column) = position_of(&manifest, "", "hello");
        let found = one_problem(&manifest);
        assert!(
            found.contains(&format!(
                "(first used at line {first_line}, column {first_column})"
            )),
            "{found}"
        );
    }

    #[test]
    fn other_scalar_styles_keep_embedded_positions_and_say_so() {
        let job = bad_schedule_job();
        let quoted = format!("  jobs.yaml: {job:?}\n");
        // Folded into one line when read.
        let flow =
            "jobs: [{name: hello,\n    schedule: \"61 * * * *\",\n    command: [/bin/true]}]";
        let single = format!("  jobs.yaml: '{flow}'\n");
        let folded = format!("  jobs.yaml: >\n    {flow}\n");
        let read = flow.replace("\n    ", " ");
        for (entry, text) in [(quoted, job.as_str()), (single, &read), (folded, &read)] {
            let (line, column) = position_of(text, "", "\"61");
            let found = one_problem(&config_map(&entry));
            assert!(
                found.starts_with(&format!(
                    "cm.yaml (data.jobs.yaml):{line}:{column}: job hello: "
                )),
                "{entry}: {found}"
            );
        }
        let found = one_problem(&config_map("  jobs.yaml: jobs\n"));
        assert!(
            found.starts_with("cm.yaml (data.jobs.yaml):1:1: "),
            "{found}"
        );
    }

    #[test]
    fn a_syntax_error_in_a_quoted_value_keeps_embedded_positions() {
        let found = one_problem(&config_map("  jobs.yaml: \"jobs: [\\n\"\n"));
        assert!(
            found.starts_with("cm.yaml (data.jobs.yaml):1:7: unclosed bracket"),
            "{found}"
        );
    }

    #[test]
    fn an_unclosed_quote_at_the_end_of_a_block_literal_is_placed_at_the_quote() {
        // The parser finds it at the end of the embedded text (the last, empty line); it is reported
        // where the quote is, on its own line of the manifest.
        let manifest = config_map("  jobs.yaml: |\n    jobs: '\n");
        let lines = manifest.lines().count();
        let found = one_problem(&manifest);
        assert!(
            found.starts_with(&format!("cm.yaml:{lines}:11: unclosed quote: ")),
            "{found}"
        );
    }

    #[test]
    fn a_block_literal_that_does_not_read_as_written_keeps_embedded_positions() {
        // An empty literal has no line to check the indentation by.
        let found = one_problem(&config_map("  jobs.yaml: |\n  other: x\n"));
        assert!(
            found.starts_with("cm.yaml (data.jobs.yaml):1:1: missing `jobs:`"),
            "{found}"
        );
    }

    #[test]
    fn crlf_and_tabs_do_not_break_the_translation() {
        let manifest = config_map(&format!(
            "  jobs.yaml: |\n{}",
            indent(&bad_schedule_job(), 4)
        ));
        let (line, column) = position_of(&manifest, "jobs.yaml:", "\"61");
        let found = one_problem(&manifest.replace('\n', "\r\n"));
        assert!(
            found.starts_with(&format!("cm.yaml:{line}:{column}: ")),
            "{found}"
        );

        let tabbed = config_map("  jobs.yaml: |\n    jobs:\n    \t- x\n\t\n");
        assert!(parse_manifest(&tabbed).is_err());
        let lone_cr = config_map("  jobs.yaml: |\r    jobs: []\r");
        let _ = parse_manifest(&lone_cr);
        // A lone CR above the literal is a line break to the YAML parser: positions stay embedded.
        let cr_above = "apiVersion: v1\nkind: ConfigMap\r\r\rdata:\n  jobs.yaml: |\n    h\n";
        let found = one_problem(cr_above);
        assert!(
            found.starts_with("cm.yaml (data.jobs.yaml):1:1: "),
            "{found}"
        );
    }

    #[test]
    fn another_kind_is_an_error_at_its_kind() {
        let manifest = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: leasecron\n";
        assert_eq!(
            one_problem(manifest),
            "cm.yaml:2:7: kind Deployment: expected a ConfigMap that embeds the jobs file"
        );
    }

    #[test]
    fn every_config_map_of_a_stream_is_checked_and_the_rest_skipped() {
        let first = config_map(&format!("  jobs.yaml: |\n{}", indent(JOB, 4)));
        let second = first.replace("leasecron-jobs", "more-jobs");
        let deployment = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: leasecron\n";
        let manifest = format!("---\n{first}---\n{deployment}---\n{second}---\n");
        let loaded = parse_manifest(&manifest).expect("valid");
        assert_eq!(
            loaded.to_string(),
            "ConfigMap leasecron-jobs, key jobs.yaml, 1 job; ConfigMap more-jobs, key jobs.yaml, \
             1 job; skipped Deployment leasecron"
        );
        assert_eq!(loaded.job_sets().count(), 2);

        // A ConfigMap without the key is someone else's: skipped, as long as one has it.
        let dashboard = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: dashboard\ndata:\n  d.json: \"{}\"\n";
        let with_dashboard = format!("{first}---\n{dashboard}");
        let loaded = parse_manifest(&with_dashboard).expect("valid");
        assert_eq!(
            loaded.to_string(),
            "ConfigMap leasecron-jobs, key jobs.yaml, 1 job; skipped ConfigMap dashboard"
        );
        assert!(
            one_problem(dashboard).contains("d.json"),
            "with no ConfigMap holding the key, each is reported: {}",
            one_problem(dashboard)
        );

        let broken = format!(
            "{deployment}---\n{}",
            config_map("  jobs.yaml: \"jobs: 1\"\n")
        );
        let second_broken = format!("{first}---\n{}", config_map("  jobs.yaml: \"jobs: 1\"\n"));
        assert!(one_problem(&broken).starts_with("cm.yaml (data.jobs.yaml):1:7: "));
        assert!(
            one_problem(&second_broken)
                .starts_with("cm.yaml (ConfigMap leasecron-jobs, data.jobs.yaml):1:7: "),
            "{}",
            one_problem(&second_broken)
        );
        let (line, column) = position_of(&manifest, "---\n", "\"*/5");
        let shifted = manifest.replacen("*/5 * * * *", "61 * * * *", 1);
        assert!(one_problem(&shifted).starts_with(&format!("cm.yaml:{line}:{column}: job hello:")));
    }

    #[test]
    fn a_stream_without_a_config_map_is_an_error_at_every_kind() {
        let manifest =
            "apiVersion: apps/v1\nkind: Deployment\n---\napiVersion: v1\nkind: Service\n";
        let found: Vec<String> = problems(manifest).iter().map(ToString::to_string).collect();
        assert_eq!(
            found,
            [
                "cm.yaml:2:7: kind Deployment: expected a ConfigMap that embeds the jobs file",
                "cm.yaml:5:7: kind Service: expected a ConfigMap that embeds the jobs file",
            ]
        );
    }

    #[test]
    fn a_document_that_is_not_an_object_is_an_error() {
        let manifest = format!(
            "jobs: []\n---\n{}",
            config_map("  jobs.yaml: \"jobs: []\"\n")
        );
        assert!(
            one_problem(&manifest).starts_with("cm.yaml:1:1: not a Kubernetes object"),
            "{}",
            one_problem(&manifest)
        );
    }

    #[test]
    fn another_key_is_chosen_by_name() {
        let manifest = config_map(&format!("  crontab.yaml: |\n{}", indent(JOB, 4)));
        let loaded = parse(
            &manifest,
            "cm.yaml",
            "crontab.yaml",
            &LoadOptions::default(),
            &mut MachineFacts::default(),
        );
        assert_eq!(
            loaded.expect("valid").to_string(),
            "ConfigMap leasecron-jobs, key crontab.yaml, 1 job"
        );
    }

    #[test]
    fn a_missing_key_lists_the_keys_there_are_at_data() {
        let manifest = config_map("  crontab.yaml: x\n  other: y\n");
        assert_eq!(
            one_problem(&manifest),
            "cm.yaml:6:1: ConfigMap leasecron-jobs has no data.jobs.yaml (it has `crontab.yaml`, \
             `other`): name the key that holds the jobs file with --key"
        );
        let empty = config_map("");
        assert!(
            one_problem(&empty).starts_with(
                "cm.yaml:6:1: ConfigMap leasecron-jobs has no data.jobs.yaml (it has no keys)"
            ),
            "{}",
            one_problem(&empty)
        );
    }

    #[test]
    fn a_config_map_without_data_is_an_error_at_its_name() {
        let manifest = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: jobs\n";
        let found = one_problem(manifest);
        assert!(
            found.starts_with("cm.yaml:4:9: ConfigMap jobs has no `data`")
                && found.contains("--key"),
            "{found}"
        );
        let unnamed = "apiVersion: v1\nkind: ConfigMap\n";
        assert!(one_problem(unnamed).starts_with("cm.yaml:2:7: ConfigMap (unnamed) has no `data`"));
    }

    #[test]
    fn the_jobs_file_in_binary_data_is_an_error() {
        let manifest = config_map("  other: x\nbinaryData:\n  jobs.yaml: am9iczogW10K\n");
        assert_eq!(
            one_problem(&manifest),
            "cm.yaml:9:3: binaryData.jobs.yaml: the jobs file must be in data, as text"
        );
    }

    #[test]
    fn shape_errors_of_the_config_map_are_placed() {
        let wrong_version = config_map("  jobs.yaml: \"jobs: []\"\n").replace("v1", "apps/v1");
        assert_eq!(
            one_problem(&wrong_version),
            "cm.yaml:1:13: apiVersion apps/v1: a ConfigMap is `apiVersion: v1`"
        );
        let not_text = config_map("  jobs.yaml:\n    jobs: []\n");
        assert!(
            one_problem(&not_text)
                .starts_with("cm.yaml:8:5: data.jobs.yaml: expected the jobs file as text"),
            "{}",
            one_problem(&not_text)
        );
        let data_list = config_map("  - jobs.yaml\n");
        assert!(one_problem(&data_list).starts_with("cm.yaml:7:3: data: expected a mapping"));
        let twice = config_map("  jobs.yaml: \"jobs: []\"\n  jobs.yaml: \"jobs: []\"\n");
        assert_eq!(
            one_problem(&twice),
            "cm.yaml:8:3: duplicate mapping key `jobs.yaml` (first at line 7, column 3)"
        );
    }
}
