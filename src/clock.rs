//! The wall clock, injectable.
//!
//! Schedules are wall-clock times (a cron expression in a zone), but every timer and every safety decision
//! runs on tokio's monotonic clock. [`WallClock`] is the one place the two meet: production reads the
//! system clock; tests use [`PausedClock`], a wall clock that advances with tokio's (paused) time, so a
//! test can step through a day of schedules in microseconds.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio::time::Instant;

/// Reads the current wall-clock time.
pub trait WallClock: Send + Sync + std::fmt::Debug {
    /// The current time in UTC.
    fn now(&self) -> DateTime<Utc>;
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
