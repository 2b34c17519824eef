//! The store's change feed: the most recent record received, and the task that watches the Lease.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt as _;
use kube::api::{WatchEvent, WatchParams};

use super::{Error, Shared, Verb, Versioned};

/// HTTP 410: the watch's resourceVersion is too old.
const GONE: u16 = 410;

/// What [`super::KubeStore::changed`] compares against.
#[derive(Debug, Clone, Default)]
pub(super) struct Feed {
    /// The most recently received record (`Some(None)`: there is no Lease); `None` before any.
    pub(super) latest: Option<Option<Versioned>>,
    /// True while the watch is established: then `changed` need not poll.
    pub(super) watching: bool,
}

impl Feed {
    /// Takes `current` as the latest record. True if its version is new.
    pub(super) fn learn(&mut self, current: Option<Versioned>) -> bool {
        let version = |r: &Option<Versioned>| r.as_ref().map(|v| v.version.clone());
        let same = self
            .latest
            .as_ref()
            .is_some_and(|latest| version(latest) == version(&current));
        if !same {
            self.latest = Some(current);
        }
        !same
    }
}

/// Why a watch ended.
enum Ended {
    /// `410 Gone`: the resourceVersion is too old; re-read and start from the current one.
    Gone,
    /// The watch failed; retry after a pause (the store polls meanwhile).
    Failed(Error),
}

/// Watches the Lease for as long as the store lives (the store aborts this task when dropped).
pub(super) async fn run(shared: Arc<Shared>) {
    let mut resource_version: Option<String> = None;
    let mut forbidden_logged = false;
    loop {
        let from = match resource_version.take() {
            Some(version) => version,
            None => match shared.get().await {
                Ok(current) => current.map(|v| v.version).unwrap_or_default(),
                Err(e) => {
                    pause(&shared, &e).await;
                    continue;
                }
            },
        };
        let mut version = from;
        match watch_from(&shared, &mut version).await {
            Ended::Gone => {
                tracing::debug!(lease = %shared.describe, "watch: 410 Gone; re-reading the Lease");
                shared.set_watching(false);
            }
            Ended::Failed(e) => {
                if matches!(e, Error::Forbidden { .. }) && !forbidden_logged {
                    forbidden_logged = true;
                    tracing::warn!(
                        error = %e,
                        "cannot watch the Lease; polling it every retry period instead"
                    );
                }
                resource_version = Some(version).filter(|v| !v.is_empty());
                pause(&shared, &e).await;
            }
        }
    }
}

/// Marks the watch down and waits a poll interval before the next attempt.
async fn pause(shared: &Shared, error: &Error) {
    tracing::debug!(error = %error, "watch of the Lease is down; polling meanwhile");
    shared.set_watching(false);
    tokio::time::sleep(shared.params.poll_interval).await;
}

/// Watches from `version` (empty: from now), re-watching when the server ends a request, and keeps
/// `version` at the last resourceVersion seen. Returns when the watch fails.
async fn watch_from(shared: &Shared, version: &mut String) -> Ended {
    let params = WatchParams::default()
        .fields(&format!("metadata.name={}", shared.params.name))
        .timeout(whole_seconds(shared.params.watch_timeout));
    let idle_limit = shared.params.watch_timeout + shared.params.request_timeout;
    loop {
        let request = shared.watches.watch(&params, version);
        let stream = match shared.request(Verb::Watch, request).await {
            Ok(stream) => stream,
            Err(Error::Api { code: GONE, .. }) => return Ended::Gone,
            Err(e) => return Ended::Failed(e),
        };
        shared.set_watching(true);
        let mut stream = std::pin::pin!(stream);
        loop {
            let event = match tokio::time::timeout(idle_limit, stream.next()).await {
                Err(_idle) => {
                    return Ended::Failed(Error::Timeout {
                        store: shared.describe.clone(),
                        verb: Verb::Watch,
                        after: idle_limit,
                    })
                }
                // The server ended the request (timeoutSeconds): watch again from where we are.
                Ok(None) => break,
                Ok(Some(Err(e))) => return Ended::Failed(shared.error(Verb::Watch, e)),
                Ok(Some(Ok(event))) => event,
            };
            if let Some(ended) = apply(shared, event, version) {
                return ended;
            }
        }
    }
}

/// Applies one watch event to the feed; `Some` if it ends the watch.
fn apply(
    shared: &Shared,
    event: WatchEvent<k8s_openapi::api::coordination::v1::Lease>,
    version: &mut String,
) -> Option<Ended> {
    match event {
        WatchEvent::Added(lease) | WatchEvent::Modified(lease) => {
            match shared.versioned(Verb::Watch, lease) {
                Ok(current) => {
                    version.clone_from(&current.version);
                    shared.learn(Some(current));
                }
                Err(e) => return Some(Ended::Failed(e)),
            }
        }
        WatchEvent::Deleted(lease) => {
            if let Some(v) = lease.metadata.resource_version {
                *version = v;
            }
            shared.learn(None);
        }
        WatchEvent::Bookmark(bookmark) => *version = bookmark.metadata.resource_version,
        WatchEvent::Error(status) if status.code == GONE => return Some(Ended::Gone),
        WatchEvent::Error(status) => {
            return Some(Ended::Failed(
                shared.error(Verb::Watch, kube::Error::Api(status)),
            ))
        }
    }
    None
}

/// A duration as the API's whole `timeoutSeconds`, at least 1.
fn whole_seconds(duration: Duration) -> u32 {
    u32::try_from(duration.as_secs()).unwrap_or(u32::MAX).max(1)
}
