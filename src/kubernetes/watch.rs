//! The watch of one object by name, shared by the Lease's change feed ([`super::lease`]), the jobs
//! ConfigMap ([`super::jobs_configmap`]) and the controls ConfigMap ([`super::controls`]).
//!
//! RBAC may grant only `get` and `watch` on the one object (`resourceNames: [NAME]`), so this never lists:
//! it watches the collection with `fieldSelector=metadata.name=NAME` from a resourceVersion the caller
//! read, and the API server authorizes a watch that selects a single name against `resourceNames`. The
//! watch asks for bookmarks (kube's default), which advance the resourceVersion, so that the re-watch after
//! the server ends a request (`timeoutSeconds`, the watch timeout) starts where the last one stopped.
//!
//! Opening a watch is bounded by the request timeout, and a watch that delivers nothing (no event, no
//! bookmark, no end) for the watch timeout plus the request timeout is treated as broken: kube bounds
//! neither.
//!
//! What to do when a watch ends is the caller's: read the object again after `410 Gone`, pause after a
//! failure, poll while the watch is forbidden.

use std::fmt::Debug;
use std::time::Duration;

use futures_util::StreamExt as _;
use kube::api::{Api, WatchEvent, WatchParams};
use kube::ResourceExt as _;
use serde::de::DeserializeOwned;

use super::{bounded_request, Error, GONE};

/// The object to watch, and the limits of the watch.
pub(crate) struct Watched<K> {
    /// The object's collection, in its namespace, through a client without a read timeout (a watch is
    /// quiet between events).
    pub api: Api<K>,
    /// The object's name.
    pub name: String,
    /// How long one watch request stays open (`timeoutSeconds`) before the next.
    pub watch_timeout: Duration,
    /// The limit of opening a watch; added to `watch_timeout`, how long an open watch may be silent.
    pub request_timeout: Duration,
}

/// What [`watch_from`] reports as it goes.
pub(crate) enum Seen<K> {
    /// A watch request was accepted: the watch is up (again).
    Watching,
    /// The object as created or changed.
    Object(K),
    /// The object was deleted.
    Deleted(K),
}

/// Why [`watch_from`] returned.
pub(crate) enum Ended<E> {
    /// `410 Gone`, on opening or as an event: the resourceVersion is too old. Read the object again and
    /// watch from the version read.
    Gone,
    /// The request opening a watch failed (a 403 here means the `watch` verb is missing).
    Refused(Error),
    /// An open watch failed: the connection broke, it delivered nothing for too long, or it sent an error.
    Broken(Error),
    /// The caller refused what it saw.
    Rejected(E),
}

/// Watches the object from `version` (empty: from now), re-watching whenever the server ends a request,
/// and keeps `version` at the last resourceVersion seen (events and bookmarks). Tells `on` what it sees;
/// returns when the watch fails or `on` refuses an event (then `version` is left before that event).
pub(crate) async fn watch_from<K, E>(
    watched: &Watched<K>,
    version: &mut String,
    mut on: impl FnMut(Seen<K>) -> Result<(), E>,
) -> Ended<E>
where
    K: kube::Resource + Clone + DeserializeOwned + Debug,
{
    let params = WatchParams::default()
        .fields(&format!("metadata.name={}", watched.name))
        .timeout(whole_seconds(watched.watch_timeout));
    let idle_limit = watched.watch_timeout + watched.request_timeout;
    loop {
        let request = watched.api.watch(&params, version);
        let stream = match bounded_request(watched.request_timeout, request).await {
            Ok(stream) => stream,
            Err(Error::Status { code: GONE, .. }) => return Ended::Gone,
            Err(e) => return Ended::Refused(e),
        };
        if let Err(e) = on(Seen::Watching) {
            return Ended::Rejected(e);
        }
        let mut stream = std::pin::pin!(stream);
        loop {
            let event = match tokio::time::timeout(idle_limit, stream.next()).await {
                Err(_idle) => return Ended::Broken(Error::Idle { after: idle_limit }),
                // The server ended the request (timeoutSeconds): watch again from where we are.
                Ok(None) => break,
                Ok(Some(Err(e))) => return Ended::Broken(Error::of(e)),
                Ok(Some(Ok(event))) => event,
            };
            let (seen, seen_version) = match event {
                WatchEvent::Added(object) | WatchEvent::Modified(object) => {
                    let at = object.resource_version();
                    (Seen::Object(object), at)
                }
                WatchEvent::Deleted(object) => {
                    let at = object.resource_version();
                    (Seen::Deleted(object), at)
                }
                WatchEvent::Bookmark(bookmark) => {
                    *version = bookmark.metadata.resource_version;
                    continue;
                }
                WatchEvent::Error(status) if status.code == GONE => return Ended::Gone,
                WatchEvent::Error(status) => {
                    return Ended::Broken(Error::of(kube::Error::Api(status)))
                }
            };
            if let Err(e) = on(seen) {
                return Ended::Rejected(e);
            }
            if let Some(at) = seen_version {
                *version = at;
            }
        }
    }
}

/// A duration as the API's whole `timeoutSeconds`, at least 1.
pub(crate) fn whole_seconds(duration: Duration) -> u32 {
    u32::try_from(duration.as_secs()).unwrap_or(u32::MAX).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeout_seconds_are_whole_and_at_least_one() {
        assert_eq!(whole_seconds(Duration::from_secs(290)), 290);
        assert_eq!(whole_seconds(Duration::from_millis(1500)), 1);
        assert_eq!(whole_seconds(Duration::from_millis(300)), 1);
        assert_eq!(whole_seconds(Duration::ZERO), 1);
    }
}
