//! The HTTP endpoint: `/healthz` and `/readyz` (metrics and `/status` join in a later issue).
//!
//! `/healthz` fails only when the process is wedged: a leader whose term is past its deadline by more than
//! [`WEDGED_AFTER`] and still not ended means the elector's deadline timer is not running, and a restart is
//! the right cure. `/readyz` is ready once the jobs file is loaded and the lease store has answered once.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::term::Leadership;

/// How long past its deadline a term may stay un-ended before the process counts as wedged.
pub const WEDGED_AFTER: Duration = Duration::from_secs(5);

/// Errors of the HTTP endpoint.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The address could not be bound.
    #[error("--http-addr {addr}: cannot listen: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The server failed.
    #[error("HTTP server failed: {0}")]
    Serve(std::io::Error),
}

/// What the endpoints read.
#[derive(Debug, Clone)]
pub struct Health {
    leadership: watch::Receiver<Leadership>,
    ready: Arc<AtomicBool>,
}

// === impl Health ===

impl Health {
    /// Health over the elector's leadership channel; not ready until [`Health::set_ready`].
    pub fn new(leadership: watch::Receiver<Leadership>) -> Self {
        Self {
            leadership,
            ready: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Marks the replica ready (config loaded, lease store answered).
    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::Release);
    }

    /// True unless this replica leads a term that outlived its deadline without being ended.
    pub fn is_healthy(&self) -> bool {
        match &*self.leadership.borrow() {
            Leadership::Leader { term } => {
                term.is_ended() || tokio::time::Instant::now() < term.deadline() + WEDGED_AFTER
            }
            _ => true,
        }
    }

    fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }
}

/// Binds `addr` (fails fast, before the lease is touched).
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, Error> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Bind { addr, source })
}

/// Serves the endpoints on `listener` until `stop` is cancelled.
pub async fn serve(
    listener: TcpListener,
    health: Health,
    stop: CancellationToken,
) -> Result<(), Error> {
    let app = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(health);
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { stop.cancelled().await })
        .await
        .map_err(Error::Serve)
}

async fn healthz(State(health): State<Health>) -> (StatusCode, &'static str) {
    if health.is_healthy() {
        (StatusCode::OK, "ok\n")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "wedged: term past its deadline and not ended\n",
        )
    }
}

async fn readyz(State(health): State<Health>) -> (StatusCode, &'static str) {
    if health.is_ready() {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::term::{FencingToken, Term};
    use chrono::Utc;
    use tokio::time::Instant;

    #[tokio::test(start_paused = true)]
    async fn a_leader_whose_term_outlived_its_deadline_is_wedged() {
        let handle = Term::begin(
            FencingToken(1),
            Utc::now(),
            Instant::now() + Duration::from_secs(10),
        );
        let (_tx, rx) = watch::channel(Leadership::Leader {
            term: handle.term().clone(),
        });
        let health = Health::new(rx);
        assert!(health.is_healthy());
        tokio::time::advance(Duration::from_secs(10) + WEDGED_AFTER - Duration::from_millis(1))
            .await;
        assert!(
            health.is_healthy(),
            "past the deadline, but within the slack the elector needs"
        );
        tokio::time::advance(Duration::from_millis(2)).await;
        assert!(
            !health.is_healthy(),
            "the deadline timer did not end the term"
        );
        handle.end().await;
        assert!(health.is_healthy(), "an ended term is not wedged");
    }

    #[tokio::test]
    async fn followers_are_healthy_and_readiness_is_explicit() {
        let (_tx, rx) = watch::channel(Leadership::Follower { holder: None });
        let health = Health::new(rx);
        assert!(health.is_healthy());
        assert!(!health.is_ready());
        health.set_ready();
        assert!(health.is_ready());
    }
}
