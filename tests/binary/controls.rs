//! The operator controls at start, as `leasecron run` meets them: an invalid document exits 2 naming where
//! it is (as invalid jobs do: a replica never starts without the suspensions in force), and a replica
//! that may not watch the controls ConfigMap exits 2 naming the rule to add; the Lease is not touched.

use crate::on_both_servers;
use crate::support::{fake_apiserver, replica};

use std::fs;

use fake_apiserver::{FakeApiServer, Resource, Verb, Which};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, PostParams};
use replica::{write_jobs_file, Replica, EXIT_LIMIT, FAST_TIMINGS};
use serde_json::json;

const JOBS: &str =
    "jobs:\n  - name: tick\n    schedule: \"@hourly\"\n    terminationGrace: 100ms\n    command: [\"true\"]\n";

#[test]
fn an_invalid_controls_file_at_start_exits_2_naming_it_and_leaves_the_lease_alone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let jobs = write_jobs_file(dir.path(), JOBS);
    let lease = dir.path().join("lease.json");
    let controls = dir.path().join("lease.json.controls");
    fs::write(
        &controls,
        r#"{"generation": 2, "controls": {"format": 1, "paused": {}}}"#,
    )
    .expect("write the controls");
    let mut replica = Replica::start(dir.path(), "r1", &jobs, &lease, &FAST_TIMINGS);
    let status = replica.wait_exit(EXIT_LIMIT).expect("exits");
    let log = replica.log_text();
    assert_eq!(status.code(), Some(2), "{log}");
    assert!(
        log.contains(&format!(
            "file {}: unknown field `paused`",
            controls.display()
        )) && log.contains("fix the file, or delete it"),
        "{log}"
    );
    assert!(!lease.exists(), "the lease was not touched");
}

fn an_invalid_controls_configmap_at_start_exits_2_naming_it(which: Which) {
    let Some((runtime, server)) =
        FakeApiServer::start_in_background_on(which, "an_invalid_controls_configmap")
    else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let jobs = write_jobs_file(dir.path(), JOBS);
    runtime.block_on(async {
        let config_map: ConfigMap = serde_json::from_value(json!({
            "metadata": {"name": "leasecron-controls"},
            "data": {"controls.json": "{\"format\": 2}"},
        }))
        .expect("a ConfigMap");
        Api::<ConfigMap>::namespaced(server.client("admin").await, server.namespace())
            .create(&PostParams::default(), &config_map)
            .await
            .expect("create")
    });
    let kubeconfig = server.kubeconfig(dir.path(), "r1");
    let mut replica = Replica::start_on_kube(dir.path(), "r1", &jobs, &kubeconfig, &FAST_TIMINGS);
    let status = replica.wait_exit(EXIT_LIMIT).expect("exits");
    let log = replica.log_text();
    assert_eq!(status.code(), Some(2), "{log}");
    assert!(
        log.contains(&format!(
            "configmap {}/leasecron-controls: format 2, this leasecron reads format 1",
            server.namespace()
        )),
        "{log}"
    );
    assert!(
        server
            .object(Resource::Leases, server.namespace(), "leasecron")
            .is_none(),
        "the Lease is not touched"
    );
}

fn a_replica_that_may_not_watch_the_controls_exits_2_naming_the_rule(which: Which) {
    let Some((_runtime, server)) =
        FakeApiServer::start_in_background_on(which, "a_replica_that_may_not_watch")
    else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let jobs = write_jobs_file(dir.path(), JOBS);
    server.deny("r1", Resource::ConfigMaps, &[Verb::Watch]);
    let kubeconfig = server.kubeconfig(dir.path(), "r1");
    let mut replica = Replica::start_on_kube(dir.path(), "r1", &jobs, &kubeconfig, &FAST_TIMINGS);
    let status = replica.wait_exit(EXIT_LIMIT).expect("exits");
    let log = replica.log_text();
    assert_eq!(status.code(), Some(2), "{log}");
    assert!(
        log.contains("may not watch the ConfigMap")
            && log.contains("resourceNames: [\"leasecron-controls\"], verbs: [\"get\", \"watch\"]")
            && log.contains("the leasecron Role in deploy/core grants it"),
        "{log}"
    );
    assert!(
        server
            .object(Resource::Leases, server.namespace(), "leasecron")
            .is_none(),
        "the Lease is not touched"
    );
}

on_both_servers!(
    processes:
    an_invalid_controls_configmap_at_start_exits_2_naming_it,
    a_replica_that_may_not_watch_the_controls_exits_2_naming_the_rule,
);
