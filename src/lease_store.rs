//! Where the lease record lives: the [`LeaseStore`] trait the elector talks to, and its implementations.
//!
//! The trait has the shape of client-go's `resourcelock.Interface` on a Kubernetes `Lease`: a record read
//! with an opaque version (`resourceVersion`), created if absent (`AlreadyExists` when a peer was faster),
//! updated only if the version is still current (`Conflict` otherwise), and a change feed that a watch
//! (carrying the object) or a poll can serve. The elector never writes blindly: every write carries the
//! version it last read.
//!
//! Implementations:
//! - [`FileStore`](crate::local::lease::FileStore): a JSON file on the local disk, for running without a cluster (several local
//!   processes can contend through it).
//! - [`KubeStore`](crate::kubernetes::lease::KubeStore): a `coordination.k8s.io/v1` `Lease`, through the API server (`get`, `create`,
//!   `replace` carrying `metadata.resourceVersion`, and a watch of the one object).

use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::time::Duration;

use chrono::{DateTime, Utc};

/// The `Lease` spec fields, as client-go writes them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseRecord {
    /// Who holds the lease; `None` (or an empty string, as client-go writes on release) means nobody.
    pub holder_identity: Option<String>,
    /// The lease duration in whole seconds (rounded up), for other implementations reading the record.
    pub lease_duration_seconds: i32,
    /// When the current holder acquired the lease (wall clock; informational only).
    pub acquire_time: Option<DateTime<Utc>>,
    /// When the current holder last renewed (wall clock; informational only — never compared with the
    /// local clock to judge expiry).
    pub renew_time: Option<DateTime<Utc>>,
    /// How many times the lease was acquired; the fencing token of the current term.
    pub lease_transitions: i32,
}

impl LeaseRecord {
    /// The holder, if any: `None` for a free lease (absent or empty `holderIdentity`).
    pub fn holder(&self) -> Option<&str> {
        self.holder_identity.as_deref().filter(|h| !h.is_empty())
    }
}

/// A record together with the version under which the store holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned {
    /// The record.
    pub record: LeaseRecord,
    /// The store's version of the record (a Kubernetes `resourceVersion`): opaque, compared only for
    /// equality, and passed back to [`LeaseStore::update`].
    pub version: String,
}

/// What [`LeaseStore::changed`] saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// The store read (or was told by a watch event) this record; `None` means there is no record. The
    /// version may still equal the caller's: callers compare versions themselves.
    Record(Option<Versioned>),
    /// Something may have changed but the store does not know what (a watch restarted, a poll failed):
    /// re-read with [`LeaseStore::get`].
    Unknown,
}

/// The verbs of a [`LeaseStore`], for errors, logs and request metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verb {
    /// [`LeaseStore::get`].
    Get,
    /// [`LeaseStore::create`].
    Create,
    /// [`LeaseStore::update`].
    Update,
    /// The change feed of [`LeaseStore::changed`], where a store has one (a Kubernetes watch).
    Watch,
}

impl Verb {
    /// Every verb: the `verb` label values of `leasecron_lease_request_duration_seconds`.
    pub const ALL: [Verb; 4] = [Verb::Get, Verb::Create, Verb::Update, Verb::Watch];

    /// The verb as a metrics label (and the Kubernetes RBAC verb): `get`, `create`, `update`, `watch`.
    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Get => "get",
            Verb::Create => "create",
            Verb::Update => "update",
            Verb::Watch => "watch",
        }
    }
}

impl std::fmt::Display for Verb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Storage for one lease record, with optimistic concurrency.
///
/// Every call may take arbitrarily long (a hung API server); the elector bounds each one with a timeout,
/// so implementations need not, and dropping a returned future must be harmless.
pub trait LeaseStore: Send + Sync + 'static {
    /// A human-readable name for logs and errors: `file /tmp/x.lease`, `lease default/leasecron`.
    fn describe(&self) -> String;

    /// Reads the record; `None` if there is none.
    fn get(&self) -> impl Future<Output = Result<Option<Versioned>, Error>> + Send;

    /// Creates the record; [`Error::AlreadyExists`] if there already is one.
    fn create(&self, record: &LeaseRecord)
        -> impl Future<Output = Result<Versioned, Error>> + Send;

    /// Replaces the record if its version is still `version`; [`Error::Conflict`] if it is not,
    /// [`Error::NotFound`] if there is no record.
    fn update(
        &self,
        record: &LeaseRecord,
        version: &str,
    ) -> impl Future<Output = Result<Versioned, Error>> + Send;

    /// Resolves when the record may differ from version `known` (`None`: the caller knows of no record) —
    /// a watch event, or a poll that found a different version. May resolve spuriously. Cancel-safe: a
    /// dropped call loses nothing and does not delay the next one's poll.
    fn changed(&self, known: Option<String>) -> impl Future<Output = Change> + Send;
}

/// Errors of a [`LeaseStore`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// `create` found a record: a peer created it first. Re-read.
    #[error("{store}: cannot create the lease record: it already exists")]
    AlreadyExists {
        /// [`LeaseStore::describe`].
        store: String,
    },
    /// `update` carried a stale version: the record changed since it was read. Re-read; never retry blind.
    #[error(
        "{store}: version conflict: the lease record changed since version {expected} was read"
    )]
    Conflict {
        /// [`LeaseStore::describe`].
        store: String,
        /// The version the caller expected.
        expected: String,
    },
    /// `update` found no record to replace.
    #[error("{store}: cannot update the lease record: there is none")]
    NotFound {
        /// [`LeaseStore::describe`].
        store: String,
    },
    /// A request did not complete in time.
    #[error("{store}: {verb} timed out after {}", humantime::format_duration(*.after))]
    Timeout {
        /// [`LeaseStore::describe`].
        store: String,
        /// The request that timed out.
        verb: Verb,
        /// The time limit that passed.
        after: Duration,
    },
    /// The lease file's directory does not exist, or the path is a directory.
    #[error("lease file {}: {problem}", .path.display())]
    BadPath {
        /// The `--lease-file` path.
        path: PathBuf,
        /// What is wrong with it, and the fix.
        problem: String,
    },
    /// The stored record cannot be read as a lease record.
    #[error(
        "lease file {}: corrupt: {detail}. It holds only the current holder and fencing count: stop every \
         leasecron using it, remove it (and {}.state only if that is corrupt too), and start again; the \
         fencing tokens continue from the run state",
        .path.display(),
        .path.display()
    )]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong, with line and column where known.
        detail: String,
    },
    /// The Kubernetes client cannot be configured (no kubeconfig and not in a cluster, a kubeconfig that
    /// does not parse, unusable credentials or certificates).
    #[error("cannot configure the Kubernetes client: {detail}")]
    ClientConfig {
        /// What went wrong, with kube's own explanation.
        detail: String,
    },
    /// The API server refused a request for lack of permission (HTTP 403): an RBAC rule is missing.
    #[error(
        "{store}: {verb} is forbidden: grant this replica's service account the RBAC verb \"{verb}\" on \
         resource \"leases\" in API group \"coordination.k8s.io\" in namespace \"{namespace}\" \
         (leasecron needs get, create, update and watch); the API server said: {message}"
    )]
    Forbidden {
        /// [`LeaseStore::describe`].
        store: String,
        /// The refused request.
        verb: Verb,
        /// The Lease's namespace.
        namespace: String,
        /// The API server's message.
        message: String,
    },
    /// The API server did not accept our credentials (HTTP 401).
    #[error(
        "{store}: {verb}: the API server rejected the credentials (401 Unauthorized): {message}"
    )]
    Unauthorized {
        /// [`LeaseStore::describe`].
        store: String,
        /// The refused request.
        verb: Verb,
        /// The API server's message.
        message: String,
    },
    /// The API server answered with an error status other than a conflict, 401 or 403.
    #[error("{store}: {verb} failed: HTTP {code} {reason}: {message}")]
    Api {
        /// [`LeaseStore::describe`].
        store: String,
        /// The failed request.
        verb: Verb,
        /// The HTTP status code.
        code: u16,
        /// The Status reason (`InternalError`, `NotFound`, ...), if any.
        reason: String,
        /// The API server's message.
        message: String,
    },
    /// At start, the Lease names our identity and a live process renewed it: two replicas share one
    /// identity.
    #[error(
        "{store}: identity {identity:?} is already held by another live process (the Lease was renewed \
         under this identity while we watched it); give each replica its own --identity"
    )]
    IdentityInUse {
        /// [`LeaseStore::describe`].
        store: String,
        /// The identity in conflict.
        identity: String,
    },
    /// On a lease file, another live process holds the lock of this identity: two replicas share one
    /// identity.
    #[error(
        "{store}: identity {identity:?} is already used by another live leasecron process on this lease \
         file (it holds {}); give each replica its own --identity",
        .lock.display()
    )]
    IdentityLocked {
        /// [`LeaseStore::describe`].
        store: String,
        /// The identity in conflict.
        identity: String,
        /// The identity's lock file, beside the lease file.
        lock: PathBuf,
    },
    /// A `SelfSubjectAccessReview` at start says this replica lacks some of the verbs leasecron needs.
    #[error(
        "{store}: this replica's service account may not {} leases: add the RBAC rule \
         {{apiGroups: [\"coordination.k8s.io\"], resources: [\"leases\"], verbs: [\"get\", \"watch\", \"create\", \"update\"]}} \
         in namespace \"{namespace}\"",
        .verbs.join(", ")
    )]
    AccessDenied {
        /// [`LeaseStore::describe`].
        store: String,
        /// The denied verbs.
        verbs: Vec<&'static str>,
        /// The Lease's namespace.
        namespace: String,
    },
    /// The API server could not be reached, or the connection failed mid-request.
    #[error("{store}: {verb}: cannot reach the Kubernetes API: {detail}")]
    Unreachable {
        /// [`LeaseStore::describe`].
        store: String,
        /// The failed request.
        verb: Verb,
        /// The transport error.
        detail: String,
    },
    /// The API server's answer cannot be read as a Lease or a Status.
    #[error("{store}: {verb}: the API server's answer cannot be read: {detail}")]
    Malformed {
        /// [`LeaseStore::describe`].
        store: String,
        /// The request whose answer was unreadable.
        verb: Verb,
        /// The decoding error.
        detail: String,
    },
    /// A file-system operation failed.
    #[error("lease file {}: {op}: {source}", .path.display())]
    Io {
        /// The file or directory the operation was on.
        path: PathBuf,
        /// What was being done (`reading`, `renaming the temporary file over it`, ...).
        op: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

impl Error {
    /// True if the record changed under the caller (`Conflict`, `AlreadyExists`, `NotFound`): re-read.
    pub fn is_conflict(&self) -> bool {
        matches!(
            self,
            Error::AlreadyExists { .. } | Error::Conflict { .. } | Error::NotFound { .. }
        )
    }

    /// True if retrying the same request later may succeed (a timeout, most I/O errors). False for errors
    /// that need an operator (a corrupt record, a missing directory, no permission).
    pub fn is_transient(&self) -> bool {
        match self {
            Error::AlreadyExists { .. }
            | Error::Conflict { .. }
            | Error::NotFound { .. }
            | Error::Timeout { .. }
            | Error::Unreachable { .. }
            | Error::Malformed { .. } => true,
            Error::Corrupt { .. }
            | Error::BadPath { .. }
            | Error::ClientConfig { .. }
            | Error::Forbidden { .. }
            | Error::AccessDenied { .. }
            | Error::Unauthorized { .. }
            | Error::IdentityInUse { .. }
            | Error::IdentityLocked { .. } => false,
            Error::Api { code, .. } => is_transient_status(*code),
            Error::Io { source, .. } => !matches!(
                source.kind(),
                io::ErrorKind::NotFound
                    | io::ErrorKind::PermissionDenied
                    | io::ErrorKind::ReadOnlyFilesystem
                    | io::ErrorKind::IsADirectory
                    | io::ErrorKind::NotADirectory
            ),
        }
    }
}

/// HTTP 408.
const REQUEST_TIMEOUT: u16 = 408;
/// HTTP 429.
const TOO_MANY_REQUESTS: u16 = 429;
/// The first 5xx.
const FIRST_SERVER_ERROR: u16 = 500;

/// True for an API status that retrying later may change: 408, 429, every 5xx, or none. Shared by every
/// client of the API server (the Lease, the jobs ConfigMap, the run state): [`crate::kubernetes`] uses it.
pub(crate) fn is_transient_status(code: u16) -> bool {
    // 0: a Status without a code; nothing says it is permanent.
    code == 0 || code == REQUEST_TIMEOUT || code == TOO_MANY_REQUESTS || code >= FIRST_SERVER_ERROR
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(holder: Option<&str>) -> LeaseRecord {
        LeaseRecord {
            holder_identity: holder.map(str::to_owned),
            lease_duration_seconds: 15,
            acquire_time: None,
            renew_time: None,
            lease_transitions: 0,
        }
    }

    #[test]
    fn an_empty_holder_identity_means_the_lease_is_free() {
        assert_eq!(record(None).holder(), None);
        assert_eq!(record(Some("")).holder(), None);
        assert_eq!(record(Some("a")).holder(), Some("a"));
    }

    #[test]
    fn conflicts_are_told_apart_from_failures() {
        let conflict = Error::Conflict {
            store: "file x".into(),
            expected: "3".into(),
        };
        assert!(conflict.is_conflict());
        let corrupt = Error::Corrupt {
            path: "x".into(),
            detail: "bad".into(),
        };
        assert!(!corrupt.is_conflict());
        assert!(!corrupt.is_transient());
        let denied = Error::Io {
            path: "x".into(),
            op: "reading",
            source: io::Error::from(io::ErrorKind::PermissionDenied),
        };
        assert!(!denied.is_transient());
        let interrupted = Error::Io {
            path: "x".into(),
            op: "reading",
            source: io::Error::from(io::ErrorKind::Interrupted),
        };
        assert!(interrupted.is_transient());
    }

    #[test]
    fn messages_name_the_store_and_the_verb() {
        let timeout = Error::Timeout {
            store: "file /tmp/x.lease".into(),
            verb: Verb::Update,
            after: Duration::from_millis(1500),
        };
        assert_eq!(
            timeout.to_string(),
            "file /tmp/x.lease: update timed out after 1s 500ms"
        );
    }
}
