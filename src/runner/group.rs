//! The process groups of the runs in flight, so that a second shutdown signal can kill them all at once.
//!
//! Every attempt runs in its own process group whose id is the leader's pid. A pgid cannot be recycled
//! while any member of the group is alive, so signalling a group is safe until its last member is gone;
//! after that `killpg` fails with `ESRCH`, which is ignored.

use std::collections::BTreeSet;
use std::sync::{Mutex, MutexGuard, PoisonError};

use nix::sys::signal::Signal;

use crate::process::signal_group;

/// The live process groups of one runner.
#[derive(Debug, Default)]
pub(crate) struct ProcessGroups {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    pgids: BTreeSet<i32>,
    killed: bool,
}

impl ProcessGroups {
    /// Records a new group. Returns false (and kills the group) if [`ProcessGroups::kill_all`] already ran:
    /// nothing may outlive it.
    pub(crate) fn admit(&self, pgid: i32) -> bool {
        let mut inner = self.lock();
        if inner.killed {
            signal_group(pgid, Signal::SIGKILL);
            return false;
        }
        inner.pgids.insert(pgid);
        true
    }

    /// Forgets a group whose processes are all gone.
    pub(crate) fn release(&self, pgid: i32) {
        self.lock().pgids.remove(&pgid);
    }

    /// True once [`ProcessGroups::kill_all`] ran.
    pub(crate) fn is_killed(&self) -> bool {
        self.lock().killed
    }

    /// SIGKILLs every recorded group, and every group admitted later.
    pub(crate) fn kill_all(&self) {
        let mut inner = self.lock();
        inner.killed = true;
        for &pgid in &inner.pgids {
            signal_group(pgid, Signal::SIGKILL);
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // The set stays consistent even if a holder panicked: every update is a single insert or remove.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
