//! `executor: kubernetes` on the real kube-apiserver of tools/kube-testenv: the runner creates each slot's
//! Job, follows it to its outcome, applies the concurrency policy against the Jobs the API server holds,
//! hands its Jobs over at the end of its term and adopts those of an earlier term, and keeps the history
//! limits.
//!
//! There is no kubelet, Job controller or garbage collector there: the tests play them, setting a Job's
//! status (the conditions the Job controller writes, in the order the API server's validation demands)
//! and removing the `foregroundDeletion` finalizer that the garbage collector would remove once the
//! Job's pods were gone.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use k8s_openapi::api::batch::v1::Job as KubeJob;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use leasecron::clock::SystemClock;
use leasecron::config::{self, Job, JobSet, LoadOptions};
use leasecron::event::{ClusterAction, Failure, Outcome, RunEvent, RunReport, SkipReason};
use leasecron::kubernetes::batch::{self, Cluster};
use leasecron::run_state::memory::MemoryStore;
use leasecron::run_state::{Cause, Ledger, Origin};
use leasecron::runner::Runner;
use leasecron::term::{FencingToken, Term, TermHandle};
use serde_json::json;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::support::fake_apiserver::real::{self, RealApiServer};
use crate::support::job_controller;

/// Upper bound on any single wait.
const WAIT: Duration = Duration::from_secs(60);
/// The Lease whose Jobs these are.
const LEASE: &str = "leasecron";

/// One test's namespace on the real server and an admin client in it.
struct Env {
    _real: Arc<RealApiServer>,
    namespace: String,
    client: kube::Client,
}

impl Env {
    /// `None` (the test returns) if the real server is unavailable and not required.
    async fn start(test: &str) -> Option<Env> {
        let real = tokio::task::spawn_blocking(real::shared).await.ok()??;
        let namespace = real.create_namespace(test).await;
        let client = real.admin_client(&namespace).await;
        Some(Env {
            _real: real,
            namespace,
            client,
        })
    }

    fn jobs(&self) -> Api<KubeJob> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// Where this namespace's Jobs are, for a replica's cache and for a manifest.
    fn params(&self) -> batch::Params {
        batch::Params {
            namespace: self.namespace.clone(),
            lease: LEASE.to_owned(),
            request_timeout: Duration::from_secs(10),
        }
    }

    /// A replica's runner over `ledger`, creating its Jobs as the admin through a cache of its own.
    fn replica(&self, identity: &str, ledger: Arc<Ledger>) -> Replica {
        self.replica_as(self.client.clone(), identity, ledger)
    }

    /// [`Env::replica`] with the rights of `client`.
    fn replica_as(&self, client: kube::Client, identity: &str, ledger: Arc<Ledger>) -> Replica {
        let (tx, rx) = mpsc::unbounded_channel();
        let runner = Runner::new(identity.to_owned(), Arc::new(SystemClock), Some(tx), ledger);
        let cluster = Cluster::new(client, self.params());
        runner.attach_cluster(Arc::clone(&cluster));
        Replica {
            runner,
            cluster,
            events: rx,
        }
    }

    /// Creates the Job of `slot` as the term `token` of `identity` made it: a Job a former leader left
    /// (or created late). Returns its name.
    async fn create_as_earlier_term(
        &self,
        job: &Job,
        slot: DateTime<Utc>,
        token: u64,
        identity: &str,
    ) -> String {
        let config::Executor::Kubernetes(kubernetes) = job.executor() else {
            panic!("{} is not a kubernetes job", job.name);
        };
        let run = batch::RunIdentity {
            scheduled: slot,
            fencing_token: FencingToken(token),
            identity,
            origin: &Origin::SCHEDULE,
        };
        let manifest = batch::manifest(&self.params(), job, kubernetes, &run);
        self.jobs()
            .create(&PostParams::default(), &manifest)
            .await
            .expect("create the earlier term's Job");
        job_name(job, slot)
    }

    /// The names of the Jobs in the namespace (from the API server, not a cache).
    async fn job_names(&self) -> BTreeSet<String> {
        self.jobs()
            .list(&ListParams::default())
            .await
            .expect("list the Jobs")
            .items
            .into_iter()
            .filter_map(|job| job.metadata.name)
            .collect()
    }

    async fn get(&self, name: &str) -> Option<KubeJob> {
        self.jobs().get_opt(name).await.expect("get the Job")
    }

    /// Plays the Job controller: the Job `name` finished as `how` (`Complete`, or a `Failed` reason).
    async fn finish(&self, name: &str, how: &str) {
        job_controller::finish(&self.jobs(), name, how).await;
    }

    /// Plays the garbage collector: a Job deleted with foreground propagation is gone once its pods are.
    async fn collect(&self, name: &str) {
        self.jobs()
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"finalizers": null}})),
            )
            .await
            .unwrap_or_else(|e| panic!("remove the finalizers of job {name}: {e}"));
    }

    /// Polls until `check` holds.
    async fn until<F, Fut>(&self, what: &str, mut check: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let deadline = Instant::now() + WAIT;
        while !check().await {
            assert!(Instant::now() < deadline, "not within {WAIT:?}: {what}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// A replica: its runner, its cache of Jobs, and what the runner reports.
struct Replica {
    runner: Arc<Runner>,
    cluster: Arc<Cluster>,
    events: mpsc::UnboundedReceiver<RunEvent>,
}

impl Replica {
    async fn next(&mut self) -> RunEvent {
        match tokio::time::timeout(WAIT, self.events.recv()).await {
            Ok(Some(event)) => event,
            _ => panic!("no runner event within {WAIT:?}"),
        }
    }

    /// Skips events until one `pick` takes.
    async fn until<T>(&mut self, mut pick: impl FnMut(&RunEvent) -> Option<T>) -> T {
        loop {
            let event = self.next().await;
            if let Some(found) = pick(&event) {
                return found;
            }
        }
    }

    async fn cluster_action(&mut self, name: &str) -> ClusterAction {
        self.until(|event| match event {
            RunEvent::Cluster {
                name: n, action, ..
            } if n == name => Some(*action),
            _ => None,
        })
        .await
    }

    async fn finished(&mut self) -> RunReport {
        self.until(|event| match event {
            RunEvent::Finished(report) => Some(report.clone()),
            _ => None,
        })
        .await
    }

    async fn skipped(&mut self) -> SkipReason {
        self.until(|event| match event {
            RunEvent::Skipped { reason, .. } => Some(*reason),
            _ => None,
        })
        .await
    }

    /// Starts the run of `slot` under `term`.
    fn fire(&self, job: &Arc<Job>, slot: DateTime<Utc>, term: &Term) {
        let _ = self.runner.start_with(
            Arc::clone(job),
            slot,
            term,
            Origin::scheduled(Cause::Schedule),
        );
    }

    /// The leader's keeping of the cluster for `term` (adoption, outcomes, history), as the dispatcher
    /// starts it.
    fn keep(&self, term: &Term, jobs: &Arc<JobSet>) -> watch::Sender<Arc<JobSet>> {
        let (tx, rx) = watch::channel(Arc::clone(jobs));
        term.tracker()
            .spawn(Arc::clone(&self.runner).keep_cluster(term.clone(), rx));
        tx
    }
}

fn ledger(identity: &str) -> Arc<Ledger> {
    Arc::new(Ledger::new(MemoryStore::new(), identity.to_owned()))
}

fn term(token: u64) -> TermHandle {
    Term::begin(
        FencingToken(token),
        Utc::now(),
        Instant::now() + Duration::from_secs(3600),
    )
}

/// A slot; `n` tells them apart.
fn slot(n: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_800_000_000 + n * 60, 0).unwrap()
}

/// The kubernetes job `name` with `extra` job fields (YAML lines, indented by 4).
fn jobs_with(name: &str, extra: &str) -> Arc<JobSet> {
    let text = format!(
        "jobs:
  - name: {name}
    schedule: \"* * * * *\"
    executor: kubernetes
{extra}    jobTemplate:
      template:
        spec:
          restartPolicy: Never
          containers:
            - name: main
              image: registry.example/report:1.0
              command: [report, --daily]
"
    );
    Arc::new(config::parse_str(&text, "jobs.yaml", &LoadOptions::default()).expect("valid jobs"))
}

fn the_job(set: &Arc<JobSet>) -> Arc<Job> {
    Arc::clone(&set.jobs[0])
}

fn job_name(job: &Job, slot: DateTime<Utc>) -> String {
    config::kubernetes_job_name(&job.name, slot)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_creates_its_slots_job_and_ends_with_the_jobs_outcome() {
    let Some(env) = Env::start("kjobs-outcome").await else {
        return;
    };
    let set = jobs_with("report", "    timeout: 90s\n    retries: 2\n");
    let job = the_job(&set);
    let mut replica = env.replica("replica-a", ledger("replica-a"));
    let handle = term(5);

    replica.fire(&job, slot(1), handle.term());
    let name = job_name(&job, slot(1));
    assert_eq!(replica.cluster_action(&name).await, ClusterAction::Created);
    let created = env.get(&name).await.expect("the slot's Job");
    let labels = created.metadata.labels.clone().unwrap_or_default();
    assert_eq!(
        labels.get(batch::LABEL_JOB).map(String::as_str),
        Some("report")
    );
    assert_eq!(
        labels.get(batch::LABEL_LEASE).map(String::as_str),
        Some(LEASE)
    );
    let annotations = created.metadata.annotations.clone().unwrap_or_default();
    assert_eq!(
        annotations
            .get(batch::ANNOTATION_FENCING_TOKEN)
            .map(String::as_str),
        Some("5")
    );
    assert_eq!(
        annotations
            .get(batch::ANNOTATION_IDENTITY)
            .map(String::as_str),
        Some("replica-a")
    );
    let spec = created.spec.clone().expect("a spec");
    assert_eq!(spec.active_deadline_seconds, Some(90));
    assert_eq!(spec.backoff_limit, Some(2));
    let container = &spec.template.spec.expect("a pod spec").containers[0];
    let env_names: BTreeSet<&str> = container
        .env
        .iter()
        .flatten()
        .map(|var| var.name.as_str())
        .collect();
    for var in [
        "LEASECRON_JOB",
        "LEASECRON_SCHEDULED_TIME",
        "LEASECRON_IDENTITY",
        "LEASECRON_FENCING_TOKEN",
        "LEASECRON_KUBERNETES_JOB",
    ] {
        assert!(env_names.contains(var), "{var} in {env_names:?}");
    }
    assert_eq!(replica.runner.running("report"), 1);

    env.finish(&name, "Complete").await;
    let report = replica.finished().await;
    assert_eq!(report.outcome, Outcome::Succeeded);
    assert_eq!(report.fencing_token, 5);

    // A failure and a deadline, each the outcome of its own slot.
    replica.fire(&job, slot(2), handle.term());
    let failing = job_name(&job, slot(2));
    replica.cluster_action(&failing).await;
    env.finish(&failing, "BackoffLimitExceeded").await;
    let report = replica.finished().await;
    assert!(
        matches!(&report.outcome, Outcome::Failed(Failure::Job { reason, .. }) if reason == "BackoffLimitExceeded"),
        "{:?}",
        report.outcome
    );
    replica.fire(&job, slot(3), handle.term());
    let late = job_name(&job, slot(3));
    replica.cluster_action(&late).await;
    env.finish(&late, "DeadlineExceeded").await;
    assert_eq!(replica.finished().await.outcome, Outcome::TimedOut);
    handle.end().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_racing_leaders_create_one_job_per_slot() {
    let Some(env) = Env::start("kjobs-race").await else {
        return;
    };
    let set = jobs_with("sync", "    concurrencyPolicy: Allow\n");
    let job = the_job(&set);
    // Two run states: only the API server stands between them.
    let mut a = env.replica("replica-a", ledger("replica-a"));
    let mut b = env.replica("replica-b", ledger("replica-b"));
    let (term_a, term_b) = (term(7), term(8));
    // Slot by slot: a run state claims a job's slots in order, so that an older slot fired after a newer
    // one would be refused by the run state, not by the API server.
    let (mut created, mut already) = (0, 0);
    for n in 0..5 {
        a.fire(&job, slot(n), term_a.term());
        b.fire(&job, slot(n), term_b.term());
        for replica in [&mut a, &mut b] {
            let decision = replica
                .until(|event| match event {
                    RunEvent::Cluster {
                        action: ClusterAction::Created,
                        ..
                    } => Some(true),
                    RunEvent::Skipped {
                        reason: SkipReason::AlreadyStarted,
                        ..
                    } => Some(false),
                    _ => None,
                })
                .await;
            match decision {
                true => created += 1,
                false => already += 1,
            }
        }
    }
    assert_eq!((created, already), (5, 5));
    let expected: BTreeSet<String> = (0..5).map(|n| job_name(&job, slot(n))).collect();
    assert_eq!(env.job_names().await, expected);
    term_a.end().await;
    term_b.end().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_outlives_its_term_and_the_next_leader_adopts_it() {
    let Some(env) = Env::start("kjobs-adopt").await else {
        return;
    };
    let set = jobs_with("nightly", "");
    let job = the_job(&set);
    // One run state, as replicas share it.
    let state = ledger("shared");
    let mut a = env.replica("replica-a", Arc::clone(&state));
    let first = term(10);
    a.fire(&job, slot(1), first.term());
    let name = job_name(&job, slot(1));
    assert_eq!(a.cluster_action(&name).await, ClusterAction::Created);
    first.end().await;
    assert_eq!(a.cluster_action(&name).await, ClusterAction::HandedOver);
    assert!(env.get(&name).await.is_some(), "the Job goes on");
    assert_eq!(a.runner.running("nightly"), 0);

    let mut b = env.replica("replica-b", Arc::clone(&state));
    let second = term(11);
    let _jobs = b.keep(second.term(), &set);
    assert_eq!(
        b.cluster_action(&name).await,
        ClusterAction::Adopted { created_by: 10 }
    );
    // Forbid: the adopted Job is the run in flight.
    b.fire(&job, slot(2), second.term());
    assert_eq!(b.skipped().await, SkipReason::Overlap);
    env.finish(&name, "Complete").await;
    let report = b.finished().await;
    assert_eq!(
        (report.outcome, report.fencing_token),
        (Outcome::Succeeded, 10)
    );
    let record = state.snapshot();
    let entry = record.jobs["nightly"]
        .history
        .iter()
        .find(|entry| entry.slot == slot(1))
        .expect("the run in the history");
    assert_eq!(entry.outcome.as_deref(), Some("succeeded"));
    assert_eq!(entry.fencing_token, 10);
    // Free again.
    b.fire(&job, slot(3), second.term());
    let next = job_name(&job, slot(3));
    assert_eq!(b.cluster_action(&next).await, ClusterAction::Created);
    second.end().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forbid_counts_a_job_a_cut_off_leader_created_late() {
    let Some(env) = Env::start("kjobs-forbid").await else {
        return;
    };
    let set = jobs_with("exclusive", "");
    let job = the_job(&set);
    let mut b = env.replica("replica-b", ledger("replica-b"));
    let leader = term(21);
    let mut cache = b.cluster.subscribe();
    b.cluster.ensure_watching();
    cache
        .wait_for(|version| version.ready)
        .await
        .expect("the cache lists");

    // The former leader (token 20), partitioned, had a create in flight that lands now.
    let late_name = env
        .create_as_earlier_term(&job, slot(1), 20, "replica-a")
        .await;
    env.until("the cache sees the late Job", || async {
        b.cluster.cached(&late_name).is_some()
    })
    .await;

    b.fire(&job, slot(2), leader.term());
    assert_eq!(b.skipped().await, SkipReason::Overlap);
    assert!(env.get(&job_name(&job, slot(2))).await.is_none());

    // Once it has finished, the next slot runs.
    env.finish(&late_name, "Complete").await;
    env.until("the cache sees it finish", || async {
        b.cluster
            .cached(&late_name)
            .is_some_and(|job| batch::state_of(&job).is_finished())
    })
    .await;
    b.fire(&job, slot(3), leader.term());
    let next = job_name(&job, slot(3));
    assert_eq!(b.cluster_action(&next).await, ClusterAction::Created);
    leader.end().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replace_deletes_the_active_job_and_creates_the_next_only_once_it_is_gone() {
    let Some(env) = Env::start("kjobs-replace").await else {
        return;
    };
    let set = jobs_with("refresh", "    concurrencyPolicy: Replace\n");
    let job = the_job(&set);
    let mut replica = env.replica("replica-a", ledger("replica-a"));
    let handle = term(30);
    replica.fire(&job, slot(1), handle.term());
    let old = job_name(&job, slot(1));
    assert_eq!(replica.cluster_action(&old).await, ClusterAction::Created);

    replica.fire(&job, slot(2), handle.term());
    assert_eq!(replica.cluster_action(&old).await, ClusterAction::Deleted);
    env.until("the old Job is being deleted", || async {
        env.get(&old)
            .await
            .is_some_and(|job| job.metadata.deletion_timestamp.is_some())
    })
    .await;
    // Its pods are not gone yet (no garbage collector here): the next Job waits.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let new = job_name(&job, slot(2));
    assert!(
        env.get(&new).await.is_none(),
        "created before the old Job was gone"
    );

    env.collect(&old).await;
    assert_eq!(replica.finished().await.outcome, Outcome::Cancelled);
    assert_eq!(replica.cluster_action(&new).await, ClusterAction::Created);
    assert!(env.get(&old).await.is_none());
    handle.end().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_on_leadership_loss_deletes_the_jobs_when_the_term_ends() {
    let Some(env) = Env::start("kjobs-cancel").await else {
        return;
    };
    let set = jobs_with("bounded", "    cancelOnLeadershipLoss: true\n");
    let job = the_job(&set);
    let mut replica = env.replica("replica-a", ledger("replica-a"));
    let handle = term(40);
    replica.fire(&job, slot(1), handle.term());
    let name = job_name(&job, slot(1));
    replica.cluster_action(&name).await;
    handle.end().await;
    assert_eq!(replica.cluster_action(&name).await, ClusterAction::Deleted);
    let deleting = env.get(&name).await.expect("kept until its pods are gone");
    assert!(deleting.metadata.deletion_timestamp.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finished_jobs_beyond_the_history_limits_are_deleted_oldest_first() {
    let Some(env) = Env::start("kjobs-history").await else {
        return;
    };
    let set = jobs_with(
        "rotate",
        "    successfulJobsHistoryLimit: 2\n    failedJobsHistoryLimit: 1\n",
    );
    let job = the_job(&set);
    let mut replica = env.replica("replica-a", ledger("replica-a"));
    let handle = term(50);
    let outcomes = [
        "Complete",
        "BackoffLimitExceeded",
        "Complete",
        "Complete",
        "BackoffLimitExceeded",
        "Complete",
    ];
    for (n, how) in outcomes.iter().enumerate() {
        let n = i64::try_from(n).unwrap();
        replica.fire(&job, slot(n), handle.term());
        let name = job_name(&job, slot(n));
        assert_eq!(replica.cluster_action(&name).await, ClusterAction::Created);
        env.finish(&name, how).await;
        replica.finished().await;
        // Apart by a second at least: the history orders by completion time.
        tokio::time::sleep(Duration::from_millis(1100)).await;
    }
    let kept: BTreeSet<String> = [3, 4, 5].map(|n| job_name(&job, slot(n))).into();
    env.until(
        "only the newest 2 succeeded and 1 failed Jobs are left",
        || async { env.job_names().await == kept },
    )
    .await;
    handle.end().await;
}

/// A user of `real` whose only rights in `env`'s namespace are `verbs` on jobs.batch.
async fn restricted_client(
    real: &RealApiServer,
    env: &Env,
    user: &str,
    verbs: &[&str],
) -> kube::Client {
    use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
    let role: Role = serde_json::from_value(json!({
        "metadata": {"name": user},
        "rules": [{"apiGroups": ["batch"], "resources": ["jobs"], "verbs": verbs}],
    }))
    .expect("a Role");
    let binding: RoleBinding = serde_json::from_value(json!({
        "metadata": {"name": user},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": user},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
    }))
    .expect("a RoleBinding");
    Api::<Role>::namespaced(env.client.clone(), &env.namespace)
        .create(&PostParams::default(), &role)
        .await
        .expect("create the Role");
    Api::<RoleBinding>::namespaced(env.client.clone(), &env.namespace)
        .create(&PostParams::default(), &binding)
        .await
        .expect("create the RoleBinding");
    let kubeconfig = real.user_kubeconfig(user, &[]);
    let client = real::client_from(&kubeconfig, Some(&env.namespace)).await;
    // RBAC reads bindings through an informer: wait until the first granted verb is allowed.
    let jobs: Api<KubeJob> = Api::namespaced(client.clone(), &env.namespace);
    if verbs.contains(&"list") {
        env.until("the binding applies", || async {
            jobs.list(&ListParams::default()).await.is_ok()
        })
        .await;
    } else {
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    client
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_rules_fail_the_runs_with_the_rule_to_grant_and_start_nothing() {
    let Some(env) = Env::start("kjobs-rbac").await else {
        return;
    };
    let real = tokio::task::spawn_blocking(real::shared)
        .await
        .expect("join")
        .expect("the real server");
    let set = jobs_with("guarded", "");
    let job = the_job(&set);
    // No list or watch: the policy cannot see the Jobs, so the run fails (an outcome, not a hang).
    let blind = restricted_client(&real, &env, "kjobs-blind", &["create", "get"]).await;
    let mut a = env.replica_as(blind, "replica-a", ledger("replica-a"));
    let handle = term(60);
    a.fire(&job, slot(1), handle.term());
    let report = a.finished().await;
    match &report.outcome {
        Outcome::Failed(Failure::Refused(why)) => {
            assert!(why.contains("list and watch jobs.batch"), "{why}");
            assert!(why.contains("deploy/kubernetes-jobs"), "{why}");
        }
        other => panic!("{other:?}"),
    }
    assert!(env.job_names().await.is_empty());
    handle.end().await;

    // List and watch but no create: the API server's refusal, with the rule to grant.
    let mute = restricted_client(&real, &env, "kjobs-mute", &["list", "watch", "get"]).await;
    let mut b = env.replica_as(mute, "replica-b", ledger("replica-b"));
    let handle = term(61);
    b.fire(&job, slot(2), handle.term());
    let report = b.finished().await;
    match &report.outcome {
        Outcome::Failed(Failure::Refused(why)) => {
            assert!(why.contains("not allowed to create jobs.batch"), "{why}");
            assert!(why.contains("deploy/kubernetes-jobs"), "{why}");
        }
        other => panic!("{other:?}"),
    }
    assert!(env.job_names().await.is_empty());
    handle.end().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_waits_for_an_active_job_of_an_earlier_term_then_creates() {
    let Some(env) = Env::start("kjobs-queue").await else {
        return;
    };
    let set = jobs_with("serial", "    concurrencyPolicy: Queue\n");
    let job = the_job(&set);
    let mut replica = env.replica("replica-b", ledger("replica-b"));
    let handle = term(71);
    // A Job of the previous term (token 70), still active, not adopted (no keeper runs here).
    let earlier_name = env
        .create_as_earlier_term(&job, slot(1), 70, "replica-a")
        .await;

    replica.fire(&job, slot(2), handle.term());
    let queued = job_name(&job, slot(2));
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        env.get(&queued).await.is_none(),
        "created while the earlier Job is active"
    );
    assert_eq!(replica.runner.running("serial"), 1, "the queued run waits");

    env.finish(&earlier_name, "Complete").await;
    assert_eq!(
        replica.cluster_action(&queued).await,
        ClusterAction::Created
    );
    handle.end().await;
}
