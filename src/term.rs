//! Leadership terms: what the elector hands to the dispatcher.
//!
//! A [`Term`] is one uninterrupted period of holding the lease. It owns a [`CancellationToken`] that is
//! cancelled when the term ends (lease lost, renew deadline passed, shutdown), a [`TaskTracker`] on which
//! every run of the term executes, the term's [`FencingToken`], and its *deadline*: *s* + RD, where *s* is
//! the monotonic instant at which the last successful renew was sent (docs/design.md §2). The elector moves the
//! deadline forward on every renew; the dispatcher checks [`Term::is_live`] right before it spawns a
//! process, so a leader that was frozen past its deadline starts nothing when it wakes.

use std::fmt;

use chrono::{DateTime, Utc};
use nix::sys::signal::Signal;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};
use tokio_util::task::TaskTracker;

use crate::reaper;

/// A strictly increasing number per leadership term (the lease's `leaseTransitions`).
///
/// Handed to every run as `LEASECRON_FENCING_TOKEN` so that downstream systems can reject writes from a
/// stale leader.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FencingToken(pub u64);

impl fmt::Display for FencingToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Who leads, as this replica currently knows it.
#[derive(Debug, Clone)]
pub enum Leadership {
    /// The elector has not yet read the lease.
    Unknown,
    /// Another replica holds the lease (`holder`), or nobody does (`None`).
    Follower {
        /// The identity in the lease record, if any.
        holder: Option<String>,
    },
    /// This replica holds the lease.
    Leader {
        /// The current term.
        term: Term,
    },
}

impl Leadership {
    /// The live term, if this replica leads and the term's deadline has not passed.
    pub fn live_term(&self) -> Option<&Term> {
        match self {
            Leadership::Leader { term } if term.is_live() => Some(term),
            _ => None,
        }
    }

    /// True if this replica leads (whether or not the term is still live).
    pub fn is_leader(&self) -> bool {
        matches!(self, Leadership::Leader { .. })
    }
}

/// One leadership term. Cheap to clone; all clones share the token, tracker and deadline.
#[derive(Debug, Clone)]
pub struct Term {
    fencing_token: FencingToken,
    acquired_at: DateTime<Utc>,
    token: CancellationToken,
    tracker: TaskTracker,
    deadline: watch::Receiver<Instant>,
}

/// The elector's side of a [`Term`]: it moves the deadline and ends the term.
#[derive(Debug)]
pub struct TermHandle {
    term: Term,
    deadline: watch::Sender<Instant>,
    sweep_strays: bool,
}

impl Term {
    /// Starts a term whose first deadline is `deadline`. The elector keeps the [`TermHandle`] and publishes
    /// [`TermHandle::term`].
    pub fn begin(
        fencing_token: FencingToken,
        acquired_at: DateTime<Utc>,
        deadline: Instant,
    ) -> TermHandle {
        let (tx, rx) = watch::channel(deadline);
        TermHandle {
            term: Term {
                fencing_token,
                acquired_at,
                token: CancellationToken::new(),
                tracker: TaskTracker::new(),
                deadline: rx,
            },
            deadline: tx,
            sweep_strays: false,
        }
    }

    /// This term's fencing token.
    pub fn fencing_token(&self) -> FencingToken {
        self.fencing_token
    }

    /// When this term began (wall clock, for logs and `/status`).
    pub fn acquired_at(&self) -> DateTime<Utc> {
        self.acquired_at
    }

    /// The monotonic instant at which the term ends unless renewed.
    pub fn deadline(&self) -> Instant {
        *self.deadline.borrow()
    }

    /// True while the term has not been ended and its deadline has not passed, on the monotonic clock.
    pub fn is_live(&self) -> bool {
        !self.token.is_cancelled() && Instant::now() < self.deadline()
    }

    /// True once the term has been ended.
    pub fn is_ended(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Completes when the term ends.
    pub fn ended(&self) -> WaitForCancellationFuture<'_> {
        self.token.cancelled()
    }

    /// A token that is cancelled when the term ends (and may be cancelled on its own, e.g. by `Replace`).
    pub fn child_token(&self) -> CancellationToken {
        self.token.child_token()
    }

    /// The tracker on which every run of this term executes. The elector waits on it before it releases
    /// the lease or contends again.
    pub fn tracker(&self) -> &TaskTracker {
        &self.tracker
    }
}

impl TermHandle {
    /// The term, to publish.
    pub fn term(&self) -> &Term {
        &self.term
    }

    /// Moves the deadline (after a successful renew sent at *s*: `s + RD`).
    pub fn extend_to(&self, deadline: Instant) {
        self.deadline.send_replace(deadline);
    }

    /// Also ends, with the term, the processes its runs left behind, as `leasecron run` does: a process
    /// that left its run's group (`setsid`) gets SIGTERM when the term ends, with the runs, and every
    /// descendant of this process still alive once the runs have ended gets SIGKILL. Only for a process
    /// whose every child is a run of this term ([`crate::reaper::kill_descendants`] spares nothing).
    #[must_use]
    pub fn sweeping_strays(mut self) -> Self {
        self.sweep_strays = true;
        self
    }

    /// Ends the term: cancels its token, so every run is terminated, and closes its tracker. Returns once
    /// every run of the term has ended (and, with [`TermHandle::sweeping_strays`], every process they
    /// left behind is dead).
    pub async fn end(self) {
        self.term.token.cancel();
        self.term.tracker.close();
        let signalled = if self.sweep_strays {
            reaper::signal_strays(Signal::SIGTERM)
        } else {
            0
        };
        self.term.tracker.wait().await;
        if self.sweep_strays {
            let killed = reaper::kill_descendants().await;
            if signalled + killed > 0 {
                tracing::warn!(
                    fencing_token = self.term.fencing_token.0,
                    terminated = signalled,
                    killed,
                    "the term's runs left processes behind (outside their process groups); ended them \
                     with the term"
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn a_term_dies_at_its_deadline_unless_extended() {
        let handle = Term::begin(
            FencingToken(1),
            Utc::now(),
            Instant::now() + Duration::from_secs(10),
        );
        let term = handle.term().clone();
        assert!(term.is_live());
        tokio::time::advance(Duration::from_secs(9)).await;
        handle.extend_to(Instant::now() + Duration::from_secs(10));
        tokio::time::advance(Duration::from_secs(9)).await;
        assert!(term.is_live(), "the renew moved the deadline");
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(!term.is_live(), "the deadline passed");
        assert!(!term.is_ended(), "only the elector ends a term");
    }

    #[tokio::test(start_paused = true)]
    async fn ending_a_term_cancels_children_and_waits_for_runs() {
        let handle = Term::begin(
            FencingToken(7),
            Utc::now(),
            Instant::now() + Duration::from_secs(10),
        );
        let term = handle.term().clone();
        let child = term.child_token();
        let (tx, rx) = tokio::sync::oneshot::channel();
        term.tracker().spawn(async move {
            child.cancelled().await;
            tokio::time::sleep(Duration::from_secs(2)).await;
            tx.send(()).unwrap();
        });
        handle.end().await;
        assert!(term.is_ended());
        assert!(!term.is_live());
        rx.await
            .expect("end() returned only after the run finished");
    }
}
