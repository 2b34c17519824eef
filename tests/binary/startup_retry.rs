//! `leasecron run` started while the Kubernetes API fails, on the strict fake API server and on the real
//! one (through the fake in proxy mode), with faults injected into the replica's own client: transient failures (503, reset connections) are retried until
//! they stop, with `/healthz` live and `/readyz` not ready meanwhile, and the replica then leads; a 403
//! still exits 2 at once; SIGTERM during the retries exits 0 without touching the Lease; and the retries
//! end at `--startup-timeout` with exit 1 and the last error.

use crate::on_both_servers;
use crate::support::{fake_apiserver, kube_electors, replica};

use std::path::{Path, PathBuf};
use std::time::Duration;

use fake_apiserver::{FakeApiServer, Fault, Resource, Verb, Which};
use kube_electors::lease_holder;
use nix::sys::signal::Signal;
use replica::{wait_for, write_jobs_file, Replica, EXIT_LIMIT, FAST_TIMINGS};

/// The default Lease's name.
const LEASE: &str = "leasecron";
/// How long a step may take on a loaded machine.
const PATIENCE: Duration = Duration::from_secs(60);

fn jobs(dir: &Path) -> PathBuf {
    write_jobs_file(
        dir,
        "jobs:\n  - name: hourly\n    schedule: \"@hourly\"\n    command: [\"true\"]\n    terminationGrace: 100ms\n",
    )
}

/// How many "retrying" lines the replica has logged.
fn retries(replica: &Replica) -> usize {
    replica
        .log_text()
        .matches("the Kubernetes API is unavailable at start; retrying")
        .count()
}

/// Requests of `token` that could change an object (an access review is a POST that changes nothing and
/// has no resource here).
fn writes_of(server: &FakeApiServer, token: &str) -> usize {
    server
        .requests()
        .iter()
        .filter(|r| r.token.as_deref() == Some(token))
        .filter(|r| {
            matches!(
                r.verb,
                Some(Verb::Create | Verb::Update | Verb::Patch | Verb::Delete)
            ) && r.resource.is_some()
        })
        .count()
}

fn a_replica_started_during_an_outage_comes_up_and_leads_once_it_ends(which: Which) {
    for fault in [Fault::Status(503), Fault::Reset] {
        let Some((_runtime, server)) =
            FakeApiServer::start_in_background_on(which, "a_replica_started_during_an")
        else {
            return;
        };
        let dir = tempfile::tempdir().expect("tempdir");
        server.faults("r1").set(fault.clone());
        let kubeconfig = server.kubeconfig(dir.path(), "r1");
        let mut replica = Replica::start_on_kube(
            dir.path(),
            "r1",
            &jobs(dir.path()),
            &kubeconfig,
            &FAST_TIMINGS,
        );

        wait_for(PATIENCE, || (retries(&replica) >= 2).then_some(()))
            .unwrap_or_else(|| panic!("{fault:?}: retries: {}", replica.log_text()));
        assert_eq!(
            replica.child.try_wait().expect("wait"),
            None,
            "{fault:?}: still running"
        );
        let health = replica
            .http_get("/healthz")
            .expect("the endpoint is up while starting");
        assert_eq!(health.status, 200, "{fault:?}: live");
        let ready = replica.http_get("/readyz").expect("answers");
        assert_eq!(ready.status, 503, "{fault:?}: not ready");
        let log = replica.log_text();
        assert!(
            log.contains("step=\"reading the Lease\"") || log.contains("step=reading the Lease"),
            "{fault:?}: the retry names the step: {log}"
        );
        assert!(
            log.contains("attempt=2"),
            "{fault:?}: and the attempt: {log}"
        );
        assert_eq!(lease_holder(&server), None);

        server.faults("r1").clear();
        wait_for(PATIENCE, || {
            (lease_holder(&server).as_deref() == Some("r1")).then_some(())
        })
        .unwrap_or_else(|| panic!("{fault:?}: leads: {}", replica.log_text()));
        wait_for(PATIENCE, || {
            replica
                .http_get("/readyz")
                .filter(|r| r.status == 200)
                .map(|_| ())
        })
        .unwrap_or_else(|| panic!("{fault:?}: ready: {}", replica.log_text()));
        assert!(replica
            .log_text()
            .contains("the Kubernetes API answers again"));
        replica.stop_cleanly();
    }
}

fn a_forbidden_lease_exits_2_at_once_without_retrying(which: Which) {
    let Some((_runtime, server)) =
        FakeApiServer::start_in_background_on(which, "a_forbidden_lease_exits_2_at")
    else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    server.deny("r1", Resource::Leases, &[Verb::Get]);
    let kubeconfig = server.kubeconfig(dir.path(), "r1");
    let mut replica = Replica::start_on_kube(
        dir.path(),
        "r1",
        &jobs(dir.path()),
        &kubeconfig,
        &FAST_TIMINGS,
    );
    let status = replica.wait_exit(EXIT_LIMIT).expect("exits");
    let log = replica.log_text();
    assert_eq!(status.code(), Some(2), "{log}");
    assert!(log.contains("forbidden"), "{log}");
    assert_eq!(retries(&replica), 0, "{log}");
    let gets = server
        .requests()
        .iter()
        .filter(|r| r.token.as_deref() == Some("r1") && r.resource == Some(Resource::Leases))
        .count();
    assert_eq!(gets, 1, "one GET of the Lease");
}

fn sigterm_during_the_retries_exits_0_without_touching_the_lease(which: Which) {
    let Some((_runtime, server)) =
        FakeApiServer::start_in_background_on(which, "sigterm_during_the_retries_e")
    else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    server.faults("r1").set(Fault::Status(503));
    let kubeconfig = server.kubeconfig(dir.path(), "r1");
    let mut replica = Replica::start_on_kube(
        dir.path(),
        "r1",
        &jobs(dir.path()),
        &kubeconfig,
        &FAST_TIMINGS,
    );
    wait_for(PATIENCE, || (retries(&replica) >= 1).then_some(()))
        .unwrap_or_else(|| panic!("retries: {}", replica.log_text()));
    replica.signal(Signal::SIGTERM);
    let status = replica.wait_exit(EXIT_LIMIT).expect("exits");
    let log = replica.log_text();
    assert_eq!(status.code(), Some(0), "{log}");
    assert!(
        log.contains("shutting down during start-up; the lease was not touched"),
        "{log}"
    );
    assert!(server
        .object(Resource::Leases, server.namespace(), LEASE)
        .is_none());
    assert_eq!(writes_of(&server, "r1"), 0);
}

fn the_retries_end_at_the_startup_timeout_with_exit_1_and_the_last_error(which: Which) {
    let Some((_runtime, server)) =
        FakeApiServer::start_in_background_on(which, "the_retries_end_at_the_start")
    else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    server.faults("r1").set(Fault::Status(503));
    let kubeconfig = server.kubeconfig(dir.path(), "r1");
    let mut extra = FAST_TIMINGS.to_vec();
    extra.extend(["--startup-timeout", "3s"]);
    let mut replica =
        Replica::start_on_kube(dir.path(), "r1", &jobs(dir.path()), &kubeconfig, &extra);
    let status = replica.wait_exit(EXIT_LIMIT).expect("exits");
    let log = replica.log_text();
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(
        log.contains("reading the Lease: gave up after ")
            && log.contains(" in 3s (--startup-timeout): ")
            && log.contains("503"),
        "{log}"
    );
    assert!(retries(&replica) >= 1, "{log}");
    assert_eq!(writes_of(&server, "r1"), 0);
}

on_both_servers!(
    processes:
    a_replica_started_during_an_outage_comes_up_and_leads_once_it_ends,
    a_forbidden_lease_exits_2_at_once_without_retrying,
    sigterm_during_the_retries_exits_0_without_touching_the_lease,
    the_retries_end_at_the_startup_timeout_with_exit_1_and_the_last_error,
);
