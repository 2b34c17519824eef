//! The start-lag probe (`benches/support/lag_probe.c`): a static C program whose first act is to read
//! `CLOCK_REALTIME`, which it appends, in ns since the epoch, to the file named by its argument. Shared by
//! the benches that time a run's start (start_lag, real_apiserver), so that every start-lag figure of the
//! report is leasecron's and not its child's start-up.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The probe's source.
pub const PROBE_SOURCE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/support/lag_probe.c");

/// Builds the probe into `dir` (fresh for every run: nothing stale is measured), with `$CC` or gcc.
pub fn build_probe(dir: &Path) -> PathBuf {
    let probe = dir.join("lag-probe");
    let cc = std::env::var("CC").unwrap_or_else(|_| "gcc".to_owned());
    let output = Command::new(&cc)
        .args(["-static", "-O2", "-o"])
        .arg(&probe)
        .arg(PROBE_SOURCE)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cc} to build the probe {PROBE_SOURCE}: {e}"));
    assert!(
        output.status.success(),
        "{cc} -static -O2 {PROBE_SOURCE} failed (a static libc is needed: Debian's libc6-dev has \
         libc.a):\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    probe
}

/// The probes' clock reads, in ns since the epoch, in the order they were written.
pub fn probe_records(out: &Path) -> Vec<u128> {
    fs::read_to_string(out)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.parse::<u128>().ok())
        .collect()
}

/// Lags in milliseconds of the runs of a job due every `every_seconds` whole seconds (of the epoch), from
/// the probe's records: each clock read minus the slot before it.
pub fn lags_every(out: &Path, every_seconds: u64) -> Vec<f64> {
    let period = u128::from(every_seconds) * 1_000_000_000;
    probe_records(out)
        .into_iter()
        .map(|ns| (ns % period) as f64 / 1e6)
        .collect()
}
