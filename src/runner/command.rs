//! Building the [`Command`] for one attempt: program, environment, working directory, process group, and
//! the parent-death signal.
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
use nix::sys::signal::Signal;
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

/// The command for one attempt of `job`: its own process group, stdin from `/dev/null`, stdout and stderr
/// piped, the replica's environment, then the job's `env`, then the `LEASECRON_*` variables.
pub(crate) fn build(job: &Job, run: &RunEnv<'_>) -> Result<Command, Error> {
    let mut command = program(job)?;
    command
        .envs(&job.env)
        .envs(leasecron_env(&job.name, run))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        // A backstop only: the runner always waits for its children; this covers a dropped run future.
        .kill_on_drop(true);
    if let Some(dir) = &job.working_dir {
        command.current_dir(dir);
    }
    die_with_parent(&mut command);
    Ok(command)
}

fn program(job: &Job) -> Result<Command, Error> {
    match &job.program {
        Program::Shell(script) => {
            let mut command = Command::new(SHELL);
            command.arg("-c").arg(script);
            Ok(command)
        }
        Program::Command(argv) => {
            let (program, args) = argv.split_first().ok_or_else(|| Error::EmptyCommand {
                job: job.name.clone(),
            })?;
            let mut command = Command::new(program);
            command.args(args);
            Ok(command)
        }
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

/// Makes the child die with SIGKILL when its parent goes away, so no run outlives a crashed runner; and
/// gives it the open file limits leasecron was started with (leasecron raises its own, see `spawner`).
#[allow(unsafe_code)]
fn die_with_parent(command: &mut Command) {
    let parent = Pid::this();
    let open_files = super::spawner::child_open_file_limit();
    // SAFETY: the closure runs in the forked child before exec, where only async-signal-safe calls are
    // allowed. It makes at most three system calls (prctl(2), getppid(2), setrlimit(2)), allocates nothing
    // and takes no lock; the error it may return is built from a raw errno, without allocation.
    unsafe {
        command.pre_exec(move || {
            prctl::set_pdeathsig(Signal::SIGKILL).map_err(io::Error::from)?;
            // If the parent died before prctl took effect, the signal will never come: give up instead.
            if getppid() != parent {
                return Err(io::Error::from(Errno::ESRCH));
            }
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
