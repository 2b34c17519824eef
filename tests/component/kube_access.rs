//! RBAC at start, on the fake and on the real API server: a replica that may not get, watch, create or update the Lease is told so before it
//! joins the election (`SelfSubjectAccessReview`), with the verbs and the rule to add; a denied request
//! later is a 403 naming its verb.

use crate::on_both_servers;
use crate::support::{fake_apiserver, kube_electors};

use std::time::Duration;

use fake_apiserver::{FakeApiServer, Resource, Verb as ApiVerb, Which};
use leasecron::kubernetes::lease::{KubeStore, Params};
use leasecron::lease_store::{Error, LeaseStore};

/// The request timeout of these stores: long enough for a loaded machine. An access review that times out
/// proves nothing and is skipped by design, so with the fast timings' 500 ms a slow answer of the real API
/// server would make the reviews and the denials these tests count disappear.
const PATIENT: Duration = Duration::from_secs(20);

/// A store on the Lease for client `token`, with [`PATIENT`] as its request timeout.
async fn store(server: &FakeApiServer, token: &str) -> KubeStore {
    let config = kube_electors::config(server, token).await;
    let params = Params::new(&config.default_namespace, kube_electors::LEASE, PATIENT);
    KubeStore::new(config, params).expect("a store")
}

async fn all_verbs_granted_passes_the_check(which: Which) {
    let Some(server) = FakeApiServer::start_on(which, "all_verbs_granted_passes_the_c").await
    else {
        return;
    };
    let store = store(&server, "a").await;
    store.check_access().await.expect("every verb is allowed");
    let reviews = server
        .requests()
        .iter()
        .filter(|r| r.token.as_deref() == Some("a") && r.resource.is_none())
        .count();
    assert_eq!(
        reviews, 4,
        "one review per verb: get, watch, create, update"
    );
}

async fn denied_verbs_are_named_with_the_rule_to_add(which: Which) {
    let Some(server) = FakeApiServer::start_on(which, "denied_verbs_are_named_with_th").await
    else {
        return;
    };
    server.deny("a", Resource::Leases, &[ApiVerb::Create, ApiVerb::Update]);
    let store = store(&server, "a").await;
    let error = store
        .check_access()
        .await
        .expect_err("create and update are denied");
    let Error::AccessDenied { verbs, .. } = &error else {
        panic!("expected AccessDenied, got {error:?}");
    };
    assert_eq!(verbs, &["create", "update"]);
    let message = error.to_string();
    let namespace = format!("\"{}\"", server.namespace());
    for needle in [
        "create, update",
        "coordination.k8s.io",
        "leases",
        namespace.as_str(),
    ] {
        assert!(message.contains(needle), "{needle} in {message}");
    }
    assert!(
        !error.is_transient(),
        "a missing rule is not fixed by retrying"
    );
}

async fn another_clients_denials_do_not_apply(which: Which) {
    let Some(server) = FakeApiServer::start_on(which, "another_clients_denials_do_not").await
    else {
        return;
    };
    server.deny("b", Resource::Leases, &[ApiVerb::Get]);
    let store = store(&server, "a").await;
    store.check_access().await.expect("a is not b");
}

async fn a_denied_request_is_a_403_naming_its_verb(which: Which) {
    let Some(server) = FakeApiServer::start_on(which, "a_denied_request_is_a_403_nami").await
    else {
        return;
    };
    server.deny("a", Resource::Leases, &[ApiVerb::Get]);
    let store = store(&server, "a").await;
    let error = store.get().await.expect_err("get is denied");
    assert!(matches!(error, Error::Forbidden { .. }), "{error:?}");
    let message = error.to_string();
    assert!(
        message.contains("get") && message.contains("leases"),
        "{message}"
    );
}

async fn run_exits_2_at_start_when_a_verb_is_denied(which: Which) {
    let Some(server) = FakeApiServer::start_on(which, "run_exits_2_at_start_when_a_ve").await
    else {
        return;
    };
    server.deny("denied", Resource::Leases, &[ApiVerb::Update]);
    let dir = tempfile::tempdir().expect("tempdir");
    let jobs = dir.path().join("jobs.yaml");
    std::fs::write(&jobs, "jobs: []\n").expect("write jobs");
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_leasecron"))
        .args(["run", "--jobs"])
        .arg(&jobs)
        .args(["--identity", "denied", "--http-addr", "127.0.0.1:0"])
        .env("KUBECONFIG", server.kubeconfig(dir.path(), "denied"))
        .env("HOME", dir.path())
        .env_remove("POD_NAMESPACE")
        .output()
        .await
        .expect("run leasecron");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("may not update leases"), "{stderr}");
    let writes = server
        .requests()
        .iter()
        .filter(|r| {
            r.token.as_deref() == Some("denied")
                && matches!(r.verb, Some(ApiVerb::Create) | Some(ApiVerb::Update))
        })
        .count();
    assert_eq!(writes, 0, "it never tried to take the Lease");
}

async fn granted_rules_match_names_as_the_rbac_authorizer_does(which: Which) {
    use fake_apiserver::PolicyRule;
    use futures_util::StreamExt;
    use k8s_openapi::api::coordination::v1::Lease;
    use kube::api::{Api, ListParams, PostParams, WatchParams};

    let Some(server) = FakeApiServer::start_on(which, "granted_rules_match_names").await else {
        return;
    };
    let rule = |verbs: &[&str], names: &[&str]| PolicyRule {
        api_groups: vec!["coordination.k8s.io".to_owned()],
        resources: vec!["leases".to_owned()],
        verbs: verbs.iter().map(|v| v.to_string()).collect(),
        resource_names: names.iter().map(|n| n.to_string()).collect(),
    };
    server.grant("a", vec![rule(&["get", "list", "watch", "create"], &["x"])]);
    let leases: Api<Lease> = Api::default_namespaced(server.client("a").await);
    let forbidden = |result: Result<_, kube::Error>| matches!(result, Err(kube::Error::Api(status)) if status.code == 403);
    let named = |name: &str| -> Lease {
        serde_json::from_value(serde_json::json!({"metadata": {"name": name}})).expect("a Lease")
    };
    assert!(
        forbidden(
            leases
                .create(&PostParams::default(), &named("x"))
                .await
                .map(drop)
        ),
        "create carries no name: a rule with resourceNames never allows it"
    );
    assert!(
        !forbidden(leases.get_opt("x").await.map(drop)),
        "get of a granted name"
    );
    assert!(
        forbidden(leases.get_opt("y").await.map(drop)),
        "get of another name"
    );
    assert!(
        forbidden(leases.list(&ListParams::default()).await.map(drop)),
        "a list without a name selector"
    );
    assert!(
        !forbidden(
            leases
                .list(&ListParams::default().fields("metadata.name=x"))
                .await
                .map(drop)
        ),
        "a list selecting the granted name"
    );
    let watch = leases
        .watch(
            &WatchParams::default().fields("metadata.name=x").timeout(1),
            "0",
        )
        .await;
    assert!(
        !forbidden(watch.map(drop)),
        "a watch selecting the granted name"
    );
    let watch = leases
        .watch(
            &WatchParams::default().fields("metadata.name=y").timeout(1),
            "0",
        )
        .await;
    let refused = match watch {
        Err(kube::Error::Api(status)) => status.code == 403,
        Err(_) => false,
        Ok(stream) => {
            let first = stream.boxed().next().await;
            matches!(first, Some(Err(kube::Error::Api(status))) if status.code == 403)
        }
    };
    assert!(refused, "a watch selecting another name");
}

on_both_servers!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    all_verbs_granted_passes_the_check,
    denied_verbs_are_named_with_the_rule_to_add,
    another_clients_denials_do_not_apply,
    a_denied_request_is_a_403_naming_its_verb,
    run_exits_2_at_start_when_a_verb_is_denied,
    granted_rules_match_names_as_the_rbac_authorizer_does,
);
