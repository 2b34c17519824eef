//! A lease record in a local JSON file, so that leasecron can run without a cluster and several local
//! processes can elect one leader.
//!
//! # Layout on disk
//!
//! - `PATH`: the record as pretty JSON — the `Lease` spec fields in the API's camelCase plus a `version`
//!   counter that plays the role of `resourceVersion`.
//! - `PATH.lock`: an empty file that every writer holds an exclusive `flock` on for its read-modify-write.
//!   The lock cannot be on `PATH` itself because writes replace `PATH` with a new inode.
//! - `PATH.tmp`: the next version while it is written. It is fsynced, renamed over `PATH`, and the
//!   directory is fsynced, so a crash leaves either the old record or the new one, never half of one.
//!   Readers need no lock for the same reason.
//!
//! - `PATH.id-IDENTITY.lock`: held (exclusive `flock`) for its whole life by the process that runs as
//!   IDENTITY ([`FileStore::claim_identity`]), so that a second process with the same `--identity` is
//!   refused at start ([`Error::IdentityLocked`]) instead of following a lease that names "itself" forever.
//!   The kernel drops the lock when its holder dies, however it dies, so a holder killed with SIGKILL and
//!   restarted gets it back at once; a clean exit removes the file. IDENTITY is the identity with bytes
//!   other than `A-Z a-z 0-9 . _ -` written as `%XX`, or a hash of it if the name would be too long.
//!
//! Deleting `PATH` while electors run ends the leader's term (it takes the lease again at once, with a
//! larger fencing token: [`crate::election::fencing`]); followers wait LD after they saw it vanish.
//!
//! # Blocking
//!
//! The file is read and written with synchronous `std::fs`, not `tokio::fs`: a critical section is a few
//! syscalls on a small local file (microseconds), and `tokio::fs` would hand each one to the blocking pool.
//! Under paused tokio time (the elector's tests) a task awaiting the blocking pool lets the clock
//! auto-advance in older tokio versions (current ones inhibit auto-advance only on the current-thread
//! runtime), which made timing tests nondeterministic; synchronous calls complete within one poll and
//! keep them exact. Taking the lock never blocks the thread: a `LOCK_NB` attempt is retried on the tokio
//! timer, so a peer stopped while holding the lock makes our request time out instead of wedging the
//! runtime.
//!
//! # Change detection
//!
//! [`LeaseStore::changed`] reads the record at once, then again on every inotify event about `PATH` in its
//! directory (`local::dir_watch`) — the directory, not the file, because every write replaces the file (a
//! rename) and a deletion removes it; reads raise no event — and, as the fallback, `poll_interval` (`run`
//! passes RP) after its last read. It resolves as soon as the version read differs from the caller's. A
//! release thus wakes a follower within milliseconds, as the Lease's watch does on Kubernetes, without the
//! follower reading the file more than once per RP while nothing happens. The leader calls it again after
//! each renew, so its poll never comes due (the renew has just read the file): an idle leader's only timer
//! is the renew's. The watch starts with the first `changed` call and is set up again
//! when the directory was replaced; while it cannot be set up (inotify limits, a file system without
//! inotify), the poll runs every [`UNWATCHED_POLL_INTERVAL`] (RP if shorter). Changes made on another
//! machine (a network file system) raise no local event: there the poll is what notices them.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Utc};
use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::lease_store::{Change, Error, LeaseRecord, LeaseStore, Verb, Versioned};
use crate::local::dir_watch::DirWatch;

/// How long a request waits for a peer's lock before it gives up ([`Error::Timeout`]). Peers hold it for
/// microseconds; this only matters when a peer was stopped inside its critical section.
pub const LOCK_TIMEOUT: Duration = Duration::from_secs(5);

/// How often a request retries a held lock.
const LOCK_RETRY_INTERVAL: Duration = Duration::from_millis(5);

/// How often [`LeaseStore::changed`] polls (at most) while the directory cannot be watched: a release is
/// then noticed within this bound instead of within milliseconds.
pub const UNWATCHED_POLL_INTERVAL: Duration = Duration::from_millis(250);

/// The longest file name most file systems accept.
const MAX_FILE_NAME: usize = 255;
/// How often [`FileStore::claim_identity`] tries again when the identity's lock file was replaced between
/// its open and its lock (a peer exiting removes it).
const IDENTITY_LOCK_ATTEMPTS: u32 = 5;

/// A lease record in a local file. See the [module documentation](self).
#[derive(Debug)]
pub struct FileStore {
    path: PathBuf,
    lock_path: PathBuf,
    temp_path: PathBuf,
    dir: PathBuf,
    poll_interval: Duration,
    /// Counts the watch's events about the record file; [`LeaseStore::changed`] waits for it to move.
    events: Arc<watch::Sender<u64>>,
    /// The watch of the directory, once started (`None` before, or while it cannot be set up).
    watch: Mutex<WatchState>,
    /// This process's identity lock, once claimed.
    identity: Option<IdentityLock>,
}

/// The watch of the record's directory.
#[derive(Debug, Default)]
struct WatchState {
    /// The watch, once set up (boxed: it is large).
    current: Option<Box<DirWatch>>,
    /// A failure to set it up was logged (at warn, once).
    warned: bool,
}

/// An exclusive `flock` on `PATH.id-IDENTITY.lock`, held while this process runs as IDENTITY; the file is
/// removed (while still locked) when it is dropped.
#[derive(Debug)]
struct IdentityLock {
    path: PathBuf,
    _lock: Flock<File>,
}

/// The file's JSON.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct StoredLease {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    holder_identity: Option<String>,
    lease_duration_seconds: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    acquire_time: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    renew_time: Option<DateTime<Utc>>,
    lease_transitions: i32,
    version: u64,
}

// === impl FileStore ===

impl FileStore {
    /// A store on `path`, whose [`LeaseStore::changed`] watches the directory and polls every
    /// `poll_interval` as the fallback. Creates the lock file
    /// beside it, so a missing directory or a permission problem shows up here rather than mid-election.
    pub fn open(path: impl Into<PathBuf>, poll_interval: Duration) -> Result<Self, Error> {
        let path = path.into();
        let dir = match path.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
            _ => PathBuf::from("."),
        };
        // Checked before anything is created beside it, so that no `.lock` is left behind.
        if path.is_dir() {
            return Err(Error::BadPath {
                path,
                problem:
                    "is a directory: give the path of a file in it (e.g. DIR/leasecron.lease); \
                          leasecron creates it"
                        .to_owned(),
            });
        }
        if !dir.is_dir() {
            return Err(Error::BadPath {
                problem: format!(
                    "its directory {} does not exist: create it, or choose a path in an existing \
                     directory",
                    dir.display()
                ),
                path,
            });
        }
        let store = FileStore::unopened(path, dir, poll_interval);
        store.open_lock_file()?;
        Ok(store)
    }

    /// A store on `path` for reading its record ([`LeaseStore::get`]) and nothing else, as the operator
    /// commands (`leasecron status`) read it: it creates nothing beside the file, so it needs no write
    /// permission on the directory.
    pub fn reader(path: impl Into<PathBuf>) -> Self {
        let path = path.into();
        let dir = match path.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
            _ => PathBuf::from("."),
        };
        FileStore::unopened(path, dir, UNWATCHED_POLL_INTERVAL)
    }

    fn unopened(path: PathBuf, dir: PathBuf, poll_interval: Duration) -> Self {
        FileStore {
            lock_path: with_suffix(&path, ".lock"),
            temp_path: with_suffix(&path, ".tmp"),
            path,
            dir,
            poll_interval,
            events: Arc::new(watch::Sender::new(0)),
            watch: Mutex::new(WatchState::default()),
            identity: None,
        }
    }

    /// Claims `identity` on this lease file for as long as the store lives: [`Error::IdentityLocked`] if
    /// another live process holds it. See the [module documentation](self).
    pub fn claim_identity(&mut self, identity: &str) -> Result<(), Error> {
        let path = self.identity_lock_path(identity);
        for _ in 0..IDENTITY_LOCK_ATTEMPTS {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
                .map_err(|e| io_error(&path, "opening the identity's lock file", e))?;
            let lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                Ok(lock) => lock,
                Err((_, Errno::EWOULDBLOCK)) => {
                    return Err(Error::IdentityLocked {
                        store: self.describe(),
                        identity: identity.to_owned(),
                        lock: path,
                    })
                }
                Err((_, errno)) => {
                    return Err(io_error(
                        &path,
                        "locking the identity's lock file",
                        errno.into(),
                    ))
                }
            };
            // A holder that exits removes the file while it still holds the lock: the inode we locked may
            // be one nobody will find any more. Keep the lock only on the file that is at the path.
            if same_file(&lock, &path)? {
                self.identity = Some(IdentityLock { path, _lock: lock });
                return Ok(());
            }
        }
        Err(io_error(
            &path,
            "locking the identity's lock file",
            io::Error::other("the file kept being replaced while it was locked"),
        ))
    }

    /// `PATH.id-IDENTITY.lock`, IDENTITY encoded (or hashed) into a valid file name.
    fn identity_lock_path(&self, identity: &str) -> PathBuf {
        let lease_name = self
            .path
            .file_name()
            .map_or(0, |name| name.as_encoded_bytes().len());
        let mut name = String::new();
        for byte in identity.bytes() {
            if byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b'-') {
                name.push(char::from(byte));
            } else {
                name.push_str(&format!("%{byte:02X}"));
            }
        }
        let suffix = |name: &str| format!(".id-{name}.lock");
        if lease_name + suffix(&name).len() > MAX_FILE_NAME {
            name = format!("{:016x}", crate::reload::content_hash(identity));
        }
        with_suffix(&self.path, &suffix(&name))
    }

    /// The record file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `op` while holding the exclusive lock, retrying a held lock on the tokio timer.
    async fn locked<T>(
        &self,
        verb: Verb,
        op: impl FnOnce() -> Result<T, Error>,
    ) -> Result<T, Error> {
        let started = Instant::now();
        loop {
            match Flock::lock(self.open_lock_file()?, FlockArg::LockExclusiveNonblock) {
                Ok(_guard) => return op(),
                Err((_, Errno::EWOULDBLOCK)) => {}
                Err((_, errno)) => {
                    return Err(io_error(&self.lock_path, "locking", errno.into()));
                }
            }
            if started.elapsed() >= LOCK_TIMEOUT {
                return Err(Error::Timeout {
                    store: self.describe(),
                    verb,
                    after: LOCK_TIMEOUT,
                });
            }
            tokio::time::sleep(LOCK_RETRY_INTERVAL).await;
        }
    }

    fn open_lock_file(&self) -> Result<File, Error> {
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&self.lock_path)
            .map_err(|e| io_error(&self.lock_path, "opening the lock file", e))
    }

    /// Reads the record; `None` if the file does not exist.
    fn read(&self) -> Result<Option<StoredLease>, Error> {
        let bytes = match fs::read(&self.path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_error(&self.path, "reading", e)),
        };
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Err(self.corrupt("the file is empty (a write cut short, or created by hand)"));
        }
        let stored: StoredLease =
            serde_json::from_slice(&bytes).map_err(|e| self.corrupt(plain_json_error(&e)))?;
        stored.check().map_err(|detail| self.corrupt(detail))?;
        Ok(Some(stored))
    }

    /// Replaces the record atomically: temp file, fsync, rename over, fsync the directory.
    fn write(&self, stored: &StoredLease) -> Result<(), Error> {
        let mut json = serde_json::to_vec_pretty(stored).map_err(|e| self.corrupt(e))?;
        json.push(b'\n');
        let temp = &self.temp_path;
        let mut file =
            File::create(temp).map_err(|e| io_error(temp, "creating the temporary file", e))?;
        file.write_all(&json)
            .map_err(|e| io_error(temp, "writing the temporary file", e))?;
        file.sync_all()
            .map_err(|e| io_error(temp, "syncing the temporary file", e))?;
        fs::rename(temp, &self.path)
            .map_err(|e| io_error(&self.path, "renaming the temporary file over it", e))?;
        File::open(&self.dir)
            .and_then(|dir| dir.sync_all())
            .map_err(|e| io_error(&self.dir, "syncing the directory", e))
    }

    /// `poll_interval` while the directory is watched, else at most [`UNWATCHED_POLL_INTERVAL`].
    fn current_poll_interval(&self) -> Duration {
        if self.lock_watch().current.is_some() {
            self.poll_interval
        } else {
            self.poll_interval.min(UNWATCHED_POLL_INTERVAL)
        }
    }

    /// True if the directory is watched (for tests and diagnostics).
    pub fn is_watching(&self) -> bool {
        self.lock_watch().current.is_some()
    }

    fn lock_watch(&self) -> std::sync::MutexGuard<'_, WatchState> {
        // Replaced in one assignment: consistent even after a panic elsewhere.
        self.watch.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts the watch of the directory if it is not running, or if the directory was replaced or
    /// removed since.
    fn ensure_watching(&self) {
        let mut state = self.lock_watch();
        if state
            .current
            .as_ref()
            .is_some_and(|watch| watch.is_current())
        {
            return;
        }
        state.current = None;
        let events = Arc::clone(&self.events);
        match DirWatch::start(&self.path, move || {
            events.send_modify(|count| *count = count.wrapping_add(1));
        }) {
            Ok(watch) => {
                tracing::debug!(dir = %self.dir.display(), "watching the lease file's directory");
                state.current = Some(Box::new(watch));
                state.warned = false;
            }
            Err(error) if !state.warned => {
                state.warned = true;
                tracing::warn!(
                    dir = %self.dir.display(),
                    %error,
                    poll_interval_seconds = self.poll_interval.min(UNWATCHED_POLL_INTERVAL).as_secs_f64(),
                    "cannot watch the lease file's directory; polling the lease file instead"
                );
            }
            Err(error) => {
                tracing::debug!(dir = %self.dir.display(), %error, "cannot watch the lease file's directory");
            }
        }
    }

    fn corrupt(&self, detail: impl ToString) -> Error {
        Error::Corrupt {
            path: self.path.clone(),
            detail: detail.to_string(),
        }
    }
}

impl LeaseStore for FileStore {
    fn describe(&self) -> String {
        format!("file {}", self.path.display())
    }

    async fn get(&self) -> Result<Option<Versioned>, Error> {
        Ok(self.read()?.map(StoredLease::into_versioned))
    }

    async fn create(&self, record: &LeaseRecord) -> Result<Versioned, Error> {
        self.locked(Verb::Create, || {
            if self.read()?.is_some() {
                return Err(Error::AlreadyExists {
                    store: self.describe(),
                });
            }
            let stored = StoredLease::new(record, 1);
            self.write(&stored)?;
            Ok(stored.into_versioned())
        })
        .await
    }

    async fn update(&self, record: &LeaseRecord, version: &str) -> Result<Versioned, Error> {
        self.locked(Verb::Update, || {
            let current = self.read()?.ok_or_else(|| Error::NotFound {
                store: self.describe(),
            })?;
            if current.version.to_string() != version {
                return Err(Error::Conflict {
                    store: self.describe(),
                    expected: version.to_owned(),
                });
            }
            let next = current
                .version
                .checked_add(1)
                .ok_or_else(|| self.corrupt("the version counter is exhausted"))?;
            let stored = StoredLease::new(record, next);
            self.write(&stored)?;
            Ok(stored.into_versioned())
        })
        .await
    }

    async fn changed(&self, known: Option<String>) -> Change {
        // Subscribed before the first read: an event after it is not missed.
        let mut events = self.events.subscribe();
        self.ensure_watching();
        let mut waited = false;
        loop {
            let read = self.read();
            // Each read is a poll: the next is due one interval after it. A leader calls this again after
            // each renew, so its poll never comes due (the renew reads the file every RP anyway) and costs
            // no wake-up of its own.
            let next_poll = Instant::now() + self.current_poll_interval();
            match read {
                Ok(current) => {
                    let current = current.map(StoredLease::into_versioned);
                    if current.as_ref().map(|v| &v.version) != known.as_ref() {
                        return Change::Record(current);
                    }
                }
                // The caller's `get` reports the error with its detail. Not before a wait: a caller that
                // retries at once would spin.
                Err(_) if waited => return Change::Unknown,
                Err(_) => {}
            }
            tokio::select! {
                // The sender lives as long as `self`: this never fails.
                _ = events.changed() => {}
                () = tokio::time::sleep_until(next_poll) => self.ensure_watching(),
            }
            waited = true;
        }
    }
}

// === impl StoredLease ===

impl StoredLease {
    fn new(record: &LeaseRecord, version: u64) -> Self {
        StoredLease {
            holder_identity: record.holder_identity.clone(),
            lease_duration_seconds: record.lease_duration_seconds,
            acquire_time: record.acquire_time,
            renew_time: record.renew_time,
            lease_transitions: record.lease_transitions,
            version,
        }
    }

    /// Rejects values no writer of ours produces.
    fn check(&self) -> Result<(), String> {
        if self.version == 0 {
            return Err("version must be at least 1".into());
        }
        if self.lease_transitions < 0 {
            return Err(format!(
                "leaseTransitions must not be negative, found {}",
                self.lease_transitions
            ));
        }
        if self.lease_duration_seconds < 0 {
            return Err(format!(
                "leaseDurationSeconds must not be negative, found {}",
                self.lease_duration_seconds
            ));
        }
        Ok(())
    }

    fn into_versioned(self) -> Versioned {
        Versioned {
            version: self.version.to_string(),
            record: LeaseRecord {
                holder_identity: self.holder_identity,
                lease_duration_seconds: self.lease_duration_seconds,
                acquire_time: self.acquire_time,
                renew_time: self.renew_time,
                lease_transitions: self.lease_transitions,
            },
        }
    }
}

/// True if `locked` is the file now at `path` (same device and inode).
fn same_file(locked: &File, path: &Path) -> Result<bool, Error> {
    use std::os::unix::fs::MetadataExt as _;
    let held = locked
        .metadata()
        .map_err(|e| io_error(path, "reading the identity's lock file", e))?;
    match fs::metadata(path) {
        Ok(current) => Ok(current.dev() == held.dev() && current.ino() == held.ino()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(io_error(path, "reading the identity's lock file", e)),
    }
}

impl Drop for IdentityLock {
    fn drop(&mut self) {
        // Removed while still locked: a process that opened it before the removal finds, once it holds
        // the lock, that it is no longer the file at the path, and opens the path again.
        if let Err(error) = fs::remove_file(&self.path) {
            if error.kind() != io::ErrorKind::NotFound {
                tracing::debug!(path = %self.path.display(), %error, "cannot remove the identity's lock file");
            }
        }
    }
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// serde_json's message without the Rust type names it may carry (`struct StoredLease`): what was expected,
/// in the file's words, with its line and column.
fn plain_json_error(error: &serde_json::Error) -> String {
    let text = error.to_string();
    let text = text
        .replace(
            "struct StoredLease",
            "a JSON object with the lease's fields",
        )
        .replace(
            "expected a string",
            "expected a lease record (a JSON object)",
        );
    match error.classify() {
        serde_json::error::Category::Eof => {
            format!(
                "the file ends before the record does (line {}, column {})",
                error.line(),
                error.column()
            )
        }
        _ => text,
    }
}

fn io_error(path: &Path, op: &'static str, source: io::Error) -> Error {
    Error::Io {
        path: path.to_path_buf(),
        op,
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_uses_the_lease_api_field_names() {
        let record = LeaseRecord {
            holder_identity: Some("pod-a".into()),
            lease_duration_seconds: 15,
            acquire_time: None,
            renew_time: None,
            lease_transitions: 4,
        };
        let json = serde_json::to_value(StoredLease::new(&record, 9)).expect("serializes");
        assert_eq!(
            json,
            serde_json::json!({
                "holderIdentity": "pod-a",
                "leaseDurationSeconds": 15,
                "leaseTransitions": 4,
                "version": 9,
            })
        );
    }

    #[test]
    fn a_stored_record_round_trips_with_its_version() {
        let record = LeaseRecord {
            holder_identity: None,
            lease_duration_seconds: 1,
            acquire_time: Some(DateTime::UNIX_EPOCH),
            renew_time: Some(DateTime::UNIX_EPOCH),
            lease_transitions: 2,
        };
        let json = serde_json::to_vec(&StoredLease::new(&record, 3)).expect("serializes");
        let back: StoredLease = serde_json::from_slice(&json).expect("parses");
        let versioned = back.into_versioned();
        assert_eq!(versioned.record, record);
        assert_eq!(versioned.version, "3");
    }

    #[test]
    fn negative_counters_are_rejected() {
        let mut stored = StoredLease::new(
            &LeaseRecord {
                holder_identity: None,
                lease_duration_seconds: 1,
                acquire_time: None,
                renew_time: None,
                lease_transitions: -1,
            },
            1,
        );
        assert!(stored.check().unwrap_err().contains("leaseTransitions"));
        stored.lease_transitions = 0;
        stored.version = 0;
        assert!(stored.check().unwrap_err().contains("version"));
    }

    #[test]
    fn identity_lock_files_have_a_safe_name_beside_the_record() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store =
            FileStore::open(dir.path().join("x.lease"), Duration::from_secs(1)).expect("opens");
        let name = |identity: &str| {
            let path = store.identity_lock_path(identity);
            assert_eq!(path.parent(), Some(dir.path()), "{identity:?}");
            path.file_name()
                .and_then(|n| n.to_str())
                .map(str::to_owned)
                .expect("a UTF-8 name")
        };
        assert_eq!(name("host-1234"), "x.lease.id-host-1234.lock");
        assert_eq!(name("a/b c"), "x.lease.id-a%2Fb%20c.lock");
        assert_eq!(name("../x"), "x.lease.id-..%2Fx.lock");
        assert_eq!(
            name("a%2Fb"),
            "x.lease.id-a%252Fb.lock",
            "`%` is encoded too: no two identities share a file"
        );
        let long = name(&"é".repeat(200));
        assert!(long.len() <= MAX_FILE_NAME, "{long}");
        assert_ne!(
            long,
            name(&"é".repeat(201)),
            "different identities, different files"
        );
    }

    #[test]
    fn side_files_sit_beside_the_record() {
        assert_eq!(
            with_suffix(Path::new("/run/x.lease"), ".lock"),
            PathBuf::from("/run/x.lease.lock")
        );
    }
}
