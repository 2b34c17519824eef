//! The commands: `run`, `validate` and `next`, each in its own module, the operator commands (`trigger`,
//! `suspend`, `resume`, `backfill`, `status`, `history`) in [`operate`], and what they share — the
//! [`Error`] every command returns with its exit code, and the lease [`Timings`].
//!
//! `main.rs` parses the flags and calls a command; nothing else knows about the CLI. Exit codes: 0
//! success, 2 bad input (flags, the jobs, a name, a permanent answer of the API: nothing was touched), 1 a
//! failure at run time (retrying later may help).

use std::path::PathBuf;
use std::time::Duration;

use crate::config::{self, LoadOptions};
use crate::{app, backend, election, http, run_state, shutdown, signals, supervisor};

pub mod convert;
pub mod next;
pub mod operate;
pub mod run;
pub mod validate;

/// Exit code for a usage or configuration error.
pub(crate) const EXIT_USAGE: i32 = 2;
/// Exit code for a failure at run time.
pub const EXIT_FAILURE: i32 = 1;

/// Errors of the commands. [`Error::exit_code`] maps them to the CLI's exit codes.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The backend could not be opened or connected at start.
    #[error(transparent)]
    Backend(#[from] backend::Error),
    /// The replica failed while it ran.
    #[error(transparent)]
    App(#[from] app::Error),
    /// A jobs file is unreadable or invalid.
    #[error("{0}")]
    Config(#[from] config::Error),
    /// The lease timings are inconsistent.
    #[error("{0}")]
    Election(#[from] election::Error),
    /// The lease timings leave no time for any `terminationGrace`: RD ≥ LD − margin.
    #[error(
        "--renew-deadline ({}) leaves no time for the jobs' terminationGrace: renew deadline + grace must \
         stay within --lease-duration ({}) minus its safety margin max(1s, lease duration / 10) ({}); {advice}",
        humantime::format_duration(*.renew_deadline),
        humantime::format_duration(*.lease_duration),
        humantime::format_duration(*.margin)
    )]
    NoRoomForGrace {
        /// LD.
        lease_duration: Duration,
        /// RD.
        renew_deadline: Duration,
        /// max(1 s, LD/10).
        margin: Duration,
        /// Which flags to change, and to what, for the default grace.
        advice: String,
    },
    /// `next --lease-file PATH` names no lease file and no run state.
    #[error(
        "--lease-file {}: there is no run state at {} (and no lease file at {}): check the path; the run \
         state is written beside the lease file once a leader has run a job",
        lease.display(),
        state.display(),
        lease.display()
    )]
    NoRunState {
        /// The lease file given.
        lease: PathBuf,
        /// Where its run state would be.
        state: PathBuf,
    },
    /// `help COMMAND` names no command.
    #[error(
        "help {0}: no such command (the commands are run, validate, convert, next, trigger, suspend, resume, \
         backfill, status, history and help)"
    )]
    UnknownCommand(String),
    /// `next --job NAME` names no job.
    #[error("--job {0}: no such job in the file")]
    UnknownJob(String),
    /// `convert` could not convert this many CronJobs or inputs; each was named on stderr before, and the
    /// others were printed.
    #[error("{0} CronJob(s) or input(s) not converted (see above)")]
    NotConverted(usize),
    /// The HTTP endpoint failed.
    #[error("{0}")]
    Http(#[from] http::Error),
    /// Signal handlers could not be installed.
    #[error("{0}")]
    Signals(#[from] shutdown::Error),
    /// The handlers of the signals that do not shut down could not be installed.
    #[error("{0}")]
    OtherSignals(#[from] signals::Error),
    /// `validate` found problems in one or more files.
    #[error("{}", display_all(.0))]
    Invalid(Vec<config::Error>),
    /// The run state could not be read.
    #[error("{0}")]
    State(#[from] run_state::Error),
    /// A task of ours failed.
    #[error("internal error: {0}")]
    Internal(String),
    /// An operator command failed (boxed: it is the largest of these errors).
    #[error(transparent)]
    Operate(Box<operate::Error>),
    /// The run supervisor could not be started.
    #[error("{0}")]
    Supervisor(#[from] supervisor::Error),
    /// The run supervisor died while leasecron ran (killed by hand): the term was ended and the lease
    /// released; leasecron exits to be restarted with a new one rather than run without.
    #[error(
        "the run supervisor (pid {pid}) died: its runs were ended, the lease released; exiting so that a \
         restart brings a new one"
    )]
    SupervisorLost {
        /// Its pid.
        pid: u32,
    },
}

impl From<operate::Error> for Error {
    fn from(error: operate::Error) -> Self {
        Error::Operate(Box::new(error))
    }
}

fn display_all(errors: &[config::Error]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

// === impl Error ===

impl Error {
    /// True if the message is a list of `FILE:LINE:COL: message` diagnostics, to print as they are.
    pub fn is_diagnostics(&self) -> bool {
        matches!(
            self,
            Error::Invalid(_)
                | Error::Config(config::Error::Invalid(_))
                | Error::Backend(backend::Error::Config(config::Error::Invalid(_)))
        ) || matches!(self, Error::Operate(e) if e.is_diagnostics())
    }

    /// The process exit code for this error: 2 for bad input, 1 for failures at run time.
    pub fn exit_code(&self) -> i32 {
        let usage = match self {
            Error::Backend(e) => e.is_usage(),
            Error::App(e) => e.is_usage(),
            Error::Election(e) => e.is_usage(),
            Error::Operate(e) => e.is_usage(),
            Error::Config(_)
            | Error::Invalid(_)
            | Error::UnknownCommand(_)
            | Error::NoRoomForGrace { .. }
            | Error::NoRunState { .. }
            | Error::UnknownJob(_)
            | Error::NotConverted(_)
            | Error::Http(http::Error::Bind { .. }) => true,
            _ => false,
        };
        if usage {
            EXIT_USAGE
        } else {
            EXIT_FAILURE
        }
    }
}

/// The lease timings shared by `run` and `validate` (which checks `terminationGrace` against them).
#[derive(Debug, Clone, Copy)]
pub struct Timings {
    /// LD: how long a lease is valid after its holder's last observed renew.
    pub lease_duration: Duration,
    /// RD: how long the leader keeps its term without a successful renew.
    pub renew_deadline: Duration,
    /// RP: the interval between renews and between a follower's retries.
    pub retry_period: Duration,
}

impl Default for Timings {
    fn default() -> Self {
        Self {
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

impl Timings {
    pub(crate) fn election_config(
        &self,
        identity: String,
        max_termination_grace: Duration,
    ) -> election::Config {
        election::Config {
            identity,
            lease_duration: self.lease_duration,
            renew_deadline: self.renew_deadline,
            retry_period: self.retry_period,
            max_termination_grace,
        }
    }

    /// Checks the timings on their own and returns the jobs-file bound they imply: a `terminationGrace`
    /// of at most LD − margin − RD (docs/design.md §2).
    ///
    /// Timings that leave no time for any grace (RD ≥ LD − margin) are [`Error::NoRoomForGrace`], which
    /// says what would fit the default grace, rather than a check of "the largest grace" that no job has
    /// been read for yet.
    pub fn load_options(&self) -> Result<LoadOptions, Error> {
        let config = self.election_config("-".to_owned(), Duration::ZERO);
        match config.validate() {
            Ok(()) => Ok(config.load_options()),
            Err(election::Error::LeaseTooShort { .. }) => {
                Err(self.no_room_for_grace(config.margin()))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// [`Error::NoRoomForGrace`], with the LD and RD that would fit the default grace.
    fn no_room_for_grace(&self, margin: Duration) -> Error {
        let grace = config::DEFAULT_TERMINATION_GRACE;
        let needed = self.renew_deadline.saturating_add(grace);
        // LD ≥ RD + G + max(1 s, LD/10): RD + G + 1 s up to 10 s, else (RD + G) × 10/9; in whole seconds.
        let with_min_margin = needed.saturating_add(election::MIN_MARGIN);
        let lease_duration_needed = if with_min_margin <= election::MIN_MARGIN * 10 {
            with_min_margin
        } else {
            needed.saturating_mul(10) / 9
        };
        let lease_duration_needed = Duration::from_secs(
            lease_duration_needed.as_secs() + u64::from(lease_duration_needed.subsec_nanos() > 0),
        );
        let format = humantime::format_duration;
        let raise = format!(
            "raise --lease-duration to at least {}",
            format(lease_duration_needed)
        );
        let renew_deadline_allowed = self
            .lease_duration
            .saturating_sub(margin)
            .saturating_sub(grace);
        // client-go's rule, RD ≥ 1.2 × RP, still has to hold.
        let lower = (renew_deadline_allowed.as_nanos() * 5 >= self.retry_period.as_nanos() * 6)
            .then(|| {
                format!(
                    " or lower --renew-deadline to at most {}",
                    format(renew_deadline_allowed)
                )
            });
        Error::NoRoomForGrace {
            lease_duration: self.lease_duration,
            renew_deadline: self.renew_deadline,
            margin,
            advice: format!(
                "for the default grace of {}, {raise}{}",
                format(grace),
                lower.unwrap_or_default()
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timings_that_leave_no_grace_say_what_fits_the_default_grace() {
        let timings = Timings {
            lease_duration: Duration::from_secs(10),
            renew_deadline: Duration::from_millis(9500),
            retry_period: Duration::from_secs(2),
        };
        let error = timings.load_options().expect_err("RD > LD − margin");
        assert_eq!(
            error.to_string(),
            "--renew-deadline (9s 500ms) leaves no time for the jobs' terminationGrace: renew deadline + \
             grace must stay within --lease-duration (10s) minus its safety margin max(1s, lease \
             duration / 10) (1s); for the default grace of 3s, raise --lease-duration to at least 14s or \
             lower --renew-deadline to at most 6s"
        );
        assert_eq!(error.exit_code(), EXIT_USAGE);
        // Either suggestion fits the default grace.
        for fixed in [
            Timings {
                lease_duration: Duration::from_secs(14),
                ..timings
            },
            Timings {
                renew_deadline: Duration::from_secs(6),
                ..timings
            },
        ] {
            let bound = fixed.load_options().expect("valid").max_termination_grace;
            assert!(
                bound >= config::DEFAULT_TERMINATION_GRACE,
                "{fixed:?}: {bound:?}"
            );
        }
        // No lower renew deadline fits when the lease is too short for the grace and the retry period.
        let short = Timings {
            lease_duration: Duration::from_secs(4),
            renew_deadline: Duration::from_millis(3500),
            retry_period: Duration::from_secs(2),
        };
        let text = short.load_options().expect_err("no room").to_string();
        assert!(
            text.ends_with("for the default grace of 3s, raise --lease-duration to at least 8s"),
            "{text}"
        );
    }
}
