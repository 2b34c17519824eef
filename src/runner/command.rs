//! Building the process of one attempt ([`ProcessSpec`]: program, environment, working directory) and the
//! [`Command`] that starts it (process group, pipes, the parent-death signal).
//!
//! **Spawn only from a thread that lives as long as the process: the spawner's (`spawner`), never from
//! `spawn_blocking`.** The kernel sends the parent-death signal when the *thread* that forked the child
//! exits, not the process; blocking-pool threads are retired after a short idle time and would take their
//! children with them.

use std::io;
use std::process::Stdio;

use chrono::{DateTime, SecondsFormat, Utc};
use nix::errno::Errno;
use nix::sys::prctl;
use nix::sys::resource::{setrlimit, Resource};
use nix::sys::signal::{sigprocmask, SigSet, SigmaskHow, Signal};
use nix::unistd::{getppid, Pid};
use tokio::process::Command;

use crate::config::{Job, Program};
use crate::term::FencingToken;

use super::Error;

/// The shell that runs `shell:` scripts.
const SHELL: &str = "/bin/sh";

/// What makes one attempt's environment differ from another's.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RunEnv<'a> {
    pub(crate) scheduled: DateTime<Utc>,
    pub(crate) identity: &'a str,
    pub(crate) fencing_token: FencingToken,
    pub(crate) attempt: u32,
}

/// What to execute for one attempt: program, arguments, the variables added to the replica's environment
/// (the job's `env`, then the `LEASECRON_*` variables) and the working directory. The same for both ways
/// of starting it: [`ProcessSpec::command`] here, or the run supervisor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ProcessSpec {
    pub(crate) program: String,
    pub(crate) args: Vec<String>,
    pub(crate) env: Vec<(String, String)>,
    pub(crate) cwd: Option<String>,
}

/// The process of one attempt of `job`.
pub(crate) fn build(job: &Job, run: &RunEnv<'_>) -> Result<ProcessSpec, Error> {
    let (program, args) = match &job.program {
        Program::Shell(script) => (SHELL.to_owned(), vec!["-c".to_owned(), script.clone()]),
        Program::Command(argv) => {
            let (program, args) = argv.split_first().ok_or_else(|| Error::EmptyCommand {
                job: job.name.clone(),
            })?;
            (program.clone(), args.to_vec())
        }
    };
    let env = job
        .env
        .iter()
        .map(|(name, value)| (name.clone(), value.clone()))
        .chain(
            leasecron_env(&job.name, run)
                .into_iter()
                .map(|(name, value)| (name.to_owned(), value)),
        )
        .collect();
    Ok(ProcessSpec {
        program,
        args,
        env,
        cwd: job
            .working_dir
            .as_ref()
            .map(|dir| dir.display().to_string()),
    })
}

impl ProcessSpec {
    /// The command that starts it from this process: its own process group, stdin from `/dev/null`,
    /// stdout and stderr piped, the parent-death signal, the open file limits leasecron started with.
    pub(crate) fn command(&self) -> Command {
        let mut command = Command::new(&self.program);
        command
            .args(&self.args)
            .envs(self.env.iter().map(|(name, value)| (name, value)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            // A backstop only: the runner always waits for its children; this covers a dropped run future.
            .kill_on_drop(true);
        if let Some(dir) = &self.cwd {
            command.current_dir(dir);
        }
        die_with_parent(
            command.as_std_mut(),
            super::spawner::child_open_file_limit(),
        );
        command
    }
}

/// The five `LEASECRON_*` variables of an attempt.
pub(crate) fn leasecron_env(job: &str, run: &RunEnv<'_>) -> [(&'static str, String); 5] {
    [
        ("LEASECRON_JOB", job.to_owned()),
        ("LEASECRON_SCHEDULED_TIME", format_scheduled(run.scheduled)),
        ("LEASECRON_IDENTITY", run.identity.to_owned()),
        ("LEASECRON_FENCING_TOKEN", run.fencing_token.to_string()),
        ("LEASECRON_ATTEMPT", run.attempt.to_string()),
    ]
}

/// RFC 3339 in UTC with a `Z`, in seconds unless the slot has a fraction (then as many digits as needed).
pub(crate) fn format_scheduled(scheduled: DateTime<Utc>) -> String {
    scheduled.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// Makes the child die with SIGKILL when its parent goes away, so no run's process outlives the process
/// that started it; gives it an empty signal mask (the run supervisor blocks the signals it reads from a
/// signalfd, and a mask survives `exec`); and gives it `open_files` (soft, hard) as its open file limits if
/// set (leasecron raises its own, see `spawner`). Used by the runner and by the run supervisor.
#[allow(unsafe_code)]
pub(crate) fn die_with_parent(command: &mut std::process::Command, open_files: Option<(u64, u64)>) {
    let parent = Pid::this();
    // SAFETY: the closure runs in the forked child before exec, where only async-signal-safe calls are
    // allowed. It makes at most four system calls (prctl(2), getppid(2), sigprocmask(2), setrlimit(2)),
    // all async-signal-safe; it allocates nothing
    // and takes no lock; the error it may return is built from a raw errno, without allocation.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(command, move || {
            prctl::set_pdeathsig(Signal::SIGKILL).map_err(io::Error::from)?;
            // If the parent died before prctl took effect, the signal will never come: give up instead.
            if getppid() != parent {
                return Err(io::Error::from(Errno::ESRCH));
            }
            sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None)
                .map_err(io::Error::from)?;
            if let Some((soft, hard)) = open_files {
                setrlimit(Resource::RLIMIT_NOFILE, soft, hard).map_err(io::Error::from)?;
            }
            Ok(())
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn scheduled_time_has_seconds_precision_unless_the_slot_has_a_fraction() {
        let whole = Utc.with_ymd_and_hms(2026, 11, 21, 10, 0, 0).single();
        let whole = whole.expect("valid date");
        assert_eq!(format_scheduled(whole), "2026-11-21T10:00:00Z");
        let fraction = whole + chrono::TimeDelta::milliseconds(250);
        assert_eq!(format_scheduled(fraction), "2026-11-21T10:00:00.250Z");
    }

    #[test]
    fn the_five_variables_are_named_per_contract() {
        let run = RunEnv {
            scheduled: Utc.timestamp_opt(0, 0).single().expect("epoch"),
            identity: "pod-a",
            fencing_token: FencingToken(7),
            attempt: 2,
        };
        let env = leasecron_env("nightly", &run);
        let names: Vec<_> = env.iter().map(|(name, _)| *name).collect();
        assert_eq!(
            names,
            [
                "LEASECRON_JOB",
                "LEASECRON_SCHEDULED_TIME",
                "LEASECRON_IDENTITY",
                "LEASECRON_FENCING_TOKEN",
                "LEASECRON_ATTEMPT"
            ]
        );
        assert_eq!(env[1].1, "1970-01-01T00:00:00Z");
        assert_eq!(env[3].1, "7");
        assert_eq!(env[4].1, "2");
    }
}
