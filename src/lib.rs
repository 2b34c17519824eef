//! leasecron: a singleton cron runner for Kubernetes.
//!
//! Every replica loads the same jobs file, but only the replica that holds the lease runs the jobs. Each
//! leadership term carries a cancellation token: when the lease is lost, every run of the term is
//! terminated (SIGTERM to its process group, SIGKILL after its grace) *before* any other replica can
//! acquire the lease; `docs/operations.md` gives the timing argument.
//!
//! # Layout
//!
//! The modules, in the order data flows through them:
//!
//! - [`config`] reads the jobs file (serde-saphyr, strict) and validates it into [`config::Job`]s, reporting
//!   every problem at once as `FILE:LINE:COL`.
//! - [`schedule`] parses cron expressions (croner + chrono-tz) and runs one [`schedule::Timer`] per job:
//!   it sleeps until the next wall-clock slot, computes the following one from the slot (not from "now"),
//!   and after a stall yields at most one tick for the latest missed slot.
//! - [`election`] is client-go's leader-election algorithm over the [`lease_store::LeaseStore`] trait
//!   (get / create / version-checked update / change notification). It publishes [`term::Leadership`] on a
//!   `watch` channel; a [`term::Term`] owns the cancellation token, task tracker, fencing token and
//!   deadline of one leadership term.
//! - [`lease_store`] holds the stores: [`kubernetes::lease`] (a `coordination.k8s.io/v1` Lease, written as
//!   client-go writes it, with one watch per store waking followers) and [`local::lease`] (a JSON
//!   record under `flock`, for running without a cluster).
//! - [`reload`] keeps the jobs current: a source (the jobs file under a `notify` watch, or the ConfigMap
//!   under an API watch) publishes each new text, the [`reload::Reloader`] validates it and publishes the
//!   jobs in force, and an invalid version is reported while the last good jobs stay.
//! - [`dispatch`] runs one timer per job in force, applies each new version of the jobs by diff (timers of
//!   unchanged jobs are kept; a reload never waits for a run), and turns each timer tick into a run, only
//!   under a live term (checked again at spawn).
//! - [`run_state`] is the run state shared by the replicas of a lease (a ConfigMap beside the Lease, or a file
//!   beside the lease file): each slot is claimed before its run is spawned, so it runs at most once across
//!   failovers, and a new term catches up the latest slot that fell due without a leader
//!   ([`run_state::catch_up`]).
//! - [`runner`] executes a run: its own process group, environment, output into the log, timeout and
//!   cancellation escalation (SIGTERM, then SIGKILL after the grace), concurrency policy and retries. Every
//!   run ends with exactly one [`event::Outcome`].
//! - [`supervisor`] is the small process `run` starts first (`leasecron supervise`): it spawns every run's
//!   process on request, is their subreaper, and ends every descendant when leasecron dies, SIGKILL
//!   included. The runner reaches it through [`runner::Launcher`].
//! - [`reaper`] reaps orphaned grandchildren when leasecron is PID 1 in a container, without stealing the
//!   exit status of the runner's own children, and finds what a run or a term left behind.
//! - [`observe`] fans the runner's, the elector's and the dispatcher's events out to every
//!   [`observe::Observer`]: [`metrics::Metrics`] (an owned Prometheus registry), the
//!   [`http::StatusBoard`] behind `/status`, and [`kubernetes::events::EventSink`] (Kubernetes Events about the Lease,
//!   aggregated and rate-limited; disabled on a file lease).
//! - [`stall`] notices a leader that holds the lease but starts nothing (every fire skipped as
//!   `not_leader` or `state_unavailable` for longer than LD): a gauge, and `/readyz` 503.
//! - [`shutdown`] turns SIGTERM/SIGINT into a clean shutdown (a second signal forces it); [`signals`]
//!   keeps the other signals a daemon gets from ending it (SIGHUP re-reads the jobs; SIGUSR1, SIGUSR2 and
//!   SIGALRM are logged and ignored); [`http`] serves `/metrics`, `/status`, `/healthz` and `/readyz`.
//! - [`logging`] carries the log to stderr without ever panicking or blocking the runtime: a bounded queue
//!   and a writer thread, counting what is lost. [`logging::format`](mod@logging::format) makes its lines: logfmt or JSON.
//! - [`app`] wires them into the `run`, `validate` and `next` commands; `main.rs` only parses flags.
//! - [`clock`] makes the wall clock injectable, so timing logic is tested under paused tokio time.
//!
//! ```text
//!   jobs.yaml / ConfigMap ─► reload ─► config ─► watch<Jobs>
//!                                                     │ applied by diff
//!                                        schedule::Timer (one per job)
//!                                        │ Tick::Fire(job, scheduled)
//!                                        ▼
//!   election ──watch<Leadership>──► dispatch ── live term? ──► runner ──► supervisor ──► process group
//!      │ LeaseStore                                               │ Outcome
//!      ├─ kube (Lease, watch)                                     ▼
//!      └─ file (flock + JSON)                                   logs
//!
//!   runner, election, dispatch ──events──► observe ──► metrics, status board ──► http
//! ```
//!
//! # Shutdown order
//!
//! Timers stop first (no new runs), then the elector ends the term (cancel, escalate, wait for every run),
//! and only then releases the lease: a follower can never acquire while a run of ours is alive.
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod app;
pub mod backend;
pub mod clock;
pub mod cmd;
pub mod config;
pub mod dispatch;
pub mod election;
pub mod event;
pub mod http;
pub mod kubernetes;
pub mod lease_store;
pub mod local;
pub mod logging;
pub mod metrics;
pub mod observe;
pub(crate) mod process;
mod rate_limit;
pub mod reaper;
pub mod reload;
pub mod run_state;
pub mod runner;
pub mod schedule;
pub mod shutdown;
pub mod signals;
pub mod stall;
pub mod supervisor;
pub mod term;
