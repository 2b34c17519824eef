//! The fake Kubernetes API server, driven by the real `kube::Client`: every Lease and ConfigMap rule it
//! enforces, watches with bookmarks and 410 Gone, fault injection per client, and the request log.

#[path = "support/fake_apiserver.rs"]
mod fake_apiserver;

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::time::Duration;

use fake_apiserver::{FakeApiServer, Fault, Options, Resource, Verb, NAMESPACE};
use futures_util::{Stream, StreamExt};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{
    ApiResource, DeleteParams, DynamicObject, ListParams, ObjectMeta, Patch, PatchParams,
    PostParams, Preconditions, VersionMatch, WatchEvent, WatchParams,
};
use kube::core::Status;
use kube::Api;
use serde_json::json;

/// A bound on waits that should end by themselves, so a broken fake fails instead of hanging the suite.
const SAFETY_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a request under a `Hang` fault is given to (not) answer.
const HANG_PROBE: Duration = Duration::from_millis(300);
/// A short bookmark period, so bookmark tests do not wait long.
const FAST_BOOKMARKS: Duration = Duration::from_millis(50);

fn lease(name: &str, holder: &str) -> Lease {
    Lease {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            ..ObjectMeta::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(holder.to_owned()),
            lease_duration_seconds: Some(15),
            renew_time: Some(MicroTime(k8s_openapi::jiff::Timestamp::now())),
            ..LeaseSpec::default()
        }),
    }
}

fn config_map(name: &str, data: &[(&str, &str)]) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            ..ObjectMeta::default()
        },
        data: Some(
            data.iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        ),
        ..ConfigMap::default()
    }
}

async fn leases(server: &FakeApiServer, token: &str) -> Api<Lease> {
    Api::default_namespaced(server.client(token).await)
}

/// Leases as untyped JSON, to send bodies the typed client would never produce.
async fn raw_leases(server: &FakeApiServer) -> Api<DynamicObject> {
    Api::namespaced_with(
        server.client("raw").await,
        NAMESPACE,
        &ApiResource::erase::<Lease>(&()),
    )
}

fn raw_lease(body: serde_json::Value) -> DynamicObject {
    serde_json::from_value(body).expect("a dynamic object")
}

/// The `metav1.Status` of a failed call.
fn api_error<T: Debug>(result: kube::Result<T>) -> Status {
    match result {
        Err(kube::Error::Api(status)) => *status,
        other => panic!("expected an API error, got {other:?}"),
    }
}

async fn next_event<K, S>(stream: &mut S) -> WatchEvent<K>
where
    S: Stream<Item = kube::Result<WatchEvent<K>>> + Unpin,
{
    tokio::time::timeout(SAFETY_TIMEOUT, stream.next())
        .await
        .expect("a watch event in time")
        .expect("the watch stream is open")
        .expect("a decodable watch event")
}

fn watch_params() -> WatchParams {
    WatchParams {
        bookmarks: true,
        ..WatchParams::default()
    }
    .timeout(60)
}

// === Lease rules ===

#[tokio::test]
async fn lease_create_get_replace_round_trip() {
    let server = FakeApiServer::start().await;
    let leases = leases(&server, "a").await;
    let created = leases
        .create(&PostParams::default(), &lease("l", "a"))
        .await
        .expect("create");
    assert!(created.metadata.uid.is_some() && created.metadata.creation_timestamp.is_some());
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
    assert_eq!(
        replaced.spec.and_then(|s| s.holder_identity).as_deref(),
        Some("b")
    );
}

#[tokio::test]
async fn stale_resource_version_is_a_conflict() {
    let server = FakeApiServer::start().await;
    let leases = leases(&server, "a").await;
    let first = leases
        .create(&PostParams::default(), &lease("l", "a"))
        .await
        .expect("create");
    leases
        .replace("l", &PostParams::default(), &lease_from(&first, "b"))
        .await
        .expect("first replace");
    let status = api_error(
        leases
            .replace("l", &PostParams::default(), &lease_from(&first, "c"))
            .await,
    );
    assert_eq!((status.code, status.reason.as_str()), (409, "Conflict"));
    assert_eq!(
        status.message,
        "Operation cannot be fulfilled on leases.coordination.k8s.io \"l\": the object has been modified; please \
         apply your changes to the latest version and try again"
    );
    assert_eq!(status.details.map(|d| d.name), Some("l".to_owned()));
}

fn lease_from(base: &Lease, holder: &str) -> Lease {
    let mut next = base.clone();
    next.spec
        .get_or_insert_with(LeaseSpec::default)
        .holder_identity = Some(holder.to_owned());
    next
}

#[tokio::test]
async fn update_without_resource_version_is_invalid() {
    let server = FakeApiServer::start().await;
    let leases = leases(&server, "a").await;
    leases
        .create(&PostParams::default(), &lease("l", "a"))
        .await
        .expect("create");
    let status = api_error(
        leases
            .replace("l", &PostParams::default(), &lease("l", "b"))
            .await,
    );
    assert_eq!((status.code, status.reason.as_str()), (422, "Invalid"));
    assert!(
        status
            .message
            .contains("metadata.resourceVersion: Invalid value: 0x0: must be specified"),
        "{status:?}"
    );
    let causes = status.details.expect("details").causes;
    assert_eq!(
        causes.first().map(|c| c.field.as_str()),
        Some("metadata.resourceVersion")
    );
}

#[tokio::test]
async fn replacing_a_missing_lease_creates_it_but_not_a_missing_configmap() {
    let server = FakeApiServer::start().await;
    let created = leases(&server, "a")
        .await
        .replace("l", &PostParams::default(), &lease("l", "a"))
        .await;
    assert_eq!(
        created
            .expect("create on update")
            .spec
            .and_then(|s| s.holder_identity)
            .as_deref(),
        Some("a")
    );
    assert_eq!(server.requests().last().and_then(|r| r.status), Some(201));

    let maps: Api<ConfigMap> = Api::default_namespaced(server.client("a").await);
    let status = api_error(
        maps.replace("m", &PostParams::default(), &config_map("m", &[]))
            .await,
    );
    assert_eq!(
        (status.code, status.reason.as_str(), status.message.as_str()),
        (404, "NotFound", "configmaps \"m\" not found")
    );
}

#[tokio::test]
async fn get_of_a_missing_lease_is_not_found() {
    let server = FakeApiServer::start().await;
    let status = api_error(leases(&server, "a").await.get("missing").await);
    assert_eq!((status.code, status.reason.as_str()), (404, "NotFound"));
    assert_eq!(
        status.message,
        "leases.coordination.k8s.io \"missing\" not found"
    );
}

#[tokio::test]
async fn creating_an_existing_lease_is_already_exists() {
    let server = FakeApiServer::start().await;
    let leases = leases(&server, "a").await;
    leases
        .create(&PostParams::default(), &lease("l", "a"))
        .await
        .expect("create");
    let status = api_error(
        leases
            .create(&PostParams::default(), &lease("l", "b"))
            .await,
    );
    assert_eq!(
        (status.code, status.reason.as_str()),
        (409, "AlreadyExists")
    );
    assert_eq!(
        status.message,
        "leases.coordination.k8s.io \"l\" already exists"
    );
}

#[tokio::test]
async fn micro_time_without_six_fractional_digits_is_rejected() {
    let server = FakeApiServer::start().await;
    let raw = raw_leases(&server).await;
    for renew in [
        "2025-01-01T00:00:00Z",
        "2025-01-01T00:00:00.123Z",
        "2025-01-01T00:00:00.1234567Z",
    ] {
        let body = raw_lease(json!({
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": { "name": "l" }, "spec": { "renewTime": renew },
        }));
        let status = api_error(raw.create(&PostParams::default(), &body).await);
        assert_eq!(
            (status.code, status.reason.as_str()),
            (400, "BadRequest"),
            "{renew}"
        );
        assert!(status.message.contains(renew), "{status:?}");
    }
    let body = raw_lease(json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": { "name": "l" }, "spec": { "renewTime": "2025-01-01T00:00:00.123456+02:00" },
    }));
    raw.create(&PostParams::default(), &body)
        .await
        .expect("six digits and an offset are a MicroTime");
}

#[tokio::test]
async fn lease_spec_validation_mirrors_the_real_server() {
    let server = FakeApiServer::start().await;
    let leases = leases(&server, "a").await;
    let mut bad = lease("l", "a");
    let spec = bad.spec.as_mut().expect("spec");
    spec.lease_duration_seconds = Some(0);
    spec.lease_transitions = Some(-1);
    let status = api_error(leases.create(&PostParams::default(), &bad).await);
    assert_eq!((status.code, status.reason.as_str()), (422, "Invalid"));
    assert!(
        status
            .message
            .starts_with("Lease.coordination.k8s.io \"l\" is invalid: ["),
        "{status:?}"
    );
    let fields: Vec<String> = status
        .details
        .expect("details")
        .causes
        .into_iter()
        .map(|c| c.field)
        .collect();
    assert_eq!(
        fields,
        ["spec.leaseDurationSeconds", "spec.leaseTransitions"]
    );
    assert!(server.object(Resource::Leases, NAMESPACE, "l").is_none());
}

#[tokio::test]
async fn name_or_namespace_differing_from_the_url_is_a_bad_request() {
    let server = FakeApiServer::start().await;
    let leases = leases(&server, "a").await;
    let created = leases
        .create(&PostParams::default(), &lease("l", "a"))
        .await
        .expect("create");
    let mut renamed = created.clone();
    renamed.metadata.name = Some("other".to_owned());
    let status = api_error(leases.replace("l", &PostParams::default(), &renamed).await);
    assert_eq!(
        (status.code, status.message.as_str()),
        (
            400,
            "the name of the object (other) does not match the name on the URL (l)"
        )
    );
    let mut moved = created;
    moved.metadata.namespace = Some("elsewhere".to_owned());
    let status = api_error(leases.replace("l", &PostParams::default(), &moved).await);
    assert_eq!((status.code, status.reason.as_str()), (400, "BadRequest"));
}

#[tokio::test]
async fn create_with_a_resource_version_is_refused() {
    let server = FakeApiServer::start().await;
    let mut with_rv = lease("l", "a");
    with_rv.metadata.resource_version = Some("5".to_owned());
    let status = api_error(
        leases(&server, "a")
            .await
            .create(&PostParams::default(), &with_rv)
            .await,
    );
    assert_eq!(status.code, 500);
    assert!(
        status.message.contains("resourceVersion should not be set"),
        "{status:?}"
    );
}

#[tokio::test]
async fn an_unchanged_update_keeps_the_resource_version() {
    let server = FakeApiServer::start().await;
    let leases = leases(&server, "a").await;
    let created = leases
        .create(&PostParams::default(), &lease("l", "a"))
        .await
        .expect("create");
    let same = leases
        .replace("l", &PostParams::default(), &created)
        .await
        .expect("replace");
    assert_eq!(
        same.metadata.resource_version,
        created.metadata.resource_version
    );
}

#[tokio::test]
async fn delete_honours_the_resource_version_precondition() {
    let server = FakeApiServer::start().await;
    let leases = leases(&server, "a").await;
    let created = leases
        .create(&PostParams::default(), &lease("l", "a"))
        .await
        .expect("create");
    let stale = Preconditions {
        resource_version: Some("1".to_owned()),
        uid: None,
    };
    let status = api_error(
        leases
            .delete("l", &DeleteParams::default().preconditions(stale))
            .await,
    );
    assert_eq!((status.code, status.reason.as_str()), (409, "Conflict"));
    let current = Preconditions {
        resource_version: created.metadata.resource_version.clone(),
        uid: None,
    };
    leases
        .delete("l", &DeleteParams::default().preconditions(current))
        .await
        .expect("delete");
    assert_eq!(api_error(leases.get("l").await).code, 404);
}

#[tokio::test]
async fn configmaps_take_merge_patches() {
    let server = FakeApiServer::start().await;
    let maps: Api<ConfigMap> = Api::default_namespaced(server.client("a").await);
    maps.create(
        &PostParams::default(),
        &config_map("m", &[("keep", "1"), ("drop", "2")]),
    )
    .await
    .expect("create");
    let patch = json!({ "data": { "drop": null, "add": "3" } });
    let patched = maps
        .patch("m", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("patch");
    let expected: BTreeMap<String, String> = [("add", "3"), ("keep", "1")]
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .into();
    assert_eq!(patched.data, Some(expected));
    let stale = json!({ "metadata": { "resourceVersion": "1" }, "data": { "x": "y" } });
    let status = api_error(
        maps.patch("m", &PatchParams::default(), &Patch::Merge(&stale))
            .await,
    );
    assert_eq!((status.code, status.reason.as_str()), (409, "Conflict"));
}

// === ConfigMap rules ===

#[tokio::test]
async fn a_configmap_replaced_at_a_stale_resource_version_is_a_conflict() {
    let server = FakeApiServer::start().await;
    let maps: Api<ConfigMap> = Api::default_namespaced(server.client("a").await);
    let first = maps
        .create(&PostParams::default(), &config_map("m", &[("k", "1")]))
        .await
        .expect("create");
    let mut second = first.clone();
    second.data = config_map("m", &[("k", "2")]).data;
    maps.replace("m", &PostParams::default(), &second)
        .await
        .expect("replace at the current version");
    let mut stale = first.clone();
    stale.data = config_map("m", &[("k", "3")]).data;
    let status = api_error(maps.replace("m", &PostParams::default(), &stale).await);
    assert_eq!((status.code, status.reason.as_str()), (409, "Conflict"));
    assert_eq!(
        status.message,
        "Operation cannot be fulfilled on configmaps \"m\": the object has been modified; please apply \
         your changes to the latest version and try again"
    );
    let stored = server
        .object(Resource::ConfigMaps, NAMESPACE, "m")
        .expect("stored");
    assert_eq!(stored["data"]["k"], "2");
}

#[tokio::test]
async fn configmap_validation_mirrors_the_real_server() {
    let server = FakeApiServer::start().await;
    let maps: Api<ConfigMap> = Api::default_namespaced(server.client("a").await);
    let mut bad = config_map("m", &[("a/b", "x"), ("..k", "y"), ("both", "z")]);
    bad.binary_data = Some(BTreeMap::from([(
        "both".to_owned(),
        k8s_openapi::ByteString(b"z".to_vec()),
    )]));
    let status = api_error(maps.create(&PostParams::default(), &bad).await);
    assert_eq!((status.code, status.reason.as_str()), (422, "Invalid"));
    let causes: Vec<(String, String)> = status
        .details
        .expect("details")
        .causes
        .into_iter()
        .map(|c| (c.field, c.message))
        .collect();
    let fields: Vec<&str> = causes.iter().map(|(f, _)| f.as_str()).collect();
    assert_eq!(
        fields,
        ["data[..k]", "data[a/b]", "data[both]"],
        "{causes:?}"
    );
    assert!(
        causes[0].1.ends_with("must not start with '..'"),
        "{causes:?}"
    );
    assert!(
        causes[2]
            .1
            .ends_with("duplicate of key present in binaryData"),
        "{causes:?}"
    );

    let limit = 1024 * 1024;
    let full = "x".repeat(limit);
    maps.create(&PostParams::default(), &config_map("full", &[("k", &full)]))
        .await
        .expect("1 MiB of values fits");
    let over = "x".repeat(limit / 2 + 1);
    let status = api_error(
        maps.create(
            &PostParams::default(),
            &config_map("over", &[("a", &over), ("b", &over)]),
        )
        .await,
    );
    assert_eq!((status.code, status.reason.as_str()), (422, "Invalid"));
    assert_eq!(
        status.message,
        "ConfigMap \"over\" is invalid: []: Too long: may not be more than 1048576 bytes"
    );
}

#[tokio::test]
async fn a_configmap_value_that_is_not_a_string_is_a_bad_request() {
    let server = FakeApiServer::start().await;
    let raw: Api<DynamicObject> = Api::namespaced_with(
        server.client("raw").await,
        NAMESPACE,
        &ApiResource::erase::<ConfigMap>(&()),
    );
    let body: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": { "name": "m" }, "data": { "n": 1 },
    }))
    .expect("a dynamic object");
    let status = api_error(raw.create(&PostParams::default(), &body).await);
    assert_eq!((status.code, status.reason.as_str()), (400, "BadRequest"));
    assert!(
        status.message.contains("data.n: expected a string"),
        "{status:?}"
    );
}

// === Lists and watches ===

#[tokio::test]
async fn list_returns_the_items_and_the_current_resource_version() {
    let server = FakeApiServer::start().await;
    let leases = leases(&server, "a").await;
    for name in ["x", "y"] {
        leases
            .create(&PostParams::default(), &lease(name, "a"))
            .await
            .expect("create");
    }
    let list = leases.list(&ListParams::default()).await.expect("list");
    let names: Vec<_> = list
        .items
        .iter()
        .filter_map(|l| l.metadata.name.clone())
        .collect();
    assert_eq!(names, ["x", "y"]);
    assert_eq!(
        list.metadata.resource_version,
        Some(server.resource_version().to_string())
    );
    let only_y = leases
        .list(&ListParams::default().fields("metadata.name=y"))
        .await
        .expect("list y");
    assert_eq!(only_y.items.len(), 1);
}

#[tokio::test]
async fn list_at_a_compacted_exact_resource_version_is_gone() {
    let server = FakeApiServer::start().await;
    let leases = leases(&server, "a").await;
    let created = leases
        .create(&PostParams::default(), &lease("l", "a"))
        .await
        .expect("create");
    leases
        .replace("l", &PostParams::default(), &lease_from(&created, "b"))
        .await
        .expect("replace");
    server.compact();
    let rv = created.metadata.resource_version.expect("rv");
    let params = ListParams::default().at(&rv).matching(VersionMatch::Exact);
    let status = api_error(leases.list(&params).await);
    assert_eq!((status.code, status.reason.as_str()), (410, "Expired"));
}

#[tokio::test]
async fn watch_streams_changes_and_bookmarks() {
    let server =
        FakeApiServer::start_with(Options::default().with_bookmark_interval(FAST_BOOKMARKS)).await;
    let leases = leases(&server, "a").await;
    let created = leases
        .create(&PostParams::default(), &lease("l", "a"))
        .await
        .expect("create");
    let mut events = leases
        .watch(&watch_params(), "0")
        .await
        .expect("watch")
        .boxed();
    assert!(matches!(next_event(&mut events).await, WatchEvent::Added(l) if l == created));
    let replaced = leases
        .replace("l", &PostParams::default(), &lease_from(&created, "b"))
        .await
        .expect("replace");
    loop {
        match next_event(&mut events).await {
            WatchEvent::Bookmark(_) => continue,
            WatchEvent::Modified(l) => break assert_eq!(l, replaced),
            other => panic!("unexpected {other:?}"),
        }
    }
    let bookmark = loop {
        if let WatchEvent::Bookmark(bookmark) = next_event(&mut events).await {
            break bookmark;
        }
    };
    assert_eq!(
        Some(bookmark.metadata.resource_version),
        replaced.metadata.resource_version
    );
}

#[tokio::test]
async fn watch_from_a_resource_version_replays_only_later_changes() {
    let server = FakeApiServer::start().await;
    let leases = leases(&server, "a").await;
    let first = leases
        .create(&PostParams::default(), &lease("l", "a"))
        .await
        .expect("create");
    let second = leases
        .replace("l", &PostParams::default(), &lease_from(&first, "b"))
        .await
        .expect("replace");
    leases
        .create(&PostParams::default(), &lease("other", "a"))
        .await
        .expect("create other");
    let rv = first.metadata.resource_version.clone().expect("rv");
    let params = watch_params().fields("metadata.name=l");
    let mut events = leases.watch(&params, &rv).await.expect("watch").boxed();
    assert!(matches!(next_event(&mut events).await, WatchEvent::Modified(l) if l == second));
    leases
        .delete("l", &DeleteParams::default())
        .await
        .expect("delete");
    assert!(
        matches!(next_event(&mut events).await, WatchEvent::Deleted(l) if l.metadata.name.as_deref() == Some("l"))
    );
}

#[tokio::test]
async fn watch_from_a_compacted_resource_version_gets_410_gone() {
    let server = FakeApiServer::start().await;
    let leases = leases(&server, "a").await;
    let created = leases
        .create(&PostParams::default(), &lease("l", "a"))
        .await
        .expect("create");
    leases
        .replace("l", &PostParams::default(), &lease_from(&created, "b"))
        .await
        .expect("replace");
    server.compact();
    let rv = created.metadata.resource_version.expect("rv");
    let mut events = leases
        .watch(&watch_params(), &rv)
        .await
        .expect("watch")
        .boxed();
    match next_event(&mut events).await {
        WatchEvent::Error(status) => {
            assert_eq!((status.code, status.reason.as_str()), (410, "Expired"))
        }
        other => panic!("expected a 410 error event, got {other:?}"),
    }
    assert!(tokio::time::timeout(SAFETY_TIMEOUT, events.next())
        .await
        .expect("the stream ends")
        .is_none());
}

#[tokio::test]
async fn a_small_history_forgets_old_resource_versions() {
    let server = FakeApiServer::start_with(Options::default().with_history_limit(2)).await;
    let leases = leases(&server, "a").await;
    let mut current = leases
        .create(&PostParams::default(), &lease("l", "h0"))
        .await
        .expect("create");
    let first_rv = current.metadata.resource_version.clone().expect("rv");
    for holder in ["h1", "h2", "h3"] {
        current = leases
            .replace("l", &PostParams::default(), &lease_from(&current, holder))
            .await
            .expect("replace");
    }
    let mut events = leases
        .watch(&watch_params(), &first_rv)
        .await
        .expect("watch")
        .boxed();
    assert!(
        matches!(next_event(&mut events).await, WatchEvent::Error(status) if status.code == 410)
    );
}

#[tokio::test]
async fn break_watches_ends_open_streams() {
    let server = FakeApiServer::start().await;
    let leases = leases(&server, "a").await;
    let mut events = leases
        .watch(&watch_params(), "0")
        .await
        .expect("watch")
        .boxed();
    leases
        .create(&PostParams::default(), &lease("l", "a"))
        .await
        .expect("create");
    assert!(matches!(
        next_event(&mut events).await,
        WatchEvent::Added(_)
    ));
    server.break_watches();
    assert!(tokio::time::timeout(SAFETY_TIMEOUT, events.next())
        .await
        .expect("the stream ends")
        .is_none());
    let mut again = leases
        .watch(&watch_params(), "0")
        .await
        .expect("re-watch")
        .boxed();
    assert!(
        matches!(next_event(&mut again).await, WatchEvent::Added(_)),
        "new watches still work"
    );
}

#[tokio::test]
async fn watch_timeout_ends_with_a_bookmark() {
    let server = FakeApiServer::start_with(
        Options::default().with_bookmark_interval(Duration::from_secs(3600)),
    )
    .await;
    let leases = leases(&server, "a").await;
    let mut events = leases
        .watch(&watch_params().timeout(1), "0")
        .await
        .expect("watch")
        .boxed();
    assert!(matches!(
        next_event(&mut events).await,
        WatchEvent::Bookmark(_)
    ));
    assert!(tokio::time::timeout(SAFETY_TIMEOUT, events.next())
        .await
        .expect("the stream ends")
        .is_none());
}

// === Faults and the request log ===

#[tokio::test]
async fn status_faults_apply_only_to_their_client() {
    let server = FakeApiServer::start().await;
    let (a, b) = (leases(&server, "a").await, leases(&server, "b").await);
    a.create(&PostParams::default(), &lease("l", "a"))
        .await
        .expect("create");
    server.faults("a").set(Fault::Status(500));
    let status = api_error(a.get("l").await);
    assert_eq!(
        (status.code, status.reason.as_str()),
        (500, "InternalError")
    );
    b.get("l").await.expect("client b is served");
    server.faults("a").clear();
    a.get("l").await.expect("client a is served again");
}

#[tokio::test]
async fn a_503_fault_is_retried_by_kubes_default_client() {
    let server = FakeApiServer::start().await;
    let mut config = server.config("no-retry").await;
    config.default_retry = false;
    let no_retry: Api<Lease> =
        Api::default_namespaced(kube::Client::try_from(config).expect("client"));
    server.faults("no-retry").set(Fault::Status(503));
    let status = api_error(no_retry.get("l").await);
    assert_eq!(
        (status.code, status.reason.as_str()),
        (503, "ServiceUnavailable")
    );

    let retrying = leases(&server, "retry").await;
    server.faults("retry").set(Fault::Status(503));
    let pending = tokio::spawn(async move { retrying.get("l").await });
    let attempts = || {
        server
            .requests()
            .iter()
            .filter(|r| r.token.as_deref() == Some("retry"))
            .count()
    };
    tokio::time::timeout(SAFETY_TIMEOUT, async {
        while attempts() < 3 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("kube retries the 503");
    server.faults("retry").clear();
    let answer = tokio::time::timeout(SAFETY_TIMEOUT, pending)
        .await
        .expect("the retry ends")
        .expect("join");
    assert_eq!(
        api_error(answer).code,
        404,
        "the retry after the fault is served"
    );
}

#[tokio::test]
async fn faults_can_target_chosen_verbs() {
    let server = FakeApiServer::start().await;
    let leases = leases(&server, "a").await;
    let created = leases
        .create(&PostParams::default(), &lease("l", "a"))
        .await
        .expect("create");
    server
        .faults("a")
        .set_for(&[Verb::Update], Fault::Status(500));
    assert_eq!(
        api_error(
            leases
                .replace("l", &PostParams::default(), &lease_from(&created, "b"))
                .await
        )
        .code,
        500
    );
    leases.get("l").await.expect("reads are served");
    let stored = server
        .object(Resource::Leases, NAMESPACE, "l")
        .expect("stored");
    assert_eq!(
        stored["spec"]["holderIdentity"], "a",
        "a failed update writes nothing"
    );
}

#[tokio::test]
async fn hang_never_answers() {
    let server = FakeApiServer::start().await;
    let leases = leases(&server, "a").await;
    server.faults("a").set(Fault::Hang);
    assert!(
        tokio::time::timeout(HANG_PROBE, leases.get("l"))
            .await
            .is_err(),
        "a hung request has no answer"
    );
    let logged = server.requests();
    assert_eq!(
        logged.last().map(|r| (r.verb, r.status)),
        Some((Some(Verb::Get), None))
    );
}

#[tokio::test]
async fn reset_drops_the_connection_without_an_answer() {
    let server = FakeApiServer::start().await;
    let leases = leases(&server, "a").await;
    server.faults("a").set(Fault::Reset);
    let result = tokio::time::timeout(SAFETY_TIMEOUT, leases.get("l"))
        .await
        .expect("the reset is prompt");
    assert!(
        matches!(result, Err(ref e) if !matches!(e, kube::Error::Api(_))),
        "{result:?}"
    );
    server.faults("a").clear();
    assert_eq!(
        api_error(leases.get("l").await).code,
        404,
        "the client recovers on a new connection"
    );
}

#[tokio::test]
async fn latency_delays_but_serves() {
    let server = FakeApiServer::start().await;
    let leases = leases(&server, "a").await;
    server
        .faults("a")
        .set(Fault::Latency(Duration::from_millis(20)));
    leases
        .create(&PostParams::default(), &lease("l", "a"))
        .await
        .expect("create after the delay");
    assert!(server.object(Resource::Leases, NAMESPACE, "l").is_some());
}

#[tokio::test]
async fn the_request_log_records_every_request() {
    let server = FakeApiServer::start().await;
    let leases = leases(&server, "a").await;
    leases
        .create(&PostParams::default(), &lease("l", "a"))
        .await
        .expect("create");
    let _ = leases.get("missing").await;
    leases.list(&ListParams::default()).await.expect("list");
    let log: Vec<_> = server
        .requests()
        .into_iter()
        .map(|r| (r.token, r.verb, r.resource, r.name, r.status))
        .collect();
    let a = Some("a".to_owned());
    let lease = Some(Resource::Leases);
    assert_eq!(
        log,
        [
            (a.clone(), Some(Verb::Create), lease, None, Some(201)),
            (
                a.clone(),
                Some(Verb::Get),
                lease,
                Some("missing".to_owned()),
                Some(404)
            ),
            (a, Some(Verb::List), lease, None, Some(200)),
        ]
    );
    let times: Vec<_> = server
        .requests()
        .into_iter()
        .map(|r| (r.at, r.wall))
        .collect();
    assert!(
        times
            .windows(2)
            .all(|w| w[0].0 <= w[1].0 && w[0].1 <= w[1].1),
        "in arrival order"
    );
}

#[tokio::test]
async fn kubeconfig_file_gives_a_working_client() {
    let server = FakeApiServer::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = server.kubeconfig(dir.path(), "file-client");
    let kubeconfig = kube::config::Kubeconfig::read_from(&path).expect("read the kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(
        kubeconfig,
        &kube::config::KubeConfigOptions::default(),
    )
    .await
    .expect("config");
    assert_eq!(config.default_namespace, NAMESPACE);
    let leases: Api<Lease> =
        Api::default_namespaced(kube::Client::try_from(config).expect("client"));
    leases
        .create(&PostParams::default(), &lease("l", "a"))
        .await
        .expect("create");
    assert_eq!(
        server
            .requests()
            .last()
            .and_then(|r| r.token.clone())
            .as_deref(),
        Some("file-client")
    );
}

#[tokio::test]
async fn requests_without_a_token_are_unauthorized() {
    let server = FakeApiServer::start().await;
    let response = raw_get(
        &server.url(),
        "/apis/coordination.k8s.io/v1/namespaces/default/leases/l",
    )
    .await;
    assert!(response.starts_with("HTTP/1.1 401"), "{response}");
    assert!(
        response.contains("\"reason\":\"Unauthorized\""),
        "{response}"
    );
}

/// A bare HTTP/1.1 GET without credentials, returning the raw response.
async fn raw_get(url: &str, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = url.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("read");
    response
}
