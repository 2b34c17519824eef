//! The fan-out of what happens in the process to whoever watches it: metrics, `/status`, Kubernetes Events.
//! What happens is [`crate::event`]'s vocabulary; this module only delivers it.
//!
//! The runner, the elector and the dispatcher each report on their own unbounded channel (they must never
//! block on a slow watcher). [`Observers::run`] is the one task reading all three; it hands every event,
//! in order per source, to each registered [`Observer`]. Adding a watcher is one line:
//! `observers.push(Arc::new(sink))`.

use std::sync::Arc;

use tokio::sync::mpsc::{self, UnboundedReceiver, UnboundedSender};

use crate::event::{ConfigReload, DispatchEvent, ElectionEvent, RunEvent};

/// Something that watches the process's events. Calls come from one task; keep them quick (no I/O waits:
/// hand slow work to a task of your own).
pub trait Observer: Send + Sync {
    /// A runner event: an attempt started, a run finished, a fire skipped by the runner.
    fn on_run(&self, event: &RunEvent);
    /// An elector event: leadership acquired or lost, a lease observed, a request, a renew failure.
    fn on_election(&self, event: &ElectionEvent);
    /// A dispatcher event: a fire skipped (suspended, missed deadline), a job's next fire time.
    fn on_dispatch(&self, event: &DispatchEvent) {
        let _ = event;
    }
    /// The jobs were loaded (at start) or reloaded, or a reload failed.
    fn on_config_reload(&self, reload: &ConfigReload) {
        let _ = reload;
    }
}

/// The senders to hand to the runner, the elector and the dispatcher.
#[derive(Debug)]
pub struct Senders {
    /// For [`crate::runner::Runner::new`].
    pub runs: UnboundedSender<RunEvent>,
    /// For [`crate::election::Elector::with_events`].
    pub election: UnboundedSender<ElectionEvent>,
    /// For [`crate::dispatch::Dispatcher::with_events`].
    pub dispatch: UnboundedSender<DispatchEvent>,
}

/// The receiving ends, consumed by [`Observers::run`].
#[derive(Debug)]
pub struct Receivers {
    runs: UnboundedReceiver<RunEvent>,
    election: UnboundedReceiver<ElectionEvent>,
    dispatch: UnboundedReceiver<DispatchEvent>,
}

/// The three event channels.
pub fn channels() -> (Senders, Receivers) {
    let (runs_tx, runs) = mpsc::unbounded_channel();
    let (election_tx, election) = mpsc::unbounded_channel();
    let (dispatch_tx, dispatch) = mpsc::unbounded_channel();
    let senders = Senders {
        runs: runs_tx,
        election: election_tx,
        dispatch: dispatch_tx,
    };
    let receivers = Receivers {
        runs,
        election,
        dispatch,
    };
    (senders, receivers)
}

/// The registered observers.
#[derive(Clone, Default)]
pub struct Observers {
    list: Vec<Arc<dyn Observer>>,
}

impl std::fmt::Debug for Observers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Observers")
            .field("count", &self.list.len())
            .finish()
    }
}

// === impl Observers ===

impl Observers {
    /// No observers yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers an observer.
    pub fn push(&mut self, observer: Arc<dyn Observer>) {
        self.list.push(observer);
    }

    /// Tells every observer about a load or reload of the jobs (called directly by the reloader, not via a
    /// channel).
    pub fn config_reload(&self, reload: &ConfigReload) {
        for observer in &self.list {
            observer.on_config_reload(reload);
        }
    }

    /// Delivers events until all three channels are closed (every sender dropped), so nothing reported
    /// before shutdown is lost.
    pub async fn run(self, receivers: Receivers) {
        let Receivers {
            mut runs,
            mut election,
            mut dispatch,
        } = receivers;
        let (mut runs_open, mut election_open, mut dispatch_open) = (true, true, true);
        while runs_open || election_open || dispatch_open {
            tokio::select! {
                event = runs.recv(), if runs_open => match event {
                    Some(event) => self.list.iter().for_each(|o| o.on_run(&event)),
                    None => runs_open = false,
                },
                event = election.recv(), if election_open => match event {
                    Some(event) => self.list.iter().for_each(|o| o.on_election(&event)),
                    None => election_open = false,
                },
                event = dispatch.recv(), if dispatch_open => match event {
                    Some(event) => self.list.iter().for_each(|o| o.on_dispatch(&event)),
                    None => dispatch_open = false,
                },
            }
        }
    }
}
