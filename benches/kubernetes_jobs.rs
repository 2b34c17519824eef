//! `executor: kubernetes` on the real Kubernetes API server (tools/kube-testenv: kube-apiserver v1.37.2 on an
//! embedded etcd, fsync on, an audit log at the Metadata level; see tests/support/fake_apiserver/real.rs):
//! how long after its slot each run's batch/v1 Job is created, and how many API requests each Job costs,
//! at three rates.
//!
//! Each rate runs the real binary, `leasecron run --jobs FILE` (the default timings: LD 15s, RD 10s, RP
//! 2s), as a client-certificate user in `system:masters`, every process in a namespace of its own with its
//! Lease `leasecron` there. Every job is `executor: kubernetes` with `concurrencyPolicy: Allow` and a
//! one-container `jobTemplate`. No kubelet and no Job controller run, so every Job stays active: its run
//! follows it until the bench stops the process (as a Job that runs longer than the window would), and
//! history cleanup, which deletes finished Jobs only, deletes nothing.
//!
//! The rates (Jobs a minute, per `leasecron run`):
//! - **1/min**: one job firing once a minute (`S * * * * *`). One such process gives a sample a minute,
//!   so `KJ_SPARSE_PROCESSES` (default 15) of them run side by side, each with its own second of the
//!   minute (spread evenly), over `KJ_SPARSE_MINUTES` (default 2) whole minutes: each process sees
//!   exactly what a lone one firing once a minute sees, and the API server sees 15 Jobs a minute;
//! - **100/min**: one process with 5 jobs, each every 3 s (`*/3 * * * * *`: 5 Jobs at once, 20 times a
//!   minute), over `KJ_SECONDS` (default 60);
//! - **1 000/min**: one process with 17 jobs, each every second (1 020 Jobs a minute), over `KJ_SECONDS`.
//!
//! Measured from the audit log, for the slots in the window (whole seconds `[T0, T0 + window)`; T0 is 15 s
//! after the leader took its Lease for 1/min, so that its run state's client has been quiet as long as
//! between two fires, and 5 s after for the others):
//! - **slot → created**: the `stageTimestamp` of the `create` of the slot's Job at stage
//!   `ResponseComplete` (microseconds; the Job's `creationTimestamp` is whole seconds), minus the slot (the
//!   Job's `leasecron.io/scheduled-time` annotation, read back with a list); **slot → request sent**: the
//!   create's `requestReceivedTimestamp` minus the slot; and, where the time goes, the last run-state
//!   `PUT` (the claim) before the create, from `MAX_CLAIM_LEAD` before the slot on (a slot is claimed ahead):
//!   slot → its `requestReceivedTimestamp` and → its `stageTimestamp`, negative when it came before the slot;
//! - **API requests per Job**: every request of the process's user in its namespaces whose
//!   `requestReceivedTimestamp` falls in `[T0 + 0.5 s, T0 + window + 0.5 s)` (each once, by `auditID`; a
//!   watch counted when it starts), by object and verb, divided by the Jobs created in that window: the
//!   creates, the claims, the Lease renewals amortized, the watches and lists;
//! - each process's CPU over the window and its RSS at the end.
//!
//! `KJ_RATES=1,100,1000` picks the rates; `KJ_KEEP_DIR=1` keeps the processes' logs (the directory is
//! printed).
//!
//! ```text
//! cargo bench --bench kubernetes_jobs    # ~5 min
//! ```

#[path = "support/audit.rs"]
mod audit;
#[path = "../tests/support/fake_apiserver/real.rs"]
#[allow(dead_code)]
mod real;
#[path = "support/report.rs"]
mod report;
#[path = "support/scale.rs"]
mod scale;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use audit::{AuditEvent, AuditTail};
use chrono::{DateTime, Utc};
use k8s_openapi::api::batch::v1::Job as KubeJob;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, ListParams};
use leasecron::run_state::MAX_CLAIM_LEAD;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use real::RealApiServer;
use serde_json::{json, Value};

/// The Lease of every process (each in a namespace of its own).
const LEASE: &str = "leasecron";
/// Its run state's ConfigMap.
const STATE_CONFIG_MAP: &str = "leasecron-state";
/// Its controls' ConfigMap.
const CONTROLS_CONFIG_MAP: &str = "leasecron-controls";
/// The user the processes are (a client certificate in `system:masters`), apart from the bench's admin.
const USER: &str = "leasecron-kubernetes-jobs";
/// The annotation with the slot (src/kubernetes/batch.rs `ANNOTATION_SCHEDULED`).
const ANNOTATION_SCHEDULED: &str = "leasecron.io/scheduled-time";
/// How long anything that should happen within a few seconds may take.
const PATIENCE: Duration = Duration::from_secs(120);
/// The requests' window starts this long after the slots' window (and ends as long after), so that it
/// holds the creates of its slots.
const REQUEST_WINDOW_OFFSET_MS: i64 = 500;

/// How the Jobs of one rate come about.
#[derive(Debug, Clone, Copy)]
enum Shape {
    /// `processes` processes, each with one job firing once a minute (at seconds spread over the minute),
    /// over `minutes` whole minutes.
    Sparse { processes: usize, minutes: u64 },
    /// One process with `jobs` jobs, each firing every `every` seconds (a divisor of 60), over `seconds`.
    Steady {
        jobs: usize,
        every: u64,
        seconds: u64,
    },
}

/// One rate of the bench.
struct Rate {
    /// In the report's keys: `1`, `100`, `1000`.
    key: &'static str,
    shape: Shape,
}

impl Rate {
    /// Jobs a minute, per process.
    fn per_minute(&self) -> f64 {
        match self.shape {
            Shape::Sparse { .. } => 1.0,
            Shape::Steady { jobs, every, .. } => jobs as f64 * 60.0 / every as f64,
        }
    }

    fn processes(&self) -> usize {
        match self.shape {
            Shape::Sparse { processes, .. } => processes,
            Shape::Steady { .. } => 1,
        }
    }

    fn window(&self) -> Duration {
        match self.shape {
            Shape::Sparse { minutes, .. } => Duration::from_secs(minutes * 60),
            Shape::Steady { seconds, .. } => Duration::from_secs(seconds),
        }
    }

    /// How long after the Leases were taken the window starts.
    fn warm_up(&self) -> Duration {
        match self.shape {
            Shape::Sparse { .. } => Duration::from_secs(15),
            Shape::Steady { .. } => Duration::from_secs(5),
        }
    }

    /// The schedules of process `p`'s jobs.
    fn schedules(&self, p: usize) -> Vec<String> {
        match self.shape {
            Shape::Sparse { processes, .. } => {
                vec![format!("{} * * * * *", p * 60 / processes)]
            }
            Shape::Steady { jobs, every, .. } => {
                let schedule = if every == 1 {
                    "* * * * * *".to_owned()
                } else {
                    format!("*/{every} * * * * *")
                };
                vec![schedule; jobs]
            }
        }
    }

    /// How many slots of every process fall in `[from, from + window)`.
    fn expected(&self, from: DateTime<Utc>) -> usize {
        match self.shape {
            Shape::Sparse { processes, minutes } => processes * minutes as usize,
            Shape::Steady {
                jobs,
                every,
                seconds,
            } => {
                let start = from.timestamp();
                (start..start + seconds as i64)
                    .filter(|s| s.rem_euclid(60) as u64 % every == 0)
                    .count()
                    * jobs
            }
        }
    }

    fn definition(&self) -> String {
        match self.shape {
            Shape::Sparse { processes, minutes } => format!(
                "{processes} processes side by side, each with 1 job once a minute (its own second), \
                 over {minutes} min"
            ),
            Shape::Steady {
                jobs,
                every,
                seconds,
            } => format!(
                "1 process, {jobs} jobs each every {every} s ({} Jobs/min), over {seconds} s",
                jobs as u64 * 60 / every
            ),
        }
    }
}

fn main() {
    if scale::probe_if_asked() {
        return;
    }
    let started = Instant::now();
    let sparse_processes: usize = scale::env_or("KJ_SPARSE_PROCESSES", 15);
    let sparse_minutes: u64 = scale::env_or("KJ_SPARSE_MINUTES", 2);
    let seconds: u64 = scale::env_or("KJ_SECONDS", 60);
    let selected = std::env::var("KJ_RATES").unwrap_or_else(|_| "1,100,1000".to_owned());
    let rates: Vec<Rate> = [
        Rate {
            key: "1",
            shape: Shape::Sparse {
                processes: sparse_processes,
                minutes: sparse_minutes,
            },
        },
        Rate {
            key: "100",
            shape: Shape::Steady {
                jobs: 5,
                every: 3,
                seconds,
            },
        },
        Rate {
            key: "1000",
            shape: Shape::Steady {
                jobs: 17,
                every: 1,
                seconds,
            },
        },
    ]
    .into_iter()
    .filter(|rate| selected.split(',').any(|s| s.trim() == rate.key))
    .collect();

    let mut report = report::Report::new("kubernetes_jobs");
    report
        .param("rates", rates.iter().map(|r| r.key).collect::<Vec<_>>())
        .param("sparse_processes", sparse_processes)
        .param("sparse_minutes", sparse_minutes)
        .param("seconds", seconds);

    let mut dir = tempfile::tempdir().expect("tempdir");
    if std::env::var_os("KJ_KEEP_DIR").is_some() {
        dir.disable_cleanup(true);
        println!("keeping {}", dir.path().display());
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let server = RealApiServer::start(&[])
        .expect("the real API server (tools/kube-testenv) is needed: install Go 1.26");
    let ready = server.ready().clone();
    println!(
        "real API server: Kubernetes {} (kube-testenv, etcd fsync {}), ready in {} ms",
        ready.release, ready.etcd_fsync, ready.startup_ms
    );
    report.raw(
        "server",
        json!({
            "release": ready.release,
            "etcd_fsync": ready.etcd_fsync,
            "startup_ms": ready.startup_ms,
        }),
    );
    report.raw("machine", machine());
    runtime.block_on(async {
        let kubeconfig = server.user_kubeconfig(USER, &["system:masters"]);
        let mut audit = AuditTail::of_user(&ready.audit_log, USER);
        let mut summaries = Vec::new();
        for rate in &rates {
            let load = load_average();
            println!(
                "\n== {} Jobs/min: {} (load average {load:.2})",
                rate.key,
                rate.definition()
            );
            let measured = measure(&server, rate, dir.path(), &kubeconfig, &mut audit).await;
            report
                .samples(&format!("created.{}", rate.key), "ms", &measured.created)
                .samples(&format!("sent.{}", rate.key), "ms", &measured.sent)
                .samples(
                    &format!("create_server.{}", rate.key),
                    "ms",
                    &measured.create_server,
                )
                .samples(
                    &format!("claim_sent.{}", rate.key),
                    "ms",
                    &measured.claim_sent,
                )
                .samples(
                    &format!("claim_done.{}", rate.key),
                    "ms",
                    &measured.claim_done,
                )
                .samples(
                    &format!("claim_to_create.{}", rate.key),
                    "ms",
                    &measured.claim_to_create,
                );
            let mut info = measured.info;
            info["load_average_before"] = json!(load);
            report.raw(&format!("rate.{}", rate.key), info);
            summaries.push((rate.key, measured.created));
        }
        println!("\nslot → Job created (ms)");
        scale::Summary::header(14);
        for (key, created) in summaries {
            scale::Summary::print(scale::Summary::of(created), &format!("{key} Jobs/min"), 14);
        }
    });
    drop(runtime);
    drop(server);
    let seconds = started.elapsed().as_secs_f64();
    println!("the bench took {seconds:.0} s");
    report.value("bench_seconds", seconds, "s").write();
}

/// What one rate measured.
struct Measured {
    /// Slot → the create's `stageTimestamp` (`ResponseComplete`), ms.
    created: Vec<f64>,
    /// Slot → the create's `requestReceivedTimestamp`, ms.
    sent: Vec<f64>,
    /// The create as the server logs it: `stageTimestamp − requestReceivedTimestamp`, ms.
    create_server: Vec<f64>,
    /// Slot → the last run-state PUT before the create, received, ms.
    claim_sent: Vec<f64>,
    /// Slot → that PUT, complete, ms.
    claim_done: Vec<f64>,
    /// That PUT complete → the create received, ms.
    claim_to_create: Vec<f64>,
    /// Everything else, as the report's JSON.
    info: Value,
}

/// One `leasecron run`.
struct Process {
    identity: String,
    namespace: String,
    log: PathBuf,
    child: Child,
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Process {
    /// SIGTERM, then up to 30 s for it to exit (it hands its active Jobs over), then SIGKILL.
    async fn stop(&mut self) {
        let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM);
        for _ in 0..300 {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The last lines of its log, for a failure's message.
    fn log_tail(&self) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        format!(
            "== {}\n{}",
            self.log.display(),
            lines[lines.len().saturating_sub(20)..].join("\n")
        )
    }

    /// Lines of its log at WARN or ERROR (`--log-format json`).
    fn warnings(&self) -> usize {
        fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .filter(|v| matches!(v["level"].as_str(), Some("WARN") | Some("ERROR")))
            .count()
    }
}

/// The jobs file of one process: `executor: kubernetes` jobs with `concurrencyPolicy: Allow`.
fn jobs_file(schedules: &[String]) -> String {
    let mut text = String::from("jobs:\n");
    for (j, schedule) in schedules.iter().enumerate() {
        text.push_str(&format!(
            "  - name: j{j}\n    schedule: \"{schedule}\"\n    executor: kubernetes\n    \
             concurrencyPolicy: Allow\n    jobTemplate:\n      template:\n        spec:\n          \
             restartPolicy: Never\n          containers:\n            - name: main\n              \
             image: busybox:1.36\n              command: [sh, -c, \"true\"]\n"
        ));
    }
    text
}

/// Runs `rate`'s processes, measures its window, stops them.
async fn measure(
    server: &RealApiServer,
    rate: &Rate,
    dir: &Path,
    kubeconfig: &Path,
    audit: &mut AuditTail,
) -> Measured {
    let admin = server.admin_client("default").await;
    let mut processes = Vec::new();
    for p in 0..rate.processes() {
        let identity = format!("kj{}-{p}", rate.key);
        let namespace = server
            .create_namespace(&format!("bench-kjobs-{}-{p}", rate.key))
            .await;
        let config = server.kubeconfig_in_namespace(
            kubeconfig,
            dir,
            &format!("kubeconfig-{identity}"),
            &namespace,
        );
        let jobs = dir.join(format!("jobs-{identity}.yaml"));
        fs::write(&jobs, jobs_file(&rate.schedules(p))).expect("write the jobs file");
        let log_path = dir.join(format!("{identity}.log"));
        let log = fs::File::create(&log_path).expect("log");
        let child = Command::new(env!("CARGO_BIN_EXE_leasecron"))
            .args(["run", "--jobs"])
            .arg(&jobs)
            .args(["--identity", &identity, "--http-addr", "127.0.0.1:0"])
            .args(["--log-format", "json"])
            .env("KUBECONFIG", &config)
            .env("HOME", dir)
            .env_remove("POD_NAMESPACE")
            .env_remove("POD_NAME")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn leasecron");
        processes.push(Process {
            identity,
            namespace,
            log: log_path,
            child,
        });
    }
    // Each process leads its own Lease.
    let start = Instant::now();
    for process in &processes {
        let leases: Api<Lease> = Api::namespaced(admin.clone(), &process.namespace);
        loop {
            let holder = leases
                .get_opt(LEASE)
                .await
                .ok()
                .flatten()
                .and_then(|lease| lease.spec?.holder_identity);
            if holder.as_deref() == Some(process.identity.as_str()) {
                break;
            }
            assert!(
                start.elapsed() < PATIENCE,
                "{} never took its Lease\n{}",
                process.identity,
                process.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let led_at = Utc::now();
    let from = scale::next_whole_second(led_at + rate.warm_up());
    let window = rate.window();
    let to = from + chrono::Duration::from_std(window).expect("window");
    sleep_until(from).await;
    let cpu_before: Vec<f64> = processes
        .iter()
        .map(|p| scale::cpu_ms(p.child.id()))
        .collect();
    sleep_until(to).await;
    let cpu: Vec<f64> = processes
        .iter()
        .zip(&cpu_before)
        .map(|(p, before)| (scale::cpu_ms(p.child.id()) - before) / window.as_secs_f64())
        .collect();
    let rss: Vec<f64> = processes
        .iter()
        .map(|p| scale::rss_mib(p.child.id()))
        .collect();
    // The last slots' creates, and the requests' window's end.
    tokio::time::sleep(Duration::from_millis(
        REQUEST_WINDOW_OFFSET_MS as u64 + 1_500,
    ))
    .await;
    let offset = chrono::Duration::milliseconds(REQUEST_WINDOW_OFFSET_MS);
    let (requests_from, requests_to) = (from + offset, to + offset);
    let warnings: usize = processes.iter().map(Process::warnings).sum();
    for process in &mut processes {
        process.stop().await;
    }

    // The slot of every Job, from its annotation.
    let mut slots: HashMap<(String, String), DateTime<Utc>> = HashMap::new();
    let mut jobs_total = 0;
    for process in &processes {
        let jobs: Api<KubeJob> = Api::namespaced(admin.clone(), &process.namespace);
        let list = jobs
            .list(&ListParams::default())
            .await
            .expect("list the Jobs");
        jobs_total += list.items.len();
        for job in list.items {
            let name = job.metadata.name.clone().unwrap_or_default();
            let scheduled = job
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(ANNOTATION_SCHEDULED))
                .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
                .map(|t| t.with_timezone(&Utc));
            if let Some(scheduled) = scheduled {
                slots.insert((process.namespace.clone(), name), scheduled);
            }
        }
    }

    audit.poll();
    let namespaces: HashSet<&str> = processes.iter().map(|p| p.namespace.as_str()).collect();
    let ours: Vec<&AuditEvent> = audit
        .events
        .iter()
        .filter(|e| {
            e.namespace
                .as_deref()
                .is_none_or(|ns| namespaces.contains(ns))
        })
        .collect();

    // Slot → created, for the slots in [from, to).
    let ms = |d: chrono::Duration| d.num_microseconds().map_or(f64::NAN, |us| us as f64 / 1e3);
    let mut measured = Measured {
        created: Vec::new(),
        sent: Vec::new(),
        create_server: Vec::new(),
        claim_sent: Vec::new(),
        claim_done: Vec::new(),
        claim_to_create: Vec::new(),
        info: Value::Null,
    };
    let mut create_errors: BTreeMap<u16, usize> = BTreeMap::new();
    let mut creates: Vec<(&AuditEvent, DateTime<Utc>)> = Vec::new();
    for e in &ours {
        if e.resource.as_deref() != Some("jobs")
            || e.verb != "create"
            || e.stage != "ResponseComplete"
        {
            continue;
        }
        if e.code != Some(201) {
            if e.received >= from && e.received < to + offset {
                *create_errors.entry(e.code.unwrap_or(0)).or_default() += 1;
            }
            continue;
        }
        let key = (
            e.namespace.clone().unwrap_or_default(),
            e.name.clone().unwrap_or_default(),
        );
        let Some(&slot) = slots.get(&key) else {
            continue;
        };
        if slot >= from && slot < to {
            creates.push((e, slot));
        }
    }
    creates.sort_by_key(|(_, slot)| *slot);
    for (create, slot) in &creates {
        measured.created.push(ms(create.completed - *slot));
        measured.sent.push(ms(create.received - *slot));
        measured
            .create_server
            .push(ms(create.completed - create.received));
        // The claim: the last run-state PUT of the same process before the create, from the longest lead
        // of a claim made ahead of the slot on.
        let earliest = *slot - chrono::Duration::from_std(MAX_CLAIM_LEAD).expect("small");
        let claim = ours
            .iter()
            .filter(|e| {
                e.namespace == create.namespace
                    && e.name.as_deref() == Some(STATE_CONFIG_MAP)
                    && e.verb == "update"
                    && e.stage == "ResponseComplete"
                    && e.received >= earliest
                    && e.completed <= create.received
            })
            .max_by_key(|e| e.completed);
        if let Some(claim) = claim {
            measured.claim_sent.push(ms(claim.received - *slot));
            measured.claim_done.push(ms(claim.completed - *slot));
            measured
                .claim_to_create
                .push(ms(create.received - claim.completed));
        }
    }

    // Requests in [from + offset, to + offset), by object and verb.
    let mut seen = HashSet::new();
    let mut by_class: BTreeMap<(&'static str, String), (usize, usize)> = BTreeMap::new();
    let mut jobs_created = 0;
    for e in &ours {
        if e.received < requests_from || e.received >= requests_to || !seen.insert(e.id.as_str()) {
            continue;
        }
        let entry = by_class
            .entry((object_class(e), e.verb.clone()))
            .or_default();
        entry.0 += 1;
        if e.code.is_some_and(|c| c >= 400) {
            entry.1 += 1;
        }
        if e.resource.as_deref() == Some("jobs") && e.verb == "create" {
            jobs_created += 1;
        }
    }
    let total: usize = by_class.values().map(|(n, _)| n).sum();
    let per_job = |n: usize| {
        if jobs_created == 0 {
            f64::NAN
        } else {
            n as f64 / jobs_created as f64
        }
    };
    let requests: Vec<Value> = by_class
        .iter()
        .map(|((object, verb), (n, errors))| {
            json!({"object": object, "verb": verb, "count": n, "errors": errors, "per_job": per_job(*n)})
        })
        .collect();

    let expected = rate.expected(from);
    let missing = expected.saturating_sub(creates.len());
    let summary = |v: &[f64]| scale::Summary::of(v.to_vec());
    let width = 38;
    scale::Summary::header(width);
    scale::Summary::print(summary(&measured.created), "slot → Job created", width);
    scale::Summary::print(summary(&measured.sent), "slot → create received", width);
    scale::Summary::print(
        summary(&measured.create_server),
        "create, server side",
        width,
    );
    scale::Summary::print(
        summary(&measured.claim_sent),
        "slot → claim PUT received",
        width,
    );
    scale::Summary::print(
        summary(&measured.claim_done),
        "slot → claim PUT complete",
        width,
    );
    scale::Summary::print(
        summary(&measured.claim_to_create),
        "claim PUT complete → create received",
        width,
    );
    println!(
        "Jobs: {} of {expected} slots in the window created ({missing} missing), {jobs_total} Jobs in \
         all; create errors {create_errors:?}; {warnings} WARN/ERROR log lines",
        creates.len()
    );
    println!(
        "API requests in the window: {total} for {jobs_created} Jobs created = {:.2} per Job",
        per_job(total)
    );
    for ((object, verb), (n, errors)) in &by_class {
        let errors = if *errors > 0 {
            format!(" ({errors} answered ≥ 400)")
        } else {
            String::new()
        };
        println!(
            "  {object:<26} {verb:<7} {n:>6}  {:>7.3} per Job{errors}",
            per_job(*n)
        );
    }
    let cpu_total: f64 = cpu.iter().sum();
    let rss_max = rss.iter().copied().fold(0.0, f64::max);
    println!(
        "leasecron: CPU {:.2} ms/s per process (mean of {}), RSS up to {rss_max:.1} MiB",
        cpu_total / cpu.len() as f64,
        cpu.len()
    );
    measured.info = json!({
        "definition": rate.definition(),
        "per_minute_per_process": rate.per_minute(),
        "processes": rate.processes(),
        "jobs_per_process": rate.schedules(0).len(),
        "schedules": rate.schedules(0),
        "window_seconds": window.as_secs_f64(),
        "window_start": from.to_rfc3339(),
        "slots_expected": expected,
        "slots_created": creates.len(),
        "slots_missing": missing,
        "jobs_total": jobs_total,
        "create_errors": create_errors.iter().map(|(c, n)| json!({"code": c, "count": n})).collect::<Vec<_>>(),
        "log_warnings": warnings,
        "jobs_created_in_request_window": jobs_created,
        "requests": requests,
        "requests_total": total,
        "requests_per_job": per_job(total),
        "cpu_ms_per_s": cpu,
        "rss_mib": rss,
    });
    measured
}

async fn sleep_until(at: DateTime<Utc>) {
    if let Ok(wait) = (at - Utc::now()).to_std() {
        tokio::time::sleep(wait).await;
    }
}

fn load_average() -> f64 {
    fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|text| text.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0)
}

fn machine() -> Value {
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or("?".to_owned(), |(_, m)| m.trim().to_owned());
    json!({
        "cpu_model": model,
        "cpus": std::thread::available_parallelism().map_or(0, |n| n.get()),
    })
}

// === the audit log ===

/// What the request was about, as the report groups them.
fn object_class(e: &AuditEvent) -> &'static str {
    match (e.resource.as_deref(), e.group.as_deref(), e.name.as_deref()) {
        (Some("jobs"), _, _) => "Job",
        (Some("leases"), _, _) => "Lease",
        (Some("configmaps"), _, Some(STATE_CONFIG_MAP)) => "state ConfigMap",
        (Some("configmaps"), _, Some(CONTROLS_CONFIG_MAP)) => "controls ConfigMap",
        (Some("configmaps"), _, _) => "other ConfigMap",
        (Some("events"), Some("events.k8s.io"), _) => "Events (events.k8s.io)",
        (Some("events"), _, _) => "Events (core)",
        (Some("selfsubjectaccessreviews"), _, _) => "SelfSubjectAccessReview",
        _ => "other",
    }
}
