//! The store's change feed: the most recent record received, and the task that watches the Lease.

use std::sync::Arc;

use crate::kubernetes::watch::{self as object_watch, Seen, Watched};

use super::{Error, Shared, Verb, Versioned};

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
    let lease = Watched {
        api: shared.watches.clone(),
        name: shared.params.name.clone(),
        watch_timeout: shared.params.watch_timeout,
        request_timeout: shared.params.request_timeout,
    };
    let ended = object_watch::watch_from(&lease, version, |seen| {
        match seen {
            Seen::Watching => shared.set_watching(true),
            Seen::Object(lease) => {
                let current = shared.versioned(Verb::Watch, lease)?;
                shared.learn(Some(current));
            }
            Seen::Deleted(_) => shared.learn(None),
        }
        Ok(())
    })
    .await;
    match ended {
        object_watch::Ended::Gone => Ended::Gone,
        object_watch::Ended::Refused(e) | object_watch::Ended::Broken(e) => {
            Ended::Failed(shared.failure(Verb::Watch, e))
        }
        object_watch::Ended::Rejected(e) => Ended::Failed(e),
    }
}
