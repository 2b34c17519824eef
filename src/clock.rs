//! The wall clock, injectable.
//!
//! Schedules are wall-clock times (a cron expression in a zone), but every timer and every safety decision
//! runs on tokio's monotonic clock. [`WallClock`] is the one place the two meet: production reads the
//! system clock; tests use [`PausedClock`], a wall clock that advances with tokio's (paused) time, so a
//! test can step through a day of schedules in microseconds.
//!
//! # Steps
//!
//! A timer converts a wall-clock slot into a monotonic deadline once, and that deadline stays right for as
//! long as the two clocks keep their offset. They keep it through NTP's slewing (it adjusts both alike);
//! they lose it when the wall clock is stepped (`clock_settime`, a time daemon's step, a leap second) and
//! across a suspend (the monotonic clock stops). [`SystemClock::steps`] reports each of these from one
//! `timerfd` armed with `TFD_TIMER_CANCEL_ON_SET`, which the kernel cancels on every such change: a thread
//! blocked on it, started on first use, wakes only then. So a timer sleeps until its slot in one piece and
//! wakes early only when the clock was stepped, instead of re-reading the wall clock every 30 s
//! ([`crate::schedule::MAX_SLEEP`], what a clock without step reports still does).

use std::sync::{Arc, OnceLock};

use chrono::{DateTime, Utc};
use nix::sys::time::TimeSpec;
use nix::sys::timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags};
use tokio::sync::watch;
use tokio::time::Instant;

/// Reads the current wall-clock time.
pub trait WallClock: Send + Sync + std::fmt::Debug {
    /// The current time in UTC.
    fn now(&self) -> DateTime<Utc>;

    /// A feed that changes each time this clock is stepped against the monotonic clock (see the
    /// [module documentation](self)), or `None` if this clock reports no steps: its readers then re-read
    /// it every [`crate::schedule::MAX_SLEEP`]. A closed feed means the same.
    fn steps(&self) -> Option<watch::Receiver<u64>> {
        None
    }
}

/// A shared wall clock.
pub type SharedClock = Arc<dyn WallClock>;

/// The system's wall clock (`CLOCK_REALTIME`).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl WallClock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }

    fn steps(&self) -> Option<watch::Receiver<u64>> {
        let steps = STEPS.get_or_init(watch_steps).as_ref()?;
        let mut steps = steps.clone();
        // Only steps from now on.
        steps.mark_unchanged();
        Some(steps)
    }
}

/// The process's feed of wall-clock steps: `None` if the kernel cannot report them.
static STEPS: OnceLock<Option<watch::Receiver<u64>>> = OnceLock::new();

/// How far ahead the step detector's timer is armed: it is never meant to expire, only to be cancelled.
const NEVER: TimeSpec = TimeSpec::new(1 << 33, 0); // the year 2242

/// Starts the thread that counts wall-clock steps; `None` (logged) if the `timerfd` cannot be set up.
fn watch_steps() -> Option<watch::Receiver<u64>> {
    let arm = |timer: &TimerFd| {
        timer.set(
            Expiration::OneShot(NEVER),
            TimerSetTimeFlags::TFD_TIMER_ABSTIME | TimerSetTimeFlags::TFD_TIMER_CANCEL_ON_SET,
        )
    };
    let timer = match TimerFd::new(ClockId::CLOCK_REALTIME, TimerFlags::TFD_CLOEXEC)
        .and_then(|timer| arm(&timer).map(|()| timer))
    {
        Ok(timer) => timer,
        Err(error) => {
            tracing::warn!(%error, "cannot watch the wall clock for steps (timerfd); timers re-read it every 30 s");
            return None;
        }
    };
    let (sender, steps) = watch::channel(0_u64);
    let spawned = std::thread::Builder::new()
        .name("leasecron-clock".into())
        .stack_size(64 * 1024)
        .spawn(move || {
            // `wait` returns when the timer is cancelled by a step (it never expires). The thread ends,
            // and the feed closes, only if the timer fails; readers then re-read the clock periodically.
            while timer.wait().is_ok() && arm(&timer).is_ok() {
                sender.send_modify(|count| *count = count.wrapping_add(1));
            }
        });
    match spawned {
        Ok(_) => Some(steps),
        Err(error) => {
            tracing::warn!(%error, "cannot start the wall clock's step watch; timers re-read it every 30 s");
            None
        }
    }
}

/// Sleeps on tokio's clock until `at`, or forever if `None`: for a `select!` branch that may have no
/// deadline.
pub(crate) async fn sleep_until_some(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// A wall clock that starts at a given time and advances exactly as tokio's clock does.
///
/// Under `#[tokio::test(start_paused = true)]` it moves only when the test (or auto-advance) moves tokio's
/// clock, which makes timing logic deterministic.
#[derive(Debug, Clone)]
pub struct PausedClock {
    wall_at_start: DateTime<Utc>,
    instant_at_start: Instant,
}

impl PausedClock {
    /// A clock that reads `wall` now and moves with `tokio::time`.
    pub fn starting_at(wall: DateTime<Utc>) -> Self {
        Self {
            wall_at_start: wall,
            instant_at_start: Instant::now(),
        }
    }
}

impl WallClock for PausedClock {
    fn now(&self) -> DateTime<Utc> {
        let elapsed = Instant::now().saturating_duration_since(self.instant_at_start);
        self.wall_at_start + chrono::TimeDelta::from_std(elapsed).unwrap_or(chrono::TimeDelta::MAX)
    }
}
