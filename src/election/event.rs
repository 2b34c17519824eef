//! What the elector reports as it goes, for metrics and tests: [`ElectionEvent`]s on an optional channel.

use std::fmt;
use std::time::Duration;

use crate::lease_store::Verb;
use crate::term::FencingToken;

/// Why a term ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LossReason {
    /// No renew succeeded within the renew deadline (RD after the last successful one was sent).
    RenewDeadline,
    /// Another writer changed the record: a peer took the lease over, or it was deleted.
    LeaseTaken,
    /// This replica is shutting down.
    Shutdown,
    /// The store failed in a way retrying cannot fix (a corrupt record, no permission).
    StoreError,
}

impl LossReason {
    /// The reason as a metrics label: `renew_deadline`, `lease_taken`, `shutdown`, `store_error`.
    pub fn as_str(self) -> &'static str {
        match self {
            LossReason::RenewDeadline => "renew_deadline",
            LossReason::LeaseTaken => "lease_taken",
            LossReason::Shutdown => "shutdown",
            LossReason::StoreError => "store_error",
        }
    }
}

impl fmt::Display for LossReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One thing the elector did or saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ElectionEvent {
    /// A lease record version not seen before (by this elector) was observed.
    Observed {
        /// The holder in the record, if any.
        holder: Option<String>,
        /// The record's `leaseTransitions`.
        lease_transitions: i32,
    },
    /// This replica acquired the lease and began a term.
    Acquired {
        /// The new term's fencing token.
        token: FencingToken,
    },
    /// A term ended (published after its runs ended).
    Lost {
        /// The term's fencing token.
        token: FencingToken,
        /// Why.
        reason: LossReason,
    },
    /// On shutdown, the lease was released (holder cleared) after the term's runs ended.
    Released {
        /// The released term's fencing token.
        token: FencingToken,
    },
    /// The durable record of the fencing tokens went backwards: a lease observed with a lower
    /// `leaseTransitions` than before, or, at an acquisition, the lease and the run state both below a
    /// token this process had seen (both deleted or replaced). This replica's next term still gets a token
    /// above `highest_seen`.
    TokenRegression {
        /// The largest token this process had seen.
        highest_seen: u64,
        /// The largest token the lease (and, at an acquisition, the run state) still held.
        durable: u64,
    },
    /// A renew attempt failed (the term continues until its deadline).
    RenewFailed {
        /// The error, as text.
        error: String,
    },
    /// A store request completed, failed or timed out.
    Request {
        /// Which request.
        verb: Verb,
        /// How long it took (up to its timeout).
        duration: Duration,
        /// True if it succeeded.
        ok: bool,
    },
}
