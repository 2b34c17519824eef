//! The HTTP endpoint and the logs of a real `leasecron run` process: `/metrics`, `/status`, JSON logs, and
//! a busy `--http-addr`; the Lease's transitions mirrored on the fake API server and on the real one
//! (through the fake in proxy mode).

use crate::support::{exposition, fake_apiserver, replica};

use std::path::Path;
use std::time::Duration;

use exposition::{metric, sample};
use fake_apiserver::{FakeApiServer, Resource, Which};
use replica::{alive, every_second_job, output, wait_for, Replica, FAST_TIMINGS};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(30);
const RUNS_SUCCEEDED: &str = "leasecron_job_runs_total{job=\"tick\",outcome=\"succeeded\"}";

fn start(dir: &Path, identity: &str, lease: &Path, extra: &[&str]) -> Replica {
    let jobs = every_second_job(dir, "tick", "500ms", "echo tick-output");
    let mut args = FAST_TIMINGS.to_vec();
    args.extend_from_slice(extra);
    Replica::start(dir, identity, &jobs, lease, &args)
}

#[test]
fn a_leader_exports_is_leader_1_and_counts_runs_and_a_follower_exports_0() {
    let dir = tempfile::tempdir().expect("tempdir");
    let lease = dir.path().join("lease.json");
    let mut leader = start(dir.path(), "leader", &lease, &[]);
    wait_for(WAIT, || {
        (metric(&leader, "leasecron_is_leader")? == 1.0).then_some(())
    })
    .unwrap_or_else(|| panic!("never led: {}", leader.log_text()));
    let first = wait_for(WAIT, || {
        metric(&leader, RUNS_SUCCEEDED).filter(|n| *n >= 1.0)
    })
    .expect("a run succeeded");
    wait_for(WAIT, || {
        metric(&leader, RUNS_SUCCEEDED).filter(|n| *n > first)
    })
    .expect("job_runs_total increments with every run");

    let response = leader.http_get("/metrics").expect("/metrics answers");
    assert!(
        response
            .headers
            .contains("content-type: text/plain; version=0.0.4"),
        "{}",
        response.headers
    );
    assert_eq!(
        sample(&response.body, "leasecron_leadership_acquired_total"),
        Some(1.0)
    );
    assert_eq!(sample(&response.body, "leasecron_jobs"), Some(1.0));

    let follower = start(dir.path(), "follower", &lease, &[]);
    let follower_status = wait_for(WAIT, || {
        follower.status().filter(|s| s["holder"] == "leader")
    })
    .unwrap_or_else(|| panic!("the follower never saw the leader: {}", follower.log_text()));
    assert_eq!(follower_status["leading"], false);
    assert_eq!(follower_status["identity"], "follower");
    assert_eq!(metric(&follower, "leasecron_is_leader"), Some(0.0));
    assert_eq!(metric(&follower, RUNS_SUCCEEDED), Some(0.0));
    leader.stop_cleanly();
}

#[test]
fn status_shows_the_term_and_each_jobs_schedule_next_and_last_run() {
    let dir = tempfile::tempdir().expect("tempdir");
    let lease = dir.path().join("lease.json");
    let mut leader = start(dir.path(), "solo", &lease, &[]);
    let status = wait_for(WAIT, || {
        leader
            .status()
            .filter(|s| !s["jobs"][0]["last_run"].is_null())
    })
    .unwrap_or_else(|| panic!("no finished run in /status: {}", leader.log_text()));
    assert_eq!(status["identity"], "solo");
    assert_eq!(status["holder"], "solo");
    assert_eq!(status["leading"], true);
    assert!(status["fencing_token"].as_u64().is_some_and(|t| t >= 1));
    assert!(status["term_deadline_remaining_seconds"].as_f64().is_some());
    assert!(status["term_acquired_at"].is_string());
    let job = &status["jobs"][0];
    assert_eq!(job["name"], "tick");
    assert_eq!(job["schedule"], "* * * * * *");
    assert_eq!(job["zone"], "UTC");
    assert_eq!(job["suspended"], false);
    assert!(job["next_run"].is_string(), "{job}");
    assert_eq!(job["last_run"]["outcome"], "succeeded");
    assert!(job["last_run"]["scheduled"].is_string());
    assert!(job["last_run"]["finished"].is_string());
    assert!(job["running"].is_u64());
    let response = leader.http_get("/status").expect("/status answers");
    assert!(response.headers.contains("content-type: application/json"));
    leader.stop_cleanly();
}

/// The entry of job `name` in a `/status` document.
fn job_status<'a>(status: &'a Value, name: &str) -> &'a Value {
    status["jobs"]
        .as_array()
        .and_then(|jobs| jobs.iter().find(|job| job["name"] == name))
        .unwrap_or_else(|| panic!("no job {name} in {status}"))
}

#[test]
fn a_failed_runs_exit_code_error_duration_and_leftover_processes_show_in_status_and_metrics() {
    let dir = tempfile::tempdir().expect("tempdir");
    let lease = dir.path().join("lease.json");
    let pids = dir.path().join("pids");
    // Each run leaves one process in its group and one in a session of its own, and exits 3.
    let jobs = dir.path().join("jobs.yaml");
    std::fs::write(
        &jobs,
        format!(
            "jobs:\n  - name: leaves\n    schedule: \"* * * * * *\"\n    terminationGrace: 500ms\n    \
             shell: 'sleep 1000 & echo $! >> {p}; setsid sleep 1000 & echo $! >> {p}; exit 3'\n  \
             - name: missing\n    schedule: \"* * * * * *\"\n    terminationGrace: 500ms\n    \
             command: [/nonexistent/leasecron-test-program]\n",
            p = pids.display()
        ),
    )
    .expect("write the jobs file");
    let mut leader = Replica::start(dir.path(), "solo", &jobs, &lease, &FAST_TIMINGS);
    // The run state may show a completion a moment before the run's own report reaches /status: wait for
    // this replica's account of both runs.
    let status = wait_for(WAIT, || {
        leader.status().filter(|s| {
            job_status(s, "leaves")["last_run"]["source"] == "this_replica"
                && job_status(s, "missing")["last_run"]["source"] == "this_replica"
        })
    })
    .unwrap_or_else(|| panic!("no finished runs in /status: {}", leader.log_text()));
    let token = status["fencing_token"].as_u64().expect("leading");
    let last = &job_status(&status, "leaves")["last_run"];
    assert_eq!(last["outcome"], "failed", "{last}");
    assert_eq!(last["exit_code"], 3, "{last}");
    assert!(
        last["signal"].is_null() && last["error"].is_null(),
        "{last}"
    );
    assert!(
        last["duration_seconds"].as_f64().is_some_and(|d| d >= 0.0),
        "{last}"
    );
    assert!(last["started"].is_string(), "{last}");
    assert_eq!(last["attempts"], 1, "{last}");
    assert_eq!(
        last["leftover_processes_killed"], 2,
        "one in its group, one outside: {last}"
    );
    assert_eq!(last["source"], "this_replica");
    assert_eq!(last["identity"], "solo");
    assert_eq!(last["fencing_token"], token);
    let missing = &job_status(&status, "missing")["last_run"];
    assert_eq!(missing["outcome"], "failed", "{missing}");
    assert!(missing["exit_code"].is_null(), "{missing}");
    let error = missing["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("/nonexistent/leasecron-test-program") && error.contains("No such file"),
        "{missing}"
    );
    assert_eq!(missing["leftover_processes_killed"], 0, "{missing}");

    // One scrape: every failed run of `leaves` counted its two processes.
    let response = leader.http_get("/metrics").expect("/metrics answers");
    let failed = sample(
        &response.body,
        "leasecron_job_runs_total{job=\"leaves\",outcome=\"failed\"}",
    )
    .expect("runs counted");
    let leftovers = sample(
        &response.body,
        "leasecron_job_leftover_processes_killed_total{job=\"leaves\"}",
    )
    .expect("leftovers counted");
    assert!(failed >= 1.0);
    assert_eq!(leftovers, 2.0 * failed);
    assert_eq!(
        sample(
            &response.body,
            "leasecron_job_leftover_processes_killed_total{job=\"missing\"}"
        ),
        Some(0.0)
    );
    let hash = status["config"]["hash"].as_str().expect("a hash");
    assert_eq!(
        sample(
            &response.body,
            &format!("leasecron_config_info{{hash=\"{hash}\"}}")
        ),
        Some(1.0),
        "the metric names the hash /status shows"
    );
    leader.stop_cleanly();
    let pids = std::fs::read_to_string(&pids).expect("the runs wrote their pids");
    for pid in pids.split_whitespace() {
        let pid: i32 = pid.parse().expect("a pid");
        assert!(
            wait_for(WAIT, || (!alive(pid)).then_some(())).is_some(),
            "{pid} outlived its run"
        );
    }
}

#[test]
fn a_follower_shows_the_last_run_from_the_run_state_and_a_suspended_job_its_next_slot() {
    let dir = tempfile::tempdir().expect("tempdir");
    let lease = dir.path().join("lease.json");
    let jobs = every_second_job(dir.path(), "tick", "500ms", "echo tick-output");
    let text = std::fs::read_to_string(&jobs).expect("read the jobs file");
    let mut leader = Replica::start(dir.path(), "leader", &jobs, &lease, &FAST_TIMINGS);
    wait_for(WAIT, || {
        leader
            .status()
            .filter(|s| !job_status(s, "tick")["last_run"].is_null())
    })
    .unwrap_or_else(|| panic!("the leader never ran: {}", leader.log_text()));
    // Suspended, the job starts no new slot: the run state stops moving once its last run completed.
    std::fs::write(&jobs, format!("{text}    suspend: true\n")).expect("suspend the job");
    let settled = wait_for(WAIT, || {
        leader.status().filter(|s| {
            let job = job_status(s, "tick");
            job["suspended"] == true
                && job["running"] == 0
                && job["run_state"]["lastCompletion"]["slot"] == job["last_run"]["scheduled"]
                && job["run_state"]["lastStarted"]["slot"] == job["last_run"]["scheduled"]
        })
    })
    .unwrap_or_else(|| panic!("the leader never settled: {}", leader.log_text()));
    let ran = job_status(&settled, "tick")["last_run"].clone();
    let token = settled["fencing_token"].as_u64().expect("leading");
    assert_eq!(ran["source"], "this_replica");

    let follower = Replica::start(dir.path(), "follower", &jobs, &lease, &FAST_TIMINGS);
    let status = wait_for(WAIT, || {
        follower
            .status()
            .filter(|s| s["holder"] == "leader" && !job_status(s, "tick")["last_run"].is_null())
    })
    .unwrap_or_else(|| panic!("no last run on the follower: {}", follower.log_text()));
    assert_eq!(status["leading"], false);
    let job = job_status(&status, "tick");
    let last = &job["last_run"];
    assert_eq!(last["source"], "run_state", "{last}");
    assert_eq!(last["identity"], "leader", "{last}");
    assert_eq!(last["fencing_token"], token, "{last}");
    assert_eq!(last["scheduled"], ran["scheduled"], "{last}");
    assert_eq!(last["outcome"], "succeeded", "{last}");
    assert!(last["duration_seconds"].is_f64(), "{last}");
    assert!(
        last["exit_code"].is_null() && last["attempts"].is_null(),
        "{last}"
    );
    assert_eq!(job["running"], 0);
    for (who, status) in [("leader", &settled), ("follower", &status)] {
        let job = job_status(status, "tick");
        assert_eq!(job["suspended"], true, "{who}: {job}");
        assert!(job["next_run"].is_null(), "{who}: {job}");
        assert!(job["next_slot_if_resumed"].is_string(), "{who}: {job}");
    }
    drop(follower);
    leader.stop_cleanly();
}

#[test]
fn json_logs_are_one_object_per_line_and_the_finished_line_has_the_run_fields() {
    let dir = tempfile::tempdir().expect("tempdir");
    let lease = dir.path().join("lease.json");
    let mut leader = start(dir.path(), "json", &lease, &["--log-format", "json"]);
    wait_for(WAIT, || {
        leader.log_text().contains("\"run finished\"").then_some(())
    })
    .unwrap_or_else(|| panic!("no run finished: {}", leader.log_text()));
    leader.stop_cleanly();

    let log = leader.log_text();
    let lines: Vec<Value> = log
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}")))
        .collect();
    let finished = lines
        .iter()
        .find(|l| l["message"] == "run finished")
        .expect("a finished line");
    assert_eq!(finished["job"], "tick");
    assert_eq!(finished["outcome"], "succeeded");
    assert_eq!(finished["attempt"], 1, "the last attempt");
    assert_eq!(finished["attempts"], 1);
    assert!(finished["duration_seconds"].is_f64(), "{finished}");
    assert!(
        finished.get("duration").is_none(),
        "one duration field: {finished}"
    );
    let run_id = finished["run_id"].as_u64().expect("run_id");
    let token = finished["fencing_token"].as_u64().expect("fencing_token");
    let of_this_run = |message: &str| {
        lines.iter().any(|l| {
            l["message"] == message && l["run_id"] == run_id && l["fencing_token"] == token
        })
    };
    assert!(of_this_run("started"), "the started line carries the run");
    assert!(
        of_this_run("tick-output"),
        "the output line carries the run"
    );
    let ids: Vec<u64> = lines
        .iter()
        .filter(|l| l["message"] == "run finished")
        .filter_map(|l| l["run_id"].as_u64())
        .collect();
    let unique: std::collections::BTreeSet<_> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "run ids are unique: {ids:?}");
}

#[test]
fn a_port_in_use_exits_2_naming_the_address() {
    let dir = tempfile::tempdir().expect("tempdir");
    let busy = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = busy.local_addr().expect("addr").to_string();
    let jobs = every_second_job(dir.path(), "tick", "500ms", "true");
    let lease = dir.path().join("lease.json");
    let (jobs, lease) = (jobs.display().to_string(), lease.display().to_string());
    let out = output(&[
        "run",
        "--jobs",
        &jobs,
        "--lease-file",
        &lease,
        "--identity",
        "busy",
        "--http-addr",
        &addr,
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains(&format!("--http-addr {addr}")), "{stderr}");
    assert!(
        !Path::new(&lease).exists(),
        "the lease was not touched before the address was checked"
    );
}

/// The server's Lease `leaseTransitions`.
fn lease_transitions(server: &FakeApiServer) -> Option<f64> {
    let lease = server.object(Resource::Leases, server.namespace(), "leasecron")?;
    lease["spec"]["leaseTransitions"].as_f64()
}

fn start_on_kube(dir: &Path, server: &FakeApiServer, identity: &str) -> Replica {
    let jobs = every_second_job(dir, "tick", "500ms", "true");
    let kubeconfig = server.kubeconfig(dir, identity);
    Replica::start_on_kube(dir, identity, &jobs, &kubeconfig, &FAST_TIMINGS)
}

fn lease_transitions_mirror_the_kubernetes_lease_across_failover_and_restart(which: Which) {
    let Some((_runtime, server)) =
        FakeApiServer::start_in_background_on(which, "lease_transitions_mirror")
    else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let mut first = start_on_kube(dir.path(), &server, "kube-a");
    wait_for(WAIT, || {
        (metric(&first, "leasecron_is_leader")? == 1.0).then_some(())
    })
    .unwrap_or_else(|| panic!("kube-a never led: {}", first.log_text()));
    let second = start_on_kube(dir.path(), &server, "kube-b");
    let before = lease_transitions(&server).expect("the Lease exists");
    wait_for(WAIT, || {
        (metric(&second, "leasecron_lease_transitions")? == before).then_some(())
    })
    .unwrap_or_else(|| panic!("kube-b never mirrored {before}: {}", second.log_text()));
    assert_eq!(metric(&second, "leasecron_is_leader"), Some(0.0));

    first.stop_cleanly();
    wait_for(WAIT, || {
        (metric(&second, "leasecron_is_leader")? == 1.0).then_some(())
    })
    .unwrap_or_else(|| panic!("kube-b never took over: {}", second.log_text()));
    let after = lease_transitions(&server).expect("the Lease exists");
    assert!(after > before, "the failover is a transition");
    wait_for(WAIT, || {
        (metric(&second, "leasecron_lease_transitions")? == after).then_some(())
    })
    .unwrap_or_else(|| panic!("kube-b never mirrored {after}"));

    // A restarted replica starts from the Lease's count, not from 0: rate() over a restart sees no reset.
    let restarted = start_on_kube(dir.path(), &server, "kube-a");
    wait_for(WAIT, || {
        (metric(&restarted, "leasecron_lease_transitions")? == after).then_some(())
    })
    .unwrap_or_else(|| panic!("the restarted replica never mirrored {after}"));
    assert_eq!(metric(&restarted, "leasecron_is_leader"), Some(0.0));
}

/// `fake::NAME` and `real::NAME` for the test on the Kubernetes Lease.
mod fake {
    #[test]
    fn lease_transitions_mirror_the_kubernetes_lease_across_failover_and_restart() {
        super::lease_transitions_mirror_the_kubernetes_lease_across_failover_and_restart(
            super::Which::Fake,
        );
    }
}

mod real {
    #[test]
    fn lease_transitions_mirror_the_kubernetes_lease_across_failover_and_restart() {
        super::lease_transitions_mirror_the_kubernetes_lease_across_failover_and_restart(
            super::Which::Real,
        );
    }
}
