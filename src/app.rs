//! `run`, `validate` and `next`: the commands, wired from the modules.
//!
//! `main.rs` parses the flags into [`RunOptions`] and calls [`run`]; nothing else knows about the CLI.
//! Everything that can be checked before the lease is touched is checked first (lease timings, the jobs
//! file, the lease store, the HTTP address), so a bad input exits 2 without side effects.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::clock::SharedClock;
use crate::config::{self, JobSet, LoadOptions};
use crate::dispatch::Dispatcher;
use crate::election::{self, Elector};
use crate::events::EventSink;
use crate::http::{self, Endpoints, Health, StatusBoard};
use crate::lease_store::{self, file::FileStore, kube as kube_store, KubeStore, LeaseStore};
use crate::metrics::{self, Metrics};
use crate::observe::{self, ConfigReload, Observers};
use crate::reaper::{self, Reaper};
use crate::reload::configmap::{self, ConfigMapRef};
use crate::reload::{self, Reloader, Snapshot};
use crate::runner::Runner;
use crate::shutdown::{self, Signals, FORCED_EXIT_CODE};
use crate::state::file::FileState;
use crate::state::kube::KubeState;
use crate::state::{Backend, JobRecord, Ledger, StateRecord};

/// Exit code for a usage or configuration error.
pub const EXIT_USAGE: i32 = 2;
/// Exit code for a failure at run time.
pub const EXIT_FAILURE: i32 = 1;
/// At shutdown, how long the fan-out task gets to hand the last events to the Kubernetes Events sink.
const EVENTS_HANDOVER: Duration = Duration::from_millis(50);
/// At shutdown, how long writing the last Kubernetes Events may take.
const EVENTS_FLUSH_TIMEOUT: Duration = Duration::from_secs(2);
/// How often a follower on a local lease file re-reads it (at most; RP if shorter). A file has no watch;
/// reading a few hundred bytes four times a second is cheap, and a release is noticed within this bound.
pub const LEASE_FILE_POLL_INTERVAL: Duration = Duration::from_millis(250);

/// Errors of the commands. [`Error::exit_code`] maps them to the CLI's exit codes.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The jobs file is unreadable or invalid.
    #[error("{0}")]
    Config(#[from] config::Error),
    /// The lease timings are inconsistent, or the elector failed.
    #[error("{0}")]
    Election(#[from] election::Error),
    /// The lease store is unusable at start (a corrupt lease file, a directory that does not exist, no
    /// permission). Failures once running come from the elector, as [`Error::Election`].
    #[error("{0}")]
    LeaseStore(#[from] lease_store::Error),
    /// The Kubernetes API failed the start-up read of the Lease (unreachable, forbidden, ...).
    #[error("Kubernetes API at {url}: {source}")]
    Kubernetes {
        /// The API server's URL, from the client configuration.
        url: String,
        /// What failed.
        #[source]
        source: lease_store::Error,
    },
    /// `--lease-name` or `--lease-namespace` is not a valid Kubernetes name.
    #[error("{flag} {value:?}: {why}")]
    InvalidName {
        /// The flag (or environment variable) the name came from.
        flag: &'static str,
        /// The name given.
        value: String,
        /// What is wrong with it.
        why: String,
    },
    /// No identity could be determined.
    #[error("--identity: cannot determine an identity (LEASECRON_IDENTITY, POD_NAME and the hostname are all unset): {0}")]
    Identity(String),
    /// `next --job NAME` names no job.
    #[error("--job {0}: no such job in the file")]
    UnknownJob(String),
    /// The HTTP endpoint failed.
    #[error("{0}")]
    Http(#[from] http::Error),
    /// The metrics registry could not be built.
    #[error("{0}")]
    Metrics(#[from] metrics::Error),
    /// Signal handlers could not be installed.
    #[error("{0}")]
    Signals(#[from] shutdown::Error),
    /// `validate` found problems in one or more files.
    #[error("{}", display_all(.0))]
    Invalid(Vec<config::Error>),
    /// The jobs source gave no text at start (a source reports this as its own error where it can).
    #[error("{origin}: {why}")]
    Unreadable {
        /// The source.
        origin: String,
        /// Why there is no text.
        why: String,
    },
    /// The run state could not be read.
    #[error("{0}")]
    State(#[from] crate::state::Error),
    /// The run state's ConfigMap is unusable at start (an invalid name, a denied RBAC verb).
    #[error("{0}")]
    StateConfigMap(#[from] crate::state::kube::Error),
    /// `--jobs-configmap` names no valid ConfigMap and key, or it cannot be read or watched.
    #[error("--jobs-configmap: {0}")]
    ConfigMap(#[from] configmap::Error),
    /// A task of ours panicked.
    #[error("internal error: {0}")]
    Internal(String),
}

fn display_all(errors: &[config::Error]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

impl Error {
    /// True if the message is a list of `FILE:LINE:COL: message` diagnostics, to print as they are.
    pub fn is_diagnostics(&self) -> bool {
        matches!(
            self,
            Error::Invalid(_) | Error::Config(config::Error::Invalid(_))
        )
    }

    /// The process exit code for this error: 2 for bad input, 1 for failures at run time.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Config(_)
            | Error::Invalid(_)
            | Error::InvalidName { .. }
            | Error::Identity(_)
            | Error::UnknownJob(_)
            | Error::Unreadable { .. } => EXIT_USAGE,
            Error::Election(
                election::Error::EmptyIdentity
                | election::Error::ZeroDuration { .. }
                | election::Error::LeaseDurationTooLong { .. }
                | election::Error::RenewDeadlineTooShort { .. }
                | election::Error::LeaseTooShort { .. },
            ) => EXIT_USAGE,
            // Retrying later may help (an unreachable API server): a failure, not a usage error.
            Error::LeaseStore(e) | Error::Kubernetes { source: e, .. } if e.is_transient() => {
                EXIT_FAILURE
            }
            Error::LeaseStore(_) | Error::Kubernetes { .. } => EXIT_USAGE,
            Error::ConfigMap(e) if e.is_transient() => EXIT_FAILURE,
            Error::StateConfigMap(e) if e.is_transient() => EXIT_FAILURE,
            Error::StateConfigMap(_) => EXIT_USAGE,
            Error::ConfigMap(_) => EXIT_USAGE,
            Error::Http(http::Error::Bind { .. }) => EXIT_USAGE,
            _ => EXIT_FAILURE,
        }
    }
}

/// The lease timings shared by `run` and `validate` (which checks `terminationGrace` against them).
#[derive(Debug, Clone, Copy)]
pub struct Timings {
    /// LD: how long a lease is valid after its holder's last observed renew.
    pub lease_duration: Duration,
    /// RD: how long the leader keeps its term without a successful renew.
    pub renew_deadline: Duration,
    /// RP: the interval between renews and between a follower's retries.
    pub retry_period: Duration,
}

impl Default for Timings {
    fn default() -> Self {
        Self {
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

impl Timings {
    fn election_config(
        &self,
        identity: String,
        max_termination_grace: Duration,
    ) -> election::Config {
        election::Config {
            identity,
            lease_duration: self.lease_duration,
            renew_deadline: self.renew_deadline,
            retry_period: self.retry_period,
            max_termination_grace,
        }
    }

    /// Checks the timings on their own and returns the jobs-file bound they imply: a `terminationGrace`
    /// of at most LD − margin − RD (DESIGN.md §2).
    pub fn load_options(&self) -> Result<LoadOptions, election::Error> {
        let config = self.election_config("-".to_owned(), Duration::ZERO);
        config.validate()?;
        Ok(LoadOptions::for_lease_timings(&config))
    }
}

/// Where `run` reads the jobs from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobsSource {
    /// `--jobs FILE`: a file, watched for changes.
    File(PathBuf),
    /// `--jobs-configmap NAME[/KEY]`: a ConfigMap in the lease namespace, watched through the API.
    ConfigMap(String),
}

/// What `leasecron run` needs, as parsed from flags and environment.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Where the jobs come from.
    pub jobs: JobsSource,
    /// The Lease's name.
    pub lease_name: String,
    /// The Lease's namespace, if given.
    pub lease_namespace: Option<String>,
    /// This replica's identity, if given.
    pub identity: Option<String>,
    /// Lease timings.
    pub timings: Timings,
    /// Elect through this local file instead of the Kubernetes API.
    pub lease_file: Option<PathBuf>,
    /// Where to serve `/healthz` and `/readyz`.
    pub http_addr: SocketAddr,
}

/// `leasecron run`: elect, fire, run, until SIGTERM/SIGINT; then end the runs, release, return `Ok`.
///
/// Elects through `--lease-file` if given, else through a Kubernetes Lease. Makes this process the
/// subreaper of its descendants and, at the end of every term, kills every descendant still alive (the
/// processes the runs left behind): call it only from a process whose every child is one of its runs.
pub async fn run(opts: RunOptions, clock: SharedClock) -> Result<(), Error> {
    let load = opts.timings.load_options()?;
    // A jobs file is checked before anything else; a ConfigMap once there is a client to read it with.
    let file_jobs = match &opts.jobs {
        JobsSource::File(path) => Some(Jobs::from_file(path, load).await?),
        JobsSource::ConfigMap(_) => None,
    };
    match &opts.lease_file {
        Some(lease_file) => {
            let identity = resolve_identity(opts.identity.clone(), true)?;
            let store = FileStore::open(
                lease_file,
                opts.timings.retry_period.min(LEASE_FILE_POLL_INTERVAL),
            )?;
            // A corrupt lease file is a configuration error: find out before anything runs.
            store.get().await?;
            let jobs = match (file_jobs, &opts.jobs) {
                (Some(jobs), _) => jobs,
                (None, JobsSource::ConfigMap(value)) => {
                    // A local lease with the jobs in a cluster: the namespace as for a Lease.
                    let config = kube_store::infer_config().await?;
                    let namespace = resolve_namespace(opts.lease_namespace.clone(), &config)?;
                    Jobs::from_configmap(value, config, namespace, load).await?
                }
                (None, JobsSource::File(path)) => Jobs::from_file(path, load).await?,
            };
            let ledger = Ledger::new(
                Backend::File(FileState::beside(lease_file)),
                identity.clone(),
            );
            let lease = Lease {
                store,
                ledger,
                // No cluster, no Kubernetes Events.
                events: EventSink::disabled(),
            };
            run_with(opts, jobs, identity, lease, clock).await
        }
        None => {
            let identity = resolve_identity(opts.identity.clone(), false)?;
            let (store, config) = open_kube_store(&opts).await?;
            // The jobs before the identity check, which may watch the Lease for a lease duration.
            let jobs = match (file_jobs, &opts.jobs) {
                (Some(jobs), _) => jobs,
                (None, JobsSource::ConfigMap(value)) => {
                    let namespace = store.params().namespace.clone();
                    Jobs::from_configmap(value, config.clone(), namespace, load).await?
                }
                (None, JobsSource::File(path)) => Jobs::from_file(path, load).await?,
            };
            // The run state beside the Lease: its RBAC is checked now, like the Lease's.
            let state = KubeState::new(
                config.clone(),
                &store.params().namespace,
                &opts.lease_name,
                opts.timings.retry_period,
            )?;
            state.check_access().await?;
            store
                .check_identity(&identity, opts.timings.lease_duration)
                .await
                .map_err(|source| Error::Kubernetes {
                    url: config.cluster_url.to_string(),
                    source,
                })?;
            let events = EventSink::new(
                store.client(),
                &store.params().namespace,
                &store.params().name,
                &identity,
            );
            let lease = Lease {
                store,
                ledger: Ledger::new(Backend::Kube(state), identity.clone()),
                events,
            };
            run_with(opts, jobs, identity, lease, clock).await
        }
    }
}

/// The jobs in force at start, and where to watch for new versions.
struct Jobs {
    set: JobSet,
    snapshot: Snapshot,
    load: LoadOptions,
    watcher: Watcher,
}

/// What keeps the jobs current.
enum Watcher {
    /// The jobs file, with `notify` and a periodic re-read.
    File(PathBuf),
    /// The ConfigMap, watched through the API.
    ConfigMap {
        /// Without a retry layer or read timeout.
        client: kube::Client,
        /// The ConfigMap and key.
        target: ConfigMapRef,
        /// Timeouts and intervals.
        params: Box<configmap::Params>,
    },
}

impl Jobs {
    /// Loads the jobs file: unreadable or invalid is a configuration error (exit 2).
    async fn from_file(path: &Path, load: LoadOptions) -> Result<Jobs, Error> {
        let text = tokio::fs::read_to_string(path)
            .await
            .map_err(|source| config::Error::Read {
                path: path.to_path_buf(),
                source,
            })?;
        let snapshot = Snapshot {
            origin: path.display().to_string(),
            text: Ok(text),
        };
        Jobs::load(snapshot, load, Watcher::File(path.to_path_buf()))
    }

    /// Reads the ConfigMap named by `value` (`NAME[/KEY]`) in `namespace`: checks the RBAC it needs, then
    /// loads it. A missing ConfigMap or key, a denied verb or invalid jobs exit 2; an unreachable API 1.
    async fn from_configmap(
        value: &str,
        config: kube::Config,
        namespace: String,
        load: LoadOptions,
    ) -> Result<Jobs, Error> {
        let target = ConfigMapRef::parse(value, namespace)?;
        let params = configmap::Params::default();
        // kube's retry layer off (every request is bounded by `params`), no read timeout (a watch is
        // quiet for minutes).
        let client = kube_store::client(config, None)?;
        configmap::check_access(&client, &target, &params).await?;
        let snapshot = configmap::read(&client, &target, &params).await?;
        Jobs::load(
            snapshot,
            load,
            Watcher::ConfigMap {
                client,
                target,
                params: Box::new(params),
            },
        )
    }

    fn load(snapshot: Snapshot, load: LoadOptions, watcher: Watcher) -> Result<Jobs, Error> {
        let set = match &snapshot.text {
            Ok(text) => config::parse_str(text, &snapshot.origin, &load)?,
            Err(why) => {
                return Err(Error::Unreadable {
                    origin: snapshot.origin.clone(),
                    why: why.clone(),
                })
            }
        };
        Ok(Jobs {
            set,
            snapshot,
            load,
            watcher,
        })
    }

    /// The load at start, as reported to the observers.
    fn initial_report(&self) -> ConfigReload {
        ConfigReload::Applied {
            origin: self.snapshot.origin.clone(),
            hash: self
                .snapshot
                .text
                .as_deref()
                .map_or(0, reload::content_hash),
            jobs: self.set.jobs.len(),
            initial: true,
        }
    }

    /// Starts watching the source and reloading, until `stop`; returns the jobs in force as they change.
    fn spawn(self, observers: Observers, stop: &CancellationToken) -> watch::Receiver<Arc<JobSet>> {
        let (snapshots_tx, snapshots) = watch::channel(self.snapshot);
        let (jobs_tx, jobs) = watch::channel(Arc::new(self.set));
        match self.watcher {
            Watcher::File(path) => {
                tokio::spawn(reload::file::watch(path, snapshots_tx, stop.clone()));
            }
            Watcher::ConfigMap {
                client,
                target,
                params,
            } => {
                tokio::spawn(configmap::watch(
                    client,
                    target,
                    *params,
                    snapshots_tx,
                    stop.clone(),
                ));
            }
        }
        let reloader = Reloader::new(self.load, jobs_tx, observers);
        tokio::spawn(reloader.run(snapshots, stop.clone()));
        jobs
    }
}

/// The Kubernetes Lease store, checked at start: valid names, a usable client configuration, an API
/// server that answers a GET of the Lease, and the RBAC verbs the election needs. Returns the client
/// configuration too, for the ConfigMap. The caller checks the identity ([`KubeStore::check_identity`]).
async fn open_kube_store(opts: &RunOptions) -> Result<(KubeStore, kube::Config), Error> {
    kube_store::check_lease_name(&opts.lease_name).map_err(|why| Error::InvalidName {
        flag: "--lease-name",
        value: opts.lease_name.clone(),
        why,
    })?;
    // A bad name given is a usage error whatever the client configuration.
    if let Some((flag, namespace)) = namespace_from_flag_or_env(opts.lease_namespace.clone()) {
        check_namespace(flag, &namespace)?;
    }
    let config = kube_store::infer_config().await?;
    let namespace = resolve_namespace(opts.lease_namespace.clone(), &config)?;
    let url = config.cluster_url.to_string();
    let params = kube_store::Params::new(namespace, &opts.lease_name, opts.timings.retry_period);
    let store = KubeStore::new(config.clone(), params)?;
    let start_error = |source| Error::Kubernetes {
        url: url.clone(),
        source,
    };
    store.get().await.map_err(start_error)?;
    store.check_access().await.map_err(start_error)?;
    Ok((store, config))
}

/// The namespace of the Lease (and of `--jobs-configmap`): the flag or its environment, else the client
/// configuration's.
fn resolve_namespace(flag: Option<String>, config: &kube::Config) -> Result<String, Error> {
    match namespace_from_flag_or_env(flag) {
        Some((flag, namespace)) => {
            check_namespace(flag, &namespace)?;
            Ok(namespace)
        }
        None => {
            let namespace = config.default_namespace.clone();
            check_namespace("the kubeconfig's namespace", &namespace)?;
            Ok(namespace)
        }
    }
}

/// The namespace from `--lease-namespace` / `LEASECRON_LEASE_NAMESPACE`, else `POD_NAMESPACE`, with the
/// name of where it came from; `None` to use the client configuration's.
fn namespace_from_flag_or_env(flag: Option<String>) -> Option<(&'static str, String)> {
    if let Some(namespace) = flag {
        return Some(("--lease-namespace", namespace));
    }
    std::env::var("POD_NAMESPACE")
        .ok()
        .filter(|ns| !ns.is_empty())
        .map(|ns| ("POD_NAMESPACE", ns))
}

fn check_namespace(flag: &'static str, namespace: &str) -> Result<(), Error> {
    kube_store::check_namespace(namespace).map_err(|why| Error::InvalidName {
        flag,
        value: namespace.to_owned(),
        why,
    })
}

/// The lease store and what lives beside it.
struct Lease<S> {
    store: S,
    /// The run state beside the lease.
    ledger: Ledger,
    /// Kubernetes Events about the Lease (disabled on a file lease).
    events: EventSink,
}

/// Runs with an opened, checked store.
async fn run_with<S: LeaseStore>(
    opts: RunOptions,
    jobs: Jobs,
    identity: String,
    lease: Lease<S>,
    clock: SharedClock,
) -> Result<(), Error> {
    let Lease {
        store,
        ledger,
        events,
    } = lease;
    let ledger = Arc::new(ledger);
    let listener = http::bind(opts.http_addr).await?;
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "serving /healthz, /readyz, /metrics and /status");
    }
    let signals = Signals::install()?;

    // A reload may raise a job's grace up to the bound the timings allow: check the timings against that.
    let config = opts
        .timings
        .election_config(identity.clone(), jobs.load.max_termination_grace);
    tracing::info!(
        %identity,
        lease = %store.describe(),
        jobs_source = %jobs.snapshot.origin,
        jobs = jobs.set.jobs.len(),
        lease_duration = %humantime::format_duration(opts.timings.lease_duration),
        renew_deadline = %humantime::format_duration(opts.timings.renew_deadline),
        retry_period = %humantime::format_duration(opts.timings.retry_period),
        "leasecron starting"
    );
    let metrics = Arc::new(Metrics::new()?);
    let status = Arc::new(StatusBoard::new(identity.clone()));
    metrics.set_jobs(&jobs.set);
    status.set_jobs(&jobs.set);
    let mut observers = Observers::new();
    observers.push(Arc::clone(&metrics) as Arc<dyn observe::Observer>);
    observers.push(Arc::clone(&status) as Arc<dyn observe::Observer>);
    observers.push(Arc::new(events.clone()) as Arc<dyn observe::Observer>);
    let (senders, receivers) = observe::channels();
    observers.config_reload(&jobs.initial_report());
    let reload_observers = observers.clone();
    // Runs until every sender is gone; the runner lives until exit, so it is never awaited.
    tokio::spawn(observers.run(receivers));

    let (elector, leadership) = Elector::new(store, config, Arc::clone(&clock))?;
    // Every child of this process is a run: what a term's runs leave behind dies with the term.
    let elector = elector.with_events(senders.election).sweeping_strays();
    let runner = Runner::with_ledger(
        identity,
        Arc::clone(&clock),
        Some(senders.runs),
        Arc::clone(&ledger),
    );
    let health = Health::new(leadership.clone());
    health.set_ready();
    let endpoints = Endpoints {
        health,
        metrics,
        status,
    };

    let shutdown = CancellationToken::new();
    let force = {
        let runner = Arc::clone(&runner);
        move || {
            runner.kill_all();
            std::process::exit(FORCED_EXIT_CODE);
        }
    };
    tokio::spawn(signals.watch(shutdown.clone(), force));
    // Reloading stops at shutdown; the dispatcher keeps the jobs in force until its timers stop.
    let jobs = jobs.spawn(reload_observers, &shutdown);
    // Orphaned grandchildren of jobs become ours (as PID 1 in a container, or as their subreaper), so that
    // a term's end finds them and nobody else must reap them; the reaper runs until the very end, after
    // the last run has ended.
    if let Err(error) = reaper::become_subreaper() {
        tracing::warn!(%error, "cannot become the subreaper of the jobs' processes: a process that leaves \
            its run's group and its parent is out of reach at the end of a term");
    }
    let reaper_stop = CancellationToken::new();
    let reaper = Reaper::spawn_if_orphans_come_here(reaper_stop.clone());
    endpoints.status.set_ledger(Arc::clone(&ledger));
    tracing::info!(state = %ledger.describe(), "run state: each slot runs at most once across terms");
    let dispatcher = Dispatcher::new(runner, leadership, clock)
        .with_events(senders.dispatch)
        .with_ledger(ledger);
    let result =
        serve_until_shutdown(jobs, elector, dispatcher, listener, endpoints, shutdown).await;
    reaper_stop.cancel();
    if let Some(reaper) = reaper {
        reaper.join().await;
    }
    // The last election events (leadership lost at shutdown) reach the sink through the fan-out task;
    // give it a moment to hand them over, then write what the sink still holds, within a bound.
    tokio::time::sleep(EVENTS_HANDOVER).await;
    if tokio::time::timeout(EVENTS_FLUSH_TIMEOUT, events.flush())
        .await
        .is_err()
    {
        tracing::warn!("could not write the last Kubernetes Events before exiting");
    }
    result
}

/// Runs the elector, the timers and the HTTP endpoint until `shutdown` (or until the elector fails), then
/// stops them in the safe order: timers first (no new runs), then the elector (which ends the term, waits
/// for its runs, and only then releases the lease), then HTTP.
async fn serve_until_shutdown<S: LeaseStore>(
    jobs: watch::Receiver<Arc<JobSet>>,
    elector: Elector<S>,
    dispatcher: Dispatcher,
    listener: tokio::net::TcpListener,
    endpoints: Endpoints,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    let http_stop = CancellationToken::new();
    let http_task = tokio::spawn(http::serve(listener, endpoints, http_stop.clone()));
    let elector_stop = CancellationToken::new();
    let mut elector_task = tokio::spawn(elector.run(elector_stop.clone()));
    let dispatch_stop = shutdown.clone();
    let dispatch_task = tokio::spawn(async move { dispatcher.run(jobs, dispatch_stop).await });

    let elector_result = tokio::select! {
        _ = shutdown.cancelled() => None,
        result = &mut elector_task => Some(result),
    };
    shutdown.cancel();
    let _ = dispatch_task.await;
    let elector_result = match elector_result {
        Some(result) => result,
        None => {
            elector_stop.cancel();
            elector_task.await
        }
    };
    http_stop.cancel();
    let _ = http_task.await;
    match elector_result {
        Ok(result) => result.map_err(Error::from),
        Err(join) => Err(Error::Internal(format!("the elector task failed: {join}"))),
    }
}

/// One job's run state, as `next` prints it.
fn describe_record(record: Option<&JobRecord>) -> String {
    let Some(record) = record else {
        return "  last slot: none recorded\n  next:\n".to_owned();
    };
    let mut out = String::new();
    if let Some(started) = &record.last_started {
        let completed = record
            .last_completion
            .as_ref()
            .filter(|c| c.slot == started.slot)
            .map_or_else(|| "not completed".to_owned(), |c| c.outcome.clone());
        out.push_str(&format!(
            "  last slot: {} (fencing token {}, {}, {completed})\n",
            started.slot.to_rfc3339(),
            started.fencing_token,
            started.identity
        ));
    }
    if let Some(success) = &record.last_success {
        out.push_str(&format!(
            "  last success: {} (finished {})\n",
            success.slot.to_rfc3339(),
            success.finished_at.to_rfc3339()
        ));
    }
    out.push_str("  next:\n");
    out
}

/// The identity: the flag (or `LEASECRON_IDENTITY`), else `POD_NAME`, else the hostname. On a local file
/// lease several processes usually share one hostname, so there the hostname gets the process id appended.
pub fn resolve_identity(flag: Option<String>, local: bool) -> Result<String, Error> {
    if let Some(id) = flag.filter(|id| !id.is_empty()) {
        return Ok(id);
    }
    if let Some(pod) = std::env::var("POD_NAME").ok().filter(|p| !p.is_empty()) {
        return Ok(pod);
    }
    let host = nix::unistd::gethostname()
        .map_err(|e| Error::Identity(e.to_string()))?
        .to_string_lossy()
        .into_owned();
    if host.is_empty() {
        return Err(Error::Identity("the hostname is empty".to_owned()));
    }
    Ok(if local {
        format!("{host}-{}", std::process::id())
    } else {
        host
    })
}

/// `leasecron validate`: checks every file (a jobs file, or manifests whose ConfigMaps hold one under
/// `data.KEY`) and reports every problem of every file.
///
/// Returns the per-file summaries on success; on failure, the diagnostics of all invalid files.
pub fn validate(files: &[PathBuf], key: &str, timings: &Timings) -> Result<Vec<String>, Error> {
    let opts = timings.load_options()?;
    let mut summaries = Vec::new();
    let mut errors = Vec::new();
    for file in files {
        match config::load_source(file, key, &opts) {
            Ok(source) => {
                summaries.push(format!("{}: ok ({source})", file.display()));
                // The process ends right after `validate`; freeing every job one by one would only
                // add to its time (2 % for 10 000 jobs).
                std::mem::forget(source);
            }
            Err(e) => errors.push(e),
        }
    }
    if errors.is_empty() {
        Ok(summaries)
    } else {
        Err(Error::Invalid(errors))
    }
}

/// Where `leasecron next` reads the run state from.
#[derive(Debug, Clone)]
pub enum StateSource {
    /// Beside this lease file.
    File(PathBuf),
    /// The ConfigMap `<name>-state` of this Kubernetes Lease.
    Kube {
        /// The Lease's name.
        name: String,
        /// Its namespace, if given (else `POD_NAMESPACE`, else the client configuration's).
        namespace: Option<String>,
    },
}

/// How long `next` waits for the API server.
const NEXT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The run state (empty if there is none yet; an unusable one reads as empty, as the ledger would
/// rebuild it).
pub async fn read_run_state(source: StateSource) -> Result<StateRecord, Error> {
    let backend = match source {
        StateSource::File(lease) => Backend::File(FileState::beside(&lease)),
        StateSource::Kube { name, namespace } => {
            kube_store::check_lease_name(&name).map_err(|why| Error::InvalidName {
                flag: "--lease-name",
                value: name.clone(),
                why,
            })?;
            let config = kube_store::infer_config().await?;
            let namespace = resolve_namespace(namespace, &config)?;
            Backend::Kube(KubeState::new(
                config,
                &namespace,
                &name,
                NEXT_REQUEST_TIMEOUT,
            )?)
        }
    };
    let ledger = Ledger::new(backend, String::new());
    ledger.refresh().await.map_err(Error::State)
}

/// `leasecron next`: the next `count` fire times of each job (or of `job`), in each job's zone; with a run
/// state `record`, each job's last slot from it.
pub fn next(
    file: &Path,
    count: usize,
    job: Option<&str>,
    record: Option<&StateRecord>,
) -> Result<String, Error> {
    // `next` shows when jobs fire; whether their grace fits some lease timings is `validate`'s business.
    let opts = LoadOptions {
        max_termination_grace: Duration::MAX,
    };
    let set = config::load_file(file, &opts)?;
    let now = Utc::now();
    let mut out = String::new();
    let mut found = false;
    for j in set
        .jobs
        .iter()
        .filter(|j| job.is_none_or(|name| name == j.name))
    {
        found = true;
        out.push_str(&format!(
            "{}  \"{}\"  {}{}\n",
            j.name,
            j.schedule.expression(),
            j.schedule.zone(),
            if j.suspend { "  (suspended)" } else { "" }
        ));
        if let Some(record) = record {
            out.push_str(&describe_record(record.jobs.get(&j.name)));
        }
        for at in j.schedule.upcoming(now, count) {
            out.push_str(&format!("  {}\n", at.to_rfc3339()));
        }
    }
    match job {
        Some(name) if !found => Err(Error::UnknownJob(name.to_owned())),
        _ => Ok(out),
    }
}
