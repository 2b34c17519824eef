//! `leasecron run`: elect, fire, run, until SIGTERM/SIGINT; then end the runs, release, return.
//!
//! [`run`] reads as the sequence it is, and the order is part of the safety argument:
//!
//! 1. **the run supervisor**, first, while nothing else runs: every run's process is its child, with the
//!    open file limits this process was started with;
//! 2. **signals**: SIGHUP (re-read the jobs), SIGUSR1, SIGUSR2 and SIGALRM (ignored, logged) stop ending
//!    the process before anything is opened ([`crate::signals`]);
//! 3. **configuration**: the lease timings, and the `terminationGrace` bound they put on the jobs;
//! 4. **the backend**, opened without a request ([`Backend::open`]): a bad input exits 2 before the HTTP
//!    port is taken or the lease touched;
//! 5. **start-up**: the HTTP endpoint comes up (live, not ready) and SIGTERM/SIGINT are handled, then the
//!    start-up requests are made, retried while the API is unavailable ([`Backend::connect`]); a signal
//!    meanwhile exits 0 with the lease untouched;
//! 6. **the app**, built from what the backend handed out ([`App::build`]);
//! 7. **run** until shutdown, which stops the parts in the safe order ([`App::run`]).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{Error, Timings};
use crate::app::{self, App};
use crate::backend::{self, Backend, JobsSource, Startup};
use crate::clock::SharedClock;
use crate::config::LoadOptions;
use crate::http;
use crate::reload;
use crate::shutdown::Signals;
use crate::signals;
use crate::supervisor::{self, Supervisor};

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
    /// Where to serve `/metrics`, `/status`, `/healthz` and `/readyz`.
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

impl RunOptions {
    /// What the backend needs of these options.
    fn backend(&self, load: LoadOptions) -> backend::Options {
        backend::Options {
            jobs: self.jobs.clone(),
            lease_file: self.lease_file.clone(),
            lease_name: self.lease_name.clone(),
            lease_namespace: self.lease_namespace.clone(),
            identity: self.identity.clone(),
            lease_duration: self.timings.lease_duration,
            retry_period: self.timings.retry_period,
            max_file_size: self.max_file_size,
            load,
        }
    }
}

/// `leasecron run`: elects through `--lease-file` if given, else through a Kubernetes Lease, and runs the
/// jobs while leading, until SIGTERM/SIGINT; then ends the runs, releases the lease and returns `Ok`.
///
/// Makes this process the subreaper of its descendants and, at the end of every term, kills every
/// descendant still alive (the processes the runs left behind): call it only from a process whose every
/// child is one of its runs.
pub async fn run(opts: RunOptions, clock: SharedClock) -> Result<(), Error> {
    // 1. The supervisor, first.
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

/// Steps 2 to 7 of [`run`], with the supervisor up.
async fn run_supervised(
    opts: RunOptions,
    clock: SharedClock,
    supervisor: Arc<Supervisor>,
) -> Result<(), Error> {
    raise_open_file_limit();
    // 2. Signals: SIGHUP and the like must never end the process (a SIGHUP that arrives before the jobs
    // are watched is kept for the watch).
    let reread = reload::Reread::new();
    tokio::spawn(signals::Handlers::install(reread.clone(), opts.jobs.describe())?.run());

    // 3. Configuration.
    let load = opts.timings.load_options()?;
    let backend_opts = opts.backend(load);

    // 4. The backend, without a request.
    let backend = Backend::open(&backend_opts).await?;

    // 5. Start-up: the endpoint first, so probes see the replica live (not ready) while the requests are
    // retried, and a signal ends it cleanly.
    let listener = http::bind(opts.http_addr).await?;
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "serving /healthz, /readyz, /metrics, /status and the status page /");
    }
    let mut signals = Signals::install()?;
    let (listener, starting) = StartingEndpoint::serve(listener)?;
    let mut startup = Startup::new(opts.startup_timeout);
    let connected = tokio::select! {
        connected = backend.connect(&backend_opts, &mut startup) => connected,
        signal = signals.recv() => {
            tracing::info!(signal, "shutting down during start-up; the lease was not touched");
            starting.stop().await;
            return Ok(());
        }
    };
    starting.stop().await;
    let connected = connected?;

    // 6. The app. A reload may raise a job's grace up to the bound the timings allow: the elector checks
    // the timings against that bound.
    let election = opts
        .timings
        .election_config(connected.identity.clone(), load.max_termination_grace);
    let app = App::build(
        connected,
        app::Options {
            election,
            listener,
            clock,
            supervisor,
            reread,
        },
    )?;

    // 7. Run.
    Ok(app.run(signals).await?)
}

/// The endpoint while starting ([`http::serve_starting`]), on a second handle of the listener that the
/// full endpoint takes over afterwards: connections that arrive meanwhile wait in the socket's backlog.
struct StartingEndpoint {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), http::Error>>,
}

// === impl StartingEndpoint ===

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
