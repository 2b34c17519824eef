//! Machine-readable results of a benchmark, for `scripts/bench-report`, besides the human output.
//!
//! With `LEASECRON_BENCH_OUT=DIR` in the environment, [`Report::write`] writes `DIR/<bench>.json`:
//!
//! ```json
//! {"bench": "start_lag", "written_at": "…", "params": {"samples": 60, …},
//!  "figures": {"lag.leasecron": {"unit": "ms", "n": 61, "min": …, "median": …, "p90": …, "p99": …,
//!                                "max": …, "mean": …, "samples": [ … ]}, …}}
//! ```
//!
//! A figure is a set of samples (summarized here, so that every reader uses the same quantiles as the
//! human output: the nearest rank, `sorted[round((n − 1)·q)]`), a single value with its unit, or any JSON
//! the bench needs. Without the variable nothing is written.

#![allow(dead_code)] // each benchmark uses a different subset

use serde_json::{json, Map, Value};

/// The environment variable naming the directory the results go to.
pub const OUT_ENV: &str = "LEASECRON_BENCH_OUT";

/// Up to this many samples are kept in the file besides their summary (a burst's 1 000 lags are not).
const MAX_KEPT_SAMPLES: usize = 500;

/// One benchmark's results.
#[derive(Debug)]
pub struct Report {
    bench: String,
    params: Map<String, Value>,
    figures: Map<String, Value>,
}

impl Report {
    /// An empty report of the benchmark `bench` (the name of its file, e.g. `start_lag`).
    pub fn new(bench: &str) -> Report {
        Report {
            bench: bench.to_owned(),
            params: Map::new(),
            figures: Map::new(),
        }
    }

    /// A parameter the run used (a timing, a job count, a sample count).
    pub fn param(&mut self, name: &str, value: impl Into<Value>) -> &mut Report {
        self.params.insert(name.to_owned(), value.into());
        self
    }

    /// One value with its unit.
    pub fn value(&mut self, name: &str, value: f64, unit: &str) -> &mut Report {
        self.figures
            .insert(name.to_owned(), json!({"unit": unit, "value": value}));
        self
    }

    /// Samples with their unit, summarized; no samples gives `{"unit": …, "n": 0}`.
    pub fn samples(&mut self, name: &str, unit: &str, values: &[f64]) -> &mut Report {
        self.figures
            .insert(name.to_owned(), summarize(unit, values));
        self
    }

    /// Any other figure, as JSON.
    pub fn raw(&mut self, name: &str, value: Value) -> &mut Report {
        self.figures.insert(name.to_owned(), value);
        self
    }

    /// Writes `DIR/<bench>.json` if `LEASECRON_BENCH_OUT=DIR` is set. A bench whose results cannot be
    /// written fails, so that the report script does not render stale figures.
    pub fn write(&self) {
        let Some(dir) = std::env::var_os(OUT_ENV) else {
            return;
        };
        let dir = std::path::PathBuf::from(dir);
        let path = dir.join(format!("{}.json", self.bench));
        let document = json!({
            "bench": self.bench,
            "written_at": chrono::Utc::now().to_rfc3339(),
            "params": self.params,
            "figures": self.figures,
        });
        let text = serde_json::to_string_pretty(&document).expect("a report encodes");
        std::fs::create_dir_all(&dir)
            .and_then(|()| std::fs::write(&path, text))
            .unwrap_or_else(|e| panic!("{OUT_ENV}: cannot write {}: {e}", path.display()));
        eprintln!("results written to {}", path.display());
    }
}

/// The summary of `values` in `unit`: n, min, median, p90, p99, max, mean, and the samples themselves
/// if there are not too many.
pub fn summarize(unit: &str, values: &[f64]) -> Value {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    if n == 0 {
        return json!({"unit": unit, "n": 0});
    }
    let at = |q: f64| sorted[((n as f64 - 1.0) * q).round() as usize];
    let mut summary = json!({
        "unit": unit,
        "n": n,
        "min": sorted[0],
        "median": at(0.5),
        "p90": at(0.9),
        "p99": at(0.99),
        "max": sorted[n - 1],
        "mean": sorted.iter().sum::<f64>() / n as f64,
    });
    if n <= MAX_KEPT_SAMPLES {
        summary["samples"] = json!(values);
    }
    summary
}
