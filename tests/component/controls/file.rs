//! The operator controls in the file `LEASE.controls` beside the lease file: the store's compare-and-swap
//! (absent, empty and corrupt files, conflicts, a round trip, racing read-modify-writes), and the
//! replicas' feed of it (a change arrives through the directory watch, an invalid version keeps the last
//! valid one, a deleted file is the empty document, the feed ends with its receivers).

use super::fixtures::{empty, suspending, trigger};

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use leasecron::controls::{self, Controls, Read, Saved, Store};
use leasecron::local::controls::{self as file_controls, ControlsFile, Error};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Well under the feed's poll interval (5 s): a change within it came through the directory watch.
const PROMPTLY: Duration = Duration::from_secs(2);
/// How long a test lets the feed act on a change that must publish nothing.
const SETTLE: Duration = Duration::from_millis(500);

fn store(dir: &Path) -> ControlsFile {
    ControlsFile::beside(&dir.join("lease.json"))
}

#[tokio::test]
async fn no_file_is_an_empty_document_without_a_version_and_the_first_write_creates_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = store(dir.path());
    assert_eq!(file.path(), dir.path().join("lease.json.controls"));
    let Read { controls, version } = file.load().await.expect("no file");
    assert_eq!((controls, version), (empty(), None));
    assert!(!file.path().exists(), "reading creates nothing");
    assert_eq!(
        file.save(&suspending("backup"), None).await.expect("io"),
        Saved::Written
    );
    assert_eq!(
        file.save(&empty(), None).await.expect("io"),
        Saved::Conflict,
        "it exists now"
    );
}

#[tokio::test]
async fn a_document_round_trips_through_pretty_json_with_its_generation() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = store(dir.path());
    let mut written = suspending("backup");
    written.requests.push(trigger("r1"));
    file.save(&written, None).await.expect("io");
    let Read { controls, version } = file.load().await.expect("io");
    assert_eq!(controls, written);
    assert_eq!(version.as_deref(), Some("1"));
    let text = std::fs::read_to_string(file.path()).expect("read");
    assert!(
        text.starts_with("{\n  \"generation\": 1,\n  \"controls\": {\n"),
        "{text}"
    );
    assert!(text.contains("\"note\": \"db migration\""), "{text}");
    assert!(text.ends_with("}\n"), "{text}");
    // Through the trait, as the commands and the leader see it.
    let dynamic: &dyn Store = &file;
    assert_eq!(
        dynamic.describe(),
        format!("file {}", file.path().display())
    );
    let read = dynamic.load().await.expect("io");
    assert_eq!(read.controls, written);
}

#[tokio::test]
async fn a_write_over_a_changed_generation_is_a_conflict() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (a, b) = (store(dir.path()), store(dir.path()));
    a.save(&empty(), None).await.expect("io");
    let read_by_a = a.load().await.expect("io");
    let read_by_b = b.load().await.expect("io");
    assert_eq!(read_by_a.version.as_deref(), Some("1"));
    assert_eq!(
        b.save(&suspending("b"), read_by_b.version.as_deref())
            .await
            .expect("io"),
        Saved::Written
    );
    assert_eq!(
        a.save(&suspending("a"), read_by_a.version.as_deref())
            .await
            .expect("io"),
        Saved::Conflict,
        "b wrote since a read"
    );
    let now = a.load().await.expect("io");
    assert_eq!(now.controls, suspending("b"));
    assert_eq!(now.version.as_deref(), Some("2"));
    assert_eq!(
        a.save(&suspending("a"), now.version.as_deref())
            .await
            .expect("io"),
        Saved::Written
    );
}

#[tokio::test]
async fn an_empty_file_is_an_empty_document_of_generation_0() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = store(dir.path());
    std::fs::write(file.path(), "\n").expect("touch");
    let read = file.load().await.expect("io");
    assert_eq!(
        (read.controls, read.version.as_deref()),
        (empty(), Some("0"))
    );
    assert_eq!(
        file.save(&suspending("x"), Some("0")).await.expect("io"),
        Saved::Written
    );
    assert_eq!(file.load().await.expect("io").version.as_deref(), Some("1"));
}

#[tokio::test]
async fn a_corrupt_file_is_reported_naming_it_and_never_overwritten_blindly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = store(dir.path());
    let path = file.path().display().to_string();
    for (content, expected) in [
        ("not json", "expected ident"),
        (
            r#"{"controls": {"format": 1}}"#,
            "missing field `generation`",
        ),
        (
            r#"{"generation": 3, "controls": {"format": 1, "paused": {}}}"#,
            "unknown field `paused`",
        ),
        (
            r#"{"generation": 3, "controls": {"format": 2}}"#,
            "format 2, this leasecron reads format 1",
        ),
        (
            r#"{"generation": 3, "controls": {"format": 1, "requests": [{"id": "r", "kind": "backfill",
                "job": "j", "by": "a", "requestedAt": "2027-01-15T08:00:00Z"}]}}"#,
            "request r: a backfill needs `from` and `to`",
        ),
    ] {
        std::fs::write(file.path(), content).expect("write");
        let error = file.load().await.expect_err("corrupt");
        assert!(matches!(error, Error::Invalid(_)), "{error:?}");
        let message = error.to_string();
        assert!(
            message.starts_with(&format!("file {path}: ")) && message.contains(expected),
            "{content}: {message}"
        );
        assert!(message.contains("fix the file, or delete it"), "{message}");
        // An operator's read-modify-write stops there, naming the file.
        let refused = controls::update(&file, |_| Ok::<(), std::io::Error>(()))
            .await
            .expect_err("corrupt");
        assert!(refused.to_string().contains(&path), "{refused}");
        // A write cannot pass for a fresh start either.
        assert_eq!(
            file.save(&empty(), None).await.expect("io"),
            Saved::Conflict
        );
        assert_eq!(std::fs::read_to_string(file.path()).expect("read"), content);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_read_modify_writes_from_two_tasks_all_land() {
    let dir = tempfile::tempdir().expect("tempdir");
    const EACH: usize = 25;
    let tasks: Vec<_> = ["a", "b"]
        .into_iter()
        .map(|writer| {
            let file = store(dir.path());
            tokio::spawn(async move {
                for i in 0..EACH {
                    controls::update(&file, |controls| {
                        controls.requests.push(trigger(&format!("{writer}-{i}")));
                        Ok::<(), std::io::Error>(())
                    })
                    .await
                    .expect("lands within the attempts");
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("no panic");
    }
    let read = store(dir.path()).load().await.expect("io");
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
    assert_eq!(read.version, Some((2 * EACH).to_string()));
}

/// A running feed of the controls file and the receiving end of its channel.
struct Feed {
    rx: watch::Receiver<Arc<Controls>>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Feed {
    /// Reads the file and follows it from there, as `run` does.
    async fn start(file: &ControlsFile) -> Feed {
        let initial = file.load().await.expect("the read at start").controls;
        let (tx, rx) = watch::channel(Arc::new(initial));
        let stop = CancellationToken::new();
        let task = tokio::spawn(file_controls::watch(file.clone(), tx, stop.clone()));
        // Let the directory watch be set up.
        tokio::time::sleep(Duration::from_millis(100)).await;
        Feed { rx, stop, task }
    }

    /// The next document published, within [`PROMPTLY`].
    async fn next(&mut self) -> Controls {
        tokio::time::timeout(PROMPTLY, self.rx.changed())
            .await
            .expect("published promptly, through the directory watch")
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

#[tokio::test]
async fn the_feed_delivers_a_change_promptly_and_a_deletion_as_the_empty_document() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = store(dir.path());
    let mut feed = Feed::start(&file).await;
    assert_eq!(**feed.rx.borrow(), empty());
    controls::update(&file, |controls| {
        *controls = suspending("backup");
        Ok::<(), std::io::Error>(())
    })
    .await
    .expect("update");
    assert_eq!(feed.next().await, suspending("backup"));
    // A write that changes only the generation publishes nothing.
    controls::update(&file, |_| Ok::<(), std::io::Error>(()))
        .await
        .expect("update");
    assert!(feed.quiet().await, "the same document");
    std::fs::remove_file(file.path()).expect("delete");
    assert_eq!(feed.next().await, empty(), "no file: no suspension");
    feed.stop().await;
}

#[tokio::test]
async fn an_invalid_version_keeps_the_last_valid_document() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = store(dir.path());
    file.save(&suspending("backup"), None).await.expect("io");
    let mut feed = Feed::start(&file).await;
    assert_eq!(**feed.rx.borrow(), suspending("backup"));
    std::fs::write(
        file.path(),
        r#"{"generation": 9, "controls": {"format": 1, "suspended": {"backup": {}}}}"#,
    )
    .expect("a hand edit gone wrong");
    assert!(feed.quiet().await, "the invalid version is not published");
    assert_eq!(
        **feed.rx.borrow(),
        suspending("backup"),
        "the suspension holds"
    );
    std::fs::write(
        file.path(),
        format!(
            "{{\"generation\": 10, \"controls\": {}}}",
            suspending("report").to_text()
        ),
    )
    .expect("fixed");
    assert_eq!(feed.next().await, suspending("report"));
    feed.stop().await;
}

#[tokio::test]
async fn the_feed_reads_at_once_what_changed_since_the_read_at_start_and_ends_with_its_receivers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = store(dir.path());
    let (tx, mut rx) = watch::channel(Arc::new(empty()));
    file.save(&suspending("late"), None).await.expect("io");
    let task = tokio::spawn(file_controls::watch(
        file.clone(),
        tx,
        CancellationToken::new(),
    ));
    tokio::time::timeout(PROMPTLY, rx.changed())
        .await
        .expect("published at once, not at the first poll")
        .expect("alive");
    assert_eq!(**rx.borrow(), suspending("late"));
    drop(rx);
    tokio::time::timeout(PROMPTLY, task)
        .await
        .expect("the feed ends once nobody receives")
        .expect("no panic");
}
