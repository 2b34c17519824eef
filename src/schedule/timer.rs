//! The per-job timer: sleeps on tokio's clock until the next wall-clock slot of a [`Schedule`].
//!
//! Slots are wall-clock instants, but sleeping happens on tokio's monotonic clock. The timer converts
//! (`target - wall_now` added to `Instant::now()`) and sleeps until then in one piece, waking early only
//! when the clock reports a step ([`WallClock::steps`]: a wall-clock step or a system suspend, when the
//! monotonic clock stops and the wall clock does not); it then converts again, and an early wake-up just
//! sleeps again. An idle timer thus wakes once per slot, not periodically. With a clock that reports no
//! steps it sleeps at most [`MAX_SLEEP`] at a time, re-reading the wall clock after each chunk, so a step
//! is noticed within one chunk.
//!
//! A job with a `jitter` fires every slot a fixed offset late ([`Timer::with_offset`]): the timer then
//! works on the wall clock minus the offset, so everything it decides (when a slot is due, how late a tick
//! is, the on-time tolerance, the starting deadline, which slot is the latest after a stall) is measured
//! from the instant the slot fires, `slot + offset`, while the slot it hands out stays the nominal one.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use tokio::sync::watch;
use tokio::time::Instant;

use super::Schedule;
use crate::clock::SharedClock;

/// A slot returned at most this late counts as on time and always fires, whatever the starting deadline.
///
/// Covers tokio's millisecond timer granularity and scheduling noise on a busy node; larger lateness
/// means the process or the host stalled.
pub const ON_TIME_TOLERANCE: Duration = Duration::from_secs(1);

/// Longest single sleep before the wall clock is read again, with a clock that reports no steps.
pub const MAX_SLEEP: Duration = Duration::from_secs(30);

/// Longest single sleep with a clock that reports its steps (tokio's timer wheel spans about two years;
/// a slot can be decades away).
pub const MAX_SLEEP_WITH_STEPS: Duration = Duration::from_secs(24 * 3600);

/// How early the timer wakes before a slot to approach it precisely.
///
/// tokio's timer has millisecond granularity and rounds a deadline up, so a plain `sleep_until` wakes
/// 1–2 ms late. The timer sleeps until `PRECISE_LEAD` before the slot, then yields to the scheduler until
/// the wall clock reaches the slot: at most this long of a worker's time per fire.
pub const PRECISE_LEAD: Duration = Duration::from_millis(2);

/// What the timer hands the dispatcher for one slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tick {
    /// Fire now for `scheduled` (lateness = now - (scheduled + offset) on the wall clock, ≥ 0).
    Fire {
        /// The slot's wall-clock instant (the run's `LEASECRON_SCHEDULED_TIME`), without the offset.
        scheduled: DateTime<Utc>,
        /// How late the tick is on the wall clock, after the slot's fire time (`scheduled` + offset).
        lateness: Duration,
    },
    /// A slot was missed (stall/suspend/clock jump) and is past its starting deadline: skip it, count it.
    Missed {
        /// The slot's wall-clock instant.
        scheduled: DateTime<Utc>,
        /// How late it would have started, after its fire time.
        lateness: Duration,
    },
}

impl Tick {
    /// The slot this tick is for.
    pub fn scheduled(&self) -> DateTime<Utc> {
        match self {
            Tick::Fire { scheduled, .. } | Tick::Missed { scheduled, .. } => *scheduled,
        }
    }

    /// How late the tick came.
    pub fn lateness(&self) -> Duration {
        match self {
            Tick::Fire { lateness, .. } | Tick::Missed { lateness, .. } => *lateness,
        }
    }
}

/// Yields the slots of one schedule, each at most once and in strictly increasing order.
///
/// After a stall (the wall clock is past more than one slot, or past one by more than
/// [`ON_TIME_TOLERANCE`]), the timer returns one tick, for the **latest** slot at or before now: a
/// [`Tick::Fire`] if its lateness is within the starting deadline, else [`Tick::Missed`]. Earlier missed
/// slots are dropped silently, as a CronJob starts at most one missed run. With no starting deadline, any
/// slot later than the tolerance is `Missed`. The next slot is then computed from that one.
#[derive(Debug)]
pub struct Timer {
    schedule: Schedule,
    starting_deadline: Option<Duration>,
    clock: SharedClock,
    next: Option<DateTime<Utc>>,
    /// How late after its slot each slot fires (the job's jitter offset); zero by default.
    offset: TimeDelta,
    /// The clock's steps, if it reports them: the timer then sleeps until its slot in one piece.
    steps: Option<watch::Receiver<u64>>,
}

// === impl Timer ===

impl Timer {
    /// Starts from `clock.now()`: the first tick is the first fire strictly after now.
    pub fn new(
        schedule: Schedule,
        starting_deadline: Option<Duration>,
        clock: SharedClock,
    ) -> Timer {
        let next = schedule.next_after(clock.now());
        let steps = clock.steps();
        Timer {
            schedule,
            starting_deadline,
            clock,
            next,
            offset: TimeDelta::zero(),
            steps,
        }
    }

    /// Fires every slot `offset` after it (a job's [`jitter`](crate::config::Job::jitter_offset)): a slot
    /// is due at `slot + offset`, and its lateness, the on-time tolerance and the starting deadline are
    /// measured from there; the ticks still carry the nominal slot. The first tick is then for the first
    /// slot whose fire time is after now.
    #[must_use]
    pub fn with_offset(mut self, offset: Duration) -> Timer {
        self.offset = TimeDelta::from_std(offset).unwrap_or(TimeDelta::zero());
        self.next = self.schedule.next_after(self.now());
        self
    }

    /// How late after its slot each slot fires.
    pub fn offset(&self) -> Duration {
        self.offset.to_std().unwrap_or_default()
    }

    /// The schedule this timer follows.
    pub fn schedule(&self) -> &Schedule {
        &self.schedule
    }

    /// The next slot (for /status and metrics): the nominal one, without the offset.
    pub fn next_fire(&self) -> Option<DateTime<Utc>> {
        self.next
    }

    /// The wall clock, moved back by the offset: a slot is due once this reaches it.
    fn now(&self) -> DateTime<Utc> {
        self.clock.now() - self.offset
    }

    /// Sleeps on tokio's timer until the next slot and returns its Tick. Cancel-safe (usable in select!):
    /// the timer's state changes only after the last `.await`, so a dropped call loses no slot.
    /// Returns None when the schedule has no future fire.
    pub async fn next_tick(&mut self) -> Option<Tick> {
        loop {
            let target = self.next?;
            let now = self.now();
            match (target - now).to_std() {
                Ok(wait) if wait > PRECISE_LEAD => self.sleep(wait - PRECISE_LEAD).await,
                Ok(wait) if !wait.is_zero() => approach(wait).await,
                _ => return Some(self.take_due(target, now)),
            }
        }
    }

    /// Sleeps until `lead` before the next slot's fire time (returns at once if that is past) and returns
    /// the slot, without consuming it: [`Timer::next_tick`] still hands it out when it is due. Cancel-safe.
    /// Returns None when the schedule has no future fire.
    pub async fn ahead(&mut self, lead: Duration) -> Option<DateTime<Utc>> {
        loop {
            let target = self.next?;
            match (target - self.now()).to_std() {
                Ok(wait) if wait > lead => self.sleep(wait - lead).await,
                _ => return Some(target),
            }
        }
    }

    /// Sleeps `wait` on tokio's clock, or until the clock reports a step; without steps, at most
    /// [`MAX_SLEEP`]. Cancel-safe.
    async fn sleep(&mut self, wait: Duration) {
        let Some(steps) = &mut self.steps else {
            tokio::time::sleep_until(Instant::now() + wait.min(MAX_SLEEP)).await;
            return;
        };
        let deadline = Instant::now() + wait.min(MAX_SLEEP_WITH_STEPS);
        tokio::select! {
            () = tokio::time::sleep_until(deadline) => {}
            changed = steps.changed() => if changed.is_err() {
                // The feed closed: re-read the clock periodically from now on.
                self.steps = None;
            },
        }
    }

    /// Consumes every slot up to `now` (`target` being the first) and returns the tick for the latest.
    fn take_due(&mut self, target: DateTime<Utc>, now: DateTime<Utc>) -> Tick {
        let scheduled = match self.schedule.next_after(target) {
            Some(following) if following <= now => self
                .schedule
                .latest_at_or_before(now)
                .map_or(following, |latest| latest.max(following)),
            _ => target,
        };
        self.next = self.schedule.next_after(scheduled);
        let lateness = (now - scheduled).to_std().unwrap_or(Duration::ZERO);
        let within_deadline = self
            .starting_deadline
            .is_some_and(|deadline| lateness <= deadline);
        if lateness <= ON_TIME_TOLERANCE || within_deadline {
            Tick::Fire {
                scheduled,
                lateness,
            }
        } else {
            Tick::Missed {
                scheduled,
                lateness,
            }
        }
    }
}

/// The last `wait` (at most [`PRECISE_LEAD`]) before a slot: yield once, so the caller re-reads the wall
/// clock on its next turn. Under a paused tokio clock (tests) yielding cannot move time, so there the
/// remainder is slept instead.
async fn approach(wait: Duration) {
    let before = Instant::now();
    tokio::task::yield_now().await;
    if Instant::now() == before {
        tokio::time::sleep_until(before + wait).await;
    }
}
