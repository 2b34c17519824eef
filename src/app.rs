//! `run`, `validate` and `next`: the commands, wired from the modules.
//!
//! `main.rs` parses the flags into [`RunOptions`] and calls [`run`]; nothing else knows about the CLI.
//! Everything that can be checked before the lease is touched is checked first (lease timings, the jobs
//! file, the lease store, the HTTP address), so a bad input exits 2 without side effects.
//!
//! # Start-up against an unavailable API
//!
//! The start-up requests to the Kubernetes API (the GET of the Lease, the read of `--jobs-configmap`, the
//! identity check) are retried while they fail transiently — unreachable, a reset connection, a timeout, a
//! 5xx or a 429 — with a capped exponential backoff and jitter, for up to `--startup-timeout` (then exit 1
//! with the last error): a brief outage while a pod starts no longer costs a crash-loop back-off. A
//! permanent answer (403, 401, a missing ConfigMap, invalid jobs) still exits 2 at once. Meanwhile the HTTP
//! endpoint is up, `/healthz` healthy and `/readyz` not ready, and SIGTERM or SIGINT exits 0 at once: the
//! Lease has not been touched.
//!
//! # Signals
//!
//! Before it opens anything, `run` installs the handlers of SIGHUP (re-read the jobs), SIGUSR1, SIGUSR2
//! and SIGALRM (ignored, logged): from then on none of them ends the process ([`crate::signals`]). SIGTERM
//! and SIGINT shut down ([`crate::shutdown`]).

use std::future::Future;
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
use crate::http::{self, Endpoints, Health, StatusBoard};
use crate::kubernetes::events::EventSink;
use crate::kubernetes::jobs_configmap::{self, ConfigMapRef};
use crate::kubernetes::lease::{self as kube_store, KubeStore};
use crate::kubernetes::run_state::{self as kube_state, StateConfigMap};
use crate::lease_store::{self, LeaseStore};
use crate::local::jobs_file;
use crate::local::lease::FileStore;
use crate::local::run_state::StateFile;
use crate::metrics::{self, Metrics};
use crate::observe::{self, ConfigReload, Observers};
use crate::reaper::{self, Reaper};
use crate::reload::{self, Reloader, Snapshot};
use crate::run_state::{JobRecord, Ledger, StateRecord};
use crate::runner::{Launcher, Runner};
use crate::shutdown::{self, Signals, FORCED_EXIT_CODE};
use crate::signals;
use crate::stall::StallWatch;
use crate::supervisor::{self, Supervisor};

/// Exit code for a usage or configuration error.
pub const EXIT_USAGE: i32 = 2;
/// Exit code for a failure at run time.
pub const EXIT_FAILURE: i32 = 1;
/// At shutdown, how long the fan-out task gets to hand the last events to the Kubernetes Events sink.
const EVENTS_HANDOVER: Duration = Duration::from_millis(50);
/// On a forced exit (a second signal), how long the last log lines may take to be written.
const FORCED_EXIT_LOG_FLUSH: Duration = Duration::from_millis(500);
/// At shutdown, how long writing the last Kubernetes Events may take.
const EVENTS_FLUSH_TIMEOUT: Duration = Duration::from_secs(2);
/// The first wait between start-up attempts; it doubles per attempt, up to [`STARTUP_RETRY_MAX_DELAY`].
const STARTUP_RETRY_FIRST_DELAY: Duration = Duration::from_millis(500);
/// The longest wait between start-up attempts: a recovered API server is noticed within this.
const STARTUP_RETRY_MAX_DELAY: Duration = Duration::from_secs(15);

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
    /// `--identity` (or `LEASECRON_IDENTITY`) is empty or blank.
    #[error(
        "--identity is empty: give this replica a name unique among the replicas, or leave the flag (and \
         LEASECRON_IDENTITY) out to use POD_NAME or the hostname"
    )]
    EmptyIdentity,
    /// The lease timings leave no time for any `terminationGrace`: RD ≥ LD − margin.
    #[error(
        "--renew-deadline ({}) leaves no time for the jobs' terminationGrace: renew deadline + grace must \
         stay within --lease-duration ({}) minus its safety margin max(1s, lease duration / 10) ({}); {advice}",
        humantime::format_duration(*.renew_deadline),
        humantime::format_duration(*.lease_duration),
        humantime::format_duration(*.margin)
    )]
    NoRoomForGrace {
        /// LD.
        lease_duration: Duration,
        /// RD.
        renew_deadline: Duration,
        /// max(1 s, LD/10).
        margin: Duration,
        /// Which flags to change, and to what, for the default grace.
        advice: String,
    },
    /// `next --lease-file PATH` names no lease file and no run state.
    #[error(
        "--lease-file {}: there is no run state at {} (and no lease file at {}): check the path; the run \
         state is written beside the lease file once a leader has run a job",
        lease.display(),
        state.display(),
        lease.display()
    )]
    NoRunState {
        /// The lease file given.
        lease: PathBuf,
        /// Where its run state would be.
        state: PathBuf,
    },
    /// `help COMMAND` names no command.
    #[error("help {0}: no such command (the commands are run, validate, next and help)")]
    UnknownCommand(String),
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
    /// The handlers of the signals that do not shut down could not be installed.
    #[error("{0}")]
    OtherSignals(#[from] signals::Error),
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
    State(#[from] crate::run_state::Error),
    /// The run state's ConfigMap is unusable at start (an invalid name, a denied RBAC verb).
    #[error("{0}")]
    StateConfigMap(#[from] crate::kubernetes::run_state::Error),
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
    /// A task of ours panicked.
    #[error("internal error: {0}")]
    Internal(String),
    /// The run supervisor could not be started.
    #[error("{0}")]
    Supervisor(#[from] supervisor::Error),
    /// The run supervisor died while leasecron ran (killed by hand): the term was ended and the lease
    /// released; leasecron exits to be restarted with a new one rather than run without.
    #[error(
        "the run supervisor (pid {pid}) died: its runs were ended, the lease released; exiting so that a \
         restart brings a new one"
    )]
    SupervisorLost {
        /// Its pid.
        pid: u32,
    },
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

    /// True if retrying later may succeed: the Kubernetes API is unreachable, timed out, or answered a 5xx
    /// or 429.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::LeaseStore(e) | Error::Kubernetes { source: e, .. } => e.is_transient(),
            Error::ConfigMap(e) => e.is_transient(),
            Error::StateConfigMap(e) => e.is_transient(),
            _ => false,
        }
    }

    /// The process exit code for this error: 2 for bad input, 1 for failures at run time.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Config(_)
            | Error::Invalid(_)
            | Error::InvalidName { .. }
            | Error::Identity(_)
            | Error::EmptyIdentity
            | Error::UnknownCommand(_)
            | Error::NoRoomForGrace { .. }
            | Error::NoRunState { .. }
            | Error::UnknownJob(_)
            | Error::StateCapacity { .. }
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
    /// of at most LD − margin − RD (docs/design.md §2).
    ///
    /// Timings that leave no time for any grace (RD ≥ LD − margin) are [`Error::NoRoomForGrace`], which
    /// says what would fit the default grace, rather than a check of "the largest grace" that no job has
    /// been read for yet.
    pub fn load_options(&self) -> Result<LoadOptions, Error> {
        let config = self.election_config("-".to_owned(), Duration::ZERO);
        match config.validate() {
            Ok(()) => Ok(LoadOptions::for_lease_timings(&config)),
            Err(election::Error::LeaseTooShort { .. }) => {
                Err(self.no_room_for_grace(config.margin()))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// [`Error::NoRoomForGrace`], with the LD and RD that would fit the default grace.
    fn no_room_for_grace(&self, margin: Duration) -> Error {
        let grace = config::DEFAULT_TERMINATION_GRACE;
        let needed = self.renew_deadline.saturating_add(grace);
        // LD ≥ RD + G + max(1 s, LD/10): RD + G + 1 s up to 10 s, else (RD + G) × 10/9; in whole seconds.
        let with_min_margin = needed.saturating_add(election::MIN_MARGIN);
        let lease_duration_needed = if with_min_margin <= election::MIN_MARGIN * 10 {
            with_min_margin
        } else {
            needed.saturating_mul(10) / 9
        };
        let lease_duration_needed = Duration::from_secs(
            lease_duration_needed.as_secs() + u64::from(lease_duration_needed.subsec_nanos() > 0),
        );
        let format = humantime::format_duration;
        let raise = format!(
            "raise --lease-duration to at least {}",
            format(lease_duration_needed)
        );
        let renew_deadline_allowed = self
            .lease_duration
            .saturating_sub(margin)
            .saturating_sub(grace);
        // client-go's rule, RD ≥ 1.2 × RP, still has to hold.
        let lower = (renew_deadline_allowed.as_nanos() * 5 >= self.retry_period.as_nanos() * 6)
            .then(|| {
                format!(
                    " or lower --renew-deadline to at most {}",
                    format(renew_deadline_allowed)
                )
            });
        Error::NoRoomForGrace {
            lease_duration: self.lease_duration,
            renew_deadline: self.renew_deadline,
            margin,
            advice: format!(
                "for the default grace of {}, {raise}{}",
                format(grace),
                lower.unwrap_or_default()
            ),
        }
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

impl JobsSource {
    /// "the jobs file PATH" or "the jobs ConfigMap NAME[/KEY]", for the log.
    pub fn describe(&self) -> String {
        match self {
            JobsSource::File(path) => format!("the jobs file {}", path.display()),
            JobsSource::ConfigMap(value) => format!("the jobs ConfigMap {value}"),
        }
    }
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
    /// How long to retry transient Kubernetes API failures at start (zero: not at all).
    pub startup_timeout: Duration,
    /// The leasecron binary, started again as the run supervisor (`/proc/self/exe`).
    pub supervisor_program: PathBuf,
    /// The format of the supervisor's log lines, as leasecron's.
    pub log_format: supervisor::LogFormat,
    /// The largest jobs file read, at start and on every reload (`--max-file-size`).
    pub max_file_size: u64,
}

/// `leasecron run`: elect, fire, run, until SIGTERM/SIGINT; then end the runs, release, return `Ok`.
///
/// Elects through `--lease-file` if given, else through a Kubernetes Lease. Makes this process the
/// subreaper of its descendants and, at the end of every term, kills every descendant still alive (the
/// processes the runs left behind): call it only from a process whose every child is one of its runs.
pub async fn run(opts: RunOptions, clock: SharedClock) -> Result<(), Error> {
    // First, while nothing else runs: every run's process is its child, and it keeps the open file limits
    // this process was started with.
    let supervisor = Supervisor::start(&opts.supervisor_program, opts.log_format)?;
    tracing::debug!(pid = supervisor.pid(), "run supervisor started");
    let result = run_supervised(opts, clock, Arc::clone(&supervisor)).await;
    let lost = supervisor.lost().is_cancelled();
    supervisor.stop().await;
    match result {
        Ok(()) if lost => Err(Error::SupervisorLost {
            pid: supervisor.pid(),
        }),
        result => result,
    }
}

async fn run_supervised(
    opts: RunOptions,
    clock: SharedClock,
    supervisor: Arc<Supervisor>,
) -> Result<(), Error> {
    raise_open_file_limit();
    // Before the lease store is opened: SIGHUP and the like must never end the process (a SIGHUP that
    // arrives before the jobs are watched is kept for the watch).
    let reread = reload::Reread::new();
    tokio::spawn(signals::Handlers::install(reread.clone(), opts.jobs.describe())?.run());
    let load = opts.timings.load_options()?;
    // Everything that needs no request first: a bad input exits 2 before the HTTP port is taken.
    let opened = open(&opts, load).await?;
    // Up before the start-up requests, which may be retried for a while: probes see the replica live (not
    // ready), and a signal ends it cleanly.
    let listener = http::bind(opts.http_addr).await?;
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "serving /healthz, /readyz, /metrics and /status");
    }
    let mut signals = Signals::install()?;
    let (listener, starting) = StartingEndpoint::serve(listener)?;
    let mut startup = Startup::new(opts.startup_timeout);
    let prepared = tokio::select! {
        prepared = opened.connect(&opts, load, &mut startup) => prepared,
        signal = signals.recv() => {
            tracing::info!(signal, "shutting down during start-up; the lease was not touched");
            starting.stop().await;
            return Ok(());
        }
    };
    starting.stop().await;
    let started = Started {
        reread,
        listener,
        signals,
        clock,
        supervisor,
    };
    match prepared? {
        Prepared::File {
            jobs,
            identity,
            lease,
        } => run_with(opts, jobs, identity, lease, started).await,
        Prepared::Kube {
            jobs,
            identity,
            lease,
        } => run_with(opts, jobs, identity, lease, started).await,
    }
}

/// What `run` opens and checks without a request: the identity, the lease store, the jobs file (or where
/// the jobs ConfigMap is), the run state's name.
struct Opened {
    identity: String,
    jobs: PendingJobs,
    store: OpenedStore,
}

/// The jobs, loaded from a file, or still to be read from a ConfigMap.
enum PendingJobs {
    Loaded(Jobs),
    ConfigMap {
        target: ConfigMapRef,
        /// Without a retry layer or read timeout.
        client: kube::Client,
    },
}

/// The lease store, opened.
enum OpenedStore {
    File {
        store: FileStore,
        state: StateFile,
    },
    Kube {
        store: KubeStore,
        state: StateConfigMap,
        /// The API server's URL, for messages.
        url: String,
    },
}

/// What `run` opened and checked at start, before anything is written.
enum Prepared {
    /// A local lease file.
    File {
        jobs: Jobs,
        identity: String,
        lease: Lease<FileStore>,
    },
    /// A Kubernetes Lease.
    Kube {
        jobs: Jobs,
        identity: String,
        lease: Lease<KubeStore>,
    },
}

/// What `run` set up before the lease store: the HTTP listener, the signal handlers, the clock.
struct Started {
    /// SIGHUP's requests to re-read the jobs.
    reread: reload::Reread,
    listener: tokio::net::TcpListener,
    signals: Signals,
    clock: SharedClock,
    supervisor: Arc<Supervisor>,
}

/// Opens the lease store, the jobs file and the run state, and checks what needs no request: every
/// error here is a usage or configuration error (exit 2).
async fn open(opts: &RunOptions, load: LoadOptions) -> Result<Opened, Error> {
    // A jobs file is checked before anything else; a ConfigMap once there is a client to read it with.
    let jobs_source = match &opts.jobs {
        JobsSource::File(path) => Ok(Jobs::from_file(path, load, opts.max_file_size).await?),
        JobsSource::ConfigMap(value) => Err(value.as_str()),
    };
    match &opts.lease_file {
        Some(lease_file) => {
            let identity = resolve_identity(opts.identity.clone(), true)?;
            // Watched through inotify; polled every RP as the fallback.
            let mut store = FileStore::open(lease_file, opts.timings.retry_period)?;
            // A corrupt lease file is a configuration error: find out before anything runs.
            store.get().await?;
            // Another live process with this identity would hold it (on Kubernetes the Lease tells).
            store.claim_identity(&identity)?;
            let jobs = match jobs_source {
                Ok(jobs) => PendingJobs::Loaded(jobs),
                Err(value) => {
                    // A local lease with the jobs in a cluster: the namespace as for a Lease.
                    let config = kube_store::infer_config().await?;
                    let namespace = resolve_namespace(opts.lease_namespace.clone(), &config)?;
                    PendingJobs::configmap(value, &config, namespace)?
                }
            };
            Ok(Opened {
                identity,
                jobs,
                store: OpenedStore::File {
                    store,
                    state: StateFile::beside(lease_file),
                },
            })
        }
        None => {
            let identity = resolve_identity(opts.identity.clone(), false)?;
            let (store, config) = open_kube_store(opts).await?;
            let jobs = match jobs_source {
                Ok(jobs) => PendingJobs::Loaded(jobs.checking_state_capacity()?),
                Err(value) => {
                    PendingJobs::configmap(value, &config, store.params().namespace.clone())?
                }
            };
            // The run state beside the Lease.
            let state = StateConfigMap::new(
                config.clone(),
                &store.params().namespace,
                &opts.lease_name,
                opts.timings.retry_period,
            )?;
            Ok(Opened {
                identity,
                jobs,
                store: OpenedStore::Kube {
                    store,
                    state,
                    url: config.cluster_url.to_string(),
                },
            })
        }
    }
}

// === impl Opened ===

impl Opened {
    /// The start-up requests: reads the Lease, checks the RBAC verbs, reads the jobs ConfigMap, checks
    /// the identity. Transient failures are retried by `startup`; nothing is written.
    async fn connect(
        self,
        opts: &RunOptions,
        load: LoadOptions,
        startup: &mut Startup,
    ) -> Result<Prepared, Error> {
        let Opened {
            identity,
            jobs,
            store,
        } = self;
        match store {
            OpenedStore::File { store, state } => {
                let jobs = jobs.load(load, startup).await?;
                let lease = Lease {
                    store,
                    ledger: Ledger::new(state, identity.clone()),
                    // No cluster, no Kubernetes Events.
                    events: EventSink::disabled(),
                };
                Ok(Prepared::File {
                    jobs,
                    identity,
                    lease,
                })
            }
            OpenedStore::Kube { store, state, url } => {
                let start_error = |source| Error::Kubernetes {
                    url: url.clone(),
                    source,
                };
                startup
                    .retry("reading the Lease", || async {
                        store.get().await.map_err(start_error)
                    })
                    .await?;
                store.check_access().await.map_err(start_error)?;
                // The jobs before the identity check, which may watch the Lease for a lease duration.
                let jobs = match jobs {
                    PendingJobs::Loaded(jobs) => jobs,
                    pending => pending
                        .load(load, startup)
                        .await?
                        .checking_state_capacity()?,
                };
                // The run state's RBAC is checked now, like the Lease's.
                state.check_access().await?;
                startup
                    .retry("checking the identity against the Lease", || async {
                        store
                            .check_identity(&identity, opts.timings.lease_duration)
                            .await
                            .map_err(start_error)
                    })
                    .await?;
                let events = EventSink::new(
                    store.client(),
                    &store.params().namespace,
                    &store.params().name,
                    &identity,
                );
                let lease = Lease {
                    store,
                    ledger: Ledger::new(state, identity.clone()),
                    events,
                };
                Ok(Prepared::Kube {
                    jobs,
                    identity,
                    lease,
                })
            }
        }
    }
}

// === impl PendingJobs ===

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
            client: kube_store::client(config.clone(), None)?,
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

/// Retries the start-up requests while they fail transiently ([`Error::is_transient`]), until a deadline.
#[derive(Debug)]
struct Startup {
    timeout: Duration,
    deadline: tokio::time::Instant,
    /// The state of the jitter's generator (xorshift64*).
    jitter: u64,
}

// === impl Startup ===

impl Startup {
    fn new(timeout: Duration) -> Startup {
        // Replicas started together must not retry in step: seed from the clock and the process id.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        Startup {
            timeout,
            deadline: tokio::time::Instant::now() + timeout,
            jitter: (nanos ^ (u64::from(std::process::id()) << 32)) | 1,
        }
    }

    /// Runs `call` until it succeeds, fails permanently, or fails transiently after the deadline
    /// ([`Error::StartupTimeout`] with the last failure). Each retry is logged at warn.
    async fn retry<T, F: Future<Output = Result<T, Error>>>(
        &mut self,
        step: &'static str,
        mut call: impl FnMut() -> F,
    ) -> Result<T, Error> {
        let mut attempt = 1;
        loop {
            let error = match call().await {
                Ok(value) => {
                    if attempt > 1 {
                        tracing::info!(
                            step,
                            attempts = attempt,
                            "the Kubernetes API answers again"
                        );
                    }
                    return Ok(value);
                }
                Err(error) if !error.is_transient() => return Err(error),
                Err(error) => error,
            };
            let remaining = self
                .deadline
                .saturating_duration_since(tokio::time::Instant::now());
            if remaining.is_zero() {
                return Err(Error::StartupTimeout {
                    step,
                    attempts: attempt,
                    timeout: self.timeout,
                    source: Box::new(error),
                });
            }
            let delay = self.delay(attempt).min(remaining);
            tracing::warn!(
                step,
                attempt,
                %error,
                retry_in_seconds = delay.as_secs_f64(),
                "the Kubernetes API is unavailable at start; retrying"
            );
            tokio::time::sleep(delay).await;
            attempt += 1;
        }
    }

    /// The wait after failed attempt `attempt`: doubling from [`STARTUP_RETRY_FIRST_DELAY`] up to
    /// [`STARTUP_RETRY_MAX_DELAY`], then a random half of it taken off ("equal jitter"), in milliseconds.
    fn delay(&mut self, attempt: u32) -> Duration {
        let doubled =
            STARTUP_RETRY_FIRST_DELAY.saturating_mul(1 << attempt.saturating_sub(1).min(16));
        let ceiling = doubled.min(STARTUP_RETRY_MAX_DELAY).as_millis() as u64;
        self.jitter ^= self.jitter >> 12;
        self.jitter ^= self.jitter << 25;
        self.jitter ^= self.jitter >> 27;
        let random = self.jitter.wrapping_mul(0x2545_F491_4F6C_DD1D);
        let half = ceiling / 2;
        Duration::from_millis(ceiling - random % (half + 1))
    }
}

/// The endpoint while starting ([`http::serve_starting`]), on a second handle of the listener that the
/// full endpoint takes over afterwards: connections that arrive meanwhile wait in the socket's backlog.
struct StartingEndpoint {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), http::Error>>,
}

impl StartingEndpoint {
    /// Serves the starting endpoint on a duplicate of `listener`; returns `listener` for the full one.
    fn serve(
        listener: tokio::net::TcpListener,
    ) -> Result<(tokio::net::TcpListener, StartingEndpoint), Error> {
        let shared = || -> std::io::Result<_> {
            let listener = listener.into_std()?;
            let duplicate = listener.try_clone()?;
            Ok((
                tokio::net::TcpListener::from_std(listener)?,
                tokio::net::TcpListener::from_std(duplicate)?,
            ))
        };
        let (listener, duplicate) = shared()
            .map_err(|e| Error::Internal(format!("cannot share the HTTP listener: {e}")))?;
        let stop = CancellationToken::new();
        let task = tokio::spawn(http::serve_starting(duplicate, stop.clone()));
        Ok((listener, StartingEndpoint { stop, task }))
    }

    /// Stops it once the requests it is answering are answered.
    async fn stop(self) {
        self.stop.cancel();
        if let Ok(Err(error)) = self.task.await {
            tracing::warn!(%error, "the HTTP endpoint failed while starting");
        }
    }
}

/// Raises the soft open file limit to the hard one: each run in flight holds about three descriptors, and
/// the usual soft limit of 1 024 would cap the runs in flight at about 330. The runs' processes get the
/// limits as they were. Logs what it did; a failure only costs capacity, so it is a warning.
fn raise_open_file_limit() {
    match crate::runner::raise_open_file_limit() {
        Ok(limit) if limit.after > limit.before => tracing::info!(
            before = limit.before,
            after = limit.after,
            "raised the open file limit (soft RLIMIT_NOFILE) to the hard limit; runs get the limit as it was"
        ),
        Ok(limit) => tracing::debug!(
            soft = limit.after,
            hard = limit.hard,
            "the open file limit (soft RLIMIT_NOFILE) is already the hard limit"
        ),
        Err(error) => tracing::warn!(
            %error,
            "cannot raise the open file limit (RLIMIT_NOFILE): runs in flight are limited by the soft limit"
        ),
    }
}

/// The jobs in force at start, and where to watch for new versions.
struct Jobs {
    set: JobSet,
    snapshot: Snapshot,
    load: LoadOptions,
    watcher: Watcher,
    /// Refuse job sets whose run state may not fit in its ConfigMap (at start and on every reload).
    check_state_capacity: bool,
}

/// What keeps the jobs current.
enum Watcher {
    /// The jobs file, with `notify` and a periodic re-read.
    File {
        /// The file.
        path: PathBuf,
        /// The largest version read.
        max_size: u64,
    },
    /// The ConfigMap, watched through the API.
    ConfigMap {
        /// Without a retry layer or read timeout.
        client: kube::Client,
        /// The ConfigMap and key.
        target: ConfigMapRef,
        /// Timeouts and intervals.
        params: Box<jobs_configmap::Params>,
    },
}

impl Jobs {
    /// Loads the jobs file (at most `max_size` bytes): unreadable, too large or invalid is a
    /// configuration error (exit 2).
    async fn from_file(path: &Path, load: LoadOptions, max_size: u64) -> Result<Jobs, Error> {
        let owned = path.to_path_buf();
        let text = tokio::task::spawn_blocking(move || config::read_text(&owned, max_size))
            .await
            .map_err(|e| Error::Internal(format!("reading the jobs file: {e}")))??;
        let snapshot = Snapshot {
            origin: path.display().to_string(),
            text: Ok(text),
        };
        Jobs::load(
            snapshot,
            load,
            Watcher::File {
                path: path.to_path_buf(),
                max_size,
            },
        )
    }

    /// Reads the ConfigMap `target` through `client`: checks the RBAC it needs, then loads it. A missing
    /// ConfigMap or key, a denied verb or invalid jobs exit 2; an API that stays unreachable past the
    /// start-up timeout 1.
    async fn from_configmap(
        target: ConfigMapRef,
        client: kube::Client,
        load: LoadOptions,
        startup: &mut Startup,
    ) -> Result<Jobs, Error> {
        let params = jobs_configmap::Params::default();
        jobs_configmap::check_access(&client, &target, &params).await?;
        let snapshot = startup
            .retry("reading --jobs-configmap", || async {
                Ok(jobs_configmap::read(&client, &target, &params).await?)
            })
            .await?;
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
            check_state_capacity: false,
        })
    }

    /// For a run state in a ConfigMap: refuses these jobs now if their run state may not fit, and every
    /// reload that would not.
    fn checking_state_capacity(mut self) -> Result<Jobs, Error> {
        if let Err(source) = state_capacity(&self.set) {
            return Err(Error::StateCapacity {
                origin: self.snapshot.origin.clone(),
                source,
            });
        }
        self.check_state_capacity = true;
        Ok(self)
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

    /// Starts watching the source (re-reading it whenever `reread` asks) and reloading, until `stop`;
    /// returns the jobs in force as they change.
    fn spawn(
        self,
        observers: Observers,
        reread: reload::Reread,
        stop: &CancellationToken,
    ) -> watch::Receiver<Arc<JobSet>> {
        let (snapshots_tx, snapshots) = watch::channel(self.snapshot);
        let (jobs_tx, jobs) = watch::channel(Arc::new(self.set));
        match self.watcher {
            Watcher::File { path, max_size } => {
                // A version that fails right after a change may be a save still being written: the
                // source reads it once more before it is reported.
                let load = self.load;
                let check_capacity = self.check_state_capacity;
                let settles = jobs_file::Options {
                    max_size,
                    is_valid: Some(Arc::new(move |text: &str| {
                        config::parse_str(text, "", &load)
                            .is_ok_and(|set| !check_capacity || state_capacity(&set).is_ok())
                    })),
                };
                tokio::spawn(jobs_file::watch_with(
                    path,
                    snapshots_tx,
                    reread,
                    stop.clone(),
                    settles,
                ));
            }
            Watcher::ConfigMap {
                client,
                target,
                params,
            } => {
                tokio::spawn(jobs_configmap::watch(
                    client,
                    target,
                    *params,
                    snapshots_tx,
                    reread,
                    stop.clone(),
                ));
            }
        }
        let mut reloader = Reloader::new(self.load, jobs_tx, observers);
        if self.check_state_capacity {
            reloader = reloader.with_check(Box::new(|set: &JobSet| {
                state_capacity(set).map_err(|e| e.to_string())
            }));
        }
        tokio::spawn(reloader.run(snapshots, stop.clone()));
        jobs
    }
}

/// `Err` if the run state of `set` may not fit in its ConfigMap.
fn state_capacity(set: &JobSet) -> Result<(), kube_state::CapacityError> {
    let names = set.jobs.iter().map(|job| job.name.as_str());
    kube_state::capacity_error(names).map_or(Ok(()), Err)
}

/// The Kubernetes Lease store, opened without a request: valid names and a usable client configuration.
/// Returns the client configuration too, for the ConfigMaps. [`Opened::connect`] makes the requests.
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
    let params = kube_store::Params::new(namespace, &opts.lease_name, opts.timings.retry_period);
    let store = KubeStore::new(config.clone(), params)?;
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
    started: Started,
) -> Result<(), Error> {
    let Lease {
        store,
        ledger,
        events,
    } = lease;
    let Started {
        reread,
        listener,
        signals,
        clock,
        supervisor,
    } = started;
    let ledger = Arc::new(ledger);

    // A reload may raise a job's grace up to the bound the timings allow: check the timings against that.
    let config = opts
        .timings
        .election_config(identity.clone(), jobs.load.max_termination_grace);
    tracing::info!(
        %identity,
        lease = %store.describe(),
        jobs_source = %jobs.snapshot.origin,
        jobs = jobs.set.jobs.len(),
        lease_duration_seconds = opts.timings.lease_duration.as_secs_f64(),
        renew_deadline_seconds = opts.timings.renew_deadline.as_secs_f64(),
        retry_period_seconds = opts.timings.retry_period.as_secs_f64(),
        "leasecron starting"
    );
    let metrics = Arc::new(Metrics::new()?);
    let status = Arc::new(StatusBoard::new(identity.clone(), Arc::clone(&ledger)));
    metrics.set_jobs(&jobs.set);
    status.set_jobs(&jobs.set);
    let mut observers = Observers::new();
    observers.push(Arc::clone(&metrics) as Arc<dyn observe::Observer>);
    observers.push(Arc::clone(&status) as Arc<dyn observe::Observer>);
    observers.push(Arc::new(events.clone()) as Arc<dyn observe::Observer>);
    let (elector, leadership) = Elector::new(store, config, Arc::clone(&clock))?;
    // A leader that holds the lease but starts nothing shows as a gauge and on /readyz.
    let stall = Arc::new(StallWatch::new(
        opts.timings.lease_duration,
        leadership.clone(),
    ));
    metrics.register(stall.collector().map_err(metrics::Error::from)?)?;
    observers.push(Arc::clone(&stall) as Arc<dyn observe::Observer>);
    let (senders, receivers) = observe::channels();
    observers.config_reload(&jobs.initial_report());
    let reload_observers = observers.clone();
    // Runs until every sender is gone; the runner lives until exit, so it is never awaited.
    tokio::spawn(observers.run(receivers));

    // Every child of this process is a run: what a term's runs leave behind dies with the term. Every term's
    // fencing token exceeds the run state's, so deleting the lease alone never stalls a leader.
    let elector = elector
        .with_events(senders.election)
        .with_token_floor(Arc::clone(&ledger) as Arc<dyn election::TokenFloor>)
        .sweeping_strays();
    let lost = supervisor.lost();
    let runner = Runner::with_launcher(
        identity,
        Arc::clone(&clock),
        Some(senders.runs),
        Arc::clone(&ledger),
        Launcher::Supervised(supervisor),
    );
    let health = Health::new(leadership.clone()).with_stall_watch(stall);
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
            tracing::warn!(exit_code = FORCED_EXIT_CODE, "leasecron exiting");
            // The exit skips main's flush: write the last lines (the warnings above) first, within a bound.
            crate::logging::flush(FORCED_EXIT_LOG_FLUSH);
            std::process::exit(FORCED_EXIT_CODE);
        }
    };
    tokio::spawn(signals.watch(shutdown.clone(), force));
    // Without its supervisor no run can start and none in flight is watched: end the term, release the
    // lease, exit (`run` turns this into Error::SupervisorLost).
    tokio::spawn({
        let shutdown = shutdown.clone();
        async move {
            lost.cancelled().await;
            shutdown.cancel();
        }
    });
    // Reloading stops at shutdown; the dispatcher keeps the jobs in force until its timers stop.
    let jobs = jobs.spawn(reload_observers, reread, &shutdown);
    // Orphaned grandchildren of jobs become ours (as PID 1 in a container, or as their subreaper), so that
    // a term's end finds them and nobody else must reap them; the reaper runs until the very end, after
    // the last run has ended.
    if let Err(error) = reaper::become_subreaper() {
        tracing::warn!(%error, "cannot become the subreaper of the jobs' processes: a process that leaves \
            its run's group and its parent is out of reach at the end of a term");
    }
    let reaper_stop = CancellationToken::new();
    let reaper = Reaper::spawn_if_orphans_come_here(reaper_stop.clone());
    tracing::info!(state = %ledger.describe(), "run state: each slot runs at most once across terms");
    let dispatcher =
        Dispatcher::new(runner, leadership, clock, ledger).with_events(senders.dispatch);
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

/// What `leasecron validate` found, file by file.
#[derive(Debug, Default)]
pub struct Validation {
    /// `FILE: ok (…)` for every valid file, in the order given.
    pub valid: Vec<String>,
    /// What depends on this machine, in valid files (`FILE:LINE:COL: warning: …`).
    pub warnings: Vec<String>,
    /// The problems of the invalid files, in the order given.
    pub invalid: Vec<config::Error>,
}

/// `leasecron validate`: checks every file (a jobs file, or manifests whose ConfigMaps hold one under
/// `data.KEY`; `-` is standard input), each read up to `max_file_size` bytes, and reports every problem of
/// every file, and every valid file.
///
/// Fails only if the timings are invalid; the files' problems are in [`Validation::invalid`].
pub fn validate(
    files: &[PathBuf],
    key: &str,
    timings: &Timings,
    max_file_size: u64,
) -> Result<Validation, Error> {
    let opts = timings.load_options()?;
    let mut validation = Validation::default();
    for file in files {
        match config::check_source(file, key, &opts, max_file_size) {
            Ok(checked) => {
                validation.valid.push(format!(
                    "{}: ok ({})",
                    config::origin_of(file),
                    checked.source
                ));
                validation
                    .warnings
                    .extend(checked.warnings.iter().map(ToString::to_string));
                // The process ends right after `validate`; freeing every job one by one would only
                // add to its time (2 % for 10 000 jobs).
                std::mem::forget(checked);
            }
            Err(e) => validation.invalid.push(e),
        }
    }
    Ok(validation)
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
    let ledger = match source {
        StateSource::File(lease) => {
            let state = StateFile::beside(&lease);
            // No lease file and no run state: most likely a typo, not a lease with no runs yet.
            if !lease.exists() && !state.path().exists() {
                return Err(Error::NoRunState {
                    state: state.path().to_path_buf(),
                    lease,
                });
            }
            Ledger::new(state, String::new())
        }
        StateSource::Kube { name, namespace } => {
            kube_store::check_lease_name(&name).map_err(|why| Error::InvalidName {
                flag: "--lease-name",
                value: name.clone(),
                why,
            })?;
            let config = kube_store::infer_config().await?;
            let namespace = resolve_namespace(namespace, &config)?;
            let state = StateConfigMap::new(config, &namespace, &name, NEXT_REQUEST_TIMEOUT)?;
            Ledger::new(state, String::new())
        }
    };
    ledger.refresh().await.map_err(Error::State)
}

/// `leasecron next`: the next `count` fire times of each job (or of `job`), in each job's zone; with a run
/// state `record`, each job's last slot from it. `file` is a jobs file or a manifest whose ConfigMaps hold
/// one under `data.KEY`, as `validate` takes it (`-`: standard input), read up to `max_file_size` bytes.
pub fn next(
    file: &Path,
    key: &str,
    max_file_size: u64,
    count: usize,
    job: Option<&str>,
    record: Option<&StateRecord>,
) -> Result<String, Error> {
    // `next` shows when jobs fire; whether their grace fits some lease timings is `validate`'s business.
    let opts = LoadOptions {
        max_termination_grace: Duration::MAX,
    };
    let checked = config::check_source(file, key, &opts, max_file_size)?;
    let now = Utc::now();
    let mut out = String::new();
    let mut found = false;
    let config_maps = match &checked.source {
        config::Source::JobsFile(_) => Vec::new(),
        config::Source::Manifest { config_maps, .. } => config_maps.iter().collect(),
    };
    for (index, set) in checked.source.job_sets().enumerate() {
        // Several ConfigMaps: say whose jobs follow.
        if let (true, Some(config_map)) = (config_maps.len() > 1, config_maps.get(index)) {
            let name = config_map.name.as_deref().unwrap_or("(unnamed)");
            out.push_str(&format!("# ConfigMap {name}, key {}\n", config_map.key));
        }
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
    }
    match job {
        Some(name) if !found => Err(Error::UnknownJob(name.to_owned())),
        _ => Ok(out),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn unavailable() -> Error {
        Error::ConfigMap(jobs_configmap::Error::Unavailable {
            origin: "configmap/ns/jobs/jobs.yaml".to_owned(),
            verb: "get",
            detail: "HTTP 503".to_owned(),
        })
    }

    fn forbidden() -> Error {
        Error::Kubernetes {
            url: "https://api".to_owned(),
            source: lease_store::Error::Forbidden {
                store: "lease ns/l".to_owned(),
                verb: lease_store::Verb::Get,
                namespace: "ns".to_owned(),
                message: "no".to_owned(),
            },
        }
    }

    #[tokio::test(start_paused = true)]
    async fn transient_failures_are_retried_until_the_call_succeeds() {
        let calls = AtomicU32::new(0);
        let mut startup = Startup::new(Duration::from_secs(60));
        let value = startup
            .retry("test", || async {
                match calls.fetch_add(1, Ordering::Relaxed) {
                    0..=3 => Err(unavailable()),
                    _ => Ok(7),
                }
            })
            .await
            .expect("succeeds on the fifth attempt");
        assert_eq!((value, calls.load(Ordering::Relaxed)), (7, 5));
    }

    #[tokio::test(start_paused = true)]
    async fn a_permanent_failure_is_returned_at_once() {
        let calls = AtomicU32::new(0);
        let mut startup = Startup::new(Duration::from_secs(60));
        let error = startup
            .retry("test", || async {
                calls.fetch_add(1, Ordering::Relaxed);
                Err::<(), _>(forbidden())
            })
            .await
            .expect_err("forbidden");
        assert_eq!(calls.load(Ordering::Relaxed), 1);
        assert_eq!(error.exit_code(), EXIT_USAGE);
    }

    #[tokio::test(start_paused = true)]
    async fn retries_stop_at_the_deadline_with_the_last_error_and_exit_1() {
        let start = tokio::time::Instant::now();
        let mut startup = Startup::new(Duration::from_secs(20));
        let error = startup
            .retry("reading --jobs-configmap", || async {
                Err::<(), _>(unavailable())
            })
            .await
            .expect_err("gives up");
        assert_eq!(
            start.elapsed(),
            Duration::from_secs(20),
            "the last wait ends at the deadline"
        );
        let Error::StartupTimeout { attempts, .. } = &error else {
            panic!("expected StartupTimeout, got {error:?}");
        };
        // Waits of at most 0.5, 1, 2, 4, 8 s and at least half of each: 6 to 10 attempts in 20 s.
        assert!((6..=10).contains(attempts), "{attempts}");
        assert_eq!(error.exit_code(), EXIT_FAILURE);
        let text = error.to_string();
        assert!(
            text.starts_with(&format!(
                "reading --jobs-configmap: gave up after {attempts} attempts in 20s (--startup-timeout): "
            )) && text.contains("HTTP 503"),
            "{text}"
        );
        let no_retry = Startup::new(Duration::ZERO)
            .retry("test", || async { Err::<(), _>(unavailable()) })
            .await
            .expect_err("no retry");
        assert!(matches!(
            no_retry,
            Error::StartupTimeout { attempts: 1, .. }
        ));
    }

    #[test]
    fn timings_that_leave_no_grace_say_what_fits_the_default_grace() {
        let timings = Timings {
            lease_duration: Duration::from_secs(10),
            renew_deadline: Duration::from_millis(9500),
            retry_period: Duration::from_secs(2),
        };
        let error = timings.load_options().expect_err("RD > LD − margin");
        assert_eq!(
            error.to_string(),
            "--renew-deadline (9s 500ms) leaves no time for the jobs' terminationGrace: renew deadline + \
             grace must stay within --lease-duration (10s) minus its safety margin max(1s, lease \
             duration / 10) (1s); for the default grace of 3s, raise --lease-duration to at least 14s or \
             lower --renew-deadline to at most 6s"
        );
        assert_eq!(error.exit_code(), EXIT_USAGE);
        // Either suggestion fits the default grace.
        for fixed in [
            Timings {
                lease_duration: Duration::from_secs(14),
                ..timings
            },
            Timings {
                renew_deadline: Duration::from_secs(6),
                ..timings
            },
        ] {
            let bound = fixed.load_options().expect("valid").max_termination_grace;
            assert!(
                bound >= config::DEFAULT_TERMINATION_GRACE,
                "{fixed:?}: {bound:?}"
            );
        }
        // No lower renew deadline fits when the lease is too short for the grace and the retry period.
        let short = Timings {
            lease_duration: Duration::from_secs(4),
            renew_deadline: Duration::from_millis(3500),
            retry_period: Duration::from_secs(2),
        };
        let text = short.load_options().expect_err("no room").to_string();
        assert!(
            text.ends_with("for the default grace of 3s, raise --lease-duration to at least 8s"),
            "{text}"
        );
    }

    #[test]
    fn an_empty_identity_is_refused_not_replaced() {
        for empty in ["", "  "] {
            let error = resolve_identity(Some(empty.to_owned()), true).expect_err("empty");
            assert!(matches!(error, Error::EmptyIdentity), "{error:?}");
            assert_eq!(error.exit_code(), EXIT_USAGE);
        }
        assert_eq!(
            resolve_identity(Some("r1".to_owned()), true).expect("given"),
            "r1"
        );
    }

    #[test]
    fn the_delays_double_up_to_the_cap_and_keep_at_least_half() {
        let mut startup = Startup::new(Duration::from_secs(60));
        for attempt in 1..40 {
            let ceiling = (STARTUP_RETRY_FIRST_DELAY * 2u32.pow((attempt - 1).min(16)))
                .min(STARTUP_RETRY_MAX_DELAY);
            let delay = startup.delay(attempt);
            assert!(
                delay <= ceiling && delay >= ceiling / 2,
                "{attempt}: {delay:?}"
            );
        }
        // Jittered: not every delay at the cap is the same.
        let capped: std::collections::HashSet<Duration> =
            (0..20).map(|_| startup.delay(30)).collect();
        assert!(capped.len() > 1);
    }
}
