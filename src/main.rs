//! The `leasecron` command: parses flags and calls the library. See the crate docs for the layout.
#![forbid(unsafe_code)]

/// mimalloc rather than glibc's malloc: parsing a jobs file allocates once per YAML node, and `validate` of
/// 10 000 jobs takes a quarter less time with it (docs/decisions.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
use leasecron::cmd::{self, next, run::RunOptions, validate, Timings};
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
            leasecron::supervisor::serve::serve_fd(fd, log_format.into())
                .map_err(|error| anyhow::Error::new(cmd::Error::Internal(error.to_string())))
        }
        Command::Help { command } => help(command.as_deref()),
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
    init_logging(args.log_format)?;
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
