//! The operator controls in the ConfigMap `<lease>-controls`, on the strict fake API server and on the
//! real one (through the fake in proxy mode): the store's compare-and-swap (an absent ConfigMap, the
//! shipped one without data, conflicts, racing read-modify-writes, an invalid document), its 403s naming
//! the missing rule and the Role that grants it, the replicas' access check, and the replicas' feed (a
//! change arrives through the watch, an invalid version keeps the last valid one, a deletion is the empty
//! document, outages and 410 Gone, polling while the watch is forbidden, the replicas' own rule).

use super::fixtures::{empty, suspending, trigger};
use crate::on_both_servers;
use crate::support::fake_apiserver;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use fake_apiserver::{FakeApiServer, Fault, Options, PolicyRule, Resource, Verb as ApiVerb, Which};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use leasecron::controls::{self, Controls, Read, Saved, UpdateError, KEY};
use leasecron::kubernetes::controls::{
    self as kube_controls, ControlsConfigMap, Error, FeedParams,
};
use serde_json::json;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// The Lease whose controls the tests keep.
const LEASE: &str = "cron";
/// Its controls ConfigMap.
const NAME: &str = "cron-controls";
/// The request timeout of the stores.
const TIMEOUT: Duration = Duration::from_secs(5);
/// How long a change may take to reach a feed through its watch (milliseconds, unless the machine is
/// loaded).
const PROMPTLY: Duration = Duration::from_secs(10);
/// How long a test lets a feed act on a change that must publish nothing.
const SETTLE: Duration = Duration::from_millis(500);

/// Short timings: a retry and a poll every 100 ms, watches re-made every 5 s.
fn feed_params() -> FeedParams {
    FeedParams {
        watch_timeout: Duration::from_secs(5),
        retry_interval: Duration::from_millis(100),
        max_retry_interval: Duration::from_millis(400),
        poll_interval: Duration::from_millis(100),
    }
}

/// The store of client `token`.
async fn store(server: &FakeApiServer, token: &str) -> ControlsConfigMap {
    ControlsConfigMap::new(
        server.config(token).await,
        server.namespace(),
        LEASE,
        TIMEOUT,
    )
    .expect("a store for a valid Lease name")
}

/// The ConfigMap API of an administrator, who applies manifests and edits objects by hand.
async fn admin(server: &FakeApiServer) -> Api<ConfigMap> {
    Api::namespaced(server.client("admin").await, server.namespace())
}

/// Creates the ConfigMap as `deploy/core` ships it: no data, a label of its own.
async fn create_shipped(server: &FakeApiServer) {
    let config_map = ConfigMap {
        metadata: ObjectMeta {
            name: Some(NAME.to_owned()),
            labels: Some(BTreeMap::from([(
                "app.kubernetes.io/name".to_owned(),
                "leasecron".to_owned(),
            )])),
            ..ObjectMeta::default()
        },
        ..ConfigMap::default()
    };
    admin(server)
        .await
        .create(&PostParams::default(), &config_map)
        .await
        .expect("create the controls ConfigMap");
}

/// Sets the text under the key by hand (`kubectl edit`).
async fn hand_edit(server: &FakeApiServer, text: &str) {
    admin(server)
        .await
        .patch(
            NAME,
            &PatchParams::default(),
            &Patch::Merge(&json!({ "data": { KEY: text } })),
        )
        .await
        .expect("patch the controls ConfigMap");
}

async fn delete(server: &FakeApiServer) {
    admin(server)
        .await
        .delete(NAME, &Default::default())
        .await
        .expect("delete the controls ConfigMap");
}

fn stored(server: &FakeApiServer) -> serde_json::Value {
    server
        .object(Resource::ConfigMaps, server.namespace(), NAME)
        .expect("the controls ConfigMap exists")
}

fn requests(server: &FakeApiServer, token: &str, verb: ApiVerb) -> usize {
    server
        .requests()
        .iter()
        .filter(|r| r.token.as_deref() == Some(token) && r.verb == Some(verb))
        .count()
}

/// Suspends `job` through `store` with a read-modify-write, as `leasecron suspend` does.
async fn suspend(store: &ControlsConfigMap, job: &str) {
    controls::update(store, |controls| {
        *controls = suspending(job);
        Ok::<(), std::io::Error>(())
    })
    .await
    .expect("the update lands");
}

/// The store's error inside a read-modify-write's.
fn store_error(error: UpdateError<std::io::Error>) -> Error {
    match error {
        UpdateError::Store(error) => *error
            .downcast::<Error>()
            .expect("the ConfigMap store's error"),
        other => panic!("expected a store error, got {other:?}"),
    }
}

// === The store ===

async fn an_absent_configmap_is_an_empty_document_and_the_first_save_creates_it(which: Which) {
    let Some(server) = FakeApiServer::start_on(which, "controls_absent_configmap").await else {
        return;
    };
    let store = store(&server, "op").await;
    assert_eq!(store.name(), NAME);
    let Read { controls, version } = store.load().await.expect("no ConfigMap");
    assert_eq!((controls, version), (empty(), None));
    assert_eq!(
        store.save(&suspending("backup"), None).await.expect("api"),
        Saved::Written
    );
    let object = stored(&server);
    let text = object["data"][KEY].as_str().expect("the document");
    assert_eq!(text, suspending("backup").to_text(), "pretty JSON");
    assert!(text.contains("\n  \"suspended\": {"), "{text}");
    assert_eq!(
        object["metadata"]["labels"]["app.kubernetes.io/managed-by"],
        "leasecron"
    );
    assert!(
        object["metadata"]["annotations"]["kubernetes.io/description"]
            .as_str()
            .is_some_and(|d| d.contains(LEASE))
    );
    assert_eq!(
        store.save(&empty(), None).await.expect("api"),
        Saved::Conflict,
        "a create over an existing ConfigMap (409 AlreadyExists)"
    );
    let read = store.load().await.expect("api");
    assert_eq!(read.controls, suspending("backup"));
    assert_eq!(
        read.version.as_deref(),
        object["metadata"]["resourceVersion"].as_str()
    );
}

async fn the_shipped_configmap_without_data_is_an_empty_document_and_a_save_keeps_the_rest(
    which: Which,
) {
    let Some(server) = FakeApiServer::start_on(which, "controls_shipped_configmap").await else {
        return;
    };
    create_shipped(&server).await;
    let store = store(&server, "op").await;
    let read = store.load().await.expect("api");
    assert_eq!(read.controls, empty());
    let version = read.version.expect("the ConfigMap's resourceVersion");
    assert_eq!(
        store
            .save(&suspending("backup"), Some(&version))
            .await
            .expect("api"),
        Saved::Written,
        "an update, no create"
    );
    assert_eq!(requests(&server, "op", ApiVerb::Create), 0);
    // Another key, and a later write through a store that did not read the object (it reads it first).
    admin(&server)
        .await
        .patch(
            NAME,
            &PatchParams::default(),
            &Patch::Merge(&json!({ "data": { "README": "see controls.json" } })),
        )
        .await
        .expect("patch");
    let version = store.load().await.expect("api").version.expect("a version");
    let other = self::store(&server, "op2").await;
    assert_eq!(
        other
            .save(&suspending("report"), Some(&version))
            .await
            .expect("api"),
        Saved::Written
    );
    let object = stored(&server);
    assert_eq!(
        object["metadata"]["labels"]["app.kubernetes.io/name"],
        "leasecron"
    );
    assert_eq!(object["data"]["README"], "see controls.json");
    assert_eq!(object["data"][KEY], suspending("report").to_text());
}

async fn a_write_over_a_changed_version_is_a_conflict(which: Which) {
    let Some(server) = FakeApiServer::start_on(which, "controls_write_conflict").await else {
        return;
    };
    create_shipped(&server).await;
    let (a, b) = (store(&server, "a").await, store(&server, "b").await);
    let read_by_a = a.load().await.expect("api");
    let read_by_b = b.load().await.expect("api");
    assert_eq!(
        b.save(&suspending("b"), read_by_b.version.as_deref())
            .await
            .expect("api"),
        Saved::Written
    );
    assert_eq!(
        a.save(&suspending("a"), read_by_a.version.as_deref())
            .await
            .expect("api"),
        Saved::Conflict,
        "b wrote since a read"
    );
    // By hand, in between.
    let read = a.load().await.expect("api");
    assert_eq!(read.controls, suspending("b"));
    hand_edit(&server, &suspending("hand").to_text()).await;
    assert_eq!(
        a.save(&suspending("a"), read.version.as_deref())
            .await
            .expect("api"),
        Saved::Conflict
    );
    // Deleted since it was read.
    let read = a.load().await.expect("api");
    delete(&server).await;
    assert_eq!(
        a.save(&suspending("a"), read.version.as_deref())
            .await
            .expect("api"),
        Saved::Conflict
    );
    assert!(
        requests(&server, "a", ApiVerb::Update) >= 1,
        "a conflict is the API server's 409, not only a cached guess"
    );
}

async fn racing_read_modify_writes_from_two_stores_all_land(which: Which) {
    let Some(server) = FakeApiServer::start_on(which, "controls_racing_updates").await else {
        return;
    };
    const EACH: usize = 10;
    let mut tasks = Vec::new();
    for writer in ["a", "b"] {
        let store = store(&server, writer).await;
        tasks.push(tokio::spawn(async move {
            for i in 0..EACH {
                controls::update(&store, |controls| {
                    controls.requests.push(trigger(&format!("{writer}-{i}")));
                    Ok::<(), std::io::Error>(())
                })
                .await
                .expect("lands within the attempts");
            }
        }));
    }
    for task in tasks {
        task.await.expect("no panic");
    }
    let read = store(&server, "c").await.load().await.expect("api");
    let mut ids: Vec<String> = read
        .controls
        .requests
        .iter()
        .map(|r| r.id.clone())
        .collect();
    ids.sort();
    let mut expected: Vec<String> = ["a", "b"]
        .iter()
        .flat_map(|w| (0..EACH).map(move |i| format!("{w}-{i}")))
        .collect();
    expected.sort();
    assert_eq!(ids, expected, "every update landed once");
}

async fn an_invalid_document_is_reported_naming_the_configmap(which: Which) {
    let Some(server) = FakeApiServer::start_on(which, "controls_invalid_document").await else {
        return;
    };
    create_shipped(&server).await;
    hand_edit(&server, r#"{"format": 1, "paused": {}}"#).await;
    let store = store(&server, "op").await;
    let error = store.load().await.expect_err("invalid");
    assert!(matches!(error, Error::Invalid(_)), "{error:?}");
    assert!(!error.is_transient());
    let message = error.to_string();
    assert!(
        message.starts_with(&format!(
            "configmap {}/{NAME}: unknown field `paused`",
            server.namespace()
        )),
        "{message}"
    );
    let refused = store_error(
        controls::update(&store, |_| Ok::<(), std::io::Error>(()))
            .await
            .expect_err("invalid"),
    );
    assert!(matches!(refused, Error::Invalid(_)), "{refused:?}");
    assert_eq!(
        requests(&server, "op", ApiVerb::Update),
        0,
        "nothing written"
    );
}

// === RBAC ===

async fn a_forbidden_write_names_the_verb_the_rule_and_the_role(which: Which) {
    let Some(server) = FakeApiServer::start_on(which, "controls_forbidden_write").await else {
        return;
    };
    server.deny(
        "op",
        Resource::ConfigMaps,
        &[ApiVerb::Create, ApiVerb::Update],
    );
    let store = store(&server, "op").await;
    let error = store_error(
        controls::update(&store, |controls| {
            *controls = suspending("backup");
            Ok::<(), std::io::Error>(())
        })
        .await
        .expect_err("create is denied"),
    );
    assert!(
        matches!(error, Error::Forbidden { verb: "create", .. }),
        "{error:?}"
    );
    let message = error.to_string();
    for needle in [
        "{apiGroups: [\"\"], resources: [\"configmaps\"], verbs: [\"create\"]}",
        "create the ConfigMap once",
        "cannot create resource \"configmaps\"",
    ] {
        assert!(message.contains(needle), "{needle} missing from: {message}");
    }

    create_shipped(&server).await;
    let error = store_error(
        controls::update(&store, |controls| {
            *controls = suspending("backup");
            Ok::<(), std::io::Error>(())
        })
        .await
        .expect_err("update is denied"),
    );
    assert!(
        matches!(error, Error::Forbidden { verb: "update", .. }),
        "{error:?}"
    );
    assert!(!error.is_transient());
    let message = error.to_string();
    let namespace = server.namespace();
    for needle in [
        format!("configmap {namespace}/{NAME}: update: "),
        // The API server's own words: who may not do what.
        format!("configmaps \"{NAME}\" is forbidden: User \"op\" cannot update resource \"configmaps\""),
        format!(
            ": leasecron needs {{apiGroups: [\"\"], resources: [\"configmaps\"], resourceNames: \
             [\"{NAME}\"], verbs: [\"update\"]}} in namespace \"{namespace}\" (the operator Role in \
             deploy/operator grants it)"
        ),
    ] {
        assert!(message.contains(&needle), "{needle} missing from: {message}");
    }
}

async fn check_access_passes_when_get_and_watch_are_allowed(which: Which) {
    let Some(server) = FakeApiServer::start_on(which, "controls_check_access_passes").await else {
        return;
    };
    store(&server, "r")
        .await
        .check_access()
        .await
        .expect("get and watch are allowed");
}

async fn check_access_reports_a_denied_watch_with_the_rule_to_add(which: Which) {
    let Some(server) = FakeApiServer::start_on(which, "controls_check_access_denied").await else {
        return;
    };
    server.deny("r", Resource::ConfigMaps, &[ApiVerb::Watch]);
    let error = store(&server, "r")
        .await
        .check_access()
        .await
        .expect_err("watch is denied");
    let Error::AccessDenied { verbs, .. } = &error else {
        panic!("expected AccessDenied, got {error:?}");
    };
    assert_eq!(verbs, &["watch"]);
    assert!(!error.is_transient());
    let message = error.to_string();
    for needle in [
        "may not watch the ConfigMap".to_owned(),
        format!("resourceNames: [\"{NAME}\"], verbs: [\"get\", \"watch\"]}}"),
        format!("namespace \"{}\"", server.namespace()),
        "the leasecron Role in deploy/core grants it".to_owned(),
    ] {
        assert!(
            message.contains(&needle),
            "{needle} missing from: {message}"
        );
    }
}

// === The feed ===

/// A running feed of the controls ConfigMap and the receiving end of its channel.
struct Feed {
    rx: watch::Receiver<Arc<Controls>>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Feed {
    /// Reads the controls as client `token` and follows them from there, as `run` does.
    async fn start(server: &FakeApiServer, token: &str, params: FeedParams) -> Feed {
        let store = Arc::new(store(server, token).await);
        let initial = store.load().await.expect("the read at start").controls;
        let (tx, rx) = watch::channel(Arc::new(initial));
        let stop = CancellationToken::new();
        let task = tokio::spawn(kube_controls::watch(store, params, tx, stop.clone()));
        Feed { rx, stop, task }
    }

    /// The next document published, within [`PROMPTLY`].
    async fn next(&mut self) -> Controls {
        tokio::time::timeout(PROMPTLY, self.rx.changed())
            .await
            .expect("published promptly")
            .expect("the feed is alive");
        Controls::clone(&self.rx.borrow_and_update())
    }

    /// True if nothing was published for [`SETTLE`].
    async fn quiet(&mut self) -> bool {
        tokio::time::timeout(SETTLE, self.rx.changed())
            .await
            .is_err()
    }

    async fn stop(self) {
        self.stop.cancel();
        tokio::time::timeout(PROMPTLY, self.task)
            .await
            .expect("the feed ends when stopped")
            .expect("no panic");
    }
}

/// Waits until client `token` has a watch open (its requests log a watch).
async fn watching(server: &FakeApiServer, token: &str) {
    tokio::time::timeout(PROMPTLY, async {
        while requests(server, token, ApiVerb::Watch) == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the feed watches");
    // The request is logged as it arrives; give the server a moment to register the watch.
    tokio::time::sleep(Duration::from_millis(100)).await;
}

async fn the_feed_delivers_a_change_promptly_and_a_deletion_as_the_empty_document(which: Which) {
    let Some(server) = FakeApiServer::start_on(which, "controls_feed_delivers").await else {
        return;
    };
    create_shipped(&server).await;
    // Polling every 5 minutes: what arrives, arrives through the watch.
    let params = FeedParams {
        poll_interval: Duration::from_secs(300),
        ..feed_params()
    };
    let mut feed = Feed::start(&server, "r", params).await;
    watching(&server, "r").await;
    let operator = store(&server, "op").await;
    suspend(&operator, "backup").await;
    assert_eq!(feed.next().await, suspending("backup"));
    // A label is no new document.
    admin(&server)
        .await
        .patch(
            NAME,
            &PatchParams::default(),
            &Patch::Merge(&json!({ "metadata": { "labels": { "team": "ops" } } })),
        )
        .await
        .expect("label");
    assert!(feed.quiet().await, "the same document");
    delete(&server).await;
    assert_eq!(feed.next().await, empty(), "deleted: no suspension");
    suspend(&operator, "report").await;
    assert_eq!(feed.next().await, suspending("report"), "created again");
    assert_eq!(requests(&server, "r", ApiVerb::List), 0, "it never lists");
    feed.stop().await;
}

async fn an_invalid_version_keeps_the_last_valid_document(which: Which) {
    let Some(server) = FakeApiServer::start_on(which, "controls_feed_invalid").await else {
        return;
    };
    create_shipped(&server).await;
    hand_edit(&server, &suspending("backup").to_text()).await;
    let mut feed = Feed::start(&server, "r", feed_params()).await;
    assert_eq!(**feed.rx.borrow(), suspending("backup"));
    watching(&server, "r").await;
    hand_edit(&server, r#"{"format": 1, "suspended": {"backup": {}}}"#).await;
    assert!(feed.quiet().await, "the invalid version is not published");
    assert_eq!(
        **feed.rx.borrow(),
        suspending("backup"),
        "the suspension holds"
    );
    hand_edit(&server, &suspending("report").to_text()).await;
    assert_eq!(feed.next().await, suspending("report"));
    feed.stop().await;
}

async fn an_outage_publishes_nothing_and_the_changes_made_during_it_apply_after(which: Which) {
    let server = match which {
        // Bookmarks often, so a re-watch starts from a recent version.
        Which::Fake => {
            FakeApiServer::start_with(
                Options::default().with_bookmark_interval(Duration::from_millis(100)),
            )
            .await
        }
        Which::Real => match FakeApiServer::start_real("controls_feed_outage").await {
            Some(server) => server,
            None => return,
        },
    };
    create_shipped(&server).await;
    let mut feed = Feed::start(&server, "r", feed_params()).await;
    watching(&server, "r").await;
    let operator = store(&server, "op").await;
    for (round, fault) in [Fault::Status(503), Fault::Reset].into_iter().enumerate() {
        server.faults("r").set(fault.clone());
        server.break_watches();
        let job = format!("during-{round}");
        suspend(&operator, &job).await;
        assert!(
            feed.quiet().await,
            "{fault:?}: nothing to publish while out of reach"
        );
        server.faults("r").clear();
        assert_eq!(feed.next().await, suspending(&job), "{fault:?}");
        let job = format!("after-{round}");
        suspend(&operator, &job).await;
        assert_eq!(feed.next().await, suspending(&job), "{fault:?}");
    }
    feed.stop().await;
}

/// Fake-only: it compacts the history (`FakeApiServer::compact`) to make the feed's version too old.
#[tokio::test]
async fn after_410_gone_the_feed_reads_again_and_sees_later_changes() {
    let server = FakeApiServer::start_with(
        Options::default().with_bookmark_interval(Duration::from_secs(3600)),
    )
    .await;
    create_shipped(&server).await;
    let mut feed = Feed::start(&server, "r", feed_params()).await;
    watching(&server, "r").await;
    let operator = store(&server, "op").await;
    suspend(&operator, "one").await;
    assert_eq!(feed.next().await, suspending("one"));
    let gets = requests(&server, "r", ApiVerb::Get);
    admin(&server)
        .await
        .create(
            &PostParams::default(),
            &ConfigMap {
                metadata: ObjectMeta {
                    name: Some("unrelated".to_owned()),
                    ..ObjectMeta::default()
                },
                ..ConfigMap::default()
            },
        )
        .await
        .expect("create another ConfigMap");
    server.compact();
    server.break_watches();
    suspend(&operator, "two").await;
    assert_eq!(feed.next().await, suspending("two"));
    assert!(
        requests(&server, "r", ApiVerb::Get) > gets,
        "the 410 made it read the ConfigMap again"
    );
    feed.stop().await;
}

async fn a_watch_forbidden_at_run_time_falls_back_to_polling(which: Which) {
    let Some(server) = FakeApiServer::start_on(which, "controls_feed_forbidden_watch").await else {
        return;
    };
    create_shipped(&server).await;
    server.deny("r", Resource::ConfigMaps, &[ApiVerb::Watch]);
    let mut feed = Feed::start(&server, "r", feed_params()).await;
    let operator = store(&server, "op").await;
    suspend(&operator, "backup").await;
    assert_eq!(feed.next().await, suspending("backup"));
    delete(&server).await;
    assert_eq!(feed.next().await, empty());
    assert_eq!(
        requests(&server, "r", ApiVerb::Watch),
        1,
        "one refused watch, then polling (the watch is tried again only after minutes)"
    );
    assert!(requests(&server, "r", ApiVerb::Get) >= 3, "it polled");
    feed.stop().await;
}

async fn the_replicas_rule_suffices_to_read_and_follow_and_writes_nothing(which: Which) {
    let Some(server) = FakeApiServer::start_on(which, "controls_replicas_rule").await else {
        return;
    };
    create_shipped(&server).await;
    // What deploy/core/role.yaml grants on the controls, and nothing else.
    server.grant(
        "r",
        vec![PolicyRule {
            api_groups: vec![String::new()],
            resources: vec!["configmaps".to_owned()],
            verbs: vec!["get".to_owned(), "watch".to_owned()],
            resource_names: vec![NAME.to_owned()],
        }],
    );
    let replica = store(&server, "r").await;
    replica.check_access().await.expect("get and watch suffice");
    let mut feed = Feed::start(&server, "r", feed_params()).await;
    watching(&server, "r").await;
    suspend(&store(&server, "op").await, "backup").await;
    assert_eq!(feed.next().await, suspending("backup"));
    assert!(
        server
            .requests()
            .iter()
            .filter(|r| r.token.as_deref() == Some("r"))
            .all(|r| r.status != Some(403)),
        "nothing refused"
    );
    let read = replica.load().await.expect("get");
    let error = replica
        .save(&empty(), read.version.as_deref())
        .await
        .expect_err("a replica may not write");
    assert!(
        matches!(error, Error::Forbidden { verb: "update", .. }),
        "{error:?}"
    );
    feed.stop().await;
}

on_both_servers!(
    #[tokio::test]
    an_absent_configmap_is_an_empty_document_and_the_first_save_creates_it,
    the_shipped_configmap_without_data_is_an_empty_document_and_a_save_keeps_the_rest,
    a_write_over_a_changed_version_is_a_conflict,
    racing_read_modify_writes_from_two_stores_all_land,
    an_invalid_document_is_reported_naming_the_configmap,
    a_forbidden_write_names_the_verb_the_rule_and_the_role,
    check_access_passes_when_get_and_watch_are_allowed,
    check_access_reports_a_denied_watch_with_the_rule_to_add,
    the_feed_delivers_a_change_promptly_and_a_deletion_as_the_empty_document,
    an_invalid_version_keeps_the_last_valid_document,
    an_outage_publishes_nothing_and_the_changes_made_during_it_apply_after,
    a_watch_forbidden_at_run_time_falls_back_to_polling,
    the_replicas_rule_suffices_to_read_and_follow_and_writes_nothing,
);
