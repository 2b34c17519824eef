//! The CLI's contract: exit codes and messages for good and bad input.

use crate::support::replica;

use std::fs;
use std::io::Write as _;
use std::process::Stdio;

use replica::{leasecron, output, output_without_kubeconfig, FAST_TIMINGS};

const GOOD: &str =
    "jobs:\n  - name: hello\n    schedule: \"*/5 * * * *\"\n    command: [\"/bin/true\"]\n";

/// Writes `text` to `name` in `dir` and returns its path.
fn write_file(dir: &tempfile::TempDir, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.path().join(name);
    fs::write(&path, text).expect("write a test file");
    path
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn validate_accepts_a_good_file_and_the_example() {
    let dir = tempfile::tempdir().unwrap();
    let good = write_file(&dir, "good.yaml", GOOD);
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/jobs.example.yaml");
    let out = output(&["validate", good.to_str().unwrap(), example]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("good.yaml: ok (1 job)\n"), "{stdout}");
    assert!(
        stdout.contains("jobs.example.yaml: ok (5 jobs)"),
        "{stdout}"
    );
}

#[test]
fn validate_reports_every_error_of_every_file_with_its_position() {
    let dir = tempfile::tempdir().unwrap();
    let a = write_file(
        &dir,
        "a.yaml",
        "jobs:\n  - name: x\n    schedule: \"61 * * * *\"\n    command: [\"/bin/true\"]\n",
    );
    let b = write_file(
        &dir,
        "b.yaml",
        "jobs:\n  - name: y\n    schedule: \"* * * * *\"\n    shell: true-ish\n    colour: red\n",
    );
    let out = output(&["validate", a.to_str().unwrap(), b.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains(&format!("{}:3:", a.display())), "{err}");
    assert!(err.contains(&format!("{}:5:", b.display())), "{err}");
    for line in err.lines() {
        assert!(
            line.starts_with(&format!("{}:", a.display()))
                || line.starts_with(&format!("{}:", b.display())),
            "every line is FILE:LINE:COL: message: {err}"
        );
    }
}

/// `run` of the jobs `text` on a lease file in `dir`, which must exit 2 before creating the lease file;
/// returns its stderr and the jobs file.
fn run_refused_before_the_lease(
    dir: &tempfile::TempDir,
    text: &str,
) -> (String, std::path::PathBuf) {
    let jobs = write_file(dir, "jobs.yaml", text);
    let lease = dir.path().join("lease.json");
    let out = output(&[
        "run",
        "--jobs",
        jobs.to_str().unwrap(),
        "--lease-file",
        lease.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(!lease.exists(), "the lease file was not created");
    (stderr(&out), jobs)
}

#[test]
fn run_with_an_invalid_jobs_file_exits_2_before_touching_the_lease() {
    let dir = tempfile::tempdir().unwrap();
    let (err, jobs) = run_refused_before_the_lease(
        &dir,
        "jobs:\n  - name: Bad_Name\n    schedule: \"* * * * *\"\n    command: [\"/bin/true\"]\n",
    );
    assert!(err.contains(&format!("{}:2:", jobs.display())), "{err}");
}

#[test]
fn run_on_a_lease_file_refuses_a_kubernetes_job_naming_it_before_touching_the_lease() {
    let dir = tempfile::tempdir().unwrap();
    let (err, _) = run_refused_before_the_lease(
        &dir,
        "jobs:\n  - name: local\n    schedule: \"@daily\"\n    command: [\"/bin/true\"]\n  - name: pods\n    schedule: \"@daily\"\n    executor: kubernetes\n    jobTemplate:\n      template:\n        spec:\n          restartPolicy: Never\n          containers:\n            - name: main\n              image: busybox\n",
    );
    assert!(
        err.contains(
            "job pods: executor: kubernetes creates Kubernetes Jobs, which needs the Kubernetes backend"
        ),
        "{err}"
    );
}

#[test]
fn bad_inputs_get_one_clear_line_and_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let jobs = write_file(&dir, "jobs.yaml", GOOD);
    let jobs = jobs.to_str().unwrap();
    let corrupt = write_file(&dir, "corrupt.json", "{ not json");
    let lease = dir.path().join("lease.json");
    let lease = lease.to_str().unwrap();
    let missing = dir.path().join("missing.yaml");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec![
                "run",
                "--jobs",
                missing.to_str().unwrap(),
                "--lease-file",
                lease,
            ],
            "missing.yaml",
        ),
        (
            vec![
                "run",
                "--jobs",
                jobs,
                "--lease-file",
                lease,
                "--lease-duration",
                "soon",
            ],
            "--lease-duration",
        ),
        (
            vec![
                "run",
                "--jobs",
                jobs,
                "--lease-file",
                lease,
                "--lease-duration",
                "10s",
                "--renew-deadline",
                "10s",
            ],
            "--renew-deadline",
        ),
        (
            vec![
                "run",
                "--jobs",
                jobs,
                "--lease-file",
                lease,
                "--renew-deadline",
                "2s",
                "--retry-period",
                "2s",
            ],
            "--retry-period",
        ),
        (
            vec![
                "run",
                "--jobs",
                jobs,
                "--lease-file",
                corrupt.to_str().unwrap(),
            ],
            "corrupt.json",
        ),
        (vec!["run", "--jobs", jobs], "--lease-file"),
        (vec!["next", jobs, "--job", "nope"], "nope"),
    ];
    for (args, mention) in cases {
        // Without a kubeconfig on purpose: `run` without `--lease-file` must point at `--lease-file`.
        let out = output_without_kubeconfig(&args);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(
            err.contains(mention),
            "{args:?} should mention {mention}: {err}"
        );
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        if !args.contains(&"soon") {
            assert_eq!(
                err.trim_end().lines().count(),
                1,
                "{args:?}: one line: {err}"
            );
        }
    }
    assert!(!std::path::Path::new(lease).exists());
}

#[test]
fn grace_beyond_the_lease_bound_is_rejected_with_the_job_named() {
    let dir = tempfile::tempdir().unwrap();
    let jobs = write_file(&dir, "jobs.yaml", "jobs:\n  - name: patient\n    schedule: \"* * * * *\"\n    command: [\"/bin/true\"]\n    terminationGrace: 1s\n");
    let mut args = vec!["validate", jobs.to_str().unwrap()];
    args.extend(FAST_TIMINGS);
    let out = output(&args);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("patient"), "{}", stderr(&out));
}

#[test]
fn next_lists_fire_times_in_the_jobs_zone() {
    let dir = tempfile::tempdir().unwrap();
    let jobs = write_file(&dir, "jobs.yaml", "jobs:\n  - name: berlin\n    schedule: \"30 2 * * *\"\n    timeZone: Europe/Berlin\n    command: [\"/bin/true\"]\n  - name: other\n    schedule: \"@hourly\"\n    command: [\"/bin/true\"]\n");
    let out = output(&[
        "next",
        jobs.to_str().unwrap(),
        "--count",
        "3",
        "--job",
        "berlin",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let times: Vec<&str> = stdout.lines().filter(|l| l.starts_with("  ")).collect();
    assert_eq!(times.len(), 3, "{stdout}");
    for t in times {
        let t = chrono::DateTime::parse_from_rfc3339(t.trim()).expect("RFC 3339");
        assert_eq!(t.format("%H:%M").to_string(), "02:30", "{stdout}");
    }
    assert!(!stdout.contains("other"), "{stdout}");
}

#[test]
fn next_shows_each_jobs_last_slot_from_the_run_state() {
    let dir = tempfile::tempdir().unwrap();
    let jobs = write_file(&dir, "jobs.yaml", "jobs:\n  - name: tick\n    schedule: \"*/10 * * * *\"\n    shell: \"true\"\n  - name: other\n    schedule: \"@daily\"\n    shell: \"true\"\n");
    let lease = dir.path().join("lease");
    write_file(
        &dir,
        "lease.state",
        r#"{"generation": 3, "record": {"format": 1, "fencingToken": 4, "jobs": {"tick": {
            "lastStarted": {"slot": "2026-11-21T10:00:00Z", "fencingToken": 4, "identity": "r1", "startedAt": "2026-11-21T10:00:00.002Z"},
            "lastCompletion": {"slot": "2026-11-21T10:00:00Z", "outcome": "failed", "finishedAt": "2026-11-21T10:00:01Z"}}}}}"#,
    );
    let out = output(&[
        "next",
        jobs.to_str().unwrap(),
        "--count",
        "1",
        "--lease-file",
        lease.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("  last slot: 2026-11-21T10:00:00+00:00 (fencing token 4, r1, failed)"),
        "{stdout}"
    );
    assert!(stdout.contains("  last slot: none recorded"), "{stdout}");
    // A lease without a state file yet: every job has none.
    let empty = tempfile::tempdir().unwrap();
    let lease = write_file(&empty, "lease", "");
    let out = output(&[
        "next",
        jobs.to_str().unwrap(),
        "--lease-file",
        lease.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout)
            .matches("none recorded")
            .count(),
        2
    );
    // Neither a lease file nor a run state: a wrong path, said so.
    let typo = empty.path().join("typo");
    let out = output(&[
        "next",
        jobs.to_str().unwrap(),
        "--lease-file",
        typo.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert_eq!(
        stderr(&out),
        format!(
            "leasecron: --lease-file {0}: there is no run state at {0}.state (and no lease file at {0}): \
             check the path; the run state is written beside the lease file once a leader has run a job\n",
            typo.display()
        )
    );
}

// === validate: ConfigMap manifests ===

fn manifest_fixture(name: &str) -> String {
    format!(
        "{}/tests/fixtures/manifest/{name}",
        env!("CARGO_MANIFEST_DIR")
    )
}

/// 1-based line and column of `needle` on the first line of `text` that starts with `line_start` (after
/// its indentation).
fn position_in(text: &str, line_start: &str, needle: &str) -> (usize, usize) {
    let (index, line) = text
        .lines()
        .enumerate()
        .find(|(_, line)| line.trim_start().starts_with(line_start))
        .expect("the fixture has the line");
    let column = line.find(needle).expect("the line has the needle");
    (index + 1, line[..column].chars().count() + 1)
}

#[test]
fn validate_accepts_a_config_map_manifest_and_a_plain_file_side_by_side() {
    let dir = tempfile::tempdir().unwrap();
    let plain = write_file(&dir, "good.yaml", GOOD);
    let manifest = manifest_fixture("configmap.yaml");
    let out = output(&["validate", &manifest, plain.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        stdout,
        format!(
            "{manifest}: ok (ConfigMap leasecron-jobs, key jobs.yaml, 3 jobs)\n{}: ok (1 job)\n",
            plain.display()
        )
    );
}

#[test]
fn validate_places_errors_of_the_embedded_jobs_file_in_the_manifest() {
    let manifest = manifest_fixture("configmap-invalid.yaml");
    let text = fs::read_to_string(&manifest).unwrap();
    let out = output(&["validate", &manifest]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    let (line, column) = position_in(&text, "schedule: \"30 25", "\"30 25");
    assert!(
        err.contains(&format!(
            "{manifest}:{line}:{column}: job nightly-report: invalid schedule `30 25 * * *`"
        )),
        "{err}"
    );
    let (line, column) = position_in(&text, "colour", "colour");
    assert!(
        err.contains(&format!(
            "{manifest}:{line}:{column}: job nightly-report: unknown field `colour`"
        )),
        "{err}"
    );
    assert_eq!(err.lines().count(), 2, "{err}");
}

#[test]
fn validate_key_selects_the_data_key_and_a_missing_one_lists_the_keys() {
    let stream = manifest_fixture("stream.yaml");
    let out = output(&["validate", "--key", "crontab.yaml", &stream]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!(
            "{stream}: ok (ConfigMap leasecron-jobs-5f8h2k, key crontab.yaml, 2 jobs; \
             skipped ServiceAccount leasecron, Deployment leasecron)\n"
        )
    );

    let out = output(&["validate", &stream]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    let text = fs::read_to_string(&stream).unwrap();
    let (line, column) = position_in(&text, "data:", "data");
    assert!(
        err.starts_with(&format!(
            "{stream}:{line}:{column}: ConfigMap leasecron-jobs-5f8h2k has no data.jobs.yaml"
        )),
        "{err}"
    );
    assert!(
        err.contains("`notes.txt`, `crontab.yaml`") && err.contains("--key"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
}

#[test]
fn validate_rejects_a_manifest_of_another_kind_at_its_kind() {
    let dir = tempfile::tempdir().unwrap();
    let deployment = write_file(
        &dir,
        "deployment.yaml",
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: leasecron\n",
    );
    let out = output(&["validate", deployment.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        stderr(&out),
        format!(
            "{}:2:7: kind Deployment: expected a ConfigMap that embeds the jobs file\n",
            deployment.display()
        )
    );
}

// === the first hour: what a new user runs into ===

/// `leasecron ARGS` with `input` on its standard input.
fn output_with_stdin(args: &[&str], input: &[u8]) -> std::process::Output {
    let mut child = leasecron()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn leasecron");
    let mut stdin = child.stdin.take().expect("stdin");
    // The command may stop reading early (a file over the limit): a broken pipe is fine.
    let _ = stdin.write_all(input);
    drop(stdin);
    child.wait_with_output().expect("wait for leasecron")
}

#[test]
fn validate_says_ok_for_every_good_file_even_beside_a_bad_one() {
    let dir = tempfile::tempdir().unwrap();
    let good = write_file(&dir, "good.yaml", GOOD);
    let bad = write_file(&dir, "bad.yaml", "jobs:\n  - name: Bad\n");
    let out = output(&["validate", good.to_str().unwrap(), bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("{}: ok (1 job)\n", good.display())
    );
    assert!(
        stderr(&out).starts_with(&format!("{}:2:", bad.display())),
        "{}",
        stderr(&out)
    );
}

#[test]
fn validate_reads_standard_input_as_dash() {
    let out = output_with_stdin(&["validate", "-"], GOOD.as_bytes());
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "<stdin>: ok (1 job)\n"
    );
    let out = output_with_stdin(
        &["validate", "-"],
        b"jobs:\n  - name: a\n    schedule: \"61 * * * *\"\n    shell: x\n",
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).starts_with("<stdin>:3:15: job a: invalid schedule"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn validate_reads_no_more_than_the_size_limit() {
    let out = output(&["validate", "/dev/zero"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        stderr(&out),
        "/dev/zero: the file is larger than 1 MiB, the most leasecron reads as a jobs file: check the \
         path, or raise the limit with --max-file-size\n"
    );
    let dir = tempfile::tempdir().unwrap();
    let padded = format!("{GOOD}#{}\n", "x".repeat(2000));
    let file = write_file(&dir, "padded.yaml", &padded);
    let out = output(&[
        "validate",
        "--max-file-size",
        "1KiB",
        file.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("larger than 1 KiB"),
        "{}",
        stderr(&out)
    );
    let out = output(&[
        "validate",
        "--max-file-size",
        "4KiB",
        file.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let out = output(&[
        "validate",
        "--max-file-size",
        "lots",
        file.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("invalid size `lots`"),
        "{}",
        stderr(&out)
    );
    // `run` takes the same bound, before anything else.
    let lease = dir.path().join("lease");
    let out = output(&[
        "run",
        "--jobs",
        file.to_str().unwrap(),
        "--lease-file",
        lease.to_str().unwrap(),
        "--max-file-size",
        "1KiB",
        "--http-addr",
        "127.0.0.1:0",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("larger than 1 KiB"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn validate_warns_about_what_this_machine_lacks_and_still_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing");
    let jobs = write_file(
        &dir,
        "jobs.yaml",
        &format!("{GOOD}    workingDir: {}\n", missing.display()),
    );
    let out = output(&["validate", jobs.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("{}: ok (1 job)\n", jobs.display())
    );
    assert!(
        stderr(&out).starts_with(&format!(
            "{}:5:17: warning: job hello: workingDir {} does not exist here",
            jobs.display(),
            missing.display()
        )),
        "{}",
        stderr(&out)
    );
}

#[test]
fn one_grace_that_does_not_fit_is_one_error_and_run_names_what_would_fit() {
    let dir = tempfile::tempdir().unwrap();
    let jobs = write_file(
        &dir,
        "jobs.yaml",
        &format!("{GOOD}    terminationGrace: 3s\n"),
    );
    let out = output(&[
        "validate",
        jobs.to_str().unwrap(),
        "--lease-duration",
        "12s",
        "--renew-deadline",
        "9s",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with(&format!(
            "{}:5:23: job hello: terminationGrace 3s is more than the 1s 800ms",
            jobs.display()
        )),
        "{err}"
    );
    let lease = dir.path().join("lease");
    let out = output(&[
        "run",
        "--jobs",
        jobs.to_str().unwrap(),
        "--lease-file",
        lease.to_str().unwrap(),
        "--lease-duration",
        "10s",
        "--renew-deadline",
        "9500ms",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("leaves no time for the jobs' terminationGrace") && !err.contains("(0s)"),
        "{err}"
    );
}

#[test]
fn next_takes_a_config_map_manifest_as_validate_does() {
    let manifest = manifest_fixture("configmap.yaml");
    let out = output(&["next", &manifest, "--count", "1"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let jobs: Vec<&str> = stdout.lines().filter(|l| !l.starts_with(' ')).collect();
    assert_eq!(jobs.len(), 3, "{stdout}");
    let stream = manifest_fixture("stream.yaml");
    let out = output(&["next", "--key", "crontab.yaml", &stream, "--count", "1"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

#[test]
fn an_empty_identity_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let jobs = write_file(&dir, "jobs.yaml", GOOD);
    let lease = dir.path().join("lease");
    let out = output(&[
        "run",
        "--jobs",
        jobs.to_str().unwrap(),
        "--lease-file",
        lease.to_str().unwrap(),
        "--identity",
        "",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).starts_with("leasecron: --identity is empty"),
        "{}",
        stderr(&out)
    );
    assert!(!lease.exists());
}

#[test]
fn help_answers_help_too() {
    for args in [
        &["help", "--help"][..],
        &["help"],
        &["help", "validate"],
        &["validate", "--help"],
    ] {
        let out = output(args);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", stderr(&out));
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("Usage: leasecron"),
            "{args:?}"
        );
    }
    let out = output(&["help", "validate"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("--max-file-size"));
    let out = output(&["help", "nope"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("help nope: no such command"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn http_addr_takes_a_host_name_and_a_bare_port() {
    let dir = tempfile::tempdir().unwrap();
    let jobs = write_file(&dir, "jobs.yaml", GOOD);
    let lease = dir.path().join("lease");
    let run = |addr: &str| {
        output(&[
            "run",
            "--jobs",
            jobs.to_str().unwrap(),
            "--lease-file",
            lease.to_str().unwrap(),
            "--http-addr",
            addr,
        ])
    };
    // Hold the port where `localhost` resolves: `run` gets as far as binding it, and says why it cannot.
    use std::net::ToSocketAddrs as _;
    let local = ("localhost", 0).to_socket_addrs().unwrap().next().unwrap();
    let taken = std::net::TcpListener::bind(local).unwrap();
    let port = taken.local_addr().unwrap().port();
    let out = run(&format!("localhost:{port}"));
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.starts_with(&format!(
            "leasecron: --http-addr {}: cannot listen: ",
            taken.local_addr().unwrap()
        )),
        "{err}"
    );
    assert!(
        err.contains("another process holds this address (another leasecron on this machine?)")
            && err.contains("--http-addr 127.0.0.1:0"),
        "{err}"
    );
    // `:PORT` is every interface.
    let any = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let port = any.local_addr().unwrap().port();
    let err = stderr(&run(&format!(":{port}")));
    assert!(
        err.starts_with(&format!(
            "leasecron: --http-addr 0.0.0.0:{port}: cannot listen"
        )),
        "{err}"
    );
    // Neither: a usage error that shows the forms.
    let out = run("9090");
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("localhost:9090 or :9090"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_broken_file_is_reported_where_to_fix_it() {
    let dir = tempfile::tempdir().unwrap();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "quote.yaml",
            b"jobs:\n  - name: \"a\n    schedule: \"* * * * *\"\n    shell: \"true\"\n".to_vec(),
            ":2:11: unclosed quote: ",
        ),
        (
            "latin1.yaml",
            b"jobs:\n  - name: a\n    shell: \"caf\xe9\"\n".to_vec(),
            ":3:16: the file is not valid UTF-8",
        ),
        (
            "crontz.yaml",
            b"jobs:\n  - name: a\n    schedule: \"CRON_TZ=Asia/Tokyo 0 9 * * *\"\n    shell: x\n"
                .to_vec(),
            ":3:15: job a: a time zone cannot be set in `schedule`",
        ),
        (
            "negative.yaml",
            format!("{GOOD}    timeout: -5s\n").into_bytes(),
            ":5:14: job hello: timeout: invalid duration `-5s`: a duration cannot be negative",
        ),
        (
            "rerun.yaml",
            format!("{GOOD}    rerunInterrupted: true\n").into_bytes(),
            ":5:23: job hello: rerunInterrupted needs startingDeadline",
        ),
    ];
    for (name, text, expected) in cases {
        let path = dir.path().join(name);
        fs::write(&path, text).unwrap();
        let out = output(&["validate", path.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(2), "{name}");
        let err = stderr(&out);
        assert_eq!(err.lines().count(), 1, "{name}: {err}");
        assert!(
            err.starts_with(&format!("{}{expected}", path.display())),
            "{name}: {err}"
        );
    }
}
