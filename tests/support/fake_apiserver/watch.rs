//! Watches: newline-delimited JSON events streamed in a chunked response, replayed from the store's
//! history, with bookmarks, `timeoutSeconds`, and 410 Gone (as an `ERROR` event) for a compacted start.
//!
//! As the real API server's watch cache (v1.37.2): a watch from an unset or `"0"` resourceVersion with
//! `allowWatchBookmarks=true` gets, after the current objects as `ADDED`, a bookmark annotated
//! `k8s.io/initial-events-end: "true"`; a watch with `timeoutSeconds` gets a bookmark 2 s before it ends
//! (none if that is already past) and none at the end; bookmark objects carry the kind's zero fields
//! (`"spec": {}` for a Lease). An object that starts or stops matching a label selector is `ADDED` or
//! `DELETED` for that watch.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::response::Response;
use serde_json::{json, Value};
use tokio::sync::{broadcast, mpsc};
use tokio::time::{interval_at, sleep, Instant};
use tokio_util::sync::CancellationToken;

use super::http::{json_response, validate_list_options, FieldSelector, LabelSelector, Query};
use super::resource::{Resource, Target};
use super::status::ApiError;
use super::store::{Change, EventType};
use super::validate::fill_defaults;
use super::Shared;

/// How long before `timeoutSeconds` ends the real watch cache sends its last bookmark.
const PRE_TIMEOUT_BOOKMARK: Duration = Duration::from_secs(2);
/// The annotation of the bookmark that ends the initial `ADDED` events.
const INITIAL_EVENTS_END: &str = "k8s.io/initial-events-end";

/// How many encoded events may wait for a slow client before the pump waits.
const STREAM_BUFFER: usize = 64;

/// The parameters of one watch request.
#[derive(Clone, Debug)]
struct WatchRequest {
    resource: Resource,
    namespace: String,
    /// The `labelSelector`.
    labels: LabelSelector,
    /// The `fieldSelector`.
    fields: FieldSelector,
    /// Start after this resourceVersion; `None` for unset or `"0"` (replay the current objects).
    from: Option<u64>,
    /// `sendInitialEvents=false` with an unset or `"0"` resourceVersion: start now, replaying nothing.
    start_now: bool,
    bookmarks: bool,
    timeout: Option<Duration>,
}

/// One open watch: where it writes and what it has seen.
struct Pump {
    request: WatchRequest,
    shared: Arc<Shared>,
    changes: broadcast::Receiver<Change>,
    out: mpsc::Sender<Bytes>,
    /// The resourceVersion up to which this watcher has been told everything (the bookmark value).
    seen: u64,
}

/// Answers a watch request: 200 with a stream of events, or an error before the stream starts.
pub fn start(shared: &Arc<Shared>, target: &Target, query: &Query) -> Result<Response, ApiError> {
    let mut request = WatchRequest::parse(target, query)?;
    let opened = {
        let store = shared.store();
        if request.start_now {
            request.from = Some(store.resource_version());
        }
        store
            .watch_from(request.resource, &request.namespace, request.from)
            .map(|(replay, changes)| (replay, changes, store.resource_version()))
    };
    let (out, lines) = mpsc::channel(STREAM_BUFFER);
    match opened {
        Ok((replay, changes, now)) => {
            let seen = request.from.unwrap_or(now).max(now);
            let initial = request.from.is_none() && request.bookmarks;
            let pump = Pump {
                request,
                shared: Arc::clone(shared),
                changes,
                out,
                seen,
            };
            let breaker = shared.watch_breaker();
            tokio::spawn(pump.run(replay, initial, breaker));
        }
        Err(gone) if gone.code == 410 => {
            let line = encode(&json!({ "type": "ERROR", "object": gone.body() }));
            // The channel is fresh and buffered: this send cannot fail for lack of room.
            let _ = out.try_send(line);
        }
        Err(other) => return Err(other),
    }
    let body = Body::from_stream(futures_util::stream::unfold(
        lines,
        |mut lines| async move {
            lines
                .recv()
                .await
                .map(|line| (Ok::<_, Infallible>(line), lines))
        },
    ));
    let mut response = json_response(200, &Value::Null);
    *response.body_mut() = body;
    Ok(response)
}

// === impl WatchRequest ===

impl WatchRequest {
    fn parse(target: &Target, query: &Query) -> Result<WatchRequest, ApiError> {
        validate_list_options(query, true)?;
        let send_initial = query.get("sendInitialEvents");
        let mut from =
            match query.get("resourceVersion").unwrap_or_default() {
                "" | "0" => None,
                rv => Some(rv.parse().map_err(|_| {
                    ApiError::bad_request(format!("invalid resourceVersion {rv:?}"))
                })?),
            };
        // A watch list (`sendInitialEvents=true`) replays the current objects whatever the version.
        if send_initial == Some("true") {
            from = None;
        }
        let start_now = send_initial == Some("false") && from.is_none();
        let timeout = match query.get("timeoutSeconds") {
            None => None,
            Some(secs) => Some(Duration::from_secs(secs.parse().map_err(|_| {
                ApiError::bad_request(format!("invalid timeoutSeconds {secs:?}"))
            })?)),
        };
        let labels = LabelSelector::parse(query.get("labelSelector").unwrap_or_default())
            .map_err(ApiError::bad_request)?;
        let fields = FieldSelector::parse(
            query.get("fieldSelector").unwrap_or_default(),
            target.resource,
        )
        .map_err(ApiError::bad_request)?;
        Ok(WatchRequest {
            resource: target.resource,
            namespace: target.namespace.clone(),
            labels,
            fields,
            from,
            start_now,
            bookmarks: matches!(query.get("allowWatchBookmarks"), Some("true" | "1")),
            timeout,
        })
    }

    fn selects(&self, object: &Value) -> bool {
        self.labels.matches(&object["metadata"]["labels"])
            && self.fields.matches(self.resource, object)
    }

    /// The event this watch sees for `change`, if any: an object that starts matching is `ADDED`, one
    /// that stops is `DELETED` (as its last matching state, at the change's resourceVersion).
    fn event_for(&self, change: &Change) -> Option<(&'static str, Value)> {
        if change.resource != self.resource
            || change.namespace != self.namespace
            || self.from.is_some_and(|from| change.rv <= from)
        {
            return None;
        }
        let now = change.event != EventType::Deleted && self.selects(&change.object);
        let before = change
            .previous
            .as_ref()
            .is_some_and(|previous| self.selects(previous));
        match (now, before) {
            (true, false) => Some(("ADDED", change.object.clone())),
            (true, true) => Some(("MODIFIED", change.object.clone())),
            (false, true) if change.event == EventType::Deleted => {
                Some(("DELETED", change.object.clone()))
            }
            (false, true) => {
                let mut last = change.previous.clone().unwrap_or_default();
                last["metadata"]["resourceVersion"] = json!(change.rv.to_string());
                Some(("DELETED", last))
            }
            (false, false) => None,
        }
    }
}

// === impl Pump ===

impl Pump {
    async fn run(mut self, replay: Vec<Change>, initial: bool, breaker: CancellationToken) {
        for change in &replay {
            if self.send_change(change).await.is_err() {
                return;
            }
        }
        if initial && self.send_bookmark(true).await.is_err() {
            return;
        }
        let timeout = self.request.timeout.unwrap_or(Duration::MAX / 4);
        let deadline = sleep(timeout);
        tokio::pin!(deadline);
        let last_bookmark = sleep(timeout.saturating_sub(PRE_TIMEOUT_BOOKMARK));
        tokio::pin!(last_bookmark);
        let mut last_bookmark_due = self.request.bookmarks && timeout > PRE_TIMEOUT_BOOKMARK;
        let period = self.shared.options.bookmark_interval;
        let mut bookmarks = interval_at(Instant::now() + period, period);
        let shutdown = self.shared.shutdown.clone();
        loop {
            let sent = tokio::select! {
                () = breaker.cancelled() => return,
                () = shutdown.cancelled() => return,
                () = self.out.closed() => return,
                () = &mut deadline => return,
                () = &mut last_bookmark, if last_bookmark_due => {
                    last_bookmark_due = false;
                    self.send_bookmark(false).await
                }
                _ = bookmarks.tick(), if self.request.bookmarks => self.send_bookmark(false).await,
                change = self.changes.recv() => match change {
                    Ok(change) => self.send_change(&change).await,
                    // A watcher too slow for the broadcast is ended, as the real watch cache does.
                    Err(_) => return,
                },
            };
            if sent.is_err() {
                return;
            }
        }
    }

    async fn send_change(&mut self, change: &Change) -> Result<(), ()> {
        self.seen = self.seen.max(change.rv);
        let Some((kind, object)) = self.request.event_for(change) else {
            return Ok(());
        };
        let line = encode(&json!({ "type": kind, "object": object }));
        self.out.send(line).await.map_err(|_| ())
    }

    /// Sends everything already committed, then a bookmark at the store's current version: a client that
    /// resumes from a bookmark can miss nothing. `initial_end` marks the end of the initial events.
    async fn send_bookmark(&mut self, initial_end: bool) -> Result<(), ()> {
        let (pending, now) = {
            let store = self.shared.store();
            let mut pending = Vec::new();
            loop {
                match self.changes.try_recv() {
                    Ok(change) => pending.push(change),
                    Err(broadcast::error::TryRecvError::Empty) => break,
                    // Lagged: changes were lost, so no bookmark may claim them; end the watch.
                    Err(_) => return Err(()),
                }
            }
            (pending, store.resource_version())
        };
        for change in &pending {
            self.send_change(change).await?;
        }
        self.seen = self.seen.max(now);
        let resource = self.request.resource;
        let mut object = json!({
            "kind": resource.kind(),
            "apiVersion": resource.api_version(),
            "metadata": { "resourceVersion": self.seen.to_string() },
        });
        if initial_end {
            object["metadata"]["annotations"] = json!({ INITIAL_EVENTS_END: "true" });
        }
        fill_defaults(resource, &mut object);
        self.out
            .send(encode(&json!({ "type": "BOOKMARK", "object": object })))
            .await
            .map_err(|_| ())
    }
}

fn encode(event: &Value) -> Bytes {
    let mut line = event.to_string();
    line.push('\n');
    Bytes::from(line)
}
