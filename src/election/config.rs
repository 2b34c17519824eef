//! The elector's timings and identity, and the rules that make them safe (docs/design.md §2.4).

use std::time::Duration;

use super::Error;
use crate::config::LoadOptions;

/// Default `--lease-duration`.
pub const DEFAULT_LEASE_DURATION: Duration = Duration::from_secs(15);
/// Default `--renew-deadline`.
pub const DEFAULT_RENEW_DEADLINE: Duration = Duration::from_secs(10);
/// Default `--retry-period`.
pub const DEFAULT_RETRY_PERIOD: Duration = Duration::from_secs(2);

/// The smallest safety margin between the end of a term's runs and the earliest take-over.
pub const MIN_MARGIN: Duration = Duration::from_secs(1);
/// The margin is at least `LD / MARGIN_DIVISOR`.
const MARGIN_DIVISOR: u32 = 10;
/// client-go's jitter rule, RD ≥ 1.2 × RP, as the ratio `RD_RATIO_NUM / RD_RATIO_DEN`.
const RD_RATIO_NUM: u128 = 6;
const RD_RATIO_DEN: u128 = 5;

/// How this replica takes part in the election.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// This replica's name in the lease record (`--identity`). Must be unique among replicas.
    pub identity: String,
    /// LD (`--lease-duration`, default 15 s): how long a follower waits, after it first observed the
    /// current record version, before it may take the lease over.
    pub lease_duration: Duration,
    /// RD (`--renew-deadline`, default 10 s): a term ends this long after the last successful renew was
    /// sent.
    pub renew_deadline: Duration,
    /// RP (`--retry-period`, default 2 s): how often the leader renews and a follower retries or polls.
    pub retry_period: Duration,
    /// G: the largest `terminationGrace` of any job, i.e. how long the runs of an ended term may still be
    /// alive.
    pub max_termination_grace: Duration,
}

impl Config {
    /// The default timings for `identity`, with no job grace.
    pub fn with_identity(identity: impl Into<String>) -> Self {
        Config {
            identity: identity.into(),
            lease_duration: DEFAULT_LEASE_DURATION,
            renew_deadline: DEFAULT_RENEW_DEADLINE,
            retry_period: DEFAULT_RETRY_PERIOD,
            max_termination_grace: Duration::ZERO,
        }
    }

    /// Sets G, the largest job termination grace.
    #[must_use]
    pub fn with_max_termination_grace(mut self, grace: Duration) -> Self {
        self.max_termination_grace = grace;
        self
    }

    /// The safety margin max(1 s, LD/10) required between RD + G and LD.
    pub fn margin(&self) -> Duration {
        (self.lease_duration / MARGIN_DIVISOR).max(MIN_MARGIN)
    }

    /// The largest termination grace these timings allow: LD − margin − RD, zero if they leave no room.
    pub fn grace_bound(&self) -> Duration {
        self.lease_duration
            .saturating_sub(self.margin())
            .saturating_sub(self.renew_deadline)
    }

    /// The jobs-file bound these timings imply: a `terminationGrace` of at most [`Config::grace_bound`].
    pub fn load_options(&self) -> LoadOptions {
        LoadOptions {
            max_termination_grace: self.grace_bound(),
        }
    }

    /// Checks the rules that make two overlapping terms impossible: a non-empty identity, durations
    /// greater than zero, RD ≥ 1.2 × RP, and RD + G ≤ LD − margin.
    pub fn validate(&self) -> Result<(), Error> {
        if self.identity.trim().is_empty() {
            return Err(Error::EmptyIdentity);
        }
        for (flag, value) in [
            ("--lease-duration", self.lease_duration),
            ("--renew-deadline", self.renew_deadline),
            ("--retry-period", self.retry_period),
        ] {
            if value.is_zero() {
                return Err(Error::ZeroDuration { flag });
            }
        }
        if i32::try_from(self.lease_duration.as_secs()).is_err() {
            return Err(Error::LeaseDurationTooLong {
                lease_duration: self.lease_duration,
            });
        }
        if self.renew_deadline.as_nanos() * RD_RATIO_DEN
            < self.retry_period.as_nanos() * RD_RATIO_NUM
        {
            return Err(Error::RenewDeadlineTooShort {
                renew_deadline: self.renew_deadline,
                retry_period: self.retry_period,
            });
        }
        let needed = self
            .renew_deadline
            .saturating_add(self.max_termination_grace);
        if needed > self.lease_duration.saturating_sub(self.margin()) {
            return Err(Error::LeaseTooShort {
                lease_duration: self.lease_duration,
                renew_deadline: self.renew_deadline,
                grace: self.max_termination_grace,
                margin: self.margin(),
            });
        }
        Ok(())
    }

    /// LD in whole seconds, rounded up, as the record's `leaseDurationSeconds`.
    pub(crate) fn lease_duration_seconds(&self) -> i32 {
        let secs =
            self.lease_duration.as_secs() + u64::from(self.lease_duration.subsec_nanos() > 0);
        i32::try_from(secs).unwrap_or(i32::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_are_valid_with_the_default_job_grace() {
        let config = Config::with_identity("a").with_max_termination_grace(Duration::from_secs(3));
        assert_eq!(config.validate().map_err(|e| e.to_string()), Ok(()));
        assert_eq!(config.margin(), Duration::from_millis(1500));
    }

    #[test]
    fn the_default_grace_bound_follows_the_default_lease_timings() {
        assert_eq!(
            Config::with_identity("default").load_options(),
            LoadOptions::default()
        );
        assert_eq!(
            LoadOptions::default().max_termination_grace,
            Duration::from_millis(3500)
        );
        let timings = |ld, rd| Config {
            lease_duration: Duration::from_secs(ld),
            renew_deadline: Duration::from_secs(rd),
            ..Config::with_identity("test")
        };
        assert_eq!(
            timings(60, 40).load_options().max_termination_grace,
            Duration::from_secs(14)
        );
        assert_eq!(
            timings(5, 5).load_options().max_termination_grace,
            Duration::ZERO
        );
    }

    #[test]
    fn the_margin_is_at_least_one_second() {
        let mut config = Config::with_identity("a");
        config.lease_duration = Duration::from_secs(4);
        assert_eq!(config.margin(), MIN_MARGIN);
    }

    #[test]
    fn lease_duration_seconds_rounds_up() {
        let mut config = Config::with_identity("a");
        config.lease_duration = Duration::from_millis(15_001);
        assert_eq!(config.lease_duration_seconds(), 16);
        config.lease_duration = Duration::from_secs(15);
        assert_eq!(config.lease_duration_seconds(), 15);
    }
}
