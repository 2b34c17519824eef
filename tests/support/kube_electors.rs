//! Test support for the Kubernetes Lease store: a [`KubeStore`] per fake-API client (one bearer token
//! each, so faults hit one replica), and in-process electors on such stores. The same helpers serve the
//! fake in proxy mode in front of the real API server (`FakeApiServer::start_on(Which::Real, ..)`), where
//! each token is a real user.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use leasecron::clock::SystemClock;
use leasecron::election::{Config, Elector};
use leasecron::event::ElectionEvent;
use leasecron::kubernetes::lease::KubeStore;
use leasecron::kubernetes::lease::Params;
use leasecron::term::Leadership;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::fake_apiserver::{FakeApiServer, Resource};

/// The Lease the tests elect through.
pub const LEASE: &str = "leasecron";
/// Fast timings (as `tests/support/replica.rs`): LD 3 s, RD 1.5 s, RP 500 ms.
pub const LD: Duration = Duration::from_secs(3);
/// Renew deadline.
pub const RD: Duration = Duration::from_millis(1500);
/// Retry period.
pub const RP: Duration = Duration::from_millis(500);
/// How long a test waits for something that should happen within a few lease durations.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// The `kube::Config` of the fake API's client `token`.
pub async fn config(server: &FakeApiServer, token: &str) -> kube::Config {
    let kubeconfig: kube::config::Kubeconfig =
        serde_json::from_value(server.kubeconfig_json(token)).expect("a valid kubeconfig");
    kube::Config::from_custom_kubeconfig(kubeconfig, &kube::config::KubeConfigOptions::default())
        .await
        .expect("a kube config")
}

/// The holder [`LEASE`] names on `server` (`run`'s default Lease too), if any.
pub fn lease_holder(server: &FakeApiServer) -> Option<String> {
    let lease = server.object(Resource::Leases, server.namespace(), LEASE)?;
    lease["spec"]["holderIdentity"]
        .as_str()
        .filter(|h| !h.is_empty())
        .map(str::to_owned)
}

/// A store on [`LEASE`] for client `token`, with RP as the request timeout and poll interval.
pub async fn store(server: &FakeApiServer, token: &str) -> KubeStore {
    store_on(config(server, token).await)
}

/// A store on [`LEASE`] through a client built from `config`, with RP as the request timeout and poll
/// interval.
pub fn store_on(config: kube::Config) -> KubeStore {
    let params = Params::new(&config.default_namespace, LEASE, RP)
        .with_watch_timeout(Duration::from_secs(5));
    KubeStore::new(config, params).expect("a store")
}

/// One elector on its own [`KubeStore`], running on its own task.
pub struct KubeElector {
    /// Its identity (also its bearer token).
    pub identity: String,
    /// What it publishes.
    pub leadership: watch::Receiver<Leadership>,
    /// Everything it reported.
    pub events: mpsc::UnboundedReceiver<ElectionEvent>,
    /// Cancels it (a clean shutdown: release).
    pub shutdown: CancellationToken,
    /// Its task; abort it to simulate a crash (no release).
    pub task: JoinHandle<()>,
}

impl KubeElector {
    /// Starts an elector with identity and bearer token `identity`, fast timings and no job grace.
    pub async fn start(server: &FakeApiServer, identity: &str) -> KubeElector {
        KubeElector::start_on(config(server, identity).await, identity, Duration::ZERO)
    }

    /// Starts an elector with identity `identity` on a store built from `config`, with fast timings and
    /// `grace` as the largest termination grace of its runs.
    pub fn start_on(config: kube::Config, identity: &str, grace: Duration) -> KubeElector {
        KubeElector::spawn(store_on(config), identity, grace)
    }

    /// Starts one elector per identity, building every store first so that all first requests leave at
    /// (nearly) the same moment.
    pub async fn start_all(server: &FakeApiServer, identities: &[&str]) -> Vec<KubeElector> {
        let mut stores = Vec::new();
        for identity in identities {
            stores.push(store(server, identity).await);
        }
        stores
            .into_iter()
            .zip(identities)
            .map(|(store, identity)| KubeElector::spawn(store, identity, Duration::ZERO))
            .collect()
    }

    fn spawn(store: KubeStore, identity: &str, grace: Duration) -> KubeElector {
        let mut config = Config::with_identity(identity).with_max_termination_grace(grace);
        config.lease_duration = LD;
        config.renew_deadline = RD;
        config.retry_period = RP;
        let (elector, leadership) =
            Elector::new(store, config, Arc::new(SystemClock)).expect("valid config");
        let (tx, events) = mpsc::unbounded_channel();
        let elector = elector.with_events(tx);
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        let task = tokio::spawn(async move {
            elector
                .run(stop)
                .await
                .expect("the elector runs until shut down");
        });
        KubeElector {
            identity: identity.to_owned(),
            leadership,
            events,
            shutdown,
            task,
        }
    }

    /// True if it currently leads.
    pub fn is_leader(&self) -> bool {
        matches!(*self.leadership.borrow(), Leadership::Leader { .. })
    }

    /// Waits until it leads; panics after [`PATIENCE`].
    pub async fn wait_leader(&mut self) -> leasecron::term::Term {
        let leadership = tokio::time::timeout(
            PATIENCE,
            self.leadership
                .wait_for(|l| matches!(l, Leadership::Leader { .. })),
        )
        .await
        .unwrap_or_else(|_| panic!("{} never led", self.identity))
        .expect("the elector is alive");
        match &*leadership {
            Leadership::Leader { term } => term.clone(),
            _ => unreachable!("waited for Leader"),
        }
    }

    /// Every event reported so far.
    pub fn drain_events(&mut self) -> Vec<ElectionEvent> {
        let mut all = Vec::new();
        while let Ok(event) = self.events.try_recv() {
            all.push(event);
        }
        all
    }
}

/// Waits (up to [`PATIENCE`]) until one of `electors` leads; returns its index.
pub async fn wait_any_leader(electors: &mut [KubeElector]) -> usize {
    let started = tokio::time::Instant::now();
    loop {
        if let Some(i) = electors.iter().position(KubeElector::is_leader) {
            return i;
        }
        assert!(started.elapsed() < PATIENCE, "nobody became leader");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// What a [`GarblingProxy`] does to the answers of the verbs it garbles.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Garble {
    /// Passes answers through unchanged.
    Pass,
    /// Replaces a successful answer's body with text that is not JSON.
    NotJson,
    /// Sets `spec.leaseDurationSeconds` of a successful answer to this value (which the real API server
    /// would never accept on a write, but a broken or foreign one may send).
    LeaseDuration(i64),
}

/// An HTTP proxy in front of the fake API server (or the fake in proxy mode, and so the real API server)
/// that garbles its answers to chosen verbs: a stand-in for a broken API server, an interfering
/// intermediary, or a Lease with fields no valid write could set.
///
/// It forwards every request (with the caller's bearer token) except watches, which it refuses with 403
/// as an RBAC rule without `watch` would: the stores behind it then poll, so every read is garbled.
pub struct GarblingProxy {
    url: String,
    garble: Arc<Mutex<(Garble, Vec<&'static str>)>>,
    garbled: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

/// What the proxy's handler shares.
#[derive(Clone)]
struct ProxyState {
    upstream: String,
    client: kube::Client,
    garble: Arc<Mutex<(Garble, Vec<&'static str>)>>,
    garbled: Arc<AtomicUsize>,
}

impl GarblingProxy {
    /// Starts a proxy to `server` on `127.0.0.1:0`, passing everything through.
    pub async fn start(server: &FakeApiServer) -> GarblingProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the proxy");
        let url = format!("http://{}", listener.local_addr().expect("its address"));
        let mut upstream =
            kube::Config::new(server.url().parse().expect("the fake API server's URL"));
        upstream.default_retry = false;
        let garble = Arc::new(Mutex::new((Garble::Pass, Vec::new())));
        let garbled = Arc::new(AtomicUsize::new(0));
        let state = ProxyState {
            garbled: Arc::clone(&garbled),
            upstream: server.url(),
            client: kube::Client::try_from(upstream).expect("a client to the fake"),
            garble: Arc::clone(&garble),
        };
        let app = axum::Router::new().fallback(forward).with_state(state);
        let task = tokio::spawn(async move {
            // Serving only ends when the task is aborted.
            let _ = axum::serve(listener, app).await;
        });
        GarblingProxy {
            url,
            garble,
            garbled,
            task,
        }
    }

    /// Garbles the answers to requests with one of `methods` (`"GET"`, `"PUT"`, ...) as `garble` says.
    pub fn set(&self, garble: Garble, methods: &[&'static str]) {
        *self.garble.lock().unwrap_or_else(PoisonError::into_inner) = (garble, methods.to_vec());
    }

    /// How many answers it has garbled so far.
    pub fn garbled(&self) -> usize {
        self.garbled.load(Ordering::SeqCst)
    }

    /// The `kube::Config` of client `token` (its bearer token) through this proxy.
    pub async fn config(&self, server: &FakeApiServer, token: &str) -> kube::Config {
        let mut kubeconfig = server.kubeconfig_json(token);
        kubeconfig["clusters"][0]["cluster"]["server"] = serde_json::Value::from(self.url.clone());
        let kubeconfig: kube::config::Kubeconfig =
            serde_json::from_value(kubeconfig).expect("a valid kubeconfig");
        kube::Config::from_custom_kubeconfig(
            kubeconfig,
            &kube::config::KubeConfigOptions::default(),
        )
        .await
        .expect("a kube config")
    }
}

impl Drop for GarblingProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Forwards one request to the fake API server and garbles the answer if asked to.
async fn forward(
    axum::extract::State(state): axum::extract::State<ProxyState>,
    request: axum::extract::Request,
) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    let (parts, body) = request.into_parts();
    let path = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    if path.contains("watch=") {
        let status = serde_json::json!({
            "kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Forbidden", "code": 403,
            "message": "the proxy does not allow watches",
        });
        return (axum::http::StatusCode::FORBIDDEN, status.to_string()).into_response();
    }
    let body = axum::body::to_bytes(body, usize::MAX)
        .await
        .expect("read the request body");
    let mut upstream = axum::http::Request::builder()
        .method(parts.method.clone())
        .uri(format!("{}{path}", state.upstream));
    for name in [
        axum::http::header::AUTHORIZATION,
        axum::http::header::CONTENT_TYPE,
    ] {
        if let Some(value) = parts.headers.get(&name) {
            upstream = upstream.header(name, value);
        }
    }
    let upstream = upstream
        .body(kube::client::Body::from(body.to_vec()))
        .expect("a request");
    let Ok(answer) = state.client.send(upstream).await else {
        return axum::http::StatusCode::BAD_GATEWAY.into_response();
    };
    let status = answer.status();
    let Ok(bytes) = answer.into_body().collect_bytes().await else {
        return axum::http::StatusCode::BAD_GATEWAY.into_response();
    };
    let (garble, methods) = state
        .garble
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    let applies =
        garble != Garble::Pass && status.is_success() && methods.contains(&parts.method.as_str());
    let bytes = if applies {
        state.garbled.fetch_add(1, Ordering::SeqCst);
        garbled(garble, &bytes)
    } else {
        bytes.to_vec()
    };
    (
        status,
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        bytes,
    )
        .into_response()
}

/// `body` garbled as `garble` says.
fn garbled(garble: Garble, body: &[u8]) -> Vec<u8> {
    match garble {
        Garble::Pass => body.to_vec(),
        Garble::NotJson => b"<html>this is not JSON</html>".to_vec(),
        Garble::LeaseDuration(seconds) => {
            let mut lease: serde_json::Value =
                serde_json::from_slice(body).expect("the API server answers JSON");
            if let Some(spec) = lease.get_mut("spec").and_then(|s| s.as_object_mut()) {
                spec.insert("leaseDurationSeconds".to_owned(), seconds.into());
            }
            lease.to_string().into_bytes()
        }
    }
}
