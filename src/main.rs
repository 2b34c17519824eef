//! The `leasecron` command: parses flags and calls the library. See the crate docs for the layout.
#![deny(unsafe_code)]

/// mimalloc rather than glibc's malloc: parsing a jobs file allocates once per YAML node, and `validate` of
/// 10 000 jobs takes a quarter less time with it (docs/decisions.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

// mimalloc's C API (`mimalloc.h`), linked in with the allocator above; the mimalloc crate declares
// `mi_option_set` only behind a feature that would rebuild it.
extern "C" {
    fn mi_option_set(option: std::ffi::c_int, value: std::ffi::c_long);
}

/// `mi_option_purge_delay` of mimalloc 3's `mi_option_t`.
const MI_OPTION_PURGE_DELAY: std::ffi::c_int = 15;

/// Makes mimalloc give freed pages back to the system at once rather than a second later: for `run`
/// only, before it loads the jobs.
///
/// mimalloc purges a delayed page only on a later call into the allocator, so a replica that loaded its
/// jobs and went idle kept what loading allocated and freed: at 10 000 jobs a quarter of its RSS
/// (docs/decisions.md has the figures). The one-shot commands keep the delay: purging at once made
/// `validate` of 10 000 jobs slower.
#[allow(unsafe_code)]
fn tune_allocator() {
    // SAFETY: `mi_option_set` only stores an integer in mimalloc's option table, which mimalloc reads
    // whenever it decides to purge; the option exists in the mimalloc 3 that libmimalloc-sys builds.
    unsafe {
        mi_option_set(MI_OPTION_PURGE_DELAY, 0);
    }
}

use std::io::Write as _;
use std::net::{SocketAddr, ToSocketAddrs as _};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, CommandFactory as _, Parser, Subcommand, ValueEnum};
use leasecron::backend::JobsSource;
use leasecron::clock::SystemClock;
use leasecron::cmd::operate::{self, view};
use leasecron::cmd::{self, convert, next, run::RunOptions, validate, Timings};
use leasecron::config::{parse_duration, parse_size, DEFAULT_CONFIG_MAP_KEY};

/// `--max-file-size`'s default, as written in the help: `config::DEFAULT_MAX_FILE_SIZE`.
const DEFAULT_MAX_FILE_SIZE: &str = "1MiB";

/// A singleton cron runner: every replica loads the jobs, only the holder of the lease runs them.
#[derive(Debug, Parser)]
// Our own `help` subcommand: clap's refuses `leasecron help --help`.
#[command(
    name = "leasecron",
    version,
    about,
    max_term_width = 110,
    disable_help_subcommand = true
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Elect a leader and run the jobs while leading, until SIGTERM/SIGINT.
    Run(RunArgs),
    /// Check jobs files, or ConfigMap manifests that embed one: print FILE: ok for each valid file and exit
    /// 0, else print every error as FILE:LINE:COL: message and exit 2. What depends on this machine (a
    /// workingDir missing here) is a warning.
    Validate {
        /// Jobs files, or manifests (kubectl/kustomize YAML; every ConfigMap in them is checked); `-` reads
        /// standard input.
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
        /// The ConfigMap data key that holds the jobs file.
        #[arg(long, default_value = DEFAULT_CONFIG_MAP_KEY, value_name = "KEY")]
        key: String,
        #[command(flatten)]
        timings: TimingArgs,
        #[command(flatten)]
        size: MaxFileSize,
    },
    /// Convert CronJob manifests into leasecron jobs-file entries (executor: kubernetes), on stdout.
    ///
    /// Reads YAML streams (`---` separated documents, or a List as `kubectl get cronjob -o yaml` prints);
    /// every batch/v1 or batch/v1beta1 CronJob becomes one job: its name, schedule (a CRON_TZ=/TZ= prefix
    /// becomes timeZone), timeZone, concurrencyPolicy (always written: CronJob's default is Allow,
    /// leasecron's Forbid), startingDeadlineSeconds as startingDeadline, suspend, the history limits, and
    /// its spec.jobTemplate.spec verbatim as jobTemplate. Other kinds are skipped with a note.
    ///
    /// Every field that cannot be carried over, or whose meaning changes, is a warning on stderr naming
    /// the CronJob and the field. The output starts with a comment header and `jobs:`.
    ///
    /// Exit status: 0 every CronJob converted (warnings allowed); 2 some could not be converted at all
    /// (each is named on stderr; the others are still printed); 1 an input could not be read.
    Convert {
        /// CronJob manifests; `-` (the default) reads standard input.
        #[arg(value_name = "FILE", default_value = "-")]
        files: Vec<PathBuf>,
        #[command(flatten)]
        size: MaxFileSize,
    },
    /// Print the next fire times of each job, in the job's time zone.
    Next {
        /// The jobs file, or a manifest whose ConfigMaps embed one (as for validate); `-` reads standard
        /// input.
        #[arg(value_name = "FILE")]
        file: PathBuf,
        /// The ConfigMap data key that holds the jobs file, in a manifest.
        #[arg(long, default_value = DEFAULT_CONFIG_MAP_KEY, value_name = "KEY")]
        key: String,
        #[command(flatten)]
        size: MaxFileSize,
        /// How many fire times per job.
        #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u16).range(1..))]
        count: u16,
        /// Only this job.
        #[arg(long, value_name = "NAME")]
        job: Option<String>,
        /// Also show each job's last slot from the run state kept beside this lease file.
        #[arg(long, value_name = "PATH", conflicts_with = "lease_name")]
        lease_file: Option<PathBuf>,
        /// Also show each job's last slot from the run state of this Kubernetes Lease (the ConfigMap
        /// NAME-state; the client is configured as for `run`).
        #[arg(long, value_name = "NAME")]
        lease_name: Option<String>,
        /// Namespace of that Lease [default: POD_NAMESPACE, else the kubeconfig's].
        #[arg(long, value_name = "NS", requires = "lease_name")]
        lease_namespace: Option<String>,
    },
    /// Run JOB once now, outside its schedule: file a trigger request for the leader; print its id.
    ///
    /// The request goes into the controls beside the lease (the ConfigMap LEASE-NAME-controls, or the file
    /// LEASE-FILE.controls), never to a replica's port. The leader runs JOB as soon as it reads the
    /// request, under the job's concurrencyPolicy (a Forbid job with a run in flight refuses it), at most
    /// once whichever replica leads; a request that no leader acknowledges within an hour expires.
    ///
    /// With --wait, follows the request in the run state and prints how it ended: the outcome, the run's
    /// duration, the replica and fencing token that ran it, and where its output is (that replica's log).
    ///
    /// Exit status: 0 filed (with --wait: the run succeeded); 1 the API unreachable, or with --wait the
    /// request refused, the run not succeeded, or --timeout passed (the request stays filed); 2 a bad
    /// request, such as an unknown job: nothing was filed.
    Trigger {
        /// The job, by name.
        #[arg(value_name = "JOB")]
        job: String,
        #[command(flatten)]
        wait: WaitArgs,
        #[command(flatten)]
        target: TargetArgs,
    },
    /// Suspend JOB: its fires start nothing, on whichever replica leads, until `leasecron resume JOB`.
    ///
    /// Sets the job's suspension in the controls beside the lease (who, when, the note) and files a
    /// suspend request, in one write; a run in flight goes on. Suspending a job already suspended by an
    /// operator changes its note, if --note is given, and nothing else.
    ///
    /// Exit status: 0 suspended; 1 the API unreachable; 2 a bad request (an unknown job, a note too long).
    Suspend {
        /// The job, by name.
        #[arg(value_name = "JOB")]
        job: String,
        /// Why, for whoever looks later (`leasecron status` shows it); at most 1024 bytes.
        #[arg(long, value_name = "TEXT")]
        note: Option<String>,
        #[command(flatten)]
        target: TargetArgs,
    },
    /// Resume JOB, which `leasecron suspend` suspended: its next slots run again.
    ///
    /// Removes the job's suspension from the controls and files a resume request, in one write. The slots
    /// that fell due while the job was suspended are not run: resume prints how many, and the `leasecron
    /// backfill` command that runs them. A job that the jobs file suspends (suspend: true) stays suspended:
    /// resume cannot override the file.
    ///
    /// Exit status: 0 resumed; 1 the API unreachable; 2 a bad request (a job no operator suspended).
    Resume {
        /// The job, by name.
        #[arg(value_name = "JOB")]
        job: String,
        #[command(flatten)]
        target: TargetArgs,
    },
    /// Run JOB's slots that fell in a past range: file a backfill request for the leader.
    ///
    /// Counts the slots of JOB's schedule in [--from, --to] (both included) and files the request if there
    /// are 1 to 1000 and the range has passed. The leader runs them one after the other, oldest first,
    /// skipping each slot that already ran; a new leader goes on where the last one stopped. With --wait,
    /// follows it until every slot is dealt with.
    ///
    /// Exit status: 0 filed (with --wait: every run succeeded); 1 the API unreachable, or with --wait the
    /// request refused, a run not succeeded, or --timeout passed; 2 a bad request (an unknown job, a bad
    /// time, a range in the future, with no slot or more than 1000): nothing was filed.
    Backfill {
        /// The job, by name.
        #[arg(value_name = "JOB")]
        job: String,
        /// The range's first instant: RFC 3339 (2026-11-21T03:00:00Z, 2026-11-21T03:00:00+01:00), or a
        /// date and time without offset (2026-11-21T03:00), in the job's time zone.
        #[arg(long, value_name = "TIME")]
        from: String,
        /// The range's last instant, as --from; it must have passed.
        #[arg(long, value_name = "TIME")]
        to: String,
        #[command(flatten)]
        wait: WaitArgs,
        #[command(flatten)]
        target: TargetArgs,
    },
    /// Show the leader and, per job, its schedule, suspension, runs in flight, last run, next slot and
    /// pending requests, as `kubectl get cronjob` would.
    ///
    /// Read from the lease, the run state and the controls beside it and from the jobs, not from a
    /// replica's port. A run is running if the current term started it and has not finished it; the
    /// current term is the lease holder's, while the lease has not expired by this machine's clock.
    /// `-o json` prints one JSON document of a stable shape (README, "leasecron status").
    ///
    /// Exit status: 0 shown; 1 the API unreachable; 2 a bad request (an unknown job).
    Status {
        /// Only this job.
        #[arg(value_name = "JOB")]
        job: Option<String>,
        /// The output format.
        #[arg(short = 'o', long = "output", value_enum, default_value_t = OutputFormat::Text)]
        output: OutputFormat,
        #[command(flatten)]
        target: TargetArgs,
    },
    /// Show JOB's last runs, newest first: slot, cause, fencing token, replica, start, duration, outcome,
    /// exit code or signal.
    ///
    /// Read from the run state, which keeps the last 20 runs of each job (fewer where its ConfigMap would
    /// not hold them). A run without an outcome is running if the current term started it, else
    /// interrupted: its term ended first. `-o json` prints one JSON document (README, "leasecron history").
    ///
    /// Exit status: 0 shown; 1 the API unreachable; 2 a bad request (an unknown job).
    History {
        /// The job, by name.
        #[arg(value_name = "JOB")]
        job: String,
        /// At most this many runs.
        #[arg(short = 'n', long = "count", value_name = "N", default_value_t = 20,
              value_parser = clap::value_parser!(u16).range(1..))]
        count: u16,
        /// The output format.
        #[arg(short = 'o', long = "output", value_enum, default_value_t = OutputFormat::Text)]
        output: OutputFormat,
        #[command(flatten)]
        target: TargetArgs,
    },
    /// Print this help, or the help of the given command.
    Help {
        /// The command.
        #[arg(value_name = "COMMAND")]
        command: Option<String>,
    },
    /// The run supervisor, started by `run` (not by hand): spawns the runs' processes and ends them all if
    /// `run` dies.
    #[command(name = "supervise", hide = true)]
    Supervise {
        /// The socket `run` passed.
        #[arg(long, value_name = "FD")]
        fd: i32,
        /// The format of its log lines.
        #[arg(long, value_enum, default_value_t = LogFormat::Text)]
        log_format: LogFormat,
    },
}

#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("jobs_source").required(true).args(["jobs", "jobs_configmap"]))]
struct RunArgs {
    /// The jobs file (YAML), reloaded when it changes (a ConfigMap volume's swap, an editor's save).
    #[arg(long, value_name = "FILE")]
    jobs: Option<PathBuf>,
    /// Read the jobs from this ConfigMap, in the lease namespace, watched through the API (no kubelet
    /// sync delay); KEY defaults to jobs.yaml. Needs get and watch on it.
    #[arg(long, value_name = "NAME[/KEY]")]
    jobs_configmap: Option<String>,
    /// Name of the coordination.k8s.io/v1 Lease.
    #[arg(
        long,
        env = "LEASECRON_LEASE_NAME",
        default_value = "leasecron",
        value_name = "NAME"
    )]
    lease_name: String,
    /// Namespace of the Lease [default: POD_NAMESPACE, else the kubeconfig's or in-cluster namespace, else default].
    #[arg(long, env = "LEASECRON_LEASE_NAMESPACE", value_name = "NS")]
    lease_namespace: Option<String>,
    /// This replica's identity in the lease [default: POD_NAME, else the hostname; with --lease-file, hostname-PID].
    #[arg(long, env = "LEASECRON_IDENTITY", value_name = "ID")]
    identity: Option<String>,
    #[command(flatten)]
    timings: TimingArgs,
    /// Elect through a lease record in this local file instead of the Kubernetes API.
    #[arg(long, value_name = "PATH")]
    lease_file: Option<PathBuf>,
    /// Address for /metrics, /status, /healthz and /readyz: IP:PORT, HOST:PORT (resolved), or :PORT for
    /// every interface. The default serves every interface, as a container needs; on a laptop, give
    /// 127.0.0.1:9090 (or 127.0.0.1:0 for any free port).
    #[arg(long, default_value = "0.0.0.0:9090", value_parser = parse_http_addr, value_name = "ADDR")]
    http_addr: SocketAddr,
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// How long to retry the Kubernetes API at start while it is unreachable, times out or answers 5xx or
    /// 429, before exiting 1 (0s: do not retry). A 401, a 403 or a missing object exits 2 at once.
    #[arg(long, default_value = "5m", value_parser = parse_duration, value_name = "DUR")]
    startup_timeout: Duration,
    #[command(flatten)]
    size: MaxFileSize,
}

/// The lease and the jobs an operator command works on.
#[derive(Debug, Args)]
#[command(next_help_heading = "Lease and jobs")]
struct TargetArgs {
    /// The lease file of `run --lease-file`: the run state and the controls are beside it.
    #[arg(long, value_name = "PATH")]
    lease_file: Option<PathBuf>,
    /// The Kubernetes Lease of `run` (its run state and controls are the ConfigMaps NAME-state and
    /// NAME-controls); the client is configured as for `run`.
    #[arg(
        long,
        env = "LEASECRON_LEASE_NAME",
        default_value = operate::DEFAULT_LEASE_NAME,
        value_name = "NAME"
    )]
    lease_name: String,
    /// Namespace of the Lease and the ConfigMaps [default: POD_NAMESPACE, else the kubeconfig's].
    #[arg(long, env = "LEASECRON_LEASE_NAMESPACE", value_name = "NS")]
    lease_namespace: Option<String>,
    /// The jobs file (or a manifest with one jobs ConfigMap), to check JOB and read the schedules
    /// [default on Kubernetes: --jobs-configmap leasecron-jobs; with --lease-file, needed by trigger,
    /// suspend, backfill and status].
    #[arg(long, value_name = "FILE", conflicts_with = "jobs_configmap")]
    jobs: Option<PathBuf>,
    /// Read the jobs from key KEY (default jobs.yaml) of this ConfigMap, in the Lease's namespace.
    #[arg(long, value_name = "NAME[/KEY]")]
    jobs_configmap: Option<String>,
    /// The limit of each request to the Kubernetes API.
    #[arg(long, default_value = "10s", value_parser = parse_duration, value_name = "DUR")]
    request_timeout: Duration,
    /// The largest jobs file read (e.g. 512KiB, 4MiB).
    #[arg(long, default_value = DEFAULT_MAX_FILE_SIZE, value_parser = parse_size, value_name = "SIZE")]
    max_file_size: u64,
}

impl From<TargetArgs> for operate::Target {
    fn from(args: TargetArgs) -> Self {
        let jobs = match (args.jobs, args.jobs_configmap) {
            (Some(path), _) => Some(JobsSource::File(path)),
            (None, Some(configmap)) => Some(JobsSource::ConfigMap(configmap)),
            (None, None) => None,
        };
        operate::Target {
            lease_file: args.lease_file,
            lease_name: args.lease_name,
            lease_namespace: args.lease_namespace,
            jobs,
            max_file_size: args.max_file_size,
            request_timeout: args.request_timeout,
        }
    }
}

/// `--wait` and its limit.
#[derive(Debug, Args)]
struct WaitArgs {
    /// Follow the request until the leader has carried it out, and print how it ended.
    #[arg(long)]
    wait: bool,
    /// How long --wait waits, for the leader to acknowledge the request and for the runs to end.
    #[arg(long, default_value = "10m", value_parser = parse_duration, value_name = "DUR", requires = "wait")]
    timeout: Duration,
}

impl WaitArgs {
    fn limit(&self) -> Option<Duration> {
        self.wait.then_some(self.timeout)
    }
}

/// `-o`.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum OutputFormat {
    Text,
    Json,
}

impl From<OutputFormat> for view::Format {
    fn from(format: OutputFormat) -> Self {
        match format {
            OutputFormat::Text => view::Format::Text,
            OutputFormat::Json => view::Format::Json,
        }
    }
}

#[derive(Debug, Args)]
struct MaxFileSize {
    /// The largest jobs file read, on start and on every reload (e.g. 512KiB, 4MiB); the default is what a
    /// ConfigMap holds.
    #[arg(long, default_value = DEFAULT_MAX_FILE_SIZE, value_parser = parse_size, value_name = "SIZE")]
    max_file_size: u64,
}

/// `--http-addr`: `IP:PORT`, `[IPv6]:PORT`, `HOST:PORT` (resolved now; the first address is used), or
/// `:PORT` (every IPv4 interface, as the default and as Go's `:PORT`).
fn parse_http_addr(text: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let example = "write IP:PORT, HOST:PORT or :PORT, e.g. 127.0.0.1:9090, localhost:9090 or :9090";
    let Some((host, port)) = text.rsplit_once(':') else {
        return Err(format!("no port in `{text}`: {example}"));
    };
    let port: u16 = port
        .parse()
        .map_err(|_| format!("invalid port `{port}`: {example}"))?;
    if host.is_empty() {
        return Ok(SocketAddr::from(([0, 0, 0, 0], port)));
    }
    let host = host.trim_start_matches('[').trim_end_matches(']');
    match (host, port).to_socket_addrs() {
        Ok(mut addrs) => addrs
            .next()
            .ok_or_else(|| format!("host `{host}` has no address")),
        Err(e) => Err(format!("cannot resolve host `{host}`: {e} ({example})")),
    }
}

#[derive(Debug, Args)]
struct TimingArgs {
    /// How long a lease stays valid after its holder's last renew was observed (e.g. 15s, 1m30s).
    #[arg(long, default_value = "15s", value_parser = parse_duration, value_name = "DUR")]
    lease_duration: Duration,
    /// How long the leader keeps running jobs without a successful renew.
    #[arg(long, default_value = "10s", value_parser = parse_duration, value_name = "DUR")]
    renew_deadline: Duration,
    /// Interval between renews, and between a follower's attempts.
    #[arg(long, default_value = "2s", value_parser = parse_duration, value_name = "DUR")]
    retry_period: Duration,
}

impl From<&TimingArgs> for Timings {
    fn from(args: &TimingArgs) -> Self {
        Timings {
            lease_duration: args.lease_duration,
            renew_deadline: args.renew_deadline,
            retry_period: args.retry_period,
        }
    }
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

impl From<LogFormat> for leasecron::logging::LogFormat {
    fn from(format: LogFormat) -> Self {
        match format {
            LogFormat::Text => Self::Text,
            LogFormat::Json => Self::Json,
        }
    }
}

/// This very binary, even if its file was replaced or removed since it started: the run supervisor is
/// the same version.
const SELF_EXE: &str = "/proc/self/exe";

/// The program to start as the run supervisor: this binary through `/proc/self/exe`; where `/proc` is not
/// mounted (a bare chroot), the path it was started by, if that names a file.
fn supervisor_program() -> PathBuf {
    let self_exe = PathBuf::from(SELF_EXE);
    if self_exe.exists() {
        return self_exe;
    }
    std::env::args_os()
        .next()
        .map(PathBuf::from)
        .filter(|path| path.components().count() > 1 && path.is_file())
        .unwrap_or(self_exe)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match execute(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            let app_error = err.downcast_ref::<cmd::Error>();
            let code = exit_code(&err);
            // Written directly (the log's writer has flushed by now); a closed stderr loses it, silently.
            let mut stderr = std::io::stderr().lock();
            let _ = match app_error {
                Some(e) if e.is_diagnostics() => writeln!(stderr, "{e}"),
                // Our errors' messages already name their cause.
                Some(e) => writeln!(stderr, "leasecron: {e}"),
                None => writeln!(stderr, "leasecron: {err:#}"),
            };
            ExitCode::from(u8::try_from(code).unwrap_or(1))
        }
    }
}

/// The exit code of a command that failed with `err`: 2 for bad input, 1 for failures at run time.
fn exit_code(err: &anyhow::Error) -> i32 {
    err.downcast_ref::<cmd::Error>()
        .map_or(cmd::EXIT_FAILURE, cmd::Error::exit_code)
}

fn execute(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Run(args) => run(args),
        Command::Supervise { fd, log_format } => {
            // Small and long-lived like the replica. A kernel without the flag only costs memory.
            let _ = leasecron::keep_huge_pages_off();
            leasecron::supervisor::serve::serve_fd(fd, log_format.into())
                .map_err(|error| anyhow::Error::new(cmd::Error::Internal(error.to_string())))
        }
        Command::Help { command } => help(command.as_deref()),
        Command::Trigger { job, wait, target } => operate(
            target,
            operate::Command::Trigger {
                job,
                wait: wait.limit(),
            },
        ),
        Command::Suspend { job, note, target } => {
            operate(target, operate::Command::Suspend { job, note })
        }
        Command::Resume { job, target } => operate(target, operate::Command::Resume { job }),
        Command::Backfill {
            job,
            from,
            to,
            wait,
            target,
        } => operate(
            target,
            operate::Command::Backfill {
                job,
                from,
                to,
                wait: wait.limit(),
            },
        ),
        Command::Status {
            job,
            output,
            target,
        } => operate(
            target,
            operate::Command::Status {
                job,
                format: output.into(),
            },
        ),
        Command::History {
            job,
            count,
            output,
            target,
        } => operate(
            target,
            operate::Command::History {
                job,
                limit: usize::from(count),
                format: output.into(),
            },
        ),
        Command::Validate {
            files,
            key,
            timings,
            size,
        } => {
            let validation =
                validate::validate(&files, &key, &Timings::from(&timings), size.max_file_size)?;
            // Every valid file is said so, whatever the others are.
            let mut out = String::new();
            for line in &validation.valid {
                out.push_str(line);
                out.push('\n');
            }
            print_stdout(&out)?;
            if !validation.warnings.is_empty() {
                let mut stderr = std::io::stderr().lock();
                for warning in &validation.warnings {
                    // A closed stderr loses them, as it would lose the errors.
                    let _ = writeln!(stderr, "{warning}");
                }
            }
            if validation.invalid.is_empty() {
                Ok(())
            } else {
                Err(cmd::Error::Invalid(validation.invalid).into())
            }
        }
        Command::Convert { files, size } => {
            let mut inputs = Vec::with_capacity(files.len());
            for file in &files {
                let text = leasecron::config::read_text(file, size.max_file_size)
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                inputs.push(convert::Input {
                    origin: leasecron::config::origin_of(file),
                    text,
                });
            }
            let conversion = convert::convert(&inputs);
            print_stdout(&conversion.output)?;
            let mut stderr = std::io::stderr().lock();
            for line in conversion.warnings.iter().chain(&conversion.errors) {
                let _ = writeln!(stderr, "{line}");
            }
            if conversion.errors.is_empty() {
                Ok(())
            } else {
                // main prints it after the lines above, as `leasecron: N CronJob(s) … not converted`.
                Err(cmd::Error::NotConverted(conversion.errors.len()).into())
            }
        }
        Command::Next {
            file,
            key,
            size,
            count,
            job,
            lease_file,
            lease_name,
            lease_namespace,
        } => {
            let source = match (lease_file, lease_name) {
                (Some(lease), _) => Some(next::StateSource::File(lease)),
                (None, Some(name)) => Some(next::StateSource::Kube {
                    name,
                    namespace: lease_namespace,
                }),
                (None, None) => None,
            };
            let record = match source {
                Some(source) => {
                    let runtime = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .context("cannot start the tokio runtime")?;
                    Some(runtime.block_on(next::read_run_state(source))?)
                }
                None => None,
            };
            print_stdout(&next::next(
                &file,
                &key,
                size.max_file_size,
                usize::from(count),
                job.as_deref(),
                record.as_ref(),
            )?)
        }
    }
}

/// An operator command: `trigger`, `suspend`, `resume`, `backfill`, `status` or `history`.
fn operate(target: TargetArgs, command: operate::Command) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;
    let target = operate::Target::from(target);
    let mut stdout = std::io::stdout();
    Ok(runtime
        .block_on(operate::execute(&target, command, &mut stdout))
        .map_err(cmd::Error::from)?)
}

/// `leasecron help [COMMAND]`: the help of leasecron, or of one of its commands.
fn help(command: Option<&str>) -> anyhow::Result<()> {
    let mut cli = Cli::command();
    let help = match command {
        None => cli.render_long_help(),
        Some(name) => match cli.find_subcommand_mut(name) {
            Some(sub) => sub
                .clone()
                .bin_name(format!("leasecron {name}"))
                .render_long_help(),
            None => {
                return Err(anyhow::Error::new(cmd::Error::UnknownCommand(
                    name.to_owned(),
                )))
            }
        },
    };
    print_stdout(&help.to_string())
}

/// Writes `text` to stdout without ever panicking. A reader that stopped reading (`leasecron next … |
/// head -1`) has what it wanted: that is not an error, as it is not for a tool killed by SIGPIPE.
fn print_stdout(text: &str) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(e).context("cannot write to stdout")
        }
        _ => Ok(()),
    }
}

fn run(args: RunArgs) -> anyhow::Result<()> {
    tune_allocator();
    let huge_pages = leasecron::keep_huge_pages_off();
    init_logging(args.log_format)?;
    if let Err(error) = huge_pages {
        tracing::debug!(%error, "transparent huge pages stay as they were (PR_SET_THP_DISABLE)");
    }
    let result = run_logged(args);
    // The last line of the log says how the replica ended; an error is also printed on its own after
    // the log (by main), for whoever reads the terminal. An error before anything was logged (bad flags
    // or input, found before the replica starts) is the whole output: one line, not wrapped in a log line.
    let logged = leasecron::logging::STDERR.events() > 0;
    match &result {
        Ok(()) => tracing::info!(exit_code = 0, "leasecron exiting"),
        Err(_) if !logged => {}
        Err(error) => {
            // Our errors' messages already name their cause; another error shows its chain.
            let text = match error.downcast_ref::<cmd::Error>() {
                Some(e) => e.to_string(),
                None => format!("{error:#}"),
            };
            tracing::error!(
                exit_code = exit_code(error),
                error = text,
                "leasecron exiting"
            );
        }
    }
    // The log is written by a thread of its own: let it write the last lines before the process exits.
    leasecron::logging::flush(leasecron::logging::EXIT_FLUSH_LIMIT);
    result
}

/// `run` once logging is set up.
fn run_logged(args: RunArgs) -> anyhow::Result<()> {
    let jobs = match (args.jobs, args.jobs_configmap) {
        (Some(path), _) => JobsSource::File(path),
        (None, Some(configmap)) => JobsSource::ConfigMap(configmap),
        // clap's group requires one of the two.
        (None, None) => anyhow::bail!("one of --jobs and --jobs-configmap is required"),
    };
    let opts = RunOptions {
        jobs,
        lease_name: args.lease_name,
        lease_namespace: args.lease_namespace,
        identity: args.identity,
        timings: Timings::from(&args.timings),
        lease_file: args.lease_file,
        http_addr: args.http_addr,
        startup_timeout: args.startup_timeout,
        supervisor_program: supervisor_program(),
        log_format: args.log_format.into(),
        max_file_size: args.size.max_file_size,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;
    let result = runtime.block_on(cmd::run::run(opts, Arc::new(SystemClock)));
    drop(runtime);
    Ok(result?)
}

/// Logs to stderr through [`leasecron::logging`]: a log write never panics and never blocks the runtime.
fn init_logging(format: LogFormat) -> anyhow::Result<()> {
    use tracing_subscriber::util::SubscriberInitExt as _;
    use tracing_subscriber::EnvFilter;
    // kube's HTTP layer logs every failed request at ERROR; the elector reports them with context.
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,kube_client=off"));
    leasecron::logging::subscriber(format.into(), filter, leasecron::logging::stderr()?)
        .try_init()
        .map_err(|e| anyhow::anyhow!("cannot set up logging: {e}"))
}
