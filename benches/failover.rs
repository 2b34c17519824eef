//! Failover and steady-state cost of the Kubernetes Lease store: three real `leasecron run` processes
//! against the fake API server (tests/support/fake_apiserver.rs), with the default timings (LD 15 s,
//! RD 10 s, RP 2 s) unless `FAILOVER_LD`, `FAILOVER_RD`, `FAILOVER_RP` say otherwise.
//!
//! - graceful failover: SIGTERM to the leader → the first successful Lease write of another replica, as the
//!   API server received it;
//! - crash failover: SIGKILL to the leader → the same;
//! - steady state: Lease requests per minute by the leader and by each follower, by verb;
//! - idle RSS of each replica (`VmRSS`).
//!
//! ```text
//! cargo bench --bench failover                      # ~2.5 min with the default timings
//! FAILOVER_SAMPLES=10 cargo bench --bench failover
//! ```

#[path = "../tests/support/fake_apiserver.rs"]
mod fake_apiserver;

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
const STEADY_WINDOW: Duration = Duration::from_secs(60);

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
    jobs: PathBuf,
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
            .args(["run", "--jobs"])
            .arg(&self.jobs)
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
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        let dir = tempfile::tempdir().expect("tempdir");
        let jobs = dir.path().join("jobs.yaml");
        fs::write(&jobs, "jobs: []\n").expect("jobs");
        let (ld, rd, rp) = (
            env_duration("FAILOVER_LD", "15s"),
            env_duration("FAILOVER_RD", "10s"),
            env_duration("FAILOVER_RP", "2s"),
        );
        let mut bench = Bench {
            server: FakeApiServer::start().await,
            dir: dir.path().to_owned(),
            jobs,
            timings: [
                "--lease-duration".into(),
                ld.clone(),
                "--renew-deadline".into(),
                rd.clone(),
                "--retry-period".into(),
                rp.clone(),
            ],
            next_id: 0,
        };
        println!("failover, 3 replicas against the fake API server, LD {ld} RD {rd} RP {rp}");
        let mut replicas: Vec<Replica> = (0..3).map(|_| bench.spawn()).collect();

        steady_state(&bench, &replicas).await;

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
    });
}

async fn steady_state(bench: &Bench, replicas: &[Replica]) {
    let leader = bench.wait_for_holder(None).await;
    // Start-up requests (the first GET, the watch) are not steady state.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let from = Utc::now();
    tokio::time::sleep(STEADY_WINDOW).await;
    let to = Utc::now();
    let minutes = (to - from).num_milliseconds() as f64 / 60_000.0;
    println!(
        "steady state over {:.0} s: Lease requests per minute",
        minutes * 60.0
    );
    for replica in replicas {
        let mut by_verb: BTreeMap<String, usize> = BTreeMap::new();
        for r in bench.server.requests() {
            if r.wall >= from
                && r.wall < to
                && r.token.as_deref() == Some(replica.token().as_str())
                && r.resource == Some(Resource::Leases)
            {
                let verb = r
                    .verb
                    .map_or("unrouted".to_owned(), |v| format!("{v:?}").to_lowercase());
                *by_verb.entry(verb).or_default() += 1;
            }
        }
        let total: usize = by_verb.values().sum();
        let role = if replica.identity == leader {
            "leader"
        } else {
            "follower"
        };
        let verbs: Vec<String> = by_verb
            .iter()
            .map(|(verb, n)| format!("{verb} {:.1}", *n as f64 / minutes))
            .collect();
        println!(
            "  {:<3} {:<8} {:>5.1}/min  ({})  idle RSS {} KiB",
            replica.identity,
            role,
            total as f64 / minutes,
            verbs.join(", "),
            replica.rss_kib().map_or("?".into(), |k| k.to_string())
        );
    }
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
