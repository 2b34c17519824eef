//! `leasecron run` on the Kubernetes store, as a process: start-up errors and their exit codes, and
//! several real replicas electing through the Lease of the fake API server and of the real one (through
//! the fake in proxy mode; each replica with its own kubeconfig and bearer token, so the request log
//! tells them apart).

use crate::on_both_servers;
use crate::support::{fake_apiserver, kube_electors, replica};

use std::fs;
use std::path::Path;
use std::time::Duration;

use fake_apiserver::{FakeApiServer, RequestRecord, Resource, Verb, Which};
use kube_electors::lease_holder;
use nix::sys::signal::Signal;
use replica::{
    assert_no_overlap, leasecron, now_ns, read_recorded_runs, recording_job, wait_for,
    write_jobs_file, RecordedRun, Replica, FAST_TIMINGS,
};

/// How long a test waits for something that should happen within a few lease durations.
const WAIT: Duration = Duration::from_secs(30);
/// LD of [`FAST_TIMINGS`].
const LD: Duration = Duration::from_secs(3);
/// The Lease `run` elects through by default.
const LEASE: &str = "leasecron";
/// How long followers are watched in steady state: several retry periods and leader renews.
const STEADY_STATE: Duration = Duration::from_secs(3);

fn jobs(dir: &std::path::Path) -> std::path::PathBuf {
    write_jobs_file(
        dir,
        "jobs:\n  - name: a\n    schedule: \"@hourly\"\n    command: [\"true\"]\n",
    )
}

/// A kubeconfig pointing at a port nobody listens on.
fn unreachable_kubeconfig(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("kubeconfig");
    let config = serde_json::json!({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "x", "cluster": {"server": "http://127.0.0.1:9"}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "x", "context": {"cluster": "x", "user": "u"}}],
        "current-context": "x",
    });
    fs::write(&path, config.to_string()).expect("write kubeconfig");
    path
}

#[test]
fn an_invalid_lease_name_or_namespace_exits_2_naming_the_flag() {
    let dir = tempfile::tempdir().expect("tempdir");
    let jobs = jobs(dir.path());
    for (flag, value) in [("--lease-name", "Bad_Name"), ("--lease-namespace", "a.b")] {
        let out = leasecron()
            .args(["run", "--jobs"])
            .arg(&jobs)
            .args([flag, value, "--http-addr", "127.0.0.1:0"])
            .env("KUBECONFIG", dir.path().join("none"))
            .env("HOME", dir.path())
            .output()
            .expect("run");
        assert_eq!(out.status.code(), Some(2), "{flag}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(flag) && stderr.contains(value), "{stderr}");
    }
}

#[test]
fn no_kubeconfig_and_no_cluster_exits_2_saying_so() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = leasecron()
        .args(["run", "--jobs"])
        .arg(jobs(dir.path()))
        .args(["--http-addr", "127.0.0.1:0"])
        .env("KUBECONFIG", dir.path().join("none"))
        .env("HOME", dir.path())
        .env_remove("KUBERNETES_SERVICE_HOST")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cannot configure the Kubernetes client"),
        "{stderr}"
    );
}

#[test]
fn an_unreachable_api_server_exits_1_naming_its_url() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = leasecron()
        .args(["run", "--jobs"])
        .arg(jobs(dir.path()))
        .args(["--http-addr", "127.0.0.1:0", "--startup-timeout", "1s"])
        .env("KUBECONFIG", unreachable_kubeconfig(dir.path()))
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("http://127.0.0.1:9") && stderr.contains("cannot reach the Kubernetes API"),
        "{stderr}"
    );
    // Retried for --startup-timeout, then given up with the last error.
    assert!(
        stderr.contains("the Kubernetes API is unavailable at start; retrying")
            && stderr.contains("reading the Lease: gave up after ")
            && stderr.contains(" in 1s (--startup-timeout): "),
        "{stderr}"
    );
}

/// The requests of client `token` (a replica's identity) from `from` on in the log.
fn requests_of(server: &FakeApiServer, token: &str, from: usize) -> Vec<RequestRecord> {
    server
        .requests()
        .into_iter()
        .skip(from)
        .filter(|r| r.token.as_deref() == Some(token))
        .collect()
}

/// True for a successful write (an acquire, a renew or a release) of the Lease.
fn is_write(record: &RequestRecord) -> bool {
    // Replicas also write Kubernetes Events (leadership, runs): those are not Lease writes.
    record.resource == Some(Resource::Leases)
        && matches!(record.verb, Some(Verb::Create | Verb::Update))
        && matches!(record.status, Some(200 | 201))
}

/// Waits until the job has completed `count` more runs than `after`; returns all runs.
fn wait_runs(runs: &Path, count: usize, after: &[RecordedRun]) -> Vec<RecordedRun> {
    let done = |all: &[RecordedRun]| all.iter().filter(|r| r.end_ns.is_some()).count();
    let before = done(after);
    wait_for(WAIT, || {
        let all = read_recorded_runs(runs);
        (done(&all) >= before + count).then_some(all)
    })
    .expect("the leader keeps running the job")
}

/// Asserts that every follower's requests from `from` on are watches only (no polling GETs).
fn assert_followers_only_watch(server: &FakeApiServer, followers: &[&Replica], from: usize) {
    for follower in followers {
        let requests = requests_of(server, &follower.identity, from);
        assert!(
            requests.iter().all(|r| r.verb == Some(Verb::Watch)),
            "{} made requests other than watches while its watch was healthy: {requests:?}",
            follower.identity
        );
    }
}

fn three_replicas_on_the_kube_lease_hand_over_on_sigterm_and_sigkill_without_overlapping_runs(
    which: Which,
) {
    let Some((_runtime, server)) =
        FakeApiServer::start_in_background_on(which, "three_replicas_on_the_kube_lease")
    else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let runs = dir.path().join("runs");
    let jobs = recording_job(dir.path(), &runs);
    let mut replicas: Vec<Replica> = ["kube-0", "kube-1", "kube-2"]
        .iter()
        .map(|id| {
            let kubeconfig = server.kubeconfig(dir.path(), id);
            Replica::start_on_kube(dir.path(), id, &jobs, &kubeconfig, &FAST_TIMINGS)
        })
        .collect();

    // One leader, one term; the Lease names it.
    let seen = wait_runs(&runs, 3, &[]);
    let first = seen[0].clone();
    assert!(
        seen.iter()
            .all(|r| r.identity == first.identity && r.token == first.token),
        "one leader, one term: {seen:?}"
    );
    assert!(first.token >= 1, "fencing tokens start at 1");
    assert_eq!(
        lease_holder(&server).as_deref(),
        Some(first.identity.as_str())
    );
    let leader = replicas
        .iter()
        .position(|r| r.identity == first.identity)
        .expect("the leader is one of ours");

    // Steady state: the followers' watches deliver the renews; they poll nothing.
    let followers: Vec<&Replica> = (0..replicas.len())
        .filter(|&i| i != leader)
        .map(|i| &replicas[i])
        .collect();
    for follower in &followers {
        assert!(
            requests_of(&server, &follower.identity, 0)
                .iter()
                .any(|r| r.verb == Some(Verb::Watch) && r.status == Some(200)),
            "{} watches the Lease",
            follower.identity
        );
    }
    let mark = server.requests().len();
    std::thread::sleep(STEADY_STATE);
    assert_followers_only_watch(&server, &followers, mark);
    let leader_writes = requests_of(&server, &first.identity, mark);
    assert!(
        leader_writes.iter().filter(|r| is_write(r)).count() >= 2,
        "the leader renewed meanwhile: {leader_writes:?}"
    );

    // SIGTERM: the leader ends its run, releases, and a follower takes the free Lease at once.
    let before_term = server.requests().len();
    replicas[leader].stop_cleanly();
    // A run the SIGTERM cut short has no end line; it ended before the release, so before the exit.
    let stopped_at = now_ns();
    assert!(
        replicas[leader].log_text().contains("released the lease"),
        "{}",
        replicas[leader].log_text()
    );
    let second = wait_successor_after(&runs, &[&first.identity]);
    assert!(
        second.token > first.token,
        "a larger fencing token: {second:?} after {first:?}"
    );
    let old_writes: Vec<RequestRecord> = requests_of(&server, &first.identity, 0)
        .into_iter()
        .filter(is_write)
        .collect();
    let [.., last_renew, release] = &old_writes[..] else {
        panic!("the leader acquired, renewed and released: {old_writes:?}");
    };
    let acquire = requests_of(&server, &second.identity, before_term)
        .into_iter()
        .find(is_write)
        .expect("the successor's acquire");
    assert!(release.at <= acquire.at, "the release came first");
    // A take-over by expiry could not come before the last renew + LD: this one came through the release.
    assert!(
        acquire.at < last_renew.at + LD,
        "the successor acquired the released Lease without waiting for expiry"
    );

    // SIGKILL the new leader: no release; another takes over once the Lease expires.
    let successor = replicas
        .iter()
        .position(|r| r.identity == second.identity)
        .expect("the successor is one of ours");
    replicas[successor].signal(Signal::SIGKILL);
    let killed_at = now_ns();
    replicas[successor]
        .wait_exit(WAIT)
        .expect("SIGKILL ends it");
    let third = wait_successor_after(&runs, &[&first.identity, &second.identity]);
    assert!(
        third.token > second.token,
        "a larger fencing token: {third:?} after {second:?}"
    );
    assert!(third.start_ns > killed_at, "no take-over before the kill");
    let killed_last_write = requests_of(&server, &second.identity, 0)
        .into_iter()
        .filter(is_write)
        .map(|r| r.at)
        .next_back()
        .expect("the killed leader wrote the Lease");
    let third_acquire = requests_of(&server, &third.identity, 0)
        .into_iter()
        .filter(|r| is_write(r) && r.at > killed_last_write)
        .map(|r| r.at)
        .next()
        .expect("the third leader's acquire");
    assert!(
        third_acquire >= killed_last_write + LD,
        "the killed leader's Lease was taken only after it expired"
    );
    assert_eq!(
        lease_holder(&server).as_deref(),
        Some(third.identity.as_str())
    );

    // Let the last leader run, then check every pair of runs. The killed leader's unfinished run died with
    // it (PR_SET_PDEATHSIG), at the kill at the latest; the stopped leader's, before it exited.
    let all = wait_runs(&runs, 2, &read_recorded_runs(&runs));
    assert_no_overlap(&all, |run| {
        if run.identity == second.identity {
            killed_at
        } else if run.identity == first.identity {
            stopped_at
        } else {
            now_ns()
        }
    });
    for (i, replica) in replicas.iter_mut().enumerate() {
        if i != leader && i != successor {
            replica.stop_cleanly();
        }
    }
    assert_eq!(lease_holder(&server), None, "the last leader released");
}

/// Waits until the first run of someone not in `olds`; returns it.
fn wait_successor_after(runs: &Path, olds: &[&str]) -> RecordedRun {
    wait_for(WAIT, || {
        read_recorded_runs(runs)
            .into_iter()
            .find(|r| !olds.contains(&r.identity.as_str()))
    })
    .unwrap_or_else(|| panic!("nobody took over from {olds:?}"))
}

fn a_lease_deleted_mid_term_leaves_the_leader_running_jobs_with_a_larger_token(which: Which) {
    use k8s_openapi::api::coordination::v1::Lease;
    use kube::api::{Api, DeleteParams};
    let Some((runtime, server)) =
        FakeApiServer::start_in_background_on(which, "a_lease_deleted_mid_term")
    else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let runs = dir.path().join("runs");
    let jobs = recording_job(dir.path(), &runs);
    let start = |identity: &str| {
        let kubeconfig = server.kubeconfig(dir.path(), identity);
        Replica::start_on_kube(dir.path(), identity, &jobs, &kubeconfig, &FAST_TIMINGS)
    };
    // Two terms, so that the run state (the ConfigMap leasecron-state) records token 2.
    let mut first = start("kube-a");
    wait_runs(&runs, 1, &[]);
    first.stop_cleanly();
    let mut leader = start("kube-a");
    wait_for(WAIT, || {
        let all = read_recorded_runs(&runs);
        all.iter()
            .any(|r| r.token == 2 && r.end_ns.is_some())
            .then_some(())
    })
    .unwrap_or_else(|| panic!("a second term: {:?}", read_recorded_runs(&runs)));
    let mut follower = start("kube-b");
    std::thread::sleep(Duration::from_secs(1));

    // Someone deletes the Lease (`kubectl delete lease leasecron`).
    runtime
        .block_on(async {
            Api::<Lease>::namespaced(server.client("admin").await, server.namespace())
                .delete(LEASE, &DeleteParams::default())
                .await
        })
        .expect("the Lease is deleted");
    let all = wait_for(WAIT, || {
        let all = read_recorded_runs(&runs);
        let done = all
            .iter()
            .filter(|r| r.token > 2 && r.end_ns.is_some())
            .count();
        (done >= 3).then_some(all)
    })
    .unwrap_or_else(|| panic!("runs with a token above 2: {:?}", read_recorded_runs(&runs)));
    for pair in all.windows(2) {
        assert!(
            pair[0].token <= pair[1].token,
            "the fencing token went backwards: {pair:?}"
        );
    }
    assert!(
        all.iter()
            .filter(|r| r.token > 2)
            .all(|r| r.identity == "kube-a"),
        "the leader takes its Lease back: {all:?}"
    );
    let token = leader.status().expect("/status")["fencing_token"]
        .as_u64()
        .expect("a leader's token");
    assert!(token > 2);
    let lease = server
        .object(Resource::Leases, server.namespace(), LEASE)
        .expect("the Lease exists again");
    assert_eq!(
        lease["spec"]["leaseTransitions"].as_u64(),
        Some(token),
        "the token is the Lease's leaseTransitions, for client-go peers and later terms: {lease}"
    );
    assert_eq!(leader.http_get("/readyz").map(|r| r.status), Some(200));
    leader.stop_cleanly();
    follower.stop_cleanly();
}

on_both_servers!(
    processes:
    three_replicas_on_the_kube_lease_hand_over_on_sigterm_and_sigkill_without_overlapping_runs,
    a_lease_deleted_mid_term_leaves_the_leader_running_jobs_with_a_larger_token,
);
