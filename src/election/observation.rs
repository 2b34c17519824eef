//! What a follower knows about the lease record: a version and when it was first seen.
//!
//! Expiry is judged from that first sighting on the local monotonic clock (client-go's rule), never from
//! the record's `renewTime`: a follower may take a held record over LD after it first observed the
//! record's current version, and re-reading the same version does not move that instant. LD here is the
//! longer of this replica's `--lease-duration` and the record's own `leaseDurationSeconds`: a holder
//! that promised a longer lease (client-go's elector with LD 60 s, a replica with other flags) is not
//! taken over before its own duration has passed, as client-go would not either.
//!
//! A held record that disappears (the lease was deleted) is not free at once: its holder may still be in
//! its term, with runs, and will create the record again as soon as that term has ended. Its absence is
//! observed like a new version, and expires LD later.
//!
//! An observation also remembers the last holder it saw, so that whoever takes over a released or deleted
//! record knows whom it took it from ([`Takeover`]), for the log.

use std::fmt;
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
    /// The holder of the latest held version observed up to this one: this one's own if it is held.
    pub(super) last_holder: Option<String>,
    /// The `leaseDurationSeconds` of that latest held version (zero if none was seen).
    pub(super) last_duration: Duration,
}

/// Whom a new term took the lease from, and why it was free: what the acquisition's log line says.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Takeover {
    /// Nobody held it as far as this replica saw: no record, or one never observed held.
    NoHolder,
    /// `holder` released it (the record is there, without a holder).
    Released {
        /// The last holder observed.
        holder: String,
    },
    /// `holder` stopped renewing: its record was unchanged for `after` (at least LD).
    Expired {
        /// The holder in the record.
        holder: String,
        /// How long the record had been unchanged.
        after: Duration,
    },
    /// The record was deleted; `after` since its absence was first observed.
    Deleted {
        /// The last holder observed.
        holder: String,
        /// How long the record had been absent.
        after: Duration,
    },
}

impl Observation {
    pub(super) fn first(record: Option<Versioned>, at: Instant) -> Self {
        let held = record.as_ref().filter(|v| v.record.holder().is_some());
        let last_holder = held.and_then(|v| v.record.holder()).map(str::to_owned);
        let last_duration = held.map_or(Duration::ZERO, |v| {
            Duration::from_secs(u64::try_from(v.record.lease_duration_seconds).unwrap_or(0))
        });
        Observation {
            record,
            at,
            vanished: false,
            last_holder,
            last_duration,
        }
    }

    /// Like [`Observation::first`], after a version held by `previous` (so it is the last holder if
    /// `record` has none).
    pub(super) fn after(record: Option<Versioned>, at: Instant, previous: &str) -> Self {
        let mut observed = Observation::first(record, at);
        observed
            .last_holder
            .get_or_insert_with(|| previous.to_owned());
        observed
    }

    /// The observation after reading `record` at `now`: the same first-observed instant if the version is
    /// unchanged, else a new one. True if the version is new.
    pub(super) fn then(self, record: Option<Versioned>, now: Instant) -> (Self, bool) {
        if self.version() == record.as_ref().map(|v| v.version.as_str()) {
            (Observation { record, ..self }, false)
        } else {
            let vanished = record.is_none() && self.holder().is_some();
            let mut next = Observation::first(record, now);
            next.vanished = vanished;
            if next.last_holder.is_none() {
                next.last_holder = self.last_holder;
                next.last_duration = self.last_duration;
            }
            (next, true)
        }
    }

    pub(super) fn version(&self) -> Option<&str> {
        self.record.as_ref().map(|v| v.version.as_str())
    }

    pub(super) fn holder(&self) -> Option<&str> {
        self.record.as_ref().and_then(|v| v.record.holder())
    }

    /// When a held record may be taken over: the longer of `lease_duration` (ours) and the record's own
    /// `leaseDurationSeconds` after it was first observed. `None` if it is free. A held record that
    /// vanished expires that long (its last holder's duration counting) after its absence was first
    /// observed.
    pub(super) fn expires_at(&self, lease_duration: Duration) -> Option<Instant> {
        (self.holder().is_some() || self.vanished)
            .then(|| self.at + lease_duration.max(self.last_duration))
    }

    /// Whom acquiring this (free or expired) observation at `now` takes the lease from, and why it is
    /// free.
    pub(super) fn takeover(&self, now: Instant) -> Takeover {
        let after = now.saturating_duration_since(self.at);
        match (&self.record, self.holder(), &self.last_holder) {
            (_, Some(holder), _) => Takeover::Expired {
                holder: holder.to_owned(),
                after,
            },
            (Some(_), None, Some(holder)) => Takeover::Released {
                holder: holder.clone(),
            },
            (None, None, Some(holder)) => Takeover::Deleted {
                holder: holder.clone(),
                after,
            },
            (_, None, None) => Takeover::NoHolder,
        }
    }
}

// === impl Takeover ===

impl Takeover {
    /// The cause as a log field: `no_holder`, `released`, `expired` or `deleted`.
    pub(super) fn as_str(&self) -> &'static str {
        match self {
            Takeover::NoHolder => "no_holder",
            Takeover::Released { .. } => "released",
            Takeover::Expired { .. } => "expired",
            Takeover::Deleted { .. } => "deleted",
        }
    }

    /// The holder the lease was taken from, if any.
    pub(super) fn holder(&self) -> Option<&str> {
        match self {
            Takeover::NoHolder => None,
            Takeover::Released { holder }
            | Takeover::Expired { holder, .. }
            | Takeover::Deleted { holder, .. } => Some(holder),
        }
    }
}

/// `acquired: no holder`, `acquired from r1: released`, `acquired from r1: expired after 15.0 s`,
/// `acquired from r1: lease deleted, absent for 15.0 s`.
impl fmt::Display for Takeover {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Takeover::NoHolder => f.write_str("acquired: no holder"),
            Takeover::Released { holder } => write!(f, "acquired from {holder}: released"),
            Takeover::Expired { holder, after } => write!(
                f,
                "acquired from {holder}: expired after {:.1} s",
                after.as_secs_f64()
            ),
            Takeover::Deleted { holder, after } => write!(
                f,
                "acquired from {holder}: lease deleted, absent for {:.1} s",
                after.as_secs_f64()
            ),
        }
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

    /// client-go's elector with its 60 s holds a record that says so: a replica with LD 15 s waits the
    /// holder's 60 s, as client-go would; a record promising less than our LD still waits our LD.
    #[tokio::test(start_paused = true)]
    async fn a_holder_that_promised_a_longer_lease_is_waited_for_its_own_duration() {
        let ld = Duration::from_secs(15);
        let mut long = versioned(Some("cgo"), "7");
        long.record.lease_duration_seconds = 60;
        let seen = Observation::first(Some(long.clone()), Instant::now());
        assert_eq!(seen.expires_at(ld), Some(seen.at + Duration::from_secs(60)));
        let mut short = versioned(Some("b"), "8");
        short.record.lease_duration_seconds = 1;
        let seen = Observation::first(Some(short), Instant::now());
        assert_eq!(seen.expires_at(ld), Some(seen.at + ld));
        let mut negative = versioned(Some("b"), "9");
        negative.record.lease_duration_seconds = -5;
        let seen = Observation::first(Some(negative), Instant::now());
        assert_eq!(seen.expires_at(ld), Some(seen.at + ld));
        // Deleted while held by the long holder: its absence counts that holder's duration too.
        let held = Observation::first(Some(long), Instant::now());
        tokio::time::advance(Duration::from_secs(5)).await;
        let (gone, _) = held.then(None, Instant::now());
        assert_eq!(
            gone.expires_at(ld),
            Some(Instant::now() + Duration::from_secs(60))
        );
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
    async fn a_takeover_names_the_last_holder_and_why_the_lease_was_free() {
        let ld = Duration::from_secs(15);
        let start = Instant::now();
        assert_eq!(
            Observation::first(None, start).takeover(start),
            Takeover::NoHolder
        );
        let never_held = Observation::first(Some(versioned(Some(""), "1")), start);
        assert_eq!(
            never_held.takeover(start).to_string(),
            "acquired: no holder"
        );

        let held = Observation::first(Some(versioned(Some("r1"), "7")), start);
        tokio::time::advance(ld).await;
        let expired = held.takeover(Instant::now());
        assert_eq!(
            expired.to_string(),
            "acquired from r1: expired after 15.0 s"
        );
        assert_eq!(
            (expired.as_str(), expired.holder()),
            ("expired", Some("r1"))
        );

        // Renewed (a new version), then released: the holder is remembered across versions.
        let (renewed, _) = held.then(Some(versioned(Some("r1"), "8")), Instant::now());
        let (released, _) = renewed.then(Some(versioned(Some(""), "9")), Instant::now());
        assert_eq!(
            released.takeover(Instant::now()).to_string(),
            "acquired from r1: released"
        );
        let (gone, _) = released.then(None, Instant::now());
        assert_eq!(gone.takeover(Instant::now()).as_str(), "deleted");

        let held = Observation::first(Some(versioned(Some("r2"), "3")), Instant::now());
        let (vanished, _) = held.then(None, Instant::now());
        tokio::time::advance(ld).await;
        assert_eq!(
            vanished.takeover(Instant::now()).to_string(),
            "acquired from r2: lease deleted, absent for 15.0 s"
        );

        // A leader that finds its record gone follows the absence, remembering itself.
        let after_ours = Observation::after(None, Instant::now(), "r0");
        assert_eq!(after_ours.takeover(Instant::now()).holder(), Some("r0"));
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
