//! Watches: newline-delimited JSON events streamed in a chunked response, replayed from the store's
//! history, with bookmarks, `timeoutSeconds`, and 410 Gone (as an `ERROR` event) for a compacted start.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::response::Response;
use serde_json::{json, Value};
use tokio::sync::{broadcast, mpsc};
use tokio::time::{interval_at, sleep, Instant};
use tokio_util::sync::CancellationToken;

use super::http::{json_response, Query};
use super::resource::{Resource, Target};
use super::status::ApiError;
use super::store::Change;
use super::Shared;

/// How many encoded events may wait for a slow client before the pump waits.
const STREAM_BUFFER: usize = 64;

/// The parameters of one watch request.
#[derive(Clone, Debug)]
struct WatchRequest {
    resource: Resource,
    namespace: String,
    /// Only this object (`fieldSelector=metadata.name=X`).
    name: Option<String>,
    /// Start after this resourceVersion; `None` for unset or `"0"` (replay the current objects).
    from: Option<u64>,
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
    let request = WatchRequest::parse(target, query)?;
    let opened = {
        let store = shared.store();
        store
            .watch_from(request.resource, &request.namespace, request.from)
            .map(|(replay, changes)| (replay, changes, store.resource_version()))
    };
    let (out, lines) = mpsc::channel(STREAM_BUFFER);
    match opened {
        Ok((replay, changes, now)) => {
            let seen = request.from.unwrap_or(now).max(now);
            let pump = Pump {
                request,
                shared: Arc::clone(shared),
                changes,
                out,
                seen,
            };
            let breaker = shared.watch_breaker();
            tokio::spawn(pump.run(replay, breaker));
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
        let from =
            match query.get("resourceVersion").unwrap_or_default() {
                "" | "0" => None,
                rv => Some(rv.parse().map_err(|_| {
                    ApiError::bad_request(format!("invalid resourceVersion {rv:?}"))
                })?),
            };
        let timeout = match query.get("timeoutSeconds") {
            None => None,
            Some(secs) => Some(Duration::from_secs(secs.parse().map_err(|_| {
                ApiError::bad_request(format!("invalid timeoutSeconds {secs:?}"))
            })?)),
        };
        Ok(WatchRequest {
            resource: target.resource,
            namespace: target.namespace.clone(),
            name: query.name_selector(&target.namespace)?,
            from,
            bookmarks: matches!(query.get("allowWatchBookmarks"), Some("true" | "1")),
            timeout,
        })
    }

    fn matches(&self, change: &Change) -> bool {
        change.resource == self.resource
            && change.namespace == self.namespace
            && self.name.as_ref().is_none_or(|name| *name == change.name)
            && self.from.is_none_or(|from| change.rv > from)
    }
}

// === impl Pump ===

impl Pump {
    async fn run(mut self, replay: Vec<Change>, breaker: CancellationToken) {
        for change in &replay {
            if self.request.matches(change) && self.send_change(change).await.is_err() {
                return;
            }
        }
        let deadline = sleep(self.request.timeout.unwrap_or(Duration::MAX / 4));
        tokio::pin!(deadline);
        let period = self.shared.options.bookmark_interval;
        let mut bookmarks = interval_at(Instant::now() + period, period);
        let shutdown = self.shared.shutdown.clone();
        loop {
            let sent = tokio::select! {
                () = breaker.cancelled() => return,
                () = shutdown.cancelled() => return,
                () = self.out.closed() => return,
                () = &mut deadline => {
                    if self.request.bookmarks {
                        let _ = self.send_bookmark().await;
                    }
                    return;
                }
                _ = bookmarks.tick(), if self.request.bookmarks => self.send_bookmark().await,
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
        if !self.request.matches(change) {
            return Ok(());
        }
        let line = encode(&json!({ "type": change.event.as_str(), "object": change.object }));
        self.out.send(line).await.map_err(|_| ())
    }

    /// Sends everything already committed, then a bookmark at the store's current version: a client that
    /// resumes from a bookmark can miss nothing.
    async fn send_bookmark(&mut self) -> Result<(), ()> {
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
        let object = json!({
            "kind": resource.kind(),
            "apiVersion": resource.api_version(),
            "metadata": { "resourceVersion": self.seen.to_string() },
        });
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
