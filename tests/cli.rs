//! The CLI's contract: exit codes and messages for good and bad input.

#[path = "support/replica.rs"]
mod replica;

use std::fs;

use replica::{output, output_without_kubeconfig, FAST_TIMINGS};

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
        stdout.contains("jobs.example.yaml: ok (4 jobs)"),
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

#[test]
fn run_with_an_invalid_jobs_file_exits_2_before_touching_the_lease() {
    let dir = tempfile::tempdir().unwrap();
    let jobs = write_file(
        &dir,
        "jobs.yaml",
        "jobs:\n  - name: Bad_Name\n    schedule: \"* * * * *\"\n    command: [\"/bin/true\"]\n",
    );
    let lease = dir.path().join("lease.json");
    let out = output(&[
        "run",
        "--jobs",
        jobs.to_str().unwrap(),
        "--lease-file",
        lease.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!("{}:2:", jobs.display())),
        "{}",
        stderr(&out)
    );
    assert!(!lease.exists(), "the lease file was not created");
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
    // Without a state file yet, every job has none.
    let empty = tempfile::tempdir().unwrap();
    let out = output(&[
        "next",
        jobs.to_str().unwrap(),
        "--lease-file",
        empty.path().join("lease").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout)
            .matches("none recorded")
            .count(),
        2
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
