//! A strict fake Kubernetes API server for tests: a real HTTP server on `127.0.0.1:0` that the real
//! `kube::Client` talks to through a kubeconfig ([`FakeApiServer::kubeconfig`], [`FakeApiServer::client`]).
//!
//! # What it serves
//!
//! Namespaced `coordination.k8s.io/v1` leases, `v1` configmaps, `v1` events and `events.k8s.io/v1` events,
//! at the real URLs: get, list, watch, create (POST), update (PUT), delete, merge patch
//! (`application/merge-patch+json`; a strategic merge patch is treated as one) and JSON patch. Objects live
//! in one store with a single resourceVersion counter, as etcd's revision; each gets `uid` and
//! `creationTimestamp`.
//!
//! # What it enforces, as the real API server does
//!
//! Each rule below is a test in tests/component/fake_apiserver.rs that runs on the fake and on the real
//! kube-apiserver v1.37.2 (docs/fake-apiserver.md has the differences found and what was left).
//!
//! - Update (PUT) without `metadata.resourceVersion`: 422 `Invalid` (events excepted: their strategy allows
//!   unconditional updates); a stale one: 409 `Conflict`, checked before validation; another `metadata.uid`:
//!   409 (etcd3's precondition `StorageError`). An update that changes nothing writes nothing (same
//!   resourceVersion, no event), as etcd.
//! - PUT of a missing object creates it (201) for leases and events (`AllowCreateOnUpdate` is true in their
//!   registry strategies) and is 404 `NotFound` for configmaps.
//! - Create: validation (422) first, then a set resourceVersion is a 500 without a reason (etcd3's
//!   "resourceVersion should not be set on objects to be created"), then an existing name 409
//!   `AlreadyExists`.
//! - Decoding (400, with the Go decoder's and the scheme's messages): the name (PUT; a missing one too) or
//!   namespace in the body differing from the URL; a `kind`/`apiVersion` the scheme does not know or cannot
//!   convert, or another version of the kind; a wrongly typed field; a body that is not a JSON object.
//!   Unknown fields are dropped with a `Warning: 299` header each (`fieldValidation=Warn`). Timestamps are
//!   parsed as Go's `time.Parse` parses them (a `MicroTime` needs exactly six fractional digits but may have
//!   a comma, a one-digit hour, an offset up to ±24:00) and stored in UTC; empty values Go leaves out are
//!   left out, and the fields Go always prints are there (`"spec": {}` of a Lease, an Event's zero fields).
//! - Preparation: a Lease's `strategy` and `preferredHolder` are dropped (the `CoordinatedLeaderElection`
//!   feature gate is off by default).
//! - Validation (422, the real messages and causes): `metadata.name` required and a DNS-1123 subdomain
//!   (`generateName` too), labels and annotations; Lease `leaseDurationSeconds > 0`, `leaseTransitions >= 0`;
//!   ConfigMap keys, no key in both `data` and `binaryData`, at most 1 MiB of values, `immutable`;
//!   `events.k8s.io/v1` events strictly (`ValidateEventCreate`/`ValidateEventUpdate`: reporting fields,
//!   `eventTime`, `type`, series, deprecated fields, what may not change), core `v1` events by the legacy
//!   rules only. A body over 3 MiB: 413 `RequestEntityTooLarge`.
//! - Delete honours `DeleteOptions.preconditions` (uid, resourceVersion): 409 worded as `rest.BeforeDelete`.
//! - JSON patch operations that fail: 422 with the real generic message; an unknown patch type: 415.
//! - Every error is a `metav1.Status` body (`kind: Status`, `status: Failure`, `reason`, `code`, `details`
//!   without empty fields).
//! - Watch (`?watch=1|true`): newline-delimited JSON events, replayed after `resourceVersion` from a bounded
//!   history ([`Options::history_limit`], [`FakeApiServer::compact`]); a start older than the history gets
//!   an `ERROR` event with a 410 `Expired` Status (the watch cache's message for leases and configmaps,
//!   etcd's for events). Unset or `"0"` replays the current objects as `ADDED`, then, with
//!   `allowWatchBookmarks=true`, a bookmark annotated `k8s.io/initial-events-end` (a watch list,
//!   `sendInitialEvents=true`, does so whatever the resourceVersion); a bookmark 2 s before
//!   `timeoutSeconds` ends the watch, none at the end; more every [`Options::bookmark_interval`]. Label and
//!   field selectors filter, an object entering or leaving a selector is `ADDED` or `DELETED`.
//!   [`FakeApiServer::break_watches`] ends them.
//! - List: items without `kind`/`apiVersion`, the list's resourceVersion; label selectors (`=`, `==`, `!=`,
//!   `in`, `notin`, exists, `!`, `gt`, `lt`) and field selectors (`metadata.name`, `metadata.namespace`, and
//!   events' fields) with the real parse errors; `limit` and `continue` (with `remainingItemCount`, pages
//!   read at the first page's version), an exact older `resourceVersion` read as it was (both undone from
//!   the history; past it, 410 with etcd3's messages and, for `continue`, a token at the latest); 410
//!   for a compacted `resourceVersion` with `resourceVersionMatch=Exact`, 504 for one in the future; the
//!   `ListOptions` rules on `resourceVersionMatch` and `sendInitialEvents` (422).
//! - A request without a bearer token is `system:anonymous`'s: 403. RBAC: by default a client may do
//!   everything to the served resources and nothing else (the proxy's default Role);
//!   [`FakeApiServer::deny`] takes verbs on a resource away from one client, and [`FakeApiServer::grant`]
//!   limits one client to a Role's rules (`resourceNames` matched against the URL's name, or a list's or
//!   watch's `metadata.name` field selector, as the real authorizer does): a denied request gets 403
//!   `Forbidden` (worded as the real authorizer words it, the token as the user). A `SelfSubjectAccessReview`
//!   answers `allowed: true` with the RoleBinding the proxy would have used as its reason, or
//!   `allowed: false` without one; one without exactly one kind of attributes is 422.
//!
//! # What it does not do
//!
//! No TLS, authorization beyond those two, server-side apply (415), `deletecollection` (405),
//! `managedFields`, `generation`, finalizers, dry runs, `fieldValidation=Strict`, protobuf, namespaces as
//! objects (every namespace exists), or cluster-scoped resources. A read at a future resourceVersion is a
//! 504 at once (the real server waits 3 s for it), and bookmarks come every second by default (the real
//! server's: about every minute). [`FakeApiServer::compact`] expires every older version for lists and all
//! watches at once, where the real server's compaction expires lists and event watches and the watch
//! cache forgets lease and configmap versions on its own schedule.
//!
//! # Faults and the request log
//!
//! Each client is one bearer token; [`FakeApiServer::faults`] injects latency, a 5xx, a hang or a
//! connection reset into its requests (optionally only some verbs). [`FakeApiServer::requests`] returns
//! every request with its arrival time (tokio and wall clock), token, verb, resource, name and status.

mod faults;
mod http;
mod rbac;
pub mod real;
mod resource;
mod status;
mod store;
mod upstream;
mod validate;
mod watch;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use faults::{Fault, FaultHandle, RequestRecord, Verb};
pub use rbac::{verb_name, PolicyRule};
pub use resource::Resource;
pub use validate::MICRO_TIME_LAYOUT;

use faults::{lock, Faults, RequestLog};
use http::{Connection, ResettableListener};
use rbac::Rbac;
use store::Store;

/// Which API server a test runs against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Which {
    /// The fake: its own store, RBAC and watches.
    Fake,
    /// The real kube-apiserver of tools/kube-testenv, behind the fake in proxy mode.
    Real,
}

/// Defines, for each function listed, the tests `fake::NAME` and `real::NAME` (one call per file: it
/// defines `mod fake` and `mod real`):
///
/// - `on_both_servers!(#[tokio::test(...)] a, b)`: `async fn a(which: Which)`, run with that attribute;
/// - `on_both_servers!(processes: c, d)`: `fn c(which: Which)`, plain `#[test]`s for tests that wait on
///   real processes from the test thread (see [`FakeApiServer::start_in_background_on`]);
/// - `on_both_servers!(#[tokio::test] a, b; processes: c, d)`: both kinds in one file.
#[macro_export]
macro_rules! on_both_servers {
    (#[$attr:meta] $($name:ident),+ $(,)?) => {
        $crate::on_both_servers!(@both [#[$attr] $($name),+] []);
    };
    (processes: $($process:ident),+ $(,)?) => {
        $crate::on_both_servers!(@both [] [$($process),+]);
    };
    (#[$attr:meta] $($name:ident),+ ; processes: $($process:ident),+ $(,)?) => {
        $crate::on_both_servers!(@both [#[$attr] $($name),+] [$($process),+]);
    };
    (@both $tokio:tt $processes:tt) => {
        mod fake {
            $crate::on_both_servers!(@tests Fake $tokio $processes);
        }
        mod real {
            $crate::on_both_servers!(@tests Real $tokio $processes);
        }
    };
    (@tests $which:ident [$(#[$attr:meta] $($name:ident),+)?] [$($process:ident),*]) => {
        $($(
            #[$attr]
            async fn $name() {
                super::$name($crate::support::fake_apiserver::Which::$which).await
            }
        )+)?
        $(
            #[test]
            fn $process() {
                super::$process($crate::support::fake_apiserver::Which::$which)
            }
        )*
    };
}

/// The namespace of the kubeconfig context on the fake.
pub const NAMESPACE: &str = "default";
/// Default for [`Options::bookmark_interval`].
pub const DEFAULT_BOOKMARK_INTERVAL: Duration = Duration::from_secs(1);
/// Default for [`Options::history_limit`].
pub const DEFAULT_HISTORY_LIMIT: usize = 100;

/// How the fake API server behaves.
#[derive(Clone, Debug)]
pub struct Options {
    /// How often a watch with `allowWatchBookmarks=true` gets a bookmark (default 1 s; the real server
    /// sends one about every minute).
    pub bookmark_interval: Duration,
    /// How many changes the store keeps for watches to replay (default 100); older starts get 410 Gone.
    pub history_limit: usize,
}

/// A running fake API server; dropping it stops it, ends its watches and releases hung requests.
#[derive(Debug)]
pub struct FakeApiServer {
    shared: Arc<Shared>,
    addr: SocketAddr,
    task: JoinHandle<()>,
}

/// The state the handlers share.
#[derive(Debug)]
struct Shared {
    store: Mutex<Store>,
    faults: Faults,
    rbac: Rbac,
    log: RequestLog,
    options: Options,
    /// Cancelled (and replaced) by `break_watches`; a child of `shutdown`, so cancelled with it too.
    watch_breaker: Mutex<CancellationToken>,
    /// Cancelled when the server is dropped.
    shutdown: CancellationToken,
    /// Proxy mode: the real API server that serves every request that gets past the faults.
    upstream: Option<upstream::Upstream>,
    /// TCP connections accepted so far.
    accepted: Arc<std::sync::atomic::AtomicUsize>,
}

// === impl Options ===

impl Default for Options {
    fn default() -> Options {
        Options {
            bookmark_interval: DEFAULT_BOOKMARK_INTERVAL,
            history_limit: DEFAULT_HISTORY_LIMIT,
        }
    }
}

impl Options {
    /// Sets [`Options::bookmark_interval`].
    #[must_use]
    pub fn with_bookmark_interval(self, bookmark_interval: Duration) -> Options {
        Options {
            bookmark_interval,
            ..self
        }
    }

    /// Sets [`Options::history_limit`].
    #[must_use]
    pub fn with_history_limit(self, history_limit: usize) -> Options {
        Options {
            history_limit,
            ..self
        }
    }
}

// === impl FakeApiServer ===

impl FakeApiServer {
    /// For tests that wait on real processes from the test thread: a server with default [`Options`]
    /// serving on the worker threads of its own runtime. Keep the runtime alive as long as the server.
    pub fn start_in_background() -> (tokio::runtime::Runtime, FakeApiServer) {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a tokio runtime for the fake API server");
        let server = runtime.block_on(FakeApiServer::start());
        (runtime, server)
    }

    /// [`FakeApiServer::start_in_background`] on the server `which` (see [`FakeApiServer::start_on`]);
    /// `None` if the real server is unavailable and not required.
    pub fn start_in_background_on(
        which: Which,
        test: &str,
    ) -> Option<(tokio::runtime::Runtime, FakeApiServer)> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a tokio runtime for the fake API server");
        let server = runtime.block_on(FakeApiServer::start_on(which, test))?;
        Some((runtime, server))
    }

    /// Starts a server with default [`Options`] on `127.0.0.1:0`.
    pub async fn start() -> FakeApiServer {
        FakeApiServer::start_with(Options::default()).await
    }

    /// Starts a server with `options` on `127.0.0.1:0`.
    pub async fn start_with(options: Options) -> FakeApiServer {
        FakeApiServer::start_inner(options, None).await
    }

    /// The fake in proxy mode in front of this process's real API server (see [`real`]), in a fresh
    /// namespace named after `test`: faults, the request log and [`FakeApiServer::break_watches`] work as
    /// on the fake, everything else is the real server's. `None` if the real server is unavailable
    /// and not required (the reason is printed).
    pub async fn start_real(test: &str) -> Option<FakeApiServer> {
        let real = tokio::task::spawn_blocking(real::shared)
            .await
            .expect("start the real API server")?;
        let namespace = real.create_namespace(test).await;
        let upstream = upstream::Upstream::new(real, namespace);
        Some(FakeApiServer::start_inner(Options::default(), Some(upstream)).await)
    }

    /// The fake (`Which::Fake`) or the real server behind the proxy (`Which::Real`, see
    /// [`FakeApiServer::start_real`]).
    pub async fn start_on(which: Which, test: &str) -> Option<FakeApiServer> {
        match which {
            Which::Fake => Some(FakeApiServer::start().await),
            Which::Real => FakeApiServer::start_real(test).await,
        }
    }

    /// Whether this is the proxy in front of the real API server.
    pub fn is_real(&self) -> bool {
        self.shared.upstream.is_some()
    }

    /// The real API server behind the proxy, if this is one.
    pub fn real(&self) -> Option<&std::sync::Arc<real::RealApiServer>> {
        self.shared.upstream.as_ref().map(|upstream| &upstream.real)
    }

    /// The namespace of every kubeconfig this server hands out: [`NAMESPACE`] on the fake, the test's
    /// own on the real server.
    pub fn namespace(&self) -> &str {
        self.shared
            .upstream
            .as_ref()
            .map_or(NAMESPACE, |upstream| upstream.namespace.as_str())
    }

    async fn start_inner(options: Options, upstream: Option<upstream::Upstream>) -> FakeApiServer {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the fake API server");
        let addr = listener
            .local_addr()
            .expect("the fake API server's address");
        let shutdown = CancellationToken::new();
        let shared = Arc::new(Shared {
            store: Mutex::new(Store::new(options.history_limit)),
            faults: Faults::default(),
            rbac: Rbac::default(),
            log: RequestLog::default(),
            options,
            watch_breaker: Mutex::new(shutdown.child_token()),
            shutdown,
            upstream,
            accepted: Arc::default(),
        });
        let accepted = Arc::clone(&shared.accepted);
        let app =
            http::router(Arc::clone(&shared)).into_make_service_with_connect_info::<Connection>();
        let task = tokio::spawn(async move {
            // Serving only ends when the task is aborted.
            let _ = axum::serve(ResettableListener(listener, accepted), app).await;
        });
        FakeApiServer { shared, addr, task }
    }

    /// The server's base URL (`http://127.0.0.1:PORT`).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The kubeconfig of a client with bearer token `token`: this server, namespace [`NAMESPACE`].
    pub fn kubeconfig_json(&self, token: &str) -> Value {
        json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{ "name": "fake", "cluster": { "server": self.url() } }],
            "users": [{ "name": token, "user": { "token": token } }],
            "contexts": [{ "name": "fake", "context": { "cluster": "fake", "user": token, "namespace": self.namespace() } }],
            "current-context": "fake",
        })
    }

    /// Writes [`FakeApiServer::kubeconfig_json`] (JSON is YAML) to `dir/kubeconfig-TOKEN` and returns its path.
    pub fn kubeconfig(&self, dir: &Path, token: &str) -> PathBuf {
        let path = dir.join(format!("kubeconfig-{token}"));
        std::fs::write(&path, self.kubeconfig_json(token).to_string())
            .expect("write the kubeconfig");
        path
    }

    /// The `kube::Config` of the client with bearer token `token`, built from its kubeconfig. Note that
    /// kube's default `Config` retries 429/503/504 answers (`default_retry`, up to 15 times with backoff).
    pub async fn config(&self, token: &str) -> kube::Config {
        let kubeconfig: kube::config::Kubeconfig =
            serde_json::from_value(self.kubeconfig_json(token)).expect("a valid kubeconfig");
        let options = kube::config::KubeConfigOptions::default();
        kube::Config::from_custom_kubeconfig(kubeconfig, &options)
            .await
            .expect("a kube config")
    }

    /// A real `kube::Client` with kube's defaults for the client with bearer token `token`.
    pub async fn client(&self, token: &str) -> kube::Client {
        kube::Client::try_from(self.config(token).await).expect("a kube client")
    }

    /// The fault switch of the client with bearer token `token`.
    pub fn faults(&self, token: &str) -> FaultHandle {
        self.shared.faults.handle(token)
    }

    /// Denies `verbs` on `resource` to the client with bearer token `token`: its requests get 403
    /// `Forbidden`, and its `SelfSubjectAccessReview`s say `allowed: false`.
    pub fn deny(&self, token: &str, resource: Resource, verbs: &[Verb]) {
        if let Some(upstream) = &self.shared.upstream {
            return upstream.deny(token, resource, verbs);
        }
        self.shared.rbac.deny(token, resource, verbs);
    }

    /// From now on, the client with bearer token `token` may do what `rules` (a Role's) grant and
    /// nothing else; see [`PolicyRule`] for how they match.
    pub fn grant(&self, token: &str, rules: Vec<PolicyRule>) {
        if let Some(upstream) = &self.shared.upstream {
            return upstream.grant(token, rules);
        }
        self.shared.rbac.grant(token, rules);
    }

    /// How many TCP connections clients have opened to this server so far (a client that keeps its
    /// connections alive opens one and reuses it).
    pub fn connections(&self) -> usize {
        self.shared
            .accepted
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.shared.log.snapshot()
    }

    /// The stored object, as the server would return it, or `None`.
    pub fn object(&self, resource: Resource, namespace: &str, name: &str) -> Option<Value> {
        if let Some(upstream) = &self.shared.upstream {
            let path = resource.object_path(namespace, name);
            return upstream.real.with_admin(move |admin| async move {
                let request = axum::http::Request::get(path)
                    .body(Vec::new())
                    .expect("a GET request");
                match admin.request::<Value>(request).await {
                    Ok(object) => Some(object),
                    Err(kube::Error::Api(status)) if status.code == 404 => None,
                    Err(error) => panic!("GET from the real API server: {error}"),
                }
            });
        }
        self.shared.store().get(resource, namespace, name).ok()
    }

    /// The latest resourceVersion.
    pub fn resource_version(&self) -> u64 {
        assert!(!self.is_real(), "resource_version is the fake's only");
        self.shared.store().resource_version()
    }

    /// Forgets the change history: watches from any earlier resourceVersion get 410 Gone.
    pub fn compact(&self) {
        assert!(!self.is_real(), "compact is the fake's only");
        self.shared.store().compact();
    }

    /// Ends every open watch stream (clients see a clean end of stream and must re-watch).
    pub fn break_watches(&self) {
        let fresh = self.shared.shutdown.child_token();
        let old = std::mem::replace(&mut *lock(&self.shared.watch_breaker), fresh);
        old.cancel();
    }
}

impl Drop for FakeApiServer {
    fn drop(&mut self) {
        self.shared.shutdown.cancel();
        self.task.abort();
    }
}

// === impl Shared ===

impl Shared {
    fn store(&self) -> MutexGuard<'_, Store> {
        lock(&self.store)
    }

    fn watch_breaker(&self) -> CancellationToken {
        lock(&self.watch_breaker).clone()
    }
}
