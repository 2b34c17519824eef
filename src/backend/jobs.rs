//! The jobs at start, and the feed that keeps them current: the jobs file (watched through inotify) or the
//! jobs ConfigMap (watched through the API), each feeding a [`Reloader`].

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::{Error, Startup};
use crate::config::{self, JobSet, LoadOptions};
use crate::event::ConfigReload;
use crate::kubernetes::jobs_configmap::{self, ConfigMapRef};
use crate::kubernetes::run_state as kube_state;
use crate::local::jobs_file;
use crate::observe::Observers;
use crate::reload::{self, Reloader, Snapshot};

/// Where `run` reads the jobs from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobsSource {
    /// `--jobs FILE`: a file, watched for changes.
    File(PathBuf),
    /// `--jobs-configmap NAME[/KEY]`: a ConfigMap in the lease namespace, watched through the API.
    ConfigMap(String),
}

impl JobsSource {
    /// "the jobs file PATH" or "the jobs ConfigMap NAME[/KEY]", for the log.
    pub fn describe(&self) -> String {
        match self {
            JobsSource::File(path) => format!("the jobs file {}", path.display()),
            JobsSource::ConfigMap(value) => format!("the jobs ConfigMap {value}"),
        }
    }
}

/// The jobs in force at start, and where to watch for new versions.
#[derive(Debug)]
pub struct Jobs {
    /// The jobs in force at start.
    pub set: JobSet,
    /// The text they were read from.
    pub snapshot: Snapshot,
    /// What every new version is checked against.
    pub load: LoadOptions,
    feed: Feed,
    /// Refuse job sets whose run state may not fit in its ConfigMap (at start and on every reload).
    check_state_capacity: bool,
    /// Refuse job sets with an `executor: kubernetes` job (a lease file: no cluster to create Jobs in).
    refuse_kubernetes_jobs: bool,
}

/// What keeps the jobs current.
enum Feed {
    /// The jobs file, with an inotify watch and a periodic re-read.
    File {
        /// The file.
        path: PathBuf,
        /// The largest version read.
        max_size: u64,
    },
    /// The ConfigMap, watched through the API.
    ConfigMap {
        /// Without a retry layer or read timeout.
        client: kube::Client,
        /// The ConfigMap and key.
        target: ConfigMapRef,
        /// Timeouts and intervals.
        params: Box<jobs_configmap::Params>,
    },
}

impl std::fmt::Debug for Feed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Feed::File { path, max_size } => f
                .debug_struct("File")
                .field("path", path)
                .field("max_size", max_size)
                .finish(),
            Feed::ConfigMap { target, .. } => f
                .debug_struct("ConfigMap")
                .field("target", target)
                .finish_non_exhaustive(),
        }
    }
}

// === impl Jobs ===

impl Jobs {
    /// Loads the jobs file (at most `max_size` bytes): unreadable, too large or invalid is a
    /// configuration error (exit 2).
    pub(crate) async fn from_file(
        path: &Path,
        load: LoadOptions,
        max_size: u64,
    ) -> Result<Jobs, Error> {
        let owned = path.to_path_buf();
        let text = tokio::task::spawn_blocking(move || config::read_text(&owned, max_size))
            .await
            .map_err(|e| Error::Internal(format!("reading the jobs file: {e}")))??;
        let snapshot = Snapshot {
            origin: path.display().to_string(),
            text: Ok(text),
        };
        Jobs::load(
            snapshot,
            load,
            Feed::File {
                path: path.to_path_buf(),
                max_size,
            },
        )
    }

    /// Reads the ConfigMap `target` through `client`: checks the RBAC it needs, then loads it. A missing
    /// ConfigMap or key, a denied verb or invalid jobs exit 2; an API that stays unreachable past the
    /// start-up timeout 1.
    pub(crate) async fn from_configmap(
        target: ConfigMapRef,
        client: kube::Client,
        load: LoadOptions,
        startup: &mut Startup,
    ) -> Result<Jobs, Error> {
        let params = jobs_configmap::Params::default();
        jobs_configmap::check_access(&client, &target, &params).await?;
        let snapshot = startup
            .retry("reading --jobs-configmap", || async {
                Ok(jobs_configmap::read(&client, &target, &params).await?)
            })
            .await?;
        Jobs::load(
            snapshot,
            load,
            Feed::ConfigMap {
                client,
                target,
                params: Box::new(params),
            },
        )
    }

    fn load(snapshot: Snapshot, load: LoadOptions, feed: Feed) -> Result<Jobs, Error> {
        let set = match &snapshot.text {
            Ok(text) => config::parse_str(text, &snapshot.origin, &load)?,
            Err(why) => {
                return Err(Error::Unreadable {
                    origin: snapshot.origin.clone(),
                    why: why.clone(),
                })
            }
        };
        Ok(Jobs {
            set,
            snapshot,
            load,
            feed,
            check_state_capacity: false,
            refuse_kubernetes_jobs: false,
        })
    }

    /// For a lease file: refuses these jobs now if one has `executor: kubernetes` (its Jobs need the
    /// Kubernetes backend), and every reload that has one.
    pub(crate) fn refusing_kubernetes_jobs(mut self) -> Result<Jobs, Error> {
        if let Err(why) = without_kubernetes_jobs(&self.set) {
            return Err(Error::Unreadable {
                origin: self.snapshot.origin.clone(),
                why,
            });
        }
        self.refuse_kubernetes_jobs = true;
        Ok(self)
    }

    /// For a run state in a ConfigMap: refuses these jobs now if their run state may not fit, and every
    /// reload that would not.
    pub(crate) fn checking_state_capacity(mut self) -> Result<Jobs, Error> {
        if let Err(source) = state_capacity(&self.set) {
            return Err(Error::StateCapacity {
                origin: self.snapshot.origin.clone(),
                source,
            });
        }
        self.check_state_capacity = true;
        Ok(self)
    }

    /// The load at start, as reported to the observers.
    pub fn initial_report(&self) -> ConfigReload {
        ConfigReload::Applied {
            origin: self.snapshot.origin.clone(),
            hash: self
                .snapshot
                .text
                .as_deref()
                .map_or(0, reload::content_hash),
            jobs: self.set.jobs.len(),
            initial: true,
        }
    }

    /// Starts watching the source (re-reading it whenever `reread` asks) and reloading, until `stop`;
    /// returns the jobs in force as they change.
    pub fn spawn(
        self,
        observers: Observers,
        reread: reload::Reread,
        stop: &CancellationToken,
    ) -> watch::Receiver<Arc<JobSet>> {
        let (snapshots_tx, snapshots) = watch::channel(self.snapshot);
        let (jobs_tx, jobs) = watch::channel(Arc::new(self.set));
        match self.feed {
            Feed::File { path, max_size } => {
                // A version that fails right after a change may be a save still being written: the
                // source reads it once more before it is reported.
                let load = self.load;
                let check_capacity = self.check_state_capacity;
                let refuse_kubernetes = self.refuse_kubernetes_jobs;
                let settles = jobs_file::Options {
                    max_size,
                    is_valid: Some(Arc::new(move |text: &str| {
                        config::parse_str(text, "", &load).is_ok_and(|set| {
                            (!refuse_kubernetes || without_kubernetes_jobs(&set).is_ok())
                                && (!check_capacity || state_capacity(&set).is_ok())
                        })
                    })),
                };
                tokio::spawn(jobs_file::watch_with(
                    path,
                    snapshots_tx,
                    reread,
                    stop.clone(),
                    settles,
                ));
            }
            Feed::ConfigMap {
                client,
                target,
                params,
            } => {
                tokio::spawn(jobs_configmap::watch(
                    client,
                    target,
                    *params,
                    snapshots_tx,
                    reread,
                    stop.clone(),
                ));
            }
        }
        let check_capacity = self.check_state_capacity;
        let refuse_kubernetes = self.refuse_kubernetes_jobs;
        let reloader = Reloader::new(self.load, jobs_tx, observers).with_check(Box::new(
            move |set: &JobSet| {
                if refuse_kubernetes {
                    without_kubernetes_jobs(set)?;
                }
                if check_capacity {
                    state_capacity(set).map_err(|e| e.to_string())?;
                }
                Ok(())
            },
        ));
        tokio::spawn(reloader.run(snapshots, stop.clone()));
        jobs
    }
}

/// `Err` naming the first job with `executor: kubernetes`, which a lease file cannot run.
pub(crate) fn without_kubernetes_jobs(set: &JobSet) -> Result<(), String> {
    match set.kubernetes_job() {
        Some(job) => Err(format!(
            "job {}: executor: kubernetes creates Kubernetes Jobs, which needs the Kubernetes backend: \
             elect through a Lease (--lease-name), not a lease file",
            job.name
        )),
        None => Ok(()),
    }
}

/// `Err` if the run state of `set` may not fit in its ConfigMap.
fn state_capacity(set: &JobSet) -> Result<(), kube_state::CapacityError> {
    let names = set.jobs.iter().map(|job| job.name.as_str());
    kube_state::capacity_error(names).map_or(Ok(()), Err)
}
