//! The Role that `deploy/` ships against what `leasecron run` really asks of the API server.
//!
//! Two replicas, each a real `leasecron run` process limited to exactly the rules of
//! `deploy/core/role.yaml` (the fake API server evaluates them as the RBAC authorizer does, `resourceNames`
//! included), with the lease timings of `deploy/core/deployment.yaml`, go through a whole life: the access
//! checks at start, the election, runs that write the run state, Events, jobs read from the mounted file
//! (as the Deployment does) and from the API (`--jobs-configmap`), a live edit, a graceful handover and a
//! shutdown. Then:
//!
//! - no request was refused, and every request is within a rule of the Role;
//! - every verb the Role grants, on every name it grants it for, was used, except the grants listed in
//!   [`UNUSED_GRANTS`], each with its reason;
//! - each rule is needed: without it, `run` refuses to start and names it (Events excepted: without them
//!   `run` warns and carries on).

#[path = "support/fake_apiserver.rs"]
mod fake_apiserver;
#[path = "support/replica.rs"]
mod replica;

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;
use std::time::Duration;

use fake_apiserver::{
    verb_name, FakeApiServer, PolicyRule, RequestRecord, Resource, Verb, NAMESPACE,
};
use replica::{wait_for, Replica};
use serde_json::{json, Value};

const ROLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/core/role.yaml");
const DEPLOYMENT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/core/deployment.yaml");
/// How long a step may take; the handover is by release, so nothing waits a lease duration.
const WAIT: Duration = Duration::from_secs(30);
/// The administrator's bearer token: not limited by the Role.
const ADMIN: &str = "admin";

/// Grants of the Role that the life above does not use, each with the reason it is granted anyway.
const UNUSED_GRANTS: &[(&str, &str, &str, Option<&str>, &str)] = &[
    (
        "",
        "configmaps",
        "list",
        Some("leasecron-jobs"),
        "the jobs ConfigMap is read with GET and WATCH only; list on that one name gives nothing more",
    ),
    (
        "events.k8s.io",
        "events",
        "patch",
        None,
        "an Event series update by kube's Recorder is a PATCH; leasecron aggregates itself and creates",
    ),
];

/// One grant, or one request, as (API group, plural resource, verb, object name).
type Access = (String, String, String, Option<String>);

fn read_yaml(path: &str) -> Value {
    let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("read {path}: {e}"));
    serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("parse {path}: {e}"))
}

fn role_rules() -> Vec<PolicyRule> {
    let role = read_yaml(ROLE);
    assert_eq!(role["apiVersion"], "rbac.authorization.k8s.io/v1");
    assert_eq!(
        role["kind"], "Role",
        "namespaced: a Role, not a ClusterRole"
    );
    PolicyRule::of_role(&role).unwrap_or_else(|e| panic!("{ROLE}: {e}"))
}

/// What the Deployment's container runs with: its `run` arguments, and the jobs ConfigMap it mounts.
struct Deployed {
    args: Vec<String>,
    jobs_config_map: String,
}

impl Deployed {
    fn read() -> Deployed {
        let deployment = read_yaml(DEPLOYMENT);
        let pod = &deployment["spec"]["template"]["spec"];
        let container = &pod["containers"][0];
        let args: Vec<String> = container["args"]
            .as_array()
            .expect("the container has args")
            .iter()
            .map(|arg| arg.as_str().expect("string args").to_owned())
            .collect();
        assert_eq!(args.first().map(String::as_str), Some("run"), "{args:?}");
        let jobs_config_map = pod["volumes"]
            .as_array()
            .expect("the pod has volumes")
            .iter()
            .find_map(|volume| volume["configMap"]["name"].as_str())
            .expect("a ConfigMap volume")
            .to_owned();
        Deployed {
            args,
            jobs_config_map,
        }
    }

    /// The value of `flag` in the arguments.
    fn flag(&self, flag: &str) -> Option<&str> {
        let at = self.args.iter().position(|arg| arg == flag)?;
        self.args.get(at + 1).map(String::as_str)
    }

    fn lease_name(&self) -> &str {
        self.flag("--lease-name").unwrap_or("leasecron")
    }

    /// The election flags the Deployment passes (the lease timings and name), for a replica here.
    fn election_args(&self) -> Vec<&str> {
        let mut args = Vec::new();
        for flag in [
            "--lease-name",
            "--lease-duration",
            "--renew-deadline",
            "--retry-period",
        ] {
            if let Some(value) = self.flag(flag) {
                args.extend([flag, value]);
            }
        }
        args
    }
}

/// Jobs firing every second: the leader's runs write the run state and its Events at once.
fn jobs_text(names: &[&str]) -> String {
    let mut text = String::from("jobs:\n");
    for name in names {
        text.push_str(&format!(
            "  - name: {name}\n    schedule: \"* * * * * *\"\n    command: [\"true\"]\n"
        ));
    }
    text
}

fn admin_put_jobs(
    server: &FakeApiServer,
    runtime: &tokio::runtime::Runtime,
    name: &str,
    text: &str,
) {
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::{Api, Patch, PatchParams, PostParams};
    runtime.block_on(async {
        let api: Api<ConfigMap> = Api::namespaced(server.client(ADMIN).await, NAMESPACE);
        let data = json!({ "jobs.yaml": text });
        if api.get_opt(name).await.expect("get").is_some() {
            api.patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({ "data": data })),
            )
            .await
            .expect("edit the jobs ConfigMap");
        } else {
            let config_map: ConfigMap = serde_json::from_value(json!({
                "apiVersion": "v1", "kind": "ConfigMap",
                "metadata": { "name": name, "namespace": NAMESPACE },
                "data": data,
            }))
            .expect("a ConfigMap");
            api.create(&PostParams::default(), &config_map)
                .await
                .expect("create the jobs ConfigMap");
        }
    });
}

/// Whether `replica` leads and has finished a run of job `job` itself (not one the run state records).
fn ran(replica: &Replica, job: &str) -> bool {
    replica.status().is_some_and(|s| {
        s["leading"] == true
            && s["jobs"].as_array().is_some_and(|jobs| {
                jobs.iter()
                    .any(|j| j["name"] == job && j["last_run"]["source"] == "this_replica")
            })
    })
}

fn holder(server: &FakeApiServer, lease: &str) -> Option<String> {
    let lease = server.object(Resource::Leases, NAMESPACE, lease)?;
    lease["spec"]["holderIdentity"].as_str().map(str::to_owned)
}

/// The request as RBAC authorizes it; `None` for a `SelfSubjectAccessReview`, which every authenticated
/// user may make (the `system:basic-user` ClusterRole), so the Role need not grant it.
fn access(request: &RequestRecord) -> Option<Access> {
    let resource = request.resource?;
    let verb = verb_name(request.verb.expect("a routed request has a verb")).to_owned();
    let name = request.name.clone().or(request.selected_name.clone());
    Some((
        resource.group().to_owned(),
        resource.plural().to_owned(),
        verb,
        name,
    ))
}

/// Every (group, resource, verb, name) the Role grants, `None` standing for "any name".
fn grants(rules: &[PolicyRule]) -> BTreeSet<Access> {
    let mut grants = BTreeSet::new();
    for rule in rules {
        let names: Vec<Option<String>> = if rule.resource_names.is_empty() {
            vec![None]
        } else {
            rule.resource_names.iter().cloned().map(Some).collect()
        };
        for group in &rule.api_groups {
            for resource in &rule.resources {
                for verb in &rule.verbs {
                    for name in &names {
                        grants.insert((
                            group.clone(),
                            resource.clone(),
                            verb.clone(),
                            name.clone(),
                        ));
                    }
                }
            }
        }
    }
    grants
}

/// Whether `request` is an instance of `grant`.
fn uses(request: &Access, grant: &Access) -> bool {
    request.0 == grant.0
        && request.1 == grant.1
        && request.2 == grant.2
        && (grant.3.is_none() || request.3 == grant.3)
}

#[test]
fn the_role_grants_exactly_what_run_uses() {
    let deployed = Deployed::read();
    let rules = role_rules();
    let lease = deployed.lease_name().to_owned();
    let (runtime, server) = FakeApiServer::start_in_background();
    let dir = tempfile::tempdir().expect("tempdir");
    admin_put_jobs(
        &server,
        &runtime,
        &deployed.jobs_config_map,
        &jobs_text(&["tick"]),
    );

    // r1 reads its jobs from a file, as from the Deployment's mounted ConfigMap; r2 from the API.
    let jobs_file = dir.path().join("jobs.yaml");
    fs::write(&jobs_file, jobs_text(&["tick"])).expect("write the jobs file");
    let jobs_file = jobs_file.to_str().expect("a UTF-8 path").to_owned();
    let election = deployed.election_args();
    let replicas = ["r1", "r2"];
    for token in replicas {
        server.grant(token, rules.clone());
    }
    let mut r1 = Replica::start_on_kube_with(
        dir.path(),
        "r1",
        &["--jobs", &jobs_file],
        &server.kubeconfig(dir.path(), "r1"),
        &election,
    );
    wait_for(WAIT, || ran(&r1, "tick").then_some(()))
        .unwrap_or_else(|| panic!("r1 never led and ran: {}", r1.log_text()));
    let mut r2 = Replica::start_on_kube_with(
        dir.path(),
        "r2",
        &["--jobs-configmap", &deployed.jobs_config_map],
        &server.kubeconfig(dir.path(), "r2"),
        &election,
    );
    wait_for(WAIT, || {
        r2.status()
            .filter(|s| s["holder"] == "r1" && s["leading"] == false)
    })
    .unwrap_or_else(|| panic!("r2 never followed r1: {}", r2.log_text()));

    // A live edit reaches r2 through its watch; then r1 hands over and r2 runs the edited jobs.
    admin_put_jobs(
        &server,
        &runtime,
        &deployed.jobs_config_map,
        &jobs_text(&["tick", "tock"]),
    );
    wait_for(WAIT, || {
        r2.status()
            .filter(|s| s["jobs"].as_array().is_some_and(|jobs| jobs.len() == 2))
    })
    .unwrap_or_else(|| panic!("r2 never applied the edit: {}", r2.log_text()));
    r1.stop_cleanly();
    wait_for(WAIT, || ran(&r2, "tock").then_some(()))
        .unwrap_or_else(|| panic!("r2 never took over and ran: {}", r2.log_text()));
    assert_eq!(holder(&server, &lease).as_deref(), Some("r2"));
    r2.stop_cleanly();
    assert_eq!(
        holder(&server, &lease).as_deref(),
        Some(""),
        "the Lease was released at shutdown"
    );

    let requests: Vec<RequestRecord> = server
        .requests()
        .into_iter()
        .filter(|r| r.token.as_deref().is_some_and(|t| replicas.contains(&t)))
        .collect();
    let refused: Vec<&RequestRecord> = requests
        .iter()
        .filter(|r| matches!(r.status, Some(401 | 403)))
        .collect();
    assert!(refused.is_empty(), "refused: {refused:#?}");
    let used: BTreeSet<Access> = requests.iter().filter_map(access).collect();
    let granted = grants(&rules);
    for request in &used {
        assert!(
            granted.iter().any(|grant| uses(request, grant)),
            "{request:?} is used but not granted by {ROLE}"
        );
    }
    let unused: BTreeSet<Access> = granted
        .iter()
        .filter(|grant| !used.iter().any(|request| uses(request, grant)))
        .cloned()
        .collect();
    let expected_unused: BTreeSet<Access> = UNUSED_GRANTS
        .iter()
        .map(|(group, resource, verb, name, _why)| {
            (
                group.to_string(),
                resource.to_string(),
                verb.to_string(),
                name.map(str::to_owned),
            )
        })
        .collect();
    assert_eq!(
        unused, expected_unused,
        "grants of {ROLE} that run never used (a new one is a privilege to drop, or to list in \
         UNUSED_GRANTS with its reason); used: {used:#?}"
    );
    // The names the Role grants are the ones the Deployment uses.
    for name in [
        lease.clone(),
        format!("{lease}-state"),
        deployed.jobs_config_map.clone(),
    ] {
        assert!(
            used.iter()
                .any(|access| access.3.as_deref() == Some(name.as_str())),
            "{name} was never accessed by name"
        );
    }
}

/// `run --jobs-configmap` with all the Role's rules but `without`, as r1 was in the test above.
fn start_without(dir: &Path, without: usize) -> (Replica, FakeApiServer, tokio::runtime::Runtime) {
    let deployed = Deployed::read();
    let mut rules = role_rules();
    rules.remove(without);
    let (runtime, server) = FakeApiServer::start_in_background();
    admin_put_jobs(
        &server,
        &runtime,
        &deployed.jobs_config_map,
        &jobs_text(&["tick"]),
    );
    server.grant("r", rules);
    let replica = Replica::start_on_kube_with(
        dir,
        "r",
        &["--jobs-configmap", &deployed.jobs_config_map],
        &server.kubeconfig(dir, "r"),
        &deployed.election_args(),
    );
    (replica, server, runtime)
}

#[test]
fn without_any_one_rule_run_refuses_to_start_naming_it_or_warns_for_events() {
    let rules = role_rules();
    for (at, rule) in rules.iter().enumerate() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut replica, server, _runtime) = start_without(dir.path(), at);
        if rule.api_groups.iter().any(|group| group == "events.k8s.io") {
            wait_for(WAIT, || ran(&replica, "tick").then_some(()))
                .unwrap_or_else(|| panic!("no run without {rule:?}: {}", replica.log_text()));
            wait_for(WAIT, || {
                replica
                    .log_text()
                    .contains("Kubernetes Events disabled")
                    .then_some(())
            })
            .unwrap_or_else(|| panic!("no warning without {rule:?}: {}", replica.log_text()));
            replica.stop_cleanly();
            continue;
        }
        let status = replica
            .wait_exit(WAIT)
            .unwrap_or_else(|| panic!("still running without {rule:?}: {}", replica.log_text()));
        let log = replica.log_text();
        assert_eq!(status.code(), Some(2), "without {rule:?}: {log}");
        let (resource, verb) = (rule.resources[0].as_str(), rule.verbs[0].as_str());
        let names_verb =
            log.contains(&format!("may not {verb}")) || log.contains(&format!("\"{verb}\""));
        assert!(
            names_verb && log.contains(resource),
            "without {rule:?} the message names the verb and the resource: {log}"
        );
        let writes = server
            .requests()
            .iter()
            .filter(|r| {
                r.token.as_deref() == Some("r")
                    && r.resource == Some(Resource::Leases)
                    && matches!(r.verb, Some(Verb::Create | Verb::Update))
            })
            .count();
        assert_eq!(
            writes, 0,
            "without {rule:?}, it never tried to take the Lease"
        );
    }
}
