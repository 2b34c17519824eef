//! The replica, wired: [`App::build`] makes every part from what the backend handed out, [`App::run`]
//! runs them until shutdown and then stops them in the one order that keeps the safety argument.
//!
//! # The parts
//!
//! - the observers (metrics, the `/status` board, Kubernetes Events, the stall watch), fed by the elector,
//!   the dispatcher and the runner through [`observe`]'s channels;
//! - the [`Elector`] over the backend's lease store, publishing the [`Leadership`](crate::term::Leadership)
//!   that the dispatcher, the health endpoint and the stall watch follow;
//! - the [`Runner`], which starts every run through the supervisor and claims its slot in the ledger;
//! - the [`Dispatcher`], one timer per job, turning a tick into a run under a live term;
//! - the HTTP endpoint, the reload feed and the reaper.
//!
//! # Shutdown order
//!
//! Timers stop first (no new runs), then the elector ends the term (cancel, escalate, wait for every run)
//! and only then releases the lease — a follower can never acquire while a run of ours is alive — then
//! HTTP stops, the reaper stops after the last run, and the last Kubernetes Events are written, within a
//! bound. It is all in [`App::run`].

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::backend::{AnyLeaseStore, Connected, Jobs};
use crate::clock::SharedClock;
use crate::config::JobSet;
use crate::dispatch::Dispatcher;
use crate::election::{self, Elector};
use crate::http::{self, Endpoints, Health, StatusBoard};
use crate::kubernetes::events::EventSink;
use crate::metrics::{self, Metrics};
use crate::observe::{self, Observers};
use crate::operator::Operator;
use crate::reaper::{self, Reaper};
use crate::reload;
use crate::run_state::Ledger;
use crate::runner::{Launcher, Runner};
use crate::shutdown::{Signals, FORCED_EXIT_CODE};
use crate::stall::StallWatch;
use crate::supervisor::Supervisor;

/// At shutdown, how long the fan-out task gets to hand the last events to the Kubernetes Events sink.
const EVENTS_HANDOVER: Duration = Duration::from_millis(50);
/// On a forced exit (a second signal), how long the last log lines may take to be written.
const FORCED_EXIT_LOG_FLUSH: Duration = Duration::from_millis(500);
/// At shutdown, how long writing the last Kubernetes Events may take.
const EVENTS_FLUSH_TIMEOUT: Duration = Duration::from_secs(2);

/// Errors of building or running the replica.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The lease timings are inconsistent, or the elector failed.
    #[error("{0}")]
    Election(#[from] election::Error),
    /// The metrics registry could not be built.
    #[error("{0}")]
    Metrics(#[from] metrics::Error),
    /// A task of ours panicked.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// True for bad input (the elector's configuration), not a failure at run time.
    pub fn is_usage(&self) -> bool {
        match self {
            Error::Election(error) => error.is_usage(),
            Error::Metrics(_) | Error::Internal(_) => false,
        }
    }
}

/// What the replica runs with besides the backend's parts.
#[derive(Debug)]
pub struct Options {
    /// The elector's configuration (identity, timings, the grace bound).
    pub election: election::Config,
    /// The listener of `/metrics`, `/status`, `/healthz` and `/readyz`.
    pub listener: tokio::net::TcpListener,
    /// The wall clock.
    pub clock: SharedClock,
    /// The run supervisor, started first.
    pub supervisor: Arc<Supervisor>,
    /// SIGHUP's requests to re-read the jobs.
    pub reread: reload::Reread,
}

/// The replica, built and not yet running.
pub struct App {
    jobs: Jobs,
    elector: Elector<AnyLeaseStore>,
    dispatcher: Dispatcher,
    runner: Arc<Runner>,
    ledger: Arc<Ledger>,
    events: EventSink,
    observers: Observers,
    receivers: observe::Receivers,
    endpoints: Endpoints,
    listener: tokio::net::TcpListener,
    /// Cancelled if the run supervisor dies.
    supervisor_lost: CancellationToken,
    reread: reload::Reread,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App")
            .field("elector", &self.elector)
            .field("ledger", &self.ledger)
            .finish_non_exhaustive()
    }
}

// === impl App ===

impl App {
    /// Makes every part, starts nothing.
    pub fn build(connected: Connected, opts: Options) -> Result<App, Error> {
        let Connected {
            identity,
            lease,
            ledger,
            jobs,
            controls,
            controls_store,
            events,
            cluster,
        } = connected;
        let Options {
            election,
            listener,
            clock,
            supervisor,
            reread,
        } = opts;
        let ledger = Arc::new(ledger);
        tracing::info!(
            %identity,
            lease = %crate::lease_store::LeaseStore::describe(&lease),
            jobs_source = %jobs.snapshot.origin,
            jobs = jobs.set.jobs.len(),
            controls = %controls_store.describe(),
            suspended = controls.borrow().suspended.len(),
            lease_duration_seconds = election.lease_duration.as_secs_f64(),
            renew_deadline_seconds = election.renew_deadline.as_secs_f64(),
            retry_period_seconds = election.retry_period.as_secs_f64(),
            "leasecron starting"
        );
        let lease_duration = election.lease_duration;

        // The observers, and the channels the elector, the dispatcher and the runner report through.
        let metrics = Arc::new(Metrics::new()?);
        let status = Arc::new(StatusBoard::new(identity.clone(), Arc::clone(&ledger)));
        metrics.set_jobs(&jobs.set);
        status.set_jobs(&jobs.set);
        let mut observers = Observers::new();
        observers.push(Arc::clone(&metrics) as Arc<dyn observe::Observer>);
        observers.push(Arc::clone(&status) as Arc<dyn observe::Observer>);
        observers.push(Arc::new(events.clone()) as Arc<dyn observe::Observer>);
        let (elector, leadership) = Elector::new(lease, election, Arc::clone(&clock))?;
        // A leader that holds the lease but starts nothing shows as a gauge and on /readyz.
        let stall = Arc::new(StallWatch::new(lease_duration, leadership.clone()));
        metrics.register(stall.collector().map_err(metrics::Error::from)?)?;
        observers.push(Arc::clone(&stall) as Arc<dyn observe::Observer>);
        let (senders, receivers) = observe::channels();
        observers.config_reload(&jobs.initial_report());

        // Every child of this process is a run: what a term's runs leave behind dies with the term. Every
        // term's fencing token exceeds the run state's, so deleting the lease alone never stalls a leader.
        let elector = elector
            .with_events(senders.election)
            .with_token_floor(Arc::clone(&ledger) as Arc<dyn election::TokenFloor>)
            .sweeping_strays();
        let runner = Runner::with_launcher(
            identity.clone(),
            Arc::clone(&clock),
            Some(senders.runs),
            Arc::clone(&ledger),
            Launcher::Supervised(Arc::clone(&supervisor)),
        );
        // The dispatcher starts the cache's watch once a kubernetes job is in force (on every replica).
        if let Some(cluster) = cluster {
            runner.attach_cluster(cluster);
        }
        let health = Health::new(leadership.clone()).with_stall_watch(stall);
        let endpoints = Endpoints {
            health,
            metrics,
            status,
        };
        // The operators' requests are carried out by the leader, and their suspensions apply on every
        // replica, through the dispatcher.
        let operator = Operator::new(
            Arc::clone(&runner),
            Arc::clone(&ledger),
            Arc::clone(&clock),
            identity,
        )
        .with_events(senders.dispatch.clone());
        let dispatcher =
            Dispatcher::new(Arc::clone(&runner), leadership, clock, Arc::clone(&ledger))
                .with_events(senders.dispatch)
                .with_controls(controls, Arc::new(operator));
        Ok(App {
            jobs,
            elector,
            dispatcher,
            runner,
            ledger,
            events,
            observers,
            receivers,
            endpoints,
            listener,
            supervisor_lost: supervisor.lost(),
            reread,
        })
    }

    /// Runs until SIGTERM/SIGINT (`signals`), the supervisor's loss, or the elector's failure; then stops
    /// every part in the safe order (see the module docs).
    pub async fn run(self, signals: Signals) -> Result<(), Error> {
        self.endpoints.health.set_ready();
        // Runs until every sender is gone; the runner lives until exit, so it is never awaited.
        let reload_observers = self.observers.clone();
        tokio::spawn(self.observers.run(self.receivers));

        let shutdown = CancellationToken::new();
        let runner = self.runner;
        let force = move || {
            runner.kill_all();
            tracing::warn!(exit_code = FORCED_EXIT_CODE, "leasecron exiting");
            // The exit skips main's flush: write the last lines (the warnings above) first, within a bound.
            crate::logging::flush(FORCED_EXIT_LOG_FLUSH);
            std::process::exit(FORCED_EXIT_CODE);
        };
        tokio::spawn(signals.watch(shutdown.clone(), force));
        // Without its supervisor no run can start and none in flight is watched: end the term, release the
        // lease, exit (`cmd::run` turns this into an error).
        tokio::spawn({
            let shutdown = shutdown.clone();
            let lost = self.supervisor_lost;
            async move {
                lost.cancelled().await;
                shutdown.cancel();
            }
        });
        // Reloading stops at shutdown; the dispatcher keeps the jobs in force until its timers stop.
        let jobs = self.jobs.spawn(reload_observers, self.reread, &shutdown);
        // Orphaned grandchildren of jobs become ours (as PID 1 in a container, or as their subreaper), so
        // that a term's end finds them and nobody else must reap them; the reaper runs until the very end,
        // after the last run has ended.
        if let Err(error) = reaper::become_subreaper() {
            tracing::warn!(%error, "cannot become the subreaper of the jobs' processes: a process that leaves \
                its run's group and its parent is out of reach at the end of a term");
        }
        let reaper_stop = CancellationToken::new();
        let reaper = Reaper::spawn_if_orphans_come_here(reaper_stop.clone());
        tracing::info!(state = %self.ledger.describe(), "run state: each slot runs at most once across terms");
        let result = serve_until_shutdown(
            jobs,
            self.elector,
            self.dispatcher,
            self.listener,
            self.endpoints,
            shutdown,
        )
        .await;
        reaper_stop.cancel();
        if let Some(reaper) = reaper {
            reaper.join().await;
        }
        // The last election events (leadership lost at shutdown) reach the sink through the fan-out task;
        // give it a moment to hand them over, then write what the sink still holds, within a bound.
        tokio::time::sleep(EVENTS_HANDOVER).await;
        if tokio::time::timeout(EVENTS_FLUSH_TIMEOUT, self.events.flush())
            .await
            .is_err()
        {
            tracing::warn!("could not write the last Kubernetes Events before exiting");
        }
        result
    }
}

/// Runs the elector, the timers and the HTTP endpoint until `shutdown` (or until the elector fails), then
/// stops them in the safe order: timers first (no new runs), then the elector (which ends the term, waits
/// for its runs, and only then releases the lease), then HTTP.
async fn serve_until_shutdown(
    jobs: watch::Receiver<Arc<JobSet>>,
    elector: Elector<AnyLeaseStore>,
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
