//! The publisher's I/O: the bounded queue between the sinks and the API server, and the task that folds
//! the drafts ([`Throttle`]) and writes them as Events through kube's [`Recorder`], each write bounded by
//! [`Limits::api_timeout`]. A refusal for good (403, 404) turns every sink off; other failures are logged
//! at most once per [`ERROR_LOG_INTERVAL`], and so are drafts dropped on a full queue.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, Recorder, Reporter};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::{note, Draft, Key, Limits, Write, ERROR_LOG_INTERVAL};
use crate::kubernetes::{FORBIDDEN, NOT_FOUND};
use crate::rate_limit::{LogLimiter, Throttle};

/// The sinks' end of the queue: what the clones of an enabled sink share.
pub(super) struct Queue {
    sender: mpsc::Sender<Message>,
    shared: Arc<Shared>,
}

/// What the sinks and the publisher task share.
#[derive(Default)]
struct Shared {
    /// Drafts dropped because the queue was full.
    dropped: AtomicU64,
    /// Set when the API refused events for good (403/404).
    disabled: AtomicBool,
}

/// What goes through the queue.
enum Message {
    Draft(Draft),
    /// Write everything folded now, then answer.
    Flush(oneshot::Sender<()>),
}

/// Spawns the publisher task on `runtime`, writing Events about `regarding` as `reporter`; it ends (after
/// writing what is folded) when the returned queue is dropped.
pub(super) fn spawn(
    runtime: &tokio::runtime::Handle,
    client: kube::Client,
    reporter: Reporter,
    regarding: ObjectReference,
    limits: Limits,
) -> Queue {
    let (sender, drafts) = mpsc::channel(limits.queue_capacity);
    let shared = Arc::new(Shared::default());
    let publisher = Publisher {
        client,
        reporter,
        regarding,
        shared: Arc::clone(&shared),
        errors: LogLimiter::new(ERROR_LOG_INTERVAL),
        drops: LogLimiter::new(ERROR_LOG_INTERVAL),
        dropped_seen: 0,
        limits,
    };
    runtime.spawn(publisher.run(drafts));
    Queue { sender, shared }
}

// === impl Queue ===

impl Queue {
    /// Queues `draft` without waiting; a full queue drops it and counts it.
    pub(super) fn send(&self, draft: Draft) {
        if self.sender.try_send(Message::Draft(draft)).is_err() {
            self.shared.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Waits until everything queued before is written, folded repeats included. Waits for room in the
    /// queue.
    pub(super) async fn flush(&self) {
        let (done, written) = oneshot::channel();
        if self.sender.send(Message::Flush(done)).await.is_ok() {
            // An error means the publisher is gone: nothing is left to wait for.
            let _ = written.await;
        }
    }

    /// How many drafts were dropped because the queue was full.
    pub(super) fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    /// True once the API refused events for good.
    pub(super) fn is_disabled(&self) -> bool {
        self.shared.disabled.load(Ordering::Relaxed)
    }
}

// === impl Publisher ===

/// The background task: aggregates drafts and writes them.
struct Publisher {
    client: kube::Client,
    reporter: Reporter,
    regarding: ObjectReference,
    shared: Arc<Shared>,
    errors: LogLimiter,
    drops: LogLimiter,
    dropped_seen: u64,
    limits: Limits,
}

impl Publisher {
    async fn run(mut self, mut drafts: mpsc::Receiver<Message>) {
        let mut throttle: Throttle<Key, Draft> = Throttle::new(
            Instant::now(),
            self.limits.key_interval,
            self.limits.burst,
            self.limits.refill,
        );
        loop {
            let wake = throttle.next_due();
            let message = tokio::select! {
                message = drafts.recv() => message,
                () = sleep_until(wake), if wake.is_some() => {
                    self.write_all(throttle.due(Instant::now())).await;
                    continue;
                }
            };
            self.report_drops();
            match message {
                Some(Message::Draft(draft)) => {
                    if let Some(write) = throttle.offer(draft.key(), draft, Instant::now()) {
                        self.write(write).await;
                    }
                }
                Some(Message::Flush(done)) => {
                    self.write_all(throttle.drain()).await;
                    let _ = done.send(());
                }
                None => {
                    self.write_all(throttle.drain()).await;
                    return;
                }
            }
        }
    }

    async fn write_all(&mut self, writes: Vec<Write>) {
        for write in writes {
            self.write(write).await;
        }
    }

    async fn write(&mut self, write: Write) {
        if self.shared.disabled.load(Ordering::Relaxed) {
            return;
        }
        let draft = &write.item;
        let event = Event {
            type_: draft.type_,
            reason: draft.reason.to_owned(),
            note: Some(note(&write)),
            action: draft.action.to_owned(),
            secondary: None,
        };
        let recorder = Recorder::new(self.client.clone(), self.reporter.clone());
        let timeout = self.limits.api_timeout;
        match tokio::time::timeout(timeout, recorder.publish(&event, &self.regarding)).await {
            Ok(Ok(())) => {}
            Ok(Err(kube::Error::Api(status)))
                if status.code == FORBIDDEN || status.code == NOT_FOUND =>
            {
                self.shared.disabled.store(true, Ordering::Relaxed);
                tracing::warn!(
                    namespace = self.regarding.namespace.as_deref().unwrap_or_default(),
                    code = status.code,
                    "Kubernetes Events disabled: the API server refused to create events.k8s.io \
                     events ({}); grant `create` on `events` in the `events.k8s.io` group to record \
                     them. The runner is not affected.",
                    status.message
                );
            }
            Ok(Err(error)) => self.log_error(&error.to_string(), draft.reason),
            Err(_) => self.log_error(
                &format!("timed out after {}", humantime::format_duration(timeout)),
                draft.reason,
            ),
        }
    }

    fn log_error(&mut self, error: &str, reason: &str) {
        if let Some(suppressed) = self.errors.allow(Instant::now()) {
            tracing::warn!(
                reason,
                suppressed,
                "could not write a Kubernetes Event: {error} (the event is dropped; further errors \
                 are logged at most once a minute)"
            );
        }
    }

    fn report_drops(&mut self) {
        let dropped = self.shared.dropped.load(Ordering::Relaxed);
        if dropped > self.dropped_seen && self.drops.allow(Instant::now()).is_some() {
            tracing::warn!(
                dropped = dropped - self.dropped_seen,
                "Kubernetes Events dropped: the event queue ({}) was full",
                self.limits.queue_capacity
            );
            self.dropped_seen = dropped;
        }
    }
}

async fn sleep_until(wake: Option<Instant>) {
    if let Some(wake) = wake {
        tokio::time::sleep_until(wake).await;
    }
}
