//! The Kubernetes backend: everything leasecron reads and writes through the API server, and the toolkit
//! those resources share.
//!
//! # Resources
//!
//! - [`lease`]: the `coordination.k8s.io/v1` Lease the replicas elect through (a [`LeaseStore`]).
//! - [`run_state`]: the run state, in the ConfigMap `<lease>-state` beside the Lease.
//! - [`jobs_configmap`]: the jobs file, read from a ConfigMap and watched through the API.
//! - [`controls`]: the operators' controls, in the ConfigMap `<lease>-controls` beside the Lease, and the
//!   replicas' feed of it.
//! - [`events`]: Kubernetes Events about the Lease and the runs.
//! - [`batch`]: the batch/v1 Jobs of `executor: kubernetes` jobs, and a cache of them kept by a watch.
//!
//! # Toolkit
//!
//! - [`client`] builds a client with kube's retry layer off, and [`infer_config`] finds its configuration:
//!   every resource bounds and retries its own requests, so no request outlives the caller's deadline.
//! - `Error` is one failed request, as `bounded_request` sorts it: an error status, no answer in time, an
//!   unreadable answer, or no connection. Each resource names it in its own error type, with the object
//!   and the verb and in its own words. Retrying later may help with any of them except an error status
//!   that `lease_store::is_transient_status` rejects (400, 401, 403, 404, 409, 422, ...).
//! - `access` asks the API server at start which verbs this replica may not use on an object
//!   (`SelfSubjectAccessReview`), so a missing RBAC rule is a clear error before anything runs.
//! - [`names`] checks object and namespace names (DNS-1123), as the API server would.
//! - `config_map` reads the text under one key of a ConfigMap (or says which keys there are), and makes
//!   the requests about one ConfigMap by name (bounded, their failures sorted alike), for the jobs
//!   ConfigMap, the run state and the controls.
//! - `watch` watches one object by name (bookmarks, `410 Gone`, an idle limit), for the Lease's change
//!   feed, the jobs ConfigMap and the controls ConfigMap.
//! - The HTTP statuses the resources tell apart are named here once (`FORBIDDEN`, `CONFLICT`, ...), with
//!   `lease_store::is_transient_status`.
//!
//! [`LeaseStore`]: crate::lease_store::LeaseStore

use std::future::Future;
use std::time::Duration;

pub(crate) mod access;
pub mod batch;
pub(crate) mod config_map;
pub mod controls;
pub mod events;
pub mod jobs_configmap;
pub mod lease;
pub mod names;
pub mod run_state;
pub(crate) mod watch;

/// HTTP 401: the API server did not accept the credentials.
pub(crate) const UNAUTHORIZED: u16 = 401;
/// HTTP 403: an RBAC rule is missing.
pub(crate) const FORBIDDEN: u16 = 403;
/// HTTP 404: no such object (or no such API, or namespace).
pub(crate) const NOT_FOUND: u16 = 404;
/// HTTP 409: `AlreadyExists` on create, `Conflict` on update.
pub(crate) const CONFLICT: u16 = 409;
/// HTTP 410: a watch's resourceVersion is too old.
pub(crate) const GONE: u16 = 410;

/// A failed request to the API server, before the resource that made it names it in its own error type
/// (with the object and the verb).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum Error {
    /// The API server answered with an error status (retrying may help only for
    /// [`is_transient_status`](crate::lease_store::is_transient_status)). Every other variant may pass if retried.
    #[error("HTTP {code} {reason}: {message}")]
    Status {
        /// The HTTP status code.
        code: u16,
        /// The Status reason (`InternalError`, `NotFound`, ...), if any.
        reason: String,
        /// The API server's message.
        message: String,
    },
    /// No answer within the request's limit.
    #[error("no answer within {}", humantime::format_duration(*.after))]
    Timeout {
        /// The limit that passed.
        after: Duration,
    },
    /// An open watch delivered nothing (no event, no bookmark, no end) for longer than it should.
    #[error("the watch delivered nothing for {}", humantime::format_duration(*.after))]
    Idle {
        /// How long it was quiet.
        after: Duration,
    },
    /// The answer cannot be read as the object or a Status.
    #[error("the answer cannot be read: {detail}")]
    Malformed {
        /// The decoding error.
        detail: String,
    },
    /// The API server could not be reached, or the connection failed mid-request.
    #[error("{detail}")]
    Unreachable {
        /// The transport error and its causes ([`error_chain`]).
        detail: String,
    },
}

// === impl Error ===

impl Error {
    /// Sorts a kube error: an API status, an unreadable answer, or else a transport failure.
    pub(crate) fn of(error: kube::Error) -> Error {
        match error {
            kube::Error::Api(status) => Error::Status {
                code: status.code,
                reason: status.reason,
                message: status.message,
            },
            kube::Error::SerdeError(e) => Error::Malformed {
                detail: e.to_string(),
            },
            other => Error::Unreachable {
                detail: error_chain(&other),
            },
        }
    }
}

#[cfg(test)]
impl Error {
    /// An error status, for the tests of how each resource names a failure.
    pub(crate) fn status(code: u16, reason: &str, message: &str) -> Error {
        Error::Status {
            code,
            reason: reason.to_owned(),
            message: message.to_owned(),
        }
    }

    /// An unreadable answer, for the same tests.
    pub(crate) fn malformed() -> Error {
        Error::Malformed {
            detail: "expected value at line 1 column 2".to_owned(),
        }
    }
}

/// Runs one request bounded by `timeout` (kube sets no read timeout of its own) and sorts its error.
pub(crate) async fn bounded_request<T>(
    timeout: Duration,
    request: impl Future<Output = Result<T, kube::Error>>,
) -> Result<T, Error> {
    match tokio::time::timeout(timeout, request).await {
        Ok(result) => result.map_err(Error::of),
        Err(_elapsed) => Err(Error::Timeout { after: timeout }),
    }
}

/// Loads the standard client configuration: `KUBECONFIG` or `~/.kube/config`, else in-cluster.
///
/// The error is the lease store's ([`ClientConfig`](crate::lease_store::Error::ClientConfig)): start-up
/// reports it as the lease store's, whichever resource needed the client.
pub async fn infer_config() -> Result<kube::Config, crate::lease_store::Error> {
    kube::Config::infer()
        .await
        .map_err(|e| crate::lease_store::Error::ClientConfig {
            detail: format!(
                "no usable kubeconfig (KUBECONFIG or ~/.kube/config) and not running in a cluster \
                 (or pass --lease-file PATH to elect through a local file): {}",
                error_chain(&e)
            ),
        })
}

/// A client built from `config` with kube's retry layer off (the caller bounds and retries every request
/// itself, with a tokio timeout around the whole request) and, given `request_timeout`, that timeout on
/// connecting and on each write (`None` for watches, which are quiet for minutes).
///
/// There is no read timeout on the connection: the caller's timeout bounds each request, and a read
/// timeout also fires while a pooled connection idles, closing it after `request_timeout` of quiet. Every
/// request then paid a new connection: a TLS handshake, and (kube's connector leaves TCP_NODELAY off) a
/// wait of up to 40 ms for the server's delayed ACK before the request left.
pub fn client(
    mut config: kube::Config,
    request_timeout: Option<Duration>,
) -> Result<kube::Client, crate::lease_store::Error> {
    config.default_retry = false;
    config.read_timeout = None;
    config.reset_reader_on_write = false;
    if let Some(timeout) = request_timeout {
        config.connect_timeout = Some(timeout);
        config.write_timeout = Some(timeout);
    }
    kube::Client::try_from(config).map_err(|e| crate::lease_store::Error::ClientConfig {
        detail: error_chain(&e),
    })
}

/// An error and its sources, `: `-separated.
pub(crate) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(code: u16) -> Error {
        let status = kube::core::Status::failure("x", "y").with_code(code);
        Error::of(kube::Error::Api(status.boxed()))
    }

    #[test]
    fn server_errors_are_transient_and_client_errors_are_not() {
        for code in [0, 408, 429, 500, 503, 504] {
            assert!(crate::lease_store::is_transient_status(code), "{code}");
        }
        for code in [400, 401, 403, 404, 409, 410, 422] {
            assert!(!crate::lease_store::is_transient_status(code), "{code}");
        }
        assert!(matches!(status(409), Error::Status { code: 409, .. }));
        let garbage = serde_json::from_str::<serde_json::Value>("{not json").expect_err("garbage");
        let malformed = Error::of(kube::Error::SerdeError(garbage));
        assert!(
            matches!(malformed, Error::Malformed { .. }),
            "{malformed:?}"
        );
    }

    #[test]
    fn messages_say_what_happened() {
        assert_eq!(status(503).to_string(), "HTTP 503 y: x");
        let timeout = Error::Timeout {
            after: Duration::from_millis(500),
        };
        assert_eq!(timeout.to_string(), "no answer within 500ms");
        let idle = Error::Idle {
            after: Duration::from_secs(65),
        };
        assert_eq!(idle.to_string(), "the watch delivered nothing for 1m 5s");
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_without_an_answer_times_out() {
        let error = bounded_request(
            Duration::from_secs(5),
            std::future::pending::<Result<(), kube::Error>>(),
        )
        .await
        .expect_err("no answer");
        assert!(matches!(error, Error::Timeout { .. }), "{error:?}");
    }

    #[test]
    fn error_chains_name_each_cause_once() {
        let inner = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let outer = crate::lease_store::Error::Io {
            path: "x".into(),
            op: "reading",
            source: inner,
        };
        assert_eq!(error_chain(&outer), "lease file x: reading: refused");
    }
}
