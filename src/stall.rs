//! Is the leader stalled? A replica can hold the lease, renew it, report `leasecron_is_leader` 1 and
//! answer its probes while it starts nothing: every fire is skipped as `not_leader` (the run state was
//! written by a term with a larger fencing token) or `state_unavailable` (the run state cannot be written).
//! [`StallWatch`] notices it.
//!
//! The leader is **stalled** when, in its current term, the fires of more than LD (the lease duration) —
//! at least one — were all skipped for one of those two reasons: since the first of them, no run of the term
//! started. A run that starts (its first attempt's process is spawned) ends the stall; so does the end of
//! the term. Skips of slots scheduled before the term began (catch-up, or a fire of the previous term that
//! lost the race with its end) count only if they are the term's own: a skip is attributed to the term
//! that leads when it is reported, and ignored if its slot precedes the term's start.
//!
//! A stall shows as the gauge `leasecron_leader_stalled` (1 while stalled), and `/readyz` answers 503 with
//! the reason; the alert `LeasecronLeaderStalled` pages on it (docs/alerts.md).

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::IntGauge;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::event::{ClusterAction, ElectionEvent, RunEvent, SkipReason};
use crate::observe::Observer;
use crate::term::Leadership;

/// The name of the gauge.
pub const METRIC: &str = "leasecron_leader_stalled";

/// Watches the runner's skips and starts for a stalled leader. See the [module documentation](self).
#[derive(Debug)]
pub struct StallWatch {
    lease_duration: Duration,
    leadership: watch::Receiver<Leadership>,
    streak: Mutex<Streak>,
}

/// The skips since the current term's last run start.
#[derive(Debug, Default)]
struct Streak {
    /// The fencing token of the term the skips belong to.
    term: Option<u64>,
    /// When the first of them was reported; `None` if none since the last start.
    since: Option<Instant>,
    /// How many fires were skipped since then.
    skipped: u64,
    /// The reason of the last skip.
    reason: Option<SkipReason>,
}

/// What a stalled leader has been doing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stall {
    /// Since the first skipped fire.
    pub duration: Duration,
    /// Fires skipped since then.
    pub skipped: u64,
    /// The reason of the last skip: `not_leader` or `state_unavailable`.
    pub reason: &'static str,
}

impl std::fmt::Display for Stall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let duration = Duration::from_secs(self.duration.as_secs());
        write!(
            f,
            "leader stalled: every fire for {} was skipped ({} fires, last as {}), no run started",
            humantime::format_duration(duration),
            self.skipped,
            self.reason
        )
    }
}

impl StallWatch {
    /// A watch that calls a leader stalled after LD = `lease_duration` of skips, reading the term from
    /// `leadership`.
    pub fn new(lease_duration: Duration, leadership: watch::Receiver<Leadership>) -> StallWatch {
        StallWatch {
            lease_duration,
            leadership,
            streak: Mutex::new(Streak::default()),
        }
    }

    /// `Some` while this replica leads and is stalled.
    pub fn stall(&self) -> Option<Stall> {
        let token = match &*self.leadership.borrow() {
            Leadership::Leader { term } => term.fencing_token().0,
            _ => return None,
        };
        let streak = self.lock();
        let since = streak.since.filter(|_| streak.term == Some(token))?;
        let duration = since.elapsed();
        (duration > self.lease_duration).then(|| Stall {
            duration,
            skipped: streak.skipped,
            reason: streak.reason.map_or("not_leader", |r| r.as_str()),
        })
    }

    /// The gauge [`METRIC`], computed at every scrape, to register with [`crate::metrics::Metrics`].
    pub fn collector(self: &Arc<Self>) -> Result<Box<dyn Collector>, prometheus::Error> {
        let gauge = IntGauge::new(
            METRIC,
            "1 while this replica leads and has skipped every fire (as not_leader or state_unavailable) \
             for longer than the lease duration: it holds the lease but starts nothing; else 0.",
        )?;
        Ok(Box::new(StallGauge {
            watch: Arc::clone(self),
            gauge,
        }))
    }

    fn lock(&self) -> MutexGuard<'_, Streak> {
        // Every update is a few field writes under the lock: consistent even after a panic elsewhere.
        self.streak.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Observer for StallWatch {
    fn on_run(&self, event: &RunEvent) {
        match event {
            RunEvent::Skipped {
                scheduled, reason, ..
            } if matches!(reason, SkipReason::NotLeader | SkipReason::StateUnavailable) => {
                let token = match &*self.leadership.borrow() {
                    Leadership::Leader { term } if *scheduled >= term.acquired_at() => {
                        term.fencing_token().0
                    }
                    _ => return,
                };
                let mut streak = self.lock();
                if streak.term != Some(token) {
                    *streak = Streak {
                        term: Some(token),
                        ..Streak::default()
                    };
                }
                streak.since.get_or_insert_with(Instant::now);
                streak.skipped += 1;
                streak.reason = Some(*reason);
            }
            // A run started: its slot was claimed, so the term is not stalled.
            RunEvent::Started { attempt: 1, .. }
            | RunEvent::Cluster {
                action: ClusterAction::Created,
                ..
            } => {
                let mut streak = self.lock();
                streak.since = None;
                streak.skipped = 0;
            }
            _ => {}
        }
    }

    fn on_election(&self, _event: &ElectionEvent) {}
}

/// [`METRIC`], set from the watch when gathered.
struct StallGauge {
    watch: Arc<StallWatch>,
    gauge: IntGauge,
}

impl Collector for StallGauge {
    fn desc(&self) -> Vec<&Desc> {
        self.gauge.desc()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        self.gauge.set(i64::from(self.watch.stall().is_some()));
        self.gauge.collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::term::{FencingToken, Term, TermHandle};
    use chrono::{DateTime, TimeZone, Utc};

    const LD: Duration = Duration::from_secs(15);

    fn at(secs: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_800_000_000 + secs, 0)
            .single()
            .expect("a valid timestamp")
    }

    fn skipped(slot: i64, reason: SkipReason) -> RunEvent {
        RunEvent::Skipped {
            job: "j".to_owned(),
            scheduled: at(slot),
            reason,
        }
    }

    fn started(attempt: u32) -> RunEvent {
        RunEvent::Started {
            job: "j".to_owned(),
            scheduled: at(0),
            attempt,
            pid: 1,
        }
    }

    fn term(token: u64, acquired: i64) -> TermHandle {
        Term::begin(
            FencingToken(token),
            at(acquired),
            Instant::now() + Duration::from_secs(3600),
        )
    }

    fn leading(handle: &TermHandle) -> Leadership {
        Leadership::Leader {
            term: handle.term().clone(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_leader_that_skips_every_fire_for_longer_than_lease_duration_is_stalled() {
        let first = term(3, 0);
        let (tx, rx) = watch::channel(leading(&first));
        let watch = StallWatch::new(LD, rx);
        watch.on_run(&skipped(1, SkipReason::NotLeader));
        for slot in 2..=15 {
            tokio::time::advance(Duration::from_secs(1)).await;
            watch.on_run(&skipped(slot, SkipReason::NotLeader));
            assert_eq!(watch.stall(), None, "{slot} s: not yet longer than LD");
        }
        tokio::time::advance(Duration::from_millis(1001)).await;
        let stall = watch.stall().expect("stalled past LD");
        assert_eq!(
            (stall.skipped, stall.reason),
            (15, "not_leader"),
            "{stall:?}"
        );
        assert!(
            stall.to_string().starts_with(
                "leader stalled: every fire for 15s was skipped (15 fires, last as not_leader)"
            ),
            "{stall}"
        );

        // A run that starts ends it; a retry's start is no news.
        watch.on_run(&started(2));
        assert!(watch.stall().is_some());
        watch.on_run(&started(1));
        assert_eq!(watch.stall(), None);

        // So does the end of leadership.
        watch.on_run(&skipped(20, SkipReason::StateUnavailable));
        tokio::time::advance(LD + Duration::from_secs(1)).await;
        assert_eq!(
            watch.stall().map(|s| s.reason),
            Some("state_unavailable"),
            "one skipped fire and LD without a start is a stall too"
        );
        tx.send_replace(Leadership::Follower { holder: None });
        assert_eq!(watch.stall(), None, "a follower starts nothing by design");
        first.end().await;
    }

    #[tokio::test(start_paused = true)]
    async fn other_skips_and_other_terms_do_not_stall_a_leader() {
        let first = term(3, 100);
        let (tx, rx) = watch::channel(Leadership::Follower { holder: None });
        let watch = StallWatch::new(LD, rx);
        // A follower's skips are not counted.
        watch.on_run(&skipped(101, SkipReason::NotLeader));
        tx.send_replace(leading(&first));
        tokio::time::advance(LD * 2).await;
        assert_eq!(watch.stall(), None);
        // Overlaps and slots already started are the jobs' business.
        watch.on_run(&skipped(102, SkipReason::Overlap));
        watch.on_run(&skipped(103, SkipReason::AlreadyStarted));
        // A fire of before the term began (the previous term's, reported late).
        watch.on_run(&skipped(99, SkipReason::NotLeader));
        tokio::time::advance(LD * 2).await;
        assert_eq!(watch.stall(), None);

        // The skips of the previous term do not carry over into the next.
        watch.on_run(&skipped(104, SkipReason::NotLeader));
        let second = term(4, 110);
        tx.send_replace(leading(&second));
        tokio::time::advance(LD * 2).await;
        assert_eq!(watch.stall(), None, "term 4 skipped nothing");
        first.end().await;
        second.end().await;
    }

    #[tokio::test(start_paused = true)]
    async fn the_gauge_is_computed_when_gathered() {
        let handle = term(1, 0);
        let (_tx, rx) = watch::channel(leading(&handle));
        let watch = Arc::new(StallWatch::new(LD, rx));
        let gauge = watch.collector().expect("a valid gauge");
        let value =
            |gauge: &dyn Collector| gauge.collect()[0].get_metric()[0].get_gauge().get_value();
        assert_eq!(value(gauge.as_ref()), 0.0);
        watch.on_run(&skipped(1, SkipReason::StateUnavailable));
        tokio::time::advance(LD + Duration::from_secs(1)).await;
        assert_eq!(value(gauge.as_ref()), 1.0);
        handle.end().await;
    }
}
