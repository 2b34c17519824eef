//! The [`Ledger`]: a replica's view of the run state record, and its only writer (claims, completions,
//! the stamp of a new term, the pruning of removed jobs), with group commit.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::{oneshot, Mutex};
use tokio::time::Instant;

use super::{
    Cause, Claim, Completion, Error, HistoryEntry, Loaded, Origin, RequestAck, RequestKind,
    RequestState, RunResult, Saved, SlotStart, StateRecord, Store, TermStart, COMPACT_FORMAT,
    FORMAT,
};
use crate::term::FencingToken;

/// How often a claim retries after a conflicting write before giving up.
const CLAIM_ATTEMPTS: u32 = 5;

/// The shortest lead of a claim made ahead of its slot ([`Ledger::claim_lead`]).
pub const MIN_CLAIM_LEAD: Duration = Duration::from_millis(10);

/// The longest lead of a claim made ahead of its slot ([`Ledger::claim_lead`]).
///
/// Below the gap between the end of a term and the earliest instant another replica can acquire the lease
/// (LD − RD, at least the election's safety margin of 1 s): a slot that a term claimed ahead and whose term
/// was lost before it was due is therefore already due when the next term begins, and that term treats it
/// as a run the failover cut off (docs/design.md, "Claims ahead of the slot").
pub const MAX_CLAIM_LEAD: Duration = Duration::from_millis(500);

/// The lead before any write has been timed: the first claims of a process.
const INITIAL_CLAIM_LEAD: Duration = Duration::from_millis(50);

/// The replica's view of the record, and its only writer.
///
/// Changes that arrive while a write is in flight are written together by the next one (a group commit):
/// every run claims its slot before it is spawned, and one write of the whole record (and two fsyncs) per
/// claim made a thousand runs due at one instant start over twenty seconds. Each change still takes its
/// decision in order, on the record as the changes before it left it, and its caller hears back only once
/// the write that carries it is done.
#[derive(Debug)]
pub struct Ledger {
    store: Box<dyn Store>,
    identity: String,
    /// The record as last read or written; `None`: to be read (before the first read, and after a write
    /// that conflicted or failed).
    current: Mutex<Option<Known>>,
    /// A copy for `/status`, readable without waiting for a write.
    published: std::sync::Mutex<StateRecord>,
    /// Changes waiting for the next write.
    pending: std::sync::Mutex<Vec<Pending>>,
    /// The next change's id.
    next_change: AtomicU64,
    /// A decaying maximum of the store's write time (µs; 0: none timed yet), from which the claim lead
    /// is derived.
    write_micros: AtomicU64,
}

/// The record as this replica knows it, and the version a write must replace.
#[derive(Debug, Clone)]
struct Known {
    record: StateRecord,
    /// `None`: there is no record yet.
    version: Option<String>,
}

/// What a change made of the record.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Verdict {
    /// The record changed: its caller hears [`Claim::Claimed`] once the record is written.
    Write,
    /// Nothing to write (a refusal, or nothing to change), and the record is as it was: its caller hears
    /// this.
    Answer(Claim),
}

/// A change to the record.
type Change = Box<dyn FnMut(&mut StateRecord) -> Verdict + Send>;

/// A change to the record, applied and written by whichever caller writes next.
struct Pending {
    id: u64,
    token: FencingToken,
    change: Change,
    done: oneshot::Sender<Result<Claim, Error>>,
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pending")
            .field("id", &self.id)
            .field("token", &self.token)
            .finish_non_exhaustive()
    }
}

/// Why a batch of changes was not written, and the verdict of each change (a change that waited for the
/// write gets the error).
type BatchFailure = (Error, Vec<Verdict>);

impl Verdict {
    /// What the change's caller hears once the record is written.
    fn claim(self) -> Claim {
        match self {
            Verdict::Write => Claim::Claimed,
            Verdict::Answer(claim) => claim,
        }
    }
}

impl Ledger {
    /// A ledger over `store`, writing as `identity`.
    pub fn new(store: impl Store + 'static, identity: String) -> Ledger {
        Ledger {
            store: Box::new(store),
            identity,
            current: Mutex::new(None),
            published: std::sync::Mutex::new(StateRecord::default()),
            pending: std::sync::Mutex::new(Vec::new()),
            next_change: AtomicU64::new(0),
            write_micros: AtomicU64::new(0),
        }
    }

    /// How long before a slot's fire time to claim it ([`Ledger::claim_ahead`]), so that the claim's
    /// write is done when the slot is due; `None` if the store claims as fast as it starts (memory).
    ///
    /// Twice a decaying maximum of the store's recent write times (a claim may wait for the write in
    /// flight before its own), plus 5 ms, within [`MIN_CLAIM_LEAD`]..=[`MAX_CLAIM_LEAD`]. A slow write
    /// widens it at once; it narrows by an eighth per write after.
    pub fn claim_lead(&self) -> Option<Duration> {
        if !self.store.claims_ahead() {
            return None;
        }
        let micros = self.write_micros.load(Ordering::Relaxed);
        if micros == 0 {
            return Some(INITIAL_CLAIM_LEAD);
        }
        let lead = Duration::from_micros(micros.saturating_mul(2)) + Duration::from_millis(5);
        Some(lead.clamp(MIN_CLAIM_LEAD, MAX_CLAIM_LEAD))
    }

    /// Writes `record` through the store, timing the write for [`Ledger::claim_lead`].
    async fn save(&self, record: &StateRecord, version: Option<&str>) -> Result<Saved, Error> {
        let began = Instant::now();
        let saved = self.store.save(record, version).await;
        self.timed_write(began.elapsed());
        saved
    }

    /// Times one write of the store, for [`Ledger::claim_lead`].
    fn timed_write(&self, took: Duration) {
        let sample = u64::try_from(took.as_micros()).unwrap_or(u64::MAX).max(1);
        let _ = self
            .write_micros
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |old| {
                Some(sample.max(old - old / 8))
            });
    }

    /// The store, for logs.
    pub fn describe(&self) -> String {
        self.store.describe()
    }

    /// The record as this replica last knew it (for `/status`).
    pub fn snapshot(&self) -> StateRecord {
        self.published
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Reads the record afresh (a follower, or `leasecron next`); a corrupt one reads as empty.
    pub async fn refresh(&self) -> Result<StateRecord, Error> {
        let mut current = self.current.lock().await;
        let known = self.read().await?;
        self.publish(&known.record);
        let record = known.record.clone();
        *current = Some(known);
        Ok(record)
    }

    /// At the start of a term: reads the record afresh and stamps it with `token`, so a stale leader's
    /// later writes are refused. Returns the record for [`catch_up`](super::catch_up), or the token of the
    /// newer term that has already written it.
    pub async fn begin_term(&self, token: FencingToken) -> Result<TermStart, Error> {
        // Another replica led since this one last looked: read afresh, not from the cache.
        Ok(match self.update(token, |_| Verdict::Write).await? {
            (Claim::Stale { record_token }, _) => TermStart::Superseded { record_token },
            (_, record) => TermStart::Begun(record),
        })
    }

    /// Records `slot` of `job` as started under `token`, unless it already is, or a newer term wrote the
    /// record; on success the run is in the job's history. Must succeed before the run's process is
    /// spawned. What "already started" means depends on why it runs (`origin`):
    ///
    /// - a scheduled slot (and a catch-up): the slot, or a later one, is the job's `lastStarted`;
    /// - a [`Cause::Retry`]: as scheduled, except that the recorded slot itself may run again if an older
    ///   term started it (an interrupted run of a `rerunInterrupted` job, found by
    ///   [`catch_up`](super::catch_up));
    /// - a trigger: its request is acknowledged (by whichever term); the claim acknowledges it;
    /// - a backfill slot: its request's cursor has reached the slot, or the slot is in the job's history.
    ///
    /// A trigger and a backfill leave `lastStarted` alone: they run beside the schedule.
    pub async fn claim(
        &self,
        job: &str,
        slot: DateTime<Utc>,
        token: FencingToken,
        now: DateTime<Utc>,
        origin: &Origin,
    ) -> Result<Claim, Error> {
        self.claim_recording(job, slot, token, now, origin, None)
            .await
    }

    /// [`Ledger::claim`] for a scheduled slot ahead of its fire time (`fires_at`, which the record keeps
    /// as the run's start): the slot is then started as far as the run state is concerned. Also returns
    /// what the job's `lastStarted` was before, which [`Ledger::release`] puts back if the slot is not
    /// started after all.
    pub async fn claim_ahead(
        &self,
        job: &str,
        slot: DateTime<Utc>,
        token: FencingToken,
        fires_at: DateTime<Utc>,
    ) -> Result<(Claim, Option<SlotStart>), Error> {
        let previous = Arc::new(std::sync::Mutex::new(None));
        let origin = Origin::scheduled(Cause::Schedule);
        let claim = self
            .claim_recording(
                job,
                slot,
                token,
                fires_at,
                &origin,
                Some(Arc::clone(&previous)),
            )
            .await?;
        let previous = previous
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        Ok((claim, previous))
    }

    /// Undoes [`Ledger::claim_ahead`] of `slot` under `token` for a run that was not started (its term
    /// ended before the slot was due, or the slot was skipped when it was): the job's `lastStarted` goes
    /// back to `previous` and the run leaves the history, so the slot is free for the next term. Does
    /// nothing if the record no longer holds that claim; answers [`Claim::Stale`], writing nothing, if a
    /// newer term has written the record (the claim then stands, and that term treats it as a run cut off
    /// by the failover).
    pub async fn release(
        &self,
        job: &str,
        slot: DateTime<Utc>,
        token: FencingToken,
        previous: Option<SlotStart>,
    ) -> Result<Claim, Error> {
        let job = job.to_owned();
        self.decide(token, move |record| {
            let Some(entry) = record.jobs.get_mut(&job) else {
                return Verdict::Answer(Claim::Claimed);
            };
            let ours = entry
                .last_started
                .as_ref()
                .is_some_and(|start| start.slot == slot && start.fencing_token == token.0);
            if !ours {
                return Verdict::Answer(Claim::Claimed);
            }
            entry.last_started.clone_from(&previous);
            entry.history.retain(|run| {
                !(run.slot == slot && run.fencing_token == token.0 && run.finished_at.is_none())
            });
            Verdict::Write
        })
        .await
    }

    /// [`Ledger::claim`], handing the job's `lastStarted` before the claim to `previous` if given.
    async fn claim_recording(
        &self,
        job: &str,
        slot: DateTime<Utc>,
        token: FencingToken,
        now: DateTime<Utc>,
        origin: &Origin,
        previous: Option<Arc<std::sync::Mutex<Option<SlotStart>>>>,
    ) -> Result<Claim, Error> {
        let start = SlotStart {
            slot,
            fencing_token: token.0,
            identity: self.identity.clone(),
            started_at: now,
        };
        let entry = HistoryEntry {
            slot,
            cause: origin.cause,
            request: origin.request.as_ref().map(|request| request.id.clone()),
            fencing_token: token.0,
            identity: self.identity.clone(),
            started_at: now,
            finished_at: None,
            outcome: None,
            exit_code: None,
            signal: None,
            attempts: None,
        };
        let (job, origin, identity) = (job.to_owned(), origin.clone(), self.identity.clone());
        self.decide(token, move |record| {
            match (&origin.cause, &origin.request) {
                (Cause::Trigger, Some(request)) => {
                    if let Some(ack) = record.requests.get(&request.id) {
                        return Verdict::Answer(Claim::AlreadyStarted {
                            slot: ack.slot.unwrap_or(request.requested_at),
                            fencing_token: ack.fencing_token,
                        });
                    }
                    record.requests.insert(
                        request.id.clone(),
                        RequestAck {
                            kind: RequestKind::Trigger,
                            job: job.clone(),
                            requested_at: request.requested_at,
                            state: RequestState::Running,
                            detail: None,
                            fencing_token: token.0,
                            identity: identity.clone(),
                            updated_at: now,
                            slot: Some(slot),
                            outcome: None,
                            cursor: None,
                            started: 0,
                            skipped: 0,
                            failed: 0,
                        },
                    );
                }
                (Cause::Backfill, Some(request)) => {
                    let Some(ack) = record.requests.get_mut(&request.id) else {
                        // Only an accepted backfill (acknowledged as running) starts slots.
                        return Verdict::Answer(Claim::AlreadyStarted {
                            slot,
                            fencing_token: token.0,
                        });
                    };
                    let recorded = record.jobs.get(&job);
                    let done = ack.state != RequestState::Running
                        || ack.cursor.is_some_and(|cursor| cursor >= slot);
                    if done || recorded.is_some_and(|r| r.has_started(slot)) {
                        let fencing_token = recorded
                            .and_then(|r| r.history.iter().find(|e| e.slot == slot))
                            .map_or(ack.fencing_token, |e| e.fencing_token);
                        return Verdict::Answer(Claim::AlreadyStarted {
                            slot,
                            fencing_token,
                        });
                    }
                    ack.cursor = Some(slot);
                    ack.started += 1;
                    ack.fencing_token = token.0;
                    ack.updated_at = now;
                }
                (cause, _) => {
                    let entry = record.jobs.entry(job.clone()).or_default();
                    if let Some(started) = &entry.last_started {
                        let rerun_allowed = *cause == Cause::Retry
                            && started.slot == slot
                            && started.fencing_token < token.0;
                        if started.slot >= slot && !rerun_allowed {
                            return Verdict::Answer(Claim::AlreadyStarted {
                                slot: started.slot,
                                fencing_token: started.fencing_token,
                            });
                        }
                    }
                    if let Some(previous) = &previous {
                        *previous
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner) =
                            entry.last_started.clone();
                    }
                    entry.last_started = Some(start.clone());
                }
            }
            record
                .jobs
                .entry(job.clone())
                .or_default()
                .push_history(entry.clone());
            Verdict::Write
        })
        .await
    }

    /// Records a finished run of `job` (under a live term only: a run cut off by the end of its term stays
    /// "started, not completed", which is what `rerunInterrupted` looks for): its history entry, its
    /// request's acknowledgement, and for a scheduled run the job's last completion and success.
    pub async fn complete(
        &self,
        job: &str,
        token: FencingToken,
        origin: &Origin,
        completion: Completion,
        result: RunResult,
    ) -> Result<Claim, Error> {
        self.complete_run(job, token, token, origin, completion, result)
            .await
    }

    /// [`Ledger::complete`] for a run that an earlier term started (`run_token`) and this term (`token`,
    /// which fences the write) saw end: an adopted Kubernetes Job. Its history entry is the one
    /// `run_token` recorded.
    pub async fn complete_run(
        &self,
        job: &str,
        token: FencingToken,
        run_token: FencingToken,
        origin: &Origin,
        completion: Completion,
        result: RunResult,
    ) -> Result<Claim, Error> {
        let succeeded = completion.outcome == "succeeded";
        let (job, origin) = (job.to_owned(), origin.clone());
        self.decide(token, move |record| {
            let entry = record.jobs.entry(job.clone()).or_default();
            if origin.cause.is_scheduled() {
                if succeeded {
                    entry.last_success = Some(completion.clone());
                }
                entry.last_completion = Some(completion.clone());
            }
            if let Some(run) = entry.run_of(completion.slot, run_token.0) {
                run.finished_at = Some(completion.finished_at);
                run.outcome = Some(completion.outcome.clone());
                run.exit_code = result.exit_code;
                run.signal = result.signal;
                run.attempts = Some(result.attempts);
            }
            if let Some(ack) = origin
                .request
                .as_ref()
                .and_then(|request| record.requests.get_mut(&request.id))
            {
                ack.outcome = Some(completion.outcome.clone());
                ack.updated_at = completion.finished_at;
                match origin.cause {
                    Cause::Trigger => ack.state = RequestState::Done,
                    _ if !succeeded => ack.failed += 1,
                    _ => {}
                }
            }
            Verdict::Write
        })
        .await
    }

    /// Writes `ack` for request `id` unless one is already there ([`Claim::AlreadyStarted`], whose slot
    /// is meaningless here): the request is then carried out by no other leader.
    pub async fn acknowledge(
        &self,
        token: FencingToken,
        id: &str,
        ack: RequestAck,
    ) -> Result<Claim, Error> {
        let id = id.to_owned();
        self.decide(token, move |record| {
            if let Some(found) = record.requests.get(&id) {
                return Verdict::Answer(Claim::AlreadyStarted {
                    slot: found.requested_at,
                    fencing_token: found.fencing_token,
                });
            }
            record.requests.insert(id.clone(), ack.clone());
            Verdict::Write
        })
        .await
    }

    /// Changes the acknowledgement of request `id` with `change` (which says whether it changed
    /// anything); answers [`Claim::AlreadyStarted`] without writing if there is none.
    pub async fn update_request(
        &self,
        token: FencingToken,
        id: &str,
        mut change: impl FnMut(&mut RequestAck) -> bool + Send + 'static,
    ) -> Result<Claim, Error> {
        let id = id.to_owned();
        self.decide(token, move |record| {
            let Some(ack) = record.requests.get_mut(&id) else {
                return Verdict::Answer(Claim::AlreadyStarted {
                    slot: DateTime::<Utc>::MIN_UTC,
                    fencing_token: 0,
                });
            };
            let before = ack.clone();
            if change(ack) {
                Verdict::Write
            } else {
                *ack = before;
                Verdict::Answer(Claim::Claimed)
            }
        })
        .await
    }

    /// Forgets the acknowledgements of requests made more than [`ACK_RETENTION`](crate::run_state::ACK_RETENTION) before `now` (such a
    /// request is expired anyway); writes only if there was one.
    pub async fn prune_requests(
        &self,
        token: FencingToken,
        now: DateTime<Utc>,
    ) -> Result<Claim, Error> {
        let horizon = super::ack_horizon(now);
        self.decide(token, move |record| {
            let before = record.requests.len();
            record.requests.retain(|_, ack| ack.requested_at >= horizon);
            if record.requests.len() == before {
                Verdict::Answer(Claim::Claimed)
            } else {
                Verdict::Write
            }
        })
        .await
    }

    /// Forgets jobs that are no longer configured, so the record stays small; writes only if one was.
    pub async fn retain_jobs(&self, token: FencingToken, names: &[&str]) -> Result<Claim, Error> {
        let names: HashSet<String> = names.iter().map(|name| (*name).to_owned()).collect();
        self.decide(token, move |record| {
            let before = record.jobs.len();
            record.jobs.retain(|name, _| names.contains(name));
            if record.jobs.len() == before {
                // Nothing to forget: nothing to write.
                Verdict::Answer(Claim::Claimed)
            } else {
                Verdict::Write
            }
        })
        .await
    }

    /// Applies `change` to the record as stored now and writes it with `token`, retrying on conflicts.
    /// A `change` that answers stops without writing. Returns the decision and the record in force
    /// afterwards. (Changes to the cached record go through [`Ledger::decide`].)
    async fn update(
        &self,
        token: FencingToken,
        mut change: impl FnMut(&mut StateRecord) -> Verdict,
    ) -> Result<(Claim, StateRecord), Error> {
        let mut current = self.current.lock().await;
        *current = None;
        for _ in 0..CLAIM_ATTEMPTS {
            let Known {
                mut record,
                version,
            } = match current.take() {
                Some(known) => known,
                None => self.read().await?,
            };
            if record.fencing_token > token.0 {
                let record_token = record.fencing_token;
                *current = Some(Known {
                    record: record.clone(),
                    version,
                });
                return Ok((Claim::Stale { record_token }, record));
            }
            let before = record.clone();
            if let Verdict::Answer(refused) = change(&mut record) {
                *current = Some(Known {
                    record: before.clone(),
                    version,
                });
                return Ok((refused, before));
            }
            record.fencing_token = token.0;
            record.format = FORMAT;
            match self.save(&record, version.as_deref()).await {
                Ok(Saved::Written(version)) => {
                    self.publish(&record);
                    *current = Some(Known {
                        record: record.clone(),
                        version: Some(version),
                    });
                    return Ok((Claim::Claimed, record));
                }
                // Someone else wrote: read again and re-decide.
                Ok(Saved::Conflict) => *current = None,
                Err(e) => {
                    // The write may or may not have happened: read again next time.
                    *current = None;
                    return Err(e);
                }
            }
        }
        Err(self.contended())
    }

    /// Applies `change` with `token` to the cached record and writes it, together with every change that
    /// waits for a write (see [`Ledger`]); returns its decision once the write that carries it is done.
    /// A `change` that answers must leave the record as it was.
    async fn decide(
        &self,
        token: FencingToken,
        change: impl FnMut(&mut StateRecord) -> Verdict + Send + 'static,
    ) -> Result<Claim, Error> {
        let id = self.next_change.fetch_add(1, Ordering::Relaxed);
        let (done, answer) = oneshot::channel();
        self.lock_pending().push(Pending {
            id,
            token,
            change: Box::new(change),
            done,
        });
        {
            let mut current = self.current.lock().await;
            // Empty if a write that ended while this caller waited for the lock carried its change.
            let mut batch = std::mem::take(&mut *self.lock_pending());
            if !batch.is_empty() {
                let written = self.write_batch(&mut current, &mut batch).await;
                answer_batch(batch, written, id);
            }
        }
        answer.await.unwrap_or_else(|_| {
            Err(Error::Batched(
                "run state: the write that carried this change was abandoned".to_owned(),
            ))
        })
    }

    /// Applies `batch` in order to the cached record and writes it once, retrying on conflicts; returns
    /// each change's decision.
    async fn write_batch(
        &self,
        current: &mut Option<Known>,
        batch: &mut [Pending],
    ) -> Result<Vec<Claim>, BatchFailure> {
        let count = batch.len();
        // Nothing decided yet: every change waits for the write, and gets its error.
        let undecided = || vec![Verdict::Write; count];
        for _ in 0..CLAIM_ATTEMPTS {
            let Known {
                mut record,
                version,
            } = match current.take() {
                Some(known) => known,
                None => self.read().await.map_err(|e| (e, undecided()))?,
            };
            let mut verdicts: Vec<Verdict> = Vec::with_capacity(batch.len());
            for pending in batch.iter_mut() {
                let verdict = if record.fencing_token > pending.token.0 {
                    Verdict::Answer(Claim::Stale {
                        record_token: record.fencing_token,
                    })
                } else {
                    (pending.change)(&mut record)
                };
                if verdict == Verdict::Write {
                    record.fencing_token = pending.token.0;
                }
                verdicts.push(verdict);
            }
            if !verdicts.contains(&Verdict::Write) {
                *current = Some(Known { record, version });
                return Ok(verdicts.into_iter().map(Verdict::claim).collect());
            }
            record.format = FORMAT;
            match self.save(&record, version.as_deref()).await {
                Ok(Saved::Written(version)) => {
                    self.publish(&record);
                    *current = Some(Known {
                        record,
                        version: Some(version),
                    });
                    return Ok(verdicts.into_iter().map(Verdict::claim).collect());
                }
                // Someone else wrote: read again and re-decide every change.
                Ok(Saved::Conflict) => *current = None,
                Err(e) => {
                    // The write may or may not have happened: read again next time.
                    *current = None;
                    return Err((e, verdicts));
                }
            }
        }
        Err((self.contended(), undecided()))
    }

    fn lock_pending(&self) -> std::sync::MutexGuard<'_, Vec<Pending>> {
        // A push or a take: consistent even after a panic elsewhere.
        self.pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Reads the record; a corrupt or unknown one is logged and replaced by an empty one (keeping its
    /// version, so the rebuild overwrites it).
    async fn read(&self) -> Result<Known, Error> {
        let (version, why) = match self.store.load().await? {
            Loaded::Absent => {
                return Ok(Known {
                    record: StateRecord::default(),
                    version: None,
                })
            }
            Loaded::Found { version, record } if record.format == FORMAT => {
                return Ok(Known {
                    record,
                    version: Some(version),
                })
            }
            Loaded::Found { version, record } => {
                let why = format!("format {} (this leasecron reads format {FORMAT}, and in a ConfigMap format {})", record.format, COMPACT_FORMAT);
                (version, why)
            }
            Loaded::Unusable { version, why } => (version, why),
        };
        tracing::error!(
            store = %self.store.describe(),
            error = %why,
            "the run state is unusable; rebuilding it from scratch (missed slots are skipped, none runs twice)"
        );
        // Keeping the version makes the rebuild overwrite it; the term's token fences it again.
        Ok(Known {
            record: StateRecord::default(),
            version: Some(version),
        })
    }

    fn publish(&self, record: &StateRecord) {
        *self
            .published
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = record.clone();
    }

    fn contended(&self) -> Error {
        Error::Contended {
            store: self.store.describe(),
            attempts: CLAIM_ATTEMPTS,
        }
    }
}

/// A new term's token must exceed the run state's: a term below it is refused every write, and would lead
/// while starting nothing (the lease alone was deleted).
impl crate::election::TokenFloor for Ledger {
    fn describe(&self) -> String {
        format!("run state {}", self.store.describe())
    }

    fn highest_token(&self) -> crate::election::fencing::FloorFuture<'_> {
        Box::pin(async move {
            Ok(match self.store.load().await? {
                Loaded::Found { record, .. } => record.highest_token(),
                // Unusable content is rebuilt by the next term: it fences nothing.
                Loaded::Absent | Loaded::Unusable { .. } => 0,
            })
        })
    }
}

/// Hands each change of a batch its decision. If the write failed, the changes it carried get the error: the
/// change of the caller that wrote (`own`) the error itself, the others its message.
fn answer_batch(batch: Vec<Pending>, written: Result<Vec<Claim>, BatchFailure>, own: u64) {
    match written {
        Ok(decisions) => {
            for (pending, decision) in batch.into_iter().zip(decisions) {
                let _ = pending.done.send(Ok(decision));
            }
        }
        Err((error, verdicts)) => {
            let message = error.to_string();
            let mut error = Some(error);
            for (pending, verdict) in batch.into_iter().zip(verdicts) {
                let answer = match verdict {
                    Verdict::Answer(decision) => Ok(decision),
                    Verdict::Write if pending.id == own => {
                        Err(error.take().unwrap_or(Error::Batched(message.clone())))
                    }
                    Verdict::Write => Err(Error::Batched(message.clone())),
                };
                let _ = pending.done.send(answer);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run_state::memory::MemoryStore;
    use crate::run_state::JobRecord;

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().expect("RFC 3339")
    }

    #[tokio::test]
    async fn a_claim_ahead_is_released_back_to_the_previous_start_unless_a_newer_term_wrote() {
        let store = MemoryStore::new();
        let ledger = Ledger::new(store.clone(), "me".to_owned());
        let (one, two) = (at("2026-12-06T10:00:01Z"), at("2026-12-06T10:00:02Z"));
        let (claim, previous) = ledger
            .claim_ahead("j", one, FencingToken(3), one)
            .await
            .expect("writes");
        assert_eq!((claim, previous), (Claim::Claimed, None));
        ledger
            .complete(
                "j",
                FencingToken(3),
                &Origin::scheduled(Cause::Schedule),
                Completion {
                    slot: one,
                    outcome: "succeeded".to_owned(),
                    finished_at: one,
                },
                RunResult::default(),
            )
            .await
            .expect("writes");
        let (claim, previous) = ledger
            .claim_ahead("j", two, FencingToken(3), two)
            .await
            .expect("writes");
        assert_eq!(claim, Claim::Claimed);
        let previous = previous.expect("the slot before");
        assert_eq!(previous.slot, one);
        let record = ledger.snapshot();
        assert_eq!(record.jobs["j"].history.len(), 2);
        assert_eq!(record.jobs["j"].history[1].started_at, two, "the fire time");

        assert_eq!(
            ledger
                .release("j", two, FencingToken(3), Some(previous.clone()))
                .await
                .expect("writes"),
            Claim::Claimed
        );
        let record = ledger.refresh().await.expect("reads");
        assert_eq!(record.jobs["j"].last_started.as_ref(), Some(&previous));
        assert_eq!(
            record.jobs["j"].history.len(),
            1,
            "the unstarted run is gone"
        );
        assert!(!record.jobs["j"].has_started(two), "free for the next term");

        // Claimed again, then a newer term stamps the record: the release is refused, the claim stands.
        ledger
            .claim_ahead("j", two, FencingToken(3), two)
            .await
            .expect("writes");
        let newer = Ledger::new(store, "peer".to_owned());
        assert!(matches!(
            newer.begin_term(FencingToken(4)).await.expect("writes"),
            TermStart::Begun(_)
        ));
        assert_eq!(
            ledger
                .release("j", two, FencingToken(3), Some(previous))
                .await
                .expect("answers"),
            Claim::Stale { record_token: 4 }
        );
        let record = newer.refresh().await.expect("reads");
        assert!(
            record.jobs["j"].has_started(two),
            "the newer term sees the claim"
        );
    }

    #[test]
    fn the_lead_is_twice_the_slowest_recent_write_within_its_bounds() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ledger = Ledger::new(
            crate::local::run_state::StateFile::beside(&dir.path().join("lease.json")),
            "me".to_owned(),
        );
        assert_eq!(
            ledger.claim_lead(),
            Some(INITIAL_CLAIM_LEAD),
            "before any write"
        );
        ledger.timed_write(Duration::from_millis(20));
        assert_eq!(ledger.claim_lead(), Some(Duration::from_millis(45)));
        ledger.timed_write(Duration::from_millis(1));
        assert_eq!(
            ledger.claim_lead(),
            Some(Duration::from_micros(2 * 17_500) + Duration::from_millis(5)),
            "a fast write narrows it by an eighth"
        );
        ledger.timed_write(Duration::from_secs(2));
        assert_eq!(ledger.claim_lead(), Some(MAX_CLAIM_LEAD), "at most");
        for _ in 0..200 {
            ledger.timed_write(Duration::from_micros(10));
        }
        assert_eq!(ledger.claim_lead(), Some(MIN_CLAIM_LEAD), "at least");
        let memory = Ledger::new(MemoryStore::new(), "me".to_owned());
        assert_eq!(memory.claim_lead(), None, "memory claims when due");
    }

    #[tokio::test]
    async fn the_token_floor_is_the_largest_token_in_the_record() {
        use crate::election::TokenFloor;
        let dir = tempfile::tempdir().expect("tempdir");
        let lease = dir.path().join("lease.json");
        let ledger = Ledger::new(
            crate::local::run_state::StateFile::beside(&lease),
            "me".to_owned(),
        );
        assert_eq!(
            ledger.highest_token().await.expect("reads"),
            0,
            "no record yet"
        );
        assert!(
            matches!(
                ledger.begin_term(FencingToken(7)).await.expect("writes"),
                TermStart::Begun(_)
            ),
            "not stale"
        );
        assert_eq!(ledger.highest_token().await.expect("reads"), 7);
        let mut record = StateRecord {
            format: FORMAT,
            fencing_token: 3,
            ..StateRecord::default()
        };
        let start = SlotStart {
            slot: Utc::now(),
            fencing_token: 9,
            identity: "old".to_owned(),
            started_at: Utc::now(),
        };
        record.jobs.insert(
            "j".to_owned(),
            JobRecord {
                last_started: Some(start),
                ..JobRecord::default()
            },
        );
        assert_eq!(
            record.highest_token(),
            9,
            "a job's start carries a larger one"
        );
        std::fs::write(
            crate::local::run_state::StateFile::beside(&lease).path(),
            "not json",
        )
        .expect("write");
        assert_eq!(
            ledger.highest_token().await.expect("reads"),
            0,
            "an unusable record is rebuilt: it fences nothing"
        );
    }
}
