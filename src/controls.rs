//! Operator controls: the requests an operator files with `leasecron trigger`, `suspend`, `resume` and
//! `backfill`, and how they reach the leader.
//!
//! A request travels through the same store as the lease, never through a replica's HTTP port: on
//! Kubernetes, the ConfigMap `<lease-name>-controls` beside the Lease (so RBAC decides who may file one,
//! and the audit log records who did); with a lease file, the file `LEASE.controls` beside it. Operators
//! write the document with a compare-and-swap (read-modify-write on its resourceVersion, or its file
//! generation); every replica reads it and watches it; only the leader acts on it:
//!
//! - **suspensions** are a state, not an event: `suspended` maps a job to who suspended it, when and why.
//!   A suspended job's fires start nothing, on whichever replica leads, until `resume` removes the entry;
//! - **requests** are events: each has an id, and the leader that carries one out first writes its
//!   acknowledgement into the run state ([`crate::run_state::RequestAck`]), under its term's fencing token.
//!   A request with an acknowledgement is never carried out again, whichever replica leads next: a
//!   trigger runs at most once, a backfill goes on from where the last leader stopped.
//!
//! The replicas never write this document (their Role may only read and watch it); the commands that file
//! a request also drop the requests that are acknowledged or older than [`ACK_RETENTION`](crate::run_state::ACK_RETENTION), so it stays
//! small. See docs/design.md, "Operator controls", for the alternatives and the choice.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::run_state::{RequestKind, StateRecord};

pub(crate) mod feed;

/// The document's format.
pub const FORMAT: u32 = 1;
/// The longest note a suspension may carry, in bytes.
pub const MAX_NOTE_BYTES: usize = 1024;
/// At most this many requests wait in the document: a command refuses to file one more.
pub const MAX_PENDING_REQUESTS: usize = 1000;
/// The suffix of the ConfigMap's name: `<lease-name>-controls`.
pub const CONFIG_MAP_SUFFIX: &str = "-controls";
/// The ConfigMap's data key.
pub const KEY: &str = "controls.json";

/// The controls document.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Controls {
    /// [`FORMAT`].
    pub format: u32,
    /// The suspended jobs, by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub suspended: BTreeMap<String, Suspension>,
    /// The requests, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub requests: Vec<Request>,
}

/// Who suspended a job, when and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Suspension {
    /// The operator's note (`--note`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// Who: the user the API server authenticated (from a SelfSubjectReview), else `USER@HOST`.
    pub by: String,
    /// When.
    pub at: DateTime<Utc>,
    /// The `suspend` request that made it.
    pub request: String,
}

/// One operator's request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Request {
    /// Unique: the acknowledgement in the run state is keyed by it.
    pub id: String,
    /// What is asked.
    pub kind: RequestKind,
    /// Of which job.
    pub job: String,
    /// Who asked (as [`Suspension::by`]).
    pub by: String,
    /// When (the operator's clock).
    pub requested_at: DateTime<Utc>,
    /// A backfill's first slot (inclusive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<DateTime<Utc>>,
    /// A backfill's last slot (inclusive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<DateTime<Utc>>,
    /// A suspension's note.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// Why the document is not usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    /// Not JSON of the expected shape (unknown fields included).
    #[error("{where_}: {why}")]
    Malformed {
        /// The store.
        where_: String,
        /// The parser's message.
        why: String,
    },
    /// Another format.
    #[error("{where_}: format {found}, this leasecron reads format {FORMAT}")]
    Format {
        /// The store.
        where_: String,
        /// The format found.
        found: u32,
    },
    /// A request makes no sense.
    #[error("{where_}: request {id}: {why}")]
    Request {
        /// The store.
        where_: String,
        /// The request's id.
        id: String,
        /// What is wrong.
        why: String,
    },
}

impl Controls {
    /// Parses the document read from `where_` (for messages: `configmap NS/NAME` or a path), checking each
    /// request. An empty text is an empty document.
    pub fn parse(text: &str, where_: &str) -> Result<Controls, Invalid> {
        if text.trim().is_empty() {
            return Ok(Controls {
                format: FORMAT,
                ..Controls::default()
            });
        }
        let controls: Controls =
            serde_json::from_str(text).map_err(|error| Invalid::Malformed {
                where_: where_.to_owned(),
                why: error.to_string(),
            })?;
        if controls.format != FORMAT {
            return Err(Invalid::Format {
                where_: where_.to_owned(),
                found: controls.format,
            });
        }
        for request in &controls.requests {
            request.check().map_err(|why| Invalid::Request {
                where_: where_.to_owned(),
                id: request.id.clone(),
                why,
            })?;
        }
        Ok(controls)
    }

    /// The document as written to its store (pretty JSON: operators read it with kubectl).
    pub fn to_text(&self) -> String {
        // A map of strings and plain structs always serializes.
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// The suspension of `job`, if any.
    pub fn suspension(&self, job: &str) -> Option<&Suspension> {
        self.suspended.get(job)
    }

    /// Drops the requests that need no more attention: those the run state `record` acknowledges as
    /// finished, and those made more than [`ACK_RETENTION`](crate::run_state::ACK_RETENTION) before `now`. Returns how many it dropped.
    pub fn prune(&mut self, record: &StateRecord, now: DateTime<Utc>) -> usize {
        let horizon = crate::run_state::ack_horizon(now);
        let before = self.requests.len();
        self.requests.retain(|request| {
            let finished = record
                .requests
                .get(&request.id)
                .is_some_and(|ack| ack.state != crate::run_state::RequestState::Running);
            !finished && request.requested_at >= horizon
        });
        before - self.requests.len()
    }
}

impl Request {
    /// What makes no sense in this request, if anything.
    pub fn check(&self) -> Result<(), String> {
        if self.id.is_empty() || self.id.len() > 64 {
            return Err("the id must have 1 to 64 characters".to_owned());
        }
        if self.job.is_empty() {
            return Err("the job's name is empty".to_owned());
        }
        match (self.kind, self.from, self.to) {
            (RequestKind::Backfill, Some(from), Some(to)) if from > to => Err(format!(
                "the backfill's range ends ({}) before it begins ({})",
                crate::logging::rfc3339(&to),
                crate::logging::rfc3339(&from)
            )),
            (RequestKind::Backfill, Some(_), Some(_)) => Ok(()),
            (RequestKind::Backfill, _, _) => Err("a backfill needs `from` and `to`".to_owned()),
            (_, None, None) => Ok(()),
            (kind, _, _) => Err(format!(
                "a {} request takes no `from` or `to`",
                kind.as_str()
            )),
        }
        .and_then(|()| match &self.note {
            Some(note) if note.len() > MAX_NOTE_BYTES => Err(format!(
                "the note has {} bytes; at most {MAX_NOTE_BYTES}",
                note.len()
            )),
            _ => Ok(()),
        })
    }
}

/// What a compare-and-swap write of the document says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Saved {
    /// Written.
    Written,
    /// The document changed since it was read: read it again.
    Conflict,
}

/// The document as a store read it.
#[derive(Debug, Clone, Default)]
pub struct Read {
    /// The document (empty if there is none yet).
    pub controls: Controls,
    /// Its version for the next compare-and-swap; `None`: there is no document yet.
    pub version: Option<String>,
}

/// The future of a [`Store`] request.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// A store's error, boxed: it names the store and says what to do (a missing permission names the rule).
pub type StoreError = Box<dyn std::error::Error + Send + Sync>;

/// Where the document is kept: the ConfigMap `<lease-name>-controls` (`crate::kubernetes::controls`) or
/// the file `LEASE.controls` (`crate::local::controls`); neither store is in this tree yet.
pub trait Store: Send + Sync + std::fmt::Debug {
    /// For messages: `configmap NS/NAME` or `file PATH`.
    fn describe(&self) -> String;

    /// Reads the document.
    fn load(&self) -> StoreFuture<'_, Read>;

    /// Writes `controls` if the stored version is still `version` (`None`: if there is none yet).
    fn save<'a>(
        &'a self,
        controls: &'a Controls,
        version: Option<&'a str>,
    ) -> StoreFuture<'a, Saved>;
}

/// How many times [`update`] re-reads after a conflicting write.
const UPDATE_ATTEMPTS: u32 = 10;

/// Why [`update`] did not write.
#[derive(Debug, thiserror::Error)]
pub enum UpdateError<E: std::error::Error + 'static> {
    /// The store failed.
    #[error("{0}")]
    Store(StoreError),
    /// The change refused the document as it stands.
    #[error("{0}")]
    Refused(#[source] E),
    /// Other writers kept changing it.
    #[error(
        "{store}: {UPDATE_ATTEMPTS} writes in a row conflicted with another writer; try again"
    )]
    Contended {
        /// The store.
        store: String,
    },
}

/// The longest random pause before [`update`] reads again after a conflict: doubling from 4 ms per
/// conflict in a row, up to this.
const UPDATE_MAX_PAUSE: std::time::Duration = std::time::Duration::from_millis(250);

/// Read-modify-write: applies `change` to the document as stored, and writes it with a compare-and-swap,
/// again from a fresh read after a conflicting write. Returns the document written.
///
/// After a conflict it waits a random moment (up to 4 ms, doubling with each conflict in a row) before it
/// reads again: two writers in lockstep would otherwise keep colliding in the same order, the same one
/// losing every time.
pub async fn update<E: std::error::Error + 'static>(
    store: &dyn Store,
    mut change: impl FnMut(&mut Controls) -> Result<(), E>,
) -> Result<Controls, UpdateError<E>> {
    for attempt in 0..UPDATE_ATTEMPTS {
        if attempt > 0 {
            tokio::time::sleep(conflict_pause(attempt)).await;
        }
        let Read {
            mut controls,
            version,
        } = store.load().await.map_err(UpdateError::Store)?;
        controls.format = FORMAT;
        change(&mut controls).map_err(UpdateError::Refused)?;
        match store
            .save(&controls, version.as_deref())
            .await
            .map_err(UpdateError::Store)?
        {
            Saved::Written => return Ok(controls),
            Saved::Conflict => continue,
        }
    }
    Err(UpdateError::Contended {
        store: store.describe(),
    })
}

/// The checks a new request must pass before it is filed, beside [`Request::check`]: the document holds
/// at most [`MAX_PENDING_REQUESTS`], and a backfill at most [`crate::run_state::MAX_BACKFILL_SLOTS`] slots (the caller counts
/// them against the job's schedule).
pub fn check_capacity(controls: &Controls) -> Result<(), String> {
    if controls.requests.len() >= MAX_PENDING_REQUESTS {
        return Err(format!(
            "{} requests are waiting already (at most {MAX_PENDING_REQUESTS}): is a leader running?",
            controls.requests.len()
        ));
    }
    Ok(())
}

/// A new request id: the time in milliseconds and 32 random bits, in hex (sortable by time, unique
/// enough across operators).
pub fn new_request_id(now: DateTime<Utc>) -> String {
    let millis = u64::try_from(now.timestamp_millis()).unwrap_or(0);
    let mut random = [0u8; 4];
    // getrandom never fails on Linux once the kernel's pool is ready; the time alone is still unique
    // enough for one operator.
    let _ = getrandom(&mut random);
    format!("{millis:012x}-{}", hex(&random))
}

/// A random pause before attempt `attempt` (from 1) of [`update`]: up to 4 ms doubled per conflict in a
/// row, at most [`UPDATE_MAX_PAUSE`].
fn conflict_pause(attempt: u32) -> std::time::Duration {
    let ceiling = std::time::Duration::from_millis(4)
        .saturating_mul(1 << attempt.saturating_sub(1).min(16))
        .min(UPDATE_MAX_PAUSE);
    let mut random = [0u8; 4];
    // Without randomness the pause is the ceiling: still a pause.
    let fraction = match getrandom(&mut random) {
        Ok(()) => f64::from(u32::from_le_bytes(random)) / f64::from(u32::MAX),
        Err(_) => 1.0,
    };
    ceiling.mul_f64(fraction)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn getrandom(buf: &mut [u8]) -> std::io::Result<()> {
    use std::io::Read as _;
    std::fs::File::open("/dev/urandom")?.read_exact(buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(s: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_800_000_000 + s, 0)
            .single()
            .expect("valid")
    }

    fn request(kind: RequestKind) -> Request {
        Request {
            id: "r1".to_owned(),
            kind,
            job: "backup".to_owned(),
            by: "alice".to_owned(),
            requested_at: at(0),
            from: None,
            to: None,
            note: None,
        }
    }

    #[test]
    fn an_empty_text_is_an_empty_document_and_a_document_round_trips() {
        assert_eq!(
            Controls::parse("  \n", "x").expect("empty"),
            Controls {
                format: FORMAT,
                ..Controls::default()
            }
        );
        let mut controls = Controls {
            format: FORMAT,
            ..Controls::default()
        };
        controls.suspended.insert(
            "backup".to_owned(),
            Suspension {
                note: Some("db migration".to_owned()),
                by: "alice".to_owned(),
                at: at(0),
                request: "r0".to_owned(),
            },
        );
        controls.requests.push(request(RequestKind::Trigger));
        let text = controls.to_text();
        assert_eq!(Controls::parse(&text, "x").expect("parses"), controls);
    }

    #[test]
    fn unknown_fields_another_format_and_bad_requests_are_refused_naming_the_store() {
        let unknown = Controls::parse(r#"{"format":1,"paused":{}}"#, "configmap ns/l-controls")
            .expect_err("unknown field");
        assert!(
            unknown
                .to_string()
                .starts_with("configmap ns/l-controls: unknown field `paused`"),
            "{unknown}"
        );
        let format = Controls::parse(r#"{"format":2}"#, "f").expect_err("format");
        assert_eq!(
            format.to_string(),
            "f: format 2, this leasecron reads format 1"
        );
        let mut backfill = request(RequestKind::Backfill);
        assert_eq!(
            backfill.check().expect_err("no range"),
            "a backfill needs `from` and `to`"
        );
        backfill.from = Some(at(10));
        backfill.to = Some(at(0));
        assert!(backfill.check().expect_err("reversed").contains("ends"));
        let mut trigger = request(RequestKind::Trigger);
        trigger.to = Some(at(0));
        assert_eq!(
            trigger.check().expect_err("range"),
            "a trigger request takes no `from` or `to`"
        );
        let mut suspend = request(RequestKind::Suspend);
        suspend.note = Some("n".repeat(MAX_NOTE_BYTES + 1));
        assert!(suspend.check().expect_err("long").contains("at most 1024"));
    }

    #[test]
    fn pruning_drops_finished_and_old_requests_and_keeps_the_rest() {
        use crate::run_state::{RequestAck, RequestState};
        let mut controls = Controls::default();
        for (id, age) in [
            ("done", 10),
            ("running", 10),
            ("new", 10),
            ("old", 3 * 3600),
        ] {
            controls.requests.push(Request {
                id: id.to_owned(),
                requested_at: at(10_000 - age),
                ..request(RequestKind::Trigger)
            });
        }
        let mut record = StateRecord::default();
        for (id, state) in [
            ("done", RequestState::Done),
            ("running", RequestState::Running),
        ] {
            record.requests.insert(
                id.to_owned(),
                RequestAck {
                    kind: RequestKind::Trigger,
                    job: "backup".to_owned(),
                    requested_at: at(0),
                    state,
                    detail: None,
                    fencing_token: 1,
                    identity: "a".to_owned(),
                    updated_at: at(0),
                    slot: None,
                    outcome: None,
                    cursor: None,
                    started: 0,
                    skipped: 0,
                    failed: 0,
                },
            );
        }
        assert_eq!(controls.prune(&record, at(10_000)), 2);
        let left: Vec<&str> = controls.requests.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(left, ["running", "new"]);
    }

    #[test]
    fn the_pause_after_a_conflict_is_random_and_bounded() {
        for attempt in 1..=UPDATE_ATTEMPTS {
            let ceiling =
                (std::time::Duration::from_millis(4) * (1 << (attempt - 1))).min(UPDATE_MAX_PAUSE);
            assert!(conflict_pause(attempt) <= ceiling, "{attempt}");
        }
        let pauses: std::collections::HashSet<std::time::Duration> =
            (0..20).map(|_| conflict_pause(5)).collect();
        assert!(pauses.len() > 1, "random");
    }

    #[test]
    fn request_ids_sort_by_time_and_differ() {
        let (a, b) = (new_request_id(at(0)), new_request_id(at(0)));
        assert_ne!(a, b);
        assert!(new_request_id(at(1)) > new_request_id(at(0)));
        assert!(a.len() <= 64);
    }
}
