//! Where the real replicas of a binary test elect (and keep their run state and controls): a lease file,
//! or the Lease of the fake API server or of the real one behind it; and the waits and checks of the
//! tests that kill a leader and count the runs its job recorded
//! ([`record_line`](crate::support::replica::record_line)).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Output;
use std::time::Duration;

use crate::support::fake_apiserver::{FakeApiServer, Which};
use crate::support::replica::{self, wait_for, RecordedRun, Replica, FAST_TIMINGS};

/// How long [`wait_leading`] and [`wait_following`] wait.
pub const WAIT: Duration = Duration::from_secs(40);

/// Where the replicas elect, keep their run state and read the controls, and where the operator commands
/// file their requests.
pub enum Store {
    /// `--lease-file DIR/lease`.
    File,
    /// The Lease of the fake API server, or of the real one behind it.
    Kube {
        /// Serves the fake API server (or proxy): kept alive as long as the store.
        _runtime: tokio::runtime::Runtime,
        /// The server.
        server: FakeApiServer,
    },
}

impl Store {
    /// The Lease of the server `which`; `None` if the real server is unavailable and not required.
    pub fn kube(which: Which, test: &str) -> Option<Store> {
        let (runtime, server) = FakeApiServer::start_in_background_on(which, test)?;
        Some(Store::Kube {
            _runtime: runtime,
            server,
        })
    }

    /// Starts the replica `identity` in `dir` with the jobs file `jobs`, on this store.
    pub fn start(&self, dir: &Path, identity: &str, jobs: &Path) -> Replica {
        match self {
            Store::File => Replica::start(dir, identity, jobs, &dir.join("lease"), &FAST_TIMINGS),
            Store::Kube { server, .. } => {
                let kubeconfig = server.kubeconfig(dir, identity);
                Replica::start_on_kube(dir, identity, jobs, &kubeconfig, &FAST_TIMINGS)
            }
        }
    }

    /// Starts `a`, waits until it leads, then `b`, until it follows.
    pub fn leader_and_follower(&self, dir: &Path, jobs: &Path) -> (Replica, Replica) {
        let a = self.start(dir, "a", jobs);
        wait_leading(&a);
        let b = self.start(dir, "b", jobs);
        wait_following(&b);
        (a, b)
    }

    /// `leasecron ARGS --jobs JOBS` against this store, as an operator.
    pub fn command(&self, dir: &Path, jobs: &Path, args: &[&str]) -> Output {
        let mut command = replica::leasecron();
        command.args(args).arg("--jobs").arg(jobs);
        match self {
            Store::File => {
                command.arg("--lease-file").arg(dir.join("lease"));
            }
            Store::Kube { server, .. } => {
                command
                    .env("KUBECONFIG", server.kubeconfig(dir, "operator"))
                    .env("HOME", dir)
                    .env_remove("POD_NAMESPACE")
                    .env_remove("LEASECRON_LEASE_NAME")
                    .env_remove("LEASECRON_LEASE_NAMESPACE")
                    .env_remove("KUBERNETES_SERVICE_HOST");
            }
        }
        command.output().expect("spawn leasecron")
    }

    /// Like [`Store::command`], which must succeed; its standard output.
    pub fn ok(&self, dir: &Path, jobs: &Path, args: &[&str]) -> String {
        let out = self.command(dir, jobs, args);
        assert!(
            out.status.success(),
            "leasecron {args:?}: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// Waits until `replica` says on `/status` that it leads.
pub fn wait_leading(replica: &Replica) {
    wait_for(WAIT, || replica.status().filter(|s| s["leading"] == true))
        .unwrap_or_else(|| panic!("{} leads: {}", replica.identity, replica.log_text()));
}

/// Waits until `replica` says on `/status` that it follows a holder.
pub fn wait_following(replica: &Replica) {
    wait_for(WAIT, || {
        replica
            .status()
            .filter(|s| s["leading"] == false && !s["holder"].is_null())
    })
    .unwrap_or_else(|| panic!("{} follows: {}", replica.identity, replica.log_text()));
}

/// Runs by slot, with every slot's runs in start order.
pub fn runs_by_slot(runs: &[RecordedRun]) -> BTreeMap<String, Vec<RecordedRun>> {
    let mut slots: BTreeMap<String, Vec<RecordedRun>> = BTreeMap::new();
    for run in runs {
        slots.entry(run.slot.clone()).or_default().push(run.clone());
    }
    slots
}

/// Asserts that no slot ran twice.
pub fn assert_each_slot_once(runs: &[RecordedRun]) {
    for (slot, runs) in runs_by_slot(runs) {
        assert_eq!(
            runs.len(),
            1,
            "slot {slot} ran {} times: {runs:?}",
            runs.len()
        );
    }
}
