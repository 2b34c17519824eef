//! The operator controls ([`crate::controls`]) in the ConfigMap `<lease-name>-controls` beside the Lease,
//! under the key `controls.json`, as pretty JSON (`kubectl get configmap leasecron-controls -o yaml`
//! reads it).
//!
//! # Requests
//!
//! - `load` is a GET of the one ConfigMap: none is an empty document without a version; a ConfigMap
//!   without the key (the one `deploy/core` ships has no `data`) is an empty document with its
//!   `resourceVersion`; the text under the key is checked by [`Controls::parse`] ([`Error::Invalid`]);
//! - `save` without a version is a POST (409 `AlreadyExists` → [`Saved::Conflict`]: someone was first);
//! - `save` with a version is a PUT carrying it as `metadata.resourceVersion` (409 → [`Saved::Conflict`],
//!   and 404 too: the ConfigMap was deleted since it was read). It sends back the object as read, with
//!   only the key replaced: labels, annotations and other keys survive (if the store no longer holds the
//!   object of that version, it GETs it first, and a different version is a conflict without a PUT).
//!
//! Operators write it (`update`, and `create` only if it does not exist yet); the replicas only read and
//! watch it ([`REQUIRED_VERBS`], checked at start by [`ControlsConfigMap::check_access`]). A 403 names the
//! missing rule and the Role that grants it.
//!
//! As in the run state's store ([`crate::kubernetes::run_state`]), kube's retry layer is off and every
//! request is bounded by the request timeout: a hung API server is an [`Error::Unavailable`] after that
//! long, and the caller decides what to do next.
//!
//! # The replicas' feed
//!
//! [`watch()`] keeps a `watch` channel at the document: a GET, then a watch of the collection with
//! `fieldSelector=metadata.name=NAME` from the version read (so `get` and `watch` limited by
//! `resourceNames` suffice), as the jobs ConfigMap's feed ([`crate::kubernetes::jobs_configmap`]) does.
//! After `410 Gone` it reads again at once; after a failure it reads again after a pause that doubles from
//! [`FeedParams::retry_interval`] up to [`FeedParams::max_retry_interval`] (a warning at the start of an
//! outage, info when the watch is back). A watch refused with 403 is logged once, and the ConfigMap is then
//! read every [`FeedParams::poll_interval`] instead, with the watch tried again every
//! [`WATCH_RETRY_WHILE_POLLING`]. A deleted ConfigMap is the empty document (no suspension); an invalid
//! document is logged once per resourceVersion and the last valid one stays in force.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::Api;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::controls::feed::{self, Publisher};
use crate::controls::{Controls, Invalid, Read, Saved, Store, StoreFuture, CONFIG_MAP_SUFFIX, KEY};
use crate::kubernetes::config_map::{name_beside_lease, text_under, Missing, NamedConfigMap};
use crate::kubernetes::run_state::{DESCRIPTION_ANNOTATION, MANAGED_BY_LABEL};
use crate::kubernetes::watch::{self as object_watch, Seen, Watched};
use crate::kubernetes::{self, client};

/// The verbs every replica needs on the ConfigMap (to read and watch it), checked at start by
/// [`ControlsConfigMap::check_access`]. Operators need `get` and `update`.
pub const REQUIRED_VERBS: [&str; 2] = ["get", "watch"];
/// Default of [`FeedParams::watch_timeout`] (kube's own default `timeoutSeconds`).
pub const DEFAULT_WATCH_TIMEOUT: Duration = Duration::from_secs(290);
/// Default of [`FeedParams::retry_interval`].
pub const DEFAULT_RETRY_INTERVAL: Duration = Duration::from_secs(1);
/// Default of [`FeedParams::max_retry_interval`].
pub const DEFAULT_MAX_RETRY_INTERVAL: Duration = Duration::from_secs(30);
/// Default of [`FeedParams::poll_interval`].
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(5);
/// While the watch is forbidden, how often it is tried again (an RBAC rule may have been added since).
pub const WATCH_RETRY_WHILE_POLLING: Duration = Duration::from_secs(300);

/// Why the controls ConfigMap cannot be named, read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// `<lease-name>-controls` is not a valid ConfigMap name (the Lease name is too long to add the
    /// suffix).
    #[error(
        "controls of lease {namespace}/{lease}: the ConfigMap name {name:?} is invalid: {why}"
    )]
    InvalidName {
        /// The namespace.
        namespace: String,
        /// The Lease name.
        lease: String,
        /// The ConfigMap name it would give.
        name: String,
        /// What is wrong with it.
        why: String,
    },
    /// The Kubernetes client cannot be built from the configuration.
    #[error("{store}: {source}")]
    ClientConfig {
        /// [`ControlsConfigMap::describe`].
        store: String,
        /// Why.
        #[source]
        source: crate::lease_store::Error,
    },
    /// The API server refused a request for lack of permission (HTTP 403): an RBAC rule is missing. The
    /// message keeps the API server's (who was refused what) and names the rule, and the Role that
    /// grants it.
    #[error(
        "{store}: {verb}: {message}: leasecron needs {} in namespace \"{namespace}\" ({})",
        rule(.verb, .name),
        granted_by(.verb)
    )]
    Forbidden {
        /// [`ControlsConfigMap::describe`].
        store: String,
        /// The refused request: `get`, `watch`, `create` or `update`.
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
        "{store}: this replica's service account may not {} the ConfigMap: add the RBAC rule \
         {{apiGroups: [\"\"], resources: [\"configmaps\"], resourceNames: [\"{name}\"], verbs: [\"get\", \
         \"watch\"]}} in namespace \"{namespace}\" (the leasecron Role in deploy/core grants it)",
        .verbs.join(", ")
    )]
    AccessDenied {
        /// [`ControlsConfigMap::describe`].
        store: String,
        /// The denied verbs.
        verbs: Vec<&'static str>,
        /// The ConfigMap's namespace.
        namespace: String,
        /// The ConfigMap's name.
        name: String,
    },
    /// The API server cannot be reached or cannot answer now: a timeout, a refused or dropped
    /// connection, 408, 429 or a 5xx, an unreadable answer. Retrying later may succeed.
    #[error("{store}: {verb}: the Kubernetes API is unavailable: {detail}")]
    Unavailable {
        /// [`ControlsConfigMap::describe`].
        store: String,
        /// The failed request.
        verb: &'static str,
        /// What happened.
        detail: String,
    },
    /// The API server answered with an error status that retrying will not change (400, 401, 422, ...).
    #[error("{store}: {verb} failed: HTTP {code} {reason}: {message}")]
    Api {
        /// [`ControlsConfigMap::describe`].
        store: String,
        /// The failed request.
        verb: &'static str,
        /// The HTTP status code.
        code: u16,
        /// The Status reason, if any.
        reason: String,
        /// The API server's message.
        message: String,
    },
    /// The document in the ConfigMap is not one this leasecron reads (the message names the ConfigMap).
    #[error("{0}")]
    Invalid(#[from] Invalid),
}

/// How the replicas' feed ([`watch()`]) talks to the API server, beside the store's request timeout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedParams {
    /// How long one watch request stays open (`timeoutSeconds`) before a re-watch. A watch that delivers
    /// nothing for this long plus the request timeout is treated as broken. Default
    /// [`DEFAULT_WATCH_TIMEOUT`].
    pub watch_timeout: Duration,
    /// The pause after a first failure before the ConfigMap is read again; it doubles with every failure
    /// in a row. Default [`DEFAULT_RETRY_INTERVAL`].
    pub retry_interval: Duration,
    /// The longest pause after failures. Default [`DEFAULT_MAX_RETRY_INTERVAL`].
    pub max_retry_interval: Duration,
    /// How often the ConfigMap is read while its watch is forbidden. Default [`DEFAULT_POLL_INTERVAL`].
    pub poll_interval: Duration,
}

impl Default for FeedParams {
    fn default() -> FeedParams {
        FeedParams {
            watch_timeout: DEFAULT_WATCH_TIMEOUT,
            retry_interval: DEFAULT_RETRY_INTERVAL,
            max_retry_interval: DEFAULT_MAX_RETRY_INTERVAL,
            poll_interval: DEFAULT_POLL_INTERVAL,
        }
    }
}

/// The rule that grants `verb` on the ConfigMap `name`: `create` cannot be limited to a name.
fn rule(verb: &str, name: &str) -> String {
    match verb {
        "create" => {
            "{apiGroups: [\"\"], resources: [\"configmaps\"], verbs: [\"create\"]}".to_owned()
        }
        verb => format!(
            "{{apiGroups: [\"\"], resources: [\"configmaps\"], resourceNames: [\"{name}\"], verbs: \
             [\"{verb}\"]}}"
        ),
    }
}

/// Which shipped Role grants `verb` on the ConfigMap.
fn granted_by(verb: &str) -> &'static str {
    match verb {
        "get" => {
            "the leasecron Role in deploy/core grants it to the replicas, the operator Role in \
             deploy/operator to operators"
        }
        "watch" => "the leasecron Role in deploy/core grants it",
        "update" => "the operator Role in deploy/operator grants it",
        "create" => {
            "RBAC cannot limit create to a name, so no shipped Role grants it: create the ConfigMap once \
             instead (deploy/core/controls.yaml ships it for the Lease leasecron), after which operators \
             need only update"
        }
        _ => "no shipped Role grants it",
    }
}

/// The operator controls of a Lease in a ConfigMap. See the [module documentation](self).
pub struct ControlsConfigMap {
    /// Its client without the retry layer, with the request timeout in its connector.
    config_map: NamedConfigMap,
    /// Without a timeout in its connector: a watch is quiet for minutes.
    watch_client: kube::Client,
    lease: String,
    /// The last ConfigMap read or written, sent back (with the key replaced) on a replace of its version.
    last: Mutex<Option<Box<ConfigMap>>>,
}

// === impl Error ===

impl Error {
    /// True if retrying later may succeed ([`Error::Unavailable`]).
    pub fn is_transient(&self) -> bool {
        matches!(self, Error::Unavailable { .. })
    }
}

// A failed request, named by the ConfigMap's description.
crate::kubernetes::config_map::error_from_failure!(Error);

// === impl ControlsConfigMap ===

impl std::fmt::Debug for ControlsConfigMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlsConfigMap")
            .field("configmap", &self.config_map.describe)
            .field("request_timeout", &self.config_map.request_timeout)
            .finish_non_exhaustive()
    }
}

impl ControlsConfigMap {
    /// The controls of the Lease `lease_name` in `namespace`: ConfigMap `<lease_name>-controls`, key
    /// `controls.json`, through clients built from `config` (kube's retry layer off, `request_timeout` on
    /// every request). Sends no request; must be called within a tokio runtime (a client spawns its
    /// connection buffer).
    pub fn new(
        config: kube::Config,
        namespace: &str,
        lease_name: &str,
        request_timeout: Duration,
    ) -> Result<ControlsConfigMap, Error> {
        let name = controls_name(lease_name).map_err(|(name, why)| Error::InvalidName {
            namespace: namespace.to_owned(),
            lease: lease_name.to_owned(),
            name,
            why,
        })?;
        let describe = format!("configmap {namespace}/{name}");
        let client_error = |source| Error::ClientConfig {
            store: describe.clone(),
            source,
        };
        let requests = client(config.clone(), Some(request_timeout)).map_err(client_error)?;
        let watch_client = client(config, None).map_err(client_error)?;
        Ok(ControlsConfigMap {
            config_map: NamedConfigMap {
                client: requests,
                namespace: namespace.to_owned(),
                name,
                describe,
                request_timeout,
            },
            watch_client,
            lease: lease_name.to_owned(),
            last: Mutex::new(None),
        })
    }

    /// For messages: `configmap NS/NAME-controls`.
    pub fn describe(&self) -> String {
        self.config_map.describe.clone()
    }

    /// The ConfigMap's name.
    pub fn name(&self) -> &str {
        &self.config_map.name
    }

    /// The ConfigMap's namespace (the Lease's).
    pub fn namespace(&self) -> &str {
        &self.config_map.namespace
    }

    /// Reads the document: an empty one without a version if there is no ConfigMap.
    pub async fn load(&self) -> Result<Read, Error> {
        let Some(config_map) = self.config_map.get().await? else {
            return Ok(Read {
                controls: feed::empty(),
                version: None,
            });
        };
        let version = self.config_map.version_of("get", &config_map)?;
        let controls = self.decode(&config_map);
        self.remember(config_map);
        Ok(Read {
            controls: controls?,
            version: Some(version),
        })
    }

    /// Writes `controls` if the ConfigMap's resourceVersion is still `version` (`None`: if there is no
    /// ConfigMap).
    pub async fn save(&self, controls: &Controls, version: Option<&str>) -> Result<Saved, Error> {
        let config_map = match version {
            None => ConfigMap {
                metadata: self.new_metadata(),
                data: Some(BTreeMap::from([(KEY.to_owned(), controls.to_text())])),
                ..ConfigMap::default()
            },
            Some(version) => {
                let Some(mut config_map) = self.current(version).await? else {
                    return Ok(Saved::Conflict);
                };
                config_map
                    .data
                    .get_or_insert_with(BTreeMap::new)
                    .insert(KEY.to_owned(), controls.to_text());
                if let Some(binary) = config_map.binary_data.as_mut() {
                    // A key in both is refused (422): the text replaces the bytes.
                    binary.remove(KEY);
                }
                config_map
            }
        };
        // Someone else created, changed or deleted it since it was read: read again.
        let Some(written) = self
            .config_map
            .write(&config_map, version.is_some())
            .await?
        else {
            return Ok(Saved::Conflict);
        };
        self.remember(written);
        Ok(Saved::Written)
    }

    /// Asks the API server (`SelfSubjectAccessReview`) whether this replica may get and watch the
    /// ConfigMap (by name, as a `resourceNames` rule grants them), so a missing RBAC rule is a clear error
    /// at start: [`Error::AccessDenied`], naming the rule. A missing `watch` is refused too, as for the
    /// jobs ConfigMap: at run time the feed would fall back to reading every few seconds, but the Role
    /// `deploy/core` ships grants it, so a missing one is a Role to fix. A review that cannot be made (no
    /// authorization API, a timeout) proves nothing: it is logged at debug and the check passes; the
    /// requests themselves still report 403.
    pub async fn check_access(&self) -> Result<(), Error> {
        let config_map = &self.config_map;
        config_map
            .check_access("the controls ConfigMap", &REQUIRED_VERBS)
            .await
            .map_err(|denied| Error::AccessDenied {
                store: config_map.describe.clone(),
                verbs: denied,
                namespace: config_map.namespace.clone(),
                name: config_map.name.clone(),
            })
    }

    /// The ConfigMap of `version` to replace: the last one read or written if that is its version, else
    /// read now. `None` if the ConfigMap is gone or at another version (a conflict, without a PUT).
    async fn current(&self, version: &str) -> Result<Option<ConfigMap>, Error> {
        let last = self
            .last
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        if let Some(last) =
            last.filter(|last| last.metadata.resource_version.as_deref() == Some(version))
        {
            return Ok(Some(*last));
        }
        let Some(config_map) = self.config_map.get().await? else {
            return Ok(None);
        };
        let matches = config_map.metadata.resource_version.as_deref() == Some(version);
        self.remember(config_map.clone());
        Ok(matches.then_some(config_map))
    }

    /// The document in `config_map`: no key (or no data) is the empty document.
    fn decode(&self, config_map: &ConfigMap) -> Result<Controls, Invalid> {
        match text_under(config_map, KEY) {
            Ok(text) => Controls::parse(text, &self.config_map.describe),
            Err(Missing::NotFound(_)) => Ok(feed::empty()),
            Err(Missing::InBinaryData) => Err(Invalid::Malformed {
                where_: self.describe(),
                why: format!(
                    "key {KEY} is under binaryData: the document must be under data, as text"
                ),
            }),
        }
    }

    /// Names a failed request in our error type.
    fn failure(&self, verb: &'static str, failure: kubernetes::Error) -> Error {
        self.config_map.failure(verb, failure).into()
    }

    fn remember(&self, config_map: ConfigMap) {
        *self.last.lock().unwrap_or_else(PoisonError::into_inner) = Some(Box::new(config_map));
    }

    /// The metadata of a ConfigMap this store creates (when `deploy/core`'s was not applied).
    fn new_metadata(&self) -> ObjectMeta {
        ObjectMeta {
            name: Some(self.config_map.name.clone()),
            namespace: Some(self.config_map.namespace.clone()),
            labels: Some(BTreeMap::from([(
                MANAGED_BY_LABEL.to_owned(),
                "leasecron".to_owned(),
            )])),
            annotations: Some(BTreeMap::from([(
                DESCRIPTION_ANNOTATION.to_owned(),
                format!(
                    "leasecron operator controls of Lease {}/{}: suspended jobs and requests (trigger, \
                     backfill), written by `leasecron suspend|resume|trigger|backfill`, read by every \
                     replica; the leader acknowledges requests in the run state.",
                    self.config_map.namespace, self.lease
                ),
            )])),
            ..ObjectMeta::default()
        }
    }
}

impl Store for ControlsConfigMap {
    fn describe(&self) -> String {
        ControlsConfigMap::describe(self)
    }

    fn load(&self) -> StoreFuture<'_, Read> {
        Box::pin(async move { Ok(ControlsConfigMap::load(self).await?) })
    }

    fn save<'a>(
        &'a self,
        controls: &'a Controls,
        version: Option<&'a str>,
    ) -> StoreFuture<'a, Saved> {
        Box::pin(async move { Ok(ControlsConfigMap::save(self, controls, version).await?) })
    }
}

/// `<lease>-controls`, or that name and why it is not a valid ConfigMap name.
fn controls_name(lease: &str) -> Result<String, (String, String)> {
    name_beside_lease(lease, CONFIG_MAP_SUFFIX, "controls")
}

// === The replicas' feed ===

/// What the feed does next.
#[derive(Debug)]
enum State {
    /// Read the ConfigMap, publish what it says, then watch from its version.
    Read,
    /// Watch from this resourceVersion (empty when there is no ConfigMap: from now).
    Watch(String),
    /// Wait after a failure (longer after each in a row), then read again.
    Pause,
    /// The watch is forbidden: read every [`FeedParams::poll_interval`], and watch again after `until`.
    Poll {
        /// When to try the watch again.
        until: Instant,
    },
}

/// The feed's state between steps.
struct Feed {
    store: Arc<ControlsConfigMap>,
    params: FeedParams,
    publisher: Publisher,
    /// Failures in a row, for the pause after the next; nonzero during an outage (only the first
    /// failure of one is a warning).
    failures: u32,
    /// True once a forbidden watch was reported, until a watch succeeds.
    forbidden: bool,
}

/// Keeps `out` at the document in the ConfigMap of `store` until `stop` is cancelled or every receiver of
/// `out` is gone: reads it at once (a change since the caller's read is not lost), then watches it. See
/// the [module documentation](self) for what happens on trouble.
pub async fn watch(
    store: Arc<ControlsConfigMap>,
    params: FeedParams,
    out: watch::Sender<Arc<Controls>>,
    stop: CancellationToken,
) {
    let receivers_gone = out.clone();
    let mut feed = Feed {
        publisher: Publisher::new(out, store.describe()),
        store,
        params,
        failures: 0,
        forbidden: false,
    };
    let mut state = State::Read;
    loop {
        state = tokio::select! {
            biased;
            () = stop.cancelled() => return,
            () = receivers_gone.closed() => return,
            // `step` is cancel-safe: dropping it drops a watch, a pause or a read in flight.
            next = feed.step(state) => next,
        };
    }
}

impl Feed {
    /// Does what `state` says and returns the next state.
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
                tokio::time::sleep(self.pause()).await;
                State::Read
            }
            State::Poll { until } => {
                tokio::time::sleep(self.params.poll_interval).await;
                match self.read().await {
                    Ok(version) if Instant::now() >= until => State::Watch(version),
                    Ok(_) => {
                        if std::mem::take(&mut self.failures) > 0 {
                            tracing::info!(store = %self.store.config_map.describe, "the controls ConfigMap can be read again (polling it: the watch is forbidden)");
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

    /// GETs the ConfigMap and offers what it says; returns its resourceVersion (empty if there is
    /// none).
    async fn read(&mut self) -> Result<String, Error> {
        match self.store.config_map.get().await? {
            Some(config_map) => {
                let version = config_map
                    .metadata
                    .resource_version
                    .clone()
                    .unwrap_or_default();
                self.offer(&config_map);
                Ok(version)
            }
            None => {
                self.publisher.absent();
                Ok(String::new())
            }
        }
    }

    fn offer(&mut self, config_map: &ConfigMap) {
        let version = config_map
            .metadata
            .resource_version
            .as_deref()
            .unwrap_or_default();
        self.publisher.offer(version, self.store.decode(config_map));
    }

    /// Watches from `version` until the watch fails; returns what to do then.
    async fn watch_from(&mut self, mut version: String) -> State {
        let watched = Watched {
            api: Api::namespaced(self.store.watch_client.clone(), self.store.namespace()),
            name: self.store.name().to_owned(),
            watch_timeout: self.params.watch_timeout,
            request_timeout: self.store.config_map.request_timeout,
        };
        let ended = object_watch::watch_from(&watched, &mut version, |seen| {
            match seen {
                Seen::Watching => self.watching(),
                Seen::Object(config_map) => self.offer(&config_map),
                Seen::Deleted(_) => {
                    self.publisher.absent();
                }
            }
            Ok::<(), Infallible>(())
        })
        .await;
        match ended {
            object_watch::Ended::Gone => {
                tracing::debug!(store = %self.store.config_map.describe, "watch: 410 Gone; reading the ConfigMap again");
                State::Read
            }
            object_watch::Ended::Refused(e) => match self.store.failure("watch", e) {
                e @ Error::Forbidden { .. } => self.watch_forbidden(&e),
                e => {
                    self.trouble(&e);
                    State::Pause
                }
            },
            object_watch::Ended::Broken(e) => {
                self.trouble(&self.store.failure("watch", e));
                State::Pause
            }
            object_watch::Ended::Rejected(never) => match never {},
        }
    }

    /// The pause before the next read: [`FeedParams::retry_interval`], doubled for every failure in a
    /// row after the first, up to [`FeedParams::max_retry_interval`].
    fn pause(&self) -> Duration {
        let doublings = self.failures.saturating_sub(1).min(16);
        self.params
            .retry_interval
            .saturating_mul(1 << doublings)
            .min(self.params.max_retry_interval)
    }

    /// A 403 on the watch: poll instead.
    fn watch_forbidden(&mut self, error: &Error) -> State {
        if std::mem::replace(&mut self.forbidden, true) {
            tracing::debug!(%error, "the controls ConfigMap still cannot be watched; polling it");
        } else {
            tracing::warn!(
                %error,
                "cannot watch the controls ConfigMap; reading it every {} instead (operators' requests \
                 take effect that much later)",
                humantime::format_duration(self.params.poll_interval)
            );
        }
        State::Poll {
            until: Instant::now() + WATCH_RETRY_WHILE_POLLING,
        }
    }

    /// A failure that says nothing about the document: warn at the start of an outage, debug after.
    fn trouble(&mut self, error: &Error) {
        self.failures = self.failures.saturating_add(1);
        if self.failures > 1 {
            tracing::debug!(%error, failures = self.failures, "the controls ConfigMap is still out of reach; retrying");
        } else {
            tracing::warn!(
                %error,
                "cannot watch the controls ConfigMap; the controls in force stay, retrying (changes made \
                 meanwhile apply once it is back)"
            );
        }
    }

    /// A watch request succeeded: an outage or a forbidden spell is over.
    fn watching(&mut self) {
        let was_down = std::mem::take(&mut self.failures) > 0;
        let was_forbidden = std::mem::take(&mut self.forbidden);
        if was_down || was_forbidden {
            tracing::info!(store = %self.store.config_map.describe, "watching the controls ConfigMap again");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kubernetes::names::MAX_SUBDOMAIN_LEN;

    /// The longest Lease name whose controls fit a ConfigMap name (a DNS-1123 subdomain, at most 253
    /// characters, including [`CONFIG_MAP_SUFFIX`]).
    const MAX_LEASE_NAME_LEN: usize = MAX_SUBDOMAIN_LEN - CONFIG_MAP_SUFFIX.len();

    fn store() -> ControlsConfigMap {
        let config = kube::Config::new("http://127.0.0.1:9".parse().expect("uri"));
        ControlsConfigMap::new(config, "ns", "lock", Duration::from_millis(500))
            .expect("a client for a plain-HTTP URL")
    }

    #[tokio::test]
    async fn the_configmap_is_named_after_the_lease() {
        let store = store();
        assert_eq!(store.name(), "lock-controls");
        assert_eq!(store.describe(), "configmap ns/lock-controls");
        let config = kube::Config::new("http://127.0.0.1:9".parse().expect("uri"));
        let long = "l".repeat(MAX_LEASE_NAME_LEN + 1);
        let error = ControlsConfigMap::new(config, "ns", &long, Duration::from_secs(1))
            .expect_err("too long");
        let message = error.to_string();
        assert!(
            message.contains("at most 244 characters") && message.contains("ConfigMap name"),
            "{message}"
        );
    }

    #[tokio::test]
    async fn a_forbidden_request_names_the_rule_and_the_role_and_keeps_the_servers_message() {
        let store = store();
        let message =
            "configmaps \"lock-controls\" is forbidden: User \"u\" cannot update resource \
                       \"configmaps\" in API group \"\" in the namespace \"ns\"";
        let error = store.failure(
            "update",
            kubernetes::Error::status(403, "Forbidden", message),
        );
        assert!(!error.is_transient());
        assert_eq!(
            error.to_string(),
            format!(
                "configmap ns/lock-controls: update: {message}: leasecron needs {{apiGroups: [\"\"], \
                 resources: [\"configmaps\"], resourceNames: [\"lock-controls\"], verbs: [\"update\"]}} \
                 in namespace \"ns\" (the operator Role in deploy/operator grants it)"
            )
        );
        let create = store
            .failure("create", kubernetes::Error::status(403, "Forbidden", "no"))
            .to_string();
        assert!(
            create
                .contains("{apiGroups: [\"\"], resources: [\"configmaps\"], verbs: [\"create\"]}")
                && create.contains("create the ConfigMap once"),
            "{create}"
        );
        let watch = store
            .failure("watch", kubernetes::Error::status(403, "Forbidden", "no"))
            .to_string();
        assert!(
            watch.contains("verbs: [\"watch\"]") && watch.contains("leasecron Role in deploy/core"),
            "{watch}"
        );
    }

    #[test]
    fn denied_verbs_at_start_are_listed_with_the_rule() {
        let error = Error::AccessDenied {
            store: "configmap ns/lock-controls".to_owned(),
            verbs: vec!["watch"],
            namespace: "ns".to_owned(),
            name: "lock-controls".to_owned(),
        };
        assert_eq!(
            error.to_string(),
            "configmap ns/lock-controls: this replica's service account may not watch the ConfigMap: add \
             the RBAC rule {apiGroups: [\"\"], resources: [\"configmaps\"], resourceNames: \
             [\"lock-controls\"], verbs: [\"get\", \"watch\"]} in namespace \"ns\" (the leasecron Role in \
             deploy/core grants it)"
        );
    }

    #[tokio::test]
    async fn server_errors_are_transient_and_client_errors_are_not() {
        let store = store();
        for code in [500, 503, 429] {
            let error = store.failure("get", kubernetes::Error::status(code, "x", "y"));
            assert!(error.is_transient(), "{code}");
        }
        for code in [400, 401, 403, 422] {
            let error = store.failure("get", kubernetes::Error::status(code, "x", "y"));
            assert!(!error.is_transient(), "{code}");
        }
    }

    #[tokio::test]
    async fn no_key_is_an_empty_document_and_a_key_under_binary_data_is_invalid() {
        let store = store();
        assert_eq!(store.decode(&ConfigMap::default()), Ok(feed::empty()));
        let binary = ConfigMap {
            binary_data: Some(BTreeMap::from([(
                KEY.to_owned(),
                k8s_openapi::ByteString(b"{}".to_vec()),
            )])),
            ..ConfigMap::default()
        };
        let why = store.decode(&binary).expect_err("binary").to_string();
        assert!(why.contains("binaryData"), "{why}");
    }

    #[tokio::test(start_paused = true)]
    async fn the_pause_doubles_up_to_the_limit() {
        let (out, _rx) = watch::channel(Arc::new(feed::empty()));
        let store = Arc::new(store());
        let mut feed = Feed {
            publisher: Publisher::new(out, store.describe()),
            store,
            params: FeedParams::default(),
            failures: 0,
            forbidden: false,
        };
        let mut pauses = Vec::new();
        for _ in 0..7 {
            feed.failures += 1;
            pauses.push(feed.pause().as_secs());
        }
        assert_eq!(pauses, [1, 2, 4, 8, 16, 30, 30]);
    }
}
