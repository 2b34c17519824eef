//! What the stores of one named ConfigMap (the jobs ConfigMap, the run state, the controls) share: the
//! text under one key of its `data` (when it is missing they say which keys there are), its name beside
//! the Lease, and its requests ([`NamedConfigMap`]), each bounded by the request timeout and its failure
//! sorted alike ([`Failure`]) for each store to name in its own error type.

use std::future::Future;
use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, PostParams};

use crate::kubernetes::access::{self, Reviewed};
use crate::kubernetes::names::{check_object_name, MAX_SUBDOMAIN_LEN};
use crate::kubernetes::{self, bounded_request, CONFLICT, FORBIDDEN, NOT_FOUND};

/// How many keys a "key not found" message lists.
const MAX_KEYS_LISTED: usize = 10;

/// Why a ConfigMap has no text under a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Missing {
    /// The key is under `binaryData`, not `data`: each resource says what to do about it.
    InBinaryData,
    /// `key KEY not found in data (keys: ...)`, listing at most ten of the keys there are.
    NotFound(String),
}

/// The text under `key` in `config_map`'s `data`, or why there is none.
pub(crate) fn text_under<'a>(config_map: &'a ConfigMap, key: &str) -> Result<&'a str, Missing> {
    if let Some(text) = config_map.data.as_ref().and_then(|data| data.get(key)) {
        return Ok(text);
    }
    if config_map
        .binary_data
        .as_ref()
        .is_some_and(|binary| binary.contains_key(key))
    {
        return Err(Missing::InBinaryData);
    }
    let keys: Vec<&str> = config_map
        .data
        .iter()
        .flat_map(|data| data.keys())
        .map(String::as_str)
        .collect();
    Err(Missing::NotFound(match keys.len() {
        0 => format!("key {key} not found in data (it has no keys)"),
        n if n <= MAX_KEYS_LISTED => {
            format!("key {key} not found in data (keys: {})", keys.join(", "))
        }
        n => format!(
            "key {key} not found in data (keys: {}, and {} more)",
            keys[..MAX_KEYS_LISTED].join(", "),
            n - MAX_KEYS_LISTED
        ),
    }))
}

/// One ConfigMap by name, and the requests about it that every store of a ConfigMap makes alike: each is
/// bounded by the request timeout, and its failure is sorted into a [`Failure`], which the store names in
/// its own error type.
#[derive(Clone)]
pub(crate) struct NamedConfigMap {
    /// The client of every request (kube's retry layer off).
    pub(crate) client: kube::Client,
    /// The ConfigMap's namespace.
    pub(crate) namespace: String,
    /// The ConfigMap's name.
    pub(crate) name: String,
    /// How the store's messages name it (`configmap NS/NAME`, or the jobs' origin).
    pub(crate) describe: String,
    /// The limit of every request.
    pub(crate) request_timeout: Duration,
}

/// A failed request about a [`NamedConfigMap`], sorted: each store names it in its own error type, with
/// its own words.
#[derive(Debug)]
pub(crate) struct Failure {
    /// [`NamedConfigMap::describe`].
    pub(crate) store: String,
    /// The failed request: `get`, `watch`, `create` or `update`.
    pub(crate) verb: &'static str,
    /// What went wrong.
    pub(crate) kind: FailureKind,
}

/// What went wrong in a [`Failure`].
#[derive(Debug)]
pub(crate) enum FailureKind {
    /// HTTP 403: an RBAC rule is missing.
    Forbidden {
        /// The ConfigMap's namespace.
        namespace: String,
        /// The ConfigMap's name.
        name: String,
        /// The API server's message.
        message: String,
    },
    /// An error status that retrying will not change (400, 401, 404, 409, 422, ...).
    Api {
        /// The HTTP status code.
        code: u16,
        /// The Status reason, if any.
        reason: String,
        /// The API server's message.
        message: String,
    },
    /// No answer, no connection, an unreadable answer, or a status that may pass (408, 429, 5xx).
    Unavailable {
        /// What happened.
        detail: String,
    },
}

/// Implements `From<`[`Failure`]`>` for the error type of a store whose `Forbidden`, `Api` and
/// `Unavailable` variants have the fields of the failure's kind, with `store` and `verb`, so that `?`
/// names a failed request in it.
macro_rules! error_from_failure {
    ($error:ty) => {
        impl From<$crate::kubernetes::config_map::Failure> for $error {
            fn from(failure: $crate::kubernetes::config_map::Failure) -> $error {
                use $crate::kubernetes::config_map::FailureKind;
                let $crate::kubernetes::config_map::Failure { store, verb, kind } = failure;
                match kind {
                    FailureKind::Forbidden {
                        namespace,
                        name,
                        message,
                    } => Self::Forbidden {
                        store,
                        verb,
                        namespace,
                        name,
                        message,
                    },
                    FailureKind::Api {
                        code,
                        reason,
                        message,
                    } => Self::Api {
                        store,
                        verb,
                        code,
                        reason,
                        message,
                    },
                    FailureKind::Unavailable { detail } => Self::Unavailable {
                        store,
                        verb,
                        detail,
                    },
                }
            }
        }
    };
}
pub(crate) use error_from_failure;

// === impl NamedConfigMap ===

impl NamedConfigMap {
    pub(crate) fn api(&self) -> Api<ConfigMap> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// GETs the ConfigMap; `None` if there is none.
    pub(crate) async fn get(&self) -> Result<Option<ConfigMap>, Failure> {
        self.request("get", self.api().get_opt(&self.name)).await
    }

    /// Creates `config_map` (`replace` false) or replaces the one whose `metadata.resourceVersion` it
    /// carries (true). `None` if someone else was first: 409, or 404 on a replace (the ConfigMap was
    /// deleted since it was read; on a create, a 404 is a missing namespace).
    pub(crate) async fn write(
        &self,
        config_map: &ConfigMap,
        replace: bool,
    ) -> Result<Option<ConfigMap>, Failure> {
        let post = PostParams::default();
        let api = self.api();
        let answer = if replace {
            self.request("update", api.replace(&self.name, &post, config_map))
                .await
        } else {
            self.request("create", api.create(&post, config_map)).await
        };
        match answer {
            Ok(written) => Ok(Some(written)),
            Err(Failure {
                kind: FailureKind::Api { code, .. },
                ..
            }) if code == CONFLICT || (code == NOT_FOUND && replace) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Asks the API server (`SelfSubjectAccessReview`) whether this replica may use `verbs` on the
    /// ConfigMap (`what` names it in the log); the denied verbs, if any.
    pub(crate) async fn check_access(
        &self,
        what: &str,
        verbs: &[&'static str],
    ) -> Result<(), Vec<&'static str>> {
        let config_map = Reviewed {
            group: "",
            resource: "configmaps",
            namespace: &self.namespace,
            name: &self.name,
            what,
        };
        access::check_access(&self.client, config_map, verbs, self.request_timeout).await
    }

    /// Runs one request, bounded by the request timeout, and sorts its error.
    pub(crate) async fn request<T>(
        &self,
        verb: &'static str,
        request: impl Future<Output = Result<T, kube::Error>>,
    ) -> Result<T, Failure> {
        bounded_request(self.request_timeout, request)
            .await
            .map_err(|failure| self.failure(verb, failure))
    }

    /// Sorts a failed request; 409 and 404 stay [`FailureKind::Api`] for the caller to interpret.
    pub(crate) fn failure(&self, verb: &'static str, failure: kubernetes::Error) -> Failure {
        let kind = match failure {
            kubernetes::Error::Status {
                code: FORBIDDEN,
                message,
                ..
            } => FailureKind::Forbidden {
                namespace: self.namespace.clone(),
                name: self.name.clone(),
                message,
            },
            kubernetes::Error::Status {
                code,
                reason,
                message,
            } if !crate::lease_store::is_transient_status(code) => FailureKind::Api {
                code,
                reason,
                message,
            },
            unavailable => FailureKind::Unavailable {
                detail: unavailable.to_string(),
            },
        };
        Failure {
            store: self.describe.clone(),
            verb,
            kind,
        }
    }

    /// The resourceVersion of an answer; a real API server always sets one.
    pub(crate) fn version_of(
        &self,
        verb: &'static str,
        config_map: &ConfigMap,
    ) -> Result<String, Failure> {
        config_map
            .metadata
            .resource_version
            .clone()
            .filter(|v| !v.is_empty())
            .ok_or_else(|| Failure {
                store: self.describe.clone(),
                verb,
                kind: FailureKind::Unavailable {
                    detail: "the answer has no metadata.resourceVersion".to_owned(),
                },
            })
    }
}

/// `<lease><suffix>`, the name of the ConfigMap that keeps a Lease's `what` (`run state`, `controls`),
/// or that name and why it is not a valid ConfigMap name.
pub(crate) fn name_beside_lease(
    lease: &str,
    suffix: &str,
    what: &str,
) -> Result<String, (String, String)> {
    let name = format!("{lease}{suffix}");
    match check_object_name(&name) {
        Ok(()) => Ok(name),
        Err(why) if name.len() > MAX_SUBDOMAIN_LEN => Err((
            name,
            format!(
                "{why} (the Lease name may have at most {} characters to keep its {what} in a \
                 ConfigMap)",
                MAX_SUBDOMAIN_LEN - suffix.len()
            ),
        )),
        Err(why) => Err((name, why)),
    }
}
