//! Failover and steady-state cost of the Kubernetes Lease store: three real `leasecron run` processes
//! against the fake API server (tests/support/fake_apiserver/), with the default timings (LD 15 s,
//! RD 10 s, RP 2 s) unless `FAILOVER_LD`, `FAILOVER_RD`, `FAILOVER_RP` say otherwise.
//!
//! - graceful failover: SIGTERM to the leader → the first successful Lease write of another replica, as the
//!   API server received it;
//! - crash failover: SIGKILL to the leader → the same;
//! - steady state: API requests per minute by the leader and by each follower, by resource (the Lease,
//!   the run state's ConfigMap `<lease>-state`, the jobs' ConfigMap, Events) and verb, over
//!   `FAILOVER_STEADY_SECONDS` (default 60);
//! - RSS (`VmRSS`) and CPU time per second of each replica in that window;
//! - graceful failover on a lease file (`--lease-file`, three replicas with the same timings): SIGTERM to
//!   the holder → the lease file naming another replica, as this process reads it (every 200 µs).
//!
//! The jobs come from the ConfigMap `leasecron-jobs` (`--jobs-configmap`): one job that succeeds every
//! `FAILOVER_JOB_EVERY` seconds (default 10) and one that fails every 30 s, so that the leader's run-state
//! writes and its (aggregated) Events show in the steady state.
//!
//! ```text
//! cargo bench --bench failover                      # ~2.5 min with the default timings
//! FAILOVER_SAMPLES=10 cargo bench --bench failover
//! FAILOVER_STORE=file cargo bench --bench failover   # the lease file only (~15 s; no results file)
//! ```

#[path = "../tests/support/fake_apiserver/mod.rs"]
pub mod fake_apiserver;
#[path = "support/report.rs"]
mod report;
#[path = "support/scale.rs"]
mod scale;

use std::collections::BTreeMap;
use std::fs;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use fake_apiserver::{FakeApiServer, Resource, Verb, NAMESPACE};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

const LEASE: &str = "leasecron";
/// The run state's ConfigMap: `<lease>-state`.
const STATE_CONFIG_MAP: &str = "leasecron-state";
/// The jobs' ConfigMap (`--jobs-configmap`).
const JOBS_CONFIG_MAP: &str = "leasecron-jobs";
/// The bearer token that creates the jobs' ConfigMap (not a replica: not counted).
const ADMIN: &str = "admin";
/// Default length of the steady-state window, in seconds.
const STEADY_SECONDS: u64 = 60;
/// How often the failing job fires, in seconds: its Events are aggregated to one write a minute.
const FAILING_EVERY: u64 = 30;
/// The lease file of the file-lease part, in the bench's directory.
const LEASE_FILE: &str = "leasecron.lease";
/// How often the file-lease part reads the lease file while it waits for the new holder.
const LEASE_FILE_READ_EVERY: Duration = Duration::from_micros(200);

struct Replica {
    identity: String,
    child: Child,
}

impl Replica {
    fn token(&self) -> String {
        format!("token-{}", self.identity)
    }

    fn rss_kib(&self) -> Option<u64> {
        let status = fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
        line.split_whitespace().nth(1)?.parse().ok()
    }

    fn signal(&self, signal: Signal) {
        kill(Pid::from_raw(self.child.id() as i32), signal).expect("signal the replica");
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Bench {
    server: FakeApiServer,
    dir: PathBuf,
    timings: [String; 6],
    next_id: usize,
}

impl Bench {
    fn spawn(&mut self) -> Replica {
        let identity = format!("r{}", self.next_id);
        self.next_id += 1;
        let token = format!("token-{identity}");
        let kubeconfig = self.server.kubeconfig(&self.dir, &token);
        let log = fs::File::create(self.dir.join(format!("{identity}.log"))).expect("log");
        let child = Command::new(env!("CARGO_BIN_EXE_leasecron"))
            .args(["run", "--jobs-configmap", JOBS_CONFIG_MAP])
            .args(["--identity", &identity, "--http-addr", "127.0.0.1:0"])
            .args(&self.timings)
            .env("KUBECONFIG", kubeconfig)
            .env("HOME", &self.dir)
            .env_remove("POD_NAMESPACE")
            .env_remove("POD_NAME")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn leasecron");
        Replica { identity, child }
    }

    fn holder(&self) -> Option<String> {
        let lease = self.server.object(Resource::Leases, NAMESPACE, LEASE)?;
        let holder = lease.pointer("/spec/holderIdentity")?.as_str()?;
        (!holder.is_empty()).then(|| holder.to_owned())
    }

    async fn wait_for_holder(&self, not: Option<&str>) -> String {
        let start = Instant::now();
        loop {
            if let Some(holder) = self.holder().filter(|h| Some(h.as_str()) != not) {
                return holder;
            }
            assert!(start.elapsed() < Duration::from_secs(120), "no leader");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The first successful Lease write after `after` by a token other than `old`, as received.
    async fn next_write(&self, after: DateTime<Utc>, old: &str) -> DateTime<Utc> {
        let start = Instant::now();
        loop {
            let write = self.server.requests().into_iter().find(|r| {
                r.wall > after
                    && r.resource == Some(Resource::Leases)
                    && matches!(r.verb, Some(Verb::Update) | Some(Verb::Create))
                    && matches!(r.status, Some(200) | Some(201))
                    && r.token.as_deref() != Some(old)
            });
            if let Some(write) = write {
                return write.wall;
            }
            assert!(
                start.elapsed() < Duration::from_secs(120),
                "nobody took over"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops the leader with `signal` and returns the time until another replica's write.
    async fn failover(&mut self, replicas: &mut Vec<Replica>, signal: Signal) -> Duration {
        let holder = self.wait_for_holder(None).await;
        // Let the followers settle on the current record (their watch is up).
        tokio::time::sleep(Duration::from_secs(1)).await;
        let index = replicas
            .iter()
            .position(|r| r.identity == holder)
            .expect("the holder is ours");
        let leader = replicas.remove(index);
        let token = leader.token();
        let sent = Utc::now();
        leader.signal(signal);
        let written = self.next_write(sent, &token).await;
        drop(leader);
        replicas.push(self.spawn());
        (written - sent).to_std().unwrap_or_default()
    }
}

fn env_duration(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

fn main() {
    let samples: usize = std::env::var("FAILOVER_SAMPLES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    // `kube`, `file`, or both (the default; only then are the results written).
    let store = std::env::var("FAILOVER_STORE").unwrap_or_else(|_| "both".to_owned());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let steady_seconds: u64 = scale::env_or("FAILOVER_STEADY_SECONDS", STEADY_SECONDS);
    let job_every: u64 = scale::env_or("FAILOVER_JOB_EVERY", 10);
    runtime.block_on(async move {
        let dir = tempfile::tempdir().expect("tempdir");
        let (ld, rd, rp) = (
            env_duration("FAILOVER_LD", "15s"),
            env_duration("FAILOVER_RD", "10s"),
            env_duration("FAILOVER_RP", "2s"),
        );
        let timings: [String; 6] = [
            "--lease-duration".into(),
            ld.clone(),
            "--renew-deadline".into(),
            rd.clone(),
            "--retry-period".into(),
            rp.clone(),
        ];
        let mut report = report::Report::new("failover");
        report
            .param("replicas", 3)
            .param("lease_duration", ld.as_str())
            .param("renew_deadline", rd.as_str())
            .param("retry_period", rp.as_str())
            .param("samples", samples)
            .param("crash_samples", samples.min(3))
            .param("steady_seconds", steady_seconds)
            .param("job_every_seconds", job_every)
            .param("failing_job_every_seconds", FAILING_EVERY);
        let ms = |samples: &[Duration]| -> Vec<f64> {
            samples.iter().map(|d| d.as_secs_f64() * 1e3).collect()
        };
        if store != "file" {
            let server = FakeApiServer::start().await;
            create_jobs(&server, job_every).await;
            let mut bench = Bench {
                server,
                dir: dir.path().to_owned(),
                timings: timings.clone(),
                next_id: 0,
            };
            println!("failover, 3 replicas against the fake API server, LD {ld} RD {rd} RP {rp}");
            let mut replicas: Vec<Replica> = (0..3).map(|_| bench.spawn()).collect();
            let steady = steady_state(&bench, &replicas, Duration::from_secs(steady_seconds)).await;
            report.raw("steady_state", steady);

            let mut graceful = Vec::new();
            for _ in 0..samples {
                graceful.push(bench.failover(&mut replicas, Signal::SIGTERM).await);
            }
            print_summary("graceful (SIGTERM → new holder's write)", &graceful);
            let mut crash = Vec::new();
            for _ in 0..samples.min(3) {
                crash.push(bench.failover(&mut replicas, Signal::SIGKILL).await);
            }
            print_summary("crash (SIGKILL → new holder's write)", &crash);
            report
                .samples("graceful", "ms", &ms(&graceful))
                .samples("crash", "ms", &ms(&crash));
        }
        if store != "kube" {
            let mut bench = FileBench::new(dir.path().join("file"), timings, job_every);
            println!("failover, 3 replicas on a lease file, LD {ld} RD {rd} RP {rp}");
            let mut replicas: Vec<Replica> = (0..3).map(|_| bench.spawn()).collect();
            let mut graceful = Vec::new();
            for _ in 0..samples {
                graceful.push(bench.failover(&mut replicas).await);
            }
            print_summary(
                "graceful on a lease file (SIGTERM → the file names another holder)",
                &graceful,
            );
            report.samples("graceful_file", "ms", &ms(&graceful));
        }
        if store == "both" {
            report.write();
        }
    });
}

/// Three replicas electing through one lease file.
struct FileBench {
    dir: PathBuf,
    jobs: PathBuf,
    timings: [String; 6],
    next_id: usize,
    /// Failovers so far.
    samples: u64,
}

impl FileBench {
    /// A bench in `dir` (created), with a job that succeeds every `every` seconds.
    fn new(dir: PathBuf, timings: [String; 6], every: u64) -> FileBench {
        fs::create_dir_all(&dir).expect("the bench directory");
        let jobs = dir.join("jobs.yaml");
        let text = format!(
            "jobs:\n  - name: works\n    schedule: \"*/{every} * * * * *\"\n    shell: \"true\"\n"
        );
        fs::write(&jobs, text).expect("the jobs file");
        FileBench {
            dir,
            jobs,
            timings,
            next_id: 0,
            samples: 0,
        }
    }

    fn spawn(&mut self) -> Replica {
        let identity = format!("f{}", self.next_id);
        self.next_id += 1;
        let log = fs::File::create(self.dir.join(format!("{identity}.log"))).expect("log");
        let child = Command::new(env!("CARGO_BIN_EXE_leasecron"))
            .args(["run", "--jobs"])
            .arg(&self.jobs)
            .arg("--lease-file")
            .arg(self.dir.join(LEASE_FILE))
            .args(["--identity", &identity, "--http-addr", "127.0.0.1:0"])
            .args(&self.timings)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn leasecron");
        Replica { identity, child }
    }

    /// The holder the lease file names, if any.
    fn holder(path: &std::path::Path) -> Option<String> {
        let text = fs::read(path).ok()?;
        let record: serde_json::Value = serde_json::from_slice(&text).ok()?;
        let holder = record.get("holderIdentity")?.as_str()?;
        (!holder.is_empty()).then(|| holder.to_owned())
    }

    /// SIGTERM to the holder; the time until the lease file names another replica.
    async fn failover(&mut self, replicas: &mut Vec<Replica>) -> Duration {
        let path = self.dir.join(LEASE_FILE);
        let start = Instant::now();
        let holder = loop {
            if let Some(holder) = FileBench::holder(&path) {
                break holder;
            }
            assert!(start.elapsed() < Duration::from_secs(120), "no leader");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        // Let the followers settle on the current record (their watch is up). Not a fixed second: a
        // follower that polls (every 250 ms before it watched the directory) last polled when it saw the
        // previous holder's first write, so a fixed settle time would put its next poll right at the
        // release. 1 s plus 0–499 ms, spread over the samples.
        self.samples += 1;
        let settle = Duration::from_millis(1000 + (self.samples * 211) % 500);
        tokio::time::sleep(settle).await;
        let index = replicas
            .iter()
            .position(|r| r.identity == holder)
            .expect("the holder is ours");
        let leader = replicas.remove(index);
        let taken = tokio::task::spawn_blocking(move || {
            let sent = Instant::now();
            leader.signal(Signal::SIGTERM);
            loop {
                if FileBench::holder(&path).is_some_and(|h| h != holder) {
                    return (sent.elapsed(), leader);
                }
                assert!(
                    sent.elapsed() < Duration::from_secs(120),
                    "nobody took over"
                );
                std::thread::sleep(LEASE_FILE_READ_EVERY);
            }
        });
        let (elapsed, leader) = taken.await.expect("the reader does not panic");
        drop(leader);
        replicas.push(self.spawn());
        elapsed
    }
}

/// The jobs' ConfigMap, created through the API as an administrator would.
async fn create_jobs(server: &FakeApiServer, every: u64) {
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::{Api, PostParams};
    let text = format!(
        "jobs:\n  - name: works\n    schedule: \"*/{every} * * * * *\"\n    shell: \"true\"\n  \
         - name: fails\n    schedule: \"*/{FAILING_EVERY} * * * * *\"\n    shell: \"exit 1\"\n"
    );
    let config_map: ConfigMap = serde_json::from_value(serde_json::json!({
        "metadata": {"name": JOBS_CONFIG_MAP},
        "data": {"jobs.yaml": text},
    }))
    .expect("a ConfigMap");
    Api::<ConfigMap>::namespaced(server.client(ADMIN).await, NAMESPACE)
        .create(&PostParams::default(), &config_map)
        .await
        .expect("create the jobs' ConfigMap");
}

/// What a request was about, as the report groups them.
fn object_class(resource: Option<Resource>, name: Option<&str>) -> &'static str {
    match (resource, name) {
        (Some(Resource::Leases), _) => "Lease",
        (Some(Resource::ConfigMaps), Some(STATE_CONFIG_MAP)) => "state ConfigMap",
        (Some(Resource::ConfigMaps), Some(JOBS_CONFIG_MAP)) => "jobs ConfigMap",
        (Some(Resource::ConfigMaps), _) => "other ConfigMap",
        (Some(Resource::Events), _) => "Events (events.k8s.io)",
        (Some(Resource::CoreEvents), _) => "Events (core)",
        (None, _) => "unrouted",
    }
}

/// Requests per minute of each replica over `window`, by object and verb; also its RSS and CPU.
async fn steady_state(bench: &Bench, replicas: &[Replica], window: Duration) -> serde_json::Value {
    let leader = bench.wait_for_holder(None).await;
    // Start-up requests (the first GET, the watch) are not steady state.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let cpu_before: Vec<f64> = replicas
        .iter()
        .map(|r| scale::cpu_ms(r.child.id()))
        .collect();
    let from = Utc::now();
    tokio::time::sleep(window).await;
    let to = Utc::now();
    let seconds = (to - from).num_milliseconds() as f64 / 1000.0;
    let minutes = seconds / 60.0;
    println!("steady state over {seconds:.0} s: API requests per minute, by object and verb");
    let requests = bench.server.requests();
    let mut out = Vec::new();
    for (replica, cpu_before) in replicas.iter().zip(cpu_before) {
        let mut by_class: BTreeMap<(&str, String), usize> = BTreeMap::new();
        for r in &requests {
            if r.wall >= from && r.wall < to && r.token.as_deref() == Some(replica.token().as_str())
            {
                let name = r.name.as_deref().or(r.selected_name.as_deref());
                let verb = r
                    .verb
                    .map_or("unrouted".to_owned(), |v| format!("{v:?}").to_lowercase());
                *by_class
                    .entry((object_class(r.resource, name), verb))
                    .or_default() += 1;
            }
        }
        let role = if replica.identity == leader {
            "leader"
        } else {
            "follower"
        };
        let cpu_ms_per_s = (scale::cpu_ms(replica.child.id()) - cpu_before) / seconds;
        let rss_mib = replica.rss_kib().map(|k| k as f64 / 1024.0);
        let lease: usize = by_class
            .iter()
            .filter(|((class, _), _)| *class == "Lease")
            .map(|(_, n)| n)
            .sum();
        let lines: Vec<String> = by_class
            .iter()
            .map(|((class, verb), n)| format!("{class} {verb} {:.1}", *n as f64 / minutes))
            .collect();
        println!(
            "  {:<3} {:<8} Lease {:>5.1}/min  ({})  RSS {} MiB, CPU {cpu_ms_per_s:.2} ms/s",
            replica.identity,
            role,
            lease as f64 / minutes,
            lines.join(", "),
            rss_mib.map_or("?".into(), |m| format!("{m:.1}"))
        );
        let per_minute: Vec<serde_json::Value> = by_class
            .iter()
            .map(|((class, verb), n)| {
                serde_json::json!({"object": class, "verb": verb, "count": n, "per_minute": *n as f64 / minutes})
            })
            .collect();
        out.push(serde_json::json!({
            "identity": replica.identity,
            "role": role,
            "requests": per_minute,
            "rss_mib": rss_mib,
            "cpu_ms_per_s": cpu_ms_per_s,
        }));
    }
    serde_json::json!({"window_seconds": seconds, "replicas": out})
}

fn print_summary(name: &str, samples: &[Duration]) {
    let mut ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1e3).collect();
    ms.sort_by(f64::total_cmp);
    let median = ms[ms.len() / 2];
    let all: Vec<String> = ms.iter().map(|m| format!("{m:.0}")).collect();
    println!(
        "{name}: min {:.1} ms, median {:.1} ms, max {:.1} ms  (samples ms: {})",
        ms[0],
        median,
        ms[ms.len() - 1],
        all.join(" ")
    );
}
