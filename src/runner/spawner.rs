//! The thread that forks: every attempt's process is spawned here, one at a time, never on tokio's workers.
//!
//! A spawn blocks the thread that makes it: `fork` copies the page tables of the whole process (the more
//! jobs, the more memory, the longer), then the parent waits for the child's `exec`. On the workers, a
//! burst of runs due at one instant kept them busy forking while the timers of the same instant waited
//! behind: timers polled more than the on-time tolerance late skipped their slots as missed (1 000 jobs due
//! at once: about half of them). Spawns were one at a time already (the reaper's lock is held across each).
//!
//! A request may wait in line, so the caller's gate (a live term, a run not cancelled) is checked here,
//! right before the fork, not when the request was made: no time passes between the check and the spawn
//! (DESIGN.md §2, rule 5).
//!
//! One thread for the whole process, started on first use and never ended: the kernel sends a child's
//! parent-death signal when the *thread* that forked it exits (see `command`).

use std::io;
use std::panic::AssertUnwindSafe;
use std::sync::mpsc;
use std::sync::OnceLock;

use chrono::{DateTime, Utc};
use tokio::process::Command;
use tokio::runtime::Handle;
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::clock::SharedClock;
use crate::reaper::{self, TrackedChild};

/// The spawner thread's name, as `ps -L` and panics show it.
const THREAD_NAME: &str = "leasecron-spawn";

/// Why a request was not spawned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// The term is no longer live.
    NotLive,
    /// The run was cancelled.
    Cancelled,
}

/// What must hold right before the fork; `Err` says why not.
pub(crate) type Gate = Box<dyn FnOnce() -> Result<(), Refused> + Send>;

/// A spawn that was tried.
#[derive(Debug)]
pub(crate) struct Tried {
    /// The child, or why the operating system refused it.
    pub(crate) result: io::Result<TrackedChild>,
    /// Wall clock right before the spawn.
    pub(crate) started_wall: DateTime<Utc>,
    /// Monotonic instant of the same moment.
    pub(crate) started: Instant,
}

struct Request {
    command: Command,
    gate: Gate,
    clock: SharedClock,
    /// The caller's runtime: the child is registered with its reaper and I/O driver.
    runtime: Handle,
    reply: oneshot::Sender<Result<Tried, Refused>>,
}

/// Spawns `command` on the spawner thread if `gate` still holds when its turn comes. Must be called within
/// a tokio runtime.
pub(crate) async fn spawn(
    command: Command,
    gate: Gate,
    clock: SharedClock,
) -> Result<Tried, Refused> {
    let (reply, answer) = oneshot::channel();
    let request = Request {
        command,
        gate,
        clock,
        runtime: Handle::current(),
        reply,
    };
    let gone = || io::Error::other("the spawner thread is gone");
    if let Err(mpsc::SendError(request)) = spawner().send(request) {
        return Ok(Tried {
            result: Err(gone()),
            started_wall: request.clock.now(),
            started: Instant::now(),
        });
    }
    answer.await.unwrap_or_else(|_| {
        Ok(Tried {
            result: Err(gone()),
            started_wall: chrono::Utc::now(),
            started: Instant::now(),
        })
    })
}

fn spawner() -> &'static mpsc::Sender<Request> {
    static SPAWNER: OnceLock<mpsc::Sender<Request>> = OnceLock::new();
    SPAWNER.get_or_init(|| {
        let (requests, queue) = mpsc::channel::<Request>();
        // A thread that cannot start leaves every send failing: each attempt then fails as a spawn error.
        let _ = std::thread::Builder::new()
            .name(THREAD_NAME.to_owned())
            .spawn(move || {
                for request in queue {
                    serve(request);
                }
            });
        requests
    })
}

fn serve(request: Request) {
    let Request {
        mut command,
        gate,
        clock,
        runtime,
        reply,
    } = request;
    // Dropping an unwanted child (the caller went away) kills it, which needs the runtime too.
    let _entered = runtime.enter();
    let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| {
        gate()?;
        let started_wall = clock.now();
        let started = Instant::now();
        let result = reaper::spawn_tracked(&mut command);
        Ok(Tried {
            result,
            started_wall,
            started,
        })
    }))
    // A panic (a runtime shutting down under the caller) fails this spawn, not the thread.
    .unwrap_or_else(|_| {
        Ok(Tried {
            result: Err(io::Error::other("spawning panicked")),
            started_wall: clock.now(),
            started: Instant::now(),
        })
    });
    let _ = reply.send(outcome);
}
