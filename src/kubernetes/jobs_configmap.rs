//! The jobs ConfigMap as a reload source, watched through the Kubernetes API: an edit applies as soon as
//! the API server has it, without the kubelet's sync delay of a mounted volume.
//!
//! # Requests
//!
//! RBAC may grant only `get` and `watch` on the one ConfigMap (`resourceNames: [NAME]`), so this module
//! never lists. It GETs the object, then watches the collection with `fieldSelector=metadata.name=NAME`
//! from the resourceVersion read: the API server authorizes a watch that selects a single name against
//! `resourceNames`. The watch asks for bookmarks, which advance the resourceVersion, so that the re-watch
//! after the server ends a request (`timeoutSeconds`, [`Params::watch_timeout`]) starts where the last one
//! stopped. On `410 Gone` the version is too old: the ConfigMap is read again and watched from there.
//!
//! Every request is bounded by [`Params::request_timeout`], and a watch that delivers nothing (no event, no
//! bookmark, no end) for [`Params::watch_timeout`] plus that is treated as broken: kube bounds neither.
//!
//! # What is published
//!
//! A [`Snapshot`] whose origin is [`ConfigMapRef::origin`] (`configmap/NAMESPACE/NAME/KEY`, so that
//! diagnostics read `configmap/ns/name/jobs.yaml:3:5: ...`) and whose text is `data[KEY]`, or why there
//! is none: the key is missing (the keys present are listed; a key under `binaryData` is named as such),
//! or the ConfigMap was deleted. These are configuration problems: the [`Reloader`](crate::reload::Reloader)
//! reports them and keeps the jobs in force. A snapshot is published only if it differs from the one in
//! the channel, so an edit that leaves the text alone (a label, an annotation, another key) costs nothing.
//!
//! # Re-reading on request
//!
//! A [`Reread`] request (SIGHUP) drops whatever the task is doing (a watch, a pause after a failure, the
//! wait between polls) and reads the ConfigMap at once with a GET, then watches from the version read,
//! as after a `410 Gone`. While the watch is forbidden that also tries the watch again, so a request is
//! the way to pick up a newly granted `watch` verb without waiting. An unchanged text is logged, since
//! nothing else would answer the request.
//!
//! # Trouble
//!
//! A dropped watch, a 5xx, a timeout or a refused connection says nothing about the jobs, so it is never
//! published. It is logged at warn once per outage (at debug on every further retry) and at info when the
//! watch is back; meanwhile the module pauses [`Params::retry_interval`], reads the ConfigMap again (which
//! also catches edits made while it was down) and re-watches.
//!
//! A watch refused with 403 at run time (the `watch` verb is missing) is logged at warn once; the
//! ConfigMap is then read every [`Params::poll_interval`] (default [`DEFAULT_POLL_INTERVAL`], slow enough
//! to stay cheap), and the watch is tried again every [`WATCH_RETRY_WHILE_POLLING`] in case the rule was
//! added.
//!
//! # The client
//!
//! The functions take a `kube::Client`. It should have kube's retry layer off (`Config::default_retry`:
//! this module bounds and retries every request itself) and no read timeout shorter than the watch's idle
//! limit (a watch is quiet between events; kube's default `Config` sets none).

use std::convert::Infallible;
use std::fmt;
use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::DEFAULT_CONFIG_MAP_KEY;
use crate::kubernetes::config_map::{text_under, Failure, FailureKind, Missing, NamedConfigMap};
use crate::kubernetes::names::check_object_name;
use crate::kubernetes::watch::{self as object_watch, Seen, Watched};
use crate::kubernetes::{self, UNAUTHORIZED};
use crate::reload::{publish, Reread, Snapshot};

/// Default of [`Params::request_timeout`].
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Default of [`Params::watch_timeout`] (kube's own default `timeoutSeconds`).
pub const DEFAULT_WATCH_TIMEOUT: Duration = Duration::from_secs(290);
/// Default of [`Params::retry_interval`].
pub const DEFAULT_RETRY_INTERVAL: Duration = Duration::from_secs(2);
/// Default of [`Params::poll_interval`].
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(10);
/// While the watch is forbidden, how often it is tried again (an RBAC rule may have been added since).
pub const WATCH_RETRY_WHILE_POLLING: Duration = Duration::from_secs(300);
/// The verbs leasecron needs on the ConfigMap, checked at start by [`check_access`].
pub const REQUIRED_VERBS: [&str; 2] = ["get", "watch"];

/// The longest ConfigMap key (as the API server's `IsConfigMapKey`).
const MAX_KEY_LEN: usize = 253;
/// The text of a snapshot when the ConfigMap is gone.
const DELETED: &str = "the ConfigMap was deleted";

/// Which ConfigMap key holds the jobs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigMapRef {
    /// The ConfigMap's namespace (the Lease's).
    pub namespace: String,
    /// The ConfigMap's name.
    pub name: String,
    /// The key under `data` whose value is the jobs text.
    pub key: String,
}

/// How this module talks to the API server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Params {
    /// The limit of every request (a GET, opening a watch, an access review). Default
    /// [`DEFAULT_REQUEST_TIMEOUT`].
    pub request_timeout: Duration,
    /// How long one watch request stays open (`timeoutSeconds`) before a re-watch. A watch that delivers
    /// nothing for this long plus `request_timeout` is treated as broken. Default
    /// [`DEFAULT_WATCH_TIMEOUT`].
    pub watch_timeout: Duration,
    /// The pause after a failure before the ConfigMap is read again. Default [`DEFAULT_RETRY_INTERVAL`].
    pub retry_interval: Duration,
    /// How often the ConfigMap is read while its watch is forbidden. Default [`DEFAULT_POLL_INTERVAL`].
    pub poll_interval: Duration,
}

/// Why the ConfigMap cannot be named, read or watched.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The flag value is not `NAME[/KEY]` with a valid name and key.
    #[error("ConfigMap reference {value:?} (NAME[/KEY]): {why}")]
    InvalidRef {
        /// The value given.
        value: String,
        /// What is wrong with it.
        why: String,
    },
    /// There is no such ConfigMap (HTTP 404).
    #[error("{origin}: there is no ConfigMap {name:?} in namespace {namespace:?}")]
    NotFound {
        /// [`ConfigMapRef::origin`].
        origin: String,
        /// The namespace.
        namespace: String,
        /// The name.
        name: String,
    },
    /// The ConfigMap has no text under the key.
    #[error("{origin}: {why}")]
    MissingKey {
        /// [`ConfigMapRef::origin`].
        origin: String,
        /// Which keys there are, or that the key is under `binaryData`.
        why: String,
    },
    /// The API server refused a request for lack of permission (HTTP 403): an RBAC rule is missing.
    #[error(
        "{origin}: {verb} is forbidden: grant this replica's service account the RBAC verbs \"get\" and \
         \"watch\" on resource \"configmaps\" (API group \"\") with resourceNames [\"{name}\"] in \
         namespace \"{namespace}\"; the API server said: {message}"
    )]
    Forbidden {
        /// [`ConfigMapRef::origin`].
        origin: String,
        /// The refused request: `get` or `watch`.
        verb: &'static str,
        /// The ConfigMap's namespace.
        namespace: String,
        /// The ConfigMap's name.
        name: String,
        /// The API server's message.
        message: String,
    },
    /// A `SelfSubjectAccessReview` at start says this replica lacks some of [`REQUIRED_VERBS`].
    #[error(
        "{origin}: this replica's service account may not {} the ConfigMap: add the RBAC rule \
         {{apiGroups: [\"\"], resources: [\"configmaps\"], resourceNames: [\"{name}\"], verbs: [\"get\", \
         \"watch\"]}} in namespace \"{namespace}\"",
        .verbs.join(", ")
    )]
    AccessDenied {
        /// [`ConfigMapRef::origin`].
        origin: String,
        /// The denied verbs.
        verbs: Vec<&'static str>,
        /// The ConfigMap's namespace.
        namespace: String,
        /// The ConfigMap's name.
        name: String,
    },
    /// The API server did not accept our credentials (HTTP 401).
    #[error(
        "{origin}: {verb}: the API server rejected the credentials (401 Unauthorized): {message}"
    )]
    Unauthorized {
        /// [`ConfigMapRef::origin`].
        origin: String,
        /// The refused request.
        verb: &'static str,
        /// The API server's message.
        message: String,
    },
    /// The API server answered with an error status that retrying will not change (400, 422, ...).
    #[error("{origin}: {verb} failed: HTTP {code} {reason}: {message}")]
    Api {
        /// [`ConfigMapRef::origin`].
        origin: String,
        /// The failed request.
        verb: &'static str,
        /// The HTTP status code.
        code: u16,
        /// The Status reason, if any.
        reason: String,
        /// The API server's message.
        message: String,
    },
    /// The API server cannot be reached or cannot answer now: a timeout, a refused or dropped
    /// connection, 408, 429 or a 5xx, an unreadable answer. Retrying later may succeed.
    #[error("{origin}: {verb}: the Kubernetes API is unavailable: {detail}")]
    Unavailable {
        /// [`ConfigMapRef::origin`].
        origin: String,
        /// The failed request.
        verb: &'static str,
        /// What happened.
        detail: String,
    },
}

/// What the watch task does next.
#[derive(Debug)]
enum State {
    /// Read the ConfigMap, publish what it says, then watch from its version.
    Read,
    /// Watch from this resourceVersion (empty when there is no ConfigMap: from now).
    Watch(String),
    /// Wait [`Params::retry_interval`] after a failure, then read again.
    Pause,
    /// The watch is forbidden: read every [`Params::poll_interval`], and watch again after `until`.
    Poll {
        /// When to try the watch again.
        until: Instant,
    },
}

/// The requests about one ConfigMap.
struct Source {
    /// Described by [`ConfigMapRef::origin`].
    config_map: NamedConfigMap,
    target: ConfigMapRef,
    params: Params,
}

/// The watch task's state between steps.
struct Watcher {
    source: Source,
    out: watch::Sender<Snapshot>,
    /// True from the first failure of an outage until the watch is back: only the first is a warning.
    down: bool,
    /// True once a forbidden watch was reported, until a watch succeeds.
    forbidden: bool,
    /// True from a [`Reread`] request until the read it asked for.
    requested: bool,
}

// === impl ConfigMapRef ===

impl ConfigMapRef {
    /// Parses the flag value `NAME[/KEY]` (KEY defaults to [`DEFAULT_CONFIG_MAP_KEY`]), in `namespace`. NAME must
    /// be a DNS-1123 subdomain and KEY a ConfigMap key (`[-._a-zA-Z0-9]+`, at most 253 characters, not
    /// `.`, `..` or starting with `..`), as the API server requires; the error says which rule failed.
    pub fn parse(value: &str, namespace: String) -> Result<ConfigMapRef, Error> {
        let invalid = |why: String| Error::InvalidRef {
            value: value.to_owned(),
            why,
        };
        let (name, key) = value
            .split_once('/')
            .unwrap_or((value, DEFAULT_CONFIG_MAP_KEY));
        check_object_name(name).map_err(|why| invalid(format!("the name: {why}")))?;
        check_key(key).map_err(|why| invalid(format!("the key: {why}")))?;
        Ok(ConfigMapRef {
            namespace,
            name: name.to_owned(),
            key: key.to_owned(),
        })
    }

    /// `configmap/NAMESPACE/NAME/KEY`: the origin in diagnostics.
    pub fn origin(&self) -> String {
        format!("configmap/{}/{}/{}", self.namespace, self.name, self.key)
    }

    /// What `config_map` says about the jobs: the text under the key, or why there is none.
    pub fn snapshot(&self, config_map: &ConfigMap) -> Snapshot {
        Snapshot {
            origin: self.origin(),
            text: self.text(config_map),
        }
    }

    /// The ConfigMap, for requests through `client` (described by its origin).
    fn named(&self, client: &kube::Client, params: &Params) -> NamedConfigMap {
        NamedConfigMap {
            client: client.clone(),
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            describe: self.origin(),
            request_timeout: params.request_timeout,
        }
    }

    /// The snapshot of a ConfigMap that is gone.
    fn deleted(&self) -> Snapshot {
        Snapshot {
            origin: self.origin(),
            text: Err(DELETED.to_owned()),
        }
    }

    fn text(&self, config_map: &ConfigMap) -> Result<String, String> {
        let key = &self.key;
        match text_under(config_map, key) {
            Ok(text) => Ok(text.to_owned()),
            Err(Missing::InBinaryData) => Err(format!(
                "key {key} is under binaryData: the jobs must be under data, as text"
            )),
            Err(Missing::NotFound(why)) => Err(why),
        }
    }
}

impl fmt::Display for ConfigMapRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.origin())
    }
}

/// Checks a ConfigMap key as the API server's `IsConfigMapKey` does.
fn check_key(key: &str) -> Result<(), String> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    if key.is_empty() {
        return Err("it is empty".to_owned());
    }
    if key.len() > MAX_KEY_LEN {
        return Err(format!("it is longer than {MAX_KEY_LEN} characters"));
    }
    if let Some(c) = key.chars().find(|c| !allowed(*c)) {
        return Err(format!(
            "{key:?} has the character {c:?} (a ConfigMap key consists of letters, digits, `-`, `_` \
             and `.`)"
        ));
    }
    if key == "." || key.starts_with("..") {
        return Err(format!("{key:?} may not be `.` or `..` or start with `..`"));
    }
    Ok(())
}

// === impl Params ===

impl Default for Params {
    fn default() -> Params {
        Params {
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            watch_timeout: DEFAULT_WATCH_TIMEOUT,
            retry_interval: DEFAULT_RETRY_INTERVAL,
            poll_interval: DEFAULT_POLL_INTERVAL,
        }
    }
}

// === impl Error ===

impl Error {
    /// True if retrying later may succeed ([`Error::Unavailable`]): a runtime failure, not a
    /// configuration error.
    pub fn is_transient(&self) -> bool {
        matches!(self, Error::Unavailable { .. })
    }
}

impl From<Failure> for Error {
    fn from(Failure { store, verb, kind }: Failure) -> Error {
        let origin = store;
        match kind {
            FailureKind::Forbidden {
                namespace,
                name,
                message,
            } => Error::Forbidden {
                origin,
                verb,
                namespace,
                name,
                message,
            },
            FailureKind::Api {
                code: UNAUTHORIZED,
                message,
                ..
            } => Error::Unauthorized {
                origin,
                verb,
                message,
            },
            FailureKind::Api {
                code,
                reason,
                message,
            } => Error::Api {
                origin,
                verb,
                code,
                reason,
                message,
            },
            FailureKind::Unavailable { detail } => Error::Unavailable {
                origin,
                verb,
                detail,
            },
        }
    }
}

/// Reads the ConfigMap at start and returns its snapshot.
///
/// A missing ConfigMap ([`Error::NotFound`]), a refused read ([`Error::Forbidden`], with the RBAC rule
/// to add) and a missing key ([`Error::MissingKey`]) are configuration errors; a timeout, a 5xx or a
/// refused connection is [`Error::Unavailable`] ([`Error::is_transient`]).
pub async fn read(
    client: &kube::Client,
    target: &ConfigMapRef,
    params: &Params,
) -> Result<Snapshot, Error> {
    let Some(config_map) = target.named(client, params).get().await? else {
        return Err(Error::NotFound {
            origin: target.origin(),
            namespace: target.namespace.clone(),
            name: target.name.clone(),
        });
    };
    let snapshot = target.snapshot(&config_map);
    match snapshot.text {
        Ok(_) => Ok(snapshot),
        Err(why) => Err(Error::MissingKey {
            origin: snapshot.origin,
            why,
        }),
    }
}

/// Asks the API server (`SelfSubjectAccessReview`) whether this replica may get and watch the ConfigMap
/// (by name, as a `resourceNames` rule grants it), so a missing RBAC verb is a clear error at start.
/// Denied verbs: [`Error::AccessDenied`]. A review that cannot be made (no authorization API, a timeout)
/// proves nothing: it is logged at debug and the check passes; the requests themselves still report 403.
pub async fn check_access(
    client: &kube::Client,
    target: &ConfigMapRef,
    params: &Params,
) -> Result<(), Error> {
    target
        .named(client, params)
        .check_access("the jobs ConfigMap", &REQUIRED_VERBS)
        .await
        .map_err(|denied| Error::AccessDenied {
            origin: target.origin(),
            verbs: denied,
            namespace: target.namespace.clone(),
            name: target.name.clone(),
        })
}

/// Watches the ConfigMap until `stop` is cancelled, publishing on `out` every snapshot that differs from
/// the one there (`out` starts with the snapshot [`read`] at start); reads it again at once whenever
/// `reread` asks. See the [module documentation](self).
pub async fn watch(
    client: kube::Client,
    target: ConfigMapRef,
    params: Params,
    out: watch::Sender<Snapshot>,
    reread: Reread,
    stop: CancellationToken,
) {
    let mut watcher = Watcher {
        source: Source::new(&client, &target, &params),
        out,
        down: false,
        forbidden: false,
        requested: false,
    };
    let mut state = State::Read;
    loop {
        state = tokio::select! {
            biased;
            () = stop.cancelled() => return,
            // `step` is cancel-safe: dropping it drops a watch, a pause or a read in flight.
            () = reread.requested() => {
                watcher.requested = true;
                State::Read
            }
            next = watcher.step(state) => next,
        };
    }
}

// === impl Source ===

impl Source {
    fn new(client: &kube::Client, target: &ConfigMapRef, params: &Params) -> Source {
        Source {
            config_map: target.named(client, params),
            target: target.clone(),
            params: params.clone(),
        }
    }

    /// Names a failed request in our error type.
    fn failure(&self, verb: &'static str, failure: kubernetes::Error) -> Error {
        self.config_map.failure(verb, failure).into()
    }
}

// === impl Watcher ===

impl Watcher {
    /// Does what `state` says and returns the next state. Cancel-safe: it only reads and publishes.
    async fn step(&mut self, state: State) -> State {
        match state {
            State::Read => match self.read().await {
                Ok(version) => State::Watch(version),
                Err(e) => {
                    self.trouble(&e);
                    State::Pause
                }
            },
            State::Watch(version) => self.watch_from(version).await,
            State::Pause => {
                tokio::time::sleep(self.source.params.retry_interval).await;
                State::Read
            }
            State::Poll { until } => {
                tokio::time::sleep(self.source.params.poll_interval).await;
                match self.read().await {
                    Ok(version) if Instant::now() >= until => State::Watch(version),
                    Ok(_) => {
                        if std::mem::take(&mut self.down) {
                            tracing::info!(source = %self.source.config_map.describe, "the jobs ConfigMap can be read again (polling it: the watch is forbidden)");
                        }
                        State::Poll { until }
                    }
                    Err(e) => {
                        self.trouble(&e);
                        State::Poll { until }
                    }
                }
            }
        }
    }

    /// GETs the ConfigMap and publishes what it says; returns its resourceVersion (empty if there is
    /// none, or no ConfigMap).
    async fn read(&mut self) -> Result<String, Error> {
        let (snapshot, version) = match self.source.config_map.get().await? {
            Some(config_map) => (
                self.source.target.snapshot(&config_map),
                config_map.metadata.resource_version.unwrap_or_default(),
            ),
            None => (self.source.target.deleted(), String::new()),
        };
        let changed = self.publish(snapshot);
        if std::mem::take(&mut self.requested) && !changed {
            tracing::info!(source = %self.source.config_map.describe, "re-read the jobs ConfigMap on request: unchanged");
        }
        Ok(version)
    }

    /// Watches from `version`, re-watching from the latest version seen whenever the server ends a
    /// request, until the watch fails; returns what to do then.
    async fn watch_from(&mut self, mut version: String) -> State {
        let config_map = Watched {
            api: self.source.config_map.api(),
            name: self.source.target.name.clone(),
            watch_timeout: self.source.params.watch_timeout,
            request_timeout: self.source.params.request_timeout,
        };
        let ended = object_watch::watch_from(&config_map, &mut version, |seen| {
            match seen {
                Seen::Watching => self.watching(),
                Seen::Object(config_map) => {
                    self.publish(self.source.target.snapshot(&config_map));
                }
                Seen::Deleted(_) => {
                    self.publish(self.source.target.deleted());
                }
            }
            Ok::<(), Infallible>(())
        })
        .await;
        match ended {
            object_watch::Ended::Gone => self.gone(),
            object_watch::Ended::Refused(e) => match self.source.failure("watch", e) {
                e @ Error::Forbidden { .. } => self.watch_forbidden(&e),
                e => {
                    self.trouble(&e);
                    State::Pause
                }
            },
            object_watch::Ended::Broken(e) => {
                self.trouble(&self.source.failure("watch", e));
                State::Pause
            }
            object_watch::Ended::Rejected(never) => match never {},
        }
    }

    /// Publishes `snapshot` if it differs from the one in force; true if it did.
    fn publish(&self, snapshot: Snapshot) -> bool {
        publish(&self.out, snapshot)
    }

    /// `410 Gone`: the version is too old; read again (no pause: nothing failed).
    fn gone(&self) -> State {
        tracing::debug!(source = %self.source.config_map.describe, "watch: 410 Gone; reading the ConfigMap again");
        State::Read
    }

    /// A 403 on the watch: poll instead.
    fn watch_forbidden(&mut self, error: &Error) -> State {
        let poll_interval = humantime::format_duration(self.source.params.poll_interval);
        if std::mem::replace(&mut self.forbidden, true) {
            tracing::debug!(error = %error, "the jobs ConfigMap still cannot be watched; polling it");
        } else {
            tracing::warn!(
                error = %error,
                "cannot watch the jobs ConfigMap; reading it every {poll_interval} instead (changes \
                 apply that much later)"
            );
        }
        State::Poll {
            until: Instant::now() + WATCH_RETRY_WHILE_POLLING,
        }
    }

    /// A failure that says nothing about the jobs: warn at the start of an outage, debug after.
    fn trouble(&mut self, error: &Error) {
        let retry = humantime::format_duration(self.source.params.retry_interval);
        if std::mem::replace(&mut self.down, true) {
            tracing::debug!(error = %error, "the jobs ConfigMap is still out of reach; retrying");
        } else {
            tracing::warn!(
                error = %error,
                "cannot watch the jobs ConfigMap; the jobs in force stay, retrying every {retry} \
                 (edits made meanwhile apply once it is back)"
            );
        }
    }

    /// A watch request succeeded: an outage or a forbidden spell is over.
    fn watching(&mut self) {
        let was_down = std::mem::take(&mut self.down);
        let was_forbidden = std::mem::take(&mut self.forbidden);
        if was_down || was_forbidden {
            tracing::info!(source = %self.source.config_map.describe, "watching the jobs ConfigMap again");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use k8s_openapi::ByteString;
    use std::collections::BTreeMap;

    fn target(value: &str) -> ConfigMapRef {
        ConfigMapRef::parse(value, "ns".to_owned()).expect("valid")
    }

    fn invalid(value: &str) -> String {
        let error = ConfigMapRef::parse(value, "ns".to_owned()).expect_err("invalid");
        assert!(matches!(error, Error::InvalidRef { .. }), "{error:?}");
        error.to_string()
    }

    fn config_map(data: &[(&str, &str)]) -> ConfigMap {
        ConfigMap {
            metadata: ObjectMeta {
                name: Some("cron".to_owned()),
                resource_version: Some("7".to_owned()),
                ..ObjectMeta::default()
            },
            data: Some(
                data.iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
            ),
            ..ConfigMap::default()
        }
    }

    fn shared_source() -> Source {
        let config = kube::Config::new("http://127.0.0.1:9".parse().expect("uri"));
        let client = kube::Client::try_from(config).expect("a client for a plain-HTTP URL");
        Source::new(&client, &target("cron"), &Params::default())
    }

    #[test]
    fn the_key_defaults_to_jobs_yaml() {
        assert_eq!(
            target("cron"),
            ConfigMapRef {
                namespace: "ns".to_owned(),
                name: "cron".to_owned(),
                key: DEFAULT_CONFIG_MAP_KEY.to_owned(),
            }
        );
        let explicit = target("cron.jobs/Nightly_2.yml");
        assert_eq!(explicit.name, "cron.jobs");
        assert_eq!(explicit.key, "Nightly_2.yml");
    }

    #[test]
    fn the_origin_names_namespace_name_and_key() {
        assert_eq!(target("cron").origin(), "configmap/ns/cron/jobs.yaml");
        assert_eq!(
            target("cron/x.yaml").to_string(),
            "configmap/ns/cron/x.yaml"
        );
    }

    #[test]
    fn an_invalid_name_says_why() {
        assert!(invalid("").contains("empty"), "{}", invalid(""));
        let upper = invalid("Cron");
        assert!(
            upper.contains("the name") && upper.contains("a-z"),
            "{upper}"
        );
        assert!(invalid("-cron").contains("must start and end"));
        let long = "a".repeat(254);
        assert!(invalid(&long).contains("longer than 253"));
        assert!(invalid("/jobs.yaml").contains("the name"));
    }

    #[test]
    fn an_invalid_key_says_why() {
        assert!(invalid("cron/").contains("the key: it is empty"));
        let slash = invalid("cron/a/b");
        assert!(
            slash.contains("the key") && slash.contains("'/'"),
            "{slash}"
        );
        assert!(invalid("cron/jobs yaml").contains("' '"));
        for dots in [".", "..", "..data"] {
            let message = invalid(&format!("cron/{dots}"));
            assert!(message.contains("may not be"), "{message}");
        }
        let long = format!("cron/{}", "k".repeat(254));
        assert!(invalid(&long).contains("longer than 253"));
        assert_eq!(
            target("cron/.hidden").key,
            ".hidden",
            "one leading dot is fine"
        );
        assert_eq!(target(&format!("cron/{}", "k".repeat(253))).key.len(), 253);
    }

    #[test]
    fn the_snapshot_is_the_keys_text() {
        let snapshot = target("cron").snapshot(&config_map(&[("jobs.yaml", "jobs: []\n")]));
        assert_eq!(
            snapshot,
            Snapshot {
                origin: "configmap/ns/cron/jobs.yaml".to_owned(),
                text: Ok("jobs: []\n".to_owned()),
            }
        );
    }

    #[test]
    fn a_missing_key_lists_the_keys_there_are() {
        let snapshot = target("cron").snapshot(&config_map(&[("b", "x"), ("a", "y")]));
        assert_eq!(
            snapshot.text,
            Err("key jobs.yaml not found in data (keys: a, b)".to_owned())
        );
        let empty = target("cron").snapshot(&ConfigMap::default());
        assert_eq!(
            empty.text,
            Err("key jobs.yaml not found in data (it has no keys)".to_owned())
        );
        let keys: Vec<(String, String)> = (0..12)
            .map(|i| (format!("k{i:02}"), String::new()))
            .collect();
        let many: Vec<(&str, &str)> = keys.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let why = target("cron")
            .snapshot(&config_map(&many))
            .text
            .expect_err("missing");
        assert!(why.ends_with("k08, k09, and 2 more)"), "{why}");
    }

    #[test]
    fn a_key_under_binary_data_must_move_to_data() {
        let mut binary = config_map(&[("other", "x")]);
        binary.binary_data = Some(BTreeMap::from([(
            "jobs.yaml".to_owned(),
            ByteString(b"jobs: []\n".to_vec()),
        )]));
        let why = target("cron").snapshot(&binary).text.expect_err("binary");
        assert_eq!(
            why,
            "key jobs.yaml is under binaryData: the jobs must be under data, as text"
        );
    }

    #[test]
    fn a_deleted_configmap_is_a_snapshot_without_text() {
        assert_eq!(
            target("cron").deleted().text,
            Err("the ConfigMap was deleted".to_owned())
        );
    }

    #[tokio::test]
    async fn server_errors_are_transient_and_client_errors_are_not() {
        let source = shared_source();
        let api = |code: u16| source.failure("get", kubernetes::Error::status(code, "y", "x"));
        for code in [500, 503, 504, 429, 408] {
            assert!(api(code).is_transient(), "{code}");
        }
        for code in [400, 401, 403, 422] {
            assert!(!api(code).is_transient(), "{code}");
        }
        assert!(source
            .failure("watch", kubernetes::Error::malformed())
            .is_transient());
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_without_an_answer_times_out_as_unavailable() {
        let source = shared_source();
        let error = Error::from(
            source
                .config_map
                .request("get", std::future::pending::<Result<(), kube::Error>>())
                .await
                .expect_err("no answer"),
        );
        assert!(error.is_transient());
        assert_eq!(
            error.to_string(),
            "configmap/ns/cron/jobs.yaml: get: the Kubernetes API is unavailable: no answer within 5s"
        );
    }

    #[tokio::test]
    async fn a_forbidden_answer_names_the_verb_and_the_rule_to_add() {
        let source = shared_source();
        let status = kubernetes::Error::status(
            403,
            "Forbidden",
            "configmaps \"cron\" is forbidden: User \"x\" cannot watch resource",
        );
        let text = source.failure("watch", status).to_string();
        for needle in [
            "configmap/ns/cron/jobs.yaml: watch is forbidden",
            "\"get\" and \"watch\"",
            "resource \"configmaps\"",
            "resourceNames [\"cron\"]",
            "namespace \"ns\"",
            "cannot watch resource",
        ] {
            assert!(text.contains(needle), "{needle} missing from: {text}");
        }
    }

    #[test]
    fn denied_verbs_are_listed_with_the_rule() {
        let error = Error::AccessDenied {
            origin: target("cron").origin(),
            verbs: vec!["watch"],
            namespace: "ns".to_owned(),
            name: "cron".to_owned(),
        };
        assert_eq!(
            error.to_string(),
            "configmap/ns/cron/jobs.yaml: this replica's service account may not watch the ConfigMap: \
             add the RBAC rule {apiGroups: [\"\"], resources: [\"configmaps\"], resourceNames: \
             [\"cron\"], verbs: [\"get\", \"watch\"]} in namespace \"ns\""
        );
        assert!(!error.is_transient());
    }

    #[test]
    fn the_defaults_are_documented_values() {
        let params = Params::default();
        assert_eq!(params.request_timeout, Duration::from_secs(5));
        assert_eq!(params.watch_timeout, Duration::from_secs(290));
        assert_eq!(params.retry_interval, Duration::from_secs(2));
        assert_eq!(params.poll_interval, Duration::from_secs(10));
    }
}
