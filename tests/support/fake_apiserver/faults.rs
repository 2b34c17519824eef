//! Per-client fault injection (a client is a bearer token) and the request log.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::time::Instant;

use super::resource::Resource;

/// A fault injected into every matching request of one client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Serve normally.
    None,
    /// Wait this long (tokio time), then serve normally.
    Latency(Duration),
    /// Answer with this status code (5xx or 429) and a `metav1.Status` body, without touching the store.
    Status(u16),
    /// Never answer (until the server is dropped); the store is not touched.
    Hang,
    /// Drop the connection without an answer (a TCP reset); the store is not touched.
    Reset,
}

/// The Kubernetes verb of a request, as in audit logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Verb {
    /// GET of one object.
    Get,
    /// GET of a collection.
    List,
    /// GET of a collection with `watch=1`.
    Watch,
    /// POST.
    Create,
    /// PUT.
    Update,
    /// DELETE of one object.
    Delete,
    /// PATCH.
    Patch,
}

/// One served (or refused) request.
#[derive(Clone, Debug, PartialEq)]
pub struct RequestRecord {
    /// When the request arrived, on the tokio clock (paused in paused-time tests).
    pub at: Instant,
    /// When the request arrived, on the wall clock.
    pub wall: DateTime<Utc>,
    /// The bearer token, if any.
    pub token: Option<String>,
    /// The verb, if the request matched a route.
    pub verb: Option<Verb>,
    /// The resource, if the request matched a route.
    pub resource: Option<Resource>,
    /// The object name, for single-object routes.
    pub name: Option<String>,
    /// For a list or watch, the object name its `fieldSelector` selects (`metadata.name=X`): RBAC
    /// authorizes the request against that name.
    pub selected_name: Option<String>,
    /// The status code answered; `None` when no answer was sent (an injected hang or reset).
    pub status: Option<u16>,
}

/// One client's fault and the verbs it applies to (`None`: all verbs).
#[derive(Clone, Debug)]
struct Rule {
    fault: Fault,
    verbs: Option<Vec<Verb>>,
}

/// The faults of all clients, by bearer token.
#[derive(Clone, Debug, Default)]
pub struct Faults(Arc<Mutex<HashMap<String, Rule>>>);

/// Sets the fault of one client; see [`Faults`].
#[derive(Clone, Debug)]
pub struct FaultHandle {
    faults: Faults,
    token: String,
}

/// The request log, in arrival order.
#[derive(Clone, Debug, Default)]
pub struct RequestLog(Arc<Mutex<Vec<RequestRecord>>>);

// === impl Faults ===

impl Faults {
    /// The handle for the client with bearer token `token`.
    pub fn handle(&self, token: &str) -> FaultHandle {
        FaultHandle {
            faults: self.clone(),
            token: token.to_owned(),
        }
    }

    /// The fault that applies to a request of `token` with `verb`.
    pub fn lookup(&self, token: Option<&str>, verb: Option<Verb>) -> Fault {
        let Some(token) = token else {
            return Fault::None;
        };
        match lock(&self.0).get(token) {
            Some(rule)
                if rule
                    .verbs
                    .as_ref()
                    .is_none_or(|verbs| verb.is_some_and(|v| verbs.contains(&v))) =>
            {
                rule.fault.clone()
            }
            _ => Fault::None,
        }
    }
}

// === impl FaultHandle ===

impl FaultHandle {
    /// Applies `fault` to every request of this client from now on.
    pub fn set(&self, fault: Fault) {
        self.store(fault, None);
    }

    /// Applies `fault` only to this client's requests with one of `verbs`; other verbs are served normally.
    pub fn set_for(&self, verbs: &[Verb], fault: Fault) {
        self.store(fault, Some(verbs.to_vec()));
    }

    /// Serves this client normally again (already hung requests stay hung).
    pub fn clear(&self) {
        self.set(Fault::None);
    }

    fn store(&self, fault: Fault, verbs: Option<Vec<Verb>>) {
        lock(&self.faults.0).insert(self.token.clone(), Rule { fault, verbs });
    }
}

// === impl RequestLog ===

impl RequestLog {
    /// Appends a record.
    pub fn push(&self, record: RequestRecord) {
        lock(&self.0).push(record);
    }

    /// A copy of every record so far.
    pub fn snapshot(&self) -> Vec<RequestRecord> {
        lock(&self.0).clone()
    }
}

/// Locks a mutex, ignoring poisoning: a panicking test thread must not hide the log from the others.
pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
