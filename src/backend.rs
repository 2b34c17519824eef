//! The backend: where the lease, the run state, the jobs and the Events live — files on this machine
//! ([`crate::local`]) or objects in a Kubernetes cluster ([`crate::kubernetes`]).
//!
//! `run` makes that choice once, here, in two steps:
//!
//! 1. [`Backend::open`] checks everything that needs no request — the identity, the names, the lease file,
//!    the client configuration, the jobs file — so a bad input exits 2 before anything is touched;
//! 2. [`Backend::connect`] makes the start-up requests (the Lease, the RBAC verbs, the jobs ConfigMap, the
//!    controls ConfigMap, the identity against the Lease), retried while they fail transiently
//!    ([`Startup`]), and hands out a [`Connected`]: the lease store, the run-state [`Ledger`], the jobs,
//!    the operators' controls with their feed and their store, and the Kubernetes Events sink.
//!
//! Nothing after that knows which backend it has: the lease store is one type ([`AnyLeaseStore`]), the
//! ledger hides its store, the jobs carry their own feed, the controls are a channel and a
//! [`controls::Store`], and the event sink of a file lease is disabled.
//!
//! The controls live beside the lease: the file `LEASE.controls` ([`ControlsFile`]), or the ConfigMap
//! `<lease-name>-controls` in the Lease's namespace ([`ControlsConfigMap`], with the run state's client
//! configuration and request timeout). They are read at start (an invalid document is a configuration
//! error, exit 2, as invalid jobs are) and then followed by a task that ends once every receiver of
//! [`Connected::controls`] is gone, or with the process.
//!
//! On a file lease the jobs may still come from a ConfigMap (`--lease-file` with `--jobs-configmap`): the
//! namespace is then resolved as it would be for a Lease.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::config::{self, LoadOptions};
use crate::controls::{self, Controls};
use crate::kubernetes::batch::{self, Cluster};
use crate::kubernetes::controls::{self as kube_controls, ControlsConfigMap};
use crate::kubernetes::events::EventSink;
use crate::kubernetes::jobs_configmap::{self, ConfigMapRef};
use crate::kubernetes::lease::{self as kube_lease, KubeStore};
use crate::kubernetes::run_state::{self as kube_state, StateConfigMap};
use crate::kubernetes::{self, names};
use crate::lease_store::{self, Change, LeaseRecord, LeaseStore, Versioned};
use crate::local::controls::{self as file_controls, ControlsFile};
use crate::local::lease::FileStore;
use crate::local::run_state::StateFile;
use crate::run_state::Ledger;

pub mod jobs;
pub mod startup;

pub use jobs::{Jobs, JobsSource};
pub use startup::Startup;

/// Errors of opening and connecting the backend. [`Error::is_usage`] sorts them into bad input (exit 2)
/// and failures that a later attempt may not repeat (exit 1).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The jobs file is unreadable or invalid.
    #[error("{0}")]
    Config(#[from] config::Error),
    /// The lease store is unusable at start (a corrupt lease file, a directory that does not exist, no
    /// permission, no client configuration).
    #[error("{0}")]
    LeaseStore(#[from] lease_store::Error),
    /// The Kubernetes API failed a start-up request about the Lease (unreachable, forbidden, ...).
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
    /// `--identity` (or `LEASECRON_IDENTITY`) is empty or blank.
    #[error(
        "--identity is empty: give this replica a name unique among the replicas, or leave the flag (and \
         LEASECRON_IDENTITY) out to use POD_NAME or the hostname"
    )]
    EmptyIdentity,
    /// The jobs source gave no text at start (a source reports this as its own error where it can).
    #[error("{origin}: {why}")]
    Unreadable {
        /// The source.
        origin: String,
        /// Why there is no text.
        why: String,
    },
    /// The run state's ConfigMap is unusable at start (an invalid name, a denied RBAC verb).
    #[error("{0}")]
    StateConfigMap(#[from] kube_state::Error),
    /// The jobs are more than the run state ConfigMap can hold.
    #[error("{origin}: {source}")]
    StateCapacity {
        /// Where the jobs came from.
        origin: String,
        /// How many, and the limit.
        #[source]
        source: kube_state::CapacityError,
    },
    /// `--jobs-configmap` names no valid ConfigMap and key, or it cannot be read or watched.
    #[error("--jobs-configmap: {0}")]
    ConfigMap(#[from] jobs_configmap::Error),
    /// The controls file beside the lease file cannot be read, or is invalid.
    #[error("{0}")]
    ControlsFile(#[from] file_controls::Error),
    /// The controls ConfigMap beside the Lease is unusable at start (an invalid name, a denied RBAC verb,
    /// an invalid document).
    #[error("{0}")]
    ControlsConfigMap(#[from] kube_controls::Error),
    /// The Kubernetes API stayed unavailable at start for `--startup-timeout`.
    #[error("{step}: gave up after {attempts} attempts in {} (--startup-timeout): {source}", humantime::format_duration(*.timeout))]
    StartupTimeout {
        /// The start-up request.
        step: &'static str,
        /// How many times it was tried.
        attempts: u32,
        /// `--startup-timeout`.
        timeout: Duration,
        /// The last failure.
        #[source]
        source: Box<Error>,
    },
    /// A task of ours failed.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// True if retrying later may succeed: the Kubernetes API is unreachable, timed out, or answered a 5xx
    /// or 429.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::LeaseStore(e) | Error::Kubernetes { source: e, .. } => e.is_transient(),
            Error::ConfigMap(e) => e.is_transient(),
            Error::StateConfigMap(e) => e.is_transient(),
            Error::ControlsConfigMap(e) => e.is_transient(),
            _ => false,
        }
    }

    /// True for bad input (exit 2): a name, an identity, the jobs, a permanent answer of the API (401,
    /// 403, a missing object). A transient failure that outlived the start-up timeout, or a failure of
    /// ours, is not (exit 1).
    pub fn is_usage(&self) -> bool {
        match self {
            Error::StartupTimeout { .. } | Error::Internal(_) => false,
            // Retrying later may help (an unreachable API server): a failure, not a usage error.
            error => !error.is_transient(),
        }
    }
}

/// What the backend needs from `run`'s flags.
#[derive(Debug, Clone)]
pub struct Options {
    /// Where the jobs come from.
    pub jobs: JobsSource,
    /// Elect through this local file instead of the Kubernetes API.
    pub lease_file: Option<PathBuf>,
    /// The Lease's name (also names the run state ConfigMap `<name>-state`).
    pub lease_name: String,
    /// The Lease's namespace, if given.
    pub lease_namespace: Option<String>,
    /// This replica's identity, if given.
    pub identity: Option<String>,
    /// LD: how long the identity check watches a Lease held under our identity.
    pub lease_duration: Duration,
    /// RP: a file lease's poll interval, and the run state ConfigMap's request timeout.
    pub retry_period: Duration,
    /// The largest jobs file read.
    pub max_file_size: u64,
    /// What the jobs are checked against.
    pub load: LoadOptions,
}

/// The backend, opened and checked without a request.
#[derive(Debug)]
pub enum Backend {
    /// A lease file, with the run state beside it; no Kubernetes Events.
    Local {
        /// This replica's identity (hostname-PID unless given).
        identity: String,
        /// The lease file, its identity claimed.
        lease: FileStore,
        /// The run state file beside it.
        state: StateFile,
        /// The controls file beside it.
        controls: ControlsFile,
        /// The controls as read from it at start.
        initial_controls: Controls,
        /// The jobs, loaded from their file, or the ConfigMap to read them from.
        jobs: PendingJobs,
    },
    /// A Kubernetes Lease, with the run state ConfigMap beside it and Events about it.
    Kubernetes {
        /// This replica's identity (POD_NAME or the hostname unless given).
        identity: String,
        /// The Lease.
        lease: KubeStore,
        /// The ConfigMap `<lease>-state`.
        state: StateConfigMap,
        /// The ConfigMap `<lease>-controls`.
        controls: ControlsConfigMap,
        /// The API server's URL, for messages.
        url: String,
        /// The jobs, loaded from their file, or the ConfigMap to read them from.
        jobs: PendingJobs,
    },
}

/// The jobs, loaded from a file, or still to be read from a ConfigMap.
pub enum PendingJobs {
    /// Loaded from the jobs file.
    Loaded(Jobs),
    /// To be read (and then watched) through the API.
    ConfigMap {
        /// The ConfigMap and key.
        target: ConfigMapRef,
        /// Without a retry layer or read timeout.
        client: kube::Client,
    },
}

/// What the rest of `run` gets from the backend: it no longer needs to know which one it is.
#[derive(Debug)]
pub struct Connected {
    /// This replica's identity.
    pub identity: String,
    /// The lease store the elector contends through.
    pub lease: AnyLeaseStore,
    /// The run state beside the lease.
    pub ledger: Ledger,
    /// The jobs in force at start, and their feed.
    pub jobs: Jobs,
    /// The operators' controls as they stand, kept current on every replica (leader or not) by a task
    /// that reads and watches [`Connected::controls_store`]: it publishes only a document that differs,
    /// keeps the last valid one when an invalid one is written, and publishes the empty one when the
    /// document is deleted. The task ends once every receiver is dropped.
    pub controls: watch::Receiver<Arc<Controls>>,
    /// Where the controls are kept: the file `LEASE.controls` or the ConfigMap `<lease>-controls`. The
    /// replicas only read it (the leader acknowledges requests in the run state, and on Kubernetes the
    /// replicas' Role grants no write); [`controls::update`] files requests through it.
    pub controls_store: Arc<dyn controls::Store>,
    /// Kubernetes Events about the Lease (disabled on a file lease).
    pub events: EventSink,
    /// The Kubernetes Jobs of `executor: kubernetes` jobs, in the Lease's namespace (the Kubernetes backend
    /// only; its watch starts when a job needs it).
    pub cluster: Option<Arc<Cluster>>,
}

// === impl Backend ===

impl Backend {
    /// Opens the backend `opts` name, checking what needs no request: every error here is a usage or
    /// configuration error (exit 2).
    pub async fn open(opts: &Options) -> Result<Backend, Error> {
        // A jobs file is checked before anything else; a ConfigMap once there is a client to read it with.
        let jobs_file = match &opts.jobs {
            JobsSource::File(path) => {
                Ok(Jobs::from_file(path, opts.load, opts.max_file_size).await?)
            }
            JobsSource::ConfigMap(value) => Err(value.as_str()),
        };
        match &opts.lease_file {
            Some(lease_file) => {
                let identity = resolve_identity(opts.identity.clone(), true)?;
                // Watched through inotify; polled every RP as the fallback.
                let mut lease = FileStore::open(lease_file, opts.retry_period)?;
                // A corrupt lease file is a configuration error: find out before anything runs.
                lease.get().await?;
                // Another live process with this identity would hold it (on Kubernetes the Lease tells).
                lease.claim_identity(&identity)?;
                // An invalid controls file is a configuration error too, as an invalid jobs file.
                let controls = ControlsFile::beside(lease_file);
                let initial_controls = controls.load().await?.controls;
                let jobs = match jobs_file {
                    Ok(jobs) => PendingJobs::Loaded(jobs),
                    Err(value) => {
                        // A local lease with the jobs in a cluster: the namespace as for a Lease.
                        let config = kubernetes::infer_config().await?;
                        let namespace = resolve_namespace(opts.lease_namespace.clone(), &config)?;
                        PendingJobs::configmap(value, &config, namespace)?
                    }
                };
                Ok(Backend::Local {
                    identity,
                    lease,
                    state: StateFile::beside(lease_file),
                    controls,
                    initial_controls,
                    jobs,
                })
            }
            None => {
                let identity = resolve_identity(opts.identity.clone(), false)?;
                let (lease, config) = open_kube_lease(opts).await?;
                let jobs = match jobs_file {
                    Ok(jobs) => PendingJobs::Loaded(jobs.checking_state_capacity()?),
                    Err(value) => {
                        PendingJobs::configmap(value, &config, lease.params().namespace.clone())?
                    }
                };
                // The run state beside the Lease.
                let state = StateConfigMap::new(
                    config.clone(),
                    &lease.params().namespace,
                    &opts.lease_name,
                    opts.retry_period,
                )?;
                // The controls beside it, through the same client configuration and timeout.
                let controls = ControlsConfigMap::new(
                    config.clone(),
                    &lease.params().namespace,
                    &opts.lease_name,
                    opts.retry_period,
                )?;
                Ok(Backend::Kubernetes {
                    identity,
                    lease,
                    state,
                    controls,
                    url: config.cluster_url.to_string(),
                    jobs,
                })
            }
        }
    }

    /// The start-up requests: reads the Lease, checks the RBAC verbs, reads the jobs ConfigMap and the
    /// controls ConfigMap, checks the identity. Transient failures are retried by `startup`; nothing is
    /// written. Starts the controls' feed.
    pub async fn connect(self, opts: &Options, startup: &mut Startup) -> Result<Connected, Error> {
        match self {
            Backend::Local {
                identity,
                lease,
                state,
                controls,
                initial_controls,
                jobs,
            } => {
                let jobs = jobs
                    .load(opts.load, startup)
                    .await?
                    .refusing_kubernetes_jobs()?;
                let (controls_tx, controls_rx) = watch::channel(Arc::new(initial_controls));
                tokio::spawn(file_controls::watch(
                    controls.clone(),
                    controls_tx,
                    CancellationToken::new(),
                ));
                Ok(Connected {
                    ledger: Ledger::new(state, identity.clone()),
                    identity,
                    lease: AnyLeaseStore::File(lease),
                    jobs,
                    controls: controls_rx,
                    controls_store: Arc::new(controls),
                    // No cluster, no Kubernetes Events, no Kubernetes Jobs.
                    events: EventSink::disabled(),
                    cluster: None,
                })
            }
            Backend::Kubernetes {
                identity,
                lease,
                state,
                controls,
                url,
                jobs,
            } => {
                let start_error = |source| Error::Kubernetes {
                    url: url.clone(),
                    source,
                };
                startup
                    .retry("reading the Lease", || async {
                        lease.get().await.map_err(start_error)
                    })
                    .await?;
                lease.check_access().await.map_err(start_error)?;
                // The jobs before the identity check, which may watch the Lease for a lease duration.
                let jobs = match jobs {
                    PendingJobs::Loaded(jobs) => jobs,
                    pending => pending
                        .load(opts.load, startup)
                        .await?
                        .checking_state_capacity()?,
                };
                // The run state's RBAC is checked now, like the Lease's; then the controls' (get and
                // watch), and the controls as they stand, which the feed then follows.
                state.check_access().await?;
                controls.check_access().await?;
                let initial_controls = startup
                    .retry("reading the controls ConfigMap", || async {
                        Ok(controls.load().await?.controls)
                    })
                    .await?;
                let controls = Arc::new(controls);
                let (controls_tx, controls_rx) = watch::channel(Arc::new(initial_controls));
                tokio::spawn(kube_controls::watch(
                    Arc::clone(&controls),
                    kube_controls::FeedParams::default(),
                    controls_tx,
                    CancellationToken::new(),
                ));
                startup
                    .retry("checking the identity against the Lease", || async {
                        lease
                            .check_identity(&identity, opts.lease_duration)
                            .await
                            .map_err(start_error)
                    })
                    .await?;
                let events = EventSink::new(
                    lease.client(),
                    &lease.params().namespace,
                    &lease.params().name,
                    &identity,
                );
                let cluster = Cluster::new(
                    lease.client(),
                    batch::Params {
                        namespace: lease.params().namespace.clone(),
                        lease: lease.params().name.clone(),
                        request_timeout: lease.params().request_timeout,
                    },
                );
                Ok(Connected {
                    ledger: Ledger::new(state, identity.clone()),
                    identity,
                    lease: AnyLeaseStore::Kube(lease),
                    jobs,
                    controls: controls_rx,
                    controls_store: controls,
                    events,
                    cluster: Some(cluster),
                })
            }
        }
    }
}

// === impl PendingJobs ===

impl std::fmt::Debug for PendingJobs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PendingJobs::Loaded(jobs) => f.debug_tuple("Loaded").field(jobs).finish(),
            PendingJobs::ConfigMap { target, .. } => f
                .debug_struct("ConfigMap")
                .field("target", target)
                .finish_non_exhaustive(),
        }
    }
}

impl PendingJobs {
    /// The ConfigMap `value` (`NAME[/KEY]`) in `namespace`, with a client to read it.
    fn configmap(
        value: &str,
        config: &kube::Config,
        namespace: String,
    ) -> Result<PendingJobs, Error> {
        Ok(PendingJobs::ConfigMap {
            target: ConfigMapRef::parse(value, namespace)?,
            // kube's retry layer off (every request is bounded by its params), no read timeout (a watch
            // is quiet for minutes).
            client: kubernetes::client(config.clone(), None)?,
        })
    }

    /// The jobs: as loaded, or read from the ConfigMap (its RBAC checked first).
    async fn load(self, load: LoadOptions, startup: &mut Startup) -> Result<Jobs, Error> {
        match self {
            PendingJobs::Loaded(jobs) => Ok(jobs),
            PendingJobs::ConfigMap { target, client } => {
                Jobs::from_configmap(target, client, load, startup).await
            }
        }
    }
}

/// The lease store the backend chose: one type, so the elector and everything above it are compiled once.
#[derive(Debug)]
pub enum AnyLeaseStore {
    /// A lease file.
    File(FileStore),
    /// A Kubernetes Lease.
    Kube(KubeStore),
}

// === impl AnyLeaseStore ===

impl LeaseStore for AnyLeaseStore {
    fn describe(&self) -> String {
        match self {
            AnyLeaseStore::File(store) => store.describe(),
            AnyLeaseStore::Kube(store) => store.describe(),
        }
    }

    async fn get(&self) -> Result<Option<Versioned>, lease_store::Error> {
        match self {
            AnyLeaseStore::File(store) => store.get().await,
            AnyLeaseStore::Kube(store) => store.get().await,
        }
    }

    async fn create(&self, record: &LeaseRecord) -> Result<Versioned, lease_store::Error> {
        match self {
            AnyLeaseStore::File(store) => store.create(record).await,
            AnyLeaseStore::Kube(store) => store.create(record).await,
        }
    }

    async fn update(
        &self,
        record: &LeaseRecord,
        version: &str,
    ) -> Result<Versioned, lease_store::Error> {
        match self {
            AnyLeaseStore::File(store) => store.update(record, version).await,
            AnyLeaseStore::Kube(store) => store.update(record, version).await,
        }
    }

    async fn changed(&self, known: Option<String>) -> Change {
        match self {
            AnyLeaseStore::File(store) => store.changed(known).await,
            AnyLeaseStore::Kube(store) => store.changed(known).await,
        }
    }
}

/// The Kubernetes Lease store, opened without a request: valid names and a usable client configuration.
/// Returns the client configuration too, for the ConfigMaps.
async fn open_kube_lease(opts: &Options) -> Result<(KubeStore, kube::Config), Error> {
    check_lease_name(&opts.lease_name)?;
    // A bad name given is a usage error whatever the client configuration.
    if let Some((flag, namespace)) = namespace_from_flag_or_env(opts.lease_namespace.clone()) {
        check_namespace(flag, &namespace)?;
    }
    let config = kubernetes::infer_config().await?;
    let namespace = resolve_namespace(opts.lease_namespace.clone(), &config)?;
    let params = kube_lease::Params::new(namespace, &opts.lease_name, opts.retry_period);
    let store = KubeStore::new(config.clone(), params)?;
    Ok((store, config))
}

/// `--lease-name` checked as a Lease name.
pub(crate) fn check_lease_name(name: &str) -> Result<(), Error> {
    names::check_object_name(name).map_err(|why| Error::InvalidName {
        flag: "--lease-name",
        value: name.to_owned(),
        why,
    })
}

/// The namespace of the Lease (and of `--jobs-configmap`): the flag or its environment, else the client
/// configuration's.
pub(crate) fn resolve_namespace(
    flag: Option<String>,
    config: &kube::Config,
) -> Result<String, Error> {
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
    names::check_namespace(namespace).map_err(|why| Error::InvalidName {
        flag,
        value: namespace.to_owned(),
        why,
    })
}

/// The identity: the flag (or `LEASECRON_IDENTITY`), else `POD_NAME`, else the hostname. On a local file
/// lease several processes usually share one hostname, so there the hostname gets the process id appended.
pub(crate) fn resolve_identity(flag: Option<String>, local: bool) -> Result<String, Error> {
    if let Some(id) = flag {
        if id.trim().is_empty() {
            return Err(Error::EmptyIdentity);
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_identity_is_refused_not_replaced() {
        for empty in ["", "  "] {
            let error = resolve_identity(Some(empty.to_owned()), true).expect_err("empty");
            assert!(matches!(error, Error::EmptyIdentity), "{error:?}");
            assert!(error.is_usage());
        }
        assert_eq!(
            resolve_identity(Some("r1".to_owned()), true).expect("given"),
            "r1"
        );
    }
}
