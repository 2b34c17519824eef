//! Test support for the election tests: a [`LeaseStore`] wrapper that can be told to fail or hang, and
//! logs every request; and a [`Replica`] (one elector on a file store, running on its own task).

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use chrono::{TimeZone, Utc};
use leasecron::clock::{PausedClock, SharedClock};
use leasecron::election::fencing::FloorFuture;
use leasecron::election::{self, Config, Elector, TokenFloor};
use leasecron::event::ElectionEvent;
use leasecron::lease_store::{self, Change, LeaseRecord, LeaseStore, Verb, Versioned};
use leasecron::local::lease::FileStore;
use leasecron::term::{Leadership, Term};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// The timings every election test uses (the production defaults): LD 15 s, RD 10 s, RP 2 s, G 3 s.
pub const LD: Duration = Duration::from_secs(15);
/// Renew deadline.
pub const RD: Duration = Duration::from_secs(10);
/// Retry period.
pub const RP: Duration = Duration::from_secs(2);
/// Largest job grace.
pub const GRACE: Duration = Duration::from_secs(3);
/// Slack around an instant under test: well below RP, well above timer granularity.
pub const EPSILON: Duration = Duration::from_millis(10);

/// How the store answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Pass every request through.
    Healthy,
    /// Fail every request with a transient I/O error.
    Fail,
    /// Never answer.
    Hang,
    /// Answer (from the real store) after this long.
    Delay(Duration),
}

/// One request as the store saw it.
#[derive(Debug, Clone)]
pub struct Call {
    /// The request.
    pub verb: Verb,
    /// When it was made.
    pub sent: Instant,
    /// The record written (create / update).
    pub written: Option<LeaseRecord>,
    /// The version the update was conditioned on.
    pub expected: Option<String>,
    /// The record returned, or the error as text. A hung request is not logged.
    pub result: Result<Option<Versioned>, String>,
}

#[derive(Debug)]
struct Inner {
    mode: Mode,
    calls: Vec<Call>,
    /// Every version handed to the elector (by any request or by `changed`), when it was handed over.
    seen: Vec<(Instant, String)>,
}

/// The test's handle on a [`FaultyStore`]: switch its mode, read its log.
#[derive(Debug, Clone)]
pub struct Faults(Arc<Mutex<Inner>>);

/// A store that passes requests to `S` unless told to fail or hang.
#[derive(Debug)]
pub struct FaultyStore<S> {
    inner: S,
    faults: Faults,
}

impl Faults {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Switches how the store answers from now on.
    pub fn set(&self, mode: Mode) {
        self.lock().mode = mode;
    }

    /// Every completed request so far.
    pub fn calls(&self) -> Vec<Call> {
        self.lock().calls.clone()
    }

    /// The last create or update that succeeded.
    pub fn last_successful_write(&self) -> Option<Call> {
        self.calls()
            .into_iter()
            .rev()
            .find(|c| c.verb != Verb::Get && c.result.is_ok())
    }

    /// When the elector was first handed `version`.
    pub fn first_seen(&self, version: &str) -> Option<Instant> {
        self.lock()
            .seen
            .iter()
            .find(|(_, v)| v == version)
            .map(|(at, _)| *at)
    }

    fn record(&self, call: Call) {
        let mut inner = self.lock();
        if let Ok(Some(v)) = &call.result {
            inner.seen.push((Instant::now(), v.version.clone()));
        }
        inner.calls.push(call);
    }

    fn saw(&self, record: &Option<Versioned>) {
        if let Some(v) = record {
            self.lock().seen.push((Instant::now(), v.version.clone()));
        }
    }

    /// Fails or hangs according to the mode.
    async fn gate(&self, store: String) -> Result<(), lease_store::Error> {
        let mode = self.lock().mode;
        match mode {
            Mode::Healthy => Ok(()),
            Mode::Fail => Err(lease_store::Error::Io {
                path: store.into(),
                op: "injected failure",
                source: std::io::Error::other("the test made the store fail"),
            }),
            Mode::Hang => std::future::pending().await,
            Mode::Delay(delay) => {
                tokio::time::sleep(delay).await;
                Ok(())
            }
        }
    }
}

impl<S: LeaseStore> FaultyStore<S> {
    /// Wraps `inner`, healthy at first.
    pub fn new(inner: S) -> (Self, Faults) {
        let faults = Faults(Arc::new(Mutex::new(Inner {
            mode: Mode::Healthy,
            calls: Vec::new(),
            seen: Vec::new(),
        })));
        (
            FaultyStore {
                inner,
                faults: faults.clone(),
            },
            faults,
        )
    }
}

impl<S: LeaseStore> LeaseStore for FaultyStore<S> {
    fn describe(&self) -> String {
        self.inner.describe()
    }

    async fn get(&self) -> Result<Option<Versioned>, lease_store::Error> {
        let sent = Instant::now();
        let result = match self.faults.gate(self.describe()).await {
            Ok(()) => self.inner.get().await,
            Err(e) => Err(e),
        };
        self.faults.record(Call {
            verb: Verb::Get,
            sent,
            written: None,
            expected: None,
            result: result
                .as_ref()
                .map(Clone::clone)
                .map_err(ToString::to_string),
        });
        result
    }

    async fn create(&self, record: &LeaseRecord) -> Result<Versioned, lease_store::Error> {
        let sent = Instant::now();
        let result = match self.faults.gate(self.describe()).await {
            Ok(()) => self.inner.create(record).await,
            Err(e) => Err(e),
        };
        self.faults.record(Call {
            verb: Verb::Create,
            sent,
            written: Some(record.clone()),
            expected: None,
            result: result
                .as_ref()
                .map(|v| Some(v.clone()))
                .map_err(ToString::to_string),
        });
        result
    }

    async fn update(
        &self,
        record: &LeaseRecord,
        version: &str,
    ) -> Result<Versioned, lease_store::Error> {
        let sent = Instant::now();
        let result = match self.faults.gate(self.describe()).await {
            Ok(()) => self.inner.update(record, version).await,
            Err(e) => Err(e),
        };
        self.faults.record(Call {
            verb: Verb::Update,
            sent,
            written: Some(record.clone()),
            expected: Some(version.to_owned()),
            result: result
                .as_ref()
                .map(|v| Some(v.clone()))
                .map_err(ToString::to_string),
        });
        result
    }

    async fn changed(&self, known: Option<String>) -> Change {
        let mode = self.faults.lock().mode;
        match mode {
            Mode::Hang => std::future::pending().await,
            Mode::Fail => {
                self.inner.changed(known).await;
                Change::Unknown
            }
            Mode::Healthy | Mode::Delay(_) => {
                let change = self.inner.changed(known).await;
                if let Change::Record(record) = &change {
                    self.faults.saw(record);
                }
                change
            }
        }
    }
}

/// A run state's fencing token, as the test sets it: the [`TokenFloor`] of a [`Replica`].
#[derive(Debug, Default)]
pub struct TestFloor {
    token: AtomicU64,
    failing: AtomicBool,
}

impl TestFloor {
    /// A floor holding `token`.
    pub fn at(token: u64) -> Arc<TestFloor> {
        let floor = TestFloor::default();
        floor.set(token);
        Arc::new(floor)
    }

    /// The run state now holds `token` (0: it was deleted).
    pub fn set(&self, token: u64) {
        self.token.store(token, Ordering::Release);
    }

    /// Reading it fails from now on (or no longer).
    pub fn fail(&self, failing: bool) {
        self.failing.store(failing, Ordering::Release);
    }
}

impl TokenFloor for TestFloor {
    fn describe(&self) -> String {
        "the test's run state".to_owned()
    }

    fn highest_token(&self) -> FloorFuture<'_> {
        let result = if self.failing.load(Ordering::Acquire) {
            Err("the test made the run state unreadable".into())
        } else {
            Ok(self.token.load(Ordering::Acquire))
        };
        Box::pin(async move { result })
    }
}

/// The wall-clock time every test starts at.
pub fn start_of_test() -> chrono::DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 3, 30, 0, 30, 0)
        .single()
        .expect("a valid date")
}

/// A paused wall clock `skew` ahead of the test's start (negative: behind).
pub fn skewed_clock(skew: chrono::TimeDelta) -> SharedClock {
    Arc::new(PausedClock::starting_at(start_of_test() + skew))
}

/// The test timings for `identity`.
pub fn config(identity: &str) -> Config {
    Config::with_identity(identity).with_max_termination_grace(GRACE)
}

/// One elector on a file store, running on its own task.
pub struct Replica {
    /// The identity.
    pub identity: String,
    /// Its published leadership.
    pub leadership: watch::Receiver<Leadership>,
    /// Cancel to shut it down.
    pub shutdown: CancellationToken,
    /// The store's fault switch and log.
    pub faults: Faults,
    /// Its events.
    pub events: mpsc::UnboundedReceiver<ElectionEvent>,
    /// Its task.
    pub task: JoinHandle<Result<(), election::Error>>,
}

impl Replica {
    /// Starts an elector for `identity` on the lease file `path`, with an unskewed clock.
    pub fn start(path: &Path, identity: &str) -> Replica {
        Replica::start_with_clock(path, identity, skewed_clock(chrono::TimeDelta::zero()))
    }

    /// Starts an elector for `identity` on the lease file `path`, with the wall clock `clock`.
    pub fn start_with_clock(path: &Path, identity: &str, clock: SharedClock) -> Replica {
        Replica::start_with_config(path, config(identity), clock)
    }

    /// Starts an elector with `config` on the lease file `path`, with the wall clock `clock`.
    pub fn start_with_config(path: &Path, config: Config, clock: SharedClock) -> Replica {
        Replica::start_with_floor(path, config, clock, None)
    }

    /// Starts an elector with `config` on the lease file `path`, with the wall clock `clock`, whose terms'
    /// tokens exceed `floor` if given.
    pub fn start_with_floor(
        path: &Path,
        config: Config,
        clock: SharedClock,
        floor: Option<Arc<TestFloor>>,
    ) -> Replica {
        let identity = config.identity.clone();
        let file =
            FileStore::open(path, config.retry_period).expect("the lease file can be opened");
        let (store, faults) = FaultyStore::new(file);
        let (mut elector, leadership) =
            Elector::new(store, config, clock).expect("the test config is valid");
        if let Some(floor) = floor {
            elector = elector.with_token_floor(floor);
        }
        let (tx, events) = mpsc::unbounded_channel();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(elector.with_events(tx).run(shutdown.clone()));
        Replica {
            identity,
            leadership,
            shutdown,
            faults,
            events,
            task,
        }
    }

    /// The current term, if this replica leads.
    pub fn term(&self) -> Option<Term> {
        match &*self.leadership.borrow() {
            Leadership::Leader { term } => Some(term.clone()),
            _ => None,
        }
    }

    /// True if this replica leads with a live term.
    pub fn leads(&self) -> bool {
        self.leadership.borrow().live_term().is_some()
    }

    /// The holder this replica, as a follower, believes in (`None` if it leads, or nobody holds).
    pub fn follows(&self) -> Option<Option<String>> {
        match &*self.leadership.borrow() {
            Leadership::Follower { holder } => Some(holder.clone()),
            _ => None,
        }
    }

    /// Every event so far.
    pub fn drain_events(&mut self) -> Vec<ElectionEvent> {
        let mut events = Vec::new();
        while let Ok(event) = self.events.try_recv() {
            events.push(event);
        }
        events
    }

    /// Shuts the replica down and waits for its elector to return.
    pub async fn stop(self) -> Result<(), election::Error> {
        self.shutdown.cancel();
        self.task.await.expect("the elector task does not panic")
    }
}

/// Lets time pass (paused time: every timer due before `at` fires, and every task runs until it waits).
pub async fn run_until(at: Instant) {
    tokio::time::sleep_until(at).await;
}

/// Lets time pass in steps of 100 ms until `done()` holds; false if it still does not after `limit`.
pub async fn run_until_true(limit: Duration, done: impl Fn() -> bool) -> bool {
    const STEP: Duration = Duration::from_millis(100);
    let give_up = Instant::now() + limit;
    while Instant::now() < give_up {
        if done() {
            return true;
        }
        tokio::time::sleep(STEP).await;
    }
    done()
}
