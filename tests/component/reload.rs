//! The jobs ConfigMap as a reload source, on the strict fake API server and on the real one (through the
//! fake in proxy mode): the read at start and its errors, the access check, and the watch (edits,
//! unchanged texts, deletion and recreation, broken watches, 410 Gone, outages, and polling when the
//! watch is forbidden).

use crate::on_both_servers;
use crate::support::fake_apiserver;

use std::time::Duration;

use fake_apiserver::{FakeApiServer, Fault, Options, Resource, Verb as ApiVerb, Which};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use leasecron::kubernetes::jobs_configmap::{self, ConfigMapRef, Error, Params};
use leasecron::reload::{Reread, Snapshot};
use serde_json::json;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The ConfigMap the tests reload from.
const NAME: &str = "cron-jobs";
/// How long a test waits for something that should happen within about a second.
const PATIENCE: Duration = Duration::from_secs(20);
/// How long a test lets the watcher act on a change that must publish nothing.
const SETTLE: Duration = Duration::from_millis(500);
/// Fast bookmarks, so a re-watch starts from a recent version.
const FAST_BOOKMARKS: Duration = Duration::from_millis(100);

const V1: &str = "jobs:\n  - name: a\n    schedule: \"@hourly\"\n    shell: \"true\"\n";
const V2: &str = "jobs:\n  - name: b\n    schedule: \"@daily\"\n    shell: \"true\"\n";
const V3: &str = "jobs: []\n";

/// Short timings: a retry and a poll every 100 ms, watches re-made every 5 s.
fn params() -> Params {
    Params {
        request_timeout: Duration::from_secs(2),
        watch_timeout: Duration::from_secs(5),
        retry_interval: Duration::from_millis(100),
        poll_interval: Duration::from_millis(100),
    }
}

fn target(server: &FakeApiServer) -> ConfigMapRef {
    ConfigMapRef::parse(NAME, server.namespace().to_owned()).expect("a valid reference")
}

/// The origin the snapshots of `key` name.
fn origin(server: &FakeApiServer, key: &str) -> String {
    format!("configmap/{}/{NAME}/{key}", server.namespace())
}

/// A client for bearer token `token`, without kube's retry layer (as the module documentation asks).
async fn client(server: &FakeApiServer, token: &str) -> kube::Client {
    let mut config = server.config(token).await;
    config.default_retry = false;
    kube::Client::try_from(config).expect("a kube client")
}

/// The ConfigMap API of an administrator, who edits the jobs.
async fn admin(server: &FakeApiServer) -> Api<ConfigMap> {
    Api::namespaced(server.client("admin").await, server.namespace())
}

fn config_map(data: &[(&str, &str)]) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(NAME.to_owned()),
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

async fn create(server: &FakeApiServer, data: &[(&str, &str)]) {
    admin(server)
        .await
        .create(&PostParams::default(), &config_map(data))
        .await
        .expect("create the ConfigMap");
}

/// Merge-patches the ConfigMap as `kubectl edit` or `kubectl label` would.
async fn patch(server: &FakeApiServer, patch: serde_json::Value) {
    admin(server)
        .await
        .patch(NAME, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("patch the ConfigMap");
}

async fn edit(server: &FakeApiServer, text: &str) {
    patch(server, json!({ "data": { "jobs.yaml": text } })).await;
}

async fn delete(server: &FakeApiServer) {
    admin(server)
        .await
        .delete(NAME, &Default::default())
        .await
        .expect("delete the ConfigMap");
}

fn requests(server: &FakeApiServer, token: &str, verb: ApiVerb) -> usize {
    server
        .requests()
        .iter()
        .filter(|r| r.token.as_deref() == Some(token) && r.verb == Some(verb))
        .count()
}

fn text(snapshot: &Snapshot) -> Result<&str, &str> {
    snapshot.text.as_deref().map_err(String::as_str)
}

/// The fake with [`FAST_BOOKMARKS`], or the real server (which sends a bookmark about every minute:
/// its watch cache keeps enough history for the re-watch from the last event's version).
async fn with_fast_bookmarks(which: Which, test: &str) -> Option<FakeApiServer> {
    match which {
        Which::Fake => Some(
            FakeApiServer::start_with(Options::default().with_bookmark_interval(FAST_BOOKMARKS))
                .await,
        ),
        Which::Real => FakeApiServer::start_real(test).await,
    }
}

/// A running [`jobs_configmap::watch`] task and the receiving end of its channel.
struct Watching {
    snapshots: watch::Receiver<Snapshot>,
    /// Asks the task to read the ConfigMap again now.
    reread: Reread,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl Watching {
    /// Reads the ConfigMap as client `token` and watches it from there, as `run` does.
    async fn start(server: &FakeApiServer, token: &str, params: Params) -> Watching {
        let client = client(server, token).await;
        let target = target(server);
        let initial = jobs_configmap::read(&client, &target, &params)
            .await
            .expect("the read at start");
        Watching::spawn(client, target, initial, params)
    }

    /// Watches the ConfigMap `target` through `client`, with `initial` as the snapshot in force.
    fn spawn(
        client: kube::Client,
        target: ConfigMapRef,
        initial: Snapshot,
        params: Params,
    ) -> Watching {
        let (out, mut snapshots) = watch::channel(initial);
        snapshots.mark_unchanged();
        let stop = CancellationToken::new();
        let reread = Reread::new();
        let task = tokio::spawn(jobs_configmap::watch(
            client,
            target,
            params,
            out,
            reread.clone(),
            stop.clone(),
        ));
        Watching {
            snapshots,
            reread,
            stop,
            task,
        }
    }

    /// The next snapshot published.
    async fn next(&mut self) -> Snapshot {
        tokio::time::timeout(PATIENCE, self.snapshots.changed())
            .await
            .expect("a snapshot is published")
            .expect("the watch task is alive");
        self.snapshots.borrow_and_update().clone()
    }

    /// True if nothing was published since the last [`Watching::next`].
    fn quiet(&self) -> bool {
        !self
            .snapshots
            .has_changed()
            .expect("the watch task is alive")
    }

    /// Stops the task and waits for it to end.
    async fn stop(self) {
        self.stop.cancel();
        tokio::time::timeout(PATIENCE, self.task)
            .await
            .expect("the watch task ends when stopped")
            .expect("the watch task does not panic");
    }
}

async fn read_returns_the_text_under_the_key(which: Which) {
    let Some(server) = FakeApiServer::start_on(which, "read_returns_the_text_under_th").await
    else {
        return;
    };
    create(&server, &[("jobs.yaml", V1), ("other.yaml", V2)]).await;
    let client = client(&server, "r").await;
    let snapshot = jobs_configmap::read(&client, &target(&server), &params())
        .await
        .expect("read");
    assert_eq!(snapshot.origin, origin(&server, "jobs.yaml"));
    assert_eq!(text(&snapshot), Ok(V1));
    let other =
        ConfigMapRef::parse("cron-jobs/other.yaml", server.namespace().to_owned()).expect("valid");
    let snapshot = jobs_configmap::read(&client, &other, &params())
        .await
        .expect("read");
    assert_eq!(text(&snapshot), Ok(V2));
    assert_eq!(requests(&server, "r", ApiVerb::List), 0, "it never lists");
}

async fn read_of_a_missing_configmap_is_not_found(which: Which) {
    let Some(server) = FakeApiServer::start_on(which, "read_of_a_missing_configmap_is").await
    else {
        return;
    };
    let client = client(&server, "r").await;
    let error = jobs_configmap::read(&client, &target(&server), &params())
        .await
        .expect_err("there is none");
    assert!(matches!(error, Error::NotFound { .. }), "{error:?}");
    assert!(!error.is_transient());
    assert_eq!(
        error.to_string(),
        format!(
            "{}: there is no ConfigMap \"cron-jobs\" in namespace \"{}\"",
            origin(&server, "jobs.yaml"),
            server.namespace()
        )
    );
}

async fn a_forbidden_read_names_the_rule_to_add(which: Which) {
    let Some(server) = FakeApiServer::start_on(which, "a_forbidden_read_names_the_rul").await
    else {
        return;
    };
    create(&server, &[("jobs.yaml", V1)]).await;
    server.deny("r", Resource::ConfigMaps, &[ApiVerb::Get]);
    let client = client(&server, "r").await;
    let error = jobs_configmap::read(&client, &target(&server), &params())
        .await
        .expect_err("get is denied");
    assert!(
        matches!(error, Error::Forbidden { verb: "get", .. }),
        "{error:?}"
    );
    assert!(!error.is_transient());
    let message = error.to_string();
    for needle in [
        format!("{}: get is forbidden", origin(&server, "jobs.yaml")),
        "\"configmaps\"".to_owned(),
        "resourceNames [\"cron-jobs\"]".to_owned(),
        format!("namespace \"{}\"", server.namespace()),
        "cannot get resource".to_owned(),
    ] {
        assert!(
            message.contains(&needle),
            "{needle} missing from: {message}"
        );
    }
}

async fn a_missing_key_lists_the_keys_and_a_binary_one_says_to_move_it(which: Which) {
    let Some(server) = FakeApiServer::start_on(which, "a_missing_key_lists_the_keys_a").await
    else {
        return;
    };
    create(&server, &[("jobs.yml", V1), ("README", "x")]).await;
    let client = client(&server, "r").await;
    let error = jobs_configmap::read(&client, &target(&server), &params())
        .await
        .expect_err("no jobs.yaml");
    assert!(matches!(error, Error::MissingKey { .. }), "{error:?}");
    assert!(!error.is_transient());
    assert_eq!(
        error.to_string(),
        format!(
            "{}: key jobs.yaml not found in data (keys: README, jobs.yml)",
            origin(&server, "jobs.yaml")
        )
    );
    patch(
        &server,
        json!({ "binaryData": { "jobs.yaml": "am9iczogW10K" } }),
    )
    .await;
    let error = jobs_configmap::read(&client, &target(&server), &params())
        .await
        .expect_err("jobs.yaml is binary");
    assert!(error.to_string().contains("under binaryData"), "{error}");
}

async fn server_errors_and_hangs_are_transient(which: Which) {
    let Some(server) = FakeApiServer::start_on(which, "server_errors_and_hangs_are_tr").await
    else {
        return;
    };
    create(&server, &[("jobs.yaml", V1)]).await;
    let client = client(&server, "r").await;
    server.faults("r").set(Fault::Status(503));
    let error = jobs_configmap::read(&client, &target(&server), &params())
        .await
        .expect_err("503");
    assert!(matches!(error, Error::Unavailable { .. }), "{error:?}");
    assert!(error.is_transient());
    server.faults("r").set(Fault::Hang);
    let short = Params {
        request_timeout: Duration::from_millis(200),
        ..params()
    };
    let error = jobs_configmap::read(&client, &target(&server), &short)
        .await
        .expect_err("hangs");
    assert!(error.is_transient(), "{error:?}");
    assert!(
        error.to_string().contains("no answer within 200ms"),
        "{error}"
    );
}

async fn a_refused_connection_is_transient(which: Which) {
    let Some(server) = FakeApiServer::start_on(which, "a_refused_connection_is_transi").await
    else {
        return;
    };
    let config = server.config("r").await;
    let target = target(&server);
    drop(server);
    // Nothing listens on the dropped server's (or proxy's) port any more.
    let client = kube::Client::try_from(config).expect("a kube client");
    let error = jobs_configmap::read(&client, &target, &params())
        .await
        .expect_err("nobody answers");
    assert!(error.is_transient(), "{error:?}");
}

async fn check_access_passes_when_get_and_watch_are_allowed(which: Which) {
    let Some(server) = FakeApiServer::start_on(which, "check_access_passes_when_get_a").await
    else {
        return;
    };
    let client = client(&server, "r").await;
    jobs_configmap::check_access(&client, &target(&server), &params())
        .await
        .expect("both verbs are allowed");
}

async fn check_access_reports_a_denied_watch(which: Which) {
    let Some(server) = FakeApiServer::start_on(which, "check_access_reports_a_denied_").await
    else {
        return;
    };
    server.deny("r", Resource::ConfigMaps, &[ApiVerb::Watch]);
    let client = client(&server, "r").await;
    let error = jobs_configmap::check_access(&client, &target(&server), &params())
        .await
        .expect_err("watch is denied");
    let Error::AccessDenied { verbs, .. } = &error else {
        panic!("expected AccessDenied, got {error:?}");
    };
    assert_eq!(verbs, &["watch"]);
    assert!(!error.is_transient());
    let message = error.to_string();
    assert!(message.contains("may not watch the ConfigMap"), "{message}");
    assert!(
        message.contains("resourceNames: [\"cron-jobs\"]"),
        "{message}"
    );
}

async fn an_edit_is_published_without_polling(which: Which) {
    let Some(server) = FakeApiServer::start_on(which, "an_edit_is_published_without_p").await
    else {
        return;
    };
    create(&server, &[("jobs.yaml", V1)]).await;
    let mut watching = Watching::start(&server, "w", params()).await;
    edit(&server, V2).await;
    let snapshot = watching.next().await;
    assert_eq!(snapshot.origin, origin(&server, "jobs.yaml"));
    assert_eq!(text(&snapshot), Ok(V2));
    edit(&server, V3).await;
    assert_eq!(text(&watching.next().await), Ok(V3));
    assert_eq!(
        requests(&server, "w", ApiVerb::Get),
        2,
        "the read at start and the one the watch starts from; no polling"
    );
    assert_eq!(requests(&server, "w", ApiVerb::List), 0, "it never lists");
    watching.stop().await;
}

async fn an_edit_that_leaves_the_text_alone_publishes_nothing(which: Which) {
    let Some(server) = FakeApiServer::start_on(which, "an_edit_that_leaves_the_text_a").await
    else {
        return;
    };
    create(&server, &[("jobs.yaml", V1)]).await;
    let mut watching = Watching::start(&server, "w", params()).await;
    // A first edit proves the watch is up.
    edit(&server, V2).await;
    assert_eq!(text(&watching.next().await), Ok(V2));
    patch(
        &server,
        json!({ "metadata": { "labels": { "team": "ops" } } }),
    )
    .await;
    patch(&server, json!({ "data": { "README": "see jobs.yaml" } })).await;
    tokio::time::sleep(SETTLE).await;
    assert!(
        watching.quiet(),
        "a label or another key is not a new version"
    );
    edit(&server, V3).await;
    assert_eq!(text(&watching.next().await), Ok(V3));
    watching.stop().await;
}

async fn a_deletion_is_published_as_an_error_and_a_recreation_as_the_new_text(which: Which) {
    let Some(server) = FakeApiServer::start_on(which, "a_deletion_is_published_as_an_").await
    else {
        return;
    };
    create(&server, &[("jobs.yaml", V1)]).await;
    let mut watching = Watching::start(&server, "w", params()).await;
    delete(&server).await;
    assert_eq!(
        text(&watching.next().await),
        Err("the ConfigMap was deleted")
    );
    create(&server, &[("jobs.yaml", V2)]).await;
    assert_eq!(text(&watching.next().await), Ok(V2));
    watching.stop().await;
}

async fn removing_the_key_is_published_as_an_error(which: Which) {
    let Some(server) = FakeApiServer::start_on(which, "removing_the_key_is_published_").await
    else {
        return;
    };
    create(&server, &[("jobs.yaml", V1), ("README", "x")]).await;
    let mut watching = Watching::start(&server, "w", params()).await;
    patch(&server, json!({ "data": { "jobs.yaml": null } })).await;
    assert_eq!(
        text(&watching.next().await),
        Err("key jobs.yaml not found in data (keys: README)")
    );
    edit(&server, V2).await;
    assert_eq!(text(&watching.next().await), Ok(V2));
    watching.stop().await;
}

async fn a_watch_of_a_missing_configmap_sees_it_created(which: Which) {
    let Some(server) = FakeApiServer::start_on(which, "a_watch_of_a_missing_configmap").await
    else {
        return;
    };
    create(&server, &[("jobs.yaml", V1)]).await;
    let client = client(&server, "w").await;
    let initial = jobs_configmap::read(&client, &target(&server), &params())
        .await
        .expect("read");
    // Deleted between the read at start and the watch's own read.
    delete(&server).await;
    let mut watching = Watching::spawn(client, target(&server), initial, params());
    assert_eq!(
        text(&watching.next().await),
        Err("the ConfigMap was deleted")
    );
    create(&server, &[("jobs.yaml", V3)]).await;
    assert_eq!(text(&watching.next().await), Ok(V3));
    watching.stop().await;
}

async fn broken_watches_are_resumed_and_see_later_edits(which: Which) {
    let Some(server) = with_fast_bookmarks(which, "broken_watches_are_resumed").await else {
        return;
    };
    create(&server, &[("jobs.yaml", V1)]).await;
    let mut watching = Watching::start(&server, "w", params()).await;
    for (round, version) in [V2, V3, V1].into_iter().enumerate() {
        server.break_watches();
        edit(&server, version).await;
        assert_eq!(text(&watching.next().await), Ok(version), "round {round}");
    }
    assert!(
        requests(&server, "w", ApiVerb::Watch) >= 2,
        "it watched again"
    );
    watching.stop().await;
}

/// Fake-only: it compacts the history (`FakeApiServer::compact`) to make the watcher's version too old.
#[tokio::test]
async fn after_410_gone_it_reads_again_and_sees_later_edits() {
    // No periodic bookmarks: the watcher's version stays at its last event, which the compaction
    // below makes too old.
    let server = FakeApiServer::start_with(
        Options::default().with_bookmark_interval(Duration::from_secs(3600)),
    )
    .await;
    create(&server, &[("jobs.yaml", V1)]).await;
    let mut watching = Watching::start(&server, "w", params()).await;
    edit(&server, V2).await;
    assert_eq!(text(&watching.next().await), Ok(V2));
    let gets = requests(&server, "w", ApiVerb::Get);
    // Another object moves the resourceVersion on; the compaction forgets everything before it.
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
    edit(&server, V3).await;
    assert_eq!(text(&watching.next().await), Ok(V3));
    assert!(
        requests(&server, "w", ApiVerb::Get) > gets,
        "the 410 made it read the ConfigMap again"
    );
    edit(&server, V1).await;
    assert_eq!(text(&watching.next().await), Ok(V1));
    watching.stop().await;
}

async fn an_outage_publishes_nothing_and_the_edits_made_during_it_apply_after(which: Which) {
    let Some(server) = with_fast_bookmarks(which, "an_outage_publishes_nothing").await else {
        return;
    };
    create(&server, &[("jobs.yaml", V1)]).await;
    let mut watching = Watching::start(&server, "w", params()).await;
    edit(&server, V2).await;
    assert_eq!(text(&watching.next().await), Ok(V2));
    for fault in [Fault::Status(503), Fault::Reset] {
        server.faults("w").set(fault.clone());
        server.break_watches();
        edit(&server, V3).await;
        tokio::time::sleep(SETTLE).await;
        assert!(
            watching.quiet(),
            "{fault:?}: an unreachable API is not a configuration problem"
        );
        server.faults("w").clear();
        assert_eq!(text(&watching.next().await), Ok(V3), "{fault:?}");
        edit(&server, V2).await;
        assert_eq!(text(&watching.next().await), Ok(V2), "{fault:?}");
    }
    watching.stop().await;
}

async fn a_hung_watch_is_abandoned_and_made_again(which: Which) {
    let Some(server) = FakeApiServer::start_on(which, "a_hung_watch_is_abandoned_and_").await
    else {
        return;
    };
    create(&server, &[("jobs.yaml", V1)]).await;
    let short = Params {
        request_timeout: Duration::from_millis(300),
        watch_timeout: Duration::from_secs(1),
        ..params()
    };
    let mut watching = Watching::start(&server, "w", short).await;
    server.faults("w").set_for(&[ApiVerb::Watch], Fault::Hang);
    server.break_watches();
    edit(&server, V2).await;
    // Each retry re-reads the ConfigMap, so the edit applies even while the watch hangs.
    assert_eq!(text(&watching.next().await), Ok(V2));
    server.faults("w").clear();
    let watches = requests(&server, "w", ApiVerb::Watch);
    tokio::time::timeout(PATIENCE, async {
        while requests(&server, "w", ApiVerb::Watch) == watches {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("a new watch is made after the hung one times out");
    edit(&server, V3).await;
    assert_eq!(text(&watching.next().await), Ok(V3));
    watching.stop().await;
}

/// Waits until `token` has made more than `count` requests of `verb`.
async fn more_requests_than(server: &FakeApiServer, token: &str, verb: ApiVerb, count: usize) {
    tokio::time::timeout(PATIENCE, async {
        while requests(server, token, verb) <= count {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no further {verb:?} request"));
}

async fn a_reread_request_gets_the_configmap_again_and_watches_from_there(which: Which) {
    let Some(server) = FakeApiServer::start_on(which, "a_reread_request_gets_the_conf").await
    else {
        return;
    };
    create(&server, &[("jobs.yaml", V1)]).await;
    let mut watching = Watching::start(&server, "w", params()).await;
    // A first edit proves the watch is up.
    edit(&server, V2).await;
    assert_eq!(text(&watching.next().await), Ok(V2));
    let (gets, watches) = (
        requests(&server, "w", ApiVerb::Get),
        requests(&server, "w", ApiVerb::Watch),
    );
    watching.reread.request();
    more_requests_than(&server, "w", ApiVerb::Get, gets).await;
    more_requests_than(&server, "w", ApiVerb::Watch, watches).await;
    assert!(
        watching.quiet(),
        "the text is unchanged: nothing to publish"
    );
    // The new watch sees the next edit.
    edit(&server, V3).await;
    assert_eq!(text(&watching.next().await), Ok(V3));
    assert_eq!(requests(&server, "w", ApiVerb::List), 0, "it never lists");
    watching.stop().await;
}

async fn a_reread_request_during_a_pause_after_a_failure_reads_at_once(which: Which) {
    let Some(server) = FakeApiServer::start_on(which, "a_reread_request_during_a_paus").await
    else {
        return;
    };
    create(&server, &[("jobs.yaml", V1)]).await;
    // Pauses long enough that only a request can end one within the test.
    let slow = Params {
        retry_interval: Duration::from_secs(3600),
        ..params()
    };
    let mut watching = Watching::start(&server, "w", slow).await;
    // A first edit proves the watch is up.
    edit(&server, V2).await;
    assert_eq!(text(&watching.next().await), Ok(V2));
    let watches = requests(&server, "w", ApiVerb::Watch);
    server.faults("w").set(Fault::Status(503));
    server.break_watches();
    // The re-watch after the broken watch fails: the task pauses for an hour.
    more_requests_than(&server, "w", ApiVerb::Watch, watches).await;
    server.faults("w").set(Fault::None);
    edit(&server, V3).await;
    watching.reread.request();
    assert_eq!(text(&watching.next().await), Ok(V3));
    watching.stop().await;
}

async fn a_watch_forbidden_at_run_time_falls_back_to_polling(which: Which) {
    let Some(server) = FakeApiServer::start_on(which, "a_watch_forbidden_at_run_time_").await
    else {
        return;
    };
    create(&server, &[("jobs.yaml", V1)]).await;
    server.deny("w", Resource::ConfigMaps, &[ApiVerb::Watch]);
    let mut watching = Watching::start(&server, "w", params()).await;
    edit(&server, V2).await;
    assert_eq!(text(&watching.next().await), Ok(V2));
    delete(&server).await;
    assert_eq!(
        text(&watching.next().await),
        Err("the ConfigMap was deleted")
    );
    create(&server, &[("jobs.yaml", V3)]).await;
    assert_eq!(text(&watching.next().await), Ok(V3));
    assert_eq!(
        requests(&server, "w", ApiVerb::Watch),
        1,
        "one refused watch, then polling (the watch is tried again only after minutes)"
    );
    assert!(requests(&server, "w", ApiVerb::Get) >= 3, "it polled");
    watching.stop().await;
}

on_both_servers!(
    #[tokio::test]
    read_returns_the_text_under_the_key,
    read_of_a_missing_configmap_is_not_found,
    a_forbidden_read_names_the_rule_to_add,
    a_missing_key_lists_the_keys_and_a_binary_one_says_to_move_it,
    server_errors_and_hangs_are_transient,
    a_refused_connection_is_transient,
    check_access_passes_when_get_and_watch_are_allowed,
    check_access_reports_a_denied_watch,
    an_edit_is_published_without_polling,
    an_edit_that_leaves_the_text_alone_publishes_nothing,
    a_deletion_is_published_as_an_error_and_a_recreation_as_the_new_text,
    removing_the_key_is_published_as_an_error,
    a_watch_of_a_missing_configmap_sees_it_created,
    a_hung_watch_is_abandoned_and_made_again,
    a_reread_request_gets_the_configmap_again_and_watches_from_there,
    a_reread_request_during_a_pause_after_a_failure_reads_at_once,
    a_watch_forbidden_at_run_time_falls_back_to_polling,
    broken_watches_are_resumed_and_see_later_edits,
    an_outage_publishes_nothing_and_the_edits_made_during_it_apply_after,
);
