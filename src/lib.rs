//! leasecron: a singleton cron runner for Kubernetes.
//!
//! Every replica loads the same jobs file, but only the replica that holds the lease runs the jobs. Each
//! leadership term carries a cancellation token: when the lease is lost, every run of the term is
//! terminated (SIGTERM to its process group, SIGKILL after its grace) *before* any other replica can
//! acquire the lease; `docs/design.md` gives the argument and its inequalities.
//!
//! # Layout
//!
//! Start at [`cmd::run`]: it is the whole life of a replica as a sequence (configuration → backend →
//! start-up → app → run). The modules, by room:
//!
//! **The commands and the wiring.**
//! - [`cmd`]: `run`, `validate` and `next`, one module each, and the operator commands (`trigger`,
//!   `suspend`, `resume`, `backfill`, `status`, `history`) in [`cmd::operate`]; the [`cmd::Error`] every
//!   command returns and its exit code (`main.rs` only parses flags and prints).
//! - [`backend`]: the one place that chooses between files and Kubernetes. It opens and checks the backend
//!   without a request, makes the start-up requests (retried while the API is unavailable), and hands out
//!   the lease store, the run-state ledger, the jobs with their feed, the controls with theirs, and the
//!   Events sink.
//! - [`app`]: builds the replica from those parts and runs it; the shutdown order lives there alone.
//!
//! **The jobs.**
//! - [`config`] reads a jobs file (strict YAML) into [`config::Job`]s, reporting every problem as
//!   `FILE:LINE:COL`.
//! - [`schedule`] parses cron expressions and runs one [`schedule::Timer`] per job: it sleeps until the
//!   next wall-clock slot and, after a stall, yields at most one tick for the latest missed slot.
//! - [`reload`] validates each new text of the jobs and publishes the jobs in force; an invalid version is
//!   reported while the last good jobs stay.
//!
//! **Leadership.**
//! - [`lease_store`] is the storage trait the election talks to (get, create, version-checked update,
//!   change feed), client-go's `resourcelock.Interface`.
//! - [`election`] is client-go's leader-election algorithm over it, an explicit state machine. It
//!   publishes [`term::Leadership`]; a [`term::Term`] owns one term's cancellation token, its runs, its
//!   fencing token and its deadline.
//!
//! **The backends.**
//! - [`kubernetes`]: one toolkit (client, API errors, access review, names, a watch of one object) under
//!   the Lease, the run state ConfigMap, the controls ConfigMap, the jobs ConfigMap, Kubernetes Events,
//!   and the batch/v1 Jobs of `executor: kubernetes` jobs ([`kubernetes::batch`]: their manifest, their
//!   requests, a cache kept by a watch by label).
//! - [`local`]: the lease file (JSON under `flock`), the run state and controls files beside it, the jobs
//!   file.
//!
//! **Running.**
//! - [`dispatch`] keeps one timer per job in force (a reload applies by diff) and turns a tick into a run,
//!   only under a live term; it applies the operators' suspensions from [`controls`] on every replica.
//! - [`controls`] is the operators' document (suspensions, and requests to trigger, backfill, suspend and
//!   resume) that the commands write beside the lease; [`operator`] is the leader's side: it carries out
//!   each request once, acknowledged in the run state, across failovers.
//! - [`run_state`] is the record that makes each slot run at most once across failovers: the
//!   [`run_state::Ledger`] (its only writer) and the [`run_state::Keeper`] (a term's start, catch-up,
//!   pruning), over a file, a ConfigMap or memory.
//! - [`runner`] executes a run: claim, process group, output, timeout, cancellation escalation,
//!   concurrency policy, retries; every run ends with one [`event::Outcome`]. An `executor: kubernetes`
//!   run is a Kubernetes Job instead: the runner applies the policy against the Jobs the API server
//!   holds, creates the slot's Job, follows it to its outcome, and the leader adopts the Jobs of earlier
//!   terms.
//! - [`supervisor`] is the process `run` starts first: it spawns every run's process and ends them all if
//!   leasecron dies. [`reaper`] reaps orphans and finds what a run left behind.
//!
//! **Observing.**
//! - [`event`] is the vocabulary: what the elector, the dispatcher, the runner and the reloader report.
//! - [`observe`] fans those events out to every [`observe::Observer`]: [`metrics`], the `/status` board of
//!   [`http`], [`stall`] and [`kubernetes::events`]. Observers do no I/O on the caller's task.
//! - [`http`] serves the status page `/` ([`http::page`], the `/status` snapshot as HTML), `/metrics`,
//!   `/status`, `/healthz` and `/readyz`.
//!
//! **The process.** [`shutdown`] (SIGTERM/SIGINT), [`signals`] (SIGHUP re-reads; SIGUSR1/2 and SIGALRM are
//! ignored), [`logging`] (a log that never blocks or panics), [`clock`] (an injectable wall clock).
//!
//! The dependencies point one way, with no cycle: `config` → `schedule` → `lease_store` → `election` /
//! `run_state` → `dispatch` → `runner` → `observe` → `http`, the backends beside them, `app` and `cmd` on
//! top.
//!
//! # A fire, from the timer to the process
//!
//! 1. The job's [`schedule::Timer`] ticks at its slot; [`dispatch::Dispatcher::fire`] checks that the
//!    leadership holds a live [`term::Term`] (else the slot is skipped as `not_leader`).
//! 2. [`runner::Runner::start`] applies the job's concurrency policy and claims the slot in the
//!    [`run_state::Ledger`] under the term's fencing token (a slot already started is `already_started`).
//! 3. The run is spawned on the term's task tracker, with a child of the term's cancellation token; each
//!    attempt's process is started by the [`supervisor`] in its own process group.
//! 4. The attempt ends (exit, timeout, cancellation); the runner records the completion in the ledger and
//!    reports an [`event::RunEvent`] to the observers.
//!
//! # A Lease change, to a cancelled run
//!
//! 1. The lease store's change feed (a watch of the Lease, or inotify on the lease file) wakes the
//!    [`election::Elector`]; a renew that fails until the renew deadline has the same effect.
//! 2. The elector confirms with a read that the lease is no longer ours and ends the term:
//!    [`term::TermHandle::end`] cancels the term's token, every run's child token with it.
//! 3. Each run's attempt sends SIGTERM to its process group, SIGKILL after its grace, and the term waits
//!    for every run and sweeps what they left; only then does the elector follow (or, at shutdown,
//!    release). The timings guarantee this ends before any other replica can acquire (`docs/design.md`).
//!
//! # Shutdown order
//!
//! Timers stop first (no new runs), then the elector ends the term (cancel, escalate, wait for every run),
//! and only then releases the lease: a follower can never acquire while a run of ours is alive. See
//! [`app::App::run`].
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod app;
pub mod backend;
pub mod clock;
pub mod cmd;
pub mod config;
pub mod controls;
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
pub mod operator;
pub(crate) mod process;
pub use process::keep_huge_pages_off;
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
