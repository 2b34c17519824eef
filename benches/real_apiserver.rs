//! leasecron on the real Kubernetes API server (tools/kube-testenv: kube-apiserver v1.37.2 on an embedded
//! etcd, see tests/support/fake_apiserver/real.rs), beside its two peers at the same timings, in one run:
//! client-go's own `LeaderElector` and the Rust crate kube-lease-manager.
//!
//! 1. failover: graceful (SIGTERM to the leader), crash (SIGKILL) and partition of three `leasecron run`
//!    replicas (`--jobs-configmap`, a job that succeeds every `REAL_JOB_EVERY` s and one that fails every
//!    30 s, so the run state and Events are in use, as benches/failover.rs), of three client-go electors
//!    (tools/kube-testenv/elector: `leaderelection.RunOrDie` with a `LeaseLock`, `ReleaseOnCancel`) and of
//!    three kube-lease-manager electors (this bench's binary run again as one, see
//!    benches/support/peers.rs: `LeaseManager::watch()`, the Lease lasting LD and renewed every RP), each
//!    set on a Lease in a namespace of its own on the real server (each process is a real user of its own,
//!    a client certificate), through a TCP relay of its own. A failover is timed from the signal to the
//!    first successful Lease write (update, create or patch, 200/201) of another member of the set, by
//!    its `requestReceivedTimestamp` in the real server's audit log. The partition cuts the leader's relay
//!    (its requests hang: nothing is refused or reset) and watches, for `REAL_PARTITION_SECONDS` (default
//!    LD + 60 s), how long it goes on believing it leads (its own log: leasecron's `lost leadership`,
//!    client-go's `OnStoppedLeading`, kube-lease-manager's watch channel turning false), when another
//!    member writes the Lease and believes it leads, and the overlap of the two beliefs. Every member's
//!    changes of belief and the events go into the report as a timeline;
//! 2. steady state: API requests per minute of the leader and of each follower of the three sets, counted
//!    from the audit log (each request once, by `auditID`, when its `requestReceivedTimestamp` falls in the
//!    window; user = the process's token, namespace = its set's or none), by object and verb, over
//!    `REAL_STEADY_SECONDS` (default 60), all sets at once; RSS and CPU of each process;
//! 3. the Kubernetes run state with etcd's fsync on (the default) and off (a second kube-testenv of this
//!    bench's own, `-etcd-unsafe-no-fsync`), without the proxy, as a user bound to deploy/core/role.yaml:
//!    claim latency (`Ledger::claim` on `StateConfigMap`, one `PUT` of `leasecron-state`; `REAL_CLAIMS`,
//!    default 50, one after the other) as the client sees it and as the server logs it (audit
//!    `stageTimestamp − requestReceivedTimestamp`), and the start lag of a `leasecron run` whose
//!    every-second job is the start-lag bench's static probe (benches/support/lag_probe.c, which records
//!    its own start; `REAL_LAG_SAMPLES`, default 60), and (fsync on only) of
//!    one whose job runs every 5 s (`REAL_SPARSE_SAMPLES`, default 8): its claims find the run state's
//!    client without an open connection;
//! 4. the build of tools/kube-testenv: `tools/kube-testenv/build` when up to date, then on a copy of the
//!    module in a temporary directory (its own output directory, so the shared build is untouched): with
//!    the warm Go build cache into an empty output directory, up to date, after an edit to main.go, and
//!    (unless `REAL_COLD_BUILD=0`) with an empty `GOCACHE` (modules already downloaded; about 5 min).
//!
//! `REAL_LD`, `REAL_RD`, `REAL_RP` (default 15s, 10s, 2s; Go's duration syntax, which the elector parses
//! too), `REAL_GRACEFUL_SAMPLES` (3), `REAL_CRASH_SAMPLES` (2), `REAL_PARTITION_SAMPLES` (1),
//! `REAL_PARTITION_SECONDS` (LD + 60), `REAL_BUILDS=0` skips part 4,
//! `REAL_KEEP_DIR=1` keeps the processes' logs (the directory is printed).
//!
//! ```text
//! cargo bench --bench real_apiserver                     # ~10 min, 5 of them the cold Go build
//! REAL_COLD_BUILD=0 cargo bench --bench real_apiserver   # ~5 min
//! ```

#[path = "support/audit.rs"]
mod audit;
#[path = "../tests/support/fake_apiserver/mod.rs"]
pub mod fake_apiserver;
#[path = "support/lag_probe.rs"]
mod lag_probe;
#[path = "support/peers.rs"]
mod peers;
#[path = "support/report.rs"]
mod report;
#[path = "support/scale.rs"]
mod scale;

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use audit::{AuditEvent, AuditTail};
use chrono::{DateTime, Utc};
use fake_apiserver::real::{self, RealApiServer};
use fake_apiserver::{FakeApiServer, Which};
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding, RoleRef, Subject};
use kube::api::{Api, ObjectMeta, PostParams};
use leasecron::kubernetes::run_state::StateConfigMap;
use leasecron::run_state::{Ledger, Origin, TermStart};
use leasecron::term::FencingToken;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::{json, Value};

const LEASE: &str = "leasecron";
/// The run state's ConfigMap: `<lease>-state`.
const STATE_CONFIG_MAP: &str = "leasecron-state";
/// The jobs' ConfigMap (`--jobs-configmap`).
const JOBS_CONFIG_MAP: &str = "leasecron-jobs";
/// How often the failing job fires, in seconds (as benches/failover.rs).
const FAILING_EVERY: u64 = 30;
/// The Role the Deployment grants leasecron, bound to the proxy-less users of part 3.
const ROLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/core/role.yaml");
/// The period of the sparse start-lag job, in seconds: longer than RP, the request timeout of the run
/// state's client.
const SPARSE_EVERY: u64 = 5;
/// How long anything that should happen within a few lease durations may take.
const PATIENCE: Duration = Duration::from_secs(120);

fn main() {
    if scale::probe_if_asked() || peers::lease_manager_elector_if_asked() {
        return;
    }
    let started = Instant::now();
    let ld = env_text("REAL_LD", "15s");
    let rd = env_text("REAL_RD", "10s");
    let rp = env_text("REAL_RP", "2s");
    let graceful_samples: usize = scale::env_or("REAL_GRACEFUL_SAMPLES", 3);
    let crash_samples: usize = scale::env_or("REAL_CRASH_SAMPLES", 2);
    let partition_samples: usize = scale::env_or("REAL_PARTITION_SAMPLES", 1);
    let partition_seconds: u64 = scale::env_or("REAL_PARTITION_SECONDS", whole_seconds(&ld) + 60);
    let steady_seconds: u64 = scale::env_or("REAL_STEADY_SECONDS", 60);
    let job_every: u64 = scale::env_or("REAL_JOB_EVERY", 10);
    let claims: usize = scale::env_or("REAL_CLAIMS", 50);
    let lag_samples: usize = scale::env_or("REAL_LAG_SAMPLES", 60);
    let sparse_samples: usize = scale::env_or("REAL_SPARSE_SAMPLES", 8);
    let builds = scale::env_or("REAL_BUILDS", 1) != 0;
    let cold_build = scale::env_or("REAL_COLD_BUILD", 1) != 0;

    let mut report = report::Report::new("real_apiserver");
    report
        .param("replicas", 3)
        .param("lease_duration", ld.as_str())
        .param("renew_deadline", rd.as_str())
        .param("retry_period", rp.as_str())
        .param("graceful_samples", graceful_samples)
        .param("crash_samples", crash_samples)
        .param("partition_samples", partition_samples)
        .param("partition_window_seconds", partition_seconds)
        .param("steady_seconds", steady_seconds)
        .param("job_every_seconds", job_every)
        .param("failing_job_every_seconds", FAILING_EVERY)
        .param("claims", claims)
        .param("lag_samples", lag_samples)
        .param("sparse_samples", sparse_samples)
        .param("sparse_every_seconds", SPARSE_EVERY)
        .param("cold_build", cold_build && builds);
    let mut loads = Loads::default();
    loads.mark("start");

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut dir = tempfile::tempdir().expect("tempdir");
    if std::env::var_os("REAL_KEEP_DIR").is_some() {
        // The processes' logs and kubeconfigs, for a look afterwards.
        dir.disable_cleanup(true);
        println!("keeping {}", dir.path().display());
    }
    let timings = Timings { ld, rd, rp };
    runtime.block_on(async {
        // Parts 1 and 2: both sets on the shared server, behind the proxy.
        let leasecron_server = FakeApiServer::start_on(Which::Real, "bench-leasecron")
            .await
            .expect("the real API server (tools/kube-testenv) is needed: install Go 1.26");
        let elector_server = FakeApiServer::start_on(Which::Real, "bench-elector")
            .await
            .expect("the real API server");
        let lease_manager_server = FakeApiServer::start_on(Which::Real, "bench-klm")
            .await
            .expect("the real API server");
        let real = leasecron_server.real().expect("proxy mode").clone();
        let ready = real.ready().clone();
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
                "etcd": module_version("go.etcd.io/etcd/server/v3"),
                "client_go": module_version("k8s.io/client-go =>"),
                "kube_lease_manager": locked_version("kube-lease-manager"),
                "go": command_output("go", &["version"]),
            }),
        );
        report.raw("machine", machine());
        println!(
            "LD {} RD {} RP {}; jobs every {job_every} s and {FAILING_EVERY} s",
            timings.ld, timings.rd, timings.rp
        );
        let mut audit = AuditTail::new(&ready.audit_log);
        let mut sets = [
            Set::new(
                Kind::Leasecron,
                leasecron_server,
                dir.path(),
                &timings,
                job_every,
            )
            .await,
            Set::new(
                Kind::Elector,
                elector_server,
                dir.path(),
                &timings,
                job_every,
            )
            .await,
            Set::new(
                Kind::LeaseManager,
                lease_manager_server,
                dir.path(),
                &timings,
                job_every,
            )
            .await,
        ];
        let mut members: Vec<Vec<Member>> = Vec::new();
        for set in &mut sets {
            let mut started = Vec::new();
            for _ in 0..3 {
                started.push(set.spawn().await);
            }
            members.push(started);
        }
        loads.mark("steady state");
        let steady = steady_state(
            &sets,
            &members,
            Duration::from_secs(steady_seconds),
            &mut audit,
        )
        .await;
        report.raw("steady_state", steady);

        loads.mark("failover");
        for (set, members) in sets.iter_mut().zip(members.iter_mut()) {
            let mut graceful = Vec::new();
            let mut released = Vec::new();
            let mut graceful_leading = Vec::new();
            for _ in 0..graceful_samples {
                let failover = set.failover(members, Signal::SIGTERM, &mut audit).await;
                graceful.push(failover.takeover);
                released.extend(failover.released);
                graceful_leading.extend(failover.leading);
            }
            print_summary(
                &format!(
                    "{}: graceful (SIGTERM → new holder's write)",
                    set.kind.label()
                ),
                &graceful,
            );
            let mut crash = Vec::new();
            let mut crash_leading = Vec::new();
            for _ in 0..crash_samples {
                let failover = set.failover(members, Signal::SIGKILL, &mut audit).await;
                crash.push(failover.takeover);
                crash_leading.extend(failover.leading);
            }
            print_summary(
                &format!("{}: graceful, SIGTERM → its release", set.kind.label()),
                &released,
            );
            print_summary(
                &format!("{}: crash (SIGKILL → new holder's write)", set.kind.label()),
                &crash,
            );
            let mut partitions = Vec::new();
            for _ in 0..partition_samples {
                partitions.push(
                    set.partition(members, Duration::from_secs(partition_seconds), &mut audit)
                        .await,
                );
            }
            report.raw(
                &format!("{}.partition", set.kind.key()),
                Value::Array(partitions),
            );
            // Let the replacement settle, so the timeline's last interval is the new leader's.
            tokio::time::sleep(Duration::from_secs(2)).await;
            report.raw(
                &format!("{}.timeline", set.kind.key()),
                set.timeline(Utc::now()),
            );
            report
                .samples(&format!("{}.graceful", set.kind.key()), "ms", &graceful)
                .samples(&format!("{}.crash", set.kind.key()), "ms", &crash)
                .samples(&format!("{}.released", set.kind.key()), "ms", &released)
                .samples(
                    &format!("{}.graceful_leading", set.kind.key()),
                    "ms",
                    &graceful_leading,
                )
                .samples(
                    &format!("{}.crash_leading", set.kind.key()),
                    "ms",
                    &crash_leading,
                );
        }
        drop(members);
        drop(sets);

        // Part 3: the run state, proxy-less, with etcd's fsync on (this server) and off (a second one).
        loads.mark("run state, fsync on");
        let samples = (claims, lag_samples, sparse_samples);
        let on = run_state(&real, dir.path(), "fsync", samples, &timings).await;
        loads.mark("run state, fsync off");
        let no_fsync = tokio::task::spawn_blocking(|| {
            RealApiServer::start(&["-etcd-unsafe-no-fsync"]).expect("a second kube-testenv")
        })
        .await
        .expect("start the second server");
        assert!(!no_fsync.ready().etcd_fsync, "etcd's fsync is off");
        let off = run_state(&no_fsync, dir.path(), "nofsync", samples, &timings).await;
        tokio::task::spawn_blocking(move || drop(no_fsync))
            .await
            .expect("stop the second server");
        for (key, figures) in [("fsync", on), ("nofsync", off)] {
            report
                .samples(&format!("claim.{key}"), "ms", &figures.claim)
                .samples(&format!("claim_server.{key}"), "ms", &figures.claim_server)
                .samples(&format!("lag.{key}"), "ms", &figures.lag);
            if !figures.sparse.is_empty() {
                report.samples(&format!("lag_sparse.{key}"), "ms", &figures.sparse);
            }
        }
    });
    drop(runtime);

    // Part 4: the build of tools/kube-testenv.
    if builds {
        loads.mark("build");
        report.raw("build", build_times(cold_build));
    }
    loads.mark("end");
    let seconds = started.elapsed().as_secs_f64();
    println!("the bench took {:.0} s", seconds);
    report
        .raw("load", loads.json())
        .value("bench_seconds", seconds, "s")
        .write();
}

// === the two sets of three processes ===

/// The timings, as the command lines take them (`15s`: humantime and Go both parse it).
struct Timings {
    ld: String,
    rd: String,
    rp: String,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Leasecron,
    Elector,
    LeaseManager,
}

impl Kind {
    /// In the report's keys.
    fn key(self) -> &'static str {
        match self {
            Kind::Leasecron => "leasecron",
            Kind::Elector => "elector",
            Kind::LeaseManager => "lease_manager",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Kind::Leasecron => "leasecron",
            Kind::Elector => "client-go elector",
            Kind::LeaseManager => "kube-lease-manager",
        }
    }

    /// The first letter of its members' identities.
    fn prefix(self) -> &'static str {
        match self {
            Kind::Leasecron => "r",
            Kind::Elector => "e",
            Kind::LeaseManager => "k",
        }
    }
}

/// One process of a set.
struct Member {
    identity: String,
    child: Child,
    /// Its only way to the API server, which a partition cuts.
    relay: peers::Relay,
}

impl Member {
    /// Its bearer token, which the proxy turns into a real user of that name.
    fn token(&self) -> String {
        token_of(&self.identity)
    }

    fn signal(&self, signal: Signal) {
        kill(Pid::from_raw(self.child.id() as i32), signal).expect("signal a member");
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn token_of(identity: &str) -> String {
    format!("token-{identity}")
}

/// Three candidates of one kind on one Lease, in a namespace of their own behind the proxy.
struct Set {
    kind: Kind,
    server: FakeApiServer,
    namespace: String,
    /// A proxy-less admin client of the real server, in the set's namespace.
    admin: kube::Client,
    dir: PathBuf,
    args: Vec<String>,
    next_id: usize,
    /// The real server's address, behind each member's relay.
    upstream: std::net::SocketAddr,
    /// The signals and cuts, in order, for the timeline.
    events: Vec<SetEvent>,
    /// When each member that is gone stopped (SIGKILL: at the signal; otherwise when it had exited).
    ended: BTreeMap<String, DateTime<Utc>>,
}

/// A signal or a cut, for the timeline: what, to whom, when, and when another member's Lease write
/// followed.
struct SetEvent {
    kind: &'static str,
    member: String,
    at: DateTime<Utc>,
    takeover: Option<DateTime<Utc>>,
}

impl Set {
    async fn new(
        kind: Kind,
        server: FakeApiServer,
        dir: &Path,
        timings: &Timings,
        job_every: u64,
    ) -> Set {
        let namespace = server.namespace().to_owned();
        let real = server.real().expect("proxy mode").clone();
        let admin = real.admin_client(&namespace).await;
        let dir = dir.join(kind.key());
        fs::create_dir_all(&dir).expect("the set's directory");
        let args: Vec<String> = match kind {
            Kind::Leasecron => {
                create_jobs(&admin, &namespace, job_every).await;
                [
                    "--lease-duration",
                    timings.ld.as_str(),
                    "--renew-deadline",
                    timings.rd.as_str(),
                    "--retry-period",
                    timings.rp.as_str(),
                ]
                .map(str::to_owned)
                .to_vec()
            }
            Kind::Elector => [
                "-namespace",
                namespace.as_str(),
                "-name",
                LEASE,
                "-lease-duration",
                timings.ld.as_str(),
                "-renew-deadline",
                timings.rd.as_str(),
                "-retry-period",
                timings.rp.as_str(),
            ]
            .map(str::to_owned)
            .to_vec(),
            // NAMESPACE LEASE DURATION GRACE (after ID): the lease lasts LD, and the holder renews it
            // every RP (GRACE = LD − RP before its expiry), as the other two leaders do; the crate has no
            // renew deadline and no retry period of its own.
            Kind::LeaseManager => {
                let (ld, rp) = (whole_seconds(&timings.ld), whole_seconds(&timings.rp));
                vec![
                    namespace.clone(),
                    LEASE.to_owned(),
                    ld.to_string(),
                    ld.saturating_sub(rp).max(1).to_string(),
                ]
            }
        };
        let upstream = real
            .server()
            .trim_start_matches("https://")
            .parse()
            .expect("the real server's address");
        Set {
            kind,
            server,
            namespace,
            admin,
            dir,
            args,
            next_id: 0,
            upstream,
            events: Vec::new(),
            ended: BTreeMap::new(),
        }
    }

    /// A new member, once its user's Role (the proxy's, made on its first request) is in effect.
    async fn spawn(&mut self) -> Member {
        let identity = format!("{}{}", self.kind.prefix(), self.next_id);
        self.next_id += 1;
        let token = token_of(&identity);
        // The proxy makes the user's Role on its first request; RBAC applies it a moment later.
        let client = self.server.client(&token).await;
        let _ = Api::<Lease>::namespaced(client, &self.namespace)
            .get_opt(LEASE)
            .await;
        wait_allowed(
            &self.admin,
            &token,
            &self.namespace,
            ("coordination.k8s.io", "leases", "update", Some(LEASE)),
        )
        .await;
        // Not through the proxy: client-go reads a kubeconfig's credentials only for a TLS server
        // (clientcmd's `IsConfigTransportTLS`), so over the proxy's plain HTTP the elector would send no
        // token. Both kinds connect to the real server directly, as the user the token names.
        // Through a relay of its own, which the partition cuts.
        let real = self.server.real().expect("proxy mode");
        let relay = peers::Relay::start(self.upstream).await;
        let kubeconfig = real.kubeconfig_in_namespace(
            &real.user_kubeconfig(&token, &[]),
            &self.dir,
            &format!("kubeconfig-{identity}"),
            &self.namespace,
        );
        let text = fs::read_to_string(&kubeconfig).expect("read the kubeconfig");
        assert!(
            text.contains(real.server()),
            "the kubeconfig names the server"
        );
        fs::write(
            &kubeconfig,
            text.replace(real.server(), &format!("https://{}", relay.addr())),
        )
        .expect("write the kubeconfig");
        let log = fs::File::create(self.dir.join(format!("{identity}.log"))).expect("log");
        let mut command = match self.kind {
            Kind::Leasecron => {
                let mut command = Command::new(env!("CARGO_BIN_EXE_leasecron"));
                command
                    .args(["run", "--jobs-configmap", JOBS_CONFIG_MAP])
                    .args(["--identity", &identity, "--http-addr", "127.0.0.1:0"])
                    .args(["--log-format", "json"])
                    .env("KUBECONFIG", &kubeconfig)
                    .env("HOME", &self.dir)
                    .env_remove("POD_NAMESPACE")
                    .env_remove("POD_NAME");
                command
            }
            Kind::LeaseManager => {
                let mut command =
                    Command::new(std::env::current_exe().expect("the bench's executable"));
                command
                    .args([peers::LEASE_MANAGER_ELECTOR, &identity])
                    .env("KUBECONFIG", &kubeconfig)
                    .env("HOME", &self.dir);
                command
            }
            Kind::Elector => {
                let mut command = Command::new(real.program("elector"));
                command
                    .arg("-kubeconfig")
                    .arg(&kubeconfig)
                    .args(["-id", &identity]);
                command
            }
        };
        let child = command
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn a member");
        Member {
            identity,
            child,
            relay,
        }
    }

    /// The last lines of every member's log, for a failure's message.
    fn log_tails(&self) -> String {
        let mut out = String::new();
        for entry in fs::read_dir(&self.dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "log") {
                let text = fs::read_to_string(&path).unwrap_or_default();
                let lines: Vec<&str> = text.lines().collect();
                let tail = &lines[lines.len().saturating_sub(15)..];
                out.push_str(&format!("== {}\n{}\n", path.display(), tail.join("\n")));
            }
        }
        out
    }

    /// The Lease's holder, if any, as the real server has it.
    async fn holder(&self) -> Option<String> {
        let lease = Api::<Lease>::namespaced(self.admin.clone(), &self.namespace)
            .get_opt(LEASE)
            .await
            .ok()??;
        lease
            .spec?
            .holder_identity
            .filter(|holder| !holder.is_empty())
    }

    async fn wait_for_holder(&self) -> String {
        let start = Instant::now();
        loop {
            if let Some(holder) = self.holder().await {
                return holder;
            }
            assert!(
                start.elapsed() < PATIENCE,
                "{}: no leader\n{}",
                self.kind.label(),
                self.log_tails()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops the leader with `signal`; the times (ms) until another member's successful Lease write
    /// reached the real server, and until the old leader's own last write did (its release, if it made
    /// one). A new member replaces the old leader.
    async fn failover(
        &mut self,
        members: &mut Vec<Member>,
        signal: Signal,
        audit: &mut AuditTail,
    ) -> Failover {
        let holder = self.wait_for_holder().await;
        // Let the followers settle on the current record.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let index = members
            .iter()
            .position(|m| m.identity == holder)
            .expect("the holder is one of the set");
        let leader = members.remove(index);
        let old = leader.token();
        let sent = Utc::now();
        leader.signal(signal);
        let start = Instant::now();
        let lease_write = |e: &AuditEvent| {
            e.received > sent
                && e.namespace.as_deref() == Some(self.namespace.as_str())
                && e.resource.as_deref() == Some("leases")
                && e.name.as_deref() == Some(LEASE)
                && matches!(e.verb.as_str(), "update" | "create" | "patch")
                && e.stage == "ResponseComplete"
                && matches!(e.code, Some(200) | Some(201))
        };
        let written = loop {
            audit.poll();
            let write = audit.events.iter().find(|e| {
                lease_write(e) && e.user != old && e.user.starts_with(&token_of(self.kind.prefix()))
            });
            if let Some(write) = write {
                break write.received;
            }
            assert!(
                start.elapsed() < PATIENCE,
                "{}: nobody took over\n{}",
                self.kind.label(),
                self.log_tails()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let ms = |at: DateTime<Utc>| {
            (at - sent)
                .num_microseconds()
                .map_or(f64::NAN, |us| us as f64 / 1e3)
        };
        let released = audit
            .events
            .iter()
            .filter(|e| lease_write(e) && e.user == old && e.received <= written)
            .map(|e| e.received)
            .next_back();
        // What the set asked of the server between the signal and the takeover, with how long each took.
        let prefix = token_of(self.kind.prefix());
        let mut seen = HashSet::new();
        let trail: Vec<String> = audit
            .events
            .iter()
            .filter(|e| e.user.starts_with(&prefix) && e.received > sent && e.received <= written)
            .filter(|e| e.stage == "ResponseComplete" || e.verb == "watch")
            .filter(|e| seen.insert(e.id.clone()))
            .map(|e| {
                format!(
                    "+{:.1} {} {} {} {} ({:.1} ms)",
                    ms(e.received),
                    e.user.trim_start_matches("token-"),
                    e.verb,
                    object_class(e),
                    e.code.map_or("-".to_owned(), |c| c.to_string()),
                    (e.completed - e.received)
                        .num_microseconds()
                        .map_or(f64::NAN, |us| us as f64 / 1e3)
                )
            })
            .collect();
        println!(
            "  {} {:?} {}: takeover +{:.1} ms; the set's requests since the signal: {}",
            self.kind.label(),
            signal,
            leader.identity,
            ms(written),
            if trail.is_empty() {
                "none".to_owned()
            } else {
                trail.join(", ")
            }
        );
        // When another member believed it led (its own log): after its write, or after its second one
        // (kube-lease-manager's first write after an expiry clears the holder, its next one takes it).
        let waited = Instant::now();
        let leading = loop {
            let first = members
                .iter()
                .filter_map(|m| {
                    peers::beliefs(&self.dir.join(format!("{}.log", m.identity)))
                        .into_iter()
                        .find(|b| b.at > sent && b.leading)
                        .map(|b| b.at)
                })
                .min();
            if first.is_some() || waited.elapsed() > Duration::from_secs(20) {
                break first;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let identity = leader.identity.clone();
        drop(leader);
        self.ended.insert(
            identity.clone(),
            if signal == Signal::SIGKILL {
                sent
            } else {
                Utc::now()
            },
        );
        self.events.push(SetEvent {
            kind: if signal == Signal::SIGKILL {
                "crash"
            } else {
                "graceful"
            },
            member: identity,
            at: sent,
            takeover: Some(written),
        });
        members.push(self.spawn().await);
        Failover {
            takeover: ms(written),
            released: released.map(ms),
            leading: leading.map(ms),
        }
    }

    /// Cuts the leader off the API server (its relay: every request hangs) and watches, for up to
    /// `window`, until it stops believing it leads (its own log) and another member has written the
    /// Lease; then SIGKILLs it (a new member replaces it).
    async fn partition(
        &mut self,
        members: &mut Vec<Member>,
        window: Duration,
        audit: &mut AuditTail,
    ) -> Value {
        let holder = self.wait_for_holder().await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let index = members
            .iter()
            .position(|m| m.identity == holder)
            .expect("the holder is one of the set");
        let leader = members.remove(index);
        let old = leader.token();
        let prefix = token_of(self.kind.prefix());
        let log = |identity: &str| self.dir.join(format!("{identity}.log"));
        // It believes it leads when the cut comes: its last change of belief says so.
        let believed_before = peers::beliefs(&log(&leader.identity))
            .last()
            .is_some_and(|b| b.leading);
        let cut = Utc::now();
        leader.relay.cut();
        let start = Instant::now();
        let (mut lost, mut takeover, mut other) = (None, None, None);
        while start.elapsed() < window {
            audit.poll();
            if takeover.is_none() {
                takeover = audit
                    .events
                    .iter()
                    .find(|e| {
                        e.received > cut
                            && e.user != old
                            && e.user.starts_with(&prefix)
                            && e.namespace.as_deref() == Some(self.namespace.as_str())
                            && e.resource.as_deref() == Some("leases")
                            && e.name.as_deref() == Some(LEASE)
                            && matches!(e.verb.as_str(), "update" | "create" | "patch")
                            && e.stage == "ResponseComplete"
                            && matches!(e.code, Some(200) | Some(201))
                    })
                    .map(|e| (e.received, e.user.trim_start_matches("token-").to_owned()));
            }
            if lost.is_none() {
                lost = peers::beliefs(&log(&leader.identity))
                    .into_iter()
                    .find(|b| b.at > cut && !b.leading)
                    .map(|b| b.at);
            }
            if other.is_none() {
                other = members
                    .iter()
                    .filter_map(|m| {
                        peers::beliefs(&log(&m.identity))
                            .into_iter()
                            .find(|b| b.at > cut && b.leading)
                            .map(|b| (b.at, m.identity.clone()))
                    })
                    .min();
            }
            if lost.is_some() && takeover.is_some() && other.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let end = Utc::now();
        let ms = |at: DateTime<Utc>| {
            (at - cut)
                .num_microseconds()
                .map_or(f64::NAN, |us| us as f64 / 1e3)
        };
        // Both believed they led from the other's start until the cut-off one's end (or the window's).
        let overlap = other.as_ref().map(|(at, _)| {
            let until = lost.unwrap_or(end);
            (ms(until) - ms(*at)).max(0.0)
        });
        println!(
            "  {} partition of {} (requests hang): it believed it led for {}; another member's Lease \
             write +{}; another believed it led +{}; overlap {}",
            self.kind.label(),
            leader.identity,
            lost.map_or(
                format!("the whole {:.0} s window (still leading at the end)", window.as_secs_f64()),
                |at| format!("{:.1} ms", ms(at))
            ),
            takeover
                .as_ref()
                .map_or("never".to_owned(), |(at, who)| format!("{:.1} ms ({who})", ms(*at))),
            other
                .as_ref()
                .map_or("never".to_owned(), |(at, who)| format!("{:.1} ms ({who})", ms(*at))),
            overlap.map_or("–".to_owned(), |o| format!("{o:.1} ms")),
        );
        let identity = leader.identity.clone();
        leader.signal(Signal::SIGKILL);
        let killed = Utc::now();
        drop(leader);
        self.ended.insert(identity.clone(), killed);
        self.events.push(SetEvent {
            kind: "partition",
            member: identity.clone(),
            at: cut,
            takeover: takeover.as_ref().map(|(at, _)| *at),
        });
        members.push(self.spawn().await);
        json!({
            "member": identity,
            "believed_leading_at_cut": believed_before,
            "window_ms": window.as_secs_f64() * 1e3,
            "lost_ms": lost.map(ms),
            "still_leading_at_end": lost.is_none(),
            "takeover_ms": takeover.as_ref().map(|(at, _)| ms(*at)),
            "takeover_by": takeover.map(|(_, who)| who),
            "other_leading_ms": other.as_ref().map(|(at, _)| ms(*at)),
            "other": other.map(|(_, who)| who),
            "overlap_ms": overlap,
            "overlap_to_window_end": lost.is_none() && overlap.is_some(),
            "watched_ms": ms(end),
        })
    }

    /// Who believed it led when, from every member's log, and the signals and cuts: in ms from the
    /// set's first event less 5 s (the timeline's origin).
    fn timeline(&self, until: DateTime<Utc>) -> Value {
        let Some(first) = self.events.first() else {
            return Value::Null;
        };
        let origin = first.at - chrono::Duration::seconds(5);
        let ms = |at: DateTime<Utc>| {
            (at - origin)
                .num_microseconds()
                .map_or(f64::NAN, |us| (us as f64 / 1e2).round() / 10.0)
        };
        let mut intervals = Vec::new();
        for id in 0..self.next_id {
            let identity = format!("{}{id}", self.kind.prefix());
            let ended = self.ended.get(&identity).copied();
            let mut from: Option<DateTime<Utc>> = None;
            let mut push = |from: DateTime<Utc>, to: DateTime<Utc>, end: &str| {
                intervals.push(json!({
                    "member": identity, "from_ms": ms(from), "to_ms": ms(to), "end": end,
                }));
            };
            for belief in peers::beliefs(&self.dir.join(format!("{identity}.log"))) {
                match (from, belief.leading) {
                    (None, true) => from = Some(belief.at),
                    (Some(start), false) => {
                        push(start, belief.at, "own");
                        from = None;
                    }
                    _ => {}
                }
            }
            if let Some(start) = from {
                match ended {
                    Some(at) => push(start, at, "killed"),
                    None => push(start, until, "open"),
                }
            }
        }
        let events: Vec<Value> = self
            .events
            .iter()
            .map(|e| {
                json!({
                    "kind": e.kind, "member": e.member, "at_ms": ms(e.at),
                    "takeover_ms": e.takeover.map(ms),
                })
            })
            .collect();
        json!({
            "origin": origin.to_rfc3339(),
            "members": (0..self.next_id).map(|id| format!("{}{id}", self.kind.prefix())).collect::<Vec<_>>(),
            "intervals": intervals,
            "events": events,
        })
    }
}

/// `15s` (humantime) in whole seconds, at least 1.
fn whole_seconds(text: &str) -> u64 {
    humantime::parse_duration(text)
        .expect("a duration such as 15s")
        .as_secs()
        .max(1)
}

/// One failover, in ms from the signal.
struct Failover {
    /// Another member's first successful Lease write.
    takeover: f64,
    /// The old leader's last successful Lease write before that (its release).
    released: Option<f64>,
    /// Another member's log saying it leads.
    leading: Option<f64>,
}

/// The jobs' ConfigMap (as benches/failover.rs), created by the administrator.
async fn create_jobs(admin: &kube::Client, namespace: &str, every: u64) {
    let text = format!(
        "jobs:\n  - name: works\n    schedule: \"*/{every} * * * * *\"\n    shell: \"true\"\n  \
         - name: fails\n    schedule: \"*/{FAILING_EVERY} * * * * *\"\n    shell: \"exit 1\"\n"
    );
    let config_map = ConfigMap {
        metadata: ObjectMeta {
            name: Some(JOBS_CONFIG_MAP.to_owned()),
            ..ObjectMeta::default()
        },
        data: Some(BTreeMap::from([("jobs.yaml".to_owned(), text)])),
        ..ConfigMap::default()
    };
    Api::<ConfigMap>::namespaced(admin.clone(), namespace)
        .create(&PostParams::default(), &config_map)
        .await
        .expect("create the jobs' ConfigMap");
}

/// Waits until the authorizer lets `user` do `(group, resource, verb, name)` in `namespace`.
async fn wait_allowed(
    admin: &kube::Client,
    user: &str,
    namespace: &str,
    (group, resource, verb, name): (&str, &str, &str, Option<&str>),
) {
    let review = SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: Some(user.to_owned()),
            groups: Some(vec!["system:authenticated".into()]),
            resource_attributes: Some(ResourceAttributes {
                group: Some(group.to_owned()),
                resource: Some(resource.to_owned()),
                verb: Some(verb.to_owned()),
                namespace: Some(namespace.to_owned()),
                name: name.map(str::to_owned),
                ..ResourceAttributes::default()
            }),
            ..SubjectAccessReviewSpec::default()
        },
        ..SubjectAccessReview::default()
    };
    let reviews: Api<SubjectAccessReview> = Api::all(admin.clone());
    let start = Instant::now();
    loop {
        let answer = reviews
            .create(&PostParams::default(), &review)
            .await
            .expect("a SubjectAccessReview");
        if answer.status.is_some_and(|s| s.allowed) {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "RBAC for {user} in {namespace} did not take effect"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

// === steady state, from the audit log ===

/// Requests per minute of every member of both sets over `window`, by object and verb; RSS and CPU.
async fn steady_state(
    sets: &[Set],
    members: &[Vec<Member>],
    window: Duration,
    audit: &mut AuditTail,
) -> Value {
    let mut leaders = Vec::new();
    for set in sets {
        leaders.push(set.wait_for_holder().await);
    }
    // Start-up requests (the first GETs, the access reviews, the watches' first rounds) are not steady
    // state.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let cpu_before: Vec<Vec<f64>> = members
        .iter()
        .map(|ms| ms.iter().map(|m| scale::cpu_ms(m.child.id())).collect())
        .collect();
    let from = Utc::now();
    tokio::time::sleep(window).await;
    let to = Utc::now();
    // Every request received in the window has its first audit line written by now (blocking mode).
    tokio::time::sleep(Duration::from_millis(500)).await;
    audit.poll();
    let seconds = (to - from).num_milliseconds() as f64 / 1000.0;
    let minutes = seconds / 60.0;
    println!(
        "steady state over {seconds:.0} s: API requests per minute (audit log), by object and verb"
    );
    let mut out = serde_json::Map::new();
    for (((set, members), leader), cpu_before) in
        sets.iter().zip(members).zip(&leaders).zip(&cpu_before)
    {
        let still = set.holder().await;
        let mut replicas = Vec::new();
        for (member, cpu_before) in members.iter().zip(cpu_before) {
            let token = member.token();
            let mut seen = HashSet::new();
            // (object, verb) → (requests, of which answered ≥ 400)
            let mut by_class: BTreeMap<(String, String), (usize, usize)> = BTreeMap::new();
            for e in &audit.events {
                if e.user != token
                    || e.received < from
                    || e.received >= to
                    || e.namespace.as_deref().is_some_and(|ns| ns != set.namespace)
                    || !seen.insert(e.id.clone())
                {
                    continue;
                }
                let entry = by_class
                    .entry((object_class(e).to_owned(), e.verb.clone()))
                    .or_default();
                entry.0 += 1;
                if e.code.is_some_and(|c| c >= 400) {
                    entry.1 += 1;
                }
            }
            let role = if &member.identity == leader {
                "leader"
            } else {
                "follower"
            };
            let cpu_ms_per_s = (scale::cpu_ms(member.child.id()) - cpu_before) / seconds;
            let rss_mib = scale::rss_mib(member.child.id());
            let lines: Vec<String> = by_class
                .iter()
                .map(|((class, verb), (n, _))| format!("{class} {verb} {:.1}", *n as f64 / minutes))
                .collect();
            println!(
                "  {:<18} {:<3} {:<8} {}  RSS {rss_mib:.1} MiB, CPU {cpu_ms_per_s:.2} ms/s",
                set.kind.label(),
                member.identity,
                role,
                lines.join(", ")
            );
            let requests: Vec<Value> = by_class
                .iter()
                .map(|((class, verb), (n, errors))| {
                    json!({"object": class, "verb": verb, "count": n, "errors": errors,
                           "per_minute": *n as f64 / minutes})
                })
                .collect();
            replicas.push(json!({
                "identity": member.identity,
                "role": role,
                "requests": requests,
                "rss_mib": rss_mib,
                "cpu_ms_per_s": cpu_ms_per_s,
            }));
        }
        out.insert(
            set.kind.key().to_owned(),
            json!({
                "namespace": set.namespace,
                "leader_changed": still.as_deref() != Some(leader.as_str()),
                "replicas": replicas,
            }),
        );
    }
    out.insert("window_seconds".to_owned(), json!(seconds));
    Value::Object(out)
}

/// What the request was about, as the report groups them (as benches/failover.rs).
fn object_class(e: &AuditEvent) -> &'static str {
    match (e.resource.as_deref(), e.group.as_deref(), e.name.as_deref()) {
        (Some("leases"), _, _) => "Lease",
        (Some("configmaps"), _, Some(STATE_CONFIG_MAP)) => "state ConfigMap",
        (Some("configmaps"), _, Some(JOBS_CONFIG_MAP)) => "jobs ConfigMap",
        (Some("configmaps"), _, _) => "other ConfigMap",
        (Some("events"), Some("events.k8s.io"), _) => "Events (events.k8s.io)",
        (Some("events"), _, _) => "Events (core)",
        (Some("selfsubjectaccessreviews"), _, _) => "SelfSubjectAccessReview",
        _ => "other",
    }
}

// === part 3: the run state, fsync on and off ===

/// What part 3 measures on one server, in ms.
struct RunStateFigures {
    claim: Vec<f64>,
    claim_server: Vec<f64>,
    lag: Vec<f64>,
    /// The job every [`SPARSE_EVERY`] seconds (on the default server only).
    sparse: Vec<f64>,
}

/// Binds the Deployment's Role (deploy/core/role.yaml) to `user` in `namespace`, and waits until it is in
/// effect.
async fn bind_deployment_role(real: &RealApiServer, namespace: &str, user: &str) {
    let text = fs::read_to_string(ROLE).expect("deploy/core/role.yaml");
    let value: Value = serde_saphyr::from_str(&text).expect("the Role parses");
    let mut role: Role = serde_json::from_value(value).expect("a Role");
    role.metadata.namespace = Some(namespace.to_owned());
    let role_name = role.metadata.name.clone().expect("the Role's name");
    let admin = real.admin_client(namespace).await;
    Api::<Role>::namespaced(admin.clone(), namespace)
        .create(&PostParams::default(), &role)
        .await
        .expect("create the Role");
    let binding = RoleBinding {
        metadata: ObjectMeta {
            name: Some(role_name.clone()),
            ..ObjectMeta::default()
        },
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "Role".into(),
            name: role_name,
        },
        subjects: Some(vec![Subject {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: "User".into(),
            name: user.to_owned(),
            namespace: None,
        }]),
    };
    Api::<RoleBinding>::namespaced(admin.clone(), namespace)
        .create(&PostParams::default(), &binding)
        .await
        .expect("create the RoleBinding");
    for rule in [
        ("", "configmaps", "update", Some(STATE_CONFIG_MAP)),
        ("coordination.k8s.io", "leases", "update", Some(LEASE)),
    ] {
        wait_allowed(&admin, user, namespace, rule).await;
    }
}

/// Claim latency and start lag with the run state on `real`.
async fn run_state(
    real: &RealApiServer,
    dir: &Path,
    key: &str,
    (claims, lag_samples, sparse_samples): (usize, usize, usize),
    timings: &Timings,
) -> RunStateFigures {
    let fsync = if real.ready().etcd_fsync { "on" } else { "off" };
    // Claims, as the runner makes them, through the library.
    let namespace = real.create_namespace(&format!("bench-claim-{key}")).await;
    let user = "leasecron-claims";
    bind_deployment_role(real, &namespace, user).await;
    let kubeconfig = real.kubeconfig_in_namespace(
        &real.user_kubeconfig(user, &[]),
        dir,
        &format!("kubeconfig-claims-{key}"),
        &namespace,
    );
    let config = real::config_from(&kubeconfig, Some(&namespace)).await;
    let state = StateConfigMap::new(config, &namespace, LEASE, Duration::from_secs(10))
        .expect("a run state store");
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
    let base = Utc::now();
    let claim = |k: usize| {
        let slot = base + chrono::Duration::seconds(k as i64);
        ledger.claim("job", slot, FencingToken(1), slot, &Origin::SCHEDULE)
    };
    for k in 0..3 {
        claim(k).await.expect("a warm-up claim");
    }
    let measured_from = Utc::now();
    let mut latencies = Vec::with_capacity(claims);
    for k in 3..3 + claims {
        let started = Instant::now();
        claim(k).await.expect("a claim");
        latencies.push(started.elapsed().as_secs_f64() * 1e3);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut audit = AuditTail::new(&real.ready().audit_log);
    audit.poll();
    let server: Vec<f64> = audit
        .events
        .iter()
        .filter(|e| {
            e.user == user
                && e.namespace.as_deref() == Some(namespace.as_str())
                && e.name.as_deref() == Some(STATE_CONFIG_MAP)
                && e.verb == "update"
                && e.stage == "ResponseComplete"
                && e.received >= measured_from
        })
        .map(|e| {
            (e.completed - e.received)
                .num_microseconds()
                .map_or(f64::NAN, |us| us as f64 / 1e3)
        })
        .collect();
    print_summary(&format!("claim, etcd fsync {fsync} (client)"), &latencies);
    print_summary(
        &format!("claim, etcd fsync {fsync} (server: audit)"),
        &server,
    );

    // Start lag: `leasecron run` with a job that records its own start, every second (the run state's
    // connection never idles), then, on the default server only, every `SPARSE_EVERY` seconds (each
    // claim after seconds of quiet).
    let lags = start_lag(real, dir, key, 1, lag_samples, timings).await;
    print_summary(&format!("start lag, etcd fsync {fsync}"), &lags);
    let sparse = if real.ready().etcd_fsync && sparse_samples > 0 {
        let lags = start_lag(real, dir, "sparse", SPARSE_EVERY, sparse_samples, timings).await;
        print_summary(
            &format!("start lag, a job every {SPARSE_EVERY} s, etcd fsync {fsync}"),
            &lags,
        );
        lags
    } else {
        Vec::new()
    };
    RunStateFigures {
        claim: latencies,
        claim_server: server,
        lag: lags,
        sparse,
    }
}

/// The start lag (ms) of `samples` runs of a job every `every` seconds in a `leasecron run` on `real`,
/// as a user bound to the Deployment's Role, after the first run.
async fn start_lag(
    real: &RealApiServer,
    dir: &Path,
    key: &str,
    every: u64,
    samples: usize,
    timings: &Timings,
) -> Vec<f64> {
    let namespace = real.create_namespace(&format!("bench-lag-{key}")).await;
    let user = "leasecron-lag";
    bind_deployment_role(real, &namespace, user).await;
    let kubeconfig = real.kubeconfig_in_namespace(
        &real.user_kubeconfig(user, &[]),
        dir,
        &format!("kubeconfig-lag-{key}"),
        &namespace,
    );
    let probes = dir.join(format!("probes-{key}"));
    let jobs = dir.join(format!("lag-{key}.yaml"));
    // The start-lag bench's static probe: the lag is leasecron's, not the child's start-up.
    let probe = lag_probe::build_probe(dir);
    let schedule = if every == 1 {
        "* * * * * *".to_owned()
    } else {
        format!("*/{every} * * * * *")
    };
    fs::write(
        &jobs,
        format!(
            "jobs:\n  - name: lag\n    schedule: \"{schedule}\"\n    concurrencyPolicy: Allow\n    \
             command: [{:?}, {:?}]\n",
            probe.display().to_string(),
            probes.display().to_string()
        ),
    )
    .expect("write the jobs file");
    let log = fs::File::create(dir.join(format!("lag-{key}.log"))).expect("log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_leasecron"))
        .args(["run", "--jobs"])
        .arg(&jobs)
        .args(["--identity", "lag", "--http-addr", "127.0.0.1:0"])
        .args(["--lease-duration", &timings.ld])
        .args(["--renew-deadline", &timings.rd])
        .args(["--retry-period", &timings.rp])
        .env("KUBECONFIG", &kubeconfig)
        .env("HOME", dir)
        .env_remove("POD_NAMESPACE")
        .env_remove("POD_NAME")
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("spawn leasecron");
    let start = Instant::now();
    // Warm-up: two slots of the 1-second job, the first run of a sparser one.
    let warm_up = if every == 1 { 2 } else { 1 };
    let lags: Vec<f64> = loop {
        let lags: Vec<f64> = lag_probe::lags_every(&probes, every)
            .into_iter()
            .skip(warm_up)
            .take(samples)
            .collect();
        if lags.len() >= samples {
            break lags;
        }
        assert!(
            start.elapsed() < PATIENCE + Duration::from_secs(every * samples as u64),
            "too few runs of the lag job"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
    for _ in 0..300 {
        if matches!(child.try_wait(), Ok(Some(_))) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    lags
}

// === part 4: the build ===

/// The build of tools/kube-testenv, in seconds: the shared build when up to date, then a copy of the
/// module with an output directory of its own.
fn build_times(cold: bool) -> Value {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let tmp = tempfile::tempdir().expect("tempdir");
    let copy = tmp.path().join("tools");
    fs::create_dir_all(&copy).expect("the copy's directory");
    let status = Command::new("cp")
        .arg("-r")
        .arg(root.join("tools/kube-testenv"))
        .arg(&copy)
        .status()
        .expect("cp");
    assert!(status.success(), "copy tools/kube-testenv");
    let script = copy.join("kube-testenv/build");
    let run = |label: &str, script: &Path, env: &[(&str, &Path)]| -> f64 {
        let log = fs::File::create(tmp.path().join(format!("{label}.log"))).expect("log");
        let mut command = Command::new("bash");
        command
            .arg(script)
            .env("GOPROXY", "off")
            .env("GOTOOLCHAIN", "local")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        for (name, value) in env {
            command.env(name, value);
        }
        let started = Instant::now();
        let status = command.status().expect("run the build script");
        let seconds = started.elapsed().as_secs_f64();
        assert!(
            status.success(),
            "{label}: {} failed; see {}",
            script.display(),
            tmp.path().join(format!("{label}.log")).display()
        );
        println!("kube-testenv build, {label}: {seconds:.1} s");
        seconds
    };
    let mut out = serde_json::Map::new();
    let shared = root.join("tools/kube-testenv/build");
    out.insert(
        "up_to_date_shared".into(),
        json!(run("up to date (shared)", &shared, &[])),
    );
    let warm = tmp.path().join("warm");
    out.insert(
        "warm_empty_output".into(),
        json!(run(
            "warm cache, empty output directory",
            &script,
            &[("CARGO_TARGET_DIR", &warm)]
        )),
    );
    out.insert(
        "up_to_date".into(),
        json!(run(
            "up to date (copy)",
            &script,
            &[("CARGO_TARGET_DIR", &warm)]
        )),
    );
    let main_go = copy.join("kube-testenv/main.go");
    let mut text = fs::read_to_string(&main_go).expect("main.go");
    text.push_str(&format!(
        "\n// edited by benches/real_apiserver.rs at {}\n",
        Utc::now()
    ));
    fs::write(&main_go, text).expect("edit main.go");
    out.insert(
        "after_edit".into(),
        json!(run(
            "after an edit to main.go",
            &script,
            &[("CARGO_TARGET_DIR", &warm)]
        )),
    );
    if cold {
        let cache = tmp.path().join("gocache");
        let target = tmp.path().join("cold");
        fs::create_dir_all(&cache).expect("an empty GOCACHE");
        out.insert(
            "cold".into(),
            json!(run(
                "cold (empty GOCACHE)",
                &script,
                &[("CARGO_TARGET_DIR", &target), ("GOCACHE", &cache)]
            )),
        );
        let du = command_output("du", &["-sm", &cache.display().to_string()]);
        if let Some(mib) = du
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<f64>().ok())
        {
            out.insert("cold_cache_mib".into(), json!(mib));
        }
    }
    let bin = warm.join("kube-testenv/bin");
    let sizes: serde_json::Map<String, Value> = [
        "kube-testenv",
        "kube-apiserver",
        "kubectl",
        "leader-election",
        "elector",
    ]
    .iter()
    .filter_map(|p| {
        let bytes = fs::metadata(bin.join(p)).ok()?.len();
        Some(((*p).to_owned(), json!(bytes as f64 / 1024.0 / 1024.0)))
    })
    .collect();
    out.insert("binaries_mib".into(), Value::Object(sizes));
    Value::Object(out)
}

// === the machine, the load, the versions ===

/// The load average (1, 5, 15 min) at each part's start.
#[derive(Default)]
struct Loads(Vec<(String, [f64; 3], DateTime<Utc>)>);

impl Loads {
    fn mark(&mut self, part: &str) {
        let text = fs::read_to_string("/proc/loadavg").unwrap_or_default();
        let mut values = [0.0; 3];
        for (slot, v) in values.iter_mut().zip(text.split_whitespace()) {
            *slot = v.parse().unwrap_or(0.0);
        }
        println!(
            "[{part}] load average {:.2} {:.2} {:.2}",
            values[0], values[1], values[2]
        );
        self.0.push((part.to_owned(), values, Utc::now()));
    }

    fn json(&self) -> Value {
        Value::Array(
            self.0
                .iter()
                .map(|(part, load, at)| json!({"part": part, "load": load, "at": at.to_rfc3339()}))
                .collect(),
        )
    }
}

fn machine() -> Value {
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or("?".to_owned(), |(_, m)| m.trim().to_owned());
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    json!({
        "cpu_model": model,
        "cpus": std::thread::available_parallelism().map_or(0, |n| n.get()),
        "kernel": kernel.trim(),
    })
}

/// The version go.mod of tools/kube-testenv names after `prefix` (`k8s.io/client-go =>` reads the
/// replacement).
fn module_version(prefix: &str) -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tools/kube-testenv/go.mod");
    let text = fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .map(str::trim)
        .find_map(|l| l.strip_prefix(prefix))
        .and_then(|rest| rest.split_whitespace().last())
        .unwrap_or("?")
        .to_owned()
}

/// The version of `package` in Cargo.lock.
fn locked_version(package: &str) -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.lock");
    let text = fs::read_to_string(path).unwrap_or_default();
    let needle = format!("name = \"{package}\"\nversion = \"");
    text.split_once(&needle)
        .and_then(|(_, rest)| rest.split_once('"'))
        .map_or("?".to_owned(), |(version, _)| version.to_owned())
}

fn command_output(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

fn env_text(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

fn print_summary(name: &str, samples: &[f64]) {
    if samples.is_empty() {
        println!("{name}: no samples");
        return;
    }
    let mut ms = samples.to_vec();
    ms.sort_by(f64::total_cmp);
    let all: Vec<String> = ms.iter().map(|m| format!("{m:.0}")).collect();
    let shown = if all.len() <= 10 {
        format!("  (samples ms: {})", all.join(" "))
    } else {
        String::new()
    };
    println!(
        "{name}: min {:.1} ms, median {:.1} ms, max {:.1} ms{shown}",
        ms[0],
        ms[ms.len() / 2],
        ms[ms.len() - 1],
    );
}
