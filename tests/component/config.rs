//! The jobs file: one test per class of mistake, each pinned to its line and column, plus a full file.

use std::path::{Path, PathBuf};
use std::time::Duration;

use leasecron::config::{
    self, ConcurrencyPolicy, Diagnostic, Env, JobSet, LoadOptions, Program, DEFAULT_RETRY_BACKOFF,
    DEFAULT_TERMINATION_GRACE,
};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/config")
        .join(name)
}

fn parse(source: &str) -> Result<JobSet, config::Error> {
    config::parse_str(source, "jobs.yaml", &LoadOptions::default())
}

/// The problems `source` has; panics if it is valid.
fn problems_with(source: &str, opts: &LoadOptions) -> Vec<Diagnostic> {
    match config::parse_str(source, "jobs.yaml", opts) {
        Ok(jobs) => panic!("expected problems, got {jobs:?}"),
        Err(config::Error::Invalid(diagnostics)) => diagnostics.into_vec(),
        Err(other) => panic!("expected diagnostics, got {other}"),
    }
}

fn problems(source: &str) -> Vec<Diagnostic> {
    problems_with(source, &LoadOptions::default())
}

/// Asserts exactly one problem, at `line`:`column`, for `job`, whose message contains `message`.
fn assert_one(source: &str, line: usize, column: usize, job: Option<&str>, message: &str) {
    let found = problems(source);
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_problem(&found[0], line, column, job, message);
}

fn assert_problem(
    found: &Diagnostic,
    line: usize,
    column: usize,
    job: Option<&str>,
    message: &str,
) {
    assert_eq!(
        (found.line, found.column),
        (line, column),
        "position of {found}"
    );
    assert_eq!(found.job.as_deref(), job, "job of {found}");
    assert!(
        found.message.contains(message),
        "{found} should mention {message:?}"
    );
    assert_eq!(found.origin, "jobs.yaml");
}

// === syntax and shape (serde-saphyr) ===

#[test]
fn bad_yaml_is_reported_at_its_position() {
    let path = fixture("bad-yaml.yaml");
    let err = config::load_file(&path, &LoadOptions::default()).expect_err("broken YAML");
    let config::Error::Invalid(diagnostics) = err else {
        panic!("expected diagnostics");
    };
    let found = diagnostics.as_slice();
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_eq!((found[0].line, found[0].column), (4, 14));
    assert!(
        found[0].message.contains("unclosed bracket"),
        "{}",
        found[0]
    );
    let origin = path.display().to_string();
    assert!(
        diagnostics
            .to_string()
            .starts_with(&format!("{origin}:4:14: ")),
        "{diagnostics}"
    );
}

#[test]
fn unknown_top_level_field_is_rejected() {
    assert_one(
        "defaults: {}\njobz: []\n",
        2,
        1,
        None,
        "unknown field `jobz`",
    );
}

#[test]
fn unknown_job_field_is_rejected() {
    let source = "jobs:\n  - name: a\n    schedule: \"@daily\"\n    comand: [/bin/true]\n";
    assert_one(source, 4, 5, Some("a"), "unknown field `comand`");
    let unnamed =
        "jobs:\n  - name: a\n    shell: \"true\"\n  - schedule: \"@daily\"\n    shel: \"true\"\n";
    assert_one(unnamed, 5, 5, Some("jobs[1]"), "unknown field `shel`");
    let duplicate_key = "jobs:\n  - name: a\n    shell: \"true\"\n    shell: \"false\"\n";
    assert_one(duplicate_key, 4, 5, Some("a"), "duplicate mapping key");
    let in_defaults = "jobs:\n  - name: a\n    shell: \"true\"\ndefaults:\n  nmae: x\n";
    assert_one(in_defaults, 5, 3, None, "unknown field `nmae`");
}

#[test]
fn a_value_of_the_wrong_type_is_reported_at_the_value() {
    let source =
        "jobs:\n  - name: a\n    schedule: \"@daily\"\n    shell: \"true\"\n    retries: many\n";
    let found = problems(source);
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_eq!((found[0].line, found[0].column), (5, 14), "{}", found[0]);
    assert_eq!(found[0].job.as_deref(), Some("a"));
}

#[test]
fn shape_and_value_errors_anywhere_in_the_file_are_all_reported() {
    let path = fixture("shape-errors.yaml");
    let source = std::fs::read_to_string(&path).expect("fixture");
    let found = problems(&source);
    assert_eq!(found.len(), 4, "{found:#?}");
    assert_problem(
        &found[0],
        5,
        5,
        Some("first"),
        "unknown field `retires`, expected one of `name`, `schedule`",
    );
    assert_problem(
        &found[1],
        12,
        14,
        Some("third"),
        "invalid type: string \"many\", expected an integer",
    );
    assert_problem(
        &found[2],
        14,
        15,
        Some("fourth"),
        "invalid minute field `61`",
    );
    assert_problem(
        &found[3],
        16,
        1,
        None,
        "unknown field `colour`, expected `defaults` or `jobs`",
    );
    let err = config::load_file(&path, &LoadOptions::default()).expect_err("invalid");
    let origin = path.display();
    assert!(
        err.to_string().contains(&format!(
            "{origin}:12:14: job third: invalid type: string \"many\""
        )),
        "{err}"
    );
}

#[test]
fn unknown_fields_in_two_jobs_are_both_reported() {
    let source = r#"jobs:
  - name: a
    schedule: "@daily"
    comand: [/bin/true]
  - name: b
    schedule: "@daily"
    shell: "true"
    timout: 5s
"#;
    let found = problems(source);
    assert_eq!(found.len(), 2, "{found:#?}");
    assert_problem(&found[0], 4, 5, Some("a"), "unknown field `comand`");
    assert_problem(&found[1], 8, 5, Some("b"), "unknown field `timout`");
}

#[test]
fn values_of_the_wrong_type_are_reported_beside_a_bad_value_elsewhere() {
    let source = r#"jobs:
  - name: counts
    schedule: "@daily"
    shell: "true"
    retries: many
  - name: flags
    schedule: "@daily"
    shell: "true"
    suspend: maybe
  - name: argv
    schedule: "@daily"
    command: "/bin/true --flag"
  - name: envy
    schedule: "@daily"
    shell: "true"
    env: [A=1]
  - name: zoned
    schedule: "@daily"
    timeZone: Europe/Bonn
    shell: "true"
"#;
    let found = problems(source);
    assert_eq!(found.len(), 5, "{found:#?}");
    assert_problem(&found[0], 5, 14, Some("counts"), "expected an integer");
    assert_problem(&found[1], 9, 14, Some("flags"), "expected a boolean");
    assert_problem(
        &found[2],
        12,
        14,
        Some("argv"),
        "expected a list of strings",
    );
    assert_problem(
        &found[3],
        16,
        10,
        Some("envy"),
        "invalid type: sequence, expected a mapping",
    );
    assert_problem(
        &found[4],
        19,
        15,
        Some("zoned"),
        "unknown time zone `Europe/Bonn`",
    );
}

#[test]
fn an_unknown_field_in_defaults_is_reported_beside_errors_in_jobs() {
    let source = r#"defaults:
  retries: 2
  timout: 5s
jobs:
  - name: a
    schedule: "@daily"
    shell: "true"
    suspend: maybe
  - name: b
    schedule: "@daily"
    shell: "true"
    retryBackoff: 1h
"#;
    let found = problems(source);
    assert_eq!(found.len(), 3, "{found:#?}");
    assert_problem(&found[0], 3, 3, None, "defaults: unknown field `timout`");
    assert_problem(&found[1], 8, 14, Some("a"), "expected a boolean");
    assert_problem(&found[2], 12, 19, Some("b"), "more than its cap");
}

#[test]
fn duplicate_keys_and_non_mapping_jobs_do_not_stop_the_check() {
    let source = r#"jobs:
  - just a string
  - name: a
    schedule: "@daily"
    schedule: "@hourly"
    shell: "true"
  - name: b
    schedule: "@daily"
    shell: "true"
    env: {X: "1", X: "2"}
"#;
    let found = problems(source);
    assert_eq!(found.len(), 3, "{found:#?}");
    assert_problem(
        &found[0],
        2,
        5,
        Some("jobs[0]"),
        "invalid type: string \"just a string\", expected a job",
    );
    assert_problem(
        &found[1],
        5,
        5,
        Some("a"),
        "duplicate mapping key `schedule` (first at line 4, column 5)",
    );
    assert_problem(&found[2], 10, 19, Some("b"), "duplicate mapping key `X`");
}

#[test]
fn missing_fields_are_held_back_while_the_file_has_shape_problems() {
    let misspelled =
        "jobs:\n  - name: a\n    schedule: \"@daily\"\n    shel: \"true\"\n  - name: b\n";
    assert_one(misspelled, 4, 5, Some("a"), "unknown field `shel`");
    let fixed = "jobs:\n  - name: a\n    schedule: \"@daily\"\n    shell: \"true\"\n  - name: b\n";
    let found = problems(fixed);
    assert_eq!(found.len(), 2, "{found:#?}");
    assert_problem(&found[0], 5, 5, Some("b"), "set `command`");
    assert_problem(&found[1], 5, 5, Some("b"), "missing `schedule`");
}

#[test]
fn string_fields_keep_numbers_and_booleans_as_written() {
    let source = r#"jobs:
  - name: typed
    schedule: "@daily"
    command: [/bin/echo, 1.10, yes, 0x1F]
    env: {VERSION: 1.10, ENABLED: yes, ZIP: 01234}
"#;
    let set = parse(source).expect("valid");
    let job = &set.jobs[0];
    assert_eq!(
        job.program,
        Program::Command(vec![
            "/bin/echo".into(),
            "1.10".into(),
            "yes".into(),
            "0x1F".into()
        ])
    );
    let env: Vec<(&str, &str)> = job
        .env
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(
        env,
        [("ENABLED", "yes"), ("VERSION", "1.10"), ("ZIP", "01234")]
    );
}

// === validation ===

#[test]
fn duplicate_names_point_at_the_second_and_name_the_first() {
    let source = r#"jobs:
  - name: dup
    schedule: "@daily"
    shell: "true"
  - name: dup
    schedule: "@hourly"
    shell: "true"
"#;
    assert_one(
        source,
        5,
        11,
        Some("dup"),
        "duplicate name `dup` (first used at line 2, column 11)",
    );
}

#[test]
fn names_must_be_dns_labels() {
    let source = "jobs:\n  - name: Nightly_Report\n    schedule: \"@daily\"\n    shell: \"true\"\n";
    assert_one(
        source,
        2,
        11,
        Some("Nightly_Report"),
        "invalid name `Nightly_Report`",
    );
}

#[test]
fn a_bad_cron_expression_is_reported_at_the_schedule() {
    let source =
        "jobs:\n  - name: report\n    schedule: \"0 0 1 1 * 2030 *\"\n    shell: \"true\"\n";
    assert_one(
        source,
        3,
        15,
        Some("report"),
        "invalid schedule `0 0 1 1 * 2030 *`: expected 5 fields",
    );
    let source = "jobs:\n  - name: report\n    schedule: 61 * * * *\n    shell: \"true\"\n";
    assert_one(source, 3, 15, Some("report"), "invalid minute field `61`");
}

#[test]
fn a_bad_zone_is_reported_at_the_zone() {
    let source = "jobs:\n  - name: report\n    schedule: \"@daily\"\n    timeZone: Europe/Bonn\n    shell: \"true\"\n";
    assert_one(
        source,
        4,
        15,
        Some("report"),
        "unknown time zone `Europe/Bonn`",
    );
}

#[test]
fn bad_durations_are_reported_at_the_value() {
    let source = r#"jobs:
  - name: report
    schedule: "@daily"
    shell: "true"
    timeout: 30
    startingDeadline: 0s
    retryBackoff: 1h
    terminationGrace: three
"#;
    let found = problems(source);
    assert_eq!(found.len(), 4, "{found:#?}");
    assert_problem(
        &found[0],
        5,
        14,
        Some("report"),
        "timeout: invalid duration `30`",
    );
    assert_problem(&found[1], 6, 23, Some("report"), "greater than zero");
    assert_problem(&found[2], 7, 19, Some("report"), "more than its cap of 5m");
    assert_problem(
        &found[3],
        8,
        23,
        Some("report"),
        "terminationGrace: invalid duration `three`",
    );
}

#[test]
fn command_and_shell_together_are_rejected_at_the_shell() {
    let source = r#"jobs:
  - name: both
    schedule: "@daily"
    command: [/bin/true]
    shell: "true"
"#;
    assert_one(
        source,
        5,
        12,
        Some("both"),
        "set exactly one of `command` and `shell`",
    );
}

#[test]
fn neither_command_nor_shell_is_rejected_at_the_job() {
    let source = "jobs:\n  - name: idle\n    schedule: \"@daily\"\n";
    assert_one(source, 2, 5, Some("idle"), "set `command`");
}

#[test]
fn empty_programs_are_rejected() {
    let source = r#"jobs:
  - name: no-argv
    schedule: "@daily"
    command: []
  - name: empty-program
    schedule: "@daily"
    command: ["", "--flag"]
  - name: empty-shell
    schedule: "@daily"
    shell: "   "
"#;
    let found = problems(source);
    assert_eq!(found.len(), 3, "{found:#?}");
    assert_problem(&found[0], 4, 14, Some("no-argv"), "`command` is empty");
    assert_problem(&found[1], 7, 15, Some("empty-program"), "`command[0]`");
    assert_problem(&found[2], 10, 12, Some("empty-shell"), "`shell` is empty");
}

#[test]
fn reserved_and_invalid_env_names_are_reported_at_the_key() {
    let source = r#"jobs:
  - name: envy
    schedule: "@daily"
    shell: "true"
    env:
      OK: fine
      LEASECRON_JOB: spoof
      1BAD: x
"#;
    let found = problems(source);
    assert_eq!(found.len(), 2, "{found:#?}");
    assert_problem(
        &found[0],
        7,
        7,
        Some("envy"),
        "env `LEASECRON_JOB` is reserved",
    );
    assert_problem(&found[1], 8, 7, Some("envy"), "invalid env name `1BAD`");
}

#[test]
fn policy_and_retries_are_checked() {
    let source = r#"jobs:
  - name: policy
    schedule: "@daily"
    shell: "true"
    concurrencyPolicy: forbid
    retries: 101
"#;
    let found = problems(source);
    assert_eq!(found.len(), 2, "{found:#?}");
    assert_problem(
        &found[0],
        5,
        24,
        Some("policy"),
        "unknown concurrencyPolicy `forbid` (expected Forbid, Allow, Replace or Queue)",
    );
    assert_problem(&found[1], 6, 14, Some("policy"), "between 0 and 100");
}

#[test]
fn queue_is_a_concurrency_policy_in_a_job_and_in_defaults() {
    let source = r#"defaults:
  concurrencyPolicy: Queue
jobs:
  - name: inherits
    schedule: "@daily"
    shell: "true"
  - name: own
    schedule: "@daily"
    shell: "true"
    concurrencyPolicy: " Queue "
  - name: forbids
    schedule: "@daily"
    shell: "true"
    concurrencyPolicy: Forbid
"#;
    let set = parse(source).expect("valid");
    let policy = |name: &str| set.get(name).expect("job").concurrency_policy;
    assert_eq!(policy("inherits"), ConcurrencyPolicy::Queue);
    assert_eq!(policy("own"), ConcurrencyPolicy::Queue);
    assert_eq!(policy("forbids"), ConcurrencyPolicy::Forbid);
    assert_one(
        "jobs:\n  - name: q\n    schedule: \"@daily\"\n    shell: \"true\"\n    concurrencyPolicy: queue\n",
        5,
        24,
        Some("q"),
        "unknown concurrencyPolicy `queue` (expected Forbid, Allow, Replace or Queue)",
    );
}

// === jitter ===

/// A job `j` on `schedule` with `jitter: {jitter}`.
fn jittered(schedule: &str, jitter: &str) -> String {
    format!("jobs:\n  - name: j\n    schedule: \"{schedule}\"\n    shell: \"true\"\n    jitter: {jitter}\n")
}

#[test]
fn a_jitter_is_read_with_its_offset_fixed_by_the_name() {
    let set = parse(&jittered("@hourly", "10m")).expect("valid");
    let job = &set.jobs[0];
    assert_eq!(job.jitter, Some(Duration::from_secs(600)));
    assert_eq!(
        job.jitter_offset(),
        config::jitter_offset("j", Duration::from_secs(600))
    );
    assert!(job.jitter_offset() < Duration::from_secs(600));
    let plain = parse("jobs:\n  - name: j\n    schedule: \"@hourly\"\n    shell: \"true\"\n")
        .expect("valid");
    assert_eq!(plain.jobs[0].jitter, None);
    assert_eq!(plain.jobs[0].jitter_offset(), Duration::ZERO);
    // Just under the interval is fine; 1 ms is the least.
    assert!(parse(&jittered("*/30 * * * * *", "29s999ms")).is_ok());
    assert!(parse(&jittered("* * * * * *", "1ms")).is_ok());
}

#[test]
fn a_bad_jitter_is_reported_at_the_value() {
    assert_one(
        &jittered("@hourly", "0s"),
        5,
        13,
        Some("j"),
        "jitter: duration `0s` must be greater than zero",
    );
    assert_one(
        &jittered("@hourly", "soon"),
        5,
        13,
        Some("j"),
        "jitter: invalid duration `soon`",
    );
    assert_one(
        &jittered("@hourly", "-5s"),
        5,
        13,
        Some("j"),
        "cannot be negative",
    );
    assert_one(
        &jittered("@hourly", "500us"),
        5,
        13,
        Some("j"),
        "jitter 500us is less than the minimum of 1ms",
    );
    assert_one(
        &jittered("@hourly", "[1s]"),
        5,
        13,
        Some("j"),
        "invalid type: sequence, expected a string",
    );
}

#[test]
fn a_jitter_must_be_less_than_the_shortest_interval_of_the_schedule() {
    assert_one(
        &jittered("*/30 * * * * *", "1m"),
        5,
        13,
        Some("j"),
        "jitter 1m is not less than 30s, the shortest interval between consecutive slots of its \
         schedule (from ",
    );
    // Equal is not less.
    assert_one(
        &jittered("*/30 * * * * *", "30s"),
        5,
        13,
        Some("j"),
        "jitter 30s is not less than 30s",
    );
    // The shortest interval, not the usual one: 00:00 and 01:00 every day are 1 h apart, then 23 h.
    let found = problems(&jittered("0 0,1 * * *", "2h"));
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_problem(
        &found[0],
        5,
        13,
        Some("j"),
        "jitter 2h is not less than 1h, the shortest interval",
    );
    assert!(
        found[0].message.contains("T00:00:00Z to ") && found[0].message.contains("T01:00:00Z"),
        "names the two slots: {}",
        found[0].message
    );
    assert!(
        found[0].message.contains("lower it below 1h"),
        "{}",
        found[0].message
    );
    // A broken schedule is reported alone: there is no interval to compare with.
    assert_one(
        &jittered("61 * * * *", "1h"),
        3,
        15,
        Some("j"),
        "invalid schedule",
    );
}

#[test]
fn a_jitter_in_defaults_that_is_too_long_for_some_jobs_is_one_problem_where_it_is_written() {
    let source = r#"defaults:
  jitter: 10m
jobs:
  - name: hourly
    schedule: "@hourly"
    shell: "true"
  - name: five
    schedule: "*/5 * * * *"
    shell: "true"
  - name: own
    schedule: "*/5 * * * *"
    shell: "true"
    jitter: 1m
"#;
    assert_one(
        source,
        2,
        11,
        None,
        "defaults: jitter 10m is not less than 5m, the shortest interval between consecutive slots \
         of job five (from ",
    );
    let several = source.replace("jitter: 1m\n", "");
    assert_one(
        &several,
        2,
        11,
        None,
        "defaults: jitter 10m is not less than the shortest interval between consecutive slots of \
         jobs five and own (as short as 5m: from ",
    );
    // The jobs that set their own jitter, or whose slots are far enough apart, take or keep theirs.
    let fits = source.replace(
        "schedule: \"*/5 * * * *\"\n    shell: \"true\"\n  - name: own",
        "schedule: \"@daily\"\n    shell: \"true\"\n  - name: own",
    );
    let set = parse(&fits).expect("valid");
    assert_eq!(
        set.get("hourly").expect("job").jitter,
        Some(Duration::from_secs(600))
    );
    assert_eq!(
        set.get("five").expect("job").jitter,
        Some(Duration::from_secs(600))
    );
    assert_eq!(
        set.get("own").expect("job").jitter,
        Some(Duration::from_secs(60))
    );
    // A job's own jitter that is too long is its own problem, not the default's.
    let own_too_long = fits.replace("jitter: 1m", "jitter: 6m");
    assert_one(
        &own_too_long,
        13,
        13,
        Some("own"),
        "jitter 6m is not less than 5m",
    );
}

#[test]
fn an_unnamed_job_is_called_by_its_index() {
    let source = "jobs:\n  - name: a\n    schedule: \"@daily\"\n    shell: \"true\"\n  - schedule: \"@daily\"\n    shell: \"true\"\n";
    assert_one(source, 5, 5, Some("jobs[1]"), "missing `name`");
}

#[test]
fn several_errors_are_reported_at_once() {
    let err = config::load_file(&fixture("many-errors.yaml"), &LoadOptions::default())
        .expect_err("invalid");
    let config::Error::Invalid(diagnostics) = err else {
        panic!("expected diagnostics");
    };
    let found: Vec<(usize, usize, Option<&str>)> = diagnostics
        .iter()
        .map(|d| (d.line, d.column, d.job.as_deref()))
        .collect();
    assert_eq!(
        found,
        [
            (2, 13, None),
            (5, 15, Some("first")),
            (7, 5, Some("jobs[1]")),
            (9, 14, Some("jobs[1]")),
            (12, 14, Some("third")),
        ]
    );
    let text = diagnostics.to_string();
    let origin = fixture("many-errors.yaml").display().to_string();
    let first_line = text.lines().next().expect("one line per problem");
    assert_eq!(
        first_line,
        format!("{origin}:2:13: defaults: unknown time zone `Mars/Olympus` (use an IANA name such as UTC or Europe/Berlin)")
    );
    assert!(
        text.contains(&format!(
            "{origin}:12:14: job third: timeout: invalid duration `soon`"
        )),
        "{text}"
    );
    assert_eq!(text.lines().count(), 5);
}

// === defaults and bounds ===

#[test]
fn defaults_may_not_set_per_job_fields() {
    let source = "defaults:\n  name: x\n  shell: \"true\"\njobs: []\n";
    let found = problems(source);
    assert_eq!(found.len(), 2, "{found:#?}");
    assert_problem(
        &found[0],
        2,
        9,
        None,
        "defaults: `name` cannot be set in defaults",
    );
    assert_problem(
        &found[1],
        3,
        10,
        None,
        "defaults: `shell` cannot be set in defaults",
    );
}

#[test]
fn defaults_are_merged_under_each_job() {
    let source = r#"defaults:
  timeZone: America/New_York
  env: {A: from-defaults, B: from-defaults}
  retries: 4
jobs:
  - name: inherits
    schedule: "@daily"
    shell: "true"
  - name: overrides
    schedule: "@daily"
    shell: "true"
    timeZone: UTC
    env: {B: own, C: own}
    retries: 0
"#;
    let set = parse(source).expect("valid");
    let inherits = set.get("inherits").expect("job");
    assert_eq!(inherits.schedule.zone(), chrono_tz::America::New_York);
    assert_eq!(inherits.retries, 4);
    assert_eq!(
        inherits.env.get("A").map(String::as_str),
        Some("from-defaults")
    );
    let overrides = set.get("overrides").expect("job");
    assert_eq!(overrides.schedule.zone(), chrono_tz::UTC);
    assert_eq!(overrides.retries, 0);
    let env: Vec<(&str, &str)> = overrides
        .env
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(env, [("A", "from-defaults"), ("B", "own"), ("C", "own")]);
}

#[test]
fn termination_grace_over_the_lease_bound_is_rejected() {
    let source = "jobs:\n  - name: slow\n    schedule: \"@daily\"\n    shell: \"true\"\n    terminationGrace: 5s\n";
    assert_one(
        source,
        5,
        23,
        Some("slow"),
        "terminationGrace 5s is more than the 3s 500ms the lease timings allow",
    );
    let ok = "jobs:\n  - name: quick\n    schedule: \"@daily\"\n    shell: \"true\"\n    terminationGrace: 3500ms\n";
    assert!(parse(ok).is_ok());
}

/// The bound of `--lease-duration 12s --renew-deadline 9s`: 12 − 1.2 − 9 = 1.8 s.
fn tight() -> LoadOptions {
    LoadOptions {
        max_termination_grace: Duration::from_millis(1800),
    }
}

#[test]
fn the_default_grace_must_fit_tight_lease_timings_too() {
    let source = "jobs:\n  - name: tight\n    schedule: \"@daily\"\n    shell: \"true\"\n";
    let found = problems_with(source, &tight());
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_problem(
        &found[0],
        2,
        5,
        Some("tight"),
        "terminationGrace is not set, and its default of 3s is more than the 1s 800ms the lease \
         timings allow: set `terminationGrace: 1s 800ms` (or less) in the job or in `defaults:`",
    );
    let with_grace = format!("defaults:\n  terminationGrace: 1s\n{source}");
    let set = config::parse_str(&with_grace, "jobs.yaml", &tight()).expect("valid");
    assert_eq!(set.jobs[0].termination_grace, Duration::from_secs(1));
}

#[test]
fn a_kubernetes_job_has_no_grace_to_fit_the_lease_timings() {
    // Its pods have their own terminationGracePeriodSeconds; leasecron signals no process of it.
    let source = "jobs:\n  - name: pods\n    schedule: \"@daily\"\n    executor: kubernetes\n    jobTemplate:\n      template:\n        spec:\n          restartPolicy: Never\n          containers:\n            - name: main\n              image: busybox\n";
    let set = config::parse_str(source, "jobs.yaml", &tight()).expect("valid under tight timings");
    assert!(set.jobs[0].kubernetes.is_some());
}

#[test]
fn a_grace_that_does_not_fit_is_one_problem_where_it_is_written() {
    // Set in the job: one problem, at the value (not a second one about the default).
    let own = "jobs:\n  - name: a\n    schedule: \"@daily\"\n    shell: \"true\"\n    terminationGrace: 3s\n";
    let found = problems_with(own, &tight());
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_problem(
        &found[0],
        5,
        23,
        Some("a"),
        "terminationGrace 3s is more than the 1s 800ms the lease timings allow",
    );
    assert!(
        found[0].message.contains("lower it to at most 1s 800ms"),
        "{}",
        found[0]
    );

    // Set in defaults: one problem there, none in the jobs that inherit it.
    let defaults = "defaults:\n  terminationGrace: 3s\njobs:\n  - name: a\n    schedule: \"@daily\"\n    shell: \"true\"\n  - name: b\n    schedule: \"@daily\"\n    shell: \"true\"\n";
    let found = problems_with(defaults, &tight());
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_problem(
        &found[0],
        2,
        21,
        None,
        "defaults: terminationGrace 3s is more than the 1s 800ms",
    );

    // Written but not a duration: reported as such, not as a default that does not fit.
    let garbled = own.replace("terminationGrace: 3s", "terminationGrace: three");
    let found = problems_with(&garbled, &tight());
    assert_eq!(found.len(), 1, "{found:#?}");
    assert!(
        found[0].message.contains("invalid duration `three`"),
        "{}",
        found[0]
    );
}

#[test]
fn the_default_grace_used_by_several_jobs_is_one_problem() {
    let jobs = "jobs:\n  - name: a\n    schedule: \"@daily\"\n    shell: \"true\"\n  - name: b\n    schedule: \"@daily\"\n    shell: \"true\"\n  - name: c\n    schedule: \"@daily\"\n    shell: \"true\"\n    terminationGrace: 1s\n";
    let found = problems_with(jobs, &tight());
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_problem(
        &found[0],
        2,
        5,
        None,
        "jobs a and b set no terminationGrace, and its default of 3s is more than the 1s 800ms the \
         lease timings allow: set `terminationGrace: 1s 800ms` (or less) in `defaults:`",
    );
    // With a `defaults:` block, the problem is there, where the fix goes.
    let with_defaults = format!("defaults:\n  timeZone: UTC\n{jobs}");
    let found = problems_with(&with_defaults, &tight());
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_eq!((found[0].line, found[0].column), (2, 3), "{}", found[0]);
    // Many jobs are counted, not all listed.
    let many: String = (0..6)
        .map(|i| format!("  - name: j{i}\n    schedule: \"@daily\"\n    shell: \"true\"\n"))
        .collect();
    let found = problems_with(&format!("jobs:\n{many}"), &tight());
    assert_eq!(found.len(), 1, "{found:#?}");
    assert!(
        found[0]
            .message
            .starts_with("jobs j0, j1, j2 and 3 more set no terminationGrace"),
        "{}",
        found[0]
    );
}

// === valid files ===

#[test]
fn an_empty_job_list_is_valid_but_a_missing_one_is_not() {
    assert!(parse("jobs: []\n").expect("valid").jobs.is_empty());
    assert_one("defaults: {}\n", 1, 1, None, "missing `jobs:`");
}

#[test]
fn a_full_file_round_trips_every_field() {
    let set = config::load_file(&fixture("full.yaml"), &LoadOptions::default()).expect("valid");
    assert_eq!(set.jobs.len(), 2);
    let names: Vec<&str> = set.jobs.iter().map(|j| j.name.as_str()).collect();
    assert_eq!(names, ["nightly-report", "backup"], "file order");

    let report = &set.jobs[0];
    assert_eq!(report.schedule.expression(), "30 2 * * *");
    assert_eq!(report.schedule.zone(), chrono_tz::UTC);
    assert_eq!(
        report.program,
        Program::Command(vec!["/bin/report".into(), "--full".into()])
    );
    let env: Env = [
        ("LEVEL", "debug"),
        ("REPORT_BUCKET", "s3://reports"),
        ("SHARED", "from-defaults"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    assert_eq!(report.env, env);
    assert_eq!(report.working_dir, Some(PathBuf::from("/srv/reports")));
    assert_eq!(report.timeout, Some(Duration::from_secs(90)));
    assert_eq!(report.termination_grace, Duration::from_millis(500));
    assert_eq!(report.concurrency_policy, ConcurrencyPolicy::Replace);
    assert_eq!(report.starting_deadline, Some(Duration::from_secs(90)));
    assert_eq!(report.retries, 3);
    assert_eq!(report.retry_backoff, Duration::from_secs(60));
    assert!(report.suspend);

    let backup = &set.jobs[1];
    assert_eq!(backup.schedule.expression(), "@daily");
    assert_eq!(backup.schedule.zone(), chrono_tz::Europe::Berlin);
    assert_eq!(
        backup.program,
        Program::Shell("pg_dump db | gzip > /backups/db.gz".into())
    );
    assert_eq!(backup.env.len(), 2);
    assert_eq!(backup.working_dir, Some(PathBuf::from("/srv")));
    assert_eq!(backup.timeout, Some(Duration::from_secs(1800)));
    assert_eq!(backup.termination_grace, Duration::from_secs(2));
    assert_eq!(backup.concurrency_policy, ConcurrencyPolicy::Allow);
    assert_eq!(backup.starting_deadline, Some(Duration::from_secs(300)));
    assert_eq!(backup.retries, 2);
    assert_eq!(backup.retry_backoff, Duration::from_secs(10));
    assert!(!backup.suspend);
}

#[test]
fn a_minimal_job_gets_the_documented_defaults() {
    let set =
        parse("jobs:\n  - name: min\n    schedule: \"*/5 * * * *\"\n    command: [/bin/true]\n")
            .expect("valid");
    let job = &set.jobs[0];
    assert_eq!(job.schedule.zone(), chrono_tz::UTC);
    assert!(job.env.is_empty());
    assert_eq!(job.working_dir, None);
    assert_eq!(job.timeout, None);
    assert_eq!(job.termination_grace, DEFAULT_TERMINATION_GRACE);
    assert_eq!(job.concurrency_policy, ConcurrencyPolicy::Forbid);
    assert_eq!(job.starting_deadline, None);
    assert_eq!(job.retries, 0);
    assert_eq!(job.retry_backoff, DEFAULT_RETRY_BACKOFF);
    assert!(!job.suspend);
}

#[test]
fn an_unreadable_file_is_a_read_error_naming_the_path() {
    let path = fixture("does-not-exist.yaml");
    let err = config::load_file(&path, &LoadOptions::default()).expect_err("missing file");
    assert!(matches!(err, config::Error::Read { .. }), "{err:?}");
    assert!(err.to_string().contains("does-not-exist.yaml"), "{err}");
}

#[test]
fn rerun_interrupted_needs_a_starting_deadline() {
    assert_one(
        "jobs:\n  - name: a\n    schedule: \"@hourly\"\n    shell: \"true\"\n    rerunInterrupted: true\n",
        5,
        23,
        Some("a"),
        "rerunInterrupted needs startingDeadline",
    );
    // From defaults: one problem at defaults, naming the jobs without a deadline.
    assert_one(
        "defaults:\n  rerunInterrupted: true\njobs:\n  - name: a\n    schedule: \"@hourly\"\n    shell: \"true\"\n  - name: b\n    schedule: \"@hourly\"\n    shell: \"true\"\n    startingDeadline: 1m\n  - name: c\n    schedule: \"@hourly\"\n    shell: \"true\"\n",
        2,
        21,
        None,
        "defaults: rerunInterrupted needs startingDeadline (how late the rerun of an interrupted run \
         may still start), which jobs a and c do not set",
    );
    let jobs = parse(
        "defaults:\n  startingDeadline: 5m\njobs:\n  - name: a\n    schedule: \"@hourly\"\n    shell: \"true\"\n    rerunInterrupted: true\n",
    )
    .expect("valid with a deadline from defaults");
    assert!(jobs.jobs[0].rerun_interrupted);
    assert!(
        !parse("jobs:\n  - name: b\n    schedule: \"@hourly\"\n    shell: \"true\"\n")
            .expect("valid")
            .jobs[0]
            .rerun_interrupted
    );
}

// === what a new user gets wrong ===

#[test]
fn a_budget_limit_is_said_in_words_with_the_limit() {
    let deep = format!("jobs: {}{}\n", "[".repeat(70), "]".repeat(70));
    let found = problems(&deep);
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_eq!(
        found[0].message,
        "lists and mappings are nested more than 64 levels deep here, the most a jobs file may have"
    );
    let wide: String = (0..5200)
        .map(|_| format!("  - [{}]\n", vec!["1"; 50].join(",")))
        .collect();
    let found = problems(&format!("jobs:\n{wide}"));
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_eq!(
        found[0].message,
        "the file has more than 250000 values (scalars, lists and mappings), the most a jobs file may have"
    );
    assert!(!found[0].message.contains('{'), "no internal names");
}

#[test]
fn a_huge_integer_is_quoted_as_written() {
    let source = "jobs:\n  - name: a\n    schedule: \"@daily\"\n    shell: \"true\"\n    retries: 18446744073709551616\n";
    assert_one(
        source,
        5,
        14,
        Some("a"),
        "retries must be between 0 and 100, not 18446744073709551616",
    );
    let hex = source.replace("18446744073709551616", "0x1F4");
    assert_one(
        &hex,
        5,
        14,
        Some("a"),
        "retries must be between 0 and 100, not 0x1F4",
    );
    let float = source.replace("18446744073709551616", "1.5");
    assert_one(&float, 5, 14, Some("a"), "expected an integer");
}

#[test]
fn an_unclosed_quote_is_reported_at_the_quote() {
    for (source, line, column) in [
        // The parser notices only on the next line, as an indentation problem.
        ("jobs:\n  - name: \"a\n    schedule: \"* * * * *\"\n    shell: \"true\"\n", 2, 11),
        ("jobs:\n  - name: a\n    schedule: '* * * * *\n    shell: \"true\"\n", 3, 15),
        // At the end of the file.
        ("jobs:\n  - name: a\n    shell: \"true\n", 3, 12),
        // After a block scalar that holds a quote of its own.
        ("jobs:\n  - name: a\n    shell: |\n      echo \"\n    schedule: \"@daily\n    timeZone: UTC\n", 5, 15),
    ] {
        let found = problems(source);
        assert_eq!(found.len(), 1, "{source:?}: {found:#?}");
        assert_eq!((found[0].line, found[0].column), (line, column), "{source:?}: {}", found[0]);
        assert!(found[0].message.starts_with("unclosed quote: "), "{}", found[0]);
        assert!(found[0].message.contains("add the closing"), "{}", found[0]);
    }
}

#[test]
fn text_that_is_not_utf8_is_placed_at_the_first_bad_byte() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("latin1.yaml");
    std::fs::write(&path, b"jobs:\n  - name: a\n    shell: \"caf\xe9\"\n").expect("write");
    let err = config::load_file(&path, &LoadOptions::default()).expect_err("not UTF-8");
    let config::Error::Invalid(found) = &err else {
        panic!("expected a diagnostic, got {err:?}");
    };
    assert_eq!(
        (found.as_slice()[0].line, found.as_slice()[0].column),
        (3, 16)
    );
    assert!(
        err.to_string().contains("not valid UTF-8 (byte 0xE9 here)"),
        "{err}"
    );
}

#[test]
fn a_negative_duration_says_so() {
    let source =
        "jobs:\n  - name: a\n    schedule: \"@daily\"\n    shell: \"true\"\n    timeout: -5s\n";
    assert_one(
        source,
        5,
        14,
        Some("a"),
        "timeout: invalid duration `-5s`: a duration cannot be negative",
    );
    let typo = source.replace("-5s", "5 minutes ago");
    let found = problems(&typo);
    assert!(!found[0].message.contains(" at 0"), "{}", found[0]);
    assert_eq!(
        config::parse_duration("1x").unwrap_err(),
        "invalid duration `1x`: unknown time unit \"x\", supported units: ns, us/µs, ms, sec, min, \
         hours, days, weeks, months, years (and few variations) (write e.g. 500ms, 30s, 1m30s or 2h)"
    );
    assert!(
        config::parse_duration("5s!")
            .unwrap_err()
            .contains("unexpected `!` (character 3)"),
        "{}",
        config::parse_duration("5s!").unwrap_err()
    );
}

#[test]
fn a_zone_in_the_schedule_points_at_time_zone() {
    let source = "jobs:\n  - name: a\n    schedule: \"CRON_TZ=Europe/Berlin 0 2 * * *\"\n    shell: \"true\"\n";
    assert_one(
        source,
        3,
        15,
        Some("a"),
        "a time zone cannot be set in `schedule` (`CRON_TZ=Europe/Berlin`): put the zone in \
         `timeZone: Europe/Berlin` and write `schedule: \"0 2 * * *\"`",
    );
    let tz = source.replace("CRON_TZ=", "TZ=");
    assert_one(&tz, 3, 15, Some("a"), "(`TZ=Europe/Berlin`)");
}

#[test]
fn jobs_that_can_never_run_are_rejected() {
    let long = "x".repeat(config::MAX_ARGUMENT_LEN + 1);
    let shell = format!("jobs:\n  - name: a\n    schedule: \"@daily\"\n    shell: \"{long}\"\n");
    assert_one(
        &shell,
        4,
        12,
        Some("a"),
        "the `shell` script is 131072 bytes, more than the 131071 Linux passes to a program in one \
         argument (MAX_ARG_STRLEN)",
    );
    let fits = format!(
        "jobs:\n  - name: a\n    schedule: \"@daily\"\n    shell: \"{}\"\n",
        &long[1..]
    );
    assert!(parse(&fits).is_ok());
    let argument = format!(
        "jobs:\n  - name: a\n    schedule: \"@daily\"\n    command: [/bin/echo, \"{long}\"]\n"
    );
    assert_one(&argument, 4, 26, Some("a"), "`command[1]` is 131072 bytes");
    let env = format!(
        "jobs:\n  - name: a\n    schedule: \"@daily\"\n    shell: \"true\"\n    env: {{DATA: \"{long}\"}}\n"
    );
    assert_one(&env, 5, 17, Some("a"), "env `DATA` is 131077 bytes");

    let timeout =
        "jobs:\n  - name: a\n    schedule: \"@daily\"\n    shell: \"true\"\n    timeout: 1ns\n";
    assert_one(
        timeout,
        5,
        14,
        Some("a"),
        "timeout 1ns is less than the minimum of 1ms",
    );
    assert!(parse(&timeout.replace("1ns", "1ms")).is_ok());

    let relative = "jobs:\n  - name: a\n    schedule: \"@daily\"\n    shell: \"true\"\n    workingDir: srv/reports\n";
    assert_one(
        relative,
        5,
        17,
        Some("a"),
        "workingDir `srv/reports` is relative: give an absolute path",
    );
    let in_defaults = "defaults:\n  workingDir: ./srv\njobs: []\n";
    assert_one(
        in_defaults,
        2,
        15,
        None,
        "defaults: workingDir `./srv` is relative",
    );
}

#[test]
fn what_depends_on_the_machine_is_a_warning_of_a_valid_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let exists = dir.path().display().to_string();
    let missing = dir.path().join("missing").display().to_string();
    let file = dir.path().join("file");
    std::fs::write(&file, "").expect("write");
    let path = dir.path().join("jobs.yaml");
    std::fs::write(
        &path,
        format!(
            "defaults:\n  workingDir: {missing}\njobs:\n  - name: a\n    schedule: \"@daily\"\n    shell: \"true\"\n    workingDir: {exists}\n  - name: b\n    schedule: \"@daily\"\n    shell: \"true\"\n    workingDir: {}\n  - name: c\n    schedule: \"@daily\"\n    shell: \"true\"\n",
            file.display()
        ),
    )
    .expect("write");
    let checked = config::check_source(
        &path,
        config::DEFAULT_CONFIG_MAP_KEY,
        &LoadOptions::default(),
        config::DEFAULT_MAX_FILE_SIZE,
    )
    .expect("valid: what the machine lacks is only a warning");
    assert_eq!(checked.source.to_string(), "3 jobs");
    let warnings: Vec<String> = checked.warnings.iter().map(ToString::to_string).collect();
    let origin = path.display();
    assert_eq!(warnings.len(), 2, "{warnings:#?}");
    assert!(
        warnings[0].starts_with(&format!(
            "{origin}:2:15: warning: defaults: workingDir {missing} does not exist here"
        )),
        "{warnings:#?}"
    );
    assert!(
        warnings[1].starts_with(&format!(
            "{origin}:11:17: warning: job b: workingDir {} is not a directory here",
            file.display()
        )),
        "{warnings:#?}"
    );
}

#[test]
fn the_commands_read_at_most_the_size_they_are_given() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("jobs.yaml");
    std::fs::write(&path, "jobs: []\n").expect("write");
    let key = config::DEFAULT_CONFIG_MAP_KEY;
    assert!(config::check_source(&path, key, &LoadOptions::default(), 9).is_ok());
    let err = config::check_source(&path, key, &LoadOptions::default(), 8).expect_err("too large");
    assert!(
        matches!(err, config::Error::TooLarge { limit: 8, .. }),
        "{err:?}"
    );
    assert_eq!(config::DEFAULT_MAX_FILE_SIZE, 1024 * 1024);
}

#[test]
fn deep_nesting_does_not_overflow_a_small_stack() {
    // A reload runs on a tokio worker (2 MiB of stack); the parse must not need more than it has.
    let handle = std::thread::Builder::new()
        .stack_size(256 * 1024)
        .spawn(|| {
            let deep = format!("jobs: {}{}\n", "[".repeat(63), "]".repeat(63));
            let deeper = format!("jobs: {}{}\n", "[".repeat(70), "]".repeat(70));
            (parse(&deep).is_err(), parse(&deeper).is_err())
        })
        .expect("a thread");
    assert_eq!(handle.join().expect("no overflow"), (true, true));
}

// === the example ===

/// `jobs.example.yaml` at the repository's root.
fn example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("jobs.example.yaml")
}

#[test]
fn the_examples_flaky_job_fails_as_often_as_its_comment_says_and_retries_succeed() {
    let set = config::load_file(&example(), &LoadOptions::default()).expect("the example is valid");
    let job = set.get("flaky-sync").expect("the example has flaky-sync");
    let Program::Shell(script) = &job.program else {
        panic!("flaky-sync is a shell job");
    };
    assert_eq!(job.retries, 2);
    // Attempt by attempt, whether it succeeds, for slots in minutes 00, 01, 02, 08 and 59.
    let succeeds = |minute: u32, attempt: u32| {
        std::process::Command::new("/bin/sh")
            .args(["-c", script])
            .env(
                "LEASECRON_SCHEDULED_TIME",
                format!("2026-11-21T02:{minute:02}:15Z"),
            )
            .env("LEASECRON_ATTEMPT", attempt.to_string())
            .output()
            .expect("run /bin/sh")
            .status
            .success()
    };
    for (minute, failures) in [(0, 0), (1, 1), (2, 2), (8, 2), (59, 2), (10, 1)] {
        let results: Vec<bool> = (1..=3).map(|attempt| succeeds(minute, attempt)).collect();
        let expected: Vec<bool> = (1..=3).map(|attempt| attempt > failures).collect();
        assert_eq!(results, expected, "minute {minute}");
    }
}

// === executor: kubernetes ===

/// A kubernetes job whose `jobTemplate` body (indented under `jobTemplate:` at 6 spaces) is `template`;
/// the template starts on line 6.
fn kube_job(extra: &str, template: &str) -> String {
    format!(
        "jobs:\n  - name: report\n    schedule: \"* * * * *\"\n    executor: kubernetes\n{extra}    jobTemplate:\n{template}"
    )
}

const POD_HEAD: &str =
    "      template:\n        spec:\n          restartPolicy: Never\n          containers:\n";

#[test]
fn a_realistic_job_template_is_valid_and_read_as_a_job_spec() {
    let source = kube_job(
        "    timeout: 10m\n    retries: 2\n    cancelOnLeadershipLoss: true\n    failedJobsHistoryLimit: 5\n",
        concat!(
            "      parallelism: 1\n",
            "      template:\n",
            "        metadata:\n",
            "          labels: {app: report}\n",
            "        spec:\n",
            "          restartPolicy: OnFailure\n",
            "          serviceAccountName: report\n",
            "          initContainers:\n",
            "            - name: fetch\n",
            "              image: busybox:1.36\n",
            "              command: [sh, -c, \"echo fetch\"]\n",
            "          containers:\n",
            "            - name: main\n",
            "              image: example.com/report:1.2\n",
            "              args: [\"--full\"]\n",
            "              env:\n",
            "                - {name: BUCKET, value: reports}\n",
            "                - name: POD\n",
            "                  valueFrom: {fieldRef: {fieldPath: metadata.name}}\n",
            "              resources:\n",
            "                requests: {cpu: 500m, memory: 128Mi}\n",
            "                limits: {cpu: 1, memory: 1.5Gi, ephemeral-storage: 2e9}\n",
            "              volumeMounts: [{name: scratch, mountPath: /scratch}]\n",
            "              livenessProbe: {httpGet: {path: /healthz, port: http}}\n",
            "          volumes:\n",
            "            - name: scratch\n",
            "              emptyDir: {sizeLimit: 1Gi}\n",
            "            - name: config\n",
            "              configMap: {name: report-config}\n",
        ),
    );
    let set = parse(&source).unwrap_or_else(|e| panic!("{e}"));
    let job = &set.jobs[0];
    let config::Executor::Kubernetes(kube) = job.executor() else {
        panic!("a kubernetes job: {job:?}");
    };
    assert!(kube.cancel_on_leadership_loss);
    assert_eq!(kube.successful_jobs_history_limit, 3);
    assert_eq!(kube.failed_jobs_history_limit, 5);
    assert_eq!(job.timeout, Some(Duration::from_secs(600)));
    assert_eq!(job.retries, 2);
    let pod = kube.spec.template.spec.as_ref().expect("a pod spec");
    assert_eq!(pod.service_account_name.as_deref(), Some("report"));
    assert_eq!(pod.init_containers.as_ref().map(Vec::len), Some(1));
    let main = &pod.containers[0];
    assert_eq!(main.image.as_deref(), Some("example.com/report:1.2"));
    let limits = main
        .resources
        .as_ref()
        .and_then(|r| r.limits.as_ref())
        .expect("limits");
    assert_eq!(limits["cpu"].0, "1");
    assert_eq!(limits["memory"].0, "1.5Gi");
    assert_eq!(pod.volumes.as_ref().map(Vec::len), Some(2));
}

#[test]
fn an_unknown_field_deep_in_a_container_is_reported_with_the_nearest_name() {
    let source = kube_job(
        "",
        &format!("{POD_HEAD}            - name: main\n              image: x\n              imagePullPolice: Always\n"),
    );
    assert_one(
        &source,
        12,
        15,
        Some("report"),
        "jobTemplate.template.spec.containers[0]: unknown field `imagePullPolice` in Container: did you mean `imagePullPolicy`?",
    );
}

#[test]
fn a_container_without_image_is_reported_at_the_container() {
    let source = kube_job("", &format!("{POD_HEAD}            - name: main\n"));
    assert_one(
        &source,
        10,
        15,
        Some("report"),
        "containers[0]: missing required field `image`",
    );
}

#[test]
fn a_bad_quantity_is_reported_at_the_quantity() {
    let source = kube_job(
        "",
        &format!("{POD_HEAD}            - name: main\n              image: x\n              resources:\n                limits: {{cpu: 1x, memory: 1Gi}}\n"),
    );
    assert_one(
        &source,
        13,
        31,
        Some("report"),
        "resources.limits.cpu: invalid quantity `1x`: unknown suffix `x`",
    );
}

#[test]
fn values_of_the_wrong_type_are_all_reported_at_their_values() {
    let source = kube_job(
        "",
        &format!(
            "      backoffLimit: many\n{POD_HEAD}            - name: main\n              image: x\n              env:\n                - {{name: A, value: 1}}\n              ports: [{{containerPort: 99999999999}}]\n"
        ),
    );
    let found = problems(&source);
    assert_eq!(found.len(), 3, "{found:#?}");
    assert_problem(
        &found[0],
        6,
        21,
        Some("report"),
        "jobTemplate.backoffLimit: expected an integer, found string `many`",
    );
    assert_problem(
        &found[1],
        14,
        36,
        Some("report"),
        "env[0].value: expected a string, found number `1` (quote it",
    );
    assert_problem(
        &found[2],
        15,
        39,
        Some("report"),
        "does not fit a 32-bit integer",
    );
}

#[test]
fn enums_and_the_restart_policy_of_a_job_are_checked() {
    let source = kube_job(
        "",
        "      completionMode: Sometimes\n      template:\n        spec:\n          containers: [{name: a, image: x}]\n",
    );
    let found = problems(&source);
    assert_eq!(found.len(), 2, "{found:#?}");
    assert_problem(
        &found[0],
        6,
        23,
        Some("report"),
        "unsupported value `Sometimes` (expected one of Indexed, NonIndexed)",
    );
    assert_problem(
        &found[1],
        9,
        11,
        Some("report"),
        "set `restartPolicy: Never`",
    );
}

#[test]
fn process_fields_with_the_kubernetes_executor_are_refused_and_say_why() {
    let source = kube_job(
        "    shell: echo\n    workingDir: /tmp\n    retryBackoff: 5s\n",
        &format!("{POD_HEAD}            - {{name: a, image: x}}\n"),
    );
    let found = problems(&source);
    assert_eq!(found.len(), 3, "{found:#?}");
    assert_problem(
        &found[0],
        5,
        12,
        Some("report"),
        "`shell` does not apply to `executor: kubernetes`",
    );
    assert_problem(
        &found[1],
        6,
        17,
        Some("report"),
        "`workingDir` does not apply to `executor: kubernetes`",
    );
    assert_problem(
        &found[2],
        7,
        19,
        Some("report"),
        "`retryBackoff` does not apply",
    );
}

#[test]
fn timeout_and_active_deadline_seconds_together_are_refused() {
    let source = kube_job(
        "    timeout: 1m\n",
        &format!(
            "      activeDeadlineSeconds: 60\n{POD_HEAD}            - {{name: a, image: x}}\n"
        ),
    );
    assert_one(
        &source,
        5,
        14,
        Some("report"),
        "`timeout` becomes the Job's `activeDeadlineSeconds`",
    );
}

#[test]
fn kubernetes_needs_a_job_template() {
    let source = "jobs:\n  - name: report\n    schedule: \"* * * * *\"\n    executor: kubernetes\n";
    assert_one(
        source,
        4,
        15,
        Some("report"),
        "`executor: kubernetes` needs `jobTemplate`",
    );
    let source =
        "jobs:\n  - name: report\n    schedule: \"* * * * *\"\n    executor: pod\n    shell: x\n";
    assert_one(source, 4, 15, Some("report"), "unknown executor `pod`");
}

#[test]
fn a_job_template_with_the_process_executor_is_refused() {
    let source = "jobs:\n  - name: report\n    schedule: \"* * * * *\"\n    shell: echo\n    successfulJobsHistoryLimit: 2\n    jobTemplate: {template: {}}\n";
    let found = problems(source);
    assert_eq!(found.len(), 2, "{found:#?}");
    assert_problem(
        &found[0],
        5,
        33,
        Some("report"),
        "`successfulJobsHistoryLimit` only applies to `executor: kubernetes`",
    );
    assert_problem(
        &found[1],
        6,
        18,
        Some("report"),
        "`jobTemplate` only applies to `executor: kubernetes`",
    );
}
