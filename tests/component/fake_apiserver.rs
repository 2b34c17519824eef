//! The fake Kubernetes API server against the real one (kube-apiserver v1.37.2 of tools/kube-testenv):
//! every rule the fake enforces is a test that runs on both (`fake::NAME` and `real::NAME`, through the
//! proxy, which forwards everything but injected faults), so the fake cannot drift from the server it
//! stands in for. The tests only the fake can do (compaction on demand, its bookmark pace, its history
//! bound, its own refusal of server-side apply) say so; two tests talk to real servers of their own
//! (compaction, and the watch cache's 410). docs/fake-apiserver.md lists the differences found.

use crate::on_both_servers;
use crate::support::fake_apiserver;

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderMap, Method, Request};
use fake_apiserver::real as real_server;
use fake_apiserver::real::RealApiServer;
use fake_apiserver::{FakeApiServer, Fault, Options, Resource, Verb, Which};
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
use serde_json::{json, Value};

/// A bound on waits that should end by themselves, so a broken server fails instead of hanging the suite.
const SAFETY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a request under a `Hang` fault is given to (not) answer.
const HANG_PROBE: Duration = Duration::from_millis(300);
/// A short bookmark period, for the fake-only tests of the fake's bookmark pace.
const FAST_BOOKMARKS: Duration = Duration::from_millis(50);
/// The real watch cache's bookmark period (about a minute): the fake in the conformance tests keeps its
/// pace, so that only the bookmarks both servers send are seen.
const REAL_BOOKMARK_PERIOD: Duration = Duration::from_secs(60);
/// The `timeoutSeconds` of watches that wait for the bookmark the real server sends 2 s before the end.
const SHORT_WATCH_SECONDS: u32 = 5;

/// The server `which` for the test `name`: the fake (with the real server's bookmark pace) or the real
/// server behind the proxy, in a namespace of the test's own. `None`: no real server here (skipped).
async fn start(which: Which, name: &str) -> Option<FakeApiServer> {
    match which {
        Which::Fake => Some(
            FakeApiServer::start_with(
                Options::default().with_bookmark_interval(REAL_BOOKMARK_PERIOD),
            )
            .await,
        ),
        Which::Real => FakeApiServer::start_real(name).await,
    }
}

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

fn lease_from(base: &Lease, holder: &str) -> Lease {
    let mut next = base.clone();
    next.spec
        .get_or_insert_with(LeaseSpec::default)
        .holder_identity = Some(holder.to_owned());
    next
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
    Api::namespaced(server.client(token).await, server.namespace())
}

async fn config_maps(server: &FakeApiServer, token: &str) -> Api<ConfigMap> {
    Api::namespaced(server.client(token).await, server.namespace())
}

/// Leases as untyped JSON, to send bodies the typed client would never produce.
async fn raw_leases(server: &FakeApiServer) -> Api<DynamicObject> {
    Api::namespaced_with(
        server.client("raw").await,
        server.namespace(),
        &ApiResource::erase::<Lease>(&()),
    )
}

fn dynamic(body: Value) -> DynamicObject {
    serde_json::from_value(body).expect("a dynamic object")
}

/// The `metav1.Status` of a failed call.
fn api_error<T: Debug>(result: kube::Result<T>) -> Status {
    match result {
        Err(kube::Error::Api(status)) => *status,
        other => panic!("expected an API error, got {other:?}"),
    }
}

/// The collection URL of `resource` in the server's namespace.
fn collection(server: &FakeApiServer, resource: Resource) -> String {
    let path = resource.object_path(server.namespace(), "x");
    path.trim_end_matches("/x").to_owned()
}

/// One raw answer: status, headers and the body as JSON (`Null` if it is not JSON).
#[derive(Debug)]
struct Answer {
    code: u16,
    headers: HeaderMap,
    body: Value,
}

impl Answer {
    /// The `Warning` headers.
    fn warnings(&self) -> Vec<String> {
        self.headers
            .get_all("warning")
            .iter()
            .filter_map(|v| v.to_str().ok().map(str::to_owned))
            .collect()
    }

    /// `(field, message)` of each cause of a Status body.
    fn causes(&self) -> Vec<(String, String)> {
        self.body["details"]["causes"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|cause| {
                (
                    cause["field"].as_str().unwrap_or_default().to_owned(),
                    cause["message"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect()
    }

    fn message(&self) -> &str {
        self.body["message"].as_str().unwrap_or_default()
    }
}

/// A raw request of client `token` (kube's retries off), for bodies, headers and content types the typed
/// client does not produce.
async fn raw(
    server: &FakeApiServer,
    token: &str,
    method: Method,
    path: &str,
    content_type: &str,
    body: Vec<u8>,
) -> Answer {
    let mut config = server.config(token).await;
    config.default_retry = false;
    let client = kube::Client::try_from(config).expect("a kube client");
    send(&client, method, path, content_type, body).await
}

async fn send(
    client: &kube::Client,
    method: Method,
    path: &str,
    content_type: &str,
    body: Vec<u8>,
) -> Answer {
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", content_type)
        .body(kube::client::Body::from(body))
        .expect("a request");
    let response = client.send(request).await.expect("an answer");
    let (parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(axum::body::Body::new(body), 64 * 1024 * 1024)
        .await
        .expect("the body");
    Answer {
        code: parts.status.as_u16(),
        headers: parts.headers,
        body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    }
}

async fn post(server: &FakeApiServer, resource: Resource, body: &Value) -> Answer {
    raw(
        server,
        "raw",
        Method::POST,
        &collection(server, resource),
        "application/json",
        body.to_string().into_bytes(),
    )
    .await
}

async fn put(server: &FakeApiServer, resource: Resource, name: &str, body: &Value) -> Answer {
    raw(
        server,
        "raw",
        Method::PUT,
        &resource.object_path(server.namespace(), name),
        "application/json",
        body.to_string().into_bytes(),
    )
    .await
}

async fn get(server: &FakeApiServer, path: &str) -> Answer {
    raw(
        server,
        "raw",
        Method::GET,
        path,
        "application/json",
        Vec::new(),
    )
    .await
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

/// The next event that is not a bookmark.
async fn next_change<K, S>(stream: &mut S) -> WatchEvent<K>
where
    S: Stream<Item = kube::Result<WatchEvent<K>>> + Unpin,
{
    loop {
        match next_event(stream).await {
            WatchEvent::Bookmark(_) => continue,
            other => return other,
        }
    }
}

async fn stream_ends<K, S>(stream: &mut S)
where
    S: Stream<Item = kube::Result<WatchEvent<K>>> + Unpin,
{
    loop {
        match tokio::time::timeout(SAFETY_TIMEOUT, stream.next())
            .await
            .expect("the stream ends in time")
        {
            None => return,
            Some(Ok(WatchEvent::Bookmark(_))) => continue,
            Some(other) => panic!("expected the end of the stream, got {other:?}"),
        }
    }
}

fn watch_params() -> WatchParams {
    WatchParams {
        bookmarks: true,
        ..WatchParams::default()
    }
    .timeout(60)
}

fn rv_of(object: &impl kube::Resource) -> u64 {
    object
        .meta()
        .resource_version
        .as_deref()
        .and_then(|rv| rv.parse().ok())
        .expect("a numeric resourceVersion")
}

// === Lease rules ===

async fn lease_create_get_replace_round_trip(which: Which) {
    let Some(server) = start(which, "lease_create_get_replace").await else {
        return;
    };
    let leases = leases(&server, "a").await;
    let created = leases
        .create(&PostParams::default(), &lease("l", "a"))
        .await
        .expect("create");
    assert!(created.metadata.uid.is_some() && created.metadata.creation_timestamp.is_some());
    let got = leases.get("l").await.expect("get");
    assert_eq!(got.spec, created.spec);
    assert_eq!(
        got.metadata.resource_version,
        created.metadata.resource_version
    );
    let replaced = leases
        .replace("l", &PostParams::default(), &lease_from(&got, "b"))
        .await
        .expect("replace");
    assert!(rv_of(&replaced) > rv_of(&got));
    assert_eq!(
        replaced.spec.and_then(|s| s.holder_identity).as_deref(),
        Some("b")
    );
}

async fn stale_resource_version_is_a_conflict(which: Which) {
    let Some(server) = start(which, "stale_resource_version").await else {
        return;
    };
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
    let details = status.details.expect("details");
    assert_eq!(
        (
            details.name.as_str(),
            details.group.as_str(),
            details.kind.as_str()
        ),
        ("l", "coordination.k8s.io", "leases")
    );
}

/// A stale resourceVersion is checked before the object is validated: an invalid update at a stale
/// version is a 409, not a 422.
async fn a_stale_invalid_update_is_a_conflict_not_invalid(which: Which) {
    let Some(server) = start(which, "stale_invalid_update").await else {
        return;
    };
    let leases = leases(&server, "a").await;
    let first = leases
        .create(&PostParams::default(), &lease("l", "a"))
        .await
        .expect("create");
    leases
        .replace("l", &PostParams::default(), &lease_from(&first, "b"))
        .await
        .expect("replace");
    let mut invalid = lease_from(&first, "c");
    invalid.spec.as_mut().expect("spec").lease_duration_seconds = Some(0);
    let status = api_error(leases.replace("l", &PostParams::default(), &invalid).await);
    assert_eq!(status.code, 409, "{status:?}");
}

async fn update_without_resource_version_is_invalid(which: Which) {
    let Some(server) = start(which, "update_without_rv").await else {
        return;
    };
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
    assert_eq!(
        status.message,
        "leases.coordination.k8s.io \"l\" is invalid: metadata.resourceVersion: Invalid value: 0: must be \
         specified for an update"
    );
    let details = status.details.expect("details");
    assert_eq!(
        (details.group.as_str(), details.kind.as_str()),
        ("coordination.k8s.io", "leases")
    );
    assert_eq!(
        details
            .causes
            .iter()
            .map(|c| (c.field.as_str(), c.message.as_str(), c.reason.as_str()))
            .collect::<Vec<_>>(),
        [(
            "metadata.resourceVersion",
            "Invalid value: 0: must be specified for an update",
            "FieldValueInvalid"
        )]
    );
}

async fn replacing_a_missing_lease_creates_it_but_not_a_missing_configmap(which: Which) {
    let Some(server) = start(which, "put_creates_leases_not_configmaps").await else {
        return;
    };
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

    let answer = put(
        &server,
        Resource::ConfigMaps,
        "m",
        &json!({ "metadata": { "name": "m" } }),
    )
    .await;
    assert_eq!(answer.code, 404);
    assert_eq!(
        answer.body,
        json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": "configmaps \"m\" not found", "reason": "NotFound",
            "details": { "name": "m", "kind": "configmaps" }, "code": 404,
        }),
        "no group in the details of a core resource"
    );
}

async fn get_of_a_missing_lease_is_not_found(which: Which) {
    let Some(server) = start(which, "get_missing_lease").await else {
        return;
    };
    let answer = get(
        &server,
        &Resource::Leases.object_path(server.namespace(), "missing"),
    )
    .await;
    assert_eq!(
        answer.body,
        json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": "leases.coordination.k8s.io \"missing\" not found", "reason": "NotFound",
            "details": { "name": "missing", "group": "coordination.k8s.io", "kind": "leases" }, "code": 404,
        })
    );
}

async fn creating_an_existing_lease_is_already_exists(which: Which) {
    let Some(server) = start(which, "create_existing_lease").await else {
        return;
    };
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

/// `MicroTime` is parsed with Go's `time.Parse` and the layout `2006-01-02T15:04:05.000000Z07:00`:
/// exactly six fractional digits, but also a comma before them, a one-digit hour and offsets up to ±24:00;
/// failures carry Go's messages, and accepted times are stored in UTC.
async fn micro_times_are_parsed_as_go_parses_them(which: Which) {
    let Some(server) = start(which, "micro_time_formats").await else {
        return;
    };
    let raw = raw_leases(&server).await;
    let with_renew = |name: &str, renew: &str| {
        dynamic(json!({
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": { "name": name }, "spec": { "renewTime": renew },
        }))
    };
    let layout = "\"2006-01-02T15:04:05.000000Z07:00\"";
    for (renew, why) in [
        (
            "2025-01-01T00:00:00Z",
            format!(" as {layout}: cannot parse \"Z\" as \".000000\""),
        ),
        (
            "2025-01-01T00:00:00.123Z",
            format!(" as {layout}: cannot parse \".123Z\" as \".000000\""),
        ),
        (
            "2025-01-01T00:00:00.1234567Z",
            format!(" as {layout}: cannot parse \"7Z\" as \"Z07:00\""),
        ),
        (
            "2025-01-01t00:00:00.123456Z",
            format!(" as {layout}: cannot parse \"t00:00:00.123456Z\" as \"T\""),
        ),
        (
            "2025-01-01T00:00:00.123456+0200",
            format!(" as {layout}: cannot parse \"+0200\" as \"Z07:00\""),
        ),
        (
            "2025-02-30T00:00:00.123456Z",
            ": day out of range".to_owned(),
        ),
        (
            "2025-13-01T00:00:00.123456Z",
            ": month out of range".to_owned(),
        ),
        (
            "2025-01-01T24:00:00.123456Z",
            ": hour out of range".to_owned(),
        ),
        (
            "2025-01-01T00:00:00.123456Z0",
            ": extra text: \"0\"".to_owned(),
        ),
    ] {
        let status = api_error(
            raw.create(&PostParams::default(), &with_renew("l", renew))
                .await,
        );
        assert_eq!(
            (status.code, status.message.as_str()),
            (
                400,
                format!(
                    "Lease in version \"v1\" cannot be handled as a Lease: parsing time \"{renew}\"{why}"
                )
                .as_str()
            ),
        );
    }
    for (n, (renew, stored)) in [
        (
            "2025-01-01T00:00:00.123456+02:00",
            "2024-12-31T22:00:00.123456Z",
        ),
        ("2025-01-01T00:00:00,123456Z", "2025-01-01T00:00:00.123456Z"),
        ("2025-01-01T0:00:00.123456Z", "2025-01-01T00:00:00.123456Z"),
        (
            "2025-01-01T00:00:00.123456+24:00",
            "2024-12-31T00:00:00.123456Z",
        ),
        (
            "2025-01-01T00:00:00.123456-00:00",
            "2025-01-01T00:00:00.123456Z",
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let name = format!("ok{n}");
        raw.create(&PostParams::default(), &with_renew(&name, renew))
            .await
            .unwrap_or_else(|e| panic!("{renew} is a MicroTime: {e}"));
        let got = server
            .object(Resource::Leases, server.namespace(), &name)
            .expect("stored");
        assert_eq!(got["spec"]["renewTime"], stored, "{renew}");
    }
}

async fn lease_spec_validation_mirrors_the_real_server(which: Which) {
    let Some(server) = start(which, "lease_spec_validation").await else {
        return;
    };
    let leases = leases(&server, "a").await;
    let mut bad = lease("l", "a");
    let spec = bad.spec.as_mut().expect("spec");
    spec.lease_duration_seconds = Some(0);
    spec.lease_transitions = Some(-1);
    let status = api_error(leases.create(&PostParams::default(), &bad).await);
    assert_eq!((status.code, status.reason.as_str()), (422, "Invalid"));
    assert_eq!(
        status.message,
        "Lease.coordination.k8s.io \"l\" is invalid: [spec.leaseDurationSeconds: Invalid value: 0: must be \
         greater than 0, spec.leaseTransitions: Invalid value: -1: must be greater than or equal to 0]"
    );
    let details = status.details.expect("details");
    assert_eq!(
        (details.group.as_str(), details.kind.as_str()),
        ("coordination.k8s.io", "Lease")
    );
    let fields: Vec<String> = details.causes.into_iter().map(|c| c.field).collect();
    assert_eq!(
        fields,
        ["spec.leaseDurationSeconds", "spec.leaseTransitions"]
    );
    bad.spec.as_mut().expect("spec").lease_transitions = None;
    bad.spec.as_mut().expect("spec").lease_duration_seconds = Some(-5);
    let status = api_error(leases.create(&PostParams::default(), &bad).await);
    assert_eq!(
        status.message,
        "Lease.coordination.k8s.io \"l\" is invalid: spec.leaseDurationSeconds: Invalid value: -5: must be \
         greater than 0"
    );
    assert!(server
        .object(Resource::Leases, server.namespace(), "l")
        .is_none());
}

/// `strategy` and `preferredHolder` belong to the `CoordinatedLeaderElection` feature gate, off by
/// default: the server drops them (so a `preferredHolder` without a `strategy` is not refused either).
async fn lease_strategy_and_preferred_holder_are_dropped(which: Which) {
    let Some(server) = start(which, "lease_strategy_dropped").await else {
        return;
    };
    for (name, spec) in [
        ("h", json!({ "preferredHolder": "x" })),
        (
            "s",
            json!({ "strategy": "OldestEmulationVersion", "preferredHolder": "x" }),
        ),
        ("b", json!({ "strategy": "Bogus", "holderIdentity": "a" })),
    ] {
        let answer = post(
            &server,
            Resource::Leases,
            &json!({ "metadata": { "name": name }, "spec": spec }),
        )
        .await;
        assert_eq!(answer.code, 201, "{answer:?}");
        let spec = &answer.body["spec"];
        assert!(
            spec.get("strategy").is_none() && spec.get("preferredHolder").is_none(),
            "{spec}"
        );
    }
}

async fn name_or_namespace_differing_from_the_url_is_a_bad_request(which: Which) {
    let Some(server) = start(which, "name_namespace_url").await else {
        return;
    };
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
    let nameless = put(
        &server,
        Resource::Leases,
        "l",
        &json!({ "metadata": { "resourceVersion": created.metadata.resource_version } }),
    )
    .await;
    assert_eq!(
        (nameless.code, nameless.message()),
        (
            400,
            "the name of the object (l based on URL) was undeterminable: name must be provided"
        )
    );
    let mut moved = created;
    moved.metadata.namespace = Some("elsewhere".to_owned());
    let status = api_error(leases.replace("l", &PostParams::default(), &moved).await);
    assert_eq!(
        (status.code, status.message.as_str()),
        (
            400,
            "the namespace of the provided object does not match the namespace sent on the request"
        )
    );
}

/// etcd refuses a create that carries a resourceVersion: a 500 without a reason.
async fn create_with_a_resource_version_is_refused(which: Which) {
    let Some(server) = start(which, "create_with_rv").await else {
        return;
    };
    let answer = post(
        &server,
        Resource::Leases,
        &json!({ "metadata": { "name": "l", "resourceVersion": "5" } }),
    )
    .await;
    assert_eq!(
        answer.body,
        json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": "resourceVersion should not be set on objects to be created", "code": 500,
        })
    );
}

async fn an_unchanged_update_keeps_the_resource_version(which: Which) {
    let Some(server) = start(which, "unchanged_update").await else {
        return;
    };
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

/// A `metadata.uid` in an update's body is a storage precondition: another uid is a 409 (before the
/// resourceVersion is looked at), worded as etcd3's `StorageError`.
async fn an_update_with_another_uid_is_a_conflict(which: Which) {
    let Some(server) = start(which, "update_other_uid").await else {
        return;
    };
    let leases = leases(&server, "a").await;
    let created = leases
        .create(&PostParams::default(), &lease("l", "a"))
        .await
        .expect("create");
    let uid = created.metadata.uid.clone().expect("uid");
    let mut other = created;
    other.metadata.uid = Some("x".to_owned());
    other.metadata.resource_version = Some("1".to_owned());
    let status = api_error(leases.replace("l", &PostParams::default(), &other).await);
    assert_eq!((status.code, status.reason.as_str()), (409, "Conflict"));
    assert_eq!(
        status.message,
        format!(
            "Operation cannot be fulfilled on leases.coordination.k8s.io \"l\": StorageError: invalid object, \
             Code: 4, Key: /registry/leases/{}/l, ResourceVersion: 0, AdditionalErrorMsg: Precondition \
             failed: UID in precondition: x, UID in object meta: {uid}",
            server.namespace()
        )
    );
}

async fn delete_honours_its_preconditions(which: Which) {
    let Some(server) = start(which, "delete_preconditions").await else {
        return;
    };
    let leases = leases(&server, "a").await;
    let created = leases
        .create(&PostParams::default(), &lease("l", "a"))
        .await
        .expect("create");
    let (rv, uid) = (
        created.metadata.resource_version.clone().expect("rv"),
        created.metadata.uid.clone().expect("uid"),
    );
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
    assert_eq!(
        status.message,
        format!(
            "Operation cannot be fulfilled on Lease.coordination.k8s.io \"l\": the ResourceVersion in the \
             precondition (1) does not match the ResourceVersion in record ({rv}). The object might have \
             been modified"
        )
    );
    let details = status.details.expect("details");
    assert_eq!(
        (details.group.as_str(), details.kind.as_str()),
        ("coordination.k8s.io", "Lease")
    );
    let other = Preconditions {
        resource_version: None,
        uid: Some("x".to_owned()),
    };
    let status = api_error(
        leases
            .delete("l", &DeleteParams::default().preconditions(other))
            .await,
    );
    assert_eq!(
        status.message,
        format!(
            "Operation cannot be fulfilled on Lease.coordination.k8s.io \"l\": the UID in the precondition (x) \
             does not match the UID in record ({uid}). The object might have been deleted and then recreated"
        )
    );
    let current = Preconditions {
        resource_version: Some(rv),
        uid: Some(uid.clone()),
    };
    let deleted = leases
        .delete("l", &DeleteParams::default().preconditions(current))
        .await
        .expect("delete");
    let status = deleted.right().expect("a Status for a delete");
    assert_eq!(status.details.map(|d| d.uid), Some(uid));
    assert_eq!(api_error(leases.get("l").await).code, 404);
}

/// Unknown fields are dropped, each named in a `Warning` header (the default `fieldValidation=Warn`).
async fn unknown_fields_are_dropped_with_a_warning(which: Which) {
    let Some(server) = start(which, "unknown_fields").await else {
        return;
    };
    let answer = post(
        &server,
        Resource::Leases,
        &json!({ "metadata": { "name": "l", "colour": "red" }, "spec": { "holderIdentity": "a", "bogus": 1 } }),
    )
    .await;
    assert_eq!(answer.code, 201);
    let mut warnings = answer.warnings();
    warnings.sort();
    assert_eq!(
        warnings,
        [
            "299 - \"unknown field \\\"metadata.colour\\\"\"",
            "299 - \"unknown field \\\"spec.bogus\\\"\""
        ]
    );
    assert_eq!(answer.body["spec"], json!({ "holderIdentity": "a" }));
    assert!(answer.body["metadata"].get("colour").is_none());
}

/// What the Go decoder refuses, with its messages: wrongly typed fields, kinds and versions the scheme
/// does not know or cannot convert, another API version of the kind, a body that is not an object.
async fn wrongly_typed_bodies_are_bad_requests(which: Which) {
    let Some(server) = start(which, "wrongly_typed_bodies").await else {
        return;
    };
    let cannot = "Lease in version \"v1\" cannot be handled as a Lease: json: cannot unmarshal";
    for (body, message) in [
        (
            json!({ "metadata": { "name": "l" }, "spec": { "leaseDurationSeconds": 2_147_483_648_i64 } }),
            format!("{cannot} number 2147483648 into Go struct field LeaseSpec.spec.leaseDurationSeconds of type int32"),
        ),
        (
            json!({ "metadata": { "name": "l" }, "spec": { "leaseDurationSeconds": 1.5 } }),
            format!("{cannot} number 1.5 into Go struct field LeaseSpec.spec.leaseDurationSeconds of type int32"),
        ),
        (
            json!({ "metadata": { "name": "l" }, "spec": { "holderIdentity": 5 } }),
            format!("{cannot} number into Go struct field LeaseSpec.spec.holderIdentity of type string"),
        ),
        (
            json!({ "metadata": { "name": "l" }, "spec": { "renewTime": 5 } }),
            format!("{cannot} number into Go struct field LeaseSpec.spec.renewTime of type string"),
        ),
        (
            json!({ "metadata": { "name": "l" }, "spec": "x" }),
            format!("{cannot} string into Go struct field Lease.spec of type v1.LeaseSpec"),
        ),
        (
            json!({ "metadata": { "name": 5 } }),
            format!("{cannot} number into Go struct field ObjectMeta.metadata.name of type string"),
        ),
        (
            json!({ "metadata": { "name": "l", "labels": { "a": 5 } } }),
            format!("{cannot} number into Go struct field ObjectMeta.metadata.labels of type string"),
        ),
        (
            json!({ "kind": "Foo", "metadata": { "name": "l" } }),
            "Foo in version \"v1\" cannot be handled as a Lease: no kind \"Foo\" is registered for version \
             \"coordination.k8s.io/v1\" in scheme \"pkg/runtime/scheme.go:111\""
                .to_owned(),
        ),
        (
            json!({ "kind": "Lease", "apiVersion": "v1", "metadata": { "name": "l" } }),
            "Lease in version \"v1\" cannot be handled as a Lease: no kind \"Lease\" is registered for version \
             \"v1\" in scheme \"pkg/runtime/scheme.go:111\""
                .to_owned(),
        ),
        (
            json!({ "kind": "Event", "apiVersion": "v1", "metadata": { "name": "l" } }),
            "Event in version \"v1\" cannot be handled as a Lease: converting (v1.Event) to \
             (coordination.Lease): unknown conversion"
                .to_owned(),
        ),
        (
            json!({ "kind": "Lease", "apiVersion": "coordination.k8s.io/v1beta1", "metadata": { "name": "l" } }),
            "the API version in the data (coordination.k8s.io/v1beta1) does not match the expected API version \
             (coordination.k8s.io/v1)"
                .to_owned(),
        ),
    ] {
        let answer = post(&server, Resource::Leases, &body).await;
        assert_eq!((answer.code, answer.message()), (400, message.as_str()), "{body}");
        assert_eq!(answer.body["reason"], "BadRequest");
    }
    for body in ["nope", "[]"] {
        let answer = raw(
            &server,
            "raw",
            Method::POST,
            &collection(&server, Resource::Leases),
            "application/json",
            body.as_bytes().to_vec(),
        )
        .await;
        assert_eq!(answer.code, 400, "{body}");
        assert!(
            answer.message().starts_with(
                "the object provided is unrecognized (must be of type Lease): couldn't get version/kind; \
                 json parse error: "
            ),
            "{answer:?}"
        );
    }
}

/// `ValidateObjectMeta`: the name (required, a DNS-1123 subdomain) and the labels (qualified names,
/// label values), with the real server's messages.
async fn names_and_labels_are_validated(which: Which) {
    let Some(server) = start(which, "names_and_labels").await else {
        return;
    };
    let answer = post(&server, Resource::Leases, &json!({ "metadata": {} })).await;
    assert_eq!(
        (answer.code, answer.message()),
        (
            422,
            "Lease.coordination.k8s.io \"\" is invalid: metadata.name: Required value: name or generateName \
             is required"
        )
    );
    let answer = post(
        &server,
        Resource::Leases,
        &json!({ "metadata": { "name": "Bad_Name" } }),
    )
    .await;
    assert_eq!(
        answer.message(),
        "Lease.coordination.k8s.io \"Bad_Name\" is invalid: metadata.name: Invalid value: \"Bad_Name\": a \
         lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must \
         start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is \
         '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
    );
    let answer = post(
        &server,
        Resource::Leases,
        &json!({ "metadata": { "name": "l", "labels": { "a b": "c/d" } } }),
    )
    .await;
    assert_eq!(answer.code, 422);
    assert_eq!(
        answer.causes(),
        [
            (
                "metadata.labels".to_owned(),
                "Invalid value: \"a b\": name part must consist of alphanumeric characters, '-', '_' or '.', and \
                 must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or \
                 '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"
                    .to_owned()
            ),
            (
                "metadata.labels".to_owned(),
                "Invalid value: \"c/d\": a valid label must be an empty string or consist of alphanumeric \
                 characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. \
                 'MyValue',  or 'my_value',  or '12345', regex used for validation is \
                 '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"
                    .to_owned()
            ),
        ]
    );
    let answer = post(
        &server,
        Resource::Leases,
        &json!({ "metadata": { "generateName": "gen-" } }),
    )
    .await;
    assert_eq!(answer.code, 201);
    let name = answer.body["metadata"]["name"].as_str().unwrap_or_default();
    assert!(
        name.starts_with("gen-") && name.len() > "gen-".len(),
        "{name}"
    );
    assert_eq!(
        answer.body["spec"],
        json!({}),
        "Go prints a Lease's spec even when empty"
    );
}

// === ConfigMap rules ===

async fn a_configmap_replaced_at_a_stale_resource_version_is_a_conflict(which: Which) {
    let Some(server) = start(which, "configmap_stale").await else {
        return;
    };
    let maps = config_maps(&server, "a").await;
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
        .object(Resource::ConfigMaps, server.namespace(), "m")
        .expect("stored");
    assert_eq!(stored["data"]["k"], "2");
}

async fn configmap_validation_mirrors_the_real_server(which: Which) {
    let Some(server) = start(which, "configmap_validation").await else {
        return;
    };
    let maps = config_maps(&server, "a").await;
    let mut bad = config_map("m", &[("a/b", "x"), ("..k", "y"), ("both", "z")]);
    bad.binary_data = Some(BTreeMap::from([(
        "both".to_owned(),
        k8s_openapi::ByteString(b"z".to_vec()),
    )]));
    let status = api_error(maps.create(&PostParams::default(), &bad).await);
    assert_eq!((status.code, status.reason.as_str()), (422, "Invalid"));
    // Go validates the keys in map order, which is random: compare as sets.
    let mut causes: Vec<(String, String)> = status
        .details
        .expect("details")
        .causes
        .into_iter()
        .map(|c| (c.field, c.message))
        .collect();
    causes.sort();
    assert_eq!(
        causes,
        [
            ("data[..k]", "Invalid value: \"..k\": must not start with '..'"),
            (
                "data[a/b]",
                "Invalid value: \"a/b\": a valid config key must consist of alphanumeric characters, '-', '_' \
                 or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is \
                 '[-._a-zA-Z0-9]+')"
            ),
            ("data[both]", "Invalid value: \"both\": duplicate of key present in binaryData"),
        ]
        .map(|(f, m)| (f.to_owned(), m.to_owned()))
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

async fn configmap_values_of_the_wrong_type_are_bad_requests(which: Which) {
    let Some(server) = start(which, "configmap_wrong_types").await else {
        return;
    };
    let cannot = "ConfigMap in version \"v1\" cannot be handled as a ConfigMap:";
    for (body, message) in [
        (
            json!({ "metadata": { "name": "m" }, "data": { "n": 1 } }),
            format!("{cannot} json: cannot unmarshal number into Go struct field ConfigMap.data of type string"),
        ),
        (
            json!({ "metadata": { "name": "m" }, "data": [] }),
            format!(
                "{cannot} json: cannot unmarshal array into Go struct field ConfigMap.data of type \
                 map[string]string"
            ),
        ),
        (
            json!({ "metadata": { "name": "m" }, "binaryData": { "a": "!!" } }),
            format!("{cannot} illegal base64 data at input byte 0"),
        ),
        (
            json!({ "metadata": { "name": "m" }, "immutable": "yes" }),
            format!("{cannot} json: cannot unmarshal string into Go struct field ConfigMap.immutable of type bool"),
        ),
    ] {
        let answer = post(&server, Resource::ConfigMaps, &body).await;
        assert_eq!((answer.code, answer.message()), (400, message.as_str()), "{body}");
    }
}

/// A body over the API server's 3 MiB limit is refused before it is read as an object: 413.
async fn a_body_over_three_mib_is_too_large(which: Which) {
    let Some(server) = start(which, "body_over_3_mib").await else {
        return;
    };
    let limit = 3 * 1024 * 1024;
    let sized = |name: &str, size: usize| {
        let empty = json!({ "metadata": { "name": name }, "data": { "k": "" } }).to_string();
        let body = json!({ "metadata": { "name": name }, "data": { "k": "x".repeat(size - empty.len()) } })
            .to_string();
        assert_eq!(body.len(), size);
        body.into_bytes()
    };
    let path = collection(&server, Resource::ConfigMaps);
    let at_limit = raw(
        &server,
        "a",
        Method::POST,
        &path,
        "application/json",
        sized("at", limit),
    )
    .await;
    assert_eq!(
        (at_limit.code, at_limit.body["reason"].as_str()),
        (422, Some("Invalid")),
        "a body of exactly 3 MiB is read (and its ConfigMap is too large)"
    );
    let over = raw(
        &server,
        "a",
        Method::POST,
        &path,
        "application/json",
        sized("over", limit + 1),
    )
    .await;
    assert_eq!(
        over.body,
        json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": "Request entity too large: limit is 3145728", "reason": "RequestEntityTooLarge",
            "code": 413,
        })
    );
}

/// An immutable ConfigMap keeps its data and its immutability.
async fn an_immutable_configmap_cannot_change(which: Which) {
    let Some(server) = start(which, "immutable_configmap").await else {
        return;
    };
    let maps = config_maps(&server, "a").await;
    let mut frozen = config_map("m", &[("k", "1")]);
    frozen.immutable = Some(true);
    let created = maps
        .create(&PostParams::default(), &frozen)
        .await
        .expect("create");
    let mut changed = created.clone();
    changed.data = config_map("m", &[("k", "2")]).data;
    changed.immutable = Some(false);
    let status = api_error(maps.replace("m", &PostParams::default(), &changed).await);
    assert_eq!(
        status.message,
        "ConfigMap \"m\" is invalid: [immutable: Forbidden: field is immutable when `immutable` is set, data: \
         Forbidden: field is immutable when `immutable` is set]"
    );
    let mut labelled = created;
    labelled.metadata.labels = Some(BTreeMap::from([("a".to_owned(), "b".to_owned())]));
    maps.replace("m", &PostParams::default(), &labelled)
        .await
        .expect("metadata may still change");
}

// === Patches ===

async fn configmaps_take_merge_patches(which: Which) {
    let Some(server) = start(which, "merge_patches").await else {
        return;
    };
    let maps = config_maps(&server, "a").await;
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
    let strategic = json!({ "data": { "s": "4" } });
    let patched = maps
        .patch("m", &PatchParams::default(), &Patch::Strategic(&strategic))
        .await
        .expect("a strategic merge patch");
    assert_eq!(patched.data.expect("data")["s"], "4");
    let stale = json!({ "metadata": { "resourceVersion": "1" }, "data": { "x": "y" } });
    let status = api_error(
        maps.patch("m", &PatchParams::default(), &Patch::Merge(&stale))
            .await,
    );
    assert_eq!((status.code, status.reason.as_str()), (409, "Conflict"));
    let invalid = json!({ "data": { "a/b": "x" } });
    let status = api_error(
        maps.patch("m", &PatchParams::default(), &Patch::Merge(&invalid))
            .await,
    );
    assert_eq!((status.code, status.reason.as_str()), (422, "Invalid"));
    let status = api_error(
        maps.patch("missing", &PatchParams::default(), &Patch::Merge(&patch))
            .await,
    );
    assert_eq!(
        (status.code, status.message.as_str()),
        (404, "configmaps \"missing\" not found")
    );
    let path = Resource::ConfigMaps.object_path(server.namespace(), "m");
    let merge = "application/merge-patch+json";
    let answer = raw(&server, "a", Method::PATCH, &path, merge, b"\"x\"".to_vec()).await;
    assert_eq!(
        (answer.code, answer.message()),
        (
            400,
            "error decoding patch: json: cannot unmarshal string into Go value of type map[string]interface {}"
        )
    );
    let answer = raw(
        &server,
        "a",
        Method::PATCH,
        &path,
        "text/plain",
        b"{}".to_vec(),
    )
    .await;
    assert_eq!(
        (
            answer.code,
            answer.body["reason"].as_str(),
            answer.message()
        ),
        (
            415,
            Some("UnsupportedMediaType"),
            "415: Unsupported Media Type"
        )
    );
}

async fn configmaps_take_json_patches(which: Which) {
    let Some(server) = start(which, "json_patches").await else {
        return;
    };
    let maps = config_maps(&server, "a").await;
    maps.create(&PostParams::default(), &config_map("m", &[("a", "1")]))
        .await
        .expect("create");
    let patch = |ops: Value| Patch::<()>::Json(serde_json::from_value(ops).expect("a JSON patch"));
    let patched = maps
        .patch(
            "m",
            &PatchParams::default(),
            &patch(json!([
                { "op": "test", "path": "/data/a", "value": "1" },
                { "op": "add", "path": "/data/b", "value": "2" },
                { "op": "move", "from": "/data/a", "path": "/data/c" },
                { "op": "copy", "from": "/data/b", "path": "/data/d" },
                { "op": "replace", "path": "/data/z", "value": "26" },
            ])),
        )
        .await
        .expect("a JSON patch");
    let expected: BTreeMap<String, String> = [("b", "2"), ("c", "1"), ("d", "2"), ("z", "26")]
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .into();
    assert_eq!(patched.data, Some(expected), "replace adds a missing key");
    for ops in [
        json!([{ "op": "test", "path": "/data/b", "value": "3" }]),
        json!([{ "op": "remove", "path": "/data/missing" }]),
        json!([{ "op": "add", "path": "/nope/x", "value": "1" }]),
        json!([{ "op": "bogus", "path": "/data" }]),
    ] {
        let answer = raw(
            &server,
            "a",
            Method::PATCH,
            &Resource::ConfigMaps.object_path(server.namespace(), "m"),
            "application/json-patch+json",
            ops.to_string().into_bytes(),
        )
        .await;
        assert_eq!(
            (
                answer.code,
                answer.body["reason"].as_str(),
                answer.message()
            ),
            (
                422,
                Some("Invalid"),
                "the server rejected our request due to an error in our request"
            ),
            "{ops}"
        );
    }
}

/// The fake does not implement server-side apply (field ownership): it answers 415, where the real
/// server applies. Fake-only: it tests the fake's own refusal (docs/fake-apiserver.md).
#[tokio::test]
async fn the_fake_refuses_server_side_apply() {
    let server = FakeApiServer::start().await;
    let maps = config_maps(&server, "a").await;
    let applied = config_map("m", &[("k", "1")]);
    let status = api_error(
        maps.patch("m", &PatchParams::apply("test"), &Patch::Apply(&applied))
            .await,
    );
    assert_eq!(
        (status.code, status.reason.as_str()),
        (415, "UnsupportedMediaType")
    );
    assert!(status.message.contains("server-side apply"), "{status:?}");
}

// === Events ===

fn good_event(name: &str, namespace: &str) -> Value {
    json!({
        "metadata": { "name": name },
        "regarding": { "kind": "Lease", "name": "l", "namespace": namespace, "apiVersion": "coordination.k8s.io/v1" },
        "reason": "Acquired", "note": "acquired", "action": "Acquire", "type": "Normal",
        "eventTime": "2025-01-01T00:00:00.000000Z",
        "reportingController": "leasecron", "reportingInstance": "a",
    })
}

/// `events.k8s.io/v1` validates strictly (`ValidateEventCreate`): the legacy rules under the internal
/// field names (`message` for the note, `involvedObject` for `regarding`), then the name, `eventTime`,
/// `type` and the deprecated fields; updates may not change what an Event says.
async fn events_k8s_io_events_are_validated_strictly(which: Which) {
    let Some(server) = start(which, "events_strict").await else {
        return;
    };
    let ns = server.namespace().to_owned();
    let answer = post(&server, Resource::Events, &good_event("good", &ns)).await;
    assert_eq!(answer.code, 201, "{answer:?}");
    assert_eq!(
        (
            &answer.body["deprecatedSource"],
            &answer.body["deprecatedFirstTimestamp"]
        ),
        (&json!({}), &Value::Null),
        "the fields Go always prints"
    );
    let answer = post(
        &server,
        Resource::Events,
        &json!({ "metadata": { "name": "min" } }),
    )
    .await;
    // An event without an involved object's namespace is refused outside "default" (the fake's).
    let elsewhere = if ns == "default" {
        ""
    } else {
        "involvedObject.namespace: Invalid value: \"\": does not match event.namespace, "
    };
    assert_eq!(
        (answer.code, answer.message()),
        (
            422,
            format!(
                "Event \"min\" is invalid: [{elsewhere}eventTime: Required value, type: Invalid value: \"\": \
                 has invalid value: ]"
            )
            .as_str()
        )
    );
    assert_eq!(answer.body["details"]["kind"], "Event");
    assert!(answer.body["details"].get("group").is_none(), "{answer:?}");
    let mut bad = good_event("bad", &ns);
    bad["note"] = json!("n".repeat(1025));
    bad["type"] = json!("Weird");
    bad["reportingController"] = json!("");
    bad["deprecatedCount"] = json!(3);
    bad["series"] = json!({ "count": 1 });
    let answer = post(&server, Resource::Events, &bad).await;
    let fields: Vec<String> = answer.causes().into_iter().map(|(f, _)| f).collect();
    assert_eq!(
        fields,
        [
            "reportingController",
            "reportingController",
            "reportingController",
            "message",
            "series.count",
            "series.lastObservedTime",
            "type",
            "count"
        ],
        "{answer:?}"
    );
    let mut changed = good_event("good", &ns);
    changed["note"] = json!("changed");
    let answer = put(&server, Resource::Events, "good", &changed).await;
    assert_eq!(
        (answer.code, answer.message()),
        (
            422,
            "Event \"good\" is invalid: message: Invalid value: \"changed\": field is immutable"
        )
    );
    let mut series = good_event("good", &ns);
    series["series"] = json!({ "count": 2, "lastObservedTime": "2025-01-01T00:00:01.000000Z" });
    let answer = put(&server, Resource::Events, "good", &series).await;
    assert_eq!(
        answer.code, 200,
        "an event may gain a series, without a resourceVersion: {answer:?}"
    );
}

/// Core `v1` events get only the legacy rules (their names are not even checked), and, as every event,
/// may be updated without a resourceVersion.
async fn core_events_get_only_the_legacy_rules(which: Which) {
    let Some(server) = start(which, "core_events").await else {
        return;
    };
    let ns = server.namespace().to_owned();
    let answer = post(
        &server,
        Resource::CoreEvents,
        &json!({ "metadata": { "name": "Bad_Name" }, "involvedObject": { "namespace": ns } }),
    )
    .await;
    assert_eq!(answer.code, 201, "{answer:?}");
    assert_eq!(
        (
            &answer.body["reportingComponent"],
            &answer.body["source"],
            &answer.body["eventTime"]
        ),
        (&json!(""), &json!({}), &Value::Null)
    );
    let answer = post(
        &server,
        Resource::CoreEvents,
        &json!({ "metadata": { "name": "e" }, "involvedObject": { "namespace": "other" } }),
    )
    .await;
    assert_eq!(
        (answer.code, answer.message()),
        (
            422,
            "Event \"e\" is invalid: involvedObject.namespace: Invalid value: \"other\": does not match \
             event.namespace"
        )
    );
    let answer = post(
        &server,
        Resource::CoreEvents,
        &json!({ "metadata": { "name": "t" }, "involvedObject": { "namespace": ns },
                  "eventTime": "2025-01-01T00:00:00.000000Z" }),
    )
    .await;
    let fields: Vec<String> = answer.causes().into_iter().map(|(f, _)| f).collect();
    assert_eq!(
        fields,
        [
            "reportingComponent",
            "reportingComponent",
            "reportingComponent",
            "reportingInstance",
            "action",
            "reason"
        ]
    );
    let first = put(
        &server,
        Resource::CoreEvents,
        "u",
        &json!({ "metadata": { "name": "u" }, "involvedObject": { "namespace": ns }, "message": "1" }),
    )
    .await;
    assert_eq!(first.code, 201, "PUT creates an event: {first:?}");
    let second = put(
        &server,
        Resource::CoreEvents,
        "u",
        &json!({ "metadata": { "name": "u" }, "involvedObject": { "namespace": ns }, "message": "2" }),
    )
    .await;
    assert_eq!(
        (second.code, &second.body["message"]),
        (200, &json!("2")),
        "an update without a resourceVersion"
    );
}

// === Access reviews and anonymous requests ===

/// `SelfSubjectAccessReview`s answer as RBAC does: allowed with the binding that allows it, denied
/// without a reason; nothing outside the client's Role; exactly one kind of attributes.
async fn access_reviews_answer_as_rbac_does(which: Which) {
    let Some(server) = start(which, "access_reviews").await else {
        return;
    };
    let ns = server.namespace().to_owned();
    let review = |verb: &str, group: &str, resource: &str| {
        json!({
            "apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
            "spec": { "resourceAttributes": { "namespace": ns, "verb": verb, "group": group, "resource": resource, "name": "l" } },
        })
    };
    let ask = |body: Value| {
        let server = &server;
        async move {
            raw(
                server,
                "a",
                Method::POST,
                "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
                "application/json",
                body.to_string().into_bytes(),
            )
            .await
        }
    };
    // The real server's RBAC reads the proxy's new Role through an informer: give it a moment.
    let allowed = tokio::time::timeout(SAFETY_TIMEOUT, async {
        loop {
            let answer = ask(review("get", "coordination.k8s.io", "leases")).await;
            if answer.body["status"]["allowed"] == true || answer.code != 201 {
                break answer;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the Role applies");
    assert_eq!(allowed.code, 201);
    assert_eq!(
        (&allowed.body["kind"], &allowed.body["apiVersion"]),
        (
            &json!("SelfSubjectAccessReview"),
            &json!("authorization.k8s.io/v1")
        )
    );
    assert_eq!(
        allowed.body["status"],
        json!({ "allowed": true, "reason": format!(
            "RBAC: allowed by RoleBinding \"fake-user-a/{ns}\" of Role \"fake-user-a\" to User \"a\""
        ) })
    );
    let other = ask(review("get", "batch", "jobs")).await;
    assert_eq!(other.body["status"], json!({ "allowed": false }));
    server.deny("a", Resource::Leases, &[Verb::Get]);
    let denied = ask(review("get", "coordination.k8s.io", "leases")).await;
    assert_eq!(denied.body["status"], json!({ "allowed": false }));
    let still = ask(review("update", "coordination.k8s.io", "leases")).await;
    assert_eq!(still.body["status"]["allowed"], true);
    let empty = ask(json!({ "spec": {} })).await;
    assert_eq!(
        (empty.code, empty.message()),
        (
            422,
            ".authorization.k8s.io \"\" is invalid: spec: Invalid value: null: exactly one of \
             nonResourceAttributes or resourceAttributes must be specified"
        )
    );
}

/// A request without credentials is `system:anonymous`'s, whom RBAC allows nothing here: 403, not 401.
/// On the real server this asks the server itself (the proxy's clients always carry a token).
async fn a_request_without_credentials_is_anonymous_and_forbidden(which: Which) {
    let Some(server) = start(which, "anonymous").await else {
        return;
    };
    let mut config = match server.real() {
        Some(real) => real_server::config_from(real.admin_kubeconfig(), None).await,
        None => server.config("unused").await,
    };
    config.auth_info = kube::config::AuthInfo::default();
    config.default_retry = false;
    let client = kube::Client::try_from(config).expect("an anonymous client");
    let path = Resource::Leases.object_path(server.namespace(), "l");
    let answer = send(&client, Method::GET, &path, "application/json", Vec::new()).await;
    assert_eq!(
        answer.body,
        json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": format!(
                "leases.coordination.k8s.io \"l\" is forbidden: User \"system:anonymous\" cannot get resource \
                 \"leases\" in API group \"coordination.k8s.io\" in the namespace \"{}\"",
                server.namespace()
            ),
            "reason": "Forbidden",
            "details": { "name": "l", "group": "coordination.k8s.io", "kind": "leases" },
            "code": 403,
        })
    );
}

/// A request RBAC denies is a 403 worded by the RBAC authorizer, the client's user named.
async fn a_denied_request_is_forbidden_as_rbac_words_it(which: Which) {
    let Some(server) = start(which, "rbac_forbidden").await else {
        return;
    };
    server.deny("d", Resource::Leases, &[Verb::Get, Verb::List]);
    let path = Resource::Leases.object_path(server.namespace(), "l");
    let answer = raw(
        &server,
        "d",
        Method::GET,
        &path,
        "application/json",
        Vec::new(),
    )
    .await;
    assert_eq!(
        answer.body,
        json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": format!(
                "leases.coordination.k8s.io \"l\" is forbidden: User \"d\" cannot get resource \"leases\" in \
                 API group \"coordination.k8s.io\" in the namespace \"{}\"",
                server.namespace()
            ),
            "reason": "Forbidden",
            "details": { "name": "l", "group": "coordination.k8s.io", "kind": "leases" },
            "code": 403,
        })
    );
    let list = get(&server, &collection(&server, Resource::Leases)).await;
    assert_eq!(list.code, 200, "another client is not denied");
}

/// A method a route does not take: 405 with the real wording.
async fn a_method_the_route_does_not_take_is_405(which: Which) {
    let Some(server) = start(which, "method_not_allowed").await else {
        return;
    };
    let path = Resource::Leases.object_path(server.namespace(), "l");
    let answer = raw(
        &server,
        "a",
        Method::POST,
        &path,
        "application/json",
        b"{}".to_vec(),
    )
    .await;
    assert_eq!(
        answer.body,
        json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": "the server does not allow this method on the requested resource",
            "reason": "MethodNotAllowed", "details": {}, "code": 405,
        })
    );
}

// === Lists ===

/// A list's items carry no `kind`/`apiVersion`; the list's resourceVersion is at least every item's.
async fn list_returns_the_items_and_a_current_resource_version(which: Which) {
    let Some(server) = start(which, "list_items").await else {
        return;
    };
    let leases = leases(&server, "a").await;
    let mut newest = 0;
    for name in ["x", "y"] {
        let created = leases
            .create(&PostParams::default(), &lease(name, "a"))
            .await
            .expect("create");
        newest = newest.max(rv_of(&created));
    }
    let answer = get(&server, &collection(&server, Resource::Leases)).await;
    assert_eq!(
        (&answer.body["kind"], &answer.body["apiVersion"]),
        (&json!("LeaseList"), &json!("coordination.k8s.io/v1"))
    );
    let items = answer.body["items"].as_array().expect("items");
    let names: Vec<&str> = items
        .iter()
        .map(|item| item["metadata"]["name"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(names, ["x", "y"]);
    assert!(items
        .iter()
        .all(|item| item.get("kind").is_none() && item.get("apiVersion").is_none()));
    let list_rv: u64 = answer.body["metadata"]["resourceVersion"]
        .as_str()
        .and_then(|rv| rv.parse().ok())
        .expect("a list resourceVersion");
    assert!(list_rv >= newest, "{list_rv} < {newest}");
}

async fn lists_take_label_selectors(which: Which) {
    let Some(server) = start(which, "label_selectors").await else {
        return;
    };
    let leases = leases(&server, "a").await;
    for (name, labels) in [
        ("a", vec![("tier", "web"), ("n", "3")]),
        ("b", vec![("tier", "db"), ("n", "10")]),
        ("c", vec![]),
    ] {
        let mut object = lease(name, "h");
        object.metadata.labels = Some(
            labels
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
        );
        leases
            .create(&PostParams::default(), &object)
            .await
            .expect("create");
    }
    for (selector, expected) in [
        ("tier=web", vec!["a"]),
        ("tier==db", vec!["b"]),
        ("tier!=web", vec!["b", "c"]),
        ("tier", vec!["a", "b"]),
        ("!tier", vec!["c"]),
        ("tier in (web, db)", vec!["a", "b"]),
        ("tier notin (web)", vec!["b", "c"]),
        ("n>5", vec!["b"]),
        ("n<5", vec!["a"]),
        ("tier=web,n=3", vec!["a"]),
        ("tier=web,n=10", vec![]),
    ] {
        let list = leases
            .list(&ListParams::default().labels(selector))
            .await
            .unwrap_or_else(|e| panic!("{selector}: {e}"));
        let names: Vec<String> = list
            .items
            .into_iter()
            .filter_map(|l| l.metadata.name)
            .collect();
        assert_eq!(names, expected, "{selector}");
    }
    for (selector, message) in [
        (
            "a===b",
            "unable to parse requirement: found '=', expected: identifier",
        ),
        (
            "Bad Key=x",
            "unable to parse requirement: found 'Key', expected: in, notin, =, ==, !=, gt, lt",
        ),
        ("a=b c", "found 'c', expected: ',' or 'end of string'"),
    ] {
        let status = api_error(leases.list(&ListParams::default().labels(selector)).await);
        assert_eq!(
            (status.code, status.message.as_str()),
            (400, message),
            "{selector}"
        );
    }
}

async fn lists_take_field_selectors(which: Which) {
    let Some(server) = start(which, "field_selectors").await else {
        return;
    };
    let leases = leases(&server, "a").await;
    for name in ["x", "y", "z"] {
        leases
            .create(&PostParams::default(), &lease(name, "a"))
            .await
            .expect("create");
    }
    let ns = server.namespace().to_owned();
    for (selector, expected) in [
        ("metadata.name=y".to_owned(), vec!["y"]),
        ("metadata.name==y".to_owned(), vec!["y"]),
        ("metadata.name!=y".to_owned(), vec!["x", "z"]),
        ("metadata.name=x,metadata.name=y".to_owned(), vec![]),
        (format!("metadata.namespace={ns}"), vec!["x", "y", "z"]),
        ("metadata.namespace=other".to_owned(), vec![]),
    ] {
        let list = leases
            .list(&ListParams::default().fields(&selector))
            .await
            .unwrap_or_else(|e| panic!("{selector}: {e}"));
        let names: Vec<String> = list
            .items
            .into_iter()
            .filter_map(|l| l.metadata.name)
            .collect();
        assert_eq!(names, expected, "{selector}");
    }
    for (selector, message) in [
        (
            "spec.holderIdentity=a",
            "\"spec.holderIdentity\" is not a known field selector: only \"metadata.name\", \"metadata.namespace\"",
        ),
        ("bogus", "invalid selector: 'bogus'; can't understand 'bogus'"),
    ] {
        let status = api_error(leases.list(&ListParams::default().fields(selector)).await);
        assert_eq!(
            (status.code, status.message.as_str()),
            (400, message),
            "{selector}"
        );
    }
}

/// `limit` pages through a list with `continue` tokens, `remainingItemCount` saying how much is left.
async fn lists_page_with_limit_and_continue(which: Which) {
    let Some(server) = start(which, "list_pages").await else {
        return;
    };
    let leases = leases(&server, "a").await;
    for name in ["a", "b", "c", "d", "e"] {
        leases
            .create(&PostParams::default(), &lease(name, "h"))
            .await
            .expect("create");
    }
    let first = leases
        .list(&ListParams::default().limit(2))
        .await
        .expect("page 1");
    assert_eq!(first.metadata.remaining_item_count, Some(3));
    let token = first.metadata.continue_.clone().expect("a continue token");
    let second = leases
        .list(&ListParams::default().limit(2).continue_token(&token))
        .await
        .expect("page 2");
    let third = leases
        .list(
            &ListParams::default()
                .limit(2)
                .continue_token(&second.metadata.continue_.clone().expect("another token")),
        )
        .await
        .expect("page 3");
    assert_eq!(third.metadata.continue_.as_deref().unwrap_or_default(), "");
    assert_eq!(third.metadata.remaining_item_count, None);
    let names: Vec<String> = [first, second, third]
        .into_iter()
        .flat_map(|page| page.items)
        .filter_map(|l| l.metadata.name)
        .collect();
    assert_eq!(names, ["a", "b", "c", "d", "e"]);
}

/// A list at an exact older resourceVersion reads the objects as they were then, and the pages of a list
/// are read at its first page's version: what changed in between is not seen.
async fn lists_read_snapshots(which: Which) {
    let Some(server) = start(which, "list_snapshots").await else {
        return;
    };
    let leases = leases(&server, "a").await;
    let a = leases
        .create(&PostParams::default(), &lease("a", "first"))
        .await
        .expect("create a");
    leases
        .create(&PostParams::default(), &lease("b", "first"))
        .await
        .expect("create b");
    let then = leases.list(&ListParams::default()).await.expect("list");
    let then_rv = then.metadata.resource_version.clone().expect("rv");
    leases
        .replace("a", &PostParams::default(), &lease_from(&a, "second"))
        .await
        .expect("replace a");
    leases
        .delete("b", &DeleteParams::default())
        .await
        .expect("delete b");
    leases
        .create(&PostParams::default(), &lease("c", "first"))
        .await
        .expect("create c");
    let holders = |list: &kube::core::ObjectList<Lease>| -> Vec<(String, String)> {
        list.items
            .iter()
            .map(|l| {
                (
                    l.metadata.name.clone().unwrap_or_default(),
                    l.spec
                        .as_ref()
                        .and_then(|s| s.holder_identity.clone())
                        .unwrap_or_default(),
                )
            })
            .collect()
    };
    let exact = leases
        .list(
            &ListParams::default()
                .at(&then_rv)
                .matching(VersionMatch::Exact),
        )
        .await
        .expect("an exact list");
    assert_eq!(
        exact.metadata.resource_version.as_deref(),
        Some(then_rv.as_str())
    );
    assert_eq!(
        holders(&exact),
        [("a", "first"), ("b", "first")].map(|(n, h)| (n.to_owned(), h.to_owned()))
    );
    let first = leases
        .list(&ListParams::default().limit(1))
        .await
        .expect("page 1");
    assert_eq!(holders(&first), [("a".to_owned(), "second".to_owned())]);
    leases
        .create(&PostParams::default(), &lease("ab", "late"))
        .await
        .expect("create ab");
    let token = first.metadata.continue_.clone().expect("a continue token");
    let second = leases
        .list(&ListParams::default().limit(10).continue_token(&token))
        .await
        .expect("page 2");
    assert_eq!(
        holders(&second),
        [("c".to_owned(), "first".to_owned())],
        "read at the first page's version"
    );
    assert_eq!(
        second.metadata.resource_version,
        first.metadata.resource_version
    );
}

/// A list at a resourceVersion the server has not reached is 504 (after the real server waited 3 s for
/// it); `resourceVersionMatch` needs a resourceVersion (422); a resourceVersion must be a number (400).
async fn list_resource_versions_are_checked(which: Which) {
    let Some(server) = start(which, "list_resource_versions").await else {
        return;
    };
    let path = collection(&server, Resource::Leases);
    let future = get(&server, &format!("{path}?resourceVersion=999999999")).await;
    assert_eq!(
        (future.code, future.body["reason"].as_str()),
        (504, Some("Timeout"))
    );
    assert!(
        future
            .message()
            .starts_with("Timeout: Too large resource version: 999999999, current: "),
        "{future:?}"
    );
    assert_eq!(
        future.body["details"],
        json!({
            "causes": [{ "reason": "ResourceVersionTooLarge", "message": "Too large resource version" }],
            "retryAfterSeconds": 1,
        })
    );
    let unset = get(&server, &format!("{path}?resourceVersionMatch=Exact")).await;
    assert_eq!(
        (unset.code, unset.message()),
        (
            422,
            "ListOptions.meta.k8s.io \"\" is invalid: resourceVersionMatch: Forbidden: resourceVersionMatch is \
             forbidden unless resourceVersion is provided"
        )
    );
    let text = get(&server, &format!("{path}?resourceVersion=abc")).await;
    assert_eq!(
        (text.code, text.message()),
        (
            400,
            "invalid resource version: resourceVersion: Invalid value: \"abc\": strconv.ParseUint: parsing \
             \"abc\": invalid syntax"
        )
    );
}

/// Fake-only: `compact()` is the fake's. The real server's answer to the same list is checked by
/// `real_compaction_expires_lists_and_uncached_watches`.
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
    leases
        .create(&PostParams::default(), &lease("m", "a"))
        .await
        .expect("create m");
    let page = leases
        .list(&ListParams::default().limit(1))
        .await
        .expect("a first page");
    leases
        .create(&PostParams::default(), &lease("n", "a"))
        .await
        .expect("create n");
    server.compact();
    let rv = created.metadata.resource_version.expect("rv");
    let params = ListParams::default().at(&rv).matching(VersionMatch::Exact);
    let status = api_error(leases.list(&params).await);
    assert_eq!(
        (status.code, status.reason.as_str(), status.message.as_str()),
        (
            410,
            "Expired",
            "The resourceVersion for the provided list is too old."
        )
    );
    let mut config = server.config("a").await;
    config.default_retry = false;
    let client = kube::Client::try_from(config).expect("a client");
    let token = page.metadata.continue_.expect("a continue token");
    let rest =
        continue_after_compaction(&client, &collection(&server, Resource::Leases), &token).await;
    assert_eq!(
        rest,
        ["m", "n"],
        "the new token continues at the latest version"
    );
}

/// Continues a list with `token`, whose version has been compacted: 410 with etcd3's message and a token
/// to continue at the latest version; returns the names that token lists.
async fn continue_after_compaction(client: &kube::Client, path: &str, token: &str) -> Vec<String> {
    let expired = send(
        client,
        Method::GET,
        &format!("{path}?limit=10&continue={token}"),
        "application/json",
        Vec::new(),
    )
    .await;
    assert_eq!(
        (expired.code, expired.body["reason"].as_str(), expired.message()),
        (
            410,
            Some("Expired"),
            "The provided continue parameter is too old to display a consistent list result. You can start a \
             new list without the continue parameter, or use the continue token in this response to retrieve \
             the remainder of the results. Continuing with the provided token results in an inconsistent list \
             - objects that were created, modified, or deleted between the time the first chunk was returned \
             and now may show up in the list."
        )
    );
    let fresh = expired.body["metadata"]["continue"]
        .as_str()
        .expect("a token to continue at the latest version");
    let rest = send(
        client,
        Method::GET,
        &format!("{path}?limit=10&continue={fresh}"),
        "application/json",
        Vec::new(),
    )
    .await;
    assert_eq!(rest.code, 200, "{rest:?}");
    rest.body["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|item| {
            item["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect()
}

// === Watches ===

/// A watch from `"0"` with bookmarks: the current objects as `ADDED`, a bookmark marking the end of the
/// initial events, the changes, and a bookmark 2 s before `timeoutSeconds` ends it.
async fn watch_streams_changes_and_bookmarks(which: Which) {
    let Some(server) = start(which, "watch_bookmarks").await else {
        return;
    };
    let leases = leases(&server, "a").await;
    let created = leases
        .create(&PostParams::default(), &lease("l", "a"))
        .await
        .expect("create");
    let params = watch_params()
        .fields("metadata.name=l")
        .timeout(SHORT_WATCH_SECONDS);
    let mut events = leases.watch(&params, "0").await.expect("watch").boxed();
    match next_event(&mut events).await {
        WatchEvent::Added(l) => assert_eq!(l.spec, created.spec),
        other => panic!("expected ADDED, got {other:?}"),
    }
    match next_event(&mut events).await {
        WatchEvent::Bookmark(bookmark) => {
            assert_eq!(
                bookmark
                    .metadata
                    .annotations
                    .get("k8s.io/initial-events-end"),
                Some(&"true".to_owned())
            );
            assert!(
                bookmark
                    .metadata
                    .resource_version
                    .parse::<u64>()
                    .expect("rv")
                    >= rv_of(&created)
            );
        }
        other => panic!("expected the initial-events-end bookmark, got {other:?}"),
    }
    let replaced = leases
        .replace("l", &PostParams::default(), &lease_from(&created, "b"))
        .await
        .expect("replace");
    match next_change(&mut events).await {
        WatchEvent::Modified(l) => assert_eq!(l.spec, replaced.spec),
        other => panic!("expected MODIFIED, got {other:?}"),
    }
    let last = match tokio::time::timeout(SAFETY_TIMEOUT, events.next())
        .await
        .expect("the watch ends in time")
    {
        Some(Ok(WatchEvent::Bookmark(bookmark))) => bookmark,
        Some(other) => panic!("expected a bookmark before the end, got {other:?}"),
        None => panic!("the watch ended without a bookmark"),
    };
    assert!(last.metadata.annotations.is_empty());
    assert!(last.metadata.resource_version.parse::<u64>().expect("rv") >= rv_of(&replaced));
    stream_ends(&mut events).await;
}

/// A watch list (`sendInitialEvents=true`, `resourceVersionMatch=NotOlderThan`): the current objects as
/// `ADDED` whatever the resourceVersion, the bookmark that ends them, then the changes.
async fn a_watch_list_streams_the_current_objects_first(which: Which) {
    let Some(server) = start(which, "watch_list").await else {
        return;
    };
    let leases = leases(&server, "a").await;
    let created = leases
        .create(&PostParams::default(), &lease("l", "a"))
        .await
        .expect("create");
    let params = WatchParams::streaming_lists()
        .fields("metadata.name=l")
        .timeout(30);
    let rv = created.metadata.resource_version.clone().expect("rv");
    let mut events = leases.watch(&params, &rv).await.expect("watch").boxed();
    assert!(
        matches!(next_event(&mut events).await, WatchEvent::Added(l) if l.spec == created.spec)
    );
    match next_event(&mut events).await {
        WatchEvent::Bookmark(bookmark) => assert_eq!(
            bookmark
                .metadata
                .annotations
                .get("k8s.io/initial-events-end"),
            Some(&"true".to_owned())
        ),
        other => panic!("expected the initial-events-end bookmark, got {other:?}"),
    }
    let replaced = leases
        .replace("l", &PostParams::default(), &lease_from(&created, "b"))
        .await
        .expect("replace");
    match next_change(&mut events).await {
        WatchEvent::Modified(l) => assert_eq!(
            l.metadata.resource_version,
            replaced.metadata.resource_version
        ),
        other => panic!("expected MODIFIED, got {other:?}"),
    }
}

/// `ValidateListOptions`: what `resourceVersionMatch` and `sendInitialEvents` may be, for lists and for
/// watches (422 `Invalid` of `ListOptions`).
async fn list_options_are_validated(which: Which) {
    let Some(server) = start(which, "list_options").await else {
        return;
    };
    let path = collection(&server, Resource::Leases);
    let invalid = "ListOptions.meta.k8s.io \"\" is invalid: ";
    for (query, message) in [
        (
            "resourceVersionMatch=Exact",
            "resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden unless resourceVersion is provided",
        ),
        (
            "resourceVersion=0&resourceVersionMatch=Exact",
            "resourceVersionMatch: Forbidden: resourceVersionMatch \"exact\" is forbidden for resourceVersion \"0\"",
        ),
        (
            "resourceVersion=1&resourceVersionMatch=Bogus",
            "resourceVersionMatch: Unsupported value: \"Bogus\": supported values: \"Exact\", \"NotOlderThan\", \"\"",
        ),
        (
            "sendInitialEvents=true",
            "sendInitialEvents: Forbidden: sendInitialEvents is forbidden for list",
        ),
        (
            "watch=1&sendInitialEvents=true&allowWatchBookmarks=true",
            "resourceVersionMatch: Forbidden: sendInitialEvents requires setting resourceVersionMatch to NotOlderThan",
        ),
        (
            "watch=1&resourceVersion=1&resourceVersionMatch=NotOlderThan",
            "resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden for watch unless sendInitialEvents \
             is provided",
        ),
    ] {
        let answer = get(&server, &format!("{path}?{query}")).await;
        assert_eq!(
            (answer.code, answer.message()),
            (422, format!("{invalid}{message}").as_str()),
            "{query}"
        );
        assert_eq!(answer.body["details"]["group"], "meta.k8s.io", "{query}");
    }
}

/// A watch too short for the bookmark 2 s before its end gets none: the stream just ends.
async fn a_short_watch_ends_without_a_bookmark(which: Which) {
    let Some(server) = start(which, "short_watch").await else {
        return;
    };
    let leases = leases(&server, "a").await;
    let created = leases
        .create(&PostParams::default(), &lease("l", "a"))
        .await
        .expect("create");
    let rv = created.metadata.resource_version.expect("rv");
    let mut events = leases
        .watch(&watch_params().timeout(1), &rv)
        .await
        .expect("watch")
        .boxed();
    assert!(tokio::time::timeout(SAFETY_TIMEOUT, events.next())
        .await
        .expect("the stream ends")
        .is_none());
}

async fn watch_from_a_resource_version_replays_only_later_changes(which: Which) {
    let Some(server) = start(which, "watch_replay").await else {
        return;
    };
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
    match next_change(&mut events).await {
        WatchEvent::Modified(l) => assert_eq!(
            l.metadata.resource_version,
            second.metadata.resource_version
        ),
        other => panic!("expected MODIFIED, got {other:?}"),
    }
    leases
        .delete("l", &DeleteParams::default())
        .await
        .expect("delete");
    assert!(
        matches!(next_change(&mut events).await, WatchEvent::Deleted(l) if l.metadata.name.as_deref() == Some("l"))
    );
}

/// An object that starts matching a watch's label selector is `ADDED` for it, one that stops is
/// `DELETED`, as the watch cache filters.
async fn a_label_selector_watch_sees_objects_come_and_go(which: Which) {
    let Some(server) = start(which, "label_watch").await else {
        return;
    };
    let leases = leases(&server, "a").await;
    let created = leases
        .create(&PostParams::default(), &lease("l", "a"))
        .await
        .expect("create");
    let rv = created.metadata.resource_version.clone().expect("rv");
    let params = watch_params().labels("pick=yes");
    let mut events = leases.watch(&params, &rv).await.expect("watch").boxed();
    let mut picked = created.clone();
    picked.metadata.labels = Some(BTreeMap::from([("pick".to_owned(), "yes".to_owned())]));
    let picked = leases
        .replace("l", &PostParams::default(), &picked)
        .await
        .expect("label it");
    match next_change(&mut events).await {
        WatchEvent::Added(l) => assert_eq!(
            l.metadata.resource_version,
            picked.metadata.resource_version
        ),
        other => panic!("expected ADDED, got {other:?}"),
    }
    let mut dropped = picked.clone();
    dropped.metadata.labels = None;
    let dropped = leases
        .replace("l", &PostParams::default(), &dropped)
        .await
        .expect("unlabel it");
    match next_change(&mut events).await {
        WatchEvent::Deleted(l) => {
            assert_eq!(
                l.metadata.resource_version,
                dropped.metadata.resource_version
            );
            assert_eq!(
                l.metadata.labels, picked.metadata.labels,
                "the last state it matched in"
            );
        }
        other => panic!("expected DELETED, got {other:?}"),
    }
}

async fn break_watches_ends_open_streams(which: Which) {
    let Some(server) = start(which, "break_watches").await else {
        return;
    };
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
        next_change(&mut events).await,
        WatchEvent::Added(_)
    ));
    server.break_watches();
    stream_ends(&mut events).await;
    let mut again = leases
        .watch(&watch_params(), "0")
        .await
        .expect("re-watch")
        .boxed();
    assert!(
        matches!(next_change(&mut again).await, WatchEvent::Added(_)),
        "new watches still work"
    );
}

/// Fake-only: `compact()` is the fake's, and a lease watch from a compacted version is a 410 there (as
/// from the real watch cache once its history no longer holds the version: see
/// `real_watch_cache_expires_old_versions`). Events, which the real server watches without a cache, get
/// etcd's message.
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
        WatchEvent::Error(status) => assert_eq!(
            (status.code, status.reason.as_str(), status.message),
            (
                410,
                "Expired",
                format!(
                    "too old resource version: {rv} ({})",
                    server.resource_version()
                )
            )
        ),
        other => panic!("expected a 410 error event, got {other:?}"),
    }
    assert!(tokio::time::timeout(SAFETY_TIMEOUT, events.next())
        .await
        .expect("the stream ends")
        .is_none());
    let events: Api<k8s_openapi::api::events::v1::Event> =
        Api::namespaced(server.client("a").await, server.namespace());
    let mut stream = events
        .watch(&WatchParams::default(), &rv)
        .await
        .expect("watch events")
        .boxed();
    match next_event(&mut stream).await {
        WatchEvent::Error(status) => assert_eq!(
            (status.code, status.message.as_str()),
            (
                410,
                "The resourceVersion for the provided watch is too old."
            )
        ),
        other => panic!("expected a 410 error event, got {other:?}"),
    }
}

/// Fake-only: [`Options::history_limit`] is the fake's stand-in for the watch cache's bounded history.
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

/// Fake-only: the fake's bookmark period is a test knob ([`Options::bookmark_interval`]); the real
/// server's is about a minute.
#[tokio::test]
async fn the_fakes_bookmarks_come_at_its_own_pace() {
    let server =
        FakeApiServer::start_with(Options::default().with_bookmark_interval(FAST_BOOKMARKS)).await;
    let leases = leases(&server, "a").await;
    let created = leases
        .create(&PostParams::default(), &lease("l", "a"))
        .await
        .expect("create");
    let rv = created.metadata.resource_version.clone().expect("rv");
    let mut events = leases
        .watch(&watch_params(), &rv)
        .await
        .expect("watch")
        .boxed();
    for _ in 0..3 {
        match next_event(&mut events).await {
            WatchEvent::Bookmark(bookmark) => {
                assert_eq!(bookmark.metadata.resource_version, rv);
            }
            other => panic!("expected a bookmark, got {other:?}"),
        }
    }
}

// === Faults and the request log (the proxy injects them in front of the real server too) ===

async fn status_faults_apply_only_to_their_client(which: Which) {
    let Some(server) = start(which, "status_faults").await else {
        return;
    };
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

async fn a_503_fault_is_retried_by_kubes_default_client(which: Which) {
    let Some(server) = start(which, "retried_503").await else {
        return;
    };
    let mut config = server.config("no-retry").await;
    config.default_retry = false;
    let no_retry: Api<Lease> = Api::namespaced(
        kube::Client::try_from(config).expect("client"),
        server.namespace(),
    );
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

async fn faults_can_target_chosen_verbs(which: Which) {
    let Some(server) = start(which, "verb_faults").await else {
        return;
    };
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
        .object(Resource::Leases, server.namespace(), "l")
        .expect("stored");
    assert_eq!(
        stored["spec"]["holderIdentity"], "a",
        "a failed update writes nothing"
    );
}

async fn hang_never_answers(which: Which) {
    let Some(server) = start(which, "hang").await else {
        return;
    };
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

async fn reset_drops_the_connection_without_an_answer(which: Which) {
    let Some(server) = start(which, "reset").await else {
        return;
    };
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

async fn latency_delays_but_serves(which: Which) {
    let Some(server) = start(which, "latency").await else {
        return;
    };
    let leases = leases(&server, "a").await;
    server
        .faults("a")
        .set(Fault::Latency(Duration::from_millis(20)));
    leases
        .create(&PostParams::default(), &lease("l", "a"))
        .await
        .expect("create after the delay");
    assert!(server
        .object(Resource::Leases, server.namespace(), "l")
        .is_some());
}

async fn the_request_log_records_every_request(which: Which) {
    let Some(server) = start(which, "request_log").await else {
        return;
    };
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

async fn kubeconfig_file_gives_a_working_client(which: Which) {
    let Some(server) = start(which, "kubeconfig_file").await else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let path = server.kubeconfig(dir.path(), "file-client");
    let kubeconfig = kube::config::Kubeconfig::read_from(&path).expect("read the kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(
        kubeconfig,
        &kube::config::KubeConfigOptions::default(),
    )
    .await
    .expect("config");
    assert_eq!(config.default_namespace, server.namespace());
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

on_both_servers!(
    #[tokio::test]
    lease_create_get_replace_round_trip,
    stale_resource_version_is_a_conflict,
    a_stale_invalid_update_is_a_conflict_not_invalid,
    update_without_resource_version_is_invalid,
    replacing_a_missing_lease_creates_it_but_not_a_missing_configmap,
    get_of_a_missing_lease_is_not_found,
    creating_an_existing_lease_is_already_exists,
    micro_times_are_parsed_as_go_parses_them,
    lease_spec_validation_mirrors_the_real_server,
    lease_strategy_and_preferred_holder_are_dropped,
    name_or_namespace_differing_from_the_url_is_a_bad_request,
    create_with_a_resource_version_is_refused,
    an_unchanged_update_keeps_the_resource_version,
    an_update_with_another_uid_is_a_conflict,
    delete_honours_its_preconditions,
    unknown_fields_are_dropped_with_a_warning,
    wrongly_typed_bodies_are_bad_requests,
    names_and_labels_are_validated,
    a_configmap_replaced_at_a_stale_resource_version_is_a_conflict,
    configmap_validation_mirrors_the_real_server,
    configmap_values_of_the_wrong_type_are_bad_requests,
    a_body_over_three_mib_is_too_large,
    an_immutable_configmap_cannot_change,
    configmaps_take_merge_patches,
    configmaps_take_json_patches,
    events_k8s_io_events_are_validated_strictly,
    core_events_get_only_the_legacy_rules,
    access_reviews_answer_as_rbac_does,
    a_request_without_credentials_is_anonymous_and_forbidden,
    a_denied_request_is_forbidden_as_rbac_words_it,
    a_method_the_route_does_not_take_is_405,
    list_returns_the_items_and_a_current_resource_version,
    lists_take_label_selectors,
    lists_take_field_selectors,
    lists_page_with_limit_and_continue,
    lists_read_snapshots,
    list_resource_versions_are_checked,
    watch_streams_changes_and_bookmarks,
    a_short_watch_ends_without_a_bookmark,
    a_watch_list_streams_the_current_objects_first,
    list_options_are_validated,
    watch_from_a_resource_version_replays_only_later_changes,
    a_label_selector_watch_sees_objects_come_and_go,
    break_watches_ends_open_streams,
    status_faults_apply_only_to_their_client,
    a_503_fault_is_retried_by_kubes_default_client,
    faults_can_target_chosen_verbs,
    hang_never_answers,
    reset_drops_the_connection_without_an_answer,
    latency_delays_but_serves,
    the_request_log_records_every_request,
    kubeconfig_file_gives_a_working_client,
);

// === Real servers of the tests' own ===

/// A real API server of this test's own with `args`, or `None` (after saying why) where there is none
/// and none is required, as [`real_server::shared`] decides.
async fn own_real_server(args: &'static [&'static str]) -> Option<Arc<RealApiServer>> {
    if std::env::var(real_server::MODE_VAR).as_deref() == Ok("skip") {
        eprintln!(
            "SKIPPED on the real API server: {}=skip",
            real_server::MODE_VAR
        );
        return None;
    }
    match tokio::task::spawn_blocking(move || RealApiServer::start(args))
        .await
        .expect("start a real API server")
    {
        Ok(server) => Some(Arc::new(server)),
        Err(real_server::Unavailable(why)) => {
            assert!(
                std::env::var(real_server::MODE_VAR).as_deref() != Ok("require"),
                "the real API server is required but unavailable: {why}"
            );
            eprintln!("SKIPPED on the real API server: {why}");
            None
        }
    }
}

/// Stops a real server of a test's own (its drop waits for the process) off the runtime's threads.
async fn stop(server: Arc<RealApiServer>) {
    tokio::task::spawn_blocking(move || drop(server))
        .await
        .expect("stop the real API server");
}

/// Real-only (a server of its own, compacting etcd every 2 s): once etcd has compacted a revision, a list
/// at it with `resourceVersionMatch=Exact` is 410, so is a `continue` at it (with a token to continue at
/// the latest version instead), and so is a watch of events, which have no watch
/// cache — but a watch of leases from it is served from the watch cache, whose history compaction does
/// not touch. The fake's `compact()` expires both (`watch_from_a_compacted_resource_version_gets_410_gone`).
#[tokio::test]
async fn real_compaction_expires_lists_and_uncached_watches() {
    let Some(real) = own_real_server(&["-etcd-compaction-interval=2s"]).await else {
        return;
    };
    let namespace = real.create_namespace("compaction").await;
    let admin = real.admin_client(&namespace).await;
    let leases: Api<Lease> = Api::namespaced(admin.clone(), &namespace);
    let created = leases
        .create(&PostParams::default(), &lease("l", "a"))
        .await
        .expect("create");
    let replaced = leases
        .replace("l", &PostParams::default(), &lease_from(&created, "b"))
        .await
        .expect("replace");
    leases
        .create(&PostParams::default(), &lease("m", "a"))
        .await
        .expect("create m");
    let page = leases
        .list(&ListParams::default().limit(1))
        .await
        .expect("a first page");
    leases
        .create(&PostParams::default(), &lease("n", "a"))
        .await
        .expect("create n");
    let rv = created.metadata.resource_version.clone().expect("rv");
    let exact = ListParams::default().at(&rv).matching(VersionMatch::Exact);
    let status = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            match leases.list(&exact).await {
                Err(kube::Error::Api(status)) => break *status,
                Ok(_) => tokio::time::sleep(Duration::from_millis(500)).await,
                Err(other) => panic!("list: {other}"),
            }
        }
    })
    .await
    .expect("etcd compacts within a minute");
    assert_eq!(
        (status.code, status.reason.as_str(), status.message.as_str()),
        (
            410,
            "Expired",
            "The resourceVersion for the provided list is too old."
        )
    );
    let token = page.metadata.continue_.clone().expect("a continue token");
    let path = format!("/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases");
    let rest = continue_after_compaction(&admin, &path, &token).await;
    assert_eq!(
        rest,
        ["m", "n"],
        "the new token continues at the latest version"
    );
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(admin, &namespace);
    let mut stream = events
        .watch(&WatchParams::default(), &rv)
        .await
        .expect("watch events")
        .boxed();
    match next_event(&mut stream).await {
        WatchEvent::Error(status) => assert_eq!(
            (status.code, status.message.as_str()),
            (
                410,
                "The resourceVersion for the provided watch is too old."
            )
        ),
        other => panic!("expected a 410 error event, got {other:?}"),
    }
    let mut cached = leases
        .watch(&WatchParams::default().fields("metadata.name=l"), &rv)
        .await
        .expect("watch leases")
        .boxed();
    match next_event(&mut cached).await {
        WatchEvent::Modified(l) => {
            assert_eq!(
                l.metadata.resource_version,
                replaced.metadata.resource_version
            )
        }
        other => panic!("expected the replace from the watch cache, got {other:?}"),
    }
    drop((stream, cached, leases, events));
    stop(real).await;
}

/// Real-only, slow (about 80 s; run with `--ignored`): the watch cache keeps at least 75 s of changes and
/// drops older ones only when its buffer (100 changes at first) is full; a watch from a dropped version
/// gets the 410 `ERROR` event the fake sends after `compact()`: `too old resource version: RV (OLDEST)`.
#[tokio::test]
#[ignore = "waits 80 s for the watch cache's history window"]
async fn real_watch_cache_expires_old_versions() {
    let Some(real) = own_real_server(&[]).await else {
        return;
    };
    let namespace = real.create_namespace("watch-cache").await;
    let leases: Api<Lease> = Api::namespaced(real.admin_client(&namespace).await, &namespace);
    let created = leases
        .create(&PostParams::default(), &lease("l", "a"))
        .await
        .expect("create");
    let rv = created.metadata.resource_version.clone().expect("rv");
    tokio::time::sleep(Duration::from_secs(80)).await;
    let mut current = created;
    let status = tokio::time::timeout(Duration::from_secs(120), async {
        loop {
            for n in 0..50 {
                current = leases
                    .replace(
                        "l",
                        &PostParams::default(),
                        &lease_from(&current, &format!("h{n}")),
                    )
                    .await
                    .expect("replace");
            }
            let mut events = leases
                .watch(&WatchParams::default().timeout(1), &rv)
                .await
                .expect("watch")
                .boxed();
            if let Some(Ok(WatchEvent::Error(status))) = events.next().await {
                break status;
            }
        }
    })
    .await
    .expect("the watch cache drops the version");
    assert_eq!((status.code, status.reason.as_str()), (410, "Expired"));
    assert!(
        status
            .message
            .starts_with(&format!("too old resource version: {rv} (")),
        "{status:?}"
    );
    drop(leases);
    stop(real).await;
}
