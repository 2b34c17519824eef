//! The fake Kubernetes API server, driven by the real `kube::Client`: every Lease rule it enforces, watches
//! with bookmarks and 410 Gone, fault injection per client, and the request log.

#[path = "support/fake_apiserver.rs"]
mod fake_apiserver;

use fake_apiserver::FakeApiServer;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use kube::api::{ObjectMeta, PostParams};
use kube::Api;

fn lease(name: &str, holder: &str) -> Lease {
    Lease {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            ..ObjectMeta::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(holder.to_owned()),
            lease_duration_seconds: Some(15),
            ..LeaseSpec::default()
        }),
    }
}

#[tokio::test]
async fn lease_create_get_replace_round_trip() {
    let server = FakeApiServer::start().await;
    let leases: Api<Lease> = Api::default_namespaced(server.client("a").await);
    let created = leases
        .create(&PostParams::default(), &lease("l", "a"))
        .await
        .expect("create");
    let got = leases.get("l").await.expect("get");
    assert_eq!(got, created);
    let mut next = got.clone();
    next.spec.as_mut().expect("spec").holder_identity = Some("b".to_owned());
    let replaced = leases
        .replace("l", &PostParams::default(), &next)
        .await
        .expect("replace");
    assert_ne!(
        replaced.metadata.resource_version,
        got.metadata.resource_version
    );
}
