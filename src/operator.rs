//! The leader's side of the operator controls ([`crate::controls`]): it carries out each request of the
//! controls document once, under its term, and acknowledges it in the run state so that no later leader
//! carries it out again.
//!
//! The dispatcher hands it every version of the document while this replica holds a live term, and once
//! more when a term begins (the new leader picks up what the last one left: requests not yet
//! acknowledged, and backfills acknowledged as running). For each request, oldest first:
//!
//! - a request older than [`REQUEST_TTL`], or for a job not in the jobs in force, is acknowledged as
//!   refused, with the reason;
//! - a **trigger** starts one run now, through the runner and under the job's `concurrencyPolicy`; its
//!   slot is the instant it starts (`LEASECRON_SCHEDULED_TIME`). The run's claim writes the request's
//!   acknowledgement in the same compare-and-swap as its history entry, so a trigger runs at most once
//!   whoever leads. If the policy refuses it (a run in flight under `Forbid`), it is acknowledged as
//!   refused with that reason. A trigger runs even while the job is suspended: it is an explicit order;
//! - a **backfill** is acknowledged as running, then its slots run oldest first, one at a time, each after
//!   the job's runs in flight have ended. Each slot's claim advances the request's cursor in the run state;
//!   a slot already recorded as started (the job's `lastStarted`, or in its history) is skipped and
//!   counted. A new leader goes on after the cursor: no slot runs twice across a failover;
//! - a **suspend** or **resume** is acknowledged as done: the suspension itself is the document's
//!   `suspended` map, which every replica applies as soon as it reads it; the acknowledgement makes the
//!   leader count and report the change once.
//!
//! What it does is reported as [`DispatchEvent::Request`] (logs, metrics, Kubernetes Events).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::mpsc::UnboundedSender;

use crate::clock::SharedClock;
use crate::config::{ConcurrencyPolicy, Job, JobSet};
use crate::controls::{Controls, Request};
use crate::event::{DispatchEvent, SkipReason};
use crate::logging::rfc3339;
use crate::run_state::{
    self, Cause, Claim, Ledger, Origin, RequestAck, RequestKind, RequestState, MAX_BACKFILL_SLOTS,
    REQUEST_TTL,
};
use crate::runner::Runner;
use crate::term::Term;

/// How often a backfill looks whether the job's runs in flight have ended.
const IDLE_POLL: Duration = Duration::from_millis(50);
/// How long a backfill waits before it tries a slot again after the run state could not be written.
const STATE_RETRY: Duration = Duration::from_secs(1);
/// How many times a backfill tries one slot before it stops (the next term goes on from its cursor).
const SLOT_ATTEMPTS: u32 = 5;

/// Carries out the operators' requests while this replica leads. One per replica, shared.
#[derive(Debug)]
pub struct Operator {
    runner: Arc<Runner>,
    ledger: Arc<Ledger>,
    clock: SharedClock,
    identity: String,
    events: Option<UnboundedSender<DispatchEvent>>,
    /// The requests this replica is carrying out, with the token of the term that carries each: a new
    /// version of the document must not start one again while its acknowledgement is being written.
    busy: Mutex<HashMap<String, u64>>,
}

impl Operator {
    /// An operator that starts runs on `runner` and acknowledges requests in `ledger` as `identity`.
    pub fn new(
        runner: Arc<Runner>,
        ledger: Arc<Ledger>,
        clock: SharedClock,
        identity: String,
    ) -> Operator {
        Operator {
            runner,
            ledger,
            clock,
            identity,
            events: None,
            busy: Mutex::new(HashMap::new()),
        }
    }

    /// Reports what it does on `events`.
    pub fn with_events(mut self, events: UnboundedSender<DispatchEvent>) -> Operator {
        self.events = Some(events);
        self
    }

    /// Carries out, under `term`, every request of `controls` that is not acknowledged yet (and goes on
    /// with backfills acknowledged as running that nobody in this process is running). Returns at once:
    /// the work goes on in tasks of the term.
    pub fn carry_out(self: &Arc<Self>, controls: &Controls, jobs: &JobSet, term: &Term) {
        if !term.is_live() {
            return;
        }
        let token = term.fencing_token().0;
        let record = self.ledger.snapshot();
        for request in &controls.requests {
            let ack = record.requests.get(&request.id);
            let resume = ack.is_some_and(|ack| {
                ack.kind == RequestKind::Backfill && ack.state == RequestState::Running
            });
            if ack.is_some() && !resume {
                continue;
            }
            if !self.take(&request.id, token) {
                continue;
            }
            let this = Arc::clone(self);
            let (request, term) = (request.clone(), term.clone());
            let job = jobs.get(&request.job).cloned();
            term.clone().tracker().spawn(async move {
                this.handle(&request, job, &term).await;
                this.release(&request.id, term.fencing_token().0);
            });
        }
    }

    /// Forgets the acknowledgements of requests made more than [`crate::run_state::ACK_RETENTION`] ago:
    /// when a term begins.
    pub async fn prune(&self, term: &Term) {
        let now = self.clock.now();
        if let Err(error) = self.ledger.prune_requests(term.fencing_token(), now).await {
            tracing::warn!(%error, "cannot forget old acknowledgements of operators' requests in the run state");
        }
    }

    /// Marks `id` as carried out by the term `token`; false if it already is.
    fn take(&self, id: &str, token: u64) -> bool {
        let mut busy = self.busy.lock().unwrap_or_else(PoisonError::into_inner);
        match busy.get(id) {
            Some(held) if *held >= token => false,
            _ => {
                busy.insert(id.to_owned(), token);
                true
            }
        }
    }

    fn release(&self, id: &str, token: u64) {
        let mut busy = self.busy.lock().unwrap_or_else(PoisonError::into_inner);
        if busy.get(id) == Some(&token) {
            busy.remove(id);
        }
    }

    async fn handle(self: &Arc<Self>, request: &Request, job: Option<Arc<Job>>, term: &Term) {
        let now = self.clock.now();
        let record = self.ledger.snapshot();
        if let Some(ack) = record.requests.get(&request.id) {
            // A backfill a previous term accepted: go on after its cursor.
            if let Some(job) = job {
                let cursor = ack.cursor;
                tracing::info!(job = %request.job, request = %request.id, cursor = cursor.as_ref().map(rfc3339), fencing_token = term.fencing_token().0, "going on with a backfill that an earlier term began");
                self.backfill(request, &job, term).await;
            }
            return;
        }
        if run_state::is_expired(request.requested_at, now) {
            let why = format!(
                "expired: filed at {}, more than {} min before a leader could carry it out; nothing was run",
                rfc3339(&request.requested_at),
                REQUEST_TTL.as_secs() / 60
            );
            self.refuse(request, term, why).await;
            return;
        }
        let Some(job) = job else {
            let why = format!(
                "refused: there is no job {} in the jobs in force",
                request.job
            );
            self.refuse(request, term, why).await;
            return;
        };
        match request.kind {
            RequestKind::Trigger => self.trigger(request, job, term, now).await,
            RequestKind::Backfill => {
                if self
                    .acknowledge(request, term, RequestState::Running, None)
                    .await
                {
                    self.backfill(request, &job, term).await;
                }
            }
            RequestKind::Suspend | RequestKind::Resume => {
                let _ = self
                    .acknowledge(request, term, RequestState::Done, None)
                    .await;
            }
        }
    }

    async fn trigger(&self, request: &Request, job: Arc<Job>, term: &Term, now: DateTime<Utc>) {
        let origin = Origin::requested(Cause::Trigger, &request.id, request.requested_at);
        tracing::info!(job = %job.name, request = %request.id, by = %request.by, fencing_token = term.fencing_token().0, "triggered by an operator: starting a run now");
        match self.runner.start_with(Arc::clone(&job), now, term, origin) {
            Ok(running) => {
                running.finished().await;
                let ack = self.ledger.snapshot().requests.get(&request.id).cloned();
                match ack {
                    // Claimed under this term: the run's completion recorded its outcome.
                    Some(ack) if ack.fencing_token == term.fencing_token().0 => {
                        self.send(request, ack.state, ack.outcome.clone());
                    }
                    // Another term had acknowledged it, or the claim failed: the runner logged why.
                    _ => {}
                }
            }
            Err(SkipReason::NotLeader) => {
                // The term ended first: the request stays for the next leader.
            }
            Err(reason) => {
                let why = match (reason, job.concurrency_policy) {
                    (SkipReason::Overlap, ConcurrencyPolicy::Forbid) => format!(
                        "skipped: a run of {} is in flight and its concurrencyPolicy is Forbid",
                        job.name
                    ),
                    (reason, _) => format!("skipped: {}", reason.as_str()),
                };
                self.refuse(request, term, why).await;
            }
        }
    }

    /// Runs the backfill's slots after its cursor, one at a time; acknowledges it as done at the end.
    async fn backfill(&self, request: &Request, job: &Arc<Job>, term: &Term) {
        let (Some(from), Some(to)) = (request.from, request.to) else {
            return;
        };
        let origin = Origin::requested(Cause::Backfill, &request.id, request.requested_at);
        let token = term.fencing_token();
        let limit = usize::try_from(MAX_BACKFILL_SLOTS).unwrap_or(usize::MAX);
        let slots: Vec<DateTime<Utc>> = job.schedule.slots_in(from, to).take(limit).collect();
        for slot in slots {
            let mut attempts = 0;
            loop {
                if !term.is_live() {
                    return;
                }
                let record = self.ledger.snapshot();
                let Some(ack) = record.requests.get(&request.id) else {
                    return;
                };
                if ack.state != RequestState::Running || ack.cursor.is_some_and(|c| c >= slot) {
                    break;
                }
                if record
                    .jobs
                    .get(&job.name)
                    .is_some_and(|r| r.has_started(slot))
                {
                    self.skip_slot(request, slot, token).await;
                    break;
                }
                // One at a time, and never beside a run of the job.
                if self.runner.running(&job.name) > 0 {
                    tokio::select! {
                        () = tokio::time::sleep(IDLE_POLL) => {}
                        () = term.ended() => return,
                    }
                    continue;
                }
                match self
                    .runner
                    .start_with(Arc::clone(job), slot, term, origin.clone())
                {
                    Ok(running) => running.finished().await,
                    Err(SkipReason::NotLeader) => return,
                    // A run of the job started in between: wait for it.
                    Err(_) => continue,
                }
                let record = self.ledger.snapshot();
                let advanced = record
                    .requests
                    .get(&request.id)
                    .is_some_and(|ack| ack.cursor.is_some_and(|c| c >= slot));
                if advanced {
                    break;
                }
                // Not claimed: already started elsewhere (the loop skips it), or the run state failed.
                attempts += 1;
                if attempts >= SLOT_ATTEMPTS {
                    tracing::error!(job = %job.name, request = %request.id, slot = rfc3339(&slot), "backfill stops: its slot could not be claimed in the run state; the next term goes on from here");
                    return;
                }
                tokio::select! {
                    () = tokio::time::sleep(STATE_RETRY) => {}
                    () = term.ended() => return,
                }
            }
        }
        let now = self.clock.now();
        let answer = self
            .ledger
            .update_request(token, &request.id, move |ack| {
                if ack.state != RequestState::Running {
                    return false;
                }
                ack.state = RequestState::Done;
                ack.updated_at = now;
                true
            })
            .await;
        if let Ok(Claim::Claimed) = answer {
            let ack = self.ledger.snapshot().requests.get(&request.id).cloned();
            if let Some(ack) = ack {
                tracing::info!(job = %job.name, request = %request.id, started = ack.started, skipped = ack.skipped, failed = ack.failed, "backfill done");
                self.send(request, RequestState::Done, Some(backfill_summary(&ack)));
            }
        }
    }

    async fn skip_slot(
        &self,
        request: &Request,
        slot: DateTime<Utc>,
        token: crate::term::FencingToken,
    ) {
        let now = self.clock.now();
        tracing::info!(job = %request.job, request = %request.id, slot = rfc3339(&slot), "backfill skips a slot that already started");
        let result = self
            .ledger
            .update_request(token, &request.id, move |ack| {
                if ack.cursor.is_some_and(|c| c >= slot) {
                    return false;
                }
                ack.cursor = Some(slot);
                ack.skipped += 1;
                ack.updated_at = now;
                true
            })
            .await;
        if let Err(error) = result {
            tracing::warn!(job = %request.job, request = %request.id, %error, "cannot record a skipped backfill slot in the run state");
        }
    }

    /// Writes the acknowledgement of `request` in `state`; true if this term wrote it (and reports it).
    async fn acknowledge(
        &self,
        request: &Request,
        term: &Term,
        state: RequestState,
        detail: Option<String>,
    ) -> bool {
        let ack = RequestAck {
            kind: request.kind,
            job: request.job.clone(),
            requested_at: request.requested_at,
            state,
            detail: detail.clone(),
            fencing_token: term.fencing_token().0,
            identity: self.identity.clone(),
            updated_at: self.clock.now(),
            slot: None,
            outcome: None,
            cursor: None,
            started: 0,
            skipped: 0,
            failed: 0,
        };
        match self
            .ledger
            .acknowledge(term.fencing_token(), &request.id, ack)
            .await
        {
            Ok(Claim::Claimed) => {
                self.send(request, state, detail);
                true
            }
            Ok(Claim::AlreadyStarted { .. }) => false,
            Ok(Claim::Stale { record_token }) => {
                tracing::warn!(request = %request.id, fencing_token = term.fencing_token().0, record_token, "a newer term wrote the run state: not carrying out the request");
                false
            }
            Err(error) => {
                tracing::error!(job = %request.job, request = %request.id, %error, "cannot acknowledge an operator's request in the run state: it stays for the next attempt");
                false
            }
        }
    }

    async fn refuse(&self, request: &Request, term: &Term, why: String) {
        tracing::warn!(job = %request.job, request = %request.id, kind = request.kind.as_str(), by = %request.by, detail = %why, "operator's request not carried out");
        let _ = self
            .acknowledge(request, term, RequestState::Refused, Some(why))
            .await;
    }

    fn send(&self, request: &Request, state: RequestState, detail: Option<String>) {
        if let Some(events) = &self.events {
            let _ = events.send(DispatchEvent::Request {
                job: request.job.clone(),
                id: request.id.clone(),
                kind: request.kind,
                by: request.by.clone(),
                state,
                detail,
                note: request.note.clone(),
            });
        }
    }
}

/// What a finished backfill did, in words.
pub fn backfill_summary(ack: &RequestAck) -> String {
    format!(
        "{} slot(s) run ({} failed), {} skipped as already started",
        ack.started, ack.failed, ack.skipped
    )
}
