//! Leader election over a [`LeaseStore`]: client-go's `LeaderElector`, as an explicit state machine.
//!
//! The [`Elector`] reads the lease record, acquires it when it is free or has expired, renews it every
//! retry period while it leads, and publishes [`Leadership`] on a watch channel. The rules are those of
//! docs/design.md §2 (LD = lease duration, RD = renew deadline, RP = retry period):
//!
//! - **Expiry** is judged on the local monotonic clock: a follower may take the lease over at *o* + LD,
//!   where *o* is the instant at which it first observed the current record version. The record's
//!   `renewTime` is never compared with the local wall clock, so clock skew cannot cause a split brain. A
//!   record with no holder is free at once. A record naming this replica's own identity that this elector
//!   did not write (an earlier incarnation) is treated like anyone else's: it may still have runs. A held
//!   record that disappears (the lease was deleted) counts as a new observation that expires LD later:
//!   its holder may still be running its term, and re-creates the record as soon as its term has ended.
//! - **Writes** carry the version last read (`Conflict` / `AlreadyExists` → re-read, never a blind write).
//! - **Terms**: every acquisition writes a larger `leaseTransitions` — also when the same identity acquires
//!   again — and the new value is the term's [`FencingToken`]: one more than the largest of the record's
//!   count, the run state's token ([`TokenFloor`]) and the largest token this process has seen
//!   ([`fencing`]), so tokens never go backwards when the lease is deleted. A term's
//!   deadline is *s* + RD, *s* being the instant the last successful renew was *sent*; it is a timer of
//!   its own, and every store request is bounded so that none outlives it. When the deadline passes, the
//!   term ends (its token is cancelled and its runs are awaited) before anything else happens.
//! - **Shutdown** ends the term, waits for its runs, and only then releases the lease (holder cleared,
//!   version-checked, as client-go does), so a follower takes over within one poll instead of LD.
//!
//! Every store request has a time limit: a follower's may take up to RP, a leader's up to min(RP, time
//! left before the deadline); a reply that arrives after the deadline counts as a failure.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::{mpsc, watch};
use tokio::time::{sleep_until, Instant};
use tokio_util::sync::CancellationToken;

use crate::clock::{sleep_until_some, SharedClock};
use crate::event::{ElectionEvent, LossReason};
use crate::lease_store::{self, Change, LeaseRecord, LeaseStore, Verb, Versioned};
use crate::term::{FencingToken, Leadership, Term, TermHandle};

use observation::{Observation, Takeover};

mod config;
pub mod fencing;
mod observation;

pub use config::{
    Config, DEFAULT_LEASE_DURATION, DEFAULT_RENEW_DEADLINE, DEFAULT_RETRY_PERIOD, MIN_MARGIN,
};
pub use fencing::TokenFloor;

/// `leaseDurationSeconds` of a released record, as client-go writes it: other implementations that judge
/// expiry by the record see it expire at once.
const RELEASED_LEASE_DURATION_SECONDS: i32 = 1;

/// Errors of the elector: an invalid [`Config`] (naming the flag to fix) or a store failure that retrying
/// cannot fix.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// `--identity` is empty.
    #[error("--identity must not be empty")]
    EmptyIdentity,
    /// A duration flag is zero.
    #[error("{flag} must be greater than zero")]
    ZeroDuration {
        /// The flag.
        flag: &'static str,
    },
    /// LD does not fit the record's `leaseDurationSeconds` (an `i32`).
    #[error(
        "--lease-duration ({}) is too long: at most {} seconds",
        humantime::format_duration(*.lease_duration),
        i32::MAX
    )]
    LeaseDurationTooLong {
        /// LD.
        lease_duration: Duration,
    },
    /// RD < 1.2 × RP: a leader would get too few renew attempts before its deadline.
    #[error(
        "--renew-deadline ({}) must be at least 1.2 × --retry-period ({})",
        humantime::format_duration(*.renew_deadline),
        humantime::format_duration(*.retry_period)
    )]
    RenewDeadlineTooShort {
        /// RD.
        renew_deadline: Duration,
        /// RP.
        retry_period: Duration,
    },
    /// RD + G > LD − margin: a take-over could start jobs while the old term's runs are still stopping.
    #[error(
        "--renew-deadline ({}) plus the largest job terminationGrace ({}) must not exceed \
         --lease-duration ({}) minus the safety margin max(1s, lease duration / 10) ({}): \
         raise --lease-duration, or lower --renew-deadline or the jobs' terminationGrace",
        humantime::format_duration(*.renew_deadline),
        humantime::format_duration(*.grace),
        humantime::format_duration(*.lease_duration),
        humantime::format_duration(*.margin)
    )]
    LeaseTooShort {
        /// LD.
        lease_duration: Duration,
        /// RD.
        renew_deadline: Duration,
        /// G.
        grace: Duration,
        /// max(1 s, LD/10).
        margin: Duration,
    },
    /// `leaseTransitions` reached `i32::MAX`: no larger fencing token can be issued.
    #[error("the lease's leaseTransitions reached its maximum ({}); no larger fencing token can be issued", i32::MAX)]
    TransitionsExhausted,
    /// The store failed in a way retrying cannot fix.
    #[error(transparent)]
    Store(#[from] lease_store::Error),
}

impl Error {
    /// True for a configuration error (bad flags: exit 2), not a failure at run time.
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            Error::EmptyIdentity
                | Error::ZeroDuration { .. }
                | Error::LeaseDurationTooLong { .. }
                | Error::RenewDeadlineTooShort { .. }
                | Error::LeaseTooShort { .. }
        )
    }
}

/// Takes part in the election for one lease. See the [module documentation](self).
pub struct Elector<S: LeaseStore> {
    store: S,
    config: Config,
    clock: SharedClock,
    leadership: watch::Sender<Leadership>,
    events: Option<mpsc::UnboundedSender<ElectionEvent>>,
    sweep_strays: bool,
    /// The run state's tokens, which a new term's token must exceed.
    floor: Option<Arc<dyn TokenFloor>>,
    /// The largest token seen, and the lease's count as last observed.
    memory: fencing::Memory,
}

/// Where the elector is. Each variant waits for its own events; [`Elector::step`] moves to the next.
enum State {
    /// The record has not been read yet, or the last read failed: read it at `retry_at` (now if `None`).
    Unknown { retry_at: Option<Instant> },
    /// This replica does not hold the lease. It acquires once the observed record is free or has
    /// expired, but not before `retry_at` after a failed attempt.
    Following {
        observed: Observation,
        retry_at: Option<Instant>,
    },
    /// This replica holds the lease.
    Leading(Box<Leading>),
    /// Shut down; [`Elector::run`] returns.
    Stopped,
}

/// The leader's state.
struct Leading {
    term: TermHandle,
    token: FencingToken,
    /// Our record as last written (or re-read and found still ours).
    record: Versioned,
    /// When `record` was received: the observation a follower's expiry would start from at the latest.
    observed_at: Instant,
    next_renew_at: Instant,
}

/// The answer to "is the record still ours?", asked after a conflict or a change.
enum Ownership {
    /// Still ours (e.g. our own write whose reply was lost); its current version has been adopted.
    Ours,
    /// Someone else's, or gone.
    Taken(Observation),
    /// The re-read failed.
    Unknown(lease_store::Error),
}

// === impl Elector ===

impl<S: LeaseStore> Elector<S> {
    /// Validates `config` and returns an elector that will take part through `store`, with the channel on
    /// which it publishes [`Leadership`] (starting at [`Leadership::Unknown`]). `clock` supplies the
    /// wall-clock times written into the record (informational only).
    pub fn new(
        store: S,
        config: Config,
        clock: SharedClock,
    ) -> Result<(Self, watch::Receiver<Leadership>), Error> {
        config.validate()?;
        let (leadership, rx) = watch::channel(Leadership::Unknown);
        let elector = Elector {
            store,
            config,
            clock,
            leadership,
            events: None,
            sweep_strays: false,
            floor: None,
            memory: fencing::Memory::default(),
        };
        Ok((elector, rx))
    }

    /// Also reports every [`ElectionEvent`] on `events` (for metrics). A closed channel is ignored.
    #[must_use]
    pub fn with_events(mut self, events: mpsc::UnboundedSender<ElectionEvent>) -> Self {
        self.events = Some(events);
        self
    }

    /// Ends every term with [`TermHandle::sweeping_strays`]: the processes its runs left behind die with
    /// it. For `leasecron run`, whose every child process is a run.
    #[must_use]
    pub fn sweeping_strays(mut self) -> Self {
        self.sweep_strays = true;
        self
    }

    /// Gives every new term a token above the largest one `floor` holds (the run state's), as well as above
    /// the lease's count. Reading it is part of every acquisition: while it cannot be read, this replica
    /// does not acquire.
    #[must_use]
    pub fn with_token_floor(mut self, floor: Arc<dyn TokenFloor>) -> Self {
        self.floor = Some(floor);
        self
    }

    /// Another receiver of the published [`Leadership`].
    pub fn subscribe(&self) -> watch::Receiver<Leadership> {
        self.leadership.subscribe()
    }

    /// The validated configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Runs until `shutdown` is cancelled (then: end the term — cancel its token and wait for its runs via
    /// [`TermHandle::end`] — and only then release the lease; return `Ok`) or an unrecoverable store error
    /// (the term, if any, is ended first; `Err`). Transient store errors are logged and retried.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), Error> {
        tracing::info!(
            identity = %self.config.identity,
            store = %self.store.describe(),
            "joining the leader election"
        );
        let mut state = State::Unknown { retry_at: None };
        loop {
            state = match self.step(state, &shutdown).await? {
                State::Stopped => return Ok(()),
                next => next,
            };
        }
    }

    /// Waits for the current state's next event and handles it.
    async fn step(&self, state: State, shutdown: &CancellationToken) -> Result<State, Error> {
        match state {
            State::Unknown { retry_at } => self.read_first(retry_at, shutdown).await,
            State::Following { observed, retry_at } => {
                self.follow(observed, retry_at, shutdown).await
            }
            State::Leading(lead) => self.lead(*lead, shutdown).await,
            State::Stopped => Ok(State::Stopped),
        }
    }

    // --- following ---

    async fn read_first(
        &self,
        retry_at: Option<Instant>,
        shutdown: &CancellationToken,
    ) -> Result<State, Error> {
        if let Some(retry_at) = retry_at {
            tokio::select! {
                biased;
                () = shutdown.cancelled() => return Ok(State::Stopped),
                () = sleep_until(retry_at) => {}
            }
        } else if shutdown.is_cancelled() {
            return Ok(State::Stopped);
        }
        match self.follower_call(Verb::Get, self.store.get()).await {
            Ok(record) => {
                let observed = Observation::first(record, Instant::now());
                self.observed(&observed);
                Ok(State::Following {
                    observed,
                    retry_at: None,
                })
            }
            Err(e) if e.is_transient() => {
                tracing::warn!(error = %e, "cannot read the lease record; retrying");
                Ok(State::Unknown {
                    retry_at: Some(Instant::now() + self.config.retry_period),
                })
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn follow(
        &self,
        observed: Observation,
        retry_at: Option<Instant>,
        shutdown: &CancellationToken,
    ) -> Result<State, Error> {
        let now = Instant::now();
        let expires_at = observed.expires_at(self.config.lease_duration);
        let ready = retry_at.is_none_or(|t| now >= t);
        if ready && expires_at.is_none_or(|t| now >= t) && !shutdown.is_cancelled() {
            return self.acquire(observed).await;
        }
        let wake_at = retry_at.into_iter().chain(expires_at).max();
        let known = observed.version().map(str::to_owned);
        tokio::select! {
            biased;
            () = shutdown.cancelled() => Ok(State::Stopped),
            () = sleep_until_some(wake_at) => Ok(State::Following { observed, retry_at }),
            change = self.store.changed(known) => {
                let record = match change {
                    Change::Record(record) => record,
                    Change::Unknown => match self.follower_call(Verb::Get, self.store.get()).await {
                        Ok(record) => record,
                        Err(e) if e.is_transient() => {
                            tracing::warn!(error = %e, "cannot read the lease record; retrying");
                            return Ok(State::Following { observed, retry_at });
                        }
                        Err(e) => return Err(e.into()),
                    },
                };
                let observed = self.advance(observed, record);
                Ok(State::Following { observed, retry_at })
            }
        }
    }

    /// Writes a record naming this replica, over the observed (free or expired) one, with the next fencing
    /// token ([`fencing`]).
    async fn acquire(&self, observed: Observation) -> Result<State, Error> {
        let lease = observed.record.as_ref().map_or(0, |v| {
            u64::try_from(v.record.lease_transitions).unwrap_or(0)
        });
        let state = match self.read_floor().await {
            Ok(state) => state,
            Err(error) => {
                tracing::warn!(
                    %error,
                    "cannot read the run state's fencing token; not acquiring the lease until it can be read \
                     (a term below it would start nothing)"
                );
                return Ok(State::Following {
                    observed,
                    retry_at: Some(Instant::now() + self.config.retry_period),
                });
            }
        };
        let floor = fencing::Floor {
            lease,
            state,
            seen: self.memory.highest(),
        };
        let token = floor.next_token().ok_or(Error::TransitionsExhausted)?;
        let transitions = i32::try_from(token).map_err(|_| Error::TransitionsExhausted)?;
        let now = self.clock.now();
        let record = self.held_record(now, now, transitions);
        let sent = Instant::now();
        let takeover = observed.takeover(sent);
        let result = match &observed.record {
            None => {
                self.follower_call(Verb::Create, self.store.create(&record))
                    .await
            }
            Some(current) => {
                let update = self.store.update(&record, &current.version);
                self.follower_call(Verb::Update, update).await
            }
        };
        match result {
            Ok(written) => {
                if let Some(regression) = floor.regression() {
                    self.regressed(regression, "the lease and the run state both lost their fencing tokens (deleted or replaced)");
                } else if floor.state > floor.lease {
                    tracing::warn!(
                        lease_transitions = floor.lease,
                        run_state_token = floor.state,
                        fencing_token = token,
                        "the lease's leaseTransitions was below the run state's fencing token (the lease was \
                         deleted or rewritten): the new term continues above the run state's token"
                    );
                }
                Ok(self.begin_term(written, sent, now, &takeover))
            }
            Err(e) if e.is_conflict() => {
                tracing::debug!(error = %e, "a peer wrote the lease record first; re-reading");
                self.reread(observed).await
            }
            Err(e) if e.is_transient() => {
                tracing::warn!(error = %e, "cannot acquire the lease; retrying");
                Ok(State::Following {
                    observed,
                    retry_at: Some(sent + self.config.retry_period),
                })
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The run state's largest token (0 without a [`TokenFloor`]), bounded by RP like a follower's request.
    async fn read_floor(&self) -> Result<u64, fencing::FloorError> {
        let Some(floor) = &self.floor else {
            return Ok(0);
        };
        let limit = self.config.retry_period;
        let token = match tokio::time::timeout(limit, floor.highest_token()).await {
            Ok(result) => result?,
            Err(_elapsed) => {
                return Err(format!(
                    "{}: no answer within {}",
                    floor.describe(),
                    humantime::format_duration(limit)
                )
                .into())
            }
        };
        self.memory.saw(token);
        Ok(token)
    }

    /// Logs and reports that the durable record of the fencing tokens went backwards (once per fall).
    fn regressed(&self, regression: fencing::Regression, why: &str) {
        if !self.memory.first_report(regression) {
            return;
        }
        tracing::error!(
            highest_seen = regression.seen,
            durable = regression.durable,
            "{why}: fencing tokens went backwards from {} to {}; this replica's terms continue above {}, \
             a replica that never saw them starts again from the lower count",
            regression.seen,
            regression.durable,
            regression.seen
        );
        self.emit(ElectionEvent::TokenRegression {
            highest_seen: regression.seen,
            durable: regression.durable,
        });
    }

    async fn reread(&self, observed: Observation) -> Result<State, Error> {
        match self.follower_call(Verb::Get, self.store.get()).await {
            Ok(record) => Ok(State::Following {
                observed: self.advance(observed, record),
                retry_at: None,
            }),
            Err(e) if e.is_transient() => {
                tracing::warn!(error = %e, "cannot read the lease record; retrying");
                Ok(State::Following {
                    observed,
                    retry_at: Some(Instant::now() + self.config.retry_period),
                })
            }
            Err(e) => Err(e.into()),
        }
    }

    fn begin_term(
        &self,
        written: Versioned,
        sent: Instant,
        acquired_at: DateTime<Utc>,
        takeover: &Takeover,
    ) -> State {
        let token = fencing_token(written.record.lease_transitions);
        self.note(&written);
        let mut term = Term::begin(token, acquired_at, sent + self.config.renew_deadline);
        if self.sweep_strays {
            term = term.sweeping_strays();
        }
        let own = if takeover.holder() == Some(self.config.identity.as_str()) {
            " (this replica's identity: an earlier process or term)"
        } else {
            ""
        };
        tracing::info!(
            identity = %self.config.identity,
            fencing_token = token.0,
            cause = takeover.as_str(),
            previous_holder = takeover.holder(),
            "{takeover}{own}"
        );
        self.emit(ElectionEvent::Observed {
            holder: Some(self.config.identity.clone()),
            lease_transitions: written.record.lease_transitions,
        });
        self.emit(ElectionEvent::Acquired { token });
        self.leadership.send_replace(Leadership::Leader {
            term: term.term().clone(),
        });
        State::Leading(Box::new(Leading {
            term,
            token,
            record: written,
            observed_at: Instant::now(),
            next_renew_at: sent + self.config.retry_period,
        }))
    }

    /// Moves the observation on to `record`, reporting and publishing it if it is a new version.
    fn advance(&self, observed: Observation, record: Option<Versioned>) -> Observation {
        let (observed, is_new) = observed.then(record, Instant::now());
        if is_new {
            self.observed(&observed);
        }
        observed
    }

    fn observed(&self, observed: &Observation) {
        if let Some(current) = &observed.record {
            self.note(current);
            self.emit(ElectionEvent::Observed {
                holder: current.record.holder().map(str::to_owned),
                lease_transitions: current.record.lease_transitions,
            });
        }
        self.publish_follower(observed, true);
    }

    /// Publishes [`Leadership::Follower`] with the observed holder. If that is news (this replica was not
    /// following that holder: it just started, led, or the holder changed) and `announce`, logs
    /// "following HOLDER": once per holder, not once per renew.
    fn publish_follower(&self, observed: &Observation, announce: bool) {
        let holder = observed.holder();
        let changed = self.leadership.send_if_modified(|current| {
            let same =
                matches!(current, Leadership::Follower { holder: h } if h.as_deref() == holder);
            if !same {
                *current = Leadership::Follower {
                    holder: holder.map(str::to_owned),
                };
            }
            !same
        });
        // No holder: this replica acquires at once, and says so.
        if let (true, true, Some(holder)) = (changed, announce, holder) {
            self.log_following(holder, observed);
        }
    }

    /// "following r1 (lease renewed 1.2 s ago)". The age compares the record's `renewTime` with this
    /// replica's wall clock: for the reader only (expiry never uses it).
    fn log_following(&self, holder: &str, observed: &Observation) {
        let renewed = observed.record.as_ref().and_then(|v| v.record.renew_time);
        let ago = renewed.map(|at| (self.clock.now() - at).num_milliseconds() as f64 / 1000.0);
        let when = match ago {
            Some(ago) if ago < 0.0 => {
                format!(
                    "lease renewed {:.1} s in the future: the clocks differ",
                    -ago
                )
            }
            Some(ago) => format!("lease renewed {ago:.1} s ago"),
            None => "no renew time in the lease".to_owned(),
        };
        let transitions = observed.record.as_ref().map(|v| v.record.lease_transitions);
        if holder == self.config.identity {
            tracing::info!(
                holder,
                renewed_seconds_ago = ago,
                lease_transitions = transitions,
                "following {holder} ({when}): this replica's own identity (an earlier process, or this \
                 one's ended term); acquiring once it expires"
            );
        } else {
            tracing::info!(
                holder,
                renewed_seconds_ago = ago,
                lease_transitions = transitions,
                "following {holder} ({when})"
            );
        }
    }

    // --- leading ---

    async fn lead(&self, lead: Leading, shutdown: &CancellationToken) -> Result<State, Error> {
        let known = Some(lead.record.version.clone());
        // One timer for the renew and the deadline (whichever comes first), so an idle leader's timer
        // wheel holds one entry: each entry costs wake-ups of its own as the wheel sorts it down.
        let deadline = lead.deadline();
        tokio::select! {
            biased;
            () = sleep_until(lead.next_renew_at.min(deadline)) => {
                if Instant::now() >= deadline {
                    Ok(self.lose(lead, LossReason::RenewDeadline, None, None).await)
                } else if shutdown.is_cancelled() {
                    Ok(self.shut_down(lead).await)
                } else {
                    self.renew(lead).await
                }
            }
            () = shutdown.cancelled() => Ok(self.shut_down(lead).await),
            change = self.store.changed(known) => self.on_change_while_leading(lead, change).await,
        }
    }

    async fn renew(&self, mut lead: Leading) -> Result<State, Error> {
        let mut result = self.try_renew(&mut lead).await;
        if matches!(&result, Err(e) if e.is_conflict()) {
            match self.ownership(&mut lead).await {
                Ownership::Ours => result = self.try_renew(&mut lead).await,
                Ownership::Taken(observed) => {
                    return Ok(self
                        .lose(lead, LossReason::LeaseTaken, Some(observed), None)
                        .await)
                }
                Ownership::Unknown(e) => result = Err(e),
            }
        }
        match result {
            Ok(()) => Ok(State::Leading(Box::new(lead))),
            Err(e) if e.is_transient() => {
                tracing::warn!(
                    error = %e,
                    deadline_in_seconds = lead.deadline().saturating_duration_since(Instant::now()).as_secs_f64(),
                    "renewing the lease failed; retrying until the renew deadline"
                );
                self.emit(ElectionEvent::RenewFailed {
                    error: e.to_string(),
                });
                Ok(State::Leading(Box::new(lead)))
            }
            Err(e) => {
                self.lose(lead, LossReason::StoreError, None, Some(&e))
                    .await;
                Err(e.into())
            }
        }
    }

    /// One version-checked renew, bounded by the deadline. On success the deadline moves to *s* + RD.
    async fn try_renew(&self, lead: &mut Leading) -> Result<(), lease_store::Error> {
        let sent = Instant::now();
        let deadline = lead.deadline();
        lead.next_renew_at = sent + self.config.retry_period;
        let current = &lead.record.record;
        let record = self.held_record(
            current.acquire_time.unwrap_or_else(|| self.clock.now()),
            self.clock.now(),
            current.lease_transitions,
        );
        let update = self.store.update(&record, &lead.record.version);
        let written = self.leader_call(Verb::Update, deadline, update).await?;
        let received = Instant::now();
        lead.record = written;
        lead.observed_at = received;
        if received >= deadline {
            return Err(lease_store::Error::Timeout {
                store: self.store.describe(),
                verb: Verb::Update,
                after: deadline.saturating_duration_since(sent),
            });
        }
        lead.term.extend_to(sent + self.config.renew_deadline);
        Ok(())
    }

    /// Re-reads the record to tell a lost reply of our own from a take-over.
    async fn ownership(&self, lead: &mut Leading) -> Ownership {
        let current = match self
            .leader_call(Verb::Get, lead.deadline(), self.store.get())
            .await
        {
            Ok(current) => current,
            Err(e) => return Ownership::Unknown(e),
        };
        let now = Instant::now();
        if let Some(current) = &current {
            self.note(current);
        }
        match current {
            Some(current) if self.is_ours(&current, lead.token) => {
                lead.record = current;
                lead.observed_at = now;
                Ownership::Ours
            }
            other => Ownership::Taken(Observation::after(other, now, &self.config.identity)),
        }
    }

    async fn on_change_while_leading(
        &self,
        mut lead: Leading,
        change: Change,
    ) -> Result<State, Error> {
        match change {
            Change::Record(Some(current)) if current.version == lead.record.version => {}
            // The next renew finds out.
            Change::Unknown => {}
            // A watch may deliver a stale event: confirm with a read before giving up the term.
            Change::Record(_) => match self.ownership(&mut lead).await {
                Ownership::Ours => {}
                Ownership::Taken(observed) => {
                    return Ok(self
                        .lose(lead, LossReason::LeaseTaken, Some(observed), None)
                        .await)
                }
                Ownership::Unknown(e) if e.is_transient() => {
                    tracing::debug!(error = %e, "cannot re-read the lease record after a change");
                }
                Ownership::Unknown(e) => {
                    self.lose(lead, LossReason::StoreError, None, Some(&e))
                        .await;
                    return Err(e.into());
                }
            },
        }
        Ok(State::Leading(Box::new(lead)))
    }

    /// Ends the term (waiting for its runs), then publishes `Follower` and follows `observed` — by default
    /// our own last record, as received (no other follower's expiry starts earlier), so the published
    /// holder may be this replica until that record expires.
    async fn lose(
        &self,
        lead: Leading,
        reason: LossReason,
        observed: Option<Observation>,
        error: Option<&lease_store::Error>,
    ) -> State {
        let overdue = Instant::now() >= lead.deadline();
        let observed =
            observed.unwrap_or_else(|| Observation::first(Some(lead.record), lead.observed_at));
        let mut cause = self.loss_cause(reason, &observed, error);
        if overdue && reason != LossReason::RenewDeadline {
            // A replica frozen past its deadline may see the take-over before its deadline timer fires.
            cause.push_str(" (the renew deadline had passed too)");
        }
        let token = lead.token.0;
        tracing::warn!(
            identity = %self.config.identity,
            fencing_token = token,
            reason = reason.as_str(),
            holder = (reason == LossReason::LeaseTaken)
                .then(|| observed.holder())
                .flatten(),
            "lost leadership: {cause}; ending the term"
        );
        let acquired_at = lead.term.term().acquired_at();
        lead.term.end().await;
        self.log_term_ended(token, reason, acquired_at, &cause);
        self.emit(ElectionEvent::Lost {
            token: lead.token,
            reason,
        });
        // A store error ends the elector: it follows nobody. After its own last record (the renew deadline
        // passed), it follows itself until that expires or a peer takes over: the line above says so, and
        // the peer's record, when it comes, is news.
        let announce = reason != LossReason::StoreError
            && observed.holder() != Some(self.config.identity.as_str());
        self.publish_follower(&observed, announce);
        State::Following {
            observed,
            retry_at: None,
        }
    }

    /// Why a term ended, in words: "lost the lease to r1", "renew deadline passed: …", "lease deleted", …
    fn loss_cause(
        &self,
        reason: LossReason,
        observed: &Observation,
        error: Option<&lease_store::Error>,
    ) -> String {
        match reason {
            LossReason::RenewDeadline => format!(
                "renew deadline passed (no renew succeeded for {} s)",
                self.config.renew_deadline.as_secs_f64()
            ),
            LossReason::LeaseTaken => match (&observed.record, observed.holder()) {
                (None, _) => "lease deleted".to_owned(),
                (Some(_), None) => "lease released by another writer".to_owned(),
                (Some(_), Some(holder)) if holder == self.config.identity => {
                    "lost the lease to another process with this replica's identity".to_owned()
                }
                (Some(_), Some(holder)) => format!("lost the lease to {holder}"),
            },
            LossReason::Shutdown => "shutdown".to_owned(),
            LossReason::StoreError => match error {
                Some(error) => format!("store error: {error}"),
                None => "store error".to_owned(),
            },
        }
    }

    /// "term ended: CAUSE", once every run of the term has ended.
    fn log_term_ended(
        &self,
        token: u64,
        reason: LossReason,
        acquired_at: DateTime<Utc>,
        cause: &str,
    ) {
        let term_seconds = (self.clock.now() - acquired_at)
            .to_std()
            .map_or(0.0, |d| d.as_secs_f64());
        tracing::info!(
            fencing_token = token,
            reason = reason.as_str(),
            term_seconds,
            "term ended: {cause}"
        );
    }

    /// Ends the term, waits for its runs, and only then releases the lease.
    async fn shut_down(&self, lead: Leading) -> State {
        let Leading {
            term,
            token,
            record,
            ..
        } = lead;
        tracing::info!(
            fencing_token = token.0,
            "shutting down: ending the term before releasing the lease"
        );
        let acquired_at = term.term().acquired_at();
        term.end().await;
        self.log_term_ended(token.0, LossReason::Shutdown, acquired_at, "shutdown");
        self.emit(ElectionEvent::Lost {
            token,
            reason: LossReason::Shutdown,
        });
        let holder = self.release(&record, token).await;
        self.leadership
            .send_replace(Leadership::Follower { holder });
        State::Stopped
    }

    /// Clears the holder if the record is still the one we wrote last. Returns the holder as known after.
    async fn release(&self, ours: &Versioned, token: FencingToken) -> Option<String> {
        let now = self.clock.now();
        let released = LeaseRecord {
            holder_identity: None,
            lease_duration_seconds: RELEASED_LEASE_DURATION_SECONDS,
            acquire_time: Some(now),
            renew_time: Some(now),
            lease_transitions: ours.record.lease_transitions,
        };
        let update = self.store.update(&released, &ours.version);
        match self.follower_call(Verb::Update, update).await {
            Ok(_) => {
                tracing::info!(fencing_token = token.0, "released the lease");
                self.emit(ElectionEvent::Released { token });
                None
            }
            Err(e) if e.is_conflict() => {
                tracing::info!(error = %e, "not releasing the lease: it changed since our last renew");
                None
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not release the lease; it will expire instead");
                Some(self.config.identity.clone())
            }
        }
    }

    // --- helpers ---

    /// Remembers a record's count as a token seen, and reports it if it went backwards.
    fn note(&self, current: &Versioned) {
        let transitions = u64::try_from(current.record.lease_transitions).unwrap_or(0);
        if let Some(regression) = self.memory.observed_lease(transitions) {
            self.regressed(
                regression,
                "the lease's leaseTransitions went backwards (the lease was deleted or rewritten)",
            );
        }
    }

    fn held_record(
        &self,
        acquire_time: DateTime<Utc>,
        renew_time: DateTime<Utc>,
        lease_transitions: i32,
    ) -> LeaseRecord {
        LeaseRecord {
            holder_identity: Some(self.config.identity.clone()),
            lease_duration_seconds: self.config.lease_duration_seconds(),
            acquire_time: Some(acquire_time),
            renew_time: Some(renew_time),
            lease_transitions,
        }
    }

    /// True if `current` is the record of our term `token`.
    fn is_ours(&self, current: &Versioned, token: FencingToken) -> bool {
        current.record.holder() == Some(self.config.identity.as_str())
            && fencing_token(current.record.lease_transitions) == token
    }

    /// A follower's request: bounded by RP.
    async fn follower_call<T>(
        &self,
        verb: Verb,
        request: impl Future<Output = Result<T, lease_store::Error>>,
    ) -> Result<T, lease_store::Error> {
        let limit = Instant::now() + self.config.retry_period;
        self.call(verb, limit, request).await
    }

    /// A leader's request: bounded by RP and by the term deadline, so none outlives the term.
    async fn leader_call<T>(
        &self,
        verb: Verb,
        deadline: Instant,
        request: impl Future<Output = Result<T, lease_store::Error>>,
    ) -> Result<T, lease_store::Error> {
        let limit = deadline.min(Instant::now() + self.config.retry_period);
        self.call(verb, limit, request).await
    }

    /// Runs `request`, giving up at `limit`, and reports it.
    async fn call<T>(
        &self,
        verb: Verb,
        limit: Instant,
        request: impl Future<Output = Result<T, lease_store::Error>>,
    ) -> Result<T, lease_store::Error> {
        let started = Instant::now();
        let bound = limit.saturating_duration_since(started);
        let result = match tokio::time::timeout(bound, request).await {
            Ok(result) => result,
            Err(_elapsed) => Err(lease_store::Error::Timeout {
                store: self.store.describe(),
                verb,
                after: bound,
            }),
        };
        self.emit(ElectionEvent::Request {
            verb,
            duration: started.elapsed(),
            ok: result.is_ok(),
        });
        result
    }

    fn emit(&self, event: ElectionEvent) {
        if let Some(events) = &self.events {
            // A dropped receiver only means nobody is counting.
            let _ = events.send(event);
        }
    }
}

impl<S: LeaseStore> std::fmt::Debug for Elector<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Elector")
            .field("store", &self.store.describe())
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

// === impl Leading ===

impl Leading {
    fn deadline(&self) -> Instant {
        self.term.term().deadline()
    }
}

/// The fencing token of a record we wrote (`leaseTransitions` ≥ 1).
fn fencing_token(lease_transitions: i32) -> FencingToken {
    FencingToken(u64::try_from(lease_transitions).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fencing_token_is_the_lease_transitions() {
        assert_eq!(fencing_token(5), FencingToken(5));
    }
}
