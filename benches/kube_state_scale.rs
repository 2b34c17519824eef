//! The scale of the Kubernetes run state (the ConfigMap `<lease>-state`, `StateConfigMap`) on the real
//! API server (tools/kube-testenv: kube-apiserver on an embedded etcd that fsyncs its WAL, the default):
//!
//! 1. throughput: how many claims per second one leader sustains. With `J` jobs in the record (each has
//!    run once), every job's next slot falls due in the same second: `J` claims at once through one
//!    `Ledger` (its group commit writes the changes that arrive while a write is in flight together, in
//!    the next `PUT`), timed from the first to the last answer; the `PUT`s counted from the audit log.
//!    Then `KSS_SEQUENTIAL` claims one after the other on the same record (one `PUT` each): the per-claim
//!    cost as the record grows. `J` in `KSS_JOBS` (default `1,10,100,1000,10000`);
//! 2. capacity: the largest job set the ConfigMap holds. For each count `N` in `KSS_CAPACITY` (default
//!    `10000,15000,20000,21000,22000,25000,30000,40000`), names `job-00001`…: whether leasecron accepts
//!    such a job set at all (`capacity_error`, which refuses a set whose run state *might* outgrow 1 MiB),
//!    then `KSS_ROUNDS` (default 3) rounds in which every job claims its next slot (all at once), each
//!    round's outcome (claimed, or the error), the ConfigMap's size and its encoding (format 1 with full
//!    history, format 2 with the history that fits, or the essentials only), as the record's history
//!    grows.
//!
//! ```text
//! cargo bench --bench kube_state_scale      # ~3 min
//! ```

#[path = "support/audit.rs"]
mod audit;
#[path = "../tests/support/fake_apiserver/mod.rs"]
pub mod fake_apiserver;
#[path = "support/report.rs"]
mod report;
#[path = "support/scale.rs"]
mod scale;

use std::time::{Duration, Instant};

use audit::AuditTail;
use chrono::{DateTime, Utc};
use fake_apiserver::real::{self, RealApiServer};
use futures_util::future::join_all;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use leasecron::kubernetes::run_state::{capacity_error, encoding, StateConfigMap};
use leasecron::run_state::{Claim, Ledger, Origin, TermStart};
use leasecron::term::FencingToken;
use serde_json::{json, Value};

const LEASE: &str = "leasecron";
const STATE_CONFIG_MAP: &str = "leasecron-state";
/// Each request's bound, as `--retry-period`'s default is for leasecron's own: a 1 MiB `PUT` on a busy
/// machine takes a while, so more here.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

fn list(name: &str, default: &str) -> Vec<usize> {
    std::env::var(name)
        .unwrap_or_else(|_| default.to_owned())
        .split(',')
        .filter_map(|v| v.trim().parse().ok())
        .collect()
}

fn main() {
    let started = Instant::now();
    let jobs = list("KSS_JOBS", "1,10,100,1000,10000");
    let capacity = list(
        "KSS_CAPACITY",
        "10000,15000,20000,21000,22000,25000,30000,40000",
    );
    let sequential: usize = scale::env_or("KSS_SEQUENTIAL", 20);
    let rounds: usize = scale::env_or("KSS_ROUNDS", 3);
    let mut report = report::Report::new("kube_state_scale");
    report
        .param("jobs", jobs.iter().map(|j| json!(j)).collect::<Vec<_>>())
        .param(
            "capacity_counts",
            capacity.iter().map(|j| json!(j)).collect::<Vec<_>>(),
        )
        .param("sequential", sequential)
        .param("rounds", rounds)
        .param("name_len", name(1).len());
    let load_before = loadavg();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let server =
        RealApiServer::start(&[]).expect("the real API server (tools/kube-testenv) is needed");
    let ready = server.ready().clone();
    println!(
        "real API server: Kubernetes {} (etcd fsync {}), ready in {} ms; load average {:.2}",
        ready.release, ready.etcd_fsync, ready.startup_ms, load_before[0]
    );
    report.raw(
        "server",
        json!({"release": ready.release, "etcd_fsync": ready.etcd_fsync}),
    );
    runtime.block_on(async {
        let mut throughput = Vec::new();
        for &j in &jobs {
            throughput.push(throughput_at(&server, j, sequential).await);
        }
        report.raw("throughput", Value::Array(throughput));
        let mut held = Vec::new();
        for &n in &capacity {
            held.push(capacity_at(&server, n, rounds).await);
        }
        report.raw("capacity", Value::Array(held));
    });
    drop(server);
    let load_after = loadavg();
    report
        .raw("load", json!({"before": load_before, "after": load_after}))
        .raw(
            "limits",
            json!({
                "max_bytes": encoding::MAX_BYTES,
                "essential_job_bound": encoding::ESSENTIAL_JOB_BOUND,
                "requests_reserve": encoding::REQUESTS_RESERVE,
            }),
        )
        .value("bench_seconds", started.elapsed().as_secs_f64(), "s")
        .write();
}

fn name(i: usize) -> String {
    format!("job-{i:05}")
}

fn loadavg() -> [f64; 3] {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let mut values = [0.0; 3];
    for (slot, v) in values.iter_mut().zip(text.split_whitespace()) {
        *slot = v.parse().unwrap_or(0.0);
    }
    values
}

/// A ledger on a fresh namespace's run state, its term begun; the namespace.
async fn ledger(server: &RealApiServer, prefix: &str) -> (Ledger, String) {
    let namespace = server.create_namespace(prefix).await;
    let config = real::config_from(server.admin_kubeconfig(), Some(&namespace)).await;
    let state =
        StateConfigMap::new(config, &namespace, LEASE, REQUEST_TIMEOUT).expect("a run state store");
    let ledger = Ledger::new(state, "bench".to_owned());
    assert!(
        matches!(
            ledger
                .begin_term(FencingToken(1))
                .await
                .expect("the run state is writable"),
            TermStart::Begun(_)
        ),
        "no newer term"
    );
    (ledger, namespace)
}

/// Every one of `n` jobs claims `slot` at once; (how many claimed, the first error, seconds taken).
async fn claim_all(ledger: &Ledger, n: usize, slot: DateTime<Utc>) -> (usize, Option<String>, f64) {
    let names: Vec<String> = (1..=n).map(name).collect();
    let started = Instant::now();
    let results = join_all(
        names
            .iter()
            .map(|job| ledger.claim(job, slot, FencingToken(1), Utc::now(), &Origin::SCHEDULE)),
    )
    .await;
    let seconds = started.elapsed().as_secs_f64();
    let claimed = results
        .iter()
        .filter(|r| matches!(r, Ok(Claim::Claimed)))
        .count();
    let error = results
        .iter()
        .find_map(|r| r.as_ref().err())
        .map(|e| e.to_string())
        .or_else(|| {
            results
                .iter()
                .find(|r| !matches!(r, Ok(Claim::Claimed)))
                .map(|r| format!("{r:?}"))
        });
    (claimed, error, seconds)
}

/// The run state's `PUT`s (and `POST`s) in `namespace` since `from`, from the audit log.
fn writes(server: &RealApiServer, namespace: &str, from: DateTime<Utc>) -> usize {
    let mut audit = AuditTail::new(&server.ready().audit_log);
    audit.poll();
    audit
        .events
        .iter()
        .filter(|e| {
            e.namespace.as_deref() == Some(namespace)
                && e.name.as_deref() == Some(STATE_CONFIG_MAP)
                && matches!(e.verb.as_str(), "update" | "create")
                && e.stage == "ResponseComplete"
                && e.received >= from
        })
        .count()
}

/// The state ConfigMap's size (bytes of `state.json`) and the record's `format`.
async fn stored(server: &RealApiServer, namespace: &str) -> (usize, Option<u64>) {
    let admin = server.admin_client(namespace).await;
    let config_map = Api::<ConfigMap>::namespaced(admin, namespace)
        .get_opt(STATE_CONFIG_MAP)
        .await
        .ok()
        .flatten();
    let text = config_map
        .and_then(|c| c.data)
        .and_then(|d| d.into_values().next())
        .unwrap_or_default();
    let format = serde_json::from_str::<Value>(&text)
        .ok()
        .and_then(|v| v.get("format").and_then(Value::as_u64));
    (text.len(), format)
}

async fn throughput_at(server: &RealApiServer, jobs: usize, sequential: usize) -> Value {
    let (ledger, namespace) = ledger(server, &format!("kss-claims-{jobs}")).await;
    let base = Utc::now() - chrono::Duration::hours(1);
    // Every job has run once: the record holds `jobs` entries.
    let (claimed, error, _) = claim_all(&ledger, jobs, base).await;
    assert_eq!(claimed, jobs, "the first round claims every job: {error:?}");
    // Then all of them fall due in the same second.
    let from = Utc::now();
    let (claimed, error, seconds) =
        claim_all(&ledger, jobs, base + chrono::Duration::seconds(60)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let puts = writes(server, &namespace, from);
    let (bytes, format) = stored(server, &namespace).await;
    // One after the other, on the same record: one job's later slots.
    let mut latencies = Vec::with_capacity(sequential);
    for k in 0..sequential {
        let slot = base + chrono::Duration::seconds(120 + k as i64);
        let started = Instant::now();
        let claim = ledger
            .claim(
                &name(1),
                slot,
                FencingToken(1),
                Utc::now(),
                &Origin::SCHEDULE,
            )
            .await;
        assert!(matches!(claim, Ok(Claim::Claimed)), "a claim: {claim:?}");
        latencies.push(started.elapsed().as_secs_f64() * 1e3);
    }
    let per_second = claimed as f64 / seconds;
    let summary = scale::Summary::of(latencies.clone());
    println!(
        "{jobs:>6} jobs due at once: {claimed} claimed in {:.1} ms ({per_second:.0} claims/s, {puts} PUTs, \
         record {:.1} KiB, format {}); one claim alone: median {:.1} ms",
        seconds * 1e3,
        bytes as f64 / 1024.0,
        format.map_or("?".to_owned(), |f| f.to_string()),
        summary.map_or(f64::NAN, |s| s.median),
    );
    json!({
        "jobs": jobs,
        "claimed": claimed,
        "error": error,
        "seconds": seconds,
        "claims_per_second": per_second,
        "puts": puts,
        "bytes": bytes,
        "format": format,
        "sequential_ms": report::summarize("ms", &latencies),
    })
}

async fn capacity_at(server: &RealApiServer, n: usize, rounds: usize) -> Value {
    let names: Vec<String> = (1..=n).map(name).collect();
    let refused = capacity_error(names.iter().map(String::as_str));
    let (ledger, namespace) = ledger(server, &format!("kss-capacity-{n}")).await;
    let base = Utc::now() - chrono::Duration::hours(1);
    let mut out = Vec::new();
    for round in 0..rounds {
        let slot = base + chrono::Duration::seconds(60 * round as i64);
        let from = Utc::now();
        let (claimed, error, seconds) = claim_all(&ledger, n, slot).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let puts = writes(server, &namespace, from);
        let (bytes, format) = stored(server, &namespace).await;
        println!(
            "{n:>6} jobs (accepted by leasecron: {}), round {}: {claimed} claimed in {:.2} s, {puts} PUTs, \
             record {:.1} KiB, format {}{}",
            refused.is_none(),
            round + 1,
            seconds,
            bytes as f64 / 1024.0,
            format.map_or("?".to_owned(), |f| f.to_string()),
            error
                .as_ref()
                .map_or(String::new(), |e| format!("; first error: {e}")),
        );
        out.push(json!({
            "round": round + 1,
            "claimed": claimed,
            "error": error,
            "seconds": seconds,
            "puts": puts,
            "bytes": bytes,
            "format": format,
        }));
    }
    json!({
        "jobs": n,
        "accepted": refused.is_none(),
        "needed_bytes": encoding::capacity_needed(names.iter().map(String::as_str)),
        "rounds": out,
    })
}
