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
//! (docs/design.md §2, rule 5).
//!
//! One thread for the whole process, started on first use and never ended: the kernel sends a child's
//! parent-death signal when the *thread* that forked it exits (see `command`).
//!
//! # Open files
//!
//! Each run in flight holds about three descriptors (its stdout and stderr pipes, the pidfd or signal
//! plumbing of its child), so the usual soft `RLIMIT_NOFILE` of 1 024 allowed only about 330 runs at once.
//! [`raise_open_file_limit`] raises the soft limit to the hard one when `run` starts, and every child gets
//! the limits back as they were ([`child_open_file_limit`]), as systemd does: a job sees the limits its
//! container gives, not ours. A spawn refused for lack of descriptors (EMFILE, ENFILE) fails its run with a
//! message saying so and naming the limit.

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
/// About how many descriptors a run in flight holds, for the message of a spawn refused for lack of them.
const DESCRIPTORS_PER_RUN: u64 = 3;

/// The open file limits (soft, hard) as they were before [`raise_open_file_limit`], which children get back.
static CHILD_OPEN_FILE_LIMIT: OnceLock<(u64, u64)> = OnceLock::new();

/// What [`raise_open_file_limit`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenFileLimit {
    /// The soft limit before.
    pub before: u64,
    /// The soft limit now.
    pub after: u64,
    /// The hard limit.
    pub hard: u64,
}

/// Raises this process's soft `RLIMIT_NOFILE` to its hard limit (never lowers it), and remembers the
/// limits as they were for the runs' processes. Call it once, before the first run.
pub fn raise_open_file_limit() -> Result<OpenFileLimit, nix::Error> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    let _ = CHILD_OPEN_FILE_LIMIT.set((soft, hard));
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
    }
    let (after, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    Ok(OpenFileLimit {
        before: soft,
        after,
        hard,
    })
}

/// The open file limits (soft, hard) a run's process gets: as they were before [`raise_open_file_limit`]
/// (`None` if it was not called).
pub(crate) fn child_open_file_limit() -> Option<(u64, u64)> {
    CHILD_OPEN_FILE_LIMIT.get().copied()
}

/// `error`, explained if the process ran out of descriptors.
pub(crate) fn explain(error: io::Error) -> io::Error {
    let why = match error.raw_os_error().map(nix::errno::Errno::from_raw) {
        Some(nix::errno::Errno::EMFILE) => {
            let soft = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
                .map_or_else(|_| "unknown".to_owned(), |(soft, _)| soft.to_string());
            format!(
                "leasecron has no file descriptor left (its open file limit, RLIMIT_NOFILE, is {soft}; each \
                 run in flight holds about {DESCRIPTORS_PER_RUN}): raise the container's nofile limit or \
                 spread the runs over time"
            )
        }
        Some(nix::errno::Errno::ENFILE) => {
            "the system's file table is full (fs.file-max): too many open files on this node"
                .to_owned()
        }
        _ => return error,
    };
    io::Error::new(error.kind(), format!("{error}: {why}"))
}

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
        let result = reaper::spawn_tracked(&mut command).map_err(explain);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn running_out_of_descriptors_is_explained_and_other_errors_are_kept() {
        let emfile = explain(io::Error::from_raw_os_error(
            nix::errno::Errno::EMFILE as i32,
        ));
        let text = emfile.to_string();
        assert!(text.starts_with("Too many open files"), "{text}");
        assert!(
            text.contains(
                "leasecron has no file descriptor left (its open file limit, RLIMIT_NOFILE, is "
            ),
            "{text}"
        );
        let enfile = explain(io::Error::from_raw_os_error(
            nix::errno::Errno::ENFILE as i32,
        ));
        assert!(
            enfile
                .to_string()
                .contains("the system's file table is full"),
            "{enfile}"
        );
        let other = explain(io::Error::from_raw_os_error(
            nix::errno::Errno::ENOENT as i32,
        ));
        assert_eq!(
            other.to_string(),
            io::Error::from_raw_os_error(nix::errno::Errno::ENOENT as i32).to_string()
        );
    }
}
