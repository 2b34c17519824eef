//! The run state ConfigMap's capacity, as `leasecron run` meets it, on the strict fake API server (which
//! refuses a ConfigMap over 1 MiB with 422, as the real one does) and on the real one through the fake in
//! proxy mode: a job set whose run state may not fit is refused when it is loaded (exit 2 at start, the
//! jobs in force kept on a reload) instead of failing every claim. What fits is in
//! `tests/component/run_state/capacity.rs`.

use crate::on_both_servers;
use crate::support::{fake_apiserver, replica, scale_jobs};

use fake_apiserver::{FakeApiServer, Resource, Which};
use replica::{wait_for, write_jobs_file, Replica, EXIT_LIMIT, FAST_TIMINGS};
use scale_jobs::names;

/// The replicas' flags: fast timings, and room for a jobs file of 11 000 jobs (1.2 MiB), over the default
/// --max-file-size of 1 MiB: the run state's limit is the one under test.
fn flags() -> Vec<&'static str> {
    let mut flags = FAST_TIMINGS.to_vec();
    flags.extend(["--max-file-size", "4MiB"]);
    flags
}

/// A jobs file of `count` jobs with names of 63 characters.
fn jobs_file(dir: &std::path::Path, count: usize) -> std::path::PathBuf {
    let mut text = String::from("defaults:\n  terminationGrace: 100ms\njobs:\n");
    for name in names(count, &"n".repeat(57)) {
        text.push_str(&format!(
            "  - name: {name}\n    schedule: \"@yearly\"\n    command: [\"true\"]\n"
        ));
    }
    write_jobs_file(dir, &text)
}

fn more_jobs_than_the_run_state_holds_exit_2_at_start_naming_the_count_and_the_limit(which: Which) {
    let Some((_runtime, server)) =
        FakeApiServer::start_in_background_on(which, "more_jobs_than_the_run_state")
    else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let jobs = jobs_file(dir.path(), 11_000);
    let kubeconfig = server.kubeconfig(dir.path(), "r1");
    let mut replica = Replica::start_on_kube(dir.path(), "r1", &jobs, &kubeconfig, &flags());
    let status = replica.wait_exit(EXIT_LIMIT).expect("exits");
    let log = replica.log_text();
    assert_eq!(status.code(), Some(2), "{log}");
    assert!(
        log.contains(
            "jobs.yaml: 11000 jobs are more than the run state ConfigMap of one Lease holds"
        ) && log.contains("over the 1048576 bytes of a ConfigMap")
            && log.contains("split the jobs over several Leases"),
        "{log}"
    );
    assert!(
        server
            .object(Resource::Leases, server.namespace(), "leasecron")
            .is_none(),
        "the Lease is not touched"
    );
}

fn a_reload_with_more_jobs_than_the_run_state_holds_is_refused_and_the_jobs_in_force_kept(
    which: Which,
) {
    let Some((_runtime, server)) =
        FakeApiServer::start_in_background_on(which, "a_reload_with_more_jobs_than")
    else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let jobs = jobs_file(dir.path(), 2);
    let kubeconfig = server.kubeconfig(dir.path(), "r1");
    let mut replica = Replica::start_on_kube(dir.path(), "r1", &jobs, &kubeconfig, &flags());
    let metric = |name: &str| {
        let body = replica.http_get("/metrics")?.body;
        body.lines()
            .find(|line| line.starts_with(name))
            .and_then(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
    };
    wait_for(EXIT_LIMIT, || {
        metric("leasecron_jobs ").filter(|n| *n == 2.0)
    })
    .expect("2 jobs");

    let bigger = jobs_file(dir.path(), 11_000);
    assert_eq!(bigger, jobs);
    wait_for(EXIT_LIMIT, || {
        metric("leasecron_config_reloads_total{result=\"failure\"}").filter(|n| *n >= 1.0)
    })
    .unwrap_or_else(|| panic!("the reload is refused: {}", replica.log_text()));
    assert_eq!(
        metric("leasecron_jobs "),
        Some(2.0),
        "the jobs in force stay"
    );
    let log = replica.log_text();
    assert!(
        log.contains("the new jobs are refused; keeping the jobs in force")
            && log.contains("11000 jobs are more than the run state ConfigMap of one Lease holds"),
        "{log}"
    );
    replica.stop_cleanly();
}

on_both_servers!(
    processes:
    more_jobs_than_the_run_state_holds_exit_2_at_start_naming_the_count_and_the_limit,
    a_reload_with_more_jobs_than_the_run_state_holds_is_refused_and_the_jobs_in_force_kept,
);
