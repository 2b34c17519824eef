//! The fencing token rule: a new term's token is larger than every token leasecron can still see.
//!
//! The lease's `leaseTransitions` is the token of the term that wrote it (client-go peers increment it on
//! every acquisition too), but it is not the only record of the tokens handed out: the run state beside the
//! lease records the token of the newest term that wrote it, and this process remembers the largest token
//! it has seen in either. Deleting the lease (a `/tmp` cleaner on a lease file, `kubectl delete lease`)
//! resets its counter, and a term whose token is below the run state's is refused every write there: it
//! would lead and start nothing. So a new term's token is
//!
//! > max(the lease's `leaseTransitions`, the run state's token, the largest token this process has seen) + 1
//!
//! and it is written into the lease as `leaseTransitions`, so peers (client-go electors included) and later
//! terms continue from it. When the lease and the run state both lost their tokens (both deleted or
//! replaced) the largest token this process has seen still keeps the tokens increasing; that, and a lease
//! observed going backwards, is a [`Regression`]: logged as an error and counted.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};

/// Why a [`TokenFloor`] could not be read, as its own error type says it.
pub type FloorError = Box<dyn std::error::Error + Send + Sync>;

/// What [`TokenFloor::highest_token`] returns.
pub type FloorFuture<'a> = Pin<Box<dyn Future<Output = Result<u64, FloorError>> + Send + 'a>>;

/// A record of fencing tokens besides the lease: the run state, whose token a new term must exceed.
pub trait TokenFloor: Send + Sync {
    /// For logs: where the tokens are read from.
    fn describe(&self) -> String;

    /// The largest fencing token the record holds; 0 if it holds none (absent, or unreadable content that
    /// will be rebuilt). An error if it cannot be read at all: then no term begins.
    fn highest_token(&self) -> FloorFuture<'_>;
}

/// The tokens a new term must exceed, and what they say about the record's history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Floor {
    /// The lease's `leaseTransitions` as observed (0 without a record).
    pub lease: u64,
    /// The run state's token (0 without one, or without a run state).
    pub state: u64,
    /// The largest token this process saw before.
    pub seen: u64,
}

/// The durable record of the tokens went backwards: it is below a token this process has seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Regression {
    /// The largest token this process has seen.
    pub seen: u64,
    /// The largest token the lease and the run state still hold.
    pub durable: u64,
}

impl Floor {
    /// The largest token the lease and the run state still hold.
    pub fn durable(&self) -> u64 {
        self.lease.max(self.state)
    }

    /// The new term's token: one more than the largest of the three. `None` if it would not fit the
    /// lease's `leaseTransitions` (an `i32`).
    pub fn next_token(&self) -> Option<u64> {
        let next = self.durable().max(self.seen).checked_add(1)?;
        (next <= i32::MAX as u64).then_some(next)
    }

    /// `Some` if the lease and the run state both hold less than this process has seen: both were deleted
    /// or replaced. The next token still exceeds what was seen.
    pub fn regression(&self) -> Option<Regression> {
        (self.durable() < self.seen).then_some(Regression {
            seen: self.seen,
            durable: self.durable(),
        })
    }
}

/// The largest token this process has seen (in a lease record, in the run state, or issued), and the lease's
/// `leaseTransitions` as last observed, to notice it going backwards.
#[derive(Debug, Default)]
pub struct Memory {
    highest: AtomicU64,
    /// The last observed `leaseTransitions` + 1; 0 before the first observation.
    last_observed: AtomicU64,
    /// The `seen` of the last regression reported: a fall below the same token is reported once.
    reported: AtomicU64,
}

impl Memory {
    /// The largest token seen.
    pub fn highest(&self) -> u64 {
        self.highest.load(Ordering::Acquire)
    }

    /// Remembers `token` (from the run state, or issued).
    pub fn saw(&self, token: u64) {
        self.highest.fetch_max(token, Ordering::AcqRel);
    }

    /// True if `regression` is news: no fall below the same largest token was reported before (a follower
    /// that saw the lease go backwards and then acquires from it reports it once).
    pub fn first_report(&self, regression: Regression) -> bool {
        self.reported.fetch_max(regression.seen, Ordering::AcqRel) < regression.seen
    }

    /// Remembers a lease record's `leaseTransitions`; `Some` if it is below the one observed last (someone
    /// deleted or rewrote the lease, and a term began from a lower count).
    pub fn observed_lease(&self, lease_transitions: u64) -> Option<Regression> {
        let highest = self.highest.fetch_max(lease_transitions, Ordering::AcqRel);
        let previous = self
            .last_observed
            .swap(lease_transitions.saturating_add(1), Ordering::AcqRel)
            .checked_sub(1)?;
        (lease_transitions < previous).then(|| Regression {
            seen: highest.max(previous),
            durable: lease_transitions,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn floor(lease: u64, state: u64, seen: u64) -> Floor {
        Floor { lease, state, seen }
    }

    #[test]
    fn the_next_token_exceeds_the_lease_the_run_state_and_memory() {
        assert_eq!(floor(0, 0, 0).next_token(), Some(1), "a first term gets 1");
        assert_eq!(floor(4, 0, 0).next_token(), Some(5), "client-go's rule");
        assert_eq!(floor(4, 4, 4).next_token(), Some(5));
        // The lease was deleted while the run state kept the last token.
        assert_eq!(floor(0, 9, 0).next_token(), Some(10));
        assert_eq!(floor(0, 9, 9).next_token(), Some(10));
        // The lease and the run state were both deleted: this process remembers.
        assert_eq!(floor(0, 0, 9).next_token(), Some(10));
        // A lease ahead of the run state (no run was claimed in the last terms).
        assert_eq!(floor(12, 9, 9).next_token(), Some(13));
    }

    #[test]
    fn only_a_durable_record_below_memory_is_a_regression() {
        assert_eq!(floor(0, 0, 0).regression(), None, "a first start");
        assert_eq!(
            floor(0, 9, 9).regression(),
            None,
            "the lease alone was lost"
        );
        assert_eq!(
            floor(9, 0, 9).regression(),
            None,
            "the run state alone was lost"
        );
        assert_eq!(
            floor(0, 0, 9).regression(),
            Some(Regression {
                seen: 9,
                durable: 0
            })
        );
        assert_eq!(
            floor(2, 1, 9).regression(),
            Some(Regression {
                seen: 9,
                durable: 2
            })
        );
    }

    #[test]
    fn no_token_beyond_what_leasetransitions_holds() {
        let max = i32::MAX as u64;
        assert_eq!(floor(max - 1, 0, 0).next_token(), Some(max));
        assert_eq!(floor(max, 0, 0).next_token(), None);
        assert_eq!(floor(0, u64::MAX, 0).next_token(), None);
        assert_eq!(floor(0, 0, u64::MAX).next_token(), None);
    }

    #[test]
    fn memory_keeps_the_largest_token_and_notices_a_lease_going_backwards() {
        let memory = Memory::default();
        assert_eq!(memory.observed_lease(0), None, "a first observation");
        assert_eq!(memory.observed_lease(3), None);
        assert_eq!(memory.observed_lease(3), None, "a renewal");
        memory.saw(7);
        assert_eq!(memory.highest(), 7);
        assert_eq!(memory.observed_lease(8), None);
        assert_eq!(
            memory.observed_lease(1),
            Some(Regression {
                seen: 8,
                durable: 1
            }),
            "the lease was deleted and created again from 0"
        );
        assert_eq!(memory.observed_lease(1), None, "counted once");
        assert_eq!(memory.observed_lease(2), None);
        assert_eq!(memory.highest(), 8, "memory never goes backwards");
        memory.saw(5);
        assert_eq!(memory.highest(), 8);
    }

    #[test]
    fn a_fall_below_the_same_token_is_reported_once() {
        let memory = Memory::default();
        let fall = |seen, durable| Regression { seen, durable };
        assert!(memory.first_report(fall(8, 1)));
        assert!(!memory.first_report(fall(8, 1)), "seen, then acquired from");
        assert!(!memory.first_report(fall(8, 0)));
        assert!(
            memory.first_report(fall(9, 0)),
            "a later fall, below a later token"
        );
    }
}
