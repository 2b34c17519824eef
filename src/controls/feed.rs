//! What the replicas' feeds of the document share ([`crate::local::controls::watch`],
//! [`crate::kubernetes::controls::watch`]): each version read is offered to a [`Publisher`], which
//! publishes it only if it is valid and differs from the one in force. An invalid version is logged once
//! (an error naming the store) and the last valid one stays; a document that is gone is the empty one (no
//! suspension, no request).

use std::sync::Arc;

use tokio::sync::watch;

use super::{Controls, Invalid, FORMAT};

/// Publishes the versions of the document a feed reads.
pub(crate) struct Publisher {
    out: watch::Sender<Arc<Controls>>,
    /// [`super::Store::describe`], for the log.
    store: String,
    /// The version last refused (a resourceVersion, a file's content hash): each is logged once.
    refused: Option<String>,
}

/// The document when there is none: no suspension, no request.
pub(crate) fn empty() -> Controls {
    Controls {
        format: FORMAT,
        ..Controls::default()
    }
}

impl Publisher {
    /// Publishes on `out`; `store` names the store in the log.
    pub(crate) fn new(out: watch::Sender<Arc<Controls>>, store: String) -> Publisher {
        Publisher {
            out,
            store,
            refused: None,
        }
    }

    /// The document of `version` as read: published if valid and different from the one in force. An
    /// invalid one is logged, once per version, and the one in force stays. True if it published.
    pub(crate) fn offer(&mut self, version: &str, read: Result<Controls, Invalid>) -> bool {
        match read {
            Ok(controls) => {
                if self.refused.take().is_some() {
                    tracing::info!(store = %self.store, "the operator controls are valid again");
                }
                self.publish(controls)
            }
            Err(invalid) => {
                if self.refused.as_deref() != Some(version) {
                    tracing::error!(
                        store = %self.store,
                        version,
                        error = %invalid,
                        "the operator controls are invalid: the last valid version stays in force until \
                         they are fixed"
                    );
                    self.refused = Some(version.to_owned());
                }
                false
            }
        }
    }

    /// There is no document (deleted, or never written): the empty one. True if it published.
    pub(crate) fn absent(&mut self) -> bool {
        self.refused = None;
        self.publish(empty())
    }

    /// Resolves once every receiver is gone: the feed has no one left to feed.
    pub(crate) async fn closed(&self) {
        self.out.closed().await;
    }

    fn publish(&self, controls: Controls) -> bool {
        let (suspended, requests) = (controls.suspended.len(), controls.requests.len());
        let changed = self.out.send_if_modified(|current| {
            if **current == controls {
                return false;
            }
            *current = Arc::new(controls);
            true
        });
        if changed {
            tracing::info!(
                store = %self.store,
                suspended,
                requests,
                "the operator controls changed"
            );
        }
        changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn suspended(job: &str) -> Controls {
        let mut controls = empty();
        controls.suspended.insert(
            job.to_owned(),
            super::super::Suspension {
                note: None,
                by: "alice".to_owned(),
                at: chrono::DateTime::UNIX_EPOCH,
                request: "r".to_owned(),
            },
        );
        controls
    }

    fn invalid() -> Invalid {
        Controls::parse("{", "x").expect_err("not JSON")
    }

    #[tokio::test]
    async fn only_changes_are_published_and_an_invalid_version_keeps_the_last_valid_one() {
        let (tx, mut rx) = watch::channel(Arc::new(empty()));
        let mut publisher = Publisher::new(tx, "file x".to_owned());
        assert!(!publisher.offer("1", Ok(empty())), "unchanged");
        assert!(publisher.offer("2", Ok(suspended("a"))));
        assert!(rx.has_changed().expect("open"));
        assert_eq!(**rx.borrow_and_update(), suspended("a"));
        assert!(!publisher.offer("3", Err(invalid())));
        assert!(!publisher.offer("3", Err(invalid())), "logged once");
        assert_eq!(publisher.refused.as_deref(), Some("3"));
        assert!(!rx.has_changed().expect("open"), "the last valid one stays");
        assert!(
            !publisher.offer("4", Ok(suspended("a"))),
            "valid again, unchanged"
        );
        assert_eq!(publisher.refused, None);
        assert!(publisher.absent(), "gone: no suspension");
        assert_eq!(**rx.borrow_and_update(), empty());
        assert!(!publisher.absent());
    }

    #[tokio::test]
    async fn closed_resolves_once_every_receiver_is_gone() {
        let (tx, rx) = watch::channel(Arc::new(empty()));
        let publisher = Publisher::new(tx, "file x".to_owned());
        drop(rx);
        tokio::time::timeout(std::time::Duration::from_secs(1), publisher.closed())
            .await
            .expect("closed");
    }
}
