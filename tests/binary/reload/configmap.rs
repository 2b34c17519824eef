//! `leasecron run --jobs-configmap` as a process, on the fake API server and on the real one (through the
//! fake in proxy mode): the jobs come from a ConfigMap
//! read and watched through the API, edits apply live, a broken edit is rejected (log, metric, Event) with
//! the old jobs still running, and start-up problems exit with the right code.

use crate::on_both_servers;
use crate::support::{exposition, fake_apiserver, replica};

use std::fs;
use std::path::Path;
use std::time::Duration;

use exposition::metric;
use fake_apiserver::{FakeApiServer, Resource, Verb, Which};
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use replica::{leasecron, now_ns, wait_for, Replica, FAST_TIMINGS};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(30);
const NAME: &str = "leasecron-jobs";
const ADMIN: &str = "admin";

fn every_second(name: &str, runs: &Path) -> String {
    format!(
        "  - name: {name}\n    schedule: \"* * * * * *\"\n    terminationGrace: 500ms\n    \
         shell: 'echo \"$LEASECRON_JOB $(date +%s%N)\" >> {}'\n",
        runs.display()
    )
}

fn idle(name: &str) -> String {
    format!("  - name: {name}\n    schedule: \"0 0 1 1 *\"\n    terminationGrace: 500ms\n    shell: \"true\"\n")
}

fn jobs(jobs: &[String]) -> String {
    format!("jobs:\n{}", jobs.concat())
}

/// Runs of `job` recorded after `after_ns`.
fn runs_of(runs: &Path, job: &str, after_ns: u128) -> usize {
    fs::read_to_string(runs)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| line.split_once(' '))
        .filter(|(name, ns)| *name == job && ns.parse::<u128>().is_ok_and(|ns| ns > after_ns))
        .count()
}

async fn config_maps(server: &FakeApiServer) -> Api<ConfigMap> {
    Api::namespaced(server.client(ADMIN).await, server.namespace())
}

async fn create(server: &FakeApiServer, text: &str) {
    let config_map: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": NAME},
        "data": {"jobs.yaml": text},
    }))
    .expect("a ConfigMap");
    config_maps(server)
        .await
        .create(&PostParams::default(), &config_map)
        .await
        .expect("create the ConfigMap");
}

/// Edits the key as `kubectl apply` would.
async fn edit(server: &FakeApiServer, text: &str) {
    config_maps(server)
        .await
        .patch(
            NAME,
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"jobs.yaml": text}})),
        )
        .await
        .expect("patch the ConfigMap");
}

async fn event_reasons(server: &FakeApiServer) -> Vec<(String, String)> {
    let api: Api<Event> = Api::namespaced(server.client(ADMIN).await, server.namespace());
    api.list(&ListParams::default())
        .await
        .expect("list events")
        .items
        .into_iter()
        .map(|e| (e.reason.unwrap_or_default(), e.note.unwrap_or_default()))
        .collect()
}

fn start(dir: &Path, server: &FakeApiServer, identity: &str, source: &str) -> Replica {
    let kubeconfig = server.kubeconfig(dir, identity);
    Replica::start_on_kube_with(
        dir,
        identity,
        &["--jobs-configmap", source],
        &kubeconfig,
        &FAST_TIMINGS,
    )
}

fn edits_of_the_configmap_apply_live_and_a_broken_one_is_rejected(which: Which) {
    let Some((runtime, server)) =
        FakeApiServer::start_in_background_on(which, "edits_of_the_configmap_apply")
    else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let runs = dir.path().join("runs");
    runtime.block_on(create(&server, &jobs(&[every_second("old", &runs)])));
    let mut replica = start(dir.path(), &server, "r1", NAME);
    wait_for(WAIT, || (runs_of(&runs, "old", 0) > 0).then_some(()))
        .unwrap_or_else(|| panic!("the ConfigMap's job runs: {}", replica.log_text()));
    assert_eq!(
        replica.status().expect("status")["config"]["source"],
        format!("configmap/{}/{NAME}/jobs.yaml", server.namespace())
    );

    // An edit adds a job; the old one goes on.
    let edited_at = now_ns();
    runtime.block_on(edit(
        &server,
        &jobs(&[every_second("old", &runs), every_second("new", &runs)]),
    ));
    wait_for(WAIT, || {
        (runs_of(&runs, "new", edited_at) > 0).then_some(())
    })
    .unwrap_or_else(|| panic!("the added job runs: {}", replica.log_text()));

    // A broken edit: rejected, reported, and the jobs in force keep running.
    runtime.block_on(edit(&server, "jobs:\n  - name: old\n    schedule: [\n"));
    wait_for(WAIT, || {
        metric(
            &replica,
            "leasecron_config_reloads_total{result=\"failure\"}",
        )
        .filter(|&n| n >= 1.0)
    })
    .unwrap_or_else(|| panic!("the failure is counted: {}", replica.log_text()));
    let rejected_at = now_ns();
    let origin = format!("configmap/{}/{NAME}/jobs.yaml:3:15", server.namespace());
    // The log reaches its file through leasecron's writer thread, which may lag the metric.
    wait_for(WAIT, || replica.log_text().contains(&origin).then_some(()))
        .unwrap_or_else(|| panic!("the log names {origin}: {}", replica.log_text()));
    assert_eq!(replica.http_get("/readyz").map(|r| r.status), Some(200));
    wait_for(WAIT, || {
        (runs_of(&runs, "old", rejected_at) >= 2 && runs_of(&runs, "new", rejected_at) >= 2)
            .then_some(())
    })
    .unwrap_or_else(|| panic!("the jobs in force keep running: {}", replica.log_text()));
    let reasons = wait_for(WAIT, || {
        let reasons = runtime.block_on(event_reasons(&server));
        reasons
            .iter()
            .any(|(reason, _)| reason == "ConfigReloadFailed")
            .then_some(reasons)
    })
    .unwrap_or_else(|| {
        panic!(
            "a ConfigReloadFailed Event is written: {}",
            replica.log_text()
        )
    });
    let (_, note) = reasons
        .iter()
        .find(|(reason, _)| reason == "ConfigReloadFailed")
        .expect("found above");
    assert!(note.contains(&origin), "{note}");

    // Deleting the ConfigMap is rejected the same way.
    runtime.block_on(async {
        config_maps(&server)
            .await
            .delete(NAME, &Default::default())
            .await
            .expect("delete")
    });
    wait_for(WAIT, || {
        metric(
            &replica,
            "leasecron_config_reloads_total{result=\"failure\"}",
        )
        .filter(|&n| n >= 2.0)
    })
    .unwrap_or_else(|| panic!("the deletion is a failure: {}", replica.log_text()));
    assert_eq!(
        replica.status().expect("status")["jobs"]
            .as_array()
            .map(Vec::len),
        Some(2)
    );
    replica.stop_cleanly();

    // The watch never listed the collection: get and watch on one name suffice.
    let lists = server
        .requests()
        .into_iter()
        .filter(|r| r.resource == Some(Resource::ConfigMaps) && r.verb == Some(Verb::List))
        .count();
    assert_eq!(lists, 0);
}

fn a_key_can_be_named_and_start_up_problems_exit_with_their_code(which: Which) {
    let Some((runtime, server)) =
        FakeApiServer::start_in_background_on(which, "a_key_can_be_named_and_start")
    else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let kubeconfig = server.kubeconfig(dir.path(), "r1");
    let run = |source: &str| {
        leasecron()
            .args([
                "run",
                "--jobs-configmap",
                source,
                "--http-addr",
                "127.0.0.1:0",
            ])
            .args(FAST_TIMINGS)
            .env("KUBECONFIG", &kubeconfig)
            .env("HOME", dir.path())
            .env_remove("POD_NAMESPACE")
            .output()
            .expect("run")
    };

    let missing = run(NAME);
    assert_eq!(missing.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert!(
        stderr.contains("--jobs-configmap") && stderr.contains(NAME),
        "{stderr}"
    );

    runtime.block_on(async {
        let config_map: ConfigMap = serde_json::from_value(json!({
            "metadata": {"name": NAME},
            "data": {"crontab.yaml": jobs(&[idle("a")])},
        }))
        .expect("a ConfigMap");
        config_maps(&server)
            .await
            .create(&PostParams::default(), &config_map)
            .await
            .expect("create")
    });
    let wrong_key = run(NAME);
    assert_eq!(wrong_key.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&wrong_key.stderr);
    assert!(
        stderr.contains("crontab.yaml"),
        "the keys are listed: {stderr}"
    );

    let invalid_ref = run("Not_A_Name");
    assert_eq!(invalid_ref.status.code(), Some(2));

    server.deny("r1", Resource::ConfigMaps, &[Verb::Watch]);
    let denied = run(&format!("{NAME}/crontab.yaml"));
    assert_eq!(denied.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&denied.stderr);
    assert!(
        stderr.contains("watch") && stderr.contains("configmaps"),
        "{stderr}"
    );

    // With the verb granted, NAME/KEY reads that key.
    let dir2 = tempfile::tempdir().expect("tempdir");
    let mut replica = start(dir2.path(), &server, "r2", &format!("{NAME}/crontab.yaml"));
    let status = wait_for(WAIT, || replica.status().filter(|s| s["leading"] == true))
        .unwrap_or_else(|| panic!("r2 leads: {}", replica.log_text()));
    assert_eq!(status["jobs"][0]["name"], "a");
    replica.stop_cleanly();
}

#[test]
fn jobs_and_jobs_configmap_are_mutually_exclusive_and_one_is_required() {
    let both = leasecron()
        .args(["run", "--jobs", "x.yaml", "--jobs-configmap", NAME])
        .output()
        .expect("run");
    assert_eq!(both.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&both.stderr);
    assert!(stderr.contains("--jobs-configmap"), "{stderr}");
    let neither = leasecron().args(["run"]).output().expect("run");
    assert_eq!(neither.status.code(), Some(2));
}

on_both_servers!(
    processes:
    edits_of_the_configmap_apply_live_and_a_broken_one_is_rejected,
    a_key_can_be_named_and_start_up_problems_exit_with_their_code,
);
