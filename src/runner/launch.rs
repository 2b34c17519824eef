//! Where an attempt's process is started: by the run supervisor (`leasecron run`), or from this process on
//! the spawner thread (a runner embedded without one, as in the library's tests). Either way the attempt
//! gets a [`Process`]: a pid that leads its own group, its two output pipes, and its exit status.

use std::io;
use std::process::ExitStatus;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::io::AsyncRead;
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::command::ProcessSpec;
use super::spawner::{self, explain, Gate, Refused};
use crate::clock::SharedClock;
use crate::reaper::TrackedChild;
use crate::supervisor::{Ended, ExitReport, SpawnError, SpawnRequest, Supervisor};

/// How a runner starts processes.
#[derive(Debug, Clone, Default)]
pub enum Launcher {
    /// Fork from this process, on the spawner thread. A process that leaves its run's group survives
    /// this process's SIGKILL: only for embedding and tests; `leasecron run` uses the supervisor.
    #[default]
    InProcess,
    /// Ask the run supervisor, which ends every run's process if this process dies.
    Supervised(Arc<Supervisor>),
}

/// A pipe of the process, to read its output from.
pub(crate) type Output = Box<dyn AsyncRead + Unpin + Send>;

/// A started process.
pub(crate) struct Process {
    pub(crate) pid: u32,
    pub(crate) stdout: Option<Output>,
    pub(crate) stderr: Option<Output>,
    exit: Exit,
}

enum Exit {
    Local(TrackedChild),
    Remote {
        supervisor: Arc<Supervisor>,
        report: oneshot::Receiver<ExitReport>,
        /// The report once received: `wait` may be called again after it completed.
        got: Option<Result<Ended, String>>,
        pid: u32,
    },
}

/// A launch that was tried.
pub(crate) struct Tried {
    /// The process, or why the operating system refused it.
    pub(crate) result: io::Result<Process>,
    /// Wall clock right before the spawn.
    pub(crate) started_wall: DateTime<Utc>,
    /// Monotonic instant of the same moment.
    pub(crate) started: Instant,
}

/// Starts `spec` if `gate` holds when its turn comes (and, supervised, before `deadline`); `grace` is what
/// the supervisor allows the process between SIGTERM and SIGKILL if this process dies.
pub(crate) async fn launch(
    launcher: &Launcher,
    spec: &ProcessSpec,
    gate: Gate,
    deadline: Instant,
    grace: Duration,
    clock: SharedClock,
) -> Result<Tried, Refused> {
    match launcher {
        Launcher::InProcess => {
            let tried = spawner::spawn(spec.command(), gate, clock).await?;
            Ok(Tried {
                result: tried.result.map(Process::local),
                started_wall: tried.started_wall,
                started: tried.started,
            })
        }
        Launcher::Supervised(supervisor) => {
            // No await between the gate and the request: the supervisor checks the deadline at its fork.
            gate()?;
            let started_wall = clock.now();
            let started = Instant::now();
            let request = SpawnRequest {
                program: spec.program.clone(),
                args: spec.args.clone(),
                env: spec.env.clone(),
                cwd: spec.cwd.clone(),
                grace,
                deadline,
            };
            let result = match supervisor.spawn(request).await {
                Ok(spawned) => Process::remote(Arc::clone(supervisor), spawned),
                Err(SpawnError::TooLate) => return Err(Refused::NotLive),
                Err(SpawnError::Io(error)) => Err(explain(error)),
            };
            Ok(Tried {
                result,
                started_wall,
                started,
            })
        }
    }
}

// === impl Process ===

impl Process {
    fn local(mut tracked: TrackedChild) -> Self {
        let stdout = tracked
            .child
            .stdout
            .take()
            .map(|pipe| Box::new(pipe) as Output);
        let stderr = tracked
            .child
            .stderr
            .take()
            .map(|pipe| Box::new(pipe) as Output);
        Self {
            // Only a child already reaped has no id, and nothing has waited for it yet.
            pid: tracked.child.id().unwrap_or(0),
            stdout,
            stderr,
            exit: Exit::Local(tracked),
        }
    }

    fn remote(
        supervisor: Arc<Supervisor>,
        spawned: crate::supervisor::Spawned,
    ) -> io::Result<Self> {
        let receiver = |fd| {
            tokio::net::unix::pipe::Receiver::from_owned_fd(fd).map(|pipe| Box::new(pipe) as Output)
        };
        Ok(Self {
            pid: spawned.pid,
            stdout: Some(receiver(spawned.stdout)?),
            stderr: Some(receiver(spawned.stderr)?),
            exit: Exit::Remote {
                supervisor,
                report: spawned.exit,
                got: None,
                pid: spawned.pid,
            },
        })
    }

    /// Says that its group was just sent SIGTERM and gets SIGKILL after `grace`: the supervisor keeps
    /// that deadline if this process dies in between.
    pub(crate) fn terminating(&self, grace: Duration) {
        if let Exit::Remote { supervisor, .. } = &self.exit {
            supervisor.terminating(self.pid, Instant::now() + grace);
        }
    }

    /// Waits for the process to end. Cancel-safe, and may be called again once it returned.
    pub(crate) async fn wait(&mut self) -> io::Result<ExitStatus> {
        match &mut self.exit {
            Exit::Local(tracked) => tracked.child.wait().await,
            Exit::Remote {
                report, got, pid, ..
            } => {
                let result = match got {
                    Some(result) => result.clone(),
                    None => {
                        let result = match report.await {
                            Ok(Ok(ended)) => Ok(ended),
                            Ok(Err(error)) => Err(error.to_string()),
                            Err(_) => Err(format!(
                                "the run supervisor is gone: the end of process {pid} is unknown"
                            )),
                        };
                        got.insert(result).clone()
                    }
                };
                result.map(|ended| ended.status).map_err(io::Error::other)
            }
        }
    }

    /// Once [`Process::wait`] returned: how many processes of its group the supervisor found alive and
    /// SIGKILLed when it ended; `None` if this process must end its group itself (launched in-process, or
    /// the supervisor did not report).
    pub(crate) fn left_in_group(&self) -> Option<u32> {
        match &self.exit {
            Exit::Remote {
                got: Some(Ok(ended)),
                ..
            } => Some(ended.left_in_group),
            _ => None,
        }
    }
}
