//! What a follower knows about the lease record: a version and when it was first seen.
//!
//! Expiry is judged from that first sighting on the local monotonic clock (client-go's rule), never from
//! the record's `renewTime`: a follower may take a held record over LD after it first observed the
//! record's current version, and re-reading the same version does not move that instant.
//!
//! A held record that disappears (the lease was deleted) is not free at once: its holder may still be in
//! its term, with runs, and will create the record again as soon as that term has ended. Its absence is
//! observed like a new version, and expires LD later.

use std::time::Duration;

use tokio::time::Instant;

use crate::lease_store::Versioned;

/// A record version and the local monotonic instant at which it was first observed.
#[derive(Debug, Clone)]
pub(super) struct Observation {
    /// `None`: there is no record.
    pub(super) record: Option<Versioned>,
    /// When this version was first observed.
    pub(super) at: Instant,
    /// There is no record, and the version observed before it had a holder (the lease was deleted).
    pub(super) vanished: bool,
}

impl Observation {
    pub(super) fn first(record: Option<Versioned>, at: Instant) -> Self {
        Observation {
            record,
            at,
            vanished: false,
        }
    }

    /// The observation after reading `record` at `now`: the same first-observed instant if the version is
    /// unchanged, else a new one. True if the version is new.
    pub(super) fn then(self, record: Option<Versioned>, now: Instant) -> (Self, bool) {
        if self.version() == record.as_ref().map(|v| v.version.as_str()) {
            (Observation { record, ..self }, false)
        } else {
            let vanished = record.is_none() && self.holder().is_some();
            (
                Observation {
                    vanished,
                    ..Observation::first(record, now)
                },
                true,
            )
        }
    }

    pub(super) fn version(&self) -> Option<&str> {
        self.record.as_ref().map(|v| v.version.as_str())
    }

    pub(super) fn holder(&self) -> Option<&str> {
        self.record.as_ref().and_then(|v| v.record.holder())
    }

    /// When a held record may be taken over: LD after it was first observed. `None` if it is free. A held
    /// record that vanished expires LD after its absence was first observed.
    pub(super) fn expires_at(&self, lease_duration: Duration) -> Option<Instant> {
        (self.holder().is_some() || self.vanished).then(|| self.at + lease_duration)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lease_store::LeaseRecord;

    fn versioned(holder: Option<&str>, version: &str) -> Versioned {
        Versioned {
            record: LeaseRecord {
                holder_identity: holder.map(str::to_owned),
                lease_duration_seconds: 15,
                acquire_time: None,
                renew_time: None,
                lease_transitions: 3,
            },
            version: version.to_owned(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_held_record_expires_lease_duration_after_it_was_first_observed() {
        let ld = Duration::from_secs(15);
        let seen = Observation::first(Some(versioned(Some("b"), "7")), Instant::now());
        assert_eq!(seen.expires_at(ld), Some(seen.at + ld));
    }

    #[tokio::test(start_paused = true)]
    async fn re_reading_the_same_version_keeps_the_first_observation() {
        let first = Observation::first(Some(versioned(Some("b"), "7")), Instant::now());
        let at = first.at;
        tokio::time::advance(Duration::from_secs(5)).await;
        let (again, is_new) = first.then(Some(versioned(Some("b"), "7")), Instant::now());
        assert!(!is_new);
        assert_eq!(
            again.at, at,
            "o must not move while the version is unchanged"
        );
        let (changed, is_new) = again.then(Some(versioned(Some("b"), "8")), Instant::now());
        assert!(is_new);
        assert_eq!(changed.at, Instant::now());
        let (gone, is_new) = changed.then(None, Instant::now());
        assert!(is_new && gone.record.is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn a_held_record_that_vanishes_expires_lease_duration_after_its_absence_was_seen() {
        let ld = Duration::from_secs(15);
        let held = Observation::first(Some(versioned(Some("b"), "7")), Instant::now());
        tokio::time::advance(Duration::from_secs(5)).await;
        let (gone, is_new) = held.then(None, Instant::now());
        assert!(is_new && gone.vanished);
        assert_eq!(gone.expires_at(ld), Some(Instant::now() + ld));
        tokio::time::advance(Duration::from_secs(1)).await;
        let (still, is_new) = gone.then(None, Instant::now());
        assert!(!is_new, "still no record: the same observation");
        assert_eq!(still.expires_at(ld), Some(still.at + ld));
        // Created again: a version like any other.
        let (back, _) = still.then(Some(versioned(Some("b"), "1")), Instant::now());
        assert!(!back.vanished);
        // A released record that vanishes was free, and stays free.
        let released = Observation::first(Some(versioned(Some(""), "8")), Instant::now());
        let (gone, _) = released.then(None, Instant::now());
        assert_eq!(gone.expires_at(ld), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_free_record_or_no_record_never_needs_to_expire() {
        let ld = Duration::from_secs(15);
        let empty = Observation::first(Some(versioned(Some(""), "7")), Instant::now());
        assert_eq!(empty.expires_at(ld), None);
        assert_eq!(
            Observation::first(None, Instant::now()).expires_at(ld),
            None
        );
    }
}
