//! The operator commands on a Kubernetes Lease, on the fake API server and on the real one (through the
//! fake in proxy mode): with exactly the operator Role that `deploy/operator` ships, every command works
//! (the jobs from the default ConfigMap `leasecron-jobs`, the requests in `leasecron-controls`, the
//! operator's name from a SelfSubjectReview where the server has the API); a refused request exits 2
//! naming the rule, an unavailable API exits 1, and no request outlives `--request-timeout`.

use crate::on_both_servers;
use crate::support::fake_apiserver::{FakeApiServer, Fault, PolicyRule, Resource, Verb, Which};
use crate::support::{replica, repo};

use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, PostParams};
use leasecron::cmd::operate::local_user;
use leasecron::kubernetes::controls::ControlsConfigMap;
use serde_json::json;

const ADMIN: &str = "admin";
const JOBS: &str = "jobs:
  - name: tick
    schedule: \"*/10 * * * *\"
    shell: \"true\"
  - name: backup
    schedule: \"0 3 * * *\"
    shell: \"true\"
";

/// Creates the ConfigMap `name` with `data`, as an administrator.
async fn create(server: &FakeApiServer, name: &str, data: serde_json::Value) {
    let config_map: ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": name}, "data": data}))
            .expect("a ConfigMap");
    Api::<ConfigMap>::namespaced(server.client(ADMIN).await, server.namespace())
        .create(&PostParams::default(), &config_map)
        .await
        .expect("create the ConfigMap");
}

/// `leasecron ARGS` as the user `token` of `server`, with nothing from the environment choosing the
/// Lease.
fn run_as(server: &FakeApiServer, dir: &Path, token: &str, args: &[&str]) -> Output {
    replica::leasecron()
        .args(args)
        .env("KUBECONFIG", server.kubeconfig(dir, token))
        .env_remove("POD_NAMESPACE")
        .env_remove("LEASECRON_LEASE_NAME")
        .env_remove("LEASECRON_LEASE_NAMESPACE")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .output()
        .expect("spawn leasecron")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn the_operator_role_is_all_the_commands_need(which: Which) {
    let Some((runtime, server)) =
        FakeApiServer::start_in_background_on(which, "the_operator_role_is_all")
    else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let namespace = server.namespace().to_owned();
    runtime.block_on(async {
        create(&server, "leasecron-jobs", json!({"jobs.yaml": JOBS})).await;
        // As deploy/core ships it: without data.
        create(&server, "leasecron-controls", json!({})).await;
    });
    let role = repo::yaml("deploy/operator/role.yaml");
    server.grant(
        "alice",
        PolicyRule::of_role(&role).expect("the operator Role's rules"),
    );
    // The real API server says who the user is; the fake has no SelfSubjectReview.
    let who = match which {
        Which::Real => "alice".to_owned(),
        Which::Fake => local_user(),
    };
    let run = |args: &[&str]| {
        let out = run_as(&server, dir.path(), "alice", args);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", stderr(&out));
        stdout(&out)
    };

    let status = run(&["status"]);
    let lines: Vec<&str> = status.lines().collect();
    assert_eq!(
        lines[0],
        format!("lease: Lease {namespace}/leasecron: none yet (no replica has run on it)")
    );
    assert_eq!(
        lines[1],
        format!("jobs: configmap/{namespace}/leasecron-jobs/jobs.yaml")
    );
    assert!(
        lines[4].starts_with("tick    */10 * * * *  UTC   no         0        -  "),
        "{status}"
    );

    let filed = run(&["trigger", "tick"]);
    assert!(
        filed.contains(&format!(
            ": trigger tick, filed by {who} in configmap {namespace}/leasecron-controls\n"
        )),
        "{filed}"
    );
    run(&["suspend", "tick", "--note", "db migration"]);
    let json: serde_json::Value =
        serde_json::from_str(&run(&["status", "tick", "-o", "json"])).expect("JSON");
    assert_eq!(json["jobs"][0]["suspension"]["by"], who.as_str());
    assert_eq!(json["jobs"][0]["suspension"]["note"], "db migration");
    assert_eq!(
        json["jobs"][0]["requests"].as_array().map(Vec::len),
        Some(2)
    );
    run(&["resume", "tick"]);
    run(&[
        "backfill",
        "backup",
        "--from",
        "2026-01-01T00:00:00Z",
        "--to",
        "2026-01-03T00:00:00Z",
    ]);
    assert_eq!(
        run(&["history", "tick"]),
        format!("no run of tick is recorded in configmap {namespace}/leasecron-state\n")
    );
    let out = run_as(&server, dir.path(), "alice", &["trigger", "nope"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert_eq!(
        stderr(&out),
        format!(
            "leasecron: no job nope in configmap/{namespace}/leasecron-jobs/jobs.yaml; jobs: tick, backup\n"
        )
    );

    // What the commands filed, as the replicas read it.
    let controls = runtime.block_on(async {
        let store = ControlsConfigMap::new(
            server.config(ADMIN).await,
            &namespace,
            "leasecron",
            Duration::from_secs(5),
        )
        .expect("the store");
        store.load().await.expect("reads").controls
    });
    let filed: Vec<(&str, &str, &str)> = controls
        .requests
        .iter()
        .map(|r| (r.kind.as_str(), r.job.as_str(), r.by.as_str()))
        .collect();
    assert_eq!(
        filed,
        [
            ("trigger", "tick", who.as_str()),
            ("suspend", "tick", who.as_str()),
            ("resume", "tick", who.as_str()),
            ("backfill", "backup", who.as_str()),
        ]
    );
    assert!(controls.suspended.is_empty());
}

fn a_refusal_exits_2_and_an_unavailable_api_1_within_the_request_timeout(which: Which) {
    let Some((runtime, server)) = FakeApiServer::start_in_background_on(which, "a_refusal_exits_2")
    else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    runtime.block_on(create(
        &server,
        "leasecron-jobs",
        json!({"jobs.yaml": JOBS}),
    ));

    // No `update` (nor `create`) on ConfigMaps: nothing can be filed.
    server.deny("bob", Resource::ConfigMaps, &[Verb::Update, Verb::Create]);
    let out = run_as(&server, dir.path(), "bob", &["trigger", "tick"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.starts_with(&format!(
            "leasecron: configmap {}/leasecron-controls: ",
            server.namespace()
        )) && err.contains("forbidden"),
        "{err}"
    );

    // Every request answered 503: a failure at run time.
    server.faults("carol").set(Fault::Status(503));
    let out = run_as(&server, dir.path(), "carol", &["status"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("the Kubernetes API is unavailable"),
        "{}",
        stderr(&out)
    );

    // Every request hangs: each gives up after --request-timeout.
    server.faults("dave").set(Fault::Hang);
    let started = Instant::now();
    let out = run_as(
        &server,
        dir.path(),
        "dave",
        &["trigger", "tick", "--request-timeout", "1s"],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("no answer within 1s"),
        "{}",
        stderr(&out)
    );
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
}

on_both_servers!(processes:
    the_operator_role_is_all_the_commands_need,
    a_refusal_exits_2_and_an_unavailable_api_1_within_the_request_timeout,
);
