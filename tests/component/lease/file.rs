//! The file lease store: optimistic concurrency, sharing between instances, crash-safe writes, clear errors.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{TimeZone, Utc};
use leasecron::lease_store::{Change, Error, LeaseRecord, LeaseStore, Verb};
use leasecron::local::lease::FileStore;
use leasecron::local::lease::LOCK_TIMEOUT;
use nix::fcntl::{Flock, FlockArg};

const POLL: Duration = Duration::from_secs(2);

fn lease_path(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("leasecron.lease")
}

fn record(holder: &str, transitions: i32) -> LeaseRecord {
    let at = Utc
        .with_ymd_and_hms(2025, 3, 30, 1, 0, 0)
        .single()
        .expect("a valid date");
    LeaseRecord {
        holder_identity: Some(holder.to_owned()),
        lease_duration_seconds: 15,
        acquire_time: Some(at),
        renew_time: Some(at),
        lease_transitions: transitions,
    }
}

fn open(path: &Path) -> FileStore {
    FileStore::open(path, POLL).expect("the lease file can be opened")
}

#[tokio::test]
async fn a_missing_file_reads_as_no_record() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let store = open(&lease_path(&dir));
    assert_eq!(store.get().await.expect("reads"), None);
}

#[tokio::test]
async fn the_file_is_pretty_camel_case_json_like_the_lease_api() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let path = lease_path(&dir);
    open(&path)
        .create(&record("pod-a", 1))
        .await
        .expect("creates");
    let text = std::fs::read_to_string(&path).expect("reads");
    assert!(text.contains("\n  \"holderIdentity\": \"pod-a\""), "{text}");
    assert!(text.contains("\"leaseDurationSeconds\": 15"), "{text}");
    assert!(text.contains("\"leaseTransitions\": 1"), "{text}");
    assert!(
        text.contains("\"renewTime\": \"2025-03-30T01:00:00Z\""),
        "{text}"
    );
    assert!(text.contains("\"version\": 1"), "{text}");
}

#[tokio::test]
async fn create_refuses_an_existing_record() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let store = open(&lease_path(&dir));
    store.create(&record("a", 1)).await.expect("creates");
    let error = store
        .create(&record("b", 1))
        .await
        .expect_err("already there");
    assert!(matches!(error, Error::AlreadyExists { .. }), "{error}");
    let current = store.get().await.expect("reads").expect("a record");
    assert_eq!(current.record.holder(), Some("a"));
}

#[tokio::test]
async fn an_update_with_a_stale_version_is_a_conflict_and_changes_nothing() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let store = open(&lease_path(&dir));
    let first = store.create(&record("a", 1)).await.expect("creates");
    let second = store
        .update(&record("a", 1), &first.version)
        .await
        .expect("the version is current");
    assert_ne!(second.version, first.version);

    let error = store
        .update(&record("b", 2), &first.version)
        .await
        .expect_err("stale version");
    assert!(matches!(error, Error::Conflict { .. }), "{error}");
    assert!(error.to_string().contains(&first.version), "{error}");
    assert_eq!(store.get().await.expect("reads"), Some(second));
}

#[tokio::test]
async fn an_update_without_a_record_is_not_found() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let store = open(&lease_path(&dir));
    let error = store
        .update(&record("a", 1), "1")
        .await
        .expect_err("nothing to update");
    assert!(matches!(error, Error::NotFound { .. }), "{error}");
    assert_eq!(store.get().await.expect("reads"), None);
}

#[tokio::test]
async fn two_instances_on_one_path_see_each_others_writes() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let path = lease_path(&dir);
    let one = open(&path);
    let two = open(&path);
    let created = one.create(&record("a", 1)).await.expect("creates");
    assert_eq!(two.get().await.expect("reads"), Some(created.clone()));

    let updated = two
        .update(&record("b", 2), &created.version)
        .await
        .expect("two saw one's version");
    assert_eq!(one.get().await.expect("reads"), Some(updated));
    let error = one
        .update(&record("a", 1), &created.version)
        .await
        .expect_err("one's version is stale now");
    assert!(error.is_conflict(), "{error}");
}

#[tokio::test(start_paused = true)]
async fn changed_reports_another_instances_write_at_the_next_poll() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let path = lease_path(&dir);
    let writer = open(&path);
    let watcher = open(&path);
    let created = writer.create(&record("a", 1)).await.expect("creates");

    let unchanged =
        tokio::time::timeout(POLL * 3, watcher.changed(Some(created.version.clone()))).await;
    assert!(unchanged.is_err(), "nothing changed: {unchanged:?}");

    let updated = writer
        .update(&record("b", 2), &created.version)
        .await
        .expect("updates");
    let change = tokio::time::timeout(POLL, watcher.changed(Some(created.version)))
        .await
        .expect("seen within one poll interval");
    assert_eq!(change, Change::Record(Some(updated)));
}

#[tokio::test(start_paused = true)]
async fn changed_reports_a_record_to_a_caller_that_knew_of_none() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let path = lease_path(&dir);
    let watcher = open(&path);
    let created = open(&path).create(&record("a", 1)).await.expect("creates");
    let change = tokio::time::timeout(POLL, watcher.changed(None))
        .await
        .expect("seen within one poll interval");
    assert_eq!(change, Change::Record(Some(created)));
}

#[tokio::test]
async fn a_corrupt_file_is_an_error_naming_the_path_and_position() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let path = lease_path(&dir);
    std::fs::write(&path, "{\n  \"holderIdentity\": \"a\",\n  oops\n}\n").expect("writes");
    let error = open(&path).get().await.expect_err("corrupt");
    let message = error.to_string();
    assert!(matches!(error, Error::Corrupt { .. }), "{message}");
    assert!(message.contains(&path.display().to_string()), "{message}");
    assert!(message.contains("line 3"), "{message}");
    assert!(!error.is_transient());
}

#[tokio::test]
async fn a_record_with_wrong_fields_is_corrupt() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let path = lease_path(&dir);
    let cases = [
        (
            r#"{"leaseDurationSeconds": 15, "version": 1}"#,
            "leaseTransitions",
        ),
        (
            r#"{"leaseDurationSeconds": 15, "leaseTransitions": 0, "version": 1, "holder": "a"}"#,
            "holder",
        ),
        (
            r#"{"leaseDurationSeconds": "15s", "leaseTransitions": 0, "version": 1}"#,
            "invalid type",
        ),
        (
            r#"{"leaseDurationSeconds": 15, "leaseTransitions": -2, "version": 1}"#,
            "leaseTransitions must not be negative",
        ),
        ("", "the file is empty"),
        ("  \n", "the file is empty"),
        ("null", "expected a JSON object with the lease's fields"),
        (
            r#"{"leaseDurationSeconds": 15"#,
            "the file ends before the record does",
        ),
    ];
    let store = open(&path);
    for (json, fragment) in cases {
        std::fs::write(&path, json).expect("writes");
        let message = store.get().await.expect_err(json).to_string();
        assert!(message.starts_with("lease file "), "{message}");
        assert!(message.contains(fragment), "{json}: {message}");
        let error = store
            .update(&record("a", 1), "1")
            .await
            .expect_err("no update over a corrupt record");
        assert!(matches!(error, Error::Corrupt { .. }), "{error}");
    }
}

#[tokio::test]
async fn a_failed_temp_write_leaves_the_old_record_intact() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let path = lease_path(&dir);
    let store = open(&path);
    let created = store.create(&record("a", 1)).await.expect("creates");
    let before = std::fs::read(&path).expect("reads");

    // A directory where the temporary file goes makes creating it fail.
    let temp = dir.path().join("leasecron.lease.tmp");
    std::fs::create_dir(&temp).expect("creates a dir");
    let error = store
        .update(&record("b", 2), &created.version)
        .await
        .expect_err("the temp file cannot be created");
    let message = error.to_string();
    assert!(matches!(error, Error::Io { .. }), "{message}");
    assert!(message.contains("temporary file"), "{message}");
    assert_eq!(std::fs::read(&path).expect("reads"), before);
    assert_eq!(store.get().await.expect("reads"), Some(created.clone()));

    std::fs::remove_dir(&temp).expect("removes the dir");
    store
        .update(&record("b", 2), &created.version)
        .await
        .expect("writes once the way is clear");
}

#[tokio::test(start_paused = true)]
async fn a_peer_stuck_holding_the_lock_makes_writes_time_out() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let path = lease_path(&dir);
    let store = open(&path);
    let created = store.create(&record("a", 1)).await.expect("creates");

    let lock_file =
        File::open(dir.path().join("leasecron.lease.lock")).expect("the lock file exists");
    let held = Flock::lock(lock_file, FlockArg::LockExclusive).expect("the test takes the lock");
    let error = store
        .update(&record("b", 2), &created.version)
        .await
        .expect_err("the lock is held");
    assert!(
        matches!(error, Error::Timeout { verb: Verb::Update, after, .. } if after == LOCK_TIMEOUT),
        "{error}"
    );
    assert_eq!(
        store.get().await.expect("reads need no lock"),
        Some(created.clone())
    );

    drop(held);
    store
        .update(&record("b", 2), &created.version)
        .await
        .expect("writes once the lock is free");
}

#[tokio::test]
async fn opening_in_a_missing_directory_fails_naming_the_directory() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let missing = dir.path().join("missing");
    let path = missing.join("leasecron.lease");
    let error = FileStore::open(&path, POLL).expect_err("no such directory");
    let message = error.to_string();
    assert!(
        message.contains(&format!(
            "its directory {} does not exist",
            missing.display()
        )),
        "{message}"
    );
    assert!(!message.contains(".lock"), "{message}");
    assert!(!error.is_transient());
}

#[tokio::test]
async fn a_directory_as_the_lease_file_is_refused_and_nothing_is_left_in_it() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let error = FileStore::open(dir.path(), POLL).expect_err("a directory");
    let message = error.to_string();
    assert!(message.contains("is a directory"), "{message}");
    assert!(!error.is_transient());
    let left: Vec<_> = std::fs::read_dir(dir.path()).expect("lists").collect();
    assert!(left.is_empty(), "nothing created: {left:?}");
    let beside = dir.path().parent().expect("a parent").join(format!(
        "{}.lock",
        dir.path().file_name().expect("a name").to_string_lossy()
    ));
    assert!(!beside.exists(), "no lock file beside it");
}

#[tokio::test]
async fn a_corrupt_record_says_how_to_recover() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let path = lease_path(&dir);
    std::fs::write(&path, "").expect("writes");
    let message = open(&path).get().await.expect_err("corrupt").to_string();
    assert!(
        message.contains("stop every leasecron using it, remove it"),
        "{message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_read_modify_writes_lose_no_update() {
    const INCREMENTS: i32 = 50;
    let dir = tempfile::tempdir().expect("a temp dir");
    let path = lease_path(&dir);
    open(&path).create(&record("a", 0)).await.expect("creates");
    let workers: Vec<_> = ["a", "b"]
        .into_iter()
        .map(|holder| {
            let store = open(&path);
            tokio::spawn(async move {
                let mut done = 0;
                while done < INCREMENTS {
                    let current = store.get().await.expect("reads").expect("a record");
                    let next = record(holder, current.record.lease_transitions + 1);
                    match store.update(&next, &current.version).await {
                        Ok(_) => done += 1,
                        Err(e) if e.is_conflict() => {}
                        Err(e) => panic!("unexpected error: {e}"),
                    }
                }
            })
        })
        .collect();
    for worker in workers {
        worker.await.expect("no panic");
    }
    let last = open(&path).get().await.expect("reads").expect("a record");
    assert_eq!(last.record.lease_transitions, 2 * INCREMENTS);
    assert_eq!(last.version, (2 * INCREMENTS + 1).to_string());
}

#[test]
fn one_identity_is_claimed_by_one_store_at_a_time() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let path = lease_path(&dir);
    let mut first = open(&path);
    first.claim_identity("pod/a").expect("a free identity");
    let lock = dir.path().join("leasecron.lease.id-pod%2Fa.lock");
    assert!(lock.exists(), "the lock file sits beside the lease file");

    let mut second = open(&path);
    let error = second
        .claim_identity("pod/a")
        .expect_err("the identity is held");
    assert!(
        matches!(&error, Error::IdentityLocked { identity, .. } if identity == "pod/a"),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(message.contains("\"pod/a\""), "{message}");
    assert!(message.contains("--identity"), "{message}");
    assert!(!error.is_transient(), "a usage error, not retried");
    second
        .claim_identity("pod/b")
        .expect("another identity is free");

    drop(first);
    assert!(!lock.exists(), "a clean exit removes its lock file");
    let mut third = open(&path);
    third
        .claim_identity("pod/a")
        .expect("free again once its holder is gone");
}

#[test]
fn an_identity_lock_file_left_behind_does_not_hold_the_identity() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let path = lease_path(&dir);
    // What a holder killed with SIGKILL leaves: the file, without a lock (the kernel dropped it).
    File::create(dir.path().join("leasecron.lease.id-a.lock")).expect("creates");
    open(&path)
        .claim_identity("a")
        .expect("a stale lock file is no claim");
}

#[test]
fn a_lock_on_a_removed_identity_file_is_not_a_claim() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let path = lease_path(&dir);
    let lock = dir.path().join("leasecron.lease.id-a.lock");
    // A holder exiting removes its file while it holds the lock; a peer that opened the old file before
    // locks it afterwards. Here: lock a file, then replace it with a new one at the path.
    let old = Flock::lock(
        File::create(&lock).expect("creates"),
        FlockArg::LockExclusiveNonblock,
    )
    .expect("locks");
    std::fs::remove_file(&lock).expect("removes");
    let mut store = open(&path);
    store
        .claim_identity("a")
        .expect("the old file's lock claims nothing");
    let mut rival = open(&path);
    assert!(
        rival.claim_identity("a").is_err(),
        "the new file at the path is what holds the identity"
    );
    drop(old);
}

/// Far longer than any test waits: a change seen is a change the watch delivered, not a poll.
const NO_POLL: Duration = Duration::from_secs(3600);

#[tokio::test]
async fn changed_wakes_on_another_instances_write_without_waiting_for_the_poll() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let path = lease_path(&dir);
    let writer = open(&path);
    let watcher = FileStore::open(&path, NO_POLL).expect("opens");
    let created = writer.create(&record("a", 1)).await.expect("creates");

    let waiting = {
        let known = Some(created.version.clone());
        tokio::spawn(async move { (watcher.changed(known).await, watcher) })
    };
    // Give the watch time to start before the write, so it is the watch that reports it (had the write
    // come first, the first read would).
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!waiting.is_finished(), "nothing changed yet");
    let released = writer
        .update(&record("", 1), &created.version)
        .await
        .expect("updates");
    let (change, watcher) = tokio::time::timeout(Duration::from_secs(30), waiting)
        .await
        .expect("the watch reports the write long before the hour-long poll")
        .expect("no panic");
    assert!(watcher.is_watching());
    assert_eq!(change, Change::Record(Some(released.clone())));

    // A deletion too.
    let waiting = tokio::spawn(async move {
        (
            watcher.changed(Some(released.version.clone())).await,
            watcher,
        )
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    std::fs::remove_file(&path).expect("deletes");
    let (change, _) = tokio::time::timeout(Duration::from_secs(30), waiting)
        .await
        .expect("the watch reports the deletion")
        .expect("no panic");
    assert_eq!(change, Change::Record(None));
}

#[tokio::test]
async fn changes_beside_the_lease_file_do_not_resolve_changed() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let path = lease_path(&dir);
    let created = open(&path).create(&record("a", 1)).await.expect("creates");
    let watcher = FileStore::open(&path, NO_POLL).expect("opens");
    let waiting = tokio::spawn(async move { watcher.changed(Some(created.version)).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    // The run state and the lock files live beside the lease file.
    std::fs::write(dir.path().join("leasecron.lease.state"), "{}").expect("writes");
    std::fs::write(dir.path().join("other"), "x").expect("writes");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !waiting.is_finished(),
        "only the lease file's changes count"
    );
    waiting.abort();
}
