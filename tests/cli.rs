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
    assert!(stdout.contains("good.yaml: ok (1 jobs)"), "{stdout}");
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
