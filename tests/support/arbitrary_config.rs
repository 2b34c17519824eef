//! Valid jobs files for the property tests: a model of the file (docs/design.md §3, README "The jobs file"),
//! proptest strategies that generate it within the documented bounds, a renderer that writes it as YAML in
//! one of many equivalent styles, and the jobs the model means ([`ModelFile::expected`]), computed from the
//! documented defaults and merge rules without going through the parser.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono_tz::Tz;
use leasecron::cmd::Timings;
use leasecron::config::{
    ConcurrencyPolicy, Job, JobSet, LoadOptions, Program, DEFAULT_RETRY_BACKOFF,
    DEFAULT_TERMINATION_GRACE, MAX_NAME_LEN, MAX_RETRIES, MAX_RETRY_BACKOFF, RESERVED_ENV_PREFIX,
};
use leasecron::schedule::Schedule;
use proptest::prelude::*;
use proptest::sample::select;

use super::arbitrary_schedule::{cron_case, zone};
use super::embedding::double_quoted;

/// A duration and the text it is written as (`90s`, `1m 30s`, `1500ms`...).
#[derive(Debug, Clone)]
pub struct Written {
    pub value: Duration,
    pub text: String,
}

/// The fields a job and `defaults:` share; `None` is "not written".
#[derive(Debug, Clone, Default)]
pub struct Settings {
    pub zone: Option<(Tz, String)>,
    pub env: Option<Vec<(String, String)>>,
    pub working_dir: Option<String>,
    pub timeout: Option<Written>,
    pub termination_grace: Option<Written>,
    pub concurrency_policy: Option<(ConcurrencyPolicy, String)>,
    pub starting_deadline: Option<Written>,
    pub retries: Option<(u32, String)>,
    pub retry_backoff: Option<Written>,
    pub suspend: Option<(bool, String)>,
    pub rerun_interrupted: Option<(bool, String)>,
    /// Under 1 s, less than any schedule's shortest interval (slots are whole seconds apart at least).
    pub jitter: Option<Written>,
}

/// One job of the model.
#[derive(Debug, Clone)]
pub struct ModelJob {
    pub name: String,
    /// The expression as written.
    pub schedule: String,
    pub program: Program,
    pub settings: Settings,
}

/// A valid jobs file and the lease timings it is validated against.
#[derive(Debug, Clone)]
pub struct ModelFile {
    pub timings: Option<Timings>,
    pub defaults: Option<Settings>,
    pub jobs: Vec<ModelJob>,
}

// === strategies ===

/// Lease timings that pass `Timings::load_options` (RD ≥ 1.2 × RP, RD ≤ LD − margin), or none (the
/// defaults, as `leasecron validate` without flags).
fn timings() -> impl Strategy<Value = Option<Timings>> {
    let explicit = (2_000u64..=120_000, 0.0f64..=1.0, 100u64..=2_000).prop_filter_map(
        "RD must fit between 1.2 × RP and LD − margin",
        |(ld, fraction, rp)| {
            let margin = (ld / 10).max(1_000);
            let (low, high) = (rp * 6 / 5 + 1, ld.checked_sub(margin)?);
            (low <= high).then(|| Timings {
                lease_duration: Duration::from_millis(ld),
                renew_deadline: Duration::from_millis(
                    low + ((high - low) as f64 * fraction) as u64,
                ),
                retry_period: Duration::from_millis(rp),
            })
        },
    );
    prop_oneof![1 => Just(None), 3 => explicit.prop_map(Some)]
}

/// The grace bound of `timings` (the default timings when `None`).
pub fn load_options(timings: &Option<Timings>) -> LoadOptions {
    match timings {
        Some(timings) => timings.load_options().expect("generated timings are valid"),
        None => LoadOptions::default(),
    }
}

/// A duration in `min..=max` milliseconds, written in one of humantime's spellings.
fn written(min_ms: u64, max_ms: u64) -> impl Strategy<Value = Written> {
    (min_ms..=max_ms, 0..6u8, select(vec!["", " "])).prop_map(|(ms, how, pad)| {
        let value = Duration::from_millis(ms);
        let text = match how {
            0 => humantime::format_duration(value).to_string(),
            1 => format!("{ms}ms"),
            2 if ms % 1000 == 0 => format!("{}s", ms / 1000),
            3 if ms % 60_000 == 0 => format!("{}m", ms / 60_000),
            4 if ms % 1000 == 0 => format!("{}sec", ms / 1000),
            5 => format!("{}us", ms * 1000),
            _ => humantime::format_duration(value)
                .to_string()
                .replace(' ', ""),
        };
        Written {
            value,
            text: format!("{pad}{text}{pad}"),
        }
    })
}

/// A string without NUL (the only character the validator refuses in free text).
fn free_text() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => "[a-zA-Z0-9 ./_=:-]{0,20}",
        2 => any::<String>().prop_map(|s| s.replace('\0', "")),
        1 => select(vec![
            "~", "null", "true", "yes", "No", "0x1F", "010", "1.10", ".nan", "-.inf", "1e3", "0o17",
            "#x", "- x", "a: b", "[x]", "{x}", "'q'", "\"q\"", "\\", "\t", "\r\n", " ", "@x", "`x",
            "%x", "&x", "*x", "!x", "|", ">", "?", ",", "\u{feff}", "\u{85}", "\u{2028}", "é",
        ])
        .prop_map(str::to_string),
    ]
}

/// A job name: a DNS-1123 label, sometimes one YAML would read as another type if unquoted.
fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => "[a-z0-9]([a-z0-9-]{0,12}[a-z0-9])?",
        1 => "[a-z0-9]([a-z0-9-]{55,61}[a-z0-9])",
        1 => select(vec!["1", "010", "0x1f", "1e3", "true", "no", "null", "y", "nan", "inf"])
            .prop_map(str::to_string),
    ]
    .prop_filter("at most 63 characters", |name| name.len() <= MAX_NAME_LEN)
}

fn env_name() -> impl Strategy<Value = String> {
    prop_oneof![
        5 => "[A-Za-z_][A-Za-z0-9_]{0,10}",
        1 => select(vec!["True", "NULL", "Null", "Y", "LEASECRON", "_", "on"]).prop_map(str::to_string),
    ]
    .prop_filter("LEASECRON_* is reserved", |name| !name.starts_with(RESERVED_ENV_PREFIX))
}

fn env() -> impl Strategy<Value = Vec<(String, String)>> {
    prop::collection::btree_map(env_name(), free_text(), 0..4)
        .prop_map(|map| map.into_iter().collect())
}

fn program() -> impl Strategy<Value = Program> {
    let argv = (
        free_text().prop_filter("the program is not empty", |p| !p.is_empty()),
        prop::collection::vec(free_text(), 0..4),
    )
        .prop_map(|(program, args)| {
            let mut argv = vec![program];
            argv.extend(args);
            Program::Command(argv)
        });
    let script_line = "[a-z0-9 |>$./=-]{1,20}";
    let multi_line = (prop::collection::vec(script_line, 1..4), any::<bool>()).prop_map(
        |(lines, trailing_newline)| {
            let mut script = lines.join("\n");
            if trailing_newline {
                script.push('\n');
            }
            script
        },
    );
    let shell = prop_oneof![free_text(), multi_line]
        .prop_filter("the script is not blank", |s| !s.trim().is_empty());
    prop_oneof![argv, shell.prop_map(Program::Shell)]
}

fn policy() -> impl Strategy<Value = (ConcurrencyPolicy, String)> {
    (
        select(vec![
            (ConcurrencyPolicy::Forbid, "Forbid"),
            (ConcurrencyPolicy::Allow, "Allow"),
            (ConcurrencyPolicy::Replace, "Replace"),
            (ConcurrencyPolicy::Queue, "Queue"),
        ]),
        select(vec!["", " "]),
    )
        .prop_map(|((policy, text), pad)| (policy, format!("{pad}{text}{pad}")))
}

fn boolean() -> impl Strategy<Value = (bool, String)> {
    select(vec![
        (true, "true"),
        (false, "false"),
        (true, "True"),
        (false, "FALSE"),
    ])
    .prop_map(|(b, text)| (b, text.to_string()))
}

fn retries() -> impl Strategy<Value = (u32, String)> {
    (0..=MAX_RETRIES, 0..4u8).prop_map(|(n, how)| {
        let text = match how {
            0 => format!("{n:#x}"),
            1 => format!("0o{n:o}"),
            2 => format!("+{n}"),
            _ => n.to_string(),
        };
        (n, text)
    })
}

fn zone_setting() -> impl Strategy<Value = (Tz, String)> {
    (zone(), select(vec!["", " "]))
        .prop_map(|(zone, pad)| (zone, format!("{pad}{}{pad}", zone.name())))
}

/// The shared fields, each set or not; the grace at most `max_grace`.
fn settings(max_grace: Duration) -> impl Strategy<Value = Settings> {
    let max_grace_ms = max_grace.as_millis().min(60_000) as u64;
    let day = 86_400_000;
    (
        (
            prop::option::weighted(0.3, zone_setting()),
            prop::option::weighted(0.3, env()),
            // `workingDir` must be absolute.
            prop::option::weighted(0.2, free_text().prop_map(|d| format!("/{d}"))),
            prop::option::weighted(0.3, written(1, 7 * day)),
            prop::option::weighted(0.3, written(0, max_grace_ms)),
            prop::option::weighted(0.3, policy()),
        ),
        (
            prop::option::weighted(0.3, written(1, day)),
            prop::option::weighted(0.3, retries()),
            prop::option::weighted(0.3, written(1, MAX_RETRY_BACKOFF.as_millis() as u64)),
            prop::option::weighted(0.2, boolean()),
            prop::option::weighted(0.2, boolean()),
            prop::option::weighted(0.2, written(1, 999)),
        ),
    )
        .prop_map(
            |(
                (zone, env, working_dir, timeout, termination_grace, concurrency_policy),
                (starting_deadline, retries, retry_backoff, suspend, rerun_interrupted, jitter),
            )| Settings {
                zone,
                env,
                working_dir,
                timeout,
                termination_grace,
                concurrency_policy,
                starting_deadline,
                retries,
                retry_backoff,
                suspend,
                rerun_interrupted,
                jitter,
            },
        )
}

/// A valid jobs file: up to five jobs with unique names, every field within its documented bounds.
pub fn model_file() -> impl Strategy<Value = ModelFile> {
    timings().prop_flat_map(|timings| {
        let max_grace = load_options(&timings).max_termination_grace;
        let job = (cron_case(), program(), settings(max_grace));
        (
            Just(timings),
            prop::option::of(settings(max_grace)),
            prop::collection::btree_set(name(), 0..=5),
            prop::collection::vec(job, 5),
        )
            .prop_map(|(timings, defaults, names, jobs)| {
                let jobs = names
                    .into_iter()
                    .zip(jobs)
                    .map(|(name, (schedule, program, settings))| ModelJob {
                        name,
                        schedule: schedule.text,
                        program,
                        settings,
                    })
                    .collect();
                let mut file = ModelFile {
                    timings,
                    defaults,
                    jobs,
                };
                file.satisfy_cross_field_rules();
                file
            })
    })
}

impl ModelFile {
    /// Makes the generated values meet the rules that span fields: `rerunInterrupted` needs a
    /// `startingDeadline`, and a job without a grace must be allowed the default one.
    fn satisfy_cross_field_rules(&mut self) {
        let max_grace = load_options(&self.timings).max_termination_grace;
        let defaults = self.defaults.clone().unwrap_or_default();
        for job in &mut self.jobs {
            let own = &mut job.settings;
            let rerun = own
                .rerun_interrupted
                .as_ref()
                .or(defaults.rerun_interrupted.as_ref())
                .is_some_and(|(b, _)| *b);
            if rerun && own.starting_deadline.is_none() && defaults.starting_deadline.is_none() {
                own.starting_deadline = Some(Written {
                    value: Duration::from_secs(60),
                    text: "1m".to_string(),
                });
            }
            if own.termination_grace.is_none()
                && defaults.termination_grace.is_none()
                && DEFAULT_TERMINATION_GRACE > max_grace
            {
                own.termination_grace = Some(Written {
                    value: max_grace,
                    text: humantime::format_duration(max_grace).to_string(),
                });
            }
        }
    }

    /// What validating the file must give, from the documented defaults and merge rules.
    pub fn expected(&self) -> JobSet {
        let defaults = self.defaults.clone().unwrap_or_default();
        let jobs = self
            .jobs
            .iter()
            .map(|job| {
                let own = &job.settings;
                let zone = own
                    .zone
                    .as_ref()
                    .or(defaults.zone.as_ref())
                    .map_or(Tz::UTC, |(zone, _)| *zone);
                let mut env: BTreeMap<String, String> = defaults
                    .env
                    .clone()
                    .unwrap_or_default()
                    .into_iter()
                    .collect();
                env.extend(own.env.clone().unwrap_or_default());
                let duration = |own: &Option<Written>, default: &Option<Written>| {
                    own.as_ref().or(default.as_ref()).map(|w| w.value)
                };
                Arc::new(Job {
                    name: job.name.clone(),
                    schedule: Schedule::parse(&job.schedule, zone)
                        .unwrap_or_else(|e| panic!("generated schedule {:?}: {e}", job.schedule)),
                    program: job.program.clone(),
                    kubernetes: None,
                    env: env.into(),
                    working_dir: own
                        .working_dir
                        .as_ref()
                        .or(defaults.working_dir.as_ref())
                        .map(PathBuf::from),
                    timeout: duration(&own.timeout, &defaults.timeout),
                    termination_grace: duration(
                        &own.termination_grace,
                        &defaults.termination_grace,
                    )
                    .unwrap_or(DEFAULT_TERMINATION_GRACE),
                    concurrency_policy: own
                        .concurrency_policy
                        .as_ref()
                        .or(defaults.concurrency_policy.as_ref())
                        .map_or(ConcurrencyPolicy::Forbid, |(p, _)| *p),
                    starting_deadline: duration(
                        &own.starting_deadline,
                        &defaults.starting_deadline,
                    ),
                    retries: own
                        .retries
                        .as_ref()
                        .or(defaults.retries.as_ref())
                        .map_or(0, |(n, _)| *n),
                    retry_backoff: duration(&own.retry_backoff, &defaults.retry_backoff)
                        .unwrap_or(DEFAULT_RETRY_BACKOFF),
                    suspend: own
                        .suspend
                        .as_ref()
                        .or(defaults.suspend.as_ref())
                        .is_some_and(|(b, _)| *b),
                    rerun_interrupted: own
                        .rerun_interrupted
                        .as_ref()
                        .or(defaults.rerun_interrupted.as_ref())
                        .is_some_and(|(b, _)| *b),
                    jitter: duration(&own.jitter, &defaults.jitter),
                })
            })
            .collect();
        JobSet { jobs }
    }

    /// The file with every field of every job written out and no defaults: what a validated job set
    /// says, for the idempotence check.
    pub fn from_jobs(jobs: &JobSet, timings: Option<Timings>) -> ModelFile {
        let written = |d: Duration| Written {
            value: d,
            text: humantime::format_duration(d).to_string(),
        };
        let policy = |p: ConcurrencyPolicy| {
            let text = match p {
                ConcurrencyPolicy::Forbid => "Forbid",
                ConcurrencyPolicy::Allow => "Allow",
                ConcurrencyPolicy::Replace => "Replace",
                ConcurrencyPolicy::Queue => "Queue",
            };
            (p, text.to_string())
        };
        let jobs = jobs
            .jobs
            .iter()
            .map(|job| ModelJob {
                name: job.name.clone(),
                schedule: job.schedule.expression().to_string(),
                program: job.program.clone(),
                settings: Settings {
                    zone: Some((job.schedule.zone(), job.schedule.zone().name().to_string())),
                    env: Some(job.env.clone().into_iter().collect()),
                    working_dir: job
                        .working_dir
                        .as_ref()
                        .map(|d| d.to_str().expect("UTF-8 from the file").to_string()),
                    timeout: job.timeout.map(written),
                    termination_grace: Some(written(job.termination_grace)),
                    concurrency_policy: Some(policy(job.concurrency_policy)),
                    starting_deadline: job.starting_deadline.map(written),
                    retries: Some((job.retries, job.retries.to_string())),
                    retry_backoff: Some(written(job.retry_backoff)),
                    suspend: Some((job.suspend, job.suspend.to_string())),
                    rerun_interrupted: Some((
                        job.rerun_interrupted,
                        job.rerun_interrupted.to_string(),
                    )),
                    jitter: job.jitter.map(written),
                },
            })
            .collect();
        ModelFile {
            timings,
            defaults: None,
            jobs,
        }
    }
}

// === rendering ===

/// Choices the renderer makes, drawn from a seed so that one generated model is written many ways.
#[derive(Debug, Clone, Copy)]
pub struct Style {
    state: u64,
    /// Block style only (one value per line, keys at known indentations), for line-based mutations.
    pub block_only: bool,
}

impl Style {
    pub fn new(seed: u64) -> Style {
        Style {
            state: seed | 1,
            block_only: false,
        }
    }

    pub fn block(seed: u64) -> Style {
        Style {
            block_only: true,
            ..Style::new(seed)
        }
    }

    /// The same plain style every time: block mappings, double-quoted strings, fields in order.
    pub fn canonical() -> Style {
        Style {
            state: 0,
            block_only: true,
        }
    }

    fn next(&mut self) -> u64 {
        if self.state == 0 {
            return 0;
        }
        // xorshift64
        self.state ^= self.state << 13;
        self.state ^= self.state >> 7;
        self.state ^= self.state << 17;
        self.state
    }

    /// True one time in `n` (never in the canonical style).
    fn one_in(&mut self, n: u64) -> bool {
        self.state != 0 && self.next() % n == 0
    }

    fn pick(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// True if `s` can be written as a plain scalar whose text is `s` in both block and flow context.
fn plain_safe(s: &str) -> bool {
    let mut chars = s.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '/' | '.'));
    first_ok
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '/' | '.' | '-'))
        && !matches!(s, "null" | "Null" | "NULL")
}

/// True if `s` can be written single-quoted on one line.
fn single_quote_safe(s: &str) -> bool {
    s.chars().all(|c| matches!(c, ' '..='~')) && !s.starts_with(' ') && !s.ends_with(' ')
}

/// A scalar string in a style the renderer picks among those that read back as `s`.
fn scalar(s: &str, style: &mut Style) -> String {
    if plain_safe(s) && !style.one_in(3) {
        return s.to_string();
    }
    if single_quote_safe(s) && style.one_in(2) {
        return format!("'{}'", s.replace('\'', "''"));
    }
    double_quoted(s)
}

/// A value that must be written plain (a number or boolean the parser types).
fn plain(s: &str) -> String {
    s.to_string()
}

/// A block literal for `s` at `indent`, if `s` reads back exactly from one.
fn block_literal(s: &str, indent: usize) -> Option<String> {
    let body = s.strip_suffix('\n');
    let (header, body) = match body {
        Some(body) if !body.ends_with('\n') => ("|", body),
        Some(_) => return None,
        None => ("|-", s),
    };
    let printable = body.chars().all(|c| matches!(c, ' '..='~' | '\n'));
    let first_line = body.lines().next().unwrap_or_default();
    if !printable || first_line.starts_with(' ') || body.is_empty() {
        return None;
    }
    let pad = " ".repeat(indent);
    let lines: Vec<String> = body
        .split('\n')
        .map(|line| {
            if line.is_empty() {
                String::new()
            } else {
                format!("{pad}{line}")
            }
        })
        .collect();
    Some(format!("{header}\n{}", lines.join("\n")))
}

/// One `key: value` of a mapping, before layout.
enum Value {
    Scalar(String),
    /// A block literal; its lines already indented for the key's indentation + 2.
    Literal(String),
    List(Vec<String>),
    Map(Vec<(String, String)>),
}

fn entries(job: Option<&ModelJob>, settings: &Settings, style: &mut Style) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    if let Some(job) = job {
        out.push(("name".to_string(), Value::Scalar(scalar(&job.name, style))));
        let schedule = &job.schedule;
        out.push((
            "schedule".to_string(),
            Value::Scalar(scalar(schedule, style)),
        ));
        match &job.program {
            Program::Command(argv) => {
                let items = argv.iter().map(|a| scalar(a, style)).collect();
                out.push(("command".to_string(), Value::List(items)));
            }
            Program::Shell(script) => {
                // The literal's indentation is fixed at layout; mark it with the unindented text.
                let literal = !style.one_in(3) && block_literal(script, 0).is_some();
                let value = if literal {
                    Value::Literal(script.clone())
                } else {
                    Value::Scalar(scalar(script, style))
                };
                out.push(("shell".to_string(), value));
            }
        }
    }
    if let Some((_, text)) = &settings.zone {
        out.push(("timeZone".to_string(), Value::Scalar(scalar(text, style))));
    }
    if let Some(env) = &settings.env {
        let pairs = env
            .iter()
            .map(|(k, v)| (scalar(k, style), scalar(v, style)))
            .collect();
        out.push(("env".to_string(), Value::Map(pairs)));
    }
    if let Some(dir) = &settings.working_dir {
        out.push(("workingDir".to_string(), Value::Scalar(scalar(dir, style))));
    }
    let durations = [
        ("timeout", &settings.timeout),
        ("terminationGrace", &settings.termination_grace),
        ("startingDeadline", &settings.starting_deadline),
        ("retryBackoff", &settings.retry_backoff),
        ("jitter", &settings.jitter),
    ];
    for (key, value) in durations {
        if let Some(w) = value {
            out.push((key.to_string(), Value::Scalar(scalar(&w.text, style))));
        }
    }
    if let Some((_, text)) = &settings.concurrency_policy {
        out.push((
            "concurrencyPolicy".to_string(),
            Value::Scalar(scalar(text, style)),
        ));
    }
    if let Some((_, text)) = &settings.retries {
        out.push(("retries".to_string(), Value::Scalar(plain(text))));
    }
    if let Some((_, text)) = &settings.suspend {
        out.push(("suspend".to_string(), Value::Scalar(plain(text))));
    }
    if let Some((_, text)) = &settings.rerun_interrupted {
        out.push(("rerunInterrupted".to_string(), Value::Scalar(plain(text))));
    }
    // Field order does not matter: shuffle it.
    for i in (1..out.len()).rev() {
        if style.state != 0 {
            let j = style.pick(i + 1);
            out.swap(i, j);
        }
    }
    out
}

/// A mapping in flow style: `{a: 1, b: [x, y]}` (no literals: the caller falls back to block).
fn flow_mapping(entries: &[(String, Value)]) -> Option<String> {
    let mut parts = Vec::new();
    for (key, value) in entries {
        let value = match value {
            Value::Scalar(s) => s.clone(),
            Value::Literal(_) => return None,
            Value::List(items) => format!("[{}]", items.join(", ")),
            Value::Map(pairs) => {
                let pairs: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}: {v}")).collect();
                format!("{{{}}}", pairs.join(", "))
            }
        };
        parts.push(format!("{key}: {value}"));
    }
    Some(format!("{{{}}}", parts.join(", ")))
}

/// A mapping in block style, its keys at `indent`; the first line is not indented (the caller places it
/// after `- ` or a key).
fn block_mapping(entries: &[(String, Value)], indent: usize, style: &mut Style) -> String {
    let pad = " ".repeat(indent);
    let mut lines = Vec::new();
    for (i, (key, value)) in entries.iter().enumerate() {
        let lead = if i == 0 { String::new() } else { pad.clone() };
        let comment = if style.one_in(8) { "  # a comment" } else { "" };
        match value {
            Value::Scalar(s) => lines.push(format!("{lead}{key}: {s}{comment}")),
            Value::Literal(text) => {
                let literal = block_literal(text, indent + 2).expect("checked when chosen");
                lines.push(format!("{lead}{key}: {literal}"));
            }
            Value::List(items) if items.is_empty() || (!style.block_only && style.one_in(2)) => {
                lines.push(format!("{lead}{key}: [{}]{comment}", items.join(", ")));
            }
            Value::List(items) => {
                lines.push(format!("{lead}{key}:{comment}"));
                // Sequences may sit at the key's indentation or deeper.
                let item_pad = if style.one_in(2) {
                    pad.clone()
                } else {
                    format!("{pad}  ")
                };
                for item in items {
                    lines.push(format!("{item_pad}- {item}"));
                }
            }
            Value::Map(pairs) if pairs.is_empty() || (!style.block_only && style.one_in(2)) => {
                let pairs: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}: {v}")).collect();
                lines.push(format!("{lead}{key}: {{{}}}{comment}", pairs.join(", ")));
            }
            Value::Map(pairs) => {
                lines.push(format!("{lead}{key}:{comment}"));
                for (k, v) in pairs {
                    lines.push(format!("{pad}  {k}: {v}"));
                }
            }
        }
    }
    lines.join("\n")
}

impl ModelFile {
    /// The file as YAML text in `style`.
    pub fn render(&self, style: &mut Style) -> String {
        let mut sections = Vec::new();
        if let Some(defaults) = &self.defaults {
            let entries = entries(None, defaults, style);
            let text = if entries.is_empty() {
                if style.one_in(2) {
                    "defaults:".to_string()
                } else {
                    "defaults: {}".to_string()
                }
            } else if !style.block_only && style.one_in(3) {
                format!(
                    "defaults: {}",
                    flow_mapping(&entries).expect("no literal in defaults")
                )
            } else {
                format!("defaults:\n  {}", block_mapping(&entries, 2, style))
            };
            sections.push(text);
        }
        let jobs = if self.jobs.is_empty() {
            "jobs: []".to_string()
        } else {
            let mut lines = vec!["jobs:".to_string()];
            let (dash_pad, body) = if style.one_in(2) { ("", 2) } else { ("  ", 4) };
            for job in &self.jobs {
                if style.one_in(6) {
                    lines.push(format!("{dash_pad}# job {}", job.name));
                }
                let entries = entries(Some(job), &job.settings, style);
                let flow = (!style.block_only && style.one_in(3))
                    .then(|| flow_mapping(&entries))
                    .flatten();
                match flow {
                    Some(flow) => lines.push(format!("{dash_pad}- {flow}")),
                    None => lines.push(format!(
                        "{dash_pad}- {}",
                        block_mapping(&entries, body, style)
                    )),
                }
            }
            lines.join("\n")
        };
        if style.one_in(2) {
            sections.push(jobs);
        } else {
            sections.insert(0, jobs);
        }
        let mut text = String::new();
        if style.one_in(4) {
            text.push_str("---\n");
        }
        if style.one_in(4) {
            text.push_str("# leasecron jobs\n");
        }
        text.push_str(&sections.join("\n"));
        text.push('\n');
        if style.one_in(6) {
            text.push_str("...\n");
        }
        text
    }
}
