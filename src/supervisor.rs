//! The run supervisor: a small process, started by `run` before anything else, that spawns every run's
//! process and ends them all when leasecron dies — whatever it dies of.
//!
//! # Why a process of its own
//!
//! A run's processes must never outlive the run, nor the replica: a descendant left running while another
//! replica starts the next run of the same job is two runs at once. While leasecron lives, the runner ends
//! a run's process group and the term sweeps whatever left it ([`crate::reaper`]). But a process cannot
//! clean up after its own SIGKILL: the parent-death signal reaches only a *direct* child, so a job's
//! `sh -c 'sleep 20'` lost its shell and kept its `sleep`, re-parented to init.
//!
//! The supervisor is leasecron's child, and the child subreaper of everything it spawns: a descendant that
//! leaves its group and its parent (`setsid`, a double fork, `nohup … &`) is re-parented to it, never to
//! init. When leasecron dies, the supervisor reads end-of-file on the socket between them (the kernel
//! closes a dead process's descriptors, SIGKILL and the OOM killer included), sends SIGTERM to every
//! descendant, SIGKILL after the largest grace of the runs in flight, and exits. The safety argument
//! (docs/design.md) bounds that grace: the runs are gone before another replica can acquire the lease.
//!
//! Spawning from a small process also makes a spawn's cost independent of leasecron's size: `fork` copies
//! the page tables of the process that forks, and leasecron with 10 000 jobs has many more of them.
//!
//! # What it does not cover
//!
//! - The supervisor itself SIGKILLed (by hand: nothing in leasecron does it). Each run's direct process
//!   dies with it (parent-death signal), and their descendants are re-parented to leasecron, which is a
//!   subreaper too. leasecron notices at once (end-of-file on its side, [`Supervisor::lost`]): it ends the
//!   term, kills every descendant, releases the lease and exits 1, to be restarted clean.
//! - Both killed at once (`kill -9` of the process group, a container killed): descendants that left the
//!   runs' groups are re-parented to init. In a container they die with its PID namespace.
//!
//! # Wire
//!
//! One `SOCK_SEQPACKET` socket pair ([`protocol`]): spawn requests with the run's pipes attached go one
//! way; `Spawned`, `Failed`, `TooLate` and `Exited` come back, read by a thread of their own that hands
//! each to the run waiting for it.

pub mod protocol;
pub mod serve;

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsFd as _, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::process::{CommandExt as _, ExitStatusExt as _};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use nix::fcntl::{fcntl, FcntlArg, FdFlag, OFlag};
use nix::sys::signal::Signal;
use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
use nix::time::{clock_gettime, ClockId};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::sync::oneshot;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::reaper;
use protocol::{Reply, Request, MAX_MESSAGE_BYTES};

/// The hidden subcommand that runs [`serve::serve`].
pub(crate) const SUBCOMMAND: &str = "supervise";

/// How long past a spawn's deadline leasecron waits for the supervisor's answer before it calls the
/// supervisor unresponsive. Past the deadline the supervisor refuses the spawn anyway.
const REPLY_MARGIN: Duration = Duration::from_secs(5);

/// How long [`Supervisor::stop`] waits for the supervisor to exit.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// Errors starting or talking to the supervisor.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The socket pair or a pipe could not be made.
    #[error("cannot set up the run supervisor: {0}")]
    Setup(#[source] nix::Error),
    /// The supervisor process could not be started.
    #[error("cannot start the run supervisor ({program} {SUBCOMMAND}): {source}")]
    Start {
        /// The program.
        program: PathBuf,
        /// Why.
        source: io::Error,
    },
}

/// The format of the supervisor's few log lines: leasecron's own (`--log-format`).
pub use crate::logging::LogFormat;

/// How one run's process ended, as the supervisor reported it.
pub(crate) type ExitReport = io::Result<Ended>;

/// A run's process that ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ended {
    /// Its exit status.
    pub(crate) status: ExitStatus,
    /// How many processes of its group were still alive when it ended (SIGKILLed with the group).
    pub(crate) left_in_group: u32,
}

/// A process the supervisor started.
#[derive(Debug)]
pub(crate) struct Spawned {
    pub(crate) pid: u32,
    /// Read ends of the process's stdout and stderr.
    pub(crate) stdout: OwnedFd,
    pub(crate) stderr: OwnedFd,
    /// Resolves when the supervisor reports the process's end (or is gone).
    pub(crate) exit: oneshot::Receiver<ExitReport>,
}

/// Why a spawn did not happen.
#[derive(Debug)]
pub(crate) enum SpawnError {
    /// The deadline had passed when the supervisor's turn came.
    TooLate,
    /// The operating system refused, or the supervisor could not be reached.
    Io(io::Error),
}

/// What leasecron asks for one process.
#[derive(Debug)]
pub(crate) struct SpawnRequest {
    pub(crate) program: String,
    pub(crate) args: Vec<String>,
    pub(crate) env: Vec<(String, String)>,
    pub(crate) cwd: Option<String>,
    pub(crate) grace: Duration,
    /// Not started after this instant.
    pub(crate) deadline: Instant,
}

/// leasecron's side of the supervisor. Shared as `Arc`.
#[derive(Debug)]
pub struct Supervisor {
    shared: Arc<Shared>,
    /// The socket, registered with tokio for writability: a burst of requests waits for room in the
    /// socket's buffer (a few hundred requests) instead of failing.
    writable: AsyncFd<SocketFd>,
    child: Mutex<Option<std::process::Child>>,
    pid: u32,
    /// Keeps the supervisor's pid out of the reaper's hands and out of the term's sweep.
    _tracked: reaper::TrackedPid,
}

/// The socket's descriptor, for [`AsyncFd`]; the socket itself is owned by [`Shared`].
#[derive(Debug)]
struct SocketFd(Arc<Shared>);

impl AsRawFd for SocketFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.socket.as_raw_fd()
    }
}

#[derive(Debug)]
struct Shared {
    socket: OwnedFd,
    pending: Mutex<Pending>,
    next_id: AtomicU64,
    lost: CancellationToken,
    stopping: AtomicBool,
    pid: u32,
}

#[derive(Debug, Default)]
struct Pending {
    /// Spawn requests awaiting their answer: where the answer goes, and where the exit will.
    spawns: HashMap<u64, (oneshot::Sender<SpawnAnswer>, oneshot::Sender<ExitReport>)>,
    /// Processes running: where their exit goes, and the guard that tracks their pid.
    exits: HashMap<i32, (oneshot::Sender<ExitReport>, reaper::TrackedPid)>,
}

#[derive(Debug)]
enum SpawnAnswer {
    Spawned(i32),
    TooLate,
    Failed(io::Error),
}

/// `CLOCK_MONOTONIC` now, in nanoseconds: the clock tokio's and std's `Instant` read, the same in every
/// process of the machine.
pub(crate) fn monotonic_now_ns() -> u64 {
    clock_gettime(ClockId::CLOCK_MONOTONIC).map_or(0, |now| {
        u64::try_from(now.tv_sec())
            .unwrap_or(0)
            .saturating_mul(1_000_000_000)
            .saturating_add(u64::try_from(now.tv_nsec()).unwrap_or(0))
    })
}

/// `instant` on the `CLOCK_MONOTONIC` nanosecond scale the supervisor reads.
fn ns_at(instant: Instant) -> u64 {
    let ahead = instant.saturating_duration_since(Instant::now());
    monotonic_now_ns().saturating_add(u64::try_from(ahead.as_nanos()).unwrap_or(u64::MAX))
}

// === impl Supervisor ===

impl Supervisor {
    /// Starts `program supervise` (leasecron's own binary: `/proc/self/exe`) and the thread that reads its
    /// reports. Call it before the open file limit is raised: the supervisor, and so every run, keeps the
    /// limits leasecron was started with.
    pub fn start(program: &Path, log: LogFormat) -> Result<Arc<Self>, Error> {
        let (ours, theirs) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .map_err(Error::Setup)?;
        let fd = theirs.as_raw_fd();
        let mut command = std::process::Command::new(program);
        command
            .arg(SUBCOMMAND)
            .arg("--fd")
            .arg(fd.to_string())
            .arg("--log-format")
            .arg(log.name())
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        keep_open_across_exec(&mut command, fd);
        crate::process::give_back_huge_pages(&mut command);
        let child = command.spawn().map_err(|source| Error::Start {
            program: program.to_owned(),
            source,
        })?;
        drop(theirs);
        let pid = child.id();
        let tracked = reaper::TrackedPid::new(i32::try_from(pid).unwrap_or(0));
        let shared = Arc::new(Shared {
            socket: ours,
            pending: Mutex::new(Pending::default()),
            next_id: AtomicU64::new(1),
            lost: CancellationToken::new(),
            stopping: AtomicBool::new(false),
            pid,
        });
        let writable =
            register_writable(SocketFd(Arc::clone(&shared))).map_err(|source| Error::Start {
                program: program.to_owned(),
                source,
            })?;
        let reader = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("leasecron-sup-rx".to_owned())
            .spawn(move || reader.read_replies())
            .map_err(|source| Error::Start {
                program: program.to_owned(),
                source,
            })?;
        Ok(Arc::new(Self {
            shared,
            writable,
            child: Mutex::new(Some(child)),
            pid,
            _tracked: tracked,
        }))
    }

    /// The supervisor's pid.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Cancelled when the supervisor is gone without [`Supervisor::stop`]: runs can no longer be started,
    /// and those in flight lost their direct process.
    pub fn lost(&self) -> CancellationToken {
        self.shared.lost.clone()
    }

    /// Asks the supervisor to start one process. Returns once it runs, or why not.
    pub(crate) async fn spawn(&self, request: SpawnRequest) -> Result<Spawned, SpawnError> {
        let pipe = || nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(io::Error::from);
        let (stdout, stdout_w) = pipe().map_err(SpawnError::Io)?;
        let (stderr, stderr_w) = pipe().map_err(SpawnError::Io)?;
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        let (answer_tx, answer) = oneshot::channel();
        let (exit_tx, exit) = oneshot::channel();
        let now = Instant::now();
        let message = Request::Spawn {
            id,
            program: request.program,
            args: request.args,
            env: request.env,
            cwd: request.cwd,
            not_after_ns: ns_at(request.deadline),
            grace_ms: u64::try_from(request.grace.as_millis()).unwrap_or(u64::MAX),
        };
        {
            let mut pending = self.shared.lock();
            if self.shared.lost.is_cancelled() || self.shared.stopping.load(Ordering::SeqCst) {
                return Err(SpawnError::Io(self.shared.gone_error()));
            }
            pending.spawns.insert(id, (answer_tx, exit_tx));
        }
        let wait = request.deadline.saturating_duration_since(now) + REPLY_MARGIN;
        let exchange = async {
            let fds = [stdout_w.as_fd(), stderr_w.as_fd()];
            self.send(&message, &fds).await.map_err(|error| {
                io::Error::other(format!(
                    "the run supervisor (pid {}) did not take the request: {error}",
                    self.pid
                ))
            })?;
            drop((stdout_w, stderr_w));
            answer.await.map_err(|_| self.shared.gone_error())
        };
        let answer = match tokio::time::timeout(wait, exchange).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(error)) => {
                self.shared.lock().spawns.remove(&id);
                return Err(SpawnError::Io(error));
            }
            Err(_) => {
                // Past the deadline it refuses anyway; a late `Spawned` finds no one and is killed.
                self.shared.lock().spawns.remove(&id);
                return Err(SpawnError::Io(io::Error::other(format!(
                    "the run supervisor (pid {}) did not answer within {wait:?}",
                    self.pid
                ))));
            }
        };
        match answer {
            SpawnAnswer::Spawned(pid) => Ok(Spawned {
                pid: u32::try_from(pid).unwrap_or(0),
                stdout,
                stderr,
                exit,
            }),
            SpawnAnswer::TooLate => Err(SpawnError::TooLate),
            SpawnAnswer::Failed(error) => Err(SpawnError::Io(error)),
        }
    }

    /// Sends `message` with `fds`, waiting for room in the socket's buffer.
    async fn send(&self, message: &Request, fds: &[BorrowedFd<'_>]) -> Result<(), protocol::Error> {
        loop {
            match protocol::send(self.shared.socket.as_fd(), message, fds, true) {
                Err(protocol::Error::Io {
                    source: nix::Error::EAGAIN,
                    ..
                }) => {}
                other => return other,
            }
            match self.writable.writable().await {
                // Readiness is edge-triggered: forget it, and try again (room may be gone already).
                Ok(mut guard) => guard.clear_ready(),
                Err(error) => {
                    return Err(protocol::Error::Io {
                        op: "poll",
                        source: nix::Error::from_raw(error.raw_os_error().unwrap_or(libc_eio())),
                    })
                }
            }
        }
    }

    /// Tells the supervisor that leasecron sent SIGTERM to process `pid`'s group and will SIGKILL it at
    /// `kill_at`: should leasecron die meanwhile, the supervisor kills it then, not a whole grace later.
    pub(crate) fn terminating(&self, pid: u32, kill_at: Instant) {
        let message = Request::Terminating {
            pid: i32::try_from(pid).unwrap_or(i32::MAX),
            kill_at_ns: ns_at(kill_at),
        };
        if let Err(error) = protocol::send(self.shared.socket.as_fd(), &message, &[], true) {
            tracing::debug!(pid, %error, "cannot tell the run supervisor about a termination");
        }
    }

    /// Closes leasecron's end: the supervisor ends whatever is left (nothing, after a clean shutdown) and
    /// exits. Waits for it, at most 5 s.
    pub async fn stop(&self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        let _ = nix::sys::socket::shutdown(
            self.shared.socket.as_raw_fd(),
            nix::sys::socket::Shutdown::Both,
        );
        let child = self
            .child
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(mut child) = child {
            let waited = tokio::task::spawn_blocking(move || child.wait());
            match tokio::time::timeout(STOP_TIMEOUT, waited).await {
                Ok(Ok(Ok(_))) => {}
                Ok(Ok(Err(error))) => {
                    tracing::warn!(pid = self.pid, %error, "waiting for the run supervisor failed")
                }
                Ok(Err(_)) | Err(_) => tracing::warn!(
                    pid = self.pid,
                    "the run supervisor did not exit within {STOP_TIMEOUT:?}"
                ),
            }
        }
    }
}

// === impl Shared ===

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Pending> {
        // Every update is a single insert or remove: the maps stay consistent after a panic elsewhere.
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn gone_error(&self) -> io::Error {
        io::Error::other(format!("the run supervisor (pid {}) is gone", self.pid))
    }

    /// The reader thread: hands each report to whoever waits for it, until the supervisor is gone.
    fn read_replies(&self) {
        let mut buf = vec![0u8; MAX_MESSAGE_BYTES];
        let why = loop {
            match protocol::recv::<Reply>(self.socket.as_fd(), &mut buf) {
                Ok(Some((reply, _))) => self.dispatch(reply),
                Ok(None) => break "it exited".to_owned(),
                Err(error) => break error.to_string(),
            }
        };
        let mut pending = self.lock();
        let stopping = self.stopping.load(Ordering::SeqCst);
        let in_flight = pending.exits.len();
        // Dropping the senders fails every waiter with "gone".
        pending.spawns.clear();
        pending.exits.clear();
        drop(pending);
        if !stopping {
            self.lost.cancel();
            tracing::error!(
                supervisor_pid = self.pid,
                runs_in_flight = in_flight,
                "the run supervisor is gone ({why}): its runs lost their process; ending the term and \
                 shutting down"
            );
        }
    }

    fn dispatch(&self, reply: Reply) {
        let mut pending = self.lock();
        match reply {
            Reply::Spawned { id, pid } => {
                let Some((answer, exit)) = pending.spawns.remove(&id) else {
                    kill_unwanted(pid);
                    return;
                };
                pending
                    .exits
                    .insert(pid, (exit, reaper::TrackedPid::new(pid)));
                if answer.send(SpawnAnswer::Spawned(pid)).is_err() {
                    // The run went away while its process was being started: nothing runs unsupervised.
                    kill_unwanted(pid);
                }
            }
            Reply::Failed { id, errno, message } => {
                if let Some((answer, _)) = pending.spawns.remove(&id) {
                    let error = match errno {
                        Some(errno) => io::Error::from_raw_os_error(errno),
                        None => io::Error::other(message),
                    };
                    let _ = answer.send(SpawnAnswer::Failed(error));
                }
            }
            Reply::TooLate { id } => {
                if let Some((answer, _)) = pending.spawns.remove(&id) {
                    let _ = answer.send(SpawnAnswer::TooLate);
                }
            }
            Reply::Exited {
                pid,
                code,
                signal,
                core,
                left_in_group,
            } => {
                if let Some((exit, _tracked)) = pending.exits.remove(&pid) {
                    let _ = exit.send(Ok(Ended {
                        status: exit_status(code, signal, core),
                        left_in_group,
                    }));
                }
            }
        }
    }
}

/// The `ExitStatus` the supervisor's report describes.
fn exit_status(code: Option<i32>, signal: Option<i32>, core: bool) -> ExitStatus {
    match (code, signal) {
        (Some(code), _) => ExitStatus::from_raw((code & 0xff) << 8),
        (None, Some(signal)) => ExitStatus::from_raw((signal & 0x7f) | if core { 0x80 } else { 0 }),
        // Neither: the supervisor could not read the status; report a SIGKILL, the likeliest end.
        (None, None) => ExitStatus::from_raw(Signal::SIGKILL as i32),
    }
}

/// Registers the socket with tokio's reactor for writability. Must be called within a tokio runtime.
#[allow(unsafe_code)]
fn register_writable(socket: SocketFd) -> io::Result<AsyncFd<SocketFd>> {
    // SAFETY: `SocketFd` holds an `Arc` to the `Shared` that owns the socket's `OwnedFd`, which is never
    // replaced: the descriptor stays open, and `as_raw_fd` returns the same one, for as long as the
    // `AsyncFd` lives.
    unsafe { AsyncFd::register_with_interest(socket, Interest::WRITABLE) }
        .map_err(|error| error.into_parts().1)
}

fn libc_eio() -> i32 {
    nix::Error::EIO as i32
}

fn kill_unwanted(pid: i32) {
    crate::process::signal_group(pid, Signal::SIGKILL);
}

/// Clears `FD_CLOEXEC` on `fd` in the child only, so the supervisor inherits its end of the socket and
/// nothing else does.
#[allow(unsafe_code)]
fn keep_open_across_exec(command: &mut std::process::Command, fd: i32) {
    // SAFETY: the closure runs in the forked child before exec and makes one fcntl(2) call, which is
    // async-signal-safe; it allocates nothing and takes no lock.
    unsafe {
        command.pre_exec(move || {
            let borrowed = std::os::fd::BorrowedFd::borrow_raw(fd);
            fcntl(borrowed, FcntlArg::F_SETFD(FdFlag::empty())).map_err(io::Error::from)?;
            Ok(())
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reported_ends_become_exit_statuses() {
        assert_eq!(exit_status(Some(0), None, false).code(), Some(0));
        assert_eq!(exit_status(Some(3), None, false).code(), Some(3));
        let killed = exit_status(None, Some(9), false);
        assert_eq!((killed.code(), killed.signal()), (None, Some(9)));
        let dumped = exit_status(None, Some(6), true);
        assert_eq!(dumped.signal(), Some(6));
        assert!(dumped.core_dumped());
    }
}
