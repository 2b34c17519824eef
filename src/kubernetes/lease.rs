//! The lease record in a Kubernetes `coordination.k8s.io/v1` `Lease`, written the way client-go's
//! `LeaseLock` writes it, so `kubectl get lease` shows the holder and client-go electors can share it.
//!
//! # Requests
//!
//! - `get` is a GET of the one Lease (404 → no record);
//! - `create` is a POST (409 `AlreadyExists` → [`Error::AlreadyExists`]: a peer was first);
//! - `update` is a PUT carrying `metadata.resourceVersion` (409 → [`Error::Conflict`], 404 →
//!   [`Error::NotFound`]): never a blind write. The metadata of the last object read is sent back
//!   unchanged when its version is the one being replaced, so labels and annotations survive.
//!
//! kube's default retry layer (429/503/504, exponential backoff up to minutes) is switched off for this
//! store's client, and every request is bounded by [`Params::request_timeout`] — both in the connector
//! (connect/read/write timeouts) and around the whole call — so no request outlives a renew deadline
//! (kubernetes#44887). The elector decides what to retry and when.
//!
//! # Change feed
//!
//! One background task per store (started by the first [`LeaseStore::changed`] call) watches the one
//! Lease (`fieldSelector=metadata.name=NAME`, with bookmarks) and publishes what it sees on a
//! `tokio::sync::watch` channel, together with whether the watch is up. Every answer to a request feeds
//! the same channel, so the channel holds the most recent record this store received by any route.
//! `changed(known)` resolves as soon as that record's version differs from `known`; while the watch is
//! down (not yet started, failed, `410 Gone` being recovered from) it also polls with a GET every
//! [`Params::poll_interval`]. While the watch is healthy it makes no requests at all.
//!
//! On `410 Gone` the task forgets its resourceVersion, re-reads the Lease (the "re-list" of a single
//! object) and watches again from the version read.
//!
//! # Records we did not write
//!
//! Like client-go's `LeaseSpecToLeaderElectionRecord`: a missing `spec` or missing fields read as empty
//! (no holder, zero durations and transitions), and `holderIdentity: ""` or `null` is a free lease. The
//! elector judges expiry by the longer of its own LD and the record's `leaseDurationSeconds`, from its
//! first observation, so zero or negative values count as ours and only earn a warning, logged once per
//! version.

use std::future::Future;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Utc};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::kubernetes::access::{self, Reviewed};
use crate::kubernetes::{
    self, bounded_request, client, CONFLICT, FORBIDDEN, NOT_FOUND, UNAUTHORIZED,
};
use crate::lease_store::{Change, Error, LeaseRecord, LeaseStore, Verb, Versioned};

mod feed;

/// How long the API server keeps one watch request open (`timeoutSeconds`) before we re-watch.
pub const DEFAULT_WATCH_TIMEOUT: Duration = Duration::from_secs(60);

/// The verbs leasecron needs on the Lease, checked at start by [`KubeStore::check_access`].
pub const REQUIRED_VERBS: [&str; 4] = ["get", "watch", "create", "update"];

/// Where the Lease is and how this store talks to the API server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Params {
    /// The Lease's namespace.
    pub namespace: String,
    /// The Lease's name.
    pub name: String,
    /// The limit of every request, in the connector and around the call. `run` passes RP, which is
    /// shorter than RD (RD ≥ 1.2 × RP).
    pub request_timeout: Duration,
    /// How often `changed` polls while the watch is down. `run` passes RP.
    pub poll_interval: Duration,
    /// How long one watch request stays open ([`DEFAULT_WATCH_TIMEOUT`]). A watch that delivers nothing
    /// (no event, no bookmark, no end) for this long plus `request_timeout` is treated as broken.
    pub watch_timeout: Duration,
}

impl Params {
    /// The Lease `namespace/name`, with `retry_period` as the request timeout and the poll interval.
    pub fn new(
        namespace: impl Into<String>,
        name: impl Into<String>,
        retry_period: Duration,
    ) -> Self {
        Params {
            namespace: namespace.into(),
            name: name.into(),
            request_timeout: retry_period,
            poll_interval: retry_period,
            watch_timeout: DEFAULT_WATCH_TIMEOUT,
        }
    }

    /// Sets [`Params::watch_timeout`].
    #[must_use]
    pub fn with_watch_timeout(mut self, watch_timeout: Duration) -> Self {
        self.watch_timeout = watch_timeout;
        self
    }
}

/// A lease record in a Kubernetes `Lease`. See the [module documentation](self).
pub struct KubeStore {
    shared: Arc<Shared>,
    /// The watch task, started by the first `changed` call; aborted when the store is dropped.
    watcher: OnceLock<AbortOnDrop>,
}

/// What the store's requests and its watch task share.
struct Shared {
    /// For get/create/update: no retry layer; each request bounded by a tokio timeout of RP.
    requests: Api<Lease>,
    /// For the start-up access check, through the same client as `requests`.
    /// For the watch: no retry layer, no read timeout (a watch is quiet between events).
    watches: Api<Lease>,
    params: Params,
    describe: String,
    feed: watch::Sender<feed::Feed>,
    /// When `changed` polls next while the watch is down; shared by successive calls so that dropping
    /// one does not postpone the poll.
    next_poll: Mutex<Option<Instant>>,
    /// The metadata of the last Lease read or written, sent back on `update` of that version.
    last_meta: Mutex<Option<ObjectMeta>>,
    /// The last version whose oddities (missing spec, non-positive duration) were logged.
    warned: Mutex<Option<String>>,
}

/// Aborts a task when dropped.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

// === impl KubeStore ===

impl KubeStore {
    /// A store on the Lease `params.namespace/params.name`, through clients built from `config` (with
    /// kube's retry layer off and the timeouts of `params`). Sends no request; must be called within a
    /// tokio runtime (the client spawns its connection buffer).
    pub fn new(config: kube::Config, params: Params) -> Result<Self, Error> {
        let requests = client(config.clone(), Some(params.request_timeout))?;
        let watches = client(config, None)?;
        let describe = format!("lease {}/{}", params.namespace, params.name);
        let shared = Shared {
            requests: Api::namespaced(requests, &params.namespace),
            watches: Api::namespaced(watches, &params.namespace),
            params,
            describe,
            feed: watch::Sender::new(feed::Feed::default()),
            next_poll: Mutex::new(None),
            last_meta: Mutex::new(None),
            warned: Mutex::new(None),
        };
        Ok(KubeStore {
            shared: Arc::new(shared),
            watcher: OnceLock::new(),
        })
    }

    /// The Lease's namespace and name.
    pub fn params(&self) -> &Params {
        &self.shared.params
    }

    /// The client of the store's requests (no retry layer; bound each request, as the store does, to `params.request_timeout`), for
    /// other writes about the Lease, such as its Events.
    pub fn client(&self) -> kube::Client {
        self.shared.requests.clone().into_client()
    }

    /// True while the watch is established (for tests and diagnostics).
    pub fn is_watching(&self) -> bool {
        self.shared.feed.borrow().watching
    }

    fn ensure_watching(&self) {
        self.watcher.get_or_init(|| {
            let shared = Arc::clone(&self.shared);
            AbortOnDrop(tokio::spawn(feed::run(shared)))
        });
    }

    /// Asks the API server (`SelfSubjectAccessReview`) whether this replica may get, watch, create and
    /// update the Lease, so a missing RBAC verb is a clear error at start rather than a failure once
    /// leading. Denied verbs: [`Error::AccessDenied`]. A review that cannot be made (an API server without
    /// the authorization API, a timeout) proves nothing: it is logged and the check passes; the requests
    /// themselves still report 403 as [`Error::Forbidden`].
    pub async fn check_access(&self) -> Result<(), Error> {
        let params = &self.shared.params;
        let lease = Reviewed {
            group: "coordination.k8s.io",
            resource: "leases",
            namespace: &params.namespace,
            name: &params.name,
            what: "the Lease",
        };
        access::check_access(
            &self.client(),
            lease,
            &REQUIRED_VERBS,
            params.request_timeout,
        )
        .await
        .map_err(|denied| Error::AccessDenied {
            store: self.describe(),
            verbs: denied,
            namespace: params.namespace.clone(),
        })
    }

    /// Refuses to start under an identity that a live process already holds the Lease with.
    ///
    /// If the Lease names `identity` and its own fields say it may still be live (`renewTime` +
    /// `leaseDurationSeconds` + `window` is after the local wall clock — generous on purpose: the wall
    /// clock only decides whether to look closer), watches it for `window` (the lease duration). A renewal
    /// that still names `identity` proves another live process: [`Error::IdentityInUse`]. No change for
    /// `window`, a release, or another holder: the record is an earlier incarnation's, and the elector
    /// treats it like anyone else's (it may be taken over only after it expires).
    pub async fn check_identity(&self, identity: &str, window: Duration) -> Result<(), Error> {
        let Some(mut current) = self.get().await? else {
            return Ok(());
        };
        if current.record.holder() != Some(identity) || !may_be_live(&current.record, window) {
            return Ok(());
        }
        tracing::warn!(
            %identity,
            lease = %self.describe(),
            window_seconds = window.as_secs_f64(),
            "the Lease names this identity; watching it to tell an earlier incarnation from a live process"
        );
        let until = Instant::now() + window;
        loop {
            let change =
                tokio::time::timeout_at(until, self.changed(Some(current.version.clone())));
            let record = match change.await {
                Err(_quiet) => return Ok(()),
                Ok(Change::Record(record)) => record,
                Ok(Change::Unknown) => self.get().await?,
            };
            match record {
                Some(next) if next.version == current.version => current = next,
                Some(next) if next.record.holder() == Some(identity) => {
                    return Err(Error::IdentityInUse {
                        store: self.describe(),
                        identity: identity.to_owned(),
                    })
                }
                _ => return Ok(()),
            }
        }
    }
}

/// True unless the record's own fields say it expired more than `allowance` ago by the local wall clock.
fn may_be_live(record: &LeaseRecord, allowance: Duration) -> bool {
    let (Some(renewed), duration) = (record.renew_time, record.lease_duration_seconds) else {
        return false;
    };
    if duration <= 0 {
        return false;
    }
    let allowance = chrono::Duration::from_std(allowance).unwrap_or(chrono::Duration::MAX);
    let lasts = chrono::Duration::seconds(i64::from(duration)).checked_add(&allowance);
    lasts
        .and_then(|lasts| renewed.checked_add_signed(lasts))
        .is_none_or(|expiry| expiry > Utc::now())
}

impl std::fmt::Debug for KubeStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeStore")
            .field("params", &self.shared.params)
            .finish_non_exhaustive()
    }
}

impl LeaseStore for KubeStore {
    fn describe(&self) -> String {
        self.shared.describe.clone()
    }

    async fn get(&self) -> Result<Option<Versioned>, Error> {
        self.shared.get().await
    }

    async fn create(&self, record: &LeaseRecord) -> Result<Versioned, Error> {
        let shared = &self.shared;
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(shared.params.name.clone()),
                namespace: Some(shared.params.namespace.clone()),
                ..ObjectMeta::default()
            },
            spec: Some(to_spec(record)),
        };
        let post = PostParams::default();
        let request = shared.requests.create(&post, &lease);
        let created = match shared.request(Verb::Create, request).await {
            Err(Error::Api { code: CONFLICT, .. }) => {
                return Err(Error::AlreadyExists {
                    store: shared.describe.clone(),
                })
            }
            other => other?,
        };
        let created = shared.versioned(Verb::Create, created)?;
        shared.learn(Some(created.clone()));
        Ok(created)
    }

    async fn update(&self, record: &LeaseRecord, version: &str) -> Result<Versioned, Error> {
        let shared = &self.shared;
        let lease = Lease {
            metadata: shared.metadata_for(version),
            spec: Some(to_spec(record)),
        };
        let post = PostParams::default();
        let request = shared.requests.replace(&shared.params.name, &post, &lease);
        let replaced = match shared.request(Verb::Update, request).await {
            Err(Error::Api { code: CONFLICT, .. }) => {
                return Err(Error::Conflict {
                    store: shared.describe.clone(),
                    expected: version.to_owned(),
                })
            }
            Err(Error::Api {
                code: NOT_FOUND, ..
            }) => {
                return Err(Error::NotFound {
                    store: shared.describe.clone(),
                })
            }
            other => other?,
        };
        let replaced = shared.versioned(Verb::Update, replaced)?;
        shared.learn(Some(replaced.clone()));
        Ok(replaced)
    }

    async fn changed(&self, known: Option<String>) -> Change {
        self.ensure_watching();
        let shared = &self.shared;
        let mut feed = shared.feed.subscribe();
        loop {
            let (latest, watching) = {
                let current = feed.borrow_and_update();
                (current.latest.clone(), current.watching)
            };
            if let Some(latest) = latest {
                if latest.as_ref().map(|v| v.version.as_str()) != known.as_deref() {
                    return Change::Record(latest);
                }
            }
            if watching {
                if feed.changed().await.is_err() {
                    return Change::Unknown;
                }
                continue;
            }
            tokio::select! {
                changed = feed.changed() => if changed.is_err() {
                    return Change::Unknown;
                },
                () = tokio::time::sleep_until(shared.next_poll()) => {
                    shared.polled();
                    // A failed poll is retried at the next one; the elector's own requests report errors.
                    if let Err(e) = shared.get().await {
                        tracing::debug!(error = %e, "polling the lease failed");
                    }
                }
            }
        }
    }
}

// === impl Shared ===

impl Shared {
    async fn get(&self) -> Result<Option<Versioned>, Error> {
        let lease = self
            .request(Verb::Get, self.requests.get_opt(&self.params.name))
            .await?;
        let current = lease.map(|l| self.versioned(Verb::Get, l)).transpose()?;
        self.learn(current.clone());
        Ok(current)
    }

    /// Runs one request, bounded by the request timeout, and classifies its error.
    async fn request<T>(
        &self,
        verb: Verb,
        request: impl Future<Output = Result<T, kube::Error>>,
    ) -> Result<T, Error> {
        bounded_request(self.params.request_timeout, request)
            .await
            .map_err(|failure| self.failure(verb, failure))
    }

    /// Names a failed request in our error type; 409 and 404 stay [`Error::Api`] for the caller to
    /// interpret.
    fn failure(&self, verb: Verb, failure: kubernetes::Error) -> Error {
        let store = self.describe.clone();
        match failure {
            kubernetes::Error::Status {
                code: FORBIDDEN,
                message,
                ..
            } => Error::Forbidden {
                store,
                verb,
                namespace: self.params.namespace.clone(),
                message,
            },
            kubernetes::Error::Status {
                code: UNAUTHORIZED,
                message,
                ..
            } => Error::Unauthorized {
                store,
                verb,
                message,
            },
            kubernetes::Error::Status {
                code,
                reason,
                message,
            } => Error::Api {
                store,
                verb,
                code,
                reason,
                message,
            },
            kubernetes::Error::Timeout { after } | kubernetes::Error::Idle { after } => {
                Error::Timeout { store, verb, after }
            }
            kubernetes::Error::Malformed { detail } => Error::Malformed {
                store,
                verb,
                detail,
            },
            kubernetes::Error::Unreachable { detail } => Error::Unreachable {
                store,
                verb,
                detail,
            },
        }
    }

    /// The record of `lease`, remembering its metadata for the next update.
    fn versioned(&self, verb: Verb, lease: Lease) -> Result<Versioned, Error> {
        let version = lease
            .metadata
            .resource_version
            .clone()
            .filter(|v| !v.is_empty())
            .ok_or_else(|| Error::Malformed {
                store: self.describe.clone(),
                verb,
                detail: "the Lease has no metadata.resourceVersion".to_owned(),
            })?;
        self.warn_once(&version, lease.spec.as_ref());
        let record = to_record(lease.spec.as_ref());
        *lock(&self.last_meta) = Some(lease.metadata);
        Ok(Versioned { record, version })
    }

    /// The metadata to send when replacing `version`: the last object's, if that is the version.
    fn metadata_for(&self, version: &str) -> ObjectMeta {
        let last = lock(&self.last_meta).clone();
        match last {
            Some(meta) if meta.resource_version.as_deref() == Some(version) => meta,
            _ => ObjectMeta {
                name: Some(self.params.name.clone()),
                namespace: Some(self.params.namespace.clone()),
                resource_version: Some(version.to_owned()),
                ..ObjectMeta::default()
            },
        }
    }

    /// Publishes the most recently received record.
    fn learn(&self, current: Option<Versioned>) {
        self.feed.send_if_modified(|feed| feed.learn(current));
    }

    fn set_watching(&self, watching: bool) {
        self.feed.send_if_modified(|feed| {
            let changed = feed.watching != watching;
            feed.watching = watching;
            changed
        });
    }

    fn next_poll(&self) -> Instant {
        *lock(&self.next_poll).get_or_insert_with(|| Instant::now() + self.params.poll_interval)
    }

    fn polled(&self) {
        *lock(&self.next_poll) = Some(Instant::now() + self.params.poll_interval);
    }

    /// Logs, once per version, a record that client-go would read with defaults.
    fn warn_once(&self, version: &str, spec: Option<&LeaseSpec>) {
        let Some(oddity) = oddity(spec) else {
            return;
        };
        let mut warned = lock(&self.warned);
        if warned.as_deref() != Some(version) {
            *warned = Some(version.to_owned());
            tracing::warn!(
                lease = %self.describe,
                resource_version = version,
                "the Lease {oddity}; reading it as client-go does (missing fields are empty, expiry \
                 is judged from our own lease duration)"
            );
        }
    }
}

/// What is odd about a Lease written by someone else, if anything.
fn oddity(spec: Option<&LeaseSpec>) -> Option<String> {
    let Some(spec) = spec else {
        return Some("has no spec".to_owned());
    };
    let held = spec
        .holder_identity
        .as_deref()
        .is_some_and(|h| !h.is_empty());
    match spec.lease_duration_seconds {
        Some(d) if held && d <= 0 => Some(format!("has leaseDurationSeconds {d}")),
        None if held => Some("has no leaseDurationSeconds".to_owned()),
        _ => spec
            .lease_transitions
            .filter(|t| *t < 0)
            .map(|t| format!("has leaseTransitions {t}")),
    }
}

/// The Lease spec as client-go writes it: every field set, a released lease as `holderIdentity: ""`.
fn to_spec(record: &LeaseRecord) -> LeaseSpec {
    LeaseSpec {
        holder_identity: Some(record.holder_identity.clone().unwrap_or_default()),
        lease_duration_seconds: Some(record.lease_duration_seconds),
        acquire_time: record.acquire_time.and_then(to_micro_time),
        renew_time: record.renew_time.and_then(to_micro_time),
        lease_transitions: Some(record.lease_transitions),
        ..LeaseSpec::default()
    }
}

/// The record in a Lease spec, read as client-go reads it: missing fields are empty.
fn to_record(spec: Option<&LeaseSpec>) -> LeaseRecord {
    let spec = spec.cloned().unwrap_or_default();
    LeaseRecord {
        holder_identity: spec.holder_identity,
        lease_duration_seconds: spec.lease_duration_seconds.unwrap_or(0),
        acquire_time: spec.acquire_time.as_ref().and_then(from_micro_time),
        renew_time: spec.renew_time.as_ref().and_then(from_micro_time),
        lease_transitions: spec.lease_transitions.unwrap_or(0),
    }
}

fn to_micro_time(at: DateTime<Utc>) -> Option<MicroTime> {
    let nanos = at.timestamp_nanos_opt()?;
    k8s_openapi::jiff::Timestamp::from_nanosecond(i128::from(nanos))
        .ok()
        .map(MicroTime)
}

fn from_micro_time(at: &MicroTime) -> Option<DateTime<Utc>> {
    let nanos = i64::try_from(at.0.as_nanosecond()).ok()?;
    Some(DateTime::from_timestamp_nanos(nanos))
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(rfc3339: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(rfc3339)
            .expect("valid time")
            .with_timezone(&Utc)
    }

    fn held(holder: &str) -> LeaseRecord {
        LeaseRecord {
            holder_identity: Some(holder.to_owned()),
            lease_duration_seconds: 15,
            acquire_time: Some(at("2025-03-01T10:00:00.123456789Z")),
            renew_time: Some(at("2025-03-01T10:00:05Z")),
            lease_transitions: 4,
        }
    }

    fn shared_for_tests() -> Shared {
        let config = kube::Config::new("http://127.0.0.1:9".parse().expect("uri"));
        let params = Params::new("ns", "lock", Duration::from_millis(500));
        KubeStore::new(config, params)
            .map(|store| Arc::try_unwrap(store.shared).ok().expect("sole owner"))
            .expect("a client for a plain-HTTP URL")
    }

    #[test]
    fn the_spec_is_written_with_client_go_field_names_and_micro_times() {
        let json = serde_json::to_value(to_spec(&held("pod-a"))).expect("serializes");
        assert_eq!(
            json,
            serde_json::json!({
                "holderIdentity": "pod-a",
                "leaseDurationSeconds": 15,
                "acquireTime": "2025-03-01T10:00:00.123456Z",
                "renewTime": "2025-03-01T10:00:05.000000Z",
                "leaseTransitions": 4,
            })
        );
    }

    #[test]
    fn a_released_record_is_written_with_an_empty_holder_as_client_go_does() {
        let mut record = held("pod-a");
        record.holder_identity = None;
        let spec = to_spec(&record);
        assert_eq!(spec.holder_identity.as_deref(), Some(""));
        assert_eq!(to_record(Some(&spec)).holder(), None);
    }

    #[test]
    fn a_client_go_lease_is_read_field_by_field() {
        let spec: LeaseSpec = serde_json::from_value(serde_json::json!({
            "holderIdentity": "go-1",
            "leaseDurationSeconds": 10,
            "acquireTime": "2025-03-01T10:00:00.000000Z",
            "renewTime": "2025-03-01T10:00:08.500000Z",
            "leaseTransitions": 7,
        }))
        .expect("parses");
        let record = to_record(Some(&spec));
        assert_eq!(record.holder(), Some("go-1"));
        assert_eq!(record.lease_duration_seconds, 10);
        assert_eq!(record.renew_time, Some(at("2025-03-01T10:00:08.5Z")));
        assert_eq!(record.lease_transitions, 7);
    }

    #[test]
    fn a_null_holder_or_a_missing_spec_reads_as_a_free_lease() {
        let spec: LeaseSpec =
            serde_json::from_value(serde_json::json!({"holderIdentity": null})).expect("parses");
        assert_eq!(to_record(Some(&spec)).holder(), None);
        let empty = to_record(None);
        assert_eq!(empty.holder(), None);
        assert_eq!(empty.lease_transitions, 0);
        assert_eq!(empty.lease_duration_seconds, 0);
    }

    #[test]
    fn odd_records_are_named_and_normal_ones_are_not() {
        assert_eq!(oddity(None).as_deref(), Some("has no spec"));
        let mut spec = to_spec(&held("b"));
        assert_eq!(oddity(Some(&spec)), None);
        spec.lease_duration_seconds = Some(-3);
        assert_eq!(
            oddity(Some(&spec)).as_deref(),
            Some("has leaseDurationSeconds -3")
        );
        spec.lease_duration_seconds = Some(0);
        spec.holder_identity = Some(String::new());
        assert_eq!(oddity(Some(&spec)), None, "a released lease may say 0");
        spec.lease_transitions = Some(-1);
        assert_eq!(
            oddity(Some(&spec)).as_deref(),
            Some("has leaseTransitions -1")
        );
    }

    #[tokio::test]
    async fn a_forbidden_answer_names_the_verb_the_resource_and_the_rule() {
        let shared = shared_for_tests();
        let status = kubernetes::Error::status(
            403,
            "Forbidden",
            "leases.coordination.k8s.io \"lock\" is forbidden: User \"x\" cannot update resource",
        );
        let error = shared.failure(Verb::Update, status);
        assert!(!error.is_transient());
        let text = error.to_string();
        for needle in [
            "lease ns/lock",
            "\"update\"",
            "\"leases\"",
            "\"coordination.k8s.io\"",
            "namespace \"ns\"",
            "cannot update resource",
        ] {
            assert!(text.contains(needle), "{needle} missing from: {text}");
        }
    }

    #[tokio::test]
    async fn server_errors_are_transient_and_client_errors_are_not() {
        let shared = shared_for_tests();
        let api = |code: u16| shared.failure(Verb::Get, kubernetes::Error::status(code, "y", "x"));
        assert!(api(500).is_transient());
        assert!(api(503).is_transient());
        assert!(api(429).is_transient());
        assert!(!api(401).is_transient());
        assert!(!api(422).is_transient());
        let malformed = shared.failure(Verb::Get, kubernetes::Error::malformed());
        assert!(matches!(malformed, Error::Malformed { .. }));
        assert!(malformed.is_transient());
    }

    #[tokio::test]
    async fn a_lease_without_a_resource_version_is_malformed() {
        let shared = shared_for_tests();
        let lease = Lease {
            metadata: ObjectMeta::default(),
            spec: Some(to_spec(&held("a"))),
        };
        let error = shared.versioned(Verb::Get, lease).expect_err("no version");
        assert!(error.to_string().contains("resourceVersion"), "{error}");
    }

    #[tokio::test]
    async fn an_update_sends_back_the_metadata_of_the_version_it_replaces() {
        let shared = shared_for_tests();
        let mut labels = std::collections::BTreeMap::new();
        labels.insert("app".to_owned(), "cron".to_owned());
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some("lock".into()),
                resource_version: Some("41".into()),
                labels: Some(labels.clone()),
                ..ObjectMeta::default()
            },
            spec: None,
        };
        shared.versioned(Verb::Get, lease).expect("versioned");
        assert_eq!(shared.metadata_for("41").labels, Some(labels));
        let other = shared.metadata_for("40");
        assert_eq!(other.labels, None);
        assert_eq!(other.resource_version.as_deref(), Some("40"));
        assert_eq!(other.name.as_deref(), Some("lock"));
    }

    #[test]
    fn the_feed_reports_a_record_only_when_its_version_is_new() {
        let mut feed = feed::Feed::default();
        let v = |version: &str| {
            Some(Versioned {
                record: held("a"),
                version: version.to_owned(),
            })
        };
        assert!(feed.learn(v("1")));
        assert!(!feed.learn(v("1")));
        assert!(feed.learn(None));
        assert!(!feed.learn(None));
        assert!(feed.learn(v("2")));
    }
}
