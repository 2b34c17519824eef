//! Runs jobs as processes: one process group per attempt, timeouts with TERM→KILL escalation, the
//! concurrency policy, retries with backoff, and one [`Outcome`] per run.
//!
//! The dispatcher calls [`Runner::start`] when a job fires. The run executes on the term's tracker with a
//! child of the term's token, so ending the term terminates every run and [`crate::term::TermHandle::end`]
//! returns only once they are all gone. A process is spawned only while the term is live, checked right
//! before the first attempt and again before every retry.
//!
//! Layout: `command` builds the process (environment, process group, parent-death signal), `launch` starts
//! it through the run supervisor ([`crate::supervisor`]) or, embedded, through `spawner`, which forks it
//! on a thread of its own, `attempt` supervises one process to its end, `output` streams its pipes into
//! `tracing`, `group` remembers the live process groups for [`Runner::kill_all`]. What a run reports (its
//! [`RunReport`], [`RunEvent`]s, skips) is [`crate::event`]'s vocabulary.

mod ahead;
mod attempt;
mod cluster;
mod command;
mod group;
mod launch;
mod output;
mod spawner;

use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::mpsc::UnboundedSender;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::clock::SharedClock;
use crate::config::{kubernetes_job_name, ConcurrencyPolicy, Executor, Job, MAX_RETRY_BACKOFF};
use crate::event::{Failure, Outcome, RunEvent, RunReport, SkipReason};
use crate::kubernetes::batch::Cluster;
use crate::logging::rfc3339;
use crate::run_state::{Cause, Claim, Completion, Ledger, Origin, RunResult};
use crate::term::{FencingToken, Term};

pub use ahead::Reservation;
pub use attempt::OUTPUT_DRAIN_TIMEOUT;
pub use command::format_scheduled;
pub(crate) use command::{leasecron_env, RunEnv};
pub use launch::Launcher;
pub use output::MAX_LINE_BYTES;
pub use spawner::{raise_open_file_limit, OpenFileLimit};

use attempt::{Attempt, AttemptSpec};
use group::ProcessGroups;
use spawner::Refused;

/// Why a process could not be started.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `command:` was an empty list (the config validator should have refused it).
    #[error("job {job}: the command is empty")]
    EmptyCommand {
        /// The job's name.
        job: String,
    },
    /// The job's working directory is missing or unusable, so its program could not be started.
    #[error("job {job}: cannot start {program}: its workingDir {dir} {problem}")]
    WorkingDir {
        /// The job's name.
        job: String,
        /// The program that was to be executed.
        program: String,
        /// The working directory.
        dir: String,
        /// What is wrong with it: "does not exist", "is not a directory", ...
        problem: String,
    },
    /// The operating system refused to start the program.
    #[error("job {job}: cannot start {program}: {source}")]
    Spawn {
        /// The job's name.
        job: String,
        /// The program that was to be executed.
        program: String,
        /// Why.
        source: io::Error,
    },
}

/// What [`Runner::start`] did with a fire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// A run was started (it may still end up skipped as [`SkipReason::NotLeader`] if, under `Replace` or
    /// `Queue`, the term ended while it waited for its predecessors, or, under `Queue`, as
    /// [`SkipReason::QueueReplaced`] if a later fire took its place in the queue).
    Spawned,
    /// Nothing was started.
    Skipped(SkipReason),
}

/// A run that [`Runner::start_with`] started.
#[derive(Debug, Clone)]
pub struct Running {
    finished: CancellationToken,
}

impl Running {
    /// Resolves once the run has ended, however it ended (its completion is recorded by then).
    pub async fn finished(&self) {
        self.finished.cancelled().await;
    }
}

/// Starts and supervises every run of this replica. One per process, shared as `Arc`.
#[derive(Debug)]
pub struct Runner {
    identity: String,
    clock: SharedClock,
    events: Option<UnboundedSender<RunEvent>>,
    runs: Mutex<HashMap<String, Vec<RunSlot>>>,
    groups: ProcessGroups,
    /// The next run's id: unique per run in this process, logged as `run_id` on every line of the run.
    next_run_id: AtomicU64,
    /// Where slots are claimed before a run is spawned, and completions recorded.
    ledger: Arc<Ledger>,
    /// Where processes are started.
    launcher: Launcher,
    /// Where `executor: kubernetes` jobs create their Jobs (the Kubernetes backend only).
    cluster: OnceLock<Arc<Cluster>>,
    /// True once a Job create was refused for a missing RBAC rule: the rule is logged once.
    forbidden_reported: AtomicBool,
}

/// A run in flight, as the concurrency policy sees it.
#[derive(Debug)]
struct RunSlot {
    id: u64,
    cancel: CancellationToken,
    /// Cancelled once the run has fully ended, to wake a `Replace` (or `Queue`) run waiting for it.
    finished: CancellationToken,
    /// `Queue`: set while the run waits for the runs in flight to end, and cancelled if a later fire
    /// replaces it (which also takes it out of the registry); `None` once it has left the queue, or if it
    /// never was in one.
    queued: Option<CancellationToken>,
    /// `executor: kubernetes`: the name of the run's Job (created, to be created, or adopted).
    kubernetes_job: Option<String>,
}

/// What a new run waits for before it claims its slot ([`Runner::claim`]).
#[derive(Debug, Default)]
struct Predecessors {
    /// The `finished` tokens of the runs it must wait for (`Replace`, `Queue`).
    finished: Vec<CancellationToken>,
    /// `Queue`: the run waits in the job's queue (of one).
    queue: Option<Queued>,
}

/// A `Queue` run's place in its job's queue.
#[derive(Debug)]
struct Queued {
    /// Cancelled if a later fire replaces this run while it waits.
    replaced: CancellationToken,
    /// The run waiting before this one, which this one replaced.
    replacing: Option<u64>,
}

/// Removes a run from [`Runner::runs`] and signals `finished` when the run's task ends, however it ends.
#[derive(Debug)]
struct SlotGuard {
    runner: Arc<Runner>,
    job: String,
    id: u64,
    finished: CancellationToken,
}

/// One run: the fire of one job at one scheduled time, with all its attempts.
#[derive(Debug)]
struct Run {
    runner: Arc<Runner>,
    job: Arc<Job>,
    scheduled: DateTime<Utc>,
    term: Term,
    cancel: CancellationToken,
    slot: SlotGuard,
    /// Why it runs (a [`Cause::Retry`] may claim a slot an older term started and did not finish).
    origin: Origin,
    /// An adopted Kubernetes Job: the fencing token of the (earlier) term that started the run.
    created_by: Option<u64>,
    /// The slot's claim, made ahead of its fire time ([`Runner::reserve`]): taken where the run would
    /// claim, released if the run ends before that.
    reservation: Option<Reservation>,
}

// === impl Runner ===

impl Runner {
    /// A runner that passes `identity` to its runs as `LEASECRON_IDENTITY`, reads wall time from `clock`,
    /// reports to `events` if given, and claims every slot in `ledger` before its run is spawned (a slot
    /// runs at most once across terms), recording completions there.
    pub fn new(
        identity: String,
        clock: SharedClock,
        events: Option<UnboundedSender<RunEvent>>,
        ledger: Arc<Ledger>,
    ) -> Arc<Self> {
        Runner::with_launcher(identity, clock, events, ledger, Launcher::InProcess)
    }

    /// Like [`Runner::new`], starting every process through `launcher` (`leasecron run`: the run
    /// supervisor).
    pub fn with_launcher(
        identity: String,
        clock: SharedClock,
        events: Option<UnboundedSender<RunEvent>>,
        ledger: Arc<Ledger>,
        launcher: Launcher,
    ) -> Arc<Self> {
        Arc::new(Self {
            identity,
            clock,
            events,
            runs: Mutex::new(HashMap::new()),
            groups: ProcessGroups::default(),
            // Run ids start at 1, so `run_id=0` never appears in a log.
            next_run_id: AtomicU64::new(1),
            ledger,
            launcher,
            cluster: OnceLock::new(),
            forbidden_reported: AtomicBool::new(false),
        })
    }

    /// Where `executor: kubernetes` jobs create their Jobs (set once, by the Kubernetes backend; without
    /// it such a job's runs fail, saying so). Later calls are ignored.
    pub fn attach_cluster(&self, cluster: Arc<Cluster>) {
        let _ = self.cluster.set(cluster);
    }

    /// The Jobs of `executor: kubernetes` jobs, if attached.
    pub fn cluster(&self) -> Option<&Arc<Cluster>> {
        self.cluster.get()
    }

    /// Applies the job's `concurrencyPolicy` and starts the run of a scheduled slot on `term.tracker()`;
    /// returns at once.
    ///
    /// Under `Replace` the running runs of the job are cancelled here, and the new run waits (in its own
    /// task) until they have ended before it spawns anything. Under `Queue` a run in flight makes the new
    /// run wait (in its own task) until it has ended, in place of any run already waiting; the new run
    /// claims its slot when it leaves the queue. Must be called within a tokio runtime.
    pub fn start(self: &Arc<Self>, job: Arc<Job>, scheduled: DateTime<Utc>, term: &Term) -> Start {
        match self.start_with(job, scheduled, term, Origin::scheduled(Cause::Schedule)) {
            Ok(_) => Start::Spawned,
            Err(reason) => Start::Skipped(reason),
        }
    }

    /// [`Runner::start`] for a slot claimed ahead ([`Runner::reserve`]) under `term`: the run takes the
    /// claim instead of writing one (waiting for it if its write is still in flight). A reservation for
    /// another slot or another term is released, and the run claims as [`Runner::start`] does.
    pub fn start_reserved(
        self: &Arc<Self>,
        job: Arc<Job>,
        scheduled: DateTime<Utc>,
        term: &Term,
        reservation: Option<Reservation>,
    ) -> Start {
        let reservation = reservation
            .filter(|r| r.slot() == scheduled && r.term().fencing_token() == term.fencing_token());
        match self.start_inner(
            job,
            scheduled,
            term,
            Origin::scheduled(Cause::Schedule),
            reservation,
        ) {
            Ok(_) => Start::Spawned,
            Err(reason) => Start::Skipped(reason),
        }
    }

    /// [`Runner::start`] for a run of any [`Origin`]: a catch-up, a retry of an interrupted slot (which
    /// may claim a slot an older term started and did not finish), a trigger or a backfill slot. Returns a
    /// handle that says when the run has ended, or why it was not started.
    pub fn start_with(
        self: &Arc<Self>,
        job: Arc<Job>,
        scheduled: DateTime<Utc>,
        term: &Term,
        origin: Origin,
    ) -> Result<Running, SkipReason> {
        self.start_inner(job, scheduled, term, origin, None)
    }

    /// [`Runner::start_with`], taking a claim made ahead if given.
    fn start_inner(
        self: &Arc<Self>,
        job: Arc<Job>,
        scheduled: DateTime<Utc>,
        term: &Term,
        origin: Origin,
        reservation: Option<Reservation>,
    ) -> Result<Running, SkipReason> {
        if !term.is_live() {
            self.skip(&job.name, scheduled, SkipReason::NotLeader);
            return Err(SkipReason::NotLeader);
        }
        let cancel = term.child_token();
        let kubernetes_job = job
            .kubernetes
            .is_some()
            .then(|| kubernetes_job_name(&job.name, scheduled));
        let Some((slot, predecessors)) = self.claim(&job, &cancel, kubernetes_job) else {
            self.skip(&job.name, scheduled, SkipReason::Overlap);
            return Err(SkipReason::Overlap);
        };
        let running = Running {
            finished: slot.finished.clone(),
        };
        let run = Run {
            runner: Arc::clone(self),
            job,
            scheduled,
            term: term.clone(),
            cancel,
            slot,
            origin,
            created_by: None,
            reservation,
        };
        term.tracker().spawn(run.execute(predecessors));
        Ok(running)
    }

    /// Number of runs of `job` in flight (including a `Replace` run waiting for its predecessors and a
    /// `Queue` run waiting in the queue).
    pub fn running(&self, job: &str) -> usize {
        self.lock_runs().get(job).map_or(0, Vec::len)
    }

    /// Second signal at shutdown: SIGKILLs every process group now, without grace, cancels every run, and
    /// spawns nothing from then on. Runs end as [`Outcome::Cancelled`].
    pub fn kill_all(&self) {
        self.groups.kill_all();
        for slot in self.lock_runs().values().flatten() {
            slot.cancel.cancel();
        }
    }

    /// Registers a run under the job's policy. Returns `None` if `Forbid` refuses it; otherwise the slot and
    /// what it must wait for: the runs it replaces (`Replace`, which also cancels them), or the runs in
    /// flight it queues behind (`Queue`, see [`queue_behind`]).
    fn claim(
        self: &Arc<Self>,
        job: &Job,
        cancel: &CancellationToken,
        kubernetes_job: Option<String>,
    ) -> Option<(SlotGuard, Predecessors)> {
        let mut runs = self.lock_runs();
        let slots = runs.entry(job.name.clone()).or_default();
        let predecessors = match job.concurrency_policy {
            ConcurrencyPolicy::Forbid if !slots.is_empty() => return None,
            ConcurrencyPolicy::Forbid | ConcurrencyPolicy::Allow => Predecessors::default(),
            ConcurrencyPolicy::Replace => Predecessors {
                finished: slots
                    .iter()
                    .map(|slot| {
                        slot.cancel.cancel();
                        slot.finished.clone()
                    })
                    .collect(),
                queue: None,
            },
            ConcurrencyPolicy::Queue => queue_behind(slots),
        };
        let id = self.next_run_id.fetch_add(1, Ordering::Relaxed);
        let finished = CancellationToken::new();
        slots.push(RunSlot {
            id,
            cancel: cancel.clone(),
            finished: finished.clone(),
            queued: predecessors.queue.as_ref().map(|q| q.replaced.clone()),
            kubernetes_job,
        });
        let guard = SlotGuard {
            runner: Arc::clone(self),
            job: job.name.clone(),
            id,
            finished,
        };
        Some((guard, predecessors))
    }

    fn skip(&self, job: &str, scheduled: DateTime<Utc>, reason: SkipReason) {
        tracing::info!(
            job,
            scheduled = rfc3339(&scheduled),
            reason = reason.as_str(),
            "run skipped"
        );
        self.send(RunEvent::Skipped {
            job: job.to_owned(),
            scheduled,
            reason,
        });
    }

    fn send(&self, event: RunEvent) {
        if let Some(events) = &self.events {
            // A closed channel means nobody listens any more (shutdown); the run itself is unaffected.
            let _ = events.send(event);
        }
    }

    /// Takes the queued run `id` of `job` out of the queue, once the runs it waited for have ended: it is
    /// a run in flight from now on (a later fire queues behind it). False if a later fire replaced it first.
    fn leave_queue(&self, job: &str, id: u64) -> bool {
        let mut runs = self.lock_runs();
        let slot = runs
            .get_mut(job)
            .and_then(|slots| slots.iter_mut().find(|slot| slot.id == id));
        match slot {
            Some(slot) => {
                slot.queued = None;
                true
            }
            // Only a replacement takes a run out of the registry before its task ends.
            None => false,
        }
    }

    fn lock_runs(&self) -> MutexGuard<'_, HashMap<String, Vec<RunSlot>>> {
        // Every update is a single push or remove: the map is consistent even after a panic elsewhere.
        self.runs.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// `Queue`: what a new run waits for, given the job's runs in the registry. With no run in flight it
/// starts at once. Otherwise it waits for the runs in flight to end, and takes the place of the run
/// already waiting, if there is one: that one is told it was replaced and leaves the registry now, so
/// at most one run of the job ever waits.
fn queue_behind(slots: &mut Vec<RunSlot>) -> Predecessors {
    let in_flight: Vec<CancellationToken> = slots
        .iter()
        .filter(|slot| slot.queued.is_none())
        .map(|slot| slot.finished.clone())
        .collect();
    if in_flight.is_empty() {
        return Predecessors::default();
    }
    let mut replacing = None;
    slots.retain(|slot| match &slot.queued {
        Some(replaced) => {
            replaced.cancel();
            replacing = Some(slot.id);
            false
        }
        None => true,
    });
    Predecessors {
        finished: in_flight,
        queue: Some(Queued {
            replaced: CancellationToken::new(),
            replacing,
        }),
    }
}

// === impl SlotGuard ===

impl SlotGuard {
    /// Removes the run from the running set (idempotent). If that leaves no run of the job in flight, the
    /// run waiting in its queue (`Queue`) leaves the queue now: from here on it is the run in flight, which
    /// a later fire queues behind, not replaces.
    fn release(&self) {
        let mut runs = self.runner.lock_runs();
        if let Some(slots) = runs.get_mut(&self.job) {
            slots.retain(|slot| slot.id != self.id);
            if slots.iter().all(|slot| slot.queued.is_some()) {
                for slot in slots.iter_mut() {
                    slot.queued = None;
                }
            }
            if slots.is_empty() {
                runs.remove(&self.job);
            }
        }
    }
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        self.release();
        self.finished.cancel();
    }
}

// === impl Run ===

impl Run {
    async fn execute(mut self, predecessors: Predecessors) {
        if let Some(skip) = self.wait_for(predecessors).await {
            self.runner.skip(&self.job.name, self.scheduled, skip);
            return;
        }
        if let Executor::Kubernetes(_) = self.job.executor() {
            match self.cluster_policy().await {
                None => {}
                Some(cluster::Hold::Skip(skip)) => {
                    self.runner.skip(&self.job.name, self.scheduled, skip);
                    return;
                }
                Some(cluster::Hold::Fail(outcome)) => {
                    self.fail_unclaimed(outcome);
                    return;
                }
            }
        }
        if let Some(skip) = self.claim_slot().await {
            self.runner.skip(&self.job.name, self.scheduled, skip);
            return;
        }
        if !self.term.is_live() {
            self.runner
                .skip(&self.job.name, self.scheduled, SkipReason::NotLeader);
            return;
        }
        let (jitter_seconds, fires_at) = self.jitter();
        tracing::debug!(job = %self.job.name, run_id = self.slot.id, fencing_token = self.term.fencing_token().0, scheduled = rfc3339(&self.scheduled), jitter_seconds, fires_at, "run begins");
        if let Executor::Kubernetes(kubernetes) = self.job.executor() {
            self.execute_on_cluster(kubernetes).await;
            return;
        }
        let mut attempts = 0;
        let mut first = None;
        let mut last = None;
        let mut leftovers = 0u32;
        let outcome = loop {
            if self.cancel.is_cancelled() || self.runner.groups.is_killed() {
                break Outcome::Cancelled;
            }
            attempts += 1;
            // The spawner checks the term and the cancellation again right before it forks.
            let attempt = match self.attempt(attempts).await {
                Ok(attempt) => attempt,
                Err(refused) => {
                    attempts -= 1;
                    match (refused, last) {
                        (Refused::Cancelled, _) => break Outcome::Cancelled,
                        // The term ended while the first spawn waited: as if it had ended before.
                        (Refused::NotLive, None) => {
                            self.runner
                                .skip(&self.job.name, self.scheduled, SkipReason::NotLeader);
                            return;
                        }
                        // As should_retry does when the term ends during the backoff.
                        (Refused::NotLive, Some(outcome)) => {
                            tracing::warn!(job = %self.job.name, run_id = self.slot.id, fencing_token = self.term.fencing_token().0, attempt = attempts, "not retrying: the term is no longer live");
                            break outcome;
                        }
                    }
                }
            };
            first.get_or_insert((attempt.started_wall, attempt.started));
            leftovers = leftovers.saturating_add(attempt.leftovers);
            if !self.should_retry(&attempt.outcome, attempts).await {
                break attempt.outcome;
            }
            last = Some(attempt.outcome);
        };
        let (started_at, started) =
            first.unwrap_or_else(|| (self.runner.clock.now(), Instant::now()));
        self.record_completion(&outcome, attempts).await;
        self.finish(RunReport {
            job: self.job.name.clone(),
            scheduled: self.scheduled,
            attempts,
            outcome,
            started_at,
            duration: started.elapsed(),
            start_delay: (started_at - self.fire_time()).to_std().unwrap_or_default(),
            fencing_token: self.term.fencing_token().0,
            leftover_processes_killed: leftovers,
        });
    }

    /// Waits until the runs this one follows have ended (`Replace`, `Queue`); `Some` if it must not start.
    ///
    /// A queued run (`Queue`) starts nothing if a later fire replaces it while it waits
    /// ([`SkipReason::QueueReplaced`]) or if its term ends first ([`SkipReason::NotLeader`]): the slot was
    /// never claimed, so nothing records it as started.
    async fn wait_for(&self, predecessors: Predecessors) -> Option<SkipReason> {
        let Predecessors { finished, queue } = predecessors;
        let all_finished = async {
            for finished in &finished {
                finished.cancelled().await;
            }
        };
        let Some(queue) = queue else {
            all_finished.await;
            return None;
        };
        let (job, run_id, scheduled) = (&self.job.name, self.slot.id, rfc3339(&self.scheduled));
        let fencing_token = self.term.fencing_token().0;
        tracing::info!(
            job,
            run_id,
            fencing_token,
            scheduled,
            replaced_run_id = queue.replacing,
            "slot queued: a run of the job is in flight; this one starts when it ends"
        );
        let queued_at = Instant::now();
        tokio::select! {
            biased;
            () = queue.replaced.cancelled() => {
                tracing::info!(job, run_id, fencing_token, scheduled, "queued slot replaced by a later fire: not starting it");
                return Some(SkipReason::QueueReplaced);
            }
            () = self.term.ended() => {
                tracing::info!(job, run_id, fencing_token, scheduled, "queued slot dropped: its term ended before it could start");
                return Some(SkipReason::NotLeader);
            }
            () = all_finished => {}
        }
        if !self.runner.leave_queue(job, run_id) {
            tracing::info!(
                job,
                run_id,
                fencing_token,
                scheduled,
                "queued slot replaced by a later fire: not starting it"
            );
            return Some(SkipReason::QueueReplaced);
        }
        if !self.term.is_live() {
            tracing::info!(
                job,
                run_id,
                fencing_token,
                scheduled,
                "queued slot dropped: its term ended before it could start"
            );
            return Some(SkipReason::NotLeader);
        }
        tracing::info!(
            job,
            run_id,
            fencing_token,
            scheduled,
            queued_seconds = queued_at.elapsed().as_secs_f64(),
            "queued slot starting: the run before it has ended"
        );
        None
    }

    /// When the slot fired: the slot itself, plus the job's jitter offset.
    fn fire_time(&self) -> DateTime<Utc> {
        self.scheduled + chrono::Duration::from_std(self.job.jitter_offset()).unwrap_or_default()
    }

    /// The log fields of a jittered job: its offset (`jitter_seconds`) and the instant its slot fired
    /// (`fires_at`); absent without a `jitter`.
    fn jitter(&self) -> (Option<f64>, Option<String>) {
        match self.job.jitter {
            Some(_) => (
                Some(self.job.jitter_offset().as_secs_f64()),
                Some(rfc3339(&self.fire_time())),
            ),
            None => (None, None),
        }
    }

    /// Records the slot as started in the run state, or takes the claim made ahead of the slot; `Some`
    /// if the run must not start.
    async fn claim_slot(&mut self) -> Option<SkipReason> {
        let ledger = &self.runner.ledger;
        let token = self.term.fencing_token();
        let job = &self.job.name;
        let claimed = match &mut self.reservation {
            Some(reservation) => match reservation.claimed().await {
                Ok(Claim::Claimed) if !reservation.keep() => {
                    // Released first: the term ended while the claim was being written.
                    return Some(SkipReason::NotLeader);
                }
                claimed => claimed,
            },
            None => {
                let now = self.runner.clock.now();
                ledger
                    .claim(job, self.scheduled, token, now, &self.origin)
                    .await
            }
        };
        match claimed {
            Ok(Claim::Claimed) => None,
            Ok(Claim::AlreadyStarted {
                slot,
                fencing_token,
            }) => {
                tracing::info!(
                    job,
                    scheduled = rfc3339(&self.scheduled),
                    recorded_slot = rfc3339(&slot),
                    recorded_fencing_token = fencing_token,
                    "slot already started: not running it again"
                );
                Some(SkipReason::AlreadyStarted)
            }
            Ok(Claim::Stale { record_token }) => {
                tracing::warn!(
                    job,
                    scheduled = rfc3339(&self.scheduled),
                    fencing_token = token.0,
                    record_token,
                    "a newer term wrote the run state: this term is stale, not starting"
                );
                Some(SkipReason::NotLeader)
            }
            Err(error) => {
                tracing::error!(job, scheduled = rfc3339(&self.scheduled), %error, "cannot record the slot as started: not starting it (a slot runs at most once)");
                Some(SkipReason::StateUnavailable)
            }
        }
    }

    /// Records the run's end in the run state, under a live term only: a run cut off by the end of its
    /// term stays started-not-completed, which is what `rerunInterrupted` looks for.
    async fn record_completion(&self, outcome: &Outcome, attempts: u32) {
        self.record_completion_at(outcome, attempts, self.runner.clock.now())
            .await;
    }

    /// [`Run::record_completion`], with the time the run finished.
    async fn record_completion_at(
        &self,
        outcome: &Outcome,
        attempts: u32,
        finished_at: DateTime<Utc>,
    ) {
        if !self.term.is_live() {
            return;
        }
        let completion = Completion {
            slot: self.scheduled,
            outcome: outcome.as_str().to_owned(),
            finished_at,
        };
        let result = RunResult {
            exit_code: match outcome {
                Outcome::Succeeded => Some(0),
                Outcome::Failed(Failure::ExitCode(code)) => Some(*code),
                Outcome::Failed(Failure::Job { exit_code, .. }) => *exit_code,
                _ => None,
            },
            signal: match outcome {
                Outcome::Failed(Failure::Signal(signal)) => Some(*signal),
                _ => None,
            },
            attempts,
        };
        let token = self.term.fencing_token();
        let run_token = self.created_by.map_or(token, FencingToken);
        if let Err(error) = self
            .runner
            .ledger
            .complete_run(
                &self.job.name,
                token,
                run_token,
                &self.origin,
                completion,
                result,
            )
            .await
        {
            tracing::warn!(job = %self.job.name, scheduled = rfc3339(&self.scheduled), %error, "cannot record the run's completion in the run state");
        }
    }

    async fn attempt(&self, number: u32) -> Result<Attempt, Refused> {
        let spec = AttemptSpec {
            job: &self.job,
            env: RunEnv {
                scheduled: self.scheduled,
                identity: &self.runner.identity,
                fencing_token: self.term.fencing_token(),
                attempt: number,
            },
            run_id: self.slot.id,
            cancel: &self.cancel,
            groups: &self.runner.groups,
            clock: &self.runner.clock,
            launcher: &self.runner.launcher,
            deadline: self.term.deadline(),
        };
        let gate = {
            let (runner, term, cancel) = (
                Arc::clone(&self.runner),
                self.term.clone(),
                self.cancel.clone(),
            );
            Box::new(move || {
                if cancel.is_cancelled() || runner.groups.is_killed() {
                    Err(Refused::Cancelled)
                } else if term.is_live() {
                    Ok(())
                } else {
                    Err(Refused::NotLive)
                }
            })
        };
        attempt::run(spec, gate, |pid| {
            self.runner.send(RunEvent::Started {
                job: self.job.name.clone(),
                scheduled: self.scheduled,
                attempt: number,
                pid,
            });
        })
        .await
    }

    /// After attempt `attempts` ended with `outcome`: waits out the backoff and says whether to try again.
    async fn should_retry(&self, outcome: &Outcome, attempts: u32) -> bool {
        if !outcome.is_retryable() || attempts > self.job.retries {
            return false;
        }
        let backoff = retry_backoff(self.job.retry_backoff, attempts);
        let job = &self.job.name;
        let (run_id, fencing_token) = (self.slot.id, self.term.fencing_token().0);
        tracing::info!(job, run_id, fencing_token, attempt = attempts, detail = %outcome, backoff_seconds = backoff.as_secs_f64(), "attempt failed; retrying after backoff");
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            () = self.cancel.cancelled() => return false,
        }
        if !self.term.is_live() {
            tracing::warn!(
                job,
                run_id,
                fencing_token,
                attempt = attempts,
                "not retrying: the term is no longer live"
            );
            return false;
        }
        true
    }

    fn finish(&self, report: RunReport) {
        let RunReport {
            job,
            scheduled,
            attempts,
            outcome,
            duration,
            ..
        } = &report;
        let label = outcome.as_str();
        let (run_id, fencing_token) = (self.slot.id, self.term.fencing_token().0);
        let (duration_seconds, scheduled) = (duration.as_secs_f64(), rfc3339(scheduled));
        let (jitter_seconds, fires_at) = self.jitter();
        // `attempt` (the last one) matches the other lines of the run; `attempts` is the count.
        match outcome {
            Outcome::Succeeded | Outcome::Cancelled => {
                tracing::info!(
                    job,
                    run_id,
                    fencing_token,
                    scheduled,
                    jitter_seconds,
                    fires_at,
                    attempt = attempts,
                    attempts,
                    outcome = label,
                    duration_seconds,
                    "run finished"
                )
            }
            Outcome::Failed(_) | Outcome::TimedOut => {
                tracing::warn!(job, run_id, fencing_token, scheduled, jitter_seconds, fires_at, attempt = attempts, attempts, outcome = label, detail = %outcome, duration_seconds, "run finished")
            }
        }
        // Leave the running set before reporting, so a listener that sees Finished also sees running() drop;
        // the `finished` token (which lets a Replace successor start) fires only when the task ends.
        self.slot.release();
        self.runner.send(RunEvent::Finished(report));
    }
}

/// The delay before retry number `retry` (1-based): `base` doubled per earlier retry, capped at
/// [`MAX_RETRY_BACKOFF`].
pub fn retry_backoff(base: Duration, retry: u32) -> Duration {
    let factor = 2u32.checked_pow(retry.saturating_sub(1));
    factor
        .and_then(|factor| base.checked_mul(factor))
        .map_or(MAX_RETRY_BACKOFF, |delay| delay.min(MAX_RETRY_BACKOFF))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_per_retry_and_is_capped() {
        let base = Duration::from_secs(10);
        assert_eq!(retry_backoff(base, 1), Duration::from_secs(10));
        assert_eq!(retry_backoff(base, 2), Duration::from_secs(20));
        assert_eq!(retry_backoff(base, 3), Duration::from_secs(40));
        assert_eq!(retry_backoff(base, 6), MAX_RETRY_BACKOFF);
        assert_eq!(retry_backoff(base, 40), MAX_RETRY_BACKOFF);
        assert_eq!(retry_backoff(Duration::ZERO, 5), Duration::ZERO);
        assert_eq!(
            retry_backoff(Duration::from_secs(600), 1),
            MAX_RETRY_BACKOFF
        );
    }
}
