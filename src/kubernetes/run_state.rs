//! The run state in the ConfigMap `<lease-name>-state` beside the Lease, under the key `state.json`, as
//! JSON in the most readable [`encoding`] that fits the 1 MiB a ConfigMap holds (format 1 while it fits,
//! which every leasecron reads; a compact format 2 beyond). A record that fits in none is
//! [`Error::TooLarge`], without a request; [`capacity_error`] checks a job set against that limit when
//! it is loaded, so a job set the state could not hold is refused instead of failing every claim.
//!
//! # Requests
//!
//! - `load` is a GET of the one ConfigMap (404 → no record); its `resourceVersion` is the version;
//! - `save` without a version is a POST (409 `AlreadyExists` → [`Saved::Conflict`]: a peer was first);
//! - `save` with a version is a PUT carrying it as `metadata.resourceVersion` (409 → [`Saved::Conflict`],
//!   and 404 too: the ConfigMap was deleted since it was read, so the version is gone). Never a blind
//!   write.
//!
//! A write replaces `data` (and drops any `binaryData`): the ConfigMap holds the one key. The metadata of
//! the last object read is sent back when its version is the one being replaced, so labels, annotations
//! and owner references that others added survive; the label `app.kubernetes.io/managed-by: leasecron`
//! and a `kubernetes.io/description` annotation are set on every write.
//!
//! As in the Lease store ([`crate::kubernetes::lease`]), kube's retry layer is off and every request is
//! bounded by the request timeout, in the connector and around the call: a hung API server is an
//! [`Error::Unavailable`] after that long, and the ledger decides what to do next.
//!
//! A ConfigMap without the key, whose text is not JSON, or whose record has fields this version does not
//! know, is returned as unusable (with its resourceVersion), for the ledger to log and rebuild.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

pub mod encoding;

use crate::kubernetes::client;
use crate::kubernetes::config_map::{name_beside_lease, text_under, Missing, NamedConfigMap};
use crate::run_state::{Loaded, Saved, StateRecord};

/// The ConfigMap of the Lease `L` is `L` followed by this.
pub const STATE_SUFFIX: &str = "-state";
/// The key under `data` that holds the record.
pub const KEY: &str = "state.json";
/// The verbs leasecron needs on the ConfigMap, checked at start by [`StateConfigMap::check_access`].
pub const REQUIRED_VERBS: [&str; 3] = ["get", "create", "update"];
/// The label that marks the ConfigMap as leasecron's.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// The value of [`MANAGED_BY_LABEL`].
pub(crate) const MANAGED_BY: &str = "leasecron";
/// The well-known annotation that says what the ConfigMap is.
pub const DESCRIPTION_ANNOTATION: &str = "kubernetes.io/description";

/// Why the run state ConfigMap cannot be named, read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// `<lease-name>-state` is not a valid ConfigMap name (the Lease name is too long to add the suffix).
    #[error(
        "run state of lease {namespace}/{lease}: the ConfigMap name {name:?} is invalid: {why}"
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
    #[error("run state {store}: {source}")]
    ClientConfig {
        /// [`StateConfigMap::describe`].
        store: String,
        /// Why.
        #[source]
        source: crate::lease_store::Error,
    },
    /// The API server refused a request for lack of permission (HTTP 403): an RBAC rule is missing.
    #[error(
        "run state {store}: {verb} is forbidden: grant this replica's service account {} in namespace \
         \"{namespace}\"; the API server said: {message}",
        rules(.name)
    )]
    Forbidden {
        /// [`StateConfigMap::describe`].
        store: String,
        /// The refused request: `get`, `create` or `update`.
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
        "run state {store}: this replica's service account may not {} the ConfigMap: add {} in \
         namespace \"{namespace}\"",
        .verbs.join(", "),
        rules(.name)
    )]
    AccessDenied {
        /// [`StateConfigMap::describe`].
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
    #[error("run state {store}: {verb}: the Kubernetes API is unavailable: {detail}")]
    Unavailable {
        /// [`StateConfigMap::describe`].
        store: String,
        /// The failed request.
        verb: &'static str,
        /// What happened.
        detail: String,
    },
    /// The API server answered with an error status that retrying will not change (400, 401, 422, ...).
    #[error("run state {store}: {verb} failed: HTTP {code} {reason}: {message}")]
    Api {
        /// [`StateConfigMap::describe`].
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
    /// The record does not fit in a ConfigMap, even in its most compact encoding (no request was made).
    #[error(
        "run state {store}: the record of {jobs} jobs needs {bytes} bytes, over the {limit} bytes a \
         ConfigMap holds"
    )]
    TooLarge {
        /// [`StateConfigMap::describe`].
        store: String,
        /// How many jobs the record holds.
        jobs: usize,
        /// Its smallest encoding's size.
        bytes: usize,
        /// [`encoding::MAX_BYTES`].
        limit: usize,
    },
}

/// Why a job set is refused: its run state might not fit in the ConfigMap.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{jobs} jobs are more than the run state ConfigMap of one Lease holds: their run state may need \
     {needed} bytes, over the {limit} bytes of a ConfigMap (about 40 bytes per job plus its name: 10 000 \
     jobs fit whatever their names); split the jobs over several Leases (one leasecron Deployment per \
     --lease-name), or shorten their names"
)]
pub struct CapacityError {
    /// How many jobs.
    pub jobs: usize,
    /// The bytes their run state may need ([`encoding::capacity_needed`]).
    pub needed: usize,
    /// [`encoding::MAX_BYTES`].
    pub limit: usize,
}

/// Checks that the run state of jobs with these names always fits in the ConfigMap: `None` if it does,
/// else why not. (Entries of removed jobs are pruned when a term begins and when jobs are reloaded.)
pub fn capacity_error<'a>(names: impl ExactSizeIterator<Item = &'a str>) -> Option<CapacityError> {
    let jobs = names.len();
    let needed = encoding::capacity_needed(names);
    (needed > encoding::MAX_BYTES).then_some(CapacityError {
        jobs,
        needed,
        limit: encoding::MAX_BYTES,
    })
}

/// The RBAC rules leasecron needs on the ConfigMap: `create` cannot be limited to a name, the others can.
fn rules(name: &str) -> String {
    format!(
        "the RBAC rules {{apiGroups: [\"\"], resources: [\"configmaps\"], verbs: [\"create\"]}} and \
         {{apiGroups: [\"\"], resources: [\"configmaps\"], resourceNames: [\"{name}\"], verbs: [\"get\", \
         \"update\"]}}"
    )
}

/// The run state of a Lease in a ConfigMap. See the [module documentation](self).
pub struct StateConfigMap {
    /// Its client without the retry layer, with the request timeout in its connector.
    config_map: NamedConfigMap,
    lease: String,
    /// The metadata of the last ConfigMap read or written, sent back on a replace of that version.
    last_meta: std::sync::Mutex<Option<Box<ObjectMeta>>>,
    /// The encoding of the last write, to log when it changes.
    last_encoding: std::sync::Mutex<Option<encoding::Encoding>>,
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

// === impl StateConfigMap ===

impl std::fmt::Debug for StateConfigMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateConfigMap")
            .field("configmap", &self.config_map.describe)
            .field("request_timeout", &self.config_map.request_timeout)
            .finish_non_exhaustive()
    }
}

impl StateConfigMap {
    /// The state of the Lease `lease_name` in `namespace`: ConfigMap `<lease_name>-state`, key
    /// `state.json`, through a client built from `config` (kube's retry layer off, `request_timeout` on
    /// every request). Sends no request; must be called within a tokio runtime (the client spawns its
    /// connection buffer).
    pub fn new(
        config: kube::Config,
        namespace: &str,
        lease_name: &str,
        request_timeout: Duration,
    ) -> Result<StateConfigMap, Error> {
        let name = state_name(lease_name).map_err(|(name, why)| Error::InvalidName {
            namespace: namespace.to_owned(),
            lease: lease_name.to_owned(),
            name,
            why,
        })?;
        let describe = format!("configmap {namespace}/{name}");
        let client =
            client(config, Some(request_timeout)).map_err(|source| Error::ClientConfig {
                store: describe.clone(),
                source,
            })?;
        Ok(StateConfigMap {
            config_map: NamedConfigMap {
                client,
                namespace: namespace.to_owned(),
                name,
                describe,
                request_timeout,
            },
            lease: lease_name.to_owned(),
            last_meta: std::sync::Mutex::new(None),
            last_encoding: std::sync::Mutex::new(None),
        })
    }

    /// For logs: `configmap NS/NAME-state`.
    pub fn describe(&self) -> String {
        self.config_map.describe.clone()
    }

    /// The ConfigMap's name.
    pub fn name(&self) -> &str {
        &self.config_map.name
    }

    /// Reads the record ([`Loaded::Absent`] if there is no ConfigMap).
    pub async fn load(&self) -> Result<Loaded, Error> {
        let Some(config_map) = self.config_map.get().await? else {
            return Ok(Loaded::Absent);
        };
        let version = self.config_map.version_of("get", &config_map)?;
        self.remember(&config_map.metadata);
        Ok(match decode(&self.config_map.describe, &config_map) {
            Ok(record) => Loaded::Found { version, record },
            Err(why) => Loaded::Unusable { version, why },
        })
    }

    /// Writes `record` if the ConfigMap's resourceVersion is still `version` (`None`: if there is no
    /// ConfigMap).
    pub async fn save(&self, record: &StateRecord, version: Option<&str>) -> Result<Saved, Error> {
        let text = match encoding::encode(record, encoding::MAX_BYTES) {
            Ok((text, encoding)) => {
                self.note_encoding(encoding, record.jobs.len());
                text
            }
            Err(bytes) => {
                return Err(Error::TooLarge {
                    store: self.describe(),
                    jobs: record.jobs.len(),
                    bytes,
                    limit: encoding::MAX_BYTES,
                })
            }
        };
        let config_map = ConfigMap {
            metadata: self.metadata_for(version),
            data: Some(BTreeMap::from([(KEY.to_owned(), text)])),
            ..ConfigMap::default()
        };
        let replace = version.is_some();
        // Someone else created, changed or deleted it since it was read: read again.
        let Some(written) = self.config_map.write(&config_map, replace).await? else {
            return Ok(Saved::Conflict);
        };
        let verb = if replace { "update" } else { "create" };
        let version = self.config_map.version_of(verb, &written)?;
        self.remember(&written.metadata);
        Ok(Saved::Written(version))
    }

    /// Asks the API server (`SelfSubjectAccessReview`) whether this replica may get, create and update
    /// the ConfigMap (get and update by name, as a `resourceNames` rule grants them; create cannot be
    /// limited to a name), so a missing RBAC verb is a clear error at start. Denied verbs:
    /// [`Error::AccessDenied`]. A review that cannot be made (no authorization API, a timeout) proves
    /// nothing: it is logged at debug and the check passes; the requests themselves still report 403.
    pub async fn check_access(&self) -> Result<(), Error> {
        let config_map = &self.config_map;
        config_map
            .check_access("the run state ConfigMap", &REQUIRED_VERBS)
            .await
            .map_err(|denied| Error::AccessDenied {
                store: config_map.describe.clone(),
                verbs: denied,
                namespace: config_map.namespace.clone(),
                name: config_map.name.clone(),
            })
    }

    /// Logs when the encoding changes: format 2 cannot be read by a leasecron before it, and its
    /// essentials-only form drops the details `/status` shows. How many runs of each job's history format 2
    /// keeps follows the record's size from write to write: a change of it alone is logged at debug.
    fn note_encoding(&self, encoding: encoding::Encoding, jobs: usize) {
        use encoding::Encoding::{Compact, Essential, Full};
        let mut last = self
            .last_encoding
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let was_compact = matches!(*last, Some(Compact { .. }));
        if *last == Some(encoding) {
            return;
        }
        *last = Some(encoding);
        match encoding {
            Full => {
                tracing::debug!(store = %self.config_map.describe, jobs, "run state written in format 1");
            }
            Compact { history } if was_compact => tracing::debug!(
                store = %self.config_map.describe,
                jobs,
                history_per_job = history,
                "run state in format 2: the history kept per job changed"
            ),
            Compact { history } => tracing::info!(
                store = %self.config_map.describe,
                jobs,
                history_per_job = history,
                "run state too large for format 1: written in the compact format 2 (a leasecron before \
                 format 2 would rebuild it), with at most history_per_job runs of each job's history"
            ),
            Essential => tracing::warn!(
                store = %self.config_map.describe,
                jobs,
                "run state too large for format 2 with details: written with the essentials only (who \
                 started each slot, when exactly, the last success and the run history are no longer \
                 kept)"
            ),
        }
    }

    fn remember(&self, meta: &ObjectMeta) {
        *self
            .last_meta
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Box::new(meta.clone()));
    }

    /// The metadata to write over `version` (`None`: to create): the last object's if that is the
    /// version, with our label and annotation.
    fn metadata_for(&self, version: Option<&str>) -> ObjectMeta {
        let last = self
            .last_meta
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let mut meta = match (last, version) {
            (Some(meta), Some(version)) if meta.resource_version.as_deref() == Some(version) => {
                *meta
            }
            _ => ObjectMeta {
                name: Some(self.config_map.name.clone()),
                namespace: Some(self.config_map.namespace.clone()),
                resource_version: version.map(str::to_owned),
                ..ObjectMeta::default()
            },
        };
        meta.labels
            .get_or_insert_with(BTreeMap::new)
            .insert(MANAGED_BY_LABEL.to_owned(), MANAGED_BY.to_owned());
        meta.annotations.get_or_insert_with(BTreeMap::new).insert(
            DESCRIPTION_ANNOTATION.to_owned(),
            description(&self.config_map.namespace, &self.lease),
        );
        meta
    }
}

// The ledger's view: the methods above, with this store's errors as `run_state::Error::Store`.
crate::run_state::store_from_inherent_methods!(StateConfigMap);

/// What the annotation says.
fn description(namespace: &str, lease: &str) -> String {
    format!(
        "leasecron run state of Lease {namespace}/{lease}: per job, the last slot started (so none runs \
         twice across failovers) and the last completion. Written by the leader only; deleting it \
         forgets that history."
    )
}

/// `<lease>-state`, or that name and why it is not a valid ConfigMap name.
fn state_name(lease: &str) -> Result<String, (String, String)> {
    name_beside_lease(lease, STATE_SUFFIX, "run state")
}

/// The record in `config_map`, or why it cannot be used (`store` names the ConfigMap).
fn decode(store: &str, config_map: &ConfigMap) -> Result<StateRecord, String> {
    let text = text_under(config_map, KEY).map_err(|missing| match missing {
        Missing::InBinaryData => format!("{store}: key {KEY} is under binaryData, not data"),
        Missing::NotFound(why) => format!("{store}: {why}"),
    })?;
    encoding::decode(text).map_err(|e| format!("{store} key {KEY}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kubernetes;
    use crate::kubernetes::names::MAX_SUBDOMAIN_LEN;
    use crate::run_state::{JobRecord, SlotStart};
    use chrono::{TimeZone, Utc};

    const STORE: &str = "configmap ns/lock-state";
    /// The longest Lease name whose run state fits a ConfigMap name (a DNS-1123 subdomain, at most 253
    /// characters, including [`STATE_SUFFIX`]).
    const MAX_LEASE_NAME_LEN: usize = MAX_SUBDOMAIN_LEN - STATE_SUFFIX.len();

    fn state() -> StateConfigMap {
        let config = kube::Config::new("http://127.0.0.1:9".parse().expect("uri"));
        StateConfigMap::new(config, "ns", "lock", Duration::from_millis(500))
            .expect("a client for a plain-HTTP URL")
    }

    fn record() -> StateRecord {
        let at = Utc.timestamp_opt(1_800_000_000, 0).single().expect("valid");
        let job = JobRecord {
            last_started: Some(SlotStart {
                slot: at,
                fencing_token: 3,
                identity: "pod-a".to_owned(),
                started_at: at,
            }),
            ..JobRecord::default()
        };
        StateRecord {
            format: crate::run_state::FORMAT,
            fencing_token: 3,
            jobs: BTreeMap::from([("backup".to_owned(), job)]),
            requests: BTreeMap::new(),
        }
    }

    fn config_map(data: &[(&str, &str)]) -> ConfigMap {
        ConfigMap {
            metadata: ObjectMeta {
                name: Some("lock-state".to_owned()),
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

    /// How the store names a failed request.
    fn failure(state: &StateConfigMap, verb: &'static str, failure: kubernetes::Error) -> Error {
        state.config_map.failure(verb, failure).into()
    }

    fn api_error(state: &StateConfigMap, verb: &'static str, code: u16) -> Error {
        failure(state, verb, kubernetes::Error::status(code, "y", "x"))
    }

    #[test]
    fn a_good_record_is_read_back_as_written() {
        let text = serde_json::to_string_pretty(&record()).expect("encodes");
        let decoded = decode(STORE, &config_map(&[(KEY, &text)]));
        assert_eq!(decoded, Ok(record()));
    }

    #[test]
    fn a_missing_key_is_unusable_and_lists_the_keys_there_are() {
        assert_eq!(
            decode(STORE, &config_map(&[("b", "x"), ("a", "y")])),
            Err(
                "configmap ns/lock-state: key state.json not found in data (keys: a, b)".to_owned()
            )
        );
        assert_eq!(
            decode(STORE, &ConfigMap::default()),
            Err(
                "configmap ns/lock-state: key state.json not found in data (it has no keys)"
                    .to_owned()
            )
        );
        let mut binary = config_map(&[]);
        binary.binary_data = Some(BTreeMap::from([(
            KEY.to_owned(),
            k8s_openapi::ByteString(b"{}".to_vec()),
        )]));
        let why = decode(STORE, &binary).expect_err("binary");
        assert!(
            why.ends_with("key state.json is under binaryData, not data"),
            "{why}"
        );
    }

    #[test]
    fn text_that_is_not_json_is_unusable_and_says_where() {
        let why = decode(STORE, &config_map(&[(KEY, "not json")])).expect_err("corrupt");
        assert!(
            why.starts_with("configmap ns/lock-state key state.json: ")
                && why.ends_with("at line 1 column 2"),
            "{why}"
        );
    }

    #[test]
    fn a_record_with_a_field_we_do_not_know_is_unusable() {
        let text = r#"{"format": 1, "fencingToken": 2, "jobs": {}, "newField": 1}"#;
        let why = decode(STORE, &config_map(&[(KEY, text)])).expect_err("unknown field");
        assert!(why.contains("unknown field `newField`"), "{why}");
        let nested = r#"{"format": 1, "fencingToken": 2, "jobs": {"j": {"lastRun": 1}}}"#;
        let why = decode(STORE, &config_map(&[(KEY, nested)])).expect_err("unknown field");
        assert!(why.contains("unknown field `lastRun`"), "{why}");
    }

    #[test]
    fn the_name_is_the_lease_name_and_the_suffix_up_to_253_characters() {
        assert_eq!(state_name("cron"), Ok("cron-state".to_owned()));
        let longest = "l".repeat(MAX_LEASE_NAME_LEN);
        assert_eq!(state_name(&longest).map(|n| n.len()), Ok(253));
        let (name, why) = state_name(&"l".repeat(MAX_LEASE_NAME_LEN + 1)).expect_err("too long");
        assert_eq!(name.len(), 254);
        assert!(why.contains("longer than 253 characters"), "{why}");
        assert!(why.contains("at most 247 characters"), "{why}");
    }

    #[tokio::test]
    async fn a_lease_name_too_long_for_the_configmap_is_refused_by_name() {
        let config = kube::Config::new("http://127.0.0.1:9".parse().expect("uri"));
        let lease = "l".repeat(250);
        let error = StateConfigMap::new(config, "ns", &lease, Duration::from_secs(1))
            .expect_err("too long");
        let text = error.to_string();
        assert!(matches!(error, Error::InvalidName { .. }), "{error:?}");
        assert!(
            text.starts_with(&format!(
                "run state of lease ns/{lease}: the ConfigMap name \"{lease}-state\" is invalid"
            )),
            "{text}"
        );
    }

    #[tokio::test]
    async fn the_store_is_described_by_namespace_and_name() {
        let state = state();
        assert_eq!(state.describe(), STORE);
        assert_eq!(state.name(), "lock-state");
    }

    #[tokio::test]
    async fn a_write_carries_our_label_and_annotation_and_keeps_the_metadata_of_its_version() {
        let state = state();
        let created = state.metadata_for(None);
        assert_eq!(created.name.as_deref(), Some("lock-state"));
        assert_eq!(
            created.resource_version, None,
            "a create carries no version"
        );
        assert_eq!(
            created
                .labels
                .as_ref()
                .and_then(|l| l.get(MANAGED_BY_LABEL))
                .map(String::as_str),
            Some("leasecron")
        );
        let annotation = created
            .annotations
            .as_ref()
            .and_then(|a| a.get(DESCRIPTION_ANNOTATION))
            .cloned()
            .unwrap_or_default();
        assert!(annotation.contains("Lease ns/lock"), "{annotation}");

        let mut read = config_map(&[]).metadata;
        read.labels = Some(BTreeMap::from([("team".to_owned(), "ops".to_owned())]));
        state.remember(&read);
        let replaced = state.metadata_for(Some("7"));
        let labels = replaced.labels.unwrap_or_default();
        assert_eq!(labels.get("team").map(String::as_str), Some("ops"));
        assert_eq!(
            labels.get(MANAGED_BY_LABEL).map(String::as_str),
            Some("leasecron")
        );
        assert_eq!(replaced.resource_version.as_deref(), Some("7"));
        let other = state.metadata_for(Some("6"));
        assert_eq!(other.resource_version.as_deref(), Some("6"));
        assert!(!other.labels.unwrap_or_default().contains_key("team"));
    }

    #[tokio::test]
    async fn server_errors_are_transient_and_client_errors_are_not() {
        let state = state();
        for code in [500, 503, 504, 429, 408] {
            assert!(api_error(&state, "get", code).is_transient(), "{code}");
        }
        for code in [400, 401, 403, 404, 409, 422] {
            assert!(!api_error(&state, "update", code).is_transient(), "{code}");
        }
        assert!(matches!(
            api_error(&state, "update", 409),
            Error::Api { code: 409, .. }
        ));
        assert!(failure(&state, "get", kubernetes::Error::malformed()).is_transient());
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_without_an_answer_times_out_as_unavailable() {
        let state = state();
        let error = Error::from(
            state
                .config_map
                .request("get", std::future::pending::<Result<(), kube::Error>>())
                .await
                .expect_err("no answer"),
        );
        assert!(error.is_transient());
        assert_eq!(
            error.to_string(),
            "run state configmap ns/lock-state: get: the Kubernetes API is unavailable: no answer within 500ms"
        );
    }

    #[tokio::test]
    async fn a_forbidden_answer_names_the_verb_and_the_rules_to_add() {
        let state = state();
        let status = kubernetes::Error::status(
            403,
            "Forbidden",
            "configmaps \"lock-state\" is forbidden: User \"x\" cannot update resource",
        );
        let error = failure(&state, "update", status);
        assert!(!error.is_transient());
        let text = error.to_string();
        for needle in [
            "run state configmap ns/lock-state: update is forbidden",
            "{apiGroups: [\"\"], resources: [\"configmaps\"], verbs: [\"create\"]}",
            "{apiGroups: [\"\"], resources: [\"configmaps\"], resourceNames: [\"lock-state\"], verbs: [\"get\", \"update\"]}",
            "namespace \"ns\"",
            "cannot update resource",
        ] {
            assert!(text.contains(needle), "{needle} missing from: {text}");
        }
    }

    #[test]
    fn denied_verbs_are_listed_with_the_rules() {
        let error = Error::AccessDenied {
            store: STORE.to_owned(),
            verbs: vec!["create", "update"],
            namespace: "ns".to_owned(),
            name: "lock-state".to_owned(),
        };
        assert_eq!(
            error.to_string(),
            "run state configmap ns/lock-state: this replica's service account may not create, update \
             the ConfigMap: add the RBAC rules {apiGroups: [\"\"], resources: [\"configmaps\"], verbs: \
             [\"create\"]} and {apiGroups: [\"\"], resources: [\"configmaps\"], resourceNames: \
             [\"lock-state\"], verbs: [\"get\", \"update\"]} in namespace \"ns\""
        );
        assert!(!error.is_transient());
    }
}
