//! One attempt: spawn, stream output, wait, escalate on timeout or cancellation, clean up the group.
//!
//! Escalation is SIGTERM to the whole process group, then SIGKILL to the group after the job's
//! `terminationGrace`, then reaping the leader. After the leader has exited, for whatever reason, the rest
//! of its group is SIGKILLed: a job's background processes must not outlive its run (they would run
//! unsupervised, possibly on a replica that is no longer the leader).

use std::io;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use nix::sys::signal::Signal;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::command::{self, RunEnv};
use super::group::ProcessGroups;
use super::launch::{self, Launcher, Process};
use super::output::{OutputContext, Pumps};
use super::spawner::{Gate, Refused};
use crate::clock::SharedClock;
use crate::config::Job;
use crate::event::{Failure, Outcome};
use crate::process::signal_group;
use crate::reaper;

/// How long the pipes may stay open after the process group is gone. Only a process that left the group
/// (e.g. `setsid`) can hold them that long; the runner stops reading rather than hang the run.
pub const OUTPUT_DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

/// What the attempt needs besides the job.
#[derive(Debug)]
pub(crate) struct AttemptSpec<'a> {
    pub(crate) job: &'a Job,
    pub(crate) env: RunEnv<'a>,
    /// The run's id, logged as `run_id`.
    pub(crate) run_id: u64,
    pub(crate) cancel: &'a CancellationToken,
    pub(crate) groups: &'a ProcessGroups,
    pub(crate) clock: &'a SharedClock,
    pub(crate) launcher: &'a Launcher,
    /// The term's deadline: no process is started after it.
    pub(crate) deadline: Instant,
}

/// The result of one attempt.
#[derive(Debug)]
pub(crate) struct Attempt {
    pub(crate) outcome: Outcome,
    /// Wall clock when the attempt was spawned (or failed to be).
    pub(crate) started_wall: DateTime<Utc>,
    /// Monotonic instant of the same moment.
    pub(crate) started: Instant,
    /// Processes the attempt left behind, SIGKILLed at its end: alive in its group when its process
    /// exited by itself, or outside the group carrying its `LEASECRON_*` variables.
    pub(crate) leftovers: u32,
}

/// Why supervision stopped waiting.
enum Ending {
    Exited(io::Result<ExitStatus>),
    TimedOut,
    Cancelled,
}

/// Runs one attempt to its end; `on_spawn` is called with the pid once the process exists. The spawn may
/// wait in line behind others: `gate` is checked right before it, and `Err` says it refused (nothing was
/// started).
pub(crate) async fn run(
    spec: AttemptSpec<'_>,
    gate: Gate,
    on_spawn: impl FnOnce(u32),
) -> Result<Attempt, Refused> {
    let (run_id, fencing_token) = (spec.run_id, spec.env.fencing_token.0);
    let attempt = spec.env.attempt;
    let spawn_failed = |error: super::Error, started_wall, started| {
        tracing::warn!(job = %spec.job.name, run_id, fencing_token, attempt, %error, "spawn failed");
        Attempt {
            outcome: Outcome::Failed(Failure::Spawn(error.to_string())),
            started_wall,
            started,
            leftovers: 0,
        }
    };
    let process = match command::build(spec.job, &spec.env) {
        Ok(process) => process,
        Err(error) => return Ok(spawn_failed(error, spec.clock.now(), Instant::now())),
    };
    let tried = launch::launch(
        spec.launcher,
        &process,
        gate,
        spec.deadline,
        spec.job.termination_grace,
        Arc::clone(spec.clock),
    )
    .await?;
    let (outcome, leftovers) = match tried.result {
        Ok(started) => supervise(&spec, started, on_spawn).await,
        Err(source) => {
            let dir_problem = process
                .cwd
                .as_deref()
                .and_then(|dir| Some((dir, working_dir_problem(dir, &source)?)));
            let error = match dir_problem {
                Some((dir, problem)) => super::Error::WorkingDir {
                    job: spec.job.name.clone(),
                    program: process.program,
                    dir: dir.to_owned(),
                    problem,
                },
                None => super::Error::Spawn {
                    job: spec.job.name.clone(),
                    program: process.program,
                    source,
                },
            };
            return Ok(spawn_failed(error, tried.started_wall, tried.started));
        }
    };
    Ok(Attempt {
        outcome,
        started_wall: tried.started_wall,
        started: tried.started,
        leftovers,
    })
}

/// Supervises the attempt's process to its end; returns its outcome and how many processes it left behind.
async fn supervise(
    spec: &AttemptSpec<'_>,
    mut process: Process,
    on_spawn: impl FnOnce(u32),
) -> (Outcome, u32) {
    let pid = process.pid;
    if pid == 0 {
        // Only a child already reaped has no id, and nothing has waited for it yet.
        return (
            Outcome::Failed(Failure::Lost("the process has no pid".into())),
            0,
        );
    }
    let child = &mut process;
    let pgid = i32::try_from(pid).unwrap_or(0);
    let job = &spec.job.name;
    let attempt = spec.env.attempt;
    let (run_id, fencing_token) = (spec.run_id, spec.env.fencing_token.0);
    let admitted = spec.groups.admit(pgid);
    on_spawn(pid);
    tracing::info!(job = %job, run_id, fencing_token, attempt, pid, "started");
    let ctx = OutputContext {
        job: job.clone(),
        run_id,
        fencing_token,
        attempt,
        pid,
    };
    let pumps = Pumps::start(child.stdout.take(), child.stderr.take(), ctx);

    let ending = if admitted {
        wait_or_escalate(spec, child, pgid).await
    } else {
        Ending::Exited(child.wait().await)
    };
    // A group the runner signalled (timeout, cancellation, a forced shutdown) died with its process:
    // nothing in it was left behind.
    let signalled = !matches!(ending, Ending::Exited(_)) || !admitted || spec.groups.is_killed();
    let left_in_group = end_group(spec, process.left_in_group(), pgid, signalled).await;
    spec.groups.release(pgid);
    let strays = end_strays(spec, pgid).await;
    if !pumps.drain(OUTPUT_DRAIN_TIMEOUT).await {
        tracing::warn!(job = %job, run_id, attempt, pid, "output pipes still open after the process group ended; stopped reading");
    }
    drop(process);
    let outcome = classify(
        ending,
        spec.cancel.is_cancelled() || spec.groups.is_killed(),
    );
    (outcome, left_in_group.saturating_add(strays))
}

/// SIGKILLs what the attempt's process left in its group once it has ended, and returns how many processes
/// were still alive there (0 if `signalled`: the group was ended with the process). The run supervisor has
/// done it and `reported` the count already; a process launched in-process is counted here.
async fn end_group(
    spec: &AttemptSpec<'_>,
    reported: Option<u32>,
    pgid: i32,
    signalled: bool,
) -> u32 {
    let left = match reported {
        _ if signalled => {
            signal_group(pgid, Signal::SIGKILL);
            0
        }
        Some(left) => {
            // The supervisor has SIGKILLed the group already; this finds it gone.
            signal_group(pgid, Signal::SIGKILL);
            left
        }
        // Counting needs a scan of /proc, if anything is left: off the runtime's workers.
        None => match tokio::task::spawn_blocking(move || reaper::end_leftover_group(pgid)).await {
            Ok(Ok(left)) => u32::try_from(left).unwrap_or(u32::MAX),
            Ok(Err(error)) => {
                tracing::warn!(job = %spec.job.name, run_id = spec.run_id, pgid, %error, "cannot end what the run left in its process group");
                0
            }
            Err(_) => {
                signal_group(pgid, Signal::SIGKILL);
                0
            }
        },
    };
    if left > 0 {
        tracing::warn!(
            job = %spec.job.name,
            run_id = spec.run_id,
            attempt = spec.env.attempt,
            pgid,
            processes = left,
            "the run's process exited and left processes in its group; killed them with the run"
        );
    }
    left
}

async fn wait_or_escalate(spec: &AttemptSpec<'_>, child: &mut Process, pgid: i32) -> Ending {
    let ending = tokio::select! {
        status = child.wait() => return Ending::Exited(status),
        () = sleep_opt(spec.job.timeout) => Ending::TimedOut,
        () = spec.cancel.cancelled() => Ending::Cancelled,
    };
    let why = match ending {
        Ending::TimedOut => "timed out",
        _ => "cancelled",
    };
    let grace = spec.job.termination_grace;
    tracing::info!(job = %spec.job.name, run_id = spec.run_id, attempt = spec.env.attempt, pgid, grace_seconds = grace.as_secs_f64(), "{why}: sending SIGTERM to the process group");
    signal_group(pgid, Signal::SIGTERM);
    child.terminating(grace);
    if tokio::time::timeout(grace, child.wait()).await.is_err() {
        tracing::warn!(job = %spec.job.name, run_id = spec.run_id, attempt = spec.env.attempt, pgid, "still running after the grace: sending SIGKILL");
        signal_group(pgid, Signal::SIGKILL);
        if let Err(error) = child.wait().await {
            tracing::warn!(job = %spec.job.name, pgid, %error, "waiting for the killed process failed");
        }
    }
    ending
}

/// Kills what the attempt left behind outside its group, recognised by its `LEASECRON_*` variables: no
/// process of a run outlives it. What is still in the attempt's group `pgid` was SIGKILLed with it, and is
/// dying. Returns how many it killed.
async fn end_strays(spec: &AttemptSpec<'_>, pgid: i32) -> u32 {
    let marks: Vec<String> = command::leasecron_env(&spec.job.name, &spec.env)
        .iter()
        .map(|(name, value)| format!("{name}={value}"))
        .collect();
    // /proc is read synchronously: off the runtime's workers.
    let killed = tokio::task::spawn_blocking(move || reaper::kill_marked(&marks, pgid))
        .await
        .unwrap_or_default();
    if !killed.is_empty() {
        tracing::warn!(
            job = %spec.job.name,
            run_id = spec.run_id,
            attempt = spec.env.attempt,
            pids = killed.iter().map(ToString::to_string).collect::<Vec<_>>().join(","),
            "the run left processes behind outside its process group; killed them with the run"
        );
    }
    u32::try_from(killed.len()).unwrap_or(u32::MAX)
}

async fn sleep_opt(timeout: Option<Duration>) {
    match timeout {
        Some(timeout) => tokio::time::sleep(timeout).await,
        None => std::future::pending().await,
    }
}

/// Maps how supervision ended to the attempt's outcome. A death by signal after the run was cancelled
/// (e.g. [`super::Runner::kill_all`]'s SIGKILL racing the escalation) counts as cancelled.
fn classify(ending: Ending, cancelled: bool) -> Outcome {
    match ending {
        Ending::TimedOut => Outcome::TimedOut,
        Ending::Cancelled => Outcome::Cancelled,
        Ending::Exited(Err(error)) => Outcome::Failed(Failure::Lost(error.to_string())),
        Ending::Exited(Ok(status)) => match (status.code(), status.signal()) {
            (Some(0), _) => Outcome::Succeeded,
            (_, Some(_)) if cancelled => Outcome::Cancelled,
            (Some(code), _) => Outcome::Failed(Failure::ExitCode(code)),
            (None, Some(signal)) => Outcome::Failed(Failure::Signal(signal)),
            (None, None) => Outcome::Failed(Failure::Lost(status.to_string())),
        },
    }
}

/// What is wrong with `dir`, the working directory of a process whose start failed with `error`, if the
/// failure may be the directory's: the kernel says "no such file" whether the program or the directory is
/// missing, and the message must name the right one.
fn working_dir_problem(dir: &str, error: &io::Error) -> Option<String> {
    use nix::errno::Errno;
    if !matches!(
        error.raw_os_error().map(Errno::from_raw),
        Some(Errno::ENOENT | Errno::ENOTDIR | Errno::EACCES)
    ) {
        return None;
    }
    match std::fs::metadata(dir) {
        Ok(meta) if !meta.is_dir() => Some("is not a directory".to_owned()),
        Ok(_) => nix::unistd::access(dir, nix::unistd::AccessFlags::X_OK)
            .err()
            .map(|errno| format!("cannot be entered: {}", errno.desc())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Some("does not exist".to_owned()),
        Err(e) if e.raw_os_error() == Some(Errno::ENOTDIR as i32) => {
            Some("does not exist (a part of its path is not a directory)".to_owned())
        }
        Err(e) => Some(format!("cannot be used: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exited(raw: i32) -> Ending {
        Ending::Exited(Ok(ExitStatus::from_raw(raw)))
    }

    #[test]
    fn exit_statuses_map_to_outcomes() {
        assert_eq!(classify(exited(0), false), Outcome::Succeeded);
        assert_eq!(
            classify(exited(3 << 8), false),
            Outcome::Failed(Failure::ExitCode(3))
        );
        assert_eq!(
            classify(exited(9), false),
            Outcome::Failed(Failure::Signal(9))
        );
    }

    #[test]
    fn a_signal_death_after_cancellation_is_a_cancellation() {
        assert_eq!(classify(exited(9), true), Outcome::Cancelled);
        assert_eq!(classify(exited(0), true), Outcome::Succeeded);
    }

    #[test]
    fn escalations_keep_their_reason() {
        assert_eq!(classify(Ending::TimedOut, true), Outcome::TimedOut);
        assert_eq!(classify(Ending::Cancelled, false), Outcome::Cancelled);
    }
}
