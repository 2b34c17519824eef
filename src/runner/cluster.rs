//! `executor: kubernetes`: a run is a Kubernetes Job. The runner applies the concurrency policy against
//! the Jobs the API server holds too, creates the slot's Job, follows it to its end through the cache of
//! [`Cluster`], and maps its terminal condition to the run's outcome. The leader also adopts the active
//! Jobs earlier terms left, records the outcomes of those that ended while no leader followed them, and
//! deletes finished Jobs beyond the job's history limits.
//!
//! What differs from a process, and why (docs/design.md, "The Kubernetes executor"):
//! - The Job survives the end of its term: the term's end stops following it (the run is handed over,
//!   with no outcome here) and the next leader adopts it. With `cancelOnLeadershipLoss` the term's end
//!   deletes it instead (foreground: the Job stays, being deleted, until its pods are gone, so the next
//!   leader's policy still sees it), and a leader that finds such a Job from an earlier term deletes it.
//! - The Job object is the lock: `Forbid` and `Queue` count the job's active Jobs in the cache (the watch
//!   by label, complete since the first list), not only the runs of this process; `Replace` deletes them
//!   with foreground propagation and waits until they are gone before it creates the next.
//! - Each slot's Job has a name derived from the job and the slot: the API server refuses a second Job
//!   for a slot (`AlreadyExists`), whichever leader sends it.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use k8s_openapi::api::batch::v1::Job as KubeJob;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{Run, RunSlot, Runner, SlotGuard};
use crate::config::{ConcurrencyPolicy, Executor, Job, JobSet, KubernetesJob};
use crate::event::{ClusterAction, Failure, Outcome, RunEvent, RunReport, SkipReason};
use crate::kubernetes::batch::{
    self, finished_at, is_deleting, labels_of, state_of, Cluster, JobState, Labels, NotReady,
    RunIdentity,
};
use crate::logging::rfc3339;
use crate::term::Term;

/// How many times a create that got no answer is sent again (it may have landed: a later
/// `AlreadyExists` of a Job with this term's token is then this run's Job).
const CREATE_ATTEMPTS: u32 = 3;
/// The wait between those attempts.
const CREATE_RETRY_DELAY: Duration = Duration::from_millis(500);
/// The least time between two passes of the leader over the cache (adoption, outcomes, history).
const KEEPER_PASS_INTERVAL: Duration = Duration::from_secs(1);

/// How following a Job ended.
enum Followed {
    /// It reached a terminal condition.
    Finished(Arc<KubeJob>),
    /// It is gone without one (deleted by someone else).
    Deleted,
    /// The term ended (or the runner was killed) while it was active.
    TermEnded,
    /// The run was cancelled while its term is live: `Replace`.
    Replaced,
}

// === impl Run ===

impl Run {
    fn cluster(&self) -> Option<Arc<Cluster>> {
        self.runner.cluster.get().cloned()
    }

    /// The name of this run's Job.
    fn kubernetes_job_name(&self) -> String {
        crate::config::kubernetes_job_name(&self.job.name, self.scheduled)
    }

    /// The concurrency policy against the Jobs of the job that the API server holds and this process does
    /// not follow (a Job a cut-off leader created late, or one not adopted yet); `Some` if the run must not
    /// start. Waits for the cache's first list (a term's first fires may come before it): without it
    /// (RBAC forbids it, or the API server does not answer) the slot does not start.
    pub(super) async fn cluster_policy(&self) -> Option<Hold> {
        let cluster = self.cluster()?;
        let ended = self.term.child_token();
        match cluster.ready(&ended).await {
            Ok(()) => {}
            Err(NotReady::Stopped) => return Some(Hold::Skip(SkipReason::NotLeader)),
            Err(NotReady::Forbidden) => {
                return Some(Hold::Fail(Outcome::Failed(Failure::Refused(format!(
                    "not allowed to list and watch jobs.batch in namespace {}, which the concurrency \
                     policy and adoption need (grant list and watch on jobs.batch to leasecron's service \
                     account: apply the component deploy/kubernetes-jobs)",
                    cluster.params().namespace
                )))))
            }
            Err(NotReady::TimedOut) => {
                tracing::warn!(job = %self.job.name, scheduled = rfc3339(&self.scheduled), limit_seconds = cluster.ready_limit().as_secs_f64(), "the Kubernetes Jobs could not be listed in time: not starting the slot (its policy needs them)");
                return Some(Hold::Skip(SkipReason::StateUnavailable));
            }
        }
        let mut changes = cluster.subscribe();
        loop {
            let tracked = self.runner.tracked_jobs(Some(&self.job.name));
            let foreign: Vec<Arc<KubeJob>> = cluster
                .jobs_of(&self.job.name)
                .into_iter()
                .filter(|job| !state_of(job).is_finished())
                .filter(|job| {
                    job.metadata
                        .name
                        .as_ref()
                        .is_some_and(|name| !tracked.contains(name))
                })
                .collect();
            let first = foreign.first()?;
            let first_name = first.metadata.name.clone().unwrap_or_default();
            match self.job.concurrency_policy {
                ConcurrencyPolicy::Allow => return None,
                ConcurrencyPolicy::Forbid => {
                    tracing::info!(job = %self.job.name, scheduled = rfc3339(&self.scheduled), active_job = %first_name, "a Kubernetes Job of the job is still active (created by an earlier term): not starting (Forbid)");
                    return Some(Hold::Skip(SkipReason::Overlap));
                }
                ConcurrencyPolicy::Queue => {
                    tracing::info!(job = %self.job.name, scheduled = rfc3339(&self.scheduled), active_job = %first_name, "slot queued: a Kubernetes Job of the job created by an earlier term is still active; this one starts when it ends");
                }
                ConcurrencyPolicy::Replace => {
                    for job in &foreign {
                        let name = job.metadata.name.clone().unwrap_or_default();
                        if is_deleting(job) {
                            continue;
                        }
                        tracing::info!(job = %self.job.name, scheduled = rfc3339(&self.scheduled), active_job = %name, "deleting the job's active Kubernetes Job before creating the next (Replace)");
                        match cluster.delete(&name, true).await {
                            Ok(()) => self.cluster_event(&name, ClusterAction::Deleted),
                            Err(error) => {
                                tracing::warn!(job = %self.job.name, active_job = %name, %error, "cannot delete the active Kubernetes Job (Replace): not creating the next");
                                return Some(Hold::Skip(SkipReason::Overlap));
                            }
                        }
                    }
                }
            }
            tokio::select! {
                changed = changes.changed() => if changed.is_err() {
                    return Some(Hold::Skip(SkipReason::NotLeader));
                },
                () = self.cancel.cancelled() => return Some(Hold::Skip(SkipReason::NotLeader)),
            }
        }
    }

    /// Runs the slot as a Kubernetes Job: create it, follow it, record and report its outcome (or hand it
    /// over when the term ends first).
    pub(super) async fn execute_on_cluster(&self, kubernetes: &KubernetesJob) {
        let started = Instant::now();
        let started_wall = self.runner.clock.now();
        let Some(cluster) = self.cluster() else {
            let outcome = Outcome::Failed(Failure::Refused(
                "executor: kubernetes needs the Kubernetes backend (run with --lease-name, not \
                 --lease-file)"
                    .to_owned(),
            ));
            self.end_unstarted(outcome, started_wall).await;
            return;
        };
        let name = self.kubernetes_job_name();
        let origin = self.origin.clone();
        let manifest = batch::manifest(
            cluster.params(),
            &self.job,
            kubernetes,
            &RunIdentity {
                scheduled: self.scheduled,
                fencing_token: self.term.fencing_token(),
                identity: &self.runner.identity,
                origin: &origin,
            },
        );
        match self.create(&cluster, &manifest, &name).await {
            Ok(()) => {}
            Err(Created::AlreadyStarted) => {
                self.runner
                    .skip(&self.job.name, self.scheduled, SkipReason::AlreadyStarted);
                return;
            }
            Err(Created::NotLive) => {
                self.runner
                    .skip(&self.job.name, self.scheduled, SkipReason::NotLeader);
                return;
            }
            Err(Created::Failed(outcome)) => {
                self.end_unstarted(outcome, started_wall).await;
                return;
            }
        }
        let created_after = started.elapsed();
        let created_at = cluster
            .cached(&name)
            .and_then(|job| batch::created_at(&job))
            .unwrap_or(started_wall);
        tracing::info!(job = %self.job.name, run_id = self.slot.id, fencing_token = self.term.fencing_token().0, scheduled = rfc3339(&self.scheduled), kubernetes_job = %name, namespace = %cluster.params().namespace, create_seconds = created_after.as_secs_f64(), "Kubernetes Job created");
        self.cluster_event(&name, ClusterAction::Created);
        self.follow_to_end(&cluster, &name, created_at).await;
    }

    /// Follows the Job `name` (created by this run, or adopted) to its end, then records and reports it.
    pub(super) async fn follow_to_end(
        &self,
        cluster: &Arc<Cluster>,
        name: &str,
        created_at: DateTime<Utc>,
    ) {
        let cancel_on_leadership_loss = self
            .job
            .kubernetes
            .as_ref()
            .is_some_and(|kubernetes| kubernetes.cancel_on_leadership_loss);
        let outcome = match follow(cluster, name, &self.cancel, &self.term, &self.runner).await {
            Followed::Finished(job) => {
                let finished = finished_at(&job).unwrap_or_else(|| self.runner.clock.now());
                let attempts = pods_tried(&job);
                let outcome = match state_of(&job) {
                    JobState::Succeeded => Outcome::Succeeded,
                    JobState::DeadlineExceeded => Outcome::TimedOut,
                    JobState::Failed { reason, message } => Outcome::Failed(Failure::Job {
                        reason,
                        message,
                        exit_code: cluster.failed_exit_code(name).await,
                    }),
                    JobState::Active => Outcome::Cancelled,
                };
                self.end(outcome, attempts, created_at, finished).await;
                return;
            }
            Followed::Deleted => {
                tracing::warn!(job = %self.job.name, kubernetes_job = %name, "the run's Kubernetes Job was deleted before it finished (not by leasecron)");
                Outcome::Cancelled
            }
            Followed::Replaced => {
                self.delete_and_wait(cluster, name).await;
                Outcome::Cancelled
            }
            Followed::TermEnded if cancel_on_leadership_loss => {
                tracing::info!(job = %self.job.name, kubernetes_job = %name, "the term ended: deleting the run's Kubernetes Job (cancelOnLeadershipLoss)");
                match cluster.delete(name, true).await {
                    Ok(()) => self.cluster_event(name, ClusterAction::Deleted),
                    Err(error) => {
                        tracing::warn!(job = %self.job.name, kubernetes_job = %name, %error, "cannot delete the run's Kubernetes Job at the end of the term; the next leader deletes it (cancelOnLeadershipLoss)");
                    }
                }
                Outcome::Cancelled
            }
            Followed::TermEnded => {
                tracing::info!(job = %self.job.name, run_id = self.slot.id, fencing_token = self.term.fencing_token().0, scheduled = rfc3339(&self.scheduled), kubernetes_job = %name, "the term ended while the run's Kubernetes Job is active: it goes on, and the next leader adopts it");
                self.cluster_event(name, ClusterAction::HandedOver);
                self.slot.release();
                return;
            }
        };
        self.end(outcome, 1, created_at, self.runner.clock.now())
            .await;
    }

    /// Deletes the Job `name` with foreground propagation and waits until it is gone (its pods first),
    /// for as long as the term lives.
    async fn delete_and_wait(&self, cluster: &Arc<Cluster>, name: &str) {
        tracing::info!(job = %self.job.name, kubernetes_job = %name, "replaced: deleting the run's Kubernetes Job (foreground) and waiting until it is gone");
        if let Err(error) = cluster.delete(name, true).await {
            tracing::warn!(job = %self.job.name, kubernetes_job = %name, %error, "cannot delete the replaced run's Kubernetes Job");
            return;
        }
        self.cluster_event(name, ClusterAction::Deleted);
        let mut changes = cluster.subscribe();
        while cluster.cached(name).is_some() {
            tokio::select! {
                changed = changes.changed() => if changed.is_err() { return },
                () = self.term.ended() => return,
            }
        }
    }

    /// Sends the create, again after no answer (it may have landed), until it is answered.
    async fn create(
        &self,
        cluster: &Arc<Cluster>,
        manifest: &KubeJob,
        name: &str,
    ) -> Result<(), Created> {
        let mut attempt = 0;
        loop {
            if !self.term.is_live() {
                return Err(Created::NotLive);
            }
            attempt += 1;
            let error = match cluster.create(manifest).await {
                Ok(()) => return Ok(()),
                Err(error) => error,
            };
            match &error {
                batch::Error::AlreadyExists { .. } => {
                    // Ours if an earlier attempt of this run landed without an answer.
                    if attempt > 1 && self.is_ours(cluster, name).await {
                        return Ok(());
                    }
                    tracing::info!(job = %self.job.name, scheduled = rfc3339(&self.scheduled), kubernetes_job = %name, "the slot's Kubernetes Job exists already (another term created it): not running it again");
                    return Err(Created::AlreadyStarted);
                }
                batch::Error::Forbidden { .. } => {
                    if !self.runner.forbidden_reported.swap(true, Ordering::Relaxed) {
                        tracing::error!(job = %self.job.name, %error, "cannot create Kubernetes Jobs: every run of an executor: kubernetes job fails until the rule is granted");
                    } else {
                        tracing::warn!(job = %self.job.name, kubernetes_job = %name, "cannot create the Kubernetes Job: forbidden (see the first error for the rule to grant)");
                    }
                    return Err(Created::Failed(Outcome::Failed(Failure::Refused(
                        error.to_string(),
                    ))));
                }
                batch::Error::Refused { .. } => {
                    tracing::warn!(job = %self.job.name, scheduled = rfc3339(&self.scheduled), kubernetes_job = %name, %error, "the API server refused the run's Kubernetes Job");
                    return Err(Created::Failed(Outcome::Failed(Failure::Refused(
                        error.to_string(),
                    ))));
                }
                batch::Error::Unavailable { .. } if attempt < CREATE_ATTEMPTS => {
                    tracing::warn!(job = %self.job.name, kubernetes_job = %name, attempt, %error, "creating the run's Kubernetes Job failed; trying again");
                    tokio::select! {
                        () = tokio::time::sleep(CREATE_RETRY_DELAY) => {}
                        () = self.cancel.cancelled() => return Err(Created::NotLive),
                    }
                }
                batch::Error::Unavailable { .. } => {
                    tracing::warn!(job = %self.job.name, kubernetes_job = %name, attempts = attempt, %error, "cannot create the run's Kubernetes Job; if a request landed after all, the leader adopts the Job");
                    return Err(Created::Failed(Outcome::Failed(Failure::Refused(
                        error.to_string(),
                    ))));
                }
            }
        }
    }

    /// True if the Job `name` on the API server was created by this term.
    async fn is_ours(&self, cluster: &Arc<Cluster>, name: &str) -> bool {
        let job = match cluster.get(name).await {
            Ok(Some(job)) => job,
            _ => return false,
        };
        labels_of(&job).is_some_and(|labels| labels.fencing_token == self.term.fencing_token().0)
    }

    /// Reports (only) a run that failed before it claimed its slot.
    pub(super) fn fail_unclaimed(&self, outcome: Outcome) {
        let at = self.runner.clock.now();
        tracing::warn!(job = %self.job.name, scheduled = rfc3339(&self.scheduled), detail = %outcome, "the slot's Kubernetes Job cannot be created");
        let report = self.report(outcome, 0, at, at);
        self.finish(report);
    }

    /// Ends a run whose Job was never created: records and reports `outcome`.
    async fn end_unstarted(&self, outcome: Outcome, at: DateTime<Utc>) {
        self.record_completion_at(&outcome, 0, at).await;
        let report = self.report(outcome, 0, at, at);
        self.finish(report);
    }

    /// Records and reports the end of a run whose Job was created at `created_at` and ended at
    /// `finished`.
    async fn end(
        &self,
        outcome: Outcome,
        attempts: u32,
        created_at: DateTime<Utc>,
        finished: DateTime<Utc>,
    ) {
        self.record_completion_at(&outcome, attempts, finished)
            .await;
        let report = self.report(outcome, attempts, created_at, finished);
        self.finish(report);
        if let (Some(cluster), Executor::Kubernetes(kubernetes)) =
            (self.cluster(), self.job.executor())
        {
            if self.term.is_live() {
                clean_history(&self.runner, &cluster, &self.job, kubernetes, &self.term).await;
            }
        }
    }

    fn report(
        &self,
        outcome: Outcome,
        attempts: u32,
        started_at: DateTime<Utc>,
        finished: DateTime<Utc>,
    ) -> RunReport {
        RunReport {
            job: self.job.name.clone(),
            scheduled: self.scheduled,
            attempts,
            outcome,
            started_at,
            duration: (finished - started_at).to_std().unwrap_or_default(),
            start_delay: (started_at - self.fire_time()).to_std().unwrap_or_default(),
            fencing_token: self.created_by.unwrap_or(self.term.fencing_token().0),
            leftover_processes_killed: 0,
        }
    }

    fn cluster_event(&self, name: &str, action: ClusterAction) {
        self.runner.send(RunEvent::Cluster {
            job: self.job.name.clone(),
            scheduled: self.scheduled,
            name: name.to_owned(),
            action,
        });
    }
}

/// Why [`Run::cluster_policy`] holds a slot back.
pub(super) enum Hold {
    /// The slot is skipped.
    Skip(SkipReason),
    /// The run fails before it claims its slot (reported, not recorded in the run state).
    Fail(Outcome),
}

/// Why a create did not give the run a Job.
enum Created {
    /// The slot's Job exists, created by another term.
    AlreadyStarted,
    /// The term ended first.
    NotLive,
    /// The API server refused it, or could not be reached: the run fails with this outcome.
    Failed(Outcome),
}

/// How many pods the Job tried (succeeded and failed), at least 1: a run's attempts.
fn pods_tried(job: &KubeJob) -> u32 {
    let status = job.status.as_ref();
    let count =
        status.and_then(|s| s.succeeded).unwrap_or(0) + status.and_then(|s| s.failed).unwrap_or(0);
    u32::try_from(count).unwrap_or(0).max(1)
}

/// Follows the Job `name` in the cache until it finishes, is gone, the run is cancelled, or the term ends;
/// woken by changes of that Job only.
async fn follow(
    cluster: &Arc<Cluster>,
    name: &str,
    cancel: &CancellationToken,
    term: &Term,
    runner: &Runner,
) -> Followed {
    let follower = cluster.follow_job(name);
    let mut seen = false;
    loop {
        let changed = follower.changed();
        tokio::pin!(changed);
        // Registered before the cache is read: a change in between wakes this round.
        changed.as_mut().enable();
        match cluster.cached(name) {
            Some(job) if state_of(&job).is_finished() => return Followed::Finished(job),
            Some(_) => seen = true,
            None if seen => match cluster.get(name).await {
                Ok(None) => return Followed::Deleted,
                Ok(Some(job)) if state_of(&job).is_finished() => {
                    return Followed::Finished(Arc::new(job))
                }
                // The cache lags, or the API is unreachable: wait for the next change.
                Ok(Some(_)) | Err(_) => {}
            },
            None => {}
        }
        tokio::select! {
            () = changed => {}
            () = cancel.cancelled() => {
                return if term.is_live() && !runner.groups.is_killed() {
                    Followed::Replaced
                } else {
                    Followed::TermEnded
                };
            }
        }
    }
}

/// Deletes the finished Jobs of `job` beyond its history limits (the oldest first: the newest
/// `successfulJobsHistoryLimit` succeeded and `failedJobsHistoryLimit` failed ones stay), as CronJob does,
/// while `term` lives: a backlog of deletions never holds the end of the term back.
async fn clean_history(
    runner: &Runner,
    cluster: &Arc<Cluster>,
    job: &Job,
    kubernetes: &KubernetesJob,
    term: &Term,
) {
    let mut succeeded = Vec::new();
    let mut failed = Vec::new();
    for kube_job in cluster.jobs_of(&job.name) {
        if is_deleting(&kube_job) {
            continue;
        }
        let at = finished_at(&kube_job);
        match state_of(&kube_job) {
            JobState::Active => {}
            JobState::Succeeded => succeeded.push((at, kube_job)),
            JobState::Failed { .. } | JobState::DeadlineExceeded => failed.push((at, kube_job)),
        }
    }
    let limits = [
        (succeeded, kubernetes.successful_jobs_history_limit),
        (failed, kubernetes.failed_jobs_history_limit),
    ];
    for (mut finished, limit) in limits {
        // Newest first; by name (slot) between equal times.
        finished.sort_by(|a, b| (b.0, &b.1.metadata.name).cmp(&(a.0, &a.1.metadata.name)));
        let limit = usize::try_from(limit).unwrap_or(usize::MAX);
        for (_, old) in finished.into_iter().skip(limit) {
            // Only while the term lives: its end waits for this task, and must not wait for a backlog.
            if !term.is_live() {
                return;
            }
            let Some(labels) = labels_of(&old) else {
                continue;
            };
            match cluster.delete(&labels.name, false).await {
                Ok(()) => {
                    tracing::debug!(job = %job.name, kubernetes_job = %labels.name, "deleted a finished Kubernetes Job beyond the job's history limits");
                    runner.send(RunEvent::Cluster {
                        job: job.name.clone(),
                        scheduled: labels.scheduled,
                        name: labels.name,
                        action: ClusterAction::Deleted,
                    });
                }
                Err(error) => {
                    tracing::warn!(job = %job.name, kubernetes_job = %labels.name, %error, "cannot delete a finished Kubernetes Job beyond the job's history limits");
                    return;
                }
            }
        }
    }
}

// === impl Runner ===

impl Runner {
    /// The names of the Jobs that runs of this process follow (or will create): of `job`, or of every job.
    fn tracked_jobs(&self, job: Option<&str>) -> HashSet<String> {
        let runs = self.lock_runs();
        let slots: Vec<&Vec<RunSlot>> = match job {
            Some(job) => runs.get(job).into_iter().collect(),
            None => runs.values().collect(),
        };
        slots
            .into_iter()
            .flatten()
            .filter_map(|slot| slot.kubernetes_job.clone())
            .collect()
    }

    /// While `term` lives, keeps the Jobs of this lease in order, on every change of the cache (at most
    /// once a second): adopts each active Job of a kubernetes job that no run follows
    /// (deleting instead one of an earlier term whose job has `cancelOnLeadershipLoss`), records the
    /// outcome of each finished Job whose run the run state still shows unfinished, and deletes finished
    /// Jobs beyond the history limits. Spawned by the dispatcher when a term begins; ends with the term.
    /// Nothing is listed before a kubernetes job is in force: the narrow Role of a process-only
    /// installation does not allow it.
    pub async fn keep_cluster(self: Arc<Self>, term: Term, mut jobs: watch::Receiver<Arc<JobSet>>) {
        let Some(cluster) = self.cluster.get().cloned() else {
            return;
        };
        while jobs.borrow_and_update().kubernetes_job().is_none() {
            tokio::select! {
                () = term.ended() => return,
                changed = jobs.changed() => if changed.is_err() { return },
            }
        }
        let ended = term.child_token();
        // Until the first list: retried while the term lives (each run reports its own failure).
        while let Err(not_ready) = cluster.ready(&ended).await {
            if not_ready == NotReady::Stopped {
                return;
            }
            tokio::select! {
                () = term.ended() => return,
                () = tokio::time::sleep(cluster.ready_limit()) => {}
            }
        }
        let mut changes = cluster.subscribe();
        let mut cleaned = false;
        loop {
            if !term.is_live() {
                return;
            }
            let set = Arc::clone(&jobs.borrow());
            self.keep_pass(&cluster, &term, &set).await;
            if !cleaned {
                // Once a term: the history of every kubernetes job (later, after each run).
                for job in &set.jobs {
                    if let Executor::Kubernetes(kubernetes) = job.executor() {
                        clean_history(&self, &cluster, job, kubernetes, &term).await;
                    }
                }
                cleaned = true;
            }
            tokio::select! {
                () = term.ended() => return,
                () = tokio::time::sleep(KEEPER_PASS_INTERVAL) => {}
            }
            tokio::select! {
                () = term.ended() => return,
                changed = changes.changed() => if changed.is_err() { return },
            }
        }
    }

    /// One pass of [`Runner::keep_cluster`] over the cache.
    async fn keep_pass(self: &Arc<Self>, cluster: &Arc<Cluster>, term: &Term, set: &JobSet) {
        let mut finished = Vec::new();
        // Once per pass, not per Job: a pass over n Jobs stays O(n).
        let tracked = self.tracked_jobs(None);
        for kube_job in cluster.all() {
            let Some(labels) = labels_of(&kube_job) else {
                continue;
            };
            let Some(job) = set.get(&labels.job) else {
                continue;
            };
            let Executor::Kubernetes(kubernetes) = job.executor() else {
                continue;
            };
            if tracked.contains(&labels.name) {
                continue;
            }
            if state_of(&kube_job).is_finished() {
                finished.push((Arc::clone(job), labels));
            } else if !(is_deleting(&kube_job) && kubernetes.cancel_on_leadership_loss) {
                // (One being deleted at the end of an earlier term is left alone: the policy counts it
                // until it is gone.)
                self.adopt(
                    Arc::clone(job),
                    labels,
                    term,
                    kubernetes.cancel_on_leadership_loss,
                );
            }
        }
        if finished.is_empty() {
            return;
        }
        // Read after the runs were found untracked: a run records its end before it leaves the registry,
        // so a run of this process that ended since is recorded here, and not adopted.
        let record = self.ledger.snapshot();
        for (job, labels) in finished {
            // Finished while no leader followed it: its outcome, if the run state still waits for one.
            let unrecorded = record.jobs.get(&job.name).is_some_and(|record| {
                record.history.iter().any(|entry| {
                    entry.slot == labels.scheduled
                        && entry.fencing_token == labels.fencing_token
                        && entry.outcome.is_none()
                })
            });
            if unrecorded {
                self.adopt(job, labels, term, false);
            }
        }
    }

    /// Follows a Job an earlier term created (`labels`) as a run of `term`, registered under the job's
    /// policy as a run in flight; with `cancel`, deletes it first (`cancelOnLeadershipLoss`).
    fn adopt(self: &Arc<Self>, job: Arc<Job>, labels: Labels, term: &Term, cancel: bool) {
        let token = term.child_token();
        let id = self.next_run_id.fetch_add(1, Ordering::Relaxed);
        let finished = CancellationToken::new();
        self.lock_runs()
            .entry(job.name.clone())
            .or_default()
            .push(RunSlot {
                id,
                cancel: token.clone(),
                finished: finished.clone(),
                queued: None,
                kubernetes_job: Some(labels.name.clone()),
            });
        let run = Run {
            runner: Arc::clone(self),
            scheduled: labels.scheduled,
            term: term.clone(),
            cancel: token,
            slot: SlotGuard {
                runner: Arc::clone(self),
                job: job.name.clone(),
                id,
                finished,
            },
            origin: labels.origin.clone(),
            created_by: Some(labels.fencing_token),
            reservation: None,
            job,
        };
        term.tracker().spawn(async move {
            let Some(cluster) = run.cluster() else {
                return;
            };
            tracing::info!(job = %run.job.name, run_id = run.slot.id, fencing_token = run.term.fencing_token().0, scheduled = rfc3339(&run.scheduled), kubernetes_job = %labels.name, created_by_fencing_token = labels.fencing_token, created_by = %labels.identity, cause = labels.origin.cause.as_str(), "adopted a Kubernetes Job an earlier term created");
            run.cluster_event(
                &labels.name,
                ClusterAction::Adopted {
                    created_by: labels.fencing_token,
                },
            );
            if cancel {
                tracing::info!(job = %run.job.name, kubernetes_job = %labels.name, "deleting it: its term has ended (cancelOnLeadershipLoss)");
                run.cancel.cancel();
            }
            let created_at = labels.created.unwrap_or_else(|| run.runner.clock.now());
            run.follow_to_end(&cluster, &labels.name, created_at).await;
        });
    }
}
