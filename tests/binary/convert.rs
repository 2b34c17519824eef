//! `leasecron convert`: golden tests on the CronJob manifests in `tests/fixtures/cronjobs/`.
//!
//! Each `NAME.yaml` is converted by the binary; its stdout must equal `NAME.out`, its stderr `NAME.err`
//! (paths as the test passes them), and its exit status the one listed here. `LEASECRON_BLESS=1` rewrites
//! the expected files from the binary's output: review the diff before committing it.

use std::path::Path;

use crate::support::replica::leasecron;

const DIR: &str = "tests/fixtures/cronjobs";

/// Every fixture, with the exit status expected.
const FIXTURES: &[(&str, i32)] = &[
    ("full", 0),
    ("stream", 0),
    ("list", 0),
    ("v1beta1", 0),
    ("bad-schedule", 2),
    ("long-name", 2),
];

fn check(name: &str, code: i32) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let input = format!("{DIR}/{name}.yaml");
    let output = leasecron()
        .current_dir(root)
        .args(["convert", &input])
        .output()
        .expect("leasecron runs");
    let stdout = String::from_utf8(output.stdout).expect("UTF-8 stdout");
    let stderr = String::from_utf8(output.stderr).expect("UTF-8 stderr");
    let out_path = root.join(format!("{DIR}/{name}.out"));
    let err_path = root.join(format!("{DIR}/{name}.err"));
    if std::env::var_os("LEASECRON_BLESS").is_some() {
        std::fs::write(&out_path, &stdout).expect("write .out");
        std::fs::write(&err_path, &stderr).expect("write .err");
    }
    let want_out = std::fs::read_to_string(&out_path).expect("read .out");
    let want_err = std::fs::read_to_string(&err_path).expect("read .err");
    assert_eq!(stdout, want_out, "{name}: stdout");
    assert_eq!(stderr, want_err, "{name}: stderr");
    assert_eq!(output.status.code(), Some(code), "{name}: exit status");
}

#[test]
fn every_fixture_converts_as_expected() {
    for &(name, code) in FIXTURES {
        check(name, code);
    }
}

#[test]
fn every_fixture_is_listed() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join(DIR);
    for entry in std::fs::read_dir(root).expect("fixtures dir") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "yaml") {
            let stem = path.file_stem().and_then(|s| s.to_str()).expect("name");
            assert!(
                FIXTURES.iter().any(|(name, _)| *name == stem),
                "{stem}.yaml is not in FIXTURES"
            );
        }
    }
}

/// Several files and standard input in one run: one header, the jobs of all, in order.
#[test]
fn files_and_stdin_together() {
    use std::io::Write as _;
    use std::process::Stdio;
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut child = leasecron()
        .current_dir(root)
        .args(["convert", &format!("{DIR}/v1beta1.yaml"), "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("leasecron runs");
    let stdin_text =
        std::fs::read_to_string(root.join(format!("{DIR}/stream.yaml"))).expect("read");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin_text.as_bytes())
        .expect("write stdin");
    let output = child.wait_with_output().expect("wait");
    let stdout = String::from_utf8(output.stdout).expect("UTF-8");
    assert_eq!(output.status.code(), Some(0));
    assert_eq!(stdout.matches("\njobs:\n").count(), 1, "{stdout}");
    let order: Vec<usize> = [
        "name: legacy-sync",
        "name: weekday-report",
        "name: cache-warm",
    ]
    .iter()
    .map(|name| stdout.find(name).expect(name))
    .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{stdout}");
    assert!(String::from_utf8_lossy(&output.stderr).contains("<stdin>: CronJob weekday-report"));
}

#[test]
fn unreadable_file_exits_1() {
    let output = leasecron()
        .args(["convert", "/nonexistent/cronjobs.yaml"])
        .output()
        .expect("leasecron runs");
    assert_eq!(output.status.code(), Some(1));
}
