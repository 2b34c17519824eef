//! leasecron and client-go's own elector on ONE Lease of the real API server (tools/kube-testenv).
//!
//! The client-go side is client-go's leader-election example (`k8s.io/client-go/examples/leader-election`
//! at v0.37.2, built by tools/kube-testenv/build): LD 60 s, RD 15 s, RP 5 s, fixed; `ReleaseOnCancel`, so a
//! SIGTERM cancels its context and releases the Lease (holder `""`, `leaseDurationSeconds: 1`); it exits
//! when it stops leading. Its `-v=5` log says when it acquired (`Successfully acquired lease`), renewed,
//! found the Lease held by someone else (`-v=4`), failed to renew (its context is cancelled then) and
//! received the signal (its context is cancelled then too). Those moments bound the time its guarded code
//! may run: from the acquisition to the cancellation.
//!
//! The leasecron side is real `leasecron run` replicas (spawned binaries) with timings of their own; their
//! logs say when each term began (`acquired …`) and when it ended with every run (`term ended: …`).
//!
//! Every process is a client-certificate user of its own in the group [`GROUP`], bound in a namespace of
//! the test's own to the Role that `deploy/core/role.yaml` ships: what leasecron needs is also all that
//! client-go's elector needs. An observer thread watches every version of the Lease, GETs it every
//! [`SAMPLE_INTERVAL`], and asks every leasecron its `leasecron_is_leader` meanwhile.
//!
//! Without Go (no real API server) the tests say they were skipped and pass, unless
//! `LEASECRON_REAL_APISERVER=require`. The six take about 170 s one after another, about 85 s on the
//! test harness's two threads: the SIGKILL test alone waits out client-go's 60 s.
//!
//! These tests found that leasecron judged a holder's expiry by its own LD alone, never by the record's
//! `leaseDurationSeconds`: with LD 4 s it took the Lease of a live client-go holder between two of its
//! renews (5 s apart) and ran jobs while client-go's guarded code still ran (until client-go's renew
//! deadline, 15 s later, cancelled it), and took a SIGKILLed client-go holder's Lease 4 s after its last
//! renew, not 60 s. Expiry is now the longer of the two (src/election/observation.rs).

use crate::support::fake_apiserver::real as real_apiserver;
use crate::support::{logfmt, replica};

use std::fmt;
use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use chrono::{DateTime, Datelike, NaiveDate, NaiveTime, Utc};
use futures_util::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::Api;
use kube::runtime::watcher;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use real_apiserver::RealApiServer;
use replica::{
    http_request, now_ns, read_recorded_runs, recording_job, wait_for, RecordedRun, Replica,
};

/// The Lease both sides elect through (`run`'s default name; `-lease-lock-name` of client-go's).
const LEASE: &str = "leasecron";
/// The group every test user is in, bound to deploy/core/role.yaml's Role.
const GROUP: &str = "leasecron-interop";
/// client-go's example: LD.
const CLIENT_GO_LD: Duration = Duration::from_secs(60);
/// client-go's example: RP. Its follower retries every RP × (1 + up to 1.2) (`JitterFactor`).
const CLIENT_GO_RP: Duration = Duration::from_secs(5);
/// The longest gap between two attempts of a client-go follower: RP × 2.2, plus a request.
const CLIENT_GO_ATTEMPT_GAP: Duration = Duration::from_secs(12);
/// leasecron timings shorter than client-go's renew period (LD 4 s < RP 5 s): a replica that judged a
/// client-go holder's expiry by its own LD would take the Lease between two of its renews.
const SHORT: [&str; 6] = [
    "--lease-duration",
    "4s",
    "--renew-deadline",
    "2s",
    "--retry-period",
    "500ms",
];
/// leasecron timings longer than client-go's renew period: LD 10 s, RD 5 s, RP 1 s.
const ROOMY: [&str; 6] = [
    "--lease-duration",
    "10s",
    "--renew-deadline",
    "5s",
    "--retry-period",
    "1s",
];
/// LD of [`ROOMY`].
const ROOMY_LD: Duration = Duration::from_secs(10);
/// How often the observer GETs the Lease and asks every leasecron whether it leads.
const SAMPLE_INTERVAL: Duration = Duration::from_millis(100);
/// How long a test waits for something that takes a few of client-go's retry periods at most.
const WAIT: Duration = Duration::from_secs(40);

// === The test's namespace and users ===

/// A namespace of the test's own on the real server, with the Role bound to [`GROUP`]; a temporary
/// directory for kubeconfigs, jobs and logs (kept, with its path printed, if the test fails).
struct Env {
    real: Arc<RealApiServer>,
    namespace: String,
    dir: Option<tempfile::TempDir>,
}

impl Env {
    /// `None` (the test returns) if the real server is unavailable and not required.
    fn start(test: &str) -> Option<Env> {
        let real = real_apiserver::shared()?;
        let namespace = real.create_namespace_blocking(test);
        let dir = tempfile::Builder::new()
            .prefix("leasecron-client-go-")
            .tempdir()
            .expect("a temporary directory");
        let env = Env {
            real,
            namespace,
            dir: Some(dir),
        };
        let role = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/core/role.yaml");
        env.kubectl(&["apply", "-f", role.to_str().expect("a UTF-8 path")]);
        env.kubectl(&[
            "create",
            "rolebinding",
            "leasecron",
            "--role=leasecron",
            &format!("--group={GROUP}"),
        ]);
        // RBAC reads Roles through an informer: wait until the authorizer applies the binding.
        wait_for(Duration::from_secs(30), || {
            env.kubectl_status(&[
                "auth",
                "can-i",
                "update",
                &format!("leases/{LEASE}"),
                "--as=probe",
                &format!("--as-group={GROUP}"),
            ])
            .success()
            .then_some(())
        })
        .expect("the Role binding applies");
        Some(env)
    }

    fn dir(&self) -> &Path {
        self.dir.as_ref().expect("the directory").path()
    }

    fn kubectl_command(&self, args: &[&str]) -> Command {
        self.real.kubectl_command(&self.namespace, args)
    }

    fn kubectl(&self, args: &[&str]) {
        self.real.kubectl(&self.namespace, args);
    }

    fn kubectl_status(&self, args: &[&str]) -> ExitStatus {
        self.kubectl_command(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("run kubectl")
    }

    /// The kubeconfig of user `name` (in [`GROUP`]), its context's namespace the test's.
    fn kubeconfig(&self, name: &str) -> PathBuf {
        let user = self.real.user_kubeconfig(name, &[GROUP]);
        self.real.kubeconfig_in_namespace(
            &user,
            self.dir(),
            &format!("{name}.kubeconfig"),
            &self.namespace,
        )
    }

    /// Starts client-go's elector as `identity`.
    fn client_go(&self, identity: &str) -> ClientGo {
        let kubeconfig = self.kubeconfig(identity);
        let log = self.dir().join(format!("{identity}.log"));
        let file = fs::File::create(&log).expect("create a log");
        let child = Command::new(self.real.program("leader-election"))
            .arg("-kubeconfig")
            .arg(&kubeconfig)
            .args(["-id", identity, "-lease-lock-name", LEASE])
            .args(["-lease-lock-namespace", &self.namespace, "-v=5"])
            // klog stamps its lines in local time: UTC, to read them on the jobs' clock.
            .env("TZ", "UTC")
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("dup a log"))
            .stderr(file)
            .spawn()
            .expect("start client-go's leader-election example");
        ClientGo {
            identity: identity.to_owned(),
            child,
            log,
            killed_ns: None,
        }
    }

    /// Starts `leasecron run` as `identity` with the jobs file `jobs` and the lease timings `timings`.
    fn leasecron(&self, identity: &str, jobs: &Path, timings: &[&str]) -> Leasecron {
        let kubeconfig = self.kubeconfig(identity);
        Leasecron {
            replica: Replica::start_on_kube(self.dir(), identity, jobs, &kubeconfig, timings),
        }
    }

    /// A jobs file whose one job does nothing (hourly), with a grace every timing here allows.
    fn idle_jobs(&self) -> PathBuf {
        let path = self.dir().join("idle.yaml");
        fs::write(
            &path,
            "jobs:\n  - name: idle\n    schedule: \"@hourly\"\n    terminationGrace: 500ms\n    command: [\"true\"]\n",
        )
        .expect("write a jobs file");
        path
    }

    /// The Lease now (an admin GET).
    fn lease(&self) -> Option<Lease> {
        let namespace = self.namespace.clone();
        self.real.with_admin(move |admin| async move {
            Api::<Lease>::namespaced(admin, &namespace)
                .get_opt(LEASE)
                .await
                .expect("GET the Lease")
        })
    }

    /// Starts the observer of this namespace's Lease.
    fn observe(&self) -> Observer {
        Observer::start(self.real.admin_kubeconfig().to_path_buf(), &self.namespace)
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        if std::thread::panicking() {
            if let Some(dir) = self.dir.take() {
                eprintln!(
                    "the kubeconfigs, jobs and logs of this test are kept in {} (namespace {})",
                    dir.keep().display(),
                    self.namespace
                );
            }
        }
    }
}

// === client-go's elector ===

/// What client-go's elector logged, by kind.
#[derive(Clone, Debug, PartialEq, Eq)]
enum GoKind {
    /// `Successfully acquired lease`: its update of the Lease succeeded; its guarded code starts.
    Acquired,
    /// `Successfully renewed lease` (`-v=5`).
    Renewed,
    /// `Lease is held by and has not yet expired` (`-v=4`): an attempt that found another live holder.
    HeldBy(String),
    /// `Failed to renew lease`: its renew deadline passed; its context is cancelled.
    RenewFailed,
    /// `Received termination, signaling shutdown`: its context is cancelled (then it releases).
    Terminating,
    /// `Leader lost`: `OnStoppedLeading`, after the release; it exits.
    Stopped,
    /// `New leader elected`: it saw another holder.
    NewLeader(String),
}

/// One line of client-go's log that matters here, with klog's timestamp.
#[derive(Clone, Debug)]
struct GoEvent {
    at_ns: u128,
    kind: GoKind,
}

/// client-go's leader-election example, running; SIGKILLed on drop.
struct ClientGo {
    identity: String,
    child: Child,
    log: PathBuf,
    /// When the test SIGKILLed it.
    killed_ns: Option<u128>,
}

impl ClientGo {
    fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// What it logged so far.
    fn events(&self) -> Vec<GoEvent> {
        self.log_text().lines().filter_map(parse_klog).collect()
    }

    /// The first event of `kind` within `limit`, waiting for it.
    fn wait(&self, limit: Duration, what: &str, matches: impl Fn(&GoKind) -> bool) -> GoEvent {
        wait_for(limit, || {
            self.events().into_iter().find(|e| matches(&e.kind))
        })
        .unwrap_or_else(|| {
            panic!(
                "client-go {}: no {what} within {limit:?}; its log:\n{}",
                self.identity,
                self.log_text()
            )
        })
    }

    fn acquired(&self) -> Option<GoEvent> {
        self.events()
            .into_iter()
            .find(|e| e.kind == GoKind::Acquired)
    }

    /// SIGTERM: it cancels its context, releases the Lease if it holds it, and exits 0.
    fn terminate(&mut self) {
        kill(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM).expect("SIGTERM client-go");
        let status = self.wait_exit(Duration::from_secs(30));
        assert!(
            status.is_some_and(|s| s.success()),
            "client-go {} exits 0 after SIGTERM ({status:?}); its log:\n{}",
            self.identity,
            self.log_text()
        );
    }

    /// SIGKILL: no release.
    fn kill(&mut self) {
        let _ = self.child.kill();
        self.killed_ns = Some(now_ns());
        let _ = self.child.wait();
    }

    fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        wait_for(limit, || self.child.try_wait().expect("try_wait"))
    }

    /// The span in which its guarded code could run: from its acquisition to the cancellation of its
    /// context (renew deadline or signal), or its SIGKILL, or `until` if it still leads.
    fn terms(&self, until: u128) -> Vec<Term> {
        let events = self.events();
        let Some(start) = events.iter().find(|e| e.kind == GoKind::Acquired) else {
            return Vec::new();
        };
        let end = events
            .iter()
            .find(|e| {
                e.at_ns >= start.at_ns
                    && matches!(e.kind, GoKind::RenewFailed | GoKind::Terminating)
            })
            .map(|e| e.at_ns)
            .or(self.killed_ns)
            .unwrap_or(until);
        vec![Term {
            who: self.identity.clone(),
            client_go: true,
            token: None,
            start_ns: start.at_ns,
            end_ns: end,
        }]
    }
}

impl Drop for ClientGo {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A klog line `I1206 00:45:53.729082   18896 leaderelection.go:272] "Successfully acquired lease" …`
/// (stamped in UTC: the process runs with `TZ=UTC`), if it is one of [`GoKind`].
fn parse_klog(line: &str) -> Option<GoEvent> {
    let (header, rest) = line.split_once("] ")?;
    let mut fields = header.split_whitespace();
    let date = fields.next()?.get(1..)?;
    let time = fields.next()?;
    let (month, day) = (date.get(..2)?.parse().ok()?, date.get(2..4)?.parse().ok()?);
    let date = NaiveDate::from_ymd_opt(Utc::now().year(), month, day)?;
    let time = NaiveTime::parse_from_str(time, "%H:%M:%S%.f").ok()?;
    let at_ns = date.and_time(time).and_utc().timestamp_nanos_opt()? as u128;
    let message = rest.strip_prefix('"')?.split('"').next()?;
    let value = |key: &str| {
        rest.split(&format!(" {key}=\""))
            .nth(1)
            .and_then(|v| v.split('"').next())
            .unwrap_or_default()
            .to_owned()
    };
    let kind = match message {
        "Successfully acquired lease" => GoKind::Acquired,
        "Successfully renewed lease" => GoKind::Renewed,
        "Lease is held by and has not yet expired" => GoKind::HeldBy(value("holder")),
        "Failed to renew lease" => GoKind::RenewFailed,
        "Received termination, signaling shutdown" => GoKind::Terminating,
        "Leader lost" => GoKind::Stopped,
        "New leader elected" => GoKind::NewLeader(value("identity")),
        _ => return None,
    };
    Some(GoEvent { at_ns, kind })
}

// === leasecron ===

/// A `leasecron run` replica.
struct Leasecron {
    replica: Replica,
}

/// One line of leasecron's election log: a term's start (`acquired …`) or end (`term ended: …`).
#[derive(Clone, Debug)]
struct LcEvent {
    at_ns: u128,
    token: u64,
    acquired: bool,
    message: String,
}

impl Leasecron {
    fn identity(&self) -> &str {
        &self.replica.identity
    }

    /// Its terms' starts and ends, from its log.
    fn events(&self) -> Vec<LcEvent> {
        self.replica
            .log_text()
            .lines()
            .filter_map(|line| {
                let line = logfmt::parse(line).ok()?;
                let message = line.msg();
                let acquired = message.starts_with("acquired");
                if !acquired && !message.starts_with("term ended") {
                    return None;
                }
                let at = DateTime::parse_from_rfc3339(line.get("ts")?).ok()?;
                Some(LcEvent {
                    at_ns: at.timestamp_nanos_opt()? as u128,
                    token: line.get("fencing_token")?.parse().ok()?,
                    acquired,
                    message: message.to_owned(),
                })
            })
            .collect()
    }

    /// Its acquisitions so far.
    fn acquisitions(&self) -> Vec<LcEvent> {
        self.events().into_iter().filter(|e| e.acquired).collect()
    }

    /// Waits for an acquisition whose message contains `what`.
    fn wait_acquired(&self, limit: Duration, what: &str) -> LcEvent {
        wait_for(limit, || {
            self.acquisitions()
                .into_iter()
                .find(|e| e.message.contains(what))
        })
        .unwrap_or_else(|| {
            panic!(
                "leasecron {}: no acquisition ({what}) within {limit:?}; its log:\n{}",
                self.identity(),
                self.replica.log_text()
            )
        })
    }

    /// Waits until its `/status` names `holder` as the holder it follows.
    fn wait_following(&self, holder: &str) {
        wait_for(WAIT, || {
            self.replica
                .status()
                .filter(|s| s["holder"] == holder && s["leading"] == false)
        })
        .unwrap_or_else(|| {
            panic!(
                "leasecron {} does not follow {holder}; its log:\n{}",
                self.identity(),
                self.replica.log_text()
            )
        });
    }

    /// Its terms: from each acquisition to the end of that term with its runs, or `until` if it still
    /// leads.
    fn terms(&self, until: u128) -> Vec<Term> {
        let events = self.events();
        events
            .iter()
            .filter(|e| e.acquired)
            .map(|start| {
                let end = events
                    .iter()
                    .find(|e| !e.acquired && e.token == start.token && e.at_ns >= start.at_ns)
                    .map_or(until, |e| e.at_ns);
                Term {
                    who: self.identity().to_owned(),
                    client_go: false,
                    token: Some(start.token),
                    start_ns: start.at_ns,
                    end_ns: end,
                }
            })
            .collect()
    }
}

// === What the processes said, and what the Lease said ===

/// A span in which one process led by its own account (its guarded code could run).
#[derive(Clone, Debug)]
struct Term {
    who: String,
    client_go: bool,
    /// leasecron's fencing token.
    token: Option<u64>,
    start_ns: u128,
    end_ns: u128,
}

impl fmt::Display for Term {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}{} from {} to {}",
            if self.client_go {
                "client-go"
            } else {
                "leasecron"
            },
            self.who,
            self.token
                .map_or(String::new(), |t| format!(" (token {t})")),
            clock(self.start_ns),
            clock(self.end_ns)
        )
    }
}

/// One version of the Lease as the observer's watch delivered it.
#[derive(Clone, Debug)]
struct Version {
    received_ns: u128,
    resource_version: String,
    holder: Option<String>,
    duration: Option<i32>,
    transitions: Option<i32>,
}

impl Version {
    fn of(lease: &Lease, received_ns: u128) -> Version {
        let spec = lease.spec.clone().unwrap_or_default();
        Version {
            received_ns,
            resource_version: lease.metadata.resource_version.clone().unwrap_or_default(),
            holder: spec.holder_identity.filter(|h| !h.is_empty()),
            duration: spec.lease_duration_seconds,
            transitions: spec.lease_transitions,
        }
    }
}

/// One look, sent and answered at these instants: the Lease named `holder`, or leasecron `who` said it
/// leads.
#[derive(Clone, Debug)]
enum Sample {
    Lease {
        sent_ns: u128,
        received_ns: u128,
        holder: Option<String>,
    },
    Leads {
        sent_ns: u128,
        received_ns: u128,
        who: String,
    },
}

/// What the observer saw.
#[derive(Clone, Debug, Default)]
struct Seen {
    versions: Vec<Version>,
    samples: Vec<Sample>,
}

/// Watches every version of the Lease (on a thread of its own), and GETs it and asks every registered
/// leasecron whether it leads every [`SAMPLE_INTERVAL`] (on another).
struct Observer {
    stop: Arc<AtomicBool>,
    replicas: Arc<Mutex<Vec<(String, SocketAddr)>>>,
    seen: Arc<Mutex<Seen>>,
    threads: Vec<JoinHandle<()>>,
}

impl Observer {
    fn start(admin: PathBuf, namespace: &str) -> Observer {
        let stop = Arc::new(AtomicBool::new(false));
        let replicas = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::new(Mutex::new(Seen::default()));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let watch = {
            let (stop, seen, admin) = (stop.clone(), seen.clone(), admin.clone());
            let namespace = namespace.to_owned();
            std::thread::spawn(move || {
                on_runtime_of_its_own(async move {
                    let client = real_apiserver::client_from(&admin, Some(&namespace)).await;
                    let leases = Api::namespaced(client, &namespace);
                    watch_versions(leases, &seen, &stop, ready_tx).await;
                });
            })
        };
        let samples = {
            let (stop, replicas, seen) = (stop.clone(), replicas.clone(), seen.clone());
            let namespace = namespace.to_owned();
            std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a runtime for the observer");
                let client =
                    runtime.block_on(real_apiserver::client_from(&admin, Some(&namespace)));
                let leases: Api<Lease> = Api::namespaced(client, &namespace);
                while !stop.load(Ordering::Relaxed) {
                    sample(&runtime, &leases, &replicas, &seen);
                    std::thread::sleep(SAMPLE_INTERVAL);
                }
            })
        };
        ready_rx
            .recv_timeout(WAIT)
            .expect("the observer's watch of the Lease starts");
        Observer {
            stop,
            replicas,
            seen,
            threads: vec![watch, samples],
        }
    }

    /// Asks `replica` whether it leads at every sample from now on (once it serves HTTP).
    fn add(&self, replica: &Leasecron) {
        let addr = wait_for(WAIT, || replica.replica.http_addr()).unwrap_or_else(|| {
            panic!(
                "leasecron {} serves HTTP; its log:\n{}",
                replica.identity(),
                replica.replica.log_text()
            )
        });
        lock(&self.replicas).push((replica.identity().to_owned(), addr));
    }

    fn seen(&self) -> Seen {
        lock(&self.seen).clone()
    }

    /// The versions seen so far.
    fn versions(&self) -> Vec<Version> {
        lock(&self.seen).versions.clone()
    }

    /// Waits until the watch delivered a version that `matches`.
    fn wait_version(
        &self,
        limit: Duration,
        what: &str,
        matches: impl Fn(&Version) -> bool,
    ) -> Version {
        wait_for(limit, || self.versions().into_iter().find(|v| matches(v))).unwrap_or_else(|| {
            panic!(
                "no version of the Lease {what} within {limit:?}:\n  {}",
                versions_text(&self.versions())
            )
        })
    }

    fn finish(mut self) -> Seen {
        self.halt();
        self.seen()
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

impl Drop for Observer {
    fn drop(&mut self) {
        self.halt();
    }
}

fn on_runtime_of_its_own(future: impl std::future::Future<Output = ()>) {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime for the observer")
        .block_on(future);
}

/// Records every version of the Lease the watch delivers (re-listing when it must) until `stop`; says
/// when its first listing is done.
async fn watch_versions(
    leases: Api<Lease>,
    seen: &Mutex<Seen>,
    stop: &AtomicBool,
    ready: std::sync::mpsc::Sender<()>,
) {
    let config = watcher::Config::default().fields(&format!("metadata.name={LEASE}"));
    let mut stream = watcher::watcher(leases, config).boxed();
    while !stop.load(Ordering::Relaxed) {
        let event = match tokio::time::timeout(Duration::from_millis(200), stream.next()).await {
            Err(_quiet) => continue,
            Ok(None) => return,
            Ok(Some(event)) => event,
        };
        match event {
            Ok(watcher::Event::Apply(lease) | watcher::Event::InitApply(lease)) => {
                let version = Version::of(&lease, now_ns());
                let mut seen = lock(seen);
                let known = seen
                    .versions
                    .last()
                    .is_some_and(|v| v.resource_version == version.resource_version);
                if !known {
                    seen.versions.push(version);
                }
            }
            Ok(watcher::Event::InitDone) => {
                let _ = ready.send(());
            }
            Ok(_) => {}
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// One round of samples: the Lease, then every leasecron's `leasecron_is_leader`.
fn sample(
    runtime: &tokio::runtime::Runtime,
    leases: &Api<Lease>,
    replicas: &Mutex<Vec<(String, SocketAddr)>>,
    seen: &Mutex<Seen>,
) {
    let sent_ns = now_ns();
    let got = runtime.block_on(async {
        tokio::time::timeout(Duration::from_secs(5), leases.get_opt(LEASE)).await
    });
    let received_ns = now_ns();
    if let Ok(Ok(lease)) = got {
        let holder = lease.and_then(|l| l.spec?.holder_identity.filter(|h| !h.is_empty()));
        lock(seen).samples.push(Sample::Lease {
            sent_ns,
            received_ns,
            holder,
        });
    }
    let replicas = lock(replicas).clone();
    for (who, addr) in replicas {
        let sent_ns = now_ns();
        let Some(response) = http_request(addr, "/metrics") else {
            continue;
        };
        let received_ns = now_ns();
        let leads = response
            .body
            .lines()
            .any(|l| l.trim() == "leasecron_is_leader 1");
        if leads {
            lock(seen).samples.push(Sample::Leads {
                sent_ns,
                received_ns,
                who,
            });
        }
    }
}

/// Everything that says two processes led at once:
///
/// - two processes' terms (each by its own account: [`ClientGo::terms`], [`Leasecron::terms`]) overlap;
/// - a look at the Lease (a GET, sent and answered within a process's term) named another holder or none;
/// - a leasecron said it leads (`leasecron_is_leader 1`, asked and answered within another process's
///   term).
fn two_leaders(terms: &[Term], seen: &Seen) -> Vec<String> {
    let mut violations = Vec::new();
    for (i, a) in terms.iter().enumerate() {
        for b in &terms[i + 1..] {
            if a.who != b.who && a.start_ns < b.end_ns && b.start_ns < a.end_ns {
                violations.push(format!("two leaders: {a} and {b}"));
            }
        }
    }
    for sample in &seen.samples {
        let (sent_ns, received_ns, claim) = match sample {
            Sample::Lease {
                sent_ns,
                received_ns,
                holder,
            } => (*sent_ns, *received_ns, holder.as_deref()),
            Sample::Leads {
                sent_ns,
                received_ns,
                who,
            } => (*sent_ns, *received_ns, Some(who.as_str())),
        };
        for term in terms {
            if claim != Some(term.who.as_str())
                && term.start_ns <= sent_ns
                && received_ns <= term.end_ns
            {
                let what = match sample {
                    Sample::Lease { .. } => format!(
                        "the Lease named {} (GET at {})",
                        claim.unwrap_or("no holder"),
                        clock(received_ns)
                    ),
                    Sample::Leads { .. } => format!(
                        "leasecron {} said it leads (at {})",
                        claim.unwrap_or_default(),
                        clock(received_ns)
                    ),
                };
                violations.push(format!("{what} within the term of {term}"));
                break;
            }
        }
    }
    violations
}

/// Asserts [`two_leaders`] finds nothing, listing every term and the Lease's versions if it does.
fn assert_one_leader(terms: &[Term], seen: &Seen) {
    let violations = two_leaders(terms, seen);
    assert!(
        violations.is_empty(),
        "{} violations, the first: {}\nterms:\n  {}\nLease versions:\n  {}",
        violations.len(),
        violations
            .iter()
            .take(5)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n"),
        terms_text(terms),
        versions_text(&seen.versions)
    );
}

/// Every term of `goes` and `crons`, by start.
fn all_terms(goes: &[&ClientGo], crons: &[&Leasecron]) -> Vec<Term> {
    let until = now_ns();
    let mut terms: Vec<Term> = goes
        .iter()
        .flat_map(|g| g.terms(until))
        .chain(crons.iter().flat_map(|c| c.terms(until)))
        .collect();
    terms.sort_by_key(|t| t.start_ns);
    terms
}

fn terms_text(terms: &[Term]) -> String {
    terms
        .iter()
        .map(Term::to_string)
        .collect::<Vec<_>>()
        .join("\n  ")
}

fn runs_text(runs: &[&RecordedRun]) -> String {
    runs.iter()
        .map(|r| {
            format!(
                "{} (token {}) ran slot {} from {} to {}",
                r.identity,
                r.token,
                r.slot,
                clock(r.start_ns),
                r.end_ns.map_or("-".to_owned(), clock)
            )
        })
        .collect::<Vec<_>>()
        .join("\n  ")
}

fn versions_text(versions: &[Version]) -> String {
    versions
        .iter()
        .map(|v| {
            format!(
                "{} rv {} holder {:?} duration {:?} transitions {:?}",
                clock(v.received_ns),
                v.resource_version,
                v.holder,
                v.duration,
                v.transitions
            )
        })
        .collect::<Vec<_>>()
        .join("\n  ")
}

/// A wall-clock instant as `HH:MM:SS.mmm`.
fn clock(ns: u128) -> String {
    DateTime::<Utc>::from_timestamp_nanos(ns as i64)
        .format("%H:%M:%S%.3f")
        .to_string()
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

// === The tests ===

/// client-go's and leasecron's electors hand one Lease over to each other (client-go releases to
/// leasecron, leasecron to leasecron, leasecron to client-go) while a second of each kind contends: by
/// every process's own account, and by every look at the Lease and at each leasecron, no two lead at
/// once. leasecron runs with LD 4 s, shorter than client-go's renew period (5 s): the Lease it follows says
/// 60 s. About 40 s.
#[test]
fn at_every_moment_at_most_one_of_client_go_and_leasecron_leads() {
    let Some(env) = Env::start("cgo-one-leader") else {
        return;
    };
    let observer = env.observe();
    let mut cgo1 = env.client_go("cgo-1");
    cgo1.wait(WAIT, "acquisition", |k| *k == GoKind::Acquired);
    let jobs = env.idle_jobs();
    let mut crons = vec![
        env.leasecron("lc-a", &jobs, &SHORT),
        env.leasecron("lc-b", &jobs, &SHORT),
    ];
    for cron in &crons {
        observer.add(cron);
    }
    let mut cgo2 = env.client_go("cgo-2");
    // Three of client-go's renews, and several of leasecron's LDs: a leasecron that judged the client-go
    // holder's expiry by its own LD would take the Lease here.
    std::thread::sleep(3 * CLIENT_GO_RP);
    assert_one_leader(
        &all_terms(&[&cgo1, &cgo2], &crons.iter().collect::<Vec<_>>()),
        &observer.seen(),
    );

    // client-go releases: a leasecron takes the Lease.
    cgo1.terminate();
    let first = wait_for(WAIT, || {
        crons.iter().position(|c| {
            c.acquisitions()
                .iter()
                .any(|e| e.message.contains("from cgo-1"))
        })
    })
    .expect("a leasecron takes the Lease client-go released");
    std::thread::sleep(Duration::from_secs(3));
    // That leasecron releases: the other takes it.
    crons[first].replica.stop_cleanly();
    let second = 1 - first;
    let from_first = format!("acquired from {}", crons[first].identity());
    crons[second].wait_acquired(WAIT, &from_first);
    std::thread::sleep(Duration::from_secs(3));
    // The last leasecron releases: client-go takes it at its next attempt.
    crons[second].replica.stop_cleanly();
    cgo2.wait(CLIENT_GO_ATTEMPT_GAP + WAIT, "acquisition", |k| {
        *k == GoKind::Acquired
    });
    std::thread::sleep(CLIENT_GO_RP + Duration::from_secs(1));
    cgo2.terminate();

    let terms = all_terms(&[&cgo1, &cgo2], &crons.iter().collect::<Vec<_>>());
    let seen = observer.finish();
    let leaders: Vec<&str> = terms.iter().map(|t| t.who.as_str()).collect();
    assert_eq!(
        leaders,
        [
            "cgo-1",
            crons[first].identity(),
            crons[second].identity(),
            "cgo-2"
        ],
        "the handovers:\n  {}",
        terms_text(&terms)
    );
    let mut holders: Vec<&str> = seen
        .versions
        .iter()
        .filter_map(|v| v.holder.as_deref())
        .collect();
    holders.dedup();
    assert_eq!(holders, leaders, "the Lease named each leader in turn");
    assert_one_leader(&terms, &seen);
}

/// While client-go holds the Lease (and renews it every 5 s, 60 s LD), leasecron followers with LD 4 s
/// run nothing; once it releases, one of them runs the every-second job. About 22 s.
#[test]
fn leasecron_runs_nothing_while_client_go_holds_the_lease() {
    let Some(env) = Env::start("cgo-runs-nothing") else {
        return;
    };
    let observer = env.observe();
    let mut cgo = env.client_go("cgo-1");
    cgo.wait(WAIT, "acquisition", |k| *k == GoKind::Acquired);
    let runs = env.dir().join("runs");
    let jobs = recording_job(env.dir(), &runs);
    let mut crons = vec![
        env.leasecron("lc-a", &jobs, &SHORT),
        env.leasecron("lc-b", &jobs, &SHORT),
    ];
    for cron in &crons {
        observer.add(cron);
        cron.wait_following("cgo-1");
    }
    std::thread::sleep(3 * CLIENT_GO_RP);
    let while_held = read_recorded_runs(&runs);
    cgo.terminate();
    let all = wait_for(WAIT, || {
        let all = read_recorded_runs(&runs);
        (all.iter().filter(|r| r.end_ns.is_some()).count() >= 2).then_some(all)
    })
    .unwrap_or_else(|| {
        panic!(
            "a leasecron runs the job once client-go released: {:?}",
            read_recorded_runs(&runs)
        )
    });
    for cron in &mut crons {
        cron.replica.stop_cleanly();
    }
    let terms = all_terms(&[&cgo], &crons.iter().collect::<Vec<_>>());
    let seen = observer.finish();
    let cgo_term = cgo.terms(now_ns()).remove(0);
    let inside: Vec<&RecordedRun> = all
        .iter()
        .filter(|r| r.start_ns <= cgo_term.end_ns)
        .collect();
    assert!(
        while_held.is_empty() && inside.is_empty(),
        "leasecron ran the job while {cgo_term} led:\n  {}\nterms:\n  {}\nLease versions:\n  {}",
        runs_text(&inside),
        terms_text(&terms),
        versions_text(&seen.versions)
    );
    assert!(
        all.iter().all(|r| terms
            .iter()
            .any(|t| t.who == r.identity && t.token == Some(r.token))),
        "every run belongs to a leasecron term:\n  {}\nterms:\n  {}",
        runs_text(&all.iter().collect::<Vec<_>>()),
        terms_text(&terms)
    );
    assert_one_leader(&terms, &seen);
}

/// client-go's release (holder `""`, `leaseDurationSeconds: 1`) is taken by a leasecron follower at
/// once (its watch wakes it), not after an LD (10 s here). About 5 s.
#[test]
fn a_client_go_release_is_taken_over_by_leasecron_at_once() {
    let Some(env) = Env::start("cgo-release") else {
        return;
    };
    let observer = env.observe();
    let mut cgo = env.client_go("cgo-1");
    cgo.wait(WAIT, "acquisition", |k| *k == GoKind::Acquired);
    let cron = env.leasecron("lc-a", &env.idle_jobs(), &ROOMY);
    observer.add(&cron);
    cron.wait_following("cgo-1");
    std::thread::sleep(Duration::from_secs(1));
    cgo.terminate();
    let acquired = cron.wait_acquired(ROOMY_LD + WAIT, "acquired from cgo-1");
    let terminating = cgo.wait(WAIT, "termination", |k| *k == GoKind::Terminating);
    let taken = observer.wait_version(WAIT, "held by lc-a", |v| {
        v.holder.as_deref() == Some("lc-a")
    });
    let versions = observer.versions();
    let released = versions
        .iter()
        .position(|v| v.holder.is_none())
        .unwrap_or_else(|| panic!("client-go's release: {}", versions_text(&versions)));
    let (held, free) = (&versions[released - 1], &versions[released]);
    assert_eq!(held.holder.as_deref(), Some("cgo-1"));
    assert_eq!(
        (free.duration, free.transitions),
        (Some(1), held.transitions),
        "client-go releases with leaseDurationSeconds 1, its leaseTransitions unchanged"
    );
    assert_eq!(
        versions[released + 1].resource_version,
        taken.resource_version,
        "leasecron's acquisition is the next write: {}",
        versions_text(&versions)
    );
    assert_eq!(
        acquired.message, "acquired from cgo-1: released",
        "leasecron took the Lease because it was released"
    );
    let waited = Duration::from_nanos((acquired.at_ns - terminating.at_ns) as u64);
    assert!(
        waited < ROOMY_LD / 2,
        "leasecron took the released Lease {waited:?} after client-go began releasing it: it waited \
         for an expiry (LD {ROOMY_LD:?})"
    );
    assert_eq!(
        (taken.duration, taken.transitions),
        (Some(10), free.transitions.map(|t| t + 1)),
        "leasecron's record: its own LD, one more transition"
    );
    assert_eq!(taken.transitions.map(|t| t as u64), Some(acquired.token));
}

/// A client-go holder that dies without releasing (SIGKILL) left a Lease that says 60 s: leasecron (LD
/// 4 s) takes it only 60 s after it last saw it renewed — not after its own LD — and then at once.
/// About 65 s: the slowest test here.
#[test]
fn a_sigkilled_client_go_holder_is_taken_over_only_after_its_lease_duration() {
    let Some(env) = Env::start("cgo-sigkill") else {
        return;
    };
    let observer = env.observe();
    let mut cgo = env.client_go("cgo-1");
    cgo.wait(WAIT, "acquisition", |k| *k == GoKind::Acquired);
    let mut cron = env.leasecron("lc-a", &env.idle_jobs(), &SHORT);
    observer.add(&cron);
    cron.wait_following("cgo-1");
    // leasecron follows it: kill it (a request it had sent may still land: wait a moment).
    cgo.kill();
    let killed_ns = cgo.killed_ns.expect("killed");
    std::thread::sleep(Duration::from_millis(500));
    let last = env.lease().expect("the Lease");
    let spec = last.spec.expect("a spec");
    assert_eq!(
        spec.holder_identity.as_deref(),
        Some("cgo-1"),
        "leasecron took the Lease from client-go while it was alive: {:?}",
        cron.acquisitions()
    );
    assert_eq!(spec.lease_duration_seconds, Some(60));
    let renewed_ns = spec.renew_time.expect("a renewTime").0.as_nanosecond() as u128;

    let acquired = cron.wait_acquired(CLIENT_GO_LD + WAIT, "acquired from cgo-1");
    let after = Duration::from_nanos((acquired.at_ns - renewed_ns) as u64);
    assert!(
        acquired.at_ns >= renewed_ns + CLIENT_GO_LD.as_nanos(),
        "leasecron took the SIGKILLed client-go holder's Lease {after:?} after its last renew \
         (killed at {}), before the 60 s its record says: {:?}",
        clock(killed_ns),
        acquired.message
    );
    let unchanged: f64 = acquired
        .message
        .split("expired after ")
        .nth(1)
        .and_then(|s| s.trim_end_matches(" s").parse().ok())
        .unwrap_or_else(|| panic!("an expiry: {:?}", acquired.message));
    assert!(
        unchanged >= CLIENT_GO_LD.as_secs_f64(),
        "leasecron's own account: the record was unchanged for {unchanged} s"
    );
    let taken = observer.wait_version(WAIT, "held by lc-a", |v| {
        v.holder.as_deref() == Some("lc-a")
    });
    assert_eq!(taken.transitions.map(|t| t as u64), Some(acquired.token));
    cron.replica.stop_cleanly();
    assert_one_leader(&all_terms(&[&cgo], &[&cron]), &observer.finish());
}

/// A leasecron leader renews every RP (500 ms) a record that says LD 4 s; client-go followers, trying
/// every 5–11 s, find it held each time and never take it — until leasecron releases it, when one does.
/// About 30 s.
#[test]
fn client_go_does_not_take_a_lease_that_leasecron_keeps_renewing() {
    let Some(env) = Env::start("cgo-keeps-off") else {
        return;
    };
    let observer = env.observe();
    let mut cron = env.leasecron("lc-a", &env.idle_jobs(), &SHORT);
    observer.add(&cron);
    let acquired = cron.wait_acquired(WAIT, "acquired: no holder");
    let mut goes = vec![env.client_go("cgo-1"), env.client_go("cgo-2")];
    // Three attempts each, every one of which finds the Lease held by leasecron.
    for go in &goes {
        wait_for(3 * CLIENT_GO_ATTEMPT_GAP + WAIT, || {
            let held = go
                .events()
                .iter()
                .filter(|e| e.kind == GoKind::HeldBy("lc-a".to_owned()))
                .count();
            (held >= 3).then_some(())
        })
        .unwrap_or_else(|| {
            panic!(
                "client-go {} tries three times: {}",
                go.identity,
                go.log_text()
            )
        });
    }
    for go in &goes {
        assert!(
            go.acquired().is_none(),
            "{} took a renewed Lease: {}",
            go.identity,
            go.log_text()
        );
    }
    let events = cron.events();
    assert_eq!(events.len(), 1, "one term, never ended: {events:#?}");
    let versions = observer.versions();
    assert!(
        versions.iter().all(|v| v.holder.as_deref() == Some("lc-a")
            && v.transitions.map(|t| t as u64) == Some(acquired.token)),
        "the Lease stayed leasecron's: {}",
        versions_text(&versions)
    );

    // Released, the Lease goes to client-go at its next attempt: they were contending all along.
    cron.replica.stop_cleanly();
    let taker = wait_for(CLIENT_GO_ATTEMPT_GAP + WAIT, || {
        goes.iter().position(|g| g.acquired().is_some())
    })
    .expect("a client-go follower takes the released Lease");
    std::thread::sleep(Duration::from_secs(1));
    for go in &mut goes {
        go.terminate();
    }
    assert!(goes[1 - taker].acquired().is_none());
    let terms = all_terms(&goes.iter().collect::<Vec<_>>(), &[&cron]);
    assert_one_leader(&terms, &observer.finish());
}

/// The Lease passes cgo-1 → leasecron → cgo-2 → leasecron: `leaseTransitions` rises by one at each
/// acquisition, whoever makes it, and never falls; each leasecron term's fencing token is the count it
/// wrote, above every earlier term's, and its runs carry it. About 12 s (up to 25 s: client-go's attempts
/// are 5–11 s apart).
#[test]
fn lease_transitions_and_fencing_tokens_keep_increasing_across_mixed_holders() {
    let Some(env) = Env::start("cgo-transitions") else {
        return;
    };
    let observer = env.observe();
    let runs = env.dir().join("runs");
    let jobs = recording_job(env.dir(), &runs);
    let wait_run_of = |identity: &str| {
        wait_for(WAIT, || {
            read_recorded_runs(&runs)
                .into_iter()
                .find(|r| r.identity == identity && r.end_ns.is_some())
        })
        .unwrap_or_else(|| panic!("a run of {identity}: {:?}", read_recorded_runs(&runs)))
    };

    let mut cgo1 = env.client_go("cgo-1");
    cgo1.wait(WAIT, "acquisition", |k| *k == GoKind::Acquired);
    let mut lc_a = env.leasecron("lc-a", &jobs, &ROOMY);
    observer.add(&lc_a);
    lc_a.wait_following("cgo-1");
    cgo1.terminate();
    let a = lc_a.wait_acquired(WAIT, "acquired from cgo-1: released");
    wait_run_of("lc-a");

    let mut cgo2 = env.client_go("cgo-2");
    cgo2.wait(CLIENT_GO_ATTEMPT_GAP + WAIT, "an attempt", |k| {
        *k == GoKind::HeldBy("lc-a".to_owned())
    });
    lc_a.replica.stop_cleanly();
    cgo2.wait(CLIENT_GO_ATTEMPT_GAP + WAIT, "acquisition", |k| {
        *k == GoKind::Acquired
    });

    let mut lc_b = env.leasecron("lc-b", &jobs, &ROOMY);
    observer.add(&lc_b);
    lc_b.wait_following("cgo-2");
    cgo2.terminate();
    let b = lc_b.wait_acquired(WAIT, "acquired from cgo-2: released");
    wait_run_of("lc-b");
    let status_token = lc_b.replica.status().expect("/status")["fencing_token"].as_u64();
    lc_b.replica.stop_cleanly();
    let seen = observer.finish();

    // The Lease: its count never falls, and rises by one at each acquisition.
    let text = versions_text(&seen.versions);
    let counts: Vec<i32> = seen
        .versions
        .iter()
        .map(|v| v.transitions.unwrap_or(0))
        .collect();
    assert!(
        counts.windows(2).all(|w| w[0] <= w[1]),
        "leaseTransitions fell: {text}"
    );
    let mut acquisitions: Vec<(&str, i32)> = Vec::new();
    let mut previous: Option<&str> = None;
    for version in &seen.versions {
        if let Some(holder) = version.holder.as_deref() {
            if previous != Some(holder) {
                acquisitions.push((holder, version.transitions.unwrap_or(0)));
            }
        }
        previous = version.holder.as_deref();
    }
    let holders: Vec<&str> = acquisitions.iter().map(|(h, _)| *h).collect();
    assert_eq!(holders, ["cgo-1", "lc-a", "cgo-2", "lc-b"], "{text}");
    for pair in acquisitions.windows(2) {
        assert_eq!(
            pair[1].1,
            pair[0].1 + 1,
            "one more transition at each acquisition: {text}"
        );
    }
    // leasecron's tokens: the count it wrote, rising, in its runs and its /status.
    assert_eq!(a.token, acquisitions[1].1 as u64, "{text}");
    assert_eq!(b.token, acquisitions[3].1 as u64, "{text}");
    assert!(b.token > a.token);
    assert_eq!(status_token, Some(b.token));
    let all = read_recorded_runs(&runs);
    assert!(
        all.iter()
            .all(|r| (r.identity == "lc-a" && r.token == a.token)
                || (r.identity == "lc-b" && r.token == b.token)),
        "each run carries its term's token: {all:#?}"
    );
    assert!(
        all.windows(2).all(|w| w[0].token <= w[1].token),
        "tokens rise with time: {all:#?}"
    );
    assert_one_leader(&all_terms(&[&cgo1, &cgo2], &[&lc_a, &lc_b]), &seen);
}
