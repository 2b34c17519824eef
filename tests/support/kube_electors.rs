//! Test support for the Kubernetes Lease store: a [`KubeStore`] per fake-API client (one bearer token
//! each, so faults hit one replica), and in-process electors on such stores.
#![allow(dead_code)] // each test file uses a different part of this module

use std::sync::Arc;
use std::time::Duration;

use leasecron::clock::SystemClock;
use leasecron::election::{Config, ElectionEvent, Elector};
use leasecron::lease_store::kube::Params;
use leasecron::lease_store::KubeStore;
use leasecron::term::Leadership;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::fake_apiserver::{FakeApiServer, NAMESPACE};

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

/// A store on [`LEASE`] for client `token`, with RP as the request timeout and poll interval.
pub async fn store(server: &FakeApiServer, token: &str) -> KubeStore {
    let params = Params::new(NAMESPACE, LEASE, RP).with_watch_timeout(Duration::from_secs(5));
    KubeStore::new(config(server, token).await, params).expect("a store")
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
        let store = store(server, identity).await;
        let mut config = Config::with_identity(identity);
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
