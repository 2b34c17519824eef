//! The cost of claiming one slot in the file run state as the record grows: every claim rewrites the whole
//! record (`<lease>.state`, pretty JSON, written to a temporary file, fsynced, renamed, directory fsynced),
//! so with the run state on, the cost of a fire grows with the number of jobs that have run.
//!
//! For records of 10, 1 000 and `SCALE_JOBS` (default 10 000) jobs (each with a start, a completion and a
//! success), `SCALE_CLAIMS` (default 30) claims one after the other, and the parts of one write. Then the
//! record's size per job, as stored (pretty JSON) and compact, against the 1 MiB a ConfigMap can hold (the
//! run state of a Kubernetes Lease is the ConfigMap `<lease>-state`).
//!
//! ```text
//! cargo bench --bench claim_scale             # ~10 s
//! ```

#[path = "support/report.rs"]
mod report;
#[path = "support/scale.rs"]
mod scale;

use std::time::Instant;

use chrono::Utc;
use leasecron::local::run_state::StateFile;
use leasecron::run_state::{
    Completion, JobRecord, Ledger, Origin, SlotStart, StateRecord, TermStart,
};
use leasecron::term::FencingToken;
use scale::Summary;

const WIDTH: usize = 34;

fn main() {
    let jobs: usize = scale::env_or("SCALE_JOBS", 10_000);
    let claims: i64 = scale::env_or("SCALE_CLAIMS", 30);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut report = report::Report::new("claim_scale");
    report.param("jobs", jobs).param("claims", claims);
    println!("file run state: one claim (a slot recorded as started) as the record grows; {claims} claims each");
    Summary::header(WIDTH);
    for n in [10, 1_000, jobs] {
        let dir = tempfile::tempdir().expect("tempdir");
        let now = Utc::now();
        let record = record_of(n, now);
        let store = StateFile::beside(&dir.path().join("lease"));
        runtime
            .block_on(store.save(&record, None))
            .expect("writable");
        let size = std::fs::metadata(store.path()).map_or(0, |m| m.len());
        let timed = |f: &dyn Fn()| {
            let started = Instant::now();
            f();
            started.elapsed().as_secs_f64() * 1e3
        };
        let encode = timed(&|| {
            serde_json::to_vec_pretty(&record).expect("encodes");
        });
        let text = std::fs::read(store.path()).expect("readable");
        let decode = timed(&|| {
            serde_json::from_slice::<serde_json::Value>(&text).expect("decodes");
        });
        let clone = timed(&|| {
            std::hint::black_box(record.clone());
        });
        let ledger = Ledger::new(store, "bench".to_owned());
        let begun = runtime.block_on(ledger.begin_term(FencingToken(1)));
        assert!(
            matches!(begun.expect("writable"), TermStart::Begun(_)),
            "no newer term"
        );
        let latencies: Vec<f64> = (1..=claims)
            .map(|k| {
                let slot = now + chrono::Duration::seconds(k);
                let started = Instant::now();
                let claim =
                    ledger.claim("job-00000", slot, FencingToken(1), slot, &Origin::SCHEDULE);
                runtime.block_on(claim).expect("writable");
                started.elapsed().as_secs_f64() * 1e3
            })
            .collect();
        report
            .samples(&format!("claim.{n}"), "ms", &latencies)
            .value(&format!("record_bytes.{n}"), size as f64, "B")
            .value(&format!("encode.{n}"), encode, "ms")
            .value(&format!("decode.{n}"), decode, "ms")
            .value(&format!("clone.{n}"), clone, "ms");
        Summary::print(
            Summary::of(latencies),
            &format!("{n} jobs ({:.2} MiB)", size as f64 / (1024.0 * 1024.0)),
            WIDTH,
        );
        println!(
            "{:<WIDTH$} encode {encode:.1} ms, decode {decode:.1} ms, clone {clone:.1} ms",
            "  of one write"
        );
    }
    // Names and an identity as a cluster has them: `team-task-NNNNN`, a Deployment's pod name.
    let mut record = record_of(jobs, Utc::now());
    record.jobs = record
        .jobs
        .into_iter()
        .enumerate()
        .map(|(i, (_, mut entry))| {
            if let Some(started) = &mut entry.last_started {
                started.identity = "leasecron-7d9f8b6c5d-x2k9p".to_owned();
            }
            (format!("billing-export-{i:05}"), entry)
        })
        .collect();
    let pretty = serde_json::to_vec_pretty(&record).expect("encodes").len();
    let compact = serde_json::to_vec(&record).expect("encodes").len();
    let per_job = |bytes: usize| bytes as f64 / jobs as f64;
    const CONFIG_MAP_LIMIT: f64 = 1024.0 * 1024.0;
    println!(
        "record per job: {:.0} bytes as stored (pretty), {:.0} compact; a ConfigMap's 1 MiB holds the run state of about {:.0} jobs ({:.0} compact)",
        per_job(pretty),
        per_job(compact),
        CONFIG_MAP_LIMIT / per_job(pretty),
        CONFIG_MAP_LIMIT / per_job(compact)
    );
    report
        .param("sizes", serde_json::json!([10, 1_000, jobs]))
        .value("per_job_bytes.pretty", per_job(pretty), "B")
        .value("per_job_bytes.compact", per_job(compact), "B")
        .value(
            "config_map_capacity_jobs.pretty",
            CONFIG_MAP_LIMIT / per_job(pretty),
            "jobs",
        )
        .value(
            "config_map_capacity_jobs.compact",
            CONFIG_MAP_LIMIT / per_job(compact),
            "jobs",
        )
        .write();
}

/// A record where each of `n` jobs started, completed and succeeded at `now`.
fn record_of(n: usize, now: chrono::DateTime<Utc>) -> StateRecord {
    let mut record = StateRecord {
        format: leasecron::run_state::FORMAT,
        fencing_token: 1,
        ..StateRecord::default()
    };
    for i in 0..n {
        let completion = Completion {
            slot: now,
            outcome: "succeeded".to_owned(),
            finished_at: now,
        };
        record.jobs.insert(
            format!("job-{i:05}"),
            JobRecord {
                last_started: Some(SlotStart {
                    slot: now,
                    fencing_token: 1,
                    identity: "bench".to_owned(),
                    started_at: now,
                }),
                last_completion: Some(completion.clone()),
                last_success: Some(completion),
                history: Vec::new(),
            },
        );
    }
    record
}
