//! `executor: kubernetes` with real replicas on the real kube-apiserver, each with exactly the Roles that
//! `deploy/core` and the component `deploy/kubernetes-jobs` ship: the leader creates a Job per slot; SIGKILLed
//! while its Job is active, it leaves the Job running, and the next leader adopts it (Forbid holds every
//! later slot back until it ends), records its outcome, and goes on creating Jobs.
//!
//! No kubelet or Job controller runs there: the test sets the Job's terminal status, as the Job
//! controller would.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::batch::v1::Job as KubeJob;
use kube::api::{Api, ListParams};
use nix::sys::signal::Signal;

use crate::support::fake_apiserver::real::{self, RealApiServer};
use crate::support::job_controller;
use crate::support::replica::{wait_for, Replica};

/// The group of the replicas' users, bound to both Roles.
const GROUP: &str = "leasecron-kjobs";
/// LD 4 s, RD 2 s, RP 500 ms: a failover within seconds.
const TIMINGS: [&str; 6] = [
    "--lease-duration",
    "4s",
    "--renew-deadline",
    "2s",
    "--retry-period",
    "500ms",
];
/// A job every 2 s, one Job at a time.
const JOBS: &str = "jobs:
  - name: crunch
    schedule: \"*/2 * * * * *\"
    executor: kubernetes
    concurrencyPolicy: Forbid
    successfulJobsHistoryLimit: 2
    jobTemplate:
      template:
        spec:
          restartPolicy: Never
          containers:
            - name: crunch
              image: registry.example/crunch:1.0
";
const WAIT: Duration = Duration::from_secs(60);

struct Env {
    real: Arc<RealApiServer>,
    namespace: String,
    dir: tempfile::TempDir,
}

impl Env {
    fn start() -> Option<Env> {
        let real = real::shared()?;
        let namespace = real.create_namespace_blocking("kjobs-bin");
        let dir = tempfile::Builder::new()
            .prefix("leasecron-kjobs-")
            .tempdir()
            .expect("a temporary directory");
        let env = Env {
            real,
            namespace,
            dir,
        };
        let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
        for (file, role) in [
            ("deploy/core/role.yaml", "leasecron"),
            (
                "deploy/kubernetes-jobs/role.yaml",
                "leasecron-kubernetes-jobs",
            ),
        ] {
            env.kubectl(&["apply", "-f", repo.join(file).to_str().expect("UTF-8")]);
            env.kubectl(&[
                "create",
                "rolebinding",
                role,
                &format!("--role={role}"),
                &format!("--group={GROUP}"),
            ]);
        }
        // RBAC reads Roles through an informer: wait until both bindings apply.
        for check in [["update", "leases/leasecron"], ["create", "jobs.batch"]] {
            wait_for(Duration::from_secs(30), || {
                env.kubectl_command(&[
                    "auth",
                    "can-i",
                    check[0],
                    check[1],
                    "--as=probe",
                    &format!("--as-group={GROUP}"),
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .expect("kubectl")
                .success()
                .then_some(())
            })
            .expect("the Role bindings apply");
        }
        Some(env)
    }

    fn kubectl_command(&self, args: &[&str]) -> Command {
        self.real.kubectl_command(&self.namespace, args)
    }

    fn kubectl(&self, args: &[&str]) {
        self.real.kubectl(&self.namespace, args);
    }

    fn replica(&self, identity: &str) -> Replica {
        let user = self.real.user_kubeconfig(identity, &[GROUP]);
        let kubeconfig = self.real.kubeconfig_in_namespace(
            &user,
            self.dir.path(),
            &format!("{identity}.kubeconfig"),
            &self.namespace,
        );
        Replica::start_on_kube(
            self.dir.path(),
            identity,
            &self.jobs_file(),
            &kubeconfig,
            &TIMINGS,
        )
    }

    fn jobs_file(&self) -> PathBuf {
        let path = self.dir.path().join("jobs.yaml");
        if !path.exists() {
            fs::write(&path, JOBS).expect("write the jobs");
        }
        path
    }

    /// The Jobs now, by name, with whether each has finished.
    fn jobs(&self) -> Vec<KubeJob> {
        let namespace = self.namespace.clone();
        self.real.with_admin(move |admin| async move {
            Api::<KubeJob>::namespaced(admin, &namespace)
                .list(&ListParams::default())
                .await
                .expect("list the Jobs")
                .items
        })
    }

    fn names(&self) -> BTreeSet<String> {
        self.jobs()
            .into_iter()
            .filter_map(|job| job.metadata.name)
            .collect()
    }

    fn annotation(job: &KubeJob, key: &str) -> String {
        job.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(key))
            .cloned()
            .unwrap_or_default()
    }

    /// Plays the Job controller: the Job `name` completed.
    fn complete(&self, name: &str) {
        let namespace = self.namespace.clone();
        let name = name.to_owned();
        self.real.with_admin(move |admin| async move {
            let jobs = Api::<KubeJob>::namespaced(admin, &namespace);
            job_controller::finish(&jobs, &name, "Complete").await;
        });
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "the logs of this test are in {} (namespace {})",
                self.dir.path().display(),
                self.namespace
            );
            let _ = std::mem::replace(
                &mut self.dir,
                tempfile::tempdir().expect("a temporary directory"),
            )
            .keep();
        }
    }
}

#[test]
fn the_next_leader_adopts_the_active_job_of_a_killed_leader_and_forbid_holds_until_it_ends() {
    let Some(env) = Env::start() else {
        return;
    };
    let mut first = env.replica("replica-a");
    // The first leader creates the first slot's Job; Forbid holds every later slot while it is active.
    let created = wait_for(WAIT, || env.jobs().into_iter().next())
        .unwrap_or_else(|| panic!("no Job created; the leader's log:\n{}", first.log_text()));
    let name = created.metadata.name.clone().expect("a name");
    assert_eq!(
        Env::annotation(&created, "leasecron.io/identity"),
        "replica-a"
    );
    let first_token = Env::annotation(&created, "leasecron.io/fencing-token");

    // SIGKILL: no hand-over, no release. The Job goes on.
    first.signal(Signal::SIGKILL);
    first.wait_exit(Duration::from_secs(10));
    let mut second = env.replica("replica-b");
    wait_for(WAIT, || {
        second
            .log_text()
            .contains("adopted a Kubernetes Job an earlier term created")
            .then_some(())
    })
    .unwrap_or_else(|| panic!("no adoption; replica-b's log:\n{}", second.log_text()));
    assert!(
        second
            .log_text()
            .contains(&format!("kubernetes_job={name}")),
        "adopted {name}:\n{}",
        second.log_text()
    );
    // Forbid: several slots pass, no second Job.
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(env.names(), BTreeSet::from([name.clone()]));

    // It ends: the adopter records its outcome, and the next slots run again.
    env.complete(&name);
    let later = wait_for(WAIT, || {
        env.jobs().into_iter().find(|job| {
            job.metadata.name.as_deref() != Some(name.as_str())
                && Env::annotation(job, "leasecron.io/identity") == "replica-b"
        })
    })
    .unwrap_or_else(|| {
        panic!(
            "no Job after the adopted one; replica-b's log:\n{}",
            second.log_text()
        )
    });
    let second_token = Env::annotation(&later, "leasecron.io/fencing-token");
    assert!(
        second_token.parse::<u64>().expect("a token")
            > first_token.parse::<u64>().expect("a token"),
        "{second_token} > {first_token}"
    );
    let log = second.log_text();
    assert!(
        log.contains("outcome=succeeded") && log.contains("run finished"),
        "the adopted run's outcome:\n{log}"
    );
    assert!(
        !log.to_lowercase().contains("forbidden"),
        "the two Roles allow every request:\n{log}"
    );
    second.stop_cleanly();
}
