//! The dispatcher: one timer task per job, kept in step with the jobs in force, and the rule that decides
//! whether a fire starts a run.
//!
//! Every replica runs every job's timer (followers too, so `/status` and the metrics know the next fire),
//! but a fire starts a run only when this replica holds a **live** term: the term has not been ended and
//! the monotonic clock is before its deadline. The check happens here, at the fire, and again inside the
//! runner right before it spawns a process (docs/design.md §2, rule 5), so a leader frozen past its deadline
//! starts nothing when it wakes.
//!
//! # Reloads
//!
//! The jobs in force arrive on a `watch` channel; each new version is applied by diff, by job name:
//!
//! - an **unchanged** job (equal in every field) keeps its timer, so its next fire and its runs are
//!   untouched;
//! - an **added** job gets a timer, which fires from the next slot on;
//! - a **removed** job's timer stops; its runs in flight finish (they belong to the term, and end with it);
//!   while this replica leads, its entry in the run state is forgotten;
//! - a **changed** job's timer is replaced by one on the new settings, which re-times from the next slot of
//!   the new schedule; a run of the old version keeps going under the old settings (the runner holds
//!   that version), and counts as the job's run for the new version's `concurrencyPolicy`.
//!
//! Applying stops timers and starts timers (and has the run state forget removed jobs, in a task of its
//! own), nothing else: a reload never waits for a run. A stopped timer's task is awaited (it ends at once)
//! before [`DispatchEvent::JobsApplied`] is sent, so no event of an old timer follows it on the channel.

use std::collections::BTreeMap;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::mpsc::UnboundedSender;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::clock::SharedClock;
use crate::config::{Job, JobSet};
use crate::controls::{Controls, Suspension};
use crate::event::{DispatchEvent, JobsDiff, SkipReason};
use crate::logging::rfc3339;
use crate::operator::Operator;
use crate::run_state::{self, Cause, Keeper, Ledger, Origin};
use crate::runner::{Reservation, Runner, Start};
use crate::schedule::{Tick, Timer};
use crate::term::{Leadership, Term};

/// How often a follower re-reads the run state for `/status`.
pub const STATE_REFRESH_INTERVAL: Duration = Duration::from_secs(30);

/// A job's running timer task.
#[derive(Debug)]
struct JobTimer {
    job: Arc<Job>,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

/// Starts runs for fires, under a live term.
#[derive(Debug, Clone)]
pub struct Dispatcher {
    runner: Arc<Runner>,
    leadership: watch::Receiver<Leadership>,
    clock: SharedClock,
    events: Option<UnboundedSender<DispatchEvent>>,
    /// The run state of the terms: stamped, caught up and pruned here, claimed in by the runner.
    keeper: Keeper,
    /// The operators' controls document, as this replica last read it.
    controls: Option<watch::Receiver<Arc<Controls>>>,
    /// Carries out the operators' requests while this replica leads.
    operator: Option<Arc<Operator>>,
    /// The jobs suspended by operators (`leasecron suspend`), by name: their fires start nothing.
    suspended: Arc<RwLock<BTreeMap<String, Suspension>>>,
}

// === impl Dispatcher ===

impl Dispatcher {
    /// A dispatcher that starts runs on `runner` while `leadership` says this replica leads. It catches up
    /// from the run state in `ledger` whenever a term begins (the runner must claim slots in the same
    /// ledger), forgets the jobs a reload removes, and keeps a follower's view of it fresh for `/status`.
    pub fn new(
        runner: Arc<Runner>,
        leadership: watch::Receiver<Leadership>,
        clock: SharedClock,
        ledger: Arc<Ledger>,
    ) -> Self {
        Self {
            runner,
            leadership,
            keeper: Keeper::new(ledger, Arc::clone(&clock)),
            clock,
            events: None,
            controls: None,
            operator: None,
            suspended: Arc::new(RwLock::new(BTreeMap::new())),
        }
    }

    /// Follows the operators' `controls` document: its suspensions apply to every fire from the moment
    /// it is read, and while this replica leads `operator` carries out its requests.
    pub fn with_controls(
        mut self,
        controls: watch::Receiver<Arc<Controls>>,
        operator: Arc<Operator>,
    ) -> Self {
        self.controls = Some(controls);
        self.operator = Some(operator);
        self
    }

    /// True if `job` is suspended, by the jobs file or by an operator.
    fn is_suspended(&self, job: &Job) -> bool {
        job.suspend || self.suspended_by_operator(&job.name)
    }

    /// True if an operator suspended `job`.
    fn suspended_by_operator(&self, job: &str) -> bool {
        self.suspended
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .contains_key(job)
    }

    /// Applies a version of the controls document: its suspensions from now on (logged once per change),
    /// and, while this replica leads, its requests.
    fn apply_controls(&self, controls: &Arc<Controls>, jobs: &Arc<JobSet>) {
        {
            let mut suspended = self
                .suspended
                .write()
                .unwrap_or_else(PoisonError::into_inner);
            for (job, suspension) in &controls.suspended {
                if suspended.get(job) != Some(suspension) {
                    tracing::info!(
                        job,
                        suspended = true,
                        by = %suspension.by,
                        at = rfc3339(&suspension.at),
                        note = suspension.note.as_deref().unwrap_or(""),
                        "job suspended by an operator: its fires are skipped until it is resumed"
                    );
                }
            }
            for job in suspended.keys() {
                if !controls.suspended.contains_key(job) {
                    tracing::info!(
                        job,
                        suspended = false,
                        "job resumed by an operator: its fires start runs again (the slots missed while \
                         suspended are not run unless backfilled)"
                    );
                }
            }
            *suspended = controls.suspended.clone();
        }
        self.send(DispatchEvent::ControlsApplied {
            controls: Arc::clone(controls),
        });
        let leadership = self.leadership.borrow().clone();
        if let (Some(operator), Some(term)) = (&self.operator, leadership.live_term()) {
            operator.carry_out(controls, jobs, term);
        }
    }

    /// Reports skips and next fire times on `events`.
    pub fn with_events(mut self, events: UnboundedSender<DispatchEvent>) -> Self {
        self.events = Some(events);
        self
    }

    /// Runs one timer per job in force until `stop` is cancelled, applying every new version of `jobs` by
    /// diff (see the module documentation); returns once every timer has stopped.
    ///
    /// Stopping the timers does not touch runs in flight: they belong to their term, which the elector
    /// ends (and waits for) at shutdown.
    pub async fn run(&self, mut jobs: watch::Receiver<Arc<JobSet>>, stop: CancellationToken) {
        let mut timers: BTreeMap<String, JobTimer> = BTreeMap::new();
        let mut first = true;
        let mut leadership = self.leadership.clone();
        let mut last_term = None;
        let mut refresh = tokio::time::interval(STATE_REFRESH_INTERVAL);
        refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let (mut jobs_open, mut leadership_open) = (true, true);
        let mut jobs_changed = true;
        let mut controls = self.controls.clone();
        let mut controls_changed = controls.is_some();
        loop {
            if std::mem::take(&mut jobs_changed) {
                let current = Arc::clone(&jobs.borrow_and_update());
                if let Some(cluster) = self.runner.cluster() {
                    // executor: kubernetes: every replica keeps the cache of Jobs from then on.
                    if current.kubernetes_job().is_some() {
                        cluster.ensure_watching();
                    }
                }
                self.apply(&mut timers, current, first, &stop).await;
                first = false;
            }
            if std::mem::take(&mut controls_changed) {
                if let Some(controls) = &mut controls {
                    let current = Arc::clone(&controls.borrow_and_update());
                    self.apply_controls(&current, &jobs.borrow());
                }
            }
            let term = leadership.borrow_and_update().live_term().cloned();
            if let Some(term) = term {
                if last_term != Some(term.fencing_token()) {
                    last_term = Some(term.fencing_token());
                    if self.runner.cluster().is_some() {
                        // executor: kubernetes: adopt, record and clean the Jobs, for the term.
                        let keeper =
                            Arc::clone(&self.runner).keep_cluster(term.clone(), jobs.clone());
                        term.tracker().spawn(keeper);
                    }
                    self.begin_term(term, Arc::clone(&jobs.borrow()));
                }
            }
            tokio::select! {
                biased;
                _ = stop.cancelled() => break,
                changed = jobs.changed(), if jobs_open => match changed {
                    Ok(()) => jobs_changed = true,
                    // The reloader is gone (shutdown): keep the jobs in force until told to stop.
                    Err(_) => jobs_open = false,
                },
                changed = leadership.changed(), if leadership_open => if changed.is_err() {
                    // The elector is gone: nothing new to catch up on.
                    leadership_open = false;
                },
                changed = changed(&mut controls) => match changed {
                    Ok(()) => controls_changed = true,
                    // The feed is gone (shutdown): keep the suspensions in force.
                    Err(_) => controls = None,
                },
                // Only a follower refreshes: a leader's timer would wake it for nothing.
                _ = refresh.tick(), if !self.leadership.borrow().is_leader() => self.refresh_state(),
            }
        }
        for timer in std::mem::take(&mut timers).into_values() {
            timer.stop.cancel();
            let _ = timer.task.await;
        }
    }

    /// A term began: the keeper stamps the run state with its token and works out what the gap without a
    /// leader owes each job ([`run_state::catch_up`]); this reports what was missed and starts what is
    /// owed. Runs in its own task: the timers go on.
    fn begin_term(&self, term: Term, jobs: Arc<JobSet>) {
        let this = self.clone();
        tokio::spawn(async move {
            let token = term.fencing_token();
            let owe = |job: &Arc<Job>, owed: &run_state::CatchUp| {
                if owed.missed > 0 {
                    this.send(DispatchEvent::MissedSlots {
                        job: job.name.clone(),
                        count: owed.missed,
                        latest: owed.latest_missed,
                        truncated: owed.missed_truncated,
                    });
                }
                if let Some(slot) = owed.run {
                    if this.suspended_by_operator(&job.name) {
                        tracing::info!(job = %job.name, slot = rfc3339(&slot), "not catching up a slot: the job is suspended by an operator");
                        return;
                    }
                    if owed.rerun {
                        tracing::info!(job = %job.name, slot = rfc3339(&slot), fencing_token = token.0, "rerunning a run the previous term interrupted (rerunInterrupted)");
                    } else {
                        tracing::info!(job = %job.name, slot = rfc3339(&slot), fencing_token = token.0, "catching up a slot that fell due without a leader");
                    }
                    let origin = if owed.rerun {
                        Origin::RETRY
                    } else {
                        Origin::scheduled(Cause::CatchUp)
                    };
                    // The runner logs and reports its own skips.
                    let _ = this.runner.start_with(Arc::clone(job), slot, &term, origin);
                }
            };
            this.keeper.begin_term(token, &jobs, owe).await;
            // The record is fresh now: carry out what the last leader left.
            if let Some(operator) = &this.operator {
                operator.prune(&term).await;
                if let Some(controls) = &this.controls {
                    let controls = Arc::clone(&controls.borrow());
                    operator.carry_out(&controls, &jobs, &term);
                }
            }
        });
    }

    /// A follower re-reads the run state now and then, so `/status` shows the leader's progress.
    fn refresh_state(&self) {
        if self.leadership.borrow().is_leader() {
            return;
        }
        let keeper = self.keeper.clone();
        tokio::spawn(async move { keeper.refresh().await });
    }

    /// A reload removed jobs: while this replica leads, the keeper forgets their run state now, not only
    /// when the next term begins (see [`Keeper::retain_jobs`]), in a task of its own; a follower leaves it
    /// to the next term.
    fn forget_removed(&self, jobs: &Arc<JobSet>, diff: &JobsDiff) {
        if diff.removed.is_empty() {
            return;
        }
        let Some(token) = self
            .leadership
            .borrow()
            .live_term()
            .map(Term::fencing_token)
        else {
            return;
        };
        let (keeper, jobs) = (self.keeper.clone(), Arc::clone(jobs));
        tokio::spawn(async move { keeper.retain_jobs(token, &jobs).await });
    }

    /// Brings the timers in line with `jobs`.
    async fn apply(
        &self,
        timers: &mut BTreeMap<String, JobTimer>,
        jobs: Arc<JobSet>,
        first: bool,
        stop: &CancellationToken,
    ) {
        let in_force: BTreeMap<String, Arc<Job>> = timers
            .iter()
            .map(|(name, timer)| (name.clone(), Arc::clone(&timer.job)))
            .collect();
        let diff = JobsDiff::between(&in_force, &jobs);
        log_suspensions(&in_force, &jobs);
        for name in diff.removed.iter().chain(&diff.changed) {
            if let Some(timer) = timers.remove(name) {
                timer.stop.cancel();
                // A timer ends at once when stopped (it never waits for a run).
                let _ = timer.task.await;
            }
        }
        if !first {
            if diff.is_empty() {
                tracing::info!(jobs = jobs.jobs.len(), "jobs applied: no job changed");
            } else {
                tracing::info!(
                    added = diff.added.join(","),
                    removed = diff.removed.join(","),
                    changed = diff.changed.join(","),
                    unchanged = diff.unchanged,
                    "jobs applied"
                );
            }
        }
        let starting: Vec<Arc<Job>> = jobs
            .jobs
            .iter()
            .filter(|job| !timers.contains_key(&job.name))
            .cloned()
            .collect();
        self.forget_removed(&jobs, &diff);
        self.send(DispatchEvent::JobsApplied {
            jobs: Arc::clone(&jobs),
            diff,
        });
        for job in starting {
            let token = stop.child_token();
            let this = self.clone();
            let task = {
                let job = Arc::clone(&job);
                let token = token.clone();
                tokio::spawn(async move { this.run_job(job, token).await })
            };
            timers.insert(
                job.name.clone(),
                JobTimer {
                    job,
                    stop: token,
                    task,
                },
            );
        }
    }

    async fn run_job(&self, job: Arc<Job>, stop: CancellationToken) {
        let mut timer = Timer::new(
            job.schedule.clone(),
            job.starting_deadline,
            Arc::clone(&self.clock),
        )
        .with_offset(job.jitter_offset());
        loop {
            self.send(DispatchEvent::NextRun {
                job: job.name.clone(),
                at: timer.next_fire(),
            });
            // With a durable run state, the slot is claimed a lead before it fires, so that the claim's
            // write is off the start path (runner::ahead). Dropped unused, the reservation releases it.
            let mut reservation = None;
            if let Some(lead) = self.runner.claim_lead() {
                let ahead = tokio::select! {
                    biased;
                    _ = stop.cancelled() => return,
                    ahead = timer.ahead(lead) => ahead,
                };
                if let Some(slot) = ahead {
                    reservation = self.reserve(&job, slot, timer.offset());
                }
            }
            let tick = tokio::select! {
                biased;
                _ = stop.cancelled() => return,
                tick = timer.next_tick() => tick,
            };
            match tick {
                Some(Tick::Fire { scheduled, .. }) => {
                    self.fire_reserved(&job, scheduled, reservation);
                }
                Some(Tick::Missed {
                    scheduled,
                    lateness,
                }) => self.skip(&job, scheduled, SkipReason::MissedDeadline, Some(lateness)),
                None => {
                    tracing::info!(job = %job.name, "schedule has no future fire; timer stops");
                    return;
                }
            }
        }
    }

    /// Handles one on-time (or within-deadline) fire.
    pub fn fire(&self, job: &Arc<Job>, scheduled: DateTime<Utc>) {
        self.fire_reserved(job, scheduled, None);
    }

    /// [`Dispatcher::fire`] for a slot that may have been claimed ahead (`reservation`, released if the
    /// slot does not start under its term).
    fn fire_reserved(
        &self,
        job: &Arc<Job>,
        scheduled: DateTime<Utc>,
        reservation: Option<Reservation>,
    ) {
        if self.is_suspended(job) {
            self.skip(job, scheduled, SkipReason::Suspended, None);
            return;
        }
        let leadership = self.leadership.borrow().clone();
        let Some(term) = leadership.live_term() else {
            tracing::debug!(job = %job.name, scheduled = rfc3339(&scheduled), reason = "not_leader", "run skipped");
            return;
        };
        // The runner logs and reports its own skips (overlap, term no longer live).
        let _: Start = self
            .runner
            .start_reserved(Arc::clone(job), scheduled, term, reservation);
    }

    /// Claims `slot` of `job` ahead of its fire time (`slot + offset`), if this replica leads and the job
    /// is not suspended (runner::ahead).
    fn reserve(
        &self,
        job: &Job,
        slot: DateTime<Utc>,
        offset: std::time::Duration,
    ) -> Option<Reservation> {
        if self.is_suspended(job) {
            return None;
        }
        let leadership = self.leadership.borrow().clone();
        let term = leadership.live_term()?;
        let fires_at = slot + chrono::Duration::from_std(offset).unwrap_or_default();
        self.runner.reserve(job, slot, fires_at, term)
    }

    fn skip(
        &self,
        job: &Job,
        scheduled: DateTime<Utc>,
        reason: SkipReason,
        lateness: Option<std::time::Duration>,
    ) {
        let leads = self.leadership.borrow().is_leader();
        let lateness_seconds = lateness.map(|l| l.as_secs_f64());
        let slot = rfc3339(&scheduled);
        // A missed slot is news from a leader. A suspended job's skips are not: its suspension is logged
        // once, when it is loaded (log_suspensions), not at every fire (every second for some schedules).
        if leads && reason == SkipReason::MissedDeadline {
            tracing::warn!(job = %job.name, scheduled = slot, reason = reason.as_str(), lateness_seconds, "run skipped");
        } else {
            tracing::debug!(job = %job.name, scheduled = slot, reason = reason.as_str(), lateness_seconds, "run skipped");
        }
        self.send(DispatchEvent::Skipped {
            job: job.name.clone(),
            scheduled,
            reason,
            leader: leads,
        });
    }

    fn send(&self, event: DispatchEvent) {
        if let Some(events) = &self.events {
            // A closed channel means nobody listens any more (shutdown); dispatching is unaffected.
            let _ = events.send(event);
        }
    }
}

/// The next change of `controls`; never resolves without a feed.
async fn changed(
    controls: &mut Option<watch::Receiver<Arc<Controls>>>,
) -> Result<(), watch::error::RecvError> {
    match controls {
        Some(controls) => controls.changed().await,
        None => std::future::pending().await,
    }
}

/// Logs each job that a version of the jobs suspends or resumes, against the jobs in force before it
/// (none at the start): once per change, rather than a line at every skipped fire.
fn log_suspensions(in_force: &BTreeMap<String, Arc<Job>>, jobs: &JobSet) {
    for job in &jobs.jobs {
        let was = in_force.get(&job.name).map(|before| before.suspend);
        match (was, job.suspend) {
            (None | Some(false), true) => tracing::info!(
                job = %job.name,
                suspended = true,
                "job suspended: its fires are skipped until it is resumed"
            ),
            (Some(true), false) => tracing::info!(
                job = %job.name,
                suspended = false,
                "job resumed: its fires start runs again"
            ),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::SystemClock;
    use crate::config::{self, LoadOptions};
    use crate::run_state::memory::MemoryStore;
    use crate::run_state::Claim;
    use crate::run_state::Origin;
    use crate::term::FencingToken;
    use tokio::sync::mpsc;

    fn job_set(extra: &str) -> JobSet {
        let yaml = format!(
            "jobs:\n  - name: j\n    schedule: \"0 0 1 1 *\"\n    shell: \"true\"\n{extra}"
        );
        let opts = LoadOptions {
            max_termination_grace: std::time::Duration::MAX,
        };
        config::parse_str(&yaml, "test.yaml", &opts).expect("valid jobs")
    }

    fn dispatcher() -> (Dispatcher, mpsc::UnboundedReceiver<DispatchEvent>) {
        let (_tx, leadership) = watch::channel(Leadership::Follower { holder: None });
        dispatcher_over(MemoryStore::new(), leadership)
    }

    /// A dispatcher, and its runner, keeping the run state in `store`.
    fn dispatcher_over(
        store: MemoryStore,
        leadership: watch::Receiver<Leadership>,
    ) -> (Dispatcher, mpsc::UnboundedReceiver<DispatchEvent>) {
        let clock: SharedClock = Arc::new(SystemClock);
        let ledger = Arc::new(Ledger::new(store, "me".to_owned()));
        let runner = Runner::new(
            "me".to_owned(),
            Arc::clone(&clock),
            None,
            Arc::clone(&ledger),
        );
        let (events_tx, events) = mpsc::unbounded_channel();
        let dispatcher = Dispatcher::new(runner, leadership, clock, ledger).with_events(events_tx);
        (dispatcher, events)
    }

    #[tokio::test]
    async fn a_suspended_jobs_fire_is_reported_as_a_skip() {
        let (dispatcher, mut events) = dispatcher();
        let jobs = job_set("    suspend: true\n");
        let scheduled = Utc::now();
        dispatcher.fire(&jobs.jobs[0], scheduled);
        let expected = DispatchEvent::Skipped {
            job: "j".to_owned(),
            scheduled,
            reason: SkipReason::Suspended,
            leader: false,
        };
        assert_eq!(events.recv().await, Some(expected));
    }

    fn jobs_of(names_and_schedules: &[(&str, &str)]) -> Arc<JobSet> {
        let mut yaml = String::from("jobs:\n");
        for (name, schedule) in names_and_schedules {
            yaml.push_str(&format!(
                "  - name: {name}\n    schedule: \"{schedule}\"\n    shell: \"true\"\n"
            ));
        }
        let opts = LoadOptions {
            max_termination_grace: std::time::Duration::MAX,
        };
        Arc::new(config::parse_str(&yaml, "test.yaml", &opts).expect("valid jobs"))
    }

    async fn next_event(events: &mut mpsc::UnboundedReceiver<DispatchEvent>) -> DispatchEvent {
        tokio::time::timeout(std::time::Duration::from_secs(10), events.recv())
            .await
            .expect("an event comes")
            .expect("the channel is open")
    }

    fn applied(event: DispatchEvent) -> JobsDiff {
        match event {
            DispatchEvent::JobsApplied { diff, .. } => diff,
            other => panic!("expected JobsApplied, got {other:?}"),
        }
    }

    fn next_run_of(event: DispatchEvent) -> (String, Option<DateTime<Utc>>) {
        match event {
            DispatchEvent::NextRun { job, at } => (job, at),
            other => panic!("expected NextRun, got {other:?}"),
        }
    }

    #[test]
    fn a_diff_sorts_names_into_added_removed_changed_and_unchanged() {
        let old = jobs_of(&[
            ("keep", "0 0 1 1 *"),
            ("change", "0 0 1 1 *"),
            ("drop", "@daily"),
        ]);
        let old: BTreeMap<String, Arc<Job>> = old
            .jobs
            .iter()
            .map(|job| (job.name.clone(), Arc::clone(job)))
            .collect();
        let new = jobs_of(&[
            ("keep", "0 0 1 1 *"),
            ("change", "0 0 2 1 *"),
            ("add", "@daily"),
        ]);
        let diff = JobsDiff::between(&old, &new);
        assert_eq!(
            diff,
            JobsDiff {
                added: vec!["add".to_owned()],
                removed: vec!["drop".to_owned()],
                changed: vec!["change".to_owned()],
                unchanged: 1,
            }
        );
        assert!(!diff.is_empty());
        assert!(JobsDiff::between(
            &old,
            &jobs_of(&[
                ("keep", "0 0 1 1 *"),
                ("change", "0 0 1 1 *"),
                ("drop", "@daily")
            ])
        )
        .is_empty());
    }

    #[tokio::test]
    async fn a_reload_starts_added_retimes_changed_and_keeps_unchanged_timers() {
        let (dispatcher, mut events) = dispatcher();
        let (jobs_tx, jobs) = watch::channel(jobs_of(&[
            ("keep", "0 0 1 1 *"),
            ("change", "0 0 1 1 *"),
            ("drop", "0 0 1 1 *"),
        ]));
        let stop = CancellationToken::new();
        let running = tokio::spawn({
            let stop = stop.clone();
            async move { dispatcher.run(jobs, stop).await }
        });
        assert_eq!(applied(next_event(&mut events).await).added.len(), 3);
        let mut first_timers: Vec<String> = Vec::new();
        for _ in 0..3 {
            first_timers.push(next_run_of(next_event(&mut events).await).0);
        }
        first_timers.sort();
        assert_eq!(first_timers, ["change", "drop", "keep"]);

        jobs_tx.send_replace(jobs_of(&[
            ("keep", "0 0 1 1 *"),
            ("change", "0 0 2 1 *"),
            ("add", "0 0 3 1 *"),
        ]));
        let diff = applied(next_event(&mut events).await);
        assert_eq!(diff.added, ["add"]);
        assert_eq!(diff.removed, ["drop"]);
        assert_eq!(diff.changed, ["change"]);
        assert_eq!(diff.unchanged, 1);
        // Only the new timers report: "keep" kept its timer, "drop" has none.
        let mut started: Vec<(String, String)> = Vec::new();
        for _ in 0..2 {
            let (job, at) = next_run_of(next_event(&mut events).await);
            let at = at.expect("a yearly schedule has a next fire");
            started.push((job, at.format("%m-%d").to_string()));
        }
        started.sort();
        assert_eq!(
            started,
            [
                ("add".to_owned(), "01-03".to_owned()),
                ("change".to_owned(), "01-02".to_owned())
            ]
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        assert!(events.try_recv().is_err(), "no other timer reported");

        stop.cancel();
        running.await.expect("the dispatcher stops");
    }

    #[tokio::test]
    async fn the_jobs_stay_in_force_when_the_reloader_is_gone() {
        let (dispatcher, mut events) = dispatcher();
        let (jobs_tx, jobs) = watch::channel(jobs_of(&[("a", "0 0 1 1 *")]));
        let stop = CancellationToken::new();
        let running = tokio::spawn({
            let stop = stop.clone();
            async move { dispatcher.run(jobs, stop).await }
        });
        applied(next_event(&mut events).await);
        next_run_of(next_event(&mut events).await);
        drop(jobs_tx);
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(!running.is_finished(), "the timers run until stopped");
        stop.cancel();
        running.await.expect("the dispatcher stops");
    }

    #[tokio::test]
    async fn each_timer_reports_its_jobs_next_fire() {
        let (dispatcher, mut events) = dispatcher();
        let jobs = job_set("");
        let stop = CancellationToken::new();
        let running = {
            let stop = stop.clone();
            tokio::spawn(
                async move { dispatcher.run(watch::channel(Arc::new(jobs)).1, stop).await },
            )
        };
        applied(next_event(&mut events).await);
        let Some(DispatchEvent::NextRun { job, at }) = events.recv().await else {
            panic!("the first event is the next fire");
        };
        assert_eq!(job, "j");
        let at = at.expect("a yearly schedule has a next fire");
        assert!(at > Utc::now());
        assert_eq!(at.format("%m-%d %H:%M").to_string(), "01-01 00:00");
        stop.cancel();
        running.await.expect("the dispatcher stops");
    }

    /// The jobs in `store`'s record.
    async fn recorded(store: &MemoryStore) -> Vec<String> {
        let reader = Ledger::new(store.clone(), "reader".to_owned());
        let record = reader.refresh().await.expect("infallible");
        record.jobs.into_keys().collect()
    }

    #[tokio::test]
    async fn a_reload_that_removes_jobs_prunes_them_while_leading_only() {
        let both = jobs_of(&[("kept", "@hourly"), ("gone", "@hourly")]);
        let kept = jobs_of(&[("kept", "@hourly")]);
        let store = MemoryStore::new();
        let before = Ledger::new(store.clone(), "before".to_owned());
        let slot = Utc::now() - chrono::Duration::days(1);
        for name in ["kept", "gone"] {
            let claim = before
                .claim(name, slot, FencingToken(3), slot, &Origin::SCHEDULE)
                .await;
            assert_eq!(claim.expect("infallible"), Claim::Claimed);
        }
        let stop = CancellationToken::new();

        // A follower leaves the record alone.
        let (_follows, leadership) = watch::channel(Leadership::Follower { holder: None });
        let (dispatcher, mut events) = dispatcher_over(store.clone(), leadership);
        let (jobs_tx, jobs) = watch::channel(Arc::clone(&both));
        let following = tokio::spawn({
            let stop = stop.clone();
            async move { dispatcher.run(jobs, stop).await }
        });
        applied(next_event(&mut events).await);
        jobs_tx.send_replace(Arc::clone(&kept));
        while !matches!(
            next_event(&mut events).await,
            DispatchEvent::JobsApplied { .. }
        ) {}
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        assert_eq!(recorded(&store).await, ["gone", "kept"]);

        // A leader forgets them when the reload removes them (its term began with both: nothing to forget).
        let handle = Term::begin(
            FencingToken(4),
            Utc::now(),
            tokio::time::Instant::now() + std::time::Duration::from_secs(60),
        );
        let (_leads, leadership) = watch::channel(Leadership::Leader {
            term: handle.term().clone(),
        });
        let (dispatcher, mut events) = dispatcher_over(store.clone(), leadership);
        let (jobs_tx, jobs) = watch::channel(Arc::clone(&both));
        let leading = tokio::spawn({
            let stop = stop.clone();
            async move { dispatcher.run(jobs, stop).await }
        });
        applied(next_event(&mut events).await);
        let mut stamped = false;
        for _ in 0..100 {
            let reader = Ledger::new(store.clone(), "reader".to_owned());
            if reader.refresh().await.expect("infallible").fencing_token == 4 {
                stamped = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert!(stamped, "the term began");
        assert_eq!(recorded(&store).await, ["gone", "kept"]);
        jobs_tx.send_replace(kept);
        let mut pruned = false;
        for _ in 0..100 {
            if recorded(&store).await == ["kept"] {
                pruned = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert!(pruned, "the removed job's entry is forgotten");

        stop.cancel();
        following.await.expect("the dispatcher stops");
        leading.await.expect("the dispatcher stops");
        handle.end().await;
    }
}
