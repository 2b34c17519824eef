//! Signals: the first SIGTERM or SIGINT starts a clean shutdown, a second one forces it.
//!
//! A clean shutdown stops the timers, cancels the runs with the usual escalation (SIGTERM to each process
//! group, SIGKILL after its grace), waits for them, releases the lease and exits 0. An operator who sends a
//! second signal does not want to wait: every process group gets SIGKILL and the process exits at once
//! (with [`FORCED_EXIT_CODE`]), leaving the lease to expire.

use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;

/// Exit code of a shutdown forced by a second signal.
pub const FORCED_EXIT_CODE: i32 = 1;

/// Errors installing the signal handlers.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The handler could not be installed.
    #[error("cannot install the {signal} handler: {source}")]
    Install {
        /// The signal's name.
        signal: &'static str,
        /// The OS error.
        source: std::io::Error,
    },
}

/// Waits for SIGTERM or SIGINT.
pub struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

// === impl Signals ===

impl Signals {
    /// Installs the handlers. Call this early: from then on the signals no longer kill the process.
    pub fn install() -> Result<Self, Error> {
        let term = signal(SignalKind::terminate()).map_err(|source| Error::Install {
            signal: "SIGTERM",
            source,
        })?;
        let int = signal(SignalKind::interrupt()).map_err(|source| Error::Install {
            signal: "SIGINT",
            source,
        })?;
        Ok(Self { term, int })
    }

    /// Completes at the next SIGTERM or SIGINT and returns its name.
    pub async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
        }
    }

    /// Cancels `shutdown` at the first signal; at the second, runs `force` (which should kill every run and
    /// exit the process).
    pub async fn watch(mut self, shutdown: CancellationToken, force: impl FnOnce()) {
        let first = self.recv().await;
        tracing::info!(
            signal = first,
            "shutting down: stopping runs, then releasing the lease (send it again to force)"
        );
        shutdown.cancel();
        let second = self.recv().await;
        tracing::warn!(
            signal = second,
            "second signal: killing every run and exiting now"
        );
        force();
    }
}
