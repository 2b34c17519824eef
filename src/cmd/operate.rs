//! The operator commands: `trigger`, `suspend`, `resume` and `backfill` file a request for the leader;
//! `status` and `history` read what the replicas recorded. None of them talks to a replica: they read and
//! write the stores beside the lease, as the replicas do ([`crate::controls`] has the why).
//!
//! - [`Target`] is the flags they share: which lease (a lease file, or a Kubernetes Lease) and which jobs
//!   (a file, or a ConfigMap: on Kubernetes `leasecron-jobs` unless told otherwise); [`Target::open`] opens
//!   the stores beside that lease without a request, and reads the jobs.
//! - [`request`]: the four commands that file a request, and `--wait`, which follows a request in the run
//!   state until the leader's acknowledgement says it is done.
//! - [`view`]: `status` and `history`, as text or as a JSON document.
//!
//! Exit codes, as for every command: 2 for a bad request (an unknown job, a bad time, a range in the future
//! or too long, resuming a job no operator suspended, a permanent answer of the API), nothing filed; 1 for
//! a failure at run time (the API unreachable, a request refused by the leader or not acknowledged in
//! time, a run that did not succeed).

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use chrono_tz::Tz;

use crate::backend::{self, AnyLeaseStore, JobsSource};
use crate::config::{self, JobSet, LoadOptions, DEFAULT_CONFIG_MAP_KEY};
use crate::controls;
use crate::kubernetes::controls::{self as kube_controls, ControlsConfigMap};
use crate::kubernetes::jobs_configmap::{self, ConfigMapRef};
use crate::kubernetes::lease::{KubeStore, Params};
use crate::kubernetes::run_state::{self as kube_state, StateConfigMap};
use crate::kubernetes::{self, names};
use crate::lease_store::{self, LeaseRecord, LeaseStore as _};
use crate::local::controls::{self as local_controls, ControlsFile};
use crate::local::lease::FileStore;
use crate::local::run_state::StateFile;
use crate::run_state::{self, Ledger};

pub mod request;
pub mod view;

/// The jobs ConfigMap the commands read on Kubernetes unless `--jobs` or `--jobs-configmap` says otherwise:
/// the one `deploy/core` ships.
pub const DEFAULT_JOBS_CONFIGMAP: &str = "leasecron-jobs";
/// `--lease-name`'s default, as for `run`.
pub const DEFAULT_LEASE_NAME: &str = "leasecron";
/// How long each request to the API server may take, unless `--request-timeout` says otherwise.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Why an operator command failed. [`Error::is_usage`] sorts it into a bad request (exit 2) and a failure
/// at run time (exit 1).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// JOB is not in the jobs.
    #[error("no job {job} in {origin}; jobs: {}", list_or_none(.jobs))]
    UnknownJob {
        /// The name given.
        job: String,
        /// Where the jobs were read from.
        origin: String,
        /// The jobs there are.
        jobs: Vec<String>,
    },
    /// `history JOB` without the jobs, and the run state has no run of JOB.
    #[error(
        "no run of {job} is recorded in {store}; jobs with runs: {} (give --jobs FILE or \
         --jobs-configmap NAME[/KEY] to check the name against the jobs)",
        list_or_none(.jobs)
    )]
    NoRuns {
        /// The name given.
        job: String,
        /// The run state store.
        store: String,
        /// The jobs it has runs of.
        jobs: Vec<String>,
    },
    /// A command that needs the jobs, on a lease file without `--jobs`.
    #[error(
        "{command} needs the jobs ({why}): with --lease-file, give --jobs FILE (or --jobs-configmap \
         NAME[/KEY])"
    )]
    JobsRequired {
        /// The command.
        command: &'static str,
        /// What it needs them for.
        why: &'static str,
    },
    /// `--jobs` names a manifest with more than one jobs ConfigMap.
    #[error(
        "--jobs {origin}: {count} ConfigMaps hold jobs; give the jobs file of this lease, or a manifest \
         with one jobs ConfigMap"
    )]
    SeveralJobSets {
        /// The file.
        origin: String,
        /// How many ConfigMaps hold jobs.
        count: usize,
    },
    /// `--lease-file` names neither a lease file nor a run state.
    #[error(
        "--lease-file {}: there is no lease file there (and no run state at {}): check the path; the \
         lease file is created by the first `leasecron run --lease-file` on it",
        lease.display(),
        state.display()
    )]
    NoLease {
        /// The path given.
        lease: PathBuf,
        /// Where its run state would be.
        state: PathBuf,
    },
    /// `--from` or `--to` is not a time.
    #[error("{flag} {value}: {why}")]
    BadTime {
        /// The flag.
        flag: &'static str,
        /// The value given.
        value: String,
        /// What is wrong.
        why: String,
    },
    /// A backfill's range is reversed, in the future, empty or too long.
    #[error("{0}")]
    BadRange(String),
    /// `resume JOB` of a job that no operator suspended.
    #[error("{0}")]
    NotSuspended(String),
    /// `--note` is too long.
    #[error(
        "--note has {bytes} bytes; a note has at most {} bytes",
        controls::MAX_NOTE_BYTES
    )]
    NoteTooLong {
        /// Its length.
        bytes: usize,
    },
    /// The lease name or namespace, the jobs file, the client configuration.
    #[error("{0}")]
    Backend(#[from] backend::Error),
    /// The jobs file is unreadable or invalid.
    #[error("{0}")]
    Config(#[from] config::Error),
    /// The jobs ConfigMap cannot be read.
    #[error("{source}{}", if *.defaulted { DEFAULT_JOBS_HINT } else { "" })]
    JobsConfigMap {
        /// What failed.
        #[source]
        source: jobs_configmap::Error,
        /// True if it is the default ConfigMap, not one given.
        defaulted: bool,
    },
    /// The lease cannot be read.
    #[error("{0}")]
    Lease(#[from] lease_store::Error),
    /// The run state cannot be read.
    #[error("{0}")]
    State(#[from] run_state::Error),
    /// The controls cannot be read or written.
    #[error("{0}")]
    Controls(controls::StoreError),
    /// The controls kept changing under our writes, or hold too many requests already.
    #[error("{0}")]
    Busy(String),
    /// A request was refused, failed, or was not carried out in time (`--wait`): what was printed says
    /// what happened, this says it once more on stderr.
    #[error("{0}")]
    Unsuccessful(String),
    /// Standard output failed.
    #[error("cannot write to stdout: {0}")]
    Output(#[source] io::Error),
}

/// What a failure to read the default jobs ConfigMap adds.
const DEFAULT_JOBS_HINT: &str =
    " (the commands read the jobs from --jobs-configmap leasecron-jobs unless \
                                 given --jobs FILE or --jobs-configmap NAME[/KEY])";

fn list_or_none(names: &[String]) -> String {
    if names.is_empty() {
        "none".to_owned()
    } else {
        names.join(", ")
    }
}

impl Error {
    /// True for a bad request (exit 2): nothing was filed, and trying again as it is will not help.
    pub fn is_usage(&self) -> bool {
        match self {
            Error::UnknownJob { .. }
            | Error::NoRuns { .. }
            | Error::JobsRequired { .. }
            | Error::SeveralJobSets { .. }
            | Error::NoLease { .. }
            | Error::BadTime { .. }
            | Error::BadRange(_)
            | Error::NotSuspended(_)
            | Error::NoteTooLong { .. }
            | Error::Config(_) => true,
            Error::Backend(e) => e.is_usage(),
            Error::JobsConfigMap { source, .. } => !source.is_transient(),
            Error::Lease(e) => !e.is_transient(),
            Error::State(run_state::Error::Store(e)) => e
                .downcast_ref::<kube_state::Error>()
                .is_some_and(|e| !e.is_transient()),
            Error::Controls(e) => !controls_error_is_transient(e.as_ref()),
            Error::State(_) | Error::Busy(_) | Error::Unsuccessful(_) | Error::Output(_) => false,
        }
    }

    /// True if the message is a list of `FILE:LINE:COL: message` diagnostics, to print as it is.
    pub fn is_diagnostics(&self) -> bool {
        matches!(self, Error::Config(config::Error::Invalid(_)))
    }
}

/// True if retrying may help with the controls store's error: not for a permanent answer of the API
/// server (403, 422, ...), an invalid name or an invalid document.
fn controls_error_is_transient(error: &(dyn std::error::Error + Send + Sync + 'static)) -> bool {
    if let Some(error) = error.downcast_ref::<kube_controls::Error>() {
        return error.is_transient();
    }
    !matches!(
        error.downcast_ref::<local_controls::Error>(),
        Some(local_controls::Error::Invalid(_))
    )
}

/// The flags every operator command shares: which lease, and which jobs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// `--lease-file PATH`: the lease file of `run --lease-file`; the run state and the controls are
    /// beside it. `None`: the Kubernetes Lease `lease_name`.
    pub lease_file: Option<PathBuf>,
    /// `--lease-name`: the Lease (also names its ConfigMaps `NAME-state` and `NAME-controls`).
    pub lease_name: String,
    /// `--lease-namespace`, if given (else `POD_NAMESPACE`, else the kubeconfig's).
    pub lease_namespace: Option<String>,
    /// `--jobs FILE` or `--jobs-configmap NAME[/KEY]`, if given.
    pub jobs: Option<JobsSource>,
    /// `--max-file-size`: the largest jobs file read.
    pub max_file_size: u64,
    /// `--request-timeout`: the limit of each request to the API server.
    pub request_timeout: Duration,
}

/// Whether a command needs the jobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NeedsJobs {
    /// It cannot do without: with a lease file, `--jobs` is required.
    Required {
        /// The command, for the message.
        command: &'static str,
        /// Why it needs them, for the message.
        why: &'static str,
    },
    /// It uses them when it has them: with a lease file only if given; on Kubernetes the default
    /// ConfigMap is read, and if that fails the command goes on without.
    Optional,
}

/// Where the lease is.
#[derive(Debug, Clone)]
pub enum Place {
    /// A lease file.
    Local {
        /// Its path.
        lease: PathBuf,
    },
    /// A Kubernetes Lease.
    Kube {
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
        /// The client configuration.
        config: Box<kube::Config>,
    },
}

/// The jobs a command checks JOB against.
#[derive(Debug, Clone)]
pub struct Jobs {
    /// The jobs.
    pub set: JobSet,
    /// Where they were read from, for messages.
    pub origin: String,
}

impl Jobs {
    /// The job `name`, or [`Error::UnknownJob`] listing the jobs there are.
    pub fn get(&self, name: &str) -> Result<&config::Job, Error> {
        self.set
            .get(name)
            .map(AsRef::as_ref)
            .ok_or_else(|| Error::UnknownJob {
                job: name.to_owned(),
                origin: self.origin.clone(),
                jobs: self.set.jobs.iter().map(|job| job.name.clone()).collect(),
            })
    }
}

/// The stores beside a lease, and the jobs: what every operator command works on.
#[derive(Debug)]
pub struct Opened {
    /// Where the lease is.
    pub place: Place,
    /// The lease, for reading.
    pub lease: AnyLeaseStore,
    /// The run state, for reading (it writes nothing: its identity is empty).
    pub ledger: Ledger,
    /// The operators' controls.
    pub controls: Box<dyn controls::Store>,
    /// The jobs, if read.
    pub jobs: Option<Jobs>,
    /// The flags that name this lease and these jobs, as a command line that repeats them would pass
    /// them (shell-quoted; empty for the defaults).
    pub flags: String,
    /// The limit of each request.
    pub request_timeout: Duration,
}

impl Target {
    /// Opens the stores beside the lease (without a request) and reads the jobs if the command `needs`
    /// them or may use them.
    pub async fn open(&self, needs: NeedsJobs) -> Result<Opened, Error> {
        let place = self.place().await?;
        let (lease, state, controls) = match &place {
            Place::Local { lease } => {
                let state = StateFile::beside(lease);
                if !lease.exists() && !state.path().exists() {
                    return Err(Error::NoLease {
                        lease: lease.clone(),
                        state: state.path().to_path_buf(),
                    });
                }
                (
                    AnyLeaseStore::File(FileStore::reader(lease.clone())),
                    Ledger::new(state, String::new()),
                    controls_store(&place, self.request_timeout)?,
                )
            }
            Place::Kube {
                namespace,
                name,
                config,
            } => {
                let params = Params::new(namespace.clone(), name.clone(), self.request_timeout);
                let lease = KubeStore::new((**config).clone(), params)?;
                let state =
                    StateConfigMap::new((**config).clone(), namespace, name, self.request_timeout)
                        .map_err(backend::Error::from)?;
                (
                    AnyLeaseStore::Kube(lease),
                    Ledger::new(state, String::new()),
                    controls_store(&place, self.request_timeout)?,
                )
            }
        };
        let jobs = self.read_jobs(&place, needs).await?;
        Ok(Opened {
            flags: self.flags(),
            place,
            lease,
            ledger: state,
            controls,
            jobs,
            request_timeout: self.request_timeout,
        })
    }

    /// The lease's place: a checked name and namespace, and a client configuration, on Kubernetes.
    async fn place(&self) -> Result<Place, Error> {
        if let Some(lease) = &self.lease_file {
            return Ok(Place::Local {
                lease: lease.clone(),
            });
        }
        backend::check_lease_name(&self.lease_name)?;
        let config = self.kube_config().await?;
        let namespace = backend::resolve_namespace(self.lease_namespace.clone(), &config)?;
        Ok(Place::Kube {
            namespace,
            name: self.lease_name.clone(),
            config: Box::new(config),
        })
    }

    async fn kube_config(&self) -> Result<kube::Config, Error> {
        if let Some(namespace) = &self.lease_namespace {
            // A bad name given is a usage error whatever the client configuration.
            names::check_namespace(namespace).map_err(|why| backend::Error::InvalidName {
                flag: "--lease-namespace",
                value: namespace.clone(),
                why,
            })?;
        }
        Ok(kubernetes::infer_config()
            .await
            .map_err(backend::Error::from)?)
    }

    /// The jobs: `--jobs FILE`, `--jobs-configmap NAME[/KEY]`, or on Kubernetes the default ConfigMap.
    async fn read_jobs(&self, place: &Place, needs: NeedsJobs) -> Result<Option<Jobs>, Error> {
        let (value, defaulted) = match (&self.jobs, place, needs) {
            (Some(JobsSource::File(path)), _, _) => return self.read_jobs_file(path).map(Some),
            (Some(JobsSource::ConfigMap(value)), _, _) => (value.clone(), false),
            (None, Place::Kube { .. }, _) => (DEFAULT_JOBS_CONFIGMAP.to_owned(), true),
            (None, Place::Local { .. }, NeedsJobs::Required { command, why }) => {
                return Err(Error::JobsRequired { command, why })
            }
            (None, Place::Local { .. }, NeedsJobs::Optional) => return Ok(None),
        };
        let (config, namespace) = match place {
            Place::Kube {
                namespace, config, ..
            } => ((**config).clone(), namespace.clone()),
            Place::Local { .. } => {
                let config = self.kube_config().await?;
                let namespace = backend::resolve_namespace(self.lease_namespace.clone(), &config)?;
                (config, namespace)
            }
        };
        let read = read_jobs_configmap(&value, config, namespace, self.request_timeout).await;
        match read {
            Ok(jobs) => Ok(Some(jobs)),
            // The default ConfigMap is a guess: a command that can do without goes on.
            Err(_) if defaulted && needs == NeedsJobs::Optional => Ok(None),
            // Where the ConfigMap is wrong (missing, forbidden), say that it is only the default.
            Err(Error::JobsConfigMap { source, .. }) => Err(Error::JobsConfigMap {
                defaulted: defaulted && !source.is_transient(),
                source,
            }),
            Err(e) => Err(e),
        }
    }

    fn read_jobs_file(&self, path: &Path) -> Result<Jobs, Error> {
        let checked = config::check_source(
            path,
            DEFAULT_CONFIG_MAP_KEY,
            &any_grace(),
            self.max_file_size,
        )?;
        let origin = config::origin_of(path);
        let sets: Vec<&JobSet> = checked.source.job_sets().collect();
        match sets.as_slice() {
            [set] => Ok(Jobs {
                set: (*set).clone(),
                origin,
            }),
            sets => Err(Error::SeveralJobSets {
                origin,
                count: sets.len(),
            }),
        }
    }

    /// The flags that name this lease and these jobs, as a command line would repeat them: what is not
    /// the default.
    fn flags(&self) -> String {
        let mut flags = Vec::new();
        match &self.lease_file {
            Some(lease) => flags.push(format!(
                "--lease-file {}",
                shell_quote(&lease.display().to_string())
            )),
            None => {
                if self.lease_name != DEFAULT_LEASE_NAME {
                    flags.push(format!("--lease-name {}", shell_quote(&self.lease_name)));
                }
            }
        }
        if let Some(namespace) = &self.lease_namespace {
            flags.push(format!("--lease-namespace {}", shell_quote(namespace)));
        }
        match &self.jobs {
            Some(JobsSource::File(path)) => flags.push(format!(
                "--jobs {}",
                shell_quote(&path.display().to_string())
            )),
            Some(JobsSource::ConfigMap(value)) => {
                flags.push(format!("--jobs-configmap {}", shell_quote(value)));
            }
            None => {}
        }
        flags.join(" ")
    }
}

/// An operator command, as `main.rs` parsed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `trigger JOB [--wait [--timeout DUR]]`.
    Trigger {
        /// The job.
        job: String,
        /// `--wait`'s limit, if waiting.
        wait: Option<Duration>,
    },
    /// `suspend JOB [--note TEXT]`.
    Suspend {
        /// The job.
        job: String,
        /// `--note`.
        note: Option<String>,
    },
    /// `resume JOB`.
    Resume {
        /// The job.
        job: String,
    },
    /// `backfill JOB --from T --to T [--wait [--timeout DUR]]`.
    Backfill {
        /// The job.
        job: String,
        /// `--from`, as given.
        from: String,
        /// `--to`, as given.
        to: String,
        /// `--wait`'s limit, if waiting.
        wait: Option<Duration>,
    },
    /// `status [JOB] [-o json]`.
    Status {
        /// Only this job.
        job: Option<String>,
        /// `-o`.
        format: view::Format,
    },
    /// `history JOB [-n N] [-o json]`.
    History {
        /// The job.
        job: String,
        /// `-n`: at most this many runs.
        limit: usize,
        /// `-o`.
        format: view::Format,
    },
}

/// Runs `command` on the lease and jobs `target` names, printing to `out`.
pub async fn execute(
    target: &Target,
    command: Command,
    out: &mut dyn io::Write,
) -> Result<(), Error> {
    let needs = |command, why| NeedsJobs::Required { command, why };
    match command {
        Command::Trigger { job, wait } => {
            let opened = target
                .open(needs("trigger", "to check the job's name"))
                .await?;
            request::trigger(&opened, &job, wait, out).await
        }
        Command::Suspend { job, note } => {
            let opened = target
                .open(needs("suspend", "to check the job's name"))
                .await?;
            request::suspend(&opened, &job, note, out).await
        }
        Command::Resume { job } => {
            let opened = target.open(NeedsJobs::Optional).await?;
            request::resume(&opened, &job, out).await
        }
        Command::Backfill {
            job,
            from,
            to,
            wait,
        } => {
            let opened = target
                .open(needs("backfill", "to count the job's slots in the range"))
                .await?;
            request::backfill(&opened, &job, &from, &to, wait, out).await
        }
        Command::Status { job, format } => {
            let opened = target
                .open(needs("status", "their schedules and next slots"))
                .await?;
            view::status(&opened, job.as_deref(), format, out).await
        }
        Command::History { job, limit, format } => {
            let opened = target.open(NeedsJobs::Optional).await?;
            view::history(&opened, &job, limit, format, out).await
        }
    }
}

/// Jobs are read to look at their schedules: whether their grace fits some lease timings is `validate`'s
/// business.
fn any_grace() -> LoadOptions {
    LoadOptions {
        max_termination_grace: Duration::MAX,
    }
}

/// Reads the jobs from the ConfigMap `value` (`NAME[/KEY]`) in `namespace`: one GET, bounded by `timeout`.
async fn read_jobs_configmap(
    value: &str,
    config: kube::Config,
    namespace: String,
    timeout: Duration,
) -> Result<Jobs, Error> {
    let jobs_error = |source| Error::JobsConfigMap {
        source,
        defaulted: false,
    };
    let target = ConfigMapRef::parse(value, namespace).map_err(jobs_error)?;
    let client = kubernetes::client(config, Some(timeout)).map_err(backend::Error::from)?;
    let params = jobs_configmap::Params {
        request_timeout: timeout,
        ..jobs_configmap::Params::default()
    };
    let snapshot = jobs_configmap::read(&client, &target, &params)
        .await
        .map_err(jobs_error)?;
    let text = snapshot.text.map_err(|why| backend::Error::Unreadable {
        origin: snapshot.origin.clone(),
        why,
    })?;
    let set = config::parse_str(&text, &snapshot.origin, &any_grace())?;
    Ok(Jobs {
        set,
        origin: snapshot.origin,
    })
}

/// The controls store beside the lease: the file `LEASE.controls`, or the ConfigMap `NAME-controls`.
fn controls_store(
    place: &Place,
    request_timeout: Duration,
) -> Result<Box<dyn controls::Store>, Error> {
    Ok(match place {
        Place::Local { lease } => Box::new(ControlsFile::beside(lease)),
        Place::Kube {
            namespace,
            name,
            config,
        } => Box::new(
            ControlsConfigMap::new((**config).clone(), namespace, name, request_timeout)
                .map_err(|e| Error::Controls(Box::new(e)))?,
        ),
    })
}

// === impl Opened ===

impl Opened {
    /// The jobs, which the command cannot do without (on a lease file, [`Target::open`] already refused
    /// to open without them).
    pub fn jobs(&self) -> Result<&Jobs, Error> {
        self.jobs.as_ref().ok_or(Error::JobsRequired {
            command: "this command",
            why: "to check the job's name",
        })
    }

    /// The lease record, if there is one.
    pub async fn lease_record(&self) -> Result<Option<LeaseRecord>, Error> {
        Ok(self.lease.get().await?.map(|versioned| versioned.record))
    }

    /// The run state as stored now (empty if there is none yet).
    pub async fn run_state(&self) -> Result<run_state::StateRecord, Error> {
        Ok(self.ledger.refresh().await?)
    }

    /// The controls as stored now.
    pub async fn read_controls(&self) -> Result<controls::Controls, Error> {
        Ok(self
            .controls
            .load()
            .await
            .map_err(Error::Controls)?
            .controls)
    }

    /// The lease, for messages: `lease file PATH` or `Lease NS/NAME`.
    pub fn describe_lease(&self) -> String {
        match &self.place {
            Place::Local { lease } => format!("lease file {}", lease.display()),
            Place::Kube {
                namespace, name, ..
            } => format!("Lease {namespace}/{name}"),
        }
    }

    /// Where the output of a run by the replica `identity` is: its log, or for an `executor: kubernetes`
    /// job (as the jobs read say), the logs of the Job of `slot` (of every kept Job of the job without
    /// one).
    pub fn output_hint(
        &self,
        identity: &str,
        job: &str,
        token: u64,
        since: DateTime<Utc>,
        slot: Option<DateTime<Utc>>,
    ) -> String {
        let kubernetes = self
            .jobs
            .as_ref()
            .and_then(|jobs| jobs.set.get(job))
            .is_some_and(|job| job.kubernetes.is_some());
        if let (true, Place::Kube { namespace, .. }) = (kubernetes, &self.place) {
            let kept =
                "while the Job is kept: see successfulJobsHistoryLimit and failedJobsHistoryLimit";
            return match slot {
                Some(slot) => format!(
                    "the logs of its Kubernetes Job: kubectl logs -n {namespace} job/{} ({kept})",
                    config::kubernetes_job_name(job, slot)
                ),
                None => format!(
                    "the logs of its Kubernetes Jobs: kubectl get jobs -n {namespace} -l \
                     {}={job}, then kubectl logs -n {namespace} job/NAME ({kept})",
                    crate::kubernetes::batch::LABEL_JOB
                ),
            };
        }
        let lines = format!("the lines with job={job} fencing_token={token}");
        match &self.place {
            Place::Local { .. } => {
                format!("in the log (stderr) of the replica {identity}, {lines}")
            }
            Place::Kube { namespace, .. } => format!(
                "in the log of {identity}, {lines}: kubectl logs -n {namespace} {identity} --since-time={}",
                since.to_rfc3339_opts(SecondsFormat::Secs, true)
            ),
        }
    }

    /// Who files a request: the user the API server authenticates (a SelfSubjectReview), else (and on a
    /// lease file) `USER@HOST`.
    pub async fn who(&self) -> String {
        if let Place::Kube { config, .. } = &self.place {
            if let Some(user) = self_subject(config, self.request_timeout).await {
                return user;
            }
        }
        local_user()
    }
}

/// The user the API server authenticates us as (`POST
/// /apis/authentication.k8s.io/v1/selfsubjectreviews`); `None` if it cannot say (an older API server,
/// a timeout, no permission).
async fn self_subject(config: &kube::Config, timeout: Duration) -> Option<String> {
    use k8s_openapi::api::authentication::v1::SelfSubjectReview;
    let client = kubernetes::client(config.clone(), Some(timeout)).ok()?;
    let reviews: kube::Api<SelfSubjectReview> = kube::Api::all(client);
    let review = kubernetes::bounded_request(
        timeout,
        reviews.create(
            &kube::api::PostParams::default(),
            &SelfSubjectReview::default(),
        ),
    )
    .await
    .ok()?;
    review
        .status?
        .user_info?
        .username
        .filter(|user| !user.is_empty())
}

/// `USER@HOST`: `$USER` (else `LOGNAME`, else `uidN`) at the hostname.
pub fn local_user() -> String {
    let user = ["USER", "LOGNAME"]
        .iter()
        .find_map(|name| std::env::var(name).ok().filter(|v| !v.is_empty()))
        .unwrap_or_else(|| {
            use std::os::unix::fs::MetadataExt as _;
            std::fs::metadata("/proc/self").map_or_else(
                |_| "unknown".to_owned(),
                |meta| format!("uid{}", meta.uid()),
            )
        });
    let host = nix::unistd::gethostname()
        .ok()
        .map(|host| host.to_string_lossy().into_owned())
        .filter(|host| !host.is_empty())
        .unwrap_or_else(|| "localhost".to_owned());
    format!("{user}@{host}")
}

/// `text` as one shell word: as it is if it needs no quoting, else in single quotes.
pub fn shell_quote(text: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "_./:=@%+-,".contains(c);
    if !text.is_empty() && text.chars().all(plain) {
        text.to_owned()
    } else {
        format!("'{}'", text.replace('\'', r"'\''"))
    }
}

/// An instant as the commands print it: RFC 3339 to the second in `zone` (`Z` for UTC).
pub fn format_time(at: DateTime<Utc>, zone: Tz) -> String {
    at.with_timezone(&zone)
        .to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// A duration as the commands print it: `340ms`, `12.3s`, `2m 3s`, `1h 2m 3s`.
pub fn format_duration(duration: chrono::Duration) -> String {
    let duration = duration.to_std().unwrap_or_default();
    if duration < Duration::from_secs(1) {
        format!("{}ms", duration.as_millis())
    } else if duration < Duration::from_secs(60) {
        let tenths = (duration.as_millis() + 50) / 100;
        if tenths % 10 == 0 {
            format!("{}s", tenths / 10)
        } else {
            format!("{}.{}s", tenths / 10, tenths % 10)
        }
    } else {
        humantime::format_duration(Duration::from_secs(duration.as_secs())).to_string()
    }
}

/// A line of output; a reader that stopped reading is not an error ([`Error::Output`] otherwise).
pub(crate) fn say(out: &mut dyn io::Write, line: &str) -> Result<(), Error> {
    match out
        .write_all(line.as_bytes())
        .and_then(|()| out.write_all(b"\n"))
        .and_then(|()| out.flush())
    {
        Err(e) if e.kind() != io::ErrorKind::BrokenPipe => Err(Error::Output(e)),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod format_tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn durations_read_at_a_glance() {
        let ms = chrono::Duration::milliseconds;
        assert_eq!(format_duration(ms(340)), "340ms");
        assert_eq!(format_duration(ms(1_204)), "1.2s");
        assert_eq!(format_duration(ms(12_000)), "12s");
        assert_eq!(format_duration(ms(59_960)), "60s");
        assert_eq!(format_duration(ms(123_400)), "2m 3s");
        assert_eq!(format_duration(ms(3_723_000)), "1h 2m 3s");
        assert_eq!(format_duration(ms(-5)), "0ms");
    }

    #[test]
    fn times_are_printed_in_the_jobs_zone_to_the_second() {
        let at = Utc
            .with_ymd_and_hms(2026, 11, 21, 2, 0, 0)
            .single()
            .expect("valid")
            + chrono::Duration::milliseconds(250);
        assert_eq!(format_time(at, Tz::UTC), "2026-11-21T02:00:00Z");
        assert_eq!(
            format_time(at, chrono_tz::Europe::Berlin),
            "2026-11-21T03:00:00+01:00"
        );
    }

    #[test]
    fn shell_words_are_quoted_only_when_they_need_it() {
        assert_eq!(shell_quote("/tmp/x.lease"), "/tmp/x.lease");
        assert_eq!(shell_quote("my dir/x"), "'my dir/x'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
    }

    #[test]
    fn the_flags_repeat_what_is_not_the_default() {
        let mut target = Target {
            lease_file: None,
            lease_name: DEFAULT_LEASE_NAME.to_owned(),
            lease_namespace: None,
            jobs: None,
            max_file_size: 1 << 20,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
        };
        assert_eq!(target.flags(), "");
        target.lease_name = "batch".to_owned();
        target.lease_namespace = Some("ops".to_owned());
        target.jobs = Some(JobsSource::ConfigMap("cron/jobs.yaml".to_owned()));
        assert_eq!(
            target.flags(),
            "--lease-name batch --lease-namespace ops --jobs-configmap cron/jobs.yaml"
        );
        target.lease_file = Some(PathBuf::from("/tmp/my lease"));
        target.lease_namespace = None;
        target.jobs = Some(JobsSource::File(PathBuf::from("jobs.yaml")));
        assert_eq!(
            target.flags(),
            "--lease-file '/tmp/my lease' --jobs jobs.yaml"
        );
    }
}
