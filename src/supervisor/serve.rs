//! The supervisor process: `leasecron supervise`, started by `leasecron run`, never by hand.
//!
//! One thread, blocking, no runtime: it waits in `poll(2)` on the socket to leasecron and on a signalfd.
//! It is the child subreaper of everything it starts, so a job's process that daemonises (`setsid`, a
//! double fork, `nohup … &`) is reparented here, not to init, and stays within reach.
//!
//! - A spawn request is served at once: deadline checked, the process started (`process::spawn`, which
//!   does not copy the supervisor as `fork` does), reply.
//! - On SIGCHLD it reaps. A run's process is first seen as a zombie (`waitid(WNOWAIT)`), its process group
//!   stopped (SIGSTOP) while the zombie still pins the group id, then it is reaped; what is left of the
//!   group (its live processes pin the id now) is counted and SIGKILLed, and the end reported with that
//!   count. Other children (orphans reparented here) are reaped silently.
//! - SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2 and SIGALRM are blocked and read from the signalfd:
//!   a terminal's Ctrl-C or hang-up, or a `pkill leasecron`, reaches leasecron, which ends its runs in
//!   order; the supervisor's life is bound to leasecron's, not to signals. (The run's processes get an
//!   empty signal mask and default dispositions: `process::spawn` resets both before `exec`.)
//! - End-of-file on the socket means leasecron is gone, whatever killed it (SIGKILL, the OOM killer, a
//!   panic, a forced exit). Every descendant gets SIGTERM, then SIGKILL after the largest grace of the
//!   runs in flight, pass after pass until none is left; then the supervisor exits.

use std::collections::BTreeSet;
use std::collections::HashMap;
use std::os::fd::{AsFd, OwnedFd};
use std::time::Duration;

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, FdFlag};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, killpg, SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{waitid, waitpid, Id, WaitPidFlag, WaitStatus};
use nix::unistd::{getpid, Pid};
use tracing::Level;

use super::protocol::{self, Reply, Request, MAX_MESSAGE_BYTES};
use super::{monotonic_now_ns, LogFormat};
use crate::process::spawn;
use crate::reaper;

/// The signals read from the signalfd instead of acting.
const HANDLED: [Signal; 8] = [
    Signal::SIGCHLD,
    Signal::SIGTERM,
    Signal::SIGINT,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGALRM,
];

/// Between two looks at what is left while ending everything.
const CLEANUP_PAUSE: Duration = Duration::from_millis(10);
/// How long a log line waits for room on stderr before it is dropped.
const LOG_WAIT_MS: u16 = 100;
/// What a pipe that polls writable takes in one write without blocking (POSIX's minimum; Linux's).
const PIPE_BUF: usize = 4096;
/// SIGKILL passes before giving up on a process that keeps forking.
const KILL_PASSES: usize = 500;
/// The `target` of the supervisor's log lines.
const TARGET: &str = "leasecron::supervisor";

/// Errors that stop the supervisor.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The socket it was given is not one.
    #[error("descriptor {fd} is not leasecron's supervisor socket (`leasecron supervise` is started by `leasecron run`, not by hand): {source}")]
    NotASocket {
        /// The descriptor.
        fd: i32,
        /// Why.
        source: nix::Error,
    },
    /// Setting up signals or the subreaper failed.
    #[error("cannot set up the supervisor ({what}): {source}")]
    Setup {
        /// What.
        what: &'static str,
        /// Why.
        source: nix::Error,
    },
}

/// A run's process, as the supervisor knows it.
#[derive(Debug, Clone, Copy)]
struct Run {
    grace: Duration,
    /// Set once leasecron has sent it SIGTERM: when its grace ends (`CLOCK_MONOTONIC` ns).
    kill_at_ns: Option<u64>,
}

struct Supervisor {
    socket: OwnedFd,
    signals: SignalFd,
    runs: HashMap<i32, Run>,
    log: LogFormat,
}

/// [`serve`] on descriptor `fd`, inherited from `leasecron run`.
pub fn serve_fd(fd: i32, log: LogFormat) -> Result<(), Error> {
    // Inherited without FD_CLOEXEC, on purpose; set it again so that no run inherits it: leasecron must
    // see end-of-file the moment this process is gone, even while runs live on.
    nix::fcntl::fcntl(borrow(fd), FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC))
        .map_err(|source| Error::NotASocket { fd, source })?;
    serve(own(fd), log)
}

#[allow(unsafe_code)]
fn borrow(fd: i32) -> std::os::fd::BorrowedFd<'static> {
    // SAFETY: used only for one fcntl(2) right away, while nothing in this process can close `fd`
    // (single-threaded, first thing in `main`); a number that is no descriptor fails with EBADF.
    unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) }
}

#[allow(unsafe_code)]
fn own(fd: i32) -> OwnedFd {
    // SAFETY: `fd` is open (checked by the caller) and was passed by `leasecron run` for this process to
    // own; nothing else in this process refers to it.
    unsafe { std::os::fd::FromRawFd::from_raw_fd(fd) }
}

/// Serves leasecron on `socket` until it is gone, then ends every descendant.
pub fn serve(socket: OwnedFd, log: LogFormat) -> Result<(), Error> {
    nix::sys::socket::getsockopt(&socket, nix::sys::socket::sockopt::SockType).map_err(
        |source| Error::NotASocket {
            fd: std::os::fd::AsRawFd::as_raw_fd(&socket),
            source,
        },
    )?;
    let mut mask = SigSet::empty();
    for signal in HANDLED {
        mask.add(signal);
    }
    mask.thread_block().map_err(|source| Error::Setup {
        what: "blocking signals",
        source,
    })?;
    let signals = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
        .map_err(|source| Error::Setup {
            what: "signalfd",
            source,
        })?;
    reaper::become_subreaper().map_err(|source| Error::Setup {
        what: "PR_SET_CHILD_SUBREAPER",
        source,
    })?;
    let _ = nix::sys::prctl::set_name(c"leasecron-sup");
    let mut supervisor = Supervisor {
        socket,
        signals,
        runs: HashMap::new(),
        log,
    };
    supervisor.serve_until_eof();
    supervisor.end_everything();
    Ok(())
}

// === impl Supervisor ===

impl Supervisor {
    fn serve_until_eof(&mut self) {
        let mut buf = vec![0u8; MAX_MESSAGE_BYTES];
        loop {
            let (socket_ready, signal_ready) = {
                let mut fds = [
                    PollFd::new(self.socket.as_fd(), PollFlags::POLLIN),
                    PollFd::new(self.signals.as_fd(), PollFlags::POLLIN),
                ];
                match poll(&mut fds, PollTimeout::NONE) {
                    Ok(_) => {}
                    Err(Errno::EINTR) => continue,
                    Err(error) => {
                        self.log(
                            Level::ERROR,
                            &format!("poll failed: {error}; ending every run"),
                        );
                        return;
                    }
                }
                let ready = |fd: &PollFd<'_>| fd.revents().is_some_and(|r| !r.is_empty());
                (ready(&fds[0]), ready(&fds[1]))
            };
            if signal_ready {
                self.drain_signals();
            }
            if socket_ready {
                match protocol::recv::<Request>(self.socket.as_fd(), &mut buf) {
                    Ok(Some((request, fds))) => self.handle(request, fds),
                    Ok(None) => return,
                    Err(error) => {
                        self.log(Level::ERROR, &format!("{error}; ending every run"));
                        return;
                    }
                }
            }
        }
    }

    fn drain_signals(&mut self) {
        let mut reap = false;
        while let Ok(Some(info)) = self.signals.read_signal() {
            reap |= info.ssi_signo == Signal::SIGCHLD as u32;
        }
        if reap {
            self.reap();
        }
    }

    fn handle(&mut self, request: Request, fds: Vec<OwnedFd>) {
        let (id, program, args, env, cwd, not_after_ns, grace_ms) = match request {
            Request::Spawn {
                id,
                program,
                args,
                env,
                cwd,
                not_after_ns,
                grace_ms,
            } => (id, program, args, env, cwd, not_after_ns, grace_ms),
            Request::Terminating { pid, kill_at_ns } => {
                if let Some(run) = self.runs.get_mut(&pid) {
                    run.kill_at_ns = Some(kill_at_ns);
                }
                return;
            }
        };
        let reply = if monotonic_now_ns() >= not_after_ns {
            Reply::TooLate { id }
        } else if fds.len() != 2 {
            Reply::Failed {
                id,
                errno: None,
                message: format!("the request carried {} descriptors, 2 expected", fds.len()),
            }
        } else {
            let spec = spawn::Spec {
                program: &program,
                args: &args,
                env: &env,
                cwd: cwd.as_deref(),
                stdout: fds[0].as_fd(),
                stderr: fds[1].as_fd(),
            };
            match spawn::spawn(&spec) {
                Ok(pid) => {
                    let pid = pid.as_raw();
                    self.runs.insert(
                        pid,
                        Run {
                            grace: Duration::from_millis(grace_ms),
                            kill_at_ns: None,
                        },
                    );
                    Reply::Spawned { id, pid }
                }
                Err(error) => Reply::Failed {
                    id,
                    errno: error.raw_os_error(),
                    message: error.to_string(),
                },
            }
        };
        self.send(&reply);
    }

    /// Reaps every child that has exited; reports the runs among them.
    fn reap(&mut self) {
        loop {
            let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
            let status = match waitid(Id::All, flags) {
                Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return,
                Ok(status) => status,
                Err(Errno::EINTR) => continue,
                Err(error) => {
                    self.log(Level::WARN, &format!("waitid failed: {error}"));
                    return;
                }
            };
            let Some(pid) = status.pid() else { return };
            let run = self.runs.remove(&pid.as_raw());
            if run.is_some() {
                // The zombie still holds the group id: the group cannot have been recycled yet. What is
                // left of it stops here (nothing forks or leaves it from now on), and is counted and
                // SIGKILLed once the leader is reaped.
                match killpg(pid, Signal::SIGSTOP) {
                    Ok(()) | Err(Errno::ESRCH) => {}
                    Err(error) => self.log(
                        Level::WARN,
                        &format!("SIGSTOP to process group {pid} failed: {error}"),
                    ),
                }
            }
            let reaped = waitpid(pid, Some(WaitPidFlag::WNOHANG));
            if run.is_some() {
                // Without the leader, only the processes left in the group hold its id: the group is
                // gone (no scan of /proc), or they pin it until they are SIGKILLed.
                let left_in_group = match reaper::end_leftover_group(pid.as_raw()) {
                    Ok(left) => u32::try_from(left).unwrap_or(u32::MAX),
                    Err(error) => {
                        self.log(
                            Level::WARN,
                            &format!("ending what process {pid} left in its group: {error}"),
                        );
                        0
                    }
                };
                let (code, signal, core) = match reaped {
                    Ok(WaitStatus::Exited(_, code)) => (Some(code), None, false),
                    Ok(WaitStatus::Signaled(_, signal, core)) => (None, Some(signal as i32), core),
                    _ => (None, None, false),
                };
                self.send(&Reply::Exited {
                    pid: pid.as_raw(),
                    code,
                    signal,
                    core,
                    left_in_group,
                });
            }
        }
    }

    fn send(&self, reply: &Reply) {
        // Blocking: a frozen leasecron only delays us. A gone one (EPIPE) is noticed at the next poll.
        if let Err(error) = protocol::send(self.socket.as_fd(), reply, &[], false) {
            self.log(Level::WARN, &format!("cannot report to leasecron: {error}"));
        }
    }

    /// leasecron is gone: SIGTERM every descendant; SIGKILL each run's group when its grace ends (counted
    /// from now, or from leasecron's own SIGTERM if it had sent one), and every descendant once the last
    /// grace has ended; until nothing is left.
    fn end_everything(&mut self) {
        let me = getpid().as_raw();
        let now_ns = monotonic_now_ns();
        let mut deadlines: Vec<(i32, u64)> = self
            .runs
            .iter()
            .map(|(&pid, run)| {
                let grace = u64::try_from(run.grace.as_nanos()).unwrap_or(u64::MAX);
                (pid, run.kill_at_ns.unwrap_or(now_ns.saturating_add(grace)))
            })
            .collect();
        let last_ns = deadlines.iter().map(|&(_, at)| at).max().unwrap_or(now_ns);
        let grace = Duration::from_nanos(last_ns.saturating_sub(now_ns));
        let terminated = self.signal_all(me, Signal::SIGTERM).len();
        loop {
            let now = monotonic_now_ns();
            deadlines.retain(|&(pid, at)| {
                if at > now {
                    return true;
                }
                match killpg(Pid::from_raw(pid), Signal::SIGKILL) {
                    Ok(()) | Err(Errno::ESRCH) => {}
                    Err(error) => self.log(
                        Level::WARN,
                        &format!("SIGKILL to process group {pid} failed: {error}"),
                    ),
                }
                false
            });
            if now >= last_ns || self.alive(me) == 0 {
                break;
            }
            std::thread::sleep(CLEANUP_PAUSE);
        }
        let mut killed = BTreeSet::new();
        for _ in 0..KILL_PASSES {
            if self.alive(me) == 0 {
                break;
            }
            killed.extend(self.signal_all(me, Signal::SIGKILL));
            std::thread::sleep(CLEANUP_PAUSE);
        }
        let killed = killed.len();
        let left = self.alive(me);
        if terminated + killed + left > 0 {
            let level = if left > 0 { Level::ERROR } else { Level::WARN };
            self.log(
                level,
                &format!(
                    "leasecron is gone: ended the processes of its runs (SIGTERM to {terminated}, SIGKILL to \
                     {killed} after at most {grace:?}; {left} still alive)"
                ),
            );
        }
    }

    /// Signals every live descendant; returns their pids.
    fn signal_all(&mut self, me: i32, signal: Signal) -> Vec<i32> {
        let stats = reaper::scan_proc().unwrap_or_default();
        let targets = reaper::descendants(&stats, me);
        for process in &targets {
            match kill(Pid::from_raw(process.pid), signal) {
                Ok(()) | Err(Errno::ESRCH) => {}
                Err(error) => self.log(
                    Level::WARN,
                    &format!("{signal} to {} failed: {error}", process.pid),
                ),
            }
        }
        targets.iter().map(|process| process.pid).collect()
    }

    /// Reaps what exited and counts the live descendants.
    fn alive(&mut self, me: i32) -> usize {
        loop {
            match waitpid(None::<Pid>, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                Ok(_) => {}
            }
        }
        let stats = reaper::scan_proc().unwrap_or_default();
        reaper::descendants(&stats, me).len()
    }

    fn log(&self, level: Level, message: &str) {
        let pid = u64::from(std::process::id());
        let line = self
            .log
            .line(level, TARGET, message, &[("supervisor_pid", pid)]);
        // Never blocks: a stopped reader must not stop the reaping or the clean-up. A pipe that polls
        // writable has room for PIPE_BUF bytes, so a line that fits is written whole; otherwise, or if
        // stderr is closed, the line is dropped.
        let stderr = std::io::stderr();
        let mut fds = [PollFd::new(stderr.as_fd(), PollFlags::POLLOUT)];
        let writable = matches!(poll(&mut fds, PollTimeout::from(LOG_WAIT_MS)), Ok(n) if n > 0)
            && fds[0]
                .revents()
                .is_some_and(|r| r.contains(PollFlags::POLLOUT));
        if writable && line.len() <= PIPE_BUF {
            let _ = nix::unistd::write(stderr.as_fd(), line.as_bytes());
        }
    }
}
