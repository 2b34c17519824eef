//! The signals other than SIGTERM and SIGINT (which are [`crate::shutdown`]'s): none of them ends `run`.
//!
//! | signal | what `run` does |
//! |---|---|
//! | SIGHUP | re-reads the jobs now ([`Reread`]): the file, or the ConfigMap with a GET |
//! | SIGUSR1, SIGUSR2, SIGALRM | logs that it is ignored |
//! | SIGPIPE | ignored by the Rust runtime before `main`: a write to a closed pipe fails with `EPIPE` |
//!
//! Their default action would end the process at once, without ending the runs or releasing the lease
//! (`kill -HUP`, the usual "reload" of a daemon, would have cost a failover). [`Handlers::install`] catches
//! them with tokio's handlers, early in `run`, before the lease is touched. A *handled* disposition is reset
//! to the default when a job's process is exec'd, so the jobs get the usual signal behaviour; an *ignored*
//! one (`SIG_IGN`) would be inherited, which is why these are caught rather than ignored. SIGPIPE is the
//! exception the Rust runtime makes, and `std::process::Command` restores its default in every child.
//!
//! Signals are delivered to the process, not queued per sending: several of one kind that arrive before
//! the task takes them count as one.

use tokio::signal::unix::{signal, Signal, SignalKind};

use crate::reload::Reread;

/// Errors installing the handlers.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A handler could not be installed.
    #[error("cannot install the {signal} handler: {source}")]
    Install {
        /// The signal's name.
        signal: &'static str,
        /// The OS error.
        source: std::io::Error,
    },
}

/// The handlers of SIGHUP, SIGUSR1, SIGUSR2 and SIGALRM, and what SIGHUP re-reads.
#[derive(Debug)]
pub struct Handlers {
    hangup: Signal,
    user1: Signal,
    user2: Signal,
    alarm: Signal,
    reread: Reread,
    jobs: String,
}

// === impl Handlers ===

impl Handlers {
    /// Installs the handlers: from then on these signals no longer end the process. A SIGHUP asks `reread`
    /// to re-read the jobs, which `jobs` names in the log ("the jobs file PATH").
    pub fn install(reread: Reread, jobs: String) -> Result<Handlers, Error> {
        let install = |kind: SignalKind, name: &'static str| {
            signal(kind).map_err(|source| Error::Install {
                signal: name,
                source,
            })
        };
        Ok(Handlers {
            hangup: install(SignalKind::hangup(), "SIGHUP")?,
            user1: install(SignalKind::user_defined1(), "SIGUSR1")?,
            user2: install(SignalKind::user_defined2(), "SIGUSR2")?,
            alarm: install(SignalKind::alarm(), "SIGALRM")?,
            reread,
            jobs,
        })
    }

    /// Acts on each signal as it comes, for as long as the runtime runs.
    pub async fn run(mut self) {
        loop {
            let ignored = tokio::select! {
                Some(()) = self.hangup.recv() => {
                    tracing::info!(signal = "SIGHUP", "SIGHUP: re-reading {}", self.jobs);
                    self.reread.request();
                    continue;
                }
                Some(()) = self.user1.recv() => "SIGUSR1",
                Some(()) = self.user2.recv() => "SIGUSR2",
                Some(()) = self.alarm.recv() => "SIGALRM",
                else => return,
            };
            tracing::info!(
                signal = ignored,
                "{ignored}: ignored (leasecron gives it no meaning; see the README's Signals section)"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::signal::{raise, Signal as Sig};
    use std::time::Duration;

    #[tokio::test]
    async fn sighup_asks_for_a_reread_and_the_others_do_not_end_the_process() {
        let reread = Reread::new();
        let handlers =
            Handlers::install(reread.clone(), "the jobs file x".to_owned()).expect("installed");
        let task = tokio::spawn(handlers.run());
        // Each would end this test process with its default action.
        for signal in [Sig::SIGUSR1, Sig::SIGUSR2, Sig::SIGALRM, Sig::SIGHUP] {
            raise(signal).expect("raise");
        }
        tokio::time::timeout(Duration::from_secs(30), reread.requested())
            .await
            .expect("SIGHUP asked for a re-read");
        assert!(!task.is_finished());
        task.abort();
    }
}
