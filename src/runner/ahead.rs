//! Claims made ahead of the slot: the run state's write off the start path (docs/design.md, "Claims ahead
//! of the slot").
//!
//! A slot must be recorded as started before its run starts, so that no later term starts it again. With
//! a durable run state that record is an fsync or an API request: made when the slot is due, it would delay
//! every start by its latency. So the dispatcher asks for a [`Reservation`] [`Ledger::claim_lead`] before
//! the slot's fire time: the claim is written then, under the same term, and the run starts at the fire
//! time without a write of its own.
//!
//! A reservation ends one of two ways, decided once:
//!
//! - **kept**: the run takes it where it would have claimed ([`Reservation::keep`]); from then on it is the
//!   run's claim, exactly as if the run had written it then;
//! - **released**: nothing took it — the term ended before the slot was due, the slot was skipped when it
//!   was (suspended, `Forbid`, a reload changed the job, a stall made it missed), or the claim was made
//!   for a slot the timer did not hand out. The slot was not started, so the claim is undone
//!   ([`Ledger::release`]): the next term (or this one) may run it. The undo is written while the term's
//!   lease is still this replica's, from a task of the term, so a shutdown releases the lease only after
//!   it; past the term's deadline it is not attempted, and the next leader, which cannot begin before the
//!   slot is due, treats the claim as a run cut off by the failover.
//!
//! [`Ledger::claim_lead`]: crate::run_state::Ledger::claim_lead
//! [`Ledger::release`]: crate::run_state::Ledger::release

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio::sync::oneshot;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::Runner;
use crate::config::{ConcurrencyPolicy, Job};
use crate::logging::rfc3339;
use crate::run_state::{Claim, Error, Ledger, SlotStart};
use crate::term::Term;

/// Nobody has taken or dropped the reservation yet.
const OPEN: u8 = 0;
/// A run took it: its claim stands.
const KEPT: u8 = 1;
/// It was dropped, or its term ended first: the claim is undone.
const RELEASED: u8 = 2;

/// A scheduled slot claimed ahead of its fire time under one term (docs/design.md, "Claims ahead of the
/// slot"), handed to [`Runner::start_reserved`] when the slot is due.
///
/// The run takes the claim where it would have claimed; dropping the reservation before that releases it.
#[derive(Debug)]
pub struct Reservation {
    job: String,
    slot: DateTime<Utc>,
    term: Term,
    /// The claim's decision, until read.
    claim: Option<oneshot::Receiver<Result<Claim, Error>>>,
    decision: Arc<Decision>,
}

/// Kept or released, decided once, by whichever comes first: the run, a drop, or the end of the term.
#[derive(Debug)]
struct Decision {
    state: AtomicU8,
    /// Cancelled once decided, to wake the claim's task.
    decided: CancellationToken,
}

impl Decision {
    /// Moves from open to `to`; false if it was already decided.
    fn decide(&self, to: u8) -> bool {
        let moved = self
            .state
            .compare_exchange(OPEN, to, Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        self.decided.cancel();
        moved
    }

    fn is_released(&self) -> bool {
        self.state.load(Ordering::Acquire) == RELEASED
    }
}

// === impl Runner ===

impl Runner {
    /// How long before a slot's fire time the dispatcher claims it ([`Runner::reserve`]); `None`: the run
    /// state writes as fast as a claim inline costs nothing (memory), and slots are claimed when due.
    pub fn claim_lead(&self) -> Option<std::time::Duration> {
        self.ledger.claim_lead()
    }

    /// Claims `slot` of `job`, to fire at `fires_at`, ahead of time under `term`, if the run state is one
    /// whose writes are worth taking off the start path ([`Ledger::claim_lead`]) and the term is live.
    /// The claim is written by a task of the term; [`Runner::start_reserved`] waits for it if it is still
    /// in flight when the slot is due.
    ///
    /// [`Ledger::claim_lead`]: crate::run_state::Ledger::claim_lead
    pub fn reserve(
        &self,
        job: &Job,
        slot: DateTime<Utc>,
        fires_at: DateTime<Utc>,
        term: &Term,
    ) -> Option<Reservation> {
        self.ledger.claim_lead()?;
        if !term.is_live() {
            return None;
        }
        if job.concurrency_policy == ConcurrencyPolicy::Forbid && self.running(&job.name) > 0 {
            // Likely refused as an overlap when due: claim then, if it is not, rather than write a claim
            // and its release.
            return None;
        }
        let (answer, claim) = oneshot::channel();
        let decision = Arc::new(Decision {
            state: AtomicU8::new(OPEN),
            decided: CancellationToken::new(),
        });
        let task = ClaimTask {
            ledger: Arc::clone(&self.ledger),
            job: job.name.clone(),
            slot,
            fires_at,
            term: term.clone(),
            decision: Arc::clone(&decision),
        };
        term.tracker().spawn(task.run(answer));
        Some(Reservation {
            job: job.name.clone(),
            slot,
            term: term.clone(),
            claim: Some(claim),
            decision,
        })
    }
}

// === impl Reservation ===

impl Reservation {
    /// The slot it claims.
    pub fn slot(&self) -> DateTime<Utc> {
        self.slot
    }

    /// The term it was claimed under.
    pub fn term(&self) -> &Term {
        &self.term
    }

    /// The claim's decision, waiting for its write if it is still in flight.
    pub(super) async fn claimed(&mut self) -> Result<Claim, Error> {
        match self.claim.take() {
            Some(claim) => claim.await.unwrap_or_else(|_| {
                Err(Error::Batched(
                    "run state: the claim made ahead of the slot was abandoned".to_owned(),
                ))
            }),
            None => Err(Error::Batched(
                "run state: the claim made ahead of the slot was already read".to_owned(),
            )),
        }
    }

    /// Takes the claim for the run: from now on it stands, as if the run had written it now. False if it
    /// was released first (the term ended): the run must not start.
    pub(super) fn keep(&self) -> bool {
        self.decision.decide(KEPT)
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if self.decision.decide(RELEASED) {
            tracing::debug!(job = %self.job, scheduled = rfc3339(&self.slot), fencing_token = self.term.fencing_token().0, "slot claimed ahead not started: releasing the claim");
        }
    }
}

/// The task of the term that writes a reservation's claim, and undoes it if the reservation is released.
struct ClaimTask {
    ledger: Arc<Ledger>,
    job: String,
    slot: DateTime<Utc>,
    fires_at: DateTime<Utc>,
    term: Term,
    decision: Arc<Decision>,
}

impl ClaimTask {
    async fn run(self, answer: oneshot::Sender<Result<Claim, Error>>) {
        let token = self.term.fencing_token();
        let claimed = self
            .ledger
            .claim_ahead(&self.job, self.slot, token, self.fires_at)
            .await;
        let previous = match claimed {
            Ok((Claim::Claimed, previous)) => {
                let _ = answer.send(Ok(Claim::Claimed));
                previous
            }
            Ok((other, _)) => {
                let _ = answer.send(Ok(other));
                return;
            }
            Err(error) => {
                let _ = answer.send(Err(error));
                return;
            }
        };
        tokio::select! {
            () = self.decision.decided.cancelled() => {}
            () = self.term.ended() => {
                // Not taken before the term ended: it never will be.
                self.decision.decide(RELEASED);
            }
        }
        if self.decision.is_released() {
            self.release(previous).await;
        }
    }

    /// Undoes the claim, while the term's lease is still this replica's.
    async fn release(&self, previous: Option<SlotStart>) {
        let (job, scheduled) = (&self.job, rfc3339(&self.slot));
        let token = self.term.fencing_token();
        let deadline = self.term.deadline();
        if Instant::now() >= deadline {
            tracing::info!(job, scheduled, fencing_token = token.0, "slot claimed ahead, not started, and the term's deadline has passed: the claim stays, and the next leader treats the slot as a run the failover cut off");
            return;
        }
        let release = self.ledger.release(job, self.slot, token, previous);
        match tokio::time::timeout_at(deadline, release).await {
            Ok(Ok(Claim::Stale { record_token })) => {
                tracing::info!(job, scheduled, fencing_token = token.0, record_token, "slot claimed ahead, not started; a newer term wrote the run state first: the claim stays, and that term treats the slot as a run the failover cut off");
            }
            Ok(Ok(_)) => {
                tracing::debug!(
                    job,
                    scheduled,
                    fencing_token = token.0,
                    "slot claimed ahead, not started: claim released, the slot is free again"
                );
            }
            Ok(Err(error)) => {
                tracing::warn!(job, scheduled, fencing_token = token.0, %error, "slot claimed ahead, not started, and its claim could not be released: the next leader treats the slot as a run the failover cut off");
            }
            Err(_) => {
                tracing::warn!(job, scheduled, fencing_token = token.0, "slot claimed ahead, not started, and its claim was not released before the term's deadline: the next leader treats the slot as a run the failover cut off");
            }
        }
    }
}
