//! Building the process of one attempt ([`ProcessSpec`]: program, environment, working directory) and the
//! [`Command`] that starts it (process group, pipes, the parent-death signal).
//!
//! **Spawn only from a thread that lives as long as the process: the spawner's (`spawner`), never from
//! `spawn_blocking`.** The kernel sends the parent-death signal when the *thread* that forked the child
//! exits, not the process; blocking-pool threads are retired after a short idle time and would take their
//! children with them.

use std::process::Stdio;

use chrono::{DateTime, SecondsFormat, Utc};
use tokio::process::Command;

use crate::config::{Job, Program};
use crate::process::die_with_parent;
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
pub fn format_scheduled(scheduled: DateTime<Utc>) -> String {
    scheduled.to_rfc3339_opts(SecondsFormat::AutoSi, true)
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
