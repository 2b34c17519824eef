//! `executor: kubernetes`: the batch/v1 Jobs that run a job's slots, their requests, and a cache of them
//! kept by a watch.
//!
//! - [`manifest`] makes the Job of one run from the job's `jobTemplate`: its name is
//!   [`kubernetes_job_name`] of the job and the slot (so a second leader creating the same slot gets
//!   `AlreadyExists`), its labels name the lease and the job (the watch selects by them), its annotations
//!   the slot, the fencing token, the identity and why it runs, and every container gets the
//!   `LEASECRON_*` variables.
//! - [`Cluster`] makes the requests (create, delete, a failed pod's exit code), each bounded by the request
//!   timeout, and keeps every Job of this lease in a cache fed by a watch by label (list, then watch; a
//!   restart relists; a watch quiet for too long is restarted), which the runner consults for the
//!   concurrency policy and for adoption, and which wakes whoever follows a Job.
//! - [`state_of`] reads a Job's status as leasecron's outcome: `Complete` succeeded, `Failed` with
//!   `DeadlineExceeded` timed out, any other `Failed` failed. Until one of those two conditions is true
//!   (the Job controller adds them only once every pod has terminated) the Job is active.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use k8s_openapi::api::batch::v1::{Job as KubeJob, JobSpec};
use k8s_openapi::api::core::v1::{EnvVar, Pod, PodSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{Api, DeleteParams, ListParams, PostParams, PropagationPolicy};
use kube::runtime::watcher;
use tokio::sync::futures::Notified;
use tokio::sync::{watch, Notify};
use tokio_util::sync::CancellationToken;

use crate::config::{kubernetes_job_name, Job, KubernetesJob};
use crate::kubernetes::{self, bounded_request, CONFLICT, FORBIDDEN, NOT_FOUND};
use crate::run_state::{Cause, Origin};
use crate::runner::{leasecron_env, RunEnv};
use crate::term::FencingToken;

/// Label on every Job leasecron creates (and its pods): `leasecron`.
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// Label: the Lease whose leader created the Job; the watch selects by it, so two installations in one
/// namespace never see each other's Jobs.
pub const LABEL_LEASE: &str = "leasecron.io/lease";
/// Label: the job (a name of the jobs file).
pub const LABEL_JOB: &str = "leasecron.io/job";
/// Annotation: the slot, RFC 3339 (as `LEASECRON_SCHEDULED_TIME`).
pub const ANNOTATION_SCHEDULED: &str = "leasecron.io/scheduled-time";
/// Annotation: the fencing token of the term that created the Job.
pub const ANNOTATION_FENCING_TOKEN: &str = "leasecron.io/fencing-token";
/// Annotation: the identity of the replica that created the Job.
pub const ANNOTATION_IDENTITY: &str = "leasecron.io/identity";
/// Annotation: why the slot ran (`schedule`, `catch_up`, `retry`, `trigger`, `backfill`).
pub const ANNOTATION_CAUSE: &str = "leasecron.io/cause";
/// Annotation: the operator's request a trigger or backfill ran for.
pub const ANNOTATION_REQUEST_ID: &str = "leasecron.io/request-id";
/// Annotation: when that request was made.
pub const ANNOTATION_REQUESTED_AT: &str = "leasecron.io/requested-at";
/// The environment variable that names the Job in its containers (beside the other `LEASECRON_*`).
pub const ENV_KUBERNETES_JOB: &str = "LEASECRON_KUBERNETES_JOB";
/// The label the Job controller puts on a Job's pods (Kubernetes 1.27 and later).
const POD_JOB_NAME_LABEL: &str = "batch.kubernetes.io/job-name";
/// How long the watch may deliver nothing before it is restarted: the server ends each watch request
/// after [`WATCH_TIMEOUT_SECONDS`], so a longer silence means a dead connection.
const WATCH_IDLE_LIMIT: Duration = Duration::from_secs(WATCH_TIMEOUT_SECONDS as u64 + 30);
/// `timeoutSeconds` of each watch request.
const WATCH_TIMEOUT_SECONDS: u32 = 290;
/// The first and the longest wait before the watch is restarted after a failure.
const WATCH_BACKOFF: (Duration, Duration) = (Duration::from_millis(500), Duration::from_secs(30));

/// A failed request about a Job.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The Job exists: another leader (or this one, earlier) created this slot's Job.
    #[error("job {namespace}/{name} already exists")]
    AlreadyExists {
        /// The namespace.
        namespace: String,
        /// The Job's name.
        name: String,
    },
    /// RBAC refused the request.
    #[error(
        "not allowed to {verb} jobs.batch in namespace {namespace}: {message} (grant {verb} on \
         jobs.batch in {namespace} to leasecron's service account: apply the component \
         deploy/kubernetes-jobs)"
    )]
    Forbidden {
        /// The verb refused.
        verb: &'static str,
        /// The namespace.
        namespace: String,
        /// The API server's message.
        message: String,
    },
    /// The API server refused the request for good (invalid, admission, quota): retrying the same request
    /// will not help.
    #[error("the API server refused to {verb} job {namespace}/{name}: {detail}")]
    Refused {
        /// The verb.
        verb: &'static str,
        /// The namespace.
        namespace: String,
        /// The Job's name.
        name: String,
        /// The status, and the API server's message.
        detail: String,
    },
    /// The request failed in a way a later request may not (no answer in time, no connection, 5xx).
    #[error("cannot {verb} job {namespace}/{name}: {detail}")]
    Unavailable {
        /// The verb.
        verb: &'static str,
        /// The namespace.
        namespace: String,
        /// The Job's name.
        name: String,
        /// Why.
        detail: String,
    },
}

impl Error {
    /// True for a missing RBAC rule.
    pub fn is_forbidden(&self) -> bool {
        matches!(self, Error::Forbidden { .. })
    }
}

/// Where the Jobs are, and how long a request may take.
#[derive(Debug, Clone)]
pub struct Params {
    /// The namespace (the Lease's).
    pub namespace: String,
    /// The Lease's name: [`LABEL_LEASE`] of every Job.
    pub lease: String,
    /// The limit of every request but the watch.
    pub request_timeout: Duration,
}

/// One run, as its Job names it.
#[derive(Debug, Clone)]
pub struct RunIdentity<'a> {
    /// The slot.
    pub scheduled: DateTime<Utc>,
    /// The term's fencing token.
    pub fencing_token: FencingToken,
    /// The replica's identity.
    pub identity: &'a str,
    /// Why it runs.
    pub origin: &'a Origin,
}

/// The Job of one run of `job` (an `executor: kubernetes` job whose template is `kubernetes`).
///
/// The template's own labels and annotations are kept; leasecron's are added (they win over a template's
/// value for the same key, which validation cannot see). `timeout` becomes `activeDeadlineSeconds`
/// (rounded up to a whole second) and `retries` `backoffLimit`, where the template left them unset.
pub fn manifest(
    params: &Params,
    job: &Job,
    kubernetes: &KubernetesJob,
    run: &RunIdentity<'_>,
) -> KubeJob {
    let name = kubernetes_job_name(&job.name, run.scheduled);
    let scheduled = crate::runner::format_scheduled(run.scheduled);
    let labels = BTreeMap::from([
        (LABEL_MANAGED_BY.to_owned(), "leasecron".to_owned()),
        (LABEL_LEASE.to_owned(), params.lease.clone()),
        (LABEL_JOB.to_owned(), job.name.clone()),
    ]);
    let mut annotations = BTreeMap::from([
        (ANNOTATION_SCHEDULED.to_owned(), scheduled.clone()),
        (
            ANNOTATION_FENCING_TOKEN.to_owned(),
            run.fencing_token.0.to_string(),
        ),
        (ANNOTATION_IDENTITY.to_owned(), run.identity.to_owned()),
        (
            ANNOTATION_CAUSE.to_owned(),
            run.origin.cause.as_str().to_owned(),
        ),
    ]);
    if let Some(request) = &run.origin.request {
        annotations.insert(ANNOTATION_REQUEST_ID.to_owned(), request.id.clone());
        annotations.insert(
            ANNOTATION_REQUESTED_AT.to_owned(),
            crate::runner::format_scheduled(request.requested_at),
        );
    }
    let mut spec: JobSpec = kubernetes.spec.clone();
    if spec.active_deadline_seconds.is_none() {
        spec.active_deadline_seconds = job.timeout.map(|timeout| {
            let seconds = timeout.as_secs() + u64::from(timeout.subsec_nanos() > 0);
            i64::try_from(seconds.max(1)).unwrap_or(i64::MAX)
        });
    }
    if spec.backoff_limit.is_none() {
        spec.backoff_limit = Some(i32::try_from(job.retries).unwrap_or(i32::MAX));
    }
    // A process's variables, but `LEASECRON_ATTEMPT`: the Job controller retries the pods.
    let process_env = leasecron_env(
        &job.name,
        &RunEnv {
            scheduled: run.scheduled,
            identity: run.identity,
            fencing_token: run.fencing_token,
            attempt: 1,
        },
    );
    let env: Vec<(&str, String)> = process_env
        .into_iter()
        .filter(|(name, _)| *name != "LEASECRON_ATTEMPT")
        .chain([(ENV_KUBERNETES_JOB, name.clone())])
        .collect();
    let template_meta = spec
        .template
        .metadata
        .get_or_insert_with(ObjectMeta::default);
    template_meta
        .labels
        .get_or_insert_with(BTreeMap::new)
        .extend(labels.clone());
    if let Some(pod) = spec.template.spec.as_mut() {
        add_env(pod, &env);
    }
    KubeJob {
        metadata: ObjectMeta {
            name: Some(name),
            labels: Some(labels),
            annotations: Some(annotations),
            ..ObjectMeta::default()
        },
        spec: Some(spec),
        status: None,
    }
}

/// Puts `env` into every container and init container of `pod`, replacing a variable of the same name.
fn add_env(pod: &mut PodSpec, env: &[(&str, String)]) {
    let containers = pod
        .containers
        .iter_mut()
        .chain(pod.init_containers.iter_mut().flatten());
    for container in containers {
        let vars = container.env.get_or_insert_with(Vec::new);
        vars.retain(|var| !env.iter().any(|(name, _)| var.name == *name));
        vars.extend(env.iter().map(|(name, value)| EnvVar {
            name: (*name).to_owned(),
            value: Some(value.clone()),
            value_from: None,
        }));
    }
}

/// Where a Job stands, as leasecron's outcomes name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobState {
    /// No terminal condition yet (it may be being deleted: see [`is_deleting`]).
    Active,
    /// `Complete`.
    Succeeded,
    /// `Failed` with reason `DeadlineExceeded`: `activeDeadlineSeconds` (the job's `timeout`) passed.
    DeadlineExceeded,
    /// `Failed` for any other reason (`BackoffLimitExceeded`, a pod failure policy, ...).
    Failed {
        /// The condition's reason.
        reason: String,
        /// The condition's message.
        message: String,
    },
}

impl JobState {
    /// True once the Job has a terminal condition.
    pub fn is_finished(&self) -> bool {
        !matches!(self, JobState::Active)
    }
}

/// Reads the terminal condition of `job`'s status.
pub fn state_of(job: &KubeJob) -> JobState {
    let conditions = job
        .status
        .as_ref()
        .and_then(|status| status.conditions.as_ref());
    for condition in conditions.into_iter().flatten() {
        if condition.status != "True" {
            continue;
        }
        match condition.type_.as_str() {
            "Complete" => return JobState::Succeeded,
            "Failed" => {
                let reason = condition.reason.clone().unwrap_or_default();
                if reason == "DeadlineExceeded" {
                    return JobState::DeadlineExceeded;
                }
                return JobState::Failed {
                    reason,
                    message: condition.message.clone().unwrap_or_default(),
                };
            }
            _ => {}
        }
    }
    JobState::Active
}

/// True if `job` is being deleted (a foreground deletion waits for its pods).
pub fn is_deleting(job: &KubeJob) -> bool {
    job.metadata.deletion_timestamp.is_some()
}

/// When `job` finished (`status.completionTime`, else its terminal condition's time), if it has.
pub fn finished_at(job: &KubeJob) -> Option<DateTime<Utc>> {
    let status = job.status.as_ref()?;
    if let Some(time) = &status.completion_time {
        return from_time(time);
    }
    status
        .conditions
        .iter()
        .flatten()
        .filter(|c| c.status == "True" && (c.type_ == "Complete" || c.type_ == "Failed"))
        .find_map(|c| c.last_transition_time.as_ref().and_then(from_time))
}

/// When `job` was created, as the API server stamped it.
pub fn created_at(job: &KubeJob) -> Option<DateTime<Utc>> {
    job.metadata.creation_timestamp.as_ref().and_then(from_time)
}

fn from_time(at: &Time) -> Option<DateTime<Utc>> {
    let nanos = i64::try_from(at.0.as_nanosecond()).ok()?;
    Some(DateTime::from_timestamp_nanos(nanos))
}

/// What a Job's labels and annotations say about its run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Labels {
    /// The Job's name.
    pub name: String,
    /// The job ([`LABEL_JOB`]).
    pub job: String,
    /// The slot ([`ANNOTATION_SCHEDULED`]).
    pub scheduled: DateTime<Utc>,
    /// The creating term's token ([`ANNOTATION_FENCING_TOKEN`]).
    pub fencing_token: u64,
    /// The creating replica ([`ANNOTATION_IDENTITY`]).
    pub identity: String,
    /// Why it ran ([`ANNOTATION_CAUSE`], [`ANNOTATION_REQUEST_ID`]).
    pub origin: Origin,
    /// When it was created.
    pub created: Option<DateTime<Utc>>,
}

/// Reads what leasecron wrote on `job`; `None` if a label or annotation is missing or unreadable (not a
/// Job leasecron made, or one edited by hand: left alone).
pub fn labels_of(job: &KubeJob) -> Option<Labels> {
    let meta = &job.metadata;
    let annotations = meta.annotations.as_ref()?;
    let scheduled = DateTime::parse_from_rfc3339(annotations.get(ANNOTATION_SCHEDULED)?)
        .ok()?
        .with_timezone(&Utc);
    let cause = Cause::parse(annotations.get(ANNOTATION_CAUSE)?)?;
    let origin = match annotations.get(ANNOTATION_REQUEST_ID) {
        Some(id) => {
            let at = annotations
                .get(ANNOTATION_REQUESTED_AT)
                .and_then(|at| DateTime::parse_from_rfc3339(at).ok())
                .map_or(scheduled, |at| at.with_timezone(&Utc));
            Origin::requested(cause, id.clone(), at)
        }
        None => Origin::scheduled(cause),
    };
    Some(Labels {
        name: meta.name.clone()?,
        job: meta.labels.as_ref()?.get(LABEL_JOB)?.clone(),
        scheduled,
        fencing_token: annotations.get(ANNOTATION_FENCING_TOKEN)?.parse().ok()?,
        identity: annotations.get(ANNOTATION_IDENTITY)?.clone(),
        origin,
        created: created_at(job),
    })
}

/// The Jobs of one lease: their requests, and a cache of them kept by a watch.
pub struct Cluster {
    api: Api<KubeJob>,
    pods: Api<Pod>,
    params: Params,
    cache: Mutex<Cache>,
    /// Bumped on every change of the cache; `ready` once the first list is in.
    changes: watch::Sender<Version>,
    /// Stops the watch.
    stop: CancellationToken,
    /// Set once the watch is started.
    watching: OnceLock<()>,
}

/// The cache's version, as [`Cluster::subscribe`] publishes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Version {
    /// Counts the changes.
    pub changes: u64,
    /// True once the first list is complete.
    pub ready: bool,
    /// True while listing or watching the Jobs is forbidden (RBAC), until a list succeeds.
    pub forbidden: bool,
}

/// Why [`Cluster::ready`] gave up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotReady {
    /// The caller stopped waiting.
    Stopped,
    /// RBAC forbids listing or watching the Jobs.
    Forbidden,
    /// No complete list within the limit (the API server is unavailable).
    TimedOut,
}

#[derive(Default)]
struct Cache {
    jobs: HashMap<String, Arc<KubeJob>>,
    /// While a (re)list is in progress: the Jobs listed so far.
    listing: Option<HashMap<String, Arc<KubeJob>>>,
    /// Who follows which Job ([`Cluster::follow_job`]): woken when that Job changes (and by a relist),
    /// not by every change of the cache.
    followers: HashMap<String, Arc<Notify>>,
}

/// Wakes its holder when one Job of the cache changes ([`Cluster::follow_job`]).
pub struct JobFollower {
    cluster: Arc<Cluster>,
    name: String,
    notify: Arc<Notify>,
}

impl JobFollower {
    /// A change of the Job from now on. Create it before reading the cache, then await it: a change in
    /// between is not missed.
    pub fn changed(&self) -> Notified<'_> {
        self.notify.notified()
    }
}

impl Drop for JobFollower {
    fn drop(&mut self) {
        let mut cache = self.cluster.lock();
        // The map's and this one's: nobody else follows the Job.
        if Arc::strong_count(&self.notify) <= 2 {
            cache.followers.remove(&self.name);
        }
    }
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("params", &self.params)
            .finish_non_exhaustive()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Cluster {
    /// The Jobs of `params.lease` through `client` (kube's retry layer off). The watch that keeps the
    /// cache starts on the first [`Cluster::ensure_watching`] or [`Cluster::ready`]: a replica without an
    /// `executor: kubernetes` job never lists Jobs (the narrow Role of deploy/core does not allow it).
    pub fn new(client: kube::Client, params: Params) -> Arc<Cluster> {
        Arc::new(Cluster {
            api: Api::namespaced(client.clone(), &params.namespace),
            pods: Api::namespaced(client, &params.namespace),
            params,
            cache: Mutex::new(Cache::default()),
            changes: watch::channel(Version::default()).0,
            stop: CancellationToken::new(),
            watching: OnceLock::new(),
        })
    }

    /// Starts the watch that keeps the cache, unless it runs already. Must be called within a tokio
    /// runtime.
    pub fn ensure_watching(self: &Arc<Self>) {
        self.watching.get_or_init(|| {
            let weak = Arc::downgrade(self);
            let (api, stop, selector) = (
                self.api.clone(),
                self.stop.clone(),
                format!("{LABEL_LEASE}={}", self.params.lease),
            );
            tracing::debug!(selector, namespace = %self.params.namespace, "watching the Kubernetes Jobs");
            tokio::spawn(async move {
                tokio::select! {
                    () = stop.cancelled() => {}
                    () = follow(api, selector, weak) => {}
                }
            });
        });
    }

    /// Where the Jobs are.
    pub fn params(&self) -> &Params {
        &self.params
    }

    /// The cache's versions: changes on every change of the cache.
    pub fn subscribe(&self) -> watch::Receiver<Version> {
        self.changes.subscribe()
    }

    /// Waits until the cache holds a complete list (the watch's first list): gives up when `stop` is
    /// cancelled, when RBAC forbids the list, or after [`Cluster::ready_limit`].
    pub async fn ready(self: &Arc<Self>, stop: &CancellationToken) -> Result<(), NotReady> {
        self.ensure_watching();
        let mut changes = self.subscribe();
        let settled = changes.wait_for(|version| version.ready || version.forbidden);
        tokio::select! {
            settled = tokio::time::timeout(self.ready_limit(), settled) => match settled {
                Ok(Ok(version)) if version.ready => Ok(()),
                Ok(Ok(_)) => Err(NotReady::Forbidden),
                Ok(Err(_)) => Err(NotReady::Stopped),
                Err(_) => Err(NotReady::TimedOut),
            },
            () = stop.cancelled() => Err(NotReady::Stopped),
        }
    }

    /// How long [`Cluster::ready`] waits for the first list: five request timeouts, at least 5 s.
    pub fn ready_limit(&self) -> Duration {
        (self.params.request_timeout * 5).max(Duration::from_secs(5))
    }

    /// Follows the Job `name`: [`JobFollower::changed`] wakes on its changes only.
    pub fn follow_job(self: &Arc<Self>, name: &str) -> JobFollower {
        let notify = Arc::clone(self.lock().followers.entry(name.to_owned()).or_default());
        JobFollower {
            cluster: Arc::clone(self),
            name: name.to_owned(),
            notify,
        }
    }

    /// The cached Job `name`.
    pub fn cached(&self, name: &str) -> Option<Arc<KubeJob>> {
        self.lock().jobs.get(name).cloned()
    }

    /// Every cached Job of the job `job`.
    pub fn jobs_of(&self, job: &str) -> Vec<Arc<KubeJob>> {
        self.lock()
            .jobs
            .values()
            .filter(|j| {
                j.metadata
                    .labels
                    .as_ref()
                    .and_then(|labels| labels.get(LABEL_JOB))
                    .is_some_and(|label| label == job)
            })
            .cloned()
            .collect()
    }

    /// Every cached Job.
    pub fn all(&self) -> Vec<Arc<KubeJob>> {
        self.lock().jobs.values().cloned().collect()
    }

    /// Creates `job`. `AlreadyExists` is [`Error::AlreadyExists`].
    pub async fn create(&self, job: &KubeJob) -> Result<(), Error> {
        let name = job.metadata.name.clone().unwrap_or_default();
        let result = bounded_request(
            self.params.request_timeout,
            self.api.create(&PostParams::default(), job),
        )
        .await;
        match result {
            Ok(created) => {
                // Into the cache at once: a policy decision right after this one sees it even if the
                // watch has not delivered it yet.
                self.apply(created);
                Ok(())
            }
            Err(kubernetes::Error::Status { code: CONFLICT, .. }) => Err(Error::AlreadyExists {
                namespace: self.params.namespace.clone(),
                name,
            }),
            Err(error) => Err(self.sort("create", &name, error)),
        }
    }

    /// Deletes the Job `name`: `foreground` keeps it (being deleted) until its pods are gone, as
    /// `Replace` needs; else the garbage collector deletes the pods after it. A Job already gone is
    /// deleted.
    pub async fn delete(&self, name: &str, foreground: bool) -> Result<(), Error> {
        let params = DeleteParams {
            propagation_policy: Some(if foreground {
                PropagationPolicy::Foreground
            } else {
                PropagationPolicy::Background
            }),
            ..DeleteParams::default()
        };
        match bounded_request(self.params.request_timeout, self.api.delete(name, &params)).await {
            Ok(_)
            | Err(kubernetes::Error::Status {
                code: NOT_FOUND, ..
            }) => Ok(()),
            Err(error) => Err(self.sort("delete", name, error)),
        }
    }

    /// Reads the Job `name` from the API server (not the cache); `None` if there is none.
    pub async fn get(&self, name: &str) -> Result<Option<KubeJob>, Error> {
        bounded_request(self.params.request_timeout, self.api.get_opt(name))
            .await
            .map_err(|error| self.sort("get", name, error))
    }

    /// The exit code of the failed container of the Job `name`'s last failed pod, if it can be read (the
    /// pod may be gone). Only for the record: a failure to read it is `None`.
    pub async fn failed_exit_code(&self, name: &str) -> Option<i32> {
        let params = ListParams::default().labels(&format!("{POD_JOB_NAME_LABEL}={name}"));
        let pods = bounded_request(self.params.request_timeout, self.pods.list(&params))
            .await
            .ok()?;
        pods.items
            .iter()
            .filter(|pod| pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Failed"))
            .max_by_key(|pod| pod.metadata.creation_timestamp.as_ref().and_then(from_time))
            .and_then(|pod| pod.status.as_ref()?.container_statuses.as_ref())
            .into_iter()
            .flatten()
            .filter_map(|status| status.state.as_ref()?.terminated.as_ref())
            .map(|terminated| terminated.exit_code)
            .find(|code| *code != 0)
    }

    fn sort(&self, verb: &'static str, name: &str, error: kubernetes::Error) -> Error {
        let namespace = self.params.namespace.clone();
        match error {
            kubernetes::Error::Status {
                code: FORBIDDEN,
                message,
                ..
            } => Error::Forbidden {
                verb,
                namespace,
                message,
            },
            kubernetes::Error::Status { code, .. }
                if !crate::lease_store::is_transient_status(code) =>
            {
                Error::Refused {
                    verb,
                    namespace,
                    name: name.to_owned(),
                    detail: error.to_string(),
                }
            }
            other => Error::Unavailable {
                verb,
                namespace,
                name: name.to_owned(),
                detail: other.to_string(),
            },
        }
    }

    fn lock(&self) -> MutexGuard<'_, Cache> {
        // Every update is one insert, remove or swap: consistent even after a panic elsewhere.
        self.cache.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn apply(&self, job: KubeJob) {
        let Some(name) = job.metadata.name.clone() else {
            return;
        };
        let job = Arc::new(trim(job));
        let follower = {
            let mut cache = self.lock();
            // An older version than the one cached (the create's answer after the watch's update) is
            // not applied.
            if let Some(cached) = cache.jobs.get(&name) {
                if newer(cached, &job) {
                    return;
                }
            }
            let follower = cache.followers.get(&name).cloned();
            cache.jobs.insert(name, job);
            follower
        };
        if let Some(notify) = follower {
            notify.notify_waiters();
        }
        self.bump(None);
    }

    fn event(&self, event: watcher::Event<KubeJob>) {
        let mut ready = None;
        let mut wake = Vec::new();
        {
            let mut cache = self.lock();
            match event {
                watcher::Event::Apply(job) => {
                    if let Some(name) = job.metadata.name.clone() {
                        wake.extend(cache.followers.get(&name).cloned());
                        cache.jobs.insert(name, Arc::new(trim(job)));
                    }
                }
                watcher::Event::Delete(job) => {
                    if let Some(name) = &job.metadata.name {
                        wake.extend(cache.followers.get(name).cloned());
                        cache.jobs.remove(name);
                    }
                }
                watcher::Event::Init => cache.listing = Some(HashMap::new()),
                watcher::Event::InitApply(job) => {
                    if let (Some(listing), Some(name)) =
                        (cache.listing.as_mut(), job.metadata.name.clone())
                    {
                        listing.insert(name, Arc::new(trim(job)));
                    }
                }
                watcher::Event::InitDone => {
                    if let Some(listing) = cache.listing.take() {
                        cache.jobs = listing;
                    }
                    // A relist may have changed (or dropped) any Job.
                    wake.extend(cache.followers.values().cloned());
                    ready = Some(true);
                }
            }
        }
        for notify in wake {
            notify.notify_waiters();
        }
        self.bump(ready);
    }

    fn bump(&self, ready: Option<bool>) {
        self.changes.send_modify(|version| {
            version.changes = version.changes.wrapping_add(1);
            if let Some(ready) = ready {
                version.ready = ready;
                version.forbidden = false;
            }
        });
    }

    /// The watch was refused (`true`, RBAC) or another failure happened (`false`).
    fn watch_failed(&self, forbidden: bool) {
        self.changes.send_if_modified(|version| {
            let changed = version.forbidden != forbidden;
            version.forbidden = forbidden;
            changed
        });
    }
}

/// True if `cached` is a later version than `other` (by resourceVersion, compared as numbers; opaque in
/// principle, etcd's revisions in practice, and a failed parse never keeps an older one).
fn newer(cached: &KubeJob, other: &KubeJob) -> bool {
    let version = |job: &KubeJob| {
        job.metadata
            .resource_version
            .as_deref()
            .and_then(|v| v.parse::<u64>().ok())
    };
    matches!((version(cached), version(other)), (Some(a), Some(b)) if a > b)
}

/// What the cache keeps of a Job: no managed fields (the largest part of most objects, and never read).
fn trim(mut job: KubeJob) -> KubeJob {
    job.metadata.managed_fields = None;
    job
}

/// Lists then watches the Jobs selected by `selector` into the cache of `cluster` for as long as it
/// exists, restarting (and relisting) after a failure or a silence longer than [`WATCH_IDLE_LIMIT`].
async fn follow(api: Api<KubeJob>, selector: String, cluster: std::sync::Weak<Cluster>) {
    let mut backoff = WATCH_BACKOFF.0;
    let mut failures_logged = false;
    loop {
        let config = watcher::Config::default()
            .labels(&selector)
            .timeout(WATCH_TIMEOUT_SECONDS);
        let mut stream = watcher(api.clone(), config).boxed();
        loop {
            let next = tokio::time::timeout(WATCH_IDLE_LIMIT, stream.next()).await;
            let Some(cluster) = cluster.upgrade() else {
                return;
            };
            match next {
                Ok(Some(Ok(event))) => {
                    if failures_logged && matches!(event, watcher::Event::InitDone) {
                        tracing::info!(selector, "watching the Kubernetes Jobs again");
                        failures_logged = false;
                    }
                    backoff = WATCH_BACKOFF.0;
                    cluster.event(event);
                }
                Ok(Some(Err(error))) => {
                    let forbidden = matches!(&error, watcher::Error::InitialListFailed(kube::Error::Api(s))
                        | watcher::Error::WatchStartFailed(kube::Error::Api(s))
                        | watcher::Error::WatchError(s) if s.code == FORBIDDEN);
                    cluster.watch_failed(forbidden);
                    if !failures_logged {
                        if forbidden {
                            tracing::error!(selector, namespace = %cluster.params.namespace, error = %kubernetes::error_chain(&error),
                                "cannot list and watch the Kubernetes Jobs: grant list and watch on jobs.batch to leasecron's service account (the component deploy/kubernetes-jobs); until then no executor: kubernetes job starts");
                        } else {
                            tracing::warn!(selector, error = %kubernetes::error_chain(&error), "the watch of the Kubernetes Jobs failed; retrying");
                        }
                        failures_logged = true;
                    }
                    break;
                }
                Ok(None) => break,
                Err(_idle) => {
                    tracing::warn!(
                        selector,
                        idle_seconds = WATCH_IDLE_LIMIT.as_secs(),
                        "the watch of the Kubernetes Jobs delivered nothing for too long: restarting it"
                    );
                    break;
                }
            }
        }
        drop(stream);
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(WATCH_BACKOFF.1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use k8s_openapi::api::batch::v1::{JobCondition, JobStatus};

    fn condition(type_: &str, status: &str, reason: &str) -> JobCondition {
        JobCondition {
            type_: type_.to_owned(),
            status: status.to_owned(),
            reason: Some(reason.to_owned()),
            message: Some(format!("{reason} happened")),
            ..JobCondition::default()
        }
    }

    fn with_conditions(conditions: Vec<JobCondition>) -> KubeJob {
        KubeJob {
            status: Some(JobStatus {
                conditions: Some(conditions),
                ..JobStatus::default()
            }),
            ..KubeJob::default()
        }
    }

    #[test]
    fn terminal_conditions_map_to_outcomes_and_intermediate_ones_do_not() {
        assert_eq!(state_of(&KubeJob::default()), JobState::Active);
        assert_eq!(
            state_of(&with_conditions(vec![condition(
                "SuccessCriteriaMet",
                "True",
                "CompletionsReached"
            )])),
            JobState::Active
        );
        assert_eq!(
            state_of(&with_conditions(vec![condition(
                "FailureTarget",
                "True",
                "BackoffLimitExceeded"
            )])),
            JobState::Active
        );
        assert_eq!(
            state_of(&with_conditions(vec![condition("Complete", "False", "x")])),
            JobState::Active
        );
        assert_eq!(
            state_of(&with_conditions(vec![
                condition("SuccessCriteriaMet", "True", "CompletionsReached"),
                condition("Complete", "True", "CompletionsReached"),
            ])),
            JobState::Succeeded
        );
        assert_eq!(
            state_of(&with_conditions(vec![condition(
                "Failed",
                "True",
                "DeadlineExceeded"
            )])),
            JobState::DeadlineExceeded
        );
        assert_eq!(
            state_of(&with_conditions(vec![condition(
                "Failed",
                "True",
                "BackoffLimitExceeded"
            )])),
            JobState::Failed {
                reason: "BackoffLimitExceeded".to_owned(),
                message: "BackoffLimitExceeded happened".to_owned()
            }
        );
    }

    fn named(name: &str) -> KubeJob {
        KubeJob {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                ..ObjectMeta::default()
            },
            ..KubeJob::default()
        }
    }

    /// True if `changed` has fired (polled once).
    fn fired(changed: std::pin::Pin<&mut Notified<'_>>) -> bool {
        let waker = futures_util::task::noop_waker();
        let mut context = std::task::Context::from_waker(&waker);
        std::future::Future::poll(changed, &mut context).is_ready()
    }

    #[tokio::test]
    async fn a_follower_wakes_for_its_job_and_a_relist_only() {
        let config = kube::Config::new("http://127.0.0.1:9".parse().expect("a URL"));
        let client = kube::Client::try_from(config).expect("a client");
        let cluster = Cluster::new(
            client,
            Params {
                namespace: "ns".to_owned(),
                lease: "leasecron".to_owned(),
                request_timeout: Duration::from_secs(1),
            },
        );
        let follower = cluster.follow_job("a-1");
        {
            let changed = follower.changed();
            tokio::pin!(changed);
            changed.as_mut().enable();
            cluster.event(watcher::Event::Apply(named("b-1")));
            assert!(!fired(changed.as_mut()), "another Job's change");
            cluster.event(watcher::Event::Apply(named("a-1")));
            assert!(fired(changed.as_mut()), "its Job's change");
        }

        for event in [
            watcher::Event::Delete(named("a-1")),
            watcher::Event::InitDone,
        ] {
            let changed = follower.changed();
            tokio::pin!(changed);
            changed.as_mut().enable();
            cluster.event(event);
            assert!(fired(changed.as_mut()));
        }

        // Two followers of one Job share its entry; it goes with the last of them.
        let second = cluster.follow_job("a-1");
        drop(follower);
        assert!(cluster.lock().followers.contains_key("a-1"));
        drop(second);
        assert!(cluster.lock().followers.is_empty());
    }

    #[test]
    fn labels_read_back_what_the_manifest_wrote() {
        let jobs = crate::config::parse_str(
            "jobs:\n  - name: report\n    schedule: \"*/5 * * * * *\"\n    executor: kubernetes\n    timeout: 90500ms\n    retries: 2\n    jobTemplate:\n      template:\n        spec:\n          restartPolicy: Never\n          initContainers:\n            - name: init\n              image: busybox\n          containers:\n            - name: main\n              image: busybox\n              env:\n                - name: LEASECRON_JOB\n                  value: spoofed\n                - name: KEEP\n                  value: kept\n",
            "jobs.yaml",
            &crate::config::LoadOptions::default(),
        )
        .expect("valid");
        let job = &jobs.jobs[0];
        let crate::config::Executor::Kubernetes(kubernetes) = job.executor() else {
            panic!("a kubernetes job");
        };
        let params = Params {
            namespace: "ns".to_owned(),
            lease: "leasecron".to_owned(),
            request_timeout: Duration::from_secs(2),
        };
        let slot = Utc.timestamp_opt(1_700_000_000, 0).unwrap();
        let origin = Origin::requested(Cause::Trigger, "r-1", slot);
        let run = RunIdentity {
            scheduled: slot,
            fencing_token: FencingToken(7),
            identity: "pod-a",
            origin: &origin,
        };
        let made = manifest(&params, job, kubernetes, &run);
        assert_eq!(made.metadata.name.as_deref(), Some("report-1700000000"));
        let spec = made.spec.as_ref().unwrap();
        assert_eq!(spec.active_deadline_seconds, Some(91));
        assert_eq!(spec.backoff_limit, Some(2));
        let pod_labels = spec
            .template
            .metadata
            .as_ref()
            .unwrap()
            .labels
            .as_ref()
            .unwrap();
        assert_eq!(
            pod_labels.get(LABEL_JOB).map(String::as_str),
            Some("report")
        );
        let pod = spec.template.spec.as_ref().unwrap();
        for container in pod
            .containers
            .iter()
            .chain(pod.init_containers.iter().flatten())
        {
            let env: BTreeMap<&str, &str> = container
                .env
                .iter()
                .flatten()
                .map(|v| (v.name.as_str(), v.value.as_deref().unwrap_or("")))
                .collect();
            assert_eq!(env.get("LEASECRON_JOB"), Some(&"report"));
            assert_eq!(env.get("LEASECRON_FENCING_TOKEN"), Some(&"7"));
            assert_eq!(env.get(ENV_KUBERNETES_JOB), Some(&"report-1700000000"));
        }
        let main = &pod.containers[0];
        assert!(main.env.iter().flatten().any(|v| v.name == "KEEP"));
        assert_eq!(
            main.env
                .iter()
                .flatten()
                .filter(|v| v.name == "LEASECRON_JOB")
                .count(),
            1
        );
        let read = labels_of(&made).expect("readable");
        assert_eq!(read.job, "report");
        assert_eq!(read.scheduled, slot);
        assert_eq!(read.fencing_token, 7);
        assert_eq!(read.identity, "pod-a");
        assert_eq!(read.origin, origin);
    }
}
